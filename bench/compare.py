"""One operator, measured through its phases on the local control plane: start it and wait until it is idle;
create N objects with 8 threads POSTing in parallel until all are done; a steady-state window; delete all with 8
threads until every object is gone (finalizers removed). Used for the bare kopf baseline and for proxmox-operator
alike (:func:`bare_kopf`, :func:`proxmox_operator`)."""

from __future__ import annotations

import itertools
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import bare_kopf as bare
from bench.kube import (
    ROOT,
    BenchError,
    Key,
    Kube,
    Watcher,
    describe,
    in_parallel,
    no_namespace_terminating,
    operator_requests,
    wait_until,
)
from bench.kube import writes as count_writes
from bench.procs import TOKEN_ID, Proc, ProcGroup, Simulator, cpu_seconds

SETTLE = 2.0  # seconds after the last object is done, for writes that trail it (Events)
CREDENTIALS_LABEL = "proxmox-operator.dev/credentials"
PXC = ("proxmox-operator.dev", "v1alpha1", "proxmoxclusters")


@dataclass
class Target:
    """What to run and how to recognise a done object."""

    label: str
    group: str
    version: str
    plural: str
    namespace: str
    body: Callable[[int], dict[str, Any]]
    done: Callable[[dict[str, Any]], bool]
    operator: Proc
    #: What the operator may touch besides its own resource (and its status): the API requests counted.
    uses: tuple[str, ...] = ("events", "namespaces", "customresourcedefinitions")

    @property
    def resources(self) -> frozenset[str]:
        return frozenset({self.plural, *self.uses})

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{self.version}/namespaces/{self.namespace}/{self.plural}"

    def key(self, verb: str) -> Key:
        return (verb, self.group, self.plural, "")


def _timeout(n: int) -> float:
    return max(180.0, n * 0.6)


def neighbours(kube: Kube, sim: Simulator | None) -> dict[str, int]:
    """The processes that share the machine's cores with the operator and do work for it: kube-apiserver and etcd
    (pid files of ``hack/cluster.sh`` beside the kubeconfig), and the PVE simulator. In production the simulator's
    work is done by Proxmox on other machines; here it competes with the API server for the same two cores."""
    pids: dict[str, int] = {}
    for name in ("kube-apiserver", "etcd"):
        pidfile = kube.kubeconfig.parent / f"{name}.pid"
        text = pidfile.read_text().strip() if pidfile.is_file() else ""
        if text.isdigit():
            pids[name] = int(text)
    if sim is not None:
        pids["pve-simulator"] = sim.proc.pid
    return pids


def _cpu_of(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:  # gone: the run fails elsewhere if it matters
            continue
    return out


def _phase(kube: Kube, op: Proc, others: dict[str, int]) -> dict[str, Any]:
    return {
        "at": time.monotonic(),
        "cpu": op.cpu(),
        "mem": op.memory(),
        "api": kube.snapshot(),
        "others": _cpu_of(others),
    }


def _between(target: Target, a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, Any]:
    """CPU and API requests between two phase snapshots. Watch (re)connections are counted apart: they are the
    operator's (one per watched resource every few minutes), not any object's, and the API server counts a WATCH
    when it ends while the benchmark counts its own when they start."""
    requests = operator_requests(a["api"], b["api"], target.resources)
    watches = sum(count for key, count in requests.items() if key[0] == "WATCH")
    total = sum(requests.values()) - watches
    return {
        "seconds": b["at"] - a["at"],
        "cpu_seconds": b["cpu"] - a["cpu"],
        "others_cpu_seconds": {k: round(b["others"][k] - v, 3) for k, v in a["others"].items() if k in b["others"]},
        "api_requests": total,
        "api_watches": watches,
        "api_writes": count_writes(requests),
        "api_requests_per_object": total / n,
        "api_by_verb": describe(requests),
    }


def _curve(watcher: Watcher, since: float, until: float, index: int) -> list[tuple[float, int]]:
    """(seconds since ``since``, count) after each change, at most ~300 points."""
    points = [(at - since, entry[index]) for at, *entry in watcher.history if since <= at <= until + SETTLE]
    step = max(1, len(points) // 300)
    return [(round(t, 3), c) for t, c in points[::step] + points[-1:]]


def _force_cleanup(kube: Kube, target: Target, watcher: Watcher) -> None:
    """After a failure: delete what is left while the operator still runs, then drop finalizers that remain."""
    kube.request(kube.http, "DELETE", target.path, target.key("DELETECOLLECTION"))
    try:
        wait_until(lambda: watcher.counts()[1] == 0, 60, "leftover objects to be deleted")
    except BenchError:
        for name in list(watcher.state):
            kube.request(
                kube.http,
                "PATCH",
                f"{target.path}/{name}",
                target.key("PATCH"),
                json={"metadata": {"finalizers": None}},
                headers={"Content-Type": "application/merge-patch+json"},
            )


def run(kube: Kube, target: Target, n: int, window: float, sim: Simulator | None = None) -> dict[str, Any]:
    """Measure one operator; returns the numbers and curves (see the module docstring)."""
    op = target.operator
    no_namespace_terminating(kube)
    print(f"--- {target.label}: starting the operator", flush=True)
    op.start()
    watcher = Watcher(kube, target.path, target.group, target.plural, target.done)
    others = neighbours(kube, sim)
    try:
        op.wait_idle()
        watcher.start()
        wait_until(lambda: watcher.listed or watcher.error is not None, 60, f"the first list of {target.path}")
        idle = _phase(kube, op, others)
        print(f"    creating {n} objects with 8 threads", flush=True)
        start = time.monotonic()
        in_parallel(kube, [("POST", target.path, target.key("POST"), target.body(i)) for i in range(n)], [201])
        created = time.monotonic()
        ready_at = watcher.wait_for(lambda done, _: done >= n, start, _timeout(n), f"all {n} {target.plural} done")
        time.sleep(SETTLE)
        registered = _phase(kube, op, others)
        print(f"    all done {ready_at - start:.1f} s after the first create; steady window {window:.0f} s", flush=True)
        result: dict[str, Any] = {
            "ready_seconds": ready_at - start,
            "ready_after_last_create_seconds": ready_at - created,
            "create_seconds": created - start,
            "rss_idle_kib": idle["mem"]["VmRSS"],
            "rss_ready_kib": registered["mem"]["VmRSS"],
            "registration": _between(target, idle, registered, n),
            "ready_curve": _curve(watcher, start, ready_at, 0),
        }
        pve_before = sim.counters() if sim else None
        steady_start = _phase(kube, op, others)
        wait_until(lambda: time.monotonic() - steady_start["at"] >= window, window + 30, "the steady window", 1.0)
        steady_end = _phase(kube, op, others)
        steady = _between(target, steady_start, steady_end, n)
        steady["cpu_share"] = steady["cpu_seconds"] / steady["seconds"]
        steady["api_writes_per_second"] = steady["api_writes"] / steady["seconds"]
        if sim is not None and pve_before is not None:
            arrivals = {
                k: sorted(t for t in times if t <= steady_end["at"])
                for k, times in sim.arrivals(steady_start["at"]).items()
            }
            steady["pve"] = _pve(pve_before, sim.counters(), arrivals, n)
        result["steady"] = steady
        print(f"    deleting {n} objects with 8 threads", flush=True)
        before_delete = _phase(kube, op, others)
        names = sorted(watcher.state)
        in_parallel(
            kube, [("DELETE", f"{target.path}/{x}", target.key("DELETE"), None) for x in names], [200, 202, 404]
        )
        gone_at = watcher.wait_for(lambda _, present: present == 0, before_delete["at"], _timeout(n), "all deleted")
        time.sleep(SETTLE)
        deleted = _phase(kube, op, others)
        result["delete_seconds"] = gone_at - before_delete["at"]
        result["deletion"] = _between(target, before_delete, deleted, n)
        result["delete_curve"] = _curve(watcher, before_delete["at"], gone_at, 1)
        result["rss_peak_kib"] = deleted["mem"]["VmHWM"]
        print(f"    all gone {result['delete_seconds']:.1f} s after the first delete", flush=True)
    except BaseException:
        print(f"{target.label} failed; the end of its log ({op.log_path.name}):\n{op.tail()}", file=sys.stderr)
        if op.proc is not None and op.proc.poll() is None and watcher.is_alive():
            _force_cleanup(kube, target, watcher)
        raise
    finally:
        watcher.stop()
        op.stop()
    return result


#: Requests to one cluster further apart than this belong to different probes (probes are >= 54 s apart).
PROBE_GAP = 5.0


def _pve(before: dict[str, Any], after: dict[str, Any], arrivals: dict[str, list[float]], n: int) -> dict[str, Any]:
    """Simulator counters over the window. A probe is a burst of requests to one (virtual) cluster: what a probe
    asks for is the operator's business, so probes are counted by time, from the simulator's arrival times."""
    paths: Counter[str] = Counter(after["by_path"])
    paths.subtract(before["by_path"])
    requests = sum(len(times) for times in arrivals.values())
    probes = sum(1 + sum(b - a > PROBE_GAP for a, b in itertools.pairwise(t)) for t in arrivals.values() if t)
    return {
        "requests": requests,
        "probes": probes,
        "requests_per_probe": requests / probes if probes else None,
        "probes_per_object": probes / n,
        "by_path": {k: v for k, v in sorted(paths.items()) if v},
    }


def _token(kube: Kube, account: str, namespace: str, workdir: Path, name: str) -> dict[str, str]:
    """A kubeconfig for a ServiceAccount (``KUBECONFIG`` for the operator process)."""
    token = kube.kubectl("create", "token", account, "-n", namespace, "--duration=6h").strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path = workdir / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return {"KUBECONFIG": str(path)}


def _wait_served(kube: Kube, path: str, crd: str) -> None:
    kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    key = ("LIST", path.split("/")[2], path.rsplit("/", 1)[1], "")
    wait_until(lambda: kube.request(kube.http, "GET", path, key).status_code == 200, 60, f"{path} to be served")


def namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}{secrets.token_hex(3)}"
    kube.kubectl("create", "namespace", name)
    return name


def bare_kopf(kube: Kube, ns: str, workdir: Path, *, finalizer: bool) -> Target:
    kube.apply(*bare.manifests(ns))
    label = "bare kopf" + (" (with a finalizer)" if finalizer else "")
    path = f"/apis/{bare.GROUP}/{bare.VERSION}/namespaces/{ns}/{bare.PLURAL}"
    _wait_served(kube, path, bare.CRD_NAME)
    argv = [sys.executable, "-m", "bench.bare_kopf", "--namespace", ns, *(["--finalizer"] if finalizer else [])]
    env = _token(kube, bare.ACCOUNT, ns, workdir, "bare-kopf")
    log = workdir / f"bare-kopf{'-finalizer' if finalizer else ''}.log"
    return Target(
        label,
        bare.GROUP,
        bare.VERSION,
        bare.PLURAL,
        ns,
        lambda i: bare.body(f"obj-{i}", ns),
        bare.done,
        Proc(label, argv, log, env),
    )


def _ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def proxmox_operator(kube: Kube, ns: str, workdir: Path, sim: Simulator, n: int, shards: int = 0) -> Target:
    """N labelled Secrets (one per cluster, each with the simulator's token) are created before the operator
    starts; ProxmoxClusters point at virtual cluster k with the simulator's CA pinned and discovery off.

    With ``shards`` K >= 1, object k is labelled ``shard=s<k mod K>`` and K operators run, each with
    ``--selector shard=s<j>``; they are measured as one (CPU and memory summed)."""
    kube.apply(*yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()))
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    path = f"/apis/{PXC[0]}/{PXC[1]}/namespaces/{ns}/{PXC[2]}"
    _wait_served(kube, path, f"{PXC[2]}.{PXC[0]}")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "stringData": {"tokenId": TOKEN_ID, "tokenSecret": sim.token_secret},
    }
    jobs: list[tuple[str, str, Key, dict[str, Any] | None]] = [
        (
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            ("POST", "", "secrets", ""),
            {**secret, "metadata": {"name": f"pve-{i}-token", "labels": {CREDENTIALS_LABEL: "true"}}},
        )
        for i in range(n)
    ]
    in_parallel(kube, jobs, [201])
    ca = sim.ca_pem

    def body(i: int) -> dict[str, Any]:
        spec = {
            "endpoint": f"{sim.url}/vc/{i}",
            "credentialsRef": {"name": f"pve-{i}-token"},
            "tls": {"caBundle": ca},
            "discoverEndpoints": False,
        }
        meta: dict[str, Any] = {"name": f"pve-{i}", "namespace": ns}
        if shards:
            meta["labels"] = {"shard": f"s{i % shards}"}
        return {"apiVersion": f"{PXC[0]}/{PXC[1]}", "kind": "ProxmoxCluster", "metadata": meta, "spec": spec}

    argv = [str(ROOT / ".venv" / "bin" / "proxmox-operator"), "--quiet", "--namespace", ns]
    env = _token(kube, "proxmox-operator", "proxmox-operator-system", workdir, "proxmox-operator")
    uses = ("secrets", "configmaps", "events", "namespaces", "customresourcedefinitions")
    if not shards:
        op = Proc("proxmox-operator", argv, workdir / "proxmox-operator.log", env)
        return Target("proxmox-operator", *PXC, ns, body, _ready, op, uses)
    members = [
        Proc(f"shard s{j}", [*argv, "--selector", f"shard=s{j}"], workdir / f"proxmox-operator-s{j}.log", env)
        for j in range(shards)
    ]
    label = f"proxmox-operator, {shards} shards"
    return Target(label, *PXC, ns, body, _ready, ProcGroup(label, members), uses)


def cleanup(kube: Kube, namespaces: list[str]) -> None:
    """Everything the benchmark created besides what the tests create too (deploy/rbac.yaml, the CRD)."""
    for ns in namespaces:
        kube.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
    no_namespace_terminating(kube)  # the controller-manager may be stopped next: let it finish first
    name = f"proxmox-operator-{bare.ACCOUNT}"
    kube.kubectl("delete", "clusterrolebinding", name, "--ignore-not-found")
    kube.kubectl("delete", "clusterrole", name, "--ignore-not-found")
    kube.kubectl("delete", "crd", bare.CRD_NAME, "--ignore-not-found", "--wait=false")
