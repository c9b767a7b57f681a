"""The first probe of a generation in kstatus' view: while it takes longer than Tuning.first_probe_grace, the
status says Ready=Unknown and Reconciling=True (Probing), so Flux does not take an object without status for
Current. A fast probe costs no extra write. Driven through FakeKube with a probe held at its Secret read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from proxmox_operator.controller.ports import ObjectGone
from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.worker import reconcile_once
from proxmox_operator.secretstore import Secret
from proxmox_operator.settings import Tuning
from pve_simulator import SimulatorServer
from tests.controller.conftest import KEY, SECRET, body
from tests.controller.test_worker import ready
from tests.support.fakekube import FakeKube

SLOW = Tuning(probe_interval=60, backoff_base=60, backoff_max=60, first_probe_grace=0.01)
#: A grace no probe of these tests outlasts.
FAST = Tuning(probe_interval=60, backoff_base=60, backoff_max=60, first_probe_grace=30)


@dataclass
class HeldKube(FakeKube):
    """FakeKube whose Secret reads wait for ``release``: a probe that takes as long as the test wants."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: bool = False

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.abandoned = True
            raise
        return await super().read_secret(namespace, name)


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    registry = Registry()
    yield registry
    await registry.close()


_K = TypeVar("_K", bound=FakeKube)


def kube_with_token(kube: _K) -> _K:
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    return kube


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


async def first_write(kube: FakeKube) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while not kube.patches:  # noqa: ASYNC110 (polling what the worker wrote)
            await asyncio.sleep(0.01)
    return kube.patches[0][2]


async def test_a_slow_first_probe_shows_probing_then_its_result(sim: SimulatorServer, registry: Registry) -> None:
    kube = kube_with_token(HeldKube())
    round_ = asyncio.create_task(reconcile_once(KEY, body(sim), kube, registry, SLOW))
    interim = conds(await first_write(kube))
    assert (interim["Ready"]["status"], interim["Ready"]["reason"]) == ("Unknown", "Probing")
    assert (interim["Reconciling"]["status"], interim["Reconciling"]["reason"]) == ("True", "Probing")
    assert interim["Ready"]["observedGeneration"] == kube.patches[0][2]["observedGeneration"] == 1
    assert kube.events == [], "Probing is no transition worth an Event"

    kube.release.set()
    outcome, _ = await asyncio.wait_for(round_, timeout=30)
    assert outcome.ready
    assert len(kube.patches) == 2
    final = kube.status()
    assert ready(final)["reason"] == "Registered"
    assert "Reconciling" not in conds(final)
    assert [e[1] for e in kube.events] == ["Registered"], "the Event compares with the status before the round"


async def test_a_round_while_kopf_shows_the_interim_status_judges_against_the_result(
    sim: SimulatorServer, registry: Registry
) -> None:
    """kopf's copy may show the interim Probing status when the next round starts: that status was replaced by
    the round's result, so the cluster is not registered a second time."""
    kube = kube_with_token(HeldKube())
    round_ = asyncio.create_task(reconcile_once(KEY, body(sim), kube, registry, SLOW))
    interim = await first_write(kube)
    registry.own_writes.observe(KEY, body(sim, interim))  # the interim write's watch event
    kube.release.set()
    await asyncio.wait_for(round_, timeout=30)
    await reconcile_once(KEY, body(sim, interim), kube, registry, SLOW)  # kopf has not seen the result yet
    assert len(kube.patches) == 2
    assert [e[1] for e in kube.events] == ["Registered"]


async def test_a_slow_probe_of_a_new_spec_shows_probing_for_the_new_generation(
    sim: SimulatorServer, registry: Registry
) -> None:
    kube = kube_with_token(FakeKube())
    await reconcile_once(KEY, body(sim), kube, registry, FAST)
    registered = kube.status()
    held = kube_with_token(HeldKube())
    round_ = asyncio.create_task(reconcile_once(KEY, body(sim, registered, generation=2), held, registry, SLOW))
    interim = await first_write(held)
    assert interim["observedGeneration"] == 2
    assert (conds(interim)["Ready"]["status"], conds(interim)["Ready"]["reason"]) == ("Unknown", "Probing")
    held.release.set()
    outcome, _ = await asyncio.wait_for(round_, timeout=30)
    assert outcome.ready and ready(held.status())["observedGeneration"] == 2
    assert held.events == [], "Ready was True before and after: no Event"


async def test_a_probe_of_an_observed_generation_never_shows_probing(sim: SimulatorServer, registry: Registry) -> None:
    """The operator's restart, a wake-up, the next interval: the status already describes this spec."""
    kube = kube_with_token(FakeKube())
    await reconcile_once(KEY, body(sim), kube, registry, FAST)
    sim.set_node_online("pve2", False)  # something for the round to write
    no_grace = Tuning(probe_interval=60, backoff_base=60, backoff_max=60, first_probe_grace=0)
    await reconcile_once(KEY, body(sim, kube.status()), kube, registry, no_grace)
    assert len(kube.patches) == 2
    assert all(conds(patch)["Ready"]["reason"] != "Probing" for _, _, patch in kube.patches)


async def test_a_fast_first_probe_writes_the_status_once(sim: SimulatorServer, registry: Registry) -> None:
    """One status write per registration: the API request budget."""
    kube = kube_with_token(FakeKube())
    outcome, _ = await reconcile_once(KEY, body(sim), kube, registry, FAST)
    assert outcome.ready
    assert len(kube.patches) == 1
    assert ready(kube.status())["reason"] == "Registered"


async def test_an_object_deleted_during_a_slow_first_probe_abandons_the_probe(
    sim: SimulatorServer, registry: Registry
) -> None:
    kube = kube_with_token(HeldKube())
    kube.gone.add((KEY.namespace, KEY.name))
    with pytest.raises(ObjectGone):
        await asyncio.wait_for(reconcile_once(KEY, body(sim), kube, registry, SLOW), timeout=30)
    assert kube.abandoned, "the probe held at its Secret read was cancelled, not left running"
    assert sim.counters.total == 0
