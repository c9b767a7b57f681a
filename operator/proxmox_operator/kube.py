"""The Kubernetes side of the controller: Secret and ConfigMap reads, status and finalizer writes and Events, over
one async HTTP client.

Why not kopf for these writes: kopf applies a handler's ``patch`` only when the handler returns, while a worker
runs for as long as its resource exists (see :mod:`proxmox_operator.controller.supervisor`). The worker therefore
writes its status itself, one merge-patch to the ``/status`` subresource when something visible changed; the
supervisor writes the finalizer; Events are posted here too, and drained at shutdown (see :mod:`.events`).

Why not the ``kubernetes`` package: the operator makes four kinds of request, and that package costs some 34 MiB
of memory on import, a thread per call (it is synchronous) and a validation layer per call; measured with
``make bench``, it was the largest share of the CPU per registration after the probe itself. One aiohttp
session (kopf's own HTTP client, so nothing more is loaded) with the credentials of :mod:`.kubeauth` does the
same on the event loop. It replaced an ``httpx.AsyncClient``: with a thousand status writes queued at
registration, httpcore's pool scanned its queue on every step (22% of the operator's CPU per registration in a
py-spy profile of ``make bench``), and httpx with its imports cost 6 MiB of memory.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
from yarl import URL

from proxmox_operator import events, secretstore
from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.controller.ports import KubeUnavailable, ObjectGone, SecretForbidden
from proxmox_operator.events import EventPoster, Retryable
from proxmox_operator.secretstore import Secret, SecretCache

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=15.0, connect=5.0)  # every direct API call
# A GET with this Accept header returns the object's metadata only: for a Secret, never its data.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
#: Connections to the API server at once; more requests wait for one. Each costs asyncio's 256 KiB TLS buffer.
#: Status, finalizer and Event writes share them: with 8, registering 1,000 clusters in ``make bench`` queued
#: behind them (32.8 s to all Ready against 25.2 s with 32, and 16.1 against 12.5 ms of CPU per registration).
#: kopf's own session has no limit.
MAX_CONNECTIONS = 32


@dataclass(frozen=True)
class _Answer:
    status_code: int
    content: bytes


class KubeClient:
    """Implements :class:`proxmox_operator.controller.ports.Kube`. ``login`` returns the current credentials; it
    is called for the first request and again after a 401 (a rotated token)."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo], *, instance: str = "") -> None:
        self._login = login
        self._http: _Session | None = None
        #: Labelled Secrets, filled by the label-selected watch (see :mod:`.handlers`).
        self.secrets = SecretCache()
        #: ``instance`` names this replica in its Events (reportingInstance); the host name by default.
        self.events = EventPoster(self._create_event, instance=instance or events.this_instance())

    async def close(self) -> None:
        """Post the pending Events (bounded, see :meth:`EventPoster.drain`), then close the connections."""
        await self.events.drain()
        if self._http is not None:
            await self._http.session.close()
            self._http = None

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret from the label-selected watch's cache; on a miss, a LIST selected by name and label (so an
        unlabelled Secret's data is never fetched), then a metadata-only GET to tell unlabelled from missing."""
        cached = self.secrets.get(namespace, name)
        if cached is not None:
            return cached
        where = f"Secret {namespace}/{name}"
        found = await self._read(
            where,
            f"/api/v1/namespaces/{_seg(namespace)}/secrets",
            params={"fieldSelector": f"metadata.name={name}", "labelSelector": secretstore.CREDENTIALS_LABEL_SELECTOR},
        )
        items = (found or {}).get("items") or []
        if items:
            return secretstore.from_body(items[0])
        meta = await self._read(
            where, f"/api/v1/namespaces/{_seg(namespace)}/secrets/{_seg(name)}", accept=METADATA_ONLY
        )
        return None if meta is None else secretstore.from_body({"metadata": meta.get("metadata") or {}})

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        cm = await self._read(
            f"ConfigMap {namespace}/{name}", f"/api/v1/namespaces/{_seg(namespace)}/configmaps/{_seg(name)}"
        )
        return None if cm is None else {str(k): str(v) for k, v in (cm.get("data") or {}).items()}

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._patch(
            f"{_objects(namespace)}/{_seg(name)}/status",
            "patching the status",
            {"status": status},
            "application/merge-patch+json",
        )

    async def patch_finalizers(self, namespace: str, name: str, present: list[str], wanted: list[str]) -> bool:
        # A JSON patch whose test makes it conditional on the finalizers alone (test with null: absent), so a
        # concurrent status write, which moves the resourceVersion, is no conflict; 422 when the test fails.
        ops = [
            {"op": "test", "path": "/metadata/finalizers", "value": present or None},
            {"op": "add", "path": "/metadata/finalizers", "value": wanted},
        ]
        return await self._patch(
            f"{_objects(namespace)}/{_seg(name)}",
            "patching the finalizers",
            ops,
            "application/json-patch+json",
            lost=(409, 422),
        )

    async def _patch(
        self, path: str, what: str, payload: Any, content_type: str, *, lost: tuple[int, ...] = ()
    ) -> bool:
        """One PATCH of a ProxmoxCluster: True when applied, False when the answer is one of ``lost`` (a race
        lost); ObjectGone on 404, KubeUnavailable on any other failure."""
        content = json.dumps(payload, separators=(",", ":")).encode()
        response = await self._request("PATCH", path, what, data=content, headers={"Content-Type": content_type})
        if response.status_code == 404:
            raise ObjectGone
        if response.status_code in lost:
            return False
        if response.status_code >= 300:
            raise KubeUnavailable(f"{what} failed with HTTP {response.status_code}")
        return True

    def post_event(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str, retry: bool = True) -> None:
        self.events.post(body, type_=type_, reason=reason, message=message, retry=retry)

    async def _create_event(self, namespace: str, event: dict[str, Any]) -> int:
        content = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        try:
            response = await self._request(
                "POST",
                f"/api/v1/namespaces/{_seg(namespace)}/events",
                "posting an Event",
                data=content,
                headers=headers,
            )
        except KubeUnavailable as exc:
            raise Retryable(str(exc)) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Retryable(f"HTTP {response.status_code}")
        return response.status_code

    # Leases, for leader election (see :mod:`.leader`): None from create/replace means another writer won (409).
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._lease("GET", f"{_leases(namespace)}/{_seg(name)}", "reading")

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._lease("POST", _leases(namespace), "creating", body)

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._lease("PUT", f"{_leases(namespace)}/{_seg(name)}", "updating", body)

    async def _lease(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Accept": "application/json"} | ({"Content-Type": "application/json"} if content else {})
        response = await self._request(method, path, f"{what} the Lease", data=content, headers=headers)
        if response.status_code in (404, 409):
            return None
        if response.status_code >= 300:
            raise KubeUnavailable(f"{what} the Lease failed with HTTP {response.status_code}")
        return _decoded(response, f"{what} the Lease")

    async def _read(
        self, where: str, path: str, *, params: Mapping[str, str] | None = None, accept: str = "application/json"
    ) -> dict[str, Any] | None:
        """One GET: the decoded object, None on 404; SecretForbidden on 403; KubeUnavailable otherwise."""
        response = await self._request("GET", path, f"reading {where}", params=params, headers={"Accept": accept})
        if response.status_code == 404:
            return None
        if response.status_code == 403:
            raise SecretForbidden
        if response.status_code != 200:
            raise KubeUnavailable(f"reading {where} failed with HTTP {response.status_code}")
        return _decoded(response, f"reading {where}") or {}

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> _Answer:
        """Send with the current credentials; after a 401, log in again once (a rotated token) and resend."""
        for attempt in (1, 2):
            if self._http is None:
                self._http = _Session.start(self._login())
            http = self._http
            # Segments are quoted by the callers already (_seg): the URL goes out exactly as built.
            url = URL(http.server + path, encoded=True)
            if params:
                url = url.with_query(params)
            try:
                async with http.session.request(
                    method, url, headers=headers, data=data, proxy=http.proxy, timeout=TIMEOUT
                ) as response:
                    answer = _Answer(response.status, await response.read())
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeUnavailable(f"{what} failed: {type(exc).__name__}") from None
            if answer.status_code != 401 or attempt == 2:
                return answer
            if self._http is http:
                self._http = None
                await http.session.close()
        raise AssertionError("unreachable")


def _decoded(response: _Answer, what: str) -> dict[str, Any] | None:
    """The JSON object an answer holds (None for any other JSON value); KubeUnavailable when it is not JSON."""
    try:
        decoded = json.loads(response.content)
    except ValueError:
        raise KubeUnavailable(f"{what}: the API server's answer is not JSON") from None
    return decoded if isinstance(decoded, dict) else None


def _objects(namespace: str) -> str:
    return f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{_seg(namespace)}/{api.PLURAL}"


def _leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{_seg(namespace)}/leases"


def _seg(text: str) -> str:
    """One path segment (names are DNS names already; this keeps a bad one from changing the path)."""
    return quote(text, safe="")


@dataclass(frozen=True)
class _Session:
    """An aiohttp session for one set of credentials: the API server's URL, trust and authentication."""

    session: aiohttp.ClientSession
    server: str
    proxy: str | None

    @classmethod
    def start(cls, info: kopf.ConnectionInfo) -> _Session:
        headers = {"User-Agent": "proxmox-operator"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username and not info.token else None
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info), limit=MAX_CONNECTIONS),
            headers=headers,
            auth=auth,
            trust_env=info.trust_env,
        )
        return cls(session, info.server.rstrip("/"), info.proxy_url)


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    """The API server's trust as the credentials describe it, and the client certificate if there is one."""
    ctx = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None,
        cadata=_pem(info.ca_data) if info.ca_data else None,
    )
    if info.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if info.certificate_path or info.certificate_data:
        if info.certificate_data or info.private_key_data:
            # The ssl module loads certificates from files only: a private folder that lives for this call.
            with tempfile.TemporaryDirectory(prefix="pxo-kube-") as tmp:
                cert = Path(tmp) / "client.crt"
                key = Path(tmp) / "client.key"
                _write_private(cert, info.certificate_data, info.certificate_path)
                _write_private(key, info.private_key_data, info.private_key_path)
                ctx.load_cert_chain(cert, key)
        else:
            ctx.load_cert_chain(os.fsdecode(info.certificate_path or ""), os.fsdecode(info.private_key_path or ""))
    return ctx


def _pem(data: str | bytes) -> str:
    """kubeconfig's ``*-data`` fields are base64 of the PEM text; PEM text itself is accepted too."""
    raw = data.encode() if isinstance(data, str) else data
    return (raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)).decode()


def _write_private(target: Path, data: str | bytes | None, path: Any) -> None:
    content = _pem(data).encode() if data else Path(os.fsdecode(path)).read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
