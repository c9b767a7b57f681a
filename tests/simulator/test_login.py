"""POST /access/ticket: formats, failures, renewal, realms, TFA, tokens, flavours."""

from __future__ import annotations

import re
import time

import httpx

from pve_simulator import SimulatorServer, totp_code
from tests.simulator.support import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CAROL_PASSWORD,
    CAROL_TOTP,
    CI_SECRET,
    ROOT_PASSWORD,
    StartSim,
    client_for,
    cookie,
    login,
    token_header,
)

TICKET_RE = re.compile(r"^PVE:(?P<user>[^:]+):(?P<time>[0-9A-F]{8})::(?P<sig>[A-Za-z0-9+/]+={0,2})$")
CSRF_RE = re.compile(r"^(?P<time>[0-9A-F]{8}):[A-Za-z0-9+/]{43}$")
CAP_KEYS_8 = {"vms", "access", "storage", "nodes", "sdn", "dc", "mapping"}


async def test_login_form_encoded(client: httpx.AsyncClient) -> None:
    data = await login(client)
    assert data["username"] == "root@pam"
    match = TICKET_RE.match(data["ticket"])
    assert match is not None
    assert match["user"] == "root@pam"
    assert abs(int(match["time"], 16) - time.time()) < 60
    assert CSRF_RE.match(data["CSRFPreventionToken"])
    assert set(data["cap"]) == CAP_KEYS_8
    assert data["cap"]["dc"]["Sys.Audit"] == 1
    assert data["cap"]["nodes"]["Sys.Audit"] == 1
    assert data["clustername"] == "demo"
    assert "NeedTFA" not in data


async def test_login_json_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/access/ticket", json={"username": "alice@pve", "password": ALICE_PASSWORD, "new-format": True}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["username"] == "alice@pve"
    assert data["clustername"] == "demo"
    assert data["cap"]["dc"] == {"Sys.Audit": 1}
    assert data["cap"]["vms"] == {}


async def test_user_without_sys_audit_gets_no_clustername(client: httpx.AsyncClient) -> None:
    data = await login(client, "bob@pve", BOB_PASSWORD)
    assert "clustername" not in data
    assert set(data["cap"]) == CAP_KEYS_8
    assert all(group == {} for group in data["cap"].values())


async def test_wrong_password_is_401_after_the_delay(start_sim: StartSim) -> None:
    async with start_sim(auth_fail_delay=0.3) as sim, client_for(sim) as http:
        started = time.monotonic()
        response = await http.post("/access/ticket", data={"username": "root@pam", "password": "wrong"})
        elapsed = time.monotonic() - started
        assert response.status_code == 401
        assert response.reason_phrase == "authentication failure"
        assert response.json() == {"data": None, "message": "authentication failure\n"}
        assert response.headers["Connection"] == "close"
        assert elapsed >= 0.3
        assert sim.counters.login_attempts == 1
        assert sim.counters.login_failures == 1


async def test_unknown_user_fails_like_a_wrong_password(client: httpx.AsyncClient) -> None:
    response = await client.post("/access/ticket", data={"username": "nobody@pve", "password": "x"})
    assert (response.status_code, response.reason_phrase) == (401, "authentication failure")


async def test_old_servers_send_no_message_in_the_body(start_sim: StartSim) -> None:
    async with start_sim(pve_version="8.2.4") as sim, client_for(sim) as http:
        response = await http.post("/access/ticket", data={"username": "root@pam", "password": "wrong"})
        assert (response.status_code, response.reason_phrase) == (401, "authentication failure")
        assert response.json() == {"data": None}


async def test_missing_password_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/access/ticket", data={"username": "root@pam"})
    assert response.status_code == 400
    assert response.reason_phrase == "Parameter verification failed."
    assert response.json() == {
        "data": None,
        "errors": {"password": "property is missing and it is not optional"},
        "message": "Parameter verification failed.\n",
    }


async def test_missing_password_on_old_servers(start_sim: StartSim) -> None:
    async with start_sim(pve_version="7.4-3") as sim, client_for(sim) as http:
        response = await http.post("/access/ticket", data={"username": "root@pam"})
        assert response.status_code == 400
        assert response.json() == {"data": None, "errors": {"password": "property is missing and it is not optional"}}


async def test_unknown_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD, "bogus": "1"}
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "bogus": "property is not defined in schema and the schema does not allow additional properties"
    }


async def test_invalid_realm_and_boolean_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/access/ticket",
        data={"username": "root", "password": ROOT_PASSWORD, "realm": "1bad", "new-format": "yes"},
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "realm": "invalid format - value does not look like a valid realm\n",
        "new-format": "type check ('boolean') failed - got 'yes'",
    }


async def test_realm_parameter_is_appended(client: httpx.AsyncClient) -> None:
    response = await client.post("/access/ticket", data={"username": "root", "realm": "pam", "password": ROOT_PASSWORD})
    assert response.status_code == 200
    assert response.json()["data"]["username"] == "root@pam"


async def test_realm_doubling_fails(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/access/ticket", data={"username": "root@pam", "realm": "pam", "password": ROOT_PASSWORD}
    )
    assert (response.status_code, response.reason_phrase) == (401, "authentication failure")


async def test_ticket_as_password_renews(client: httpx.AsyncClient) -> None:
    first = await login(client)
    second = await login(client, "root@pam", first["ticket"])
    assert TICKET_RE.match(second["ticket"])
    assert "cap" in second
    response = await client.get("/cluster/status", headers=cookie(second["ticket"]))
    assert response.status_code == 200


async def test_root_ticket_renews_for_other_users_but_others_cannot(client: httpx.AsyncClient) -> None:
    root = await login(client)
    as_alice = await login(client, "alice@pve", root["ticket"])
    assert as_alice["username"] == "alice@pve"
    assert TICKET_RE.match(as_alice["ticket"])["user"] == "alice@pve"  # type: ignore[index]
    bob = await login(client, "bob@pve", BOB_PASSWORD)
    response = await client.post("/access/ticket", data={"username": "alice@pve", "password": bob["ticket"]})
    assert response.status_code == 401


async def test_tfa_user_gets_need_tfa_and_can_complete_with_totp(
    sim: SimulatorServer, client: httpx.AsyncClient
) -> None:
    half = await login(client, "carol@pve", CAROL_PASSWORD)
    assert half["NeedTFA"] == 1
    assert "cap" not in half
    assert half["ticket"].startswith("PVE:!tfa!")
    assert CSRF_RE.match(half["CSRFPreventionToken"])

    rejected = await client.get("/version", headers=cookie(half["ticket"]))
    assert rejected.status_code == 401

    code = totp_code(CAROL_TOTP, sim.clock.time())
    response = await client.post(
        "/access/ticket",
        data={"username": "carol@pve", "password": f"totp:{code}", "tfa-challenge": half["ticket"]},
    )
    assert response.status_code == 200
    full = response.json()["data"]
    assert "NeedTFA" not in full
    assert "cap" in full
    assert TICKET_RE.match(full["ticket"])

    wrong = await client.post(
        "/access/ticket",
        data={"username": "carol@pve", "password": "totp:000000", "tfa-challenge": half["ticket"]},
    )
    assert wrong.status_code == 401


async def test_pve7_old_format_tfa_ticket(start_sim: StartSim) -> None:
    async with start_sim(pve_version="7.4-3") as sim, client_for(sim) as http:
        data = await login(http, "carol@pve", CAROL_PASSWORD)
        assert data["NeedTFA"] == 1
        assert data["ticket"].startswith("PVE:tfa!carol@pve:")
        response = await http.get("/version", headers=cookie(data["ticket"]))
        assert (response.status_code, response.reason_phrase) == (401, "No ticket")


async def test_tokens_cannot_log_in(client: httpx.AsyncClient) -> None:
    as_user = await client.post("/access/ticket", data={"username": "root@pam!ci", "password": CI_SECRET})
    assert (as_user.status_code, as_user.reason_phrase) == (401, "authentication failure")

    with_header = await client.post(
        "/access/ticket",
        data={"username": "root@pam", "password": ROOT_PASSWORD},
        headers=token_header("root@pam!ci", CI_SECRET),
    )
    assert with_header.status_code == 403
    assert with_header.reason_phrase == (
        "Permission check failed (URI '/access/ticket' not available with API token, need proper ticket.)"
    )


async def test_path_privs_verification_mode(client: httpx.AsyncClient) -> None:
    ok = await client.post(
        "/access/ticket",
        data={"username": "alice@pve", "password": ALICE_PASSWORD, "path": "/", "privs": "Sys.Audit"},
    )
    assert ok.status_code == 200
    assert ok.json()["data"]["username"] == "alice@pve"
    assert "ticket" not in ok.json()["data"]
    denied = await client.post(
        "/access/ticket",
        data={"username": "bob@pve", "password": BOB_PASSWORD, "path": "/", "privs": "Sys.Audit"},
    )
    assert denied.status_code == 401
    incomplete = await client.post("/access/ticket", data={"username": "bob@pve", "password": "x", "path": "/"})
    assert incomplete.status_code == 400
    assert incomplete.json()["errors"] == {"privs": "missing property required by 'path'"}


async def test_flavour_caps_and_standalone_clustername(start_sim: StartSim) -> None:
    async with start_sim(pve_version="7.4-3") as sim, client_for(sim) as http:
        data = await login(http)
        assert set(data["cap"]) == CAP_KEYS_8 - {"mapping"}
    async with start_sim(cluster_name=None, nodes=[{"name": "pve1"}]) as sim, client_for(sim) as http:
        data = await login(http)
        assert "clustername" not in data
        assert set(data["cap"]) == CAP_KEYS_8


async def test_get_ticket_is_a_dummy(client: httpx.AsyncClient) -> None:
    response = await client.get("/access/ticket")
    assert response.status_code == 200
    assert response.json() == {"data": None}
