"""Response buffering: a streamed response waits in a spool for a slow client, so its
worker thread is free once the application has produced it (nginx's
``proxy_buffering`` in front of gunicorn). The spool on its own (order, limit, the
file reused), then the bridge through raw bytes with one real worker thread and a
client that reads only when the test says. Applications are wrapped in
``wsgiref.validate.validator``; responses are parsed with h11.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from wsgiref.validate import validator

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.test_wsgi import _waiting, one_worker
from twistwsgi import response_spool
from twistwsgi.response_spool import MEMORY_SIZE, ResponseSpool
from twistwsgi.testing import (
    CallQueue,
    QueueingPool,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    TrackingPool,
    capture_log_events,
    connect,
    parse_responses,
)
from twistwsgi.wsgi import IN_FLIGHT_HIGH_WATER, WSGIHandler

HOST = b"Host: example.com\r\n"
CHUNK = 16 * 1024


# -- the spool --------------------------------------------------------------------------


class RecordingFiles:
    """Stands for ``tempfile.TemporaryFile``: real temporary files, remembered."""

    def __init__(self) -> None:
        self.files: list[IO[bytes]] = []
        self._make = tempfile.TemporaryFile  # (the real one, even once this replaces it)

    def __call__(self) -> IO[bytes]:
        made = self._make()
        self.files.append(made)
        return made


def test_bytes_come_out_in_order_from_memory_then_the_file() -> None:
    files = RecordingFiles()
    spool = ResponseSpool(1000, memory_size=10, open_file=files)
    for piece in (b"abc", b"defg", b"hijklmnop", b"q", b"rs"):
        spool.append(piece)
    assert spool.held == 19
    assert len(files.files) == 1
    taken = b""
    while piece := spool.take(4):
        assert len(piece) <= 4
        taken += piece
    assert taken == b"abcdefghijklmnopqrs"
    assert spool.held == 0
    spool.close()


def test_small_responses_never_open_a_file() -> None:
    files = RecordingFiles()
    spool = ResponseSpool(10**6, open_file=files)
    spool.append(b"x" * MEMORY_SIZE)
    assert spool.take(10**6) == b"x" * MEMORY_SIZE
    spool.append(b"y" * MEMORY_SIZE)
    assert files.files == []


@given(st.lists(st.tuples(st.integers(1, MEMORY_SIZE), st.integers(0, 2 * MEMORY_SIZE))))
def test_a_limit_within_memory_never_opens_a_file(steps: list[tuple[int, int]]) -> None:
    """max_response_buffer = "64k" (a mount's, or the server's) holds in memory only."""
    files = RecordingFiles()
    spool = ResponseSpool(MEMORY_SIZE, open_file=files)
    for size, taken in steps:
        if spool.room_for(size):
            spool.append(b"x" * size)
        spool.take(taken)
    assert files.files == []


def test_the_limit_counts_memory_and_file_together() -> None:
    spool = ResponseSpool(100, memory_size=30)
    spool.append(b"a" * 60)
    assert spool.room_for(40)
    assert not spool.room_for(41)
    with pytest.raises(ValueError, match="do not fit"):
        spool.append(b"b" * 41)
    assert spool.held == 60
    spool.take(50)
    assert spool.room_for(90)
    spool.close()


@pytest.mark.parametrize(("limit", "memory"), [(0, 10), (10, -1)])
def test_a_limit_below_one_or_a_negative_memory_size_is_refused(limit: int, memory: int) -> None:
    with pytest.raises(ValueError):
        ResponseSpool(limit, memory_size=memory)


def test_a_closed_spool_holds_nothing_and_closes_its_file() -> None:
    files = RecordingFiles()
    spool = ResponseSpool(100, memory_size=0, open_file=files)
    spool.append(b"data")
    spool.close()
    spool.close()
    assert spool.held == 0
    assert files.files[0].closed
    with pytest.raises(ValueError, match="closed"):
        spool.append(b"more")
    with pytest.raises(ValueError, match="closed"):
        spool.take()


def test_a_file_that_cannot_be_made_holds_nothing_of_the_piece() -> None:
    def full_disk() -> IO[bytes]:
        raise OSError(errno.ENOSPC, "No space left on device")

    spool = ResponseSpool(100, memory_size=4, open_file=full_disk)
    spool.append(b"abc")
    with pytest.raises(OSError):
        spool.append(b"defg")
    assert spool.held == 3
    assert spool.take() == b"abc"


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENOSPC])
def test_a_temporary_file_that_cannot_be_made_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int
) -> None:
    """The directory is chosen at the start, so a spool opened when descriptors or
    space have run out fails with that errno, not with tempfile's "No usable
    temporary directory found" (ENOENT), which its choice at first use would raise.
    """
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert response_spool.settle_temporary_directory() is None

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OSError, match=os.strerror(code)) as raised:
        response_spool._temporary_file()
    assert raised.value.errno == code
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert response_spool.settle_temporary_directory() is not None


def test_the_file_is_a_ring_never_larger_than_the_limit() -> None:
    """A response held for a client that reads as fast as it is written, but never
    catches up: the file is written around, never past the limit.
    """
    files = RecordingFiles()
    spool = ResponseSpool(100, memory_size=0, open_file=files)
    sent = received = b""
    for number in range(2000):
        piece = bytes([number % 251]) * 7
        spool.append(piece)
        sent += piece
        while len(received) < len(sent):  # (a read ends where the ring wraps)
            received += spool.take(len(sent) - len(received))
        assert os.fstat(files.files[0].fileno()).st_size <= 100
    while piece := spool.take():
        received += piece
    assert received == sent
    spool.close()


def test_closing_during_an_unlocked_write_leaves_the_file_to_the_writer() -> None:
    """The owner closes the spool (the client left) while a worker writes its
    reserved bytes unlocked: the descriptor stays open until the write is
    committed, so it is never closed (and reused) under the write.
    """
    files = RecordingFiles()
    spool = ResponseSpool(100, memory_size=0, open_file=files)
    assert spool.reserve(b"abc")
    spool.close()
    spool.write_reserved(b"abc")
    assert not closed(files.files[0])
    spool.commit()
    assert closed(files.files[0])
    assert spool.held == 0


def test_small_pieces_are_joined_in_memory_and_taken_together() -> None:
    spool = ResponseSpool(10_000)
    for _ in range(100):
        spool.append(b"data: x\n\n")
    assert spool.take() == b"data: x\n\n" * 100
    spool.close()


@settings(max_examples=200, deadline=None)
@example(steps=[("append", b"a" * 10), ("take", 5), ("append", b"b" * 5)], memory_size=0, limit=10)
@given(
    steps=st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=40).map(lambda data: ("append", data)),
            st.integers(min_value=1, max_value=50).map(lambda most: ("take", most)),
        ),
        max_size=60,
    ),
    memory_size=st.integers(min_value=0, max_value=64),
    limit=st.integers(min_value=1, max_value=200),
)
def test_any_appends_and_takes_keep_the_order_and_the_limits(
    steps: list[tuple[str, Any]], memory_size: int, limit: int
) -> None:
    """Whatever the sequence: bytes come out as they went in, never more than the
    limit is held, and the file never grows past the limit (it is written again
    from its start once emptied).
    """
    files = RecordingFiles()
    spool = ResponseSpool(limit, memory_size=memory_size, open_file=files)
    sent = b""
    received = b""
    for kind, value in steps:
        if kind == "append":
            if spool.room_for(len(value)):
                spool.append(value)
                sent += value
        else:
            piece = spool.take(value)
            assert len(piece) <= value
            received += piece
        assert spool.held == len(sent) - len(received) <= limit
        for made in files.files:
            assert os.fstat(made.fileno()).st_size <= limit
    while piece := spool.take():
        received += piece
    assert received == sent
    spool.close()


# -- the bridge -------------------------------------------------------------------------


class SlowClientTransport(StringTransport):
    """A client whose socket buffer is full after every write: the transport pauses
    its producer each time, and resumes it only when the test reads (``read``).

    Attributes:
        taken: bytes the client has read (what was written before its last read).
        on_write: called once, at the next write, before the transport pauses.
    """

    taken = 0
    on_write: Callable[[], object] | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        hook, self.on_write = self.on_write, None
        if hook is not None:
            hook()
        if self.producer is not None and self.streaming:
            self.producer.pauseProducing()

    def read(self) -> None:
        """The client takes what was sent so far; the transport asks for more."""
        self.taken = len(self.value())
        if self.producer is not None and self.streaming:
            self.producer.resumeProducing()


class Body:
    """A streamed result of numbered chunks (each byte its chunk's number).

    It notes, as it produces each chunk, how far it is ahead of its client: the
    bytes produced so far less those the client has read (``ahead``, the most
    seen) — measured in the worker thread, so no timing is involved.
    """

    def __init__(self, chunks: int, size: int = CHUNK) -> None:
        self.chunks = chunks
        self.size = size
        self.produced = 0
        self.ahead = 0
        self.client: SlowClientTransport | None = None
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for number in range(self.chunks):
            self.produced += 1
            if self.client is not None:
                taken = self.client.taken
                self.ahead = max(self.ahead, self.produced * self.size - taken)
            yield bytes([number % 251]) * self.size

    def close(self) -> None:
        self.closed.set()

    def expected(self) -> bytes:
        return b"".join(bytes([number % 251]) * self.size for number in range(self.chunks))


def streaming(body: Body, headers: list[tuple[str, str]] | None = None) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), *(headers or [])])
        return body

    return validator(app)


class Served:
    """One connection to a streaming application, and the exchanges it ended."""

    def __init__(
        self,
        body: Body,
        calls: CallQueue,
        pool: TrackingPool,
        *,
        headers: list[tuple[str, str]] | None = None,
        buffering: bool = True,
        limit: int = 2**30,
        client: SlowClientTransport | None = None,
        grace: float = 0.0,
    ) -> None:
        self.calls = calls
        self.ended: list[object] = []
        handler = WSGIHandler(
            streaming(body, headers),
            reactor=calls,
            threadpool=pool,
            response_buffering=buffering,
            max_response_buffer=limit,
            spool_grace=grace,
        )
        self.client = client or SlowClientTransport()
        body.client = self.client
        self.connection = connect(handler, transport=self.client, response_log=self.ended.append)

    def request(self, target: bytes = b"/") -> None:
        self.connection.send(b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n")

    def read_to_the_end(self) -> None:
        """Play the client reading until the response has ended.

        After each read, the reactor's calls run until more was sent or the
        response ended (the worker may have to produce it first).
        """
        while not self.ended:
            sent = len(self.client.value())

            def progressed(sent: int = sent) -> bool:
                return bool(self.ended) or len(self.client.value()) > sent

            self.client.read()
            self.calls.run_until(progressed)

    def body(self) -> bytes:
        [response] = parse_responses(self.connection.take())
        assert response.status == 200
        return response.body


def test_a_slow_client_holds_no_worker_thread() -> None:
    """The application produces its whole 3.2 MiB answer (and is closed) while the
    client has read nothing; the client then gets every byte in order and the
    response ends (also when the last piece fills the client's buffer).
    """
    body = Body(200)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request()
        calls.run_until(lambda: body.closed.is_set() and pool.idle)
        assert served.client.taken == 0
        served.read_to_the_end()
    assert body.ahead == 200 * CHUNK
    assert served.body() == body.expected()


# What the worker may produce ahead of a client that does not read, without the
# spool: what it hands over before the pause reaches it, and the chunk it holds.
UNSPOOLED_AHEAD = IN_FLIGHT_HIGH_WATER + 3 * CHUNK


def test_without_buffering_the_worker_waits_for_the_client() -> None:
    body = Body(200)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool, buffering=False)
        served.request()
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    assert body.ahead <= UNSPOOLED_AHEAD
    assert served.body() == body.expected()


def test_past_the_limit_the_worker_waits_until_the_client_read_what_is_held() -> None:
    """With max_response_buffer 500 KB the worker runs that much further ahead of a
    client that reads nothing than it could without buffering, and no further; it
    goes on once the client reads, and the response arrives whole.
    """
    limit = 500_000
    body = Body(200)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool, limit=limit)
        served.request()
        # Out of reach without the spool (UNSPOOLED_AHEAD is about 300 KB).
        calls.run_until(lambda: body.produced * CHUNK >= limit + CHUNK)
        assert not body.closed.is_set()  # it cannot finish: nothing reads
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    assert limit + CHUNK <= body.ahead <= UNSPOOLED_AHEAD + limit
    assert served.body() == body.expected()


def test_bytes_handed_over_before_a_pause_go_before_the_spooled_ones() -> None:
    """The worker hands a chunk over directly, the client stops reading before the
    reactor has sent it, the next chunk is spooled, the client reads again: the
    spool waits for the chunk still on its way, and is sent once it has gone.
    One thread plays worker and reactor, in that order of events.
    """
    calls = CallQueue()
    transport = StringTransport()  # (pauses nothing itself: the test does)

    def body() -> Iterator[bytes]:
        protocol = connection.protocol
        yield b"a" * CHUNK
        calls.run_pending()  # the reactor sends it
        yield b"b" * CHUNK  # handed over; the reactor has not sent it yet
        protocol.pauseProducing()
        yield b"c" * CHUNK  # spooled: the client is not reading
        protocol.resumeProducing()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return body()

    handler = WSGIHandler(
        validator(app), reactor=calls, threadpool=SynchronousThreadPool(), response_buffering=True
    )
    connection = connect(handler, transport=transport)
    connection.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    calls.run_pending()  # "b" goes, then what was spooled, then the end
    [response] = parse_responses(connection.take())
    assert response.body == b"a" * CHUNK + b"b" * CHUNK + b"c" * CHUNK


@pytest.mark.parametrize(
    ("server", "field", "buffered"),
    [
        pytest.param(True, "no", False, id="on-but-the-application-says-no"),
        pytest.param(False, "yes", True, id="off-but-the-application-says-yes"),
        pytest.param(True, " No ", False, id="case-and-spaces"),
        pytest.param(False, "maybe", False, id="another-value-leaves-the-server-choice"),
    ],
)
def test_x_accel_buffering_decides_for_its_response(
    server: bool, field: str, buffered: bool
) -> None:
    """Nginx reads X-Accel-Buffering from an upstream; here from the application.
    The field is passed on (a proxy further in front may read it too).
    """
    body = Body(200)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool, headers=[("X-Accel-Buffering", field)], buffering=server)
        served.request()
        if buffered:
            calls.run_until(lambda: body.closed.is_set() and pool.idle)
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    if buffered:
        assert body.ahead == 200 * CHUNK
    else:
        assert body.ahead <= UNSPOOLED_AHEAD
    [response] = parse_responses(served.connection.take())
    assert response.header(b"x-accel-buffering") == field.strip().encode()
    assert response.body == body.expected()


def test_the_spool_stops_at_the_content_length() -> None:
    """An application sending more than its Content-Length: the spooled excess is
    not sent, and the response ends at the length.
    """
    body = Body(40)
    length = 30 * CHUNK + 5
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool, headers=[("Content-Length", str(length))])
        served.request()
        calls.run_until(lambda: body.closed.is_set() and pool.idle)
        served.read_to_the_end()
    assert served.body() == body.expected()[:length]
    assert body.produced <= 31


def closed(made: IO[bytes]) -> bool:
    return made.closed


def test_a_slow_disk_holds_the_worker_not_the_reactor(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the worker writes to the spool's file (here a write that waits until
    the test lets it go), the reactor still pauses and resumes the call: the
    worker holds no lock the reactor needs across the write.
    """
    writing = threading.Event()
    proceed = threading.Event()
    real_pwrite = os.pwrite

    def slow_pwrite(descriptor: int, data: Any, position: int) -> int:
        writing.set()
        proceed.wait(10)  # (only turns a hang into a failure)
        return real_pwrite(descriptor, data, position)

    monkeypatch.setattr(os, "pwrite", slow_pwrite)
    body = Body(200)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request()
        calls.run_until(writing.is_set)  # past 64 KiB in memory: the file
        reacted = threading.Event()

        def reactor_turn() -> None:
            served.connection.protocol.resumeProducing()
            served.connection.protocol.pauseProducing()
            reacted.set()

        turn = threading.Thread(target=reactor_turn)
        turn.start()
        took_the_lock = reacted.wait(10)
        proceed.set()
        turn.join()
        assert took_the_lock, "the reactor waited for the disk"
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    assert served.body() == body.expected()


class GatedBody(Body):
    """Stops before chunk ``gate_at`` until ``gate`` is set; says when it got there
    (``at_gate``) and when it went on to the next chunk (``past``).
    """

    def __init__(self, chunks: int, gate_at: int = 30) -> None:
        super().__init__(chunks)
        self.gate_at = gate_at
        self.gate = threading.Event()
        self.at_gate = threading.Event()
        self.past = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for number, chunk in enumerate(super().__iter__()):
            if number == self.gate_at:
                self.at_gate.set()
                self.gate.wait(10)  # (only turns a hang into a failure)
            elif number == self.gate_at + 1:
                self.past.set()
            yield chunk


def test_while_the_client_reads_the_spool_is_emptied_before_more_goes_in() -> None:
    """A client that reads again gets the spool emptied; meanwhile the worker waits
    rather than adding to it, then hands over directly: a fast client's large
    response does not go through the disk because its connection paused a moment.
    """
    body = GatedBody(60)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request()
        # What went out before the client paused, then about 200 KB spooled.
        calls.run_until(body.at_gate.is_set)
        decided: list[str] = []

        def worker_decides_mid_drain() -> None:
            # The reactor is sending the spool (not paused, bytes still held) when
            # the worker comes with chunk 30.
            body.gate.set()
            done = threading.Event()
            for _ in range(1000):
                if body.past.is_set() or _waiting(pool):
                    break
                done.wait(0.01)
            decided.append("spooled" if body.past.is_set() else "waited")

        served.client.on_write = worker_decides_mid_drain
        served.client.read()  # the first piece goes, the worker decides, the client pauses
        # Paused again: the waiting worker is told, and spools on.
        calls.run_until(body.past.is_set)
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    assert decided == ["waited"]
    assert served.body() == body.expected()


def wait_for_either(first: threading.Event, second: Callable[[], bool]) -> None:
    """Until one holds (the bound only turns a hang into a failure)."""
    pause = threading.Event()
    for _ in range(1000):
        if first.is_set() or second():
            return
        pause.wait(0.01)


def test_a_paused_client_is_given_a_moment_before_anything_is_spooled(
    made_files: RecordingFiles,
) -> None:
    """A paused client is waited for SPOOL_GRACE before spooling starts (here 10 s,
    which the test never lets pass): a fast client's connection pauses for a
    moment again and again, and a client reading again meanwhile gets its response
    handed over directly, nothing through the disk.
    """
    body = GatedBody(200, gate_at=10)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool, grace=10.0)
        served.request()
        assert body.at_gate.wait(10)  # chunks 0-9 handed over, not sent yet
        calls.run_pending()  # sent: the client's buffer is full, it pauses
        body.gate.set()  # chunk 10 comes to a paused client, nothing spooled
        wait_for_either(body.past, lambda: _waiting(pool))
        assert not body.past.is_set(), "chunk 10 was spooled at once"
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    assert body.ahead <= UNSPOOLED_AHEAD
    assert made_files.files == []
    assert served.body() == body.expected()


class FailingBody(Body):
    """Raises after its chunks, as an application failing mid-stream."""

    def __iter__(self) -> Iterator[bytes]:
        yield from super().__iter__()
        raise RuntimeError("the database went away")


def test_an_application_failing_mid_stream_has_what_it_sent_delivered_first() -> None:
    """As for bytes that went out directly: the client gets everything produced
    before the exception, then the connection is closed without the last chunk
    (the response is visibly incomplete); the traceback is in the log.
    """
    body = FailingBody(100)
    with capture_log_events() as events, one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request()
        calls.run_until(lambda: body.closed.is_set() and pool.idle)
        assert not served.connection.is_closed()  # what is spooled is not read yet
        served.read_to_the_end()
    assert served.connection.is_closed()
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "example.com")]))
    client.receive_data(served.connection.transport.value())
    received = b""
    while (event := client.next_event()) is not h11.NEED_DATA:
        assert not isinstance(event, h11.EndOfMessage)
        if isinstance(event, h11.Data):
            received += event.data
    assert received == body.expected()
    assert any("the database went away" in str(event.get("log_failure", "")) for event in events)


@pytest.fixture
def made_files(monkeypatch: pytest.MonkeyPatch) -> RecordingFiles:
    files = RecordingFiles()
    monkeypatch.setattr(tempfile, "TemporaryFile", files)
    return files


def test_a_client_that_leaves_lets_the_spool_go(made_files: RecordingFiles) -> None:
    """The file is closed when the connection is lost, and the application, still
    producing past the limit, is stopped at its next chunk and closed.
    """
    body = Body(1000)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool, limit=200_000)
        served.request()
        calls.run_until(lambda: body.produced * CHUNK > UNSPOOLED_AHEAD + MEMORY_SIZE)
        [spool_file] = made_files.files
        assert not closed(spool_file)
        served.connection.protocol.connectionLost(Failure(ConnectionDone()))
        calls.run_until(lambda: body.closed.is_set() and pool.idle)
    assert closed(spool_file)
    assert body.produced < 1000


def test_the_file_is_closed_when_the_response_ends(made_files: RecordingFiles) -> None:
    body = Body(100)
    with one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request()
        calls.run_until(lambda: body.closed.is_set() and pool.idle)
        [spool_file] = made_files.files
        assert not closed(spool_file)
        served.read_to_the_end()
        assert not served.connection.is_closed()  # keep-alive: the next request may come
    assert closed(spool_file)


def test_a_spool_that_cannot_write_falls_back_to_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full: one warning naming the request, the worker waits for the client as
    without buffering, and the response still arrives whole and in order.
    """

    def full_disk() -> IO[bytes]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full_disk)
    body = Body(200)
    with capture_log_events() as events, one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request(b"/big")

        def warned() -> list[dict[str, Any]]:
            return [event for event in events if "temporary file" in event.get("log_format", "")]

        calls.run_until(lambda: bool(warned()))
        assert not body.closed.is_set()
        served.read_to_the_end()
        calls.run_until(lambda: pool.idle)
    # The first 64 KiB were held in memory; the file was where it stopped.
    assert body.ahead <= UNSPOOLED_AHEAD + MEMORY_SIZE
    assert served.body() == body.expected()
    warnings = warned()
    assert len(warnings) == 1
    assert warnings[0]["target"] == "/big"
    assert "No space left" in str(warnings[0]["error"])


def test_a_spool_that_cannot_be_read_back_aborts_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = Body(100)
    with capture_log_events() as events, one_worker() as (calls, pool):
        served = Served(body, calls, pool)
        served.request()
        calls.run_until(lambda: body.closed.is_set() and pool.idle)

        def failing_read(*args: Any) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "pread", failing_read)
        for _ in range(20):
            served.client.read()
            calls.run_pending()
    assert served.connection.is_closed()
    assert any("cannot read the response back" in event.get("log_format", "") for event in events)


# -- configuration ----------------------------------------------------------------------


def test_response_buffering_is_on_by_default_and_a_mount_may_turn_it_off(tmp_path: Path) -> None:
    """[server] response_buffering (on by default) and max_response_buffer reach
    every application mount; a mount's response_buffering replaces the server's
    (nginx's proxy_buffering in a location).
    """
    from twistwsgi.cli import load_config
    from twistwsgi.site import SiteBuilder

    (tmp_path / "site.toml").write_text(
        '[server]\nmax_response_buffer = "8m"\nthread_queue_timeout = 0\n'
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/events"\napp = "tests.apps:hello"\n'
        "response_buffering = false\n"
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    )
    config = load_config({"config": str(tmp_path / "site.toml")})
    assert config.response_buffering
    table = SiteBuilder(reactor=SynchronousReactorThreads(), threadpool=QueueingPool()).build(
        config
    )
    chosen = {
        handler.script_name: (handler.response_buffering, handler.max_response_buffer)
        for handler in table.handlers
        if isinstance(handler, WSGIHandler)
    }
    assert chosen == {b"/events": (False, 8 * 1024 * 1024), b"": (True, 8 * 1024 * 1024)}


def test_a_mount_may_hold_less_or_more_than_the_server(tmp_path: Path) -> None:
    """A mount's max_response_buffer (nginx's proxy_max_temp_file_size in a
    location) replaces the server's, for an application's and an upstream's
    responses; 0 is refused, as for the server's.
    """
    from twistwsgi.cli import load_config
    from twistwsgi.config import ConfigError
    from twistwsgi.proxy import ProxyHandler
    from twistwsgi.service import standard_builders
    from twistwsgi.site import SiteBuilder

    text = (
        '[server]\nmax_response_buffer = "8m"\n'
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/downloads"\napp = "tests.apps:hello"\n'
        'max_response_buffer = "64k"\n'
        '[[host.mount]]\npath = "/videos"\nproxy = "http://127.0.0.1:9"\n'
        'max_response_buffer = "2g"\n'
        '[[host.mount]]\npath = "/api"\nproxy = "http://127.0.0.1:9"\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    )
    (tmp_path / "site.toml").write_text(text)
    config = load_config({"config": str(tmp_path / "site.toml")})
    reactor = SynchronousReactorThreads()
    builders = standard_builders(reactor)
    table = SiteBuilder(reactor=reactor, threadpool=QueueingPool(), builders=builders).build(config)
    applications = {
        handler.script_name: handler.max_response_buffer
        for handler in table.handlers
        if isinstance(handler, WSGIHandler)
    }
    assert applications == {b"/downloads": 64 * 1024, b"": 8 * 1024 * 1024}
    upstreams = {
        handler.name: handler.max_buffer
        for handler in table.handlers
        if isinstance(handler, ProxyHandler)
    }
    assert upstreams == {"/videos": 2 * 1024**3, "/api": 8 * 1024 * 1024}
    (tmp_path / "site.toml").write_text(text.replace('"64k"', "0"))
    with pytest.raises(ConfigError, match=r"mount\[0\]\.max_response_buffer: expected more"):
        load_config({"config": str(tmp_path / "site.toml")})


def test_the_command_line_turns_it_off() -> None:
    from twistwsgi.cli import load_config

    config = load_config({"app": "tests.apps:hello", "response_buffering": "off"})
    assert not config.response_buffering


@pytest.mark.parametrize("size", ["0", "-1k"])
def test_max_response_buffer_must_be_more_than_zero(size: str) -> None:
    from twistwsgi.cli import load_config
    from twistwsgi.config import ConfigError

    with pytest.raises(ConfigError, match=r"max_response_buffer|max-response-buffer"):
        load_config({"app": "tests.apps:hello", "max_response_buffer": size})


def test_the_handler_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="max_response_buffer"):
        WSGIHandler(
            lambda environ, start_response: [],
            reactor=SynchronousReactorThreads(),
            threadpool=QueueingPool(),
            max_response_buffer=0,
        )
