"""Running a simulator: :class:`SimulatorServer` (asyncio) and :class:`SimulatorThread` (sync code).

Start-up mirrors a node coming up: the cluster CA and the node certificates are loaded or created
(pve-cluster ``src/PVE/Cluster/Setup.pm`` ``gen_pve_node_files``; see :mod:`pve_simulator.certs`), then
the HTTPS listener serves the API as the first node (pveproxy, port 8006 on a real node; here the
configured port, ``0`` for a free one), optionally next to the plain-HTTP control listener.

Example::

    config = SimulatorConfig(
        cluster_name="demo",
        nodes=[NodeConfig(name="pve1"), NodeConfig(name="pve2")],
        users=[UserConfig(userid="root@pam", password="secret")],
        auth_fail_delay=0.05,
    )
    async with SimulatorServer(config) as sim:
        httpx.get(f"{sim.url}/api2/json/version", verify=ssl.create_default_context(cafile=sim.ca_path))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from pve_simulator.access import AccessControl
from pve_simulator.app import build_api_app
from pve_simulator.certs import (
    CertificateAuthority,
    NodeCertificate,
    NodeIdentity,
    ensure_cluster_certs,
    server_ssl_context,
)
from pve_simulator.clock import Clock
from pve_simulator.config import SimulatorConfig
from pve_simulator.control import build_control_app
from pve_simulator.counters import RequestCounters
from pve_simulator.faults import Faults
from pve_simulator.flavour import Flavour
from pve_simulator.model import Cluster, Node
from pve_simulator.state import Simulation

__all__ = ["SimulatorServer", "SimulatorThread", "write_json_atomic"]

_SHUTDOWN_TIMEOUT = 1.0


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so readers never see a partial file (temp file + rename in the same directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SimulatorServer:
    """A running simulated PVE cluster (use as ``async with SimulatorServer(config) as sim``).

    Args:
        config: the cluster to simulate.
        clock: time source for tickets, tokens, uptime (default: system clock); pass a
            :class:`~pve_simulator.clock.ManualClock` to test expiry.
        logger: logger for requests and authentication (default: ``pve_simulator``).
    """

    def __init__(
        self, config: SimulatorConfig, *, clock: Clock | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.simulation = Simulation(config, clock=clock, logger=logger)
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._cert_dir: Path | None = None
        self._ca: CertificateAuthority | None = None
        self._node_certs: dict[str, NodeCertificate] = {}
        self._runner: web.AppRunner | None = None
        self._control_runner: web.AppRunner | None = None
        self._port: int | None = None
        self._control_port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create/load certificates and start listening."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        config = self.config
        if config.cert_dir is not None:
            self._cert_dir = Path(config.cert_dir)
        else:
            self._tempdir = tempfile.TemporaryDirectory(prefix="pve-simulator-")
            self._cert_dir = Path(self._tempdir.name)
        identities = [NodeIdentity(node.name, node.ip, node.fqdn) for node in self.cluster]
        try:
            self._ca, self._node_certs = await asyncio.to_thread(ensure_cluster_certs, self._cert_dir, identities)
            for node in self.cluster:
                node.fingerprint = self._node_certs[node.name].fingerprint
            await self._start_api()
            if config.control_port is not None:
                await self._start_control()
        except BaseException:
            await self.stop()
            raise
        self.log.info(
            "PVE %s simulator (%s) listening on %s as node %s",
            self.flavour.version,
            f"cluster '{self.cluster.name}'" if self.cluster.name else "standalone",
            self.url,
            self.node.name,
        )

    async def _start_api(self) -> None:
        node = self.node
        runner = web.AppRunner(
            build_api_app(self.simulation, node),
            access_log=None,
            keepalive_timeout=self.config.keepalive_timeout,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(
            runner,
            str(self.config.listen_address),
            self.config.port,
            ssl_context=server_ssl_context(self._node_certs[node.name]),
        )
        await site.start()
        self._port = int(runner.addresses[0][1])

    async def _start_control(self) -> None:
        runner = web.AppRunner(
            build_control_app(self.simulation, self.state), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        self._control_runner = runner
        site = web.TCPSite(runner, str(self.config.listen_address), self.config.control_port or 0)
        await site.start()
        self._control_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and remove a temporary certificate directory."""
        for runner in (self._control_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._control_runner = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- what tests use -------------------------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        """The configuration."""
        return self.simulation.config

    @property
    def flavour(self) -> Flavour:
        """The PVE release behaviour."""
        return self.simulation.flavour

    @property
    def clock(self) -> Clock:
        """The simulator's clock."""
        return self.simulation.clock

    @property
    def cluster(self) -> Cluster:
        """The cluster model (nodes, membership, quorum)."""
        return self.simulation.cluster

    @property
    def node(self) -> Node:
        """The node the listener answers as (the first configured node)."""
        return self.cluster.local

    @property
    def faults(self) -> Faults:
        """Injected faults; change them at any time."""
        return self.simulation.faults

    @property
    def counters(self) -> RequestCounters:
        """What the listener received."""
        return self.simulation.counters

    @property
    def access(self) -> AccessControl:
        """Authentication state (e.g. ``sim.access.assemble_ticket("root@pam")``)."""
        return self.simulation.access

    @property
    def log(self) -> logging.Logger:
        """The simulator's logger."""
        return self.simulation.log

    @property
    def host(self) -> str:
        """The listen address."""
        return str(self.config.listen_address)

    @property
    def port(self) -> int:
        """The API port (known once started)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://{self.host}:{self.port}"

    @property
    def control_url(self) -> str | None:
        """``http://127.0.0.1:<port>`` of the control listener, ``None`` without one."""
        return None if self._control_port is None else f"http://{self.host}:{self._control_port}"

    @property
    def cert_dir(self) -> Path:
        """Where the certificates live."""
        if self._cert_dir is None:
            raise RuntimeError("simulator not started")
        return self._cert_dir

    @property
    def ca_path(self) -> Path:
        """Path of ``pve-root-ca.pem``."""
        if self._ca is None:
            raise RuntimeError("simulator not started")
        return self._ca.cert_path

    @property
    def ca_pem(self) -> str:
        """The cluster CA certificate (PEM)."""
        if self._ca is None:
            raise RuntimeError("simulator not started")
        return self._ca.pem.decode("ascii")

    @property
    def node_certs(self) -> dict[str, NodeCertificate]:
        """Every node's certificate."""
        return dict(self._node_certs)

    @property
    def fingerprints(self) -> dict[str, str]:
        """Node name -> SHA-256 certificate fingerprint (``AA:BB:...``)."""
        return {name: cert.fingerprint for name, cert in self._node_certs.items()}

    def set_node_online(self, name: str, online: bool) -> None:
        """Take a node offline or bring it back (cluster membership)."""
        self.faults.set_node_online(name, online)

    def state(self) -> dict[str, Any]:
        """Everything about the running simulator (``GET /state`` of the control listener)."""
        return {
            "url": self.url,
            "pve_version": self.flavour.version,
            "cluster_name": self.cluster.name,
            "quorate": self.cluster.quorate,
            "local_node": self.node.name,
            "nodes": [
                {"name": node.name, "ip": node.ip, "online": node.online, "fingerprint": node.fingerprint}
                for node in self.cluster
            ],
            "faults": self.faults.to_dict(),
            "counters": self.counters.snapshot(),
            "time": self.clock.time(),
        }

    def ready_info(self) -> dict[str, Any]:
        """The ready-file document: how to reach and trust the simulator."""
        return {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "ca_path": str(self.ca_path),
            "cert_dir": str(self.cert_dir),
            "pid": os.getpid(),
            "pve_version": self.flavour.version,
            "cluster_name": self.cluster.name,
            "node": self.node.name,
            "fingerprints": self.fingerprints,
            "nodes": {node.name: {"ip": node.ip, "fingerprint": node.fingerprint} for node in self.cluster},
            "control_url": self.control_url,
        }

    def write_ready_file(self, path: Path | str) -> None:
        """Atomically write :meth:`ready_info` as JSON."""
        write_json_atomic(Path(path), self.ready_info())


class SimulatorThread:
    """Run a :class:`SimulatorServer` on its own event loop in a background thread.

    ``with SimulatorThread(config) as sim:`` yields the started :class:`SimulatorServer`; its
    properties, ``faults``, ``counters`` and the clock are safe to use from the calling thread.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.server = SimulatorServer(config, clock=clock, logger=logger)
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> SimulatorServer:
        """Start the thread and wait until the simulator listens (re-raising start-up errors)."""
        self._thread = threading.Thread(target=self._run, name="pve-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError("PVE simulator did not start in time")
        if self._error is not None:
            raise self._error
        return self.server

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    def stop(self) -> None:
        """Stop the simulator and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
