"""Fixtures for the security tests of the client: one simulated three-node cluster, hostile servers, TLS caches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from proxmox_operator.proxmox import TokenCredentials
from proxmox_operator.proxmox import tls as tls_module
from pve_simulator import NodeConfig, SimulatorConfig, SimulatorServer, TokenConfig, UserConfig

SECRET = str(uuid.uuid4())
PASSWORD = f"canary-{uuid.uuid4().hex[:12]}"
TOKEN = TokenCredentials("root@pam!ci", SECRET)


@pytest.fixture(scope="session")
def shared_cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-pve-certs")


@pytest.fixture
async def cluster(shared_cert_dir: Path) -> AsyncIterator[SimulatorServer]:
    """Nodes pve1, pve2, pve3 on 127.0.0.1, .2, .3 (one port), each with a certificate from the cluster CA."""
    config = SimulatorConfig(
        cluster_name="lab",
        nodes=tuple(NodeConfig(name=n) for n in ("pve1", "pve2", "pve3")),
        users=(UserConfig(userid="root@pam", password=PASSWORD),),
        tokens=(TokenConfig(tokenid="root@pam!ci", secret=SECRET, sys_audit=True),),
        cert_dir=shared_cert_dir,
    )
    async with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def fresh_tls_contexts() -> Iterator[None]:
    """SSL contexts are cached per trust configuration: build them anew (environment changes), and drop the
    ones built here afterwards."""
    tls_module._build.cache_clear()
    tls_module.unverified_context.cache_clear()
    yield
    tls_module._build.cache_clear()
    tls_module.unverified_context.cache_clear()
