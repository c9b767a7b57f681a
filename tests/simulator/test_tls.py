"""TLS like PVE: a cluster CA, node certificates signed by it, fingerprints, HTTPS only."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import ssl
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pve_simulator import SimulatorServer, client_ssl_context
from pve_simulator.certs import CA_CERT_FILE
from tests.simulator.support import CI_SECRET, StartSim, client_for, ssl_context_without_ca, token_header


async def _served_certificate(sim: SimulatorServer) -> bytes:
    context = client_ssl_context(sim.ca_path)
    _, writer = await asyncio.open_connection(sim.host, sim.port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        writer.close()
        await writer.wait_closed()
    assert isinstance(der, bytes)
    return der


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


async def test_https_verifies_against_the_cluster_ca(sim: SimulatorServer) -> None:
    async with client_for(sim) as http:
        response = await http.get("/version", headers=token_header("root@pam!ci", CI_SECRET))
    assert response.status_code == 200
    assert sim.url.startswith("https://127.0.0.1:")
    assert sim.ca_path == sim.cert_dir / CA_CERT_FILE
    assert sim.ca_pem == sim.ca_path.read_text()


async def test_https_fails_without_the_ca(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient(verify=ssl_context_without_ca()) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"{sim.url}/api2/json/version")


async def test_plain_http_is_not_served(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"http://{sim.host}:{sim.port}/api2/json/version")


async def _handshake(sim: SimulatorServer, context: ssl.SSLContext) -> str:
    _, writer = await asyncio.open_connection(sim.host, sim.port, ssl=context)
    try:
        version = writer.get_extra_info("ssl_object").version()
    finally:
        writer.close()
    assert isinstance(version, str)
    return version


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_1_2_and_newer_only(sim: SimulatorServer) -> None:
    tls12 = client_ssl_context(sim.ca_path)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await _handshake(sim, tls12) == "TLSv1.2"
    assert await _handshake(sim, client_ssl_context(sim.ca_path)) == "TLSv1.3"

    old = client_ssl_context(sim.ca_path)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.0/1.1 where OpenSSL still can
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(sim, old)


async def test_fingerprints_are_the_sha256_of_the_certificate_der(sim: SimulatorServer) -> None:
    served = await _served_certificate(sim)
    expected_local = _colon_hex(hashlib.sha256(served).digest())
    assert sim.fingerprints["pve1"] == expected_local

    for name in ("pve2", "pve3"):
        pem = (sim.cert_dir / "nodes" / name / "pve-ssl.pem").read_bytes()
        der = ssl.PEM_cert_to_DER_cert(pem.decode())
        assert sim.fingerprints[name] == _colon_hex(hashlib.sha256(der).digest())

    async with client_for(sim) as http:
        response = await http.get("/nodes", headers=token_header("root@pam!ci", CI_SECRET))
    reported = {entry["node"]: entry["ssl_fingerprint"] for entry in response.json()["data"]}
    assert reported == sim.fingerprints
    assert all(fp == fp.upper() and len(fp.split(":")) == 32 for fp in reported.values())


def test_certificates_look_like_pve_generated_them(sim: SimulatorServer) -> None:
    ca = x509.load_pem_x509_certificate(sim.ca_path.read_bytes())
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Proxmox Virtual Environment"
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "PVE Cluster Manager CA"
    uuid.UUID(str(ca.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value))
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert ca_key.key_size == 4096
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    assert ca_days == 3650

    node = sim.node_certs["pve2"].cert
    assert node.issuer == ca.subject
    node_key = node.public_key()
    assert isinstance(node_key, rsa.RSAPublicKey)
    assert node_key.key_size == 2048
    assert (node.not_valid_after_utc - node.not_valid_before_utc) <= dt.timedelta(days=2 * 365)
    assert node.not_valid_before_utc < dt.datetime.now(dt.UTC)
    assert node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pve2"
    assert node.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "PVE Cluster Node"
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address(sim.cluster.node("pve2").ip),
    }
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "pve2"}
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


async def test_node_ips_are_loopback(sim: SimulatorServer) -> None:
    ips = [ipaddress.ip_address(node.ip) for node in sim.cluster]
    assert [str(ip) for ip in ips] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert all(ip.is_loopback for ip in ips)


async def test_cert_dir_is_reused(start_sim: StartSim, cert_dir: Path) -> None:
    async with start_sim() as first:
        ca_pem, fingerprints = first.ca_pem, first.fingerprints
    async with start_sim() as second:
        assert second.ca_pem == ca_pem
        assert second.fingerprints == fingerprints
        assert second.cert_dir == cert_dir


async def test_domain_puts_the_fqdn_into_the_certificate(start_sim: StartSim) -> None:
    nodes = [{"name": "dom1"}]
    async with start_sim(cluster_name=None, nodes=nodes, domain="example.test") as sim:
        cert = sim.node_certs["dom1"].cert
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dom1.example.test"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "dom1.example.test" in sans.get_values_for_type(x509.DNSName)


async def test_temporary_cert_dir_without_configured_one(start_sim: StartSim, tmp_path: Path) -> None:
    # A fresh directory: the CA is generated (slow part), then removed again with the simulator.
    async with start_sim(cert_dir=None, nodes=[{"name": "tmp1"}], cluster_name=None) as sim:
        directory = sim.cert_dir
        assert (directory / CA_CERT_FILE).is_file()
        async with client_for(sim) as http:
            assert (await http.get("/version")).status_code == 401
    assert not directory.exists()
