"""Fixtures for the PVE simulator tests: one CA per session, real HTTPS clients that trust it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pve_simulator import Clock, SimulatorServer
from pve_simulator.certs import ensure_ca
from tests.simulator.support import StartSim, client_for, make_config


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One certificate directory (and so one RSA 4096 CA) for the whole session."""
    path = tmp_path_factory.mktemp("pve-certs")
    ensure_ca(path)
    return path


@pytest.fixture
def start_sim(cert_dir: Path) -> StartSim:
    """``async with start_sim(pve_version="7.4-3", clock=...) as sim``: a simulator with overrides."""

    @contextlib.asynccontextmanager
    async def start(*, clock: Clock | None = None, **overrides: Any) -> AsyncIterator[SimulatorServer]:
        config = make_config(overrides.pop("cert_dir", cert_dir), **overrides)
        async with SimulatorServer(config, clock=clock) as server:
            yield server

    return start


@pytest.fixture
async def sim(start_sim: StartSim) -> AsyncIterator[SimulatorServer]:
    """The default simulator (8.4.1, cluster 'demo', pve1..pve3)."""
    async with start_sim() as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """Client for :func:`sim`."""
    async with client_for(sim) as http:
        yield http
