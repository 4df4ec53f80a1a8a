r"""Access-log line templates in nginx's ``log_format`` language (pure logic).

A template is text with ``$name`` (or ``${name}``) variables, as nginx writes them
(read by :mod:`twistwsgi.templates`, as every setting's ``$`` references are)::

    $remote_addr - - [$time_local] "$request" $status $body_bytes_sent $request_time

:data:`VARIABLES` lists the names known here, with nginx's meaning; ``$http_NAME`` is
any request header field (``$http_x_request_id``: ``X-Request-ID``), ``$cookie_NAME``
a cookie's value and ``$arg_NAME`` a query argument's, as nginx's. A name not
known is refused when the template is compiled, with the list of known ones, so a
typo is a start-up error rather than a column of dashes. A value that is not there
(a header field the request lacks) is written ``-``, as nginx does; an empty one
(``Referer:`` with nothing after it) stays empty.

Values are escaped as nginx escapes them: by default quotes, backslashes and bytes
outside printable ASCII become ``\xHH`` (a client cannot forge lines); with
``escape="json"`` (nginx's ``escape=json``) they are JSON string contents, so a
template such as ``{"status":$status,"uri":"$request_uri"}`` writes one JSON object
per line (a value not there is then empty rather than ``-``, as nginx writes it;
text in UTF-8 is written as ``\uXXXX`` escapes of its characters);
``escape="none"`` writes them as they are.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Protocol

from twistwsgi.access import client_address
from twistwsgi.forwarding import TrustedProxies, added_forwarded_for
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import merge_slashes, remove_dot_segments
from twistwsgi.templates import Reference, read_template

__all__ = [
    "ESCAPES",
    "REQUEST_VARIABLES",
    "VARIABLES",
    "LogFormat",
    "RequestTemplate",
    "escape",
    "log_time",
    "logged_status",
    "request_line",
    "request_uri",
    "uses_upstream_variables",
]


class _Request(Protocol):
    method: bytes
    target: bytes
    version: bytes
    peer: tuple[str, int] | None
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...


class LoggedResponse(Protocol):
    """What a template reads from an ended exchange or a refusal."""

    @property
    def request(self) -> _Request:
        """The request facts."""

    status: int
    body_sent: int
    started: float

    @property
    def client_closed(self) -> bool:
        """Whether the client closed the connection before the exchange ended."""


#: The variables a template may use (besides ``$http_NAME``), with what each writes.
VARIABLES: dict[str, str] = {
    "remote_addr": "the client's address (unix: on a UNIX socket)",
    "client_addr": "the client as trusted_proxies resolves it (what allow and deny"
    " match): behind a trusted proxy, the address it reports; else $remote_addr",
    "remote_port": "the client's port",
    "remote_user": "the user a mount's auth_basic let through, else -",
    "time_local": "the time the response ended, in the combined format (UTC)",
    "time_iso8601": "the same in ISO 8601 (UTC)",
    "msec": "the same in seconds since the epoch, with milliseconds",
    "request": "the request line (as far as it was read, for a refused request)",
    "request_method": "the method",
    "request_uri": "the request-target as sent, query included (of the absolute form,"
    " http://host/path, the part from the path on, as nginx's)",
    "uri": "the path, percent-decoded, with dot-segments removed and runs of slashes"
    " made one (as routing reads it)",
    "args": "the query, as sent, without the ?",
    "is_args": "? when the request-target has a query, else empty",
    "server_protocol": "HTTP/1.1 or HTTP/1.0",
    "scheme": "http or https",
    "host": "the host name of the request, lower case, without the port",
    "status": "the response status (499: the client left first; 444: dropped)",
    "body_bytes_sent": "body bytes sent to the client",
    "request_time": "seconds from the request's first byte to the response's end, with"
    " milliseconds",
    "upstream_addr": "the upstreams a proxy mount tried (host:port or unix:/path), joined"
    " with ', '",
    "upstream_status": "their response statuses (502 or 504 for one that failed first)",
    "upstream_response_time": "seconds from giving each the request to the end of its"
    " response, with milliseconds",
    "ssl_client_verify": "on a listener with tls_verify_client: SUCCESS, NONE (no"
    " certificate) or FAILED:reason",
    "ssl_client_s_dn": "the subject of the client's certificate (RFC 4514)",
    "ssl_client_i_dn": "the issuer of the client's certificate (RFC 4514)",
    "ssl_client_serial": "the serial number of the client's certificate (hexadecimal)",
    "ssl_client_fingerprint": "the SHA-1 fingerprint of the client's certificate",
    "ssl_client_escaped_cert": "the client's certificate in PEM, URL-encoded",
    "request_id": "32 random hexadecimal digits naming the request (the same value in"
    " proxy_set_header)",
}

#: The variables a request template may use (proxy_set_header): those known when
#: the request arrives, before any response.
REQUEST_VARIABLES = (
    "remote_addr",
    "client_addr",
    "remote_port",
    "remote_user",
    "request_method",
    "request_uri",
    "uri",
    "args",
    "is_args",
    "server_protocol",
    "scheme",
    "host",
    "ssl_client_verify",
    "ssl_client_s_dn",
    "ssl_client_i_dn",
    "ssl_client_serial",
    "ssl_client_fingerprint",
    "ssl_client_escaped_cert",
    "request_id",
    "proxy_add_x_forwarded_for",
)

#: How values are escaped: nginx's default, its escape=json, and none.
ESCAPES = ("default", "json", "none")

_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')
_JSON_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: A variable's value for a response and the time it ended; None when not there.
Value = Callable[[LoggedResponse, float], "bytes | str | None"]


def escape(value: bytes) -> str:
    r"""Escape ``value`` for a log line as nginx does (``\xHH`` for unsafe bytes)."""
    if not _UNSAFE.search(value):
        return value.decode("ascii")
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value).decode("ascii")


def _json_escape(value: bytes) -> str:
    r"""Escape ``value`` as the contents of a JSON string, in ASCII.

    UTF-8 (what clients send outside ASCII, almost always) is read as the text it
    is: a JSON reader gets ``café`` back, written ``caf\u00e9``. Bytes that are not
    UTF-8 are taken one character each (Latin-1), so the line stays valid JSON.
    """
    if not _JSON_UNSAFE.search(value):
        return value.decode("ascii")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    return json.dumps(text)[1:-1]


def _no_escape(value: bytes) -> str:
    """``value`` as it came: UTF-8 read as the text it is, other bytes as Latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


_ESCAPERS: dict[str, Callable[[bytes], str]] = {
    "default": escape,
    "json": _json_escape,
    "none": _no_escape,
}


def log_time(seconds: float) -> str:
    """Format ``seconds`` as ``10/Oct/2000:13:55:36 +0000`` (always UTC)."""
    tm = time.gmtime(seconds)
    return (
        f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000"
    )


def request_line(request: _Request) -> bytes:
    """The request line, or what was read of it for a refused request (``b""``: none).

    nginx logs the raw bytes read of the line, or ``-`` when no byte of one was read
    (``ngx_http_variable_request_line``: the variable is "not found"). The protocol
    keeps what llhttp parsed, not raw bytes, so a line that was not a request line
    at all (one that does not start with a method token, a TLS handshake on a plain
    port) has nothing here; a method the server does not know (501) has its token.
    """
    if request.version:
        return b"%s %s HTTP/%s" % (request.method, request.target, request.version)
    if not request.method or not request.target:
        return request.method
    return request.method + b" " + request.target


def _remote_user(response: LoggedResponse) -> bytes | None:
    """The user Basic authentication let through (escaped like any request value)."""
    user = getattr(response, "remote_user", None)
    return None if user is None else user.encode("utf-8")


def _remote_addr(response: LoggedResponse, now: float) -> str:
    peer = response.request.peer
    # A client on a UNIX socket has no address: nginx's $remote_addr is "unix:" then.
    return peer[0] if peer else "unix:"


def _client_addr(proxies: TrustedProxies | None) -> Value:
    """``$client_addr``: the client as the mount's rules see it.

    nginx's ``$remote_addr`` with its realip module. A request template's view
    brings the proxies of its mount; a log line has ``proxies``, the server's.
    """

    def value(response: LoggedResponse, now: float) -> str:
        own = response.proxies if isinstance(response, _RequestView) else proxies
        request = response.request
        peer = request.peer
        # A refused request (a PartialRequest, whatever of its head was read) is
        # written with the connection's address, as nginx's realip runs only for a
        # request it goes on with.
        if own is not None and isinstance(request, RequestHead):
            client = client_address(request, own)
        else:
            client = peer[0] if peer else None
        return "unix:" if client is None else client

    return value


def _remote_port(response: LoggedResponse, now: float) -> str | None:
    peer = response.request.peer
    return str(peer[1]) if peer else None


def logged_status(response: LoggedResponse) -> int:
    """The status to log: the response's, or one of nginx's when none was started.

    The field still holds three digits then, as log parsers expect: nginx's 499
    (NGX_HTTP_CLIENT_CLOSED_REQUEST, ngx_http_request.h) when the client closed the
    connection first; when the server dropped it (the graceful timeout, a handler's
    abort), nginx's 444, its code for closing "without any response"
    (NGX_HTTP_CLOSE). nginx itself logs 000 for a request cut off at
    worker_shutdown_timeout (ngx_http_terminate_request(r, 0) leaves the status 0,
    which $status prints as "%03ui"), but 000 is no HTTP status code at all.
    """
    return response.status or (499 if response.client_closed else 444)


def _status(response: LoggedResponse, now: float) -> str:
    return str(logged_status(response))


def _host(response: LoggedResponse, now: float) -> bytes | None:
    request = response.request
    authority: bytes | None = getattr(request, "authority", None) or request.header(b"host")
    if not authority:
        return None
    if authority.startswith(b"["):  # an IPv6 literal keeps its brackets
        return authority.partition(b"]")[0].lower() + b"]"
    return authority.partition(b":")[0].lower()


def _iso8601(response: LoggedResponse, now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))


def _protocol(response: LoggedResponse, now: float) -> bytes | None:
    version = response.request.version
    return b"HTTP/" + version if version else None


def _note(name: str) -> Value:
    """A value the handler left for the log (``None`` when it left none)."""

    def value(response: LoggedResponse, now: float) -> str | None:
        notes = getattr(response, "log_notes", None)
        return None if notes is None else notes.get(name)

    return value


def _client_certificate(attribute: str) -> Value:
    """A fact of the client's certificate (see twistwsgi.client_certificates)."""

    def value(response: LoggedResponse, now: float) -> str | None:
        certificate = getattr(response.request, "client_certificate", None)
        if certificate is None:
            return None
        return getattr(certificate, attribute) or None

    return value


def _escaped_certificate(response: LoggedResponse, now: float) -> str | None:
    certificate = getattr(response.request, "client_certificate", None)
    if certificate is None or not certificate.pem:
        return None
    # nginx's $ssl_client_escaped_cert: the PEM with every reserved byte %-encoded.
    return urllib.parse.quote(certificate.pem, safe="")


#: The start of an absolute-form request-target: a scheme and "://" (RFC 3986 3.1).
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://")


def request_uri(request: _Request) -> bytes | None:
    """Nginx's ``$request_uri``: the path and query as sent.

    For the absolute form (``GET http://a.test/x?y``, RFC 9112 3.2.2) that is the
    part from the path on, as nginx's ``unparsed_uri``: the scheme and authority are
    not part of it (a redirect to ``https://example.com$request_uri`` stays one URL).
    A request a host's ``rewrite`` line changed has it as the client sent it.
    """
    target = request.target
    if target.startswith(b"/") or not target or target == b"*":
        # (A rewritten request keeps the client's target: as sent.)
        return target or None
    # The absolute form is read from the path and query, which a rewrite changed.
    request = getattr(request, "original", request)
    path = getattr(request, "path", None)
    if path is None:
        # A refused head: only its target was read. From the path on, if it has one.
        absolute = _ABSOLUTE_FORM.match(target)
        if absolute is None:
            return target
        slash = target.find(b"/", absolute.end())
        return target[slash:] if slash >= 0 else b"/"
    query = getattr(request, "query", b"")
    return (path or b"/") + (b"?" + query if query else b"")


def _uri(request: _Request) -> bytes | None:
    """Nginx's ``$uri``: the path as routing matched it; not there for a refused head."""
    decoded = getattr(request, "decoded_path", None)
    if not decoded:
        return None
    normal = remove_dot_segments(decoded)
    return None if normal is None else merge_slashes(normal)


_VALUES: dict[str, Value] = {
    "remote_addr": _remote_addr,
    "client_addr": _client_addr(None),  # (a request template's view brings its own)
    "remote_port": _remote_port,
    "remote_user": lambda response, now: _remote_user(response),
    "time_local": lambda response, now: log_time(now),
    "time_iso8601": _iso8601,
    "msec": lambda response, now: f"{now:.3f}",
    "request": lambda response, now: request_line(response.request) or None,
    "request_method": lambda response, now: response.request.method or None,
    "request_uri": lambda response, now: request_uri(response.request),
    "uri": lambda response, now: _uri(response.request),
    "args": lambda response, now: getattr(response.request, "query", None) or None,
    "is_args": lambda response, now: b"?" if getattr(response.request, "query", None) else b"",
    "server_protocol": _protocol,
    "scheme": lambda response, now: getattr(response.request, "scheme", None),
    "host": _host,
    "status": _status,
    "body_bytes_sent": lambda response, now: str(response.body_sent),
    "request_time": lambda response, now: f"{max(0.0, now - response.started):.3f}",
    "upstream_addr": _note("upstream_addr"),
    "upstream_status": _note("upstream_status"),
    "upstream_response_time": _note("upstream_response_time"),
    "ssl_client_verify": _client_certificate("verify"),
    "ssl_client_s_dn": _client_certificate("subject"),
    "ssl_client_i_dn": _client_certificate("issuer"),
    "ssl_client_serial": _client_certificate("serial"),
    "ssl_client_fingerprint": _client_certificate("fingerprint"),
    "ssl_client_escaped_cert": _escaped_certificate,
    "request_id": lambda response, now: getattr(response.request, "request_id", None),
}
assert _VALUES.keys() == VARIABLES.keys()


def _header_value(name: str) -> Value:
    """``$http_NAME``: every line of a request field, joined as nginx 1.23+ joins them.

    ``, `` between list values (RFC 9110 5.3), ``; `` between Cookie lines (RFC
    6265 5.4): the lines a front proxy added are not lost (in a log line, or in a
    field proxy_set_header passes on).
    """
    field = name.replace("_", "-").lower().encode("ascii")
    separator = b"; " if field == b"cookie" else b", "

    def value(response: LoggedResponse, now: float) -> bytes | None:
        lines = [v for n, v in response.request.headers if n.lower() == field]
        return separator.join(lines) if lines else None

    return value


def _cookie_value(name: str) -> Value:
    """``$cookie_NAME``: the value of the first cookie of that name (nginx's).

    Names are matched without case, as nginx matches them (a variable's name is read
    without case here); the value is as the client sent it, quotes included.
    """
    wanted = name.lower().encode("ascii")
    cookies = _header_value("cookie")  # every Cookie line, joined with "; "

    def value(response: LoggedResponse, now: float) -> bytes | None:
        line = cookies(response, now)
        if not isinstance(line, bytes):
            return None
        # RFC 6265 4.2.1: pairs separated by ";" (and a space, which some clients
        # leave out); nginx also ends a pair at ",", which no cookie holds (RFC 6265
        # 4.1.1), where an intermediary joined two lines so.
        for pair in line.replace(b",", b";").split(b";"):
            key, equals, found = pair.partition(b"=")
            if equals and key.strip().lower() == wanted:
                return found.strip()
        return None

    return value


def _argument_value(name: str) -> Value:
    """``$arg_NAME``: the first query argument of that name, as sent (nginx's).

    Still percent-encoded, as nginx's; names are matched without case, as nginx
    matches them. An argument without ``=`` has no value.
    """
    wanted = name.lower().encode("ascii")

    def value(response: LoggedResponse, now: float) -> bytes | None:
        query: bytes | None = getattr(response.request, "query", None)
        if not query:
            return None
        for pair in query.split(b"&"):
            key, equals, found = pair.partition(b"=")
            if equals and key.lower() == wanted:
                return found
        return None

    return value


#: The variables named by a prefix and what follows it, and what makes their values.
_PREFIXED: dict[str, Callable[[str], Value]] = {
    "cookie_": _cookie_value,
    "arg_": _argument_value,
}


def uses_upstream_variables(template: str | None) -> bool:
    """Whether ``template`` writes any ``$upstream_`` variable (a proxy then notes them)."""
    if template is None:
        return False
    return any(
        isinstance(token, Reference) and str(token.key).lower().startswith("upstream_")
        for token in read_template(template, strict=False)
    )


def _compile(
    template: str,
    known: tuple[str, ...],
    field_value: Callable[[str], Value],
    where: str = "",
    proxies: TrustedProxies | None = None,
) -> list[tuple[str, Value | None]]:
    """``template`` as (literal text, the variable after it or None) pairs, in order.

    Args:
        template: the text with ``$name`` or ``${name}`` variables.
        known: the variable names allowed (besides ``$http_NAME``, ``$cookie_NAME``
            and ``$arg_NAME``).
        field_value: makes the value of ``$http_NAME`` from NAME.
        where: said after "unknown variable $x" (" here": not in this template).
        proxies: the trusted proxies ``$client_addr`` believes (a log line's).

    Raises:
        ValueError: naming an unknown variable, or a ``${`` not closed.
    """
    parts: list[tuple[str, Value | None]] = []
    text = ""
    for token in read_template(template):
        if isinstance(token, str):
            text += token
            continue
        name = str(token.key).lower()
        prefix = name.partition("_")[0] + "_"
        rest = name[len(prefix) :]
        if prefix == "http_" and rest:
            value = field_value(rest)
        elif prefix in _PREFIXED and rest:
            value = _PREFIXED[prefix](rest)
        elif name == "client_addr" and proxies is not None:
            value = _client_addr(proxies)  # a log line's, with the server's proxies
        elif name in known:
            value = _VALUES.get(name) or _REQUEST_ONLY[name]
        elif name.isdigit():
            # nginx users write $1 after a location ~ REGEX: say where it is offered.
            raise ValueError(
                f"unknown variable ${name}{where}: the captures of a regular-expression"
                " mount path ($1 to $9 and its named groups) are offered to its static,"
                " proxy and return settings only (a host's rewrite has its own)"
            )
        else:
            raise ValueError(
                f"unknown variable ${name}{where} (known: $http_NAME, $cookie_NAME,"
                " $arg_NAME, " + ", ".join("$" + other for other in known) + ")"
            )
        parts.append((text, value))
        text = ""
    parts.append((text, None))
    return parts


class LogFormat:
    """A compiled template: :meth:`format` writes one line (without the newline).

    Args:
        template: the line, with ``$name`` or ``${name}`` variables.
        escape: ``"default"``, ``"json"`` or ``"none"`` (see the module).
        trusted_proxies: the server's, whose reports ``$client_addr`` believes.

    Raises:
        ValueError: an unknown variable or escape, naming it.
    """

    def __init__(
        self,
        template: str,
        escape: str = "default",
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        if escape not in _ESCAPERS:
            raise ValueError(f"unknown escape {escape!r} (expected one of {', '.join(ESCAPES)})")
        self.template = template
        self.escape = escape
        self._parts = _compile(template, tuple(VARIABLES), _header_value, proxies=trusted_proxies)
        self._escaper = _ESCAPERS[escape]
        # nginx writes a value that is not there as "-", and with escape=json as
        # nothing ("-" inside a JSON string would read as a value).
        self._missing = "" if escape == "json" else "-"

    def format(self, response: LoggedResponse, now: float) -> str:
        """The line for ``response``, which ended at ``now`` (clock seconds)."""
        escaper = self._escaper
        pieces: list[str] = []
        for text, variable in self._parts:
            pieces.append(text)
            if variable is None:
                continue
            value = variable(response, now)
            if value is None:
                pieces.append(self._missing)
            elif isinstance(value, str):
                # Text from the configuration (a UNIX socket's path) as its bytes.
                pieces.append(escaper(value.encode("utf-8", "surrogateescape")))
            else:
                pieces.append(escaper(value))
        return "".join(pieces)


class _RequestView:
    """A request seen as a log template reads a response (no response yet).

    ``proxies``: the trusted proxies, whose forwarding fields count.
    """

    __slots__ = ("proxies", "remote_user", "request")

    def __init__(
        self, request: _Request, remote_user: str | None, proxies: TrustedProxies | None
    ) -> None:
        self.request = request
        self.remote_user = remote_user
        self.proxies = proxies

    @property
    def trusted(self) -> bool:
        """Whether the client is a trusted proxy (asked only by the values that care)."""
        proxies = self.proxies
        return proxies is not None and proxies.trusts_peer(self.request.peer)


def _proxy_add_x_forwarded_for(view: _RequestView, now: float) -> bytes | None:
    """Nginx's ``$proxy_add_x_forwarded_for``, as the proxy sends X-Forwarded-For.

    A client's lines are kept only from a trusted proxy (nginx keeps anyone's,
    which lets a client write the addresses an upstream believes).
    """
    return added_forwarded_for(view.request, trusted=view.trusted)  # type: ignore[arg-type]


#: The values of the variables only request templates have.
_REQUEST_ONLY: dict[str, Value] = {
    "proxy_add_x_forwarded_for": _proxy_add_x_forwarded_for,  # type: ignore[dict-item]
}


#: Bytes a header field value may not hold (RFC 9110 5.5): controls other than tab.
_NOT_IN_FIELD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Bytes a URI may not hold (RFC 3986 2: neither reserved nor unreserved), and a "%"
#: that starts no percent-encoding (2.1).
_NOT_IN_URL = re.compile(rb"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]|%(?![0-9A-Fa-f]{2})")

#: How a request template's value is made safe where it goes: a pattern of the bytes
#: to replace and their replacement (None: as it is).
_TEMPLATE_ESCAPES: dict[
    str, tuple[re.Pattern[bytes], Callable[[re.Match[bytes]], bytes]] | None
] = {
    "field": (_NOT_IN_FIELD, lambda match: b"\\x%02X" % match.group()[0]),
    "url": (_NOT_IN_URL, lambda match: b"%%%02X" % match.group()[0]),
    "none": None,
}


class RequestTemplate:
    r"""A value made from a request, in the same language (proxy_set_header, return).

    Only :data:`REQUEST_VARIABLES` and ``$http_NAME``: what is known before a
    response. A value that is not there is empty (nginx's too). What the value may
    hold depends on where it goes (``escape``):

    - ``"field"``, a header field value: a byte a field value may not hold (RFC
      9110 5.5: a control character, from a certificate's name say) becomes
      ``\xHH``, so no value can end the field line or start another.
    - ``"url"``, a URL in a field (``Location``): every byte a URI may not hold (RFC
      3986 2: controls, space, non-ASCII, ``"<>\^`{|}``) is percent-encoded, so a
      decoded ``%0d%0a`` in ``$uri`` stays ``%0D%0A`` (nginx lets it split a
      ``Location`` field) and UTF-8 text becomes a URL's spelling of it.
    - ``"none"``, a body: as it is.

    Args:
        template: the text with ``$name`` or ``${name}`` variables.
        escape: ``"field"``, ``"url"`` or ``"none"``.

    Raises:
        ValueError: naming a variable that is unknown or not known before a response.
    """

    def __init__(self, template: str, *, escape: str = "field") -> None:
        if escape not in _TEMPLATE_ESCAPES:
            raise ValueError(f"unknown escape {escape!r}")
        self.template = template
        self._escape = _TEMPLATE_ESCAPES[escape]
        parts = _compile(template, REQUEST_VARIABLES, _header_value, " here")
        # The text as UTF-8, as nginx sends its configuration's bytes (and as the
        # values of variables are): encoded once, here.
        self._parts = [(text.encode("utf-8"), value) for text, value in parts]

    @property
    def constant(self) -> bool:
        """Whether the template has no variable: the same value for every request."""
        return all(value is None for _, value in self._parts)

    def render(
        self,
        request: _Request,
        remote_user: str | None = None,
        *,
        proxies: TrustedProxies | None = None,
    ) -> bytes:
        """The value for ``request``.

        Args:
            request: the request.
            remote_user: the user auth_basic let through, if any.
            proxies: the trusted proxies (trusted_proxies), whose reports
                ``$client_addr`` and ``$proxy_add_x_forwarded_for`` believe
                (``None``: no one's).
        """
        view = _RequestView(request, remote_user, proxies)
        pieces: list[bytes] = []
        for text, variable in self._parts:
            pieces.append(text)
            if variable is None:
                continue
            value = variable(view, 0.0)  # type: ignore[arg-type]
            if isinstance(value, str):
                pieces.append(value.encode("utf-8", "surrogateescape"))
            elif value is not None:
                pieces.append(value)
        joined = b"".join(pieces)
        escape = self._escape
        if escape is not None and escape[0].search(joined):
            joined = escape[0].sub(escape[1], joined)
        return joined
