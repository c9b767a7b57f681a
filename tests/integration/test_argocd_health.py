"""The Argo CD health check (deploy/argocd/health.lua) on real objects.

Every object here is read back from the real kube-apiserver (or is the API server's own response to a write),
with the status the real operator wrote; the check runs on it exactly as in the unit tests, in the sandbox
Argo CD gives an argocd-cm script. The "not caught up yet" cases are deterministic without editing anything:
the API server's response to a create has no status (the status subresource ignores it), and its response to
a spec change carries the new generation with the status the operator wrote for the previous one, since the
operator cannot have seen the change before the write returned.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, register, secret_manifest
from tests.integration.kube import ROOT, Cluster, condition, get_pxc, kubectl_binary, wait_condition, wait_for
from tests.integration.pve import PVE, TOKEN_ID, USER
from tests.unit.test_argocd_health import ARGOCD_CM_KEY, HEALTH_LUA, README, Health, evaluate

pytestmark = pytest.mark.integration

PAUSE_ANNOTATION = "proxmox-operator.dev/paused"


def token_secret(namespace: str, pve: PVE) -> dict[str, Any]:
    return secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret})


def write(cluster: Cluster, verb: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The API server's response to creating or applying ``obj``: the object as that write stored it."""
    args = ["create"] if verb == "create" else ["apply", "--server-side", "--field-manager=pytest"]
    result = cluster.kubectl(*args, "-o", "json", "-f", "-", stdin=yaml.safe_dump(obj))
    stored: dict[str, Any] = json.loads(result.stdout)
    return stored


def test_a_ready_resource_is_healthy(cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE) -> None:
    register(cluster, namespace, pve)
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    ready = condition(obj)
    assert ready is not None
    assert evaluate(obj) == Health("Healthy", ready["message"])


def test_a_wrong_password_is_degraded_with_authentication_failed(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        secret_manifest("creds", namespace, {"username": USER, "password": "not-the-password"}),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="creds", ca_pem=pve.ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "AuthenticationFailed")
    ready = condition(obj)
    assert ready is not None
    health = evaluate(obj)
    assert health.status == "Degraded"
    assert health.message == f"AuthenticationFailed: {ready['message']}"
    assert "authentication failure" in health.message


def test_a_resource_the_operator_has_not_processed_yet_is_progressing_then_healthy(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(cluster, token_secret(namespace, pve))
    created = write(
        cluster, "create", pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    )
    assert "status" not in created, "the API server keeps status out of a create"
    health = evaluate(created)
    assert health.status == "Progressing"
    assert "no status yet" in health.message
    # The same check on the same object once the operator has probed it.
    assert evaluate(wait_condition(cluster, namespace, "lab", "True", "Registered")).status == "Healthy"


def test_a_spec_change_the_operator_has_not_caught_up_with_is_progressing_then_healthy(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    manifest = pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    apply(cluster, token_secret(namespace, pve), manifest)
    before = wait_condition(cluster, namespace, "lab", "True", "Registered")
    assert before["metadata"]["generation"] == before["status"]["observedGeneration"] == 1

    # A spec change (an explicit insecureSkipVerify: false): the response is generation 2 with the status the
    # operator wrote for generation 1.
    changed = write(
        cluster,
        "apply",
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem, insecure=False),
    )
    assert changed["metadata"]["generation"] == 2
    assert changed["status"]["observedGeneration"] == 1
    assert condition(changed) == condition(before)
    health = evaluate(changed)
    assert health.status == "Progressing"
    assert "metadata.generation is 2, status.observedGeneration is 1" in health.message
    assert "last reported: Ready=True, Registered" in health.message

    def caught_up() -> dict[str, Any] | None:
        obj = get_pxc(cluster, namespace, "lab")
        cond = condition(obj)
        if obj and obj["status"].get("observedGeneration") == 2 and cond and cond.get("observedGeneration") == 2:
            return obj
        return None

    after = wait_for(caught_up, timeout=30, what="the operator to observe generation 2")
    assert evaluate(after).status == "Healthy"


def test_a_paused_resource_is_suspended(cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE) -> None:
    manifest = pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    manifest["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    apply(cluster, token_secret(namespace, pve), manifest)

    def first_status() -> dict[str, Any] | None:
        obj = get_pxc(cluster, namespace, "lab")
        return obj if condition(obj) is not None else None

    obj = wait_for(first_status, timeout=60, what="the operator's first status")
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    if "Paused" not in conditions and conditions["Ready"]["reason"] != "Paused":
        pytest.skip(f"this operator build ignores the {PAUSE_ANNOTATION} annotation (no Paused condition)")
    assert conditions["Paused"]["status"] == "True"
    health = evaluate(obj)
    assert health.status == "Suspended"
    assert f"kubectl annotate proxmoxcluster lab -n {namespace} {PAUSE_ANNOTATION}-" in health.message


def readme_install_command() -> str:
    """The kubectl installation command exactly as deploy/argocd/README.md documents it."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
    commands = [b for b in blocks if ARGOCD_CM_KEY in b and "kubectl apply" in b]
    assert len(commands) == 1, blocks
    return str(commands[0])


def test_the_documented_kubectl_installation_adds_the_key_and_keeps_the_rest(cluster: Cluster, namespace: str) -> None:
    # An argocd-cm as an Argo CD installation has it, owned by another field manager.
    existing_health = "hs = {}\nhs.status = 'Healthy'\nreturn hs\n"
    argocd_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
        },
        "data": {
            "url": "https://argocd.example.com",
            "resource.customizations.health.cert-manager.io_Certificate": existing_health,
        },
    }
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=argocd-install", "-f", "-", stdin=yaml.safe_dump(argocd_cm)
    )
    command = readme_install_command()
    assert "--namespace argocd" in command
    command = command.replace("--namespace argocd", f"--namespace {namespace}")
    env = {**cluster.env(), "PATH": f"{Path(kubectl_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for _ in range(2):  # installing again (an update of the script) is no conflict either
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    cm = cluster.kubectl_json("get", "configmap", "argocd-cm", "-n", namespace)
    assert cm["data"][ARGOCD_CM_KEY] == HEALTH_LUA.read_text()
    assert cm["data"]["url"] == "https://argocd.example.com"
    assert cm["data"]["resource.customizations.health.cert-manager.io_Certificate"] == existing_health
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    # The script as Argo CD reads it back from the ConfigMap is the one the other tests run.
    assert evaluate({}, script=cm["data"][ARGOCD_CM_KEY]).status == "Progressing"
