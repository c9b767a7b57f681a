"""The local control plane behaves like a real cluster where the operator relies on it.

These would fail on an API server without kube-controller-manager (namespaces stuck in Terminating, no garbage
collection), with RBAC off, or with a kube-apiserver built so that its version or OpenAPI data is broken.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest
import yaml

from tests.integration.kube import ROOT, Cluster, wait_for

pytestmark = pytest.mark.integration


def test_server_is_the_pinned_kubernetes_version(cluster: Cluster) -> None:
    gomod = (ROOT / "hack" / "controlplane" / "go.mod").read_text()
    pinned = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v\S+)", gomod, re.MULTILINE)
    assert pinned is not None
    if cluster.kubectl("config", "current-context").stdout.strip() != "proxmox-operator-local":
        pytest.skip("not the local control plane")
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned.group(1)


def test_deleted_namespace_goes_away(cluster: Cluster) -> None:
    ns = f"pxo-cp-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "configmap", "payload", "--from-literal=a=b")
    # The service-account controller fills a new namespace with its default ServiceAccount.
    wait_for(
        lambda: cluster.kubectl("-n", ns, "get", "sa", "default", check=False).returncode == 0,
        timeout=30,
        what="the default ServiceAccount",
    )
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        lambda: cluster.kubectl("get", "namespace", ns, check=False).returncode != 0,
        timeout=60,
        what=f"namespace {ns} to be deleted",
    )


def test_owner_references_are_garbage_collected(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "create", "configmap", "owner")
    uid = cluster.kubectl("-n", namespace, "get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}").stdout
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(dependent))
    cluster.kubectl("-n", namespace, "delete", "configmap", "owner")
    wait_for(
        lambda: cluster.kubectl("-n", namespace, "get", "configmap", "dependent", check=False).returncode != 0,
        timeout=60,
        what="the dependent ConfigMap to be collected",
    )


def test_rbac_is_enforced(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    token = cluster.kubectl("-n", namespace, "create", "token", "nobody").stdout.strip()
    result = cluster.kubectl("--token", token, "-n", namespace, "get", "secrets", check=False)
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
