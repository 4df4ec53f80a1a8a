"""What a server put on the wire for a misbehaving application: reading it, naming it, the table.

Pure logic for ``benchmarks/app_wire.py``, with no sockets and no processes, so that
``tests/test_app_wire.py`` can check it and run twistwsgi's own answers through it in memory.
A :class:`Transcript` is what one connection carried: the bytes answered to the request for a
case (``benchmarks/misbehaving.py``), how that reading ended, then, if the connection was
still open, the bytes answered to a second, well-formed request on it. :func:`judge` reads
them with h11, as a client or a proxy would, and with a look at the raw head (a field injected
through CR or LF may still parse), and names the result as a :class:`Verdict`: framing kept
(a well-framed response, the server's own 5xx, or a connection ended once the response was
cut) or broken (bytes h11 refuses, bytes past the end of the response, a second response that
is not the second request's, a response that never ends on an open connection, a field the
application injected, a traceback sent to the client). :func:`render` writes the Markdown.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import h11

from benchmarks.misbehaving import SECOND_BODY

TWISTWSGI = "twistwsgi"
#: h11 stops at 16 KiB of head by default; the 1 MiB head case must parse to be judged.
MAX_HEAD = 4 * 1024 * 1024
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade")


class End(enum.Enum):
    """How reading one response ended."""

    COMPLETE = "complete"  # the response ended by its framing; the connection stayed open
    CLOSED = "closed"  # the server closed (or reset) the connection
    TIMEOUT = "timeout"  # still open and silent at the time limit


@dataclass
class Transcript:
    """What one connection carried for one case.

    Attributes:
        method: the first request's method.
        first: every byte received before the second request was sent.
        first_end: how reading them ended.
        second: every byte received after the second request was sent (``None`` when it
            was not sent: the connection was closed, or the first response never ended).
        second_end: how reading those ended.
    """

    method: str
    first: bytes
    first_end: End
    second: bytes | None = None
    second_end: End | None = None


class Verdict(enum.Enum):
    """What the wire showed, from the client's side."""

    # Framing kept.
    ERROR_5XX = "5xx answer"  # a well-framed 5xx: the server's own, or the application's
    SENT = "sent"  # a well-framed response; the next request got its own answer, or a close
    ABORTED = "aborted"  # the response was cut and the connection closed: the client can tell
    CLOSED = "closed, no answer"  # closed without a byte
    # Framing broken.
    UNPARSABLE = "unparsable"  # bytes a client's parser refuses
    EXTRA_BYTES = "extra bytes"  # bytes after the end of the response, before any request
    DESYNC = "desync"  # the second request got an answer that is not its own
    HANG = "hang"  # a response that never ends while the connection stays open
    INJECTED = "injected"  # a field the application smuggled in with CR or LF
    HIDDEN_CUT = "cut, framed as whole"  # the application failed mid-body; it reads complete
    INTERIM = "1xx as the answer"  # an interim status with no final response after it
    LEAK = "traceback sent"  # the server's error page shows the application's traceback
    # Neither: the whole server exited (the framing of what it sent is judged in the text).
    CRASHED = "server exited"


KEPT = frozenset(
    {Verdict.ERROR_5XX, Verdict.SENT, Verdict.ABORTED, Verdict.CLOSED, Verdict.CRASHED}
)


@dataclass(frozen=True)
class Outcome:
    """A :class:`Verdict`, the table cell, and notes on the fields that were sent."""

    verdict: Verdict
    text: str
    notes: tuple[str, ...] = ()

    @property
    def kept(self) -> bool:
        """Whether the framing stayed intact."""
        return self.verdict in KEPT

    def cell(self) -> str:
        """The table cell: the text, then the notes."""
        return "; ".join((self.text, *self.notes))


@dataclass
class Parsed:
    """One response as h11 read it from the front of some bytes."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    error: str | None = None
    rest: bytes = b""  # what followed the end of the response
    interim: list[int] = field(default_factory=list)  # the 1xx statuses before it


def parse_first(method: str, data: bytes, *, closed: bool) -> Parsed:
    """Read the first (final) response from ``data``, as a client that sent ``method``.

    With ``closed``, the close is given to h11 once the bytes are read: a body the close
    delimits ends there (RFC 9112 6.3), and h11's complaint about any other is not an
    error of the bytes but a response cut short (``complete`` stays false).
    """
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "wire")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    parsed = Parsed()
    body = []
    at_close = False
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as error:
            if not at_close:
                parsed.error = str(error) or type(error).__name__
            break
        if event is h11.NEED_DATA and closed and not at_close:
            at_close = True
            client.receive_data(b"")
            continue
        if event is h11.NEED_DATA or event is h11.PAUSED:
            break
        if isinstance(event, h11.InformationalResponse):
            parsed.interim.append(event.status_code)
        elif isinstance(event, h11.Response):
            parsed.status = event.status_code
            parsed.headers = list(event.headers)
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            parsed.complete = True
            parsed.rest = client.trailing_data[0]
            break
        elif isinstance(event, h11.ConnectionClosed):
            break
    parsed.body = b"".join(body)
    return parsed


def _raw_head(data: bytes) -> bytes:
    """The first response's head as sent (to the blank line, or all of it)."""
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end]


def _head_flaws(head: bytes, injected: str) -> list[str]:
    """What is wrong in a raw head whatever a parser makes of it."""
    flaws = []
    lines = head.split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        flaws.append("bare CR or LF in the head")
    if injected and any(
        line.split(b":", 1)[0].strip().lower() == injected.encode() for line in lines[1:]
    ):
        flaws.append(f"injected field {injected!r}")
    if re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", head):
        flaws.append("control characters in the head")
    return flaws


def _field_notes(parsed: Parsed, head: bytes) -> list[str]:
    """Notes on the fields a parsed response carried: hop-by-hop ones, repeats, the size."""
    notes = []
    names = [name.lower().decode("latin-1") for name, _ in parsed.headers]
    passed = [name for name in HOP_BY_HOP if name in names and name != "connection"]
    if passed:
        notes.append("passes " + ", ".join(passed))
    for name in ("date", "server", "content-length"):
        count = names.count(name)
        if count > 1:
            notes.append(f"{count} {name} lines")
    cookies = names.count("set-cookie")
    if cookies:
        notes.append(f"{cookies} set-cookie lines")
    if len(head) > 64 * 1024:
        notes.append(f"head of {len(head) // 1024} KiB sent")
    return notes


def crashed(outcome: Outcome) -> Outcome:
    """``outcome`` of a case during which the whole server exited."""
    if not outcome.kept:
        return Outcome(outcome.verdict, outcome.text, (*outcome.notes, "the server exited"))
    return Outcome(Verdict.CRASHED, "the server exited: " + outcome.text, outcome.notes)


def judge(transcript: Transcript, *, injected: str = "", failed: bool = False) -> Outcome:
    """Name what the wire showed for one case (see the module docstring).

    ``failed``: the application fails once its response has begun (or its body falls
    short of its length), so a complete answer other than a 5xx hides the failure
    from the client: the framing says whole, the bytes are not.
    """
    first = transcript.first
    closed = transcript.first_end is End.CLOSED
    if not first:
        if transcript.first_end is End.TIMEOUT:
            return Outcome(Verdict.HANG, "no answer, connection left open")
        return Outcome(Verdict.CLOSED, "closed, no answer")
    head = _raw_head(first)
    flaws = _head_flaws(head, injected)
    parsed = parse_first(transcript.method, first, closed=closed)
    if any(flaw.startswith("injected field") for flaw in flaws):
        return Outcome(Verdict.INJECTED, ", ".join(flaws))
    if parsed.error is not None:
        detail = (
            ", ".join(flaws) if flaws else re.sub(r"bytearray\((b'.*?')\)", r"\1", parsed.error)
        )
        return Outcome(Verdict.UNPARSABLE, f"unparsable: {detail}")
    if flaws:
        return Outcome(Verdict.UNPARSABLE, ", ".join(flaws))
    notes = _field_notes(parsed, head)
    if parsed.interim and not parsed.status:
        # The client takes a 1xx as interim (RFC 9110 15.2) and reads on for the answer:
        # what the application meant as its body is read as the next head.
        return Outcome(Verdict.INTERIM, f"{parsed.interim[0]}, and no final response")
    if not parsed.complete:
        if transcript.first_end is End.TIMEOUT:
            got = f"{parsed.status}, {len(parsed.body)} body bytes" if parsed.status else "part"
            return Outcome(Verdict.HANG, f"{got}, then neither more nor a close", tuple(notes))
        if not parsed.status:
            return Outcome(Verdict.ABORTED, "closed mid-head")
        return Outcome(
            Verdict.ABORTED, f"{parsed.status}, closed after {len(parsed.body)} body bytes"
        )
    if parsed.status >= 500 and b"Traceback" in parsed.body:
        return Outcome(Verdict.LEAK, f"{parsed.status} with the traceback", tuple(notes))
    text = f"{parsed.status}, {len(parsed.body)} bytes"
    if failed and parsed.status < 500:
        return Outcome(Verdict.HIDDEN_CUT, f"{text}, complete though cut", tuple(notes))
    if parsed.rest:
        return Outcome(
            Verdict.EXTRA_BYTES, f"{text} + {len(parsed.rest)} bytes after it", tuple(notes)
        )
    ours = Verdict.ERROR_5XX if parsed.status >= 500 else Verdict.SENT
    if transcript.second is None:
        return Outcome(ours, f"{text}, closed", tuple(notes))
    second = parse_first("GET", transcript.second, closed=transcript.second_end is End.CLOSED)
    if second.complete and second.status == 200 and second.body == SECOND_BODY:
        if second.rest:
            return Outcome(Verdict.EXTRA_BYTES, f"{text}; extra bytes after the next response")
        if any(
            name.lower() == b"connection" and b"close" in value.lower()
            for name, value in parsed.headers
        ):
            # Harmless for the framing (a client closes on it), but not what it says.
            notes.append("said Connection: close, served the next request")
        return Outcome(ours, f"{text}, kept alive", tuple(notes))
    if not transcript.second:
        if transcript.second_end is End.TIMEOUT:
            return Outcome(Verdict.HANG, f"{text}; next request never answered", tuple(notes))
        return Outcome(ours, f"{text}, closed", tuple(notes))
    if second.error is not None or second.status:
        shown = f"{second.status}" if second.status else "unparsable"
        return Outcome(
            Verdict.DESYNC, f"{text}; next request got {shown}, not its answer", tuple(notes)
        )
    if transcript.second_end is End.CLOSED:
        return Outcome(ours, f"{text}; next answer cut", tuple(notes))
    return Outcome(Verdict.HANG, f"{text}; next answer never ends", tuple(notes))


# -- the page -----------------------------------------------------------------------------------

Results = Mapping[str, Mapping[str, Outcome]]  # server -> case name -> outcome


@dataclass(frozen=True)
class Row:
    """One case as the table shows it."""

    name: str
    what: str
    rule: str


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def kept_count(rows: Sequence[Row], outcomes: Mapping[str, Outcome]) -> tuple[int, int]:
    """How many of the cases a server ran kept the framing intact, and how many it ran."""
    ran = [outcomes[row.name] for row in rows if row.name in outcomes]
    return sum(outcome.kept for outcome in ran), len(ran)


def render(
    rows: Sequence[Row], results: Results, *, servers: Sequence[str], header: str = ""
) -> str:
    """The Markdown: ``header``, a summary per server, twistwsgi's failures, the table."""
    lines = [header.rstrip(), ""] if header else []
    lines += [
        "### Summary",
        "",
        _row(["server", "framing kept", "broken cases"]),
        _row(["---"] * 3),
    ]
    for server in servers:
        outcomes = results.get(server, {})
        kept, ran = kept_count(rows, outcomes)
        broken = [row.name for row in rows if row.name in outcomes and not outcomes[row.name].kept]
        lines.append(
            _row([server, f"{kept} / {ran}", ", ".join(f"`{name}`" for name in broken) or "—"])
        )
    lines += [
        "",
        "### Every case",
        "",
        _row(["case", "the application", *servers]),
        _row(["---"] * (2 + len(servers))),
    ]
    for row in rows:
        cells = [f"`{row.name}`", row.what + (f" ({row.rule})" if row.rule else "")]
        for server in servers:
            outcome = results.get(server, {}).get(row.name)
            if outcome is None:
                cells.append("—")
            else:
                cells.append(("" if outcome.kept else "**broken**: ") + outcome.cell())
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"
