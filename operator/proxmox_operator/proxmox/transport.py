"""The HTTP transport of one endpoint: httpx over httpcore, with a network backend that pins fingerprints.

Fingerprint pinning has to happen after the TLS handshake and before the request is written, so that
credentials never reach a server whose certificate failed the check. httpcore opens the TCP connection and
upgrades it with ``stream.start_tls``; :class:`PinningBackend` wraps that stream. When the chain check fails and
fingerprints are configured, it connects again without chain verification and accepts the connection only if
the leaf certificate's SHA-256 fingerprint is listed, as Proxmox's own clients do.
"""

from __future__ import annotations

import contextlib
import ssl
import typing
from collections.abc import Iterable

import httpcore
import httpx

from proxmox_operator.proxmox.tls import fingerprint_of, unverified_context


class FingerprintMismatch(httpcore.ConnectError, ssl.SSLCertVerificationError):
    """The chain check failed and the certificate's fingerprint is not pinned either.

    Both an httpcore connect error (so httpx maps it like any failed connection) and a certificate verification
    error (so it reads as a TLS failure): httpcore's pool re-raises with ``from None``, which would drop a
    ``__cause__``, so the type itself carries the meaning.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _PinningStream(httpcore.AsyncNetworkStream):
    def __init__(
        self,
        inner: httpcore.AsyncNetworkStream,
        backend: PinningBackend,
        connect: dict[str, typing.Any],
    ) -> None:
        self._inner = inner
        self._backend = backend
        self._connect = connect

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            return await self._inner.start_tls(ssl_context, server_hostname, timeout)
        except httpcore.ConnectError as exc:
            if not self._backend.pins or not isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                raise
        with contextlib.suppress(Exception):
            await self._inner.aclose()
        # The chain check failed: connect again, let the fingerprint decide (no hostname check then).
        raw = await self._backend.inner.connect_tcp(**self._connect)
        stream = await raw.start_tls(unverified_context(), server_hostname, timeout)
        ssl_object = stream.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        presented = fingerprint_of(der) if der else "none"
        if presented not in self._backend.pins:
            await stream.aclose()
            raise FingerprintMismatch(
                f"the certificate is not signed by a trusted CA and its fingerprint {presented} is not in "
                "spec.tls.fingerprints"
            )
        return stream


class PinningBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default (anyio) backend, with :class:`_PinningStream` around every TCP connection."""

    def __init__(self, pins: Iterable[str]) -> None:
        self.pins = frozenset(pins)
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        connect: dict[str, typing.Any] = {
            "host": host,
            "port": port,
            "timeout": timeout,
            "local_address": local_address,
            "socket_options": socket_options,
        }
        stream = await self.inner.connect_tcp(**connect)
        return _PinningStream(stream, self, connect) if self.pins else stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def transport(
    ssl_context: ssl.SSLContext, pins: Iterable[str], *, max_connections: int, keepalive_expiry: float
) -> httpx.AsyncHTTPTransport:
    """An httpx transport for one endpoint: HTTP/1.1, no retries of its own, our network backend."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )
    t = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    # httpx (pinned < 0.29) does not take a network backend; its pool is rebuilt with the same settings plus ours.
    t._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=PinningBackend(pins),
    )
    return t
