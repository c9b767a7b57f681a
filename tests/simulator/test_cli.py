"""The pve-simulator command line as a real subprocess: ready file, HTTPS, signals, no secrets in output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pve_simulator import client_ssl_context
from pve_simulator.cli import build_config, parse_args
from tests.simulator.support import API, CI_SECRET, ROOT_PASSWORD, SECRETS

START_TIMEOUT = 60


async def _start(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pve_simulator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _stop(proc: asyncio.subprocess.Process, signum: int) -> tuple[int, str, str]:
    proc.send_signal(signum)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def _exercise(ready: dict[str, Any]) -> tuple[str, str]:
    """Log in (good and bad), use ticket and token; return the ticket and CSRF token issued."""
    async with httpx.AsyncClient(base_url=ready["url"] + API, verify=client_ssl_context(ready["ca_path"])) as http:
        ok = await http.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD})
        assert ok.status_code == 200
        data = ok.json()["data"]
        bad = await http.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD + "x"})
        assert bad.status_code == 401
        nodes = await http.get("/nodes", headers={"Cookie": f"PVEAuthCookie={data['ticket']}"})
        assert {entry["node"]: entry["ssl_fingerprint"] for entry in nodes.json()["data"]} == ready["fingerprints"]
        token = await http.get("/version", headers={"Authorization": f"PVEAPIToken=root@pam!ci={CI_SECRET}"})
        assert token.json()["data"]["version"] == "8.4.1"
        bad_token = await http.get("/version", headers={"Authorization": f"PVEAPIToken=root@pam!ci={CI_SECRET[::-1]}"})
        assert bad_token.status_code == 401
    return data["ticket"], data["CSRFPreventionToken"]


async def test_cli_subprocess_lifecycle(cert_dir: Path, tmp_path: Path) -> None:
    ready_file = tmp_path / "run" / "ready.json"
    proc = await _start(
        "--port", "0",
        "--pve-version", "8.4.1",
        "--cluster-name", "demo",
        "--nodes", "pve1,pve2,pve3",
        "--user", f"root@pam:{ROOT_PASSWORD}",
        "--token", f"root@pam!ci={CI_SECRET}",
        "--auth-fail-delay", "0.05",
        "--cert-dir", str(cert_dir),
        "--ready-file", str(ready_file),
        "--control-port", "0",
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=START_TIMEOUT)).decode()
        ready = json.loads(ready_file.read_text())
        assert ready["url"] in line
        assert ready["url"] == f"https://127.0.0.1:{ready['port']}"
        assert ready["pid"] == proc.pid
        assert Path(ready["ca_path"]) == cert_dir / "pve-root-ca.pem"
        assert set(ready["fingerprints"]) == {"pve1", "pve2", "pve3"}
        assert ready["control_url"].startswith("http://127.0.0.1:")
        port = ready["port"]
        assert ready["node_urls"] == {f"pve{i}": f"https://127.0.0.{i}:{port}" for i in (1, 2, 3)}
        assert all(url in line for url in ready["node_urls"].values())
        ticket, csrf = await _exercise(ready)
        async with httpx.AsyncClient(verify=client_ssl_context(ready["ca_path"])) as http:
            pve3 = await http.get(
                f"{ready['node_urls']['pve3']}{API}/nodes", headers={"Cookie": f"PVEAuthCookie={ticket}"}
            )
            assert pve3.status_code == 200
        async with httpx.AsyncClient(base_url=ready["control_url"]) as control:
            assert (await control.get("/state")).json()["counters"]["login_attempts"] == 2
    finally:
        if proc.returncode is None:
            returncode, stdout, stderr = await _stop(proc, signal.SIGTERM)
    assert returncode == 0
    assert not ready_file.exists()
    output = line + stdout + stderr
    assert "authentication failure" in stderr
    assert "successful auth for user 'root@pam'" in stderr
    for secret in (*SECRETS, ticket, ticket.split("::")[1], csrf, csrf.split(":")[1]):
        assert secret not in output


async def test_cli_with_config_file_stops_on_sigint(cert_dir: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "sim.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "pve_version": "7.4-3",
                "nodes": [{"name": "pve1"}],
                "users": [{"userid": "root@pam", "password": ROOT_PASSWORD}],
                "auth_fail_delay": 0.05,
                "cert_dir": str(cert_dir),
            }
        )
    )
    ready_file = tmp_path / "ready.json"
    proc = await _start("--config", str(config_file), "--ready-file", str(ready_file))
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), timeout=START_TIMEOUT)
        ready = json.loads(ready_file.read_text())
        assert ready["cluster_name"] is None
        async with httpx.AsyncClient(base_url=ready["url"] + API, verify=client_ssl_context(ready["ca_path"])) as http:
            response = await http.post("/access/ticket", data={"username": "root@pam", "password": ROOT_PASSWORD})
            assert response.status_code == 200
            version = await http.get(
                "/version", headers={"Cookie": f"PVEAuthCookie={response.json()['data']['ticket']}"}
            )
            assert version.json()["data"] == {"version": "7.4-3", "release": "7.4", "repoid": "9002ab8a"}
    finally:
        if proc.returncode is None:
            returncode, _, stderr = await _stop(proc, signal.SIGINT)
    assert returncode == 0
    assert ROOT_PASSWORD not in stderr


async def test_cli_rejects_invalid_configuration_without_echoing_secrets(tmp_path: Path) -> None:
    proc = await _start("--nodes", "pve1=10.0.0.5", "--user", f"root@pam:{ROOT_PASSWORD}", "--token", "root@pam!x=nope")
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    text = stderr.decode()
    assert "invalid configuration" in text
    assert "loopback" in text
    assert ROOT_PASSWORD not in text + stdout.decode()


async def test_console_script_help() -> None:
    # `make venv` installs the simulator's console script next to the interpreter; `make demo` runs it.
    script = str(Path(sys.executable).with_name("pve-simulator"))
    assert os.path.exists(script), "the pve-simulator console script is not installed: run make venv"  # noqa: PTH110, ASYNC240
    proc = await asyncio.create_subprocess_exec(script, "--help", stdout=asyncio.subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    assert b"--pve-version" in stdout


def test_build_config_merges_file_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "sim.json"
    config_file.write_text(
        json.dumps(
            {
                "cluster_name": "lab",
                "nodes": [{"name": "a"}, {"name": "b", "level": "c"}],
                "users": [{"userid": "root@pam", "password": "file-pw"}, {"userid": "mon@pve", "password": "pw"}],
                "tokens": [{"tokenid": "mon@pve!tk", "secret": CI_SECRET}],
            }
        )
    )
    args = parse_args(
        [
            "--config", str(config_file),
            "--pve-version", "9.0.4",
            "--user", "root@pam:flag:pw",
            "--audit", "mon@pve",
            "--audit", "mon@pve!tk",
            "--tfa", "mon@pve",
            "--no-privsep", "mon@pve!tk",
            "--offline", "b",
            "--no-node-listeners",
        ]
    )  # fmt: skip
    config = build_config(args)
    assert config.node_listeners is False
    assert not config.per_node_listeners
    assert build_config(parse_args(["--nodes", "a"])).node_listeners is None
    assert config.pve_version == "9.0.4"
    assert config.cluster_name == "lab"
    assert [(n.name, n.online, n.level) for n in config.nodes] == [("a", True, ""), ("b", False, "c")]
    users = {u.userid: u for u in config.users}
    assert users["root@pam"].password.get_secret_value() == "flag:pw"
    assert users["mon@pve"].sys_audit
    assert users["mon@pve"].tfa
    token = config.tokens[0]
    assert token.sys_audit
    assert not token.privsep
    with pytest.raises(ValueError, match="not configured"):
        build_config(parse_args(["--audit", "ghost@pve"]))
