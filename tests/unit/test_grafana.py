"""deploy/grafana/proxmox-operator.json loads as a Grafana dashboard and asks only for series the operator
exposes: the names come from a scrape of the real /metrics endpoint (loopback, a free port)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from proxmox_operator.api.v1alpha1 import NodesStatus, ProxmoxClusterStatus, Reason, VersionInfo
from proxmox_operator.controller.outcome import Facts, Outcome
from proxmox_operator.controller.ports import Key
from proxmox_operator.metrics import Metrics
from tests.unit.test_metrics import served

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "proxmox-operator.json"


def scraped_names() -> set[str]:
    """Every sample name the operator serves once each family has a sample."""
    metrics = Metrics()
    key = Key("team-a", "lab")
    nodes = NodesStatus(total=3, online=3, summary="3/3", items=[])
    facts = Facts(version=VersionInfo(version="8.4.1"), nodes=nodes, cluster_name="lab", quorate=True)
    status = ProxmoxClusterStatus(quorate=True, nodes=nodes, version=VersionInfo(version="8.4.1"))
    metrics.registered(key)
    metrics.observed(key, Outcome(ready=False, reason=Reason.TIMEOUT, message="", facts=facts), status, 0.2)
    metrics.hooks.request("pve1", 200)
    metrics.hooks.failover("pve1")
    metrics.hooks.login(True)
    metrics.status_written()
    metrics.event_posted("Warning", Reason.TIMEOUT)
    text = served(metrics)
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE)}


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_the_dashboard_is_valid_json_with_unique_panels_on_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "proxmox-operator" and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_every_query_uses_only_metrics_the_operator_exposes() -> None:
    exposed = scraped_names()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {name for expr in queries(dashboard) for name in re.findall(r"\bproxmox_operator_\w+", expr)}
    assert used, "the dashboard queries the operator's metrics"
    assert used <= exposed, sorted(used - exposed)
    # Each per-cluster family has a panel.
    per_cluster = {n for n in exposed if n.startswith("proxmox_operator_cluster_")}
    assert per_cluster <= used, sorted(per_cluster - used)
