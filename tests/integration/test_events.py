"""The operator's Events on the real kube-apiserver, posted with the operator's own credentials (deploy/rbac.yaml)."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from proxmox_operator import kubeauth
from proxmox_operator.kube import KubeClient
from tests.integration.kube import Cluster, events

pytestmark = pytest.mark.integration


async def test_an_event_posted_right_before_shutdown_is_recorded(
    cluster: Cluster, operator_kubeconfig: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM right after a status write used to lose the Registered Event still queued for kopf's poster. The
    client's close (at the operator's cleanup, before a leader releases its Lease) posts what is pending."""
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    client = KubeClient(lambda: kubeauth.login(settings=kopf.OperatorSettings()), instance="pytest-replica")
    obj = {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"namespace": namespace, "name": "lab", "uid": "00000000-0000-0000-0000-000000000001"},
    }
    client.post_event(obj, type_="Normal", reason="Registered", message="posted right before shutdown")
    await client.close()
    recorded = [e for e in events(cluster, namespace) if e["reason"] == "Registered"]
    assert len(recorded) == 1
    event = recorded[0]
    assert event["message"] == "posted right before shutdown"
    assert event["involvedObject"]["kind"] == "ProxmoxCluster" and event["involvedObject"]["name"] == "lab"
    assert event["reportingInstance"] == "pytest-replica"
    assert event["source"]["component"] == "proxmox-operator"
