"""The business logic of proxmox-operator: plain async code, no kopf.

One *worker* runs per ProxmoxCluster (hosted by a kopf daemon, see :mod:`.handlers`). Each round it

1. reads the resource's spec, the referenced Secret (and CA bundle, when referenced),
2. logs in to Proxmox and reads ``/version``, ``/nodes``, ``/cluster/status`` and the caller's permissions
   through the resource's :class:`~proxmox_operator.proxmox.ProxmoxClient`, failing over between endpoints,
3. writes the whole status in one PATCH to the status subresource, and posts Events for transitions only,
4. sleeps until the next probe (the health-check interval with jitter), a backoff after a failure, or a
   wake-up: a spec change, a pause/resume, or a change of a referenced Secret or ConfigMap wakes it at once.

When the worker stops (the resource is deleted, or the operator exits) its connection is closed and its
session forgotten: that is deregistration. Nothing here raises out of a round: every failure becomes conditions
with CamelCase reasons and messages a person can act on.

The Kubernetes side is reached only through the small :class:`Kube` protocol, implemented with real clients in
:mod:`.kube` and exercised against a real API server by the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from proxmox_operator import conditions, models, secretstore
from proxmox_operator.models import (
    AuthStatus,
    ConditionStatus,
    NodesStatus,
    NodeStatus,
    ProxmoxClusterSpec,
    ProxmoxClusterStatus,
    VersionInfo,
)
from proxmox_operator.proxmox import (
    ALLOWED_HOSTS_ANNOTATION,
    AllowedHosts,
    AllowedHostsInvalid,
    CredentialsInvalid,
    Limits,
    Node,
    ProxmoxClient,
    ProxmoxError,
    Timeouts,
    TrustConfig,
    TrustConfigInvalid,
    Version,
    endpoint_for_ip,
    from_secret_data,
)
from proxmox_operator.proxmox import errors as pve_errors
from proxmox_operator.proxmox.credentials import Credentials
from proxmox_operator.secretstore import Secret

log = logging.getLogger(__name__)
_T = TypeVar("_T")

READY = "Ready"
AUTHENTICATED = "Authenticated"
REACHABLE = "Reachable"
TLS_VERIFIED = "TLSVerified"
QUORATE = "Quorate"
PERMISSIONS = "PermissionsSufficient"
PAUSED = "Paused"
DUPLICATE = "Duplicate"
PROBE_CONDITIONS = (AUTHENTICATED, REACHABLE, TLS_VERIFIED, QUORATE, PERMISSIONS)
PAUSE_ANNOTATION = f"{models.GROUP}/paused"
#: What the operator reads needs Sys.Audit on / (cluster status, node details; pve-manager API2/Cluster.pm).
REQUIRED_PRIVILEGES = ("Sys.Audit",)


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

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret (data only when it carries the opt-in label), or None when it does not exist. Raises
        SecretForbidden, KubeUnavailable."""

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """ConfigMap data, or None when it does not exist. Raises SecretForbidden, KubeUnavailable."""

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource. Raises ObjectGone, KubeUnavailable."""

    def post_event(self, body: Mapping[str, Any], *, type_: str, reason: str, message: str, retry: bool = True) -> None:
        """Record an Event about the object (fire and forget; ``retry=False``: a single attempt)."""


@dataclass(frozen=True)
class Tuning:
    """Operator-wide settings of the worker loop. Tests shorten them; production keeps the defaults."""

    probe_interval: float = 60.0
    backoff_base: float = 2.0
    backoff_max: float = 120.0
    #: Failures only the user can fix (bad credentials, TLS) retry no faster than this. Proxmox delays every
    #: failed login by 3 s; never hammer it with bad credentials.
    slow_backoff_min: float = 10.0
    allow_cross_namespace_secrets: bool = False
    #: A status in which nothing changed is written again only when its lastProbeTime is this old (seconds):
    #: lastProbeTime is a coarse heartbeat, while every change a user can see is written at once.
    status_refresh: float = 600.0
    #: Version, node list and permissions are read again after this many seconds (and whenever the client is
    #: rebuilt); quorum and membership on every probe.
    facts_refresh: float = 600.0


@dataclass(frozen=True)
class Cond:
    """A condition's value as a probe computed it."""

    status: ConditionStatus
    reason: str
    message: str = ""


def _true(reason: str, message: str = "") -> Cond:
    return Cond(ConditionStatus.TRUE, reason, message)


def _false(reason: str, message: str = "") -> Cond:
    return Cond(ConditionStatus.FALSE, reason, message)


def _unknown(reason: str = "NotChecked", message: str = "") -> Cond:
    return Cond(ConditionStatus.UNKNOWN, reason, message)


@dataclass(frozen=True)
class Facts:
    """What a successful read of the cluster found."""

    version: VersionInfo
    nodes: NodesStatus
    cluster_name: str | None
    quorate: bool | None
    identity: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one probe found: the Ready summary, the other conditions, and the facts read."""

    ready: bool
    reason: str
    message: str
    #: False when only a change by the user can help (credentials, TLS settings): back off more slowly.
    transient: bool = True
    retry_after: float | None = None
    conditions: Mapping[str, Cond] = field(default_factory=dict)
    facts: Facts | None = None
    endpoints: list[str] | None = None
    #: What ``endpoints`` were discovered with (see :func:`discovery_basis`).
    endpoints_for: str | None = None
    active_endpoint: str | None = None
    auth: AuthStatus | None = None


@dataclass
class SlowFacts:
    """What a cluster rarely changes, read at login and then every ``Tuning.facts_refresh`` seconds: the version,
    the node list (certificate fingerprints, subscription level) and the effective permissions. Kept with the
    client, so new credentials or endpoints read them again at once."""

    version: Version | None = None
    nodes: list[Node] = field(default_factory=list)
    permissions: Cond = field(default_factory=_unknown)
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

    async def disconnect(self, key: Key) -> bool:
        """Close the resource's client (pause), keeping what the worker needs to resume. Returns whether it had
        a connection."""
        conn = self._connections.pop(key, None)
        if conn is None:
            return False
        await conn.client.aclose()
        return True

    async def deregister(self, key: Key) -> bool:
        """Forget the resource: close its pools and drop its session. Returns whether it had a connection."""
        self._wakers.pop(key, None)
        self._refs.pop(key, None)
        self._generations.pop(key, None)
        self._paused.pop(key, None)
        self._release(key)
        return await self.disconnect(key)

    async def close(self) -> None:
        for key in list(self._connections):
            await self.deregister(key)

    def _retire(self, client: ProxmoxClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _timeouts(spec: ProxmoxClusterSpec) -> Timeouts:
    t = spec.timeouts or models.TimeoutsSpec()
    return Timeouts(connect=t.connect_seconds, read=t.read_seconds, total=t.total_seconds)


def _limits(spec: ProxmoxClusterSpec) -> Limits:
    lim = spec.limits or models.LimitsSpec()
    return Limits(max_concurrent=lim.max_concurrent_requests, requests_per_second=lim.requests_per_second)


def is_paused(meta: Mapping[str, Any]) -> bool:
    return str((meta.get("annotations") or {}).get(PAUSE_ANNOTATION, "")).lower() == "true"


def references(key: Key, spec: ProxmoxClusterSpec) -> list[tuple[str, str, str]]:
    """The Secrets and ConfigMaps a resource depends on: (kind, namespace, name)."""
    refs = [("Secret", spec.credentials_ref.namespace or key.namespace, spec.credentials_ref.name)]
    if spec.tls and spec.tls.ca_bundle_ref:
        refs.append((spec.tls.ca_bundle_ref.kind, key.namespace, spec.tls.ca_bundle_ref.name))
    return refs


def _stopped_early(
    reason: str, message: str, *, transient: bool = True, conds: Mapping[str, Cond] | None = None
) -> Outcome:
    """A failure before talking to Proxmox: the probe conditions are Unknown unless given."""
    values = {t: _unknown() for t in PROBE_CONDITIONS}
    values.update({t: c if c.message else Cond(c.status, c.reason, message) for t, c in (conds or {}).items()})
    return Outcome(ready=False, reason=reason, message=message, transient=transient, conditions=values)


def _not_labeled(where: str, name: str, namespace: str, condition: str) -> Outcome:
    """A Secret without the opt-in label: never read, and the message says nothing about its content."""
    label = secretstore.CREDENTIALS_LABEL
    return _stopped_early(
        "SecretNotLabeled",
        f"{where} is not labelled {label}=true, so the operator does not use it; if its owner means it for "
        f"the operator: kubectl label secret {name} -n {namespace} {label}=true",
        transient=False,
        conds={condition: _false("SecretNotLabeled")},
    )


async def _trust(key: Key, spec: ProxmoxClusterSpec, kube: Kube) -> TrustConfig | Outcome:
    tls = spec.tls
    if tls is None:
        return TrustConfig()
    ca_bundle = tls.ca_bundle
    ref = tls.ca_bundle_ref
    if ref is not None:
        where = f"{ref.kind} '{ref.name}' in namespace '{key.namespace}'"
        try:
            if ref.kind == "Secret":
                secret = await kube.read_secret(key.namespace, ref.name)
                if secret is not None and not secret.opted_in:
                    return _not_labeled(where, ref.name, key.namespace, TLS_VERIFIED)
                data = None if secret is None else {k: v.decode("utf-8", "replace") for k, v in secret.data.items()}
            else:
                data = await kube.read_configmap(key.namespace, ref.name)
        except SecretForbidden:
            return _stopped_early(
                "CABundleForbidden",
                f"the operator may not read {where}",
                transient=False,
                conds={TLS_VERIFIED: _false("CABundleForbidden")},
            )
        if data is None or not data.get(ref.key, "").strip():
            missing = f"{where} does not exist" if data is None else f"{where} has no key '{ref.key}'"
            return _stopped_early(
                "CABundleNotFound",
                f"{missing}; spec.tls.caBundleRef must name PEM certificates",
                conds={TLS_VERIFIED: _false("CABundleNotFound")},
            )
        ca_bundle = data[ref.key]
        if len(ca_bundle.encode()) > models.MAX_CA_BUNDLE:
            return _stopped_early(
                "TLSConfigInvalid",
                f"spec.tls.caBundleRef: key '{ref.key}' of {where} holds more than {models.MAX_CA_BUNDLE // 1024} "
                "KiB; a CA bundle is a few PEM certificates",
                transient=False,
                conds={TLS_VERIFIED: _false("TLSConfigInvalid")},
            )
    return TrustConfig.build(
        ca_bundle=ca_bundle, fingerprints=tls.fingerprints or (), insecure_skip_verify=tls.insecure_skip_verify
    )


@dataclass(frozen=True)
class KnownEndpoints:
    """Discovered endpoints as status recorded them. Status is not trusted input: they are used only with the
    same :func:`discovery_basis`, and the client re-validates each one (https, an IP, the configured port, the
    allowed hosts) and never uses them with insecureSkipVerify."""

    endpoints: list[str] = field(default_factory=list)
    basis: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> KnownEndpoints:
        endpoints = status.get("endpoints")
        basis = status.get("endpointsFor")
        if not isinstance(endpoints, list) or not isinstance(basis, str):
            return cls()
        return cls([str(e) for e in endpoints[:64] if isinstance(e, str)], basis)


async def probe(
    key: Key,
    spec: ProxmoxClusterSpec,
    kube: Kube,
    registry: Registry,
    tuning: Tuning,
    *,
    known: KnownEndpoints | None = None,
) -> Outcome:
    """Read the Secret, log in, read the cluster. Never raises for an expected failure."""
    known = known or KnownEndpoints()
    ref = spec.credentials_ref
    secret_ns = ref.namespace or key.namespace
    where = f"Secret '{ref.name}' in namespace '{secret_ns}'"
    if secret_ns != key.namespace and not tuning.allow_cross_namespace_secrets:
        return _stopped_early(
            "SecretNamespaceForbidden",
            f"{where} is in another namespace than the ProxmoxCluster; move the Secret to namespace "
            f"'{key.namespace}', or start the operator with --allow-cross-namespace-secrets",
            transient=False,
            conds={AUTHENTICATED: _false("SecretNamespaceForbidden")},
        )
    try:
        secret = await kube.read_secret(secret_ns, ref.name)
    except SecretForbidden:
        return _stopped_early(
            "SecretForbidden",
            f"the operator may not read {where}; grant its ServiceAccount 'get' on secrets",
            transient=False,
            conds={AUTHENTICATED: _false("SecretForbidden")},
        )
    if secret is None:
        return _stopped_early(
            "SecretNotFound",
            f"{where} does not exist; create it with tokenId + tokenSecret or username + password, labelled "
            f"{secretstore.CREDENTIALS_LABEL}=true",
            conds={AUTHENTICATED: _false("SecretNotFound")},
        )
    if not secret.opted_in:
        return _not_labeled(where, ref.name, secret_ns, AUTHENTICATED)
    try:
        creds = from_secret_data(dict(secret.data))
    except CredentialsInvalid as exc:
        return _stopped_early(
            "SecretInvalid", f"{where}: {exc}", transient=False, conds={AUTHENTICATED: _false("SecretInvalid")}
        )
    allowed = _allowed_hosts(spec, secret, where)
    if isinstance(allowed, Outcome):
        return allowed
    trust = await _trust(key, spec, kube)
    if isinstance(trust, Outcome):
        return trust
    try:
        client = registry.client(key, spec, creds, trust, allowed)
    except TrustConfigInvalid as exc:
        tls = spec.tls
        field = "spec.tls.caBundleRef" if tls is not None and tls.ca_bundle_ref is not None else "spec.tls.caBundle"
        message = f"{field}: {exc}"
        return _stopped_early(
            "TLSConfigInvalid", message, transient=False, conds={TLS_VERIFIED: _false("TLSConfigInvalid")}
        )
    basis = discovery_basis(spec, trust, secret_ns, creds, allowed)
    if spec.discover_endpoints and not client.discovered and known.endpoints and known.basis == basis:
        client.set_discovered(known.endpoints)  # from status: discovery survives an operator restart
    auth = AuthStatus(method="token" if creds.method == "token" else "password", id=creds.identity)
    return await _read_cluster(
        spec, client, trust, auth, basis, slow=registry.slow_facts(key), facts_refresh=tuning.facts_refresh
    )


def _allowed_hosts(spec: ProxmoxClusterSpec, secret: Secret, where: str) -> AllowedHosts | Outcome | None:
    """The Secret owner's limit on where its credentials may go; every configured endpoint must be inside it.
    (Discovered endpoints outside it are dropped by the client, which never connects to them.)"""
    text = secret.annotations.get(ALLOWED_HOSTS_ANNOTATION)
    if text is None:
        return None
    try:
        allowed = AllowedHosts.parse(text)
    except AllowedHostsInvalid as exc:
        return _stopped_early(
            "AllowedHostsInvalid",
            f"the annotation {ALLOWED_HOSTS_ANNOTATION} of {where} is invalid: {exc}",
            transient=False,
            conds={AUTHENTICATED: _false("AllowedHostsInvalid")},
        )
    refused = [url for url in spec.all_endpoints if not allowed.permits(url)]
    if refused:
        return _stopped_early(
            "HostNotAllowed",
            f"{where} allows its credentials only to {allowed} (annotation {ALLOWED_HOSTS_ANNOTATION}), and "
            f"{', '.join(refused)} is not among them; nothing was sent there. Point the endpoints at the hosts "
            "the Secret allows, or ask its owner to extend the annotation",
            transient=False,
            conds={AUTHENTICATED: _false("HostNotAllowed")},
        )
    return allowed


def discovery_basis(
    spec: ProxmoxClusterSpec, trust: TrustConfig, secret_ns: str, creds: Credentials, allowed: AllowedHosts | None
) -> str:
    """A digest of what discovered endpoints were found with: the configured endpoints, the trust, the
    credentials' Secret and identity (never the secret itself), the allowed hosts. status.endpoints is used
    after a restart only when it carries the same digest, so a change of any of these discards it."""
    material = repr(
        (
            spec.all_endpoints,
            trust.ca_bundle,
            sorted(trust.fingerprints),
            trust.insecure_skip_verify,
            secret_ns,
            spec.credentials_ref.name,
            creds.method,
            creds.identity,
            str(allowed),
        )
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


async def _read_cluster(
    spec: ProxmoxClusterSpec,
    client: ProxmoxClient,
    trust: TrustConfig,
    auth: AuthStatus,
    basis: str,
    *,
    slow: SlowFacts,
    facts_refresh: float,
) -> Outcome:
    conds: dict[str, Cond] = {t: _unknown() for t in PROBE_CONDITIONS}
    tls_ok = (
        _true("Verified", f"certificate checked against {trust.description}")
        if trust.verified
        else _false("InsecureSkipVerify", "certificate verification is off (spec.tls.insecureSkipVerify)")
    )
    client.begin_round()
    version: Version | None
    try:
        await client.login()
        # Every probe: quorum, membership and node addresses. One request with a token.
        try:
            status = await client.cluster_status()
        except pve_errors.PermissionDenied as exc:
            status, denied = None, exc
        conds[REACHABLE] = _true("Connected", f"{client.active_endpoint} answers")
        conds[TLS_VERIFIED] = tls_ok
        conds[AUTHENTICATED] = _true("LoggedIn", f"as {auth.id} ({auth.method})")
        # What rarely changes (version, node list with certificates and subscription, permissions): when the
        # client is new (login, changed credentials or endpoints) and then every `facts_refresh` seconds.
        if status is None or slow.due(time.monotonic(), facts_refresh):
            version, nodes = await client.version(), await client.nodes()
            if status is None:
                perms = _false("PermissionDenied", _lacking(client, REQUIRED_PRIVILEGES, f" ({denied})"))
            else:
                perms = await _permissions(client)
                slow.store(version, nodes, perms, time.monotonic())
        else:
            version, nodes, perms = slow.version, slow.nodes, slow.permissions
        conds[PERMISSIONS] = perms
    except ProxmoxError as exc:
        return _failed(exc, conds, tls_ok, client, auth)
    facts = _facts(version, nodes, status)
    if spec.discover_endpoints:
        # The client keeps only valid, allowed ones (and none at all with insecureSkipVerify).
        client.set_discovered(_discovered(client, status))
    if facts.quorate is False:
        conds[QUORATE] = _false(
            "QuorumLost",
            f"cluster '{facts.cluster_name}' has no quorum: {facts.nodes.summary} "
            "nodes online; VMs cannot be started or changed until it returns",
        )
    elif facts.quorate is True:
        conds[QUORATE] = _true(
            "Quorate", f"cluster '{facts.cluster_name}'" if facts.cluster_name else "standalone node"
        )
    elif status is not None:
        conds[QUORATE] = _unknown("QuorumUnknown", "GET /cluster/status did not report whether the cluster is quorate")

    def outcome(ready: bool, reason: str, message: str, *, transient: bool = True) -> Outcome:
        return Outcome(
            ready=ready,
            reason=reason,
            message=message,
            transient=transient,
            conditions=conds,
            facts=facts,
            endpoints=list(client.discovered) if spec.discover_endpoints else None,
            endpoints_for=basis if spec.discover_endpoints else None,
            active_endpoint=client.active_endpoint,
            auth=auth,
        )

    if conds[PERMISSIONS].status == ConditionStatus.FALSE:
        return outcome(False, "PermissionDenied", conds[PERMISSIONS].message, transient=False)
    if facts.quorate is False:
        return outcome(False, "QuorumLost", conds[QUORATE].message)
    where = f"cluster '{facts.cluster_name}'" if facts.cluster_name else "standalone node"
    return outcome(
        True,
        "Registered",
        f"Proxmox VE {facts.version.version}, {where}, {facts.nodes.summary} nodes online, via "
        f"{client.active_endpoint} as {auth.id} ({auth.method})",
    )


#: Failures that are an HTTP answer from Proxmox. Anything else (HostNotAllowed, an unexpected error) says
#: nothing about reachability: it stays Unknown.
_ANSWERED = (
    pve_errors.AuthenticationFailed,
    pve_errors.PermissionDenied,
    pve_errors.ServerError,
    pve_errors.InvalidResponse,
)


def _failed(
    exc: ProxmoxError, conds: dict[str, Cond], tls_ok: Cond, client: ProxmoxClient, auth: AuthStatus
) -> Outcome:
    """Conditions after a failure: what was reached is known, what comes after stays Unknown."""
    if isinstance(exc, pve_errors.Unreachable | pve_errors.Timeout):
        conds[REACHABLE] = _false(exc.reason, str(exc))
    elif isinstance(exc, pve_errors.TLSError):
        conds[REACHABLE] = _false(exc.reason, str(exc))
        conds[TLS_VERIFIED] = _false(exc.reason, str(exc))
    elif isinstance(exc, _ANSWERED):  # an HTTP answer came back: the transport works
        conds[REACHABLE] = _true("Connected", f"{client.active_endpoint or exc.endpoint} answers")
        conds[TLS_VERIFIED] = tls_ok
        if isinstance(exc, pve_errors.AuthenticationFailed):
            conds[AUTHENTICATED] = _false(exc.reason, str(exc))
        elif isinstance(exc, pve_errors.PermissionDenied):
            conds[PERMISSIONS] = _false(exc.reason, str(exc))
    return Outcome(
        ready=False,
        reason=exc.reason,
        message=str(exc),
        transient=exc.transient,
        retry_after=exc.retry_after,
        conditions=conds,
        active_endpoint=client.active_endpoint,
        auth=auth,
    )


def _lacking(client: ProxmoxClient, privileges: Iterable[str], evidence: str = "") -> str:
    """What is missing and how to grant it, whichever way it was found out."""
    return (
        f"'{client.credentials.identity}' lacks {', '.join(privileges)} on /{evidence}; quorum and node details "
        "cannot be read. Grant the PVEAuditor role on / to the user and, for a privilege-separated token, to the "
        "token"
    )


async def _permissions(client: ProxmoxClient) -> Cond:
    """PermissionsSufficient from ``GET /access/permissions`` (privilege separation of tokens included)."""
    try:
        privs = await client.permissions("/")
    except ProxmoxError as exc:
        return _unknown("PermissionsUnknown", f"could not read the effective permissions: {exc}")
    missing = [p for p in REQUIRED_PRIVILEGES if not privs.get(p)]
    if missing:
        return _false("PermissionDenied", _lacking(client, missing))
    return _true("Sufficient", f"'{client.credentials.identity}' has {', '.join(REQUIRED_PRIVILEGES)} on /")


def _facts(version: Any, nodes: Any, status: Any) -> Facts:
    cluster = next((e for e in status or () if e.type == "cluster"), None)
    members = {e.name: e for e in status or () if e.type == "node" and e.name}
    items: dict[str, NodeStatus] = {}
    for n in nodes:
        if n.node in items:
            continue  # listed twice: the status list is keyed by name, the first entry counts
        member = members.get(n.node)
        online = bool(member.online) if member is not None and member.online is not None else n.status == "online"
        items[n.node] = NodeStatus(
            name=n.node, online=online, ip=member.ip if member else None, level=n.level if n.level else None
        )
    for name, member in members.items():
        if name not in items:  # joined since the node list was last read: membership is read every probe
            items[name] = NodeStatus(name=name, online=bool(member.online), ip=member.ip)
    listed = sorted(items.values(), key=lambda i: i.name)
    online = sum(1 for i in listed if i.online)
    if status is None or (cluster is not None and cluster.quorate is None):
        quorate = None  # not readable, or not reported: Unknown, not lost
    elif cluster is not None:
        quorate = bool(cluster.quorate)
    else:
        quorate = True  # a standalone node is always quorate
    name = cluster.name if cluster is not None else None
    local = next((e.name for e in status or () if e.type == "node" and e.local), None)
    return Facts(
        version=VersionInfo(version=version.version, release=version.release, repoid=version.repoid),
        nodes=NodesStatus(total=len(listed), online=online, summary=f"{online}/{len(listed)}", items=listed),
        cluster_name=name,
        quorate=quorate,
        identity=_identity(name, local, nodes),
    )


def _identity(cluster_name: str | None, local: str | None, nodes: Any) -> str | None:
    """What identifies a Proxmox cluster: its name (or the standalone node's) and its nodes' certificate
    fingerprints (``ssl_fingerprint`` in ``/nodes``). Unrelated clusters never share node certificates, so two
    standalone hosts both called ``pve`` are not taken for one. Without fingerprints there is no identity."""
    prints = sorted({n.ssl_fingerprint.upper() for n in nodes if n.ssl_fingerprint})
    name = f"cluster:{cluster_name}" if cluster_name else (f"node:{local}" if local else None)
    if name is None or not prints:
        return None
    return hashlib.sha256(f"{name}|{','.join(prints)}".encode()).hexdigest()


def _discovered(client: ProxmoxClient, status: Any) -> list[str]:
    """API endpoints of the cluster's nodes, from their addresses in /cluster/status, minus configured ones."""
    configured = set(client.configured)
    urls = []
    for entry in status or ():
        if entry.type == "node" and entry.ip:
            url = endpoint_for_ip(client.endpoint, entry.ip)
            if url not in configured and url not in urls:
                urls.append(url)
    return urls


def next_status(
    previous: Mapping[str, Any] | None,
    outcome: Outcome,
    *,
    generation: int | None,
    at: datetime,
    extra: Mapping[str, Cond | None] | None = None,
    probed: bool = True,
) -> ProxmoxClusterStatus:
    """The status after a probe. Facts survive failures (Ready and lastProbeTime say how fresh they are).

    ``extra`` sets (a Cond) or removes (None) conditions outside the probe: Duplicate, Paused. ``probed`` False
    (paused) keeps lastProbeTime: nothing talked to Proxmox.
    """
    prev = _parse_status(previous) or ProxmoxClusterStatus()
    prev_conditions = conditions.parse((previous or {}).get("conditions"))
    values: dict[str, Cond] = {
        READY: Cond(ConditionStatus.TRUE if outcome.ready else ConditionStatus.FALSE, outcome.reason, outcome.message),
        **outcome.conditions,
    }
    removed: set[str] = set()
    for type_, cond in (extra or {}).items():
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
        return [("Normal", "Paused", after[PAUSED].message)] if PAUSED not in before else []
    ready, old_ready = after[READY], before.get(READY)
    if PAUSED in before:
        out.append(("Normal", "Resumed", "probes resumed"))
        old_ready = None if ready.status == ConditionStatus.FALSE else old_ready
    if ready.status == ConditionStatus.TRUE:
        if old_ready is None:
            out.append(("Normal", "Registered", ready.message))
        elif old_ready.status != ConditionStatus.TRUE and old_ready.reason != "Paused":
            out.append(("Normal", "Recovered", ready.message))
    elif old_ready is None or old_ready.status == ConditionStatus.TRUE or old_ready.reason != ready.reason:
        out.append(("Warning", ready.reason, ready.message))
    if flipped(QUORATE, ConditionStatus.FALSE) and ready.reason != "QuorumLost":
        out.append(("Warning", "QuorumLost", after[QUORATE].message))
    old_quorate = before.get(QUORATE)
    if (
        flipped(QUORATE, ConditionStatus.TRUE)
        and old_quorate is not None
        and old_quorate.status == ConditionStatus.FALSE
    ):
        out.append(("Normal", "QuorumRestored", after[QUORATE].message))
    tls = after.get(TLS_VERIFIED)
    if tls is not None and tls.reason == "InsecureSkipVerify" and flipped(TLS_VERIFIED, ConditionStatus.FALSE):
        out.append(("Warning", "InsecureSkipVerify", "TLS certificate verification is off for this cluster"))
    if flipped(DUPLICATE, ConditionStatus.TRUE):
        out.append(("Warning", "Duplicate", after[DUPLICATE].message))
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
    if spec is not None and spec.health_check is not None:
        return float(spec.health_check.interval_seconds)
    return tuning.probe_interval


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
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    previous = body.get("status") or {}
    paused = is_paused(meta)
    extra: dict[str, Cond | None] = {}
    spec: ProxmoxClusterSpec | None = None
    try:
        spec = ProxmoxClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
        outcome = _stopped_early(
            "InvalidSpec", f"the spec is invalid ({fields}); fix it and apply again", transient=False
        )
        registry.note_seen(key, generation, paused, ())
    else:
        registry.note_seen(key, generation, paused, references(key, spec))
        if paused:
            await registry.disconnect(key)
            outcome = Outcome(
                ready=False,
                reason="Paused",
                message=f"probes are paused by the annotation {PAUSE_ANNOTATION}; remove it to resume",
                conditions={t: _unknown("Paused") for t in PROBE_CONDITIONS},
            )
            extra[PAUSED] = _true("Paused", outcome.message)
        else:
            outcome = await _guarded_probe(
                key, spec, kube, registry, tuning, known=KnownEndpoints.from_status(previous)
            )
            extra[PAUSED] = None
    if spec is not None and outcome.facts is not None and outcome.facts.identity:
        first = registry.claim(outcome.facts.identity, key, str(meta.get("creationTimestamp", "")))
        extra[DUPLICATE] = _duplicate(key, first) if first is not None else None

    status = next_status(previous, outcome, generation=generation, at=conditions.now(), extra=extra, probed=not paused)
    if worth_writing(previous, status, refresh=tuning.status_refresh):
        await kube.patch_status(key.namespace, key.name, status.model_dump(by_alias=True, mode="json"))
    for type_, reason, message in events_for(previous, status):
        (log.info if type_ == "Normal" else log.warning)("%s: %s: %s", key, reason, message)
        kube.post_event(body, type_=type_, reason=reason, message=message)
    return outcome, probe_interval(spec, tuning)


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
        return _stopped_early(
            "InternalError",
            f"the probe failed unexpectedly ({type(exc).__name__}); the operator's log has the details, and the "
            "probe is retried",
        )


def _duplicate(key: Key, first: Key) -> Cond:
    """Duplicate, naming the earlier registrant only when it is in the resource's own namespace: a user of one
    namespace learns nothing about the objects of another."""
    who = str(first) if first.namespace == key.namespace else "a ProxmoxCluster in another namespace"
    return _true(
        "Duplicate", f"the same Proxmox cluster is also registered by {who} (registered earlier); both are served"
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
    """
    waker = registry.waker(key)
    failures = 0
    try:
        while not stopping.is_set():
            waker.clear()
            finished, result = await _unless_stopped(
                _round(key, snapshot, kube, registry, tuning), stopping, limit=None
            )
            if not finished or result is None:
                return
            outcome, interval = result
            if outcome.reason == "Paused":
                await _unless_stopped(waker.wait(), stopping, limit=None)  # until resumed (or deleted)
                continue
            failures = 0 if outcome.ready else failures + 1
            await _unless_stopped(waker.wait(), stopping, limit=delay_after(outcome, failures, tuning, interval))
    finally:
        await registry.deregister(key)


async def _round(
    key: Key, snapshot: Callable[[], Mapping[str, Any]], kube: Kube, registry: Registry, tuning: Tuning
) -> tuple[Outcome, float] | None:
    """One guarded round: None when the resource is gone, a failure outcome for anything unexpected."""
    try:
        return await reconcile_once(key, snapshot(), kube, registry, tuning)
    except ObjectGone:
        log.debug("%s is gone; the worker stops", key)
        return None
    except KubeUnavailable as exc:
        log.warning("%s: the Kubernetes API failed (%s); retrying", key, exc)
        return Outcome(ready=False, reason="KubeUnavailable", message=str(exc)), tuning.probe_interval
    except Exception:
        # A bug or an unexpected answer must not kill the worker. Our messages carry no secrets, and neither
        # do tracebacks (they hold no local variables); retry with backoff.
        log.exception("%s: unexpected error in a reconcile round; retrying", key)
        return Outcome(ready=False, reason="InternalError", message=""), tuning.probe_interval


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
