"""What a probe found: condition values, facts, and the outcome that status, Events and backoff are computed from.

Condition types and reasons are the documented enums of :mod:`proxmox_operator.api.v1alpha1.conditions`; the short
names below are those members, for the controller's readability.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.api.v1alpha1 import (
    PROBE_CONDITIONS,
    AuthStatus,
    ConditionStatus,
    ConditionType,
    NodesStatus,
    Reason,
    VersionInfo,
)

READY = ConditionType.READY
AUTHENTICATED = ConditionType.AUTHENTICATED
REACHABLE = ConditionType.REACHABLE
TLS_VERIFIED = ConditionType.TLS_VERIFIED
QUORATE = ConditionType.QUORATE
PERMISSIONS = ConditionType.PERMISSIONS
PAUSED = ConditionType.PAUSED
DUPLICATE = ConditionType.DUPLICATE
RECONCILING = ConditionType.RECONCILING
STALLED = ConditionType.STALLED
__all__ = [
    "AUTHENTICATED",
    "DUPLICATE",
    "PAUSED",
    "PAUSE_ANNOTATION",
    "PERMISSIONS",
    "PROBE_CONDITIONS",
    "QUORATE",
    "REACHABLE",
    "READY",
    "RECONCILING",
    "REQUIRED_PRIVILEGES",
    "STALLED",
    "TLS_VERIFIED",
    "Cond",
    "Facts",
    "Outcome",
    "Reason",
    "cond_false",
    "cond_true",
    "cond_unknown",
    "stopped_early",
]
PAUSE_ANNOTATION = f"{api.GROUP}/paused"
#: What the operator reads needs Sys.Audit on / (cluster status, node details; pve-manager API2/Cluster.pm).
REQUIRED_PRIVILEGES = ("Sys.Audit",)


@dataclass(frozen=True)
class Cond:
    """A condition's value as a probe computed it."""

    status: ConditionStatus
    reason: Reason
    message: str = ""


def cond_true(reason: Reason, message: str = "") -> Cond:
    return Cond(ConditionStatus.TRUE, reason, message)


def cond_false(reason: Reason, message: str = "") -> Cond:
    return Cond(ConditionStatus.FALSE, reason, message)


def cond_unknown(reason: Reason = Reason.NOT_CHECKED, message: str = "") -> Cond:
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
    reason: Reason
    message: str
    #: False when only a change by the user can help (credentials, TLS settings): back off more slowly.
    transient: bool = True
    retry_after: float | None = None
    conditions: Mapping[ConditionType, Cond] = field(default_factory=dict)
    facts: Facts | None = None
    endpoints: list[str] | None = None
    #: What ``endpoints`` were discovered with (see :func:`discovery_basis`).
    endpoints_for: str | None = None
    active_endpoint: str | None = None
    auth: AuthStatus | None = None


def stopped_early(
    reason: Reason, message: str, *, transient: bool = True, conds: Mapping[ConditionType, Cond] | None = None
) -> Outcome:
    """A failure before talking to Proxmox: the probe conditions are Unknown unless given."""
    values = {t: cond_unknown() for t in PROBE_CONDITIONS}
    values.update({t: c if c.message else Cond(c.status, c.reason, message) for t, c in (conds or {}).items()})
    return Outcome(ready=False, reason=reason, message=message, transient=transient, conditions=values)
