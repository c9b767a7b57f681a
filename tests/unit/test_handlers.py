"""The kopf adapter's own pieces that need no API server."""

from __future__ import annotations

from typing import Any

import kopf

from proxmox_operator.handlers import NoEssence

PREFIX = "proxmox-operator.dev"


def _pxc() -> dict[str, Any]:
    return {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {
            "name": "lab",
            "namespace": "team-a",
            "uid": "0b1c",
            "resourceVersion": "42",
            "generation": 3,
            "labels": {"shard": "s1"},
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                f"{PREFIX}/last-handled-configuration": '{"spec": {}}',
                "other-operator.example/last-handled-configuration": "{}",
            },
            "finalizers": [f"{PREFIX}/finalizer"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "9"}],
            "managedFields": [{"manager": "proxmox-operator", "fieldsV1": {"f:status": {"f:conditions": {}}}}],
        },
        "spec": {"endpoint": "https://pve.example:8006", "credentialsRef": {"name": "token"}, "paused": False},
        "status": {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_the_operator_registers_event_handlers_only() -> None:
    """:class:`NoEssence` is right only while no change handler, daemon or timer is registered: they would see no
    change ever. Adding one must mean going back to kopf's diff base (and its annotation)."""
    registry = kopf.get_default_registry()
    assert len(registry._watching.get_all_handlers()) == 3, "ProxmoxClusters, Secrets, ConfigMaps"
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []


def test_no_essence_is_built_and_nothing_is_written() -> None:
    """Every essence is the same empty one: kopf detects no difference, and stores nothing on the object."""
    storage = NoEssence()
    body = kopf.Body(_pxc())
    assert storage.build(body=body, extra_fields=["status.observedGeneration"]) == {}
    assert storage.fetch(body=body) == {}
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch
