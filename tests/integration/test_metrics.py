"""/metrics of the real operator on the real API server: the per-cluster series follow the simulator's faults and
the resource's deletion, and no credential ever appears in a scrape.

An operator of the test's own serves a pxo-life-* namespace with ``--metrics-address`` on a free loopback port.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    OPERATOR_ARGS,
    OperatorProcess,
    apply,
    pxc_manifest,
    register,
    secret_manifest,
    token_secret,
)
from tests.integration.kube import Cluster, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE, USER

pytestmark = pytest.mark.integration

FAST = {"healthCheck": {"intervalSeconds": 10}}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    """Scrapes the operator's /metrics, and remembers every text it got (for the canary check)."""

    def __init__(self, address: str) -> None:
        self.url = f"http://{address}/metrics"
        self.texts: list[str] = []

    def __call__(self) -> Samples:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        self.texts.append(text)
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, metric: str, /, **labels: str) -> float | None:
        return self().get((metric, frozenset(labels.items())))

    def until(self, metric: str, expected: float, /, *, timeout: float = 40, **labels: str) -> None:
        wait_for(
            lambda: self.value(metric, **labels) == expected,
            timeout=timeout,
            what=f"{metric}{labels} == {expected} at {self.url}",
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def scrape(cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, tmp_path: Path) -> Iterator[Scraper]:
    address = f"127.0.0.1:{free_port()}"
    op = OperatorProcess(
        operator_kubeconfig,
        tmp_path / "operator.log",
        [*OPERATOR_ARGS, "--namespace", life_namespace, "--metrics-address", address],
    )
    op.start()
    scraper = Scraper(address)
    try:
        wait_for(scraper, timeout=30, what=f"{scraper.url} answering")
        yield scraper
    finally:
        cluster.kubectl("delete", "pxc", "--all", "-n", life_namespace, "--wait=true", "--timeout=30s", check=False)
        code = op.stop()
    assert code == 0, op.log()[-5000:]


def test_the_series_follow_the_clusters_faults_and_go_with_its_deletion(
    cluster: Cluster, scrape: Scraper, life_namespace: str, pve: PVE
) -> None:
    lab = {"namespace": life_namespace, "name": "lab"}
    register(cluster, life_namespace, pve, extra=FAST)
    scrape.until("proxmox_operator_cluster_ready", 1, reason="Registered", **lab)
    assert scrape.value("proxmox_operator_cluster_quorate", **lab) == 1
    assert scrape.value("proxmox_operator_cluster_nodes", **lab) == 3
    assert scrape.value("proxmox_operator_cluster_nodes_online", **lab) == 3
    assert scrape.value("proxmox_operator_workers") == 1
    assert scrape.value("proxmox_operator_cluster_version_info", version=pve.version, release=pve.release, **lab) or (
        [k for k in scrape() if k[0] == "proxmox_operator_cluster_version_info"]
    )
    assert (scrape.value("proxmox_operator_cluster_seconds_since_successful_probe", **lab) or 0) >= 0

    pve.server.set_node_online("pve3", False)  # two of three votes: still quorate
    scrape.until("proxmox_operator_cluster_nodes_online", 2, **lab)
    assert scrape.value("proxmox_operator_cluster_quorate", **lab) == 1
    assert scrape.value("proxmox_operator_cluster_ready", reason="Registered", **lab) == 1

    pve.server.set_node_online("pve2", False)  # one of three: quorum lost
    scrape.until("proxmox_operator_cluster_ready", 0, reason="QuorumLost", **lab)
    assert scrape.value("proxmox_operator_cluster_quorate", **lab) == 0
    assert scrape.value("proxmox_operator_cluster_nodes_online", **lab) == 1
    assert scrape.value("proxmox_operator_cluster_ready", reason="Registered", **lab) is None, "one series"

    pve.server.set_node_online("pve2", True)
    pve.server.set_node_online("pve3", True)
    scrape.until("proxmox_operator_cluster_ready", 1, reason="Registered", **lab)
    assert (scrape.value("proxmox_operator_events_total", type="Normal", reason="Recovered") or 0) >= 1
    assert scrape.value("proxmox_operator_cluster_quorate", **lab) == 1

    wrong = token_secret(life_namespace, pve, secret="00000000-0000-0000-0000-000000000000")
    apply(cluster, wrong)  # the Secret's change wakes the worker at once
    scrape.until("proxmox_operator_cluster_ready", 0, reason="AuthenticationFailed", **lab)
    assert (scrape.value("proxmox_operator_errors_total", reason="AuthenticationFailed") or 0) >= 1
    assert (scrape.value("proxmox_operator_pve_requests_total", host="127.0.0.1", code="4xx") or 0) >= 1

    cluster.kubectl("delete", "pxc", "lab", "-n", life_namespace, "--wait=true", "--timeout=30s")
    assert get_pxc(cluster, life_namespace, "lab") is None
    wait_for(
        lambda: not [k for k in scrape() if ("name", "lab") in k[1]],
        timeout=30,
        what="the deleted cluster's series to disappear",
    )
    assert scrape.value("proxmox_operator_workers") == 0
    assert (scrape.value("proxmox_operator_status_writes_total") or 0) >= 5
    assert scrape.value("proxmox_operator_events_total", type="Normal", reason="Deregistered") == 1


def test_no_credential_ever_appears_in_a_scrape(
    cluster: Cluster, scrape: Scraper, life_namespace: str, pve: PVE
) -> None:
    """Canary values: the simulator's password and token secrets are random per test; a password login also makes
    a ticket and a CSRF token, whose well-known prefixes must not appear either."""
    register(cluster, life_namespace, pve, extra=FAST)
    apply(
        cluster,
        secret_manifest("password", life_namespace, {"username": USER, "password": pve.password}),
        pxc_manifest("pw", life_namespace, endpoint=pve.url, secret="password", ca_pem=pve.ca_pem, extra=FAST),
    )
    wait_condition(cluster, life_namespace, "pw", "True", "Registered")
    scrape.until("proxmox_operator_cluster_ready", 1, reason="Registered", namespace=life_namespace, name="pw")
    assert (scrape.value("proxmox_operator_pve_logins_total", result="success") or 0) >= 1
    apply(cluster, secret_manifest("password", life_namespace, {"username": USER, "password": pve.password + "x"}))
    scrape.until(
        "proxmox_operator_cluster_ready", 0, reason="AuthenticationFailed", namespace=life_namespace, name="pw"
    )
    assert (scrape.value("proxmox_operator_pve_logins_total", result="failure") or 0) >= 1
    assert scrape.texts
    for text in scrape.texts:
        for secret in (pve.password, pve.token_secret, "PVE:" + USER, "PVEAuthCookie", "/api2/json", "?"):
            assert secret not in text, secret
