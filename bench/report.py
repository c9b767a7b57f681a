"""The comparison's table (bare kopf / proxmox-operator / ratio / goal), its JSON and its PNG chart."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    metric: str
    bare: float | None
    ours: float | None
    #: ``"ratio"``: ours/bare must be at most ``goal``; ``"value"``: ours must be; ``None``: no goal.
    kind: str | None = None
    goal: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.bare is None or self.ours is None or self.bare == 0:
            return None
        return self.ours / self.bare

    @property
    def attained(self) -> float | None:
        """The measured value as a fraction of its goal (at most 1 meets it)."""
        value = self.ratio if self.kind == "ratio" else self.ours
        if self.goal is None or value is None:
            return None
        return value / self.goal

    @property
    def met(self) -> bool | None:
        return None if self.attained is None else self.attained <= 1.0

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        text = f"<= {self.goal:g}x" if self.kind == "ratio" else f"<= {self.goal:g}"
        return f"{text} {self.note}".rstrip()


def rows(results: dict[str, Any]) -> list[Row]:
    n: int = results["n"]
    window: float = results["window_seconds"]
    b, f, o = results["bare_kopf"], results["bare_kopf_finalizer"], results["proxmox_operator"]
    at_1000 = "" if n >= 1000 else "(at 1,000)"

    def reg(r: dict[str, Any], key: str) -> float:
        value: float = r["registration"][key]
        return value

    def rss_per_object(r: dict[str, Any]) -> float:
        return float(r["rss_ready_kib"] - r["rss_idle_kib"]) / n

    def others(r: dict[str, Any], name: str) -> float | None:
        value = r["registration"].get("others_cpu_seconds", {}).get(name)
        return None if value is None else float(value) * 1000 / n

    pve = o["steady"].get("pve", {})
    return [
        Row(f"all {n} Ready, s from the first create", b["ready_seconds"], o["ready_seconds"], "ratio", 1.5),
        Row("CPU per registration, ms", reg(b, "cpu_seconds") * 1000 / n, reg(o, "cpu_seconds") * 1000 / n, "ratio", 2),
        Row("  kube-apiserver CPU per registration, ms", others(b, "kube-apiserver"), others(o, "kube-apiserver")),
        Row("  etcd CPU per registration, ms", others(b, "etcd"), others(o, "etcd")),
        Row("  PVE simulator CPU per registration, ms", None, others(o, "pve-simulator")),
        Row("peak RSS, MiB", b["rss_peak_kib"] / 1024, o["rss_peak_kib"] / 1024, "ratio", 1.5),
        Row("RSS growth per object, KiB", rss_per_object(b), rss_per_object(o)),
        Row(
            "API requests per registration besides the create",
            reg(b, "api_requests_per_object"),
            reg(o, "api_requests_per_object"),
            "value",
            3,
        ),
        Row("delete all, s (kopf with a finalizer)", f["delete_seconds"], o["delete_seconds"], "ratio", 3),
        Row("  delete all, s (bare kopf, no finalizer)", b["delete_seconds"], None),
        Row(
            "API requests per deletion besides the delete",
            f["deletion"]["api_requests_per_object"],
            o["deletion"]["api_requests_per_object"],
        ),
        Row(
            f"steady {window:.0f} s: CPU, % of one core",
            b["steady"]["cpu_share"] * 100,
            o["steady"]["cpu_share"] * 100,
            "value",
            5,
            at_1000,
        ),
        Row("steady: PVE requests per probe", None, pve.get("requests_per_probe"), "value", 2),
        Row("steady: probes per cluster in the window", None, pve.get("probes_per_object")),
        Row(
            "steady: API writes per second",
            b["steady"]["api_writes_per_second"],
            o["steady"]["api_writes_per_second"],
            "value",
            0.2,
            at_1000,
        ),
    ]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{min(digits, 3)}f}"


def table(table_rows: list[Row]) -> str:
    header = ("metric", "bare kopf", "proxmox-operator", "ratio", "goal", "met")
    lines = [
        (
            r.metric,
            _fmt(r.bare),
            _fmt(r.ours),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.goal_text(),
            {None: "", True: "yes", False: "NO"}[r.met],
        )
        for r in table_rows
    ]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [line[0].ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(line[1:5], widths[1:5], strict=True)]
        out.append("  ".join([*cells, line[5]]).rstrip())
        if i == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def write(results: dict[str, Any], table_rows: list[Row], directory: Path = RESULTS) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    n = results["n"]
    json_path = directory / f"bench-{n}.json"
    document = {**results, "table": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in table_rows]}
    json_path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    png_path = directory / f"bench-{n}.png"
    chart(results, table_rows, png_path)
    return json_path, png_path


def chart(results: dict[str, Any], table_rows: list[Row], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only here: the rest of the benchmark runs without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    b, f, o = results["bare_kopf"], results["bare_kopf_finalizer"], results["proxmox_operator"]
    fig = plt.figure(figsize=(13, 9.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    ready, gone, goals = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    for ax, curves, title, ylabel in (
        (ready, [(b, "ready_curve", "bare kopf"), (o, "ready_curve", "proxmox-operator")], "registration", "done"),
        (
            gone,
            [(f, "delete_curve", "kopf with a finalizer"), (o, "delete_curve", "proxmox-operator")],
            "deletion",
            "objects left",
        ),
    ):
        for run, key, label in curves:
            points = run[key]
            ax.step([p[0] for p in points], [p[1] for p in points], where="post", label=label)
        ax.set(title=f"{title}: {results['n']} objects, 8 parallel clients", xlabel="seconds", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    scored = [r for r in table_rows if r.attained is not None]
    values = [max(r.attained or 0.0, 1e-3) for r in scored]
    goals.barh([r.metric.strip() for r in scored], values, color=["tab:green" if r.met else "tab:red" for r in scored])
    for y, (row, value) in enumerate(zip(scored, values, strict=True)):
        measured = f"{row.ratio:.2f}x" if row.kind == "ratio" and row.ratio is not None else _fmt(row.ours)
        goals.annotate(
            f"{measured} (goal {row.goal_text()})", (value, y), xytext=(4, 0), textcoords="offset points", va="center"
        )
    goals.axvline(1.0, color="black", linewidth=1)
    goals.set_xscale("log")
    goals.set_xlim(1e-3, max(10.0, max(values) * 8))
    goals.invert_yaxis()
    goals.set(title="proxmox-operator against its goals (<= 1 meets it)", xlabel="measured / goal (log)")
    fig.suptitle(
        f"make bench N={results['n']}, steady window {results['window_seconds']:.0f} s, "
        f"{results['machine']['cpus']} CPUs (shared machine), {results['date']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
