"""The developer tools `make tools` builds (hack/tools.sh: helm, kstatus, promtool), as the tests find them."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.kube import ROOT


def cached_tool(name: str) -> str:
    """The path of the cached ``name``. Never builds (``PXO_NO_BUILD=1``: a build must not run under a test's
    timeout); when it is missing the session stops with the advice to run ``make tools``."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), name],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PXO_NO_BUILD": "1"},
    )
    if result.returncode != 0:
        pytest.exit(f"{name} is not built: run `make tools` first\n{result.stderr}", returncode=3)
    return result.stdout.strip()
