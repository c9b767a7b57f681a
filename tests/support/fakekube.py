"""FakeKube: the controller's port to Kubernetes (``proxmox_operator.controller.ports.Kube``) in memory, for unit
tests of the controller that need no API server. It records what the controller writes; integration tests run the
real implementation (``proxmox_operator.kube``) against a real kube-apiserver."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxmox_operator.controller.ports import KubeUnavailable, ObjectGone
from proxmox_operator.secretstore import CREDENTIALS_LABEL, Secret


@dataclass
class FakeKube:
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: (namespace, name, status) of every status write, in order.
    patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: (type, reason, message) of every Event, in order.
    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: Objects that no longer exist: a status write raises ObjectGone.
    gone: set[tuple[str, str]] = field(default_factory=set)
    #: (namespace, name, finalizers as seen, finalizers wanted) of every finalizer write attempted, in order.
    finalizer_writes: list[tuple[str, str, list[str], list[str]]] = field(default_factory=list)
    #: The next this many finalizer writes lose a race (409), or fail as if the API server were down.
    conflicts: int = 0
    unavailable: int = 0
    #: Events and finalizer writes in the order they happened ("event Reason", "finalizers [...]").
    journal: list[str] = field(default_factory=list)

    def put_secret(
        self, namespace: str, name: str, data: Mapping[str, str], *, labelled: bool = True, **annotations: str
    ) -> None:
        labels = {CREDENTIALS_LABEL: "true"} if labelled else {}
        encoded = {k: v.encode() for k, v in data.items()} if labelled else {}
        self.secrets[(namespace, name)] = Secret(labels=labels, annotations=annotations, data=encoded)

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        return self.secrets.get((namespace, name))

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.configmaps.get((namespace, name))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if (namespace, name) in self.gone:
            raise ObjectGone
        self.patches.append((namespace, name, status))

    async def patch_finalizers(self, namespace: str, name: str, present: list[str], wanted: list[str]) -> bool:
        self.finalizer_writes.append((namespace, name, list(present), list(wanted)))
        if (namespace, name) in self.gone:
            raise ObjectGone
        if self.unavailable:
            self.unavailable -= 1
            raise KubeUnavailable("patching the finalizers failed with HTTP 503")
        if self.conflicts:
            self.conflicts -= 1
            return False
        self.journal.append(f"finalizers {wanted}")
        return True

    def post_event(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str, retry: bool = True) -> None:
        self.events.append((type_, reason, message))
        self.journal.append(f"event {reason}")

    def status(self) -> dict[str, Any]:
        """The status as the API server would hold it after the merge-patches (nulls remove fields)."""
        merged: dict[str, Any] = {}
        for _, _, patch in self.patches:
            for key, value in patch.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        return merged
