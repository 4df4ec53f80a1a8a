"""The proxy handler driven through the real HTTP/1.1 protocol, with in-memory upstreams.

The client side is :func:`twistwsgi.testing.connect` (StringTransport, Clock); each
upstream is a fake endpoint whose connections are StringTransports too. What the proxy
sends upstream is parsed with h11 as a server would; what the client gets, with h11
as a client would.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import unittest.mock
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.request_corpus import VALID as CORPUS_VALID
from tests.request_corpus import Valid
from tests.test_client import resetting_eagerly
from tests.test_client_certificates import head as request_head
from twistwsgi import cli
from twistwsgi.client_certificates import ClientCertificate
from twistwsgi.config import MOUNT_KEYS, MountConfig, ServerConfig, Upstream, default_options
from twistwsgi.forwarding import TrustedProxies, UpstreamAddress, request_fields
from twistwsgi.http.client import ClientConnection
from twistwsgi.http.compression import GzipSettings
from twistwsgi.http.exchange import Handler
from twistwsgi.http.protocol import UPGRADE_TAIL_LIMIT, HTTP11Exchange, Refusal, ResponseLog
from twistwsgi.http.request import ErrorPage
from twistwsgi.http.settings import HttpSettings
from twistwsgi.log_format import LogFormat, RequestTemplate, escape
from twistwsgi.proxy import ACCEL_DRAIN_LIMIT, REPLAY_LIMIT, ProxyHandler, build_proxy
from twistwsgi.response_spool import SPOOL_GRACE
from twistwsgi.routing import (
    HostTable,
    Mount,
    MountTable,
    Router,
    RoutingTable,
    remove_dot_segments,
)
from twistwsgi.service import standard_builders
from twistwsgi.site import SiteBuilder, _accel_resolver, describe_routing
from twistwsgi.static import StaticHandler, StaticOptions
from twistwsgi.testing import (
    Connection,
    SynchronousThreadPool,
    capture_log_events,
    connect,
    parse_responses,
)

# The schema's defaults, with what these tests need differently.
OPTIONS: dict[str, Any] = {
    **default_options("proxy"),
    "connect_timeout": 5.0,
    "response_timeout": 30.0,
    "idle_timeout": 20.0,
    "keepalive": 8,
    "keepalive_timeout": 60.0,
}


@dataclass
class UpstreamConnection:
    """One connection the proxy opened to a fake upstream.

    ``clock``, when given, ends the reactor turn after each read (``advance(0)``),
    as a reactor does once it has handled what a poll returned.
    """

    protocol: ClientConnection
    transport: StringTransport
    clock: Clock | None = None

    def request(self) -> tuple[h11.Request, bytes]:
        """The (first) request sent on this connection, parsed by h11, and its body."""
        server = h11.Connection(h11.SERVER)
        server.receive_data(self.transport.value())
        request = server.next_event()
        assert isinstance(request, h11.Request), request
        body = b""
        while True:
            event = server.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) or event is h11.NEED_DATA:
                return request, body
            else:
                raise AssertionError(event)

    def header(self, name: bytes) -> list[bytes]:
        request, _ = self.request()
        return [value for key, value in request.headers if key == name]

    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def respond(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        if self.clock is not None:
            self.clock.advance(0)

    def take(self) -> bytes:
        written: bytes = self.transport.value()
        self.transport.clear()
        return written

    def close(self, reason: Exception | None = None) -> None:
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))
        if self.clock is not None:
            self.clock.advance(0)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """An upstream: connects at once (or refuses, or waits) with StringTransports."""

    def __init__(self, address: UpstreamAddress) -> None:
        self.address = address
        self.connections: list[UpstreamConnection] = []
        self.refuse = False
        self.hold = False
        self.pending: list[tuple[IProtocolFactory, Deferred[Any]]] = []
        self.cancelled = 0
        self.attempts = 0
        self.transport_factory: Callable[[], StringTransport] = StringTransport
        self.error: Exception | None = None  # connecting fails with this
        self.clock: Clock | None = None  # see UpstreamConnection

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        if self.error is not None:
            return fail(self.error)
        if self.refuse:
            return fail(ConnectionRefusedError("refused"))
        if self.hold:

            def cancel(_: Deferred[Any]) -> None:
                self.cancelled += 1

            waiting: Deferred[Any] = Deferred(cancel)
            self.pending.append((factory, waiting))
            return waiting
        return succeed(self._open(factory))

    def _open(self, factory: IProtocolFactory) -> ClientConnection:
        protocol: Any = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 9000))
        assert isinstance(protocol, ClientConnection)
        transport = self.transport_factory()
        protocol.makeConnection(transport)
        self.connections.append(UpstreamConnection(protocol, transport, self.clock))
        return protocol

    def complete_pending(self) -> None:
        pending, self.pending = self.pending, []
        for factory, waiting in pending:
            waiting.callback(self._open(factory))

    @property
    def last(self) -> UpstreamConnection:
        return self.connections[-1]


@dataclass
class Setup:
    handler: ProxyHandler
    endpoints: dict[str, FakeEndpoint]
    clock: Clock
    router: Router | None = None
    clients: list[Connection] = field(default_factory=list)

    def endpoint(self, index: int = 0) -> FakeEndpoint:
        return list(self.endpoints.values())[index]

    def client(
        self,
        settings: HttpSettings | None = None,
        response_log: ResponseLog | None = None,
        transport: StringTransport | None = None,
    ) -> Connection:
        handler: Any = self.router if self.router is not None else self.handler
        client = connect(
            handler,
            clock=self.clock,
            settings=settings,
            response_log=response_log,
            transport=transport,
        )
        self.clients.append(client)
        return client


def make_proxy(
    urls: tuple[str, ...] = ("http://10.0.0.1:9000",),
    *,
    mount: str = "/",
    weights: tuple[int, ...] | None = None,
    backups: tuple[int, ...] = (),
    down: tuple[int, ...] = (),
    trusted: tuple[str, ...] = (),
    routed: bool = False,
    error_pages: dict[int, ErrorPage] | None = None,
    access_log_format: str | None = None,
    max_response_buffer: int = 2**30,
    **options: Any,
) -> Setup:
    clock = Clock()
    endpoints: dict[str, FakeEndpoint] = {}

    def endpoint_factory(address: UpstreamAddress) -> FakeEndpoint:
        endpoint = FakeEndpoint(address)
        endpoint.clock = clock
        endpoints[address.url] = endpoint
        return endpoint

    upstreams = tuple(
        Upstream(url, weights[index] if weights else 1, backup=index in backups, down=index in down)
        for index, url in enumerate(urls)
    )
    config = MountConfig(mount, "proxy", upstreams, {**OPTIONS, **options}, "test mount")
    handler = build_proxy(
        config,
        ServerConfig(
            trusted_proxies=trusted,
            access_log_format=access_log_format,
            max_response_buffer=max_response_buffer,
        ),
        reactor=clock,
        endpoint_factory=endpoint_factory,
    )
    router = None
    if routed:
        mounts: MountTable[Handler] = MountTable(
            [Mount(config.prefix, handler)], error_pages=error_pages
        )
        table = RoutingTable(HostTable([], mounts))
        router = Router(table)
    return Setup(handler, endpoints, clock, router)


def one_response(client: Connection, method: bytes = b"GET") -> Any:
    (response,) = parse_responses(client.take(), [method])
    return response


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
WEBSOCKET_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def open_tunnel(setup: Setup) -> tuple[Connection, UpstreamConnection]:
    """A client whose WebSocket upgrade the upstream accepted: both ends of the tunnel."""
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    upstream = setup.endpoint().last
    upstream.respond(SWITCHED)
    return client, upstream


def answer_busy(setup: Setup) -> None:
    """Answer OK on every upstream connection that carries a request."""
    for endpoint in setup.endpoints.values():
        for upstream in endpoint.connections:
            if upstream.protocol.state.value == "busy":
                upstream.respond(OK)


def proxy_log(events: list[dict[str, Any]]) -> list[str]:
    """The proxy's log lines among ``events``, as an operator reads them."""
    return [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.proxy"]


# -- forwarding and pooling -----------------------------------------------------------------


def test_request_forwarded_and_response_relayed() -> None:
    """A GET is sent upstream as HTTP/1.1 with the raw target and Host, and the
    upstream's response reaches the client with its fields.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /a%2Fb?x=1 HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n")
    upstream = setup.endpoint().last
    request, _body = upstream.request()
    assert (request.method, request.target, request.http_version) == (b"GET", b"/a%2Fb?x=1", b"1.1")
    assert upstream.header(b"host") == [b"example.org"]
    assert upstream.header(b"accept") == [b"*/*"]
    assert upstream.header(b"x-forwarded-for") == [b"127.0.0.1"]
    upstream.respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello"
    )
    response = one_response(client)
    assert response.status == 200 and response.body == b"hello"
    assert response.header_values(b"set-cookie") == [b"a=1", b"b=2"]


def test_relayed_body_is_counted_for_the_response_log() -> None:
    """A body relayed piece by piece from the upstream (chunked on both sides) is
    counted, framing excluded, for the access log.
    """
    setup = make_proxy()
    logged: list[HTTP11Exchange | Refusal] = []
    client = setup.client(response_log=logged.append)
    client.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    upstream.respond(b"3e8\r\n" + b"a" * 1000 + b"\r\n")
    upstream.respond(b"18\r\n" + b"b" * 24 + b"\r\n0\r\n\r\n")
    assert len(one_response(client).body) == 1024
    assert [(entry.status, entry.body_sent) for entry in logged] == [(200, 1024)]


def test_keep_alive_connection_is_reused() -> None:
    """Sequential requests, from one client or several, share one upstream connection."""
    setup = make_proxy()
    first, second = setup.client(), setup.client()
    for client in (first, second, first):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.endpoint().last.respond(OK)
        assert one_response(client).body == b"ok"
    assert len(setup.endpoint().connections) == 1


def test_repeated_response_fields_are_relayed_each_time() -> None:
    """Responses with the fields of the one before (sent from one prepared list) and
    with other fields or another status each reach the client as the upstream sent them.
    """
    setup = make_proxy()
    client = setup.client()
    answers = [
        (OK, 200, b"ok", b"2"),
        (OK, 200, b"ok", b"2"),
        (OK, 200, b"ok", b"2"),
        (OK.replace(b"200 OK", b"404 Not Found"), 404, b"ok", b"2"),
        (OK.replace(b"2\r\n", b"3\r\n") + b"!", 200, b"ok!", b"3"),
        (OK, 200, b"ok", b"2"),
    ]
    for answer, status, body, length in answers:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.endpoint().last.respond(answer)
        response = one_response(client)
        assert (response.status, response.body) == (status, body)
        assert response.header_values(b"content-length") == [length]
        assert response.header_values(b"content-type") == [b"text/plain"]
    assert len(setup.endpoint().connections) == 1


@pytest.mark.parametrize(
    ("options", "field", "answer"),
    [
        (
            {"proxy_redirect": (("http://backend.internal/", "http://$host/"),)},
            b"location",
            b"http://backend.internal/next",
        ),
        (
            {"proxy_cookie_domain": (("backend.internal", "$host"),)},
            b"set-cookie",
            b"sid=1; Domain=backend.internal",
        ),
    ],
)
def test_repeated_answers_are_rewritten_for_each_request(
    options: dict[str, Any], field: bytes, answer: bytes
) -> None:
    """The same upstream answer twice, with a field rewritten from the request (its
    Host), is rewritten for each request, not relayed as the last one was.
    """
    setup = make_proxy(**options)
    client = setup.client()
    hosts = (b"a.example", b"b.example", b"b.example", b"a.example")
    sent = []
    for host in hosts:
        client.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        setup.endpoint().last.respond(
            b"HTTP/1.1 302 Found\r\n" + field + b": " + answer + b"\r\nContent-Length: 0\r\n\r\n"
        )
        (value,) = one_response(client).header_values(field)
        sent.append(value)
    assert sent == [answer.replace(b"backend.internal", host) for host in hosts]


def relayed_fields(response: Any) -> list[tuple[bytes, bytes]]:
    """A response's fields without the server's own Date and Server."""
    return [(name, value) for name, value in response.headers if name not in (b"date", b"server")]


def routed_mount(setup: Setup, handler: Any = None, **mount: Any) -> None:
    """Route the setup's clients through one mount at / with ``mount``'s settings."""
    target = handler if handler is not None else setup.handler
    table = RoutingTable(HostTable([], MountTable([Mount(b"", target, **mount)])), paced=True)
    setup.router = Router(table)


def test_the_same_answer_with_another_status_is_relayed_for_that_status() -> None:
    """An upstream's fields repeated with another status are relayed as that status
    has them, not as the fields made (and serialised) for the last status were.

    Apache advertises ``Upgrade: h2,h2c`` on its 200s: hop-by-hop there, it is what a
    426 must name (RFC 9110 15.5.22). A 204 never has a Content-Length (RFC 9110 8.6)
    that the same fields had with a 200.
    """
    setup = make_proxy()
    client = setup.client()
    advertised = b"Upgrade: h2,h2c\r\nConnection: Upgrade\r\nContent-Length: 0\r\nX-Id: 1\r\n\r\n"
    answers = [
        (200, b"OK"),
        (200, b"OK"),
        (426, b"Upgrade Required"),
        (426, b"Upgrade Required"),
        (200, b"OK"),
        (204, b"No Content"),
        (204, b"No Content"),
        (200, b"OK"),
    ]
    for status, reason in answers:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.endpoint().last.respond(b"HTTP/1.1 %d %s\r\n" % (status, reason) + advertised)
        response = one_response(client)
        assert response.status == status
        expected = {
            200: [(b"content-length", b"0"), (b"x-id", b"1")],
            204: [(b"x-id", b"1")],
            426: [
                (b"upgrade", b"h2,h2c"),
                (b"content-length", b"0"),
                (b"x-id", b"1"),
                (b"connection", b"upgrade"),
            ],
        }[status]
        assert relayed_fields(response) == expected, status
    assert len(setup.endpoint().connections) == 1


def test_upstreams_answering_in_turn_each_have_their_own_fields_relayed() -> None:
    """Two upstreams of a mount answer with their own fields, each once and several
    times in a row: every response has the fields of the upstream that sent it.
    """
    setup = make_proxy(TWO)
    client = setup.client()
    answers = {
        0: b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n"
        b"X-From: a\r\n\r\na",
        1: b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1\r\n"
        b"Cache-Control: no-store\r\nX-From: b\r\n\r\nb",
    }
    expected = {
        0: [(b"content-type", b"text/plain"), (b"content-length", b"1"), (b"x-from", b"a")],
        1: [
            (b"content-type", b"text/html"),
            (b"content-length", b"1"),
            (b"cache-control", b"no-store"),
            (b"x-from", b"b"),
        ],
    }
    for turn in (0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # Whichever upstream took the request answers as the turn says.
        (upstream,) = [
            connection
            for endpoint in setup.endpoints.values()
            for connection in endpoint.connections
            if connection.protocol.state.value == "busy"
        ]
        upstream.respond(answers[turn])
        response = one_response(client)
        assert (relayed_fields(response), response.body) == (
            expected[turn],
            b"ab"[turn : turn + 1],
        )


def test_gzip_on_the_fly_leaves_the_relayed_fields_as_they_were() -> None:
    """The same answer compressed for one client and not for the next, in turn: the
    fields gzip changes (Content-Length, Content-Encoding, Vary) are each response's
    own, whatever the responses before had; the HTTP/1.0 one, never compressed, has
    none of them.
    """
    setup = make_proxy()
    routed_mount(setup, gzip=GzipSettings(min_length=0))
    client = setup.client()
    body = b"hello, proxied world\n" * 20
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    plain = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"%d" % len(body)),
        (b"vary", b"Accept-Encoding"),
    ]
    compressed = [
        (b"content-type", b"text/plain"),
        (b"vary", b"Accept-Encoding"),
        (b"content-encoding", b"gzip"),
        (b"transfer-encoding", b"chunked"),
    ]
    for method, gzip in [
        (b"GET", True),
        (b"GET", False),
        (b"GET", False),
        (b"GET", True),
        (b"GET", True),
        (b"HEAD", False),
        (b"GET", False),
        (b"GET", True),
    ]:
        asked = b"Accept-Encoding: gzip\r\n" if gzip else b""
        client.send(method + b" / HTTP/1.1\r\nHost: x\r\n" + asked + b"\r\n")
        setup.endpoint().last.respond(answer + (b"" if method == b"HEAD" else body))
        response = one_response(client, method)
        if method == b"HEAD":
            assert (relayed_fields(response), response.body) == (plain, b"")
        elif gzip:
            assert relayed_fields(response) == compressed
            assert zlib.decompress(response.body, 16 + zlib.MAX_WBITS) == body
        else:
            assert (relayed_fields(response), response.body) == (plain, body)
    # HTTP/1.0 is never answered compressed (as nginx's gzip_http_version 1.1), nor
    # with Vary: the fields as the upstream sent them.
    client.send(b"GET / HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    setup.endpoint().last.respond(answer + body)
    response = one_response(client)
    assert (relayed_fields(response), response.body) == (
        [*plain[:2], (b"connection", b"close")],
        body,
    )


class _CookieGate:
    """In front of a proxy: each request gets a Set-Cookie of its own, as a gate's."""

    def __init__(self, proxy: ProxyHandler) -> None:
        self.proxy = proxy
        self.count = 0

    def handle(self, exchange: Any) -> None:
        self.count += 1
        exchange.set_response_fields(self, [(b"Set-Cookie", b"session=%d" % self.count)])
        self.proxy.handle(exchange)


def test_mount_and_gate_fields_go_with_their_own_responses_only() -> None:
    """One proxy under two mounts: one adds its headers, the other has a gate adding
    a Set-Cookie of the request's own. The same upstream answer through either, in
    turn, has the fields of the mount it went through, once, and nothing of the other's.
    """
    setup = make_proxy()
    mounts: list[Mount[Handler]] = [
        Mount(b"/a", setup.handler, headers=((b"X-Frame-Options", b"DENY"),)),
        Mount(b"/b", _CookieGate(setup.handler)),
    ]
    setup.router = Router(RoutingTable(HostTable([], MountTable(mounts))))
    client = setup.client()
    answer = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok"
    upstream = [(b"cache-control", b"max-age=60"), (b"content-length", b"2")]
    cookies = 0
    for path in (b"/a", b"/b", b"/b", b"/a", b"/a", b"/b", b"/a"):
        client.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.endpoint().last.respond(answer)
        if path == b"/a":
            added = [(b"x-frame-options", b"DENY")]
        else:
            cookies += 1
            added = [(b"set-cookie", b"session=%d" % cookies)]
        assert relayed_fields(one_response(client)) == upstream + added, path


def test_a_repeated_answer_asking_for_a_rate_is_paced_each_time() -> None:
    """X-Accel-Limit-Rate in the same answer again sets the rate of that response
    too: an answer the mount acts on is not relayed as the last one was.
    """
    setup = make_proxy()
    routed_mount(setup)
    client = setup.client()
    body = bytes(8 * 1024)
    answer = b"HTTP/1.1 200 OK\r\nX-Accel-Limit-Rate: 1024\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    for _ in range(3):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream = setup.endpoint().last
        upstream.respond(answer)
        pieces = [body[start : start + 1024] for start in range(0, len(body), 1024)]
        # The upstream sends a piece whenever the proxy reads from it.
        while pieces and upstream.transport.producerState == "producing":
            upstream.respond(pieces.pop(0))
        assert len(client.transport.value()) < len(body)  # at 1 KB a second
        for _ in range(20):
            setup.clock.advance(1)
            while pieces and upstream.transport.producerState == "producing":
                upstream.respond(pieces.pop(0))
        response = one_response(client)
        assert response.body == body
        assert response.header_values(b"x-accel-limit-rate") == [b"1024"]


def test_concurrent_requests_use_separate_connections_then_pool() -> None:
    """Two requests in flight take two connections; both return to the pool."""
    setup = make_proxy()
    a, b = setup.client(), setup.client()
    a.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    b.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    endpoint = setup.endpoint()
    assert len(endpoint.connections) == 2
    for upstream in endpoint.connections:
        upstream.respond(OK)
    pool = setup.handler.group.peers[0].target
    assert len(pool.idle) == 2
    a.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(endpoint.connections) == 2


def test_keepalive_zero_closes_each_connection() -> None:
    """A keepalive of 0 closes the upstream connection after every response."""
    setup = make_proxy(keepalive=0)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(OK)
    assert setup.endpoint().last.transport.disconnecting


def test_preserve_host_off_sends_the_upstreams_host() -> None:
    """preserve_host = false sends the upstream's own host and port."""
    setup = make_proxy(("http://backend.internal:9000",), preserve_host=False)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    upstream = setup.endpoint().last
    assert upstream.header(b"host") == [b"backend.internal:9000"]
    assert upstream.header(b"x-forwarded-host") == [b"example.org"]


def test_trusted_proxy_fields_are_extended() -> None:
    """A client in trusted_proxies has its X-Forwarded-For extended; an untrusted
    client's is replaced.
    """
    for trusted, expected in ((("127.0.0.0/8",), b"203.0.113.9, 127.0.0.1"), ((), b"127.0.0.1")):
        setup = make_proxy(trusted=trusted)
        client = setup.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
        assert setup.endpoint().last.header(b"x-forwarded-for") == [expected]


def test_path_mapping_through_the_router() -> None:
    """Mounted at /api with an upstream path /v2, /api/users?q goes up as /v2/users?q."""
    setup = make_proxy(("http://10.0.0.1:9000/v2",), mount="/api", routed=True)
    client = setup.client()
    client.send(b"GET /api/users?q=%41 HTTP/1.1\r\nHost: x\r\n\r\n")
    request, _ = setup.endpoint().last.request()
    assert request.target == b"/v2/users?q=%41"


def test_unrouted_proxy_refuses_a_path_above_the_root() -> None:
    """Used without the Router, the handler refuses /../x with 404 as the Router does
    and normalises other dot-segments, so nothing climbs out of the upstream's /v2.
    """
    setup = make_proxy(("http://10.0.0.1:9000/v2",))
    client = setup.client()
    client.send(b"GET /%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 404
    assert not setup.endpoint().connections
    client.send(b"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n")
    request, _ = setup.endpoint().last.request()
    assert request.target == b"/v2/b"


def test_head_request() -> None:
    """A HEAD response passes its Content-Length and no body; the connection is reused."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    response = one_response(client, b"HEAD")
    assert response.header(b"content-length") == b"1234" and response.body == b""
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(setup.endpoint().connections) == 1


# -- request bodies -------------------------------------------------------------------------


def test_small_body_forwarded_with_length() -> None:
    """A small POST body goes up with its Content-Length."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
    request, body = setup.endpoint().last.request()
    assert body == b"hello world"
    assert (b"content-length", b"11") in request.headers


def test_chunked_body_streams_upstream_as_it_arrives() -> None:
    """A chunked upload is forwarded piece by piece (re-chunked) before it ends."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    big = b"a" * 70_000  # over DISPATCH_BUFFER: the handler runs before the end
    client.send(b"%x\r\n%b\r\n" % (len(big), big))
    upstream = setup.endpoint().last
    request, body = upstream.request()
    assert (b"transfer-encoding", b"chunked") in request.headers
    assert body == big
    client.send(b"5\r\nhello\r\n0\r\n\r\n")
    _, body = upstream.request()
    assert body == big + b"hello"
    assert upstream.protocol._request_done


def test_expect_continue_is_answered_when_the_upstream_is_connected() -> None:
    """Expect: 100-continue gets 100 Continue once the head went upstream, not before;
    Expect is not forwarded.
    """
    setup = make_proxy()
    setup.endpoint().hold = True
    client = setup.client()
    client.send(b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert client.take() == b""
    setup.endpoint().complete_pending()
    assert client.take().startswith(b"HTTP/1.1 100 Continue")
    upstream = setup.endpoint().last
    assert upstream.header(b"expect") == []
    client.send(b"hello")
    assert upstream.request()[1] == b"hello"


def test_interim_responses_are_relayed_as_they_come() -> None:
    """A 103 reaches the client before the upstream's final response (RFC 9110 15.2:
    a proxy must relay 1xx), without hop-by-hop fields; the upstream's own 100 is
    not relayed (the proxy answers Expect itself).
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nLink: </b.js>\r\n\r\n"
    )
    [early] = parse_responses(client.take(), complete=False)
    assert (early.status, early.reason) == (103, b"Early Hints")
    assert early.headers == [(b"link", b"</a.css>; rel=preload"), (b"link", b"</b.js>")]
    upstream.respond(OK)
    response = one_response(client)
    assert (response.status, response.body) == (200, b"ok")
    client.send(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(setup.endpoint().connections) == 1  # the connection was kept


def test_interim_responses_are_not_relayed_to_an_http10_client() -> None:
    """An HTTP/1.0 client would take a 1xx for the final response."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK)
    response = one_response(client)
    assert (response.status, response.body) == (200, b"ok")


def test_upstream_slow_pauses_the_client_and_fast_resumes_it() -> None:
    """When the upstream stops reading, the client is no longer read; when it
    reads again, the client is read again.
    """
    setup = make_proxy()
    client = setup.client(HttpSettings(max_body=0))
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    client.send(b"x" * 100_000)
    upstream = setup.endpoint().last
    upstream.protocol.pauseProducing()  # the upstream's socket buffer is full
    assert client.transport.producerState == "paused"
    upstream.protocol.resumeProducing()
    assert client.transport.producerState == "producing"


class PausingTransport(StringTransport):
    """An upstream socket whose buffer fills with the first write after the head."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes += 1
        if self.writes == 2 and self.producer is not None:
            self.producer.pauseProducing()


def test_upstream_pausing_while_the_held_body_is_written_keeps_the_client_paused() -> None:
    """The upstream stops reading while the body the exchange held is written: the
    client stays unread until the upstream reads again.
    """
    setup = make_proxy()
    setup.endpoint().transport_factory = PausingTransport
    client = setup.client(HttpSettings(max_body=0))
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    client.send(b"x" * 100_000)
    upstream = setup.endpoint().last
    assert upstream.request()[1] == b"x" * 100_000
    assert client.transport.producerState == "paused"
    upstream.protocol.resumeProducing()
    assert client.transport.producerState == "producing"


def test_pooled_connection_that_cannot_send_pauses_the_next_body() -> None:
    """A pooled connection whose upstream had stopped reading pauses the next request's
    body at once, until the upstream reads again.
    """
    setup = make_proxy()
    client = setup.client(HttpSettings(max_body=0))
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(OK)
    one_response(client)
    upstream.protocol.pauseProducing()  # while idle: nobody to tell yet
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    client.send(b"x" * 100_000)
    assert len(setup.endpoint().connections) == 1
    assert client.transport.producerState == "paused"
    upstream.protocol.resumeProducing()
    assert client.transport.producerState == "producing"


def test_slow_client_pauses_the_upstream() -> None:
    """Without response buffering, when the client stops reading, the upstream
    connection stops being read.
    """
    setup = make_proxy(response_buffering=False)
    client = setup.client()
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
    client.protocol.pauseProducing()  # the client's socket buffer is full
    assert upstream.transport.producerState == "paused"
    client.protocol.resumeProducing()
    assert upstream.transport.producerState == "producing"
    upstream.respond(b"a" * 99_000)
    assert len(one_response(client).body) == 100_000


def numbered(start: int, count: int, size: int = 10_000) -> bytes:
    """``count`` pieces of ``size`` bytes, each byte its piece's number: order shows."""
    return b"".join(bytes([number % 251]) * size for number in range(start, start + count))


def big_response(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


def start_big_response(setup: Setup, body: bytes) -> tuple[Connection, UpstreamConnection]:
    """A client's GET /big, answered by the upstream with ``body``'s head and first
    10,000 bytes (relayed at once: the client reads so far).
    """
    client = setup.client()
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(big_response(len(body)) + body[:10_000])
    return client, upstream


def stop_reading(setup: Setup, client: Connection) -> None:
    """The client's socket buffer is full, for longer than SPOOL_GRACE."""
    client.protocol.pauseProducing()
    setup.clock.advance(SPOOL_GRACE)


def test_spooling_starts_once_the_client_has_not_read_for_a_moment() -> None:
    """A fast client's connection pauses for a moment again and again: the
    upstream is paused too, and read on into the spool only if the pause lasts
    SPOOL_GRACE; a shorter one leaves nothing spooled.
    """
    setup = make_proxy()
    body = numbered(0, 30)
    client, upstream = start_big_response(setup, body)
    client.protocol.pauseProducing()
    assert upstream.transport.producerState == "paused"
    setup.clock.advance(SPOOL_GRACE / 2)
    client.protocol.resumeProducing()  # a short pause: read on directly
    assert upstream.transport.producerState == "producing"
    client.protocol.pauseProducing()  # another one: its own moment, from now
    setup.clock.advance(SPOOL_GRACE - 0.001)
    assert upstream.transport.producerState == "paused"
    setup.clock.advance(0.001)
    assert upstream.transport.producerState == "producing"  # spooling now
    upstream.respond(body[10_000:])
    client.protocol.resumeProducing()
    assert one_response(client).body == body


def test_with_buffering_a_slow_client_does_not_hold_the_upstream() -> None:
    """Response buffering (the default): the client stops reading, the upstream is
    still read; once it has sent the whole response its connection is back in the
    pool, and the next request uses it while the slow client still reads. The
    client then gets every byte in order.
    """
    setup = make_proxy()
    body = numbered(0, 30)
    client, upstream = start_big_response(setup, body)
    stop_reading(setup, client)
    assert upstream.transport.producerState == "producing"
    upstream.respond(body[10_000:])
    assert upstream.protocol.state.value == "idle"  # back in its pool
    other = setup.client()
    other.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(setup.endpoint().connections) == 1  # the same connection
    upstream.respond(OK)
    assert one_response(other).body == b"ok"
    client.protocol.resumeProducing()
    response = one_response(client)
    assert response.body == body
    assert not client.is_closed()


def test_past_max_response_buffer_the_upstream_waits_for_the_client() -> None:
    setup = make_proxy(max_response_buffer=100_000)
    body = numbered(0, 40)
    client, upstream = start_big_response(setup, body)
    stop_reading(setup, client)
    for start in range(10_000, 150_000, 10_000):
        upstream.respond(body[start : start + 10_000])
    assert upstream.transport.producerState == "paused"  # 100 KB held, and one read
    client.protocol.resumeProducing()  # the client reads it all: the upstream again
    assert upstream.transport.producerState == "producing"
    upstream.respond(body[150_000:])
    assert one_response(client).body == body


class OneWriteClient(StringTransport):
    """A client that takes one write each time the test lets it read (``read``)."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming:
            self.producer.pauseProducing()

    def read(self) -> None:
        if self.producer is not None and self.streaming:
            self.producer.resumeProducing()


def test_past_the_limit_the_upstream_is_read_again_as_soon_as_there_is_room() -> None:
    """Not once the client has read everything held (up to 1 GiB): an upstream that
    gives up on a write stalled that long would cut the download.
    """
    setup = make_proxy(max_response_buffer=100_000)
    slow = OneWriteClient()
    ended: list[Any] = []
    client = setup.client(transport=slow, response_log=ended.append)
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = numbered(0, 40)
    upstream.respond(big_response(len(body)) + body[:10_000])  # written: then paused
    for start in range(10_000, 120_000, 10_000):
        upstream.respond(body[start : start + 10_000])
    assert upstream.transport.producerState == "paused"
    slow.read()  # one piece of 10 KB taken: room for the read that waits
    assert upstream.transport.producerState == "producing"
    upstream.respond(body[120_000:])
    for _ in range(100):
        if ended:
            break
        slow.read()
    assert one_response(client).body == body
    assert ended


def test_upstream_response_time_ends_with_the_upstream_not_the_slow_client() -> None:
    """Nginx's $upstream_response_time: until the upstream's response was whole,
    however long the client then takes to read it from the spool.
    """
    setup = make_proxy(access_log_format=UPSTREAM_LOG + " $upstream_response_time")
    logged: list[Any] = []
    client = setup.client(response_log=logged.append)
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = numbered(0, 30)
    setup.clock.advance(0.25)
    upstream.respond(big_response(len(body)) + body[:10_000])
    client.protocol.pauseProducing()  # (spooling starts within the 0.25 s)
    setup.clock.advance(0.25)
    upstream.respond(body[10_000:])  # whole at 0.5 s
    setup.clock.advance(60)
    client.protocol.resumeProducing()
    assert one_response(client).body == body
    assert upstream_notes(logged[0])[2] == "0.500"


@pytest.mark.parametrize("chunked", [False, True])
def test_an_upstream_failing_after_bytes_were_held_lets_the_client_have_them(
    chunked: bool,
) -> None:
    """What the upstream did send reaches the client, then its connection closes
    (the response is incomplete: a short body, or no last chunk).
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = numbered(0, 20)

    def frame(piece: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece

    head = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        if chunked
        else big_response(len(body) + 100_000)
    )
    upstream.respond(head + frame(body[:10_000]))
    stop_reading(setup, client)
    upstream.respond(frame(body[10_000:]))
    upstream.close(ConnectionLost("reset"))
    assert not client.is_closed()  # the client has not read what was held yet
    client.protocol.resumeProducing()
    assert client.is_closed()
    received = h11.Connection(h11.CLIENT)
    received.send(h11.Request(method="GET", target="/big", headers=[("Host", "x")]))
    received.receive_data(client.transport.value())
    got = b""
    while (event := received.next_event()) is not h11.NEED_DATA:
        if isinstance(event, h11.Data):
            got += event.data
    assert got == body


def test_a_spool_that_cannot_be_written_passes_the_rest_on_as_the_client_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Disk full: one warning naming the request and the upstream; from then on
    each read waits in memory, the upstream paused, until the client has taken it.
    """

    def full_disk() -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full_disk)
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = numbered(0, 12)
    with capture_log_events() as events:
        upstream.respond(big_response(len(body)) + body[:10_000])
        stop_reading(setup, client)
        for start in range(10_000, 80_000, 10_000):  # 64 KiB in memory, then the file
            upstream.respond(body[start : start + 10_000])
        assert upstream.transport.producerState == "paused"
        client.protocol.resumeProducing()
        assert upstream.transport.producerState == "producing"
        stop_reading(setup, client)
        upstream.respond(body[80_000:90_000])
        assert upstream.transport.producerState == "paused"  # one read at a time
        client.protocol.resumeProducing()
        upstream.respond(body[90_000:])
    assert one_response(client).body == body
    [warning] = [line for line in proxy_log(events) if "temporary file" in line]
    assert "GET /big" in warning and "10.0.0.1:9000" in warning


def test_a_response_ending_past_max_response_buffer_frees_its_connection_unpaused() -> None:
    """The last read does not fit: it waits in memory, and the connection goes back
    to its pool reading (an idle connection must see its upstream close).
    """
    setup = make_proxy(max_response_buffer=100_000)
    body = numbered(0, 30)
    client, upstream = start_big_response(setup, body)
    stop_reading(setup, client)
    upstream.respond(body[10_000:])
    assert upstream.protocol.state.value == "idle"
    assert upstream.transport.producerState == "producing"
    client.protocol.resumeProducing()
    assert one_response(client).body == body


@pytest.mark.parametrize(
    ("mount", "field", "buffered", "ignored"),
    [
        pytest.param(None, b"no", False, (), id="the-upstream-says-no"),
        pytest.param(False, b"yes", True, (), id="the-upstream-says-yes-where-off"),
        pytest.param(False, None, False, (), id="off-on-the-mount"),
        pytest.param(None, b"no", True, ("x-accel-buffering",), id="ignored"),
        pytest.param(False, b"yes", False, ("X-Accel-Buffering",), id="ignored-where-off"),
    ],
)
def test_x_accel_buffering_or_the_mount_decides(
    mount: bool | None, field: bytes | None, buffered: bool, ignored: tuple[str, ...]
) -> None:
    """The mount alone with proxy_ignore_headers (nginx's)."""
    setup = make_proxy(response_buffering=mount, proxy_ignore_headers=ignored)
    client = setup.client()
    client.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    extra = b"X-Accel-Buffering: " + field + b"\r\n" if field is not None else b""
    upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n" + extra + b"\r\n0123456789")
    stop_reading(setup, client)
    expected = "producing" if buffered else "paused"
    assert upstream.transport.producerState == expected
    client.protocol.resumeProducing()
    upstream.respond(b"abcdefghij")
    assert one_response(client).body == b"0123456789abcdefghij"


def test_a_client_gone_with_bytes_held_lets_them_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spool's file is closed with the client's connection; the upstream's,
    still sending, is aborted.
    """
    made: list[Any] = []
    real = tempfile.TemporaryFile

    def recording() -> Any:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = numbered(0, 30)
    upstream.respond(big_response(len(body) + 1) + body[:10_000])
    stop_reading(setup, client)
    upstream.respond(body[10_000:])
    [spool_file] = made
    assert not spool_file.closed
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert spool_file.closed
    assert upstream.closed()


# -- errors ---------------------------------------------------------------------------------


def test_refused_upstream_is_502_naming_it_in_the_log() -> None:
    """Connection refused: 502 with a short body and a warning naming the upstream."""
    setup = make_proxy(("http://10.0.0.1:9000",), retry=False)
    setup.endpoint().refuse = True
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    response = one_response(client)
    assert response.status == 502
    assert response.body.startswith(b"Bad Gateway")
    text = [e.get("log_format", "") for e in events]
    assert any("{status} for" in line for line in text)
    assert any(e.get("upstream") == "http://10.0.0.1:9000" for e in events)


def test_reset_before_response_is_502() -> None:
    """The upstream closing with no response byte (POST: not retried) is a 502."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
    setup.endpoint().last.close(ConnectionLost())
    assert one_response(client).status == 502


def test_malformed_response_is_502() -> None:
    """An upstream that does not speak HTTP gives a 502."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(b"garbage\r\n\r\n")
    assert one_response(client).status == 502


_RESET_CONTENT_HEAD = b"HTTP/1.1 205 Reset Content\r\nContent-Length: 8\r\n\r\n"


@pytest.mark.parametrize(
    "reads",
    [
        [_RESET_CONTENT_HEAD + b"EVILEVIL"],
        [_RESET_CONTENT_HEAD + b"EVIL", b"EVIL"],
        [_RESET_CONTENT_HEAD, b"EVILEVIL"],
    ],
    ids=["one-read", "body-split", "head-alone"],
)
def test_a_205_with_content_is_relayed_without_it_and_the_upstream_is_named(
    reads: list[bytes],
) -> None:
    """RFC 9110 15.3.6: a 205 carries no content. An upstream that sends some is at
    fault, not the application: the client gets the 205 with ``Content-Length: 0``,
    the content is read and dropped (its framing is sound, so the connection is
    reused), and one warning names the upstream.
    """
    setup = make_proxy()
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        upstream = setup.endpoint().last
        for read in reads:
            upstream.respond(read)
    response = one_response(client)
    assert (response.status, response.body) == (205, b"")
    assert response.header_values(b"content-length") == [b"0"]
    problems = [e for e in events if e["log_level"] >= LogLevel.warn]
    assert [e["log_level"] for e in problems] == [LogLevel.warn]
    assert "http://10.0.0.1:9000" in formatEvent(problems[0])
    assert "205" in formatEvent(problems[0])
    client.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream.respond(OK)
    assert one_response(client).body == b"ok"
    assert setup.endpoint().connections == [upstream]


def bad_gateway_body(
    setup: Setup, request: bytes, upstream_does: Callable[[UpstreamConnection], None] | None
) -> bytes:
    """The body of the 502 the client gets when the upstream does ``upstream_does``."""
    client = setup.client()
    client.send(request)
    if upstream_does is not None:
        upstream_does(setup.endpoint().last)
    response = one_response(client)
    assert response.status == 502
    body: bytes = response.body
    return body


def test_502_body_says_what_the_upstream_did_in_general_terms() -> None:
    """The 502 body tells an upstream that answered badly from one that could not be
    reached, without the details (they are in the log).
    """
    a_get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    a_post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"

    def garbage(upstream: UpstreamConnection) -> None:
        upstream.respond(b"garbage\r\n\r\n")

    def truncated_head(upstream: UpstreamConnection) -> None:
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Le")
        upstream.close(ConnectionLost())

    setup = make_proxy()
    invalid = b"Bad Gateway: the upstream server sent an invalid response\n"
    closed = b"Bad Gateway: the upstream server closed the connection\n"
    assert bad_gateway_body(setup, a_get, garbage) == invalid
    assert bad_gateway_body(setup, a_get, truncated_head) == closed
    assert bad_gateway_body(setup, a_post, UpstreamConnection.close) == closed
    setup.handler.group.peers[0].healthy = False
    assert bad_gateway_body(setup, a_get, None) == b"Bad Gateway: no upstream server is available\n"
    setup.handler.group.peers[0].healthy = True
    setup.endpoint().refuse = True
    assert bad_gateway_body(setup, a_get, None) == (
        b"Bad Gateway: the upstream server could not be reached\n"
    )


def test_no_head_within_response_timeout_is_504() -> None:
    """No response head within response_timeout: 504, upstream connection dropped."""
    setup = make_proxy()
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.clock.advance(31)
    response = one_response(client)
    assert response.status == 504
    assert response.body.startswith(b"Gateway Timeout")
    assert setup.endpoint().last.transport.disconnecting
    assert any(e.get("upstream") == "http://10.0.0.1:9000" for e in events)


def test_connect_timeout_is_502() -> None:
    """Connecting that takes longer than connect_timeout is cancelled: 502."""
    setup = make_proxy(retry=False)
    endpoint = setup.endpoint()
    endpoint.hold = True
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(5.1)
    assert endpoint.cancelled == 1
    assert one_response(client).status == 502


def test_failure_after_the_head_closes_the_client_connection() -> None:
    """Once the head was forwarded, an upstream failure ends the client connection
    without completing the response (in order: the length shows the cut).
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    upstream.close(ConnectionLost())
    assert client.transport.disconnecting and not client.transport.disconnected
    written = client.take()
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.endswith(b"\r\n\r\n" + b"a" * 10)  # truncated: 10 of 100 bytes


def test_stalled_response_body_aborts_the_client() -> None:
    """A response body that stops for idle_timeout aborts both connections."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
    setup.clock.advance(21)
    assert upstream.transport.disconnecting
    assert client.transport.disconnecting


def test_client_gone_cancels_the_upstream_request() -> None:
    """The client closing mid-request drops the upstream connection (not pooled)."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert upstream.transport.disconnecting
    assert setup.handler.group.peers[0].target.idle == []
    assert setup.handler.group.peers[0].active == 0


def test_client_gone_while_connecting_cancels_the_attempt() -> None:
    """The client closing while the upstream connects cancels the attempt."""
    setup = make_proxy()
    endpoint = setup.endpoint()
    endpoint.hold = True
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert endpoint.cancelled == 1


# -- retries and balancing ---------------------------------------------------------------------

TWO = ("http://10.0.0.1:9000", "http://10.0.0.2:9000")


def test_connect_failure_goes_to_the_next_upstream_even_for_post() -> None:
    """Refused connections never sent the request, so any method moves on."""
    setup = make_proxy(TWO)
    setup.endpoint(0).refuse = True
    client = setup.client()
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    upstream = setup.endpoint(1).last
    assert upstream.request()[1] == b"hi"
    upstream.respond(OK)
    assert one_response(client).status == 200


def test_idempotent_request_retried_after_a_reset() -> None:
    """A GET whose connection broke before any response byte is sent to the other
    upstream; the broken one is taken out (max_fails = 1).
    """
    setup = make_proxy(TWO)
    client = setup.client()
    client.send(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
    first = setup.endpoint(0).last
    first.close(ConnectionLost())
    second = setup.endpoint(1).last
    assert second.request()[0].target == b"/r"
    second.respond(OK)
    assert one_response(client).status == 200
    assert not setup.handler.balancer.usable(setup.handler.group.peers[0], setup.clock.seconds())


def test_left_out_is_logged_when_an_upstream_goes_out_not_at_each_failure() -> None:
    """Requests still reach upstreams that are out (every one refuses here, so each
    request goes to the one back soonest, then the other); failing there keeps them
    out without a new warning: one warning per upstream going out.
    """
    setup = make_proxy(TWO)
    for endpoint in setup.endpoints.values():
        endpoint.refuse = True
    client = setup.client()
    with capture_log_events() as events:
        for _ in range(3):
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert one_response(client).status == 502
            setup.clock.advance(1)
    assert [line for line in proxy_log(events) if "left out for" in line] == [
        f"Upstream {url} is left out for 10s after failing" for url in TWO
    ]
    assert [endpoint.attempts for endpoint in setup.endpoints.values()] == [3, 3]


def test_retrying_is_logged_only_when_another_attempt_follows() -> None:
    """With every upstream refusing, the first failure says which upstream the request
    is retried on; the last leads to the 502 line, which names it and says why the
    other is not tried again. A single upstream that refuses logs the 502 alone.
    """
    setup = make_proxy(TWO)
    for endpoint in setup.endpoints.values():
        endpoint.refuse = True
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    refused = "Connection was refused by other side: refused"
    assert [line for line in proxy_log(events) if "left out for" not in line] == [
        f"Upstream http://10.0.0.1:9000 failed for GET /g ({refused}.);"
        " retrying on http://10.0.0.2:9000",
        f"502 for GET /g: upstream http://10.0.0.2:9000: {refused}; no other upstream is"
        " available: http://10.0.0.1:9000 (left out after failures)",
    ]

    single = make_proxy()
    single.endpoint().refuse = True
    client = single.client()
    with capture_log_events() as events:
        client.send(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    assert proxy_log(events) == [f"502 for GET /g: upstream http://10.0.0.1:9000: {refused}."]


def test_an_upstream_back_after_failures_is_logged_once() -> None:
    """An upstream left out after failures that answers a request again (the probe)
    is logged as back, once; later answers log nothing.
    """
    setup = make_proxy(TWO)
    first = setup.endpoint(0)
    first.refuse = True
    client = setup.client()
    with capture_log_events() as events:
        for _ in range(6):
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer_busy(setup)
            assert one_response(client).status == 200
            setup.clock.advance(11)  # past fail_timeout
            first.refuse = False
    (connection,) = first.connections
    assert connection.transport.value().count(b"GET / ") >= 2  # the probe, then more
    assert [line for line in proxy_log(events) if "left out" in line] == [
        "Upstream http://10.0.0.1:9000 is left out for 10s after failing",
        "Upstream http://10.0.0.1:9000 answered; it is no longer left out",
    ]


def test_an_upstream_back_after_failures_that_switches_protocols_is_back() -> None:
    """A 101 is an answer too: the upstream left out that switches a WebSocket
    request's protocol has its failures forgotten, as after any other answer.
    """
    setup = make_proxy(TWO)
    first = setup.endpoint(0)
    first.refuse = True
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer_busy(setup)
    assert one_response(client).status == 200
    peer = setup.handler.group.peers[0]
    assert peer.fails == 1
    setup.clock.advance(11)  # past fail_timeout
    first.refuse = False
    setup.handler.group.peers[1].healthy = False  # (so the request goes to the first)
    with capture_log_events() as events:
        setup.client().send(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        first.last.respond(SWITCHED)
    assert peer.fails == 0
    assert "Upstream http://10.0.0.1:9000 answered; it is no longer left out" in proxy_log(events)


def test_put_with_small_body_is_replayed_on_retry() -> None:
    """A PUT's body (held, being small) is sent again to the next upstream."""
    setup = make_proxy(TWO)
    client = setup.client()
    client.send(b"PUT /r HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata")
    setup.endpoint(0).last.close(ConnectionLost())
    assert setup.endpoint(1).last.request()[1] == b"data"


def test_post_is_not_retried_after_it_was_sent() -> None:
    """A POST that may have reached the upstream is not sent again: 502."""
    setup = make_proxy(TWO)
    client = setup.client()
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    setup.endpoint(0).last.close(ConnectionLost())
    assert setup.endpoint(1).connections == []
    assert one_response(client).status == 502


def test_retry_non_idempotent_sends_a_post_on_as_a_get() -> None:
    """As nginx's proxy_next_upstream non_idempotent: a POST whose connection broke
    before any response byte goes to the other upstream, with its body; one answered
    503 with retry_statuses too; one that broke after a response byte is not.
    """
    setup = make_proxy(TWO, retry_non_idempotent=True, retry_statuses=(503,))
    client = setup.client()
    client.send(b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    setup.endpoint(0).last.close(ConnectionLost())
    second = setup.endpoint(1).last
    assert second.request()[1] == b"hi"
    second.respond(OK)
    assert one_response(client, b"POST").status == 200

    setup = make_proxy(TWO, retry_non_idempotent=True, retry_statuses=(503,))
    client = setup.client()
    client.send(b"PATCH /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    setup.endpoint(1).last.respond(OK)
    assert one_response(client, b"PATCH").status == 200

    setup = make_proxy(TWO, retry_non_idempotent=True)
    client = setup.client()
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    setup.endpoint(0).last.respond(b"HTTP/1.1 2")
    setup.endpoint(0).last.close(ConnectionLost())
    assert setup.endpoint(1).connections == []
    assert one_response(client, b"POST").status == 502


def test_retry_non_idempotent_sends_a_post_again_after_the_keep_alive_race() -> None:
    """With one upstream too: the stale connection's POST goes on a fresh one."""
    setup = make_proxy(retry_non_idempotent=True)
    client = setup.client()
    endpoint = send_on_a_connection_just_closed(
        setup, client, b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert len(endpoint.connections) == 2
    assert endpoint.last.request()[1] == b"hi"
    endpoint.last.respond(OK)
    assert one_response(client, b"POST").status == 200


def test_nothing_is_retried_after_a_response_byte() -> None:
    """A response that broke after its first byte is never retried."""
    setup = make_proxy(TWO)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(b"HTTP/1.1 2")
    setup.endpoint(0).last.close(ConnectionLost())
    assert setup.endpoint(1).connections == []
    assert one_response(client).status == 502


@pytest.mark.parametrize(("method", "non_idempotent"), [(b"PUT", False), (b"POST", True)])
def test_large_streamed_body_is_not_retried(method: bytes, non_idempotent: bool) -> None:
    """A body larger than REPLAY_LIMIT is streamed, not kept: no retry, whatever the
    method (retry_non_idempotent included).
    """
    setup = make_proxy(TWO, retry_non_idempotent=non_idempotent)
    client = setup.client(HttpSettings(max_body=0))
    size = REPLAY_LIMIT * 3
    client.send(method + b" / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    client.send(b"z" * size)
    setup.endpoint(0).last.close(ConnectionLost())
    assert setup.endpoint(1).connections == []
    assert one_response(client, method).status == 502


def test_retry_off() -> None:
    """With retry = false a refused upstream is a 502 even when another exists."""
    setup = make_proxy(TWO, retry=False)
    setup.endpoint(0).refuse = True
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    assert setup.endpoint(1).connections == []


def test_stale_keepalive_connection_is_retried_on_a_fresh_one() -> None:
    """A reused connection that breaks before any response byte is retried once on a
    new connection to the same upstream, without counting a failure.
    """
    setup = make_proxy()
    client = setup.client()
    endpoint = send_on_a_connection_just_closed(
        setup, client, b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert len(endpoint.connections) == 2
    endpoint.last.respond(OK)
    assert one_response(client).status == 200
    assert setup.handler.group.peers[0].fails == 0


def send_on_a_connection_just_closed(setup: Setup, client: Connection, request: bytes) -> Any:
    """Leave an idle pooled connection, send ``request`` on it, then have the upstream
    close it before any response byte (the keep-alive race); return the endpoint.
    """
    client.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    endpoint = setup.endpoint()
    endpoint.last.respond(OK)
    one_response(client)
    client.send(request)
    endpoint.connections[0].close(ConnectionDone())
    return endpoint


def test_stale_keepalive_close_under_a_post_is_502_without_a_failure() -> None:
    """A reused connection that closes before any response byte under a POST: the POST
    may have been processed, so it is not sent again (502), but the close is the
    keep-alive race (RFC 9112 9.3.1), so the upstream is not counted as failed.
    """
    setup = make_proxy(TWO)
    client = setup.client()
    for _ in range(2):  # one request to each upstream, leaving an idle connection each
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer_busy(setup)
        one_response(client)
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    (reused,) = setup.endpoint(0).connections
    assert reused.take().endswith(b"\r\n\r\nhi")
    with capture_log_events() as events:
        reused.close(ConnectionDone())
    assert one_response(client).status == 502
    assert [len(endpoint.connections) for endpoint in setup.endpoints.values()] == [1, 1]
    peers = setup.handler.group.peers
    assert peers[0].fails == 0
    assert setup.handler.balancer.usable(peers[0], setup.clock.seconds())
    assert not any("left out" in e.get("log_format", "") for e in events)


def test_all_upstreams_failed_still_tries_the_one_back_soonest() -> None:
    """When every upstream is left out after failures, a request still goes to the
    one whose time out ends first rather than getting a 502.
    """
    setup = make_proxy(TWO)
    balancer = setup.handler.balancer
    first, second = setup.handler.group.peers
    balancer.failed(second, 0.0)
    setup.clock.advance(1)
    balancer.failed(first, 1.0)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert setup.endpoint(0).connections == []
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200
    assert second.fails == 0


def test_a_backup_upstream_serves_while_the_other_is_out() -> None:
    """As nginx's backup server: nothing reaches it while the other answers; once the
    other refuses, the request is retried on it, and it serves until the other is
    back from fail_timeout.
    """
    setup = make_proxy(TWO, backups=(1,))
    primary, backup = setup.endpoint(0), setup.endpoint(1)
    client = setup.client()
    for _ in range(3):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer_busy(setup)
        assert one_response(client).status == 200
    assert (primary.attempts, backup.attempts) == (1, 0)
    primary.connections[0].close(ConnectionDone())  # (the idle one goes)
    primary.refuse = True
    for _ in range(2):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer_busy(setup)
        assert one_response(client).status == 200
    assert (primary.attempts, backup.attempts) == (2, 1)
    primary.refuse = False
    setup.clock.advance(11)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer_busy(setup)
    assert one_response(client).status == 200
    assert (primary.attempts, backup.attempts) == (3, 1)


def test_an_upstream_marked_down_is_sent_nothing_not_even_a_health_check() -> None:
    setup = make_proxy(TWO, down=(0,), health_check="/healthz", health_interval=5.0)
    setup.clock.advance(0)  # (the checks start)
    assert setup.endpoint(0).attempts == 0
    assert setup.endpoint(1).attempts == 1  # its check
    client = setup.client()
    for _ in range(3):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.endpoint(1).connections[-1].respond(OK)
    assert [response.status for response in parse_responses(client.take())] == [200] * 3
    assert setup.endpoint(0).attempts == 0


def test_with_every_upstream_marked_down_a_request_gets_502_saying_so() -> None:
    setup = make_proxy(TWO, down=(0, 1))
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    assert [e.attempts for e in setup.endpoints.values()] == [0, 0]
    with capture_log_events() as built:
        make_proxy(TWO, down=(0, 1))
    assert proxy_log(built) == ["Every upstream of test mount is marked down: its requests get 502"]
    assert any(
        "http://10.0.0.1:9000 (marked down), http://10.0.0.2:9000 (marked down)" in line
        for line in proxy_log(events)
    )


def test_a_backup_upstream_serves_while_the_other_is_marked_down() -> None:
    setup = make_proxy(TWO, down=(0,), backups=(1,))
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200


def test_a_backup_upstream_takes_the_overflow_of_a_full_one() -> None:
    setup = make_proxy(TWO, backups=(1,), max_conns=1)
    first, second = setup.client(), setup.client()
    first.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    second.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert setup.endpoint(1).last.request()[0].target == b"/2"
    assert setup.handler.waiting == {}


def test_a_503_is_retried_on_a_backup() -> None:
    setup = make_proxy(TWO, backups=(1,), retry_statuses=(503,))
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200


def test_timeout_is_not_retried() -> None:
    """A response timeout is a 504 without trying another upstream."""
    setup = make_proxy(TWO)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(31)
    assert setup.endpoint(1).connections == []
    assert one_response(client).status == 504


# -- retrying on the upstream's answer (retry_statuses) ----------------------------------------

UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n"
    b"\r\nrestart!"
)


def test_an_answer_in_retry_statuses_goes_to_the_next_upstream() -> None:
    """As nginx's proxy_next_upstream http_503: the 503 is dropped with its connection,
    the GET goes to the other upstream, whose answer the client gets; the 503 counts
    as a failure (max_fails = 1 leaves the upstream out), and the log says so.
    """
    setup = make_proxy(TWO, retry_statuses=(502, 503))
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
        first = setup.endpoint(0).last
        first.respond(UNAVAILABLE)
    assert first.closed()
    second = setup.endpoint(1).last
    assert second.request()[0].target == b"/r"
    second.respond(OK)
    response = one_response(client)
    assert (response.status, response.body) == (200, b"ok")
    peers = setup.handler.group.peers
    assert not setup.handler.balancer.usable(peers[0], setup.clock.seconds())
    assert proxy_log(events) == [
        "Upstream http://10.0.0.1:9000 is left out for 10s after failing",
        "Upstream http://10.0.0.1:9000 answered 503 to GET /r; retrying on http://10.0.0.2:9000",
    ]


@pytest.mark.parametrize(("status", "failure"), [(404, False), (403, False), (429, True)])
def test_a_retried_4xx_is_a_failure_only_for_429(status: int, failure: bool) -> None:
    """A 403 or 404 retried elsewhere (content on some upstreams only) says nothing of
    the upstream's health: it stays in. A 429 says it is overloaded: it is counted.
    """
    setup = make_proxy(TWO, retry_statuses=(status,))
    client = setup.client()
    client.send(b"GET /only-on-two HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n\r\n" % status)
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200
    first = setup.handler.group.peers[0]
    assert first.fails == int(failure)


def test_the_last_upstreams_answer_is_relayed_when_none_is_left() -> None:
    """Every upstream answers 503: the last one's answer reaches the client as it came,
    body included, and the one relayed is not counted as failed (as nginx).
    """
    setup = make_proxy(TWO, retry_statuses=(503,), max_fails=2)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    last = setup.endpoint(1).last
    last.respond(UNAVAILABLE)
    response = one_response(client)
    assert (response.status, response.body) == (503, b"restart!")
    assert not last.closed()
    assert [peer.fails for peer in setup.handler.group.peers] == [1, 0]


def test_a_status_not_listed_is_relayed() -> None:
    setup = make_proxy(TWO, retry_statuses=(502, 503))
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
    assert one_response(client).status == 500
    assert setup.endpoint(1).connections == []
    assert setup.handler.group.peers[0].fails == 0


def test_a_post_answered_503_is_relayed() -> None:
    """A POST may have been acted on before the 503: it is not sent again."""
    setup = make_proxy(TWO, retry_statuses=(503,))
    client = setup.client()
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    assert one_response(client).status == 503
    assert setup.endpoint(1).connections == []


def test_a_put_answered_503_is_replayed_with_its_body() -> None:
    setup = make_proxy(TWO, retry_statuses=(503,))
    client = setup.client()
    client.send(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    second = setup.endpoint(1).last
    assert second.request()[1] == b"data"
    second.respond(OK)
    assert one_response(client).status == 200


def test_a_503_before_the_body_ended_is_retried_with_the_rest_to_come() -> None:
    """The upstream answers before the body is all there: what came is replayed, the
    rest follows on the new upstream's connection.
    """
    setup = make_proxy(TWO, retry_statuses=(503,))
    client = setup.client()
    client.send(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n")
    assert client.take().startswith(b"HTTP/1.1 100 Continue\r\n")
    client.send(b"four")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    client.send(b"more")
    second = setup.endpoint(1).last
    assert second.request()[1] == b"fourmore"
    second.respond(OK)
    assert one_response(client).status == 200


def test_a_streamed_body_answered_503_is_relayed() -> None:
    """A body past REPLAY_LIMIT was not kept: the request cannot be sent again."""
    setup = make_proxy(TWO, retry_statuses=(503,))
    client = setup.client(HttpSettings(max_body=0))
    size = REPLAY_LIMIT * 3
    client.send(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    client.send(b"z" * size)
    setup.endpoint(0).last.respond(UNAVAILABLE)
    assert one_response(client, b"PUT").status == 503
    assert setup.endpoint(1).connections == []


def test_a_503_is_relayed_when_the_other_upstream_is_full() -> None:
    """Retrying means waiting for nothing: with the only other upstream at max_conns,
    the answer in hand is relayed rather than dropped for a queue.
    """
    setup = make_proxy(TWO, retry_statuses=(503,), max_conns=1)
    busy, client = setup.client(), setup.client()
    busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")  # takes upstream one
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # upstream two
    setup.endpoint(1).last.respond(UNAVAILABLE)
    assert one_response(client).status == 503
    assert len(setup.endpoint(0).connections) == 1


def test_a_waiting_request_gets_a_freed_upstream_before_a_retry() -> None:
    """A slot freed in this reactor turn goes to the request waiting for it, not to a
    retry that arrives later in the same turn: the retry finds nothing and relays.
    """
    setup = make_proxy(TWO, retry_statuses=(503,), max_conns=1)
    retried, done, waiter = setup.client(), setup.client(), setup.client()
    retried.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # upstream one
    done.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # upstream two
    waiter.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")  # queued
    # Both answers in one reactor turn (no advance between them).
    setup.endpoint(1).last.protocol.dataReceived(OK)
    setup.endpoint(0).last.protocol.dataReceived(UNAVAILABLE)
    setup.clock.advance(0)
    assert one_response(retried).status == 503
    assert one_response(done).status == 200
    (second,) = setup.endpoint(1).connections
    assert second.transport.value().count(b"GET /c ") == 1


def test_a_503_is_relayed_when_the_other_upstream_is_left_out() -> None:
    """A first attempt would still try an upstream left out after failures when it
    is the only one; with an answer in hand, the proxy relays it instead.
    """
    setup = make_proxy(TWO, retry_statuses=(503,))
    setup.handler.balancer.failed(setup.handler.group.peers[1], setup.clock.seconds())
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    assert one_response(client).status == 503
    assert setup.endpoint(1).connections == []


def test_a_probe_answered_with_a_listed_404_brings_its_upstream_back() -> None:
    """A 404 is an answer, though retried elsewhere: the upstream it came from, on its
    probe after fail_timeout, is back (nginx clears a probed peer's failures so).
    """
    setup = make_proxy(TWO, retry_statuses=(404,))
    first = setup.handler.group.peers[0]
    setup.handler.balancer.failed(first, setup.clock.seconds())
    setup.clock.advance(11)  # past fail_timeout: the next pick of the first is the probe
    client = setup.client()
    client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200
    assert first.fails == 0 and setup.handler.balancer.usable(first, setup.clock.seconds())


def test_a_probe_answered_404_serves_the_requests_waiting() -> None:
    """With every upstream full or out, a request waits; the probe's 404 brings its
    upstream back, and the waiting request is sent there.
    """
    setup = make_proxy(TWO, retry_statuses=(404,), max_conns=1)
    first = setup.handler.group.peers[0]
    setup.handler.balancer.failed(first, setup.clock.seconds())
    setup.clock.advance(11)
    probe, busy, waiting = setup.client(), setup.client(), setup.client()
    probe.send(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")  # the probe, on the first
    busy.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # the second
    waiting.send(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")  # both full: queued
    assert len(setup.handler.waiting) == 1
    setup.endpoint(0).last.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    # The probe's retry finds the second full: the 404 is relayed, and the first,
    # back, takes the waiting request.
    assert one_response(probe).status == 404
    assert b"GET /w " in setup.endpoint(0).last.transport.value()


@pytest.mark.parametrize("queue_timeout", [30.0, 0.0])
def test_retry_timeout_bounds_a_retry_waiting_in_the_queue(queue_timeout: float) -> None:
    """A retry waits in the queue only until retry_timeout (whether or not the queue
    has a timeout of its own); then the failure it was for answers (502), with the
    reason in the log line.
    """
    setup = make_proxy(TWO, retry_timeout=5.0, max_conns=1, queue_timeout=queue_timeout)
    setup.clock.advance(100)
    busy, client = setup.client(), setup.client()
    busy.send(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")  # takes the first
    setup.endpoint(1).refuse = True
    setup.clock.advance(2)
    with capture_log_events() as events:
        client.send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")  # refused: queued
        assert len(setup.handler.waiting) == 1
        setup.clock.advance(4.9)
        assert client.take() == b""
        setup.clock.advance(0.1)
    assert one_response(client).status == 502
    assert setup.handler.waiting == {}
    assert proxy_log(events)[-1] == (
        "502 for GET /late: upstream http://10.0.0.2:9000: Connection was refused by other"
        " side: refused; not retried: retry_timeout (5s) passed"
    )


def test_each_upstream_gets_its_second_try_after_a_keepalive_race() -> None:
    """The race on the first upstream's pooled connection, then its 503, then the race
    on the second's: the second is tried on a fresh connection too, and answers.
    """
    setup = make_proxy(TWO, retry_statuses=(503,))
    client = setup.client()
    for _ in range(2):  # an idle pooled connection to each
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer_busy(setup)
        one_response(client)
    client.send(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = setup.endpoint(0), setup.endpoint(1)
    first.connections[0].close(ConnectionDone())  # the race on the first
    first.last.respond(UNAVAILABLE)  # its fresh connection: 503, on to the second
    second.connections[0].close(ConnectionDone())  # the race on the second
    assert len(second.connections) == 2
    second.last.respond(OK)
    assert one_response(client).status == 200


def test_a_retry_waiting_until_retry_timeout_gets_its_502_at_any_clock() -> None:
    """With the clock at a wall-clock time, the time spent comes out a hair short of
    the retry_timeout the queue's timer was set for: the retry's deadline holds.
    """
    setup = make_proxy(TWO, retry_timeout=0.3, max_conns=1, queue_timeout=30.0)
    setup.clock.advance(948107599.0407165)
    busy, client = setup.client(), setup.client()
    busy.send(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(1).refuse = True
    with capture_log_events() as events:
        client.send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.clock.advance(0.3)
    assert proxy_log(events)[-1].endswith("; not retried: retry_timeout (0.3s) passed")
    assert one_response(client).status == 502


def test_a_lone_waiter_is_served_when_an_upstream_is_back_from_fail_timeout() -> None:
    """The first request to wait, with the backup full and the other upstream out after
    a failure, goes to that upstream once its fail_timeout is over, though no other
    request comes to look at the queue.
    """
    setup = make_proxy(TWO, backups=(1,), max_conns=1, queue_timeout=0.0)
    primary, backup = setup.endpoint(0), setup.endpoint(1)
    primary.refuse = True
    tunnel = setup.client()
    tunnel.send(WEBSOCKET_UPGRADE)  # refused by the primary: on the backup, held
    backup.last.respond(SWITCHED)
    primary.refuse = False
    waiter = setup.client()
    waiter.send(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(setup.handler.waiting) == 1
    setup.clock.advance(10)
    assert setup.handler.waiting == {}
    assert primary.last.request()[0].target == b"/w"


def test_retry_tries_bounds_the_upstreams_a_request_reaches() -> None:
    """With retry_tries = 2 of three upstreams, the second 503 is relayed; with every
    upstream refusing, the second refusal is the 502, whose line says why.
    """
    setup = make_proxy(THREE, retry_statuses=(503,), retry_tries=2)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(UNAVAILABLE)
    setup.endpoint(1).last.respond(UNAVAILABLE)
    assert one_response(client).status == 503
    assert setup.endpoint(2).connections == []

    refusing = make_proxy(THREE, retry_tries=2)
    for endpoint in refusing.endpoints.values():
        endpoint.refuse = True
    client = refusing.client()
    with capture_log_events() as events:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    assert [endpoint.attempts for endpoint in refusing.endpoints.values()] == [1, 1, 0]
    assert proxy_log(events)[-1] == (
        "502 for GET /: upstream http://10.0.0.2:9000: Connection was refused by other"
        " side: refused; not retried: retry_tries (2) reached"
    )


def test_a_stale_connection_retry_is_not_counted_by_retry_tries() -> None:
    """The keep-alive race's second try on the same upstream is no failover."""
    setup = make_proxy(TWO, backups=(1,), retry_tries=1)  # (every request to the first)
    client = setup.client()
    endpoint = send_on_a_connection_just_closed(
        setup, client, b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert len(endpoint.connections) == 2
    endpoint.last.respond(OK)
    assert one_response(client).status == 200


def test_retry_timeout_counts_from_the_requests_arrival() -> None:
    """Past retry_timeout after the request arrived, an answer is relayed and a
    broken connection is a 502, though another upstream was there to try.
    """
    setup = make_proxy(TWO, retry_statuses=(503,), retry_timeout=5.0)
    setup.clock.advance(100)  # (a server up for a while: the clock is not at 0)
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(4.9)
    setup.endpoint(0).last.respond(UNAVAILABLE)  # in time: retried
    setup.clock.advance(0.1)
    setup.endpoint(1).last.respond(UNAVAILABLE)  # 5 s: relayed (none left anyway)
    assert one_response(client).status == 503

    late = make_proxy(TWO, retry_statuses=(503,), retry_timeout=5.0)
    late.clock.advance(100)
    client = late.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    late.clock.advance(5)
    late.endpoint(0).last.respond(UNAVAILABLE)
    assert one_response(client).status == 503
    assert late.endpoint(1).connections == []

    broken = make_proxy(TWO, retry_timeout=5.0)
    broken.clock.advance(100)
    client = broken.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    broken.clock.advance(5)
    with capture_log_events() as events:
        broken.endpoint(0).last.close(ConnectionLost())
    assert one_response(client).status == 502
    assert broken.endpoint(1).connections == []
    assert proxy_log(events)[-1].endswith("; not retried: retry_timeout (5s) passed")


def test_retry_on_timeout_sends_an_idempotent_request_on() -> None:
    """As nginx's proxy_next_upstream timeout: no head within response_timeout, and the
    GET goes to the other upstream ("504, 200" in the log); the silent upstream is
    counted as failed and its connection dropped. A POST still gets its 504.
    """
    setup = make_proxy(TWO, retry_on_timeout=True, access_log_format=UPSTREAM_LOG)
    logged: list[HTTP11Exchange | Refusal] = []
    client = setup.client(response_log=logged.append)
    client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    silent = setup.endpoint(0).last
    setup.clock.advance(31)
    assert silent.closed()
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200
    assert upstream_notes(logged[0])[1] == "504, 200"
    assert not setup.handler.balancer.usable(setup.handler.group.peers[0], setup.clock.seconds())

    posting = make_proxy(TWO, retry_on_timeout=True)
    client = posting.client()
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    posting.clock.advance(31)
    assert one_response(client, b"POST").status == 504
    assert posting.endpoint(1).connections == []


def test_a_timeout_is_not_retried_on_an_upstream_left_out() -> None:
    """The other upstream timed out a moment ago: the 504 comes at once rather than
    after response_timeout again (nginx's "no live upstreams").
    """
    setup = make_proxy(TWO, retry_on_timeout=True)
    first, second = setup.client(), setup.client()
    first.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")  # the first upstream
    setup.clock.advance(1)
    second.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")  # the second
    setup.clock.advance(29)  # /1 times out: the first is left out, /1 goes on
    setup.clock.advance(1)  # /2 times out: only the first is left, and it is out
    assert one_response(second).status == 504
    assert len(setup.endpoint(0).connections) == 1


def test_retry_timeout_bounds_retry_on_timeout() -> None:
    """response_timeout once per upstream is what retry_timeout keeps a client from."""
    setup = make_proxy(TWO, retry_on_timeout=True, retry_timeout=20.0)
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        setup.clock.advance(31)
    assert one_response(client).status == 504
    assert setup.endpoint(1).connections == []
    assert proxy_log(events)[-1].endswith("; not retried: retry_timeout (20s) passed")


def test_an_answer_retried_is_noted_for_the_access_log() -> None:
    """As nginx's $upstream_status: "503, 200"."""
    setup = make_proxy(TWO, retry_statuses=(503,), access_log_format=UPSTREAM_LOG)
    logged: list[HTTP11Exchange | Refusal] = []
    client = setup.client(response_log=logged.append)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(0.5)
    setup.endpoint(0).last.respond(UNAVAILABLE)
    setup.clock.advance(0.25)
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200
    assert [upstream_notes(entry) for entry in logged] == [
        ("10.0.0.1:9000, 10.0.0.2:9000", "503, 200", "0.500, 0.250")
    ]


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"retry_statuses": (503,), "retry": False}, "retry_statuses", "retry = false"),
        ({"retry_tries": 2, "retry": False}, "retry_tries", "retry = false"),
        ({"retry_timeout": 1.0, "retry": False}, "retry_timeout", "retry = false"),
        ({"retry_on_timeout": True, "retry": False}, "retry_on_timeout", "retry = false"),
        ({"retry_on_timeout": True, "retry_tries": 1}, "retry_on_timeout", "retry_tries = 1"),
        (
            {"retry_on_timeout": True, "response_timeout": 0.0},
            "retry_on_timeout",
            "response_timeout = 0",
        ),
    ],
)
def test_retry_settings_that_cannot_act_are_refused(
    options: dict[str, Any], key: str, message: str
) -> None:
    from twistwsgi.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_proxy(TWO, **options)
    assert caught.value.where == f"test mount.{key}"
    assert message in str(caught.value)


def test_retry_statuses_need_a_second_upstream() -> None:
    from twistwsgi.config import ConfigError

    with pytest.raises(ConfigError, match="more than one upstream") as caught:
        make_proxy(retry_statuses=(503,))
    assert caught.value.where == "test mount.retry_statuses"


UPSTREAM_IDENTITY = (
    b"HTTP/1.1 200 OK\r\nServer: gunicorn/20.1\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
    b"X-Pad: avoid browser bug\r\nX-Powered-By: PHP/8\r\nX-Accel-Buffering: no\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


def head_fields(client: Connection) -> list[tuple[bytes, bytes]]:
    head = client.take().split(b"\r\n\r\n")[0]
    return [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]  # type: ignore[misc]


def test_the_upstreams_date_server_and_x_pad_are_not_passed() -> None:
    """As nginx's defaults: the client gets this server's Date and Server, never the
    upstream's; other fields (X-Accel-Buffering for a proxy further in front) pass.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(UPSTREAM_IDENTITY)
    fields = dict(head_fields(client))
    assert fields[b"Server"] == b"twistwsgi"
    assert fields[b"Date"] == b"Thu, 01 Jan 1970 00:00:00 GMT"  # the server's Clock
    assert b"X-Pad" not in fields
    assert fields[b"X-Powered-By"] == b"PHP/8"
    assert fields[b"X-Accel-Buffering"] == b"no"


def test_proxy_hide_header_and_proxy_pass_header() -> None:
    """proxy_hide_header hides more, in any case; proxy_pass_header passes a field
    hidden by default (the upstream's Server, in place of this server's).
    """
    setup = make_proxy(proxy_hide_header=("x-powered-by",), proxy_pass_header=("Server",))
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(UPSTREAM_IDENTITY)
    fields = head_fields(client)
    names = [name for name, _ in fields]
    assert b"X-Powered-By" not in names and b"X-Pad" not in names
    assert [value for name, value in fields if name == b"Server"] == [b"gunicorn/20.1"]
    assert dict(fields)[b"Date"] == b"Thu, 01 Jan 1970 00:00:00 GMT"


def test_a_passed_server_goes_with_a_switch_of_protocols_too() -> None:
    """proxy_pass_header holds for a 101 as for any response; without it the 101
    carries this server's Server and Date, once.
    """
    for passed, server in (((), b"twistwsgi"), (("Server",), b"up/1")):
        setup = make_proxy(proxy_pass_header=passed)
        client = setup.client()
        client.send(WEBSOCKET_UPGRADE)
        setup.endpoint().last.respond(
            SWITCHED.replace(b"\r\n\r\n", b"\r\nServer: up/1\r\nDate: then\r\n\r\n")
        )
        fields = head_fields(client)
        assert [value for name, value in fields if name == b"Server"] == [server]
        assert [value for name, value in fields if name == b"Date"] == [
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        ]


def test_interim_responses_hide_what_the_final_one_hides() -> None:
    setup = make_proxy(proxy_hide_header=("X-Powered-By",))
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
        b"Server: gunicorn/20.1\r\nX-Powered-By: PHP/8\r\n\r\n"
    )
    head = client.take().split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 103 ")
    assert head.split(b"\r\n")[1:] == [b"Link: </a.css>; rel=preload"]


def test_hidden_fields_are_not_passed_with_a_switch_of_protocols() -> None:
    setup = make_proxy(proxy_hide_header=("X-Powered-By",))
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    setup.endpoint().last.respond(
        SWITCHED.replace(b"\r\n\r\n", b"\r\nX-Powered-By: PHP\r\nX-Pad: x\r\nX-Kept: 1\r\n\r\n")
    )
    names = [name for name, _ in head_fields(client)]
    assert b"X-Kept" in names
    assert b"X-Powered-By" not in names and b"X-Pad" not in names


def test_round_robin_with_weights() -> None:
    """Weights 2:1 send two requests to the first upstream for each to the second."""
    setup = make_proxy(TWO, weights=(2, 1))
    client = setup.client()
    for _ in range(6):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer_busy(setup)
        one_response(client)
    counts = [
        sum(len(c.transport.value().split(b"GET ")) - 1 for c in endpoint.connections)
        for endpoint in setup.endpoints.values()
    ]
    assert counts == [4, 2]


def test_least_conn_avoids_the_busy_upstream() -> None:
    """With least_conn, a new request goes to the upstream with nothing in progress."""
    setup = make_proxy(TWO, balance="least_conn")
    a, b, c = setup.client(), setup.client(), setup.client()
    a.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    b.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(OK)  # upstream 0 is free again, 1 is busy
    c.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert setup.endpoint(0).last.take().count(b"GET /c") == 1


def test_random_two_sends_a_request_to_the_less_busy_of_two() -> None:
    """Of two upstreams random two draws both: the new request goes to the idle one."""
    setup = make_proxy(TWO, balance="random two")
    assert setup.handler.balancer.policy == "random_two"
    busy, other = setup.client(), setup.client()
    busy.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    first = 0 if setup.endpoint(0).connections else 1
    for n in range(5):
        other.send(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        setup.endpoint(1 - first).connections[-1].respond(OK)
    assert len(setup.endpoint(first).connections) == 1  # only /a
    assert [r.status for r in parse_responses(other.take())] == [200] * 5


THREE = (*TWO, "http://10.0.0.3:9000")


def upstream_of_each(setup: Setup) -> dict[bytes, int]:
    """For every request target any upstream got, the index of that upstream."""
    where: dict[bytes, int] = {}
    for index, endpoint in enumerate(setup.endpoints.values()):
        for upstream in endpoint.connections:
            for target in targets_sent(upstream):
                where[target] = index
    return where


def test_hash_on_a_cookie_keeps_each_session_on_its_upstream() -> None:
    """With balance = "hash $cookie_sid consistent", every request of a session goes to
    one upstream, sessions are spread over all three, and a client without the
    cookie yet goes round-robin.
    """
    setup = make_proxy(THREE, balance="hash $cookie_sid consistent")
    client = setup.client()
    for round_ in range(3):
        for session in range(12):
            client.send(
                b"GET /s%d/r%d HTTP/1.1\r\nHost: x\r\nCookie: theme=dark; sid=%d\r\n\r\n"
                % (session, round_, session)
            )
            answer_busy(setup)
            one_response(client)
    where = upstream_of_each(setup)
    homes = {}
    for session in range(12):
        (home,) = {where[b"/s%d/r%d" % (session, round_)] for round_ in range(3)}
        homes[session] = home
    assert set(homes.values()) == {0, 1, 2}
    for n in range(3):
        client.send(b"GET /new%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        answer_busy(setup)
        one_response(client)
    assert sorted(upstream_of_each(setup)[b"/new%d" % n] for n in range(3)) == [0, 1, 2]


def test_ip_hash_reads_the_client_behind_a_trusted_proxy() -> None:
    """ip_hash keys on the client as the mount's rules resolve it: behind a trusted
    proxy, the X-Forwarded-For client's network (one upstream per /24); from anyone
    else, the connection's address, whatever X-Forwarded-For it sends.
    """
    for trusted in (("127.0.0.0/8",), ()):
        setup = make_proxy(THREE, balance="ip_hash", trusted=trusted)
        client = setup.client()
        for network in range(10):
            for host in (1, 77, 200):
                client.send(
                    b"GET /n%d/h%d HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.%d.%d\r\n\r\n"
                    % (network, host, network, host)
                )
                answer_busy(setup)
                one_response(client)
        where = upstream_of_each(setup)
        used = set()
        for network in range(10):
            (home,) = {where[b"/n%d/h%d" % (network, host)] for host in (1, 77, 200)}
            used.add(home)
        assert len(used) == (3 if trusted else 1)


def test_hash_on_client_addr_keys_on_the_whole_client_behind_a_balancer() -> None:
    """With hash $client_addr consistent, the client a trusted balancer reports, whole
    (clients of one /24 spread), where $remote_addr would be the balancer's.
    """
    for key, expected in (("$client_addr", 3), ("$remote_addr", 1)):
        setup = make_proxy(THREE, balance=f"hash {key} consistent", trusted=("127.0.0.0/8",))
        client = setup.client()
        for host in range(30):
            client.send(
                b"GET /h%d HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.%d\r\n\r\n"
                % (host, host)
            )
            answer_busy(setup)
            one_response(client)
        assert len(set(upstream_of_each(setup).values())) == expected


def test_a_key_whose_upstream_failed_moves_and_stays_moved() -> None:
    """The key's upstream refusing: the request goes to another upstream, and so do
    the key's next requests while the first is out; no request is lost.
    """
    setup = make_proxy(THREE, balance="hash $arg_user consistent")
    balancer = setup.handler.balancer
    home = balancer.pick(0.0, key=b"ann")
    assert home is not None
    index = setup.handler.group.peers.index(home)
    setup.endpoint(index).refuse = True
    client = setup.client()
    for n in range(3):
        client.send(b"GET /r%d?user=ann HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        answer_busy(setup)
        assert one_response(client).status == 200
    (other,) = set(upstream_of_each(setup).values())
    assert other != index
    assert setup.endpoint(index).attempts == 1  # out after its failure


def test_waiters_pick_by_their_own_key() -> None:
    """A request waiting for a free upstream (max_conns) keeps its key: when both
    upstreams free up at once, each waiter goes to its own.
    """
    setup = make_proxy(TWO, balance="hash $arg_k consistent", max_conns=1)
    balancer = setup.handler.balancer
    peers = setup.handler.group.peers
    home: dict[int, bytes] = {}
    for n in range(100):
        picked = balancer.pick(0.0, key=b"%d" % n)
        assert picked is not None
        home.setdefault(peers.index(picked), b"%d" % n)
    busy = [setup.client(), setup.client()]
    get(busy[0], b"/busy0?k=" + home[0])
    get(busy[1], b"/busy1?k=" + home[1])
    waiters = [setup.client(), setup.client()]
    get(waiters[0], b"/wait1?k=" + home[1])  # the oldest waits for upstream 1
    get(waiters[1], b"/wait0?k=" + home[0])
    assert len(setup.handler.waiting) == 2
    for endpoint in setup.endpoints.values():
        endpoint.last.protocol.dataReceived(OK)  # both free in one turn of the reactor
    setup.clock.advance(0)
    where = upstream_of_each(setup)
    assert where[b"/wait1?k=" + home[1]] == 1
    assert where[b"/wait0?k=" + home[0]] == 0


def test_no_upstream_available_is_502() -> None:
    """When every upstream is out (active health), the answer is 502 at once."""
    setup = make_proxy(TWO)
    for peer in setup.handler.group.peers:
        peer.healthy = False
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502


def test_no_upstream_available_names_the_upstreams_and_why() -> None:
    """The 502 line of a request that found no upstream names each one and says why
    it is out.
    """
    setup = make_proxy(TWO)
    for peer in setup.handler.group.peers:
        peer.healthy = False
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    assert proxy_log(events) == [
        "502 for GET /x: upstream http://10.0.0.1:9000 (failing its health check),"
        " http://10.0.0.2:9000 (failing its health check): no upstream is available"
    ]


def test_a_failure_with_the_other_upstream_unhealthy_is_one_502_line() -> None:
    """A GET refused by the only healthy upstream is not retried: no "retrying" line,
    one 502 line that names the failed upstream and why the other one is not tried.
    """
    setup = make_proxy(TWO)
    setup.handler.group.peers[0].healthy = False
    setup.endpoint(1).refuse = True
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert one_response(client).status == 502
    assert [line for line in proxy_log(events) if "left out for" not in line] == [
        "502 for GET /x: upstream http://10.0.0.2:9000: Connection was refused by other side:"
        " refused; no other upstream is available: http://10.0.0.1:9000 (failing its health"
        " check)"
    ]


# -- active health checks ----------------------------------------------------------------------


def test_health_checks_poll_and_take_upstreams_out() -> None:
    """The health path is polled on each upstream; a 5xx takes it out, a 2xx puts it
    back; checks stop on close().
    """
    setup = make_proxy(TWO, health_check="/healthz", health_interval=5.0)
    setup.clock.advance(0)
    first, second = setup.endpoint(0), setup.endpoint(1)
    assert first.last.request()[0].target == b"/healthz"
    first.last.respond(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")
    second.last.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    peers = setup.handler.group.peers
    assert [peer.healthy for peer in peers] == [False, True]
    setup.clock.advance(5)
    first.last.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert peers[0].healthy
    setup.handler.close()
    count = len(first.connections)
    setup.clock.advance(50)
    assert len(first.connections) == count


def test_health_check_timeout_counts_as_unhealthy() -> None:
    """A check that does not answer within the interval marks the upstream unhealthy."""
    setup = make_proxy(("http://10.0.0.1:9000",), health_check="/h", health_interval=2.0)
    setup.clock.advance(0)
    setup.clock.advance(2.1)
    assert not setup.handler.group.peers[0].healthy
    setup.handler.close()


def test_close_closes_idle_connections_and_lets_busy_ones_finish() -> None:
    """close() closes idle pooled connections; a request in flight still completes,
    and its connection is closed rather than pooled.
    """
    setup = make_proxy()
    idle_client, busy_client = setup.client(), setup.client()
    idle_client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(OK)
    busy_client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # busy_client took the idle connection; make a second idle one.
    idle_client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    endpoint = setup.endpoint()
    endpoint.connections[1].respond(OK)
    setup.handler.close()
    assert endpoint.connections[1].transport.disconnecting
    endpoint.connections[0].respond(OK)
    assert one_response(busy_client).status == 200
    assert endpoint.connections[0].transport.disconnecting


# -- protocol switch ---------------------------------------------------------------------------


def test_websocket_upgrade_is_tunnelled() -> None:
    """An Upgrade request goes up with Upgrade and Connection: upgrade; after the
    upstream's 101 the client gets a 101 and bytes flow both ways until one side closes.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        b"early"
    )
    upstream = setup.endpoint().last
    assert upstream.header(b"upgrade") == [b"websocket"]
    assert upstream.header(b"connection") == [b"upgrade"]
    upstream.take()
    upstream.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nfrom-upstream"
    )
    written = client.take()
    head, _, rest = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert b"Connection: upgrade" in head and b"Upgrade: websocket" in head
    assert rest == b"from-upstream"
    assert upstream.take() == b"early"
    client.send(b"ping")
    assert upstream.take() == b"ping"
    upstream.respond(b"pong")
    assert client.take() == b"pong"
    upstream.close()
    assert client.transport.disconnecting


def test_tunnel_starts_paused_when_the_upstream_is_not_reading() -> None:
    """An upstream that stopped reading before its 101 leaves the client unread until
    it reads again.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    upstream = setup.endpoint().last
    upstream.protocol.pauseProducing()
    upstream.respond(SWITCHED)
    assert client.take().startswith(b"HTTP/1.1 101")
    assert client.transport.producerState == "paused"
    upstream.protocol.resumeProducing()
    assert client.transport.producerState == "producing"


def test_refused_upgrade_is_an_ordinary_response() -> None:
    """An upstream that answers an Upgrade request with 200 gives an ordinary response,
    and the client's connection carries its next request.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    setup.endpoint().last.respond(OK)
    assert one_response(client).body == b"ok"
    assert not client.transport.disconnecting
    client.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(OK)
    assert one_response(client).body == b"ok"


@pytest.mark.parametrize("upgrade", [b"h2c", b"H2C", b"h2c, h2c"])
def test_h2c_is_never_passed_on(upgrade: bytes) -> None:
    """An upgrade to h2c would make the upstream connection HTTP/2, on which later
    requests escape the mount's prefix and forwarding fields: it goes as a plain
    request, without Upgrade, and no 101 is accepted for it.
    """
    setup = make_proxy(mount="/public")
    client = setup.client()
    client.send(
        b"GET /public/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: " + upgrade + b"\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    upstream = setup.endpoint().last
    assert upstream.header(b"upgrade") == []
    assert upstream.header(b"connection") == []
    assert upstream.header(b"http2-settings") == []
    upstream.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    )
    assert one_response(client).status == 502
    assert upstream.closed()


def test_h2c_is_left_out_of_an_upgrade_offering_more() -> None:
    """Only the protocols that may be passed on are offered upstream."""
    setup = make_proxy()
    client = setup.client()
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n"
    )
    assert setup.endpoint().last.header(b"upgrade") == [b"websocket"]


@pytest.mark.parametrize(
    "answer",
    [b"Upgrade: h2c\r\n", b"Upgrade: websocket, h2c\r\n", b"Upgrade: IRC/6.9\r\n"],
)
def test_a_switch_to_a_protocol_not_asked_for_is_a_502(answer: bytes) -> None:
    """RFC 9110 7.8: a server must not switch to a protocol the client did not offer."""
    setup = make_proxy()
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    upstream = setup.endpoint().last
    upstream.respond(
        b"HTTP/1.1 101 Switching Protocols\r\n" + answer + b"Connection: Upgrade\r\n\r\n"
    )
    assert one_response(client).status == 502
    assert upstream.closed()


def test_a_client_leaving_while_its_upgrade_waits_drops_the_upstream_at_once() -> None:
    """The client is still read while the upstream decides, so its leaving is seen
    (the upstream connection was held until response_timeout); what it sends on is
    kept for the tunnel.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        + b"first"
    )
    assert client.transport.producerState == "producing"
    client.send(b"second")
    upstream = setup.endpoint().last
    upstream.take()
    upstream.respond(SWITCHED)
    assert upstream.take() == b"firstsecond"
    other = setup.client()
    other.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    waiting = setup.endpoint().last
    assert other.transport.producerState == "producing"
    other.protocol.connectionLost(Failure(ConnectionDone()))
    assert waiting.transport.disconnecting


def test_bytes_kept_before_the_switch_are_bounded() -> None:
    """Over UPGRADE_TAIL_LIMIT kept, the client is no longer read until the switch."""
    setup = make_proxy()
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    client.send(b"x" * (UPGRADE_TAIL_LIMIT + 1))
    assert client.transport.producerState == "paused"
    upstream = setup.endpoint().last
    upstream.take()
    upstream.respond(SWITCHED)
    assert client.transport.producerState == "producing"
    assert upstream.take() == b"x" * (UPGRADE_TAIL_LIMIT + 1)


def test_an_http10_upgrade_is_not_passed_on() -> None:
    """RFC 9110 7.8: a server must ignore Upgrade in an HTTP/1.0 request."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /ws HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    upstream = setup.endpoint().last
    assert upstream.header(b"upgrade") == []
    upstream.respond(SWITCHED)
    assert one_response(client).status == 502


def test_an_upgrade_on_a_stale_keepalive_connection_is_retried() -> None:
    """As a plain GET is: the client's bytes wait in the server until the switch."""
    setup = make_proxy()
    client = setup.client()
    endpoint = send_on_a_connection_just_closed(setup, client, WEBSOCKET_UPGRADE)
    assert len(endpoint.connections) == 2
    endpoint.last.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert client.take().startswith(b"HTTP/1.1 101")


def test_a_tunnel_whose_upstream_stops_reading_ends_after_idle_timeout() -> None:
    """Both sockets and the upstream's slot were held for ever (nginx: proxy_send_timeout)."""
    setup = make_proxy()
    client, upstream = open_tunnel(setup)
    assert client.take().startswith(b"HTTP/1.1 101")
    upstream.protocol.pauseProducing()
    setup.clock.advance(OPTIONS["idle_timeout"] - 1)
    assert not upstream.closed()
    setup.clock.advance(2)
    assert upstream.transport.disconnected  # aborted: it would never drain
    assert client.transport.disconnecting
    assert setup.handler.group.peers[0].active == 0


def test_a_tunnel_upstream_reading_again_keeps_the_tunnel() -> None:
    setup = make_proxy()
    client, upstream = open_tunnel(setup)
    upstream.protocol.pauseProducing()
    setup.clock.advance(OPTIONS["idle_timeout"] - 1)
    upstream.protocol.resumeProducing()
    setup.clock.advance(OPTIONS["idle_timeout"] * 2)
    assert not upstream.closed() and not client.transport.disconnecting


def test_a_client_leaving_a_tunnel_aborts_an_upstream_that_stopped_reading() -> None:
    """A graceful close would wait for the upstream to take what is buffered."""
    setup = make_proxy()
    client, upstream = open_tunnel(setup)
    upstream.protocol.pauseProducing()
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert upstream.transport.disconnected


def test_a_426_keeps_its_upgrade_field() -> None:
    """RFC 9110 15.5.22: a 426 must carry Upgrade, hop-by-hop elsewhere."""
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    response = one_response(client)
    assert response.status == 426
    assert response.header_values(b"upgrade") == [b"websocket"]
    assert response.header_values(b"connection") == [b"upgrade"]  # RFC 9110 7.8
    client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n"
    )
    assert one_response(client).header_values(b"upgrade") == []


def test_a_closed_upstream_that_never_takes_its_bytes_is_dropped_after_idle_timeout() -> None:
    """The client left a tunnel while bytes for the upstream were still buffered
    (the upstream not reading, but not yet paused): the graceful close waited for
    ever. It now has idle_timeout.
    """
    setup = make_proxy()
    client, upstream = open_tunnel(setup)
    client.send(b"x" * 30_000)
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert upstream.transport.disconnecting and not upstream.transport.disconnected
    setup.clock.advance(OPTIONS["idle_timeout"] + 0.1)
    assert upstream.transport.disconnected


def test_a_tunnel_is_logged_when_it_ends_with_the_bytes_it_carried() -> None:
    """As nginx logs a WebSocket: at the end, with the bytes sent to the client (it
    was logged at the switch with 0 bytes).
    """
    logged: list[Any] = []
    setup = make_proxy()
    client = setup.client(response_log=logged.append)
    client.send(WEBSOCKET_UPGRADE)
    upstream = setup.endpoint().last
    upstream.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"\r\nhello"
    )
    upstream.respond(b"world!")
    assert logged == []
    client.protocol.connectionLost(Failure(ConnectionDone()))
    [exchange] = logged
    assert (exchange.status, exchange.body_sent) == (101, len(b"helloworld!"))


def test_client_closing_the_tunnel_closes_the_upstream() -> None:
    """The client leaving a tunnel closes the upstream connection."""
    setup = make_proxy()
    client, upstream = open_tunnel(setup)
    assert client.take().startswith(b"HTTP/1.1 101")
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert upstream.transport.disconnecting
    assert setup.handler.group.peers[0].active == 0


# -- building -----------------------------------------------------------------------------------


def test_bad_tls_ca_is_a_config_error(tmp_path: Any) -> None:
    """An unreadable CA file is a ConfigError naming the mount's tls_ca."""
    import pytest

    from twistwsgi.config import ConfigError

    path = tmp_path / "ca.pem"
    path.write_text("not a certificate")
    config = MountConfig(
        "/", "proxy", (Upstream("https://x"),), {**OPTIONS, "tls_ca": str(path)}, "site.toml: m"
    )
    with pytest.raises(ConfigError) as caught:
        build_proxy(config, ServerConfig(), reactor=Clock())
    assert caught.value.where == "site.toml: m.tls_ca"


def test_standard_builders_include_proxy() -> None:
    """The service's standard builders build proxy mounts."""
    from twistwsgi.service import standard_builders

    clock = Clock()
    builders: dict[str, Callable[..., Any]] = dict(standard_builders(clock))
    config = MountConfig("/", "proxy", (Upstream("http://127.0.0.1:1"),), OPTIONS, "m")
    handler = builders["proxy"](config, ServerConfig())
    assert isinstance(handler, ProxyHandler)
    handler.close()


def test_idle_connections_beyond_keepalive_are_kept_only_briefly() -> None:
    """With keepalive = 1, a burst of two responses keeps both connections idle, but
    the one beyond the limit closes after OVERFLOW_IDLE_TIMEOUT and the other stays.
    """
    from twistwsgi.upstream import OVERFLOW_IDLE_TIMEOUT

    setup = make_proxy(keepalive=1)
    a, b = setup.client(), setup.client()
    a.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    b.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = setup.endpoint().connections
    first.respond(OK)
    second.respond(OK)
    assert not first.closed() and not second.closed()
    setup.clock.advance(OVERFLOW_IDLE_TIMEOUT + 0.1)
    assert not first.closed()
    assert second.closed()
    setup.clock.advance(60)
    assert first.closed()


def test_health_interval_must_be_positive() -> None:
    """A health check polled every 0 seconds is refused when the mount is built."""
    import pytest

    from twistwsgi.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_proxy(health_check="/h", health_interval=0.0)
    assert caught.value.where == "test mount.health_interval"


def test_http10_client_without_host_gets_the_upstreams_host() -> None:
    """An HTTP/1.0 request without Host is sent upstream as HTTP/1.1 with the
    upstream's own Host, and the response reaches the HTTP/1.0 client.
    """
    setup = make_proxy(("http://10.0.0.1:9000",))
    client = setup.client()
    client.send(b"GET /old HTTP/1.0\r\n\r\n")
    upstream = setup.endpoint().last
    request, _ = upstream.request()
    assert request.http_version == b"1.1"
    assert upstream.header(b"host") == [b"10.0.0.1:9000"]
    upstream.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    written = client.take()
    assert written.startswith(b"HTTP/1.1 200 OK") and written.endswith(b"\r\n\r\nok")


def test_unix_socket_clients_are_trusted_with_unix_entry() -> None:
    """trusted_proxies = ["unix:"] believes a front proxy on a UNIX socket: its
    X-Forwarded-For is kept (nothing appended: the hop has no address) and its
    X-Forwarded-Proto passes; without the entry they are replaced.
    """
    from twisted.internet.address import UNIXAddress
    from twisted.internet.testing import StringTransport

    for trusted, expected_for, expected_proto in (
        (("unix:",), [b"203.0.113.9"], [b"https"]),
        ((), [], [b"http"]),
    ):
        setup = make_proxy(trusted=trusted)
        transport = StringTransport(
            hostAddress=UNIXAddress("/run/s.sock"), peerAddress=UNIXAddress(None)
        )
        client = connect(setup.handler, clock=setup.clock, transport=transport)
        client.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n"
            b"X-Forwarded-Proto: https\r\n\r\n"
        )
        upstream = setup.endpoint().last
        assert upstream.header(b"x-forwarded-for") == expected_for
        assert upstream.header(b"x-forwarded-proto") == expected_proto


# -- max_conns and the queue ------------------------------------------------------------------


def requests_sent(upstream: UpstreamConnection) -> list[tuple[bytes, bytes]]:
    """Every request written on ``upstream``, in order, as (target, body so far),
    parsed by h11.
    """
    server = h11.Connection(h11.SERVER)
    server.receive_data(upstream.transport.value())
    requests: list[tuple[bytes, bytes]] = []
    while True:
        event = server.next_event()
        if isinstance(event, h11.Request):
            requests.append((event.target, b""))
        elif isinstance(event, h11.Data):
            target, body = requests[-1]
            requests[-1] = (target, body + event.data)
        elif isinstance(event, h11.EndOfMessage):
            server.send(h11.Response(status_code=200, headers=[(b"Content-Length", b"0")]))
            server.send(h11.EndOfMessage())
            server.start_next_cycle()
        else:
            return requests


def targets_sent(upstream: UpstreamConnection) -> list[bytes]:
    """The targets of every request written on ``upstream``, in order."""
    return [target for target, _body in requests_sent(upstream)]


def get(client: Connection, target: bytes) -> None:
    client.send(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % target)


def test_max_conns_holds_the_next_request_until_a_response_completes() -> None:
    """With max_conns = 1 the upstream has one request at a time: the second request
    waits, unsent, and goes out (on a new connection, keepalive being 0) only once the
    first response is complete.
    """
    setup = make_proxy(max_conns=1, keepalive=0)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    endpoint = setup.endpoint()
    (first,) = endpoint.connections
    assert targets_sent(first) == [b"/a"]
    assert len(setup.handler.waiting) == 1
    assert setup.handler.group.peers[0].active == 1
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    assert len(endpoint.connections) == 1  # the response is not complete yet
    assert b.take() == b""
    first.respond(b"cd")
    assert one_response(a).body == b"abcd"
    second = endpoint.last
    assert second is not first and targets_sent(second) == [b"/b"]
    assert not setup.handler.waiting
    second.respond(OK)
    assert one_response(b).body == b"ok"
    assert setup.handler.group.peers[0].active == 0


def test_a_waiter_takes_the_released_keepalive_connection() -> None:
    """Under the limit keep-alive still works: the waiting request goes out on the
    connection the finished one gave back, and no connection is opened for it.
    """
    setup = make_proxy(max_conns=1)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    endpoint = setup.endpoint()
    endpoint.last.respond(OK)
    assert one_response(a).status == 200
    (only,) = endpoint.connections
    assert targets_sent(only) == [b"/a", b"/b"]
    only.respond(OK)
    assert one_response(b).status == 200
    assert setup.handler.group.peers[0].target.idle == [only.protocol]


@contextlib.contextmanager
def socket_backed(endpoint: FakeEndpoint, read_size: int | None = None) -> Iterator[socket.socket]:
    """Give the connections ``endpoint`` opens a real socket behind their transport
    (what ``getHandle`` returns, where the proxy looks for unread bytes): one end of a
    socket pair. Yields the other end, the upstream's. ``read_size`` is the most the
    transport reads at once (Twisted's ``bufferSize``).
    """
    upstream_end, proxy_end = socket.socketpair()

    class SocketBacked(StringTransport):
        if read_size is not None:
            bufferSize = read_size  # noqa: N815 (Twisted's name)

        def getHandle(self) -> socket.socket:
            return proxy_end

    endpoint.transport_factory = SocketBacked
    try:
        yield upstream_end
    finally:
        endpoint.transport_factory = StringTransport
        upstream_end.close()
        proxy_end.close()


@pytest.mark.parametrize(
    "stray",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen", None],
    ids=["bytes", "close"],
)
def test_a_waiter_does_not_take_a_connection_with_unread_input(stray: bytes | None) -> None:
    """A queued request takes the connection a response gave back in the same reactor
    turn, before anything was read from it: bytes the upstream sent after its
    response (a second response, a HEAD body in a later write) would be read as the
    waiter's response, and every later one shifted by one. The socket is asked first
    and such a connection dropped (RFC 9112 9.3), with a warning. The upstream's
    close waiting there (gunicorn closes keep-alive connections after 2 s) drops it
    too, but is the ordinary end of a connection: no warning.
    """
    setup = make_proxy(max_conns=1)
    endpoint = setup.endpoint()
    with socket_backed(endpoint) as upstream_end:
        a, b = setup.client(), setup.client()
        get(a, b"/a")
        get(b, b"/b")
        first = endpoint.last
        endpoint.transport_factory = StringTransport
        if stray is None:
            upstream_end.shutdown(socket.SHUT_WR)
        else:
            upstream_end.sendall(stray)
        with capture_log_events() as events:
            first.respond(OK)
        assert one_response(a).body == b"ok"
        second = endpoint.last
        assert second is not first and first.transport.disconnected
        assert targets_sent(first) == [b"/a"] and targets_sent(second) == [b"/b"]
        warnings = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]
        if stray is None:
            assert warnings == []
        else:
            assert any("after the end of its response" in line for line in warnings)
        second.respond(OK)
        assert one_response(b).body == b"ok"


def test_a_full_read_followed_by_the_upstream_close_is_quiet() -> None:
    """After a read as large as the transport takes, the socket holds the upstream's
    close: the connection is not pooled, and no warning speaks of stray bytes.
    """
    setup = make_proxy()
    endpoint = setup.endpoint()
    with socket_backed(endpoint, read_size=len(OK)) as upstream_end:
        client = setup.client()
        get(client, b"/a")
        upstream_end.shutdown(socket.SHUT_WR)
        with capture_log_events() as events:
            endpoint.last.respond(OK)
        assert one_response(client).body == b"ok"
        assert setup.handler.group.peers[0].target.idle == []
        assert [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn] == []


def test_a_waiter_takes_a_quiet_socket_backed_connection() -> None:
    """The socket asked says nothing waits: the released connection is reused."""
    setup = make_proxy(max_conns=1)
    endpoint = setup.endpoint()
    with socket_backed(endpoint):
        a, b = setup.client(), setup.client()
        get(a, b"/a")
        get(b, b"/b")
        endpoint.last.respond(OK)
        assert one_response(a).body == b"ok"
        (only,) = endpoint.connections
        assert targets_sent(only) == [b"/a", b"/b"]


def test_a_pipelined_request_does_not_take_the_connection_still_being_read() -> None:
    """The client's next request, pipelined, starts while the read that ended the
    previous response is still being handled. Over TLS the rest of that read comes
    as the next records, each its own dataReceived: stray bytes after the response
    would be read as the new request's response. The request takes another
    connection, and the stray bytes, reaching an idle one, close it.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    endpoint = setup.endpoint()
    first = endpoint.last
    assert targets_sent(first) == [b"/a"]
    first.protocol.dataReceived(OK)  # one record ...
    first.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
    setup.clock.advance(0)  # ... and the next, in one reactor turn
    second = endpoint.last
    assert second is not first and first.transport.disconnected
    assert targets_sent(first) == [b"/a"] and targets_sent(second) == [b"/b"]
    second.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
    assert [response.body for response in parse_responses(client.take())] == [b"ok", b"b"]


def test_a_full_read_that_leaves_bytes_in_the_socket_ends_the_connection() -> None:
    """A read as large as the transport takes (Twisted reads 64 KiB at most) may
    leave more in the socket: a response that ends it is looked after, and bytes
    waiting there keep the connection out of the pool.
    """
    setup = make_proxy()
    endpoint = setup.endpoint()
    with socket_backed(endpoint, read_size=len(OK)) as upstream_end:
        client = setup.client()
        get(client, b"/a")
        upstream_end.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
        endpoint.last.respond(OK)
        assert one_response(client).body == b"ok"
        assert endpoint.last.transport.disconnecting
        assert setup.handler.group.peers[0].target.idle == []


def test_waiters_are_served_oldest_first() -> None:
    """Three waiting requests go upstream in the order they arrived."""
    setup = make_proxy(max_conns=1)
    clients = [setup.client() for _ in range(4)]
    for index, client in enumerate(clients):
        get(client, b"/%d" % index)
    (upstream,) = setup.endpoint().connections
    assert len(setup.handler.waiting) == 3
    for index, client in enumerate(clients):
        assert targets_sent(upstream)[-1] == b"/%d" % index
        upstream.respond(OK)
        assert one_response(client).status == 200
    assert targets_sent(upstream) == [b"/0", b"/1", b"/2", b"/3"]
    assert len(setup.endpoint().connections) == 1


def test_a_full_queue_is_503_at_once_without_a_failure() -> None:
    """Every upstream at max_conns and the queue full: 503 at once, with Retry-After,
    a short text body and a warning naming the mount's upstreams; nothing counts as
    an upstream failure.
    """
    setup = make_proxy(TWO, max_conns=1, queue=1)
    a, b, c, d = (setup.client() for _ in range(4))
    get(a, b"/a")
    get(b, b"/b")
    get(c, b"/c")
    assert len(setup.handler.waiting) == 1
    with capture_log_events() as events:
        get(d, b"/d")
    response = one_response(d)
    assert response.status == 503
    assert response.header(b"retry-after") == b"1"
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    assert response.body.startswith(b"Service Unavailable")
    assert any(
        e.get("status") == 503 and e.get("upstream") == ", ".join(TWO) and "queue" in e["detail"]
        for e in events
    )
    assert [peer.fails for peer in setup.handler.group.peers] == [0, 0]
    assert c.take() == b""  # still waiting
    assert sum(len(endpoint.connections) for endpoint in setup.endpoints.values()) == 2


def test_queue_zero_answers_503_instead_of_waiting() -> None:
    """With queue = 0 a request finding every upstream full is refused at once."""
    setup = make_proxy(max_conns=1, queue=0)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    assert one_response(b).status == 503
    assert len(setup.endpoint().connections) == 1


def test_queue_timeout_is_503() -> None:
    """A request that waited queue_timeout gets 503 and leaves the queue; the slot
    freed later goes to nobody.
    """
    setup = make_proxy(max_conns=1, queue_timeout=5.0)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    setup.clock.advance(4.9)
    assert b.take() == b""
    with capture_log_events() as events:
        setup.clock.advance(0.2)
    response = one_response(b)
    assert response.status == 503 and response.header(b"retry-after") == b"1"
    assert any("within 5s" in e.get("detail", "") for e in events)
    assert not setup.handler.waiting
    (upstream,) = setup.endpoint().connections
    upstream.respond(OK)
    assert one_response(a).status == 200
    assert targets_sent(upstream) == [b"/a"]
    assert setup.handler.group.peers[0].fails == 0


def test_queue_timeout_zero_waits_without_limit() -> None:
    """A queue_timeout of 0 is no limit, as for the other proxy timeouts."""
    setup = make_proxy(max_conns=1, queue_timeout=0.0, response_timeout=0.0)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    setup.clock.advance(3600)
    assert b.take() == b""
    setup.endpoint().last.respond(OK)
    assert targets_sent(setup.endpoint().last) == [b"/a", b"/b"]


def test_a_client_leaving_the_queue_is_forgotten() -> None:
    """A waiting client that disconnects leaves the queue: the next free slot goes to
    the waiter after it, without an error, and its timer is gone with it.
    """
    setup = make_proxy(max_conns=1, queue_timeout=5.0)
    a, b, c = setup.client(), setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    get(c, b"/c")
    with capture_log_events() as events:
        b.protocol.connectionLost(Failure(ConnectionDone()))
        assert len(setup.handler.waiting) == 1
        (upstream,) = setup.endpoint().connections
        upstream.respond(OK)
        assert one_response(a).status == 200
        assert targets_sent(upstream) == [b"/a", b"/c"]
        setup.clock.advance(6)  # b's and c's queue timers were cancelled
    assert not [
        e for e in events if e.get("log_level") is not None and e["log_level"].name == "warn"
    ]
    upstream.respond(OK)
    assert one_response(c).status == 200
    assert setup.handler.group.peers[0].active == 0


def test_a_waiting_large_body_is_not_read_until_the_request_is_sent() -> None:
    """A large POST (handed to the proxy once DISPATCH_BUFFER of it arrived) that
    waits for a slot stops reading the client; its body goes up once it is sent.
    """
    setup = make_proxy(max_conns=1)
    a, b = setup.client(), setup.client(HttpSettings(max_body=0))
    get(a, b"/a")
    b.send(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
    assert len(setup.handler.waiting) == 1
    assert b.transport.producerState == "paused"
    (upstream,) = setup.endpoint().connections
    upstream.take()
    upstream.respond(OK)
    assert one_response(a).status == 200
    assert b.transport.producerState == "producing"
    written = upstream.take()
    assert written.startswith(b"POST /b HTTP/1.1\r\n")
    assert written.endswith(b"\r\n\r\n" + b"x" * 100_000)


def test_a_waiting_body_is_not_read_until_the_request_is_sent() -> None:
    """A POST waiting for a slot is not read (flow control), and its 100-continue is
    not sent; when it goes upstream the client is read again and the body follows.
    """
    setup = make_proxy(max_conns=1)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    b.send(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n")
    assert b.transport.producerState == "paused"
    assert b.take() == b""  # no 100 Continue while waiting
    (upstream,) = setup.endpoint().connections
    upstream.take()
    upstream.respond(OK)
    assert one_response(a).status == 200
    assert b.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b.transport.producerState == "producing"
    b.send(b"abcdef")
    written = upstream.take()
    assert written.startswith(b"POST /b HTTP/1.1\r\n") and written.endswith(b"\r\n\r\nabcdef")


def test_a_retry_finding_the_others_full_waits_in_the_queue() -> None:
    """A GET whose upstream broke, with the other upstream full, waits at the end of
    the queue like a new request, and goes to the other upstream when it is free.
    """
    setup = make_proxy(TWO, max_conns=1)
    a, b, c = setup.client(), setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    get(c, b"/c")
    first, second = setup.endpoint(0).last, setup.endpoint(1).last
    assert (targets_sent(first), targets_sent(second)) == ([b"/a"], [b"/b"])
    first.close(ConnectionLost())  # upstream 0 is out now (max_fails = 1)
    assert a.take() == b""
    assert len(setup.handler.waiting) == 2
    second.respond(OK)
    assert one_response(b).status == 200
    assert targets_sent(second) == [b"/b", b"/c"]  # c waited longer than a's retry
    second.respond(OK)
    assert one_response(c).status == 200
    assert targets_sent(second) == [b"/b", b"/c", b"/a"]
    second.respond(OK)
    assert one_response(a).status == 200


def test_a_retry_that_waits_in_the_queue_says_so() -> None:
    """The failure of a request that goes on to wait for a full upstream is logged as
    such, not as a retry happening now.
    """
    setup = make_proxy(TWO, max_conns=1)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    with capture_log_events() as events:
        setup.endpoint(0).last.close(ConnectionLost())
    assert len(setup.handler.waiting) == 1
    assert [line for line in proxy_log(events) if "left out for" not in line] == [
        "Upstream http://10.0.0.1:9000 failed for GET /a (the connection closed before a"
        " response (Connection to the other side was lost in a non-clean fashion.));"
        " waiting in the queue to retry (the other upstreams are full)"
    ]


def test_a_retry_finding_the_queue_full_is_one_503_line() -> None:
    """A failed request that cannot wait for the full upstream (queue = 0) gets a 503
    whose line says which upstream failed, and no "retrying" line.
    """
    setup = make_proxy(TWO, max_conns=1, queue=0)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    with capture_log_events() as events:
        setup.endpoint(0).last.close(ConnectionLost())
    assert one_response(a).status == 503
    assert [line for line in proxy_log(events) if "left out for" not in line] == [
        "503 for GET /a: upstream http://10.0.0.1:9000, http://10.0.0.2:9000: every upstream"
        " it could use is at max_conns (1) and the queue (0) is full, for a retry after"
        " http://10.0.0.1:9000 failed (the connection closed before a response (Connection"
        " to the other side was lost in a non-clean fashion.))"
    ]


def test_a_503_line_says_why_an_upstream_that_is_not_full_was_not_used() -> None:
    """With one upstream full and the other failing its health check, the 503 line
    does not have both at max_conns.
    """
    setup = make_proxy(TWO, max_conns=1, queue=0)
    setup.handler.group.peers[0].healthy = False
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    with capture_log_events() as events:
        get(b, b"/b")
    assert one_response(b).status == 503
    assert proxy_log(events) == [
        "503 for GET /b: upstream http://10.0.0.1:9000, http://10.0.0.2:9000: every upstream"
        " it could use is at max_conns (1) and the queue (0) is full; it could not use"
        " http://10.0.0.1:9000 (failing its health check)"
    ]


def test_a_waiter_with_no_upstream_left_gets_502() -> None:
    """A waiter whose upstreams all went (active health) gets the 502 of a request
    that finds none, when a slot frees up.
    """
    setup = make_proxy(max_conns=1)
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    get(b, b"/b")
    peer = setup.handler.group.peers[0]
    peer.healthy = False
    setup.endpoint().last.respond(OK)
    assert one_response(a).status == 200
    assert one_response(b).status == 502
    assert not setup.handler.waiting


def test_a_stale_connection_retry_keeps_its_slot() -> None:
    """A request retried on a fresh connection after a stale keep-alive close holds on
    to its slot: the waiter behind it is not sent meanwhile.
    """
    setup = make_proxy(max_conns=1)
    a, b = setup.client(), setup.client()
    get(a, b"/1")
    endpoint = setup.endpoint()
    endpoint.last.respond(OK)
    one_response(a)
    get(a, b"/2")  # on the idle connection
    get(b, b"/b")
    endpoint.connections[0].close(ConnectionDone())
    assert len(endpoint.connections) == 2
    assert targets_sent(endpoint.last) == [b"/2"]
    assert len(setup.handler.waiting) == 1
    assert setup.handler.group.peers[0].active == 1
    endpoint.last.respond(OK)
    assert one_response(a).status == 200
    assert targets_sent(endpoint.last) == [b"/2", b"/b"]


def test_an_open_tunnel_holds_its_slot() -> None:
    """A WebSocket tunnel counts against max_conns while it is open."""
    setup = make_proxy(max_conns=1)
    ws, b = setup.client(), setup.client()
    ws.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    tunnel = setup.endpoint().last
    tunnel.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    assert ws.take().startswith(b"HTTP/1.1 101")
    get(b, b"/b")
    assert len(setup.handler.waiting) == 1
    tunnel.close()
    assert targets_sent(setup.endpoint().last) == [b"/b"]


def test_health_checks_do_not_count_against_max_conns() -> None:
    """A health check in progress takes no slot: a request still goes out, and the
    next one waits for that request only.
    """
    setup = make_proxy(max_conns=1, health_check="/h", health_interval=5.0)
    setup.clock.advance(0)
    endpoint = setup.endpoint()
    (check,) = endpoint.connections
    a, b = setup.client(), setup.client()
    get(a, b"/a")
    assert targets_sent(endpoint.last) == [b"/a"]
    get(b, b"/b")
    assert len(setup.handler.waiting) == 1
    check.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert len(setup.handler.waiting) == 1
    setup.handler.close()


def test_a_waiting_retry_holds_the_rest_of_the_body() -> None:
    """A PUT whose upstream broke mid-body, waiting for the other upstream, stops
    reading the client; once sent there, the kept part and then the rest follow.
    """
    setup = make_proxy(TWO, max_conns=1)
    a, b = setup.client(), setup.client()
    # Expect: 100-continue hands the request to the proxy before its body arrives.
    a.send(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
    a.send(b"x" * 500)
    get(b, b"/b")
    setup.endpoint(0).last.close(ConnectionLost())
    assert len(setup.handler.waiting) == 1
    assert a.transport.producerState == "paused"
    second = setup.endpoint(1).last
    second.respond(OK)
    assert one_response(b).status == 200
    assert a.transport.producerState == "producing"
    a.send(b"y" * 500)
    assert requests_sent(second) == [(b"/b", b""), (b"/a", b"x" * 500 + b"y" * 500)]


def test_connection_limit_options_reach_the_handler() -> None:
    """max_conns goes to the balancer, queue and queue_timeout to the handler."""
    setup = make_proxy(max_conns=4, queue=10, queue_timeout=1.5)
    assert setup.handler.balancer.max_conns == 4
    assert (setup.handler.queue, setup.handler.queue_timeout) == (10, 1.5)


# -- capacity that comes back without a request ending --------------------------------------

WEBSOCKET = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_a_waiter_is_served_when_a_cool_down_ends() -> None:
    """B is out after a failure and A's only slot is held by a tunnel: a request waits
    (queue_timeout 0, no limit). When B's time out ends, nothing is released, but
    the waiter is sent to B then, not left waiting for an unrelated request.
    """
    setup = make_proxy(TWO, max_conns=1, queue_timeout=0.0)
    a_end, b_end = setup.endpoint(0), setup.endpoint(1)
    tunnel = setup.client()
    tunnel.send(WEBSOCKET)
    a_end.last.respond(SWITCHED)
    b_end.refuse = True
    first = setup.client()
    get(first, b"/first")  # B refused: out for fail_timeout (10 s); waits for A
    b_end.refuse = False
    second = setup.client()
    get(second, b"/second")
    assert len(setup.handler.waiting) == 2
    setup.clock.advance(9.9)
    assert not b_end.connections
    setup.clock.advance(0.2)
    assert len(b_end.connections) == 1
    # /first already tried B: it waits for A; /second, fresh, goes to B.
    assert targets_sent(b_end.last) == [b"/second"]
    assert len(setup.handler.waiting) == 1


def test_a_waiter_is_served_when_a_health_check_passes() -> None:
    """B fails its health check, A's only slot is held: a request waits. B passing
    its next check serves the waiter at once.
    """
    setup = make_proxy(TWO, max_conns=1, queue_timeout=0.0, health_check="/h")
    setup.clock.advance(0)
    a_end, b_end = setup.endpoint(0), setup.endpoint(1)
    b_end.last.respond(b"HTTP/1.1 503 Down\r\nContent-Length: 0\r\n\r\n")
    a_end.last.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    tunnel = setup.client()
    tunnel.send(WEBSOCKET)
    a_end.last.respond(SWITCHED)
    waiter = setup.client()
    get(waiter, b"/w")
    assert len(setup.handler.waiting) == 1
    setup.clock.advance(5.0)  # the next checks
    checks = len(b_end.connections)
    b_end.last.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not setup.handler.waiting
    assert len(b_end.connections) == checks + 1
    assert targets_sent(b_end.last) == [b"/w"]


def test_a_waiter_is_served_when_a_probe_succeeds() -> None:
    """A is back from its time out and its probe (a long event stream) gets its head:
    A takes requests again, so the waiter goes there without waiting for a release.
    """
    setup = make_proxy(TWO, max_conns=2, queue_timeout=0.0)
    a_end = setup.endpoint(0)
    a_end.refuse = True
    x = setup.client()
    get(x, b"/x")  # A refused: out for 10 s; /x goes to B
    a_end.refuse = False
    y = setup.client()
    get(y, b"/y")  # B is full now
    setup.clock.advance(11)
    probe = setup.client()
    get(probe, b"/events")  # A's probe: the others wait for its outcome
    waiter = setup.client()
    get(waiter, b"/w")
    assert len(setup.handler.waiting) == 1
    a_end.last.respond(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert not setup.handler.waiting
    assert targets_sent(a_end.last) == [b"/w"]


def test_a_long_queue_failing_at_once_is_answered_without_recursion() -> None:
    """Waiters whose connects fail synchronously (a refused UNIX connect, no file
    descriptors) give their slot back from inside dispatch: every one is answered
    502, none is lost, however long the queue.
    """
    count = 300
    setup = make_proxy(max_conns=1, queue=count, keepalive=0)
    holder = setup.client()
    get(holder, b"/a")
    waiters = [setup.client() for _ in range(count)]
    for waiter in waiters:
        get(waiter, b"/w")
    setup.endpoint().refuse = True
    with capture_log_events() as events:
        setup.endpoint().last.respond(OK)
    assert not [event for event in events if event.get("log_failure") is not None]
    assert one_response(holder).status == 200
    assert [one_response(waiter).status for waiter in waiters] == [502] * count
    assert not setup.handler.waiting
    assert setup.handler.group.peers[0].active == 0


def test_no_descriptor_left_here_is_503_and_not_the_upstreams_failure() -> None:
    """socket() failing with EMFILE is this server's shortage: 503 with Retry-After,
    no retry on another upstream, and no upstream counted as failed (it was never
    reached; two healthy upstreams were left out for it before).
    """
    from twisted.internet.error import ConnectBindError

    setup = make_proxy(("http://10.0.0.1:9000", "http://10.0.0.2:9000"), max_fails=1)
    first, second = setup.endpoint(0), setup.endpoint(1)
    first.error = second.error = ConnectBindError(24, "Too many open files")
    client = setup.client()
    with capture_log_events() as events:
        client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    response = one_response(client)
    assert response.status == 503
    assert response.header(b"retry-after") == b"1"
    assert response.body == b"Service Unavailable: the server is overloaded, try again later\n"
    assert first.attempts + second.attempts == 1
    assert not any("left out" in formatEvent(event) for event in events)
    assert any("cannot open a socket: Too many open files" in formatEvent(e) for e in events)
    assert all(peer.fails == 0 for peer in setup.handler.group.peers)


def test_a_health_check_that_cannot_get_a_socket_gives_no_verdict() -> None:
    """Out of descriptors here, a check learns nothing about the upstream: it stays as
    it was, and the next check runs at the next interval.
    """
    from twisted.internet.error import ConnectBindError

    setup = make_proxy(("http://10.0.0.1:9000",), health_check="/h", health_interval=2.0)
    endpoint = setup.endpoint()
    endpoint.error = ConnectBindError(24, "Too many open files")
    with capture_log_events() as events:
        setup.clock.advance(0)
        setup.clock.advance(2.1)  # past the check's own deadline too
    assert setup.handler.group.peers[0].healthy
    assert not any("failed its health check" in formatEvent(event) for event in events)
    assert endpoint.attempts == 2  # the next check ran at the interval
    setup.handler.close()


def test_no_descriptor_left_before_connecting_by_host_name_is_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of descriptors, an upstream named by host name cannot even be resolved
    (Twisted's resolver thread fails and the attempt would time out, blamed on the
    upstream): the shortage is seen before connecting and answered as this server's.
    """
    import errno
    import os

    setup = make_proxy(("http://app.internal:9000",), max_fails=1)
    client = setup.client()
    real_open = os.open

    def exhausted(path: Any, *args: Any, **kwargs: Any) -> int:
        if path == os.devnull:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", exhausted)
    client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    monkeypatch.undo()
    response = one_response(client)
    assert response.status == 503
    assert setup.endpoint().attempts == 0
    assert setup.handler.group.peers[0].fails == 0


# -- what the access log learns ---------------------------------------------------------------


UPSTREAM_LOG = '"$request" $status $upstream_addr ${upstream_status}'


def logging_proxy(
    urls: tuple[str, ...] = ("http://10.0.0.1:9000",), access_log_format: str = UPSTREAM_LOG
) -> tuple[Setup, Connection, list[HTTP11Exchange | Refusal]]:
    """A proxy whose access log writes ``access_log_format``, a client, and what it logs."""
    setup = make_proxy(urls, access_log_format=access_log_format)
    logged: list[HTTP11Exchange | Refusal] = []
    return setup, setup.client(response_log=logged.append), logged


def upstream_notes(entry: HTTP11Exchange | Refusal) -> tuple[str | None, ...]:
    """$upstream_addr, $upstream_status, $upstream_response_time, as left on an entry."""
    notes = entry.log_notes
    assert notes is not None
    names = ("upstream_addr", "upstream_status", "upstream_response_time")
    return tuple(notes.get(name) for name in names)


def test_nothing_is_noted_for_an_access_log_that_writes_no_upstream_variable() -> None:
    """Noting costs each proxied request time: only done when the format asks."""
    setup, client, logged = logging_proxy(access_log_format='"$request" $status $request_time')
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(OK)
    assert one_response(client).status == 200
    assert [entry.log_notes for entry in logged] == [None]


def test_the_upstreams_tried_are_left_for_the_access_log() -> None:
    """As nginx's $upstream_addr, $upstream_status and $upstream_response_time: each
    upstream tried, with its status (502 for the one that broke first) and time.
    """
    setup, client, logged = logging_proxy(TWO)
    client.send(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(0.25)
    setup.endpoint(0).last.close(ConnectionLost())
    setup.clock.advance(1.5)
    setup.endpoint(1).last.respond(OK)
    assert one_response(client).status == 200
    assert [upstream_notes(entry) for entry in logged] == [
        ("10.0.0.1:9000, 10.0.0.2:9000", "502, 200", "0.250, 1.500")
    ]


def test_a_timed_out_upstream_is_noted_504_and_a_client_gone_first_as_a_dash() -> None:
    setup, client, logged = logging_proxy()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(31)
    assert one_response(client).status == 504
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.clock.advance(2)
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert [upstream_notes(entry) for entry in logged] == [
        ("10.0.0.1:9000", "504", "31.000"),
        ("10.0.0.1:9000", "-", "2.000"),
    ]


def test_a_tunnel_is_noted_101_for_its_whole_length() -> None:
    setup, client, logged = logging_proxy()
    client.send(WEBSOCKET_UPGRADE)
    setup.endpoint().last.respond(SWITCHED)
    setup.clock.advance(7)
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert [upstream_notes(entry) for entry in logged] == [("10.0.0.1:9000", "101", "7.000")]


def test_a_switch_to_a_protocol_not_asked_for_is_noted_502() -> None:
    setup, client, logged = logging_proxy()
    client.send(WEBSOCKET_UPGRADE)
    setup.endpoint().last.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    )
    assert one_response(client).status == 502
    assert upstream_notes(logged[0])[1] == "502"


def test_a_unix_socket_path_outside_ascii_is_noted_as_its_bytes() -> None:
    """A path with any characters is written, escaped as nginx escapes its bytes (the
    line was lost: the log encoded the path as Latin-1).
    """
    setup, client, logged = logging_proxy(("unix:/run/сокет.sock",))
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(OK)
    [entry] = logged
    line = LogFormat("$upstream_addr").format(entry, 0.0)
    assert line == escape("unix:/run/сокет.sock".encode())


# -- proxy_set_header -------------------------------------------------------------------------


def config_value(name: str, raw: Any) -> Any:
    """``raw`` as the mount key ``name`` parses it from a configuration file."""
    return next(key for key in MOUNT_KEYS if key.name == name).parse(raw)


def test_proxy_set_header_replaces_the_clients_fields() -> None:
    """Each field replaces every line of its name the client sent (names without
    case), with the request's values put in; an empty value sends none, and so does
    one whose variables are all empty.
    """
    setup = make_proxy(
        proxy_set_header=config_value(
            "proxy_set_header",
            {
                "X-Real-IP": "$remote_addr",
                "x-request-line": "$request_method $request_uri $server_protocol $scheme",
                "Authorization": "",
                "X-Copy": "$http_x_source",
                "X-Missing": "$http_x_absent",
            },
        )
    )
    client = setup.client()
    client.send(
        b"GET /a?b HTTP/1.1\r\nHost: x\r\nx-real-ip: 6.6.6.6\r\nX-Real-IP: 7.7.7.7\r\n"
        b"Authorization: Basic secret\r\nX-Source: from client\r\nX-Kept: yes\r\n\r\n"
    )
    upstream = setup.endpoint().last
    assert upstream.header(b"x-real-ip") == [b"127.0.0.1"]
    assert upstream.header(b"x-request-line") == [b"GET /a?b HTTP/1.1 http"]
    assert upstream.header(b"authorization") == []
    assert upstream.header(b"x-copy") == [b"from client"]
    assert upstream.header(b"x-missing") == []
    assert upstream.header(b"x-kept") == [b"yes"]
    assert upstream.header(b"x-forwarded-for") == [b"127.0.0.1"]  # the proxy's own, still


def test_proxy_set_header_may_replace_host_and_the_forwarding_fields() -> None:
    setup = make_proxy(
        proxy_set_header=config_value(
            "proxy_set_header",
            {"Host": "internal.example", "X-Forwarded-For": "$remote_addr", "Forwarded": ""},
        )
    )
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
    upstream = setup.endpoint().last
    assert upstream.header(b"host") == [b"internal.example"]
    assert upstream.header(b"x-forwarded-for") == [b"127.0.0.1"]
    assert upstream.header(b"forwarded") == []
    assert upstream.header(b"x-forwarded-proto") == [b"http"]


def test_a_value_cannot_break_the_field_line() -> None:
    r"""A control byte in a value (a forwarded client field cannot hold one, but a
    certificate's name might) is written as \xHH, in one field line.
    """
    request = request_head(ClientCertificate("SUCCESS", subject="CN=a\r\nX-Admin: 1"))
    rendered = RequestTemplate("$ssl_client_s_dn").render(request)
    assert rendered == b"CN=a\\x0D\\x0AX-Admin: 1"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"Content-Length": "1"}, "is the proxy's to set"),
        ({"Transfer-Encoding": "chunked"}, "is the proxy's to set"),
        ({"Connection": "close"}, "is the proxy's to set"),
        ({"Content_Length": "1"}, "is the proxy's to set"),
        ({"Upgrade": "$http_upgrade"}, "passed on by itself"),
        ({"X-A": "1", "X_A": "2"}, "is given twice"),
        ({"X-A": "1", "x-a": "2"}, "is given twice"),
        ({"Bad Name": "1"}, "is not a header name"),
        ({"X-A": "$status"}, "unknown variable $status here"),
        ({"X-A": "$nonsense"}, "unknown variable $nonsense here"),
        ({"X-A": 5}, "is not text"),
        ({"X-A": "a\nb"}, "X-A"),
        ("X-A: 1", "expected a table"),
    ],
)
def test_proxy_set_header_mistakes_are_named(table: Any, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        config_value("proxy_set_header", table)
    assert problem in str(raised.value)


def test_check_config_shows_the_table_as_a_file_writes_it(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[server]\nlisten = ["tcp:0"]\n[[host]]\nnames = ["a.test"]\n[[host.mount]]\n'
        'path = "/api"\nproxy = "http://127.0.0.1:9000"\n'
        'proxy_set_header = { X-Real-IP = "$remote_addr", Authorization = "" }\n'
        'headers = { X-Frame-Options = "DENY" }\n'
    )
    shown = describe_routing(cli.load_config({"config": str(site)})).splitlines()[-1].strip()
    assert shown == (
        'headers={X-Frame-Options = "DENY"}'
        ' proxy_set_header={X-Real-IP = "$remote_addr", Authorization = ""}'
    )


def test_a_client_cannot_pass_its_own_value_with_underscores() -> None:
    """X_Client_DN is X-Client-DN to a CGI-style upstream (Rack, PHP): it is replaced
    as the dashed name is, whatever its case.
    """
    setup = make_proxy(
        proxy_set_header=config_value(
            "proxy_set_header", {"X-Client-DN": "$ssl_client_s_dn", "X-Auth-User": "fixed"}
        )
    )
    client = setup.client()
    client.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nX_Client_DN: CN=admin\r\nx_auth_USER: root\r\n"
        b"AUTHORIZATION: Basic a\r\n\r\n"
    )
    upstream = setup.endpoint().last
    sent = upstream.transport.value().lower()
    assert b"cn=admin" not in sent and b"root" not in sent
    assert upstream.header(b"x-auth-user") == [b"fixed"]


def test_names_are_compared_without_case_against_the_clients() -> None:
    setup = make_proxy(proxy_set_header=config_value("proxy_set_header", {"authorization": ""}))
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nAUTHORIZATION: Basic a\r\n\r\n")
    assert setup.endpoint().last.header(b"authorization") == []


def test_text_and_values_go_as_utf8_and_repeated_fields_are_joined() -> None:
    """The configuration's text as UTF-8, as nginx sends it; a field the client sent
    twice, both lines (nginx 1.23+), Cookie with "; ".
    """
    setup = make_proxy(
        proxy_set_header=config_value(
            "proxy_set_header",
            {
                "X-Snow": "☃ café $host",
                "X-Chain": "$http_x_forwarded_for, $remote_addr",
                "X-Cookies": "$http_cookie",
            },
        ),
        trusted=("127.0.0.0/8",),
    )
    client = setup.client()
    client.send(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\n\r\n"
    )
    upstream = setup.endpoint().last
    assert upstream.header(b"x-snow") == ["☃ café x".encode()]
    assert upstream.header(b"x-chain") == [b"1.1.1.1, 2.2.2.2, 127.0.0.1"]
    assert upstream.header(b"x-cookies") == [b"a=1; b=2"]


def test_the_host_template_uses_the_auth_basic_user_and_falls_back_when_empty(
    tmp_path: Path,
) -> None:
    setup = make_proxy(
        ("http://backend.internal:9000",),
        preserve_host=False,
        proxy_set_header=config_value(
            "proxy_set_header", {"Host": "$http_x_target", "X-User": "$remote_user"}
        ),
    )
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    assert upstream.header(b"host") == [b"backend.internal:9000"]
    assert upstream.header(b"x-user") == []
    rendered = RequestTemplate("user=$remote_user").render(request_head(None), "zoë")
    assert rendered == "user=zoë".encode()


def test_nginx_usual_forwarding_lines_carry_over() -> None:
    """proxy_set_header as nginx configurations write it; $proxy_add_x_forwarded_for
    keeps a client's X-Forwarded-For only from a trusted proxy, as the proxy's own.
    """
    usual = config_value(
        "proxy_set_header",
        {
            "Host": "$host",
            "X-Real-IP": "$remote_addr",
            "X-Forwarded-For": "$proxy_add_x_forwarded_for",
            "X-Forwarded-Proto": "$scheme",
        },
    )
    for trusted, expected in (
        (("127.0.0.0/8",), b"203.0.113.9, 10.0.0.9, 127.0.0.1"),
        ((), b"127.0.0.1"),
    ):
        setup = make_proxy(proxy_set_header=usual, trusted=trusted)
        client = setup.client()
        client.send(
            b"GET / HTTP/1.1\r\nHost: Shop.Example:8443\r\nX-Forwarded-For: 203.0.113.9\r\n"
            b"X-Forwarded-For: 10.0.0.9\r\n\r\n"
        )
        upstream = setup.endpoint().last
        assert upstream.header(b"x-forwarded-for") == [expected]
        assert upstream.header(b"x-real-ip") == [b"127.0.0.1"]
        assert upstream.header(b"x-forwarded-proto") == [b"http"]
        assert upstream.header(b"host") == [b"shop.example"]


def test_proxy_add_x_forwarded_for_is_the_proxys_own_field() -> None:
    """Without the zone of a link-local IPv6 client; a client's X_Forwarded_For
    spelling is not one of its X-Forwarded-For lines, even from a trusted proxy.
    """
    request = request_head(
        None,
        headers=[(b"X_Forwarded_For", b"6.6.6.6"), (b"x-forwarded-for", b"1.1.1.1")],
        peer=("fe80::1%eth0", 5),
    )
    template = RequestTemplate("$proxy_add_x_forwarded_for")
    link_local = TrustedProxies(["fe80::/10"])
    assert template.render(request, proxies=link_local) == b"1.1.1.1, fe80::1"
    assert template.render(request) == b"fe80::1"
    assert request_fields(request, trusted=True).count(b"X-Forwarded-For: 1.1.1.1, fe80::1") == 1


def test_request_id_names_the_request_in_the_log_and_upstream() -> None:
    """Nginx's $request_id: 32 random hex digits, the same for the access log line
    and a proxied X-Request-ID, another for the next request.
    """
    setup = make_proxy(
        access_log_format="$request_id",
        proxy_set_header=config_value("proxy_set_header", {"X-Request-ID": "$request_id"}),
    )
    logged: list[Any] = []
    client = setup.client(response_log=logged.append)
    sent = []
    for _ in range(2):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream = setup.endpoint().last
        [value] = upstream.header(b"x-request-id")
        sent.append(value.decode())
        upstream.respond(OK)
        upstream.take()
    template = LogFormat("$request_id")
    assert [template.format(response, 0.0) for response in logged] == sent
    assert len(set(sent)) == 2
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in sent)


# -- X-Accel-Redirect from an upstream ------------------------------------------------------


def accel_proxy(tmp_path: Path, **options: Any) -> tuple[Setup, bytes]:
    """A proxy mount with x_accel_redirect, in front of an internal static mount at
    /protected serving a small file; the file's content.
    """
    root = tmp_path / "protected"
    root.mkdir(parents=True)
    content = bytes(range(256)) * 8
    (root / "report.pdf").write_bytes(content)
    setup = make_proxy(**options)
    options = {**default_options("static"), "internal": True}
    static = StaticHandler(StaticOptions.from_mount(str(root), options), now=setup.clock.seconds)
    mount = MountConfig("/protected", "static", str(root), options, "test static mount")
    setup.handler.accel = _accel_resolver([(mount, static)])
    return setup, content


ACCEL = (
    b"HTTP/1.1 200 OK\r\nX-Accel-Redirect: /protected/report.pdf\r\n"
    b"Content-Type: application/pdf\r\nContent-Disposition: attachment\r\n"
    b"Content-Length: 20\r\n\r\n"
)


def test_an_upstreams_x_accel_redirect_serves_the_file(tmp_path: Path) -> None:
    """Nginx's X-Accel-Redirect: the static mount's file in place of the upstream's
    body, with the upstream's other fields and ranges; the upstream's body is read
    and dropped, and its connection goes back to the pool.
    """
    setup, content = accel_proxy(tmp_path)
    client = setup.client()
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(ACCEL + b"not the file body...")
    response = one_response(client)
    assert response.status == 200
    assert response.body == content
    assert response.header(b"content-disposition") == b"attachment"
    assert response.header(b"content-type") == b"application/pdf"
    assert response.header(b"x-accel-redirect") is None
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n")
    assert setup.endpoint().last is upstream  # the same connection, kept
    upstream.respond(ACCEL + b"not the file body...")
    ranged = one_response(client)
    assert (ranged.status, ranged.body) == (206, content[10:20])
    assert setup.handler.group.peers[0].active == 0


def test_an_upstreams_x_accel_redirect_before_its_body_came(tmp_path: Path) -> None:
    """The head alone: the file goes out at once; the body that follows is dropped
    and the connection is free once it ends.
    """
    setup, content = accel_proxy(tmp_path)
    client = setup.client()
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(ACCEL)
    assert one_response(client).body == content
    assert setup.handler.group.peers[0].active == 1  # its body is still to come
    upstream.respond(b"not the file body...")
    assert setup.handler.group.peers[0].active == 0
    assert setup.handler.group.peers[0].target.idle == [upstream.protocol]
    assert client.take() == b""


def test_an_x_accel_redirect_to_no_file_is_404_and_without_the_option_passes(
    tmp_path: Path,
) -> None:
    setup, _ = accel_proxy(tmp_path)
    client = setup.client()
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        ACCEL.replace(b"/protected/report.pdf", b"/elsewhere/x") + b"not the file body..."
    )
    assert one_response(client).status == 404
    hiding, content = accel_proxy(tmp_path / "hiding", proxy_hide_header=("X-Accel-Redirect",))
    client = hiding.client()
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    lower = ACCEL.replace(b"X-Accel-Redirect", b"x-accel-redirect")  # any case
    hiding.endpoint().last.respond(lower + b"not the file body...")
    assert one_response(client).body == content  # acted on, hidden or not
    plain = make_proxy()  # x_accel_redirect off: the upstream's answer as it is
    client = plain.client()
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    plain.endpoint().last.respond(ACCEL + b"not the file body...")
    response = one_response(client)
    assert response.body == b"not the file body..."
    assert response.header(b"x-accel-redirect") == b"/protected/report.pdf"


def test_a_proxy_mount_with_x_accel_redirect_is_wired_to_the_hosts_static_mounts(
    tmp_path: Path,
) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a\n")
    site = tmp_path / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n"
        f"[[host.mount]]\npath = '/protected'\nstatic = '{tmp_path / 'files'}'\n"
        "internal = true\n"
        "[[host.mount]]\npath = '/'\nproxy = 'http://127.0.0.1:9000'\nx_accel_redirect = true\n"
    )
    clock = Clock()
    builder = SiteBuilder(
        reactor=clock, threadpool=SynchronousThreadPool(), builders=standard_builders(clock)
    )
    table = builder.build(cli.load_config({"config": str(site)}))
    handler = table.hosts.lookup("a.test").lookup(b"/x").target  # type: ignore[union-attr]
    assert isinstance(handler, ProxyHandler) and handler.accel is not None
    found = handler.accel(b"x-accel-redirect", b"/protected/a.txt")
    assert found is not None
    static, path = found
    assert isinstance(static, StaticHandler) and path == b"/a.txt"


def test_an_x_accel_answer_before_the_request_body_ended_drops_the_connection(
    tmp_path: Path,
) -> None:
    """The rest of the body is not sent on: the connection cannot be kept, and its
    slot is free at once (not after idle_timeout).
    """
    setup, content = accel_proxy(tmp_path)
    client = setup.client(HttpSettings(max_body=0))
    client.send(
        b"POST /download HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 100_000
    )
    upstream = setup.endpoint().last
    upstream.respond(
        b"HTTP/1.1 200 OK\r\nX-Accel-Redirect: /protected/report.pdf\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert content in client.take()
    assert upstream.closed()
    assert setup.handler.group.peers[0].active == 0


def test_a_large_body_beside_x_accel_is_not_drained(tmp_path: Path) -> None:
    """Past ACCEL_DRAIN_LIMIT of the upstream's own body the connection goes."""
    setup, content = accel_proxy(tmp_path)
    client = setup.client()
    client.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(ACCEL.replace(b"Content-Length: 20", b"Content-Length: 10000000"))
    assert one_response(client).body == content
    upstream.respond(b"x" * ACCEL_DRAIN_LIMIT)
    assert not upstream.closed() and setup.handler.group.peers[0].active == 1
    upstream.respond(b"x")
    assert upstream.closed() and setup.handler.group.peers[0].active == 0


def test_an_x_accel_redirect_in_a_1xx_or_101_is_not_passed(tmp_path: Path) -> None:
    """There is no file to serve there, and the internal path is not the client's."""
    setup, _ = accel_proxy(tmp_path)
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    setup.endpoint().last.respond(
        SWITCHED.replace(b"\r\n\r\n", b"\r\nX-Accel-Redirect: /protected/report.pdf\r\n\r\n")
    )
    assert b"X-Accel-Redirect" not in client.take()
    setup, _ = accel_proxy(tmp_path / "interim")
    client = setup.client()
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nX-Accel-Redirect: /protected/x\r\n\r\n"
    )
    head = client.take()
    assert head.startswith(b"HTTP/1.1 103 ") and b"X-Accel-Redirect" not in head


# -- proxy_intercept_errors ----------------------------------------------------------------

MAINTENANCE = ErrorPage("50x.html", b"text/html; charset=utf-8", b"<h1>Back soon</h1>\n")
SIGN_IN = ErrorPage("401.html", b"text/html; charset=utf-8", b"<h1>Please sign in</h1>\n")


def intercepting(**options: Any) -> Setup:
    return make_proxy(
        routed=True,
        error_pages={503: MAINTENANCE, 502: MAINTENANCE, 401: SIGN_IN},
        proxy_intercept_errors=True,
        **options,
    )


def test_an_upstream_error_with_a_page_gets_the_page() -> None:
    """As nginx's proxy_intercept_errors: the host's page, the status kept, Retry-After
    kept, the upstream's other fields and body dropped; its connection, whose body was
    read whole, serves the next request.
    """
    setup = intercepting()
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 30\r\n"
        b"X-Debug: traceback\r\nContent-Length: 9\r\n\r\ndebug: no"
    )
    response = one_response(client)
    assert (response.status, response.body) == (503, MAINTENANCE.body)
    assert response.header(b"content-type") == MAINTENANCE.content_type
    assert response.header(b"retry-after") == b"30"
    assert response.header_values(b"x-debug") == []
    client.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(setup.endpoint().connections) == 1
    upstream.respond(OK)
    assert one_response(client).body == b"ok"


def test_a_401_keeps_its_challenge_and_head_gets_no_body() -> None:
    setup = intercepting()
    client = setup.client()
    client.send(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="api"\r\n'
        b"Content-Length: 12\r\n\r\n"
    )
    response = one_response(client, b"HEAD")
    assert (response.status, response.body) == (401, b"")
    assert response.header(b"content-length") == b"%d" % len(SIGN_IN.body)
    assert response.header(b"www-authenticate") == b'Bearer realm="api"'


@pytest.mark.parametrize(
    "answer",
    [
        OK,
        b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops",  # no page for 500
        b"HTTP/1.1 301 Moved\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_answers_without_a_page_pass_unchanged(answer: bytes) -> None:
    setup = intercepting()
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(answer)
    response = one_response(client)
    assert response.body == h11_body(answer)
    assert response.header(b"content-type") != MAINTENANCE.content_type


def h11_body(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


def test_interception_is_off_by_default() -> None:
    setup = make_proxy(routed=True, error_pages={503: MAINTENANCE})
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(b"HTTP/1.1 503 No\r\nContent-Length: 4\r\n\r\nbusy")
    assert one_response(client).body == b"busy"


def test_a_long_error_body_is_not_read_to_its_end() -> None:
    """Past ACCEL_DRAIN_LIMIT the connection is closed rather than read on."""
    setup = intercepting()
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    size = ACCEL_DRAIN_LIMIT * 4
    upstream.respond(b"HTTP/1.1 502 Bad\r\nContent-Length: %d\r\n\r\n" % size)
    assert one_response(client).body == MAINTENANCE.body
    assert not upstream.closed()
    upstream.respond(b"x" * (ACCEL_DRAIN_LIMIT + 1))
    assert upstream.closed()


def test_an_error_answered_before_the_body_ended_closes_the_upstream() -> None:
    """The rest of the request body is not sent: the connection cannot be reused."""
    setup = intercepting()
    client = setup.client()
    client.send(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n")
    client.take()
    client.send(b"four")
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n")
    assert upstream.closed()
    client.send(b"more")
    assert one_response(client, b"PUT").body == MAINTENANCE.body


def test_the_page_is_noted_with_the_upstreams_status() -> None:
    setup = intercepting(access_log_format=UPSTREAM_LOG)
    logged: list[HTTP11Exchange | Refusal] = []
    client = setup.client(response_log=logged.append)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n")
    one_response(client)
    assert [(entry.status, upstream_notes(entry)[1]) for entry in logged] == [(503, "503")]


@pytest.mark.parametrize(
    ("status", "field"),
    [
        (426, b"Upgrade: TLS/1.2, HTTP/1.1"),
        (407, b"Proxy-Authenticate: Basic realm=x"),
        (416, b"Content-Range: bytes */100"),
        (405, b"Allow: GET, HEAD"),
    ],
)
def test_the_fields_of_the_status_stay_with_the_page(status: int, field: bytes) -> None:
    """RFC 9110 has these sent with their statuses (a 426 MUST name its protocols)."""
    page = ErrorPage("e.html", b"text/html", b"<h1>error</h1>\n")
    setup = make_proxy(routed=True, error_pages={status: page}, proxy_intercept_errors=True)
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 %d X\r\n%b\r\nContent-Length: 0\r\n\r\n" % (status, field)
    )
    response = one_response(client)
    name, value = field.split(b": ", 1)
    assert (response.body, response.header(name.lower())) == (page.body, value)


def test_an_error_with_x_accel_redirect_gets_the_page_as_in_nginx(tmp_path: Path) -> None:
    """The error is intercepted before X-Accel-Redirect is looked at, as in nginx."""
    root = tmp_path / "protected"
    root.mkdir()
    (root / "f").write_bytes(b"FILE")
    setup = intercepting()
    options = {**default_options("static"), "internal": True}
    static = StaticHandler(StaticOptions.from_mount(str(root), options), now=setup.clock.seconds)
    mount = MountConfig("/protected", "static", str(root), options, "s")
    setup.handler.accel = _accel_resolver([(mount, static)])
    client = setup.client()
    client.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 503 No\r\nX-Accel-Redirect: /protected/f\r\nContent-Length: 0\r\n\r\n"
    )
    response = one_response(client)
    assert (response.status, response.body) == (503, MAINTENANCE.body)


def test_a_slot_others_wait_for_is_not_held_to_drain_an_error_body() -> None:
    """With requests waiting for the upstream (max_conns), its connection is closed
    rather than read to the end of a body nobody reads: the next request goes now.
    """
    setup = intercepting(max_conns=1)
    first, second = setup.client(), setup.client()
    first.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    second.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(setup.handler.waiting) == 1
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 503 No\r\nContent-Length: 1000\r\n\r\nxx")
    assert one_response(first).body == MAINTENANCE.body
    assert upstream.closed()
    setup.endpoint().last.respond(OK)
    assert one_response(second).body == b"ok"


# -- request smuggling: what the upstream parses is what the client sent --------------------

# Hop-by-hop fields (RFC 9110 7.6.1) a client may send: none may reach the upstream.
_CLIENT_HOP_FIELDS = (b"keep-alive", b"proxy-connection", b"te", b"trailer")


@dataclass
class SeenRequest:
    """One request as an h11 server parsed it (the client's, or what reached an upstream)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def path_and_query(self) -> tuple[bytes | None, bytes | None]:
        """The percent-decoded path without dot-segments, and the raw query.

        The query is ``None`` without a ``?``. A path with dot-segments may go
        upstream normalised (docs/proxy.md, path mapping): both mean the same.
        """
        path, mark, query = self.target.partition(b"?")
        return remove_dot_segments(urllib.parse.unquote_to_bytes(path)), query if mark else None


def h11_requests(conversation: h11.Connection, data: bytes) -> list[SeenRequest]:
    """The requests ``data`` completes on an h11 server connection, in order (each answered)."""
    peer = H11Peer(conversation)
    peer.receive(data, early=False)
    return peer.requests


class H11Peer:
    """An h11 server reading one connection's bytes, answering each request ``200``.

    Args:
        conversation: the h11 server connection.

    Attributes:
        requests: the requests seen so far (the last one's body may be unfinished).
        answers: the answers due, one per request, as raw bytes to deliver.
        answered_early: whether a request was answered before its body ended.
    """

    def __init__(self, conversation: h11.Connection) -> None:
        self.conversation = conversation
        self.requests: list[SeenRequest] = []
        self.answers: list[bytes] = []
        self.answered_early = False
        self._answered = False

    def receive(self, data: bytes, *, early: bool) -> None:
        """Parse ``data``; with ``early``, answer a request whose body has not all come
        yet at once (as an upstream refusing an upload does, RFC 9110 15.5.14).
        """
        conversation = self.conversation
        if data:  # (no bytes would tell h11 the connection closed)
            conversation.receive_data(data)
        while True:
            event = conversation.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if early and not self._answered and conversation.their_state is h11.SEND_BODY:
                    self.answered_early = True
                    self._answer()
                return
            if isinstance(event, h11.Request):
                self.requests.append(SeenRequest(event.method, event.target, list(event.headers)))
                self._answered = False
            elif isinstance(event, h11.Data):
                self.requests[-1].body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if not self._answered:
                    self._answer()
                if conversation.our_state is h11.MUST_CLOSE:
                    return  # (either side asked to close: nothing may follow)
                conversation.start_next_cycle()
            else:
                raise AssertionError(event)

    def _answer(self) -> None:
        self._answered = True
        conversation = self.conversation
        answer = conversation.send(
            h11.Response(status_code=200, headers=[(b"Content-Length", b"0")])
        )
        answer = (answer or b"") + (conversation.send(h11.EndOfMessage()) or b"")
        self.answers.append(answer)


def relay_through_proxy(
    reads: list[bytes], methods: list[bytes], *, early: bool = False
) -> list[SeenRequest]:
    """Send ``reads`` from one client through a proxy; each upstream request gets 200.

    Args:
        reads: the client's bytes, read by read.
        methods: the method of each request in them: each must be answered 200.
        early: the upstream answers each request at its head, before its body (an
            upstream refusing an upload does): the body's rest is unwanted.

    Returns:
        What h11 as a server makes of the bytes each upstream connection carried,
        in the order the upstream saw them. Every upstream connection is checked
        to hold nothing past its requests (a leftover byte would be the start of a
        request the client never sent), and one that answered a request early to
        be closed, not given to the next request (RFC 9112 9.3, 9.6).
    """
    setup = make_proxy()
    client = setup.client()
    peers: dict[int, tuple[H11Peer, int]] = {}
    seen: list[SeenRequest] = []

    def answer_requests() -> None:
        answered = True
        while answered:
            answered = False
            for upstream in setup.endpoint().connections if setup.endpoints else ():
                peer, offset = peers.get(id(upstream), (H11Peer(h11.Connection(h11.SERVER)), 0))
                written = upstream.transport.value()
                peers[id(upstream)] = (peer, len(written))
                known = len(peer.requests)
                peer.receive(written[offset:], early=early)
                seen.extend(peer.requests[known:])
                answers, peer.answers = peer.answers, []
                for answer in answers:
                    if not upstream.closed():
                        upstream.respond(answer)
                    answered = True

    for read in reads:
        client.send(read)
        answer_requests()
    responses = parse_responses(client.take(), methods, complete=False)
    assert [response.status for response in responses if response.status >= 200] == [
        200 for _ in methods
    ]
    for upstream in setup.endpoint().connections if setup.endpoints else ():
        peer, _offset = peers[id(upstream)]
        if peer.answered_early:
            assert upstream.closed()
        else:
            assert peer.conversation.their_state in (h11.IDLE, h11.MUST_CLOSE)
        assert peer.conversation.trailing_data == (b"", False)
    return seen


def assert_forwarded_as_sent(
    expected: list[SeenRequest], seen: list[SeenRequest], *, early: bool = False
) -> None:
    """Each request reached the upstream once, as sent, with no hop-by-hop field.

    With ``early`` (answered at its head), a body may have been cut short.
    """
    assert len(seen) == len(expected)
    for sent, forwarded in zip(expected, seen, strict=True):
        assert forwarded.method == sent.method
        assert forwarded.path_and_query() == sent.path_and_query()
        if not early:
            assert forwarded.body == sent.body
        assert sent.body.startswith(forwarded.body)
        names = {name for name, _value in forwarded.headers}
        assert not names & set(_CLIENT_HOP_FIELDS), forwarded.headers
        assert b"expect" not in names  # answered by the proxy (RFC 9110 10.1.1)
        options = {
            option.strip().lower()
            for name, value in sent.headers
            if name == b"connection"
            for option in value.split(b",")
        }
        named = options - {b"", b"close", b"keep-alive", b"upgrade", b"host", b"content-length"}
        assert not names & named, (named, forwarded.headers)
        for name, value in forwarded.headers:
            if name == b"connection":
                assert value.lower() == b"upgrade", forwarded.headers
            if name == b"transfer-encoding":
                assert value == b"chunked"


@pytest.mark.parametrize("case", CORPUS_VALID, ids=[case.name for case in CORPUS_VALID])
def test_each_valid_corpus_request_reaches_the_upstream_as_sent(case: Valid) -> None:
    """Every request of the server's valid corpus (pipelined ones too) reaches the
    upstream once, with its method, path, query and body, and nothing hop-by-hop.
    """
    methods = [str(expect.get("REQUEST_METHOD", "GET")).encode() for expect in case.expect]
    seen = relay_through_proxy([case.raw], methods)
    assert len(seen) == len(case.expect)
    for expect, forwarded in zip(case.expect, seen, strict=True):
        if "REQUEST_METHOD" in expect:
            assert forwarded.method == str(expect["REQUEST_METHOD"]).encode()
        assert forwarded.body == expect["body"]
        path, query = forwarded.path_and_query()
        if isinstance(expect.get("PATH_INFO"), str):
            assert path == str(expect["PATH_INFO"]).encode("latin-1")
        if isinstance(expect.get("QUERY_STRING"), str):
            assert (query or b"") == str(expect["QUERY_STRING"]).encode("latin-1")
        names = {name for name, _value in forwarded.headers}
        assert not names & {*_CLIENT_HOP_FIELDS, b"expect"}
        # A protocol upgrade is passed on (RFC 9110 7.8), with nothing else in Connection.
        assert all(
            value == b"upgrade" for name, value in forwarded.headers if name == b"connection"
        )


_TOKEN_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")
# Bytes a path segment or query may hold as they are (RFC 3986 3.3, 3.4), percent
# escapes included: what the proxy must pass on without changing what they decode to.
_PATH_PIECES = (b"/a", b"%2F", b"%25", b"/%2e", b";p=1", b"/..", b"//", b"/!$&'()*+,:@~")
_QUERY_PIECES = (b"a=1", b"&", b"?", b"/", b"%20", b"b=%26", b"=", b"%", b"'")
_EXTRA_FIELDS = (
    b"Keep-Alive: timeout=5",
    b"Proxy-Connection: keep-alive",
    b"TE: trailers",
    b"Trailer: X-Sum",
    b"Connection: keep-alive",
    b"Connection: X-Secret",
    b"Connection: x-secret, te",
    b"X-Secret: 1",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Expect: 100-continue",
    b"X_Forwarded_For: 1.2.3.4",
    b"Transfer-Encoding: chunked",  # on a request without a body: framed as chunked
)


# Bodies: short ones, ones that spell a request or a last chunk (RFC 9112 11.2), and
# one well past the proxy's replay limit, which streams upstream as it comes (so an
# upstream may answer before its end).
_BODIES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from((b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n", b"0\r\n\r\n")),
    st.just(b"x" * (3 * REPLAY_LIMIT)),
)


@st.composite
def pipelined_requests(draw: st.DrawFn) -> list[bytes]:
    """One client connection's bytes: a few valid requests, split into reads."""
    stream = b""
    for _ in range(draw(st.integers(1, 3))):
        method = draw(st.sampled_from(_TOKEN_METHODS))
        # Deep enough that four dot-segments never climb above the root (a 404).
        pieces = draw(st.lists(st.sampled_from(_PATH_PIECES), max_size=4))
        path = b"/1/2/3/4" + b"".join(pieces)
        if draw(st.booleans()):
            path += b"?" + b"".join(draw(st.lists(st.sampled_from(_QUERY_PIECES), max_size=4)))
        fields = draw(st.lists(st.sampled_from(_EXTRA_FIELDS), max_size=4, unique=True))
        chunked = b"Transfer-Encoding: chunked" in fields
        body = draw(_BODIES) if method != b"HEAD" or chunked else b""
        if not chunked and (body or draw(st.booleans())):
            fields.append(b"Content-Length: %d" % len(body))
        framed = body
        if chunked:
            framed = b""
            rest = body
            while rest:
                size = draw(st.integers(1, len(rest)))
                extension = draw(st.sampled_from((b"", b";ext", b';a="b"')))
                framed += b"%x%b\r\n%b\r\n" % (size, extension, rest[:size])
                rest = rest[size:]
            trailer = draw(st.sampled_from((b"", b"X-Sum: 1\r\n")))
            framed += b"0\r\n" + trailer + b"\r\n"
        head = method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n"
        stream += head + b"".join(field + b"\r\n" for field in fields) + b"\r\n" + framed
        if b"Upgrade: websocket" in fields and b"Connection: Upgrade" in fields:
            # What follows an upgrade request is the other protocol's (RFC 9110
            # 7.8): the server closes after a refused one rather than parse it.
            break
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=3)))
    return [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(pipelined_requests(), st.booleans())
def test_pipelined_requests_reach_the_upstream_as_sent(reads: list[bytes], early: bool) -> None:
    """However a client connection's valid requests are framed, pipelined and split,
    the upstream parses as many requests as the client sent, each with the same
    method, path, query and body, no hop-by-hop field, and nothing left over on a
    reused connection (no request smuggled in a body, RFC 9112 11.2). An upstream
    answering at the head, before the body, gets no more requests on that connection.
    """
    expected = h11_requests(h11.Connection(h11.SERVER), b"".join(reads))
    seen = relay_through_proxy(reads, [request.method for request in expected], early=early)
    assert_forwarded_as_sent(expected, seen, early=early)


# -- response splitting: an upstream's bytes never become another response ------------------

_CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"

# Answers no proxy may relay as they are, and the status the client gets for each:
# 502 when the head cannot be trusted; the upstream's status when the head can but
# bytes followed the end its framing gives (they are dropped). The upstream
# connection is closed either way (docs/proxy.md, "Malformed upstream answers").
MALFORMED_ANSWERS = [
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _CHUNKED_HELLO,
        502,
        id="content-length-and-transfer-encoding",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        502,
        id="two-content-lengths",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        502,
        id="repeated-content-length",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", 502, id="length-list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", 502, id="negative-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", 502, id="signed-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", 502, id="hex-length"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello",
        502,
        id="length-past-64-bits",
    ),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", 502, id="bare-lf"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", 502, id="obs-fold"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 5\r\n\r\nhello", 502, id="nul-in-value"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 5\r\n\r\nhello", 502, id="cr-in-value"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", 502, id="space-before-colon"
    ),
    pytest.param(
        b"HTTP/1.1 103 Early Hints\r\nContent-Length: 3\r\n\r\nabc" + OK, 502, id="1xx-with-body"
    ),
    pytest.param(SWITCHED, 502, id="101-not-asked-for"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", 502, id="coding-not-chunked"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n" + _CHUNKED_HELLO,
        502,
        id="chunked-and-a-trailing-comma",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n" + _CHUNKED_HELLO,
        502,
        id="chunked-and-a-trailing-tab",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        502,
        id="bad-chunk-size",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 200, id="body-too-long"),
    pytest.param(OK + OK, 200, id="two-responses"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\nhello", 204, id="204-with-body"),
    pytest.param(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", 204, id="204-with-length"
    ),
    pytest.param(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", 304, id="304-with-body"
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + OK[17:], 200, id="connection-close"),
    pytest.param(OK.replace(b"HTTP/1.1", b"HTTP/1.0"), 200, id="http10"),
]


@pytest.mark.parametrize(("answer", "status"), MALFORMED_ANSWERS)
def test_a_malformed_answer_never_becomes_the_next_response(answer: bytes, status: int) -> None:
    """Whatever an upstream answers, the client gets one response for its request and
    its pipelined next request gets its own, from a connection of its own: the one
    that answered badly is closed, never pooled (RFC 9112 6.3, 9.3, 11.2).
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = setup.endpoint().last
    first.respond(answer)
    assert first.closed()
    second = setup.endpoint().last
    assert second is not first
    assert targets_sent(second) == [b"/2"]
    second.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    responses = parse_responses(client.take())
    assert [response.status for response in responses] == [status, 200]
    assert responses[1].body == b"second"
    if status == 200:
        assert responses[0].body == b"ok"


def test_a_head_answer_with_a_body_is_relayed_without_it() -> None:
    """A body after the head of a HEAD response (RFC 9110 9.3.2) is dropped with its
    connection; the next request gets its own response.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"HEAD /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = setup.endpoint().last
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert first.closed()
    second = setup.endpoint().last
    assert second is not first
    second.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    head, after = parse_responses(client.take(), [b"HEAD", b"GET"])
    assert (head.status, head.header(b"content-length"), head.body) == (200, b"5", b"")
    assert after.body == b"second"


@pytest.mark.parametrize(
    ("head", "rest"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"zz\r\n",
            id="bad-chunk-size-half-way",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", None, id="cut-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            None,
            id="cut-chunked",
        ),
    ],
)
def test_an_answer_broken_after_its_head_cuts_the_client_off(
    head: bytes, rest: bytes | None
) -> None:
    """An answer whose head went on and whose body then breaks (bad framing, or the
    upstream closing) ends the client's connection without a clean end: the client
    must see an incomplete message (RFC 9112 8), not a shorter complete one.
    """
    setup = make_proxy()
    client = setup.client()
    client.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(head)
    if rest is None:
        upstream.close()
    else:
        upstream.respond(rest)
    assert client.is_closed()
    receiver = h11.Connection(h11.CLIENT)
    receiver.send(h11.Request(method="GET", target="/1", headers=[("Host", "x")]))
    receiver.send(h11.EndOfMessage())
    receiver.receive_data(client.take())
    receiver.receive_data(b"")  # the close
    events: list[Any] = []
    with pytest.raises(h11.RemoteProtocolError, match="without sending complete message"):
        while True:
            events.append(receiver.next_event())
    response, body = events
    assert (response.status_code, body.data) == (200, b"hello")
    assert len(setup.endpoint().connections) == 1  # /2 was never sent


_ANSWER_STATUS_LINES = (
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 404 Not Found",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 103 Early Hints",
)
_ANSWER_FIELDS = (
    b"Content-Length: 2",
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Content-Length : 2",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: chunked,",
    b"Transfer-Encoding: chunked\t",
    b"Transfer-Encoding: , chunked",
    b"Transfer-Encoding: gzip",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: content-length, transfer-encoding",
    b"X-Folded: a\r\n b",
    b"X-Nul: a\x00b",
    b"Trailer: X-Sum",
)
# "evil" marks the body of a response that must never reach a client as one.
_ANSWER_BODIES = (
    b"",
    b"ok",
    b"hello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n",
    b"2\r\nok\r\nzz\r\n",
    b"okHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
)


@st.composite
def upstream_answers(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A request method and an upstream's answer to it, split into reads."""
    method = draw(st.sampled_from((b"GET", b"HEAD")))
    answer = b""
    for _ in range(draw(st.integers(1, 2))):
        status = draw(st.sampled_from(_ANSWER_STATUS_LINES))
        fields = draw(st.lists(st.sampled_from(_ANSWER_FIELDS), max_size=3))
        end = draw(st.sampled_from((b"\r\n", b"\r\n", b"\n")))
        answer += status + end + b"".join(field + end for field in fields) + end
        answer += draw(st.sampled_from(_ANSWER_BODIES))
    cuts = sorted(draw(st.lists(st.integers(0, len(answer)), max_size=2)))
    reads = [answer[start:end] for start, end in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
    return method, [read for read in reads if read]


def first_body(events: list[Any]) -> bytes:
    """The body of the first message among h11 ``events`` (up to its end)."""
    body = b""
    for event in events:
        if isinstance(event, h11.EndOfMessage):
            break
        if isinstance(event, h11.Data):
            body += event.data
    return body


def heads_only(answer: bytes) -> bool:
    """Whether ``answer`` is interim heads and one HTTP/1.1 final head, nothing after."""
    *heads, rest = answer.split(b"\r\n\r\n")
    return (
        rest == b""
        and bool(heads)
        and all(head.startswith(b"HTTP/1.1 1") for head in heads[:-1])
        and heads[-1].startswith((b"HTTP/1.1 2", b"HTTP/1.1 3", b"HTTP/1.1 4"))
    )


def h11_reading(method: bytes, answer: bytes, *, closed: bool) -> tuple[list[Any], bool, bytes]:
    """What h11 as the client makes of ``answer``.

    Returns:
        Its events, whether it refused the answer, and the bytes left after the
        first response.
    """
    receiver = h11.Connection(h11.CLIENT)
    receiver.send(h11.Request(method=method, target="/1", headers=[("Host", "x")]))
    receiver.send(h11.EndOfMessage())
    # h11 refuses an empty list element that RFC 9110 5.6.1 has a recipient ignore.
    head, end, rest = answer.partition(b"\r\n\r\n")
    receiver.receive_data(head.replace(b"Encoding: , chunked", b"Encoding: chunked") + end + rest)
    if closed:
        receiver.receive_data(b"")
    events: list[Any] = []
    try:
        while True:
            event = receiver.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                return events, False, bytes(receiver.trailing_data[0])
            events.append(event)
    except h11.RemoteProtocolError:
        return events, True, b""


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(upstream_answers())
# Framings that once fooled the proxy, and a second response glued to the first.
@example(
    (b"GET", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n"])
)
@example((b"GET", [OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"]))
def test_no_upstream_answer_becomes_another_response(case: tuple[bytes, list[bytes]]) -> None:
    """Whatever an upstream answers, however split: bytes past the end of its answer
    never reach a client as a response, a connection is pooled only after an answer
    h11 also reads as one whole HTTP/1.1 response with nothing after it, a relayed
    answer has the body h11 reads, and the client's pipelined next request gets its
    own response, or the client connection is cut (RFC 9112 6.3, 9.3, 11.2).
    """
    method, reads = case
    setup = make_proxy()
    client = setup.client()
    client.send(method + b" /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = setup.endpoint().last
    for read in reads:
        if not first.closed():
            first.respond(read)
    answer = b"".join(reads)
    # Pooled: carrying /2 already, or idle for the next request to take.
    pooled = targets_sent(first) == [b"/1", b"/2"] or first.protocol.idle
    closed = not pooled and not first.closed()
    if closed:
        first.close()  # the upstream ends a body left open (or read to the close)
    events, refused, leftover = h11_reading(method, answer, closed=closed)
    if pooled and refused and heads_only(answer):
        # Nothing after its heads: a 204, a 304 or a HEAD answer whose fields h11
        # refuses to frame a body with, though it has none (RFC 9112 6.3, item 1).
        pass
    elif pooled:
        # Pooled: h11 too reads one whole HTTP/1.1 response and nothing after it.
        assert not refused
        assert leftover == b""
        finals = [event for event in events if isinstance(event, h11.Response)]
        assert len(finals) == 1 and finals[0].http_version == b"1.1"
        assert isinstance(events[-1], h11.EndOfMessage)
        assert (b"connection", b"close") not in finals[0].headers
    carrier = setup.endpoint().last
    if targets_sent(carrier)[-1:] == [b"/2"]:
        carrier.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    written = client.take()
    receiver = h11.Connection(h11.CLIENT)
    for target in (b"/1", b"/2"):
        receiver.send(
            h11.Request(
                method=method if target == b"/1" else b"GET", target=target, headers=[("Host", "x")]
            )
        )
        receiver.send(h11.EndOfMessage())
        if target == b"/1":
            receiver.receive_data(written)
            if client.is_closed():
                receiver.receive_data(b"")
        got: list[Any] = []
        try:
            while True:
                event = receiver.next_event()
                if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                    break
                got.append(event)
        except h11.RemoteProtocolError:
            assert client.is_closed()  # cut short: never a clean end
            return
        if not got or not isinstance(got[-1], h11.EndOfMessage):
            assert client.is_closed()
            return
        final = next(event for event in got if isinstance(event, h11.Response))
        body = b"".join(event.data for event in got if isinstance(event, h11.Data))
        assert body != b"evil"
        if target == b"/2":
            assert (final.status_code, body) == (200, b"second")
        elif (
            final.status_code not in (204, 304, 502)
            and method != b"HEAD"
            and not any(isinstance(event, h11.Response) for event in events)
        ):
            # A head whose framing h11 refuses is not relayed (one without a body
            # to frame may be: RFC 9110 6.4.1).
            raise AssertionError(("relayed a head h11 refuses", final))
        elif final.status_code != 502 and not refused:
            upstream_final = [event for event in events if isinstance(event, h11.Response)]
            assert upstream_final and upstream_final[0].status_code == final.status_code
            upstream_body = first_body(events)
            assert body == upstream_body
        if receiver.our_state is h11.MUST_CLOSE or receiver.their_state is h11.MUST_CLOSE:
            return
        receiver.start_next_cycle()


_REPEATED_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: keep-alive\r\n\r\n"
)


def test_a_repeated_upstream_answer_is_relayed_whole_each_time() -> None:
    """An upstream answering the same head each time (the client connection remembers
    it rather than parse it again): each client response has its own body and the
    upstream's fields; a HEAD request answered with the same bytes ends at its head,
    the bytes after it dropped with the upstream connection (RFC 9110 9.3.2).
    """
    setup = make_proxy()
    client = setup.client()
    upstream = None
    for target, body in ((b"/a", b"first"), (b"/b", b"other"), (b"/c", b"third")):
        get(client, target)
        upstream = setup.endpoint().last
        upstream.respond(_REPEATED_HEAD + body)
        response = one_response(client)
        assert (response.status, response.body) == (200, body)
        assert response.header_values(b"content-type") == [b"text/plain"]
        assert response.header_values(b"content-length") == [b"5"]
    assert setup.endpoint().connections == [upstream]
    assert upstream is not None
    client.send(b"HEAD /d HTTP/1.1\r\nHost: x\r\n\r\n")
    with capture_log_events() as events:
        upstream.respond(_REPEATED_HEAD + b"extra")
    response = one_response(client, b"HEAD")
    assert (response.status, response.body) == (200, b"")
    assert upstream.closed()
    assert any("after the end of its response" in formatEvent(e) for e in events)


def test_a_repeated_205_with_content_is_named_each_time() -> None:
    """The same 205 with content, again and again on one upstream connection: each is
    relayed without it, and each is warned about.
    """
    setup = make_proxy()
    client = setup.client()
    with capture_log_events() as events:
        for _ in range(3):
            get(client, b"/form")
            setup.endpoint().last.respond(_RESET_CONTENT_HEAD + b"EVILEVIL")
            response = one_response(client)
            assert (response.status, response.body) == (205, b"")
    problems = [e for e in events if e["log_level"] >= LogLevel.warn]
    assert len(problems) == 3
    assert all("205" in formatEvent(e) for e in problems)
    assert len(setup.endpoint().connections) == 1


def _upstream_head(status_line: bytes, *fields: bytes) -> bytes:
    return status_line + b"\r\n" + b"".join(line + b"\r\n" for line in fields) + b"\r\n"


#: Upstream answers for the property below: fields a mount passes on, rewrites,
#: hides, reads or drops; statuses it retries, relays without content or refuses.
_ANSWER_HEADS = [
    _upstream_head(
        b"HTTP/1.1 200 OK",
        b"Content-Length: 5",
        b"Content-Type: text/plain",
        b"Server: up",
        b"Date: then",
    ),
    _upstream_head(
        b"HTTP/1.1 302 Found",
        b"Content-Length: 5",
        b"Set-Cookie: a=1; Domain=backend.internal",
        b"Location: http://backend.internal/next",
    ),
    _upstream_head(
        b"HTTP/1.1 200 OK", b"Content-Length: 5", b"X-Accel-Buffering: no", b"X-Accel-Limit-Rate: 9"
    ),
    _upstream_head(
        b"HTTP/1.1 200 OK",
        b"Content-Length: 5",
        b"Connection: X-Hop",
        b"X-Hop: 1",
        b"Keep-Alive: 1",
    ),
    _upstream_head(b"HTTP/1.1 503 Busy", b"Content-Length: 5"),
    _upstream_head(b"HTTP/1.1 205 Reset Content", b"Content-Length: 5"),
    _upstream_head(b"HTTP/1.1 200 O\x01K", b"Content-Length: 5"),
    _upstream_head(b"HTTP/1.1 426 Upgrade Required", b"Content-Length: 5", b"Upgrade: h2c"),
    _upstream_head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Connection: close"),
    _upstream_head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"),
    _upstream_head(
        b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade"
    ),
]
_CLIENT_REQUESTS = {
    "GET": b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET elsewhere": b"GET /b HTTP/1.1\r\nHost: y.example\r\n\r\n",
    "HEAD": b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "upgrade": WEBSOCKET_UPGRADE,
    "gzip": b"GET /a HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
}
_MOUNT_OPTIONS: list[dict[str, Any]] = [
    {},
    {"proxy_redirect": (("http://backend.internal/", "http://$host/"),)},
    {"proxy_cookie_domain": (("backend.internal", "$host"),)},
    {"retry_statuses": (503,), "retry_non_idempotent": True},
    {"proxy_hide_header": ("content-type",)},
    {"response_buffering": False},
]


@st.composite
def _proxied_scripts(draw: st.DrawFn) -> tuple[int, bool, list[tuple[str, Any]]]:
    """Client requests, each answered (most often with an earlier answer again)."""
    steps: list[tuple[str, Any]] = []
    answers: list[bytes] = []
    for _ in range(draw(st.integers(1, 7))):
        steps.append(("request", draw(st.sampled_from(list(_CLIENT_REQUESTS)))))
        if answers and draw(st.integers(0, 2)) > 0:
            answer = draw(st.sampled_from(answers))
        else:
            head = draw(st.sampled_from(_ANSWER_HEADS))
            if b"Content-Length: 5" in head:
                body = b"hello"
            elif b"chunked" in head:
                body = b"5\r\nhello\r\n0\r\n\r\n"
            else:
                body = b""
            tail = draw(st.sampled_from([b"", b"", b"", b"\r\n", b"x"]))
            answer = head + body + tail
        answers.append(answer)
        steps.append(("answer", answer))
        if draw(st.integers(0, 5)) == 0:
            steps.append(("answer", answer))  # a retry's, or unasked for
        if draw(st.integers(0, 6)) == 0:
            steps.append(("time", draw(st.sampled_from([0.5, 5.0, 61.0]))))
    options = draw(st.sampled_from(range(len(_MOUNT_OPTIONS))))
    return options, draw(st.booleans()), steps


def _proxied(
    case: tuple[int, bool, list[tuple[str, Any]]], *, remember: bool, eager: bool = False
) -> list[Any]:
    """Play a script through a proxy; what the client and the upstreams see after each step.

    ``eager``: the upstream connections forget their last response whole at each send
    (see :func:`tests.test_client.resetting_eagerly`).
    """
    options, two, steps = case
    mount = _MOUNT_OPTIONS[options]
    urls = TWO if two or "retry_statuses" in mount else TWO[:1]
    with contextlib.ExitStack() as stack:
        if eager:
            stack.enter_context(resetting_eagerly())
        if not remember:
            stack.enter_context(
                unittest.mock.patch.object(
                    ClientConnection, "_remember_head", lambda self, data: None
                )
            )
        setup = make_proxy(urls, **mount)
        client = setup.client()
        seen: list[Any] = []
        events = stack.enter_context(capture_log_events())
        for kind, value in steps:
            if kind == "request":
                if client.is_closed():
                    seen.append("a new client connection")
                    client = setup.client()
                client.send(_CLIENT_REQUESTS[value])
            elif kind == "time":
                setup.clock.advance(value)
            else:
                busy = [
                    upstream
                    for endpoint in setup.endpoints.values()
                    for upstream in endpoint.connections
                    if upstream.protocol.state.value == "busy"
                ]
                if busy:
                    busy[0].respond(value)
            upstreams = [
                (upstream.transport.value(), upstream.closed(), upstream.protocol.state.value)
                for endpoint in setup.endpoints.values()
                for upstream in endpoint.connections
            ]
            seen.append((client.take(), upstreams, [formatEvent(e) for e in events]))
        return seen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_proxied_scripts())
def test_what_a_client_gets_is_the_same_with_and_without_remembered_heads(
    case: tuple[int, bool, list[tuple[str, Any]]],
) -> None:
    """The upstream connections remember a repeated plain head (rather than parse it
    again): whatever the mount does with the fields (rewrites, hides, reads them,
    retries the status), whatever the requests (HEAD, a body, an upgrade, gzip), the
    client is sent the same bytes, the upstreams the same requests, and the same is
    logged, as when every answer is parsed.
    """
    assert _proxied(case, remember=True) == _proxied(case, remember=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_proxied_scripts())
def test_what_a_client_gets_is_the_same_with_a_lazy_and_an_eager_reset(
    case: tuple[int, bool, list[tuple[str, Any]]],
) -> None:
    """The upstream connections forget only part of a response at each send (the
    parse of the next one's first read forgets the rest, and a remembered head sets
    only part): through the proxy (retries, hidden and rewritten fields, HEAD, a
    body, an upgrade, gzip), the client and the upstreams see what they saw when
    send forgot everything.
    """
    assert _proxied(case, remember=True) == _proxied(case, remember=True, eager=True)
