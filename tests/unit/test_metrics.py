"""The metrics on their own: the per-cluster collector read at scrape time, bounded labels, the client hooks'
counting, and the HTTP endpoint (loopback, a free port)."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxmox_operator import cli
from proxmox_operator.api.v1alpha1 import NodesStatus, ProxmoxClusterStatus, Reason, VersionInfo
from proxmox_operator.controller.outcome import Facts, Outcome
from proxmox_operator.controller.ports import Key
from proxmox_operator.metrics import MAX_HOSTS, MAX_LABEL_CHARS, Metrics, code_class, parse_address

KEY = Key("team-a", "lab")
OTHER = Key("team-b", "edge")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples(metrics).items() if n == name}


def cluster(key: Key = KEY, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": key.namespace, "name": key.name, **extra}.items()))


def status(*, online: int = 3, total: int = 3, quorate: bool | None = True, version: str = "8.4.1") -> Any:
    return ProxmoxClusterStatus(
        quorate=quorate,
        nodes=NodesStatus(total=total, online=online, summary=f"{online}/{total}", items=[]),
        version=VersionInfo(version=version, release="8.4", repoid="abc123"),
    )


def facts() -> Facts:
    return Facts(
        version=VersionInfo(version="8.4.1"),
        nodes=NodesStatus(total=3, online=3, summary="3/3", items=[]),
        cluster_name="lab",
        quorate=True,
    )


def ok() -> Outcome:
    return Outcome(ready=True, reason=Reason.REGISTERED, message="", facts=facts())


def failed(reason: Reason, *, with_facts: bool = False) -> Outcome:
    return Outcome(ready=False, reason=reason, message="", facts=facts() if with_facts else None)


def served(metrics: Metrics) -> str:
    """What ``/metrics`` answers over HTTP on a loopback port of its own; the server is closed afterwards."""
    host, port = metrics.serve("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())
    finally:
        metrics.close()


def test_ready_follows_the_last_round_with_its_reason_as_one_series() -> None:
    metrics = Metrics()
    metrics.registered(KEY)
    metrics.observed(KEY, ok(), status(), 0.1)
    assert series(metrics, "proxmox_operator_cluster_ready") == {cluster(reason="Registered"): 1.0}
    metrics.observed(KEY, failed(Reason.UNREACHABLE), status(), 0.2)
    assert series(metrics, "proxmox_operator_cluster_ready") == {cluster(reason="Unreachable"): 0.0}


def test_quorum_and_nodes_follow_the_status_and_unknown_quorum_is_absent() -> None:
    metrics = Metrics()
    metrics.observed(KEY, failed(Reason.QUORUM_LOST, with_facts=True), status(online=1, quorate=False), 0.1)
    assert series(metrics, "proxmox_operator_cluster_quorate") == {cluster(): 0.0}
    assert series(metrics, "proxmox_operator_cluster_nodes_online") == {cluster(): 1.0}
    assert series(metrics, "proxmox_operator_cluster_nodes") == {cluster(): 3.0}
    metrics.observed(KEY, ok(), status(quorate=None), 0.1)
    assert series(metrics, "proxmox_operator_cluster_quorate") == {}


def test_seconds_since_a_successful_probe_are_computed_at_scrape_and_survive_failures() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.observed(KEY, failed(Reason.SECRET_NOT_FOUND), ProxmoxClusterStatus(), None)
    assert series(metrics, "proxmox_operator_cluster_seconds_since_successful_probe") == {}
    metrics.observed(KEY, ok(), status(), 0.1)
    clock.now += 42
    assert series(metrics, "proxmox_operator_cluster_seconds_since_successful_probe") == {cluster(): 42.0}
    metrics.observed(KEY, failed(Reason.UNREACHABLE), status(), 5.0)
    clock.now += 8
    assert series(metrics, "proxmox_operator_cluster_seconds_since_successful_probe") == {cluster(): 50.0}


def test_a_deregistered_cluster_s_series_are_gone_and_others_stay() -> None:
    metrics = Metrics()
    for key in (KEY, OTHER):
        metrics.registered(key)
        metrics.observed(key, ok(), status(), 0.1)
    assert series(metrics, "proxmox_operator_workers") == {(): 2.0}
    metrics.deregistered(KEY)
    scraped = samples(metrics)
    per_cluster = {labels for (name, labels) in scraped if name.startswith("proxmox_operator_cluster_")}
    assert per_cluster
    assert all(dict(labels)["namespace"] == OTHER.namespace for labels in per_cluster)
    assert scraped[("proxmox_operator_workers", ())] == 1.0


def test_version_labels_from_proxmox_are_bounded_in_length_and_charset() -> None:
    metrics = Metrics()
    hostile = 'x"} 1\nevil_metric{a="' + "9" * 500
    metrics.observed(KEY, ok(), status(version=hostile), 0.1)
    info = series(metrics, "proxmox_operator_cluster_version_info")
    assert len(info) == 1
    version = dict(next(iter(info)))["version"]
    assert len(version) == MAX_LABEL_CHARS
    assert set(version) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:+~-")
    assert not any(name.startswith("evil") for name, _ in samples(metrics))


def test_the_reason_label_is_a_documented_reason_or_other() -> None:
    metrics = Metrics()
    metrics.observed(KEY, Outcome(ready=False, reason="Invented", message=""), status(), None)  # type: ignore[arg-type]
    metrics.event_posted("Warning", "Invented")
    assert series(metrics, "proxmox_operator_cluster_ready") == {cluster(reason="Other"): 0.0}
    assert series(metrics, "proxmox_operator_events_total") == {(("reason", "Other"), ("type", "Warning")): 1.0}


def test_errors_count_failed_rounds_by_reason_but_not_a_pause() -> None:
    metrics = Metrics()
    metrics.observed(KEY, failed(Reason.TIMEOUT), status(), 30.0)
    metrics.observed(KEY, failed(Reason.PAUSED), status(), None)
    metrics.failed(Reason.KUBE_UNAVAILABLE)
    assert series(metrics, "proxmox_operator_errors_total") == {
        (("reason", "Timeout"),): 1.0,
        (("reason", "KubeUnavailable"),): 1.0,
    }
    # A paused round probes nothing: the histogram counts the probe that ran only.
    assert series(metrics, "proxmox_operator_probe_duration_seconds_count") == {(): 1.0}


def test_requests_are_counted_by_host_and_status_class_with_a_bounded_host_set() -> None:
    metrics = Metrics()
    hooks = metrics.hooks
    hooks.request("pve1.example", 200)
    hooks.request("pve1.example", 401)
    hooks.request("pve1.example", None)
    hooks.request("Bad Host/with?query", 500)
    for i in range(MAX_HOSTS + 5):
        hooks.request(f"10.0.{i // 256}.{i % 256}", 200)
    requests = series(metrics, "proxmox_operator_pve_requests_total")
    assert requests[(("code", "2xx"), ("host", "pve1.example"))] == 1.0
    assert requests[(("code", "4xx"), ("host", "pve1.example"))] == 1.0
    assert requests[(("code", "error"), ("host", "pve1.example"))] == 1.0
    hosts = {dict(labels)["host"] for labels in requests}
    assert len(hosts) == MAX_HOSTS + 1  # every distinct host up to the cap, then "other"
    assert "other" in hosts
    assert requests[(("code", "5xx"), ("host", "other"))] == 1.0


def test_code_classes() -> None:
    assert [code_class(s) for s in (200, 302, 404, 501, None, 0, 999)] == [
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "error",
        "error",
        "error",
    ]


def test_build_info_names_the_operator_and_python() -> None:
    (labels,) = series(Metrics(), "proxmox_operator_build_info")
    assert {k for k, _ in labels} == {"version", "python_version"}


def test_addresses() -> None:
    assert parse_address("0.0.0.0:9090") == ("0.0.0.0", 9090)
    assert parse_address("[::1]:9090") == ("::1", 9090)
    assert parse_address(":9090") == ("0.0.0.0", 9090)
    for bad in ("9090", "host:", "host:http", "host:70000"):
        try:
            parse_address(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_the_endpoint_serves_the_registry_on_loopback() -> None:
    metrics = Metrics()
    metrics.observed(KEY, ok(), status(), 0.1)
    text = served(metrics)
    assert 'proxmox_operator_cluster_ready{name="lab",namespace="team-a",reason="Registered"} 1.0' in text
    assert "process_cpu_seconds_total" in text


def test_the_cli_serves_no_metrics_unless_asked_and_refuses_a_bad_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parse_args([]).metrics_address is None
    assert cli.parse_args(["--metrics-address", "[::]:9090"]).metrics_address == "[::]:9090"
    with pytest.raises(SystemExit) as exc_info:
        cli.parse_args(["--metrics-address", "9090"])
    assert exc_info.value.code == 2
    assert "--metrics-address: not HOST:PORT: '9090'" in capsys.readouterr().err


def test_the_cli_exits_at_once_when_the_metrics_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.kopf, "configure", lambda **_: None)
    monkeypatch.setattr(cli.kopf, "operator", lambda **_: pytest.fail("the operator must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli.main(["--metrics-address", f"127.0.0.1:{taken.getsockname()[1]}"]) == 2
