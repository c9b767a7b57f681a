"""The Secrets the operator may use: only those labelled ``proxmox-operator.dev/credentials: "true"``.

In a shared cluster, whoever may create a ProxmoxCluster in a namespace is not necessarily allowed to read that
namespace's Secrets. Were the operator to use any Secret a ProxmoxCluster names, such a user could have any
token or password in the namespace sent to a host of their choosing. The label is the Secret owner's opt-in:
a Secret without it is never read (its data never reaches the operator), never watched and never used.

* The operator's Secret watch is label-selected on the server (kopf's ``settings.watching.label_selectors``),
  so the other Secrets of the cluster never stream through its memory. The watch fills a :class:`SecretCache`
  that probes read, instead of a GET per probe.
* A cache miss (the watch has not listed yet, or the Secret's namespace is not watched) is one label- and
  name-selected LIST, which again returns only a labelled Secret; when that finds nothing, a metadata-only
  GET (``PartialObjectMetadata``: no data) tells a missing Secret from an unlabelled one.
* The annotation ``proxmox-operator.dev/allowed-hosts`` on the Secret limits where its credentials may go
  (see :mod:`proxmox_operator.proxmox.hosts`).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxmox_operator.api.v1alpha1 import GROUP

log = logging.getLogger(__name__)

CREDENTIALS_LABEL = f"{GROUP}/credentials"
CREDENTIALS_LABEL_SELECTOR = f"{CREDENTIALS_LABEL}=true"


@dataclass(frozen=True)
class Secret:
    """What the operator knows of a Secret. ``data`` is empty unless the Secret carries the opt-in label."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def opted_in(self) -> bool:
        return is_opted_in(self.labels)


def is_opted_in(labels: Mapping[str, Any] | None) -> bool:
    return str((labels or {}).get(CREDENTIALS_LABEL, "")).lower() == "true"


def from_body(body: Mapping[str, Any]) -> Secret:
    """A Secret from its API representation (watch event or GET); data only when opted in."""
    meta = body.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    data = decode(body.get("data") or {}) if is_opted_in(labels) else {}
    return Secret(labels=labels, annotations=annotations, data=data)


def decode(data: Mapping[str, Any]) -> dict[str, bytes]:
    """Secret values arrive base64-encoded; an undecodable value is left out (and reported as missing)."""
    out: dict[str, bytes] = {}
    for key, value in data.items():
        try:
            out[str(key)] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError, TypeError):
            log.warning("Secret key %r is not valid base64; ignoring it", key)
    return out


class SecretCache:
    """Labelled Secrets by (namespace, name), kept current by the label-selected watch."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Secret] = {}

    def get(self, namespace: str, name: str) -> Secret | None:
        return self._items.get((namespace, name))

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Apply a watch event. A Secret that loses the label leaves the selection: the API server sends
        DELETED for it, and it is forgotten like a deleted one."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED" or meta.get("deletionTimestamp") or not is_opted_in(meta.get("labels")):
            self._items.pop(key, None)
        else:
            self._items[key] = from_body(body)
