"""Client-level benchmarks, each variant in a child process of the benchmark (same interpreter, same machine,
same moment), so the numbers compare like with like; absolute values differ between machines, the ratios are
what to read.

* memory: resident memory per registered cluster, for N clusters with their clients built and one request made
  each. Baseline: what most integrations do, one ``httpx.AsyncClient(verify=True)`` per cluster (each builds its
  own SSLContext from certifi). Ours: :class:`ProxmoxClient` with SSL contexts shared per trust configuration.
* requests: wall time of M sequential GETs to the PVE simulator over HTTPS. Baseline: a new connection (TCP +
  TLS handshake) per request. Ours: the pooled client with keep-alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from proxmox_operator.proxmox import Limits, ProxmoxClient, TokenCredentials, TrustConfig
from proxmox_operator.proxmox.tls import ssl_context
from pve_simulator import NodeConfig, SimulatorConfig, SimulatorThread, TokenConfig, UserConfig


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _memory(variant: str, clusters: int, url: str, ca_pem: str, token: str) -> dict[str, Any]:
    creds = TokenCredentials("root@pam!bench", token)
    before = _rss_kib()
    clients: list[Any] = []
    for _ in range(clusters):
        if variant == "baseline":
            ctx = ssl.create_default_context()  # what verify=True builds: system/certifi CAs, per client
            ctx.load_verify_locations(cadata=ca_pem)
            client = httpx.AsyncClient(base_url=f"{url}/api2/json", verify=ctx)
            await client.get("/version", headers={"Authorization": creds.authorization_header()})
        else:
            client = ProxmoxClient(url, credentials=creds, trust=TrustConfig(ca_bundle=ca_pem))
            await client.version()
        clients.append(client)
    after = _rss_kib()
    for client in clients:
        await client.aclose()
    return {"kib_per_cluster": (after - before) / clusters}


async def _requests(variant: str, count: int, url: str, ca_pem: str, token: str) -> dict[str, Any]:
    creds = TokenCredentials("root@pam!bench", token)
    trust = TrustConfig(ca_bundle=ca_pem)
    started = time.perf_counter()
    if variant == "baseline":
        headers = {"Authorization": creds.authorization_header(), "Connection": "close"}
        for _ in range(count):
            async with httpx.AsyncClient(base_url=f"{url}/api2/json", verify=ssl_context(trust)) as client:
                (await client.get("/version", headers=headers)).raise_for_status()
    else:
        # The default per-endpoint rate limit (10/s) would be measured instead of pooling: lift it here.
        limits = Limits(max_concurrent=4, requests_per_second=100_000)
        async with ProxmoxClient(url, credentials=creds, trust=trust, limits=limits) as client:
            for _ in range(count):
                await client.version()
    return {"seconds": time.perf_counter() - started}


def child(args: argparse.Namespace) -> None:
    fn = {"memory": _memory, "requests": _requests}[args.measure]
    result = asyncio.run(fn(args.variant, args.n, args.url, Path(args.ca).read_text(), args.token))
    print(json.dumps(result))


def _run_child(measure: str, variant: str, n: int, url: str, ca: Path, token: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--child", measure, variant, str(n), url, str(ca), token],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(clusters: int, requests: int) -> list[tuple[str, str, str, float]]:
    """(benchmark, baseline, ours, ours/baseline) rows."""
    token = str(uuid.uuid4())
    with tempfile.TemporaryDirectory() as tmp:
        config = SimulatorConfig(
            cluster_name="bench",
            nodes=(NodeConfig(name="pve1"),),
            users=(UserConfig(userid="root@pam", password=str(uuid.uuid4())),),
            tokens=(TokenConfig(tokenid="root@pam!bench", secret=token, sys_audit=True),),
            cert_dir=Path(tmp),
        )
        with SimulatorThread(config) as sim:
            ca = sim.ca_path
            print(f"PVE simulator at {sim.url}; every variant runs in a child process of this one\n")
            rows = []
            base = _run_child("memory", "baseline", clusters, sim.url, ca, token)
            ours = _run_child("memory", "ours", clusters, sim.url, ca, token)
            rows.append(
                (
                    f"memory per registered cluster ({clusters} clusters)",
                    f"{base['kib_per_cluster']:.0f} KiB",
                    f"{ours['kib_per_cluster']:.0f} KiB",
                    ours["kib_per_cluster"] / base["kib_per_cluster"],
                )
            )
            base = _run_child("requests", "baseline", requests, sim.url, ca, token)
            ours = _run_child("requests", "ours", requests, sim.url, ca, token)
            rows.append(
                (
                    f"{requests} sequential GETs (new connection each vs pooled keep-alive)",
                    f"{base['seconds']:.2f} s",
                    f"{ours['seconds']:.2f} s",
                    ours["seconds"] / base["seconds"],
                )
            )
    return rows


def print_rows(rows: list[tuple[str, str, str, float]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'baseline':>10}  {'ours':>10}  {'ours/baseline':>13}")
    for name, b, o, ratio in rows:
        print(f"{name:<{width}}  {b:>10}  {o:>10}  {ratio:>13.2f}")
