"""``python -m bench`` (``make bench``): proxmox-operator against bare kopf in the same run, then the client-level
benchmarks.

``--objects N`` (``make bench N=...``, default 1000 there) runs the operator comparison: it starts the local
control plane (``hack/cluster.sh up``, honouring PXO_CLUSTER_DIR, PXO_APISERVER_PORT, ... ; stopped again at the
end if this run started it), runs a bare kopf operator and then proxmox-operator, one after the other, each with N
objects created by 8 threads in parallel, a steady-state window and a deletion of all (see :mod:`bench.compare`),
prints one table with both columns, the ratios and the goals, and writes ``bench/results/bench-<N>.json`` and
``bench-<N>.png``. Without ``--objects`` only the client-level benchmarks run (:mod:`bench.client`).

``--shards K`` runs proxmox-operator once more, as K label-selector shards (``--selector shard=s<j>``, the objects
labelled round-robin), and reports its time to all Ready and CPU per object summed over the shards next to the
single process's (``results["proxmox_operator_shards"]`` in the JSON).
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from bench import client, compare, report
from bench.kube import ROOT, BenchError, ControlPlane, Kube
from bench.procs import Simulator


def default_window(n: int) -> float:
    """300 s from 500 objects on; below, 65 s: one probe interval (60 s, +-10% jitter), so every cluster is
    probed about once in the window."""
    return 300.0 if n >= 500 else 65.0


def _git() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or "unknown"


def operators(n: int, window: float, shards: int = 0) -> dict[str, Any]:
    """Bare kopf (and again with a finalizer, for deletion), then proxmox-operator; cleans up after itself."""
    results: dict[str, Any] = {
        "n": n,
        "window_seconds": window,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "note": "a shared machine: other users' tests ran meanwhile",
        },
    }
    plane = ControlPlane()
    kube = Kube(plane.up())
    print(f"control plane: {kube.server} (kubeconfig {kube.kubeconfig})", flush=True)
    namespaces: list[str] = []
    sim: Simulator | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="pxo-bench-") as tmp:
            workdir = Path(tmp)
            try:
                ns = compare.namespace(kube, "pxo-bench-kopf-")
                namespaces.append(ns)
                target = compare.bare_kopf(kube, ns, workdir, finalizer=False)
                results["bare_kopf"] = compare.run(kube, target, n, window)
                target = compare.bare_kopf(kube, ns, workdir, finalizer=True)
                results["bare_kopf_finalizer"] = compare.run(kube, target, n, 0.0)
                sim = Simulator(workdir, n).start()
                ns = compare.namespace(kube, "pxo-bench-")
                namespaces.append(ns)
                target = compare.proxmox_operator(kube, ns, workdir, sim, n)
                results["proxmox_operator"] = compare.run(kube, target, n, window, sim)
                if shards:
                    ns = compare.namespace(kube, "pxo-bench-shards-")
                    namespaces.append(ns)
                    target = compare.proxmox_operator(kube, ns, workdir, sim, n, shards)
                    results["proxmox_operator_shards"] = {"shards": shards, **compare.run(kube, target, n, window, sim)}
            finally:
                if sim is not None:
                    sim.stop()
                compare.cleanup(kube, namespaces)
    finally:
        plane.down()
    results["machine"]["loadavg_end"] = os.getloadavg()
    return results


def shards_summary(results: dict[str, Any]) -> str:
    """The sharded run next to the single process: time to all Ready, CPU per registration and RSS, summed."""
    one, many = results["proxmox_operator"], results["proxmox_operator_shards"]
    n, k = results["n"], many["shards"]

    def line(label: str, r: dict[str, Any]) -> str:
        cpu = r["registration"]["cpu_seconds"] / n * 1000
        rss = r["rss_ready_kib"] / 1024
        ready = r["ready_seconds"]
        return f"  {label:<10} all Ready {ready:6.1f} s   CPU {cpu:6.1f} ms/object   RSS when Ready {rss:6.0f} MiB"

    return "\n".join(
        [
            f"\nproxmox-operator as {k} label-selector shards (CPU and RSS summed over the shards), same run:\n",
            line("1 process", one),
            line(f"{k} shards", many),
        ]
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so every finally runs: processes, namespaces, control plane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, metavar="N", help="run the operator comparison with N objects")
    parser.add_argument(
        "--window", type=float, metavar="SECONDS", help="steady-state window (default: 300 s, 65 s below 500 objects)"
    )
    parser.add_argument(
        "--shards", type=int, default=0, metavar="K", help="also run proxmox-operator as K label-selector shards"
    )
    parser.add_argument("--clusters", type=int, default=1000, help="registered clusters for the memory benchmark")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for the requests benchmark")
    parser.add_argument(
        "--child", nargs=6, metavar=("MEASURE", "VARIANT", "N", "URL", "CA", "TOKEN"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.shards and args.objects is None:
        parser.error("--shards needs --objects")
    if args.child:
        measure, variant, n, url, ca, token = args.child
        client.child(argparse.Namespace(measure=measure, variant=variant, n=int(n), url=url, ca=ca, token=token))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    compared = None
    if args.objects is not None:
        if args.objects < 1:
            parser.error("--objects must be at least 1")
        if args.shards < 0 or args.shards == 1:
            parser.error("--shards must be 2 or more (or 0: no sharded run)")
        window = args.window if args.window is not None else default_window(args.objects)
        try:
            results = operators(args.objects, window, args.shards)
        except BenchError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1
        compared = report.rows(results)
    client_rows = client.run(args.clusters, args.requests)
    if compared is not None:
        results["client"] = [{"benchmark": r[0], "baseline": r[1], "ours": r[2], "ratio": r[3]} for r in client_rows]
        json_path, png_path = report.write(results, compared)
        print(f"\nproxmox-operator against bare kopf, {results['n']} objects, same run ({results['date']}):\n")
        print(report.table(compared))
        if "proxmox_operator_shards" in results:
            print(shards_summary(results))
        print(f"\nwritten: {json_path.relative_to(ROOT)}, {png_path.relative_to(ROOT)}\n")
    client.print_rows(client_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
