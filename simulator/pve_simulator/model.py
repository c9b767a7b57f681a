"""Runtime state of the simulated cluster: nodes (membership, statistics) and accounts.

What is modelled, and where PVE keeps it:

* cluster name, corosync config version, quorum: pmxcfs ``get_clinfo`` (pve-cluster
  ``src/PVE/Cluster.pm``); quorate means more than half of the votes (one per node) are online;
* members with node id, ip and online flag: pmxcfs ``get_members``;
* per-node RRD statistics (uptime, cpu, memory, disk, subscription level): ``rrd_dump``, reported
  through pve-manager ``PVE/API2Tools.pm`` ``extract_node_stats``;
* users and tokens with their privileges on ``/``: ``user.cfg``/``token.cfg`` (pve-access-control
  ``src/PVE/AccessControl.pm``), evaluated as described in :mod:`pve_simulator.privileges`.

The model is shared by every listener: one per node (each answering as its node) or a single one
answering as the first node, all against the same :class:`Cluster`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pve_simulator.clock import Clock
from pve_simulator.config import SimulatorConfig, TokenConfig, UserConfig
from pve_simulator.flavour import Flavour
from pve_simulator.privileges import SYS_AUDIT, all_privileges

__all__ = ["Accounts", "Cluster", "Node"]


@dataclass
class Node:
    """One node as the cluster sees it.

    Attributes:
        name, ip, nodeid: identity (nodeid is the corosync id, 1-based in order of the config).
        online: corosync membership state (changeable at run time).
        level, stats, maxcpu, maxmem, maxdisk, cpu, mem, disk: RRD data as reported by ``/nodes``.
        boot_time: when the node booted (simulator clock), for ``uptime``.
        fqdn: the certificate CN.
        fingerprint: SHA-256 fingerprint of the node certificate (set once certificates exist).
    """

    name: str
    ip: str
    nodeid: int
    online: bool
    level: str
    stats: bool
    maxcpu: int
    maxmem: int
    maxdisk: int
    cpu: float
    mem: int
    disk: int
    boot_time: float
    fqdn: str
    fingerprint: str = ""

    def uptime(self, now: float) -> int:
        """Seconds since boot."""
        return max(int(now - self.boot_time), 0)


@dataclass
class Cluster:
    """The cluster (or the standalone node): name, members, quorum.

    Attributes:
        name: corosync cluster name, ``None`` when standalone.
        config_version: corosync config version.
        nodes: members in config order (the first one is the local node of the first listener).
    """

    name: str | None
    config_version: int
    nodes: dict[str, Node] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: SimulatorConfig, clock: Clock) -> Cluster:
        """Build the runtime model from the configuration."""
        now = clock.time()
        nodes = {}
        for index, node in enumerate(config.nodes):
            nodes[node.name] = Node(
                name=node.name,
                ip=str(node.ip),
                nodeid=index + 1 if config.clustered else 0,
                online=node.online,
                level=node.level,
                stats=node.stats,
                maxcpu=node.maxcpu,
                maxmem=node.maxmem,
                maxdisk=node.maxdisk,
                cpu=node.cpu,
                mem=node.mem,
                disk=node.disk,
                boot_time=now - node.uptime,
                fqdn=config.fqdn(node.name),
            )
        version = config.config_version or len(nodes)
        return cls(name=config.cluster_name, config_version=version, nodes=nodes)

    @property
    def clustered(self) -> bool:
        """Whether this is a cluster rather than a standalone node."""
        return self.name is not None

    @property
    def local(self) -> Node:
        """The first node (the one a single listener answers as)."""
        return next(iter(self.nodes.values()))

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes.values()))

    def node(self, name: str) -> Node:
        """Look a node up by name (``KeyError`` if unknown)."""
        return self.nodes[name]

    def set_online(self, name: str, online: bool) -> None:
        """Change a node's membership state (``KeyError`` if unknown)."""
        with self._lock:
            self.nodes[name].online = online

    def is_online(self, name: str) -> bool:
        """Whether the node is an online member (a standalone node always is)."""
        return True if not self.clustered else self.nodes[name].online

    @property
    def quorate(self) -> bool:
        """More than half of the votes (one per node) online; a standalone node is always quorate."""
        if not self.clustered:
            return True
        online = sum(1 for node in self.nodes.values() if node.online)
        return online * 2 > len(self.nodes)


class Accounts:
    """Users and API tokens with their privileges (``user.cfg``/``token.cfg``)."""

    def __init__(self, users: Iterable[UserConfig], tokens: Iterable[TokenConfig], flavour: Flavour) -> None:
        self.users: dict[str, UserConfig] = {user.userid: user for user in users}
        self.tokens: dict[str, TokenConfig] = {token.tokenid: token for token in tokens}
        self._all = all_privileges(flavour)

    @property
    def realms(self) -> set[str]:
        """Configured authentication realms (``pam`` and ``pve`` always exist)."""
        return {"pam", "pve"} | {user.userid.rsplit("@", 1)[1] for user in self.users.values()}

    def user_privileges(self, userid: str) -> frozenset[str]:
        """A user's privileges on ``/`` (everything for ``root@pam``)."""
        if userid == "root@pam":
            return self._all
        user = self.users.get(userid)
        if user is None:
            return frozenset()
        privs = set(user.privileges)
        if user.sys_audit:
            privs.add(SYS_AUDIT)
        return frozenset(privs) & self._all

    def token_privileges(self, tokenid: str) -> frozenset[str]:
        """A token's effective privileges: user ∩ token with privsep, the user's without."""
        token = self.tokens.get(tokenid)
        if token is None:
            return frozenset()
        user_privs = self.user_privileges(token.userid)
        if not token.privsep:
            return user_privs
        own = set(token.privileges)
        if token.sys_audit:
            own.add(SYS_AUDIT)
        return frozenset(own) & user_privs

    def privileges(self, authid: str) -> frozenset[str]:
        """Effective privileges of a user id or token id on ``/``."""
        if "!" in authid:
            return self.token_privileges(authid)
        return self.user_privileges(authid)

    def check(self, authid: str, privs: Iterable[str]) -> bool:
        """Whether ``authid`` holds all ``privs`` on ``/`` (and therefore on every path)."""
        return set(privs) <= self.privileges(authid)
