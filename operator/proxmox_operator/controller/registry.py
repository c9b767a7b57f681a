"""The clusters this operator has registered, as three small parts behind one facade (:class:`Registry`): the
client cache (:class:`Clients`: one client per resource with its slowly changing facts), the wake-up bus
(:class:`WakeUps`: wake-ups, references to Secrets and ConfigMaps) and the duplicate index (:class:`Identities`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.api.v1alpha1 import (
    ProxmoxClusterSpec,
)
from proxmox_operator.controller.observer import NO_OBSERVER, Observer
from proxmox_operator.controller.outcome import Cond, cond_unknown
from proxmox_operator.controller.ports import Key
from proxmox_operator.proxmox import (
    AllowedHosts,
    Limits,
    Node,
    ProxmoxClient,
    Timeouts,
    TrustConfig,
    Version,
)
from proxmox_operator.proxmox.credentials import Credentials
from proxmox_operator.proxmox.hooks import NO_HOOKS, ClientHooks

#: A referenced object: (kind, namespace, name).
Ref = tuple[str, str, str]


@dataclass
class SlowFacts:
    """What a cluster rarely changes, read at login and then every ``Tuning.facts_refresh`` seconds: the version,
    the node list (certificate fingerprints, subscription level) and the effective permissions. Kept with the
    client, so new credentials or endpoints read them again at once."""

    version: Version | None = None
    nodes: list[Node] = field(default_factory=list)
    permissions: Cond = field(default_factory=cond_unknown)
    read_at: float | None = None

    def due(self, now: float, every: float) -> bool:
        return self.version is None or self.read_at is None or now - self.read_at >= every

    def store(self, version: Version, nodes: list[Node], permissions: Cond, now: float) -> None:
        self.version, self.nodes, self.permissions, self.read_at = version, nodes, permissions, now


@dataclass
class _Connection:
    client: ProxmoxClient
    shape: tuple[object, ...]
    slow: SlowFacts = field(default_factory=SlowFacts)


class WakeUps:
    """The wake-up bus: one event per worker, what each resource references (Secrets, ConfigMaps), and the
    generation and pause state its worker last saw. Lookups by reference are indexed: a Secret event at 1,000
    resources costs one dict lookup, not a scan."""

    def __init__(self) -> None:
        self._wakers: dict[Key, asyncio.Event] = {}
        self._refs: dict[Key, frozenset[Ref]] = {}
        self._by_ref: dict[Ref, set[Key]] = {}
        self._seen: dict[Key, tuple[int | None, bool]] = {}

    def waker(self, key: Key) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def wake(self, key: Key) -> None:
        waker = self._wakers.get(key)
        if waker is not None:
            waker.set()

    def references(self, kind: str, namespace: str, name: str) -> bool:
        """Whether any registered resource references this Secret or ConfigMap."""
        return bool(self._by_ref.get((kind, namespace, name)))

    def wake_referencing(self, kind: str, namespace: str, name: str) -> list[Key]:
        """Wake every worker whose resource references the Secret or ConfigMap ``namespace/name``."""
        keys = list(self._by_ref.get((kind, namespace, name), ()))
        for key in keys:
            self.wake(key)
        return keys

    def changed(self, key: Key, generation: int | None, paused: bool) -> bool:
        """Whether the spec (a new generation) or the pause annotation differs from what the worker last saw."""
        seen = self._seen.get(key)
        return seen is not None and seen != (generation, paused)

    def note_seen(self, key: Key, generation: int | None, paused: bool, refs: Iterable[Ref]) -> None:
        self._seen[key] = (generation, paused)
        new = frozenset(refs)
        old = self._refs.get(key, frozenset())
        if new == old:
            return
        self._unindex(key, old - new)
        for ref in new - old:
            self._by_ref.setdefault(ref, set()).add(key)
        self._refs[key] = new

    def forget(self, key: Key) -> None:
        self._wakers.pop(key, None)
        self._seen.pop(key, None)
        self._unindex(key, self._refs.pop(key, frozenset()))

    def _unindex(self, key: Key, refs: Iterable[Ref]) -> None:
        for ref in refs:
            keys = self._by_ref.get(ref)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_ref[ref]


class Identities:
    """The duplicate index: which resources registered which Proxmox cluster (its identity), and since when."""

    def __init__(self) -> None:
        # cluster identity -> {key: (creationTimestamp, key)}; and each key's current identity.
        self._claims: dict[str, dict[Key, tuple[str, str]]] = {}
        self._of: dict[Key, str] = {}

    def claim(self, identity: str, key: Key, created: str) -> Key | None:
        """Record that ``key`` registers the Proxmox cluster ``identity``; return the earlier registrant, if any."""
        if self._of.get(key, identity) != identity:
            self.release(key)
        self._of[key] = identity
        claims = self._claims.setdefault(identity, {})
        claims[key] = (created, str(key))
        first = min(claims, key=lambda k: claims[k])
        return None if first == key else first

    def release(self, key: Key) -> list[Key]:
        """Forget ``key``'s claim; returns the other registrants of the same cluster (one may now be first)."""
        identity = self._of.pop(key, None)
        claims = self._claims.get(identity or "")
        if identity is None or claims is None:
            return []
        claims.pop(key, None)
        if not claims:
            del self._claims[identity]
        return list(claims)


class Clients:
    """The client cache: one Proxmox client per resource with its slowly changing facts, rebuilt when endpoints,
    trust, credentials, timeouts or limits change (the old session is dropped, its pools close in the background).
    """

    def __init__(self, hooks: ClientHooks = NO_HOOKS) -> None:
        self._hooks = hooks
        self._connections: dict[Key, _Connection] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # closing pools of replaced clients

    def __len__(self) -> int:
        return len(self._connections)

    def client(
        self,
        key: Key,
        spec: ProxmoxClusterSpec,
        creds: Credentials,
        trust: TrustConfig,
        allowed_hosts: AllowedHosts | None = None,
    ) -> ProxmoxClient:
        """The resource's client, built anew when anything that shapes the connection changed."""
        timeouts, limits = _timeouts(spec), _limits(spec)
        # Compared as a tuple (the CA bundle by equality, the credentials by their digest): per probe this is a
        # few comparisons, where a digest of the whole shape cost a repr and a SHA-256 of the CA bundle.
        shape = (
            tuple(spec.all_endpoints),
            trust,
            creds.fingerprint(),
            timeouts,
            limits,
            str(allowed_hosts),
        )
        conn = self._connections.get(key)
        if conn is not None and conn.shape == shape:
            return conn.client
        if conn is not None:
            self._retire(conn.client)
        client = ProxmoxClient(
            spec.all_endpoints,
            credentials=creds,
            trust=trust,
            timeouts=timeouts,
            limits=limits,
            allowed_hosts=allowed_hosts,
            hooks=self._hooks,
        )
        self._connections[key] = _Connection(client=client, shape=shape)
        return client

    def close_idle(self, key: Key) -> None:
        """Close the resource's idle Proxmox connections (its next round is further away than they would live)."""
        conn = self._connections.get(key)
        if conn is not None:
            conn.client.close_idle()

    def slow_facts(self, key: Key) -> SlowFacts:
        """The slowly changing facts of the resource's current client (fresh when the client was rebuilt)."""
        conn = self._connections.get(key)
        return conn.slow if conn is not None else SlowFacts()

    def drop(self, key: Key) -> bool:
        """Drop the resource's client; its pools close in the background. Returns whether it had one."""
        conn = self._connections.pop(key, None)
        if conn is None:
            return False
        self._retire(conn.client)
        return True

    async def close(self) -> None:
        """Drop every client and wait until every pool is closed."""
        for key in list(self._connections):
            self.drop(key)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _retire(self, client: ProxmoxClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


class OwnWrites:
    """The status each worker wrote last, and the statuses it replaced.

    kopf's copy of an object lags the operator's own status write by one watch event or more. A round that starts
    before that event arrives (woken during the round before, e.g. by the listing of its Secret) would judge
    against the status from before the write: a second Registered Event and a second write. As long as kopf shows
    one of the statuses the write replaced (the one it went over, an interim Probing status of the same round, an
    earlier write of the worker's that kopf has not shown yet), the written status stands in for it; versions in
    between that left the status alone (kopf's finalizer, a label) change nothing. Every watch event of the object
    is shown to :meth:`observe`: once kopf shows any other status (the write, or anyone else's), the entry is gone,
    and every later version, a tampered or emptied status included, is taken as it is.
    """

    def __init__(self) -> None:
        self._last: dict[Key, tuple[tuple[Mapping[str, Any], ...], Mapping[str, Any]]] = {}

    def note(self, key: Key, written: Mapping[str, Any], *, replaced: Iterable[Mapping[str, Any]]) -> None:
        self._last[key] = (tuple(replaced), written)

    def observe(self, key: Key, body: Mapping[str, Any]) -> None:
        """kopf's copy of the object is now ``body`` (a watch event, or a round's snapshot)."""
        last = self._last.get(key)
        if last is not None and (body.get("status") or {}) not in last[0]:
            del self._last[key]

    def current(self, key: Key, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """``body`` with the status the API server holds as far as the worker knows."""
        self.observe(key, body)
        last = self._last.get(key)
        return body if last is None else {**body, "status": last[1]}

    def forget(self, key: Key) -> None:
        self._last.pop(key, None)


class Registry:
    """The clusters this operator has registered: the client cache (``clients``), the wake-up bus (``wakeups``, also
    reachable through the shortcuts the kopf handlers use) and the duplicate index (``identities``), and
    deregistration across the three. ``observer`` is told what the workers find (metrics), ``hooks`` what the
    Proxmox clients send; both report nowhere by default."""

    def __init__(self, *, observer: Observer = NO_OBSERVER, hooks: ClientHooks = NO_HOOKS) -> None:
        self.observer = observer
        self.clients = Clients(hooks)
        self.wakeups = WakeUps()
        self.identities = Identities()
        self.own_writes = OwnWrites()

    def __len__(self) -> int:
        return len(self.clients)

    def waker(self, key: Key) -> asyncio.Event:
        return self.wakeups.waker(key)

    def wake(self, key: Key) -> None:
        self.wakeups.wake(key)

    def references(self, kind: str, namespace: str, name: str) -> bool:
        return self.wakeups.references(kind, namespace, name)

    def wake_referencing(self, kind: str, namespace: str, name: str) -> list[Key]:
        return self.wakeups.wake_referencing(kind, namespace, name)

    def changed(self, key: Key, generation: int | None, paused: bool) -> bool:
        return self.wakeups.changed(key, generation, paused)

    def note_seen(self, key: Key, generation: int | None, paused: bool, refs: Iterable[Ref]) -> None:
        self.wakeups.note_seen(key, generation, paused, refs)

    def disconnect(self, key: Key) -> bool:
        """Drop the resource's client (pause), keeping what the worker needs to resume. Returns whether it had a
        connection."""
        return self.clients.drop(key)

    def deregister(self, key: Key) -> bool:
        """Forget the resource: drop its session, close its pools in the background, and wake the next registrant
        of the same Proxmox cluster (it is no longer a duplicate). Returns whether it had a connection. Nothing
        here waits: a deleted resource's worker exits within a few event-loop cycles, and its finalizer goes at
        once."""
        self.wakeups.forget(key)
        self.own_writes.forget(key)
        self.observer.deregistered(key)
        for other in self.identities.release(key):
            self.wakeups.wake(other)
        return self.clients.drop(key)

    async def close(self) -> None:
        """At operator exit: forget every resource and wait until every pool is closed."""
        await self.clients.close()


def _timeouts(spec: ProxmoxClusterSpec) -> Timeouts:
    t = spec.timeouts or api.TimeoutsSpec()
    return Timeouts(connect=t.connect_seconds, read=t.read_seconds, total=t.total_seconds)


def _limits(spec: ProxmoxClusterSpec) -> Limits:
    lim = spec.limits or api.LimitsSpec()
    return Limits(max_concurrent=lim.max_concurrent_requests, requests_per_second=lim.requests_per_second)
