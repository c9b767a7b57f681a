"""Clocks: every time-dependent behaviour of the simulator reads one of these.

Proxmox VE compares ticket and CSRF-token timestamps with ``time()`` on the answering node
(pve-common ``src/PVE/Ticket.pm``, ``verify_rsa_ticket``), ages its auth key by file mtime
(pve-access-control ``src/PVE/AccessControl.pm``, ``check_authkey``) and reports node uptime
(pve-manager ``PVE/API2Tools.pm``, ``extract_node_stats``).  The simulator reads all of these from a
:class:`Clock`, so tests can move time forward (ticket expiry, key rotation) without sleeping.

Delays that PVE implements as real waiting (the 3 s penalty on failed authentication, injected
latency) always use real time, never this clock.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Source of wall-clock time in seconds since the epoch."""

    def time(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock (``time.time()``)."""

    def time(self) -> float:
        """Return ``time.time()``."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that only moves when told to; safe to drive from another thread.

    Args:
        start: initial time (seconds since the epoch); defaults to the current real time.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = time.time() if start is None else float(start)

    def time(self) -> float:
        """Return the clock's current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); return the new time."""
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time."""
        with self._lock:
            self._now = float(when)

    def __repr__(self) -> str:
        return f"ManualClock({self.time():.3f})"
