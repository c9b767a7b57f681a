"""The Proxmox client against the PVE simulator over real HTTPS: auth, tickets, TLS, errors."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxmox_operator.proxmox import (
    PasswordCredentials,
    ProxmoxClient,
    Timeouts,
    TokenCredentials,
    TrustConfig,
    TrustConfigInvalid,
    errors,
)
from pve_simulator import ManualClock, NodeConfig, SimulatorConfig, SimulatorServer, TokenConfig, UserConfig
from tests.support.hostile import HostileServer, status

PASSWORD = f"canary-{uuid.uuid4().hex[:12]}"
TOKEN_SECRET = str(uuid.uuid4())


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-pve-certs")


def config(cert_dir: Path, **overrides: object) -> SimulatorConfig:
    base: dict[str, object] = {
        "pve_version": "8.4.1",
        "cluster_name": "lab",
        "nodes": (NodeConfig(name="pve1"), NodeConfig(name="pve2"), NodeConfig(name="pve3", online=False)),
        "users": (
            UserConfig(userid="root@pam", password=PASSWORD),
            UserConfig(userid="alice@pve", password=PASSWORD, tfa=True),
        ),
        "tokens": (TokenConfig(tokenid="root@pam!ci", secret=TOKEN_SECRET, privsep=True, sys_audit=True),),
        "auth_fail_delay": 0.05,
        "cert_dir": cert_dir,
    }
    base.update(overrides)
    return SimulatorConfig.model_validate(base)


@pytest.fixture
async def sim(cert_dir: Path) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(config(cert_dir)) as server:
        yield server


def client(sim: SimulatorServer, creds: object = None, **kw: object) -> ProxmoxClient:
    return ProxmoxClient(
        sim.url,
        credentials=creds or PasswordCredentials("root@pam", PASSWORD),  # type: ignore[arg-type]
        trust=TrustConfig(ca_bundle=sim.ca_pem),
        **kw,  # type: ignore[arg-type]
    )


async def test_password_login_reads_version_and_nodes_with_one_ticket(sim: SimulatorServer) -> None:
    async with client(sim) as c:
        version = await c.version()
        nodes = await c.nodes()
        for _ in range(3):
            await c.version()
    assert (version.version, version.release) == ("8.4.1", "8.4")
    assert [(n.node, n.status) for n in nodes] == [("pve1", "online"), ("pve2", "online"), ("pve3", "offline")]
    assert sim.counters.login_attempts == 1, "the ticket is reused for every read"


async def test_api_token_needs_no_login(sim: SimulatorServer) -> None:
    async with client(sim, TokenCredentials("root@pam!ci", TOKEN_SECRET)) as c:
        assert len(await c.nodes()) == 3
    assert sim.counters.login_attempts == 0


async def test_ticket_renewed_after_an_hour_with_the_ticket_as_password(cert_dir: Path) -> None:
    clock = ManualClock()
    async with SimulatorServer(config(cert_dir), clock=clock) as sim, client(sim, clock=clock.time) as c:
        await c.version()
        clock.advance(1800)
        await c.version()
        assert sim.counters.login_attempts == 1
        clock.advance(1900)  # 62 minutes old: renew
        await c.version()
        assert sim.counters.login_attempts == 2
        assert sim.counters.login_successes == 2
        assert sim.counters.login_failures == 0


async def test_expired_ticket_falls_back_to_the_password(cert_dir: Path) -> None:
    clock = ManualClock()
    async with SimulatorServer(config(cert_dir), clock=clock) as sim:
        async with client(sim, clock=clock.time) as c:
            await c.version()
            clock.advance(3 * 3600)  # the ticket is dead: renewal fails, the password works
            await c.version()
        assert sim.counters.login_successes == 2
        assert sim.counters.login_failures == 1


async def test_a_401_on_a_read_logs_in_again_once(cert_dir: Path) -> None:
    sim_clock, client_clock = ManualClock(), ManualClock()
    async with SimulatorServer(config(cert_dir), clock=sim_clock) as sim:
        async with client(sim, clock=client_clock.time) as c:
            await c.version()
            sim_clock.advance(3 * 3600)  # the server no longer accepts the ticket; the client cannot know
            await c.version()
        assert sim.counters.login_successes == 2


async def test_wrong_password_is_authentication_failed_without_the_password(sim: SimulatorServer) -> None:
    wrong = f"canary-wrong-{uuid.uuid4().hex[:8]}"
    async with client(sim, PasswordCredentials("root@pam", wrong)) as c:
        with pytest.raises(errors.AuthenticationFailed) as info:
            await c.version()
    message = str(info.value)
    assert "authentication failure" in message and sim.url in message and "root@pam" in message
    assert wrong not in message and wrong not in repr(info.value)
    assert sim.counters.login_attempts == 1, "bad credentials are not retried in a loop"


async def test_bad_token_is_authentication_failed(sim: SimulatorServer) -> None:
    async with client(sim, TokenCredentials("root@pam!ci", str(uuid.uuid4()))) as c:
        with pytest.raises(errors.AuthenticationFailed):
            await c.nodes()


async def test_tfa_user_gets_tfa_required(sim: SimulatorServer) -> None:
    async with client(sim, PasswordCredentials("alice@pve", PASSWORD)) as c:
        with pytest.raises(errors.TFARequired, match="API token"):
            await c.version()


async def test_untrusted_certificate_is_tls_error_and_no_credentials_are_sent(sim: SimulatorServer) -> None:
    c = ProxmoxClient(sim.url, credentials=PasswordCredentials("root@pam", PASSWORD), trust=TrustConfig())
    async with c:
        with pytest.raises(errors.TLSError, match="caBundle"):
            await c.version()
    assert sim.counters.total == 0


async def test_insecure_skip_verify_connects(sim: SimulatorServer) -> None:
    trust = TrustConfig(insecure_skip_verify=True)
    async with ProxmoxClient(sim.url, credentials=TokenCredentials("root@pam!ci", TOKEN_SECRET), trust=trust) as c:
        assert (await c.version()).version == "8.4.1"


def test_garbage_ca_bundle_is_rejected_before_connecting() -> None:
    bad = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    with pytest.raises(TrustConfigInvalid, match="CA bundle"):
        ProxmoxClient("https://127.0.0.1:1", credentials=TokenCredentials("a@b!c", "d"), trust=TrustConfig(bad))


def test_ssl_contexts_are_shared_per_trust_configuration() -> None:
    a = ProxmoxClient("https://127.0.0.1:1", credentials=TokenCredentials("a@b!c", "d"))
    b = ProxmoxClient("https://127.0.0.1:2", credentials=TokenCredentials("a@b!c", "e"))
    pool_a = a._endpoint(a.endpoint).pool
    pool_b = b._endpoint(b.endpoint).pool
    assert pool_a.ssl_context is pool_b.ssl_context


async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ProxmoxClient(f"https://127.0.0.1:{port}", credentials=TokenCredentials("a@b!c", "d")) as c:
        with pytest.raises(errors.Unreachable, match="Connection refused"):
            await c.version()


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, errors.ServerError), (595, errors.ServerError), (596, errors.ServerError), (501, errors.InvalidResponse)],
)
async def test_server_errors_are_typed(sim: SimulatorServer, status: int, error: type[Exception]) -> None:
    sim.faults.update({"force_status": status})
    async with client(sim, TokenCredentials("root@pam!ci", TOKEN_SECRET)) as c:
        with pytest.raises(error, match=str(status)):
            await c.version()


async def test_slow_server_is_timeout(sim: SimulatorServer) -> None:
    sim.faults.update({"latency": 2.0})
    async with client(
        sim, TokenCredentials("root@pam!ci", TOKEN_SECRET), timeouts=Timeouts(connect=1, read=0.3, total=5)
    ) as c:
        with pytest.raises(errors.Timeout):
            await c.version()


async def test_privilege_separated_token_without_acl_is_permission_denied(cert_dir: Path) -> None:
    cfg = config(cert_dir, tokens=(TokenConfig(tokenid="root@pam!bare", secret=TOKEN_SECRET, privsep=True),))
    async with SimulatorServer(cfg) as sim, client(sim, TokenCredentials("root@pam!bare", TOKEN_SECRET)) as c:
        assert (await c.version()).version  # /version needs no privilege
        with pytest.raises(errors.PermissionDenied, match=r"Sys\.Audit"):
            await c.get("/cluster/status")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>nginx default page</html>", "text/html"),
        (b'{"result": 1}', "application/json"),  # no data envelope
        (b'{"data": {"release": "8.4"}}', "application/json"),  # no version
        (b'{"data": "8.4.1"}', "application/json"),
    ],
)
async def test_answers_in_the_wrong_shape_are_invalid_response(body: bytes, content_type: str) -> None:
    """Something that is not a PVE API answers on the endpoint, over real TLS (no Kubernetes involved)."""
    async with HostileServer() as server:
        server.set("/api2/json/version", status(200, {"Content-Type": content_type}, body=body))
        creds = TokenCredentials("root@pam!ci", TOKEN_SECRET)
        async with ProxmoxClient(server.url, credentials=creds, trust=TrustConfig(ca_bundle=server.ca_pem)) as c:
            with pytest.raises(errors.InvalidResponse, match=r"127\.0\.0\.1"):
                await c.version()
