"""One source for the plain manifests: deploy/rbac.yaml, deploy/operator.yaml and deploy/kustomize/ are the chart
rendered with its default values (`make manifests`), and the API server accepts them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CHART, NAMESPACE, Chart, dry_run_apply
from tests.integration.kube import ROOT, Cluster

pytestmark = pytest.mark.integration

KUSTOMIZE = ROOT / "deploy" / "kustomize"


def render(out: Path) -> dict[str, str]:
    """Run hack/manifests.py into ``out``; relative path -> content of what it wrote."""
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "manifests.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PXO_NO_BUILD": "1"},
        timeout=120,
    )
    return {str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def rendered(helm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return render(tmp_path_factory.mktemp("manifests"))


def test_committed_manifests_are_the_chart_rendered_with_default_values(rendered: dict[str, str]) -> None:
    assert set(rendered) == {
        "deploy/rbac.yaml",
        "deploy/operator.yaml",
        "deploy/kustomize/kustomization.yaml",
        "deploy/kustomize/proxmoxclusters.yaml",
        "deploy/kustomize/rbac.yaml",
        "deploy/kustomize/operator.yaml",
    }
    for rel, content in rendered.items():
        assert (ROOT / rel).read_text(encoding="utf-8") == content, (
            f"{rel} is out of date with deploy/helm/proxmox-operator: run `make manifests` and commit the result"
        )
    committed = {str(p.relative_to(ROOT)) for p in KUSTOMIZE.iterdir()}
    assert committed == {rel for rel in rendered if rel.startswith("deploy/kustomize/")}, "a stale file in the base"


def test_the_crd_everywhere_is_the_one_generated_from_the_models() -> None:
    crd = (ROOT / "crds" / "proxmoxclusters.yaml").read_text(encoding="utf-8")
    assert (CHART / "crds" / "proxmoxclusters.yaml").read_text(encoding="utf-8") == crd, "run `make crds`"
    assert (KUSTOMIZE / "proxmoxclusters.yaml").read_text(encoding="utf-8") == crd, "run `make crds manifests`"


def test_plain_manifests_carry_no_helm_release_labels(rendered: dict[str, str]) -> None:
    for rel in ("deploy/rbac.yaml", "deploy/operator.yaml"):
        for obj in yaml.safe_load_all(rendered[rel]):
            labels = obj["metadata"].get("labels", {})
            assert "helm.sh/chart" not in labels and "app.kubernetes.io/managed-by" not in labels, rel


def test_plain_rbac_is_the_default_chart_rbac_plus_the_namespace(chart: Chart, rendered: dict[str, str]) -> None:
    plain = list(yaml.safe_load_all(rendered["deploy/rbac.yaml"]))
    assert [(o["kind"], o["metadata"]["name"]) for o in plain] == [
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "proxmox-operator"),
        ("ClusterRole", "proxmox-operator"),
        ("ClusterRoleBinding", "proxmox-operator"),
        ("Role", "proxmox-operator-leader-election"),
        ("RoleBinding", "proxmox-operator-leader-election"),
    ]
    from_chart = {o["kind"]: o for o in chart.objects()}
    assert plain[2]["rules"] == from_chart["ClusterRole"]["rules"]
    assert plain[3]["subjects"] == from_chart["ClusterRoleBinding"]["subjects"]
    assert plain[4]["rules"] == from_chart["Role"]["rules"]


def ensure_namespace(cluster: Cluster, name: str) -> None:
    """Create the namespace if it is missing. proxmox-operator-system is never deleted here: the integration
    tests' operator runs with the ServiceAccount that deploy/rbac.yaml creates in it."""
    if cluster.kubectl("get", "namespace", name, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", name)


def test_kustomize_base_is_accepted_by_the_api_server(cluster: Cluster) -> None:
    ensure_namespace(cluster, NAMESPACE)
    built = cluster.kubectl("kustomize", str(KUSTOMIZE)).stdout
    kinds = sorted(o["kind"] for o in yaml.safe_load_all(built))
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    result = dry_run_apply(cluster, built)
    assert result.returncode == 0, result.stderr


def test_kustomize_base_works_in_an_overlay_for_another_namespace(
    cluster: Cluster, tmp_path: Path, scratch_namespaces: Callable[[str], str]
) -> None:
    ns = f"pxo-kustomize-{os.urandom(4).hex()}"
    scratch_namespaces(ns)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [os.path.relpath(KUSTOMIZE, tmp_path)], "namespace": ns, "nameSuffix": f"-{ns}"}),
        encoding="utf-8",
    )
    built = cluster.kubectl("kustomize", str(tmp_path)).stdout
    objects = {o["kind"]: o for o in yaml.safe_load_all(built)}
    # The binding follows the ServiceAccount into the overlay's namespace.
    assert objects["ClusterRoleBinding"]["subjects"][0]["namespace"] == ns
    assert objects["Deployment"]["metadata"]["namespace"] == ns
    without_namespace = yaml.safe_dump_all([o for o in objects.values() if o["kind"] != "Namespace"])
    result = dry_run_apply(cluster, without_namespace)
    assert result.returncode == 0, result.stderr


def test_plain_manifests_are_accepted_by_the_api_server(cluster: Cluster) -> None:
    ensure_namespace(cluster, NAMESPACE)
    stream = "\n---\n".join(
        (ROOT / rel).read_text(encoding="utf-8")
        for rel in ("crds/proxmoxclusters.yaml", "deploy/rbac.yaml", "deploy/operator.yaml")
    )
    result = dry_run_apply(cluster, stream)
    assert result.returncode == 0, result.stderr
