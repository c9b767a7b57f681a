"""Leader election over a coordination.k8s.io/v1 Lease, with client-go's semantics, so that of two or more
replicas exactly one runs the operator.

The Lease records ``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``, ``renewTime`` and
``leaseTransitions``. Every write is a PUT (or the first CREATE) carrying the ``resourceVersion`` just read, so
when two replicas race for the same Lease the API server lets exactly one write win (409 Conflict for the other).

* A standby reads the Lease every ``retry_period``. It takes the Lease when nobody holds it (released, or never
  created), or when the holder's record has not changed for ``lease_duration`` seconds *of the standby's own
  clock*: the remote ``renewTime`` is only compared for change, never with the local time, so clock skew
  between nodes cannot shorten the wait.
* The leader renews every ``retry_period``. If no renewal succeeded for ``renew_deadline`` seconds (measured from
  before the last successful request was sent), or the Lease names another holder, :meth:`Elector.hold` returns
  and the caller stops the process at once; ``renew_deadline < lease_duration`` makes it stop before a standby
  may take over.
* A leader that stops cleanly releases the Lease (empty holder), so a standby takes over within one retry period.

Timings come from :class:`proxmox_operator.settings.Election`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from proxmox_operator.settings import Election

log = logging.getLogger(__name__)


class Leases(Protocol):
    """The Lease API: ``kube.KubeClient`` in production, an in-memory fake in the unit tests. ``create`` and
    ``replace`` return the stored object, or None when another writer won (409 Conflict)."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None: ...

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None: ...


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """One replica's view of the Lease ``namespace/name``. ``clock`` (monotonic), ``now`` (wall time, written to
    the Lease) and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        leases: Leases,
        namespace: str,
        name: str,
        identity: str,
        timing: Election | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.leases, self.namespace, self.name, self.identity = leases, namespace, name, identity
        self.timing = timing or Election()
        self._clock, self._now, self._sleep = clock, now, sleep
        #: The holder as last read ("" when released or unknown).
        self.holder = ""
        self.leading = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    @property
    def role(self) -> str:
        return "active" if self.leading else "standby"

    async def try_acquire_or_renew(self) -> bool:
        """One attempt, client-go's tryAcquireOrRenew: True when this replica holds the Lease afterwards."""
        started = self._clock()
        moment = micro_time(self._now())
        lease = await self.leases.get_lease(self.namespace, self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquire=moment, renew=moment, transitions=0),
            }
            return self._won(await self.leases.create_lease(self.namespace, body), started)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("acquireTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        self.holder = holder
        mine = holder == self.identity
        if holder and not mine and self._clock() < self._observed_at + self.timing.lease_duration:
            self.leading = False
            return False  # held, and renewed within the lease duration
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = self._spec(
            acquire=str(spec.get("acquireTime") or moment) if mine else moment,
            renew=moment,
            transitions=transitions if mine else transitions + 1,
        )
        body = {**lease, "spec": new_spec}  # metadata.resourceVersion makes the PUT conditional
        return self._won(await self.leases.replace_lease(self.namespace, self.name, body), started)

    def _spec(self, *, acquire: str, renew: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.timing.lease_duration)),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    def _won(self, stored: dict[str, Any] | None, started: float) -> bool:
        if stored is None:  # another replica's write won the race
            self.leading = False
            return False
        if not self.leading:
            log.info("leader election: %s now holds Lease %s/%s", self.identity, self.namespace, self.name)
        self.leading, self.holder, self._renewed_at = True, self.identity, started
        spec = stored.get("spec") or {}
        self._observed = (
            self.identity,
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("acquireTime"),
        )
        self._observed_at = self._clock()
        return True

    async def _attempt(self, limit: float) -> bool:
        """One attempt bounded by ``limit`` seconds; an API failure or a timeout counts as not held."""
        try:
            async with asyncio.timeout(max(limit, 0.001)):
                return await self.try_acquire_or_renew()
        except Exception as exc:  # noqa: BLE001 - any failure is a failed attempt; the deadline decides
            log.warning("leader election: Lease %s/%s: %s", self.namespace, self.name, exc or type(exc).__name__)
            return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait as a standby until this replica holds the Lease (True), or ``stop`` is set (False)."""
        announced = ""
        while not stop.is_set():
            if await self._attempt(self.timing.retry_period):
                return True
            if self.holder and self.holder != announced:
                log.info("leader election: standby; Lease %s/%s is held by %s", self.namespace, self.name, self.holder)
                announced = self.holder
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timing.retry_period):
                    await stop.wait()
        return False

    async def hold(self) -> str:
        """Renew every ``retry_period`` while leading; return why leadership was lost. A failing renewal is retried
        until the renew deadline, and the loss is reported at that deadline, not a retry period later."""
        while True:
            await self._sleep(min(self.timing.retry_period, max(0.0, self._deadline_left())))
            left = self._deadline_left()
            if left <= 0:
                self.leading = False
                return f"no renewal succeeded for {self.timing.renew_deadline:g} s"
            if await self._attempt(left):
                continue
            if self.holder and self.holder != self.identity:
                self.leading = False
                return f"the Lease is held by {self.holder}"

    def _deadline_left(self) -> float:
        return self._renewed_at + self.timing.renew_deadline - self._clock()

    async def release(self) -> None:
        """Give the Lease up (empty holder) if this replica holds it, so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            async with asyncio.timeout(self.timing.retry_period):
                lease = await self.leases.get_lease(self.namespace, self.name)
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                    return
                moment = micro_time(self._now())
                spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": moment}
                if await self.leases.replace_lease(self.namespace, self.name, {**lease, "spec": spec}) is not None:
                    log.info("leader election: %s released Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as exc:  # noqa: BLE001 - the Lease then expires on its own
            log.warning("leader election: releasing Lease %s/%s failed: %s", self.namespace, self.name, exc)
