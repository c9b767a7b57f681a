"""What a probe found: condition values, facts, and the outcome that status, Events and backoff are computed from.

Condition types are the documented constants here; ``Ready`` is the summary of the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxmox_operator import models
from proxmox_operator.models import (
    AuthStatus,
    ConditionStatus,
    NodesStatus,
    VersionInfo,
)

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
class Cond:
    """A condition's value as a probe computed it."""

    status: ConditionStatus
    reason: str
    message: str = ""


def cond_true(reason: str, message: str = "") -> Cond:
    return Cond(ConditionStatus.TRUE, reason, message)


def cond_false(reason: str, message: str = "") -> Cond:
    return Cond(ConditionStatus.FALSE, reason, message)


def cond_unknown(reason: str = "NotChecked", message: str = "") -> Cond:
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


def stopped_early(
    reason: str, message: str, *, transient: bool = True, conds: Mapping[str, Cond] | None = None
) -> Outcome:
    """A failure before talking to Proxmox: the probe conditions are Unknown unless given."""
    values = {t: cond_unknown() for t in PROBE_CONDITIONS}
    values.update({t: c if c.message else Cond(c.status, c.reason, message) for t, c in (conds or {}).items()})
    return Outcome(ready=False, reason=reason, message=message, transient=transient, conditions=values)
