"""The facts of one HTTP request, as a plain value (no Twisted).

Protocols build a :class:`RequestHead` once the request head is received and checked;
handlers and the pure layers beneath them (environ building, routing, file lookup)
read it. It carries bytes exactly as received, plus the few values the protocol has
already derived (effective authority, body framing, decoded path). A request refused
before its head was accepted leaves only a :class:`PartialRequest`: what had been
read of it, for the access log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twistwsgi.client_certificates import ClientCertificate
    from twistwsgi.http.compression import GzipSettings

__all__ = [
    "UNREAD_BODY",
    "Address",
    "CapturedRoute",
    "ErrorPage",
    "ErrorPages",
    "PartialRequest",
    "PreparedHeaders",
    "RequestHead",
    "RewrittenRequest",
    "Route",
    "describe_peer",
    "peer_address",
]

#: A host and port pair, as the socket reports it.
Address = tuple[str, int]

#: The body limit of a request answered without its body (a router's guard, a return
#: mount): no limit refuses it, and it is handed over from its head, without waiting
#: for the body to arrive.
UNREAD_BODY = -1


def describe_peer(peer: Address | None) -> str:
    """A client's address for a log line, as ``host:port``.

    ``203.0.113.7:51234``, ``[::1]:51234``, or ``unix:`` for a UNIX-socket client
    (nginx's ``$remote_addr`` there).
    """
    if peer is None:
        return "unix:"
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_address(address: object) -> Address | None:
    """A connection's address (Twisted's, read by its attributes) as an :data:`Address`.

    ``None`` for one without a host and port: a UNIX socket.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return (host, port)
    return None


class RequestHead:
    """The facts of one request, as received and checked by the protocol.

    Treated as immutable. A plain slotted class rather than a frozen dataclass: it
    is built once per request, and a frozen dataclass sets every field through
    ``object.__setattr__``.

    Attributes:
        method: the method token, e.g. ``b"GET"``.
        target: the request-target exactly as received.
        path: the path part of the target, still percent-encoded (``b""`` for the
            asterisk and authority forms).
        decoded_path: ``path`` percent-decoded (RFC 3986 2.1), as PEP 3333 hands it
            to applications.
        query: the query part of the target, without the ``?``.
        version: ``b"1.0"`` or ``b"1.1"``.
        headers: every field line in order, names as received.
        authority: the effective host and port: the absolute-form target's
            authority, else the ``Host`` field, else ``b""`` (HTTP/1.0 only).
        content_length: the declared body length, or ``None``.
        chunked: whether the body uses the chunked transfer coding.
        scheme: ``"https"`` on a TLS connection, else ``"http"``.
        peer: the client's address and port, ``None`` on a UNIX socket.
        local: the server's address and port, ``None`` on a UNIX socket.
        client_certificate: on a TLS connection that asked the client for a
            certificate (``tls_verify_client``), what it sent
            (:class:`~twistwsgi.client_certificates.ClientCertificate`); else ``None``.
    """

    __slots__ = (
        "_request_id",
        "authority",
        "chunked",
        "client_certificate",
        "content_length",
        "decoded_path",
        "headers",
        "local",
        "method",
        "path",
        "peer",
        "query",
        "resolved_client",
        "scheme",
        "target",
        "version",
    )

    # Positional or keyword: the protocol makes one per request and passes them in
    # order, since a class called with fourteen keyword arguments builds a dict for
    # them (measured, CPython 3.11: 0.74-0.92 us against 0.31 us positionally).
    def __init__(  # noqa: PLR0917
        self,
        method: bytes,
        target: bytes,
        path: bytes,
        decoded_path: bytes,
        query: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        authority: bytes,
        content_length: int | None,
        chunked: bool,
        scheme: str,
        peer: Address | None,
        local: Address | None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.decoded_path = decoded_path
        self.query = query
        self.version = version
        self.headers = headers
        self.authority = authority
        self.content_length = content_length
        self.chunked = chunked
        self.scheme = scheme
        self.peer = peer
        self.local = local
        self.client_certificate = client_certificate
        self._request_id: str | None = None
        # What access.client_address found, for which trusted proxies (their key).
        self.resolved_client: tuple[tuple[str, ...], str | None] | None = None

    @property
    def request_id(self) -> str:
        """Nginx's ``$request_id``: 32 random hexadecimal digits, made when first read.

        The same for every reader of this request (the access log, a proxied
        ``X-Request-ID``), so a log line and an upstream's can be matched.
        """
        if self._request_id is None:
            self._request_id = os.urandom(16).hex()
        return self._request_id

    @property
    def has_body(self) -> bool:
        """Whether a request body follows the head."""
        return self.chunked or bool(self.content_length)

    def with_headers(self, headers: list[tuple[bytes, bytes]]) -> RequestHead:
        """The same request with other header fields (and the same ``request_id``).

        For a handler in front of another that changes what the next one reads (an
        authentication service's fields, copied in); the rest stays as received.
        """
        copy = RequestHead(
            method=self.method,
            target=self.target,
            path=self.path,
            decoded_path=self.decoded_path,
            query=self.query,
            version=self.version,
            headers=headers,
            authority=self.authority,
            content_length=self.content_length,
            chunked=self.chunked,
            scheme=self.scheme,
            peer=self.peer,
            local=self.local,
            client_certificate=self.client_certificate,
        )
        copy._request_id = self._request_id
        return copy

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of field ``name`` (lower-case), or ``None``."""
        return _first_value(self.headers, name)

    def joined(self, name: bytes) -> bytes | None:
        """Every line of field ``name`` (lower-case) as one list value, or ``None``.

        RFC 9110 5.3: repeated field lines are one comma-separated list, in order.
        """
        values = [value for field, value in self.headers if field.lower() == name]
        return b", ".join(values) if values else None


class RewrittenRequest(RequestHead):
    """A request whose path and query a host's ``rewrite`` lines changed inside the server.

    nginx's internal rewrite (``last``, ``break``, or no flag before a path): what
    routes and serves the request reads the new ``path``, ``decoded_path`` and
    ``query`` (nginx's ``$uri`` and ``$args``), while ``target`` stays as the client
    sent it, for the access log's request line and ``$request_uri`` (nginx keeps
    ``unparsed_uri``). A subclass, so a request that was not rewritten carries
    nothing more and costs nothing more.

    Attributes:
        original: the request as the protocol made it, before any line changed it.
    """

    __slots__ = ("original",)

    original: RequestHead

    @classmethod
    def of(
        cls, request: RequestHead, *, path: bytes, decoded_path: bytes, query: bytes
    ) -> RewrittenRequest:
        """``request`` with another path and query (its ``original`` kept if rewritten).

        Args:
            request: the request as it stands (the protocol's, or rewritten already).
            path: the new path, percent-encoded.
            decoded_path: ``path`` decoded: the new ``$uri``.
            query: the new query, without the ``?``.
        """
        # Not through __init__: every field is the request's but these, copied as is.
        copy = object.__new__(cls)
        for name in RequestHead.__slots__:
            setattr(copy, name, getattr(request, name))
        copy.path = path
        copy.decoded_path = decoded_path
        copy.query = query
        copy.original = getattr(request, "original", request)
        return copy

    @property
    def request_id(self) -> str:
        """The original's: one ``$request_id`` however the request was rewritten."""
        return self.original.request_id

    def with_headers(self, headers: list[tuple[bytes, bytes]]) -> RequestHead:
        """As :meth:`RequestHead.with_headers`, still rewritten (``original`` kept)."""
        copy = RewrittenRequest.of(
            self, path=self.path, decoded_path=self.decoded_path, query=self.query
        )
        copy.headers = headers
        return copy


class PartialRequest:
    """What the protocol had read of a request it refused before accepting its head.

    Parts of the request line not read (or not readable) are ``b""``: a head that
    stopped inside its method has none of them, one that stopped inside its header
    section has all three.

    Attributes:
        method: the method token, or ``b""``.
        target: the request-target as far as it arrived, or ``b""``.
        version: e.g. ``b"1.1"`` (any version the client sent), or ``b""``.
        headers: the field lines read before the refusal.
        peer: the client's address and port, ``None`` on a UNIX socket.
    """

    __slots__ = ("_request_id", "headers", "method", "peer", "target", "version")

    def __init__(
        self,
        *,
        method: bytes = b"",
        target: bytes = b"",
        version: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        peer: Address | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers if headers is not None else []
        self.peer = peer
        self._request_id: str | None = None

    @property
    def request_id(self) -> str:
        """As :attr:`RequestHead.request_id` (a refused request has one too)."""
        if self._request_id is None:
            self._request_id = os.urandom(16).hex()
        return self._request_id

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of field ``name`` (lower-case), or ``None``."""
        return _first_value(self.headers, name)


def _first_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for field, value in headers:
        if field.lower() == name:
            return value
    return None


@dataclass(frozen=True)
class ErrorPage:
    """A page a host sends in place of the server's own short body for one status.

    nginx's ``error_page``: read into memory when the configuration is built, so
    answering with it costs no disk access.

    Attributes:
        path: the file it was read from (for ``--check-config`` and logs).
        content_type: the ``Content-Type`` value it is sent with.
        body: the page.
    """

    path: str
    content_type: bytes
    body: bytes


#: A host's pages by status code (400-599).
ErrorPages = Mapping[int, ErrorPage]


class Route:
    r"""Where a router sent a request, for the handler that answers it.

    Treated as immutable; a plain slotted class because one is made per request.

    Attributes:
        script_name: the mount prefix (decoded, no trailing slash, ``b""`` at the root).
        path_info: the rest of the decoded path, with dot-segments removed.
        host: the first configured name of the host, or ``None`` for a catch-all host.
        headers: fields the mount adds to each response that does not set them.
        gzip: how the mount compresses responses, or ``None`` for not at all.
        error_pages: the host's pages for the errors the server itself answers
            (:func:`twistwsgi.routing.answer_error`), or ``None`` when it has none.
        label: the mount's path as written when ``script_name`` does not name the
            mount (``= /favicon.ico``, ``~* \.png$``), else ``None``: the metrics'
            ``mount`` label.
    """

    __slots__ = ("error_pages", "gzip", "headers", "host", "label", "path_info", "script_name")

    #: The match of a regular-expression mount whose settings use its captures
    #: (:class:`CapturedRoute`); ``None`` for every other route.
    captures: Any = None

    # Positional, unlike most signatures of six: a router makes one per request, and
    # a keyword argument costs it about 100 ns more (CPython 3.11), a positional 20.
    def __init__(  # noqa: PLR0917
        self,
        script_name: bytes,
        path_info: bytes,
        host: str | None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        gzip: GzipSettings | None = None,
        error_pages: ErrorPages | None = None,
        label: bytes | None = None,
    ) -> None:
        self.script_name = script_name
        self.path_info = path_info
        self.host = host
        self.headers = headers
        self.gzip = gzip
        self.error_pages = error_pages
        self.label = label

    def __repr__(self) -> str:
        return f"Route({self.script_name!r}, {self.path_info!r}, {self.host!r})"


class CapturedRoute(Route):
    """A route to a regular-expression mount whose settings use its captures.

    Made only for such mounts (:class:`twistwsgi.captures.CapturingHandler`), so
    the route of every other request costs what it did.

    Attributes:
        captures: the match of the mount's pattern that chose it (``group(n)``,
            ``group(name)``: bytes of the normalised path, or ``None``).
    """

    __slots__ = ("captures",)

    def __init__(self, route: Route, captures: Any) -> None:
        super().__init__(
            route.script_name,
            route.path_info,
            route.host,
            route.headers,
            route.gzip,
            route.error_pages,
            route.label,
        )
        self.captures = captures


class PreparedHeaders(list[tuple[bytes, bytes]]):
    """Response header fields a handler sends unchanged with many responses.

    A plain list of ``(name, value)`` pairs to anything that reads it; a protocol may
    keep its serialised form in :attr:`wire` (the HTTP/1.1 protocol does), so a file
    served a thousand times is serialised once. Do not change it after first use.

    Attributes:
        wire: protocol-specific cache, ``None`` until a protocol fills it.
    """

    __slots__ = ("wire",)

    def __init__(
        self, fields: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(fields)
        self.wire: object = None
