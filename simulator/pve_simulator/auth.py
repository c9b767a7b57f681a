"""Tickets, CSRF prevention tokens, the rotating auth key and TOTP: PVE's authentication primitives.

Tickets (pve-common ``src/PVE/Ticket.pm``, ``assemble_rsa_ticket``/``verify_rsa_ticket``)::

    PVE:<data>:<8 uppercase hex digits, unix time>::<base64 RSA signature>

``<data>`` is URI-escaped for ``:`` only; the signature covers ``PVE:<data>:<time>`` plus
``:<secret data>`` when additional authenticated data is used (half-logged-in TFA tickets sign the
user id that way).  Signatures are RSA PKCS#1 v1.5 with SHA-256 over a 2048-bit cluster auth key
(pve-cluster ``src/PVE/Cluster/Setup.pm``, ``gen_auth_key``).

The accepted ticket age range comes from pve-access-control ``src/PVE/AccessControl.pm``
(``$get_ticket_age_range``): lifetime 2 h, 5 min clock skew, the key rotates every 24 h on the next
signing (``get_privkey``/``check_authkey``/``rotate_authkey``), tickets signed by the previous key
stay valid for their remaining lifetime.

CSRF prevention tokens (pve-common ``src/PVE/Ticket.pm``, ``assemble_csrf_prevention_token``)::

    <8 uppercase hex digits, unix time>:<base64 HMAC-SHA256("<time>:<userid>", secret), no padding>

where the secret is itself the unpadded base64 HMAC-SHA256 (empty key) of the cluster's
``pve-www.key`` (pve-access-control ``src/PVE/AccessControl.pm``, ``$get_csrfr_secret``).  Tokens are
accepted for the same age window as tickets.

TOTP (RFC 6238, 30 s steps, 6 digits, SHA-1) is what ``proxmox-tfa`` checks for ``totp:<code>``
responses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import threading
import urllib.parse
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pve_simulator.clock import Clock

__all__ = [
    "AUTHKEY_LIFETIME",
    "AUTH_GRACE_PERIOD",
    "TICKET_LIFETIME",
    "AuthKeyStore",
    "CsrfSecret",
    "VerifiedTicket",
    "totp_code",
    "verify_totp",
]

TICKET_LIFETIME = 3600 * 2
AUTH_GRACE_PERIOD = 60 * 5
AUTHKEY_LIFETIME = 3600 * 24

_TIMESTAMP_RE = re.compile(r"^[A-Z0-9]{8}$")
_CSRF_RE = re.compile(r"^([A-Z0-9]{8}):(\S+)$")


def _b64_nopad(data: bytes) -> str:
    """Perl ``Digest::SHA::*_base64``: base64 without ``=`` padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _hex_time(now: int) -> str:
    return f"{now & 0xFFFFFFFF:08X}"


def _parse_hex_time(text: str) -> int | None:
    if not _TIMESTAMP_RE.match(text):
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


@dataclass(frozen=True)
class VerifiedTicket:
    """A ticket that verified: its (unescaped) data and its age in seconds."""

    data: str | None
    age: int


@dataclass
class _Key:
    private: rsa.RSAPrivateKey | None
    public: rsa.RSAPublicKey
    mtime: int


class AuthKeyStore:
    """The cluster-wide ticket signing key (``authkey.key``/``authkey.pub``/``authkey.pub.old``).

    Args:
        clock: time source for ticket timestamps, key ages and rotation.
        key_size: RSA key size (PVE: 2048).
    """

    def __init__(self, clock: Clock, key_size: int = 2048) -> None:
        self._clock = clock
        self._key_size = key_size
        self._lock = threading.Lock()
        self._current = self._generate()
        self._old: _Key | None = None

    def _now(self) -> int:
        return int(self._clock.time())

    def _generate(self) -> _Key:
        private = rsa.generate_private_key(public_exponent=65537, key_size=self._key_size)
        return _Key(private=private, public=private.public_key(), mtime=self._now())

    @property
    def mtime(self) -> int:
        """When the current key was created (the ``authkey.pub`` mtime)."""
        return self._current.mtime

    def rotate(self) -> None:
        """Replace the key now; the previous public key keeps verifying older tickets."""
        with self._lock:
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        old = self._current
        self._current = self._generate()
        # authkey.pub.old is written at rotation time: its mtime is the rotation time.
        self._old = _Key(private=None, public=old.public, mtime=self._current.mtime)

    def _signing_key(self, quorate: bool) -> rsa.RSAPrivateKey:
        now = self._now()
        key = self._current
        if quorate:  # check_authkey: no rotation without quorum
            too_old = now - key.mtime >= AUTHKEY_LIFETIME
            in_future = key.mtime > now + AUTH_GRACE_PERIOD
            if too_old or in_future:
                self._rotate_locked()
        private = self._current.private
        assert private is not None
        return private

    def assemble(self, prefix: str, data: str | None, secret_data: str | None = None, *, quorate: bool = True) -> str:
        """Create a signed ticket (``assemble_rsa_ticket``)."""
        with self._lock:
            key = self._signing_key(quorate)
            plain = f"{prefix}:"
            if data is not None:
                plain += data.replace(":", "%3A") + ":"  # uri_escape($data, ':')
            plain += _hex_time(self._now())
        full = plain if secret_data is None else f"{plain}:{secret_data}"
        signature = key.sign(full.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return f"{plain}::{base64.b64encode(signature).decode('ascii')}"

    @staticmethod
    def _age_range(now: int, mtime: int, rotated: bool, quorate: bool) -> tuple[int, int] | None:
        key_age = max(now - mtime, 0)
        low = -AUTH_GRACE_PERIOD
        high = TICKET_LIFETIME
        if rotated:
            low = key_age - AUTH_GRACE_PERIOD  # tickets created after the rotation are not allowed
        else:
            if key_age > AUTHKEY_LIFETIME and quorate:
                low = key_age - AUTHKEY_LIFETIME  # key should have been rotated: clamp
            if key_age < TICKET_LIFETIME:
                high = key_age + AUTH_GRACE_PERIOD
        if low > TICKET_LIFETIME:
            return None
        return low, high

    def verify(
        self, prefix: str, ticket: str | None, secret_data: str | None = None, *, quorate: bool = True
    ) -> VerifiedTicket | None:
        """Verify a ticket against the current, then the previous key (``verify_ticket``)."""
        if not ticket:
            return None
        match = re.match(rf"^({re.escape(prefix)}:\S+)::([^:\s]+)$", ticket)
        if match is None:
            return None
        plain, sig_text = match.groups()
        parsed = re.match(rf"^{re.escape(prefix)}:(?:(\S+):)?([A-Z0-9]{{8}})$", plain)
        if parsed is None:
            return None
        try:
            signature = base64.b64decode(sig_text + "=" * (-len(sig_text) % 4))
        except (binascii.Error, ValueError):
            return None
        ttime = _parse_hex_time(parsed.group(2))
        if ttime is None:
            return None
        full = plain if secret_data is None else f"{plain}:{secret_data}"
        now = self._now()
        with self._lock:
            candidates = [(self._current, False)]
            if self._old is not None:
                candidates.append((self._old, True))
        for key, rotated in candidates:
            age_range = self._age_range(now, key.mtime, rotated, quorate)
            if age_range is None:
                continue
            try:
                key.public.verify(signature, full.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                continue
            age = now - ttime
            if age_range[0] < age < age_range[1]:
                data = parsed.group(1)
                return VerifiedTicket(None if data is None else urllib.parse.unquote(data), age)
        return None


class CsrfSecret:
    """The cluster's CSRF prevention secret (derived from ``pve-www.key``).

    Args:
        clock: time source for token timestamps and age checks.
        www_key: contents of ``pve-www.key``; random when omitted.
    """

    def __init__(self, clock: Clock, www_key: bytes | None = None) -> None:
        self._clock = clock
        material = www_key if www_key is not None else secrets.token_bytes(64)
        self._secret = _b64_nopad(hmac.new(b"", material, hashlib.sha256).digest()).encode("ascii")

    def _digest(self, timestamp: str, userid: str) -> str:
        return _b64_nopad(hmac.new(self._secret, f"{timestamp}:{userid}".encode(), hashlib.sha256).digest())

    def assemble(self, userid: str) -> str:
        """A CSRF prevention token for ``userid`` (43-character signature)."""
        timestamp = _hex_time(int(self._clock.time()))
        return f"{timestamp}:{self._digest(timestamp, userid)}"

    def verify(self, userid: str, token: str | None) -> bool:
        """Check a token for ``userid``: signature and ``-5 min < age < 2 h``."""
        match = _CSRF_RE.match(token or "")
        if match is None:
            return False
        timestamp, signature = match.groups()
        ttime = _parse_hex_time(timestamp)
        if ttime is None:
            return False
        age = int(self._clock.time()) - ttime
        return hmac.compare_digest(self._digest(timestamp, userid), signature) and (
            -AUTH_GRACE_PERIOD < age < TICKET_LIFETIME
        )


def totp_code(secret_b32: str, at: float, *, step: int = 30, digits: int = 6) -> str:
    """The RFC 6238 TOTP code (HMAC-SHA1) of a base32 secret at time ``at``."""
    normalized = secret_b32.replace(" ", "").upper()
    key = base64.b32decode(normalized + "=" * (-len(normalized) % 8))
    counter = struct.pack(">Q", int(at) // step)
    digest = hmac.new(key, counter, hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**digits:0{digits}d}"


def verify_totp(secret_b32: str, code: str, at: float, *, window: int = 1) -> bool:
    """Whether ``code`` matches the TOTP of ``secret_b32`` within ``window`` steps of ``at``."""
    try:
        return any(
            hmac.compare_digest(totp_code(secret_b32, at + delta * 30), code) for delta in range(-window, window + 1)
        )
    except (binascii.Error, ValueError):
        return False
