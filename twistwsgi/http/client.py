"""HTTP/1.1 client connections to upstream servers, on the ``httptools`` response parser.

One :class:`ClientConnection` carries one request at a time (no pipelining) and is
reused for the next one when the response allows it (RFC 9112 9.3): HTTP/1.1 without
``Connection: close``, a response delimited by its length or chunking, and a request
sent whole. Whoever owns the connection (a pool, :mod:`twistwsgi.upstream`) is asked
whether to keep it idle after each response.

What the connection owns:

* **Framing.** The request head is written as given (the proxy builds it); a body is
  written as received, in chunks when the request is chunked. The response is parsed
  by llhttp: ``1xx`` interim responses go to the handler before the final head
  (RFC 9110 15.2: a proxy relays them), ``101`` switches to a tunnel, a
  response to ``HEAD`` ends after its head (llhttp cannot be told the method, so the
  parse is stopped there and the parser replaced), a response without length or
  chunking ends when the upstream closes (RFC 9112 6.3, item 8).
* **Delivery in batches.** The head and the body bytes of one read go to the
  :class:`ResponseHandler` after the parser returns, never from inside a parser
  callback: a handler may then abort or reuse the connection safely, and a small
  response is handed over with its whole body in one call (one write to the client).
* **A repeated head.** A plain response (HTTP/1.1, Content-Length framed, whole in
  one read) is remembered with what its parse decided; the next response of the
  connection whose first read is the same head and its Content-Length in bytes is
  taken without the parser, with the same effects
  (:meth:`ClientConnection._remember_head`).
* **Timeouts** (0 turns one off), with one lazily re-armed timer per connection
  (moving a deadline later costs nothing): the response head must come within
  ``response_timeout`` of the request being sent whole; while the upstream stops
  reading the request body, or between two reads of the response body,
  ``idle_timeout``; an idle connection is closed after the time its owner gives
  (``keepalive_timeout``). No timeout runs while the proxy itself holds the upstream
  back (a slow client), nor in a tunnel.
* **Flow control.** The connection is its transport's streaming producer: when the
  upstream stops reading what is written, the handler hears ``sending_paused`` (and
  stops reading the client). :meth:`ClientConnection.pause_reading` stops reading the
  upstream (the client is slow).
* **Limits.** A response head larger than :data:`MAX_RESPONSE_HEAD` is a protocol
  error, so a broken upstream cannot grow memory; the interim heads before it count
  towards the same limit, so an upstream sending 1xx without end cannot either. A
  ``Transfer-Encoding`` other than ``chunked`` alone is a protocol error too: the
  body could not be framed for the client.
* **TLS.** Over TLS a connection is not usable until its handshake completes
  (``handshakeCompleted``, :class:`~twisted.internet.interfaces.IHandshakeListener`):
  :meth:`ClientConnection.wait_for_handshake` tells the pool when it is, or why it
  failed (a certificate that does not verify, the upstream closing), so nothing is
  written into the TLS layer's unbounded buffer before the upstream can read it.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Protocol

import httptools
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import _WrappingProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from twistwsgi.http.rules import CONTROL_CHARACTERS
from twistwsgi.http.transport import took_some, unsent_bytes, write_now

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport

__all__ = [
    "MAX_RESPONSE_HEAD",
    "STATE_IDLE",
    "ClientConnection",
    "ClientSettings",
    "ConnectionOwner",
    "ErrorKind",
    "ResponseHandler",
    "UpstreamError",
    "reason_text",
]

#: Largest response head (status line and fields) accepted from an upstream.
MAX_RESPONSE_HEAD = 64 * 1024


class ErrorKind(Enum):
    """Why an upstream exchange failed."""

    CONNECT = "connect"  # no connection: refused, unreachable, timed out
    CLOSED = "closed"  # the connection closed or broke before the response ended
    PROTOCOL = "protocol"  # the upstream sent something that is not an HTTP response
    TIMEOUT = "timeout"  # no response head in time, or the upstream stopped reading
    STALLED = "stalled"  # the response body stopped arriving
    LOCAL = "local"  # this server could not open a socket (out of descriptors, memory)


class UpstreamError(Exception):
    """An upstream exchange that failed.

    Attributes:
        kind: what went wrong.
        detail: a short description for the log.
        response_started: whether any byte of a response had arrived.
        reused: whether the connection had carried an earlier request (a failure
            with no response byte may then just be a keep-alive race: RFC 9112
            9.3.1).
    """

    def __init__(
        self,
        kind: ErrorKind,
        detail: str,
        *,
        response_started: bool = False,
        reused: bool = False,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.response_started = response_started
        self.reused = reused


class ResponseHandler(Protocol):
    """What receives one response (reactor thread)."""

    def response_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """An interim (``1xx``, not ``101``) response head arrived, before the final one."""

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The final response head arrived (fields as received, trailers never)."""

    def response_data(self, data: bytes, complete: bool) -> None:
        """Body bytes; ``complete`` when the response ended with them.

        ``data`` may be empty: with ``complete``, at the end of the response; without
        it, right after a head that arrived with no body bytes (the upstream may send
        nothing more for a long time, as with Server-Sent Events or a long poll), so
        the handler can pass the head on at once.
        """

    def response_failed(self, error: UpstreamError) -> None:
        """The exchange failed; the connection is closed and no more calls follow."""

    def response_upgraded(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], tail: bytes
    ) -> None:
        """The upstream switched protocols (``101``); ``tail`` followed its head.

        From now on bytes arrive through :meth:`tunnel_data` and the end through
        :meth:`tunnel_closed`.
        """

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the upstream after a protocol switch."""

    def tunnel_closed(self, reason: Failure) -> None:
        """The upstream's side of a tunnel ended."""

    def sending_paused(self) -> None:
        """The upstream is not reading what is written to it: stop sending."""

    def sending_resumed(self) -> None:
        """The upstream reads again."""


class ConnectionOwner(Protocol):
    """Who keeps connections between requests (a pool)."""

    def connection_made(self, connection: ClientConnection) -> None:
        """A connection opened."""

    def connection_reusable(self, connection: ClientConnection) -> float | None:
        """A response ended and the connection may carry another: keep it idle?

        Returns:
            How long to keep it idle (seconds), or ``None`` to close it.
        """

    def connection_closed(self, connection: ClientConnection) -> None:
        """A connection closed (whatever state it was in)."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Timeouts of upstream connections, in seconds (see the module docstring)."""

    response_timeout: float = 60.0
    idle_timeout: float = 60.0
    keepalive_timeout: float = 4.0


class _State(Enum):
    NEW = "new"  # not connected yet
    HANDSHAKE = "handshake"  # connected, the TLS handshake not complete yet
    IDLE = "idle"  # connected, no request
    BUSY = "busy"  # a request is in progress
    TUNNEL = "tunnel"  # switched protocols
    CLOSED = "closed"


# The request path names these states as module constants, not as _Enum.MEMBER:
# on Python 3.11 every attribute of an Enum class goes through EnumType's
# __getattr__ hook (removed in 3.12), about 70 ns a lookup against 10 for a
# global, and a request named them some 30 times.
_STATE_NEW: Final = _State.NEW
_STATE_HANDSHAKE: Final = _State.HANDSHAKE
_STATE_IDLE: Final = _State.IDLE
_STATE_BUSY: Final = _State.BUSY
_STATE_TUNNEL: Final = _State.TUNNEL
_STATE_CLOSED: Final = _State.CLOSED

#: :attr:`ClientConnection.state` of a connection open and carrying no request.
STATE_IDLE: Final = _STATE_IDLE


class _Deadline(Enum):
    HEAD = "head"  # the response head must arrive
    SEND = "send"  # the upstream must read the request body again
    BODY = "body"  # the next response body bytes must arrive
    IDLE = "idle"  # an idle connection is closed


_DEADLINE_HEAD: Final = _Deadline.HEAD
_DEADLINE_SEND: Final = _Deadline.SEND
_DEADLINE_BODY: Final = _Deadline.BODY
_DEADLINE_IDLE: Final = _Deadline.IDLE


class _Unread(Enum):
    """What a look into an idle connection's socket found (see ``_peek``)."""

    NOTHING = "nothing"
    BYTES = "bytes"  # the upstream sent something nobody asked for
    CLOSE = "close"  # its close or a reset: the ordinary end of a connection


_UNREAD_NOTHING: Final = _Unread.NOTHING
_UNREAD_BYTES: Final = _Unread.BYTES
_UNREAD_CLOSE: Final = _Unread.CLOSE


#: After a response as long as the remembered one but with another head (the memo is
#: forgotten then), how many more as long are parsed before one is remembered again:
#: an upstream that varies its heads (a request id) costs the making of a memo on one
#: response in 17 then (~0.7 us each), and one whose head changed for good (its Date,
#: each second) is taken from a memo again 17 responses later.
_REMEMBER_SKIPS_AFTER_MISS = 16

#: The head of a plain response and what parsing it decided (see ``_remember_head``):
#: its bytes (status line to the empty line that ends the field section), status code,
#: reason phrase as ``on_headers_complete`` left it, and fields as ``on_header``
#: collected them. (A plain tuple: one is made per parsed plain response, and a
#: NamedTuple costs 0.2 us more to make.)
_RepeatedHead = tuple[bytes, int, bytes, tuple[tuple[bytes, bytes], ...]]


class _StopAtHeadError(Exception):
    """Raised from ``on_headers_complete`` to stop parsing after a HEAD response's head."""


class _MalformedResponseError(Exception):
    """Raised from a parser callback for a response the connection refuses."""


_CRLFCRLF = b"\r\n\r\n"
_HTTP11_STATUS_LINE = b"HTTP/1.1 "
_LAST_CHUNK = b"0\r\n\r\n"
_TRANSFER_ENCODING = b"transfer-encoding"
_TRANSFER_ENCODING_LENGTH = len(_TRANSFER_ENCODING)
_log = Logger(namespace="twistwsgi.proxy")
_WHITESPACE = b" \t"
_CONTROL_IN_REASON = re.compile(CONTROL_CHARACTERS.encode("ascii"))


def reason_text(reason: Failure) -> str:
    """Describe why a connection ended, for the log.

    An OpenSSL error carries a list of ``(library, function, reason)`` entries;
    their reasons (``certificate verify failed``) say more than the list's ``repr``.
    """
    value = reason.value
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list):
        reasons = [
            str(entry[-1]) for entry in args[0] if isinstance(entry, tuple) and entry and entry[-1]
        ]
        if reasons:
            return "; ".join(reasons)
    return reason.getErrorMessage()


def _take_reads_from_endpoint_wrapper(connection: ClientConnection) -> None:
    """Have a TCP or UNIX transport call ``connection`` directly, not the endpoint's wrapper.

    Twisted's client endpoints wrap the protocol in one whose every method only
    forwards to it: one more call per read for nothing (about 2% of a proxied
    request, measured with ``wrk -c50``). What is left of its job once this runs,
    firing the connect Deferred, does not go through the transport. Any other
    arrangement (TLS, an in-memory transport) is left as it is.
    """
    transport: Any = connection.transport
    wrapper = getattr(transport, "protocol", None)
    if isinstance(wrapper, _WrappingProtocol) and wrapper._wrappedProtocol is connection:
        transport.protocol = connection


@implementer(IPushProducer, IHandshakeListener)
class ClientConnection(TwistedProtocol):
    """One HTTP/1.1 connection to an upstream (reactor thread only).

    Args:
        owner: the pool that keeps it between requests.
        settings: the timeouts.
        clock: the source of time and timers.

    Attributes:
        requests: requests sent on this connection so far.
        state: where the connection is in its life (read only outside this class;
            :attr:`idle` says the same of :data:`STATE_IDLE`, but the pool, which
            asks for each request it serves, reads this: a property costs a call,
            measured 0.55% of a proxied request).
        settling: whether the read that ended its last response is still being
            handled. Idle, but not to be taken yet: what followed the response in
            the same read (over TLS, the next records of it) has not been looked at,
            and a request sent now would get it for its response. (An attribute,
            not a property: the pool reads it for each request it serves, and a
            property costs a call there, measured 0.2% of a proxied request.)
    """

    transport: ITransport

    def __init__(self, owner: ConnectionOwner, settings: ClientSettings, clock: IReactorTime):
        self._owner = owner
        self._settings = settings
        self._clock = clock
        self._parser = httptools.HttpResponseParser(self)
        self.state = _STATE_NEW
        self._handler: ResponseHandler | None = None
        self.requests = 0
        self._read_paused = False
        self._send_paused = False
        # The one deadline of this connection.
        self._deadline: float | None = None
        self._deadline_kind = _DEADLINE_IDLE
        self._timer: IDelayedCall | None = None
        # Drops a closing connection whose upstream does not take what is buffered.
        self._closing_timer: IDelayedCall | None = None
        # What the transport had not sent when the send deadline was set.
        self._unsent_at_send_deadline: int | None = None
        self._timer_at = 0.0
        # Waiting for the TLS handshake: who waits, or why the connection ended first.
        self._handshake_waiter: Deferred[ClientConnection] | None = None
        self._handshake_error: UpstreamError | None = None
        self.settling = False
        self._full_read = sys.maxsize
        # The exchange in progress: what the request asked (send sets it), then the
        # state of its response.
        self._head_only = False
        self._chunked = False
        self._upgrade = False
        self._request_done = True
        # The last plain response's head, which a byte-identical one may reuse, and
        # the size of that response (-1: none), which a read must have first (see
        # _remember_head).
        self._repeated: _RepeatedHead | None = None
        self._repeated_size = -1
        # The size of the last response read whole in its first read, kept alive,
        # and how many more such responses as long are not to be remembered.
        self._last_read_size = -1
        self._remember_skips = 0
        self._reset_exchange()
        self._reset_parse(False)

    def _reset_exchange(self) -> None:
        """Forget the last response's state read before its first bytes (each send).

        The rest, which only a parsed response uses, is forgotten when a response's
        first read is parsed (:meth:`_reset_parse`): a remembered head
        (:meth:`_reuse_head`) leaves it as it was, so a connection that takes only
        such responses resets four fields per request, not twenty-two (measured:
        1.1% of a proxied request).
        """
        self._received = False
        self._head_ready = False
        self._head_sent = False
        self._complete = False

    def _reset_parse(self, starts_http11: bool) -> None:
        """Forget the last parsed response, as the parser starts on this one.

        Args:
            starts_http11: whether the response's first read began "HTTP/1.1 "
                (see on_headers_complete).
        """
        self._starts_http11 = starts_http11
        self._head_bytes = 0
        # Bytes of the reads since the last body byte, once the head is in.
        self._framing_bytes = 0
        # A HEAD response's reads until its head is complete, and the interim (1xx)
        # heads before it: where the final head ends in them says whether more came.
        self._head_reads: list[bytes] = []
        self._interim_heads = 0
        self._interim_size = 0  # of the interim heads, as _head_size measures
        # Interim heads parsed in this read, delivered after the parser returns.
        self._interim_pending: list[tuple[int, bytes, list[tuple[bytes, bytes]]]] | None = None
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._codings: list[bytes] | None = None  # Transfer-Encoding field values
        self._interim = False
        self._in_body = False
        self._keep_alive = False
        self._body: list[bytes] = []

    # -- state seen by the pool -------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Whether the connection is open and carries no request."""
        return self.state is _STATE_IDLE

    @property
    def handshaking(self) -> bool:
        """Whether the connection waits for its TLS handshake to complete."""
        return self.state is _STATE_HANDSHAKE

    @property
    def reused(self) -> bool:
        """Whether the connection carried a request before the current one."""
        return self.requests > 1

    def input_pending(self) -> bool:
        """Whether the upstream sent something this connection has not read yet.

        Bytes, or its close, waiting in the socket: a connection given back by a
        response and taken by another request before the socket was read again has
        not been read since, and its next bytes, unasked for, would be read as that
        request's response. Only a plain socket can be asked (TLS records would need
        decrypting); anything else says no.
        """
        return self._peek() is not _UNREAD_NOTHING

    def _peek(self) -> _Unread:
        get_handle = getattr(self.transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if not isinstance(handle, socket.socket):
            return _UNREAD_NOTHING
        try:
            peeked = handle.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return _UNREAD_NOTHING
        except OSError:
            return _UNREAD_CLOSE  # reset: not usable either
        return _UNREAD_BYTES if peeked else _UNREAD_CLOSE

    # -- connection lifecycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        """Register as the transport's producer; idle at once, or after a TLS handshake."""
        # TLSMemoryBIOProtocol calls handshakeCompleted on an IHandshakeListener.
        tls = isinstance(self.transport, TLSMemoryBIOProtocol)
        self.state = _STATE_HANDSHAKE if tls else _STATE_IDLE
        # The most a read of the transport returns (Twisted's TCP and UNIX: 64 KiB).
        self._full_read = getattr(self.transport, "bufferSize", None) or sys.maxsize
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # a request goes out in one write; Nagle would delay it
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        _take_reads_from_endpoint_wrapper(self)
        self._owner.connection_made(self)

    def handshakeCompleted(self) -> None:
        """The TLS handshake completed: the connection is usable (called by the TLS layer)."""
        if self.state is not _STATE_HANDSHAKE:
            return
        self.state = _STATE_IDLE
        waiter, self._handshake_waiter = self._handshake_waiter, None
        if waiter is not None:
            waiter.callback(self)

    def wait_for_handshake(self) -> Deferred[ClientConnection]:
        """Wait until the connection is usable.

        Returns:
            A Deferred that fires with this connection once its TLS handshake has
            completed (at once without TLS), or fails with an :class:`UpstreamError`
            of kind ``CONNECT`` when the connection ends first: nothing was sent, so
            the request may go elsewhere whatever its method. Cancelling it aborts
            the connection.
        """
        if self._handshake_error is not None:
            return fail(self._handshake_error)
        if self.state is _STATE_CLOSED:
            return fail(
                UpstreamError(ErrorKind.CONNECT, "the connection closed before it could be used")
            )
        if self.state is not _STATE_HANDSHAKE:
            return succeed(self)

        def cancel(waiting: Deferred[ClientConnection]) -> None:
            self._handshake_waiter = None
            self.abort()

        waiter: Deferred[ClientConnection] = Deferred(cancel)
        self._handshake_waiter = waiter
        return waiter

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """End the exchange in progress (a close-delimited body ends here)."""
        state = self.state
        self.state = _STATE_CLOSED
        self._deadline = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        closing, self._closing_timer = self._closing_timer, None
        if closing is not None and closing.active():
            closing.cancel()
        handler, self._handler = self._handler, None
        if state is _STATE_HANDSHAKE:
            # A certificate that failed to verify, or the upstream closing mid-handshake.
            self._handshake_error = UpstreamError(
                ErrorKind.CONNECT, f"the TLS handshake failed: {reason_text(reason)}"
            )
        try:
            if handler is None:
                return
            if state is _STATE_TUNNEL:
                handler.tunnel_closed(reason)
                return
            if (
                self._head_sent
                and not self._complete
                and self._until_close()
                and reason.check(ConnectionDone)
            ):
                body, self._body = self._body, []
                handler.response_data(b"".join(body), True)
                return
            handler.response_failed(
                UpstreamError(
                    ErrorKind.CLOSED,
                    (
                        "the connection closed before the response was complete"
                        if self._received
                        else "the connection closed before a response"
                    )
                    + f" ({reason_text(reason)})",
                    response_started=self._received,
                    reused=self.reused,
                )
            )
        finally:
            self._owner.connection_closed(self)
            waiter, self._handshake_waiter = self._handshake_waiter, None
            if waiter is not None and self._handshake_error is not None:
                waiter.errback(self._handshake_error)

    def _until_close(self) -> bool:
        """Whether the response's body is delimited by the connection closing."""
        if self._head_only or self._status in (204, 304):
            return False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                return False
            if lower == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
                return False
        return True

    def close(self) -> None:
        """Close once what was written has been sent; no more calls to the handler."""
        self._handler = None
        if self.state is not _STATE_CLOSED:
            self.state = _STATE_CLOSED
            transport: Any = self.transport
            # A TLS transport only sends its close alert once no producer is
            # registered; TCP does not care.
            transport.unregisterProducer()
            transport.loseConnection()
            seconds = self._settings.idle_timeout
            if seconds > 0:
                # The close waits for the upstream to take what is buffered; one that
                # stopped reading (a stalled tunnel, say) would hold the socket for
                # ever: it gets idle_timeout, then the connection is dropped.
                self._closing_timer = self._clock.callLater(seconds, self._close_expired)

    def _close_expired(self) -> None:
        self._closing_timer = None
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """Drop the connection now; no more calls to the handler."""
        self._handler = None
        if self.state is not _STATE_CLOSED:
            self.state = _STATE_CLOSED
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- sending ----------------------------------------------------------------------

    def send(
        self,
        head: bytes,
        handler: ResponseHandler,
        *,
        head_only: bool = False,
        body: bool = False,
        chunked: bool = False,
        upgrade: bool = False,
    ) -> None:
        """Send a request head; the response goes to ``handler``.

        Args:
            head: the request line and header section, ending in an empty line.
            handler: receives the response.
            head_only: the request is ``HEAD``: the response has no body.
            body: a body follows (:meth:`write_body`, then :meth:`end_body`).
            chunked: the body is sent with the chunked coding.
            upgrade: the request asks to switch protocols (a ``101`` is expected).

        Raises:
            RuntimeError: when the connection is not idle.
        """
        if self.state is not _STATE_IDLE:
            raise RuntimeError(f"cannot send on a connection that is {self.state.value}")
        self.state = _STATE_BUSY
        self._handler = handler
        self.requests += 1
        # (Set here, not passed on to _reset_exchange: a call with keywords costs more.)
        self._head_only = head_only
        self._chunked = chunked
        self._upgrade = upgrade
        self._request_done = not body
        self._reset_exchange()
        if self._read_paused:
            self.resume_reading()
        write_now(self.transport, head)
        if not body:
            # (_set_deadline(response_timeout, _DEADLINE_HEAD), inline: once per
            # request, the call costs about 0.6% of a proxied request by callgrind.)
            seconds = self._settings.response_timeout
            if seconds > 0:
                deadline = self._clock.seconds() + seconds
                self._deadline = deadline
                self._deadline_kind = _DEADLINE_HEAD
                if self._timer is None or self._timer_at > deadline:
                    self._restart_timer(seconds, deadline)
            else:
                self._deadline = None  # a timeout of 0 is no timeout
        else:
            # While the body streams, the client's own body timeout governs it.
            self._deadline = None
            if self._send_paused:
                self._set_deadline(self._settings.idle_timeout, _DEADLINE_SEND)
        if self._send_paused:
            handler.sending_paused()  # paused while idle: this handler was not told

    def write_body(self, data: bytes) -> None:
        """Send a piece of the request body."""
        if self.state is not _STATE_BUSY or self._request_done or not data:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        write_now(self.transport, data)

    def end_body(self) -> None:
        """The request body is complete."""
        if self.state is not _STATE_BUSY or self._request_done:
            return
        self._request_done = True
        if self._chunked:
            write_now(self.transport, _LAST_CHUNK)
        if not self._head_ready:
            self._set_deadline(self._settings.response_timeout, _DEADLINE_HEAD)

    def tunnel_write(self, data: bytes) -> None:
        """Send bytes through the tunnel after a protocol switch."""
        if self.state is _STATE_TUNNEL and data:
            write_now(self.transport, data)

    # -- flow control ---------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from the upstream (the client is not keeping up)."""
        if not self._read_paused and self.state is not _STATE_CLOSED:
            self._read_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]
            if self._deadline_kind is _DEADLINE_BODY:
                self._deadline = None  # not the upstream's fault

    def resume_reading(self) -> None:
        """Read from the upstream again."""
        if self._read_paused and self.state is not _STATE_CLOSED:
            self._read_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            if self.state is _STATE_BUSY and self._head_sent and not self._complete:
                self._set_deadline(self._settings.idle_timeout, _DEADLINE_BODY)

    def pauseProducing(self) -> None:
        """The upstream is not reading what we write: tell the handler."""
        self._send_paused = True
        if (self.state is _STATE_BUSY and not self._request_done) or self.state is _STATE_TUNNEL:
            self._set_deadline(self._settings.idle_timeout, _DEADLINE_SEND)
        handler = self._handler
        if handler is not None:
            handler.sending_paused()

    def resumeProducing(self) -> None:
        """The upstream reads again: tell the handler."""
        self._send_paused = False
        if self._deadline_kind is _DEADLINE_SEND and self._deadline is not None:
            self._deadline = None
        handler = self._handler
        if handler is not None:
            handler.sending_resumed()

    def stopProducing(self) -> None:
        """The transport is going away; ``connectionLost`` does the cleanup."""

    # -- timeouts -----------------------------------------------------------------------

    def _set_deadline(self, seconds: float, kind: _Deadline) -> None:
        if seconds <= 0:
            self._deadline = None  # a timeout of 0 is no timeout
            return
        deadline = self._clock.seconds() + seconds
        self._deadline = deadline
        self._deadline_kind = kind
        if kind is _DEADLINE_SEND:
            self._unsent_at_send_deadline = unsent_bytes(self.transport)
        if self._timer is None or self._timer_at > deadline:
            self._restart_timer(seconds, deadline)

    def _restart_timer(self, seconds: float, deadline: float) -> None:
        """Have the timer fire at ``deadline``, ``seconds`` from now.

        For a deadline sooner than the timer's (or no timer): one later than the
        timer's waits for it, which then calls again (_timer_fired).
        """
        timer = self._timer
        if timer is not None:
            # A new call rather than DelayedCall.reset: moving a call sooner makes
            # the reactor search its timer heap linearly, one scan per request.
            timer.cancel()
        self._timer = self._clock.callLater(seconds, self._timer_fired)
        self._timer_at = deadline

    def _timer_fired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.state is _STATE_CLOSED:
            return
        now = self._clock.seconds()
        if now < deadline:
            self._timer = self._clock.callLater(deadline - now, self._timer_fired)
            self._timer_at = deadline
            return
        kind = self._deadline_kind
        settings = self._settings
        if kind is _DEADLINE_SEND and took_some(self.transport, self._unsent_at_send_deadline):
            # Reading slowly is not stopping (as the server's send_timeout).
            self._set_deadline(settings.idle_timeout, _DEADLINE_SEND)
            return
        self._deadline = None
        if kind is _DEADLINE_IDLE:
            self.close()
        elif kind is _DEADLINE_HEAD:
            self._fail(ErrorKind.TIMEOUT, f"no response head within {settings.response_timeout:g}s")
        elif kind is _DEADLINE_SEND and self.state is _STATE_TUNNEL:
            handler = self._handler
            self.abort()
            if handler is not None:
                handler.tunnel_closed(
                    Failure(TimeoutError(f"stopped reading for {settings.idle_timeout:g}s"))
                )
        elif kind is _DEADLINE_SEND:
            self._fail(
                ErrorKind.TIMEOUT,
                f"stopped reading the request body for {settings.idle_timeout:g}s",
            )
        else:
            self._fail(ErrorKind.STALLED, f"the response stopped for {settings.idle_timeout:g}s")

    # -- bytes in -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Parse response bytes and hand what they complete to the handler."""
        state = self.state
        handler = self._handler
        if state is _STATE_TUNNEL:
            if handler is not None:
                handler.tunnel_data(data)
            return
        if state is not _STATE_BUSY or handler is None:
            # An idle connection has nothing to say: bytes now mean it is unusable.
            self.abort()
            return
        first_read = not self._received
        if (
            first_read
            and len(data) == self._repeated_size
            and self._request_done
            and not self._head_only
            and not self._upgrade
        ):
            repeated = self._repeated
            if repeated is not None and data.startswith(repeated[0]):
                self._reuse_head(handler, repeated, data)
                return
            # As long, another head: forgotten, and the next ones as long parsed for a
            # while (an upstream whose heads differ at each response, a request id
            # say, would have each remembered for nothing).
            self._repeated = None
            self._repeated_size = -1
            self._remember_skips = _REMEMBER_SKIPS_AFTER_MISS
        head_ready = self._head_ready
        if not head_ready:
            if first_read:
                # The response's first bytes (the parser is at the start of a message).
                self._reset_parse(data.startswith(_HTTP11_STATUS_LINE))
            self._head_bytes += len(data)
            if self._head_only:
                self._head_reads.append(data)
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as switch:
            if self._interim_pending is not None and not self._deliver_interim(handler):
                return  # the handler gave up on the response
            self._switch(data[switch.args[0] :])
            return
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _StopAtHeadError):
                # The head of a HEAD response: nothing follows it (RFC 9110 9.3.2).
                # Bytes after it would be a broken upstream: do not reuse it then.
                self._parser = httptools.HttpResponseParser(self)
                self._complete = True
                if self._bytes_after_head():
                    self._discard_excess()
            elif self._complete:
                self._discard_excess()
            else:
                self._fail(ErrorKind.PROTOCOL, str(cause) if cause is not None else str(error))
                return
        except httptools.HttpParserError as error:
            if not self._complete:
                detail = str(error)
                if detail == "Pause on CONNECT/Upgrade":
                    # llhttp's words for a 101 it cannot take as a switch.
                    detail = "a 101 response without Upgrade and Connection: upgrade"
                self._fail(ErrorKind.PROTOCOL, detail)
                return
            self._discard_excess()
        else:
            if first_read and self._complete and self._keep_alive:
                # A response as long as the last one whole in one read may repeat its
                # head: remembered then (before the handler sees the fields, which it
                # may change). Responses whose length keeps changing (a dynamic page)
                # would not repeat theirs: they cost this comparison only.
                size = len(data)
                if size != self._last_read_size:
                    self._last_read_size = size
                elif self._remember_skips:
                    self._remember_skips -= 1
                else:
                    self._remember_head(data)
        if self._interim_pending is not None and not self._deliver_interim(handler):
            return  # the handler gave up on the response
        if not self._head_sent:
            if not self._head_ready:
                if self._head_bytes > MAX_RESPONSE_HEAD:
                    # llhttp keeps an unfinished field line; this bounds what it holds.
                    self._fail(ErrorKind.PROTOCOL, "the response head is too large")
                return
            self._head_sent = True
            handler.response_head(self._status, self._reason, self._headers)
            if self._handler is not handler:
                return  # the handler gave up on the response
            if not self._complete:
                self._set_deadline(self._settings.idle_timeout, _DEADLINE_BODY)
                if not self._body:
                    # The head came alone and the body may take long (Server-Sent
                    # Events, a long poll): say so, so the head can be passed on now.
                    handler.response_data(b"", False)
                    return
        body = self._body
        if self._complete:
            self._body = []
            self._response_read(handler, len(data), body[0] if len(body) == 1 else b"".join(body))
            return
        if head_ready and not body:
            # Reads with no body byte in them: chunk framing, or the trailer section,
            # whose unfinished field line llhttp holds whole. Bounded like a head.
            self._framing_bytes += len(data)
            if self._framing_bytes > MAX_RESPONSE_HEAD:
                self._fail(
                    ErrorKind.PROTOCOL,
                    "the response's chunk framing or trailer section is too large",
                )
            return
        if body:
            self._framing_bytes = 0
            self._body = []
            if self._deadline_kind is _DEADLINE_BODY and not self._read_paused:
                self._deadline = self._clock.seconds() + self._settings.idle_timeout
            handler.response_data(body[0] if len(body) == 1 else b"".join(body), False)

    def _response_read(self, handler: ResponseHandler, read_size: int, body: bytes) -> None:
        """The read of ``read_size`` bytes ended the response: see what follows, then end it."""
        if self._keep_alive and read_size >= self._full_read:
            # A read as large as the transport takes may have left more in the
            # socket: what follows a complete response there is not for the next.
            unread = self._peek()
            if unread is _UNREAD_BYTES:
                self._discard_excess()
            elif unread is _UNREAD_CLOSE:
                self._keep_alive = False
        self._response_complete(handler, body)

    def _remember_head(self, data: bytes) -> None:
        """Keep the head of a plain response that ``data``, the first read, held whole.

        An upstream that answers fast mostly answers the same head each time; llhttp
        would parse it again (a callback per field, ~1.4 us of a proxied request).
        The next response of this connection whose first read is this head and as
        many bytes more as this one's Content-Length reuses what the parse decided
        (:meth:`_reuse_head`). (Asked only for a response as long in all as the one
        before it, which may well repeat its head, and not for a while after one as
        long as the remembered response came with another head: see
        ``_REMEMBER_SKIPS_AFTER_MISS``.) A head decides its framing alone for a
        response to a request that is not HEAD and asks no upgrade (RFC 9112 6.3):
        llhttp, at the start of a message on both occasions (after a complete one,
        or new), would decide the same again, and reach the end of the message at
        the end of that read again. Only the plainest responses are kept:

        * HTTP/1.1 from the first byte, kept alive, with no interim head before it;
        * framed by Content-Length alone (RFC 9112 6.3, item 6): no Transfer-Encoding,
          not a 204 or 304 (which end at their head whatever their fields say, item
          1), and complete in this read, which a response to be read until the close
          (item 8) is not;
        * a response to a request sent whole (not an early response);
        * nothing but the response in the read (llhttp skips empty lines after a
          message; they would not be part of the size).

        Per connection, not per pool: the memo needs no sharing rule, and goes with
        the connection; a new one parses its first two responses.

        (Some conditions follow from others: chunk framing or an interim head would
        fail the size check, an HTTP/1.0 response is never kept alive, a HEAD
        response stops the parse before this is asked. Each is said outright, so
        the rule reads whole here.)
        """
        if (
            self._codings is not None
            or self._interim_heads
            or not self._starts_http11
            or self._head_only
            or self._upgrade
            or not self._request_done
            or self._status in (204, 304)
        ):
            return
        body = self._body
        size = len(data)
        head_size = size - (len(body[0]) if len(body) == 1 else sum(map(len, body)))
        # The head ends at its first empty line (field lines hold no bare CR or LF:
        # llhttp refuses them, and obs-fold); the body must end the read.
        if data.find(_CRLFCRLF) + len(_CRLFCRLF) != head_size:
            return
        self._repeated = (data[:head_size], self._status, self._reason, tuple(self._headers))
        self._repeated_size = size

    def _reuse_head(self, handler: ResponseHandler, repeated: _RepeatedHead, data: bytes) -> None:
        """Take ``data``, the remembered head and its body whole, as the parse would.

        The parser is not fed: it stays at the start of a message, where it would
        be after this response too. Every effect of the parsed path for this read
        that is seen happens here, in the same order. The fields only the parse
        reads (the status, reason and fields kept, the head's size, whether the
        parser is in the body) are left alone: the next parsed response resets
        them (_reset_parse) before it reads any (measured: 1.2% of a proxied
        request, with _response_read's call inlined below).
        """
        head, status, reason, fields = repeated
        self._received = True
        self._keep_alive = True
        self._head_ready = True
        self._complete = True
        self._head_sent = True
        handler.response_head(status, reason, list(fields))
        if self._handler is not handler:
            return  # the handler gave up on the response
        size = len(data)
        if size >= self._full_read:
            self._response_read(handler, size, data[len(head) :])  # it may have left more
        else:
            self._response_complete(handler, data[len(head) :])

    def _deliver_interim(self, handler: ResponseHandler) -> bool:
        """Hand over the interim heads parsed in this read; False if the handler gave up."""
        interim, self._interim_pending = self._interim_pending, None
        for status, reason, headers in interim or ():
            handler.response_interim(status, reason, headers)
            if self._handler is not handler:
                return False
        return True

    def _bytes_after_head(self) -> bool:
        """Whether bytes followed the head of a HEAD response in the reads so far.

        llhttp stops at the head (the parser callback raises) without saying where;
        a head ends at its first empty line, as each interim head before it does
        (field lines hold no CR or LF: llhttp refuses bare ones and obs-fold).
        """
        received = b"".join(self._head_reads)
        self._head_reads = []
        end = -len(_CRLFCRLF)
        for _ in range(self._interim_heads + 1):
            end = received.find(_CRLFCRLF, end + len(_CRLFCRLF))
            if end < 0:
                return False  # not found: cannot happen once llhttp read the head
        return end + len(_CRLFCRLF) < len(received)

    def _discard_excess(self) -> None:
        """Drop the bytes that followed a complete response in the same read.

        They are a body longer than its Content-Length, a 204 or 304 with a body, or
        a second response. The response stands, as its framing says it ended (RFC 9112 6.3); what
        follows is dropped, and the connection, whose next bytes cannot be trusted,
        is not reused (nginx: "upstream sent more data than specified").
        """
        _warn_bytes_after_response()
        self._parser = httptools.HttpResponseParser(self)
        self._keep_alive = False

    def drop_if_input_pending(self) -> bool:
        """Abort this idle connection if :meth:`input_pending`; say whether it did.

        RFC 9112 9.3: its next bytes cannot be trusted to answer a request. Only
        bytes are warned about; the upstream's close is the ordinary end of an idle
        connection.
        """
        unread = self._peek()
        if unread is _UNREAD_NOTHING:
            return False
        if unread is _UNREAD_BYTES:
            _warn_bytes_after_response()
        self.abort()
        return True

    def _response_complete(self, handler: ResponseHandler, data: bytes) -> None:
        """Give the connection back (or close it), then deliver the end of the body."""
        self._handler = None
        self._deadline = None
        keep = (
            self._owner.connection_reusable(self)
            if self._keep_alive and self._request_done
            else None
        )
        if keep is not None:
            self.state = _STATE_IDLE
            if self._read_paused:
                self.resume_reading()  # an idle connection must see the upstream close
            # (_set_deadline(keep, _DEADLINE_IDLE), inline as in send: the call
            # cost 0.6% of a proxied request.)
            if keep > 0:  # (else no timeout: the deadline stays None)
                deadline = self._clock.seconds() + keep
                self._deadline = deadline
                self._deadline_kind = _DEADLINE_IDLE
                if self._timer is None or self._timer_at > deadline:
                    self._restart_timer(keep, deadline)
            # Until this read is handled: the handler may start another request now
            # (the client's next one, pipelined), which must not take this connection.
            self.settling = True
            try:
                handler.response_data(data, True)
            finally:
                self.settling = False
            return
        elif not self._request_done:
            # An early response (say a 413) while the body was still going out: the
            # rest of the body is unwanted and the connection cannot be reused (RFC
            # 9112 9.3, 9.6). Closing gracefully would wait for an upstream that may
            # have stopped reading to take what is still buffered: drop it instead.
            self.abort()
        else:
            self.close()
        handler.response_data(data, True)

    def _switch(self, tail: bytes) -> None:
        """The upstream switched protocols: the connection is a tunnel from now on."""
        handler = self._handler
        if handler is None or not self._upgrade or self._status != 101:
            self._fail(ErrorKind.PROTOCOL, "an unexpected protocol switch")
            return
        self.state = _STATE_TUNNEL
        self._deadline = None
        handler.response_upgraded(self._status, self._reason, self._headers, tail)

    def _fail(self, kind: ErrorKind, detail: str) -> None:
        """Drop the connection and report the failure to the handler."""
        handler = self._handler
        started = self._received
        self.abort()
        if handler is not None:
            handler.response_failed(
                UpstreamError(kind, detail, response_started=started, reused=self.reused)
            )

    # -- parser callbacks (httptools calls these from feed_data) ------------------------

    def on_message_begin(self) -> None:
        """A response starts: after the end of ours, it is unsolicited.

        llhttp calls this at the first byte of a message (the empty lines it allows
        between messages excepted), so even ``H`` after a complete response is seen
        here: no later callback reports a status line cut short, and the next request
        on the connection would get it glued to its own response.
        """
        if self._complete:
            raise _MalformedResponseError("the upstream sent an unsolicited response")

    def on_status(self, reason: bytes) -> None:
        """Collect the reason phrase; llhttp hands one split across reads in pieces."""
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a field of the head; trailer fields are not passed on.

        llhttp drops the whitespace before a value but keeps what follows it; the
        field value excludes both (RFC 9112 5).
        """
        if self._in_body:
            return
        if len(name) == _TRANSFER_ENCODING_LENGTH and name.lower() == _TRANSFER_ENCODING:
            # Kept as llhttp read it: its trailing whitespace decides the framing.
            if self._codings is None:
                self._codings = []
            self._codings.append(value)
        self._headers.append((name, value.rstrip(_WHITESPACE)))

    def on_headers_complete(self) -> None:
        """Decide what the head means: interim, switch, or the final response."""
        if self._complete:
            raise _MalformedResponseError("the upstream sent an unsolicited response")
        reason = self._reason
        # (Most responses say "OK": no search for them, 90 ns.)
        if reason != b"OK" and _CONTROL_IN_REASON.search(reason):
            # RFC 9112 4: HTAB, SP and visible characters only. Another control byte
            # (a terminal escape, say) would go on to the client: the standard
            # phrase replaces the phrase then.
            self._reason = b""
        parser = self._parser
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            # RFC 9110 15: the only valid codes (llhttp takes any three digits).
            raise _MalformedResponseError(f"an invalid status code: {status:03d}")
        if status < 200:
            if status == 101:
                if not self._upgrade:
                    raise _MalformedResponseError(
                        "a 101 response to a request that did not ask for it"
                    )
                self._status = status
                return
            # RFC 9110 15.2: handed to the handler (a proxy relays them) once the
            # parser returns, in order, before the final head.
            if self._codings is not None or _declares_content(self._headers):
                # RFC 9110 8.6, RFC 9112 6.1: never in a 1xx, which ends at its head
                # (RFC 9112 6.3); llhttp would read a body for 104-199, which would
                # end up in the final response.
                raise _MalformedResponseError("an interim response with content framing")
            # The interim heads and the final one share the head limit, however
            # the reads split them.
            self._interim_size += self._head_size()
            if self._interim_size > MAX_RESPONSE_HEAD:
                raise _MalformedResponseError("the interim response heads are too large")
            self._interim = True
            self._interim_heads += 1
            interim = (status, self._reason, self._headers)
            if self._interim_pending is None:
                self._interim_pending = [interim]
            else:
                self._interim_pending.append(interim)
            self._headers = []
            self._codings = None
            return
        if (
            self._codings is not None
            and not self._head_only
            and status not in (204, 304)
            and not _only_chunked(self._codings)
        ):
            # The proxy re-frames the body for the client and can only undo chunked
            # (RFC 9112 6.1, 7); with another coding last, the body would run to
            # the close (RFC 9112 6.3, item 4) and reach the client mislabelled.
            raise _MalformedResponseError(
                "a Transfer-Encoding other than chunked: "
                + b", ".join(self._codings).decode("latin-1")
            )
        if (
            self._head_bytes > MAX_RESPONSE_HEAD
            and self._interim_size + self._head_size() > MAX_RESPONSE_HEAD
        ):
            # A head that ends inside a read is measured here: the count of reads
            # while it is unfinished only bounds what llhttp holds.
            raise _MalformedResponseError("the response head is too large")
        self._status = status
        # Only HTTP/1.1 connections are kept (as documented; nginx too). An HTTP/1.0
        # response with Transfer-Encoding must not be reused anyway (RFC 9112 6.1).
        # The version is known without asking the parser when the response began with
        # the final head and "HTTP/1.1 ": get_http_version formats a new string (330 ns).
        self._keep_alive = parser.should_keep_alive() and (
            (self._starts_http11 and not self._interim_heads) or parser.get_http_version() == "1.1"
        )
        self._in_body = True
        self._head_ready = True
        if self._head_only:
            raise _StopAtHeadError

    def _head_size(self) -> int:
        """The size of the final head as received: status line and field lines."""
        fields = sum(len(name) + len(value) + 4 for name, value in self._headers)
        return len(b"HTTP/1.1 200 \r\n\r\n") + len(self._reason) + fields

    def on_body(self, data: bytes) -> None:
        """Collect body bytes for delivery after the parser returns."""
        self._body.append(data)

    def on_message_complete(self) -> None:
        """The response ended (an interim one just resets the head)."""
        if self._interim:
            self._interim = False
            self._reason = b""
            return
        if self._status != 101:
            self._complete = True


def _warn_bytes_after_response() -> None:
    _log.warn(
        "An upstream sent bytes after the end of its response; the connection will not be reused"
    )


def _declares_content(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether fields hold a ``Content-Length`` other than 0."""
    return any(
        name.lower() == b"content-length" and value.strip() != b"0" for name, value in headers
    )


def _only_chunked(values: list[bytes]) -> bool:
    """Whether ``Transfer-Encoding`` field values name the chunked coding alone.

    The values are as llhttp hands them (leading whitespace dropped, trailing kept).
    The list may hold empty elements (RFC 9110 5.6.1), but llhttp frames the body
    as chunked only when the last value ends in ``chunked`` and spaces: after a
    trailing comma or tab, it reads the body to the close, chunk framing and all.
    The proxy's idea of the framing must be llhttp's (RFC 9112 11.2), so anything
    else is refused (nginx refuses any value but ``chunked`` itself).
    """
    codings = [coding.strip().lower() for value in values for coding in value.split(b",")]
    if [coding for coding in codings if coding] != [b"chunked"]:
        return False
    return values[-1].rstrip(b" ").lower().endswith(b"chunked")
