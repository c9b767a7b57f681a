"""Status, conditions, Events and backoff computed by the reconciler (pure functions)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from proxmox_operator.api.v1alpha1 import (
    AuthStatus,
    ConditionStatus,
    NodesStatus,
    NodeStatus,
    ProxmoxClusterSpec,
    VersionInfo,
    conditions,
)
from proxmox_operator.controller.facts import facts_from
from proxmox_operator.controller.outcome import DUPLICATE, PAUSED, QUORATE, TLS_VERIFIED, Cond, Facts, Outcome
from proxmox_operator.controller.ports import Key
from proxmox_operator.controller.registry import Registry, SlowFacts
from proxmox_operator.controller.status import (
    delay_after,
    duplicate_condition,
    events_for,
    next_status,
    probe_interval,
    worth_writing,
)
from proxmox_operator.proxmox import ClusterStatusEntry, Node, Version
from proxmox_operator.settings import Tuning

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
INTERVAL = 60.0
NODES = NodesStatus(
    total=3,
    online=3,
    summary="3/3",
    items=[NodeStatus(name=f"pve{i}", online=True, ip=f"127.0.0.{i}") for i in (1, 2, 3)],
)
FACTS = Facts(version=VersionInfo(version="8.4.1", release="8.4"), nodes=NODES, cluster_name="lab", quorate=True)
TRUE = ConditionStatus.TRUE
FALSE = ConditionStatus.FALSE
OK = Outcome(
    ready=True,
    reason="Registered",
    message="ok",
    facts=FACTS,
    conditions={QUORATE: Cond(TRUE, "Quorate"), TLS_VERIFIED: Cond(TRUE, "Verified")},
    endpoints=["https://127.0.0.2:8006"],
    active_endpoint="https://127.0.0.1:8006",
    auth=AuthStatus(method="token", id="root@pam!ci"),
)
DOWN = Outcome(ready=False, reason="Unreachable", message="cannot reach")
BAD_AUTH = Outcome(ready=False, reason="AuthenticationFailed", message="rejected", transient=False)
NO_QUORUM = Outcome(
    ready=False,
    reason="QuorumLost",
    message="no quorum",
    facts=Facts(version=FACTS.version, nodes=NODES, cluster_name="lab", quorate=False),
    conditions={QUORATE: Cond(FALSE, "QuorumLost", "no quorum")},
)


def dump(
    outcome: Outcome, previous: dict[str, Any] | None, at: datetime, generation: int = 1, **kw: Any
) -> dict[str, Any]:
    status = next_status(previous, outcome, generation=generation, at=at, interval=INTERVAL, **kw)
    return status.model_dump(by_alias=True, mode="json")


def cond(status: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_success_fills_every_status_field() -> None:
    status = dump(OK, None, T0, generation=4)
    assert status["version"] == {"version": "8.4.1", "release": "8.4", "repoid": None}
    assert status["nodeCount"] == 3
    assert status["nodes"]["summary"] == "3/3" and status["nodes"]["items"][1]["ip"] == "127.0.0.2"
    assert status["clusterName"] == "lab" and status["quorate"] is True
    assert status["endpoints"] == ["https://127.0.0.2:8006"]
    assert status["activeEndpoint"] == "https://127.0.0.1:8006"
    assert status["auth"] == {"method": "token", "id": "root@pam!ci"}
    assert status["observedGeneration"] == 4
    assert status["lastProbeTime"] == "2026-11-29T12:00:00Z"
    assert cond(status) == {
        "type": "Ready",
        "status": "True",
        "reason": "Registered",
        "message": "ok",
        "lastTransitionTime": "2026-11-29T12:00:00Z",
        "observedGeneration": 4,
    }
    assert cond(status, QUORATE)["status"] == "True"


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = dump(OK, None, T0)
    again = dump(OK, first, T0 + timedelta(minutes=1))
    assert cond(again)["lastTransitionTime"] == cond(first)["lastTransitionTime"]
    assert again["lastProbeTime"] != first["lastProbeTime"]
    down = dump(DOWN, again, T0 + timedelta(minutes=2))
    assert cond(down)["lastTransitionTime"] == "2026-11-29T12:02:00Z"
    auth = dump(BAD_AUTH, down, T0 + timedelta(minutes=3))  # another failure reason is not a flip
    assert cond(auth)["lastTransitionTime"] == "2026-11-29T12:02:00Z"
    assert cond(auth)["reason"] == "AuthenticationFailed"


def test_failure_keeps_the_last_knownfacts_from() -> None:
    down = dump(DOWN, dump(OK, None, T0), T0 + timedelta(minutes=1))
    assert down["version"]["version"] == "8.4.1"
    assert down["nodes"]["summary"] == "3/3" and down["endpoints"] == ["https://127.0.0.2:8006"]
    assert cond(down)["status"] == "False"


def test_failure_before_any_success_has_nofacts_from() -> None:
    status = dump(DOWN, None, T0)
    assert status["version"] is None and status["nodeCount"] is None and status["nodes"] is None


def test_extra_conditions_are_set_and_removed() -> None:
    dup = dump(OK, None, T0, extra={DUPLICATE: Cond(TRUE, "Duplicate", "also ns/a")})
    assert cond(dup, DUPLICATE)["message"] == "also ns/a"
    cleared = dump(OK, dup, T0, extra={DUPLICATE: None})
    assert DUPLICATE not in [c["type"] for c in cleared["conditions"]]
    kept = dump(OK, dup, T0)  # not mentioned: kept
    assert DUPLICATE in [c["type"] for c in kept["conditions"]]


def test_paused_keeps_last_probe_time() -> None:
    first = dump(OK, None, T0)
    paused = dump(OK, first, T0 + timedelta(minutes=5), probed=False, extra={PAUSED: Cond(TRUE, "Paused")})
    assert paused["lastProbeTime"] == first["lastProbeTime"]


def test_garbage_in_previous_status_is_ignored() -> None:
    previous = {"conditions": [{"type": "Ready", "status": "Maybe"}, "nonsense"], "nodeCount": "many"}
    status = dump(OK, previous, T0)
    assert cond(status)["status"] == "True"


def events(outcome: Outcome, previous: dict[str, Any] | None, **kw: Any) -> list[tuple[str, str]]:
    status = next_status(previous, outcome, generation=1, at=T0, interval=INTERVAL, **kw)
    return [(t, r) for t, r, _ in events_for(previous, status)]


def test_events_only_on_transitions() -> None:
    assert events(OK, None) == [("Normal", "Registered")]
    registered = dump(OK, None, T0)
    assert events(OK, registered) == []
    assert events(DOWN, registered) == [("Warning", "Unreachable")]
    down = dump(DOWN, registered, T0)
    assert events(DOWN, down) == []
    assert events(BAD_AUTH, down) == [("Warning", "AuthenticationFailed")]
    assert events(OK, down) == [("Normal", "Recovered")]
    assert events(DOWN, None) == [("Warning", "Unreachable")]


def test_quorum_loss_and_return_are_events() -> None:
    registered = dump(OK, None, T0)
    assert events(NO_QUORUM, registered) == [("Warning", "QuorumLost")]
    lost = dump(NO_QUORUM, registered, T0)
    assert events(NO_QUORUM, lost) == []
    assert events(OK, lost) == [("Normal", "Recovered"), ("Normal", "QuorumRestored")]


def test_insecure_mode_is_a_warning_once() -> None:
    insecure = Outcome(**{**OK.__dict__, "conditions": {TLS_VERIFIED: Cond(FALSE, "InsecureSkipVerify")}})
    assert events(insecure, None) == [("Normal", "Registered"), ("Warning", "InsecureSkipVerify")]
    assert events(insecure, dump(insecure, None, T0)) == []


def test_pause_and_resume_events() -> None:
    registered = dump(OK, None, T0)
    paused_outcome = Outcome(ready=False, reason="Paused", message="paused")
    assert events(paused_outcome, registered, extra={PAUSED: Cond(TRUE, "Paused", "paused")}) == [("Normal", "Paused")]
    paused = dump(paused_outcome, registered, T0, extra={PAUSED: Cond(TRUE, "Paused", "paused")})
    assert events(paused_outcome, paused, extra={PAUSED: Cond(TRUE, "Paused", "paused")}) == []
    assert events(OK, paused, extra={PAUSED: None}) == [("Normal", "Resumed")]
    assert events(DOWN, paused, extra={PAUSED: None}) == [("Normal", "Resumed"), ("Warning", "Unreachable")]


def test_duplicate_is_a_warning_once() -> None:
    extra = {DUPLICATE: Cond(TRUE, "Duplicate", "also a/b")}
    assert ("Warning", "Duplicate") in events(OK, dump(OK, None, T0), extra=extra)
    assert events(OK, dump(OK, None, T0, extra=extra), extra=extra) == []


def test_backoff_grows_is_capped_by_the_interval_and_honours_retry_after() -> None:
    tuning = Tuning(backoff_base=2, backoff_max=120, slow_backoff_min=10)
    mid = lambda: 0.5  # noqa: E731 - no jitter
    assert delay_after(OK, 0, tuning, 60, mid) == 60
    assert [delay_after(DOWN, n, tuning, 60, mid) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert delay_after(DOWN, 30, tuning, 60, mid) == 60, "a recovery is seen within one interval"
    assert delay_after(DOWN, 30, tuning, 600, mid) == 120
    assert delay_after(BAD_AUTH, 1, tuning, 60, mid) == 10
    throttled = Outcome(ready=False, reason="ServerError", message="", retry_after=45)
    assert delay_after(throttled, 1, tuning, 60, mid) == 45
    assert 0.9 * 60 <= delay_after(OK, 0, tuning, 60, lambda: 0.0) < delay_after(OK, 0, tuning, 60, lambda: 0.99) <= 66


def test_registry_names_the_first_registrant_as_the_original() -> None:
    registry = Registry()
    a, b = Key("ns", "a"), Key("ns", "b")
    assert registry.identities.claim("cluster:lab|x", a, "2026-01-01T00:00:00Z") is None
    assert registry.identities.claim("cluster:lab|x", b, "2026-01-02T00:00:00Z") == a
    assert registry.identities.claim("cluster:lab|x", a, "2026-01-01T00:00:00Z") is None
    assert registry.identities.claim("cluster:other|x", b, "2026-01-02T00:00:00Z") is None  # b moved to another cluster


def test_duplicate_names_only_a_registrant_of_the_same_namespace() -> None:
    assert "team-a/first" in duplicate_condition(Key("team-a", "second"), Key("team-a", "first")).message
    other = duplicate_condition(Key("team-b", "mine"), Key("team-a", "first")).message
    assert "team-a" not in other
    assert "first" not in other
    assert "another namespace" in other


def test_condition_parse_drops_invalid_entries() -> None:
    parsed = conditions.parse(
        [
            {"type": "Ready"},
            {"type": "A", "status": "True", "reason": "R", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]
    )
    assert list(parsed) == ["A"]
    assert parsed["A"].status == ConditionStatus.TRUE


def test_facts_from_a_clustered_answer() -> None:
    nodes = [Node(node="pve2", status="online"), Node(node="pve1", status="online", level="c")]
    status = [
        ClusterStatusEntry(type="node", name="pve1", online=1, local=1, ip="127.0.0.1"),
        ClusterStatusEntry(type="cluster", name="lab", quorate=0, nodes=2),
        ClusterStatusEntry(type="node", name="pve2", online=0, local=0, ip="127.0.0.2"),
    ]
    facts = facts_from(Version(version="8.4.1"), nodes, status)
    assert (facts.cluster_name, facts.quorate) == ("lab", False)
    assert facts.identity is None, "without certificate fingerprints nothing identifies the cluster"
    # /cluster/status (corosync membership) decides online, and items are sorted by name.
    assert [(i.name, i.online, i.ip, i.level) for i in facts.nodes.items] == [
        ("pve1", True, "127.0.0.1", "c"),
        ("pve2", False, "127.0.0.2", None),
    ]
    assert facts.nodes.summary == "1/2"


def test_facts_from_a_standalone_node_and_without_privileges() -> None:
    nodes = [Node(node="pve", status="online")]
    standalone = [ClusterStatusEntry(type="node", name="pve", online=1, local=1, nodeid=0, ip="127.0.0.1")]
    facts = facts_from(Version(version="9.0.4"), nodes, standalone)
    assert (facts.cluster_name, facts.quorate) == (None, True)
    no_status = facts_from(Version(version="9.0.4"), nodes, None)  # 403 on /cluster/status
    assert (no_status.quorate, no_status.identity) == (None, None)
    assert no_status.nodes.summary == "1/1"


FP_A, FP_B = ":".join(["AA"] * 32), ":".join(["BB"] * 32)


def test_identity_tells_unrelated_standalone_hosts_with_one_name_apart() -> None:
    standalone = [ClusterStatusEntry(type="node", name="pve", online=1, local=1, ip="127.0.0.1")]

    def identity(*prints: str) -> str | None:
        nodes = [Node(node="pve", status="online", ssl_fingerprint=p) for p in prints]
        return facts_from(Version(version="8.4.1"), nodes[:1], standalone).identity

    assert identity(FP_A) is not None
    assert identity(FP_A) == identity(FP_A.lower()), "the same host, however its fingerprint is spelled"
    assert identity(FP_A) != identity(FP_B), "two hosts called pve are two clusters"


def test_identity_of_a_cluster_is_its_name_and_node_certificates() -> None:
    def identity(name: str, *prints: str) -> str | None:
        nodes = [Node(node=f"pve{i}", status="online", ssl_fingerprint=p) for i, p in enumerate(prints)]
        st = [ClusterStatusEntry(type="cluster", name=name, quorate=1, nodes=len(nodes))]
        return facts_from(Version(version="8.4.1"), nodes, st).identity

    assert identity("lab", FP_A, FP_B) == identity("lab", FP_B, FP_A)
    assert identity("lab", FP_A, FP_B) != identity("lab", FP_A)
    assert identity("lab", FP_A) != identity("prod", FP_A)


def test_a_node_listed_twice_appears_once() -> None:
    nodes = [Node(node="pve1", status="online"), Node(node="pve1", status="offline"), Node(node="pve2")]
    facts = facts_from(Version(version="8.4.1"), nodes, [ClusterStatusEntry(type="cluster", name="lab", quorate=1)])
    assert [i.name for i in facts.nodes.items] == ["pve1", "pve2"]
    assert facts.nodes.total == 2


def test_a_missing_quorate_field_is_unknown_not_lost() -> None:
    facts = facts_from(Version(version="8.4.1"), [Node(node="pve1")], [ClusterStatusEntry(type="cluster", name="lab")])
    assert facts.quorate is None


def test_backoff_survives_a_thousand_failures_and_caps_retry_after_at_the_interval() -> None:
    tuning = Tuning()
    assert delay_after(DOWN, 5000, tuning, 60, lambda: 0.5) == 60
    huge = Outcome(ready=False, reason="ServerError", message="", retry_after=float("inf"))
    assert delay_after(huge, 1, tuning, 60, lambda: 0.5) == 60


def test_status_is_written_only_when_something_visible_changed_or_the_heartbeat_is_old() -> None:
    written = dump(OK, None, T0)
    later = T0 + timedelta(seconds=61)
    same = next_status(written, OK, generation=1, at=later, interval=INTERVAL)
    assert not worth_writing(written, same, refresh=600), "only lastProbeTime moved"
    reordered = {**written, "conditions": list(reversed(written["conditions"]))}
    assert not worth_writing(reordered, same, refresh=600), "condition order carries no meaning"
    assert worth_writing(written, next_status(written, DOWN, generation=1, at=later, interval=INTERVAL), refresh=600)
    assert worth_writing(written, next_status(written, OK, generation=2, at=later, interval=INTERVAL), refresh=600), (
        "new generation"
    )
    stale = next_status(written, OK, generation=1, at=T0 + timedelta(seconds=600), interval=INTERVAL)
    assert worth_writing(written, stale, refresh=600), "the coarse heartbeat"
    assert worth_writing(None, same, refresh=600)
    assert worth_writing({"conditions": "garbage"}, same, refresh=600)


def test_slow_facts_are_due_when_new_and_after_the_refresh_interval() -> None:
    slow = SlowFacts()
    assert slow.due(1000.0, 600)
    slow.store(Version(version="8.4.1"), [Node(node="pve1")], Cond(TRUE, "Sufficient"), 1000.0)
    assert not slow.due(1599.0, 600)
    assert slow.due(1600.0, 600)


def test_the_probe_interval_is_the_specs_or_else_the_operators() -> None:
    """``healthCheck: {}`` (no interval) gets the operator's --probe-interval, as an absent healthCheck does."""
    tuning = Tuning(probe_interval=30)

    def spec(**extra: Any) -> ProxmoxClusterSpec:
        return ProxmoxClusterSpec.model_validate(
            {"endpoint": "https://pve:8006", "credentialsRef": {"name": "s"}, **extra}
        )

    assert probe_interval(spec(), tuning) == 30
    assert probe_interval(spec(healthCheck={}), tuning) == 30
    assert probe_interval(spec(healthCheck={"intervalSeconds": 120}), tuning) == 120
    assert probe_interval(None, tuning) == 30
