"""HTTP/1.1 message rules that llhttp leaves to the server, as pure functions.

llhttp (through ``httptools``) already refuses most malformed syntax: bad tokens in
field names, control characters in values, obs-fold, bare CR/LF line endings,
Content-Length with Transfer-Encoding, duplicate Content-Length, signed, hex or
overflowing lengths and chunk sizes. What HTTP semantics add on top is decided here:
``Host`` rules, request-target forms, transfer codings, ``Expect``, forbidden trailer
fields, ``Connection`` options and the percent-decoding of the path. Nothing in this
module imports Twisted; the protocol calls these functions and turns a
:class:`RequestError` into a response on the wire.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any

__all__ = [
    "CONTROL_CHARACTERS",
    "FORBIDDEN_TRAILERS",
    "FORWARDING_FIELDS",
    "HOP_BY_HOP",
    "NOT_SIMPLE_FIELDS",
    "SIMPLE_FIELD",
    "SIMPLE_HEAD",
    "TCHAR_BYTES",
    "RequestError",
    "TargetForm",
    "classify_target",
    "connection_options",
    "forwarded_proto",
    "is_valid_host",
    "names_another_protocol",
    "reason_phrase",
    "split_target",
    "transfer_coding_is_chunked",
    "unknown_method_status",
    "unquote_path",
]


#: The control characters a field value or a reason phrase may not hold: all but HTAB
#: (RFC 9110 5.5, RFC 9112 4). A regular-expression character class, for str or bytes.
CONTROL_CHARACTERS = r"[\x00-\x08\x0a-\x1f\x7f]"

#: One or more tchar: a token (RFC 9110 5.6.2), such as a field name. A regular
#: expression, for str or bytes.
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"


@dataclass(frozen=True, slots=True)
class RequestError(Exception):
    """A request the server refuses, with the status to answer it with.

    Attributes:
        status: the 4xx/5xx status code sent to the client.
        detail: a short, client-safe sentence; it becomes the response body and
            the log line.
    """

    status: int
    detail: str

    def __str__(self) -> str:
        return f"{self.status} {self.detail}"


# RFC 9110 7.6.1: hop-by-hop fields a server never forwards and a WSGI application
# must not set (PEP 3333, "Other HTTP Features"). Lower-case.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_SCHEMES = {"http": "http", "https": "https"}


def forwarded_proto(x_forwarded_proto: str | None, forwarded: str | None) -> str | None:
    """The scheme a proxy in front says the client used, from its fields' values.

    ``X-Forwarded-Proto`` first, then ``Forwarded``'s ``proto`` (RFC 7239 5.4); the
    last value of either, the one the trusted proxy wrote: a proxy that appends puts
    its own after what the client sent, and only the proxy is vouched for (RFC 7239
    8.1). Anything but http or https is ignored. Repeated field lines are given
    joined with commas, as a WSGI environ holds them.
    """
    if x_forwarded_proto is not None:
        return _SCHEMES.get(x_forwarded_proto.rsplit(",", 1)[-1].strip().lower())
    if forwarded is None:
        return None
    for pair in forwarded.rsplit(",", 1)[-1].split(";"):
        name, _, value = pair.partition("=")
        if name.strip().lower() == "proto":
            return _SCHEMES.get(value.strip().strip('"').lower())
    return None


# Fields a proxy in front sets to say who the client was and how it connected (RFC
# 7239 Forwarded, and the de facto X-Forwarded-* and X-Real-IP). Believed only from
# trusted proxies: from anyone else they are a client's claim. Lower-case.
FORWARDING_FIELDS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-proto",
        b"x-real-ip",
    }
)

# RFC 9110 6.5.1: fields a sender must not put in a trailer section because they
# control framing, routing, authentication, request modifiers or content handling.
# A request that carries one of them in its trailers is refused rather than having
# the field silently dropped, since a peer that sent it may act on it.
FORBIDDEN_TRAILERS = frozenset(
    {
        b"transfer-encoding",
        b"content-length",
        b"host",
        b"trailer",
        b"te",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"expect",
        b"max-forwards",
        b"cache-control",
        b"pragma",
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        b"authorization",
        b"proxy-authorization",
        b"cookie",
        b"set-cookie",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"www-authenticate",
        b"proxy-authenticate",
        b"age",
        b"expires",
        b"date",
        b"location",
        b"retry-after",
        b"vary",
        b"warning",
    }
)


def reason_phrase(status: int) -> bytes:
    """Return the standard reason phrase for ``status`` (RFC 9110 15), or ``b""``."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


#: The ``Connection`` values nearly every message that has one carries, split once:
#: an upstream's ``keep-alive`` on each response (nginx sends it), a client's
#: ``close`` or HTTP/1.0 ``keep-alive``, a WebSocket ``Upgrade``.
_COMMON_CONNECTION_VALUES = {
    value: frozenset({value.lower()})
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
}


def connection_options(value: bytes) -> frozenset[bytes]:
    """Split a ``Connection`` field value into lower-case option tokens (RFC 9110 7.6.1)."""
    common = _COMMON_CONNECTION_VALUES.get(value)
    if common is not None:
        return common
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def transfer_coding_is_chunked(values: list[bytes]) -> bool:
    """Decide the framing a request's ``Transfer-Encoding`` field lines describe.

    Args:
        values: every ``Transfer-Encoding`` field value of the request, in order.

    Returns:
        ``True`` when the codings end in a single ``chunked`` and nothing else is
        applied (the only coding this server decodes).

    Raises:
        RequestError: 400 when ``chunked`` is not the final coding or appears twice
            (RFC 9112 6.3, item 4: the length cannot be determined), or when the list
            has an empty element; 501 when ``chunked`` is final but another coding is
            applied too (RFC 9112 6.1: a coding the server does not understand).
    """
    codings = [coding.strip().lower() for value in values for coding in value.split(b",")]
    if b"" in codings:
        # RFC 9110 5.6.1 has recipients skip empty list elements, but ", chunked"
        # is a known obfuscation of the framing field: a server in front that reads
        # the value whole, or stops at the empty element, frames the body otherwise
        # (RFC 9112 11.2). nginx answers it 501; refused with the other malformed
        # values here.
        raise RequestError(400, "Empty element in Transfer-Encoding")
    if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise RequestError(400, "Transfer-Encoding must end with a single chunked coding")
    if len(codings) != 1:
        raise RequestError(501, "Transfer codings other than chunked are not supported")
    return True


#: Every tchar (RFC 9110 5.6.2), as the argument of ``bytes.lstrip``.
TCHAR_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def unknown_method_status(line: bytes, limit: int) -> int | None:
    """The status that answers a request line whose method llhttp does not know.

    ``line`` is what arrived of the line, from its first byte (after any empty
    lines); ``limit`` is the request-line limit. The answer rests on ``line`` alone,
    never on where llhttp stopped in it (at the first byte that cannot continue a
    method it knows, so at a place that depends on how the reads were split):

    * 501 for a method token (RFC 9112 3: ``method = token``) then SP: a well-formed
      method the server does not implement (RFC 9110 9.1, 15.6.2). Methods are
      case-sensitive, so ``get`` is one too;
    * 400 when a byte that is neither a tchar nor SP comes first (a control byte, a
      CR or LF, a TLS handshake on a plain port), or SP does with no token before it;
    * 414 once the token is longer than ``limit``, as a long request-target is;
    * ``None`` while every byte is a tchar and within the limit: more must come.
    """
    token = len(line) - len(line.lstrip(TCHAR_BYTES))
    if token > limit:
        return 414
    if token == len(line):
        return None
    return 501 if token and line[token] == 0x20 else 400


def names_another_protocol(message: bytes) -> bool:
    """Whether a request line llhttp took names a protocol that is not HTTP.

    RFC 9112 2.3: ``HTTP-version = HTTP-name "/" DIGIT "." DIGIT`` with ``HTTP-name =
    %s"HTTP"`` (case-sensitive). llhttp also takes ``RTSP/`` (after a method of its
    RTSP list, GET and OPTIONS among them) and ``ICE/`` (after SOURCE) there, and
    reports only the digits, so ``GET / RTSP/1.0`` would pass for HTTP/1.0.

    ``message`` holds the request from its first byte (perhaps after empty lines, which
    llhttp skips) at least to the first digit of its version; bytes after the line
    are not looked at. llhttp took the line, so its parts are separated by spaces
    and no part holds whitespace: the third is the protocol. A line of two parts (an
    HTTP/0.9 simple request, which names no protocol) names none.
    """
    parts = message.lstrip(b"\r\n").partition(b"\n")[0].split()
    return len(parts) > 2 and not parts[2].startswith(b"HTTP/")


# RFC 9112 7.1 / 7.1.1: chunk-size [ chunk-ext ] CRLF, where
#   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-name = token; chunk-ext-val = token / quoted-string
# with token and quoted-string from RFC 9110 5.6.2 and 5.6.4 (qdtext and quoted-pair
# exclude CR, LF and the other controls but HTAB).
_TCHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_BWS = rb"[ \t]*"
_CHUNK_LINE_RE = re.compile(
    rb"[0-9A-Fa-f]+(?:"
    + _BWS
    + rb";"
    + _BWS
    + _TCHARS
    + rb"(?:"
    + _BWS
    + rb"="
    + _BWS
    + rb"(?:"
    + _TCHARS
    + rb"|"
    + _QUOTED_STRING
    + rb"))?)*\r\n"
)


def is_valid_chunk_line(line: bytes) -> bool:
    """Return whether ``line`` is a chunk-size line, CRLF included (RFC 9112 7.1.1).

    llhttp (httptools 0.9) refuses most malformed lines itself, but takes an empty
    extension value (``3;a=``), an empty name (``3;=b``) and a DQUOTE inside a token
    value (``3;a=b"c"``), none of which the grammar allows; gunicorn and waitress
    refuse the first, and a server in front may frame the line otherwise.
    """
    return _CHUNK_LINE_RE.fullmatch(line) is not None


# The simple head: the requests the protocol reads without llhttp. A GET or HEAD in
# origin-form (RFC 9112 3.2.1) with well-formed percent-escapes, HTTP/1.1 or 1.0,
# single spaces, and field lines (RFC 9112 5) of a tchar name, a colon and a value of
# visible ASCII with spaces and tabs inside it, then the empty line. The path holds
# "/" and pchar (RFC 3986 3.3), a "%" only as pct-encoded (the path is decoded); the
# query those, "?" and any "%" (it is passed on as received, not decoded).
# Everything else (other methods and forms, obs-text, a malformed escape in the path,
# any irregular spacing) goes through llhttp, which reads all of this the same way: a
# property test feeds both and compares what they make of it.
#
# The path: a run of pchar, then the escapes, each followed by a run: the path's groups say
# whether it has an escape to decode, and the target's split comes from the match.
_PCHAR_OR_SLASH = rb"A-Za-z0-9\-._~!$&'()*+,;=:@/"  # (pchar but pct-encoded, and "/")
_PATH_RUN = rb"[" + _PCHAR_OR_SLASH + rb"]*+"
_SIMPLE_QUERY = rb"[" + _PCHAR_OR_SLASH + rb"?%]*"
# The value: runs of visible bytes with runs of SP or HTAB between them, or nothing,
# so that the OWS around it (RFC 9110 5.6.3) is outside the group. Each field line
# matches one way only, and the field lines are taken possessively: a head cut short
# fails at once rather than after retrying every field line (a value that could begin
# with its OWS once made a 1 KiB slice of 100 field lines take 2**100 steps).
_SIMPLE_VALUE = rb"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*+)?+"
_SIMPLE_FIELD_LINE = _TCHARS + rb":[ \t]*" + _SIMPLE_VALUE + rb"[ \t]*\r\n"

#: A whole simple head, from the method to the empty line. Its groups: the method, the
#: target, the path up to its first escape, the rest of the path (``b""`` if none),
#: the query (``None`` without a ``?``), the minor version digit and the field lines.
SIMPLE_HEAD = re.compile(
    rb"(GET|HEAD) ((/"
    + _PATH_RUN
    + rb")((?:%[0-9A-Fa-f]{2}"
    + _PATH_RUN
    + rb")*+)(?:\?("
    + _SIMPLE_QUERY
    + rb"))?) HTTP/1\.([01])\r\n((?:"
    + _SIMPLE_FIELD_LINE
    + rb")*+)\r\n"
)

#: One field line of a simple head's field lines: the name and the value without OWS.
SIMPLE_FIELD = re.compile(rb"(" + _TCHARS + rb"):[ \t]*(" + _SIMPLE_VALUE + rb")[ \t]*\r\n")

#: Fields whose presence sends a head through llhttp: they mean a body, an
#: expectation or another protocol, which the short way does not read.
NOT_SIMPLE_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))


# RFC 3986 3.2.2 host (reg-name, IPv4address, IP-literal) and 3.2.3 port, as they may
# appear in a Host field (RFC 9110 7.2). reg-name allows sub-delims and pct-encoded;
# anything else (spaces, "/", "@", "\", controls) is a malformed Host and a 400.
_REG_NAME = rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
_IP_LITERAL = rb"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
_HOST_RE = re.compile(rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")(?::[0-9]*)?")


def is_valid_host(value: bytes) -> bool:
    """Return whether ``value`` is a syntactically valid ``Host`` field value.

    An empty value is (RFC 9112 3.2: for a target URI without an authority); a port
    with no host before it (``:8080``) is not: an ``http`` URI with an empty host is
    invalid (RFC 9110 4.2.1), and there would be no name to serve.
    """
    return not value.startswith(b":") and _HOST_RE.fullmatch(value) is not None


class TargetForm(Enum):
    """The four request-target forms of RFC 9112 3.2."""

    ORIGIN = "origin"
    ABSOLUTE = "absolute"
    AUTHORITY = "authority"
    ASTERISK = "asterisk"


_ABSOLUTE_RE = re.compile(rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)")


def classify_target(method: bytes, target: bytes) -> TargetForm:
    """Classify ``target`` and check that its form fits ``method`` (RFC 9112 3.2).

    Raises:
        RequestError: 400 for a form the method does not allow (``*`` other than
            with OPTIONS, authority-form other than with CONNECT, CONNECT with
            anything else), for a fragment (not part of any request-target form),
            and for an absolute-form that is not ``http`` or ``https``.
    """
    if b"#" in target:
        raise RequestError(400, "A request-target cannot contain a fragment")
    if method == b"CONNECT":
        # authority-form is host ":" port (RFC 9112 3.2.3), nothing else.
        host, sep, port = target.rpartition(b":")
        if not sep or not host or not port.isdigit() or not is_valid_host(host):
            raise RequestError(400, "CONNECT requires an authority-form request-target")
        return TargetForm.AUTHORITY
    if target.startswith(b"/"):
        return TargetForm.ORIGIN
    if target == b"*":
        if method != b"OPTIONS":
            raise RequestError(400, "The asterisk-form request-target is only for OPTIONS")
        return TargetForm.ASTERISK
    match = _ABSOLUTE_RE.match(target)
    if match is None:
        raise RequestError(400, "Malformed request-target")
    if match["scheme"].lower() not in (b"http", b"https"):
        raise RequestError(400, "Only http and https absolute-form targets are accepted")
    if not match["authority"] or not is_valid_host(match["authority"]):
        raise RequestError(400, "Malformed authority in the request-target")
    return TargetForm.ABSOLUTE


def absolute_authority(target: bytes) -> bytes | None:
    """The authority of an http or https absolute-form ``target``, else ``None``.

    Read as :func:`split_target` reads it, without the checks of
    :func:`classify_target` (for a request refused before they ran).
    """
    match = _ABSOLUTE_RE.match(target)
    if match is None or match["scheme"].lower() not in (b"http", b"https"):
        return None
    return match["authority"]


def split_target(form: TargetForm, target: bytes) -> tuple[bytes, bytes, bytes | None]:
    """Split a classified target into ``(path, query, authority)``.

    The path stays percent-encoded. ``authority`` is only set for absolute-form,
    where RFC 9112 3.2.2 says it replaces the ``Host`` field.
    """
    if form is TargetForm.ORIGIN:
        path, _, query = target.partition(b"?")
        return path, query, None
    if form is TargetForm.ABSOLUTE:
        match = _ABSOLUTE_RE.match(target)
        assert match is not None  # classify_target accepted it
        rest = target[match.end() :]
        path, _, query = rest.partition(b"?")
        return path or b"/", query, match["authority"]
    # asterisk-form and authority-form have no path.
    return b"", b"", None


_PERCENT_RE = re.compile(rb"%([0-9A-Fa-f]{2})?")


def unquote_path(path: bytes) -> bytes:
    """Percent-decode a request path into raw bytes (RFC 3986 2.1).

    PEP 3333 hands ``PATH_INFO`` to the application decoded. A ``%`` that does not
    start a valid escape, or an escape that decodes to NUL, makes the request
    ambiguous for every later layer (routing, file lookup), so it is refused.

    Raises:
        RequestError: 400 for a malformed escape or an encoded NUL.
    """
    if b"%" not in path:
        return path

    def decode(match: re.Match[bytes]) -> bytes:
        digits = match.group(1)
        if digits is None:
            raise RequestError(400, "Malformed percent-encoding in the request path")
        byte = int(digits, 16)
        if byte == 0:
            raise RequestError(400, "Encoded NUL in the request path")
        return bytes((byte,))

    return _PERCENT_RE.sub(decode, path)


def claimed_names(name: str) -> tuple[str, ...]:
    """The normalised names a configured host name answers for, as nginx reads it.

    ``.example.org`` is nginx's short form of two names, ``example.org`` and
    ``*.example.org``; any other name is itself.
    """
    name = normalize_name(name)
    if name.startswith(".") and len(name) > 1:
        return (name[1:], "*" + name)
    return (name,)


def _regex_package(what: str, chosen_by: str) -> Any:
    """The ``regex`` package, or a ValueError saying how to install it.

    Args:
        what: what needs it (``regular-expression host names``).
        chosen_by: what a client picks that a pattern runs on (``Host``).
    """
    try:
        return importlib.import_module("regex")
    except ImportError:
        raise ValueError(
            f"{what} need the regex package (pip install 'twistwsgi[regex]'): Python's"
            f" re cannot stop a match, and a client's {chosen_by} could make one run for"
            " minutes"
        ) from None


def compile_host_pattern(pattern: str) -> Any:
    """Compile a regular-expression host name (without its ``~``) with ``regex``.

    PCRE's syntax, as nginx's ``server_name ~...`` is written (``(?<name>...)``),
    and a match that can be stopped (see ``routing.HOST_PATTERN_TIME_LIMIT``).

    Raises:
        ValueError: the package is missing, or the pattern does not compile.
    """
    regex = _regex_package("regular-expression host names", "Host")
    if not pattern:
        raise ValueError("'~' alone: a regular expression follows the ~")
    if any(char.isspace() for char in pattern):
        raise ValueError(f"~{pattern}: a space in a host name pattern (no Host has one)")
    # As nginx compiles a server_name pattern: without case if it holds a capital
    # letter (ngx_http_core_server_name), else as written; names are lower-cased.
    caseless = any("A" <= char <= "Z" for char in pattern)
    try:
        return regex.compile(pattern, regex.IGNORECASE if caseless else 0)
    except regex.error as error:
        raise ValueError(f"~{pattern}: not a regular expression ({error})") from None


def compile_location_pattern(pattern: str, *, caseless: bool) -> Any:
    """Compile a regular-expression mount path (``~``, ``~*``) with ``regex``.

    The pattern is compiled for bytes, as nginx's PCRE matches the bytes of the
    normalised URI: a path that is not UTF-8 is matched like any other, a character
    written outside ASCII matches its UTF-8 bytes, and ``caseless`` (``~*``) folds
    the case of ASCII letters only. The match can be stopped (see
    ``routing.LOCATION_PATTERN_TIME_LIMIT``).

    Raises:
        ValueError: the package is missing, or the pattern does not compile.
    """
    regex = _regex_package("regular-expression mount paths (~, ~*)", "path")
    try:
        return regex.compile(pattern.encode("utf-8"), regex.IGNORECASE if caseless else 0)
    except (regex.error, ValueError, OverflowError, RecursionError) as error:
        # (Besides regex.error, the package's own limits: a repeat count too large,
        # nesting too deep.)
        raise ValueError(f"not a regular expression ({error})") from None


def is_plain_name(name: str) -> bool:
    """Whether a configured host name is one name: no wildcard, no regular expression."""
    return not name.startswith(("*", ".", "~")) and not name.endswith("*")


def ipv6_literal(text: str) -> str | None:
    """``[address]`` in the compressed lower-case form of :mod:`ipaddress`, or ``None``.

    Compressing makes every spelling of one address (``[0:0::1]``, ``[::0001]``) the
    same name. A zone identifier (``[fe80::1%25eth0]``, RFC 6874) is refused: it names
    an interface of the client's machine, which is nothing this server can match.
    """
    if not (text.startswith("[") and text.endswith("]")) or "%" in text:
        return None
    try:
        return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
    except ValueError:
        return None


def normalize_name(name: str) -> str:
    r"""Normalise a configured host name: lower case, no trailing dot.

    Wildcards (``*.example.org``, ``mail.*``, ``.example.org``) keep their form;
    IPv6 literals take the one a request's is normalised to (``[0:0::1]`` is
    ``[::1]``); a regular expression (``~^www\d+\.example\.org$``) is kept as
    written, since case matters in one (``\D`` is not ``\d``). Configuration
    validation and routing both tell names apart by it.
    """
    name = name.strip()
    if name.startswith("~"):
        return name
    name = name.lower()
    if name.startswith("["):
        # Configuration validation refuses a literal that is not an address.
        return ipv6_literal(name) or name
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    return name
