"""The chart's namespaced install on the real API server: the RBAC it renders is enough for the real operator in
the watched namespace, and gives no Secret access anywhere else. Pods never run here (no kubelet), so the operator
runs as a process with the ServiceAccount's token and the container args the Deployment would run it with."""

from __future__ import annotations

import secrets
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import Chart, find
from tests.integration.conftest import OperatorProcess, register
from tests.integration.kube import Cluster, wait_condition, wait_for
from tests.integration.pve import PVE

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig_for(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig with a token of ServiceAccount ``namespace/sa``: the operator gets exactly that SA's RBAC."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cl = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": cl["name"], "cluster": cl["cluster"]}],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [{"name": sa, "context": {"cluster": cl["name"], "user": sa}}],
                "current-context": sa,
            }
        )
    )
    return path


class Install:
    """The chart installed with ``watchNamespaces: [watched]`` (all but the Deployment, applied for real)."""

    def __init__(self, cluster: Cluster, chart: Chart) -> None:
        suffix = secrets.token_hex(4)
        self.cluster = cluster
        self.release = f"pxo-{suffix}"
        self.namespace = f"pxo-chart-ops-{suffix}"
        self.watched = f"pxo-chart-watched-{suffix}"
        self.other = f"pxo-chart-other-{suffix}"
        for ns in (self.namespace, self.watched, self.other):
            cluster.kubectl("create", "namespace", ns)
        self.objects = chart.objects(
            f"watchNamespaces={{{self.watched}}}", release=self.release, namespace=self.namespace
        )
        self.rbac = [o for o in self.objects if o["kind"] != "Deployment"]
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(self.rbac))
        (sa,) = find(self.objects, "ServiceAccount")
        self.sa = str(sa["metadata"]["name"])

    def args(self) -> list[str]:
        (dep,) = find(self.objects, "Deployment")
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        return list(container["args"])

    def can(self, verb: str, resource: str, *where: str) -> bool:
        result = self.cluster.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            *where,
            f"--as=system:serviceaccount:{self.namespace}:{self.sa}",
            check=False,
        )
        return result.stdout.strip() == "yes"

    def remove(self) -> None:
        for obj in self.rbac:
            if obj["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                self.cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], check=False)
        for ns in (self.namespace, self.watched, self.other):
            self.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def install(cluster: Cluster, crd: str, chart: Chart) -> Iterator[Install]:
    inst = Install(cluster, chart)
    yield inst
    inst.remove()


def test_namespaced_rbac_reaches_secrets_only_in_watched_namespaces(install: Install) -> None:
    w, other, own = install.watched, install.other, install.namespace
    for verb in ("get", "list", "watch"):
        assert install.can(verb, "secrets", "-n", w), verb
        assert install.can(verb, "configmaps", "-n", w), verb
        assert not install.can(verb, "secrets", "-n", other), verb
        assert not install.can(verb, "secrets", "-n", own), verb
        assert not install.can(verb, "secrets", "--all-namespaces"), verb
    assert not install.can("create", "secrets", "-n", w), "Secrets are never written"
    assert install.can("patch", "proxmoxclusters.proxmox-operator.dev", "-n", w)
    assert install.can("patch", "proxmoxclusters.proxmox-operator.dev/status", "-n", w)
    assert not install.can("patch", "proxmoxclusters.proxmox-operator.dev", "-n", other)
    assert install.can("create", "events", "-n", w)
    assert not install.can("create", "events", "-n", other)
    # Cluster-wide, only kopf's reads of CRDs and namespaces.
    assert install.can("watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert install.can("list", "namespaces")
    # Leader election: Leases in the release namespace only.
    for verb in ("get", "create", "update"):
        assert install.can(verb, "leases.coordination.k8s.io", "-n", own), verb
        assert not install.can(verb, "leases.coordination.k8s.io", "-n", w), verb
    assert not install.can("delete", "leases.coordination.k8s.io", "-n", own)


def test_the_operator_runs_with_the_namespaced_rbac_and_the_rendered_args(
    cluster: Cluster, install: Install, pve: PVE, tmp_path: Path
) -> None:
    args = install.args()
    assert args[:2] == ["--liveness", "http://0.0.0.0:8080/healthz"]
    # Loopback only here, on free ports: the same endpoints the Deployment's probes and metrics Service use.
    health = f"http://127.0.0.1:{free_port()}/healthz"
    at = args.index("--metrics-address") + 1
    assert args[at] == "0.0.0.0:9090"
    metrics = f"127.0.0.1:{free_port()}"
    args[at] = metrics
    op = OperatorProcess(
        kubeconfig_for(cluster, install.namespace, install.sa, tmp_path / "kubeconfig"),
        tmp_path / "operator.log",
        ["--liveness", health, *args[2:]],
        # What the Deployment's downward API gives the Pod: the Lease lives in the release namespace.
        env={"POD_NAMESPACE": install.namespace, "POD_NAME": "operator-0"},
    )
    op.start()
    try:
        register(cluster, install.watched, pve)
        obj: dict[str, Any] = wait_condition(cluster, install.watched, "lab", "True", "Registered")
        assert obj["status"]["nodeCount"] == len(pve.nodes)
        wait_for(lambda: healthy(health), timeout=30, what=f"{health} answering 200")
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        assert (
            f'proxmox_operator_cluster_ready{{name="lab",namespace="{install.watched}",reason="Registered"}} 1.0'
            in (scraped)
        )
        # A ProxmoxCluster outside the watched namespaces is not this operator's business.
        register(cluster, install.other, pve)
        cluster.kubectl("delete", "pxc", "lab", "-n", install.watched, "--timeout=60s")
        assert "lab" not in cluster.kubectl("get", "pxc", "-n", install.watched, "-o", "name").stdout
        other = cluster.kubectl_json("get", "pxc", "lab", "-n", install.other)
        assert "status" not in other and "finalizers" not in other["metadata"]
        assert "Forbidden" not in op.log() and "forbidden" not in op.log(), op.log()[-5000:]
        lease_name = args[args.index("--leader-election-id") + 1]
        lease = cluster.kubectl_json("get", "lease", lease_name, "-n", install.namespace)
        assert lease["spec"]["holderIdentity"] == "operator-0"
    finally:
        code = op.stop()
        cluster.kubectl("delete", "pxc", "--all", "-n", install.other, "--wait=false", check=False)
    assert code == 0, op.log()[-5000:]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
