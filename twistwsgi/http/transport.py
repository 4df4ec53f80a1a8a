"""Shortcuts around Twisted's transports, for the per-request hot path.

* :func:`write_now` sends response bytes on a plain TCP or UNIX socket without
  waiting for the reactor to report the socket writable. Twisted's ``write`` only
  buffers and registers the socket for writability, so every response would
  otherwise cost two ``epoll_ctl`` calls and a trip round the event loop before its
  bytes leave. Whatever the kernel does not take at once is handed to
  ``transport.write`` as usual, so ordering, producers and connection loss work
  exactly as before.
* While the poll loop hands one batch of socket events to protocols (see
  :func:`twistwsgi.dispatch.read_inline`), a batch is open (:func:`start_batch`):
  :func:`write_now` holds small writes in the transport's own buffer, and
  :func:`end_batch` sends them once the batch is handled. When the server is the busy
  side, sending each response the moment it is ready wakes the sleeping client for
  every one; the client answers and sleeps again before the next. Sent together,
  they cost one wakeup for the batch. Measured on loopback with ``wrk -t1 -c50``,
  alternating 4 s runs against sending at once: hello world with ``--threads 0``
  +51% (24.3k to 36.7k requests/s; the server's system time fell from 11.7 to 5 µs
  per request), 10 KB static files +21%, the proxy +34%. With one client a batch is
  one event, so nothing waits. Responses written from worker results
  (:class:`ReactorInbox`) are not held: holding them too measured 8% slower.
* The same way, :func:`after_batch` holds the hand-over of a request to a worker
  thread until the batch ends. A worker woken in the middle of a batch takes the GIL
  whenever the reactor makes a system call, and the reactor waits to take it back:
  with the threadpool, hello world had 0.9 context switches per request. Held, 0.15,
  and +19-23% requests/s (20.1k to 24.8k) in alternating runs.
* :func:`send_before_abort` offers what a handler wrote to the socket before an
  abort, which drops Twisted's buffers: the socket's (held writes included), and
  over TLS the writes Twisted's TLS transport aggregates.
* :class:`ReactorInbox` runs calls from worker threads in the reactor with one wakeup
  per batch. ``reactor.callFromThread`` writes a byte to the waker pipe for every
  call; under load most of those wakeups are redundant.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol

import twisted

#: Twisted's major versions whose internals the direct paths here and in
#: :mod:`twistwsgi.dispatch` were checked against, line by line (last with 26.10):
#: ``tcp.Connection``'s write buffer (``dataBuffer``, ``offset``,
#: ``_tempDataBuffer``, ``_tempDataLen``, ``_aborting``) and the epoll read path.
#: Under another version they step aside: writes go through ``transport.write``,
#: files through reads, reads through Twisted's own path. A renamed attribute would
#: otherwise break every response.
CHECKED_TWISTED_MAJORS = range(24, 27)


def twisted_checked() -> bool:
    """Whether the running Twisted is one :data:`CHECKED_TWISTED_MAJORS` names."""
    major = twisted.__version__.split(".", 1)[0]
    return major.isdigit() and int(major) in CHECKED_TWISTED_MAJORS


#: Whether writes may go to the socket directly (see :data:`CHECKED_TWISTED_MAJORS`).
DIRECT_WRITES = twisted_checked()

__all__ = [
    "ReactorInbox",
    "after_batch",
    "batch_open",
    "end_batch",
    "send_before_abort",
    "send_held_now",
    "start_batch",
    "write_now",
]

_log = Logger(namespace="twistwsgi.http")

#: The most bytes held for one transport in one batch: Twisted's own buffer size
#: (``FileDescriptor.bufferSize``), below which a write never pauses a producer. A
#: larger write, or one after it, goes through ``transport.write`` and its flow control.
HOLD_LIMIT = 65536


class _Batch:
    """What one batch of events holds back (reactor thread only).

    ``open`` says whether a batch is being handled; ``sizes`` maps each transport
    holding writes to how many bytes of its (otherwise empty) buffer were held;
    ``calls`` are the calls to make when the batch ends.
    """

    __slots__ = ("calls", "open", "sizes")

    def __init__(self) -> None:
        self.open = False
        self.sizes: dict[Any, int] = {}
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []


_batch = _Batch()


def start_batch() -> bool:
    """Hold small writes and :func:`after_batch` calls until :func:`end_batch`.

    Returns False (and changes nothing) when a batch is already open: the caller
    that opened it ends it.
    """
    if _batch.open:
        return False
    _batch.open = True
    return True


def batch_open() -> bool:
    """Whether a batch of events is being handled: small writes wait for its end."""
    return _batch.open


def after_batch(func: Callable[..., object], *args: Any) -> None:
    """Call ``func(*args)`` when the open batch ends, or now if none is open.

    For handing a request to a worker thread: a worker woken in the middle of a
    batch competes for the GIL with the reactor still handling it, at every
    system call the reactor makes. Reactor thread only.
    """
    if _batch.open:
        _batch.calls.append((func, args))
    else:
        func(*args)


def end_batch() -> None:
    """Make the held calls, send every held write, and close the batch."""
    _batch.open = False
    calls = _batch.calls
    if calls:
        # Workers first: they run while the reactor sends (send releases the GIL).
        held_calls = calls[:]
        calls.clear()
        for func, args in held_calls:
            try:
                func(*args)
            except Exception:
                _log.failure("Error in a call held until the end of a batch of events")
    sizes = _batch.sizes
    if not sizes:
        return
    held = list(sizes.items())
    sizes.clear()
    for transport, size in held:
        try:
            _send_held(transport, size)
        except Exception:
            _log.failure("Could not send a held write")


def send_held_now(transport: Any) -> None:
    """Send what the open batch holds for ``transport`` now, before it is disconnected.

    Twisted drops what a transport buffers when it loses the connection at once
    (an exception in the protocol does that); a held write was a response already
    given, as it would have been without the batch.
    """
    size = _batch.sizes.pop(transport, None)
    if size is not None:
        _send_held(transport, size)


def send_before_abort(transport: Any) -> None:
    """Send what was written to ``transport`` that the kernel takes now, before an abort.

    ``abortConnection`` drops what Twisted buffers in the socket's transport (the
    writes a batch holds among them) and, over TLS, the writes waiting to be
    encrypted. What a handler wrote before it failed was given to the client (it
    leaves at once whenever the buffer is empty), so it is offered to the socket
    first, without waiting for it: what the kernel does not take at once goes with
    the connection.
    """
    _batch.sizes.pop(transport, None)  # held writes are part of the buffer sent below
    below: Any = transport
    if isinstance(transport, TLSMemoryBIOProtocol):
        # Twisted's BufferingTLSTransport keeps small writes to encrypt them together
        # at the end of the reactor iteration; encrypted now, they join the socket's
        # buffer.
        flush = getattr(getattr(transport, "_aggregator", None), "flush", None)
        if flush is not None:
            flush()
        below = transport.transport
    if (
        not DIRECT_WRITES
        or not isinstance(below, tcp.Connection)
        or not below.connected
        or below._aborting
        or (not below._tempDataLen and below.offset == len(below.dataBuffer))
    ):
        return
    data = bytes(below.dataBuffer[below.offset :]) + b"".join(below._tempDataBuffer)
    try:
        sent = below.socket.send(data)
    except OSError:
        sent = 0  # full, or broken: nothing more can go
    # Twisted's own bookkeeping stays true: what was not sent is still buffered.
    below.dataBuffer = data[sent:]
    below.offset = 0
    below._tempDataBuffer = []
    below._tempDataLen = 0


def _send_held(transport: tcp.Connection, size: int) -> None:
    if (
        not transport.connected
        or transport._aborting  # Twisted drops what it buffered
        or transport._tempDataLen != size
        or transport.offset != len(transport.dataBuffer)
    ):
        # Gone, or written to since through transport.write (or sent by a writable
        # event of the same batch): the reactor sends the buffer, in order.
        return
    chunks = transport._tempDataBuffer
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    try:
        sent = transport.socket.send(data)
    except OSError:
        # Full, or broken: Twisted's write path reports the broken connection.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])


def _hold(transport: tcp.Connection, data: bytes) -> bool:
    """Append ``data`` to the transport's buffer without asking to be sent."""
    sizes = _batch.sizes
    held = sizes.get(transport, 0)
    if (
        transport.connected
        and not transport.disconnecting
        and not transport._aborting
        and transport.offset == len(transport.dataBuffer)
        # Nothing buffered but what this batch held: the bytes keep their order.
        and transport._tempDataLen == held
        and held + len(data) <= HOLD_LIMIT
    ):
        transport._tempDataBuffer.append(data)
        transport._tempDataLen = sizes[transport] = held + len(data)
        return True
    return False


def unsent_bytes(transport: Any) -> int | None:
    """Bytes written to ``transport`` that the kernel has not taken yet (None: unknown).

    What a TCP or UNIX transport still buffers (Twisted's ``dataBuffer`` from
    ``offset``, plus writes not yet joined to it); over TLS, the buffer of the
    connection below, where the encrypted bytes wait. A count that went down
    means the client read some of it.
    """
    lower = getattr(transport, "transport", None)
    connection = lower if lower is not None else transport
    try:
        return len(connection.dataBuffer) - connection.offset + connection._tempDataLen  # type: ignore[no-any-return]
    except (AttributeError, TypeError):
        return None


def took_some(transport: Any, unsent_before: int | None) -> bool:
    """Whether the peer took bytes since :func:`unsent_bytes` was ``unsent_before``.

    The send timeouts (the server's ``send_timeout``, the proxy's ``idle_timeout``
    towards an upstream) count this as progress, as nginx's ``send_timeout`` is the
    time between two successful writes: Twisted resumes a paused producer only once
    its buffer is empty, which a peer reading steadily but slowly may take longer
    than the timeout to reach.
    """
    now = unsent_bytes(transport)
    return unsent_before is not None and now is not None and now < unsent_before


def write_now(transport: Any, data: bytes, flags: int = 0) -> None:
    """Write ``data``, sending it straight to the socket when nothing is queued.

    While a batch is open (:func:`start_batch`) a small write waits in the
    transport's buffer for the end of the batch instead. ``flags`` go to ``send``
    (``MSG_MORE`` for a head a file will follow; such a write is never held).
    Reactor thread only.
    """
    if not data:
        return
    if DIRECT_WRITES and isinstance(transport, tcp.Connection):
        if _batch.open and not flags and _hold(transport, data):
            return
        if (
            transport.connected
            and not transport.disconnecting
            and not transport._aborting
            and transport.offset == len(transport.dataBuffer)
            and not transport._tempDataLen
        ):
            try:
                sent = transport.socket.send(data, flags)
            except BlockingIOError:
                sent = 0
            except OSError:
                # Let Twisted see (and report) the broken connection its own way.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


class ReactorInbox:
    """Runs callables from any thread in the reactor thread, in order, batched.

    Args:
        reactor: used for one ``callFromThread`` per batch.
    """

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def call(self, func: Callable[..., object], *args: Any) -> None:
        """Run ``func(*args)`` in the reactor thread soon (any thread)."""
        self._calls.append((func, args))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        """Run every queued call (reactor thread)."""
        # Reset before draining: a call queued after this point either is run by
        # the loop below or schedules a new drain.
        with self._lock:
            self._scheduled = False
        calls = self._calls
        while calls:
            func, args = calls.popleft()
            try:
                func(*args)
            except Exception:
                _log.failure("Error in a call handed to the reactor by a worker thread")
