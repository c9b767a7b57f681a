"""The operator's Kubernetes login: in-cluster like client-go, else the kubeconfig; never a DNS name."""

from __future__ import annotations

import base64
from pathlib import Path

import kopf
import pytest

from proxmox_operator import kube, kubeauth


@pytest.fixture
def account(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("tok-123\n")
    (tmp_path / "namespace").write_text("proxmox-operator-system")
    (tmp_path / "ca.crt").write_text("not read here")
    return tmp_path


def test_in_cluster_uses_the_service_host_and_port_and_the_mounted_token(
    account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = kubeauth.in_cluster(settings=kopf.OperatorSettings(), account_dir=account)
    assert info is not None
    assert info.server == "https://10.96.0.1:6443"
    assert (info.scheme, info.token) == ("Bearer", "tok-123")
    assert info.ca_path == str(account / "ca.crt")
    assert info.default_namespace == "proxmox-operator-system"


def test_an_ipv6_service_host_is_bracketed(account: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    info = kubeauth.in_cluster(settings=kopf.OperatorSettings(), account_dir=account)
    assert info is not None and info.server == "https://[fd00::1]:443"


def test_outside_a_pod_there_is_no_in_cluster_login(account: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kubeauth.in_cluster(settings=kopf.OperatorSettings(), account_dir=account) is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert kubeauth.in_cluster(settings=kopf.OperatorSettings(), account_dir=account / "missing") is None


def test_without_any_credentials_the_login_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError, match="no Kubernetes credentials"):
        kubeauth.login(settings=kopf.OperatorSettings())


def test_kubeconfig_data_fields_are_base64_of_pem_and_pem_is_taken_as_is() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert kube._pem(base64.b64encode(pem.encode()).decode()) == pem
    assert kube._pem(pem) == pem
