"""``pve-simulator`` / ``python -m pve_simulator``: run a simulated PVE cluster until SIGTERM/SIGINT.

Example::

    pve-simulator --port 0 --pve-version 8.4.1 --cluster-name demo --nodes pve1,pve2,pve3 \\
        --user root@pam:PASSWORD --token 'root@pam!ci=UUID' --auth-fail-delay 3 \\
        --cert-dir DIR --ready-file PATH

Everything can also come from ``--config FILE`` (JSON or YAML, the fields of
:class:`~pve_simulator.config.SimulatorConfig`), which keeps passwords off the command line; flags
override the file.  ``--user``/``--token`` add accounts (replacing ones with the same id),
``--nodes`` replaces the node list, ``--audit``/``--tfa``/``--no-privsep``/``--offline`` adjust
entries from either source.

With several nodes every node listens on its own 127.x address on the same port
(``--no-node-listeners``: only the first node, on ``--listen``).  Once listening, the ready file (if
requested) is written atomically (with every node's URL under ``node_urls``) and one line with the URL
(and the node URLs) is printed to stdout.  Logs go to stderr and name user/token ids only, never
passwords, tickets, CSRF tokens or token secrets.  The ready file is removed again on a clean shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pve_simulator.config import SimulatorConfig, load_mapping
from pve_simulator.server import SimulatorServer
from pve_simulator.state import LOGGER_NAME

__all__ = ["build_config", "main", "parse_args"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pve-simulator",
        description="Simulate the Proxmox VE HTTPS API of a cluster (or standalone node) on loopback.",
    )
    add = parser.add_argument
    add("--config", type=Path, metavar="FILE", help="JSON/YAML configuration file (flags override it)")
    add("--listen", metavar="ADDRESS", help="listen address, 127.x only (default 127.0.0.1)")
    add("--port", type=int, help="API port, the same on every node; 0 picks a free port (default 0)")
    add(
        "--node-listeners",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one HTTPS listener per node on the node's own 127.x address (default: on with several nodes)",
    )
    add("--control-port", type=int, metavar="PORT", help="also serve the plain-HTTP control API (0: free port)")
    add("--pve-version", metavar="VERSION", help="pve-manager version to imitate, e.g. 8.4.1 or 7.4-3")
    add("--repoid", metavar="HEX", help="override the repoid reported by /version")
    add("--cluster-name", metavar="NAME", help="corosync cluster name (omit for a standalone node)")
    add("--nodes", metavar="LIST", help="comma-separated nodes, each NAME or NAME=IP (127.x)")
    add("--offline", action="append", default=[], metavar="NODE", help="start NODE offline (repeatable)")
    add("--domain", metavar="DOMAIN", help="DNS search domain (node FQDN = NAME.DOMAIN)")
    add("--user", action="append", default=[], metavar="USERID:PASSWORD", help="add a user (repeatable)")
    add("--tfa", action="append", default=[], metavar="USERID", help="USERID has TFA configured (repeatable)")
    add(
        "--audit",
        action="append",
        default=[],
        metavar="AUTHID",
        help="grant Sys.Audit on / to a user or token (repeatable; root@pam has everything)",
    )
    add("--token", action="append", default=[], metavar="TOKENID=SECRET", help="add an API token (repeatable)")
    add("--no-privsep", action="append", default=[], metavar="TOKENID", help="disable privilege separation")
    add("--auth-fail-delay", type=float, metavar="SECONDS", help="delay of failed authentications (default 3)")
    add("--keepalive-timeout", type=float, metavar="SECONDS", help="idle keep-alive timeout (default 5)")
    add(
        "--virtual-clusters",
        type=int,
        metavar="COUNT",
        help="serve COUNT virtual clusters <cluster-name>-<k> under /vc/<k>/ (a path-routing proxy; default 0: off)",
    )
    add("--cert-dir", type=Path, metavar="DIR", help="certificate directory, reused across runs (default: temp)")
    add("--ready-file", type=Path, metavar="PATH", help="write a JSON ready file once listening")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    return _parser().parse_args(argv)


def _upsert(items: list[dict[str, Any]], key: str, item: dict[str, Any]) -> None:
    for index, existing in enumerate(items):
        if existing.get(key) == item[key]:
            items[index] = {**existing, **item}
            return
    items.append(item)


def _modify(items: list[dict[str, Any]], key: str, ident: str, flag: str, what: str) -> None:
    for item in items:
        if item.get(key) == ident:
            item[flag] = flag != "privsep"
            return
    raise ValueError(f"{what} '{ident}' is not configured")


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """Merge ``--config`` and the flags into a validated :class:`SimulatorConfig`.

    Raises:
        ValueError: malformed flags; ``pydantic.ValidationError``: invalid configuration.
    """
    data: dict[str, Any] = load_mapping(args.config) if args.config else {}
    scalars = {
        "listen_address": args.listen,
        "port": args.port,
        "node_listeners": args.node_listeners,
        "control_port": args.control_port,
        "pve_version": args.pve_version,
        "repoid": args.repoid,
        "cluster_name": args.cluster_name,
        "domain": args.domain,
        "auth_fail_delay": args.auth_fail_delay,
        "keepalive_timeout": args.keepalive_timeout,
        "cert_dir": args.cert_dir,
        "virtual_clusters": args.virtual_clusters,
    }
    data.update({key: value for key, value in scalars.items() if value is not None})

    if args.nodes:
        nodes = []
        for spec in args.nodes.split(","):
            name, sep, ip = spec.strip().partition("=")
            nodes.append({"name": name, **({"ip": ip} if sep else {})})
        data["nodes"] = nodes
    nodes_list = [dict(node) for node in data.get("nodes", [])] or [{"name": "pve1"}]
    for name in args.offline:
        for node in nodes_list:
            if node.get("name") == name:
                node["online"] = False
                break
        else:
            raise ValueError(f"node '{name}' is not configured")
    data["nodes"] = nodes_list

    users = [dict(user) for user in data.get("users", [])]
    for spec in args.user:
        userid, sep, password = spec.partition(":")
        if not sep:
            raise ValueError("--user expects USERID:PASSWORD")
        _upsert(users, "userid", {"userid": userid, "password": password})
    tokens = [dict(token) for token in data.get("tokens", [])]
    for spec in args.token:
        tokenid, sep, secret = spec.rpartition("=")
        if not sep:
            raise ValueError("--token expects TOKENID=SECRET")
        _upsert(tokens, "tokenid", {"tokenid": tokenid, "secret": secret})
    for userid in args.tfa:
        _modify(users, "userid", userid, "tfa", "user")
    for authid in args.audit:
        if "!" in authid:
            _modify(tokens, "tokenid", authid, "sys_audit", "token")
        else:
            _modify(users, "userid", authid, "sys_audit", "user")
    for tokenid in args.no_privsep:
        _modify(tokens, "tokenid", tokenid, "privsep", "token")
    data["users"] = users
    data["tokens"] = tokens
    return SimulatorConfig.model_validate(data)


async def _serve(config: SimulatorConfig, ready_file: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log = logging.getLogger(LOGGER_NAME)
    async with SimulatorServer(config) as sim:
        if ready_file is not None:
            sim.write_ready_file(ready_file)
        control = f" (control: {sim.control_url})" if sim.control_url else ""
        nodes = ""
        if sim.per_node_listeners:
            nodes = " nodes: " + ", ".join(f"{name}={url}" for name, url in sim.node_urls.items())
        print(f"pve-simulator listening on {sim.url}{control}{nodes}", flush=True)
        await stop.wait()
        log.info("shutting down")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = build_config(args)
    except (ValueError, TypeError, OSError) as exc:  # ValidationError is a ValueError
        detail = str(exc) if not isinstance(exc, ValidationError) else _validation_text(exc)
        print(f"pve-simulator: invalid configuration: {detail}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.ready_file))
    except OSError as exc:
        print(f"pve-simulator: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    return 0


def _validation_text(exc: ValidationError) -> str:
    """Validation errors without the offending input values (they may be secrets)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "config"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
