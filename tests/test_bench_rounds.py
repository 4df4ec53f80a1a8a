"""The benchmark harness's interleaved rounds (benchmarks/harness), driven with fakes.

No server, no wrk and no clock: the runner's launcher, readiness poll, memory sampler, stop and
wrk are replaced by fakes that record what the runner asks for, in order, and answer from a
script. What is checked is the plan (who starts when, who is measured in which order, for how
long, with which warm-ups, who is stopped) and the arithmetic of a row (median, error sum, peak,
spread), then how the report shows it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from benchmarks.harness import procs, report, scenarios, servers, wrk
from benchmarks.harness.scenarios import Bench, Row, Scenario
from benchmarks.harness.servers import Launch, Target, Unavailable


def _result(rps: float, *, p99: float = 1.0, errors: int = 0) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests_per_s=rps,
        requests=int(rps) * 4,
        duration_s=4.0,
        percentiles_ms={"50": p99 / 2, "99": p99},
        errors={"connect": 0, "read": errors, "write": 0, "timeout": 0, "non_2xx_3xx": 0},
    )


def _ok(rps: float, *, p99: float = 1.0, errors: int = 0, rss: int = 1000) -> Row:
    return Row("a", "run a", "ok", wrk=_result(rps, p99=p99, errors=errors), peak_rss_kib=rss)


# -- the arithmetic of rounds -------------------------------------------------------------------


def test_a_round_is_the_duration_split_in_whole_seconds_at_least_two() -> None:
    assert scenarios.round_seconds(10, 3) == 4
    assert scenarios.round_seconds(10, 2) == 5
    assert scenarios.round_seconds(3, 3) == 2
    # One round is one window of the whole duration, however short.
    assert scenarios.round_seconds(10, 1) == 10
    assert scenarios.round_seconds(1, 1) == 1


def test_each_round_starts_with_the_next_server() -> None:
    names = ["a", "b", "c"]
    orders = [scenarios.round_order(names, index) for index in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert scenarios.round_order([], 2) == []


def test_a_row_is_the_median_round_with_its_own_latency() -> None:
    row = scenarios.combine_rounds([_ok(300, p99=3), _ok(100, p99=9), _ok(200, p99=5)])
    assert row.wrk is not None
    assert row.wrk.requests_per_s == 200
    assert row.wrk.percentiles_ms == {"50": 2.5, "99": 5}
    assert row.spread_rps == (100.0, 300.0)
    assert [entry["requests_per_s"] for entry in row.rounds] == [300, 100, 200]


def test_with_an_even_count_the_median_is_the_lower_middle_round() -> None:
    row = scenarios.combine_rounds([_ok(400), _ok(100), _ok(300), _ok(200)])
    assert row.wrk is not None
    assert row.wrk.requests_per_s == 200
    two = scenarios.combine_rounds([_ok(500), _ok(100)])
    assert two.wrk is not None
    assert two.wrk.requests_per_s == 100


def test_errors_are_summed_over_every_round_and_peak_rss_is_the_highest() -> None:
    # The errors come from rounds other than the median one, which has none.
    rounds = [_ok(100, errors=2, rss=900), _ok(200, rss=700), _ok(300, errors=5, rss=800)]
    row = scenarios.combine_rounds(rounds)
    assert row.wrk is not None
    assert row.wrk.requests_per_s == 200
    assert row.wrk.errors["read"] == 7
    assert row.wrk.error_total == 7
    assert row.peak_rss_kib == 900
    assert row.to_json()["wrk"]["error_total"] == 7


def test_a_failed_round_makes_the_row_that_failure() -> None:
    failed = Row("a", "run a", "error", "wrk exited with status 1")
    row = scenarios.combine_rounds([_ok(100), failed])
    assert row.status == "error"
    assert row.wrk is None
    assert row.detail == "round 2: wrk exited with status 1"
    assert len(row.rounds) == 2


def test_only_the_idle_and_several_processes_scenarios_keep_one_window() -> None:
    single = {
        scenario.number
        for scenario in scenarios.SCENARIOS
        if scenarios.single_window_reason(scenario) is not None
    }
    assert single == {7, 8}


# -- CPU time from /proc ---------------------------------------------------------------------


def _times_total(times: os.times_result) -> float:
    return times.user + times.system + times.children_user + times.children_system


#: A child that works until its own CPU clock (not the wall clock) says 0.2 s, half of it in
#: the kernel (copying from /dev/zero), then says so and waits for its stdin to close.
BURN_CPU = (
    "import os, sys, time\n"
    "zero = os.open('/dev/zero', os.O_RDONLY)\n"
    "while time.process_time() < 0.2: os.read(zero, 1 << 20)\n"
    "print('done', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_a_process_cpu_time_is_what_the_kernel_reports_with_its_reaped_childrens() -> None:
    subprocess.run([sys.executable, "-c", BURN_CPU], input=b"", capture_output=True, check=True)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    before = os.times()
    own = procs._cpu_ticks(os.getpid()) * tick
    after = os.times()
    # The reaped child's user and system time are the parent's now (proc(5) cutime, cstime).
    assert before.children_user > 0 and before.children_system > 0
    assert _times_total(before) - tick <= own <= _times_total(after) + tick


def test_a_group_cpu_time_counts_its_live_descendants() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURN_CPU], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"done\n"
        own = procs._cpu_ticks(os.getpid()) / os.sysconf("SC_CLK_TCK")
        group = procs.group_cpu_seconds(os.getpid())
    finally:
        child.communicate(b"")
    assert group - own >= 0.2 - 2 / os.sysconf("SC_CLK_TCK")


# -- the runner, with fake servers and a fake wrk --------------------------------------------


@dataclass
class FakeProc:
    """Stands for a started server: alive until stopped."""

    name: str
    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


@dataclass
class Lab:
    """The fakes' shared record of events, and their scripts.

    ``rates`` gives each server's req/s per measurement, in order; ``fail_start`` servers exit
    before they answer; ``wrk_failures`` maps (server, measurement number from 1) to the
    exception wrk raises then.
    """

    rates: dict[str, list[float]]
    fail_start: set[str] = field(default_factory=set)
    wrk_failures: dict[tuple[str, int], BaseException] = field(default_factory=dict)
    events: list[tuple[str, ...]] = field(default_factory=list)
    ports: dict[int, str] = field(default_factory=dict)
    measured: dict[str, int] = field(default_factory=dict)
    next_port: int = 20000
    cpu_clock: float = 0.0

    def free_port(self) -> int:
        self.next_port += 1
        return self.next_port

    def build(
        self, name: str, _context: servers.Context, _target: Target, port: int
    ) -> Launch | Unavailable | None:
        if name == "absent":
            return None
        self.ports[port] = name
        return Launch([f"serve-{name}", str(port)], Path("/"))

    def spawn(self, argv: list[str], **_options: Any) -> subprocess.Popen[bytes]:
        name = self.ports[int(argv[1])]
        self.events.append(("start", name))
        return cast("subprocess.Popen[bytes]", FakeProc(name, int(argv[1])))

    def wait_until_ready(
        self, proc: subprocess.Popen[bytes], _port: int, _path: str = "/"
    ) -> procs.Readiness:
        name = cast(FakeProc, proc).name
        if name in self.fail_start:
            cast(FakeProc, proc).returncode = 3
            return procs.Readiness(exited_with=3)
        return procs.Readiness(status_line="HTTP/1.1 200 OK")

    def stop(self, proc: subprocess.Popen[bytes], _sig: int = 0) -> int | None:
        fake = cast(FakeProc, proc)
        self.events.append(("stop", fake.name))
        fake.returncode = 0
        return 0

    def cpu_seconds(self, _leader: int) -> float:
        """Every server's CPU clock: the fake wrk moves it on by each measurement's number."""
        return self.cpu_clock

    def run_wrk(self, argv: list[str], peak: procs.PeakRss | None = None) -> wrk.WrkResult:
        name = self.ports[int(argv[-1].split(":")[2].split("/")[0])]
        seconds = next(arg for arg in argv if arg.startswith("-d"))
        connections = next(arg for arg in argv if arg.startswith("-c"))
        if peak is None:
            self.events.append(("warm-up", name, connections, seconds))
            return _result(1)
        self.events.append(("measure", name, connections, seconds))
        count = self.measured[name] = self.measured.get(name, 0) + 1
        failure = self.wrk_failures.get((name, count))
        if failure is not None:
            raise failure
        cast(FakePeak, peak).kib = 1000 * count
        self.cpu_clock += count
        return _result(self.rates[name][count - 1], errors=count % 2)


class FakePeak:
    """Stands for the memory sampler: reports what the fake wrk sets."""

    def __init__(self, _leader: int) -> None:
        self.kib = 0

    def start(self) -> None:
        pass

    def peak_kib(self) -> int:
        return self.kib


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Lab:
    lab = Lab(rates={})
    monkeypatch.setattr(procs, "free_port", lab.free_port)
    monkeypatch.setattr(servers, "build", lab.build)
    monkeypatch.setattr(procs, "spawn", lab.spawn)
    monkeypatch.setattr(procs, "wait_until_ready", lab.wait_until_ready)
    monkeypatch.setattr(procs, "stop", lab.stop)
    monkeypatch.setattr(procs, "PeakRss", FakePeak)
    monkeypatch.setattr(procs, "group_cpu_seconds", lab.cpu_seconds)
    monkeypatch.setattr(wrk, "run", lab.run_wrk)
    return lab


TWO_BENCHES = (Bench("many", "many", 50), Bench("one", "one", 1))


def _scenario(names: tuple[str, ...], *, workers: int = 1) -> Scenario:
    return Scenario(
        1, "hello", "Hello", "says hello", Target("wsgi", workers=workers), names, TWO_BENCHES
    )


def bare_context(tmp_path: Path) -> servers.Context:
    """A run's context with every path at ``tmp_path``, and no nginx."""
    return servers.Context(
        repo=tmp_path,
        project_bin=tmp_path,
        peers_bin=tmp_path,
        app_root=tmp_path,
        scratch=tmp_path,
        nginx=None,
        twistwsgi_help=None,
    )


def _runner(tmp_path: Path, names: tuple[str, ...], rounds: int) -> scenarios.Runner:
    context = bare_context(tmp_path)
    settings = scenarios.Settings(
        duration_s=10,
        warmup_s=1,
        quick=False,
        servers=names,
        output=tmp_path,
        rounds=rounds,
    )
    return scenarios.Runner(context, settings, tmp_path)


def _rows(result: dict[str, Any], bench: int = 0) -> dict[str, dict[str, Any]]:
    return {row["server"]: row for row in result["benches"][bench]["rows"]}


def test_rounds_start_every_server_then_take_turns_in_a_rotating_order(
    lab: Lab, tmp_path: Path
) -> None:
    names = ("a", "b", "c", "d")
    lab.rates = {name: [100.0, 300.0, 200.0, 110.0, 330.0, 220.0] for name in names}
    lab.fail_start = {"c"}
    result = _runner(tmp_path, names, 3).run(_scenario(names))

    # Every server starts before the first measurement; the one that failed is stopped at once.
    assert lab.events[:6] == [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("stop", "c"),
        ("start", "d"),
        ("warm-up", "a", "-c50", "-d1s"),
    ]
    runs = [event for event in lab.events if event[0] in ("warm-up", "measure")]
    order = [(event[0][0], event[1], event[2]) for event in runs]
    first_round = [
        ("w", "a", "-c50"), ("m", "a", "-c50"),
        ("w", "b", "-c50"), ("m", "b", "-c50"),
        ("w", "d", "-c50"), ("m", "d", "-c50"),
        ("w", "a", "-c1"), ("m", "a", "-c1"),
        ("w", "b", "-c1"), ("m", "b", "-c1"),
        ("w", "d", "-c1"), ("m", "d", "-c1"),
    ]  # fmt: skip
    later_rounds = [
        ("m", "b", "-c50"), ("m", "d", "-c50"), ("m", "a", "-c50"),
        ("m", "b", "-c1"), ("m", "d", "-c1"), ("m", "a", "-c1"),
        ("m", "d", "-c50"), ("m", "a", "-c50"), ("m", "b", "-c50"),
        ("m", "d", "-c1"), ("m", "a", "-c1"), ("m", "b", "-c1"),
    ]  # fmt: skip
    assert order == first_round + later_rounds
    assert {event[3] for event in runs if event[0] == "measure"} == {"-d4s"}
    # Then every server still running is stopped, once.
    assert sorted(event[1] for event in lab.events if event[0] == "stop") == ["a", "b", "c", "d"]
    assert lab.events[-3:] == [("stop", "d"), ("stop", "b"), ("stop", "a")]

    assert result["rounds"] == 3
    assert "-d4s" in result["benches"][0]["wrk_command"]
    rows = _rows(result)
    assert list(rows) == ["a", "b", "c", "d"]
    assert rows["c"]["status"] == "failed to start"
    # Bench "many" is measurements 1, 3 and 5 of each server: 100, 200 and 330 req/s.
    assert rows["a"]["wrk"]["requests_per_s"] == 200.0
    assert rows["a"]["spread_rps"] == [100.0, 330.0]
    assert rows["a"]["wrk"]["error_total"] == 3  # one error in each odd-numbered measurement
    assert rows["a"]["peak_rss_kib"] == 5000
    # The median round's own CPU time: measurement 3's (the clock moved on by 3 during it).
    assert rows["a"]["cpu_s"] == 3.0
    assert _rows(result, 1)["a"]["wrk"]["requests_per_s"] == 220.0


def test_every_started_server_is_stopped_when_the_rounds_are_interrupted(
    lab: Lab, tmp_path: Path
) -> None:
    names = ("a", "b", "c")
    lab.rates = {name: [100.0] * 6 for name in names}
    lab.wrk_failures = {("b", 3): KeyboardInterrupt()}
    with pytest.raises(KeyboardInterrupt):
        _runner(tmp_path, names, 3).run(_scenario(names))
    assert sorted(event[1] for event in lab.events if event[0] == "stop") == ["a", "b", "c"]
    assert lab.events[-1] == ("stop", "a")


def test_a_round_that_fails_ends_that_servers_rounds_of_the_bench(lab: Lab, tmp_path: Path) -> None:
    names = ("a", "b")
    lab.rates = {name: [100.0] * 6 for name in names}
    lab.wrk_failures = {("b", 3): RuntimeError("wrk exited with status 1")}
    result = _runner(tmp_path, names, 3).run(_scenario(names))
    rows = _rows(result)
    assert rows["b"]["status"] == "error"
    assert rows["b"]["detail"] == "round 2: wrk exited with status 1"
    assert rows["a"]["status"] == "ok"
    measured_b = [event[2] for event in lab.events if event[:2] == ("measure", "b")]
    # Rounds 1 and 2 of bench "many" (the second failed), all three of bench "one".
    assert measured_b == ["-c50", "-c1", "-c50", "-c1", "-c1"]


def test_a_scenario_that_cannot_be_split_keeps_one_window_per_server(
    lab: Lab, tmp_path: Path
) -> None:
    names = ("a", "b", "absent")
    lab.rates = {name: [100.0, 200.0] for name in names}
    result = _runner(tmp_path, names, 3).run(_scenario(names, workers=2))
    assert [event[:2] for event in lab.events] == [
        ("start", "a"),
        ("warm-up", "a"),
        ("measure", "a"),
        ("warm-up", "a"),
        ("measure", "a"),
        ("stop", "a"),
        ("start", "b"),
        ("warm-up", "b"),
        ("measure", "b"),
        ("warm-up", "b"),
        ("measure", "b"),
        ("stop", "b"),
    ]
    assert {event[3] for event in lab.events if event[0] == "measure"} == {"-d10s"}
    assert result["rounds"] == 1
    assert "-d10s" in result["benches"][0]["wrk_command"]
    assert any("one 10 s window" in note for note in result["notes"])
    assert _rows(result)["a"]["spread_rps"] is None


def test_one_round_keeps_one_window_per_server_without_a_note(lab: Lab, tmp_path: Path) -> None:
    names = ("a", "b")
    lab.rates = {name: [100.0, 200.0] for name in names}
    result = _runner(tmp_path, names, 1).run(_scenario(names))
    assert [event[:2] for event in lab.events][:6] == [
        ("start", "a"),
        ("warm-up", "a"),
        ("measure", "a"),
        ("warm-up", "a"),
        ("measure", "a"),
        ("stop", "a"),
    ]
    assert result["notes"] == []
    assert result["rounds"] == 1


# -- the report ------------------------------------------------------------------------------


def _report_row(server: str, rps: float, spread: tuple[float, float] | None) -> dict[str, Any]:
    # Over wrk's 4 s: 60 µs of CPU per request (4 x rps requests); 1.14 cores for 19,000 req/s.
    cpu_s = rps * 4 * 60e-6
    row = Row(server, f"run {server}", "ok", wrk=_result(rps), peak_rss_kib=2048, cpu_s=cpu_s)
    row.spread_rps = spread
    return row.to_json()


def _report(rounds: int, single: int | None = None) -> dict[str, Any]:
    spread = (18_100.0, 19_900.0) if rounds > 1 else None
    rows = [_report_row("twistwsgi", 19_000, spread), _report_row("nginx", 38_000, spread)]
    bench = {"slug": "many", "title": "Many", "wrk_command": "wrk", "rows": rows}
    scenario_list = [
        {
            "number": 1,
            "slug": "hello",
            "title": "Hello",
            "description": "",
            "notes": [],
            "rounds": rounds,
            "benches": [bench],
        }
    ]
    if single is not None:
        scenario_list.append({**scenario_list[0], "number": single, "rounds": 1})
    meta = {
        "date": "today",
        "mode": "full",
        "duration_s": 10,
        "warmup_s": 2,
        "rounds": rounds,
        "round_s": scenarios.round_seconds(10, rounds),
        "elapsed_s": 60,
        "command": "python benchmarks/run.py",
        "machine": {"nproc": 2, "cpu_model": "cpu", "kernel": "linux", "memory": "4G"},
        "versions": {},
    }
    return {"meta": meta, "scenarios": scenario_list}


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_the_report_shows_the_spread_of_the_rounds(tmp_path: Path) -> None:
    text = report.render(_report(3), tmp_path)
    header, twistwsgi, nginx = _table_lines(text)
    assert header.startswith("| server | command | req/s | spread | p50 |")
    assert "| 19,000 | 18.1k-19.9k |" in twistwsgi
    assert "| 2.0 MiB | 60.0 µs | 1.14 |" in twistwsgi
    # The ratio is of the median rounds.
    assert nginx.endswith("| 0.50 |")
    assert (
        "3 interleaved rounds of 4 s per server after a 2 s warm-up; the row is the median "
        "round, `spread` the range of the rounds; the run took 60 s" in text
    )
    assert "servers one at a time" not in text


def test_the_report_has_no_spread_column_for_one_round(tmp_path: Path) -> None:
    text = report.render(_report(1), tmp_path)
    header, _, _ = _table_lines(text)
    assert "spread" not in text
    assert header.startswith("| server | command | req/s | p50 |")
    assert "10 s per measurement after a 2 s warm-up, servers one at a time" in text


def test_the_report_says_which_scenarios_kept_one_window(tmp_path: Path) -> None:
    text = report.render(_report(3, single=8), tmp_path)
    assert (
        "the range of the rounds (scenario 8: 10 s per measurement after a 2 s warm-up, "
        "servers one at a time)" in text
    )
    tables = "\n".join(_table_lines(text))
    assert tables.count("| spread |") == 1


# -- the command line and the published page -------------------------------------------------


def _run_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """benchmarks/run.py, imported as the script runs it (its folder first on sys.path)."""
    root = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_run", root / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_runs_default_to_three_rounds_and_quick_runs_to_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = _run_module(monkeypatch)
    assert run.rounds_of(run.parse_args([])) == 3
    assert run.rounds_of(run.parse_args(["--quick"])) == 1
    assert run.rounds_of(run.parse_args(["--quick", "--rounds", "2"])) == 2
    with pytest.raises(SystemExit):
        run.parse_args(["--rounds", "0"])


def test_the_published_page_starts_with_the_generators_intro(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/benchmarks.md is written by ``run.py --publish``: its hand-kept copy of the intro
    must say what the generator would write.
    """
    run = _run_module(monkeypatch)
    page = (Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md").read_text()
    assert page.startswith(run._DOCS_INTRO)
