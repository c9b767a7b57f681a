"""The controller's tests: one ProxmoxCluster (``KEY``) driven through FakeKube against a simulated two-node
cluster over real HTTPS on loopback."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxmox_operator.controller.ports import Key
from pve_simulator import NodeConfig, SimulatorConfig, SimulatorServer, TokenConfig, UserConfig

SECRET = str(uuid.uuid4())
#: A canary: it must never appear in a status, an Event or a metric.
PASSWORD = f"canary-pw-{uuid.uuid4().hex[:12]}"
KEY = Key("team-a", "lab")


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("controller-pve-certs")


@pytest.fixture
async def sim(cert_dir: Path) -> AsyncIterator[SimulatorServer]:
    """Nodes pve1 and pve2 of cluster "lab"; root@pam has PASSWORD, the token root@pam!ci SECRET and Sys.Audit."""
    config = SimulatorConfig(
        cluster_name="lab",
        nodes=(NodeConfig(name="pve1"), NodeConfig(name="pve2")),
        users=(UserConfig(userid="root@pam", password=PASSWORD),),
        tokens=(TokenConfig(tokenid="root@pam!ci", secret=SECRET, privsep=True, sys_audit=True),),
        auth_fail_delay=0.05,
        cert_dir=cert_dir,
    )
    async with SimulatorServer(config) as server:
        yield server


def body(
    sim: SimulatorServer, status: dict[str, Any] | None = None, generation: int = 1, *, secret: str = "token"
) -> dict[str, Any]:
    """KEY's ProxmoxCluster for ``sim``'s first node, trusting its CA, with credentials from Secret ``secret``."""
    return {
        "metadata": {"namespace": KEY.namespace, "name": KEY.name, "generation": generation},
        "spec": {"endpoint": sim.url, "credentialsRef": {"name": secret}, "tls": {"caBundle": sim.ca_pem}},
        "status": status or {},
    }
