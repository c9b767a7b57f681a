"""Conditions as the Kubernetes API conventions define them.

A condition's ``lastTransitionTime`` moves only when its ``status`` flips; reason, message and
observedGeneration follow every evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from proxmox_operator.models import Condition, ConditionStatus


def now() -> datetime:
    """Kubernetes timestamps (metav1.Time) have second precision."""
    return datetime.now(UTC).replace(microsecond=0)


def parse(raw: Iterable[Mapping[str, Any]] | None) -> dict[str, Condition]:
    """Conditions from a stored status, by type. Entries that do not parse are dropped, never fatal."""
    found: dict[str, Condition] = {}
    for item in raw or ():
        try:
            cond = Condition.model_validate(item)
        except ValueError:
            continue
        found[cond.type] = cond
    return found


def transition(
    previous: Condition | None,
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    at: datetime,
) -> Condition:
    """The new value of condition ``type_``; keeps ``lastTransitionTime`` when the status did not flip."""
    since = at if previous is None or previous.status != status else previous.last_transition_time
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
