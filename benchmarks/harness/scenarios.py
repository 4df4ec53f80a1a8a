"""The scenarios and how one is run: every selected server measured with wrk, one at a time.

A scenario has a target (what the servers serve), the servers that take part and one or more
benches (one wrk measurement each: connections, path, optional Lua script). A server is started,
polled until it answers HTTP, warmed up with a short wrk run before its first measurement of each
bench, and measured while its memory is sampled; every process started is stopped (its whole
process group), also on errors. A server that does not start is reported with its log's tail; the
run goes on.

With one round, each server is started, measured in one window per bench and stopped before the
next one starts. With several rounds (`Settings.rounds`), the scenario starts all its servers
first, then measures each bench in short windows that take turns between the servers, the order
rotating every round, so that a slow drift in the machine's load (another tenant) spreads over
every server instead of landing on the one measured at the time. A row then holds the median
round (`combine_rounds`). Scenarios that cannot be split this way (`single_window_reason`) keep
one window per server.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from . import procs, servers, wrk
from .servers import (
    FLOORS,
    TWISTWSGI_VARIANTS,
    WSGI_PEERS,
    Context,
    Launch,
    Target,
    Unavailable,
)

WSGI_SERVERS = (*TWISTWSGI_VARIANTS, *WSGI_PEERS)
IDLE_CONNECTIONS = 5000
IDLE_OPEN_TIMEOUT_S = 20.0
# A round shorter than this would be mostly wrk's ramp-up and the last requests' tail.
MIN_ROUND_S = 2
_T = TypeVar("_T")
STATIC_FILES = {"10k.bin": 10 * 1024, "1m.bin": 1024 * 1024}


@dataclass(frozen=True)
class Bench:
    """One wrk measurement: how many connections, which path, which Lua script."""

    slug: str
    title: str
    connections: int
    path: str = "/"
    script: str | None = None
    in_quick: bool = True


@dataclass(frozen=True)
class Scenario:
    """A scenario of the issue: what is served, by whom, measured how."""

    number: int
    slug: str
    title: str
    description: str
    target: Target
    servers: tuple[str, ...]
    benches: tuple[Bench, ...]
    in_quick: bool = False
    idle_connections: int = 0
    notes: tuple[str, ...] = ()


def _workers() -> int:
    return max(2, os.cpu_count() or 2)


UWSGI_NOTE = (
    "uWSGI runs behind its own HTTP router (`--http`, one extra process, counted in its RSS) "
    "with `--http-keepalive`: `--http-socket` closes the connection after every response and "
    "`--http11-socket` pins each connection to a worker thread until its socket timeout, so "
    "with more connections than threads the other connections starve."
)
THREADS_NOTE = (
    "Threadpools: twistwsgi `--threads 10`, gunicorn gthread `--threads 10`, waitress "
    "`--threads=10` (its default is 4), uWSGI `--threads 10`, granian `--blocking-threads 10`; "
    "`twistd web --wsgi` makes its own pool with Twisted's `ThreadPool` defaults (5 to 20 "
    "threads, no option to change it). twistwsgi-inline (`--threads 0`) calls the app in the "
    "reactor thread. No server writes an access log."
)

WORKERS_NOTE = (
    "twistwsgi's `--workers` master binds the listening socket, serves nothing itself and "
    "supervises the workers, which accept on the shared socket (as gunicorn's arbiter and "
    "its workers do). Peak RSS counts every process of a server: master, workers and, for "
    "uWSGI, its HTTP router."
)

FLOOR_NOTE = (
    "twisted-floor is not an HTTP server but the floor under every server written in Python on "
    "Twisted's reactor: `benchmarks/twisted_floor.py`, on twistwsgi's own Python and Twisted, "
    "answers each request head with bytes built at start-up and parses nothing else. For "
    "small responses its req/s is about the most such a server reaches on this machine in "
    "the same run on Twisted's stock reactor paths. twisted-floor-direct is the same protocol "
    "on the paths twistwsgi installs (`--direct`: reads handed over from the poll loop, "
    "writes sent straight to the socket, once per batch), the bound for twistwsgi itself."
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        1,
        "hello",
        "Hello world",
        "The `hello` app (13-byte body, Content-Length), keep-alive connections.",
        Target("wsgi", "hello"),
        (*WSGI_SERVERS, *FLOORS),
        (
            Bench("hello-c50", "50 connections", 50),
            Bench("hello-c1", "1 connection (latency)", 1, in_quick=False),
        ),
        in_quick=True,
        notes=(THREADS_NOTE, UWSGI_NOTE, FLOOR_NOTE),
    ),
    Scenario(
        2,
        "sleepy",
        "I/O-bound app (10 ms per request)",
        "The `sleepy` app waits 10 ms per request, 100 connections: the ceiling is "
        "threads ÷ 10 ms, so this shows each server's concurrency.",
        Target("wsgi", "sleepy"),
        WSGI_SERVERS,
        (Bench("sleepy-c100", "100 connections", 100),),
        in_quick=True,
        notes=(THREADS_NOTE,),
    ),
    Scenario(
        3,
        "stream",
        "Streamed 100 KB response",
        "The `stream_100k` app yields 100 KB in 8 KB chunks without a Content-Length "
        "(chunked transfer coding on HTTP/1.1), 50 connections.",
        Target("wsgi", "stream_100k"),
        WSGI_SERVERS,
        (Bench("stream-c50", "50 connections", 50),),
        in_quick=True,
        notes=("uWSGI needs `--http-auto-chunked` to keep such responses keep-alive.",),
    ),
    Scenario(
        4,
        "upload",
        "10 MB upload",
        "Each request POSTs 10 MB (`wrk/upload.lua`); the `upload` app reads `wsgi.input` "
        "in 64 KB reads and answers with the byte count. 10 connections. Peak RSS shows "
        "whether a server buffers whole bodies.",
        Target("wsgi", "upload"),
        WSGI_SERVERS,
        (Bench("upload-c10", "10 connections", 10, script="upload.lua"),),
        notes=(
            "twistwsgi runs with `--max-body 0` (no limit) here: its default refuses bodies "
            "over 1 MiB with 413, and no peer limits bodies by default.",
        ),
    ),
    Scenario(
        5,
        "static",
        "Static files",
        "A 10 KB and a 1 MB file, 50 connections: twistwsgi (`--static`) against nginx "
        "(sendfile) and `twistd web --path`.",
        Target("static"),
        ("twistwsgi", "nginx", "twistd-web", *FLOORS),
        (
            Bench("static-10k", "10 KB file, 50 connections", 50, "/static/10k.bin"),
            Bench("static-1m", "1 MB file, 50 connections", 50, "/static/1m.bin", in_quick=False),
        ),
        notes=(
            FLOOR_NOTE,
            "twisted-floor holds each file in memory and writes it from there, without "
            "sendfile: for the 1 MB file that is a different way of sending, not a ceiling.",
        ),
    ),
    Scenario(
        6,
        "proxy",
        "Reverse proxy",
        "A reverse proxy in front of a fast upstream (a separate nginx answering "
        "`Hello, World!` itself), 50 connections.",
        Target("proxy"),
        ("twistwsgi", "nginx", "twistd-web", *FLOORS),
        (Bench("proxy-c50", "50 connections", 50),),
        notes=(
            "twisted.web's proxy is `benchmarks/twisted_proxy.py` (`ReverseProxyResource`): "
            "HTTP/1.0 to the upstream, a new upstream connection per request.",
            "nginx keeps up to 64 idle upstream connections (`keepalive 64`).",
            FLOOR_NOTE,
            "As a proxy, twisted-floor opens one upstream connection per client connection "
            "and copies bytes both ways unread (no parsing, no pool, no headers added).",
        ),
    ),
    Scenario(
        7,
        "idle",
        "5,000 idle keep-alive connections",
        f"{IDLE_CONNECTIONS:,} connections each send one request and are then held idle "
        "(`benchmarks/idle_clients.py`); RSS is read before and after they open, then "
        "hello-world is measured with 50 more connections while they are held.",
        Target("wsgi", "hello", hold_idle=True),
        WSGI_SERVERS,
        (Bench("idle-c50", "hello world, 50 connections, while the idle ones are held", 50),),
        idle_connections=IDLE_CONNECTIONS,
        notes=(
            "`idle held` counts connections that got their response and were still open, once "
            "all were opened and again after the measurement; RSS per idle connection uses the "
            "first count. Servers that close or refuse connections show it there. The "
            "helper opens at most 200 at a time and stops trying after 25 s, so connections "
            "beyond a server's limit are counted as not held (report.json has the details).",
            "Limits that may show here, all defaults: waitress `connection_limit` 100, gunicorn "
            "gthread `--worker-connections` 1000, granian `--backpressure` (backlog ÷ workers, "
            "1024); gunicorn sync serves one connection at a time and keeps each open for its "
            "keep-alive time. Connections past a limit wait in the listen queue, and so do wrk's.",
            "gunicorn gthread runs with `--keep-alive 75` and twistwsgi with "
            "`--keepalive-timeout 75` here (their defaults, 2 s and 5 s, close idle connections "
            "before the measurement ends); every other server keeps its default idle timeout.",
        ),
    ),
    Scenario(
        8,
        "workers",
        "Several processes",
        f"Hello world, 50 connections, every server with {_workers()} processes "
        f"(twistwsgi `--workers {_workers()}`, twistwsgi-inline also `--threads 0`). waitress "
        "and twistd web have no multi-process mode.",
        Target("wsgi", "hello", workers=_workers()),
        (*TWISTWSGI_VARIANTS, "gunicorn-sync", "gunicorn-gthread", "uwsgi", "granian"),
        (Bench("workers-c50", "50 connections", 50),),
        notes=(WORKERS_NOTE, UWSGI_NOTE),
    ),
)


@dataclass
class Settings:
    """How long to measure (in how many rounds), which servers to run, where to put logs."""

    duration_s: int
    warmup_s: int
    quick: bool
    servers: tuple[str, ...]
    output: Path
    rounds: int = 1


@dataclass
class Row:
    """One server's result in one bench."""

    server: str
    command: str
    status: str
    detail: str = ""
    wrk: wrk.WrkResult | None = None
    peak_rss_kib: int | None = None
    # The server's whole process group, over the measurement window (wrk's run).
    cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    # Measured in rounds: each round's numbers, and the lowest and highest round's req/s.
    rounds: list[dict[str, Any]] = field(default_factory=list)
    spread_rps: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with every raw number."""
        return {
            "server": self.server,
            "command": self.command,
            "status": self.status,
            "detail": self.detail,
            "wrk": self.wrk.to_json() if self.wrk else None,
            "peak_rss_kib": self.peak_rss_kib,
            "cpu_s": self.cpu_s,
            "extra": self.extra,
            "files": self.files,
            "rounds": self.rounds,
            "spread_rps": list(self.spread_rps) if self.spread_rps else None,
        }


@dataclass
class RunningServer:
    """A started server under measurement."""

    name: str
    command: str
    launch: Launch
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def row(self, status: str, detail: str = "", **numbers: Any) -> Row:
        """A result row for this server."""
        return Row(self.name, self.command, status, detail, files=self.launch.files, **numbers)


def single_window_reason(scenario: Scenario) -> str | None:
    """Why a scenario keeps one measurement window per server with several rounds, or None."""
    if scenario.idle_connections or scenario.target.hold_idle:
        return (
            "the idle connections are opened, counted and held around a single measurement "
            "of each server"
        )
    if scenario.target.workers > 1:
        return (
            f"every server here runs {scenario.target.workers} processes, and all of them up "
            "at once would crowd the machine"
        )
    return None


def round_seconds(duration_s: int, rounds: int) -> int:
    """The length of one round: ``duration_s`` split over the rounds, in whole seconds."""
    if rounds <= 1:
        return duration_s
    return max(MIN_ROUND_S, math.ceil(duration_s / rounds))


def round_order(items: Sequence[_T], round_index: int) -> list[_T]:
    """The order of one round: round r starts at item r (mod the count), so none is always first."""
    if not items:
        return []
    start = round_index % len(items)
    return [*items[start:], *items[:start]]


def _round_json(row: Row) -> dict[str, Any]:
    return {
        "status": row.status,
        "detail": row.detail,
        "requests_per_s": row.wrk.requests_per_s if row.wrk else None,
        "requests": row.wrk.requests if row.wrk else None,
        "errors": dict(row.wrk.errors) if row.wrk else None,
        "percentiles_ms": dict(row.wrk.percentiles_ms) if row.wrk else None,
        "peak_rss_kib": row.peak_rss_kib,
        "cpu_s": row.cpu_s,
    }


def combine_rounds(rounds: Sequence[Row]) -> Row:
    """One row from a server's rounds of one bench.

    The median round (by req/s; for an even count the lower of the two middle ones, so it is a
    round that happened) gives req/s, latency and CPU time; errors are summed over every round
    and peak RSS is the highest. A round that failed makes the row that failure, naming the round.
    """
    summary = [_round_json(row) for row in rounds]
    for number, row in enumerate(rounds, 1):
        if row.status != "ok" or row.wrk is None:
            return replace(row, detail=f"round {number}: {row.detail}", rounds=summary)
    measured = [row.wrk for row in rounds if row.wrk is not None]
    median = sorted(rounds, key=lambda row: row.wrk.requests_per_s if row.wrk else 0.0)[
        (len(rounds) - 1) // 2
    ]
    assert median.wrk is not None
    errors: dict[str, int] = {}
    for result in measured:
        for name, count in result.errors.items():
            errors[name] = errors.get(name, 0) + count
    peaks = [row.peak_rss_kib for row in rounds if row.peak_rss_kib is not None]
    rates = [result.requests_per_s for result in measured]
    return replace(
        median,
        wrk=replace(median.wrk, errors=errors),
        peak_rss_kib=max(peaks) if peaks else None,
        rounds=summary,
        spread_rps=(min(rates), max(rates)),
    )


class Runner:
    """Runs scenarios with one `Context` and `Settings`."""

    def __init__(self, context: Context, settings: Settings, bench_dir: Path) -> None:
        self.context = context
        self.settings = settings
        self.bench_dir = bench_dir
        self.logs = settings.output / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def run(self, scenario: Scenario) -> dict[str, Any]:
        """Run one scenario for every selected server; return its JSON-ready result."""
        benches = [b for b in scenario.benches if b.in_quick or not self.settings.quick]
        names = [name for name in scenario.servers if name in self.settings.servers]
        notes = list(scenario.notes)
        rounds = self.settings.rounds
        why_single = single_window_reason(scenario)
        if rounds > 1 and why_single is not None:
            rounds = 1
            notes.append(
                f"Unlike the other scenarios, this one measures each server in one "
                f"{self.settings.duration_s} s window, servers one at a time, not in rounds: "
                f"{why_single}."
            )
        duration_s = round_seconds(self.settings.duration_s, rounds)
        with self._fixture(scenario, notes) as target:
            if rounds > 1:
                by_server = self._run_rounds(scenario, target, names, benches, rounds)
            else:
                by_server = {}
                for name in names:
                    print(f"[{scenario.number}. {scenario.slug}] {name}", flush=True)
                    by_server[name] = self._run_server(scenario, target, name, benches)
                    for bench, row in zip(benches, by_server[name], strict=False):
                        _print_row(bench, row)
        rows: dict[str, list[Row]] = {bench.slug: [] for bench in benches}
        for name in names:
            for bench, row in zip(benches, by_server.get(name, []), strict=False):
                rows[bench.slug].append(row)
        return {
            "number": scenario.number,
            "slug": scenario.slug,
            "title": scenario.title,
            "description": scenario.description,
            "notes": notes,
            "idle_connections": scenario.idle_connections,
            "rounds": rounds,
            "measurement_s": duration_s,
            "benches": [self._bench_json(bench, rows[bench.slug], duration_s) for bench in benches],
        }

    def _bench_json(self, bench: Bench, rows: list[Row], duration_s: int) -> dict[str, Any]:
        script = self.bench_dir / "wrk" / bench.script if bench.script else None
        argv = wrk.command(
            f"http://127.0.0.1:PORT{bench.path}", bench.connections, duration_s, script
        )
        return {
            "slug": bench.slug,
            "title": bench.title,
            "connections": bench.connections,
            "path": bench.path,
            "wrk_command": wrk.display(argv, self.context.repo),
            "rows": [row.to_json() for row in rows],
        }

    @contextlib.contextmanager
    def _fixture(self, scenario: Scenario, notes: list[str]) -> Iterator[Target]:
        """Static files or the upstream a scenario needs, for as long as it runs."""
        target = scenario.target
        if target.kind == "static":
            yield replace(target, docroot=self._static_files())
        elif target.kind == "proxy":
            with self._upstream(notes) as port:
                yield replace(target, upstream_port=port)
        else:
            yield target

    def _static_files(self) -> Path:
        docroot = self.context.scratch / "docroot"
        folder = docroot / "static"
        folder.mkdir(parents=True, exist_ok=True)
        for path in (docroot, folder):
            path.chmod(0o755)
        for name, size in STATIC_FILES.items():
            path = folder / name
            if not path.exists() or path.stat().st_size != size:
                path.write_bytes(os.urandom(size))
            path.chmod(0o644)
        return docroot

    @contextlib.contextmanager
    def _upstream(self, notes: list[str]) -> Iterator[int | None]:
        if self.context.nginx is None:
            notes.append("No upstream: nginx is not installed, so no proxy can be measured.")
            yield None
            return
        port = procs.free_port()
        launch = servers.upstream_launch(self.context, port)
        notes.append(f"Upstream: `{launch.display(self.context)}`.")
        log = self.logs / "upstream-nginx.log"
        with procs.running(launch.argv, cwd=launch.cwd, log_path=log) as proc:
            readiness = procs.wait_until_ready(proc, port)
            if not readiness.ready:
                notes.append(f"The upstream did not start: {procs.tail(log, 5)}")
                yield None
            else:
                yield port

    def _launch(
        self, scenario: Scenario, target: Target, name: str, benches: list[Bench]
    ) -> tuple[Launch, str, Path, int] | list[Row]:
        """What to start for ``name``, or the rows that say why nothing starts."""
        if target.kind == "proxy" and target.upstream_port is None:
            return [Row(name, "", "not available", "no upstream") for _ in benches]
        port = procs.free_port()
        launch = servers.build(name, self.context, target, port)
        if launch is None:
            return []
        if isinstance(launch, Unavailable):
            return [Row(name, "", "not available", launch.reason) for _ in benches]
        log = self.logs / f"{scenario.number}-{scenario.slug}-{name}.log"
        log.unlink(missing_ok=True)
        return launch, launch.display(self.context), log, port

    def _start(
        self,
        scenario: Scenario,
        target: Target,
        name: str,
        benches: list[Bench],
        stack: contextlib.ExitStack,
    ) -> tuple[RunningServer, procs.Readiness] | list[Row]:
        """Start ``name`` and wait until it answers, or return its failure rows.

        The server is stopped when ``stack`` closes, or at once if it does not start.
        """
        launched = self._launch(scenario, target, name, benches)
        if isinstance(launched, list):
            return launched
        launch, command, log, port = launched
        server_stack = stack.enter_context(contextlib.ExitStack())
        try:
            proc = procs.spawn(launch.argv, cwd=launch.cwd, env=launch.env, log_path=log)
        except OSError as exc:
            return [Row(name, command, "failed to start", str(exc)) for _ in benches]
        server_stack.callback(procs.stop, proc, launch.stop_signal)
        server = RunningServer(name, command, launch, proc, port, log)
        readiness = procs.wait_until_ready(proc, server.port, benches[0].path)
        if not readiness.ready:
            server_stack.close()  # stop it now, not after every other server's rounds
            return _failed_rows(server, readiness, benches)
        return server, readiness

    def _run_server(
        self, scenario: Scenario, target: Target, name: str, benches: list[Bench]
    ) -> list[Row]:
        """One server alone: start it, measure each bench in one window, stop it."""
        with contextlib.ExitStack() as stack:
            started = self._start(scenario, target, name, benches, stack)
            if isinstance(started, list):
                return started
            server, readiness = started
            rows = []
            for bench in benches:
                if scenario.idle_connections:
                    row = self._measure_idle(scenario, server, bench)
                else:
                    row = self._measure(server, bench, self.settings.duration_s, warm_up=True)
                rows.append(_with_probe(row, readiness))
            return rows

    def _run_rounds(
        self,
        scenario: Scenario,
        target: Target,
        names: list[str],
        benches: list[Bench],
        rounds: int,
    ) -> dict[str, list[Row]]:
        """Every server started at once, then measured in ``rounds`` interleaved rounds."""
        label = f"[{scenario.number}. {scenario.slug}]"
        duration_s = round_seconds(self.settings.duration_s, rounds)
        results: dict[str, list[Row]] = {}
        with contextlib.ExitStack() as stack:
            running: list[tuple[RunningServer, procs.Readiness]] = []
            for name in names:
                print(f"{label} starting {name}", flush=True)
                started = self._start(scenario, target, name, benches, stack)
                if isinstance(started, list):
                    results[name] = started
                    for bench, row in zip(benches, started, strict=False):
                        _print_row(bench, row)
                else:
                    running.append(started)
            measured: dict[tuple[str, str], list[Row]] = {}
            for index in range(rounds):
                for bench in benches:
                    for server, _ in round_order(running, index):
                        done = measured.setdefault((server.name, bench.slug), [])
                        if done and done[-1].status != "ok":
                            continue  # it failed in an earlier round; that failure is its row
                        print(f"{label} round {index + 1}/{rounds} {server.name}", flush=True)
                        row = self._measure(server, bench, duration_s, warm_up=index == 0)
                        done.append(row)
                        _print_row(bench, row)
            for server, readiness in running:
                results[server.name] = [
                    _with_probe(combine_rounds(measured[server.name, bench.slug]), readiness)
                    for bench in benches
                ]
        return results

    def _wrk_argv(self, port: int, bench: Bench, duration_s: int) -> list[str]:
        script = self.bench_dir / "wrk" / bench.script if bench.script else None
        url = f"http://127.0.0.1:{port}{bench.path}"
        return wrk.command(url, bench.connections, duration_s, script)

    def _warm_up(self, server: RunningServer, bench: Bench) -> None:
        if self.settings.warmup_s:
            wrk.run(self._wrk_argv(server.port, bench, self.settings.warmup_s))

    def _measure(
        self, server: RunningServer, bench: Bench, duration_s: int, *, warm_up: bool
    ) -> Row:
        try:
            if warm_up:
                self._warm_up(server, bench)
            peak = procs.PeakRss(server.proc.pid)
            peak.start()
            cpu_before = procs.group_cpu_seconds(server.proc.pid)
            result = wrk.run(self._wrk_argv(server.port, bench, duration_s), peak)
            cpu_s = procs.group_cpu_seconds(server.proc.pid) - cpu_before
        except RuntimeError as exc:
            return server.row("error", str(exc))
        if server.proc.poll() is not None:
            return server.row("error", f"exited ({server.proc.returncode}) during the run")
        return server.row("ok", wrk=result, peak_rss_kib=peak.peak_kib(), cpu_s=cpu_s)

    def _measure_idle(self, scenario: Scenario, server: RunningServer, bench: Bench) -> Row:
        try:
            self._warm_up(server, bench)
        except RuntimeError as exc:
            return server.row("error", f"warm-up: {exc}")
        rss_before = procs.rss_kib(server.proc.pid)
        helper = procs.spawn(
            [
                sys.executable,
                str(self.bench_dir / "idle_clients.py"),
                "--port",
                str(server.port),
                "--count",
                str(scenario.idle_connections),
                "--open-timeout",
                str(IDLE_OPEN_TIMEOUT_S),
            ],
            stdin=subprocess.PIPE,
            capture_stdout=True,
        )
        try:
            opened = _read_json_line(helper, IDLE_OPEN_TIMEOUT_S + 30.0)
            rss_with_idle = procs.rss_kib(server.proc.pid)
            peak = procs.PeakRss(server.proc.pid)
            peak.start()
            argv = self._wrk_argv(server.port, bench, self.settings.duration_s)
            cpu_before = procs.group_cpu_seconds(server.proc.pid)
            try:
                result: wrk.WrkResult | None = wrk.run(argv, peak)
                error = ""
            except RuntimeError as exc:
                result, error = None, str(exc)
            cpu_s = procs.group_cpu_seconds(server.proc.pid) - cpu_before
            final = _ask_json_line(helper, 30.0)
        finally:
            procs.stop(helper)
        extra = _idle_extra(scenario.idle_connections, opened, final, rss_before, rss_with_idle)
        if result is None:
            return server.row("error", error, extra=extra)
        return server.row("ok", wrk=result, peak_rss_kib=peak.peak_kib(), cpu_s=cpu_s, extra=extra)


def _idle_extra(
    requested: int,
    opened: dict[str, Any],
    final: dict[str, Any],
    rss_before: int,
    rss_with_idle: int,
) -> dict[str, Any]:
    held_after_open = int(opened.get("still_open", 0))
    per_connection = (rss_with_idle - rss_before) / held_after_open if held_after_open else None
    return {
        "idle_requested": requested,
        "idle_after_open": opened,
        "idle_after_measurement": final,
        "held": int(final.get("still_open", 0)),
        "rss_before_kib": rss_before,
        "rss_with_idle_kib": rss_with_idle,
        "kib_per_idle_connection": per_connection,
    }


def _read_json_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The next JSON line the helper prints, or {} if none comes within ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return {}
    line = proc.stdout.readline()
    try:
        data: dict[str, Any] = json.loads(line) if line else {}
    except json.JSONDecodeError:
        return {}
    return data


def _ask_json_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"report\n")
        proc.stdin.flush()
    except BrokenPipeError:
        return {}
    return _read_json_line(proc, timeout)


def _failed_rows(
    server: RunningServer, readiness: procs.Readiness, benches: list[Bench]
) -> list[Row]:
    if readiness.exited_with is not None:
        why = f"exited with status {readiness.exited_with}"
    else:
        why = "did not answer HTTP within 30 s"
    detail = f"{why}; log tail:\n{procs.tail(server.log)}"
    return [server.row("failed to start", detail) for _ in benches]


def _with_probe(row: Row, readiness: procs.Readiness) -> Row:
    """``row``, saying so when the readiness probe got something other than 200."""
    if readiness.status_line and " 200 " not in readiness.status_line + " ":
        probe = f"readiness probe answered {readiness.status_line!r}"
        row.detail = f"{probe}; {row.detail}" if row.detail else probe
    return row


def _print_row(bench: Bench, row: Row) -> None:
    if row.wrk is None:
        lines = row.detail.splitlines() if row.detail else []
        status = lines[0] if row.status == "not available" and lines else row.status
        print(f"    {bench.slug}: {status}", flush=True)
        if row.status != "not available" and lines:
            print(f"        {lines[0]}", flush=True)
        return
    p99 = row.wrk.percentile("99")
    rss = (row.peak_rss_kib or 0) / 1024
    print(
        f"    {bench.slug}: {row.wrk.requests_per_s:,.0f} req/s, p99 {p99} ms, "
        f"errors {row.wrk.error_total}, peak RSS {rss:.1f} MiB",
        flush=True,
    )


def select_scenarios(numbers: list[int] | None, quick: bool) -> list[Scenario]:
    """The scenarios to run: the numbers given, else all (or the quick subset)."""
    if numbers:
        known = {scenario.number: scenario for scenario in SCENARIOS}
        unknown = [number for number in numbers if number not in known]
        if unknown:
            raise SystemExit(f"unknown scenario number(s): {unknown}; known: {sorted(known)}")
        return [known[number] for number in sorted(set(numbers))]
    return [scenario for scenario in SCENARIOS if scenario.in_quick or not quick]
