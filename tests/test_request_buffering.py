"""``request_buffering``: request bodies received whole before an application gets a
thread, through raw bytes. The point is that a slow upload holds no worker thread;
a body is described to the application as what it became (a length, no chunking),
and every way a body can fail leaves the application uncalled and its storage let go.
Applications are wrapped in ``wsgiref.validate.validator``; responses parsed with h11.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twistwsgi import wsgi
from twistwsgi.http.protocol import DISPATCH_BUFFER
from twistwsgi.http.settings import HttpSettings
from twistwsgi.testing import (
    CallQueue,
    Connection,
    PullingTransport,
    QueueingPool,
    RefusingPool,
    SynchronousReactorThreads,
    TrackingPool,
    capture_log_events,
    connect,
    parse_responses,
)
from twistwsgi.wsgi import WSGIHandler

App = Callable[[dict[str, Any], Any], Any]
HOST = b"Host: example.com\r\n"
TEXT = [("Content-Type", "text/plain")]
#: Larger than what the protocol receives before it hands a request over, so
#: without buffering the application would be called before the body is complete.
SIZE = DISPATCH_BUFFER * 3


class Recorder:
    """Answers with what it read and keeps the environ and the body it saw."""

    def __init__(self) -> None:
        self.environs: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environs.append(dict(environ))
        pieces = []
        while piece := environ["wsgi.input"].read(65536):
            pieces.append(piece)
        body = b"".join(pieces)
        self.bodies.append(body)
        start_response("200 OK", TEXT)
        return [b"%d" % len(body)]


def buffered(
    app: App,
    pool: Any,
    *,
    reactor: Any = None,
    settings: HttpSettings | None = None,
    request_buffering: bool = True,
    validate: bool = True,
    transport: StringTransport | None = None,
) -> Connection:
    handler = WSGIHandler(
        validator(app) if validate else app,
        reactor=reactor or SynchronousReactorThreads(),
        threadpool=pool,
        request_buffering=request_buffering,
    )
    return connect(handler, settings=settings, transport=transport)


def chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every spool file the bridge opens, to see that each is closed."""
    opened: list[Any] = []
    real = tempfile.SpooledTemporaryFile

    def tracking(*args: Any, **kwargs: Any) -> Any:
        spool = real(*args, **kwargs)
        opened.append(spool)
        return spool

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", tracking)
    yield opened


def test_no_thread_is_asked_for_until_the_body_is_complete() -> None:
    """The application is queued for a thread only once the last byte arrived."""
    pool = QueueingPool()
    recorder = Recorder()
    connection = buffered(recorder, pool)
    body = bytes(range(256)) * (SIZE // 256)
    connection.send(b"POST /up HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % SIZE)
    connection.send(body[:-1])
    assert pool.calls == []
    connection.send(body[-1:])
    assert len(pool.calls) == 1
    pool.run_all()
    assert recorder.bodies == [body]
    [response] = parse_responses(connection.take())
    assert response.body == b"%d" % SIZE


def test_without_buffering_a_large_body_is_handed_over_before_it_is_complete() -> None:
    """The default stays streaming (the control for the test above)."""
    pool = QueueingPool()
    connection = buffered(Recorder(), pool, request_buffering=False)
    connection.send(b"POST /up HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % SIZE)
    connection.send(b"x" * (SIZE - 1))
    assert len(pool.calls) == 1


def test_a_slow_upload_does_not_hold_the_only_worker_thread() -> None:
    """With one real worker, a request on another connection is answered while an
    upload is still arriving: the upload has not taken the thread.
    """
    calls = CallQueue()
    pool = TrackingPool(1)
    pool.start()
    try:
        recorder = Recorder()
        uploading = buffered(recorder, pool, reactor=calls)
        uploading.send(b"PUT /slow HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % SIZE)
        uploading.send(b"u" * (SIZE // 2))
        handler = uploading.factory.handler
        other = connect(handler)
        other.send(b"GET /other HTTP/1.1\r\n" + HOST + b"\r\n")
        calls.run_until(lambda: b"HTTP/1.1 200" in other.transport.value())
        assert [environ["PATH_INFO"] for environ in recorder.environs] == ["/other"]
        uploading.send(b"u" * (SIZE - SIZE // 2))
        calls.run_until(lambda: pool.idle and b"HTTP/1.1 200" in uploading.transport.value())
    finally:
        pool.stop()
    assert [environ["PATH_INFO"] for environ in recorder.environs] == ["/other", "/slow"]
    [response] = parse_responses(uploading.take())
    assert response.body == b"%d" % SIZE


@pytest.mark.parametrize("threaded", [True, False], ids=["buffered threads", "inline"])
def test_a_chunked_body_reaches_the_application_with_its_length(threaded: bool) -> None:
    """A body received whole is described as what it became: a CONTENT_LENGTH and
    no Transfer-Encoding (as nginx passes a buffered body on), so frameworks that
    read only CONTENT_LENGTH bytes see it.
    """
    recorder = Recorder()
    pool = QueueingPool() if threaded else None
    connection = buffered(recorder, pool)
    body = b"0123456789" * 500
    connection.send(
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body)
    )
    if pool is not None:
        pool.run_all()
    [environ] = recorder.environs
    assert environ["CONTENT_LENGTH"] == str(len(body))
    assert "HTTP_TRANSFER_ENCODING" not in environ
    assert recorder.bodies == [body]


def test_an_empty_chunked_body_has_a_length_of_zero() -> None:
    recorder = Recorder()
    pool = QueueingPool()
    connection = buffered(recorder, pool)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    pool.run_all()
    assert recorder.environs[0]["CONTENT_LENGTH"] == "0"
    assert recorder.bodies == [b""]


def test_100_continue_is_sent_at_once() -> None:
    """The application cannot be asked before the body is there: the server asks
    for the body as soon as the head is accepted (as nginx does).
    """
    pool = QueueingPool()
    connection = buffered(Recorder(), pool)
    connection.send(
        b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert connection.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert pool.calls == []
    connection.send(b"hello")
    pool.run_all()
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (200, b"5")


def test_a_body_larger_than_the_memory_part_is_read_back_from_disk(
    monkeypatch: pytest.MonkeyPatch, spools: list[Any], tmp_path: Path
) -> None:
    """Past SPOOL_SIZE the body goes to a temporary file in TMPDIR, read back whole."""
    monkeypatch.setattr(wsgi, "SPOOL_SIZE", 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    recorder = Recorder()
    pool = QueueingPool()
    connection = buffered(recorder, pool)
    body = bytes(range(256)) * 40
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(body))
    connection.send(body)
    [spool] = spools
    assert spool._rolled  # on disk, not in memory
    pool.run_all()
    assert recorder.bodies == [body]
    assert spool.closed


def test_a_body_that_cannot_be_stored_is_a_500_and_the_server_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A TMPDIR that is gone or full is the server's failure: 500, one log line, the
    rest of the body read and dropped, and the connection serves the next request.
    """
    monkeypatch.setattr(wsgi, "SPOOL_SIZE", 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    recorder = Recorder()
    pool = QueueingPool()
    connection = buffered(recorder, pool)
    with capture_log_events() as events:
        connection.send(b"POST /up HTTP/1.1\r\n" + HOST + b"Content-Length: 5000\r\n\r\n")
        connection.send(b"b" * 5000)
    assert pool.calls == []
    [refused] = parse_responses(connection.take())
    assert refused.status == 500
    [line] = [event for event in events if event.get("log_level") is not None and "error" in event]
    assert "POST /up" in line["log_format"].format(**line)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    connection.send(b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    pool.run_all()
    [response] = parse_responses(connection.take())
    assert response.status == 200
    assert [environ["PATH_INFO"] for environ in recorder.environs] == ["/next"]


@pytest.mark.parametrize(
    ("tail", "status"),
    [
        pytest.param(b"zz\r\n", 400, id="malformed chunk size"),
        pytest.param(chunked(b"a" * DISPATCH_BUFFER), 413, id="over max_body"),
    ],
)
def test_a_body_the_protocol_refuses_never_reaches_the_application(
    tail: bytes, status: int, spools: list[Any]
) -> None:
    """Failing after the request was handed over (past the protocol's own buffer),
    the body is dropped and the protocol's refusal is the answer.
    """
    recorder = Recorder()
    pool = QueueingPool()
    settings = HttpSettings(max_body=2 * DISPATCH_BUFFER)
    connection = buffered(recorder, pool, settings=settings)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
    connection.send(chunked(b"a" * (DISPATCH_BUFFER + 1000))[: -len(b"0\r\n\r\n")])
    assert [spool.closed for spool in spools] == [False]  # handed over, being stored
    connection.send(tail)
    pool.run_all()
    assert recorder.environs == []
    [response] = parse_responses(connection.take())
    assert response.status == status
    assert [spool.closed for spool in spools] == [True]


def test_a_client_leaving_during_its_upload_is_never_run(spools: list[Any]) -> None:
    recorder = Recorder()
    pool = QueueingPool()
    connection = buffered(recorder, pool)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % SIZE)
    connection.send(b"c" * (DISPATCH_BUFFER + 1000))
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    pool.run_all()
    assert recorder.environs == []
    assert [spool.closed for spool in spools] == [True]


def test_a_client_leaving_while_its_request_waits_for_a_thread_is_never_run(
    spools: list[Any],
) -> None:
    recorder = Recorder()
    pool = QueueingPool()
    connection = buffered(recorder, pool)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc")
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    # Let go at once, not when a thread is free: a flood of departed uploads held
    # a descriptor (or a MiB) each until then, past the open-files limit.
    assert [spool.closed for spool in spools] == [True]
    pool.run_all()
    assert recorder.environs == []


def test_the_body_is_let_go_when_the_application_is_done(spools: list[Any]) -> None:
    pool = QueueingPool()
    connection = buffered(Recorder(), pool)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc")
    [spool] = spools
    assert not spool.closed
    pool.run_all()
    assert spool.closed
    assert parse_responses(connection.take())[0].status == 200


def test_a_buffered_request_the_pool_refuses_is_a_500(spools: list[Any]) -> None:
    connection = buffered(Recorder(), RefusingPool())
    with capture_log_events():
        connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc")
    [response] = parse_responses(connection.take())
    assert response.status == 500
    assert [spool.closed for spool in spools] == [True]


def test_requests_without_a_body_go_to_a_thread_at_once() -> None:
    recorder = Recorder()
    pool = QueueingPool()
    buffered(recorder, pool).send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(pool.calls) == 1
    pool.run_all()
    assert recorder.bodies == [b""]


def test_a_file_response_of_the_body_itself_is_sent_whole(spools: list[Any]) -> None:
    """file_wrapper(wsgi.input) hands the spooled body to the reactor: the worker must
    not close it under the file sender (it was sent empty), only the exchange's end.
    """

    def echo_file(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", TEXT)
        return environ["wsgi.file_wrapper"](environ["wsgi.input"])

    pool = QueueingPool()
    calls = CallQueue()  # the hand-over reaches the reactor after the worker is done
    connection = buffered(
        echo_file, pool, reactor=calls, validate=False, transport=PullingTransport()
    )
    body = bytes(range(256)) * 64
    connection.send(b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(body))
    connection.send(body)
    pool.run_all()
    calls.run_pending()
    [response] = parse_responses(connection.take())
    assert response.body == body
    assert [spool.closed for spool in spools] == [True]


def test_a_body_handed_over_as_a_file_after_its_client_left_is_let_go(
    spools: list[Any], tmp_path: Path
) -> None:
    """The client leaves while the worker is about to hand a file response over:
    nothing will end the exchange again, so the worker closes the body itself.
    """
    path = tmp_path / "download.bin"
    path.write_bytes(b"d" * 1000)
    pool = QueueingPool()
    calls = CallQueue()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", TEXT)
        # The reactor sees the client leave while the application runs.
        connection.protocol.connectionLost(Failure(ConnectionDone()))
        return environ["wsgi.file_wrapper"](path.open("rb"))

    connection = buffered(app, pool, reactor=calls, validate=False)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc")
    pool.run_all()
    calls.run_pending()
    assert [spool.closed for spool in spools] == [True]


def test_a_body_waiting_too_long_for_a_thread_is_let_go(spools: list[Any]) -> None:
    clock = SynchronousReactorThreads()
    pool = QueueingPool()
    handler = WSGIHandler(
        validator(Recorder()),
        reactor=clock,
        threadpool=pool,
        request_buffering=True,
        queue_timeout=60.0,
        clock=clock,
    )
    connection = connect(handler, clock=clock)
    connection.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc")
    clock.advance(61)
    with capture_log_events():
        pool.run_all()
    assert parse_responses(connection.take())[0].status == 503
    assert [spool.closed for spool in spools] == [True]
