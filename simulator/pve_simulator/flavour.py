"""PVE release flavours: the behaviour differences between the releases the simulator imitates.

The flavour is derived from the pve-manager version the simulator reports (``--pve-version``), just as
``GET /version`` on a real node reports the pve-manager package version (pve-manager ``PVE/API2.pm``,
method ``version``, via ``PVE::pvecfg::version_info``).

Differences modelled (each with its source):

* Version text: 7.x uses ``7.4-3`` and an 8-hex-digit repoid, 8.x/9.x use ``8.4.1`` and a
  16-hex-digit repoid (pve-manager ``PVE/API2.pm``: "length 8 is old (< 8.0) short-id, 16 is new
  short id").
* Error text in the JSON body (``"message"``) and in the body of plain errors: added by
  libpve-http-server-perl 5.2.0 (pve-http-server ``debian/changelog``: "fix #6503: return error
  messages from the API also for the json formatter", "add error message directly into the HTTP
  body"; released 2025-01-28, first shipped alongside pve-manager 8.3.4).  The same release turned
  handler crashes from 501 into 500 ("use the '500 Internal Server Error' HTTP error response were
  appropriate").
* Detailed 401 reason phrases for bad tickets/tokens before pve-manager 9.1.5, ``Authentication
  failed!`` from then on (pve-manager ``PVE/HTTPServer.pm``, commit "http server: unify error message
  in case of auth failure", released in 9.1.5).
* ``cap.mapping`` and the ``Mapping.*``/``SDN.Use`` privileges from PVE 8.0 (pve-access-control
  ``src/PVE/RPCEnvironment.pm`` ``compute_api_permission``; commit "add privileges and paths for
  cluster resource mapping").
* ``GET /access/permissions`` (pve-access-control ``src/PVE/API2/AccessControl.pm``, ``permissions``;
  ``src/PVE/RPCEnvironment.pm``, ``get_effective_permissions``): a user may read the permissions of
  tokens they own without ``Sys.Audit`` on ``/access`` from libpve-access-control 8.2.0 (commit "api:
  permissions: allow users to check their own tokens", 2024-11, shipped with PVE 8.3); the default
  paths gained ``/sdn`` in libpve-access-control 7.1-6 (2022-01, shipped with PVE 7.2) and had a bogus
  ``/pools`` instead of ``/pool`` until 8.0.6 (commit "perms: fix wrong /pools entry in default set of
  ACL paths", 2023-11, shipped with PVE 8.1).
* The login ``new-format`` parameter: defaulted to 0 in PVE 7 (half-logged-in TFA tickets carry
  ``tfa!<user>``), ignored and assumed 1 from PVE 8 (pve-access-control commit "drop support for old
  login API").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["KNOWN_RELEASES", "SUPPORTED_MAJORS", "Flavour", "parse_flavour"]

SUPPORTED_MAJORS = (7, 8, 9)

#: Real (version, repoid) pairs as reported by ``GET /version`` on real nodes.
KNOWN_RELEASES: dict[str, str] = {
    "7.4-3": "9002ab8a",
    "7.4-17": "513c62be",
    "8.2.4": "faa83925c9641325",
    "8.4.1": "2a5fa54a8503f96d",
    "9.0.4": "39d8a4de7dfb2c40",
}

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)[.-](\d+)$")
_REPOID_RE = re.compile(r"^[0-9a-fA-F]{8,64}$")


@dataclass(frozen=True)
class Flavour:
    """Behaviour switches of one PVE release.

    Attributes:
        major, minor, patch: the pve-manager version numbers.
        repoid: the short git revision reported by ``/version``.
    """

    major: int
    minor: int
    patch: int
    repoid: str

    @property
    def version(self) -> str:
        """The pve-manager version text (``7.4-3`` style before 8.0, ``8.4.1`` style since)."""
        if self.major < 8:
            return f"{self.major}.{self.minor}-{self.patch}"
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def release(self) -> str:
        """The point release in ``x.y`` format (``release`` of ``GET /version``)."""
        return f"{self.major}.{self.minor}"

    @property
    def _triple(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def error_message_in_body(self) -> bool:
        """Whether error texts also appear in the response body (libpve-http-server-perl >= 5.2.0)."""
        return self._triple >= (8, 3, 4)

    @property
    def internal_error_status(self) -> int:
        """Status for crashes while handling a request: 501 before http-server 5.2.0, then 500."""
        return 500 if self.error_message_in_body else 501

    @property
    def detailed_auth_errors(self) -> bool:
        """Whether 401 reason phrases carry the failure detail (pve-manager < 9.1.5)."""
        return self._triple < (9, 1, 5)

    @property
    def has_mapping(self) -> bool:
        """Whether the ``mapping`` capability group and ``Mapping.*`` privileges exist (>= 8.0)."""
        return self.major >= 8

    @property
    def permissions_owned_tokens(self) -> bool:
        """Whether users may read their own tokens' permissions without ``Sys.Audit`` (>= 8.3)."""
        return self._triple >= (8, 3, 0)

    @property
    def effective_permission_paths(self) -> tuple[str, ...]:
        """The default paths ``GET /access/permissions`` reports (``get_effective_permissions``)."""
        pool = "/pool" if (self.major, self.minor) >= (8, 1) else "/pools"
        paths = ["/", "/access", "/access/groups", "/nodes", pool, "/storage", "/vms"]
        if (self.major, self.minor) >= (7, 2):
            paths.append("/sdn")
        return tuple(sorted(paths))

    @property
    def login_new_format_default(self) -> bool:
        """Default of the login ``new-format`` parameter (0 in PVE 7, always 1 from PVE 8)."""
        return self.major >= 8

    @property
    def login_new_format_ignored(self) -> bool:
        """Whether ``new-format`` is ignored and assumed 1 (from PVE 8)."""
        return self.major >= 8

    def __str__(self) -> str:
        return self.version


def parse_flavour(version: str, repoid: str | None = None) -> Flavour:
    """Build the :class:`Flavour` for a pve-manager version such as ``8.4.1`` or ``7.4-3``.

    Either separator is accepted before the last number; the canonical form for the major release is
    what ``/version`` reports.  Without an explicit ``repoid`` the real one is used for the versions
    in :data:`KNOWN_RELEASES`, otherwise a stable synthetic one of the right length.

    Raises:
        ValueError: unparsable version, unsupported major release or malformed repoid.
    """
    match = _VERSION_RE.match(version.strip())
    if match is None:
        raise ValueError(f"invalid PVE version {version!r}: expected e.g. '8.4.1' or '7.4-3'")
    major, minor, patch = (int(part) for part in match.groups())
    if major not in SUPPORTED_MAJORS:
        supported = ", ".join(str(m) for m in SUPPORTED_MAJORS)
        raise ValueError(f"unsupported PVE major release {major} (supported: {supported})")
    length = 8 if major < 8 else 16
    if repoid is None:
        canonical = Flavour(major, minor, patch, "").version
        repoid = KNOWN_RELEASES.get(canonical) or hashlib.sha256(canonical.encode()).hexdigest()[:length]
    elif not _REPOID_RE.match(repoid):
        raise ValueError(f"invalid repoid {repoid!r}: expected 8 to 64 hex digits")
    return Flavour(major, minor, patch, repoid.lower())
