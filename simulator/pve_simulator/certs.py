"""Cluster CA and node certificates, generated the way pve-cluster generates them.

pve-cluster ``src/PVE/Cluster/Setup.pm``:

* ``gen_pveca_key``/``gen_pveca_cert``: RSA 4096 CA key, self-signed for 3650 days with the subject
  ``/CN=Proxmox Virtual Environment/OU=<random uuid>/O=PVE Cluster Manager CA/`` and
  ``keyUsage=critical,keyCertSign,cRLSign`` (plus OpenSSL's default ``v3_ca`` extensions:
  ``basicConstraints=critical,CA:true`` and key identifiers), backdated one day (``faketime
  yesterday``);
* ``gen_pve_ssl_key``/``gen_pve_ssl_cert``: RSA 2048 node key; certificate subject
  ``/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN=<fqdn>``, ``basicConstraints=CA:FALSE``,
  ``extendedKeyUsage=serverAuth``, SAN ``IP:127.0.0.1, IP:::1, DNS:localhost, IP:<node ip>,
  DNS:<node name>`` (and ``DNS:<fqdn>`` with a search domain), valid for the CA's remaining lifetime
  minus two days but at most two years, backdated one day, serial from the CA serial file.

Files mirror ``/etc/pve``: ``pve-root-ca.pem``, ``priv/pve-root-ca.key``, ``priv/pve-root-ca.srl`` and
``nodes/<node>/pve-ssl.pem`` + ``nodes/<node>/pve-ssl.key``.  Existing files are reused (generating an
RSA 4096 key takes seconds): the CA whenever both its files are present, a node certificate when it is
still signed by that CA, matches the node's names/addresses and is valid for more than 14 days (PVE
refuses to issue from a CA expiring within two weeks).  A lock file serialises concurrent simulators
sharing one directory.

A custom certificate (``nodes/<node>/pveproxy-ssl.pem`` + ``pveproxy-ssl.key``, which pveproxy prefers over
``pve-ssl.pem`` when present: pve-manager ``PVE/Service/pveproxy.pm``, ``init``, and pve-manager
``PVE/CertHelpers.pm``) is what the ``swap_certificate`` fault presents: self-signed, not issued by the
cluster CA, same subject alternative names as the node certificate.  It is created on first use and
reused like the node certificates.  :class:`NodeTls` is a node listener's TLS setup: it picks the
certificate per handshake (an SNI callback, which OpenSSL also calls when the client sends no server
name, as when connecting to an IP address).

The node fingerprint is SHA-256 over the certificate's DER, as ``PVE::Certificate::
get_certificate_fingerprint`` computes it (pve-common ``src/PVE/Certificate.pm``), formatted as
uppercase colon-separated hex; it is what ``GET /nodes`` reports as ``ssl_fingerprint``
(pve-cluster ``src/PVE/Cluster.pm``, ``get_node_fingerprint``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_SERIAL_FILE",
    "CertificateAuthority",
    "NodeCertificate",
    "NodeIdentity",
    "NodeTls",
    "client_ssl_context",
    "ensure_ca",
    "ensure_cluster_certs",
    "ensure_custom_cert",
    "ensure_node_cert",
    "fingerprint",
    "server_ssl_context",
]

CA_CERT_FILE = "pve-root-ca.pem"
CA_KEY_FILE = "priv/pve-root-ca.key"
CA_SERIAL_FILE = "priv/pve-root-ca.srl"
NODE_CERT_FILE = "pve-ssl.pem"
NODE_KEY_FILE = "pve-ssl.key"
CUSTOM_CERT_FILE = "pveproxy-ssl.pem"
CUSTOM_KEY_FILE = "pveproxy-ssl.key"
_LOCK_FILE = ".pve-simulator.lock"

_CA_KEY_BITS = 4096
_NODE_KEY_BITS = 2048
_CA_DAYS = 3650
_NODE_MAX_DAYS = 2 * 365
_MIN_REMAINING = dt.timedelta(days=14)


@dataclass(frozen=True)
class NodeIdentity:
    """What a node certificate is issued for."""

    name: str
    ip: str
    fqdn: str


@dataclass(frozen=True)
class CertificateAuthority:
    """The cluster CA (``pve-root-ca.pem``) and its key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_path: Path

    @property
    def pem(self) -> bytes:
        """The CA certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class NodeCertificate:
    """A node's ``pve-ssl.pem``/``pve-ssl.key`` pair."""

    node: str
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER, uppercase ``AA:BB:...`` (``ssl_fingerprint`` in ``/nodes``)."""
        return fingerprint(self.cert)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate's DER as uppercase colon-separated hex."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@contextlib.contextmanager
def _locked(cert_dir: Path) -> Iterator[None]:
    cert_dir.mkdir(parents=True, exist_ok=True)
    with (cert_dir / _LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> rsa.RSAPrivateKey | None:
    try:
        # The keys are our own files: skip OpenSSL's expensive RSA consistency check (0.3 s for 4096 bits);
        # a mismatch with the certificate is still detected by comparing public keys.
        key = serialization.load_pem_private_key(path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def ensure_ca(cert_dir: Path) -> CertificateAuthority:
    """Load the cluster CA from ``cert_dir`` or create it (RSA 4096: takes a few seconds)."""
    cert_dir = Path(cert_dir)
    with _locked(cert_dir):
        return _ensure_ca_locked(cert_dir)


def _ensure_ca_locked(cert_dir: Path) -> CertificateAuthority:
    cert_path = cert_dir / CA_CERT_FILE
    key_path = cert_dir / CA_KEY_FILE
    cert = _load_cert(cert_path)
    key = _load_key(key_path)
    if cert is not None and key is not None and cert.public_key() == key.public_key():
        return CertificateAuthority(cert=cert, key=key, cert_path=cert_path)

    key = rsa.generate_private_key(public_exponent=65537, key_size=_CA_KEY_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Proxmox Virtual Environment"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(uuid.uuid4())),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Manager CA"),
        ]
    )
    not_before = _now() - dt.timedelta(days=1)  # faketime yesterday (PVE bug #904)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=_CA_DAYS))
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_atomic(key_path, _key_pem(key), mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    (cert_dir / CA_SERIAL_FILE).unlink(missing_ok=True)
    return CertificateAuthority(cert=cert, key=key, cert_path=cert_path)


def _expected_sans(identity: NodeIdentity) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(identity.ip)),
        x509.DNSName(identity.name),
    ]
    if identity.fqdn != identity.name:
        names.append(x509.DNSName(identity.fqdn))
    return names


def _san_key(names: Sequence[x509.GeneralName]) -> frozenset[str]:
    return frozenset(f"{type(name).__name__}:{name.value}" for name in names)


def _signed_with(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    """Whether ``cert``'s signature verifies with ``key``'s public half."""
    try:
        key.public_key().verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm or hashes.SHA256(),
        )
    except Exception:  # noqa: BLE001 - any verification failure means "not signed with it"
        return False
    return True


def _issued_by(cert: x509.Certificate, ca: CertificateAuthority) -> bool:
    return cert.issuer == ca.cert.subject and _signed_with(cert, ca.key)


def _reusable(cert: x509.Certificate, key: rsa.RSAPrivateKey, ca: CertificateAuthority, identity: NodeIdentity) -> bool:
    if cert.public_key() != key.public_key() or not _issued_by(cert, ca):
        return False
    if cert.not_valid_after_utc - _now() < _MIN_REMAINING:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return _san_key(list(sans)) == _san_key(_expected_sans(identity))


def _next_serial(cert_dir: Path) -> int:
    path = cert_dir / CA_SERIAL_FILE
    try:
        current = int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        current = 0  # update_serial("0000000000000000")
    serial = current + 1
    _write_atomic(path, f"{serial:016X}\n".encode(), mode=0o600)
    return serial


def ensure_node_cert(ca: CertificateAuthority, cert_dir: Path, identity: NodeIdentity) -> NodeCertificate:
    """Load or issue the ``pve-ssl.pem`` of one node, signed by ``ca``."""
    cert_dir = Path(cert_dir)
    with _locked(cert_dir):
        return _ensure_node_cert_locked(ca, cert_dir, identity)


def _ensure_node_cert_locked(ca: CertificateAuthority, cert_dir: Path, identity: NodeIdentity) -> NodeCertificate:
    node_dir = cert_dir / "nodes" / identity.name
    cert_path = node_dir / NODE_CERT_FILE
    key_path = node_dir / NODE_KEY_FILE
    key = _load_key(key_path)
    cert = _load_cert(cert_path)
    if key is not None and cert is not None and _reusable(cert, key, ca, identity):
        return NodeCertificate(node=identity.name, cert=cert, cert_path=cert_path, key_path=key_path)

    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=_NODE_KEY_BITS)
        _write_atomic(key_path, _key_pem(key), mode=0o600)
    now = _now()
    days = min((ca.cert.not_valid_after_utc - now).days - 2, _NODE_MAX_DAYS)
    if days < 14:
        raise RuntimeError("CA expires in less than 2 weeks, unable to generate certificate.")
    not_before = now - dt.timedelta(days=1)  # faketime yesterday
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PVE Cluster Node"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Proxmox Virtual Environment"),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.fqdn),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(_next_serial(cert_dir))
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_expected_sans(identity)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return NodeCertificate(node=identity.name, cert=cert, cert_path=cert_path, key_path=key_path)


def ensure_cluster_certs(
    cert_dir: Path, nodes: Sequence[NodeIdentity]
) -> tuple[CertificateAuthority, dict[str, NodeCertificate]]:
    """Load or create the CA and one certificate per node (in one locked pass)."""
    cert_dir = Path(cert_dir)
    with _locked(cert_dir):
        ca = _ensure_ca_locked(cert_dir)
        certs = {node.name: _ensure_node_cert_locked(ca, cert_dir, node) for node in nodes}
    return ca, certs


def server_ssl_context(node_cert: NodeCertificate) -> ssl.SSLContext:
    """TLS server context for a node: its ``pve-ssl.pem`` only (no chain, like pveproxy), TLS >= 1.2."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(node_cert.cert_path, node_cert.key_path)
    return context


def client_ssl_context(ca_path: Path | str) -> ssl.SSLContext:
    """A verifying client context that trusts only the given cluster CA (for tests and tools)."""
    context = ssl.create_default_context(cafile=str(ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _self_signed(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    return cert.issuer == cert.subject and cert.public_key() == key.public_key() and _signed_with(cert, key)


def _custom_reusable(cert: x509.Certificate, key: rsa.RSAPrivateKey, identity: NodeIdentity) -> bool:
    if not _self_signed(cert, key) or cert.not_valid_after_utc - _now() < _MIN_REMAINING:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return _san_key(list(sans)) == _san_key(_expected_sans(identity))


def ensure_custom_cert(cert_dir: Path, identity: NodeIdentity) -> NodeCertificate:
    """Load or create a node's self-signed ``pveproxy-ssl.pem`` (not issued by the cluster CA).

    Same SANs and CN as ``pve-ssl.pem``, RSA 2048, valid for two years from yesterday.
    """
    cert_dir = Path(cert_dir)
    node_dir = cert_dir / "nodes" / identity.name
    cert_path = node_dir / CUSTOM_CERT_FILE
    key_path = node_dir / CUSTOM_KEY_FILE
    with _locked(cert_dir):
        key = _load_key(key_path)
        cert = _load_cert(cert_path)
        if key is not None and cert is not None and _custom_reusable(cert, key, identity):
            return NodeCertificate(node=identity.name, cert=cert, cert_path=cert_path, key_path=key_path)
        key = rsa.generate_private_key(public_exponent=65537, key_size=_NODE_KEY_BITS)
        not_before = _now() - dt.timedelta(days=1)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PVE Simulator Custom Certificate"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Proxmox Virtual Environment"),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.fqdn),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + dt.timedelta(days=_NODE_MAX_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_expected_sans(identity)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_atomic(key_path, _key_pem(key), mode=0o600)
        _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return NodeCertificate(node=identity.name, cert=cert, cert_path=cert_path, key_path=key_path)


class NodeTls:
    """The TLS side of one node listener: ``pve-ssl.pem``, or the custom certificate while swapped.

    Args:
        cert_dir: the certificate directory (where the custom certificate is kept).
        identity: the node's names and address.
        node_cert: the node's ``pve-ssl.pem``.
        swapped: tells, at each handshake, whether the custom certificate is to be presented.
    """

    def __init__(
        self, cert_dir: Path, identity: NodeIdentity, node_cert: NodeCertificate, swapped: Callable[[], bool]
    ) -> None:
        self.cert_dir = Path(cert_dir)
        self.identity = identity
        self.node_cert = node_cert
        self._swapped = swapped
        self._lock = threading.Lock()
        self._custom: NodeCertificate | None = None
        self._custom_context: ssl.SSLContext | None = None
        self.context = server_ssl_context(node_cert)
        self.context.sni_callback = self._select

    @property
    def swapped(self) -> bool:
        """Whether handshakes present the custom certificate right now."""
        return self._swapped()

    def custom(self) -> NodeCertificate:
        """The custom (swapped-in) certificate, created on first use."""
        with self._lock:
            if self._custom is None:
                self._custom = ensure_custom_cert(self.cert_dir, self.identity)
                self._custom_context = server_ssl_context(self._custom)
            return self._custom

    def presented(self) -> NodeCertificate:
        """The certificate a handshake gets now."""
        return self.custom() if self.swapped else self.node_cert

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if self.swapped:
            self.custom()
            assert self._custom_context is not None
            ssl_object.context = self._custom_context
