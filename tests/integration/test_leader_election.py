"""High availability on the real API server: two operator processes elect a leader over a Lease, exactly one is
active, and a killed or stopped leader is replaced without two operators ever serving an object together.

Each test runs its own replicas on a pxo-life-* namespace, with a Lease of its own in the operator's namespace
(the ServiceAccount of deploy/rbac.yaml may write Leases there and nowhere else). Waits are liveness bounds; the
measured takeover times are logged.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxmox_operator.cli import EXIT_LEADERSHIP_LOST
from proxmox_operator.settings import Election, takeover_bound
from tests.integration.conftest import OPERATOR_ARGS, OPERATOR_NS, OperatorProcess, apply, pxc_manifest, register
from tests.integration.kube import Cluster, event_reasons, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

TIMING = Election()
#: The documented bound: a standby holds the Lease at most this long after the leader's last renewal (README,
#: "High availability"); the leader renewed before it was killed.
TAKEOVER_AFTER_KILL = takeover_bound(TIMING)
#: After a release the standby's next attempt takes the Lease: well under lease_duration, so a takeover within this
#: wait was the release's doing, not the Lease expiring.
TAKEOVER_AFTER_RELEASE = TIMING.retry_period + 2
FAST = {"healthCheck": {"intervalSeconds": 10}}


def free_port() -> int:
    """A free loopback port in 20000-32000 (never the ephemeral range, where outgoing connections take theirs)."""
    for _ in range(200):
        port = 20000 + secrets.randbelow(12000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


class Replica(OperatorProcess):
    """An operator process under leader election, with a health endpoint of its own."""

    def __init__(self, kubeconfig: Path, log_path: Path, args: list[str]) -> None:
        self.port = free_port()
        super().__init__(kubeconfig, log_path, [*args, "--liveness", f"http://127.0.0.1:{self.port}/healthz"])

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return dict(json.loads(response.read()))
        except OSError:
            return None

    def role(self) -> str | None:
        return (self.health() or {}).get("role")


@pytest.fixture
def lease(cluster: Cluster) -> Iterator[str]:
    name = f"pxo-test-{secrets.token_hex(4)}"
    yield name
    cluster.kubectl("delete", "lease", name, "-n", OPERATOR_NS, "--ignore-not-found", check=False)


@pytest.fixture
def replicas(
    cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, lease: str, tmp_path: Path
) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(*extra: str, name: str | None = None) -> Replica:
        label = name or f"replica-{len(started)}"
        args = [*OPERATOR_ARGS, "--namespace", life_namespace, "--leader-elect"]
        args += ["--leader-election-namespace", OPERATOR_NS, "--leader-election-id", lease, *extra]
        replica = Replica(operator_kubeconfig, tmp_path / f"{label}.log", args)
        replica.start()
        started.append(replica)
        return replica

    yield start
    # Release the finalizers while a replica still leads: no other operator serves the namespace.
    if any(r.alive() for r in started):
        cluster.kubectl("delete", "pxc", "--all", "-n", life_namespace, "--wait=true", "--timeout=40s", check=False)
    for replica in started:
        replica.stop()


def holder(cluster: Cluster, lease: str) -> str:
    found = cluster.kubectl("get", "lease", lease, "-n", OPERATOR_NS, "-o", "json", check=False)
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "") if found.returncode == 0 else ""


def one_active(replicas: list[Replica]) -> tuple[Replica, Replica] | None:
    """(active, standby) once both answer and exactly one is active."""
    roles = [r.role() for r in replicas]
    if sorted(map(str, roles)) != ["active", "standby"]:
        return None
    active = replicas[roles.index("active")]
    return active, replicas[1 - replicas.index(active)]


def test_of_two_replicas_exactly_one_is_active_and_a_sigkilled_leader_is_replaced(
    cluster: Cluster, replicas: Callable[..., Replica], lease: str, life_namespace: str, pve: PVE
) -> None:
    pair = [replicas(), replicas()]
    active, standby = wait_for(lambda: one_active(pair), timeout=30, what="one active replica and one standby")
    # The Lease's holder is the active replica, and the standby's health endpoint names it (once it has read the
    # Lease: a standby that lost the race to create it learns the holder at its next attempt).
    leader_id = active.health()["identity"]  # type: ignore[index]
    assert holder(cluster, lease) == leader_id
    wait_for(lambda: (standby.health() or {}).get("holder") == leader_id, timeout=10, what="the standby to name it")

    register(cluster, life_namespace, pve, extra=FAST)
    wait_condition(cluster, life_namespace, "lab", "True", "Registered")
    key = f"{life_namespace}/lab"
    assert f"{key}: Registered" in active.log()
    # The standby never started kopf: it saw no ProxmoxCluster, probed nothing, posted nothing.
    assert "Starting Kopf" in active.log() and "Starting Kopf" not in standby.log()
    assert key not in standby.log()
    assert "held by" in standby.log()

    killed = time.monotonic()
    active.stop(signal.SIGKILL)
    probes = pve.probes()
    new_holder = standby.health()["identity"]  # type: ignore[index]
    wait_for(lambda: holder(cluster, lease) == new_holder, timeout=TAKEOVER_AFTER_KILL, what="the Lease to move")
    took_lease = time.monotonic() - killed
    assert standby.role() == "active"
    # Status follows again: a spec change is observed by the new leader.
    apply(
        cluster,
        pxc_manifest(
            "lab",
            life_namespace,
            endpoint=pve.url,
            secret="token",
            ca_pem=pve.ca_pem,
            extra={"healthCheck": {"intervalSeconds": 11}},
        ),
    )
    wait_for(
        lambda: (o := get_pxc(cluster, life_namespace, "lab")) and o["status"].get("observedGeneration") == 2,
        timeout=30,
        what="the new leader to observe the spec change",
    )
    fresh = time.monotonic() - killed
    assert pve.probes() > probes
    log.warning(
        "SIGKILL takeover: Lease held by the standby after %.1f s, status fresh after %.1f s", took_lease, fresh
    )
    print(f"\nSIGKILL takeover: Lease after {took_lease:.1f} s, status fresh after {fresh:.1f} s")
    # The new leader found the cluster registered: no second Registered Event.
    assert event_reasons(cluster, life_namespace).count("Registered") == 1
    # Deleting the resource after the takeover: the new leader releases the finalizer.
    cluster.kubectl("delete", "pxc", "lab", "-n", life_namespace, "--wait=true", "--timeout=30s")
    assert event_reasons(cluster, life_namespace).count("Deregistered") == 1
    assert standby.stop() == 0


def test_a_stopped_leader_releases_the_lease_and_the_standby_takes_over_at_once(
    cluster: Cluster, replicas: Callable[..., Replica], lease: str, life_namespace: str, pve: PVE
) -> None:
    pair = [replicas(), replicas()]
    active, standby = wait_for(lambda: one_active(pair), timeout=30, what="one active replica and one standby")
    register(cluster, life_namespace, pve, extra=FAST)
    wait_condition(cluster, life_namespace, "lab", "True", "Registered")
    stopped = time.monotonic()
    assert active.stop(signal.SIGTERM) == 0
    assert "released Lease" in active.log()
    wait_for(lambda: standby.role() == "active", timeout=TAKEOVER_AFTER_RELEASE, what="the standby to take over")
    log.warning("SIGTERM hand-over: the standby leads %.1f s after the signal", time.monotonic() - stopped)
    print(f"\nSIGTERM hand-over: the standby leads {time.monotonic() - stopped:.1f} s after the signal")
    cluster.kubectl("delete", "pxc", "lab", "-n", life_namespace, "--wait=true", "--timeout=30s")
    assert event_reasons(cluster, life_namespace).count("Registered") == 1


def test_a_leader_whose_lease_is_taken_exits_at_once_to_restart_as_a_standby(
    cluster: Cluster, replicas: Callable[..., Replica], lease: str
) -> None:
    only = replicas()
    wait_for(lambda: only.role() == "active", timeout=30, what="the replica to lead")
    cluster.kubectl(
        "patch", "lease", lease, "-n", OPERATOR_NS, "--type=merge", "-p", '{"spec":{"holderIdentity":"intruder"}}'
    )
    wait_for(lambda: not only.alive(), timeout=TIMING.renew_deadline + 5, what="the leader to exit")
    assert only.stop() == EXIT_LEADERSHIP_LOST
    assert "lost Lease" in only.log()
