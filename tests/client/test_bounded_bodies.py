"""Answers are read within limits: size after decompression, nesting, encodings; large ones parsed off the loop.

A hostile server on loopback sends the bodies; every "too large" body is valid JSON, so without the limits the
call would succeed (after allocating the whole thing). Memory is measured with tracemalloc in this process.
"""

from __future__ import annotations

import gzip
import json
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from proxmox_operator.proxmox import MAX_BODY_BYTES, MAX_JSON_DEPTH, ProxmoxClient, TrustConfig, body, errors
from tests.client.conftest import TOKEN
from tests.support.hostile import (
    PVE_VERSION,
    Behaviour,
    HostileServer,
    bad_gzip,
    deep_json,
    gzip_bomb,
    huge_body,
    json_data,
    status,
)

MEMORY_BUDGET = 20 << 20


@pytest.fixture
async def server() -> AsyncIterator[HostileServer]:
    async with HostileServer() as s:
        yield s


def client(server: HostileServer) -> ProxmoxClient:
    return ProxmoxClient(server.url, credentials=TOKEN, trust=TrustConfig(ca_bundle=server.ca_pem))


async def peak_growth(work: Awaitable[Any]) -> tuple[int, BaseException | None]:
    """Peak Python memory growth (bytes) while ``work`` runs, and what it raised."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        raised: BaseException | None = None
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - returned to the test, which checks its type
            raised = exc
        return tracemalloc.get_traced_memory()[1] - base, raised
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(gzip_bomb(1 << 30), id="gzip-bomb-1GiB"),
        pytest.param(huge_body(100 << 20), id="plain-100MB-chunked"),
        pytest.param(huge_body(100 << 20, content_length=True), id="plain-100MB-content-length"),
    ],
)
async def test_oversized_bodies_are_invalid_response_within_a_small_memory_budget(
    server: HostileServer, behaviour: Behaviour
) -> None:
    server.set("/api2/json/version", behaviour)
    async with client(server) as c:
        growth, raised = await peak_growth(c.version())
    assert isinstance(raised, errors.InvalidResponse), raised
    message = str(raised)
    assert server.url in message and "GET /version" in message and f"{MAX_BODY_BYTES:,} bytes" in message
    assert growth < MEMORY_BUDGET, f"peak memory grew by {growth / 1e6:.1f} MB"


async def test_a_compressed_answer_just_under_the_limit_is_read(server: HostileServer) -> None:
    server.set("/api2/json/version", gzip_bomb(MAX_BODY_BYTES - 1024))  # valid JSON, ~1000:1 compressed
    async with client(server) as c:
        assert (await c.version()).version == "8.4.1"


async def test_a_gzip_answer_is_decoded(server: HostileServer) -> None:
    server.set("/api2/json/version", json_data(PVE_VERSION, gzip_encoded=True))
    async with client(server) as c:
        assert (await c.version()).release == "8.4"
    accepted = server.requests[0][2]["accept-encoding"]
    assert {c.strip() for c in accepted.split(",")} == {"gzip", "deflate"}, "only what the client decodes itself"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 100, 10_000])  # + the {"data": ...} envelope
async def test_json_nested_too_deep_is_invalid_response(server: HostileServer, depth: int) -> None:
    server.set("/api2/json/deep", deep_json(depth))
    async with client(server) as c:
        with pytest.raises(errors.InvalidResponse, match=f"deeper than the limit of {MAX_JSON_DEPTH}") as info:
            await c.get("/deep")  # any shape is accepted here: only the depth can fail
    assert server.url in str(info.value)


async def test_json_nested_within_the_limit_is_read(server: HostileServer) -> None:
    server.set("/api2/json/deep", deep_json(MAX_JSON_DEPTH - 1))  # plus the {"data": ...} envelope
    async with client(server) as c:
        assert isinstance(await c.get("/deep"), list)


ANSWER = json.dumps({"data": PVE_VERSION}).encode()


@pytest.mark.parametrize(
    ("behaviour", "problem"),
    [
        pytest.param(bad_gzip(), "not valid compressed data", id="gzip-header-on-plain-json"),
        pytest.param(status(200, {"Content-Encoding": "gzip"}, gzip.compress(ANSWER)[:-12]), "truncated", id="cut"),
        pytest.param(
            status(200, {"Content-Encoding": "gzip"}, gzip.compress(ANSWER) + b"junk"), "after the end", id="trailer"
        ),
        pytest.param(status(200, {"Content-Encoding": "br"}, ANSWER), r"Content-Encoding \(br\)", id="unknown"),
        pytest.param(status(200, {"Content-Encoding": "gzip, gzip"}, ANSWER), "Content-Encoding", id="stacked"),
    ],
)
async def test_bodies_that_cannot_be_decoded_are_invalid_response(
    server: HostileServer, behaviour: Behaviour, problem: str
) -> None:
    server.set("/api2/json/version", behaviour)
    async with client(server) as c:
        with pytest.raises(errors.InvalidResponse, match=problem):
            await c.version()


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(zlib.compress(ANSWER), id="zlib-wrapped"),
        pytest.param(zlib.compress(ANSWER, wbits=-zlib.MAX_WBITS), id="raw"),
    ],
)
async def test_deflate_answers_are_decoded(server: HostileServer, encoded: bytes) -> None:
    server.set("/api2/json/version", status(200, {"Content-Encoding": "deflate"}, encoded))
    async with client(server) as c:
        assert (await c.version()).version == "8.4.1"


async def test_large_bodies_are_parsed_in_a_worker_thread(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[bool] = []
    load = body.load

    def spy(raw: bytes) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return load(raw)

    monkeypatch.setattr(body, "load", spy)
    server.set("/api2/json/version", json_data(PVE_VERSION))
    server.set("/api2/json/big", huge_body(body.THREAD_PARSE_ABOVE + 1))
    async with client(server) as c:
        await c.version()
        await c.get("/big")
    assert threads == [True, False], "small bodies on the event loop, large ones off it"
