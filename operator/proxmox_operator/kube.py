"""The Kubernetes side of the controller: Secret reads and status writes with the ``kubernetes`` package,
Events through kopf.

Why not kopf for the status write: kopf applies a daemon's ``patch`` only when the daemon function returns,
and a daemon is what lets a worker be woken by a Secret change (see :mod:`.handlers`). The worker therefore
writes its status itself, one merge-patch to the ``/status`` subresource per round. The ``kubernetes`` client is
synchronous; its calls run in worker threads so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from proxmox_operator import secretstore
from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.controller.ports import KubeUnavailable, ObjectGone, SecretForbidden
from proxmox_operator.secretstore import Secret, SecretCache

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 15.0)  # (connect, read) seconds for every direct API call
# A GET with this Accept header returns the object's metadata only: for a Secret, never its data.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def load_config() -> None:
    """In-cluster configuration when running in a Pod, else KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeClient:
    """Implements :class:`proxmox_operator.controller.ports.Kube`."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api = api_client or client.ApiClient()
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)
        #: Labelled Secrets, filled by the label-selected watch (see :mod:`.handlers`).
        self.secrets = SecretCache()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret from the label-selected watch's cache; on a miss, a LIST selected by name and label (so an
        unlabelled Secret's data is never fetched), then a metadata-only GET to tell unlabelled from missing."""
        cached = self.secrets.get(namespace, name)
        if cached is not None:
            return cached
        found = await self._call(
            "Secret",
            namespace,
            name,
            self._core.list_namespaced_secret,
            namespace,
            field_selector=f"metadata.name={name}",
            label_selector=secretstore.CREDENTIALS_LABEL_SELECTOR,
        )
        if found is not None and found.items:
            return secretstore.from_body(self._api.sanitize_for_serialization(found.items[0]))  # type: ignore[no-untyped-call]
        meta = await self._call(
            "Secret",
            namespace,
            name,
            self._core.read_namespaced_secret,
            name,
            namespace,
            _headers={"Accept": METADATA_ONLY},
            _preload_content=False,
        )
        if meta is None:
            return None
        return secretstore.from_body({"metadata": json.loads(meta.data).get("metadata") or {}})

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        cm = await self._call("ConfigMap", namespace, name, self._core.read_namespaced_config_map, name, namespace)
        return None if cm is None else dict(cm.data or {})

    async def _call(self, kind: str, namespace: str, name: str, call: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """One API read in a thread: None on 404; SecretForbidden on 403; KubeUnavailable otherwise."""
        try:
            return await asyncio.to_thread(call, *args, _request_timeout=REQUEST_TIMEOUT, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise SecretForbidden from None
            raise KubeUnavailable(f"reading {kind} {namespace}/{name} failed with HTTP {exc.status}") from None
        except HTTPError as exc:
            raise KubeUnavailable(f"reading {kind} {namespace}/{name} failed: {type(exc).__name__}") from None

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(
                self._custom.patch_namespaced_custom_object_status,
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ObjectGone from None
            raise KubeUnavailable(f"patching the status failed with HTTP {exc.status}: {exc.reason}") from None
        except HTTPError as exc:
            raise KubeUnavailable(f"patching the status failed: {type(exc).__name__}") from None

    def post_event(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str, retry: bool = True) -> None:
        kopf.event(
            kopf.Body(cast(kopf.RawBody, dict(body))),
            type=type_,
            reason=reason,
            message=message,
            backoffs=None if retry else (),
        )
