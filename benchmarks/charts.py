"""Bar charts of a benchmark run: one PNG per scenario, drawn from report.json.

Run by the harness with the peers' Python (it has matplotlib); also usable by hand:
``benchmarks/.venv-peers/bin/python benchmarks/charts.py benchmarks/results/report.json``.
Each bench of a scenario is one panel of requests per second; twistwsgi's bars stand out, and a
server without a number is labelled with the reason instead of a bar. The idle-connections
scenario gets a second panel with the memory each held connection costs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

Json = dict[str, Any]
TWISTWSGI_COLOUR = "#d95f02"
PEER_COLOUR = "#7570b3"


def _value(row: Json) -> float | None:
    if row["status"] != "ok" or not row.get("wrk"):
        return None
    value: float = row["wrk"]["requests_per_s"]
    return value


def _per_connection(row: Json) -> float | None:
    value = (row.get("extra") or {}).get("kib_per_idle_connection")
    return None if row["status"] != "ok" else value


def _rps_label(row: Json, value: float | None) -> str:
    if value is None:
        return row["status"]
    if not row["wrk"]["requests"]:
        return "0 (no response)"
    return f"{value:,.0f}"


def _per_connection_label(row: Json, value: float | None) -> str:
    extra = row.get("extra") or {}
    held = extra.get("held", 0)
    if value is None:
        return row["status"] if row["status"] != "ok" else f"none held ({held:,} at the end)"
    return f"{value:.1f} KiB ({held:,} held)"


def _bars(
    axes: Axes,
    rows: list[Json],
    values: list[float | None],
    unit: str,
    label: Callable[[Json, float | None], str],
) -> None:
    names = [row["server"] for row in rows]
    heights = [value or 0.0 for value in values]
    colours = [TWISTWSGI_COLOUR if name.startswith("twistwsgi") else PEER_COLOUR for name in names]
    positions = list(range(len(names)))
    axes.barh(positions, heights, color=colours)
    axes.set_yticks(positions, labels=names)
    axes.invert_yaxis()
    axes.set_xlabel(unit)
    top = max(heights, default=0.0) or 1.0
    for position, row, value in zip(positions, rows, values, strict=True):
        text = label(row, value)
        axes.text(value or top * 0.01, position, f" {text}", va="center", fontsize=8)
    axes.set_xlim(0, top * 1.35)


def _draw(scenario: Json, output: Path) -> Path | None:
    benches = [bench for bench in scenario["benches"] if bench["rows"]]
    if not benches:
        return None
    idle = bool(scenario.get("idle_connections"))
    panels = len(benches) + (1 if idle else 0)
    height = 1.2 + 0.45 * max(len(bench["rows"]) for bench in benches)
    figure, axes_list = plt.subplots(panels, 1, figsize=(8, height * panels), squeeze=False)
    for axes, bench in zip(axes_list[:, 0], benches, strict=False):
        rows = bench["rows"]
        _bars(axes, rows, [_value(row) for row in rows], "requests/s", _rps_label)
        axes.set_title(bench["title"], fontsize=10)
    if idle:
        rows = benches[0]["rows"]
        axes = axes_list[-1, 0]
        values = [_per_connection(row) for row in rows]
        _bars(axes, rows, values, "KiB of RSS per held connection", _per_connection_label)
        axes.set_title("memory per idle connection (lower is better)", fontsize=10)
    figure.suptitle(
        f"{scenario['number']}. {scenario['title']}\n"
        "one run on a shared machine: compare ratios, not absolute numbers",
        fontsize=11,
    )
    figure.tight_layout()
    path = output / f"{scenario['number']}-{scenario['slug']}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    """Draw every scenario of the report.json named on the command line."""
    report_path = Path(sys.argv[1])
    report = json.loads(report_path.read_text())
    for scenario in report["scenarios"]:
        path = _draw(scenario, report_path.parent)
        if path is not None:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
