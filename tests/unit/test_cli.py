"""The operator's command line: numbers that would make the worker loop spin are refused with a usage error; the
process's garbage collector is set up for a long-running operator."""

import gc

import pytest

from proxmox_operator import cli, settings
from proxmox_operator.cli import parse_args


def test_defaults_parse() -> None:
    args = parse_args([])
    assert (args.probe_interval, args.backoff_base, args.backoff_max) == (60.0, 2.0, 120.0)


def test_valid_values_parse() -> None:
    args = parse_args(["--probe-interval", "1", "--backoff-base", "0.5", "--backoff-max", "0.5e1"])
    assert (args.probe_interval, args.backoff_base, args.backoff_max) == (1.0, 0.5, 5.0)


def test_backoff_max_may_equal_backoff_base() -> None:
    args = parse_args(["--backoff-base", "30", "--backoff-max", "30"])
    assert args.backoff_base == args.backoff_max == 30.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--probe-interval", "0"], "--probe-interval: must be at least 1 (seconds)"),
        (["--probe-interval", "-5"], "--probe-interval: must be at least 1 (seconds)"),
        (["--probe-interval", "0.5"], "--probe-interval: must be at least 1 (seconds)"),
        (["--probe-interval", "nan"], "--probe-interval: must be a finite number"),
        (["--probe-interval", "inf"], "--probe-interval: must be a finite number"),
        (["--probe-interval", "1e400"], "--probe-interval: must be a finite number"),
        (["--probe-interval", "soon"], "--probe-interval: not a number of seconds: 'soon'"),
        (["--backoff-base", "0"], "--backoff-base: must be at least 0.1 (seconds)"),
        (["--backoff-base", "-2"], "--backoff-base: must be at least 0.1 (seconds)"),
        (["--backoff-base", "NaN"], "--backoff-base: must be a finite number"),
        # argparse takes a bare "-inf" for an option; the = form hands it to the type check.
        (["--backoff-base=-inf"], "--backoff-base: must be a finite number"),
        (["--backoff-max", "0"], "--backoff-max: must be at least 1 (seconds)"),
        (["--backoff-max", "-1"], "--backoff-max: must be at least 1 (seconds)"),
        (["--backoff-max", "infinity"], "--backoff-max: must be a finite number"),
        (["--backoff-max", "nan"], "--backoff-max: must be a finite number"),
        (
            ["--backoff-base", "10", "--backoff-max", "5"],
            "--backoff-max (5) must not be smaller than --backoff-base (10)",
        ),
        # The default --backoff-max (120) is below this base.
        (["--backoff-base", "300"], "--backoff-max (120) must not be smaller than --backoff-base (300)"),
    ],
)
def test_bad_numbers_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse_args(argv)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: proxmox-operator")
    assert message in err


def test_tune_gc_freezes_what_is_loaded_and_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        cli.tune_gc()
        assert gc.get_threshold() == settings.GC_THRESHOLDS
        assert gc.get_freeze_count() > 10_000, "kopf, aiohttp and pydantic are loaded: frozen"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
