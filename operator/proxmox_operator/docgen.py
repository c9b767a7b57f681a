"""Render the README's condition and reason tables from :mod:`proxmox_operator.api.v1alpha1.conditions`.

``python -m proxmox_operator.docgen README.md`` (part of ``make crds``) rewrites what stands between the
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers; a unit test fails when the README differs
from what this renders, so the documented reasons are exactly the ones the operator writes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from proxmox_operator.api.v1alpha1.conditions import (
    REASONS,
    TYPES,
    ConditionType,
    Reason,
    event_reasons,
    false_reasons,
    ready_reasons,
)
from proxmox_operator.api.v1alpha1.types import ConditionStatus


def _code(reason: Reason, type_: ConditionType) -> str:
    note = REASONS[reason].note
    return f"`{reason}`" + (f" ({note[1]})" if note and note[0] is type_ else "")


def conditions_table() -> str:
    rows = ["| type | True when | False reasons |", "| --- | --- | --- |"]
    for type_, (true_when, more) in TYPES.items():
        reasons = false_reasons(type_)
        listed = ", ".join(_code(r, type_) for r in reasons) if type_ is not ConditionType.READY else ""
        rest = "; ".join(part for part in (listed, more) if part)
        rows.append(f"| `{type_}` | {true_when} | {rest} |")
    return "\n".join(rows)


def kstatus_verdict(reason: Reason) -> str:
    """What kstatus (Flux, kpt) says of a current object whose Ready carries ``reason``."""
    doc = REASONS[reason]
    if doc.status is ConditionStatus.TRUE:
        return "Current"
    if doc.stalled:
        return "**Failed** (`Stalled`)"
    return "InProgress (`Reconciling`)"


def reasons_table() -> str:
    rows = ["| reason | status | kstatus (Flux) | what to do |", "| --- | --- | --- | --- |"]
    rows.extend(f"| `{r}` | {REASONS[r].status} | {kstatus_verdict(r)} | {REASONS[r].todo} |" for r in ready_reasons())
    return "\n".join(rows)


def events_line() -> str:
    return ", ".join(f"`{r}`" for r in event_reasons())


SECTIONS = {"conditions": conditions_table, "reasons": reasons_table, "events": events_line}


def render(text: str) -> str:
    """``text`` with every generated section replaced by its current rendering."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(\n<!-- /generated:{name} -->)", re.S)
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"the README has no <!-- generated:{name} --> section")
        text = text[: found.end(1)] + make() + text[found.start(2) :]
    return text


def main(args: list[str]) -> int:
    path = Path(args[0]) if args else Path("README.md")
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"rendered the condition and reason tables into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
