"""The reverse proxy on real sockets: twistwsgi upstreams on 127.0.0.1:0 and real clients.

Each test starts one or two in-process upstream servers (twistwsgi's own HTTP/1.1
server with a small handler) and a proxy in front of them on the real reactor;
clients (``http.client``, raw sockets, the ``websockets`` library) run in threads.
Cleanup closes the listeners, shuts the servers down and waits until every pooled
upstream connection has closed, so no socket is left open.

The two 100 MB streaming tests prove bounded memory deterministically: every time a
piece of body passes through the proxy, the bytes it holds (Twisted's write buffers
of the client and upstream connections, the exchange's unread body, the replay log)
are summed, and the maximum must stay far below the body size. Each test also waits
(on a condition, not a clock) until the back-pressure it tests has happened.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.test_sockets import tls_endpoint
from twistwsgi.config import MountConfig, ServerConfig, Upstream, default_options
from twistwsgi.http.client import ClientConnection
from twistwsgi.http.exchange import Exchange, Tunnel
from twistwsgi.http.protocol import HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.proxy import ProxyHandler, _Forward, build_proxy

reactor: Any = global_reactor

# The schema's defaults, with what these tests need differently.
OPTIONS: dict[str, Any] = {
    **default_options("proxy"),
    "keepalive": 16,
    "keepalive_timeout": 60.0,
    "fail_timeout": 30.0,
}

MB = 1024 * 1024
BIG = 100 * MB
PIECE = 64 * 1024


def _buffered(transport: Any) -> int:
    """Bytes a Twisted transport holds unsent (its write buffers)."""
    inner = getattr(transport, "transport", None)  # TLS wraps a TCP transport
    size = 0
    if hasattr(transport, "dataBuffer"):
        size += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    if inner is not None and inner is not transport:
        size += _buffered(inner)
    return size


@implementer(IPushProducer)
class Download:
    """Writes ``size`` bytes to an exchange as fast as the client takes them."""

    def __init__(self, exchange: Exchange, size: int) -> None:
        self.exchange = exchange
        self.remaining = size
        self.paused = False
        self.scheduled = False
        exchange.registerProducer(self, True)
        exchange.start_response(
            200, [(b"Content-Type", b"application/octet-stream"), (b"Content-Length", b"%d" % size)]
        )
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            reactor.callLater(0, self._run)

    def _run(self) -> None:
        self.scheduled = False
        piece = b"d" * PIECE
        while not self.paused and self.remaining > 0 and not self.exchange.finished:
            size = min(PIECE, self.remaining)
            self.remaining -= size
            if self.remaining == 0:
                self.exchange.finish(piece[:size])
                return
            self.exchange.write(piece[:size])

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.remaining = 0


class Upload:
    """Reads a body, hashing it; holds the body back once ``hold_at`` bytes arrived."""

    def __init__(self, exchange: Exchange, hold_at: int | None, held: Callable[[Upload], None]):
        self.exchange = exchange
        self.digest = hashlib.sha256()
        self.size = 0
        self.hold_at = hold_at
        self.held = held
        exchange.receive_body(self)
        exchange.continue_body()

    def body_received(self, data: bytes) -> None:
        self.size += len(data)
        self.digest.update(data)
        if self.hold_at is not None and self.size >= self.hold_at:
            self.hold_at = None
            self.exchange.pause_body()
            self.held(self)

    def body_finished(self) -> None:
        body = json.dumps({"size": self.size, "sha256": self.digest.hexdigest()}).encode()
        self.exchange.start_response(200, [(b"Content-Type", b"application/json")])
        self.exchange.finish(body)

    def body_failed(self, reason: Exception) -> None:
        pass


class Echo:
    """A minimal WebSocket echo (RFC 6455 5.2) for text and close frames."""

    def __init__(self) -> None:
        self.buffer = b""
        self.tunnel: Tunnel | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                (length,) = struct.unpack("!H", self.buffer[2:4])
                offset = 4
            if len(self.buffer) < offset + 4 + length:
                return
            mask = self.buffer[offset : offset + 4]
            payload = bytes(
                byte ^ mask[index % 4]
                for index, byte in enumerate(self.buffer[offset + 4 : offset + 4 + length])
            )
            self.buffer = self.buffer[offset + 4 + length :]
            opcode = first & 0x0F
            assert self.tunnel is not None
            self.tunnel.write(_frame(opcode, payload))
            if opcode == 8:
                self.tunnel.close()
                return

    def connection_lost(self, reason: Failure) -> None:
        pass


def _frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask is not None else 0
    if len(payload) < 126:
        head += bytes([bit | len(payload)])
    else:
        head += bytes([bit | 126]) + struct.pack("!H", len(payload))
    if mask is None:
        return head + payload
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def download_after_the_head(port: int, size: int, may_read: threading.Event) -> tuple[int, int]:
    """GET /download?size through the proxy on ``port``; read the head, then nothing
    more until ``may_read`` is set (60 s turn a hang into a failure), then the rest.

    Returns:
        The status and the body bytes received.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(b"GET /download?%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        header, _, received_part = head.partition(b"\r\n\r\n")
        received = len(received_part)
        if not may_read.wait(60):
            raise AssertionError("the client was never let read")
        while received < size:
            data = sock.recv(1 << 20)
            if not data:
                break
            received += len(data)
        return int(header.split(b" ")[1]), received
    finally:
        sock.close()


class UpstreamApp:
    """The upstream's handler: a few paths the tests use.

    Attributes:
        name: answers in the ``X-Upstream`` field.
        peers: the client port of each request (to count connections).
        uploads: finished or held uploads.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: list[int] = []
        self.uploads: list[Upload] = []
        self.downloads: list[Download] = []
        self.hold_at: int | None = None
        self.on_hold: Callable[[Upload], None] = lambda upload: None
        self.resets = 0
        self.unavailable = 0  # requests answered 503, as by an instance restarting

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        self.peers.append(request.peer[1] if request.peer else 0)
        path = request.path
        if self.unavailable:
            self.unavailable -= 1
            body = b"restarting, " + b"x" * 100_000  # (more than one read)
            exchange.start_response(503, [(b"Content-Length", str(len(body)).encode())])
            exchange.finish(body)
            return
        if path == b"/upload":
            self.uploads.append(Upload(exchange, self.hold_at, self.on_hold))
            return
        if path == b"/download":
            self.downloads.append(Download(exchange, int(request.query)))
            return
        if path == b"/reset" and self.resets:
            self.resets -= 1
            exchange.abort()
            return
        if path == b"/ws" and exchange.upgradable:
            key = request.header(b"sec-websocket-key") or b""
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            echo = Echo()
            echo.tunnel = exchange.upgrade(
                [
                    (b"Upgrade", b"websocket"),
                    (b"Connection", b"Upgrade"),
                    (b"Sec-WebSocket-Accept", accept),
                ],
                echo,
            )
            return
        info = {
            "upstream": self.name,
            "method": request.method.decode(),
            "target": request.target.decode(),
            "headers": [[n.decode(), v.decode()] for n, v in request.headers],
        }
        body = json.dumps(info).encode()
        exchange.start_response(
            200,
            [
                (b"Content-Type", b"application/json"),
                (b"X-Upstream", self.name.encode()),
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
            ],
        )
        exchange.finish(body)


class HoldingApp:
    """An upstream that holds every request until told to answer, counting how many
    it holds at once and over which connections they came.
    """

    def __init__(self) -> None:
        self.held: list[Exchange] = []
        self.active = 0
        self.most = 0
        self.peers: set[int] = set()

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        self.peers.add(request.peer[1] if request.peer else 0)
        self.active += 1
        self.most = max(self.most, self.active)
        self.held.append(exchange)
        exchange.on_close(self._ended)

    def _ended(self, reason: Failure | None) -> None:
        self.active -= 1

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for exchange in held:
            exchange.start_response(200, [(b"Content-Length", b"2")])
            exchange.finish(b"ok")


class ProxySocketHarness(TestCase):
    """Listeners and a proxy on the real reactor, clients in threads (no tests here).

    ``options`` are the proxy mount's options; a subclass may set its own.
    """

    options: dict[str, Any] = OPTIONS
    directory_prefix = "twistwsgi-proxy-"

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=self.directory_prefix))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def listen(self, handler: Any, endpoint: str = "tcp:0:interface=127.0.0.1") -> int:
        factory = HTTPFactory(handler, settings=HttpSettings(max_body=0), clock=reactor)
        port: IListeningPort = await serverFromString(reactor, endpoint).listen(factory)

        async def stop() -> None:
            await maybeDeferred(port.stopListening)
            await factory.shut_down()

        self.addCleanup(stop)
        return getattr(port.getHost(), "port", 0)

    async def proxy(self, urls: list[str], **options: Any) -> tuple[ProxyHandler, int]:
        mount = MountConfig(
            "/", "proxy", tuple(Upstream(url) for url in urls), {**self.options, **options}, "test"
        )
        handler = build_proxy(mount, ServerConfig(), reactor=reactor)
        port = await self.listen(handler)

        async def close_pools() -> None:
            handler.close()
            for _ in range(1000):
                if not any(peer.target.connections for peer in handler.group.peers):
                    return
                await deferLater(reactor, 0.01, lambda: None)
            raise AssertionError("upstream connections did not close")

        self.addCleanup(close_pools)  # runs before the listeners' cleanups
        return handler, port

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await deferToThread(func, *args)


class ProxySocketTests(ProxySocketHarness):
    """Upstreams and a proxy on the real reactor, clients in threads."""

    async def upstream(
        self, name: str = "up", endpoint: str = "tcp:0:interface=127.0.0.1"
    ) -> tuple[UpstreamApp, int]:
        app = UpstreamApp(name)
        return app, await self.listen(app, endpoint)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds; the bound only turns a hang into a failure."""
        for _ in range(3000):
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("condition never held")

    def get(self, port: int, paths: list[str], headers: dict[str, str] | None = None) -> list[Any]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        results = []
        for path in paths:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            body = response.read()
            results.append((response.status, response.getheaders(), body))
        connection.close()
        return results

    # -- pooling, balancing, failover -----------------------------------------------------

    async def test_upstream_connections_are_pooled(self) -> None:
        """Thirty requests over three client connections reach the upstream over a
        single kept-alive connection; the client's fields and cookies come through.
        """
        app, upstream_port = await self.upstream()
        handler, port = await self.proxy([f"http://127.0.0.1:{upstream_port}"])
        for _ in range(3):
            results = await self.in_thread(self.get, port, [f"/n{i}?q=1" for i in range(10)])
            assert all(status == 200 for status, _, _ in results)
        self.assertEqual(len(app.peers), 30)
        self.assertEqual(len(set(app.peers)), 1)
        (connection,) = handler.group.peers[0].target.connections
        # Reads go to the connection itself, not through the endpoint's wrapper.
        transport: Any = connection.transport
        self.assertIs(transport.protocol, connection)
        _status, headers, body = results[0]
        info = json.loads(body)
        self.assertEqual(info["target"], "/n0?q=1")
        self.assertEqual([v for k, v in headers if k.lower() == "set-cookie"], ["a=1", "b=2"])
        sent = {name.lower(): value for name, value in info["headers"]}
        self.assertEqual(sent["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(sent["x-forwarded-proto"], "http")
        self.assertEqual(sent["host"], f"127.0.0.1:{port}")

    async def test_max_conns_queues_the_extra_requests(self) -> None:
        """Six concurrent clients through max_conns = 2: the upstream never holds more
        than two requests, the others wait in the proxy and are served in turn, all
        over the same two kept-alive upstream connections.
        """
        app = HoldingApp()
        upstream_port = await self.listen(app)
        handler, port = await self.proxy([f"http://127.0.0.1:{upstream_port}"], max_conns=2)
        clients = [deferToThread(self.get, port, ["/"]) for _ in range(6)]
        for waiting in (4, 2, 0):

            def reached(waiting: int = waiting) -> bool:
                return len(app.held) == 2 and len(handler.waiting) == waiting

            await self.wait_for(reached)
            app.answer_all()
        results = [await client for client in clients]
        self.assertEqual([result[0][0] for result in results], [200] * 6)
        self.assertEqual(app.most, 2)
        self.assertEqual(len(app.peers), 2)

    async def test_round_robin_over_two_upstreams(self) -> None:
        """Requests alternate between two upstreams."""
        _, first_port = await self.upstream("one")
        _, second_port = await self.upstream("two")
        _, port = await self.proxy(
            [f"http://127.0.0.1:{first_port}", f"http://127.0.0.1:{second_port}"]
        )
        results = await self.in_thread(self.get, port, ["/"] * 10)
        names = [dict(headers)["X-Upstream"] for _, headers, _ in results]
        self.assertEqual(names.count("one"), 5)
        self.assertEqual(names.count("two"), 5)

    async def test_failover_from_a_dead_upstream(self) -> None:
        """With one upstream refusing connections, every request is answered by the
        other, and the dead one is taken out after its first failure.
        """
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()  # nothing listens there now: connections are refused
        _, live_port = await self.upstream("live")
        handler, port = await self.proxy(
            [f"http://127.0.0.1:{dead_port}", f"http://127.0.0.1:{live_port}"]
        )
        results = await self.in_thread(self.get, port, ["/"] * 6)
        self.assertEqual([status for status, _, _ in results], [200] * 6)
        self.assertEqual({dict(h)["X-Upstream"] for _, h, _ in results}, {"live"})
        dead_peer = handler.group.peers[0]
        self.assertFalse(handler.balancer.usable(dead_peer, reactor.seconds()))

    async def test_get_retried_after_a_reset(self) -> None:
        """An upstream that drops a GET without answering: it goes to the other one."""
        flaky, flaky_port = await self.upstream("flaky")
        flaky.resets = 1
        _, good_port = await self.upstream("good")
        _, port = await self.proxy(
            [f"http://127.0.0.1:{flaky_port}", f"http://127.0.0.1:{good_port}"]
        )
        results = await self.in_thread(self.get, port, ["/reset"])
        self.assertEqual(results[0][0], 200)
        self.assertEqual(dict(results[0][1])["X-Upstream"], "good")

    async def test_a_503_is_retried_on_the_other_upstream(self) -> None:
        """With retry_statuses, a GET answered 503 by an instance restarting is
        answered by the other one; the restarting one is left out for the next.
        """
        restarting, restarting_port = await self.upstream("restarting")
        restarting.unavailable = 100
        _, good_port = await self.upstream("good")
        _, port = await self.proxy(
            [f"http://127.0.0.1:{restarting_port}", f"http://127.0.0.1:{good_port}"],
            retry_statuses=(503,),
        )
        results = await self.in_thread(self.get, port, ["/a", "/b", "/c"])
        self.assertEqual([status for status, _, _ in results], [200] * 3)
        self.assertEqual({dict(h)["X-Upstream"] for _, h, _ in results}, {"good"})
        self.assertEqual(restarting.unavailable, 99)

    async def test_refused_upstream_is_502(self) -> None:
        """A single upstream that refuses connections gives a 502."""
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        dead.close()
        _, port = await self.proxy([f"http://127.0.0.1:{dead_port}"])
        results = await self.in_thread(self.get, port, ["/"])
        self.assertEqual(results[0][0], 502)

    async def test_unix_socket_upstream(self) -> None:
        """A unix: upstream is reached over AF_UNIX."""
        path = self.directory / "up.sock"
        await self.upstream("unix", f"unix:{path}")
        _, port = await self.proxy([f"unix:{path}"])
        results = await self.in_thread(self.get, port, ["/over-unix"])
        self.assertEqual(results[0][0], 200)
        self.assertEqual(json.loads(results[0][2])["target"], "/over-unix")
        # With a prefix after the socket's path (nginx's http://unix:/path:/v2).
        _, port = await self.proxy([f"unix:{path}:/v2"])
        results = await self.in_thread(self.get, port, ["/over-unix?x=1"])
        self.assertEqual(json.loads(results[0][2])["target"], "/v2/over-unix?x=1")

    # -- TLS ------------------------------------------------------------------------------

    async def tls_upstream(self) -> tuple[int, Path]:
        endpoint, cert = tls_endpoint(self.directory)
        _, port = await self.upstream("tls", endpoint)
        return port, cert

    async def test_tls_upstream_verified_against_a_ca_file(self) -> None:
        """An https upstream whose certificate the configured CA file vouches for works."""
        upstream_port, cert = await self.tls_upstream()
        _, port = await self.proxy([f"https://127.0.0.1:{upstream_port}"], tls_ca=str(cert))
        results = await self.in_thread(self.get, port, ["/secure", "/again"])
        self.assertEqual([status for status, _, _ in results], [200, 200])

    async def test_tls_upstream_with_an_unknown_certificate_is_refused(self) -> None:
        """Verification is on by default: a self-signed upstream certificate is a 502;
        with tls_verify = false it is accepted.
        """
        upstream_port, _cert = await self.tls_upstream()
        _, port = await self.proxy([f"https://127.0.0.1:{upstream_port}"], retry=False)
        results = await self.in_thread(self.get, port, ["/"])
        self.assertEqual(results[0][0], 502)
        _, port = await self.proxy([f"https://127.0.0.1:{upstream_port}"], tls_verify=False)
        results = await self.in_thread(self.get, port, ["/"])
        self.assertEqual(results[0][0], 200)

    # -- streaming with flat memory ---------------------------------------------------------

    def track_memory(self, handler: ProxyHandler) -> dict[str, int]:
        """Sum what the proxy holds each time a body piece passes; keep the maximum."""
        stats = {"max": 0, "pieces": 0, "upstream_paused": 0, "client_paused": 0}
        original_body = _Forward.body_received
        original_data = _Forward.response_data
        original_sending = _Forward.sending_paused
        original_pause = ClientConnection.pause_reading

        def held(forward: Any) -> None:
            exchange = forward._exchange
            total = _buffered(exchange._protocol.transport) + exchange._body_pending_size
            connection = forward._conn
            if connection is not None:
                total += _buffered(connection.transport)
            total += sum(len(piece) for piece in forward._replay or ())
            stats["pieces"] += 1
            stats["max"] = max(stats["max"], total)

        def body_received(forward: Any, data: bytes) -> None:
            original_body(forward, data)
            held(forward)

        def response_data(forward: Any, data: bytes, complete: bool) -> None:
            original_data(forward, data, complete)
            held(forward)

        def sending_paused(forward: Any) -> None:
            stats["upstream_paused"] += 1
            original_sending(forward)

        def pause_reading(connection: ClientConnection) -> None:
            stats["client_paused"] += 1
            original_pause(connection)

        self.patch(_Forward, "body_received", body_received)
        self.patch(_Forward, "response_data", response_data)
        self.patch(_Forward, "sending_paused", sending_paused)
        self.patch(ClientConnection, "pause_reading", pause_reading)
        return stats

    async def test_100mb_chunked_upload_streams_with_flat_memory(self) -> None:
        """A 100 MB chunked upload reaches the upstream intact; while the upstream holds
        it back, the proxy stops reading the client, and what the proxy holds stays
        under 1 MiB throughout.
        """
        app, upstream_port = await self.upstream()
        handler, port = await self.proxy([f"http://127.0.0.1:{upstream_port}"])
        stats = self.track_memory(handler)
        held: list[Upload] = []
        app.hold_at = 8 * MB
        app.on_hold = held.append
        digest = hashlib.sha256()

        def pieces() -> Iterator[bytes]:
            block = os.urandom(PIECE)
            for number in range(BIG // PIECE):
                piece = block[number % 7 :] + block[: number % 7]
                digest.update(piece)
                yield piece

        def client() -> dict[str, Any]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("POST", "/upload", body=pieces(), encode_chunked=True)
            result: dict[str, Any] = json.loads(connection.getresponse().read())
            connection.close()
            return result

        done = deferToThread(client)
        await self.wait_for(lambda: bool(held))
        # The upstream is not reading: wait until that reached the client side.
        await self.wait_for(lambda: stats["upstream_paused"] > 0)
        held[0].exchange.resume_body()
        result = await done
        self.assertEqual(result["size"], BIG)
        self.assertEqual(result["sha256"], digest.hexdigest())
        self.assertGreater(stats["pieces"], 100)
        self.assertLess(stats["max"], MB)

    async def test_100mb_download_streams_with_flat_memory(self) -> None:
        """Without response buffering, a 100 MB response reaches the client intact;
        while the client does not read, the proxy stops reading the upstream, and what
        the proxy holds stays under 1 MiB.
        """
        _, upstream_port = await self.upstream()
        handler, port = await self.proxy(
            [f"http://127.0.0.1:{upstream_port}"], response_buffering=False
        )
        stats = self.track_memory(handler)
        may_read = threading.Event()

        done = deferToThread(download_after_the_head, port, BIG, may_read)
        # The client reads nothing after the head: the proxy must stop reading upstream.
        await self.wait_for(lambda: stats["client_paused"] > 0)
        may_read.set()
        status, received = await done
        self.assertEqual(status, 200)
        self.assertEqual(received, BIG)
        self.assertGreater(stats["pieces"], 100)
        self.assertLess(stats["max"], MB)

    async def test_with_buffering_the_upstream_is_done_before_a_slow_client_reads(
        self,
    ) -> None:
        """Response buffering (the default): a 20 MB response is read from the
        upstream whole, and its connection is back in the pool, while the client has
        read only the head; the client then gets all of it.
        """
        size = 20 * MB
        app, upstream_port = await self.upstream()
        handler, port = await self.proxy([f"http://127.0.0.1:{upstream_port}"])
        may_read = threading.Event()

        done = deferToThread(download_after_the_head, port, size, may_read)
        [peer] = handler.group.peers
        # Finished upstream, and its connection free for other requests (the
        # balancer counts none in progress), while the client waits to read.
        await self.wait_for(
            lambda: bool(app.downloads) and app.downloads[0].exchange.finished and not peer.active
        )
        self.assertFalse(may_read.is_set())
        may_read.set()
        status, received = await done
        self.assertEqual((status, received), (200, size))

    # -- WebSocket ----------------------------------------------------------------------------

    async def test_websocket_tunnel_with_a_raw_client(self) -> None:
        """A WebSocket handshake through the proxy gets the upstream's 101, and masked
        frames are echoed back through the tunnel; a close frame ends it.
        """
        _, upstream_port = await self.upstream()
        _, port = await self.proxy([f"http://127.0.0.1:{upstream_port}"])

        def client() -> tuple[bytes, bytes]:
            key = base64.b64encode(os.urandom(16))
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(4096)
                head, _, rest = data.partition(b"\r\n\r\n")
                expected = base64.b64encode(hashlib.sha1(key + _GUID).digest())
                assert b"Sec-WebSocket-Accept: " + expected in head, head
                sock.sendall(_frame(1, b"hello through the proxy", os.urandom(4)))
                while len(rest) < 2 + len(b"hello through the proxy"):
                    rest += sock.recv(4096)
                sock.sendall(_frame(8, b"", os.urandom(4)))
                tail = rest
                while True:
                    more = sock.recv(4096)
                    if not more:
                        break
                    tail += more
                return head.split(b"\r\n")[0], tail

        status_line, frames = await self.in_thread(client)
        self.assertEqual(status_line, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(frames[:2], b"\x81\x17")
        self.assertEqual(frames[2:25], b"hello through the proxy")
        self.assertEqual(frames[25:27], b"\x88\x00")  # the echoed close, then EOF

    async def test_websocket_tunnel_with_the_websockets_client(self) -> None:
        """The websockets library's client talks to the upstream through the proxy."""
        from websockets.sync import client as sync_client

        _, upstream_port = await self.upstream()
        _, port = await self.proxy([f"http://127.0.0.1:{upstream_port}"])

        def client() -> list[str | bytes]:
            replies: list[str | bytes] = []
            with sync_client.connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
                for text in ("one", "two", "x" * 300):
                    ws.send(text)
                    replies.append(ws.recv(timeout=30))
            return replies

        replies = await self.in_thread(client)
        self.assertEqual(replies, ["one", "two", "x" * 300])

    # -- the service, as twistd builds it ------------------------------------------------------

    async def test_proxy_mount_from_the_command_line(self) -> None:
        """--proxy /api=URL/v2 builds a running proxy through make_service; the mount
        prefix is replaced by the URL's path, and stopping the service closes the pool.
        """
        from twistwsgi.cli import load_config
        from twistwsgi.service import make_service

        _, upstream_port = await self.upstream()
        config = load_config(
            {
                "proxy": [f"/api=http://127.0.0.1:{upstream_port}/v2"],
                "listen": ["tcp:0:interface=127.0.0.1"],
                "access_log": "off",
                "threads": 0,
            }
        )
        service = make_service(config, reactor=reactor)
        service.startService()
        port = getattr(service.ports[0].getHost(), "port", 0)
        handler = service._router.table.handlers[0] if service._router else None
        assert isinstance(handler, ProxyHandler)
        results = await self.in_thread(self.get, port, ["/api/users?page=2", "/other"])
        self.assertEqual(results[0][0], 200)
        self.assertEqual(json.loads(results[0][2])["target"], "/v2/users?page=2")
        self.assertEqual(results[1][0], 404)
        await service.stopService()
        await self.wait_for(lambda: not handler.group.peers[0].target.connections)
