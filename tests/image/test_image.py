"""The operator image as a cluster would run it: a non-root user, a read-only root filesystem, no capabilities,
the operator and nothing else, and in-cluster configuration from a mounted ServiceAccount."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.image.conftest import in_image, podman, write_service_account
from tests.integration.conftest import OPERATOR_NS, register, scratch_namespace
from tests.integration.kube import Cluster, wait_condition, wait_for
from tests.integration.pve import PVE

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: What a Pod of deploy/operator.yaml gets: the image's own user, no capabilities, a read-only root.
POD_LIKE = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--user", "10001"]


def test_help_answers_as_uid_10001_with_a_read_only_root_and_no_capabilities(image: str) -> None:
    result = podman("run", "--rm", *POD_LIKE, "--network=none", image, "--help")
    assert result.stdout.startswith("usage: proxmox-operator"), result.stdout + result.stderr
    assert "--liveness URL" in result.stdout


def test_the_image_runs_as_uid_10001_without_being_told(image: str) -> None:
    result = podman("run", "--rm", "--network=none", "--entrypoint", "id", image)
    assert result.stdout.split()[:2] == ["uid=10001(proxmox-operator)", "gid=10001(proxmox-operator)"]


# What is importable and what lies on the filesystem: the operator, and no simulator, tests, pytest or pip cache.
INVENTORY = r"""
import importlib.util, json, os
names = ("proxmox_operator", "kopf", "pve_simulator", "pytest", "_pytest", "tests", "pip")
found = []
for top in ("/opt", "/usr", "/root", "/home", "/tmp", "/var", "/src", "/nonexistent"):
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            if name in ("pve_simulator", "conftest.py", "_pytest") or (dirpath.endswith(".cache") and name == "pip"):
                found.append(os.path.join(dirpath, name))
print(json.dumps({
    "importable": {n: importlib.util.find_spec(n) is not None for n in names},
    "found": found,
    "exists": {p: os.path.exists(p) for p in ("/src", "/root/.cache/pip", "/nonexistent")},
}))
"""


def test_the_image_holds_the_operator_and_no_simulator_tests_or_pip_cache(image: str) -> None:
    inventory = json.loads(in_image(image, "python3", "-c", INVENTORY).stdout)
    assert inventory["importable"] == {
        "proxmox_operator": True,
        "kopf": True,
        "pve_simulator": False,
        "pytest": False,
        "_pytest": False,
        "tests": False,
        # pip installed the operator, then left: nothing to install more with at run time.
        "pip": False,
    }
    assert inventory["found"] == []
    assert inventory["exists"] == {"/src": False, "/root/.cache/pip": False, "/nonexistent": False}


def test_the_ca_bundle_is_the_base_images_own_not_the_build_hosts(image: str, base_image: str) -> None:
    # The build mounts this machine's CA bundle over the file so that pip trusts it; the image must keep the file
    # Debian's ca-certificates package installed in the base.
    in_operator = in_image(image, "sha256sum", CA_BUNDLE).stdout.split()[0]
    in_base = in_image(base_image, "sha256sum", CA_BUNDLE).stdout.split()[0]
    assert in_operator == in_base


@pytest.fixture
def image_namespace(cluster: Cluster, crd: str) -> Iterator[str]:
    """A namespace only the container's operator serves (no operator of the integration tests watches it)."""
    yield from scratch_namespace(cluster, "pxo-image-")


@pytest.fixture
def service_account_dir(operator_kubeconfig: Path, tmp_path: Path) -> Path:
    """The ServiceAccount of deploy/rbac.yaml as a Pod sees it, from the token and CA of its kubeconfig."""
    kc = yaml.safe_load(operator_kubeconfig.read_text())
    ca_pem = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    return write_service_account(
        tmp_path / "serviceaccount", token=kc["users"][0]["user"]["token"], ca_pem=ca_pem, namespace=OPERATOR_NS
    )


def apiserver_port(cluster: Cluster) -> int:
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    host, _, port = server.removeprefix("https://").partition(":")
    assert host == "127.0.0.1", f"the image test needs the local control plane on 127.0.0.1, not {server}"
    return int(port)


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"pxo-image-test-{secrets.token_hex(4)}"
    yield name
    podman("rm", "--force", "--ignore", name, check=False)


def logs(name: str) -> str:
    result = podman("logs", name, check=False)
    return (result.stdout + result.stderr)[-5000:]


def test_the_operator_runs_in_cluster_and_registers_a_cluster(
    image: str,
    cluster: Cluster,
    image_namespace: str,
    service_account_dir: Path,
    pve: PVE,
    closed_port: int,
    container_name: str,
) -> None:
    liveness = closed_port
    podman(
        "run",
        "--detach",
        "--name",
        container_name,
        *POD_LIKE,
        # The apiserver and the simulator listen on 127.0.0.1 of this machine, as a Service's address would be
        # reachable from a Pod.
        "--network=host",
        "--volume",
        f"{service_account_dir}:{SERVICE_ACCOUNT_DIR}:ro",
        "--env",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env",
        f"KUBERNETES_SERVICE_PORT={apiserver_port(cluster)}",
        image,
        "--liveness",
        f"http://127.0.0.1:{liveness}/healthz",
        "--namespace",
        image_namespace,
    )
    wait_for(lambda: healthz(liveness) == 200 or None, timeout=60, what="the operator's /healthz")

    register(cluster, image_namespace, pve)
    try:
        obj = wait_condition(cluster, image_namespace, "lab", "True", "Registered")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- operator log ---\n{logs(container_name)}") from None
    assert obj["status"]["nodeCount"] == len(pve.nodes)

    # Deregistration works from the container too: it removes its finalizer, so the delete completes.
    cluster.kubectl("delete", "pxc", "lab", "-n", image_namespace, "--wait=true", "--timeout=60s")

    podman("stop", "--time", "30", container_name, timeout=60)
    state = json.loads(podman("inspect", "--format", "{{json .State}}", container_name).stdout)
    assert state["Status"] == "exited"
    # kopf exits 0 on SIGTERM: a clean shutdown, as on a Pod's termination.
    assert state["ExitCode"] == 0, logs(container_name)
    podman("rm", container_name)
    assert podman("container", "exists", container_name, check=False).returncode == 1
