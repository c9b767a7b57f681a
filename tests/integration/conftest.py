"""Fixtures for tests on the real control plane: the session's operator, namespaces, manifests.

The API server, the CRD, the operator's kubeconfig and the simulator are the root conftest's (tests/conftest.py),
shared with tests/deploy, tests/image and tests/node.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# Constants only, re-exported for the tests that import them from here; never a fixture: one imported here would
# be a second instance of the root conftest's.
from tests.conftest import CRD_NAME, OPERATOR_NS, OPERATOR_SA  # noqa: F401
from tests.integration.kube import ROOT, Cluster
from tests.integration.pve import PVE, TOKEN_ID

pytestmark = pytest.mark.integration

CREDENTIALS_LABEL = "proxmox-operator.dev/credentials"


class OperatorProcess:
    """The real `proxmox-operator` console script, run as a subprocess with debug logging."""

    def __init__(self, kubeconfig: Path, log_path: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        #: Extra environment, e.g. the POD_NAMESPACE a Pod gets from the downward API.
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "proxmox-operator"), "--verbose", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# Long retry backoff on purpose: a resource that recovers within seconds in these tests did so because the
# operator noticed the fix (a Secret or spec event), not because a retry happened to come along.
OPERATOR_ARGS = ["--probe-interval", "300", "--backoff-base", "120", "--backoff-max", "300"]
# The session's operator serves pxo-test-* namespaces; lifecycle tests run operators of their own on pxo-life-*.
TEST_NS_PREFIX = "pxo-test-"
LIFE_NS_PREFIX = "pxo-life-"


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, crd: str, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        operator_kubeconfig,
        tmp_path_factory.mktemp("operator-log") / "operator.log",
        [*OPERATOR_ARGS, "--namespace", f"{TEST_NS_PREFIX}*"],
    )
    op.start()
    time.sleep(0.5)
    assert op.alive(), op.log()
    yield op
    try:
        _wait_until_test_namespaces_are_gone(cluster, op)
    finally:
        code = op.stop()
    # A clean shutdown on SIGTERM: kopf exits 0.
    assert code == 0, f"operator exited with {code}:\n{op.log()[-5000:]}"


def _wait_until_test_namespaces_are_gone(cluster: Cluster, op: OperatorProcess) -> None:
    """Before the session's operator stops: every deleted test namespace goes away, because the operator removes
    its finalizer from each ProxmoxCluster in them. Stopping it earlier would leave namespaces Terminating for
    good (kopf does not start serving a namespace that is already being deleted), and the next session on the
    same control plane would inherit them."""
    listed = cluster.kubectl("get", "namespaces", "-o", "name", check=False)
    if listed.returncode != 0:
        return  # the control plane is already stopped: nothing is left to wait for
    names = [ref for ref in listed.stdout.split() if ref.startswith(f"namespace/{TEST_NS_PREFIX}")]
    if not names:
        return
    result = cluster.kubectl("wait", "--for=delete", *names, "--timeout=120s", check=False, timeout=150)
    assert result.returncode == 0, f"test namespaces still terminating: {result.stderr}\n{op.log()[-3000:]}"


def scratch_namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"{prefix}{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Cluster, crd: str) -> Iterator[str]:
    yield from scratch_namespace(cluster, TEST_NS_PREFIX)


def secret_manifest(
    name: str,
    namespace: str,
    data: dict[str, str],
    *,
    labelled: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret; ``labelled`` adds the opt-in label without which the operator never uses it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        metadata["labels"] = {CREDENTIALS_LABEL: "true"}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def pxc_manifest(
    name: str,
    namespace: str,
    *,
    endpoint: str | None = None,
    secret: str,
    ca_pem: str | None = None,
    insecure: bool | None = None,
    extra: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ProxmoxCluster manifest; ``extra`` is merged into the spec (tls keys into spec.tls)."""
    spec: dict[str, Any] = {"credentialsRef": {"name": secret}}
    if endpoint is not None:
        spec["endpoint"] = endpoint
    tls: dict[str, Any] = {}
    if ca_pem is not None:
        tls["caBundle"] = ca_pem
    if insecure is not None:
        tls["insecureSkipVerify"] = insecure
    extra = dict(extra or {})
    tls.update(extra.pop("tls", {}))
    if tls:
        spec["tls"] = tls
    spec.update(extra)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "proxmox-operator.dev/v1alpha1", "kind": "ProxmoxCluster", "metadata": metadata, "spec": spec}


def token_secret(
    namespace: str, pve: PVE, name: str = "token", token_id: str = TOKEN_ID, secret: str | None = None
) -> dict[str, Any]:
    """A Secret with an API token of the simulator (its first token unless told otherwise)."""
    return secret_manifest(name, namespace, {"tokenId": token_id, "tokenSecret": secret or pve.token_secret})


def register(
    cluster: Cluster, namespace: str, pve: PVE, *, name: str = "lab", extra: dict[str, Any] | None = None
) -> None:
    """Apply the token Secret and a ProxmoxCluster for the simulator's first node, trusting its CA."""
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest(name, namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem, extra=extra),
    )


def apply(cluster: Cluster, *objs: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=pytest",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(objs),
        check=check,
    )


@pytest.fixture(scope="session")
def other_ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CA of another simulated cluster: valid PEM that did not sign our simulator's certificate."""
    other = PVE(cert_dir=tmp_path_factory.mktemp("other-pve-certs")).start()
    try:
        return other.ca_pem
    finally:
        other.stop()


# Tests that kill, stop or watch an operator process of their own work in a pxo-life-* namespace that only it
# serves.
@pytest.fixture
def life_namespace(cluster: Cluster, crd: str) -> Iterator[str]:
    yield from scratch_namespace(cluster, LIFE_NS_PREFIX)


@pytest.fixture
def own_operator(
    cluster: Cluster, operator_kubeconfig: Path, life_namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        operator_kubeconfig, tmp_path / "operator.log", [*OPERATOR_ARGS, "--namespace", life_namespace]
    )
    op.start()
    yield op
    # Release the finalizers while this test's operator still runs: no other operator serves the namespace.
    if not op.alive():
        op.start()
    cluster.kubectl("delete", "pxc", "--all", "-n", life_namespace, "--wait=true", "--timeout=30s", check=False)
    op.stop()
