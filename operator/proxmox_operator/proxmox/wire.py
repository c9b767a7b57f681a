"""HTTP/1.1 over TLS to one Proxmox endpoint: asyncio sockets, :class:`ssl.MemoryBIO` and h11, with a small pool.

Why not httpx: a steady probe is one GET on a new TLS connection (pveproxy closes idle connections after 5 s, and
probes are a minute apart). Through httpx, httpcore and anyio that cost 5.0 ms of CPU on the benchmark machine;
through this module 1.6 ms, where a blocking socket needs 1.2 ms. At 1,000 clusters probed every 60 s that is the
difference between 8% and under 3% of a core. asyncio's own SSL transport was not used either: it allocates a
256 KiB read buffer per open connection (``asyncio.sslproto``), 250 MiB for a thousand clusters registering at once.

What it does, and no more than the client needs:

* **Connect**: TCP (the addresses of a host name in order) and the TLS handshake within the connect timeout. When
  the chain check fails and fingerprints are pinned, it connects again without chain verification and goes on only
  if the leaf certificate's SHA-256 fingerprint is listed, as Proxmox's own clients do. Once the fingerprint decided,
  the next new connection asks it first (one handshake, not a failing one and a second). Either way nothing of the
  request is sent before the certificate passed.
* **Requests and responses** with h11 (which bounds a response head to 16 KiB): the body is streamed to the caller
  (:mod:`.body` bounds and decodes it); a response read to its end returns its connection to the pool.
* **Keep-alive**: idle connections are reused for ``keepalive_expiry`` seconds, never after the server closed or sent
  anything unasked, and are closed by a timer once expired (so no socket lingers until the next probe).
* **Failures** are :class:`WireError` subclasses; the OS or TLS error is the ``__cause__``. No message contains
  request data.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11

from proxmox_operator.proxmox.tls import fingerprint_of, unverified_context

READ_SIZE = 64 << 10
_T = TypeVar("_T")


class WireError(Exception):
    """No complete HTTP answer came back."""


class ConnectFailed(WireError):
    """The TCP connection or the TLS handshake failed: nothing of the request was sent."""


class ConnectTimeout(WireError):
    """Connecting (TCP and TLS) took longer than the connect timeout."""


class ReadTimeout(WireError):
    """Sending the request or waiting for the answer took longer than the read timeout."""


class ConnectionLost(WireError):
    """The connection closed, was reset or broke HTTP/1.1 before the answer was complete."""


class FingerprintMismatch(ssl.SSLCertVerificationError):
    """The chain check failed and the certificate's fingerprint is not pinned either."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Headers:
    """Response headers, looked up case-insensitively; repeated headers are joined with ", "."""

    def __init__(self, raw: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        self._values: dict[str, str] = {}
        for name, value in raw:
            key = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            self._values[key] = f"{self._values[key]}, {text}" if key in self._values else text

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)


class Response:
    """An answer whose body is read with :meth:`aiter_raw` (as it arrives, still content-encoded)."""

    def __init__(
        self, status_code: int, reason_phrase: str, headers: Headers, body: AsyncIterator[bytes], conn: _Connection
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self._body = body
        self._conn = conn

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._body

    async def aclose(self) -> None:
        """Give the connection back when the answer was read to its end; close it otherwise."""
        self._conn.finish()


class _Connection:
    """One TLS connection: a non-blocking socket, an SSLObject between two memory BIOs, and an h11 state machine."""

    __slots__ = ("_pool", "http", "idle_since", "incoming", "outgoing", "sock", "tls")

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        self.sock = sock
        self.tls = tls
        self.incoming = incoming
        self.outgoing = outgoing
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self._pool: Pool | None = None

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _fill(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, READ_SIZE)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    async def tls_call(self, call: Callable[[], _T], *, flush: bool = True) -> _T:
        """Run an SSLObject operation, moving bytes between the socket and the BIOs until it completes. With
        ``flush=False`` what the operation wrote last stays in the outgoing BIO, to go with the next send."""
        while True:
            try:
                result = call()
            except ssl.SSLWantReadError:
                pass  # pumped below, outside the handler: a socket error must not carry this one as its context
            else:
                if flush:
                    await self._flush()
                return result
            await self._flush()
            await self._fill()

    async def send(self, *events: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        data = b"".join(self.http.send(event) or b"" for event in events)
        await self.tls_call(lambda: self.tls.write(data))

    async def receive(self, read_timeout: float) -> h11.Event:
        """The next h11 event of the answer, reading from the socket as needed (each read within the timeout)."""
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionLost(f"the answer is not valid HTTP/1.1 ({exc})") from None
            if event is h11.PAUSED:
                raise ConnectionLost("the server sent more than one answer")
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                async with asyncio.timeout(read_timeout):
                    data = await self.tls_call(lambda: self.tls.read(READ_SIZE))
            except TimeoutError:
                raise ReadTimeout("no answer within the read timeout") from None
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # closed, with or without a TLS close_notify
            except (OSError, ssl.SSLError) as exc:
                raise ConnectionLost("the connection failed while reading the answer") from exc
            self.http.receive_data(data)

    def reusable(self, now: float, expiry: float) -> bool:
        """Idle for less than ``expiry`` seconds, and the server has neither closed it nor sent anything since."""
        if now - self.idle_since >= expiry:
            return False
        try:
            return not self.sock.recv(1, socket.MSG_PEEK)  # b"" means closed; data would be unasked for
        except BlockingIOError:
            return True
        except OSError:
            return False

    def finish(self) -> None:
        """After an answer: back to the pool when both sides are done, else close."""
        pool, self._pool = self._pool, None
        if (
            pool is not None
            and self.http.our_state is h11.DONE
            and self.http.their_state is h11.DONE
            and self.http.trailing_data == (b"", False)
            and not self.incoming.pending
            and not self.tls.pending()
            and not pool.closed
        ):
            self.http.start_next_cycle()
            pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self._pool = None
        self.sock.close()


class Pool:
    """The connections to one endpoint, ``https://host:port[/path]``. Raises ValueError for any other kind of URL."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext,
        pins: Iterable[str],
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive_expiry: float,
    ) -> None:
        parts = urlsplit(url)
        if (
            parts.scheme != "https"
            or not parts.hostname
            or parts.username is not None
            or parts.password is not None
            or parts.query
            or parts.fragment
        ):
            raise ValueError("not an https://HOST:PORT URL")
        #: A path the URL has (an API behind a path-routing reverse proxy) goes before every request's own.
        self.base_path = parts.path.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port if parts.port is not None else 443  # ValueError for a port outside 0-65535
        if not 0 < self.port < 65536:
            raise ValueError("port out of range")
        self.authority = parts.netloc
        self.ssl_context = ssl_context
        self.pins = frozenset(pins)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_expiry = keepalive_expiry
        self.closed = False
        self._idle: list[_Connection] = []
        self._sweeper: asyncio.TimerHandle | None = None
        #: The last new connection was accepted by its pinned fingerprint after a failed chain check.
        self._by_fingerprint = False

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None = None
    ) -> Response:
        """Send one request and return the answer once its head arrived; the body streams from the Response."""
        conn = self._reused() or await self._connect()
        head: list[tuple[str, str]] = [("Host", self.authority), *headers]
        if body is not None:
            head.append(("Content-Length", str(len(body))))
        try:
            async with asyncio.timeout(self.read_timeout):
                await conn.send(
                    h11.Request(method=method, target=self.base_path + target, headers=head),
                    *([h11.Data(data=body)] if body else []),
                    h11.EndOfMessage(),
                )
            event = await conn.receive(self.read_timeout)
            while isinstance(event, h11.InformationalResponse):
                event = await conn.receive(self.read_timeout)
        except TimeoutError:
            conn.close()
            raise ReadTimeout("the request could not be sent within the read timeout") from None
        except WireError:
            conn.close()
            raise
        except (OSError, ssl.SSLError, h11.LocalProtocolError) as exc:
            conn.close()
            raise ConnectionLost("the connection failed while sending the request") from exc
        except BaseException:  # cancelled: the connection is in an unknown state
            conn.close()
            raise
        if not isinstance(event, h11.Response):
            conn.close()
            raise ConnectionLost("the connection closed before an answer")
        conn._pool = self
        reason = event.reason.decode("ascii", errors="ignore")
        return Response(event.status_code, reason, Headers(event.headers), self._body(conn), conn)

    async def _body(self, conn: _Connection) -> AsyncIterator[bytes]:
        complete = False
        try:
            event = await conn.receive(self.read_timeout)
            while isinstance(event, h11.Data):
                yield bytes(event.data)
                event = await conn.receive(self.read_timeout)
            complete = isinstance(event, h11.EndOfMessage)
        finally:
            if not complete:  # failed, abandoned, or closed before the end of a delimited body
                conn.close()
        if not complete:
            raise ConnectionLost("the connection closed in the middle of the answer")

    def _reused(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(now, self.keepalive_expiry):
                return conn
            conn.close()
        return None

    def put_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.keepalive_expiry, self._sweep)

    def _sweep(self) -> None:
        """Close what expired; come back while anything is idle."""
        self._sweeper = None
        now = time.monotonic()
        keep = [c for c in self._idle if now - c.idle_since < self.keepalive_expiry]
        for conn in self._idle:
            if conn not in keep:
                conn.close()
        self._idle = keep
        if keep and not self.closed:
            oldest = min(c.idle_since for c in keep)
            delay = max(0.05, oldest + self.keepalive_expiry - now)
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def close_idle(self) -> None:
        """Close the idle connections now, not when they expire; the pool stays usable."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def aclose(self) -> None:
        self.closed = True
        self.close_idle()

    async def _connect(self) -> _Connection:
        """A new connection whose certificate passed: the chain check, or else (with fingerprints pinned) the leaf's
        fingerprint. When the fingerprint decided last time, it is asked first: one handshake instead of a failing
        one and a second. Which certificates pass is the same in either order."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                presented = None
                if self._by_fingerprint:
                    conn, presented = await self._pinned()
                    if conn is not None:
                        return conn
                    self._by_fingerprint = False
                try:
                    return await self._handshake(await self._tcp(), self.ssl_context)
                except ssl.SSLCertVerificationError:
                    if not self.pins:
                        raise
                if presented is None:  # the chain check failed: connect again, let the fingerprint decide
                    conn, presented = await self._pinned()
                    if conn is not None:
                        self._by_fingerprint = True
                        return conn
                raise FingerprintMismatch(
                    f"the certificate is not signed by a trusted CA and its fingerprint {presented} is not in "
                    "spec.tls.fingerprints"
                )
        except TimeoutError:
            raise ConnectTimeout("no connection within the connect timeout") from None
        except (OSError, ssl.SSLError) as exc:  # OSError covers the socket's errors; SSLError is one too
            raise ConnectFailed("connecting failed") from exc

    async def _pinned(self) -> tuple[_Connection | None, str]:
        """A connection without chain verification (and so without a hostname check), kept only if the leaf
        certificate's fingerprint is pinned; else None. Either way the fingerprint presented."""
        conn = await self._handshake(await self._tcp(), unverified_context())
        der = conn.tls.getpeercert(binary_form=True)
        presented = fingerprint_of(der) if der else "none"
        if presented in self.pins:
            return conn, presented
        conn.close()
        return None, presented

    async def _tcp(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        targets: list[tuple[int, Any]]
        try:
            ipaddress.ip_address(self.host)
            targets = [(socket.AF_INET6 if ":" in self.host else socket.AF_INET, (self.host, self.port))]
        except ValueError:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            targets = [(family, address) for family, _, _, _, address in infos]
        last: OSError | None = None
        for family, address in targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise last or OSError(f"no address for {self.host}")

    async def _handshake(self, sock: socket.socket, context: ssl.SSLContext) -> _Connection:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            tls = context.wrap_bio(incoming, outgoing, server_hostname=self.host)
            conn = _Connection(sock, tls, incoming, outgoing)
            # The client's last handshake message (TLS 1.3: its Finished) goes out with the request, in one send;
            # and not at all when the pinning check (:meth:`_pinned`) closes the connection.
            await conn.tls_call(tls.do_handshake, flush=False)
        except BaseException:
            sock.close()
            raise
        return conn
