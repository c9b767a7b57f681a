"""Per-node faults (reset, hang, 429/503 with Retry-After, swapped certificate) and what the counters see."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import ssl

import httpx
import pytest
from cryptography import x509

from pve_simulator import SimulatorServer, client_ssl_context
from pve_simulator.counters import max_in_window
from tests.simulator.support import (
    API,
    FULL_SECRET,
    ROOT_PASSWORD,
    StartSim,
    login,
    node_client,
    node_host,
    token_header,
    wait_for,
)

ROOT_TOKEN = token_header("root@pam!full", FULL_SECRET)
TRANSPORT_RESET = (httpx.ReadError, httpx.RemoteProtocolError)


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _presented_der(sim: SimulatorServer, node: str) -> bytes:
    _, writer = await asyncio.open_connection(node_host(sim, node), sim.port, ssl=_unverified_context())
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    assert isinstance(der, bytes)
    return der


async def test_reset_is_a_transport_error_and_a_countdown_recovers(sim: SimulatorServer) -> None:
    faults = sim.node_faults("pve2")
    faults.update({"reset": 1})
    async with node_client(sim, "pve2") as http:
        with pytest.raises(TRANSPORT_RESET):
            await http.get("/version", headers=ROOT_TOKEN)
        assert faults.to_dict()["reset"] is False
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    counters = sim.node_counters("pve2")
    assert (counters.total, counters.resets, counters.by_status[200]) == (2, 1, 1)
    assert sim.node_counters("pve1").total == 0


async def test_reset_sends_a_tcp_rst(sim: SimulatorServer) -> None:
    sim.node_faults("pve3").update({"reset": True})
    for _ in range(2):  # True: every request
        reader, writer = await asyncio.open_connection(
            node_host(sim, "pve3"), sim.port, ssl=client_ssl_context(sim.ca_path)
        )
        try:
            writer.write(b"GET /api2/json/version HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            writer.close()
    assert sim.node_faults("pve3").to_dict()["reset"] is True
    assert sim.node_counters("pve3").resets == 2


async def test_cluster_wide_reset_applies_to_every_node(sim: SimulatorServer) -> None:
    sim.faults.update({"reset": 2})
    for name in ("pve1", "pve3"):
        async with node_client(sim, name) as http:
            with pytest.raises(TRANSPORT_RESET):
                await http.get("/version", headers=ROOT_TOKEN)
    async with node_client(sim, "pve2") as http:
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    assert sim.counters.resets == 2


async def test_hang_is_a_read_timeout(sim: SimulatorServer) -> None:
    sim.node_faults("pve2").update({"hang": 1})
    timeout = httpx.Timeout(5.0, read=0.2)
    async with node_client(sim, "pve2", timeout=timeout) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/version", headers=ROOT_TOKEN)
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    counters = sim.node_counters("pve2")
    assert (counters.hangs, counters.by_status[200]) == (1, 1)
    await wait_for(lambda: counters.in_flight == 0, "the abandoned request to end")


@pytest.mark.parametrize(("status", "reason"), [(429, "Too Many Requests"), (503, "Service Unavailable")])
async def test_429_and_503_with_retry_after_come_before_authentication(
    sim: SimulatorServer, status: int, reason: str
) -> None:
    sim.node_faults("pve2").update({"force_status": status, "retry_after": 7})
    async with node_client(sim, "pve2") as http:
        for response in (
            await http.get("/version"),  # no credentials: still the front status
            await http.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD}),
        ):
            assert (response.status_code, response.reason_phrase) == (status, reason)
            assert response.headers["Retry-After"] == "7"
            assert response.content == b""
            assert response.headers["Connection"] == "close"
    async with node_client(sim, "pve1") as http:
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    assert sim.node_counters("pve2").login_attempts == 0
    assert sim.node_counters("pve2").by_status == {status: 2}


async def test_forced_status_for_the_next_requests_only(sim: SimulatorServer) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    sim.faults.update({"force_status": 503, "force_count": 2, "retry_after": date, "force_reason": "overloaded"})
    async with node_client(sim, "pve3") as http:
        first = await http.get("/version", headers=ROOT_TOKEN)
        assert (first.status_code, first.reason_phrase, first.headers["Retry-After"]) == (503, "overloaded", date)
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 503
        response = await http.get("/version", headers=ROOT_TOKEN)
        assert response.status_code == 200
        assert "Retry-After" not in response.headers
    assert sim.faults.to_dict()["force_status"] is None


async def test_retry_after_on_statuses_after_authentication(sim: SimulatorServer) -> None:
    sim.node_faults("pve2").update({"force_status": 500, "retry_after": 3, "force_count": 1})
    async with node_client(sim, "pve2") as http:
        await login(http)  # logins are not affected by statuses after authentication
        response = await http.get("/version", headers=ROOT_TOKEN)
        assert response.status_code == 500
        assert response.headers["Retry-After"] == "3"
        assert response.json()["data"] is None
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200


async def test_node_fault_wins_and_latencies_add_up(sim: SimulatorServer) -> None:
    sim.faults.update({"force_status": 596})
    sim.node_faults("pve2").update({"force_status": 595})
    async with node_client(sim, "pve1") as one, node_client(sim, "pve2") as two:
        assert (await one.get("/version", headers=ROOT_TOKEN)).status_code == 596
        assert (await two.get("/version", headers=ROOT_TOKEN)).status_code == 595
    sim.faults.reset()  # every fault, per node too
    assert sim.node_faults("pve2").force_status is None
    sim.faults.update({"latency": 0.1})
    sim.node_faults("pve2").update({"latency": 0.15})
    assert sim.faults.effective("pve2").latency == pytest.approx(0.25)
    assert sim.faults.effective("pve1").latency == pytest.approx(0.1)


async def test_refuse_logins_on_one_node(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"refuse_logins": True})
    async with node_client(sim, "pve1") as one, node_client(sim, "pve2") as two:
        refused = await one.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD})
        assert (refused.status_code, refused.reason_phrase) == (401, "authentication failure")
        await login(two)
    assert (sim.node_counters("pve1").login_failures, sim.node_counters("pve2").login_successes) == (1, 1)


async def test_swapped_certificate_fails_ca_verification_and_matches_its_fingerprint(sim: SimulatorServer) -> None:
    original = sim.fingerprints["pve2"]
    sim.node_faults("pve2").update({"swap_certificate": True})
    swapped = sim.presented_fingerprint("pve2")
    assert swapped != original
    async with node_client(sim, "pve2") as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get("/version", headers=ROOT_TOKEN)
    der = await _presented_der(sim, "pve2")
    assert hashlib.sha256(der).hexdigest().upper() == swapped.replace(":", "")
    cert = x509.load_der_x509_certificate(der)
    assert cert.issuer == cert.subject  # self-signed, not by the cluster CA
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.2") in sans.get_values_for_type(x509.IPAddress)
    assert "pve2" in sans.get_values_for_type(x509.DNSName)

    # a client pinning that fingerprint gets through; PVE reports a custom certificate in /nodes
    async with httpx.AsyncClient(base_url=sim.node_url("pve2") + API, verify=_unverified_context()) as pinned:
        nodes = (await pinned.get("/nodes", headers=ROOT_TOKEN)).json()["data"]
    assert {entry["node"]: entry["ssl_fingerprint"] for entry in nodes} == {
        "pve1": sim.fingerprints["pve1"],
        "pve2": swapped,
        "pve3": sim.fingerprints["pve3"],
    }
    # the other nodes are unaffected, and swapping back restores the CA-signed certificate
    async with node_client(sim, "pve1") as http:
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200
    sim.node_faults("pve2").update({"swap_certificate": False})
    assert sim.presented_fingerprint("pve2") == original
    async with node_client(sim, "pve2") as http:
        assert (await http.get("/version", headers=ROOT_TOKEN)).status_code == 200


async def test_swapped_certificate_is_stable_across_runs(start_sim: StartSim) -> None:
    async with start_sim() as first:
        first.node_faults("pve3").update({"swap_certificate": True})
        fingerprint = first.presented_fingerprint("pve3")
    async with start_sim() as second:
        assert second.presented_fingerprint("pve3") == second.fingerprints["pve3"]
        second.faults.update({"swap_certificate": True})  # cluster-wide: every node
        assert second.presented_fingerprint("pve3") == fingerprint
        assert hashlib.sha256(await _presented_der(second, "pve1")).hexdigest().upper() == (
            second.presented_fingerprint("pve1").replace(":", "")
        )


async def test_max_in_flight_counts_concurrent_requests_with_latency(sim: SimulatorServer) -> None:
    sim.node_faults("pve2").update({"latency": 0.5})
    limits = httpx.Limits(max_connections=10)
    async with node_client(sim, "pve2", limits=limits) as http:
        responses = await asyncio.gather(*(http.get("/version", headers=ROOT_TOKEN) for _ in range(5)))
        assert [response.status_code for response in responses] == [200] * 5
        sim.node_faults("pve2").update({"latency": 0})
        for _ in range(3):
            await http.get("/version", headers=ROOT_TOKEN)
    assert sim.node_counters("pve2").max_in_flight == 5
    assert sim.node_counters("pve2").in_flight == 0
    assert sim.counters.max_in_flight == 5
    assert sim.node_counters("pve1").max_in_flight == 0


async def test_max_in_flight_of_a_serial_client_is_one(sim: SimulatorServer) -> None:
    sim.node_faults("pve3").update({"latency": 0.05})
    async with node_client(sim, "pve3", limits=httpx.Limits(max_connections=1)) as http:
        await asyncio.gather(*(http.get("/version", headers=ROOT_TOKEN) for _ in range(4)))
    assert sim.node_counters("pve3").max_in_flight == 1
    assert sim.node_counters("pve3").total == 4


async def test_in_flight_while_requests_hang(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"hang": True})
    async with node_client(sim, "pve1", limits=httpx.Limits(max_connections=10)) as http:
        tasks = [asyncio.ensure_future(http.get("/version", headers=ROOT_TOKEN)) for _ in range(3)]
        counters = sim.node_counters("pve1")
        await wait_for(lambda: counters.in_flight == 3, "three hanging requests")
        assert counters.max_in_flight == 3
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await wait_for(lambda: counters.in_flight == 0, "the hanging requests to end")
    counters.reset()
    assert (counters.max_in_flight, counters.hangs, counters.total) == (0, 0, 0)


async def test_window_counting(sim: SimulatorServer) -> None:
    async with node_client(sim, "pve2") as http:
        for _ in range(4):
            await http.get("/version", headers=ROOT_TOKEN)
        await http.get("/nodes", headers=ROOT_TOKEN)
    counters = sim.node_counters("pve2")
    arrivals = counters.arrivals()
    assert len(arrivals) == 5
    assert arrivals == sorted(arrivals)
    assert counters.max_requests_in_any_window(3600) == 5
    assert counters.max_requests_in_any_window(3600, path="/api2/json/version") == 4
    assert counters.max_requests_in_any_window(3600, path="/api2/json/nodes", method="get") == 1
    # a window shorter than the smallest gap between two arrivals holds one request
    smallest_gap = min(later - earlier for earlier, later in itertools.pairwise(arrivals))
    assert counters.max_requests_in_any_window(smallest_gap / 2) == 1
    assert counters.max_requests_in_any_window(arrivals[-1] - arrivals[0] + 1e-6) == 5


def test_max_in_window() -> None:
    stamps = [0.0, 0.1, 0.2, 1.0, 1.05, 1.1, 1.15, 3.0]
    assert max_in_window(stamps, 1.0) == 5  # 0.2 .. 1.15
    assert max_in_window(stamps, 0.2) == 4  # 1.0 .. 1.15
    assert max_in_window(stamps, 0.04) == 1
    assert max_in_window([0.0, 1.0], 1.0) == 1  # half-open: [0, 1) does not hold 1.0
    assert max_in_window(list(reversed(stamps)), 10) == 8
    assert max_in_window([], 1) == 0
    with pytest.raises(ValueError, match="window"):
        max_in_window(stamps, 0)


def test_invalid_node_fault_updates(sim: SimulatorServer) -> None:
    faults = sim.node_faults("pve1")
    for bad in (
        {"reset": -1},
        {"hang": "yes"},
        {"retry_after": -5},
        {"retry_after": True},
        {"retry_after": "a\nb"},
        {"force_count": 0},
        {"swap_certificate": 1},
        {"nope": 1},
    ):
        with pytest.raises((ValueError, TypeError)):
            faults.update(bad)
    assert faults.to_dict() == sim.node_faults("pve2").to_dict()
    faults.update({"reset": 0})
    assert faults.to_dict()["reset"] is False
    with pytest.raises(KeyError):
        sim.node_faults("nope")
