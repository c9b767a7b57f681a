"""Several endpoints, fingerprints, retries and limits, over real HTTPS against a three-node simulated cluster.

Each simulated node listens on its own loopback address with its own certificate. What the client did is
counted at the simulator; no test asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxmox_operator.proxmox import (
    Limits,
    PasswordCredentials,
    ProxmoxClient,
    Timeouts,
    TokenCredentials,
    TrustConfig,
    endpoint_for_ip,
    errors,
)
from proxmox_operator.proxmox.client import _RateLimiter
from proxmox_operator.proxmox.tls import ssl_context
from pve_simulator import NodeConfig, SimulatorConfig, SimulatorServer, TokenConfig, UserConfig

PASSWORD = f"canary-{uuid.uuid4().hex[:12]}"
SECRET = str(uuid.uuid4())
TOKEN = TokenCredentials("root@pam!ci", SECRET)
NODES = ("pve1", "pve2", "pve3")


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("connectivity-pve-certs")


@pytest.fixture
async def sim(cert_dir: Path) -> AsyncIterator[SimulatorServer]:
    config = SimulatorConfig(
        cluster_name="lab",
        nodes=tuple(NodeConfig(name=n) for n in NODES),
        users=(UserConfig(userid="root@pam", password=PASSWORD),),
        tokens=(TokenConfig(tokenid="root@pam!ci", secret=SECRET, sys_audit=True),),
        auth_fail_delay=0.05,
        cert_dir=cert_dir,
    )
    async with SimulatorServer(config) as server:
        yield server


def urls(sim: SimulatorServer, *names: str) -> list[str]:
    return [sim.node_url(n) for n in names]


def requests_to(sim: SimulatorServer, node: str) -> int:
    return sim.node_counters(node).total


def client(sim: SimulatorServer, endpoints: list[str], **kw: object) -> ProxmoxClient:
    kw.setdefault("trust", TrustConfig(ca_bundle=sim.ca_pem))
    return ProxmoxClient(endpoints, credentials=kw.pop("credentials", TOKEN), **kw)  # type: ignore[arg-type]


async def test_every_node_listens_on_its_own_loopback_address(sim: SimulatorServer) -> None:
    assert [u.split("//")[1].split(":")[0] for u in urls(sim, *NODES)] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert len({u.rsplit(":", 1)[1] for u in urls(sim, *NODES)}) == 1, "one port on every node, like 8006"


async def test_failover_on_a_stopped_node_and_return_when_it_is_back(sim: SimulatorServer) -> None:
    async with client(sim, urls(sim, "pve1", "pve2")) as c:
        await c.version()
        assert c.active_endpoint == sim.node_url("pve1")
        await sim.stop_node_listener("pve1")
        c.begin_round()
        await c.version()
        assert c.active_endpoint == sim.node_url("pve2")
        await sim.start_node_listener("pve1")
        c.begin_round()  # each probe starts at the preferred endpoint again
        await c.version()
        assert c.active_endpoint == sim.node_url("pve1")


async def test_no_failover_on_an_http_error(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"force_status": 500})
    async with client(sim, urls(sim, "pve1", "pve2")) as c:
        with pytest.raises(errors.ServerError, match="500"):
            await c.version()
    assert requests_to(sim, "pve2") == 0, "a node that answered is not bypassed"


async def test_discovered_endpoints_are_used_after_the_configured_ones(sim: SimulatorServer) -> None:
    status = None
    async with client(sim, urls(sim, "pve1")) as c:
        status = await c.cluster_status()
        ips = [e.ip for e in status if e.type == "node" and e.ip]
        discovered = [endpoint_for_ip(c.endpoint, ip) for ip in ips]
        assert discovered == urls(sim, *NODES)
        c.set_discovered(discovered[1:])
        await sim.stop_node_listener("pve1")
        c.begin_round()
        await c.version()
        assert c.active_endpoint == sim.node_url("pve2")


async def test_a_ticket_from_one_node_is_used_on_the_next(sim: SimulatorServer) -> None:
    async with client(sim, urls(sim, "pve1", "pve2"), credentials=PasswordCredentials("root@pam", PASSWORD)) as c:
        await c.version()
        await sim.stop_node_listener("pve1")
        c.begin_round()
        await c.nodes()
    assert sim.counters.login_attempts == 1


async def test_all_endpoints_down_names_them_all(sim: SimulatorServer) -> None:
    for node in ("pve1", "pve2"):
        await sim.stop_node_listener(node)
    async with client(sim, urls(sim, "pve1", "pve2")) as c:
        with pytest.raises(errors.Unreachable) as info:
            await c.version()
    assert sim.node_url("pve1") in str(info.value) and sim.node_url("pve2") in str(info.value)


async def test_a_pinned_fingerprint_is_accepted_without_a_ca(sim: SimulatorServer) -> None:
    trust = TrustConfig.build(fingerprints=[sim.presented_fingerprint("pve1").lower()])
    async with client(sim, urls(sim, "pve1"), trust=trust) as c:
        assert (await c.version()).version


async def test_a_wrong_fingerprint_sends_no_credentials(sim: SimulatorServer) -> None:
    trust = TrustConfig.build(fingerprints=[":".join(["AB"] * 32)])
    creds = PasswordCredentials("root@pam", PASSWORD)
    async with client(sim, urls(sim, "pve1"), trust=trust, credentials=creds) as c:
        with pytest.raises(errors.TLSError, match=r"not in spec\.tls\.fingerprints") as info:
            await c.version()
    assert sim.presented_fingerprint("pve1") in str(info.value)
    assert sim.counters.total == 0 and sim.counters.login_attempts == 0, "nothing reached the API"


async def test_a_swapped_certificate_fails_over_and_can_be_pinned(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"swap_certificate": True})
    async with client(sim, urls(sim, "pve1", "pve2")) as c:
        await c.version()  # pve1's TLS handshake fails: that is a transport error, so pve2 answers
        assert c.active_endpoint == sim.node_url("pve2")
    assert requests_to(sim, "pve1") == 0
    pinned = TrustConfig.build(ca_bundle=sim.ca_pem, fingerprints=[sim.presented_fingerprint("pve1")])
    async with client(sim, urls(sim, "pve1"), trust=pinned) as c:
        await c.version()
        assert c.active_endpoint == sim.node_url("pve1")


async def test_a_reset_get_is_retried_once_on_the_same_node(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"reset": 1})
    async with client(sim, urls(sim, "pve1", "pve2")) as c:
        await c.version()
        assert c.active_endpoint == sim.node_url("pve1")
    assert requests_to(sim, "pve1") == 2 and requests_to(sim, "pve2") == 0


async def test_a_node_that_keeps_resetting_is_failed_over(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"reset": True})
    async with client(sim, urls(sim, "pve1", "pve2")) as c:
        await c.version()
        assert c.active_endpoint == sim.node_url("pve2")
    assert requests_to(sim, "pve1") == 2, "one retry, then the next node"


async def test_a_hanging_node_is_a_timeout(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"hang": True})
    async with client(sim, urls(sim, "pve1"), timeouts=Timeouts(connect=2, read=0.5, total=10)) as c:
        with pytest.raises(errors.Timeout, match="waiting"):
            await c.version()


async def test_a_short_retry_after_is_honoured_once(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"force_status": 503, "retry_after": 1, "force_count": 1})
    async with client(sim, urls(sim, "pve1")) as c:
        assert (await c.version()).version
    assert sim.node_counters("pve1").count("/api2/json/version") == 2


async def test_a_long_retry_after_is_reported_with_its_delay(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"force_status": 429, "retry_after": 120})
    async with client(sim, urls(sim, "pve1")) as c:
        with pytest.raises(errors.ServerError, match="retry after 120") as info:
            await c.version()
    assert info.value.retry_after == 120
    assert sim.node_counters("pve1").count("/api2/json/version") == 1


async def test_concurrency_limit_holds_under_a_burst(sim: SimulatorServer) -> None:
    sim.node_faults("pve1").update({"latency": 0.2})
    async with client(sim, urls(sim, "pve1"), limits=Limits(max_concurrent=2, requests_per_second=1000)) as c:
        await asyncio.gather(*(c.version() for _ in range(10)))
    assert sim.node_counters("pve1").max_in_flight == 2


async def test_rate_limit_holds_under_a_burst(sim: SimulatorServer) -> None:
    limits = Limits(max_concurrent=8, requests_per_second=5, burst=4)
    async with client(sim, urls(sim, "pve1"), limits=limits) as c:
        await asyncio.gather(*(c.version() for _ in range(20)))
    counters = sim.node_counters("pve1")
    assert counters.total == 20
    # 4 at once, then one every 0.2 s: any one-second window holds at most 4 + 5 starts, one more when an arrival
    # is a little late (arrivals are counted at the server); without the limit all 20 arrive within milliseconds.
    assert counters.max_requests_in_any_window(1.0) <= 10


def test_the_rate_limiter_lets_a_burst_start_at_once_and_spaces_the_rest() -> None:
    pacing = _RateLimiter(rate=10, burst=4)
    assert [pacing.reserve(100.0) for _ in range(4)] == [0, 0, 0, 0]  # a registration's four requests
    assert [round(pacing.reserve(100.0), 6) for _ in range(3)] == [0.1, 0.2, 0.3]  # then 10 per second
    # Reserved starts are kept: a request asking later waits only for what is left of its turn.
    assert round(pacing.reserve(100.25), 6) == 0.15
    # After a quiet spell the bucket is full again: another burst starts at once.
    assert [pacing.reserve(200.0) for _ in range(4)] == [0, 0, 0, 0]
    assert round(pacing.reserve(200.0), 6) == 0.1


def test_a_burst_of_one_spaces_every_request() -> None:
    pacing = _RateLimiter(rate=5)
    assert [round(pacing.reserve(0.0), 6) for _ in range(3)] == [0, 0.2, 0.4]


def test_the_burst_is_never_more_than_a_seconds_worth() -> None:
    """requestsPerSecond: 2 means two at once at most, whatever the burst."""
    pacing = _RateLimiter(rate=2, burst=4)
    assert [round(pacing.reserve(0.0), 6) for _ in range(4)] == [0, 0, 0.5, 1.0]


def test_tls_1_2_is_the_minimum() -> None:
    for trust in (TrustConfig(), TrustConfig(insecure_skip_verify=True)):
        assert ssl_context(trust).minimum_version >= ssl.TLSVersion.TLSv1_2
