"""Render the plain manifests from the Helm chart, so that the three ways to install cannot drift apart.

    .venv/bin/python hack/manifests.py [--out DIR]        (`make manifests`)

runs ``helm template proxmox-operator deploy/helm/proxmox-operator --namespace proxmox-operator-system
--include-crds`` with the chart's default values and writes, under DIR (default: the repository root):

* ``deploy/rbac.yaml``: the Namespace, the ServiceAccount, the ClusterRole and its binding, the leader election
  Role and its binding;
* ``deploy/operator.yaml``: the Deployment, its PodDisruptionBudget and its metrics Service;
* ``deploy/kustomize/``: a kustomize base with copies of both and of the CRD (kustomize loads no file outside
  its root), and its ``kustomization.yaml``.

The chart's CRD is ``make crds``' copy of ``crds/proxmoxclusters.yaml``. Labels that say Helm manages an object
(``helm.sh/chart``, ``app.kubernetes.io/managed-by``) are dropped: these files are applied without Helm.
``tests/deploy/test_manifests.py`` renders into a temporary DIR and compares with the committed files.

helm comes from ``hack/tools.sh helm`` (built from source once; PXO_NO_BUILD=1 makes that fail instead).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "proxmox-operator"
RELEASE = "proxmox-operator"
NAMESPACE = "proxmox-operator-system"

GENERATED = (
    "# Generated from deploy/helm/proxmox-operator with its default values by `make manifests`"
    " (hack/manifests.py).\n# Do not edit by hand: change the chart and run `make manifests`.\n"
)

RBAC_HEADER = (
    "# What proxmox-operator may do, and nothing more. The integration tests run the operator with exactly this\n"
    "# ServiceAccount, so a missing rule fails a test. Apply crds/ and this file before operator.yaml.\n"
)
OPERATOR_HEADER = (
    "# The operator as a Deployment of two replicas that elect a leader, its PodDisruptionBudget and the Service of\n"
    "# its metrics, for a real cluster. Apply crds/ and rbac.yaml first.\n"
    '# Build the image with deploy/Dockerfile (see README: "Running against a real cluster").\n'
)
KUSTOMIZE_HEADER = (
    "# A kustomize base: the CRD, the RBAC and the Deployment with the chart's default values.\n"
    "# `kubectl apply --server-side -k deploy/kustomize`, or use it as a base of your own overlay.\n"
)

NAMESPACE_DOC = f"""apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: proxmox-operator
"""

#: Lines that only make sense in a Helm release.
_HELM_ONLY = re.compile(r"^\s*(helm\.sh/chart|app\.kubernetes\.io/managed-by):.*\n", re.MULTILINE)
_SOURCE = re.compile(r"^# Source: [^/]+/(.+)\n", re.MULTILINE)


def helm_binary() -> str:
    result = subprocess.run(  # noqa: S603
        ["bash", str(ROOT / "hack" / "tools.sh"), "helm"],  # noqa: S607
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"manifests.py: hack/tools.sh helm failed (exit {result.returncode}); run `make tools` first")
    return result.stdout.strip()


def helm_template(helm: str, *args: str) -> str:
    """``helm template`` of the chart as the release ``proxmox-operator`` in ``proxmox-operator-system``."""
    return subprocess.run(  # noqa: S603
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout


def split_by_source(rendered: str) -> dict[str, list[str]]:
    """The documents of ``helm template`` output by the chart file they come from (``templates/rbac.yaml``)."""
    by_source: dict[str, list[str]] = {}
    for raw in re.split(r"^---\n", rendered, flags=re.MULTILINE):
        match = _SOURCE.search(raw)
        if match is None:
            if raw.strip():
                raise ValueError(f"a document without a '# Source:' line in helm's output:\n{raw}")
            continue
        doc = _HELM_ONLY.sub("", _SOURCE.sub("", raw, count=1)).strip("\n") + "\n"
        yaml.safe_load(doc)  # each document must still be valid YAML
        by_source.setdefault(match.group(1), []).append(doc)
    return by_source


def join(header: str, docs: list[str]) -> str:
    return header + "---\n".join(docs)


def render(helm: str) -> dict[str, str]:
    """Relative path -> content of every generated file."""
    by_source = split_by_source(helm_template(helm, "--include-crds"))
    expected = {"crds/proxmoxclusters.yaml", "templates/serviceaccount.yaml", "templates/rbac.yaml"}
    expected |= {"templates/deployment.yaml", "templates/pdb.yaml", "templates/service.yaml"}
    if set(by_source) != expected:
        raise ValueError(f"the chart rendered {sorted(by_source)}, expected {sorted(expected)}")
    (crd,) = by_source["crds/proxmoxclusters.yaml"]
    rbac = join(GENERATED + RBAC_HEADER, [NAMESPACE_DOC, *by_source["templates/serviceaccount.yaml"]])
    rbac += "---\n" + "---\n".join(by_source["templates/rbac.yaml"])
    operator = join(
        GENERATED + OPERATOR_HEADER,
        [
            *by_source["templates/deployment.yaml"],
            *by_source["templates/pdb.yaml"],
            *by_source["templates/service.yaml"],
        ],
    )
    kustomization = (
        GENERATED
        + KUSTOMIZE_HEADER
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        + "resources:\n  - proxmoxclusters.yaml\n  - rbac.yaml\n  - operator.yaml\n"
    )
    return {
        "deploy/rbac.yaml": rbac,
        "deploy/operator.yaml": operator,
        "deploy/kustomize/kustomization.yaml": kustomization,
        "deploy/kustomize/proxmoxclusters.yaml": crd,
        "deploy/kustomize/rbac.yaml": rbac,
        "deploy/kustomize/operator.yaml": operator,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="write under this dir (default: the repository)")
    args = parser.parse_args(argv)
    for rel, content in render(helm_binary()).items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
