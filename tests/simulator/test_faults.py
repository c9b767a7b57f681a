"""Fault injection (in-process and over the control listener) and request counters."""

from __future__ import annotations

import time

import httpx
import pytest

from pve_simulator import SimulatorServer
from tests.simulator.support import FULL_SECRET, ROOT_PASSWORD, StartSim, client_for, login, token_header

ROOT_TOKEN = token_header("root@pam!full", FULL_SECRET)


async def test_latency_is_added_to_every_request(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    sim.faults.latency = 0.25
    started = time.monotonic()
    response = await client.get("/version", headers=ROOT_TOKEN)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.25


async def test_refused_logins_fail_like_wrong_passwords(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    sim.faults.update({"refuse_logins": True})
    response = await client.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD})
    assert (response.status_code, response.reason_phrase) == (401, "authentication failure")
    sim.faults.reset()
    await login(client)
    assert sim.counters.login_attempts == 2
    assert (sim.counters.login_failures, sim.counters.login_successes) == (1, 1)


@pytest.mark.parametrize(("status", "reason"), [(595, "No route to host"), (596, "Connection timed out")])
async def test_forced_proxy_errors_have_an_empty_body(
    sim: SimulatorServer, client: httpx.AsyncClient, status: int, reason: str
) -> None:
    sim.faults.update({"force_status": status})
    response = await client.get("/nodes", headers=ROOT_TOKEN)
    assert (response.status_code, response.reason_phrase) == (status, reason)
    assert response.content == b""
    # logins are not affected, authentication still is checked first
    await login(client)
    assert (await client.get("/nodes")).status_code == 401


async def test_forced_500_is_a_json_error(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    sim.faults.update({"force_status": 500, "force_reason": "broken pipe"})
    response = await client.get("/version", headers=ROOT_TOKEN)
    assert (response.status_code, response.reason_phrase) == (500, "broken pipe")
    assert response.json() == {"data": None, "message": "broken pipe"}


def test_invalid_fault_updates_are_rejected(sim: SimulatorServer) -> None:
    for bad in ({"bogus": 1}, {"latency": -1}, {"force_status": "500"}, {"refuse_logins": 1}):
        with pytest.raises((ValueError, TypeError)):
            sim.faults.update(bad)
    assert sim.faults.to_dict() == {
        "latency": 0.0,
        "refuse_logins": False,
        "force_status": None,
        "force_reason": None,
        # added with per-node faults; still all off
        "force_count": None,
        "retry_after": None,
        "reset": False,
        "hang": False,
        "swap_certificate": False,
    }


async def test_node_offline_in_process(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    sim.faults.set_node_online("pve2", False)
    nodes = {entry["node"]: entry for entry in (await client.get("/nodes", headers=ROOT_TOKEN)).json()["data"]}
    assert nodes["pve2"]["status"] == "offline"
    assert "uptime" not in nodes["pve2"]
    sim.faults.set_node_online("pve2", True)
    nodes = {entry["node"]: entry for entry in (await client.get("/nodes", headers=ROOT_TOKEN)).json()["data"]}
    assert nodes["pve2"]["status"] == "online"


async def test_counters(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    assert sim.counters.login_attempts == 0
    await client.get("/nodes", headers=ROOT_TOKEN)
    await client.get("/nodes?_dc=1", headers=ROOT_TOKEN)
    await client.get("/nodes")
    assert sim.counters.count("/api2/json/nodes") == 3
    assert sim.counters.count("/api2/json/nodes", "GET") == 3
    assert sim.counters.count("/api2/json/nodes", "POST") == 0
    assert sim.counters.auth_failures == 1
    assert sim.counters.login_attempts == 0
    snapshot = sim.counters.snapshot()
    assert snapshot["total"] == 3
    assert snapshot["by_status"] == {"200": 2, "401": 1}
    sim.counters.reset()
    assert sim.counters.total == 0


async def test_control_listener(start_sim: StartSim) -> None:
    async with start_sim(control_port=0) as sim, client_for(sim) as api:
        assert sim.control_url is not None
        assert sim.control_url.startswith("http://127.0.0.1:")
        assert sim.control_url != sim.url.replace("https", "http")
        async with httpx.AsyncClient(base_url=sim.control_url) as control:
            state = (await control.get("/state")).json()
            assert state["pve_version"] == "8.4.1"
            assert state["cluster_name"] == "demo"
            assert [node["name"] for node in state["nodes"]] == ["pve1", "pve2", "pve3"]
            assert state["nodes"][1]["fingerprint"] == sim.fingerprints["pve2"]

            changed = await control.put("/faults", json={"refuse_logins": True, "latency": 0.01})
            assert changed.status_code == 200
            assert changed.json()["refuse_logins"] is True
            refused = await api.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD})
            assert refused.status_code == 401

            assert (await control.put("/faults", json={"nope": True})).status_code == 400
            assert (await control.put("/faults", content=b"not json")).status_code == 400
            assert (await control.delete("/faults")).json()["refuse_logins"] is False
            await login(api)

            offline = await control.put("/nodes/pve3", json={"online": False})
            assert offline.json() == {"name": "pve3", "online": False}
            status = (await api.get("/cluster/status", headers=ROOT_TOKEN)).json()["data"]
            assert {e["name"]: e["online"] for e in status[1:]} == {"pve1": 1, "pve2": 1, "pve3": 0}
            assert (await control.put("/nodes/nope", json={"online": False})).status_code == 404
            assert (await control.put("/nodes/pve3", json={"online": "no"})).status_code == 400

            state = (await control.get("/state")).json()
            assert state["counters"]["login_attempts"] == 2
            assert state["nodes"][2]["online"] is False
            reset = await control.post("/counters/reset")
            assert reset.json()["total"] == 0

            # the control API is not part of the PVE API surface
            assert (await api.get("/state", headers=ROOT_TOKEN)).status_code == 501
