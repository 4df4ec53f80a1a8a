"""The HTTP/1.1 protocol through raw bytes: persistence, pipelining, framing, timeouts,
limits and flow control. Handlers here are small Exchange handlers (no WSGI), so the
protocol is tested on its own; responses are parsed with h11.
"""

from __future__ import annotations

import itertools
import re
import tempfile
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from twistwsgi.http.exchange import Exchange
from twistwsgi.http.protocol import (
    BODY_HIGH_WATER,
    DISPATCH_BUFFER,
    IDLE_GRACE,
    LARGE_BODY,
    LARGE_BODY_READ_SIZE,
    LINGER_TIMEOUT,
    MAX_PIPELINED,
    MAX_QUEUED,
    METHOD_NOT_IMPLEMENTED,
    NOT_HTTP,
    PIPELINE_SLICE,
    HTTP11Exchange,
    Refusal,
    _find_bare_cr,
)
from twistwsgi.http.request import PreparedHeaders, describe_peer
from twistwsgi.http.rules import unknown_method_status
from twistwsgi.http.sendfile import CLIENT_GONE
from twistwsgi.http.settings import HttpSettings
from twistwsgi.testing import Connection, capture_log_events, connect, parse_responses

GET = b"GET /%s HTTP/1.1\r\nHost: example.com\r\n\r\n"


def get(path: bytes = b"") -> bytes:
    return GET % path


class Echo:
    """Answers every request with its path, at once."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    def handle(self, exchange: Exchange) -> None:
        self.seen.append(exchange)
        exchange.start_response(200, [(b"Content-Type", b"text/plain")])
        exchange.finish(exchange.request.path)


class Held:
    """Keeps every exchange for the test to answer later."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def handle(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    def answer_all(self, body: bytes) -> int:
        """Answer 200 with ``body`` to each exchange, those it lets in too; say how many."""
        answered = 0
        while answered < len(self.exchanges):
            exchange = self.exchanges[answered]
            exchange.start_response(200, [])
            exchange.finish(body)
            answered += 1
        return answered


class BodyCollector:
    """Attaches a receiver and records what arrives."""

    def __init__(self, respond: bool = True) -> None:
        self.respond = respond
        self.exchanges: list[Exchange] = []
        self.bodies: list[list[bytes]] = []
        self.finished: list[bool] = []
        self.failures: list[Exception] = []

    def handle(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        pieces: list[bytes] = []
        self.bodies.append(pieces)
        collector = self

        class Receiver:
            def body_received(self, data: bytes) -> None:
                pieces.append(data)

            def body_finished(self) -> None:
                collector.finished.append(True)
                if collector.respond:
                    exchange.start_response(200, [])
                    exchange.finish(b"".join(pieces))

            def body_failed(self, reason: Exception) -> None:
                collector.failures.append(reason)

        exchange.receive_body(Receiver())


def open_connection(handler: Any, **settings: Any) -> Connection:
    return connect(handler, settings=HttpSettings(**settings))


def streamed_post(length: int, path: bytes = b"/") -> bytes:
    """A POST head with Content-Length ``length`` and enough body to be dispatched
    before the body is complete (DISPATCH_BUFFER bytes).
    """
    return (
        b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (path, length)
        + b"x" * DISPATCH_BUFFER
    )


# -- persistence ----------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    """HTTP/1.1 connections persist by default (RFC 9112 9.3)."""
    connection = open_connection(Echo())
    for path in (b"a", b"b", b"c"):
        connection.send(get(path))
    responses = parse_responses(connection.take())
    assert [r.body for r in responses] == [b"/a", b"/b", b"/c"]
    assert all(r.header(b"connection") is None for r in responses)
    assert not connection.is_closed()


def test_connection_close_request_closes_after_response() -> None:
    """A request with Connection: close gets its response, then the connection ends."""
    connection = open_connection(Echo())
    connection.send(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert response.header(b"connection") == b"close"
    assert connection.is_closed()


def test_http10_closes_unless_keep_alive_is_asked_for() -> None:
    """HTTP/1.0 closes after the response by default (RFC 9112 9.3)."""
    connection = open_connection(Echo())
    connection.send(b"GET /x HTTP/1.0\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert response.header(b"connection") == b"close"
    assert connection.is_closed()


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize("pipelined", [False, True])
def test_proxy_connection_close_does_not_end_the_connection(
    version: bytes, pipelined: bool
) -> None:
    """A connection the response keeps open serves the next request, Proxy-Connection or not.

    Proxy-Connection is no HTTP field (nginx ignores it too). llhttp counted its
    close and refused the next request with a 400 the response had not announced.
    """
    connection = open_connection(Echo())
    first = b"GET /a HTTP/%s\r\nHost: a\r\nProxy-Connection: close\r\n" % version
    if version == b"1.0":
        first += b"Connection: keep-alive\r\n"
    second = b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    if pipelined:
        connection.send(first + b"\r\n" + second)
    else:
        connection.send(first + b"\r\n")
        connection.send(second)
    responses = parse_responses(connection.take())
    assert [(r.status, r.body) for r in responses] == [(200, b"/a"), (200, b"/b")]
    assert responses[0].header(b"connection") in (None, b"keep-alive")
    assert not connection.is_closed()


@pytest.mark.parametrize(
    "fields",
    [b"Connection: close, keep-alive\r\n", b"Connection: keep-alive\r\nConnection: close\r\n"],
)
def test_close_wins_over_keep_alive_on_http10(fields: bytes) -> None:
    """An HTTP/1.0 client naming both options gets a close (RFC 9112 9.3, 9.6)."""
    connection = open_connection(Echo())
    connection.send(b"GET /x HTTP/1.0\r\n" + fields + b"\r\nGET /y HTTP/1.0\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert response.header(b"connection") == b"close"
    assert connection.is_closed()


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize(
    ("lines", "reads"),
    [
        # The request line whole and single-spaced in the read it begins: its version
        # is read from the bytes (see on_headers_complete).
        (b"GET /x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", None),
        (b"GET http://a/x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", None),
        # Otherwise llhttp is asked: an empty line first, more spaces. A line that a
        # read cuts (after the version, inside it, inside the target) is kept whole
        # across the reads (its protocol is checked in it) and read from its bytes.
        (b"\r\nGET /x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", None),
        (b"GET  /x  HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", None),
        (b"GET /x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", 16),
        (b"GET /x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", 13),
        (b"GET /x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", 5),
    ],
)
def test_request_version_read_every_way(lines: bytes, reads: int | None, version: bytes) -> None:
    """The version is the request line's, whichever way it is found (RFC 9112 2.3)."""
    echo = Echo()
    connection = open_connection(echo)
    request = lines % version
    if reads is None:
        connection.send(request)
    else:
        connection.send(request[:reads])
        connection.send(request[reads:])
    [response] = parse_responses(connection.take())
    assert response.body == b"/x"
    assert [exchange.request.version for exchange in echo.seen] == [version]


class VersionCounter:
    """Passes everything to llhttp's parser, counting how often the version is asked."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.asked = 0

    def get_http_version(self) -> str:
        self.asked += 1
        return str(self.parser.get_http_version())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


@pytest.mark.parametrize(
    ("reads", "asked"),
    [
        ([b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"], 0),
        ([b"GET /x HTTP/1.1\r\nHo", b"st: a\r\n\r\n"], 0),
        # The line's reads are kept together (its protocol is checked in them).
        ([b"GET /x HTTP/1.", b"1\r\nHost: a\r\n\r\n"], 0),
        # A request pipelined behind another starts a piece of the read.
        ([b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" * 2], 0),
        ([b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n"], 1),
        ([b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n"], 1),
    ],
)
def test_request_version_is_read_from_a_whole_line(reads: list[bytes], asked: int) -> None:
    """The version is asked of llhttp only when the line is not plainly single-spaced
    from the first byte of what was kept of it.
    """
    echo = Echo()
    connection = open_connection(echo)
    counter = VersionCounter(connection.protocol._parser)
    connection.protocol._parser = counter  # type: ignore[assignment]
    for data in reads:
        connection.send(data)
    assert {exchange.request.version for exchange in echo.seen} == {b"1.1"}
    assert counter.asked == asked


@pytest.mark.parametrize(("first", "second"), [(b"1.1", b"1.0"), (b"1.0", b"1.1")])
def test_request_version_of_a_request_pipelined_in_the_same_read(
    first: bytes, second: bytes
) -> None:
    """A request behind another in one read has its own version, not the first's."""
    echo = Echo()
    connection = open_connection(echo)
    request = b"GET /x HTTP/%s\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
    connection.send(request % first + request % second)
    assert [exchange.request.version for exchange in echo.seen] == [first, second]


def test_http2_version_is_refused_however_the_line_is_read() -> None:
    """A version other than 1.0 and 1.1 gets 505, its line whole in a read or not."""
    for reads in (None, 9):
        connection = open_connection(Echo())
        request = b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n"
        if reads is None:
            connection.send(request)
        else:
            connection.send(request[:reads])
            connection.send(request[reads:])
        assert connection.take().startswith(b"HTTP/1.1 505 ")


def test_prepared_headers_go_with_each_response_s_own_status_line() -> None:
    """Fields a handler sends with many responses are serialised once; each response
    still has its own status line (the reason kept, another status with it).
    """
    fields = PreparedHeaders([(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")])
    answers = {b"/a": (200, None), b"/b": (200, b"Fine"), b"/c": (404, b"Fine"), b"/d": (200, None)}

    class Prepared:
        def handle(self, exchange: Exchange) -> None:
            status, reason = answers[exchange.request.path]
            exchange.start_response(status, fields, reason)
            exchange.finish(b"ok")

    connection = open_connection(Prepared())
    for path in answers:
        connection.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    responses = parse_responses(connection.take())
    assert [(r.status, r.reason) for r in responses] == [
        (200, b"OK"),
        (200, b"Fine"),
        (404, b"Fine"),
        (200, b"OK"),
    ]
    assert [r.body for r in responses] == [b"ok"] * 4
    assert all(r.header(b"content-type") == b"text/plain" for r in responses)


def test_http10_keep_alive_persists_with_a_length() -> None:
    """HTTP/1.0 with Connection: keep-alive persists and says so."""
    connection = open_connection(Echo())
    connection.send(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    raw = connection.take()
    assert b"Connection: keep-alive\r\n" in raw.split(b"\r\n\r\n")[0] + b"\r\n"
    assert not connection.is_closed()
    connection.send(b"GET /y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert connection.take().endswith(b"/y")


def test_http10_streamed_response_is_close_delimited() -> None:
    """An HTTP/1.0 response without a length ends when the connection closes."""
    held = Held()
    connection = open_connection(held)
    connection.send(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    [exchange] = held.exchanges
    exchange.start_response(200, [])
    exchange.write(b"part one ")
    exchange.finish(b"part two")
    raw = connection.take()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert b"Connection: close" in head
    assert body == b"part one part two"
    assert connection.is_closed()


def test_idle_keep_alive_connection_closes_after_timeout() -> None:
    """An idle persistent connection is closed after keepalive_timeout."""
    connection = open_connection(Echo(), keepalive_timeout=5.0)
    connection.send(get())
    connection.take()
    connection.clock.advance(4.9)
    assert not connection.is_closed()
    connection.clock.advance(0.2)
    assert connection.is_closed()
    assert connection.take() == b""


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_keepalive_timeout_zero_says_connection_close(version: bytes) -> None:
    """keepalive_timeout 0 disables persistence: each response says Connection: close
    (RFC 9112 9.6) and the connection closes after it, keep-alive asked for or not.
    """
    connection = open_connection(Echo(), keepalive_timeout=0.0)
    extra = b"Connection: keep-alive\r\n" if version == b"1.0" else b""
    connection.send(b"GET /a HTTP/%s\r\nHost: a\r\n%s\r\n" % (version, extra))
    (response,) = parse_responses(connection.take())
    assert response.header(b"connection") == b"close"
    assert connection.is_closed()


def test_new_connection_without_bytes_closes_quietly_after_header_timeout() -> None:
    """A connection that never sends a byte is closed without a 408."""
    connection = open_connection(Echo(), header_timeout=10.0)
    connection.clock.advance(10.1)
    assert connection.is_closed()
    assert connection.take() == b""


# -- pipelining -----------------------------------------------------------------------


def test_pipelined_responses_come_in_request_order() -> None:
    """Responses to pipelined requests are sent strictly in order, even when a later
    handler is ready first (RFC 9112 9.3.2).
    """
    held = Held()
    connection = open_connection(held)
    connection.send(get(b"1") + get(b"2") + get(b"3"))
    # Only the first is dispatched while it is unanswered.
    assert len(held.exchanges) == 1
    assert connection.transport.producerState == "paused"
    first = held.exchanges[0]
    first.start_response(200, [])
    first.finish(b"one")
    assert len(held.exchanges) == 2
    held.exchanges[1].start_response(200, [])
    held.exchanges[1].finish(b"two")
    held.exchanges[2].start_response(200, [])
    held.exchanges[2].finish(b"three")
    assert [r.body for r in parse_responses(connection.take())] == [b"one", b"two", b"three"]
    assert connection.transport.producerState == "producing"


def test_error_after_pipelined_requests_waits_for_their_responses() -> None:
    """A malformed request behind a pending one is answered after it."""
    held = Held()
    connection = open_connection(held)
    connection.send(get(b"ok") + b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n")
    assert connection.take() == b""
    [exchange] = held.exchanges
    exchange.start_response(200, [])
    exchange.finish(b"fine")
    responses = parse_responses(connection.take())
    assert [r.status for r in responses] == [200, 400]
    assert len(held.exchanges) == 1


def test_a_long_pipeline_answered_at_once_is_answered_whole() -> None:
    """Thousands of pipelined requests in one read, each answered as it is dispatched:
    every one gets its response, in order (dispatch loops; it does not recurse).
    """
    echo = Echo()
    connection = open_connection(echo, keepalive_requests=0)  # (more than 1000)
    count = 2500
    burst = b"".join(get(b"%d" % number) for number in range(count))
    connection.send(burst)
    responses = parse_responses(connection.take())
    assert [r.body for r in responses] == [b"/%d" % number for number in range(count)]
    assert connection.transport.producerState == "producing"
    assert not connection.is_closed()


def test_keepalive_requests_closes_the_connection_after_the_last() -> None:
    """As nginx's keepalive_requests: the last request a connection serves is answered
    with Connection: close and the connection closes; a request pipelined behind it
    gets no answer (the client sends it again on a new connection).
    """
    connection = open_connection(Echo(), keepalive_requests=3)
    connection.send(get(b"1") + get(b"2"))
    first, second = parse_responses(connection.take())
    assert first.header(b"connection") is second.header(b"connection") is None
    assert not connection.is_closed()
    connection.send(get(b"3") + get(b"4"))
    (third,) = parse_responses(connection.take())
    assert (third.body, third.header(b"connection")) == (b"/3", b"close")
    # The request pipelined behind is read and dropped while the close lingers, so
    # the kernel does not reset the connection under the responses (the client did
    # not know the third was the last); then the connection closes.
    assert not connection.is_closed()
    connection.send(get(b"5"))
    assert connection.take() == b""
    connection.clock.advance(LINGER_TIMEOUT)
    assert connection.is_closed()


def test_a_last_request_with_nothing_behind_closes_at_once() -> None:
    connection = open_connection(Echo(), keepalive_requests=1)
    connection.send(get(b"1"))
    (only,) = parse_responses(connection.take())
    assert only.header(b"connection") == b"close"
    assert connection.is_closed()


def test_keepalive_time_makes_the_first_request_after_it_the_last() -> None:
    """As nginx's keepalive_time: a connection older than it when a request begins
    answers that one with Connection: close, then closes; counted from the
    connection's opening, whatever its requests did since.
    """
    clock = Clock()
    clock.advance(1000)  # (a server up for a while: the clock is not at 0)
    connection = connect(Echo(), settings=HttpSettings(keepalive_time=60.0), clock=clock)
    for wait in (30, 29):  # 30 s, then 59 s since the connection opened
        clock.advance(wait)
        connection.send(get(b"/"))
        (response,) = parse_responses(connection.take())
        assert response.header(b"connection") is None
    clock.advance(1)  # 60 s
    connection.send(get(b"60"))
    (last,) = parse_responses(connection.take())
    assert (last.body, last.header(b"connection")) == (b"/60", b"close")
    assert connection.is_closed()

    forever = connect(Echo(), settings=HttpSettings(keepalive_time=0), clock=clock)
    clock.advance(10**6)
    forever.send(get(b"x"))
    assert parse_responses(forever.take())[0].header(b"connection") is None


@pytest.mark.parametrize("limit", [0, 1000])
def test_keepalive_requests_zero_is_no_limit(limit: int) -> None:
    connection = open_connection(Echo(), keepalive_requests=limit)
    connection.send(b"".join(get(b"%d" % number) for number in range(999)))
    assert len(parse_responses(connection.take())) == 999
    assert not connection.is_closed()


@given(
    data=st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"0"]), max_size=30).map(b"".join),
    start=st.integers(min_value=0, max_value=40),
)
def test_a_bare_cr_is_found_where_the_rfc_s_definition_finds_it(data: bytes, start: int) -> None:
    """RFC 9112 2.2: a CR that no LF follows, the last byte included; -1 for none."""
    match = re.compile(rb"\r(?!\n)").search(data, start)
    assert _find_bare_cr(data, start) == (match.start() if match else -1)


@pytest.mark.parametrize("sent", [40_000, 100_000])
def test_the_body_in_a_large_read_reaches_the_handler_in_one_piece(sent: int) -> None:
    """A read that holds a head and body bytes of a known length hands those bytes
    over whole, not a PIPELINE_SLICE at a time (a 64 KiB read was 64 pieces, each a
    trip through the parser and the handler); requests pipelined after the body in
    the same read are still parsed a slice at a time, and answered in order.
    """
    collector = BodyCollector()
    connection = open_connection(collector)
    length = 100_000
    body = bytes(range(14, 256)) * (length // 242) + b"z" * (length % 242)  # (no CR)
    head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length
    after = get(b"1") + get(b"2") if sent == length else b""
    connection.send(head + body[:sent] + after)
    if sent < length:
        connection.send(body[sent:])
    # The head's slice, its body bytes, then the rest of the read whole (and the
    # second read's).
    pieces = collector.bodies[0]
    assert b"".join(pieces) == body
    assert len(pieces[0]) < PIPELINE_SLICE
    assert pieces[1:] == [body[len(pieces[0]) : sent], *([body[sent:]] if sent < length else [])]
    responses = parse_responses(connection.take())
    assert [r.body for r in responses] == [body, *([b"", b""] if after else [])]
    assert len(collector.exchanges) == (3 if after else 1)


def test_a_pipeline_is_parsed_only_so_far_ahead() -> None:
    """A read full of pipelined requests behind one that is not answered yet queues
    only about MAX_PIPELINED of them; the rest stays unparsed bytes, reading stays
    paused until they are all answered, and later bytes keep their place.
    """
    held = Held()
    connection = open_connection(held)
    count = 600
    burst = b"".join(get(b"%d" % number) for number in range(count))
    assert len(burst) > 4 * PIPELINE_SLICE
    connection.send(burst)
    protocol: Any = connection.protocol
    bound = MAX_PIPELINED + 1 + PIPELINE_SLICE // len(get(b"0"))  # a slice's worth more
    assert len(protocol._queue) <= bound
    assert connection.transport.producerState == "paused"
    connection.send(get(b"last"))  # a transport may still deliver what it had read
    answered = 0
    while answered < len(held.exchanges):
        assert len(protocol._queue) <= bound
        exchange = held.exchanges[answered]
        exchange.start_response(200, [])
        exchange.finish(exchange.request.path)
        answered += 1
    paths = [r.body for r in parse_responses(connection.take())]
    assert paths == [b"/%d" % number for number in range(count)] + [b"/last"]
    assert connection.transport.producerState == "producing"


def test_a_pipeline_behind_a_body_in_the_same_read_is_parsed_only_so_far_ahead() -> None:
    """The body bytes of a known length in a large read go to the parser whole; the
    requests pipelined after them, in the same read, are still parsed a slice at a
    time and held back once about MAX_PIPELINED of them wait.
    """
    collector = BodyCollector(respond=False)
    connection = open_connection(collector)
    body = b"b" * 5000
    post = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    count = 600
    burst = b"".join(get(b"%d" % number) for number in range(count))
    connection.send(post + body + burst)
    protocol: Any = connection.protocol
    assert b"".join(collector.bodies[0]) == body
    assert len(protocol._queue) <= MAX_PIPELINED + 2 + PIPELINE_SLICE // len(get(b"0"))
    assert protocol._held
    assert connection.transport.producerState == "paused"


# -- framing --------------------------------------------------------------------------


def test_single_write_response_gets_content_length() -> None:
    """A response finished in one call is length-delimited, not chunked."""
    connection = open_connection(Echo())
    connection.send(get(b"hello"))
    raw = connection.take()
    assert b"Content-Length: 6\r\n" in raw
    assert b"Transfer-Encoding" not in raw


def test_streamed_response_is_chunked() -> None:
    """A response written in pieces without a length uses chunked coding, and the
    empty write is not sent as a (terminating) empty chunk.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    [exchange] = held.exchanges
    exchange.start_response(200, [(b"X-Kind", b"stream")])
    exchange.write(b"abc")
    exchange.write(b"")
    exchange.write(b"defg")
    exchange.finish()
    raw = connection.take()
    assert b"Transfer-Encoding: chunked\r\n" in raw
    [response] = parse_responses(raw)
    assert response.body == b"abcdefg"
    assert response.header(b"x-kind") == b"stream"


def test_head_response_has_headers_and_no_body() -> None:
    """HEAD gets the headers GET would (including the length), never a body."""
    connection = open_connection(Echo())
    connection.send(b"HEAD /abc HTTP/1.1\r\nHost: a\r\n\r\n")
    raw = connection.take()
    assert raw.endswith(b"\r\n\r\n")
    [response] = parse_responses(raw, [b"HEAD"])
    assert response.header(b"content-length") == b"4"
    assert response.body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_send_no_body(status: int) -> None:
    """204 and 304 carry no body and no chunked framing (RFC 9110 15.3.5, 15.4.5)."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    [exchange] = held.exchanges
    exchange.start_response(status, [(b"Content-Length", b"5")])
    exchange.finish(b"ignored")
    raw = connection.take()
    assert raw.endswith(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in raw
    assert (b"Content-Length" in raw) is (status == 304)
    [response] = parse_responses(raw)
    assert response.status == status


def test_handler_hop_by_hop_headers_are_dropped_but_close_is_honoured() -> None:
    """Hop-by-hop fields from a handler are not sent; Connection: close closes."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    [exchange] = held.exchanges
    exchange.start_response(
        200,
        [
            (b"Transfer-Encoding", b"gzip"),
            (b"Keep-Alive", b"timeout=99"),
            (b"Connection", b"close"),
            (b"Upgrade", b"h2c"),
        ],
    )
    exchange.finish(b"x")
    raw = connection.take()
    head = raw.split(b"\r\n\r\n")[0]
    assert b"gzip" not in head and b"timeout=99" not in head and b"h2c" not in head
    assert b"Connection: close" in head
    assert connection.is_closed()


def test_short_response_aborts_the_connection() -> None:
    """A response that ends before its Content-Length cannot be delimited: abort."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    [exchange] = held.exchanges
    exchange.start_response(200, [(b"Content-Length", b"10")])
    exchange.finish(b"short")
    assert connection.is_closed()


def test_long_response_is_truncated_to_its_content_length() -> None:
    """Bytes beyond the declared Content-Length are not sent."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    [exchange] = held.exchanges
    exchange.start_response(200, [(b"Content-Length", b"3")])
    exchange.finish(b"abcdef")
    [response] = parse_responses(connection.take())
    assert response.body == b"abc"
    # The framing stayed right, and the head promised persistence: no unannounced
    # close (http.client's next request failed with RemoteDisconnected).
    assert not connection.is_closed()
    connection.send(get(b"next"))
    assert len(held.exchanges) == 2


def test_date_and_server_are_added_once() -> None:
    """Date and Server are added unless the handler set them."""
    held = Held()
    connection = open_connection(held)
    connection.send(get() + get())
    held.exchanges[0].start_response(200, [])
    held.exchanges[0].finish()
    held.exchanges[1].start_response(200, [(b"Server", b"mine"), (b"Date", b"x")])
    held.exchanges[1].finish()
    first, second = parse_responses(connection.take())
    assert first.header(b"server") == b"twistwsgi"
    assert first.header(b"date") is not None
    assert second.header_values(b"server") == [b"mine"]
    assert second.header_values(b"date") == [b"x"]


# -- a bare CR before a request line (RFC 9112 2.2) -------------------------------------


def _statuses(connection: Connection) -> list[int]:
    return [r.status for r in parse_responses(connection.take())]


def _bodies(collector: BodyCollector) -> list[bytes]:
    return [b"".join(pieces) for pieces in collector.bodies]


@pytest.mark.parametrize(
    "reads",
    [
        [b"\r" + get(b"a")],
        [b"\r", get(b"a")],
        [b"\r\n\r", get(b"a")],
        [b"\r\r\n" + get(b"a")],
        [b"\n\r" + get(b"a")],
        [b"\r\nG", b"ET /a HTTP/1.1\r\r\n"],
    ],
    ids=["one-read", "cr-alone", "after-empty-line", "cr-cr-lf", "lf-cr", "cr-cr-in-line"],
)
def test_bare_cr_before_the_first_request_line_is_refused(reads: list[bytes]) -> None:
    """A CR that no LF follows before a request line is no empty line (RFC 9112 2.2):
    400 with Connection: close, whichever read the CR and the next byte come in.
    """
    echo = Echo()
    connection = open_connection(echo)
    for data in reads:
        connection.send(data)
    [response] = parse_responses(connection.take())
    assert response.status == 400
    assert response.header(b"connection") == b"close"
    assert echo.seen == []


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_bare_cr_between_keep_alive_requests_is_refused(split: str) -> None:
    """The first request is answered, the CR before the next refused: also when it
    comes alone, or byte by byte, on a connection kept alive.
    """
    echo = Echo()
    connection = open_connection(echo)
    connection.send(get(b"a"))
    assert _statuses(connection) == [200]
    rest = b"\r\n\r" + get(b"b")
    for data in [rest] if split == "whole" else [rest[i : i + 1] for i in range(len(rest))]:
        connection.send(data)
    assert _statuses(connection) == [400]
    assert [exchange.request.path for exchange in echo.seen] == [b"/a"]


@pytest.mark.parametrize(
    "body",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\ra\rb",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\n\ra\rb\r\n3\r\n\r\n\r\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
@pytest.mark.parametrize("after", [b"", b"\r\n", b"\r"])
def test_bare_crs_in_a_pipelined_body_are_data(body: bytes, after: bytes) -> None:
    """CRs inside a body are content, and a pipelined request follows it; a bare CR
    right after the body is refused (after the body's request is answered).
    """
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(body + after + get(b"next"))
    statuses = _statuses(connection)
    if after == b"\r":
        assert statuses == [200, 400]
        assert len(collector.exchanges) == 1
    else:
        assert statuses == [200, 200]
        assert [e.request.path for e in collector.exchanges] == [b"/", b"/next"]
    assert _bodies(collector)[0] in (b"\ra\rb", b"\ra\rb\r\n\r")


def test_bare_crs_in_a_large_binary_body_then_a_pipelined_request() -> None:
    """A body read in large pieces, with a bare CR every few bytes, is passed on
    whole; the request pipelined after it is served (chunked and by length).
    """
    data = (bytes(range(256)) + b"\r\n\r\n\r\r\n") * 40  # bare CRs, CR LF (CR LF)
    chunked = b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
    for framing, body in (
        (b"Content-Length: %d\r\n" % len(data), data),
        (b"Transfer-Encoding: chunked\r\n", chunked),
    ):
        collector = BodyCollector()
        connection = open_connection(collector)
        stream = b"POST / HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n" + body + get(b"next")
        for start in range(0, len(stream), 3000):
            connection.send(stream[start : start + 3000])
        assert _statuses(connection) == [200, 200]
        assert _bodies(collector) == [data, b""]


@pytest.mark.parametrize("reads", [[b"\r", b"\n" + get(b"a")], [b"\r\n\n\r", b"\n", get(b"a")]])
def test_cr_lf_split_across_reads_before_a_request_is_an_empty_line(reads: list[bytes]) -> None:
    """An empty line whose CR ends one read and whose LF starts the next is ignored."""
    echo = Echo()
    connection = open_connection(echo)
    for data in reads:
        connection.send(data)
    assert _statuses(connection) == [200]
    assert [exchange.request.path for exchange in echo.seen] == [b"/a"]


@pytest.mark.parametrize(
    "data",
    [b"\r\n\r\n\r" * 20000, b"a\r\n\r\n\r" * 20000, bytes(range(256)) * 400],
    ids=["crlfcrlf-cr", "x-crlfcrlf-cr", "every-byte"],
)
@pytest.mark.parametrize("chunks", [1, 4])
def test_a_chunked_body_dense_with_bare_crs_is_not_cut_at_each(data: bytes, chunks: int) -> None:
    """Bare CRs in chunk data are data: the body reaches the handler in a few pieces
    per read, not one per CR (each piece is a parser call: a client could make the
    server do one per few bytes). The message can end only after its last chunk
    (RFC 9112 7.1), so nothing inside a chunk needs looking at.
    """
    size = -(-len(data) // chunks)
    body = b"".join(
        b"%x\r\n" % len(data[at : at + size]) + data[at : at + size] + b"\r\n"
        for at in range(0, len(data), size)
    )
    stream = body + b"0\r\n\r\n\r" + get(b"next")
    collector = BodyCollector()
    connection = open_connection(collector, max_body=0)
    # (The head alone first: a read that begins a request is parsed in slices.)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    reads = [stream[at : at + 65536] for at in range(0, len(stream), 65536)]
    for read in reads:
        connection.send(read)
    assert _statuses(connection) == [200, 400]  # the CR after the body is still refused
    assert _bodies(collector) == [data]
    assert len(collector.bodies[0]) <= len(reads) + 2 * chunks


# -- request bodies -------------------------------------------------------------------


def test_content_length_body_is_delivered() -> None:
    """A Content-Length body reaches the receiver, then body_finished."""
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
    connection.send(b"lo")
    assert b"".join(collector.bodies[0]) == b"hello"
    assert parse_responses(connection.take())[0].body == b"hello"


def test_chunked_body_is_decoded() -> None:
    """A chunked body is decoded before it reaches the receiver."""
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 1\r\n\r\n"
    )
    assert parse_responses(connection.take())[0].body == b"abcde"


def test_small_body_is_received_before_the_handler_runs() -> None:
    """A small body arrives whole before the handler is called, so a slow client
    never holds a handler (or a worker thread).
    """
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
    assert collector.exchanges == []
    connection.send(b"67890")
    assert len(collector.exchanges) == 1
    assert collector.bodies[0] == [b"12345", b"67890"]


def test_slow_small_body_times_out_without_reaching_the_handler() -> None:
    """A small body that stalls is answered 408 by the server alone."""
    collector = BodyCollector()
    connection = open_connection(collector, body_timeout=5.0)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
    connection.clock.advance(5.1)
    [response] = parse_responses(connection.take())
    assert response.status == 408
    assert collector.exchanges == []


def test_malformed_small_chunked_body_never_reaches_the_handler() -> None:
    """A malformed chunk in a body still being buffered is refused with 400 before
    any handler sees the request.
    """
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.send(b"3\r\nabc\r\n")
    connection.send(b"zz\r\n")
    [response] = parse_responses(connection.take())
    assert response.status == 400
    assert collector.exchanges == []


@pytest.mark.parametrize("chunked", [False, True])
def test_an_unread_body_is_discarded_and_the_connection_kept(chunked: bool) -> None:
    """A handler that answers without reading the body (a 403 to an upload, a
    static 405 to a POST) keeps the connection, whatever the body's size, as nginx
    does: the rest is read and discarded, and the next request is served. The head
    said keep-alive; closing after it failed a client's next request
    (RemoteDisconnected) and dropped a pipelined one.
    """
    connection = open_connection(Echo(), max_body=0)
    size = 2_000_000
    if chunked:
        connection.send(b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"%x\r\n%s\r\n" % (DISPATCH_BUFFER, b"x" * DISPATCH_BUFFER)
        for _ in range(size // DISPATCH_BUFFER):
            connection.send(piece)
        connection.send(b"0\r\n\r\n" + get(b"b"))
    else:
        connection.send(streamed_post(size, b"/a"))
        rest = size - DISPATCH_BUFFER
        for _ in range(rest // 1000):
            connection.send(b"y" * 1000)
        connection.send(b"y" * (rest % 1000) + get(b"b"))
    responses = parse_responses(connection.take())
    assert [r.body for r in responses] == [b"/a", b"/b"]
    assert responses[0].header(b"connection") is None
    assert not connection.is_closed()


def test_a_body_discarded_after_the_response_is_given_the_body_timeout() -> None:
    """A client that stops sending the body nobody reads is cut off after
    body_timeout, as any stalled body is.
    """
    connection = open_connection(Echo(), body_timeout=7.0)
    connection.send(streamed_post(900000, b"/a"))
    [response] = parse_responses(connection.take())
    assert response.body == b"/a"
    connection.send(b"x" * 5000)
    connection.clock.advance(6.9)
    connection.send(b"x" * 5000)  # a read: the deadline starts again
    connection.clock.advance(6.9)
    assert not connection.is_closed()
    connection.clock.advance(0.2)  # body_timeout, then a lingering close
    connection.clock.advance(LINGER_TIMEOUT)
    assert connection.is_closed()
    assert connection.take() == b""  # no 408: it would be read as the next answer


@pytest.mark.parametrize(
    "rest", [b"5\r\nabcdefg\r\n", b"zz\r\n", b"100001\r\n" + b"x" * 0x100001 + b"\r\n0\r\n\r\n"]
)
def test_a_discarded_body_that_fails_closes_without_a_second_answer(rest: bytes) -> None:
    """Malformed (or over max_body) after its response was sent: the 400 or 413 that
    followed the 200 would be read by the client as the answer to its next request.
    """
    connection = open_connection(Echo(), max_body=1024 * 1024)
    connection.send(b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.send(b"%x\r\n%s\r\n" % (DISPATCH_BUFFER, b"x" * DISPATCH_BUFFER))
    [response] = parse_responses(connection.take())
    assert response.status == 200
    with capture_log_events() as events:
        connection.send(rest)
    assert any("unread body of an answered request failed" in formatEvent(e) for e in events)
    # Lingering: a client still uploading must not get a reset that would take
    # the response it was sent with it.
    assert not connection.is_closed()
    connection.send(b"x" * 1000)
    connection.clock.advance(LINGER_TIMEOUT)
    assert connection.take() == b""
    assert connection.is_closed()


def test_body_buffer_pauses_reading_until_receiver_attaches() -> None:
    """Unread body beyond the high-water mark stops reading from the client."""
    held = Held()
    connection = open_connection(held, max_body=0)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n")
    connection.send(b"x" * (BODY_HIGH_WATER + 1))
    assert connection.transport.producerState == "paused"
    received: list[bytes] = []

    class Receiver:
        def body_received(self, data: bytes) -> None:
            received.append(data)

        def body_finished(self) -> None:
            pass

        def body_failed(self, reason: Exception) -> None:
            pass

    held.exchanges[0].receive_body(Receiver())
    assert sum(map(len, received)) == BODY_HIGH_WATER + 1
    assert connection.transport.producerState == "producing"


def test_pause_body_stops_reading() -> None:
    """pause_body and resume_body drive the transport's reading."""
    held = Held()
    connection = open_connection(held)
    connection.send(streamed_post(DISPATCH_BUFFER * 2))
    exchange = held.exchanges[0]
    exchange.pause_body()
    assert connection.transport.producerState == "paused"
    exchange.resume_body()
    assert connection.transport.producerState == "producing"


class SocketLikeTransport(StringTransport):
    """A StringTransport with the read size a TCP transport has."""

    bufferSize = 65536  # noqa: N815 (Twisted's attribute name)


def test_large_bodies_are_read_in_larger_pieces_then_back_to_the_default() -> None:
    """A large or chunked body switches the socket read size up while it streams in;
    the next request (or a small body) reads with Twisted's default again.
    """
    transport = SocketLikeTransport()
    collector = BodyCollector()
    connection = connect(collector, transport=transport)
    sizes = []
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
    sizes.append(transport.bufferSize)
    connection.send(streamed_post(LARGE_BODY))
    sizes.append(transport.bufferSize)
    connection.send(b"x" * (LARGE_BODY - DISPATCH_BUFFER))
    sizes.append(transport.bufferSize)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
    sizes.append(transport.bufferSize)
    connection.send(b"0\r\n\r\n")
    sizes.append(transport.bufferSize)
    assert sizes == [65536, LARGE_BODY_READ_SIZE, 65536, LARGE_BODY_READ_SIZE, 65536]
    assert collector.finished == [True, True, True]


def test_max_body_is_decided_from_content_length() -> None:
    """A Content-Length over max_body is refused with 413 before any body byte."""
    held = Held()
    connection = open_connection(held, max_body=100)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert response.status == 413
    assert held.exchanges == []


def test_chunked_body_over_limit_fails_the_receiver_and_answers_413() -> None:
    """A chunked body that grows past max_body is cut off with 413."""
    collector = BodyCollector()
    connection = open_connection(collector, max_body=DISPATCH_BUFFER + 10)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.send(b"%x\r\n" % DISPATCH_BUFFER + b"x" * DISPATCH_BUFFER + b"\r\n")
    assert len(collector.exchanges) == 1  # streamed: dispatched before the limit
    connection.send(b"8\r\n12345678\r\n8\r\n12345678\r\n")
    assert len(collector.failures) == 1
    [response] = parse_responses(connection.take())
    assert response.status == 413
    assert response.header(b"connection") == b"close"


def test_malformed_chunk_after_dispatch_fails_the_body() -> None:
    """A body that turns out malformed after the head was accepted fails the
    receiver; the server answers 400 since the handler had not responded.
    """
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.send(b"%x\r\n" % DISPATCH_BUFFER + b"x" * DISPATCH_BUFFER + b"\r\n")
    with capture_log_events() as events:
        connection.send(b"zz\r\n")
    assert len(collector.failures) == 1
    [response] = parse_responses(connection.take())
    assert response.status == 400
    # Like every refusal, it has its line in the server log (docs/http.md).
    [line] = [formatEvent(e) for e in events if "Refused" in formatEvent(e)]
    assert line.startswith("Refused a request from 127.0.0.1:54321: 400 ")


def test_a_body_failing_after_the_response_started_drops_it_and_says_so() -> None:
    """The response cannot become a 400 any more: the connection closes without
    completing it (after lingering, as the client may still be sending), and the
    server log says why.
    """

    class StartsAtOnce:
        def handle(self, exchange: Exchange) -> None:
            exchange.start_response(200, [])
            exchange.write(b"partial")

    connection = open_connection(StartsAtOnce())
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.send(b"%x\r\n" % DISPATCH_BUFFER + b"x" * DISPATCH_BUFFER + b"\r\n")
    with capture_log_events() as events:
        connection.send(b"zz\r\n")
    connection.clock.advance(LINGER_TIMEOUT)
    assert connection.is_closed()
    assert not connection.take().endswith(b"0\r\n\r\n")
    lines = [formatEvent(e) for e in events]
    assert any(
        line.startswith("Dropped the response to 127.0.0.1:54321: its request body failed (400")
        for line in lines
    ), lines
    assert not any(line.startswith("Refused") for line in lines)


# -- Expect: 100-continue -------------------------------------------------------------


def test_continue_is_sent_only_when_the_handler_asks() -> None:
    """100 Continue goes out on continue_body(), not when the head arrives."""
    held = Held()
    connection = open_connection(held)
    connection.send(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    assert connection.take() == b""
    held.exchanges[0].continue_body()
    assert connection.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    held.exchanges[0].continue_body()
    assert connection.take() == b""


def test_refusing_without_continue_closes_the_connection() -> None:
    """A final response sent instead of 100 Continue closes the connection, since
    the client may or may not send the body (RFC 9110 10.1.1).
    """
    held = Held()
    connection = open_connection(held)
    connection.send(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 300\r\nExpect: 100-continue\r\n\r\n"
    )
    exchange = held.exchanges[0]
    exchange.start_response(403, [])
    exchange.finish(b"not for you")
    [response] = parse_responses(connection.take())
    assert response.status == 403
    assert response.header(b"connection") == b"close"


def test_continue_after_response_started_is_not_sent() -> None:
    """No 100 Continue once a final response has begun."""
    held = Held()
    connection = open_connection(held)
    connection.send(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.write(b"early")
    exchange.continue_body()
    assert b"100 Continue" not in connection.take()


def test_expect_continue_on_http10_is_ignored() -> None:
    """HTTP/1.0 clients do not wait for 100 Continue (RFC 9110 10.1.1)."""
    held = Held()
    connection = open_connection(held)
    connection.send(b"PUT / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert held.exchanges == []  # no 100-continue: the body is buffered first
    connection.send(b"abc")
    held.exchanges[0].continue_body()
    assert connection.take() == b""


# -- interim responses (RFC 9110 15.2) --------------------------------------------------


def test_interim_responses_precede_the_final_one() -> None:
    """send_interim writes 1xx heads at once, fields as given (hop-by-hop and
    Content-Length left out), and the final response follows on a kept connection.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(get(b"page"))
    exchange = held.exchanges[0]
    exchange.send_interim(103, [(b"Link", b"</a.css>; rel=preload"), (b"Link", b"</b.js>")])
    assert connection.take() == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nLink: </b.js>\r\n\r\n"
    )
    exchange.send_interim(
        104,
        [(b"Connection", b"close"), (b"Content-Length", b"5"), (b"Upload-Offset", b"0")],
        b"Upload Resumption Supported",
    )
    exchange.start_response(200, [])
    exchange.finish(b"done")
    resumption, final = parse_responses(connection.take())
    assert (resumption.status, resumption.reason) == (104, b"Upload Resumption Supported")
    assert resumption.headers == [(b"upload-offset", b"0")]
    assert (final.status, final.body) == (200, b"done")
    assert final.header(b"connection") is None
    connection.send(get(b"next"))
    assert len(held.exchanges) == 2


def test_no_interim_response_to_http10_or_after_the_final_one_began() -> None:
    """An HTTP/1.0 client cannot take 1xx (RFC 9110 15.2); after start_response it
    would come after the final head.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(b"GET / HTTP/1.0\r\n\r\n")
    held.exchanges[0].send_interim(103, [(b"Link", b"</a>")])
    assert connection.take() == b""
    other = open_connection(held)
    other.send(get())
    exchange = held.exchanges[1]
    exchange.start_response(200, [])
    exchange.send_interim(103, [(b"Link", b"</a>")])
    exchange.finish(b"x")
    exchange.send_interim(103, [(b"Link", b"</a>")])
    [response] = parse_responses(other.take())
    assert response.status == 200


@pytest.mark.parametrize("status", [100, 101, 200, 99])
def test_send_interim_refuses_what_is_not_its_own(status: int) -> None:
    """100 and 101 belong to continue_body and upgrade; others are not interim."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    with pytest.raises(ValueError):
        held.exchanges[0].send_interim(status, [])
    assert connection.take() == b""


# -- timeouts -------------------------------------------------------------------------


def test_slow_head_gets_408() -> None:
    """A client that trickles its head is cut off after header_timeout (total, not
    idle), with 408.
    """
    connection = open_connection(Echo(), header_timeout=10.0)
    connection.send(b"GET / HTTP/1.1\r\n")
    for _ in range(9):
        connection.clock.advance(1.0)
        connection.send(b"X-A: b\r\n")
    assert connection.take() == b""
    connection.clock.advance(1.1)
    [response] = parse_responses(connection.take())
    assert response.status == 408
    assert response.header(b"connection") == b"close"


def test_stalled_body_gets_408() -> None:
    """A body that stops arriving is cut off after body_timeout of silence."""
    collector = BodyCollector()
    connection = open_connection(collector, body_timeout=5.0)
    connection.send(streamed_post(DISPATCH_BUFFER + 10))
    for _ in range(3):
        connection.clock.advance(4.0)
        connection.send(b"x")
    connection.clock.advance(5.1)
    assert len(collector.failures) == 1
    [response] = parse_responses(connection.take())
    assert response.status == 408


def test_body_timeout_does_not_run_while_the_server_pauses_reading() -> None:
    """While the server holds the client back (flow control), the body timer stops."""
    held = Held()
    connection = open_connection(held, body_timeout=5.0)
    connection.send(streamed_post(DISPATCH_BUFFER + 10))
    held.exchanges[0].pause_body()
    connection.clock.advance(60.0)
    assert connection.take() == b""
    assert not connection.is_closed()


def test_body_timeout_waits_for_100_continue() -> None:
    """A client waiting for 100 Continue is not timed out for not sending its body."""
    held = Held()
    connection = open_connection(held, body_timeout=5.0)
    connection.send(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    connection.clock.advance(60.0)
    assert connection.take() == b""


def test_client_that_stops_reading_is_aborted_after_send_timeout() -> None:
    """While the transport pauses the server's writes for send_timeout, the
    connection is aborted.
    """
    held = Held()
    connection = open_connection(held, send_timeout=10.0)
    connection.send(get())
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.write(b"x" * 100)
    connection.protocol.pauseProducing()  # what the transport does when its buffer fills
    connection.clock.advance(9.0)
    assert not connection.is_closed()
    connection.protocol.resumeProducing()
    connection.clock.advance(9.0)
    assert not connection.is_closed()
    connection.protocol.pauseProducing()
    connection.clock.advance(10.1)
    assert connection.is_closed()


class BufferingTransport(StringTransport):
    """A StringTransport that shows a socket transport's unsent buffer, as Twisted's
    TCP transport keeps it (``dataBuffer`` from ``offset``, plus ``_tempDataLen``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0

    def client_reads(self, count: int) -> None:
        self.offset += count


@pytest.mark.parametrize("tls", [False, True])
def test_a_client_reading_slowly_keeps_getting_send_timeout(tls: bool) -> None:
    """Twisted resumes writes only once its buffer is empty; a client that reads on,
    slowly, was aborted at send_timeout all the same (nginx's send_timeout is between
    two successful writes). Over TLS the buffer is the one of the TCP connection below.
    """
    held = Held()
    socket_transport = BufferingTransport()
    transport: Any = socket_transport
    if tls:
        transport = StringTransport()
        transport.transport = socket_transport
    connection = connect(held, settings=HttpSettings(send_timeout=10.0), transport=transport)
    connection.send(get())
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.write(b"x" * 100)
    socket_transport.dataBuffer = b"x" * 200_000
    connection.protocol.pauseProducing()
    for _ in range(5):
        connection.clock.advance(9.0)
        socket_transport.client_reads(1000)
    assert not connection.is_closed()
    connection.clock.advance(10.1)  # the last read counts once
    assert not connection.is_closed()
    connection.clock.advance(10.1)  # then nothing read for send_timeout
    assert connection.is_closed()


# -- write flow control ---------------------------------------------------------------


def test_handler_producer_follows_the_transport() -> None:
    """A producer registered on the exchange is paused and resumed with the client."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    exchange = held.exchanges[0]
    events: list[str] = []

    class Producer:
        def pauseProducing(self) -> None:
            events.append("pause")

        def resumeProducing(self) -> None:
            events.append("resume")

        def stopProducing(self) -> None:
            events.append("stop")

    exchange.start_response(200, [])
    exchange.registerProducer(Producer(), True)  # type: ignore[arg-type]
    connection.protocol.pauseProducing()
    connection.protocol.resumeProducing()
    exchange.unregisterProducer()
    connection.protocol.pauseProducing()
    assert events == ["pause", "resume"]


def test_producer_registered_while_paused_starts_paused() -> None:
    """Registering during a pause pauses the new producer at once."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    events: list[str] = []

    class Producer:
        def pauseProducing(self) -> None:
            events.append("pause")

        def resumeProducing(self) -> None:
            events.append("resume")

        def stopProducing(self) -> None:
            events.append("stop")

    connection.protocol.pauseProducing()
    held.exchanges[0].registerProducer(Producer(), True)  # type: ignore[arg-type]
    assert events == ["pause"]


# -- errors and lifecycle -------------------------------------------------------------


def test_a_refusal_log_line_names_the_client_as_host_and_port() -> None:
    """The server log names the client as nginx users read it, not a Python tuple."""
    connection = open_connection(Echo())
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host
    [line] = [formatEvent(e) for e in events if "Refused" in formatEvent(e)]
    assert line.startswith("Refused a request from 127.0.0.1:54321: 400 ")


@pytest.mark.parametrize(
    ("peer", "text"),
    [(("203.0.113.7", 80), "203.0.113.7:80"), (("::1", 443), "[::1]:443"), (None, "unix:")],
)
def test_describe_peer(peer: tuple[str, int] | None, text: str) -> None:
    assert describe_peer(peer) == text


def test_handler_exception_before_response_is_500() -> None:
    """A handler that raises before responding produces a 500, and the server
    keeps serving other connections.
    """

    class Broken:
        def handle(self, exchange: Exchange) -> None:
            raise RuntimeError("boom")

    connection = open_connection(Broken())
    connection.send(get())
    [response] = parse_responses(connection.take())
    assert response.status == 500
    assert b"boom" not in response.body


def test_error_response_lingers_then_closes() -> None:
    """After an error response the server keeps reading (and discarding) for a
    while, so the client sees the response, then closes.
    """
    connection = open_connection(Echo())
    connection.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert response.status == 400
    connection.send(b"more bytes the client was still sending")
    assert connection.take() == b""
    assert not connection.is_closed()
    connection.clock.advance(LINGER_TIMEOUT + 0.1)
    assert connection.is_closed()


def test_client_gone_ends_the_exchange_with_a_failure() -> None:
    """Losing the connection tells on_close listeners, with a failure."""
    held = Held()
    connection = open_connection(held)
    connection.send(streamed_post(DISPATCH_BUFFER + 10))
    exchange = held.exchanges[0]
    reasons: list[Any] = []
    exchange.on_close(reasons.append)
    failures: list[Exception] = []

    class Receiver:
        def body_received(self, data: bytes) -> None:
            pass

        def body_finished(self) -> None:
            pass

        def body_failed(self, reason: Exception) -> None:
            failures.append(reason)

    exchange.receive_body(Receiver())
    connection.protocol.connectionLost(Failure(ConnectionLost()))
    assert exchange.finished
    assert len(reasons) == 1 and reasons[0] is not None
    assert len(failures) == 1
    exchange.start_response(200, [])  # a late handler is ignored, not an error
    exchange.finish(b"late")
    assert connection.take() == b""


def test_abort_drops_the_connection() -> None:
    """abort() drops the connection without completing the response."""
    held = Held()
    transport = StringTransport()
    connection = connect(held, transport=transport)
    connection.send(get())
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.write(b"partial")
    exchange.abort()
    assert transport.disconnecting


def test_response_log_sees_every_ended_exchange() -> None:
    """The response log is called once per dispatched exchange, with its status."""
    logged: list[tuple[int, int]] = []

    def log(exchange: HTTP11Exchange | Refusal) -> None:
        logged.append((exchange.status, exchange.body_sent))

    connection = connect(Echo(), response_log=log)
    connection.send(get(b"a") + get(b"bb"))
    assert logged == [(200, 2), (200, 3)]


def test_the_factory_counts_ended_exchanges_and_refusals_without_a_log() -> None:
    """What --max-requests counts: every request answered, refused ones included."""
    connection = connect(Echo())
    connection.send(get(b"a") + get(b"bb"))
    assert connection.factory.responses == 2
    connection.send(b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: soon\r\n\r\n")
    assert connection.factory.responses == 3


def test_response_log_gets_each_refusal_with_what_was_read() -> None:
    """A request the protocol refuses itself reaches the response log as a Refusal:
    its error, the status, the body bytes sent and the request as far as it was read.
    """
    logged: list[HTTP11Exchange | Refusal] = []
    connection = connect(Echo(), response_log=logged.append)
    connection.send(b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: soon\r\nUser-Agent: ua\r\n\r\n")
    [response] = parse_responses(connection.take())
    [refusal] = logged
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.error.status, refusal.body_sent) == (
        417,
        417,
        len(response.body),
    )
    assert response.body == refusal.error.detail.encode() + b"\n"
    request = refusal.request
    assert (request.method, request.target, request.version) == (b"GET", b"/x", b"1.1")
    assert request.peer == ("127.0.0.1", 54321)
    assert request.header(b"user-agent") == b"ua"


def test_shutdown_closes_idle_connections_and_finishes_busy_ones() -> None:
    """close_when_idle: an idle connection closes now; a busy one after its response,
    which says Connection: close.
    """
    clock = Clock()
    held = Held()
    idle = connect(held, clock=clock)
    busy = connect(held, clock=clock)
    busy.factory = idle.factory  # not used: each connect has its own factory
    clock.advance(IDLE_GRACE)
    busy.send(get())
    idle.protocol.close_when_idle()
    busy.protocol.close_when_idle()
    assert idle.is_closed()
    assert not busy.is_closed()
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.finish(b"done")
    [response] = parse_responses(busy.take())
    assert response.header(b"connection") == b"close"
    assert busy.is_closed()


def test_a_head_says_close_while_its_factory_shuts_down() -> None:
    """The head asks the factory itself, not only what the shutdown told the connection
    (a head begun as the shutdown starts, or a factory a library stops its own way).
    """
    held = Held()
    connection = connect(held)
    connection.send(get())
    connection.factory.shutting_down = True
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.finish(b"done")
    [response] = parse_responses(connection.take())
    assert response.header(b"connection") == b"close"


def test_shutdown_spares_a_connection_just_answered_for_its_next_request() -> None:
    """Its client may be sending the next request already (a keep-alive client of a
    worker a reload or --max-requests replaces): for IDLE_GRACE it is answered, with
    Connection: close; a connection idle that long is closed then.
    """
    clock = Clock()
    busy_client = connect(Echo(), clock=clock)
    quiet_client = connect(Echo(), clock=clock)
    for connection in (busy_client, quiet_client):
        connection.send(get(b"first"))
        connection.take()
    clock.advance(IDLE_GRACE / 2)
    for connection in (busy_client, quiet_client):
        connection.protocol.close_when_idle()
        assert not connection.is_closed()
        assert not connection.protocol.draining
    busy_client.send(get(b"next"))
    [response] = parse_responses(busy_client.take())
    assert (response.body, response.header(b"connection")) == (b"/next", b"close")
    assert busy_client.is_closed()
    clock.advance(IDLE_GRACE / 2 - 0.01)
    assert not quiet_client.is_closed()
    clock.advance(0.01)
    assert quiet_client.is_closed()


def test_factory_shut_down_fires_when_the_last_connection_closes() -> None:
    """HTTPFactory.shut_down's Deferred fires once every connection is gone."""
    held = Held()
    connection = connect(held)
    connection.send(get())
    done: list[object] = []
    connection.factory.shut_down().addCallback(done.append)
    assert done == []
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.finish()
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    assert done == [None]


def test_upgrade_request_is_answered_then_closed() -> None:
    """An Upgrade request is served as an ordinary request; bytes of the other
    protocol are discarded and the connection closes after the response.
    """
    connection = open_connection(Echo())
    connection.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x05hello"
    )
    [response] = parse_responses(connection.take())
    assert response.body == b"/ws"
    assert response.header(b"connection") == b"close"


# What curl --http2 sends on every http:// request (RFC 7540 3.2), with no body.
H2C_GET = (
    b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
)


def test_an_ignored_upgrade_keeps_the_connection() -> None:
    """An Upgrade request answered as an ordinary one, before the client sent
    anything more, leaves the connection persistent (RFC 9110 7.8: the server may
    ignore Upgrade, and HTTP/1.1 goes on): curl --http2 on http:// offers h2c on
    every request, and each used to cost a connection.
    """
    echo = Echo()
    connection = open_connection(echo)
    connection.send(H2C_GET)
    connection.send(get(b"second"))
    first, second = parse_responses(connection.take())
    assert (first.body, second.body) == (b"/first", b"/second")
    assert first.header(b"connection") is None
    assert not connection.is_closed()
    connection.clock.advance(HttpSettings().keepalive_timeout)  # idle as usual
    assert connection.is_closed()


def test_an_ignored_upgrade_reads_http_sent_after_its_head() -> None:
    """Bytes the client sends once the answer's head has gone are HTTP again (the
    client knows the switch did not happen), even while the body is still being
    sent: they are parsed when the answer is complete.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(H2C_GET)
    [upgrade] = held.exchanges
    assert upgrade.upgradable
    upgrade.start_response(200, [(b"Content-Length", b"4")])
    upgrade.write(b"ab")
    connection.send(get(b"next"))
    assert len(held.exchanges) == 1
    upgrade.finish(b"cd")
    assert [e.request.path for e in held.exchanges] == [b"/first", b"/next"]
    held.exchanges[1].start_response(200, [])
    held.exchanges[1].finish(b"")
    responses = parse_responses(connection.take())
    assert [(r.status, r.body) for r in responses] == [(200, b"abcd"), (200, b"")]
    assert responses[0].header(b"connection") is None
    assert not connection.is_closed()


def test_an_ignored_upgrade_closes_when_the_client_sent_on_before_the_answer() -> None:
    """Bytes sent before the answer may be the other protocol's (RFC 9110 7.8 lets a
    client start it right after the request): the answer says close, and they are
    never parsed as HTTP.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(H2C_GET)
    connection.send(get(b"early"))
    [upgrade] = held.exchanges
    upgrade.start_response(200, [])
    upgrade.finish(b"")
    [response] = parse_responses(connection.take())
    assert response.header(b"connection") == b"close"
    assert len(held.exchanges) == 1
    assert connection.is_closed()


def test_upgrade_request_with_body_delivers_the_body() -> None:
    """Httptools skips the body of an Upgrade request; the protocol parses it."""
    collector = BodyCollector()
    connection = open_connection(collector)
    connection.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhel"
    )
    connection.send(b"lo")
    [response] = parse_responses(connection.take())
    assert response.body == b"hello"
    assert response.header(b"connection") == b"close"


def test_upgrade_accepted_by_the_handler_becomes_a_tunnel() -> None:
    """A handler that accepts an Upgrade gets the bytes after the head and every
    later byte; what it writes reaches the client raw, after the 101 head.
    """
    received: list[bytes] = []
    lost: list[Failure] = []

    class Receiver:
        def data_received(self, data: bytes) -> None:
            received.append(data)

        def connection_lost(self, reason: Failure) -> None:
            lost.append(reason)

    class Upgrader:
        def handle(self, exchange: Exchange) -> None:
            assert exchange.upgradable
            tunnel = exchange.upgrade(
                [(b"Upgrade", b"echo"), (b"Connection", b"upgrade")], Receiver()
            )
            tunnel.write(b"welcome")

    connection = open_connection(Upgrader())
    connection.send(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nfirst"
    )
    connection.send(b"second")
    raw = connection.take()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Upgrade: echo" in head and b"Connection: upgrade" in head
    assert rest == b"welcome"
    assert received == [b"first", b"second"]
    connection.clock.advance(3600)  # no HTTP timeouts apply to a tunnel
    assert not connection.is_closed()
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    assert len(lost) == 1


def test_an_upgraded_exchange_ends_when_its_tunnel_closes() -> None:
    """Its close listeners are told once, when the tunnel closes (the request is in
    progress until then: nginx's limit_conn counts it), not at the 101; it is
    logged then too, once.
    """
    reasons: list[Failure | None] = []
    logged: list[Any] = []

    class Upgrader:
        def handle(self, exchange: Exchange) -> None:
            exchange.on_close(reasons.append)
            exchange.upgrade([(b"Upgrade", b"echo"), (b"Connection", b"upgrade")], Ignoring())

    class Ignoring:
        def data_received(self, data: bytes) -> None:
            pass

        def connection_lost(self, reason: Failure) -> None:
            pass

    connection = connect(Upgrader(), response_log=logged.append)
    connection.send(
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
    )
    assert connection.take().startswith(b"HTTP/1.1 101 ")
    assert reasons == [] and logged == []
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    assert reasons == [None] and len(logged) == 1


def test_ordinary_requests_cannot_be_upgraded() -> None:
    """upgrade() on a request that did not ask to switch protocols is refused."""
    held = Held()
    connection = open_connection(held)
    connection.send(get())
    exchange = held.exchanges[0]
    assert not exchange.upgradable
    with pytest.raises(RuntimeError):
        exchange.upgrade([], object())  # type: ignore[arg-type]


# -- a client that stops reading --------------------------------------------------------


@pytest.mark.parametrize("then", ["idle", "pipelined"])
def test_a_client_that_never_reads_is_aborted_after_send_timeout(then: str) -> None:
    """The send deadline holds whatever the read side does next: a keep-alive
    response completed into a full buffer (the idle close would wait for the client
    forever) or a pipelined request parsed meanwhile (a handler is working).
    """
    held = Held()
    connection = open_connection(held, send_timeout=10.0, keepalive_timeout=5.0)
    connection.send(get(b"big"))
    exchange = held.exchanges[0]
    exchange.start_response(200, [(b"Content-Length", b"20")])
    exchange.write(b"x" * 10)
    connection.protocol.pauseProducing()  # the transport's buffer is full
    exchange.finish(b"y" * 10)
    if then == "pipelined":
        connection.send(get(b"next"))
    connection.clock.advance(9.9)
    assert not connection.transport.disconnected  # not aborted yet
    connection.clock.advance(0.2)
    assert connection.transport.disconnected  # StringTransport: abortConnection


@pytest.mark.parametrize(
    ("fields", "version", "graceful"),
    [
        ([(b"Content-Length", b"20")], b"1.1", True),
        ([], b"1.1", True),  # chunked
        ([], b"1.0", False),  # delimited by the close: only a reset says it is cut
    ],
)
def test_a_response_that_cannot_be_completed_ends_in_order_when_its_framing_shows_it(
    fields: list[tuple[bytes, bytes]], version: bytes, graceful: bool
) -> None:
    """A handler failing mid-response (an application error, an upstream lost): the
    connection was reset, which throws away what the kernel still held unsent (on a
    real network, up to the whole send buffer). With Content-Length or chunked
    framing, an orderly close delivers all that was sent, and the missing bytes or
    last chunk tell the client the response is incomplete (RFC 9112 6.3, 7.1).
    """
    held = Held()
    connection = open_connection(held)
    connection.send(b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n" + get(b"next"))
    exchange = held.exchanges[0]
    exchange.start_response(200, fields)
    exchange.write(b"x" * 10)
    exchange.abort()
    transport: Any = connection.transport
    written = connection.take()
    assert written.endswith(b"x" * 10 + (b"\r\n" if not fields and graceful else b""))
    assert not written.endswith(b"0\r\n\r\n")
    assert transport.disconnected is not graceful  # StringTransport: abortConnection
    assert transport.disconnecting
    assert len(held.exchanges) == 1  # the pipelined request is not served


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_a_bodiless_response_given_up_after_its_head_ends_in_order(version: bytes) -> None:
    """A HEAD answer is complete once its head is out: a handler giving up then
    closes the connection in order (a reset could take the head with it).
    """
    held = Held()
    connection = open_connection(held)
    connection.send(b"HEAD / HTTP/" + version + b"\r\nHost: a\r\n\r\n")
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.send_head()
    exchange.abort()
    transport: Any = connection.transport
    assert connection.take().startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.disconnecting and not transport.disconnected


@pytest.mark.parametrize("close", ["connection-close", "keep-alive-timeout"])
def test_a_close_the_client_never_reads_to_is_aborted_after_send_timeout(close: str) -> None:
    """Closing waits for the client to take what was written; with less than
    Twisted's 64 KiB left (no pause, so no send deadline) a client that never read
    held the connection for ever. The close now has send_timeout too.
    """
    held = Held()
    connection = open_connection(held, send_timeout=10.0, keepalive_timeout=5.0)
    extra = b"Connection: close\r\n" if close == "connection-close" else b""
    connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.finish(b"x" * 50_000)
    transport: Any = connection.transport
    if close == "keep-alive-timeout":
        assert not transport.disconnecting
        connection.clock.advance(5.1)
    assert transport.disconnecting and not transport.disconnected  # a graceful close
    connection.clock.advance(9.8)
    assert not transport.disconnected
    connection.clock.advance(0.3)
    assert transport.disconnected  # StringTransport: abortConnection


def test_a_client_reading_again_gets_its_keep_alive_back() -> None:
    """Once the client reads again, the send deadline is gone: the connection idles
    as usual.
    """
    held = Held()
    connection = open_connection(held, send_timeout=10.0, keepalive_timeout=30.0)
    connection.send(get(b"big"))
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    connection.protocol.pauseProducing()
    exchange.finish(b"body")
    connection.clock.advance(5)
    connection.protocol.resumeProducing()
    connection.clock.advance(20)
    assert not connection.is_closed()
    connection.clock.advance(11)  # the keep-alive timeout, counted from the response
    transport: Any = connection.transport
    assert transport.disconnecting and not transport.disconnected  # closed, not aborted


def test_a_head_we_stopped_reading_is_not_timed_out() -> None:
    """A pipelined head cut by the read, behind requests the server takes long to
    answer: the server is the one not reading, so no 408 (RFC 9110 15.5.9 is for a
    slow client); the head gets its full time again once reading resumes.
    """
    held = Held()
    connection = open_connection(held, header_timeout=60.0)
    connection.send(get(b"1") + get(b"2") + b"GET /3 HTT")
    connection.clock.advance(61)  # paused: the handlers are slow, not the client
    held.exchanges[0].start_response(200, [])
    held.exchanges[0].finish(b"ok")  # one request left queued: reading resumes
    connection.clock.advance(59)
    connection.send(b"P/1.1\r\nHost: example.com\r\n\r\n")
    for number in (1, 2):
        held.exchanges[number].start_response(200, [])
        held.exchanges[number].finish(b"ok")
    assert [r.status for r in parse_responses(connection.take())] == [200, 200, 200]


def test_a_head_still_times_out_once_reading_resumed() -> None:
    held = Held()
    connection = open_connection(held, header_timeout=60.0)
    connection.send(get(b"1") + b"GET /2 HTT")
    connection.clock.advance(100)
    held.exchanges[0].start_response(200, [])
    held.exchanges[0].finish(b"ok")
    connection.clock.advance(61)
    assert [r.status for r in parse_responses(connection.take())] == [200, 408]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"HEAD / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n", 417),
        (b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"HEAD /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        # llhttp refuses the target before handing any of it over.
        (b"HEAD /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"HEAD \x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ],
)
@pytest.mark.parametrize("split", [False, True])
def test_a_refused_head_request_gets_no_body(head: bytes, status: int, split: bool) -> None:
    """RFC 9110 9.3.2: the answer to HEAD has no content, a refusal included, however
    the request arrives.
    """
    connection = open_connection(Echo())
    for piece in [head[i : i + 1] for i in range(len(head))] if split else [head]:
        connection.send(piece)
    [response] = parse_responses(connection.take(), [b"HEAD"])  # h11 refuses extra bytes
    assert response.status == status
    assert response.body == b""
    # The same refusal of a GET carries its short explanation.
    connection = open_connection(Echo())
    connection.send(b"GET" + head[4:])
    [response] = parse_responses(connection.take())
    assert (response.status, bool(response.body)) == (status, True)


def test_the_http2_preface_is_logged_with_its_version() -> None:
    """The access log shows the whole preface line llhttp read, version included."""
    logged: list[Any] = []
    connection = connect(Echo(), response_log=logged.append)
    connection.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    [refusal] = logged
    request = refusal.request
    assert (request.method, request.target, request.version) == (b"PRI", b"*", b"2.0")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"PRI / HTTP/1.0\r\n\r\n",  # llhttp would wait for the rest of a preface
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 with prior knowledge
        b"PRI / HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
@pytest.mark.parametrize("split", [False, True])
def test_the_http2_preface_method_is_refused_at_once(request_bytes: bytes, split: bool) -> None:
    """PRI only starts HTTP/2's connection preface (RFC 9113 3.4): 505 at once, not a
    wait for the header timeout, and not llhttp's internal wording.
    """
    connection = open_connection(Echo())
    for piece in (
        [request_bytes[i : i + 1] for i in range(len(request_bytes))] if split else [request_bytes]
    ):
        connection.send(piece)
    response = connection.take()
    assert response.startswith(b"HTTP/1.1 505 ")
    assert response.endswith(b"HTTP/2 is not served on this port; use HTTP/1.1\n")
    assert b"\r\nConnection: close\r\n" in response


@pytest.mark.parametrize(
    "endless",
    [b"0\r\nX-Trailer: ", b"3;" + b"x" * 10],  # a trailer line; a chunk extension
)
def test_endless_chunk_framing_is_refused(endless: bytes) -> None:
    """Bytes of a chunked body that carry no body byte are bounded like a header
    section (431): an endless trailer line would otherwise grow memory, and an
    endless chunk extension would hold the connection.
    """
    collector = BodyCollector(respond=False)
    connection = open_connection(collector, max_header_total=32768)
    connection.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" + endless
    )
    for _ in range(16):  # 64 KiB more, with no body byte in it
        connection.send(b"a" * 4096)
    [response] = parse_responses(connection.take())
    assert response.status == 431
    assert collector.exchanges == []  # refused before any handler saw it


@pytest.mark.parametrize(
    "endless",
    [b"0\r\nX-Trailer: ", b"3;" + b"x" * 10],  # a trailer line; a chunk extension
)
def test_endless_chunk_framing_of_an_upgrade_requests_body_is_refused(endless: bytes) -> None:
    """The body of an Upgrade request is parsed on its own (httptools skips it) and
    gets the same bound: an endless trailer line grew memory without end.
    """
    connection = open_connection(BodyCollector(respond=False), max_header_total=32768)
    connection.send(UPGRADE_POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" + endless)
    for _ in range(16):  # 64 KiB more, with no body byte in it
        connection.send(b"a" * 4096)
    [response] = parse_responses(connection.take())
    assert response.status == 431


@pytest.mark.parametrize("upgrade", [False, True])
def test_a_trailer_section_counts_against_max_header_count(upgrade: bool) -> None:
    """max_header_count bounds the trailer section as it does the header section."""
    head = UPGRADE_POST if upgrade else b"POST / HTTP/1.1\r\nHost: a\r\n"
    for count, status in ((5, 200), (6, 431)):
        trailers = b"".join(b"X-T%d: v\r\n" % number for number in range(count))
        connection = open_connection(BodyCollector(), max_header_count=5)
        connection.send(
            head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + trailers + b"\r\n"
        )
        assert [r.status for r in parse_responses(connection.take())] == [status], count


def test_many_small_chunks_are_not_framing_abuse() -> None:
    """Chunk framing between body bytes never accumulates: a body of a thousand tiny
    chunks, each read on its own, is received whole.
    """
    collector = BodyCollector()
    connection = open_connection(collector, max_header_total=1024)
    connection.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(1000):
        connection.send(b"1;ext=value\r\n")
        connection.send(b"x\r\n")
    connection.send(b"0\r\nX-Done: yes\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (200, b"x" * 1000)


UPGRADE_POST = b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
FOLLOWING = b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nno"


@pytest.mark.parametrize(
    "parts",
    [
        [UPGRADE_POST + b"Content-Length: 3\r\n\r\nabc" + FOLLOWING],
        [UPGRADE_POST + b"Content-Length: 3\r\n\r\nab", b"c" + FOLLOWING],
        [UPGRADE_POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + FOLLOWING],
    ],
)
def test_what_follows_an_upgrade_requests_body_is_not_http(parts: list[bytes]) -> None:
    """After the body of an Upgrade request the connection carries the other
    protocol (it closes after the answer): those bytes are neither parsed nor
    mistaken for trailers, and the request is answered normally.
    """
    collector = BodyCollector()
    connection = open_connection(collector)
    for part in parts:
        connection.send(part)
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (200, b"abc")
    assert len(collector.exchanges) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n", 400),  # a forbidden trailer field
        (b"100001\r\n" + b"x" * 0x100001 + b"\r\n0\r\n\r\n", 413),  # over max_body
    ],
)
def test_an_upgrade_requests_body_is_refused_with_the_right_status(
    body: bytes, status: int
) -> None:
    connection = open_connection(BodyCollector(), max_body=1024 * 1024)
    connection.send(UPGRADE_POST + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert [r.status for r in parse_responses(connection.take())] == [status]


def test_garbage_after_a_head_request_is_refused_with_a_body() -> None:
    """A malformed request after an answered HEAD is not taken for a HEAD itself."""
    connection = open_connection(Echo())
    connection.send(b"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n")
    connection.send(b"\x01\x02 nonsense\r\n\r\n")
    head, refusal = parse_responses(connection.take(), [b"HEAD", b"GET"])
    assert (head.status, refusal.status) == (200, 400)
    assert refusal.body


def test_a_pipeline_behind_a_body_is_cut_at_max_queued() -> None:
    """A read that starts inside a body is parsed whole, so slices cannot bound what
    it queues: past MAX_QUEUED the next request is refused (429) in its turn, after
    every request before it has been answered, and the connection closes.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345")
    burst = b"67890" + b"".join(get(b"%d" % number) for number in range(2000))
    connection.send(burst)
    protocol: Any = connection.protocol
    assert len(protocol._queue) <= MAX_QUEUED + 1  # the refusal waits in the queue too
    held.answer_all(b"ok")
    statuses = [r.status for r in parse_responses(connection.take())]
    assert statuses == [200] * MAX_QUEUED + [429]
    connection.clock.advance(LINGER_TIMEOUT)  # the refusal's lingering close
    assert connection.is_closed()


def test_only_the_upgrade_request_itself_is_upgradable() -> None:
    """A request pipelined before an Upgrade request cannot take its tunnel."""
    held = Held()
    connection = open_connection(held)
    connection.send(
        get(b"0") + b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    [first] = held.exchanges
    assert first.request.path == b"/0"
    assert not first.upgradable


def test_requests_pipelined_before_an_upgrade_request_are_all_answered() -> None:
    """Parsing stops at the Upgrade request, but the requests before it are answered
    in order, then the Upgrade request (here as an ordinary request), then the close.
    """
    echo = Echo()
    connection = open_connection(echo)
    upgrade = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
    burst = b"".join(get(b"%d" % number) for number in range(30)) + upgrade + b"\x00tunnel"
    connection.send(burst)
    responses = parse_responses(connection.take())
    assert [r.body for r in responses] == [b"/%d" % n for n in range(30)] + [b"/chat"]
    assert connection.is_closed()


def test_a_file_sent_after_the_client_left_reports_it() -> None:
    """send_file on an exchange whose client has gone returned a Deferred that never
    fired: cleanup chained on it (closing the file, a WSGI result's close()) never ran.
    """
    held = Held()
    connection = open_connection(held)
    connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    [exchange] = held.exchanges
    exchange.start_response(200, [(b"Content-Length", b"5")])
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    outcome: list[Failure] = []
    with tempfile.TemporaryFile() as file:
        file.write(b"hello")
        exchange.send_file(file, 0, 5).addErrback(outcome.append)
    [failure] = outcome
    assert failure.check(*CLIENT_GONE)


def test_the_trailer_count_starts_again_with_each_request() -> None:
    """max_header_count bounds each trailer section, not the connection's."""
    connection = open_connection(BodyCollector(), max_header_count=5)
    trailers = b"".join(b"X-T%d: v\r\n" % number for number in range(4))
    request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
    connection.send((request + trailers + b"\r\n") * 2)
    assert [r.status for r in parse_responses(connection.take())] == [200, 200]


def test_a_head_answer_to_an_empty_body_states_no_length() -> None:
    """A GET of an empty body gets Content-Length: 0. Its HEAD states no length: an
    application that knows HEAD (Werkzeug) leaves the body out itself, and 0 would
    misstate the length its GET has (RFC 9110 9.3.2 lets a HEAD answer omit it).
    """

    class Empty:
        def handle(self, exchange: Exchange) -> None:
            exchange.start_response(200, [(b"Content-Type", b"text/plain")])
            exchange.finish(b"")

    connection = open_connection(Empty())
    connection.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head, get = parse_responses(connection.take(), [b"HEAD", b"GET"])
    assert head.header_values(b"content-length") == []
    assert get.header_values(b"content-length") == [b"0"]


# -- methods llhttp does not know (RFC 9110 9.1) --------------------------------------

_REST_OF_HEAD = b" / HTTP/1.1\r\nHost: a\r\n\r\n"


def _answers(pieces: list[bytes]) -> tuple[list[tuple[int, bytes]], list[Any], bool]:
    """Send ``pieces``; return the (status, body) answered, the log, whether closed."""
    logged: list[Any] = []
    connection = connect(Echo(), response_log=logged.append)
    for piece in pieces:
        connection.send(piece)
    responses = [(r.status, r.body) for r in parse_responses(connection.take())]
    requests = [
        (entry.request.method, entry.request.target) if isinstance(entry, Refusal) else None
        for entry in logged
    ]
    return responses, requests, connection.is_closed()


#: What may come before a request line on its connection: nothing, an empty line, a
#: request, one with a Content-Length body, one with a chunked body.
_OPENINGS = {
    "first": b"",
    "empty-line": b"\r\n",
    "pipelined": get(b"1"),
    "after-body": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nABC",
    "after-chunked-body": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n"
    ),
}
_BEFORE_A_LINE = st.sampled_from(list(_OPENINGS.values()))


def _answers_however_split(
    raw: bytes, cuts: list[int]
) -> tuple[list[tuple[int, bytes]], list[Any], bool]:
    """The answers to ``raw`` sent whole, after checking they are the same cut at ``cuts``."""
    points = sorted({cut for cut in cuts if cut < len(raw)} | {0, len(raw)})
    whole = _answers([raw])
    assert _answers([raw[start:end] for start, end in itertools.pairwise(points)]) == whole
    return whole


@given(
    before=_BEFORE_A_LINE,
    line=st.lists(
        st.sampled_from(
            [b"GET", b"M-SEARCH", b"MK", b"P", b"U", b"get", b"!", b"2", b" ", b"\t", b"\x01", b"("]
        ),
        min_size=1,
        max_size=6,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=4),
)
def test_a_method_gets_the_same_answer_however_its_line_is_split(
    before: bytes, line: bytes, cuts: list[int]
) -> None:
    """An unknown method is refused by llhttp at a byte that depends on the split; the
    answer (501, or 400 when the line does not start with a token and SP) and what
    the access log gets do not. A refused line gets the answer its bytes call for.
    """
    responses, requests, _ = _answers_however_split(before + line + _REST_OF_HEAD, cuts)
    status, body = responses[-1]
    if body in (METHOD_NOT_IMPLEMENTED.encode() + b"\n", b"Invalid request method\n"):
        assert status == unknown_method_status(line + _REST_OF_HEAD, 8192)
        assert requests[-1] == ((line.partition(b" ")[0], b"") if status == 501 else (b"", b""))


def test_a_refused_method_is_answered_once_a_byte_decides() -> None:
    """Parsing stops at the refusal; the bytes after it are read, without an answer,
    until one that is not a tchar comes: SP (501) or another (400).
    """
    for decider, status in ((b" ", 501), (b"\x00", 400)):
        connection = open_connection(Echo())
        connection.send(b"MKX")
        connection.send(b"YZ")
        assert connection.take() == b""
        assert not connection.is_closed()
        connection.send(decider + b"/ HTTP/1.1\r\n")
        [response] = parse_responses(connection.take())
        assert (response.status, response.header(b"connection")) == (status, b"close")


@pytest.mark.parametrize("line", [b"FOO", b"ACL"])  # refused, and a method llhttp took
def test_a_method_line_that_stops_times_out_as_any_head(line: bytes) -> None:
    """An undecided method line gets the header timeout's 408, as any head cut short;
    a client that leaves then gets nothing, and nothing is logged.
    """
    logged: list[Any] = []
    connection = connect(
        Echo(), settings=HttpSettings(header_timeout=5.0), response_log=logged.append
    )
    connection.send(line[:2])
    connection.clock.advance(3)
    connection.send(line[2:])
    connection.clock.advance(2.1)
    [response] = parse_responses(connection.take())
    assert (response.status, response.header(b"connection")) == (408, b"close")
    [refusal] = logged
    assert (refusal.request.method, refusal.request.target) == (b"", b"")

    left = connect(Echo(), response_log=logged.append)
    left.send(line)
    left.protocol.connectionLost(Failure(ConnectionDone()))
    assert left.take() == b""
    assert len(logged) == 1


def test_refused_methods_are_logged_with_what_was_read_of_them() -> None:
    """The access log gets the method token of a 501 (and of a 414, cut at the
    limit), nothing for a line that did not start with a token; the server log says
    why, as for any refusal.
    """
    with capture_log_events() as events:
        responses, requests, _ = _answers([b"NOTIFY2 / HTTP/1.1\r\n"])
    assert responses == [(501, METHOD_NOT_IMPLEMENTED.encode() + b"\n")]
    assert requests == [(b"NOTIFY2", b"")]
    [line] = [formatEvent(e) for e in events if "Refused" in formatEvent(e)]
    assert line.endswith(": 501 " + METHOD_NOT_IMPLEMENTED)
    assert _answers([b"GE@T" + _REST_OF_HEAD])[:2] == (
        [(400, b"Invalid request method\n")],
        [(b"", b"")],
    )
    [(status, _)], [(method, _)], _ = _answers([b"Z" * 8193 + _REST_OF_HEAD])
    assert (status, method) == (414, b"Z" * 8192)


def test_a_method_cut_by_a_read_after_a_body_starts_after_the_body() -> None:
    """The request line that starts after a body, in the same read, is kept from
    its first byte when the read ends inside its method (PU, not the body's ABC).
    """
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
    responses, requests, _ = _answers([head + b"ABCP", b"U" + _REST_OF_HEAD])
    assert [status for status, _ in responses] == [200, 501]
    assert requests == [None, (b"PU", b"")]


# -- protocols llhttp takes besides HTTP (RTSP/, ICE/; RFC 9112 2.3) -----------------------


@given(
    before=_BEFORE_A_LINE,
    method=st.sampled_from([b"GET", b"OPTIONS", b"DESCRIBE", b"SOURCE"]),
    spacing=st.sampled_from([b" ", b"  "]),
    protocol=st.sampled_from(
        [
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/2.0",
            b"HTTP/1.2",
            b"RTSP/1.0",
            b"RTSP/2.0",
            b"RTSP/1.2",
            b"ICE/1.0",
            b"http/1.1",
        ]
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
)
def test_a_protocol_gets_the_same_answer_however_its_line_is_split(
    before: bytes, method: bytes, spacing: bytes, protocol: bytes, cuts: list[int]
) -> None:
    """A line naming RTSP/ or ICE/ (llhttp takes both, and reports only the digits) is
    refused (400), whole in a read or not, pipelined or not, and never reaches the
    handler; an HTTP version keeps its own answer (505 for one not served), and what
    the access log gets does not depend on the split either.
    """
    raw = before + method + spacing + b"/" + spacing + protocol + b"\r\nHost: a\r\n\r\n"
    responses, _, _ = _answers_however_split(raw, cuts)
    status, body = responses[-1]
    if not protocol.startswith(b"HTTP/"):
        assert status == 400
        # (llhttp itself refuses http/, ICE/ after any method but SOURCE, and RTSP/
        # after SOURCE, which is not on its RTSP list.)
        if (protocol == b"ICE/1.0") == (method == b"SOURCE") and protocol != b"http/1.1":
            assert body == NOT_HTTP.encode() + b"\n"
    elif method == b"DESCRIBE":
        assert status == 501  # an RTSP method in an HTTP line, whatever its version
    elif protocol in (b"HTTP/2.0", b"HTTP/1.2"):
        assert status == 505
    else:
        assert status == 200


@pytest.mark.parametrize("before", list(_OPENINGS.values()), ids=list(_OPENINGS))
def test_a_line_that_names_another_protocol_is_refused_wherever_a_read_ends(
    before: bytes,
) -> None:
    """Cut in two at every byte: the line is refused (a read that begins a request
    and holds a CR without its LF, as the line's CR is when the cut falls before its
    LF, is parsed in parts), and nothing before it is answered otherwise.
    """
    raw = before + b"GET  /x  RTSP/1.0\r\nHost: a\r\n\r\n"
    expected = [200] * (before.count(b"HTTP/1.1")) + [400]
    for cut in range(1, len(raw)):
        responses, _, _ = _answers([raw[:cut], raw[cut:]])
        assert [status for status, _ in responses] == expected, cut
        assert responses[-1][1] == NOT_HTTP.encode() + b"\n", cut


def test_a_line_that_names_another_protocol_is_logged_without_a_version() -> None:
    """Its method and target are logged, as for a line llhttp refuses in its version;
    the server log says why, as for any refusal.
    """
    logged: list[Any] = []
    with capture_log_events() as events:
        connection = connect(Echo(), response_log=logged.append)
        connection.send(b"GET /x RTSP/1.0\r\nHost: a\r\nUser-Agent: ua\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert (response.status, response.header(b"connection")) == (400, b"close")
    [refusal] = logged
    request = refusal.request
    assert (request.method, request.target, request.version) == (b"GET", b"/x", b"")
    [line] = [formatEvent(e) for e in events if "Refused" in formatEvent(e)]
    assert line.endswith(": 400 " + NOT_HTTP)


def test_a_method_cut_by_a_read_is_not_taken_for_the_next_request_s() -> None:
    """The start of a method kept at the end of a read belongs to its request only:
    the next request's line, which starts with SP, is 400, not GE's 501.
    """
    responses, _, _ = _answers(
        [b"GE", b"T /1 HTTP/1.1\r\nHost: a\r\n\r\n", b" GET" + _REST_OF_HEAD]
    )
    assert responses == [(200, b"/1"), (400, b"Invalid request method\n")]


def test_a_refused_method_behind_held_requests_still_times_out() -> None:
    """Reading paused for a pipeline resumes for an undecided method line once the
    requests before it are answered, with the header timeout again.
    """
    held = Held()
    connection = open_connection(held, header_timeout=5.0)
    connection.send(get(b"1") + get(b"2") + b"FOO")
    assert connection.transport.producerState == "paused"
    assert held.answer_all(b"") == 2
    assert connection.transport.producerState == "producing"
    connection.clock.advance(5.1)
    assert [r.status for r in parse_responses(connection.take())] == [200, 200, 408]


def test_a_refused_method_is_answered_after_the_requests_before_it() -> None:
    """A 501 decided while earlier pipelined requests wait is sent in its turn."""
    held = Held()
    connection = open_connection(held)
    connection.send(get(b"1") + b"FOO")
    connection.send(b"BAR / HTTP/1.1\r\n")
    assert connection.take() == b""
    [exchange] = held.exchanges
    exchange.start_response(200, [])
    exchange.finish(b"first")
    first, refusal = parse_responses(connection.take())
    assert (first.status, first.body, first.header(b"connection")) == (200, b"first", None)
    assert (refusal.status, refusal.header(b"connection")) == (501, b"close")


@pytest.mark.parametrize("line", [b"FOO", b"ACL"])
def test_a_method_line_being_read_keeps_a_shutdown_waiting(line: bytes) -> None:
    """An undecided method line is a request still being read, as a method llhttp
    took is: a shutdown waits for its answer.
    """
    connection = open_connection(Echo())
    connection.send(line)
    assert connection.protocol.draining


def test_a_refused_method_behind_the_last_response_is_never_answered() -> None:
    """The bytes of a refused method behind a request that closes the connection are
    dropped with it: nothing is answered after the last response.
    """
    held = Held()
    connection = open_connection(held, keepalive_requests=1)
    connection.send(get(b"last") + b"FOO")
    assert connection.protocol._method_line == b"FOO"
    [exchange] = held.exchanges
    exchange.start_response(200, [])
    exchange.finish(b"last")
    connection.send(b" / HTTP/1.1\r\n")
    [response] = parse_responses(connection.take())
    assert (response.status, response.header(b"connection")) == (200, b"close")
