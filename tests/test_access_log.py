"""The combined-format access log (``twistwsgi.access_log``): escaping of client
bytes, the timestamp, the line layout (parsed back with a regex of the combined
format), and the file, stdout and Twisted-log destinations.
"""

from __future__ import annotations

import errno
import os
import re
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure

from twistwsgi.access_log import AccessLog, escape, format_combined, log_time
from twistwsgi.http.exchange import Exchange, Handler
from twistwsgi.http.sendfile import READ_CHUNK
from twistwsgi.http.settings import HttpSettings
from twistwsgi.log_format import LogFormat
from twistwsgi.static import StaticHandler, StaticOptions
from twistwsgi.testing import (
    Connection,
    PullingTransport,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    capture_log_events,
    connect,
    parse_responses,
)
from twistwsgi.wsgi import WSGIHandler

#: The last second of year 9999.
MAX_SECONDS = 253402300799

# The combined log format (nginx ``log_format combined``).
COMBINED = re.compile(
    r'(?P<remote>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" '
    r'(?P<status>\S+) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"'
)


@dataclass
class FakeRequest:
    """The request facts the access log reads."""

    method: bytes = b"GET"
    target: bytes = b"/"
    version: bytes = b"1.1"
    peer: tuple[str, int] | None = ("192.0.2.7", 51000)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    scheme: str = "http"
    authority: bytes | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class FakeExchange:
    """An ended exchange as the access log sees it."""

    request: FakeRequest = field(default_factory=FakeRequest)
    status: int = 200
    body_sent: int = 13
    client_closed: bool = False
    started: float = 0.0


def unescape(text: str) -> bytes:
    r"""Undo ``\xHH`` escapes (a reference decoder for escape())."""
    escaped = re.compile(rb"\\x([0-9A-Fa-f]{2})")
    return escaped.sub(lambda m: bytes((int(m[1], 16),)), text.encode("ascii"))


# -- escape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"curl/8.5.0", "curl/8.5.0"),
        (b"", ""),
        (b'a"b', r"a\x22b"),
        (b"a\\b", r"a\x5Cb"),
        (b"\x00\x1f\x7f", r"\x00\x1F\x7F"),
        (b"line\nbreak\r", r"line\x0Abreak\x0D"),
        (b"tab\there", r"tab\x09here"),
        (b"caf\xc3\xa9", r"caf\xC3\xA9"),
        (b"\xff", r"\xFF"),
        (b"~ !#$%&'()*+,-./:;<=>?@[]^_`{|}", "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}"),
    ],
)
def test_escape_examples(raw: bytes, text: str) -> None:
    r"""Printable ASCII passes unchanged; quotes, backslashes, controls, DEL and
    non-ASCII bytes become ``\xHH`` (nginx's escaping).
    """
    assert escape(raw) == text


@given(st.binary(max_size=200))
def test_escape_output_is_safe(raw: bytes) -> None:
    """For any bytes, the output is printable ASCII with no double quote and no
    newline, so a client cannot end a quoted field or forge a log line.
    """
    text = escape(raw)
    assert all(0x20 <= ord(char) <= 0x7E for char in text)
    assert '"' not in text
    assert "\n" not in text


@given(st.binary(max_size=200))
def test_escape_is_reversible(raw: bytes) -> None:
    r"""Backslashes are escaped too, so decoding every ``\xHH`` gives the original
    bytes back: no two inputs log the same.
    """
    assert unescape(escape(raw)) == raw


# -- log_time -------------------------------------------------------------------------


def test_log_time_example() -> None:
    """The format of Apache's documentation example, always in UTC."""
    assert log_time(971186136) == "10/Oct/2000:13:55:36 +0000"


@given(st.floats(min_value=0, max_value=MAX_SECONDS + 0.999))
def test_log_time_matches_strftime(seconds: float) -> None:
    """For any time from 1970 to 9999 the value equals a strftime reference (Python
    runs in the C locale unless told otherwise, so %b is the English month).
    """
    reference = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(seconds))
    assert log_time(seconds) == reference


# -- format_combined ------------------------------------------------------------------


def test_format_combined_full_line() -> None:
    """All fields in the combined layout: peer, time, request line, status, bytes,
    Referer and User-Agent.
    """
    exchange = FakeExchange(
        FakeRequest(
            method=b"POST",
            target=b"/submit?x=1",
            headers=[(b"Referer", b"https://example.com/"), (b"User-Agent", b"curl/8")],
        ),
        status=201,
        body_sent=42,
    )
    line = format_combined(exchange, "10/Oct/2000:13:55:36 +0000")
    assert line == (
        '192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] "POST /submit?x=1 HTTP/1.1" 201 42 '
        '"https://example.com/" "curl/8"'
    )


def test_format_combined_placeholders() -> None:
    """A missing Referer or User-Agent is shown as "-"; a client on a UNIX socket,
    which has no address, as "unix:" (nginx's $remote_addr there).
    """
    exchange = FakeExchange(FakeRequest(peer=None, version=b"1.0"), status=204, body_sent=0)
    match = COMBINED.fullmatch(format_combined(exchange, "01/Jan/1970:00:00:00 +0000"))
    assert match is not None
    assert match["remote"] == "unix:"
    assert match["request"] == "GET / HTTP/1.0"
    assert match["status"] == "204"
    assert match["bytes"] == "0"
    assert match["referer"] == "-"
    assert match["agent"] == "-"


@pytest.mark.parametrize(
    ("client_closed", "status"), [(True, "499"), (False, "444")], ids=["client", "server"]
)
def test_format_combined_without_a_response(client_closed: bool, status: str) -> None:
    """An exchange that ended before any response was started still has a
    three-digit status: nginx's 499 when the client closed the connection, its 444
    ("closed without a response") when the server dropped it.
    """
    exchange = FakeExchange(status=0, body_sent=0, client_closed=client_closed)
    match = COMBINED.fullmatch(format_combined(exchange, "01/Jan/1970:00:00:00 +0000"))
    assert match is not None
    assert (match["status"], match["bytes"]) == (status, "0")


def test_format_combined_empty_headers_are_not_placeholders() -> None:
    """An empty Referer is logged as an empty field, distinct from a missing one."""
    exchange = FakeExchange(FakeRequest(headers=[(b"Referer", b""), (b"User-Agent", b"-")]))
    match = COMBINED.fullmatch(format_combined(exchange, "01/Jan/1970:00:00:00 +0000"))
    assert match is not None
    assert match["referer"] == ""
    assert match["agent"] == "-"


_client_bytes = st.binary(max_size=60)


@given(target=_client_bytes, referer=_client_bytes, agent=_client_bytes)
def test_format_combined_parses_back(target: bytes, referer: bytes, agent: bytes) -> None:
    """Whatever bytes a client puts in the target, Referer and User-Agent, the line
    is one combined-format record whose quoted fields decode to those bytes.
    """
    exchange = FakeExchange(
        FakeRequest(target=target, headers=[(b"Referer", referer), (b"User-Agent", agent)])
    )
    line = format_combined(exchange, "01/Jan/1970:00:00:00 +0000")
    match = COMBINED.fullmatch(line)
    assert match is not None, line
    assert unescape(match["request"]) == b"GET " + target + b" HTTP/1.1"
    assert unescape(match["referer"]) == referer
    assert unescape(match["agent"]) == agent


# -- AccessLog ------------------------------------------------------------------------


def test_access_log_writes_one_line_per_call(tmp_path: Path) -> None:
    """Each call appends exactly one line, stamped with the clock's time in UTC."""
    path = tmp_path / "access.log"
    clock = Clock()
    clock.advance(971186136)
    log = AccessLog(str(path), clock=clock)
    try:
        log(FakeExchange(FakeRequest(target=b"/one")))
        clock.advance(0.5)
        log(FakeExchange(FakeRequest(target=b"/two")))
        clock.advance(1)
        log(FakeExchange(FakeRequest(target=b"/three")))
    finally:
        log.close()
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 3
    matches = [COMBINED.fullmatch(line) for line in lines]
    assert all(matches)
    assert [m["request"] for m in matches if m] == [
        "GET /one HTTP/1.1",
        "GET /two HTTP/1.1",
        "GET /three HTTP/1.1",
    ]
    assert [m["time"] for m in matches if m] == [
        "10/Oct/2000:13:55:36 +0000",
        "10/Oct/2000:13:55:36 +0000",
        "10/Oct/2000:13:55:37 +0000",
    ]


def test_access_log_appends_to_an_existing_file(tmp_path: Path) -> None:
    """The file is opened for appending; earlier content stays."""
    path = tmp_path / "access.log"
    path.write_text("earlier line\n", encoding="ascii")
    log = AccessLog(str(path), clock=Clock())
    log(FakeExchange())
    log.close()
    lines = path.read_text(encoding="ascii").splitlines()
    assert lines[0] == "earlier line"
    assert len(lines) == 2


def test_reopen_after_rotation(tmp_path: Path) -> None:
    """After logrotate renames the file, lines keep going to the renamed file until
    reopen(), and to a new file at the original path after it.
    """
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    log = AccessLog(str(path), clock=Clock())
    try:
        log(FakeExchange(FakeRequest(target=b"/before")))
        path.rename(rotated)
        log(FakeExchange(FakeRequest(target=b"/between")))
        log.reopen()
        log(FakeExchange(FakeRequest(target=b"/after")))
    finally:
        log.close()
    old_lines = rotated.read_text(encoding="ascii").splitlines()
    new_lines = path.read_text(encoding="ascii").splitlines()
    assert len(old_lines) == 2
    assert '"GET /before HTTP/1.1"' in old_lines[0]
    assert '"GET /between HTTP/1.1"' in old_lines[1]
    assert len(new_lines) == 1
    assert '"GET /after HTTP/1.1"' in new_lines[0]


def test_stdout_destination(capfd: pytest.CaptureFixture[str]) -> None:
    """The "-" destination writes lines to file descriptor 1."""
    log = AccessLog("-", clock=Clock())
    log(FakeExchange(FakeRequest(target=b"/stdout")))
    log.reopen()  # no effect on stdout
    log(FakeExchange(FakeRequest(target=b"/again")))
    log.close()
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(COMBINED.fullmatch(line) for line in lines)
    assert '"GET /stdout HTTP/1.1"' in lines[0]


def test_empty_destination_logs_to_twisted() -> None:
    """With "" as the destination, each line is one event in Twisted's log, in the
    twistwsgi.access namespace, whose text is the combined line.
    """
    clock = Clock()
    log = AccessLog("", clock=clock)
    exchange = FakeExchange(FakeRequest(target=b"/logged"))
    with capture_log_events() as events:
        log(exchange)
    access = [event for event in events if event.get("log_namespace") == "twistwsgi.access"]
    assert len(access) == 1
    assert formatEvent(access[0]) == format_combined(exchange, log_time(0))


# -- destinations that fail, and pipes -------------------------------------------------


def _error_texts(events: list[dict[str, Any]]) -> list[str]:
    """The text of the events at error level or above (errors and failures)."""
    return [
        formatEvent(event)
        for event in events
        if event.get("log_level") in (LogLevel.error, LogLevel.critical)
    ]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_destination_is_said_once_and_the_server_goes_on() -> None:
    """Writes that fail (here: no space left on device) raise nothing to the caller
    and are said once in the server log, naming the file and the reason, however many
    lines are lost after: a traceback per request would flood the server log, on
    the same full disk as often as not.
    """
    log = AccessLog("/dev/full", clock=Clock())
    try:
        with capture_log_events() as events:
            for _ in range(3):
                log(FakeExchange())
    finally:
        log.close()
    errors = _error_texts(events)
    assert len(errors) == 1
    assert "/dev/full" in errors[0]
    assert "No space left on device" in errors[0]
    assert not [event for event in events if "log_failure" in event]


def _failing_writes(monkeypatch: pytest.MonkeyPatch, path: Path) -> Callable[[int | None], None]:
    """Make writes to ``path`` fail with ENOSPC (see the switch returned).

    Returns the switch: ``fail(0)`` fails every write, ``fail(10)`` lets 10 bytes
    through first (a short write, as a disk filling up mid-line gives), ``fail(None)``
    lets all through again.
    """
    real_write = os.write
    budget: list[int | None] = [None]

    def write(fd: int, data: Any) -> int:
        remaining = budget[0]
        if remaining is None or os.path.realpath(f"/proc/self/fd/{fd}") != str(path):
            return real_write(fd, data)
        if remaining == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data)[:remaining])
        budget[0] = remaining - written
        return written

    def fail(after: int | None) -> None:
        budget[0] = after

    monkeypatch.setattr(os, "write", write)
    return fail


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_lines_lost_to_a_failing_destination_are_counted_and_not_written_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line that cannot be written is dropped, not held to be written later in
    among newer lines (out of their order, an unknown number of them); once writing
    works again the server log says how many were lost.
    """
    path = (tmp_path / "access.log").resolve()
    fail = _failing_writes(monkeypatch, path)
    log = AccessLog(str(path), clock=Clock())
    try:
        with capture_log_events() as events:
            log(FakeExchange(FakeRequest(target=b"/before")))
            fail(0)
            log(FakeExchange(FakeRequest(target=b"/lost-1")))
            log(FakeExchange(FakeRequest(target=b"/lost-2")))
            fail(None)
            log(FakeExchange(FakeRequest(target=b"/after")))
    finally:
        log.close()
    requests = [m["request"] for m in map(COMBINED.fullmatch, path.read_text().splitlines()) if m]
    assert requests == ["GET /before HTTP/1.1", "GET /after HTTP/1.1"]
    texts = [formatEvent(event) for event in events]
    assert len(_error_texts(events)) == 1
    assert any("written again" in text and "2 lines" in text for text in texts)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_line_cut_by_a_failing_write_does_not_run_into_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops mid-line (the disk filled up) leaves a piece of a line in
    the file; the next line written begins on a line of its own, whole.
    """
    path = (tmp_path / "access.log").resolve()
    fail = _failing_writes(monkeypatch, path)
    log = AccessLog(str(path), clock=Clock())
    try:
        with capture_log_events():
            fail(10)
            log(FakeExchange(FakeRequest(target=b"/cut")))
            fail(None)
            log(FakeExchange(FakeRequest(target=b"/whole")))
    finally:
        log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert len(lines[0]) == 10
    whole = COMBINED.fullmatch(lines[1])
    assert whole is not None
    assert whole["request"] == "GET /whole HTTP/1.1"


def test_a_line_to_a_pipe_is_one_write_of_at_most_pipe_buf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a pipe (stdout read by docker or journald, a FIFO), POSIX makes a write
    atomic only up to PIPE_BUF bytes: a longer line could be cut into pieces that
    the other workers' lines, written to the same pipe, come between. Each line is
    one write, one over PIPE_BUF cut to fit, ending with "...".
    """
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    sizes: list[int] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    log = AccessLog(str(fifo), clock=Clock())
    monkeypatch.setattr(os, "write", write)
    try:
        log(FakeExchange(FakeRequest(headers=[(b"user-agent", b"\x80" * 3000)])))
        log(FakeExchange(FakeRequest(target=b"/short")))
    finally:
        monkeypatch.undo()
        log.close()
    try:
        data = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    long_line, short_line = data.decode("ascii").splitlines(keepends=True)
    assert len(long_line) == select.PIPE_BUF
    assert long_line.endswith("...\n")
    assert COMBINED.fullmatch(short_line.rstrip("\n"))
    assert sizes == [select.PIPE_BUF, len(short_line)]


def test_unescaped_values_and_template_text_outside_ascii_are_written(tmp_path: Path) -> None:
    """With escape=none a client's UTF-8 is written as it came, and a template may
    hold text outside ASCII: neither may cost the line.
    """
    path = tmp_path / "access.log"
    log = AccessLog(
        str(path), clock=Clock(), log_format=LogFormat("→ $status $http_user_agent", "none")
    )
    try:
        log(FakeExchange(FakeRequest(headers=[(b"user-agent", "café ☃".encode())])))
    finally:
        log.close()
    assert path.read_text(encoding="utf-8") == "→ 200 café ☃\n"


# -- served connections ---------------------------------------------------------------

#: The access-log timestamp of the served connections below (the Clock's time).
STAMP = "[10/Oct/2000:13:55:36 +0000]"
#: The same, after a 10.5-second timeout.
STAMP_LATER = "[10/Oct/2000:13:55:46 +0000]"


class Held:
    """Keeps every exchange for the test to answer later."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def handle(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


class Hello:
    """Answers every request at once."""

    def handle(self, exchange: Exchange) -> None:
        exchange.start_response(200, [])
        exchange.finish(b"hello")


@contextmanager
def logged(
    handler: Handler,
    transport: StringTransport | None = None,
    log_format: LogFormat | None = None,
    **settings: Any,
) -> Iterator[tuple[Connection, Callable[[], list[str]]]]:
    """One in-memory connection to ``handler`` with an access log to the Twisted log.

    Yields the connection and a function that returns the access lines so far.
    """
    clock = Clock()
    clock.advance(971186136)
    log = AccessLog("", clock=clock, log_format=log_format)
    connection = connect(
        handler,
        settings=HttpSettings(**settings),
        clock=clock,
        response_log=log,
        transport=transport,
    )
    with capture_log_events() as events:

        def lines() -> list[str]:
            return [
                formatEvent(event)
                for event in events
                if event.get("log_namespace") == "twistwsgi.access"
            ]

        yield connection, lines


def body_length(connection: Connection, method: bytes = b"GET") -> int:
    """The body length of the one response the server wrote."""
    [response] = parse_responses(connection.take(), [method])
    return len(response.body)


# -- refusals -------------------------------------------------------------------------


def test_refusal_with_a_complete_head_logs_its_request_line() -> None:
    """A request the protocol refuses after reading its head (417 here) is logged
    like any response: its request line, the status, the body bytes of the error
    response, and the Referer and User-Agent it sent.
    """
    with logged(Hello()) as (connection, lines):
        connection.send(
            b"PUT /up?x=1 HTTP/1.1\r\nHost: a\r\nExpect: later\r\n"
            b"User-Agent: tester/1\r\nReferer: http://r/\r\n\r\n"
        )
        sent = body_length(connection)
        assert sent > 0
        assert lines() == [
            f'127.0.0.1 - - {STAMP} "PUT /up?x=1 HTTP/1.1" 417 {sent} "http://r/" "tester/1"'
        ]


@pytest.mark.parametrize(
    ("raw", "status", "request_line"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, "-", id="invalid-method"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01", 400, "-", id="tls-hello"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, "GET / HTTP/1.1", id="no-host"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "GET / HTTP/2.0", id="505"),
        # A line that names RTSP/ or ICE/ (which llhttp takes) is logged without its
        # digits, as one whose protocol llhttp refuses.
        pytest.param(b"GET / RTSP/1.0\r\nHost: a\r\n\r\n", 400, "GET /", id="rtsp"),
        pytest.param(b"GET / RTSP/9.9\r\nHost: a\r\n\r\n", 400, "GET /", id="rtsp-9-9"),
        pytest.param(b"GET / http/1.1\r\nHost: a\r\n\r\n", 400, "GET /", id="http-lower"),
        pytest.param(
            b"GET / RTSP/1.0\r\nHost: a\r\nBad Name: x\r\n\r\n",
            400,
            "GET /",
            id="rtsp-bad-field",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            400,
            "GET / HTTP/1.1",
            id="bad-field-after-one",
        ),
        pytest.param(
            b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999\r\n\r\n",
            413,
            "POST /up HTTP/1.1",
            id="413",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "GET / HTTP/1.1",
            id="501",
        ),
    ],
)
def test_refusals_are_logged_with_what_was_read_of_the_request_line(
    raw: bytes, status: int, request_line: str
) -> None:
    """Every refusal that sends a response has an access line. The request field is
    the request line as far as the parser read it, or "-" when nothing usable was
    read (nginx's $request when no request line was read).
    """
    with logged(Hello()) as (connection, lines):
        connection.send(raw)
        sent = body_length(connection)
        assert lines() == [f'127.0.0.1 - - {STAMP} "{request_line}" {status} {sent} "-" "-"']


def test_head_timeout_logs_the_partial_request_line() -> None:
    """408 for a head that never completed: the request field holds the part of
    the line that arrived (as nginx logs it).
    """
    with logged(Hello(), header_timeout=10.0) as (connection, lines):
        connection.send(b"GET /slow")
        connection.clock.advance(10.5)
        sent = body_length(connection)
        assert lines() == [f'127.0.0.1 - - {STAMP_LATER} "GET /slow" 408 {sent} "-" "-"']


def test_head_timeout_before_the_target_logs_a_dash() -> None:
    """A head that stopped inside its method is logged with "-" as its request."""
    with logged(Hello(), header_timeout=10.0) as (connection, lines):
        connection.send(b"GE")
        connection.clock.advance(10.5)
        sent = body_length(connection)
        assert lines() == [f'127.0.0.1 - - {STAMP_LATER} "-" 408 {sent} "-" "-"']


def test_refusal_after_a_complete_request_is_not_logged_with_its_line() -> None:
    """Bytes that refuse the next request on a kept-alive connection are not
    logged with the previous request's line or fields.
    """
    with logged(Hello(), header_timeout=10.0) as (connection, lines):
        connection.send(b"GET /first HTTP/1.1\r\nHost: a\r\nUser-Agent: ua\r\n\r\n")
        connection.take()
        connection.send(b"\r\n")  # (a stray CRLF between requests begins nothing)
        connection.clock.advance(10.5)
        sent = body_length(connection)
        assert lines()[1:] == [f'127.0.0.1 - - {STAMP_LATER} "-" 408 {sent} "-" "-"']


def test_too_long_target_is_logged_cut_at_the_limit() -> None:
    """414: the method and the target that was too long, cut at the limit."""
    target = b"/" + b"a" * 300
    with logged(Hello(), max_request_line=100) as (connection, lines):
        connection.send(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        sent = body_length(connection)
        [line] = lines()
        match = COMBINED.fullmatch(line)
        assert match is not None
        assert match["request"] == "GET " + target[:100].decode()
        assert (match["status"], match["bytes"]) == ("414", str(sent))


def test_refused_head_request_logs_no_body_bytes() -> None:
    """The refusal of a HEAD request has no body, so 0 bytes are logged."""
    with logged(Hello()) as (connection, lines):
        connection.send(b"HEAD /x HTTP/1.1\r\n\r\n")
        assert body_length(connection, b"HEAD") == 0
        assert lines() == [f'127.0.0.1 - - {STAMP} "HEAD /x HTTP/1.1" 400 0 "-" "-"']


def test_refusal_queued_behind_a_pipelined_request_is_logged_in_its_turn() -> None:
    """A refusal waiting behind a request being answered is logged after it."""
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(
            b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /bad HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"
        )
        assert lines() == []
        [exchange] = held.exchanges
        exchange.start_response(200, [])
        exchange.finish(b"fine")
        _ok, bad = parse_responses(connection.take())
        assert lines() == [
            f'127.0.0.1 - - {STAMP} "GET /ok HTTP/1.1" 200 4 "-" "-"',
            f'127.0.0.1 - - {STAMP} "GET /bad HTTP/1.1" 400 {len(bad.body)} "-" "-"',
        ]


def test_body_refused_before_dispatch_logs_the_request() -> None:
    """A request whose small chunked body is malformed never reaches the handler;
    its refusal is logged with the head that was accepted.
    """
    with logged(Hello()) as (connection, lines):
        connection.send(
            b"POST /form HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"User-Agent: ua\r\n\r\nzz\r\n"
        )
        sent = body_length(connection)
        assert lines() == [f'127.0.0.1 - - {STAMP} "POST /form HTTP/1.1" 400 {sent} "-" "ua"']


def test_handler_failure_logs_the_bytes_of_the_500() -> None:
    """The 500 answered for a handler that raised counts its body bytes."""

    class Broken:
        def handle(self, exchange: Exchange) -> None:
            raise RuntimeError("boom")

    with logged(Broken()) as (connection, lines):
        connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        sent = body_length(connection)
        assert sent > 0
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET / HTTP/1.1" 500 {sent} "-" "-"']


# -- body bytes -----------------------------------------------------------------------


def test_file_sent_whole_logs_its_size(tmp_path: Path) -> None:
    """A static file sent whole is logged with its size."""
    (tmp_path / "big.bin").write_bytes(b"x" * 200_000)
    handler = StaticHandler(StaticOptions(root=str(tmp_path)), now=lambda: 971186136.0)
    transport = PullingTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 54321))
    with logged(handler, transport=transport) as (connection, lines):
        connection.send(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        assert body_length(connection) == 200_000
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /big.bin HTTP/1.1" 200 200000 "-" "-"']


def test_aborted_file_download_logs_the_bytes_sent(tmp_path: Path) -> None:
    """A client that goes away during a static download is logged with the bytes
    handed to the connection before it went, not the file's size (nginx's
    $body_bytes_sent).
    """
    (tmp_path / "big.bin").write_bytes(b"x" * 200_000)
    handler = StaticHandler(StaticOptions(root=str(tmp_path)), now=lambda: 971186136.0)
    with logged(handler) as (connection, lines):
        transport = connection.transport
        connection.send(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        sender = transport.producer
        assert sender is not None
        sender.resumeProducing()  # the transport asks for one piece of the file
        _head, _, body = transport.value().partition(b"\r\n\r\n")
        assert len(body) == READ_CHUNK
        # The client goes away: the transport stops its producer, then tells the
        # protocol (as Twisted's connectionLost does).
        sender.stopProducing()
        connection.protocol.connectionLost(Failure(ConnectionLost()))
        assert lines() == [
            f'127.0.0.1 - - {STAMP} "GET /big.bin HTTP/1.1" 200 {READ_CHUNK} "-" "-"'
        ]


def test_streamed_body_logs_payload_bytes_without_chunk_framing() -> None:
    """A chunked response is logged with the bytes of its body, not of the chunk
    framing around them.
    """
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n")
        [exchange] = held.exchanges
        exchange.start_response(200, [])
        exchange.write(b"a" * 100)
        exchange.write(b"b" * 50)
        exchange.finish(b"c")
        [response] = parse_responses(connection.take())
        assert response.header(b"transfer-encoding") == b"chunked"
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /s HTTP/1.1" 200 151 "-" "-"']


def test_streamed_wsgi_body_logs_its_bytes() -> None:
    """A WSGI application's body, streamed piece by piece (chunked), is logged
    with its length.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x" * 1000
        yield b""
        yield b"y" * 24

    handler = WSGIHandler(
        validator(app), reactor=SynchronousReactorThreads(), threadpool=SynchronousThreadPool()
    )
    with logged(handler) as (connection, lines):
        connection.send(b"GET /w HTTP/1.1\r\nHost: a\r\n\r\n")
        assert body_length(connection) == 1024
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /w HTTP/1.1" 200 1024 "-" "-"']


# -- exchanges that ended without a response ------------------------------------------


def test_client_closing_before_the_response_logs_499() -> None:
    """A client that closes the connection while its request is being worked on
    is logged with 499 (nginx's "client closed request").
    """
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(b"GET /slow HTTP/1.1\r\nHost: a\r\nUser-Agent: ua\r\n\r\n")
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /slow HTTP/1.1" 499 0 "-" "ua"']


def test_client_reset_before_the_response_logs_499() -> None:
    """A reset (an unclean close) is the client's doing too."""
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        connection.protocol.connectionLost(Failure(ConnectionLost()))
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /slow HTTP/1.1" 499 0 "-" "-"']


def test_request_dropped_at_the_graceful_timeout_logs_444() -> None:
    """A request still without a response when the graceful timeout drops its
    connection (the service calls abort_all) is logged with 444, nginx's code for
    a connection closed without a response.
    """
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        factory = connection.factory
        factory.shut_down()
        factory.abort_all()
        assert connection.is_closed()
        # The transport reports the abort it was asked for.
        connection.protocol.connectionLost(Failure(ConnectionAborted()))
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /slow HTTP/1.1" 444 0 "-" "-"']


def test_handler_abort_before_the_response_logs_444() -> None:
    """A handler that drops the connection before starting a response (the server's
    doing, not the client's) is logged with 444.
    """
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        [exchange] = held.exchanges
        exchange.abort()
        connection.protocol.connectionLost(Failure(ConnectionAborted()))
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /x HTTP/1.1" 444 0 "-" "-"']


def test_client_closing_during_the_response_keeps_its_status() -> None:
    """Once a response has started, its status is logged whoever ends it, with the
    bytes sent so far.
    """
    held = Held()
    with logged(held) as (connection, lines):
        connection.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        [exchange] = held.exchanges
        exchange.start_response(200, [(b"Content-Length", b"100")])
        exchange.write(b"z" * 40)
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        assert lines() == [f'127.0.0.1 - - {STAMP} "GET /x HTTP/1.1" 200 40 "-" "-"']


@pytest.mark.parametrize(
    ("pieces", "request_field"),
    [
        ([b"GET /x HTTP/1.1\r\n"], "GET /x HTTP/1.1"),
        ([b"GET /x HTTP/1.1\r\nHost: a\r\n"], "GET /x HTTP/1.1"),
        ([b"GET /x HT", b"TP/1.1\r\n"], "GET /x HTTP/1.1"),
        ([b"GET /x", b" HTTP/1.1\r\nUser-Agent: slow\r\n"], "GET /x HTTP/1.1"),
        ([b"GET /x HT"], "GET /x"),
    ],
)
def test_head_timeout_after_the_request_line_logs_it_whole(
    pieces: list[bytes], request_field: str
) -> None:
    """A slow client whose request line arrived whole (the common 408) is logged with
    the whole line, version included, as nginx does; a line cut short stays cut.
    """
    with logged(Hello(), header_timeout=10.0) as (connection, lines):
        for piece in pieces:
            connection.send(piece)
        connection.clock.advance(10.5)
        sent = body_length(connection)
        assert lines() == [f'127.0.0.1 - - {STAMP_LATER} "{request_field}" 408 {sent} "-" "-"']


# -- $request_time ----------------------------------------------------------------------

TIMED = LogFormat('"$request" $status $request_time')


def test_request_time_runs_from_the_first_byte_to_the_end_of_the_response() -> None:
    """As nginx's $request_time: from the request's first byte (a head that trickled
    in counts) to the end of its response; a kept-alive connection's idle time
    before the next request does not.
    """
    held = Held()
    with logged(held, log_format=TIMED) as (connection, lines):
        connection.send(b"GET /one HTTP/1.1\r\n")
        connection.clock.advance(2)
        connection.send(b"Host: a\r\n\r\n")
        connection.clock.advance(1.25)
        held.exchanges[0].start_response(200, [])
        held.exchanges[0].finish(b"ok")
        connection.clock.advance(4)  # idle, kept alive
        connection.send(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        connection.clock.advance(0.5)
        held.exchanges[1].start_response(200, [])
        held.exchanges[1].finish(b"ok")
        assert lines() == ['"GET /one HTTP/1.1" 200 3.250', '"GET /two HTTP/1.1" 200 0.500']


def test_a_request_behind_a_body_is_timed_from_the_read_that_brought_it() -> None:
    """A request that begins in the read that ends the body before it starts then,
    not with the request before it.
    """
    held = Held()
    with logged(held, log_format=TIMED) as (connection, lines):
        connection.send(b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n")
        connection.clock.advance(1)
        connection.send(b"okGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        connection.clock.advance(1)
        held.exchanges[0].start_response(200, [])
        held.exchanges[0].finish(b"ok")
        held.exchanges[1].start_response(200, [])
        held.exchanges[1].finish(b"ok")
        assert lines() == ['"POST /one HTTP/1.1" 200 2.000', '"GET /two HTTP/1.1" 200 1.000']


def test_a_request_parsed_while_reading_is_paused_is_timed_from_then() -> None:
    """Behind two pipelined requests reading is paused; bytes parsed meanwhile (a
    read already under way, or held-back bytes replayed) start their request's
    time when they are parsed, not with the request before.
    """
    held = Held()
    with logged(held, log_format=TIMED) as (connection, lines):
        connection.send(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"
        )
        connection.clock.advance(1)
        connection.send(b"okGET /three HTTP/1.1\r\nHost: a\r\n\r\n")
        connection.clock.advance(1)
        for index in range(3):
            held.exchanges[index].start_response(200, [])
            held.exchanges[index].finish(b"ok")
        assert lines()[2] == '"GET /three HTTP/1.1" 200 1.000'


def test_a_refused_request_is_timed_too() -> None:
    """A head that timed out took the header timeout, to the 408."""
    with logged(Hello(), log_format=TIMED, header_timeout=10.0) as (connection, lines):
        connection.send(b"GET /slow")
        connection.clock.advance(10.5)
        assert lines() == ['"GET /slow" 408 10.500']
