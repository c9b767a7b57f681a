"""The source root `operator/` must never shadow Python's standard `operator` module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_folder_is_not_importable_from_the_repository_root() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, proxmox_operator; print(operator.__file__); print(operator.add(1, 2))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(out[0]).parent != ROOT / "operator"
    assert out[1] == "3"
