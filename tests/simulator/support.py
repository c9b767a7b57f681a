"""Shared constants and helpers of the PVE simulator tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pve_simulator import (
    NodeConfig,
    SimulatorConfig,
    SimulatorServer,
    TokenConfig,
    UserConfig,
    client_ssl_context,
)

API = "/api2/json"
# Canary secrets: tests assert they never show up in logs or output.
ROOT_PASSWORD = "Canary-root-pw-7f3a9"
ALICE_PASSWORD = "Canary-alice-pw-2b8c1"
BOB_PASSWORD = "Canary-bob-pw-5d4e2"
CAROL_PASSWORD = "Canary-carol-pw-9a1f0"
CAROL_TOTP = "JBSWY3DPEHPK3PXP"
CI_SECRET = "0b7cc6a4-3d2e-4f5a-9b8c-1d2e3f4a5b6c"
FULL_SECRET = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
MON_SECRET = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
SECRETS = (ROOT_PASSWORD, ALICE_PASSWORD, BOB_PASSWORD, CAROL_PASSWORD, CAROL_TOTP, CI_SECRET, FULL_SECRET, MON_SECRET)
FAST_DELAY = 0.05

#: ``start_sim`` fixture type: ``async with start_sim(**overrides) as sim``.
StartSim = Callable[..., contextlib.AbstractAsyncContextManager[SimulatorServer]]


def make_config(cert_dir: Path | None, **overrides: Any) -> SimulatorConfig:
    """A three-node 8.4.1 cluster with a few users and tokens; ``overrides`` replace fields."""
    data: dict[str, Any] = {
        "pve_version": "8.4.1",
        "cluster_name": "demo",
        "nodes": [NodeConfig(name="pve1"), NodeConfig(name="pve2"), NodeConfig(name="pve3")],
        "users": [
            UserConfig(userid="root@pam", password=ROOT_PASSWORD),
            UserConfig(userid="alice@pve", password=ALICE_PASSWORD, sys_audit=True),
            UserConfig(userid="bob@pve", password=BOB_PASSWORD),
            UserConfig(userid="carol@pve", password=CAROL_PASSWORD, tfa=True, totp_secret=CAROL_TOTP),
        ],
        "tokens": [
            TokenConfig(tokenid="root@pam!ci", secret=CI_SECRET),
            TokenConfig(tokenid="root@pam!full", secret=FULL_SECRET, privsep=False),
            TokenConfig(tokenid="alice@pve!mon", secret=MON_SECRET, sys_audit=True),
        ],
        "auth_fail_delay": FAST_DELAY,
        "cert_dir": cert_dir,
    }
    data.update(overrides)
    return SimulatorConfig(**data)


def client_for(server: SimulatorServer, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTPS client that trusts only the simulator's CA, based at ``/api2/json``."""
    return httpx.AsyncClient(base_url=server.url + API, verify=client_ssl_context(server.ca_path), **kwargs)


def node_client(server: SimulatorServer, node: str, **kwargs: Any) -> httpx.AsyncClient:
    """Like :func:`client_for`, for one node's own listener (``https://127.0.0.N:<port>/api2/json``)."""
    return httpx.AsyncClient(base_url=server.node_url(node) + API, verify=client_ssl_context(server.ca_path), **kwargs)


def node_host(server: SimulatorServer, node: str) -> str:
    """The address node ``node`` listens on."""
    return server.cluster.node(node).ip


async def wait_for(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``deadline`` seconds, a generous bound)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def login(http: httpx.AsyncClient, username: str = "root@pam", password: str = ROOT_PASSWORD) -> dict[str, Any]:
    """Log in (form-encoded) and return ``data``; fails the test on anything but 200."""
    response = await http.post("/access/ticket", data={"username": username, "password": password})
    assert response.status_code == 200, (response.status_code, response.reason_phrase, response.text)
    data: dict[str, Any] = response.json()["data"]
    return data


def cookie(ticket: str) -> dict[str, str]:
    """``Cookie: PVEAuthCookie=<ticket>`` sent raw (base64 ``+``/``/``/``=`` unescaped)."""
    return {"Cookie": f"PVEAuthCookie={ticket}"}


def token_header(tokenid: str, secret: str) -> dict[str, str]:
    """``Authorization: PVEAPIToken=<tokenid>=<secret>``."""
    return {"Authorization": f"PVEAPIToken={tokenid}={secret}"}


def ssl_context_without_ca() -> ssl.SSLContext:
    """A default verifying context (system trust only)."""
    return ssl.create_default_context()
