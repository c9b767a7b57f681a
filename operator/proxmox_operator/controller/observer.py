"""The controller's port to whoever watches it work (the operator's metrics, :mod:`proxmox_operator.metrics`).

The controller tells an :class:`Observer` what each round found and what it wrote; the default,
:data:`NO_OBSERVER`, does nothing, so the controller and its unit tests need no metrics. An observer is called on
the event loop and must not block.
"""

from __future__ import annotations

from typing import Protocol

from proxmox_operator.api.v1alpha1 import ProxmoxClusterStatus, Reason
from proxmox_operator.controller.outcome import Outcome
from proxmox_operator.controller.ports import Key


class Observer(Protocol):
    """What the controller reports."""

    def registered(self, key: Key) -> None:
        """A worker started for ``key``."""

    def observed(self, key: Key, outcome: Outcome, status: ProxmoxClusterStatus, probe_seconds: float | None) -> None:
        """A round ended: what it found (``outcome``), the status it computed (written or not, its facts survive
        failures), and how long the probe took (``None``: nothing was probed, e.g. paused or an invalid spec)."""

    def failed(self, reason: Reason) -> None:
        """A round failed before it computed a status (Kubernetes unavailable, an unexpected error)."""

    def status_written(self) -> None:
        """A status was written to Kubernetes."""

    def event_posted(self, type_: str, reason: str) -> None:
        """An Event was posted (``Normal`` or ``Warning``)."""

    def deregistered(self, key: Key) -> None:
        """The worker of ``key`` stopped and the cluster was forgotten: its per-cluster series go."""


class NullObserver:
    """Reports nowhere."""

    def registered(self, key: Key) -> None:
        pass

    def observed(self, key: Key, outcome: Outcome, status: ProxmoxClusterStatus, probe_seconds: float | None) -> None:
        pass

    def failed(self, reason: Reason) -> None:
        pass

    def status_written(self) -> None:
        pass

    def event_posted(self, type_: str, reason: str) -> None:
        pass

    def deregistered(self, key: Key) -> None:
        pass


NO_OBSERVER: Observer = NullObserver()
