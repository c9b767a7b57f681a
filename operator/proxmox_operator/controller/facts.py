"""Cluster facts from Proxmox's answers: nodes, quorum, identity, discovered endpoints (pure functions)."""

from __future__ import annotations

import hashlib
from typing import Any

from proxmox_operator.api.v1alpha1 import (
    NodesStatus,
    NodeStatus,
    VersionInfo,
)
from proxmox_operator.controller.outcome import Facts
from proxmox_operator.proxmox import (
    ProxmoxClient,
    endpoint_for_ip,
)


def facts_from(version: Any, nodes: Any, status: Any) -> Facts:
    cluster = next((e for e in status or () if e.type == "cluster"), None)
    members = {e.name: e for e in status or () if e.type == "node" and e.name}
    items: dict[str, NodeStatus] = {}
    for n in nodes:
        if n.node in items:
            continue  # listed twice: the status list is keyed by name, the first entry counts
        member = members.get(n.node)
        online = bool(member.online) if member is not None and member.online is not None else n.status == "online"
        items[n.node] = NodeStatus(
            name=n.node, online=online, ip=member.ip if member else None, level=n.level if n.level else None
        )
    for name, member in members.items():
        if name not in items:  # joined since the node list was last read: membership is read every probe
            items[name] = NodeStatus(name=name, online=bool(member.online), ip=member.ip)
    listed = sorted(items.values(), key=lambda i: i.name)
    online = sum(1 for i in listed if i.online)
    if status is None or (cluster is not None and cluster.quorate is None):
        quorate = None  # not readable, or not reported: Unknown, not lost
    elif cluster is not None:
        quorate = bool(cluster.quorate)
    else:
        quorate = True  # a standalone node is always quorate
    name = cluster.name if cluster is not None else None
    local = next((e.name for e in status or () if e.type == "node" and e.local), None)
    return Facts(
        version=VersionInfo(version=version.version, release=version.release, repoid=version.repoid),
        nodes=NodesStatus(total=len(listed), online=online, summary=f"{online}/{len(listed)}", items=listed),
        cluster_name=name,
        quorate=quorate,
        identity=identity_of(name, local, nodes),
    )


def identity_of(cluster_name: str | None, local: str | None, nodes: Any) -> str | None:
    """What identifies a Proxmox cluster: its name (or the standalone node's) and its nodes' certificate
    fingerprints (``ssl_fingerprint`` in ``/nodes``). Unrelated clusters never share node certificates, so two
    standalone hosts both called ``pve`` are not taken for one. Without fingerprints there is no identity."""
    prints = sorted({n.ssl_fingerprint.upper() for n in nodes if n.ssl_fingerprint})
    name = f"cluster:{cluster_name}" if cluster_name else (f"node:{local}" if local else None)
    if name is None or not prints:
        return None
    return hashlib.sha256(f"{name}|{','.join(prints)}".encode()).hexdigest()


def discovered_endpoints(client: ProxmoxClient, status: Any) -> list[str]:
    """API endpoints of the cluster's nodes, from their addresses in /cluster/status, minus configured ones."""
    configured = set(client.configured)
    urls = []
    for entry in status or ():
        if entry.type == "node" and entry.ip:
            url = endpoint_for_ip(client.endpoint, entry.ip)
            if url not in configured and url not in urls:
                urls.append(url)
    return urls
