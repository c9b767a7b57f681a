"""Status that tells the truth over time: conditions, health probes, Secret rotation, pause, duplicates.

Real operator, real kube-apiserver, real HTTPS to the simulator. Health-check intervals here are the minimum
(10 s); waits are liveness bounds of a few intervals, never speed measurements.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, register, secret_manifest, token_secret
from tests.integration.kube import Cluster, condition, event_reasons, events, get_pxc, wait_condition, wait_for
from tests.integration.pve import BARE_TOKEN_ID, PVE, ROTATED_TOKEN_ID, TOKEN_ID

pytestmark = pytest.mark.integration

FAST = {"healthCheck": {"intervalSeconds": 10}}


def test_ready_status_carries_cluster_facts_and_every_condition(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve)
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered")
    status = obj["status"]
    assert status["clusterName"] == pve.cluster_name
    assert status["quorate"] is True
    assert status["nodes"]["total"] == 3 and status["nodes"]["online"] == 3 and status["nodes"]["summary"] == "3/3"
    assert [n["name"] for n in status["nodes"]["items"]] == list(pve.nodes)
    assert all(n["ip"].startswith("127.") for n in status["nodes"]["items"])
    assert status["activeEndpoint"] == pve.url
    assert status["auth"] == {"method": "token", "id": TOKEN_ID}
    for type_, reason in [
        ("Authenticated", "LoggedIn"),
        ("Reachable", "Connected"),
        ("TLSVerified", "Verified"),
        ("Quorate", "Quorate"),
        ("PermissionsSufficient", "Sufficient"),
    ]:
        cond = condition(obj, type_)
        assert cond is not None and (cond["status"], cond["reason"]) == ("True", reason), cond
    # kubectl wait works on the Ready condition.
    cluster.kubectl("wait", "--for=condition=Ready", "pxc/lab", "-n", namespace, "--timeout=10s")
    described = cluster.kubectl("describe", "pxc", "lab", "-n", namespace).stdout
    assert "Registered" in described and "PermissionsSufficient" in described


def test_token_without_privileges_is_permission_denied_and_says_what_is_missing(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve, "bare", BARE_TOKEN_ID, pve.bare_secret),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="bare", ca_pem=pve.ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "PermissionDenied")
    perms = condition(obj, "PermissionsSufficient")
    assert perms is not None and perms["status"] == "False" and "Sys.Audit" in perms["message"]
    assert condition(obj, "Authenticated")["status"] == "True"  # type: ignore[index]
    assert obj["status"]["version"]["version"] == pve.version  # what it may read, it reports


def test_insecure_skip_verify_is_surfaced(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", insecure=True),
    )
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered")
    tls = condition(obj, "TLSVerified")
    assert tls is not None and (tls["status"], tls["reason"]) == ("False", "InsecureSkipVerify")
    warning = wait_for(
        lambda: [e for e in events(cluster, namespace) if e["reason"] == "InsecureSkipVerify"],
        timeout=15,
        what="an InsecureSkipVerify event",
    )
    assert warning[0]["type"] == "Warning"


def test_cross_namespace_secret_is_refused(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    manifest = pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    manifest["spec"]["credentialsRef"]["namespace"] = "kube-system"
    apply(cluster, manifest)
    obj = wait_condition(cluster, namespace, "lab", "False", "SecretNamespaceForbidden")
    assert "--allow-cross-namespace-secrets" in condition(obj)["message"]  # type: ignore[index]


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret"])
def test_ca_bundle_from_a_configmap_or_secret_is_watched(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kind: str
) -> None:
    ref = {"kind": kind, "name": "pve-ca", "key": "ca.crt"}
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", extra={"tls": {"caBundleRef": ref}}),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "CABundleNotFound")
    assert "pve-ca" in condition(obj)["message"]  # type: ignore[index]
    holder = (
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pve-ca", "namespace": namespace},
            "data": {"ca.crt": pve.ca_pem},
        }
        if kind == "ConfigMap"
        else secret_manifest("pve-ca", namespace, {"ca.crt": pve.ca_pem})
    )
    apply(cluster, holder)
    wait_condition(cluster, namespace, "lab", "True", "Registered", timeout=20)


def test_rotated_token_is_picked_up_within_seconds(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True", "Registered")
    # Rotate to a revoked value: the old session must not be used any more.
    apply(cluster, token_secret(namespace, pve, secret="11111111-2222-3333-4444-555555555555"))
    wait_condition(cluster, namespace, "lab", "False", "AuthenticationFailed", timeout=20)
    apply(cluster, token_secret(namespace, pve, token_id=ROTATED_TOKEN_ID, secret=pve.rotated_secret))
    obj = wait_condition(cluster, namespace, "lab", "True", timeout=20)
    assert obj["status"]["auth"]["id"] == ROTATED_TOKEN_ID
    # No ownerReference on the user's Secret.
    secret = cluster.kubectl_json("get", "secret", "token", "-n", namespace)
    assert not secret["metadata"].get("ownerReferences")
    assert not [a for a in secret["metadata"].get("annotations", {}) if "kopf" in a or "proxmox-operator" in a]


def test_deleted_secret_is_secret_not_found_and_recovers(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True")
    cluster.kubectl("delete", "secret", "token", "-n", namespace)
    wait_condition(cluster, namespace, "lab", "False", "SecretNotFound", timeout=20)
    apply(cluster, token_secret(namespace, pve))
    wait_condition(cluster, namespace, "lab", "True", timeout=20)


def test_proxmox_down_then_back_flips_ready_within_an_interval(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve, extra=FAST)
    wait_condition(cluster, namespace, "lab", "True")
    pve.stop()
    obj = wait_condition(cluster, namespace, "lab", "False", "Unreachable", timeout=30)
    assert condition(obj, "Reachable")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["version"]["version"] == pve.version, "last known facts stay, marked stale by Ready"
    probe_before = obj["status"]["lastProbeTime"]
    pve.start()
    obj = wait_condition(cluster, namespace, "lab", "True", timeout=30)
    assert obj["status"]["lastProbeTime"] != probe_before
    reasons = event_reasons(cluster, namespace)
    assert reasons.count("Unreachable") == 1 and reasons.count("Recovered") == 1


def test_quorum_loss_and_return(cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE) -> None:
    register(cluster, namespace, pve, extra=FAST)
    wait_condition(cluster, namespace, "lab", "True")
    pve.server.set_node_online("pve2", False)
    pve.server.set_node_online("pve3", False)
    obj = wait_condition(cluster, namespace, "lab", "False", "QuorumLost", timeout=30)
    assert obj["status"]["quorate"] is False and obj["status"]["nodes"]["summary"] == "1/3"
    assert condition(obj, "Quorate")["status"] == "False"  # type: ignore[index]
    pve.server.set_node_online("pve2", True)
    pve.server.set_node_online("pve3", True)
    obj = wait_condition(cluster, namespace, "lab", "True", timeout=30)
    assert obj["status"]["quorate"] is True
    reasons = event_reasons(cluster, namespace)
    assert reasons.count("QuorumLost") == 1 and "Recovered" in reasons


def test_a_steady_cluster_is_probed_with_one_request_and_no_status_write(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    """Nothing a user can see changed: probes go on (one PVE request each with a token), status is not
    rewritten, no Event is posted. Every status write would be a watch event for every watcher."""
    register(cluster, namespace, pve, extra=FAST)
    first = wait_condition(cluster, namespace, "lab", "True")
    counters = pve.server.counters
    probes, requests = pve.probes(), counters.total
    wait_for(lambda: pve.probes() >= probes + 2, timeout=40, what="two more probes")
    done = pve.probes() - probes
    assert counters.total - requests == done, "one request per probe: version, nodes and permissions are cached"
    later = get_pxc(cluster, namespace, "lab")
    assert later is not None
    assert later["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"], "no status write"
    assert event_reasons(cluster, namespace).count("Registered") == 1


def test_pause_annotation_stops_probes_and_resume_restarts_them(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True")
    cluster.kubectl("annotate", "pxc", "lab", "-n", namespace, "proxmox-operator.dev/paused=true")
    obj = wait_condition(cluster, namespace, "lab", "True", "Paused", type_="Paused", timeout=20)
    assert condition(obj)["reason"] == "Paused"  # type: ignore[index]
    wait_for(lambda: "Paused" in event_reasons(cluster, namespace), timeout=15, what="a Paused event")
    # While paused, even a Secret change (which wakes a worker at once) makes no request to Proxmox.
    requests = pve.server.counters.total
    apply(cluster, token_secret(namespace, pve, secret="11111111-2222-3333-4444-555555555555"))
    time.sleep(3)
    assert pve.server.counters.total == requests
    assert condition(get_pxc(cluster, namespace, "lab"), "Paused")["status"] == "True"  # type: ignore[index]
    apply(cluster, token_secret(namespace, pve))
    cluster.kubectl("annotate", "pxc", "lab", "-n", namespace, "proxmox-operator.dev/paused-")
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered", timeout=20)
    assert condition(obj, "Paused") is None
    assert "Resumed" in event_reasons(cluster, namespace)


def test_two_resources_for_one_cluster_are_both_served_and_the_later_is_duplicate(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("first", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem),
    )
    wait_condition(cluster, namespace, "first", "True")
    time.sleep(1.1)  # creationTimestamp has second precision: make the order unambiguous
    apply(cluster, pxc_manifest("second", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem))
    obj = wait_condition(cluster, namespace, "second", "True", "Duplicate", type_="Duplicate")
    assert f"{namespace}/first" in condition(obj, "Duplicate")["message"]  # type: ignore[index]
    assert condition(obj)["status"] == "True"  # type: ignore[index]
    assert condition(get_pxc(cluster, namespace, "first"), "Duplicate") is None
