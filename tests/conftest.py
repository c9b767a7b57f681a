"""Fixtures shared by every suite that needs the real control plane (integration, deploy, image, node): the API
server, the CRD, the operator's ServiceAccount kubeconfig and the PVE simulator.

They live here, at the root, so that a session has exactly one instance of each whichever directories it runs:
one API server, started once and stopped after every fixture that uses it (a fixture re-exported by several
conftests would be one instance per directory, torn down in no useful order).

With no KUBECONFIG, the project's own control plane is started (`hack/cluster.sh up`) and stopped again at the
end if this session started it. A KUBECONFIG whose current context is not the local one is refused unless
PXO_TEST_ALLOW_ANY_CLUSTER=1 says so explicitly: these tests create and delete namespaces.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.kube import LOCAL_CONTEXT, ROOT, Cluster, wait_for
from tests.integration.pve import PVE

CRD_NAME = "proxmoxclusters.proxmox-operator.dev"
OPERATOR_NS = "proxmox-operator-system"
OPERATOR_SA = "proxmox-operator"


def _start_local_cluster(config: pytest.Config) -> Path:
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        return _run_cluster_up()


def _run_cluster_up() -> Path:
    # PXO_NO_BUILD: this runs under pytest-timeout, so it only starts what `make controlplane` built (a build
    # takes minutes; it must never be killed half-way by a test's timeout). Without the binaries it fails at once.
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "cluster.sh"), "up"],
        stdout=subprocess.PIPE,
        stderr=None,  # progress goes straight to the terminal
        text=True,
        check=False,
        timeout=240,
        env={**os.environ, "PXO_NO_BUILD": "1"},
    )
    if result.returncode != 0:
        pytest.exit(
            f"hack/cluster.sh up failed with exit code {result.returncode} (its message is above); "
            "`make test` builds the control plane first, or run `make controlplane`",
            returncode=3,
        )
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("export KUBECONFIG="):
            return Path(line.split("=", 1)[1].strip())
    pytest.exit("hack/cluster.sh up printed no `export KUBECONFIG=` line", returncode=3)


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    given = os.environ.get("KUBECONFIG")
    started = False
    if given:
        kc = Path(given.split(os.pathsep)[0])
        current = Cluster(kc).kubectl("config", "current-context", check=False).stdout.strip()
        if current != LOCAL_CONTEXT and os.environ.get("PXO_TEST_ALLOW_ANY_CLUSTER") != "1":
            pytest.exit(
                f"KUBECONFIG points at context {current!r}, not the local {LOCAL_CONTEXT!r}. These tests create "
                "and delete namespaces: unset KUBECONFIG to use the local control plane, or set "
                "PXO_TEST_ALLOW_ANY_CLUSTER=1 to run against this cluster anyway.",
                returncode=4,
            )
    else:
        kc = _start_local_cluster(pytestconfig)
        started = True
    c = Cluster(kc)
    c.kubectl("version")
    yield c
    if started and os.environ.get("PXO_KEEP_CLUSTER") != "1":
        subprocess.run(["bash", str(ROOT / "hack" / "cluster.sh"), "down"], check=False, timeout=120)


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> str:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # Discovery and the OpenAPI document lag a moment behind Established.
    wait_for(lambda: cluster.kubectl("get", "pxc", "-A", check=False).returncode == 0, timeout=60, what="pxc API")
    return CRD_NAME


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to exactly deploy/rbac.yaml."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "rbac.yaml"))
    wait_for(
        lambda: cluster.kubectl("get", "sa", OPERATOR_SA, "-n", OPERATOR_NS, check=False).returncode == 0,
        timeout=30,
        what="the operator ServiceAccount",
    )
    token = cluster.kubectl("create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=6h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cl = admin["clusters"][0]
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cl["name"], "cluster": cl["cluster"]}],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cl["name"], "user": OPERATOR_SA}}],
        "current-context": "operator",
    }
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(yaml.safe_dump(kc))
    return path


@pytest.fixture(scope="session")
def pve_cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulated cluster CA for the session: generating an RSA 4096 CA takes a while."""
    return tmp_path_factory.mktemp("pve-certs")


@pytest.fixture
def pve(pve_cert_dir: Path) -> Iterator[PVE]:
    sim = PVE(cert_dir=pve_cert_dir).start()
    yield sim
    sim.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
