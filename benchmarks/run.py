"""Run the benchmark suite: twistwsgi and its peers, same machine, same run, wrk on loopback.

    python benchmarks/run.py [--quick] [--scenarios 1,2,3] [--servers twistwsgi,gunicorn-sync]
                             [--duration S] [--warmup S] [--rounds N] [--output DIR]

Installs what is missing first (wrk and nginx from Debian's packages when run as root; the peers
into ``benchmarks/.venv-peers``), runs each selected scenario against each selected server and
writes ``report.json`` (every raw number), ``report.md`` and one PNG chart per scenario into the
output directory (default ``benchmarks/results``). A full run measures each server in
``--rounds`` (3) short rounds interleaved with the other servers of its scenario and reports the
median round; ``--quick`` (1 round) measures the servers one at a time. twistwsgi runs from the
project's venv (``.venv``, made by ``make test``). Every process started is stopped, also on
Ctrl-C or SIGTERM. ``--list`` shows the scenarios and servers; ``--render REPORT_JSON`` redraws
the charts and report.md of an earlier run without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import environment, procs, report, scenarios, servers

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
QUICK_DURATION_S, QUICK_WARMUP_S = 2, 1
FULL_DURATION_S, FULL_WARMUP_S = 10, 2
QUICK_ROUNDS, FULL_ROUNDS = 1, 3


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def rounds_of(args: argparse.Namespace) -> int:
    """How many rounds to measure in: ``--rounds``, else 3 for a full run and 1 for --quick."""
    if args.rounds:
        rounds: int = args.rounds
        return rounds
    return QUICK_ROUNDS if args.quick else FULL_ROUNDS


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        description="Benchmark twistwsgi against its peers with wrk on loopback."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"short runs ({QUICK_DURATION_S} s) of scenarios "
        f"{','.join(str(s.number) for s in scenarios.SCENARIOS if s.in_quick)} "
        "unless --scenarios is given, without the secondary benches",
    )
    parser.add_argument("--scenarios", type=_csv, help="scenario numbers, e.g. 1,2,3")
    parser.add_argument("--servers", type=_csv, help="server names, e.g. twistwsgi,granian")
    parser.add_argument(
        "--duration", type=int, help="seconds per server and bench (split over the rounds)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="seconds of warm-up before each server's first measurement of each bench",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        help=f"measure each server in N rounds of duration/N seconds (at least 2), interleaved "
        f"with the other servers, and report the median round (default {FULL_ROUNDS}; "
        f"{QUICK_ROUNDS} with --quick: one window per server, one server at a time)",
    )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--project-venv", type=Path, default=REPO / ".venv")
    parser.add_argument("--peers-venv", type=Path, default=BENCH_DIR / ".venv-peers")
    parser.add_argument(
        "--no-install", action="store_true", help="install nothing; use what is there"
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and servers")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="REPORT_JSON",
        help="run nothing: redraw the charts and report.md beside an existing report.json",
    )
    parser.add_argument(
        "--publish",
        type=Path,
        metavar="REPORT_DIR",
        help="run nothing: copy the report and charts in REPORT_DIR (a full run's output)"
        " into docs/benchmarks.md and docs/benchmarks/",
    )
    return parser.parse_args(argv)


def _print_catalogue() -> None:
    for scenario in scenarios.SCENARIOS:
        quick = " (quick)" if scenario.in_quick else ""
        print(f"{scenario.number}. {scenario.slug}: {scenario.title}{quick}")
        print(f"     servers: {', '.join(scenario.servers)}")
    print(f"servers: {', '.join(servers.ALL_SERVERS)}")


def _selected_servers(names: list[str] | None) -> tuple[str, ...]:
    if not names:
        return servers.ALL_SERVERS
    unknown = [name for name in names if name not in servers.ALL_SERVERS]
    if unknown:
        raise SystemExit(f"unknown server(s): {unknown}; known: {list(servers.ALL_SERVERS)}")
    return tuple(names)


def _clear_previous(output: Path) -> None:
    """Remove the files an earlier run wrote, so nothing stale sits beside the new report."""
    for pattern in ("report.md", "report.json", "[0-9]-*.png", "logs/*.log"):
        for path in output.glob(pattern):
            path.unlink()


def _draw_charts(peers_python: Path, report_json: Path) -> None:
    if not peers_python.exists():
        print("no charts: the peers' venv (with matplotlib) is missing", file=sys.stderr)
        return
    done = subprocess.run(
        [str(peers_python), str(BENCH_DIR / "charts.py"), str(report_json)], check=False
    )
    if done.returncode != 0:
        print("charts.py failed; the report has no charts", file=sys.stderr)


def _run(args: argparse.Namespace, argv: list[str], open_files: int) -> int:
    selected = scenarios.select_scenarios(
        [int(number) for number in args.scenarios] if args.scenarios else None, args.quick
    )
    if args.no_install:
        tools = {tool: path for tool in ("wrk", "nginx") if (path := environment.which(tool))}
        install_notes: list[str] = []
    else:
        tools = environment.ensure_tools()
        install_notes = environment.ensure_peers_venv(
            args.peers_venv, BENCH_DIR / "requirements-peers.txt"
        )
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    _clear_previous(output)
    duration = args.duration or (QUICK_DURATION_S if args.quick else FULL_DURATION_S)
    warmup = (
        args.warmup
        if args.warmup is not None
        else (QUICK_WARMUP_S if args.quick else FULL_WARMUP_S)
    )
    rounds = rounds_of(args)
    project_bin = args.project_venv.resolve() / "bin"
    started = time.monotonic()
    with servers.scratch(BENCH_DIR) as scratch:
        context = servers.Context.for_run(
            repo=REPO,
            project_bin=project_bin,
            peers_bin=args.peers_venv.resolve() / "bin",
            scratch=scratch,
            nginx=tools.get("nginx"),
        )
        settings = scenarios.Settings(
            duration_s=duration,
            warmup_s=warmup,
            quick=args.quick,
            servers=_selected_servers(args.servers),
            output=output,
            rounds=rounds,
        )
        runner = scenarios.Runner(context, settings, BENCH_DIR)
        results = [runner.run(scenario) for scenario in selected]
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "duration_s": duration,
        "warmup_s": warmup,
        "rounds": rounds,
        "round_s": scenarios.round_seconds(duration, rounds),
        "elapsed_s": round(time.monotonic() - started),
        "command": shlex.join(["python", "benchmarks/run.py", *argv]),
        "machine": environment.machine_facts(),
        "versions": environment.versions(args.project_venv, args.peers_venv, tools),
        "install_notes": install_notes,
        "open_file_limit": open_files,
    }
    report_json = output / "report.json"
    report_json.write_text(json.dumps({"meta": meta, "scenarios": results}, indent=2) + "\n")
    return _render(report_json, args.peers_venv)


def _render(report_json: Path, peers_venv: Path) -> int:
    """Draw the charts and write report.md beside ``report_json``."""
    output = report_json.resolve().parent
    _draw_charts(peers_venv / "bin" / "python", report_json)
    report_data = json.loads(report_json.read_text())
    (output / "report.md").write_text(report.render(report_data, output))
    print(f"wrote {output / 'report.md'} and {report_json}")
    return 0


_DOCS_INTRO = """\
# Benchmarks

twistwsgi is measured against the servers it replaces: `twistd web --wsgi`, gunicorn
(sync and gthread workers), waitress, uWSGI and granian for applications, nginx and
twisted.web for static files and proxying. Everything below was generated by the
benchmark suite in one run; nothing is typed in by hand.

Hello world, static files and the proxy also run two floors (`benchmarks/twisted_floor.py`):
not servers, but a bare Twisted protocol that answers each request head with bytes built at
start-up (or, for the proxy, copies bytes to the upstream unread). `twisted-floor` runs on
Twisted's stock reactor paths: for small responses it is about the most a Python protocol
there reaches on the same machine. twistwsgi does not take those paths: it replaces part of
the reactor's per-read dispatch (`twistwsgi/dispatch.py`) and sends responses straight to
the socket, those of one poll's batch together (`twistwsgi/http/transport.py`), which saves
system calls and Python the stock paths spend. `twisted-floor-direct` is the same protocol
on twistwsgi's paths, so it is the bound for twistwsgi itself: the `twistwsgi ÷ peer` column
on its row says how much of what those paths allow twistwsgi's HTTP work leaves, and the
gap between the two floors is what the paths saved. (For the 1 MB file neither is a
ceiling: they write from memory, where twistwsgi and nginx use sendfile.)

Each row also gives the server's CPU time per request (`CPU/req`: user and system time of
its whole process group over the run, every thread and worker included, divided by the
requests answered) and the cores it kept busy (that time divided by the run's length).
CPU/req is steadier than req/s on a shared machine, and it separates a cheaper server
from one that uses more of the machine: twistwsgi with `--threads 0`, the floor and nginx's
worker each run on one thread and keep at most one core busy, while granian's single
worker runs its Rust I/O runtime on threads beside the Python one and can keep more than
one core busy on this two-core machine (which wrk shares).

Ratios against nginx depend on the machine more than the others do. nginx spends most
of its time per request in the kernel, a Python server most of its own in the
interpreter, so a machine whose system calls are cheap speeds nginx up more. Two full runs
of this suite on the same day at the same commit (2ebb72a, before the run below), on two
machines of the same size, show it: for the 10 KB
file nginx's CPU/req went from 17.6 to 7.8 µs, twistwsgi's from 33.8 to 24.8 µs, and
twistwsgi's ratio to nginx from 0.53 to 0.32. The ratios between Python servers moved
far less (against `twistd web --path`, 6.69 and 4.86).

## Reproducing it

```
make bench                          # the full suite (about 17 minutes)
make bench BENCH_ARGS=--quick       # a quick pass, under 2 minutes
.venv/bin/python benchmarks/run.py --scenarios 1,3 --servers twistwsgi,granian
.venv/bin/python benchmarks/run.py --publish benchmarks/results   # refresh this page
```

`make bench` installs what it needs: `wrk` and nginx from Debian's packages (when run
as root), the peers into `benchmarks/.venv-peers`. Everything runs on the same machine,
with `wrk` on loopback measuring one server at a time. A full run starts all the servers
of a scenario, then measures each in 3 short rounds (`--rounds`) that take turns with the
others, each round starting with a different server, so that a slow change in the
machine's load spreads over every server instead of biasing the one measured then; a row
is the server's median round and `spread` the range of its rounds. The idle-connections
and several-processes scenarios, and `--quick` runs, measure each server in one window,
one server at a time. Every process the suite starts is stopped at the end, also when it
is interrupted. The machines these numbers come from are shared and noisy: compare the
ratios within a table, not the absolute numbers across runs; the run's own header below
says how it was measured.

`benchmarks/inmemory.py` measures something else: the Python time twistwsgi spends on one
request, with no sockets and no wrk. It builds the server as `twistd wsgi` does (with
`--access-log off --keepalive-requests 0`), sends keep-alive requests through in-memory
transports for three cases (`hello` with `--threads 0`, a 10 KB `static` file, a `proxy`
mount whose upstream is an in-memory peer answering 13 bytes), checks every response (and
every request the proxy sends its upstream), and prints microseconds per request (the best
of several runs); `--profile CASE` prints a cProfile listing. To compare two commits, run
it alternately in two worktrees. It is the tool for changes to the request path; the
tables below are the verdict.

```
PYTHONPATH=$PWD .venv/bin/python benchmarks/inmemory.py             # hello, static, proxy
PYTHONPATH=$PWD .venv/bin/python benchmarks/inmemory.py --profile proxy
```

A profiler charges some of CPython's slow paths to an innocent line: an exception raised
and dropped inside one C call (`b"x" in data` first tries the needle as an integer and
formats a TypeError; a `threading.Condition` over a plain `Lock` raises three
AttributeErrors), or, on Python 3.11, an `Enum.MEMBER` looked up through `EnumType`'s
`__getattr__` hook (about 77 ns against 9 for a module constant). Together they once cost
a proxied request about 4 us of its 25. `benchmarks/hidden_costs.py` runs the three cases
under gdb (with wrk's request and a browser's, and for the file a revalidation and a range)
and prints every such hit of a steady-state request with its line;
`tests/test_hidden_costs.py` fails on any (gdb comes from Debian: `make test` installs it).

```
PYTHONPATH=$PWD .venv/bin/python benchmarks/hidden_costs.py         # hello, static, proxy
```

`benchmarks/body_throughput.py` does the same for request and response bodies: it starts
the real server in a child process on 127.0.0.1, sends it 10 MB uploads (`upload`, with
`--chunked` for chunked ones) or asks it for streamed 100 KB responses (`stream`) from
plain sockets, checks every answer, and prints requests and megabytes a second and the
server's CPU time per request (steadier than the wall time on a shared machine), for
the thread pool or, with `--threads 0`, the reactor thread; `--profile FILE` writes the
server's cProfile statistics.

```
PYTHONPATH=$PWD .venv/bin/python benchmarks/body_throughput.py upload --size 10000000 --count 100
PYTHONPATH=$PWD .venv/bin/python benchmarks/body_throughput.py stream --threads 0
```

The latest full run follows.

"""


def _publish(report_dir: Path) -> int:
    """Write docs/benchmarks.md (how to reproduce + the report) and copy the charts."""
    source = report_dir.resolve()
    report_md = source / "report.md"
    if not report_md.exists():
        raise SystemExit(f"{report_md} does not exist: run the suite first")
    meta = json.loads((source / "report.json").read_text())["meta"]
    if meta.get("mode") != "full":
        raise SystemExit("only a full run (not --quick) is published")
    charts = REPO / "docs" / "benchmarks"
    charts.mkdir(parents=True, exist_ok=True)
    for old in charts.glob("*.png"):
        old.unlink()
    text = report_md.read_text()
    for chart in sorted(source.glob("[0-9]-*.png")):
        shutil.copy2(chart, charts / chart.name)
        text = text.replace(f"]({chart.name})", f"](benchmarks/{chart.name})")
    body = text.split("\n", 1)[1].lstrip()  # the report's own title is replaced
    (REPO / "docs" / "benchmarks.md").write_text(_DOCS_INTRO + body)
    print(f"wrote {REPO / 'docs' / 'benchmarks.md'} and {charts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the suite, and whatever happens, stop every process it started."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        _print_catalogue()
        return 0
    if args.render:
        return _render(args.render, args.peers_venv)
    if args.publish:
        return _publish(args.publish)
    procs.install_cleanup_handlers()
    open_files = procs.raise_open_file_limit()
    try:
        return _run(args, argv, open_files)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the suite started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
