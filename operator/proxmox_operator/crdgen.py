"""Generate the ProxmoxCluster CustomResourceDefinition from the pydantic models.

``python -m proxmox_operator.crdgen [OUT...]`` (``make crds``) writes ``crds/proxmoxclusters.yaml`` and the Helm
chart's copy, ``deploy/helm/proxmox-operator/crds/proxmoxclusters.yaml`` (or each OUT given).

pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3 schema. The differences handled here:

* ``$ref``/``$defs`` are not allowed: every reference is inlined.
* ``Optional[X]`` comes out as ``anyOf: [X, {type: null}]``: it becomes ``X`` with ``nullable: true``.
* ``default`` is dropped: the API server would write it into every stored object (drift for GitOps tools);
  the models apply defaults in code instead, and the description ends with it (``Default 5.``), so what
  ``kubectl explain`` says is the code's value and cannot drift from it.
* ``title`` is dropped (noise in ``kubectl explain``); docstrings become ``description``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from proxmox_operator.api import v1alpha1 as api

_DROP = frozenset({"title", "default"})


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) == 1 and len(node["anyOf"]) == 2:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _resolve({**variants[0], **rest, "nullable": True}, defs)
        raise ValueError(f"anyOf other than Optional[X] is not structural: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key == "description":
            out[key] = _describe(value, node.get("default"))
        else:
            out[key] = _resolve(value, defs)
    return out


def _describe(text: str, default: Any = None) -> str:
    """Docstrings use reStructuredText literals; ``kubectl explain`` shows plain text. A field's default (not
    None, an absent optional field, nor an empty string) ends the description."""
    plain = re.sub(r"``(.+?)``", r"'\1'", " ".join(text.split()))
    if isinstance(default, bool):
        return f"{plain} Default {str(default).lower()}."
    if isinstance(default, str) and default:
        return f"{plain} Default '{default}'."
    if isinstance(default, int | float):
        return f"{plain} Default {default:g}."
    return plain


def openapi_schema() -> dict[str, Any]:
    raw = api.ProxmoxCluster.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    props = schema["properties"]
    # metadata is the API server's business; apiVersion/kind are plain strings in every CRD.
    props.pop("metadata", None)
    props["apiVersion"] = {"type": "string", "description": "APIVersion of this object."}
    props["kind"] = {"type": "string", "description": "Kind of this object."}
    props["spec"].pop("nullable", None)
    schema["required"] = ["spec"]
    return schema


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(api.ProxmoxCluster.PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = "# Generated from operator/proxmox_operator/api/v1alpha1/types.py by `make crds`. Do not edit by hand.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120)


#: Where the CRD is committed: crds/ for kubectl and kustomize, and the Helm chart's crds/ (Helm installs only the
#: CRDs inside the chart). tests/unit/test_crd.py checks that each one matches the models.
OUTPUTS = (
    Path("crds") / f"{api.PLURAL}.yaml",
    Path("deploy") / "helm" / "proxmox-operator" / "crds" / f"{api.PLURAL}.yaml",
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    for out in [Path(a) for a in args] or OUTPUTS:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
