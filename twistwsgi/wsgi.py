"""The PEP 3333 bridge: runs a WSGI application for each :class:`Exchange`.

Two ways to run an application:

* On a thread pool (the default). The reactor thread builds nothing but the call
  object; the worker thread builds the environ, calls the application and iterates
  its result. Everything that reaches the wire is handed back to the reactor with
  ``callFromThread``. A response that is a list or tuple goes out in one hop (head and
  body in one ``write``, with an exact ``Content-Length``); a streamed one goes out
  as it is produced, the chunks that came while the reactor was busy in one write.
  While the client is not reading (the exchange pauses the call, which is its push
  producer), what the application goes on producing waits in a
  :class:`~twistwsgi.response_spool.ResponseSpool` (memory, then a temporary file,
  up to ``max_response_buffer``), sent by the reactor as the client reads, so a
  slow client holds no thread (``response_buffering``, nginx's ``proxy_buffering``);
  without it, or past the limit, the worker thread blocks. It also blocks while
  more than :data:`IN_FLIGHT_HIGH_WATER` bytes wait in the reactor's queue, so
  memory stays bounded whatever the response size. ``wsgi.input`` streams the body from the
  reactor through a bounded buffer; the first read sends ``100 Continue`` when the
  client asked for it, so an application can refuse a large upload unread. With
  ``request_buffering`` the body is instead received whole in the reactor first (as
  in the reactor-thread mode below), so a slow upload holds no worker thread.
* In the reactor thread (``threads = 0``), for applications that never block. The
  body is received whole first (spooled to disk past :data:`SPOOL_SIZE`), then the
  application runs; a streamed result is pulled one chunk at a time as the client
  reads.

On the pool, an application that has not started its response ``app_timeout``
seconds after a worker thread took the request (not counting the time it waited
for the client's body) is answered ``504`` by the server, as nginx in front of
gunicorn answers after its ``proxy_read_timeout``; the log shows where its thread
is stuck, and what the thread sends afterwards is dropped (a thread cannot be
stopped from outside).

``wsgi.file_wrapper`` results backed by a regular file are handed to the reactor,
which sends them with ``os.sendfile`` where the transport allows; the worker thread
is free at once. ``close()`` on the result is called exactly once in every case
(PEP 3333, "Specification Details"). An exception before anything is sent becomes a
500 with the traceback in the log only; after that, the connection is aborted.

The server's own 500, 503 and 504 go out through
:func:`~twistwsgi.routing.answer_error`, so a host's error page replaces their
plain-text bodies; what the application answers itself, errors included, is sent as
it made it (nginx's ``uwsgi_intercept_errors`` off).
"""

from __future__ import annotations

import contextlib
import enum
import faulthandler
import io
import linecache
import math
import os
import re
import stat
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, TypeAlias

from twisted.internet.interfaces import IPushProducer, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistwsgi.environ import SERVER_SOFTWARE, build_environ
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.exchange import Exchange
from twistwsgi.http.pacing import asked_limit, step_for
from twistwsgi.http.request import PreparedHeaders, RequestHead, Route
from twistwsgi.http.rules import CONTROL_CHARACTERS, TOKEN
from twistwsgi.http.sendfile import CLIENT_GONE, finish_paced
from twistwsgi.http.transport import HOLD_LIMIT, ReactorInbox, after_batch, batch_open
from twistwsgi.response_spool import (
    MAX_RESPONSE_BUFFER,
    SPOOL_GRACE,
    ResponseSpool,
    accel_buffering,
)
from twistwsgi.routing import answer_error
from twistwsgi.threads import ThreadPoolLike

__all__ = [
    "INPUT_HIGH_WATER",
    "IN_FLIGHT_HIGH_WATER",
    "SPOOL_SIZE",
    "AccelResolver",
    "ClientDisconnected",
    "FileWrapper",
    "WSGIApplication",
    "WSGIHandler",
    "serve_accel",
    "stuck_threads",
]

_log = Logger(namespace="twistwsgi.wsgi")
_app_errors = Logger(namespace="twistwsgi.wsgi.errors")

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]
#: Finds the file for an application's X-Accel-Redirect or X-Sendfile: given the
#: field name (lower-case) and value, a file server with a ``serve`` method and the
#: path below it, or ``None``.
AccelResolver: TypeAlias = Callable[[bytes, bytes], "tuple[Any, bytes] | None"]
_ACCEL_FIELDS = (b"x-accel-redirect", b"x-sendfile")
StartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
WSGIApplication: TypeAlias = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Response bytes a worker thread may have queued for the reactor before it waits.
IN_FLIGHT_HIGH_WATER = 256 * 1024
#: Request body bytes buffered for ``wsgi.input`` before the client is paused.
INPUT_HIGH_WATER = 256 * 1024
#: In the reactor thread, the most body bytes of pieces pulled in one batch of events
#: joined into one write: below the transport's hold limit by room for the chunk's
#: framing, so that the write is held with the batch's others (see _InlineCall._produce).
_JOIN_LIMIT = HOLD_LIMIT - 64
#: A request body received whole before its application runs (inline mode, or
#: ``request_buffering``) is kept in memory up to this size, in a temporary file above:
#: many uploads may wait at once, each holding this much at most (nginx keeps 8 or
#: 16 KiB, client_body_buffer_size; the protocol hands a request over at 64 KiB).
SPOOL_SIZE = 64 * 1024

_TOKEN = re.compile(TOKEN)
_BAD_VALUE = re.compile(CONTROL_CHARACTERS)
_ERROR_BODY = b"Internal Server Error\n"
_BUSY_BODY = b"Service Unavailable: the server is busy, try again later\n"
# Load sheds for as long as a burst lasts: a short pause spreads the retries.
_BUSY_FIELDS = ((b"Retry-After", b"1"),)
#: Seconds between two log lines about requests that waited too long for a thread.
_BUSY_LOG_INTERVAL = 10.0
#: Seconds between two looks for requests waiting past the thread queue timeout.
_SWEEP_INTERVAL = 0.5
#: Seconds between two looks for applications answering past ``app_timeout``: a
#: request is answered at most this much later than its time.
_ANSWER_SWEEP_INTERVAL = 1.0
_TIMEOUT_BODY = b"Gateway Timeout: the application did not answer in time\n"


class ClientDisconnected(OSError):  # noqa: N818 - reads as the event it reports
    """Raised by ``write()`` (and ``wsgi.input`` reads) once the client is gone.

    Attributes:
        request: the request whose input or response raised it.
    """

    request: RequestHead | None = None


def _disconnected(message: str, request: RequestHead) -> ClientDisconnected:
    """A :class:`ClientDisconnected` raised on behalf of ``request``."""
    error = ClientDisconnected(message)
    error.request = request
    return error


class FileWrapper:
    """``wsgi.file_wrapper`` (PEP 3333, "Optional Platform-Specific File Handling").

    Iterating it reads ``block_size`` bytes at a time, so it works under any
    middleware. Returned unwrapped to the server, a regular file is instead sent by
    the reactor (``os.sendfile`` where possible) from the file's current position.

    Attributes:
        filelike: the wrapped file.
        block_size: bytes per iteration step.
    """

    def __init__(self, filelike: IO[bytes], block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.block_size)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        """Close the wrapped file, if it can be closed."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


# Guards the partial lines of every request's wsgi.errors: writes are rare, and one
# lock spares each request creating its own.
_errors_lock = threading.Lock()


class _ErrorStream:
    """``wsgi.errors``: text written by the application goes to the server log.

    One per request (a partial line is never finished by another request's text),
    written from any thread; complete lines are logged one event each, and a partial
    last line when the request ends (:meth:`flush`).
    """

    # A class default: a request that never writes (most) costs no more than the
    # object itself.
    _partial = ""

    def write(self, text: str) -> int:
        """Log every complete line of ``text``; keep a partial last line."""
        with _errors_lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            _app_errors.error("{line}", line=line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Log a pending partial line."""
        if not self._partial:
            return
        with _errors_lock:
            partial, self._partial = self._partial, ""
        if partial:
            _app_errors.error("{line}", line=partial)


# Status strings and header pairs repeat across responses; each distinct one is
# checked and encoded once. Bounded so that varying values cannot grow them.
_CACHE_LIMIT = 4096
_status_cache: dict[str, tuple[int, bytes]] = {}
_header_cache: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _parse_status(status: str) -> tuple[int, bytes]:
    """Check a PEP 3333 status string (``"200 OK"``) and split it."""
    if type(status) is str:
        cached = _status_cache.get(status)
        if cached is not None:
            return cached
    else:
        raise TypeError(f"status must be a str, not {type(status).__name__}")
    code = status[:3]
    if len(status) < 4 or not code.isascii() or not code.isdigit() or status[3] != " ":
        raise ValueError(f"Malformed status {status!r}: expected 'NNN Reason'")
    if not 200 <= int(code) <= 599:
        # A 1xx is interim (RFC 9110 15.2): as the answer it would leave the client
        # waiting for one that never comes. 100 Continue is the server's to send.
        raise ValueError(f"Status {status!r} is not a final status (200-599)")
    reason = status[4:]
    if _BAD_VALUE.search(reason):
        raise ValueError(f"Control character in status {status!r}")
    parsed = (int(code), reason.encode("latin-1"))
    if len(_status_cache) < _CACHE_LIMIT:
        _status_cache[status] = parsed
    return parsed


def _encode_header(item: object) -> tuple[bytes, bytes]:
    """Check one response header and encode it as ISO-8859-1 bytes.

    A newline in a name or value would let an application (or the user input it
    echoes) inject header fields, so it is an error here, not on the wire.
    Subclasses of ``tuple`` and ``str`` are tuples and strings (PEP 3333 asks for
    native strings): a named tuple, Django's ``SafeString`` (``format_html``) or a
    ``StrEnum`` member is taken as the plain string it holds, as gunicorn and
    waitress take them.
    """
    if not isinstance(item, tuple) or len(item) != 2:
        raise TypeError(f"Each response header must be a (name, value) tuple: {item!r}")
    name, value = item
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"Header names and values must be str: {item!r}")
    if type(name) is not str or type(value) is not str:
        # The characters themselves, whatever a subclass's __str__ says.
        name, value = str.__str__(name), str.__str__(value)
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"Invalid header name {name!r}")
    if _BAD_VALUE.search(value):
        raise ValueError(f"Control character in the value of header {name!r}")
    # RFC 9110 5.5: a field value excludes the whitespace around it. Django writes
    # Set-Cookie with a leading space; " 5" as a Content-Length means 5 (gunicorn
    # strips both alike).
    pair = (name.encode("latin-1"), value.strip(" \t").encode("latin-1"))
    if len(_header_cache) < _CACHE_LIMIT and len(value) <= 128 and type(item) is tuple:
        _header_cache[item] = pair
    return pair


def _encode_headers(
    headers: list[tuple[str, str]],
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Check PEP 3333 response headers and encode them (cached per distinct pair).

    Returns:
        The encoded pairs, and whether every item was a plain tuple the pair cache
        holds.
    """
    if type(headers) is not list:
        raise TypeError(f"response_headers must be a list, not {type(headers).__name__}")
    encoded = []
    cache = _header_cache
    all_cached = True
    for item in headers:
        # Only a plain tuple is looked up: an item merely equal to one cached (a
        # list, or a pair of other types) must be checked, or whether it is
        # accepted would depend on the responses sent before it.
        pair = None
        if type(item) is tuple:
            try:
                pair = cache.get(item)
            except TypeError:  # an unhashable value: refused below, with its reason
                pair = None
        if pair is None:
            pair = _encode_header(item)
            all_cached = all_cached and item in cache
        encoded.append(pair)
    return encoded, all_cached


class _HeaderFacts:
    """A response's PEP 3333 headers, encoded, and what the workers read of them.

    An application sends the same few header lists again and again (a hello world's
    every time): each is checked, encoded and read once (:func:`_header_facts`), and
    its fields are a :class:`PreparedHeaders`, so the protocol serialises them once
    too. Not changed once made (any thread reads it).

    Attributes:
        fields: the encoded fields.
        declared_length: what :func:`_body_room` says of them for a response that
            has content (the one Content-Length, or -1).
        has_content_length: whether a Content-Length field is among them.
        names_limit_rate: whether an X-Accel-Limit-Rate field is (see
            :func:`~twistwsgi.http.pacing.asked_limit`; without one, the mount's
            limit stands).
    """

    __slots__ = ("declared_length", "fields", "has_content_length", "names_limit_rate")

    def __init__(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.fields = fields
        self.declared_length = _declared_length(fields)
        has_content_length = names_limit_rate = False
        for name, _ in fields:
            lower = name.lower()
            if lower == b"content-length":
                has_content_length = True
            elif lower == b"x-accel-limit-rate":
                names_limit_rate = True
        self.has_content_length = has_content_length
        self.names_limit_rate = names_limit_rate

    def limit(self, mount: tuple[int, int] | None, after: int) -> tuple[int, int] | None:
        """:func:`~twistwsgi.http.pacing.asked_limit` of these fields."""
        return asked_limit(self.fields, mount, after) if self.names_limit_rate else mount


# Header lists seen whole (each a tuple of its plain-tuple items): their facts.
# A list of more items, or with an item too long for the pair cache, is not kept.
# Emptied when full, so that an application whose lists change (a length, a
# cookie) keeps the ones it sends now, in bounded memory.
_facts_cache: dict[tuple[tuple[str, str], ...], _HeaderFacts] = {}
_FACTS_CACHE_LIMIT = 256
_FACTS_CACHE_ITEMS = 16
_PLAIN_TUPLE = frozenset((tuple,))


def _header_facts(headers: list[tuple[str, str]]) -> _HeaderFacts:
    """Check and encode PEP 3333 response headers (:func:`_encode_headers`), read once.

    Any thread. A list equal to one seen before, every item a plain tuple (an item
    merely equal to one, as for the pair cache, must be checked), has the facts
    found then.
    """
    key = None
    if type(headers) is list:
        try:
            key = tuple(headers)
            facts = _facts_cache.get(key)
        except TypeError:  # an unhashable item: refused below, with its reason
            key = facts = None
        if facts is not None and _PLAIN_TUPLE.issuperset(map(type, headers)):
            return facts
    encoded, all_cached = _encode_headers(headers)
    if key is not None and all_cached and len(key) <= _FACTS_CACHE_ITEMS:
        if len(_facts_cache) >= _FACTS_CACHE_LIMIT:
            _facts_cache.clear()
        facts = _HeaderFacts(PreparedHeaders(encoded))
        _facts_cache[key] = facts
        return facts
    return _HeaderFacts(encoded)


def _body_room(method: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> int:
    """How many body bytes a response can carry, as the protocol will frame it.

    0 for a response without content (a HEAD answer, 204, 205, 304: RFC 9110
    6.4.1, 15.3.6); the declared length when one Content-Length field gives it;
    otherwise -1 (not known here: chunked, or fields the protocol drops). The
    worker stops iterating there; the exchange's ``body_full`` stays the authority.
    """
    return _content_room(method, status, _declared_length(headers))


def _content_room(method: bytes, status: int, declared_length: int) -> int:
    """:func:`_body_room`, given what the fields declare (:func:`_declared_length`)."""
    if method == b"HEAD" or status in _NO_CONTENT:
        return 0
    return declared_length


# The statuses of a response that carries no content (RFC 9110 6.4.1, 15.3.6).
_NO_CONTENT = (204, 205, 304)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The one Content-Length ``headers`` declare, or -1 (none, repeated or invalid)."""
    declared = -1
    for name, value in headers:
        if name.lower() == b"content-length":
            if declared >= 0 or not value.isdigit():
                return -1  # repeated or invalid: the protocol decides
            declared = int(value)
    return declared


@dataclass(frozen=True)
class _FileResponse:
    """A ``wsgi.file_wrapper`` result the reactor can send by itself.

    Attributes:
        wrapper: the application's result (closed once the file is sent).
        offset: where sending starts (the file's position when returned).
        count: how many bytes to send.
        headers: the response headers, with a Content-Length added if missing.
    """

    wrapper: FileWrapper
    offset: int
    count: int
    headers: list[tuple[bytes, bytes]]


def _file_response(
    result: object, headers: list[tuple[bytes, bytes]], *, method: bytes, status: int
) -> _FileResponse | None:
    """Return how to send ``result`` from the reactor, if it is a regular file.

    Raises:
        ValueError: the file is shorter than the ``Content-Length`` the application
            set, for a response that carries a body. Nothing is sent yet: the
            application's error is a 500, as a list body too short is (see
            :func:`_send_whole`), rather than a head promising bytes that never come.
    """
    if type(result) is not FileWrapper:
        return None
    filelike = result.filelike
    try:
        descriptor = filelike.fileno()
        info = os.fstat(descriptor)
        offset = filelike.tell()
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    available = max(info.st_size - offset, 0)
    declared = None
    for name, value in headers:
        if name.lower() == b"content-length":
            if not value.isdigit():
                return None  # the protocol drops it: sent as an ordinary body instead
            if declared is not None and declared != int(value):
                return None  # conflicting: the protocol drops both; iterated instead
            declared = int(value)
    if declared is None:
        headers = [*headers, (b"Content-Length", b"%d" % available)]
        declared = available
    elif declared > available and _body_room(method, status, headers) != 0:
        raise ValueError(
            f"The wsgi.file_wrapper file has {available} bytes for its Content-Length of {declared}"
        )
    return _FileResponse(result, offset, declared, headers)


class WSGIHandler:
    """Answers exchanges with a WSGI application (reactor thread).

    Attributes:
        app: the WSGI application.
        script_name: the decoded mount prefix (``b""`` at the root).
        accel: resolves X-Accel-Redirect/X-Sendfile answers to files; ``None`` leaves
            such headers alone (they are then sent to the client as they are).
        trusted_proxies: the clients whose forwarding fields the application sees
            (and whose ``X-Forwarded-Proto`` sets ``wsgi.url_scheme``); from others
            those fields are dropped. ``None`` trusts no one.
        request_buffering: whether a request body is received whole before the
            application is given a thread (nginx's ``proxy_request_buffering``), so
            a slow upload holds none; without, a body past the protocol's dispatch
            buffer is streamed to the application as it arrives. (In the reactor
            thread a body is always received whole.)
        response_buffering: whether a streamed response the client reads slower
            than the application writes waits in a :class:`ResponseSpool` (memory,
            then a temporary file) instead of holding its worker thread (nginx's
            ``proxy_buffering``); an ``X-Accel-Buffering: yes`` or ``no`` field of
            the response decides for that response.
        max_response_buffer: the most bytes one response may hold so; past it the
            worker waits for the client, as without buffering.
        spool_grace: seconds a worker waits for a paused client before it starts
            spooling (:data:`SPOOL_GRACE`).
        queue_timeout: seconds a request may wait for a free worker thread; one
            that waited longer is answered 503 and never reaches the application
            (0: no limit). Needs ``clock``.
        app_timeout: seconds the application may run on a worker thread before its
            response head, less the time it waits in ``wsgi.input`` for the client;
            past it the request is answered 504 (0: no limit). The wait for a
            thread is ``queue_timeout``'s. Not in the reactor thread, which an
            application holds until it returns. Needs ``clock``.
        clock: the time source and timers for ``queue_timeout`` and ``app_timeout``.

    Raises:
        TypeError: a timeout that is not a number, a ``max_response_buffer`` that
            is not an int, a buffering flag that is not a bool.
        ValueError: a negative or non-finite timeout, or one without a ``clock``; a
            ``max_response_buffer`` below 1.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        reactor: IReactorFromThreads,
        threadpool: ThreadPoolLike | None,
        script_name: bytes = b"",
        multiprocess: bool = False,
        accel: AccelResolver | None = None,
        trusted_proxies: TrustedProxies | None = None,
        request_buffering: bool = False,
        response_buffering: bool = False,
        max_response_buffer: int = MAX_RESPONSE_BUFFER,
        spool_grace: float = SPOOL_GRACE,
        queue_timeout: float = 0.0,
        app_timeout: float = 0.0,
        clock: IReactorTime | None = None,
    ) -> None:
        self.app = app
        self.accel = accel
        # Checked here, not per request: "off" is true, a NaN timeout compares false.
        for name, flag in (
            ("request_buffering", request_buffering),
            ("response_buffering", response_buffering),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, not {flag!r}")
        self.request_buffering = request_buffering
        if isinstance(max_response_buffer, bool) or not isinstance(max_response_buffer, int):
            raise TypeError(f"max_response_buffer must be an int, not {max_response_buffer!r}")
        if max_response_buffer < 1:
            raise ValueError(f"max_response_buffer must be at least 1, got {max_response_buffer!r}")
        self.response_buffering = response_buffering
        self.max_response_buffer = max_response_buffer
        self.spool_grace = spool_grace
        for name, value in (("queue_timeout", queue_timeout), ("app_timeout", app_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")
            if value and clock is None:
                raise ValueError(f"{name} needs a clock")
        self.queue_timeout = queue_timeout
        self._clock = clock if queue_timeout else None
        self.app_timeout = app_timeout if threadpool is not None else 0.0
        self.answer_clock = clock if self.app_timeout else None
        # The calls handed to the pool whose exchange has not ended (a dict: each
        # leaves it in O(1) when its exchange ends, so nothing ended is kept; it
        # holds at most the requests in flight, looked over whole each sweep).
        # Reactor thread only.
        self.answering: dict[_ThreadedCall, None] = {}
        self._answer_sweep: Any = None
        self._closed = False
        # The calls handed to the pool and not taken yet, oldest first: the pool
        # takes them in order, and each worker pops the oldest as it takes one
        # (deque.popleft is atomic), so nothing is held past its taking. Looked
        # over every _SWEEP_INTERVAL while not empty.
        self.queued: deque[_ThreadedCall] = deque()
        self._sweep_call: Any = None
        self._busy_logged_at: float | None = None
        self._busy_unlogged = 0
        self._busy_last: tuple[RequestHead, float] | None = None
        # None when no address is trusted: the per-request check is then skipped.
        self.trusted_proxies = trusted_proxies if trusted_proxies else None
        self.script_name = script_name.rstrip(b"/")
        self._reactor = reactor
        self._threadpool = threadpool
        self.inbox = ReactorInbox(reactor)
        self._base_environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": threadpool is not None,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
        }

    def handle(self, exchange: Exchange) -> None:
        """Start the application for ``exchange`` (on the pool, or right here)."""
        route = exchange.route
        if route is not None:
            script_name, path_info = route.script_name, route.path_info
        else:
            path = exchange.request.decoded_path
            prefix = self.script_name
            # A prefix ends at a segment boundary: /app holds /app/x, not /application.
            if prefix and (path == prefix or path.startswith(prefix + b"/")):
                path_info = path[len(prefix) :]
                script_name = prefix
            else:
                path_info = path
                script_name = b""
        if self._threadpool is None:
            _InlineCall(self, exchange, script_name, path_info).start()
        elif self.request_buffering and exchange.request.has_body:
            self._receive_then_start(exchange, script_name, path_info)
        else:
            call = _ThreadedCall(self, exchange, script_name, path_info)
            # Queued when the reactor has handled its batch of events (see after_batch).
            after_batch(self._start_in_thread, call)

    def _receive_then_start(self, exchange: Exchange, script_name: bytes, path_info: bytes) -> None:
        """Receive the body whole, then queue the call (``request_buffering``).

        Apart from :meth:`handle`: a closure there would turn its every local into a
        cell, a cost each request paid (measured: 0.4 us of 25).
        """

        def received(body: IO[bytes], size: int) -> None:
            call = _ThreadedCall(self, exchange, script_name, path_info, (body, size))
            after_batch(self._start_in_thread, call)

        _BodySpool(exchange, received)

    def _start_in_thread(self, call: _ThreadedCall) -> None:
        """Queue ``call`` for a worker; a pool that refuses it is a 500 (reactor thread).

        Raised from here, the exception would reach no one: the hand-over may run
        after the handler returned, at the end of the batch.
        """
        assert self._threadpool is not None
        clock = self._clock
        if clock is not None:
            # Before the pool has it: a worker pops it as it takes it.
            call.queued_at = clock.seconds()
            self.queued.append(call)
            if self._sweep_call is None:
                self._sweep_call = clock.callLater(_SWEEP_INTERVAL, self._sweep)
        answer_clock = self.answer_clock
        if answer_clock is not None and not call.done_with:
            # (Handed over at the end of a batch: it may have ended already.)
            self.answering[call] = None
            if self._answer_sweep is None:
                self._answer_sweep = answer_clock.callLater(
                    _ANSWER_SWEEP_INTERVAL, self._sweep_answers
                )
        _waiting.add(1)
        try:
            self._threadpool.callInThread(call.run)
        except Exception:
            _waiting.add(-1)
            if clock is not None:
                self.queued.pop()  # (the newest: the reactor thread appends)
            _log.failure("The thread pool did not take a request")
            call.close_spooled_body()
            call.answer_error()

    def _sweep(self) -> None:
        """Answer 503 for the calls that waited past ``queue_timeout`` (reactor thread).

        Checked here, on a timer, rather than when a thread takes the call: with
        every thread stuck, none would (and the limit would not hold).
        """
        clock = self._clock
        assert clock is not None
        self._sweep_call = None
        now = clock.seconds()
        deadline = now - self.queue_timeout
        for call in self._queued_view():
            if call.queued_at >= deadline:
                break  # (the rest came later)
            if call.expire():
                self._shed(call, now - call.queued_at)
        queued = self.queued
        if self._busy_unlogged and (not queued or self._may_log(now)):
            self._log_busy(now)
        if queued:
            self._sweep_call = clock.callLater(_SWEEP_INTERVAL, self._sweep)

    def _sweep_answers(self) -> None:
        """Answer 504 for the calls past ``app_timeout`` (reactor thread).

        A call is timed from when a worker took it, less the time the application
        waited in ``wsgi.input`` for the client's body: it then waits for the client,
        not the other way round (nginx, which receives a body whole first, does not
        count that time against gunicorn either). A call not taken yet is left to
        ``queue_timeout``.
        """
        clock = self.answer_clock
        assert clock is not None
        self._answer_sweep = None
        now = clock.seconds()
        answering = self.answering
        for call in list(answering):
            if call.done_with:
                del answering[call]  # a response going on (a stream): no longer timed
                continue
            since = call.timed_since
            if since is None or now - since < self.app_timeout:
                continue
            del answering[call]
            outcome = call.time_out()
            if outcome is not _Late.NONE:
                self._answer_late(call, now - since, answer=outcome is _Late.ANSWER)
        if answering:
            self._answer_sweep = clock.callLater(_ANSWER_SWEEP_INTERVAL, self._sweep_answers)

    def call_ended(self, call: _ThreadedCall) -> None:
        """``call``'s exchange ended: it is no longer timed (reactor thread).

        Unless its client left while the application runs without having answered:
        its thread is then still timed, to be counted stuck (see
        :func:`stuck_threads`) once past ``app_timeout``, though nobody is answered.
        """
        answering = self.answering
        if call.held_unanswered:
            return
        answering.pop(call, None)
        if self._closed and not answering:
            self._cancel_answer_sweep()

    def _cancel_answer_sweep(self) -> None:
        sweep, self._answer_sweep = self._answer_sweep, None
        if sweep is not None and sweep.active():
            sweep.cancel()

    def _answer_late(self, call: _ThreadedCall, waited: float, *, answer: bool) -> None:
        """Answer 504 for ``call`` (unless its client left), and log where its thread is."""
        request = call.exchange.request
        stack = thread_stack(call.thread) if call.thread is not None else None
        where = " Its thread goes on running it (what it sends is dropped)"
        if stack is None:
            where += "."
        else:
            where += ", in:\n" + stack
        _log.error(
            "{method} {target}: the application did not start its response within"
            " {timeout:g}s ({waited:.1f}s): {what}.{where}",
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            timeout=self.app_timeout,
            waited=waited,
            what="answered 504" if answer else "its client has left",
            where=where,
        )
        exchange = call.exchange
        if answer and not exchange.finished:
            answer_error(exchange, 504, _TIMEOUT_BODY)

    def close(self) -> None:
        """Stop looking for requests waiting too long (the server stops or reloads).

        Requests in flight are not affected; the sweep starts again with the next
        request handed to the pool, should there be one. Applications running are
        still timed: the sweep of ``app_timeout`` ends with the last of them.
        """
        call, self._sweep_call = self._sweep_call, None
        if call is not None and call.active():
            call.cancel()
        self._closed = True
        if not self.answering:
            self._cancel_answer_sweep()

    def _queued_view(self) -> list[_ThreadedCall]:
        """A copy of the waiting calls (workers pop from the deque meanwhile)."""
        while True:
            try:
                return list(self.queued)
            except RuntimeError:  # mutated while copied: copy again
                continue

    def _shed(self, call: _ThreadedCall, waited: float) -> None:
        """Answer 503 for ``call``, which no worker will run."""
        exchange = call.exchange
        if exchange.finished:
            return  # its client left: already logged 499
        if exchange.request.has_body and exchange.client_left():
            # Gone behind an upload the server had stopped reading: the client's
            # doing, logged 499 as if it had been seen (see _ThreadedCall.run).
            exchange.drop_departed_client()
            return
        self._busy_unlogged += 1
        self._busy_last = (exchange.request, waited)
        answer_error(exchange, 503, _BUSY_BODY, _BUSY_FIELDS)

    def _may_log(self, now: float) -> bool:
        last = self._busy_logged_at
        return last is None or now - last >= _BUSY_LOG_INTERVAL

    def _log_busy(self, now: float) -> None:
        """One line for the requests answered 503 since the last one.

        At most every :data:`_BUSY_LOG_INTERVAL` seconds while requests keep timing
        out, and once more when the queue has emptied, so a burst is always counted.
        """
        self._busy_logged_at = now
        assert self._busy_last is not None
        request, waited = self._busy_last
        _log.warn(
            "{count} request(s) waited more than {timeout:g}s for a worker thread and"
            " were answered 503, the last {method} {target} after {waited:.1f}s:"
            " the application is slow or --threads too few",
            count=self._busy_unlogged,
            timeout=self.queue_timeout,
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            waited=waited,
        )
        self._busy_unlogged = 0

    def environ_for(
        self, exchange: Exchange, script_name: bytes, path_info: bytes
    ) -> dict[str, Any]:
        """Build the environ (without ``wsgi.input``) for ``exchange`` (any thread)."""
        request = exchange.request
        proxies = self.trusted_proxies
        trusted = proxies is not None and proxies.trusts_peer(request.peer)
        environ = build_environ(
            request,
            script_name=script_name,
            path_info=path_info,
            base=self._base_environ,
            trusted=trusted,
        )
        # One per request: a partial line one request writes is not finished by
        # another's (the stream is flushed when the request ends).
        environ["wsgi.errors"] = _ErrorStream()
        user = exchange.remote_user
        if user is not None:
            # CGI (RFC 3875 4.1.1, 4.1.11): set by the server that authenticated.
            # PEP 3333 strings are Latin-1 characters standing for the bytes.
            environ["AUTH_TYPE"] = "Basic"
            environ["REMOTE_USER"] = user.encode("utf-8").decode("latin-1")
        return environ

    @property
    def reactor(self) -> IReactorFromThreads:
        """The reactor worker threads hand their results to."""
        return self._reactor


def _accel_target(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """The X-Accel-Redirect or X-Sendfile field of a response, if it has one."""
    for name, value in headers:
        lower = name.lower()
        if lower in _ACCEL_FIELDS:
            return lower, value.strip()
    return None


def serve_accel(
    exchange: Exchange,
    accel: AccelResolver,
    target: tuple[bytes, bytes],
    headers: list[tuple[bytes, bytes]],
    answered: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with the file an application named instead of its own body (reactor).

    Also a proxy mount's, for its upstream's ``X-Accel-Redirect``. ``headers`` are
    the fields kept for the client; ``answered``, if not those, all the answer's
    fields (its X-Accel-Limit-Rate is read whatever the client is sent).
    """
    if exchange.finished:
        return
    resolved = accel(*target)
    if resolved is None:
        _log.error(
            "{field} {value!r} from the application or upstream names no file of a static mount",
            field=target[0].decode("latin-1"),
            value=target[1],
        )
        answer_error(exchange, 404, b"Not Found\n")
        return
    server, path_info = resolved
    # Logged where the static mount logs, as nginx logs an internal redirect; sent at
    # its rate (nginx's limit_rate of the location that sends the response), or the
    # one the answer asks for (X-Accel-Limit-Rate), with its limit_rate_after.
    exchange.access_log = server.access_log
    options = server.options
    after = options.limit_rate_after
    own = (options.limit_rate, after) if options.limit_rate else None
    exchange.limit_rate = asked_limit(headers if answered is None else answered, own, after)
    route = exchange.route
    if route is not None and route.gzip is not None:
        # A file goes out as it is on disk, whatever its size (a large one is sent
        # with sendfile, a small one from memory): not compressed on the way.
        exchange.route = Route(
            route.script_name,
            route.path_info,
            route.host,
            route.headers,
            error_pages=route.error_pages,
            label=route.label,
        )
    server.serve_internal(
        exchange, path_info, headers, try_files=target[0].lower() == b"x-accel-redirect"
    )


_FAULTHANDLER_FRAME = re.compile(r'  File "(.*)", line (\d+) in (.*)')


def thread_stack(ident: int) -> str | None:
    """The stack of the running thread ``ident``, formatted as a traceback is.

    Read by :mod:`faulthandler`, which follows the interpreter's own frames:
    walking another thread's frames from Python (``sys._current_frames()`` and
    ``f_back``, as ``traceback.format_stack`` does) can crash CPython 3.11 while
    that thread runs on (python/cpython#111363). ``None`` if there is no such
    thread, or no file to dump into.
    """
    try:
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as dump:
            faulthandler.dump_traceback(dump, all_threads=True)
            dump.seek(0)
            text = dump.read()
    except (OSError, ValueError):
        return None
    heading = f"hread 0x{ident:016x} "  # ("Thread" or "Current thread")
    lines: list[str] = []
    for block in text.split("\n\n"):
        first, _, rest = block.partition("\n")
        if heading not in first:
            continue
        for line in reversed(rest.splitlines()):  # dumped most recent first
            found = _FAULTHANDLER_FRAME.fullmatch(line)
            if found is None:
                continue
            path, number, function = found[1], int(found[2]), found[3]
            lines.append(f'  File "{path}", line {number}, in {function}')
            source = linecache.getline(path, number).strip()
            if source:
                lines.append(f"    {source}")
        break
    return "\n".join(lines) or None


def _not_bytes(data: object) -> str:
    return f"the application's body items must be bytes, not {type(data).__name__}"


def _joined(result: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The whole body of a list or tuple result.

    PEP 3333 ("Unicode Issues"): body strings are bytestrings. A ``str`` item is an
    application error, raised here before anything is sent so the client gets a 500
    rather than a response cut short (``b"".join`` refuses ``str`` items itself).
    """
    if len(result) == 1:
        data = result[0]
        if type(data) is not bytes:
            raise TypeError(_not_bytes(data))
        return data
    return b"".join(result)


class _Late(enum.Enum):
    """What timing a call out came to (see :meth:`_ThreadedCall.time_out`)."""

    ANSWER = "answer"
    COUNTED = "counted"
    NONE = "none"


class _StuckThreads:
    """How many worker threads run requests answered 504 (``app_timeout``) meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, change: int) -> None:
        with self._lock:
            self.count += change


_stuck = _StuckThreads()
#: How many requests wait for a worker thread (queued, not taken, not answered 503).
_waiting = _StuckThreads()


def waiting_requests() -> int:
    """How many requests of this process wait for a worker thread now (the metrics' gauge).

    Not the pool's queue length: a request answered 503 by ``thread_queue_timeout``
    stays there until a thread takes it out, and waits no more.
    """
    return _waiting.count


def stuck_threads() -> int:
    """How many worker threads of this process are held by requests answered 504.

    A worker process with half its threads so held asks to be replaced (see
    :class:`twistwsgi.worker.ReplacementWatch`): a thread cannot be stopped, a process
    can.
    """
    return _stuck.count


#: The request each worker thread is running an application for, by thread ident.
_running: dict[int, RequestHead] = {}


def busy_threads() -> int:
    """How many threads of this process run a request now (of any WSGI handler)."""
    return len(_running)


def running_request(thread: threading.Thread) -> str | None:
    """What ``thread`` is running an application for (``"GET /report"``), if anything.

    For the log line that names a worker still busy at shutdown.
    """
    request = _running.get(thread.ident or 0)
    if request is None:
        return None
    return f"{request.method.decode('latin-1')} {request.target.decode('latin-1')}"


def _close_result(result: object, request: RequestHead) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            _log.failure(
                "close() of the application's result raised, for {method} {target}",
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
            )


class _BodySpool:
    """Receives a request body whole, before its application runs (reactor thread).

    For the reactor-thread mode (the application cannot wait for the network) and
    for ``request_buffering`` (a slow upload holds no worker thread meanwhile, as
    nginx in front of gunicorn would buffer it). The body is kept in memory up to
    :data:`SPOOL_SIZE` and in an unlinked temporary file (in ``TMPDIR``) beyond, so
    nothing is left behind however the process ends; the writes happen in the
    reactor thread, as nginx writes its ``client_body_temp`` files without ``aio``.
    ``100 Continue`` goes out at once: the application cannot be asked first.
    ``complete`` gets the file (at its start) and the body's size. A body the
    protocol fails (malformed, too large, stalled, lost) is dropped, and the
    protocol answers it; a body that cannot be stored is a 500.
    """

    def __init__(self, exchange: Exchange, complete: Callable[[IO[bytes], int], None]) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_SIZE)  # noqa: SIM115
        self._size = 0
        self._exchange = exchange
        self._complete = complete
        self._failed = False
        exchange.continue_body()
        exchange.receive_body(self)

    def body_received(self, data: bytes) -> None:
        """Store a piece of the body."""
        if self._failed:
            return  # the 500 is out; the protocol discards the rest
        try:
            self.file.write(data)
        except OSError as error:  # a full or read-only TMPDIR
            self._failed = True
            self.file.close()
            request = self._exchange.request
            _log.error(
                "Could not store the request body of {method} {target}: {error}",
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
                error=error,
            )
            if not self._exchange.finished:
                _answer_500(self._exchange)
            return
        self._size += len(data)

    def body_finished(self) -> None:
        """Hand the complete body on."""
        if self._failed:
            return
        self.file.seek(0)
        self._complete(self.file, self._size)

    def body_failed(self, reason: Exception) -> None:
        """The protocol answers a failed body itself; drop what was stored."""
        self.file.close()


def _received_whole(environ: dict[str, Any], size: int) -> None:
    """Describe a body received whole as what it now is: ``size`` bytes.

    A chunked body then reaches the application with a ``CONTENT_LENGTH`` and
    without its ``Transfer-Encoding``, as nginx passes a buffered body on: many
    frameworks (Django among them) read no body without a ``CONTENT_LENGTH``.
    """
    environ["CONTENT_LENGTH"] = str(size)
    environ.pop("HTTP_TRANSFER_ENCODING", None)


class _ThreadedInput:
    """``wsgi.input`` fed by the reactor, read by a worker thread.

    The reactor side (``body_*``) is the exchange's body receiver; the reading side
    blocks until data, the end of the body, or a failure arrives. The client is paused
    while more than :data:`INPUT_HIGH_WATER` bytes wait unread.
    """

    def __init__(
        self, exchange: Exchange, inbox: ReactorInbox, clock: IReactorTime | None = None
    ) -> None:
        self._exchange = exchange
        self._inbox = inbox
        # For app_timeout: whether the reader waits for the client now, and when it
        # last stopped waiting (the time of the clock, None: never waited).
        self._clock = clock
        self.waiting = False
        self.waited_until: float | None = None
        self._cond = threading.Condition(threading.RLock())  # (RLock: see _ThreadedCall)
        # The pieces as the protocol handed them over, and how much of the first
        # one was read: a read takes its bytes from there, so each byte is copied
        # once (or not at all: a read that takes a whole piece gets that piece),
        # where cutting the rest of a piece off after each read copied it again
        # (a 256 KiB piece read in 64 KiB reads was copied 2.5 times).
        self._chunks: deque[bytes] = deque()
        self._offset = 0
        self._buffered = 0
        self._done = False
        self._error: Exception | None = None
        self._paused = False
        self._asked = False
        self._released = False

    # -- reactor thread ---------------------------------------------------------------

    def release(self) -> None:
        """The request is over: drop what was not read.

        The exchange and this stream refer to each other, so what is queued here
        would otherwise wait for a garbage collection (an upload refused unread left
        up to 64 KiB each). A read from now on raises: PEP 3333 makes
        ``wsgi.input`` valid only during its request.
        """
        with self._cond:
            self._released = True
            self._chunks.clear()
            self._offset = 0
            self._buffered = 0
            self._cond.notify_all()

    def body_received(self, data: bytes) -> None:
        """Queue a piece of the body; pause the client above the high-water mark."""
        with self._cond:
            self._chunks.append(data)
            self._buffered += len(data)
            pause = self._buffered > INPUT_HIGH_WATER and not self._paused
            if pause:
                self._paused = True
            self._cond.notify()
        if pause:
            self._exchange.pause_body()

    def body_finished(self) -> None:
        """The body is complete: readers get what is left, then ``b""``."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def body_failed(self, reason: Exception) -> None:
        """The body will never be complete: readers get an error."""
        with self._cond:
            self._error = reason
            self._cond.notify_all()

    # -- worker thread ------------------------------------------------------------------

    def _wait(self) -> None:
        """Wait until something can be read (called with the lock held)."""
        if self._released:
            raise _disconnected(
                "The request is over: its body is no longer kept", self._exchange.request
            )
        if not self._asked:
            self._asked = True
            # PEP 3333: send 100 Continue only when the application asks for the body.
            self._inbox.call(self._exchange.continue_body)
        if self._chunks or self._done:
            return
        self.waiting = True
        try:
            while not self._chunks and not self._done:
                if self._error is not None:
                    raise _disconnected(
                        f"Request body not received: {self._error}", self._exchange.request
                    )
                self._cond.wait()
                if self._released:
                    raise _disconnected(
                        "The request is over: its body is no longer kept",
                        self._exchange.request,
                    )
        finally:
            self.waiting = False
            if self._clock is not None:
                self.waited_until = self._clock.seconds()

    def _took(self, count: int) -> None:
        """Account for ``count`` bytes read; resume the client below half the mark."""
        self._buffered -= count
        if self._paused and self._buffered <= INPUT_HIGH_WATER // 2:
            self._paused = False
            self._inbox.call(self._exchange.resume_body)

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all of the rest if negative or ``None``)."""
        if size is None or size < 0:
            pieces: list[bytes] = []
            while True:
                piece = self.read(1 << 20)
                if not piece:
                    return b"".join(pieces)
                pieces.append(piece)
        if size == 0:
            return b""
        # File semantics (PEP 3333 "Input and Error Streams"): fewer than ``size``
        # bytes only at the end of the body, however the client split it up.
        parts: list[bytes] = []
        wanted = size
        chunks = self._chunks
        with self._cond:
            while wanted > 0:
                self._wait()
                if not chunks:
                    break
                data = chunks[0]
                start = self._offset
                end = start + wanted
                if end >= len(data):
                    chunks.popleft()
                    self._offset = 0
                    if start:
                        data = data[start:]
                else:
                    self._offset = end
                    data = data[start:end]
                self._took(len(data))
                parts.append(data)
                wanted -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line, up to ``size`` bytes if ``size`` is not negative."""
        limit = -1 if size is None else size
        parts: list[bytes] = []
        total = 0
        chunks = self._chunks
        with self._cond:
            while limit < 0 or total < limit:
                self._wait()
                if not chunks:
                    break
                data = chunks[0]
                start = self._offset
                stop = len(data) if limit < 0 else min(len(data), start + limit - total)
                end = data.find(b"\n", start, stop)
                cut = end + 1 if end >= 0 else stop
                if cut == len(data):
                    chunks.popleft()
                    self._offset = 0
                else:
                    self._offset = cut
                parts.append(data if start == 0 and cut == len(data) else data[start:cut])
                total += cut - start
                self._took(cut - start)
                if end >= 0:
                    break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Read lines until the end (or until ``hint`` bytes were read)."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


@implementer(IPushProducer)
class _ThreadedCall:
    """One application call on a worker thread, and its way back to the reactor.

    ``run`` and the ``start_response``/``write`` callables run in the worker thread;
    ``_deliver_*``, ``_pump`` and the producer methods run in the reactor thread. The
    condition guards the values both sides touch: ``_paused``, ``_in_flight``,
    ``_gone``, ``_full`` (the response takes no more body: the iteration stops
    there), and the response spool with ``_ending``.

    With response buffering, body bytes the client cannot take yet (the exchange
    paused its producer) go into a :class:`ResponseSpool` instead of making the
    worker wait (once the client has not read for the handler's ``spool_grace``);
    the reactor sends them from there (``_pump``) whenever the client reads and no
    bytes handed over directly are still on their way (those are older). While
    bytes are spooled, later ones are spooled too if the client is paused, and
    otherwise wait for the spool to empty before going directly: the order holds.
    The response ends when the spool is empty.
    """

    def __init__(
        self,
        handler: WSGIHandler,
        exchange: Exchange,
        script_name: bytes,
        path_info: bytes,
        spooled: tuple[IO[bytes], int] | None = None,
    ) -> None:
        self._handler = handler
        self._exchange = exchange
        self._call_from_thread = handler.inbox.call
        self._script_name = script_name
        self._path_info = path_info
        # The condition's own lock, taken directly where nothing waits (cheaper).
        # An RLock, though nothing takes it twice: a Condition over a plain Lock
        # looks for three methods only RLock has, and building the three
        # AttributeErrors made each call's setup cost 1.9 us instead of 0.6.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._paused = False
        self._in_flight = 0
        # Body pieces handed over after the first, waiting for the reactor, and
        # whether a call to send them is queued: the reactor sends every piece that
        # came meanwhile in one write (one chunk, one send), rather than one call,
        # one chunk and one send for each. They are _in_flight's bytes: bounded.
        self._pending: list[bytes] = []
        self._delivery_queued = False
        # The response's limit_rate: the mount's, or what its X-Accel-Limit-Rate asks
        # (set by the worker with the head, applied by the reactor as it starts).
        self._mount_limit = self._limit = exchange.limit_rate
        self._mount_after = exchange.limit_rate_after
        # The bytes handed to the reactor a write may wait behind (set with the head:
        # a paced response hands one piece at a time, as the pieces queued beyond it
        # would go out past the hold its writing starts).
        self._high_water = IN_FLIGHT_HIGH_WATER
        self._gone = False
        self._full = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] | None = None
        # What the headers' Content-Length declares (_declared_length), read with them.
        self._declared_length = -1
        self._head_sent = False
        # The error start_response re-raised once the head was sent (see _went_on).
        self._reraised: BaseException | None = None
        self._input: _ThreadedInput | None = None
        # Response buffering: whether this response may use a spool (decided with
        # its head; given up if the spool fails), the spool once needed, whether
        # the response ends once the spool is empty, and whether it ends aborted
        # (the application failed after what is spooled).
        self._buffering = False
        self._response_spool: ResponseSpool | None = None
        self._ending = False
        self._abort_at_end = False
        # A body received whole (request_buffering), with its size. Closed by the
        # reactor if the client leaves before a worker takes the call (a departed
        # upload must not hold its file or memory until a thread is free), else by
        # the worker when the call is over, unless the response is a file the
        # reactor sends (it may be this body): then when the exchange ends. The
        # two flags say which, under the condition's lock.
        self._spooled = spooled
        self._running = False
        self._spool_left = False
        # For the thread queue timeout (see WSGIHandler._sweep): when the call was
        # handed to the pool, and whether it expired before a worker took it (the
        # worker's taking it is _running).
        self.queued_at = 0.0
        self._expired = False
        self._timed = handler.queue_timeout > 0
        # For app_timeout (see WSGIHandler._sweep_answers): when a worker took the
        # call, the worker thread running it, and whether it was answered 504.
        self.started_at: float | None = None
        self.thread: int | None = None
        self._returned = False
        self._late = False
        self._guarded = self._timed or spooled is not None or handler.app_timeout > 0
        if spooled is None and exchange.request.has_body:
            self._input = _ThreadedInput(exchange, handler.inbox, handler.answer_clock)
            exchange.receive_body(self._input)
        exchange.on_close(self._exchange_closed)

    # -- reactor thread ----------------------------------------------------------------

    def _exchange_closed(self, reason: Failure | None) -> None:
        if self._handler.answer_clock is not None:
            self._handler.call_ended(self)
        with self._cond:
            self._gone = True
            self._cond.notify_all()
            close_spool = not self._running or self._spool_left
            if self._response_spool is not None:
                # Under the lock: the worker only touches the spool under it, and
                # looks at _gone first.
                self._response_spool.close()
        if self._input is not None:
            self._input.release()
        if close_spool:
            self.close_spooled_body()

    def pauseProducing(self) -> None:
        """The client stopped reading: the worker waits before its next chunk.

        Or spools it: a worker waiting for the spool to empty may spool now.
        """
        with self._cond:
            self._paused = True
            if self._response_spool is not None:
                self._cond.notify_all()

    def resumeProducing(self) -> None:
        """The client reads again: wake the worker, or send what is spooled."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()
            pump = self._spool_waiting()
        if pump:
            self._pump()

    def _spool_waiting(self) -> bool:
        """Whether spooled bytes, or the end after them, wait to be sent (lock held)."""
        spool = self._response_spool
        return spool is not None and (spool.held > 0 or self._ending)

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._exchange_closed(None)

    def _start(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        exchange = self._exchange
        if exchange.finished:
            return False
        exchange.limit_rate = self._limit
        exchange.start_response(status, headers, reason)
        return True

    def _deliver_first(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], data: bytes
    ) -> None:
        if self._start(status, reason, headers):
            self._exchange.registerProducer(self, True)
        self._deliver(data)

    def _deliver_pending(self) -> None:
        """Send the pieces handed over since the last delivery, as one write."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._delivery_queued = False
        self._deliver(pending[0] if len(pending) == 1 else b"".join(pending))

    def _deliver(self, data: bytes) -> None:
        exchange = self._exchange
        exchange.write(data)
        # A HEAD, 204 or 304 answer, or the Content-Length reached: nothing more can
        # be sent. The worker stops iterating at its next chunk (PEP 3333, "Handling
        # the Content-Length Header"; an endless stream would otherwise be pulled for
        # ever, unseen) and ends the exchange then (_deliver_end): not here, as the
        # application may still read its request body, or call write() again.
        full = exchange.body_full
        with self._cond:
            self._in_flight -= len(data)
            if full:
                self._full = True
            self._cond.notify_all()
            pump = not self._in_flight and self._spool_waiting()
        if pump:
            self._pump()

    def _pump(self) -> None:
        """Send spooled bytes while the client takes them; end the response after."""
        exchange = self._exchange
        while True:
            failed: OSError | None = None
            data = b""
            with self._cond:
                spool = self._response_spool
                if spool is None or self._gone or self._paused or self._in_flight:
                    return  # resumeProducing or _deliver calls again
                if not self._full:  # (else the response is complete: nothing more goes)
                    try:
                        data = spool.take()
                    except OSError as error:
                        spool.close()
                        self._gone = True
                        failed = error
                    self._cond.notify_all()  # room in the spool for the worker
                end = not data and self._ending and failed is None
                if end:
                    self._ending = False
            if failed is not None:
                request = exchange.request
                _log.error(
                    "{method} {target}: cannot read the response back from its"
                    " temporary file ({error}): connection aborted",
                    method=request.method.decode("latin-1"),
                    target=request.target.decode("latin-1"),
                    error=failed,
                )
                exchange.abort()
                return
            if not data:
                if end and self._abort_at_end:
                    exchange.abort()  # the application failed after these bytes
                elif end:
                    self._deliver_end()
                return
            exchange.write(data)  # may pause this producer at once
            if exchange.body_full:
                with self._cond:
                    self._full = True
                    self._cond.notify_all()

    def _deliver_whole(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], data: bytes
    ) -> None:
        exchange = self._exchange
        if not exchange.finished:
            exchange.limit_rate = self._limit
            _send_whole(exchange, status, reason, headers, data)

    def _deliver_end(self) -> None:
        with self._cond:
            spool = self._response_spool
            if spool is not None and spool.held and not self._gone and not self._full:
                self._ending = True  # _pump ends the response once the spool is empty
                return
        exchange = self._exchange
        exchange.unregisterProducer()
        exchange.finish()

    def _deliver_file(self, status: int, reason: bytes, response: _FileResponse) -> None:
        self._exchange.limit_rate = self._limit
        _send_file_result(self._exchange, status, reason, response)

    def _serve_accel(self, accel: AccelResolver, target: tuple[bytes, bytes]) -> None:
        assert self._headers is not None  # (the target is one of them)
        serve_accel(self._exchange, accel, target, self._headers)

    def close_spooled_body(self) -> None:
        """Close the body received whole, if any (closing it twice is harmless)."""
        if self._spooled is not None:
            self._spooled[0].close()

    def answer_error(self) -> None:
        """Answer 500, or abort a response already started (reactor thread).

        What the application produced before it failed and still waits in the
        spool goes to the client first, as what went out directly did.
        """
        exchange = self._exchange
        if exchange.finished:
            return
        if exchange.response_started:
            with self._cond:
                if self._spool_waiting() and not self._gone:
                    self._ending = self._abort_at_end = True  # see _pump
                    return
            exchange.abort()
        else:
            _answer_500(exchange)

    # -- worker thread -------------------------------------------------------------------

    @property
    def exchange(self) -> Exchange:
        """The exchange this call answers."""
        return self._exchange

    def expire(self) -> bool:
        """Mark the call as never to run, unless a worker took it (reactor thread).

        Returns:
            Whether it expired (the caller answers for it).
        """
        with self._lock:
            if self._running or self._expired:
                return False
            self._expired = True
        _waiting.add(-1)  # (a thread that takes it out skips it)
        self.close_spooled_body()
        return True

    @property
    def held_unanswered(self) -> bool:
        """Whether a worker runs the call and no response has started (unlocked)."""
        return self.started_at is not None and not self._returned and not self._head_sent

    @property
    def done_with(self) -> bool:
        """Whether the call needs no more timing (unlocked).

        Its response started, or its worker returned, or no worker will run it.
        """
        return self._head_sent or self._returned or (self._gone and self.started_at is None)

    @property
    def timed_since(self) -> float | None:
        """Since when the application's time runs (reactor thread; read unlocked).

        ``None`` while no worker has taken the call, or while the application waits
        in ``wsgi.input`` for the client; else when a worker took it or, later, when
        the application last stopped waiting for the body.
        """
        started = self.started_at
        reader = self._input
        if started is None or reader is None:
            return started
        if reader.waiting:
            return None
        waited = reader.waited_until
        return started if waited is None or waited < started else waited

    def time_out(self) -> _Late:
        """Give up on the response of a running call, unless it started (reactor).

        Whatever the application sends from now on is dropped, as for a client that
        left; its thread counts as stuck until it returns.

        Returns:
            ``ANSWER`` (the caller answers 504), ``COUNTED`` (the client had left:
            nothing to answer), or ``NONE`` (the response started, or the thread
            returned).
        """
        with self._cond:
            if self._head_sent or self._returned or self._late:
                return _Late.NONE
            self._late = True
            _stuck.add(1)
            if self._gone:
                return _Late.COUNTED
            self._gone = True
            self._cond.notify_all()
        return _Late.ANSWER

    def run(self) -> None:
        """Call the application and send its response (worker thread)."""
        try:
            self._run()
        finally:
            if self._handler.answer_clock is not None:
                self._returning()

    def _returning(self) -> None:
        """The worker is done with the call: a thread counted stuck is free again."""
        with self._cond:
            self._returned = True  # (time_out counts no thread from now on)
            late = self._late
        if late:
            _stuck.add(-1)
            request = self._exchange.request
            _log.warn(
                "{method} {target}: the application returned, after its 504",
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
            )

    def _run(self) -> None:
        if self._timed:
            self._handler.queued.popleft()  # this call's entry, or an older expired one
        if self._guarded:
            with self._lock:
                if self._expired:
                    return  # answered 503 or 504 while it waited (WSGIHandler._sweep*)
                _waiting.add(-1)
                self._running = True
                self.thread = threading.get_ident()
                clock = self._handler.answer_clock
                if clock is not None:
                    self.started_at = clock.seconds()
        else:
            _waiting.add(-1)  # (no timeout: it cannot have expired)
        if self._gone:
            # The client left while the request waited for a thread (the access log
            # has its 499): no application call for an answer nobody will read, and
            # no thread held by it while live requests wait. nginx drops a proxied
            # request whose client is gone the same way. Read without the lock: a
            # client leaving just now is the same race as leaving a moment later.
            self.close_spooled_body()
            return
        exchange = self._exchange
        if self._input is not None and exchange.client_left():
            # Its upload outgrew what a waiting request buffers, so the socket was
            # no longer read and the close was not seen: the kernel tells. An
            # abandoned POST (an order, a retried upload) must not be carried out.
            self._call_from_thread(exchange.drop_departed_client)
            return
        environ = self._handler.environ_for(exchange, self._script_name, self._path_info)
        if self._spooled is not None:
            environ["wsgi.input"], size = self._spooled
            _received_whole(environ, size)
        else:
            environ["wsgi.input"] = self._input if self._input is not None else io.BytesIO()
        result: Iterable[bytes] | None = None
        handed_over = False
        thread = threading.get_ident()
        _running[thread] = exchange.request
        try:
            result = self._handler.app(environ, self._start_response)
            handed_over = self._respond(result)
        except BaseException:
            # SystemExit and the like too: on a worker thread nothing else would
            # answer, and the connection (with any request behind it) would hang.
            self._failed()
        finally:
            if result is not None and not handed_over:
                _close_result(result, exchange.request)
            environ["wsgi.errors"].flush()
            _running.pop(thread, None)
            if self._spooled is not None:
                with self._lock:
                    # A file response may be this very body (file_wrapper(wsgi.input)).
                    self._spool_left = handed_over and not self._gone
                if not self._spool_left:
                    self.close_spooled_body()

    def _respond(self, result: Iterable[bytes]) -> bool:
        """Send ``result``; return whether the reactor now owns (and closes) it."""
        accel = self._handler.accel
        if accel is not None and not self._head_sent and self._headers is not None:
            target = _accel_target(self._headers)
            if target is not None:
                # The file replaces the body: close the result without reading it.
                self._head_sent = True
                self._call_from_thread(self._serve_accel, accel, target)
                return False
        if not self._head_sent and self._headers is not None:
            file_response = _file_response(
                result, self._headers, method=self._exchange.request.method, status=self._status
            )
            if file_response is not None:
                self._head_sent = True
                self._call_from_thread(
                    self._deliver_file, self._status, self._reason, file_response
                )
                return True
            if type(result) is list or type(result) is tuple:
                data = _joined(result)
                self._head_sent = True
                self._call_from_thread(
                    self._deliver_whole, self._status, self._reason, self._headers, data
                )
                return False
        # Body bytes the response can still carry (-1: not known here), from the
        # head, once start_response has been called (a generator calls it late).
        room: int | None = None
        for data in result:
            if self._reraised is not None:
                raise _went_on(self._reraised)
            if type(data) is not bytes:
                raise TypeError(_not_bytes(data))
            if data:
                if room is None and self._headers is not None:
                    room = _content_room(
                        self._exchange.request.method, self._status, self._declared_length
                    )
                if not self._send(data):
                    if self._full:
                        break  # nothing more can be sent: end the response
                    return False
                if room is not None and room >= 0:
                    room -= len(data)
                    if room <= 0:
                        # Enough has been sent (PEP 3333, "Handling the Content-Length
                        # Header"): what follows would be dropped; stop pulling it.
                        break
            elif self._gone:
                # PEP 3333: an empty chunk is a streaming application's "nothing yet"
                # (Server-Sent Events, a long poll between events); it is when the
                # server can stop one whose client left. Read without the lock.
                return False
            elif self._full:
                break
        if self._reraised is not None:
            raise _went_on(self._reraised)
        if not self._head_sent:
            if self._headers is None:
                raise RuntimeError("The application returned without calling start_response")
            self._head_sent = True
            self._call_from_thread(
                self._deliver_whole, self._status, self._reason, self._headers, b""
            )
        else:
            self._call_from_thread(self._deliver_end)
        return False

    def _send(self, data: bytes) -> bool:
        """Hand ``data`` to the reactor, waiting while the client is behind.

        With response buffering, bytes the client cannot take yet are spooled
        instead, up to the spool's limit; the worker waits only past it.
        """
        if self._headers is None:
            raise RuntimeError("The application sent body bytes before calling start_response")
        if not self._head_sent:
            self._buffering = self._decide_buffering(self._headers)
        size = len(data)
        spooled = False
        queue_delivery = False
        # Until when a paused client is waited for before spooling starts.
        grace_ends: float | None = None
        while True:
            failed: OSError | None = None
            reserved: ResponseSpool | None = None  # the spool whose file gets ``data``
            with self._cond:
                while True:
                    if self._gone or self._full:
                        return False
                    spool = self._response_spool
                    if spool is not None and spool.held:
                        # Bytes wait in the spool: these go after them while the
                        # client is not reading; while it reads, the worker waits
                        # for the reactor to empty the spool, then hands over
                        # directly (a fast client's response does not go through
                        # the disk because the connection paused for a moment).
                        may_spool = self._buffering and self._paused
                    elif not self._paused:
                        if self._in_flight <= self._high_water:
                            break
                        may_spool = False
                    else:
                        may_spool = self._buffering and self._head_sent
                        if may_spool:
                            # Paused, nothing spooled: a short pause is usual for a
                            # fast client; spool only if it lasts.
                            now = time.monotonic()
                            if grace_ends is None:
                                grace_ends = now + self._handler.spool_grace
                            if now < grace_ends:
                                self._cond.wait(grace_ends - now)
                                continue
                    if may_spool:
                        if spool is None:
                            spool = ResponseSpool(self._handler.max_response_buffer)
                            self._response_spool = spool
                        if spool.room_for(size):
                            if spool.reserve(data):
                                reserved = spool
                            spooled = True
                            break
                    self._cond.wait()
                if not spooled:
                    self._in_flight += size
                    first = not self._head_sent
                    self._head_sent = True
                    if not first:
                        self._pending.append(data)
                        queue_delivery = not self._delivery_queued
                        self._delivery_queued = True
            if reserved is not None:
                # The file is written unlocked: a slow disk holds this thread only,
                # not the reactor (which takes the lock to pause, resume, deliver).
                try:
                    reserved.write_reserved(data)
                except OSError as error:
                    failed = error
                with self._cond:
                    reserved.commit(written=failed is None)
                    if failed is not None:
                        # Given up for the rest of the response: the worker waits
                        # for the client instead.
                        self._buffering = False
                        spooled = False
                    # The reactor may have looked while the bytes were not readable
                    # yet: unless a resume or a delivery will look again, ask it to.
                    pump = not (failed or self._paused or self._in_flight or self._gone)
                if pump:
                    self._call_from_thread(self._pump)
            if failed is None:
                break
            request = self._exchange.request
            _log.warn(
                "{method} {target}: cannot keep the response in a temporary file"
                " ({error}): its thread waits for the client",
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
                error=failed,
            )
        if spooled:
            return True
        if first:
            self._call_from_thread(
                self._deliver_first, self._status, self._reason, self._headers, data
            )
        elif queue_delivery:
            self._call_from_thread(self._deliver_pending)
        return True

    def _decide_buffering(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether this response may be spooled.

        The server's choice, or the application's ``X-Accel-Buffering: yes|no``
        (nginx reads the same field from an upstream; it is passed on here, for a
        proxy further in front).
        """
        asked = accel_buffering(headers)
        return self._handler.response_buffering if asked is None else asked

    def _start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._head_sent:
                    self._reraised = exc_info[1]  # nothing more of it may be sent
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._headers is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        # (_parse_status's cache, inline: a status seen before.)
        parsed = _status_cache.get(status) if type(status) is str else None
        code, reason = parsed if parsed is not None else _parse_status(status)
        facts = _header_facts(headers)
        self._headers = facts.fields
        self._declared_length = facts.declared_length
        self._status = code
        self._reason = reason
        limit = self._limit = facts.limit(self._mount_limit, self._mount_after)
        self._high_water = IN_FLIGHT_HIGH_WATER if limit is None else 0
        return self._write

    def _write(self, data: bytes) -> None:
        """The ``write()`` callable: send ``data`` now (PEP 3333 "The write() Callable")."""
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self._reraised is not None:
            raise _went_on(self._reraised)
        if data and not self._send(data) and not self._full:
            raise _disconnected("The client closed the connection", self._exchange.request)

    def _failed(self) -> None:
        """Log the exception being handled and answer 500 or abort (worker thread)."""
        _log_application_error(self._exchange.request)
        self._head_sent = True
        self._call_from_thread(self.answer_error)


def _send_whole(
    exchange: Exchange,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    data: bytes,
    *,
    room: int | None = None,
) -> None:
    """Answer with a body known whole: in one write, or in steps of its limit_rate.

    One write would go past the rate. Sent in steps, it is given the
    ``Content-Length`` a single write would have had (a download's size, for the
    client's progress), unless it has one or carries no body (HEAD, 204, 304).

    A body shorter than its ``Content-Length`` is answered 500: nothing of it is out
    yet, and sent, its head would promise bytes that never come (RFC 9112 6.3), a
    200 the client could only tell was broken by the connection ending under it.
    ``room`` is :func:`_body_room` of the response, if the caller has it.
    """
    if room is None:
        room = _body_room(exchange.request.method, status, headers)
    if room > len(data):
        request = exchange.request
        _log.error(
            "The application's response to {method} {target} has {size} body bytes for"
            " its Content-Length of {declared}: answered 500",
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            size=len(data),
            declared=room,
        )
        _answer_500(exchange)
        return
    limit = exchange.limit_rate
    if limit is not None and len(data) > step_for(limit[0]) and room:
        if room < 0:
            headers = [*headers, (b"Content-Length", b"%d" % len(data))]
        exchange.start_response(status, headers, reason)
        finish_paced(exchange, data)
        return
    exchange.start_response(status, headers, reason)
    exchange.finish(data)


def _went_on(error: BaseException) -> RuntimeError:
    """The error of an application that went on after start_response re-raised its exc_info.

    PEP 3333: with the head sent, start_response re-raises, which "in principle
    should abort the application", since "it is not safe for the application to
    attempt error output to the browser". One that catches the re-raise and goes on
    (yielding or writing its error page, or ending normally) would have its response
    finished as if whole: the part sent before the error, then whatever it adds, then
    the framing's end. The response is aborted instead, as for any failure once
    bytes are out, with the application's error as the cause in the log.
    """
    failure = RuntimeError(
        "The application went on after start_response re-raised its exc_info (the"
        " response head was sent): the response is aborted"
    )
    failure.__cause__ = error  # (as "raise ... from error" sets it)
    failure.__suppress_context__ = True
    return failure


def _answer_500(exchange: Exchange) -> None:
    """Answer ``exchange`` with the server's own 500 (its head not sent yet).

    The host's page for 500, if it has one, replaces the plain-text body (a 500 the
    application returns itself never gets here).
    """
    answer_error(exchange, 500, _ERROR_BODY)


def _log_application_error(request: RequestHead) -> None:
    """Log the exception being handled, raised by an application (any thread).

    A :class:`ClientDisconnected` it let through from this request's own wsgi.input
    or write() is the client's doing (the body was refused, or the client left): one
    line, since any client could fill the log with tracebacks at will. The client has
    its answer already, or is gone. From another request's input (kept past its
    request) it is the application's error.
    """
    method = request.method.decode("latin-1")
    target = request.target.decode("latin-1")
    error = sys.exc_info()[1]
    if isinstance(error, ClientDisconnected) and error.request is request:
        _log.info(
            "The application for {method} {target} stopped: {error}"
            " (raised by wsgi.input or write())",
            method=method,
            target=target,
            error=error,
        )
        return
    _log.failure(
        "Exception in the WSGI application for {method} {target}", method=method, target=target
    )


def _send_file_result(
    exchange: Exchange, status: int, reason: bytes, response: _FileResponse
) -> None:
    """Send a file-backed result from the reactor and close it when done (reactor)."""
    result = response.wrapper
    request = exchange.request
    if exchange.finished:
        _close_result(result, request)
        return
    exchange.start_response(status, response.headers, reason)
    method, target = request.method.decode("latin-1"), request.target.decode("latin-1")
    try:
        sent = exchange.send_file(result.filelike, response.offset, response.count)
    except Exception:
        _log.failure(
            "Sending a wsgi.file_wrapper response for {method} {target} failed",
            method=method,
            target=target,
        )
        exchange.abort()
        _close_result(result, request)
        return

    def done(_: object) -> None:
        exchange.finish()

    def failed(failure: Failure) -> None:
        # A client leaving mid-file is ordinary; a failure of the file is not.
        if not exchange.finished and not failure.check(*CLIENT_GONE):
            _log.failure(
                "Sending a wsgi.file_wrapper response for {method} {target} failed",
                failure=failure,
                method=method,
                target=target,
            )
        exchange.abort()

    sent.addCallbacks(done, failed)
    sent.addBoth(lambda _: _close_result(result, request))


@implementer(IPushProducer)
class _InlineCall:
    """One application call in the reactor thread (``threads = 0``).

    The body is collected first, so the application never waits for the network; a
    streamed result is pulled only while the client keeps up (this object is the
    exchange's push producer).
    """

    def __init__(
        self, handler: WSGIHandler, exchange: Exchange, script_name: bytes, path_info: bytes
    ) -> None:
        self._handler = handler
        self._exchange = exchange
        self._script_name = script_name
        self._path_info = path_info
        self._body: IO[bytes] | None = None
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] | None = None
        self._mount_limit = exchange.limit_rate
        self._started = False
        self._result: Iterable[bytes] | None = None
        self._iterator: Iterator[bytes] | None = None
        self._paused = False
        self._producing = False
        self._errors: _ErrorStream | None = None
        # The error start_response re-raised once the head was sent (see _went_on).
        self._reraised: BaseException | None = None
        # Whether pieces pulled in one batch of events may be written as one (see
        # _produce): decided with the head. The pieces pulled and not written yet
        # (None: not coalescing), which any other write sends first.
        self._coalesce = False
        self._room = -1  # (_body_room of the response, once start_response is called)
        self._pending: list[bytes] | None = None
        self._pending_size = 0

    def start(self) -> None:
        """Receive the body if there is one, then run the application."""
        exchange = self._exchange
        request = exchange.request
        if request.chunked or request.content_length:  # (has_body, inline)
            _BodySpool(exchange, self._run)  # (which drops a body that fails)
        else:
            self._run(io.BytesIO(), None)

    # -- the call --------------------------------------------------------------------------

    def _run(self, body: IO[bytes], size: int | None) -> None:
        exchange = self._exchange
        environ = self._handler.environ_for(exchange, self._script_name, self._path_info)
        environ["wsgi.input"] = body
        if size is not None:
            _received_whole(environ, size)
            # Closed in _exchange_closed, when the exchange ends.
            self._body = body
            exchange.on_close(self._exchange_closed)
        self._errors = environ["wsgi.errors"]
        try:
            result = self._handler.app(environ, self._start_response)
        except (Exception, SystemExit):
            self._failed()
            return
        self._result = result
        accel = self._handler.accel
        if accel is not None and not self._started and self._headers is not None:
            target = _accel_target(self._headers)
            if target is not None:
                self._started = True
                self._close()
                serve_accel(exchange, accel, target, self._headers)
                return
        try:
            if not self._started and self._headers is not None:
                # (Only a FileWrapper may be one: the call is skipped for the others.)
                file_response = (
                    _file_response(
                        result, self._headers, method=exchange.request.method, status=self._status
                    )
                    if type(result) is FileWrapper
                    else None
                )
                if file_response is not None:
                    self._result = None  # closed by _send_file_result
                    self._close()  # (what the application logged is flushed)
                    self._started = True
                    _send_file_result(exchange, self._status, self._reason, file_response)
                    return
                if type(result) is list or type(result) is tuple:
                    # (_joined's usual case, inline: one bytes item.)
                    data = (
                        result[0]
                        if len(result) == 1 and type(result[0]) is bytes
                        else _joined(result)
                    )
                    self._started = True
                    self._close()
                    _send_whole(
                        exchange, self._status, self._reason, self._headers, data, room=self._room
                    )
                    return
            self._iterator = iter(result)
        except Exception:
            self._failed()
            return
        if self._body is None:
            # Streaming: stop iterating and close the result if the client goes.
            exchange.on_close(self._exchange_closed)
        exchange.registerProducer(self, True)
        self._produce()

    def _produce(self) -> None:
        """Pull and send chunks until the client falls behind or the result ends."""
        if self._producing:
            return
        self._producing = True
        exchange = self._exchange
        # While a batch of events is handled, the transport holds small writes until
        # its end anyway (see twistwsgi.http.transport): the pieces pulled meanwhile
        # are written as one (one chunk), short of the transport's hold limit, rather
        # than framed and held one by one. Only for a response of unknown length,
        # not paced: one with a Content-Length must stop being pulled the moment
        # it is complete (body_full), and a paced one is paused by its writes.
        # (Decided at the first piece: a generator calls start_response in it.)
        in_batch = batch_open()
        try:
            while not self._paused and not exchange.finished and self._iterator is not None:
                try:
                    if exchange.body_full:
                        # Nothing more can be sent (HEAD, 204, 304, Content-Length
                        # reached): stop pulling, as PEP 3333 asks; an endless
                        # stream would hold the reactor.
                        raise StopIteration
                    data = next(self._iterator)
                except StopIteration:
                    if self._reraised is not None:
                        raise _went_on(self._reraised) from self._reraised
                    self._iterator = None
                    self._write_pending()
                    self._close()
                    if not self._started:
                        self._start_now()
                    exchange.unregisterProducer()
                    exchange.finish()
                    return
                if self._reraised is not None:
                    raise _went_on(self._reraised)
                if type(data) is not bytes:
                    raise TypeError(_not_bytes(data))
                if not data:
                    continue
                pending = self._pending
                if pending is None:
                    if not (in_batch and self._coalesce):
                        self._write(data)
                        continue
                    pending = self._pending = []
                if not self._started:
                    self._start_now()  # (as _write: the head can no longer change)
                if self._pending_size + len(data) > _JOIN_LIMIT:
                    # Written before they pass the hold limit, so that the batch
                    # holds them: the next such write then goes through Twisted's
                    # buffer, which pauses this producer past its size, and the
                    # reactor goes on to other connections. Written at the limit or
                    # past it, each went straight to the socket, and the pulling
                    # stopped only once the kernel's send buffer was full (a client
                    # that takes everything held the reactor for megabytes).
                    self._write_pending()
                    if len(data) >= _JOIN_LIMIT:
                        self._write(data)  # alone (as before: at once, not held)
                        continue
                pending.append(data)
                self._pending_size += len(data)
            self._write_pending()  # paused, or the client left
        except Exception:
            # What was pulled before the failure goes out first, as it would have
            # one piece at a time.
            with contextlib.suppress(Exception):
                self._write_pending()
            self._failed()
        finally:
            self._pending = None
            self._producing = False

    def _write_pending(self) -> None:
        """Write the pieces pulled and not written yet, as one; empty the list."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        if not self._exchange.finished:
            self._exchange.write(data)

    def _start_now(self) -> None:
        if self._headers is None:
            raise RuntimeError("The application returned without calling start_response")
        self._started = True
        self._exchange.start_response(self._status, self._headers, self._reason)

    def _start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._started:
                    self._reraised = exc_info[1]  # nothing more of it may be sent
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._headers is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        # (_parse_status's cache, inline: a status seen before.)
        parsed = _status_cache.get(status) if type(status) is str else None
        code, reason = parsed if parsed is not None else _parse_status(status)
        facts = _header_facts(headers)
        self._headers = facts.fields
        self._status = code
        self._reason = reason
        # Nothing is sent yet (else exc_info raised above): the response goes at
        # the mount's limit_rate, or at the one its X-Accel-Limit-Rate asks.
        # (facts.limit and _content_room, inline: once per request on the hot path.)
        exchange = self._exchange
        limit = self._mount_limit
        if facts.names_limit_rate:
            limit = asked_limit(facts.fields, limit, exchange.limit_rate_after)
        exchange.limit_rate = limit
        # (Computed here once: _send_whole checks a list body against it too.)
        if exchange.request.method == b"HEAD" or code in _NO_CONTENT:
            room = 0
        else:
            room = facts.declared_length
        self._room = room
        self._coalesce = limit is None and room < 0 and not facts.has_content_length
        return self._write

    def _write(self, data: bytes) -> None:
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        if self._reraised is not None:
            raise _went_on(self._reraised)
        if self._exchange.finished:
            raise _disconnected("The client closed the connection", self._exchange.request)
        if not data:
            return
        if not self._started:
            self._start_now()
        if self._pending:
            # Called by the application while its iterable is being pulled: after
            # the pieces it yielded before.
            self._write_pending()
        self._exchange.write(data)

    def _close(self) -> None:
        result, self._result = self._result, None
        # (A list has no close: the usual result skips the look-up and the call.)
        if result is not None and type(result) is not list:
            _close_result(result, self._exchange.request)
        errors = self._errors
        if errors is not None and errors._partial:
            errors.flush()

    def _failed(self) -> None:
        _log_application_error(self._exchange.request)
        self._iterator = None
        self._close()
        exchange = self._exchange
        if exchange.finished:
            return
        if self._started:
            exchange.abort()
        else:
            self._started = True
            _answer_500(exchange)

    # -- producer ---------------------------------------------------------------------------

    def pauseProducing(self) -> None:
        """The client stopped reading: stop pulling chunks."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The client reads again: pull more."""
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._exchange_closed(None)

    def _exchange_closed(self, reason: Failure | None) -> None:
        self._iterator = None
        self._close()
        if self._body is not None:
            self._body.close()
            self._body = None
