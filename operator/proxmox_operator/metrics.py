"""Prometheus metrics: what the workers find per cluster and what the operator does, served on ``/metrics``.

:class:`Metrics` is the controller's :class:`~proxmox_operator.controller.observer.Observer` and, through
:attr:`Metrics.hooks`, the Proxmox clients' :class:`~proxmox_operator.proxmox.hooks.ClientHooks`; neither layer
imports this module. The per-cluster series come from a small snapshot per cluster, read at scrape time by a custom
collector: "seconds since" is computed when Prometheus asks, and a cluster's series are gone from the next scrape
once its worker deregisters it. The server is prometheus-client's own, in a thread: a scrape never waits for the
event loop.

Every label value is bounded: ``namespace`` and ``name`` are Kubernetes names, ``reason`` one of the documented
:class:`~proxmox_operator.api.v1alpha1.Reason` values, ``host`` an endpoint's host name (never a path, query or
credential; at most :data:`MAX_HOSTS` of them), and the version labels Proxmox reports are cut to
:data:`MAX_LABEL_CHARS` characters of a safe set.
"""

from __future__ import annotations

import platform
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from proxmox_operator.api.v1alpha1 import ProxmoxClusterStatus, Reason
from proxmox_operator.controller.outcome import Outcome
from proxmox_operator.controller.ports import Key
from proxmox_operator.proxmox.hooks import ClientHooks

PREFIX = "proxmox_operator"
#: Label values from outside (Proxmox' version strings) are cut to this length, in :data:`_SAFE` characters.
MAX_LABEL_CHARS = 64
#: Distinct ``host`` label values at most; later hosts are counted as ``other``.
MAX_HOSTS = 1000
_SAFE = re.compile(r"[^A-Za-z0-9._:+~-]")
_HOST = re.compile(r"[a-z0-9.:-]{1,253}")
_REASONS = frozenset(r.value for r in Reason)
#: A probe reads a few endpoints; Proxmox answers in milliseconds, a failing one within the timeouts (30 s total).
PROBE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CLUSTER = ("namespace", "name")


def bounded(value: str | None) -> str:
    """A label value from outside: unsafe characters replaced, at most :data:`MAX_LABEL_CHARS` long."""
    return _SAFE.sub("_", value or "")[:MAX_LABEL_CHARS]


def reason_label(reason: str) -> str:
    """A documented Reason value, or ``Other``."""
    return reason if reason in _REASONS else "Other"


def code_class(status: int | None) -> str:
    """``2xx``, ``4xx``, ``5xx`` (and ``1xx``, ``3xx``) for an answer; ``error`` when none came."""
    return f"{status // 100}xx" if status is not None and 100 <= status <= 599 else "error"


@dataclass(frozen=True)
class ClusterSnapshot:
    """What the last round of one cluster found, as its series show it."""

    ready: bool
    reason: str
    quorate: bool | None
    nodes_online: int | None
    nodes_total: int | None
    version: tuple[str, str, str] | None
    #: time.monotonic() of the last probe that read the cluster's state; None until one did.
    last_success: float | None


class ClusterCollector(Collector):
    """The per-cluster series, from one snapshot per cluster, read at scrape time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clusters: dict[Key, ClusterSnapshot] = {}

    def update(self, key: Key, snapshot: ClusterSnapshot) -> None:
        with self._lock:
            self._clusters[key] = snapshot

    def get(self, key: Key) -> ClusterSnapshot | None:
        with self._lock:
            return self._clusters.get(key)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._clusters.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            clusters = sorted(self._clusters.items(), key=lambda kv: (kv[0].namespace, kv[0].name))
        now = self._clock()
        ready = GaugeMetricFamily(
            f"{PREFIX}_cluster_ready",
            "1 when the ProxmoxCluster is Ready, else 0; reason is the Ready condition's reason",
            labels=[*CLUSTER, "reason"],
        )
        quorate = GaugeMetricFamily(
            f"{PREFIX}_cluster_quorate",
            "1 when the Proxmox cluster is quorate, 0 when not (absent: unknown)",
            labels=CLUSTER,
        )
        online = GaugeMetricFamily(f"{PREFIX}_cluster_nodes_online", "Nodes of the cluster online", labels=CLUSTER)
        total = GaugeMetricFamily(f"{PREFIX}_cluster_nodes", "Nodes of the cluster, online or not", labels=CLUSTER)
        version = InfoMetricFamily(
            f"{PREFIX}_cluster_version", "The Proxmox VE version the cluster reports", labels=CLUSTER
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_cluster_seconds_since_successful_probe",
            "Seconds since a probe last read the cluster's state (absent: none has since the operator started)",
            labels=CLUSTER,
        )
        for key, snap in clusters:
            labels = [key.namespace, key.name]
            ready.add_metric([*labels, snap.reason], 1.0 if snap.ready else 0.0)
            if snap.quorate is not None:
                quorate.add_metric(labels, 1.0 if snap.quorate else 0.0)
            if snap.nodes_total is not None and snap.nodes_online is not None:
                online.add_metric(labels, snap.nodes_online)
                total.add_metric(labels, snap.nodes_total)
            if snap.version is not None:
                version.add_metric(labels, dict(zip(("version", "release", "repoid"), snap.version, strict=True)))
            if snap.last_success is not None:
                age.add_metric(labels, max(0.0, now - snap.last_success))
        yield from (ready, quorate, online, total, version, age)


class _PveHooks(ClientHooks):
    """What the Proxmox clients send, counted by endpoint host."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._hosts: set[str] = set()
        self.requests = Counter(
            f"{PREFIX}_pve_requests",
            "HTTP exchanges with Proxmox VE endpoints, by host and status class (error: no answer)",
            ["host", "code"],
            registry=registry,
        )
        self.failovers = Counter(
            f"{PREFIX}_pve_failovers",
            "Requests moved on to the next endpoint after a transport failure at host",
            ["host"],
            registry=registry,
        )
        self.logins = Counter(
            f"{PREFIX}_pve_logins", "Password logins and ticket renewals, by result", ["result"], registry=registry
        )

    def _host(self, host: str) -> str:
        if not _HOST.fullmatch(host):
            return "other"
        if host not in self._hosts:
            if len(self._hosts) >= MAX_HOSTS:
                return "other"
            self._hosts.add(host)
        return host

    def request(self, host: str, status: int | None) -> None:
        self.requests.labels(self._host(host), code_class(status)).inc()

    def failover(self, host: str) -> None:
        self.failovers.labels(self._host(host)).inc()

    def login(self, success: bool) -> None:
        self.logins.labels("success" if success else "failure").inc()


class Metrics:
    """The operator's metrics in a registry of their own (plus the process, platform and GC collectors)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.clusters = ClusterCollector(clock)
        self.registry.register(self.clusters)
        self.hooks = _PveHooks(self.registry)
        Info(f"{PREFIX}_build", "The operator's version and Python's", registry=self.registry).info(
            {"version": _version(), "python_version": platform.python_version()}
        )
        self.workers = Gauge(f"{PREFIX}_workers", "ProxmoxCluster workers running", registry=self.registry)
        self._keys: set[Key] = set()
        self.probe_duration = Histogram(
            f"{PREFIX}_probe_duration_seconds",
            "How long a probe of a cluster took, failures included",
            buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors", "Rounds that did not end Ready, by reason", ["reason"], registry=self.registry
        )
        self.status_writes = Counter(
            f"{PREFIX}_status_writes", "Status writes to ProxmoxClusters", registry=self.registry
        )
        self.events = Counter(
            f"{PREFIX}_events",
            "Kubernetes Events posted, by type and reason",
            ["type", "reason"],
            registry=self.registry,
        )

    # --- the controller's Observer ---------------------------------------------------------------------------

    def registered(self, key: Key) -> None:
        self._keys.add(key)
        self.workers.set(len(self._keys))

    def observed(self, key: Key, outcome: Outcome, status: ProxmoxClusterStatus, probe_seconds: float | None) -> None:
        if probe_seconds is not None:
            self.probe_duration.observe(probe_seconds)
        if not outcome.ready and outcome.reason != Reason.PAUSED:
            self.errors.labels(reason_label(outcome.reason)).inc()
        previous = self.clusters.get(key)
        last_success = self._clock() if outcome.facts is not None else previous.last_success if previous else None
        nodes, v = status.nodes, status.version
        self.clusters.update(
            key,
            ClusterSnapshot(
                ready=outcome.ready,
                reason=reason_label(outcome.reason),
                quorate=status.quorate,
                nodes_online=nodes.online if nodes else None,
                nodes_total=nodes.total if nodes else None,
                version=(bounded(v.version), bounded(v.release), bounded(v.repoid)) if v else None,
                last_success=last_success,
            ),
        )

    def failed(self, reason: Reason) -> None:
        self.errors.labels(reason_label(reason)).inc()

    def status_written(self) -> None:
        self.status_writes.inc()

    def event_posted(self, type_: str, reason: str) -> None:
        self.events.labels("Warning" if type_ == "Warning" else "Normal", reason_label(reason)).inc()

    def deregistered(self, key: Key) -> None:
        self.clusters.forget(key)
        self._keys.discard(key)
        self.workers.set(len(self._keys))

    # --- serving ---------------------------------------------------------------------------------------------

    def serve(self, address: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``HOST:PORT`` (port 0: any free one) in a daemon thread; returns where it listens.
        Raises OSError when the address cannot be bound."""
        host, port = parse_address(address)
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all addresses) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {address!r}")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - a metrics endpoint of a pod listens on all addresses
    return host, int(port)


def _version() -> str:
    try:
        return metadata.version("proxmox-operator")
    except metadata.PackageNotFoundError:
        return "unknown"
