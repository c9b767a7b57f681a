"""The Proxmox VE API client: pooled async HTTP, ticket and token auth, TLS trust, typed errors."""

from proxmox_operator.proxmox.client import (
    ClusterStatusEntry,
    Limits,
    Node,
    ProxmoxClient,
    Timeouts,
    Version,
    endpoint_for_ip,
)
from proxmox_operator.proxmox.credentials import (
    Credentials,
    CredentialsInvalid,
    PasswordCredentials,
    TokenCredentials,
    from_secret_data,
)
from proxmox_operator.proxmox.errors import ProxmoxError
from proxmox_operator.proxmox.tls import TrustConfig, TrustConfigInvalid

__all__ = [
    "ClusterStatusEntry",
    "Credentials",
    "CredentialsInvalid",
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
    "from_secret_data",
]
