"""Logs name user and token ids, never passwords, tickets, CSRF tokens or token secrets."""

from __future__ import annotations

import logging

import httpx
import pytest

from pve_simulator import SimulatorServer
from tests.simulator.support import CAROL_PASSWORD, CI_SECRET, ROOT_PASSWORD, SECRETS, cookie, login, token_header


async def test_no_secret_in_logs(
    sim: SimulatorServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = await login(client)
    half = await login(client, "carol@pve", CAROL_PASSWORD)
    issued = [data["ticket"], data["CSRFPreventionToken"], half["ticket"]]
    await client.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD + "-wrong"})
    await client.post("/access/ticket", params={"username": "root@pam", "password": ROOT_PASSWORD})
    await client.get("/nodes", headers=cookie(data["ticket"]))
    await client.get("/nodes", headers=cookie(data["ticket"][:-4] + "AAAA"))
    await client.post("/nodes", headers=cookie(data["ticket"]))
    await client.get("/version", headers=token_header("root@pam!ci", CI_SECRET))
    await client.get("/version", headers=token_header("root@pam!ci", CI_SECRET.upper()))
    await client.post("/access/ticket", data={"username": "root@pam!ci", "password": CI_SECRET})
    # A malformed header: PVE's detailed reason echoes it back to the sender, the log must not.
    malformed = await client.get("/version", headers={"Authorization": f"PVEAPIToken=root@pam!ci:{CI_SECRET}=x"})
    assert CI_SECRET in (malformed.reason_phrase or "")

    # Only the server side: the test's own HTTP client logs its request URLs (with the query password).
    server_logs = "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if record.name.startswith(("pve_simulator", "aiohttp"))
    )
    text = server_logs + repr(sim.config)
    assert "root@pam" in server_logs
    assert "root@pam!ci" in server_logs
    assert "authentication failure" in server_logs
    for secret in (*SECRETS, CI_SECRET.upper(), *issued, *(value.split(":")[-1] for value in issued)):
        assert secret not in text
