"""Operator-wide settings of the controller, each default in one place: the CLI, the worker and the tests take
them from here."""

from __future__ import annotations

from dataclasses import dataclass


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
    #: When the first probe of a generation (no status for it yet) takes longer than this (seconds), Ready=Unknown
    #: and Reconciling=True (reason Probing) are written meanwhile, so kstatus (Flux) and Argo CD see a probe under
    #: way instead of no status (which kstatus counts as Current) or the previous spec's result. A fast probe
    #: writes only its result: one status write per registration.
    first_probe_grace: float = 1.0
    #: Serve only the ProxmoxClusters whose labels match this Kubernetes label selector (``--selector``, a shard);
    #: empty: all of them.
    selector: str = ""


#: The cyclic garbage collector's thresholds (CPython's defaults: 700, 10, 10), set by ``cli.tune_gc``. With the
#: defaults, registering 1,000 clusters ran 1,100 young and 9 full collections (each full one ~110 ms, as the heap
#: grew): 1.4 s of the 8.2 s of CPU in ``make bench``. With 10,000 and the imports frozen: 0.5 s, 1 full collection.
GC_THRESHOLDS = (10_000, 10, 10)


@dataclass(frozen=True)
class Election:
    """Leader election over a coordination.k8s.io/v1 Lease (see :mod:`proxmox_operator.leader`), with client-go's
    meaning of each number.

    The safety margin: a leader that has not renewed for ``renew_deadline`` stops at once, while a standby takes
    the Lease only after it has seen no renewal for ``lease_duration`` (measured on its own clock), so a leader is
    gone before anyone else may lead. After a leader dies without releasing the Lease (SIGKILL, a lost node), a
    standby holds the Lease at most :func:`takeover_bound` seconds after the last renewal: it notices that
    renewal within one ``retry_period``, then waits ``lease_duration``, checking every ``retry_period``. After a
    release (SIGTERM), within one ``retry_period``.
    """

    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry_period: float = 2.0
    #: The Lease's default name (``--leader-election-id``); each shard needs its own.
    lease_name: str = "proxmox-operator"


def takeover_bound(timing: Election = Election()) -> float:
    """The longest time from a dead leader's last renewal until a standby holds the Lease (14 s by default)."""
    return timing.lease_duration + 2 * timing.retry_period
