"""Processes the benchmark runs and measures: an operator (CPU from /proc/<pid>/stat, memory from
/proc/<pid>/status) and the PVE simulator with virtual clusters, in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.kube import ROOT, BenchError, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN_ID = "root@pam!bench"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak resident set) in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM (SIGKILL after 20 s)."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path = name, argv, log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        return self

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.name} exited (code {code}); the end of its log:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def cpu(self) -> float:
        self.check_alive()
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        self.check_alive()
        return memory_kib(self.pid)

    def wait_idle(self, timeout: float = 90.0, quiet: float = 0.01) -> None:
        """Wait until start-up is over: at least 3 s old and under ``quiet`` s of CPU in the last second."""
        started = time.monotonic()
        last = [self.cpu()]

        def idle() -> bool:
            now = self.cpu()
            calm = now - last[0] < quiet and time.monotonic() - started > 3
            last[0] = now
            return calm

        wait_until(idle, timeout, f"{self.name} to finish starting (idle CPU)", interval=1.0)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class ProcGroup(Proc):
    """Several processes measured as one (``--shards``): CPU and memory summed, started and stopped together."""

    def __init__(self, name: str, members: list[Proc]) -> None:
        super().__init__(name, [], members[0].log_path)
        self.members = members

    def start(self) -> ProcGroup:
        for member in self.members:
            member.start()
        self.proc = self.members[0].proc
        return self

    def check_alive(self) -> None:
        for member in self.members:
            member.check_alive()

    def tail(self, chars: int = 3000) -> str:
        share = max(chars // len(self.members), 500)
        return "\n".join(f"--- {m.name} ({m.log_path.name})\n{m.tail(share)}" for m in self.members)

    def cpu(self) -> float:
        return sum(member.cpu() for member in self.members)

    def memory(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for member in self.members:
            for key, kib in member.memory().items():
                totals[key] = totals.get(key, 0) + kib
        return totals

    def wait_idle(self, timeout: float = 90.0, quiet: float = 0.01) -> None:
        for member in self.members:
            member.wait_idle(timeout, quiet)

    def stop(self) -> int | None:
        codes = [member.stop() for member in self.members]
        return next((code for code in codes if code), codes[0])


class Simulator:
    """``pve-simulator`` with one node and ``count`` virtual clusters ``bench-<k>`` under ``/vc/<k>/``, a token
    with Sys.Audit (privilege-separated), and the control listener for its counters."""

    def __init__(self, workdir: Path, count: int) -> None:
        self.token_secret = str(uuid.uuid4())
        self.ready_file = workdir / "pve-ready.json"
        config = {
            "cluster_name": "bench",
            "nodes": [{"name": "pve1"}],
            "users": [{"userid": "root@pam", "password": str(uuid.uuid4())}],
            "tokens": [{"tokenid": TOKEN_ID, "secret": self.token_secret, "privsep": True, "sys_audit": True}],
            "virtual_clusters": max(count, 1),
            "control_port": 0,
            "cert_dir": str(workdir / "pve-certs"),
        }
        config_file = workdir / "pve.yaml"
        config_file.write_text(yaml.safe_dump(config))
        config_file.chmod(0o600)
        argv = [str(ROOT / ".venv" / "bin" / "pve-simulator"), "--config", str(config_file)]
        argv += ["--ready-file", str(self.ready_file), "--log-level", "WARNING"]
        self.proc = Proc("pve-simulator", argv, workdir / "pve-simulator.log")
        self.info: dict[str, Any] = {}

    def start(self) -> Simulator:
        self.proc.start()

        def ready() -> bool:
            self.proc.check_alive()
            return self.ready_file.exists()

        wait_until(ready, 120, "the PVE simulator's ready file")
        self.info = json.loads(self.ready_file.read_text())
        return self

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def ca_pem(self) -> str:
        return Path(self.info["ca_path"]).read_text()

    def counters(self) -> dict[str, Any]:
        response = httpx.get(f"{self.info['control_url']}/state", timeout=30, trust_env=False)
        response.raise_for_status()
        return dict(response.json()["counters"])

    def arrivals(self, since: float) -> dict[str, list[float]]:
        """Virtual cluster -> arrival times (``time.monotonic()``, the same clock as ours) from ``since`` on."""
        url = f"{self.info['control_url']}/counters/virtual-clusters"
        response = httpx.get(url, params={"since": since}, timeout=30, trust_env=False)
        response.raise_for_status()
        return dict(response.json()["arrivals"])

    def stop(self) -> None:
        self.proc.stop()
