"""Real sockets on 127.0.0.1:0 with real clients: http.client, curl, httpx.

These cover what in-memory transports cannot: the kernel's TCP, TLS and UNIX-socket
paths, ``os.sendfile`` on a real socket, the worker pool handing work back to a real
reactor, and back-pressure from a client that does not read. Clients run in threads
(``deferToThread``) so the reactor keeps serving meanwhile. Every test closes its
listeners and waits for the server's connections to close.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tests import apps
from twistwsgi import cli
from twistwsgi.access_log import AccessLog
from twistwsgi.config import ServerConfig
from twistwsgi.http.protocol import HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.service import make_factory
from twistwsgi.testing import capture_log_events, worker_waits_for_the_client
from twistwsgi.threads import WorkerPool
from twistwsgi.wsgi import WSGIApplication

reactor: Any = global_reactor


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a UNIX socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._path)
        self.sock = sock


def write_self_signed_certificate(
    directory: Path,
    common_name: str = "localhost",
    names: tuple[str, ...] = ("localhost",),
    prefix: str = "",
) -> tuple[Path, Path]:
    """Write a throwaway certificate for 127.0.0.1 and ``names`` (key.pem, cert.pem in
    ``directory``, each name starting with ``prefix``, replaced if there); return
    (key, cert).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(name) for name in names),
                    x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path = directory / f"{prefix}key.pem"
    cert_path = directory / f"{prefix}cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def write_certificate_chain(directory: Path) -> tuple[Path, Path, Path]:
    """Write a root CA, an intermediate and a leaf for localhost; return the leaf's
    key, a full-chain file (leaf, then intermediate) and the root certificate.
    """
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: Any, issuer: str, signer: Any, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    middle_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = issue("Test Root", root_key, "Test Root", root_key, ca=True)
    middle = issue("Test Intermediate", middle_key, "Test Root", root_key, ca=True)
    leaf = issue("localhost", leaf_key, "Test Intermediate", middle_key, ca=False)
    pem = serialization.Encoding.PEM
    key_path = directory / "leaf-key.pem"
    key_path.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    fullchain = directory / "fullchain.pem"
    fullchain.write_bytes(leaf.public_bytes(pem) + middle.public_bytes(pem))
    root_path = directory / "root.pem"
    root_path.write_bytes(root.public_bytes(pem))
    return key_path, fullchain, root_path


def tls_endpoint(directory: Path) -> tuple[str, Path]:
    """An ssl: endpoint on 127.0.0.1 with a new self-signed certificate, and its file."""
    key, cert = write_self_signed_certificate(directory)
    return f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}", cert


def tls_exchange(
    address: tuple[str, int], cafile: Path, request: bytes, alpn: list[str] | None = None
) -> tuple[bytes, str | None]:
    """Send ``request`` over TLS and read until the server closes (blocking; run it in
    a thread). Returns what was received and the ALPN protocol chosen.

    A server that never closes makes this raise socket.timeout instead of returning.
    """
    context = ssl.create_default_context(cafile=str(cafile))
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(address, timeout=30)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
        return received, tls.selected_alpn_protocol()


class LoopbackTests(TestCase):
    """One server per test on the real reactor, with real worker threads."""

    def setUp(self) -> None:
        self.pool = WorkerPool(4, name="twistwsgi-socket-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def serve(
        self,
        app: WSGIApplication,
        endpoint: str = "tcp:0:interface=127.0.0.1",
        settings: HttpSettings | None = None,
        response_log: AccessLog | None = None,
        **options: Any,
    ) -> tuple[IListeningPort, HTTPFactory]:
        factory = make_factory(
            app,
            reactor=reactor,
            threadpool=self.pool,
            settings=settings,
            response_log=response_log,
            **options,
        )
        port: IListeningPort = await serverFromString(reactor, endpoint).listen(factory)

        async def stop() -> None:
            await maybeDeferred(port.stopListening)
            await factory.shut_down()

        self.addCleanup(stop)
        return port, factory

    def address(self, port: IListeningPort) -> tuple[str, int]:
        return ("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]

    def url(self, port: IListeningPort, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{port.getHost().port}{path}"  # type: ignore[attr-defined]

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await deferToThread(func, *args)

    async def test_an_idle_connection_closed_on_shutdown_gets_its_fin_at_once(self) -> None:
        """The kernel sends the FIN as the server finds the connection empty, before
        the reactor turns again: a keep-alive client then sees the close before it
        sends its next request, instead of a reset under that request.
        """
        port, factory = await self.serve(apps.hello)
        client = socket.create_connection(self.address(port), timeout=30)
        self.addCleanup(client.close)
        client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        parser.send(h11.EndOfMessage())
        client.setblocking(False)
        for _ in range(3000):  # the bound only turns a hang into a failure
            with contextlib.suppress(BlockingIOError):
                parser.receive_data(client.recv(65536))
            while parser.next_event() not in (h11.NEED_DATA, h11.PAUSED):
                pass
            if parser.their_state is h11.DONE:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(parser.their_state, h11.DONE)
        [connection] = factory.connections
        self.assertTrue(connection.close_if_idle())
        # The reactor thread waits here: a close left to its next turn never comes.
        readable, _, _ = select.select([client], [], [], 5)
        self.assertEqual(readable, [client])
        self.assertEqual(client.recv(1), b"")

    # -- http.client --------------------------------------------------------------------

    async def test_an_application_error_mid_response_leaves_what_was_sent(self) -> None:
        """An application that raises after its first chunk: the client gets the head
        and that chunk, then the connection closes without the last chunk, in the
        reactor thread as on the threadpool, over TCP and TLS. In the reactor thread
        the chunk waited in the batch's held writes, and over TLS in the socket's
        buffer; an abort threw them away and the client got nothing at all. The close
        is orderly (no reset, which would drop what the kernel still held unsent).
        """

        def first_then_raise(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first"
            raise RuntimeError("after the first chunk")

        tls, cert = tls_endpoint(self.directory)

        def client(address: tuple[str, int], over_tls: bool) -> bytes:
            raw = socket.create_connection(address, timeout=30)
            if over_tls:
                context = ssl.create_default_context(cafile=str(cert))
                raw = context.wrap_socket(raw, server_hostname="localhost")
            with raw:
                raw.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                received = b""
                while chunk := raw.recv(65536):
                    received += chunk
                return received

        for endpoint in ("tcp:0:interface=127.0.0.1", tls):
            for threadpool in (None, self.pool):
                factory = make_factory(first_then_raise, reactor=reactor, threadpool=threadpool)
                port: IListeningPort = await serverFromString(reactor, endpoint).listen(factory)
                self.addCleanup(port.stopListening)
                with capture_log_events():
                    received = await self.in_thread(
                        client, self.address(port), endpoint.startswith("ssl:")
                    )
                case = (endpoint[:3], "threadpool" if threadpool else "--threads 0", received)
                self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), case)
                self.assertIn(b"first", received, case)
                self.assertFalse(received.endswith(b"0\r\n\r\n"), case)
        self.flushLoggedErrors(RuntimeError)

    async def test_max_connections_holds_against_a_burst(self) -> None:
        """Thirty connections wait in the backlog, and Twisted accepts up to 100 in
        one read of the listening port: with max_connections = 5 all thirty were
        taken (the limit overshot). Five are taken; the others wait in the backlog,
        not reset, and each is served in turn as a served one closes.
        """
        port, factory = await self.serve(apps.hello, settings=HttpSettings(max_connections=5))
        factory.add_listener(port)
        # Connected before the reactor runs again: the kernel completes them all
        # into the listen backlog.
        clients = [socket.create_connection(self.address(port), timeout=30) for _ in range(30)]

        def close_clients() -> None:
            for client in clients:
                client.close()

        self.addCleanup(close_clients)
        with capture_log_events() as events:
            for _ in range(3000):  # the bound only turns a hang into a failure
                if factory.connections:
                    break
                await deferLater(global_reactor, 0.01, lambda: None)
            self.assertEqual(len(factory.connections), 5)

            def one_by_one() -> list[bytes]:
                answers = []
                for client in clients:  # in the order the kernel queued them
                    client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    received = b""
                    while chunk := client.recv(65536):
                        received += chunk
                    answers.append(received.split(b"\r\n", 1)[0])
                return answers

            answers = await self.in_thread(one_by_one)
        self.assertEqual(answers, [b"HTTP/1.1 200 OK"] * 30)
        self.assertFalse([e for e in events if "beyond max_connections" in formatEvent(e)])

    async def test_max_connections_lets_a_concurrent_burst_wait(self) -> None:
        """Forty clients at once against max_connections = 5, each closing after its
        answer: every one is served. Twisted grows its accept batch by 20 after a
        full one, so a batch was taken past the limit and its extra connections
        reset (20 of 40 in a review); the batch is now cut before each read.
        """
        port, factory = await self.serve(apps.hello, settings=HttpSettings(max_connections=5))
        factory.add_listener(port)
        address = self.address(port)

        def burst() -> list[bytes]:
            start = threading.Barrier(40)

            def one(_: int) -> bytes:
                start.wait()
                try:
                    with socket.create_connection(address, timeout=30) as client:
                        client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                        answer = b""
                        while chunk := client.recv(65536):
                            answer += chunk
                except ConnectionResetError:
                    return b"reset"
                return answer.split(b"\r\n", 1)[0]

            with concurrent.futures.ThreadPoolExecutor(40) as pool:
                return list(pool.map(one, range(40)))

        with capture_log_events() as events:
            answers = await self.in_thread(burst)
        self.assertEqual(answers, [b"HTTP/1.1 200 OK"] * 40)
        self.assertFalse([e for e in events if "beyond max_connections" in formatEvent(e)])

    async def test_at_the_limit_keep_alive_holds_until_a_client_waits(self) -> None:
        """With max_connections = 2 and two keep-alive clients, nobody waiting, each
        connection serves request after request (a pool sized to the limit keeps its
        connections; closing them made a client's next POST fail). Once a third
        client waits, the next response gives its connection up, and it gets in.
        """
        port, factory = await self.serve(apps.hello, settings=HttpSettings(max_connections=2))
        factory.add_listener(port)
        address = self.address(port)
        listening = port.fileno()  # type: ignore[attr-defined]

        def pool_then_newcomer() -> tuple[list[str | None], bytes]:
            pool = [http.client.HTTPConnection(*address, timeout=30) for _ in range(2)]
            for connection in pool:
                connection.connect()
            seen = []
            for method in ("GET", "POST", "GET", "POST"):
                for connection in pool:
                    connection.request(method, "/", body=b"x" if method == "POST" else None)
                    response = connection.getresponse()
                    response.read()
                    seen.append(response.getheader("Connection"))
                    assert response.status == 200
            newcomer = socket.create_connection(address, timeout=30)
            newcomer.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            # Until the kernel has queued it for accepting (the listening socket is
            # readable), the server cannot know that it waits.
            waiting = select.poll()
            waiting.register(listening, select.POLLIN)
            assert waiting.poll(30_000), "the newcomer never reached the backlog"
            pool[0].request("GET", "/")
            response = pool[0].getresponse()
            response.read()
            seen.append(response.getheader("Connection"))
            answer = b""
            while chunk := newcomer.recv(65536):
                answer += chunk
            newcomer.close()
            for connection in pool:
                connection.close()
            return seen, answer.split(b"\r\n", 1)[0]

        seen, answer = await self.in_thread(pool_then_newcomer)
        # The ninth response gives its connection up, with Connection: close or by
        # closing once done (whether its head was made before the server could see
        # the newcomer is a matter of scheduling); either way the newcomer gets in.
        self.assertEqual(seen[:8], [None] * 8)
        self.assertEqual(answer, b"HTTP/1.1 200 OK")

    async def test_an_upload_whose_client_left_while_waiting_is_not_run(self) -> None:
        """A POST of 512 KiB waits for the only thread, and its client resets the
        connection meanwhile. Reading had paused under the body, so the reset was
        not seen and the application ran it (an abandoned order carried out,
        logged 200). The kernel's TCP state shows the client gone: the application
        is not called, and the access log says 499.
        """
        release = threading.Event()
        called: list[str] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            if environ["PATH_INFO"] == "/block":
                release.wait(30)
            else:
                called.append(environ["PATH_INFO"])
                while environ["wsgi.input"].read(65536):
                    pass
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        pool = WorkerPool(1, name="twistwsgi-departed-test")
        pool.start()
        self.addCleanup(pool.stop)
        logged: list[Any] = []
        factory = make_factory(app, reactor=global_reactor, threadpool=pool)
        factory.response_log = logged.append
        port: IListeningPort = await serverFromString(
            global_reactor, "tcp:0:interface=127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        address = self.address(port)

        def clients() -> None:
            blocker = socket.create_connection(address, timeout=30)
            blocker.sendall(b"GET /block HTTP/1.1\r\nHost: a\r\n\r\n")
            upload = socket.create_connection(address, timeout=30)
            upload.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 524288\r\n\r\n")
            upload.setblocking(False)
            body = b"x" * 524288
            with contextlib.suppress(BlockingIOError):
                while body:
                    body = body[upload.send(body) :]
            # A reset: SO_LINGER with a zero timeout (RFC 9293 3.10.7.1 ABORT).
            upload_port = upload.getsockname()[1]
            upload.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            upload.close()
            # The thread is freed once the server's kernel has taken the reset in
            # (a busy machine may process it a moment later, when the request would
            # rightly run: the client was there when its thread took it).
            server_side = [
                connection
                for connection in list(factory.connections)
                if connection.transport.getPeer().port == upload_port  # type: ignore[attr-defined]
            ]
            for _ in range(1_000_000):  # the bound only turns a hang into a failure
                if not server_side or server_side[0].peer_closed():
                    break
                os.sched_yield()
            release.set()
            blocker.recv(65536)
            blocker.close()

        await self.in_thread(clients)
        for _ in range(3000):  # the bound only turns a hang into a failure
            if len(logged) == 2:
                break
            await deferLater(global_reactor, 0.01, lambda: None)
        self.assertEqual(called, [])
        statuses = {
            entry.request.target: entry.status or (499 if entry.client_closed else 444)
            for entry in logged
        }
        self.assertEqual(statuses, {b"/block": 200, b"/upload": 499})

    async def test_request_buffering_keeps_a_slow_upload_off_the_only_thread(self) -> None:
        """With request_buffering and one worker thread, half an upload sits in the
        server while another client's GET is answered; then the rest arrives and
        the application gets the whole body, described by its length. A chunked
        upload from http.client arrives with a CONTENT_LENGTH the same way.
        """

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            pieces = []
            while piece := environ["wsgi.input"].read(65536):
                pieces.append(piece)
            body = b"".join(pieces)
            start_response("200 OK", [("Content-Type", "text/plain")])
            described = environ.get("CONTENT_LENGTH", "").encode()
            return [b"%d %s %s" % (len(body), described, hashlib.sha256(body).hexdigest().encode())]

        pool = WorkerPool(1, name="twistwsgi-buffering-test")
        pool.start()
        self.addCleanup(pool.stop)
        factory = make_factory(
            app,
            reactor=global_reactor,
            threadpool=pool,
            settings=HttpSettings(max_body=0),
            request_buffering=True,
        )
        port: IListeningPort = await serverFromString(
            global_reactor, "tcp:0:interface=127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        address = self.address(port)
        body = os.urandom(3 * 1024 * 1024)
        expected = b"%d %d %s" % (len(body), len(body), hashlib.sha256(body).hexdigest().encode())

        def clients() -> tuple[bytes, bytes, bytes]:
            upload = http.client.HTTPConnection(*address, timeout=30)
            upload.putrequest("PUT", "/slow")
            upload.putheader("Content-Length", str(len(body)))
            upload.endheaders()
            upload.send(body[: len(body) // 2])
            other = http.client.HTTPConnection(*address, timeout=30)
            other.request("GET", "/other")
            meanwhile = other.getresponse().read()
            upload.send(body[len(body) // 2 :])
            uploaded = upload.getresponse().read()
            other.request("POST", "/chunked", body=iter([body[:1000], body[1000:]]))
            chunked = other.getresponse().read()
            upload.close()
            other.close()
            return meanwhile, uploaded, chunked

        meanwhile, uploaded, chunked = await self.in_thread(clients)
        self.assertEqual(meanwhile.split(b" ")[0], b"0")
        self.assertEqual(uploaded, expected)
        self.assertEqual(chunked, expected)

    async def test_http_client_reuses_one_connection(self) -> None:
        """Three requests go over one persistent connection."""
        port, _factory = await self.serve(apps.environ)

        def client() -> list[dict[str, str]]:
            connection = http.client.HTTPConnection("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
            seen = []
            for path in ("/a", "/b?x=1", "/c"):
                connection.request("POST", path, body=b"hello")
                response = connection.getresponse()
                seen.append(json.loads(response.read()))
                seen[-1]["peer_port"] = str(connection.sock.getsockname()[1])
            connection.close()
            return seen

        seen = await self.in_thread(client)
        self.assertEqual([s["PATH_INFO"] for s in seen], ["/a", "/b", "/c"])
        self.assertEqual(seen[1]["QUERY_STRING"], "x=1")
        self.assertEqual({s["body_length"] for s in seen}, {"5"})
        # One client socket for all three: the connection persisted.
        self.assertEqual(len({s["peer_port"] for s in seen}), 1)
        self.assertEqual(seen[0]["REMOTE_PORT"], seen[0]["peer_port"])

    async def test_pipelined_requests_over_a_socket(self) -> None:
        """Requests sent back to back on one socket are answered in order."""
        port, _ = await self.serve(apps.environ)

        def pipelined_client() -> list[str]:
            with socket.create_connection(("127.0.0.1", port.getHost().port)) as sock:  # type: ignore[attr-defined]
                sock.sendall(
                    b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % number for number in range(5))
                )
                paths: list[str] = []
                pending = b""
                while len(paths) < 5:
                    client = h11.Connection(h11.CLIENT)
                    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
                    client.send(h11.EndOfMessage())
                    if pending:
                        client.receive_data(pending)
                    body = b""
                    while True:
                        event = client.next_event()
                        if event is h11.NEED_DATA:
                            client.receive_data(sock.recv(65536))
                        elif isinstance(event, h11.Data):
                            body += event.data
                        elif isinstance(event, h11.EndOfMessage):
                            break
                    paths.append(json.loads(body)["PATH_INFO"])
                    pending = bytes(client.trailing_data[0])
                return paths

        paths = await self.in_thread(pipelined_client)
        self.assertEqual(paths, [f"/{number}" for number in range(5)])

    async def test_unix_socket(self) -> None:
        """A unix: endpoint serves over AF_UNIX; there is no peer address."""
        path = str(self.directory / "s.sock")
        await self.serve(apps.environ, f"unix:{path}")

        def client() -> dict[str, str]:
            connection = UnixHTTPConnection(path)
            connection.request("GET", "/over-unix")
            seen: dict[str, str] = json.loads(connection.getresponse().read())
            connection.close()
            return seen

        seen = await self.in_thread(client)
        self.assertEqual(seen["PATH_INFO"], "/over-unix")
        self.assertEqual(seen["REMOTE_ADDR"], "")

    # -- TLS ------------------------------------------------------------------------------

    async def test_tls_endpoint_says_https(self) -> None:
        """Over an ssl: endpoint the application sees wsgi.url_scheme https."""
        endpoint, cert = tls_endpoint(self.directory)
        port, _ = await self.serve(apps.environ, endpoint)

        def client() -> dict[str, str]:
            context = ssl.create_default_context(cafile=str(cert))
            with httpx.Client(verify=context) as session:
                response = session.get(self.url(port, "/secure", "https"))
                seen: dict[str, str] = response.json()
                return seen

        seen = await self.in_thread(client)
        self.assertEqual(seen["wsgi.url_scheme"], "https")
        self.assertEqual(seen["PATH_INFO"], "/secure")

    async def test_tls_sessions_resume_through_the_cli_endpoint(self) -> None:
        """A returning client resumes its TLS session with a ticket, TLS 1.2 and 1.3
        (Twisted turns tickets off; nginx resumes by default).
        """
        endpoint, cert = tls_endpoint(self.directory)
        factory = make_factory(apps.hello, reactor=reactor, threadpool=self.pool)
        port: IListeningPort = await cli._endpoint_for(reactor, endpoint).listen(factory)
        self.addCleanup(port.stopListening)
        without = ServerConfig(tls_session_tickets=False)
        port_without: IListeningPort = await cli._endpoint_for(reactor, endpoint, without).listen(
            factory
        )
        self.addCleanup(port_without.stopListening)
        address = self.address(port)

        def reused(maximum: ssl.TLSVersion, address: tuple[str, int]) -> list[bool | None]:
            context = ssl.create_default_context(cafile=str(cert))
            context.maximum_version = maximum
            session = None
            reuses: list[bool | None] = []
            for _ in range(2):
                raw = socket.create_connection(address, timeout=30)
                with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                    while tls.recv(65536):
                        pass  # a TLS 1.3 ticket comes after the handshake
                    reuses.append(tls.session_reused)
                    session = tls.session
            return reuses

        for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            self.assertEqual(await self.in_thread(reused, maximum, address), [False, True])
            # --tls-session-tickets false: every connection makes a full handshake.
            off = await self.in_thread(reused, maximum, self.address(port_without))
            self.assertEqual(off, [False, False])

    async def test_tls_min_version_13_refuses_a_tls12_client(self) -> None:
        """--tls-min-version 1.3 is nginx's ssl_protocols TLSv1.3."""
        endpoint, cert = tls_endpoint(self.directory)
        factory = make_factory(apps.hello, reactor=reactor, threadpool=self.pool)
        config = ServerConfig(tls_min_version="1.3")
        port: IListeningPort = await cli._endpoint_for(reactor, endpoint, config).listen(factory)
        self.addCleanup(port.stopListening)
        address = self.address(port)

        def handshake(maximum: ssl.TLSVersion) -> str:
            context = ssl.create_default_context(cafile=str(cert))
            context.maximum_version = maximum
            raw = socket.create_connection(address, timeout=30)
            try:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    return str(tls.version())
            except ssl.SSLError as error:
                return f"refused: {error.reason}"

        self.assertEqual(await self.in_thread(handshake, ssl.TLSVersion.TLSv1_3), "TLSv1.3")
        refused = await self.in_thread(handshake, ssl.TLSVersion.TLSv1_2)
        self.assertTrue(refused.startswith("refused"), refused)

    async def test_tls_connection_close_closes_the_socket(self) -> None:
        """A response to Connection: close over TLS ends with the TLS and TCP close."""
        endpoint, cert = tls_endpoint(self.directory)
        port, _ = await self.serve(apps.hello, endpoint)
        address = self.address(port)

        received, _ = await self.in_thread(
            tls_exchange, address, cert, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received)

    async def test_tls_refusal_reaches_the_client_before_the_close(self) -> None:
        """A request refused at its head over TLS gets its 413, then the close.

        The lingering close after a refusal must end TLS with close_notify after the
        response, not shut the TCP socket underneath while the TLS layer still holds
        the response (the client saw an empty reply).
        """
        endpoint, cert = tls_endpoint(self.directory)
        port, _ = await self.serve(
            apps.hello,
            endpoint,
            HttpSettings(max_body=1000),
        )
        address = self.address(port)

        upload = (
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 4096
        )

        def client() -> list[bytes]:
            return [tls_exchange(address, cert, upload)[0] for _ in range(5)]

        for received in await self.in_thread(client):
            self.assertTrue(received.startswith(b"HTTP/1.1 413 "), received)
            self.assertIn(b"Connection: close", received)

    async def test_tls_client_offering_only_http10_over_alpn_connects(self) -> None:
        """ALPN http/1.0 (curl --http1.0) is accepted, as nginx does."""
        endpoint, cert = tls_endpoint(self.directory)
        port, _ = await self.serve(apps.hello, endpoint)
        address = self.address(port)

        received, chosen = await self.in_thread(
            tls_exchange, address, cert, b"GET / HTTP/1.0\r\n\r\n", ["http/1.0"]
        )
        self.assertEqual(chosen, "http/1.0")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received)

    async def test_tls_full_chain_certificate_file_sends_the_intermediates(self) -> None:
        """certKey=fullchain.pem (certbot's) serves the chain, as nginx does: a client
        that trusts only the root verifies the server.
        """
        key, fullchain, root = write_certificate_chain(self.directory)
        description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={fullchain}"
        config = cli.load_config({"app": "tests.apps:hello", "listen": [description]})
        [(_, endpoint)] = cli.build_endpoints(reactor, config)
        factory = make_factory(apps.hello, reactor=reactor, threadpool=self.pool)
        port: IListeningPort = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        address = self.address(port)

        received, _ = await self.in_thread(
            tls_exchange, address, root, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(received.startswith(b"HTTP/1.1 200 "), received)

    async def test_plain_http_to_a_tls_port_gets_a_400_saying_so(self) -> None:
        """As nginx: "http://" to an HTTPS port is answered in plain text, not with an
        empty reply; a TLS client on the same port is served as before.
        """
        endpoint, cert = tls_endpoint(self.directory)
        port, _ = await self.serve(
            apps.hello,
            endpoint,
            response_log=AccessLog("", clock=reactor),
        )
        address = self.address(port)

        def plain_client() -> bytes:
            with socket.create_connection(address, timeout=30) as plain:
                plain.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                received = b""
                while chunk := plain.recv(65536):
                    received += chunk
                return received

        with capture_log_events() as events:
            received = await self.in_thread(plain_client)
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        client.receive_data(received)
        response = client.next_event()
        assert isinstance(response, h11.Response)
        self.assertEqual(response.status_code, 400)
        names = {name for name, _ in response.headers}
        self.assertLessEqual({b"date", b"server", b"connection"}, names)  # as every response
        body = client.next_event()
        assert isinstance(body, h11.Data)
        self.assertIn(b"HTTPS", body.data)
        [line] = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.access"]
        self.assertIn(f'"GET / HTTP/1.1" 400 {len(body.data)} ', line)
        served, _ = await self.in_thread(
            tls_exchange, address, cert, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(served.startswith(b"HTTP/1.1 200 "), served)

    async def test_a_client_leaving_a_tls_port_before_sending_is_no_error(self) -> None:
        endpoint, _ = tls_endpoint(self.directory)
        port, factory = await self.serve(apps.hello, endpoint)
        address = self.address(port)
        closed: Deferred[None] = Deferred()
        opened = factory.connection_opened

        def note_opened(connection: Any) -> bool:
            admitted = opened(connection)
            lost = connection.connectionLost

            def note_lost(reason: Any) -> None:
                lost(reason)
                closed.callback(None)

            connection.connectionLost = note_lost
            return admitted

        factory.connection_opened = note_opened  # type: ignore[method-assign]
        with capture_log_events() as events:
            await self.in_thread(lambda: socket.create_connection(address, timeout=30).close())
            await closed
        self.assertEqual([e for e in events if e.get("log_failure") or e.get("isError")], [])

    # A connection whose end never reaches the server fails in seconds, not trial's 120.
    test_a_client_leaving_a_tls_port_before_sending_is_no_error.timeout = 10  # type: ignore[attr-defined]

    async def test_tls_graceful_shutdown_closes_idle_connections(self) -> None:
        """Shutting down closes an idle keep-alive TLS connection rather than waiting."""
        endpoint, cert = tls_endpoint(self.directory)
        port, factory = await self.serve(apps.hello, endpoint)
        address = self.address(port)
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(address, timeout=30)
        self.addCleanup(raw.close)

        def first_response() -> tuple[ssl.SSLSocket, bytes]:
            # The handshake needs the reactor, so it happens off the reactor thread.
            tls = context.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            return tls, tls.recv(65536)

        tls, first = await self.in_thread(first_response)
        self.addCleanup(tls.close)
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "), first)
        await maybeDeferred(port.stopListening)
        await factory.shut_down()

        def rest() -> bytes:
            received: bytes = tls.recv(65536)
            return received

        self.assertEqual(await self.in_thread(rest), b"")

    # -- httpx ------------------------------------------------------------------------------

    async def test_httpx_streams_a_chunked_upload_back(self) -> None:
        """A chunked upload from httpx is echoed back as it is read."""
        port, _ = await self.serve(apps.echo)
        pieces = [os.urandom(50_000) for _ in range(20)]

        def client() -> bytes:
            with httpx.Client() as session:
                response = session.post(self.url(port, "/echo"), content=iter(pieces))
                self.assertEqual(response.status_code, 200)
                return response.content

        echoed = await self.in_thread(client)
        self.assertEqual(echoed, b"".join(pieces))

    # -- curl -----------------------------------------------------------------------------------

    def require_curl(self) -> str:
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed (make test installs it from Debian)")
        assert curl is not None
        return curl

    async def test_curl_expect_100_continue(self) -> None:
        """Curl's Expect: 100-continue upload gets 100 Continue, then the echo."""
        curl = self.require_curl()
        port, _ = await self.serve(apps.echo)
        body = self.directory / "upload.bin"
        body.write_bytes(os.urandom(300_000))

        def client() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [
                    curl,
                    "-sS",
                    "-v",
                    "--http1.1",
                    "-H",
                    "Expect: 100-continue",
                    "--data-binary",
                    f"@{body}",
                    self.url(port, "/echo"),
                ],
                capture_output=True,
                check=True,
            )

        result = await self.in_thread(client)
        self.assertEqual(result.stdout, body.read_bytes())
        self.assertIn(b"HTTP/1.1 100 Continue", result.stderr)

    async def test_curl_http2_on_http_reuses_its_connection(self) -> None:
        """Curl --http2 offers h2c on every http:// request; the offer is ignored
        (HTTP/1.1 answers) and the next URL goes over the same connection.
        """
        curl = self.require_curl()
        port, _ = await self.serve(apps.environ)

        def client() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [curl, "-sS", "-v", "--http2", self.url(port, "/a"), self.url(port, "/b")],
                capture_output=True,
                check=True,
            )

        result = await self.in_thread(client)
        self.assertIn(b"Upgrade: h2c", result.stderr)
        self.assertIn(b"Re-using existing connection", result.stderr)
        self.assertIn(b'"PATH_INFO": "/a"', result.stdout)
        self.assertIn(b'"PATH_INFO": "/b"', result.stdout)

    async def test_curl_head(self) -> None:
        """Curl -I sees the headers a GET would have, with no body."""
        curl = self.require_curl()
        port, _ = await self.serve(apps.hello)

        def client() -> bytes:
            return subprocess.run(
                [curl, "-sS", "-I", self.url(port)], capture_output=True, check=True
            ).stdout

        head = await self.in_thread(client)
        self.assertIn(b"HTTP/1.1 200 OK", head)
        self.assertIn(b"Content-Length: 13", head)

    # -- sendfile ---------------------------------------------------------------------------------

    async def test_file_wrapper_goes_out_with_sendfile(self) -> None:
        """A wsgi.file_wrapper response on plain TCP is sent with os.sendfile, arrives
        intact, and is counted whole for the access log as the kernel takes it.
        """
        path = self.directory / "big.bin"
        content = os.urandom(8 * 1024 * 1024)
        path.write_bytes(content)
        calls: list[int] = []
        real_sendfile = os.sendfile

        def counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
            calls.append(count)
            return real_sendfile(out_fd, in_fd, offset, count)

        self.patch(os, "sendfile", counting_sendfile)
        port, factory = await self.serve(apps.file)
        logged: list[Any] = []
        factory.response_log = logged.append

        def client() -> bytes:
            connection = http.client.HTTPConnection("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
            connection.request("GET", f"/?{path}")
            data = connection.getresponse().read()
            connection.close()
            return data

        received = await self.in_thread(client)
        self.assertEqual(hashlib.sha256(received).digest(), hashlib.sha256(content).digest())
        self.assertGreater(len(calls), 0)
        self.assertEqual([entry.body_sent for entry in logged], [len(content)])

    async def test_an_unchecked_twisted_gets_plain_writes_and_reads(self) -> None:
        """Under a Twisted version the direct paths were not checked against, nothing
        touches its connection internals: responses go through transport.write and a
        file is read in pieces, not sent with os.sendfile; both arrive intact.
        """
        from twistwsgi.http import sendfile, transport

        self.patch(transport, "DIRECT_WRITES", False)
        self.patch(sendfile, "DIRECT_WRITES", False)
        sends: list[int] = []

        def no_sendfile(*args: Any) -> int:
            sends.append(1)
            return 0

        self.patch(os, "sendfile", no_sendfile)
        path = self.directory / "data.bin"
        content = os.urandom(300_000)
        path.write_bytes(content)
        port, _ = await self.serve(apps.file)

        def client() -> tuple[bytes, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
            connection.request("GET", f"/?{path}")
            data = connection.getresponse().read()
            connection.request("GET", f"/?{path}")
            again = connection.getresponse().read()
            connection.close()
            return data, again

        data, again = await self.in_thread(client)
        self.assertEqual(data, content)
        self.assertEqual(again, content)
        self.assertEqual(sends, [])

    async def test_file_response_head_waits_for_the_file(self) -> None:
        """Before a file goes out with sendfile, its head is sent with MSG_MORE (as
        nginx's tcp_nopush does) so the two leave in full segments; the bytes arrive
        intact and in order.
        """
        path = self.directory / "big.bin"
        content = os.urandom(300_000)
        path.write_bytes(content)
        sends: list[tuple[bytes, int]] = []
        real_send = socket.socket.send

        def recording_send(sock: socket.socket, data: Any, flags: int = 0) -> int:
            sends.append((bytes(data[:12]), flags))
            return real_send(sock, data, flags)

        self.patch(socket.socket, "send", recording_send)
        port, _ = await self.serve(apps.file)

        def client() -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
            connection.request("GET", f"/?{path}")
            response = connection.getresponse()
            data = response.read()
            connection.close()
            return response.status, data

        status, received = await self.in_thread(client)
        self.assertEqual(status, 200)
        self.assertEqual(received, content)
        heads = [flags for start, flags in sends if start.startswith(b"HTTP/1.1 200")]
        self.assertEqual(heads, [socket.MSG_MORE])

    # -- back-pressure --------------------------------------------------------------------------

    async def test_a_client_that_does_not_read_stops_the_worker(self) -> None:
        """Without response buffering, a worker streaming to a client that does not
        read ends up waiting, with only the socket buffers' worth produced; reading
        resumes it.
        """
        produced: list[int] = []
        chunk = b"r" * 65536
        total_chunks = 1024  # 64 MiB
        blocked = threading.Event()

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "application/octet-stream")])

            def body() -> Any:
                for number in range(total_chunks):
                    produced.append(number)
                    yield chunk

            return body()

        port, _ = await self.serve(app, response_buffering=False)
        sock = socket.create_connection(("127.0.0.1", port.getHost().port))  # type: ignore[attr-defined]
        self.addCleanup(sock.close)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        def worker_waiting() -> bool:
            return worker_waits_for_the_client(self.pool.name)

        def wait_until_blocked() -> None:
            # Poll the worker's state; the deadline only turns a hang into a failure.
            deadline = threading.Event()
            for _ in range(2000):
                if worker_waiting():
                    blocked.set()
                    return
                deadline.wait(0.01)
            raise AssertionError("The worker never waited for the client")

        await self.in_thread(wait_until_blocked)
        stalled = len(produced)
        self.assertLess(stalled, total_chunks // 2)

        def drain() -> int:
            received = 0
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    return received
                received += len(data)
                if received >= total_chunks * len(chunk):
                    return received

        received = await self.in_thread(drain)
        self.assertGreaterEqual(received, total_chunks * len(chunk))
        self.assertEqual(len(produced), total_chunks)

    async def test_with_response_buffering_a_client_that_does_not_read_holds_no_worker(
        self,
    ) -> None:
        """With response buffering (the default), the application streams its whole
        32 MiB answer and is closed while the client has read nothing; the client
        then gets every byte, in order, from the spool.
        """
        chunk_size = 65536
        total_chunks = 512  # 32 MiB
        closed = threading.Event()

        class Body:
            def __iter__(self) -> Any:
                for number in range(total_chunks):
                    yield bytes([number % 251]) * chunk_size

            def close(self) -> None:
                closed.set()

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return Body()

        port, _ = await self.serve(app)
        sock = socket.create_connection(self.address(port))
        self.addCleanup(sock.close)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        # The deadline only turns a hang into a failure.
        self.assertTrue(await self.in_thread(closed.wait, 60), "the worker never finished")

        def read_all() -> bytes:
            pieces = []
            while data := sock.recv(1 << 20):
                pieces.append(data)
            return b"".join(pieces)

        raw = await self.in_thread(read_all)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(len(body), total_chunks * chunk_size)
        for number in range(total_chunks):
            piece = body[number * chunk_size : (number + 1) * chunk_size]
            self.assertEqual(piece, bytes([number % 251]) * chunk_size, number)


class LargeFileTests(TestCase):
    """A large static file goes out without its size showing in the server's memory."""

    SIZE = 256 * 1024 * 1024

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        # A sparse file: 256 MiB to send, almost nothing on disk.
        with (self.directory / "large.bin").open("wb") as handle:
            handle.truncate(self.SIZE)

    async def serve_files(self, endpoint: str) -> IListeningPort:
        from twistwsgi.http.protocol import HTTPFactory
        from twistwsgi.http.settings import HttpSettings
        from twistwsgi.routing import HostTable, Mount, MountTable, Router, RoutingTable
        from twistwsgi.static import StaticHandler, StaticOptions

        handler = StaticHandler(StaticOptions(root=str(self.directory)), now=global_reactor.seconds)
        table = RoutingTable(HostTable([], MountTable([Mount(b"", handler)])))
        factory = HTTPFactory(Router(table), settings=HttpSettings(), clock=reactor)
        port: IListeningPort = await serverFromString(reactor, endpoint).listen(factory)

        async def stop() -> None:
            await maybeDeferred(port.stopListening)
            await factory.shut_down()

        self.addCleanup(stop)
        return port

    async def fetch_measuring_memory(self, client: Callable[[], int]) -> tuple[int, int]:
        """Run ``client`` in a thread; return (bytes it received, peak bytes Python
        allocated meanwhile).
        """
        import tracemalloc

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            received = await deferToThread(client)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        return received, peak

    async def test_large_file_over_tcp_stays_out_of_memory(self) -> None:
        """256 MiB over plain TCP (sendfile): Python's memory grows by far less than
        a megabyte-sized fraction of the file.
        """
        port = await self.serve_files("tcp:0:interface=127.0.0.1")

        def client() -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]
            connection.request("GET", "/large.bin")
            response = connection.getresponse()
            received = 0
            while chunk := response.read(1 << 20):
                received += len(chunk)
            connection.close()
            return received

        received, peak = await self.fetch_measuring_memory(client)
        self.assertEqual(received, self.SIZE)
        # The client thread's own 1 MiB reads are counted too.
        self.assertLess(peak, 8 * 1024 * 1024)

    async def test_a_request_pipelined_behind_a_large_response_and_a_file_is_answered(
        self,
    ) -> None:
        """A 64 KiB response paused the protocol (Twisted's buffer was full); the file
        response after it took the producer's place and got the resume, so the app
        request behind them was never answered. Found by exploratory testing.
        """
        from twistwsgi.http.exchange import Handler
        from twistwsgi.http.protocol import HTTPFactory
        from twistwsgi.routing import HostTable, Mount, MountTable, Router, RoutingTable
        from twistwsgi.static import StaticHandler, StaticOptions
        from twistwsgi.wsgi import WSGIHandler

        files = self.directory / "files"
        files.mkdir()
        for size in (13, 65536, 131072):
            (files / f"f{size}").write_bytes(os.urandom(size))
        static = StaticHandler(StaticOptions(root=str(files)), now=global_reactor.seconds)
        app = WSGIHandler(apps.hello, reactor=reactor, threadpool=None)
        mounts: MountTable[Handler] = MountTable([Mount(b"/s", static), Mount(b"", app)])
        table = RoutingTable(HostTable([], mounts))
        factory = HTTPFactory(Router(table), settings=HttpSettings(), clock=reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(factory.shut_down)
        self.addCleanup(port.stopListening)
        requests = (
            b"GET /s/f13 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /s/f65536 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /s/f131072 HTTP/1.1\r\nHost: a\r\nRange: bytes=65530-65545\r\n\r\n"
            b"GET /app HTTP/1.1\r\nHost: a\r\n\r\n"
        )

        def client() -> list[int]:
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10) as sock:
                sock.sendall(requests)
                parser = h11.Connection(h11.CLIENT)
                statuses: list[int] = []
                for _ in range(4):
                    # h11 follows the requests (already sent raw) to frame each answer.
                    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
                    parser.send(h11.EndOfMessage())
                    while True:
                        event = parser.next_event()
                        if event is h11.NEED_DATA:
                            parser.receive_data(sock.recv(65536))  # times out if stuck
                        elif isinstance(event, h11.Response):
                            statuses.append(event.status_code)
                        elif isinstance(event, h11.EndOfMessage):
                            parser.start_next_cycle()
                            break
                return statuses

        self.assertEqual(await deferToThread(client), [200, 200, 206, 200])

    async def test_large_file_over_tls_is_sent_in_bounded_pieces(self) -> None:
        """256 MiB over TLS (no sendfile): read and written piece by piece as the
        client takes it, so memory stays bounded too.
        """
        endpoint, cert = tls_endpoint(self.directory)
        port = await self.serve_files(endpoint)

        def client() -> int:
            context = ssl.create_default_context(cafile=str(cert))
            connection = http.client.HTTPSConnection(
                "127.0.0.1",
                port.getHost().port,  # type: ignore[attr-defined]
                context=context,
            )
            connection.request("GET", "/large.bin")
            response = connection.getresponse()
            received = 0
            while chunk := response.read(1 << 20):
                received += len(chunk)
            connection.close()
            return received

        received, peak = await self.fetch_measuring_memory(client)
        self.assertEqual(received, self.SIZE)
        self.assertLess(peak, 16 * 1024 * 1024)
