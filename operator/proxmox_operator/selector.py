"""Kubernetes label selectors (``--selector``), parsed so that a bad one is a usage error at start rather than a
watch the API server refuses over and over. The API server does the matching (see :mod:`proxmox_operator.handlers`).

Supported: ``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin (a,b)``,
joined by commas (all must hold). As in Kubernetes, ``!=`` and ``notin`` also match objects without the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(\s*({_VALUE}(?:\s*,\s*{_VALUE})*)\s*\)$")
_EQUALITY = re.compile(rf"^({_KEY})\s*(!=|==|=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()


def parse(text: str) -> tuple[Requirement, ...]:
    """The requirements of ``text``; ValueError names the first one that is not a label selector."""
    reqs: list[Requirement] = []
    for term in _terms(text):
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(","))
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQUALITY.match(term):
            reqs.append(Requirement(m.group(1), "notin" if m.group(2) == "!=" else "in", frozenset({m.group(3)})))
        elif m := _EXISTS.match(term):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise ValueError(f"not a label selector requirement: {term!r}")
    if not reqs:
        raise ValueError("an empty label selector")
    return tuple(reqs)


def _terms(text: str) -> list[str]:
    """Split at the commas outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i].strip())
            start = i + 1
    terms.append(text[start:].strip())
    return [t for t in terms if t] if text.strip() else []
