"""The Helm chart in deploy/helm/proxmox-operator: it lints, the API server accepts what it renders, and every
value does what the README's table says. Rendering is checked against the operator's own argument parser, so a
flag the chart renders is a flag the operator accepts."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from proxmox_operator import cli
from tests.deploy.conftest import CHART, Chart, dry_run_apply, find
from tests.integration.kube import Cluster

pytestmark = pytest.mark.integration

NAMESPACED_KINDS = {
    "ServiceAccount",
    "Deployment",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
    "Service",
    "ServiceMonitor",
    "PrometheusRule",
}
LEADER_ELECTION_ROLE = "proxmox-operator-leader-election"


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = find(objects, "Deployment")
    return dep


def container(objects: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    dep = objects if isinstance(objects, dict) else deployment(objects)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def operator_args(objects: list[dict[str, Any]] | dict[str, Any]) -> Any:
    """The rendered container args, parsed by the operator's own command line parser, in the environment the
    Deployment gives the Pod (POD_NAMESPACE from the downward API: the Lease's namespace)."""
    dep = objects if isinstance(objects, dict) else deployment(objects)
    c = container(dep)
    assert "command" not in c, "the image's entrypoint is the proxmox-operator console script"
    env = {e["name"]: e for e in c.get("env", [])}
    pod_env = {"POD_NAMESPACE": dep["metadata"]["namespace"]} if "POD_NAMESPACE" in env else {}
    with mock.patch.dict(os.environ, pod_env):
        return cli.parse_args(c["args"])


def applied_kinds(kubectl_output: str) -> list[str]:
    """The kinds in `kubectl apply --dry-run=server` output, one line per object the API server accepted."""
    lines = kubectl_output.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), kubectl_output
    return [line.split("/", 1)[0] for line in lines]


def rules_of(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v) for rule in obj["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


# ------------------------------------------------------------------------------------------------------ lint ---


@pytest.mark.parametrize(
    "values", [[], ["watchNamespaces={team-a,team-b}", "logLevel=debug"]], ids=["default", "namespaced"]
)
def test_helm_lint_passes(chart: Chart, values: list[str]) -> None:
    args = [arg for value in values for arg in ("--set", value)]
    result = chart.run("lint", "--strict", str(CHART), *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


# ------------------------------------------------------------------------ the real API server accepts it ---


def test_default_values_are_accepted_by_the_api_server(
    cluster: Cluster, chart: Chart, scratch_namespaces: Callable[[str], str]
) -> None:
    ns = f"pxo-chart-{secrets.token_hex(4)}"
    scratch_namespaces(ns)
    rendered = chart.run("template", f"rel-{ns}", str(CHART), "--namespace", ns, "--include-crds").stdout
    result = dry_run_apply(cluster, rendered)
    assert result.returncode == 0, result.stderr
    assert sorted(applied_kinds(result.stdout)) == [
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "customresourcedefinition.apiextensions.k8s.io",
        "deployment.apps",
        "poddisruptionbudget.policy",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "serviceaccount",
    ]


def test_namespaced_install_is_accepted_by_the_api_server(
    cluster: Cluster, chart: Chart, scratch_namespaces: Callable[[str], str]
) -> None:
    suffix = secrets.token_hex(4)
    ns, team_a, team_b = (f"pxo-chart-{suffix}", f"pxo-chart-a-{suffix}", f"pxo-chart-b-{suffix}")
    for name in (ns, team_a, team_b):
        scratch_namespaces(name)
    rendered = chart.template(f"watchNamespaces={{{team_a},{team_b}}}", release=f"rel-{suffix}", namespace=ns).stdout
    result = dry_run_apply(cluster, rendered)
    assert result.returncode == 0, result.stderr
    assert sorted(applied_kinds(result.stdout)) == [
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "deployment.apps",
        "poddisruptionbudget.policy",
        "role.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "serviceaccount",
    ]


def test_a_namespaced_install_fails_while_a_watched_namespace_is_missing(
    cluster: Cluster, chart: Chart, scratch_namespaces: Callable[[str], str]
) -> None:
    """The README says: the watched namespaces must exist before the install. This is why."""
    ns = f"pxo-chart-{secrets.token_hex(4)}"
    scratch_namespaces(ns)
    rendered = chart.template(f"watchNamespaces={{{ns}-absent}}", release=f"rel-{ns}", namespace=ns).stdout
    result = dry_run_apply(cluster, rendered)
    assert result.returncode != 0
    assert f'namespaces "{ns}-absent" not found' in result.stderr


# ------------------------------------------------------------------------------------- values do what they say ---


def test_default_watches_all_namespaces_with_one_cluster_role(chart: Chart) -> None:
    objects = chart.objects()
    args = operator_args(objects)
    assert args.namespace == [], "no --namespace: kopf runs cluster-wide"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    # The only Role is leader election's, in the release namespace; everything else is cluster-wide.
    assert [r["metadata"]["name"] for r in find(objects, "Role")] == [LEADER_ELECTION_ROLE]
    (role,) = find(objects, "ClusterRole")
    rules = rules_of(role)
    assert {("", "secrets", "list"), ("", "secrets", "watch"), ("", "secrets", "get")} <= rules
    assert ("proxmox-operator.dev", "proxmoxclusters/status", "patch") in rules


def test_watch_namespaces_renders_namespace_flags_and_roles_instead_of_cluster_wide_secret_access(
    chart: Chart,
) -> None:
    objects = chart.objects("watchNamespaces={team-a,team-b}")
    assert operator_args(objects).namespace == ["team-a", "team-b"]
    (cluster_role,) = find(objects, "ClusterRole")
    cluster_rules = rules_of(cluster_role)
    # Cluster-wide, only what kopf needs to follow CRDs and namespaces: no Secrets, ConfigMaps or ProxmoxClusters.
    assert {r for _, r, _ in cluster_rules} == {"customresourcedefinitions", "namespaces"}
    assert {v for _, _, v in cluster_rules} == {"list", "watch"}
    # Besides leader election's Role for Leases in the release namespace (see the default's test).
    roles = [r for r in find(objects, "Role") if r["metadata"]["name"] != LEADER_ELECTION_ROLE]
    bindings = [b for b in find(objects, "RoleBinding") if b["metadata"]["name"] != LEADER_ELECTION_ROLE]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    (default_cluster_role,) = find(chart.objects(), "ClusterRole")
    # The Roles grant exactly the namespaced part of the all-namespaces ClusterRole.
    for role in roles:
        assert rules_of(role) == rules_of(default_cluster_role) - cluster_rules
    (sa,) = find(objects, "ServiceAccount")
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": binding["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
        ]


def test_watch_namespaces_refuses_globs(chart: Chart) -> None:
    result = chart.template("watchNamespaces={team-*}", check=False)
    assert result.returncode != 0
    assert "globs are not supported" in result.stderr


def test_probe_interval_renders_the_flag(chart: Chart) -> None:
    assert operator_args(chart.objects()).probe_interval == 60
    assert operator_args(chart.objects("probeInterval=15")).probe_interval == 15


def test_allow_cross_namespace_secrets_renders_the_flag(chart: Chart) -> None:
    assert operator_args(chart.objects()).allow_cross_namespace_secrets is False
    assert operator_args(chart.objects("allowCrossNamespaceSecrets=true")).allow_cross_namespace_secrets is True


@pytest.mark.parametrize(
    ("level", "verbose", "quiet"), [("info", False, False), ("debug", True, False), ("warning", False, True)]
)
def test_log_level_renders_verbose_or_quiet(chart: Chart, level: str, verbose: bool, quiet: bool) -> None:
    args = operator_args(chart.objects(f"logLevel={level}"))
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_an_unknown_log_level_is_refused(chart: Chart) -> None:
    result = chart.template("logLevel=trace", check=False)
    assert result.returncode != 0
    assert "logLevel must be info, debug or warning" in result.stderr


def test_two_replicas_elect_a_leader_and_roll_out_one_at_a_time_by_default(chart: Chart) -> None:
    objects = chart.objects()
    dep = deployment(objects)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    args = operator_args(objects)
    assert args.leader_elect
    assert (args.leader_election_namespace, args.leader_election_id) == ("proxmox-operator-system", "proxmox-operator")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(objects)["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    # Leases in the release namespace, nothing more.
    (role,) = find(objects, "Role")
    assert role["metadata"]["namespace"] == "proxmox-operator-system"
    assert rules_of(role) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    (binding,) = find(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]


def test_a_pod_disruption_budget_keeps_a_standby_through_a_drain(chart: Chart) -> None:
    objects = chart.objects()
    (pdb,) = find(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment(objects)["spec"]["selector"]}
    # One replica: a budget would block every drain; or switched off.
    assert not find(chart.objects("replicaCount=1"), "PodDisruptionBudget")
    assert not find(chart.objects("podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


def test_without_leader_election_the_replica_count_is_zero_or_one_and_rollouts_recreate(chart: Chart) -> None:
    objects = chart.objects("leaderElection.enabled=false", "replicaCount=1")
    dep = deployment(objects)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert not operator_args(objects).leader_elect
    assert "env" not in container(objects)
    assert not find(objects, "Role") and not find(objects, "PodDisruptionBudget")
    assert deployment(chart.objects("leaderElection.enabled=false", "replicaCount=0"))["spec"]["replicas"] == 0
    result = chart.template("leaderElection.enabled=false", check=False)  # with the default replicaCount 2
    assert result.returncode != 0
    assert "replicaCount must be 0 or 1 without leaderElection.enabled" in result.stderr
    assert deployment(chart.objects("replicaCount=3"))["spec"]["replicas"] == 3
    assert chart.template("replicaCount=-1", check=False).returncode != 0


def test_extra_env_comes_after_the_downward_api(chart: Chart) -> None:
    objects = chart.objects("extraEnv[0].name=KUBERNETES_SERVICE_HOST", "extraEnv[0].value=127.0.0.1")
    names = [e["name"] for e in container(objects)["env"]]
    assert names == ["POD_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"]


SHARDS = 'shards=[{"name":"a","selector":"shard=a"},{"name":"rest","selector":"!shard"}]'


def test_shards_render_one_deployment_lease_and_budget_each(chart: Chart) -> None:
    objects = chart.objects(set_json=SHARDS)
    deps = {d["metadata"]["name"]: d for d in find(objects, "Deployment")}
    assert sorted(deps) == ["proxmox-operator-a", "proxmox-operator-rest"]
    for name, selector in (("a", "shard=a"), ("rest", "!shard")):
        dep = deps[f"proxmox-operator-{name}"]
        args = operator_args(dep)
        assert args.selector == selector
        assert args.leader_election_id == f"proxmox-operator-{name}"  # each shard elects its own leader
        shard_label = {"proxmox-operator.dev/shard": name}
        assert shard_label.items() <= dep["spec"]["selector"]["matchLabels"].items()
        assert shard_label.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        (pdb,) = find(objects, "PodDisruptionBudget", f"proxmox-operator-{name}")
        assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    # The Deployments' selectors are disjoint: neither adopts the other's Pods.
    a, rest = (deps[n]["spec"]["selector"]["matchLabels"] for n in sorted(deps))
    assert a != rest
    assert len(find(objects, "Role")) == 1  # one RBAC for all shards


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ('[{"name":"A","selector":"shard=a"}]', "must be a DNS label"),
        ('[{"name":"a"}]', 'shard "a" needs a selector'),
        ('[{"name":"a","selector":"x"},{"name":"a","selector":"y"}]', 'the name "a" is used twice'),
    ],
)
def test_bad_shards_are_refused(chart: Chart, shards: str, message: str) -> None:
    result = chart.run("template", "proxmox-operator", str(CHART), "--set-json", f"shards={shards}", check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_shards_are_accepted_by_the_api_server(
    cluster: Cluster, chart: Chart, scratch_namespaces: Callable[[str], str]
) -> None:
    ns = f"pxo-chart-{secrets.token_hex(4)}"
    scratch_namespaces(ns)
    rendered = chart.run("template", f"rel-{ns}", str(CHART), "--namespace", ns, "--set-json", SHARDS).stdout
    result = dry_run_apply(cluster, rendered)
    assert result.returncode == 0, result.stderr
    assert applied_kinds(result.stdout).count("deployment.apps") == 2


def test_security_contexts_are_non_root_read_only_and_drop_all_capabilities(chart: Chart) -> None:
    objects = chart.objects()
    pod = deployment(objects)["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    overridden = chart.objects("podSecurityContext.runAsUser=20002", "securityContext.readOnlyRootFilesystem=false")
    assert deployment(overridden)["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 20002
    assert container(overridden)["securityContext"]["readOnlyRootFilesystem"] is False


def test_liveness_and_readiness_probe_the_operators_health_endpoint(chart: Chart) -> None:
    objects = chart.objects()
    c = container(objects)
    # --liveness http://0.0.0.0:8080/healthz: the port the probes use is the port the operator serves.
    url = operator_args(objects).liveness
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    path = "/" + url.rsplit(":", 1)[1].split("/", 1)[1]
    (named,) = [p for p in c["ports"] if p["name"] == "health"]
    assert named["containerPort"] == port
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": path, "port": "health"}, probe


def test_image_defaults_to_the_app_version_and_can_be_overridden(chart: Chart) -> None:
    assert container(chart.objects())["image"] == "proxmox-operator:0.1.0"
    c = container(chart.objects("image.repository=registry.example/pxo", "image.tag=1.2.3", "image.pullPolicy=Always"))
    assert c["image"] == "registry.example/pxo:1.2.3"
    assert c["imagePullPolicy"] == "Always"


def test_resources_node_selector_and_tolerations_reach_the_pod(chart: Chart) -> None:
    objects = chart.objects(
        "resources.limits.memory=1Gi",
        "nodeSelector.kubernetes\\.io/os=linux",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
    )
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert container(objects)["resources"]["limits"] == {"memory": "1Gi"}
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    default_pod = deployment(chart.objects())["spec"]["template"]["spec"]
    assert "nodeSelector" not in default_pod and "tolerations" not in default_pod


def test_service_account_can_be_brought_along(chart: Chart) -> None:
    objects = chart.objects("serviceAccount.create=false", "serviceAccount.name=platform-operator")
    assert not find(objects, "ServiceAccount")
    assert deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operator"
    (binding,) = find(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "platform-operator"
    result = chart.template("serviceAccount.create=false", check=False)
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


def test_every_namespaced_object_is_in_the_release_namespace_or_a_watched_one(chart: Chart) -> None:
    objects = chart.objects(
        "watchNamespaces={team-a}",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        namespace="ops",
    )
    for obj in objects:
        if obj["kind"] in NAMESPACED_KINDS:
            watched = obj["kind"] in {"Role", "RoleBinding"} and obj["metadata"]["name"] != LEADER_ELECTION_ROLE
            expected = "team-a" if watched else "ops"
            assert obj["metadata"]["namespace"] == expected, obj["kind"]
        else:
            assert "namespace" not in obj["metadata"], obj["kind"]
