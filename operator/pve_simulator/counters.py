"""Request counters, so tests can assert what reached the simulated cluster.

Typical assertions: "no login was received" (``counters.login_attempts == 0``), "the nodes were read
once" (``counters.count("/api2/json/nodes") == 1``).  Counters never record credentials: only method,
path (without query string), status and the outcome of logins.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

__all__ = ["RequestCounters"]


class RequestCounters:
    """Thread-safe counters of the requests one simulator received.

    Attributes (read them directly or via :meth:`snapshot`):
        total: every request on the API listener.
        by_path: ``"METHOD /path"`` -> count.
        by_status: HTTP status -> count.
        login_attempts: every ``POST /api2/json/access/ticket``.
        login_successes / login_failures: logins answered 200 / 401.
        auth_failures: requests rejected by authentication (bad/missing ticket or token, CSRF).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.login_attempts = 0
        self.login_successes = 0
        self.login_failures = 0
        self.auth_failures = 0

    def request(self, method: str, path: str) -> None:
        """Record an incoming request."""
        with self._lock:
            self.total += 1
            self.by_path[f"{method} {path}"] += 1

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

    def count(self, path: str, method: str | None = None) -> int:
        """Requests for ``path`` (e.g. ``/api2/json/nodes``), for one method or all methods."""
        with self._lock:
            if method is not None:
                return self.by_path[f"{method.upper()} {path}"]
            return sum(n for key, n in self.by_path.items() if key.split(" ", 1)[1] == path)

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.total = 0
            self.by_path.clear()
            self.by_status.clear()
            self.login_attempts = self.login_successes = self.login_failures = 0
            self.auth_failures = 0

    def snapshot(self) -> dict[str, Any]:
        """All counters as JSON-serialisable data."""
        with self._lock:
            return {
                "total": self.total,
                "by_path": dict(self.by_path),
                "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
                "login_attempts": self.login_attempts,
                "login_successes": self.login_successes,
                "login_failures": self.login_failures,
                "auth_failures": self.auth_failures,
            }
