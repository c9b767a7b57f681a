"""An async client for the part of the Proxmox VE API the operator reads.

One :class:`ProxmoxClient` per registered cluster owns one pooled ``httpx.AsyncClient``:

* Keep-alive connections expire after 4 s, below pveproxy's 5 s idle close, so a request never lands on a
  connection the server is about to drop.
* Explicit connect/read/write/pool timeouts plus a total deadline per request.
* TLS verified by default (see :mod:`.tls`); the SSL context is shared per trust configuration.
* Password logins get a ticket (``POST /access/ticket``) that is reused for reads, renewed once older than an
  hour by posting the ticket itself as the password (as Proxmox's own clients do, tickets live two hours), and
  re-acquired once after a 401. API tokens go in the ``Authorization`` header and need neither.
* Every failure is a typed :class:`~.errors.ProxmoxError` whose message names the endpoint and contains no
  credential: Proxmox's reason phrase and our own text only, scrubbed of every secret this client holds.

References: pve-docs ``pveum.adoc`` (tickets, tokens), pve-http-server ``AnyEvent.pm`` (reason phrases, 401
delay, keep-alive), pve-access-control ``API2/AccessControl.pm`` (``/access/ticket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from proxmox_operator.proxmox import errors
from proxmox_operator.proxmox.credentials import Credentials, PasswordCredentials, TokenCredentials
from proxmox_operator.proxmox.tls import TrustConfig, ssl_context

USER_AGENT = "proxmox-operator/0.1"
TICKET_RENEW_AFTER = 3600.0  # seconds; tickets are valid for 7200 s (pve-access-control, AuthUtils)
KEEPALIVE_EXPIRY = 4.0  # pveproxy closes idle keep-alive connections after 5 s

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits, in seconds. ``total`` bounds a whole request, login included."""

    connect: float = 5.0
    read: float = 15.0
    total: float = 30.0


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Version(_Payload):
    """``GET /version``: ``{version, release, repoid}`` (pve-manager ``PVE/API2/Version.pm``)."""

    version: str
    release: str | None = None
    repoid: str | None = None


class Node(_Payload):
    """One entry of ``GET /nodes`` (pve-manager ``PVE/API2/Nodes.pm``); stats fields are optional."""

    node: str
    status: str = "unknown"
    level: str | None = None
    ssl_fingerprint: str | None = None


class _Ticket(_Payload):
    ticket: str
    CSRFPreventionToken: str | None = None  # Proxmox's key
    NeedTFA: int | None = None  # Proxmox's key


@dataclass
class _Session:
    ticket: str
    csrf: str | None
    issued: float


class ProxmoxClient:
    """A connection to one Proxmox VE API endpoint with one set of credentials."""

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: Credentials,
        trust: TrustConfig | None = None,
        timeouts: Timeouts | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.credentials = credentials
        self.trust = trust or TrustConfig()
        self.timeouts = timeouts or Timeouts()
        self._clock = clock
        self._session: _Session | None = None
        self._login_lock = asyncio.Lock()
        t = self.timeouts
        self._http = httpx.AsyncClient(
            base_url=f"{self.endpoint}/api2/json",
            # Raises TrustConfigInvalid for a bad CA bundle: checked before any connection is made.
            verify=ssl_context(self.trust),
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2, keepalive_expiry=KEEPALIVE_EXPIRY),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            # Proxy variables and SSL_CERT_FILE from the environment must not change where credentials go or
            # which CAs are trusted behind the user's back: the resource's spec decides.
            trust_env=False,
            transport=transport,
        )

    async def __aenter__(self) -> ProxmoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool and forget the ticket."""
        self._session = None
        await self._http.aclose()

    # --- public reads -------------------------------------------------------------------------------------

    async def version(self) -> Version:
        return self._parse(Version, await self.get("/version"), "/version")

    async def nodes(self) -> list[Node]:
        data = await self.get("/nodes")
        if not isinstance(data, list):
            raise errors.InvalidResponse(
                f"Proxmox at {self.endpoint} answered GET /nodes with {type(data).__name__}, not a list",
                endpoint=self.endpoint,
            )
        return [self._parse(Node, item, "/nodes") for item in data]

    async def get(self, path: str) -> Any:
        """GET ``/api2/json{path}`` and return its ``data``, logging in first if needed."""
        try:
            async with asyncio.timeout(self.timeouts.total):
                return await self._get(path)
        except TimeoutError:
            raise errors.Timeout(
                f"Proxmox at {self.endpoint} did not answer GET {path} within {self.timeouts.total:g} s; "
                "check that the node is up and not overloaded",
                endpoint=self.endpoint,
            ) from None

    async def login(self) -> None:
        """Make sure a usable session exists: a ticket for password logins (API tokens need none)."""
        if isinstance(self.credentials, PasswordCredentials):
            await self._ensure_ticket()

    # --- internals ----------------------------------------------------------------------------------------

    async def _get(self, path: str) -> Any:
        retried_login = False
        while True:
            headers = await self._auth_headers()
            response = await self._send("GET", path, headers=headers)
            if response.status_code == 401 and isinstance(self.credentials, PasswordCredentials) and not retried_login:
                # The ticket may have been invalidated (auth key rotation on the cluster): log in once more.
                retried_login = True
                self._session = None
                continue
            return self._data(response, f"GET {path}")

    async def _auth_headers(self) -> dict[str, str]:
        if isinstance(self.credentials, TokenCredentials):
            return {"Authorization": self.credentials.authorization_header()}
        session = await self._ensure_ticket()
        return {"Cookie": f"PVEAuthCookie={session.ticket}"}

    async def _ensure_ticket(self) -> _Session:
        async with self._login_lock:
            session = self._session
            now = self._clock()
            if session is not None and now - session.issued < TICKET_RENEW_AFTER:
                return session
            renewed: _Session | None = None
            if session is not None:
                # Renew by posting the current ticket as the password; if it expired after all, use the password.
                with contextlib.suppress(errors.AuthenticationFailed):
                    renewed = await self._login(password=session.ticket)
            self._session = renewed or await self._login(password=None)
            return self._session

    async def _login(self, *, password: str | None) -> _Session:
        creds = self.credentials
        assert isinstance(creds, PasswordCredentials)
        form = {"username": creds.username, "password": password if password is not None else creds.password}
        response = await self._send("POST", "/access/ticket", data=form)
        if response.status_code == 401:
            raise errors.AuthenticationFailed(
                f"Proxmox at {self.endpoint} rejected the login of '{creds.username}' "
                f"({self._reason(response)}); check the username, realm and password in the Secret",
                endpoint=self.endpoint,
            )
        ticket = self._parse(_Ticket, self._data(response, "POST /access/ticket"), "/access/ticket")
        if ticket.NeedTFA or ticket.ticket.startswith("PVE:!tfa!"):
            raise errors.TFARequired(
                f"'{creds.username}' has two-factor authentication on {self.endpoint}: a password login cannot "
                "complete unattended; create an API token (tokenId/tokenSecret) for the operator instead",
                endpoint=self.endpoint,
            )
        return _Session(ticket=ticket.ticket, csrf=ticket.CSRFPreventionToken, issued=self._clock())

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        what = f"{method} {path}"
        try:
            return await self._http.request(method, path, headers=headers, data=data)
        except httpx.TimeoutException as exc:
            phase = "connecting" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting"
            raise errors.Timeout(
                f"Proxmox at {self.endpoint} timed out ({phase}) on {what}; check the node and the network path",
                endpoint=self.endpoint,
            ) from None
        except httpx.TransportError as exc:
            tls_problem = _ssl_cause(exc)
            if tls_problem is not None:
                raise errors.TLSError(self._tls_message(tls_problem), endpoint=self.endpoint) from None
            raise errors.Unreachable(
                f"cannot reach Proxmox at {self.endpoint} ({_describe(exc)}); check the endpoint URL, that "
                "pveproxy runs on the node, and that the operator's network can reach it",
                endpoint=self.endpoint,
            ) from None

    def _tls_message(self, problem: ssl.SSLError) -> str:
        detail = getattr(problem, "verify_message", None) or problem.reason or type(problem).__name__
        if isinstance(problem, ssl.SSLCertVerificationError):
            hint = (
                "set spec.tls.caBundle to the cluster CA (/etc/pve/pve-root-ca.pem on any node)"
                if self.trust.ca_bundle is None
                else "spec.tls.caBundle does not match the server's certificate; use the CA that signed it"
            )
            return f"the TLS certificate of Proxmox at {self.endpoint} failed verification ({detail}); {hint}"
        return f"the TLS handshake with Proxmox at {self.endpoint} failed ({detail}); check the endpoint URL and port"

    def _data(self, response: httpx.Response, what: str) -> Any:
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise errors.InvalidResponse(
                    f"Proxmox at {self.endpoint} answered {what} with a body that is not JSON; is the endpoint "
                    "really a Proxmox VE API (port 8006)?",
                    endpoint=self.endpoint,
                ) from None
            if not isinstance(body, dict) or "data" not in body:
                raise errors.InvalidResponse(
                    f"Proxmox at {self.endpoint} answered {what} without the 'data' envelope; is the endpoint "
                    "really a Proxmox VE API?",
                    endpoint=self.endpoint,
                )
            return body["data"]
        reason = self._reason(response)
        if status == 401:
            raise errors.AuthenticationFailed(
                f"Proxmox at {self.endpoint} refused {what} with 401 ({reason}); check the credentials in the "
                "Secret (for a token: tokenId and tokenSecret, and that the token has not expired)",
                endpoint=self.endpoint,
            )
        if status == 403:
            raise errors.PermissionDenied(
                f"Proxmox at {self.endpoint} denied {what} with 403 ({reason}); grant the user or token the "
                "PVEAuditor role on / (for a privilege-separated token, on the token too)",
                endpoint=self.endpoint,
            )
        # 501 is how PVE says "no such API method": an unsupported version, not a failing server.
        if status >= 500 and status != 501:
            raise errors.ServerError(
                f"Proxmox at {self.endpoint} failed {what} with {status} ({reason}); see the pveproxy and "
                "pvedaemon logs on the node",
                endpoint=self.endpoint,
            )
        raise errors.InvalidResponse(
            f"Proxmox at {self.endpoint} answered {what} with {status} ({reason}); this Proxmox VE version may "
            "not be supported",
            endpoint=self.endpoint,
        )

    def _reason(self, response: httpx.Response) -> str:
        """Proxmox puts its error text in the HTTP reason phrase; bound it and scrub it."""
        phrase = " ".join(response.reason_phrase.split())[:200] or "no reason given"
        return self._scrub(phrase)

    def _scrub(self, text: str) -> str:
        secrets = [getattr(self.credentials, "password", None), getattr(self.credentials, "secret", None)]
        if self._session is not None:
            secrets += [self._session.ticket, self._session.csrf]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _parse(self, model: type[_M], data: Any, path: str) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "(root)" for e in exc.errors()[:3])
            raise errors.InvalidResponse(
                f"Proxmox at {self.endpoint} answered {path} in an unexpected shape (fields: {fields}); "
                "this Proxmox VE version may not be supported",
                endpoint=self.endpoint,
            ) from None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _describe(exc: BaseException) -> str:
    """The innermost OS-level description (e.g. 'Connection refused'), never request data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    text = type(exc).__name__
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and (current.errno or current.strerror):
            # asyncio's connect errors carry the errno but a generic strerror ("Connect call failed ...").
            # DNS errors (socket.gaierror) have negative errnos and a meaningful strerror of their own.
            if current.errno and current.errno > 0:
                return os.strerror(current.errno)
            return str(current.strerror)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return text
