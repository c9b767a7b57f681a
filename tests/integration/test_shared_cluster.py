"""A shared cluster: whoever may create a ProxmoxCluster is not trusted with Secrets it cannot read, and status is
not trusted input. On the real API server, with the real operator, against the simulator over real HTTPS."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from proxmox_operator.api.v1alpha1 import ProxmoxClusterSpec
from proxmox_operator.controller.sources import discovery_basis
from proxmox_operator.proxmox import AllowedHosts, TokenCredentials, TrustConfig
from tests.integration.conftest import CREDENTIALS_LABEL, OperatorProcess, apply, pxc_manifest, token_secret
from tests.integration.kube import Cluster, condition, events, get_pxc, wait_condition, wait_for
from tests.integration.pve import PVE, TOKEN_ID

pytestmark = pytest.mark.integration

ALLOWED_HOSTS = "proxmox-operator.dev/allowed-hosts"
PAUSED = "proxmox-operator.dev/paused"
FAST = {"healthCheck": {"intervalSeconds": 10}}


def requests_to(pve: PVE, node: str) -> int:
    return pve.server.node_counters(node).total


def all_requests(pve: PVE) -> int:
    return sum(requests_to(pve, n) for n in pve.nodes)


def test_an_unlabelled_secret_is_never_used_and_the_message_says_how_to_opt_in(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    secret = token_secret(namespace, pve)
    del secret["metadata"]["labels"]
    apply(cluster, secret, pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem))
    obj = wait_condition(cluster, namespace, "lab", "False", "SecretNotLabeled")
    message = condition(obj)["message"]  # type: ignore[index]
    assert f"kubectl label secret token -n {namespace} {CREDENTIALS_LABEL}=true" in message
    # Nothing about the Secret's content: not its keys, not its values.
    for revealing in ("tokenId", "tokenSecret", TOKEN_ID, pve.token_secret):
        assert revealing not in json.dumps(obj["status"])
    assert condition(obj, "Authenticated")["reason"] == "SecretNotLabeled"  # type: ignore[index]
    assert "SecretNotLabeled" in [e["reason"] for e in events(cluster, namespace)]
    assert all_requests(pve) == 0, "no credentials went anywhere"
    # The owner opts in: the label-selected watch sees the Secret appear and wakes the resource at once.
    cluster.kubectl("label", "secret", "token", "-n", namespace, f"{CREDENTIALS_LABEL}=true")
    wait_condition(cluster, namespace, "lab", "True", timeout=30)


def test_removing_the_label_withdraws_the_credentials(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem),
    )
    wait_condition(cluster, namespace, "lab", "True")
    cluster.kubectl("label", "secret", "token", "-n", namespace, f"{CREDENTIALS_LABEL}-")
    wait_condition(cluster, namespace, "lab", "False", "SecretNotLabeled", timeout=30)


def test_the_secret_watch_never_streams_unlabelled_secrets(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    unlabelled = f"unlabelled-{secrets.token_hex(4)}"
    labelled = f"labelled-{secrets.token_hex(4)}"
    cluster.kubectl("create", "secret", "generic", unlabelled, "-n", namespace, "--from-literal=a=b")
    cluster.kubectl("create", "secret", "generic", labelled, "-n", namespace, "--from-literal=a=b")
    cluster.kubectl("label", "secret", labelled, "-n", namespace, f"{CREDENTIALS_LABEL}=true")
    # kopf logs every event it handles, with the object's namespace/name (debug logging is on).
    wait_for(lambda: f"{namespace}/{labelled}" in operator.log(), timeout=30, what="the labelled Secret's event")
    cluster.kubectl("label", "secret", unlabelled, "-n", namespace, "unrelated=change")
    cluster.kubectl("annotate", "secret", labelled, "-n", namespace, "touched=yes")
    wait_for(lambda: operator.log().count(f"{namespace}/{labelled}") > 1, timeout=30, what="the second event")
    assert unlabelled not in operator.log()


def test_credentials_go_only_to_hosts_the_secret_allows(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    secret = token_secret(namespace, pve)
    secret["metadata"]["annotations"] = {ALLOWED_HOSTS: "pve*.example.com:8006, 10.0.0.*"}
    apply(
        cluster,
        secret,
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem, extra=FAST),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "HostNotAllowed")
    assert pve.url in condition(obj)["message"]  # type: ignore[index]
    assert pve.token_secret not in json.dumps(obj) + operator.log()
    assert all_requests(pve) == 0, "no connection carrying credentials was made"
    # The owner allows the simulator's first node only: registered, and the discovered nodes are never used.
    host = pve.node_url("pve1").removeprefix("https://")
    cluster.kubectl("annotate", "--overwrite", "secret", "token", "-n", namespace, f"{ALLOWED_HOSTS}={host}")
    obj = wait_condition(cluster, namespace, "lab", "True", timeout=30)
    assert obj["status"].get("endpoints") == []
    pve.set_listening("pve1", False)
    try:
        wait_condition(cluster, namespace, "lab", "False", "Unreachable", timeout=60)
        assert requests_to(pve, "pve2") == requests_to(pve, "pve3") == 0
    finally:
        pve.set_listening("pve1", True)


def test_an_invalid_allow_list_is_a_clear_condition(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    secret = token_secret(namespace, pve)
    secret["metadata"]["annotations"] = {ALLOWED_HOSTS: "pve1.example.com, bad/host"}
    apply(cluster, secret, pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem))
    obj = wait_condition(cluster, namespace, "lab", "False", "AllowedHostsInvalid")
    assert "bad/host" in condition(obj)["message"]  # type: ignore[index]
    assert all_requests(pve) == 0


def _paused_with_status(cluster: Cluster, namespace: str, pve: PVE, status: dict[str, object]) -> None:
    """A paused resource (nothing probes it), whose status an intruder then rewrites, and pve1 stopped."""
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest(
            "lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem, annotations={PAUSED: "true"}
        ),
    )
    wait_condition(cluster, namespace, "lab", "False", "Paused")
    patch = json.dumps({"status": status})
    cluster.kubectl("patch", "pxc", "lab", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    pve.set_listening("pve1", False)


def _resume(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("annotate", "pxc", "lab", "-n", namespace, f"{PAUSED}-")


def _basis(namespace: str, pve: PVE) -> str:
    spec = ProxmoxClusterSpec.model_validate(
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", ca_pem=pve.ca_pem)["spec"]
    )
    creds = TokenCredentials(TOKEN_ID, pve.token_secret)
    allowed: AllowedHosts | None = None
    return discovery_basis(spec, TrustConfig.build(ca_bundle=pve.ca_pem), namespace, creds, allowed)


@pytest.mark.parametrize("case", ["other-settings", "plain-http"])
def test_endpoints_written_into_status_by_someone_else_are_not_used(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE, case: str
) -> None:
    second = pve.node_url("pve2")
    if case == "other-settings":
        # A real node, but recorded for other endpoints, trust or credentials: discarded.
        status = {"endpoints": [second], "endpointsFor": "0123456789abcdef"}
    else:
        # The right digest, but not https: discarded by the client's own check.
        status = {"endpoints": [second.replace("https://", "http://")], "endpointsFor": _basis(namespace, pve)}
    try:
        _paused_with_status(cluster, namespace, pve, status)
        _resume(cluster, namespace)
        wait_condition(cluster, namespace, "lab", "False", "Unreachable", timeout=30)
        time.sleep(1)  # a wrong failover would follow the first failure at once
        assert requests_to(pve, "pve2") == 0
    finally:
        pve.set_listening("pve1", True)


def test_endpoints_the_operator_discovered_still_survive_a_restart(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    """The control for the test above: the same status with the operator's own digest is used."""
    status = {"endpoints": [pve.node_url("pve2")], "endpointsFor": _basis(namespace, pve)}
    try:
        _paused_with_status(cluster, namespace, pve, status)
        _resume(cluster, namespace)
        obj = wait_condition(cluster, namespace, "lab", "True", timeout=30)
        assert obj["status"]["activeEndpoint"] == pve.node_url("pve2")
    finally:
        pve.set_listening("pve1", True)


def test_discovered_endpoints_are_never_used_with_insecure_skip_verify(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    apply(
        cluster,
        token_secret(namespace, pve),
        pxc_manifest("lab", namespace, endpoint=pve.url, secret="token", insecure=True, extra=FAST),
    )
    obj = wait_condition(cluster, namespace, "lab", "True")
    assert not obj["status"].get("endpoints")
    pve.set_listening("pve1", False)
    try:
        wait_condition(cluster, namespace, "lab", "False", "Unreachable", timeout=60)
        assert requests_to(pve, "pve2") == requests_to(pve, "pve3") == 0
    finally:
        pve.set_listening("pve1", True)
    assert get_pxc(cluster, namespace, "lab") is not None


def test_an_oversized_ca_bundle_ref_is_refused(
    cluster: Cluster, operator: OperatorProcess, namespace: str, pve: PVE
) -> None:
    """caBundle is capped at 64 KiB by the schema; a caBundleRef gets the same cap from the operator."""
    big = pve.ca_pem + "\n" + "#" * (65 * 1024)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ca", "namespace": namespace},
        "data": {"ca.crt": big},
    }
    apply(
        cluster,
        configmap,
        token_secret(namespace, pve),
        pxc_manifest(
            "lab",
            namespace,
            endpoint=pve.url,
            secret="token",
            extra={"tls": {"caBundleRef": {"kind": "ConfigMap", "name": "ca"}}},
        ),
    )
    obj = wait_condition(cluster, namespace, "lab", "False", "TLSConfigInvalid")
    assert "64 KiB" in condition(obj)["message"]  # type: ignore[index]
    assert all_requests(pve) == 0
