"""How the operator logs in to Kubernetes: one function for kopf's watches and the operator's own requests.

In a Pod: the mounted ServiceAccount token, CA and namespace, and the API server from ``KUBERNETES_SERVICE_HOST``
and ``KUBERNETES_SERVICE_PORT``, as client-go's in-cluster configuration does (kopf's built-in login would use the
DNS name ``kubernetes.default.svc`` instead, which a Pod with ``hostNetwork`` or a cluster without DNS cannot
resolve). Elsewhere: the current context of ``KUBECONFIG`` or ``~/.kube/config``, through kopf's kubeconfig
login (tokens, client certificates, basic auth; exec plugins are not run: use a token or a certificate).

The token is read from its file at every login, and the operator logs in again on a 401, so a rotated
(bound, expiring) ServiceAccount token is picked up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(
    *, settings: kopf.OperatorSettings, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> kopf.ConnectionInfo | None:
    """The in-cluster login, or None outside a Pod (no service host or no token)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    token_file = account_dir / "token"
    if not host or not token_file.is_file():
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 service address
    ca = account_dir / "ca.crt"
    namespace = account_dir / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://{host}:{port}",
        ca_path=str(ca) if ca.is_file() else None,
        scheme="Bearer",
        token=token_file.read_text(encoding="utf-8").strip() or None,
        default_namespace=(namespace.read_text(encoding="utf-8").strip() or None) if namespace.is_file() else None,
        trust_env=settings.networking.trust_env,
    )


def login(*, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """The operator's credentials: in-cluster first, else the kubeconfig. Raises kopf.LoginError with neither."""
    info = in_cluster(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError(
            "no Kubernetes credentials: not in a Pod with a ServiceAccount token, and no KUBECONFIG or ~/.kube/config"
        )
    return info
