"""The operator image holds the operator only: no simulator, no dev tools, and no dependency without an upper bound.

deploy/Dockerfile runs `pip install .` on pyproject.toml, README.md and operator/. These tests build the wheel from
exactly those files (copied, so the build writes nothing into the work tree) and look into it.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
#: What deploy/Dockerfile copies into the image's build context, and nothing else.
IMAGE_SOURCES = {"pyproject.toml", "README.md", "operator"}
#: The simulator's own distribution and its dependencies: for tests only, never in the image. (aiohttp is kopf's
#: HTTP client, which the operator's kube.py uses too.)
SIMULATOR_ONLY = {"pve-simulator", "cryptography"}


def dockerfile_copy_sources() -> set[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    sources: set[str] = set()
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].upper() in {"COPY", "ADD"}:
            args = [word for word in words[1:] if not word.startswith("--")]
            sources.update(source.rstrip("/") for source in args[:-1])
    return sources


def load(pyproject: Path) -> dict[str, Any]:
    with pyproject.open("rb") as f:
        return tomllib.load(f)


def has_upper_bound(requirement: str) -> bool:
    return any(spec.operator in {"<", "<=", "==", "===", "~="} for spec in Requirement(requirement).specifier)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    context = tmp_path_factory.mktemp("image-context")
    for name in IMAGE_SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
        else:
            shutil.copy2(source, context / name)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, (
        f"building the operator's wheel failed (the venv needs the dev extra's setuptools: `make venv`):\n"
        f"{build.stdout}\n{build.stderr}"
    )
    (path,) = out.glob("proxmox_operator-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_dockerfile_copies_the_operator_distribution_only() -> None:
    assert dockerfile_copy_sources() == IMAGE_SOURCES


def test_wheel_holds_the_operator_and_no_simulator(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "proxmox_operator/__init__.py" in names
    assert "proxmox_operator/py.typed" in names
    assert [n for n in names if n.startswith("pve_simulator/")] == []
    top_level = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"proxmox_operator"}


def test_wheel_installs_no_simulator_dependencies_or_scripts(wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    runtime = [Requirement(r) for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r]
    assert runtime, "the wheel declares no runtime dependencies"
    assert {r.name.lower() for r in runtime} & SIMULATOR_ONLY == set()
    assert "simulator" not in meta.get_all("Provides-Extra", [])
    (entry_points,) = (n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "pve-simulator" not in wheel.read(entry_points).decode()
    for requirement in runtime:
        assert has_upper_bound(str(requirement)), f"the wheel requires {requirement} without an upper bound"


@pytest.mark.parametrize("pyproject", ["pyproject.toml", "simulator/pyproject.toml"])
def test_every_dependency_has_an_upper_bound(pyproject: str) -> None:
    project = load(ROOT / pyproject)["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert requirements
    unbounded = [r for r in requirements if not has_upper_bound(r)]
    assert unbounded == [], f"{pyproject}: give these an upper bound (`<`): {unbounded}"


def imported_top_level(source_root: Path) -> set[str]:
    """The top-level names of every module imported under ``source_root``, relative imports excluded."""
    names: set[str] = set()
    for path in source_root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_a_declared_runtime_dependency() -> None:
    """A module that only arrives with another package (or a dev extra) breaks the image the day that changes."""
    third_party = imported_top_level(ROOT / "operator") - set(sys.stdlib_module_names) - {"proxmox_operator"}
    declared = {
        canonicalize_name(Requirement(r).name) for r in load(ROOT / "pyproject.toml")["project"]["dependencies"]
    }
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        name: providers.get(name)
        for name in third_party
        if not {canonicalize_name(d) for d in providers.get(name, [])} & declared
    }
    assert undeclared == {}, f"imported by operator/ but not in [project].dependencies: {undeclared}"


def test_operator_dependencies_do_not_pull_the_simulator() -> None:
    project = load(ROOT / "pyproject.toml")["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert {Requirement(r).name.lower() for r in requirements} & SIMULATOR_ONLY == set()
    assert "simulator" not in project.get("optional-dependencies", {})
    assert "pve-simulator" not in project.get("scripts", {})
    packages = load(ROOT / "pyproject.toml")["tool"]["setuptools"]["packages"]["find"]
    assert packages["include"] == ["proxmox_operator*"]
