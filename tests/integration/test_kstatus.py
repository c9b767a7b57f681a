"""What Flux and kpt make of a ProxmoxCluster: kstatus' own verdict, computed by the kstatus library.

hack/kstatus is a small Go program around sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the function Flux's
health checks call; `make tools` builds it (hack/tools.sh kstatus), and these tests never build it. It reads what
`kubectl get -o json` prints. The objects are read back from the real kube-apiserver after the real operator wrote
their status, or are the API server's own response to a write (which carries no status, or the previous
generation's), so nothing here depends on timing.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from proxmox_operator.api.v1alpha1 import REASONS, Reason
from proxmox_operator.api.v1alpha1.conditions import ready_reasons
from proxmox_operator.controller.outcome import Outcome
from proxmox_operator.controller.status import next_status, probing_status
from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, register, secret_manifest
from tests.integration.kube import Cluster, condition, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE, TOKEN_ID, USER
from tests.support.tools import cached_tool

pytestmark = pytest.mark.integration

PAUSE_ANNOTATION = "proxmox-operator.dev/paused"


@pytest.fixture(scope="session")
def kstatus() -> str:
    return cached_tool("kstatus")


def verdicts(kstatus: str, obj: dict[str, Any]) -> list[dict[str, str]]:
    result = subprocess.run([kstatus], input=json.dumps(obj), capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def verdict(kstatus: str, obj: dict[str, Any]) -> dict[str, str]:
    (one,) = verdicts(kstatus, obj)
    return one


def live(cluster: Cluster, namespace: str, name: str = "lab") -> dict[str, Any]:
    """The object exactly as `kubectl get -o json` prints it."""
    obj: dict[str, Any] = cluster.kubectl_json("get", "pxc", name, "-n", namespace)
    return obj


def write(cluster: Cluster, verb: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The API server's response to creating or applying ``obj``."""
    args = ["create"] if verb == "create" else ["apply", "--server-side", "--field-manager=pytest"]
    stored: dict[str, Any] = json.loads(
        cluster.kubectl(*args, "-o", "json", "-f", "-", stdin=yaml.safe_dump(obj)).stdout
    )
    return stored


def token_secret(namespace: str, pve: PVE) -> dict[str, Any]:
    return secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret})


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that takes TCP connections (the kernel's backlog) and never answers: a probe hangs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


# --- the real operator's status ---------------------------------------------------------------------------------


def test_a_ready_cluster_is_current(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True", "Registered")
    assert verdict(kstatus, live(cluster, namespace)) == {
        "namespace": namespace,
        "name": "lab",
        "status": "Current",
        "message": "Resource is Ready",
    }


def test_a_wrong_password_fails_with_readys_message(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    apply(
        cluster,
        secret_manifest("creds", namespace, {"username": USER, "password": "not-the-password"}),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="creds", ca_pem=pve.ca_pem),
    )
    wait_condition(cluster, namespace, "lab", "True", "AuthenticationFailed", type_="Stalled")
    obj = live(cluster, namespace)
    ready = condition(obj)
    assert ready is not None and ready["reason"] == "AuthenticationFailed"
    found = verdict(kstatus, obj)
    assert found["status"] == "Failed"
    assert found["message"] == ready["message"]
    assert "authentication failure" in found["message"]


def test_a_missing_secret_fails(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    apply(cluster, pxc_manifest("lab", namespace, endpoint=pve.url, secret="nowhere", ca_pem=pve.ca_pem))
    wait_condition(cluster, namespace, "lab", "False", "SecretNotFound")
    found = verdict(kstatus, live(cluster, namespace))
    assert found["status"] == "Failed"
    assert "nowhere" in found["message"]


def test_a_paused_cluster_fails_with_the_pause_message(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    """Decided: a paused cluster does nothing until a user acts, so a pipeline waiting on it must not hang until
    its timeout, nor go on believing the cluster verified: Failed, with how to resume."""
    manifest = pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    manifest["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    apply(cluster, token_secret(namespace, pve), manifest)
    wait_condition(cluster, namespace, "lab", "True", "Paused", type_="Paused")
    found = verdict(kstatus, live(cluster, namespace))
    assert found["status"] == "Failed"
    assert found["message"] == f"probes are paused by the annotation {PAUSE_ANNOTATION}; remove it to resume"


def test_an_unreachable_cluster_is_in_progress_and_says_when_it_retries(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, closed_port: int, kstatus: str
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("lab", namespace, endpoint=f"https://127.0.0.1:{closed_port}", secret="token", ca_pem=pve.ca_pem),
    )
    wait_condition(cluster, namespace, "lab", "False", "Unreachable")
    obj = live(cluster, namespace)
    found = verdict(kstatus, obj)
    assert found["status"] == "InProgress"
    assert found["message"] == condition(obj, "Reconciling")["message"]  # type: ignore[index]
    assert "retrying with backoff" in found["message"]


def test_a_slow_first_probe_is_in_progress_not_current(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, silent_port: int, kstatus: str
) -> None:
    """An endpoint that never answers: the probe outlasts the first-probe grace, and the status says Probing."""
    slow = {"timeouts": {"connectSeconds": 60, "totalSeconds": 120}}
    endpoint = f"https://127.0.0.1:{silent_port}"
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("lab", namespace, endpoint=endpoint, secret="token", ca_pem=pve.ca_pem, extra=slow),
    )
    wait_condition(cluster, namespace, "lab", "Unknown", "Probing")
    obj = live(cluster, namespace)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    found = verdict(kstatus, obj)
    assert found["status"] == "InProgress"
    assert found["message"] == condition(obj, "Reconciling")["message"]  # type: ignore[index]


def test_an_object_without_status_is_current_to_kstatus(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    """The window the README documents: between the create and the operator's first look, kstatus has nothing
    to go by. The API server's response to the create is that object."""
    apply(cluster, token_secret(namespace, pve))
    created = write(
        cluster, "create", pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    )
    assert "status" not in created
    assert verdict(kstatus, created)["status"] == "Current"


def test_a_spec_change_not_yet_observed_is_in_progress_then_current(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    manifest = pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)
    apply(cluster, token_secret(namespace, pve), manifest)
    wait_condition(cluster, namespace, "lab", "True", "Registered")
    # The response to a spec change: generation 2 with the status written for generation 1.
    changed = write(
        cluster,
        "apply",
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem, insecure=False),
    )
    assert (changed["metadata"]["generation"], changed["status"]["observedGeneration"]) == (2, 1)
    found = verdict(kstatus, changed)
    assert found["status"] == "InProgress"
    assert found["message"] == "ProxmoxCluster generation is 2, but latest observed generation is 1"

    def caught_up() -> dict[str, Any] | None:
        obj = get_pxc(cluster, namespace, "lab")
        ready = condition(obj)
        return obj if obj and ready and ready["status"] == "True" and ready["observedGeneration"] == 2 else None

    wait_for(caught_up, timeout=30, what="the operator to observe generation 2")
    assert verdict(kstatus, live(cluster, namespace))["status"] == "Current"


def test_a_list_gets_one_verdict_per_object(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, kstatus: str
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("good", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem),
        pxc_manifest("bad", namespace, endpoint=pve.url, secret="nowhere", ca_pem=pve.ca_pem),
    )
    wait_condition(cluster, namespace, "good", "True", "Registered")
    wait_condition(cluster, namespace, "bad", "False", "SecretNotFound")
    listed = cluster.kubectl_json("get", "pxc", "-n", namespace)
    assert {v["name"]: v["status"] for v in verdicts(kstatus, listed)} == {"bad": "Failed", "good": "Current"}


# --- every reason, as the status functions write it ----------------------------------------------------------------

AT = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def as_object(status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"name": "lab", "namespace": "team-a", "generation": generation},
        "status": status,
    }


@pytest.mark.parametrize("reason", [r for r in ready_reasons() if r is not Reason.PROBING])
def test_every_ready_reason_gets_the_verdict_the_readme_gives(reason: Reason, kstatus: str) -> None:
    outcome = Outcome(ready=reason is Reason.REGISTERED, reason=reason, message=f"{reason} happened")
    status = next_status(None, outcome, generation=1, at=AT, interval=60).model_dump(by_alias=True, mode="json")
    found = verdict(kstatus, as_object(status))
    doc = REASONS[reason]
    expected = "Current" if outcome.ready else "Failed" if doc.stalled else "InProgress"
    assert found["status"] == expected
    if not outcome.ready:
        assert found["message"].startswith(f"{reason} happened")


def test_probing_gets_in_progress(kstatus: str) -> None:
    status = probing_status(None, generation=1, at=AT).model_dump(by_alias=True, mode="json")
    found = verdict(kstatus, as_object(status))
    assert found["status"] == "InProgress"
    assert "first probe" in found["message"]
