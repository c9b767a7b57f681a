"""Fixtures for tests of the operator's container image (deploy/Dockerfile, built by `make image`).

The image is never built here: a build takes half a minute and must not run under a test's timeout, so `make test`
runs `make image` first, and these fixtures fail with that advice when the image is missing or older than its
inputs. The cluster, CRD, ServiceAccount and simulator fixtures are the root conftest's (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.kube import ROOT

IMAGE_SCRIPT = ROOT / "hack" / "image.sh"
#: The label hack/image.sh gives the image: the base image it was built on.
BASE_LABEL = "dev.proxmox-operator.base"


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """podman with the project's containers.conf (runc, ulimits the sandbox allows), as hack/image.sh runs it."""
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "CONTAINERS_CONF": str(ROOT / "hack" / "containers.conf")},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def image() -> str:
    """The reference of the operator image, if it was built from the current sources (`hack/image.sh ref`)."""
    result = subprocess.run(["bash", str(IMAGE_SCRIPT), "ref"], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        pytest.fail(f"no up-to-date operator image: `make test` builds it first, or run `make image`\n{result.stderr}")
    return result.stdout.strip()


@pytest.fixture(scope="session")
def base_image(image: str) -> str:
    """The image deploy/Dockerfile was built on (BASE)."""
    base = podman("image", "inspect", "--format", f'{{{{ index .Labels "{BASE_LABEL}" }}}}', image).stdout.strip()
    assert base, f"{image} has no {BASE_LABEL} label: it was not built by hack/image.sh"
    return base


def in_image(image: str, entrypoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one command in a throw-away container of ``image``: read-only, no capabilities, no network."""
    return podman(
        "run", "--rm", "--read-only", "--cap-drop=ALL", "--network=none", "--entrypoint", entrypoint, image, *args
    )


def write_service_account(directory: Path, *, token: str, ca_pem: str, namespace: str) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: token, ca.crt, namespace.

    Readable by the container's user (10001); the directory's parents stay private to this user.
    """
    directory.mkdir(mode=0o755)
    for name, content in (("token", token), ("ca.crt", ca_pem), ("namespace", namespace)):
        path = directory / name
        path.write_text(content)
        path.chmod(0o644)
    directory.chmod(0o755)
    return directory
