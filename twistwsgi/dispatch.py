"""Process-wide tuning of how Twisted's reactor hands socket events to protocols.

For every readable or writable socket, Twisted's poll-based reactors (epoll, poll,
select) call ``twisted.python.log.callWithLogger``, which asks the connection for
its log prefix and pushes a log context holding it before calling the handler. Only
*legacy* log calls made inside the handler read that context (``log.msg`` and
``log.err``, which prefix their lines with it, e.g. ``[HTTP11Protocol,3,127.0.0.1]``);
events from ``twisted.logger.Logger``, which twistwsgi uses throughout, do not.

The push costs more than its use here: measured on loopback with ``wrk -t1 -c50``,
runs alternating with and without it (two series, machine load differing),
dispatching without it served 9-14% more hello-world requests with
``--threads 0``, 15-18% more proxied requests and 13-38% more 10 KB static files.
:func:`skip_log_context` replaces the function with one that calls the handler
directly. Errors are still caught and logged, with the connection's prefix, as
before; what is lost is the prefix on legacy log lines that Twisted itself writes
while handling an event (they say ``[-]``).

For an epoll reactor, :func:`read_inline` goes one step further for the commonest
event, a TCP connection that is readable: its poll loop receives the bytes
and hands them to the protocol itself, as Twisted's ``_doReadOrWrite``, ``doRead``
and ``_dataReceived`` would (end of stream, a socket error or an exception in the
protocol disconnect that connection, the exception logged with its prefix). Those
three calls per read are most of what the reactor adds to a small request. Measured
the same way, in alternating runs against the previous commit: hello world with
``--threads 0`` +11-17%, the proxy +4% (reads from the client and the upstream),
10 KB static files about +1%. Every other event (writable, hang-up, the waker, a
listening port, a class that reads its own way) takes Twisted's own path. While it
hands one batch of events out, small responses written with
:func:`twistwsgi.http.transport.write_now` are held and sent when the batch is
handled (why, and what that gained, is told there).

The command line (:mod:`twistwsgi.cli`) installs both, since the process is ours.
Library users decide for their own process: nothing here runs on import.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

from twisted.internet import main, tcp
from twisted.python import log

from twistwsgi.http.transport import (
    end_batch,
    send_held_now,
    start_batch,
    twisted_checked,
)

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll (not Linux): read_inline applies to nothing
    EPollReactor = None  # type: ignore[assignment,misc]


__all__ = [
    "log_context_skipped",
    "read_generic",
    "read_inline",
    "reads_inline",
    "restore_log_context",
    "skip_log_context",
    "twisted_checked",
]

# Twisted's own callWithLogger while ours is installed (at most one entry).
_saved: list[Callable[..., Any]] = []


def _log_prefix(logger: Any) -> str:
    """The connection's log prefix, as Twisted's callWithLogger asks for it."""
    try:
        return str(logger.logPrefix())
    except Exception:
        return "(buggy logPrefix method)"


def _call_without_log_context(logger: Any, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Call ``func``; log what it raises as Twisted's version does, prefix included."""
    try:
        return func(*args, **kw)
    except KeyboardInterrupt:
        raise
    except BaseException:
        log.err(system=_log_prefix(logger))
        return None


def skip_log_context() -> None:
    """Dispatch reactor events without the per-event log context (idempotent)."""
    if not _saved:
        _saved.append(log.callWithLogger)
        log.callWithLogger = _call_without_log_context


def restore_log_context() -> None:
    """Put Twisted's own ``callWithLogger`` back."""
    if _saved:
        log.callWithLogger = _saved.pop()


def log_context_skipped() -> bool:
    """Whether :func:`skip_log_context` is in effect."""
    return log.callWithLogger is _call_without_log_context


# -- reads without the generic per-event path ----------------------------------------------

# Per selectable class: whether its reads are Twisted's plain TCP socket reads, which
# the fast path below repeats inline. A class that reads its own way (UNIX sockets with
# descriptor passing, pipes, the waker) keeps the generic path.
_plain_socket_reads: dict[type, bool] = {}


def _reads_plain_socket(kind: type) -> bool:
    known = _plain_socket_reads.get(kind)
    if known is None:
        known = _plain_socket_reads[kind] = (
            getattr(kind, "doRead", None) is tcp.Connection.doRead
            and getattr(kind, "_dataReceived", None) is tcp.Connection._dataReceived
        )
    return known


#: The most events handled while writes are held: past it, the writes held so far are
#: sent before the next events are handled. A response then waits for at most this
#: many other requests' handling, however many connections one poll reports ready.
HOLD_EVENTS = 64


def _poll_with_inline_reads(reactor: Any, timeout: float | None) -> None:
    """One iteration of ``EPollReactor.doPoll``, reading plain sockets inline.

    For an event that is only "readable" on a TCP connection, this does what
    ``_doReadOrWrite`` → ``doRead`` → ``_dataReceived`` do (receive, hand the bytes to
    the protocol, disconnect on end of stream, error or exception) in one frame.
    Every other event goes through Twisted's own path. Writes held while the batch
    is handled are sent at its end, whatever happens, and after every
    :data:`HOLD_EVENTS` events of a larger batch.
    """
    if timeout is None:
        timeout = -1
    try:
        events = reactor._poller.poll(timeout, len(reactor._selectables))
    except InterruptedError:
        return
    if not start_batch():
        # An iteration run from inside a batch (reactor.iterate() in a callback):
        # what it held is sent before it returns, since its caller may be waiting
        # for the answers; the outer batch then goes on holding.
        try:
            _handle_events(reactor, events)
        finally:
            end_batch()
            start_batch()
        return
    try:
        if len(events) <= HOLD_EVENTS:
            _handle_events(reactor, events)
        else:
            for start in range(0, len(events), HOLD_EVENTS):
                if start:
                    end_batch()
                    start_batch()
                _handle_events(reactor, events[start : start + HOLD_EVENTS])
    finally:
        end_batch()


def _handle_events(reactor: Any, events: list[tuple[int, int]]) -> None:
    """Hand one batch of poll events to their selectables (see above)."""
    selectables = reactor._selectables
    generic = reactor._doReadOrWrite
    readable = reactor._POLL_IN
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        if (
            event != readable
            or not _reads_plain_socket(type(selectable))
            # abortConnection (and a client still connecting) replace doRead on the
            # instance, to read nothing more: that one is Twisted's to call.
            or "doRead" in selectable.__dict__
        ):
            log.callWithLogger(selectable, generic, selectable, fd, event)
            continue
        why: Any
        # Whether the reading side ended (end of stream, a failed receive): a
        # half-closeable protocol may go on writing. An exception does not count,
        # as _doReadOrWrite sets inRead only once doRead has returned.
        in_read = True
        try:
            data = selectable.socket.recv(selectable.bufferSize)
        except BlockingIOError:
            continue
        except OSError:
            why = main.CONNECTION_LOST
        except BaseException as error:
            why, in_read = error, False
            log.err(system=_log_prefix(selectable))
        else:
            if not data:
                why = main.CONNECTION_DONE
            else:
                try:
                    selectable.protocol.dataReceived(data)
                    continue
                except BaseException as error:
                    # As _doReadOrWrite: log it, then drop only this connection.
                    why, in_read = error, False
                    log.err(system=_log_prefix(selectable))
        try:
            send_held_now(selectable)
            reactor._disconnectSelectable(selectable, why, in_read)
        except BaseException:
            log.err(system=_log_prefix(selectable))


def read_inline(reactor: Any) -> bool:
    """Make an epoll reactor read plain sockets without the generic event path.

    Measured gain and what stays the same: see the module docstring. Returns whether it
    applies: only to Twisted's own ``EPollReactor`` (not a subclass that changes how
    it polls), under a Twisted version that
    :data:`~twistwsgi.http.transport.CHECKED_TWISTED_MAJORS` names; other reactors
    are left alone.
    """
    if reads_inline(reactor):
        return True
    if (
        EPollReactor is None
        or not twisted_checked()
        or not isinstance(reactor, EPollReactor)
        or type(reactor).doIteration is not EPollReactor.doPoll
        or "doIteration" in vars(reactor)
    ):
        return False
    # The instance attribute shadows the class's doIteration (= doPoll), which
    # mainLoop calls once per iteration.
    reactor.doIteration = MethodType(_poll_with_inline_reads, reactor)  # type: ignore[method-assign]
    return True


def reads_inline(reactor: Any) -> bool:
    """Whether :func:`read_inline` is in effect for ``reactor``."""
    method = getattr(reactor, "__dict__", {}).get("doIteration")
    return getattr(method, "__func__", None) is _poll_with_inline_reads


def read_generic(reactor: Any) -> None:
    """Undo :func:`read_inline`."""
    if reads_inline(reactor):
        del reactor.doIteration
