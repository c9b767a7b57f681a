"""The workers of all ProxmoxClusters, and the operator's finalizer on each: plain asyncio, fed by watch events.

Why not a kopf daemon per resource (the design before this one): kopf keeps, for every object with a daemon, the
newest watch body as it arrived (managedFields included) plus the daemon's own machinery, about 30 KiB per object
next to the worker's own state, and it spawns, tracks and stops each daemon through its own handler cycle. Here the
kopf side is one event handler (see :mod:`proxmox_operator.handlers`) that hands every watch event to
:meth:`Supervisor.observe`. It keeps the newest body per resource without managedFields and kubectl's
last-applied annotation (which the operator never reads) and runs one asyncio task per resource: the worker of
:mod:`.worker`.

The finalizer is the operator's own to keep, as kopf kept it for the daemon:

* A resource that is not being deleted gets the finalizer: one JSON patch of ``metadata.finalizers``, on the
  condition that they are still those it was computed from, so a concurrent change of them by anyone else is
  never overwritten, while the worker's status writes (which move the ``resourceVersion``) are no conflict. Its
  worker starts on the watch event that shows the finalizer, as kopf started a daemon: so every worker's
  resource has the finalizer, and the finalizer write never races the worker's first status write (a status
  written first would bring a watch event without the finalizer, and a second, failing finalizer write).
* When the resource is being deleted, its worker stops (a round in flight is abandoned: deletion never waits for
  an unreachable Proxmox), deregisters the cluster, posts the Deregistered Event, and only then the finalizer is
  removed, by the same conditional patch. A write that loses a race is redone from the newer version when its
  watch event arrives; one that fails (API server unavailable) is retried with backoff.
* A resource that leaves this operator's watch without being deleted (relabelled out of this shard's selector)
  arrives as DELETED: its worker stops and the finalizer stays, for the shard that takes it over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from proxmox_operator.api.v1alpha1 import Reason
from proxmox_operator.controller.ports import Key, Kube, KubeUnavailable, ObjectGone
from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.worker import is_paused, run_worker
from proxmox_operator.settings import Tuning

log = logging.getLogger(__name__)

#: Waits between attempts of a finalizer write while the API server fails (the last one repeats).
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
#: At shutdown, workers and finalizer writes get this long (seconds) to finish.
CLOSE_SECONDS = 5.0


#: Written by ``kubectl apply`` (client-side) and some GitOps tools: the whole applied manifest as JSON, CA bundle
#: included. The operator never reads it.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The watch body without ``metadata.managedFields`` and the last-applied annotation, which the operator never
    reads (together they are larger than the rest of the metadata): a new top level and metadata, sharing the rest
    with the parsed watch event (which nobody changes)."""
    meta = raw.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if "managedFields" not in meta and LAST_APPLIED not in annotations:
        return raw
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    if LAST_APPLIED in annotations:
        kept["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**raw, "metadata": kept}


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return Key(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Supervisor:
    """One worker task per resource, and the finalizer on it (see the module's docs)."""

    def __init__(
        self,
        *,
        kube: Kube,
        registry: Registry,
        tuning: Tuning,
        finalizer: str,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self.kube, self.registry, self.tuning, self.finalizer = kube, registry, tuning, finalizer
        self._retry_delays = retry_delays
        #: The newest body of each resource this operator watches.
        self._bodies: dict[Key, Mapping[str, Any]] = {}
        #: Each running worker's task and stop flag.
        self._workers: dict[Key, tuple[asyncio.Task[None], asyncio.Event]] = {}
        #: The finalizer write under way for a resource, at most one.
        self._patching: dict[Key, asyncio.Task[None]] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._workers)

    def running(self, key: Key) -> bool:
        return key in self._workers

    def writing_finalizer(self, key: Key) -> bool:
        return key in self._patching

    def observe(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        """A watch event of a ProxmoxCluster (``event_type`` None: from the initial listing)."""
        body = slim(raw)
        key = key_of(body)
        meta = body.get("metadata") or {}
        self.registry.own_writes.observe(key, body)
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            if key in self._workers and not meta.get("deletionTimestamp"):
                # Relabelled out of this shard's selector (or gone without a finalizer): another shard serves it.
                log.info("%s: no longer matches this operator's selector; its worker stops", key)
            self._stop(key)
            return
        self._bodies[key] = body
        if self._closing:
            return
        if meta.get("deletionTimestamp"):
            self._stop(key)  # its exit deregisters and then removes the finalizer
            self._settle_finalizer(key)  # when no worker runs (e.g. deleted while the operator was down)
            return
        if self.finalizer not in _finalizers(body):
            self._settle_finalizer(key)  # the worker starts on the event that shows it
        elif key not in self._workers:
            self._start(key)
        elif self.registry.changed(key, meta.get("generation"), is_paused(meta)):
            # A new generation or a pause/resume wakes the worker; its own status writes do not.
            self.registry.wake(key)

    async def close(self) -> None:
        """At operator exit: stop every worker (deregistering nothing in Kubernetes: the resources live on) and let
        finalizer writes under way finish, each bounded by :data:`CLOSE_SECONDS`."""
        self._closing = True
        for _, stopping in self._workers.values():
            stopping.set()
        tasks = [task for task, _ in self._workers.values()] + list(self._patching.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=CLOSE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _start(self, key: Key) -> None:
        stopping = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._work(key, stopping), name=f"worker {key}")
        self._workers[key] = (task, stopping)

    def _stop(self, key: Key) -> None:
        entry = self._workers.get(key)
        if entry is not None:
            entry[1].set()

    async def _work(self, key: Key, stopping: asyncio.Event) -> None:
        last = self._bodies[key]

        def snapshot() -> Mapping[str, Any]:
            nonlocal last
            last = self._bodies.get(key, last)
            return last

        try:
            await run_worker(
                key, snapshot, kube=self.kube, registry=self.registry, tuning=self.tuning, stopping=stopping
            )
        finally:
            entry = self._workers.get(key)
            if entry is not None and entry[0] is asyncio.current_task():
                del self._workers[key]
        final = snapshot()
        if (final.get("metadata") or {}).get("deletionTimestamp"):
            log.info("%s: deregistered", key)
            # When the whole namespace is being deleted, no Event can be created in it any more: one attempt.
            self.kube.post_event(
                final, type_="Normal", reason=Reason.DEREGISTERED, message="the cluster was deregistered", retry=False
            )
            self.registry.observer.event_posted("Normal", Reason.DEREGISTERED)
            self._settle_finalizer(key)

    def _wanted(self, key: Key, body: Mapping[str, Any]) -> list[str] | None:
        """The finalizers the resource should have, or None when it has them already (or must wait for its worker
        to exit)."""
        present = _finalizers(body)
        ours = self.finalizer in present
        if not (body.get("metadata") or {}).get("deletionTimestamp"):
            return None if ours else [*present, self.finalizer]
        if ours and key not in self._workers:
            return [f for f in present if f != self.finalizer]
        return None

    def _settle_finalizer(self, key: Key) -> None:
        body = self._bodies.get(key)
        if key in self._patching or body is None or self._wanted(key, body) is None:
            return
        self._patching[key] = asyncio.get_running_loop().create_task(
            self._patch_finalizer(key), name=f"finalizer of {key}"
        )

    async def _patch_finalizer(self, key: Key) -> None:
        try:
            await self._write_finalizer(key)
        finally:
            # Here, not in a done callback: an event handled before such a callback ran would find the write
            # still under way, and settle nothing.
            if self._patching.get(key) is asyncio.current_task():
                del self._patching[key]

    async def _write_finalizer(self, key: Key) -> None:
        failures = 0
        while True:
            body = self._bodies.get(key)
            wanted = None if body is None else self._wanted(key, body)
            if body is None or wanted is None:
                return
            try:
                await self.kube.patch_finalizers(key.namespace, key.name, _finalizers(body), wanted)
            except ObjectGone:
                return
            except KubeUnavailable as exc:
                if self._closing:
                    return
                delay = self._retry_delays[min(failures, len(self._retry_delays) - 1)]
                failures += 1
                log.warning("%s: writing the finalizer failed (%s); retrying in %g s", key, exc, delay)
                await asyncio.sleep(delay)
                continue
            # Written, or lost a race: either way, go on from a newer version if one arrived meanwhile;
            # otherwise its watch event is still on the way, and settles the finalizer when it arrives.
            if self._bodies.get(key) is body:
                return


def _finalizers(body: Mapping[str, Any]) -> list[str]:
    return [str(f) for f in (body.get("metadata") or {}).get("finalizers") or ()]
