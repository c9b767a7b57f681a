"""The Kubernetes side of the reconciler: Secret reads and status writes with the ``kubernetes`` package,
Events through kopf.

Why not kopf for the status write: kopf applies a daemon's ``patch`` only when the daemon function returns,
and a daemon is what lets a worker be woken by a Secret change (see :mod:`.handlers`). The worker therefore
writes its status itself, one merge-patch to the ``/status`` subresource per round. The ``kubernetes`` client is
synchronous; its calls run in worker threads so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from proxmox_operator import models
from proxmox_operator.reconcile import KubeUnavailable, ObjectGone, SecretForbidden

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 15.0)  # (connect, read) seconds for every direct API call


def load_config() -> None:
    """In-cluster configuration when running in a Pod, else KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeClient:
    """Implements :class:`proxmox_operator.reconcile.Kube`."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api = api_client or client.ApiClient()
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        secret = await self._read("Secret", self._core.read_namespaced_secret, namespace, name)
        return None if secret is None else _decode(secret.data or {})

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        cm = await self._read("ConfigMap", self._core.read_namespaced_config_map, namespace, name)
        return None if cm is None else dict(cm.data or {})

    async def _read(self, kind: str, read: Callable[..., Any], namespace: str, name: str) -> Any:
        """GET one object: None when it does not exist; SecretForbidden on 403; KubeUnavailable otherwise."""
        try:
            return await asyncio.to_thread(read, name, namespace, _request_timeout=REQUEST_TIMEOUT)
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
                models.GROUP,
                models.VERSION,
                namespace,
                models.PLURAL,
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


def _decode(data: Mapping[str, Any]) -> dict[str, bytes]:
    """Secret values arrive base64-encoded; an undecodable value is left out (and reported as missing)."""
    out: dict[str, bytes] = {}
    for key, value in data.items():
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            log.warning("Secret key %r is not valid base64; ignoring it", key)
    return out
