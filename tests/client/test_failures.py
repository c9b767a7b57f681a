"""Every failure is a typed error: unusable endpoint URLs fail over like refused connections; Retry-After is bounded."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import AsyncIterator

import pytest

from proxmox_operator.proxmox import ProxmoxClient, TrustConfig, body, errors, wire
from proxmox_operator.proxmox.failures import RETRY_AFTER_MAX, retry_after
from pve_simulator import SimulatorServer
from tests.client.conftest import TOKEN
from tests.support.hostile import PVE_VERSION, HostileServer, json_data, status


@pytest.fixture
async def server() -> AsyncIterator[HostileServer]:
    async with HostileServer() as s:
        yield s


async def test_an_endpoint_with_an_impossible_port_fails_over_to_the_next(cluster: SimulatorServer) -> None:
    endpoints = ["https://127.0.0.1:70000", cluster.node_url("pve2")]
    async with ProxmoxClient(endpoints, credentials=TOKEN, trust=TrustConfig(ca_bundle=cluster.ca_pem)) as c:
        assert (await c.version()).version
        assert c.active_endpoint == cluster.node_url("pve2")


@pytest.mark.parametrize("endpoint", ["https://127.0.0.1:70000", "https://127.0.0.1:port", "https://[::1"])
async def test_an_unusable_endpoint_alone_is_a_typed_error(endpoint: str) -> None:
    async with ProxmoxClient(endpoint, credentials=TOKEN) as c:
        with pytest.raises(errors.ProxmoxError) as info:
            await c.version()
    assert type(info.value) is not errors.ProxmoxError, "a specific subclass"
    assert endpoint in str(info.value) and TOKEN.secret not in str(info.value)


async def test_an_endless_retry_after_is_capped(server: HostileServer) -> None:
    server.set("/api2/json/version", status(429, {"Retry-After": "9" * 400}))
    async with ProxmoxClient(server.url, credentials=TOKEN, trust=TrustConfig(ca_bundle=server.ca_pem)) as c:
        with pytest.raises(errors.ServerError) as info:
            await c.version()
    assert info.value.retry_after == RETRY_AFTER_MAX == 3600


def headers(value: str) -> wire.Headers:
    return wire.Headers([(b"Retry-After", value.encode())])  # as read from the wire (UTF-8 here)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("9" * 400, 3600.0),  # float() of it is infinity
        ("9" * 5000, 3600.0),  # int() of it refuses (more than 4300 digits)
        ("86400", 3600.0),
        (email.utils.formatdate(time.time() + 10 * 86400, usegmt=True), 3600.0),
        (email.utils.formatdate(time.time() - 86400, usegmt=True), 0.0),
        ("²", None),  # str.isdigit() is true for it, float() is not
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_is_a_finite_delay_of_at_most_an_hour(value: str, expected: float | None) -> None:
    delay = retry_after(headers(value))
    assert delay == expected
    assert delay is None or (math.isfinite(delay) and 0 <= delay <= 3600)


async def test_an_unexpected_exception_becomes_a_typed_error_without_its_text(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(raw: bytes) -> object:
        raise RuntimeError(f"parser bug holding {TOKEN.secret}")

    monkeypatch.setattr(body, "load", broken)  # stands for any bug on the request path
    server.set("/api2/json/version", json_data(PVE_VERSION))
    async with ProxmoxClient(server.url, credentials=TOKEN, trust=TrustConfig(ca_bundle=server.ca_pem)) as c:
        with pytest.raises(errors.ProxmoxError, match="RuntimeError") as info:
            await c.version()
    assert server.url in str(info.value) and TOKEN.secret not in str(info.value)
