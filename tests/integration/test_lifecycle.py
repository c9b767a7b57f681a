"""The lifecycle under faults, each on the real API server with an operator process of the test's own.

These tests kill, stop and restart the operator (and once the kube-apiserver), so they do not use the session's
operator: they work in pxo-life-* namespaces, which only their own operator serves.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import (
    LIFE_NS_PREFIX,
    OPERATOR_ARGS,
    OperatorProcess,
    apply,
    pxc_manifest,
    register,
    secret_manifest,
)
from tests.integration.kube import ROOT, Cluster, event_reasons, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE, TOKEN_ID

pytestmark = pytest.mark.integration

FAST = {"healthCheck": {"intervalSeconds": 10}}


def test_sigkill_mid_round_converges_without_an_event_storm(
    cluster: Cluster, own_operator: OperatorProcess, life_namespace: str, pve: PVE
) -> None:
    pve.server.faults.update({"latency": 2.0})  # every request is slow: a round is in flight for seconds
    register(cluster, life_namespace, pve, extra=FAST)
    wait_for(lambda: pve.server.counters.total > 0, timeout=30, what="the first request of a round")
    own_operator.stop(signal.SIGKILL)
    pve.server.faults.update({"latency": 0.0})
    own_operator.start()
    obj = wait_condition(cluster, life_namespace, "lab", "True", timeout=60)
    assert obj["metadata"]["finalizers"] == ["proxmox-operator.dev/finalizer"]
    wait_condition(cluster, life_namespace, "lab", "True", timeout=30)
    assert event_reasons(cluster, life_namespace).count("Registered") == 1
    cluster.kubectl("delete", "pxc", "lab", "-n", life_namespace, "--wait=true", "--timeout=30s")


def test_resource_deleted_while_the_operator_is_down_is_released_at_start(
    cluster: Cluster, own_operator: OperatorProcess, life_namespace: str, pve: PVE
) -> None:
    register(cluster, life_namespace, pve, extra=FAST)
    wait_condition(cluster, life_namespace, "lab", "True")
    assert own_operator.stop() == 0
    cluster.kubectl("delete", "pxc", "lab", "-n", life_namespace, "--wait=false")
    obj = get_pxc(cluster, life_namespace, "lab")
    assert obj is not None and obj["metadata"].get("deletionTimestamp"), "held by the finalizer while down"
    own_operator.start()
    wait_for(lambda: get_pxc(cluster, life_namespace, "lab") is None, timeout=30, what="the finalizer to go")


def test_discovered_endpoints_and_status_survive_an_operator_restart(
    cluster: Cluster, own_operator: OperatorProcess, life_namespace: str, pve: PVE
) -> None:
    register(cluster, life_namespace, pve, extra=FAST)
    before = wait_condition(cluster, life_namespace, "lab", "True")
    own_operator.stop()
    probes = pve.probes()
    own_operator.start()
    wait_for(lambda: pve.probes() > probes, timeout=40, what="a probe by the restarted operator")
    after = wait_condition(cluster, life_namespace, "lab", "True")
    assert (
        after["status"]["conditions"][0]["lastTransitionTime"]
        == before["status"]["conditions"][0]["lastTransitionTime"]
    )
    assert event_reasons(cluster, life_namespace).count("Registered") == 1


def test_discovered_endpoints_let_a_restarted_operator_reach_the_cluster(
    cluster: Cluster, own_operator: OperatorProcess, life_namespace: str, pve: PVE
) -> None:
    register(cluster, life_namespace, pve, extra=FAST)
    obj = wait_condition(cluster, life_namespace, "lab", "True")
    assert obj["status"]["endpoints"] == [pve.node_url("pve2"), pve.node_url("pve3")]
    assert own_operator.stop() == 0
    pve.set_listening("pve1", False)  # the only configured endpoint is gone while the operator is down
    own_operator.start()
    # The restarted operator knows pve2 only from status.endpoints.
    wait_for(
        lambda: (
            (o := get_pxc(cluster, life_namespace, "lab")) and o["status"].get("activeEndpoint") == pve.node_url("pve2")
        ),
        timeout=40,
        what="the restarted operator to use the discovered endpoint",
    )


def test_cross_namespace_secret_is_used_when_the_operator_allows_it(
    cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, pve: PVE, tmp_path: Path
) -> None:
    vault = f"{LIFE_NS_PREFIX}vault-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", vault)
    op = OperatorProcess(
        operator_kubeconfig,
        tmp_path / "operator.log",
        # A namespace-restricted operator watches Secrets only where it serves: name the Secret's namespace too.
        [*OPERATOR_ARGS, "--namespace", life_namespace, "--namespace", vault, "--allow-cross-namespace-secrets"],
    )
    op.start()
    try:
        manifest = pxc_manifest("lab", life_namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
        manifest["spec"]["credentialsRef"]["namespace"] = vault
        apply(
            cluster, secret_manifest("token", vault, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}), manifest
        )
        wait_condition(cluster, life_namespace, "lab", "True", "Registered")
        # The Secret in the other namespace is watched like any other.
        apply(
            cluster,
            secret_manifest(
                "token", vault, {"tokenId": TOKEN_ID, "tokenSecret": "0" * 8 + "-0000-0000-0000-" + "0" * 12}
            ),
        )
        wait_condition(cluster, life_namespace, "lab", "False", "AuthenticationFailed", timeout=20)
    finally:
        cluster.kubectl("delete", "pxc", "--all", "-n", life_namespace, "--wait=true", "--timeout=30s", check=False)
        op.stop()
        cluster.kubectl("delete", "namespace", vault, "--wait=false", check=False)


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _gone(pid: int) -> bool:
    """Whether the process has exited (a zombie counts: nothing may reap it in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _local_cluster_env(cluster: Cluster) -> dict[str, str]:
    if cluster.kubectl("config", "current-context").stdout.strip() != "proxmox-operator-local":
        pytest.skip("restarting the kube-apiserver needs the local control plane")
    return {**os.environ}


def test_kube_apiserver_restart_resumes_watches_and_status_updates(
    cluster: Cluster, own_operator: OperatorProcess, life_namespace: str, pve: PVE
) -> None:
    env = _local_cluster_env(cluster)
    register(cluster, life_namespace, pve, extra=FAST)
    wait_condition(cluster, life_namespace, "lab", "True")
    state = Path(
        subprocess.run(
            ["bash", str(ROOT / "hack/cluster.sh"), "kubeconfig"], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
    ).parent
    pid = int((state / "kube-apiserver.pid").read_text().strip())
    # A crash, not a graceful stop: kube-apiserver drains long-running watches for a long time on SIGTERM.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _gone(pid), timeout=30, what="kube-apiserver to die")
    # The thread-group leader turns zombie before the other threads have closed the listening socket.
    server = urlsplit(
        cluster.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    )
    wait_for(
        lambda: not _accepts(server.hostname or "127.0.0.1", server.port or 443), timeout=30, what="the port to close"
    )
    up = subprocess.run(
        ["bash", str(ROOT / "hack/cluster.sh"), "up"], env=env, check=False, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    # Probes go on after the restart...
    probes = pve.probes()
    wait_for(lambda: pve.probes() > probes, timeout=60, what="a probe after the restart")
    # ...and the watch resumed: a spec change is noticed and its generation observed.
    patched = pxc_manifest(
        "lab",
        life_namespace,
        endpoint=pve.url,
        secret="token",
        ca_pem=pve.ca_pem,
        extra={"healthCheck": {"intervalSeconds": 11}},
    )
    apply(cluster, patched)
    wait_for(
        lambda: (
            (o := get_pxc(cluster, life_namespace, "lab"))
            and o["status"].get("observedGeneration") == o["metadata"]["generation"] == 2
        ),
        timeout=60,
        what="the new generation to be observed",
    )
    assert own_operator.alive()
