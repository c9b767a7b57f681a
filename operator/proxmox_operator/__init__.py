"""proxmox-operator: register Proxmox VE clusters with Kubernetes and keep their status true."""
