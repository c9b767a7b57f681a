"""The Proxmox VE API client: pooled async HTTP, ticket and token auth, TLS trust, allowed hosts, typed errors."""

from proxmox_operator.proxmox import errors
from proxmox_operator.proxmox.body import MAX_BODY_BYTES, MAX_JSON_DEPTH
from proxmox_operator.proxmox.client import Limits, ProxmoxClient, Timeouts, endpoint_for_ip
from proxmox_operator.proxmox.credentials import (
    Credentials,
    CredentialsInvalid,
    PasswordCredentials,
    TokenCredentials,
    from_secret_data,
)
from proxmox_operator.proxmox.errors import HostNotAllowed, ProxmoxError
from proxmox_operator.proxmox.hosts import ALLOWED_HOSTS_ANNOTATION, AllowedHosts, AllowedHostsInvalid
from proxmox_operator.proxmox.payloads import ClusterStatusEntry, Node, Version
from proxmox_operator.proxmox.tls import TrustConfig, TrustConfigInvalid

__all__ = [
    "ALLOWED_HOSTS_ANNOTATION",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "AllowedHosts",
    "AllowedHostsInvalid",
    "ClusterStatusEntry",
    "Credentials",
    "CredentialsInvalid",
    "HostNotAllowed",
    "Limits",
    "Node",
    "PasswordCredentials",
    "ProxmoxClient",
    "ProxmoxError",
    "Timeouts",
    "TokenCredentials",
    "TrustConfig",
    "TrustConfigInvalid",
    "Version",
    "endpoint_for_ip",
    "errors",
    "from_secret_data",
]
