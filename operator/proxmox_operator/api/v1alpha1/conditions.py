"""The condition types of a ProxmoxCluster and every reason the operator writes, as documented constants.

This is the one place for them: the controller compares and writes these members, the Argo CD health check's
tests read them, and the README's condition and reason tables are rendered from :data:`TYPES` and
:data:`REASONS` (``make crds``; a test fails when the README drifts). ``Ready`` is the summary of the others.

Conditions follow the Kubernetes API conventions: ``lastTransitionTime`` moves only when ``status`` flips;
reason, message and observedGeneration follow every evaluation (:func:`transition`).

``Reconciling`` and ``Stalled`` are kstatus' abnormal-true conditions (sigs.k8s.io/cli-utils ``pkg/kstatus``, what
Flux and kpt judge health with): present, and True, only while they apply, and removed otherwise. Which failures
stall is :attr:`ReasonDoc.stalled`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from proxmox_operator.api.v1alpha1.types import Condition, ConditionStatus


class ConditionType(StrEnum):
    READY = "Ready"
    AUTHENTICATED = "Authenticated"
    REACHABLE = "Reachable"
    TLS_VERIFIED = "TLSVerified"
    QUORATE = "Quorate"
    PERMISSIONS = "PermissionsSufficient"
    PAUSED = "Paused"
    DUPLICATE = "Duplicate"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


#: The conditions every probe evaluates; Ready summarises them.
PROBE_CONDITIONS = (
    ConditionType.AUTHENTICATED,
    ConditionType.REACHABLE,
    ConditionType.TLS_VERIFIED,
    ConditionType.QUORATE,
    ConditionType.PERMISSIONS,
)


class Reason(StrEnum):
    """Every CamelCase reason of a condition or an Event. Documented in :data:`REASONS`."""

    # Ready=True, and the Events of a cluster going Ready.
    REGISTERED = "Registered"
    # Ready=Unknown: the first probe of a generation takes a while.
    PROBING = "Probing"
    RECOVERED = "Recovered"
    DEREGISTERED = "Deregistered"
    # What the user must fix in Kubernetes (Secret, ConfigMap, spec).
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_NOT_LABELED = "SecretNotLabeled"
    SECRET_INVALID = "SecretInvalid"
    SECRET_FORBIDDEN = "SecretForbidden"
    SECRET_NAMESPACE_FORBIDDEN = "SecretNamespaceForbidden"
    HOST_NOT_ALLOWED = "HostNotAllowed"
    ALLOWED_HOSTS_INVALID = "AllowedHostsInvalid"
    CA_BUNDLE_NOT_FOUND = "CABundleNotFound"
    CA_BUNDLE_FORBIDDEN = "CABundleForbidden"
    TLS_CONFIG_INVALID = "TLSConfigInvalid"
    INVALID_SPEC = "InvalidSpec"
    # What Proxmox answered (the client's typed errors, proxmox/errors.py, carry these names).
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    TFA_REQUIRED = "TFARequired"
    PERMISSION_DENIED = "PermissionDenied"
    QUORUM_LOST = "QuorumLost"
    TLS_ERROR = "TLSError"
    UNREACHABLE = "Unreachable"
    TIMEOUT = "Timeout"
    SERVER_ERROR = "ServerError"
    INVALID_RESPONSE = "InvalidResponse"
    PROXMOX_ERROR = "ProxmoxError"
    # The operator itself.
    PAUSED = "Paused"
    RESUMED = "Resumed"
    INTERNAL_ERROR = "InternalError"
    KUBE_UNAVAILABLE = "KubeUnavailable"
    # The other conditions' own reasons.
    LOGGED_IN = "LoggedIn"
    CONNECTED = "Connected"
    VERIFIED = "Verified"
    INSECURE_SKIP_VERIFY = "InsecureSkipVerify"
    QUORATE = "Quorate"
    QUORUM_UNKNOWN = "QuorumUnknown"
    QUORUM_RESTORED = "QuorumRestored"
    SUFFICIENT = "Sufficient"
    PERMISSIONS_UNKNOWN = "PermissionsUnknown"
    NOT_CHECKED = "NotChecked"
    DUPLICATE = "Duplicate"


@dataclass(frozen=True)
class ReasonDoc:
    """What a reason means for a user: the conditions it appears on, whether Ready=False carries it (with what to
    do), and whether it is an Event."""

    on: tuple[ConditionType, ...] = ()
    todo: str = ""
    event: bool = False
    #: A word on when, for one condition's False column (e.g. which Secret).
    note: tuple[ConditionType, str] | None = None
    #: The status of the conditions it is written with (of Ready, when Ready is among ``on``): a reason with
    #: another status than False names a good or undecided state, never a failure.
    status: ConditionStatus = ConditionStatus.FALSE
    #: Ready=False with this reason waits for a user: only a change of a Secret, a permission, the spec or an
    #: annotation can help. It comes with ``Stalled=True`` (kstatus: Failed, so Flux fails at once with the
    #: message); any other failure comes with ``Reconciling=True`` (kstatus: InProgress), as the operator retries.
    stalled: bool = False


T = ConditionType
_AUTH, _REACH, _TLS, _QUORUM, _PERMS = (T.AUTHENTICATED, T.REACHABLE, T.TLS_VERIFIED, T.QUORATE, T.PERMISSIONS)
_TRUE, _UNKNOWN = ConditionStatus.TRUE, ConditionStatus.UNKNOWN

REASONS: Mapping[Reason, ReasonDoc] = {
    Reason.REGISTERED: ReasonDoc((T.READY,), "nothing", event=True, status=_TRUE),
    Reason.PROBING: ReasonDoc(
        (T.READY, T.RECONCILING),
        "wait: the first probe of this generation is under way and takes a while (a slow or unreachable endpoint)",
        status=_UNKNOWN,
    ),
    Reason.SECRET_NOT_FOUND: ReasonDoc(
        (T.READY, _AUTH), "create the Secret, labelled (noticed within seconds)", stalled=True
    ),
    Reason.SECRET_NOT_LABELED: ReasonDoc(
        (T.READY, _AUTH, _TLS),
        "the Secret's owner labels it `proxmox-operator.dev/credentials=true` (the message gives the command)",
        note=(T.TLS_VERIFIED, "a `caBundleRef` Secret"),
        stalled=True,
    ),
    Reason.HOST_NOT_ALLOWED: ReasonDoc(
        (T.READY, _AUTH),
        "point the endpoints at hosts the Secret's `allowed-hosts` annotation lists, or have its owner extend it",
        stalled=True,
    ),
    Reason.ALLOWED_HOSTS_INVALID: ReasonDoc(
        (T.READY, _AUTH),
        "fix the Secret's `allowed-hosts` annotation; the message quotes the bad entry",
        stalled=True,
    ),
    Reason.SECRET_INVALID: ReasonDoc(
        (T.READY, _AUTH), "keep exactly one pair of keys; the message names the problem", stalled=True
    ),
    Reason.SECRET_FORBIDDEN: ReasonDoc(
        (T.READY, _AUTH), "let the operator's ServiceAccount read Secrets", stalled=True
    ),
    Reason.SECRET_NAMESPACE_FORBIDDEN: ReasonDoc(
        (T.READY, _AUTH),
        "move the Secret into the ProxmoxCluster's namespace, or allow it (see `credentialsRef.namespace`)",
        stalled=True,
    ),
    Reason.AUTHENTICATION_FAILED: ReasonDoc(
        (T.READY, _AUTH), "fix the username/realm/password or token in the Secret", stalled=True
    ),
    Reason.TFA_REQUIRED: ReasonDoc((T.READY, _AUTH), "use an API token", stalled=True),
    Reason.PERMISSION_DENIED: ReasonDoc(
        (T.READY, _PERMS),
        "grant `PVEAuditor` on `/` (to the token too when privilege-separated)",
        stalled=True,
    ),
    Reason.QUORUM_LOST: ReasonDoc(
        (T.READY, _QUORUM), "bring nodes back; VMs cannot be started or changed meanwhile", event=True
    ),
    Reason.TLS_ERROR: ReasonDoc(
        (T.READY, _REACH, _TLS),
        "set `tls.caBundle` to the CA that signed the node certificate, or pin its fingerprint",
        stalled=True,
    ),
    Reason.TLS_CONFIG_INVALID: ReasonDoc(
        (T.READY, _TLS), "fix `tls.caBundle` or the PEM its `caBundleRef` names", stalled=True
    ),
    Reason.CA_BUNDLE_NOT_FOUND: ReasonDoc(
        (T.READY, _TLS),
        "create the Secret or ConfigMap `tls.caBundleRef` names, with the PEM under its key",
        stalled=True,
    ),
    Reason.CA_BUNDLE_FORBIDDEN: ReasonDoc(
        (T.READY, _TLS),
        "let the operator's ServiceAccount read the `tls.caBundleRef` object",
        stalled=True,
    ),
    Reason.UNREACHABLE: ReasonDoc((T.READY, _REACH), "check the URL, that pveproxy runs, and the network path"),
    Reason.TIMEOUT: ReasonDoc((T.READY, _REACH), "check the node's load and the network path"),
    Reason.SERVER_ERROR: ReasonDoc(
        (T.READY,),
        "Proxmox answered 5xx (or 429/503; a `Retry-After` is honoured up to the probe interval): see the "
        "pveproxy and pvedaemon logs",
    ),
    Reason.INVALID_RESPONSE: ReasonDoc(
        (T.READY,),
        "Proxmox answered something that is not its API: not JSON, not the documented shape, larger than 1 MiB "
        "after decompression, or nested deeper than 32 levels; check the endpoint URL",
    ),
    Reason.PROXMOX_ERROR: ReasonDoc((T.READY,), "an answer Proxmox VE is not documented to give; see the message"),
    Reason.PAUSED: ReasonDoc((T.READY, T.PAUSED), "remove the pause annotation to resume", event=True, stalled=True),
    Reason.INVALID_SPEC: ReasonDoc(
        (T.READY,),
        "an object stored before a schema change no longer parses: apply it again",
        stalled=True,
    ),
    Reason.INTERNAL_ERROR: ReasonDoc((T.READY,), "a bug: the operator's log has the traceback; the probe is retried"),
    Reason.KUBE_UNAVAILABLE: ReasonDoc(),  # only in the log: the round is retried without a status write
    Reason.RECOVERED: ReasonDoc(event=True),
    Reason.RESUMED: ReasonDoc(event=True),
    Reason.DEREGISTERED: ReasonDoc(event=True),
    Reason.QUORUM_RESTORED: ReasonDoc(event=True),
    Reason.INSECURE_SKIP_VERIFY: ReasonDoc((_TLS,), event=True),
    Reason.DUPLICATE: ReasonDoc((T.DUPLICATE,), event=True, status=_TRUE),
    Reason.LOGGED_IN: ReasonDoc((_AUTH,), status=_TRUE),
    Reason.CONNECTED: ReasonDoc((_REACH,), status=_TRUE),
    Reason.VERIFIED: ReasonDoc((_TLS,), status=_TRUE),
    Reason.QUORATE: ReasonDoc((_QUORUM,), status=_TRUE),
    Reason.QUORUM_UNKNOWN: ReasonDoc((_QUORUM,), status=_UNKNOWN),
    Reason.SUFFICIENT: ReasonDoc((_PERMS,), status=_TRUE),
    Reason.PERMISSIONS_UNKNOWN: ReasonDoc((_PERMS,), status=_UNKNOWN),
    Reason.NOT_CHECKED: ReasonDoc(tuple(PROBE_CONDITIONS), status=_UNKNOWN),
}

#: Per condition type: when it is True, and a word on the rest (rendered into the README's table).
TYPES: Mapping[ConditionType, tuple[str, str]] = {
    T.READY: ("the summary: logged in, read the cluster, enough privileges, quorate", "any reason of the table below"),
    T.AUTHENTICATED: ("Proxmox accepted the credentials", ""),
    T.REACHABLE: ("an endpoint answered over HTTPS", ""),
    T.TLS_VERIFIED: ("the certificate passed the configured check", ""),
    T.QUORATE: (
        "the cluster has quorum (a standalone node always has)",
        "`Unknown` with `QuorumUnknown` when Proxmox does not report it",
    ),
    T.PERMISSIONS: (
        "the user or token has `Sys.Audit` on `/` (from `GET /access/permissions`, privilege separation included)",
        "`Unknown` with `PermissionsUnknown` when they cannot be read; the `PermissionDenied` message names what "
        "is missing",
    ),
    T.PAUSED: (
        'the annotation `proxmox-operator.dev/paused: "true"` is set: no probes until it is removed',
        "absent otherwise",
    ),
    T.DUPLICATE: (
        "another ProxmoxCluster registered the same Proxmox cluster earlier: the same cluster (or standalone node) "
        "name and the same node certificates (`ssl_fingerprint` in `GET /nodes`), so unrelated hosts that share a "
        "name are never taken for one. Both are served. The message names the first only when it is in the same "
        "namespace",
        "absent otherwise",
    ),
    T.RECONCILING: (
        "the operator is working towards `Ready=True`: the first probe of a generation takes a while (`Probing`, "
        "with `Ready=Unknown`), or it retries after a failure that can pass without a user (the reason and "
        "message are `Ready`'s, and the message says when it retries). For kstatus (Flux, kpt): InProgress",
        "absent otherwise",
    ),
    T.STALLED: (
        "`Ready` is `False` for a reason only a user can fix (the reasons marked **Failed** below: credentials, TLS, "
        "a Secret, permissions, the spec, or the pause annotation); the reason and message are `Ready`'s. For "
        "kstatus (Flux, kpt): Failed",
        "absent otherwise",
    ),
}

#: Condition types that are True or absent, never False (kstatus' abnormal-true conditions among them).
TRUE_OR_ABSENT = (T.PAUSED, T.DUPLICATE, T.RECONCILING, T.STALLED)


def false_reasons(type_: ConditionType) -> list[Reason]:
    """The reasons with which ``type_`` can be False, in the order of :data:`REASONS`."""
    if type_ is ConditionType.READY:
        return ready_false_reasons()
    if type_ in TRUE_OR_ABSENT:
        return []
    return [r for r, doc in REASONS.items() if type_ in doc.on and doc.status is ConditionStatus.FALSE]


def ready_reasons() -> list[Reason]:
    """Every reason Ready can carry, whatever its status, in the order of :data:`REASONS`."""
    return [r for r, doc in REASONS.items() if ConditionType.READY in doc.on]


def ready_false_reasons() -> list[Reason]:
    return [r for r in ready_reasons() if REASONS[r].status is ConditionStatus.FALSE]


def stalled_reasons() -> list[Reason]:
    """The failures only a user can fix: Ready=False with one of them comes with Stalled=True."""
    return [r for r in ready_false_reasons() if REASONS[r].stalled]


def event_reasons() -> list[Reason]:
    return [r for r, doc in REASONS.items() if doc.event]


def now() -> datetime:
    """Kubernetes timestamps (metav1.Time) have second precision."""
    return datetime.now(UTC).replace(microsecond=0)


def parse(raw: Iterable[Mapping[str, Any]] | None) -> dict[str, Condition]:
    """Conditions from a stored status, by type. Entries that do not parse are dropped, never fatal."""
    found: dict[str, Condition] = {}
    for item in raw or ():
        try:
            cond = Condition.model_validate(item)
        except ValueError:
            continue
        found[cond.type] = cond
    return found


def transition(
    previous: Condition | None,
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    at: datetime,
) -> Condition:
    """The new value of condition ``type_``; keeps ``lastTransitionTime`` when the status did not flip."""
    since = at if previous is None or previous.status != status else previous.last_transition_time
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
