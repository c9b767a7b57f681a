"""Fixtures for the tests of deploy/: helm, the chart, and the real control plane of the integration tests.

helm is the one `make tools` built (hack/tools.sh, with PXO_NO_BUILD=1: a build never runs under a test's
timeout). The control plane fixtures (cluster, crd, pve) are the root conftest's, one instance per session.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.kube import ROOT, Cluster
from tests.support.tools import cached_tool

CHART = ROOT / "deploy" / "helm" / "proxmox-operator"
NAMESPACE = "proxmox-operator-system"
RELEASE = "proxmox-operator"


@pytest.fixture(scope="session")
def helm() -> str:
    return cached_tool("helm")


class Chart:
    """`helm` on deploy/helm/proxmox-operator."""

    def __init__(self, helm: str) -> None:
        self.helm = helm

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.helm, *args], capture_output=True, text=True, check=False, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(
        self,
        *values: str,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        check: bool = True,
        set_json: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`helm template` with ``--set``-style values (``key=value``) and one ``--set-json``; ``--include-crds`` is
        not set."""
        args = [arg for value in values for arg in ("--set", value)]
        args += ["--set-json", set_json] if set_json else []
        return self.run("template", release, str(CHART), "--namespace", namespace, *args, check=check)

    def objects(
        self, *values: str, release: str = RELEASE, namespace: str = NAMESPACE, set_json: str | None = None
    ) -> list[dict[str, Any]]:
        rendered = self.template(*values, release=release, namespace=namespace, set_json=set_json).stdout
        return [d for d in yaml.safe_load_all(rendered) if d]


@pytest.fixture(scope="session")
def chart(helm: str) -> Chart:
    return Chart(helm)


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def dry_run_apply(cluster: Cluster, manifests: str) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --dry-run=server` of a YAML stream: the API server validates and admits, stores nothing."""
    return cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=manifests, check=False)


@pytest.fixture
def scratch_namespaces(cluster: Cluster) -> Iterator[Callable[[str], str]]:
    """Creates the namespaces a test names (``ns = scratch_namespaces(name)``), and deletes them afterwards without
    waiting, as :func:`tests.integration.conftest.scratch_namespace` does for its one random namespace."""
    names: list[str] = []

    def create(name: str) -> str:
        names.append(name)
        cluster.kubectl("create", "namespace", name)
        return name

    yield create
    for name in names:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
