"""Status, conditions, Events and backoff computed by the reconciler (pure functions)."""

from datetime import UTC, datetime, timedelta

from proxmox_operator import conditions
from proxmox_operator.models import ConditionStatus, VersionInfo
from proxmox_operator.reconcile import Outcome, Tuning, delay_after, event_for, next_status

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
OK = Outcome(ready=True, reason="Registered", message="ok", version=VersionInfo(version="8.4.1"), node_count=3)
DOWN = Outcome(ready=False, reason="Unreachable", message="cannot reach")
BAD_AUTH = Outcome(ready=False, reason="AuthenticationFailed", message="rejected", transient=False)


def dump(outcome: Outcome, previous: dict | None, at: datetime, generation: int = 1) -> dict:
    return next_status(previous, outcome, generation=generation, at=at).model_dump(by_alias=True, mode="json")


def ready(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_success_fills_version_nodes_generation_and_ready() -> None:
    status = dump(OK, None, T0, generation=4)
    assert status["version"]["version"] == "8.4.1"
    assert status["nodeCount"] == 3
    assert status["observedGeneration"] == 4
    assert status["lastProbeTime"] == "2026-11-29T12:00:00Z"
    assert ready(status) == {
        "type": "Ready",
        "status": "True",
        "reason": "Registered",
        "message": "ok",
        "lastTransitionTime": "2026-11-29T12:00:00Z",
        "observedGeneration": 4,
    }


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = dump(OK, None, T0)
    again = dump(OK, first, T0 + timedelta(minutes=1))
    assert ready(again)["lastTransitionTime"] == ready(first)["lastTransitionTime"]
    assert again["lastProbeTime"] != first["lastProbeTime"]
    down = dump(DOWN, again, T0 + timedelta(minutes=2))
    assert ready(down)["lastTransitionTime"] == "2026-11-29T12:02:00Z"
    # A different failure reason is not a flip.
    auth = dump(BAD_AUTH, down, T0 + timedelta(minutes=3))
    assert ready(auth)["lastTransitionTime"] == "2026-11-29T12:02:00Z"
    assert ready(auth)["reason"] == "AuthenticationFailed"


def test_failure_keeps_last_known_version_and_node_count() -> None:
    down = dump(DOWN, dump(OK, None, T0), T0 + timedelta(minutes=1))
    assert down["version"]["version"] == "8.4.1"
    assert down["nodeCount"] == 3
    assert ready(down)["status"] == "False"


def test_failure_before_any_success_has_no_version() -> None:
    status = dump(DOWN, None, T0)
    assert status["version"] is None
    assert status["nodeCount"] is None


def test_other_conditions_are_preserved() -> None:
    previous = dump(OK, None, T0)
    previous["conditions"].append(
        {"type": "Custom", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    )
    types = [c["type"] for c in dump(OK, previous, T0)["conditions"]]
    assert types == ["Ready", "Custom"]


def test_garbage_in_previous_status_is_ignored() -> None:
    previous = {"conditions": [{"type": "Ready", "status": "Maybe"}, "nonsense"], "nodeCount": "many"}
    status = dump(OK, previous, T0)  # type: ignore[arg-type]
    assert ready(status)["status"] == "True"


def test_events_only_on_transitions() -> None:
    assert event_for(None, OK) == ("Normal", "Registered")
    registered = dump(OK, None, T0)
    assert event_for(registered, OK) is None
    assert event_for(registered, DOWN) == ("Warning", "Unreachable")
    down = dump(DOWN, registered, T0)
    assert event_for(down, DOWN) is None
    assert event_for(down, BAD_AUTH) == ("Warning", "AuthenticationFailed")
    assert event_for(down, OK) == ("Normal", "Recovered")
    assert event_for(None, DOWN) == ("Warning", "Unreachable")


def test_backoff_grows_caps_and_is_slower_for_credentials() -> None:
    tuning = Tuning(probe_interval=60, backoff_base=2, backoff_max=120, slow_backoff_min=10)
    mid = lambda: 0.5  # noqa: E731 - no jitter
    assert delay_after(OK, 0, tuning, mid) == 60
    assert [delay_after(DOWN, n, tuning, mid) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert delay_after(DOWN, 30, tuning, mid) == 120
    assert delay_after(BAD_AUTH, 1, tuning, mid) == 10
    # Jitter stays within +-10 %.
    assert 0.9 * 60 <= delay_after(OK, 0, tuning, lambda: 0.0) < delay_after(OK, 0, tuning, lambda: 0.99) <= 66


def test_condition_parse_drops_invalid_entries() -> None:
    parsed = conditions.parse(
        [
            {"type": "Ready"},
            {"type": "A", "status": "True", "reason": "R", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]
    )
    assert list(parsed) == ["A"]
    assert parsed["A"].status == ConditionStatus.TRUE
