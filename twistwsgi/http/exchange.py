"""The Exchange: the one interface between a protocol and the handlers behind it.

A protocol (HTTP/1.1 today, HTTP/2 later) turns each request into an :class:`Exchange`
and gives it to a :class:`Handler`. The handler sees the request facts
(:class:`RequestHead`), reads the body through a :class:`BodyReceiver` it attaches,
pausing and resuming it, and writes the response through ``start_response``,
``write`` (an ``IConsumer``: a producer registered on it is paused while the client
is not reading), ``send_head`` (the head now, for a body that may be slow to come),
``send_file`` (handing an open file to the reactor), ``finish`` and ``abort``.
Handlers never see framing, keep-alive, pipelining or timeouts, so they do not
change when another protocol produces the Exchange.

Everything here runs in the reactor thread. A handler that works in other threads
(the WSGI bridge) hands its calls back to the reactor itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from twistwsgi.http.request import Address, RequestHead, Route

__all__ = [
    "Address",
    "BodyReceiver",
    "Exchange",
    "Handler",
    "LogNotes",
    "RequestHead",
    "Route",
    "Tunnel",
    "TunnelReceiver",
]


class BodyReceiver(Protocol):
    """Where an exchange delivers its request body (in the reactor thread)."""

    def body_received(self, data: bytes) -> None:
        """Take the next piece of the body."""

    def body_finished(self) -> None:
        """The whole body has been received."""

    def body_failed(self, reason: Exception) -> None:
        """The body will never be complete: malformed, too large, timed out or lost."""


class LogNotes(Protocol):
    """Values a handler leaves for the access log, looked up by variable name."""

    def get(self, name: str) -> str | None:
        """The value of ``name`` (``upstream_addr``, ...), or ``None``."""


class TunnelReceiver(Protocol):
    """Where the bytes of a connection that switched protocols go (reactor thread)."""

    def data_received(self, data: bytes) -> None:
        """Take bytes the client sent."""

    def connection_lost(self, reason: Failure) -> None:
        """The client's connection ended."""


class Tunnel(Protocol):
    """The client side of a connection that switched protocols."""

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Pause ``producer`` while the client is not reading."""

    def unregisterProducer(self) -> None:
        """Stop forwarding flow-control events."""

    def pause_reading(self) -> None:
        """Stop reading from the client."""

    def resume_reading(self) -> None:
        """Read from the client again."""

    def close(self) -> None:
        """Close the connection after what was written."""

    def abort(self) -> None:
        """Drop the connection now."""


class Exchange(Protocol):
    """One request and its response, as a handler sees them (reactor thread only).

    Attributes:
        request: the request facts.
        route: set by a router before it hands the exchange on (mount prefix and
            the path below it), else ``None``.
        response_started: whether ``start_response`` has been called.
        finished: whether the response is complete, aborted, or the client is gone;
            every response method is then a no-op.
        log_notes: values a handler leaves for the access log (a proxy's
            ``upstream_addr``, ``upstream_status``, ``upstream_response_time``), set
            by the time the exchange ends; ``None`` when it leaves none.
        remote_user: the user a mount's Basic authentication let through
            (``REMOTE_USER``, the access log's ``$remote_user``), else ``None``.
        access_log: what the exchange's access-log line is given to, set by a
            router for a host or mount with its own log; ``None``: the server's.
        limit_rate: the mount's ``limit_rate`` and ``limit_rate_after`` (bytes a
            second, bytes first at full speed), set by a router before the response
            starts; ``None``: no limit (see :mod:`twistwsgi.http.pacing`).
        limit_rate_after: the mount's ``limit_rate_after``, whether or not it has a
            rate: what a rate the response asks for (``X-Accel-Limit-Rate``) keeps.
    """

    request: RequestHead
    route: Route | None
    response_started: bool
    finished: bool
    log_notes: LogNotes | None
    remote_user: str | None
    access_log: Callable[[Any], None] | None
    limit_rate: tuple[int, int] | None
    limit_rate_after: int

    def receive_body(self, receiver: BodyReceiver) -> None:
        """Attach the receiver for the request body; buffered pieces arrive at once."""

    def continue_body(self) -> None:
        """Say the handler wants the body now (sends ``100 Continue`` if it was asked for)."""

    def send_interim(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> None:
        """Send an interim response (``102``-``199``, such as ``103 Early Hints``) now.

        RFC 9110 15.2: any number may precede the final response. Nothing is sent to
        an HTTP/1.0 client (which cannot tell them from the final response), nor once
        :meth:`start_response` was called or the exchange finished. ``100`` and ``101``
        are refused (``ValueError``): :meth:`continue_body` and the upgrade own them.
        """

    def pause_body(self) -> None:
        """Stop the body from arriving until :meth:`resume_body` (flow control)."""

    def resume_body(self) -> None:
        """Let the body arrive again after :meth:`pause_body`."""

    def start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> None:
        """Set the status and header fields; sent with the first body bytes.

        Holding the head until then lets a response finished at once go out in one
        write with an exact ``Content-Length``, and lets a WSGI application replace
        its head after an error before any body byte (PEP 3333); :meth:`send_head`
        sends it sooner.
        """

    def set_response_fields(self, owner: object, fields: list[tuple[bytes, bytes]]) -> None:
        """Send ``fields`` with the response, whatever the handler answers.

        For a gate in front of the handler (``owner``): the ``Set-Cookie`` of an
        authentication service that renewed the session (nginx's ``add_header`` of
        an ``auth_request_set`` value). Added after the handler's own fields,
        repeated names included (a browser applies ``Set-Cookie`` lines in order:
        the service's cookie wins over one of the same name, path and domain), to
        the ``101`` of an upgrade too; not to the server's own refusal of a broken
        request body. Called before the response starts. A later call by the same
        owner replaces its fields (a gate asked again about the request: its latest
        answer); each owner's are kept.
        """

    def send_head(self) -> None:
        """Send the head set by :meth:`start_response` now, without waiting for body bytes.

        For responses whose body may not start for a long time (Server-Sent Events,
        a long poll): the client sees the status and fields at once. The framing is
        decided now as for a body of unknown length: the ``Content-Length`` given,
        else chunked (close-delimited for an HTTP/1.0 client). A no-op when the head
        was already sent or the exchange is finished; an error before
        :meth:`start_response`.
        """

    def write(self, data: bytes) -> None:
        """Send a piece of the response body."""

    def client_left(self) -> bool:
        """Whether the client closed its side, though the server has not read that far.

        Its close waits behind request body bytes the server stopped reading.
        Callable from any thread.
        """

    def drop_departed_client(self) -> None:
        """End the exchange of a client :meth:`client_left` found gone.

        As a client that closed, not as a connection the server dropped.
        """

    @property
    def body_full(self) -> bool:
        """Whether the head is out and the response takes no more body bytes.

        True for a response without content (HEAD, 204, 205, 304) and once a
        declared ``Content-Length`` has been sent: more bytes are dropped, so a
        handler can stop producing them.
        """

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Register a producer that is paused while the client is not reading."""

    def unregisterProducer(self) -> None:
        """Remove the producer registered with :meth:`registerProducer`."""

    def send_file(self, file: IO[bytes], offset: int, count: int) -> Deferred[None]:
        """Send ``count`` bytes of ``file`` from ``offset`` as the body; fires when sent."""

    def finish(self, data: bytes = b"") -> None:
        """Send ``data`` as the last body bytes and complete the response."""

    def abort(self) -> None:
        """Give up on the response: the connection ends without more bytes.

        It closes in order when the client can tell the response was cut short (a
        Content-Length or chunked body, or no body), after lingering if the client
        may still be sending, and is reset when it cannot (a body the close
        delimits). A file still going out is stopped.
        """

    @property
    def upgradable(self) -> bool:
        """Whether :meth:`upgrade` may be called (an Upgrade request, no body)."""

    def upgrade(self, headers: list[tuple[bytes, bytes]], receiver: TunnelReceiver) -> Tunnel:
        """Switch protocols: send ``101`` with ``headers``, then tunnel raw bytes."""

    def on_close(self, callback: Callable[[Failure | None], object]) -> None:
        """Call ``callback`` once the exchange ends.

        It gets ``None`` when the response was sent whole, a failure when it was
        aborted or the connection was lost. An exchange that switched protocols
        (:meth:`upgrade`) ends when its tunnel closes, with ``None``: the ``101`` was
        its whole response, and the tunnel is in use until then.
        """


class Handler(Protocol):
    """Something that answers exchanges: a WSGI bridge, a file server, a router."""

    def handle(self, exchange: Exchange) -> None:
        """Answer ``exchange``; may return before the response is complete."""
