"""The baseline: a bare kopf operator, run as its own process like ``kopf run`` would
(``python -m bench.bare_kopf --namespace NS [--finalizer]``).

One ``@kopf.on.create`` handler that returns a value, which kopf writes into ``status.created``: an object is
done when that is there. With ``--finalizer`` it also has a no-op ``@kopf.on.delete`` handler, so kopf puts a
finalizer on every object and must remove it again on deletion, as proxmox-operator does with its own: the fair
baseline for deletion. Objects are ``BenchObject``s of a small CRD of the benchmark's own
(:func:`manifests`), whose status kopf may write (``x-kubernetes-preserve-unknown-fields``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import kopf

GROUP = "bench.proxmox-operator.dev"
VERSION = "v1"
PLURAL = "benchobjects"
CRD_NAME = f"{PLURAL}.{GROUP}"
ACCOUNT = "bench-kopf"


def manifests(namespace: str) -> list[dict[str, Any]]:
    """The CRD, and a ServiceAccount with what a kopf operator of it needs (so it pays for authorization as
    proxmox-operator does with deploy/rbac.yaml, instead of running as cluster admin)."""
    free = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "benchobject", "kind": "BenchObject"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": free, "status": free}}},
                }
            ],
        },
    }
    rules = [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    meta = {"name": f"proxmox-operator-{ACCOUNT}"}
    subject = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}
    return [
        crd,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": meta["name"]},
            "subjects": [subject],
        },
    ]


def body(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BenchObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"index": int(name.rsplit("-", 1)[1])},
    }


def done(obj: dict[str, Any]) -> bool:
    return bool(obj.get("status", {}).get("created"))


def created(**_: Any) -> dict[str, bool]:
    """The create handler: its return value goes to ``status.created``."""
    return {"ok": True}


def deleted(**_: Any) -> None:
    """The no-op delete handler of ``--finalizer``."""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_kopf")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--finalizer", action="store_true", help="add a no-op delete handler (kopf's finalizer)")
    args = parser.parse_args()
    # Registered here, not at import: the benchmark imports this module for its manifests.
    kopf.on.create(GROUP, VERSION, PLURAL, id="created")(created)
    if args.finalizer:
        kopf.on.delete(GROUP, VERSION, PLURAL, id="deleted")(deleted)
    kopf.configure(quiet=True)
    asyncio.run(kopf.operator(namespaces=[args.namespace], clusterwide=False, standalone=True))


if __name__ == "__main__":
    main()
