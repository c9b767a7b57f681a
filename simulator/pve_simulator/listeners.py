"""pveproxy per node: an HTTPS listener on a node's own address, answering as that node.

On a real cluster every node runs pveproxy on port 8006 (pve-manager ``PVE/Service/pveproxy.pm``,
``create_reusable_socket(8006, ...)``), so a client that knows the nodes' addresses (``GET
/cluster/status`` reports them) can reach each one on the same port.  The simulator does the same on
loopback: node ``pve1`` on 127.0.0.1, ``pve2`` on 127.0.0.2, ... all on one port (any 127.x address
works on Linux without configuration).  :func:`bind_same_port` finds a port that is free on every
address; a stopped listener (``systemctl stop pveproxy``: connections are refused, open ones are
closed) is started again on the same address and port.

Connections that send no request are closed after the keep-alive timeout like idle keep-alive ones
(pveproxy: the ``AnyEvent::Handle`` ``timeout`` of 5 s, pve-http-server ``src/PVE/APIServer/AnyEvent.pm``
``accept_connections``); a TLS handshake that does not complete within that time (at least 1 s) is
dropped too.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Sequence

from aiohttp import web

from pve_simulator.app import ApiListener, build_api_app
from pve_simulator.certs import NodeTls
from pve_simulator.model import Node
from pve_simulator.state import Simulation

__all__ = ["NodeListener", "bind_same_port", "bind_socket"]

_BACKLOG = 128
_PORT_ATTEMPTS = 50
_MIN_HANDSHAKE_TIMEOUT = 1.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (``SO_REUSEADDR`` as pveproxy's socket)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_same_port(hosts: Sequence[str], port: int) -> tuple[int, list[socket.socket]]:
    """Listening sockets on every host with one port: ``port``, or (``0``) one free everywhere.

    With ``port=0`` the first host gets a free port from the kernel and the others are bound to the
    same one; if any of them is taken there, everything is closed and another port is tried.

    Raises:
        OSError: a fixed port is taken, or no common free port was found.
    """
    for _ in range(_PORT_ATTEMPTS):
        sockets: list[socket.socket] = []
        try:
            first = bind_socket(hosts[0], port)
            sockets.append(first)
            chosen = int(first.getsockname()[1])
            for host in hosts[1:]:
                sockets.append(bind_socket(host, chosen))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            if port != 0 or exc.errno != errno.EADDRINUSE:
                raise
            continue
        return chosen, sockets
    raise OSError(errno.EADDRINUSE, f"no port is free on all of {', '.join(hosts)}")


class _SocketSite(web.BaseSite):
    """An aiohttp site on an already bound socket, with a TLS handshake timeout."""

    def __init__(
        self, runner: web.BaseRunner, sock: socket.socket, *, ssl_context: object, handshake_timeout: float
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)  # type: ignore[arg-type]
        self._sock = sock
        self._handshake_timeout = handshake_timeout
        host, port = sock.getsockname()[:2]
        self._name = f"https://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout,
        )


class NodeListener:
    """One node's pveproxy: start, stop, start again on the same address and port.

    Args:
        sim: the simulation.
        node: the node it answers as.
        host: the address it listens on.
        tls: the node's TLS setup (certificate chosen per handshake).
        keepalive_timeout: idle connections are closed after this many seconds.
        shutdown_timeout: how long stopping waits for requests still being handled.
    """

    def __init__(
        self,
        sim: Simulation,
        node: Node,
        host: str,
        tls: NodeTls,
        *,
        keepalive_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self.sim = sim
        self.node = node
        self.host = host
        self.tls = tls
        self.api = ApiListener(sim, node)
        self.port: int | None = None
        self._keepalive_timeout = keepalive_timeout
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()

    @property
    def listening(self) -> bool:
        """Whether the listener accepts connections."""
        return self._runner is not None

    @property
    def url(self) -> str:
        """``https://<host>:<port>`` (known once started the first time)."""
        if self.port is None:
            raise RuntimeError(f"listener of node {self.node.name} never started")
        return f"https://{self.host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen (on ``sock`` if given, else on the known address and port); no-op if listening."""
        async with self._lock:
            if self._runner is not None:
                if sock is not None:
                    sock.close()
                return
            if sock is None:
                if self.port is None:
                    raise RuntimeError("the first start needs a bound socket")
                sock = bind_socket(self.host, self.port)
            self.api.stopping = asyncio.Event()
            runner = web.AppRunner(
                build_api_app(self.sim, self.node, self.api),
                access_log=None,
                keepalive_timeout=self._keepalive_timeout,
                shutdown_timeout=self._shutdown_timeout,
            )
            try:
                await runner.setup()
                site = _SocketSite(
                    runner,
                    sock,
                    ssl_context=self.tls.context,
                    handshake_timeout=max(self._keepalive_timeout, _MIN_HANDSHAKE_TIMEOUT),
                )
                await site.start()
            except BaseException:
                sock.close()
                await runner.cleanup()
                raise
            self._runner = runner
            self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening (connections are then refused) and close the open connections; no-op if stopped."""
        async with self._lock:
            runner, self._runner = self._runner, None
            if runner is None:
                return
            self.api.stopping.set()
            await runner.cleanup()
