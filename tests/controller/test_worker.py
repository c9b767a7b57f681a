"""The controller without an API server: reconcile_once and run_worker driven through FakeKube, against the PVE
simulator over real HTTPS on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.worker import reconcile_once, run_worker
from proxmox_operator.settings import Tuning
from pve_simulator import SimulatorServer
from tests.controller.conftest import KEY, SECRET, body
from tests.support.fakekube import FakeKube

# The first probe is never slow enough here to write an interim Probing status (tests/controller/test_first_probe.py).
TUNING = Tuning(probe_interval=60, backoff_base=60, backoff_max=60, first_probe_grace=30)


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def test_a_round_registers_and_a_quiet_round_writes_nothing(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    try:
        outcome, interval = await reconcile_once(KEY, body(sim), kube, registry, TUNING)
        assert (outcome.ready, interval) == (True, 60)
        assert len(kube.patches) == 1
        status = kube.status()
        assert ready(status)["reason"] == "Registered"
        assert [e[1] for e in kube.events] == ["Registered"]
        requests = sim.counters.total
        # Nothing changed: no status write, no Event, and one request (version, nodes, permissions are cached).
        await reconcile_once(KEY, body(sim, status), kube, registry, TUNING)
        assert len(kube.patches) == 1
        assert len(kube.events) == 1
        assert sim.counters.total - requests == 1
        assert sim.counters.count("/api2/json/cluster/status", "GET") >= 2
    finally:
        await registry.close()


async def test_a_round_before_kopf_saw_the_last_write_judges_against_that_write(sim: SimulatorServer) -> None:
    """Woken during its first round (e.g. by its Secret's listing), a worker starts the next one while kopf's copy
    still lacks the first write: it must not register the cluster a second time, whether kopf's copy is still the
    version the write went over or a newer one that left the status alone (kopf's own finalizer)."""
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    unwritten = body(sim)
    unwritten["metadata"]["resourceVersion"] = "7"
    finalized = body(sim)
    finalized["metadata"] |= {"resourceVersion": "8", "finalizers": ["proxmox-operator.dev/finalizer"]}
    try:
        await reconcile_once(KEY, unwritten, kube, registry, TUNING)
        await reconcile_once(KEY, unwritten, kube, registry, TUNING)  # kopf has not seen the write yet
        registry.own_writes.observe(KEY, finalized)  # the finalizer's watch event
        await reconcile_once(KEY, finalized, kube, registry, TUNING)
        assert len(kube.patches) == 1
        assert [e[1] for e in kube.events] == ["Registered"]
        # kopf shows the write; a later version is taken as it is, even one whose status someone emptied.
        written = body(sim, kube.status())
        written["metadata"]["resourceVersion"] = "9"
        registry.own_writes.observe(KEY, written)
        emptied = body(sim)
        emptied["metadata"]["resourceVersion"] = "10"
        await reconcile_once(KEY, emptied, kube, registry, TUNING)
        assert len(kube.patches) == 2
    finally:
        await registry.close()


async def test_an_unlabelled_secret_sends_nothing(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET}, labelled=False)
    outcome, _ = await reconcile_once(KEY, body(sim), kube, registry, TUNING)
    assert outcome.reason == "SecretNotLabeled"
    assert sim.counters.total == 0
    assert SECRET not in str(kube.patches) + str(kube.events)


async def test_a_visible_change_is_written_at_once(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    try:
        await reconcile_once(KEY, body(sim), kube, registry, TUNING)
        sim.set_node_online("pve2", False)
        await reconcile_once(KEY, body(sim, kube.status()), kube, registry, TUNING)
        assert len(kube.patches) == 2
        assert kube.status()["nodes"]["summary"] == "1/2"
    finally:
        await registry.close()


async def test_the_worker_probes_wakes_and_deregisters_on_stop(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    current = body(sim)
    stopping = asyncio.Event()

    def snapshot() -> dict[str, Any]:
        return {**current, "status": kube.status()}

    task = asyncio.create_task(
        run_worker(KEY, snapshot, kube=kube, registry=registry, tuning=TUNING, stopping=stopping)
    )
    try:
        async with asyncio.timeout(30):
            while not kube.patches:  # noqa: ASYNC110 (polling what the worker wrote)
                await asyncio.sleep(0.05)
            probes = sim.counters.count("/api2/json/cluster/status", "GET")
            # The interval is 60 s: only a wake-up (a Secret or spec change) brings the next probe now.
            registry.wake(KEY)
            while sim.counters.count("/api2/json/cluster/status", "GET") == probes:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert len(registry) == 1
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=10)
    assert len(registry) == 0, "stopping deregisters: the client is forgotten at once"
    await registry.close()  # its pools close in the background; this waits for them


async def test_a_worker_whose_next_round_is_far_away_keeps_no_idle_connection(sim: SimulatorServer) -> None:
    """A keep-alive connection lives 4 s (pveproxy closes it after 5 s); kept after a round that is followed by a
    60 s sleep, it would only hold memory until it expires: at registration, one per cluster at once."""
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    stopping = asyncio.Event()
    task = asyncio.create_task(
        run_worker(KEY, lambda: body(sim), kube=kube, registry=registry, tuning=TUNING, stopping=stopping)
    )
    try:
        async with asyncio.timeout(30):
            while not kube.patches:  # noqa: ASYNC110 (polling what the worker wrote)
                await asyncio.sleep(0.05)
        client = registry.clients._connections[KEY].client
        pools = [endpoint.pool for endpoint in client._endpoints.values()]
        assert pools, "the round did connect"
        assert [conn for pool in pools for conn in pool._idle] == []
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=10)
        await registry.close()


async def test_the_worker_stops_when_the_object_is_gone(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    kube.gone.add((KEY.namespace, KEY.name))
    await asyncio.wait_for(
        run_worker(KEY, lambda: body(sim), kube=kube, registry=registry, tuning=TUNING, stopping=asyncio.Event()),
        timeout=30,
    )
    assert len(registry) == 0
    await registry.close()


async def test_a_resource_being_deleted_is_not_probed_again(sim: SimulatorServer) -> None:
    """Deletion bumps a custom resource's generation; the worker must not answer with a probe and a status write
    while kopf waits for it to stop before removing the finalizer."""
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    deleting = body(sim, generation=2)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-02T12:00:00Z"
    before = sim.counters.total
    await asyncio.wait_for(
        run_worker(KEY, lambda: deleting, kube=kube, registry=registry, tuning=TUNING, stopping=asyncio.Event()),
        timeout=30,
    )
    assert kube.patches == [] and kube.events == []
    assert len(registry) == 0
    assert sim.counters.total == before, "nothing was sent to Proxmox"
    await registry.close()


async def _silent_server(accepted: asyncio.Event) -> asyncio.Server:
    """A TCP listener on loopback that accepts and then says nothing: a TLS handshake with it never completes."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until the client goes away
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0)


async def test_stopping_abandons_a_round_in_flight_and_the_worker_ends_normally(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    accepted = asyncio.Event()
    server = await _silent_server(accepted)
    port = server.sockets[0].getsockname()[1]
    hanging = body(sim)
    # The handshake would wait 60 s for the silent node; stopping must not.
    hanging["spec"] |= {
        "endpoint": f"https://127.0.0.1:{port}",
        "timeouts": {"connectSeconds": 60, "totalSeconds": 600},
    }
    stopping = asyncio.Event()
    task = asyncio.create_task(
        run_worker(KEY, lambda: hanging, kube=kube, registry=registry, tuning=TUNING, stopping=stopping)
    )
    try:
        await asyncio.wait_for(accepted.wait(), timeout=30)
        stopping.set()
        await asyncio.wait_for(asyncio.shield(task), timeout=30)
        assert not task.cancelled(), "the worker's own stop ends it normally"
        assert len(registry) == 0
        assert kube.patches == [], "the abandoned round wrote nothing"
    finally:
        task.cancel()
        server.close()
        await registry.close()


async def test_a_cancellation_from_outside_is_not_taken_for_a_stop(sim: SimulatorServer) -> None:
    kube, registry = FakeKube(), Registry()
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    task = asyncio.create_task(
        run_worker(KEY, lambda: body(sim), kube=kube, registry=registry, tuning=TUNING, stopping=asyncio.Event())
    )
    try:
        async with asyncio.timeout(30):
            while not kube.patches:  # noqa: ASYNC110 (polling what the worker wrote)
                await asyncio.sleep(0.05)
        task.cancel()  # while it sleeps until the next probe
        await asyncio.wait({task}, timeout=30)
        assert task.cancelled()
        assert len(registry) == 0, "a cancelled worker deregisters too"
    finally:
        await registry.close()
