"""Authentication on API calls: ticket cookies, CSRF, API tokens, expiry, privilege separation."""

from __future__ import annotations

import time
import urllib.parse

import httpx
import pytest

from pve_simulator import ManualClock, SimulatorServer
from tests.simulator.support import (
    ALICE_PASSWORD,
    CI_SECRET,
    FULL_SECRET,
    MON_SECRET,
    StartSim,
    client_for,
    cookie,
    login,
    token_header,
)


async def test_no_credentials_is_401_no_ticket(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    response = await client.get("/nodes")
    assert (response.status_code, response.reason_phrase) == (401, "No ticket")
    assert response.content == b""
    assert sim.counters.auth_failures == 1


async def test_ticket_cookie_raw_and_percent_encoded(client: httpx.AsyncClient) -> None:
    ticket = (await login(client))["ticket"]
    raw = await client.get("/version", headers=cookie(ticket))
    encoded = await client.get("/version", headers={"Cookie": f"PVEAuthCookie={urllib.parse.quote(ticket, safe='')}"})
    among_others = await client.get("/version", headers={"Cookie": f"foo=bar; PVEAuthCookie={ticket}; x=y"})
    in_authorization = await client.get("/version", headers={"Authorization": f"PVEAuthCookie={ticket}"})
    assert [r.status_code for r in (raw, encoded, among_others, in_authorization)] == [200, 200, 200, 200]


async def test_bad_ticket_is_401_with_detail(start_sim: StartSim) -> None:
    async with start_sim(auth_fail_delay=0.3) as sim, client_for(sim) as http:
        ticket = (await login(http))["ticket"]
        forged = ticket.replace("PVE:root@pam:", "PVE:alice@pve:")
        started = time.monotonic()
        response = await http.get("/version", headers=cookie(forged))
        assert time.monotonic() - started >= 0.3
        assert (response.status_code, response.reason_phrase) == (401, "permission denied - invalid PVE ticket")
        assert response.content == b""
        assert response.headers["Connection"] == "close"


async def test_auth_failures_say_authentication_failed_from_9_1_5(start_sim: StartSim) -> None:
    async with start_sim(pve_version="9.1.5") as sim, client_for(sim) as http:
        bad_ticket = await http.get("/version", headers=cookie("PVE:root@pam:00000000::AAAA"))
        bad_token = await http.get("/version", headers=token_header("root@pam!ci", "wrong"))
        none = await http.get("/version")
        assert bad_ticket.reason_phrase == "Authentication failed!"
        assert bad_token.reason_phrase == "Authentication failed!"
        assert none.reason_phrase == "No ticket"


async def test_expired_ticket_is_rejected(start_sim: StartSim) -> None:
    clock = ManualClock()
    async with start_sim(clock=clock) as sim, client_for(sim) as http:
        ticket = (await login(http))["ticket"]
        clock.advance(3600)
        still_valid = await http.get("/version", headers=cookie(ticket))
        assert still_valid.status_code == 200
        renewed = (await login(http, "root@pam", ticket))["ticket"]
        clock.advance(3600)
        expired = await http.get("/version", headers=cookie(ticket))
        assert (expired.status_code, expired.reason_phrase) == (401, "permission denied - invalid PVE ticket")
        fresh = await http.get("/version", headers=cookie(renewed))
        assert fresh.status_code == 200
        renew_expired = await http.post("/access/ticket", data={"username": "root@pam", "password": ticket})
        assert renew_expired.status_code == 401


async def test_ticket_from_the_future_within_clock_skew(start_sim: StartSim) -> None:
    clock = ManualClock()
    async with start_sim(clock=clock) as sim, client_for(sim) as http:
        start = clock.time()
        ticket = (await login(http))["ticket"]
        clock.set(start - 290)
        assert (await http.get("/version", headers=cookie(ticket))).status_code == 200
        clock.set(start - 310)
        assert (await http.get("/version", headers=cookie(ticket))).status_code == 401


async def test_auth_key_rotation_keeps_older_tickets_valid(start_sim: StartSim) -> None:
    clock = ManualClock()
    async with start_sim(clock=clock) as sim, client_for(sim) as http:
        clock.advance(24 * 3600 - 1800)
        old_ticket = (await login(http))["ticket"]
        clock.advance(1800)  # key is 24 h old: the next login rotates it
        new_ticket = (await login(http))["ticket"]
        assert sim.access.keys.mtime == int(clock.time())
        for ticket in (old_ticket, new_ticket):
            assert (await http.get("/version", headers=cookie(ticket))).status_code == 200


async def test_csrf_token_required_for_non_get_with_ticket(client: httpx.AsyncClient) -> None:
    data = await login(client)
    without = await client.post("/nodes", headers=cookie(data["ticket"]))
    assert (without.status_code, without.reason_phrase) == (401, "Permission denied - invalid csrf token")
    token = data["CSRFPreventionToken"]
    tampered = token[:-1] + ("B" if token.endswith("A") else "A")  # always differs from the real token
    wrong = await client.put("/nodes", headers={**cookie(data["ticket"]), "CSRFPreventionToken": tampered})
    assert wrong.status_code == 401
    with_token = await client.post(
        "/nodes", headers={**cookie(data["ticket"]), "CSRFPreventionToken": data["CSRFPreventionToken"]}
    )
    assert (with_token.status_code, with_token.reason_phrase) == (501, "Method 'POST /nodes' not implemented")
    other_user = await login(client, "alice@pve", ALICE_PASSWORD)
    mismatch = await client.post(
        "/nodes", headers={**cookie(data["ticket"]), "CSRFPreventionToken": other_user["CSRFPreventionToken"]}
    )
    assert mismatch.status_code == 401


async def test_token_header_works_without_csrf(client: httpx.AsyncClient) -> None:
    version = await client.get("/version", headers=token_header("root@pam!ci", CI_SECRET))
    assert version.status_code == 200
    post = await client.post("/nodes", headers=token_header("root@pam!ci", CI_SECRET))
    assert post.status_code == 501
    spaced = await client.get("/version", headers={"Authorization": f"PVEAPIToken root@pam!ci={CI_SECRET}"})
    assert spaced.status_code == 200
    encoded = await client.get(
        "/version", headers={"Authorization": "PVEAPIToken=" + urllib.parse.quote(f"root@pam!ci={CI_SECRET}")}
    )
    assert encoded.status_code == 200


@pytest.mark.parametrize(
    ("header_value", "reason"),
    [
        (f"root@pam!ci={CI_SECRET[:-1]}0", "invalid token value!"),
        (f"root@pam!nope={CI_SECRET}", "no such token 'nope' for user 'root@pam'"),
        (f"ghost@pve!ci={CI_SECRET}", "no such user ('ghost@pve')"),
        (f"root@pam={CI_SECRET}", "'root@pam' is not a valid token ID - not able to split into user and token parts"),
        ("root@pam!ci", "no tokenid specified"),
    ],
)
async def test_bad_token_reasons_before_9_1_5(client: httpx.AsyncClient, header_value: str, reason: str) -> None:
    response = await client.get("/version", headers={"Authorization": f"PVEAPIToken={header_value}"})
    assert (response.status_code, response.reason_phrase) == (401, reason)
    assert response.content == b""


async def test_valid_cookie_takes_precedence_over_a_token(client: httpx.AsyncClient) -> None:
    ticket = (await login(client))["ticket"]
    response = await client.get(
        "/cluster/status", headers={**cookie(ticket), **token_header("root@pam!ci", "not-the-secret")}
    )
    assert response.status_code == 200


async def test_privilege_separated_token_without_acl_gets_403(client: httpx.AsyncClient) -> None:
    response = await client.get("/cluster/status", headers=token_header("root@pam!ci", CI_SECRET))
    assert (response.status_code, response.reason_phrase) == (403, "Permission check failed (/, Sys.Audit)")
    assert response.json() == {"data": None, "message": "Permission check failed (/, Sys.Audit)\n"}
    nodes = await client.get("/nodes", headers=token_header("root@pam!ci", CI_SECRET))
    assert nodes.status_code == 200
    assert all("maxcpu" not in entry and "uptime" not in entry for entry in nodes.json()["data"])


async def test_tokens_with_sys_audit(client: httpx.AsyncClient) -> None:
    full = await client.get("/cluster/status", headers=token_header("root@pam!full", FULL_SECRET))
    assert full.status_code == 200
    mon = await client.get("/cluster/status", headers=token_header("alice@pve!mon", MON_SECRET))
    assert mon.status_code == 200


async def test_disabled_user_loses_tickets_and_tokens(start_sim: StartSim) -> None:
    users = [
        {"userid": "root@pam", "password": "pw"},
        {"userid": "dave@pve", "password": "pw", "enabled": False},
    ]
    tokens = [{"tokenid": "dave@pve!tk", "secret": CI_SECRET}]
    async with start_sim(users=users, tokens=tokens) as sim, client_for(sim) as http:
        login_response = await http.post("/access/ticket", data={"username": "dave@pve", "password": "pw"})
        assert login_response.status_code == 401
        token_response = await http.get("/version", headers=token_header("dave@pve!tk", CI_SECRET))
        assert (token_response.status_code, token_response.reason_phrase) == (401, "user 'dave@pve' is disabled")
