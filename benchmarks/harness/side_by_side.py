"""Running a list of cases against twistwsgi and its peers side by side, and writing the result.

Owns what ``benchmarks/strictness.py`` and ``benchmarks/app_wire.py`` do alike: their common
command-line options and the choice of servers and cases they make (``--publish`` only with all
of them), one server started, restarted and stopped per run (`Server`), every server run in
parallel in one scratch directory with every process stopped at the end (`run_servers`), the
facts of the run (date, command line, the programs' versions) and the header listing them,
the ``.md`` and ``.json`` written into ``--output``, and the page published into docs. Each
tool keeps its own cases, how it talks to a server and judges what came back, and its table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from benchmarks.harness import environment, procs, servers

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent


class Named(Protocol):
    """A case: what ``--cases`` matches against is its name."""

    @property
    def name(self) -> str:
        """The case's name, as the table shows it."""
        ...


CaseT = TypeVar("CaseT", bound=Named)
OutcomeT = TypeVar("OutcomeT")
RunT = TypeVar("RunT")


# -- the command line ---------------------------------------------------------------------------


def parser(
    *,
    description: str,
    servers: Sequence[str],
    timeout: float,
    publish_help: str,
    port_base: int | None = None,
) -> argparse.ArgumentParser:
    """The options both tools take (``--port-base`` only where ``port_base`` is its default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--servers", help=f"comma-separated, from {', '.join(servers)}")
    parser.add_argument(
        "--cases", help="only the cases whose name contains one of these (comma-separated)"
    )
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds of silence allowed")
    if port_base is not None:
        parser.add_argument(
            "--port-base", type=int, default=port_base, help="the first server's port"
        )
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--project-venv", type=Path, default=REPO / ".venv")
    parser.add_argument("--peers-venv", type=Path, default=BENCH_DIR / ".venv-peers")
    parser.add_argument("--publish", action="store_true", help=publish_help)
    return parser


def chosen(
    args: argparse.Namespace, known: Sequence[str], cases: Sequence[CaseT]
) -> tuple[list[str], list[CaseT]]:
    """The servers and the cases ``--servers`` and ``--cases`` name, in their given order.

    Raises SystemExit for a server not in ``known``, and for ``--publish`` with anything less
    than every case against every server (a published table is the whole table).
    """
    names = [name.strip() for name in (args.servers or ",".join(known)).split(",")]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown server(s): {unknown}; known: {list(known)}")
    wanted = [part for part in (args.cases or "").split(",") if part]
    picked = [case for case in cases if not wanted or any(w in case.name for w in wanted)]
    if args.publish and (args.cases or set(names) != set(known)):
        raise SystemExit("--publish runs every case against every server")
    return names, picked


# -- the servers --------------------------------------------------------------------------------


class Server:
    """One server of a run: started when asked (again, if it exited), stopped at the end."""

    def __init__(
        self,
        launch: servers.Launch,
        port: int,
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/",
    ) -> None:
        self.launch = launch
        self.port = port
        self.log = log
        self.env = {**launch.env, **(env or {})}
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        """Start it unless it runs; None once it answers, or why it did not start."""
        if self.proc is not None and self.proc.poll() is None:
            return None
        self.proc = procs.spawn(
            self.launch.argv, cwd=self.launch.cwd, env=self.env, log_path=self.log
        )
        if procs.wait_until_ready(self.proc, self.port, path=self.ready_path).ready:
            return None
        return f"did not start: {procs.tail(self.log, 5)}"

    def exited(self, wait: float) -> bool:
        """Whether it exited, given ``wait`` seconds (a dying process takes a little while)."""
        if self.proc is None:
            return False
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        """Stop it and its process group, if it was started."""
        if self.proc is not None:
            procs.stop(self.proc, self.launch.stop_signal)


@contextmanager
def launched(
    name: str,
    context: servers.Context,
    target: servers.Target,
    port: int,
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
) -> Iterator[Server | str]:
    """Server ``name`` as the harness launches it, not yet started; or why it does not take part.

    Whatever was started of it is stopped on leaving.
    """
    launch = servers.build(name, context, target, port)
    if not isinstance(launch, servers.Launch):
        yield "does not take part" if launch is None else launch.reason
        return
    server = Server(launch, port, log=log, env=env, ready_path=ready_path)
    try:
        yield server
    finally:
        server.stop()


def tools() -> dict[str, str]:
    """The programs a run may use (or name the version of) that are on PATH."""
    return {tool: path for tool in ("wrk", "nginx") if (path := environment.which(tool))}


def run_servers(
    names: Sequence[str],
    run: Callable[[int, str, servers.Context], RunT],
    *,
    args: argparse.Namespace,
    nginx: str | None,
) -> list[RunT]:
    """``run(index, name, context)`` for every server at once, each in its own thread.

    Returns the runs in the order of ``names`` (none for a server whose thread failed: its
    traceback is on stderr). Every process started is stopped before this returns.
    """
    procs.install_cleanup_handlers()
    runs: dict[str, RunT] = {}
    try:
        with servers.scratch(BENCH_DIR) as scratch:
            context = servers.Context.for_run(
                repo=REPO,
                project_bin=args.project_venv.absolute() / "bin",
                peers_bin=args.peers_venv.absolute() / "bin",
                scratch=scratch,
                nginx=nginx,
            )

            def one(index: int, name: str) -> None:
                runs[name] = run(index, name, context)

            threads = [
                threading.Thread(target=one, args=(index, name)) for index, name in enumerate(names)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        procs.stop_all()
    return [runs[name] for name in names if name in runs]


@dataclass
class ServerRun(Generic[OutcomeT]):
    """What one server did with every case, or why it could not run."""

    name: str
    outcomes: dict[str, OutcomeT]
    unavailable: str | None = None
    command: str = ""
    #: Lines the header shows under the server's command line.
    notes: list[str] = field(default_factory=list)


def results(runs: Sequence[ServerRun[OutcomeT]]) -> dict[str, dict[str, OutcomeT]]:
    """The outcomes of each server that took part, in the order of ``runs``: the table's columns."""
    return {run.name: run.outcomes for run in runs if run.unavailable is None}


# -- what is written ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """When and how the run was made, and with which programs."""

    date: str
    command: str
    timeout: float
    versions: dict[str, str]

    @classmethod
    def of_run(
        cls,
        *,
        script: str,
        argv: Sequence[str],
        args: argparse.Namespace,
        tools: dict[str, str],
        leave_out: Sequence[str],
    ) -> Facts:
        """This run's facts; the versions of the programs in ``leave_out`` are not listed."""
        found = environment.versions(args.project_venv, args.peers_venv, tools)
        return cls(
            date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            command=shlex.join([script, *argv]),
            timeout=args.timeout,
            versions={label: version for label, version in found.items() if label not in leave_out},
        )

    def meta(self) -> dict[str, object]:
        """The facts as the JSON output holds them."""
        return {
            "date": self.date,
            "command": self.command,
            "timeout_s": self.timeout,
            "versions": self.versions,
        }


def header_lines(
    opening: str, versions: Mapping[str, str], runs: Sequence[ServerRun[OutcomeT]]
) -> list[str]:
    """The ``opening`` sentence, the programs' versions, and each server's command or absence."""
    lines = [opening, "", "| program | version |", "| --- | --- |"]
    lines += [f"| {label} | {version} |" for label, version in versions.items()]
    lines.append("")
    for run in runs:
        if run.unavailable is not None:
            lines.append(f"- `{run.name}` did not take part: {run.unavailable}")
        else:
            lines.append(f"- `{run.name}`: `{run.command}`")
            lines += run.notes
    return lines


def write_results(
    output: Path,
    *,
    stem: str,
    title: str,
    page: str,
    facts: Facts,
    results: Mapping[str, Mapping[str, OutcomeT]],
    as_json: Callable[[OutcomeT], dict[str, object]],
) -> None:
    """Write ``{stem}.md`` (``title`` over ``page``) and ``{stem}.json`` into ``output``."""
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{stem}.md").write_text(f"# {title}\n\n" + page)
    raw = {
        name: {key: as_json(outcome) for key, outcome in outcomes.items()}
        for name, outcomes in results.items()
    }
    (output / f"{stem}.json").write_text(
        json.dumps({"meta": facts.meta(), "results": raw}, indent=1)
    )
    print(f"wrote {output / f'{stem}.md'}")


def publish(docs: Path, text: str, *, between: tuple[str, str] | None = None) -> None:
    """Write ``text`` as the whole of ``docs``, or in place of what lies ``between`` two markers.

    Raises ValueError, leaving ``docs`` as it was, when a marker is missing.
    """
    if between is None:
        docs.write_text(text)
    else:
        begin, end = between
        old = docs.read_text()
        start, stop = old.index(begin) + len(begin), old.index(end)
        docs.write_text(old[:start] + "\n\n" + text.rstrip() + "\n\n" + old[stop:])
    print(f"wrote {docs}")
