"""The ProxmoxCluster API: pydantic models of spec and status, the single source of truth.

``crds/`` is generated from these models by :mod:`proxmox_operator.crdgen` (``make crds``); a test fails when
the committed YAML drifts from them. The operator parses every object it reads through these models too, so
what the API server admits and what the operator understands cannot diverge.

Conventions (Kubernetes API conventions, structural schemas):

* camelCase on the wire, snake_case in Python (``alias_generator``), frozen models.
* No schema ``default``: a default in a CRD schema is written into the stored object, which GitOps tools see as
  drift. Defaults live here, in code; :mod:`proxmox_operator.crdgen` writes each into its field's description.
* Admission-time validation: patterns, lengths and CEL rules (``x-kubernetes-validations``) ride on the fields
  as ``json_schema_extra``; every string that a CEL rule reads has a ``maxLength`` so the rule's cost is bounded.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from proxmox_operator.proxmox.client import Limits, Timeouts

#: The Proxmox client's own defaults are the spec's: one place for each.
_CLIENT_TIMEOUTS, _CLIENT_LIMITS = Timeouts(), Limits()

GROUP = "proxmox-operator.dev"
VERSION = "v1alpha1"
KIND = "ProxmoxCluster"
PLURAL = "proxmoxclusters"
SINGULAR = "proxmoxcluster"
SHORT_NAMES = ("pxc",)
CATEGORIES = ("proxmox",)

# A Secret's name is a DNS subdomain (RFC 1123): at most 253 characters.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_CA_BUNDLE = 65536


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )


# An https URL: a host name, IPv4 address or bracketed IPv6 address; an optional port from 1 to 65535; an optional
# path. No userinfo (``https://user:pass@host``: the password would show in status, Events and logs, and an HTTP
# client might send it as Basic auth instead of the token header), no query, no fragment. The port range is in the
# pattern, not in CEL: a CEL rule parsing the port exceeds the API server's cost budget.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
HTTPS_URL = rf"^https://(\[[0-9A-Fa-f:.]+\]|[^\s/?#@:\[\]]+)(:{_PORT})?(/[^\s?#@]*)?$"
HTTPS_URL_RULE = {
    "rule": "isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''",
    "message": "must be an https:// URL with a host, e.g. https://pve1.example.com:8006",
}
Endpoint = Annotated[
    str,
    Field(
        min_length=9,
        max_length=2048,
        pattern=HTTPS_URL,
        json_schema_extra={"x-kubernetes-validations": [HTTPS_URL_RULE]},
    ),
]
# PVE's format for certificate fingerprints, as /nodes reports ssl_fingerprint: SHA-256, colon-separated hex.
FINGERPRINT = r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$"


def _rules(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class CredentialsRef(_Model):
    """Where the Proxmox credentials are: a Secret, by default in the namespace of the ProxmoxCluster.

    The Secret holds exactly one pair of keys: ``tokenId`` + ``tokenSecret`` (an API token, recommended;
    ``tokenId`` is ``USER@REALM!TOKENNAME``) or ``username`` + ``password`` (a password login; ``username``
    is ``USER@REALM``, or ``USER`` with a separate ``realm`` key). The operator watches the Secret and picks up
    changes within seconds.
    """

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the Secret."""

    namespace: Annotated[str | None, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = None
    """Namespace of the Secret. Unset: the ProxmoxCluster's own. Another namespace is refused
    (reason SecretNamespaceForbidden) unless the operator runs with --allow-cross-namespace-secrets."""


class CABundleRef(_Model):
    """A key of a Secret or ConfigMap, in the namespace of the ProxmoxCluster, holding PEM certificates."""

    kind: Literal["Secret", "ConfigMap"]
    """Secret or ConfigMap."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the Secret or ConfigMap."""

    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "ca.crt"
    """The key holding the PEM certificates."""


class TLSSpec(_Model):
    """How the operator verifies the Proxmox server's certificate. Verification is on by default.

    Credentials are sent only after the certificate passed: a chain to the system CAs or to caBundle, or a
    fingerprint in fingerprints.
    """

    model_config = ConfigDict(
        json_schema_extra=_rules(
            ("!(has(self.caBundle) && has(self.caBundleRef))", "set caBundle or caBundleRef, not both"),
            (
                "!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || "
                "!(has(self.caBundle) || has(self.caBundleRef) || has(self.fingerprints))",
                "insecureSkipVerify turns verification off: it cannot be combined with caBundle, caBundleRef or "
                "fingerprints",
            ),
        )
    )

    ca_bundle: Annotated[
        str | None,
        Field(
            max_length=MAX_CA_BUNDLE,
            json_schema_extra=_rules(
                (
                    "self.contains('-----BEGIN CERTIFICATE-----')",
                    "caBundle must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
                )
            ),
        ),
    ] = None
    """PEM certificates to trust instead of the system CAs, e.g. the cluster CA ``/etc/pve/pve-root-ca.pem``,
    which signed every node's certificate. Unset: the system's trusted CAs."""

    ca_bundle_ref: CABundleRef | None = None
    """Like caBundle, read from a key of a Secret or ConfigMap (watched: a change applies within seconds)."""

    fingerprints: Annotated[
        list[Annotated[str, Field(pattern=FINGERPRINT, max_length=95)]] | None,
        Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = None
    """SHA-256 fingerprints of node certificates in Proxmox's format (``AA:BB:...``, as ``pvenode cert info``
    and ``GET /nodes`` show them). A certificate with a listed fingerprint is accepted even without a chain to
    a trusted CA (the hostname is not checked then), as Proxmox's own clients do."""

    insecure_skip_verify: bool = False
    """Skip verification of the server certificate. Anyone on the path can then read the credentials: use only
    for a throwaway lab. Reported as TLSVerified=False and a Warning event."""


class TimeoutsSpec(_Model):
    """Timeouts of requests to Proxmox, in seconds."""

    connect_seconds: Annotated[int, Field(ge=1, le=60)] = int(_CLIENT_TIMEOUTS.connect)
    """To establish a connection (TCP and TLS)."""

    read_seconds: Annotated[int, Field(ge=1, le=300)] = int(_CLIENT_TIMEOUTS.read)
    """To wait for an answer."""

    total_seconds: Annotated[int, Field(ge=1, le=600)] = int(_CLIENT_TIMEOUTS.total)
    """For a whole request, a login included."""


class LimitsSpec(_Model):
    """Limits per endpoint, so the operator never overloads a Proxmox node."""

    max_concurrent_requests: Annotated[int, Field(ge=1, le=64)] = _CLIENT_LIMITS.max_concurrent
    """Requests in flight at once to one endpoint."""

    requests_per_second: Annotated[int, Field(ge=1, le=1000)] = int(_CLIENT_LIMITS.requests_per_second)
    """Requests started per second to one endpoint; the few requests of one probe (never more than this many)
    may start at once."""


class HealthCheckSpec(_Model):
    """How often the operator re-checks a Ready cluster."""

    interval_seconds: Annotated[int, Field(ge=10, le=86400)] | None = None
    """Seconds between probes, with +-10% jitter; failures back off exponentially. Default: the operator's
    --probe-interval."""


class ProxmoxClusterSpec(_Model):
    """Desired state: which Proxmox VE cluster to register and how to log in to it."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            ("has(self.endpoint) != has(self.endpoints)", "set exactly one of endpoint or endpoints"),
        )
    )

    endpoint: Endpoint | None = None
    """HTTPS URL of a Proxmox VE node's API, e.g. ``https://pve1.example.com:8006``: the one-element form of
    endpoints. Plain http is rejected: Proxmox serves its API only over TLS."""

    endpoints: Annotated[
        list[Endpoint] | None,
        Field(min_length=1, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = None
    """HTTPS URLs of several nodes of the cluster, most preferred first. The operator fails over to the next on
    a transport error (refused, reset, timeout, TLS handshake), never on an HTTP error, and returns to the
    first when it answers again."""

    discover_endpoints: bool = True
    """Also use the node addresses that ``GET /cluster/status`` reports (with the port of the first endpoint),
    after the configured ones. They are kept in status.endpoints."""

    credentials_ref: CredentialsRef
    """Reference to the Secret with the login (API token or username/password)."""

    tls: TLSSpec | None = None
    """TLS verification settings. Unset: verify against the system's trusted CAs."""

    timeouts: TimeoutsSpec | None = None
    """Request timeouts. Unset: each field's default."""

    limits: LimitsSpec | None = None
    """Per-endpoint concurrency and rate limits. Unset: each field's default."""

    health_check: HealthCheckSpec | None = None
    """Probe interval. Unset: the operator's --probe-interval."""

    @property
    def all_endpoints(self) -> list[str]:
        """The configured endpoints, most preferred first."""
        return list(self.endpoints or ([self.endpoint] if self.endpoint else []))


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


class NodeStatus(_Model):
    """One node of the cluster, from ``GET /nodes`` and ``GET /cluster/status``."""

    name: str
    """Node name."""

    online: bool
    """Whether the node is online in the cluster."""

    ip: str | None = None
    """The node's cluster address (``GET /cluster/status``)."""

    level: str | None = None
    """Subscription level ('' without a subscription)."""


class NodesStatus(_Model):
    """The cluster's nodes."""

    total: Annotated[int, Field(ge=0)]
    """Nodes in the cluster, online or not."""

    online: Annotated[int, Field(ge=0)]
    """Nodes online."""

    summary: str
    """'online/total', e.g. '3/3' (the Nodes printer column)."""

    items: Annotated[
        list[NodeStatus],
        Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
    ] = Field(default_factory=list)
    """Every node, by name."""


class AuthStatus(_Model):
    """How the operator logs in (never the secret)."""

    method: Literal["token", "password"]
    """'token' (an API token) or 'password' (a ticket from a password login)."""

    id: str
    """The token id (USER@REALM!TOKENNAME) or the user (USER@REALM)."""


class ProxmoxClusterStatus(_Model):
    """Observed state, written by the operator only."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` of the spec this status describes."""

    version: VersionInfo | None = None
    """The Proxmox VE version, from the last successful probe."""

    cluster_name: str | None = None
    """The corosync cluster name; unset for a standalone node."""

    quorate: bool | None = None
    """Whether the cluster has quorum (QDevice votes included), from ``GET /cluster/status``."""

    nodes: NodesStatus | None = None
    """The cluster's nodes, from the last successful probe."""

    node_count: Annotated[int, Field(ge=0)] | None = None
    """How many nodes ``GET /nodes`` lists (online or not), from the last successful probe."""

    endpoints: Annotated[list[str], Field(json_schema_extra={"x-kubernetes-list-type": "atomic"})] | None = None
    """Node API endpoints discovered from ``GET /cluster/status``; used after the configured ones, and kept here
    so they survive an operator restart. Never used with insecureSkipVerify."""

    endpoints_for: str | None = None
    """A digest of what ``endpoints`` were discovered with: the configured endpoints, the TLS trust, the
    credentials' Secret and identity (never the secret), the Secret's allowed hosts. After a restart the
    operator uses ``endpoints`` only when this matches its own settings, and re-checks each one (https, an IP
    address, the configured port, the allowed hosts): a change of any setting discards them."""

    active_endpoint: str | None = None
    """The endpoint that answered the last probe."""

    auth: AuthStatus | None = None
    """How the operator logs in."""

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
    """Ready (the summary), Authenticated, Reachable, TLSVerified, Quorate, PermissionsSufficient, and Paused or
    Duplicate when they apply."""


class ProxmoxCluster(_Model):
    """A Proxmox VE cluster registered with Kubernetes."""

    api_version: Literal["proxmox-operator.dev/v1alpha1"] = "proxmox-operator.dev/v1alpha1"
    kind: Literal["ProxmoxCluster"] = "ProxmoxCluster"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ProxmoxClusterSpec
    status: ProxmoxClusterStatus | None = None

    PRINTER_COLUMNS: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.activeEndpoint"},
        {"name": "Version", "type": "string", "jsonPath": ".status.version.version"},
        {"name": "Nodes", "type": "string", "jsonPath": ".status.nodes.summary"},
        {"name": "Quorate", "type": "boolean", "jsonPath": ".status.quorate"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
