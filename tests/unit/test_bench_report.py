"""The comparison's table (bench/report.py) and the neighbours whose CPU it reports (bench/compare.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench import compare, report


def _operator(cpu: float, others: dict[str, float] | None) -> dict[str, Any]:
    registration: dict[str, Any] = {"cpu_seconds": cpu, "api_requests_per_object": 2.0}
    if others is not None:
        registration["others_cpu_seconds"] = others
    steady = {"cpu_share": 0.01, "api_writes_per_second": 0.0}
    return {
        "ready_seconds": 10.0,
        "delete_seconds": 5.0,
        "rss_idle_kib": 1000,
        "rss_ready_kib": 2000,
        "rss_peak_kib": 3000,
        "registration": registration,
        "deletion": {"api_requests_per_object": 1.0},
        "steady": steady,
    }


def _results(ours_others: dict[str, float] | None) -> dict[str, Any]:
    bare_others = None if ours_others is None else {"kube-apiserver": 6.0, "etcd": 1.3}
    return {
        "n": 1000,
        "window_seconds": 60.0,
        "bare_kopf": _operator(3.4, bare_others),
        "bare_kopf_finalizer": _operator(4.0, bare_others),
        "proxmox_operator": _operator(7.0, ours_others),
    }


def _row(rows: list[report.Row], start: str) -> report.Row:
    return next(r for r in rows if r.metric.strip().startswith(start))


def test_the_table_gives_the_api_servers_etcds_and_simulators_cpu_per_registration() -> None:
    rows = report.rows(_results({"kube-apiserver": 14.3, "etcd": 2.4, "pve-simulator": 3.2}))
    apiserver = _row(rows, "kube-apiserver CPU per registration")
    assert (apiserver.bare, apiserver.ours) == (6.0, 14.3)  # seconds over 1000 registrations -> ms each
    assert _row(rows, "etcd CPU").ours == 2.4
    simulator = _row(rows, "PVE simulator CPU")
    assert (simulator.bare, simulator.ours) == (None, 3.2)
    assert simulator.goal is None  # reported, not a goal
    assert "kube-apiserver CPU per registration" in report.table(rows)


def test_results_written_before_the_neighbours_were_measured_still_make_a_table() -> None:
    rows = report.rows(_results(None))
    assert _row(rows, "kube-apiserver CPU").ours is None
    assert "kube-apiserver CPU" in report.table(rows)


def test_neighbours_are_found_by_the_control_planes_pid_files_beside_the_kubeconfig(tmp_path: Path) -> None:
    class _Kube:
        kubeconfig = tmp_path / "kubeconfig"

    (tmp_path / "kube-apiserver.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "etcd.pid").write_text("")  # being written: skipped, not a crash
    pids = compare.neighbours(_Kube(), None)  # type: ignore[arg-type]
    assert pids == {"kube-apiserver": os.getpid()}
    measured = compare._cpu_of({**pids, "gone": 2**22 + 1})
    assert measured["kube-apiserver"] >= 0.0
    assert "gone" not in measured
