"""GET /access/permissions as pve-access-control answers it: own rights, tokens, privilege separation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pve_simulator import SimulatorServer, TokenConfig, parse_flavour
from pve_simulator.privileges import all_privileges
from tests.simulator.support import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CI_SECRET,
    FULL_SECRET,
    MON_SECRET,
    StartSim,
    client_for,
    cookie,
    login,
    token_header,
)

DEFAULT_PATHS = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
BOB_SECRET = "3f2e1d0c-9b8a-4f6e-8d5c-4b3a2f1e0d9c"
BOB_TOKEN = TokenConfig(tokenid="bob@pve!own", secret=BOB_SECRET, sys_audit=True)


async def _permissions(http: httpx.AsyncClient, headers: dict[str, str], **params: str) -> Any:
    response = await http.get("/access/permissions", params=params, headers=headers)
    assert response.status_code == 200, (response.status_code, response.reason_phrase)
    return response.json()["data"]


async def test_root_has_every_privilege_everywhere(sim: SimulatorServer, client: httpx.AsyncClient) -> None:
    ticket = (await login(client))["ticket"]
    data = await _permissions(client, cookie(ticket))
    everything = dict.fromkeys(all_privileges(parse_flavour("8.4.1")), 1)
    assert set(data) == DEFAULT_PATHS
    for privileges in data.values():
        assert privileges == everything  # 1: the propagate flag
    assert await _permissions(client, cookie(ticket), path="/vms/100") == {"/vms/100": everything}
    # a root@pam token without privilege separation has the same; with it, only its own ACL
    assert await _permissions(client, token_header("root@pam!full", FULL_SECRET), path="/") == {"/": everything}
    assert await _permissions(client, token_header("root@pam!ci", CI_SECRET)) == {}


async def test_sys_audit_user_and_its_privilege_separated_token(client: httpx.AsyncClient) -> None:
    ticket = (await login(client, "alice@pve", ALICE_PASSWORD))["ticket"]
    data = await _permissions(client, cookie(ticket))
    assert data == {path: {"Sys.Audit": 1} for path in DEFAULT_PATHS}
    assert await _permissions(client, cookie(ticket), path="/nodes/pve2") == {"/nodes/pve2": {"Sys.Audit": 1}}
    # the token's own ACL (Sys.Audit) intersected with the user's
    mon = token_header("alice@pve!mon", MON_SECRET)
    assert await _permissions(client, mon, path="/") == {"/": {"Sys.Audit": 1}}
    # Sys.Audit lets alice read anybody's permissions, tokens included
    assert await _permissions(client, cookie(ticket), userid="bob@pve") == {}
    assert await _permissions(client, cookie(ticket), userid="root@pam!ci", path="/") == {"/": {}}


async def test_privilege_separated_token_with_more_acl_than_its_user(start_sim: StartSim) -> None:
    tokens = [TokenConfig(tokenid="alice@pve!wide", secret=BOB_SECRET, privileges=("VM.Audit", "Sys.Audit"))]
    async with start_sim(tokens=tokens) as sim, client_for(sim) as http:
        # alice herself only has Sys.Audit: VM.Audit is cut away
        data = await _permissions(http, token_header("alice@pve!wide", BOB_SECRET), path="/vms")
        assert data == {"/vms": {"Sys.Audit": 1}}


async def test_user_without_privileges(client: httpx.AsyncClient) -> None:
    ticket = (await login(client, "bob@pve", BOB_PASSWORD))["ticket"]
    assert await _permissions(client, cookie(ticket)) == {}
    assert await _permissions(client, cookie(ticket), path="/") == {"/": {}}
    assert await _permissions(client, cookie(ticket), userid="bob@pve") == {}
    response = await client.get("/access/permissions", params={"userid": "root@pam"}, headers=cookie(ticket))
    assert (response.status_code, response.reason_phrase) == (403, "Permission check failed (/access, Sys.Audit)")


@pytest.mark.parametrize(("version", "allowed"), [("8.4.1", True), ("8.2.4", False)])
async def test_own_tokens_without_sys_audit(start_sim: StartSim, version: str, allowed: bool) -> None:
    tokens = [BOB_TOKEN]
    async with start_sim(pve_version=version, tokens=tokens) as sim, client_for(sim) as http:
        ticket = (await login(http, "bob@pve", BOB_PASSWORD))["ticket"]
        response = await http.get("/access/permissions", params={"userid": "bob@pve!own"}, headers=cookie(ticket))
        if allowed:
            # the token has Sys.Audit in its ACL, bob has nothing: the intersection is empty
            assert (response.status_code, response.json()["data"]) == (200, {})
        else:
            assert response.status_code == 403
        # a token reading its own permissions is always allowed
        own = await _permissions(http, token_header("bob@pve!own", BOB_SECRET), path="/")
        assert own == {"/": {}}


async def test_parameters_are_validated(client: httpx.AsyncClient) -> None:
    headers = token_header("root@pam!full", FULL_SECRET)
    response = await client.get("/access/permissions", params={"userid": "no-realm"}, headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"] == {"userid": "value does not match the regex pattern"}
    response = await client.get("/access/permissions", params={"bogus": "1"}, headers=headers)
    assert response.status_code == 400
    assert (await client.get("/access/permissions")).status_code == 401


async def test_pve7_reports_the_old_pools_path(start_sim: StartSim) -> None:
    async with start_sim(pve_version="7.4-3") as sim, client_for(sim) as http:
        data = await _permissions(http, token_header("root@pam!full", FULL_SECRET))
        assert set(data) == (DEFAULT_PATHS - {"/pool"}) | {"/pools"}
        assert "VM.Monitor" in data["/"]
