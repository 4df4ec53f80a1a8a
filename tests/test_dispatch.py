"""Dispatching reactor events without Twisted's per-event log context, and reading
TCP connections inline in the epoll reactor's loop.

The unit tests call the replacement directly; the socket test shows the real reactor
goes through it (a legacy log line written while handling an event has no
connection prefix any more) and that an exception in a protocol is still logged
with the connection's prefix and drops only that connection. The read_inline tests
drive a private epoll reactor one iteration at a time over real loopback sockets and
check each way a read can end as Twisted's own path ends it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any, cast
from wsgiref.validate import validator

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from twistwsgi import dispatch
from twistwsgi.dispatch import (
    log_context_skipped,
    read_generic,
    read_inline,
    reads_inline,
    restore_log_context,
    skip_log_context,
)
from twistwsgi.http import transport
from twistwsgi.http.protocol import HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.http.transport import HOLD_LIMIT, after_batch, end_batch, start_batch, write_now
from twistwsgi.testing import capture_log_events
from twistwsgi.wsgi import WSGIHandler


class Prefixed:
    def logPrefix(self) -> str:
        return "Conn,7,127.0.0.1"


@pytest.fixture
def skipped() -> Any:
    skip_log_context()
    yield
    restore_log_context()


def test_skip_and_restore_are_idempotent() -> None:
    original = log.callWithLogger
    skip_log_context()
    skip_log_context()
    assert log_context_skipped()
    restore_log_context()
    restore_log_context()
    assert log.callWithLogger is original
    assert not log_context_skipped()


@pytest.mark.usefixtures("skipped")
def test_the_handler_runs_with_its_arguments_and_result() -> None:
    assert log.callWithLogger(Prefixed(), lambda a, b=0: a + b, 2, b=3) == 5


@pytest.mark.usefixtures("skipped")
def test_an_exception_is_logged_with_the_prefix_and_not_raised() -> None:
    def broken() -> None:
        raise ValueError("in a handler")

    with capture_log_events() as events:
        assert log.callWithLogger(Prefixed(), broken) is None
    (event,) = [e for e in events if e.get("isError")]
    assert event["failure"].check(ValueError)
    assert event["log_system"] == "Conn,7,127.0.0.1"


@pytest.mark.usefixtures("skipped")
def test_keyboard_interrupt_goes_through() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log.callWithLogger(Prefixed(), interrupted)


class _Shouting(Protocol):
    """Writes a legacy log line for each read, then fails on ``boom``."""

    def dataReceived(self, data: bytes) -> None:
        log.msg("read " + data.decode())
        if b"boom" in data:
            raise RuntimeError("protocol bug")
        self.transport.write(data.upper())  # type: ignore[union-attr]


class RealReactorTests(TestCase):
    async def test_the_reactor_dispatches_through_it(self) -> None:
        skip_log_context()
        self.addCleanup(restore_log_context)
        factory: Any = Factory.forProtocol(_Shouting)
        reactor: Any = global_reactor
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = ("127.0.0.1", port.getHost().port)

        def client() -> tuple[bytes, bytes]:
            with socket.create_connection(address, timeout=10) as good:
                good.sendall(b"hi")
                answer = good.recv(100)
                with socket.create_connection(address, timeout=10) as bad:
                    bad.sendall(b"boom")
                    closed = bad.recv(100)  # b"": the server dropped it
                good.sendall(b"again")
                return answer + good.recv(100), closed

        with capture_log_events() as events:
            answers, closed = await deferToThread(client)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(answers, b"HIAGAIN")
        self.assertEqual(closed, b"")
        reads = [e for e in events if str(e.get("log_text", "")).startswith("read ")]
        self.assertTrue(reads)
        # No connection prefix: the reactor did not push a log context.
        self.assertEqual({e.get("log_system") for e in reads}, {"-"})
        failures = [e["failure"] for e in events if e.get("isError") and "failure" in e]
        self.assertTrue(any(failure.check(RuntimeError) for failure in failures))


# -- read_inline: a private epoll reactor, driven one iteration at a time ----------------


class _Recorder(Protocol):
    """Answers each read with its upper case; ``boom`` raises; records how it ended."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"boom" in data:
            raise RuntimeError("protocol bug")
        if b"done" in data:
            raise ConnectionDone("the protocol says it is done")
        self.transport.write(data.upper())  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.append(reason)


@implementer(IHalfCloseableProtocol)
class _HalfCloser(_Recorder):
    """Says goodbye when the client stops sending, then closes."""

    read_ended = False

    def readConnectionLost(self) -> None:
        self.read_ended = True
        self.transport.write(b"BYE")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class _FailingSocket:
    """A connection's socket whose receive raises ``error``."""

    def __init__(self, real: socket.socket, error: BaseException) -> None:
        self._real = real
        self._error = error

    def recv(self, size: int) -> bytes:
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class InlineReads:
    """A fresh epoll reactor (not the global one) with read_inline applied.

    It listens on a TCP port whose protocols it keeps, and records the events
    Twisted's generic path handled, by selectable (the server transport).
    """

    def __init__(self, protocol_class: type[_Recorder] = _Recorder) -> None:
        self.reactor: Any = cast(Any, EPollReactor())
        assert read_inline(self.reactor)
        self.protocols: list[_Recorder] = []
        self.generic: list[tuple[Any, int]] = []
        generic = self.reactor._doReadOrWrite

        def counted(selectable: Any, fd: int, event: int) -> None:
            self.generic.append((selectable, event))
            generic(selectable, fd, event)

        self.reactor._doReadOrWrite = counted
        protocols = self.protocols

        class Keeping(Factory):
            def buildProtocol(self, addr: Any) -> _Recorder:
                protocol = protocol_class()
                protocols.append(protocol)
                return protocol

        self.port = self.reactor.listenTCP(0, Keeping(), interface="127.0.0.1")
        self.clients: list[socket.socket] = []

    def connect(self) -> tuple[socket.socket, _Recorder, Any]:
        """A client socket (non-blocking), its server protocol and transport."""
        client = socket.create_connection(("127.0.0.1", self.port.getHost().port), timeout=10)
        client.setblocking(False)
        self.clients.append(client)
        count = len(self.protocols)
        self.spin(lambda: len(self.protocols) > count)
        protocol = self.protocols[-1]
        return client, protocol, protocol.transport

    def spin(self, done: Callable[[], bool]) -> None:
        """Run reactor iterations (each waits for socket events) until ``done()``."""
        for _ in range(200):
            if done():
                return
            self.reactor.doIteration(0.05)
        raise AssertionError("the reactor never got there")

    def answer(self, client: socket.socket, size: int) -> bytes:
        received = b""

        def arrived() -> bool:
            nonlocal received
            with contextlib.suppress(BlockingIOError):
                received += client.recv(100)
            return len(received) >= size

        self.spin(arrived)
        return received

    def generic_reads(self, transport: Any) -> list[int]:
        """Events with "readable" set that Twisted's own path handled for ``transport``."""
        return [
            event
            for selectable, event in self.generic
            if selectable is transport and event & select.EPOLLIN
        ]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.reactor.disconnectAll()
        self.reactor.waker.connectionLost(None)
        self.reactor._poller.close()


@pytest.fixture
def inline() -> Iterator[InlineReads]:
    harness = InlineReads()
    yield harness
    harness.close()


@pytest.fixture
def half_closing() -> Iterator[InlineReads]:
    harness = InlineReads(_HalfCloser)
    yield harness
    harness.close()


def test_read_inline_applies_to_epoll_reactors_only() -> None:
    assert not read_inline(MemoryReactorClock())
    assert not read_inline(Clock())

    class OwnPolling(EPollReactor):
        def doPoll(self, timeout: float | None) -> None:
            super().doPoll(timeout)

        doIteration = doPoll  # noqa: N815 - Twisted's name

    reactor: Any = OwnPolling.__new__(OwnPolling)  # never started: no fds to close
    assert not read_inline(reactor)
    assert not reads_inline(reactor)


def test_read_inline_waits_for_a_check_of_a_new_twisted_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "CHECKED_TWISTED_MAJORS", range(0))
    reactor: Any = EPollReactor.__new__(EPollReactor)  # never started: no fds to close
    assert not read_inline(reactor)
    assert not reads_inline(reactor)


def test_read_inline_is_idempotent_and_undone(inline: InlineReads) -> None:
    reactor = inline.reactor
    assert reads_inline(reactor)
    assert read_inline(reactor)
    read_generic(reactor)
    assert not reads_inline(reactor)
    assert reactor.doIteration.__func__ is EPollReactor.doPoll
    read_generic(reactor)  # nothing left to undo
    assert read_inline(reactor)


def test_a_tcp_read_reaches_the_protocol_without_the_generic_path(inline: InlineReads) -> None:
    client, protocol, transport = inline.connect()
    for word in (b"one", b"two"):
        client.sendall(word)
        assert inline.answer(client, 3) == word.upper()
    assert protocol.received == b"onetwo"
    assert inline.generic_reads(transport) == []
    # The generic path still runs for what is not a connection's read: the accept.
    assert any(selectable is inline.port for selectable, _ in inline.generic)


# Each way a read can end, handled by the inline path (no readable event of the
# connection went Twisted's way) with the outcome Twisted's own path gives.


def test_end_of_stream_is_a_clean_close(inline: InlineReads) -> None:
    client, protocol, transport = inline.connect()
    client.shutdown(socket.SHUT_WR)
    inline.spin(lambda: bool(protocol.lost))
    protocol.lost[0].trap(ConnectionDone)
    assert inline.generic_reads(transport) == []


def test_end_of_stream_half_closes_a_half_closeable_protocol(half_closing: InlineReads) -> None:
    client, protocol, transport = half_closing.connect()
    assert isinstance(protocol, _HalfCloser)
    client.shutdown(socket.SHUT_WR)
    # The protocol can still write after the client stopped sending.
    assert half_closing.answer(client, 3) == b"BYE"
    assert protocol.read_ended
    assert half_closing.generic_reads(transport) == []


def test_a_receive_error_is_a_lost_connection(inline: InlineReads) -> None:
    # A reset usually comes flagged as a hang-up, which Twisted's own path handles
    # (see the next test); this is the reset found by the receive itself.
    client, protocol, transport = inline.connect()
    transport.socket = _FailingSocket(transport.socket, ConnectionResetError("reset"))
    client.sendall(b"x")
    inline.spin(lambda: bool(protocol.lost))
    protocol.lost[0].trap(ConnectionLost)
    assert inline.generic_reads(transport) == []


def test_a_reset_is_a_lost_connection(inline: InlineReads) -> None:
    client, protocol, _ = inline.connect()
    # SO_LINGER with a zero timeout: close sends RST.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    inline.spin(lambda: bool(protocol.lost))
    protocol.lost[0].trap(ConnectionLost)


def test_any_other_receive_failure_is_logged_and_drops_the_connection(
    inline: InlineReads,
) -> None:
    client, protocol, transport = inline.connect()
    transport.socket = _FailingSocket(transport.socket, MemoryError("no memory"))
    with capture_log_events() as events:
        client.sendall(b"x")
        inline.spin(lambda: bool(protocol.lost))  # the loop itself did not raise
    protocol.lost[0].trap(MemoryError)
    (logged,) = [e for e in events if e.get("isError")]
    assert logged["failure"].check(MemoryError)
    assert inline.generic_reads(transport) == []


def test_a_protocol_exception_is_logged_and_drops_only_its_connection(
    inline: InlineReads,
) -> None:
    good, good_protocol, _ = inline.connect()
    bad, bad_protocol, bad_transport = inline.connect()
    prefix = bad_transport.logPrefix()
    with capture_log_events() as events:
        bad.sendall(b"boom")
        inline.spin(lambda: bool(bad_protocol.lost))
    (logged,) = [e for e in events if e.get("isError")]
    assert logged["failure"].check(RuntimeError)
    assert logged["log_system"] == prefix
    bad_protocol.lost[0].trap(RuntimeError)
    assert inline.generic_reads(bad_transport) == []
    good.sendall(b"still")
    assert inline.answer(good, 5) == b"STILL"
    assert not good_protocol.lost


def test_an_exception_is_not_taken_for_the_end_of_the_reading_side(
    half_closing: InlineReads,
) -> None:
    # ConnectionDone raised by the protocol ends the whole connection, as in Twisted:
    # the half-close is for the client ending its stream, not for an exception.
    client, protocol, transport = half_closing.connect()
    assert isinstance(protocol, _HalfCloser)
    with capture_log_events():
        client.sendall(b"done")
        half_closing.spin(lambda: bool(protocol.lost))
    assert not protocol.read_ended
    protocol.lost[0].trap(ConnectionDone)
    assert half_closing.generic_reads(transport) == []


def test_an_aborted_connection_reads_nothing_more(inline: InlineReads) -> None:
    client, protocol, transport = inline.connect()
    transport.pauseProducing()
    client.sendall(b"late")
    select.select([transport.socket], [], [], 10)  # the bytes wait to be read
    # Aborting replaces doRead on the transport (and loses the connection on the
    # next turn of the loop); reading resumed meanwhile must still read nothing.
    transport.abortConnection()
    transport.resumeProducing()
    inline.spin(lambda: bool(inline.generic_reads(transport)))  # Twisted's path took it
    inline.reactor.runUntilCurrent()
    assert protocol.received == b""
    protocol.lost[0].trap(ConnectionAborted)


# -- writes held while a batch of events is handled ---------------------------------------


class _Writer(_Recorder):
    """Runs the test's ``script`` on each read and notes what its client could see."""

    def __init__(self) -> None:
        super().__init__()
        self.script: Callable[[Any], None] = lambda transport: None
        self.peer: socket.socket | None = None
        self.seen_during = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.script(self.transport)
        assert self.peer is not None
        self.seen_during = _waiting(self.peer)


def _waiting(client: socket.socket) -> bytes:
    """What has reached ``client`` and not been read yet (nothing is consumed)."""
    try:
        return client.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


@pytest.fixture
def writing() -> Iterator[InlineReads]:
    harness = InlineReads(_Writer)
    yield harness
    harness.close()


def _writer(harness: InlineReads, script: Callable[[Any], None]) -> tuple[socket.socket, _Writer]:
    client, protocol, _ = harness.connect()
    assert isinstance(protocol, _Writer)
    protocol.peer = client
    protocol.script = script
    return client, protocol


def _receive(harness: InlineReads, client: socket.socket, size: int) -> bytes:
    """``size`` bytes that reach ``client`` (read as they come, in as few calls as may be)."""
    received = b""

    def arrived() -> bool:
        nonlocal received
        with contextlib.suppress(BlockingIOError):
            while len(received) < size:
                chunk = client.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
        return len(received) >= size

    harness.spin(arrived)
    return received


def _read_until_closed(harness: InlineReads, client: socket.socket) -> bytes:
    """Everything ``client`` receives until the server closes (a reset ends it too)."""
    received = b""
    closed = False

    def ended() -> bool:
        nonlocal received, closed
        harness.reactor.runUntilCurrent()  # calls Twisted put off to the next turn
        with contextlib.suppress(BlockingIOError):
            while True:
                try:
                    chunk = client.recv(1 << 16)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                received += chunk
        return closed

    harness.spin(ended)
    return received


def test_a_write_made_while_a_batch_is_handled_leaves_when_the_batch_ends(
    writing: InlineReads,
) -> None:
    client, protocol = _writer(writing, lambda transport: write_now(transport, b"answer"))
    client.sendall(b"ask")
    assert writing.answer(client, 6) == b"answer"
    assert protocol.seen_during == b""  # held while the protocol was still running


def test_without_the_inline_loop_a_write_leaves_at_once(writing: InlineReads) -> None:
    read_generic(writing.reactor)  # Twisted's own doPoll: nothing holds writes
    client, protocol = _writer(writing, lambda transport: write_now(transport, b"answer"))
    client.sendall(b"ask")
    assert writing.answer(client, 6) == b"answer"
    assert protocol.seen_during == b"answer"


def test_on_an_unchecked_twisted_writes_go_through_twisteds_buffer(
    writing: InlineReads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a Twisted version the direct writes were not checked against, write_now
    leaves the connection's internals alone: the bytes go out through
    transport.write, after the protocol's call, and arrive all the same.
    """
    monkeypatch.setattr(transport, "DIRECT_WRITES", False)
    read_generic(writing.reactor)
    client, protocol = _writer(writing, lambda transport: write_now(transport, b"answer"))
    client.sendall(b"ask")
    assert writing.answer(client, 6) == b"answer"
    assert protocol.seen_during == b""  # not sent straight to the socket


def test_writes_of_one_batch_keep_their_order_through_twisteds_buffer(
    writing: InlineReads,
) -> None:
    def script(transport: Any) -> None:
        write_now(transport, b"one,")
        write_now(transport, b"two,")
        transport.write(b"three,")  # Twisted's path: behind the held bytes
        write_now(transport, b"four")  # and this one behind it

    client, protocol = _writer(writing, script)
    client.sendall(b"go")
    assert writing.answer(client, 18) == b"one,two,three,four"
    assert protocol.seen_during == b""


@pytest.mark.parametrize("ending", ["loseConnection", "loseWriteConnection"])
def test_a_connection_closed_after_a_held_write_sends_it_first(
    writing: InlineReads, ending: str
) -> None:
    """A close, or a half-close, waits for the held bytes as for Twisted's own."""

    def script(transport: Any) -> None:
        write_now(transport, b"last words")
        getattr(transport, ending)()

    client, _ = _writer(writing, script)
    client.sendall(b"bye")
    assert _read_until_closed(writing, client) == b"last words"


def test_an_aborted_connection_sends_nothing_it_held(writing: InlineReads) -> None:
    def script(transport: Any) -> None:
        write_now(transport, b"never")
        transport.abortConnection()

    client, protocol = _writer(writing, script)
    with capture_log_events() as events:
        client.sendall(b"x")
        assert _read_until_closed(writing, client) == b""
    protocol.lost[0].trap(ConnectionAborted)
    assert not [e for e in events if e.get("isError")]


def test_a_write_above_the_limit_leaves_at_once(writing: InlineReads) -> None:
    big = b"x" * (HOLD_LIMIT + 1)
    client, protocol = _writer(writing, lambda transport: write_now(transport, big))
    client.sendall(b"x")
    writing.spin(lambda: bool(protocol.received))
    assert protocol.seen_during  # not held (the kernel took what it could)


def test_bytes_past_the_limit_go_through_twisteds_flow_control(writing: InlineReads) -> None:
    def script(transport: Any) -> None:
        write_now(transport, b"a" * HOLD_LIMIT)
        write_now(transport, b"b" * 10)  # would pass the limit: Twisted buffers it

    client, protocol = _writer(writing, script)
    client.sendall(b"x")
    writing.spin(lambda: bool(protocol.received))
    assert protocol.seen_during == b""
    assert _receive(writing, client, HOLD_LIMIT + 10) == b"a" * HOLD_LIMIT + b"b" * 10


def test_a_write_with_send_flags_is_never_held(writing: InlineReads) -> None:
    client, protocol = _writer(
        writing, lambda transport: write_now(transport, b"now", socket.MSG_DONTWAIT)
    )
    client.sendall(b"x")
    writing.spin(lambda: bool(protocol.received))
    assert protocol.seen_during == b"now"


def test_what_the_kernel_does_not_take_at_the_end_goes_through_twisted(
    writing: InlineReads,
) -> None:
    size = HOLD_LIMIT - 1
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    client, protocol = _writer(writing, lambda transport: write_now(transport, payload))
    transport: Any = protocol.transport
    # Small buffers on both sides: the end-of-batch send cannot take it all.
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(b"x")
    writing.spin(lambda: bool(protocol.received))
    assert transport._tempDataLen or len(transport.dataBuffer) > transport.offset  # left over
    assert _receive(writing, client, size) == payload


def test_a_write_outside_a_batch_leaves_at_once(writing: InlineReads) -> None:
    client, protocol = _writer(writing, lambda transport: None)
    write_now(protocol.transport, b"unprompted")  # e.g. from a timer or a worker's result
    assert _waiting(client) == b"unprompted"


def test_a_batch_is_opened_once_and_closed_by_its_end() -> None:
    assert start_batch()
    assert not start_batch()  # nested: the first caller ends it
    end_batch()
    assert start_batch()
    end_batch()


def test_a_large_batch_sends_what_it_held_every_few_events(
    writing: InlineReads, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "HOLD_EVENTS", 4)
    handled: list[_Writer] = []
    first_client_saw: list[bytes] = []

    def answering(protocol: _Writer) -> Callable[[Any], None]:
        def script(transport: Any) -> None:
            handled.append(protocol)
            write_now(transport, b"A")
            first_client_saw.append(_waiting(cast(socket.socket, handled[0].peer)))

        return script

    clients = []
    for _ in range(10):
        client, protocol = _writer(writing, lambda transport: None)
        protocol.script = answering(protocol)
        clients.append(client)
    for client in clients:
        client.sendall(b"x")  # all ten are readable by the next poll
    writing.spin(lambda: len(handled) == 10)
    # The first four answers left together once the fourth event was handled.
    assert first_client_saw == [b""] * 4 + [b"A"] * 6
    for client in clients:
        assert writing.answer(client, 1) == b"A"


def test_a_call_held_in_a_batch_is_made_when_it_ends(writing: InlineReads) -> None:
    made: list[str] = []
    made_during: list[list[str]] = []

    def script(transport: Any) -> None:
        after_batch(made.append, "handed over")
        made_during.append(list(made))

    client, _ = _writer(writing, script)
    client.sendall(b"x")
    writing.spin(lambda: bool(made))
    assert made_during == [[]]
    assert made == ["handed over"]


def test_a_call_outside_a_batch_is_made_at_once() -> None:
    made: list[int] = []
    after_batch(made.append, 1)
    assert made == [1]


def test_a_failing_held_call_is_logged_and_the_rest_of_the_batch_goes_on(
    writing: InlineReads,
) -> None:
    made: list[str] = []

    def fail() -> None:
        raise RuntimeError("bug in a held call")

    def script(transport: Any) -> None:
        after_batch(fail)
        after_batch(made.append, "next")
        write_now(transport, b"answer")

    client, _ = _writer(writing, script)
    with capture_log_events() as events:
        client.sendall(b"x")
        assert writing.answer(client, 6) == b"answer"
    assert made == ["next"]
    (logged,) = [e for e in events if "log_failure" in e]
    assert logged["log_failure"].check(RuntimeError)


def test_a_write_held_before_the_protocol_fails_still_leaves(writing: InlineReads) -> None:
    """Sent at once, such a response reached the client before the connection was
    dropped; held, it must too (Twisted drops its buffer on the way out).
    """

    def script(transport: Any) -> None:
        write_now(transport, b"answered")
        raise RuntimeError("protocol bug after answering")

    client, protocol = _writer(writing, script)
    with capture_log_events():
        client.sendall(b"x")
        assert _read_until_closed(writing, client) == b"answered"
    protocol.lost[0].trap(RuntimeError)


def test_nothing_is_sent_on_an_aborted_connection(writing: InlineReads) -> None:
    client, protocol = _writer(writing, lambda transport: None)
    transport: Any = protocol.transport
    transport.abortConnection()
    write_now(transport, b"too late")  # outside a batch: would be sent at once
    assert _waiting(client) == b""
    assert _read_until_closed(writing, client) == b""


def test_an_iteration_inside_a_batch_sends_what_it_held(writing: InlineReads) -> None:
    """reactor.iterate() from a callback in a batch, waiting for an answer: what it
    wrote leaves when it returns, not when the outer batch ends.
    """
    client, _ = _writer(writing, lambda transport: write_now(transport, b"inner"))
    assert start_batch()  # the outer batch
    try:
        client.sendall(b"x")
        for _ in range(200):
            writing.reactor.doIteration(0.05)
            if _waiting(client):
                break
        assert _waiting(client) == b"inner"
        assert not start_batch()  # still open for its owner
    finally:
        end_batch()


# -- a response streamed in the reactor thread, over a real socket ----------------------


def test_a_stream_pulled_in_the_reactor_thread_yields_to_other_events_every_turn() -> None:
    """An application streaming in the reactor thread (--threads 0) to a client whose
    socket takes everything is pulled about two hold limits a turn, then paused by
    Twisted's buffer until the next poll, like any other writer: the pieces joined
    in a batch are held with it, so the next write goes through that buffer. Joined
    writes at the limit went straight to the socket: one turn pulled until the
    kernel's send buffer was full, megabytes, while other connections waited.
    """
    piece = b"x" * 8192
    pulled: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        while len(pulled) < 10_000:
            pulled.append(1)
            yield piece

    reactor: Any = EPollReactor()
    assert read_inline(reactor)
    handler = WSGIHandler(validator(app), reactor=reactor, threadpool=None)
    factory = HTTPFactory(handler, settings=HttpSettings(), clock=reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        turns: list[int] = []
        while len(turns) < 40 and sum(turns) < 200:
            before = len(pulled)
            reactor.doIteration(0.05)
            turns.append(len(pulled) - before)
        assert sum(turns) >= 20  # (the kernel took a few turns' worth, unread)
        assert max(turns) * len(piece) <= 3 * HOLD_LIMIT
    finally:
        client.close()
        reactor.disconnectAll()
        reactor.waker.connectionLost(None)
        reactor._poller.close()
