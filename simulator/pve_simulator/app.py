"""The PVE API listener: pveproxy's request pipeline on aiohttp.

Follows pve-http-server ``src/PVE/APIServer/AnyEvent.pm`` (``process_header``, ``check_auth``,
``handle_api2_request``, ``response``, ``error``) with pve-manager ``PVE/HTTPServer.pm``
(``auth_handler``, ``rest_handler``) and the JSON formatter of pve-http-server
``src/PVE/APIServer/Formatter/Standard.pm``:

1. methods other than GET/POST/PUT/DELETE: ``501 method 'X' not available``;
2. paths under ``/api2``: credentials are read - the ``PVEAuthCookie`` cookie, else a
   ``PVEAuthCookie`` in ``Authorization``, else (only then) a ``PVEAPIToken`` in ``Authorization``;
   values are URI-unescaped (``Formatter.pm`` ``extract_auth_value``);
3. ``auth_handler`` failures: the status (401) and text in the reason phrase, empty body, sent after
   the authentication delay (PVE: always 3 s);
4. parameters: JSON body for ``application/json``, otherwise form-encoded; query parameters are merged
   in; ``_dc`` is dropped;
5. ``rest_handler``: ``501 Method 'GET /x' not implemented`` for unknown methods, ``403`` for tokens
   on token-less methods and missing privileges, ``400`` for parameter errors;
6. the JSON envelope ``{"data": ...}`` (plus ``errors``; plus ``message`` on error from
   libpve-http-server-perl 5.2.0), the text in the reason phrase, a 401 from a handler delayed to
   3 s after the request started;
7. headers ``Server: pve-api-daemon/3.0``, ``Cache-Control: max-age=0``, ``Pragma: no-cache``,
   ``Expires``; responses >= 400 close the connection; bodies above 1 KiB are gzip/deflate compressed
   when the client accepts it.

Idle keep-alive connections - and new connections that send no request - are closed after the
configured timeout (pveproxy: the ``AnyEvent::Handle`` timeout of 5 s, ``accept_connections``) by aiohttp.

With ``virtual_clusters`` configured, a path-routing reverse proxy sits in front of the pipeline
(:func:`route_virtual`): ``/vc/<k>/api2/json/...`` is served as ``/api2/json/...`` by virtual cluster
``k``, which differs from the configured cluster only by its name (``<cluster_name>-<k>``).  Such a proxy
is not part of PVE; it lets one simulator stand for many clusters with distinct identities.

Injected faults (:mod:`pve_simulator.faults`) act at these points: ``reset`` and ``hang`` as soon as
the request arrived, then ``latency``, then a forced 429/503 (in front of pveproxy), then the pipeline
above with any other forced status after authentication (for non-login requests).  Every request is
counted for the cluster and for the answering node (:mod:`pve_simulator.counters`), in flight from its
arrival until its response is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import socket
import struct
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web

from pve_simulator.access import AuthInfo
from pve_simulator.api import RequestContext, find_endpoint
from pve_simulator.errors import ApiError, AuthFailure, perm_exc
from pve_simulator.faults import DEFAULT_REASONS
from pve_simulator.model import Node
from pve_simulator.schema import Params, validate
from pve_simulator.state import Simulation

__all__ = [
    "BASE_URI",
    "SERVER_HEADER",
    "VIRTUAL_PREFIX",
    "ApiListener",
    "abort_connection",
    "build_api_app",
    "route_virtual",
]

BASE_URI = "/api2"
SERVER_HEADER = "pve-api-daemon/3.0"
COOKIE_NAME = "PVEAuthCookie"
APITOKEN_NAME = "PVEAPIToken"
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
_ABS_URI_RE = re.compile(rf"^{re.escape(BASE_URI)}/+([a-z][a-z0-9]+)(/.*)?$", re.DOTALL)
_COMPRESS_ABOVE = 1024
#: Path prefix of the virtual clusters' reverse proxy: ``/vc/<k>/...``.
VIRTUAL_PREFIX = "/vc/"
_VIRTUAL_RE = re.compile(r"^/vc/(0|[1-9][0-9]{0,8})(/.*)?$", re.DOTALL)
_HANG_POLL = 0.05


def abort_connection(transport: asyncio.Transport | None) -> None:
    """Close a connection with a TCP RST: ``SO_LINGER`` on with timeout 0, then abort (no TLS close_notify)."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(frozen=True)
class _Result:
    """What ``rest_handler`` returns: status, data, message and parameter errors."""

    status: int
    data: Any = None
    message: str | None = None
    errors: dict[str, str] | None = None
    empty_body: bool = False
    retry_after: int | str | None = None


def _reason(status: int, message: str | None) -> str:
    """The reason phrase: the message's first line, else the standard phrase (``response``)."""
    if message:
        first = message.split("\n", 1)[0].split("\r", 1)[0]
        if first:
            return first
    if status in DEFAULT_REASONS:
        return DEFAULT_REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def route_virtual(path: str, count: int) -> tuple[str, int | None] | None:
    """The path-routing reverse proxy in front of ``count`` virtual clusters.

    Returns ``(path, None)`` for a path it passes through unchanged (no virtual clusters configured, or a
    path outside ``/vc/``), ``(rest, k)`` for ``/vc/<k>/rest`` with ``0 <= k < count`` (``/vc/<k>`` alone
    is ``/``), and ``None`` for a ``/vc/`` path that names no virtual cluster (the proxy answers 404).
    """
    if count <= 0 or not path.startswith(VIRTUAL_PREFIX):
        return path, None
    match = _VIRTUAL_RE.match(path)
    if match is None or int(match.group(1)) >= count:
        return None
    return match.group(2) or "/", int(match.group(1))


def extract_auth_value(header: str | None, key: str) -> str | None:
    """``PVE::APIServer::Formatter::extract_auth_value``: ``KEY=value`` or ``KEY value``, unescaped."""
    if not header:
        return None
    match = re.search(rf"(?:^|\s){re.escape(key)}(?:=| )([^;]*)", header)
    if match is None or not match.group(1):
        return None
    return urllib.parse.unquote(match.group(1))


def split_abs_uri(path: str) -> tuple[str, str | None]:
    """``$split_abs_uri``: ``/api2/json/version`` -> (``/version``, ``json``)."""
    match = _ABS_URI_RE.match(path)
    if match is None:
        return "/", None
    return match.group(2) or "/", match.group(1)


def _unescape(data: bytes) -> bytes:
    return urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))


def decode_urlencoded(data: bytes) -> Params:
    """``decode_urlencoded`` of AnyEvent.pm, quirks included.

    Fields split on ``&`` and ``;``; a field's value ends at its second ``=`` (Perl's list
    assignment from ``split(/=/, ...)``); repeated fields become lists; a field without ``=`` is
    undefined.
    """
    result: Params = {}
    if not data:
        return result
    for field in re.split(rb"[&;]", data):
        pieces = field.split(b"=")
        key = _unescape(pieces[0]).decode("utf-8", "replace")
        if len(pieces) < 2:
            result[key] = None
            continue
        value: object = _unescape(pieces[1]).decode("utf-8", "replace")
        old = result.get(key)
        if old is not None:
            value = [*old, value] if isinstance(old, list) else [old, value]
        result[key] = value
    return result


class ApiListener:
    """One HTTPS listener answering as ``node`` of the simulation."""

    def __init__(self, sim: Simulation, node: Node) -> None:
        self.sim = sim
        self.node = node
        self.counters = sim.node_counters[node.name]
        self._counter_sets = (sim.counters, self.counters)
        self.faults = sim.faults.effective(node.name)
        #: Set when the listener stops: waits (latency, hang) end and their connections are dropped.
        self.stopping = asyncio.Event()

    # -- responses ------------------------------------------------------------------------------

    def _response(
        self,
        request: web.Request,
        status: int,
        message: str | None,
        body: bytes = b"",
        content_type: str | None = None,
        *,
        retry_after: int | str | None = None,
    ) -> web.Response:
        """``response``: standard headers, reason phrase, compression, connection handling."""
        date = formatdate(usegmt=True)
        headers = {
            hdrs.DATE: date,
            hdrs.EXPIRES: date,
            hdrs.CACHE_CONTROL: "max-age=0",
            hdrs.PRAGMA: "no-cache",
            hdrs.SERVER: SERVER_HEADER,
        }
        if content_type is not None:
            headers[hdrs.CONTENT_TYPE] = content_type
        if retry_after is not None:
            headers[hdrs.RETRY_AFTER] = str(retry_after)
        if len(body) > _COMPRESS_ABOVE:
            accept = request.headers.get(hdrs.ACCEPT_ENCODING, "")
            if "gzip" in accept:
                body = gzip.compress(body)
                headers[hdrs.CONTENT_ENCODING] = "gzip"
            elif "deflate" in accept:
                body = zlib.compress(body)
                headers[hdrs.CONTENT_ENCODING] = "deflate"
        keep_alive = status < 400 and request.keep_alive
        headers[hdrs.CONNECTION] = "Keep-Alive" if keep_alive else "close"
        response = web.Response(status=status, reason=_reason(status, message), body=body, headers=headers)
        if not keep_alive:
            response.force_close()
        return response

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        """``error``: plain error; the text is also the body from http-server 5.2.0."""
        body = message.encode() if self.sim.flavour.error_message_in_body else b""
        return self._response(request, status, message, body)

    def _format(self, request: web.Request, result: _Result) -> web.Response:
        """The JSON formatter (``prepare_response_data``)."""
        if result.empty_body:
            return self._response(request, result.status, result.message, retry_after=result.retry_after)
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = result.errors
        if result.status >= 400 and self.sim.flavour.error_message_in_body:
            payload["message"] = result.message or _reason(result.status, None)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._response(
            request, result.status, result.message, body, JSON_CONTENT_TYPE, retry_after=result.retry_after
        )

    # -- pipeline -------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """Entry point for every request on the listener (behind the virtual clusters' proxy, if any).

        Counters record the path pveproxy sees (without a ``/vc/<k>`` prefix) and the virtual cluster.
        """
        routed = route_virtual(request.path, self.sim.config.virtual_clusters)
        path, virtual = routed if routed is not None else (request.path, None)
        for counters in self._counter_sets:
            counters.request(request.method, path, virtual)
            counters.enter()
        try:
            if routed is None:
                for counters in self._counter_sets:
                    counters.response(404)
                self.sim.log.info(
                    "%s %s %s %s 404 (no such virtual cluster)",
                    self.node.name,
                    request.remote,
                    request.method,
                    request.path,
                )
                return web.Response(status=404, reason="Not Found", text="no such virtual cluster\n")
            return await self._handle(request, self.stopping, path, virtual)
        finally:
            for counters in self._counter_sets:
                counters.leave()

    async def _handle(
        self, request: web.Request, stopping: asyncio.Event, path: str, virtual: int | None
    ) -> web.Response:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sim = self.sim
        faults = self.faults
        if faults.take_reset():
            return self._drop(request, "reset", *(counters.reset_connection for counters in self._counter_sets))
        if faults.take_hang():
            for counters in self._counter_sets:
                counters.hang()
            sim.log.info(
                "%s %s %s %s left unanswered (hang fault)", self.node.name, request.remote, request.method, request.path
            )
            await self._wait_until_gone(request, stopping)
            return self._drop(request, None)
        latency = faults.latency
        if latency > 0 and await self._pause(latency, stopping):
            return self._drop(request, "listener stopped")
        authid: str | None = None
        forced = faults.take_forced(front=True)
        if forced is not None:
            status, reason, retry_after = forced
            response = self._response(request, status, reason, retry_after=retry_after)
        else:
            try:
                response, authid = await self._dispatch(request, started, path, virtual)
            except Exception as exc:  # any crash becomes a 500/501, like PVE's eval around the handler
                sim.log.exception("internal error handling %s %s", request.method, request.path)
                response = self._error(request, sim.flavour.internal_error_status, f"{type(exc).__name__}")
        for counters in self._counter_sets:
            counters.response(response.status)
        sim.log.info(
            "%s %s %s %s %d %s",
            self.node.name,
            request.remote,
            request.method,
            request.path,
            response.status,
            authid or "-",
        )
        return response

    @staticmethod
    async def _pause(seconds: float, stopping: asyncio.Event) -> bool:
        """Sleep ``seconds``; ``True`` if the listener was stopped meanwhile."""
        try:
            await asyncio.wait_for(stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _wait_until_gone(request: web.Request, stopping: asyncio.Event) -> None:
        """Wait until the client went away or the listener stops."""
        while not stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), _HANG_POLL)

    def _drop(self, request: web.Request, why: str | None, *record: Callable[[], None]) -> web.Response:
        """Abort the connection with a TCP RST (``SO_LINGER`` 0); the response is never sent."""
        for action in record:
            action()
        if why is not None:
            self.sim.log.info(
                "%s %s %s %s connection %s", self.node.name, request.remote, request.method, request.path, why
            )
        abort_connection(request.transport)
        return web.Response(status=500)

    async def _dispatch(
        self, request: web.Request, started: float, path: str, virtual: int | None
    ) -> tuple[web.Response, str | None]:
        """The pipeline for ``path`` (the request's, less a virtual cluster's prefix); returns the response and
        the id to log (authenticated or login user)."""
        sim = self.sim
        method = request.method
        if method not in _KNOWN_METHODS:
            return self._response(request, 501, f"method '{method}' not available"), None
        if not path.startswith(BASE_URI):
            return self._error(request, sim.flavour.internal_error_status, f"no such file '{path}'"), None

        authorization = request.headers.get(hdrs.AUTHORIZATION)
        ticket = extract_auth_value(request.headers.get(hdrs.COOKIE), COOKIE_NAME)
        if not ticket:
            ticket = extract_auth_value(authorization, COOKIE_NAME)
        api_token = None if ticket else extract_auth_value(authorization, APITOKEN_NAME)
        rel_uri, fmt = split_abs_uri(path)
        if fmt is None:
            return self._error(request, 501, "no such uri"), None
        is_login = method == "POST" and rel_uri == "/access/ticket"
        if is_login:
            for counters in self._counter_sets:
                counters.login()
        try:
            auth = sim.access.auth_handler(
                method, rel_uri, ticket, request.headers.get("CSRFPreventionToken"), api_token
            )
        except AuthFailure as exc:
            for counters in self._counter_sets:
                counters.auth_failure()
            await asyncio.sleep(sim.config.auth_fail_delay)
            return self._response(request, exc.status, exc.message), None
        authid = auth.authid

        body = await request.read()
        if body and method not in ("PUT", "POST"):
            return self._error(request, 501, f"Unexpected content for method '{method}'"), authid
        if fmt != "json":
            return self._error(request, 501, f"no formatter for uri {rel_uri}, {fmt}"), authid
        try:
            params = self._extract_params(request, body)
        except ValueError as exc:
            return self._error(request, sim.flavour.internal_error_status, str(exc)), authid
        params.pop("_dc", None)

        if is_login:
            login_user = params.get("username")
            authid = login_user if isinstance(login_user, str) else None
        result = self._rest_handler(
            request, method=method, rel_uri=rel_uri, auth=auth, params=params, is_login=is_login, virtual=virtual
        )
        if is_login:
            for counters in self._counter_sets:
                counters.login(result.status)
        if result.status == 401:
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(sim.config.auth_fail_delay - elapsed, 0.0))
        return self._format(request, result), authid

    @staticmethod
    def _extract_params(request: web.Request, body: bytes) -> Params:
        """``extract_params``: body (JSON or form) for PUT/POST, then the query string on top."""
        params: Params = {}
        if request.method in ("PUT", "POST"):
            if request.content_type == "application/json":
                try:
                    decoded = json.loads(body or b"null")
                except ValueError:
                    raise ValueError("malformed JSON string\n") from None
                if not isinstance(decoded, dict):
                    raise ValueError("Not a HASH reference\n")
                params = dict(decoded)
            else:
                params = decode_urlencoded(body)
        params.update(decode_urlencoded(request.query_string.encode("utf-8")))
        return params

    def _rest_handler(
        self,
        request: web.Request,
        *,
        method: str,
        rel_uri: str,
        auth: AuthInfo,
        params: Params,
        is_login: bool,
        virtual: int | None = None,
    ) -> _Result:
        sim = self.sim
        endpoint = find_endpoint(method, rel_uri)
        if endpoint is None:
            return _Result(501, message=f"Method '{method} {rel_uri}' not implemented")
        try:
            if auth.api_token and not endpoint.allowtoken:
                raise perm_exc(f"URI '{rel_uri}' not available with API token, need proper ticket.")
            if endpoint.privileges and not sim.accounts.check(auth.authid or "", endpoint.privileges):
                raise perm_exc(f"/, {'|'.join(endpoint.privileges)}")
            forced = None if is_login else self.faults.take_forced(front=False)
            if forced is not None:
                status, reason, retry_after = forced
                return _Result(status, message=reason, empty_body=status in DEFAULT_REASONS, retry_after=retry_after)
            checked = validate(params, endpoint.parameters)
            context = RequestContext(
                sim=sim,
                node=self.node,
                auth=auth,
                client_ip=request.remote or "",
                refuse_logins=self.faults.refuse_logins,
                virtual_cluster=virtual,
            )
            return _Result(200, data=endpoint.handler(context, checked))
        except ApiError as exc:
            return _Result(exc.status, message=exc.message, errors=exc.errors)


def build_api_app(sim: Simulation, node: Node, listener: ApiListener | None = None) -> web.Application:
    """An aiohttp application answering every request as ``node`` of ``sim`` (through ``listener``)."""
    if listener is None:
        listener = ApiListener(sim, node)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", listener.handle)
    return app
