"""One listener per node: own address, same port, own certificate, shared auth, stop/start, control."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from pve_simulator import SimulatorServer, SimulatorThread, client_ssl_context
from tests.simulator.support import (
    API,
    CI_SECRET,
    FULL_SECRET,
    StartSim,
    client_for,
    cookie,
    login,
    make_config,
    node_client,
    node_host,
    token_header,
    wait_for,
)

ROOT_TOKEN = token_header("root@pam!full", FULL_SECRET)
NODES = ("pve1", "pve2", "pve3")


async def _peer_certificate(sim: SimulatorServer, node: str) -> x509.Certificate:
    """Handshake with ``node`` trusting only the cluster CA, hostname (IP SAN) checked."""
    context = client_ssl_context(sim.ca_path)
    assert context.check_hostname
    _, writer = await asyncio.open_connection(node_host(sim, node), sim.port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


async def _raw_get(host: str, port: int, context: ssl.SSLContext, path: str = "/api2/json/version") -> bytes:
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: PVEAPIToken=root@pam!ci={CI_SECRET}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        rest = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    assert rest == b""
    return head


async def test_every_node_listens_on_its_own_address_and_the_same_port(sim: SimulatorServer) -> None:
    assert sim.per_node_listeners
    assert sim.node_urls == {name: f"https://127.0.0.{i}:{sim.port}" for i, name in enumerate(NODES, start=1)}
    assert sim.url == sim.node_url("pve1")
    for name in NODES:
        assert sim.node_listening(name)
        async with node_client(sim, name) as http:
            response = await http.get("/version", headers=ROOT_TOKEN)
            assert response.status_code == 200
            assert response.json()["data"]["version"] == "8.4.1"
            nodes = (await http.get("/nodes", headers=ROOT_TOKEN)).json()["data"]
            assert [entry["node"] for entry in nodes] == list(NODES)
        assert sim.node_counters(name).count("/api2/json/version") == 1
    assert sim.counters.count("/api2/json/version") == 3


async def test_each_node_presents_its_own_ca_signed_certificate(sim: SimulatorServer) -> None:
    for name in NODES:
        cert = await _peer_certificate(sim, name)
        ip = ipaddress.ip_address(node_host(sim, name))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ip in sans.get_values_for_type(x509.IPAddress)
        assert name in sans.get_values_for_type(x509.DNSName)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        assert fingerprint.upper() == sim.fingerprints[name].replace(":", "")
        assert sim.presented_fingerprint(name) == sim.fingerprints[name]


async def test_ticket_and_csrf_token_from_one_node_work_on_another(sim: SimulatorServer) -> None:
    async with node_client(sim, "pve1") as first, node_client(sim, "pve2") as second:
        data = await login(first)
        assert (await second.get("/nodes", headers=cookie(data["ticket"]))).status_code == 200
        # a write needs the CSRF token: it is accepted on pve2 too (PUT /nodes is unknown, not a 401)
        headers = {**cookie(data["ticket"]), "CSRFPreventionToken": data["CSRFPreventionToken"]}
        assert (await second.put("/nodes", headers=headers)).status_code == 501
        assert (await second.put("/nodes", headers=cookie(data["ticket"]))).status_code == 401
        # renewing on another node with the ticket as the password
        renewed = await login(second, "root@pam", data["ticket"])
        assert (await first.get("/version", headers=cookie(renewed["ticket"]))).status_code == 200
    assert sim.node_counters("pve1").login_attempts == 1
    assert sim.node_counters("pve2").login_attempts == 1
    assert sim.counters.login_successes == 2


async def test_cluster_status_marks_the_answering_node_local(sim: SimulatorServer) -> None:
    for name in NODES:
        async with node_client(sim, name) as http:
            data = (await http.get("/cluster/status", headers=ROOT_TOKEN)).json()["data"]
        members = {entry["name"]: entry for entry in data if entry["type"] == "node"}
        assert {member: entry["local"] for member, entry in members.items()} == {n: int(n == name) for n in NODES}
        # every reported ip is where that node's listener is
        for member, entry in members.items():
            assert sim.node_url(member) == f"https://{entry['ip']}:{sim.port}"


async def test_stopping_and_starting_a_node_listener(sim: SimulatorServer) -> None:
    async with node_client(sim, "pve2") as http:
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    await sim.stop_node_listener("pve2")
    assert not sim.node_listening("pve2")
    async with node_client(sim, "pve2") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/version", headers=ROOT_TOKEN)
    async with node_client(sim, "pve1") as http:
        # pveproxy stopped, the node is still an online cluster member
        data = (await http.get("/cluster/status", headers=ROOT_TOKEN)).json()["data"]
        assert {e["name"]: e["online"] for e in data if e["type"] == "node"}["pve2"] == 1
    await sim.stop_node_listener("pve2")  # idempotent
    await sim.start_node_listener("pve2")
    await sim.start_node_listener("pve2")  # idempotent
    assert sim.node_listening("pve2")
    async with node_client(sim, "pve2") as http:
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    assert sim.node_url("pve2") == f"https://127.0.0.2:{sim.port}"


async def test_stopping_a_listener_closes_open_connections(sim: SimulatorServer) -> None:
    sim.node_faults("pve2").update({"hang": True})
    async with node_client(sim, "pve2") as http:
        pending = asyncio.ensure_future(http.get("/version", headers=ROOT_TOKEN))
        await wait_for(lambda: sim.node_counters("pve2").in_flight == 1, "the request to hang")
        await sim.stop_node_listener("pve2")
        with pytest.raises(httpx.TransportError):
            await pending
    assert sim.node_counters("pve2").in_flight == 0


async def test_unknown_node_and_single_listener_mode(start_sim: StartSim) -> None:
    async with start_sim(node_listeners=False) as sim:
        assert not sim.per_node_listeners
        assert sim.node_urls == {"pve1": sim.url}
        with pytest.raises(KeyError, match="no listener"):
            sim.node_url("pve2")
        with pytest.raises(KeyError):
            sim.node_url("nope")
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(verify=client_ssl_context(sim.ca_path)) as http:
                await http.get(f"https://127.0.0.2:{sim.port}{API}/version")
        async with client_for(sim) as http:
            assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200


async def test_single_node_defaults_to_one_listener_and_can_be_forced(start_sim: StartSim) -> None:
    async with start_sim(cluster_name=None, nodes=[{"name": "solo"}]) as sim:
        assert not sim.per_node_listeners
        assert sim.node_urls == {"solo": sim.url}
    nodes = [{"name": "solo", "ip": "127.0.0.9"}]
    async with start_sim(cluster_name=None, nodes=nodes, node_listeners=True) as sim:
        assert sim.url == f"https://127.0.0.9:{sim.port}"
        async with client_for(sim) as http:
            assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200


async def test_fixed_port_on_every_node(start_sim: StartSim) -> None:
    async with start_sim() as probe:
        port = probe.port  # free on every node address a moment ago
    async with start_sim(port=port) as sim:
        assert set(sim.node_urls.values()) == {f"https://127.0.0.{i}:{port}" for i in (1, 2, 3)}
        # the port is taken now: a second simulator on it fails cleanly
        with pytest.raises(OSError):
            async with start_sim(port=port):
                pass


async def test_keep_alive_and_error_handling_on_every_listener(start_sim: StartSim) -> None:
    async with start_sim(keepalive_timeout=0.3) as sim:
        context = client_ssl_context(sim.ca_path)
        for name in ("pve2", "pve3"):
            started = time.monotonic()
            head = await _raw_get(node_host(sim, name), sim.port, context)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert b"Connection: Keep-Alive" in head
            assert time.monotonic() - started >= 0.2  # closed by the server, only after the timeout
            error = await _raw_get(node_host(sim, name), sim.port, context, "/api2/json/nope")
            assert error.startswith(b"HTTP/1.1 501")
            assert b"Connection: close" in error
        # a connection that never sends a request is closed too
        reader, writer = await asyncio.open_connection(node_host(sim, "pve2"), sim.port, ssl=context)
        try:
            assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        finally:
            writer.close()


async def test_control_listener_toggles_listening_and_node_faults(start_sim: StartSim) -> None:
    async with start_sim(control_port=0) as sim, httpx.AsyncClient(base_url=str(sim.control_url)) as control:
        state = (await control.get("/state")).json()
        assert state["node_urls"] == sim.node_urls
        assert state["node_listeners"] is True
        assert [(n["name"], n["url"], n["listening"]) for n in state["nodes"]] == [
            (name, sim.node_url(name), True) for name in NODES
        ]
        stopped = await control.put("/nodes/pve2", json={"listening": False})
        assert stopped.json() == {"name": "pve2", "online": True, "listening": False}
        async with node_client(sim, "pve2") as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/version", headers=ROOT_TOKEN)
        assert (await control.get("/state")).json()["nodes"][1]["listening"] is False
        both = await control.put("/nodes/pve2", json={"listening": True, "online": False})
        assert both.json() == {"name": "pve2", "online": False, "listening": True}

        assert (await control.put("/nodes/pve2/faults", json={"reset": 1})).json()["reset"] == 1
        async with node_client(sim, "pve2") as http:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await http.get("/version", headers=ROOT_TOKEN)
            assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
        counters = (await control.get("/nodes/pve2/counters", params={"window": "60"})).json()
        assert (counters["total"], counters["resets"], counters["max_requests_in_window"]) == (2, 1, 2)
        assert (await control.get("/nodes/pve2/counters", params={"window": "0"})).status_code == 400
        assert (await control.get("/nodes/nope/counters")).status_code == 404
        state = (await control.get("/state")).json()
        assert state["nodes"][1]["counters"]["resets"] == 1
        assert state["nodes"][1]["faults"]["reset"] is False
        assert state["counters"]["resets"] == 1

        assert (await control.put("/nodes/pve2/faults", json={"latency": -1})).status_code == 400
        assert (await control.put("/nodes/nope/faults", json={"latency": 1})).status_code == 404
        assert (await control.put("/nodes/pve2/faults", json={"hang": 2})).json()["hang"] == 2
        assert (await control.delete("/nodes/pve2/faults")).json()["hang"] is False
        assert (await control.put("/nodes/pve2", json={"listening": "no"})).status_code == 400
        assert (await control.put("/nodes/pve2", json={})).status_code == 400
        assert (await control.post("/counters/reset")).json()["total"] == 0
        assert sim.node_counters("pve2").total == 0


def test_thread_safe_listener_control_from_sync_code(cert_dir: Path) -> None:
    thread = SimulatorThread(make_config(cert_dir))
    with thread as sim:
        verify = client_ssl_context(sim.ca_path)
        url = f"{sim.node_url('pve3')}{API}/version"
        assert httpx.get(url, headers=ROOT_TOKEN, verify=verify).status_code == 200
        sim.set_node_listening("pve3", False)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, headers=ROOT_TOKEN, verify=verify)
        thread.set_node_listening("pve3", True)
        assert httpx.get(url, headers=ROOT_TOKEN, verify=verify).status_code == 200
        thread.call(sim.stop_node_listener, "pve3")
        assert not sim.node_listening("pve3")
        sim.call(sim.start_node_listener, "pve3")
        assert sim.node_listening("pve3")
        sim.node_faults("pve3").update({"force_status": 596, "force_count": 1})
        assert httpx.get(url, headers=ROOT_TOKEN, verify=verify).status_code == 596
        assert httpx.get(url, headers=ROOT_TOKEN, verify=verify).status_code == 200
        assert sim.node_counters("pve3").by_status == {200: 3, 596: 1}


async def test_call_refuses_to_deadlock_on_its_own_loop(sim: SimulatorServer) -> None:
    with pytest.raises(RuntimeError, match="deadlock"):
        sim.call(sim.stop_node_listener, "pve2")
    assert sim.node_listening("pve2")


async def test_ready_info_lists_every_node(sim: SimulatorServer, tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    sim.write_ready_file(ready)
    info = json.loads(ready.read_text())
    assert info["url"] == sim.url
    assert info["node_urls"] == sim.node_urls
    assert info["node_listeners"] is True
    assert info["nodes"]["pve3"] == {
        "ip": "127.0.0.3",
        "fingerprint": sim.fingerprints["pve3"],
        "url": sim.node_url("pve3"),
    }
