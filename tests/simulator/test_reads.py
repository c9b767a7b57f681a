"""GET /version, /nodes, /cluster/status; unknown paths; headers and connection handling."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from pve_simulator import ManualClock, SimulatorServer, client_ssl_context
from tests.simulator.support import (
    BOB_PASSWORD,
    CI_SECRET,
    FULL_SECRET,
    StartSim,
    client_for,
    cookie,
    login,
    token_header,
)

ROOT_TOKEN = token_header("root@pam!full", FULL_SECRET)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("7.4-3", {"version": "7.4-3", "release": "7.4", "repoid": "9002ab8a"}),
        ("7.4-17", {"version": "7.4-17", "release": "7.4", "repoid": "513c62be"}),
        ("8.4.1", {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}),
        ("9.0.4", {"version": "9.0.4", "release": "9.0", "repoid": "39d8a4de7dfb2c40"}),
    ],
)
async def test_version_per_flavour(start_sim: StartSim, version: str, expected: dict[str, str]) -> None:
    async with start_sim(pve_version=version) as sim, client_for(sim) as http:
        response = await http.get("/version", headers=ROOT_TOKEN)
        assert response.status_code == 200
        assert response.json() == {"data": expected}


async def test_unknown_version_gets_a_repoid_of_the_right_length(start_sim: StartSim) -> None:
    async with start_sim(pve_version="9.1.2") as sim, client_for(sim) as http:
        data = (await http.get("/version", headers=ROOT_TOKEN)).json()["data"]
        assert data["version"] == "9.1.2"
        assert len(data["repoid"]) == 16


async def test_nodes_with_sys_audit(start_sim: StartSim) -> None:
    nodes = [{"name": "pve1", "level": "c"}, {"name": "pve2"}, {"name": "pve3", "online": False}]
    async with start_sim(nodes=nodes) as sim, client_for(sim) as http:
        data = (await http.get("/nodes", headers=ROOT_TOKEN)).json()["data"]
        by_name = {entry["node"]: entry for entry in data}
        assert [entry["node"] for entry in data] == ["pve1", "pve2", "pve3"]
        online = by_name["pve1"]
        assert set(online) == {
            "id", "node", "type", "status", "ssl_fingerprint", "level",
            "maxcpu", "maxmem", "maxdisk", "uptime", "cpu", "mem", "disk",
        }  # fmt: skip
        assert (online["id"], online["type"], online["status"], online["level"]) == ("node/pve1", "node", "online", "c")
        assert by_name["pve2"]["level"] == ""
        offline = by_name["pve3"]
        assert offline["status"] == "offline"
        assert set(offline) == {
            "id",
            "node",
            "type",
            "status",
            "ssl_fingerprint",
            "level",
            "maxcpu",
            "maxmem",
            "maxdisk",
        }
        assert offline["ssl_fingerprint"] == sim.fingerprints["pve3"]


async def test_nodes_without_sys_audit_have_no_stats(client: httpx.AsyncClient) -> None:
    ticket = (await login(client, "bob@pve", BOB_PASSWORD))["ticket"]
    data = (await client.get("/nodes", headers=cookie(ticket))).json()["data"]
    assert len(data) == 3
    for entry in data:
        assert set(entry) == {"id", "node", "type", "status", "ssl_fingerprint", "level"}
        assert entry["status"] == "online"


async def test_node_uptime_follows_the_clock(start_sim: StartSim) -> None:
    clock = ManualClock()
    nodes = [{"name": "pve1", "uptime": 100}]
    async with start_sim(clock=clock, nodes=nodes, cluster_name=None) as sim, client_for(sim) as http:
        clock.advance(50)
        data = (await http.get("/nodes", headers=ROOT_TOKEN)).json()["data"]
    assert data[0]["uptime"] == 150


async def test_cluster_status_clustered(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    data = (await client.get("/cluster/status", headers=ROOT_TOKEN)).json()["data"]
    cluster = data[0]
    assert cluster == {"type": "cluster", "id": "cluster", "name": "demo", "nodes": 3, "version": 3, "quorate": 1}
    assert type(cluster["quorate"]) is int
    members = {entry["name"]: entry for entry in data[1:]}
    assert set(members) == {"pve1", "pve2", "pve3"}
    assert members["pve1"] == {
        "type": "node",
        "id": "node/pve1",
        "name": "pve1",
        "nodeid": 1,
        "local": 1,
        "online": 1,
        "ip": "127.0.0.1",
        "level": "",
    }
    assert members["pve2"]["local"] == 0
    assert members["pve3"]["ip"] == "127.0.0.3"
    for entry in data[1:]:
        assert type(entry["local"]) is int
        assert type(entry["online"]) is int

    sim.set_node_online("pve2", False)
    sim.set_node_online("pve3", False)
    data = (await client.get("/cluster/status", headers=ROOT_TOKEN)).json()["data"]
    assert data[0]["quorate"] == 0
    assert data[0]["nodes"] == 3
    assert {entry["name"]: entry["online"] for entry in data[1:]} == {"pve1": 1, "pve2": 0, "pve3": 0}


async def test_cluster_status_standalone(start_sim: StartSim) -> None:
    async with start_sim(cluster_name=None, nodes=[{"name": "solo", "level": "b"}]) as sim, client_for(sim) as http:
        data = (await http.get("/cluster/status", headers=ROOT_TOKEN)).json()["data"]
        assert data == [
            {
                "type": "node",
                "id": "node/solo",
                "name": "solo",
                "ip": "127.0.0.1",
                "local": 1,
                "nodeid": 0,
                "online": 1,
                "level": "b",
            }
        ]
        nodes = (await http.get("/nodes", headers=ROOT_TOKEN)).json()["data"]
        assert [entry["status"] for entry in nodes] == ["online"]


async def test_cluster_status_needs_sys_audit(client: httpx.AsyncClient) -> None:
    ticket = (await login(client, "bob@pve", BOB_PASSWORD))["ticket"]
    response = await client.get("/cluster/status", headers=cookie(ticket))
    assert (response.status_code, response.reason_phrase) == (403, "Permission check failed (/, Sys.Audit)")


async def test_unknown_path_is_501(client: httpx.AsyncClient) -> None:
    response = await client.get("/x", headers=ROOT_TOKEN)
    assert (response.status_code, response.reason_phrase) == (501, "Method 'GET /x' not implemented")
    assert response.json() == {"data": None, "message": "Method 'GET /x' not implemented"}
    assert response.headers["Connection"] == "close"
    nested = await client.get("/nodes/pve1/qemu", headers=ROOT_TOKEN)
    assert nested.reason_phrase == "Method 'GET /nodes/pve1/qemu' not implemented"


async def test_unknown_path_on_old_servers_and_unauthenticated(start_sim: StartSim) -> None:
    async with start_sim(pve_version="7.4-3") as sim, client_for(sim) as http:
        response = await http.get("/x", headers=ROOT_TOKEN)
        assert response.status_code == 501
        assert response.json() == {"data": None}
        unauthenticated = await http.get("/x")
        assert (unauthenticated.status_code, unauthenticated.reason_phrase) == (401, "No ticket")


async def test_unknown_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/version", params={"foo": "1", "_dc": "123"}, headers=ROOT_TOKEN)
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "foo": "property is not defined in schema and the schema does not allow additional properties"
    }


async def test_response_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/version", headers=ROOT_TOKEN)
    headers = response.headers
    assert headers["Server"] == "pve-api-daemon/3.0"
    assert headers["Content-Type"] == "application/json;charset=UTF-8"
    assert headers["Cache-Control"] == "max-age=0"
    assert headers["Pragma"] == "no-cache"
    assert headers["Expires"] == headers["Date"]
    assert headers["Connection"].lower() == "keep-alive"
    assert response.reason_phrase == "OK"


async def test_large_responses_are_compressed(start_sim: StartSim) -> None:
    nodes = [{"name": f"n{i}"} for i in range(1, 9)]
    async with start_sim(nodes=nodes) as sim, client_for(sim) as http:
        response = await http.get("/nodes", headers={**ROOT_TOKEN, "Accept-Encoding": "gzip"})
        assert response.headers["Content-Encoding"] == "gzip"
        assert len(response.json()["data"]) == 8


async def test_unsupported_method_and_format(client: httpx.AsyncClient) -> None:
    patch = await client.patch("/version", headers=ROOT_TOKEN)
    assert (patch.status_code, patch.reason_phrase) == (501, "method 'PATCH' not available")
    extjs = await client.get(client.base_url.copy_with(path="/api2/extjs/version"), headers=ROOT_TOKEN)
    assert (extjs.status_code, extjs.reason_phrase) == (501, "no formatter for uri /version, extjs")


async def _raw_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: PVEAPIToken=root@pam!ci={CI_SECRET}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


async def test_idle_keep_alive_connections_are_closed(start_sim: StartSim) -> None:
    async with start_sim(keepalive_timeout=0.3) as sim:
        reader, writer = await asyncio.open_connection(sim.host, sim.port, ssl=client_ssl_context(sim.ca_path))
        try:
            head = await _raw_request(reader, writer, "/api2/json/version")
            assert head.startswith(b"HTTP/1.1 200 OK")
            started = time.monotonic()
            rest = await asyncio.wait_for(reader.read(), timeout=10)
            assert rest == b""
            assert time.monotonic() - started >= 0.2
        finally:
            writer.close()


async def test_error_responses_close_the_connection(sim: SimulatorServer) -> None:
    reader, writer = await asyncio.open_connection(sim.host, sim.port, ssl=client_ssl_context(sim.ca_path))
    try:
        head = await _raw_request(reader, writer, "/api2/json/nope")
        assert head.startswith(b"HTTP/1.1 501 Method 'GET /nope' not implemented")
        assert b"Connection: close" in head
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    finally:
        writer.close()
