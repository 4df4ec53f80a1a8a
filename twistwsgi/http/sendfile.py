"""Sending an open file as a response body from the reactor, zero-copy where possible.

On a plain TCP or UNIX-socket transport the bytes go from the page cache to the socket
with ``os.sendfile``: no copy through Python, no thread held. Twisted has no sendfile
support of its own (twisted/twisted#11395), so this works beside the transport: the
sender registers as the transport's *pull* producer, waits until the transport's own
buffer is empty (the head and anything before it must go first), then calls
``sendfile`` on the socket until the kernel's buffer is full, and asks the transport
to tell it when the socket is writable again (``startWriting``: the transport's
``doWrite`` finds its buffer empty and calls ``resumeProducing`` on its pull
producer). The head goes first, with ``MSG_MORE`` on TCP so the kernel sends it
together with the file's first bytes. On TLS, or with a file that has no descriptor,
the file is read in pieces and written through the transport, one piece per
``resumeProducing``, so memory stays at one piece whatever the file's size.

With a :class:`Pacing` (the mount's ``limit_rate``, see
:mod:`twistwsgi.http.pacing`), each step sends no more than the rate allows by then;
when it allows less than a step, the sender waits on a timer for the rest, not on
the socket, off the transport meanwhile (over TLS, Twisted drives a pull producer in
a loop that would spin on one with nothing to send), then registers again and goes
on as the transport asks. Bytes already in memory go at the rate too
(:func:`finish_paced`: a cached file, a gzip form, an application's one-piece body).

Runs in the reactor thread. Disk reads (and ``sendfile``'s page-cache misses) block
the reactor briefly, as they do in nginx without ``aio``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import IO, Any, NamedTuple

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IPushProducer, IReactorTime
from zope.interface import implementer

from twistwsgi.http.exchange import Exchange
from twistwsgi.http.pacing import ResponsePace, step_for
from twistwsgi.http.transport import DIRECT_WRITES, write_now

__all__ = [
    "CLIENT_GONE",
    "READ_CHUNK",
    "SENDFILE_CHUNK",
    "FileTruncatedError",
    "Pacing",
    "finish_paced",
    "send_file",
]


class Pacing(NamedTuple):
    """The limit_rate a file is sent at: its response's pace, its bytes, a clock."""

    pace: ResponsePace
    sent: Callable[[], int]  # the response's body bytes sent so far
    clock: IReactorTime


#: Most bytes one ``sendfile`` call may send, so one large file cannot keep the reactor
#: from serving other connections.
SENDFILE_CHUNK = 4 * 1024 * 1024
#: How a file sending fails when the client goes away: ordinary, unlike a failure
#: of the file or the disk (the access log shows the bytes the client got).
CLIENT_GONE = (ConnectionLost, BrokenPipeError, ConnectionResetError)

#: Bytes read per step when the file cannot be sent with ``sendfile``.
READ_CHUNK = 64 * 1024


class FileTruncatedError(OSError):
    """The file ended before the bytes the response promised (cut short meanwhile).

    Attributes:
        offset: where it ended.
    """

    def __init__(self, offset: int, remaining: int) -> None:
        super().__init__(f"File ended {remaining} bytes early, at {offset}")
        self.offset = offset


#: Socket families where ``MSG_MORE`` holds data back for the next send (TCP).
_TCP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})


def _file_descriptor(file: IO[bytes]) -> int | None:
    try:
        return file.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def send_file(
    transport: Any,
    file: IO[bytes],
    *,
    offset: int,
    count: int,
    streaming_producer: IPushProducer,
    on_progress: Callable[[int], None],
    head: bytes = b"",
    pacing: Pacing | None = None,
) -> Deferred[None]:
    """Send ``head``, then ``count`` bytes of ``file`` from ``offset``, through ``transport``.

    Args:
        transport: the connection's transport.
        file: an open binary file; it is not closed here.
        offset: where to start in the file.
        count: how many bytes to send.
        streaming_producer: the producer registered on the transport now (the
            protocol); it is unregistered while the file goes out and registered again
            afterwards.
        on_progress: called with the number of bytes after each step that sent some
            (the send timeout, and the count of body bytes sent).
        head: bytes that go before the file (the response head), if any.
        pacing: the response's limit_rate, if it has one.

    Returns:
        A Deferred that fires when every byte is handed to the transport or kernel,
        and fails with ``ConnectionLost`` if the client goes away or with ``OSError``
        if the file is shorter than ``count`` or cannot be read. Cancelling it stops
        the sending (a response cut short).
    """
    descriptor = _file_descriptor(file)
    sender: _FileSender
    if descriptor is not None and DIRECT_WRITES and isinstance(transport, tcp.Connection):
        sender = _ZeroCopySender(transport, descriptor, offset, count, on_progress)
        if head:
            # nginx's tcp_nopush: the kernel holds the head until the file's bytes
            # join it, so they leave in full segments. A lone small segment before
            # every file halved what a client (wrk) could receive over loopback.
            more = socket.MSG_MORE if transport.socket.family in _TCP_FAMILIES else 0
            write_now(transport, head, more)
    else:
        sender = _CopyingSender(transport, file, offset, count, on_progress)
        if head:
            write_now(transport, head)
    sender.pacing = pacing
    transport.unregisterProducer()
    sender.restore = lambda: _reregister(transport, streaming_producer)
    transport.registerProducer(sender, False)
    return sender.done


def _reregister(transport: Any, producer: IPushProducer) -> None:
    if not getattr(transport, "disconnected", False) and not getattr(
        transport, "disconnecting", False
    ):
        transport.registerProducer(producer, True)
        # The transport may have paused the protocol before the file took its place
        # (a large response ahead of it in a pipeline); the resume that followed went
        # to the file sender. Without this the protocol stayed paused, and the next
        # pipelined request was never answered.
        full = getattr(transport, "_isSendBufferFull", None)
        if full is None or not full():
            producer.resumeProducing()


@implementer(IPullProducer)
class _FileSender:
    """Common state of the two senders: progress, completion and failure."""

    def __init__(
        self, transport: Any, offset: int, count: int, on_progress: Callable[[int], None]
    ) -> None:
        self.transport = transport
        self.offset = offset
        self.remaining = count
        self.on_progress = on_progress
        self.done: Deferred[None] = Deferred(self._cancelled)
        self.restore: Callable[[], None] = lambda: None
        self.over = False
        self.pacing: Pacing | None = None
        self._waiting: IDelayedCall | None = None  # the pace's timer, while it runs

    def _step(self, chunk: int) -> int:
        """Bytes the next step sends: up to ``chunk``, within the pace; 0: wait.

        With nothing allowed yet, the pace's timer is set and the sender leaves the
        transport until it fires (see the module docstring).
        """
        size = min(self.remaining, chunk)
        pacing = self.pacing
        if pacing is None:
            return size
        sent, now = pacing.sent(), pacing.clock.seconds()
        wait = pacing.pace.wait(sent, now, size)
        if wait:
            self._waiting = pacing.clock.callLater(wait, self._paced)
            self.transport.unregisterProducer()
            return 0
        return min(size, max(1, int(pacing.pace.allowance(sent, now))))

    def _paced(self) -> None:
        """The pace allows a step: take the transport back (it asks for the step).

        A transport whose connection was lost meanwhile stops the sender at once.
        """
        self._waiting = None
        if not self.over:
            self.transport.registerProducer(self, False)

    def _stop_waiting(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and waiting.active():
            waiting.cancel()

    def _cancelled(self, done: Deferred[None]) -> None:
        """The response was cut short: stop, and leave the transport to its close.

        ``done`` then fails with ``CancelledError``, so the caller closes its file
        (and a WSGI result gets its ``close()``).
        """
        if not self.over:
            self.over = True
            self._stop_waiting()
            if getattr(self.transport, "producer", self) is self:
                self.transport.unregisterProducer()

    def resumeProducing(self) -> None:
        """Send the next piece (called by the transport when it wants data)."""
        raise NotImplementedError

    def stopProducing(self) -> None:
        """The connection is gone."""
        if not self.over:
            self.over = True
            self._stop_waiting()
            self.done.errback(ConnectionLost("The client went away during a file response"))

    def complete(self) -> None:
        """Every byte is out: give the transport back to the protocol."""
        self.over = True
        self.transport.unregisterProducer()
        self.restore()
        self.done.callback(None)

    def fail(self, error: Exception) -> None:
        """The file could not be sent; the caller aborts the response."""
        self.over = True
        self._stop_waiting()
        self.transport.unregisterProducer()
        self.done.errback(error)


class _ZeroCopySender(_FileSender):
    """``os.sendfile`` straight to the socket of a TCP or UNIX transport."""

    def __init__(
        self,
        transport: tcp.Connection,
        descriptor: int,
        offset: int,
        count: int,
        on_progress: Callable[[int], None],
    ) -> None:
        super().__init__(transport, offset, count, on_progress)
        self._descriptor = descriptor
        self._socket = transport.fileno()

    def resumeProducing(self) -> None:
        """Send what the kernel takes now; ask to be called when it takes more."""
        if self.over:
            return
        transport = self.transport
        # Bytes the transport still buffers (the head) must reach the socket first.
        if len(transport.dataBuffer) - transport.offset or transport._tempDataLen:
            transport.startWriting()
            return
        size = self._step(SENDFILE_CHUNK)
        if not size:
            return  # (the pace's timer calls again)
        try:
            sent = os.sendfile(self._socket, self._descriptor, self.offset, size)
        except BlockingIOError:
            sent = -1
        except OSError as error:
            self.fail(error)
            return
        if sent == 0:
            self.fail(FileTruncatedError(self.offset, self.remaining))
            return
        if sent > 0:
            self.offset += sent
            self.remaining -= sent
            self.on_progress(sent)
        if self.remaining == 0:
            self.complete()
        else:
            transport.startWriting()


class _CopyingSender(_FileSender):
    """Reads the file in pieces and writes them through the transport (TLS)."""

    def __init__(
        self,
        transport: Any,
        file: IO[bytes],
        offset: int,
        count: int,
        on_progress: Callable[[int], None],
    ) -> None:
        super().__init__(transport, offset, count, on_progress)
        self._file = file
        self._descriptor = _file_descriptor(file)

    def resumeProducing(self) -> None:
        """Write the next piece of the file."""
        if self.over:
            return
        size = self._step(READ_CHUNK)
        if not size:
            return  # (the pace's timer calls again)
        try:
            if self._descriptor is not None:
                data = os.pread(self._descriptor, size, self.offset)
            else:
                self._file.seek(self.offset)
                data = self._file.read(size)
        except OSError as error:
            self.fail(error)
            return
        if not data:
            self.fail(FileTruncatedError(self.offset, self.remaining))
            return
        self.offset += len(data)
        self.remaining -= len(data)
        self.transport.write(data)
        self.on_progress(len(data))
        if self.remaining == 0:
            self.complete()


def finish_paced(exchange: Exchange, data: bytes) -> None:
    """End the response with ``data``: at once, or in steps of its limit_rate.

    Bytes held in memory (a small file, the gzip form, an application's one-piece
    body) would otherwise go out in one write, past the rate.
    """
    limit = exchange.limit_rate
    if limit is None or len(data) <= step_for(limit[0]):
        exchange.finish(data)
        return
    _PacedBytes(exchange, data, step_for(limit[0])).resumeProducing()


@implementer(IPushProducer)
class _PacedBytes:
    """Writes bytes in pieces while the exchange lets it (see :func:`finish_paced`)."""

    def __init__(self, exchange: Exchange, data: bytes, piece: int) -> None:
        self._exchange = exchange
        self._data = memoryview(data)
        self._piece = piece
        self._offset = 0
        self._paused = False
        exchange.registerProducer(self, True)

    def pauseProducing(self) -> None:
        """The rate (or the client) holds the response."""
        self._paused = True

    def resumeProducing(self) -> None:
        """Write pieces until held again, and end the response with the last."""
        self._paused = False
        exchange = self._exchange
        while not self._paused and not exchange.finished:
            start = self._offset
            self._offset = end = start + self._piece
            piece = bytes(self._data[start:end])
            if end >= len(self._data):
                exchange.unregisterProducer()
                exchange.finish(piece)
                return
            exchange.write(piece)

    def stopProducing(self) -> None:
        """The client is gone: the exchange is over."""
        self._paused = True
