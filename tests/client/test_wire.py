"""The connection pool of one endpoint (proxmox/wire.py) against the simulator: keep-alive within bounds, and no
socket kept once it can no longer be used."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxmox_operator.proxmox import ProxmoxClient, TokenCredentials, wire
from proxmox_operator.proxmox.tls import TrustConfig, ssl_context
from pve_simulator import NodeConfig, SimulatorConfig, SimulatorServer, TokenConfig, UserConfig
from tests.client.conftest import PASSWORD, SECRET

AUTH = [("Authorization", TokenCredentials("root@pam!ci", SECRET).authorization_header())]


@pytest.fixture
async def quick_closing(shared_cert_dir: Path) -> AsyncIterator[SimulatorServer]:
    """One node that closes idle keep-alive connections after 0.2 s (pveproxy: 5 s)."""
    config = SimulatorConfig(
        nodes=(NodeConfig(name="pve1"),),
        users=(UserConfig(userid="root@pam", password=PASSWORD),),
        tokens=(TokenConfig(tokenid="root@pam!ci", secret=SECRET, sys_audit=True),),
        cert_dir=shared_cert_dir,
        keepalive_timeout=0.2,
    )
    async with SimulatorServer(config) as server:
        yield server


def pool(sim: SimulatorServer, *, keepalive_expiry: float) -> wire.Pool:
    context = ssl_context(TrustConfig(ca_bundle=sim.ca_pem))
    return wire.Pool(sim.url, context, (), connect_timeout=5, read_timeout=5, keepalive_expiry=keepalive_expiry)


async def get_version(p: wire.Pool) -> int:
    response = await p.request("GET", "/api2/json/version", AUTH)
    async for _ in response.aiter_raw():
        pass
    await response.aclose()
    return response.status_code


async def test_a_connection_is_reused_within_the_keepalive_expiry_and_closed_after_it(
    quick_closing: SimulatorServer,
) -> None:
    p = pool(quick_closing, keepalive_expiry=5)
    assert await get_version(p) == 200
    (idle,) = p._idle
    assert await get_version(p) == 200
    assert p._idle == [idle], "the second request went over the same connection"
    await p.aclose()
    assert idle.sock.fileno() == -1


async def test_idle_connections_are_closed_by_the_pool_once_expired(quick_closing: SimulatorServer) -> None:
    p = pool(quick_closing, keepalive_expiry=0.1)
    assert await get_version(p) == 200
    (idle,) = p._idle
    await asyncio.sleep(0.5)  # the pool's own timer, not a later request, closes it
    assert p._idle == []
    assert idle.sock.fileno() == -1
    await p.aclose()


async def test_close_idle_closes_at_once_and_the_pool_stays_usable(quick_closing: SimulatorServer) -> None:
    p = pool(quick_closing, keepalive_expiry=5)
    assert await get_version(p) == 200
    (idle,) = p._idle
    p.close_idle()
    assert p._idle == [] and idle.sock.fileno() == -1
    assert p._sweeper is None, "no timer left behind for a connection already closed"
    assert await get_version(p) == 200, "a new connection for the next request"
    (fresh,) = p._idle
    assert fresh is not idle
    await p.aclose()


async def test_a_connection_the_server_closed_is_not_reused(quick_closing: SimulatorServer) -> None:
    p = pool(quick_closing, keepalive_expiry=5)  # longer than the server's 0.2 s
    assert await get_version(p) == 200
    (first,) = p._idle
    await asyncio.sleep(0.6)
    before = quick_closing.counters.count("/api2/json/version")
    assert await get_version(p) == 200
    assert quick_closing.counters.count("/api2/json/version") == before + 1, "no request was lost and retried"
    assert first.sock.fileno() == -1
    await p.aclose()


async def test_an_answer_abandoned_half_way_closes_its_connection(quick_closing: SimulatorServer) -> None:
    p = pool(quick_closing, keepalive_expiry=5)
    response = await p.request("GET", "/api2/json/version", AUTH)
    await response.aclose()  # body never read
    assert p._idle == []
    await p.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8006",
        "https://user:pw@127.0.0.1:8006",
        "https://127.0.0.1:0",
        "https://127.0.0.1:8006/?x=1",
        "https://127.0.0.1:8006/#top",
    ],
)
def test_only_https_urls_with_a_host_and_port_make_a_pool(url: str) -> None:
    with pytest.raises(ValueError):
        wire.Pool(url, ssl_context(TrustConfig()), (), connect_timeout=1, read_timeout=1, keepalive_expiry=1)


async def test_an_endpoint_behind_a_path_prefix_is_asked_under_that_prefix(shared_cert_dir: Path) -> None:
    """An endpoint URL may carry a path (an API behind a path-routing reverse proxy): every request goes below it."""
    config = SimulatorConfig(
        nodes=(NodeConfig(name="pve1"),),
        users=(UserConfig(userid="root@pam", password=PASSWORD),),
        tokens=(TokenConfig(tokenid="root@pam!ci", secret=SECRET, sys_audit=True),),
        cert_dir=shared_cert_dir,
        cluster_name="lab",
        virtual_clusters=3,
    )
    async with SimulatorServer(config) as sim:
        creds = TokenCredentials("root@pam!ci", SECRET)
        async with ProxmoxClient(
            f"{sim.url}/vc/2/", credentials=creds, trust=TrustConfig(ca_bundle=sim.ca_pem)
        ) as client:
            status = await client.cluster_status()
        assert any(entry.name == "lab-2" for entry in status), "virtual cluster 2 answered"
        arrivals = sim.counters.virtual_cluster_arrivals()
        assert {k: len(v) for k, v in arrivals.items()} == {2: 1}


class Recording(wire.Pool):
    """A pool that records which check each of its TLS handshakes was made for: "chain" or "fingerprint"."""

    def __init__(self, sim: SimulatorServer, trust: TrustConfig) -> None:
        super().__init__(
            sim.url, ssl_context(trust), trust.fingerprints, connect_timeout=5, read_timeout=5, keepalive_expiry=5
        )
        self.handshakes: list[str] = []

    async def _handshake(self, sock: socket.socket, context: ssl.SSLContext) -> wire._Connection:
        self.handshakes.append("chain" if context is self.ssl_context else "fingerprint")
        return await super()._handshake(sock, context)

    async def new_connection(self) -> None:
        """One request on a new connection."""
        self.close_idle()
        self.handshakes.clear()
        assert await get_version(self) == 200


async def test_once_a_pinned_fingerprint_decided_new_connections_take_one_handshake(
    quick_closing: SimulatorServer,
) -> None:
    """A self-signed certificate pinned by its fingerprint (the usual PVE setup): the chain check fails once, then
    each new connection goes straight to the fingerprint, not through a failing handshake first."""
    p = Recording(quick_closing, TrustConfig.build(fingerprints=[quick_closing.presented_fingerprint("pve1")]))
    await p.new_connection()
    assert p.handshakes == ["chain", "fingerprint"]
    for _ in range(2):
        await p.new_connection()
        assert p.handshakes == ["fingerprint"]
    await p.aclose()


async def test_a_certificate_no_longer_pinned_is_still_accepted_by_the_chain_check(
    quick_closing: SimulatorServer,
) -> None:
    """Asking the fingerprint first changes no verdict: when the pinned certificate is replaced by one the CA
    signed, the chain check still accepts it, and is asked first again."""
    quick_closing.node_faults("pve1").update({"swap_certificate": True})
    pinned = quick_closing.presented_fingerprint("pve1")
    p = Recording(quick_closing, TrustConfig.build(ca_bundle=quick_closing.ca_pem, fingerprints=[pinned]))
    await p.new_connection()
    assert p.handshakes == ["chain", "fingerprint"]
    quick_closing.node_faults("pve1").update({"swap_certificate": False})  # back to the CA-signed pve-ssl.pem
    await p.new_connection()
    assert p.handshakes == ["fingerprint", "chain"]
    await p.new_connection()
    assert p.handshakes == ["chain"]
    await p.aclose()


async def test_a_certificate_neither_pinned_nor_trusted_fails_after_two_handshakes(
    quick_closing: SimulatorServer,
) -> None:
    quick_closing.node_faults("pve1").update({"swap_certificate": True})
    p = Recording(quick_closing, TrustConfig.build(fingerprints=[quick_closing.presented_fingerprint("pve1")]))
    await p.new_connection()
    quick_closing.node_faults("pve1").update({"swap_certificate": False})
    presented = quick_closing.presented_fingerprint("pve1")  # signed by the cluster CA, which is not trusted here
    p.close_idle()
    p.handshakes.clear()
    with pytest.raises(wire.ConnectFailed) as info:
        await get_version(p)
    assert isinstance(info.value.__cause__, wire.FingerprintMismatch)
    assert presented in str(info.value.__cause__)
    assert p.handshakes == ["fingerprint", "chain"], "the fingerprint presented is known from the first one"
    assert quick_closing.counters.total == 1, "nothing was sent over a connection that did not pass"
    await p.aclose()
