"""Connectivity as the operator does it, on the real API server against a three-node simulated cluster:
failover between endpoints and back, discovery, fingerprint pinning."""

from __future__ import annotations

import pytest

from tests.integration.conftest import OperatorProcess, apply, pxc_manifest, register, secret_manifest
from tests.integration.kube import Cluster, condition, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE, TOKEN_ID, USER

pytestmark = pytest.mark.integration

FAST = {"healthCheck": {"intervalSeconds": 10}}


def active(cluster: Cluster, namespace: str, url: str) -> bool:
    obj = get_pxc(cluster, namespace, "lab")
    cond = condition(obj)
    return bool(obj and cond and cond["status"] == "True" and obj["status"].get("activeEndpoint") == url)


def test_failover_when_the_active_node_stops_and_return_when_it_is_back(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    first, second, third = (pve.node_url(n) for n in pve.nodes)
    apply(
        cluster,
        secret_manifest("token", namespace, {"tokenId": TOKEN_ID, "tokenSecret": pve.token_secret}),
        pxc_manifest("lab", namespace, secret="token", ca_pem=pve.ca_pem, extra={**FAST, "endpoints": [first, second]}),
    )
    obj = wait_condition(cluster, namespace, "lab", "True")
    assert obj["status"]["activeEndpoint"] == first
    assert obj["status"]["endpoints"] == [third], "discovered: the node that is not configured"
    pve.set_listening("pve1", False)
    wait_for(lambda: active(cluster, namespace, second), timeout=30, what="failover to the second node")
    pve.set_listening("pve1", True)
    wait_for(lambda: active(cluster, namespace, first), timeout=30, what="return to the first node")


def test_a_discovered_node_takes_over_when_the_only_configured_one_stops(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    register(cluster, namespace, pve, extra=FAST)
    obj = wait_condition(cluster, namespace, "lab", "True")
    assert obj["status"]["endpoints"] == [pve.node_url("pve2"), pve.node_url("pve3")]
    assert all(u.startswith("https://127.") for u in obj["status"]["endpoints"]), "loopback only"
    pve.set_listening("pve1", False)
    wait_for(lambda: active(cluster, namespace, pve.node_url("pve2")), timeout=30, what="the discovered node")


def test_fingerprint_pinning_without_a_ca(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    pin = pve.server.presented_fingerprint("pve1")
    apply(
        cluster,
        secret_manifest("creds", namespace, {"username": USER, "password": pve.password}),
        pxc_manifest(
            "lab",
            namespace,
            endpoint=pve.url,
            secret="creds",
            extra={"discoverEndpoints": False, "tls": {"fingerprints": [pin]}},
        ),
    )
    obj = wait_condition(cluster, namespace, "lab", "True")
    assert condition(obj, "TLSVerified")["status"] == "True"  # type: ignore[index]


def test_a_wrong_fingerprint_is_tls_error_and_no_credentials_are_sent(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        secret_manifest("creds", namespace, {"username": USER, "password": pve.password}),
        pxc_manifest(
            "lab",
            namespace,
            endpoint=pve.url,
            secret="creds",
            extra={"discoverEndpoints": False, "tls": {"fingerprints": [":".join(["AB"] * 32)]}},
        ),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "TLSError")
    assert "spec.tls.fingerprints" in condition(obj)["message"]  # type: ignore[index]
    assert condition(obj, "TLSVerified")["status"] == "False"  # type: ignore[index]
    assert pve.server.counters.login_attempts == 0 and pve.server.counters.total == 0, "nothing reached the API"
