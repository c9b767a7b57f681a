"""An async client for the part of the Proxmox VE API the operator reads.

One :class:`ProxmoxClient` per registered cluster. It owns one connection pool per endpoint (:mod:`.wire`; configured
or discovered) and one login shared by all of them (a PVE ticket is valid on every node of the cluster):

* **Failover** only on transport errors: refused, reset, timeout, TLS handshake. An HTTP error is an answer
  from a node that works, and is reported, never retried elsewhere. Each probe round starts again at the most
  preferred endpoint, so the first configured one is used again as soon as it answers.
* **Keep-alive** connections expire after 4 s, below pveproxy's 5 s idle close.
* **Timeouts**: connect, read and a total deadline per request.
* **TLS** verified by default, with the SSL context shared per trust configuration (see :mod:`.tls`) and
  fingerprint pinning before any request byte is sent (see :mod:`.wire`). Minimum TLS 1.2.
* **Limits** per endpoint: requests in flight, and requests started per second (a token bucket: a probe's few
  requests start at once, a longer run of requests is spaced evenly).
* **Retries**: an idempotent GET is retried once on the same endpoint after a connection reset; a 429 or 503
  with a short ``Retry-After`` is retried once after that delay (a longer one is reported with the delay).
* **Tickets**: one login, reused for reads, renewed once older than an hour by posting the ticket itself as the
  password (tickets live two hours; Proxmox's own clients do the same), and re-acquired once after a 401.
  API tokens go in the ``Authorization`` header and need neither.
* **Bodies** are read within limits (:mod:`.body`): at most :data:`~.body.MAX_BODY_BYTES` (1 MiB) on the wire and
  after decompression, which this client does itself in bounded steps, JSON nested at most
  :data:`~.body.MAX_JSON_DEPTH` (32) deep, large bodies parsed off the event loop.
* **Where credentials go**: with an allowed-hosts list (:mod:`.hosts`) no connection is opened to an endpoint
  outside it. Discovered endpoints are used only as ``https://<IP>:<configured port>``, inside that list, and
  never with ``insecureSkipVerify``.
* Every failure is a typed :class:`~.errors.ProxmoxError` whose message names the endpoint and contains no
  credential: Proxmox's reason phrase and our own text only, scrubbed of every secret this client holds. An
  exception without an HTTP answer (whatever its type) counts as a transport failure and moves on to the next
  endpoint.

References: pve-docs ``pveum.adoc`` (tickets, tokens), pve-http-server ``AnyEvent.pm`` (reason phrases, 401
delay, keep-alive), pve-access-control ``API2/AccessControl.pm`` (``/access/ticket``, ``/access/permissions``),
pve-manager ``API2/Nodes.pm`` and ``API2/Cluster.pm`` (``/nodes``, ``/cluster/status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ValidationError

from proxmox_operator.proxmox import body, errors, wire
from proxmox_operator.proxmox.credentials import Credentials, PasswordCredentials, TokenCredentials
from proxmox_operator.proxmox.failures import (
    TransportFailure,
    invalid_body,
    retry_after,
    ssl_cause,
    transport_error,
    unusable,
)
from proxmox_operator.proxmox.hooks import NO_HOOKS, ClientHooks, host_of
from proxmox_operator.proxmox.hosts import ALLOWED_HOSTS_ANNOTATION, AllowedHosts, acceptable_discovered, url_host_port
from proxmox_operator.proxmox.payloads import ClusterStatusEntry, Node, Ticket, Version
from proxmox_operator.proxmox.tls import TrustConfig, ssl_context

USER_AGENT = "proxmox-operator/0.1"
API_PREFIX = "/api2/json"
# Bodies are decoded by .body, which understands these two codings only.
_HEADERS = (("User-Agent", USER_AGENT), ("Accept", "application/json"), ("Accept-Encoding", "gzip, deflate"))
TICKET_RENEW_AFTER = 3600.0  # seconds; tickets are valid for 7200 s (pve-access-control, AuthUtils)
KEEPALIVE_EXPIRY = 4.0  # pveproxy closes idle keep-alive connections after 5 s
RETRY_AFTER_WAIT_MAX = 5.0  # wait for a Retry-After up to this long within a request; longer ones are reported
MAX_BODY_BYTES = body.MAX_BODY_BYTES
MAX_JSON_DEPTH = body.MAX_JSON_DEPTH

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Timeouts:
    """Per-request limits, in seconds. ``total`` bounds a whole request, login and failover included."""

    connect: float = 5.0
    read: float = 15.0
    total: float = 30.0


@dataclass(frozen=True)
class Limits:
    """Per-endpoint limits. ``burst`` requests may start at once; beyond that, ``requests_per_second``."""

    max_concurrent: int = 4
    requests_per_second: float = 10.0
    #: The most requests a registration sends (cluster status, version, node list, permissions): they need not
    #: wait for each other. Spacing them at 10 per second made every registration last 300 ms longer, and each
    #: wait was a wake-up of its own with the whole call stack resumed.
    burst: int = 4


@dataclass
class _Session:
    ticket: str
    csrf: str | None
    issued: float


class _RateLimiter:
    """A token bucket in its GCRA form: up to ``burst`` request starts at once, then one every ``1 / rate`` s; in
    any window of T seconds at most ``burst + rate * T`` starts. The burst is never more than a second's worth
    (a limit of 1 per second stays one at a time). Each start is reserved when asked for, so waiting requests
    start in the order they asked."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self._interval = 1.0 / rate
        self._tolerance = (max(1, min(burst, int(rate))) - 1) * self._interval
        self._tat = 0.0  # the theoretical arrival time of the next request at the sustained rate

    def reserve(self, now: float) -> float:
        """Reserve the next start for a request asking at ``now``; how long it has to wait for it."""
        start = max(now, self._tat - self._tolerance)
        self._tat = max(self._tat, start) + self._interval
        return start - now

    async def acquire(self) -> None:
        wait = self.reserve(asyncio.get_running_loop().time())
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer, its body read within :mod:`.body`'s limits (left empty unless the status is 200)."""

    status_code: int
    reason_phrase: str
    headers: wire.Headers
    content: bytes


@dataclass
class _Endpoint:
    url: str
    #: The endpoint's host name, as the hooks report it.
    host: str
    pool: wire.Pool
    slots: asyncio.Semaphore
    pacing: _RateLimiter


class ProxmoxClient:
    """A connection to one Proxmox VE cluster through one or more API endpoints, with one set of credentials."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        credentials: Credentials,
        trust: TrustConfig | None = None,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        allowed_hosts: AllowedHosts | None = None,
        hooks: ClientHooks = NO_HOOKS,
    ) -> None:
        configured = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not configured:
            raise ValueError("at least one endpoint is needed")
        self.configured = [e.rstrip("/") for e in configured]
        self.allowed_hosts = allowed_hosts
        self._refused_configured = [e for e in self.configured if allowed_hosts and not allowed_hosts.permits(e)]
        self._discovered: list[str] = []
        #: Discovered endpoints that :meth:`set_discovered` dropped (invalid, not allowed, or insecureSkipVerify).
        self.refused_discovered: list[str] = []
        self.credentials = credentials
        self.trust = trust or TrustConfig()
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or Limits()
        self._clock = clock
        #: Told of every exchange, failover and login (see :mod:`.hooks`).
        self.hooks = hooks
        # Raises TrustConfigInvalid for a bad CA bundle: checked before any connection is made.
        self._ssl = ssl_context(self.trust)
        self._endpoints: dict[str, _Endpoint] = {}
        self._session: _Session | None = None
        self._login_lock = asyncio.Lock()
        self._start = self.configured[0]
        self.active_endpoint: str | None = None

    @property
    def endpoint(self) -> str:
        """The most preferred endpoint."""
        return self.configured[0]

    @property
    def candidates(self) -> list[str]:
        """Configured endpoints in order, then discovered ones not already configured (none at all when
        certificates are not verified: a discovered address must not receive credentials unchecked)."""
        seen = dict.fromkeys(self.configured)
        seen.update(dict.fromkeys(self._discovered))  # set_discovered keeps none with insecureSkipVerify
        return list(seen)

    @property
    def discovered(self) -> list[str]:
        """The discovered endpoints in use (a copy; assign or call :meth:`set_discovered` to change them)."""
        return list(self._discovered)

    @discovered.setter
    def discovered(self, urls: Sequence[str]) -> None:
        self.set_discovered(urls)

    def set_discovered(self, urls: Sequence[str]) -> None:
        """Use ``urls`` after the configured endpoints, each re-validated: ``https://<IP address>:<port>`` with
        the first configured endpoint's port, nothing else in the URL, and inside the allowed hosts if any. The
        others are dropped silently and listed in :attr:`refused_discovered`; with insecureSkipVerify all are."""
        target = url_host_port(self.configured[0])
        port = target[1] if target is not None else None
        kept: list[str] = []
        refused: list[str] = []
        for url in urls:
            if not self.trust.insecure_skip_verify and acceptable_discovered(
                url, port=port, allowed=self.allowed_hosts
            ):
                kept.append(url.rstrip("/"))
            else:
                refused.append(url)
        self._discovered, self.refused_discovered = kept, refused

    def begin_round(self) -> None:
        """Start the next requests at the most preferred endpoint again."""
        self._start = self.configured[0]
        self.active_endpoint = None

    async def __aenter__(self) -> ProxmoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close_idle(self) -> None:
        """Close the idle keep-alive connections of every endpoint now: when the next request is further away than
        they would live (``KEEPALIVE_EXPIRY``), keeping them only holds memory. The session stays."""
        for ep in self._endpoints.values():
            ep.pool.close_idle()

    async def aclose(self) -> None:
        """Close every pool and forget the ticket."""
        self._session = None
        endpoints, self._endpoints = self._endpoints, {}
        for ep in endpoints.values():
            await ep.pool.aclose()

    # --- public reads -------------------------------------------------------------------------------------

    async def version(self) -> Version:
        return self._parse(Version, await self.get("/version"), "/version")

    async def nodes(self) -> list[Node]:
        return [self._parse(Node, item, "/nodes") for item in self._list(await self.get("/nodes"), "/nodes")]

    async def cluster_status(self) -> list[ClusterStatusEntry]:
        data = self._list(await self.get("/cluster/status"), "/cluster/status")
        return [self._parse(ClusterStatusEntry, item, "/cluster/status") for item in data]

    async def permissions(self, path: str = "/") -> dict[str, int]:
        """The caller's effective privileges on ``path`` (``GET /access/permissions``), privilege separation
        of tokens included: ``{"Sys.Audit": 1, ...}``."""
        data = await self.get(f"/access/permissions?path={path}")
        if not isinstance(data, dict):
            raise self._shape_error("/access/permissions", "an object")
        privs = data.get(path, {})
        if not isinstance(privs, dict):
            raise self._shape_error("/access/permissions", "an object per path")
        return {str(k): int(v) for k, v in privs.items() if isinstance(v, int)}

    async def get(self, path: str) -> Any:
        """GET ``/api2/json{path}`` and return its ``data``, logging in first if needed."""
        return await self._within_total(self._get(path), f"answer GET {path}")

    async def login(self) -> None:
        """Make sure a usable session exists: a ticket for password logins (API tokens need none)."""
        if isinstance(self.credentials, PasswordCredentials):
            await self._within_total(self._ensure_ticket(), "complete the login")

    # --- internals ----------------------------------------------------------------------------------------

    async def _within_total(self, work: Coroutine[Any, Any, _T], what: str) -> _T:
        """Run ``work`` (login and failover included) within the total deadline, or raise Timeout."""
        try:
            async with asyncio.timeout(self.timeouts.total):
                return await work
        except TimeoutError:
            raise errors.Timeout(
                f"Proxmox at {self._start} did not {what} within {self.timeouts.total:g} s; "
                "check that the node is up and not overloaded",
                endpoint=self._start,
            ) from None
        except errors.ProxmoxError:
            raise
        except Exception as exc:  # noqa: BLE001 - the last net: callers handle ProxmoxError only
            raise errors.ProxmoxError(
                f"the Proxmox client failed with {type(exc).__name__} trying to {what} at {self._start}",
                endpoint=self._start,
            ) from None

    async def _get(self, path: str) -> Any:
        retried_login = False
        while True:
            headers = await self._auth_headers()
            url, response = await self._failover("GET", path, headers=headers)
            if response.status_code == 401 and isinstance(self.credentials, PasswordCredentials) and not retried_login:
                # The ticket may have been invalidated (auth key rotation on the cluster): log in once more.
                retried_login = True
                self._session = None
                continue
            return await self._data(url, response, f"GET {path}")

    async def _auth_headers(self) -> dict[str, str]:
        if isinstance(self.credentials, TokenCredentials):
            return {"Authorization": self.credentials.authorization_header()}
        session = await self._ensure_ticket()
        return {"Cookie": f"PVEAuthCookie={session.ticket}"}

    async def _ensure_ticket(self) -> _Session:
        async with self._login_lock:
            session = self._session
            if session is not None and self._clock() - session.issued < TICKET_RENEW_AFTER:
                return session
            renewed: _Session | None = None
            if session is not None:
                # Renew by posting the current ticket as the password; if it expired after all, use the password.
                with contextlib.suppress(errors.AuthenticationFailed):
                    renewed = await self._login(password=session.ticket)
            self._session = renewed or await self._login(password=None)
            return self._session

    async def _login(self, *, password: str | None) -> _Session:
        try:
            session = await self._login_once(password=password)
        except Exception:
            self.hooks.login(False)
            raise
        self.hooks.login(True)
        return session

    async def _login_once(self, *, password: str | None) -> _Session:
        creds = self.credentials
        assert isinstance(creds, PasswordCredentials)
        form = {"username": creds.username, "password": password if password is not None else creds.password}
        url, response = await self._failover("POST", "/access/ticket", data=form)
        if response.status_code == 401:
            raise errors.AuthenticationFailed(
                f"Proxmox at {url} rejected the login of '{creds.username}' "
                f"({self._reason(response)}); check the username, realm and password in the Secret",
                endpoint=url,
            )
        data = await self._data(url, response, "POST /access/ticket")
        ticket = self._parse(Ticket, data, "/access/ticket")
        if ticket.NeedTFA or ticket.ticket.startswith("PVE:!tfa!"):
            raise errors.TFARequired(
                f"'{creds.username}' has two-factor authentication on {url}: a password login cannot "
                "complete unattended; create an API token (tokenId/tokenSecret) for the operator instead",
                endpoint=url,
            )
        return _Session(ticket=ticket.ticket, csrf=ticket.CSRFPreventionToken, issued=self._clock())

    async def _failover(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[str, _Answer]:
        """Send to the current endpoint; on a transport failure, to the next candidates in order."""
        if self._refused_configured:
            raise self._host_not_allowed(self._refused_configured)
        order = self.candidates
        start = order.index(self._start) if self._start in order else 0
        failures: list[errors.ProxmoxError] = []
        for url in order[start:] + order[:start]:
            try:
                response = await self._send(url, method, path, headers=headers, data=data)
            except TransportFailure as failure:
                failures.append(failure.error)
                if len(failures) < len(order):
                    self.hooks.failover(host_of(url))
                continue
            self._start = self.active_endpoint = url
            return url, response
        first = failures[0]
        if len(failures) > 1:
            others = ", ".join(e.endpoint or "?" for e in failures[1:])
            raise type(first)(f"{first} (also failed: {others})", endpoint=first.endpoint)
        raise first

    def _host_not_allowed(self, urls: list[str]) -> errors.HostNotAllowed:
        return errors.HostNotAllowed(
            f"the credentials may not be sent to {', '.join(urls)}: the annotation {ALLOWED_HOSTS_ANNOTATION} of "
            f"the credentials Secret does not list it (it allows {self.allowed_hosts}); nothing was sent there",
            endpoint=urls[0],
        )

    def _endpoint(self, url: str) -> _Endpoint:
        ep = self._endpoints.get(url)
        if ep is None:
            t = self.timeouts
            ep = _Endpoint(
                url=url,
                host=host_of(url),
                # Raises ValueError for a URL that is not https://HOST:PORT (reported as an unusable endpoint).
                pool=wire.Pool(
                    url,
                    self._ssl,
                    self.trust.fingerprints,
                    connect_timeout=t.connect,
                    read_timeout=t.read,
                    keepalive_expiry=KEEPALIVE_EXPIRY,
                ),
                slots=asyncio.Semaphore(self.limits.max_concurrent),
                pacing=_RateLimiter(self.limits.requests_per_second, self.limits.burst),
            )
            self._endpoints[url] = ep
        return ep

    async def _send(
        self,
        url: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None,
        data: dict[str, str] | None,
    ) -> _Answer:
        """One request to one endpoint, with its retries. Raises :class:`TransportFailure` for any failure
        without an HTTP answer, whatever the exception (the next endpoint may work), and a ProxmoxError for a
        bad answer."""
        what = f"{method} {path}"
        reset_retried = throttle_retried = False
        while True:
            try:
                ep = self._endpoint(url)
                async with ep.slots:
                    await ep.pacing.acquire()
                    answer = await self._exchange(ep, method, path, headers=headers, data=data)
            except body.BodyInvalid as exc:
                raise invalid_body(url, what, str(exc)) from None
            except wire.ConnectionLost as exc:
                if method == "GET" and not reset_retried and not ssl_cause(exc):
                    reset_retried = True  # a reset connection: an idempotent GET is tried once more
                    continue
                raise TransportFailure(transport_error(url, what, exc, self.trust)) from None
            except wire.WireError as exc:
                raise TransportFailure(transport_error(url, what, exc, self.trust)) from None
            except Exception as exc:  # noqa: BLE001 - e.g. an invalid URL or port: no answer, so fail over
                raise TransportFailure(unusable(url, what, exc)) from None
            if answer.status_code in (429, 503):
                delay = retry_after(answer.headers)
                if delay is not None and delay <= RETRY_AFTER_WAIT_MAX and not throttle_retried:
                    throttle_retried = True
                    await asyncio.sleep(delay)
                    continue
            return answer

    async def _exchange(
        self,
        ep: _Endpoint,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None,
        data: dict[str, str] | None,
    ) -> _Answer:
        """Send and read the body of a 200 within :mod:`.body`'s limits. Any other status needs no body: it is
        not read, and closing the response unread closes the connection (as does passing a limit)."""
        head = [*_HEADERS, *(headers or {}).items()]
        form = None
        if data is not None:
            form = urlencode(data).encode()
            head.append(("Content-Type", "application/x-www-form-urlencoded"))
        try:
            response = await ep.pool.request(method, f"{API_PREFIX}{path}", head, form)
            try:
                content = await body.read(response) if response.status_code == 200 else b""
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            raise  # abandoned (e.g. the resource was deleted): neither an answer nor a failure
        except Exception:
            self.hooks.request(ep.host, None)
            raise
        self.hooks.request(ep.host, response.status_code)
        return _Answer(response.status_code, response.reason_phrase, response.headers, content)

    async def _data(self, url: str, response: _Answer, what: str) -> Any:
        status = response.status_code
        if status == 200:
            try:
                parsed = await body.parse(response.content)
            except body.BodyInvalid as exc:
                raise invalid_body(url, what, str(exc)) from None
            if not isinstance(parsed, dict) or "data" not in parsed:
                raise errors.InvalidResponse(
                    f"Proxmox at {url} answered {what} without the 'data' envelope; is the endpoint really a "
                    "Proxmox VE API?",
                    endpoint=url,
                )
            return parsed["data"]
        reason = self._reason(response)
        if status == 401:
            raise errors.AuthenticationFailed(
                f"Proxmox at {url} refused {what} with 401 ({reason}); check the credentials in the Secret (for a "
                "token: tokenId and tokenSecret, and that the token has not expired)",
                endpoint=url,
            )
        if status == 403:
            raise errors.PermissionDenied(
                f"Proxmox at {url} denied {what} with 403 ({reason}); grant the user or token the PVEAuditor role "
                "on / (for a privilege-separated token, on the token too)",
                endpoint=url,
            )
        if status in (429, 503):
            delay = retry_after(response.headers)
            raise errors.ServerError(
                f"Proxmox at {url} is throttling or overloaded: {what} answered {status} ({reason})"
                + (f"; it asks to retry after {delay:g} s" if delay is not None else ""),
                endpoint=url,
                retry_after=delay,
            )
        # 501 is how PVE says "no such API method": an unsupported version, not a failing server.
        if status >= 500 and status != 501:
            raise errors.ServerError(
                f"Proxmox at {url} failed {what} with {status} ({reason}); see the pveproxy and pvedaemon logs "
                "on the node",
                endpoint=url,
            )
        raise errors.InvalidResponse(
            f"Proxmox at {url} answered {what} with {status} ({reason}); this Proxmox VE version may not be supported",
            endpoint=url,
        )

    def _reason(self, response: _Answer) -> str:
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

    def _list(self, data: Any, path: str) -> list[Any]:
        if not isinstance(data, list):
            raise self._shape_error(path, "a list")
        return data

    def _shape_error(self, path: str, expected: str) -> errors.InvalidResponse:
        url = self.active_endpoint or self._start
        return errors.InvalidResponse(
            f"Proxmox at {url} answered {path} with something other than {expected}", endpoint=url
        )

    def _parse(self, model: type[_M], data: Any, path: str) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "(root)" for e in exc.errors()[:3])
            url = self.active_endpoint or self._start
            raise errors.InvalidResponse(
                f"Proxmox at {url} answered {path} in an unexpected shape (fields: {fields}); this Proxmox VE "
                "version may not be supported",
                endpoint=url,
            ) from None


def endpoint_for_ip(template: str, ip: str) -> str:
    """The API URL of a node at ``ip``, on the scheme and port of ``template`` (every PVE node serves its API on
    the same port, 8006 by default)."""
    parts = urlsplit(template)
    host = f"[{ip}]" if ":" in ip else ip
    return f"https://{host}:{parts.port or 443}"
