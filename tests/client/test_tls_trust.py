"""spec.tls.caBundle replaces the system CAs exactly, and the certificate must name the host that was dialled."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from proxmox_operator.proxmox import ProxmoxClient, TrustConfig, errors
from proxmox_operator.proxmox.tls import ssl_context
from pve_simulator import SimulatorServer
from tests.client.conftest import TOKEN
from tests.support.certs import Authority
from tests.support.hostile import PVE_VERSION, HostileServer, json_data


@pytest.mark.usefixtures("fresh_tls_contexts")
def test_a_one_ca_bundle_trusts_exactly_one_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_text(Authority("Environment CA").pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(other))  # honoured by the system store, which must not be loaded
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    bundle = Authority("Cluster CA")
    cas = ssl_context(TrustConfig(ca_bundle=bundle.pem)).get_ca_certs()
    assert len(cas) == 1
    assert (("commonName", "Cluster CA"),) in cas[0]["subject"]


@pytest.mark.usefixtures("fresh_tls_contexts")
def test_a_bundle_context_checks_hostnames_and_chains() -> None:
    ctx = ssl_context(TrustConfig(ca_bundle=Authority().pem))
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.usefixtures("fresh_tls_contexts")
async def test_the_environment_does_not_add_trust_to_a_ca_bundle(
    cluster: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cluster.ca_path))  # the cluster's CA, trusted only by the environment
    trust = TrustConfig(ca_bundle=Authority("Some other CA").pem)
    async with ProxmoxClient(cluster.node_url("pve1"), credentials=TOKEN, trust=trust) as c:
        with pytest.raises(errors.TLSError, match="failed verification"):
            await c.version()
    assert cluster.counters.total == 0, "nothing reached the API"


async def test_a_certificate_of_the_cluster_ca_for_another_host_is_refused(cluster: SimulatorServer) -> None:
    """pve1's certificate names 127.0.0.1, ::1, localhost, pve1: presented on 127.0.0.77 it must not pass."""
    pve1 = cluster.node_certs["pve1"]
    pair = (pve1.cert_path.read_bytes(), pve1.key_path.read_bytes())
    trust = TrustConfig(ca_bundle=cluster.ca_pem)
    async with HostileServer("127.0.0.77", cert=pair) as impostor:
        impostor.set("/api2/json/version", json_data(PVE_VERSION))
        async with ProxmoxClient(impostor.url, credentials=TOKEN, trust=trust) as c:
            with pytest.raises(errors.TLSError, match=r"127\.0\.0\.77") as info:
                await c.version()
        assert impostor.connections >= 1, "the client did connect: the certificate check refused it"
        assert impostor.requests == [], "no HTTP request (and so no token) reached the impostor"
    assert TOKEN.secret not in str(info.value)
    # The same certificate on an address it names is accepted: the refusal above was the hostname check.
    async with HostileServer("127.0.0.1", cert=pair) as genuine:
        genuine.set("/api2/json/version", json_data(PVE_VERSION))
        async with ProxmoxClient(genuine.url, credentials=TOKEN, trust=trust) as c:
            assert (await c.version()).version == "8.4.1"
