"""A mount's access rules and limits by client address (nginx's allow, limit_req, limit_conn).

A mount with ``deny`` refuses the clients in those networks; one with ``allow``
refuses every client outside them (nginx's ``allow ...; deny all;``). A client in both
is refused: ``deny`` is looked at first. A refused request gets ``403 Forbidden``
before its handler sees it, whichever way it reached the mount (routed there, or
passed on by a static mount's fall-through).

A mount with ``rate_limit`` answers ``429 Too Many Requests`` (RFC 6585 §4, with
``Retry-After``) to a client going faster than it allows (see :class:`RateLimit`),
after the access rules; with ``rate_delay``, the requests of its burst past that many
are held back until the rate allows them (nginx's ``limit_req`` without
``nodelay``). One with ``conn_limit`` answers ``429`` too to a client that already
has that many requests in progress there (see :class:`ConnectionLimit`), after the
rate limit: a request the rate limit refused takes no place.

The 403 and 429 answers go out through :func:`~twistwsgi.routing.answer_error`, so a
host's error page replaces their plain-text bodies (``Retry-After`` stays).

The client is the connection's peer. From a proxy in ``trusted_proxies``, it is the
address that proxy reports (see :func:`client_address`), as nginx's
``set_real_ip_from`` with ``real_ip_recursive on`` has it.

Logic on the exchange's request: no Twisted but its logger (the clock that holds a
request back is passed in).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

from twistwsgi.forwarding import Networks, TrustedProxies
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import answer_error
from twistwsgi.shared_limits import ENTERED, REFUSED, SharedLimits, leak

if TYPE_CHECKING:
    from twistwsgi.basic_auth import BasicAuth
    from twistwsgi.http.exchange import Exchange, Handler

__all__ = [
    "AccessRules",
    "ConnectionLimit",
    "GuardedHandler",
    "RateLimit",
    "SharedConnectionLimit",
    "SharedRateLimit",
    "client_address",
    "hand_on",
    "held_for",
]

_log = Logger()

_FORBIDDEN = b"Forbidden\n"
_TOO_MANY = b"Too Many Requests\n"


class AccessRules:
    """Which clients a mount refuses.

    Args:
        allow: networks (CIDR, ``unix:``) whose clients may use the mount; empty:
            every client not denied.
        deny: networks whose clients may not.
        trusted_proxies: proxies whose report of the client's address is believed.
    """

    def __init__(
        self, allow: Sequence[str], deny: Sequence[str], trusted_proxies: TrustedProxies
    ) -> None:
        self._allow = Networks(allow) if allow else None
        self._deny = Networks(deny) if deny else None
        self._trusted = trusted_proxies

    def refuses(self, request: RequestHead) -> bool:
        """Whether the client of ``request`` may not use the mount.

        An unknown client (a trusted proxy reported no address) is refused by
        either rule: it cannot be told apart from one that ``deny`` lists.
        """
        address = client_address(request, self._trusted)
        if address == _UNKNOWN:
            return True
        if self._deny is not None and self._deny.has(address):
            return True
        return self._allow is not None and not self._allow.has(address)


def held_for(excess: float, rate: float, delay: int | None) -> float:
    """Seconds to hold back a request let through ``excess`` requests ahead of ``rate``.

    nginx's ``limit_req ... delay=N``: the first ``delay`` requests of a burst go at
    once, each one past them waits until the rate reaches it; ``None`` is nginx's
    ``nodelay`` (none waits). (With nginx's thousandth of a request of slack.)
    """
    if delay is None or excess <= delay + 0.001:
        return 0.0
    return (excess - delay) / rate


class RateLimit:
    """How many requests a client may make to a mount: nginx's ``limit_req``.

    Each client (by the address :func:`client_address` gives) has a leaky bucket:
    a request adds one, the bucket drains at ``rate`` a second, and a request that
    would fill it past ``burst`` is refused (and not counted). So a client may send
    ``burst`` requests at once beyond the steady rate, which a page and its assets
    need; with ``burst`` 0, requests must come at least ``1 / rate`` seconds apart.
    With ``delay`` ``None`` (nginx's ``nodelay``) the requests let through are
    answered at once; with ``delay`` N, those past the first N of a burst are held
    back until the rate allows them (see :func:`held_for`).

    Args:
        rate: requests per second.
        burst: requests a client may be ahead of the rate.
        trusted_proxies: proxies whose report of the client's address is believed.
        now: the clock, in seconds.
        delay: requests of a burst let through at once (``None``: all of them).
    """

    #: Clients remembered at most; past this, the quarter least recently let
    #: through is forgotten at once (a flood of addresses cannot grow memory, and
    #: the cost stays constant per request on average).
    MAX_CLIENTS = 65536

    def __init__(
        self,
        rate: float,
        burst: int,
        trusted_proxies: TrustedProxies,
        now: Callable[[], float],
        delay: int | None = None,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.delay = delay
        self._trusted = trusted_proxies
        self._now = now
        # client -> (requests in the bucket, when that was counted)
        self._buckets: dict[str | None, tuple[float, float]] = {}

    def carried_over(
        self, rate: float, burst: int, trusted_proxies: TrustedProxies, delay: int | None = None
    ) -> RateLimit:
        """A limit with these settings that goes on with this one's buckets (a reload)."""
        carried = RateLimit(rate, burst, trusted_proxies, self._now, delay)
        carried._buckets = self._buckets
        return carried

    def retry_after(self, request: RequestHead) -> int | None:
        """Count ``request``; ``None`` if it may go on, else seconds to wait (>= 1)."""
        return self.count(request)[0]

    def count(self, request: RequestHead) -> tuple[int | None, float]:
        """Count ``request``, as :meth:`retry_after`; with the client's lead.

        The lead is the requests the client is then ahead of the rate (nginx's
        excess), for :func:`held_for`.
        """
        client = client_address(request, self._trusted)
        now = self._now()
        buckets = self._buckets
        known = buckets.pop(client, None)
        if known is None:
            if len(buckets) >= self.MAX_CLIENTS:
                for forgotten in list(buckets)[: self.MAX_CLIENTS // 4]:
                    del buckets[forgotten]
            buckets[client] = (0.0, now)
            return None, 0.0
        level, then, retry = leak(known[0], known[1], now, self.rate, self.burst)
        # (Put back last in the dict, refused or not: recently seen.)
        buckets[client] = (level, then)
        return retry, level


class SharedRateLimit:
    """:class:`RateLimit` counted in the tables all worker processes share.

    The same buckets, kept in :class:`~twistwsgi.shared_limits.SharedLimits` under
    ``scope`` (the mount's name in the configuration), so a client going to every
    worker is still held to the rate (nginx's ``limit_req_zone``).

    Args:
        rate: requests per second.
        burst: requests a client may be ahead of the rate.
        trusted_proxies: proxies whose report of the client's address is believed.
        now: the clock, in seconds (the same clock in every process: the wall clock).
        tables: the shared tables.
        scope: what tells this mount's buckets from another's.
        delay: requests of a burst let through at once (``None``: all of them).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        trusted_proxies: TrustedProxies,
        now: Callable[[], float],
        *,
        tables: SharedLimits,
        scope: str,
        delay: int | None = None,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.delay = delay
        self._trusted = trusted_proxies
        self._now = now
        self._tables = tables
        self._scope = scope

    def retry_after(self, request: RequestHead) -> int | None:
        """Count ``request``; ``None`` if it may go on, else seconds to wait (>= 1)."""
        return self.count(request)[0]

    def count(self, request: RequestHead) -> tuple[int | None, float]:
        """Count ``request``, as :meth:`RateLimit.count`."""
        client = client_address(request, self._trusted)
        key = self._tables.key(self._scope, client)
        return self._tables.counted(key, self._now(), self.rate, self.burst)


class ConnectionLimit:
    """How many requests a client may have in progress on a mount: nginx's ``limit_conn``.

    nginx counts a connection while one of its requests is being processed, from
    when its head has been read until the request is freed; a request beyond the
    limit is answered at once. Here as there, what is counted is requests in
    progress, each from when the mount takes it until its exchange ends, however
    it ends (the response sent, aborted, the client gone, the handler failing); a
    request that switched protocols (a WebSocket) stays in progress until its
    tunnel closes, as nginx keeps such a request until the tunnel ends.

    Clients are told apart as :class:`RateLimit` tells them (by the address
    :func:`client_address` gives): every UNIX-socket client is one client, and so is
    every client a trusted proxy reports without an address. Only clients with a
    request in progress are remembered, so memory is bounded by the requests in
    progress (at most one per connection over HTTP/1.1, whose pipelined requests
    are answered one at a time).

    Args:
        limit: requests a client may have in progress at once (1 or more).
        trusted_proxies: proxies whose report of the client's address is believed.
    """

    def __init__(self, limit: int, trusted_proxies: TrustedProxies) -> None:
        self.limit = limit
        self._trusted = trusted_proxies
        # client -> requests in progress (never 0: a client at 0 is forgotten)
        self._counts: dict[str | None, int] = {}

    def carried_over(self, limit: int, trusted_proxies: TrustedProxies) -> ConnectionLimit:
        """A limit with these settings that goes on with this one's counts (a reload).

        The requests in progress count against it, and give their places back to
        the same counts when they end.
        """
        carried = ConnectionLimit(limit, trusted_proxies)
        carried._counts = self._counts
        return carried

    def admit(self, request: RequestHead) -> Place | None:
        """Count ``request`` in; its :class:`Place`, or ``None`` if the client is at the limit.

        A refused request is not counted.
        """
        client = client_address(request, self._trusted)
        counts = self._counts
        count = counts.get(client, 0)
        if count >= self.limit:
            return None
        counts[client] = count + 1
        return Place(self, client)

    def leave(self, client: str | None) -> None:
        """One request of ``client`` is over (called by its :class:`Place`)."""
        counts = self._counts
        count = counts.get(client, 0)
        if count <= 1:
            counts.pop(client, None)
        else:
            counts[client] = count - 1


class SharedConnectionLimit:
    """:class:`ConnectionLimit` counted in the tables all worker processes share.

    A client's requests in progress are counted over every worker (nginx's
    ``limit_conn_zone``), each in the seat of the process that runs it, which the
    supervisor clears when that process ends. A process without a seat yet (more
    processes alive than seats) counts its own until it is given one; the places it
    gave meanwhile go back to its own count. In the rare case that the client's
    group of the table is full, the request is let through uncounted (logged once
    per mount and process).

    Args:
        limit: requests a client may have in progress at once (1 or more).
        trusted_proxies: proxies whose report of the client's address is believed.
        tables: the shared tables, with this process's seat.
        scope: what tells this mount's counts from another's.
        on_full: told (once) when a request was let through uncounted.
    """

    def __init__(
        self,
        limit: int,
        trusted_proxies: TrustedProxies,
        tables: SharedLimits,
        scope: str,
        on_full: Callable[[], object] = lambda: None,
    ) -> None:
        self.limit = limit
        self._trusted = trusted_proxies
        self._tables = tables
        self._scope = scope
        self._on_full: Callable[[], object] | None = on_full
        self._alone = ConnectionLimit(limit, trusted_proxies)

    def admit(self, request: RequestHead) -> Place | None:
        """Count ``request`` in; its :class:`Place`, or ``None`` if the client is at the limit."""
        tables = self._tables
        if tables.seat is None:
            return self._alone.admit(request)
        client = client_address(request, self._trusted)
        key = tables.key(self._scope, client)
        entered = tables.enter(key, self.limit)
        if entered == ENTERED:
            return Place(self, key)
        if entered == REFUSED:
            return None
        if self._on_full is not None:
            on_full, self._on_full = self._on_full, None
            on_full()
        return Place(None, key)

    def leave(self, key: int) -> None:
        """One request counted under ``key`` is over (called by its :class:`Place`)."""
        self._tables.leave(key)


class _Counting(Protocol):
    def leave(self, client: Any, /) -> None: ...


class Place:
    """A request's place in a :class:`ConnectionLimit`, given back once.

    Its :meth:`release` is an exchange's close listener; a second call does nothing,
    so an ending reported twice cannot free another request's place.
    """

    __slots__ = ("_client", "_limit")

    def __init__(self, limit: _Counting | None, client: object) -> None:
        self._limit = limit
        self._client = client

    def release(self, _reason: object = None) -> None:
        """Give the place back (the exchange's ending, ``_reason``, does not matter)."""
        limit, self._limit = self._limit, None
        if limit is not None:
            limit.leave(self._client)


class _Delayed(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What holds a request back (Twisted's ``IReactorTime.callLater``)."""

    def callLater(  # noqa: N802 - Twisted's name
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> _Delayed: ...


class Gate(Protocol):
    """Something that lets a request through or answers it (an authentication service)."""

    def check(self, exchange: Exchange, admit: Callable[[Exchange], None]) -> None:
        """Call ``admit`` with ``exchange`` if it may go on (perhaps later), else answer it."""


class GuardedHandler:
    """A mount's handler behind its access rules, its limits and its authentication.

    Looked at in this order: the access rules (403), the rate limit (429, or held
    back with ``rate_delay``), Basic authentication (401), the authentication
    service (``auth_request``), the limit of requests in progress (429). A request
    refused by one is not counted by the ones after it. The rate limit comes before
    the password check, as nginx's limit_req (preaccess phase) comes before its
    auth_basic (access phase): it slows down a client guessing passwords too. With
    ``either`` (nginx's ``satisfy any``), a client the rules let in needs no
    password, and one they refuse is asked for a password instead of refused.

    Args:
        handler: what answers the requests let through.
        rules: the access rules, if any.
        limit: the rate limit, if any.
        connections: the limit of requests in progress per client, if any.
        auth: the mount's Basic authentication, if any.
        either: whether passing the rules or the authentication is enough (with
            both).
        gate: the mount's authentication service (``auth_request``), if any.
        clock: what holds back the requests a rate limit with a ``delay`` delays
            (needed with one).
    """

    def __init__(
        self,
        handler: Handler,
        rules: AccessRules | None,
        limit: RateLimit | SharedRateLimit | None = None,
        connections: ConnectionLimit | SharedConnectionLimit | None = None,
        auth: BasicAuth | None = None,
        *,
        either: bool = False,
        gate: Gate | None = None,
        clock: Scheduler | None = None,
    ) -> None:
        if limit is not None and limit.delay is not None and clock is None:
            raise ValueError("a rate limit that delays requests needs a clock")
        self.clock = clock
        self.handler = handler
        self.gate = gate
        self.rules = rules
        self.limit = limit
        self.connections = connections
        self.auth = auth
        self.either = either and rules is not None and auth is not None
        #: The address rules that let a client in without the password (satisfy
        #: any): the mount's own, or its partner's for a static mount that shares
        #: the partner's password (see site.SiteBuilder._share_password).
        self.password_waived_by: AccessRules | None = rules if self.either else None

    def handle(self, exchange: Exchange) -> None:
        """Answer 403, 429 or 401 to a client refused; hand anyone else on."""
        request = exchange.request
        refused = self.rules is not None and self.rules.refuses(request)
        if refused and not self.either:
            answer_error(exchange, 403, _FORBIDDEN)
            return
        limit = self.limit
        if limit is not None:
            wait, excess = limit.count(request)
            if wait is not None:
                # RFC 6585 4: 429 Too Many Requests, with when to try again.
                answer_error(exchange, 429, _TOO_MANY, [(b"Retry-After", b"%d" % wait)])
                return
            hold = held_for(excess, limit.rate, limit.delay)
            if hold:
                self._hold(exchange, hold, refused=refused)
                return
        self._after_limits(exchange, refused=refused)

    def _hold(self, exchange: Exchange, seconds: float, *, refused: bool) -> None:
        """Go on with ``exchange`` in ``seconds`` (rate_delay), unless it ends first."""
        assert self.clock is not None  # (see __init__)
        timer = self.clock.callLater(seconds, self._go_on, exchange, refused)

        def ended(_reason: object) -> None:
            if timer.active():
                timer.cancel()  # the client left while held: nothing more to do

        exchange.on_close(ended)

    def _go_on(self, exchange: Exchange, refused: bool) -> None:
        hand_on(exchange, lambda: self._after_limits(exchange, refused=refused), "rate_delay")

    def _after_limits(self, exchange: Exchange, *, refused: bool) -> None:
        """The request is within the rate: on to the password, the service, the handler."""
        request = exchange.request
        if self.auth is not None:
            waiver = self.password_waived_by
            if waiver is None or refused or waiver.refuses(request):
                # (satisfy any: a client the rules refuse may still come in with a
                # password; the 401 asks for one, as nginx's does.)
                self.auth.check(exchange, self._admit)  # on to _admit if let through
                return
        self._admit(exchange)

    def _admit(self, exchange: Exchange) -> None:
        """Ask the authentication service, if there is one, then count the request in."""
        if self.gate is not None:
            self.gate.check(exchange, self._count_in)  # on to _count_in if let through
            return
        self._count_in(exchange)

    def _count_in(self, exchange: Exchange) -> None:
        """Count the request in (``conn_limit``) and hand it to the handler."""
        if self.connections is not None:
            place = self.connections.admit(exchange.request)
            if place is None:
                # RFC 6585 4 (nginx's limit_conn answers 503 by default; 429 says
                # the client itself asks too much, as rate_limit's does). No
                # Retry-After (RFC 6585 4 makes it optional): a place frees when one
                # of the client's own requests ends, which no one can tell ahead.
                answer_error(exchange, 429, _TOO_MANY)
                return
            exchange.on_close(place.release)
            if exchange.finished:
                # Ended before it got here: no close listener would be told.
                place.release()
        self.handler.handle(exchange)


def hand_on(exchange: Exchange, step: Callable[[], object], where: str) -> None:
    """Run ``step`` of ``exchange``'s handling as the protocol runs a handler.

    For a step outside the protocol's dispatch (a timer's call, another
    connection's read), which would not catch what it raises: an exception is
    logged, and answered ``500`` (the response aborted if it had begun), so the
    client is answered and the exchange ends (its places given back).
    """
    try:
        step()
    except Exception:
        _log.failure(
            "{where}: the handler of {method} {target} failed",
            where=where,
            method=exchange.request.method.decode("latin-1"),
            target=exchange.request.target.decode("latin-1"),
        )
        if exchange.finished:
            return
        if exchange.response_started:
            exchange.abort()
        else:
            answer_error(exchange, 500, b"Internal Server Error\n")


def client_address(request: RequestHead, trusted_proxies: TrustedProxies) -> str | None:
    """The client's IP address (``None`` on a UNIX socket), as the rules match it.

    From a trusted proxy, the address it reports: the ``X-Forwarded-For`` entries
    (every line, in order), else the ``Forwarded`` elements' ``for=``, read from the
    right past the trusted proxies among them (nginx's ``real_ip_recursive on``), so
    a balancer in front of an ingress, both trusted, gives the client. An entry that
    is no address (a port or brackets are taken off first) makes the client unknown
    (``"unknown"``, refused by any rule); a trusted proxy that reports no one is
    matched by its own address.

    Remembered on the request for the same set of proxies: the rules, the limits,
    the access log's and a proxy's ``$client_addr`` all ask (each reading of a
    report parses its addresses, a few microseconds).
    """
    peer = request.peer
    address = peer[0] if peer is not None else None
    if not (trusted_proxies and trusted_proxies.has(address)):
        return address
    remembered = request.resolved_client
    if remembered is not None and remembered[0] == trusted_proxies.key:
        return remembered[1]
    client = _reported_client(request, trusted_proxies, address)
    request.resolved_client = (trusted_proxies.key, client)
    return client


def _reported_client(
    request: RequestHead, trusted_proxies: TrustedProxies, address: str | None
) -> str | None:
    """The client a trusted proxy at ``address`` reports (see client_address)."""
    forwarded_for = request.joined(b"x-forwarded-for")
    forwarded = request.joined(b"forwarded")
    nodes: list[bytes | None]
    # Empty list members are skipped (RFC 9110 5.6.1: "a, , b" is a list of two).
    if forwarded_for is not None:
        nodes = [entry.strip() for entry in forwarded_for.split(b",") if entry.strip()]
    elif forwarded is not None:
        elements = forwarded.split(b",")
        nodes = [_forwarded_for(element) for element in elements if element.strip()]
    else:
        return address
    if not nodes:
        return address
    reported: str | None = address
    for node in reversed(nodes):
        reported = _node_address(node)
        if reported == _UNKNOWN or not trusted_proxies.has(reported):
            return reported
    return reported  # every hop a trusted proxy: the first of them


#: The client address of a report that names none: no network holds it.
_UNKNOWN = "unknown"


def _node_address(node: bytes | None) -> str:
    """The IP address of a forwarding entry (RFC 3986 host with an optional port)."""
    if not node:
        return _UNKNOWN
    text = node.decode("latin-1").strip()
    if text.startswith("["):  # "[2001:db8::1]" or "[2001:db8::1]:4711"
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:  # "192.0.2.60:4711"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return _UNKNOWN  # "unknown", an obfuscated name (RFC 7239 6.3), or garbage
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # An IPv4 client of a dual-stack balancer: written as a socket shows it
        # (::ffff:203.0.113.9), not in hex as Python before 3.13 writes it.
        return "::ffff:" + str(address.ipv4_mapped)
    return str(address)


def _forwarded_for(element: bytes) -> bytes | None:
    """The node of a ``Forwarded`` element's ``for=`` (RFC 7239 4, 6), unquoted."""
    for pair in element.split(b";"):
        name, _, value = pair.partition(b"=")
        if name.strip().lower() == b"for":
            return value.strip().strip(b'"')
    return None
