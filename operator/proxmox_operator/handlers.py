"""kopf registrations, and nothing else: each handler delegates to :mod:`.controller`.

Every handler is ``async``: kopf runs a plain ``def`` handler in a thread pool, and a thread hop per watch event
was 5% of the CPU per registration in ``make bench``. None of them blocks.

Why a daemon and event handlers, not create/update/delete handlers:

* A daemon per ProxmoxCluster hosts the resource's worker loop, which can be woken at once by a spec change
  or by a change of the referenced Secret; kopf's retrying change handlers sleep through such events.
* kopf stops the daemon when the resource is deleted and removes the finalizer once it has exited, so
  deregistration (closing the pool, dropping the session) happens in the worker's ``finally`` and cannot hang
  on an unreachable Proxmox: the daemon is cancelled at once.
* With no change handlers, kopf writes no diff-base or progress annotations: the only thing the operator
  adds to a user's object is its finalizer. Its writes go to the status subresource.
* Secrets and ConfigMaps are watched with event handlers that persist nothing (a change handler would copy
  Secret data into an annotation). The Secret watch is label-selected on the server: only Secrets that opted in
  with ``proxmox-operator.dev/credentials: "true"`` reach the operator (see :mod:`.secretstore`); it keeps their
  cache current and wakes the resources that reference them.
* A shard (``--selector``) watches only its ProxmoxClusters: the API server applies the selector to the watch.
  When an object is relabelled out of the shard, the server sends DELETED (with the object as it was), though the
  object lives on: kopf would keep its daemon running, so :func:`resource_changed` stops the worker itself. The
  object keeps the finalizer, which every shard shares, for the shard that takes it over.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from proxmox_operator import kube, kubeauth, secretstore, selector
from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.api.v1alpha1 import Reason
from proxmox_operator.controller.ports import Key
from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.worker import is_paused, run_worker
from proxmox_operator.settings import Tuning

log = logging.getLogger(__name__)

PXC = (api.GROUP, api.VERSION, api.PLURAL)
FINALIZER = f"{api.GROUP}/finalizer"


class SlimDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base storage, building the same essence without deep-copying what it then throws away.

    kopf builds an object's essence on every watch event, of every watched resource: a deep copy of the whole
    body, after which it drops ``metadata`` and ``status`` and picks labels and annotations back from the body.
    A ProxmoxCluster's status and managedFields are most of its body, and copying them was 3% of the CPU of a
    registration in ``make bench``. This builds from the body without them (keeping what kopf reads: kind,
    labels, annotations, ownerReferences), so the essence is the same; with extra fields (a handler's ``field=``,
    which may point anywhere), kopf's own way."""

    _KEPT_METADATA = ("labels", "annotations", "ownerReferences")

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        fields = list(extra_fields or ())
        if not fields:
            meta = body.get("metadata") or {}
            slim = {k: v for k, v in body.items() if k not in ("metadata", "status")}
            slim["metadata"] = {k: meta[k] for k in self._KEPT_METADATA if k in meta}
            body = kopf.Body(cast(kopf.RawBody, slim))
        return super().build(body=body, extra_fields=fields)


@kopf.on.startup()
async def configure(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """All kopf settings in one place. Storage names are ours so they never collide with other operators."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = SlimDiffBase(prefix=api.GROUP, key="last-handled-configuration")
    # Server-side: no other Secret of the cluster ever streams through the operator.
    settings.watching.label_selectors["", "v1", "secrets"] = secretstore.CREDENTIALS_LABEL_SELECTOR
    # A stopping worker exits within a few loop cycles (its pools close in the background); giving it up to
    # 0.1 s to do so lets kopf remove the finalizer at once, instead of polling for the exit with patches.
    settings.background.instant_exit_timeout = 0.1
    settings.posting.reporting_component = "proxmox-operator"
    settings.posting.reporting_instance = platform.node() or "proxmox-operator"
    settings.posting.event_name_prefix = "proxmox-operator-"
    # Explicit watch and request timeouts: a half-dead connection is noticed and replaced.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # With --metrics-address, the workers and the Proxmox clients report to the metrics (see cli and .metrics).
    metrics = memo.get("metrics")
    memo.registry = Registry(observer=metrics, hooks=metrics.hooks) if metrics is not None else Registry()
    memo.kube = kube.KubeClient(lambda: kubeauth.login(settings=settings))
    if "tuning" not in memo:
        memo.tuning = Tuning()
    if memo.tuning.selector:
        selector.parse(memo.tuning.selector)  # the CLI checked it; a bad one must not reach the watch
        settings.watching.label_selectors[PXC[0], PXC[2]] = memo.tuning.selector
    #: The stop flag of each running worker, for resource_changed to stop one whose object left the selector.
    memo.stop_flags = {}


@kopf.on.login()
def login(*, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """The same credentials for kopf's watches and the operator's own requests (see :mod:`.kubeauth`)."""
    return kubeauth.login(settings=settings)


@kopf.on.cleanup()
async def close(*, memo: Any, **_: Any) -> None:
    await memo.registry.close()
    await memo.kube.close()


@kopf.daemon(*PXC, id="worker", cancellation_timeout=5.0)
async def worker(
    *, body: kopf.Body, namespace: str | None, name: str, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Register the cluster and keep its status true until the resource is deleted."""
    key = Key(namespace or "", name)
    stopping = memo.stop_flags[key] = asyncio.Event()
    relay = asyncio.create_task(_relay(stopped, stopping))
    try:
        await run_worker(
            key, _snapshots(body), kube=memo.kube, registry=memo.registry, tuning=memo.tuning, stopping=stopping
        )
    finally:
        relay.cancel()
        if memo.stop_flags.get(key) is stopping:
            del memo.stop_flags[key]
        if body.get("metadata", {}).get("deletionTimestamp"):
            log.info("%s: deregistered", key)
            memo.kube.post_event(
                _plain(body),
                type_="Normal",
                reason=Reason.DEREGISTERED,
                message="the cluster was deregistered",
                # When the whole namespace is being deleted, no Event can be created in it any more.
                retry=False,
            )
            memo.registry.observer.event_posted("Normal", Reason.DEREGISTERED)


async def _relay(stopped: kopf.DaemonStopped, stopping: asyncio.Event) -> None:
    """kopf's stop flag as an asyncio.Event: the worker exits on its own instead of being cancelled."""
    await stopped.wait()
    stopping.set()


@kopf.on.event(*PXC)
async def resource_changed(
    *, event: Any, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Wake the worker when the spec changed (a new generation) or it was paused or resumed; the operator's own
    status writes do not wake it. Stop it when the object left this operator's watch without being deleted. Every
    event tells the registry what kopf now shows, for the worker's record of its own last write (see OwnWrites)."""
    key = Key(namespace or "", name)
    meta = body.get("metadata", {})
    memo.registry.own_writes.observe(key, body)
    if event.get("type") == "DELETED" and not meta.get("deletionTimestamp"):
        # Relabelled out of this shard's selector (or gone without a finalizer): another shard serves it now.
        flag = memo.stop_flags.get(key)
        if flag is not None:
            log.info("%s: no longer matches this operator's selector; its worker stops", key)
            flag.set()
        return
    # Deletion bumps a custom resource's generation too: the wake-up then ends the worker (it never probes a
    # resource being deleted, see controller.worker), which is what kopf waits for before removing the finalizer.
    if memo.registry.changed(key, meta.get("generation"), is_paused(meta)):
        memo.registry.wake(key)


def _referenced_configmap(*, namespace: str | None, name: str, memo: Any, **_: Any) -> bool:
    return bool(memo.registry.references("ConfigMap", namespace or "", name))


# No client-side label filter here: a Secret that loses its label arrives as DELETED without it, and must still
# leave the cache. The server-side selector (configure) already restricts the watch to labelled Secrets.
@kopf.on.event("", "v1", "secrets")
async def secret_changed(*, event: Any, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A labelled Secret was created, changed, deleted or lost its label: keep the cache true, and re-check the
    resources that reference it now."""
    log.debug("labelled Secret %s/%s: %s", namespace, name, event.get("type") or "listed")
    memo.kube.secrets.observe(event.get("type"), body)
    memo.registry.wake_referencing("Secret", namespace or "", name)


@kopf.on.event("", "v1", "configmaps", when=_referenced_configmap)
async def configmap_changed(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A referenced ConfigMap (CA bundle) was created, changed or deleted: re-check its users now."""
    memo.registry.wake_referencing("ConfigMap", namespace or "", name)


def _snapshots(body: kopf.Body) -> Callable[[], Any]:
    """Plain copies of the live body, copied again only when its resourceVersion moved (most rounds it has not:
    a quiet steady state writes nothing)."""
    last: list[Any] = [None, None]

    def snapshot() -> Any:
        version = body.get("metadata", {}).get("resourceVersion")
        if last[1] is None or version is None or version != last[0]:
            last[:] = [version, _plain(body)]
        return last[1]

    return snapshot


def _plain(body: Any) -> Any:
    """A deep, plain copy of a kopf body view (a snapshot the worker can read without it changing), without
    ``metadata.managedFields``: the operator never reads it, and it was most of the copy's cost."""
    meta = body.get("metadata") or {}
    copy = {str(k): _copied(v) for k, v in body.items() if k != "metadata"}
    copy["metadata"] = {str(k): _copied(v) for k, v in meta.items() if k != "managedFields"}
    return copy


def _copied(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _copied(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_copied(v) for v in obj]
    return obj
