"""--selector: Kubernetes label-selector syntax, checked at start and matched like the API server matches it."""

import pytest

from proxmox_operator.cli import parse_args
from proxmox_operator.selector import matches, parse


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("shard=a", {"shard": "a"}, True),
        ("shard=a", {"shard": "b"}, False),
        ("shard=a", {}, False),
        ("shard==a", {"shard": "a"}, True),
        ("shard!=a", {"shard": "b"}, True),
        ("shard!=a", {}, True),  # as in Kubernetes: a missing key is not equal
        ("!shard", {}, True),
        ("!shard", {"shard": "a"}, False),
        ("shard", {"shard": ""}, True),
        ("shard in (a, b)", {"shard": "b"}, True),
        ("shard in (a,b)", {"shard": "c"}, False),
        ("shard notin (a,b)", {"shard": "c"}, True),
        ("shard notin (a,b)", {}, True),
        ("shard=a,env=prod", {"shard": "a", "env": "prod"}, True),
        ("shard=a,env=prod", {"shard": "a"}, False),
        ("example.com/shard in (a,b),!legacy", {"example.com/shard": "a"}, True),
    ],
)
def test_selectors_match_as_kubernetes_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert matches(parse(text), labels) is expected


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
