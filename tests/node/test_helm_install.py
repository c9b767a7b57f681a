"""The operator installed by the Helm chart as a real Pod on a real node (hack/node.sh: kubelet + containerd).

The operator image (`make image`) is imported into the node's containerd and never pulled (pullPolicy Never). The
Pod runs in the host network, so it reaches the API server and the PVE simulator on 127.0.0.1. Its in-cluster
configuration points at the API server through the chart's extraEnv: the kubelet sets KUBERNETES_SERVICE_HOST to
the `kubernetes` Service's ClusterIP (10.96.0.1), which nothing routes here (no kube-proxy), and container env
overrides it. The token is the chart's ServiceAccount's, mounted by the kubelet.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy.conftest import CHART, helm
from tests.integration.conftest import CRD_NAME, register, scratch_namespace
from tests.integration.kube import ROOT, Cluster, wait_condition, wait_for
from tests.integration.pve import PVE
from tests.node.conftest import Node, apiserver_port, free_port

__all__ = ["helm"]

INSTANCE_LABEL = "app.kubernetes.io/instance"
#: Every kind of object the chart makes (or Kubernetes makes for it), namespaced and cluster-wide.
RELEASE_KINDS = "pods,deployments,replicasets,serviceaccounts,roles,rolebindings,services,configmaps,secrets"
CLUSTER_KINDS = "clusterroles,clusterrolebindings"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def operator_image(node: Node) -> str:
    """The operator image `make image` built, imported into the node's containerd; its reference."""
    ref = subprocess.run(["bash", str(ROOT / "hack" / "image.sh"), "ref"], capture_output=True, text=True, check=False)
    if ref.returncode != 0:
        pytest.fail(f"no up-to-date operator image: `make test` builds it first, or run `make image`\n{ref.stderr}")
    archive = run("bash", str(ROOT / "hack" / "image.sh"), "save").stdout.strip()
    load = node.script("load", archive)
    assert load.returncode == 0, load.stderr
    return ref.stdout.strip()


@dataclass
class Release:
    name: str
    namespace: str
    helm: str
    cluster: Cluster

    def helm_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.helm, "--kubeconfig", str(self.cluster.kubeconfig), *args)

    def installed(self) -> bool:
        out = self.helm_run("list", "-n", self.namespace, "-q", "--filter", f"^{self.name}$").stdout
        return self.name in out.split()

    def pods(self) -> list[dict[str, Any]]:
        selector = f"{INSTANCE_LABEL}={self.name}"
        return list(self.cluster.kubectl_json("get", "pods", "-n", self.namespace, "-l", selector)["items"])


@pytest.fixture(scope="module")
def node_namespace(cluster: Cluster, crd: str) -> Iterator[str]:
    yield from scratch_namespace(cluster, "pxo-node-")


@pytest.fixture(scope="module")
def release(cluster: Cluster, node: Node, operator_image: str, node_namespace: str, helm: str) -> Iterator[Release]:
    repository, _, tag = operator_image.rpartition(":")
    rel = Release(name=f"node-{secrets.token_hex(3)}", namespace=node_namespace, helm=helm, cluster=cluster)
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(apiserver_port(cluster))},
    ]
    rel.helm_run(
        "install", rel.name, str(CHART), "--namespace", node_namespace,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
        # One replica: with hostNetwork a second one would need the same port of this one node (it stays Pending).
        "--set", "hostNetwork=true", "--set", f"healthPort={free_port()}", "--set", f"metrics.port={free_port()}",
        "--set", "replicaCount=1",
        "--set-json", f"extraEnv={json.dumps(env)}",
        "--set-json", f"watchNamespaces={json.dumps([node_namespace])}",
    )  # fmt: skip
    yield rel
    if rel.installed():
        cluster.kubectl("delete", "pxc", "--all", "-n", node_namespace, "--wait=true", "--timeout=60s", check=False)
        rel.helm_run("uninstall", rel.name, "-n", node_namespace, "--wait", "--timeout=120s")


def ready_pod(release: Release, node: Node) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        for pod in release.pods():
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True":
                return pod
        return None

    try:
        return wait_for(probe, timeout=120, interval=1, what="the operator Pod Ready")
    except AssertionError as e:
        pods = json.dumps([p.get("status") for p in release.pods()], indent=1)[-4000:]
        raise AssertionError(
            f"{e}\n--- pods ---\n{pods}\n--- kubelet ---\n{node.log('kubelet')}\n{node.container_logs()}"
        ) from None


def test_the_chart_runs_the_operator_as_a_pod_that_its_probes_find_ready(release: Release, node: Node) -> None:
    pod = ready_pod(release, node)
    spec = pod["spec"]
    assert spec["nodeName"] == node.name
    assert spec["hostNetwork"] is True
    assert spec["serviceAccountName"] == f"{release.name}-proxmox-operator"
    container = spec["containers"][0]
    # Ready through the chart's own probes on kopf's /healthz, and never restarted by the liveness probe.
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True
    assert status["restartCount"] == 0
    # The ServiceAccount's token is mounted by the kubelet: the in-cluster config has nothing else to go on.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts


def test_the_pod_registers_a_proxmox_cluster_with_the_charts_service_account(
    cluster: Cluster, release: Release, node: Node, pve: PVE
) -> None:
    ready_pod(release, node)
    register(cluster, release.namespace, pve)
    try:
        obj = wait_condition(cluster, release.namespace, "lab", "True", "Registered", timeout=90)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{node.container_logs()}") from None
    assert obj["status"]["nodeCount"] == len(pve.nodes)
    # The Pod's operator deregisters too: it removes its finalizer, so the delete completes.
    cluster.kubectl("delete", "pxc", "lab", "-n", release.namespace, "--wait=true", "--timeout=60s")


def test_helm_uninstall_leaves_nothing_of_the_release_but_the_crd(
    cluster: Cluster, release: Release, node: Node
) -> None:
    ready_pod(release, node)
    release.helm_run("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=120s")
    selector = f"{INSTANCE_LABEL}={release.name}"

    def leftovers() -> list[str]:
        names = cluster.kubectl("get", RELEASE_KINDS, "-A", "-l", selector, "-o", "name").stdout.split()
        names += cluster.kubectl("get", CLUSTER_KINDS, "-l", selector, "-o", "name").stdout.split()
        # Helm's own record of the release.
        names += cluster.kubectl(
            "get", "secrets", "-n", release.namespace, "-l", f"owner=helm,name={release.name}", "-o", "name"
        ).stdout.split()
        return names

    # The Pod goes once the kubelet has stopped its container (a clean SIGTERM shutdown of kopf).
    wait_for(lambda: not leftovers() or None, timeout=120, interval=1, what=f"nothing left of {release.name}")
    assert cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0
    assert not release.installed()
