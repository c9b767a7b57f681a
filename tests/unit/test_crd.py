"""The committed CRD is generated from the models and is a structural schema."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxmox_operator import crdgen
from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.proxmox.client import Limits, Timeouts

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / f"{api.PLURAL}.yaml"
#: The Helm chart installs only CRDs inside the chart, so it carries a copy; `make crds` writes both.
CHART_CRD_FILE = ROOT / "deploy" / "helm" / "proxmox-operator" / "crds" / f"{api.PLURAL}.yaml"


def walk(node: Any, path: str = "") -> Any:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("path", [CRD_FILE, CHART_CRD_FILE], ids=["crds", "helm-chart"])
def test_committed_crd_matches_the_models(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == crdgen.render(), (
        f"{path.relative_to(ROOT)} is out of date with operator/proxmox_operator/api/v1alpha1/types.py: "
        "run `make crds` (and `make manifests` for deploy/kustomize/) and commit it"
    )


def test_crdgen_writes_every_committed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert crdgen.main([]) == 0
    for path in (CRD_FILE, CHART_CRD_FILE):
        assert (tmp_path / path.relative_to(ROOT)).read_text(encoding="utf-8") == crdgen.render()


def schema_nodes(node: dict[str, Any], path: str = "") -> Any:
    """Every schema node (not keyword values such as x-kubernetes-validations entries)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")


def test_schema_is_structural() -> None:
    schema = crdgen.openapi_schema()
    for path, node in walk(schema):
        if isinstance(node, dict) and not path.endswith(".properties"):
            assert "$ref" not in node, path
            assert "anyOf" not in node, path
    for path, node in schema_nodes(schema):
        assert "type" in node, f"{path or '(root)'} has no type"
        assert "default" not in node, f"{path}: defaults are written into stored objects"


def test_crd_names_columns_and_subresources() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    names = crd["spec"]["names"]
    assert names["kind"] == "ProxmoxCluster" and names["shortNames"] == ["pxc"]
    assert names["categories"] == ["proxmox"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Endpoint",
        "Version",
        "Nodes",
        "Quorate",
        "Ready",
        "Reason",
        "Age",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["credentialsRef"]
    assert set(spec["properties"]) == {
        "endpoint",
        "endpoints",
        "discoverEndpoints",
        "credentialsRef",
        "tls",
        "timeouts",
        "limits",
        "healthCheck",
    }
    assert set(spec["properties"]["tls"]["properties"]) == {
        "caBundle",
        "caBundleRef",
        "fingerprints",
        "insecureSkipVerify",
    }
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.endpoint) != has(self.endpoints)" in rules


def test_every_spec_field_is_documented() -> None:
    spec = crdgen.openapi_schema()["properties"]["spec"]
    for path, node in schema_nodes(spec):
        if path.endswith("[]") and node["type"] != "object":
            continue  # a list of strings is described by the list field
        assert node.get("description"), f"spec{path} has no description for kubectl explain"


def test_group_is_ours() -> None:
    assert not api.GROUP.endswith(("k8s.io", "kubernetes.io"))


def _spec_field(*path: str) -> dict[str, Any]:
    node = crdgen.openapi_schema()["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    return node


def test_descriptions_state_the_defaults_the_code_applies() -> None:
    """The defaults are the code's (the Proxmox client's own), and each description ends with the value: it
    cannot drift from them. None is no default to state, and no schema default is written either."""
    expected = {
        ("timeouts", "connectSeconds"): Timeouts().connect,
        ("timeouts", "readSeconds"): Timeouts().read,
        ("timeouts", "totalSeconds"): Timeouts().total,
        ("limits", "maxConcurrentRequests"): Limits().max_concurrent,
        ("limits", "requestsPerSecond"): Limits().requests_per_second,
    }
    for path, value in expected.items():
        field = _spec_field(*path)
        assert field["description"].endswith(f" Default {value:g}."), path
        assert "default" not in field
    assert _spec_field("discoverEndpoints")["description"].endswith(" Default true.")
    assert _spec_field("tls", "insecureSkipVerify")["description"].endswith(" Default false.")
    assert "Default 60" not in _spec_field("healthCheck", "intervalSeconds")["description"]
    for group in ("timeouts", "limits"):  # the object's own description names no value of its fields
        described = _spec_field(group)["description"]
        assert not any(ch.isdigit() for ch in described), described
    spec = api.ProxmoxClusterSpec.model_validate({"endpoint": "https://pve:8006", "credentialsRef": {"name": "s"}})
    assert (spec.timeouts or api.TimeoutsSpec()).connect_seconds == Timeouts().connect
