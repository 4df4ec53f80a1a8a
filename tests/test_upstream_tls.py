"""TLS upstreams: a connection is handed out only once its handshake has completed.

The memory tests run real TLS between two ``TLSMemoryBIOProtocol`` instances joined by
``twisted.test.iosim`` (bytes move when the test pumps them), with a ``Clock``: the
upstream behind the TLS layer is twistwsgi's own HTTP/1.1 server. An upstream that
accepts and never answers is a ``StringTransport`` under the TLS layer. The socket tests
use real TLS listeners on 127.0.0.1 and the real reactor.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from tests.test_proxy_sockets import ProxySocketHarness
from tests.test_sockets import tls_endpoint, write_self_signed_certificate
from twistwsgi.config import MountConfig, ServerConfig, Upstream, default_options
from twistwsgi.forwarding import UpstreamAddress, parse_upstream
from twistwsgi.http.client import ClientSettings, ErrorKind, UpstreamError
from twistwsgi.http.exchange import Exchange
from twistwsgi.http.protocol import HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.proxy import ProxyHandler, build_proxy
from twistwsgi.testing import capture_log_events, connect, parse_responses
from twistwsgi.upstream import CONNECT_BACKSTOP, UpstreamPool, load_trust_root

reactor: Any = global_reactor

# The schema's defaults, with what these tests need differently.
OPTIONS: dict[str, Any] = {
    **default_options("proxy"),
    "connect_timeout": 5.0,
    "keepalive": 8,
    "keepalive_timeout": 60.0,
}

_PEER = IPv4Address("TCP", "127.0.0.1", 9443)
TLS_URL = "https://localhost:9443"
PLAIN_URL = "http://10.0.0.2:9000"


class Answer:
    """The upstream's handler: reads the body, answers ``<name> got <body>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[tuple[bytes, bytes]] = []

    def handle(self, exchange: Exchange) -> None:
        _BodyReader(self, exchange)


class _BodyReader:
    def __init__(self, answer: Answer, exchange: Exchange) -> None:
        self.answer = answer
        self.exchange = exchange
        self.body = b""
        exchange.receive_body(self)

    def body_received(self, data: bytes) -> None:
        self.body += data

    def body_finished(self) -> None:
        self.answer.requests.append((self.exchange.request.method, self.body))
        text = f"{self.answer.name} got ".encode() + self.body
        self.exchange.start_response(200, [(b"Content-Type", b"text/plain")])
        self.exchange.finish(text)

    def body_failed(self, reason: Exception) -> None:
        pass


@dataclass(frozen=True)
class Certificates:
    """Two unrelated self-signed certificates for localhost and 127.0.0.1."""

    server: Any  # CertificateOptions of the upstream
    trusted: Any  # a trust root that vouches for the upstream
    other: Any  # a trust root that does not


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    key, cert = write_self_signed_certificate(first)
    _other_key, other_cert = write_self_signed_certificate(second)
    server = ssl.PrivateCertificate.loadPEM(key.read_bytes() + cert.read_bytes()).options()
    return Certificates(server, load_trust_root(str(cert)), load_trust_root(str(other_cert)))


@implementer(IStreamClientEndpoint)
class MemoryUpstream:
    """An endpoint to an in-memory server: TCP "connects" at once, bytes move on flush.

    Args:
        server: builds the server's protocol, or ``None`` for a server that accepts
            and never sends a byte.
        clock: advanced (by 0) as bytes are pumped.
    """

    def __init__(self, server: IProtocolFactory | None, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.silent: list[StringTransport] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        client: Any = factory.buildProtocol(_PEER)
        if self.server is None:
            transport = StringTransport()
            client.makeConnection(transport)
            self.silent.append(transport)
        else:
            server: Any = self.server.buildProtocol(_PEER)
            pump = iosim.connect(
                server,
                iosim.makeFakeServer(server),
                client,
                iosim.makeFakeClient(client),
                greet=False,
                clock=self.clock,
            )
            self.pumps.append(pump)
        return succeed(client)

    def flush(self) -> None:
        """Move bytes both ways until neither side has more to say."""
        for pump in self.pumps:
            pump.flush()


def tls_server(certificates: Certificates, answer: Answer, clock: Clock) -> IProtocolFactory:
    """The HTTP/1.1 server of twistwsgi behind server-side TLS."""
    http = HTTPFactory(answer, settings=HttpSettings(), clock=clock)
    return TLSMemoryBIOFactory(certificates.server, False, http, clock=clock)


def client_tls(trust_root: Any, hostname: str = "localhost") -> Any:
    return ssl.optionsForClientTLS(
        hostname, trustRoot=trust_root, acceptableProtocols=[b"http/1.1"]
    )


@dataclass
class Recorder:
    """A response handler that keeps what it is told."""

    status: int = 0
    body: bytes = b""
    complete: bool = False
    errors: list[UpstreamError] = field(default_factory=list)

    def response_interim(self, *args: Any) -> None:
        raise AssertionError("not sent")

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status

    def response_data(self, data: bytes, complete: bool) -> None:
        self.body += data
        self.complete = complete

    def response_failed(self, error: UpstreamError) -> None:
        self.errors.append(error)

    def response_upgraded(self, *args: Any) -> None:
        raise AssertionError("not asked for")

    def tunnel_data(self, data: bytes) -> None:
        raise AssertionError("not asked for")

    def tunnel_closed(self, reason: Failure) -> None:
        raise AssertionError("not asked for")

    def sending_paused(self) -> None:
        pass

    def sending_resumed(self) -> None:
        pass


def make_pool(
    endpoint: IStreamClientEndpoint, clock: Clock, connect_timeout: float = 5.0
) -> UpstreamPool:
    return UpstreamPool(
        parse_upstream("https://localhost:9443"),
        endpoint,
        settings=ClientSettings(),
        clock=clock,
        keepalive=4,
        connect_timeout=connect_timeout,
    )


def outcome(deferred: Deferred[Any]) -> list[Any]:
    results: list[Any] = []
    deferred.addBoth(results.append)
    return results


# -- the pool ---------------------------------------------------------------------------------


def test_a_tls_connection_is_handed_out_after_its_handshake(certificates: Certificates) -> None:
    """TCP connecting is not enough: the pool's Deferred fires once the handshake has
    completed, and the connection then carries a request like any other.
    """
    clock = Clock()
    answer = Answer("tls")
    upstream = MemoryUpstream(tls_server(certificates, answer, clock), clock)
    pool = make_pool(wrapClientTLS(client_tls(certificates.trusted), upstream, clock=clock), clock)
    results = outcome(pool.connect())
    (connection,) = pool.connections
    assert results == []
    assert (connection.handshaking, connection.idle) == (True, False)
    upstream.flush()
    assert results == [connection]
    assert (connection.handshaking, connection.idle) == (False, True)
    handler = Recorder()
    connection.send(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n", handler)
    upstream.flush()
    assert (handler.status, handler.body, handler.complete) == (200, b"tls got ", True)
    assert answer.requests == [(b"GET", b"")]


@pytest.mark.parametrize(
    ("hostname", "trusted", "detail"),
    [
        ("localhost", False, "certificate verify failed"),
        ("elsewhere.example", True, "elsewhere.example"),
    ],
)
def test_a_failed_handshake_is_a_connect_error(
    certificates: Certificates, hostname: str, trusted: bool, detail: str
) -> None:
    """A certificate no trusted CA vouches for, or for another name: the attempt fails
    as CONNECT (nothing was sent, so any request may go elsewhere), saying why.
    """
    clock = Clock()
    upstream = MemoryUpstream(tls_server(certificates, Answer("tls"), clock), clock)
    trust = certificates.trusted if trusted else certificates.other
    pool = make_pool(wrapClientTLS(client_tls(trust, hostname), upstream, clock=clock), clock)
    results = outcome(pool.connect())
    upstream.flush()
    (failure,) = results
    assert isinstance(failure, Failure)
    error = failure.value
    assert isinstance(error, UpstreamError)
    assert error.kind is ErrorKind.CONNECT
    assert detail in error.detail
    assert pool.connections == set()


def test_a_stalled_handshake_is_a_connect_timeout(certificates: Certificates) -> None:
    """An upstream that accepts TCP and never answers the ClientHello: the connect
    timer, still running through the handshake, fails the attempt and drops the
    connection.
    """
    clock = Clock()
    upstream = MemoryUpstream(None, clock)
    pool = make_pool(wrapClientTLS(client_tls(certificates.trusted), upstream, clock=clock), clock)
    results = outcome(pool.connect())
    (transport,) = upstream.silent
    assert transport.value()  # the ClientHello went out
    clock.advance(4.9)
    assert results == []
    clock.advance(0.2)
    (failure,) = results
    assert isinstance(failure, Failure)
    error = failure.value
    assert isinstance(error, UpstreamError)
    assert (error.kind, error.detail) == (ErrorKind.CONNECT, "connecting timed out after 5s")
    assert transport.disconnected  # aborted


def test_a_stalled_handshake_gives_up_without_a_connect_timeout(
    certificates: Certificates,
) -> None:
    """connect_timeout 0 is "no limit of its own": the endpoint's backstop covers TCP
    only, so the pool's own backstop must cover the handshake, or it waits forever.
    """
    clock = Clock()
    upstream = MemoryUpstream(None, clock)
    pool = make_pool(
        wrapClientTLS(client_tls(certificates.trusted), upstream, clock=clock), clock, 0.0
    )
    results = outcome(pool.connect())
    (transport,) = upstream.silent
    clock.advance(CONNECT_BACKSTOP - 0.1)
    assert results == []
    clock.advance(0.2)
    (failure,) = results
    error = failure.value
    assert isinstance(error, UpstreamError)
    assert error.kind is ErrorKind.CONNECT
    assert error.detail == f"connecting timed out after {CONNECT_BACKSTOP}s"
    assert transport.disconnected


def test_cancelling_during_the_handshake_drops_the_connection(
    certificates: Certificates,
) -> None:
    """A client that goes away while the handshake runs cancels the attempt; the
    connection is aborted, never handed out.
    """
    clock = Clock()
    upstream = MemoryUpstream(None, clock)
    pool = make_pool(wrapClientTLS(client_tls(certificates.trusted), upstream, clock=clock), clock)
    attempt = pool.connect()
    results = outcome(attempt)
    attempt.cancel()
    (failure,) = results
    assert isinstance(failure, Failure) and not failure.check(UpstreamError)
    assert upstream.silent[0].disconnected


# -- the proxy ---------------------------------------------------------------------------------


@dataclass
class Proxy:
    handler: ProxyHandler
    clock: Clock
    endpoints: dict[str, MemoryUpstream]
    answers: dict[str, Answer]


def make_proxy(
    certificates: Certificates, tls_upstream: str, *, single: bool = False, **options: Any
) -> Proxy:
    """A proxy over https://localhost:9443 and (unless single) http://10.0.0.2:9000.

    ``tls_upstream`` is ``"untrusted"`` (a certificate no CA vouches for) or
    ``"silent"`` (accepts TCP, never answers).
    """
    clock = Clock()
    endpoints: dict[str, MemoryUpstream] = {}
    answers: dict[str, Answer] = {}

    def endpoint_factory(address: UpstreamAddress) -> IStreamClientEndpoint:
        answer = answers[address.url] = Answer(address.url)
        if address.tls:
            server = None if tls_upstream == "silent" else tls_server(certificates, answer, clock)
            endpoint = endpoints[address.url] = MemoryUpstream(server, clock)
            return wrapClientTLS(client_tls(certificates.other), endpoint, clock=clock)
        http = HTTPFactory(answer, settings=HttpSettings(), clock=clock)
        endpoint = endpoints[address.url] = MemoryUpstream(http, clock)
        return endpoint

    urls = (TLS_URL,) if single else (TLS_URL, PLAIN_URL)
    mount = MountConfig(
        "/", "proxy", tuple(Upstream(url) for url in urls), {**OPTIONS, **options}, "test"
    )
    handler = build_proxy(mount, ServerConfig(), reactor=clock, endpoint_factory=endpoint_factory)
    return Proxy(handler, clock, endpoints, answers)


POST = b"POST /submit HTTP/1.1\r\nHost: site\r\nContent-Length: 5\r\n\r\nhello"


def test_post_fails_over_from_an_upstream_whose_certificate_fails(
    certificates: Certificates,
) -> None:
    """The certificate failure is a connect error, logged with its reason, so even a
    POST goes to the next upstream (it was never sent).
    """
    proxy = make_proxy(certificates, "untrusted")
    tls = proxy.endpoints[TLS_URL]
    plain = proxy.endpoints[PLAIN_URL]
    client = connect(proxy.handler, clock=proxy.clock)
    with capture_log_events() as events:
        client.send(POST)
        assert len(tls.pumps) == 1  # tried first
        tls.flush()
        plain.flush()
    (response,) = parse_responses(client.take(), [b"POST"])
    assert (response.status, response.body) == (200, b"http://10.0.0.2:9000 got hello")
    assert proxy.answers[TLS_URL].requests == []
    logged = " ".join(
        str(event.get("detail", "")) for event in events if event.get("upstream") == TLS_URL
    )
    assert "certificate verify failed" in logged


def test_a_stalled_handshake_fails_over_as_a_connect_timeout(certificates: Certificates) -> None:
    """A handshake that never completes is a connect timeout (the POST fails over),
    not a response timeout: the request was never written.
    """
    proxy = make_proxy(certificates, "silent")
    plain = proxy.endpoints[PLAIN_URL]
    client = connect(proxy.handler, clock=proxy.clock)
    client.send(POST)
    (transport,) = proxy.endpoints[TLS_URL].silent
    proxy.clock.advance(5.1)
    plain.flush()
    (response,) = parse_responses(client.take(), [b"POST"])
    assert (response.status, response.body) == (200, b"http://10.0.0.2:9000 got hello")
    assert transport.disconnected


def test_a_single_stalled_upstream_is_a_502(certificates: Certificates) -> None:
    """With no upstream to fail over to, a stalled handshake is a 502 (connect
    failure) within connect_timeout, never a 504 after response_timeout.
    """
    proxy = make_proxy(certificates, "silent", single=True)
    client = connect(proxy.handler, clock=proxy.clock)
    with capture_log_events() as events:
        client.send(b"GET / HTTP/1.1\r\nHost: site\r\n\r\n")
        proxy.clock.advance(5.1)
    (response,) = parse_responses(client.take())
    assert response.status == 502
    assert any("connecting timed out" in str(event.get("detail", "")) for event in events)


# -- real sockets ------------------------------------------------------------------------------


class TLSUpstreamSocketTests(ProxySocketHarness):
    """TLS upstreams on 127.0.0.1 and the proxy on the real reactor; clients in threads."""

    options = OPTIONS
    directory_prefix = "twistwsgi-tls-"

    async def tls_upstream(self, answer: Answer) -> tuple[int, Path]:
        directory = self.directory / answer.name
        directory.mkdir()
        endpoint, cert = tls_endpoint(directory)
        return await self.listen(answer, endpoint), cert

    @staticmethod
    def post(port: int, bodies: list[bytes]) -> list[tuple[int, bytes]]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        results = []
        for body in bodies:
            connection.request("POST", "/submit", body=body)
            response = connection.getresponse()
            results.append((response.status, response.read()))
        connection.close()
        return results

    async def test_posts_fail_over_from_a_certificate_that_fails_verification(self) -> None:
        """Two TLS upstreams; the CA file vouches for the second only. POSTs all reach
        the second (the first is tried, fails as a connect error and is left out), over
        TLS that works, and the log says why the first failed.
        """
        bad = Answer("bad")
        good = Answer("good")
        bad_port, _bad_cert = await self.tls_upstream(bad)
        good_port, good_cert = await self.tls_upstream(good)
        bad_url = f"https://127.0.0.1:{bad_port}"
        handler, port = await self.proxy(
            [bad_url, f"https://127.0.0.1:{good_port}"], tls_ca=str(good_cert)
        )
        with capture_log_events() as events:
            results = await self.in_thread(self.post, port, [b"one", b"two"])
        self.assertEqual(results, [(200, b"good got one"), (200, b"good got two")])
        self.assertEqual(bad.requests, [])
        self.assertEqual(good.requests, [(b"POST", b"one"), (b"POST", b"two")])
        details = [
            str(event.get("detail", "")) for event in events if event.get("upstream") == bad_url
        ]
        self.assertTrue(
            any("certificate verify failed" in detail for detail in details), json.dumps(details)
        )
        self.assertFalse(handler.balancer.usable(handler.group.peers[0], reactor.seconds()))
