"""The benchmark harness runs end to end and prints its ratio table (no timing is asserted)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_a_ratio_per_benchmark() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--clusters", "5", "--requests", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [line for line in out.splitlines() if re.search(r"\s\d+\.\d\d$", line)]
    assert len(rows) == 2, out
    assert rows[0].startswith("memory per registered cluster") and "KiB" in rows[0]
    assert "sequential GETs" in rows[1]
