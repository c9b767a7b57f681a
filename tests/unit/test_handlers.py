"""The kopf adapter's own pieces that need no API server."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from proxmox_operator.handlers import SlimDiffBase

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


def _bare() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"}, "data": {"tokenId": "eA=="}}


@pytest.mark.parametrize("raw", [_pxc(), _bare()], ids=["proxmoxcluster", "no-labels-no-status"])
@pytest.mark.parametrize("extra", [None, ["status.observedGeneration"], ["metadata.generation"]])
def test_the_slim_essence_is_the_one_kopf_builds(raw: dict[str, Any], extra: list[str] | None) -> None:
    """kopf compares essences to detect changes: the shortcut must never change what they contain."""
    ours = SlimDiffBase(prefix=PREFIX, key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key="last-handled-configuration")
    body = kopf.Body(copy.deepcopy(raw))
    assert ours.build(body=body, extra_fields=extra) == kopfs.build(body=body, extra_fields=extra)


def test_the_slim_essence_does_not_share_anything_with_the_body() -> None:
    """kopf keeps an essence across events: a later change of the body must not reach into it."""
    raw = _pxc()
    essence = SlimDiffBase(prefix=PREFIX, key="last-handled-configuration").build(body=kopf.Body(raw))
    raw["spec"]["credentialsRef"]["name"] = "changed"
    raw["metadata"]["labels"]["shard"] = "s2"
    assert essence["spec"]["credentialsRef"]["name"] == "token"
    assert essence["metadata"]["labels"]["shard"] == "s1"
    assert "status" not in essence
