"""The interleaved comparison's own logic (bench/interleave.py): order, per-build summary, table."""

from __future__ import annotations

from typing import Any

import pytest
from bench import interleave


def _run(build: str, cpu_ms: float, steady_pct: float) -> dict[str, Any]:
    base = dict.fromkeys(interleave.METRICS, 1.0)
    return {"build": build, "measures": {**base, "cpu_ms": cpu_ms, "steady_pct": steady_pct}}


def test_two_builds_alternate_so_that_each_is_first_and_last_in_turn() -> None:
    assert interleave.default_order(["old", "new"]) == ["old", "new", "new", "old", "old", "new"]


def test_each_build_gets_its_median_and_range_in_order_of_first_appearance() -> None:
    runs = [_run("old", 10.8, 5.1), _run("new", 10.3, 6.1), _run("new", 8.6, 5.9), _run("old", 15.6, 8.0)]
    runs.append(_run("old", 15.3, 6.2))
    summed = interleave.summary(runs)
    assert list(summed) == ["old", "new"]
    assert summed["old"]["cpu_ms"] == (15.3, 10.8, 15.6)
    assert summed["new"]["steady_pct"] == pytest.approx((6.0, 5.9, 6.1))
    text = interleave.table(summed)
    assert "CPU per registration, ms" in text
    assert "15.3 (10.8-15.6)" in text


def test_measures_come_from_a_compare_run_result() -> None:
    result = {
        "ready_seconds": 16.0,
        "registration": {"cpu_seconds": 7.64, "api_requests_per_object": 3.0},
        "rss_peak_kib": 143 * 1024,
        "delete_seconds": 14.6,
        "steady": {"cpu_share": 0.0646},
    }
    got = interleave.measures(result, 1000)
    assert got == pytest.approx(
        {"ready_s": 16.0, "cpu_ms": 7.64, "requests": 3.0, "rss_mib": 143, "delete_s": 14.6, "steady_pct": 6.46}
    )


def test_unknown_builds_in_the_order_are_refused(tmp_path: Any) -> None:
    exe = tmp_path / "proxmox-operator"
    exe.write_text("")
    with pytest.raises(SystemExit):
        interleave.main(["--build", f"a={exe}", "--order", "a,b"])
    with pytest.raises(SystemExit):
        interleave.main(["--build", "a=/no/such/file"])
