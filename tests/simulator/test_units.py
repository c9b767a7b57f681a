"""Building blocks without a listener: flavours, config validation, tickets, CSRF, TOTP, parsing."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from pve_simulator import ManualClock, SimulatorConfig, SimulatorThread, client_ssl_context, parse_flavour, totp_code
from pve_simulator.app import decode_urlencoded, extract_auth_value
from pve_simulator.auth import AuthKeyStore, CsrfSecret
from tests.simulator.support import CI_SECRET, FULL_SECRET, make_config, token_header


def test_flavours() -> None:
    old = parse_flavour("7.4-3")
    assert (old.version, old.release, old.repoid) == ("7.4-3", "7.4", "9002ab8a")
    assert not old.error_message_in_body
    assert old.detailed_auth_errors
    assert not old.has_mapping
    assert parse_flavour("7.4.3").version == "7.4-3"
    assert parse_flavour("8.3.3").error_message_in_body is False
    assert parse_flavour("8.3.4").error_message_in_body is True
    assert parse_flavour("9.1.4").detailed_auth_errors is True
    assert parse_flavour("9.1.5").detailed_auth_errors is False
    assert len(parse_flavour("8.1.0").repoid) == 16
    assert parse_flavour("8.4.1", "ABCDEF0123456789").repoid == "abcdef0123456789"
    for bad in ("6.4-1", "8.4", "latest"):
        with pytest.raises(ValueError, match="PVE"):
            parse_flavour(bad)


def test_config_validation() -> None:
    config = make_config(None)
    assert [str(node.ip) for node in config.nodes] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert "Canary" not in repr(config)
    with pytest.raises(ValidationError, match="loopback"):
        make_config(None, nodes=[{"name": "pve1", "ip": "192.168.1.10"}])
    with pytest.raises(ValidationError, match="loopback"):
        make_config(None, listen_address="0.0.0.0")
    with pytest.raises(ValidationError, match="unknown user"):
        make_config(None, tokens=[{"tokenid": "ghost@pve!tk", "secret": CI_SECRET}])
    with pytest.raises(ValidationError, match="UUID"):
        make_config(None, tokens=[{"tokenid": "root@pam!t", "secret": "not-a-uuid"}])
    with pytest.raises(ValidationError, match="standalone"):
        make_config(None, cluster_name=None)
    with pytest.raises(ValidationError, match="unique"):
        make_config(None, nodes=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValidationError, match="node name"):
        make_config(None, nodes=[{"name": "bad_name"}])
    with pytest.raises(ValidationError, match="Extra inputs"):
        SimulatorConfig.model_validate({"bogus": 1})
    explicit = make_config(None, nodes=[{"name": "a"}, {"name": "b", "ip": "127.0.0.1"}])
    assert [str(node.ip) for node in explicit.nodes] == ["127.0.0.2", "127.0.0.1"]


def test_ticket_and_csrf_formats() -> None:
    clock = ManualClock(0x6000_0000)
    keys = AuthKeyStore(clock)
    ticket = keys.assemble("PVE", "root@pam")
    assert re.match(r"^PVE:root@pam:60000000::[A-Za-z0-9+/]+={0,2}$", ticket)
    assert len(base64.b64decode(ticket.split("::")[1])) == 256  # RSA 2048 signature
    verified = keys.verify("PVE", ticket)
    assert verified is not None
    assert (verified.data, verified.age) == ("root@pam", 0)
    assert keys.verify("PVE", ticket.replace("root@pam", "root@pve")) is None

    tfa = keys.assemble("PVE", '!tfa!{"totp":true}', "carol@pve")
    assert tfa.startswith('PVE:!tfa!{"totp"%3Atrue}:60000000::')
    assert keys.verify("PVE", tfa) is None
    half = keys.verify("PVE", tfa, "carol@pve")
    assert half is not None
    assert half.data == '!tfa!{"totp":true}'

    csrf = CsrfSecret(clock)
    token = csrf.assemble("root@pam")
    assert re.match(r"^60000000:[A-Za-z0-9+/]{43}$", token)
    assert csrf.verify("root@pam", token)
    assert not csrf.verify("alice@pve", token)
    clock.advance(7199)
    assert csrf.verify("root@pam", token)
    clock.advance(1)
    assert not csrf.verify("root@pam", token)


def test_totp_rfc6238_vector() -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp_code(secret, 59) == "287082"
    assert totp_code(secret, 1111111109) == "081804"


def test_form_decoding_quirks() -> None:
    assert decode_urlencoded(b"a=1&b=x+y;c=%3D") == {"a": "1", "b": "x y", "c": "="}
    assert decode_urlencoded(b"p=a=b") == {"p": "a"}  # value ends at the second '=' (Perl split)
    assert decode_urlencoded(b"k=1&k=2&flag") == {"k": ["1", "2"], "flag": None}
    assert extract_auth_value("x=1; PVEAuthCookie=PVE%3Aa; y=2", "PVEAuthCookie") == "PVE:a"
    assert extract_auth_value("NotPVEAuthCookie=1", "PVEAuthCookie") is None


def test_background_thread_for_sync_code(cert_dir: Path) -> None:
    config = make_config(cert_dir, cluster_name=None, nodes=[{"name": "pve1"}])
    with SimulatorThread(config) as sim:
        response = httpx.get(
            f"{sim.url}/api2/json/version",
            headers=token_header("root@pam!full", FULL_SECRET),
            verify=client_ssl_context(sim.ca_path),
        )
        assert response.status_code == 200
        sim.faults.update({"force_status": 596})
        response = httpx.get(
            f"{sim.url}/api2/json/version",
            headers=token_header("root@pam!full", FULL_SECRET),
            verify=client_ssl_context(sim.ca_path),
        )
        assert response.status_code == 596
        assert sim.counters.count("/api2/json/version") == 2
