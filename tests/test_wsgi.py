"""The PEP 3333 bridge, through raw bytes: environ, input, start_response, write(),
iteration, close(), file_wrapper, errors and back-pressure. Every application is
wrapped in ``wsgiref.validate.validator``; responses are parsed with h11.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast
from wsgiref.validate import validator

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from zope.interface import alsoProvides

from twistwsgi import wsgi
from twistwsgi.http.protocol import DISPATCH_BUFFER
from twistwsgi.http.settings import HttpSettings
from twistwsgi.http.transport import HOLD_LIMIT, end_batch, start_batch
from twistwsgi.testing import (
    CallQueue,
    Connection,
    PullingTransport,
    QueueingPool,
    RefusingPool,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    TrackingPool,
    capture_log_events,
    connect,
    parse_responses,
    worker_waits_for_the_client,
)
from twistwsgi.wsgi import (
    IN_FLIGHT_HIGH_WATER,
    ClientDisconnected,
    FileWrapper,
    WSGIHandler,
    waiting_requests,
)

App = Callable[[dict[str, Any], Any], Any]
HOST = b"Host: example.com\r\n"
TEXT = [("Content-Type", "text/plain")]


def serve(
    app: App,
    *,
    threaded: bool = True,
    script_name: bytes = b"",
    transport: StringTransport | None = None,
    validate: bool = True,
) -> Connection:
    """Serve ``app`` synchronously (the pool and reactor run calls at once)."""
    handler = WSGIHandler(
        validator(app) if validate else app,
        reactor=SynchronousReactorThreads(),
        threadpool=SynchronousThreadPool() if threaded else None,
        script_name=script_name,
    )
    return connect(handler, transport=transport)


MODES = [pytest.param(True, id="threads"), pytest.param(False, id="inline")]


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


class EnvironCapture:
    """Answers 200 and keeps the environ it was called with."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environ = dict(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


# -- environ --------------------------------------------------------------------------


@pytest.mark.parametrize("threaded", MODES)
def test_environ_has_every_pep3333_key(threaded: bool) -> None:
    """Every key PEP 3333 requires is there, plus wsgi.input_terminated."""
    capture = EnvironCapture()
    connection = serve(capture, threaded=threaded)
    connection.send(b"GET /a/b?x=1 HTTP/1.1\r\n" + HOST + b"\r\n")
    environ = capture.environ
    for key in (
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "wsgi.version",
        "wsgi.url_scheme",
        "wsgi.input",
        "wsgi.errors",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
        "wsgi.file_wrapper",
    ):
        assert key in environ, key
    assert environ["wsgi.input_terminated"] is True
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.multithread"] is threaded
    assert environ["wsgi.run_once"] is False
    assert environ["PATH_INFO"] == "/a/b"
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == "54321"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "80")
    assert environ["wsgi.url_scheme"] == "http"


def test_script_name_is_split_from_the_mount_prefix() -> None:
    """Mounted under /app, the prefix goes to SCRIPT_NAME and the rest to PATH_INFO."""
    capture = EnvironCapture()
    connection = serve(capture, script_name=b"/app")
    connection.send(b"GET /app/users/7 HTTP/1.1\r\n" + HOST + b"\r\n")
    assert capture.environ["SCRIPT_NAME"] == "/app"
    assert capture.environ["PATH_INFO"] == "/users/7"
    connection.send(b"GET /app HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (capture.environ["SCRIPT_NAME"], capture.environ["PATH_INFO"]) == ("/app", "")


def test_paths_are_latin1_decoded_bytes() -> None:
    """PEP 3333: PATH_INFO holds the decoded bytes as latin-1 str, so UTF-8 paths
    round-trip through .encode('latin-1').
    """
    capture = EnvironCapture()
    connection = serve(capture)
    connection.send(b"GET /caf%C3%A9/%20x HTTP/1.1\r\n" + HOST + b"\r\n")
    path = capture.environ["PATH_INFO"]
    assert path.encode("latin-1").decode("utf-8") == "/café/ x"
    assert capture.environ["REQUEST_URI"] == "/caf%C3%A9/%20x"


@pytest.mark.parametrize(
    ("host", "name", "port"),
    [
        (b"Example.COM:8080", "example.com", "8080"),
        (b"[::1]:8443", "[::1]", "8443"),
        (b"[::1]", "[::1]", "80"),
        (b"example.com", "example.com", "80"),
    ],
)
def test_server_name_and_port_come_from_host(host: bytes, name: str, port: str) -> None:
    """SERVER_NAME/SERVER_PORT come from Host, lower-cased, IPv6 brackets kept."""
    capture = EnvironCapture()
    connection = serve(capture)
    connection.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert (capture.environ["SERVER_NAME"], capture.environ["SERVER_PORT"]) == (name, port)


def test_server_name_falls_back_to_the_socket_without_host() -> None:
    """An HTTP/1.0 request without Host gets the listening address."""
    capture = EnvironCapture()
    connection = serve(capture)
    connection.send(b"GET / HTTP/1.0\r\n\r\n")
    assert (capture.environ["SERVER_NAME"], capture.environ["SERVER_PORT"]) == (
        "127.0.0.1",
        "8080",
    )


def test_url_scheme_is_https_over_tls() -> None:
    """On a TLS transport, wsgi.url_scheme is https and the default port 443."""
    transport = StringTransport()
    alsoProvides(transport, ISSLTransport)
    capture = EnvironCapture()
    connection = serve(capture, transport=transport)
    connection.send(b"GET / HTTP/1.1\r\nHost: secure.example\r\n\r\n")
    assert capture.environ["wsgi.url_scheme"] == "https"
    assert capture.environ["SERVER_PORT"] == "443"


def test_wsgi_errors_go_to_the_log() -> None:
    """Lines written to wsgi.errors become log events."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.errors"].write("first line\nsecond ")
        environ["wsgi.errors"].write("line\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", TEXT)
        return []

    with capture_log_events() as events:
        serve(app).send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    lines = [e["line"] for e in events if e.get("log_namespace") == "twistwsgi.wsgi.errors"]
    assert lines == ["first line", "second line"]


# -- wsgi.input -----------------------------------------------------------------------


def read_all_app(reader: Callable[[Any], bytes]) -> App:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = reader(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]

    return app


def read_in_pieces(stream: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        part = stream.read(3)
        if not part:
            return b"".join(parts)
        parts.append(part)


READERS: dict[str, Callable[[Any], bytes]] = {
    "read(n)": read_in_pieces,
    "readline": lambda stream: b"".join(iter(stream.readline, b"")),
    "readlines": lambda s: b"".join(s.readlines()),
    "iteration": b"".join,
}


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("reader", list(READERS))
def test_input_reads_a_chunked_body(reader: str, threaded: bool) -> None:
    """wsgi.input returns the decoded chunked body through every read method."""
    connection = serve(read_all_app(READERS[reader]), threaded=threaded)
    connection.send(
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"6\r\nline1\n\r\n8\r\nline2\nxy\r\n0\r\n\r\n"
    )
    [response] = parse_responses(connection.take())
    assert response.body == b"line1\nline2\nxy"


def test_readline_respects_its_size_limit() -> None:
    """readline(n) stops after n bytes even without a newline."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline(4)
        rest = stream.readline()
        start_response("200 OK", TEXT)
        return [first + b"|" + rest]

    connection = serve(app)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 9\r\n\r\nabcdefgh\n")
    assert parse_responses(connection.take())[0].body == b"abcd|efgh\n"


class StreamingUpload:
    """Real worker threads, with the test thread playing the reactor."""

    def __init__(self, app: App) -> None:
        self.calls = CallQueue()
        self.pool = TrackingPool(1)
        self.pool.start()
        handler = WSGIHandler(validator(app), reactor=self.calls, threadpool=self.pool)
        self.connection = connect(handler)

    def send(self, data: bytes) -> None:
        self.connection.send(data)
        self.calls.run_pending()

    def finish(self) -> bytes:
        self.calls.run_until(lambda: self.pool.idle)
        self.pool.stop()
        return self.connection.take()


def test_100_continue_is_sent_on_the_first_read_only() -> None:
    """With Expect: 100-continue the application runs before the body is sent, and
    100 Continue goes out only when it first reads wsgi.input.
    """
    reading = threading.Event()
    go_on = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        go_on.wait(10)
        reading.set()
        body = environ["wsgi.input"].read(5)
        start_response("200 OK", TEXT)
        return [body]

    upload = StreamingUpload(app)
    upload.send(b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert upload.connection.take() == b""  # the app runs, but has not read yet
    go_on.set()
    upload.calls.run_until(reading.is_set)
    upload.calls.run_until(lambda: b"100 Continue" in upload.connection.transport.value())
    upload.send(b"hello")
    responses = parse_responses(upload.finish())
    assert [r.status for r in responses] == [100, 200]
    assert responses[1].body == b"hello"


def test_refusing_an_upload_without_reading_sends_no_continue() -> None:
    """An application that answers without reading never causes 100 Continue, and
    the connection is closed after its answer.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("413 Content Too Large", [("Content-Type", "text/plain")])
        return [b"no thanks"]

    upload = StreamingUpload(app)
    upload.send(
        b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 500\r\nExpect: 100-continue\r\n\r\n"
    )
    raw = upload.finish()
    assert b"100 Continue" not in raw
    [response] = parse_responses(raw)
    assert response.status == 413
    assert response.header(b"connection") == b"close"


def test_large_upload_streams_through_a_bounded_buffer() -> None:
    """A body larger than every buffer reaches the application in pieces while
    the client is paused whenever the application falls behind.
    """
    total = 3 * 1024 * 1024
    received = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        size = 0
        while True:
            part = stream.read(65536)
            if not part:
                break
            size += len(part)
            received.append(size)
        start_response("200 OK", TEXT)
        return [str(size).encode()]

    upload = StreamingUpload(app)
    upload.connection.factory.settings = upload.connection.factory.settings
    upload.connection.protocol._settings = type(upload.connection.protocol._settings)(max_body=0)
    upload.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % total)
    piece = b"z" * 65536
    sent = 0
    transport = upload.connection.transport
    while sent < total:
        if transport.producerState == "paused":
            # The server stopped reading: only the application's reads resume it.
            upload.calls.run_until(lambda: transport.producerState == "producing")
            continue
        upload.send(piece)
        sent += len(piece)
    responses = parse_responses(upload.finish())
    assert responses[0].body == str(total).encode()


# -- start_response, write() and iteration ------------------------------------------


@pytest.mark.parametrize("threaded", MODES)
def test_list_response_goes_out_with_a_content_length(threaded: bool) -> None:
    """A one-element list response is sent whole, length-delimited."""
    connection = serve(hello, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    raw = connection.take()
    assert b"Content-Length: 13\r\n" in raw
    assert parse_responses(raw)[0].body == b"Hello, World!"


@pytest.mark.parametrize("threaded", MODES)
def test_generator_with_empty_chunks_is_streamed(threaded: bool) -> None:
    """A generator's chunks are sent in order; empty ones are skipped, not sent as
    the terminating chunk; start_response may be called inside the generator.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b"one "
        yield b""
        yield b"two"

    connection = serve(app, threaded=threaded)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert response.body == b"one two"


@pytest.mark.parametrize("threaded", MODES)
def test_write_callable_sends_before_the_iterable(threaded: bool) -> None:
    """Bytes passed to write() go out before those of the returned iterable."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    connection = serve(app, threaded=threaded)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert parse_responses(connection.take())[0].body == b"written returned"


@pytest.mark.parametrize("threaded", MODES)
def test_exc_info_before_headers_are_sent_replaces_the_response(threaded: bool) -> None:
    """start_response with exc_info before anything is sent replaces the status."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            import sys

            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"sorry"]

    connection = serve(app, threaded=threaded)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (503, b"sorry")


@pytest.mark.parametrize("threaded", MODES)
def test_exc_info_after_headers_are_sent_reraises_and_aborts(threaded: bool) -> None:
    """start_response with exc_info after the head went out re-raises; the server
    can only abort the connection.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise ValueError("late")
        except ValueError:
            import sys

            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    connection = serve(app, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert connection.is_closed()
    assert b"never" not in connection.take()


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("late", [b" and an error page", b""])
def test_an_application_going_on_after_exc_info_was_re_raised_is_aborted(
    threaded: bool, late: bytes
) -> None:
    """PEP 3333: with the head sent, start_response re-raises exc_info, and "it is not
    safe for the application to attempt error output to the browser". One that catches
    the re-raise too and yields on (its error page, or nothing more) would have its
    response finished as if whole: the half body, then the error text, a last chunk.
    It is aborted instead, and nothing it yields after the re-raise is sent. No
    validator here: it refuses the exc_info call itself.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial,"
        try:
            raise ValueError("late")
        except ValueError:
            with contextlib.suppress(ValueError):
                start_response("500 Internal Server Error", [], sys.exc_info())
        if late:
            yield late

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert connection.is_closed()
    wire = connection.take()
    assert b"error page" not in wire
    [response] = parse_responses(wire, complete=False)
    assert response.body == b"partial,"
    assert not wire.endswith(b"0\r\n\r\n")  # no last chunk: the client sees the cut
    [failure] = [event["log_failure"] for event in events if "log_failure" in event]
    assert "re-raised its exc_info" in str(failure.value)
    assert isinstance(failure.value.__cause__, ValueError)  # the application's own error


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_whole_body_shorter_than_its_content_length_is_a_500(
    threaded: bool, method: bytes
) -> None:
    """A list body is known whole before anything is sent: one shorter than its
    Content-Length is the application's error, answered 500 before any byte of it
    (the brief's rule: a 500 while nothing is out, an abort once bytes are). The head,
    the short body and a cut connection left the client a 200 it could only see was
    broken by its length; a proxy passed that 200 on. A HEAD answer carries no body:
    its length is the GET's, and stays. No validator here: it refuses the short body.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"hello"]

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events() as events:
        connection.send(method + b" / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take(), [method])
    if method == b"HEAD":
        assert (response.status, response.header_values(b"content-length")) == (200, [b"10"])
        return
    assert (response.status, response.body) == (500, b"Internal Server Error\n")
    assert not connection.is_closed()  # a well-framed answer: the connection serves on
    assert any("Content-Length" in formatEvent(event) for event in events)


@pytest.mark.parametrize("threaded", MODES)
def test_start_response_twice_without_exc_info_is_an_error(threaded: bool) -> None:
    """A second start_response without exc_info is an application error: 500."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", TEXT)
        start_response("201 Created", TEXT)
        return [b""]

    connection = serve(app, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert parse_responses(connection.take())[0].status == 500


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize(
    "headers",
    [
        [("X-Evil", "a\r\nSet-Cookie: x=1")],
        [("Bad Name", "x")],
        [("X-Bytes", b"bytes")],
        ("not", "a list"),
    ],
    ids=["newline-in-value", "space-in-name", "bytes-value", "tuple-not-list"],
)
def test_invalid_response_headers_are_a_500(threaded: bool, headers: Any) -> None:
    """Headers that would corrupt the response (header injection) are refused when
    start_response is called; the client gets a 500, not the bad bytes.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"body"]

    connection = serve(app, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    raw = connection.take()
    assert b"Set-Cookie" not in raw
    assert parse_responses(raw)[0].status == 500


@pytest.mark.parametrize("threaded", MODES)
def test_exception_before_headers_is_a_500_with_the_traceback_in_the_log(
    threaded: bool,
) -> None:
    """An application exception before anything is sent becomes a 500; the
    traceback is logged, not sent; the connection keeps serving.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("secret detail")
        start_response("200 OK", TEXT)
        return [b"fine"]

    with capture_log_events() as events:
        connection = serve(app, threaded=threaded)
        connection.send(b"GET /boom HTTP/1.1\r\n" + HOST + b"\r\n")
        connection.send(b"GET /ok HTTP/1.1\r\n" + HOST + b"\r\n")
    first, second = parse_responses(connection.take())
    assert first.status == 500
    assert b"secret" not in first.body
    assert second.body == b"fine"
    failures = [e for e in events if "log_failure" in e]
    assert any("secret detail" in str(e["log_failure"].value) for e in failures)


def str_list(environ: dict[str, Any], start_response: Any) -> list[Any]:
    start_response("200 OK", TEXT)
    return ["text"]


def mixed_list(environ: dict[str, Any], start_response: Any) -> list[Any]:
    start_response("200 OK", TEXT)
    return [b"a", "b"]


def str_first_chunk(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
    start_response("200 OK", TEXT)
    yield "a"


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("app", [str_list, mixed_list, str_first_chunk])
def test_str_body_items_are_a_500_and_the_connection_keeps_serving(
    threaded: bool, app: App
) -> None:
    """PEP 3333 body items are bytes: a str item before anything is sent is an
    application error (500, logged), not a response cut short or a bare chunk.

    No validator around the app: it would raise first and hide the server's check.
    """
    with capture_log_events() as events:
        connection = serve(app, threaded=threaded, validate=False)
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    first, second = parse_responses(connection.take())
    assert first.status == 500 and second.status == 500
    failures = [e["log_failure"].value for e in events if "log_failure" in e]
    assert len(failures) == 2 and all(isinstance(value, TypeError) for value in failures)


@pytest.mark.parametrize("threaded", MODES)
def test_str_chunk_after_the_head_aborts(threaded: bool) -> None:
    """A str chunk after body bytes went out: the response cannot be fixed, so the
    connection is dropped rather than ended as if complete.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
        start_response("200 OK", TEXT)
        yield b"partial"
        yield "oops"

    connection = serve(app, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert connection.is_closed()
    assert not connection.take().endswith(b"0\r\n\r\n")


# -- no more body than the response can carry ---------------------------------------------


class Stream:
    """A streamed body that never ends (Server-Sent Events), counting what is pulled."""

    def __init__(self, chunk: bytes = b"data: tick\n\n", headers: list[Any] = TEXT) -> None:
        self.chunk = chunk
        self.headers = headers
        self.pulled = 0
        self.closed = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/next":
            return hello(environ, start_response)
        start_response(environ.get("HTTP_X_STATUS", "200 OK"), self.headers)
        return self

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> bytes:
        self.pulled += 1
        if self.pulled > 100_000:  # the bug: the server pulls for ever
            raise RuntimeError("pulled without end")
        return self.chunk

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("batched", [False, True], ids=["", "in-a-batch"])
@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"HEAD / HTTP/1.1\r\n", "200 OK"),
        (b"GET / HTTP/1.1\r\nX-Status: 204 No Content\r\n", "204 No Content"),
        (b"GET / HTTP/1.1\r\nX-Status: 304 Not Modified\r\n", "304 Not Modified"),
    ],
)
def test_a_response_without_content_stops_pulling_an_endless_body(
    threaded: bool, batched: bool, request_line: bytes, status: str
) -> None:
    """HEAD to a streaming view (Django routes HEAD to the GET view): the server
    pulled the endless body for ever, discarding it, with a thread at 100 % (the
    whole reactor with --threads 0), close() never called, and the next request on
    the connection never answered. It stops once the head is out (PEP 3333:
    "stop iterating over the response when enough data has been sent"), in a batch
    of events too (where pieces of a body of unknown length are pulled to be joined).
    """
    stream = Stream(headers=TEXT if status == "200 OK" else [])  # (none on 204/304)
    connection = serve(stream, threaded=threaded)
    with one_batch() if batched else contextlib.nullcontext():
        connection.send(request_line + HOST + b"\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    method = b"HEAD" if request_line.startswith(b"HEAD") else b"GET"
    first, second = parse_responses(connection.take(), [method, b"GET"])
    assert (first.status, first.body) == (int(status[:3]), b"")
    assert (second.status, second.body) == (200, b"Hello, World!")
    assert (stream.pulled, stream.closed) == (1, 1)


@pytest.mark.parametrize("threaded", MODES)
def test_a_body_longer_than_its_content_length_is_not_pulled_past_it(threaded: bool) -> None:
    """A Content-Length for the first row of an export: the rest was pulled to its end
    (an endless one for ever), with one error line per extra chunk (177,000 lines in
    3 s in the audit). The body stops at the length, the next request is answered,
    and at most one line says the response was cut.
    """
    stream = Stream(b"0123456789", [("Content-Type", "text/csv"), ("Content-Length", "15")])
    connection = serve(stream, threaded=threaded)
    with capture_log_events() as events:
        connection.send(
            b"GET / HTTP/1.1\r\n" + HOST + b"\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n"
        )
    first, second = parse_responses(connection.take())
    assert first.body == b"012345678901234"
    assert second.body == b"Hello, World!"
    assert (stream.pulled, stream.closed) == (2, 1)
    lines = [formatEvent(e) for e in events if e["log_level"].name == "error"]
    assert lines == [
        "The response to GET / is longer than its Content-Length; the rest was dropped"
    ]


@pytest.mark.parametrize("threaded", MODES)
def test_an_application_may_read_its_upload_after_writing_its_whole_answer(
    threaded: bool,
) -> None:
    """An echo that declares the upload's length and writes it back as it reads: once
    the Content-Length was reached the exchange ended, its wsgi.input with it, and
    the last read (the one that finds the end) raised ClientDisconnected.
    """

    def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = environ["CONTENT_LENGTH"]
        write = start_response("200 OK", [*TEXT, ("Content-Length", length)])
        while chunk := environ["wsgi.input"].read(4):
            write(chunk)
        return []

    connection = serve(echo, threaded=threaded)
    with capture_log_events() as events:
        connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n0123456789")
        connection.send(b"GET /next HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nab")
    first, second = parse_responses(connection.take())
    assert (first.status, first.body, second.body) == (200, b"0123456789", b"ab")
    assert [formatEvent(e) for e in events] == []


@pytest.mark.parametrize("threaded", MODES)
def test_writes_once_nothing_more_can_be_sent_are_dropped_quietly(threaded: bool) -> None:
    """A HEAD answered with write() calls (an application that does not know HEAD):
    the writes after the head raised ClientDisconnected, as if the client had left.
    They are dropped without an error, and the exchange ends when the application
    returns.
    """
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        for piece in (b"a", b"b", b"c"):
            write(piece)
            calls.append(environ["REQUEST_METHOD"] + " " + piece.decode())
        return []

    connection = serve(app, threaded=threaded)
    with capture_log_events() as events:
        connection.send(
            b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n"
        )
    head, second = parse_responses(connection.take(), [b"HEAD", b"GET"])
    assert (head.status, head.body, second.status) == (200, b"", 200)
    assert calls[:3] == ["HEAD a", "HEAD b", "HEAD c"]
    assert [
        formatEvent(e) for e in events if e["log_level"].name in ("info", "warn", "error")
    ] == []


@pytest.mark.parametrize("threaded", MODES)
def test_a_length_only_the_protocol_reads_still_ends_the_stream(threaded: bool) -> None:
    """A Content-Length repeated with one value: the worker does not read lengths it
    cannot be sure of, so the exchange tells it the body is full; the stream stops
    there and the response ends (the next request is answered).
    """
    lengths = [("Content-Length", "10"), ("Content-Length", "10")]
    stream = Stream(b"0123456789", [*TEXT, *lengths])
    connection = serve(stream, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    first, second = parse_responses(connection.take())
    assert (first.body, second.body) == (b"0123456789", b"Hello, World!")
    assert stream.pulled <= 2 and stream.closed == 1


def test_a_stream_of_empty_chunks_stops_when_its_client_leaves() -> None:
    """A Server-Sent Events view yields b"" while it waits for events (PEP 3333's
    "nothing yet"): the worker skipped those without looking whether the client was
    still there, and held the thread until the view's own timeout.
    """
    pulled: list[bytes] = []
    closed: list[bool] = []

    class Events:
        def __iter__(self) -> Iterator[bytes]:
            yield b"data: first\n\n"
            connection.protocol.connectionLost(Failure(ConnectionLost()))  # the tab closed
            while len(pulled) < 1000:  # the view's own timeout
                pulled.append(b"")
                yield b""

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Events:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return Events()

    connection = serve(app)
    connection.send(b"GET /events HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(pulled) <= 1 and closed == [True]


@pytest.mark.parametrize("threaded", MODES)
def test_empty_chunks_after_a_full_body_end_the_response(threaded: bool) -> None:
    """A Content-Length only the protocol reads (repeated), filled by the first chunk,
    then a stream of b"": the response ends there instead of after the stream.
    """
    pulled: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/next":
            start_response("200 OK", TEXT)
            yield b"next"
            return
        start_response("200 OK", [*TEXT, ("Content-Length", "4"), ("Content-Length", "4")])
        yield b"full"
        while len(pulled) < 1000:
            pulled.append(b"")
            yield b""

    connection = serve(app, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    first, second = parse_responses(connection.take())
    assert (first.body, second.body) == (b"full", b"next")
    assert len(pulled) <= 1


@contextlib.contextmanager
def one_worker() -> Iterator[tuple[CallQueue, TrackingPool]]:
    """One real worker thread, and a reactor whose calls the test runs (CallQueue)."""
    calls = CallQueue()
    pool = TrackingPool(1)
    pool.start()
    try:
        yield calls, pool
    finally:
        pool.stop()


def test_a_worker_stops_at_the_length_before_the_reactor_has_sent_anything() -> None:
    """The worker runs ahead of the reactor (up to IN_FLIGHT_HIGH_WATER queued): it
    knows from the head itself when the body is complete, and stops there.
    """
    stream = Stream(b"0123456789", [*TEXT, ("Content-Length", "20")])
    with one_worker() as (calls, pool):
        connection = connect(WSGIHandler(validator(stream), reactor=calls, threadpool=pool))
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(lambda: stream.closed == 1)
        calls.run_until(lambda: pool.idle)
    assert stream.pulled == 2
    [response] = parse_responses(connection.take())
    assert response.body == b"01234567890123456789"


def test_pieces_handed_over_while_the_reactor_is_busy_go_out_in_one_write() -> None:
    """Body pieces a worker yields before the reactor gets to them are sent together:
    one chunk and one write for all that came meanwhile (after the first, which
    goes with the head), in order, rather than one of each per piece.
    """
    iterated = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        try:
            yield from (b"ab", b"cd", b"ef", b"gh", b"ij")
        finally:
            iterated.set()

    with one_worker() as (calls, pool):
        transport = StringTransport()
        connection = connect(
            WSGIHandler(validator(app), reactor=calls, threadpool=pool), transport=transport
        )
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert iterated.wait(10)  # every piece handed over; the reactor ran nothing yet
        calls.run_until(lambda: pool.idle)
    raw = connection.take()
    assert raw.partition(b"\r\n\r\n")[2] == b"2\r\nab\r\n8\r\ncdefghij\r\n0\r\n\r\n"
    [response] = parse_responses(raw)
    assert response.body == b"abcdefghij"


@pytest.mark.parametrize("threaded", MODES)
def test_a_205_carries_no_content(threaded: bool) -> None:
    """RFC 9110 15.3.6: a server MUST NOT generate content in a 205; it says
    Content-Length: 0 (the application's body was sent).
    """

    def reset(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("205 Reset Content", [*TEXT, ("Content-Length", "11")])
        return [b"body-on-205"]

    connection = serve(reset, threaded=threaded)
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    [line] = [formatEvent(e) for e in events if e["log_level"].name == "error"]
    assert "is a 205, which carries no content" in line
    assert response.status == 205
    assert response.body == b""
    assert [v for n, v in response.headers if n == b"content-length"] == [b"0"]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (
            [("Date", "Mon, 01 Jan 2001 00:00:00 GMT"), ("Date", "Tue, 02 Jan 2001 00:00:00 GMT")],
            "Dropped a second Date field",
        ),
        ([("Server", "one"), ("Server", "two")], "Dropped a second Server field"),
        ([("Transfer-Encoding", "chunked")], "Dropped Transfer-Encoding: chunked"),
        ([("Content-Length", "abc")], "Dropped an invalid Content-Length: b'abc'"),
        ([("Content-Length", "3"), ("Content-Length", "5")], "Dropped conflicting Content-Length"),
    ],
)
def test_fields_the_server_drops_are_logged_with_the_request(
    headers: list[tuple[str, str]], problem: str
) -> None:
    """A repeated Date or Server (RFC 9110 5.3, 6.6.1) keeps its first value; a
    Transfer-Encoding from the application (which would be chunked twice) is dropped;
    each is one line naming the request, so the view at fault can be found.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"abc"]

    # Not validated: wsgiref's validator refuses hop-by-hop fields itself.
    connection = serve(app, validate=False)
    with capture_log_events() as events:
        connection.send(b"GET /report?x=1 HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert response.body == b"abc"
    for name in (b"date", b"server"):
        values = [v for n, v in response.headers if n == name]
        assert len(values) == 1
        if name in {n.lower().encode() for n, _ in headers}:
            assert values[0] == {n.lower().encode(): v.encode() for n, v in reversed(headers)}[name]
    [line] = [formatEvent(e) for e in events if e["log_level"].name == "error"]
    assert line.startswith(problem) and line.endswith(", in the response to GET /report?x=1")


class Kind(enum.StrEnum):
    CSV = "text/csv"


class Header(NamedTuple):
    name: str
    value: str


class Marked(str):
    """A str subclass, as Django's SafeString (what format_html returns)."""


@pytest.mark.parametrize("threaded", MODES)
def test_header_items_of_str_and_tuple_subclasses_are_taken_as_plain_ones(
    threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Django's SafeString, a StrEnum member, a named tuple: a 500 right after a
    start, then accepted once an equal plain pair had been sent by any response (the
    cache was looked up before the types were checked). They are a str and a tuple
    (PEP 3333's native strings), taken for the characters they hold, every time;
    a list, which is not a tuple, is refused every time.
    """
    items: list[Any] = [
        ("Content-Type", Kind.CSV),
        ("Content-Disposition", Marked('attachment; filename="r.csv"')),
        Header("X-Frame-Options", "DENY"),
    ]
    monkeypatch.setattr(wsgi, "_header_cache", {})  # as just after a start

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        plain = environ["PATH_INFO"] == "/plain"
        if environ["PATH_INFO"] == "/list":
            start_response("200 OK", [["X-Frame-Options", "DENY"]])
        else:
            start_response("200 OK", [tuple(map(str, i)) if plain else i for i in items])
        return [b"a,b\n"]

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events():
        for path in (b"/typed", b"/plain", b"/typed", b"/list"):
            connection.send(b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    typed, plain, again, listed = parse_responses(connection.take())
    assert typed.status == plain.status == again.status == 200
    assert typed.headers == plain.headers == again.headers
    assert (b"content-type", b"text/csv") in typed.headers
    assert (b"content-disposition", b'attachment; filename="r.csv"') in typed.headers
    assert listed.status == 500


@pytest.mark.parametrize("threaded", MODES)
def test_a_header_list_sent_again_is_checked_and_encoded_once(
    threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application's same headers, response after response: read from the first.

    The responses are the same whichever way (a HEAD's too, which has no content).
    """
    monkeypatch.setattr(wsgi, "_facts_cache", {})
    encoded: list[object] = []
    encode = wsgi._encode_headers

    def counting(headers: list[tuple[str, str]]) -> tuple[list[tuple[bytes, bytes]], bool]:
        encoded.append(headers)
        return encode(headers)

    monkeypatch.setattr(wsgi, "_encode_headers", counting)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]

    connection = serve(app, threaded=threaded)
    methods = [b"GET", b"GET", b"HEAD", b"GET"]
    for method in methods:
        connection.send(method + b" / HTTP/1.1\r\n" + HOST + b"\r\n")
    first, second, head, last = parse_responses(connection.take(), methods)
    assert len(encoded) == 1  # (the first response's list)
    assert first.headers == second.headers == head.headers == last.headers
    assert first.body == second.body == last.body == b"hello"
    assert head.body == b""


class LooksLikeAPair:
    """Not a tuple, though equal to one (and hashed alike)."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self.pair = pair

    def __eq__(self, other: object) -> bool:
        return other == self.pair

    def __hash__(self) -> int:
        return hash(self.pair)


@pytest.mark.parametrize("threaded", MODES)
def test_a_header_list_merely_equal_to_one_seen_is_checked(threaded: bool) -> None:
    """An item equal to a pair of a list sent before, but no tuple, is refused each time."""
    pair = ("X-Frame-Options", "DENY")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        fake = environ["PATH_INFO"] == "/fake"
        start_response("200 OK", [LooksLikeAPair(pair) if fake else pair])
        return [b"ok"]

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events():
        for path in (b"/plain", b"/fake", b"/plain", b"/fake"):
            connection.send(b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    statuses = [response.status for response in parse_responses(connection.take())]
    assert statuses == [200, 500, 200, 500]


def test_a_header_list_with_a_long_value_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """As for the pair cache, a value too long to keep keeps its list out of the cache."""
    monkeypatch.setattr(wsgi, "_facts_cache", {})
    long = [("Content-Type", "text/plain"), ("X-Note", "n" * 129)]
    short = [("Content-Type", "text/plain"), ("X-Note", "n" * 128)]
    assert wsgi._header_facts(long) is not wsgi._header_facts(long)
    assert wsgi._header_facts(short) is wsgi._header_facts(short)
    assert list(wsgi._facts_cache) == [tuple(short)]


def test_the_header_list_cache_is_emptied_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lists sent lately are kept, however many were sent before."""
    monkeypatch.setattr(wsgi, "_facts_cache", {})
    monkeypatch.setattr(wsgi, "_FACTS_CACHE_LIMIT", 3)
    lists = [[("Content-Length", str(length))] for length in range(5)]
    for headers in lists:
        wsgi._header_facts(headers)
    assert list(wsgi._facts_cache) == [tuple(lists[3]), tuple(lists[4])]
    assert wsgi._header_facts(lists[4]) is wsgi._header_facts(lists[4])


# -- close() --------------------------------------------------------------------------


class ClosingBody:
    """An iterable that records close() calls and can fail part-way."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("failed while iterating")
            yield chunk

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("fail_at", [None, 0, 1])
def test_close_is_called_exactly_once(threaded: bool, fail_at: int | None) -> None:
    """close() is called once, whether iteration completes or the app fails."""
    body = ClosingBody([b"a", b"b"], fail_at)

    def app(environ: dict[str, Any], start_response: Any) -> ClosingBody:
        start_response("200 OK", TEXT)
        return body

    connection = serve(app, threaded=threaded, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert body.closed == 1
    if fail_at == 0:
        assert parse_responses(connection.take())[0].status == 500
    elif fail_at == 1:
        assert connection.is_closed()  # head already sent: abort


def test_close_is_called_once_when_the_client_goes_away_mid_stream() -> None:
    """A client that disconnects mid-response stops the iteration; close() runs once."""
    produced = []
    closed = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            for number in range(1000):
                produced.append(number)
                yield b"x" * 1024

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", TEXT)
        return Body()

    with one_worker() as (calls, pool):
        connection = connect(WSGIHandler(app, reactor=calls, threadpool=pool))
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(lambda: len(produced) >= 3)
        connection.protocol.connectionLost(Failure(ConnectionLost()))
        calls.run_until(lambda: pool.idle)
    assert closed == [True]
    assert len(produced) < 1000


# -- wsgi.file_wrapper ----------------------------------------------------------------


@pytest.mark.parametrize("threaded", MODES)
def test_file_wrapper_is_sent_by_the_reactor_and_closed(threaded: bool, tmp_path: Path) -> None:
    """A wsgi.file_wrapper response of a regular file is handed to the reactor,
    sent from the file's current position with a Content-Length, and closed.
    """
    path = tmp_path / "data.bin"
    content = os.urandom(200_000)
    path.write_bytes(content)
    opened: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        handle = path.open("rb")
        handle.seek(1000)
        opened.append(handle)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle, 4096)

    connection = serve(app, threaded=threaded, transport=PullingTransport(), validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert response.header(b"content-length") == b"199000"
    assert response.body == content[1000:]
    assert opened[0].closed


def test_a_file_response_cut_short_closes_the_result(tmp_path: Path) -> None:
    """The request body fails (malformed) while a file response is going out: the
    response is cut short, and the file sender is stopped so that the result's
    close() is called (PEP 3333) and the file closed. The orderly close unregistered
    the sender without stopping it: close() never came.
    """
    path = tmp_path / "data.bin"
    path.write_bytes(b"z" * 1_000_000)
    closed: list[bool] = []

    class TrackedFile(io.FileIO):
        def close(self) -> None:
            if not self.closed:
                closed.append(True)
            super().close()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "1000000")])
        return environ["wsgi.file_wrapper"](TrackedFile(path, "rb"))

    connection = serve(app, threaded=True, validate=False)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    connection.send(b"%x\r\n" % DISPATCH_BUFFER + b"x" * DISPATCH_BUFFER + b"\r\n")
    assert connection.take().startswith(b"HTTP/1.1 200 OK")  # the head; the file waits
    assert closed == []
    with capture_log_events():
        connection.send(b"zz\r\n")  # not a chunk size: the body fails
    assert closed == [True]


def test_a_client_leaving_during_a_file_response_is_not_an_error(tmp_path: Path) -> None:
    """A download the client gives up is ordinary: it was logged as a critical
    failure with a traceback (Twisted stops the file sender before it tells the
    protocol, so the exchange had not yet ended). The file is still closed.
    """
    path = tmp_path / "data.bin"
    path.write_bytes(b"z" * 1_000_000)
    handles: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "1000000")])
        handles.append(path.open("rb"))
        return environ["wsgi.file_wrapper"](handles[-1])

    connection = serve(app, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    transport: Any = connection.transport
    with capture_log_events() as events:
        # As Twisted's connectionLost does: the producer first, then the protocol.
        transport.producer.stopProducing()
        connection.protocol.connectionLost(Failure(ConnectionLost()))
    assert [e for e in events if "log_failure" in e] == []
    assert handles[0].closed


def test_an_unread_body_is_let_go_when_the_request_ends() -> None:
    """An application refusing an upload unread, on the threadpool: the body read
    before it ran (64 KiB) stayed in wsgi.input, in a reference cycle with the
    exchange, until a garbage collection; under a stream of such uploads the server
    held some 150 MiB more. It is dropped when the request ends, and wsgi.input,
    kept past its request (PEP 3333 does not allow it), raises.
    """
    streams: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        streams.append(environ["wsgi.input"])
        start_response("403 Forbidden", [("Content-Length", "0")])
        return [b""]

    connection = serve(app, validate=False)
    body = b"x" * 300_000
    connection.send(b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 300000\r\n\r\n" + body)
    assert parse_responses(connection.take())[0].status == 403
    [stream] = streams
    assert not stream._chunks  # what was queued for the application is gone
    with pytest.raises(ClientDisconnected):
        stream.read(10)


def test_file_wrapper_honours_the_application_content_length(tmp_path: Path) -> None:
    """With a Content-Length from the app, exactly that many bytes are sent."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "4")])
        return FileWrapper(path.open("rb"))

    connection = serve(app, transport=PullingTransport(), validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert parse_responses(connection.take())[0].body == b"0123"


@pytest.mark.parametrize("threaded", MODES)
def test_a_file_shorter_than_its_content_length_is_a_500(threaded: bool, tmp_path: Path) -> None:
    """The file's size is known before its head goes out: one too short for the
    Content-Length the application set is its error, answered 500 before any byte,
    as a list body too short is; the next request is served. Sent, the head and the
    whole file went out and the connection was cut where the rest was due. No
    validator here: the file response is the server's to see, unwrapped.
    """
    path = tmp_path / "data.bin"
    path.write_bytes(b"hello")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "100")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    connection = serve(app, threaded=threaded, transport=PullingTransport(), validate=False)
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (500, b"Internal Server Error\n")
    assert not connection.is_closed()
    [failure] = [event["log_failure"] for event in events if "log_failure" in event]
    assert "5 bytes for its Content-Length of 100" in str(failure.value)


@pytest.mark.parametrize("threaded", MODES)
def test_file_wrapper_without_a_descriptor_is_iterated(threaded: bool) -> None:
    """A file-like object with no descriptor (BytesIO) is read block by block."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", TEXT)
        return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory" * 100), 7)

    connection = serve(app, threaded=threaded)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert parse_responses(connection.take())[0].body == b"in memory" * 100


def test_head_with_a_file_wrapper_sends_no_body(tmp_path: Path) -> None:
    """HEAD of a file response sends the length and no body."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 5000)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", TEXT)
        return FileWrapper(path.open("rb"))

    connection = serve(app, transport=PullingTransport(), validate=False)
    connection.send(b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n")
    raw = connection.take()
    assert raw.endswith(b"\r\n\r\n")
    assert parse_responses(raw, [b"HEAD"])[0].header(b"content-length") == b"5000"


# -- back-pressure ----------------------------------------------------------------------


def test_worker_thread_waits_while_the_client_is_not_reading() -> None:
    """A worker thread that streams faster than the client reads blocks once the
    transport pauses, so the bytes produced ahead of the client stay bounded.
    """
    produced: list[int] = []
    chunk = b"y" * 16384

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        for number in range(2000):
            produced.append(number)
            yield chunk

    with one_worker() as (calls, pool):
        connection = connect(WSGIHandler(validator(app), reactor=calls, threadpool=pool))
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(lambda: len(produced) >= 1)
        connection.protocol.pauseProducing()  # the transport's buffer is full
        # The worker may queue up to IN_FLIGHT_HIGH_WATER more bytes, then must wait.
        bound = IN_FLIGHT_HIGH_WATER // len(chunk) + 3
        calls.run_until(lambda: _waiting(pool), timeout=10)
        stalled_at = len(produced)
        assert stalled_at <= bound
        calls.run_pending()
        assert len(produced) == stalled_at
        connection.protocol.resumeProducing()
        calls.run_until(lambda: pool.idle)
    assert len(produced) == 2000
    [response] = parse_responses(connection.take())
    assert len(response.body) == 2000 * len(chunk)


def _waiting(pool: TrackingPool) -> bool:
    """Whether a worker of ``pool`` is blocked in the bridge's back-pressure wait."""
    return worker_waits_for_the_client(pool.name)


def test_inline_streaming_pauses_with_the_client() -> None:
    """In the reactor thread, a streamed result is pulled only while the client
    reads: a pause stops iteration until resume.
    """
    produced: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        for number in range(100):
            produced.append(number)
            if number == 10:
                connection.protocol.pauseProducing()
            yield b"z" * 100

    connection = serve(app, threaded=False, validate=False)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(produced) == 11
    connection.protocol.resumeProducing()
    assert len(produced) == 100
    assert len(parse_responses(connection.take())[0].body) == 10000


@contextlib.contextmanager
def one_batch() -> Iterator[None]:
    """Handle what happens inside as the reactor handles one batch of poll events."""
    assert start_batch()
    try:
        yield
    finally:
        end_batch()


def chunk_sizes(raw: bytes) -> list[int]:
    """The sizes of the chunks of one chunked response, as they are on the wire."""
    body = raw.partition(b"\r\n\r\n")[2]
    sizes: list[int] = []
    while True:
        line, _, body = body.partition(b"\r\n")
        size = int(line, 16)
        if not size:
            return sizes
        sizes.append(size)
        body = body[size + 2 :]


def test_inline_pieces_pulled_in_one_batch_go_out_as_one_chunk() -> None:
    """In the reactor thread, while a batch of events is handled (its small writes
    are held to its end anyway), the pieces pulled are written as one chunk, each
    short of the transport's hold limit (so that the batch holds it); outside a
    batch, one chunk per piece. A piece too large to join goes alone, at once.
    """
    piece = b"p" * 8192

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield from [piece] * 20

    request = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
    connection = serve(app, threaded=False)
    with one_batch():
        connection.send(request)
    raw = connection.take()
    assert chunk_sizes(raw) == [57344, 57344, 49152]  # (7 pieces, 7, 6)
    assert parse_responses(raw)[0].body == piece * 20
    connection.send(request)
    assert chunk_sizes(connection.take()) == [8192] * 20
    pieces = [b"a" * 30000, b"b" * 40000, b"c" * HOLD_LIMIT, b"d" * 10, b"e" * 10]

    def large(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield from pieces

    connection = serve(large, threaded=False)
    with one_batch():
        connection.send(request)
    raw = connection.take()
    assert chunk_sizes(raw) == [30000, 40000, HOLD_LIMIT, 20]
    assert parse_responses(raw)[0].body == b"".join(pieces)


def test_inline_write_called_while_pieces_wait_in_a_batch_goes_after_them() -> None:
    """An application may call write() while its iterable is pulled: what it wrote
    goes after the pieces it yielded before, which a batch holds back to join them.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        write = start_response("200 OK", TEXT)
        yield b"a"
        write(b"b")
        yield b"c"
        write(b"d")

    connection = serve(app, threaded=False)
    with one_batch():
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert parse_responses(connection.take())[0].body == b"abcd"


def test_inline_pieces_of_a_response_with_a_length_are_not_pulled_past_it() -> None:
    """A response with a Content-Length is written piece by piece in a batch too: the
    iteration stops the moment it is complete (PEP 3333), not a batch later.
    """
    stream = Stream(b"0123456789", [*TEXT, ("Content-Length", "20")])
    connection = serve(stream, threaded=False)
    with one_batch():
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert stream.pulled == 2
    assert parse_responses(connection.take())[0].body == b"01234567890123456789"


def test_inline_pieces_pulled_in_a_batch_go_out_before_a_pause_takes_effect() -> None:
    """A pause while pieces wait to be written stops the pulling; what was pulled is
    written, and the rest follows on resume.
    """
    produced: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        for number in range(100):
            produced.append(number)
            if number == 10:
                connection.protocol.pauseProducing()
            yield b"%02d" % number

    connection = serve(app, threaded=False, validate=False)
    with one_batch():
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(produced) == 11
    first = connection.take()
    assert chunk_sizes(first + b"0\r\n\r\n") == [22]  # (the pieces pulled, as one)
    with one_batch():
        connection.protocol.resumeProducing()
    assert len(produced) == 100
    body = parse_responses(first + connection.take())[0].body
    assert body == b"".join(b"%02d" % n for n in range(100))


@pytest.mark.parametrize("late", ["exc_info", "str"])
def test_inline_pieces_pulled_in_a_batch_before_a_failure_are_sent_then_aborted(
    late: str,
) -> None:
    """An application failing after pieces were pulled in a batch: they go out (the
    head with them, so the status can no longer change), then the connection is
    dropped, as when each piece is written at once.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[Any]:
        start_response("200 OK", TEXT)
        yield b"partial"
        if late == "str":
            yield "oops"
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    connection = serve(app, threaded=False, validate=False)
    with capture_log_events(), one_batch():
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    raw = connection.take()
    assert connection.is_closed()
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"\r\n\r\n7\r\npartial\r\n")


def test_body_is_spooled_whole_before_an_inline_app_runs() -> None:
    """In the reactor thread the application only runs on a complete body."""
    calls: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        calls.append(len(body))
        start_response("200 OK", TEXT)
        return [b"%d" % len(body)]

    size = DISPATCH_BUFFER * 3
    connection = serve(app, threaded=False)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % size)
    connection.send(b"q" * (size - 1))
    assert calls == []
    connection.send(b"q")
    assert calls == [size]


def test_write_after_the_client_left_raises_client_disconnected() -> None:
    """write() raises ClientDisconnected once the client is gone."""
    outcome: list[str] = []
    started = threading.Event()
    resume = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        started.set()
        resume.wait(10)
        try:
            write(b"late")
        except ClientDisconnected:
            outcome.append("disconnected")
        return []

    with one_worker() as (calls, pool):
        connection = connect(WSGIHandler(app, reactor=calls, threadpool=pool))
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(started.is_set)
        connection.protocol.connectionLost(Failure(ConnectionLost()))
        resume.set()
        calls.run_until(lambda: pool.idle)
    assert outcome == ["disconnected"]


@pytest.mark.parametrize("body", ["oversized", "client gone"])
def test_an_application_stopped_by_its_client_is_not_logged_as_failing(body: str) -> None:
    """wsgi.input raises ClientDisconnected when the body fails (over max_body, the
    client gone); an application that lets it through did nothing wrong. It was
    logged as a critical error with a traceback, which any client could cause at
    will: one line at info level now, and the client got its answer (413) or none.
    """
    started = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        started.set()
        environ["wsgi.input"].read()
        start_response("200 OK", TEXT)
        return [b"read"]

    with one_worker() as (calls, pool), capture_log_events() as events:
        connection = connect(WSGIHandler(app, reactor=calls, threadpool=pool))
        connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        connection.send(chunk * 2)  # past what is read before the application runs
        calls.run_until(started.is_set)
        if body == "oversized":
            connection.send(chunk * 18)  # 1.25 MiB in all, over the 1 MiB max_body
        else:
            connection.protocol.connectionLost(Failure(ConnectionLost()))
        calls.run_until(lambda: pool.idle)
    if body == "oversized":
        assert [response.status for response in parse_responses(connection.take())] == [413]
    critical = [
        e
        for e in events
        if e.get("log_level") is not None and e["log_level"].name in ("critical", "error")
    ]
    assert critical == []
    said = [formatEvent(e) for e in events if "wsgi.input" in formatEvent(e)]
    assert len(said) == 1 and "POST /" in said[0]


def test_reading_another_requests_input_is_still_an_application_error() -> None:
    """wsgi.input kept past its request (PEP 3333 does not allow it) raises
    ClientDisconnected in whichever request reads it: that is the application's bug,
    logged with its traceback, not a client that left.
    """
    kept: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if kept:
            kept[0].read(1)
        kept.append(environ["wsgi.input"])
        start_response("200 OK", TEXT)
        return [b"ok"]

    connection = serve(app, validate=False)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nab")
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [response.status for response in parse_responses(connection.take())] == [200, 500]
    failures = [e for e in events if e.get("log_failure") is not None]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ClientDisconnected)


# -- findings of the 2026-12-01 audit ------------------------------------------------------


@pytest.mark.parametrize("threaded", MODES)
def test_read_n_returns_n_bytes_until_the_end(threaded: bool) -> None:
    """read(n) has file semantics: short only at the end, however the body arrives
    (the usual read(CONTENT_LENGTH) idiom, and a chunked body read in one call).
    """
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        seen.append(body.read(int(length)) if length else body.read(1000))
        start_response("200 OK", TEXT)
        return [b""]

    connection = serve(app, threaded=threaded)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nhello")
    connection.send(b"world")
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    connection.send(b"5\r\nhello\r\n")
    connection.send(b"6\r\n world\r\n0\r\n\r\n")
    assert seen == [b"helloworld", b"hello world"]


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "600 Odd"])
def test_a_status_that_is_not_final_is_a_500(threaded: bool, status: str) -> None:
    """A 1xx (interim, RFC 9110 15.2) or a code past 599 is the application's error."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, [])
        return [b""]

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events():
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert response.status == 500


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("status", [b"200 OK", ["200", "OK"]], ids=["bytes", "list"])
def test_a_status_that_is_not_a_str_is_a_500_that_says_so(threaded: bool, status: Any) -> None:
    """PEP 3333's status is a str: anything else (hashable or not, the cache of the
    statuses seen is not asked) is the application's error, logged as such.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, [])
        return [b""]

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert response.status == 500
    failures = [e for e in events if "log_failure" in e]
    assert any("status must be a str" in str(e["log_failure"].value) for e in failures)


@pytest.mark.parametrize("threaded", MODES)
def test_conflicting_content_lengths_are_not_sent(threaded: bool) -> None:
    """Two different Content-Length fields would let a client or proxy take the
    wrong one (RFC 9112 6.3): neither is sent (the body's real length is, when the
    server knows it); a repeated same value is sent once.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        lengths = ["100", "4"] if environ["PATH_INFO"] == "/conflict" else ["4", "4"]
        start_response("200 OK", [("Content-Length", value) for value in lengths])
        return [b"abcd"]

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events():
        connection.send(b"GET /conflict HTTP/1.1\r\n" + HOST + b"\r\n")
        connection.send(b"GET /same HTTP/1.1\r\n" + HOST + b"\r\n")
    wire = connection.take()
    assert b"100" not in wire
    conflict, same = parse_responses(wire)
    assert conflict.body == same.body == b"abcd"
    assert conflict.header_values(b"content-length") == [b"4"]
    assert same.header_values(b"content-length") == [b"4"]


@pytest.mark.parametrize("threaded", MODES)
@pytest.mark.parametrize("lengths", [["+10"], ["10", "20"]])
def test_file_wrapper_with_a_length_the_protocol_refuses(
    threaded: bool, lengths: list[str], tmp_path: Path
) -> None:
    """A Content-Length int() takes but HTTP does not (" 10", "+10") is dropped, and
    so are two different ones: the file goes out as an ordinary body, and close() is
    called. With two lengths the file was sent as if the last held, after a head
    without it: a 200 with no body and an internal error in the log.
    """
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    closed: list[bool] = []

    class Tracked(io.FileIO):
        def close(self) -> None:
            closed.append(True)
            super().close()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", value) for value in lengths])
        return environ["wsgi.file_wrapper"](Tracked(path, "rb"))

    connection = serve(app, threaded=threaded, validate=False)
    with capture_log_events() as events:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (200, b"0123456789")
    assert closed == [True]
    assert not [e for e in events if e.get("log_failure")]


@pytest.mark.parametrize("path", [b"/application", b"/appx/y"])
def test_the_mount_prefix_ends_at_a_segment(path: bytes) -> None:
    """script_name=/app does not hold /application (PATH_INFO would not start with /)."""
    capture = EnvironCapture()
    connection = serve(capture, script_name=b"/app")
    connection.send(b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    assert capture.environ["SCRIPT_NAME"] == ""
    assert capture.environ["PATH_INFO"] == path.decode()
    connection.send(b"GET /app/x HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (capture.environ["SCRIPT_NAME"], capture.environ["PATH_INFO"]) == ("/app", "/x")


class _SwallowingPool:
    """Runs calls at once and, as WorkerPool does, swallows what they raise."""

    def callInThread(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(BaseException):
            func(*args, **kwargs)


@pytest.mark.parametrize("threaded", MODES)
def test_sys_exit_in_the_application_is_a_500(threaded: bool) -> None:
    """SystemExit from an application is answered like any exception, not left
    hanging (on a worker thread nothing else would answer).
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", TEXT)
        sys.exit(1)

    handler = WSGIHandler(
        app,
        reactor=SynchronousReactorThreads(),
        threadpool=_SwallowingPool() if threaded else None,
    )
    connection = connect(handler)
    with capture_log_events():
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [r.status for r in parse_responses(connection.take())] == [500, 500]


@pytest.mark.parametrize("threaded", MODES)
def test_wsgi_errors_is_one_stream_per_request(threaded: bool) -> None:
    """A partial line one request leaves is logged at its end, not glued to the
    next request's output.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/a":
            environ["wsgi.errors"].write("request A: partial")
        else:
            environ["wsgi.errors"].write("request B: complete\n")
        start_response("200 OK", TEXT)
        return [b""]

    connection = serve(app, threaded=threaded)
    with capture_log_events() as events:
        connection.send(b"GET /a HTTP/1.1\r\n" + HOST + b"\r\n")
        connection.send(b"GET /b HTTP/1.1\r\n" + HOST + b"\r\n")
    lines = [e["line"] for e in events if e.get("log_namespace") == "twistwsgi.wsgi.errors"]
    assert lines == ["request A: partial", "request B: complete"]


def queued(
    queue_timeout: float,
) -> tuple[WSGIHandler, QueueingPool, SynchronousReactorThreads, list[str]]:
    """A handler whose requests wait in a pool until the test runs them."""
    called: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(environ["PATH_INFO"])
        start_response("200 OK", TEXT)
        return [b"ok"]

    clock = SynchronousReactorThreads()
    pool = QueueingPool()
    handler = WSGIHandler(
        validator(app), reactor=clock, threadpool=pool, queue_timeout=queue_timeout, clock=clock
    )
    return handler, pool, clock, called


def test_a_request_whose_client_left_while_queued_is_not_run() -> None:
    """A request still waiting for a thread when its client disconnects never
    reaches the application: the thread goes to requests someone waits for.
    """
    handler, pool, _, called = queued(0)
    gone = connect(handler)
    gone.send(b"GET /gone HTTP/1.1\r\n" + HOST + b"\r\n")
    staying = connect(handler)
    staying.send(b"GET /staying HTTP/1.1\r\n" + HOST + b"\r\n")
    gone.protocol.connectionLost(Failure(ConnectionDone()))
    pool.run_all()
    assert called == ["/staying"]
    [response] = parse_responses(staying.take())
    assert response.status == 200


def test_a_request_read_in_a_batch_of_events_goes_to_a_thread_when_the_batch_ends() -> None:
    """The reactor hands out a whole poll batch before waking any worker, which
    would otherwise take the GIL from it at each of its system calls.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [b"ok"]

    pool = QueueingPool()
    handler = WSGIHandler(validator(app), reactor=SynchronousReactorThreads(), threadpool=pool)
    connection = connect(handler)
    assert start_batch()
    try:
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert pool.calls == []
    finally:
        end_batch()
    [call] = pool.calls
    call()
    [response] = parse_responses(connection.take())
    assert response.status == 200
    # Outside a batch (a library user's own reactor) it is handed over at once.
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(pool.calls) == 2


@pytest.mark.parametrize("in_batch", [True, False], ids=["in a batch", "outside a batch"])
def test_a_request_the_pool_refuses_is_a_500(in_batch: bool) -> None:
    """Handed over at the end of a batch, the refusal reaches no handler that could
    answer for it: the hand-over itself answers 500 (as outside a batch).
    """
    handler = WSGIHandler(
        validator(hello), reactor=SynchronousReactorThreads(), threadpool=RefusingPool()
    )
    connection = connect(handler)
    with capture_log_events() as events:
        opened = start_batch() if in_batch else False
        try:
            connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        finally:
            if opened:
                end_batch()
    [response] = parse_responses(connection.take())
    assert response.status == 500
    [failure] = [event["log_failure"] for event in events if "log_failure" in event]
    assert failure.check(RuntimeError)


@pytest.mark.parametrize("threaded", MODES)
def test_whitespace_around_header_values_is_not_sent(threaded: bool) -> None:
    """RFC 9110 5.5: surrounding whitespace is not part of a field value. A padded
    Content-Length still frames the body; a cookie goes out as its value alone.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(
            "200 OK",
            [
                *TEXT,
                ("Content-Length", " 5 "),
                ("Set-Cookie", " a=1; Path=/"),
                ("X-Padded", "  v "),
            ],
        )
        yield b"hello"

    connection = serve(app, threaded=threaded)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    raw = connection.take()
    assert b"Set-Cookie: a=1; Path=/\r\n" in raw and b"X-Padded: v\r\n" in raw
    [response] = parse_responses(raw)
    assert response.header(b"content-length") == b"5"
    assert response.header(b"transfer-encoding") is None
    assert response.body == b"hello"


# -- the wait for a worker thread -------------------------------------------------------


def test_a_request_that_waited_too_long_for_a_thread_is_a_503_and_never_runs() -> None:
    """Behind busy threads a request waited without limit: nginx in front of
    gunicorn would have answered 504 after 60 s. Past thread_queue_timeout it is
    answered 503 (Retry-After) then, even with every thread still stuck (nothing
    runs the pool here until the end), and the application never sees it.
    """
    handler, pool, clock, called = queued(60.0)
    connection = connect(handler, clock=clock)
    connection.send(b"GET /late HTTP/1.1\r\n" + HOST + b"\r\n")
    with capture_log_events() as events:
        clock.advance(59.5)
        assert connection.take() == b""
        clock.advance(1)
    [response] = parse_responses(connection.take())
    assert (response.status, response.header(b"retry-after")) == (503, b"1")
    [line] = [formatEvent(e) for e in events if "worker thread" in formatEvent(e)]
    assert "1 request(s) waited more than 60s" in line and "GET /late" in line
    connection.send(b"GET /soon HTTP/1.1\r\n" + HOST + b"\r\n")
    clock.advance(59)
    pool.run_all()  # a thread at last: the first is skipped, the second runs
    assert called == ["/soon"]
    assert not handler.queued


def test_requests_answered_busy_are_logged_once_in_a_while_with_their_count() -> None:
    """A burst is one line with its count; more within 10 s wait for the next line,
    written at the latest when the queue has emptied.
    """
    handler, pool, clock, _ = queued(60.0)
    with capture_log_events() as events:
        for _ in range(3):
            connect(handler, clock=clock).send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        clock.advance(2)
        connect(handler, clock=clock).send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        clock.advance(59)  # the first three time out: one line
        clock.advance(2)  # the fourth, within 10 s of that line: not yet
        lines = [formatEvent(e) for e in events if "worker thread" in formatEvent(e)]
        assert [line.split(" ")[0] for line in lines] == ["3"]
        pool.run_all()  # the queue empties: the count so far is written
        clock.advance(1)
    lines = [formatEvent(e) for e in events if "worker thread" in formatEvent(e)]
    assert [line.split(" ")[0] for line in lines] == ["3", "1"]


def test_a_client_gone_behind_its_upload_is_logged_499_not_503() -> None:
    """Its close was not read (the server had stopped reading the body): the kernel
    tells, as when a thread takes such a request.
    """
    logged: list[Any] = []
    handler, _, clock, called = queued(60.0)
    settings = HttpSettings(body_timeout=300)  # (the body's own timeout is not tested)
    connection = connect(handler, clock=clock, response_log=logged.append, settings=settings)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 200000\r\n\r\n")
    connection.send(b"u" * (DISPATCH_BUFFER + 1000))
    connection.protocol.peer_closed = lambda: True  # type: ignore[method-assign]
    clock.advance(61)
    assert connection.take() == b""  # no 503
    connection.protocol.connectionLost(Failure(ConnectionLost()))  # the abort lands
    assert [(entry.status, entry.client_closed) for entry in logged] == [(0, True)]
    assert called == []


def test_without_a_limit_a_request_waits_as_long_as_it_takes() -> None:
    handler, pool, clock, called = queued(0)
    connect(handler, clock=clock).send(b"GET /patient HTTP/1.1\r\n" + HOST + b"\r\n")
    clock.advance(3600)
    pool.run_all()
    assert called == ["/patient"]


def test_closing_the_handler_stops_the_sweep() -> None:
    """The service closes its handlers when it stops: no timer is left behind."""
    handler, _, clock, _ = queued(60.0)
    connect(handler, clock=clock).send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")

    def sweeps() -> list[Any]:
        return [call for call in clock.getDelayedCalls() if "_sweep" in repr(call)]

    assert sweeps()
    handler.close()
    assert sweeps() == []


def test_a_limit_without_a_clock_or_below_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a clock"):
        WSGIHandler(hello, reactor=SynchronousReactorThreads(), threadpool=None, queue_timeout=5)
    with pytest.raises(ValueError, match="must not be negative"):
        WSGIHandler(hello, reactor=SynchronousReactorThreads(), threadpool=None, queue_timeout=-1)


# -- the application's time to answer (app_timeout) --------------------------------------


def sweeps(clock: Clock, handler: WSGIHandler) -> list[Any]:
    """The handler's app_timeout timers pending on ``clock``."""
    return [
        call
        for call in clock.getDelayedCalls()
        if call.active()
        and getattr(cast(Any, call).func, "__func__", None) is WSGIHandler._sweep_answers
    ]


def timed_handler(
    app: Callable[[dict[str, Any], Any], Any],
    calls: CallQueue,
    pool: TrackingPool,
    clock: Clock,
    app_timeout: float = 60.0,
) -> WSGIHandler:
    """A handler of ``app`` on real worker threads, its app_timeout timed by ``clock``."""
    return WSGIHandler(
        validator(app), reactor=calls, threadpool=pool, app_timeout=app_timeout, clock=clock
    )


def stuck_app(
    release: threading.Event, started: threading.Event
) -> Callable[[dict[str, Any], Any], list[bytes]]:
    """Starts no response until ``release`` is set, except for /quick."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != "/quick":
            started.set()
            release.wait(10)  # a test that works sets it long before
        start_response("200 OK", TEXT)
        return [b"late" if environ["PATH_INFO"] != "/quick" else b"quick"]

    return app


def test_an_application_that_does_not_answer_in_time_is_a_504_and_its_stack_logged() -> None:
    """As nginx in front of gunicorn answers 504 after 60 s of silence, so does the
    server itself, and the log shows where the thread is stuck. What the thread
    sends afterwards is dropped, and the connection serves the next request.
    """
    release, started = threading.Event(), threading.Event()
    clock = Clock()
    with one_worker() as (calls, pool):
        handler = timed_handler(stuck_app(release, started), calls, pool, clock)
        connection = connect(handler, clock=clock)
        with capture_log_events() as events:
            connection.send(b"GET /report HTTP/1.1\r\n" + HOST + b"\r\n")
            calls.run_until(started.is_set)
            clock.advance(59.5)
            assert connection.take() == b""
            clock.advance(1)
            [response] = parse_responses(connection.take())
            assert (response.status, response.body) == (
                504,
                b"Gateway Timeout: the application did not answer in time\n",
            )
            release.set()
            calls.run_until(lambda: pool.idle)
            assert connection.take() == b""  # the late answer is dropped
            connection.send(b"GET /quick HTTP/1.1\r\n" + HOST + b"\r\n")
            calls.run_until(lambda: pool.idle)
    [quick] = parse_responses(connection.take())
    assert (quick.status, quick.body) == (200, b"quick")
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.wsgi"]
    [timed_out] = [line for line in lines if "504" in line and "within" in line]
    assert "GET /report: the application did not start its response within 60s" in timed_out
    assert "release.wait(10)" in timed_out  # the stuck thread's own line
    assert any("GET /report: the application returned, after its 504" in line for line in lines)
    handler.close()  # nothing left to time: no timer left behind
    assert not sweeps(clock, handler)


def test_a_running_threads_stack_reads_as_a_traceback() -> None:
    """What the 504's log line shows: oldest call first, each with its source
    line, read by faulthandler (not by walking the thread's frames from here).
    """
    release = threading.Event()

    def stuck_in_a_query() -> None:
        release.wait(10)

    thread = threading.Thread(target=stuck_in_a_query)
    thread.start()
    try:
        assert thread.ident is not None
        stack = wsgi.thread_stack(thread.ident)
    finally:
        release.set()
        thread.join()
    assert stack is not None
    lines = stack.splitlines()
    assert lines[0].startswith('  File "') and lines[0].endswith(", in _bootstrap")
    inner = lines.index(next(line for line in lines if line.endswith(", in stuck_in_a_query")))
    assert lines[inner + 1] == "    release.wait(10)"
    assert lines[-2].endswith(", in wait")  # Condition.wait, innermost
    assert wsgi.thread_stack(1) is None  # no such thread


def test_a_thread_held_by_a_timed_out_request_is_counted_until_it_returns() -> None:
    """What a worker process looks at to ask for its replacement (worker.ReplacementWatch)."""
    release, started = threading.Event(), threading.Event()
    clock = Clock()
    before = wsgi.stuck_threads()
    with one_worker() as (calls, pool):
        handler = timed_handler(stuck_app(release, started), calls, pool, clock)
        connection = connect(handler, clock=clock)
        with capture_log_events():
            connection.send(b"GET /report HTTP/1.1\r\n" + HOST + b"\r\n")
            calls.run_until(started.is_set)
            clock.advance(61)
            assert wsgi.stuck_threads() == before + 1
            release.set()
            calls.run_until(lambda: pool.idle)
    assert wsgi.stuck_threads() == before
    assert parse_responses(connection.take())[0].status == 504


def test_a_thread_held_by_a_request_whose_client_left_is_counted_too() -> None:
    """Clients often leave first (nginx's own 60 s read timeout equals the default
    app_timeout): the thread is just as stuck, and counts once past app_timeout.
    """
    release, started = threading.Event(), threading.Event()
    clock = Clock()
    before = wsgi.stuck_threads()
    with one_worker() as (calls, pool):
        handler = timed_handler(stuck_app(release, started), calls, pool, clock)
        connection = connect(handler, clock=clock)
        with capture_log_events() as events:
            connection.send(b"GET /report HTTP/1.1\r\n" + HOST + b"\r\n")
            calls.run_until(started.is_set)
            clock.advance(30)
            connection.protocol.connectionLost(Failure(ConnectionDone()))
            clock.advance(20)
            assert wsgi.stuck_threads() == before
            clock.advance(11)
            assert wsgi.stuck_threads() == before + 1
            release.set()
            calls.run_until(lambda: pool.idle)
    assert wsgi.stuck_threads() == before
    assert handler.answering == {}
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.wsgi"]
    assert any("its client has left. Its thread goes on running it" in line for line in lines)


def test_a_response_started_in_time_is_not_timed_any_further() -> None:
    """Once the head is out (a stream, a long poll), app_timeout no longer applies:
    the stream's pace is the client's and the application's business.
    """
    release, started = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"first,"
        started.set()
        release.wait(10)
        yield b"second"

    clock = Clock()
    with one_worker() as (calls, pool):
        handler = timed_handler(app, calls, pool, clock, 5.0)
        connection = connect(handler, clock=clock)
        connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(started.is_set)
        calls.run_pending()
        clock.advance(30)
        release.set()
        calls.run_until(lambda: pool.idle)
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (200, b"first,second")
    assert handler.answering == {}


def test_a_request_waiting_for_a_thread_is_left_to_the_thread_queue_timeout() -> None:
    """app_timeout is the application's time: a request no thread has taken yet is
    the thread queue timeout's (503, with its own rate-limited warning), never a 504.
    """
    handler, pool, clock, called = queued(0.0)
    handler = WSGIHandler(
        handler.app, reactor=clock, threadpool=pool, app_timeout=10.0, clock=clock
    )
    connection = connect(handler, clock=clock)
    connection.send(b"GET /waiting HTTP/1.1\r\n" + HOST + b"\r\n")
    clock.advance(100)
    assert connection.take() == b""
    pool.run_all()
    [response] = parse_responses(connection.take())
    assert response.status == 200 and called == ["/waiting"]
    clock.advance(1)
    assert not sweeps(clock, handler)  # it ends with the last request it timed


def upload_app(
    stuck: threading.Event, read: threading.Event, *, read_body: bool
) -> Callable[[dict[str, Any], Any], list[bytes]]:
    """Reads the whole body (or not), then is stuck until ``stuck`` is set."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if read_body:
            while environ["wsgi.input"].read(65536):
                pass
        read.set()
        stuck.wait(10)
        start_response("200 OK", TEXT)
        return [b"done"]

    return app


def test_the_time_a_client_takes_to_send_the_body_read_is_not_counted() -> None:
    """A large upload read by the application as it arrives: while it waits in
    wsgi.input the application waits for the client, not the reverse (nginx counts
    from when it has sent the whole body on); from then on, its time runs.
    """
    stuck, read = threading.Event(), threading.Event()
    clock = Clock()
    with one_worker() as (calls, pool):
        handler = timed_handler(upload_app(stuck, read, read_body=True), calls, pool, clock, 10.0)
        connection = connect(handler, clock=clock, settings=HttpSettings(body_timeout=300.0))
        connection.send(
            b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 200000\r\n\r\n" + b"x" * 100_000
        )
        with capture_log_events():
            calls.run_until(lambda: handler.answering != {} and _reading(handler))
            clock.advance(30)
            assert connection.take() == b""
            connection.send(b"x" * 100_000)
            calls.run_until(read.is_set)
            clock.advance(9)
            assert connection.take() == b""
            clock.advance(2)
            [response] = parse_responses(connection.take())
            assert response.status == 504
            stuck.set()
            calls.run_until(lambda: pool.idle)


def _reading(handler: WSGIHandler) -> bool:
    return any(call._input is not None and call._input.waiting for call in handler.answering)


@pytest.mark.parametrize("expect_continue", [False, True])
def test_an_application_stuck_before_reading_its_body_is_timed(expect_continue: bool) -> None:
    """Not reading its body is no wait for the client: an application stuck before
    it reads (the client paused behind the unread body, or waiting for 100 Continue)
    gets its 504 all the same.
    """
    stuck, read = threading.Event(), threading.Event()
    clock = Clock()
    with one_worker() as (calls, pool):
        handler = timed_handler(upload_app(stuck, read, read_body=False), calls, pool, clock, 10.0)
        connection = connect(handler, clock=clock, settings=HttpSettings(body_timeout=300.0))
        head = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 900000\r\n"
        if expect_continue:
            connection.send(head + b"Expect: 100-continue\r\n\r\n")
        else:
            connection.send(head + b"\r\n" + b"x" * 400_000)
        with capture_log_events():
            calls.run_until(read.is_set)
            clock.advance(11)
            [response] = parse_responses(connection.take())
            assert response.status == 504
            stuck.set()
            calls.run_until(lambda: pool.idle)


def test_a_request_that_ended_in_its_batch_is_not_timed() -> None:
    """A request handed to the threads when the batch of events ends may have ended
    within the batch (its chunked body malformed, 400): it is not kept for timing.
    """
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(
        validator(hello), reactor=clock, threadpool=QueueingPool(), app_timeout=60.0, clock=clock
    )
    connection = connect(handler, clock=clock)
    with capture_log_events():
        assert start_batch()
        try:
            # Past the dispatch buffer, so it is handed over, then a bad chunk size.
            chunk = b"11800\r\n" + b"x" * 0x11800 + b"\r\n"
            connection.send(
                b"POST / HTTP/1.1\r\n"
                + HOST
                + b"Transfer-Encoding: chunked\r\n\r\n"
                + chunk
                + b"zz\r\n"
            )
        finally:
            end_batch()
    assert parse_responses(connection.take())[0].status == 400
    assert handler.answering == {}


def test_a_closed_handler_leaves_no_timer_once_its_last_request_ends() -> None:
    """A reload closes the old handler while requests run: they are still timed,
    and the timer goes with the last of them.
    """
    release, started = threading.Event(), threading.Event()
    clock = Clock()
    with one_worker() as (calls, pool):
        handler = timed_handler(stuck_app(release, started), calls, pool, clock)
        connection = connect(handler, clock=clock)
        connection.send(b"GET /report HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(started.is_set)
        handler.close()
        assert sweeps(clock, handler)
        release.set()
        calls.run_until(lambda: pool.idle)
    assert parse_responses(connection.take())[0].status == 200
    assert not sweeps(clock, handler)


def test_app_timeout_needs_the_pool_a_clock_and_no_sign() -> None:
    clock = SynchronousReactorThreads()
    inline = WSGIHandler(hello, reactor=clock, threadpool=None, app_timeout=5, clock=clock)
    assert inline.app_timeout == 0  # the reactor thread cannot be interrupted
    with pytest.raises(ValueError, match="app_timeout needs a clock"):
        WSGIHandler(
            hello, reactor=SynchronousReactorThreads(), threadpool=QueueingPool(), app_timeout=5
        )
    with pytest.raises(ValueError, match="app_timeout must not be negative"):
        WSGIHandler(
            hello,
            reactor=SynchronousReactorThreads(),
            threadpool=QueueingPool(),
            app_timeout=-1,
            clock=Clock(),
        )


def test_a_mount_sets_its_own_app_timeout(tmp_path: Path) -> None:
    """[server] app_timeout is every application mount's, unless the mount sets its
    own (nginx's proxy_read_timeout in a location); 0 is no limit.
    """
    from twistwsgi.cli import load_config
    from twistwsgi.site import SiteBuilder

    (tmp_path / "site.toml").write_text(
        '[server]\napp_timeout = "20s"\nthread_queue_timeout = 0\n'
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/reports"\napp = "tests.apps:hello"\napp_timeout = "2m"\n'
        '[[host.mount]]\npath = "/stream"\napp = "tests.apps:hello"\napp_timeout = 0\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    )
    config = load_config({"config": str(tmp_path / "site.toml")})
    clock = SynchronousReactorThreads()
    table = SiteBuilder(reactor=clock, threadpool=QueueingPool()).build(config)
    timeouts = {
        handler.script_name: handler.app_timeout
        for handler in table.handlers
        if isinstance(handler, WSGIHandler)
    }
    assert timeouts == {b"/reports": 120.0, b"/stream": 0.0, b"": 20.0}


def test_requests_waiting_for_a_thread_are_counted_until_taken_or_answered_503() -> None:
    """The metrics' thread_queue: not the pool's queue, where a request answered 503
    by thread_queue_timeout stays until a thread takes it out.
    """
    handler, pool, clock, called = queued(5)
    before = waiting_requests()
    first, second = connect(handler), connect(handler)
    first.send(b"GET /a HTTP/1.1\r\n" + HOST + b"\r\n")
    assert waiting_requests() == before + 1
    clock.advance(3)
    second.send(b"GET /b HTTP/1.1\r\n" + HOST + b"\r\n")
    assert waiting_requests() == before + 2
    clock.advance(3)  # the first waited past 5 s: 503
    assert parse_responses(first.take())[0].status == 503
    assert waiting_requests() == before + 1
    pool.run_all()  # the first is skipped, the second runs
    assert called == ["/b"]
    assert waiting_requests() == before
