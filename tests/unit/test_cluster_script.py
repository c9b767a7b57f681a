"""hack/cluster.sh on a new machine: what a killed build leaves behind never breaks or slows the next run, and
whatever is missing stops the run with one line that says what to do.

None of these builds Kubernetes: a fake ``go`` (PXO_GO) writes a small script where the real one would write
kube-apiserver, so the whole build path (lock, leftovers, temporary files, stamp) runs in a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "cluster.sh"
MODULE = ROOT / "hack" / "controlplane"
K8S_VERSION = re.search(r"k8s\.io/kubernetes (v[0-9.]+)", (MODULE / "go.mod").read_text()).group(1)  # type: ignore[union-attr]
# Above the kernel's pid_max: kill -0 can never find it, so a file named after it belongs to no live process.
DEAD_PID = 4_194_999

FAKE_GO = """#!/usr/bin/env bash
# A stand-in for `go`: `go env GOVERSION`, and `go build ... -o OUT PKG`, which writes OUT after FAKE_GO_SLEEP.
if [[ $1 == env ]]; then echo go9.9.9; exit 0; fi
out=""
while [[ $# -gt 0 ]]; do [[ $1 == -o ]] && out=$2; shift; done
echo "$$ $out" >>"$FAKE_GO_LOG"
sleep "${FAKE_GO_SLEEP:-0}"
printf '#!/bin/sh\\necho fake\\n' >"$out"
chmod +x "$out"
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Env:
    cache: Path
    bin_dir: Path
    lock: Path
    go_log: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,  # a guard against a hang, not a timing assertion
            check=False,
        )

    def start(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", str(SCRIPT), *args],
            env={**self.env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # As from a terminal: a test runner started in the background inherits SIGINT ignored, and bash
            # cannot trap a signal that was ignored when it started.
            preexec_fn=_default_sigint,  # noqa: PLW1509 (no threads start in between)
        )

    def builds(self) -> list[tuple[int, str]]:
        if not self.go_log.exists():
            return []
        return [(int(pid), out) for pid, out in (line.split() for line in self.go_log.read_text().splitlines())]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    go = tmp_path / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    cache = tmp_path / "cache"
    e = Env(
        cache=cache,
        bin_dir=cache / "kubernetes" / K8S_VERSION,
        lock=cache / "kubernetes" / ".build.lock",
        go_log=tmp_path / "go.log",
        env={
            **os.environ,
            "PXO_CACHE_DIR": str(cache),
            "PXO_CLUSTER_DIR": str(tmp_path / "state"),
            "PXO_GO": str(go),
            "FAKE_GO_LOG": str(tmp_path / "go.log"),
            # Free ports of its own: a control plane running on the default ones must not matter here.
            **{var: str(_free_port()) for var in PORT_VARS},
        },
    )
    yield e
    for pid, _ in e.builds():  # never leave a fake build sleeping
        _kill_group(pid)


PORT_VARS = ("PXO_APISERVER_PORT", "PXO_ETCD_PORT", "PXO_ETCD_PEER_PORT", "PXO_KCM_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill -0: it counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


def _wait(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _source_hash() -> str:
    return hashlib.sha256((MODULE / "go.mod").read_bytes() + (MODULE / "go.sum").read_bytes()).hexdigest()


def _assert_cached(env: Env) -> None:
    for name in ("kube-apiserver", "kube-controller-manager"):
        assert os.access(env.bin_dir / name, os.X_OK), name
    assert (env.bin_dir / ".source-sha256").read_text().strip() == _source_hash()


def _leftover_lock_holder(env: Env) -> subprocess.Popen[bytes]:
    """A process of a killed run that still holds the build lock: a group leader whose command line names the
    cache, as a real `go build` of ours does. Its owner, the cluster.sh that started it, is gone."""
    env.lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        ["bash", "-c", 'exec 9>>"$0"; flock 9; while :; do sleep 1; done', str(env.lock)],
        start_new_session=True,
    )
    _wait(lambda: subprocess.run(["flock", "-n", str(env.lock), "true"], check=False).returncode != 0, "the lock")
    Path(f"{env.lock}.owner").write_text(f"{DEAD_PID} {holder.pid}\n")
    return holder


def test_a_killed_builds_leftovers_are_cleaned_up_and_the_next_build_proceeds(env: Env) -> None:
    env.bin_dir.mkdir(parents=True)
    stale = env.bin_dir / f"kube-apiserver.tmp.{DEAD_PID}"
    stale.write_bytes(b"half a binary")
    stale_stamp = env.bin_dir / f".source-sha256.tmp.{DEAD_PID}"
    stale_stamp.write_text("x")
    live = env.bin_dir / f"kube-controller-manager.tmp.{os.getpid()}"  # a writer that still runs: kept
    live.write_bytes(b"being written")
    holder = _leftover_lock_holder(env)
    try:
        result = env.run("build")
        assert result.returncode == 0, result.stderr
        assert "left by a killed run" in result.stderr
        _wait(lambda: holder.poll() is not None, "the leftover lock holder to be stopped")
        assert not stale.exists()
        assert not stale_stamp.exists()
        assert live.exists()
        _assert_cached(env)
        assert [Path(out).name.split(".tmp.")[0] for _, out in env.builds()] == [
            "kube-apiserver",
            "kube-controller-manager",
        ]
    finally:
        _kill_group(holder.pid)
        holder.wait()


def test_stale_files_go_even_when_the_binaries_are_cached(env: Env) -> None:
    assert env.run("build").returncode == 0
    stale = env.bin_dir / f"kube-apiserver.tmp.{DEAD_PID}"
    stale.write_bytes(b"x")
    result = env.run("build")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert len(env.builds()) == 2, "a cached build must not run go again"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_build_stops_its_compiler_and_leaves_no_temporary_file(env: Env, sig: signal.Signals) -> None:
    proc = env.start("build", FAKE_GO_SLEEP="300")
    _wait(lambda: bool(env.builds()), "the build to start")
    (go_pid, out), *_ = env.builds()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    _wait(lambda: not _alive(go_pid), "the compiler to stop")
    assert not list(env.bin_dir.glob("*.tmp.*"))
    assert not Path(out).exists()
    # The next run builds from scratch, without waiting on anything.
    result = env.run("build")
    assert result.returncode == 0, result.stderr
    _assert_cached(env)


def test_a_build_whose_script_was_sigkilled_is_stopped_by_the_next_run(env: Env) -> None:
    proc = env.start("build", FAKE_GO_SLEEP="300")
    _wait(lambda: bool(env.builds()), "the build to start")
    orphan, _ = env.builds()[0]
    proc.kill()  # no trap runs: the compiler keeps running in its own process group
    proc.wait()
    assert _alive(orphan)
    result = env.run("build")
    assert result.returncode == 0, result.stderr
    assert "leftover build" in result.stderr
    _wait(lambda: not _alive(orphan), "the orphaned compiler to be stopped")
    _assert_cached(env)


def test_no_build_mode_fails_at_once_with_what_to_run(env: Env) -> None:
    result = env.run("build", PXO_NO_BUILD="1")
    assert result.returncode != 0
    assert env.builds() == []
    last = result.stderr.strip().splitlines()[-1]
    assert "make controlplane" in last, last


def test_missing_go_is_one_line_that_says_what_to_do(env: Env, tmp_path: Path) -> None:
    result = env.run("build", PXO_GO=str(tmp_path / "no-such-go"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Go" in lines[0]
    assert "PXO_GO" in lines[0]


def test_a_taken_port_stops_prepare_before_any_build(env: Env) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = env.run("prepare", PXO_APISERVER_PORT=str(port))
    assert result.returncode != 0
    assert env.builds() == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0]
    assert "PXO_APISERVER_PORT" in lines[0]
