"""The controller's port to Kubernetes: what it needs, as a protocol, and the failures it understands.

Implemented with real clients in :mod:`proxmox_operator.kube`; :class:`tests.support.fakekube.FakeKube` implements it
for unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proxmox_operator.secretstore import Secret


@dataclass(frozen=True)
class Key:
    """A ProxmoxCluster's identity within the operator."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class SecretForbidden(Exception):
    """The operator may not read the Secret (RBAC)."""


class ObjectGone(Exception):
    """The ProxmoxCluster no longer exists (deleted while we were probing)."""


class KubeUnavailable(Exception):
    """The Kubernetes API failed a request (e.g. the API server restarts); the round is retried."""


class Kube(Protocol):
    """What the reconciler needs from Kubernetes."""

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret (data only when it carries the opt-in label), or None when it does not exist. Raises
        SecretForbidden, KubeUnavailable."""

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """ConfigMap data, or None when it does not exist. Raises SecretForbidden, KubeUnavailable."""

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource. Raises ObjectGone, KubeUnavailable."""

    async def patch_finalizers(self, namespace: str, name: str, present: list[str], wanted: list[str]) -> bool:
        """Replace the object's finalizers ``present`` (as last seen) with ``wanted``: False when they are no longer
        ``present`` (someone changed them; the newer version is on its way through the watch). Other changes to
        the object (a status write) do not get in the way. Raises ObjectGone, KubeUnavailable."""

    def post_event(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str, retry: bool = True) -> None:
        """Record an Event about the object (in the background: ``close`` waits for it; ``retry=False``: a single
        attempt)."""
