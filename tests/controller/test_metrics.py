"""The metrics fed by the real controller and Proxmox client: reconcile_once through FakeKube against the PVE
simulator over real HTTPS on loopback, scraped as Prometheus would."""

from __future__ import annotations

import socket

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxmox_operator.controller.registry import Registry
from proxmox_operator.controller.worker import reconcile_once
from proxmox_operator.metrics import Metrics
from proxmox_operator.proxmox import PasswordCredentials, ProxmoxClient, TokenCredentials, TrustConfig
from proxmox_operator.settings import Tuning
from pve_simulator import SimulatorServer
from tests.controller.conftest import KEY, PASSWORD, SECRET, body
from tests.support.fakekube import FakeKube

TUNING = Tuning(probe_interval=60, backoff_base=60, backoff_max=60)


def scrape(metrics: Metrics) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    text = generate_latest(metrics.registry).decode()
    values = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, values


def value(values: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str) -> float | None:
    return values.get((metric, frozenset(labels.items())))


def at(**extra: str) -> dict[str, str]:
    return {"namespace": KEY.namespace, "name": KEY.name, **extra}


async def test_the_metrics_follow_registration_quorum_loss_and_deregistration(sim: SimulatorServer) -> None:
    metrics = Metrics()
    kube, registry = FakeKube(), Registry(observer=metrics, hooks=metrics.hooks)
    kube.put_secret(KEY.namespace, "token", {"tokenId": "root@pam!ci", "tokenSecret": SECRET})
    try:
        await reconcile_once(KEY, body(sim), kube, registry, TUNING)
        _, v = scrape(metrics)
        assert value(v, "proxmox_operator_cluster_ready", **at(reason="Registered")) == 1.0
        assert value(v, "proxmox_operator_cluster_quorate", **at()) == 1.0
        assert value(v, "proxmox_operator_cluster_nodes_online", **at()) == 2.0
        assert value(v, "proxmox_operator_cluster_nodes", **at()) == 2.0
        assert value(v, "proxmox_operator_status_writes_total") == 1.0
        assert value(v, "proxmox_operator_events_total", type="Normal", reason="Registered") == 1.0
        assert value(v, "proxmox_operator_probe_duration_seconds_count") == 1.0
        assert (value(v, "proxmox_operator_pve_requests_total", host="127.0.0.1", code="2xx") or 0) >= 3
        info = [labels for (name, labels) in v if name == "proxmox_operator_cluster_version_info"]
        assert len(info) == 1 and dict(info[0])["version"] == sim.config.pve_version

        sim.set_node_online("pve2", False)  # one of two votes: the cluster loses quorum
        await reconcile_once(KEY, body(sim, kube.status()), kube, registry, TUNING)
        _, v = scrape(metrics)
        assert value(v, "proxmox_operator_cluster_ready", **at(reason="QuorumLost")) == 0.0
        assert value(v, "proxmox_operator_cluster_ready", **at(reason="Registered")) is None
        assert value(v, "proxmox_operator_cluster_quorate", **at()) == 0.0
        assert value(v, "proxmox_operator_cluster_nodes_online", **at()) == 1.0
        assert value(v, "proxmox_operator_errors_total", reason="QuorumLost") == 1.0

        registry.deregister(KEY)
        _, v = scrape(metrics)
        assert not [name for (name, labels) in v if ("name", KEY.name) in labels]
    finally:
        await registry.close()


async def test_no_credential_appears_in_the_metrics(sim: SimulatorServer) -> None:
    metrics = Metrics()
    kube, registry = FakeKube(), Registry(observer=metrics, hooks=metrics.hooks)
    kube.put_secret(KEY.namespace, "token", {"username": "root@pam", "password": PASSWORD})
    try:
        outcome, _ = await reconcile_once(KEY, body(sim), kube, registry, TUNING)
        assert outcome.ready
        kube.put_secret(KEY.namespace, "token", {"username": "root@pam", "password": PASSWORD + "-wrong"})
        outcome, _ = await reconcile_once(KEY, body(sim, kube.status()), kube, registry, TUNING)
        assert outcome.reason == "AuthenticationFailed"
        text, v = scrape(metrics)
    finally:
        await registry.close()
    assert value(v, "proxmox_operator_pve_logins_total", result="success") == 1.0
    assert value(v, "proxmox_operator_pve_logins_total", result="failure") == 1.0
    assert value(v, "proxmox_operator_cluster_ready", **at(reason="AuthenticationFailed")) == 0.0
    for secret in (PASSWORD, SECRET, "PVE:root@pam", "PVEAuthCookie", "CSRF", "/api2", "?"):
        assert secret not in text


async def test_a_failover_is_counted_at_the_host_that_failed(sim: SimulatorServer) -> None:
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.9", 0))
        dead = f"https://127.0.0.9:{s.getsockname()[1]}"
    metrics = Metrics()
    async with ProxmoxClient(
        [dead, sim.url],
        credentials=TokenCredentials("root@pam!ci", SECRET),
        trust=TrustConfig.build(ca_bundle=sim.ca_pem),
        hooks=metrics.hooks,
    ) as client:
        await client.version()
    _, v = scrape(metrics)
    assert value(v, "proxmox_operator_pve_failovers_total", host="127.0.0.9") == 1.0
    assert value(v, "proxmox_operator_pve_requests_total", host="127.0.0.9", code="error") == 1.0
    assert value(v, "proxmox_operator_pve_requests_total", host="127.0.0.1", code="2xx") == 1.0


async def test_a_client_without_hooks_still_logs_in(sim: SimulatorServer) -> None:
    async with ProxmoxClient(
        sim.url, credentials=PasswordCredentials("root@pam", PASSWORD), trust=TrustConfig.build(ca_bundle=sim.ca_pem)
    ) as client:
        await client.login()
        assert (await client.version()).version == sim.config.pve_version
