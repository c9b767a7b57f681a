"""Leader election over a Lease, against an in-memory Lease API with client-go's optimistic concurrency and a fake
clock: who leads, when a standby may take over, and when a leader must give up."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from proxmox_operator.leader import Elector
from proxmox_operator.settings import Election

TIMING = Election(lease_duration=10.0, renew_deadline=7.0, retry_period=2.0)


class FakeLeases:
    """One namespace's Leases: resourceVersion-checked PUTs (409 as None), like the API server."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.failing = False  # every request fails, like an unreachable API server

    def _check(self) -> None:
        if self.failing:
            raise ConnectionError("API server unreachable")

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.objects.get(name))

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        name = body["metadata"]["name"]
        if name in self.objects:
            return None
        return self._store(name, body)

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        current = self.objects.get(name)
        if current is None or body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return None
        return self._store(name, body)

    def _store(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[name] = stored
        return copy.deepcopy(stored)

    def spec(self) -> dict[str, Any]:
        return dict(self.objects["lease"]["spec"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def leases() -> FakeLeases:
    return FakeLeases()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def elector(leases: FakeLeases, clock: Clock, identity: str) -> Elector:
    return Elector(leases, "ns", "lease", identity, TIMING, clock=clock, now=clock.wall, sleep=clock.sleep)


async def test_the_first_replica_creates_the_lease_and_leads(leases: FakeLeases, clock: Clock) -> None:
    a = elector(leases, clock, "a")
    assert await a.try_acquire_or_renew()
    assert a.role == "active"
    spec = leases.spec()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 10
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]


async def test_a_standby_does_not_take_a_lease_renewed_within_its_duration(leases: FakeLeases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    for _ in range(20):  # 40 s of renewals every 2 s: b never leads
        assert not await b.try_acquire_or_renew()
        assert b.role == "standby" and b.holder == "a"
        clock.now += 2.0
        assert await a.try_acquire_or_renew()
    assert leases.spec()["holderIdentity"] == "a"


async def test_a_standby_takes_over_once_the_lease_went_unrenewed_for_its_duration(
    leases: FakeLeases, clock: Clock
) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b first sees a's record now
    clock.now += 9.9
    assert not await b.try_acquire_or_renew()
    clock.now += 0.2
    assert await b.try_acquire_or_renew()
    spec = leases.spec()
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1


async def test_the_wait_runs_on_the_standbys_clock_not_the_remote_renew_time(leases: FakeLeases, clock: Clock) -> None:
    """A renewTime far in the past (a skewed clock) does not let a standby take a lease it only just saw."""
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    leases.objects["lease"]["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"
    assert not await b.try_acquire_or_renew()


async def test_of_two_racing_standbys_exactly_one_wins(leases: FakeLeases, clock: Clock) -> None:
    a, b, c = elector(leases, clock, "a"), elector(leases, clock, "b"), elector(leases, clock, "c")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert not await c.try_acquire_or_renew()
    clock.now += 11
    won = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted(won) == [False, True]
    assert leases.spec()["holderIdentity"] in ("b", "c")


async def test_a_released_lease_is_taken_at_once(leases: FakeLeases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert a.role == "standby"
    assert leases.spec()["holderIdentity"] is None
    assert await b.try_acquire_or_renew()


async def test_the_leader_keeps_its_acquire_time_and_transitions_when_renewing(
    leases: FakeLeases, clock: Clock
) -> None:
    a = elector(leases, clock, "a")
    assert await a.try_acquire_or_renew()
    first = leases.spec()
    clock.now += 2
    assert await a.try_acquire_or_renew()
    again = leases.spec()
    assert again["acquireTime"] == first["acquireTime"]
    assert again["renewTime"] > first["renewTime"]
    assert again["leaseTransitions"] == 0


async def test_a_leader_that_cannot_renew_gives_up_at_the_renew_deadline_before_anyone_may_take_over(
    leases: FakeLeases, clock: Clock
) -> None:
    a = elector(leases, clock, "a")
    assert await a.try_acquire_or_renew()
    acquired = clock.now
    leases.failing = True
    why = await a.hold()
    assert "no renewal succeeded for 7 s" in why
    assert a.role == "standby"
    assert clock.now - acquired == pytest.approx(TIMING.renew_deadline)
    assert clock.now - acquired < TIMING.lease_duration


async def test_a_leader_whose_lease_was_taken_gives_up_at_its_next_renewal(leases: FakeLeases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    leases.objects["lease"]["spec"]["holderIdentity"] = "b"  # e.g. an administrator handed it over
    leases.objects["lease"]["metadata"]["resourceVersion"] = "99"
    assert "held by b" in await a.hold()
    assert b.role == "standby"


async def test_hold_renews_every_retry_period_while_the_api_answers(leases: FakeLeases, clock: Clock) -> None:
    a = elector(leases, clock, "a")
    assert await a.try_acquire_or_renew()
    holding = asyncio.create_task(a.hold())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not holding.done()
    assert leases.version > 10  # renewed again and again
    holding.cancel()


async def test_acquire_waits_as_a_standby_until_stopped(leases: FakeLeases, clock: Clock) -> None:
    a, b = elector(leases, clock, "a"), elector(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    stop = asyncio.Event()
    waiting = asyncio.create_task(b.acquire(stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stop.set()
    assert await waiting is False
