"""How failures become typed errors: transport failures, TLS problems, unusable URLs, bad bodies, Retry-After.

Messages name the endpoint and the kind of failure; they are built from our own text, the exception's type and
OS-level descriptions, never from request headers or bodies.
"""

from __future__ import annotations

import contextlib
import math
import os
import ssl
import time
from email.utils import parsedate_to_datetime

from proxmox_operator.proxmox import errors, wire
from proxmox_operator.proxmox.hosts import url_host_port
from proxmox_operator.proxmox.tls import TrustConfig

RETRY_AFTER_MAX = 3600.0  # a longer (or infinite) Retry-After is taken as an hour


class TransportFailure(Exception):
    """A request never got an HTTP answer from this endpoint: the next one may be tried."""

    def __init__(self, error: errors.ProxmoxError) -> None:
        super().__init__(str(error))
        self.error = error


def unusable(url: str, what: str, exc: Exception) -> errors.ProxmoxError:
    """For an exception without an HTTP answer that is not the wire's: an invalid URL or port, and the like."""
    name = type(exc).__name__
    if url_host_port(url) is None:
        return errors.Unreachable(
            f"the endpoint {url} is not a usable URL ({name}); write it as https://HOST:PORT with a port "
            "from 1 to 65535",
            endpoint=url,
        )
    return errors.Unreachable(
        f"cannot reach Proxmox at {url}: {what} failed with {name} before any answer; check the endpoint URL "
        "and that the operator's network can reach it",
        endpoint=url,
    )


def invalid_body(url: str, what: str, problem: str) -> errors.InvalidResponse:
    """``problem`` completes "a body that ..." (a :class:`~.body.BodyInvalid` message)."""
    return errors.InvalidResponse(
        f"Proxmox at {url} answered {what} with a body that {problem}; is the endpoint "
        "really a Proxmox VE API (port 8006)?",
        endpoint=url,
    )


def transport_error(url: str, what: str, exc: wire.WireError, trust: TrustConfig) -> errors.ProxmoxError:
    if isinstance(exc, wire.ConnectTimeout | wire.ReadTimeout):
        phase = "connecting" if isinstance(exc, wire.ConnectTimeout) else "waiting"
        return errors.Timeout(
            f"Proxmox at {url} timed out ({phase}) on {what}; check the node and the network path", endpoint=url
        )
    tls_problem = ssl_cause(exc)
    if tls_problem is not None:
        return errors.TLSError(tls_message(url, tls_problem, trust), endpoint=url)
    return errors.Unreachable(
        f"cannot reach Proxmox at {url} ({describe(exc)}); check the endpoint URL, that pveproxy runs on "
        "the node, and that the operator's network can reach it",
        endpoint=url,
    )


def tls_message(url: str, problem: ssl.SSLError, trust: TrustConfig) -> str:
    detail = (
        getattr(problem, "verify_message", None)
        or getattr(problem, "reason", None)
        or str(problem)
        or type(problem).__name__
    )
    if isinstance(problem, ssl.SSLCertVerificationError):
        if trust.fingerprints:
            hint = "pin this node's certificate in spec.tls.fingerprints or trust its CA in spec.tls.caBundle"
        elif trust.ca_bundle is None:
            hint = "set spec.tls.caBundle to the cluster CA (/etc/pve/pve-root-ca.pem on any node)"
        else:
            hint = "the CA bundle does not match the server's certificate; use the CA that signed it"
        return f"the TLS certificate of Proxmox at {url} failed verification ({detail}); {hint}"
    return f"the TLS handshake with Proxmox at {url} failed ({detail}); check the endpoint URL and port"


def retry_after(headers: wire.Headers) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date) within [0, RETRY_AFTER_MAX], or None."""
    value = (headers.get("Retry-After") or "").strip()
    delay: float | None = None
    if value.isascii() and value.isdigit():
        delay = float(value) if len(value) <= 12 else math.inf  # "9" * 400 would be float("inf") anyway
    elif value:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError, OSError):
            delay = parsedate_to_datetime(value).timestamp() - time.time()
    if delay is None or math.isnan(delay):
        return None
    return min(max(delay, 0.0), RETRY_AFTER_MAX)


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(exc: BaseException) -> str:
    """The innermost OS-level description (e.g. 'Connection refused'), never request data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    text = type(exc).__name__
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and (current.errno or current.strerror):
            # asyncio's connect errors carry the errno but a generic strerror ("Connect call failed ...");
            # DNS errors (socket.gaierror) have negative errnos and a meaningful strerror of their own.
            if current.errno and current.errno > 0:
                return os.strerror(current.errno)
            return str(current.strerror)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return text
