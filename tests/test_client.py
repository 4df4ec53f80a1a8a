"""The upstream HTTP/1.1 client connection, over StringTransport with a Clock."""

from __future__ import annotations

import contextlib
import re
import socket
import unittest.mock
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from twistwsgi.http.client import (
    MAX_RESPONSE_HEAD,
    STATE_IDLE,
    ClientConnection,
    ClientSettings,
    ErrorKind,
    UpstreamError,
)
from twistwsgi.testing import capture_log_events


@dataclass
class Owner:
    """A pool double: keeps connections when keep is not None."""

    keep: float | None = 30.0
    made: list[ClientConnection] = field(default_factory=list)
    reused: list[ClientConnection] = field(default_factory=list)
    closed: list[ClientConnection] = field(default_factory=list)

    def connection_made(self, connection: ClientConnection) -> None:
        self.made.append(connection)

    def connection_reusable(self, connection: ClientConnection) -> float | None:
        if self.keep is not None:
            self.reused.append(connection)
        return self.keep

    def connection_closed(self, connection: ClientConnection) -> None:
        self.closed.append(connection)


@dataclass
class Recorder:
    """A response handler that records what it is told."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def response_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.events.append(("interim", (status, reason, headers)))

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.events.append(("head", (status, reason, headers)))

    def response_data(self, data: bytes, complete: bool) -> None:
        self.body += data
        self.complete = complete
        self.events.append(("data", (data, complete)))

    def response_failed(self, error: UpstreamError) -> None:
        self.events.append(("failed", error))

    def response_upgraded(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], tail: bytes
    ) -> None:
        self.events.append(("upgraded", (status, headers, tail)))

    def tunnel_data(self, data: bytes) -> None:
        self.events.append(("tunnel", data))

    def tunnel_closed(self, reason: Failure) -> None:
        self.events.append(("tunnel-closed", reason))

    def sending_paused(self) -> None:
        self.events.append(("paused", None))

    def sending_resumed(self) -> None:
        self.events.append(("resumed", None))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def error(self) -> UpstreamError:
        failures = [value for kind, value in self.events if kind == "failed"]
        assert len(failures) == 1, self.events
        error: UpstreamError = failures[0]
        return error


SETTINGS = ClientSettings(response_timeout=30.0, idle_timeout=10.0, keepalive_timeout=60.0)


def connected(owner: Owner | None = None) -> tuple[ClientConnection, StringTransport, Clock, Owner]:
    owner = owner or Owner()
    clock = Clock()
    connection = ClientConnection(owner, SETTINGS, clock)
    transport = StringTransport()
    connection.makeConnection(transport)
    return connection, transport, clock, owner


GET = b"GET / HTTP/1.1\r\nHost: u\r\n\r\n"


def sent_request(transport: StringTransport) -> tuple[h11.Request, bytes]:
    """Parse what the connection wrote with h11 as the upstream would."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(transport.value())
    request = server.next_event()
    assert isinstance(request, h11.Request)
    body = b""
    while True:
        event = server.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        else:
            raise AssertionError(f"incomplete request: {event!r}")


def test_a_response_with_length_is_delivered_in_one_call_and_pooled() -> None:
    """Head, then the whole body with complete=True in one call; the connection is
    offered back to its owner and becomes idle.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    assert transport.value() == GET
    connection.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\nhello"
    )
    assert handler.kinds() == ["head", "data"]
    status, reason, headers = handler.events[0][1]
    assert (status, reason) == (200, b"OK")
    assert headers == [(b"Content-Length", b"5"), (b"Set-Cookie", b"a"), (b"Set-Cookie", b"b")]
    assert handler.events[1][1] == (b"hello", True)
    assert owner.reused == [connection]
    assert connection.idle


def test_a_chunked_response_streams_and_trailers_are_not_passed() -> None:
    """A chunked body arrives piece by piece; trailer fields are dropped."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert handler.events[-1] == ("data", (b"abc", False))
    connection.dataReceived(b"2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert handler.body == b"abcde" and handler.complete
    _status, _reason, headers = handler.events[0][1]
    assert (b"X-Trailer", b"t") not in headers
    assert connection.idle


def test_connection_close_is_not_reused() -> None:
    """Connection: close (or HTTP/1.0 without keep-alive) closes after the response."""
    for response in (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ):
        connection, transport, _clock, owner = connected()
        handler = Recorder()
        connection.send(GET, handler)
        connection.dataReceived(response)
        assert handler.complete
        assert owner.reused == []
        assert transport.disconnecting


def test_close_delimited_body_ends_at_eof() -> None:
    """A response without length or chunking ends when the upstream closes cleanly."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    connection.dataReceived(b"part two")
    connection.connectionLost(Failure(ConnectionDone()))
    assert handler.body == b"part one, part two" and handler.complete


def test_close_delimited_body_reset_is_a_failure() -> None:
    """A reset in a close-delimited body is not a complete response."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\n\r\npart")
    connection.connectionLost(Failure(ConnectionLost()))
    error = handler.error()
    assert error.kind is ErrorKind.CLOSED and error.response_started


def test_head_response_ends_after_its_head_and_is_reused() -> None:
    """A HEAD response's Content-Length describes a body that is not sent; the
    connection is reusable and parses the next response correctly.
    """
    connection, _transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(b"HEAD / HTTP/1.1\r\nHost: u\r\n\r\n", handler, head_only=True)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-")
    connection.dataReceived(b"Length: 1000\r\n\r\n")
    assert handler.complete and handler.body == b""
    assert owner.reused == [connection]
    second = Recorder()
    connection.send(GET, second)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert second.body == b"ok" and second.complete


@pytest.mark.parametrize(
    "reads",
    [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"],
        # A chunked HEAD response with its last chunk sent anyway ends in an empty
        # line too: reused, the next request got the response that followed it.
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nTransfer-", b"Encoding: chunked\r\n\r\n0\r\n\r\n"],
        [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nx\r\n\r\n"],
    ],
)
def test_head_response_followed_by_junk_is_not_reused(reads: list[bytes]) -> None:
    """Bytes after a HEAD response's head mean a broken upstream: not reused."""
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(b"HEAD / HTTP/1.1\r\nHost: u\r\n\r\n", handler, head_only=True)
    with capture_log_events() as events:
        for data in reads:
            connection.dataReceived(data)
    assert handler.complete
    assert owner.reused == []
    assert transport.disconnecting
    assert any("bytes after the end of its response" in formatEvent(e) for e in events)


def test_head_response_after_interim_heads_is_reused() -> None:
    """Interim heads before a HEAD response's head are not bytes after it."""
    connection, _transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(b"HEAD / HTTP/1.1\r\nHost: u\r\n\r\n", handler, head_only=True)
    connection.dataReceived(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    assert handler.complete
    assert owner.reused == [connection]


INTERIM_THEN_FINAL = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nLink: </b.js>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
)


@pytest.mark.parametrize("piece", [len(INTERIM_THEN_FINAL), 7, 1])
def test_interim_responses_are_delivered_in_order_before_the_final_head(piece: int) -> None:
    """Each 1xx head goes to the handler with its fields, before the final head,
    however the bytes are split; the final response is unaffected.
    """
    connection, _transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    for start in range(0, len(INTERIM_THEN_FINAL), piece):
        connection.dataReceived(INTERIM_THEN_FINAL[start : start + piece])
    interim = [value for kind, value in handler.events if kind == "interim"]
    assert interim == [
        (100, b"Continue", []),
        (103, b"Early Hints", [(b"Link", b"</a.css>; rel=preload"), (b"Link", b"</b.js>")]),
    ]
    kinds = handler.kinds()
    assert kinds.index("head") > kinds.index("interim") and kinds.count("interim") == 2
    status, _reason, headers = handler.events[kinds.index("head")][1]
    assert status == 200 and headers == [(b"Content-Length", b"2")]
    assert handler.body == b"ok" and handler.complete
    assert owner.reused == [connection]


def test_a_handler_that_gives_up_on_an_interim_response_hears_nothing_more() -> None:
    """A handler may abort the connection when told of an interim response."""
    connection, transport, _clock, _owner = connected()

    class GivesUp(Recorder):
        def response_interim(
            self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
        ) -> None:
            super().response_interim(status, reason, headers)
            connection.abort()

    handler = GivesUp()
    connection.send(GET, handler)
    connection.dataReceived(INTERIM_THEN_FINAL)
    assert handler.kinds() == ["interim"]
    assert transport.disconnecting


def test_an_oversized_interim_head_is_refused() -> None:
    """The head limit holds for interim heads too: they are relayed to the client."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    big = b"".join(b"X-Big-%d: %s\r\n" % (n, b"a" * 4000) for n in range(18))
    connection.dataReceived(
        b"HTTP/1.1 103 Early Hints\r\n" + big + b"\r\nHTTP/1.1 204 No Content\r\n\r\n"
    )
    assert "interim" not in handler.kinds()
    assert handler.error().kind is ErrorKind.PROTOCOL


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 104 Upload Resumption Supported\r\nContent-Length: 6\r\n\r\nINJECT",
        b"HTTP/1.1 150 X\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nINJECT\r\n0\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_an_interim_response_declaring_content_is_refused(interim: bytes) -> None:
    """A 1xx ends at its head (RFC 9112 6.3) and must not declare content (RFC 9110
    8.6): llhttp read a body for 104-199, and it reached the client in the final one.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(interim + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert handler.kinds() == ["failed"]
    assert handler.error().kind is ErrorKind.PROTOCOL
    assert owner.reused == [] and transport.disconnecting


def test_an_interim_response_with_content_length_zero_is_fine() -> None:
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert handler.kinds() == ["interim", "head", "data"] and handler.body == b"ok"


def test_a_switch_without_its_fields_is_said_in_our_words() -> None:
    """RFC 9110 7.8: a 101 names the protocol; llhttp says "Pause on CONNECT/Upgrade"."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler, upgrade=True)
    connection.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\n\r\nabc")
    assert handler.error().detail == "a 101 response without Upgrade and Connection: upgrade"


def test_an_interim_response_in_the_read_of_a_switch_is_delivered_first() -> None:
    """A 103 and the 101 in one read: the 103 was kept and never handed over."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler, upgrade=True)
    connection.dataReceived(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert handler.kinds() == ["interim", "upgraded"]


@pytest.mark.parametrize("splits", [[35_000], [35_000, 70_100], []])
def test_interim_heads_and_the_final_head_share_the_limit(splits: list[int]) -> None:
    """About 70 KB of 103 heads then a small final head is refused however the
    reads split it (a split at the final head let it through).
    """
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </%s>\r\n\r\n" % (b"a" * 1000)
    data = early * 70 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert len(early) * 70 > MAX_RESPONSE_HEAD
    start = 0
    for end in [*splits, len(data)]:
        connection.dataReceived(data[start:end])
        start = end
        if "failed" in handler.kinds():
            break
    assert handler.error().kind is ErrorKind.PROTOCOL
    assert "head" not in handler.kinds()


def test_endless_interim_responses_hit_the_head_limit() -> None:
    """An upstream that sends 1xx heads without end is cut off at the head limit."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 200
    for _ in range(MAX_RESPONSE_HEAD // len(early) + 2):
        connection.dataReceived(early)
        if "failed" in handler.kinds():
            break
    assert handler.error().kind is ErrorKind.PROTOCOL
    assert "head" not in handler.kinds()


@pytest.mark.parametrize("split", [16, 20, 24])
def test_a_reason_phrase_split_across_reads_is_kept_whole(split: int) -> None:
    """A phrase split across reads comes from llhttp in pieces; only the last was kept."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    response = b"HTTP/1.1 404 Nothing Here At All\r\nContent-Length: 0\r\n\r\n"
    connection.dataReceived(response[:split])
    connection.dataReceived(response[split:])
    assert handler.events[0] == ("head", (404, b"Nothing Here At All", [(b"Content-Length", b"0")]))


def test_a_reason_phrase_with_a_control_byte_in_a_later_piece_is_dropped() -> None:
    """The check for control bytes sees the whole phrase, however it arrived."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 Fi")
    connection.dataReceived(b"ne\x1b[31m\r\nContent-Length: 0\r\n\r\n")
    assert handler.events[0] == ("head", (200, b"", [(b"Content-Length", b"0")]))


def test_switching_protocols_makes_a_tunnel() -> None:
    """A 101 to an upgrade request hands over the bytes after the head and tunnels."""
    connection, transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler, upgrade=True)
    connection.dataReceived(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi"
    )
    kind, (status, headers, tail) = handler.events[0]
    assert (kind, status, tail) == ("upgraded", 101, b"\x81\x02hi")
    assert (b"Upgrade", b"websocket") in headers
    connection.dataReceived(b"more")
    assert handler.events[-1] == ("tunnel", b"more")
    transport.clear()
    connection.tunnel_write(b"to upstream")
    assert transport.value() == b"to upstream"
    connection.connectionLost(Failure(ConnectionDone()))
    assert handler.kinds()[-1] == "tunnel-closed"


def test_unrequested_switch_is_a_protocol_error() -> None:
    """A 101 to a request that did not ask to upgrade is refused."""
    connection, transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
    assert handler.error().kind is ErrorKind.PROTOCOL
    assert transport.disconnecting


def test_malformed_response_is_a_protocol_error() -> None:
    """Garbage instead of a status line fails the exchange with PROTOCOL."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
    error = handler.error()
    assert error.kind is ErrorKind.PROTOCOL and error.response_started


def test_oversized_response_head_is_refused() -> None:
    """A response head that keeps growing is cut off at MAX_RESPONSE_HEAD."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nX-Big: ")
    for _ in range(MAX_RESPONSE_HEAD // 8192 + 1):
        connection.dataReceived(b"a" * 8192)
    assert handler.error().kind is ErrorKind.PROTOCOL


@pytest.mark.parametrize("pieces", [1, 2])
def test_a_response_head_over_the_limit_is_refused_however_it_arrives(pieces: int) -> None:
    """A head that ends inside a read is measured too, not only one still arriving
    (a 70 KB head sent in one write reached the client).
    """
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    head = (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-Big-%d: %s\r\n" % (n, b"a" * 4000) for n in range(18))
        + b"Content-Length: 2\r\n\r\nok"
    )
    assert len(head) > MAX_RESPONSE_HEAD
    size = len(head) // pieces + 1
    for start in range(0, len(head), size):
        connection.dataReceived(head[start : start + size])
    assert handler.error().kind is ErrorKind.PROTOCOL


def test_unsolicited_bytes_on_an_idle_connection_drop_it() -> None:
    """An idle connection that receives bytes is aborted, never reused."""
    connection, transport, _clock, _owner = connected()
    connection.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.disconnecting
    assert not connection.idle


@pytest.mark.parametrize(
    "received",
    [
        # A second, unsolicited response in the same read as ours.
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
        # A body longer than its Content-Length.
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naXYZ",
        # The start of a status line, which no callback of llhttp's reports yet: the
        # next request on the connection would get it glued to its own response.
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naH",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 500 ",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nHTTP/1.1 ",
    ],
)
def test_bytes_after_a_complete_response_end_the_connection(received: bytes) -> None:
    """The response stands as its framing delimits it (RFC 9112 6.3); what follows in
    the same read is dropped and the connection is not reused (nginx does the same):
    how the upstream's bytes happened to be split must not decide the outcome.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    with capture_log_events() as events:
        connection.dataReceived(received)
    assert (handler.body, handler.complete) == (b"a", True)
    assert "failed" not in handler.kinds()
    assert owner.reused == []
    assert transport.disconnecting
    assert any("after the end of its response" in formatEvent(e) for e in events)


@pytest.mark.parametrize("status", [204, 304])
def test_a_body_after_a_bodiless_status_ends_the_connection(status: int) -> None:
    """A 204 or 304 ends at its empty line (RFC 9112 6.3, item 1): a body sent after
    it in the same read is not relayed and the connection is not reused.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    with capture_log_events():
        connection.dataReceived(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nhello" % status)
    assert handler.events[0] == ("head", (status, b"X", [(b"Content-Length", b"5")]))
    assert (handler.body, handler.complete) == (b"", True)
    assert owner.reused == []
    assert transport.disconnecting


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 099 Odd", b"HTTP/1.1 600 Odd"])
def test_a_status_outside_100_to_599_is_a_protocol_error(status_line: bytes) -> None:
    """Not an interim response to wait past (RFC 9110 15): a 502 at once."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(status_line + b"\r\nContent-Length: 3\r\n\r\nabc")
    error = handler.error()
    assert error.kind is ErrorKind.PROTOCOL
    assert "invalid status code" in error.detail


def test_control_bytes_in_the_reason_phrase_are_not_passed_on() -> None:
    """RFC 9112 4: the standard phrase stands in for one with control bytes."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 O\x00K\x1b[2J\x7f\r\nContent-Length: 0\r\n\r\n")
    assert handler.events[0] == ("head", (200, b"", [(b"Content-Length", b"0")]))


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        # The version is the final head's, whatever an interim head before it said.
        b"HTTP/1.1 103 Early Hints\r\n\r\n"
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    ],
)
@pytest.mark.parametrize("earlier", [False, True])
def test_an_http10_response_is_never_kept(head: bytes, earlier: bool) -> None:
    """Only HTTP/1.1 connections go back to the pool (also after an HTTP/1.1 response
    on the same connection).
    """
    connection, transport, _clock, owner = connected()
    if earlier:
        connection.send(GET, Recorder())
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert owner.reused == [connection]
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(head)
    assert (handler.body, handler.complete) == (b"ok", True)
    assert owner.reused == ([connection] if earlier else [])
    assert transport.disconnecting


@pytest.mark.parametrize("split", [1, 4, 8, 9])
def test_an_http11_response_split_anywhere_is_kept(split: int) -> None:
    """An HTTP/1.1 response whose status line arrives in pieces goes back to the pool."""
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    connection.dataReceived(response[:split])
    connection.dataReceived(response[split:])
    assert (handler.body, handler.complete) == (b"ok", True)
    assert owner.reused == [connection]
    assert not transport.disconnecting


def test_closed_before_any_response_byte() -> None:
    """Closing with no response byte is CLOSED without response_started; reused is
    set when the connection had carried an earlier request.
    """
    connection, _transport, _clock, _owner = connected()
    first = Recorder()
    connection.send(GET, first)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    second = Recorder()
    connection.send(GET, second)
    connection.connectionLost(Failure(ConnectionDone()))
    error = second.error()
    assert error.kind is ErrorKind.CLOSED
    assert not error.response_started and error.reused


def test_response_timeout() -> None:
    """No head within response_timeout: TIMEOUT, connection aborted."""
    connection, transport, clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    clock.advance(29.9)
    assert handler.events == []
    clock.advance(0.2)
    assert handler.error().kind is ErrorKind.TIMEOUT
    assert transport.disconnecting


def test_response_timeout_starts_after_the_body() -> None:
    """While a request body streams, the response timeout does not run."""
    connection, _transport, clock, _owner = connected()
    handler = Recorder()
    connection.send(b"POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 4\r\n\r\n", handler, body=True)
    clock.advance(100)
    assert handler.events == []
    connection.write_body(b"data")
    connection.end_body()
    clock.advance(30.1)
    assert handler.error().kind is ErrorKind.TIMEOUT


def test_body_idle_timeout() -> None:
    """A response body that stops for idle_timeout is STALLED; while the proxy holds
    the upstream back (pause_reading) no timeout runs.
    """
    connection, _transport, clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    connection.pause_reading()
    clock.advance(100)
    assert "failed" not in handler.kinds()
    connection.resume_reading()
    clock.advance(5)
    connection.dataReceived(b"de")
    clock.advance(9)
    assert "failed" not in handler.kinds()
    clock.advance(1.1)
    error = handler.error()
    assert error.kind is ErrorKind.STALLED and error.response_started


def test_idle_connections_close_after_their_keep_time() -> None:
    """An idle connection is closed after the time its owner gave."""
    connection, transport, clock, _owner = connected(Owner(keep=5.0))
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting


def test_chunked_request_body_framing() -> None:
    """A chunked request body is framed in chunks and ended with the last chunk."""
    connection, transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(
        b"POST / HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n",
        handler,
        body=True,
        chunked=True,
    )
    connection.write_body(b"hello ")
    connection.write_body(b"")
    connection.write_body(b"world")
    connection.end_body()
    request, body = sent_request(transport)
    assert request.method == b"POST"
    assert body == b"hello world"


def test_early_response_closes_instead_of_pooling() -> None:
    """A response that ends before the request body was sent whole leaves the
    connection unusable: it is closed, and later body writes are ignored.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(
        b"POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 100\r\n\r\n", handler, body=True
    )
    connection.write_body(b"x" * 10)
    connection.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert handler.complete
    assert owner.reused == []
    assert transport.disconnecting
    size = len(transport.value())
    connection.write_body(b"y" * 10)
    assert len(transport.value()) == size


def test_flow_control_both_ways() -> None:
    """The transport pausing us reaches the handler; pause_reading pauses the transport."""
    connection, transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(b"POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 9\r\n\r\n", handler, body=True)
    connection.pauseProducing()
    connection.resumeProducing()
    assert handler.kinds() == ["paused", "resumed"]
    connection.pause_reading()
    assert transport.producerState == "paused"
    connection.resume_reading()
    assert transport.producerState == "producing"


def test_send_on_a_busy_connection_is_refused() -> None:
    """Only an idle connection takes a request."""
    connection, _transport, _clock, _owner = connected()
    connection.send(GET, Recorder())
    with pytest.raises(RuntimeError):
        connection.send(GET, Recorder())


def test_owner_hears_about_every_close() -> None:
    """The owner is told when a connection opens and closes, whatever its state."""
    connection, _transport, _clock, owner = connected()
    assert owner.made == [connection]
    connection.connectionLost(Failure(ConnectionDone()))
    assert owner.closed == [connection]


def test_zero_timeouts_are_off() -> None:
    """A response_timeout of 0 never fires."""
    owner = Owner()
    clock = Clock()
    connection = ClientConnection(owner, ClientSettings(response_timeout=0.0), clock)
    connection.makeConnection(StringTransport())
    handler = Recorder()
    connection.send(GET, handler)
    clock.advance(10_000)
    assert handler.events == []


# -- an early response, framing and field values, a head alone, close reasons ---------------


def test_early_response_aborts_while_the_body_is_unsent() -> None:
    """A complete response while the request body is still going out (RFC 9112 9.6):
    the connection is aborted, not closed gracefully, since an upstream that stopped
    reading would otherwise keep it (and the buffered body) open. A response after the
    whole request still closes gracefully.
    """
    connection, transport, _clock, _owner = connected(Owner(keep=None))
    handler = Recorder()
    connection.send(
        b"POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 100\r\n\r\n", handler, body=True
    )
    connection.write_body(b"x" * 10)
    connection.dataReceived(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nbig!")
    assert handler.body == b"big!" and handler.complete
    assert transport.disconnected  # abortConnection, not loseConnection

    connection, transport, _clock, _owner = connected(Owner(keep=None))
    handler = Recorder()
    connection.send(b"POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 2\r\n\r\n", handler, body=True)
    connection.write_body(b"ok")
    connection.end_body()
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert handler.complete
    assert transport.disconnecting and not transport.disconnected


@pytest.mark.parametrize(
    "fields",
    [
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
    ],
)
def test_transfer_codings_other_than_chunked_are_a_protocol_error(fields: bytes) -> None:
    """The proxy can only re-frame a chunked body (RFC 9112 6.1, 7): any other coding,
    alone or with chunked, is a malformed response (502), not a body run to the close.
    """
    connection, transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    error = handler.error()
    assert error.kind is ErrorKind.PROTOCOL
    assert "Transfer-Encoding" in error.detail
    assert "head" not in handler.kinds()
    assert transport.disconnecting


@pytest.mark.parametrize(
    "value",
    [b"chunked\t", b"chunked \t", b"chunked,", b"chunked, ", b"chunked\r\nTransfer-Encoding: ,"],
)
def test_chunked_that_llhttp_would_not_frame_as_chunked_is_a_protocol_error(value: bytes) -> None:
    """A Transfer-Encoding that names chunked alone as a list (RFC 9110 5.6.1) but
    that llhttp does not take for chunked (a trailing comma or tab) would have the
    chunks passed on as a body read to the close: what the proxy thinks the framing
    is and what frames the body must agree (RFC 9112 11.2), so it is a 502.
    """
    connection, transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    error = handler.error()
    assert error.kind is ErrorKind.PROTOCOL
    assert "Transfer-Encoding" in error.detail
    assert "head" not in handler.kinds()
    assert transport.disconnecting


def test_chunked_alone_in_any_spelling_is_accepted() -> None:
    """``chunked`` with other case, spaces or an empty list element is still chunked;
    a HEAD response may name any coding, since it has no body to frame.
    """
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: , Chunked \r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    assert handler.body == b"ok" and handler.complete
    head = Recorder()
    connection.send(b"HEAD / HTTP/1.1\r\nHost: u\r\n\r\n", head, head_only=True)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert head.kinds() == ["head", "data"] and head.complete


def test_field_values_lose_surrounding_whitespace() -> None:
    """A field value excludes the whitespace around it (RFC 9112 5): llhttp drops the
    leading part, the connection the trailing part, even when split across reads.
    """
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nX-One:  \t spaced \t \r\nX-Two: sp")
    connection.dataReceived(b"lit  ")
    connection.dataReceived(b"\t\r\nX-Empty:   \r\nContent-Length: 0 \r\n\r\n")
    _status, _reason, headers = handler.events[0][1]
    assert headers == [
        (b"X-One", b"spaced"),
        (b"X-Two", b"split"),
        (b"X-Empty", b""),
        (b"Content-Length", b"0"),
    ]


def test_a_head_alone_is_followed_by_empty_data() -> None:
    """When a read completes the head but carries no body byte of an unfinished
    response (Server-Sent Events, a long poll), the handler hears response_data(b"",
    False) at once, so it can send the head on; with body bytes in the same read, or a
    complete response, there is no such call.
    """
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert handler.kinds() == ["head", "data"]
    assert handler.events[1][1] == (b"", False)
    connection.dataReceived(b"c\r\ndata: hello\n\r\n")
    assert handler.events[-1] == ("data", (b"data: hello\n", False))
    connection.dataReceived(b"0\r\n\r\n")
    assert handler.complete and connection.idle

    second = Recorder()
    connection.send(GET, second)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")
    assert second.events[1:] == [("data", (b"ab", False))]
    third = Recorder()
    connection.dataReceived(b"0\r\n\r\n")
    connection.send(GET, third)
    connection.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert third.events[1:] == [("data", (b"", True))]


def test_closed_error_says_why() -> None:
    """The CLOSED error's detail carries the reason the connection ended, for the log."""
    connection, _transport, _clock, _owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.connectionLost(Failure(ConnectionLost("reset by the upstream's peer")))
    error = handler.error()
    assert error.kind is ErrorKind.CLOSED
    assert "closed before a response" in error.detail
    assert "reset by the upstream's peer" in error.detail


def test_a_connection_gone_before_use_is_a_connect_error() -> None:
    """A connection that ended before the pool handed it out is a connect failure
    (the request goes elsewhere), never a connection to send on.
    """
    connection, _transport, _clock, _owner = connected()
    connection.connectionLost(Failure(ConnectionDone()))
    results: list[Any] = []
    connection.wait_for_handshake().addBoth(results.append)
    (failure,) = results
    assert isinstance(failure, Failure)
    error = failure.value
    assert isinstance(error, UpstreamError)
    assert error.kind is ErrorKind.CONNECT


class BufferingTransport(StringTransport):
    """Shows a socket transport's unsent buffer, as Twisted's TCP transport keeps it."""

    def __init__(self) -> None:
        super().__init__()
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0


def test_an_upstream_reading_the_body_slowly_is_not_cut_off() -> None:
    """While the upstream takes some of the request body within each idle_timeout it
    keeps its connection (as the server's send_timeout); once it takes nothing, the
    request fails as before.
    """
    clock = Clock()
    owner = Owner()
    connection = ClientConnection(owner, SETTINGS, clock)
    transport = BufferingTransport()
    connection.makeConnection(transport)
    handler = Recorder()
    connection.send(
        b"PUT / HTTP/1.1\r\nHost: u\r\nContent-Length: 900000\r\n\r\n", handler, body=True
    )
    transport.dataBuffer = b"x" * 200_000
    connection.pauseProducing()
    for _ in range(5):
        clock.advance(9.0)
        transport.offset += 1000
    assert "failed" not in handler.kinds()
    clock.advance(10.1)  # the last read counts once
    clock.advance(10.1)
    assert handler.error().kind is ErrorKind.TIMEOUT


def test_an_empty_line_after_a_response_keeps_the_connection() -> None:
    """A CRLF after a response is tolerated, as before a request (RFC 9112 2.2): the
    connection is reused and the next response parses.
    """
    connection, _transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na\r\n")
    assert owner.reused == [connection]
    second = Recorder()
    connection.send(GET, second)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (second.body, second.complete) == (b"ok", True)


def test_an_endless_trailer_section_is_cut_off() -> None:
    """Llhttp holds an unfinished trailer field line whole (and copies it at each
    read): past the head limit, the response fails instead of growing the server's
    memory until the idle timeout.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Trailer: "
    )
    for _ in range(MAX_RESPONSE_HEAD // 8192 + 2):
        connection.dataReceived(b"t" * 8192)
        if "failed" in handler.kinds():
            break
    assert handler.error().kind is ErrorKind.PROTOCOL
    assert handler.body == b"a" and not handler.complete
    assert owner.reused == [] and transport.disconnecting


def test_an_endless_chunk_extension_is_cut_off_and_named() -> None:
    """A chunk-size line whose extension never ends holds no body byte either: cut off
    at the same limit, and the log's words cover the chunk framing, not only trailers.
    """
    connection, transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=")
    for _ in range(MAX_RESPONSE_HEAD // 8192 + 2):
        connection.dataReceived(b"e" * 8192)
        if "failed" in handler.kinds():
            break
    error = handler.error()
    assert error.kind is ErrorKind.PROTOCOL
    assert "chunk framing" in error.detail
    assert owner.reused == [] and transport.disconnecting


def test_a_long_chunked_body_in_small_pieces_is_not_cut_off() -> None:
    """The framing of a chunked body (size lines, CRLFs) is not a trailer: a body of
    many small chunks, far more than the head limit in total, goes through.
    """
    connection, _transport, _clock, owner = connected()
    handler = Recorder()
    connection.send(GET, handler)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    pieces = 0
    while pieces * 8 < 4 * MAX_RESPONSE_HEAD:
        connection.dataReceived(b"1;a=b\r\nx\r\n" * 8)
        pieces += 8
    connection.dataReceived(b"0\r\nX-Trailer: done\r\n\r\n")
    assert handler.body == b"x" * pieces and handler.complete
    assert owner.reused == [connection]


# -- the remembered head of a repeated response ------------------------------------------

#: A fast upstream's answer, the same each time (as the in-memory benchmark's).
REPEATED = (
    b"HTTP/1.1 200 OK\r\nServer: u\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Connection: keep-alive\r\n\r\nHello, World!"
)
#: REPEATED, one byte of a field value changed.
ONE_BYTE_OFF = REPEATED.replace(b"text/plain", b"text/plaim")
#: REPEATED with Connection: close, as long in all (the body makes up the 5 bytes).
CLOSING = (
    b"HTTP/1.1 200 OK\r\nServer: u\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n"
    b"Connection: close\r\n\r\nHello, World!12345"
)
#: REPEATED's head, announcing a body as long as REPEATED itself.
HOLDING_REPEATED = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPEATED)
#: The head of REPEATED, then its body (as read).
REPEATED_HEAD, REPEATED_BODY = REPEATED.split(b"\r\n\r\n")
REPEATED_HEAD += b"\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: u\r\n\r\n"
#: REPEATED after an interim head, in one read.
HINTED = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + REPEATED
HTTP10 = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

#: A step of a script: a request (send's keywords), a read, or the end of a request body.
Step = dict[str, bool] | bytes | str | Callable[[], None]


def _switch_memo(connection: ClientConnection, remember: bool, hits: list[int]) -> None:
    """Turn ``connection``'s remembered head off, or count in ``hits[0]`` its uses."""
    if not remember:
        connection._remember_head = lambda data: None  # type: ignore[method-assign]
        return
    reuse_head = connection._reuse_head

    def counted(*args: Any) -> None:
        hits[0] += 1
        reuse_head(*args)

    connection._reuse_head = counted  # type: ignore[method-assign,assignment]


def script_trace(
    script: list[Step], *, remember: bool, transport: StringTransport | None = None
) -> tuple[list[Any], int]:
    """Play ``script`` on a new connection; what an observer sees after each step.

    Args:
        script: requests (a dict of send's keywords), reads, "end" (the end of a
            request body), and calls to make between them.
        remember: whether the connection may remember a head; without, every
            response is parsed (the reference).
        transport: the connection's transport (a StringTransport by default).

    Returns:
        Per step, what the handler was told so far, whether the connection is idle,
        closing or aborted, how often it was given back, the warnings logged; and how
        many responses were taken from a remembered head.
    """
    connection = ClientConnection(Owner(), SETTINGS, Clock())
    owner = connection._owner
    assert isinstance(owner, Owner)
    hits = [0]
    _switch_memo(connection, remember, hits)
    transport = transport or StringTransport()
    connection.makeConnection(transport)
    handler = Recorder()
    seen: list[Any] = []
    with capture_log_events() as events:
        for step in script:
            if isinstance(step, dict):
                if not connection.idle:
                    seen.append("not idle")
                    continue
                handler = Recorder()
                connection.send(HEAD if step.get("head_only") else GET, handler, **step)
            elif step == "end":
                connection.end_body()
            elif callable(step):
                step()
                continue
            else:
                assert isinstance(step, bytes)
                connection.dataReceived(step)
            warnings = [formatEvent(e) for e in events if e["log_level"].name != "debug"]
            seen.append(
                (
                    list(handler.events),
                    connection.idle,
                    transport.disconnecting,
                    transport.disconnected,
                    len(owner.reused),
                    warnings,
                )
            )
    return seen, hits[0]


GET_: dict[str, bool] = {}  # a GET request, for scripts
HEAD_: dict[str, bool] = {"head_only": True}
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 13\r\n\r\n"
NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 13\r\n\r\n"


def exchanges(response: bytes, count: int) -> list[Step]:
    """``count`` GET requests, each answered with ``response``."""
    return [step for _ in range(count) for step in (GET_, response)]


#: A response, and another as long (whose head is then remembered).
PRIMED = exchanges(REPEATED, 2)


REMEMBERED_HEAD_SCRIPTS: dict[str, tuple[list[Step], int]] = {
    # (script, responses taken from the remembered head)
    "repeated": ([*PRIMED, GET_, REPEATED, GET_, REPEATED], 2),
    "one byte short, then the rest": (
        [*PRIMED, GET_, REPEATED[:-1], REPEATED[-1:], GET_, REPEATED],
        1,
    ),
    "one byte more": ([*PRIMED, GET_, REPEATED + b"!"], 0),
    "a second response pipelined after the body": ([*PRIMED, GET_, REPEATED * 2], 0),
    "a byte of a field value differs": (
        [*PRIMED, GET_, ONE_BYTE_OFF, GET_, ONE_BYTE_OFF, GET_, REPEATED],
        0,
    ),
    "another head as long, then the same again and again": (
        [*PRIMED, *exchanges(ONE_BYTE_OFF, 20)],
        3,
    ),
    "Connection: close, as long in all": ([*PRIMED, GET_, CLOSING, GET_], 0),
    "a HEAD request answered with the same bytes": ([*PRIMED, HEAD_, REPEATED], 0),
    "a HEAD request's head, then a GET's": (
        [HEAD_, REPEATED_HEAD, *exchanges(REPEATED, 3)],
        1,
    ),
    "split across two reads after it": (
        [*PRIMED, GET_, REPEATED[:20], REPEATED[20:], GET_, REPEATED_HEAD, REPEATED_BODY],
        0,
    ),
    "a body that holds the remembered response": (
        [*PRIMED, GET_, HOLDING_REPEATED, REPEATED, GET_, REPEATED],
        1,
    ),
    "an empty line after it": (
        [*exchanges(REPEATED + b"\r\n", 3), *exchanges(REPEATED, 3)],
        1,
    ),
    "a 204 with a Content-Length": (
        [*exchanges(NO_CONTENT, 3), GET_, NO_CONTENT + b"Hello, World!"],
        0,
    ),
    "a 304 with a Content-Length": (
        [*exchanges(NOT_MODIFIED, 3), GET_, NOT_MODIFIED + b"Hello, World!"],
        0,
    ),
    "a 205 with content": (
        exchanges(b"HTTP/1.1 205 Reset Content\r\nContent-Length: 2\r\n\r\nno", 4),
        2,
    ),
    "Content-Length: 0": (exchanges(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4), 2),
    "chunked": ([GET_, CHUNKED, GET_, CHUNKED, GET_, CHUNKED], 0),
    "an interim head before it": ([*PRIMED, GET_, HINTED, GET_, HINTED], 0),
    "HTTP/1.0 kept alive": ([GET_, HTTP10, GET_, HTTP10, GET_], 0),
    "an upgrade request answered without a switch": (
        [*PRIMED, {"upgrade": True}, REPEATED, GET_, REPEATED],
        1,
    ),
    "an early response while the body is sent": (
        [*PRIMED, {"body": True}, REPEATED, "end", GET_, REPEATED],
        0,
    ),
    "a response to a request with a body": (
        [*PRIMED, {"body": True}, "end", REPEATED, GET_, REPEATED],
        2,
    ),
}


#: Responses (as read) of each kind the parse keeps state for: interim heads,
#: codings, a status that ends at the head, a field unlike the remembered head's.
KINDS_OF_RESPONSE: dict[str, list[Step]] = {
    "repeated": [REPEATED],
    "another field value": [ONE_BYTE_OFF],
    "chunked": [CHUNKED],
    "an interim head": [HINTED],
    "a 204": [NO_CONTENT],
    "split in two reads": [REPEATED[:20], REPEATED[20:]],
}


@pytest.mark.parametrize("before", list(KINDS_OF_RESPONSE))
@pytest.mark.parametrize("after", list(KINDS_OF_RESPONSE))
def test_a_response_is_seen_as_on_a_new_connection_whatever_came_before(
    before: str, after: str
) -> None:
    """What a parsed response left (its fields, reason, codings, interim heads) is
    forgotten when the next response's first read is parsed, and a remembered head
    leaves nothing the next one sees: send forgets only the few fields read before
    a response's first bytes, the parse the rest.
    """
    second = KINDS_OF_RESPONSE[after]
    fresh, _ = script_trace([GET_, *second], remember=True)
    for script in (
        [*PRIMED, GET_, REPEATED, GET_, *KINDS_OF_RESPONSE[before], GET_, *second],
        [GET_, *KINDS_OF_RESPONSE[before], *PRIMED, GET_, REPEATED, GET_, *second],
    ):
        played, _ = script_trace(script, remember=True)
        assert played[-1][:2] == fresh[-1][:2]


@pytest.mark.parametrize("name", list(REMEMBERED_HEAD_SCRIPTS))
def test_a_remembered_head_changes_nothing_seen(name: str) -> None:
    """A response whose first read is the last plain response's head and exactly as
    many bytes more as its Content-Length is not parsed again (llhttp's callbacks per
    field cost ~1.4 us of a proxied request): the head is taken as the parse decided it
    then. What the handler is told, when the connection is given back or closed,
    what is logged, must be what parsing every response gives; and anything else (a
    read of another size, another byte anywhere in the head, a HEAD or an upgrade
    request, an early response, a head split from its body, a 204 or 304, chunking,
    an interim head, HTTP/1.0) is parsed as before.
    """
    script, hits = REMEMBERED_HEAD_SCRIPTS[name]
    remembered, taken = script_trace(script, remember=True)
    assert remembered == script_trace(script, remember=False)[0]
    assert taken == hits


def test_a_remembered_head_delivers_each_response_as_received() -> None:
    """Spelled out for the plainest repeat: the same head, a fresh list of its fields,
    the body as sent, the connection given back each time.
    """
    connection, _transport, _clock, owner = connected()
    heads = []
    for body in (b"Hello, World!", b"Other, body!!", b"Third, body!!"):
        handler = Recorder()
        connection.send(GET, handler)
        connection.dataReceived(REPEATED_HEAD + body)
        assert handler.kinds() == ["head", "data"]
        heads.append(handler.events[0][1])
        assert (handler.body, handler.complete) == (body, True)
    assert heads[0] == heads[1] == heads[2]
    assert heads[0][0:2] == (200, b"OK")
    assert heads[0][2] == [
        (b"Server", b"u"),
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"13"),
        (b"Connection", b"keep-alive"),
    ]
    assert heads[1][2] is not heads[2][2]
    assert owner.reused == [connection, connection, connection]


@dataclass
class ChangingFields(Recorder):
    """A handler that changes the list of fields it is given (after recording a copy)."""

    given: list[list[tuple[bytes, bytes]]] = field(default_factory=list)

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().response_head(status, reason, list(headers))
        self.given.append(headers)
        headers.append((b"X-Added", b"by the handler"))
        headers[0] = (b"Server", b"changed")


def test_a_handler_changing_the_fields_leaves_the_remembered_head_alone() -> None:
    """A handler may keep or change the list of fields it is given: the next response
    with the same head gets the upstream's fields, in a list of its own.
    """
    connection, _transport, _clock, _owner = connected()
    given: list[list[tuple[bytes, bytes]]] = []
    for _ in range(3):
        handler = ChangingFields(given=given)
        connection.send(GET, handler)
        connection.dataReceived(REPEATED)
        assert handler.events[0][1][2][0] == (b"Server", b"u")
        assert (b"X-Added", b"by the handler") not in handler.events[0][1][2]
    assert given[1] is not given[2]


def test_a_handler_giving_up_at_a_remembered_head_hears_nothing_more() -> None:
    """A handler that drops the connection at the head (a retry elsewhere, an answer
    of its own) is told nothing more, and the connection is not given back.
    """
    connection, transport, _clock, owner = connected()
    for _ in range(2):
        connection.send(GET, Recorder())
        connection.dataReceived(REPEATED)
    handler = Recorder()
    connection.send(GET, handler)
    original = handler.response_head

    def giving_up(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        original(status, reason, headers)
        connection.abort()

    handler.response_head = giving_up  # type: ignore[method-assign]
    connection.dataReceived(REPEATED)
    assert handler.kinds() == ["head"]
    assert owner.reused == [connection, connection]
    assert transport.disconnected


class CountingParser:
    """Stands for a connection's parser, counting the reads it is fed."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


def test_a_head_is_remembered_per_connection() -> None:
    """A new connection parses its first response, whatever another one remembers:
    the memo needs no sharing rule, and goes with its connection.
    """
    owner = Owner()
    traces = []
    for _ in range(2):
        connection, _transport, _clock, _owner = connected(owner)
        counting = CountingParser(connection._parser)
        connection._parser = counting  # type: ignore[assignment]
        for _ in range(3):
            handler = Recorder()
            connection.send(GET, handler)
            connection.dataReceived(REPEATED)
            traces.append((handler.events, handler.body))
        assert counting.fed == 2
    assert all(trace == traces[0] for trace in traces)


def test_a_remembered_head_read_as_large_as_a_read_looks_for_more() -> None:
    """A read as large as the transport reads at once may have left bytes of the
    upstream's behind (a longer body, a second response): the socket is asked, and
    with bytes there the connection is dropped (RFC 9112 9.3), as after a parse.
    """

    def played(*, remember: bool) -> tuple[list[Any], int]:
        upstream_end, proxy_end = socket.socketpair()

        class SocketBacked(StringTransport):
            bufferSize = len(REPEATED)  # noqa: N815 (Twisted's name)

            def getHandle(self) -> socket.socket:
                return proxy_end

        def stray_bytes() -> None:
            upstream_end.sendall(b"!")

        script: list[Step] = [*PRIMED, GET_, stray_bytes, REPEATED, GET_, REPEATED]
        try:
            return script_trace(script, remember=remember, transport=SocketBacked())
        finally:
            upstream_end.close()
            proxy_end.close()

    seen, hits = played(remember=True)
    assert seen == played(remember=False)[0]
    assert hits == 1
    assert seen[-2] == "not idle"


# -- any script, with and without the memo (a property) ------------------------------------


def _response_head(status_line: bytes, *fields: bytes) -> bytes:
    return status_line + b"\r\n" + b"".join(line + b"\r\n" for line in fields) + b"\r\n"


#: The plain head the scripts below mostly answer with (so that repeats happen), a
#: whole response with it, and a head announcing that response as its body.
_PLAIN_HEAD = _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 5")
_PLAIN = _PLAIN_HEAD + b"hello"
_HOLDING_PLAIN = _response_head(b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(_PLAIN))
#: Heads the memo may keep, and heads of each kind it must leave to the parser.
_SCRIPT_HEADS = [
    _PLAIN_HEAD,
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Server: u"),
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Server: v"),
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 4"),
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 0"),
    _HOLDING_PLAIN,
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Connection: close"),
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Connection: upgrade", b"Upgrade: h"),
    _response_head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"X: a  "),
    _response_head(b"HTTP/1.1 200 O\x01K", b"Content-Length: 5"),
    _response_head(b"HTTP/1.1 200 ", b"Content-Length: 5"),
    _response_head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"),
    _response_head(b"HTTP/1.1 200 OK"),
    _response_head(b"HTTP/1.1 204 No Content", b"Content-Length: 5"),
    _response_head(b"HTTP/1.1 304 Not Modified", b"Content-Length: 5"),
    _response_head(b"HTTP/1.1 205 Reset Content", b"Content-Length: 5"),
    _response_head(b"HTTP/1.1 101 Switching Protocols", b"Connection: upgrade", b"Upgrade: h"),
    _response_head(b"HTTP/1.1 103 Early Hints", b"Link: </a>") + _PLAIN_HEAD,
    _response_head(b"HTTP/1.0 200 OK", b"Content-Length: 5", b"Connection: keep-alive"),
    _response_head(b"HTTP/1.1 999 OK", b"Content-Length: 5"),
    b"\r\n" + _PLAIN_HEAD,
    b"HTTP/1.1 200 OK\nContent-Length: 5\n\n",  # bare LF line ends (llhttp refuses them)
]
#: Bodies: of the length announced (most often), or not, with empty lines in them,
#: the last chunk, a whole plain response.
_SCRIPT_BODIES = [b"", b"hell", b"hello!", b"he\r\n\r\n", b"\r\n\r\nx", b"0\r\n\r\n", _PLAIN]
#: What may follow a response in its read: empty lines (llhttp skips them), the
#: start of another response, another whole one.
_SCRIPT_TAILS = [b"\r\n", b"\r", b"H", _PLAIN]
#: What the handler does at the head, and at the end of the body.
_AT_HEAD = ["nothing", "abort", "close", "pause reading", "pause and resume reading"]
_AT_END = ["nothing", "send again", "abort", "pause reading"]
#: Steps between exchanges: the request body's end, more of it, time passing, the
#: upstream's socket (bytes or its close behind a read), the upstream not reading,
#: the connection lost.
_SCRIPT_EVENTS: list[str | float] = [
    "end",
    "write",
    "stray bytes",
    "drain",
    "shut",
    "send paused",
    "send resumed",
    "lost",
    1.0,
    10.0,
    30.0,
    61.0,
]


@dataclass(frozen=True)
class _ScriptRequest:
    """A request of a script: send's keywords, what its handler does, what the owner says."""

    keywords: tuple[tuple[str, bool], ...]
    at_head: str = "nothing"
    at_end: str = "nothing"
    keep: float | None = 30.0


@dataclass
class _Acting(Recorder):
    """A handler that does something to its connection at the head and at the end."""

    connection: Any = None
    at_head: str = "nothing"
    at_end: str = "nothing"

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().response_head(status, reason, list(headers))
        headers.append((b"X-Added", b"by the handler"))  # (it may: the list is its own)
        connection = self.connection
        if self.at_head == "abort":
            connection.abort()
        elif self.at_head == "close":
            connection.close()
        elif self.at_head == "pause reading":
            connection.pause_reading()
        elif self.at_head == "pause and resume reading":
            connection.pause_reading()
            connection.resume_reading()

    def response_data(self, data: bytes, complete: bool) -> None:
        super().response_data(data, complete)
        if not complete:
            return
        connection = self.connection
        if self.at_end == "send again" and connection.idle:
            self.events.append(("sent again", None))
            connection.send(GET, Recorder())
        elif self.at_end == "abort":
            connection.abort()
        elif self.at_end == "pause reading":
            connection.pause_reading()


_ScriptStep = _ScriptRequest | tuple[bytes, ...] | str | float


def _seen_events(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A handler's events, failures by what they say (each run makes its own).

    An :class:`UpstreamError` and a tunnel's closing :class:`Failure` are new objects
    in each run, equal to nothing else: they are compared by their type and words.
    """
    seen: list[tuple[str, Any]] = []
    for kind, value in events:
        if isinstance(value, UpstreamError):
            seen.append((kind, (value.kind, value.detail, value.response_started, value.reused)))
        elif isinstance(value, Failure):
            seen.append((kind, (value.type, str(value.value))))
        else:
            seen.append((kind, value))
    return seen


@contextlib.contextmanager
def resetting_eagerly() -> Iterator[None]:
    """Have every connection forget its last response whole at each send, as before
    send's reset was made lazy (948d3c8, 2e2bb56): the parse's fields too, and a
    remembered head setting them all as the parse would.
    """
    send = ClientConnection.send
    reuse_head = ClientConnection._reuse_head

    def send_forgetting_all(self: ClientConnection, *args: Any, **keywords: Any) -> None:
        if self.state is STATE_IDLE:
            self._reset_parse(False)
        send(self, *args, **keywords)

    def reuse_setting_all(self: ClientConnection, handler: Any, repeated: Any, data: bytes) -> None:
        _, status, reason, fields = repeated
        self._starts_http11 = True
        self._head_bytes += len(data)
        self._status = status
        self._reason = reason
        self._headers = list(fields)
        self._in_body = True
        reuse_head(self, handler, repeated, data)

    with unittest.mock.patch.multiple(
        ClientConnection, send=send_forgetting_all, _reuse_head=reuse_setting_all
    ):
        yield


def _script_played(
    script: list[_ScriptStep], *, remember: bool, buffer_size: int | None, eager: bool = False
) -> tuple[list[Any], int]:
    """Play ``script`` on a new connection over a socket-backed transport.

    A request finding the connection busy or closed goes on a new one, the busy one
    dropped. ``eager``: every connection forgets its last response whole at each
    send (:func:`resetting_eagerly`).

    Returns:
        After each step, everything an observer of the connection can see (what each
        handler was told, the connection's state, what it wrote, its timers, what
        its owner heard, the warnings); then what a last response on it gives, if it
        is still idle; and how many responses were taken from a remembered head.
    """
    with resetting_eagerly() if eager else contextlib.nullcontext():
        return _played(script, remember=remember, buffer_size=buffer_size)


def _played(
    script: list[_ScriptStep], *, remember: bool, buffer_size: int | None
) -> tuple[list[Any], int]:
    """:func:`_script_played`, in the context it chose."""
    upstream_end, proxy_end = socket.socketpair()

    class SocketBacked(StringTransport):
        def getHandle(self) -> socket.socket:
            return proxy_end

    if buffer_size is not None:
        SocketBacked.bufferSize = buffer_size  # type: ignore[attr-defined]
    clock = Clock()
    owner = Owner()
    hits = [0]

    def connect() -> tuple[ClientConnection, StringTransport]:
        connection = ClientConnection(owner, SETTINGS, clock)
        _switch_memo(connection, remember, hits)
        transport = SocketBacked()
        connection.makeConnection(transport)
        return connection, transport

    connection, transport = connect()
    handlers: list[_Acting] = []
    seen: list[Any] = []
    with (
        capture_log_events() as events,
        contextlib.closing(upstream_end),
        contextlib.closing(proxy_end),
    ):
        for step in script:
            if isinstance(step, _ScriptRequest):
                owner.keep = step.keep
                if not connection.idle:
                    # A new connection (a pool's next), so that the script goes on.
                    if not (transport.disconnecting or transport.disconnected):
                        seen.append("abandoned")
                        connection.abort()
                    seen.append("connected again")
                    connection, transport = connect()
                keywords = dict(step.keywords)
                handler = _Acting(connection=connection, at_head=step.at_head, at_end=step.at_end)
                handlers.append(handler)
                connection.send(HEAD if keywords.get("head_only") else GET, handler, **keywords)
            elif isinstance(step, tuple):
                for read in step:
                    connection.dataReceived(read)
            elif isinstance(step, float):
                clock.advance(step)
            elif step == "end":
                connection.end_body()
            elif step == "write":
                connection.write_body(b"abc")
            elif step == "stray bytes":
                with contextlib.suppress(OSError):
                    upstream_end.sendall(b"!")
            elif step == "drain":
                with contextlib.suppress(OSError):
                    proxy_end.recv(100, socket.MSG_DONTWAIT)
            elif step == "shut":
                with contextlib.suppress(OSError):
                    upstream_end.shutdown(socket.SHUT_WR)
            elif step == "send paused":
                connection.pauseProducing()
            elif step == "send resumed":
                connection.resumeProducing()
            elif step == "lost" and not transport.disconnected:
                transport.disconnected = True
                connection.connectionLost(Failure(ConnectionDone()))
            seen.append(
                (
                    [_seen_events(handler.events) for handler in handlers],
                    connection.state,
                    connection.settling,
                    transport.disconnecting,
                    transport.disconnected,
                    transport.producerState,
                    transport.value(),
                    len(owner.reused),
                    len(owner.closed),
                    [formatEvent(e) for e in events if e["log_level"].name != "debug"],
                    sorted(call.getTime() for call in clock.getDelayedCalls()),
                    connection._deadline,
                    connection._deadline_kind,
                )
            )
        if connection.idle and not connection.settling:
            # What the parser makes of the next response tells its state.
            last = Recorder()
            connection.send(GET, last)
            connection.dataReceived(
                _response_head(b"HTTP/1.1 404 Last", b"Content-Length: 1") + b"!"
            )
            seen.append(("last", _seen_events(last.events), connection.idle))
    return seen, hits[0]


@st.composite
def _script_requests(draw: st.DrawFn, *, plain: bool = False) -> _ScriptRequest:
    """A request: a GET when ``plain``, else any kind."""
    keywords = {}
    if not plain:
        keywords = draw(
            st.sampled_from(
                [
                    {},
                    {"head_only": True},
                    {"upgrade": True},
                    {"body": True},
                    {"body": True, "chunked": True},
                ]
            )
        )
    return _ScriptRequest(
        tuple(keywords.items()),
        # (Most do nothing: the connection lives on, for a repeat to meet the memo.)
        draw(st.sampled_from(_AT_HEAD)) if draw(st.integers(0, 3)) == 0 else "nothing",
        draw(st.sampled_from(_AT_END)) if draw(st.integers(0, 3)) == 0 else "nothing",
        None if draw(st.integers(0, 7)) == 0 else 30.0,
    )


@st.composite
def _script_exchanges(draw: st.DrawFn) -> list[_ScriptStep]:
    """A request, its response in reads, and what may happen around them.

    Two in three are plain (a GET answered with a head the memo keeps and its body, whole in
    one read), so that the connection lives on and repeats meet the memo.
    """
    plain = draw(st.integers(0, 2)) > 0
    request = draw(_script_requests(plain=plain))
    steps: list[_ScriptStep] = [request]
    sends_body = dict(request.keywords).get("body", False)
    body_ends_first = draw(st.booleans())
    if sends_body and body_ends_first:
        steps.append("end")
    head = draw(st.sampled_from(_SCRIPT_HEADS[:6] if plain else _SCRIPT_HEADS))
    length = re.search(rb"Content-Length: (\d+)", head)
    if length is not None and (plain or draw(st.booleans())):
        body = (b"hello" if int(length.group(1)) <= 5 else _PLAIN)[: int(length.group(1))]
    else:
        body = draw(st.sampled_from(_SCRIPT_BODIES))
    if plain:
        # (Empty lines after it: llhttp skips them, the memo must not take them.)
        tail = draw(st.sampled_from([b"", b"", b"", b"\r\n", b"\r"]))
    else:
        tail = draw(st.sampled_from([b"", *_SCRIPT_TAILS]))
    response = head + body + tail
    cuts: list[int] = []
    # (A plain one is split at most after its head: its body may be a whole response.)
    split = draw(st.sampled_from([0, 2, 2, 2])) if plain else draw(st.integers(0, 2))
    if split == 0:
        cuts = [len(head)]
    elif split == 1:
        cuts = sorted(draw(st.lists(st.integers(1, len(response)), max_size=2)))
    reads = tuple(
        response[start:end]
        for start, end in zip([0, *cuts], [*cuts, len(response)], strict=True)
        if end > start
    )
    steps.append(reads)
    if sends_body and not body_ends_first:
        steps.append("end")
    if draw(st.integers(0, 4)) == 0:
        steps.append(draw(st.sampled_from(_SCRIPT_EVENTS)))
    return steps


@st.composite
def _scripts(draw: st.DrawFn) -> tuple[list[_ScriptStep], int | None]:
    """Exchanges, many of them an earlier one again (its request, or a plain GET)."""
    played: list[list[_ScriptStep]] = []
    for _ in range(draw(st.integers(1, 8))):
        if played and draw(st.integers(0, 2)) > 0:
            exchange = list(draw(st.sampled_from(played)))
            exchange[0] = draw(_script_requests(plain=draw(st.booleans())))
        else:
            exchange = draw(_script_exchanges())
        played.append(exchange)
    script = [step for exchange in played for step in exchange]
    # Reads as large as the transport's make the connection look into the socket.
    buffer_size = draw(st.sampled_from([None, len(_PLAIN), len(_PLAIN) - 1, len(_PLAIN_HEAD)]))
    return script, buffer_size


_GET_STEP = _ScriptRequest(())
_CHUNKED_WHOLE = (
    _response_head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n"
)
_UPGRADE_STEP = _ScriptRequest((("upgrade", True),), keep=None)
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h\r\n\r\n"


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scripts())
# Three the scripts reach seldom: the remembered response as the body of another, a
# read as large as the transport's with bytes behind it in the socket, and a tunnel
# the upstream closes (its Failure is compared by what it says, see _seen_events).
@example(([_GET_STEP, (_PLAIN,), _GET_STEP, (_HOLDING_PLAIN, _PLAIN), _GET_STEP, (_PLAIN,)], None))
@example(([_GET_STEP, (_PLAIN,), "stray bytes", _GET_STEP, (_PLAIN,)], len(_PLAIN)))
@example(([_UPGRADE_STEP, (_SWITCHING,), "lost"], None))
def test_any_script_is_seen_the_same_with_and_without_a_remembered_head(
    case: tuple[list[_ScriptStep], int | None],
) -> None:
    """Whatever the requests (GET, HEAD, upgrade, with a body ended before or after
    the response), the responses (plain or not, any length, with more after them, in
    reads split anywhere), what the handler does at the head or the end, the time
    passing and the upstream's socket between exchanges: the connection with the
    memo is seen doing what it does without it, step by step, and leaves its parser
    where the parse would (the next response reads the same).
    """
    script, buffer_size = case
    remembered, hits = _script_played(script, remember=True, buffer_size=buffer_size)
    event("taken from a remembered head" if hits else "all parsed")
    assert remembered == _script_played(script, remember=False, buffer_size=buffer_size)[0]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scripts())
# What a chunked response leaves (its codings) must not keep the plain ones after it
# from being remembered: the scripts seldom end a chunked body and repeat a plain one.
@example(([_GET_STEP, (_CHUNKED_WHOLE,), *[_GET_STEP, (_PLAIN,)] * 3], None))
def test_any_script_is_seen_the_same_with_a_lazy_and_an_eager_reset(
    case: tuple[list[_ScriptStep], int | None],
) -> None:
    """A send forgets only the fields read before a response's first bytes, and a
    remembered head sets only those read after it (the parse of the next response's
    first read forgets the rest): whatever happens between two responses (a close,
    a timeout, a stray byte, a handler giving up), nothing left of the last one is
    seen, as if send had forgotten all of it (the new scripts' responses and the
    remembered heads taken alike).
    """
    script, buffer_size = case
    lazy = _script_played(script, remember=True, buffer_size=buffer_size)
    assert lazy == _script_played(script, remember=True, buffer_size=buffer_size, eager=True)
