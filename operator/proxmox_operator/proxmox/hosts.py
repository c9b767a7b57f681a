"""Where credentials may be sent: the allowed-hosts list of a credentials Secret, and discovered endpoints.

The owner of a credentials Secret can limit the hosts its credentials go to with the annotation
``proxmox-operator.dev/allowed-hosts``: a comma-separated list of ``host`` or ``host:port`` patterns, e.g.
``pve*.example.com:8006, 10.0.0.*, [fd00::1]:8006``.

* Whitespace around entries and empty entries are ignored; at least one pattern is required.
* ``*`` stands for any run of characters within one DNS label or one IPv4 octet: it never matches a ``.``, so
  ``*.pve.example.com`` allows ``a.pve.example.com`` but not ``a.b.pve.example.com``.
* A pattern of four labels made of digits and ``*`` is an IPv4 pattern: it matches IPv4 addresses only.
* IPv6 addresses go in brackets and are compared as addresses (no wildcards): ``[fd00::1]`` is ``[fd00:0::1]``.
* Host names are compared case-insensitively; only ASCII host names are ever permitted.
* A pattern without a port allows any port; a URL without a port has its scheme's (443 for https).

A URL is permitted only if :func:`~urllib.parse.urlsplit` can parse it, it is printable ASCII without spaces or
backslashes (so that every URL parser agrees on its host), and a pattern matches its host and port.

This module knows no Kubernetes: :data:`ALLOWED_HOSTS_ANNOTATION` is only the name messages point at.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

ALLOWED_HOSTS_ANNOTATION = "proxmox-operator.dev/allowed-hosts"

_ENTRY_CHARS = re.compile(r"[A-Za-z0-9.*:\[\]-]+")
_LABEL = re.compile(r"[a-z0-9*-]+")
_IPV4_LABEL = re.compile(r"[0-9*]+")
_NAME = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
_DEFAULT_PORTS = {"https": 443, "http": 80}


class AllowedHostsInvalid(ValueError):
    """The allowed-hosts text cannot be parsed. The message quotes the entry at fault."""


@dataclass(frozen=True)
class HostPattern:
    """One entry: a host pattern (name, IPv4 or IPv6) and an optional port."""

    host: str
    port: int | None
    kind: Literal["name", "ipv4", "ipv6"]
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.kind == "ipv6" else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def matches(self, host: str, port: int | None) -> bool:
        """Whether ``host`` (lowercase, IPv6 without brackets) and ``port`` fall under this pattern."""
        if self.port is not None and port != self.port:
            return False
        if self.kind == "ipv6":
            return _ip(host, ipaddress.IPv6Address) == ipaddress.IPv6Address(self.host)
        if self.kind == "ipv4":
            address = _ip(host, ipaddress.IPv4Address)
            return address is not None and self._match(str(address))
        return _NAME.fullmatch(host) is not None and self._match(host)

    def _match(self, text: str) -> bool:
        return self._regex is not None and self._regex.fullmatch(text) is not None


def _ip(text: str, kind: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]) -> object | None:
    try:
        return kind(text)
    except ValueError:
        return None


def _invalid(entry: str, why: str) -> AllowedHostsInvalid:
    shown = entry if len(entry) <= 80 else entry[:77] + "..."
    return AllowedHostsInvalid(f"'{shown}' {why}")


def _pattern(entry: str) -> HostPattern:
    if _ENTRY_CHARS.fullmatch(entry) is None:
        raise _invalid(entry, "has characters other than letters, digits, '.', '-', '*', ':' and brackets")
    if entry.startswith("["):
        bracketed = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", entry)
        if bracketed is None:
            raise _invalid(entry, "is not a bracketed IPv6 address, e.g. [fd00::1] or [fd00::1]:8006")
        if "*" in bracketed.group(1):
            raise _invalid(entry, "has a wildcard in an IPv6 address; list IPv6 addresses in full")
        try:
            address = ipaddress.IPv6Address(bracketed.group(1))
        except ValueError:
            raise _invalid(entry, "is not a valid IPv6 address") from None
        return HostPattern(str(address), _port(entry, bracketed.group(2)), "ipv6")
    if "[" in entry or "]" in entry:
        raise _invalid(entry, "has brackets that do not enclose an IPv6 address")
    if entry.count(":") > 1:
        raise _invalid(entry, "looks like an IPv6 address; put it in brackets, e.g. [fd00::1]:8006")
    host, colon, port_text = entry.partition(":")
    port = _port(entry, port_text if colon else None)
    labels = host.lower().split(".")
    if not all(labels) or not all(_LABEL.fullmatch(label) for label in labels):
        raise _invalid(entry, "is not a host name or IPv4 address pattern (an empty or invalid label)")
    if len(labels) == 4 and all(_IPV4_LABEL.fullmatch(label) for label in labels):
        for label in labels:
            if "*" not in label and (int(label) > 255 or (len(label) > 1 and label[0] == "0")):
                raise _invalid(entry, "is not a valid IPv4 address pattern")
        return HostPattern(".".join(labels), port, "ipv4", _regex(labels, "[0-9]*"))
    return HostPattern(".".join(labels), port, "name", _regex(labels, "[^.]*"))


def _regex(labels: list[str], wildcard: str) -> re.Pattern[str]:
    """``*`` becomes ``wildcard``, which never matches a dot: a wildcard stays within its label."""
    return re.compile(r"\.".join(wildcard.join(map(re.escape, label.split("*"))) for label in labels))


def _port(entry: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) <= 65535:
        raise _invalid(entry, "has an invalid port; use a number from 1 to 65535, or leave the port out")
    return int(text)


def url_host_port(url: str) -> tuple[str, int | None] | None:
    """The host (lowercase, IPv6 without brackets) and port (or the scheme's default) of ``url``; None when the
    URL cannot be parsed or has characters URL parsers may disagree on."""
    if not url.isascii() or not url.isprintable() or " " in url or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port if port is not None else _DEFAULT_PORTS.get(parts.scheme)


@dataclass(frozen=True)
class AllowedHosts:
    """The hosts (and ports) credentials may be sent to. Build with :meth:`parse`."""

    patterns: tuple[HostPattern, ...]

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        """Parse the annotation's value. Raises :class:`AllowedHostsInvalid` naming the entry at fault."""
        entries = [entry.strip() for entry in text.split(",")]
        patterns = tuple(_pattern(entry) for entry in entries if entry)
        if not patterns:
            raise AllowedHostsInvalid("lists no host; give at least one host or host:port pattern")
        return cls(patterns)

    def permits(self, url: str) -> bool:
        """Whether credentials may be sent to ``url``."""
        target = url_host_port(url)
        return target is not None and any(pattern.matches(*target) for pattern in self.patterns)

    def __str__(self) -> str:
        return ", ".join(map(str, self.patterns))


def acceptable_discovered(url: str, *, port: int | None, allowed: AllowedHosts | None) -> bool:
    """Whether a discovered endpoint may be used: ``https://<IP address>:<port>`` exactly (an optional trailing
    ``/``), with ``port`` the configured endpoint's, and permitted by ``allowed`` when there is such a list.

    Discovery only ever produces IP addresses from ``GET /cluster/status``; anything else (another scheme, user
    info, a path, a query, a host name, another port) did not come from there and is refused."""
    target = url_host_port(url)
    if target is None or port is None or target[1] != port:
        return False
    parts = urlsplit(url)
    if parts.scheme != "https" or "@" in parts.netloc or parts.path not in ("", "/") or "?" in url or "#" in url:
        return False
    host = target[0]
    if "%" in host or (_ip(host, ipaddress.IPv4Address) is None and _ip(host, ipaddress.IPv6Address) is None):
        return False
    return allowed is None or allowed.permits(url)
