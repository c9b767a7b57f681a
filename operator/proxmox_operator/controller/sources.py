"""Where a probe gets its credentials, trust and endpoints: the labelled Secret, its allowed hosts, the CA bundle,
and the discovered endpoints status remembers (status is not trusted input)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxmox_operator import secretstore
from proxmox_operator.api import v1alpha1 as api
from proxmox_operator.api.v1alpha1 import (
    ConditionType,
    ProxmoxClusterSpec,
    Reason,
)
from proxmox_operator.controller.outcome import AUTHENTICATED, TLS_VERIFIED, Outcome, cond_false, stopped_early
from proxmox_operator.controller.ports import Key, Kube, SecretForbidden
from proxmox_operator.proxmox import (
    ALLOWED_HOSTS_ANNOTATION,
    AllowedHosts,
    AllowedHostsInvalid,
    TrustConfig,
)
from proxmox_operator.proxmox.credentials import Credentials
from proxmox_operator.secretstore import Secret


def not_labeled(where: str, name: str, namespace: str, condition: ConditionType) -> Outcome:
    """A Secret without the opt-in label: never read, and the message says nothing about its content."""
    label = secretstore.CREDENTIALS_LABEL
    return stopped_early(
        Reason.SECRET_NOT_LABELED,
        f"{where} is not labelled {label}=true, so the operator does not use it; if its owner means it for "
        f"the operator: kubectl label secret {name} -n {namespace} {label}=true",
        transient=False,
        conds={condition: cond_false(Reason.SECRET_NOT_LABELED)},
    )


async def read_trust(key: Key, spec: ProxmoxClusterSpec, kube: Kube) -> TrustConfig | Outcome:
    tls = spec.tls
    if tls is None:
        return TrustConfig()
    ca_bundle = tls.ca_bundle
    ref = tls.ca_bundle_ref
    if ref is not None:
        where = f"{ref.kind} '{ref.name}' in namespace '{key.namespace}'"
        try:
            if ref.kind == "Secret":
                secret = await kube.read_secret(key.namespace, ref.name)
                if secret is not None and not secret.opted_in:
                    return not_labeled(where, ref.name, key.namespace, TLS_VERIFIED)
                data = None if secret is None else {k: v.decode("utf-8", "replace") for k, v in secret.data.items()}
            else:
                data = await kube.read_configmap(key.namespace, ref.name)
        except SecretForbidden:
            return stopped_early(
                Reason.CA_BUNDLE_FORBIDDEN,
                f"the operator may not read {where}",
                transient=False,
                conds={TLS_VERIFIED: cond_false(Reason.CA_BUNDLE_FORBIDDEN)},
            )
        if data is None or not data.get(ref.key, "").strip():
            missing = f"{where} does not exist" if data is None else f"{where} has no key '{ref.key}'"
            return stopped_early(
                Reason.CA_BUNDLE_NOT_FOUND,
                f"{missing}; spec.tls.caBundleRef must name PEM certificates",
                conds={TLS_VERIFIED: cond_false(Reason.CA_BUNDLE_NOT_FOUND)},
            )
        ca_bundle = data[ref.key]
        if len(ca_bundle.encode()) > api.MAX_CA_BUNDLE:
            return stopped_early(
                Reason.TLS_CONFIG_INVALID,
                f"spec.tls.caBundleRef: key '{ref.key}' of {where} holds more than {api.MAX_CA_BUNDLE // 1024} "
                "KiB; a CA bundle is a few PEM certificates",
                transient=False,
                conds={TLS_VERIFIED: cond_false(Reason.TLS_CONFIG_INVALID)},
            )
    return TrustConfig.build(
        ca_bundle=ca_bundle, fingerprints=tls.fingerprints or (), insecure_skip_verify=tls.insecure_skip_verify
    )


@dataclass(frozen=True)
class KnownEndpoints:
    """Discovered endpoints as status recorded them. Status is not trusted input: they are used only with the
    same :func:`discovery_basis`, and the client re-validates each one (https, an IP, the configured port, the
    allowed hosts) and never uses them with insecureSkipVerify."""

    endpoints: list[str] = field(default_factory=list)
    basis: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> KnownEndpoints:
        endpoints = status.get("endpoints")
        basis = status.get("endpointsFor")
        if not isinstance(endpoints, list) or not isinstance(basis, str):
            return cls()
        return cls([str(e) for e in endpoints[:64] if isinstance(e, str)], basis)


def allowed_hosts_of(spec: ProxmoxClusterSpec, secret: Secret, where: str) -> AllowedHosts | Outcome | None:
    """The Secret owner's limit on where its credentials may go; every configured endpoint must be inside it.
    (Discovered endpoints outside it are dropped by the client, which never connects to them.)"""
    text = secret.annotations.get(ALLOWED_HOSTS_ANNOTATION)
    if text is None:
        return None
    try:
        allowed = AllowedHosts.parse(text)
    except AllowedHostsInvalid as exc:
        return stopped_early(
            Reason.ALLOWED_HOSTS_INVALID,
            f"the annotation {ALLOWED_HOSTS_ANNOTATION} of {where} is invalid: {exc}",
            transient=False,
            conds={AUTHENTICATED: cond_false(Reason.ALLOWED_HOSTS_INVALID)},
        )
    refused = [url for url in spec.all_endpoints if not allowed.permits(url)]
    if refused:
        return stopped_early(
            Reason.HOST_NOT_ALLOWED,
            f"{where} allows its credentials only to {allowed} (annotation {ALLOWED_HOSTS_ANNOTATION}), and "
            f"{', '.join(refused)} is not among them; nothing was sent there. Point the endpoints at the hosts "
            "the Secret allows, or ask its owner to extend the annotation",
            transient=False,
            conds={AUTHENTICATED: cond_false(Reason.HOST_NOT_ALLOWED)},
        )
    return allowed


def discovery_basis(
    spec: ProxmoxClusterSpec, trust: TrustConfig, secret_ns: str, creds: Credentials, allowed: AllowedHosts | None
) -> str:
    """A digest of what discovered endpoints were found with: the configured endpoints, the trust, the
    credentials' Secret and identity (never the secret itself), the allowed hosts. status.endpoints is used
    after a restart only when it carries the same digest, so a change of any of these discards it."""
    material = repr(
        (
            spec.all_endpoints,
            trust.ca_bundle,
            sorted(trust.fingerprints),
            trust.insecure_skip_verify,
            secret_ns,
            spec.credentials_ref.name,
            creds.method,
            creds.identity,
            str(allowed),
        )
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]
