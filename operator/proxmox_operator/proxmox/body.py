"""Reading and parsing response bodies within fixed limits.

A server that answers on a configured endpoint is not trusted to be a well-behaved Proxmox VE node. Generic HTTP
clients read whole bodies and decompress them without bounds (httpx's decoder calls ``decompress`` without
``max_length``: one 64 KiB network read of a gzip bomb expands to ~64 MB, and a 51 KB body reached a 133 MB peak).
So the body is streamed (:mod:`.wire`) and decoded here:

* :data:`MAX_BODY_BYTES` (1 MiB) bounds the body after decompression, and the bytes on the wire too. The largest
  answers the operator reads from a real PVE (``/cluster/status``, ``/nodes`` and ``/access/permissions`` of a
  large cluster) are tens of KiB; a body of tiny JSON values expands about 15x into Python objects, so 1 MiB
  costs at most some 15 MB of memory per request in flight.
* ``Content-Encoding`` gzip, deflate and identity are decoded with :func:`zlib.decompressobj` using
  ``max_length`` and ``unconsumed_tail``, so no single step produces more than the room left under the limit.
  Any other encoding is refused. Reading stops as soon as a limit is passed; the caller then closes the
  response, which closes the connection.
* :data:`MAX_JSON_DEPTH` (32) bounds nesting; PVE's answers nest 4 deep. The check is an iterative walk, and
  nesting too deep for the JSON parser's recursion limit is caught as well.
* Bodies above :data:`THREAD_PARSE_ABOVE` (64 KiB) are parsed in a worker thread, at most
  :data:`PARALLEL_PARSES` at once, so that parsing one cluster's answer never holds up the event loop that
  serves every other cluster.

Every problem is a :class:`BodyInvalid` whose message completes "answered ... with a body that ..."; the client
turns it into :class:`~.errors.InvalidResponse` naming the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import re
import weakref
import zlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
THREAD_PARSE_ABOVE = 64 << 10
PARALLEL_PARSES = 2

# One semaphore per event loop (an asyncio.Semaphore belongs to the loop it first waits on); the operator runs
# one loop, so in practice this is a single process-wide limit.
_parse_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


class BodyInvalid(Exception):
    """The body is too large, too deeply nested, or cannot be decoded. ``str()`` names the limit or problem."""


class _Decoder(Protocol):
    """What :func:`zlib.decompressobj` returns (and :class:`_Deflate` mimics)."""

    @property
    def unconsumed_tail(self) -> bytes: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    def decompress(self, data: bytes, /, max_length: int = ...) -> bytes: ...


def _too_large(limit: int) -> BodyInvalid:
    return BodyInvalid(f"exceeds the size limit of {limit:,} bytes (counted on the wire and after decompression)")


def _decompressor(header: str) -> _Decoder | None:
    """A zlib decompressor for the response's Content-Encoding, or None for an unencoded body."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if len(codings) == 1 and codings[0] == "deflate":
        return _Deflate()
    shown = ", ".join(c if re.fullmatch(r"[a-z0-9-]{1,20}", c) else "?" for c in codings[:3])
    raise BodyInvalid(f"has an unsupported Content-Encoding ({shown}); only gzip and deflate are understood")


class _Deflate:
    """HTTP 'deflate' is zlib-wrapped, but some servers send raw deflate: decide by the first two bytes."""

    def __init__(self) -> None:
        self._z: _Decoder | None = None

    def _pick(self, data: bytes) -> _Decoder:
        if self._z is None:
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return self._z

    def decompress(self, data: bytes, /, max_length: int = 0) -> bytes:
        return self._pick(data).decompress(data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._z.unconsumed_tail if self._z is not None else b""

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data if self._z is not None else b""

    @property
    def eof(self) -> bool:
        return self._z.eof if self._z is not None else False


def _inflate(z: _Decoder, data: bytes, out: bytearray, limit: int) -> None:
    """Decompress ``data`` into ``out``, never producing more than one byte beyond ``limit``."""
    if z.eof:
        raise BodyInvalid("has data after the end of its compressed stream")
    try:
        while data:
            out += z.decompress(data, limit + 1 - len(out))  # max_length >= 1 here: 0 would mean unbounded
            if len(out) > limit:
                raise _too_large(limit)
            data = z.unconsumed_tail
    except zlib.error:
        raise BodyInvalid("is not valid compressed data although its Content-Encoding says so") from None
    if z.unused_data:
        raise BodyInvalid("has data after the end of its compressed stream")


class _Headers(Protocol):
    def get(self, name: str, default: str | None = None) -> str | None: ...


class Streamed(Protocol):
    """A response whose body arrives in chunks, still content-encoded (:class:`.wire.Response`)."""

    @property
    def headers(self) -> _Headers: ...
    def aiter_raw(self) -> AsyncIterator[bytes]: ...


async def read(response: Streamed, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The decoded body of a streamed ``response``, at most ``limit`` bytes on the wire and after decoding.

    Raises :class:`BodyInvalid` as soon as a limit is passed (the caller closes the response); network errors
    are :mod:`.wire`'s.
    """
    declared = response.headers.get("Content-Length") or ""
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    z = _decompressor(response.headers.get("Content-Encoding") or "")
    out = bytearray()
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        if z is None:
            out += chunk
        elif chunk:
            _inflate(z, chunk, out, limit)
    if z is not None and not z.eof:
        raise BodyInvalid("is truncated: its compressed stream does not end")
    return bytes(out)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def load(raw: bytes) -> Any:
    """Parse JSON within :data:`MAX_JSON_DEPTH`. Raises :class:`BodyInvalid`."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BodyInvalid(f"nests deeper than the limit of {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise BodyInvalid("is not JSON") from None
    if isinstance(value, dict | list) and _deeper_than(value, MAX_JSON_DEPTH):
        raise BodyInvalid(f"nests deeper than the limit of {MAX_JSON_DEPTH} levels")
    return value


async def parse(raw: bytes) -> Any:
    """:func:`load`, in a worker thread for bodies above :data:`THREAD_PARSE_ABOVE`."""
    if len(raw) <= THREAD_PARSE_ABOVE:
        return load(raw)
    loop = asyncio.get_running_loop()
    slots = _parse_slots.get(loop)
    if slots is None:
        slots = _parse_slots[loop] = asyncio.Semaphore(PARALLEL_PARSES)
    async with slots:
        return await asyncio.to_thread(load, raw)
