"""The Supervisor without an API server: watch events in, workers and finalizer writes out (FakeKube), against the
PVE simulator over real HTTPS on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxmox_operator.controller.outcome import PAUSE_ANNOTATION
from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.supervisor import LAST_APPLIED, Supervisor, slim
from proxmox_operator.controller.worker import is_paused
from proxmox_operator.settings import Tuning
from pve_simulator import SimulatorServer
from tests.controller.conftest import KEY, SECRET, body
from tests.simulator.support import wait_for
from tests.support.fakekube import FakeKube

FINALIZER = "proxmox-operator.dev/finalizer"
OTHER = "example.com/keep-me"
TUNING = Tuning(probe_interval=60, backoff_base=60, backoff_max=60, first_probe_grace=30)
DELETED_AT = "2026-12-03T12:00:00Z"


def version(sim: SimulatorServer, rv: str, finalizers: list[str], *, deleting: bool = False) -> dict[str, Any]:
    """KEY's ProxmoxCluster at resourceVersion ``rv`` as the watch delivers it (managedFields included)."""
    obj = body(sim)
    obj |= {"apiVersion": "proxmox-operator.dev/v1alpha1", "kind": "ProxmoxCluster"}
    obj["metadata"] |= {
        "resourceVersion": rv,
        "uid": "0b7e0f6e-1c55-4d1e-9a53-000000000001",
        "finalizers": finalizers,
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = DELETED_AT
    return obj


@pytest.fixture
async def parts() -> AsyncIterator[tuple[FakeKube, Registry, Supervisor]]:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    supervisor = Supervisor(kube=kube, registry=registry, tuning=TUNING, finalizer=FINALIZER, retry_delays=(0.01,))
    yield kube, registry, supervisor
    await supervisor.close()
    await registry.close()


def test_the_kept_body_has_no_managed_fields_and_shares_the_rest() -> None:
    raw = {"metadata": {"name": "a", "managedFields": [{"manager": "x"}]}, "spec": {"endpoint": "e"}}
    kept = slim(raw)
    assert kept == {"metadata": {"name": "a"}, "spec": {"endpoint": "e"}}
    assert kept["spec"] is raw["spec"]
    assert "managedFields" in raw["metadata"]  # the watch event itself is left alone


def test_the_kept_body_has_no_last_applied_configuration_and_keeps_other_annotations() -> None:
    """``kubectl apply`` copies the whole manifest, CA bundle included, into an annotation nobody here reads; the
    pause annotation and any other stay."""
    annotations = {LAST_APPLIED: '{"spec": {"tls": {"caBundle": "..."}}}', PAUSE_ANNOTATION: "true", "team": "a"}
    raw = {"metadata": {"name": "a", "annotations": annotations}, "spec": {"endpoint": "e"}}
    kept = slim(raw)
    assert kept["metadata"]["annotations"] == {PAUSE_ANNOTATION: "true", "team": "a"}
    assert is_paused(kept["metadata"])
    assert LAST_APPLIED in raw["metadata"]["annotations"]  # the watch event itself is left alone
    plain = {"metadata": {"name": "a", "annotations": {"team": "a"}}}
    assert slim(plain) is plain, "nothing to drop: the watch body itself"


async def test_a_new_resource_gets_the_finalizer_beside_others_then_its_worker(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, _, supervisor = parts
    supervisor.observe(None, version(sim, "5", [OTHER]))
    await wait_for(lambda: bool(kube.finalizer_writes), "the finalizer")
    # Conditional on the finalizers it was computed from, and keeping the one someone else put there.
    assert kube.finalizer_writes == [(KEY.namespace, KEY.name, [OTHER], [OTHER, FINALIZER])]
    # The worker starts on the event that shows the finalizer (so its status write never races the finalizer's).
    assert not supervisor.running(KEY)
    assert kube.events == []
    supervisor.observe("MODIFIED", version(sim, "6", [OTHER, FINALIZER]))
    assert supervisor.running(KEY)
    await wait_for(lambda: bool(kube.events), "the registration")
    assert [e[1] for e in kube.events] == ["Registered"]
    assert len(kube.finalizer_writes) == 1


async def test_deletion_deregisters_first_then_removes_only_its_finalizer(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, registry, supervisor = parts
    supervisor.observe(None, version(sim, "5", [FINALIZER, OTHER]))
    await wait_for(lambda: bool(kube.events), "the registration")
    assert kube.finalizer_writes == []  # it had the finalizer already
    assert len(registry) == 1
    supervisor.observe("MODIFIED", version(sim, "9", [FINALIZER, OTHER], deleting=True))
    await wait_for(lambda: bool(kube.finalizer_writes), "the finalizer's removal")
    assert not supervisor.running(KEY)
    assert len(registry) == 0  # its client is gone: deregistered
    assert kube.finalizer_writes == [(KEY.namespace, KEY.name, [FINALIZER, OTHER], [OTHER])]
    assert kube.journal == ["event Registered", "event Deregistered", f"finalizers {[OTHER]}"]


async def test_a_write_that_lost_a_race_is_redone_from_the_newer_version(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, _, supervisor = parts
    kube.conflicts = 1
    supervisor.observe(None, version(sim, "5", []))
    await wait_for(lambda: len(kube.finalizer_writes) == 1, "the first attempt")
    await wait_for(lambda: not supervisor.writing_finalizer(KEY), "the first attempt's end")
    assert len(kube.finalizer_writes) == 1  # no blind retry: the newer version is on its way
    supervisor.observe("MODIFIED", version(sim, "7", [OTHER]))  # someone else's finalizer won the race
    await wait_for(lambda: len(kube.finalizer_writes) == 2, "the second attempt")
    assert kube.finalizer_writes[1] == (KEY.namespace, KEY.name, [OTHER], [OTHER, FINALIZER])
    assert not supervisor.running(KEY)
    supervisor.observe("MODIFIED", version(sim, "8", [OTHER, FINALIZER]))
    assert supervisor.running(KEY)


async def test_a_failing_api_server_is_retried_until_the_finalizer_is_written(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, _, supervisor = parts
    kube.unavailable = 2
    supervisor.observe(None, version(sim, "5", []))
    await wait_for(lambda: any(j.startswith("finalizers") for j in kube.journal), "the finalizer")
    assert [w[3] for w in kube.finalizer_writes] == [[FINALIZER]] * 3


async def test_a_resource_that_left_the_shard_keeps_its_finalizer(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, registry, supervisor = parts
    supervisor.observe(None, version(sim, "5", [FINALIZER]))
    await wait_for(lambda: bool(kube.events), "the registration")
    supervisor.observe("DELETED", version(sim, "6", [FINALIZER]))  # relabelled: no deletionTimestamp
    await wait_for(lambda: not supervisor.running(KEY), "the worker's exit")
    assert len(registry) == 0
    assert kube.finalizer_writes == []
    assert [e[1] for e in kube.events] == ["Registered"]


async def test_a_resource_deleted_while_the_operator_was_away_is_released_without_a_probe(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, _, supervisor = parts
    supervisor.observe(None, version(sim, "8", [FINALIZER], deleting=True))
    assert not supervisor.running(KEY)
    await wait_for(lambda: bool(kube.finalizer_writes), "the finalizer's removal")
    assert kube.finalizer_writes == [(KEY.namespace, KEY.name, [FINALIZER], [])]
    assert sim.counters.total == 0


async def test_a_spec_change_wakes_the_worker_and_its_own_status_write_does_not(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, _, supervisor = parts
    supervisor.observe(None, version(sim, "5", [FINALIZER]))
    await wait_for(lambda: bool(kube.patches), "the first status write")
    requests = sim.counters.total
    written = version(sim, "6", [FINALIZER])
    written["status"] = kube.status()
    supervisor.observe("MODIFIED", written)  # the operator's own write: no new round
    changed = version(sim, "7", [FINALIZER])
    changed["status"] = kube.status()
    changed["metadata"]["generation"] = 2
    changed["spec"]["timeouts"] = {"totalSeconds": 20}
    supervisor.observe("MODIFIED", changed)
    await wait_for(lambda: len(kube.patches) == 2, "the new generation's status")
    assert kube.patches[1][2]["observedGeneration"] == 2
    assert sim.counters.total > requests


async def test_close_stops_every_worker_and_writes_no_finalizer(
    sim: SimulatorServer, parts: tuple[FakeKube, Registry, Supervisor]
) -> None:
    kube, registry, supervisor = parts
    supervisor.observe(None, version(sim, "5", [FINALIZER]))
    await wait_for(lambda: bool(kube.events), "the registration")
    await supervisor.close()
    assert len(supervisor) == 0
    assert len(registry) == 0
    assert kube.finalizer_writes == []
    assert [e[1] for e in kube.events] == ["Registered"]
    supervisor.observe("MODIFIED", version(sim, "6", [FINALIZER]))  # a late event after close starts nothing
    assert len(supervisor) == 0
