"""The operator's own API client (kube.py) on the real kube-apiserver, with the operator's credentials
(deploy/rbac.yaml): Events, and finalizer writes."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from proxmox_operator import kubeauth
from proxmox_operator.kube import KubeClient
from tests.integration.conftest import apply, pxc_manifest
from tests.integration.kube import Cluster, events

FINALIZER = "proxmox-operator.dev/finalizer"
OTHER = "example.com/keep-me"

pytestmark = pytest.mark.integration


def client(operator_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> KubeClient:
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    return KubeClient(lambda: kubeauth.login(settings=kopf.OperatorSettings()), instance="pytest-replica")


async def test_an_event_posted_right_before_shutdown_is_recorded(
    cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM right after a status write used to lose the Registered Event still queued for kopf's poster. The
    client's close (at the operator's cleanup, before a leader releases its Lease) posts what is pending."""
    namespace = life_namespace
    kube = client(operator_kubeconfig, monkeypatch)
    obj = {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"namespace": namespace, "name": "lab", "uid": "00000000-0000-0000-0000-000000000001"},
    }
    kube.post_event(obj, type_="Normal", reason="Registered", message="posted right before shutdown")
    await kube.close()
    recorded = [e for e in events(cluster, namespace) if e["reason"] == "Registered"]
    assert len(recorded) == 1
    event = recorded[0]
    assert event["message"] == "posted right before shutdown"
    assert event["involvedObject"]["kind"] == "ProxmoxCluster" and event["involvedObject"]["name"] == "lab"
    assert event["reportingInstance"] == "pytest-replica"
    assert event["source"]["component"] == "proxmox-operator"


async def test_finalizer_writes_keep_others_and_a_status_write_is_no_conflict(
    cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = life_namespace
    apply(cluster, pxc_manifest("lab", ns, endpoint="https://127.0.0.1:8006", secret="token"))
    kube = client(operator_kubeconfig, monkeypatch)

    def finalizers() -> list[str]:
        obj = cluster.kubectl_json("get", "proxmoxcluster", "lab", "-n", ns)
        return list(obj["metadata"].get("finalizers") or [])

    try:
        assert await kube.patch_finalizers(ns, "lab", [], [FINALIZER])
        assert finalizers() == [FINALIZER]
        # Computed from a stale view (no finalizers): refused, nothing overwritten.
        assert not await kube.patch_finalizers(ns, "lab", [], [OTHER])
        assert finalizers() == [FINALIZER]
        # Someone else adds one; a status write moves the resourceVersion. Neither is lost, and removing ours
        # from the view that has both still succeeds.
        cluster.kubectl(
            "patch",
            "proxmoxcluster",
            "lab",
            "-n",
            ns,
            "--type=json",
            "-p",
            f'[{{"op":"add","path":"/metadata/finalizers/-","value":"{OTHER}"}}]',
        )
        await kube.patch_status(ns, "lab", {"lastProbeTime": "2026-12-03T12:00:00Z"})
        assert await kube.patch_finalizers(ns, "lab", [FINALIZER, OTHER], [OTHER])
        assert finalizers() == [OTHER]
        assert await kube.patch_finalizers(ns, "lab", [OTHER], [])
        assert finalizers() == []
    finally:
        await kube.close()
