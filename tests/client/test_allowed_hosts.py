"""The allowed-hosts pattern language of a credentials Secret, and what a discovered endpoint may look like."""

from __future__ import annotations

import pytest

from proxmox_operator.proxmox import ALLOWED_HOSTS_ANNOTATION, AllowedHosts, AllowedHostsInvalid
from proxmox_operator.proxmox.hosts import acceptable_discovered


def permits(patterns: str, url: str) -> bool:
    return AllowedHosts.parse(patterns).permits(url)


def test_the_annotation_name() -> None:
    assert ALLOWED_HOSTS_ANNOTATION == "proxmox-operator.dev/allowed-hosts"


@pytest.mark.parametrize(
    ("patterns", "url"),
    [
        ("pve1.example.com", "https://pve1.example.com:8006"),
        ("*.pve.example.com", "https://a.pve.example.com:8006"),
        ("pve*.example.com:8006", "https://pve7.example.com:8006"),
        ("pve*.example.com:8006", "https://pve.example.com:8006"),
        ("10.0.0.*", "https://10.0.0.17:8006"),
        ("10.0.*.1", "https://10.0.255.1"),
        ("[fd00::1]:8006", "https://[fd00:0:0::1]:8006"),
        ("[FD00::1]", "https://[fd00::1]:1234"),
        ("PVE1.Example.COM", "https://pve1.EXAMPLE.com:8006"),
        ("pve1.example.com:443", "https://pve1.example.com"),
        (" pve1.example.com , , 10.0.0.1:8006 ", "https://10.0.0.1:8006"),
        ("a.example.com,b.example.com", "https://b.example.com:8006/"),
    ],
)
def test_permitted(patterns: str, url: str) -> None:
    assert permits(patterns, url)


@pytest.mark.parametrize(
    ("patterns", "url"),
    [
        ("*.pve.example.com", "https://a.b.pve.example.com:8006"),  # * never crosses a dot
        ("*.pve.example.com", "https://pve.example.com:8006"),
        ("pve*.example.com", "https://pve1.evil.example.com"),
        ("pve*.example.com", "https://pve1.example.com.evil.org"),
        ("10.0.0.*", "https://10.0.1.5:8006"),
        ("10.0.0.*", "https://10.0.0.5.nip.io:8006"),  # an IPv4 pattern matches IPv4 addresses only
        ("pve1.example.com:8006", "https://pve1.example.com:8007"),
        ("pve1.example.com:8006", "https://pve1.example.com"),  # 443
        ("[fd00::1]:8006", "https://[fd00::2]:8006"),
        ("[fd00::1]", "https://fd00-1.example.com"),
        ("pve1.example.com", "https://pve1.example.com\\@evil.org:8006"),
        ("pve1.example.com", "https://evil.org\\@pve1.example.com:8006"),
        ("pve*.example.com", "https://pvé.example.com:8006"),
        ("pve1.example.com", "https://pve1.example.com:99999"),
        ("pve1.example.com", "https://[::1"),
        ("pve1.example.com", "not a url"),
    ],
)
def test_not_permitted(patterns: str, url: str) -> None:
    assert not permits(patterns, url)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " , ,",
        "pve1.example.com/api",
        "pve1.example.com:0",
        "pve1.example.com:65536",
        "pve1.example.com:80a",
        "pve1.example.com:",
        "fd00::1",
        "[fd00::1",
        "[fd00::*]:8006",
        "[not-ipv6]",
        "pve..example.com",
        ".example.com",
        "10.0.0.256",
        "pve_1.example.com",
        "user@pve1.example.com",
    ],
)
def test_bad_lists_are_refused(text: str) -> None:
    with pytest.raises(AllowedHostsInvalid) as info:
        AllowedHosts.parse(f"ok.example.com, {text}" if text.strip(" ,") else text)
    if text.strip(" ,"):
        assert f"'{text}'" in str(info.value), "the message quotes the entry at fault"


def test_the_list_reads_back_normalised() -> None:
    assert str(AllowedHosts.parse(" PVE*.Example.com:8006, [FD00::0001], 10.0.0.* ")) == (
        "pve*.example.com:8006, [fd00::1], 10.0.0.*"
    )


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://10.0.0.2:8006", True),
        ("https://10.0.0.2:8006/", True),
        ("https://[fd00::2]:8006", True),
        ("http://10.0.0.2:8006", False),
        ("https://root:pw@10.0.0.2:8006", False),
        ("https://@10.0.0.2:8006", False),
        ("https://10.0.0.2:8007", False),
        ("https://10.0.0.2", False),
        ("https://pve2.example.com:8006", False),
        ("https://10.0.0.2:8006/api2/json", False),
        ("https://10.0.0.2:8006?x=1", False),
        ("https://10.0.0.2:8006#x", False),
        ("https://010.0.0.2:8006", False),
        ("https://[fe80::1%25eth0]:8006", False),
    ],
)
def test_what_a_discovered_endpoint_may_look_like(url: str, ok: bool) -> None:
    assert acceptable_discovered(url, port=8006, allowed=None) is ok


def test_a_discovered_endpoint_must_also_be_allowed() -> None:
    allowed = AllowedHosts.parse("10.0.0.*")
    assert acceptable_discovered("https://10.0.0.2:8006", port=8006, allowed=allowed)
    assert not acceptable_discovered("https://10.0.1.2:8006", port=8006, allowed=allowed)
