"""The clusters this operator has registered: one client per resource, its slowly changing facts, the wake-ups,
the references to Secrets and ConfigMaps, and the index of cluster identities (Duplicate)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.api.v1alpha1 import (
    ProxmoxClusterSpec,
)
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
    fingerprint: str
    slow: SlowFacts = field(default_factory=SlowFacts)


class Registry:
    """The clusters this operator has registered: one client per resource, wake-ups, references, identities.

    Clients are keyed by resource and rebuilt when endpoints, trust, credentials, timeouts or limits change (the
    old session is dropped with its pools).
    """

    def __init__(self) -> None:
        self._connections: dict[Key, _Connection] = {}
        self._wakers: dict[Key, asyncio.Event] = {}
        self._refs: dict[Key, frozenset[tuple[str, str, str]]] = {}
        self._generations: dict[Key, int | None] = {}
        self._paused: dict[Key, bool] = {}
        # cluster identity -> {key: (creationTimestamp, key)}: who registered the same Proxmox cluster.
        self._identities: dict[str, dict[Key, tuple[str, str]]] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # closing pools of replaced clients

    def __len__(self) -> int:
        return len(self._connections)

    def waker(self, key: Key) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def wake(self, key: Key) -> None:
        waker = self._wakers.get(key)
        if waker is not None:
            waker.set()

    def references(self, kind: str, namespace: str, name: str) -> bool:
        """Whether any registered resource references this Secret or ConfigMap."""
        ref = (kind, namespace, name)
        return any(ref in refs for refs in self._refs.values())

    def wake_referencing(self, kind: str, namespace: str, name: str) -> list[Key]:
        """Wake every worker whose resource references the Secret or ConfigMap ``namespace/name``."""
        ref = (kind, namespace, name)
        keys = [key for key, refs in self._refs.items() if ref in refs]
        for key in keys:
            self.wake(key)
        return keys

    def changed(self, key: Key, generation: int | None, paused: bool) -> bool:
        """Whether the spec (a new generation) or the pause annotation differs from what the worker last saw."""
        if key not in self._generations:
            return False
        return self._generations[key] != generation or self._paused.get(key, False) != paused

    def note_seen(self, key: Key, generation: int | None, paused: bool, refs: Iterable[tuple[str, str, str]]) -> None:
        self._generations[key] = generation
        self._paused[key] = paused
        self._refs[key] = frozenset(refs)

    def claim(self, identity: str, key: Key, created: str) -> Key | None:
        """Record that ``key`` registers the Proxmox cluster ``identity``; return the earlier registrant, if any."""
        claims = self._identities.setdefault(identity, {})
        for other_identity, other in self._identities.items():
            if other_identity != identity and key in other:
                del other[key]
        claims[key] = (created, str(key))
        first = min(claims, key=lambda k: claims[k])
        return None if first == key else first

    def _release(self, key: Key) -> None:
        for identity, claims in list(self._identities.items()):
            if claims.pop(key, None) is not None:
                for other in claims:
                    self.wake(other)  # the next one in line is no longer a duplicate
            if not claims:
                del self._identities[identity]

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
        fingerprint = hashlib.sha256(
            repr(
                (
                    spec.all_endpoints,
                    trust.ca_bundle,
                    sorted(trust.fingerprints),
                    trust.insecure_skip_verify,
                    creds.fingerprint(),
                    timeouts,
                    limits,
                    str(allowed_hosts),
                )
            ).encode()
        ).hexdigest()
        conn = self._connections.get(key)
        if conn is not None and conn.fingerprint == fingerprint:
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
        )
        self._connections[key] = _Connection(client=client, fingerprint=fingerprint)
        return client

    def slow_facts(self, key: Key) -> SlowFacts:
        """The slowly changing facts of the resource's current client (fresh when the client was rebuilt)."""
        conn = self._connections.get(key)
        return conn.slow if conn is not None else SlowFacts()

    def disconnect(self, key: Key) -> bool:
        """Drop the resource's client (pause), keeping what the worker needs to resume; its pools close in the
        background. Returns whether it had a connection."""
        conn = self._connections.pop(key, None)
        if conn is None:
            return False
        self._retire(conn.client)
        return True

    def deregister(self, key: Key) -> bool:
        """Forget the resource: drop its session, close its pools in the background. Returns whether it had a
        connection. Nothing here waits: a deleted resource's worker exits within a few event-loop cycles, so kopf
        removes the finalizer at once instead of polling for the daemon's exit with extra patches."""
        self._wakers.pop(key, None)
        self._refs.pop(key, None)
        self._generations.pop(key, None)
        self._paused.pop(key, None)
        self._release(key)
        return self.disconnect(key)

    async def close(self) -> None:
        """At operator exit: forget every resource and wait until every pool is closed."""
        for key in list(self._connections):
            self.deregister(key)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _retire(self, client: ProxmoxClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _timeouts(spec: ProxmoxClusterSpec) -> Timeouts:
    t = spec.timeouts or api.TimeoutsSpec()
    return Timeouts(connect=t.connect_seconds, read=t.read_seconds, total=t.total_seconds)


def _limits(spec: ProxmoxClusterSpec) -> Limits:
    lim = spec.limits or api.LimitsSpec()
    return Limits(max_concurrent=lim.max_concurrent_requests, requests_per_second=lim.requests_per_second)
