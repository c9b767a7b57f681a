"""Typed simulator configuration, loadable from JSON/YAML files and built by the CLI.

Identifier formats follow Proxmox's own validators so a configuration that works here is one PVE
would accept:

* node and cluster names: ``pve-node`` format (pve-common ``src/PVE/JSONSchema.pm``), cluster names at
  most 15 characters (pve-cluster ``src/PVE/API2/ClusterConfig.pm``, ``clustername``);
* user ids ``user@realm``: ``$user_regex``/``$realm_regex`` of pve-access-control
  ``src/PVE/Auth/Plugin.pm``;
* token ids ``user@realm!name``: ``$token_full_regex`` of pve-access-control
  ``src/PVE/AccessControl.pm``; token secrets are UUIDs (pve-access-control
  ``src/PVE/API2/User.pm``, ``generate_token``).

Passwords and token secrets are :class:`pydantic.SecretStr`, so printing or logging a configuration
never reveals them.  Every address is IPv4 loopback (127.0.0.0/8): nothing the simulator listens on or
reports ever leaves the machine.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pve_simulator.flavour import Flavour, parse_flavour
from pve_simulator.privileges import known_privilege

__all__ = [
    "NODE_NAME_RE",
    "TOKEN_ID_RE",
    "USER_ID_RE",
    "NodeConfig",
    "SimulatorConfig",
    "TokenConfig",
    "UserConfig",
]

NODE_NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
_REALM = r"[A-Za-z][A-Za-z0-9.\-_]+"
USER_ID_RE = re.compile(rf"^([^\s:/]+)@({_REALM})$")
TOKEN_ID_RE = re.compile(rf"^(([^\s:/]+)@({_REALM}))!({_REALM})$")
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_GIB = 1024**3


def _loopback(value: ipaddress.IPv4Address, what: str) -> ipaddress.IPv4Address:
    if value not in _LOOPBACK:
        raise ValueError(f"{what} {value} is not an IPv4 loopback address (127.0.0.0/8)")
    return value


def _check_privileges(values: tuple[str, ...]) -> tuple[str, ...]:
    for priv in values:
        if not known_privilege(priv):
            raise ValueError(f"invalid privilege '{priv}'")
    return values


class NodeConfig(BaseModel):
    """One cluster node.

    Attributes:
        name: node name (``pve-node`` format).
        ip: the node's address; must be 127.x.  Defaults: the listen address for the first node,
            then 127.0.0.2, 127.0.0.3, ... (skipping addresses already in use).
        online: cluster membership state (corosync) at start.
        level: subscription level (``""`` without subscription), as in ``/nodes``.
        stats: whether RRD statistics exist for the node (without them ``/nodes`` reports no
            level/max*/usage fields and status ``unknown`` unless the node is offline).
        maxcpu, maxmem, maxdisk, cpu, mem, disk: the statistics reported when allowed.
        uptime: the node's uptime in seconds when the simulator starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ip: ipaddress.IPv4Address | None = None
    online: bool = True
    level: str = ""
    stats: bool = True
    maxcpu: int = Field(default=8, ge=1)
    maxmem: int = Field(default=32 * _GIB, ge=0)
    maxdisk: int = Field(default=100 * _GIB, ge=0)
    cpu: float = Field(default=0.0123, ge=0.0)
    mem: int = Field(default=4 * _GIB, ge=0)
    disk: int = Field(default=12 * _GIB, ge=0)
    uptime: int = Field(default=86400, ge=0)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NODE_NAME_RE.match(value):
            raise ValueError(f"value '{value}' does not look like a valid node name")
        return value

    @field_validator("ip")
    @classmethod
    def _valid_ip(cls, value: ipaddress.IPv4Address | None) -> ipaddress.IPv4Address | None:
        return None if value is None else _loopback(value, "node ip")


class UserConfig(BaseModel):
    """A user of the ``pam``/``pve`` (or any other) realm.

    Attributes:
        userid: ``user@realm``.
        password: the password (never logged).
        enabled: disabled users cannot log in or use their tickets/tokens.
        expire: account expiry (unix time, 0 = never).
        tfa: whether the user has a second factor (TOTP) configured.
        totp_secret: base32 TOTP secret; lets tests complete the second factor.  Implies ``tfa``.
        sys_audit: grant ``Sys.Audit`` on ``/``.  ``root@pam`` always has every privilege.
        privileges: further privileges on ``/``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    userid: str
    password: SecretStr
    enabled: bool = True
    expire: int = Field(default=0, ge=0)
    tfa: bool = False
    totp_secret: SecretStr | None = None
    sys_audit: bool = False
    privileges: tuple[str, ...] = ()

    @field_validator("userid")
    @classmethod
    def _valid_userid(cls, value: str) -> str:
        if not USER_ID_RE.match(value) or len(value) >= 64:
            raise ValueError(f"value '{value}' does not look like a valid user name")
        return value

    @field_validator("privileges")
    @classmethod
    def _valid_privileges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_privileges(value)

    @property
    def has_tfa(self) -> bool:
        """Whether logging in needs a second factor."""
        return self.tfa or self.totp_secret is not None


class TokenConfig(BaseModel):
    """An API token ``user@realm!name`` with its secret (a UUID).

    Attributes:
        tokenid: ``user@realm!name``; the user must be configured.
        secret: the token value (never logged).
        privsep: privilege separation (PVE's default): effective privileges are the token's own
            ACL intersected with the user's.
        sys_audit: grant ``Sys.Audit`` on ``/`` to the token itself.
        privileges: further privileges of the token on ``/``.
        expire: token expiry (unix time, 0 = never).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenid: str
    secret: SecretStr
    privsep: bool = True
    sys_audit: bool = False
    privileges: tuple[str, ...] = ()
    expire: int = Field(default=0, ge=0)

    @field_validator("tokenid")
    @classmethod
    def _valid_tokenid(cls, value: str) -> str:
        if not TOKEN_ID_RE.match(value):
            raise ValueError(f"value '{value}' does not look like a valid token ID")
        return value

    @field_validator("secret")
    @classmethod
    def _valid_secret(cls, value: SecretStr) -> SecretStr:
        try:
            uuid.UUID(value.get_secret_value())
        except ValueError:
            raise ValueError("token secret must be a UUID") from None
        return value

    @field_validator("privileges")
    @classmethod
    def _valid_privileges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_privileges(value)

    @property
    def userid(self) -> str:
        """The token's owner, ``user@realm``."""
        return self.tokenid.split("!", 1)[0]

    @property
    def name(self) -> str:
        """The token's name (the part after ``!``)."""
        return self.tokenid.split("!", 1)[1]


class SimulatorConfig(BaseModel):
    """Everything that defines one simulated cluster.

    Attributes:
        listen_address: where the API listener binds (127.x only) with one listener; the first node's
            default address; the control listener's address.
        port: API port; ``0`` picks a free port (with one listener per node: one port that is free on
            every node address, as every PVE node serves its API on the same port 8006).
        node_listeners: one HTTPS listener per node, each on the node's own address (``ip``), all on
            the same port; ``False``: a single listener on ``listen_address`` answering as the first
            node; ``None`` (default): one per node when the cluster has more than one node.
        control_port: port of the plain-HTTP control listener (``None``: no control listener,
            ``0``: pick a free port).
        pve_version: pve-manager version to imitate, e.g. ``8.4.1`` or ``7.4-3``.
        repoid: override the repoid reported by ``/version``.
        cluster_name: the corosync cluster name; ``None`` means a standalone node.
        config_version: corosync config version reported by ``/cluster/status`` (default: the
            number of nodes, as after creating the cluster and joining the others).
        nodes: the cluster's nodes; the first one answers on the single listener (and on
            :attr:`url <pve_simulator.server.SimulatorServer.url>`).
        domain: DNS search domain; node FQDNs (certificate CN) are ``<name>.<domain>``.
        users, tokens: the accounts.
        auth_fail_delay: seconds a failed authentication is delayed (PVE: 3).
        keepalive_timeout: idle keep-alive connections are closed after this many seconds (PVE: 5).
        cert_dir: where certificates are kept and reused; ``None``: a temporary directory.
        virtual_clusters: serve this many *virtual clusters* behind a path-routing reverse proxy
            (``0``, the default: off).  A request for ``/vc/<k>/<path>`` with ``0 <= k < virtual_clusters``
            is answered as ``/<path>`` by cluster ``<cluster_name>-<k>``: only the cluster name differs
            (``/cluster/status``, and ``clustername`` of a login), so ``k`` clusters with distinct
            identities share one simulator.  Needs a ``cluster_name``; every virtual name must be a
            valid cluster name (at most 15 characters).  See :func:`pve_simulator.app.route_virtual`.
    """

    model_config = ConfigDict(extra="forbid")

    listen_address: ipaddress.IPv4Address = ipaddress.IPv4Address("127.0.0.1")
    port: int = Field(default=0, ge=0, le=65535)
    node_listeners: bool | None = None
    control_port: int | None = Field(default=None, ge=0, le=65535)
    pve_version: str = "8.4.1"
    repoid: str | None = None
    cluster_name: str | None = None
    config_version: int | None = Field(default=None, ge=1)
    nodes: tuple[NodeConfig, ...] = (NodeConfig(name="pve1"),)
    domain: str | None = None
    users: tuple[UserConfig, ...] = ()
    tokens: tuple[TokenConfig, ...] = ()
    auth_fail_delay: float = Field(default=3.0, ge=0.0)
    keepalive_timeout: float = Field(default=5.0, gt=0.0)
    cert_dir: Path | None = None
    virtual_clusters: int = Field(default=0, ge=0)

    @field_validator("listen_address")
    @classmethod
    def _valid_listen(cls, value: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        return _loopback(value, "listen address")

    @field_validator("cluster_name")
    @classmethod
    def _valid_cluster_name(cls, value: str | None) -> str | None:
        if value is not None and (not NODE_NAME_RE.match(value) or len(value) > 15):
            raise ValueError(f"invalid cluster name '{value}'")
        return value

    @field_validator("domain")
    @classmethod
    def _valid_domain(cls, value: str | None) -> str | None:
        if value is not None and not all(NODE_NAME_RE.match(label) for label in value.split(".")):
            raise ValueError(f"invalid DNS domain '{value}'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        parse_flavour(self.pve_version, self.repoid)
        if not self.nodes:
            raise ValueError("at least one node is required")
        if self.cluster_name is None and len(self.nodes) > 1:
            raise ValueError("a standalone node (no cluster_name) cannot have more than one node")
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        self.nodes = self._with_addresses()
        if self.virtual_clusters:
            if self.cluster_name is None:
                raise ValueError("virtual clusters need a cluster_name (they are named <cluster_name>-<k>)")
            last = self.virtual_cluster_name(self.virtual_clusters - 1)
            if len(last) > 15:
                raise ValueError(f"virtual cluster name '{last}' is longer than 15 characters: shorten cluster_name")
        userids = [user.userid for user in self.users]
        if len(set(userids)) != len(userids):
            raise ValueError("user ids must be unique")
        tokenids = [token.tokenid for token in self.tokens]
        if len(set(tokenids)) != len(tokenids):
            raise ValueError("token ids must be unique")
        for token in self.tokens:
            if token.userid not in userids:
                raise ValueError(f"token '{token.tokenid}' belongs to unknown user '{token.userid}'")
        return self

    def _with_addresses(self) -> tuple[NodeConfig, ...]:
        explicit = [node.ip for node in self.nodes if node.ip is not None]
        if len(set(explicit)) != len(explicit):
            raise ValueError("node ips must be unique")
        used = set(explicit)
        candidates = (ipaddress.IPv4Address(int(_LOOPBACK.network_address) + i) for i in range(1, 2**24 - 1))
        result = []
        for index, node in enumerate(self.nodes):
            if node.ip is not None:
                result.append(node)
                continue
            ip = self.listen_address if index == 0 and self.listen_address not in used else None
            while ip is None or ip in used:
                ip = next(candidates)
            used.add(ip)
            result.append(node.model_copy(update={"ip": ip}))
        return tuple(result)

    @property
    def flavour(self) -> Flavour:
        """The release behaviour derived from :attr:`pve_version`."""
        return parse_flavour(self.pve_version, self.repoid)

    @property
    def per_node_listeners(self) -> bool:
        """Whether every node gets its own listener (:attr:`node_listeners`, resolved)."""
        return self.node_listeners if self.node_listeners is not None else len(self.nodes) > 1

    @property
    def clustered(self) -> bool:
        """Whether this is a cluster (rather than a standalone node)."""
        return self.cluster_name is not None

    def virtual_cluster_name(self, index: int) -> str:
        """The cluster name of virtual cluster ``index`` (``<cluster_name>-<index>``)."""
        return f"{self.cluster_name}-{index}"

    def fqdn(self, node: str) -> str:
        """The node's FQDN (``name.domain``, or just the name without a domain)."""
        return f"{node}.{self.domain}" if self.domain else node

    @classmethod
    def from_file(cls, path: str | Path) -> SimulatorConfig:
        """Load a configuration from a JSON or YAML file (chosen by content: YAML is a JSON superset)."""
        return cls.model_validate(load_mapping(Path(path)))


def load_mapping(path: Path) -> dict[str, Any]:
    """Read a JSON/YAML file that must hold a mapping."""
    text = path.read_text(encoding="utf-8")
    data: object = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a mapping at the top level")
    return data
