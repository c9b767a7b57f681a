"""The chart's metrics: the flag, port and Service it renders by default, the ServiceMonitor and PrometheusRule it
renders on request, and the alerts themselves, checked and unit-tested with promtool against the names the
operator really exposes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmox_operator.api.v1alpha1 import NodesStatus, ProxmoxClusterStatus, Reason
from proxmox_operator.controller.outcome import Outcome
from proxmox_operator.controller.ports import Key
from proxmox_operator.metrics import Metrics
from tests.deploy.conftest import Chart, find
from tests.deploy.test_chart import container, deployment, operator_args
from tests.support.tools import cached_tool

pytestmark = pytest.mark.integration

MONITORING = ("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")


@pytest.fixture(scope="session")
def promtool() -> str:
    return cached_tool("promtool")


def exposed_names() -> set[str]:
    """Every metric name the operator exposes, with each per-cluster family present (one cluster observed)."""
    metrics = Metrics()
    metrics.registered(Key("ns", "lab"))
    status = ProxmoxClusterStatus(quorate=True, nodes=NodesStatus(total=1, online=1, summary="1/1", items=[]))
    metrics.observed(Key("ns", "lab"), Outcome(ready=False, reason=Reason.TIMEOUT, message=""), status, 0.1)
    metrics.hooks.request("pve1", 200)
    metrics.hooks.failover("pve1")
    metrics.hooks.login(True)
    metrics.status_written()
    metrics.event_posted("Normal", "Registered")
    from prometheus_client import generate_latest  # noqa: PLC0415

    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def rules_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = find(objects, "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def test_metrics_are_on_by_default_with_a_port_a_flag_and_a_service(chart: Chart) -> None:
    objects = chart.objects()
    assert operator_args(objects).metrics_address == "0.0.0.0:9090"
    (port,) = [p for p in container(objects)["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == 9090
    (service,) = find(objects, "Service")
    assert service["metadata"]["name"] == "proxmox-operator-metrics"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not find(objects, "ServiceMonitor") and not find(objects, "PrometheusRule")


def test_metrics_disabled_render_no_flag_port_or_service(chart: Chart) -> None:
    objects = chart.objects("metrics.enabled=false")
    assert operator_args(objects).metrics_address is None
    assert [p["name"] for p in container(objects)["ports"]] == ["health"]
    assert not find(objects, "Service")
    result = chart.template("metrics.enabled=false", "metrics.serviceMonitor.enabled=true", check=False)
    assert result.returncode != 0 and "needs metrics.enabled" in result.stderr


def test_the_metrics_port_moves_the_flag_container_port_and_service_together(chart: Chart) -> None:
    objects = chart.objects("metrics.port=9191")
    assert operator_args(objects).metrics_address == "0.0.0.0:9191"
    (service,) = find(objects, "Service")
    assert service["spec"]["ports"][0]["port"] == 9191
    assert [p["containerPort"] for p in container(objects)["ports"] if p["name"] == "metrics"] == [9191]
    for bad, message in (("metrics.port=8080", "must differ"), ("metrics.port=70000", "port number")):
        result = chart.template(bad, check=False)
        assert result.returncode != 0 and message in result.stderr, bad


def test_the_service_monitor_scrapes_the_metrics_service_and_keeps_the_clusters_namespace(chart: Chart) -> None:
    objects = chart.objects(*MONITORING, "metrics.serviceMonitor.labels.release=kube-prometheus", namespace="ops")
    (monitor,) = find(objects, "ServiceMonitor")
    (service,) = find(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")


def test_the_alert_rules_pass_promtool_and_use_only_exposed_metrics(
    chart: Chart, promtool: str, tmp_path: Path
) -> None:
    rules = rules_of(chart.objects(*MONITORING))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for r in rules["groups"][0]["rules"]}
    assert {"ProxmoxClusterNotReady", "ProxmoxClusterQuorumLost", "ProxmoxClusterNodeOffline"} <= alerts
    assert "ProxmoxOperatorNotProbing" in alerts
    used = {name for r in rules["groups"][0]["rules"] for name in re.findall(r"proxmox_operator_\w+", r["expr"])}
    assert used and used <= exposed_names()


def test_the_alerts_fire_when_they_should(chart: Chart, promtool: str, tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on the series the operator exposes in that situation (and a
    paused cluster or a short blip fires nothing)."""
    objects = chart.objects(*MONITORING, "metrics.prometheusRule.notReadyFor=10m", namespace="ops")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_of(objects)), encoding="utf-8")
    lab = 'namespace="team-a",name="lab"'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'proxmox_operator_cluster_ready{{{lab},reason="Unreachable"}}', "values": "0x20"},
                    {
                        "series": 'proxmox_operator_cluster_ready{namespace="team-b",name="held",reason="Paused"}',
                        "values": "0x20",
                    },
                    {"series": f"proxmox_operator_cluster_quorate{{{lab}}}", "values": "1 1 0x10"},
                    {"series": f"proxmox_operator_cluster_nodes{{{lab}}}", "values": "3x20"},
                    {"series": f"proxmox_operator_cluster_nodes_online{{{lab}}}", "values": "3 2x15"},
                    {"series": "proxmox_operator_probe_duration_seconds_count", "values": "0x40"},
                    {
                        "series": 'up{job="proxmox-operator-metrics",namespace="ops"}',
                        "values": "1x40",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "ProxmoxClusterNotReady", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "ProxmoxClusterNotReady",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "team-a",
                                    "name": "lab",
                                    "reason": "Unreachable",
                                },
                                "exp_annotations": {
                                    "summary": "ProxmoxCluster team-a/lab is not Ready (Unreachable)",
                                    "description": "kubectl describe proxmoxcluster -n team-a lab: the Ready "
                                    "condition's message says what to do.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "1m", "alertname": "ProxmoxClusterQuorumLost", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "ProxmoxClusterQuorumLost",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "namespace": "team-a", "name": "lab"},
                                "exp_annotations": {
                                    "summary": "The Proxmox VE cluster of team-a/lab has lost quorum",
                                    "description": "Fewer than half of the cluster's votes are online: /etc/pve is "
                                    "read-only and no guest can be started or changed.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "4m", "alertname": "ProxmoxClusterNodeOffline", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "ProxmoxClusterNodeOffline",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "namespace": "team-a", "name": "lab"},
                                "exp_annotations": {
                                    "summary": "2 node(s) of team-a/lab online, fewer than its nodes",
                                    "description": "status.nodes of ProxmoxCluster team-a/lab lists the offline "
                                    "node(s).",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "ProxmoxOperatorNotProbing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "proxmox-operator is not probing its clusters",
                                    "description": "No probe finished in 15 minutes although clusters are "
                                    "registered: their status is going stale. Check the operator's log.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "20m", "alertname": "ProxmoxOperatorDown", "exp_alerts": []},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'proxmox_operator_cluster_ready{{{lab},reason="Registered"}}', "values": "1x30"},
                    {"series": "proxmox_operator_probe_duration_seconds_count", "values": "0+1x30"},
                    {"series": 'up{job="proxmox-operator-metrics",namespace="ops"}', "values": "1x3 0x20"},
                ],
                "alert_rule_test": [
                    {"eval_time": "25m", "alertname": "ProxmoxOperatorNotProbing", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "ProxmoxClusterNotReady", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "ProxmoxOperatorDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "proxmox-operator's metrics cannot be scraped",
                                    "description": "No target of the Service ops/proxmox-operator-metrics is up: "
                                    "the operator is down or its metrics are off.",
                                },
                            }
                        ],
                    },
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
