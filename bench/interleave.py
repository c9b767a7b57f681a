"""``python -m bench.interleave``: two or more builds of proxmox-operator, run interleaved on one control plane.

Why: on a shared virtual machine, runs minutes apart differ by up to half in CPU and time (bare kopf's CPU per
registration moved from 3.3 to 6.5 ms within an hour), so one ``make bench`` before a change and one after do not
tell a change from the machine's drift. Interleaving does: every build runs several times, in an order that
spreads the drift over all of them (``a,b,b,a,a,b`` by default for two), against the same control plane and the
same simulator, and the table gives each build's median and range.

Each run is one :func:`bench.compare.run` (create N objects, a steady window, delete all) with only the operator's
executable swapped. The CRD and RBAC come from this checkout, so compare builds that share them. An older build::

    git worktree add /tmp/old <rev> && make -C /tmp/old venv
    .venv/bin/python -m bench.interleave --objects 1000 --window 150 \\
        --build old=/tmp/old/.venv/bin/proxmox-operator --build new=.venv/bin/proxmox-operator

The control plane honours PXO_CLUSTER_DIR, PXO_APISERVER_PORT, ... as ``make bench`` does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import compare
from bench.kube import BenchError, ControlPlane, Kube
from bench.procs import Simulator

#: What each run reports, from :func:`bench.compare.run`'s result, with the table's label and scale.
METRICS: dict[str, str] = {
    "ready_s": "all Ready, s",
    "cpu_ms": "CPU per registration, ms",
    "requests": "API requests per registration",
    "rss_mib": "peak RSS, MiB",
    "delete_s": "delete all, s",
    "steady_pct": "steady CPU, % of a core",
}


def measures(result: dict[str, Any], n: int) -> dict[str, float]:
    """One run's numbers, from :func:`bench.compare.run`'s result."""
    return {
        "ready_s": result["ready_seconds"],
        "cpu_ms": result["registration"]["cpu_seconds"] * 1000 / n,
        "requests": result["registration"]["api_requests_per_object"],
        "rss_mib": result["rss_peak_kib"] / 1024,
        "delete_s": result["delete_seconds"],
        "steady_pct": result["steady"]["cpu_share"] * 100,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Build -> metric -> (median, lowest, highest) over that build's runs, builds in order of first appearance."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for build in dict.fromkeys(run["build"] for run in runs):
        mine = [run["measures"] for run in runs if run["build"] == build]
        out[build] = {key: (statistics.median(v), min(v), max(v)) for key in METRICS if (v := [m[key] for m in mine])}
    return out


def table(summed: dict[str, dict[str, tuple[float, float, float]]]) -> str:
    builds = list(summed)
    lines = [f"{'metric (median, lowest-highest)':<34}" + "".join(f"{b:>26}" for b in builds)]
    for key, label in METRICS.items():
        cells = [f"{m:.3g} ({lo:.3g}-{hi:.3g})" for m, lo, hi in (summed[b][key] for b in builds)]
        lines.append(f"{label:<34}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


def default_order(builds: list[str]) -> list[str]:
    """``a,b,b,a,a,b`` for two builds: each is first and last in turn, so a steady drift favours neither."""
    forward, backward = builds, builds[::-1]
    return [*forward, *backward, *forward]


def run_all(executables: dict[str, str], order: list[str], n: int, window: float) -> list[dict[str, Any]]:
    plane = ControlPlane()
    kube = Kube(plane.up())
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pxo-interleave-") as tmp:
            workdir = Path(tmp)
            sim = Simulator(workdir, n).start()
            try:
                for i, build in enumerate(order):
                    ns = compare.namespace(kube, f"pxo-interleave-{i}-")
                    try:
                        target = compare.proxmox_operator(kube, ns, workdir, sim, n)
                        target.operator.argv[0] = executables[build]
                        result = compare.run(kube, target, n, window, sim)
                    finally:
                        compare.cleanup(kube, [ns])
                    run = {"build": build, "round": i, "measures": measures(result, n)}
                    print(json.dumps(run), flush=True)
                    runs.append(run)
            finally:
                sim.stop()
    finally:
        plane.down()
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interleave", description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000, metavar="N")
    parser.add_argument("--window", type=float, default=150.0, metavar="SECONDS", help="steady window of each run")
    parser.add_argument("--build", action="append", required=True, metavar="NAME=EXECUTABLE")
    parser.add_argument("--order", help="comma-separated build names (default: a,b,b,a,a,b for two)")
    parser.add_argument("--out", type=Path, help="also write every run and the summary as JSON here")
    args = parser.parse_args(argv)
    executables: dict[str, str] = {}
    for spec in args.build:
        name, sep, path = spec.partition("=")
        if not (name and sep and Path(path).is_file()):
            parser.error(f"--build {spec}: want NAME=EXECUTABLE, an existing file")
        executables[name] = str(Path(path).resolve())
    order = args.order.split(",") if args.order else default_order(list(executables))
    if unknown := sorted(set(order) - set(executables)):
        parser.error(f"--order names unknown builds: {', '.join(unknown)}")
    try:
        runs = run_all(executables, order, args.objects, args.window)
    except BenchError as exc:
        print(f"bench.interleave: error: {exc}", file=sys.stderr)
        return 1
    summed = summary(runs)
    print(f"\n{len(runs)} runs, {args.objects} objects each, interleaved {','.join(order)}:\n")
    print(table(summed))
    if args.out:
        args.out.write_text(json.dumps({"order": order, "runs": runs, "summary": summed}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
