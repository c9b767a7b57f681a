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
