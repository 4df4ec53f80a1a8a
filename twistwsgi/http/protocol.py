"""The HTTP/1.1 server protocol: a Twisted ``Protocol`` driving the ``httptools`` parser.

This module owns everything about the wire between the socket and the
:class:`~twistwsgi.http.exchange.Exchange`: request parsing and the checks llhttp leaves
to the server, limits and timeouts, persistent connections, pipelining (responses
strictly in request order), ``Expect: 100-continue``, response framing (length,
chunked, or close-delimited), flow control in both directions, error responses, and
the lingering close after an error. Handlers see none of it. Every response goes to
the response log (the access log): each dispatched exchange when it ends, and each
refusal the protocol answered itself, as a :class:`Refusal`.

Flow control. Reading stops (``transport.pauseProducing``) while a pipelined request
waits behind the one being answered, while a handler holds more unread body than
:data:`BODY_HIGH_WATER`, and after an error. Writing: the protocol is registered as the
transport's streaming producer for the life of the connection and forwards
``pauseProducing``/``resumeProducing`` to the producer a handler registered on its
exchange, so a handler never outruns its client.

Timeouts use one lazily re-armed ``IDelayedCall`` per connection: moving a deadline
later costs nothing, the call re-arms itself when it fires early.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import select
import socket
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import IO, TYPE_CHECKING, Any, Final

import httptools
from OpenSSL import SSL
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolNegotiationFactory,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from twistwsgi.client_certificates import ClientCertificate, from_connection
from twistwsgi.http import rules
from twistwsgi.http.accepting import AcceptFailures
from twistwsgi.http.compression import GzipStream, declared_length, gzip_plan
from twistwsgi.http.exchange import Handler, LogNotes
from twistwsgi.http.pacing import ResponsePace
from twistwsgi.http.plain_on_tls import PLAIN_HTTP_REASON, watch_for_plain_http
from twistwsgi.http.request import (
    UNREAD_BODY,
    Address,
    ErrorPage,
    ErrorPages,
    PartialRequest,
    PreparedHeaders,
    RequestHead,
    Route,
    describe_peer,
    peer_address,
)
from twistwsgi.http.rules import RequestError
from twistwsgi.http.sendfile import Pacing, send_file
from twistwsgi.http.settings import HttpSettings
from twistwsgi.http.transport import send_before_abort, took_some, unsent_bytes, write_now
from twistwsgi.http.wire import DateCache, chunk, status_line
from twistwsgi.proxy_header import ProxyHeader
from twistwsgi.proxy_protocol import socket_beneath

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport

    from twistwsgi.metrics import RequestMetrics

__all__ = [
    "ALPN_PROTOCOLS",
    "BODY_HIGH_WATER",
    "HTTP11Exchange",
    "HTTP11Protocol",
    "HTTPFactory",
    "Refusal",
    "ResponseLog",
    "Tunnel",
]

_log = Logger(namespace="twistwsgi.http")

#: The protocols a TLS client may choose over ALPN (RFC 7301), preferred first. Both
#: are in the IANA ALPN registry: ``curl --http1.0`` offers only the second, and nginx
#: accepts it. Never ``h2``: this server speaks HTTP/1 only.
ALPN_PROTOCOLS = (b"http/1.1", b"http/1.0")
#: Unread request body the protocol buffers for a handler before it stops reading.
BODY_HIGH_WATER = 256 * 1024
#: Bytes asked of the socket per read while a large request body streams in. Twisted
#: reads 64 KiB at a time; for a 10 MB upload over loopback, 256 KiB reads measured
#: about 25% more uploads per second (fewer reads, fewer trips through the reactor).
#: Only bodies of at least :data:`LARGE_BODY` get it: a recv allocates its whole
#: buffer before shrinking it, which small requests should not pay for. (Twisted's
#: write buffer pauses its producer past the same ``bufferSize``: a response written
#: during such an upload may buffer up to this much, still bounded.)
LARGE_BODY_READ_SIZE = 256 * 1024
LARGE_BODY = 128 * 1024
#: A request with a body is handed to its handler once the body is complete or this
#: much of it has arrived: small bodies are received whole first, so a slow client
#: never holds a worker thread and a malformed body is refused before any handler
#: sees the request (nginx buffers request bodies for the same reasons). A request
#: with ``Expect: 100-continue`` is handed over at once: the handler decides.
DISPATCH_BUFFER = 64 * 1024
#: Seconds to keep reading (and discarding) after an error response, so the client
#: sees the response instead of a reset caused by closing with unread data
#: (RFC 9112 9.6, "tear-down"; nginx's lingering close).
LINGER_TIMEOUT = 5.0
#: Pipelined requests parsed ahead of the one being answered: llhttp parses a whole
#: read at once, and one 64 KiB read can hold some 2,000 tiny requests. A read larger
#: than :data:`PIPELINE_SLICE` is parsed a slice at a time; once more than this many
#: wait, the rest is held back as unparsed bytes until the queue has room (nginx too
#: keeps unparsed bytes, not parsed requests), and reading stays paused meanwhile. At
#: most this many plus what one slice completes (some 40 tiny requests) are queued.
MAX_PIPELINED = 16
PIPELINE_SLICE = 1024
#: Requests queued on one connection, at most, whatever the reads: a read that begins
#: inside a request body is parsed whole, so many requests pipelined behind a body can
#: still arrive at once. The one past this is refused (429, RFC 6585 4) after the
#: requests before it are answered, and the connection closes.
MAX_QUEUED = 8 * MAX_PIPELINED

_CRLF0 = b"0\r\n\r\n"
#: The connection options of a request without a ``Connection`` field.
_NO_OPTIONS: frozenset[bytes] = frozenset()


def _find_bare_cr(data: bytes, start: int) -> int:
    """Where the first CR at or after ``start`` that no LF follows is (RFC 9112 2.2).

    -1 if there is none; a CR that is the last byte counts (its LF may never come).
    A ``find`` per CR rather than a regular expression: the CRs of a chunked body's
    framing are few, and ``find`` skips what lies between at ``memchr`` speed,
    where the regular expression (a CR, then a negative lookahead for LF) went
    through a 256 KiB read of chunk data at 120 us (``find``: 2.4 us).
    """
    while True:
        at = data.find(b"\r", start)
        if at < 0 or data[at + 1 : at + 2] != b"\n":
            return at
        start = at + 2


def _request_parser(protocol: HTTP11Protocol) -> httptools.HttpRequestParser:
    """Make llhttp's request parser, calling back ``protocol``, leaving persistence to it.

    The protocol decides whether a connection persists (RFC 9112 9.3) and reads
    nothing more once it does not. llhttp decides too, and after a message it
    takes to close the connection it refuses whatever follows; it counts
    ``Proxy-Connection: close``, which is no HTTP field, so a client that sent it
    had the next request refused on a connection the response had kept open.
    """
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_keep_alive=True)
    return parser


_BARE_CR_BEFORE_REQUEST = RequestError(400, "Bare CR before the request line")
_HEAD_END = b"\r\n\r\n"  # the empty line that ends a head (bare LFs are refused)
# The ways it may begin in one read and end in the next: the bytes before and after.
_HEAD_END_SPLITS = tuple((_HEAD_END[: 4 - cut], _HEAD_END[4 - cut :]) for cut in (1, 2, 3))
_CR_LF = frozenset(b"\r\n")
# How a request line ends after its target, for each version served (RFC 9112 3).
_VERSION_11_LINE_END = b" HTTP/1.1\r\n"
_VERSION_10_LINE_END = b" HTTP/1.0\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The short way for a read that is one simple head (_take_simple_head).
_simple_head = rules.SIMPLE_HEAD.fullmatch
_simple_fields = rules.SIMPLE_FIELD.findall
# The fields the short way looks at: Host and Connection it reads, the rest it declines.
_SIMPLE_HEAD_SPECIAL = frozenset((b"host", b"connection")) | rules.NOT_SIMPLE_FIELDS


#: Bytes kept after an Upgrade request head while its answer is pending.
UPGRADE_TAIL_LIMIT = 64 * 1024


class _Read(Enum):
    """Where the parser is in the current request message."""

    IDLE = "idle"  # between messages: no byte of the next request yet
    HEAD = "head"  # request line and header section
    BODY = "body"  # message body (and trailers)
    STOPPED = "stopped"  # no more parsing on this connection (error, upgrade, closing)
    TUNNEL = "tunnel"  # switched protocols: bytes go to a handler's tunnel receiver


# The request path names these states as module constants, not as _Enum.MEMBER:
# on Python 3.11 every attribute of an Enum class goes through EnumType's
# __getattr__ hook (removed in 3.12), about 70 ns a lookup against 10 for a
# global, and a request named them some 30 times.
_READ_IDLE: Final = _Read.IDLE
_READ_HEAD: Final = _Read.HEAD
_READ_BODY: Final = _Read.BODY
_READ_STOPPED: Final = _Read.STOPPED
_READ_TUNNEL: Final = _Read.TUNNEL


class _Framing(Enum):
    """How the response body is delimited (RFC 9112 6.3)."""

    NONE = "none"  # no body at all (HEAD, 1xx, 204, 304)
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # until the connection closes (HTTP/1.0 without a length)


_FRAMING_NONE: Final = _Framing.NONE
_FRAMING_LENGTH: Final = _Framing.LENGTH
_FRAMING_CHUNKED: Final = _Framing.CHUNKED
_FRAMING_CLOSE: Final = _Framing.CLOSE


class _Timeout(Enum):
    """What the connection's read-side deadline stands for.

    (The send deadline, for a client that stopped reading the response, is kept
    apart: it must hold whatever the read side is doing.)
    """

    IDLE = "idle"  # close quietly: no request bytes pending
    HEAD = "head"  # 408: the head took too long
    BODY = "body"  # 408: the body stalled
    LINGER = "linger"  # close: done discarding after an error


_TIMEOUT_IDLE: Final = _Timeout.IDLE
_TIMEOUT_HEAD: Final = _Timeout.HEAD
_TIMEOUT_BODY: Final = _Timeout.BODY
_TIMEOUT_LINGER: Final = _Timeout.LINGER


class Refusal:
    """A request the protocol refused and answered itself, as the response log sees it.

    The protocol answers these without any handler (malformed requests, limits,
    timeouts: the table of docs/http.md). Like an ended :class:`HTTP11Exchange`, it
    has ``request`` (with ``method``, ``target``, ``version``, ``peer`` and
    ``header()``), ``status`` and ``body_sent``, so a response log can take both.

    Attributes:
        request: the accepted head when the refusal came after it (a body that was
            malformed, too large or too slow), else what had been read of it.
        error: the refusal (its status and the reason given in the response body).
        status: the status of the error response.
        body_sent: body bytes of the error response (0 for an answer to HEAD).
        client_closed: false: the response was sent (as for :class:`HTTP11Exchange`).
        started: when the first byte of the request arrived (clock seconds).
    """

    __slots__ = ("body_sent", "error", "request", "started", "status")

    client_closed = False
    log_notes: LogNotes | None = None  # no handler saw it
    remote_user: str | None = None
    access_log: Callable[[Any], None] | None = None  # (the router finds it: access_log_for)

    def __init__(
        self, request: RequestHead | PartialRequest, error: RequestError, started: float
    ) -> None:
        self.request = request
        self.error = error
        self.status = error.status
        self.body_sent = 0
        self.started = started


#: Called once per response: an ended exchange that had been dispatched, or a
#: refusal the protocol answered itself.
ResponseLog = Callable[["HTTP11Exchange | Refusal"], None]


@implementer(IProtocolNegotiationFactory)
class HTTPFactory(Factory):
    """Builds :class:`HTTP11Protocol` connections that all answer with one handler.

    The factory is what a listening endpoint needs
    (``serverFromString(reactor, "tcp:8080").listen(factory)``). It also tracks its
    connections so that :meth:`shut_down` can close the idle ones and let the busy
    ones finish.

    Attributes:
        handler: answers every exchange.
        settings: limits and timeouts.
        clock: source of time and timers.
        response_log: called once per ended exchange and per refusal (the access log).
        responses: how many exchanges and refusals have ended (what ``--max-requests``
            counts).
        connections: the live connections.
        date_cache: shared ``Date`` value.
        body_limit: the body limit of the mount a request is for, or ``None`` to
            use the settings' ``max_body`` for every request (see
            :meth:`~twistwsgi.routing.Router.body_limit`).
        shutting_down: set once :meth:`shut_down` was called.
        at_capacity: whether accepting is paused at ``max_connections``.
    """

    noisy = False  # no "Starting factory" line per listener

    def __init__(
        self,
        handler: Handler,
        *,
        settings: HttpSettings,
        clock: IReactorTime,
        response_log: ResponseLog | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.clock = clock
        self.response_log = response_log
        self.responses = 0
        self.connections: set[HTTP11Protocol] = set()
        #: Connections accepted so far (the metrics' counter).
        self.accepted = 0
        #: What counts the metrics of this factory's exchanges, if anything
        #: (:class:`~twistwsgi.metrics.RequestMetrics`, fed through response_log).
        self.metrics: RequestMetrics | None = None
        self.date_cache = DateCache(settings.server_header)
        # The body limit of the mount a request goes to, if mounts have their own
        # (a Router's body_limit); None: the settings' max_body for every request.
        self.body_limit: Callable[[RequestHead], int | None] | None = None
        # The error pages of the host a request is for (a Router's
        # error_pages_for); None: the plain bodies for every refusal.
        self.error_pages: Callable[[RequestHead | PartialRequest], ErrorPages | None] | None = None
        self.shutting_down = False
        self._all_closed: list[Deferred[None]] = []
        # Listening ports to pause at max_connections (see connection_opened).
        self._listeners: list[Any] = []
        # Whether accepting is paused at max_connections (read for every response).
        self.at_capacity = False
        self._over_limit_logged = False
        # The periodic look for idle connections to close while at the limit.
        self._drain_call: Any = None
        # When "connections open (max_connections)" was last logged, and whether
        # the current stay at the limit was (its "again" line is logged then only).
        self._capacity_logged_at: float | None = None
        self._capacity_logged = False
        #: The accept failures of the listening ports (descriptors run out).
        self.accept_failures = AcceptFailures(clock, may_resume=self._may_accept)

    def acceptableProtocols(self) -> list[bytes]:
        """The protocols offered over TLS ALPN (RFC 7301): :data:`ALPN_PROTOCOLS`.

        Twisted 26.10 always installs an ALPN callback on TLS servers, and with no
        protocol to choose it fails the handshake of every client that offers ALPN
        (curl, browsers) with an "internal error" alert. The ``ssl:`` listeners the
        command line builds choose from the same list with a callback of their own
        (``twistwsgi.cli``), which refuses a client offering none of them as RFC
        7301 says.
        """
        return list(ALPN_PROTOCOLS)

    def buildProtocol(self, addr: IAddress | None) -> HTTP11Protocol:
        """Create the protocol for one accepted connection."""
        protocol = HTTP11Protocol(self)
        protocol.factory = self
        return protocol

    def shut_down(self) -> Deferred[None]:
        """Close idle connections now and busy ones after their current response.

        Returns:
            A Deferred that fires once every connection is closed. The caller decides
            how long to wait (the graceful timeout) before calling :meth:`abort_all`.
        """
        self.shutting_down = True
        self._stop_draining()
        for connection in list(self.connections):
            connection.close_when_idle()
        return self._when_all_closed()

    def serve_again(self) -> None:
        """Accept connections again after :meth:`shut_down` (a restarted service)."""
        self.shutting_down = False

    def abort_all(self) -> None:
        """Drop every remaining connection at once."""
        for connection in list(self.connections):
            connection.abort_connection()

    def _when_all_closed(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if not self.connections:
            waiter.callback(None)
        else:
            self._all_closed.append(waiter)
        return waiter

    def clients_waiting(self) -> bool:
        """Whether, at ``max_connections``, a connection waits in a paused port's backlog.

        The listening socket is readable then. Keep-alive connections give their
        place up for those waiting, and only then: with nobody waiting, a pool of
        clients sized to the limit keeps its connections. Below the limit nobody
        waits. A port whose socket cannot be asked counts as waited on, and so does
        a factory given no port (its clients are unknown).
        """
        if not self.at_capacity:
            return False
        if not self._listeners:
            return True
        for port in self._listeners:
            fileno = getattr(port, "fileno", None)
            if fileno is None:
                return True
            try:
                poller = select.poll()
                poller.register(fileno(), select.POLLIN)
                if poller.poll(0):
                    return True
            except (OSError, ValueError):
                continue  # closed meanwhile
        return False

    def add_listener(self, port: Any) -> None:
        """Pause ``port`` (its ``stopReading``) while the connection limit is reached."""
        self._listeners.append(port)
        if self.at_capacity:
            port.stopReading()
        self.accept_failures.watch(port)
        read = getattr(port, "doRead", None)
        if read is not None and type(getattr(port, "numberAccepts", None)) is int:
            # Twisted's tcp.Port accepts up to numberAccepts connections per read
            # (100, 20 more after each full batch, or as many as the last batch
            # took). Near max_connections the batch is cut to the room left just
            # before each read, so those beyond wait in the backlog (as with nginx,
            # which accepts one at a time by default) rather than being accepted
            # only to be closed (see connection_opened).
            def read_within_limit() -> None:
                self._fit_accept_batch(port)
                read()

            port.doRead = read_within_limit

    def remove_listeners(self) -> None:
        """Forget the listening ports (they are closing): nothing resumes them."""
        self._listeners = []
        self.accept_failures.stop()

    def _may_accept(self, port: Any) -> bool:
        """Whether ``port``, rested after an accept failure, may read again."""
        return (
            port in self._listeners
            and not self.at_capacity
            and not self.shutting_down
            and _still_listening(port)
        )

    def update_settings(self, settings: HttpSettings) -> None:
        """Use ``settings`` from now on (a reload); a new connection limit applies at once."""
        if settings.server_header != self.settings.server_header:
            self.date_cache = DateCache(settings.server_header)
        self.settings = settings
        self._check_capacity()

    def connection_opened(self, connection: HTTP11Protocol) -> bool:
        """Track a new connection (called by the protocol); say whether it may stay.

        Pausing the listening port takes effect at its next read: Twisted's accept
        loop goes on accepting what is already waiting in the backlog (up to its
        ``numberAccepts``, 100 and growing under load) in the read that reached the
        limit. Those connections are refused here, closed at once without a word,
        as nginx closes what it accepts when worker_connections are all in use, so
        the limit holds and the descriptors stay free.
        """
        self.accepted += 1
        limit = self.settings.max_connections
        if limit and len(self.connections) >= limit:
            if not self._over_limit_logged:
                self._over_limit_logged = True
                _log.warn(
                    "Connections accepted beyond max_connections ({limit}) are closed at"
                    " once until one of the open ones closes",
                    limit=limit,
                )
            return False
        self.connections.add(connection)
        if not self.at_capacity:
            self._check_capacity()
        return True

    def connection_closed(self, connection: HTTP11Protocol) -> None:
        """Forget a closed connection; fire shutdown waiters when none are left."""
        self.connections.discard(connection)
        if self.at_capacity:
            self._check_capacity()
        if not self.connections and self._all_closed:
            waiters, self._all_closed = self._all_closed, []
            for waiter in waiters:
                waiter.callback(None)

    def _check_capacity(self) -> None:
        """Pause or resume accepting against ``max_connections``.

        As nginx at worker_connections: at the limit, stop accepting (new connections
        wait in the listen backlog instead of costing a descriptor each, and past the
        open-files limit being accepted only to be closed), and, while clients
        wait, close idle connections so that they get in (see :meth:`_drain_idle`).
        """
        limit = self.settings.max_connections
        full = bool(limit) and len(self.connections) >= limit
        if full and not self.at_capacity:
            self.at_capacity = True
            now = self.clock.seconds()
            last = self._capacity_logged_at
            # Once per CAPACITY_LOG_INTERVAL at most: a server held at its limit
            # reaches it again each time a connection closes.
            self._capacity_logged = last is None or now - last >= CAPACITY_LOG_INTERVAL
            if self._capacity_logged:
                self._capacity_logged_at = now
                _log.warn(
                    "{count} connections open (max_connections): new ones wait until one"
                    " closes, idle ones are closed for them",
                    count=len(self.connections),
                )
            for port in self._listeners:
                port.stopReading()
            self._drain_idle()
        elif not full and self.at_capacity:
            self.at_capacity = False
            self._over_limit_logged = False
            self._stop_draining()
            listeners = self._listeners
            if self._capacity_logged and listeners and not self.shutting_down:
                _log.info("Accepting connections again")
            if len(listeners) > 1:
                # Each resume starts with another port: the reactor reports the
                # first one ready first, and its accept batch would take all the
                # room each time, leaving clients of the other ports waiting.
                listeners.append(listeners.pop(0))
            for port in listeners:
                if _still_listening(port):
                    port.startReading()

    def _drain_idle(self) -> None:
        """While clients wait at the limit, close idle connections, longest idle first.

        As nginx drains its reusable connections (keep-alive ones, and those that
        have not sent a request yet) when it needs one: up to
        :data:`_IDLE_DRAIN_BATCH` at a time. A connection idle for less than
        :data:`IDLE_GRACE` is spared: its client, just answered, may be sending its
        next request, which the close would lose (that one is answered with
        ``Connection: close`` instead). Repeated every :data:`DRAIN_INTERVAL` while
        at the limit: a client that arrives later is not seen otherwise.
        """
        self._drain_call = None
        if not self.at_capacity or self.shutting_down:
            return
        if self.clients_waiting():
            cutoff = self.clock.seconds() - IDLE_GRACE
            drained = 0
            for connection in sorted(self.connections, key=_idle_since):
                if connection.idle_since > cutoff:
                    break
                if connection.close_if_idle():
                    drained += 1
                    if drained >= _IDLE_DRAIN_BATCH:
                        break
        if self.at_capacity:
            self._drain_call = self.clock.callLater(DRAIN_INTERVAL, self._drain_idle)

    def _stop_draining(self) -> None:
        call, self._drain_call = self._drain_call, None
        if call is not None and call.active():
            call.cancel()

    def _fit_accept_batch(self, port: Any) -> None:
        """Let ``port`` accept no more in its next batch than the limit leaves room for."""
        limit = self.settings.max_connections
        if limit:
            room = max(limit - len(self.connections), 1)
            port.numberAccepts = min(port.numberAccepts, room)


def _still_listening(port: Any) -> bool:
    """Whether a listening port may read again: not closed or closing.

    A port closed without :meth:`HTTPFactory.remove_listeners` (the factory's API is
    public) has no descriptor left; reading from it would raise inside the
    connection's close.
    """
    return bool(getattr(port, "connected", True)) and not getattr(port, "disconnecting", False)


#: Idle connections closed at once for clients waiting at the connection limit
#: (nginx's ngx_drain_connections closes 32 at a time).
_IDLE_DRAIN_BATCH = 32
#: Seconds a connection must have been idle before it is closed for a waiting
#: client: a client that was just answered may be sending its next request.
IDLE_GRACE = 0.5
#: Seconds between looks for waiting clients while at the connection limit.
DRAIN_INTERVAL = 0.25
#: Seconds between two "connections open (max_connections)" log lines, at least.
CAPACITY_LOG_INTERVAL = 10.0


def _idle_since(connection: HTTP11Protocol) -> float:
    return connection.idle_since


def _is_ip_address(host: str, port: int) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address and ``port`` a TCP port (or 0)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return 0 <= port <= 65535


@implementer(IPushProducer)
class HTTP11Protocol(Protocol):
    """One HTTP/1.1 connection (reactor thread only).

    The parser callbacks (``on_*``) are called by ``httptools`` from inside
    ``feed_data``; they collect the request and raise :class:`RequestError` to refuse
    it. Exchanges are dispatched to the handler after ``feed_data`` returns, never
    from inside a callback, so a handler that answers synchronously cannot re-enter
    the parser.
    """

    transport: ITransport

    # A request line whose method llhttp refused: its bytes from its first one, while
    # they do not yet decide between 501 and 400 (see _method_refused); parsing has
    # stopped. And the start of a request line cut inside its method by the end of a
    # read: (the heads accepted before it, its bytes so far), and where it began in
    # the last read _feed cut into pieces. Class attributes until a connection needs
    # them: they cost an idle connection nothing.
    _method_line: bytes | None = None
    _line_start: tuple[int, bytes] | None = None
    _line_from = 0
    # Whether the request line kept in _message_read went on past the end of the last
    # read parsed: the next read is added to it (see _parse). A class attribute too.
    _line_open = False

    def __init__(self, factory: HTTPFactory) -> None:
        self._factory = factory
        self._settings = factory.settings
        self._clock = factory.clock
        self._parser = _request_parser(self)
        self._read = _READ_IDLE
        # Queue of requests in arrival order: the first is being answered; a
        # Refusal entry is an error response to send in its turn.
        self._queue: deque[HTTP11Exchange | Refusal] = deque()
        self._parsing: HTTP11Exchange | None = None
        self._read_pauses: set[str] = set()
        self._write_paused = False
        self._response_producer: IPushProducer | None = None
        # While the response is held back for its limit_rate: the timer that lets it
        # go on (see hold_response).
        self._paced: IDelayedCall | None = None
        self._close_when_idle = False
        self._requests = 0  # heads accepted on this connection (keepalive_requests)
        self._opened_at = 0.0  # (keepalive_time)
        self._retiring = False  # the last request keepalive_requests or _time allow came
        self._closed = False
        self._dropped = False  # the server itself dropped the connection (abort)
        self._scheme = "http"
        self._peer: Address | None = None
        self._local: Address | None = None
        self._addresses_pending = False
        # Current message being parsed.
        self._url = b""
        # The bytes of the current message from its first one (or from empty lines
        # before it) until its head is complete: the read it began in, or the piece of
        # it _feed cut, with the reads after it while its request line goes on. Where
        # its version is read cheaply, and its protocol checked (on_headers_complete).
        self._message_read: bytes | None = None
        # Whether llhttp has read the whole request line of the current message
        # (only then is its version the message's own).
        self._line_read = False
        # Whether llhttp refused a request-target before handing any of it over (the
        # method was read whole then); parsing ends with the refusal.
        self._target_refused = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._head_bytes = 0
        # When the current request's first byte arrived (clock seconds).
        self._head_began = 0.0
        # A head accepted, then refused before its exchange was made (413 from
        # Content-Length, too many pipelined): what its refusal is about.
        self._refused_head: RequestHead | None = None
        # The body limit of the request being read (the server's or its mount's).
        self._max_body = factory.settings.max_body
        # Since when the connection waits for a request (clock seconds; kept while
        # one is in progress): the connection limit closes the longest idle first.
        self.idle_since = factory.clock.seconds()
        self._host: bytes | None = None
        self._content_length: bytes | None = None
        self._default_read_size: int | None = None  # set while large-body reads are on
        self._transfer_encodings: list[bytes] | None = None
        self._connection: bytes | None = None
        self._expect: bytes | None = None
        self._body_bytes = 0
        # The Content-Length of a body of known length (0 for a chunked one: see
        # _body_data_ahead). Bytes before it are body data, whatever they are
        # (_parse_around_crs steps over them).
        self._body_until = 0
        self._chunked = False
        # The chunk-size line check (_feed): whether the bytes fed next start where
        # the stream is known to be (a chunk-size line or chunk data), the line read
        # so far, how many bytes of chunk data and its CRLF are left, whether a
        # chunked head has just been parsed, and the last bytes fed (a head's end
        # may begin in one read and end in the next).
        self._chunk_lines = False
        self._chunk_line = b""
        self._chunk_skip = 0
        self._chunked_head_done = False
        self._fed_tail = b""
        # Whether llhttp is between two messages (it skips CR and LF there), and
        # whether the last read ended with a CR there (_parse_around_crs).
        self._between_messages = True
        self._cr_pending = False
        self._upgraded = False
        self._upgrade_tail: bytes | None = None
        self._tunnel: Any = None
        # The Upgrade request of the tunnel, logged when the connection ends.
        self._tunnel_exchange: HTTP11Exchange | None = None
        self._skipped_body: _SkippedBody | None = None
        # Bytes of a body read since the last body byte (framing, trailers).
        self._framing_bytes = 0
        self._trailer_count = 0
        # Received bytes not parsed yet: pipelined requests beyond MAX_PIPELINED.
        self._held = b""
        # _advance runs as a loop; a call from inside it only asks for another turn.
        self._advancing = False
        self._advance_again = False
        # The one deadline of this connection.
        self._deadline: float | None = None
        self._deadline_kind = _TIMEOUT_IDLE
        # When the client must have read more of the response (while writes wait).
        self._send_deadline: float | None = None
        # What the transport had not sent when that deadline was set.
        self._unsent_at_send_deadline: int | None = None
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0
        # The last Host value that passed validation: a connection sends the same
        # one with every request.
        self._valid_host = b""
        # What the client's TLS certificate says (tls_verify_client), read once the
        # handshake is done: at the first request of a TLS connection.
        self._client_certificate: ClientCertificate | None = None
        self._certificate_read = True

    # -- connection lifecycle ---------------------------------------------------

    def connectionMade(self) -> None:
        """Register as the transport's producer and start the first-request timer."""
        transport = self.transport
        self._peer = peer_address(transport.getPeer())
        self._local = peer_address(transport.getHost())
        # A wrapping transport may learn the addresses from the first bytes: a
        # PROXY protocol header names the client a load balancer accepted (see
        # twistwsgi.proxy_protocol), read before any byte reaches this protocol.
        self._addresses_pending = isinstance(transport, ProtocolWrapper)
        if ISSLTransport.providedBy(transport):
            self._scheme = "https"
            self._certificate_read = False
            watch_for_plain_http(transport, self._plain_http_refused)
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # Responses go out in one write; Nagle would only delay the next one.
            set_no_delay(True)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        if not self._factory.connection_opened(self):
            self.abort_connection()
            return
        if self._factory.shutting_down:
            self._lose_connection()
            return
        # A new connection gets the header timeout for its first request, as nginx's
        # client_header_timeout; an empty connection is then closed quietly.
        self.idle_since = self._set_deadline(self._settings.header_timeout, _TIMEOUT_IDLE)
        self._opened_at = self.idle_since

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell every pending exchange that its client is gone."""
        self._closed = True
        self._read = _READ_STOPPED
        self._deadline = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stop_pacing()
        queue, self._queue = self._queue, deque()
        for entry in queue:
            if isinstance(entry, HTTP11Exchange):
                entry.connection_lost(reason)
        if self._parsing is not None and self._parsing not in queue:
            self._parsing.connection_lost(reason)
        self._parsing = None
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.connection_lost(reason)
        exchange, self._tunnel_exchange = self._tunnel_exchange, None
        if exchange is not None:
            exchange.tunnel_closed()
        self._factory.connection_closed(self)

    def close_if_idle(self) -> bool:
        """Close now if waiting for a request, none of which has arrived; say whether.

        Waiting between requests or for the first one. Not when the next request's
        first bytes are already in the socket, not yet read: a close would reset
        the connection under it (it is answered instead).
        """
        if self._closed or self._queue or self._read is not _READ_IDLE or self._held:
            return False
        if self._bytes_waiting():
            return False
        self._lose_connection()
        self._send_fin_now()
        return True

    def _send_fin_now(self) -> None:
        """Send the FIN now, on a plain TCP connection with nothing left to send.

        Twisted's loseConnection closes on the reactor's next write event. A request
        the client sends in between (it has no FIN yet to tell it otherwise) stays
        unread, and the close then resets the connection under it: on a reload, a
        POST lost though it reached the server after the socket was found empty.
        Sent at once, the FIN reaches the client before it sends, and it opens a
        new connection (RFC 9112 9.3.1, 9.6); only a request already on the wire as
        the FIN leaves meets the close, the race of any keep-alive timeout. Over
        TLS the close_notify goes first, and bytes still buffered go before the FIN:
        those keep Twisted's close (as does a transport that cannot tell).
        """
        if self._scheme == "https" or unsent_bytes(self.transport) != 0:
            return  # (None: a transport that cannot tell, left to close as it does)
        try:
            handle = self._socket()
            if handle is not None:
                handle.shutdown(socket.SHUT_WR)
        except (OSError, AttributeError):  # (gone meanwhile: Twisted's close goes on)
            pass

    def _bytes_waiting(self) -> bool:
        """Whether the client sent bytes the reactor has not read yet."""
        try:
            handle = self._socket()
            if handle is None:
                return False
            return bool(handle.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (OSError, AttributeError):  # nothing to read (EAGAIN), or gone meanwhile
            return False

    def _socket(self) -> socket.socket | None:
        """The connection's socket, below TLS; ``None`` when it has none.

        Raises:
            AttributeError: the connection's socket is already gone (Twisted drops it
                when the connection ends, before the protocol hears of it).
        """
        handle: Any = self.transport
        while handle is not None and not isinstance(handle, socket.socket):
            get_handle = getattr(handle, "getHandle", None)
            inner = get_handle() if get_handle is not None else None
            # TLS's getHandle is its OpenSSL connection: the socket is below.
            below = getattr(handle, "transport", None)
            handle = inner if isinstance(inner, socket.socket) else below
        return handle

    def close_when_idle(self) -> None:
        """Close now if no request is in progress, else after the current response.

        A connection only discarding the body of a request already answered closes
        now too (lingering): a shutdown would otherwise wait for an upload of any
        size, then for the keep-alive timeout. One whose next request's first bytes
        are in the socket, not read yet, is not idle: a close would reset it under
        that request (a keep-alive client of a worker a reload replaces), which is
        answered instead, with ``Connection: close``. Nor is one idle for less than
        :data:`IDLE_GRACE`, as when the server drains at its connection limit: its
        client, just answered (or just connected), may be sending its next request.
        It closes once idle that long, unless that request comes first.
        """
        self._close_when_idle = True
        if self._queue or self._closed:
            return
        if self._read is _READ_IDLE:
            spared_until = self.idle_since + IDLE_GRACE
            now = self._clock.seconds()
            if now >= spared_until:
                self.close_if_idle()
            elif self._deadline is None or self._deadline > spared_until:
                self._set_deadline(spared_until - now, _TIMEOUT_IDLE)
        elif self._read is _READ_BODY and self._parsing is not None and self._parsing.finished:
            self._close_after_response(self._parsing)

    @property
    def draining(self) -> bool:
        """Whether a request is still being read or answered after a shutdown began.

        A connection closing (idle, or lingering after its last response) is not, nor
        one idle that waits out its grace before it closes. One that stopped parsing
        at an Upgrade request is, while that request is queued.
        """
        if self._closed:
            return False
        if self._queue:
            return True
        if self._read is _READ_IDLE:
            return not self._close_when_idle
        return self._read is not _READ_STOPPED or self._method_line is not None

    def abort_connection(self) -> None:
        """Drop the connection without sending anything more."""
        if not self._closed:
            self._dropped = True
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def peer_closed(self) -> bool:
        """Whether the client has closed its side, though its close was not read yet.

        Reading stops while a request body waits for the application (flow
        control), so a client that leaves then is not seen: its FIN waits behind
        the body bytes. The kernel knows all the same: the socket is in TCP's
        CLOSE-WAIT state (RFC 9293 3.3.2), or CLOSED after a reset. A client whose
        close still waits behind body bytes in its own send buffer cannot be seen.
        Linux only; elsewhere, and for a socket that cannot be asked, the answer is
        no. Callable from any thread.
        """
        if _TCP_INFO is None:
            return False
        try:
            handle = self._socket()
        except AttributeError:
            # Twisted drops a connection's socket when it ends (a reset the reactor
            # read), before the protocol hears of it: the client is gone.
            return True
        if handle is None:
            return False
        if handle.fileno() < 0:
            return True  # closed, likewise

        try:
            info = handle.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)
        except OSError as error:
            return error.errno == errno.EBADF  # closed meanwhile: gone
        # Anything but ESTABLISHED: the peer closed or reset (CLOSE-WAIT, CLOSED),
        # or the reactor is closing the socket itself (LAST-ACK after its shutdown).
        return bool(info) and info[0] != _TCP_ESTABLISHED

    def drop_departed_client(self) -> None:
        """Close the connection of a client found gone (see :meth:`peer_closed`).

        Logged as the client's doing (499), not as a connection the server dropped.
        """
        if not self._closed:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    @property
    def dropped(self) -> bool:
        """Whether the server dropped the connection itself (rather than the client)."""
        return self._dropped

    def _lose_connection(self) -> None:
        self._read = _READ_STOPPED
        self.close_transport()

    def close_transport(self) -> None:
        """Close once what was written has been sent, over TCP and TLS alike.

        The protocol stays registered as its transport's producer while it lives, and
        Twisted's TLS transport defers its close until the producer is unregistered, so
        the producer goes first or a TLS connection would never close.
        """
        transport: Any = self.transport
        self._end_sending()
        if self._scheme == "https":
            # Twisted's TLS then waits for the client's own close_notify before it
            # closes the TCP connection below, and a client holding an idle connection
            # never sends one. RFC 8446 6.1 lets the closing side skip that wait, as
            # nginx does: our close_notify is queued on the TCP transport, which sends
            # it and everything before it, then closes.
            lower = getattr(transport, "transport", None)
            if lower is not None:
                lower.loseConnection()

    def _end_sending(self) -> None:
        """Close once what was written is sent; over TLS, end with close_notify only.

        Over TLS the TCP connection stays open until the client's close_notify (or
        :meth:`close_transport`'s close below it): the client may read and close in
        its own time, and its bytes still arriving are read rather than reset.
        """
        transport: Any = self.transport
        if self._send_deadline is None:
            # The close waits for the client to take what was written (the kernel's
            # queue included: the socket must turn writable). A client that never
            # reads would hold it for ever, even when Twisted never paused our writes
            # (what is left is under its 64 KiB mark): send_timeout bounds it.
            self._set_send_deadline()
        # Transports that expose ``producer`` (TCP, the test doubles) may already have
        # none after a file response failed; TLS keeps its own and ignores a repeat.
        if getattr(transport, "producer", True) is not None:
            transport.unregisterProducer()
        transport.loseConnection()

    # -- producer for the transport (write side flow control) -------------------

    def pauseProducing(self) -> None:
        """The client is not reading: pause the handler's producer, start send timer."""
        self._write_paused = True
        if self._response_producer is not None and self._paced is None:
            self._response_producer.pauseProducing()
        self._set_send_deadline()

    def resumeProducing(self) -> None:
        """The client caught up: resume the handler's producer (unless its rate holds it)."""
        self._write_paused = False
        self._send_deadline = None
        if self._response_producer is not None and self._paced is None:
            self._response_producer.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is going away; ``connectionLost`` does the cleanup."""
        if self._response_producer is not None:
            producer, self._response_producer = self._response_producer, None
            producer.stopProducing()

    def set_response_producer(self, producer: IPushProducer | None) -> None:
        """Forward write-side pauses to ``producer`` (``None`` to stop forwarding)."""
        self._response_producer = producer
        if producer is not None and (self._write_paused or self._paced is not None):
            producer.pauseProducing()

    def hold_response(self, seconds: float) -> None:
        """Pause the handler's producer for ``seconds``: the response's limit_rate.

        A pause of its own beside the client's (pauseProducing): the producer goes
        on only once neither holds it, and this one starts no send timer (the
        client is not behind).
        """
        if self._paced is not None or self._closed:
            return
        self._paced = self._clock.callLater(seconds, self._pace_over)
        producer = self._response_producer
        if producer is not None and not self._write_paused:
            producer.pauseProducing()

    def _pace_over(self) -> None:
        self._paced = None
        producer = self._response_producer
        if producer is not None and not self._write_paused:
            producer.resumeProducing()

    def _stop_pacing(self) -> None:
        """Forget a limit_rate hold: its response ended (or the connection did)."""
        paced, self._paced = self._paced, None
        if paced is not None and paced.active():
            paced.cancel()

    def note_write_progress(self) -> None:
        """A file sender made progress: push the send deadline back."""
        self._set_send_deadline()

    # -- read side flow control ---------------------------------------------------

    def pause_reading(self, reason: str) -> None:
        """Stop reading from the client until every pause reason is lifted."""
        if not self._read_pauses and not self._closed:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._read_pauses.add(reason)
        if self._deadline_kind is _TIMEOUT_BODY or self._deadline_kind is _TIMEOUT_HEAD:
            # Not the client's fault: do not time a body (or the head of a pipelined
            # request) out while we are the ones not reading it.
            self._deadline = None

    def resume_reading(self, reason: str) -> None:
        """Lift one pause reason; read again when none is left."""
        if not self._read_pauses or reason not in self._read_pauses:
            return
        self._read_pauses.discard(reason)
        reading = (
            self._read is not _READ_STOPPED
            or self._upgrade_tail is not None
            or self._method_line is not None
        )
        if not self._read_pauses and not self._closed and reading:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._update_read_deadline()

    # -- timeouts -------------------------------------------------------------------

    def _set_deadline(self, seconds: float, kind: _Timeout) -> float:
        """Time the read state out ``seconds`` from now; return now."""
        now = self._clock.seconds()
        deadline = now + seconds
        self._deadline = deadline
        self._deadline_kind = kind
        if self._timer is None or self._timer_at > deadline:
            self._arm(seconds, deadline)  # (mostly the timer is due sooner already)
        return now

    def _set_send_deadline(self) -> None:
        """The client has ``send_timeout`` seconds to read on (nginx's send_timeout)."""
        seconds = self._settings.send_timeout
        deadline = self._clock.seconds() + seconds
        self._send_deadline = deadline
        self._unsent_at_send_deadline = unsent_bytes(self.transport)
        self._arm(seconds, deadline)

    def _arm(self, seconds: float, deadline: float) -> None:
        """Have the timer fire by ``deadline`` (``seconds`` from now)."""
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(seconds, self._timer_fired)
            self._timer_at = deadline
        elif self._timer_at > deadline:
            # Rare: deadlines mostly move later, which the timer handles when it
            # fires early and re-arms. A new call rather than DelayedCall.reset, which
            # searches the reactor's timer heap linearly to move a call sooner.
            timer.cancel()
            self._timer = self._clock.callLater(seconds, self._timer_fired)
            self._timer_at = deadline

    def _timer_fired(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = self._clock.seconds()
        send_deadline = self._send_deadline
        if (
            send_deadline is not None
            and now >= send_deadline
            and took_some(self.transport, self._unsent_at_send_deadline)
        ):
            # Reading slowly is not stopping: the client gets the timeout again.
            self._set_send_deadline()
            send_deadline = self._send_deadline
        if send_deadline is not None and now >= send_deadline:
            self._send_deadline = None
            _log.info(
                "Client {peer} stopped reading the response; aborting",
                peer=describe_peer(self._peer),
            )
            self.abort_connection()
            return
        deadline = self._deadline
        if deadline is None or now < deadline:
            pending = [due for due in (deadline, send_deadline) if due is not None]
            if pending:
                due = min(pending)
                self._arm(due - now, due)
            return
        self._deadline = None
        kind = self._deadline_kind
        if kind is _TIMEOUT_IDLE and self._read is _READ_IDLE and self._bytes_waiting():
            # The reactor runs its timers before it reads: a request that arrived as
            # the wait ended (the keep-alive timeout, the grace of a shutdown) is
            # unread, and a close now would reset the connection under it. It is read
            # next and answered (with Connection: close after a shutdown); its head
            # then has the header timeout, which also bounds bytes never read.
            self._set_deadline(self._settings.header_timeout, _TIMEOUT_HEAD)
        elif kind is _TIMEOUT_IDLE or kind is _TIMEOUT_LINGER:
            self.close_transport()
            self._send_fin_now()
        elif kind is _TIMEOUT_HEAD:
            self._fail(RequestError(408, "The request head took too long to arrive"))
        else:
            self._fail(RequestError(408, "The request body stopped arriving"))
        send_deadline = self._send_deadline
        if send_deadline is not None and not self._closed:
            # A graceful close waits for the client to read: it still has only until
            # the send deadline.
            self._arm(send_deadline - now, send_deadline)

    def _update_read_deadline(self) -> None:
        """Set the deadline the read state calls for (after a state change)."""
        read = self._read
        if read is _READ_BODY:
            exchange = self._parsing
            if self._read_pauses or (exchange is not None and exchange.awaiting_continue):
                self._deadline = None
            else:
                self._set_deadline(self._settings.body_timeout, _TIMEOUT_BODY)
        elif read is _READ_IDLE:
            if self._queue:
                self._deadline = None  # a handler is working; nothing to wait for
            else:
                self._set_deadline(self._settings.keepalive_timeout, _TIMEOUT_IDLE)
        elif read is _READ_STOPPED and self._method_line is None:
            self._deadline = None
        elif self._deadline is None and not self._read_pauses:
            # HEAD (and a refused method still read, see _method_refused) keeps the
            # deadline set when the head began (a total, not an idle timeout),
            # unless a pause suspended it: the client gets a new one.
            self._set_deadline(self._settings.header_timeout, _TIMEOUT_HEAD)

    # -- bytes in -------------------------------------------------------------------

    def _learn_addresses(self) -> bool:
        """Take the peer and local addresses again, now that bytes have come through.

        ``False`` (and the connection dropped) if they are not IP addresses and
        ports: Twisted's reader of the PROXY header takes any text of the right
        shape, which would then be the client everywhere (nginx refuses such a
        header as broken).
        """
        self._addresses_pending = False
        transport = self.transport
        peer = peer_address(transport.getPeer())
        local = peer_address(transport.getHost())
        for address in (peer, local):
            if address is not None and not _is_ip_address(*address):
                # (Twisted's own haproxy: endpoint, which a library user may give,
                # takes any text of the right shape; the server's checks them.)
                _log.warn(
                    "Dropped a connection from {peer}: its PROXY header names {address},"
                    " not an IP address and port",
                    peer=describe_peer(self._peer),
                    address=describe_peer(address),
                )
                self._read = _READ_STOPPED  # (nothing more of it is parsed)
                self.abort_connection()
                return False
        self._peer, self._local = peer, local
        header = getattr(transport, "header", None)
        if isinstance(header, ProxyHeader) and header.client_tls:
            self._scheme = "https"  # TLS ended at the balancer, which says so
        beneath = socket_beneath(transport)
        if beneath is not None:
            # Written to directly from now on, where the fast paths apply (the
            # reader adds nothing to what is written; reads still come through it).
            self.transport = beneath
        return True

    def dataReceived(self, data: bytes) -> None:
        """Feed the parser; refuse malformed requests; dispatch ready exchanges."""
        read = self._read
        if read is _READ_STOPPED:
            if self._method_line is not None:
                self._method_line_received(data)  # (parsing stopped at the method)
                return
            kept = self._upgrade_tail
            if kept is not None:
                # An Upgrade request waits for its answer: keep what the client sends
                # on (the other protocol's first bytes), up to a bound, and read on so
                # that a client leaving is seen.
                self._upgrade_tail = kept + data
                if len(self._upgrade_tail) > UPGRADE_TAIL_LIMIT:
                    self.pause_reading("upgrade")
            return  # discarding: lingering close or a closed connection
        if read is _READ_TUNNEL:
            self._tunnel.data_received(data)
            return
        if self._held:
            # Requests parsed earlier wait for their turn: keep the bytes in order.
            self._held += data
            return
        if (
            read is _READ_IDLE
            and not self._queue
            and not self._cr_pending
            and self._skipped_body is None
            and not self._addresses_pending
        ):
            # Between messages, nothing waiting, nothing half-read: a read that is
            # one plain head may take the short way (_take_simple_head).
            simple = _simple_head(data)
            if simple is not None and self._take_simple_head(data, simple):
                return
        if self._skipped_body is not None:
            self._feed_skipped_body(data)
        elif len(data) > PIPELINE_SLICE and read is not _READ_BODY:
            self._feed_sliced(data)
            return  # each slice came through here, dispatch included
        elif self._cr_pending or (
            # A read that may hold the end of a message and bytes after it, and a
            # CR that no LF follows: where it falls is looked at (_parse_around_crs).
            # A head read (at most PIPELINE_SLICE bytes) is copied without its CRLFs
            # and searched for a CR that is left: two C-speed passes, whose methods
            # take their arguments cheaper than two counts (~600 instructions fewer
            # by callgrind, see on_headers_complete).
            data.replace(b"\r\n", b"").partition(b"\r")[1]
            if read is not _READ_BODY
            else self._body_may_end_in(data)
        ):
            self._parse_around_crs(data)
        else:
            self._parse(data)
        queue = self._queue
        if len(queue) == 1 and not self._held:
            # The common case, one request at a time: dispatch it when it is ready.
            first = queue[0]
            # (A request without a body is ready: its property is not asked.)
            if (
                type(first) is HTTP11Exchange
                and not first.dispatched
                and (first._body is _BODY_COMPLETE or first.ready)
            ):
                self._dispatch(first)
        elif queue or self._held:
            self._advance()

    def _take_simple_head(self, data: bytes, simple: re.Match[bytes]) -> bool:
        """Queue and dispatch the request of a read that is one simple head.

        The short way for the most common read, a GET or HEAD without a body whose
        whole head came in one read (:data:`rules.SIMPLE_HEAD`): the head is read
        with two regular expressions instead of llhttp and its calls back into
        Python (four, and one per field line), and the state those calls set and
        reset is left as it is after a whole message (tests/test_simple_head.py
        compares the two ways). In-memory meter: hello 14.8 -> 11.7 us a request,
        the 10 KB file 12.9 -> 9.3 us.

        ``False``, with nothing changed, for a head the general way must read: one
        it would refuse, or that asks for more than a plain exchange (a body, an
        expectation, an upgrade, the connection's end).
        """
        settings = self._settings
        method, target, path, escaped, query, minor, field_lines = simple.groups()
        if (
            len(target) > settings.max_request_line
            or len(field_lines) > settings.max_header_field
            or len(field_lines) > settings.max_header_total
        ):
            # A field line's counted size (name, value, 2) is at most its length,
            # so within these bounds no field or section limit is reached.
            return False
        fields = _simple_fields(field_lines)
        if len(fields) > settings.max_header_count:
            return False
        host = connection = None
        for name, value in fields:
            lower = name.lower()
            if lower in _SIMPLE_HEAD_SPECIAL:
                if lower == b"host":
                    if host is not None:
                        return False  # (a duplicate Host: refused)
                    host = value
                elif lower == b"connection":
                    connection = value if connection is None else connection + b"," + value
                else:
                    return False
        version = b"1.1" if minor == b"1" else b"1.0"
        if host is None:
            if minor == b"1":
                return False  # (refused: no Host)
            host = b""
        elif host != self._valid_host:
            if not rules.is_valid_host(host):
                return False
            self._valid_host = host
        # on_headers_complete's persistence rules, in place, turned into declining:
        # a shared method cost 875 instructions a request more (callgrind, hello,
        # +0.9%); tests/test_simple_head.py fails if the two drift apart.
        if connection:
            options = rules.connection_options(connection)
            if b"close" in options or b"upgrade" in options:
                return False
            if minor == b"0" and b"keep-alive" not in options:
                return False
        elif minor == b"0":
            return False  # (HTTP/1.0 without keep-alive: the connection ends)
        now = self._clock.seconds()
        requests = self._requests + 1
        most = settings.keepalive_requests
        lifetime = settings.keepalive_time
        if (
            not settings.keepalive_timeout
            or (most and requests >= most)
            or (lifetime and now - self._opened_at >= lifetime)
        ):
            return False  # (this response ends the connection)
        decoded_path = path
        if escaped:
            path += escaped
            try:
                decoded_path = rules.unquote_path(path)
            except RequestError:
                return False  # (an encoded NUL: refused)
        if query is None:
            query = b""  # (no "?": as target.partition(b"?") leaves it)
        # What the parser's calls leave after a whole message without a body.
        self._requests = requests
        self._head_began = now
        self._line_read = True
        self._fed_tail = data[-3:]
        self._chunked = self._chunked_head_done = False
        self._body_until = 0
        self._deadline = None  # a handler is working; nothing to wait for
        self._deadline_kind = _TIMEOUT_HEAD
        if not self._certificate_read:
            self._read_client_certificate()
        head = RequestHead(  # (in order, positionally: see RequestHead.__init__)
            method,
            target,
            path,
            decoded_path,
            query,
            version,
            fields,
            host,
            None,
            False,
            self._scheme,
            self._peer,
            self._local,
            self._client_certificate,
        )
        exchange = HTTP11Exchange(self, head, True, False, now)
        self._queue.append(exchange)
        self._dispatch(exchange)
        return True

    def _body_may_end_in(self, data: bytes) -> bool:
        """Whether a body read may hold the message's end and a bare CR after it.

        Only the bytes past what is known to be body data are looked at: a large
        upload's reads are not scanned whole (a scan of 64 KiB costs more than
        llhttp's parse of it). A chunked body is left to :meth:`_parse_around_crs`,
        which steps from chunk to chunk.
        """
        rest = self._body_data_ahead()
        if rest >= len(data):
            return False  # all body data
        if self._chunked:
            return True
        return data.count(b"\r", rest) != data.count(b"\r\n", rest)

    def _body_data_ahead(self) -> int:
        """How many of the bytes not yet parsed are known to be body data.

        Those of a Content-Length body; of a chunked body, the rest of the chunk
        being read, as the chunk-size line check (_feed) knows it (the data, not the
        CRLF after it, which is framing); 0 or less when none.
        """
        if self._chunked:
            skip = self._chunk_skip
            return skip - 2 if self._chunk_lines and skip > 2 else 0
        return self._body_until - self._body_bytes

    def _begin_head(self) -> bool:
        """Note the first byte of a request (``False``: the connection was dropped)."""
        if self._addresses_pending and not self._learn_addresses():
            return False
        self._read = _READ_HEAD
        # The read is parsed in parts (_parse_around_crs): each adds to the line.
        self._message_read = b""
        self._line_open = True
        # The request's first byte: where its time starts ($request_time).
        self._head_began = self._set_deadline(self._settings.header_timeout, _TIMEOUT_HEAD)
        return True

    def _parse(self, data: bytes) -> None:
        """Feed ``data`` to the parser; refuse a malformed request; note an Upgrade."""
        read = self._read
        if read is _READ_IDLE:
            # (_begin_head, inline: once per request on the hot path.)
            if self._addresses_pending and not self._learn_addresses():
                return
            self._read = read = _READ_HEAD
            # (_set_deadline, inline too.)
            self._head_began = now = self._clock.seconds()
            seconds = self._settings.header_timeout
            self._deadline = deadline = now + seconds
            self._deadline_kind = _TIMEOUT_HEAD
            if self._timer is None or self._timer_at > deadline:
                self._arm(seconds, deadline)
            # llhttp is between messages: the message begins at data[0] (unless
            # empty lines come first, which on_headers_complete sees).
            self._message_read = data
        elif self._line_open:
            # The request line began in an earlier read and had not ended: its
            # protocol may be in this one. (Only a line cut by a read pays; bounded,
            # as the line is, by the head's limits.)
            self._line_open = False
            self._message_read = (self._message_read or b"") + data
        if read is _READ_HEAD:
            self._head_bytes += len(data)
        elif read is _READ_BODY:
            self._framing_bytes += len(data)
        tail: bytes | None = None
        try:
            if (
                read is not _READ_BODY
                and data
                and not self._chunk_lines
                and not data.partition(_HEAD_END)[2]
                and data[0] not in _CR_LF
            ):
                # The usual read, once per request (a GET's whole head): no head ends
                # in it but, perhaps, at its very end (a CR or LF first might end a
                # head begun in the last read), so it is one piece, fed here rather
                # than through _feed (a call less). (Nothing after the first empty
                # line: it is absent or last. partition rather than find, as in
                # on_headers_complete.)
                self._fed_tail = data[-3:] if len(data) >= 3 else (self._fed_tail + data)[-3:]
                self._parser.feed_data(data)
                if self._chunked_head_done:
                    # The piece ended where the head did: the body starts here.
                    self._begin_chunk_lines()
            else:
                self._feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            tail = data[upgrade.args[0] :]
        except RequestError as error:
            self._fail(error)  # a chunk-size line llhttp takes and RFC 9112 does not
        except _MethodRefused as refused:
            self._method_refused(data, refused.line_from)  # (in a piece _feed cut)
        except httptools.HttpParserError as error:
            if isinstance(error, httptools.HttpParserInvalidMethodError):
                self._method_refused(data, 0)  # (the read was one piece)
                return
            if _names_a_field(error):
                self._line_read = True
            elif isinstance(error, httptools.HttpParserInvalidURLError):
                self._target_refused = True
            elif str(error) in _LLHTTP_PREFACE_ERRORS:
                self._line_read = True  # llhttp read PRI's line to its end
            refusal = _refusal(error)
            if (
                str(error) == _LLHTTP_BAD_VERSION
                and self._message_read is not None
                and rules.names_another_protocol(self._message_read)
            ):
                # RTSP/9.9 is no HTTP version that is not supported (505): it is not
                # HTTP at all, as RTSP/1.0 is not (on_headers_complete).
                refusal = RequestError(400, NOT_HTTP)
            self._fail(refusal)
        else:
            read = self._read
            if read is _READ_HEAD:
                self._check_head_size()
                kept = self._message_read
                if kept is not None and not kept.lstrip(b"\r\n").partition(b"\n")[1]:
                    self._line_open = True  # the next read adds to the line
                if self._url:
                    if not self._line_read:
                        if self._parser.get_method() == b"PRI":
                            # llhttp waits for the rest of HTTP/2's preface after
                            # the head, until the header timeout: refuse it now.
                            self._fail(_http2_preface())
                        else:
                            self._note_line_end(data)
                elif not self._between_messages:
                    # A request began and its target did not: the read ended inside
                    # its method (a read of a whole head never comes here).
                    self._keep_line_start(data)
            elif read is _READ_BODY and self._framing_bytes > self._settings.max_header_total:
                # Reads that carried no body byte: chunk-size lines, extensions and
                # the trailer section. llhttp holds a trailer field line until it
                # ends: without this count, one endless line would grow memory.
                self._fail(RequestError(431, "Chunk framing or trailer section too large"))
        if tail is not None:
            # Outside the except clause: an exception raised while the rest is
            # parsed must keep its own context (_refusal reads the RequestError).
            self._upgrade(tail)

    def _feed(self, data: bytes) -> None:
        """Feed ``data`` to llhttp, checking each chunk-size line it takes whole.

        llhttp takes a few chunk extensions RFC 9112 7.1.1 does not allow (see
        :func:`rules.is_valid_chunk_line`) and says nothing of where a line lies in
        a read, so the read goes to it in pieces: up to each place a head may end (a
        chunked body begins right after one), over a Content-Length body, and over
        a chunked body's chunks up to its last chunk, each in one piece, the lines
        checked (:meth:`_check_chunk_lines`) before llhttp is given them. A read
        of body data only is one piece, fed as it came; one holding a head that
        ends nowhere but at its end never comes here (:meth:`_parse` feeds it).
        """
        size = len(data)
        if not size:
            return
        start = 0
        if self._chunk_lines:
            skip = self._chunk_skip
            if skip > size:
                # Chunk data only (its CRLF comes later): the common read of a
                # chunked upload, the 1 KiB slices of its first read included.
                self._chunk_skip = skip - size
                self._parser.feed_data(data)
                return
            start = self._feed_chunks(data, 0)
            if start == size:
                return
        elif (
            self._read is _READ_BODY
            and not self._chunked
            and self._body_until - self._body_bytes > size
        ):
            self._parser.feed_data(data)  # body data only, and the body goes on
            return
        while start < size:
            if self._chunk_lines:
                end = self._feed_chunks(data, start)
            elif self._read is _READ_BODY and not self._chunked:
                rest = self._body_until - self._body_bytes
                end = min(size, start + rest) if rest > 0 else self._head_end(data, start)
                self._feed_piece(data, start, end)
            else:
                end = self._head_end(data, start)
                if self._between_messages:
                    # A message may begin in this piece (after a body or another
                    # head, or after empty lines): its request line is in it, from
                    # its first byte, or begins there and goes on in the next read.
                    self._message_read = data[start:end]
                self._feed_piece(data, start, end)
                if self._chunked_head_done:
                    # The piece ended where the head did: the body starts here.
                    self._begin_chunk_lines()
                elif (
                    end == size
                    and start
                    and self._read is _READ_HEAD
                    and not self._url
                    and not self._between_messages
                ):
                    # The read ends inside the method of a request line that began
                    # in this piece, after another message (_keep_line_start).
                    self._line_from = start
            start = end

    def _feed_chunks(self, data: bytes, start: int) -> int:
        """Check, then feed, the chunks from ``data[start]``; return where they end.

        That is the end of ``data``, or of the last chunk's line.
        """
        end, valid = self._check_chunk_lines(data, start)
        if valid and self._chunk_lines:
            # The body goes on in the next read, which no head can end at the
            # start of, unless this one ended inside the last chunk's line ("0\r"):
            # the CRLF CRLF that ends the message then begins here (_head_end).
            self._parser.feed_data(memoryview(data)[start:] if start else data)
            if self._chunk_line:
                self._fed_tail = self._chunk_line[-3:]
            return end
        self._feed_piece(data, start, end)
        if not valid:
            # llhttp took the line (its own refusal of it, or of anything before
            # it, comes first) but none of the chunk's data.
            raise RequestError(400, "Invalid chunk extension")
        return end

    def _begin_chunk_lines(self) -> None:
        """A chunked body begins: its first chunk-size line is next."""
        self._chunked_head_done = False
        self._chunk_lines = True
        self._chunk_line = b""
        self._chunk_skip = 0

    def _head_end(self, data: bytes, start: int) -> int:
        """Where the next CRLF CRLF ending after ``data[start]`` ends (or ``len(data)``).

        It may begin up to three bytes before ``start``, in an earlier read too
        (``_fed_tail``), also after a piece of one or two bytes: the LF that ends a
        last chunk's line whose CR ended the last read. Cut anywhere else, the piece
        would hold the end of that message and the start of the next, which begins a
        piece (see _feed) when the read is not split there.
        """
        if start < 3:
            tail = self._fed_tail  # (what was fed last: data[:start] included)
            for cut, (before, after) in enumerate(_HEAD_END_SPLITS, 1):
                if tail.endswith(before) and data.startswith(after, start):
                    return start + cut
        at = data.find(_HEAD_END, max(start - 3, 0))
        return len(data) if at < 0 else at + 4

    def _check_chunk_lines(self, data: bytes, start: int) -> tuple[int, bool]:
        """Check the chunk-size lines in ``data`` from ``start``, stepping over chunk data.

        Returns where llhttp may be fed up to, and whether the lines up to there are
        valid: the end of ``data``, or the end of the last chunk's line (a trailer
        section and perhaps another request follow), or the end of the first
        invalid line. One ``find`` per line: the chunk data between is not looked
        at, and llhttp gets the chunks in one piece, as it did before the check.
        """
        size = len(data)
        at = start
        skip = self._chunk_skip
        while True:
            if skip:
                if at + skip >= size:
                    # The chunk (its data, then CRLF) goes on in the next read.
                    self._chunk_skip = at + skip - size
                    return size, True
                at += skip
            line_end = data.find(b"\n", at) + 1
            if not line_end:
                self._chunk_line += data[at:]  # the line goes on in the next read
                self._chunk_skip = 0
                return size, True
            line = data[at:line_end]
            if self._chunk_line:
                line = self._chunk_line + line
                self._chunk_line = b""
            size_text, semicolon, _ = line.partition(b";")
            try:
                # Without an extension, llhttp's own checks are the grammar's (hex
                # digits, then CRLF): only a line with one needs the expression.
                if semicolon and not rules.is_valid_chunk_line(line):
                    raise ValueError
                skip = int(size_text, 16) + 2  # the data, then its CRLF
            except ValueError:
                # Not a chunk-size line. llhttp refuses it (and anything before
                # it) first when it is not one to llhttp either.
                self._chunk_skip = 0
                return line_end, False
            at = line_end
            if skip == 2:
                # The last chunk: a trailer section, then the next message, whose head
                # _head_end finds.
                self._chunk_lines = False
                self._chunk_skip = 0
                return at, True

    def _feed_piece(self, data: bytes, start: int, end: int) -> None:
        """Feed ``data[start:end]``; an Upgrade's offset is made one into ``data``."""
        piece = data if start == 0 and end == len(data) else memoryview(data)[start:end]
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade as upgrade:
            raise httptools.HttpParserUpgrade(upgrade.args[0] + start) from None
        except httptools.HttpParserInvalidMethodError:
            # A piece starts where a message does (or continues one): the refused
            # request line starts here, after any empty lines.
            raise _MethodRefused(start) from None
        finally:
            if len(piece) >= 3:
                self._fed_tail = bytes(piece[-3:])
            else:
                self._fed_tail = (self._fed_tail + bytes(piece))[-3:]

    def _parse_around_crs(self, data: bytes) -> None:
        """Parse a read that holds a CR without its LF; refuse one between requests.

        llhttp skips any CR and LF before a request line. RFC 9112 2.2 lets a server
        ignore empty lines there (CRLF, or a bare LF, which may end a line), but a
        bare CR is neither: elsewhere it must be refused or replaced (RFC 9112 2.2),
        and a server in front that reads it otherwise would frame the stream
        differently. Where a CR falls is learnt by parsing up to it: when llhttp is
        then between two messages, it is a bare CR before a request line. A CR
        inside a body is body data: a read into a body is not cut at each one (a
        body of known length is stepped over, and a chunked body can only end with
        CRLF CRLF). A CR that is the read's last byte is decided by the next read's
        first (its LF may come there).
        """
        if self._read is _READ_IDLE and not self._begin_head():
            return
        if self._cr_pending:
            if not data:
                return  # (nothing to decide on yet)
            self._cr_pending = False
            if data[:1] != b"\n":
                self._fail(_BARE_CR_BEFORE_REQUEST)
                return
        done = 0  # parsed up to here
        # The next CR that matters is not before here: none in known body data.
        look = max(self._body_data_ahead(), 0) if self._read is _READ_BODY else 0
        last = len(data) - 1
        while (at := _find_bare_cr(data, look)) >= 0:
            if at > done:
                self._parse(data[done:at])
                done = at
                read = self._read
                if read is _READ_STOPPED or read is _READ_TUNNEL or self._skipped_body is not None:
                    break  # refused, or no longer HTTP: dataReceived routes the rest
            if self._between_messages:
                if at == last:
                    self._cr_pending = True
                    break
                self._fail(_BARE_CR_BEFORE_REQUEST)
                return
            look = at + 1
            if self._read is _READ_BODY:
                rest = self._body_data_ahead()
                if rest > 0:
                    look = at + rest  # the body (or this chunk) goes on to there
                elif self._chunked:
                    # A chunked body ends with its last CRLF CRLF (RFC 9112 7.1): no
                    # message ends before the next one.
                    end = data.find(b"\r\n\r\n", max(at - 3, 0))
                    look = len(data) if end < 0 else max(end, at + 1)
        if done < len(data):
            read = self._read
            if read is _READ_STOPPED or read is _READ_TUNNEL or self._skipped_body is not None:
                self.dataReceived(data[done:])
            else:
                self._parse(data[done:])

    def _feed_sliced(self, data: bytes) -> None:
        """Take a large read that may hold many pipelined requests a slice at a time.

        The rest is held back once the queue is full (see :data:`MAX_PIPELINED`).
        Body bytes of a known length hold no request: once a head is parsed, they
        go to the parser in one piece, up to the body's end (a 10 MB upload's
        first 64 KiB read was otherwise 64 pieces, each a trip through the parser
        and the body's receiver).
        """
        size = len(data)
        start = 0
        while True:
            end = start + PIPELINE_SLICE
            if self._read is _READ_BODY and not self._chunked:
                end = max(end, start + self._body_until - self._body_bytes)
            self.dataReceived(data[start:end])
            if end >= size:
                return
            if self._upgrade_tail is not None:
                self._upgrade_tail += data[end:]  # the other protocol's bytes
                return
            if self._read is _READ_STOPPED or self._closed:
                if self._method_line is not None:
                    self._method_line_received(data[end:])  # (it decides there)
                return
            if len(self._queue) > MAX_PIPELINED:
                self._held = data[end:]
                return
            start = end

    def _advance(self) -> None:
        """Answer what can be answered now, in order.

        Dispatch the first queued request when it is ready, send a queued refusal in
        its turn, and parse held-back bytes once the queue has room. It loops rather
        than recurses: a handler that answers at once ends its exchange from inside
        :meth:`_dispatch`, and that call here only asks for another turn, so a long
        pipeline cannot grow the stack.
        """
        if self._advancing:
            self._advance_again = True
            return
        self._advancing = True
        try:
            while not self._closed:
                self._advance_again = False
                queue = self._queue
                if queue:
                    first = queue[0]
                    if isinstance(first, Refusal):
                        queue.popleft()
                        self._send_error_response(first)
                    elif not first.dispatched and first.ready:
                        self._dispatch(first)
                if (
                    self._held
                    and len(self._queue) <= MAX_PIPELINED
                    and self._read is not _READ_STOPPED
                    and not self._closed
                ):
                    held, self._held = self._held, b""
                    self.dataReceived(held)
                    self._advance_again = True
                if not self._advance_again:
                    break
        finally:
            self._advancing = False
        if self._read_pauses and len(self._queue) <= 1 and not self._held:
            self.resume_reading("pipeline")

    def _note_line_end(self, data: bytes) -> None:
        """Note whether the request line of an unfinished head has been read whole.

        For the access log of a head that then times out (408): llhttp reports a
        field line only once the next one starts, so nothing else says the version
        was read. The line ended if a line feed follows the target in ``data``, or,
        when the target ended in an earlier read, if ``data`` holds one at all.
        """
        tail = self._url[-32:]
        at = data.rfind(tail)
        if data.find(b"\n", at + len(tail) if at >= 0 else 0) >= 0:
            self._line_read = True

    def _check_head_size(self) -> None:
        # llhttp buffers a field line until it is complete, so a client that never
        # ends its head would grow memory without this raw count.
        settings = self._settings
        if self._head_bytes > settings.max_header_total + settings.max_request_line:
            # on_url refuses a long target (414) as it arrives; what is left is the
            # header section.
            self._fail(RequestError(431, "Request header fields too large"))

    # -- parser callbacks (httptools calls these from feed_data) --------------------

    def on_message_begin(self) -> None:
        """Reset the per-message state."""
        self._between_messages = False
        self._url = b""
        self._line_read = False
        self._headers = []
        self._header_bytes = 0
        self._host = None
        self._content_length = None
        self._transfer_encodings = None
        self._connection = None
        self._expect = None
        self._body_bytes = 0
        self._framing_bytes = 0
        self._trailer_count = 0
        if self._read is not _READ_HEAD:
            # A pipelined request starting inside a chunk that finished another one.
            self._read = _READ_HEAD
            self._head_bytes = 0
            if self._read_pauses:
                self._deadline = None  # timed once reading resumes (_update_read_deadline)
                self._head_began = self._clock.seconds()
            else:
                self._head_began = self._set_deadline(self._settings.header_timeout, _TIMEOUT_HEAD)

    def on_url(self, part: bytes) -> None:
        """Collect the request-target (llhttp may hand it over in pieces)."""
        url = self._url + part
        limit = self._settings.max_request_line
        if len(url) > limit:
            # Kept, cut at the limit, for the access log (nginx logs what its buffer
            # holds of such a line).
            self._url = url[:limit]
            raise RequestError(414, "Request-target too long")
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Check and collect one field line of the header or trailer section."""
        if value[-1:] in (b" ", b"\t"):
            # llhttp strips leading whitespace only; RFC 9110 5.5 excludes both.
            value = value.rstrip(b" \t")
        # (_count_field_bytes, inline: once per field line of every request.)
        settings = self._settings
        size = len(name) + len(value) + 2
        if size > settings.max_header_field:
            self._line_read = True
            raise RequestError(431, "A request header field is too large")
        self._header_bytes += size
        if self._header_bytes > settings.max_header_total:
            self._line_read = True
            raise RequestError(431, "Request header fields too large")
        if self._read is _READ_BODY:
            self._check_trailer(name)
            return
        headers = self._headers
        if len(headers) >= settings.max_header_count:
            raise RequestError(431, "Too many request header fields")
        headers.append((name, value))
        lower = name.lower()
        if lower == b"host":
            if self._host is not None:
                raise RequestError(400, "Duplicate Host field")
            self._host = value
        elif lower == b"content-length":
            self._content_length = value
        elif lower == b"transfer-encoding":
            if self._transfer_encodings is None:
                self._transfer_encodings = [value]
            else:
                self._transfer_encodings.append(value)
        elif lower == b"connection":
            self._connection = (
                value if self._connection is None else self._connection + b"," + value
            )
        elif lower == b"expect":
            # A list field (RFC 9110 10.1.1): several lines are one list (5.3).
            self._expect = value if self._expect is None else self._expect + b"," + value

    def _count_field_bytes(self, name: bytes, value: bytes) -> None:
        """Hold one field line, of the header or trailer section, to the size limits."""
        settings = self._settings
        size = len(name) + len(value) + 2
        if size > settings.max_header_field:
            self._line_read = True
            raise RequestError(431, "A request header field is too large")
        self._header_bytes += size
        if self._header_bytes > settings.max_header_total:
            self._line_read = True
            raise RequestError(431, "Request header fields too large")

    def on_trailer(self, name: bytes, value: bytes) -> None:
        """Check one trailer field line of a body parsed apart (an Upgrade request's)."""
        self._count_field_bytes(name, value)
        self._check_trailer(name)

    def _check_trailer(self, name: bytes) -> None:
        """Count a trailer field against max_header_count; refuse one RFC 9110 6.5.1 forbids.

        Trailer fields are not kept (none is passed on), so the count only bounds
        the work a client can ask for, as for the header section.
        """
        self._trailer_count += 1
        if self._trailer_count > self._settings.max_header_count:
            raise RequestError(431, "Too many request trailer fields")
        if name.lower() in rules.FORBIDDEN_TRAILERS:
            raise RequestError(400, f"Field not allowed in a trailer: {name.decode('latin-1')}")

    def on_headers_complete(self) -> None:
        """Apply the head rules and queue the exchange."""
        self._line_read = True
        parser = self._parser
        method: bytes = parser.get_method()
        target = self._url
        version = None
        line = self._message_read
        if line is not None:
            # The bytes this message began in (at its first byte, or at empty lines
            # before it). llhttp accepted its request line (RFC 9112 3): the method,
            # spaces, the target handed over, and spaces and the version, or CRLF
            # (0.9). Read single-spaced, the line ends with the 11 bytes after the
            # method, a space and the target; when those are a space, a version and
            # CRLF, they are the line's end whatever the spacing (a line feed ends
            # the line, and no target holds a space), so that version is the one
            # llhttp read. Asking llhttp costs more (get_http_version formats a new
            # string each time); anything else (empty lines first, another spacing or
            # version) asks it.
            self._message_read = None
            at = len(method) + len(target) + 1  # (the space between them)
            line_end = line[at : at + 11]
            if line_end == _VERSION_11_LINE_END:
                version = b"1.1"
            elif line_end == _VERSION_10_LINE_END:
                version = b"1.0"
        if version is None:
            if line is not None and rules.names_another_protocol(line):
                # llhttp takes RTSP/ and ICE/ too, and reports their digits only. Before
                # the version's own check: RTSP/2.0 is not HTTP, not an HTTP/2.0.
                self._message_read = line  # (_partial_request logs it with no version)
                raise RequestError(400, NOT_HTTP)
            version_text = parser.get_http_version()
            if version_text == "1.1":
                version = b"1.1"
            elif version_text == "1.0":
                version = b"1.0"
            else:
                raise RequestError(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
        host = self._host
        if host is not None:
            if host != self._valid_host:
                if not rules.is_valid_host(host):
                    raise RequestError(400, "Malformed Host field")
                self._valid_host = host
        elif version == b"1.1":
            raise RequestError(400, "Missing Host field")  # RFC 9112 3.2
        else:
            host = b""
        chunked = False
        if self._transfer_encodings is not None:
            if version == b"1.0":
                # RFC 9112 6.1: a server must treat TE in an HTTP/1.0 request as
                # faulty framing.
                raise RequestError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
            chunked = rules.transfer_coding_is_chunked(self._transfer_encodings)
        content_length = None
        if self._content_length is not None:
            if len(self._content_length) > 20:
                # 1*DIGIT (RFC 9110 8.6), but no length needs more than 20 digits:
                # only zero padding makes them, and a parser in front that keeps a
                # fixed number of digits would read another length (h11 refuses
                # them too). llhttp checks the value for overflow, not the digits.
                raise RequestError(400, "Content-Length has more than 20 digits")
            content_length = int(self._content_length)
        expects_continue = False
        if self._expect is not None:
            # Empty list elements are no expectation (RFC 9110 5.6.1); 100-continue
            # is the only one defined, and any other gets 417 (10.1.1).
            members = {m.strip().lower() for m in self._expect.split(b",")} - {b""}
            if members - {b"100-continue"}:
                raise RequestError(417, "Only the 100-continue expectation is supported")
            # RFC 9110 10.1.1: ignore 100-continue from HTTP/1.0 and without a body.
            expects_continue = (
                bool(members) and version == b"1.1" and (chunked or bool(content_length))
            )
        # (partition, not "in" or find, on each request: on Python 3.11 "in" first
        # tries the needle as an integer and builds a TypeError to throw away, and
        # find parses its arguments with the general tuple parser; partition takes
        # its one argument as it is, and copies nothing when the needle is absent.
        # Callgrind: ~450 instructions a find, ~200 a partition.)
        if target[:1] == b"/" and not target.partition(b"#")[1] and method != b"CONNECT":
            # origin-form, by far the most common (RFC 9112 3.2.1)
            path, _, query = target.partition(b"?")
            authority = host
        else:
            form = rules.classify_target(method, target)
            if form is rules.TargetForm.AUTHORITY:
                raise RequestError(501, "CONNECT is not supported")
            path, query, split_authority = rules.split_target(form, target)
            authority = host if split_authority is None else split_authority
        decoded_path = rules.unquote_path(path) if path.partition(b"%")[1] else path
        options = rules.connection_options(self._connection) if self._connection else _NO_OPTIONS
        # "close" wins over keep-alive whatever the version (RFC 9112 9.3, 9.6).
        # (_take_simple_head keeps a copy of these rules, and of the two limits below.)
        keep_alive = b"close" not in options and (version == b"1.1" or b"keep-alive" in options)
        if keep_alive and not self._settings.keepalive_timeout:
            # keepalive_timeout 0 turns persistence off (as nginx's does): say so in
            # the response, so no client tries to reuse the connection (RFC 9112 9.6).
            keep_alive = False
        self._requests += 1
        settings = self._settings
        most = settings.keepalive_requests
        lifetime = settings.keepalive_time
        if keep_alive and (
            (most and self._requests >= most)
            or (lifetime and self._head_began - self._opened_at >= lifetime)
        ):
            # keepalive_requests, keepalive_time: the last this connection serves
            # says so (RFC 9112 9.6); what a client pipelined behind it is not
            # answered, as nginx's, but the close lingers (_close_after_response).
            keep_alive = False
            self._retiring = True
        if not self._certificate_read:
            self._read_client_certificate()
        head = RequestHead(  # (in order, positionally: see RequestHead.__init__)
            method,
            target,
            path,
            decoded_path,
            query,
            version,
            self._headers,
            authority,
            content_length,
            chunked,
            self._scheme,
            self._peer,
            self._local,
            self._client_certificate,
        )
        at_once = False
        if chunked or content_length:
            # Decided from the head, before any of the body is read (nginx's
            # client_max_body_size); the mount the request goes to may set its own.
            max_body = self._settings.max_body
            mount_limit = self._factory.body_limit
            if mount_limit is not None:
                own = mount_limit(head)
                if own is not None:
                    # One its handler answers without the body is handed over now,
                    # whatever its length (the server's limit still bounds what is
                    # read of it, should the table change before it is handled).
                    at_once = own == UNREAD_BODY
                    if not at_once:
                        max_body = own
            self._max_body = max_body
            if (
                max_body
                and not at_once
                and content_length is not None
                and content_length > max_body
            ):
                self._refused_head = head
                raise RequestError(413, "Request body too large")
        if len(self._queue) >= MAX_QUEUED:
            self._refused_head = head
            raise RequestError(429, "Too many pipelined requests")
        exchange = HTTP11Exchange(self, head, keep_alive, expects_continue, self._head_began)
        exchange.at_once = at_once
        self._parsing = exchange
        queue = self._queue
        queue.append(exchange)
        if len(queue) > 1:
            # Pipelined: answer in order; stop reading until this one's turn.
            self.pause_reading("pipeline")
        self._read = _READ_BODY
        self._chunked = chunked
        self._chunked_head_done = chunked
        self._body_until = 0 if chunked else content_length or 0
        if chunked or content_length:
            self._update_read_deadline()
            if chunked or (content_length or 0) >= LARGE_BODY:
                self._set_read_size(LARGE_BODY_READ_SIZE)
        # else: on_message_complete follows at once and sets the deadline.

    def _read_client_certificate(self) -> None:
        """Learn what the TLS client's certificate says (its handshake is done by now).

        Once per connection: renegotiation is refused, so it cannot change.
        """
        self._certificate_read = True
        handle = getattr(self.transport, "getHandle", None)
        connection = handle() if handle is not None else None
        if isinstance(connection, SSL.Connection):
            self._client_certificate = from_connection(connection)

    def _set_read_size(self, size: int | None) -> None:
        """Read ``size`` bytes at a time from the socket (``None``: Twisted's default).

        Only a TCP or UNIX transport reads with ``bufferSize``; others keep theirs.
        """
        transport: Any = self.transport
        current = getattr(transport, "bufferSize", None)
        if not isinstance(current, int):
            return
        if size is None:
            size, self._default_read_size = self._default_read_size, None
        elif self._default_read_size is None:
            self._default_read_size = current
        transport.bufferSize = size

    def on_body(self, data: bytes) -> None:
        """Hand a piece of the body to the exchange being parsed."""
        self._body_bytes += len(data)
        self._framing_bytes = 0
        max_body = self._max_body
        if max_body and self._body_bytes > max_body:
            raise RequestError(413, "Request body too large")
        exchange = self._parsing
        if exchange is not None:
            exchange.body_arrived(data)
        if self._deadline_kind is _TIMEOUT_BODY and self._deadline is not None:
            self._deadline = self._clock.seconds() + self._settings.body_timeout

    def on_message_complete(self) -> None:
        """Mark the body complete; the connection is idle for reading again."""
        self._between_messages = True
        exchange = self._parsing
        # (Whether it has a body is asked first, of the exchange's body state, a slot
        # that is not COMPLETE exactly when request.has_body: the parser's answer is
        # a C call.)
        if (
            exchange is not None
            and exchange._body is not _BODY_COMPLETE
            and self._parser.should_upgrade()
        ):
            # httptools skips the body of an Upgrade request; _upgrade parses it.
            return
        self._parsing = None
        self._read = _READ_IDLE
        self._head_bytes = 0
        # Bytes that follow begin no request until llhttp says so (on_message_begin):
        # a refusal before that must not be logged with this request's target.
        self._url = b""
        if self._default_read_size is not None:
            self._set_read_size(None)
        if exchange is not None and exchange._body is not _BODY_COMPLETE:
            exchange.body_complete()  # (a request without a body has nothing to finish)
        if self._queue:
            self._deadline = None  # a handler is working; nothing to wait for
        else:
            self._update_read_deadline()

    # -- dispatch and completion --------------------------------------------------------

    def _dispatch(self, exchange: HTTP11Exchange) -> None:
        exchange.dispatched = True
        try:
            self._factory.handler.handle(exchange)
        except Exception:
            request = exchange.request
            _log.failure(
                "Handler failed for {method} {target}",
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
            )
            if not exchange.finished:
                if exchange.response_started:
                    exchange.abort()
                else:
                    exchange.send_error(RequestError(500, "Internal server error"))

    def exchange_done(self, exchange: HTTP11Exchange, keep_alive: bool) -> None:
        """Move on after ``exchange``'s response is complete (called by the exchange)."""
        if self._closed:
            return
        if self._queue and self._queue[0] is exchange:
            self._queue.popleft()
        self._response_producer = None
        if self._paced is not None:
            self._stop_pacing()
        # (An Upgrade request queued behind this one is not a reason to close: its
        # own head said so when it was answered. Shutting down is.)
        if not keep_alive or self._close_when_idle or self._factory.shutting_down:
            self._close_after_response(exchange)
            return
        if exchange._body is not _BODY_COMPLETE:  # (body_done, inline)
            if exchange.body_discardable:
                # Read and drop the rest, whatever its size, as nginx does: the
                # head promised persistence (RFC 9112 9.3), and the client may
                # send on until it sees the response. body_timeout still applies.
                exchange.discard_body()
            else:
                self._close_after_response(exchange)
                return
        if self._upgraded and not self._queue:
            # The Upgrade request was answered without switching, and the head said
            # the connection stays (see closing): HTTP/1.1 goes on.
            self._parse_http_again()
            return
        if self._queue or self._held:
            self._advance()
            return
        if self._read_pauses:
            self.resume_reading("pipeline")
        if self._read is _READ_IDLE:
            # (At max_connections with clients waiting, this response's head promised
            # keep-alive before they came: the connection is closed for them once
            # idle a little while, see HTTPFactory._drain_idle.)
            # (_set_deadline, inline: once per request on the hot path.)
            self.idle_since = now = self._clock.seconds()
            seconds = self._settings.keepalive_timeout
            self._deadline = deadline = now + seconds
            self._deadline_kind = _TIMEOUT_IDLE
            if self._timer is None or self._timer_at > deadline:
                self._arm(seconds, deadline)

    def _parse_http_again(self) -> None:
        """Read HTTP after an Upgrade request that was answered without switching.

        Llhttp stops for good at an Upgrade request, so a fresh parser takes what the
        client sent after the answer's head (kept in ``_upgrade_tail``) and what it
        sends from now on.
        """
        tail = self._upgrade_tail or b""
        self._upgrade_tail = None
        self._upgraded = False
        self._parser = _request_parser(self)
        self._read = _READ_IDLE
        self._between_messages = True
        self._cr_pending = False
        self._chunk_lines = False
        self._chunked_head_done = False
        self._fed_tail = b""
        self.idle_since = self._clock.seconds()
        self.resume_reading("upgrade")
        self.resume_reading("pipeline")
        if tail:
            self.dataReceived(tail)
        elif self._read is _READ_IDLE:
            self._set_deadline(self._settings.keepalive_timeout, _TIMEOUT_IDLE)

    def close_cut_short(self, exchange: HTTP11Exchange) -> None:
        """Close after a response its handler could not complete (see its abort)."""
        if self._closed:
            return
        self._response_producer = None
        self._stop_pacing()
        self._close_after_response(exchange)

    def _close_after_response(self, exchange: HTTP11Exchange | None) -> None:
        """Close after the response (lingering if the client may still be sending).

        Reading on for a while lets the client see the response rather than a reset.
        So does a connection this server retires (keepalive_requests, _time) with
        requests pipelined behind its last: the client could not know it was the
        last, and a close with its bytes unread in the socket would make the kernel
        reset the connection and drop the responses not sent yet.
        """
        behind = self._retiring and (bool(self._queue) or bool(self._held) or self._bytes_waiting())
        self._read = _READ_STOPPED
        self._method_line = None  # (a refused method queued behind is not answered)
        self._read_pauses.clear()
        self._queue.clear()
        body_pending = exchange is not None and not exchange.body_done
        if not body_pending and self._parsing is None and not behind:
            self.close_transport()
            return
        self._linger()

    def _linger(self) -> None:
        self._read = _READ_STOPPED
        self._read_pauses.clear()
        if not self._closed:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
        if self._scheme == "https":
            # TLS's own half-close: close_notify after the response (RFC 8446 6.1),
            # flushed from the TLS layer first; what the client still sends is read
            # and discarded until it closes or the linger timeout closes TCP. Not
            # loseWriteConnection: Twisted's TLS wrapper has none and hands the name
            # to the TCP transport below, whose shutdown would cut the connection
            # under TLS before the buffered response left (an empty reply).
            if not self._closed:
                self._end_sending()
        else:
            lose_write = getattr(self.transport, "loseWriteConnection", None)
            if lose_write is not None:
                lose_write()
        self._set_deadline(LINGER_TIMEOUT, _TIMEOUT_LINGER)

    # -- refusals -----------------------------------------------------------------------

    def _keep_line_start(self, data: bytes) -> None:
        """Keep what ``data`` (a read parsed whole) holds of a method cut by its end.

        llhttp refuses an unknown method at its first byte that no method it knows
        has there: in a later read, perhaps, when the line is split, and the answer
        to the method (:meth:`_method_refused`) needs the line from its first byte.
        """
        line_from, self._line_from = self._line_from, 0
        if self._read is not _READ_HEAD:
            return  # (refused for its size)
        line = self._line_so_far(data, line_from)
        # Once a byte that is no tchar has come (SP), llhttp has taken the method
        # and will not refuse it: nothing to keep.
        self._line_start = None if line.lstrip(rules.TCHAR_BYTES) else (self._requests, line)

    def _line_so_far(self, data: bytes, line_from: int) -> bytes:
        """The request line being read, from its first byte, to the end of ``data``.

        Its start kept from earlier reads (:meth:`_keep_line_start`) when no head was
        accepted since (then ``data`` goes on with it), else ``data`` from
        ``line_from`` on, after any empty lines, which llhttp skips.
        """
        kept = self._line_start
        if kept is not None and kept[0] == self._requests:
            return kept[1] + data[line_from:]
        return data[line_from:].lstrip(b"\r\n")

    def _method_refused(self, data: bytes, line_from: int) -> None:
        """Answer a method llhttp does not know: 501, or 400 if it is not a token.

        llhttp refused it at the first byte that cannot continue a method it knows,
        a place that depends on how the client's bytes were split into reads. The
        answer depends on the line only (see :func:`rules.unknown_method_status`): it
        is taken from the line's first byte, in ``data`` from ``line_from`` on (after
        any empty lines, which llhttp skips) or in an earlier read
        (:meth:`_keep_line_start`), and when the bytes so far do not decide it,
        parsing stops and more are read, up to the request-line limit, until the
        header timeout. The rest of a 501's request is never read: its framing is
        unknown.
        """
        line = self._line_so_far(data, line_from)
        self._line_start = None
        self._method_line = line
        self._read = _READ_STOPPED  # (llhttp stopped: dataReceived passes reads on)
        self._decide_method()

    def _method_line_received(self, data: bytes) -> None:
        """Bytes after a refused method that did not decide its answer yet."""
        assert self._method_line is not None
        self._method_line += data
        self._decide_method()

    def _decide_method(self) -> None:
        """Refuse the refused method's request if its line so far decides how."""
        line = self._method_line
        assert line is not None
        limit = self._settings.max_request_line
        status = rules.unknown_method_status(line, limit)
        if status is None:
            return  # all tchar so far: wait for the rest of the token
        # Logged as a refused request line is: what was read of it (nginx logs the
        # raw line), which for a method that is not a token is nothing.
        if status == 501:
            request = PartialRequest(method=line.partition(b" ")[0], peer=self._peer)
            error = RequestError(501, METHOD_NOT_IMPLEMENTED)
        elif status == 414:
            # Kept cut at the limit, as a long request-target is (on_url).
            request = PartialRequest(method=line[:limit], peer=self._peer)
            error = RequestError(414, "Request method too long")
        else:
            request = PartialRequest(peer=self._peer)
            error = RequestError(400, "Invalid request method")
        self._fail(error, request)

    def _fail(self, error: RequestError, partial: PartialRequest | None = None) -> None:
        """Refuse the request being parsed (or time it out): no more parsing.

        ``partial``: what was read of its head, when llhttp's state does not say.
        """
        if self._closed or (self._read is _READ_STOPPED and self._method_line is None):
            return  # (a refused method waiting for its answer has one to get)
        self._method_line = None
        self._read = _READ_STOPPED
        exchange = self._parsing
        self._parsing = None
        if exchange is not None:
            # The head was accepted and handed on; only its body failed.
            exchange.body_error(error)
            if exchange.finished:
                # Its response was complete and the rest of the body was being
                # discarded (exchange_done): an answer now would be taken for the
                # next request's. The connection closes, lingering, since the
                # client may still be sending and must not lose that response.
                self._log_body_failure(
                    "Closing the connection of {peer}: the unread body of an answered"
                    " request failed",
                    error,
                )
                self._close_after_response(exchange)
                return
            if exchange.dispatched:
                if exchange.response_started:
                    self._log_body_failure(
                        "Dropped the response to {peer}: its request body failed", error
                    )
                    exchange.abort()
                else:
                    self._log_refusal(error)
                    exchange.send_error(error)
                return
            if not exchange.dispatched and self._queue and self._queue[-1] is exchange:
                self._queue.pop()
            refusal = Refusal(exchange.request, error, exchange.started)
        else:
            head, self._refused_head = self._refused_head, None
            if head is not None:
                request: RequestHead | PartialRequest = head
            else:
                request = partial if partial is not None else self._partial_request()
            refusal = Refusal(request, error, self._head_began)
        if self._queue:
            self._queue.append(refusal)
            self.pause_reading("error")
        else:
            self._send_error_response(refusal)

    def _log_body_failure(self, text: str, error: RequestError) -> None:
        """Log ``text`` (with ``{peer}``) and why the body failed, after a response began."""
        _log.info(
            text + " ({status} {detail})",
            peer=describe_peer(self._peer),
            status=error.status,
            detail=error.detail,
        )

    def _partial_request(self) -> PartialRequest:
        """What was read of the request being refused (parsing has stopped in it)."""
        target = self._url
        if not target and not self._target_refused:
            # llhttp reads the method before the target, but until the target starts
            # get_method() returns a leftover (the previous request's method, or
            # DELETE, method 0), not this request's. A target refused at its first
            # bytes started after a method read whole (a HEAD's refusal has no body).
            return PartialRequest(peer=self._peer)
        parser = self._parser
        method: bytes = parser.get_method()
        # get_http_version() too keeps the previous message's value until llhttp has
        # read this request line's version.
        read = self._line_read or bool(self._headers)
        version = parser.get_http_version().encode("ascii") if read else b""
        kept = self._message_read
        if version and kept is not None and rules.names_another_protocol(kept):
            version = b""  # RTSP/1.0's digits are no HTTP version (not logged as one)
        return PartialRequest(
            method=method, target=target, version=version, headers=self._headers, peer=self._peer
        )

    def _plain_http_refused(self, data: bytes) -> bytes:
        """The 400 for plain HTTP on this TLS port, logged with its request line."""
        if self._addresses_pending and not self._learn_addresses():
            return b""  # (a PROXY header naming no address: dropped)
        line = data.split(b"\n", 1)[0].rstrip(b"\r")[: self._settings.max_request_line]
        method, _, rest = line.partition(b" ")
        target, _, protocol = rest.partition(b" ")
        version = protocol[5:] if protocol.startswith(b"HTTP/") else b""
        request = PartialRequest(method=method, target=target, version=version, peer=self._peer)
        refusal = Refusal(request, RequestError(400, PLAIN_HTTP_REASON), self._clock.seconds())
        return self._answer_refusal(refusal)

    def _log_refusal(self, error: RequestError) -> None:
        _log.info(
            "Refused a request from {peer}: {status} {detail}",
            peer=describe_peer(self._peer),
            status=error.status,
            detail=error.detail,
        )

    def _answer_refusal(self, refusal: Refusal) -> bytes:
        """Log ``refusal`` (server log and access log) and return its response."""
        error = refusal.error
        self._log_refusal(error)
        request = refusal.request
        page = None
        if isinstance(request, RequestHead) or (
            # A head cut off by the header timeout gets no page (nginx sends none),
            # nor do the refusals whose words say what to do instead.
            error.status != 408 and error.detail not in _OWN_WORDS
        ):
            page = self.error_page(request, error.status)
        # The answer to a HEAD request has no body, refusals included (RFC 9110 9.3.2).
        body = request.method != b"HEAD"
        if body:
            refusal.body_sent = len(page.body if page is not None else _error_body(error))
        self.log_response(refusal)
        return self.error_response_bytes(error, include_body=body, page=page)

    def error_page(self, request: RequestHead | PartialRequest, status: int) -> ErrorPage | None:
        """The page the host of ``request`` sends for ``status``, if it has one.

        For refusals after a request's head was accepted (a body too large, too slow
        or malformed; 417), as nginx's error_page applies to a server's own 413, and
        for a head that could not be read (the host its Host field named if read,
        else the default host: see the router's ``error_pages_for``).
        """
        pages_for = self._factory.error_pages
        if pages_for is None:
            return None
        pages = pages_for(request)
        return None if pages is None else pages.get(status)

    def _send_error_response(self, refusal: Refusal) -> None:
        """Write a complete error response with ``Connection: close``, log it, linger."""
        write_now(self.transport, self._answer_refusal(refusal))
        self._linger()

    def log_response(self, response: HTTP11Exchange | Refusal) -> None:
        """Hand an ended exchange or a refusal to the response log (the access log).

        :meth:`HTTP11Exchange._ended` does the same in place, once per response (a
        call less on every request): a change here is made there too.
        """
        factory = self._factory
        factory.responses += 1
        response_log = factory.response_log
        if response_log is not None:
            try:
                response_log(response)
            except Exception:
                _log.failure("The access log failed")

    def error_response_bytes(
        self, error: RequestError, *, include_body: bool, page: ErrorPage | None = None
    ) -> bytes:
        """Serialise a short error response that closes the connection.

        Plain text, or ``page`` (the host's error page) when given.
        """
        body = _error_body(error) if page is None else page.body
        content_type = b"text/plain; charset=utf-8" if page is None else page.content_type
        fields = [
            status_line(error.status),
            b"Content-Type: " + content_type + b"\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n",
        ]
        fields.append(self._factory.date_cache.get_fields(self._clock.seconds()))
        fields.append(b"\r\n")
        if include_body:
            fields.append(body)
        return b"".join(fields)

    def _upgrade(self, tail: bytes) -> None:
        """Llhttp stopped after an ``Upgrade`` request: no more parsing for now.

        A handler may accept the upgrade (:meth:`HTTP11Exchange.upgrade`, for a
        request without a body): the connection then becomes a tunnel, and the bytes
        that followed the head are its first bytes. Otherwise the request is answered
        as an ordinary one (RFC 9110 7.8 lets a server ignore Upgrade) and the
        connection closes after it, unless :attr:`closing` let it stay (then
        :meth:`_parse_http_again` takes over). httptools skips the body of such a
        request; when it has one, :class:`_SkippedBody` parses it from the bytes that
        follow the head. Anything after the body belongs to the other protocol and is
        discarded.
        """
        self._upgraded = True
        exchange = self._parsing
        if exchange is not None:
            self._skipped_body = _SkippedBody(self, exchange.request)
            if exchange.request.chunked:
                self._begin_chunk_lines()  # its lines are checked too
            self._feed_skipped_body(tail)
        else:
            self._upgrade_tail = tail
            self._read = _READ_STOPPED
            if len(tail) > UPGRADE_TAIL_LIMIT:
                self.pause_reading("upgrade")

    def may_switch(self, exchange: HTTP11Exchange) -> bool:
        """Whether the connection may become ``exchange``'s tunnel.

        Parsing stopped at its Upgrade head (a request without a body), and it is
        the only exchange queued.
        """
        queue = self._queue
        return self._upgrade_tail is not None and len(queue) == 1 and queue[0] is exchange

    def start_tunnel(self, head: bytes, receiver: Any, exchange: HTTP11Exchange) -> Tunnel:
        """Send the 101 head and make the connection a tunnel to ``receiver``.

        ``exchange`` (the Upgrade request's) counts the bytes sent to the client
        and is logged when the connection ends.
        """
        if self._upgrade_tail is None or self._read is not _READ_STOPPED or self._closed:
            raise RuntimeError("Only an Upgrade request without a body can be upgraded")
        tail, self._upgrade_tail = self._upgrade_tail, None
        write_now(self.transport, head)
        self._tunnel = receiver
        self._read = _READ_TUNNEL
        self._deadline = None
        self._queue.clear()
        self.resume_reading("upgrade")
        self._tunnel_exchange = exchange
        if tail:
            receiver.data_received(tail)
        return Tunnel(self, exchange)

    def _feed_skipped_body(self, data: bytes) -> None:
        skipped = self._skipped_body
        assert skipped is not None
        self._framing_bytes += len(data)
        try:
            if self._chunk_lines:
                # As _feed_chunks, but whole: after the last chunk, the trailer
                # section and then the other protocol's bytes.
                end, valid = self._check_chunk_lines(data, 0)
                if not valid:
                    skipped.parser.feed_data(data[:end])  # llhttp's refusal first
                    raise RequestError(400, "Invalid chunk extension")
            skipped.parser.feed_data(data)
        except RequestError as error:
            self._skipped_body = None
            self._fail(error)
            return
        except httptools.HttpParserError as error:
            if not skipped.complete:  # (complete: the body ended, the rest is not HTTP)
                self._skipped_body = None
                self._fail(_refusal(error))
                return
        if not skipped.complete and self._framing_bytes > self._settings.max_header_total:
            # As for any body (see dataReceived): llhttp holds a trailer line whole.
            self._skipped_body = None
            self._fail(RequestError(431, "Chunk framing or trailer section too large"))
            return
        if skipped.complete:
            self._skipped_body = None
            exchange = self._parsing
            self._parsing = None
            self._read = _READ_STOPPED
            self.pause_reading("upgrade")
            if exchange is not None:
                exchange.body_complete()

    def date_fields(self, date: bool, server: bool) -> bytes:
        """The ``Date`` and/or ``Server`` field lines for now, ending in CRLF."""
        cache = self._factory.date_cache
        if date and server:
            return cache.get_fields(self._clock.seconds())
        lines = b""
        if date:
            lines = b"Date: " + cache.get(self._clock.seconds()) + b"\r\n"
        if server and cache.server:
            lines += b"Server: " + cache.server + b"\r\n"
        return lines

    @property
    def settings(self) -> HttpSettings:
        """The connection's limits and timeouts."""
        return self._settings

    @property
    def clock(self) -> IReactorTime:
        """The connection's clock."""
        return self._clock

    @property
    def closing(self) -> bool:
        """Whether the connection closes after the current response.

        After an Upgrade request, parsing has stopped: the requests pipelined before it
        are still answered on a kept-alive connection, and the Upgrade request itself,
        the last one queued, is answered last (or switches protocols). Answered
        without switching, it keeps the connection only if it had no body and the
        client has sent nothing since: bytes sent before the answer may be the other
        protocol's (RFC 9110 7.8 lets a client begin it right after the request), and
        llhttp does not say where an Upgrade request's body ends.

        At ``max_connections``, with a client waiting in the backlog, a response says
        ``Connection: close`` and gives its connection's place up, rather than
        holding it idle for the keep-alive timeout (nginx drains keep-alive
        connections when it needs one; announcing the close spares the client a
        request sent on a connection closing under it).

        :meth:`HTTP11Exchange._head` asks this only when one of the four attributes
        it rests on (``at_capacity``, which ``clients_waiting`` needs,
        ``_close_when_idle``, ``_upgraded``, ``shutting_down``) is set: a new
        condition here goes into that test too.
        """
        return (
            self._factory.clients_waiting()
            or self._close_when_idle
            or (self._upgraded and len(self._queue) <= 1 and self._upgrade_tail != b"")
            or self._factory.shutting_down
        )

    def update_read_deadline(self) -> None:
        """Re-evaluate the read deadline after an exchange changed its body state."""
        self._update_read_deadline()


def _error_body(error: RequestError) -> bytes:
    """The body of the error response that answers ``error``."""
    return error.detail.encode("utf-8") + b"\n"


#: Words in llhttp's reasons for a malformed header section (its field lines, the
#: framing fields): the request line before it was read whole.
_FIELD_WORDS = ("header", "Content-Length", "Transfer-Encoding")


def _names_a_field(error: Exception) -> bool:
    """Whether llhttp refused the request in its header section (for the access log).

    httptools reports a field line only once the next one begins, so a request that
    fails in a field line may have reported none; llhttp's reason is all that says
    its request line was complete.
    """
    if isinstance(error, httptools.HttpParserCallbackError):
        return False
    reason = str(error)
    return any(word in reason for word in _FIELD_WORDS)


_HTTP2_PREFACE = "HTTP/2 is not served on this port; use HTTP/1.1"
#: The reason of the 501 that answers a method the server does not know.
METHOD_NOT_IMPLEMENTED = "Request method not implemented"
#: Refusals whose plain words tell the client what to do: no error page replaces them.
_OWN_WORDS = frozenset({_HTTP2_PREFACE, PLAIN_HTTP_REASON})


def _http2_preface() -> RequestError:
    """The answer to the PRI method (505).

    PRI only starts HTTP/2's connection preface (RFC 9113 3.4): whatever follows it,
    the client speaks a version this port does not.
    """
    return RequestError(505, _HTTP2_PREFACE)


#: llhttp's reason for an RTSP method in an HTTP request line.
_LLHTTP_RTSP_METHOD = "Invalid method for HTTP/x.x request"
#: llhttp's reason for version digits it does not take (HTTP/1.2, RTSP/9.9).
_LLHTTP_BAD_VERSION = "Invalid HTTP version"
#: The reason of the 400 that answers a request line whose protocol is RTSP/ or ICE/,
#: which llhttp takes (RFC 9112 2.3: HTTP-name is "HTTP", case-sensitive; nginx
#: answers 400 too).
NOT_HTTP = "Request line's protocol is not HTTP"

#: llhttp's reasons for a PRI request it read to the end of its head.
_LLHTTP_PREFACE_ERRORS = frozenset({"Pause on PRI/Upgrade", "Expected HTTP/2 Connection Preface"})


def _refusal(error: Exception) -> RequestError:
    """Map a parser exception to the refusal to answer with."""
    if isinstance(error, httptools.HttpParserCallbackError):
        cause = error.__context__
        if isinstance(cause, RequestError):
            return cause
        _log.failure(
            "Unexpected error while parsing a request",
            failure=Failure(cause) if isinstance(cause, BaseException) else None,
        )
        return RequestError(500, "Internal server error")
    if isinstance(error, httptools.HttpParserInvalidMethodError):
        return RequestError(400, "Invalid request method")
    reason = str(error)
    if reason in _LLHTTP_PREFACE_ERRORS:
        return _http2_preface()
    if reason == _LLHTTP_RTSP_METHOD:
        # A method llhttp knows for RTSP only (DESCRIBE, SETUP, ...), refused at the
        # version that follows the target, wherever the reads were split: a token
        # this server does not implement either (RFC 9110 9.1).
        return RequestError(501, METHOD_NOT_IMPLEMENTED)
    if reason == _LLHTTP_BAD_VERSION:
        return RequestError(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
    return RequestError(400, reason)


class _MethodRefused(Exception):  # noqa: N818 - control flow, not an error
    """llhttp refused a method in a piece :meth:`HTTP11Protocol._feed` cut.

    Attributes:
        line_from: where that piece starts in the read (the request line starts
            there, after any empty lines, unless it began in an earlier read).
    """

    def __init__(self, line_from: int) -> None:
        super().__init__(line_from)
        self.line_from = line_from


class _BodyEnded(Exception):  # noqa: N818 - control flow, not an error
    """Stops the body-only parser at the end of the body."""


class _SkippedBody:
    """Parses the body httptools skipped after the head of an Upgrade request.

    A second parser is primed with a head that declares the same framing, so the
    body gets the same length, chunk and limit checks as any other (its chunk-size
    lines are checked whole by the protocol, see :meth:`HTTP11Protocol._upgrade`).

    Attributes:
        parser: the body-only parser.
        complete: set when the body has been read whole.
    """

    def __init__(self, protocol: HTTP11Protocol, request: RequestHead) -> None:
        self._protocol = protocol
        self.complete = False
        self._in_body = False
        self.parser = httptools.HttpRequestParser(self)
        framing = (
            b"Transfer-Encoding: chunked"
            if request.chunked
            else b"Content-Length: %d" % (request.content_length or 0)
        )
        self.parser.feed_data(b"PUT / HTTP/1.1\r\nHost: body\r\n" + framing + b"\r\n\r\n")

    def on_body(self, data: bytes) -> None:
        """Hand a piece of the body to the protocol, with its limit checks."""
        self._protocol.on_body(data)

    def on_headers_complete(self) -> None:
        """The primed head is done; field lines from now on are trailers."""
        self._in_body = True

    def on_header(self, name: bytes, value: bytes) -> None:
        """Check a trailer field."""
        if self._in_body:
            self._protocol.on_trailer(name, value)

    def on_message_complete(self) -> None:
        """The body is complete: stop there, what follows is the other protocol's."""
        self.complete = True
        raise _BodyEnded


class Tunnel:
    """A connection that switched protocols (101): raw bytes both ways.

    Made by :meth:`HTTP11Exchange.upgrade`. Bytes from the client go to the
    receiver's ``data_received``; the end of the connection to its
    ``connection_lost(reason)``. Reactor thread only.
    """

    def __init__(self, protocol: HTTP11Protocol, exchange: HTTP11Exchange) -> None:
        self._protocol = protocol
        self._exchange = exchange

    def write(self, data: bytes) -> None:
        """Send ``data`` to the client."""
        if data:
            self._exchange.body_sent += len(data)
            write_now(self._protocol.transport, data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Have ``producer`` paused while the client is not reading (push only)."""
        if not streaming:
            raise ValueError("Tunnels take streaming (push) producers only")
        self._protocol.set_response_producer(producer)

    def unregisterProducer(self) -> None:
        """Stop forwarding flow-control events."""
        self._protocol.set_response_producer(None)

    def pause_reading(self) -> None:
        """Stop reading from the client (the other side is not keeping up)."""
        self._protocol.pause_reading("tunnel")

    def resume_reading(self) -> None:
        """Read from the client again."""
        self._protocol.resume_reading("tunnel")

    def close(self) -> None:
        """Close the connection once what was written has been sent."""
        self._protocol.close_transport()

    def abort(self) -> None:
        """Drop the connection now."""
        self._protocol.abort_connection()


#: Linux's TCP_INFO socket option, and its state of an open connection
#: (include/net/tcp_states.h: TCP_ESTABLISHED).
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_TCP_ESTABLISHED = 1


# Response fields the server looks at: framing, persistence, Date and Server.
_MANAGED_FIELDS = rules.HOP_BY_HOP | {b"content-length", b"date", b"server"}


class _Fields:
    """A response's header fields as the protocol sends them, scanned once.

    Attributes:
        status: the status they were scanned for (Content-Length depends on it).
        block: the field lines to send, serialised (hop-by-hop fields removed).
        content_length: the declared length, or ``None``.
        has_date: whether the handler set ``Date``.
        has_server: whether the handler set ``Server``.
        close: whether the handler asked for ``Connection: close``.
        problems: what was wrong with the fields and was dropped, one sentence each,
            for the log (which names the request).
        opening: for fields kept with their headers (PreparedHeaders), the status
            line for ``reason`` and ``block`` after it, serialised at their first
            response (``None`` until then).
        reason: the reason phrase ``opening`` was made with.
    """

    __slots__ = (
        "block",
        "close",
        "content_length",
        "has_date",
        "has_server",
        "opening",
        "problems",
        "reason",
        "status",
    )

    # Positional: one is made for most responses, and keyword arguments to a class
    # cost it a dict (timeit, CPython 3.11: 0.37 us with four of them, 0.17 without).
    def __init__(  # noqa: PLR0917
        self,
        status: int,
        block: bytes,
        content_length: int | None,
        has_date: bool,
        has_server: bool,
        close: bool,
        problems: tuple[str, ...] = (),
    ) -> None:
        self.status = status
        self.block = block
        self.content_length = content_length
        self.has_date = has_date
        self.has_server = has_server
        self.close = close
        self.problems = problems
        self.opening: bytes | None = None
        self.reason: bytes | None = None


#: What send_file gives _head for ``final_length``: a head for a file, never gzipped.
_NO_GZIP = -1


def _joined(
    added: dict[object, list[tuple[bytes, bytes]]],
) -> list[tuple[bytes, bytes]]:
    """The fields every gate added, in the order the gates first added theirs."""
    return [field for fields in added.values() for field in fields]


def _with_mount_fields(
    headers: list[tuple[bytes, bytes]], added: tuple[tuple[bytes, bytes], ...]
) -> list[tuple[bytes, bytes]]:
    """``headers`` and the mount's fields it does not have (the handler's win)."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *(field for field in added if field[0].lower() not in present)]


def _scan_fields(headers: list[tuple[bytes, bytes]], status: int) -> _Fields:
    """Serialise a handler's header fields, keeping what framing needs to know."""
    lines = []
    problems: list[str] = []
    content_length: int | None = None
    has_date = has_server = close = conflicting = upgrade = False
    for name, value in headers:
        lower = name.lower()
        if lower in _MANAGED_FIELDS:
            if lower in rules.HOP_BY_HOP:
                if lower != b"upgrade" or status != 426:
                    # The server frames the message and decides persistence itself;
                    # a handler asking for Connection: close gets it.
                    if lower == b"connection" and b"close" in rules.connection_options(value):
                        close = True
                    elif lower == b"transfer-encoding":
                        # A handler that chunks its own body would be chunked twice.
                        problems.append(
                            f"Dropped Transfer-Encoding: {value.decode('latin-1')}"
                            " (the server frames the body itself)"
                        )
                    continue
                upgrade = True  # a 426 must say what to upgrade to (RFC 9110 15.5.22)
            elif lower == b"content-length":
                if status in (204, 205) or status < 200:
                    # RFC 9110 8.6: never with 1xx or 204; a 205 says 0 (below).
                    continue
                if not value.isdigit():
                    problems.append(f"Dropped an invalid Content-Length: {value!r}")
                    continue
                declared = int(value)
                if content_length is not None:
                    if declared != content_length:
                        # RFC 9112 6.3: a recipient cannot tell which is right. Send
                        # neither; the body is framed by chunks or the close instead.
                        problems.append(
                            "Dropped conflicting Content-Length fields:"
                            f" {content_length} and {declared}"
                        )
                        conflicting = True
                    continue  # one field line, whatever the handler repeated
                content_length = declared
            elif lower == b"date":
                if has_date:
                    # RFC 9110 6.6.1: one HTTP-date (5.3: no repeated singleton field).
                    problems.append("Dropped a second Date field")
                    continue
                has_date = True
            else:
                if has_server:
                    problems.append("Dropped a second Server field")
                    continue
                has_server = True
        lines.append(name + b": " + value + b"\r\n")
    if conflicting:
        lines = [line for line in lines if not line.lower().startswith(b"content-length:")]
        content_length = None
    if status == 205:
        # RFC 9110 15.3.6: no content in a 205, said with Content-Length: 0.
        content_length = 0
        lines.append(b"Content-Length: 0\r\n")
    if upgrade:
        # RFC 9110 7.8: Upgrade goes with the "upgrade" connection option (a second
        # Connection line if the server adds "close": the two make one list).
        lines.append(b"Connection: upgrade\r\n")
    return _Fields(
        status,
        b"".join(lines),
        content_length,
        has_date,
        has_server,
        close,
        tuple(problems) if problems else (),
    )


class _Body(Enum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    FAILED = "failed"


_BODY_RECEIVING: Final = _Body.RECEIVING
_BODY_COMPLETE: Final = _Body.COMPLETE
_BODY_FAILED: Final = _Body.FAILED


class HTTP11Exchange:
    """The HTTP/1.1 implementation of :class:`~twistwsgi.http.exchange.Exchange`.

    Response heads are serialised lazily, with the first body bytes (or at
    ``send_head``), so that a response written as ``start_response`` then
    ``finish(body)`` goes out in one ``write`` with an exact ``Content-Length``
    instead of chunked framing.

    Attributes:
        request: the request facts.
        dispatched: whether the handler was given this exchange.
        response_started: whether ``start_response`` was called.
        finished: whether the exchange is over (sent, aborted or lost).
        status: the response status (0 before ``start_response``).
        body_sent: response body bytes handed to the transport (a file's, to the
            kernel, as they go), framing excluded.
        client_closed: whether the exchange ended because the client closed the
            connection (before the response was complete).
        started: when the first byte of the request arrived (clock seconds).
        log_notes: what the handler left for the access log (see Exchange).
        remote_user: the user Basic authentication let through (see Exchange).
        access_log: where its access-log line goes, if not the server's log (see
            Exchange).
        limit_rate: the rate its response is sent at most (see Exchange).
    """

    __slots__ = (
        "_added_fields",
        "_body",
        "_body_error",
        "_body_pending",
        "_body_pending_size",
        "_body_received",
        "_close_callbacks",
        "_content_length",
        "_continue",
        "_cut_logged",
        "_discarding",
        "_file_pending",
        "_file_sending",
        "_framing",
        "_gzip",
        "_head_pending",
        "_keep_alive",
        "_pace",
        "_protocol",
        "_reason",
        "_receiver",
        "_response_headers",
        "access_log",
        "at_once",
        "body_sent",
        "client_closed",
        "dispatched",
        "finished",
        "limit_rate",
        "limit_rate_after",
        "log_notes",
        "remote_user",
        "request",
        "response_started",
        "route",
        "started",
        "status",
    )

    def __init__(
        self,
        protocol: HTTP11Protocol,
        request: RequestHead,
        keep_alive: bool,
        expects_continue: bool,
        started: float,
    ) -> None:
        self._protocol = protocol
        self.request = request
        self.started = started
        self.log_notes: LogNotes | None = None
        self.remote_user: str | None = None
        self.route: Route | None = None
        self.access_log: Callable[[Any], None] | None = None  # (the server's)
        self.limit_rate: tuple[int, int] | None = None
        self.limit_rate_after = 0
        self._pace: ResponsePace | None = None  # (once the response is paced)
        self._keep_alive = keep_alive
        # None: no 100-continue involved; False: asked for, not sent; True: sent.
        self._continue: bool | None = False if expects_continue else None
        self._body = (
            _BODY_RECEIVING if request.chunked or request.content_length else _BODY_COMPLETE
        )
        self._body_error: Exception | None = None
        self._body_pending: list[bytes] = []
        self._body_pending_size = 0
        self._body_received = 0
        self._receiver: Any = None
        self._discarding = False
        self._close_callbacks: list[Callable[[Failure | None], object]] | None = None
        self._cut_logged = False
        self.dispatched = False
        # Answered without its body (see UNREAD_BODY): ready from its head.
        self.at_once = False
        self.response_started = False
        self.finished = False
        self.status = 0
        self._reason: bytes | None = None
        self._response_headers: list[tuple[bytes, bytes]] = []
        # What gates add to the response (see Exchange.set_response_fields), by gate.
        self._added_fields: dict[object, list[tuple[bytes, bytes]]] | None = None
        self._head_pending = False
        self._framing = _FRAMING_NONE
        self._content_length = 0
        self.body_sent = 0
        self.client_closed = False
        # Bytes of files handed to send_file and not sent yet: the framing counts
        # them as written, body_sent only once they are.
        self._file_pending = 0
        self._file_sending: Deferred[None] | None = None  # the file going out, if any
        # The body's compressor while a response is sent gzipped (see _head).
        self._gzip: Any = None

    # -- request body -----------------------------------------------------------------

    @property
    def body_done(self) -> bool:
        """Whether the request body has been received whole (or there is none)."""
        return self._body is _BODY_COMPLETE

    @property
    def ready(self) -> bool:
        """Whether the exchange can be handed to its handler (see DISPATCH_BUFFER)."""
        return (
            self._body is not _BODY_RECEIVING
            or self._continue is False
            or self._body_pending_size >= DISPATCH_BUFFER
            or self.at_once
        )

    @property
    def awaiting_continue(self) -> bool:
        """Whether the client waits for ``100 Continue`` before sending the body."""
        return self._continue is False and self._body is _BODY_RECEIVING

    def receive_body(self, receiver: Any) -> None:
        """Attach the body receiver and deliver what is already buffered."""
        self._receiver = receiver
        pending, self._body_pending = self._body_pending, []
        had = self._body_pending_size
        self._body_pending_size = 0
        for data in pending:
            receiver.body_received(data)
        if had > BODY_HIGH_WATER:
            self._protocol.resume_reading("body-buffer")
        if self._body is _BODY_COMPLETE:
            receiver.body_finished()
        elif self._body is _BODY_FAILED:
            assert self._body_error is not None
            receiver.body_failed(self._body_error)

    def continue_body(self) -> None:
        """Send ``100 Continue`` if the client asked for it and nothing was sent yet."""
        if self._continue is False and not self.finished and not self.response_started:
            self._continue = True
            write_now(self._protocol.transport, _CONTINUE)
            self._protocol.update_read_deadline()

    def send_interim(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> None:
        """Send a ``1xx`` head now, unless the client cannot take it (see Exchange)."""
        if not 102 <= status <= 199:
            raise ValueError(f"not an interim status for send_interim: {status}")
        # RFC 9110 15.2: a server must not send a 1xx response to an HTTP/1.0 client.
        if self.finished or self.response_started or self.request.version != b"1.1":
            return
        fields = _scan_fields(headers, status).block
        write_now(self._protocol.transport, status_line(status, reason) + fields + b"\r\n")

    def pause_body(self) -> None:
        """Stop reading from the client until :meth:`resume_body`."""
        if self._body is _BODY_RECEIVING:
            self._protocol.pause_reading("body")

    def resume_body(self) -> None:
        """Read from the client again."""
        self._protocol.resume_reading("body")

    def body_arrived(self, data: bytes) -> None:
        """Take a piece of the body from the protocol."""
        self._body_received += len(data)
        if self._discarding:
            return
        receiver = self._receiver
        if receiver is not None:
            receiver.body_received(data)
            return
        self._body_pending.append(data)
        self._body_pending_size += len(data)
        if self._body_pending_size > BODY_HIGH_WATER:
            self._protocol.pause_reading("body-buffer")

    def body_complete(self) -> None:
        """The protocol parsed the end of the body."""
        if self._body is _BODY_COMPLETE:
            return  # a request without a body
        self._body = _BODY_COMPLETE
        self._protocol.resume_reading("body")
        if self._discarding:
            return
        if self._receiver is not None:
            self._receiver.body_finished()

    def body_error(self, error: Exception) -> None:
        """The body will never be complete."""
        if self._body is not _BODY_RECEIVING:
            return
        self._body = _BODY_FAILED
        self._body_error = error
        if self._receiver is not None and not self._discarding:
            self._receiver.body_failed(error)

    @property
    def body_discardable(self) -> bool:
        """Whether the unread rest of the body can be read and dropped.

        Not when it failed, nor when the client still waits for ``100 Continue``
        (it may never send it; the head said close, RFC 9110 10.1.1).
        """
        return self._body is not _BODY_FAILED and self._continue is not False

    def discard_body(self) -> None:
        """Drop the rest of the body as it arrives, to keep the connection."""
        self._discarding = True
        self._body_pending = []
        protocol = self._protocol
        protocol.resume_reading("body")
        protocol.resume_reading("body-buffer")
        protocol.update_read_deadline()  # body_timeout, as for any body

    # -- response -----------------------------------------------------------------------

    def start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> None:
        """Record the status and fields; they are sent with the first body bytes."""
        if self.finished:
            return
        if self.response_started:
            raise RuntimeError("start_response called twice")
        self.response_started = True
        self.status = status
        self._reason = reason
        route = self.route
        if route is not None and route.headers:
            headers = _with_mount_fields(headers, route.headers)
        if self._added_fields:
            headers = [*headers, *_joined(self._added_fields)]
        self._response_headers = headers
        self._head_pending = True

    def set_response_fields(self, owner: object, fields: list[tuple[bytes, bytes]]) -> None:
        """Send ``fields`` with whatever response this exchange gets (see Exchange)."""
        if self._added_fields is None:
            self._added_fields = {}
        self._added_fields[owner] = list(fields)

    def _head(self, final_length: int | None) -> bytes:
        """Serialise the head, deciding framing and persistence (RFC 9112 6, 9.3).

        Args:
            final_length: the whole body's length when it is already known (the
                response is finished with this write), else ``None``.
        """
        self._head_pending = False
        request = self.request
        status = self.status
        protocol = self._protocol
        headers = self._response_headers
        route = self.route
        if route is not None and route.gzip is not None and final_length != _NO_GZIP:
            plan = gzip_plan(request, status, headers, route.gzip, final_length)
            if plan is not None:
                original = headers
                headers, compress = plan
                if compress:
                    final_length = None  # the compressed length is known at the end only
                    if request.method != b"HEAD":  # (the fields of a GET, no body)
                        self._gzip = GzipStream(route.gzip, declared_length(original))
        elif final_length == _NO_GZIP:
            final_length = None
        reason = self._reason
        if type(headers) is PreparedHeaders:
            fields = headers.wire
            if not (
                isinstance(fields, _Fields)
                and fields.status == status
                and fields.opening is not None
                and fields.reason == reason
            ):
                fields = headers.wire = _scan_fields(headers, status)
                fields.reason = reason
                fields.opening = status_line(status, reason) + fields.block
            opening = fields.opening
        else:
            fields = _scan_fields(headers, status)
            opening = status_line(status, reason) + fields.block
        for problem in fields.problems:
            _log.error(
                "{problem}, in the response to {method} {target}",
                problem=problem,
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
            )
        keep_alive = self._keep_alive and not fields.close
        factory = protocol._factory
        if keep_alive and (
            factory.at_capacity
            or protocol._close_when_idle
            or protocol._upgraded
            or factory.shutting_down
        ):
            # (What closing requires one of, asked first: the property, and the
            # clients_waiting it calls, are two calls a response otherwise.)
            keep_alive = not protocol.closing
        # The head is joined with + rather than a list and b"".join: it is two or three
        # pieces, and the list, its appends and the join cost ~1,000 instructions
        # more (callgrind).
        head = opening
        content_length = fields.content_length
        has_date = fields.has_date
        has_server = fields.has_server
        if request.method == b"HEAD" or status in (204, 304) or status < 200:
            framing = _FRAMING_NONE
            if (
                content_length is None
                # Not for an empty body: an application that knows HEAD (Werkzeug)
                # leaves the body out itself, and 0 would misstate the GET's length.
                and final_length
                and request.method == b"HEAD"
                and status not in (204, 304)
            ):
                # A HEAD answer carries the length a GET would have (RFC 9110 9.3.2).
                head += b"Content-Length: %d\r\n" % final_length
        elif content_length is not None:
            framing = _FRAMING_LENGTH
        elif final_length is not None:
            framing = _FRAMING_LENGTH
            content_length = final_length
            head += b"Content-Length: %d\r\n" % final_length
        elif request.version == b"1.1":
            framing = _FRAMING_CHUNKED
            head += b"Transfer-Encoding: chunked\r\n"
        else:
            framing = _FRAMING_CLOSE
            keep_alive = False
        if self._continue is False and self._body is _BODY_RECEIVING:
            # The client still waits for 100 Continue; it may or may not send the
            # body now, so the connection cannot be reused (RFC 9110 10.1.1).
            keep_alive = False
        elif self.at_once and self._body is _BODY_RECEIVING:
            # Answered from its head (UNREAD_BODY), before a body no limit bounded
            # has come in: it is not read through to keep the connection, whatever
            # the answer (the handler's, or a 403 of the mount's rules).
            keep_alive = False
        self._framing = framing
        self._content_length = content_length or 0
        self._keep_alive = keep_alive
        if not (has_date or has_server):
            # (date_fields, inline for the usual case: the handler set neither; and
            # DateCache.get_fields, inline within the second it was formatted in.)
            date_cache = factory.date_cache
            second = int(protocol._clock.seconds())
            head += (
                date_cache.fields if second == date_cache.second else date_cache.get_fields(second)
            )
        elif not (has_date and has_server):
            head += protocol.date_fields(not has_date, not has_server)
        if not keep_alive:
            return head + b"Connection: close\r\n\r\n"
        if request.version == b"1.0":
            return head + b"Connection: keep-alive\r\n\r\n"
        return head + b"\r\n"

    def _frame(self, data: bytes) -> bytes:
        stream = self._gzip
        if stream is not None:
            data = stream.write(data)
            if stream.cut:
                self._log_cut()
            if not data:
                return b""
        framing = self._framing
        if framing is _FRAMING_CHUNKED:
            self.body_sent += len(data)
            return chunk(data)
        if framing is _FRAMING_NONE:
            return b""
        if framing is _FRAMING_LENGTH:
            room = self._content_length - self.body_sent - self._file_pending
            if len(data) > room:
                self._log_cut()
                data = data[: max(room, 0)]  # (the framing stays right: the connection too)
        self.body_sent += len(data)
        return data

    def _log_cut(self) -> None:
        """Say, once, that the handler wrote more than its response may carry."""
        if not self._cut_logged:  # once: a handler may go on writing
            self._cut_logged = True
            _log.error(
                "The response to {method} {target} {problem}; the rest was dropped",
                problem="is a 205, which carries no content (RFC 9110 15.3.6)"
                if self.status == 205
                else "is longer than its Content-Length",
                method=self.request.method.decode("latin-1"),
                target=self.request.target.decode("latin-1"),
            )

    @property
    def body_full(self) -> bool:
        """Whether the head is out and the response can carry no more body bytes.

        A response with no content (HEAD, 204, 205, 304: RFC 9110 6.4.1) or one
        whose Content-Length has been sent whole: anything more is dropped, so a
        handler producing the body can stop (PEP 3333: "stop iterating over the
        response when enough data has been sent").
        """
        if not self.response_started or self._head_pending or self.finished:
            return False
        framing = self._framing
        if framing is _FRAMING_NONE:
            return True
        return (
            framing is _FRAMING_LENGTH
            and self.body_sent + self._file_pending >= self._content_length
        )

    def send_head(self) -> None:
        """Send the pending head now, framing decided for a body of unknown length."""
        if self.finished:
            return
        if not self.response_started:
            raise RuntimeError("send_head called before start_response")
        if self._head_pending:
            write_now(self._protocol.transport, self._head(None))

    def write(self, data: bytes) -> None:
        """Send a piece of the body (with the head, the first time)."""
        if self.finished or not data:
            return
        if not self.response_started:
            raise RuntimeError("write called before start_response")
        out = self._head(None) + self._frame(data) if self._head_pending else self._frame(data)
        if out:
            write_now(self._protocol.transport, out)
            if self.limit_rate is not None:
                # Ahead of the rate: the handler's next piece waits (this one is the
                # transport's already, as a piece is when the client is slow).
                pace = self._response_pace()
                wait = pace.wait(self.body_sent, self._protocol.clock.seconds())
                if wait:
                    self._protocol.hold_response(wait)

    def _response_pace(self) -> ResponsePace:
        """The pace of this response (its limit_rate), started at its first byte."""
        pace = self._pace
        if pace is None:
            assert self.limit_rate is not None
            rate, after = self.limit_rate
            pace = self._pace = ResponsePace(rate, after, self._protocol.clock.seconds())
        return pace

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Have ``producer`` paused while the client is not reading (push only)."""
        if not streaming:
            raise ValueError("Exchanges take streaming (push) producers only")
        self._protocol.set_response_producer(producer)

    def unregisterProducer(self) -> None:
        """Stop forwarding flow-control events."""
        self._protocol.set_response_producer(None)

    def send_file(self, file: IO[bytes], offset: int, count: int) -> Deferred[None]:
        """Send ``count`` bytes of ``file`` from ``offset`` with zero-copy where possible.

        The head must declare a ``Content-Length`` that leaves room for ``count``
        bytes (or the response is a HEAD); other body bytes may come before and
        after (multipart ranges). The Deferred fires once the bytes are handed to
        the kernel; the caller then writes more or calls :meth:`finish`. It fails if
        the connection is lost or the file ends early.
        """
        if not self.response_started:
            raise RuntimeError("send_file called before start_response")
        if self.finished:
            # The client left (or the response ended): fail as a client gone
            # (sendfile.CLIENT_GONE), so that what the caller chained on the sending
            # (closing the file) still runs, without an error logged.
            return fail(ConnectionLost("The response has already ended"))
        # A file goes out as it is on disk (its Content-Length, zero-copy).
        head = self._head(_NO_GZIP) if self._head_pending else b""
        transport = self._protocol.transport
        if self._framing is _FRAMING_NONE or count == 0:
            if head:
                write_now(transport, head)
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        room = self._content_length - self.body_sent - self._file_pending
        if self._framing is not _FRAMING_LENGTH or count > room:
            if head:
                write_now(transport, head)
            raise RuntimeError("send_file needs a Content-Length that leaves room for the file")
        self._file_pending += count
        pacing = None
        if self.limit_rate is not None:
            pacing = Pacing(self._response_pace(), lambda: self.body_sent, self._protocol.clock)
        sending = send_file(
            transport,
            file,
            offset=offset,
            count=count,
            streaming_producer=self._protocol,
            on_progress=self._file_progress,
            head=head,
            pacing=pacing,
        )
        self._file_sending = sending
        return sending

    def _file_progress(self, sent: int) -> None:
        """Count file bytes as they go out (the sender's progress).

        An aborted download is then logged with the bytes that were sent, as nginx's
        ``$body_bytes_sent``, not with the size of the file.
        """
        self.body_sent += sent
        self._file_pending -= sent
        self._protocol.note_write_progress()

    def finish(self, data: bytes = b"") -> None:
        """Send ``data`` as the last body bytes and complete the response."""
        if self.finished:
            return
        if not self.response_started:
            raise RuntimeError("finish called before start_response")
        out = self._head(self.body_sent + len(data)) if self._head_pending else b""
        stream = self._gzip
        missing = 0
        if stream is not None:
            self._gzip = None  # (so that _frame frames what it ends with)
            out += self._frame(stream.finish(data))
            if stream.cut:
                self._log_cut()
            missing = stream.missing
        elif data:
            if (
                self._framing is _FRAMING_LENGTH
                and len(data) <= self._content_length - self.body_sent - self._file_pending
            ):
                # (_frame's usual case, inline: the rest of a body that fits its length.)
                self.body_sent += len(data)
                out += data
            else:
                out += self._frame(data)
        framing = self._framing
        if framing is _FRAMING_CHUNKED and not missing:
            out += _CRLF0
        if out:
            write_now(self._protocol.transport, out)
        if framing is _FRAMING_LENGTH:
            missing = self._content_length - self.body_sent - self._file_pending
        if missing > 0:
            # The client must not take it for the whole body: no last chunk (nor,
            # gzipped, the stream's end), and the connection ends.
            _log.error(
                "The response to {method} {target} ended {missing} bytes short of its"
                " Content-Length; closing the connection",
                method=self.request.method.decode("latin-1"),
                target=self.request.target.decode("latin-1"),
                missing=missing,
            )
            self.abort()
            return
        self._ended(None)
        self._protocol.exchange_done(self, self._keep_alive and framing is not _FRAMING_CLOSE)

    @property
    def upgradable(self) -> bool:
        """Whether :meth:`upgrade` may be called.

        That is an Upgrade request without a body, with no response begun, and no
        request before it waiting: parsing stopped at the Upgrade request, so it is
        the last queued, and it must be the first too.
        """
        return (
            self.request.version == b"1.1"
            and not self.response_started
            and not self.finished
            and self._protocol.may_switch(self)
        )

    def upgrade(self, headers: list[tuple[bytes, bytes]], receiver: Any) -> Tunnel:
        """Switch protocols: send ``101`` with ``headers``, then tunnel raw bytes.

        ``headers`` should carry ``Upgrade`` and ``Connection: upgrade`` (RFC 9110
        7.8); they are sent as given. ``receiver`` gets ``data_received(data)`` for
        every byte from the client (starting with those that followed the request)
        and ``connection_lost(reason)`` at the end.

        Raises:
            RuntimeError: when the request cannot be upgraded (see
                :attr:`upgradable`).
        """
        if not self.upgradable:
            raise RuntimeError("This exchange cannot switch protocols")
        lines = [status_line(101)]
        if self._added_fields:
            headers = [*headers, *_joined(self._added_fields)]
        lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
        # The server's own Date and Server, unless the handler gave them (a proxy
        # mount passing its upstream's with proxy_pass_header), as for any response.
        names = {name.lower() for name, _ in headers}
        lines.append(self._protocol.date_fields(b"date" not in names, b"server" not in names))
        lines.append(b"\r\n")
        self.response_started = True
        self.status = 101
        tunnel = self._protocol.start_tunnel(b"".join(lines), receiver, self)
        # The response methods are done with, but the exchange ends when the tunnel
        # closes (see tunnel_closed), not at the switch: it is logged then, with the
        # bytes the tunnel carried (nginx's $body_bytes_sent for a WebSocket), and
        # its close listeners are told then, as nginx keeps the request (and its
        # limit_conn place) until the tunnel ends.
        self.finished = True
        self._protocol.set_response_producer(None)
        return tunnel

    def tunnel_closed(self) -> None:
        """The connection this exchange switched to ended: the exchange ends now."""
        self._ended(None)

    def send_error(self, error: RequestError) -> None:
        """Answer with a server-generated error response and close the connection."""
        if self.finished or self.response_started:
            return
        self.response_started = True
        self.status = error.status
        include_body = self.request.method != b"HEAD"
        page = self._protocol.error_page(self.request, error.status)
        data = self._protocol.error_response_bytes(error, include_body=include_body, page=page)
        if include_body:
            self.body_sent = len(_error_body(error) if page is None else page.body)
        self._keep_alive = False
        write_now(self._protocol.transport, data)
        self._ended(None)
        self._protocol.exchange_done(self, False)

    def client_left(self) -> bool:
        """Whether the client closed its side, though the server has not read that far.

        Any thread (a worker asks before calling the application).
        """
        return not self.finished and self._protocol.peer_closed()

    def drop_departed_client(self) -> None:
        """End the exchange of a client found gone: closed, logged as its doing (499)."""
        if not self.finished:
            self._protocol.drop_departed_client()

    def abort(self) -> None:
        """End a response that cannot be completed: the client sees it incomplete.

        When its body is framed by Content-Length or chunked coding, the connection
        closes in order (lingering if the client is still sending): what was sent
        arrives whole, and the missing bytes or last chunk show the cut (RFC 9112
        6.3, 7.1); a reset would throw away what the kernel still held unsent. A
        response without a body (HEAD, 204, 304) whose head went out is complete and
        closes in order too. A body delimited by the close (HTTP/1.0) could only
        look complete that way: the connection is reset. A file still going out is
        stopped.
        """
        if self.finished:
            return
        self._keep_alive = False
        self._ended(Failure(ConnectionDone("response aborted")))
        sending = self._file_sending
        if sending is not None and not sending.called:
            # Stop the file going out: its sender holds the transport (and with a
            # close in order, nothing else would end it and close the file).
            sending.cancel()
        protocol = self._protocol
        if not self._head_pending and self._framing is not _FRAMING_CLOSE:
            protocol.close_cut_short(self)
            return
        # What the handler wrote was given to the client: send it before the abort,
        # which drops Twisted's buffers (an application failing mid-response left
        # the client nothing at all in the reactor thread, and over TLS).
        send_before_abort(self._protocol.transport)
        self._protocol.abort_connection()

    def on_close(self, callback: Callable[[Failure | None], object]) -> None:
        """Call ``callback`` when the exchange ends (``None`` if the response was sent).

        An exchange that switched protocols ends when its tunnel closes.
        """
        if self._close_callbacks is None:
            self._close_callbacks = [callback]
        else:
            self._close_callbacks.append(callback)

    def _ended(self, reason: Failure | None) -> None:
        """Mark the exchange over, tell its listeners, and log it."""
        self.finished = True
        protocol = self._protocol
        protocol._response_producer = None  # (set_response_producer(None), inline)
        callbacks = self._close_callbacks
        if callbacks is not None:
            self._close_callbacks = None
            for callback in callbacks:
                try:
                    callback(reason)
                except Exception:
                    _log.failure("Exchange close callback failed")
        if self.dispatched:
            # (log_response, inline: once per response.)
            factory = protocol._factory
            factory.responses += 1
            response_log = factory.response_log
            if response_log is not None:
                try:
                    response_log(self)
                except Exception:
                    _log.failure("The access log failed")

    def connection_lost(self, reason: Failure) -> None:
        """The client is gone: end the exchange and fail an unfinished body."""
        if self._body is _BODY_RECEIVING:
            self.body_error(ConnectionError("The client closed the connection"))
        if self.finished:
            return
        self.client_closed = not self._protocol.dropped
        sending = self._file_sending
        if sending is not None and not sending.called:
            # A file sender waiting for its limit_rate is off the transport, which
            # could not tell it: stopped here (and its file closed by its caller).
            sending.cancel()
        self._ended(reason)
