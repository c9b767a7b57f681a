"""Credentials go only where the Secret allows, and discovered endpoints are used only when they are plain node
addresses: over real HTTPS against a three-node simulated cluster (pve1..3 on 127.0.0.1..3, one port)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from proxmox_operator.proxmox import (
    ALLOWED_HOSTS_ANNOTATION,
    AllowedHosts,
    PasswordCredentials,
    ProxmoxClient,
    TrustConfig,
    errors,
)
from pve_simulator import SimulatorServer
from tests.client.conftest import PASSWORD, TOKEN
from tests.support.hostile import PVE_VERSION, HostileServer, json_data


def client(sim: SimulatorServer, endpoints: list[str], allowed: str | None = None, **kw: object) -> ProxmoxClient:
    kw.setdefault("trust", TrustConfig(ca_bundle=sim.ca_pem))
    kw.setdefault("credentials", TOKEN)
    return ProxmoxClient(
        endpoints,
        allowed_hosts=AllowedHosts.parse(allowed) if allowed is not None else None,
        **kw,  # type: ignore[arg-type]
    )


async def test_an_endpoint_outside_the_allowed_hosts_gets_nothing(cluster: SimulatorServer) -> None:
    async with client(cluster, [cluster.node_url("pve1")], allowed="pve*.example.com, 10.0.0.*") as c:
        with pytest.raises(errors.HostNotAllowed) as info:
            await c.version()
    message = str(info.value)
    assert cluster.node_url("pve1") in message and ALLOWED_HOSTS_ANNOTATION in message
    assert info.value.reason == "HostNotAllowed" and not info.value.transient
    assert cluster.counters.total == 0, "not a single request"


async def test_a_password_login_outside_the_allowed_hosts_is_not_attempted(cluster: SimulatorServer) -> None:
    creds = PasswordCredentials("root@pam", PASSWORD)
    async with client(cluster, [cluster.node_url("pve1")], allowed="127.0.0.2", credentials=creds) as c:
        with pytest.raises(errors.HostNotAllowed) as info:
            await c.login()
    assert cluster.counters.total == 0 and cluster.counters.login_attempts == 0
    assert PASSWORD not in str(info.value)


async def test_one_configured_endpoint_outside_the_list_stops_them_all(cluster: SimulatorServer) -> None:
    async with client(cluster, [cluster.node_url("pve1"), cluster.node_url("pve2")], allowed="127.0.0.1") as c:
        with pytest.raises(errors.HostNotAllowed, match=r"127\.0\.0\.2"):
            await c.version()
    assert cluster.counters.total == 0


async def test_no_connection_is_opened_to_a_host_that_is_not_allowed() -> None:
    async with HostileServer("127.0.0.9") as server:
        server.set("/api2/json/version", json_data(PVE_VERSION))
        trust = TrustConfig(ca_bundle=server.ca_pem)
        refused = ProxmoxClient(
            server.url, credentials=TOKEN, trust=trust, allowed_hosts=AllowedHosts.parse("10.*.*.*")
        )
        async with refused as c:
            with pytest.raises(errors.HostNotAllowed):
                await c.version()
        assert server.connections == 0
        allowed = ProxmoxClient(
            server.url, credentials=TOKEN, trust=trust, allowed_hosts=AllowedHosts.parse("127.0.0.9")
        )
        async with allowed as c:
            assert (await c.version()).version == "8.4.1"
        assert server.connections == 1, "the same client setup does connect when the host is allowed"


async def test_allowed_endpoints_work(cluster: SimulatorServer) -> None:
    async with client(cluster, [cluster.node_url("pve1")], allowed=f"127.0.0.1:{cluster.port}") as c:
        assert (await c.version()).version


async def test_discovered_endpoints_outside_the_list_are_dropped_and_never_contacted(cluster: SimulatorServer) -> None:
    async with client(cluster, [cluster.node_url("pve1")], allowed="127.0.0.1, 127.0.0.2") as c:
        c.set_discovered([cluster.node_url("pve2"), cluster.node_url("pve3")])
        assert c.discovered == [cluster.node_url("pve2")]
        assert c.refused_discovered == [cluster.node_url("pve3")]
        for node in ("pve1", "pve2"):
            await cluster.stop_node_listener(node)
        c.begin_round()
        with pytest.raises(errors.Unreachable):
            await c.version()  # pve3 answers, but may not be asked
    assert cluster.node_counters("pve3").total == 0


async def test_a_discovered_endpoint_inside_the_list_is_used(cluster: SimulatorServer) -> None:
    async with client(cluster, [cluster.node_url("pve1")], allowed="127.0.0.*") as c:
        c.set_discovered([cluster.node_url("pve3")])
        await cluster.stop_node_listener("pve1")
        c.begin_round()
        await c.version()
        assert c.active_endpoint == cluster.node_url("pve3")


async def test_discovered_urls_that_are_not_plain_node_addresses_are_dropped(cluster: SimulatorServer) -> None:
    p = cluster.port
    bad = [
        f"http://127.0.0.2:{p}",
        f"https://root:{PASSWORD}@127.0.0.2:{p}",
        f"https://127.0.0.2:{p + 1}",
        "https://127.0.0.2",
        f"https://localhost:{p}",
        f"https://pve2:{p}",
        f"https://127.0.0.2:{p}/api2/json",
        f"https://127.0.0.2:{p}?x=1",
        f"https://127.0.0.2:{p}#x",
    ]
    async with client(cluster, [cluster.node_url("pve1")]) as c:
        c.set_discovered([*bad, f"https://127.0.0.3:{p}/"])
        assert c.discovered == [cluster.node_url("pve3")]
        assert c.refused_discovered == bad
        for node in ("pve1", "pve3"):
            await cluster.stop_node_listener(node)
        c.begin_round()
        with pytest.raises(errors.Unreachable):
            await c.version()
    assert cluster.node_counters("pve2").total == 0


async def test_discovered_endpoints_are_ignored_without_certificate_verification(cluster: SimulatorServer) -> None:
    trust = TrustConfig(insecure_skip_verify=True)
    async with client(cluster, [cluster.node_url("pve1")], trust=trust) as c:
        c.set_discovered([cluster.node_url("pve2")])
        assert c.discovered == [] and c.candidates == [cluster.node_url("pve1")]
        assert c.refused_discovered == [cluster.node_url("pve2")]
        await cluster.stop_node_listener("pve1")
        c.begin_round()
        with pytest.raises(errors.Unreachable):
            await c.version()
    assert cluster.node_counters("pve2").total == 0


def test_discovery_keeps_the_configured_port() -> None:
    c = ProxmoxClient("https://10.0.0.1:8006", credentials=TOKEN)
    c.set_discovered(["https://10.0.0.2:8006", "https://10.0.0.3:443"])
    assert [urlsplit(u).port for u in c.candidates] == [8006, 8006]
