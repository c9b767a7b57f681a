"""The ProxmoxCluster API: pydantic models of spec and status, the single source of truth.

``crds/`` is generated from these models by :mod:`proxmox_operator.crdgen` (``make crds``); a test fails when
the committed YAML drifts from them. The operator parses every object it reads through these models too, so
what the API server admits and what the operator understands cannot diverge.

Conventions (Kubernetes API conventions, structural schemas):

* camelCase on the wire, snake_case in Python (``alias_generator``), frozen models.
* No schema ``default``: a default in a CRD schema is written into the stored object, which GitOps tools see as
  drift. Defaults live here, in code, and the field descriptions say what they are.
* Admission-time validation: patterns, lengths and CEL rules (``x-kubernetes-validations``) ride on the fields
  as ``json_schema_extra``; every string that a CEL rule reads has a ``maxLength`` so the rule's cost is bounded.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "proxmox-operator.dev"
VERSION = "v1alpha1"
KIND = "ProxmoxCluster"
PLURAL = "proxmoxclusters"
SINGULAR = "proxmoxcluster"
SHORT_NAMES = ("pxc",)
CATEGORIES = ("proxmox",)

# A Secret's name is a DNS subdomain (RFC 1123): at most 253 characters.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_CA_BUNDLE = 65536


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )


class CredentialsRef(_Model):
    """Where the Proxmox credentials are: a Secret in the same namespace as the ProxmoxCluster.

    The Secret holds exactly one pair of keys: ``tokenId`` + ``tokenSecret`` (an API token, recommended;
    ``tokenId`` is ``USER@REALM!TOKENNAME``) or ``username`` + ``password`` (a password login; ``username``
    is ``USER@REALM``, or ``USER`` with a separate ``realm`` key). The operator watches the Secret and picks up
    changes within seconds.
    """

    name: Annotated[
        str,
        Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN),
    ]
    """Name of the Secret, in the namespace of this ProxmoxCluster."""


class TLSSpec(_Model):
    """How the operator verifies the Proxmox server's certificate. Verification is on by default."""

    ca_bundle: Annotated[
        str | None,
        Field(
            max_length=MAX_CA_BUNDLE,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "self.contains('-----BEGIN CERTIFICATE-----')",
                        "message": "caBundle must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
                    }
                ]
            },
        ),
    ] = None
    """PEM certificates to trust instead of the system CAs, e.g. the cluster CA ``/etc/pve/pve-root-ca.pem``,
    which signed every node's certificate. Unset: the system's trusted CAs."""

    insecure_skip_verify: bool = False
    """Skip verification of the server certificate. Default false. Anyone on the path can then read the
    credentials: use only for a throwaway lab."""


class ProxmoxClusterSpec(_Model):
    """Desired state: which Proxmox VE cluster to register and how to log in to it."""

    endpoint: Annotated[
        str,
        Field(
            min_length=9,
            max_length=2048,
            pattern=r"^https://[^\s/?#]+(/[^\s?#]*)?$",
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",
                        "message": "endpoint must be an https:// URL with a host, e.g. https://pve1.example.com:8006",
                    }
                ]
            },
        ),
    ]
    """HTTPS URL of a Proxmox VE node's API, e.g. ``https://pve1.example.com:8006``. Plain http is rejected:
    Proxmox serves its API only over TLS. Port 8006 is Proxmox's default; a URL without a port uses 443."""

    credentials_ref: CredentialsRef
    """Reference to the Secret with the login (API token or username/password)."""

    tls: TLSSpec | None = None
    """TLS verification settings. Unset: verify against the system's trusted CAs."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    """A condition, as the Kubernetes API conventions define it (metav1.Condition)."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Type of condition in CamelCase, e.g. ``Ready``."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    """A CamelCase word that says why the condition has this status, e.g. ``AuthenticationFailed``."""

    message: Annotated[str, Field(max_length=32768)] = ""
    """What happened, for a person, and what to do about it."""

    last_transition_time: datetime
    """When the status last changed (not when it was last checked)."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this condition was computed for."""


class VersionInfo(_Model):
    """The Proxmox VE version, as ``GET /version`` reports it."""

    version: str
    """The pve-manager version, e.g. ``8.4.1`` (``7.4-3`` on Proxmox VE 7)."""

    release: str | None = None
    """The release, e.g. ``8.4``."""

    repoid: str | None = None
    """The git commit of pve-manager the server was built from."""


class ProxmoxClusterStatus(_Model):
    """Observed state, written by the operator only."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` of the spec this status describes."""

    version: VersionInfo | None = None
    """The Proxmox VE version of the endpoint, from the last successful probe."""

    node_count: Annotated[int, Field(ge=0)] | None = None
    """How many nodes ``GET /nodes`` lists (online or not), from the last successful probe."""

    last_probe_time: datetime | None = None
    """When the operator last talked to Proxmox for this resource, successful or not."""

    conditions: Annotated[
        list[Condition],
        Field(
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            }
        ),
    ] = Field(default_factory=list)
    """Current conditions. ``Ready`` summarises them: True when the operator logged in and read the cluster."""


class ProxmoxCluster(_Model):
    """A Proxmox VE cluster registered with Kubernetes."""

    api_version: Literal["proxmox-operator.dev/v1alpha1"] = "proxmox-operator.dev/v1alpha1"
    kind: Literal["ProxmoxCluster"] = "ProxmoxCluster"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ProxmoxClusterSpec
    status: ProxmoxClusterStatus | None = None

    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Endpoint", "type": "string", "jsonPath": ".spec.endpoint"},
        {"name": "Version", "type": "string", "jsonPath": ".status.version.version"},
        {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodeCount"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
