"""Status, Events and backoff from an outcome: pure functions, unit-tested without an API server."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from proxmox_operator.api.v1alpha1 import (
    REASONS,
    ConditionStatus,
    ConditionType,
    ProxmoxClusterSpec,
    ProxmoxClusterStatus,
    Reason,
    conditions,
)
from proxmox_operator.controller.outcome import (
    DUPLICATE,
    PAUSED,
    QUORATE,
    READY,
    RECONCILING,
    STALLED,
    TLS_VERIFIED,
    Cond,
    Outcome,
    cond_true,
    cond_unknown,
)
from proxmox_operator.controller.ports import Key
from proxmox_operator.settings import Tuning


def next_status(
    previous: Mapping[str, Any] | None,
    outcome: Outcome,
    *,
    generation: int | None,
    at: datetime,
    interval: float,
    extra: Mapping[ConditionType, Cond | None] | None = None,
    probed: bool = True,
) -> ProxmoxClusterStatus:
    """The status after a probe. Facts survive failures (Ready and lastProbeTime say how fresh they are).

    Reconciling and Stalled follow Ready (:func:`kstatus_conditions`; ``interval`` is the probe interval, which
    bounds the wait for a retry). ``extra`` sets (a Cond) or removes (None) conditions outside the probe:
    Duplicate, Paused; it wins over the rest. ``probed`` False (paused) keeps lastProbeTime: nothing talked to
    Proxmox.
    """
    prev = _parse_status(previous) or ProxmoxClusterStatus()
    prev_conditions = conditions.parse((previous or {}).get("conditions"))
    values: dict[ConditionType, Cond] = {
        READY: Cond(ConditionStatus.TRUE if outcome.ready else ConditionStatus.FALSE, outcome.reason, outcome.message),
        **outcome.conditions,
    }
    removed: set[str] = set()
    for type_, cond in {**kstatus_conditions(outcome, interval), **(extra or {})}.items():
        if cond is None:
            removed.add(type_)
        else:
            values[type_] = cond
    new = {
        t: conditions.transition(
            prev_conditions.get(t),
            type_=t,
            status=c.status,
            reason=c.reason,
            message=c.message,
            generation=generation,
            at=at,
        )
        for t, c in values.items()
    }
    kept = [c for t, c in prev_conditions.items() if t not in new and t not in removed]
    facts = outcome.facts
    return ProxmoxClusterStatus(
        observed_generation=generation,
        version=facts.version if facts else prev.version,
        cluster_name=facts.cluster_name if facts else prev.cluster_name,
        quorate=facts.quorate if facts else prev.quorate,
        nodes=facts.nodes if facts else prev.nodes,
        node_count=facts.nodes.total if facts else prev.node_count,
        endpoints=outcome.endpoints if outcome.endpoints is not None else prev.endpoints,
        endpoints_for=outcome.endpoints_for if outcome.endpoints is not None else prev.endpoints_for,
        active_endpoint=outcome.active_endpoint if facts else prev.active_endpoint,
        auth=outcome.auth or prev.auth,
        last_probe_time=at if probed else prev.last_probe_time,
        conditions=[*new.values(), *kept],
    )


def kstatus_conditions(outcome: Outcome, interval: float) -> dict[ConditionType, Cond | None]:
    """Reconciling and Stalled, kstatus' abnormal-true conditions: present (True) only while they apply, else
    removed (None). A failure only a user can fix (:attr:`ReasonDoc.stalled`) stalls, with Ready's reason and
    message: kstatus says Failed, and Flux fails at once. Any other failure is retried: Reconciling, kstatus says
    InProgress. Both follow from the outcome and the interval alone, so identical probes give identical values and
    a steady state writes nothing."""
    if outcome.ready:
        return {RECONCILING: None, STALLED: None}
    if REASONS[outcome.reason].stalled:
        return {RECONCILING: None, STALLED: cond_true(outcome.reason, outcome.message)}
    retry = f"retrying with backoff, within about {interval:g} s"
    message = f"{outcome.message}; {retry}" if outcome.message else retry
    return {RECONCILING: cond_true(outcome.reason, message), STALLED: None}


def probing_status(previous: Mapping[str, Any] | None, *, generation: int | None, at: datetime) -> ProxmoxClusterStatus:
    """Ready=Unknown and Reconciling=True with reason Probing, for the current generation: written while the first
    probe of a generation takes longer than ``Tuning.first_probe_grace``. Until then kstatus would see an object
    without conditions as Current, or a new spec judged by the old one. Nothing else changes: the facts, the
    other conditions and lastProbeTime stay as they were (nothing has answered yet)."""
    message = "the first probe of this spec is under way; Ready follows when it ends"
    return next_status(
        previous,
        Outcome(ready=False, reason=Reason.PROBING, message=message),
        generation=generation,
        at=at,
        interval=0,
        extra={
            READY: cond_unknown(Reason.PROBING, message),
            RECONCILING: cond_true(Reason.PROBING, message),
            PAUSED: None,
        },
        probed=False,
    )


def worth_writing(previous: Mapping[str, Any] | None, status: ProxmoxClusterStatus, *, refresh: float) -> bool:
    """Whether a status must be written: something a user can see changed, or ``lastProbeTime`` is older than
    ``refresh`` seconds. Every write is a watch event for every watcher (this operator, Argo CD, Flux) and an
    etcd write; Kubernetes moved node heartbeats out of Node status into Leases for the same reason."""
    if not previous:
        return True
    try:
        before = ProxmoxClusterStatus.model_validate(previous)
    except ValidationError:
        return True
    if _visible(before) != _visible(status):
        return True
    if status.last_probe_time is None or before.last_probe_time is None:
        return status.last_probe_time != before.last_probe_time
    return (status.last_probe_time - before.last_probe_time).total_seconds() >= refresh


def _visible(status: ProxmoxClusterStatus) -> dict[str, Any]:
    """Everything but lastProbeTime, conditions keyed by type (their order carries no meaning)."""
    dumped = status.model_dump(by_alias=True, mode="json", exclude={"last_probe_time"}, exclude_none=True)
    dumped["conditions"] = {c["type"]: c for c in dumped.get("conditions", [])}
    return dumped


def _parse_status(raw: Mapping[str, Any] | None) -> ProxmoxClusterStatus | None:
    if not raw:
        return None
    try:
        return ProxmoxClusterStatus.model_validate({k: v for k, v in raw.items() if k != "conditions"})
    except ValidationError:
        return None


def events_for(previous: Mapping[str, Any] | None, status: ProxmoxClusterStatus) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events to post: transitions only (an audit trail, not noise)."""
    before = conditions.parse((previous or {}).get("conditions"))
    after = {c.type: c for c in status.conditions}
    out: list[tuple[str, str, str]] = []

    def flipped(type_: str, to: ConditionStatus) -> bool:
        cond = after.get(type_)
        old = before.get(type_)
        return cond is not None and cond.status == to and (old is None or old.status != to)

    if PAUSED in after:
        return [("Normal", Reason.PAUSED, after[PAUSED].message)] if PAUSED not in before else []
    ready, old_ready = after[READY], before.get(READY)
    if PAUSED in before:
        out.append(("Normal", Reason.RESUMED, "probes resumed"))
        old_ready = None if ready.status == ConditionStatus.FALSE else old_ready
    if ready.status == ConditionStatus.TRUE:
        if old_ready is None:
            out.append(("Normal", Reason.REGISTERED, ready.message))
        elif old_ready.status != ConditionStatus.TRUE and old_ready.reason != Reason.PAUSED:
            out.append(("Normal", Reason.RECOVERED, ready.message))
    elif old_ready is None or old_ready.status == ConditionStatus.TRUE or old_ready.reason != ready.reason:
        out.append(("Warning", ready.reason, ready.message))
    if flipped(QUORATE, ConditionStatus.FALSE) and ready.reason != Reason.QUORUM_LOST:
        out.append(("Warning", Reason.QUORUM_LOST, after[QUORATE].message))
    old_quorate = before.get(QUORATE)
    if (
        flipped(QUORATE, ConditionStatus.TRUE)
        and old_quorate is not None
        and old_quorate.status == ConditionStatus.FALSE
    ):
        out.append(("Normal", Reason.QUORUM_RESTORED, after[QUORATE].message))
    tls = after.get(TLS_VERIFIED)
    if tls is not None and tls.reason == Reason.INSECURE_SKIP_VERIFY and flipped(TLS_VERIFIED, ConditionStatus.FALSE):
        out.append(("Warning", Reason.INSECURE_SKIP_VERIFY, "TLS certificate verification is off for this cluster"))
    if flipped(DUPLICATE, ConditionStatus.TRUE):
        out.append(("Warning", Reason.DUPLICATE, after[DUPLICATE].message))
    return out


def delay_after(
    outcome: Outcome, failures: int, tuning: Tuning, interval: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds until the next probe: the interval after success; after a failure, exponential backoff capped at
    the interval (so a recovery is seen within one interval), never below a Retry-After; +-10% jitter."""
    if outcome.ready:
        base = interval
    else:
        # The exponent is capped: 2.0 ** 1025 would raise OverflowError after a thousand failures.
        base = min(tuning.backoff_max, interval, tuning.backoff_base * 2.0 ** min(max(0, failures - 1), 30))
        if not outcome.transient:
            base = max(base, min(tuning.slow_backoff_min, interval))
        if outcome.retry_after:
            # A server's Retry-After is honoured up to the probe interval, never beyond: a hostile or broken
            # endpoint cannot stop probing with a huge value.
            base = max(base, min(outcome.retry_after, interval))
    return base * (0.9 + 0.2 * rng())


def probe_interval(spec: ProxmoxClusterSpec | None, tuning: Tuning) -> float:
    if spec is not None and spec.health_check is not None and spec.health_check.interval_seconds is not None:
        return float(spec.health_check.interval_seconds)
    return tuning.probe_interval


def duplicate_condition(key: Key, first: Key) -> Cond:
    """Duplicate, naming the earlier registrant only when it is in the resource's own namespace: a user of one
    namespace learns nothing about the objects of another."""
    who = str(first) if first.namespace == key.namespace else "a ProxmoxCluster in another namespace"
    return cond_true(
        Reason.DUPLICATE, f"the same Proxmox cluster is also registered by {who} (registered earlier); both are served"
    )
