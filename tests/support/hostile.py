"""A hostile HTTPS server on loopback: answers that look like Proxmox VE, or bombs, per path.

    async with HostileServer() as server:                  # in async tests
        server.set("/api2/json/version", gzip_bomb(1 << 30))
        ... ProxmoxClient(server.url, trust=TrustConfig(ca_bundle=server.ca_pem), ...)

    server = HostileServer("127.0.0.9"); server.start()    # in sync tests: its own loop in a daemon thread
    ...; server.stop()

It makes its own CA and a certificate for its host (or presents a given ``(cert_pem, key_pem)`` pair), records
every request it reads as ``(method, target, headers)`` in :attr:`HostileServer.requests`, and counts TCP
connections and completed TLS handshakes. Behaviours are per path (the request target without its query), may
be changed at any time from any thread, and stream their bodies: nothing large is ever held in memory, and one
client receiving a huge body does not hold up the others. Unknown paths get PVE's 501.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import tempfile
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from tests.support.certs import Authority

Behaviour = Callable[[asyncio.StreamWriter], Awaitable[None]]
PVE_VERSION = {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}
_PREFIX = b'{"data": {"version": "8.4.1", "release": "8.4"}'  # + padding + "}": valid JSON of any size
_SLICE = 64 << 10


# --- behaviours --------------------------------------------------------------------------------------------


async def _send(writer: asyncio.StreamWriter, code: int, headers: dict[str, str], parts: Iterable[bytes]) -> None:
    """Write a response; without a Content-Length in ``headers`` the body goes out chunked, part by part."""
    chunked = "Content-Length" not in headers
    if chunked:
        headers = {**headers, "Transfer-Encoding": "chunked"}
    reason = HTTPStatus(code).phrase if code in set(HTTPStatus) else "Unknown"
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Content-Type": "application/json", **headers}.items())
    writer.write(f"HTTP/1.1 {code} {reason}\r\n{head}\r\n".encode("latin-1"))
    for part in parts:
        if writer.is_closing():
            raise ConnectionResetError("the client went away")
        if part:
            writer.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
            await writer.drain()  # waits while the client does not read: never buffers a huge body
        else:
            await asyncio.sleep(0)  # a compressor swallowing input: let the other connections be served
    writer.write(b"0\r\n\r\n" if chunked else b"")
    await writer.drain()


def json_data(data: Any, *, gzip_encoded: bool = False, code: int = 200) -> Behaviour:
    """A normal ``{"data": ...}`` answer, optionally gzip-compressed (``Content-Encoding: gzip``)."""
    payload = json.dumps({"data": data}).encode()
    headers = {"Content-Encoding": "gzip"} if gzip_encoded else {}
    payload = gzip.compress(payload) if gzip_encoded else payload
    return lambda w: _send(w, code, {**headers, "Content-Length": str(len(payload))}, [payload])


def _padded(n_bytes: int) -> Iterable[bytes]:
    """Valid JSON of ``n_bytes``: a PVE-like ``/version`` answer padded with whitespace, generated lazily."""
    yield _PREFIX
    left, space = n_bytes - len(_PREFIX) - 1, b" " * _SLICE
    while left > 0:
        yield space[: min(left, _SLICE)]
        left -= _SLICE
    yield b"}"


def huge_body(n_bytes: int, *, content_length: bool = False) -> Behaviour:
    """``n_bytes`` of valid JSON, streamed (chunked unless ``content_length``)."""
    headers = {"Content-Length": str(n_bytes)} if content_length else {}
    return lambda w: _send(w, 200, headers, _padded(n_bytes))


def _compressed(parts: Iterable[bytes]) -> Iterable[bytes]:
    """gzip, sent in pieces of 64 KiB (each expanding to ~64 MB): as much as one network read may bring."""
    z, pending = zlib.compressobj(9, zlib.DEFLATED, 31), b""  # 31: the gzip format
    for part in parts:
        pending += z.compress(part)
        yield pending if len(pending) >= _SLICE else b""
        pending = pending if len(pending) < _SLICE else b""
    yield pending + z.flush()


def gzip_bomb(expanded_bytes: int) -> Behaviour:
    """gzip of ``expanded_bytes`` of valid JSON (~1000:1), compressed while sent: never held in memory."""
    return lambda w: _send(w, 200, {"Content-Encoding": "gzip"}, _compressed(_padded(expanded_bytes)))


def deep_json(depth: int) -> Behaviour:
    """``{"data": [[[...]]]}`` with ``depth`` nested arrays."""
    payload = b'{"data": ' + b"[" * depth + b"]" * depth + b"}"
    return lambda w: _send(w, 200, {"Content-Length": str(len(payload))}, [payload])


def bad_gzip() -> Behaviour:
    """``Content-Encoding: gzip`` on a body that is plain JSON, not gzip."""
    payload = json.dumps({"data": PVE_VERSION}).encode()
    return lambda w: _send(w, 200, {"Content-Encoding": "gzip", "Content-Length": str(len(payload))}, [payload])


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b'{"data": null}') -> Behaviour:
    """Any status with any headers (e.g. ``status(429, {"Retry-After": "9" * 400})``)."""
    return lambda w: _send(w, code, {**(headers or {}), "Content-Length": str(len(body))}, [body])


# --- the server --------------------------------------------------------------------------------------------


class HostileServer:
    """An HTTPS server on ``host`` (a free port), with a behaviour per path. See the module docstring."""

    def __init__(self, host: str = "127.0.0.1", cert: tuple[bytes | str, bytes | str] | None = None) -> None:
        self.host = host
        self._ca: Authority | None = None
        if cert is None:
            self._ca = Authority()
            cert = self._ca.issue(host)
        cert_pem, key_pem = cert
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
            cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            for path, pem in ((cert_file, cert_pem), (key_file, key_pem)):
                path.write_bytes(pem.encode() if isinstance(pem, str) else pem)
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.load_cert_chain(cert_file, key_file)
        self._lock = threading.Lock()
        self._behaviours: dict[str, Behaviour] = {}
        self._requests: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0  # TCP connections accepted
        self.handshakes = 0  # TLS handshakes completed
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def ca_pem(self) -> str:
        if self._ca is None:
            raise RuntimeError("this server presents a certificate it was given: its CA is the giver's")
        return self._ca.pem

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """``(method, target, headers)`` of every request read so far (a copy)."""
        with self._lock:
            return list(self._requests)

    def set(self, path: str, behaviour: Behaviour) -> None:
        """Answer requests for ``path`` (e.g. ``/api2/json/version``) with ``behaviour`` from now on."""
        with self._lock:
            self._behaviours[path] = behaviour

    async def __aenter__(self) -> HostileServer:
        def accepted() -> asyncio.StreamReaderProtocol:  # called on TCP accept, before the TLS handshake
            with self._lock:
                self.connections += 1
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=_SLICE), self._serve)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(accepted, self.host, self.port, ssl=self._ssl, ssl_handshake_timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.transport.abort()
            if self._handlers:  # they end at their next write: let them, rather than leave them to be cancelled
                await asyncio.wait(self._handlers, timeout=10)
            await self._server.wait_closed()

    def start(self) -> HostileServer:
        """Serve from a daemon thread with its own event loop (for synchronous tests)."""
        ready = threading.Event()

        async def main() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            async with self:
                ready.set()
                await self._stopping.wait()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="hostile-server", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the hostile server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(writer)
        self._handlers.add(task)
        with self._lock:
            self.handshakes += 1
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent garbage
        finally:
            self._open.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        line, *fields = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
        await reader.readexactly(min(int(headers.get("content-length", "0")), 1 << 20))
        with self._lock:
            self._requests.append((method, target, headers))
            behaviour = self._behaviours.get(target.split("?", 1)[0])
        if behaviour is None:
            await status(501, body=b'{"data": null}')(writer)
        else:
            await behaviour(writer)
        return headers.get("connection", "").lower() != "close"
