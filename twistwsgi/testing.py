"""Test support: in-memory connections, synchronous thread doubles, an h11 response oracle.

For tests of twistwsgi itself and of applications served by it. Nothing in the server
imports this module. ``h11`` (imported lazily) is the independent HTTP/1.1 parser the
responses are checked with, so a test never string-matches framing or ``Date``.
"""

from __future__ import annotations

import functools
import queue
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IPullProducer, IReactorFromThreads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from twistwsgi.http.exchange import Handler
from twistwsgi.http.protocol import HTTP11Protocol, HTTPFactory, ResponseLog
from twistwsgi.http.request import RequestHead
from twistwsgi.http.settings import HttpSettings
from twistwsgi.threads import WorkerPool

__all__ = [
    "CallQueue",
    "Connection",
    "ParsedResponse",
    "PullingTransport",
    "QueueingPool",
    "RefusingPool",
    "SynchronousReactorThreads",
    "SynchronousThreadPool",
    "TrackingPool",
    "capture_log_events",
    "connect",
    "parse_responses",
    "worker_waits_for_the_client",
]


def worker_waits_for_the_client(pool_name: str) -> bool:
    """Whether a thread of the pool named ``pool_name`` waits in the WSGI bridge.

    That is, blocked in ``_send`` for its client, the reactor or the spool's room.
    Only the two innermost frames of the pool's threads are looked at, the second
    only when the first is ``Condition.wait``, that is when the thread is blocked:
    walking the whole stack of a thread that runs on meanwhile (the reactor's)
    crashed CPython 3.11 once in the suite.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate() if thread.ident}
    for ident, top in sys._current_frames().items():
        if not names.get(ident, "").startswith(pool_name) or top.f_code.co_name != "wait":
            continue
        caller = top.f_back
        if caller is not None and caller.f_code.co_name == "_send":
            return True
    return False


class SynchronousThreadPool:
    """A thread pool that runs each call at once, in the calling thread.

    For requests with at most 64 KiB of body: with more, the application runs while
    the body arrives and would wait for it in this same thread (use
    :class:`TrackingPool` and :class:`CallQueue` for uploads).
    """

    def callInThread(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run ``func`` now."""
        func(*args, **kwargs)


class QueueingPool:
    """A thread pool that keeps each call until the test runs it (all threads busy).

    Attributes:
        calls: the calls not yet run, in order.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []

    def callInThread(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Keep ``func`` for later."""
        self.calls.append(lambda: func(*args, **kwargs))

    def run_all(self) -> None:
        """Run the calls kept so far, in this thread."""
        calls, self.calls = self.calls, []
        for call in calls:
            call()


class RefusingPool:
    """A thread pool that takes no work (an executor after shutdown)."""

    def callInThread(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Refuse ``func``."""
        raise RuntimeError("cannot schedule new futures after shutdown")


@implementer(IReactorFromThreads)
class SynchronousReactorThreads(Clock):
    """``IReactorFromThreads`` that runs each call at once, in the calling thread.

    It is a ``Clock`` too (``IReactorTime``), for the handlers that read the time.
    """

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        """Run ``callable`` now."""
        callable(*args, **kwargs)


@implementer(IReactorFromThreads)
class CallQueue:
    """``IReactorFromThreads`` whose calls wait until the test thread runs them.

    With real worker threads, this lets a test play the reactor: it runs the calls
    the workers hand over, in order, at points it chooses.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        """Queue ``callable`` (any thread)."""
        self._queue.put((functools.partial(callable, **kwargs) if kwargs else callable, args))

    def run_pending(self) -> int:
        """Run every call queued now; return how many ran."""
        count = 0
        while True:
            try:
                func, args = self._queue.get_nowait()
            except queue.Empty:
                return count
            func(*args)
            count += 1

    def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run calls as they arrive until ``done()`` is true.

        The condition is checked after every call and at least every 10 ms. The
        timeout only turns a hang into a test failure; a working test never waits
        for it.
        """
        deadline = time.monotonic() + timeout
        while not done():
            try:
                func, args = self._queue.get(timeout=0.01)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError("Timed out waiting for the worker threads") from None
                continue
            func(*args)
        self.run_pending()


class TrackingPool(WorkerPool):
    """A :class:`~twistwsgi.threads.WorkerPool` that counts calls not yet finished."""

    def __init__(self, size: int = 2) -> None:
        super().__init__(size, name="twistwsgi-test-worker")
        self._lock = threading.Lock()
        self._outstanding = 0

    def callInThread(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Queue ``func`` and count it until it returns."""
        with self._lock:
            self._outstanding += 1

        def tracked() -> None:
            try:
                func(*args, **kwargs)
            finally:
                with self._lock:
                    self._outstanding -= 1

        super().callInThread(tracked)

    @property
    def idle(self) -> bool:
        """Whether every queued call has returned."""
        with self._lock:
            return self._outstanding == 0


class PullingTransport(StringTransport):
    """A ``StringTransport`` that drives a registered pull producer to completion.

    A real transport calls a pull producer whenever its buffer empties; this one
    calls it until it unregisters (used for file responses).
    """

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register ``producer``; pull from it until it unregisters itself."""
        super().registerProducer(producer, streaming)
        if streaming:
            return
        pull = cast(IPullProducer, producer)
        while self.producer is producer and not self.disconnecting:
            pull.resumeProducing()


@dataclass
class Connection:
    """A protocol wired to a ``StringTransport``.

    Attributes:
        protocol: the server side.
        transport: what the server wrote (``transport.value()``).
        factory: the factory the protocol came from.
        clock: the factory's clock.
    """

    protocol: HTTP11Protocol
    transport: StringTransport
    factory: HTTPFactory
    clock: Clock

    def send(self, data: bytes) -> None:
        """Deliver ``data`` from the client."""
        self.protocol.dataReceived(data)

    def is_closed(self) -> bool:
        """Whether the server closed (or is closing) the connection."""
        return bool(self.transport.disconnecting)

    def take(self) -> bytes:
        """Return and clear what the server wrote so far."""
        written: bytes = self.transport.value()
        self.transport.clear()
        return written


@contextmanager
def capture_log_events() -> Iterator[list[dict[str, Any]]]:
    """Collect the events sent to Twisted's global log publisher meanwhile."""
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def connect(
    handler: Handler,
    *,
    settings: HttpSettings | None = None,
    clock: Clock | None = None,
    response_log: ResponseLog | None = None,
    transport: StringTransport | None = None,
) -> Connection:
    """Build a factory around ``handler`` and open one in-memory connection to it."""
    clock = clock or Clock()
    factory = HTTPFactory(
        handler, settings=settings or HttpSettings(), clock=clock, response_log=response_log
    )
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 54321))
    if transport is None:
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 54321),
        )
    protocol.makeConnection(transport)
    return Connection(protocol, transport, factory, clock)


@dataclass
class ParsedResponse:
    """One response as h11 parsed it.

    Attributes:
        status: the status code.
        reason: the reason phrase.
        headers: ``(name, value)`` pairs, names lower-cased by h11.
        body: the body with the framing removed.
        http_version: e.g. ``b"1.1"``.
    """

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    http_version: bytes = b"1.1"

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: bytes) -> list[bytes]:
        """Return every value of ``name`` (lower-case)."""
        return [value for key, value in self.headers if key == name]


def parse_responses(
    raw: bytes,
    methods: list[bytes] | None = None,
    *,
    complete: bool = True,
) -> list[ParsedResponse]:
    """Parse the responses in ``raw`` with h11, the way a client would.

    Args:
        raw: everything the server wrote.
        methods: the request method for each response, in order (``HEAD``
            responses have no body); ``GET`` for any not given.
        complete: require every response to be complete and nothing left over.

    Returns:
        The responses in order; ``1xx`` interim responses are included.
    """
    import h11  # noqa: PLC0415 - a test dependency, not a runtime one

    methods = list(methods or [])
    responses: list[ParsedResponse] = []
    remaining = raw
    while remaining:
        method = methods.pop(0) if methods else b"GET"
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target="/", headers=[("Host", "oracle")]))
        client.send(h11.EndOfMessage())
        client.receive_data(remaining)
        current: ParsedResponse | None = None
        while True:
            event = client.next_event()
            if isinstance(event, h11.InformationalResponse):
                responses.append(
                    ParsedResponse(event.status_code, event.reason, list(event.headers))
                )
                continue
            if isinstance(event, h11.Response):
                current = ParsedResponse(
                    event.status_code,
                    event.reason,
                    list(event.headers),
                    http_version=event.http_version,
                )
                continue
            if isinstance(event, h11.Data):
                assert current is not None
                current.body += bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                assert current is not None
                responses.append(current)
                break
            if event is h11.NEED_DATA:
                if (
                    current is not None
                    and client.their_state is h11.SEND_BODY
                    and not current.header(b"content-length")
                    and not current.header(b"transfer-encoding")
                ):
                    # Close-delimited body (RFC 9112 6.3, the last rule): everything
                    # left belongs to it. A framed one is cut short, not ended.
                    client.receive_data(b"")
                    continue
                if complete:
                    raise AssertionError(f"Incomplete response in {remaining!r}")
                if current is not None:
                    responses.append(current)
                return responses
            raise AssertionError(f"Unexpected h11 event {event!r}")
        trailing, _closed = client.trailing_data
        if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
            if trailing and complete:
                raise AssertionError(f"Bytes after a response that closes: {trailing!r}")
            break
        remaining = bytes(trailing)
    return responses


def request_head(
    target: bytes,
    *,
    method: bytes = b"GET",
    host: bytes = b"a.test",
    headers: list[tuple[bytes, bytes]] | None = None,
    content_length: int | None = None,
    scheme: str = "http",
    peer: tuple[str, int] | None = ("192.0.2.9", 50000),
    local: tuple[str, int] | None = ("192.0.2.1", 80),
) -> RequestHead:
    """A request head as the protocol would make it of ``target`` (origin or absolute form).

    The path is split from the query and percent-decoded; ``Host`` is the first field
    unless ``headers`` are given whole.
    """
    if target.startswith(b"/") or target == b"*":
        origin = target
    else:
        after = target.find(b"/", target.find(b"://") + 3)
        origin = target[after:] if after >= 0 else b"/"
    path, _, query = origin.partition(b"?")
    if path == b"*":
        path = b""
    return RequestHead(
        method=method,
        target=target,
        path=path,
        decoded_path=urllib.parse.unquote_to_bytes(path),
        query=query,
        version=b"1.1",
        headers=[(b"Host", host)] if headers is None else headers,
        authority=host,
        content_length=content_length,
        chunked=False,
        scheme=scheme,
        peer=peer,
        local=local,
    )
