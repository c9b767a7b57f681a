"""The registry's three parts: the wake-up bus's reference index, the duplicate index, deregistration."""

from __future__ import annotations

from proxmox_operator.controller.ports import Key
from proxmox_operator.controller.registry import Identities, Registry, WakeUps

A, B, C = Key("ns", "a"), Key("ns", "b"), Key("other", "c")
SECRET = ("Secret", "ns", "token")
CA = ("ConfigMap", "ns", "ca")


def test_a_reference_wakes_exactly_the_resources_that_name_it_now() -> None:
    bus = WakeUps()
    bus.note_seen(A, 1, False, [SECRET, CA])
    bus.note_seen(B, 1, False, [SECRET])
    bus.waker(A), bus.waker(B)
    assert sorted(bus.wake_referencing(*SECRET), key=str) == [A, B]
    assert bus.waker(A).is_set() and bus.waker(B).is_set()
    bus.note_seen(A, 2, False, [CA])  # A's spec no longer names the Secret
    assert bus.wake_referencing(*SECRET) == [B]
    assert bus.references(*CA)
    bus.forget(A)
    assert not bus.references(*CA)
    assert bus.wake_referencing(*CA) == []


def test_changed_compares_with_what_the_worker_last_saw() -> None:
    bus = WakeUps()
    assert not bus.changed(A, 1, False)  # never seen: the worker's first round reads it anyway
    bus.note_seen(A, 1, False, [])
    assert not bus.changed(A, 1, False)
    assert bus.changed(A, 2, False)
    assert bus.changed(A, 1, True)


def test_the_duplicate_index_names_the_earliest_and_forgets_a_moved_claim() -> None:
    index = Identities()
    assert index.claim("lab", A, "2026-01-01T00:00:00Z") is None
    assert index.claim("lab", B, "2026-01-02T00:00:00Z") == A
    assert index.claim("other", A, "2026-01-01T00:00:00Z") is None  # A now registers another cluster
    assert index.claim("lab", B, "2026-01-02T00:00:00Z") is None  # so B is first for "lab"
    assert index.release(A) == []
    assert index.claim("lab", C, "2026-01-03T00:00:00Z") == B


async def test_deregistering_the_first_registrant_wakes_the_next() -> None:
    registry = Registry()
    registry.note_seen(A, 1, False, [SECRET])
    registry.note_seen(B, 1, False, [SECRET])
    registry.identities.claim("lab", A, "2026-01-01T00:00:00Z")
    registry.identities.claim("lab", B, "2026-01-02T00:00:00Z")
    waker = registry.waker(B)
    registry.deregister(A)
    assert waker.is_set()
    assert registry.wake_referencing(*SECRET) == [B]
    assert registry.identities.claim("lab", B, "2026-01-02T00:00:00Z") is None
    await registry.close()
