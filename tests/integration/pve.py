"""The PVE simulator as the integration tests use it: a real HTTPS server on 127.0.0.1 in a thread of the
test process, which the operator (a separate process) reaches over loopback."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pve_simulator import NodeConfig, SimulatorConfig, SimulatorServer, SimulatorThread, TokenConfig, UserConfig

USER = "root@pam"
TOKEN_ID = "root@pam!operator"
#: A second valid token, for rotation tests.
ROTATED_TOKEN_ID = "root@pam!rotated"
#: A privilege-separated token with no ACL of its own: reads /version and /nodes, 403 on /cluster/status.
BARE_TOKEN_ID = "root@pam!bare"
VERSION = "8.4.1"
RELEASE = "8.4"


@dataclass
class PVE:
    """One simulated three-node cluster with a canary password and token secret of its own."""

    cert_dir: Path
    password: str = field(default_factory=lambda: f"canary-pw-{secrets.token_hex(8)}")
    token_secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    rotated_secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    bare_secret: str = field(default_factory=lambda: str(uuid.uuid4()))
    port: int = 0
    nodes: tuple[str, ...] = ("pve1", "pve2", "pve3")
    version: str = VERSION
    # Distinct per simulator: the operator rightly flags two resources on one cluster as duplicates.
    cluster_name: str = field(default_factory=lambda: f"test-{secrets.token_hex(3)}")
    release: str = RELEASE
    _thread: SimulatorThread | None = None
    _server: SimulatorServer | None = None

    def start(self) -> PVE:
        config = SimulatorConfig(
            pve_version=self.version,
            cluster_name=self.cluster_name,
            nodes=tuple(NodeConfig(name=n) for n in self.nodes),
            users=(UserConfig(userid=USER, password=self.password),),
            tokens=(
                TokenConfig(tokenid=TOKEN_ID, secret=self.token_secret, privsep=True, sys_audit=True),
                TokenConfig(tokenid=ROTATED_TOKEN_ID, secret=self.rotated_secret, privsep=True, sys_audit=True),
                TokenConfig(tokenid=BARE_TOKEN_ID, secret=self.bare_secret, privsep=True),
            ),
            port=self.port,
            # PVE delays failed logins by 3 s; a shorter delay keeps the suite quick and changes nothing else.
            auth_fail_delay=0.2,
            cert_dir=self.cert_dir,
        )
        self._thread = SimulatorThread(config)
        self._server = self._thread.start()
        self.port = self._server.port  # a restart comes back on the same port, like a rebooted node
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    @property
    def server(self) -> SimulatorServer:
        assert self._server is not None, "simulator not started"
        return self._server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ca_pem(self) -> str:
        return self.server.ca_pem

    def logins(self) -> int:
        return self.server.counters.login_attempts

    def probes(self) -> int:
        """Probes seen: each reads /cluster/status once (status itself is written only on changes)."""
        return self.server.counters.count("/api2/json/cluster/status", "GET")

    def node_url(self, node: str) -> str:
        """Every node listens on its own loopback address (127.0.0.1, .2, .3) on the same port."""
        return self.server.node_url(node)

    def set_listening(self, node: str, listening: bool) -> None:
        """Stop or start one node's pveproxy (the node stays a cluster member)."""
        assert self._thread is not None
        self._thread.set_node_listening(node, listening)
