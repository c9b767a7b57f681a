"""What a :class:`~.client.ProxmoxClient` reports about its traffic, for whoever counts it (the operator's metrics).

A plain object with no-op methods: the client calls them and knows nothing of who listens. What it passes is
bounded and holds no secret: the endpoint's host name (never a path, query or credential), an HTTP status code or
``None`` for no answer, and whether a login succeeded.
"""

from __future__ import annotations

from urllib.parse import urlsplit


class ClientHooks:
    """Callbacks of a Proxmox client; the defaults do nothing. Override what you count. They run on the event
    loop and must not block."""

    def request(self, host: str, status: int | None) -> None:
        """One HTTP exchange with ``host`` finished: its status code, or ``None`` when no answer came (refused,
        reset, timeout, TLS failure, an unreadable body)."""

    def failover(self, host: str) -> None:
        """A transport failure at ``host`` moved the request on to the next endpoint."""

    def login(self, success: bool) -> None:
        """A password login (or ticket renewal) finished."""


#: The hooks of a client that was given none.
NO_HOOKS = ClientHooks()


def host_of(url: str) -> str:
    """The host name of an endpoint URL (IPv6 without brackets), lower case; ``"unknown"`` when it has none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return host or "unknown"
