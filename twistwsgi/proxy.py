"""The reverse proxy handler: each exchange forwarded to a pooled upstream connection.

A proxy mount (``--proxy /api=http://127.0.0.1:9000``, or ``proxy = ...`` in a mount
table) becomes a :class:`ProxyHandler`. For each request it picks an upstream
(:mod:`twistwsgi.balancing`), takes an idle keep-alive connection from that
upstream's pool or opens one (:mod:`twistwsgi.upstream`), sends the request head
built by :mod:`twistwsgi.forwarding` (path mapping, hop-by-hop removal, forwarding
fields), streams the body both ways, and returns the connection to the pool when the
response allows it. One :class:`_Forward` object per request does all of it; it is
the exchange's body receiver and response producer, and the upstream connection's
response handler, so a proxied request costs one object and no Deferred once the
pool is warm.

**Streaming and back-pressure.** The request body goes upstream piece by piece as
the client sends it (a chunked body is re-chunked, ``Content-Length`` kept). When the
upstream stops reading, its transport pauses its producer, and the exchange stops
reading the client (``pause_body``); when the client stops reading the response,
the exchange pauses its producer (this object), and the upstream connection stops
reading (``pause_reading``). Memory per proxied request is therefore bounded by
Twisted's transport buffers, whatever the body sizes: at most about 64 KiB buffered
towards each side before its producer is paused, plus one read (64 KiB) in flight,
plus :data:`REPLAY_LIMIT` of request body kept for a retry, plus the exchange's own
unread-body buffer (``BODY_HIGH_WATER``, 256 KiB, only before the upstream is
connected): well under 1 MiB.

**100-continue.** The proxy answers ``Expect: 100-continue`` itself (RFC 9110 10.1.1
lets an intermediary do so): ``100 Continue`` is sent when the request head has
been written to a connected upstream, so a client with a large upload does not send
it when no upstream can take it (it gets a 502 instead). ``Expect`` is not forwarded,
so an upstream's own ``100`` is consumed. Its other interim responses (``103 Early
Hints``, ``102``, ``104``) are relayed to an HTTP/1.1 client as they come, hop-by-hop
fields removed (RFC 9110 15.2); an HTTP/1.0 client cannot take them.

**Retries.** When connecting fails, the request was never sent, so it goes to the
next upstream whatever its method. When the connection breaks after the request was
sent but before any byte of a response, only an idempotent request (RFC 9110 9.2.2;
any request with ``retry_non_idempotent``, nginx's ``proxy_next_upstream
non_idempotent``) whose body is still held (at most :data:`REPLAY_LIMIT` bytes; larger bodies are
streamed and not kept) is sent again, to another upstream. A reused keep-alive
connection that closes before any response byte is most likely the upstream closing
it as idle (RFC 9112 9.3.1), so it never counts as the upstream's failure: such a
request, if it may be sent again, is retried once on a fresh connection to the same
upstream; any other gets a 502 (it may have been processed). Nothing is
retried once a response byte has arrived, nor after a response timeout (the upstream
may still be working on it) unless ``retry_on_timeout`` asks for it (nginx's
``proxy_next_upstream timeout``), nor when the ``retry`` option is off. An answer whose
status is one of ``retry_statuses`` (nginx's ``proxy_next_upstream http_503``), to a
request that may be sent again, is dropped with its connection (nginx closes it too)
and the request goes to an upstream not tried yet, if one can take it at once;
otherwise that answer is relayed. ``retry_tries`` bounds the upstreams one request
is sent to and ``retry_timeout`` the time after its arrival it may go to another
(nginx's ``proxy_next_upstream_tries`` and ``_timeout``); a retry on a fresh
connection to the same upstream is not counted, being no failover.

**Connection limit and queue.** With ``max_conns``, an upstream with that many
requests in progress (tunnels included) is not picked (:mod:`twistwsgi.balancing`).
A request for which every upstream it could use is full waits, oldest first, in the
mount's queue (at most ``queue`` requests), its body unread (``pause_body``), so the
upstream is never sent more than it can take; whenever a request of the mount gives
its upstream back, the oldest waiters pick again. A retry that finds every other
upstream full waits in the queue the same way, at its end: nginx Plus's ``queue``
also holds a request whose upstream cannot be selected at once, whatever the cause.
A client that goes away leaves the queue. A full queue, or ``queue_timeout`` spent
waiting, is ``503 Service Unavailable`` (RFC 9110 15.6.4: a temporary overload, not
a failure of the upstreams, which are not counted as failed). nginx Plus answers
502 there; 503 tells the client, and the monitoring, that trying again later helps.

**Errors.** No healthy upstream, connecting refused or timed out, the connection
broken or a malformed response before the head: ``502 Bad Gateway``. No response head
within ``response_timeout``: ``504 Gateway Timeout``. Each with a short text body
saying in general terms what happened (no upstream available, not reached, connection
closed, invalid response), and a warning with the details that names the upstream and
why no other one was tried. A host's error page for the status replaces that body
(:func:`~twistwsgi.routing.answer_error`); an upstream's own 5xx is relayed as it came,
unless ``intercept_errors`` (nginx's ``proxy_intercept_errors``) sends the host's page
for its status in its place. Once the head was forwarded, a failure can
only be shown by aborting the client connection (the client sees a truncated body).
When the client goes away, the upstream connection is dropped, never pooled
mid-response.

**Upgrade.** A request asking to switch protocols (WebSocket) is forwarded with its
``Upgrade`` field and ``Connection: upgrade``; if the upstream answers ``101``, the
client gets the ``101`` with the upstream's fields and both connections become a
tunnel: bytes are copied both ways with the same back-pressure, and either side
closing closes the other. An idle tunnel has no timeout; one whose upstream stops
reading is closed after ``idle_timeout``. Any other answer is an ordinary
response. ``h2c`` is never passed on (:func:`twistwsgi.forwarding.upgrade_protocols`),
and a ``101`` to a protocol the request did not offer is a ``502``.

Everything here runs in the reactor thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistwsgi.access import client_address
from twistwsgi.balancing import Balancer, Peer, client_network, parse_balance
from twistwsgi.captures import CaptureTemplate, Groups, split_upstream_url
from twistwsgi.config import (
    ConfigError,
    MountConfig,
    ServerConfig,
    check_proxy_options,
    mount_or_server,
)
from twistwsgi.forwarding import (
    DEFAULT_HIDDEN,
    IDEMPOTENT_METHODS,
    NOTHING_HIDDEN,
    HiddenFields,
    RepeatedFields,
    TrustedProxies,
    UpstreamAddress,
    parse_upstream,
    replace_fields,
    request_fields,
    response_fields,
    upgrade_accepted,
    upgrade_protocols,
    upstream_target,
)
from twistwsgi.http.client import ClientConnection, ClientSettings, ErrorKind, UpstreamError
from twistwsgi.http.exchange import Exchange, Tunnel
from twistwsgi.http.pacing import asked_limit
from twistwsgi.http.rules import compile_location_pattern
from twistwsgi.log_format import RequestTemplate, uses_upstream_variables
from twistwsgi.proxy_cookies import CookieRewrite
from twistwsgi.proxy_redirect import RedirectRewrite, redirect_rewrite
from twistwsgi.response_spool import (
    MAX_RESPONSE_BUFFER,
    SPOOL_GRACE,
    ResponseSpool,
    accel_buffering,
)
from twistwsgi.routing import answer_error, refuse_path_above_root, remove_dot_segments
from twistwsgi.upstream import (
    EndpointFactory,
    IdentityError,
    UpstreamGroup,
    UpstreamPool,
    client_endpoint,
    load_client_identity,
    load_trust_root,
)
from twistwsgi.wsgi import AccelResolver, serve_accel

__all__ = ["REPLAY_LIMIT", "ProxyHandler", "build_proxy", "proxy_builder"]

_log = Logger(namespace="twistwsgi.proxy")

#: Request body kept to send again on a retry; a longer body is streamed, not kept.
REPLAY_LIMIT = 64 * 1024

# RFC 9110 10.2.3: a hint for clients that retry (urllib3's Retry honours it on a
# 503). A queue overflows for as long as a burst lasts, seconds at most: a short
# pause spreads the retries without keeping clients away longer than the overload.
_RETRY_AFTER = (b"Retry-After", b"1")

# The client's answer when no upstream answered, by how the last attempt failed
# (``None``: no attempt could be made). It says what happened in general terms only:
# addresses, system errors and parser messages are the operator's, in the log.
_FAILED: dict[ErrorKind | None, tuple[int, bytes]] = {
    None: (502, b"Bad Gateway: no upstream server is available\n"),
    ErrorKind.CONNECT: (502, b"Bad Gateway: the upstream server could not be reached\n"),
    ErrorKind.CLOSED: (502, b"Bad Gateway: the upstream server closed the connection\n"),
    ErrorKind.PROTOCOL: (502, b"Bad Gateway: the upstream server sent an invalid response\n"),
    ErrorKind.TIMEOUT: (504, b"Gateway Timeout: the upstream server did not answer in time\n"),
    # Only once a response head was relayed, so the client connection is aborted
    # instead; here for completeness.
    ErrorKind.STALLED: (502, b"Bad Gateway: the upstream server stopped its response\n"),
    # This server ran out of descriptors or memory: a moment later it may not be.
    ErrorKind.LOCAL: (503, b"Service Unavailable: the server is overloaded, try again later\n"),
}

#: The most body bytes of an X-Accel-Redirect answer read and dropped to keep its
#: connection; past it the connection is closed.
ACCEL_DRAIN_LIMIT = 64 * 1024

#: The response fields proxy_redirect rewrites, and the one that sets a rate.
_REDIRECT_FIELDS = frozenset({b"location", b"refresh"})
_RATE_NAME = b"x-accel-limit-rate"
_RATE_FIELD = frozenset({_RATE_NAME})

_OVERLOADED = b"Service Unavailable: the upstream servers are busy, try again later\n"

#: The upstream's fields an error page sent in place of its answer keeps: they belong
#: to the status (RFC 9110 11.6.1, 11.7.1, 10.2.1, 10.2.3, 14.4, 15.5.22), not to the
#: body it replaces (an Upgrade is left by response_fields on a 426 only).
_STATUS_FIELDS = frozenset(
    {
        b"www-authenticate",
        b"proxy-authenticate",
        b"allow",
        b"retry-after",
        b"content-range",
        b"upgrade",
    }
)


class ProxyHandler:
    """The handler of a proxy mount (see the module docstring).

    Args:
        group: the mount's upstreams.
        clock: the source of time.
        trusted: the networks whose forwarding fields are believed.
        preserve_host: send the client's ``Host`` (else the upstream's own).
        retry: send a failed request to another upstream when that is safe.
        retry_statuses: answers not relayed when another upstream can be tried.
        retry_on_timeout: send an idempotent request on when its upstream gave no
            head within ``response_timeout`` or stopped reading its body.
        retry_non_idempotent: treat every request as idempotent where sending it
            again is decided (POST, PATCH: the upstream makes that safe).
        ignored: the lower-case names of the answer's fields not acted on
            (``proxy_ignore_headers``: x-accel-buffering, x-accel-limit-rate).
        retry_tries: the most upstreams a request is sent to (0: no limit).
        retry_timeout: seconds after its arrival a request may still go to another
            upstream (0: no limit).
        intercept_errors: send the host's error page (``Route.error_pages``) in
            place of an upstream's 4xx or 5xx answer that has one (nginx's
            ``proxy_intercept_errors``).
        name: the mount, for logs.
        queue: requests that may wait when every upstream is at ``max_conns``.
        queue_timeout: seconds a request may wait (0: no limit).
        log_upstreams: note the upstreams each request tried, with their statuses
            and times, for an access log that writes them or the metrics that count
            them (``Exchange.log_notes``); off, a request does not pay for it.
        buffering: keep reading a response from its upstream while the client
            does not read, holding what the client cannot take yet in a
            :class:`~twistwsgi.response_spool.ResponseSpool`, so the upstream's
            connection is free as soon as the upstream has sent it (nginx's
            ``proxy_buffering``); an ``X-Accel-Buffering: yes|no`` field of the
            response decides for that response. Off: a slow client pauses the
            upstream's connection.
        max_buffer: the most bytes one response holds so (plus one read); past
            it the upstream's connection is paused until the client catches up.
        set_fields: request fields sent in place of the client's of the same name
            (nginx's ``proxy_set_header``), each a name and a
            :class:`~twistwsgi.log_format.RequestTemplate` source; ``Host`` among
            them replaces the one ``preserve_host`` chooses.
        redirects: how the upstreams' ``Location`` and ``Refresh`` URLs are
            rewritten (nginx's ``proxy_redirect``), or ``None`` for not at all.
        hidden: the upstream response fields not passed on, hop-by-hop aside.
        cookies: how the upstreams' ``Set-Cookie`` attributes are rewritten
            (nginx's ``proxy_cookie_path``, ``proxy_cookie_domain`` and
            ``proxy_cookie_flags``), or ``None``.
        balance_key: for the ``hash`` policies, the key's
            :class:`~twistwsgi.log_format.RequestTemplate` source (``ip_hash`` makes
            its own from the client, as the mount's rules resolve it).

    Attributes:
        waiting: the requests waiting for a free upstream, oldest first, each with
            its ``queue_timeout`` timer.
    """

    def __init__(
        self,
        group: UpstreamGroup,
        *,
        clock: IReactorTime,
        trusted: TrustedProxies | None = None,
        preserve_host: bool = True,
        retry: bool = True,
        name: str = "/",
        queue: int = 100,
        queue_timeout: float = 30.0,
        log_upstreams: bool = False,
        buffering: bool = False,
        max_buffer: int = MAX_RESPONSE_BUFFER,
        set_fields: Sequence[tuple[str, str]] = (),
        redirects: RedirectRewrite | None = None,
        balance_key: str | None = None,
        cookies: CookieRewrite | None = None,
        hidden: HiddenFields = NOTHING_HIDDEN,
        retry_statuses: Collection[int] = (),
        retry_on_timeout: bool = False,
        retry_non_idempotent: bool = False,
        ignored: Collection[str] = (),
        retry_tries: int = 0,
        retry_timeout: float = 0.0,
        intercept_errors: bool = False,
    ) -> None:
        self.group = group
        self.intercept_errors = intercept_errors
        self.retry_statuses = frozenset(retry_statuses)
        self.retry_on_timeout = retry_on_timeout
        self.retry_non_idempotent = retry_non_idempotent
        self.reads_buffering = "x-accel-buffering" not in ignored
        self.reads_rate = "x-accel-limit-rate" not in ignored
        self.retry_tries = retry_tries
        self.retry_timeout = retry_timeout
        # Set by the site when the mount has x_accel_redirect: finds the static mount
        # an upstream's X-Accel-Redirect names.
        self.accel: AccelResolver | None = None
        self.cookies = cookies
        # The fields hidden, and those a response is rewritten or paced for: the
        # scan that drops the hidden ones notes them (most responses have none).
        watched = (_REDIRECT_FIELDS if redirects is not None else frozenset()) | (
            _RATE_FIELD if self.reads_rate else frozenset()
        )
        self.hidden = HiddenFields(hidden.names, watched) if watched else hidden
        # The fields of the last response relayed, for the next one (the same, most
        # often) to be sent without serialising them again.
        self.repeated_fields = RepeatedFields()
        # Set by build_proxy for a regular-expression mount whose URL has a path with
        # captures or variables: the whole request-target sent (nginx's proxy_pass
        # with variables), the same for every upstream.
        self.target_template: CaptureTemplate | None = None
        self._balance_key = (
            RequestTemplate(balance_key, escape="none") if balance_key is not None else None
        )
        self._ip_hash = group.balancer.policy == "ip_hash"
        self.redirects = redirects
        self.set_fields = tuple(
            (name.encode("ascii"), RequestTemplate(template))
            for name, template in set_fields
            if name.lower() != "host"
        )
        self.set_host = next(
            (RequestTemplate(template) for name, template in set_fields if name.lower() == "host"),
            None,
        )
        self.log_upstreams = log_upstreams
        self.buffering = buffering
        self.max_buffer = max_buffer
        self.balancer: Balancer[UpstreamPool] = group.balancer
        self.clock = clock
        self.trusted = trusted or TrustedProxies(())
        self.preserve_host = preserve_host
        self.retry = retry
        self.name = name
        self.queue = queue
        self.queue_timeout = queue_timeout
        self.waiting: OrderedDict[_Forward, IDelayedCall | None] = OrderedDict()
        self._dispatching = False
        self._dispatch_again = False
        self._recheck: IDelayedCall | None = None
        self._dispatch_call: IDelayedCall | None = None
        # Capacity also comes back without a request ending: a health check passing.
        group.on_recovered = self.dispatch

    def balance_key(self, exchange: Exchange) -> bytes | None:
        """The key the balancer picks ``exchange``'s upstream by, if the policy has one."""
        if self._ip_hash:
            return client_network(client_address(exchange.request, self.trusted))
        template = self._balance_key
        if template is None:
            return None
        return template.render(exchange.request, exchange.remote_user, proxies=self.trusted)

    def handle(self, exchange: Exchange) -> None:
        """Forward ``exchange`` to an upstream."""
        if exchange.route is None and remove_dot_segments(exchange.request.decoded_path) is None:
            # Not behind the Router, which refuses these: a path that climbs above the
            # root must not climb out of the upstream's prefix (RFC 3986 5.2.4).
            refuse_path_above_root(exchange)
            return
        _Forward(self, exchange).start()

    def close(self) -> None:
        """Stop health checks and close idle upstream connections (on reload or stop).

        Requests waiting in the queue stay there: like those in progress, they are
        served by these upstreams as slots free up (or time out).
        """
        self.group.close()

    def upstream_states(self) -> list[tuple[str, int, int, int, int]]:
        """Each upstream now, for the metrics: ``(name, down, active, busy, idle)``.

        ``down`` is 1 while it is left out (after ``max_fails`` failures, or a
        health check it failed, or marked down), else 0; ``active`` its requests in progress;
        ``busy`` and ``idle`` its open connections that carry a request (or a
        tunnel) and that wait in the pool.
        """
        balancer = self.balancer
        now = self.clock.seconds()
        states = []
        for peer in balancer.peers:
            pool = peer.target
            idle = len(pool.idle)
            states.append(
                (
                    peer.name,
                    0 if balancer.usable(peer, now) else 1,
                    peer.active,
                    max(0, len(pool.connections) - idle),
                    idle,
                )
            )
        return states

    def dispatch_soon(self) -> None:
        """:meth:`dispatch` once the reactor is done with what it is handling now."""
        if self._dispatch_call is None:
            self._dispatch_call = self.clock.callLater(0, self._dispatch_soon_fired)

    def _dispatch_soon_fired(self) -> None:
        self._dispatch_call = None
        if self.waiting:
            self.dispatch()

    def dispatch(self) -> None:
        """Give free upstream slots to the waiting requests, oldest first.

        Called when a request gives its upstream back, and before a new request
        picks (so it does not overtake the waiters when slots freed otherwise, by a
        health check passing, say). Each waiter picks as a new attempt would; one
        that is still refused only for want of a slot keeps its place. Waiters that
        have tried nothing yet all get the same answer from the balancer, so after
        the first of them is refused the others are skipped.

        Not re-entered: a waiter that fails at once (a connect refused synchronously)
        gives its slot back from inside this loop; the nested call only asks for
        another pass, so a long queue cannot grow the stack.
        """
        if self._dispatching:
            self._dispatch_again = True
            return
        self._dispatching = True
        try:
            self._dispatch_again = True
            while self._dispatch_again:
                self._dispatch_again = False
                self._serve_waiters()
        finally:
            self._dispatching = False
        if self.waiting:
            self.recheck_at_recovery()

    def recheck_at_recovery(self) -> None:
        """Look at the queue again when the first upstream out after failures is back."""
        now = self.clock.seconds()
        when = self.balancer.next_recovery(now)
        if when is None:
            return
        recheck = self._recheck
        if recheck is not None and recheck.active():
            if recheck.getTime() <= when:
                return
            recheck.cancel()
        self._recheck = self.clock.callLater(when - now, self._recheck_fired)

    def _recheck_fired(self) -> None:
        self._recheck = None
        if self.waiting:
            self.dispatch()

    def _serve_waiters(self) -> None:
        waiting = self.waiting
        balancer = self.balancer
        while waiting:
            now = self.clock.seconds()
            fresh_busy = False
            chosen: _Forward | None = None
            peer: Peer[UpstreamPool] | None = None
            for forward in waiting:
                tried = forward._tried
                if fresh_busy and not tried:
                    continue
                peer = balancer.pick(now, tried, forward._balance_key)
                if peer is None and balancer.busy(now, tried):
                    fresh_busy = fresh_busy or not tried
                    continue
                chosen = forward
                break
            if chosen is None:
                return
            # Out of the loop before the waiter goes on: what it does may end other
            # requests and come back here.
            timer = waiting.pop(chosen)
            if timer is not None and timer.active():
                timer.cancel()
            chosen._resume(peer)


class _AttemptNotes:
    """The access log's view of the upstreams a request tried (``Exchange.log_notes``).

    nginx's ``$upstream_addr``, ``$upstream_status`` and ``$upstream_response_time``:
    one entry per upstream tried, joined with ``", "``. Written out only when a log
    line asks for them, as the exchange ends (an attempt still going then ends at
    that moment). The request keeps only what this needs, cheaply: when each
    attempt began, and when and how each one that failed ended.

    Args:
        tried: the upstreams, in the order they were tried.
        started: when each was given the request (clock seconds).
        failed: ``(when, status, kind, answered)`` for each that failed, in order:
            502, 503 or 504 (as the client's answer would say), or the status it
            had answered; what went wrong (``None``: nothing, its answer was not
            relayed, see ``retry_statuses``); the status it answered (0: none).
        answered: the status the last one answered, 0 if none (``-``: the client
            left first).
        clock: the time source.
        completed: when the last one's response came whole, if the client's
            response ended later (it waited in the spool for a slow client).
    """

    __slots__ = ("_answered", "_clock", "_completed", "_failed", "_started", "_tried")

    def __init__(
        self,
        tried: list[Peer[UpstreamPool]],
        started: list[float],
        failed: list[tuple[float, int, ErrorKind | None, int]] | None,
        answered: int,
        clock: IReactorTime,
        *,
        completed: float | None = None,
    ) -> None:
        self._tried = tried
        self._started = started
        self._failed = failed or []
        self._answered = answered
        self._clock = clock
        self._completed = completed

    def get(self, name: str) -> str | None:
        """The value of variable ``name``, or ``None`` for one not known here."""
        failed = self._failed
        count = len(self._started)
        if name == "upstream_addr":
            return ", ".join(
                upstream_address_text(peer.target.address) for peer in self._tried[:count]
            )
        if name == "upstream_status":
            statuses = [str(entry[1]) for entry in failed[:count]]
            if len(statuses) < count:
                statuses.append(str(self._answered) if self._answered else "-")
            return ", ".join(statuses)
        if name == "upstream_response_time":
            return ", ".join(f"{seconds:.3f}" for seconds in self._durations())
        return None

    def _last_end(self) -> float:
        """When the last attempt ended: its response whole, else now."""
        return self._completed if self._completed is not None else self._clock.seconds()

    def _durations(self) -> list[float]:
        """Each attempt's time, from giving it the request to its end (or now)."""
        count = len(self._started)
        ends = [entry[0] for entry in self._failed[:count]]
        ends += [self._last_end()] * (count - len(ends))
        return [max(0.0, end - start) for start, end in zip(self._started, ends, strict=True)]

    def attempts(self) -> list[tuple[str, int, str | None, float]]:
        """Each attempt, for the metrics: its upstream, answer, failure and time.

        The answer is the status the upstream answered (0: none); the failure an
        :class:`~twistwsgi.http.client.ErrorKind`'s value, or ``None`` (a
        response that broke off has both).
        """
        started = self._started
        if len(started) == 1 and not self._failed:  # (most requests: measured 2 us less)
            seconds = max(0.0, self._last_end() - started[0])
            return [(self._tried[0].name, self._answered, None, seconds)]
        count = len(started)
        outcomes = [
            (answered, kind.value if kind is not None else None)
            for _, _, kind, answered in self._failed[:count]
        ]
        if len(outcomes) < count:
            outcomes.append((self._answered, None))
        return [
            (peer.name, answered, failure, seconds)
            for peer, (answered, failure), seconds in zip(
                self._tried[:count], outcomes, self._durations(), strict=True
            )
        ]


def upstream_address_text(address: UpstreamAddress) -> str:
    """``host:port`` (an IPv6 address in brackets), or ``unix:/path``, as nginx logs it."""
    if address.socket_path:
        return "unix:" + address.socket_path
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


@implementer(IPushProducer)
class _Forward:
    """One proxied request, from the choice of upstream to the end of the response."""

    __slots__ = (
        "_abort_after_spool",
        "_answered_status",
        "_arrived_at",
        "_attached",
        "_balance_key",
        "_body_done",
        "_client_paused",
        "_completed_at",
        "_conn",
        "_connecting",
        "_discarding",
        "_done",
        "_drained",
        "_ending",
        "_exchange",
        "_failed_at",
        "_fields",
        "_grace",
        "_has_body",
        "_last_failure",
        "_peer",
        "_producing",
        "_proxy",
        "_replay",
        "_replay_size",
        "_request",
        "_response_fields",
        "_spool",
        "_spool_broken",
        "_spool_over",
        "_stale_retried",
        "_started_at",
        "_tried",
        "_tunnel",
        "_tunnelling",
        "_upgrade_protocols",
        "_upstream_paused",
    )

    # Set only once they matter (see __init__).
    _spool_over: bytes
    _spool_broken: bool
    _ending: bool
    _abort_after_spool: bool

    def __init__(self, proxy: ProxyHandler, exchange: Exchange) -> None:
        self._proxy = proxy
        self._exchange = exchange
        request = exchange.request
        self._request = request
        self._conn: ClientConnection | None = None
        self._peer: Peer[UpstreamPool] | None = None
        self._tried: list[Peer[UpstreamPool]] = []
        self._balance_key: bytes | None = None  # (start() makes it)
        # Only what every request reads is set here. The rest is set where it
        # starts to matter: _drained by _discard_body, _replay_size with a body,
        # the spool's fields with the spool, _failed_at and _completed_at with
        # _started_at, _arrived_at with retry_timeout, _stale_retried and _fields
        # before any read (with the empty tuple below for no upgrade, measured:
        # 0.55% of a proxied request).
        # The upstream's body is read and dropped, its connection kept: it answered
        # with an X-Accel-Redirect a static mount serves, or an error page replaces it.
        self._discarding = False
        self._connecting: Deferred[ClientConnection] | None = None
        # (RequestHead.has_body, spelled out: a property read is a call through C
        # on Python 3.11, measured 0.5% of a proxied request.)
        self._has_body = has_body = request.chunked or bool(request.content_length)
        self._attached = False  # receive_body was called
        self._body_done = not has_body
        if has_body:
            self._replay: list[bytes] | None = []
            self._replay_size = 0
        else:
            self._replay = None
        self._done = False
        self._producing = False
        # The upstream and error of the last failed attempt.
        self._last_failure: tuple[str, UpstreamError] | None = None
        self._tunnel: Tunnel | None = None
        self._tunnelling = False
        # What the request may be upgraded to (empty: an ordinary request).
        self._upgrade_protocols: Sequence[bytes] = ()
        self._upstream_paused = False  # the upstream connection stopped reading
        # For the access log (see _AttemptNotes): when each attempt began, when and
        # how each failed one ended, what the last one answered.
        self._started_at: list[float] | None = None  # (None: not noted)
        self._answered_status = 0
        # Response buffering (see ProxyHandler's buffering): whether the client has
        # stopped reading, the upstream's response fields (for X-Accel-Buffering,
        # looked at when the client first stops reading), the spool once used, a
        # read that did not fit in it (the upstream is paused meanwhile), whether
        # the spool failed, whether the client's response ends once the spool is
        # empty (aborted: the upstream failed): the last four set in
        # _start_spooling.
        self._client_paused = False
        self._grace: IDelayedCall | None = None  # the wait before spooling starts
        self._response_fields: list[tuple[bytes, bytes]] | None = None
        self._spool: ResponseSpool | None = None

    # -- starting an attempt ------------------------------------------------------------

    def start(self) -> None:
        """Build the forwarded fields, then make the first attempt."""
        exchange = self._exchange
        request = self._request
        proxy = self._proxy
        # (when_special positionally: a call with keywords costs more.)
        self._fields = request_fields(request, self._special_context)
        if proxy.set_fields:
            user = exchange.remote_user
            self._fields = replace_fields(
                self._fields,
                [
                    (name, template.render(request, user, proxies=proxy.trusted))
                    for name, template in proxy.set_fields
                ],
            )
        if proxy.balancer.hashed:
            self._balance_key = proxy.balance_key(exchange)
        if proxy.retry_timeout:
            self._arrived_at = proxy.clock.seconds()
        exchange.on_close(self._exchange_closed)
        if self._has_body:
            exchange.pause_body()  # until an upstream can take it
        self._attempt()

    def _special_context(self) -> tuple[bool, Sequence[bytes]]:
        """Whether the client is trusted, and the protocols it may be upgraded to.

        Asked by :func:`request_fields` only for a request with hop-by-hop or
        forwarding fields (an ``Upgrade`` field is one): any other is neither
        upgraded nor has forwarding fields to extend.
        """
        request = self._request
        # An Upgrade only to protocols never passed on (h2c) goes as a plain request.
        self._upgrade_protocols = upgrade = (
            upgrade_protocols(request) if self._exchange.upgradable else []
        )
        return self._proxy.trusted.trusts_peer(request.peer), upgrade

    def _attempt(self, *, retry: bool = False) -> None:
        """Pick an upstream not tried yet and use it, or wait for one to be free.

        Args:
            retry: the previous attempt failed (``_last_failure``). Its log line says
                what follows, so it is written here once that is known: an operator
                reading "retrying" must find another attempt after it.
        """
        proxy = self._proxy
        if proxy.waiting:
            proxy.dispatch()  # the older waiters first
        now = proxy.clock.seconds()
        peer = proxy.balancer.pick(now, self._tried, self._balance_key)
        if peer is None:
            if proxy.balancer.busy(now, self._tried):
                self._wait(retry=retry)
            else:
                self._no_upstream()
            return
        if retry:
            self._log_retry(f"retrying on {peer.name}")
        self._tried.append(peer)
        self._use(peer)

    def _log_retry(self, outcome: str) -> None:
        """Log the failed attempt that the request goes on from, and how."""
        assert self._last_failure is not None
        upstream, error = self._last_failure
        _log.info(
            "Upstream {upstream} failed for {method} {target} ({detail}); {outcome}",
            upstream=upstream,
            method=_text(self._request.method),
            target=_text(self._request.target),
            detail=error.detail,
            outcome=outcome,
        )

    def _no_upstream(self) -> None:
        """No upstream is left for this request: 502, or 504 after a timeout.

        The log line names the upstream that failed last, if any, and why each of
        the others cannot take the request: after every attempt failed, or with
        every upstream out, the operator sees which and why in one line.
        """
        now = self._proxy.clock.seconds()
        failure = self._last_failure
        if failure is None:
            self._failed(None, "no upstream is available", self._unavailable(now, None))
            return
        upstream, error = failure
        detail = error.detail
        others = self._unavailable(now, upstream)
        if others:
            # Twisted's messages end in a full stop; this one goes on.
            detail = f"{detail.rstrip('.')}; no other upstream is available: {others}"
        self._failed(error.kind, detail, upstream)

    def _unavailable(self, now: float, skip: str | None) -> str:
        """The upstreams (but ``skip``) out for this request, each with why; full is not out.

        When the balancer has nothing for the request and it is not for want of a
        slot, that is every upstream; when the request has to wait (or gets a 503),
        those left are the full ones, which the log line names already.
        """
        balancer = self._proxy.balancer
        described = []
        for peer in self._proxy.group.peers:
            if peer.name == skip:
                continue
            if peer.down:
                why = "marked down"
            elif not peer.healthy:
                why = "failing its health check"
            elif not balancer.usable(peer, now):
                why = "left out after failures"
            elif peer in self._tried:
                why = "already tried"
            else:
                continue
            described.append(f"{peer.name} ({why})")
        return ", ".join(described)

    def _wait(self, *, retry: bool = False) -> None:
        """Every upstream this request could use is full: queue it, or 503.

        Args:
            retry: the previous attempt failed (see :meth:`_attempt`).
        """
        proxy = self._proxy
        if len(proxy.waiting) >= proxy.queue:
            detail = (
                f"every upstream it could use is at max_conns ({proxy.balancer.max_conns})"
                f" and the queue ({proxy.queue}) is full"
            )
            if retry and self._last_failure is not None:
                upstream, error = self._last_failure
                detail = f"{detail}, for a retry after {upstream} failed ({error.detail})"
                self._overloaded(detail, skip=upstream)
            else:
                self._overloaded(detail)
            return
        if retry:
            self._log_retry("waiting in the queue to retry (the other upstreams are full)")
        if self._attached:
            self._exchange.pause_body()  # a retry: hold the rest of the body meanwhile
        timeout = proxy.queue_timeout
        # Whether the wait ends at retry_timeout rather than at queue_timeout: decided
        # now, as recomputing the time spent then could come out a hair short.
        retry_deadline = False
        if retry and proxy.retry_timeout:
            # The retry may wait only as long as retry_timeout has left (more than 0:
            # _retry_limit allowed it just now).
            left = proxy.retry_timeout - (proxy.clock.seconds() - self._arrived_at)
            retry_deadline = timeout <= 0 or left <= timeout
            if retry_deadline:
                timeout = left
        proxy.waiting[self] = (
            proxy.clock.callLater(timeout, self._queue_timed_out, retry_deadline)
            if timeout > 0
            else None
        )
        # Alone in the queue, no dispatch has looked at when an upstream out after
        # failures comes back: that frees capacity too.
        proxy.recheck_at_recovery()

    def _queue_timed_out(self, retry_deadline: bool) -> None:
        waiting = self._proxy.waiting
        if self in waiting:
            del waiting[self]
            failure = self._last_failure
            if retry_deadline and failure is not None:
                # A retry that waited until retry_timeout: the failure it was for
                # answers, as one not retried at all would.
                upstream, error = failure
                limit = f"retry_timeout ({self._proxy.retry_timeout:g}s) passed"
                self._failed(
                    error.kind, f"{error.detail.rstrip('.')}; not retried: {limit}", upstream
                )
                return
            self._overloaded(
                f"no upstream it could use had a free connection within"
                f" {self._proxy.queue_timeout:g}s"
            )

    def _resume(self, peer: Peer[UpstreamPool] | None) -> None:
        """Out of the queue (see :meth:`ProxyHandler.dispatch`): use ``peer``."""
        if peer is None:
            self._no_upstream()  # every upstream it could use went (unhealthy, say)
            return
        self._tried.append(peer)
        # Most often the slot (and the connection) of a response that ended just now,
        # in this reactor turn: nothing has read from that connection since.
        self._use(peer, unread_checked=True)

    def _use(self, peer: Peer[UpstreamPool], *, unread_checked: bool = False) -> None:
        """Send on an idle connection of ``peer``, or connect to it."""
        proxy = self._proxy
        # (Balancer.acquire and, in _release, Balancer.release, in place: a call
        # to the balancer for each cost 0.6% of a proxied request.)
        peer.active += 1
        self._peer = peer
        self._stale_retried = False  # (once per upstream)
        if proxy.log_upstreams:
            started = self._started_at
            if started is None:
                started = self._started_at = []
                # How each failed attempt ended, and when the upstream completed
                # (for $upstream_response_time, when the response outlives it).
                self._failed_at: list[tuple[float, int, ErrorKind | None, int]] | None = None
                self._completed_at: float | None = None
            started.append(proxy.clock.seconds())
        # (Without the keyword when it is the default: a call with keywords costs
        # more, and most requests take a connection given back in an earlier turn.)
        pool = peer.target
        connection = pool.take(unread_checked=True) if unread_checked else pool.take()
        if connection is not None:
            self._send(connection)
            return
        self._connect(peer)

    def _connect(self, peer: Peer[UpstreamPool]) -> None:
        """Open a new connection to ``peer`` (whose slot this request holds)."""
        if self._attached:
            self._exchange.pause_body()
        connecting = peer.target.connect()
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, connection: ClientConnection) -> None:
        self._connecting = None
        if self._done:
            connection.close()
            return
        self._send(connection)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._done:
            return  # cancelled: the client went away
        error = failure.value
        if not isinstance(error, UpstreamError):
            error = UpstreamError(ErrorKind.CONNECT, failure.getErrorMessage())
        self._attempt_failed(error)

    def _send(self, connection: ClientConnection) -> None:
        """Write the request head (and what is held of the body) on ``connection``."""
        self._conn = connection
        self._upstream_paused = False  # a new connection tells its own state in send
        request = self._request
        proxy = self._proxy
        peer = self._peer
        assert peer is not None
        address = peer.target.address
        authority = request.authority
        host = authority if proxy.preserve_host and authority else address.host_field
        if proxy.set_host is not None:
            # (Empty: the upstream's own, as Host cannot be left out, RFC 9112 3.2.)
            user = self._exchange.remote_user
            host = proxy.set_host.render(request, user, proxies=proxy.trusted) or host
        template = proxy.target_template
        if template is None:
            target = upstream_target(request, self._exchange.route, address.prefix)
        else:
            route = self._exchange.route
            target = template.render(
                None if route is None else route.captures,
                request,
                self._exchange.remote_user,
                proxies=proxy.trusted,
            )
        head = b"".join(
            (
                request.method,
                b" ",
                target,
                b" HTTP/1.1\r\nHost: ",
                host,
                b"\r\n",
                self._fields,
                b"\r\n",
            )
        )
        if not self._has_body and not self._upgrade_protocols and request.method != b"HEAD":
            # The most common request, sent with send's defaults: a call with
            # keywords costs more (measured with take's in _use and the pool's read
            # of settling, a property before: 0.7% of a proxied request).
            connection.send(head, self)
            return
        connection.send(
            head,
            self,
            head_only=request.method == b"HEAD",
            body=self._has_body,
            chunked=request.chunked,
            upgrade=bool(self._upgrade_protocols),
        )
        if not self._has_body:
            return
        exchange = self._exchange
        if not self._attached:
            # First attempt: what the exchange holds arrives now, the rest as it comes.
            self._attached = True
            exchange.receive_body(self)
            if self._conn is not connection:
                return  # the body failed meanwhile
            exchange.continue_body()
        else:
            # A retry: send what was kept of the body.
            for piece in self._replay or ():
                connection.write_body(piece)
            if self._body_done:
                connection.end_body()
        if not self._upstream_paused and self._conn is connection:
            # Unless the upstream stopped reading meanwhile (the writes above may
            # have filled its buffer): then sending_resumed resumes the client.
            exchange.resume_body()

    # -- the request body (BodyReceiver) ----------------------------------------------

    def body_received(self, data: bytes) -> None:
        """Forward a piece of the body, keeping it while a retry could need it."""
        if self._done:
            return
        connection = self._conn
        replay = self._replay
        if replay is not None:
            replay.append(data)
            self._replay_size += len(data)
            if self._replay_size > REPLAY_LIMIT and connection is not None:
                self._replay = None  # too long to keep: no retry from now on
        if connection is not None:
            connection.write_body(data)

    def body_finished(self) -> None:
        """The client sent the whole body."""
        self._body_done = True
        connection = self._conn
        if connection is not None and not self._done:
            connection.end_body()

    def body_failed(self, reason: Exception) -> None:
        """The client's body broke: the upstream request cannot complete."""
        if self._done:
            return
        self._done = True
        self._drop_upstream()
        # The server itself answers the client (400, 408, 413) or closes.

    # -- the response (ResponseHandler) -----------------------------------------------

    def response_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Relay an interim response (RFC 9110 15.2: a proxy must), but not ``100``.

        The proxy answers ``Expect: 100-continue`` itself and does not forward it, so
        an upstream's ``100`` answers nothing the client asked through it.
        """
        if status != 100:
            fields = _without_accel(
                self._proxy, response_fields(headers, status, self._proxy.hidden)
            )
            self._exchange.send_interim(status, fields, reason or None)

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Start the client's response with the upstream's status and fields."""
        if status in self._proxy.retry_statuses and self._retry_answer(status):
            return
        peer = self._peer
        # (Only an upstream with failures has them forgotten: most answer without.)
        recovered = peer is not None and peer.fails > 0 and self._answered()
        self._answered_status = status
        self._response_fields = headers
        proxy = self._proxy
        exchange = self._exchange
        # A mount that passes fields on as response_fields leaves them (no cookie
        # rewriting, no error page or X-Accel-Redirect in place of the answer) relays
        # the same upstream fields and status as the same fields again.
        plain = proxy.cookies is None and proxy.accel is None and not proxy.intercept_errors
        fields = proxy.repeated_fields.relayed(headers, status) if plain else None
        if fields is None:
            fields = self._relayed_fields(status, headers, recovered=recovered, plain=plain)
            if fields is None:
                return  # an error page or a file answers in its place
        exchange.start_response(status, fields, reason or None)
        if status == 205:
            # RFC 9110 15.3.6: a 205 has no content (the exchange says Content-Length:
            # 0), so the client's answer is whole now. Content the upstream sends
            # anyway is its mistake, framed soundly: read and dropped with a warning
            # naming it (below), the connection kept.
            self._discard_body()
            exchange.finish(b"")
        if recovered and proxy.waiting:
            proxy.dispatch()  # the probe succeeded: the peer takes requests again

    def _relayed_fields(
        self, status: int, headers: list[tuple[bytes, bytes]], *, recovered: bool, plain: bool
    ) -> list[tuple[bytes, bytes]] | None:
        """The fields of the client's response, made from the upstream's answer.

        Returns:
            The fields, or ``None`` when the client is answered otherwise (the
            host's error page, the file of an X-Accel-Redirect).
        """
        proxy = self._proxy
        exchange = self._exchange
        seen: set[bytes] = set()
        fields = response_fields(headers, status, proxy.hidden, seen)
        if proxy.redirects is not None and not seen.isdisjoint(_REDIRECT_FIELDS):
            proxy.redirects.fields(fields, self._request, exchange.remote_user, proxy.trusted)
        if proxy.cookies is not None:
            proxy.cookies.fields(fields, self._request, exchange.remote_user, proxy.trusted)
        if proxy.intercept_errors and status >= 400:
            route = exchange.route
            pages = route.error_pages if route is not None else None
            if pages is not None and status in pages:
                # nginx's proxy_intercept_errors: the host's page in place of the
                # upstream's body, read to its end and dropped (below); the fields
                # that belong to the status stay (nginx keeps a 401's
                # WWW-Authenticate only).
                self._discard_body()
                kept = [(name, value) for name, value in fields if name.lower() in _STATUS_FIELDS]
                answer_error(exchange, status, b"", kept, pages)
                if recovered and proxy.waiting:
                    proxy.dispatch()
                return None
        if proxy.accel is not None:
            target = _accel_redirect(headers)  # (as sent, whatever is hidden)
            if target is not None:
                # nginx's X-Accel-Redirect: the file in place of the upstream's body,
                # which is read to its end (the connection stays in the pool) and
                # dropped; the exchange is the static mount's from here. After the
                # error pages, as nginx handles X-Accel-Redirect after them. Its
                # X-Accel-Limit-Rate sets the file's rate (nginx's), as serve_accel reads.
                self._discard_body()
                asked = headers if proxy.reads_rate else []
                serve_accel(exchange, proxy.accel, target, fields, asked)
                if recovered and proxy.waiting:
                    proxy.dispatch()
                return None
        if proxy.reads_rate and _RATE_NAME in seen:
            # Its X-Accel-Limit-Rate sets its rate, in place of the mount's (nginx's).
            exchange.limit_rate = asked_limit(
                headers, exchange.limit_rate, exchange.limit_rate_after
            )
        # Only fields nothing but response_fields made (no redirect rewritten, no
        # rate read) stand for the same answer next time.
        return proxy.repeated_fields.reuse(fields, headers if plain and not seen else None, status)

    def _another_usable(self, now: float) -> bool:
        """Whether an upstream not tried yet may take requests (not out, not failing)."""
        balancer = self._proxy.balancer
        tried = self._tried
        return any(
            balancer.usable(peer, now) for peer in self._proxy.group.peers if peer not in tried
        )

    def _discard_body(self) -> None:
        """Answer the client otherwise: the upstream's body is read and dropped."""
        self._discarding = True
        self._drained = 0  # bytes of its body dropped
        self._done = True
        if not self._body_done:
            # Answered before the request body ended: the rest is not sent, so the
            # connection cannot be kept (nginx closes it too).
            self._drop_upstream()

    def _retry_answer(self, status: int) -> bool:
        """The upstream answered ``status``, one of ``retry_statuses``: go on elsewhere?

        The request goes to an upstream not tried yet when it may be sent again
        (idempotent, its body held) and one can take it now (usable, not full); the
        answer is then dropped with its connection, which is closed mid-response
        (nginx closes it too). A 5xx or 429 counts as a failure of the upstream
        (nginx counts those it retries on, not a 403 or 404, which say nothing of
        the upstream's health).

        Returns:
            Whether it went on; if not, the answer is relayed as any other.
        """
        if not self._may_resend() or self._retry_limit() is not None:
            return False
        proxy = self._proxy
        if proxy.waiting:
            proxy.dispatch()  # the older waiters first, as in _attempt
        now = proxy.clock.seconds()
        if not self._another_usable(now):
            # Only upstreams left out after failures remain, which pick would still
            # try (the one back soonest): an answer in hand is worth more.
            return False
        following = proxy.balancer.pick(now, self._tried, self._balance_key)
        if following is None:
            return False  # nothing else free now: this answer is the request's
        peer = self._peer
        assert peer is not None
        self._attempt_over(status)
        if status >= 500 or status == 429:
            self._count_failure(peer, now)
        else:
            # A 403 or 404 is an answer: a probe so answered brings its upstream back
            # (requests waiting are served once its slot is given back, just below).
            self._answered()
        self._drop_upstream()  # (and its slot)
        _log.info(
            "Upstream {upstream} answered {status} to {method} {target}; retrying on {next}",
            upstream=peer.name,
            status=status,
            method=_text(self._request.method),
            target=_text(self._request.target),
            next=following.name,
        )
        self._tried.append(following)
        self._use(following)
        return True

    def _answered(self) -> bool:
        """The upstream answered: forget its failures.

        Returns:
            Whether it had failures (requests waiting may be sent to it now).
        """
        peer = self._peer
        if peer is None or not peer.fails:
            return False
        balancer = self._proxy.balancer
        if peer.fails >= balancer.max_fails:
            # The other half of the "left out" warning: the operator who read that
            # learns when the upstream takes requests again.
            _log.info("Upstream {upstream} answered; it is no longer left out", upstream=peer.name)
        balancer.succeeded(peer)
        return True

    def response_data(self, data: bytes, complete: bool) -> None:
        """Pass body bytes on; at the end, finish the client's response.

        While the client does not read, or bytes wait in the spool, they go to the
        spool (response buffering); the client's response then ends when the spool
        is empty, and the upstream's connection is free at once.
        """
        if self._discarding:
            # The body itself is dropped; past ACCEL_DRAIN_LIMIT the connection goes
            # rather than hold its slot while a large body streams (nginx keeps it
            # only for a body already read).
            if data and not self._drained and self._answered_status == 205:
                self._warn_reset_content()
            self._drained += len(data)
            if complete:
                self._conn = None
                self._release()
            elif self._drained > ACCEL_DRAIN_LIMIT or self._proxy.waiting:
                # (Or requests wait for the slot: they get it now rather than after
                # a body nobody reads.)
                self._drop_upstream()
            else:
                return
            if self._started_at is not None:
                # The upstream's part is over; the client's file or page goes on.
                self._completed_at = self._proxy.clock.seconds()
            return
        exchange = self._exchange
        spool = self._spool
        if spool is not None and (self._client_paused or spool.held or self._spool_over):
            if complete:
                self._conn = None  # (back to its pool: not to be paused by _hold)
                self._done = True
                self._ending = True
                if self._started_at is not None:
                    self._completed_at = self._proxy.clock.seconds()
            self._hold(spool, data)
            if complete:
                self._release()
            return
        if complete:
            self._conn = None
            self._done = True
            self._release()
            exchange.finish(data)
            return
        if not self._producing:
            self._producing = True
            exchange.registerProducer(self, True)
        if data:
            exchange.write(data)
        else:
            exchange.send_head()  # a head alone (SSE, long poll): the client sees it now

    def _warn_reset_content(self) -> None:
        """Say, once, that the upstream sent content with a 205 (dropped)."""
        peer = self._peer
        _log.warn(
            "Upstream {upstream} sent content with a 205 to {method} {target}, which"
            " carries none (RFC 9110 15.3.6); it was dropped",
            upstream=peer.name if peer is not None else "?",
            method=_text(self._request.method),
            target=_text(self._request.target),
        )

    def _hold(self, spool: ResponseSpool, data: bytes) -> None:
        """Spool ``data`` for the client; stop reading the upstream when it is full.

        What does not fit (one read at most) waits in memory, the upstream paused
        until the spool has room again. Once the spool could not be written (disk
        full), every read waits so, the upstream read one piece at a time as the
        client takes them.
        """
        if not data:
            return
        if self._spool_over or self._spool_broken or not spool.room_for(len(data)):
            self._spool_over += data
        else:
            try:
                spool.append(data)
            except OSError as error:
                self._spool_over += data
                self._spool_broken = True
                self._spool_failed(error)
        if self._spool_over:
            connection = self._conn
            if connection is not None:
                connection.pause_reading()

    def _spool_failed(self, error: OSError) -> None:
        request = self._request
        peer = self._peer
        _log.warn(
            "{method} {target}: cannot keep the response of {upstream} in a temporary"
            " file ({error}): the rest goes to the client as it reads",
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            upstream=peer.name if peer is not None else "the upstream",
            error=error,
        )

    def _buffers(self) -> bool:
        """Whether this response may be spooled: its X-Accel-Buffering, else the mount's."""
        fields = self._response_fields
        asked = (
            accel_buffering(fields) if fields is not None and self._proxy.reads_buffering else None
        )
        return self._proxy.buffering if asked is None else asked

    def _pump(self, spool: ResponseSpool) -> None:
        """Send what is held while the client takes it, then end the response.

        The upstream, paused when a read did not fit, is read again as soon as
        the spool has room for that read.
        """
        exchange = self._exchange
        while not self._client_paused:
            if exchange.finished:
                return
            try:
                data = spool.take()
            except OSError as error:
                _log.error(
                    "{method} {target}: cannot read the response back from its"
                    " temporary file ({error}): connection aborted",
                    method=self._request.method.decode("latin-1"),
                    target=self._request.target.decode("latin-1"),
                    error=error,
                )
                exchange.abort()
                return
            over = self._spool_over
            if not data:
                data, self._spool_over = over, b""
                if not data:
                    break  # everything held has gone
            elif over and not self._spool_broken and spool.room_for(len(over)):
                # The read that did not fit goes in after what is held, and the
                # upstream is read again while the client reads the spool.
                self._spool_over = b""
                self._hold(spool, over)
                if not self._spool_over:
                    self._read_upstream()
            exchange.write(data)
        else:
            return  # the client stopped reading again: resumeProducing calls back
        if self._ending:
            self._ending = False
            if self._abort_after_spool:
                exchange.abort()  # the upstream failed: the client has all it sent
            else:
                exchange.finish()
            return
        self._read_upstream()

    def _read_upstream(self) -> None:
        connection = self._conn
        if connection is not None:
            connection.resume_reading()

    def response_failed(self, error: UpstreamError) -> None:
        """The upstream exchange failed: retry, answer 502/504, or abort the client."""
        self._conn = None
        if self._done:
            self._release()
            return
        self._attempt_failed(error)

    def _attempt_failed(self, error: UpstreamError) -> None:
        """The attempt on ``self._peer`` failed: give its slot back unless it is tried again."""
        proxy = self._proxy
        peer = self._peer
        name = peer.name if peer is not None else "?"
        exchange = self._exchange
        if exchange.response_started:
            self._attempt_over(self._answered_status, error.kind)
            self._done = True
            self._release()
            _log.warn(
                "Upstream {upstream} failed during the response to {method} {target}:"
                " {detail}; aborting the client connection",
                upstream=name,
                method=_text(self._request.method),
                target=_text(self._request.target),
                detail=error.detail,
            )
            spool = self._spool
            if spool is not None and (spool.held or self._spool_over):
                # What the upstream did send reaches the client first; then the
                # connection is cut (the response is incomplete: _pump ends it).
                self._ending = self._abort_after_spool = True
                return
            exchange.abort()
            return
        # A reused connection closed before any response byte: most likely the
        # upstream closed it as idle just as the request went out (RFC 9112 9.3.1).
        # That is no failure of the upstream, whatever happens to the request.
        stale = error.reused and error.kind is ErrorKind.CLOSED and not error.response_started
        if stale and peer is not None and not self._stale_retried and self._may_resend():
            self._stale_retried = True
            # The same upstream again: the request keeps its slot there (max_conns).
            self._connect(peer)
            return
        self._last_failure = (name, error)
        self._attempt_over(_FAILED[error.kind][0], error.kind, answered=False)
        # A stale close under a request that may not be sent again (not idempotent,
        # RFC 9110 9.2.2, or its body not kept) ends in a 502 below, but the
        # upstream is not counted as failed.
        # Out of descriptors here says nothing of the upstream: not counted either.
        if not stale and peer is not None and error.kind is not ErrorKind.LOCAL:
            self._count_failure(peer, proxy.clock.seconds())
        # Counted before the slot is given back, so a waiter given it knows.
        self._release()
        detail = error.detail
        if self._may_retry(error):
            limit = self._retry_limit()
            if limit is None:
                self._attempt(retry=True)  # which logs this failure once it knows what follows
                return
            detail = f"{detail.rstrip('.')}; not retried: {limit}"
        self._failed(error.kind, detail, name)

    def _count_failure(self, peer: Peer[UpstreamPool], now: float) -> None:
        """Count a failure of ``peer`` (max_fails), warning if that leaves it out."""
        balancer = self._proxy.balancer
        # Warn when the upstream goes out, not at each failure while it is out:
        # requests still reach it then (the probe, the upstream back soonest when
        # all are out, requests already in flight) and fail there too.
        was_in = peer.fails < balancer.max_fails
        if balancer.failed(peer, now) and was_in:
            _log.warn(
                "Upstream {upstream} is left out for {seconds:g}s after failing",
                upstream=peer.name,
                seconds=balancer.fail_timeout,
            )

    def _retry_limit(self) -> str | None:
        """Why the request may go to no other upstream (retry_tries or _timeout), if so."""
        proxy = self._proxy
        tries = proxy.retry_tries
        if tries and len(self._tried) >= tries:
            return f"retry_tries ({tries}) reached"
        timeout = proxy.retry_timeout
        if timeout and proxy.clock.seconds() - self._arrived_at >= timeout:
            return f"retry_timeout ({timeout:g}s) passed"
        return None

    def _attempt_over(
        self, status: int, kind: ErrorKind | None = None, *, answered: bool = True
    ) -> None:
        """The current attempt ended unrelayed (for the access log and metrics).

        Args:
            status: what the access log writes for it.
            kind: what went wrong, ``None`` for an answer not relayed.
            answered: whether ``status`` is the upstream's own answer.
        """
        started = self._started_at
        if started is None:
            return
        failed = self._failed_at
        if failed is None:
            failed = self._failed_at = []
        if len(failed) < len(started):
            failed.append((self._proxy.clock.seconds(), status, kind, status if answered else 0))
        self._answered_status = 0

    def _may_resend(self) -> bool:
        """Whether the request may be sent again after it may have reached an upstream."""
        proxy = self._proxy
        return (
            proxy.retry
            and (self._request.method in IDEMPOTENT_METHODS or proxy.retry_non_idempotent)
            and (not self._attached or self._replay is not None)
        )

    def _may_retry(self, error: UpstreamError) -> bool:
        if not self._proxy.retry or error.response_started:
            return False
        if error.kind is ErrorKind.CONNECT:
            # Nothing was sent; only a body already streamed elsewhere stops it.
            return not self._attached or self._replay is not None
        if error.kind is ErrorKind.TIMEOUT:
            # The upstream may still be working on it: only when asked (nginx's
            # proxy_next_upstream timeout), for a request that may be sent again, to
            # an upstream not left out (a client would wait response_timeout again
            # on one that just timed out, where nginx answers at once).
            return (
                self._proxy.retry_on_timeout
                and self._may_resend()
                and self._another_usable(self._proxy.clock.seconds())
            )
        if error.kind is not ErrorKind.CLOSED:
            return False
        return self._may_resend()

    def _overloaded(self, detail: str, skip: str | None = None) -> None:
        """Answer 503: the upstreams are busy, not failed (nothing is counted).

        Args:
            detail: for the log.
            skip: an upstream the detail already speaks of.
        """
        proxy = self._proxy
        upstreams = ", ".join(peer.name for peer in proxy.group.peers)
        # Some upstreams may be out for another reason than being full: say which,
        # or the line would have them at max_conns too.
        unavailable = self._unavailable(proxy.clock.seconds(), skip)
        if unavailable:
            detail = f"{detail}; it could not use {unavailable}"
        self._fail_response(503, detail, upstreams, _OVERLOADED, _RETRY_AFTER)

    def _failed(self, kind: ErrorKind | None, detail: str, upstream: str) -> None:
        """Answer 502 or 504 as the failure ``kind`` calls for (``None``: no attempt)."""
        status, body = _FAILED[kind]
        if kind is ErrorKind.LOCAL:
            self._fail_response(status, detail, upstream, body, _RETRY_AFTER)
            return
        self._fail_response(status, detail, upstream, body)

    def _fail_response(
        self,
        status: int,
        detail: str,
        upstream: str,
        body: bytes,
        *fields: tuple[bytes, bytes],
    ) -> None:
        """Answer the client with ``status`` and ``body`` (or abort if a response began).

        The ``detail``, which the client is not told, goes to the log.
        """
        self._done = True
        request = self._request
        _log.warn(
            "{status} for {method} {target}: upstream {upstream}: {detail}",
            status=status,
            method=_text(request.method),
            target=_text(request.target),
            upstream=upstream,
            detail=detail,
        )
        exchange = self._exchange
        if exchange.finished:
            return
        if exchange.response_started:
            exchange.abort()
            return
        # The host's page for the status, if it has one (nginx's error_page covers the
        # 502 and 504 it makes itself; an upstream's own 5xx is relayed as it came).
        answer_error(exchange, status, body, fields)

    # -- flow control -------------------------------------------------------------------

    def pauseProducing(self) -> None:
        """The client is not reading: stop reading the upstream, for a moment.

        If the pause lasts SPOOL_GRACE, the upstream is read on into the spool
        (response buffering). A fast client's connection pauses for a moment
        again and again (its write buffer fills faster than the kernel drains
        it): its response should not go through the disk for that.
        """
        self._client_paused = True
        if self._spool is not None:
            return  # spooling already: read on
        connection = self._conn
        if connection is not None:
            connection.pause_reading()
        if self._grace is None and not (self._done or self._tunnelling) and self._buffers():
            if self._exchange.limit_rate is not None:
                # Held for its limit_rate, on purpose and again and again: the
                # upstream need not wait for that (each hold may be shorter than the
                # grace, which would then never end).
                self._start_spooling()
                return
            self._grace = self._proxy.clock.callLater(SPOOL_GRACE, self._start_spooling)

    def _start_spooling(self) -> None:
        """The client has not read for SPOOL_GRACE: read the upstream into the spool."""
        self._grace = None
        if self._client_paused and self._spool is None and not self._done:
            self._spool_over = b""
            self._spool_broken = False
            self._ending = False
            self._abort_after_spool = False
            self._spool = ResponseSpool(self._proxy.max_buffer)
            self._read_upstream()

    def _cancel_grace(self) -> None:
        grace, self._grace = self._grace, None
        if grace is not None and grace.active():
            grace.cancel()

    def resumeProducing(self) -> None:
        """The client reads again: send what is held, or read the upstream again."""
        self._client_paused = False
        self._cancel_grace()
        spool = self._spool
        if spool is not None:
            self._pump(spool)
            return
        self._read_upstream()

    def stopProducing(self) -> None:
        """The client connection is going; ``on_close`` drops the upstream."""

    def sending_paused(self) -> None:
        """The upstream is not reading: stop reading the client."""
        self._upstream_paused = True
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.pause_reading()
        elif not self._done:
            self._exchange.pause_body()

    def sending_resumed(self) -> None:
        """The upstream reads again."""
        self._upstream_paused = False
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.resume_reading()
        elif not self._done:
            self._exchange.resume_body()

    # -- the end of the exchange ----------------------------------------------------------

    def _exchange_closed(self, reason: Failure | None) -> None:
        """The exchange ended; if our response had not, the client is gone.

        The upstreams tried are left for the access log first.
        """
        if self._grace is not None:
            self._cancel_grace()
        if self._spool is not None:
            self._spool.close()
            self._spool_over = b""
        if self._started_at is not None:
            # Not this object itself: the exchange would refer back to it, a cycle
            # only the garbage collector frees (measured: 2 us more per request).
            self._exchange.log_notes = _AttemptNotes(
                self._tried,
                self._started_at,
                self._failed_at,
                self._answered_status,
                self._proxy.clock,
                completed=self._completed_at,
            )
        if self._done or self._tunnelling:
            return
        self._done = True
        self._drop_upstream()

    def _drop_upstream(self) -> None:
        waiting = self._proxy.waiting
        if self in waiting:
            timer = waiting.pop(self)
            if timer is not None and timer.active():
                timer.cancel()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        connection, self._conn = self._conn, None
        if connection is not None:
            connection.abort()
        self._release()

    def _release(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            if peer.active > 0:  # (Balancer.release, in place: see _use)
                peer.active -= 1
            proxy = self._proxy
            if proxy.waiting:
                # The slot goes to the oldest waiter that can use it, once the read
                # that ended this response is handled: what followed the response in
                # it (over TLS, in the next records) has then been seen, and the
                # connection given back can be taken, its socket asked first.
                proxy.dispatch_soon()

    # -- protocol switch (WebSocket) --------------------------------------------------

    def response_upgraded(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], tail: bytes
    ) -> None:
        """The upstream accepted the upgrade: switch the client too and tunnel."""
        exchange = self._exchange
        connection = self._conn
        if (
            self._done
            or connection is None
            or not exchange.upgradable
            or not upgrade_accepted(self._upgrade_protocols, headers)
        ):
            # RFC 9110 7.8: only to a protocol the client asked for (and we passed on).
            peer = self._peer
            self._drop_upstream()
            if not self._done:
                self._attempt_over(
                    _FAILED[ErrorKind.PROTOCOL][0], ErrorKind.PROTOCOL, answered=False
                )
                upstream = peer.name if peer is not None else "?"
                self._failed(ErrorKind.PROTOCOL, "switched protocols unexpectedly", upstream)
            return
        protocols = b", ".join(value for name, value in headers if name.lower() == b"upgrade")
        proxy = self._proxy
        fields = _without_accel(proxy, response_fields(headers, hidden=proxy.hidden))
        if proxy.cookies is not None:
            proxy.cookies.fields(fields, self._request, exchange.remote_user, proxy.trusted)
        fields.append((b"Upgrade", protocols))
        fields.append((b"Connection", b"upgrade"))
        peer = self._peer
        # (Only an upstream with failures has them forgotten: most answer without.)
        recovered = peer is not None and peer.fails > 0 and self._answered()
        self._answered_status = status
        self._tunnelling = True
        tunnel = exchange.upgrade(fields, self)
        self._tunnel = tunnel
        tunnel.registerProducer(self, True)
        if self._upstream_paused:
            tunnel.pause_reading()  # the upstream stopped reading before the switch
        if tail:
            tunnel.write(tail)
        if recovered and self._proxy.waiting:
            self._proxy.dispatch()  # the probe succeeded: the peer takes requests again

    def data_received(self, data: bytes) -> None:
        """Bytes from the client through the tunnel."""
        connection = self._conn
        if connection is not None:
            connection.tunnel_write(data)

    def connection_lost(self, reason: Failure) -> None:
        """The client's side of the tunnel ended: close the upstream's."""
        self._done = True
        self._tunnel = None
        connection, self._conn = self._conn, None
        if connection is not None:
            if self._upstream_paused:
                connection.abort()  # it is not reading: what is buffered would wait forever
            else:
                connection.close()
        self._release()

    def tunnel_data(self, data: bytes) -> None:
        """Bytes from the upstream through the tunnel."""
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.write(data)

    def tunnel_closed(self, reason: Failure) -> None:
        """The upstream's side of the tunnel ended: close the client's."""
        self._done = True
        self._conn = None
        self._release()
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.close()


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def build_proxy(
    mount: MountConfig,
    config: ServerConfig,
    *,
    reactor: Any,
    endpoint_factory: EndpointFactory | None = None,
) -> ProxyHandler:
    """Build the handler of a proxy mount from its configuration.

    Args:
        mount: the mount (``target`` is a tuple of :class:`~twistwsgi.config.Upstream`).
        config: the whole configuration (for ``trusted_proxies``).
        reactor: provides time and client connections; health checks start on it.
        endpoint_factory: how upstream addresses become endpoints (tests pass
            in-memory ones); by default real TCP, UNIX and TLS endpoints.

    Raises:
        ConfigError: naming the mount when an upstream or its CA file is unusable.
    """
    options = mount.options
    settings = ClientSettings(
        response_timeout=options["response_timeout"],
        idle_timeout=options["idle_timeout"],
        keepalive_timeout=options["keepalive_timeout"],
    )
    if options["health_check"] is not None and options["health_interval"] <= 0:
        raise ConfigError(f"{mount.where}.health_interval", "must be more than 0")
    check_proxy_options(options, mount.target, mount.where)
    trust_root = None
    if options.get("tls_ca"):
        try:
            trust_root = load_trust_root(options["tls_ca"])
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{mount.where}.tls_ca", f"cannot load {options['tls_ca']!r}: {error}"
            ) from None
    identity = None
    if options.get("upstream_certificate") and not any(
        upstream.url.lower().startswith("https://") for upstream in mount.target
    ):
        # A certificate that would never be shown: a mistake (an http:// URL meant
        # to be https://), not a setting.
        raise ConfigError(
            f"{mount.where}.upstream_certificate",
            "no upstream of this mount is https://, so it would never be shown",
        )
    if options.get("upstream_certificate"):
        try:
            identity = load_client_identity(
                options["upstream_certificate"], options.get("upstream_key")
            )
        except (OSError, IdentityError) as error:
            key = isinstance(error, IdentityError) and error.key
            name = "upstream_key" if key else "upstream_certificate"
            raise ConfigError(f"{mount.where}.{name}", f"{options[name]!r}: {error}") from None
    elif options.get("upstream_key"):
        raise ConfigError(
            f"{mount.where}.upstream_key", "needs upstream_certificate, the certificate it signs"
        )
    pools: list[tuple[UpstreamPool, int, bool, bool]] = []
    addresses: list[UpstreamAddress] = []
    template = _target_template(mount)
    for upstream in mount.target:
        try:
            # (With a template, where it connects alone: the path is the template's.)
            url = upstream.url if template is None else split_upstream_url(upstream.url)[0]
            address = parse_upstream(url)
        except ValueError as error:
            raise ConfigError(mount.where, str(error)) from None
        addresses.append(address)
        if endpoint_factory is not None:
            endpoint = endpoint_factory(address)
        else:
            endpoint = client_endpoint(
                reactor,
                address,
                connect_timeout=options["connect_timeout"],
                tls_verify=options["tls_verify"],
                trust_root=trust_root,
                identity=identity,
            )
        pool = UpstreamPool(
            address,
            endpoint,
            settings=settings,
            clock=reactor,
            keepalive=options["keepalive"],
            connect_timeout=options["connect_timeout"],
        )
        pools.append((pool, upstream.weight, upstream.backup, upstream.down))
    policy, balance_key = parse_balance(options["balance"])
    group = UpstreamGroup(
        pools,
        clock=reactor,
        balance=policy,
        max_fails=options["max_fails"],
        fail_timeout=options["fail_timeout"],
        health_check=options["health_check"],
        health_interval=options["health_interval"],
        max_conns=options["max_conns"],
    )
    if all(upstream.down for upstream in mount.target):
        _log.warn(
            "Every upstream of {mount} is marked down: its requests get 502",
            mount=mount.where,
        )
    handler = ProxyHandler(
        group,
        clock=reactor,
        trusted=TrustedProxies(config.trusted_proxies),
        preserve_host=options["preserve_host"],
        retry=options["retry"],
        retry_statuses=options["retry_statuses"],
        retry_on_timeout=options["retry_on_timeout"],
        retry_non_idempotent=options["retry_non_idempotent"],
        ignored=[name.lower() for name in options["proxy_ignore_headers"]],
        retry_tries=options["retry_tries"],
        retry_timeout=options["retry_timeout"],
        intercept_errors=options["proxy_intercept_errors"],
        name=mount.location,
        queue=options["queue"],
        queue_timeout=options["queue_timeout"],
        log_upstreams=any(
            uses_upstream_variables(template)
            for template in (
                config.access_log_format,
                *(host.access_log_format for host in config.hosts),
                *(m.options.get("access_log_format") for h in config.hosts for m in h.mounts),
            )
        ),
        buffering=mount_or_server(mount, config, "response_buffering"),
        max_buffer=mount_or_server(mount, config, "max_response_buffer"),
        set_fields=options["proxy_set_header"],
        # (The path an exact mount puts in SCRIPT_NAME; a pattern's upstreams have
        # no path, so their URLs come back whole.)
        # A target template's path is no path of the client's that default could map
        # it back to: it rewrites nothing there (nginx's, with variables in proxy_pass).
        redirects=None
        if template is not None and options["proxy_redirect"] == "default"
        else redirect_rewrite(
            options["proxy_redirect"], mount.prefix.decode("utf-8") or "/", addresses
        ),
        balance_key=balance_key,
        hidden=_hidden_fields(options["proxy_hide_header"], options["proxy_pass_header"]),
        cookies=_cookie_rewrite(options),
    )
    handler.target_template = template
    return handler


def _target_template(mount: MountConfig) -> CaptureTemplate | None:
    """The request-target a regular-expression mount's upstream URLs give, if they do.

    Their path and query, when they use the pattern's captures or variables (the
    configuration checked they are one for all upstreams).

    Raises:
        ConfigError: naming the mount, for a template the configuration did not check.
    """
    if not mount.is_pattern:
        return None
    rest = split_upstream_url(mount.target[0].url)[1]
    if not rest:
        return None
    try:
        groups = Groups.of(compile_location_pattern(mount.path, caseless=mount.match == "~*"))
        return CaptureTemplate(rest, groups, url=True, target=True)
    except ValueError as error:
        raise ConfigError(f"{mount.where}.proxy", str(error)) from None


def _without_accel(
    proxy: ProxyHandler, fields: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """``fields`` without an X-Accel-Redirect the mount would act on.

    In a 1xx or a 101 there is no file to serve, and the internal path it names is
    not the client's to see.
    """
    if proxy.accel is None or _accel_redirect(fields) is None:
        return fields
    return [field for field in fields if field[0].lower() != b"x-accel-redirect"]


def _accel_redirect(fields: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
    """The response's ``X-Accel-Redirect`` (nginx's; not X-Sendfile), if it has one."""
    for name, value in fields:
        if len(name) == 16 and name.lower() == b"x-accel-redirect":
            return b"x-accel-redirect", value.strip()
    return None


def _cookie_rewrite(options: Mapping[str, Any]) -> CookieRewrite | None:
    """What the mount's proxy_cookie_* settings rewrite, or ``None`` when none is set."""
    paths = options["proxy_cookie_path"]
    domains = options["proxy_cookie_domain"]
    flags = options["proxy_cookie_flags"]
    if not (paths or domains or flags):
        return None
    return CookieRewrite(paths, domains, flags)


def _hidden_fields(hide: Sequence[str], passed: Sequence[str]) -> HiddenFields:
    """The defaults (nginx's) and ``proxy_hide_header``, but ``proxy_pass_header``'s names."""
    names = {*DEFAULT_HIDDEN, *(name.lower().encode("ascii") for name in hide)}
    return HiddenFields(names - {name.lower().encode("ascii") for name in passed})


def proxy_builder(reactor: Any) -> Callable[[MountConfig, ServerConfig], ProxyHandler]:
    """The :data:`~twistwsgi.site.MountBuilder` of proxy mounts, on ``reactor``."""

    def build(mount: MountConfig, config: ServerConfig) -> ProxyHandler:
        return build_proxy(mount, config, reactor=reactor)

    return build
