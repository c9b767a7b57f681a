"""TLS trust configurations and the SSL contexts built from them.

An ``ssl.SSLContext`` with the system CAs loaded costs about 750 KB and ~18 ms to build. Contexts are therefore
shared per trust configuration (the same CA bundle, or the system store), not built per registered cluster.

Fingerprints (``spec.tls.fingerprints``) follow Proxmox's own clients (pve-apiclient, pvesh's remote mode): the
normal chain check runs first; when it fails, the certificate is still accepted if the SHA-256 fingerprint of
its DER encoding is listed (hostname not checked then). See :mod:`.wire` for where that happens.
"""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

import certifi


class TrustConfigInvalid(ValueError):
    """The configured trust material cannot be used (e.g. a CA bundle that is not PEM)."""


def normalize_fingerprint(value: str) -> str:
    """``aa:bb:..`` or ``AABB..`` -> ``AA:BB:..`` (PVE's format)."""
    hexdigits = value.replace(":", "").strip().upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))


def fingerprint_of(der: bytes) -> str:
    """PVE's fingerprint of a certificate: SHA-256 over its DER encoding, ``AA:BB:..``."""
    return normalize_fingerprint(hashlib.sha256(der).hexdigest())


@dataclass(frozen=True)
class TrustConfig:
    """How to check the server certificate. ``ca_bundle`` None means the system's trusted CAs."""

    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    fingerprints: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def build(
        cls, *, ca_bundle: str | None = None, fingerprints: Iterable[str] = (), insecure_skip_verify: bool = False
    ) -> TrustConfig:
        return cls(
            ca_bundle=ca_bundle,
            insecure_skip_verify=insecure_skip_verify,
            fingerprints=frozenset(normalize_fingerprint(f) for f in fingerprints),
        )

    @property
    def verified(self) -> bool:
        return not self.insecure_skip_verify

    @property
    def description(self) -> str:
        """How certificates are checked, for conditions and messages (no key material)."""
        if self.insecure_skip_verify:
            return "not verified (insecureSkipVerify)"
        chain = "the configured CA bundle" if self.ca_bundle is not None else "the system CAs"
        if self.fingerprints:
            return f"{chain} or one of {len(self.fingerprints)} pinned fingerprint(s)"
        return chain


def ssl_context(trust: TrustConfig) -> ssl.SSLContext:
    """The shared SSL context for ``trust``'s chain check. Raises :class:`TrustConfigInvalid` for unusable PEM."""
    return _build(trust.ca_bundle, trust.insecure_skip_verify)


@functools.cache
def unverified_context() -> ssl.SSLContext:
    """For the fingerprint check after a failed chain check: no verification, the fingerprint decides."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=256)
def _build(ca_bundle: str | None, insecure: bool) -> ssl.SSLContext:
    if insecure:
        return unverified_context()
    if ca_bundle is not None:
        return _bundle_only(ca_bundle)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The system store where there is one; certifi's bundle where the image has none (slim containers).
    ctx.load_default_certs()
    if not ctx.get_ca_certs():
        ctx.load_verify_locations(cafile=certifi.where())
    return ctx


def _bundle_only(ca_bundle: str) -> ssl.SSLContext:
    """A context that trusts exactly the CAs of ``ca_bundle``.

    ``ssl.create_default_context`` would load the system store first (and with it whatever ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` point at): a one-CA bundle would then trust some 150 CAs. A bare ``PROTOCOL_TLS_CLIENT``
    context loads nothing by itself; hostname checking and certificate verification are its defaults and are
    set here explicitly all the same.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=ca_bundle)
    except (ssl.SSLError, ValueError) as exc:
        raise TrustConfigInvalid(
            "the CA bundle could not be loaded as PEM certificates; paste the PEM text of the CA, "
            "e.g. the content of /etc/pve/pve-root-ca.pem"
        ) from exc
    return ctx
