"""Running a simulator: :class:`SimulatorServer` (asyncio) and :class:`SimulatorThread` (sync code).

Start-up mirrors nodes coming up: the cluster CA and the node certificates are loaded or created
(pve-cluster ``src/PVE/Cluster/Setup.pm`` ``gen_pve_node_files``; see :mod:`pve_simulator.certs`), then
the HTTPS listeners serve the API (pveproxy, port 8006 on a real node; here the configured port, ``0``
for a free one), optionally next to the plain-HTTP control listener:

* with more than one node (or ``node_listeners=True``) every node listens on its own loopback address
  (its ``ip``: 127.0.0.1, 127.0.0.2, ...) on the same port, with its own certificate, answering as
  itself (:mod:`pve_simulator.listeners`); tickets and CSRF tokens are valid on every node (one auth
  key for the cluster, as ``/etc/pve/authkey.key``);
* otherwise (or with ``node_listeners=False``) a single listener on ``listen_address`` answers as the
  first node.

Per node: :meth:`SimulatorServer.node_url`, :meth:`~SimulatorServer.node_faults`,
:meth:`~SimulatorServer.node_counters`, :meth:`~SimulatorServer.presented_fingerprint`, and
:meth:`~SimulatorServer.stop_node_listener`/:meth:`~SimulatorServer.start_node_listener` (async) or
:meth:`~SimulatorServer.set_node_listening` (from any other thread, e.g. next to a
:class:`SimulatorThread`).

Example::

    config = SimulatorConfig(
        cluster_name="demo",
        nodes=[NodeConfig(name="pve1"), NodeConfig(name="pve2")],
        users=[UserConfig(userid="root@pam", password="secret")],
        auth_fail_delay=0.05,
    )
    async with SimulatorServer(config) as sim:
        httpx.get(f"{sim.url}/api2/json/version", verify=ssl.create_default_context(cafile=sim.ca_path))
        httpx.get(f"{sim.node_url('pve2')}/api2/json/version", ...)   # https://127.0.0.2:<same port>
        sim.node_faults("pve2").update({"reset": 1})                  # next request on pve2: TCP RST
        await sim.stop_node_listener("pve2")                          # pve2 refuses connections
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from aiohttp import web

from pve_simulator.access import AccessControl
from pve_simulator.certs import (
    CertificateAuthority,
    NodeCertificate,
    NodeIdentity,
    NodeTls,
    ensure_cluster_certs,
)
from pve_simulator.clock import Clock
from pve_simulator.config import SimulatorConfig
from pve_simulator.control import build_control_app
from pve_simulator.counters import RequestCounters
from pve_simulator.faults import Faults, NodeFaults
from pve_simulator.flavour import Flavour
from pve_simulator.listeners import NodeListener, bind_same_port
from pve_simulator.model import Cluster, Node
from pve_simulator.state import Simulation

__all__ = ["SimulatorServer", "SimulatorThread", "write_json_atomic"]

_SHUTDOWN_TIMEOUT = 1.0
_CALL_TIMEOUT = 30.0
_P = ParamSpec("_P")
_T = TypeVar("_T")


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
        self._listeners: dict[str, NodeListener] = {}
        self._control_runner: web.AppRunner | None = None
        self._port: int | None = None
        self._control_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create/load certificates and start listening."""
        if self._listeners:
            raise RuntimeError("simulator already started")
        self._loop = asyncio.get_running_loop()
        config = self.config
        if config.cert_dir is not None:
            self._cert_dir = Path(config.cert_dir)
        else:
            self._tempdir = tempfile.TemporaryDirectory(prefix="pve-simulator-")
            self._cert_dir = Path(self._tempdir.name)
        identities = {node.name: NodeIdentity(node.name, node.ip, node.fqdn) for node in self.cluster}
        try:
            self._ca, self._node_certs = await asyncio.to_thread(
                ensure_cluster_certs, self._cert_dir, list(identities.values())
            )
            for node in self.cluster:
                node.fingerprint = self._node_certs[node.name].fingerprint
                self.simulation.tls[node.name] = NodeTls(
                    self._cert_dir,
                    identities[node.name],
                    self._node_certs[node.name],
                    self._swap_checker(node.name),
                )
            await self._start_api()
            if config.control_port is not None:
                await self._start_control()
        except BaseException:
            await self.stop()
            raise
        self.log.info(
            "PVE %s simulator (%s) listening on %s",
            self.flavour.version,
            f"cluster '{self.cluster.name}'" if self.cluster.name else "standalone",
            ", ".join(f"{name} {url}" for name, url in self.node_urls.items()),
        )

    def _swap_checker(self, name: str) -> Callable[[], bool]:
        return lambda: self.simulation.certificate_swapped(name)

    async def _start_api(self) -> None:
        config = self.config
        if config.per_node_listeners:
            serving = {node.name: node.ip for node in self.cluster}
        else:
            serving = {self.node.name: str(config.listen_address)}
        port, sockets = bind_same_port(list(serving.values()), config.port)
        pending = dict(zip(serving, sockets, strict=True))
        try:
            for name, host in serving.items():
                listener = NodeListener(
                    self.simulation,
                    self.cluster.node(name),
                    host,
                    self.simulation.tls[name],
                    keepalive_timeout=config.keepalive_timeout,
                    shutdown_timeout=_SHUTDOWN_TIMEOUT,
                )
                self._listeners[name] = listener
                await listener.start(pending.pop(name))  # the listener owns (and closes) it from here
        finally:
            for sock in pending.values():
                sock.close()
        self._port = port

    async def _start_control(self) -> None:
        runner = web.AppRunner(
            build_control_app(self.simulation, self.state, self._set_listening),
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._control_runner = runner
        site = web.TCPSite(runner, str(self.config.listen_address), self.config.control_port or 0)
        await site.start()
        self._control_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and remove a temporary certificate directory."""
        if self._control_runner is not None:
            await self._control_runner.cleanup()
        self._control_runner = None
        await asyncio.gather(*(listener.stop() for listener in self._listeners.values()))
        self._listeners = {}
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
        """The first configured node: the one :attr:`url` reaches (and a single listener answers as)."""
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
        """The first node's listen address (``listen_address``, or its ``ip`` with per-node listeners)."""
        listener = self._listeners.get(self.node.name)
        return listener.host if listener is not None else str(self.config.listen_address)

    @property
    def port(self) -> int:
        """The API port (known once started)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``: the first node's listener."""
        return f"https://{self.host}:{self.port}"

    @property
    def control_url(self) -> str | None:
        """``http://127.0.0.1:<port>`` of the control listener, ``None`` without one."""
        if self._control_port is None:
            return None
        return f"http://{self.config.listen_address}:{self._control_port}"

    @property
    def per_node_listeners(self) -> bool:
        """Whether every node has its own listener (else only the first node has one)."""
        return self.config.per_node_listeners

    def _listener(self, name: str) -> NodeListener:
        self.cluster.node(name)  # KeyError for unknown nodes
        try:
            return self._listeners[name]
        except KeyError:
            if not self._listeners:
                raise RuntimeError("simulator not started") from None
            raise KeyError(f"node '{name}' has no listener (single-listener mode)") from None

    def node_url(self, name: str) -> str:
        """``https://<node ip>:<port>`` of a node's listener (``KeyError`` if it has none)."""
        return self._listener(name).url

    @property
    def node_urls(self) -> dict[str, str]:
        """Node name -> URL of its listener (only the first node with a single listener)."""
        return {name: listener.url for name, listener in self._listeners.items()}

    def node_listening(self, name: str) -> bool:
        """Whether the node's listener accepts connections."""
        return self._listener(name).listening

    async def stop_node_listener(self, name: str) -> None:
        """Stop node ``name``'s pveproxy: new connections are refused, open ones are closed.

        The node stays an online cluster member; combine with :meth:`set_node_online` for a node
        that is down altogether.  Call from the simulator's event loop (see :meth:`set_node_listening`
        for other threads).
        """
        await self._listener(name).stop()
        self.log.info("node %s stopped listening", name)

    async def start_node_listener(self, name: str) -> None:
        """Start node ``name``'s pveproxy again, on the same address and port."""
        await self._listener(name).start()
        self.log.info("node %s listening again on %s", name, self.node_url(name))

    async def _set_listening(self, name: str, listening: bool) -> None:
        if listening:
            await self.start_node_listener(name)
        else:
            await self.stop_node_listener(name)

    def call(
        self,
        function: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``await function(*args, **kwargs)`` on the simulator's event loop and wait for the result.

        For code on another thread than the simulator's loop (e.g. a :class:`SimulatorThread`)::

            sim.call(sim.stop_node_listener, "pve2")

        Raises:
            RuntimeError: not started, or called from the simulator's own event loop (use ``await``).
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("simulator not started")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("call() would deadlock on the simulator's own event loop; await instead")
        return asyncio.run_coroutine_threadsafe(_as_coroutine(function(*args, **kwargs)), loop).result(_CALL_TIMEOUT)

    def set_node_listening(self, name: str, listening: bool) -> None:
        """Thread-safe :meth:`stop_node_listener`/:meth:`start_node_listener` for code on another thread."""
        self.call(self._set_listening, name, listening)

    def node_faults(self, name: str) -> NodeFaults:
        """Faults of one node only (``sim.faults`` applies to every node); ``KeyError`` if unknown."""
        return self.faults.node(name)

    def node_counters(self, name: str) -> RequestCounters:
        """What node ``name``'s listener received (``sim.counters`` counts every listener)."""
        return self.simulation.node_counters[name]

    def reset_counters(self) -> None:
        """Zero the cluster-wide and every node's counters."""
        self.counters.reset()
        for counters in self.simulation.node_counters.values():
            counters.reset()

    def presented_certificate(self, name: str) -> NodeCertificate:
        """The certificate node ``name`` presents now (its ``pve-ssl.pem``, or the swapped-in one)."""
        self.cluster.node(name)
        tls = self.simulation.tls.get(name)
        if tls is None:
            raise RuntimeError("simulator not started")
        return tls.presented()

    def presented_fingerprint(self, name: str) -> str:
        """SHA-256 fingerprint (``AA:BB:...``) of the certificate node ``name`` presents now.

        With the ``swap_certificate`` fault this is the swapped-in certificate's, which a fingerprint
        pin must name; ``GET /nodes`` reports it as ``ssl_fingerprint`` too, as PVE does for a custom
        ``pveproxy-ssl.pem``.
        """
        return self.presented_certificate(name).fingerprint

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
        """Node name -> SHA-256 fingerprint (``AA:BB:...``) of its ``pve-ssl.pem`` (CA-signed)."""
        return {name: cert.fingerprint for name, cert in self._node_certs.items()}

    def set_node_online(self, name: str, online: bool) -> None:
        """Take a node offline or bring it back (cluster membership)."""
        self.faults.set_node_online(name, online)

    def _node_info(self, node: Node) -> dict[str, Any]:
        listener = self._listeners.get(node.name)
        return {
            "name": node.name,
            "ip": node.ip,
            "online": node.online,
            "fingerprint": node.fingerprint,
            "presented_fingerprint": self.simulation.presented_fingerprint(node.name),
            "url": None if listener is None else listener.url,
            "listening": listener is not None and listener.listening,
            "faults": self.faults.node(node.name).to_dict(),
            "counters": self.simulation.node_counters[node.name].snapshot(),
        }

    def state(self) -> dict[str, Any]:
        """Everything about the running simulator (``GET /state`` of the control listener)."""
        return {
            "url": self.url,
            "node_urls": self.node_urls,
            "node_listeners": self.per_node_listeners,
            "pve_version": self.flavour.version,
            "cluster_name": self.cluster.name,
            "virtual_clusters": self.config.virtual_clusters,
            "quorate": self.cluster.quorate,
            "local_node": self.node.name,
            "nodes": [self._node_info(node) for node in self.cluster],
            "faults": self.faults.to_dict(),
            "counters": self.counters.snapshot(),
            "time": self.clock.time(),
        }

    def ready_info(self) -> dict[str, Any]:
        """The ready-file document: how to reach and trust the simulator (every node's URL included)."""
        urls = self.node_urls
        return {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "node_urls": urls,
            "node_listeners": self.per_node_listeners,
            "ca_path": str(self.ca_path),
            "cert_dir": str(self.cert_dir),
            "pid": os.getpid(),
            "pve_version": self.flavour.version,
            "cluster_name": self.cluster.name,
            "virtual_clusters": self.config.virtual_clusters,
            "node": self.node.name,
            "fingerprints": self.fingerprints,
            "nodes": {
                node.name: {"ip": node.ip, "fingerprint": node.fingerprint, "url": urls.get(node.name)}
                for node in self.cluster
            },
            "control_url": self.control_url,
        }

    def write_ready_file(self, path: Path | str) -> None:
        """Atomically write :meth:`ready_info` as JSON."""
        write_json_atomic(Path(path), self.ready_info())


class SimulatorThread:
    """Run a :class:`SimulatorServer` on its own event loop in a background thread.

    ``with SimulatorThread(config) as sim:`` yields the started :class:`SimulatorServer`; its
    properties, ``faults``, ``node_faults(...)``, ``counters``, ``node_counters(...)`` and the clock are
    safe to use from the calling thread, and so are ``sim.set_node_listening(name, False/True)`` and
    ``sim.call(coroutine_function, *args)`` (which run on the simulator's loop and wait).  The same two
    are available on the thread object.
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

    def call(
        self,
        function: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """:meth:`SimulatorServer.call`: run a coroutine function on the simulator's loop, wait for it."""
        return self.server.call(function, *args, **kwargs)

    def set_node_listening(self, name: str, listening: bool) -> None:
        """Stop (``False``) or start (``True``) a node's listener and wait until done."""
        self.server.set_node_listening(name, listening)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _as_coroutine(awaitable: Awaitable[_T]) -> _T:
    return await awaitable
