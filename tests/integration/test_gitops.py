"""GitOps tools own the manifest: the operator never writes what a user's manifest says.

Applying the same manifest again with server-side apply after the resource is Ready changes nothing and
conflicts with nothing, and `kubectl diff --server-side` is empty: what Argo CD and Flux do on every sync.
"""

from __future__ import annotations

import pytest
import yaml

from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, secret_manifest
from tests.integration.kube import Cluster, get_pxc, wait_condition
from tests.integration.pve import PVE, TOKEN_ID

pytestmark = pytest.mark.integration


def test_reapplying_the_manifest_is_a_no_op_and_diff_is_empty(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    manifest = pxc_manifest(
        "lab",
        namespace,
        endpoint=pve.url,
        secret="token",
        ca_pem=pve.ca_pem,
        annotations={"argocd.argoproj.io/tracking-id": "app:proxmox-operator.dev/ProxmoxCluster:ns/lab"},
    )
    manifest["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "argocd"}
    apply(cluster, secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}))
    # As a GitOps tool applies: its own field manager, no --force-conflicts.
    first = cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd-controller", "-f", "-", stdin=yaml.safe_dump(manifest)
    )
    assert "serverside-applied" in first.stdout
    ready = wait_condition(cluster, namespace, "lab", "True")

    again = cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd-controller", "-f", "-", stdin=yaml.safe_dump(manifest)
    )
    assert again.returncode == 0 and "conflict" not in again.stderr.lower()
    after = get_pxc(cluster, namespace, "lab")
    assert after is not None
    assert after["metadata"]["generation"] == ready["metadata"]["generation"], "the spec did not change"
    assert after["spec"] == ready["spec"]
    assert after["metadata"]["labels"] == manifest["metadata"]["labels"]
    assert after["metadata"]["annotations"] == manifest["metadata"]["annotations"], "the operator adds no annotations"

    diff = cluster.kubectl(
        "diff",
        "--server-side",
        "--field-manager=argocd-controller",
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest),
        check=False,
    )
    assert diff.returncode == 0, f"kubectl diff found a difference:\n{diff.stdout}{diff.stderr}"
    assert diff.stdout == ""

    # The operator's fields are its own: the finalizer under its manager, status under the status subresource.
    full = cluster.kubectl_json("get", "pxc", "lab", "-n", namespace, "--show-managed-fields")
    managers = {m["manager"]: m for m in full["metadata"]["managedFields"]}
    assert "argocd-controller" in managers
    owned_by_user = yaml.safe_dump(managers["argocd-controller"]["fieldsV1"])
    assert "f:status" not in owned_by_user and "f:finalizers" not in owned_by_user
