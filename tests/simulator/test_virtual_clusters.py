"""Virtual clusters behind a path-routing reverse proxy: ``/vc/<k>/api2/json/...`` answered by ``<name>-<k>``.

Off unless configured; each virtual cluster differs from the configured one only by its cluster name, so one
simulator stands for many clusters with distinct identities (name + node certificate fingerprints).
"""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import ValidationError

from pve_simulator import SimulatorConfig, client_ssl_context
from pve_simulator.app import route_virtual
from pve_simulator.cli import build_config, parse_args
from tests.simulator.support import API, CI_SECRET, FULL_SECRET, ROOT_PASSWORD, StartSim, token_header

ROOT_TOKEN = token_header("root@pam!full", FULL_SECRET)


def _cluster_entry(data: list[dict[str, object]]) -> dict[str, object]:
    (entry,) = (e for e in data if e["type"] == "cluster")
    return entry


async def test_each_virtual_cluster_has_its_own_name_and_the_same_nodes(start_sim: StartSim) -> None:
    async with (
        start_sim(virtual_clusters=20) as sim,
        httpx.AsyncClient(base_url=sim.url, verify=client_ssl_context(sim.ca_path)) as http,
    ):
        direct = (await http.get(f"{API}/cluster/status", headers=ROOT_TOKEN)).json()["data"]
        v17 = (await http.get(f"/vc/17{API}/cluster/status", headers=ROOT_TOKEN)).json()["data"]
        v0 = (await http.get(f"/vc/0{API}/cluster/status", headers=ROOT_TOKEN)).json()["data"]
        assert _cluster_entry(direct)["name"] == "demo"
        assert _cluster_entry(v17)["name"] == "demo-17"
        assert _cluster_entry(v0)["name"] == "demo-0"
        # Everything but the name is the configured cluster's: nodes, addresses, quorum, fingerprints, version.
        assert [e for e in v17 if e["type"] == "node"] == [e for e in direct if e["type"] == "node"]
        assert {k: v for k, v in _cluster_entry(v17).items() if k != "name"} == {
            k: v for k, v in _cluster_entry(direct).items() if k != "name"
        }
        nodes = (await http.get(f"/vc/17{API}/nodes", headers=ROOT_TOKEN)).json()["data"]
        assert {n["node"]: n["ssl_fingerprint"] for n in nodes} == sim.fingerprints
        version = await http.get(f"/vc/17{API}/version", headers=ROOT_TOKEN)
        assert version.json()["data"]["version"] == "8.4.1"
        # The counters see what pveproxy sees (prefix removed), and which virtual cluster it was for.
        assert sim.counters.count(f"{API}/cluster/status") == 3
        assert sim.counters.count(f"{API}/version") == 1
        assert sim.counters.snapshot()["by_virtual_cluster"] == {"0": 1, "17": 3}


async def test_a_login_reports_the_virtual_cluster_name_and_its_ticket_works(start_sim: StartSim) -> None:
    async with (
        start_sim(virtual_clusters=5) as sim,
        httpx.AsyncClient(base_url=f"{sim.url}/vc/3{API}", verify=client_ssl_context(sim.ca_path)) as http,
    ):
        login = await http.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD})
        assert login.status_code == 200
        assert login.json()["data"]["clustername"] == "demo-3"
        nodes = await http.get("/nodes", headers={"Cookie": f"PVEAuthCookie={login.json()['data']['ticket']}"})
        assert nodes.status_code == 200
        # Authentication and privileges are the configured cluster's.
        assert (await http.get("/cluster/status", headers=token_header("root@pam!ci", CI_SECRET))).status_code == 403


async def test_unknown_virtual_clusters_get_the_proxys_404(start_sim: StartSim) -> None:
    async with (
        start_sim(virtual_clusters=5) as sim,
        httpx.AsyncClient(base_url=sim.url, verify=client_ssl_context(sim.ca_path)) as http,
    ):
        for path in (f"/vc/5{API}/version", f"/vc/07{API}/version", f"/vc/x{API}/version", "/vc/"):
            response = await http.get(path, headers=ROOT_TOKEN)
            assert response.status_code == 404, path
            assert response.headers.get("Server") != "pve-api-daemon/3.0"  # the proxy answered, not pveproxy
        assert sim.counters.snapshot()["by_status"] == {"404": 4}


async def test_off_by_default_a_vc_path_is_an_unknown_path_to_pveproxy(start_sim: StartSim) -> None:
    async with start_sim() as sim, httpx.AsyncClient(base_url=sim.url, verify=client_ssl_context(sim.ca_path)) as http:
        response = await http.get(f"/vc/1{API}/version", headers=ROOT_TOKEN)
        assert response.reason_phrase == f"no such file '/vc/1{API}/version'"  # pveproxy's own answer
        assert response.headers["Server"] == "pve-api-daemon/3.0"
        assert sim.counters.snapshot()["by_virtual_cluster"] == {}


async def test_arrivals_per_virtual_cluster_from_the_control_listener(start_sim: StartSim) -> None:
    async with (
        start_sim(virtual_clusters=5, control_port=0) as sim,
        httpx.AsyncClient(base_url=sim.url, verify=client_ssl_context(sim.ca_path)) as http,
        httpx.AsyncClient(base_url=sim.control_url or "") as control,
    ):
        before = time.monotonic()
        await http.get(f"/vc/1{API}/version", headers=ROOT_TOKEN)
        between = time.monotonic()
        await http.get(f"/vc/1{API}/nodes", headers=ROOT_TOKEN)
        await http.get(f"/vc/4{API}/nodes", headers=ROOT_TOKEN)
        await http.get(f"{API}/nodes", headers=ROOT_TOKEN)  # not a virtual cluster's
        data = (await control.get("/counters/virtual-clusters")).json()
        assert sorted(data["arrivals"]) == ["1", "4"]
        first, second = data["arrivals"]["1"]
        assert before <= first <= between <= second <= data["now"]
        later = (await control.get("/counters/virtual-clusters", params={"since": between})).json()
        assert {k: len(v) for k, v in later["arrivals"].items()} == {"1": 1, "4": 1}
        assert (await control.get("/counters/virtual-clusters", params={"since": "x"})).status_code == 400


def test_routing() -> None:
    assert route_virtual(f"/vc/17{API}/version", 20) == (f"{API}/version", 17)
    assert route_virtual("/vc/17", 20) == ("/", 17)
    assert route_virtual(f"{API}/version", 20) == (f"{API}/version", None)
    assert route_virtual(f"/vc/17{API}/version", 0) == (f"/vc/17{API}/version", None)
    assert route_virtual(f"/vc/20{API}/version", 20) is None
    assert route_virtual(f"/vc/-1{API}/version", 20) is None


def test_config_needs_a_cluster_name_short_enough_for_every_virtual_name() -> None:
    with pytest.raises(ValidationError, match="need a cluster_name"):
        SimulatorConfig(virtual_clusters=2)
    with pytest.raises(ValidationError, match="longer than 15"):
        SimulatorConfig(cluster_name="abcdefghijkl", virtual_clusters=1000)  # abcdefghijkl-999: 16 characters
    config = SimulatorConfig(cluster_name="abcdefghijkl", virtual_clusters=100)
    assert config.virtual_cluster_name(99) == "abcdefghijkl-99"
    config = build_config(parse_args(["--cluster-name", "bench", "--virtual-clusters", "1000"]))
    assert config.virtual_clusters == 1000
    assert config.virtual_cluster_name(999) == "bench-999"
