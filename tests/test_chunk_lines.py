"""The chunk-size line check against independent framing: h11, and llhttp fed whole.

The protocol checks every chunk-size line whole (RFC 9112 7.1.1), which means it must
know where each line lies in the reads llhttp is given: any slip, and a line goes
unchecked or chunk data is taken for one. These properties pipeline random valid
requests (no body, Content-Length bodies that look like framing, chunked bodies with
extensions and trailers whose names look like chunk sizes), cut the stream into reads
at random points, and hold the protocol to two independent readings of it: h11's, and
that of the same protocol feeding llhttp each read whole, as it did before the check.
The client honours the protocol's pauses (it sends nothing while reading is paused),
so the reads meet pipelining's held-back requests as a real client's do.
"""

from __future__ import annotations

import itertools
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.test_protocol import BodyCollector
from twistwsgi.http.protocol import HTTP11Protocol, HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.testing import Connection, connect, parse_responses

_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefABCDEF"
_tokens = st.text(_TCHARS, min_size=1, max_size=6).map(str.encode)
_quoted = st.text('abc ;=\t\\"', max_size=5).map(
    lambda text: b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
)


@st.composite
def _extension(draw: st.DrawFn) -> bytes:
    """``;name[=value]`` (RFC 9112 7.1.1; llhttp refuses the BWS the grammar allows)."""
    text = b";" + draw(_tokens)
    if draw(st.booleans()):
        text += b"=" + draw(st.one_of(_tokens, _quoted))
    return text


@st.composite
def _size(draw: st.DrawFn, size: int) -> bytes:
    """``size`` in hexadecimal, in either case, with leading zeros."""
    digits = b"%x" % size
    if draw(st.booleans()):
        digits = digits.upper()
    return b"0" * draw(st.integers(0, 4)) + digits


# Body bytes that look like framing: CRLFs, chunk lines, heads.
_body = st.lists(
    st.sampled_from([b"x", b"\r\n", b"\r\n\r\n", b"0\r\n\r\n", b"3;a=\r\n", b"GET / HTTP/1.1\r\n"]),
    min_size=1,
    max_size=5,
).map(b"".join)


@st.composite
def _chunked(draw: st.DrawFn, *, extensions: bool) -> tuple[bytes, bytes]:
    """A chunked body: its framing and the data it carries."""
    framing = b""
    data = b""
    for chunk in draw(st.lists(_body, max_size=4)):
        framing += draw(_size(len(chunk)))
        if extensions:
            framing += b"".join(draw(st.lists(_extension(), max_size=2)))
        framing += b"\r\n" + chunk + b"\r\n"
        data += chunk
    framing += draw(_size(0))
    if extensions:
        framing += b"".join(draw(st.lists(_extension(), max_size=1)))
    framing += b"\r\n"
    # Trailer names that look like chunk-size lines (RFC 9110 6.5: any token may be one).
    for name in draw(st.lists(st.sampled_from([b"3", b"0", b"ab", b"x-t"]), max_size=2)):
        framing += name + b": 1\r\n"
    return framing + b"\r\n", data


@st.composite
def _request(draw: st.DrawFn, *, extensions: bool) -> tuple[bytes, bytes, bytes]:
    """One request: its bytes, its method and the body an application must get."""
    kind = draw(st.sampled_from(["get", "head", "length", "chunked", "continue"]))
    host = b"Host: a\r\n"
    if kind in ("get", "head"):
        method = b"GET" if kind == "get" else b"HEAD"
        if draw(st.booleans()):
            return method + b" / HTTP/1.1\r\n" + host + b"\r\n", method, b""
        body = draw(_body)
        head = method + b" / HTTP/1.1\r\n" + host + b"Content-Length: %d\r\n\r\n" % len(body)
        return head + body, method, body
    if kind == "length":
        body = draw(_body)
        return (
            b"POST / HTTP/1.1\r\n" + host + b"Content-Length: %d\r\n\r\n" % len(body) + body,
            (b"POST"),
            body,
        )
    framing, body = draw(_chunked(extensions=extensions))
    expect = b"Expect: 100-continue\r\n" if kind == "continue" else b""
    head = b"POST / HTTP/1.1\r\n" + host + expect + b"Transfer-Encoding: chunked\r\n\r\n"
    return head + framing, b"POST", body


@st.composite
def _pipeline(draw: st.DrawFn, *, extensions: bool) -> tuple[bytes, list[int]]:
    """Requests one after the other, and where the stream is cut into reads."""
    raw = b"".join(draw(_request(extensions=extensions))[0] for _ in range(draw(st.integers(1, 4))))
    cuts = draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=12, unique=True))
    return raw, sorted(cuts)


def _reads(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _send_as_a_client(connection: Connection, reads: list[bytes]) -> None:
    """Send ``reads`` in order, none while the server has paused reading."""
    for data in reads:
        assert connection.transport.producerState != "paused", "the server stopped reading"
        connection.send(data)
        if connection.is_closed():
            return


def _h11_requests(raw: bytes) -> list[tuple[bytes, bytes]]:
    """What h11, as the server, reads in ``raw``: each request's method and body."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    seen: list[tuple[bytes, bytes]] = []
    body = b""
    method = b""
    while True:
        event = server.next_event()
        if isinstance(event, h11.Request):
            method, body = event.method, b""
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            seen.append((method, body))
            server.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            server.send(h11.EndOfMessage())
            server.start_next_cycle()
        elif event is h11.NEED_DATA:
            return seen
        else:
            raise AssertionError(f"h11 read {event!r}")


def _served(reads: list[bytes], protocol: type[HTTP11Protocol] = HTTP11Protocol) -> Any:
    """What ``protocol`` made of ``reads``: requests, answers, whether it closed."""
    collector = BodyCollector()
    clock = Clock()
    factory = HTTPFactory(collector, settings=HttpSettings(), clock=clock)
    server = protocol(factory)
    server.factory = factory
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 54321),
    )
    server.makeConnection(transport)
    connection = Connection(server, transport, factory, clock)
    _send_as_a_client(connection, reads)
    methods = [exchange.request.method for exchange in collector.exchanges]
    answers = parse_responses(transport.value(), methods, complete=False)
    return (
        [(m, b"".join(b)) for m, b in zip(methods, collector.bodies, strict=True)],
        [(answer.status, answer.body) for answer in answers],
        connection.is_closed(),
    )


class _WholeReads(HTTP11Protocol):
    """The protocol as it was before the chunk-size line check: each read fed whole."""

    def _feed(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def _begin_chunk_lines(self) -> None:
        # No chunk-size lines to check either: _parse, which feeds a head read that
        # is one piece itself (4d5535a), would otherwise begin them after a chunked
        # head, and _feed_chunks would never end them.
        self._chunked_head_done = False


_EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_EXAMPLES
@given(_pipeline(extensions=True))
def test_valid_pipelines_are_read_as_h11_reads_them(pipeline: tuple[bytes, list[int]]) -> None:
    """Every request reaches the handler with the body h11 reads, however the reads fall."""
    raw, cuts = pipeline
    requests, answers, closed = _served(_reads(raw, cuts))
    assert requests == _h11_requests(raw)
    assert [status for status, _ in answers if status >= 200] == [200] * len(requests)
    assert not closed


@_EXAMPLES
@given(_pipeline(extensions=False))
def test_without_extensions_reads_frame_as_whole_reads_do(
    pipeline: tuple[bytes, list[int]],
) -> None:
    """Without chunk extensions, feeding llhttp in pieces changes nothing it does."""
    raw, cuts = pipeline
    reads = _reads(raw, cuts)
    assert _served(reads) == _served(reads, _WholeReads)


_UPGRADE_CHUNKED = (
    b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: other\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3;a=\r\nabc\r\n0\r\n\r\n"
)


@pytest.mark.parametrize("cut", [0, 80, 105, 109, 112, len(_UPGRADE_CHUNKED) - 3])
def test_an_upgrade_requests_chunked_body_has_its_lines_checked_too(cut: int) -> None:
    """The body httptools skips after an Upgrade head is parsed apart (_SkippedBody):
    its chunk-size lines are checked as any other's (RFC 9112 7.1.1), in any read.
    """
    collector = BodyCollector()
    connection = connect(collector)
    for data in (_UPGRADE_CHUNKED[:cut], _UPGRADE_CHUNKED[cut:]):
        connection.send(data)
    (answer,) = parse_responses(connection.transport.value())
    assert (answer.status, answer.body) == (400, b"Invalid chunk extension\n")
    assert collector.finished == []


def test_an_empty_read_is_nothing() -> None:
    """A read of no bytes (a wrapper may pass one on) neither fails nor counts."""
    connection = connect(BodyCollector())
    connection.send(b"")
    connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [answer.status for answer in parse_responses(connection.transport.value())] == [200]
