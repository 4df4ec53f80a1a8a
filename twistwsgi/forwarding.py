"""What the reverse proxy sends where: upstream addresses, path mapping, header rewriting.

Pure functions and values (no Twisted), used by :mod:`twistwsgi.proxy` on every
proxied request and tested on their own.

**Upstream addresses.** :func:`parse_upstream` turns a configured URL
(``http://host:port[/prefix]``, ``https://...``, ``unix:/path``) into an
:class:`UpstreamAddress`.

**Path mapping** (nginx's ``proxy_pass`` rule, on segment boundaries). An upstream URL
without a path passes the request's path unchanged: mounted at ``/api``,
``/api/users`` goes to the upstream as ``/api/users``. An upstream URL with a path
replaces the mount prefix with that path: ``http://u:9000/`` sends ``/users``,
``http://u:9000/v2`` sends ``/v2/users`` (unlike nginx, ``/v2`` and ``/v2/`` both
give ``/v2/users``: the prefix is joined on a ``/``, never glued to a segment).
What is forwarded is the request's *raw* path, still percent-encoded as the client
sent it (``%2F`` stays ``%2F``), and the query string exactly as received. The raw
path is used only when it means the same as the path the router matched on: its
start is the mount prefix literally and it has no dot-segments. Otherwise (an
encoded character in the prefix, or ``/a/../b``) the normalised path the router
used is re-encoded and sent instead, so an upstream never sees a path that climbs
out of the prefix it was given (RFC 3986 5.2.4, 6.2.2). A request a host's
``rewrite`` line changed inside the server has no raw path of the client's to
keep: its new path is encoded from the rewritten ``$uri`` and mapped as any other,
with its rewritten query, as nginx passes a rewritten URI (re-encoded) to
``proxy_pass``.

**Request header fields** (:func:`request_fields`). Hop-by-hop fields (RFC 9110
7.6.1: ``Connection`` and every field it names, ``Keep-Alive``, ``Proxy-Connection``,
``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``) are not forwarded; the
framing is re-declared (``Content-Length`` as received, or ``Transfer-Encoding:
chunked`` for a chunked body, which the proxy re-chunks); ``Expect`` is answered by
the proxy itself (see :mod:`twistwsgi.proxy`). Every other field is forwarded in
order, with its name as received, repeated fields kept as separate lines.

**Forwarding fields.** The proxy adds ``X-Forwarded-For`` (the client address),
``X-Forwarded-Proto`` (``http``/``https``), ``X-Forwarded-Host`` (the client's
``Host``) and the standard ``Forwarded`` (RFC 7239 4: ``for``, ``host``, ``proto``).
Fields a client sends with these names are believed only when the client's address
is in the configured trusted networks (:class:`TrustedProxies`): the proxy then
appends to ``X-Forwarded-For`` and ``Forwarded`` and keeps the incoming
``X-Forwarded-Proto``/``-Host``. From any other client they are dropped and
replaced, as are ``X-Real-IP``, ``X-Forwarded-Port`` and ``X-Forwarded-Prefix``
(which the proxy does not set but upstream frameworks often believe). Spellings of
these names with ``_`` for ``-`` (``X-Forwarded_For``, ``X_Real_IP``) are dropped from
every client: a CGI-style upstream (WSGI, PHP) maps ``_`` and ``-`` to the same
``HTTP_X_FORWARDED_FOR`` key, so such a field would pass as the real one (nginx drops
them with ``underscores_in_headers off``). A client on a
UNIX socket has no address: it is untrusted, and is named ``unknown`` in
``Forwarded`` (RFC 7239 6.2) and left out of ``X-Forwarded-For``.

No ``Via`` field is added: RFC 9110 7.6.3 asks gateways for one, but common upstreams
change behaviour when they see it (nginx's ``gzip_proxied off`` stops compressing),
and neither nginx nor Caddy sends it.

**Response header fields** (:func:`response_fields`): hop-by-hop fields and those
the upstream's ``Connection`` names are removed, and those a mount hides
(:class:`HiddenFields`: by default the upstream's ``Date``, ``Server`` and
``X-Pad``, as nginx's); everything else, ``Set-Cookie`` included, passes in order
and unmerged. :class:`RepeatedFields` hands the server the same object for the same
fields response after response, so it serialises them once.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

from twistwsgi.http.request import (
    Address,
    PreparedHeaders,
    RequestHead,
    RewrittenRequest,
    Route,
)
from twistwsgi.http.rules import (
    FORWARDING_FIELDS,
    HOP_BY_HOP,
    TOKEN,
    connection_options,
    forwarded_proto,
)
from twistwsgi.routing import remove_dot_segments

__all__ = [
    "DEFAULT_HIDDEN",
    "IDEMPOTENT_METHODS",
    "NOTHING_HIDDEN",
    "PATH_SAFE_DECODED",
    "QUERY_SAFE_DECODED",
    "UNIX_SOCKETS",
    "HiddenFields",
    "Networks",
    "RepeatedFields",
    "TrustedProxies",
    "UpstreamAddress",
    "added_forwarded_for",
    "encode_path",
    "forwarded_client",
    "forwarded_element",
    "forwarded_scheme",
    "parse_upstream",
    "replace_fields",
    "request_fields",
    "response_fields",
    "upstream_target",
]

#: RFC 9110 9.2.2: methods whose intended effect is the same however often they are
#: sent, so a request that may or may not have reached an upstream can be sent again.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: The ``trusted_proxies`` entry that trusts every client on a UNIX socket (nginx's
#: ``set_real_ip_from unix:``); the same string as :data:`twistwsgi.config.UNIX_SOCKETS`.
UNIX_SOCKETS = "unix:"


@dataclass(frozen=True, slots=True)
class UpstreamAddress:
    """Where one upstream listens and how requests to it are addressed.

    Attributes:
        url: the URL as configured (names the upstream in logs).
        scheme: ``"http"``, ``"https"`` or ``"unix"``.
        host: the host name or IP address (``""`` for a UNIX socket).
        port: the TCP port (``0`` for a UNIX socket).
        socket_path: the UNIX socket's path (``""`` for TCP).
        prefix: the URL's path, replacing the mount prefix (``None``: no path, the
            request path is passed unchanged).
        host_field: the ``Host`` value naming the upstream itself (``host[:port]``,
            the port left out when it is the scheme's default).
    """

    url: str
    scheme: str
    host: str
    port: int
    socket_path: str
    prefix: bytes | None
    host_field: bytes

    @property
    def tls(self) -> bool:
        """Whether connections to this upstream use TLS."""
        return self.scheme == "https"


def parse_upstream(url: str) -> UpstreamAddress:
    """Parse an upstream URL as the configuration validated it.

    A UNIX socket's URL may name a path after a colon, as nginx's
    ``http://unix:/path/to/socket:/uri``: ``unix:/run/api.sock:/v2`` is the socket
    ``/run/api.sock`` with the prefix ``/v2`` (a socket's path holds no colon).

    Raises:
        ValueError: for a URL that is not ``http``, ``https`` or ``unix:/path``
            (with ``:/prefix``, no query or fragment).
    """
    if url.startswith("unix:"):
        path, colon, uri = url[len("unix:") :].partition(":")
        if not path.startswith("/") or (colon and not uri.startswith("/")):
            raise ValueError(
                f"expected unix:/path/to/socket or unix:/path/to/socket:/prefix, got {url!r}"
            )
        if "?" in uri or "#" in uri:
            raise ValueError(f"an upstream URL has no query or fragment, got {url!r}")
        prefix = quote(uri.encode("utf-8"), safe=_PATH_SAFE).encode("ascii") if colon else None
        return UpstreamAddress(url, "unix", "", 0, path, prefix, b"localhost")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http or https URL, got {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host = parts.hostname
    name = host.encode("ascii") if host.isascii() else host.encode("idna")
    shown = b"[" + name + b"]" if ":" in host else name
    if port != default_port:
        shown += b":%d" % port
    prefix = parts.path.encode("utf-8") if parts.path else None
    if prefix is not None:
        # The configured path is sent as is; only what cannot appear in a
        # request-target is encoded.
        prefix = quote(prefix, safe=_PATH_SAFE).encode("ascii")
    return UpstreamAddress(url, parts.scheme, host, port, "", prefix, shown)


# RFC 3986 3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; plus "/".
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
#: What stays as it is of decoded text put in a URL's path (the rest is
#: percent-encoded; "?" and "#" would end the path): for :func:`encode_path`, a
#: rewrite's or a capture's bytes.
PATH_SAFE_DECODED = "/:@!$&'()*+,;=-._~"
#: The same in a query: there "?" stays encoded too, and "&", "+" and ";", which
#: would start or change an argument (nginx's NGX_ESCAPE_ARGS).
QUERY_SAFE_DECODED = "/:@!$'()*,=-._~"


def forwarded_scheme(request: RequestHead) -> str | None:
    """The scheme the proxy in front says the client used, if it says one.

    ``X-Forwarded-Proto``, else ``Forwarded``'s ``proto``: to be believed only from
    a trusted proxy.
    """
    proto = request.joined(b"x-forwarded-proto")
    forwarded = request.joined(b"forwarded")
    return forwarded_proto(
        None if proto is None else proto.decode("latin-1"),
        None if forwarded is None else forwarded.decode("latin-1"),
    )


def encode_path(path: bytes) -> bytes:
    """Percent-encode a decoded path for a request-target (RFC 3986 2.1, 3.3)."""
    return _encode_path(path)


def _encode_path(path: bytes) -> bytes:
    """Percent-encode a decoded path for a request-target (RFC 3986 2.1, 3.3)."""
    return quote(path, safe=PATH_SAFE_DECODED).encode("ascii")


def upstream_target(request: RequestHead, route: Route | None, prefix: bytes | None) -> bytes:
    """The origin-form request-target to send upstream (see the module docstring).

    Args:
        request: the client's request.
        route: where the router sent it (``None``: not routed, the whole path is
            below the mount).
        prefix: the upstream URL's path, or ``None`` when it has none.

    Raises:
        ValueError: when, unrouted, the path climbs above the root (``/../x``).
    """
    path = request.path
    if isinstance(request, RewrittenRequest):
        # A host's rewrite line changed the URI: its path (encoded again from the
        # new $uri) and its args go, as nginx passes a rewritten URI re-encoded.
        query = b"?" + request.query if request.query else b""
    else:
        target = request.target
        mark = target.find(b"?")
        query = target[mark:] if mark >= 0 else b""
    if not path:
        # asterisk-form (OPTIONS *, RFC 9112 3.2.4): only a root mount gets here.
        return b"*" if prefix is None else prefix or b"/"
    if route is None:
        # Not routed (a handler used without the Router): normalise here as the
        # Router would, so a dot-segment cannot climb out of the upstream's prefix.
        normal = remove_dot_segments(request.decoded_path)
        if normal is None:
            raise ValueError("the path climbs above the root")
        script, info = b"", normal
    else:
        script, info = route.script_name, route.path_info
    # The raw path means what the router matched when decoding it gives the
    # normalised path (no dot-segments were removed).
    plain = script + info == request.decoded_path
    if prefix is None:
        if plain or _raw_rest(path, script, info) is not None:
            return path + query
        return _encode_path(script + info) + query
    if (
        plain
        and path.startswith(script)
        and (len(path) == len(script) or path[len(script)] == 0x2F)
    ):
        rest = path[len(script) :]
    else:
        raw_rest = _raw_rest(path, script, info)
        rest = raw_rest if raw_rest is not None else _encode_path(info)
    if not rest:
        return (prefix or b"/") + query
    return prefix.rstrip(b"/") + rest + query


def _raw_rest(path: bytes, script: bytes, info: bytes) -> bytes | None:
    """The raw part of ``path`` below the mount ``script``, if it decodes to ``info``.

    For a raw path that does not spell the mount byte for byte: runs of slashes (the
    router counts one), or escapes (a mount path in UTF-8, ``%E6%97%A5``). Each raw
    segment (an escaped slash does not end one) must decode to the mount's segment,
    and the rest to ``info``; otherwise (dot-segments were removed) ``None``, and the
    decoded path is encoded again. Forwarding the rest as sent keeps an escaped
    reserved character (``%2F``, ``%3D``) as the client wrote it.
    """
    position = 0
    for segment in script.split(b"/")[1:]:
        while path.startswith(b"/", position):
            position += 1
        end = path.find(b"/", position)
        if end < 0:
            end = len(path)
        if unquote_to_bytes(path[position:end]) != segment:
            return None
        position = end
    rest = path[position:]
    return rest if unquote_to_bytes(rest) == info else None


class Networks:
    """A set of client addresses (CIDR networks), with a lookup cache.

    Args:
        networks: CIDR strings such as ``10.0.0.0/8`` or ``::1``, and ``unix:`` for
            every client on a UNIX socket (which has no address to match).

    Raises:
        ValueError: for a string that is not an address or network.
        TypeError: for one string instead of a sequence of them.
    """

    #: Addresses remembered; the cache is emptied when it grows past this.
    CACHE_SIZE = 4096

    def __init__(self, networks: Iterable[str]) -> None:
        if isinstance(networks, str):
            raise TypeError(
                f"a sequence of addresses or networks, not one string: give [{networks!r}]"
            )
        texts = [text.strip() for text in networks]
        #: The set as written: equal for two instances built from one configuration.
        self.key = tuple(texts)
        self.unix_sockets = UNIX_SOCKETS in texts
        self.networks = tuple(
            ipaddress.ip_network(text, strict=False) for text in texts if text != UNIX_SOCKETS
        )
        self._cache: dict[str, bool] = {}
        # Most servers trust no proxy, and handlers ask once per request.
        self._empty = not self.networks and not self.unix_sockets

    def __bool__(self) -> bool:
        return not self._empty

    def has_peer(self, peer: Address | None) -> bool:
        """Whether a request's ``peer`` (``None`` on a UNIX socket) is in the set."""
        if self._empty:
            return False
        return self.has(peer[0] if peer is not None else None)

    def has(self, address: str | None) -> bool:
        """Whether a client at ``address`` is in the set.

        Args:
            address: an IP address string, or ``None`` for a client without one (a
                UNIX socket), in the set only when it holds ``unix:``.
        """
        if address is None:
            return self.unix_sockets
        if not self.networks:
            return False
        known = self._cache.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            verdict = False
        else:
            mapped = getattr(ip, "ipv4_mapped", None)
            candidates = (ip,) if mapped is None else (ip, mapped)
            verdict = any(
                candidate.version == network.version and candidate in network
                for candidate in candidates
                for network in self.networks
            )
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[address] = verdict
        return verdict


class TrustedProxies(Networks):
    """The networks whose forwarding fields are believed (``trusted_proxies``).

    ``trusts_peer`` and ``trusts`` are :meth:`Networks.has_peer` and
    :meth:`Networks.has` under the names that say what they are asked for.
    """

    trusts_peer = Networks.has_peer
    trusts = Networks.has


# RFC 9110 5.6.2 tchar: what a Forwarded parameter value may be without quotes.
_TOKEN = re.compile(TOKEN.encode("ascii"))


def _forwarded_value(value: bytes) -> bytes:
    """A Forwarded parameter value: a token, else a quoted-string (RFC 7239 4)."""
    if _TOKEN.fullmatch(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwarded_element(client: str | None, host: bytes, proto: str) -> bytes:
    """One ``Forwarded`` element for this hop (RFC 7239 4, 5.2-5.4, 6).

    Args:
        client: the client's IP address, ``None`` when unknown (a UNIX socket).
        host: the ``Host`` the client asked for (left out when empty).
        proto: ``"http"`` or ``"https"``.
    """
    if client is None:
        node = b"unknown"
    elif ":" in client:
        node = b'"[' + client.encode("ascii") + b']"'  # RFC 7239 6: IPv6 in brackets, quoted
    else:
        node = client.encode("ascii")
    element = b"for=" + node
    if host:
        element += b";host=" + _forwarded_value(host)
    return element + b";proto=" + proto.encode("ascii")


# Fields the request loop looks at instead of copying: hop-by-hop, framing (re-declared),
# Host (set per upstream), Expect (answered here) and the forwarding fields.
_SPECIAL = HOP_BY_HOP | FORWARDING_FIELDS | {b"host", b"content-length", b"expect"}


# Upgrade tokens never passed on. h2c would turn the connection into HTTP/2 to the
# upstream, where every later request escapes the mount's prefix, host routing and
# forwarding fields (request smuggling); RFC 9113 3.1 deprecates it anyway.
_NEVER_UPGRADED = frozenset({b"h2c"})


def upgrade_protocols(request: RequestHead) -> list[bytes]:
    """The protocols of the request's ``Upgrade`` field a proxy may pass on.

    Each list member (RFC 9110 7.8: ``protocol-name ["/" protocol-version]``) in
    order, ``h2c`` left out; empty when nothing may be upgraded to.
    """
    protocols: list[bytes] = []
    for name, value in request.headers:
        if name.lower() == b"upgrade":
            for raw in value.split(b","):
                member = raw.strip()
                if member and member.split(b"/", 1)[0].strip().lower() not in _NEVER_UPGRADED:
                    protocols.append(member)
    return protocols


def upgrade_accepted(requested: Sequence[bytes], answered: list[tuple[bytes, bytes]]) -> bool:
    """Whether a 101's ``Upgrade`` field names protocols the request offered.

    RFC 9110 7.8: a server must not switch to a protocol the client did not ask
    for. Names compare case-insensitively (the WebSocket handshake's ``websocket``
    token is, RFC 6455 4.1).
    """
    offered = {member.replace(b" ", b"").lower() for member in requested}
    chosen = [
        member.strip().replace(b" ", b"").lower()
        for name, value in answered
        if name.lower() == b"upgrade"
        for member in value.split(b",")
        if member.strip()
    ]
    return bool(chosen) and all(member in offered for member in chosen)


def request_fields(
    request: RequestHead,
    when_special: Callable[[], tuple[bool, Sequence[bytes]]] | None = None,
    *,
    trusted: bool = False,
    upgrade: Sequence[bytes] = (),
) -> bytes:
    """The request's header field lines for the upstream, except ``Host``.

    Args:
        request: the client's request.
        when_special: called for ``(trusted, upgrade)`` in place of those two, and
            only when the request has a hop-by-hop or forwarding field: without one
            neither matters (no ``Upgrade`` field, nothing forwarded to extend), so
            the caller pays for knowing them (a trust lookup, whether the connection
            may switch protocols) only then. Positional too: the proxy passes it
            once per request, and a call with keywords costs more.
        trusted: whether the client is a trusted proxy (its forwarding fields are
            extended rather than replaced).
        upgrade: the protocols to pass a protocol upgrade on with (``Upgrade`` and
            ``Connection: upgrade``, RFC 9110 7.8), from :func:`upgrade_protocols`;
            empty for none.

    Returns:
        The field lines, each ending in CRLF (no empty line after them).
    """
    lines: list[bytes] = []
    append = lines.append
    special: list[tuple[bytes, bytes, bytes]] | None = None
    for name, value in request.headers:
        lower = name.lower()
        # (find, not b"_" in lower: on Python 3.11 that builds and drops a TypeError.)
        if lower in _SPECIAL or (
            lower.find(b"_") >= 0 and lower.replace(b"_", b"-") in FORWARDING_FIELDS
        ):
            if lower != b"host":
                if special is None:
                    special = [(lower, name, value)]
                else:
                    special.append((lower, name, value))
            continue
        append(name + b": " + value + b"\r\n")
    if request.chunked:
        append(b"Transfer-Encoding: chunked\r\n")
    elif request.content_length is not None:
        append(b"Content-Length: %d\r\n" % request.content_length)
    peer = request.peer
    if special is None:
        # The common case: nothing hop-by-hop, nothing forwarded before us.
        address = peer[0] if peer is not None else None
        # (The cache looked up here, and _forwarding_block called only to fill it:
        # one call less per request.)
        key = (address, request.authority, request.scheme)
        block = _blocks.get(key)
        append(block if block is not None else _forwarding_block(*key))
        return b"".join(lines)
    if when_special is not None:
        trusted, upgrade = when_special()
    client = forwarded_client(peer)
    return _with_special_fields(lines, special, request, client, trusted=trusted, upgrade=upgrade)


def forwarded_client(peer: Address | None) -> str | None:
    """The client's address as this hop adds it to X-Forwarded-For and Forwarded.

    ``None`` for a UNIX-socket client. A link-local IPv6 peer comes with its zone
    ("fe80::1%eth0"): this host's interface name, meaningless upstream and outside
    RFC 7239 6's syntax, so it is left out.
    """
    if peer is None:
        return None
    return peer[0].partition("%")[0]


def added_forwarded_for(request: RequestHead, *, trusted: bool) -> bytes | None:
    """X-Forwarded-For as this hop sends it (nginx's ``$proxy_add_x_forwarded_for``).

    A trusted proxy's lines, then the client's address (see :func:`request_fields`,
    which builds the same value in its one pass over the fields).
    """
    lines = (
        [value for name, value in request.headers if name.lower() == b"x-forwarded-for"]
        if trusted
        else []
    )
    client = forwarded_client(request.peer)
    if client is not None:
        lines.append(client.encode("ascii"))
    return b", ".join(lines) or None


def replace_fields(fields: bytes, chosen: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``fields`` (CRLF-ended lines) without any field ``chosen`` names, then the chosen.

    proxy_set_header: each chosen field replaces every line of its name (names have
    no case, RFC 9110 5.1); one with an empty value is left out altogether, as with
    nginx.
    """
    # Spelled with "_" for "-" too: CGI-style gateways (Rack, PHP) read X_Client_DN as
    # X-Client-DN, so a client must not slip its own value past in that spelling.
    names = {_dashed(name) for name, _ in chosen}
    lines = [
        line + b"\r\n"
        for line in fields.split(b"\r\n")
        if line and _dashed(line.partition(b":")[0]) not in names
    ]
    lines.extend(name + b": " + value + b"\r\n" for name, value in chosen if value)
    return b"".join(lines)


def _dashed(name: bytes) -> bytes:
    return name.lower().replace(b"_", b"-")


def _with_special_fields(
    lines: list[bytes],
    special: list[tuple[bytes, bytes, bytes]],
    request: RequestHead,
    client: str | None,
    *,
    trusted: bool,
    upgrade: Sequence[bytes],
) -> bytes:
    """Finish :func:`request_fields` when hop-by-hop or forwarding fields came in."""
    options: set[bytes] = set()
    forwarded_for: list[bytes] = []
    forwarded: list[bytes] = []
    proto: bytes | None = None
    host: bytes | None = None
    kept: list[bytes] = []
    for lower, name, value in special:
        if lower == b"connection":
            options |= connection_options(value)
        elif trusted and lower in FORWARDING_FIELDS and b"_" not in lower:
            if lower == b"x-forwarded-for":
                forwarded_for.append(value)
            elif lower == b"forwarded":
                forwarded.append(value)
            # A proxy that appends puts its own value last; one before may be the
            # client's: the trusted proxy vouches only for the last (RFC 7239 8.1).
            elif lower == b"x-forwarded-proto":
                proto = _last_member(value) or None
            elif lower == b"x-forwarded-host":
                host = _last_member(value) or None
            else:
                kept.append(name + b": " + value + b"\r\n")
    named = options - _SPECIAL
    if named:
        # RFC 9110 7.6.1: fields the client's Connection names are hop-by-hop too.
        lines = [line for line in lines if line.split(b":", 1)[0].lower() not in named]
    lines.extend(kept)
    append = lines.append
    if upgrade:
        append(b"Upgrade: " + b", ".join(upgrade) + b"\r\nConnection: upgrade\r\n")
    authority = request.authority
    scheme = request.scheme
    if not (forwarded_for or forwarded or proto is not None or host is not None):
        peer = request.peer
        append(_forwarding_block(peer[0] if peer is not None else None, authority, scheme))
        return b"".join(lines)
    if client is not None:
        forwarded_for.append(client.encode("ascii"))
    if forwarded_for:
        append(b"X-Forwarded-For: " + b", ".join(forwarded_for) + b"\r\n")
    append(b"X-Forwarded-Proto: " + (proto or scheme.encode("ascii")) + b"\r\n")
    if host is not None or authority:
        append(b"X-Forwarded-Host: " + (host if host is not None else authority) + b"\r\n")
    forwarded.append(forwarded_element(client, authority, scheme))
    append(b"Forwarded: " + b", ".join(forwarded) + b"\r\n")
    return b"".join(lines)


def _last_member(value: bytes) -> bytes:
    """The last member of a comma-separated field value, without its spaces."""
    return value.rsplit(b",", 1)[-1].strip(b" \t")


_blocks: dict[tuple[str | None, bytes, str], bytes] = {}
#: Forwarding blocks remembered (one per client address and host); emptied when full.
_BLOCK_CACHE_SIZE = 1024


def _forwarding_block(address: str | None, authority: bytes, scheme: str) -> bytes:
    """The four forwarding field lines this hop adds when none came in (cached).

    Args:
        address: the client's IP address as the peer gives it (see
            :func:`forwarded_client`), ``None`` on a UNIX socket.
        authority: the request's authority.
        scheme: the request's scheme.
    """
    key = (address, authority, scheme)
    block = _blocks.get(key)
    if block is not None:
        return block
    # (Its zone, if any, is left out only when a block is made: the cache is keyed
    # by the address as given, so a request finding its block makes no call.)
    client = None if address is None else address.partition("%")[0]
    lines = []
    if client is not None:
        lines.append(b"X-Forwarded-For: " + client.encode("ascii") + b"\r\n")
    lines.append(b"X-Forwarded-Proto: " + scheme.encode("ascii") + b"\r\n")
    if authority:
        lines.append(b"X-Forwarded-Host: " + authority + b"\r\n")
    lines.append(b"Forwarded: " + forwarded_element(client, authority, scheme) + b"\r\n")
    block = b"".join(lines)
    if len(_blocks) >= _BLOCK_CACHE_SIZE:
        _blocks.clear()
    _blocks[key] = block
    return block


#: The lengths of the hop-by-hop names.
_HOP_LENGTHS = frozenset(len(name) for name in HOP_BY_HOP)

#: The ``Connection`` values most responses carry, which name no field that is not
#: hop-by-hop already: nothing more to drop, no need to split them.
_HOP_BY_HOP_CONNECTION = frozenset(
    spelling for name in (b"keep-alive", b"close") for spelling in (name, name.title())
)


class HiddenFields:
    """The upstream response fields a proxy mount does not pass on, hop-by-hop aside.

    nginx's ``proxy_hide_header``.

    Args:
        names: the lower-case names.
        watched: lower-case names the caller wants to learn are present (hidden or
            not), from :func:`response_fields`' ``seen``: a proxy mount's redirect
            and rate fields, so that it looks for them only in a response that has
            them.
    """

    __slots__ = ("lengths", "names", "watched")

    def __init__(self, names: Iterable[bytes], watched: Iterable[bytes] = ()) -> None:
        self.names = frozenset(names)
        self.watched = frozenset(watched)
        # The lengths worth lower-casing a name for: these and the hop-by-hop ones.
        self.lengths = _HOP_LENGTHS | {len(name) for name in self.names | self.watched}


#: Nothing hidden but the hop-by-hop fields.
NOTHING_HIDDEN = HiddenFields(())

#: What nginx does not pass from an upstream by default, and neither does a proxy
#: mount: the server's own Date and Server go out instead (so an upstream's
#: "Server: gunicorn/20.1" does not reach clients), and X-Pad (a workaround of old
#: Apache). nginx's X-Accel-* are passed on, for a proxy further in front.
DEFAULT_HIDDEN = (b"date", b"server", b"x-pad")


def response_fields(
    headers: list[tuple[bytes, bytes]],
    status: int = 0,
    hidden: HiddenFields = NOTHING_HIDDEN,
    seen: set[bytes] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The upstream response's fields to pass to the client (see the module docstring).

    ``Upgrade`` stays in a ``426``, which must name the protocols to upgrade to
    (RFC 9110 15.5.22); elsewhere it is hop-by-hop. The ``hidden`` ones are left out.
    The names of ``hidden.watched`` found (lower-case) are added to ``seen``.
    """
    kept: list[tuple[bytes, bytes]] = []
    append = kept.append
    options: frozenset[bytes] | None = None
    lengths = hidden.lengths
    watched = hidden.watched
    for field in headers:
        name = field[0]
        # Only names of a length looked for are lower-cased and looked up.
        if len(name) in lengths:
            lower = name.lower()
            if lower in HOP_BY_HOP:
                if lower == b"connection" and field[1] not in _HOP_BY_HOP_CONNECTION:
                    found = connection_options(field[1])
                    options = found if options is None else options | found
                if lower != b"upgrade" or status != 426:
                    continue
            else:
                if seen is not None and lower in watched:
                    seen.add(lower)
                if lower in hidden.names:
                    continue
        append(field)
    if options is not None:
        named = options - HOP_BY_HOP
        if named:
            kept = [(name, value) for name, value in kept if name.lower() not in named]
    return kept


class RepeatedFields:
    """The response fields a proxy mount passed on last, for the next response to reuse.

    Once the fields a mount hides are gone (the upstream's ``Date`` and ``Server``),
    an upstream answers request after request with the same fields: the same type
    and length of a page, the same cache fields. Handed the same
    :class:`~twistwsgi.http.request.PreparedHeaders` each time, the server's protocol
    serialises and checks them once (its ``wire`` cache) rather than per response.
    Fields become a ``PreparedHeaders`` only when the next response repeats them, so
    responses whose fields keep changing (a length, a cookie) cost one comparison of
    two lists each, usually decided at their first field. And when the upstream's
    own fields and status are those of the last response too (its ``Date`` changes
    once a second), :meth:`relayed` gives the fields without
    :func:`response_fields` going through them again. Reactor thread only.
    """

    __slots__ = ("_answer", "_last", "_status")

    def __init__(self) -> None:
        self._last: list[tuple[bytes, bytes]] = []
        # The upstream's fields and status _last was made from by response_fields
        # alone, if it was.
        self._answer: list[tuple[bytes, bytes]] | None = None
        self._status = 0

    def relayed(
        self, answer: list[tuple[bytes, bytes]], status: int
    ) -> list[tuple[bytes, bytes]] | None:
        """The fields passed on last, if made from the same ``answer`` and ``status``.

        Only those :meth:`reuse` was told were made from their answer by
        :func:`response_fields` alone; ``None`` otherwise. Not to be changed.
        """
        if status != self._status or answer != self._answer:
            return None
        last = self._last
        if type(last) is not PreparedHeaders:
            last = self._last = PreparedHeaders(last)
        return last

    def reuse(
        self,
        fields: list[tuple[bytes, bytes]],
        answer: list[tuple[bytes, bytes]] | None = None,
        status: int = 0,
    ) -> list[tuple[bytes, bytes]]:
        """``fields``, or an equal ``PreparedHeaders`` to send in their place.

        Neither is to be changed once passed on (``PreparedHeaders``' rule): they
        are the response's fields, and may be the next one's.

        Args:
            fields: the fields to pass on.
            answer: the upstream's fields that :func:`response_fields` alone made
                ``fields`` from, with ``status`` (for :meth:`relayed`); ``None``
                when something else changed or chose them.
            status: the answer's status.
        """
        self._answer = answer
        self._status = status
        last = self._last
        if fields != last:
            self._last = fields
            return fields
        if type(last) is not PreparedHeaders:
            last = self._last = PreparedHeaders(fields)
        return last
