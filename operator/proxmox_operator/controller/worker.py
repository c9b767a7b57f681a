"""The worker loop of one ProxmoxCluster: plain async code, no kopf.

One *worker* runs per ProxmoxCluster (a task of :class:`.supervisor.Supervisor`). Each round
it probes (:mod:`.probe`), writes the status when something visible changed (:mod:`.status`), posts Events for
transitions only, then sleeps until the next probe, a backoff after a failure, or a wake-up: a spec change, a
pause/resume, or a change of a referenced Secret or ConfigMap wakes it at once. When the worker stops (the
resource is deleted, or the operator exits) its connection is closed and its session forgotten: that is
deregistration. Nothing raises out of a round: every failure becomes conditions with CamelCase reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from proxmox_operator.api.v1alpha1 import (
    ConditionType,
    ProxmoxClusterSpec,
    Reason,
    conditions,
)
from proxmox_operator.controller.outcome import (
    DUPLICATE,
    PAUSE_ANNOTATION,
    PAUSED,
    PROBE_CONDITIONS,
    Cond,
    Outcome,
    cond_true,
    cond_unknown,
    stopped_early,
)
from proxmox_operator.controller.ports import Key, Kube, KubeUnavailable, ObjectGone
from proxmox_operator.controller.probe import probe
from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.sources import KnownEndpoints
from proxmox_operator.controller.status import (
    delay_after,
    duplicate_condition,
    events_for,
    next_status,
    probe_interval,
    probing_status,
    worth_writing,
)
from proxmox_operator.proxmox.client import KEEPALIVE_EXPIRY
from proxmox_operator.settings import Tuning

log = logging.getLogger(__name__)


def is_paused(meta: Mapping[str, Any]) -> bool:
    return str((meta.get("annotations") or {}).get(PAUSE_ANNOTATION, "")).lower() == "true"


def references(key: Key, spec: ProxmoxClusterSpec) -> list[tuple[str, str, str]]:
    """The Secrets and ConfigMaps a resource depends on: (kind, namespace, name)."""
    refs = [("Secret", spec.credentials_ref.namespace or key.namespace, spec.credentials_ref.name)]
    if spec.tls and spec.tls.ca_bundle_ref:
        refs.append((spec.tls.ca_bundle_ref.kind, key.namespace, spec.tls.ca_bundle_ref.name))
    return refs


async def reconcile_once(
    key: Key,
    body: Mapping[str, Any],
    kube: Kube,
    registry: Registry,
    tuning: Tuning,
) -> tuple[Outcome, float]:
    """One round for one resource: probe, write the status, post Events on transitions.

    Returns the outcome and the probe interval that applies to the resource.
    """
    shown: Mapping[str, Any] = body.get("status") or {}  # the status kopf shows, which this round's writes replace
    body = registry.own_writes.current(key, body)
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous = body.get("status") or {}
    stored: Mapping[str, Any] = previous  # the status as the API server holds it
    paused = is_paused(meta)
    extra: dict[ConditionType, Cond | None] = {}
    spec: ProxmoxClusterSpec | None = None
    probe_seconds: float | None = None
    try:
        spec = ProxmoxClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
        outcome = stopped_early(
            Reason.INVALID_SPEC, f"the spec is invalid ({fields}); fix it and apply again", transient=False
        )
        registry.note_seen(key, generation, paused, ())
    else:
        registry.note_seen(key, generation, paused, references(key, spec))
        if paused:
            registry.disconnect(key)
            outcome = Outcome(
                ready=False,
                reason=Reason.PAUSED,
                message=f"probes are paused by the annotation {PAUSE_ANNOTATION}; remove it to resume",
                conditions={t: cond_unknown(Reason.PAUSED) for t in PROBE_CONDITIONS},
            )
            extra[PAUSED] = cond_true(Reason.PAUSED, outcome.message)
        else:
            started = time.monotonic()
            outcome, stored = await _probe_in_view(
                key, spec, kube, registry, tuning, previous=previous, generation=generation, shown=shown
            )
            probe_seconds = time.monotonic() - started
            extra[PAUSED] = None
    if spec is not None and outcome.facts is not None and outcome.facts.identity:
        first = registry.identities.claim(outcome.facts.identity, key, str(meta.get("creationTimestamp", "")))
        extra[DUPLICATE] = duplicate_condition(key, first) if first is not None else None

    interval = probe_interval(spec, tuning)
    status = next_status(
        stored, outcome, generation=generation, at=conditions.now(), interval=interval, extra=extra, probed=not paused
    )
    if worth_writing(stored, status, refresh=tuning.status_refresh):
        written = status.model_dump(by_alias=True, mode="json")
        await kube.patch_status(key.namespace, key.name, written)
        log.debug("%s: status written (%s)", key, outcome.reason)
        registry.own_writes.note(key, written, replaced=(shown, previous, stored))
        registry.observer.status_written()
    registry.observer.observed(key, outcome, status, probe_seconds)
    # Events compare with the status before this round: an interim Probing status is no transition of its own.
    for type_, reason, message in events_for(previous, status):
        (log.info if type_ == "Normal" else log.warning)("%s: %s: %s", key, reason, message)
        kube.post_event(body, type_=type_, reason=reason, message=message)
        registry.observer.event_posted(type_, reason)
    return outcome, interval


async def _probe_in_view(
    key: Key,
    spec: ProxmoxClusterSpec,
    kube: Kube,
    registry: Registry,
    tuning: Tuning,
    *,
    previous: Mapping[str, Any],
    generation: int | None,
    shown: Mapping[str, Any],
) -> tuple[Outcome, Mapping[str, Any]]:
    """The probe, and the status as stored when it ended. The first probe of a generation (no status for it yet)
    that takes longer than ``tuning.first_probe_grace`` gets Ready=Unknown and Reconciling=True (Probing) written
    meanwhile: kstatus takes an object without conditions for Current. A fast probe costs no extra write, and a
    probe of an observed generation (the steady state) runs without a task of its own."""
    probe_ = _guarded_probe(key, spec, kube, registry, tuning, known=KnownEndpoints.from_status(previous))
    if previous.get("observedGeneration") == generation:
        return await probe_, previous
    probing = asyncio.ensure_future(probe_)
    stored = previous
    try:
        done, _ = await asyncio.wait({probing}, timeout=tuning.first_probe_grace)
        if not done:
            interim = probing_status(previous, generation=generation, at=conditions.now())
            stored = interim.model_dump(by_alias=True, mode="json")
            await kube.patch_status(key.namespace, key.name, stored)
            log.debug("%s: status written (%s, the first probe is slow)", key, Reason.PROBING)
            registry.own_writes.note(key, stored, replaced=(shown, previous))
            registry.observer.status_written()
        return await probing, stored
    finally:
        if not probing.done():  # cancelled, or the interim write failed: the probe goes too
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing


async def _guarded_probe(
    key: Key, spec: ProxmoxClusterSpec, kube: Kube, registry: Registry, tuning: Tuning, *, known: KnownEndpoints
) -> Outcome:
    """A probe whose unexpected failure is still written to status (Ready=False, InternalError), so an old
    Ready=True never stays behind it. Kubernetes failures go up: the round is retried without a write."""
    try:
        return await probe(key, spec, kube, registry, tuning, known=known)
    except (ObjectGone, KubeUnavailable):
        raise
    except Exception as exc:
        log.exception("%s: unexpected error in a probe", key)
        return stopped_early(
            Reason.INTERNAL_ERROR,
            f"the probe failed unexpectedly ({type(exc).__name__}); the operator's log has the details, and the "
            "probe is retried",
        )


async def run_worker(
    key: Key,
    snapshot: Callable[[], Mapping[str, Any]],
    *,
    kube: Kube,
    registry: Registry,
    tuning: Tuning,
    stopping: asyncio.Event,
) -> None:
    """The worker of one resource. Runs until ``stopping`` is set; deregisters the cluster on the way out.

    ``snapshot`` returns the newest known body of the resource (kopf keeps it current from the watch). A round
    in flight when ``stopping`` is set is abandoned at once: deletion never waits for an unreachable Proxmox.
    Rounds and sleeps run in the worker's own task, and one watcher cancels it when ``stopping`` is set: no task
    per round or per sleep (in ``make bench`` those were 28 us per round, and two more tasks per sleeping worker).
    A cancellation from anyone else (kopf giving up on the worker) goes through.
    """
    waker = registry.waker(key)
    registry.observer.registered(key)
    me = asyncio.current_task()
    assert me is not None
    stop_requested = False
    active = True

    def stop(_: object) -> None:
        nonlocal stop_requested
        if active:  # not once the worker is past its loop: the cancellation would hit its caller
            stop_requested = True
            me.cancel()

    watcher = asyncio.ensure_future(stopping.wait())
    watcher.add_done_callback(stop)
    failures = 0
    try:
        while not stopping.is_set():
            waker.clear()
            result = await _round(key, snapshot, kube, registry, tuning)
            if result is None:
                return
            outcome, interval = result
            if outcome.reason == Reason.PAUSED:
                await waker.wait()  # until resumed (or deleted)
                continue
            failures = 0 if outcome.ready else failures + 1
            delay = delay_after(outcome, failures, tuning, interval)
            if delay >= KEEPALIVE_EXPIRY:
                registry.clients.close_idle(key)  # not kept for 4 s only to expire: at registration, ~N at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await waker.wait()
    except asyncio.CancelledError:
        if not stop_requested:
            raise
        me.uncancel()  # our own stop, not someone else's: the worker ends normally
    finally:
        active = False
        watcher.remove_done_callback(stop)
        watcher.cancel()
        registry.deregister(key)


async def _round(
    key: Key, snapshot: Callable[[], Mapping[str, Any]], kube: Kube, registry: Registry, tuning: Tuning
) -> tuple[Outcome, float] | None:
    """One guarded round: None when the resource is gone or being deleted, a failure outcome for anything
    unexpected."""
    body = snapshot()
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        log.debug("%s is being deleted; the worker stops", key)
        return None
    try:
        return await reconcile_once(key, body, kube, registry, tuning)
    except ObjectGone:
        log.debug("%s is gone; the worker stops", key)
        return None
    except KubeUnavailable as exc:
        log.warning("%s: the Kubernetes API failed (%s); retrying", key, exc)
        registry.observer.failed(Reason.KUBE_UNAVAILABLE)
        return Outcome(ready=False, reason=Reason.KUBE_UNAVAILABLE, message=str(exc)), tuning.probe_interval
    except Exception:
        # A bug or an unexpected answer must not kill the worker. Our messages carry no secrets, and neither
        # do tracebacks (they hold no local variables); retry with backoff.
        log.exception("%s: unexpected error in a reconcile round; retrying", key)
        registry.observer.failed(Reason.INTERNAL_ERROR)
        return Outcome(ready=False, reason=Reason.INTERNAL_ERROR, message=""), tuning.probe_interval
