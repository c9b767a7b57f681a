"""The benchmark's side of Kubernetes: the local control plane, an admin client that counts its own requests,
kube-apiserver's request counters from ``/metrics``, parallel creates and deletes, and a watch that records when
objects become done or disappear.

Every wait has a timeout and says what it waited for (:class:`BenchError`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
THREADS = 8
#: (verb, group, resource, subresource), as kube-apiserver labels apiserver_request_total.
Key = tuple[str, str, str, str]
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
_SAMPLE = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class BenchError(RuntimeError):
    """The benchmark itself could not go on (a timeout, a failed request, a process that died)."""


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class ControlPlane:
    """``hack/cluster.sh`` with the caller's environment (PXO_CLUSTER_DIR, PXO_APISERVER_PORT, ... honoured).
    Stopped at the end only if this run started it."""

    def __init__(self) -> None:
        self.script = ROOT / "hack" / "cluster.sh"
        self.started = False
        self.kubeconfig = Path()

    def up(self) -> Path:
        status = subprocess.run(["bash", str(self.script), "status"], capture_output=True, check=False, timeout=60)
        out = subprocess.run(
            ["bash", str(self.script), "up"], stdout=subprocess.PIPE, text=True, check=False, timeout=300
        )
        if out.returncode != 0:
            raise BenchError(f"hack/cluster.sh up failed with exit code {out.returncode} (its message is above)")
        self.started = status.returncode != 0
        lines = [line for line in out.stdout.splitlines() if line.startswith("export KUBECONFIG=")]
        if not lines:
            raise BenchError("hack/cluster.sh up printed no `export KUBECONFIG=` line")
        self.kubeconfig = Path(lines[-1].split("=", 1)[1].strip())
        return self.kubeconfig

    def down(self) -> None:
        if self.started:
            subprocess.run(["bash", str(self.script), "down"], check=False, timeout=120)


class Kube:
    """An admin client of the API server (token and CA from the kubeconfig) that counts every request it makes,
    keyed as the API server's metrics key them, so they can be subtracted from the API server's counts."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = str(cluster["server"])
        self._ssl = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self._headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}
        self.own: Counter[Key] = Counter()
        self._lock = threading.Lock()
        self.http = self.client()

    def client(self, read_timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.server,
            verify=self._ssl,
            headers=self._headers,
            timeout=httpx.Timeout(30.0, read=read_timeout),
            trust_env=False,
        )

    def count(self, key: Key) -> None:
        with self._lock:
            self.own[key] += 1

    def own_snapshot(self) -> Counter[Key]:
        with self._lock:
            return Counter(self.own)

    def request(self, http: httpx.Client, method: str, path: str, key: Key, **kwargs: Any) -> httpx.Response:
        self.count(key)
        return http.request(method, path, **kwargs)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [str(KUBECTL), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if out.returncode != 0:
            raise BenchError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objs))

    def metrics(self) -> Counter[Key]:
        """apiserver_request_total summed over codes, by (verb, group, resource, subresource). Scraping /metrics
        is not itself counted there (a non-resource URL the API server does not instrument)."""
        response = self.http.get("/metrics")
        response.raise_for_status()
        totals: Counter[Key] = Counter()
        for line in response.text.splitlines():
            match = _SAMPLE.match(line)
            if match:
                labels = dict(_LABEL.findall(match.group(1)))
                key = (labels["verb"], labels["group"], labels["resource"], labels["subresource"])
                totals[key] += int(float(match.group(2)))
        return totals

    def snapshot(self) -> Snapshot:
        """(API server counts, own counts) at one moment."""
        return self.metrics(), self.own_snapshot()


Snapshot = tuple[Counter[Key], Counter[Key]]


def operator_requests(before: Snapshot, after: Snapshot, resources: frozenset[str]) -> Counter[Key]:
    """Requests the API server served between two snapshots for ``resources`` (those the operator may use), less
    the benchmark's own. The control plane's own traffic is left out that way: health checks and OpenAPI
    (non-resource URLs), Leases (the API server's heartbeat), the controller-manager's controllers."""
    served = after[0] - before[0]
    served.subtract(after[1] - before[1])
    return Counter({key: n for key, n in served.items() if n > 0 and key[2] in resources})


def no_namespace_terminating(kube: Kube, timeout: float = 120) -> None:
    """The controller-manager's namespace controller lists and deletes every kind of resource in a namespace that
    is being deleted: wait until none is (e.g. left by tests) before measuring, so that it does not show up.
    Only a warning if some still are after ``timeout`` (another user's tests may be deleting theirs)."""

    def quiet() -> bool:
        listed = kube.request(kube.http, "GET", "/api/v1/namespaces", ("LIST", "", "namespaces", ""))
        return not any(ns.get("status", {}).get("phase") == "Terminating" for ns in listed.json()["items"])

    try:
        wait_until(quiet, timeout, "namespaces being deleted to be gone", interval=1.0)
    except BenchError as exc:
        print(f"bench: warning: {exc}; measuring anyway", file=sys.stderr)


def writes(counts: Counter[Key]) -> int:
    return sum(n for key, n in counts.items() if key[0] in WRITE_VERBS)


def describe(counts: Counter[Key]) -> dict[str, int]:
    """``{"PATCH proxmoxclusters/status": 1000, ...}`` for the JSON results."""
    out: Counter[str] = Counter()
    for (verb, _group, resource, sub), n in counts.items():
        out[f"{verb} {resource}{'/' + sub if sub else ''}"] += n
    return dict(sorted(out.items()))


def in_parallel(kube: Kube, jobs: list[tuple[str, str, Key, dict[str, Any] | None]], ok: Iterable[int]) -> None:
    """Run (method, path, key, body) requests with THREADS threads, each with its own connection."""
    accepted = set(ok)

    def worker(chunk: list[tuple[str, str, Key, dict[str, Any] | None]]) -> None:
        with kube.client() as http:
            for method, path, key, body in chunk:
                response = kube.request(http, method, path, key, json=body)
                if response.status_code not in accepted:
                    raise BenchError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, jobs[i::THREADS]) for i in range(THREADS)]:
            future.result()


class Watcher(threading.Thread):
    """LIST then WATCH one collection; keeps which objects exist and which are done, and a history of
    (time, done, present) after every change, so the moment a count was reached is known to the event."""

    def __init__(self, kube: Kube, path: str, group: str, resource: str, done: Callable[[dict[str, Any]], bool]):
        super().__init__(name=f"watch-{resource}", daemon=True)
        self.kube, self.path, self.done_fn = kube, path, done
        self.keys: tuple[Key, Key] = (("LIST", group, resource, ""), ("WATCH", group, resource, ""))
        self.state: dict[str, bool] = {}
        self.done = 0
        self.listed = False
        self.history: list[tuple[float, int, int]] = []
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._cond = threading.Condition()

    def counts(self) -> tuple[int, int]:
        with self._cond:
            return self.done, len(self.state)

    def _set(self, name: str, done: bool | None) -> None:
        """Record a change (``None``: deleted) with its time."""
        with self._cond:
            self.done -= self.state.pop(name, False)
            if done is not None:
                self.state[name] = done
                self.done += done
            self.history.append((time.monotonic(), self.done, len(self.state)))
            self._cond.notify_all()

    def _list(self, http: httpx.Client) -> str:
        response = self.kube.request(http, "GET", self.path, self.keys[0])
        response.raise_for_status()
        body = response.json()
        listed = {o["metadata"]["name"]: self.done_fn(o) for o in body["items"]}
        for name in set(self.state) - set(listed):
            self._set(name, None)
        for name, done in listed.items():
            self._set(name, done)
        with self._cond:
            self.listed = True
            self._cond.notify_all()
        return str(body["metadata"]["resourceVersion"])

    def run(self) -> None:
        try:
            with self.kube.client(read_timeout=60) as http:
                rv = self._list(http)
                while not self._stopping.is_set():
                    rv = self._watch(http, rv) or self._list(http)
        except BaseException as exc:  # noqa: BLE001 - reported by wait_for
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def _watch(self, http: httpx.Client, rv: str) -> str | None:
        params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "10"}
        self.kube.count(self.keys[1])
        with http.stream("GET", self.path, params=params) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    return None  # 410 Gone: list again
                rv = str(obj["metadata"]["resourceVersion"])
                if event["type"] == "BOOKMARK":
                    continue
                self._set(obj["metadata"]["name"], None if event["type"] == "DELETED" else self.done_fn(obj))
        return rv

    def wait_for(self, check: Callable[[int, int], bool], since: float, timeout: float, what: str) -> float:
        """The time of the first change after ``since`` at which ``check(done, present)`` held."""
        end = time.monotonic() + timeout
        index = 0
        with self._cond:
            while True:
                for at, done, present in self.history[index:]:
                    if at >= since and check(done, present):
                        return at
                index = len(self.history)
                if self.error is not None:
                    raise BenchError(f"the watch of {self.path} failed: {self.error!r}")
                left = end - time.monotonic()
                if left <= 0:
                    raise BenchError(
                        f"timed out after {timeout:.0f} s waiting for {what} ({self.done} done, {len(self.state)} "
                        "present)"
                    )
                self._cond.wait(min(left, 1.0))

    def stop(self) -> None:
        self._stopping.set()
        if self.ident is not None:  # started
            self.join(timeout=20)
