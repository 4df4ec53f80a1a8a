"""Listeners behind a load balancer speaking the PROXY protocol (``haproxy:`` endpoints).

In memory: the server's factory behind the header reader, driven with raw bytes
(headers of versions 1 and 2 built here from the specification's layout). On real
sockets: a single process over TCP and over TLS (the header before the handshake).
Under ``--workers`` in ``test_workers.py``.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tests import apps
from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.access_log import format_combined, log_time
from twistwsgi.config import ServerConfig, endpoint_parts, proxy_protocol_inner
from twistwsgi.http.settings import HttpSettings
from twistwsgi.proxy_protocol import ProxyProtocolEndpoint, proxy_protocol_factory
from twistwsgi.service import make_factory
from twistwsgi.testing import SynchronousReactorThreads, capture_log_events, parse_responses
from twistwsgi.threads import WorkerPool

reactor: Any = global_reactor

BALANCER = IPv4Address("TCP", "10.0.0.2", 40000)
REQUEST = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"


def v1(client: str = "203.0.113.7", port: int = 51000) -> bytes:
    """A version 1 header (text): the client and the address it reached."""
    return f"PROXY TCP4 {client} 192.0.2.10 {port} 443\r\n".encode()


def v2(client: str = "203.0.113.8", port: int = 52000, *, local: bool = False) -> bytes:
    """A version 2 header (binary): PROXY or LOCAL, TCP over IPv4."""
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    command = 0x20 if local else 0x21
    addresses = socket.inet_aton(client) + socket.inet_aton("192.0.2.10")
    addresses += struct.pack("!HH", port, 443)
    return signature + bytes([command, 0x11]) + struct.pack("!H", len(addresses)) + addresses


class Proxied:
    """One in-memory connection from the balancer to the environ app, header first."""

    def __init__(
        self, log: list[str] | None = None, clock: SynchronousReactorThreads | None = None
    ) -> None:
        clock = clock or SynchronousReactorThreads()
        response_log = None
        if log is not None:

            def response_log(ended: Any) -> None:
                log.append(format_combined(ended, log_time(clock.seconds())))

        factory = make_factory(
            apps.environ,
            reactor=clock,
            threadpool=None,
            settings=HttpSettings(),
            response_log=response_log,
        )
        wrapping = proxy_protocol_factory(factory, None, clock)
        self.protocol = wrapping.buildProtocol(BALANCER)
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.3", 8080), peerAddress=BALANCER
        )
        self.protocol.makeConnection(self.transport)

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.protocol.dataReceived(piece)

    def environs(self) -> list[dict[str, str]]:
        return [json.loads(response.body) for response in parse_responses(self.transport.value())]


@pytest.mark.parametrize(
    ("header", "client", "port"),
    [(v1(), "203.0.113.7", "51000"), (v2(), "203.0.113.8", "52000")],
)
def test_the_client_is_the_one_the_header_names(header: bytes, client: str, port: str) -> None:
    """For the application, the access log, and every request of the connection."""
    log: list[str] = []
    connection = Proxied(log)
    connection.send(header + REQUEST, REQUEST)
    environs = connection.environs()
    assert [(seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) for seen in environs] == [
        (client, port),
        (client, port),
    ]
    assert all(line.startswith(f"{client} - - [") for line in log)
    assert len(log) == 2


def test_a_header_in_pieces_is_read_whole_first() -> None:
    connection = Proxied()
    header = v1()
    connection.send(header[:9], header[9:20], header[20:] + REQUEST[:5], REQUEST[5:])
    [seen] = connection.environs()
    assert seen["REMOTE_ADDR"] == "203.0.113.7"


def test_a_local_header_leaves_the_balancer_as_the_client() -> None:
    """Version 2's LOCAL: the balancer's own connection (its health check)."""
    connection = Proxied()
    connection.send(v2(local=True) + REQUEST)
    [seen] = connection.environs()
    assert seen["REMOTE_ADDR"] == "10.0.0.2"


@pytest.mark.parametrize(
    "opening",
    [
        REQUEST,  # no header: a client that reached the listener past the balancer
        b"PROXY TCP4 203.0.113.7 nonsense\r\n" + REQUEST,
        b"PROXY TCP4 999.0.113.7 192.0.2.10 51000 443\r\n" + REQUEST,
    ],
)
def test_a_connection_without_a_valid_header_is_closed_unanswered(opening: bytes) -> None:
    connection = Proxied()
    connection.send(opening)
    assert connection.transport.value() == b""
    assert connection.transport.disconnecting


def test_haproxy_listeners_are_read_as_the_endpoint_they_wrap(tmp_path: Path) -> None:
    """Ports, TLS files and socket paths are those of the wrapped endpoint."""
    assert proxy_protocol_inner("haproxy:tcp:8080") == "tcp:8080"
    assert proxy_protocol_inner("HAProxy:ssl:443:privateKey=k.pem") == "ssl:443:privateKey=k.pem"
    assert proxy_protocol_inner("tcp:8080") is None
    assert endpoint_parts("haproxy:ssl:443:privateKey=k.pem") == (
        "ssl",
        ["443"],
        {"privateKey": "k.pem"},
    )
    site = tmp_path / "site.toml"
    site.write_text(
        '[server]\nlisten = ["haproxy:ssl:443:privateKey=k.pem", "haproxy:unix:s.sock"]\n'
        'https_redirect = "on"\n'
        '[[host]]\nnames = ["a"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    )
    config = cli.load_config({"config": str(site)})
    assert config.listen == (
        f"haproxy:ssl:443:privateKey={tmp_path}/k.pem",
        f"haproxy:unix:{tmp_path}/s.sock",
    )
    assert config.hosts[0].https_redirect == 443  # the wrapped ssl: listener's port


def test_a_wrapped_ssl_listener_keeps_its_tls_for_after_the_header(tmp_path: Path) -> None:
    key, cert = write_self_signed_certificate(tmp_path)
    description = f"haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    endpoint = cli._endpoint_for(reactor, description, ServerConfig())
    assert isinstance(endpoint, ProxyProtocolEndpoint)
    assert endpoint.tls_options is not None
    assert cli.endpoint_tls_options(reactor, description, ServerConfig()) is not None
    plain = cli._endpoint_for(reactor, "haproxy:tcp:0", ServerConfig())
    assert isinstance(plain, ProxyProtocolEndpoint) and plain.tls_options is None


class ProxyProtocolSocketTests(TestCase):
    """A single process on the real reactor, with a real client in a thread."""

    def setUp(self) -> None:
        self.pool = WorkerPool(2, name="twistwsgi-proxy-protocol-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def serve(self, description: str) -> int:
        factory = make_factory(apps.environ, reactor=reactor, threadpool=self.pool)
        endpoint = cli._endpoint_for(reactor, description, ServerConfig())
        port = await endpoint.listen(factory)

        async def stop() -> None:
            await maybeDeferred(port.stopListening)
            await factory.shut_down()

        self.addCleanup(stop)
        self.host = port.getHost()
        return int(port.getHost().port)  # type: ignore[attr-defined]

    async def test_over_tcp(self) -> None:
        port = await self.serve("haproxy:tcp:0:interface=127.0.0.1")

        def ask() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                raw.sendall(v1() + b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                return _read_all(raw)

        [response] = parse_responses(await deferToThread(ask))
        seen = json.loads(response.body)
        assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("203.0.113.7", "http")

    async def test_over_tls_the_header_comes_before_the_handshake(self) -> None:
        key, cert = write_self_signed_certificate(self.directory)
        port = await self.serve(
            f"haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        assert self.host.host == "127.0.0.1"  # type: ignore[attr-defined]  # interface= kept

        def ask() -> bytes:
            context = ssl.create_default_context(cafile=str(cert))
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                raw.sendall(v2())
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    return _read_all(tls)

        [response] = parse_responses(await deferToThread(ask))
        seen = json.loads(response.body)
        assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("203.0.113.8", "https")

    async def test_plain_http_after_the_header_on_a_tls_listener_gets_the_400(self) -> None:
        """As on a bare ssl: listener: the client learns why, not an empty reply."""
        key, cert = write_self_signed_certificate(self.directory)
        port = await self.serve(
            f"haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )

        def ask() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                raw.sendall(v1() + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                return _read_all(raw)

        with capture_log_events() as events:
            [response] = parse_responses(await deferToThread(ask))
        assert response.status == 400
        assert b"plain HTTP" in response.body
        # The client the header named is the one refused, in the log too.
        refused = [formatEvent(event) for event in events if "Refused" in formatEvent(event)]
        assert refused and refused[0].startswith("Refused a request from 203.0.113.7:51000")


def _read_all(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_refused_headers_are_said_at_most_once_a_minute() -> None:
    """A balancer that does not send the header shows in the log, without a flood."""
    clock = SynchronousReactorThreads()
    factory = make_factory(apps.environ, reactor=clock, threadpool=None)
    wrapping = proxy_protocol_factory(factory, None, clock)

    def connection(opening: bytes) -> bytes:
        transport = StringTransport(peerAddress=BALANCER)
        protocol = wrapping.buildProtocol(BALANCER)
        protocol.makeConnection(transport)
        protocol.dataReceived(opening)
        written: bytes = transport.value()
        return written

    with capture_log_events() as events:
        assert connection(REQUEST) == b""  # said
        clock.advance(30)
        assert connection(b"PROXY TCP4 999.0.113.7 192.0.2.10 1 2\r\n") == b""  # counted
        clock.advance(31)
        assert connection(b"PROXY TCP4 999.0.113.7 192.0.2.10 1 2\r\n") == b""  # said
        assert connection(v1() + REQUEST) != b""  # (served, nothing said)
    lines = [formatEvent(event) for event in events if "PROXY protocol" in formatEvent(event)]
    assert lines == [
        "Closed a connection from 10.0.0.2:40000 on a PROXY protocol listener: no PROXY"
        " protocol header (is the load balancer sending the header? 0 more since the last"
        " such line)",
        "Closed a connection from 10.0.0.2:40000 on a PROXY protocol listener: b'999.0.113.7'"
        " is not an IP address (is the load balancer sending the header? 1 more since the"
        " last such line)",
    ]


def test_twisted_s_own_reader_naming_no_ip_address_runs_nothing() -> None:
    """Twisted's haproxy: endpoint (a library user's) takes any text of the right
    shape: the protocol drops the connection, and nothing of it reaches the
    application, however long the read that follows the header.
    """
    from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory

    called: list[str] = []

    def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(environ["REMOTE_ADDR"])
        start_response("200 OK", [("Content-Length", "0")])
        return []

    factory = make_factory(application, reactor=SynchronousReactorThreads(), threadpool=None)
    protocol = HAProxyWrappingFactory(factory).buildProtocol(BALANCER)
    transport = StringTransport(peerAddress=BALANCER)
    protocol.makeConnection(transport)
    body = b"x" * 3000
    with capture_log_events() as events:
        protocol.dataReceived(
            b"PROXY TCP4 999.0.113.7 192.0.2.10 51000 443\r\n"
            b"POST /transfer HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n" + body
        )
    assert called == []
    assert transport.value() == b""
    assert "not an IP address and port" in formatEvent(events[0])


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY UNKNOWN\r\n",  # what curl --haproxy-protocol sends over a UNIX socket
        v2(local=True),
        # A UNIX family: no IP client, and not a UNIX-socket client either.
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x31" + struct.pack("!H", 216) + b"/c".ljust(216, b"\0"),
    ],
)
def test_a_header_naming_no_ip_client_leaves_the_balancer_as_the_client(header: bytes) -> None:
    connection = Proxied()
    connection.send(header + REQUEST)
    [seen] = connection.environs()
    assert seen["REMOTE_ADDR"] == "10.0.0.2"


def test_the_address_the_client_reached_is_the_servers_without_a_host_field() -> None:
    """HTTP/1.0 without Host: SERVER_NAME and SERVER_PORT from the header's destination."""
    connection = Proxied()
    connection.send(v1() + b"GET / HTTP/1.0\r\n\r\n")
    [seen] = connection.environs()
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("192.0.2.10", "443")


def test_the_balancers_word_on_tls_makes_the_scheme_https() -> None:
    """A version 2 PP2_TYPE_SSL field: TLS ended at the balancer."""
    ssl_field = b"\x20" + struct.pack("!H", 5) + b"\x01\x00\x00\x00\x00"
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_aton("203.0.113.8") + socket.inet_aton("192.0.2.10")
    addresses += struct.pack("!HH", 52000, 443) + ssl_field
    header = signature + b"\x21\x11" + struct.pack("!H", len(addresses)) + addresses
    connection = Proxied()
    connection.send(header + REQUEST)
    [seen] = connection.environs()
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("203.0.113.8", "https")
    plain = Proxied()
    plain.send(v2() + REQUEST)
    assert plain.environs()[0]["wsgi.url_scheme"] == "http"


def test_after_the_header_the_server_writes_to_the_socket_itself() -> None:
    """Where its fast paths apply (direct writes, sendfile); reads still come through."""
    connection = Proxied()
    connection.send(v1() + REQUEST)
    http: Any = connection.protocol.wrappedProtocol
    assert http.transport is connection.transport
    connection.send(REQUEST)
    assert len(connection.environs()) == 2
