"""The Markdown report, written from the same data as report.json (nothing typed in by hand).

One section per scenario, one table per bench: server, command, req/s, latency p50/p99, errors,
peak RSS, the server's CPU time per request and the cores it kept busy, and, for each twistwsgi
variant, twistwsgi's req/s divided by the row's. A scenario
measured in several rounds shows each row's median round and a `spread` column: the lowest and
highest round's req/s. Servers that could not run show why, with their log's tail below the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .servers import TWISTWSGI_VARIANTS

Json = dict[str, Any]
DASH = "—"


def _rps(row: Json) -> float | None:
    if row["status"] != "ok" or not row["wrk"]:
        return None
    value: float = row["wrk"]["requests_per_s"]
    return value


def _format_rps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _format_short_rps(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else _format_rps(value)


def _spread(row: Json) -> str:
    spread = row.get("spread_rps")
    if _rps(row) is None or not spread:
        return DASH
    low, high = spread
    return f"{_format_short_rps(low)}-{_format_short_rps(high)}"


def _format_ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f} µs"
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def _format_mib(kib: float | None) -> str:
    return DASH if kib is None else f"{kib / 1024:.1f} MiB"


def _format_errors(wrk: Json) -> str:
    total = wrk["error_total"]
    if not total:
        return "0"
    parts = [
        f"{name.replace('_', ' ')} {count:,}" for name, count in wrk["errors"].items() if count
    ]
    return f"{total:,} ({', '.join(parts)})"


def _cpu_cells(row: Json) -> list[str]:
    """CPU time per request and cores busy: the whole process group over the window."""
    cpu_s = row.get("cpu_s")
    wrk = row["wrk"]
    if cpu_s is None or not wrk or not wrk["requests"] or not wrk["duration_s"]:
        return [DASH, DASH]
    return [f"{cpu_s / wrk['requests'] * 1e6:.1f} µs", f"{cpu_s / wrk['duration_s']:.2f}"]


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def _variants(rows: list[Json]) -> list[str]:
    present = {row["server"] for row in rows}
    return [name for name in TWISTWSGI_VARIANTS if name in present]


def _idle_cells(row: Json) -> list[str]:
    extra = row.get("extra") or {}
    if "held" not in extra:
        return [DASH, DASH, DASH]
    after_open = (extra.get("idle_after_open") or {}).get("still_open", 0)
    held = f"{after_open:,} → {extra['held']:,} of {extra['idle_requested']:,}"
    rss = f"{_format_mib(extra['rss_before_kib'])} → {_format_mib(extra['rss_with_idle_kib'])}"
    per = extra.get("kib_per_idle_connection")
    per_text = DASH if per is None else f"{per:.1f} KiB"
    return [held, rss, per_text]


def _table(bench: Json, *, idle: bool, spread: bool) -> list[str]:
    rows = bench["rows"]
    variants = _variants(rows)
    variant_rps = {row["server"]: _rps(row) for row in rows if row["server"] in variants}
    header = ["server", "command", "req/s", "p50", "p99", "errors", "peak RSS", "CPU/req", "cores"]
    if spread:
        header.insert(3, "spread")
    if idle:
        header += ["idle held (opened → end)", "RSS before → with idle", "per idle conn"]
    header += [f"{variant} ÷ peer" for variant in variants]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    for row in rows:
        command = f"`{row['command']}`" if row["command"] else DASH
        rps = _rps(row)
        if rps is None:
            status = row["status"]
            if row["status"] == "not available" and row["detail"]:
                status = row["detail"]
            cells = [row["server"], command, status, DASH, DASH, DASH, DASH, DASH, DASH]
        elif not row["wrk"]["requests"]:
            # wrk counts a timeout only after --timeout (10 s): say plainly that nothing came.
            no_answer = "0 (no response during the run)"
            cells = [row["server"], command, no_answer, DASH, DASH, DASH]
            cells += [_format_mib(row["peak_rss_kib"]), DASH, DASH]
        else:
            wrk = row["wrk"]
            cells = [
                row["server"],
                command,
                _format_rps(rps),
                _format_ms(wrk["percentiles_ms"].get("50")),
                _format_ms(wrk["percentiles_ms"].get("99")),
                _format_errors(wrk),
                _format_mib(row["peak_rss_kib"]),
                *_cpu_cells(row),
            ]
        if spread:
            cells.insert(3, _spread(row))
        if idle:
            cells += _idle_cells(row)
        for variant in variants:
            same = row["server"] == variant
            cells.append(DASH if same else _ratio(variant_rps[variant], rps))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def _problems(bench: Json) -> list[str]:
    lines = []
    for row in bench["rows"]:
        if row["status"] in ("ok", "not available") or not row["detail"]:
            continue
        lines += [f"- **{row['server']}**: {row['status']}", "", "  ```"]
        lines += [f"  {line}" for line in row["detail"].splitlines()[-20:]]
        lines += ["  ```"]
    for row in bench["rows"]:
        if row["status"] == "ok" and row["detail"]:
            lines.append(f"- **{row['server']}**: {row['detail']}")
    return lines


def _config_files(scenario: Json) -> list[str]:
    seen: dict[str, str] = {}
    for bench in scenario["benches"]:
        for row in bench["rows"]:
            for name, text in (row.get("files") or {}).items():
                seen.setdefault(f"{row['server']} {name}", text)
    lines = []
    for title, text in seen.items():
        lines += ["<details>", f"<summary>{title}</summary>", "", "```nginx", text.rstrip()]
        lines += ["```", "", "</details>", ""]
    return lines


def _scenario(scenario: Json, output: Path) -> list[str]:
    number, slug = scenario["number"], scenario["slug"]
    lines = [f"## {number}. {scenario['title']}", "", scenario["description"], ""]
    idle = bool(scenario.get("idle_connections"))
    spread = scenario.get("rounds", 1) > 1
    for bench in scenario["benches"]:
        lines += [f"### {bench['title']}", "", f"`{bench['wrk_command']}`", ""]
        if not bench["rows"]:
            lines += ["None of the selected servers takes part in this scenario.", ""]
            continue
        lines += _table(bench, idle=idle, spread=spread)
        lines.append("")
        problems = _problems(bench)
        if problems:
            lines += [*problems, ""]
    chart = f"{number}-{slug}.png"
    if (output / chart).exists():
        lines += [f"![{scenario['title']}: requests per second]({chart})", ""]
    if scenario["notes"]:
        lines += [f"- {note}" for note in scenario["notes"]]
        lines.append("")
    lines += _config_files(scenario)
    return lines


def _mode(meta: Json, scenarios: list[Json]) -> str:
    """How the run measured: one window per server, or interleaved rounds (and where not)."""
    one_window = (
        f"{meta['duration_s']} s per measurement after a {meta['warmup_s']} s warm-up, "
        "servers one at a time"
    )
    rounds = meta.get("rounds", 1)
    if rounds <= 1:
        return f"{meta['mode']} mode: {one_window}"
    text = (
        f"{meta['mode']} mode: {rounds} interleaved rounds of {meta['round_s']} s per server "
        f"after a {meta['warmup_s']} s warm-up; the row is the median round, `spread` the "
        "range of the rounds"
    )
    single = [str(scenario["number"]) for scenario in scenarios if scenario.get("rounds", 1) <= 1]
    if single:
        which = "scenario" if len(single) == 1 else "scenarios"
        text += f" ({which} {', '.join(single)}: {one_window})"
    return text


def _header(meta: Json, scenarios: list[Json]) -> list[str]:
    machine = meta["machine"]
    mode = f"{_mode(meta, scenarios)}; the run took {meta['elapsed_s']} s"
    rounds_note = ""
    if meta.get("rounds", 1) > 1:
        rounds_note = (
            " A row measured in rounds shows its median round's req/s, latency and CPU time, "
            "the errors of all its rounds and the highest peak RSS of any round."
        )
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    lines = [
        "# twistwsgi benchmarks",
        "",
        "> These numbers come from one run on a shared, noisy machine. Only the ratios between "
        "servers in the same table are meaningful; the absolute numbers are not.",
        "",
        f"- Date: {meta['date']}",
        f"- Machine: {machine['nproc']} CPUs (nproc), {machine['cpu_model']}, "
        f"{machine['kernel']}, {machine['memory']} RAM",
        f"- Command: `{meta['command']}` ({mode})",
        "- Load: `wrk` with one thread on 127.0.0.1; each table gives its exact wrk command. "
        "Latency percentiles are wrk's `--latency` distribution; errors are wrk's socket "
        "errors plus non-2xx/3xx responses; peak RSS is the server's whole process group "
        "(VmHWM after a reset, and VmRSS sampled every 100 ms). CPU/req is the group's user "
        "and system CPU time over wrk's run (every thread and process of the server, from "
        "/proc) divided by the requests answered, and cores that time divided by the run's "
        "length: a server whose work runs on several threads (granian's Rust runtime) can "
        "keep more than one core busy. Every server runs with "
        f"RLIMIT_NOFILE {meta.get('open_file_limit', 'unchanged')}.{rounds_note}",
        f"- Versions: {versions}",
        "- Commands: peers run from a scratch directory (`$TMP`) holding a `benchmarks` "
        "symlink to this folder; twistwsgi runs from the repository root.",
    ]
    lines += [f"- Install note: {note}" for note in meta.get("install_notes", [])]
    return [*lines, ""]


def render(report: Json, output: Path) -> str:
    """The whole Markdown report; ``output`` is where the charts are."""
    lines = _header(report["meta"], report["scenarios"])
    for scenario in report["scenarios"]:
        lines += _scenario(scenario, output)
    return "\n".join(lines).rstrip() + "\n"
