"""The API methods the simulator implements, with PVE's parameters, permissions and results.

* ``GET /version`` - pve-manager ``PVE/API2.pm`` ``version``: ``version``, ``release``, ``repoid``;
  any authenticated user or token.
* ``GET /nodes`` - pve-manager ``PVE/API2/Nodes.pm`` (``PVE::API2::Nodes`` ``index``) with
  ``PVE/API2Tools.pm`` ``extract_node_stats``: every node with ``id``, ``node``, ``type``,
  ``status``, ``ssl_fingerprint``; ``level`` when RRD data exists; ``maxcpu/maxmem/maxdisk`` with RRD
  data and ``Sys.Audit`` on ``/nodes/<node>``; ``uptime/cpu/mem/disk`` additionally only while the node
  is online (or standalone).
* ``GET /cluster/status`` - pve-manager ``PVE/API2/Cluster.pm`` ``get_status``: needs ``Sys.Audit`` on
  ``/``; in a cluster a ``cluster`` entry (``nodes``, ``version``, ``name``, ``quorate``) followed by
  one ``node`` entry per member (``nodeid``, ``local``, ``online``, ``ip``, ``level``); standalone a
  single node entry with ``nodeid 0``, ``local 1``, ``online 1``.  Flags are the integers 0/1.
* ``GET|POST /access/ticket`` - pve-access-control ``src/PVE/API2/AccessControl.pm``
  ``get_ticket`` (a dummy returning null) and ``create_ticket`` (login; tokens not allowed).
* ``GET /access/permissions`` - pve-access-control ``src/PVE/API2/AccessControl.pm`` ``permissions``
  with ``src/PVE/RPCEnvironment.pm`` ``permissions``/``get_effective_permissions``: optional ``userid``
  (user or token id, default: the caller) and ``path``.  Anyone may read their own permissions (and,
  from PVE 8.3, those of tokens they own); anything else needs ``Sys.Audit`` on ``/access``
  (``403 Permission check failed (/access, Sys.Audit)``).  The result maps path -> privilege -> the
  propagate flag (``1``: the privilege is inherited by paths below).  With ``path`` it is exactly that
  path (present even when empty); without, the default top-level paths (``/``, ``/access``,
  ``/access/groups``, ``/nodes``, ``/pool``, ``/sdn``, ``/storage``, ``/vms``, per release, see
  :mod:`pve_simulator.flavour`) that hold any privilege.  ``root@pam`` gets every privilege of the
  Administrator role everywhere; a token with privilege separation gets its own ACL intersected with
  its user's, one without gets its user's.

Privileges are held on ``/`` and propagate, so the ``/nodes/<node>`` check equals the ``/`` check, and
every path reports the same privileges, all with the propagate flag set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pve_simulator.access import AuthInfo
from pve_simulator.config import TOKEN_ID_RE
from pve_simulator.errors import perm_exc
from pve_simulator.model import Node
from pve_simulator.privileges import SYS_AUDIT, all_privileges, known_privilege
from pve_simulator.schema import Param, Params, Schema
from pve_simulator.state import Simulation

__all__ = ["ROUTES", "Endpoint", "RequestContext", "find_endpoint"]

_REALM_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
# pve-access-control src/PVE/AccessControl.pm $userid_or_token_regex (user_regex @ realm_regex [! token])
_USERID_OR_TOKEN_RE = re.compile(r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+(?:![A-Za-z][A-Za-z0-9.\-_]+)?")


@dataclass(frozen=True)
class RequestContext:
    """What a handler sees: the simulation, the answering node, the caller."""

    sim: Simulation
    node: Node
    auth: AuthInfo
    client_ip: str
    refuse_logins: bool = False
    #: The virtual cluster the request was routed to (``None``: the configured cluster itself).
    virtual_cluster: int | None = None

    @property
    def cluster_name(self) -> str | None:
        """The name of the cluster that answers: the configured one, or ``<cluster_name>-<k>`` when virtual."""
        if self.virtual_cluster is None:
            return self.sim.cluster.name
        return self.sim.config.virtual_cluster_name(self.virtual_cluster)


Handler = Callable[[RequestContext, Params], Any]


@dataclass(frozen=True)
class Endpoint:
    """One API method.

    Attributes:
        handler: computes the ``data`` of the response.
        parameters: the parameter schema (``additionalProperties => 0``).
        privileges: privileges required on ``/`` (empty: any user, or no authentication at all for
            the calls pveproxy lets through).
        allowtoken: whether API tokens may call it.
    """

    handler: Handler
    parameters: Schema = field(default_factory=dict)
    privileges: tuple[str, ...] = ()
    allowtoken: bool = True


def _version(ctx: RequestContext, params: Params) -> dict[str, str]:
    flavour = ctx.sim.flavour
    return {"version": flavour.version, "release": flavour.release, "repoid": flavour.repoid}


def _node_entry(ctx: RequestContext, node: Node, can_audit: bool) -> dict[str, Any]:
    clustered = ctx.sim.cluster.clustered
    entry: dict[str, Any] = {"id": f"node/{node.name}", "node": node.name, "type": "node", "status": "unknown"}
    if node.stats:
        if not clustered or node.online:
            if can_audit:
                entry["uptime"] = node.uptime(ctx.sim.clock.time())
                entry["cpu"] = node.cpu
                entry["mem"] = node.mem
                entry["disk"] = node.disk
            entry["status"] = "online"
        entry["level"] = node.level
        if can_audit:
            entry["maxcpu"] = node.maxcpu
            entry["maxmem"] = node.maxmem
            entry["maxdisk"] = node.maxdisk
    if clustered and not node.online:
        entry["status"] = "offline"
    entry["ssl_fingerprint"] = ctx.sim.presented_fingerprint(node.name)
    return entry


def _nodes(ctx: RequestContext, params: Params) -> list[dict[str, Any]]:
    authid = ctx.auth.authid or ""
    can_audit = ctx.sim.accounts.check(authid, [SYS_AUDIT])
    return [_node_entry(ctx, node, can_audit) for node in ctx.sim.cluster]


def _cluster_status(ctx: RequestContext, params: Params) -> list[dict[str, Any]]:
    cluster = ctx.sim.cluster
    if not cluster.clustered:
        node = ctx.node
        return [
            {
                "type": "node",
                "id": f"node/{node.name}",
                "name": node.name,
                "ip": node.ip,
                "local": 1,
                "nodeid": 0,
                "online": 1,
                "level": node.level,
            }
        ]
    members = list(cluster)
    result: list[dict[str, Any]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "nodes": len(members),
            "version": cluster.config_version,
            "name": ctx.cluster_name,
            "quorate": int(cluster.quorate),
        }
    ]
    for node in members:
        result.append(
            {
                "type": "node",
                "id": f"node/{node.name}",
                "name": node.name,
                "nodeid": node.nodeid,
                "local": int(node.name == ctx.node.name),
                "online": int(node.online),
                "ip": node.ip,
                "level": (node.level if node.stats else "") or "",
            }
        )
    return result


def _get_ticket(ctx: RequestContext, params: Params) -> None:
    return None


def _create_ticket(ctx: RequestContext, params: Params) -> dict[str, object]:
    return ctx.sim.access.create_ticket(params, ctx.client_ip, refuse=ctx.refuse_logins, cluster_name=ctx.cluster_name)


def _privileges_on(ctx: RequestContext, authid: str) -> dict[str, int]:
    """``PVE::RPCEnvironment::permissions`` on any path: privilege -> propagate flag (always 1 here)."""
    # "root can do anything": every privilege of the Administrator role
    privs = all_privileges(ctx.sim.flavour) if authid == "root@pam" else ctx.sim.accounts.privileges(authid)
    return dict.fromkeys(sorted(privs), 1)


def _permissions(ctx: RequestContext, params: Params) -> dict[str, dict[str, int]]:
    authid = ctx.auth.authid or ""
    requested = params.get("userid")
    userid = requested if isinstance(requested, str) else authid
    token = TOKEN_ID_RE.match(userid)
    check_self = userid == authid
    check_owned_token = token is not None and token.group(1) == authid and ctx.sim.flavour.permissions_owned_tokens
    if not (check_self or check_owned_token) and not ctx.sim.accounts.check(authid, [SYS_AUDIT]):
        raise perm_exc(f"/access, {SYS_AUDIT}")
    privileges = _privileges_on(ctx, userid)
    path = params.get("path")
    if isinstance(path, str) and path not in ("", "0"):  # Perl truthiness of $param->{path}
        return {path: privileges}
    if not privileges:
        return {}
    return {default: dict(privileges) for default in ctx.sim.flavour.effective_permission_paths}


def _realm_format(value: str) -> None:
    if not _REALM_RE.match(value):
        raise ValueError("value does not look like a valid realm\n")


def _priv_list_format(value: str) -> None:
    for priv in re.split(r"[,;\s\0]+", value):
        if priv and not known_privilege(priv):
            raise ValueError(f"invalid privilege '{priv}'\n")


_LOGIN_PARAMETERS: Schema = {
    "username": Param(max_length=64),
    "realm": Param(optional=True, max_length=32, format=_realm_format),
    "password": Param(),
    "otp": Param(optional=True),
    "path": Param(optional=True, max_length=64, requires="privs"),
    "privs": Param(optional=True, max_length=64, format=_priv_list_format, requires="path"),
    "new-format": Param(type="boolean", optional=True),
    "tfa-challenge": Param(optional=True),
}

_PERMISSIONS_PARAMETERS: Schema = {
    "userid": Param(optional=True, pattern=_USERID_OR_TOKEN_RE),
    "path": Param(optional=True),
}

#: (method, path) -> endpoint; paths relative to ``/api2/json``.
ROUTES: dict[tuple[str, str], Endpoint] = {
    ("GET", "/version"): Endpoint(_version),
    ("GET", "/nodes"): Endpoint(_nodes),
    ("GET", "/cluster/status"): Endpoint(_cluster_status, privileges=(SYS_AUDIT,)),
    ("GET", "/access/ticket"): Endpoint(_get_ticket),
    ("GET", "/access/permissions"): Endpoint(_permissions, parameters=_PERMISSIONS_PARAMETERS),
    ("POST", "/access/ticket"): Endpoint(_create_ticket, parameters=_LOGIN_PARAMETERS, allowtoken=False),
}


def find_endpoint(method: str, rel_uri: str) -> Endpoint | None:
    """Look a method up like ``PVE::RESTHandler::find_handler`` (empty path components ignored)."""
    parts = [part for part in rel_uri.split("/") if part]
    return ROUTES.get((method, "/" + "/".join(parts)))
