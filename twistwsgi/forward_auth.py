"""Authentication by another service: nginx's ``auth_request``, Traefik's and Caddy's forward auth.

A mount with ``auth_request = "http://127.0.0.1:4180/oauth2/auth"`` asks that
service about each request before answering it: oauth2-proxy, Authelia, Authentik,
Pomerium and the like decide from the client's cookies or ``Authorization`` whether
it is signed in, and who it is.

- **The question** is a ``GET`` of the configured URL's path, sent over the same
  pooled upstream connections as a proxy mount's, with the client's header fields
  (its cookies and ``Authorization`` first of all; not its body, nor
  ``Content-Length``, ``Connection`` or another hop-by-hop field, whose options would
  have the proxy drop the gate's own fields), forwarding fields naming the client
  as the mount's rules resolve it (one address, through ``trusted_proxies``), the
  scheme the application is told and the host routed on, and what was asked, the
  path as routed (what is served, not the raw ``/public/%2e%2e/admin``):
  ``X-Original-URI``, ``X-Original-URL`` and ``X-Original-Method`` as nginx users
  set them (Authelia's and Authentik's nginx endpoints read the URL),
  ``X-Forwarded-Uri`` and ``X-Forwarded-Method`` as Traefik sends them. Any
  ``X-Original-*`` field of the client's, and its ``X-Forwarded-Uri`` and
  ``-Method``, are dropped in every spelling: a client cannot say what it asked for.
- **A 2xx** lets the request through. The fields named in ``auth_response_headers``
  (``X-Auth-Request-User``, ``Remote-User``...) are then copied from the answer into
  the request the mount's application or upstream sees, in place of any the client
  sent under those names (``_`` spellings too, and taken out of its ``Connection``):
  an application can believe them. With ``auth_response_cookies``, the answer's
  ``Set-Cookie`` lines go to the client with the response, whatever answers it (a
  session the service renewed).
- **A 401, a 403 or a redirect** (301, 302, 303, 307, 308) is the client's answer,
  status, fields and body as the service sent them: its redirect to a sign-in page,
  its ``WWW-Authenticate``, its cookies (nginx answers 401 and 403 itself; Traefik
  and Caddy relay every answer that is not a 2xx).
- **Anything else** (another status, an answer cut short or over 64 KiB, the service
  refused, reset or silent: the proxy's 502, 503 or 504) is a ``500`` for the client
  and an error in the log, as nginx answers: a broken gate stays closed.

The request's own body is not read meanwhile: it waits in the connection, as behind
a password (``auth_basic``). The question has a proxy's timeouts: 10 seconds to
connect, 10 for the answer to begin and 10 between its pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from twisted.logger import Logger
from twisted.python.failure import Failure

from twistwsgi.access import client_address, hand_on
from twistwsgi.forwarding import TrustedProxies, encode_path, forwarded_scheme
from twistwsgi.http.request import RequestHead, Route
from twistwsgi.http.rules import HOP_BY_HOP
from twistwsgi.routing import answer_error, remove_dot_segments

if TYPE_CHECKING:
    from twisted.internet.interfaces import IPushProducer

    from twistwsgi.http.exchange import Exchange, Handler

__all__ = ["ForwardAuth", "auth_base_url"]

_log = Logger()

#: The client's fields not sent with the question: its body's framing, the hop-by-hop
#: fields (a client's Connection naming the gate's own fields would have the proxy
#: drop them), and those that say what the client asked, which the gate alone
#: writes (every X-Original-* besides: X-Original-URL is Authelia's and Authentik's).
_NOT_ASKED = frozenset(
    {b"content-length", b"expect", b"x-forwarded-uri", b"x-forwarded-method", *HOP_BY_HOP}
)

#: The most bytes of the service's answer kept for the client (a sign-in redirect's
#: body is small; a larger one is an error).
MAX_ANSWER = 64 * 1024

_BROKEN = b"Internal Server Error: the authentication service did not answer as expected\n"

#: The service's answers passed to the client: a refusal, and a redirect (to sign in).
_RELAYED = frozenset({301, 302, 303, 307, 308, 401, 403})


def auth_base_url(url: str) -> tuple[str, bytes]:
    """The upstream (scheme and authority, or socket) and the path of an ``auth_request`` URL."""
    if url.startswith("unix:"):
        # (As the configuration writes it: the path always there, encoded.)
        socket_path, _, uri = url[len("unix:") :].partition(":")
        return f"unix:{socket_path}", uri.encode("ascii")
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return base, path.encode("utf-8")


class ForwardAuth:
    """Asks an authentication service about each request (see the module docstring).

    Args:
        proxy: a proxy handler whose one upstream is the service, its path not
            mapped (the question's target is sent as it is).
        target: the path (and query) asked.
        copied: the lower-case names of the fields copied from a 2xx answer.
        where: the mount, for the log.
        trusted: the proxies whose reports of the client are believed.
        cookies: whether a 2xx answer's ``Set-Cookie`` fields go to the client with
            the response (``auth_response_cookies``).
    """

    def __init__(
        self,
        proxy: Handler,
        target: bytes,
        copied: Sequence[bytes] = (),
        where: str = "",
        trusted: TrustedProxies | None = None,
        *,
        cookies: bool = False,
    ) -> None:
        self.proxy = proxy
        self.target = target
        self.copied = tuple(name.lower().replace(b"_", b"-") for name in copied)
        self.where = where
        self.trusted = trusted or TrustedProxies(())
        self.cookies = cookies

    def close(self) -> None:
        """Let the service's pooled connections and timers go (reload, stop)."""
        close = getattr(self.proxy, "close", None)
        if close is not None:
            close()

    def check(self, exchange: Exchange, admit: Callable[[Exchange], None]) -> None:
        """Ask about ``exchange``; ``admit`` it when the service lets it through."""
        question = _Question(self._question(exchange.request), exchange, self, admit)
        # A client gone meanwhile takes its question with it.
        exchange.on_close(question.client_closed)
        self.proxy.handle(question)

    def _question(self, request: RequestHead) -> RequestHead:
        """The question's head: what the service is asked, about what, for whom.

        It says what this server will serve, not what the client wrote: the path
        as routed (decoded, dot-segments resolved, encoded again: a raw
        ``/public/%2e%2e/admin`` is asked about as ``/admin``, which is what is
        served), the host routed on, the client as the rules see it (through
        ``trusted_proxies``: one address, not a chain whose first entry a client
        wrote) and the scheme the application is told. The proxy then sends it as
        from an untrusted client: those are the forwarding fields it writes.
        """
        target = self.target
        path, _, query = target.partition(b"?")
        asked = _routed_uri(request)
        trusted = self.trusted.trusts_peer(request.peer)
        scheme = request.scheme
        peer = request.peer
        if trusted:
            said = forwarded_scheme(request)
            scheme = said or scheme
            client = client_address(request, self.trusted)
            peer = (client, peer[1] if peer else 0) if client else None
        fields = []
        for name, value in request.headers:
            dashed = name.lower().replace(b"_", b"-")
            if dashed not in _NOT_ASKED and not dashed.startswith(b"x-original-"):
                fields.append((name, value))
        host = request.authority or b"localhost"
        fields += [
            (b"X-Original-URI", asked),
            (b"X-Original-URL", scheme.encode("ascii") + b"://" + host + asked),
            (b"X-Original-Method", request.method),
            (b"X-Forwarded-Uri", asked),
            (b"X-Forwarded-Method", request.method),
        ]
        return RequestHead(
            method=b"GET",
            target=target,
            path=path,
            decoded_path=unquote_to_bytes(path),
            query=query,
            version=b"1.1",
            headers=fields,
            authority=request.authority,
            content_length=None,
            chunked=False,
            scheme=scheme,
            peer=peer,
            local=request.local,
            client_certificate=request.client_certificate,
        )

    def answered(self, question: _Question) -> None:
        """The service's answer is in (or failed): let the request through or answer."""
        exchange = question.client
        if exchange.finished:
            return
        status = question.status
        if 200 <= status < 300 and not question.broken:
            if self.copied:
                exchange.request = _with_fields(exchange.request, self.copied, question.fields)
            if self.cookies:
                # A session renewed on the way (oauth2-proxy's --cookie-refresh): every
                # line as its own field (nginx's $upstream_http_set_cookie holds the
                # first only, or since 1.23 all joined into one line browsers misread),
                # so a session split over several cookies keeps them all.
                cookies = [field for field in question.fields if field[0].lower() == b"set-cookie"]
                if cookies:
                    exchange.set_response_fields(self, cookies)
            self._admit(question.admit, exchange)
            return
        if status in _RELAYED and not question.broken:
            # (The proxy already took the hop-by-hop fields off; the length is said
            # again for the body as kept.)
            fields = [
                (name, value)
                for name, value in question.fields
                if name.lower() != b"content-length"
            ]
            body = question.body
            fields.append((b"Content-Length", b"%d" % len(body)))
            exchange.start_response(status, fields, question.reason)
            exchange.finish(body)
            return
        _log.error(
            "{where}: no usable answer from the authentication service for {method}"
            " {target} ({status}, its own or the proxy's when it could not be asked"
            "{broken}): 500",
            where=self.where,
            method=exchange.request.method.decode("latin-1"),
            target=exchange.request.target.decode("latin-1"),
            status=status or "nothing",
            broken="; the answer cut short or over 64 KiB" if question.broken else "",
        )
        answer_error(exchange, 500, _BROKEN)

    def _admit(self, admit: Callable[[Exchange], None], exchange: Exchange) -> None:
        """Hand ``exchange`` on, as the protocol would: a handler that raises is a 500.

        (Here inside the service connection's read, not the protocol's dispatch,
        which would catch it.)
        """
        hand_on(exchange, lambda: admit(exchange), self.where)


def _routed_uri(request: RequestHead) -> bytes:
    """The request's path as the router reads it, encoded again, and its query."""
    if request.target == b"*":
        return b"*"
    normal = remove_dot_segments(request.decoded_path) or b"/"
    query = request.query
    return encode_path(normal) + (b"?" + query if query else b"")


def _with_fields(
    request: RequestHead, names: Iterable[bytes], answer: list[tuple[bytes, bytes]]
) -> RequestHead:
    """``request`` with the fields ``names`` taken from ``answer`` instead of the client."""
    wanted = frozenset(names)
    kept = []
    for name, value in request.headers:
        dashed = name.lower().replace(b"_", b"-")
        if dashed in wanted:
            continue
        if dashed == b"connection":
            # A client's Connection naming a copied field would have a proxy mount
            # drop it (RFC 9110 7.6.1): those options are not the client's to give.
            options = [
                option.strip()
                for option in value.split(b",")
                if option.strip() and option.strip().lower().replace(b"_", b"-") not in wanted
            ]
            if options:
                kept.append((name, b", ".join(options)))
            continue
        kept.append((name, value))
    kept += [(name, value) for name, value in answer if name.lower().replace(b"_", b"-") in wanted]
    # The same request: the same $request_id in the log and upstream.
    return request.with_headers(kept)


class _Question:
    """The exchange the service's answer is written to: kept in memory, never sent.

    What a proxy mount's handler needs of an :class:`~twistwsgi.http.exchange.Exchange`.
    """

    route: Route | None = None
    access_log: Callable[[Any], None] | None = None
    upgradable = False
    body_full = False

    def __init__(
        self,
        request: RequestHead,
        client: Exchange,
        gate: ForwardAuth,
        admit: Callable[[Exchange], None],
    ) -> None:
        self.request = request
        self.client = client
        self.admit = admit
        self._gate = gate
        self.response_started = False
        self.finished = False
        self.log_notes: Any = None
        self.remote_user: str | None = None
        self.limit_rate: tuple[int, int] | None = None  # (an answer to this server)
        self.limit_rate_after = 0
        self.status = 0
        self.reason: bytes | None = None
        self.fields: list[tuple[bytes, bytes]] = []
        self.broken = False
        self._pieces: list[bytes] = []
        self._size = 0
        self._on_close: list[Callable[[Failure | None], object]] = []

    @property
    def body(self) -> bytes:
        return b"".join(self._pieces)

    # -- what the proxy calls ---------------------------------------------------------

    def receive_body(self, receiver: Any) -> None:
        receiver.body_finished()  # (a question has no body)

    def continue_body(self) -> None:
        pass

    def send_interim(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> None:
        pass

    def pause_body(self) -> None:
        pass

    def resume_body(self) -> None:
        pass

    def start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> None:
        if self.finished:
            return
        self.response_started = True
        self.status = status
        self.reason = reason
        self.fields = list(headers)

    def set_response_fields(self, owner: object, fields: list[tuple[bytes, bytes]]) -> None:
        """Not used: nothing gates the service's own answer; kept as sent."""
        self.fields.extend(fields)

    def send_head(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if self.finished or not data:
            return
        self._size += len(data)
        if self._size > MAX_ANSWER:
            self.broken = True
            self.abort()
            return
        self._pieces.append(data)

    def client_left(self) -> bool:
        return self.client.finished

    def drop_departed_client(self) -> None:
        self.abort()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def send_file(self, file: Any, offset: int, count: int) -> Any:
        raise NotImplementedError("a question's answer is never a file")

    def finish(self, data: bytes = b"") -> None:
        if self.finished:
            return
        self.write(data)
        if not self.broken:  # (too large: aborted already)
            self._end(None)

    def abort(self) -> None:
        if self.finished:
            return
        self.broken = True
        self._end(Failure(ConnectionAbortedByGate()))

    def upgrade(self, headers: list[tuple[bytes, bytes]], receiver: Any) -> Any:
        raise NotImplementedError("a question is never upgraded")

    def on_close(self, callback: Callable[[Failure | None], object]) -> None:
        if self.finished:
            callback(None if not self.broken else Failure(ConnectionAbortedByGate()))
        else:
            self._on_close.append(callback)

    # -- its end ------------------------------------------------------------------------

    def client_closed(self, reason: Failure | None) -> None:
        """The client's exchange ended first: the question is dropped."""
        if not self.finished:
            self.broken = True
            self._end(Failure(ConnectionAbortedByGate()), answer=False)

    def _end(self, reason: Failure | None, *, answer: bool = True) -> None:
        self.finished = True
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback(reason)
        if answer:
            self._gate.answered(self)


class ConnectionAbortedByGate(Exception):  # noqa: N818 - a reason, not an error raised
    """Why a question ended without its answer (too large, the client gone)."""
