"""Measure how strict twistwsgi and its peers are on malformed HTTP/1.1, and publish the table.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/strictness.py [--servers twistwsgi,waitress]
        [--cases SUBSTRING] [--timeout S] [--output DIR] [--publish]

Starts each server on 127.0.0.1 with the harness's own launch (``benchmarks/harness/servers.py``)
running the recording application ``benchmarks.apps:record``, and nginx as the reverse proxy the
benchmarks run (``proxy_pass`` with keep-alive) in front of a recording upstream in this process,
since what matters for nginx is what it lets through. Then every request stream of
``tests/request_corpus.py`` (``INVALID`` and ``VALID``) and the smuggling vectors of
``tests/test_differential.py`` goes, as it is written, over a fresh TCP connection to each
server (the servers in parallel, the cases of one server one after the other, so that a call of
the application belongs to the case whose id the marker file held when it began). What came back
is read with a tolerant reader (a peer may answer something h11 refuses, or close), and the
application's own record says what reached it. ``benchmarks/harness/strictness.py`` names each
outcome and writes ``strictness.md`` and ``strictness.json`` into ``--output`` (default
``benchmarks/results``); ``--publish`` writes docs/strictness.md as well. What it does as
``benchmarks/app_wire.py`` does (the options, the servers side by side, the writing and
publishing) is ``benchmarks/harness/side_by_side.py``. Not part of ``make test``: only its
reading and naming are tested (tests/test_strictness_tool.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import h11

from benchmarks.harness import procs, servers, side_by_side
from benchmarks.harness.strictness import (
    TWISTWSGI,
    Call,
    Case,
    Observation,
    Outcome,
    calls_from_record,
    classify,
    read_statuses,
    render,
)
from tests import request_corpus, test_differential

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVERS = (TWISTWSGI, "nginx", "gunicorn-gthread", "waitress", "uwsgi", "granian", "twistd-web")
# After the answers a case should get, a little longer for an answer it should not get.
EXTRA_ANSWER_S = 0.3
# After closing, before the marker moves on: a server that calls the application once the
# client has gone (at the close) still has its call counted for this case.
AFTER_CLOSE_S = 0.1
STATUS_TEXT = {"invalid": "refused", "vector": "refused", "valid": "served"}


def all_cases() -> list[Case]:
    """The corpus's streams as cases: INVALID, the smuggling vectors, VALID."""
    cases = [
        Case("invalid", case.name, case.raw, case.answered_before, case.status, why=case.why)
        for case in request_corpus.INVALID
    ]
    cases += [
        Case("vector", vector.name, vector.raw, vector.answered, vector.status)
        for vector in test_differential.VECTORS
    ]
    cases += [
        Case(
            "valid",
            case.name,
            case.raw,
            len(case.expect),
            bodies=tuple(len(cast(bytes, expect.get("body", b""))) for expect in case.expect),
            why=case.why,
        )
        for case in request_corpus.VALID
    ]
    return cases


# -- one exchange -------------------------------------------------------------------------------


def exchange(port: int, case: Case, timeout: float) -> Observation:
    """Send ``case.raw`` on a fresh connection and read until a close, or the time limit.

    Reading stops early, ``EXTRA_ANSWER_S`` after the answers the case should get (one per
    request the application should see, plus the refusal), so that a server keeping the
    connection open costs no more than that.
    """
    wanted = case.requests + (1 if case.refusal_expected else 0)
    seen = Observation()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # (An error here: the server stopped reading, a refusal under way; read what it said.)
        with contextlib.suppress(OSError):
            sock.sendall(case.raw)
        started = time.monotonic()
        while time.monotonic() - started < 4 * timeout:
            statuses, _ = read_statuses(seen.received)
            finals = [status for status in statuses if status >= 200]
            enough = len(finals) >= wanted
            sock.settimeout(EXTRA_ANSWER_S if enough else timeout)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                seen.timed_out = not enough
                break
            except OSError:
                seen.closed = True
                break
            if not data:
                seen.closed = True
                break
            seen.received += data
        else:
            seen.timed_out = True
    return seen


# -- the recording upstream behind nginx --------------------------------------------------------


_UNPARSABLE_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class _RecordingHandler(socketserver.BaseRequestHandler):
    """One upstream connection from nginx: each request it forwards is recorded, then 200."""

    server: _RecordingUpstream

    def handle(self) -> None:
        connection = h11.Connection(h11.SERVER)
        method, path, query, body_len = "", "", "", 0
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                # nginx forwarded something h11 refuses: it got through. Answer, so
                # that nginx does not try again (and the call counts once).
                self.server.write({"case": self.server.marker(), "method": "(unparsable)"})
                with contextlib.suppress(OSError):
                    self.request.sendall(_UNPARSABLE_ANSWER)
                return
            if event is h11.NEED_DATA:
                try:
                    data = self.request.recv(65536)
                except OSError:
                    return
                connection.receive_data(data)
                if not data:
                    return
            elif isinstance(event, h11.Request):
                method = event.method.decode("latin-1")
                path, _, query = event.target.decode("latin-1").partition("?")
                # As PATH_INFO shows it to an application (PEP 3333: decoded).
                path = urllib.parse.unquote(path, encoding="latin-1")
                body_len = 0
            elif isinstance(event, h11.Data):
                body_len += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.server.write(
                    {
                        "case": self.server.marker(),
                        "method": method,
                        "path": path,
                        "query": query,
                        "body_len": body_len,
                    }
                )
                headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]
                out = connection.send(h11.Response(status_code=200, headers=headers))
                if method != "HEAD":
                    out = (out or b"") + (connection.send(h11.Data(data=b"ok")) or b"")
                out += connection.send(h11.EndOfMessage()) or b""
                self.request.sendall(out)
                if connection.our_state is not h11.DONE:
                    return
                try:
                    connection.start_next_cycle()
                except h11.LocalProtocolError:
                    return
            else:  # ConnectionClosed
                return


class _RecordingUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, record: Path, marker_file: Path) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.record = record
        self.marker_file = marker_file
        self.lock = threading.Lock()

    def marker(self) -> str:
        return self.marker_file.read_text().strip()

    def write(self, entry: dict[str, object]) -> None:
        with self.lock, self.record.open("a") as out:
            out.write(json.dumps(entry) + "\n")


# -- one server ---------------------------------------------------------------------------------


@dataclass
class ServerRun(side_by_side.ServerRun[Outcome]):
    """What one server did with every case, or why it could not run."""

    config: str = ""  # nginx.conf, as the harness wrote it


def _calls(record: Path) -> dict[str, list[Call]]:
    if not record.exists():
        return {}
    return calls_from_record(record.read_text().splitlines())


@contextmanager
def _launched(
    name: str, context: servers.Context, directory: Path
) -> Iterator[side_by_side.Server | str]:
    """Start server ``name`` recording into ``directory``; yield it, or why not."""
    record, marker = directory / "record.jsonl", directory / "case"
    marker.write_text("startup")
    with contextlib.ExitStack() as stack:
        if name == "nginx":
            upstream = _RecordingUpstream(record, marker)
            threading.Thread(target=upstream.serve_forever, daemon=True).start()
            stack.callback(upstream.server_close)
            stack.callback(upstream.shutdown)
            target = servers.Target("proxy", upstream_port=upstream.server_address[1])
        else:
            target = servers.Target("wsgi", app="record")
        env = {"STRICTNESS_RECORD": str(record), "STRICTNESS_CASE": str(marker)}
        launched = side_by_side.launched(
            name, context, target, procs.free_port(), log=directory / "server.log", env=env
        )
        server = stack.enter_context(launched)
        if isinstance(server, str):
            yield server
        else:
            yield server.start() or server


def run_server(
    name: str, context: servers.Context, cases: Sequence[Case], timeout: float
) -> ServerRun:
    """Send every case to server ``name``, one connection after the other."""
    directory = context.scratch / f"strictness-{name}"
    directory.mkdir()
    seen: dict[str, Observation] = {}
    with _launched(name, context, directory) as server:
        if isinstance(server, str):
            return ServerRun(name, {}, unavailable=server)
        marker = directory / "case"
        for case in cases:
            marker.write_text(case.key)
            try:
                seen[case.key] = exchange(server.port, case, timeout)
            except OSError as error:
                seen[case.key] = Observation(closed=True, received=str(error).encode())
            time.sleep(AFTER_CLOSE_S)  # (not a readiness guess: see AFTER_CLOSE_S)
            marker.write_text("between")
    calls = _calls(directory / "record.jsonl")
    outcomes = {}
    for case in cases:
        observation = seen[case.key]
        observation.calls = calls.get(case.key, [])
        outcomes[case.key] = classify(case, observation)
    print(f"{name}: {len(cases)} cases done", flush=True)
    unattributed = len(calls.get("between", []))
    notes = [f"  ({unattributed} application calls began between two cases and are not counted.)"]
    return ServerRun(
        name,
        outcomes,
        command=server.launch.display(context),
        notes=notes if unattributed else [],
        config=server.launch.files.get("nginx.conf", ""),
    )


# -- the page -----------------------------------------------------------------------------------

_DOCS_INTRO = """\
# How strict, compared

twistwsgi means to be stricter on malformed HTTP/1.1 than the servers its users run
today. This page measures it: every request of its request corpus
(`tests/request_corpus.py`, the invalid requests with the refusal RFC 9110 and RFC 9112
call for and the valid ones, each with its reason) and the classic smuggling vectors of
`tests/test_differential.py` went, byte for byte as written, over a fresh connection to
twistwsgi and to each peer, with an application that records every call it gets.
nginx runs as the reverse proxy of the benchmarks, in front of a recording upstream:
what counts for nginx is what it lets through to the application behind it.

A cell says what happened: `refused 400` (an error status, and the application saw
nothing), `app: GET / len 5` (the application got the request: method, decoded path,
body length), `app x2 (desync)` (the application got another number of requests than
the bytes hold: the framing difference request smuggling exploits, RFC 9112 §11.2),
`body unread` where the application was called but its read of the body never ended
(the server failed the read, or kept it waiting for bytes that never came), `app called,
body refused 413` (the application was called with the head, then its body read failed
and the client got the error status: a server that streams bodies refuses this way, as
twistwsgi does once 64 KiB of a body too large are in; the summary counts these among the
refusals, and says how many), `(body sent: 5)` after a valid request whose body the
application did not get as sent, `no answer` (closed without a status) or `timeout`
(neither an answer nor a close within the time limit). In a pipelined case the valid
requests before the bad one are expected to reach the application; only the bad one
counts.

Where a peer refuses an invalid request that twistwsgi lets through, or serves a valid
one every peer serves and twistwsgi refuses, the page lists it under "Where a peer is
stricter": each such case is decided by the RFCs and, where twistwsgi is wrong, fixed
with the case added to the corpus. The first run found one: `3;a=`, a chunk extension
with an empty value (RFC 9112 §7.1.1 has a token or a quoted string after `=`), which
gunicorn and waitress refuse and llhttp takes; twistwsgi refuses it since, with the
other extensions llhttp takes and the grammar does not. "Refused by twistwsgi alone"
lists what twistwsgi refuses and every peer lets through: decisions
[HTTP behaviour](http.md#what-is-refused) explains, such as methods llhttp does not know.

Generated by `benchmarks/strictness.py --publish`; nothing below is typed in by hand. To
run it again, from the repository, with the peers installed as for the benchmarks
([benchmarks](benchmarks.md): nginx, and `benchmarks/.venv-peers`):
`PYTHONPATH=$PWD .venv/bin/python benchmarks/strictness.py --publish` (a few minutes;
without `--publish`, the page and its JSON go to `benchmarks/results/`).
"""


def _header(facts: side_by_side.Facts, runs: Sequence[ServerRun]) -> str:
    """The run's facts: when, how, the programs' versions, each server's command line."""
    lines = side_by_side.header_lines(
        f"Run {facts.date} with `{facts.command}`, each server with its own defaults (the launch"
        f" of `benchmarks/harness/servers.py`), a {facts.timeout:g} s time limit per read.",
        facts.versions,
        runs,
    )
    for run in runs:
        if run.config:
            config = re.sub(r"(?m)^\s*\n", "", run.config).rstrip()
            lines += ["", f"`{run.name}`'s configuration:", "", "```nginx", config, "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; see the module docstring."""
    return side_by_side.parser(
        description="How strict twistwsgi and its peers are.",
        servers=SERVERS,
        timeout=2.0,
        publish_help="write docs/strictness.md too",
    ).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every case against every server, write the report; stop every process started."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names, cases = side_by_side.chosen(args, SERVERS, all_cases())
    tools = side_by_side.tools()
    runs = side_by_side.run_servers(
        names,
        lambda _, name, context: run_server(name, context, cases, args.timeout),
        args=args,
        nginx=tools.get("nginx"),
    )
    facts = side_by_side.Facts.of_run(
        script="benchmarks/strictness.py",
        argv=argv,
        args=args,
        tools=tools,
        leave_out=("wrk", "matplotlib"),
    )
    header = _header(facts, runs)
    results = side_by_side.results(runs)
    page = render(cases, results, servers=list(results), header=header)
    side_by_side.write_results(
        args.output,
        stem="strictness",
        title="How strict, compared",
        page=page,
        facts=facts,
        results=results,
        as_json=lambda outcome: asdict(outcome) | {"verdict": outcome.verdict.value},
    )
    if args.publish:
        side_by_side.publish(REPO / "docs" / "strictness.md", _DOCS_INTRO + "\n" + page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
