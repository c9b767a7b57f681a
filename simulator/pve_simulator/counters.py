"""Request counters, so tests can assert what reached the simulated cluster - by counting, not timing.

Typical assertions: "no login was received" (``counters.login_attempts == 0``), "the nodes were read
once" (``counters.count("/api2/json/nodes") == 1``), "never more than 2 requests at once"
(``counters.max_in_flight <= 2``), "at most 5 requests in any second"
(``counters.max_requests_in_any_window(1.0) <= 5``).  Counters never record credentials: only method,
path (without query string), status, arrival time and the outcome of logins.

There is one :class:`RequestCounters` for the whole cluster (``sim.counters``, every listener) and one
per node listener (``sim.node_counters(name)``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

__all__ = ["MAX_ARRIVALS", "RequestCounters", "max_in_window"]

#: Arrival timestamps kept per counter set (the oldest are dropped beyond this).
MAX_ARRIVALS = 100_000


def max_in_window(timestamps: list[float], seconds: float) -> int:
    """The largest number of ``timestamps`` inside any half-open window ``[t, t + seconds)``."""
    if seconds <= 0:
        raise ValueError("the window must be longer than 0 seconds")
    ordered = sorted(timestamps)
    best = 0
    start = 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


class RequestCounters:
    """Thread-safe counters of the requests one listener (or the whole simulator) received.

    Attributes (read them directly or via :meth:`snapshot`):
        total: every request on the API listener(s).
        by_path: ``"METHOD /path"`` -> count.
        by_status: HTTP status -> count (requests that were reset or never answered have none).
        by_virtual_cluster: virtual cluster ``k`` -> requests routed to it (``/vc/<k>/...``; empty
            without virtual clusters).
        login_attempts: every ``POST /api2/json/access/ticket``.
        login_successes / login_failures: logins answered 200 / 401.
        auth_failures: requests rejected by authentication (bad/missing ticket or token, CSRF).
        resets: connections reset by the ``reset`` fault.
        hangs: requests left unanswered by the ``hang`` fault.
        in_flight: requests being handled right now (from arrival until the response is ready,
            injected latency and authentication delays included).
        max_in_flight: the largest :attr:`in_flight` seen since the last :meth:`reset`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_virtual_cluster: Counter[int] = Counter()
        self.login_attempts = 0
        self.login_successes = 0
        self.login_failures = 0
        self.auth_failures = 0
        self.resets = 0
        self.hangs = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._arrivals: deque[tuple[float, str, int | None]] = deque(maxlen=MAX_ARRIVALS)

    def request(self, method: str, path: str, virtual_cluster: int | None = None) -> None:
        """Record an incoming request (and its arrival time, ``time.monotonic()``); ``path`` is the one pveproxy
        sees (a virtual cluster's ``/vc/<k>`` prefix removed, ``k`` given as ``virtual_cluster``)."""
        now = time.monotonic()
        key = f"{method} {path}"
        with self._lock:
            self.total += 1
            self.by_path[key] += 1
            if virtual_cluster is not None:
                self.by_virtual_cluster[virtual_cluster] += 1
            self._arrivals.append((now, key, virtual_cluster))

    def enter(self) -> None:
        """A request starts being handled."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """A request is done (answered, reset or abandoned)."""
        with self._lock:
            self.in_flight -= 1

    def response(self, status: int) -> None:
        """Record an outgoing status."""
        with self._lock:
            self.by_status[status] += 1

    def login(self, outcome: int | None = None) -> None:
        """Record a login attempt (``outcome=None``) or its result status."""
        with self._lock:
            if outcome is None:
                self.login_attempts += 1
            elif outcome == 200:
                self.login_successes += 1
            elif outcome == 401:
                self.login_failures += 1

    def auth_failure(self) -> None:
        """Record a request rejected by authentication."""
        with self._lock:
            self.auth_failures += 1

    def reset_connection(self) -> None:
        """Record a connection reset by fault injection."""
        with self._lock:
            self.resets += 1

    def hang(self) -> None:
        """Record a request that is never answered."""
        with self._lock:
            self.hangs += 1

    def count(self, path: str, method: str | None = None) -> int:
        """Requests for ``path`` (e.g. ``/api2/json/nodes``), for one method or all methods."""
        with self._lock:
            if method is not None:
                return self.by_path[f"{method.upper()} {path}"]
            return sum(n for key, n in self.by_path.items() if key.split(" ", 1)[1] == path)

    def arrivals(self, path: str | None = None, method: str | None = None) -> list[float]:
        """Arrival times (``time.monotonic()``) of the requests, optionally for one path/method."""
        with self._lock:
            entries = list(self._arrivals)
        result = []
        for stamp, key, _ in entries:
            entry_method, entry_path = key.split(" ", 1)
            if path is not None and entry_path != path:
                continue
            if method is not None and entry_method != method.upper():
                continue
            result.append(stamp)
        return result

    def virtual_cluster_arrivals(self, since: float | None = None) -> dict[int, list[float]]:
        """Virtual cluster ``k`` -> arrival times (``time.monotonic()``, from ``since`` on) of its requests."""
        with self._lock:
            entries = list(self._arrivals)
        result: dict[int, list[float]] = {}
        for stamp, _, virtual in entries:
            if virtual is not None and (since is None or stamp >= since):
                result.setdefault(virtual, []).append(stamp)
        return result

    def max_requests_in_any_window(self, seconds: float, path: str | None = None, method: str | None = None) -> int:
        """The most requests that arrived within any ``seconds`` long window (``[t, t + seconds)``).

        ``max_requests_in_any_window(1.0) <= 5`` asserts a client kept to 5 requests per second
        without the test measuring time itself.
        """
        return max_in_window(self.arrivals(path, method), seconds)

    def reset(self) -> None:
        """Zero every counter (requests still in flight stay counted in :attr:`in_flight`)."""
        with self._lock:
            self.total = 0
            self.by_path.clear()
            self.by_status.clear()
            self.by_virtual_cluster.clear()
            self.login_attempts = self.login_successes = self.login_failures = 0
            self.auth_failures = 0
            self.resets = self.hangs = 0
            self.max_in_flight = self.in_flight
            self._arrivals.clear()

    def snapshot(self) -> dict[str, Any]:
        """All counters as JSON-serialisable data (arrival times excluded)."""
        with self._lock:
            return {
                "total": self.total,
                "by_path": dict(self.by_path),
                "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
                "by_virtual_cluster": {str(k): n for k, n in sorted(self.by_virtual_cluster.items())},
                "login_attempts": self.login_attempts,
                "login_successes": self.login_successes,
                "login_failures": self.login_failures,
                "auth_failures": self.auth_failures,
                "resets": self.resets,
                "hangs": self.hangs,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }
