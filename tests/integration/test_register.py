"""Registering Proxmox VE clusters with `kubectl apply`: the walking skeleton, end to end.

Real kube-apiserver, the real operator process (with the RBAC of deploy/rbac.yaml), real HTTPS to the PVE
simulator. Waits are liveness bounds, not speed measurements: the operator runs with a retry backoff of minutes,
so anything that recovers within these bounds did so because the operator noticed the change.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, register, secret_manifest
from tests.integration.kube import Cluster, condition, events, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE, TOKEN_ID, USER

pytestmark = pytest.mark.integration

FINALIZER = "proxmox-operator.dev/finalizer"


def test_password_login_goes_ready_with_version_and_node_count(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        secret_manifest("creds", namespace, {"username": USER, "password": pve.password}),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="creds", ca_pem=pve.ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered")
    status = obj["status"]
    assert status["version"]["version"] == pve.version
    assert status["version"]["release"] == pve.release
    assert status["nodeCount"] == len(pve.nodes)
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["lastProbeTime"]
    cond = condition(obj)
    assert cond is not None and cond["observedGeneration"] == obj["metadata"]["generation"]
    assert "password" in cond["message"] and pve.version in cond["message"]
    # The operator adds only its finalizer to the user's object: no kopf annotations, spec untouched.
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    assert not [a for a in obj["metadata"].get("annotations", {}) if "kopf" in a or "proxmox-operator" in a]
    assert obj["spec"] == pxc_manifest("lab", namespace, endpoint=pve.url, secret="creds", ca_pem=pve.ca_pem)["spec"]
    assert pve.logins() >= 1
    registered = [e for e in events(cluster, namespace) if e["reason"] == "Registered"]
    assert len(registered) == 1 and registered[0]["type"] == "Normal"


def test_api_token_goes_ready(cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE) -> None:
    register(cluster, namespace, pve)
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered")
    assert obj["status"]["nodeCount"] == len(pve.nodes)
    assert "(token)" in condition(obj)["message"]  # type: ignore[index]
    assert pve.logins() == 0, "an API token needs no ticket"


def test_wrong_password_is_authentication_failed_and_the_operator_survives(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        secret_manifest("creds", namespace, {"username": USER, "password": "not-the-password"}),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="creds", ca_pem=pve.ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "AuthenticationFailed")
    cond = condition(obj)
    assert cond is not None and "authentication failure" in cond["message"] and pve.url in cond["message"]
    assert "version" not in obj["status"] or obj["status"]["version"] is None
    warnings = [e for e in events(cluster, namespace) if e["reason"] == "AuthenticationFailed"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert operator.alive()
    # Fixing the password in the Secret is noticed without waiting for a retry.
    apply(cluster, secret_manifest("creds", namespace, {"username": USER, "password": pve.password}))
    wait_condition(cluster, namespace, "lab", "True", "Registered", timeout=30)
    assert any(e["reason"] == "Recovered" for e in events(cluster, namespace))


def test_missing_secret_then_created_goes_ready_within_seconds(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(cluster, pxc_manifest("lab", namespace, endpoint=pve.url, secret="later", ca_pem=pve.ca_pem))
    obj = wait_condition(cluster, namespace, "lab", "False", "SecretNotFound")
    assert "later" in condition(obj)["message"]  # type: ignore[index]
    apply(cluster, secret_manifest("later", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}))
    wait_condition(cluster, namespace, "lab", "True", "Registered", timeout=20)


def test_secret_with_two_pairs_is_secret_invalid(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    both = {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret, "username": USER, "password": pve.password}
    apply(
        cluster,
        secret_manifest("both", namespace, both),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="both", ca_pem=pve.ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "SecretInvalid")
    assert "exactly one pair" in condition(obj)["message"]  # type: ignore[index]


def test_tls_is_verified_by_default_and_insecure_mode_works(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    secret = secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret})
    # No caBundle: the simulator's CA is not a system CA, so verification fails and nothing is sent.
    apply(cluster, secret, pxc_manifest("lab", namespace, endpoint=pve.url, secret="token"))
    obj = wait_condition(cluster, namespace, "lab", "False", "TLSError")
    assert "caBundle" in condition(obj)["message"]  # type: ignore[index]
    # A spec edit is picked up at once, and observedGeneration follows it.
    apply(cluster, pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", insecure=True))
    obj = wait_condition(cluster, namespace, "lab", "True", "Registered", timeout=30)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2


def test_wrong_ca_bundle_is_tls_error(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, other_ca_pem: str
) -> None:
    apply(
        cluster,
        secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=other_ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "TLSError")
    assert "does not match" in condition(obj)["message"]  # type: ignore[index]


def test_nothing_listening_is_unreachable(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, closed_port: int
) -> None:
    apply(
        cluster,
        secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}),
        pxc_manifest("lab", namespace, endpoint=f"https://127.0.0.1:{closed_port}", secret="token", ca_pem=pve.ca_pem),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "Unreachable")
    assert "Connection refused" in condition(obj)["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"endpoint": "http://127.0.0.1:8006", "credentialsRef": {"name": "x"}}, "endpoint"),
        ({"endpoint": "https://", "credentialsRef": {"name": "x"}}, "endpoint"),
        ({"endpoint": "https://127.0.0.1:8006"}, "credentialsRef"),
        ({"endpoint": "https://127.0.0.1:8006", "credentialsRef": {"name": "Not_A_Name"}}, "credentialsRef.name"),
        (
            {"endpoint": "https://127.0.0.1:8006", "credentialsRef": {"name": "x"}, "tls": {"caBundle": "hello"}},
            "caBundle",
        ),
        (
            {"endpoint": "https://127.0.0.1:8006", "credentialsRef": {"name": "x"}, "tls": {"fingerprints": ["AA:BB"]}},
            "fingerprints",
        ),
        (
            {"endpoint": "https://a:8006", "endpoints": ["https://b:8006"], "credentialsRef": {"name": "x"}},
            "exactly one of endpoint or endpoints",
        ),
        ({"endpoints": ["https://a:8006", "http://b:8006"], "credentialsRef": {"name": "x"}}, "endpoints"),
        # Userinfo would put a password into status, Events and logs; a query or fragment has no place either.
        ({"endpoint": "https://root:pw@127.0.0.1:8006", "credentialsRef": {"name": "x"}}, "endpoint"),
        ({"endpoints": ["https://u@127.0.0.1:8006"], "credentialsRef": {"name": "x"}}, "endpoints"),
        ({"endpoint": "https://127.0.0.1:8006/?a=b", "credentialsRef": {"name": "x"}}, "endpoint"),
        ({"endpoint": "https://127.0.0.1:8006#frag", "credentialsRef": {"name": "x"}}, "endpoint"),
        ({"endpoint": "https://127.0.0.1:70000", "credentialsRef": {"name": "x"}}, "endpoint"),
        ({"endpoints": ["https://127.0.0.1:99999"], "credentialsRef": {"name": "x"}}, "endpoints"),
        ({"endpoint": "https://127.0.0.1:0", "credentialsRef": {"name": "x"}}, "endpoint"),
        (
            {
                "endpoint": "https://127.0.0.1:8006",
                "credentialsRef": {"name": "x"},
                "tls": {"insecureSkipVerify": True, "caBundle": "-----BEGIN CERTIFICATE-----\nx"},
            },
            "insecureSkipVerify",
        ),
        (
            {
                "endpoint": "https://127.0.0.1:8006",
                "credentialsRef": {"name": "x"},
                "tls": {"insecureSkipVerify": True, "caBundleRef": {"kind": "ConfigMap", "name": "ca"}},
            },
            "insecureSkipVerify",
        ),
        (
            {
                "endpoint": "https://127.0.0.1:8006",
                "credentialsRef": {"name": "x"},
                "tls": {"insecureSkipVerify": True, "fingerprints": [":".join(["AB"] * 32)]},
            },
            "insecureSkipVerify",
        ),
        (
            {
                "endpoint": "https://127.0.0.1:8006",
                "credentialsRef": {"name": "x"},
                "healthCheck": {"intervalSeconds": 5},
            },
            "intervalSeconds",
        ),
    ],
)
def test_invalid_specs_are_rejected_at_admission(
    cluster: Cluster, crd: str, namespace: str, spec: dict[str, Any], complaint: str
) -> None:
    obj = {
        "apiVersion": "proxmox-operator.dev/v1alpha1",
        "kind": "ProxmoxCluster",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": spec,
    }
    result = apply(cluster, obj, check=False)
    assert result.returncode != 0
    assert "Invalid value" in result.stderr or "Required value" in result.stderr, result.stderr
    assert complaint in result.stderr
    assert cluster.kubectl("get", "pxc", "bad", "-n", namespace, check=False).returncode != 0


def test_delete_removes_finalizer_and_object(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True")
    cluster.kubectl("delete", "pxc", "lab", "-n", namespace, "--wait=true", "--timeout=30s")
    assert get_pxc(cluster, namespace, "lab") is None
    wait_for(
        lambda: any(e["reason"] == "Deregistered" for e in events(cluster, namespace)),
        timeout=15,
        what="a Deregistered event",
    )


def test_delete_completes_with_proxmox_down_and_secret_gone(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True")
    pve.stop()
    cluster.kubectl("delete", "secret", "token", "-n", namespace)
    cluster.kubectl("delete", "pxc", "lab", "-n", namespace, "--wait=true", "--timeout=30s")
    assert get_pxc(cluster, namespace, "lab") is None


def test_kubectl_get_shows_the_columns(cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE) -> None:
    register(cluster, namespace, pve)
    wait_condition(cluster, namespace, "lab", "True")
    plain = cluster.kubectl("get", "pxc", "-n", namespace).stdout.splitlines()
    assert plain[0].split() == ["NAME", "ENDPOINT", "VERSION", "NODES", "QUORATE", "READY", "AGE"]
    row = plain[1].split()
    nodes = len(pve.nodes)
    assert row[:6] == ["lab", pve.url, pve.version, f"{nodes}/{nodes}", "true", "True"]
    wide = cluster.kubectl("get", "proxmoxclusters", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "ENDPOINT", "VERSION", "NODES", "QUORATE", "READY", "REASON", "AGE"]
    assert wide[1].split()[6] == "Registered"
    # The category works too.
    assert "lab" in cluster.kubectl("get", "proxmox", "-n", namespace).stdout


def test_kubectl_explain_documents_every_spec_field(cluster: Cluster, crd: str) -> None:
    out = cluster.kubectl("explain", "proxmoxcluster.spec", "--recursive").stdout
    for field in ("endpoint", "credentialsRef", "name", "tls", "caBundle", "insecureSkipVerify"):
        assert field in out
    described = cluster.kubectl("explain", "proxmoxcluster.spec.tls.insecureSkipVerify").stdout
    assert "Default false" in described


def test_canary_credentials_never_leak(cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE) -> None:
    """A canary password and token secret never appear in status, Events or the operator's debug log."""
    wrong = f"canary-wrong-{pve.password[-6:]}"
    apply(
        cluster,
        secret_manifest("good", namespace, {"username": USER, "password": pve.password}),
        secret_manifest("bad", namespace, {"username": USER, "password": wrong}),
        secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}),
        pxc_manifest("good", namespace, endpoint=pve.url, secret="good", ca_pem=pve.ca_pem),
        pxc_manifest("bad", namespace, endpoint=pve.url, secret="bad", ca_pem=pve.ca_pem),
        pxc_manifest("token", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem),
    )
    wait_condition(cluster, namespace, "good", "True")
    wait_condition(cluster, namespace, "token", "True")
    wait_condition(cluster, namespace, "bad", "False", "AuthenticationFailed")
    canaries = [pve.password, wrong, pve.token_secret]
    exposed = {
        "status": json.dumps(cluster.kubectl_json("get", "pxc", "-n", namespace)),
        "events": json.dumps(events(cluster, namespace)),
        "operator log": operator.log(),
    }
    for where, text in exposed.items():
        for canary in canaries:
            assert canary not in text, f"a credential leaked into the {where}"
        assert "PVE:root@pam:" not in text, f"a ticket leaked into the {where}"
        assert "PVEAuthCookie" not in text and "CSRFPreventionToken" not in text, where
