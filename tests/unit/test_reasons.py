"""Condition types and reasons live in api/v1alpha1/conditions.py, are all documented, and the README shows them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from proxmox_operator import docgen
from proxmox_operator.api.v1alpha1.conditions import REASONS, TYPES, ConditionType, Reason
from proxmox_operator.proxmox import errors

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator" / "proxmox_operator"


def test_every_reason_and_condition_type_is_documented() -> None:
    assert set(REASONS) == set(Reason)
    assert set(TYPES) == set(ConditionType)


def test_every_typed_proxmox_error_carries_a_documented_reason() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ProxmoxError)]
    assert len(classes) >= 8
    for cls in classes:
        reason = Reason(cls.reason)  # raises for a reason that is not a member
        assert ConditionType.READY in REASONS[reason].on, f"{cls.__name__}: {reason} is not documented for Ready"


def test_controller_code_writes_no_reason_as_a_string_literal() -> None:
    """Reasons are compared and written as Reason members; a CamelCase literal equal to a reason's value
    outside the enum module would be a second, unchecked place for it."""
    values = {r.value for r in Reason} - {t.value for t in ConditionType}
    found = []
    for path in [*SOURCE.glob("controller/*.py"), SOURCE / "handlers.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in values:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, "use the Reason members instead of:\n" + "\n".join(found)


def test_readme_tables_are_rendered_from_the_enums() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == docgen.render(readme), "the README's condition tables drifted: run `make crds` and commit"


def test_readme_lists_every_ready_failure_reason() -> None:
    table = docgen.reasons_table()
    for reason in REASONS:
        if ConditionType.READY in REASONS[reason].on:
            assert f"| `{reason}` |" in table
