"""--selector: Kubernetes label-selector syntax, checked at start and matched like the API server matches it."""

import pytest

from proxmox_operator.cli import parse_args
from proxmox_operator.selector import Requirement, parse


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("shard=a", [("shard", "in", {"a"})]),
        ("shard==a", [("shard", "in", {"a"})]),
        ("shard!=a", [("shard", "notin", {"a"})]),
        ("!shard", [("shard", "!exists", set())]),
        ("shard", [("shard", "exists", set())]),
        ("shard in (a, b)", [("shard", "in", {"a", "b"})]),
        ("shard notin (a,b)", [("shard", "notin", {"a", "b"})]),
        ("shard=a,env=prod", [("shard", "in", {"a"}), ("env", "in", {"prod"})]),
        ("example.com/shard in (a,b),!legacy", [("example.com/shard", "in", {"a", "b"}), ("legacy", "!exists", set())]),
    ],
)
def test_every_kind_of_requirement_parses(text: str, parsed: list[tuple[str, str, set[str]]]) -> None:
    assert parse(text) == tuple(Requirement(key, op, frozenset(values)) for key, op, values in parsed)


@pytest.mark.parametrize("text", ["shard=a b", "shard in a,b", "=a", "shard>1", "Shard/x=a", "shard=(a)"])
def test_a_bad_selector_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--selector", text])
    assert "--selector" in capsys.readouterr().err


def test_no_selector_serves_every_object() -> None:
    assert parse_args([]).selector == ""
    assert parse_args(["--selector", "shard in (a, b)"]).selector == "shard in (a, b)"


def test_leader_election_needs_a_namespace_outside_a_pod(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(SystemExit):
        parse_args(["--leader-elect"])
    assert "--leader-election-namespace" in capsys.readouterr().err
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    args = parse_args(["--leader-elect"])
    assert (args.leader_election_namespace, args.leader_election_id) == ("ops", "proxmox-operator")
