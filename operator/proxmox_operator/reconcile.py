"""The business logic of proxmox-operator: plain async code, no kopf.

One *worker* runs per ProxmoxCluster (hosted by a kopf daemon, see :mod:`.handlers`). Each round it

1. reads the resource's spec and the referenced Secret,
2. logs in to Proxmox and reads ``/version`` and ``/nodes`` through the resource's pooled client,
3. writes the whole status in one PATCH to the status subresource, and posts an Event when ``Ready`` changes,
4. sleeps until the next probe, a backoff after a failure, or a wake-up: a spec change or a change of the
   referenced Secret wakes it at once, so fixing a cause is noticed within seconds.

When the worker stops (the resource is deleted, or the operator exits) its connection is closed and its
session forgotten: that is deregistration. Nothing here can raise out of a round: every failure becomes a
condition with a CamelCase reason and a message a person can act on.

The Kubernetes side is reached only through the small :class:`Kube` protocol, implemented with real clients in
:mod:`.kube` and exercised against a real API server by the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from proxmox_operator import conditions
from proxmox_operator.models import ConditionStatus, ProxmoxClusterSpec, ProxmoxClusterStatus, VersionInfo
from proxmox_operator.proxmox import (
    CredentialsInvalid,
    ProxmoxClient,
    ProxmoxError,
    Timeouts,
    TrustConfig,
    TrustConfigInvalid,
    from_secret_data,
)
from proxmox_operator.proxmox.credentials import Credentials

log = logging.getLogger(__name__)
_T = TypeVar("_T")

READY = "Ready"


@dataclass(frozen=True)
class Key:
    """A ProxmoxCluster's identity within the operator."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class SecretForbidden(Exception):
    """The operator may not read the Secret (RBAC)."""


class ObjectGone(Exception):
    """The ProxmoxCluster no longer exists (deleted while we were probing)."""


class KubeUnavailable(Exception):
    """The Kubernetes API failed a request (e.g. the API server restarts); the round is retried."""


class Kube(Protocol):
    """What the reconciler needs from Kubernetes."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """Decoded Secret data, or None when it does not exist. Raises SecretForbidden, KubeUnavailable."""

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource. Raises ObjectGone, KubeUnavailable."""

    def post_event(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str, retry: bool = True) -> None:
        """Record an Event about the object (fire and forget; ``retry=False``: a single attempt)."""


@dataclass(frozen=True)
class Tuning:
    """Timings of the worker loop. Tests shorten them; production keeps the defaults."""

    probe_interval: float = 60.0
    backoff_base: float = 2.0
    backoff_max: float = 120.0
    #: Failures only the user can fix (bad credentials, TLS) retry no faster than this. Proxmox delays every
    #: failed login by 3 s; never hammer it with bad credentials.
    slow_backoff_min: float = 10.0
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True)
class Outcome:
    """What one probe found: either a success with data, or a failure reason and message."""

    ready: bool
    reason: str
    message: str
    version: VersionInfo | None = None
    node_count: int | None = None
    #: False when only a change by the user can help (credentials, TLS settings): back off more slowly.
    transient: bool = True


@dataclass
class _Connection:
    client: ProxmoxClient
    fingerprint: str


class Registry:
    """The clusters this operator has registered: one pooled client per resource, plus wake-ups.

    Clients are keyed by resource and rebuilt when the endpoint, trust settings or credentials change (the old
    session is dropped with its pool).
    """

    def __init__(self) -> None:
        self._connections: dict[Key, _Connection] = {}
        self._wakers: dict[Key, asyncio.Event] = {}
        self._secret_refs: dict[Key, tuple[str, str]] = {}
        self._generations: dict[Key, int | None] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # closing pools of replaced clients

    def __len__(self) -> int:
        return len(self._connections)

    def waker(self, key: Key) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def wake(self, key: Key) -> None:
        waker = self._wakers.get(key)
        if waker is not None:
            waker.set()

    def references_secret(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._secret_refs.values()

    def wake_secret_users(self, namespace: str, name: str) -> list[Key]:
        """Wake every worker whose resource references Secret ``namespace/name``."""
        keys = [key for key, ref in self._secret_refs.items() if ref == (namespace, name)]
        for key in keys:
            self.wake(key)
        return keys

    def spec_changed(self, key: Key, generation: int | None) -> bool:
        """Whether ``generation`` differs from the one the worker last reconciled."""
        return key in self._generations and self._generations[key] != generation

    def note_reconciled(self, key: Key, generation: int | None, secret: tuple[str, str]) -> None:
        self._generations[key] = generation
        self._secret_refs[key] = secret

    def client(self, key: Key, spec: ProxmoxClusterSpec, creds: Credentials, timeouts: Timeouts) -> ProxmoxClient:
        """The resource's client, built anew when endpoint, TLS settings or credentials changed."""
        trust = _trust(spec)
        fingerprint = "\0".join(
            [spec.endpoint, str(trust.ca_bundle), str(trust.insecure_skip_verify), creds.fingerprint()]
        )
        conn = self._connections.get(key)
        if conn is not None and conn.fingerprint == fingerprint:
            return conn.client
        if conn is not None:
            self._retire(conn.client)
        client = ProxmoxClient(spec.endpoint, credentials=creds, trust=trust, timeouts=timeouts)
        self._connections[key] = _Connection(client=client, fingerprint=fingerprint)
        return client

    async def deregister(self, key: Key) -> bool:
        """Forget the resource: close its pool and drop its session. Returns whether it was registered."""
        self._wakers.pop(key, None)
        self._secret_refs.pop(key, None)
        self._generations.pop(key, None)
        conn = self._connections.pop(key, None)
        if conn is None:
            return False
        await conn.client.aclose()
        return True

    async def close(self) -> None:
        for key in list(self._connections):
            await self.deregister(key)

    def _retire(self, client: ProxmoxClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _trust(spec: ProxmoxClusterSpec) -> TrustConfig:
    tls = spec.tls
    if tls is None:
        return TrustConfig()
    return TrustConfig(ca_bundle=tls.ca_bundle, insecure_skip_verify=tls.insecure_skip_verify)


async def probe(key: Key, spec: ProxmoxClusterSpec, kube: Kube, registry: Registry, tuning: Tuning) -> Outcome:
    """Read the Secret, log in, read version and nodes. Never raises for an expected failure."""
    secret_name = spec.credentials_ref.name
    where = f"Secret '{secret_name}' in namespace '{key.namespace}'"
    try:
        data = await kube.read_secret(key.namespace, secret_name)
    except SecretForbidden:
        return Outcome(
            ready=False,
            reason="SecretForbidden",
            message=f"the operator may not read {where}; grant its ServiceAccount 'get' on secrets",
        )
    if data is None:
        return Outcome(
            ready=False,
            reason="SecretNotFound",
            message=f"{where} does not exist; create it with tokenId + tokenSecret or username + password",
        )
    try:
        creds = from_secret_data(data)
    except CredentialsInvalid as exc:
        return Outcome(ready=False, reason="SecretInvalid", message=f"{where}: {exc}", transient=False)
    try:
        client = registry.client(key, spec, creds, tuning.timeouts)
    except TrustConfigInvalid as exc:
        return Outcome(ready=False, reason="TLSConfigInvalid", message=str(exc), transient=False)
    try:
        await client.login()
        version = await client.version()
        nodes = await client.nodes()
    except ProxmoxError as exc:
        return Outcome(
            ready=False,
            reason=exc.reason,
            message=str(exc),
            transient=exc.transient,
        )
    online = sum(1 for n in nodes if n.status == "online")
    return Outcome(
        ready=True,
        reason="Registered",
        message=(
            f"logged in to Proxmox VE {version.version} at {spec.endpoint} as {creds.identity} "
            f"({creds.method}); {len(nodes)} node(s), {online} online"
        ),
        version=VersionInfo(version=version.version, release=version.release, repoid=version.repoid),
        node_count=len(nodes),
    )


def next_status(
    previous: Mapping[str, Any] | None,
    outcome: Outcome,
    *,
    generation: int | None,
    at: datetime,
) -> ProxmoxClusterStatus:
    """The status after a probe. Version and node count survive failures (Ready says they may be stale)."""
    prev_status = _parse_status(previous)
    prev_conditions = conditions.parse((previous or {}).get("conditions"))
    ready = conditions.transition(
        prev_conditions.get(READY),
        type_=READY,
        status=ConditionStatus.TRUE if outcome.ready else ConditionStatus.FALSE,
        reason=outcome.reason,
        message=outcome.message,
        generation=generation,
        at=at,
    )
    others = [c for t, c in prev_conditions.items() if t != READY]
    return ProxmoxClusterStatus(
        observed_generation=generation,
        version=outcome.version if outcome.ready else (prev_status.version if prev_status else None),
        node_count=outcome.node_count if outcome.ready else (prev_status.node_count if prev_status else None),
        last_probe_time=at,
        conditions=[ready, *others],
    )


def _parse_status(raw: Mapping[str, Any] | None) -> ProxmoxClusterStatus | None:
    if not raw:
        return None
    try:
        return ProxmoxClusterStatus.model_validate({k: v for k, v in raw.items() if k != "conditions"})
    except ValidationError:
        return None


def event_for(previous: Mapping[str, Any] | None, outcome: Outcome) -> tuple[str, str] | None:
    """(type, reason) of the Event to post, or None when Ready did not change (events are an audit trail)."""
    before = conditions.parse((previous or {}).get("conditions")).get(READY)
    if outcome.ready:
        if before is None:
            return ("Normal", "Registered")
        if before.status != ConditionStatus.TRUE:
            return ("Normal", "Recovered")
        return None
    if before is not None and before.status == ConditionStatus.FALSE and before.reason == outcome.reason:
        return None
    return ("Warning", outcome.reason)


def delay_after(outcome: Outcome, failures: int, tuning: Tuning, rng: Callable[[], float] = random.random) -> float:
    """Seconds until the next probe: the interval after success, exponential backoff with jitter after failure."""
    if outcome.ready:
        base = tuning.probe_interval
    else:
        base = min(tuning.backoff_max, tuning.backoff_base * 2 ** max(0, failures - 1))
        if not outcome.transient:
            base = max(base, tuning.slow_backoff_min)
    return base * (0.9 + 0.2 * rng())


async def reconcile_once(
    key: Key,
    body: Mapping[str, Any],
    kube: Kube,
    registry: Registry,
    tuning: Tuning,
) -> Outcome:
    """One round for one resource: probe, write the status, post an Event on a transition."""
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous = body.get("status")
    try:
        spec = ProxmoxClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
        outcome = Outcome(
            ready=False,
            reason="InvalidSpec",
            message=f"the spec is invalid ({fields}); fix it and apply again",
            transient=False,
        )
        secret_ref: tuple[str, str] = (key.namespace, "")
    else:
        secret_ref = (key.namespace, spec.credentials_ref.name)
        outcome = await probe(key, spec, kube, registry, tuning)
    registry.note_reconciled(key, generation, secret_ref)

    status = next_status(previous, outcome, generation=generation, at=conditions.now())
    await kube.patch_status(key.namespace, key.name, status.model_dump(by_alias=True, mode="json"))

    event = event_for(previous, outcome)
    if event is not None:
        type_, reason = event
        (log.info if outcome.ready else log.warning)("%s: %s: %s", key, outcome.reason, outcome.message)
        kube.post_event(body, type_=type_, reason=reason, message=outcome.message)
    return outcome


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
    """
    waker = registry.waker(key)
    failures = 0
    try:
        while not stopping.is_set():
            waker.clear()
            finished, outcome = await _unless_stopped(
                _round(key, snapshot, kube, registry, tuning), stopping, limit=None
            )
            if not finished or outcome is None:
                return
            failures = 0 if outcome.ready else failures + 1
            await _unless_stopped(waker.wait(), stopping, limit=delay_after(outcome, failures, tuning))
    finally:
        await registry.deregister(key)


async def _round(
    key: Key, snapshot: Callable[[], Mapping[str, Any]], kube: Kube, registry: Registry, tuning: Tuning
) -> Outcome | None:
    """One guarded round: None when the resource is gone, a failure outcome for anything unexpected."""
    try:
        return await reconcile_once(key, snapshot(), kube, registry, tuning)
    except ObjectGone:
        log.debug("%s is gone; the worker stops", key)
        return None
    except KubeUnavailable as exc:
        log.warning("%s: the Kubernetes API failed (%s); retrying", key, exc)
        return Outcome(ready=False, reason="KubeUnavailable", message=str(exc))
    except Exception:
        # A bug or an unexpected answer must not kill the worker. Our messages carry no secrets, and neither
        # do tracebacks (they hold no local variables); retry with backoff.
        log.exception("%s: unexpected error in a reconcile round; retrying", key)
        return Outcome(ready=False, reason="InternalError", message="")


async def _unless_stopped(
    aw: Coroutine[Any, Any, _T], stopping: asyncio.Event, *, limit: float | None
) -> tuple[bool, _T | None]:
    """Run ``aw`` until it finishes, ``stopping`` is set or ``limit`` seconds pass: (finished, result)."""
    work = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({work, stop}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled() or not work.done():
        return False, None
    return True, work.result()
