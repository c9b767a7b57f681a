"""Fault injection: make the simulated cluster slow, refuse logins, fail requests, drop connections, lose nodes.

The injected failures are ones real clusters (or what stands in front of them) produce:

* ``latency``: a slow or overloaded pveproxy;
* ``refuse_logins``: every ``POST /access/ticket`` fails exactly like a wrong password does
  (``401 authentication failure`` after the usual delay; pve-access-control
  ``src/PVE/API2/AccessControl.pm``, ``create_ticket``);
* ``force_status``: a forced status for every other API request, after authentication (where PVE proxies
  requests to other nodes): 500 for handler errors, or ``595 No route to host`` / ``596 Connection timed
  out`` with an empty body as pveproxy reports failed proxying (pve-http-server
  ``src/PVE/APIServer/AnyEvent.pm``, ``proxy_request``).  ``429`` and ``503`` are different: pveproxy
  itself never sends them (pve-http-server has no 503/429 anywhere; at its connection limit ``max_conn``
  it stops accepting and above ``max_conn_soft_limit`` it only turns keep-alive off,
  ``accept_connections``), they come from a reverse proxy or load balancer in front of it, so they are
  answered *before* authentication, logins included, with an empty body and the standard reason phrase
  (``Too Many Requests`` / ``Service Unavailable``, what ``HTTP::Status::status_message`` gives pveproxy's
  ``response`` for a status without text);
* ``retry_after``: a ``Retry-After`` header (seconds, or a verbatim HTTP-date string) on forced
  responses, as proxies send it with 429/503 (RFC 9110 section 10.2.3);
* ``force_count``: force the status only for the next N requests it applies to, then stop;
* ``reset``: abort the TCP connection with a RST right after the request arrived (``True``: every
  request; a number N: the next N requests) - what a crashing worker or a stateful firewall does;
* ``hang``: accept the request and never answer (``True`` or a count like ``reset``) - the client's
  read timeout fires;
* ``swap_certificate``: the node presents a certificate that is not signed by the cluster CA (a
  self-signed ``pveproxy-ssl.pem``, see :mod:`pve_simulator.certs`);
* node membership: a node going offline in corosync changes ``/nodes`` and ``/cluster/status``.

:class:`Faults` (``sim.faults``) applies to every node; :class:`NodeFaults` (``sim.node_faults(name)``)
to one node only.  For a request on a node both count: latencies add up, a node's forced status wins
over the cluster-wide one (even when they apply at different points of a request), and
``refuse_logins``/``reset``/``hang``/``swap_certificate`` apply when either set asks for them (a node's
countdown is used before the cluster-wide one).

All of it is thread-safe and can be driven in-process or over the control listener
(:mod:`pve_simulator.control`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from pve_simulator.model import Cluster

__all__ = ["DEFAULT_REASONS", "FRONT_STATUSES", "EffectiveFaults", "FaultSet", "Faults", "NodeFaults"]

#: Reason phrases pveproxy uses for statuses that have no standard phrase.
DEFAULT_REASONS = {595: "No route to host", 596: "Connection timed out"}

#: Statuses answered by something in front of pveproxy: before authentication, for logins too.
FRONT_STATUSES = frozenset({429, 503})

_FIELDS = (
    "latency",
    "refuse_logins",
    "force_status",
    "force_reason",
    "force_count",
    "retry_after",
    "reset",
    "hang",
    "swap_certificate",
)


def _check_countdown(name: str, value: object) -> bool | int:
    """``False``/``True`` or a count >= 0 (0 means off)."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a boolean or a count >= 0")
    return value if value > 0 else False


def _standard_reason(status: int) -> str:
    if status in DEFAULT_REASONS:
        return DEFAULT_REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class FaultSet:
    """One set of injected faults (cluster-wide or for one node).

    Attributes:
        latency: extra seconds before every API request is handled (0 = none).
        refuse_logins: make every login fail with ``401 authentication failure``.
        force_status: answer API requests with this status (429/503 before authentication and for
            logins too; any other status only for authenticated non-login requests).
        force_reason: reason phrase for ``force_status`` (default: PVE's/HTTP's phrase).
        force_count: ``None``: force every request; N: only the next N, then ``force_status`` clears.
        retry_after: ``Retry-After`` value sent with forced statuses: seconds (int) or a verbatim
            string such as an HTTP-date; ``None``: no header.
        reset: ``True``: reset every connection once its request arrived; N: the next N requests.
        hang: ``True``: never answer any request; N: the next N requests.
        swap_certificate: present a certificate not signed by the cluster CA.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = 0.0
        self.refuse_logins = False
        self.force_status: int | None = None
        self.force_reason: str | None = None
        self.force_count: int | None = None
        self.retry_after: int | str | None = None
        self.reset_connections: bool | int = False
        self.hang: bool | int = False
        self.swap_certificate = False

    # ``reset`` is also the name of the method that clears every fault; the attribute is
    # ``reset_connections`` and the key in ``update``/``to_dict`` is ``reset``.

    def reset(self) -> None:
        """Remove every fault of this set."""
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self.latency = 0.0
        self.refuse_logins = False
        self.force_status = None
        self.force_reason = None
        self.force_count = None
        self.retry_after = None
        self.reset_connections = False
        self.hang = False
        self.swap_certificate = False

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update such as ``{"latency": 0.5, "force_status": 500}`` or ``{"reset": 1}``.

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
        for flag in ("refuse_logins", "swap_certificate"):
            if not isinstance(values[flag], bool):
                raise TypeError(f"{flag} must be a boolean")
        status = values["force_status"]
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999):
            raise ValueError("force_status must be null or an HTTP status (100-999)")
        reason = values["force_reason"]
        if reason is not None and (not isinstance(reason, str) or "\n" in reason or "\r" in reason):
            raise ValueError("force_reason must be null or a single-line string")
        count = values["force_count"]
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError("force_count must be null or a count >= 1")
        retry_after = values["retry_after"]
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, int | str):
                raise TypeError("retry_after must be null, seconds (integer) or a string")
            if isinstance(retry_after, int) and retry_after < 0:
                raise ValueError("retry_after seconds must be >= 0")
            if isinstance(retry_after, str) and (not retry_after or "\n" in retry_after or "\r" in retry_after):
                raise ValueError("retry_after must be a non-empty single-line string")
        reset = _check_countdown("reset", values["reset"])
        hang = _check_countdown("hang", values["hang"])
        with self._lock:
            self.latency = float(latency)
            self.refuse_logins = values["refuse_logins"]
            self.force_status = status
            self.force_reason = reason
            self.force_count = count
            self.retry_after = retry_after
            self.reset_connections = reset
            self.hang = hang
            self.swap_certificate = values["swap_certificate"]

    def forced_reason(self) -> str:
        """The reason phrase to send with :attr:`force_status`."""
        status = self.force_status
        if self.force_reason:
            return self.force_reason
        if status is None:
            return ""
        return _standard_reason(status)

    # -- consumed by the listeners ----------------------------------------------------------------

    def _take_countdown(self, name: str) -> bool:
        with self._lock:
            value: bool | int = getattr(self, name)
            if value is True:
                return True
            if not value:
                return False
            remaining = value - 1
            setattr(self, name, remaining if remaining > 0 else False)
            return True

    def take_reset(self) -> bool:
        """Whether to reset this request's connection (uses up one of a countdown)."""
        return self._take_countdown("reset_connections")

    def take_hang(self) -> bool:
        """Whether to never answer this request (uses up one of a countdown)."""
        return self._take_countdown("hang")

    def take_forced(self, *, front: bool) -> tuple[int, str, int | str | None] | None:
        """The forced ``(status, reason, retry_after)`` for a request, counting it down.

        ``front``: the check made when the request arrives (only 429/503 apply there); otherwise the
        one after authentication (every other status).
        """
        with self._lock:
            status = self.force_status
            if status is None or (status in FRONT_STATUSES) != front:
                return None
            result = (status, self.force_reason or _standard_reason(status), self.retry_after)
            if self.force_count is not None:
                self.force_count -= 1
                if self.force_count <= 0:
                    self.force_status = None
                    self.force_reason = None
                    self.force_count = None
            return result

    def to_dict(self) -> dict[str, Any]:
        """The faults as JSON-serialisable data."""
        with self._lock:
            return {
                "latency": self.latency,
                "refuse_logins": self.refuse_logins,
                "force_status": self.force_status,
                "force_reason": self.force_reason,
                "force_count": self.force_count,
                "retry_after": self.retry_after,
                "reset": self.reset_connections,
                "hang": self.hang,
                "swap_certificate": self.swap_certificate,
            }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class NodeFaults(FaultSet):
    """Faults of one node only (``sim.node_faults(name)``).

    Attributes:
        node: the node's name.
    """

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node


class Faults(FaultSet):
    """The cluster-wide faults (``sim.faults``); they apply to every node.

    Args:
        cluster: the cluster whose nodes :meth:`set_node_online` changes and :meth:`node` knows.
    """

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self._cluster = cluster
        self._nodes = {node.name: NodeFaults(node.name) for node in cluster}

    def node(self, name: str) -> NodeFaults:
        """The faults of one node (``KeyError`` if unknown)."""
        return self._nodes[name]

    @property
    def nodes(self) -> dict[str, NodeFaults]:
        """Node name -> its faults."""
        return dict(self._nodes)

    def reset(self) -> None:
        """Remove every fault, the cluster-wide and every node's (node states are left alone)."""
        super().reset()
        for faults in self._nodes.values():
            faults.reset()

    def set_node_online(self, name: str, online: bool) -> None:
        """Take a node offline or bring it back (``KeyError`` if unknown)."""
        self._cluster.set_online(name, online)

    def effective(self, name: str) -> EffectiveFaults:
        """The combination that applies to requests on node ``name``."""
        return EffectiveFaults((self._nodes[name], self))


class EffectiveFaults:
    """Node faults combined with cluster-wide ones, as one listener applies them.

    Args:
        sets: the fault sets, most specific first.
    """

    def __init__(self, sets: Iterable[FaultSet]) -> None:
        self.sets = tuple(sets)

    @property
    def latency(self) -> float:
        """The sum of the injected latencies."""
        return sum(faults.latency for faults in self.sets)

    @property
    def refuse_logins(self) -> bool:
        """Whether logins are refused."""
        return any(faults.refuse_logins for faults in self.sets)

    @property
    def swap_certificate(self) -> bool:
        """Whether the node presents its swapped certificate."""
        return any(faults.swap_certificate for faults in self.sets)

    def take_reset(self) -> bool:
        """Whether to reset this request's connection."""
        return any(faults.take_reset() for faults in self.sets)

    def take_hang(self) -> bool:
        """Whether to never answer this request."""
        return any(faults.take_hang() for faults in self.sets)

    def take_forced(self, *, front: bool) -> tuple[int, str, int | str | None] | None:
        """The forced status for this request (see :meth:`FaultSet.take_forced`).

        The most specific set that forces a status decides, whether or not its status applies at
        this point of the request.
        """
        for faults in self.sets:
            if faults.force_status is not None:
                return faults.take_forced(front=front)
        return None
