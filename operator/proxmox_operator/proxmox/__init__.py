"""The Proxmox VE API client: pooled async HTTP, ticket and token auth, TLS trust, typed errors."""

from proxmox_operator.proxmox.client import Node, ProxmoxClient, Timeouts, Version
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
    "Credentials",
    "CredentialsInvalid",
    "Node",
    "PasswordCredentials",
    "ProxmoxClient",
    "ProxmoxError",
    "Timeouts",
    "TokenCredentials",
    "TrustConfig",
    "TrustConfigInvalid",
    "Version",
    "from_secret_data",
]
