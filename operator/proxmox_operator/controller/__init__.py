"""The controller: what the operator does, as plain async code with no kopf import. kopf handlers
(:mod:`proxmox_operator.handlers`) only register and delegate here; Kubernetes is reached through
:mod:`.ports`."""
