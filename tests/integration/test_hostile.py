"""One tenant's misbehaving endpoint never takes the operator down for everyone: the real operator process probes
a healthy simulated cluster while other ProxmoxClusters point at hostile HTTPS servers on loopback (a gzip bomb, a
100 MB body, JSON nested 100,000 deep, a gzip header on a body that is not gzip, a huge Retry-After)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, register, secret_manifest
from tests.integration.kube import Cluster, condition, wait_condition, wait_for
from tests.integration.pve import PVE
from tests.support.hostile import (
    Behaviour,
    HostileServer,
    bad_gzip,
    deep_json,
    gzip_bomb,
    huge_body,
    json_data,
    status,
)

pytestmark = pytest.mark.integration

FAST = {"healthCheck": {"intervalSeconds": 10}}
TOKEN_ID = "root@pam!operator"
PATHS = [f"/api2/json{p}" for p in ("/version", "/nodes", "/cluster/status", "/access/permissions")]
HOSTILE: dict[str, Callable[[], Behaviour]] = {
    "bomb": lambda: gzip_bomb(1 << 30),
    "huge": lambda: huge_body(100 * 1000 * 1000),
    "deep": lambda: deep_json(100_000),
    "badgzip": bad_gzip,
}


def peak_rss_kib(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM): growth of it is the worst moment, not a sample."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture
def hostile() -> Iterator[dict[str, HostileServer]]:
    servers = {name: HostileServer().start() for name in [*HOSTILE, "throttle"]}
    for name, make in HOSTILE.items():
        for path in PATHS:
            servers[name].set(path, make())
    for path in PATHS:
        servers["throttle"].set(path, status(503, {"Retry-After": "9" * 400}))
    yield servers
    for server in servers.values():
        server.stop()


def test_hostile_endpoints_are_invalid_responses_and_the_healthy_cluster_keeps_being_probed(
    cluster: Cluster,
    own_operator: OperatorProcess,
    life_namespace: str,
    pve: PVE,
    hostile: dict[str, HostileServer],
) -> None:
    ns = life_namespace
    register(cluster, ns, pve, name="healthy", extra=FAST)
    wait_condition(cluster, ns, "healthy", "True")
    assert own_operator.proc is not None
    pid = own_operator.proc.pid
    before = peak_rss_kib(pid)

    canary = str(uuid.uuid4())
    objects = [secret_manifest("hostile-token", ns, {"tokenId": TOKEN_ID, "tokenSecret": canary})]
    for name, server in hostile.items():
        objects.append(
            pxc_manifest(name, ns, endpoint=server.url, secret="hostile-token", ca_pem=server.ca_pem, extra=FAST)
        )
    apply(cluster, *objects)
    for name in HOSTILE:
        obj = wait_condition(cluster, ns, name, "False", "InvalidResponse", timeout=90)
        assert hostile[name].url in condition(obj)["message"]  # type: ignore[index]
    wait_condition(cluster, ns, "throttle", "False", "ServerError", timeout=90)

    # The healthy cluster is probed again after all that, and is still Ready.
    probes = pve.probes()
    wait_for(
        lambda: pve.probes() > probes,
        timeout=60,
        what="another probe of the healthy cluster",
    )
    wait_condition(cluster, ns, "healthy", "True")
    assert own_operator.alive()
    growth_mib = (peak_rss_kib(pid) - before) / 1024
    assert growth_mib < 20, f"the operator's peak memory grew by {growth_mib:.1f} MiB"

    # A Retry-After of 10^400 seconds neither crashed the operator nor stopped probing: the throttled cluster is
    # probed again within its interval.
    first = len(hostile["throttle"].requests)
    wait_for(lambda: len(hostile["throttle"].requests) > first, timeout=60, what="the throttled cluster's next probe")

    exposed = json.dumps(cluster.kubectl_json("get", "pxc", "-n", ns)) + own_operator.log()
    assert canary not in exposed, "a token secret leaked into status or the operator's log"


def test_invalid_json_in_a_node_list_does_not_leave_a_stale_ready(
    cluster: Cluster, own_operator: OperatorProcess, life_namespace: str
) -> None:
    """Ready=True turns False when a later answer breaks, instead of the old Ready staying behind."""
    with HostileServer() as server:
        version = {"version": "8.4.1", "release": "8.4", "repoid": "x"}
        server.set("/api2/json/version", json_data(version))
        server.set("/api2/json/nodes", json_data([{"node": "pve1", "status": "online"}] * 2))
        server.set(
            "/api2/json/cluster/status",
            json_data([{"type": "cluster", "name": "odd"}, {"type": "node", "name": "pve1", "online": 1}]),
        )
        server.set("/api2/json/access/permissions", json_data({"/": {"Sys.Audit": 1}}))
        apply(
            cluster,
            secret_manifest("t", life_namespace, {"tokenId": TOKEN_ID, "tokenSecret": str(uuid.uuid4())}),
            pxc_manifest("odd", life_namespace, endpoint=server.url, secret="t", ca_pem=server.ca_pem, extra=FAST),
        )
        # A node listed twice and no quorate field: Ready, one node, Quorate Unknown (not QuorumLost).
        obj = wait_condition(cluster, life_namespace, "odd", "True")
        assert obj["status"]["nodes"]["summary"] == "1/1"
        assert condition(obj, "Quorate")["status"] == "Unknown"  # type: ignore[index]
        server.set("/api2/json/cluster/status", gzip_bomb(1 << 28))
        wait_condition(cluster, life_namespace, "odd", "False", "InvalidResponse", timeout=60)
