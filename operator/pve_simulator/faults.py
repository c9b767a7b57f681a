"""Fault injection: make the simulated cluster slow, refuse logins, fail requests, lose nodes.

The injected failures are ones real clusters produce:

* latency: a slow or overloaded pveproxy;
* refused logins: every ``POST /access/ticket`` fails exactly like a wrong password does
  (``401 authentication failure`` after the usual delay; pve-access-control
  ``src/PVE/API2/AccessControl.pm``, ``create_ticket``);
* a forced status for every other API request, after authentication (where PVE proxies requests to
  other nodes): 500 for handler errors, or ``595 No route to host`` / ``596 Connection timed out``
  with an empty body as pveproxy reports failed proxying (pve-http-server
  ``src/PVE/APIServer/AnyEvent.pm``, ``proxy_request``);
* node membership: a node going offline in corosync changes ``/nodes`` and ``/cluster/status``.

:class:`Faults` is thread-safe and can be driven in-process (``sim.faults``) or over the control
listener (:mod:`pve_simulator.control`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pve_simulator.model import Cluster

__all__ = ["DEFAULT_REASONS", "Faults"]

#: Reason phrases pveproxy uses for statuses that have no standard phrase.
DEFAULT_REASONS = {595: "No route to host", 596: "Connection timed out"}

_FIELDS = ("latency", "refuse_logins", "force_status", "force_reason")


class Faults:
    """The currently injected faults.

    Args:
        cluster: the cluster whose nodes :meth:`set_node_online` changes.

    Attributes:
        latency: extra seconds before every API request is handled (0 = none).
        refuse_logins: make every login fail with ``401 authentication failure``.
        force_status: answer every authenticated non-login API request with this status.
        force_reason: reason phrase for ``force_status`` (default: PVE's/HTTP's phrase).
    """

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._lock = threading.Lock()
        self.latency = 0.0
        self.refuse_logins = False
        self.force_status: int | None = None
        self.force_reason: str | None = None

    def reset(self) -> None:
        """Remove every fault (node states are left alone)."""
        with self._lock:
            self.latency = 0.0
            self.refuse_logins = False
            self.force_status = None
            self.force_reason = None

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update such as ``{"latency": 0.5, "force_status": 500}``.

        Raises:
            ValueError, TypeError: unknown key or invalid value (nothing is changed then).
        """
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
        values = self.to_dict()
        values.update(changes)
        latency = values["latency"]
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise ValueError("latency must be a number >= 0")
        if not isinstance(values["refuse_logins"], bool):
            raise TypeError("refuse_logins must be a boolean")
        status = values["force_status"]
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999):
            raise ValueError("force_status must be null or an HTTP status (100-999)")
        reason = values["force_reason"]
        if reason is not None and (not isinstance(reason, str) or "\n" in reason or "\r" in reason):
            raise ValueError("force_reason must be null or a single-line string")
        with self._lock:
            self.latency = float(latency)
            self.refuse_logins = values["refuse_logins"]
            self.force_status = status
            self.force_reason = reason

    def forced_reason(self) -> str:
        """The reason phrase to send with :attr:`force_status`."""
        status = self.force_status
        if self.force_reason:
            return self.force_reason
        if status is None:
            return ""
        if status in DEFAULT_REASONS:
            return DEFAULT_REASONS[status]
        try:
            return HTTPStatus(status).phrase
        except ValueError:
            return "Unknown"

    def set_node_online(self, name: str, online: bool) -> None:
        """Take a node offline or bring it back (``KeyError`` if unknown)."""
        self._cluster.set_online(name, online)

    def to_dict(self) -> dict[str, Any]:
        """The faults as JSON-serialisable data."""
        with self._lock:
            return {
                "latency": self.latency,
                "refuse_logins": self.refuse_logins,
                "force_status": self.force_status,
                "force_reason": self.force_reason,
            }

    def __repr__(self) -> str:
        return f"Faults({self.to_dict()!r})"
