"""Reconciling and Stalled, kstatus' abnormal-true conditions (what Flux and kpt judge health with), as the pure
status functions write them. tests/integration/test_kstatus.py asks the kstatus library itself what it makes of
them."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxmox_operator import docgen
from proxmox_operator.api.v1alpha1 import REASONS, ConditionType, Reason
from proxmox_operator.api.v1alpha1.conditions import ready_false_reasons, stalled_reasons
from proxmox_operator.controller.outcome import Outcome
from proxmox_operator.controller.status import events_for, next_status, probing_status, worth_writing
from tests.unit.test_status import OK

T0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
INTERVAL = 60.0
R = Reason

#: The issue's list: failures only a user can fix (credentials, TLS, a Secret, permissions, the spec) and the
#: pause annotation. Written out here so that moving a reason in or out is a deliberate, reviewed change.
STALLED = {
    R.AUTHENTICATION_FAILED,
    R.TFA_REQUIRED,
    R.SECRET_NOT_FOUND,
    R.SECRET_NOT_LABELED,
    R.SECRET_INVALID,
    R.SECRET_FORBIDDEN,
    R.SECRET_NAMESPACE_FORBIDDEN,
    R.HOST_NOT_ALLOWED,
    R.ALLOWED_HOSTS_INVALID,
    R.CA_BUNDLE_NOT_FOUND,
    R.CA_BUNDLE_FORBIDDEN,
    R.TLS_CONFIG_INVALID,
    R.TLS_ERROR,
    R.PERMISSION_DENIED,
    R.INVALID_SPEC,
    R.PAUSED,
}
RETRIED = {
    R.UNREACHABLE,
    R.TIMEOUT,
    R.SERVER_ERROR,
    R.QUORUM_LOST,
    R.INVALID_RESPONSE,
    R.PROXMOX_ERROR,
    R.INTERNAL_ERROR,
}


def failed(reason: Reason, message: str = "what went wrong") -> Outcome:
    return Outcome(ready=False, reason=reason, message=message)


def dump(outcome: Outcome, previous: dict[str, Any] | None, at: datetime = T0, **kw: Any) -> dict[str, Any]:
    status = next_status(previous, outcome, generation=1, at=at, interval=INTERVAL, **kw)
    return status.model_dump(by_alias=True, mode="json")


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_the_stalled_reasons_are_exactly_those_only_a_user_can_fix() -> None:
    assert set(stalled_reasons()) == STALLED
    assert set(ready_false_reasons()) - STALLED == RETRIED


def test_ready_true_has_neither_reconciling_nor_stalled() -> None:
    found = conds(dump(OK, None))
    assert ConditionType.RECONCILING not in found and ConditionType.STALLED not in found


@pytest.mark.parametrize("reason", sorted(STALLED))
def test_a_failure_only_a_user_can_fix_stalls_with_readys_reason_and_message(reason: Reason) -> None:
    found = conds(dump(failed(reason), None))
    assert found["Stalled"]["status"] == "True"
    assert (found["Stalled"]["reason"], found["Stalled"]["message"]) == (reason, "what went wrong")
    assert found["Stalled"]["observedGeneration"] == 1
    assert ConditionType.RECONCILING not in found


@pytest.mark.parametrize("reason", sorted(RETRIED))
def test_a_failure_that_can_pass_reconciles_and_says_when_it_retries(reason: Reason) -> None:
    found = conds(dump(failed(reason), None))
    assert found["Reconciling"]["status"] == "True"
    assert found["Reconciling"]["reason"] == reason
    assert found["Reconciling"]["message"] == "what went wrong; retrying with backoff, within about 60 s"
    assert ConditionType.STALLED not in found


def test_the_conditions_follow_ready_and_leave_when_they_no_longer_apply() -> None:
    down = dump(failed(R.UNREACHABLE), dump(OK, None))
    assert set(conds(down)) >= {"Reconciling"} and "Stalled" not in conds(down)
    bad = dump(failed(R.AUTHENTICATION_FAILED), down)
    assert "Stalled" in conds(bad) and "Reconciling" not in conds(bad)
    fixed = dump(OK, bad)
    assert "Stalled" not in conds(fixed) and "Reconciling" not in conds(fixed)


@pytest.mark.parametrize("reason", [R.UNREACHABLE, R.AUTHENTICATION_FAILED, R.QUORUM_LOST])
def test_identical_probes_write_nothing_and_post_no_event(reason: Reason) -> None:
    first = dump(failed(reason), dump(OK, None))
    again = next_status(first, failed(reason), generation=1, at=T0 + timedelta(seconds=61), interval=INTERVAL)
    assert not worth_writing(first, again, refresh=600)
    assert events_for(first, again) == []


def test_reconciling_and_stalled_bring_no_events_of_their_own() -> None:
    registered = dump(OK, None)
    for reason in (R.UNREACHABLE, R.AUTHENTICATION_FAILED):
        status = next_status(registered, failed(reason), generation=1, at=T0, interval=INTERVAL)
        assert [(t, r) for t, r, _ in events_for(registered, status)] == [("Warning", reason)]


def test_probing_is_ready_unknown_and_reconciling_for_the_current_generation() -> None:
    before = dump(failed(R.AUTHENTICATION_FAILED), dump(OK, None))
    probing = probing_status(before, generation=2, at=T0 + timedelta(minutes=1)).model_dump(by_alias=True, mode="json")
    found = conds(probing)
    assert probing["observedGeneration"] == 2
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("Unknown", R.PROBING)
    assert (found["Reconciling"]["status"], found["Reconciling"]["reason"]) == ("True", R.PROBING)
    assert found["Ready"]["observedGeneration"] == found["Reconciling"]["observedGeneration"] == 2
    assert "Stalled" not in found, "the previous spec's verdict is not this one's"
    # Nothing has answered yet: the facts and the heartbeat stay as they were.
    assert probing["version"] == before["version"] and probing["lastProbeTime"] == before["lastProbeTime"]


def test_probing_before_any_status_has_no_facts() -> None:
    probing = probing_status(None, generation=1, at=T0).model_dump(by_alias=True, mode="json")
    assert probing["lastProbeTime"] is None and probing["version"] is None
    assert {c["type"] for c in probing["conditions"]} == {"Ready", "Reconciling"}


def test_the_readme_reason_table_says_what_kstatus_makes_of_each_reason() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in docgen.reasons_table().splitlines()[2:]}
    for reason in STALLED:
        assert "**Failed** (`Stalled`)" in rows[reason], reason
    for reason in RETRIED | {R.PROBING}:
        assert "InProgress (`Reconciling`)" in rows[reason], reason
    assert "| Current |" in rows[R.REGISTERED]
    assert REASONS[R.PROBING].status == "Unknown"
