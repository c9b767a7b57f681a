"""Typed errors of the Proxmox client, each mapped to the condition reason a user sees.

Every message names the endpoint and says what to do. None carries a credential: messages are built from the
endpoint, the HTTP status and Proxmox's reason phrase, never from request headers or bodies.
"""

from __future__ import annotations

from typing import ClassVar


class ProxmoxError(Exception):
    """Base class. ``reason`` is the CamelCase condition reason; ``str(error)`` is the message for a person."""

    reason: ClassVar[str] = "ProxmoxError"
    #: Whether trying again later may help without a change by the user (network blips, server errors).
    transient: ClassVar[bool] = True

    def __init__(self, message: str, *, endpoint: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        #: Seconds the server asked us to wait (429/503 Retry-After), if it did.
        self.retry_after = retry_after


class Unreachable(ProxmoxError):
    """No TCP connection or the connection broke: DNS, refused, reset, no route."""

    reason = "Unreachable"


class Timeout(ProxmoxError):
    """Connected (or tried to) but Proxmox did not answer in time."""

    reason = "Timeout"


class TLSError(ProxmoxError):
    """The server's certificate failed the configured check, or the handshake failed."""

    reason = "TLSError"
    transient = False


class AuthenticationFailed(ProxmoxError):
    """Proxmox rejected the credentials (HTTP 401)."""

    reason = "AuthenticationFailed"
    transient = False


class TFARequired(AuthenticationFailed):
    """The user has a second factor: a password login cannot complete unattended."""

    reason = "TFARequired"


class PermissionDenied(ProxmoxError):
    """HTTP 403: logged in, but the user or token lacks a privilege."""

    reason = "PermissionDenied"
    transient = False


class InvalidResponse(ProxmoxError):
    """The answer was not JSON, not in the shape the Proxmox API documents, or beyond the size and nesting limits
    of :mod:`.body`."""

    reason = "InvalidResponse"


class ServerError(ProxmoxError):
    """HTTP 5xx, including Proxmox's 595/596 for a failed request proxied to another node."""

    reason = "ServerError"


class HostNotAllowed(ProxmoxError):
    """An endpoint is outside the hosts the credentials Secret allows (see :mod:`.hosts`): nothing was sent."""

    reason = "HostNotAllowed"
    transient = False
