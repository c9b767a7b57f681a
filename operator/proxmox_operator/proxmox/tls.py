"""TLS trust configurations and the SSL contexts built from them.

An ``ssl.SSLContext`` with the system CAs loaded costs about 750 KB and ~18 ms to build. Contexts are therefore
shared per trust configuration (the same CA bundle, or the system store), not built per registered cluster.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass

import certifi


class TrustConfigInvalid(ValueError):
    """The configured trust material cannot be used (e.g. a CA bundle that is not PEM)."""


@dataclass(frozen=True)
class TrustConfig:
    """How to check the server certificate. ``ca_bundle`` None means the system's trusted CAs."""

    ca_bundle: str | None = None
    insecure_skip_verify: bool = False

    @property
    def verified(self) -> bool:
        return not self.insecure_skip_verify


def ssl_context(trust: TrustConfig) -> ssl.SSLContext:
    """The shared SSL context for ``trust``. Raises :class:`TrustConfigInvalid` for unusable PEM."""
    return _build(trust)


@functools.lru_cache(maxsize=256)
def _build(trust: TrustConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if trust.ca_bundle is not None:
        try:
            ctx.load_verify_locations(cadata=trust.ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise TrustConfigInvalid(
                "spec.tls.caBundle could not be loaded as PEM certificates; paste the PEM text of the CA, "
                "e.g. the content of /etc/pve/pve-root-ca.pem"
            ) from exc
    else:
        # The system store where there is one; certifi's bundle where the image has none (slim containers).
        ctx.load_default_certs()
        if not ctx.get_ca_certs():
            ctx.load_verify_locations(cafile=certifi.where())
    return ctx
