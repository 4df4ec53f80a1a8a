"""How strict each server is on one request stream: reading what came back, naming it, the table.

Pure logic for ``benchmarks/strictness.py``, with no sockets and no processes, so that
``tests/test_strictness_tool.py`` can check it. A :class:`Case` is one stream of bytes from
``tests/request_corpus.py`` or ``tests/test_differential.py``; an :class:`Observation` is what a
server did with it (the bytes it answered, whether it closed, the calls the recording application
saw, read by :func:`calls_from_record`). :func:`classify` turns the two into an
:class:`Outcome`: refused, passed to the application, passed as another number of requests
than the stream holds (a desync, RFC 9112 11.2), passed with other bodies than were sent, no
answer, or a timeout. :func:`render` writes the Markdown page: a summary per server, what
twistwsgi lets through that a peer refuses (and the reverse for valid requests), then one table
per group.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

TWISTWSGI = "twistwsgi"
GROUPS = {
    "invalid": "Invalid requests (`INVALID` in tests/request_corpus.py)",
    "vector": "Smuggling vectors (`VECTORS` in tests/test_differential.py)",
    "valid": "Valid requests (`VALID` in tests/request_corpus.py)",
}
PATH_WIDTH = 24


@dataclass(frozen=True)
class Case:
    """One stream of request bytes and what twistwsgi's corpus says of it.

    Attributes:
        group: ``invalid`` or ``vector`` (to be refused) or ``valid`` (to be served).
        name: the corpus's slug.
        raw: every byte the client sends, on one fresh connection.
        requests: how many requests the application should see: the valid ones pipelined
            before the bad one for a refusal, every request for a valid case.
        status: the refusal twistwsgi's corpus requires (``None`` for a valid case).
        bodies: for a valid case, the body length of each request.
        why: the corpus's one-line reason.
    """

    group: str
    name: str
    raw: bytes
    requests: int
    status: int | None = None
    bodies: tuple[int, ...] = ()
    why: str = ""

    @property
    def key(self) -> str:
        """The case's id, unique over the groups (the recording app's marker)."""
        return f"{self.group}:{self.name}"

    @property
    def refusal_expected(self) -> bool:
        """Whether the corpus says the stream must be refused."""
        return self.group != "valid"


@dataclass(frozen=True)
class Call:
    """One call of the recording application (or, behind nginx, one upstream request).

    ``body_len`` is ``None`` when the application's read of the body never ended (the
    server failed it, or it was still waiting when the server stopped).
    """

    method: str
    path: str
    body_len: int | None

    def describe(self) -> str:
        """``GET /path len 5``, the path escaped and cut to fit a table cell."""
        if self.method == "(unparsable)":
            return "(a request h11 refuses)"
        path = "".join(ch if 0x20 < ord(ch) < 0x7F else f"\\x{ord(ch):02x}" for ch in self.path)
        if len(path) > PATH_WIDTH:
            path = path[: PATH_WIDTH - 1] + "…"
        body = "body unread" if self.body_len is None else f"len {self.body_len}"
        return f"{self.method} {path or '(empty)'} {body}"


def calls_from_record(lines: Iterable[str]) -> dict[str, list[Call]]:
    """The calls each case caused, from the JSON lines the application wrote.

    ``benchmarks.apps:record`` writes a ``call`` line as a call begins and a ``read``
    line, with the same ``call`` id, once its body is read: a call whose read never
    ended (the server failed it, or kept it waiting) still counts, with no body
    length. The upstream behind nginx writes each request once, whole.
    """
    calls: dict[str, list[Call]] = {}
    began: dict[str, tuple[str, int]] = {}  # call id -> (case, index in calls[case])
    for line in lines:
        entry = json.loads(line)
        event = entry.get("event")
        if event == "read":
            case, index = began[entry["call"]]
            calls[case][index] = replace(calls[case][index], body_len=int(entry["body_len"]))
            continue
        path = entry.get("path", "")
        if entry.get("query"):
            path += "?" + entry["query"]
        body_len = None if event == "call" else int(entry.get("body_len", 0))
        made = calls.setdefault(entry["case"], [])
        if event == "call":
            began[entry["call"]] = (entry["case"], len(made))
        made.append(Call(entry.get("method", "?"), path, body_len))
    return calls


@dataclass
class Observation:
    """What one server did with one case.

    Attributes:
        received: every byte the server sent back.
        closed: the server closed the connection (or reset it).
        timed_out: the server neither answered fully nor closed before the time limit.
        calls: the application calls the case caused, in order.
    """

    received: bytes = b""
    closed: bool = False
    timed_out: bool = False
    calls: list[Call] = field(default_factory=list)


class Verdict(enum.Enum):
    """How a server treated a case, from the request's side."""

    REFUSED = "refused"  # an error status, and nothing (more) reached the application
    # The application was called with the head, its body read failed, and the client got an
    # error status: a refusal, after the application ran (servers that stream bodies).
    REFUSED_IN_BODY = "refused in the body"
    PASSED = "passed"  # the application saw what the stream holds
    DESYNC = "desync"  # the application saw another number of requests than were sent
    OTHER_BODY = "other body"  # as many requests, but not the bodies sent
    NO_ANSWER = "no answer"  # closed without an error status, nothing reached the application
    TIMEOUT = "timeout"  # still open and silent at the time limit


_REFUSALS = (Verdict.REFUSED, Verdict.REFUSED_IN_BODY)


@dataclass(frozen=True)
class Outcome:
    """A :class:`Verdict` and the table cell that says it."""

    verdict: Verdict
    text: str
    status: int | None = None  # the refusal's status


# -- reading what came back ---------------------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})[^\r\n]*\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding[ \t]*:.*chunked")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def _skip_chunked(data: bytes, pos: int) -> int | None:
    """The position after a chunked body starting at ``pos``, or None if it is cut short."""
    while True:
        line_end = data.find(b"\n", pos)
        if line_end < 0:
            return None
        size_text = data[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return None
        pos = line_end + 1
        if size == 0:
            trailer_end = _HEAD_END.search(data, pos - 2)
            return None if trailer_end is None else trailer_end.end()
        pos += size + 2
        if pos > len(data):
            return None


def read_statuses(data: bytes) -> tuple[list[int], bool]:
    """The statuses of the responses in ``data``, 1xx included, and whether junk followed.

    A tolerant reader, not a validating one: a peer may answer in a way h11 would refuse,
    and what matters here is which status it meant. A body is skipped by its
    ``Content-Length`` or chunks; a response with neither ends the reading (its body runs
    to the close). A body-less answer to ``HEAD`` is recognised by the next status line
    following its head where its ``Content-Length`` says a body would start.
    """
    statuses: list[int] = []
    pos = 0
    while pos < len(data):
        match = _STATUS_LINE.match(data, pos)
        if match is None:
            return statuses, True
        status = int(match.group(1))
        statuses.append(status)
        end = _HEAD_END.search(data, match.start())
        if end is None:
            return statuses, False
        head = data[match.start() : end.start()]
        pos = end.end()
        if 100 <= status < 200 or status in (204, 304):
            continue
        length = _CONTENT_LENGTH.search(head)
        if _CHUNKED.search(head) is not None:
            after = _skip_chunked(data, pos)
            if after is None:
                return statuses, False
            pos = after
        elif length is not None:
            after_body = pos + int(length.group(1))
            headless = (
                _STATUS_LINE.match(data, pos) is not None
                and after_body != len(data)
                and _STATUS_LINE.match(data, after_body) is None
            )
            if not headless:
                pos = after_body
        else:
            return statuses, False
    return statuses, False


# -- naming what happened -----------------------------------------------------------------------


def classify(case: Case, seen: Observation) -> Outcome:
    """Name what a server did with ``case``.

    For a stream to be refused, the application may see the valid requests pipelined
    before the bad one (``case.requests``); one call more is the bad request passed on,
    more than that a desync: the server framed the bytes into requests that are not there.
    For a valid stream, the application must see each request with its body length;
    another count is a desync, another body length is named as such.
    """
    calls = seen.calls
    expected = case.requests
    statuses, junk = read_statuses(seen.received)
    errors = [status for status in statuses if status >= 400]
    if case.refusal_expected:
        if len(calls) > expected + 1:
            return Outcome(Verdict.DESYNC, f"app x{len(calls)} (desync)")
        if len(calls) == expected + 1:
            if calls[-1].body_len is None and errors:
                return Outcome(
                    Verdict.REFUSED_IN_BODY,
                    f"app called, body refused {errors[0]}",
                    status=errors[0],
                )
            return Outcome(Verdict.PASSED, f"app: {calls[-1].describe()}")
    else:
        bodies = tuple(call.body_len for call in calls)
        if len(calls) == expected and bodies == case.bodies:
            text = f"app: {calls[0].describe()}" if expected == 1 else f"app x{expected}"
            return Outcome(Verdict.PASSED, text)
        if len(calls) == expected:
            sent = "/".join(str(length) for length in case.bodies)
            shown = calls[0].describe() if expected == 1 else f"x{expected}"
            return Outcome(Verdict.OTHER_BODY, f"app: {shown} (body sent: {sent})")
        if len(calls) > expected:
            return Outcome(Verdict.DESYNC, f"app x{len(calls)} (desync)")
        if calls and errors:
            return Outcome(
                Verdict.REFUSED, f"app x{len(calls)}, refused {errors[0]}", status=errors[0]
            )
    if errors:
        return Outcome(Verdict.REFUSED, f"refused {errors[0]}", status=errors[0])
    if seen.timed_out:
        return Outcome(Verdict.TIMEOUT, f"app x{len(calls)}, then timeout" if calls else "timeout")
    if junk:
        return Outcome(Verdict.NO_ANSWER, "no HTTP answer")
    if calls:
        return Outcome(Verdict.NO_ANSWER, f"app x{len(calls)}, then closed")
    finals = [status for status in statuses if status >= 200]
    if finals:
        return Outcome(Verdict.NO_ANSWER, f"answered {finals[-1]}, app not called")
    return Outcome(Verdict.NO_ANSWER, "no answer")


# -- the page -----------------------------------------------------------------------------------

Results = Mapping[str, Mapping[str, Outcome]]  # server -> case key -> outcome


@dataclass(frozen=True)
class Finding:
    """A case where some peer is stricter than twistwsgi (or, valid, more accepting)."""

    case: Case
    ours: Outcome
    peers: tuple[str, ...]  # the peers that refused (invalid) or served (valid) it


def findings(cases: Sequence[Case], results: Results) -> list[Finding]:
    """Invalid cases twistwsgi does not refuse that a peer refuses; valid ones it refuses
    that every peer serves.
    """
    ours = results.get(TWISTWSGI, {})
    peers = [server for server in results if server != TWISTWSGI]
    found = []
    for case in cases:
        outcome = ours.get(case.key)
        if outcome is None:
            continue
        peer_outcomes = {
            peer: results[peer][case.key] for peer in peers if case.key in results[peer]
        }
        if case.refusal_expected:
            if outcome.verdict in _REFUSALS:
                continue
            stricter = tuple(
                peer for peer, seen in peer_outcomes.items() if seen.verdict in _REFUSALS
            )
            if stricter:
                found.append(Finding(case, outcome, stricter))
        elif (
            outcome.verdict is not Verdict.PASSED
            and peer_outcomes
            and all(seen.verdict is Verdict.PASSED for seen in peer_outcomes.values())
        ):
            found.append(Finding(case, outcome, tuple(peer_outcomes)))
    return found


def only_twistwsgi_refuses(cases: Sequence[Case], results: Results) -> list[Case]:
    """Cases twistwsgi refuses and every peer that ran them lets through to the application."""
    ours = results.get(TWISTWSGI, {})
    peers = [server for server in results if server != TWISTWSGI]
    alone = []
    for case in cases:
        outcome = ours.get(case.key)
        seen = [results[peer][case.key] for peer in peers if case.key in results[peer]]
        if (
            outcome is not None
            and outcome.verdict in _REFUSALS
            and seen
            and all(other.verdict in (Verdict.PASSED, Verdict.DESYNC) for other in seen)
        ):
            alone.append(case)
    return alone


def mismatches(cases: Sequence[Case], results: Results) -> list[tuple[Case, Outcome]]:
    """Cases where twistwsgi, run for real, did not do what its corpus says."""
    ours = results.get(TWISTWSGI, {})
    wrong = []
    for case in cases:
        outcome = ours.get(case.key)
        if outcome is None:
            continue
        if case.refusal_expected:
            good = outcome.verdict in _REFUSALS and outcome.status == case.status
        else:
            good = outcome.verdict is Verdict.PASSED
        if not good:
            wrong.append((case, outcome))
    return wrong


@dataclass(frozen=True)
class Tally:
    """One server's counts over the cases it ran."""

    invalid: int = 0
    refused: int = 0
    in_body: int = 0  # of the refused, after the application was called (REFUSED_IN_BODY)
    passed: int = 0  # passed to the application, desyncs included
    desync: int = 0
    silent: int = 0  # no answer or timeout
    valid: int = 0
    served: int = 0


def tally(cases: Sequence[Case], outcomes: Mapping[str, Outcome]) -> Tally:
    """Count how a server treated the invalid and the valid cases."""
    counts = {name: 0 for name in Tally.__dataclass_fields__}
    for case in cases:
        outcome = outcomes.get(case.key)
        if outcome is None:
            continue
        verdict = outcome.verdict
        if case.refusal_expected:
            counts["invalid"] += 1
            counts["refused"] += verdict in _REFUSALS
            counts["in_body"] += verdict is Verdict.REFUSED_IN_BODY
            counts["passed"] += verdict in (Verdict.PASSED, Verdict.DESYNC)
            counts["desync"] += verdict is Verdict.DESYNC
            counts["silent"] += verdict in (Verdict.NO_ANSWER, Verdict.TIMEOUT)
        else:
            counts["valid"] += 1
            counts["served"] += verdict is Verdict.PASSED
    return Tally(**counts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def render(
    cases: Sequence[Case],
    results: Results,
    *,
    servers: Sequence[str],
    header: str = "",
) -> str:
    """The Markdown page: ``header``, the summary, the findings, the tables by group."""
    lines = [header.rstrip(), ""] if header else []
    lines += [
        "## Summary",
        "",
        _row(
            [
                "server",
                "invalid refused",
                "invalid passed to the app",
                "of which desync",
                "no answer or timeout",
                "valid served",
            ]
        ),
        _row(["---"] * 6),
    ]
    for server in servers:
        counts = tally(cases, results.get(server, {}))
        lines.append(
            _row(
                [
                    server,
                    f"{counts.refused} / {counts.invalid}"
                    + (f" ({counts.in_body} after calling the app)" if counts.in_body else ""),
                    str(counts.passed),
                    str(counts.desync),
                    str(counts.silent),
                    f"{counts.served} / {counts.valid}",
                ]
            )
        )
    lines += ["", "## Where a peer is stricter", ""]
    found = findings(cases, results)
    if not found:
        lines.append(
            "None: every invalid case some peer refuses, twistwsgi refuses too, and every"
            " valid case all peers serve, twistwsgi serves."
        )
    for finding in found:
        lines.append(
            f"- `{finding.case.name}` ({finding.case.group}): twistwsgi {finding.ours.text};"
            f" {', '.join(finding.peers)} {'refuse' if finding.case.refusal_expected else 'serve'}"
            f" it. {finding.case.why}"
        )
    alone = only_twistwsgi_refuses(cases, results)
    if alone:
        lines += ["", "## Refused by twistwsgi alone", ""]
        lines += [f"- `{case.name}` ({case.group}): {case.why}" for case in alone]
    wrong = mismatches(cases, results)
    if wrong:
        lines += ["", "## Where twistwsgi did not do what its corpus says", ""]
        lines += [
            f"- `{case.name}` ({case.group}): {outcome.text}, the corpus says"
            f" {'refused ' + str(case.status) if case.refusal_expected else 'served'}"
            for case, outcome in wrong
        ]
    for group, title in GROUPS.items():
        chosen = [case for case in cases if case.group == group]
        if not chosen:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            _row(["case", *servers]),
            _row(["---"] * (1 + len(servers))),
        ]
        for case in chosen:
            cells = [f"`{case.name}`"]
            for server in servers:
                outcome = results.get(server, {}).get(case.key)
                cells.append("—" if outcome is None else outcome.text)
            lines.append(_row(cells))
    return "\n".join(lines) + "\n"
