"""Fixtures for the tests on a real node: hack/node.sh's containerd and kubelet joined to the local control plane.

The node's binaries are never built here (`make test` runs `make node` first; PXO_NO_BUILD=1 makes hack/node.sh
fail at once when they are missing). Each session gets a node of its own: a temporary node dir (containerd's
root, state and socket, the kubelet's root), its own ports below the ephemeral range, and a Node name of its own.
Everything is stopped and the dir deleted at the end. The suite is skipped only when PXO_NODE=0 declares the node
unsupported on this machine; anything else that keeps the node from running fails.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.kube import ROOT, Cluster

# The control plane, CRD and simulator fixtures are the root conftest's (tests/conftest.py), one per session.

NODE_SCRIPT = ROOT / "hack" / "node.sh"


def free_port() -> int:
    """A port free on every address, below the ephemeral range (32768+) that outgoing connections take ports from."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000-32000")


def apiserver_port(cluster: Cluster) -> int:
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    host, _, port = str(server).removeprefix("https://").partition(":")
    assert host == "127.0.0.1", f"the node tests need the local control plane (hack/cluster.sh), not {server}"
    return int(port)


@dataclass
class Node:
    name: str
    directory: Path
    env: dict[str, str]

    def script(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(NODE_SCRIPT), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def log(self, component: str, lines: int = 40) -> str:
        path = self.directory / f"{component}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def container_logs(self) -> str:
        """The logs of every container the kubelet ran (kubectl logs would need the API server to reach it)."""
        out = []
        for path in sorted((self.directory / "pod-logs").rglob("*.log")):
            out.append(f"--- {path.relative_to(self.directory)} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)


@pytest.fixture(scope="session")
def node(cluster: Cluster) -> Iterator[Node]:
    if os.environ.get("PXO_NODE") == "0":
        pytest.skip("PXO_NODE=0: the node (kubelet + containerd) is declared unsupported on this machine")
    state = cluster.kubeconfig.parent
    if not (state / "pki" / "ca.key").exists():
        pytest.fail(f"the node joins hack/cluster.sh's control plane; {state} is not its state dir (no pki/ca.key)")
    # Short: containerd's socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="pxo-node-"))
    env = {
        **os.environ,
        "PXO_NO_BUILD": "1",
        "PXO_CLUSTER_DIR": str(state),
        "PXO_APISERVER_PORT": str(apiserver_port(cluster)),
        "PXO_NODE_DIR": str(directory),
        "PXO_NODE_NAME": f"pxo-node-{secrets.token_hex(3)}",
        "PXO_KUBELET_PORT": str(free_port()),
        "PXO_KUBELET_HEALTHZ_PORT": str(free_port()),
        "PXO_SCHEDULER_PORT": str(free_port()),
        "PXO_NODE_KCM_PORT": str(free_port()),
    }
    n = Node(name=env["PXO_NODE_NAME"], directory=directory, env=env)
    up = n.script("up")
    if up.returncode != 0:
        n.script("down", "--purge")
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(
            f"hack/node.sh up failed ({up.returncode}); `make test` runs `make node` first\n{up.stderr[-6000:]}"
        )
    yield n
    down = n.script("down", "--purge")
    assert down.returncode == 0, down.stderr
    assert not directory.exists(), f"hack/node.sh down --purge left {directory}"
