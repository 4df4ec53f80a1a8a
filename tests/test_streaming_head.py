"""Sending a response head before its body: ``Exchange.send_head`` and the proxy's use of it.

A head is normally held until the first body bytes, so a short response goes out in one
write with an exact ``Content-Length``. A stream whose first bytes may be long in coming
(Server-Sent Events, a long poll) needs the head sent at once: the exchange tests drive
``send_head`` through the real HTTP/1.1 protocol; the proxy tests give it an upstream that
sends only a head, over in-memory connections with a ``Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from twistwsgi.config import MountConfig, ServerConfig, Upstream, default_options
from twistwsgi.forwarding import UpstreamAddress
from twistwsgi.http.client import ClientConnection
from twistwsgi.http.exchange import Exchange
from twistwsgi.proxy import build_proxy
from twistwsgi.testing import Connection, connect, parse_responses

_CLIENT = IPv4Address("TCP", "127.0.0.1", 54321)
_SERVER = IPv4Address("TCP", "127.0.0.1", 8080)


class CountingTransport(StringTransport):
    """A StringTransport that counts the writes made to it."""

    def __init__(self) -> None:
        super().__init__(hostAddress=_SERVER, peerAddress=_CLIENT)
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def received_so_far(raw: bytes, method: str = "GET") -> tuple[h11.Response, bytes, bool]:
    """Parse what a client received so far: the head, the body bytes, whether it ended."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    head: h11.Response | None = None
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, body, True
        elif event is h11.NEED_DATA:
            assert head is not None, f"no complete head in {raw!r}"
            return head, body, False
        else:
            raise AssertionError(event)


def field(head: h11.Response, name: bytes) -> bytes | None:
    for key, value in head.headers:
        if key == name:
            return bytes(value)
    return None


# -- Exchange.send_head ------------------------------------------------------------------


class Streamer:
    """A handler that starts a response and sends its head with no body bytes."""

    def __init__(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.headers = headers if headers is not None else [(b"Content-Type", b"text/plain")]
        self.exchange: Exchange | None = None

    def handle(self, exchange: Exchange) -> None:
        self.exchange = exchange
        exchange.start_response(200, list(self.headers))
        exchange.send_head()


def test_send_head_sends_a_chunked_head_at_once() -> None:
    """The head goes out before any body byte, chunked since no length is known; the
    body then follows in chunks and the response ends as usual.
    """
    handler = Streamer([(b"Content-Type", b"text/event-stream")])
    client = connect(handler)
    client.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body, ended = received_so_far(client.transport.value())
    assert head.status_code == 200 and (body, ended) == (b"", False)
    assert field(head, b"transfer-encoding") == b"chunked"
    exchange = handler.exchange
    assert exchange is not None
    exchange.send_head()  # a second call does nothing
    exchange.write(b"data: one\n\n")
    exchange.finish(b"data: two\n\n")
    (response,) = parse_responses(client.take())
    assert response.body == b"data: one\n\ndata: two\n\n"
    assert not client.is_closed()


def test_send_head_keeps_a_given_content_length() -> None:
    """A Content-Length set by the handler frames the body sent later."""
    handler = Streamer([(b"Content-Length", b"4")])
    client = connect(handler)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _body, _ended = received_so_far(client.transport.value())
    assert field(head, b"content-length") == b"4"
    assert field(head, b"transfer-encoding") is None
    assert handler.exchange is not None
    handler.exchange.finish(b"done")
    (response,) = parse_responses(client.take())
    assert response.body == b"done"


def test_send_head_to_an_http10_client_delimits_by_close() -> None:
    """HTTP/1.0 has no chunking: the body runs to the close."""
    handler = Streamer()
    client = connect(handler)
    client.send(b"GET / HTTP/1.0\r\n\r\n")
    assert client.transport.value().endswith(b"Connection: close\r\n\r\n")
    assert handler.exchange is not None
    handler.exchange.finish(b"all of it")
    (response,) = parse_responses(client.take())
    assert response.body == b"all of it"
    assert client.is_closed()


def test_send_head_before_start_response_is_an_error() -> None:
    """There is no head to send before start_response."""
    exchanges: list[Exchange] = []
    client = connect(_Keep(exchanges.append))
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(RuntimeError):
        exchanges[0].send_head()
    assert client.transport.value() == b""


class _Keep:
    def __init__(self, keep: Callable[[Exchange], object]) -> None:
        self.keep = keep

    def handle(self, exchange: Exchange) -> None:
        self.keep(exchange)


# -- the proxy ---------------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class MemoryUpstream:
    """An upstream whose connections are StringTransports the test answers on."""

    def __init__(self) -> None:
        self.connections: list[ClientConnection] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        protocol: Any = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 9000))
        protocol.makeConnection(StringTransport())
        self.connections.append(protocol)
        return succeed(protocol)


# The schema's defaults, with what these tests need differently.
OPTIONS: dict[str, Any] = {
    **default_options("proxy"),
    "connect_timeout": 5.0,
    "response_timeout": 30.0,
    "idle_timeout": 300.0,
    "keepalive": 8,
    "keepalive_timeout": 60.0,
}


def proxied() -> tuple[Connection, CountingTransport, MemoryUpstream]:
    """A client of a proxy to one in-memory upstream; the client's transport counts writes."""
    clock = Clock()
    upstream = MemoryUpstream()

    def endpoint_factory(address: UpstreamAddress) -> MemoryUpstream:
        return upstream

    mount = MountConfig("/", "proxy", (Upstream("http://10.0.0.1:9000"),), OPTIONS, "test")
    handler = build_proxy(mount, ServerConfig(), reactor=clock, endpoint_factory=endpoint_factory)
    transport = CountingTransport()
    client = connect(handler, clock=clock, transport=transport)
    return client, transport, upstream


def test_a_head_alone_from_the_upstream_reaches_the_client_at_once() -> None:
    """Server-Sent Events: the upstream sends its head and then nothing for a long
    time; the client already holds the whole head. Events then stream through, and the
    end of the upstream's response ends the client's.
    """
    client, _transport, upstream = proxied()
    client.send(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    (connection,) = upstream.connections
    connection.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    head, body, ended = received_so_far(client.transport.value())
    assert head.status_code == 200 and (body, ended) == (b"", False)
    assert field(head, b"content-type") == b"text/event-stream"
    connection.dataReceived(b"d\r\ndata: first\n\n\r\n")
    _head, body, ended = received_so_far(client.transport.value())
    assert (body, ended) == (b"data: first\n\n", False)
    connection.dataReceived(b"0\r\n\r\n")
    (response,) = parse_responses(client.take())
    assert response.body == b"data: first\n\n"
    assert connection.idle


def test_a_long_poll_head_with_a_length_is_sent_before_its_body() -> None:
    """A head with a Content-Length and no body yet is passed on too; the body follows."""
    client, _transport, upstream = proxied()
    client.send(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    (connection,) = upstream.connections
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
    head, body, _ended = received_so_far(client.transport.value())
    assert field(head, b"content-length") == b"7" and body == b""
    connection.dataReceived(b"changed")
    (response,) = parse_responses(client.take())
    assert response.body == b"changed"


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
)
def test_head_and_body_in_one_read_reach_the_client_in_one_write(response: bytes) -> None:
    """The fast path is unchanged: a response whose head and body (or end) arrive in
    one read reaches the client in a single transport write.
    """
    client, transport, upstream = proxied()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    before = transport.writes
    upstream.connections[0].dataReceived(response)
    assert transport.writes - before == 1
    (parsed,) = parse_responses(client.take())
    assert parsed.body == (b"" if b" 204 " in response else b"hello")


def test_head_and_first_chunk_of_a_stream_share_one_write() -> None:
    """A streamed response whose first body bytes came with its head: one write for
    both, then one per later read.
    """
    client, transport, upstream = proxied()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    connection = upstream.connections[0]
    before = transport.writes
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert transport.writes - before == 1
    connection.dataReceived(b"3\r\ndef\r\n0\r\n\r\n")
    (parsed,) = parse_responses(client.take())
    assert parsed.body == b"abcdef"
