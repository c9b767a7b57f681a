"""The shapes of the Proxmox VE API answers the client reads (extra fields ignored)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Version(_Payload):
    """``GET /version``: ``{version, release, repoid}`` (pve-manager ``PVE/API2/Version.pm``)."""

    version: str
    release: str | None = None
    repoid: str | None = None


class Node(_Payload):
    """One entry of ``GET /nodes`` (pve-manager ``PVE/API2/Nodes.pm``); stats fields are optional."""

    node: str
    status: str = "unknown"
    level: str | None = None
    ssl_fingerprint: str | None = None


class ClusterStatusEntry(_Payload):
    """One entry of ``GET /cluster/status`` (pve-manager ``PVE/API2/Cluster.pm``): the cluster or a node.

    Booleans come as 0/1 integers; key order is not stable.
    """

    type: str
    name: str | None = None
    id: str | None = None
    nodes: int | None = None
    quorate: int | None = None
    online: int | None = None
    local: int | None = None
    ip: str | None = None
    level: str | None = None
    nodeid: int | None = None


class Ticket(_Payload):
    """``POST /access/ticket``'s answer."""

    ticket: str
    CSRFPreventionToken: str | None = None  # Proxmox's key
    NeedTFA: int | None = None  # Proxmox's key
