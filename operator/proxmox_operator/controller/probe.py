"""One probe of one Proxmox cluster: log in, read ``/cluster/status`` (and, at a slow cadence, the version, the
node list and the permissions), and turn what was found, or what failed, into an :class:`~.outcome.Outcome`."""

from __future__ import annotations

import time
from collections.abc import Iterable

from proxmox_operator import secretstore
from proxmox_operator.api.v1alpha1 import (
    AuthStatus,
    ConditionStatus,
    ConditionType,
    ProxmoxClusterSpec,
    Reason,
)
from proxmox_operator.controller.facts import discovered_endpoints, facts_from
from proxmox_operator.controller.outcome import (
    AUTHENTICATED,
    PERMISSIONS,
    PROBE_CONDITIONS,
    QUORATE,
    REACHABLE,
    REQUIRED_PRIVILEGES,
    TLS_VERIFIED,
    Cond,
    Outcome,
    cond_false,
    cond_true,
    cond_unknown,
    stopped_early,
)
from proxmox_operator.controller.ports import Key, Kube, SecretForbidden
from proxmox_operator.controller.registry import Registry, SlowFacts
from proxmox_operator.controller.sources import (
    KnownEndpoints,
    allowed_hosts_of,
    discovery_basis,
    not_labeled,
    read_trust,
)
from proxmox_operator.proxmox import (
    CredentialsInvalid,
    ProxmoxClient,
    ProxmoxError,
    TrustConfig,
    TrustConfigInvalid,
    Version,
    from_secret_data,
)
from proxmox_operator.proxmox import errors as pve_errors
from proxmox_operator.settings import Tuning


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
        return stopped_early(
            Reason.SECRET_NAMESPACE_FORBIDDEN,
            f"{where} is in another namespace than the ProxmoxCluster; move the Secret to namespace "
            f"'{key.namespace}', or start the operator with --allow-cross-namespace-secrets",
            transient=False,
            conds={AUTHENTICATED: cond_false(Reason.SECRET_NAMESPACE_FORBIDDEN)},
        )
    try:
        secret = await kube.read_secret(secret_ns, ref.name)
    except SecretForbidden:
        return stopped_early(
            Reason.SECRET_FORBIDDEN,
            f"the operator may not read {where}; grant its ServiceAccount 'get' on secrets",
            transient=False,
            conds={AUTHENTICATED: cond_false(Reason.SECRET_FORBIDDEN)},
        )
    if secret is None:
        return stopped_early(
            Reason.SECRET_NOT_FOUND,
            f"{where} does not exist; create it with tokenId + tokenSecret or username + password, labelled "
            f"{secretstore.CREDENTIALS_LABEL}=true",
            conds={AUTHENTICATED: cond_false(Reason.SECRET_NOT_FOUND)},
        )
    if not secret.opted_in:
        return not_labeled(where, ref.name, secret_ns, AUTHENTICATED)
    try:
        creds = from_secret_data(dict(secret.data))
    except CredentialsInvalid as exc:
        return stopped_early(
            Reason.SECRET_INVALID,
            f"{where}: {exc}",
            transient=False,
            conds={AUTHENTICATED: cond_false(Reason.SECRET_INVALID)},
        )
    allowed = allowed_hosts_of(spec, secret, where)
    if isinstance(allowed, Outcome):
        return allowed
    trust = await read_trust(key, spec, kube)
    if isinstance(trust, Outcome):
        return trust
    try:
        client = registry.clients.client(key, spec, creds, trust, allowed)
    except TrustConfigInvalid as exc:
        tls = spec.tls
        field = "spec.tls.caBundleRef" if tls is not None and tls.ca_bundle_ref is not None else "spec.tls.caBundle"
        message = f"{field}: {exc}"
        return stopped_early(
            Reason.TLS_CONFIG_INVALID,
            message,
            transient=False,
            conds={TLS_VERIFIED: cond_false(Reason.TLS_CONFIG_INVALID)},
        )
    basis = discovery_basis(spec, trust, secret_ns, creds, allowed)
    if spec.discover_endpoints and not client.discovered and known.endpoints and known.basis == basis:
        client.set_discovered(known.endpoints)  # from status: discovery survives an operator restart
    auth = AuthStatus(method="token" if creds.method == "token" else "password", id=creds.identity)
    return await read_cluster(
        spec, client, trust, auth, basis, slow=registry.clients.slow_facts(key), facts_refresh=tuning.facts_refresh
    )


async def read_cluster(
    spec: ProxmoxClusterSpec,
    client: ProxmoxClient,
    trust: TrustConfig,
    auth: AuthStatus,
    basis: str,
    *,
    slow: SlowFacts,
    facts_refresh: float,
) -> Outcome:
    conds: dict[ConditionType, Cond] = {t: cond_unknown() for t in PROBE_CONDITIONS}
    tls_ok = (
        cond_true(Reason.VERIFIED, f"certificate checked against {trust.description}")
        if trust.verified
        else cond_false(Reason.INSECURE_SKIP_VERIFY, "certificate verification is off (spec.tls.insecureSkipVerify)")
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
        conds[REACHABLE] = cond_true(Reason.CONNECTED, f"{client.active_endpoint} answers")
        conds[TLS_VERIFIED] = tls_ok
        conds[AUTHENTICATED] = cond_true(Reason.LOGGED_IN, f"as {auth.id} ({auth.method})")
        # What rarely changes (version, node list with certificates and subscription, permissions): when the
        # client is new (login, changed credentials or endpoints) and then every `facts_refresh` seconds.
        if status is None or slow.due(time.monotonic(), facts_refresh):
            version, nodes = await client.version(), await client.nodes()
            if status is None:
                perms = cond_false(Reason.PERMISSION_DENIED, _lacking(client, REQUIRED_PRIVILEGES, f" ({denied})"))
            else:
                perms = await _permissions(client)
                slow.store(version, nodes, perms, time.monotonic())
        else:
            version, nodes, perms = slow.version, slow.nodes, slow.permissions
        conds[PERMISSIONS] = perms
    except ProxmoxError as exc:
        return _failed(exc, conds, tls_ok, client, auth)
    facts = facts_from(version, nodes, status)
    if spec.discover_endpoints:
        # The client keeps only valid, allowed ones (and none at all with insecureSkipVerify).
        client.set_discovered(discovered_endpoints(client, status))
    if facts.quorate is False:
        conds[QUORATE] = cond_false(
            Reason.QUORUM_LOST,
            f"cluster '{facts.cluster_name}' has no quorum: {facts.nodes.summary} "
            "nodes online; VMs cannot be started or changed until it returns",
        )
    elif facts.quorate is True:
        conds[QUORATE] = cond_true(
            Reason.QUORATE, f"cluster '{facts.cluster_name}'" if facts.cluster_name else "standalone node"
        )
    elif status is not None:
        conds[QUORATE] = cond_unknown(
            Reason.QUORUM_UNKNOWN, "GET /cluster/status did not report whether the cluster is quorate"
        )

    def outcome(ready: bool, reason: Reason, message: str, *, transient: bool = True) -> Outcome:
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
        return outcome(False, Reason.PERMISSION_DENIED, conds[PERMISSIONS].message, transient=False)
    if facts.quorate is False:
        return outcome(False, Reason.QUORUM_LOST, conds[QUORATE].message)
    where = f"cluster '{facts.cluster_name}'" if facts.cluster_name else "standalone node"
    return outcome(
        True,
        Reason.REGISTERED,
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
    exc: ProxmoxError, conds: dict[ConditionType, Cond], tls_ok: Cond, client: ProxmoxClient, auth: AuthStatus
) -> Outcome:
    """Conditions after a failure: what was reached is known, what comes after stays Unknown."""
    reason = Reason(exc.reason)
    failed = cond_false(reason, str(exc))
    if isinstance(exc, pve_errors.Unreachable | pve_errors.Timeout):
        conds[REACHABLE] = failed
    elif isinstance(exc, pve_errors.TLSError):
        conds[REACHABLE] = failed
        conds[TLS_VERIFIED] = failed
    elif isinstance(exc, _ANSWERED):  # an HTTP answer came back: the transport works
        conds[REACHABLE] = cond_true(Reason.CONNECTED, f"{client.active_endpoint or exc.endpoint} answers")
        conds[TLS_VERIFIED] = tls_ok
        if isinstance(exc, pve_errors.AuthenticationFailed):
            conds[AUTHENTICATED] = failed
        elif isinstance(exc, pve_errors.PermissionDenied):
            conds[PERMISSIONS] = failed
    return Outcome(
        ready=False,
        reason=reason,
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
        return cond_unknown(Reason.PERMISSIONS_UNKNOWN, f"could not read the effective permissions: {exc}")
    missing = [p for p in REQUIRED_PRIVILEGES if not privs.get(p)]
    if missing:
        return cond_false(Reason.PERMISSION_DENIED, _lacking(client, missing))
    return cond_true(Reason.SUFFICIENT, f"'{client.credentials.identity}' has {', '.join(REQUIRED_PRIVILEGES)} on /")
