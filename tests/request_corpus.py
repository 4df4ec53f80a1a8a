"""Raw HTTP/1.1 requests that the protocol tests replay, with the answer each must get.

``INVALID`` holds requests twistwsgi must refuse: each case names the status of the
refusal (sent with ``Connection: close``) and, for pipelined cases, how many valid
requests precede the bad one (each of those is answered ``200`` first). ``VALID``
holds requests twistwsgi must accept: each case lists, per request in ``raw``, a
subset of the WSGI environ the application sees (PEP 3333 keys with ``str`` values,
``None`` meaning "absent") plus ``"body"``, the bytes read from ``wsgi.input`` after
chunked decoding.

How the statuses are decided:

* 400 for malformed syntax and for every framing ambiguity that enables request
  smuggling (RFC 9112 2.2, 3, 5, 6.3, 7.1; RFC 9110 5.5, 7.2, 8.6; RFC 9112 11.2):
  bare LF or bare CR line endings, whitespace before a colon, obs-fold, field names
  that are not tokens, CTL/NUL/DEL in values, invalid or duplicate Content-Length,
  Content-Length with Transfer-Encoding, a Transfer-Encoding that does not end in
  exactly one ``chunked``, Transfer-Encoding on HTTP/1.0, bad chunk sizes, missing or
  repeated or malformed Host, a request-target that is none of the RFC 9112 3.2
  forms (or one the method does not allow), bad percent-escapes, and trailer fields
  RFC 9110 6.5.1 forbids; a request line that does not start with a token and SP
  (a control byte, a TLS handshake sent to a plain port), and one whose protocol is
  not ``HTTP`` (``RTSP/1.0``, ``ICE/1.0``, which llhttp takes; RFC 9112 2.3).
* 413/414/431 for the server's limits (RFC 9110 15.5.14, 15.5.15; RFC 6585 5):
  request-target or a method token over 8192 bytes, a field line (name + ": " +
  value) over 8192 bytes, more than 100 fields or a header section over 32768 bytes,
  a Content-Length over 1048576 (decided from the header alone) or a chunked body
  that grows past it.
* 417 for an ``Expect`` other than ``100-continue`` (RFC 9110 10.1.1, 15.5.18).
* 501 for what is well-formed but not implemented: a transfer coding before
  ``chunked`` (RFC 9112 6.1), CONNECT tunnels (RFC 9110 9.3.6, 15.6.2), and a
  method token the server does not know, lower-case ones included (RFC 9110 9.1).
* 505 for a well-formed version other than HTTP/1.0 and HTTP/1.1, and for an
  HTTP/0.9 simple request with no version at all (RFC 9110 15.6.6; RFC 9112 2.3).

Environ rules the ``VALID`` expectations follow (PEP 3333): ``PATH_INFO`` is the
percent-decoded path as a latin-1 ``str``; ``QUERY_STRING`` stays raw; fields become
``HTTP_`` + upper-cased name with ``-`` turned to ``_``; Content-Length and
Content-Type become ``CONTENT_LENGTH``/``CONTENT_TYPE``; repeated fields are joined
with ``,``; fields whose names contain ``_`` are dropped (like nginx and gunicorn, so
``X_Foo`` can never impersonate ``X-Foo``); trailer fields are not shown to the app.

Every case was fed to h11 and to raw httptools while writing it; a comment marks the
cases where one of them disagrees with the decision recorded here. The cases were
written for twistwsgi, not copied from another project's corpus.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Invalid:
    name: str  # unique kebab-case slug
    raw: bytes  # every byte the client sends
    status: int  # the status twistwsgi must answer with
    why: str  # one line, citing the RFC section
    answered_before: int = 0  # valid pipelined requests first (each answered 200)


@dataclass(frozen=True)
class Valid:
    name: str
    raw: bytes
    expect: tuple[dict[str, object], ...]  # one dict per request in raw
    why: str = ""


# Building blocks, kept tiny so that every raw request stays readable as written.
_HOST = b"Host: example.com\r\n"
_GET = b"GET / HTTP/1.1\r\n" + _HOST + b"\r\n"  # a plain valid request, for pipelining
_CHUNKED_POST = b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked\r\n"

LIMIT_TARGET = 8192  # request-target bytes (and method bytes: the request-line limit)
LIMIT_FIELD_LINE = 8192  # name + ": " + value
LIMIT_FIELDS = 100  # field lines in the header section
LIMIT_HEADER_SECTION = 32768  # bytes of the header section
LIMIT_BODY = 1048576  # Content-Length, or decoded chunked body


def _fields(count: int, prefix: bytes = b"X-Field-") -> bytes:
    """Return ``count`` distinct small header field lines."""
    return b"".join(prefix + str(i).encode() + b": v\r\n" for i in range(count))


def _long_line(total: int) -> bytes:
    """Return one ``X-Long`` field line whose name + ": " + value is ``total`` bytes."""
    head = b"X-Long: "
    return head + b"a" * (total - len(head)) + b"\r\n"


INVALID: tuple[Invalid, ...] = (
    # ------------------------------------------------------------------
    # Request smuggling: Content-Length vs Transfer-Encoding
    # ------------------------------------------------------------------
    Invalid(
        "cl-then-te",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1/6.3: Content-Length with Transfer-Encoding is a smuggling vector; refused",
    ),
    Invalid(
        "te-then-cl",
        _CHUNKED_POST + b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1/6.3: Transfer-Encoding with Content-Length, in either order, is refused",
    ),
    Invalid(
        "te-htab-value-with-cl",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3\r\n"
        b"Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1: HTAB is OWS, so this is still chunked + Content-Length; refused",
    ),
    Invalid(
        "te-vertical-tab",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9110 5.5: VT is a CTL, not OWS; a TE value parsers trim differently",
    ),
    Invalid(
        "te-chunked-then-other-line",
        _CHUNKED_POST + b"Transfer-Encoding: x\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.3 item 4: lines combine to 'chunked, x'; chunked is not final",
    ),
    Invalid(
        "te-quoted-chunked",
        b"POST / HTTP/1.1\r\n" + _HOST + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
        400,
        "RFC 9112 6.3 item 4: '\"chunked\"' is not the chunked coding (not a token)",
    ),
    Invalid(
        "te-chunk-truncated",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunk\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.3 item 4: 'chunk' is not chunked, so no final chunked coding",
    ),
    Invalid(
        "te-xchunked",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.3 item 4: substring matches on 'chunked' must not count",
    ),
    Invalid(
        "te-chunked-not-final",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.3 item 4: chunked must be the final coding of a request",
    ),
    Invalid(
        "te-chunked-twice-lines",
        _CHUNKED_POST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1: chunked MUST NOT be applied more than once (two field lines)",
    ),
    Invalid(
        "te-chunked-twice-list",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1: chunked MUST NOT be applied more than once (one list)",
    ),
    Invalid(
        "te-identity",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.3 item 4: 'identity' (removed in RFC 7230) leaves no final chunked",
    ),
    Invalid(
        "te-empty-value",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding:\r\n\r\n",
        400,
        "RFC 9112 6.3 item 4: an empty Transfer-Encoding names no final chunked coding",
    ),
    Invalid(
        "te-gzip-then-chunked",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "RFC 9112 6.1: chunked is final but gzip is a coding the server does not implement",
    ),
    Invalid(
        "te-unknown-then-chunked-lines",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: x-custom\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
        "RFC 9112 6.1: lines combine to 'x-custom, chunked'; unknown coding is 501",
    ),
    Invalid(
        "te-space-before-colon",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 5.1: a server MUST reject whitespace between a field name and the colon",
    ),
    Invalid(
        "te-on-http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing; refused",
    ),
    Invalid(
        "te-obs-fold-value",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 5.2: obs-fold in Transfer-Encoding is rejected with 400",
    ),
    # ------------------------------------------------------------------
    # Content-Length
    # ------------------------------------------------------------------
    Invalid(
        "cl-duplicate-identical",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "RFC 9110 8.6: a repeated Content-Length MAY be rejected; twistwsgi always does",
    ),
    Invalid(
        "cl-duplicate-different",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "RFC 9112 6.3 item 5: conflicting Content-Length values leave the length unknown",
    ),
    Invalid(
        "cl-list",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3, 3\r\n\r\nabc",
        400,
        "RFC 9110 8.6: Content-Length = 1*DIGIT; a list is refused, not collapsed",
    ),
    Invalid(
        "cl-negative",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: -1\r\n\r\n",
        400,
        "RFC 9112 6.3 item 5: Content-Length = 1*DIGIT; a sign makes it invalid",
    ),
    Invalid(
        "cl-plus-sign",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: +3\r\n\r\nabc",
        400,
        "RFC 9112 6.3 item 5: '+3' is not 1*DIGIT (int() would accept it)",
    ),
    Invalid(
        "cl-hex",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 0x3\r\n\r\nabc",
        400,
        "RFC 9112 6.3 item 5: Content-Length is decimal digits only",
    ),
    Invalid(
        "cl-empty",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length:\r\n\r\n",
        400,
        "RFC 9112 6.3 item 5: an empty Content-Length is invalid",
    ),
    Invalid(
        "cl-non-digit",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: abc\r\n\r\n",
        400,
        "RFC 9112 6.3 item 5: a non-numeric Content-Length is invalid",
    ),
    Invalid(
        "cl-decimal-point",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3.0\r\n\r\nabc",
        400,
        "RFC 9112 6.3 item 5: '3.0' is not 1*DIGIT",
    ),
    Invalid(
        "cl-inner-space",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 1 2\r\n\r\nabcdefghijkl",
        400,
        "RFC 9112 6.3 item 5: '1 2' is not 1*DIGIT (neither 1, 2 nor 12)",
    ),
    Invalid(
        "cl-overflow",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 99999999999999999999999999\r\n\r\n",
        400,
        "RFC 9112 6.3 item 5: a length that overflows 64 bits is invalid, not merely large",
    ),
    Invalid(
        "cl-space-before-colon",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length : 3\r\n\r\nabc",
        400,
        "RFC 9112 5.1: whitespace between field name and colon MUST be rejected",
    ),
    Invalid(
        "cl-over-limit",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 1048577\r\n\r\n",
        413,
        "RFC 9110 15.5.14: Content-Length 1048577 > 1048576, refused before the body",
    ),
    # ------------------------------------------------------------------
    # Chunked framing
    # ------------------------------------------------------------------
    Invalid(
        "chunk-size-negative",
        _CHUNKED_POST + b"\r\n-1\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: chunk-size = 1*HEXDIG; a sign is not allowed",
    ),
    Invalid(
        "chunk-size-0x-prefix",
        _CHUNKED_POST + b"\r\n0x3\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: chunk-size = 1*HEXDIG; a '0x' prefix is not allowed",
    ),
    Invalid(
        "chunk-size-leading-space",
        _CHUNKED_POST + b"\r\n 3\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: chunk-size = 1*HEXDIG; no leading whitespace",
    ),
    Invalid(
        "chunk-size-trailing-space",
        _CHUNKED_POST + b"\r\n3 \r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1: BWS is only allowed before ';' of an extension, not before CRLF",
    ),
    Invalid(
        "chunk-size-overflow",
        _CHUNKED_POST + b"\r\n10000000000000003\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: a chunk size that overflows 64 bits (truncating it gives 3)",
    ),
    Invalid(
        "chunk-size-non-hex",
        _CHUNKED_POST + b"\r\ng\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: 'g' is not HEXDIG",
    ),
    Invalid(
        "chunk-size-empty",
        _CHUNKED_POST + b"\r\n\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: chunk-size needs at least one HEXDIG",
    ),
    Invalid(
        "chunk-size-line-bare-lf",
        _CHUNKED_POST + b"\r\n3\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1/2.2: the chunk-size line ends in CRLF; a bare LF is rejected",
    ),
    Invalid(
        "chunk-data-missing-crlf",
        _CHUNKED_POST + b"\r\n3\r\nabcX\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1: chunk-data is followed by CRLF; extra data is rejected",
    ),
    Invalid(
        "chunk-data-bare-lf",
        _CHUNKED_POST + b"\r\n3\r\nabc\n0\r\n\r\n",
        400,
        "RFC 9112 7.1/2.2: the CRLF after chunk-data cannot be a bare LF",
    ),
    Invalid(
        "chunk-extension-bare-lf",
        _CHUNKED_POST + b"\r\n3;ext\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1/2.2: a bare LF ending a chunk extension line is rejected",
    ),
    Invalid(
        "chunk-extension-ctl",
        _CHUNKED_POST + b"\r\n3;a=\x01\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1: chunk-ext-val = token / quoted-string; a CTL is neither",
    ),
    Invalid(
        "chunked-body-over-limit",
        _CHUNKED_POST + b"\r\n100001\r\n" + b"x" * (LIMIT_BODY + 1) + b"\r\n0\r\n\r\n",
        413,
        "RFC 9110 15.5.14: a chunked body of 1048577 bytes exceeds the 1048576 limit",
    ),
    # ------------------------------------------------------------------
    # Trailer section (RFC 9110 6.5.1 forbids these names)
    # ------------------------------------------------------------------
    Invalid(
        "trailer-content-length",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
        400,
        "RFC 9110 6.5.1: framing fields (Content-Length) are forbidden in trailers",
    ),
    Invalid(
        "trailer-transfer-encoding",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "RFC 9110 6.5.1: framing fields (Transfer-Encoding) are forbidden in trailers",
    ),
    Invalid(
        "trailer-host",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nHost: evil.example\r\n\r\n",
        400,
        "RFC 9110 6.5.1: routing fields (Host) are forbidden in trailers",
    ),
    Invalid(
        "trailer-authorization",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nAuthorization: Basic YTpi\r\n\r\n",
        400,
        "RFC 9110 6.5.1: authentication fields are forbidden in trailers",
    ),
    Invalid(
        "trailer-content-type",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nContent-Type: text/html\r\n\r\n",
        400,
        "RFC 9110 6.5.1: fields that say how to process the content are forbidden",
    ),
    Invalid(
        "trailer-if-match",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nIf-Match: *\r\n\r\n",
        400,
        "RFC 9110 6.5.1: request modifiers (conditionals) are forbidden in trailers",
    ),
    Invalid(
        "trailer-connection-mixed-case",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\ncOnNeCtIoN: close\r\n\r\n",
        400,
        "RFC 9110 6.5.1/5.1: connection control in a trailer; names are case-insensitive",
    ),
    Invalid(
        "trailer-obs-fold",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\n Content-Length: 9\r\n\r\n",
        400,
        "RFC 9112 5.2/7.1.2: obs-fold in a trailer section is rejected like in the header",
    ),
    Invalid(
        "trailer-space-before-colon",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nX-Checksum : 1\r\n\r\n",
        400,
        "RFC 9112 7.1.2/5.1: trailer field lines follow field-line syntax; no SP before ':'",
    ),
    # ------------------------------------------------------------------
    # Field names and values
    # ------------------------------------------------------------------
    Invalid(
        "field-htab-before-colon",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo\t: bar\r\n\r\n",
        400,
        "RFC 9112 5.1: no whitespace (SP or HTAB) between field name and colon",
    ),
    Invalid(
        "field-empty-name",
        b"GET / HTTP/1.1\r\n" + _HOST + b": bar\r\n\r\n",
        400,
        "RFC 9110 5.1: field-name = token, which is at least one tchar",
    ),
    Invalid(
        "field-no-colon",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo bar\r\n\r\n",
        400,
        "RFC 9112 5: field-line = field-name ':' OWS field-value OWS; the colon is required",
    ),
    Invalid(
        "field-name-space",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X Foo: bar\r\n\r\n",
        400,
        "RFC 9110 5.1/5.6.2: SP is not a tchar, so 'X Foo' is not a token",
    ),
    Invalid(
        "field-name-separator",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X(Foo): bar\r\n\r\n",
        400,
        "RFC 9110 5.6.2: '(' is a delimiter, not a tchar",
    ),
    Invalid(
        "field-name-non-ascii",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-F\xe9o: bar\r\n\r\n",
        400,
        "RFC 9110 5.6.2: bytes >= 0x80 are not tchar (obs-text is for values only)",
    ),
    Invalid(
        "field-leading-whitespace-first-line",
        b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" + _HOST + b"\r\n0\r\n\r\n",
        400,
        "RFC 9112 2.2: whitespace between start-line and first field line; rejected",
    ),
    Invalid(
        "field-obs-fold-space",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\r\n b\r\n\r\n",
        400,
        "RFC 9112 5.2: obs-fold (continuation line starting with SP) is rejected with 400",
    ),
    Invalid(
        "field-obs-fold-htab",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\r\n\tb\r\n\r\n",
        400,
        "RFC 9112 5.2: obs-fold (continuation line starting with HTAB) is rejected",
    ),
    Invalid(
        "field-value-nul",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\x00b\r\n\r\n",
        400,
        "RFC 9110 5.5: NUL in a field value is invalid and dangerous",
    ),
    Invalid(
        "field-value-ctl",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\x1bb\r\n\r\n",
        400,
        "RFC 9110 5.5: field-vchar excludes CTLs such as ESC",
    ),
    Invalid(
        "field-value-del",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\x7fb\r\n\r\n",
        400,
        "RFC 9110 5.5: DEL (0x7F) is a CTL, not a VCHAR",
    ),
    Invalid(
        "field-value-bare-cr",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\rb\r\n\r\n",
        400,
        "RFC 9112 2.2 / RFC 9110 5.5: a bare CR in a field value is invalid",
    ),
    # ------------------------------------------------------------------
    # Line endings
    # ------------------------------------------------------------------
    Invalid(
        "bare-lf-request-line",
        b"GET / HTTP/1.1\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.2: a bare LF MAY be accepted; twistwsgi rejects it (framing disagreement)",
    ),
    Invalid(
        "bare-lf-field-line",
        b"GET / HTTP/1.1\r\nHost: example.com\nX-Foo: bar\r\n\r\n",
        400,
        "RFC 9112 2.2: a field line ending in a bare LF is rejected",
    ),
    Invalid(
        "bare-lf-end-of-head",
        b"GET / HTTP/1.1\r\n" + _HOST + b"\n",
        400,
        "RFC 9112 2.2: the empty line ending the header section must be CRLF",
    ),
    Invalid(
        "bare-cr-request-line",
        b"GET / HTTP/1.1\r" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.2: a bare CR outside content is invalid",
    ),
    # llhttp skips any CR or LF before a request line; the protocol refuses a CR there
    # that no LF follows (h11 refuses any byte before the request line).
    Invalid(
        "bare-cr-before-request-line",
        b"\r" + _GET,
        400,
        "RFC 9112 2.2: an empty line may precede the request line; a bare CR is no line end",
    ),
    Invalid(
        "bare-cr-after-empty-line",
        b"\r\n\r" + _GET,
        400,
        "RFC 9112 2.2: a bare CR after an ignored empty line is still a bare CR",
    ),
    Invalid(
        "cr-cr-lf-before-request-line",
        b"\r\r\n" + _GET,
        400,
        "RFC 9112 2.2: the first CR is followed by a CR, not an LF",
    ),
    Invalid(
        "pipelined-bare-cr-between-requests",
        _GET + b"\r" + _GET,
        400,
        "RFC 9112 2.2: a bare CR before the second request line; the first is answered",
        answered_before=1,
    ),
    Invalid(
        "pipelined-bare-cr-after-content-length-body",
        b"POST / HTTP/1.1\r\n"
        + _HOST
        + b"Content-Length: 5\r\n\r\nhel\rl\rGET / HTTP/1.1\r\n"
        + _HOST
        + b"\r\n",
        400,
        "RFC 9112 2.2: bare CRs in a body are content; the one after it is not",
        answered_before=1,
    ),
    Invalid(
        "pipelined-bare-cr-after-chunked-body",
        _CHUNKED_POST + b"\r\n3\r\na\rb\r\n0\r\n\r\n\n\r" + _GET,
        400,
        "RFC 9112 2.2: after a chunked body and an empty line, a bare CR",
        answered_before=1,
    ),
    Invalid(
        "content-length-over-20-digits",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 000000000000000000005\r\n\r\nhello",
        400,
        "RFC 9110 8.6 allows the padding, but no length needs 21 digits (h11 refuses them too)",
    ),
    # h11 accepts these (it skips empty elements, as RFC 9110 5.6.1 says); nginx 501.
    Invalid(
        "te-empty-list-element",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: , chunked\r\n\r\n3\r\nabc\r\n"
        b"0\r\n\r\n",
        400,
        "RFC 9112 11.2: an empty element in the framing field is a known obfuscation",
    ),
    Invalid(
        "te-empty-field-line-beside-chunked",
        _CHUNKED_POST + b"Transfer-Encoding: \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 11.2: an empty Transfer-Encoding line next to chunked is refused",
    ),
    # ------------------------------------------------------------------
    # Limits
    # ------------------------------------------------------------------
    Invalid(
        "target-too-long",
        b"GET /" + b"a" * LIMIT_TARGET + b" HTTP/1.1\r\n" + _HOST + b"\r\n",
        414,
        "RFC 9110 15.5.15: a request-target of 8193 bytes exceeds the 8192 limit",
    ),
    Invalid(
        "field-line-too-long",
        b"GET / HTTP/1.1\r\n" + _HOST + _long_line(LIMIT_FIELD_LINE + 1) + b"\r\n",
        431,
        "RFC 6585 5: a field line of 8193 bytes exceeds the 8192 limit",
    ),
    Invalid(
        "too-many-fields",
        b"GET / HTTP/1.1\r\n" + _HOST + _fields(LIMIT_FIELDS) + b"\r\n",
        431,
        "RFC 6585 5: 101 field lines exceed the limit of 100",
    ),
    Invalid(
        "header-section-too-large",
        b"GET / HTTP/1.1\r\n"
        + _HOST
        + b"".join(b"X-Big-" + str(i).encode() + b": " + b"b" * 7000 + b"\r\n" for i in range(5))
        + b"\r\n",
        431,
        "RFC 6585 5: five 7 KB fields make a header section over 32768 bytes",
    ),
    # ------------------------------------------------------------------
    # Request line and method
    # ------------------------------------------------------------------
    Invalid(
        "request-line-htab-separator",
        b"GET\t/\tHTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3: the separators are SP; whitespace-word parsing is a MAY we decline",
    ),
    Invalid(
        "request-line-leading-space",
        b" GET / HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3: the request-line starts with the method token",
    ),
    Invalid(
        "request-line-trailing-space",
        b"GET / HTTP/1.1 \r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3: nothing may follow HTTP-version before CRLF",
    ),
    Invalid(
        "target-space",
        b"GET /a b HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2: no whitespace is allowed in the request-target",
    ),
    Invalid(
        "target-ctl",
        b"GET /a\x01b HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2 / RFC 3986 3.3: a raw CTL is not a pchar",
    ),
    Invalid(
        "target-high-byte",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 3986 2.1: bytes >= 0x80 must be percent-encoded in the request-target",
    ),
    Invalid(
        "method-lowercase",
        b"get / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: methods are case-sensitive; 'get' is a token the server does not know",
    ),
    Invalid(
        "method-unknown",
        b"FOO / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1, 15.6.2: a method token the server does not know is 501 Not Implemented",
    ),
    Invalid(
        "method-unknown-with-tchar",
        b"FOO! / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 5.6.2: '!' is a tchar, so FOO! is a token, and an unknown method",
    ),
    Invalid(
        "method-known-then-more",
        b"M-SEARCH2 / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: M-SEARCH2 is unknown though M-SEARCH is known (llhttp stops at '2')",
    ),
    Invalid(
        "method-prefix-of-known",
        b"GE / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: GE is unknown (llhttp stops at the SP, after two bytes it took)",
    ),
    Invalid(
        "method-unknown-after-empty-lines",
        b"\r\n\nMKX / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9112 2.2: empty lines before the line are skipped; MKX is an unknown method",
    ),
    Invalid(
        "method-rtsp-with-http-version",
        b"DESCRIBE / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: llhttp knows DESCRIBE for RTSP only; it is not an HTTP method here",
    ),
    Invalid(
        "method-too-long",
        b"A" * (LIMIT_TARGET + 1) + b" / HTTP/1.1\r\n" + _HOST + b"\r\n",
        414,
        "RFC 9110 15.5.15: a method token of 8193 bytes exceeds the 8192 request-line limit",
    ),
    Invalid(
        "method-longest-token",
        b"A" * LIMIT_TARGET + b" / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: a method token of 8192 bytes is within the limit, and unknown",
    ),
    Invalid(
        "method-starts-with-control-byte",
        b"\x01GET / HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3: the request line starts with a token; a CTL is not a tchar",
    ),
    Invalid(
        "method-then-crlf",
        b"FOO\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3: SP follows the method; a line that ends after a token is no request line",
    ),
    Invalid(
        "tls-client-hello-on-plain-port",
        # A TLS 1.2 record header (handshake, version 3.1) and a ClientHello's start.
        bytes.fromhex("16030100f8010000f40303") + bytes(range(32)),
        400,
        "RFC 9112 3: a TLS handshake sent to a plain-HTTP port starts with no token",
    ),
    Invalid(
        "pipelined-method-unknown",
        _GET + b"FOO / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: the valid request before it is answered first, in order",
        answered_before=1,
    ),
    Invalid(
        "pipelined-method-unknown-after-body",
        b"POST / HTTP/1.1\r\n"
        + _HOST
        + b"Content-Length: 3\r\n\r\nABCPU / HTTP/1.1\r\n"
        + _HOST
        + b"\r\n",
        501,
        "RFC 9110 9.1: the line starts after the body's 3 bytes: PU, an unknown method",
        answered_before=1,
    ),
    Invalid(
        "pipelined-leading-space-after-body",
        b"POST / HTTP/1.1\r\n"
        + _HOST
        + b"Content-Length: 3\r\n\r\nABC GET / HTTP/1.1\r\n"
        + _HOST
        + b"\r\n",
        400,
        "RFC 9112 3: the line after the body's 3 bytes starts with SP, not a method",
        answered_before=1,
    ),
    Invalid(
        "pipelined-method-unknown-after-chunked-body",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\n\r\nPU / HTTP/1.1\r\n" + _HOST + b"\r\n",
        501,
        "RFC 9110 9.1: after the chunked body's end, PU is an unknown method",
        answered_before=1,
    ),
    Invalid(
        "method-invalid-char",
        b"GE@T / HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.1: method = token; '@' is not a tchar",
    ),
    # ------------------------------------------------------------------
    # HTTP version
    # ------------------------------------------------------------------
    Invalid(
        "version-0-9",
        b"GET / HTTP/0.9\r\n" + _HOST + b"\r\n",
        505,
        "RFC 9110 15.6.6: HTTP/0.9 is well-formed but not supported",
    ),
    Invalid(
        "version-1-2",
        b"GET / HTTP/1.2\r\n" + _HOST + b"\r\n",
        505,
        "RFC 9110 15.6.6: HTTP/1.2 is well-formed but not supported",
    ),
    Invalid(
        "version-2-0",
        b"GET / HTTP/2.0\r\n" + _HOST + b"\r\n",
        505,
        "RFC 9110 15.6.6: HTTP/2 is not spoken over this HTTP/1.1 framing",
    ),
    Invalid(
        "version-9-9",
        b"GET / HTTP/9.9\r\n" + _HOST + b"\r\n",
        505,
        "RFC 9110 15.6.6: any other HTTP-name '/' DIGIT '.' DIGIT is unsupported",
    ),
    Invalid(
        "version-missing-http09-simple",
        b"GET /\r\n\r\n",
        505,
        "RFC 9112 2.3 / RFC 9110 15.6.6: a versionless request line is HTTP/0.9",
    ),
    Invalid(
        "version-no-minor",
        b"GET / HTTP/1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: HTTP-version = HTTP-name '/' DIGIT '.' DIGIT",
    ),
    Invalid(
        "version-three-parts",
        b"GET / HTTP/1.1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: HTTP-version has exactly one '.'",
    ),
    Invalid(
        "version-lowercase-name",
        b"GET / http/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: HTTP-name is case-sensitive",
    ),
    Invalid(
        "version-two-digits",
        b"GET / HTTP/11\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: HTTP-version has a single DIGIT on each side of '.'",
    ),
    # llhttp takes RTSP/ and ICE/ where HTTP/ goes, and reports only the digits.
    Invalid(
        "protocol-rtsp-get",
        b"GET / RTSP/1.0\r\n" + _HOST + b"\r\n",
        400,
        'RFC 9112 2.3: HTTP-name is "HTTP"; RTSP/1.0 is not HTTP/1.0 (nginx: 400)',
    ),
    Invalid(
        "protocol-rtsp-describe",
        b"DESCRIBE / RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        400,
        "RFC 9112 2.3: an RTSP request (DESCRIBE, an RTSP method) is not HTTP at all",
    ),
    Invalid(
        "protocol-rtsp-options-asterisk",
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        400,
        "RFC 9112 2.3: OPTIONS * with RTSP/1.0 is an RTSP request, not HTTP",
    ),
    Invalid(
        "protocol-rtsp-2-0",
        b"GET / RTSP/2.0\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: RTSP/2.0 is not HTTP: 400, not the 505 of an HTTP version",
    ),
    Invalid(
        "protocol-rtsp-9-9",
        b"GET / RTSP/9.9\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: not HTTP (llhttp refuses the digits as it does HTTP/9.9's, a 505)",
    ),
    Invalid(
        "protocol-rtsp-with-a-body",
        b"POST / RTSP/1.0\r\n" + _HOST + b"Content-Length: 3\r\n\r\nabc",
        400,
        "RFC 9112 2.3: not HTTP; the body is never read as an HTTP request's",
    ),
    Invalid(
        "protocol-ice-source",
        b"SOURCE / ICE/1.0\r\nContent-Type: audio/mpeg\r\n\r\n",
        400,
        "RFC 9112 2.3: ICE/1.0 (Icecast's SOURCE) is not HTTP",
    ),
    Invalid(
        "protocol-ice-get",
        b"GET / ICE/1.0\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: not HTTP (llhttp refuses ICE/ after any method but SOURCE)",
    ),
    Invalid(
        "protocol-rtsp-after-empty-lines",
        b"\r\n\r\nGET / RTSP/1.0\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.2, 2.3: empty lines before the line are skipped; RTSP/1.0 is not HTTP",
    ),
    Invalid(
        "protocol-rtsp-extra-spaces",
        b"GET  /  RTSP/1.0\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: not HTTP, however many spaces llhttp takes between the parts",
    ),
    Invalid(
        "protocol-lowercase-name-extra-spaces",
        b"GET  /  http/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: HTTP-name is case-sensitive (llhttp refuses http/ itself)",
    ),
    Invalid(
        "pipelined-protocol-rtsp",
        _GET + b"GET / RTSP/1.0\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: the valid request before it is answered first; then not HTTP",
        answered_before=1,
    ),
    Invalid(
        "pipelined-protocol-rtsp-after-body",
        b"POST / HTTP/1.1\r\n"
        + _HOST
        + b"Content-Length: 3\r\n\r\nABCGET / RTSP/1.0\r\n"
        + _HOST
        + b"\r\n",
        400,
        "RFC 9112 2.3: the line after the body's 3 bytes names RTSP/1.0, not HTTP",
        answered_before=1,
    ),
    Invalid(
        "pipelined-protocol-rtsp-after-chunked-body",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\n\r\nGET / RTSP/1.0\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: after the chunked body's end, a line that names RTSP/1.0",
        answered_before=1,
    ),
    Invalid(
        "pipelined-protocol-rtsp-after-empty-lines",
        _GET + b"\r\n\r\nDESCRIBE / RTSP/1.0\r\n\r\n",
        400,
        "RFC 9112 2.2, 2.3: empty lines after a request, then an RTSP request",
        answered_before=1,
    ),
    Invalid(
        "pipelined-protocol-rtsp-extra-spaces",
        _GET + b"OPTIONS   *   RTSP/1.0\r\n\r\n",
        400,
        "RFC 9112 2.3: an RTSP line pipelined after a request, spaced out",
        answered_before=1,
    ),
    # ------------------------------------------------------------------
    # Host
    # ------------------------------------------------------------------
    Invalid(
        "host-missing",
        b"GET / HTTP/1.1\r\nX-Foo: bar\r\n\r\n",
        400,
        "RFC 9112 3.2: an HTTP/1.1 request without Host MUST get 400",
    ),
    Invalid(
        "host-missing-absolute-form",
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",
        400,
        "RFC 9112 3.2: Host is required in HTTP/1.1 even with an absolute-form target",
    ),
    Invalid(
        "host-duplicate",
        b"GET / HTTP/1.1\r\n" + _HOST + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2: more than one Host field line MUST get 400, even if identical",
    ),
    Invalid(
        "host-space",
        b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n",
        400,
        "RFC 9112 3.2 / RFC 3986 3.2.2: SP is not allowed in a host",
    ),
    Invalid(
        "host-slash",
        b"GET / HTTP/1.1\r\nHost: example.com/admin\r\n\r\n",
        400,
        "RFC 9112 3.2 / RFC 9110 7.2: Host = uri-host [':' port]; '/' is not allowed",
    ),
    Invalid(
        "host-userinfo",
        b"GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n",
        400,
        "RFC 9110 7.2: Host carries no userinfo; '@' makes the value invalid",
    ),
    Invalid(
        "host-backslash",
        b"GET / HTTP/1.1\r\nHost: example.com\\evil.example\r\n\r\n",
        400,
        "RFC 9112 3.2 / RFC 3986 3.2.2: '\\' is not allowed in a host",
    ),
    Invalid(
        "host-empty-brackets",
        b"GET / HTTP/1.1\r\nHost: []\r\n\r\n",
        400,
        "RFC 3986 3.2.2: an IP-literal needs an address between the brackets",
    ),
    Invalid(
        "host-bad-port",
        b"GET / HTTP/1.1\r\nHost: example.com:80x\r\n\r\n",
        400,
        "RFC 3986 3.2.3: port = *DIGIT",
    ),
    # ------------------------------------------------------------------
    # Request-target forms
    # ------------------------------------------------------------------
    Invalid(
        "target-absolute-ftp",
        b"GET ftp://example.com/file HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.2: only http/https absolute-form targets are served here",
    ),
    Invalid(
        "target-absolute-userinfo",
        b"GET http://user@evil.example/ HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9110 4.2.4: userinfo in an http(s) URI is treated as an error by recipients",
    ),
    Invalid(
        "target-absolute-empty-host",
        b"GET http:///path HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9110 4.2.1: an http URI with an empty host MUST be rejected as invalid",
    ),
    Invalid(
        "target-asterisk-with-get",
        b"GET * HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.4: the asterisk-form is only for OPTIONS",
    ),
    Invalid(
        "target-fragment",
        b"GET /page?q=1#frag HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.1 / RFC 9110 7.1: a fragment is never part of a request-target",
    ),
    Invalid(
        "target-connect-authority",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        501,
        "RFC 9110 9.3.6/15.6.2: a well-formed CONNECT, but tunnels are not implemented",
    ),
    Invalid(
        "target-connect-origin-form",
        b"CONNECT /path HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.3 / RFC 9110 9.3.6: CONNECT requires the authority-form",
    ),
    Invalid(
        "target-authority-form-with-get",
        b"GET example.com:443 HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.3: the authority-form is only for CONNECT",
    ),
    Invalid(
        "target-bare-word",
        b"GET abc HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2: 'abc' is none of origin, absolute, authority or asterisk form",
    ),
    Invalid(
        "target-relative-path",
        b"GET a/b HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.1: origin-form starts with '/'; a relative path is no form",
    ),
    # ------------------------------------------------------------------
    # Percent-encoding in the path
    # ------------------------------------------------------------------
    Invalid(
        "percent-non-hex",
        b"GET /a%zzb HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 3986 2.1: pct-encoded = '%' HEXDIG HEXDIG",
    ),
    Invalid(
        "percent-truncated",
        b"GET /a%2 HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 3986 2.1: a '%' needs two hex digits; the path ends after one",
    ),
    Invalid(
        "percent-encoded-nul",
        b"GET /file%00.txt HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 3986 7.3: a decoded NUL in PATH_INFO would truncate paths downstream",
    ),
    # ------------------------------------------------------------------
    # Expect
    # ------------------------------------------------------------------
    Invalid(
        "expect-unknown",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Expect: x-wait-for-me\r\nContent-Length: 3\r\n\r\nabc",
        417,
        "RFC 9110 10.1.1/15.5.18: an expectation other than 100-continue gets 417",
    ),
    Invalid(
        "expect-continue-plus-other",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Expect: 100-continue, x-also\r\n"
        b"Content-Length: 0\r\n\r\n",
        417,
        "RFC 9110 10.1.1: x-also is an expectation other than 100-continue (in one list)",
    ),
    # ------------------------------------------------------------------
    # Pipelining: valid requests first, then the bad one
    # ------------------------------------------------------------------
    Invalid(
        "pipelined-get-then-cl-te",
        _GET + b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1/9.3.2: the first request is answered, the CL+TE one refused",
        answered_before=1,
    ),
    Invalid(
        "pipelined-post-body-then-bare-lf",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 5\r\n\r\nhello"
        b"GET / HTTP/1.1\nHost: example.com\r\n\r\n",
        400,
        "RFC 9112 2.2/9.3.2: after a CL body, the next request line ends in bare LF",
        answered_before=1,
    ),
    Invalid(
        "pipelined-chunked-then-duplicate-cl",
        _CHUNKED_POST + b"\r\n5\r\nhello\r\n0\r\n\r\n"
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        400,
        "RFC 9110 8.6/9112 9.3.2: a chunked request, then one with a duplicate CL",
        answered_before=1,
    ),
    Invalid(
        "pipelined-two-then-bad-version",
        _GET + _GET + b"GET / HTTP/1.2\r\n" + _HOST + b"\r\n",
        505,
        "RFC 9110 15.6.6/9112 9.3.2: two answered requests, then an unsupported version",
        answered_before=2,
    ),
    Invalid(
        "pipelined-body-smuggles-bad-request",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 4\r\n\r\nabcd"
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\r\n b\r\n\r\n",
        400,
        "RFC 9112 5.2/9.3.2: the bytes after a CL body are a new request with obs-fold",
        answered_before=1,
    ),
    # ------------------------------------------------------------------
    # Beyond the classic vectors. Ideas from published request-smuggling
    # research, each written here for twistwsgi: the HTTP Garden's
    # differential fuzzing of HTTP parsers (Kaminsky et al., LangSec 2024),
    # PortSwigger's desync research (Kettle, "HTTP Desync Attacks", 2019;
    # "HTTP/1.1 must die", 2025) and the chunk-line work "Funky chunks"
    # (Weikop, 2025).
    # ------------------------------------------------------------------
    Invalid(
        "chunk-extension-quoted-crlf",
        _CHUNKED_POST + b'\r\n3;a="x\r\ny"\r\nabc\r\n0\r\n\r\n',
        400,
        "RFC 9110 5.6.4: qdtext excludes CR and LF; a parser that ends the chunk line at"
        " the first CRLF and one that skips quoted strings frame differently (Funky chunks)",
    ),
    Invalid(
        "chunk-extension-quoted-bare-lf",
        _CHUNKED_POST + b'\r\n3;a="x\ny"\r\nabc\r\n0\r\n\r\n',
        400,
        "RFC 9110 5.6.4 / RFC 9112 2.2: a bare LF is no qdtext; some parsers end the line there",
    ),
    Invalid(
        "chunk-extension-bare-cr",
        _CHUNKED_POST + b"\r\n3;a\rb\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 2.2/7.1.1: a bare CR in a chunk extension (HTTP Garden: a line end to some)",
    ),
    Invalid(
        "chunk-extension-nul",
        _CHUNKED_POST + b"\r\n3;a=\x00\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1: chunk-ext-val = token / quoted-string; NUL is neither",
    ),
    Invalid(
        "chunk-extension-empty-name",
        _CHUNKED_POST + b"\r\n3;\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1: chunk-ext-name = token, at least one tchar after ';'",
    ),
    Invalid(
        "chunk-extension-empty-value",
        _CHUNKED_POST + b"\r\n3;a=\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1: after '=', chunk-ext-val = token / quoted-string, never empty",
    ),
    Invalid(
        "chunk-extension-empty-name-before-value",
        _CHUNKED_POST + b"\r\n3;=b\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1: chunk-ext-name = token; '=b' names nothing (llhttp takes it)",
    ),
    Invalid(
        "chunk-extension-quote-in-token",
        _CHUNKED_POST + b'\r\n3;a=b"c"\r\nabc\r\n0\r\n\r\n',
        400,
        "RFC 9112 7.1.1 / RFC 9110 5.6.2: DQUOTE is no tchar, so 'b\"c\"' is neither a token"
        " nor a quoted-string (llhttp takes it)",
    ),
    Invalid(
        "pipelined-get-then-chunk-extension-empty-value",
        _GET + _CHUNKED_POST + b"\r\n3;a=\r\nabc\r\n0\r\n\r\n",
        400,
        "RFC 9112 7.1.1/9.3.2: the GET is answered; the empty extension value after it is not",
        answered_before=1,
    ),
    Invalid(
        "chunk-extension-unterminated-quote",
        _CHUNKED_POST + b'\r\n3;a="abc\r\nabc\r\n0\r\n\r\n',
        400,
        "RFC 9110 5.6.4: a quoted-string ends with DQUOTE; a parser looking for it reads on",
    ),
    Invalid(
        "chunk-extension-junk-after-quote",
        _CHUNKED_POST + b'\r\n3;a="b"c\r\nabc\r\n0\r\n\r\n',
        400,
        "RFC 9112 7.1.1: after a quoted chunk-ext-val comes ';' or CRLF, not more text",
    ),
    Invalid(
        "te-form-feed-before-value",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding:\x0cchunked\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9110 5.5: FF is a CTL, not OWS (isspace() trims it; HTTP Garden)",
    ),
    Invalid(
        "te-trailing-vertical-tab",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9110 5.5: a trailing VT is part of the value, which is then not 'chunked'",
    ),
    Invalid(
        "te-trailing-nul",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9110 5.5: NUL in a field value; a C parser stops at it and sees 'chunked'",
    ),
    Invalid(
        "te-chunked-with-parameter",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
        400,
        "RFC 9112 7: chunked defines no parameter; servers split on whether 'chunked;q=1'"
        " is chunked (HTTP Garden), so it is refused (RFC 9112 11.2)",
    ),
    Invalid(
        "field-value-vertical-tab",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\x0bb\r\n\r\n",
        400,
        "RFC 9110 5.5: VT (0x0B) is a CTL, not field-vchar",
    ),
    Invalid(
        "field-value-form-feed",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\x0cb\r\n\r\n",
        400,
        "RFC 9110 5.5: FF (0x0C) is a CTL, not field-vchar",
    ),
    Invalid(
        "cl-vertical-tab-before-value",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length:\x0b3\r\n\r\nabc",
        400,
        "RFC 9110 8.6 / 5.5: VT is not OWS; '\\x0b3' is not 1*DIGIT",
    ),
    Invalid(
        "cl-trailing-nul",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3\x00\r\n\r\nabc",
        400,
        "RFC 9110 8.6: '3\\x00' is not 1*DIGIT (a C parser would stop at the NUL)",
    ),
    Invalid(
        "get-with-cl-and-te",
        b"GET / HTTP/1.1\r\n" + _HOST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n",
        400,
        "RFC 9112 6.1: both framings on a GET, whose body some servers ignore (Kettle 2019)",
    ),
    Invalid(
        "method-trailing-tab",
        b"GET\t / HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.1: method = token; HTAB is not a tchar, and the separator is SP",
    ),
    Invalid(
        "version-trailing-tab",
        b"GET / HTTP/1.1\t\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3: CRLF follows HTTP-version directly",
    ),
    Invalid(
        "version-leading-zero",
        b"GET / HTTP/01.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 2.3: HTTP-version = HTTP-name '/' DIGIT '.' DIGIT, one digit each",
    ),
    Invalid(
        "target-absolute-userinfo-password",
        b"GET http://a:b@example.com/ HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9110 4.2.4: userinfo (with a password) in an http URI is an error",
    ),
    Invalid(
        "target-absolute-fragment",
        b"GET http://example.com/#f HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 3.2.2: absolute-form = absolute-URI, which has no fragment",
    ),
    Invalid(
        "host-ipv6-without-brackets",
        b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n",
        400,
        "RFC 3986 3.2.2: an IPv6 address in a host must be an IP-literal in brackets",
    ),
    Invalid(
        "host-two-ports",
        b"GET / HTTP/1.1\r\nHost: example.com:80:81\r\n\r\n",
        400,
        "RFC 9110 7.2: Host = uri-host [':' port]; a second ':' fits neither",
    ),
    Invalid(
        "trailer-holds-request-line",
        _CHUNKED_POST + b"\r\n0\r\nGET /smuggled HTTP/1.1\r\n" + _HOST + b"\r\n",
        400,
        "RFC 9112 7.1.2: a trailer line must be a field line; a server that skips the last"
        " chunk's CRLF would run a second request (HTTP Garden)",
    ),
    Invalid(
        "trailer-nul-value",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nX-Checksum: a\x00b\r\n\r\n",
        400,
        "RFC 9112 7.1.2 / RFC 9110 5.5: trailer values follow field-value syntax; NUL is a CTL",
    ),
    Invalid(
        "trailer-bare-lf",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\n\r\n",
        400,
        "RFC 9112 2.2/7.1.2: a trailer field line ending in a bare LF",
    ),
    Invalid(
        "trailer-value-vertical-tab",
        _CHUNKED_POST + b"\r\n3\r\nabc\r\n0\r\nX-Checksum: a\x0bb\r\n\r\n",
        400,
        "RFC 9112 7.1.2 / RFC 9110 5.5: VT is a CTL in a trailer value too",
    ),
)


def _big_section() -> bytes:
    """Four ~7 KB fields: a header section of about 28 KB, under the 32768 limit."""
    return b"".join(b"X-Big-" + str(i).encode() + b": " + b"b" * 7000 + b"\r\n" for i in range(4))


VALID: tuple[Valid, ...] = (
    Valid(
        "request-line-double-space",
        b"GET  /spaced HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"REQUEST_METHOD": "GET", "PATH_INFO": "/spaced", "body": b""},),
        "RFC 9112 3: a recipient MAY split the request-line on whitespace; llhttp accepts"
        " repeated SP after the method, and no framing depends on it (h11 refuses it)",
    ),
    # ------------------------------------------------------------------
    # Methods
    # ------------------------------------------------------------------
    Valid(
        "get-minimal",
        b"GET / HTTP/1.1\r\n" + _HOST + b"\r\n",
        (
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/",
                "QUERY_STRING": "",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "example.com",
                "body": b"",
            },
        ),
        "RFC 9112 3: the smallest valid HTTP/1.1 request",
    ),
    Valid(
        "head",
        b"HEAD /index.html HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"REQUEST_METHOD": "HEAD", "PATH_INFO": "/index.html", "body": b""},),
        "RFC 9110 9.3.2",
    ),
    Valid(
        "post-content-length",
        b"POST /submit HTTP/1.1\r\n" + _HOST + b"Content-Length: 11\r\n\r\nhello world",
        (
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/submit",
                "CONTENT_LENGTH": "11",
                "HTTP_CONTENT_LENGTH": None,
                "body": b"hello world",
            },
        ),
        "RFC 9112 6.2: Content-Length frames the body; it is CONTENT_LENGTH, not HTTP_*",
    ),
    Valid(
        "put-with-content-type",
        b"PUT /doc/1 HTTP/1.1\r\n" + _HOST + b"Content-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        (
            {
                "REQUEST_METHOD": "PUT",
                "PATH_INFO": "/doc/1",
                "CONTENT_TYPE": "application/json",
                "HTTP_CONTENT_TYPE": None,
                "CONTENT_LENGTH": "2",
                "body": b"{}",
            },
        ),
        "PEP 3333: Content-Type becomes CONTENT_TYPE without the HTTP_ prefix",
    ),
    Valid(
        "delete",
        b"DELETE /doc/1 HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"REQUEST_METHOD": "DELETE", "PATH_INFO": "/doc/1", "body": b""},),
        "RFC 9110 9.3.5",
    ),
    Valid(
        "options-path",
        b"OPTIONS /doc HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"REQUEST_METHOD": "OPTIONS", "PATH_INFO": "/doc", "body": b""},),
        "RFC 9110 9.3.7",
    ),
    Valid(
        "options-asterisk",
        b"OPTIONS * HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"REQUEST_METHOD": "OPTIONS", "body": b""},),
        "RFC 9112 3.2.4: asterisk-form for a server-wide OPTIONS",
    ),
    Valid(
        "patch",
        b"PATCH /doc/1 HTTP/1.1\r\n" + _HOST + b'Content-Length: 7\r\n\r\n{"a":1}',
        ({"REQUEST_METHOD": "PATCH", "PATH_INFO": "/doc/1", "body": b'{"a":1}'},),
        "RFC 5789",
    ),
    Valid(
        "get-with-body",
        b"GET /search HTTP/1.1\r\n" + _HOST + b"Content-Length: 4\r\n\r\nterm",
        ({"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "4", "body": b"term"},),
        "RFC 9110 9.3.1: content on GET has no semantics but framing still applies",
    ),
    # ------------------------------------------------------------------
    # Query strings and percent-decoding
    # ------------------------------------------------------------------
    Valid(
        "query-stays-raw",
        b"GET /search?a=%20&b HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/search", "QUERY_STRING": "a=%20&b", "body": b""},),
        "PEP 3333: QUERY_STRING is the raw query, never decoded",
    ),
    Valid(
        "query-empty-after-question-mark",
        b"GET /path? HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/path", "QUERY_STRING": "", "body": b""},),
        "RFC 9112 3.2.1: '?' followed by an empty query",
    ),
    Valid(
        "query-with-slash-and-question",
        b"GET /p?next=/a?b=c HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/p", "QUERY_STRING": "next=/a?b=c", "body": b""},),
        "RFC 3986 3.4: '/' and '?' are allowed inside the query; split at the first '?'",
    ),
    Valid(
        "percent-space",
        b"GET /a%20b HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/a b", "body": b""},),
        "PEP 3333 / RFC 3986 2.1: PATH_INFO is percent-decoded",
    ),
    Valid(
        "percent-utf8-as-latin1",
        b"GET /caf%C3%A9 HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/caf\xc3\xa9", "body": b""},),
        "PEP 3333: decoded bytes are handed over as a latin-1 str",
    ),
    Valid(
        "percent-encoded-slash",
        b"GET /a%2Fb HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/a/b", "body": b""},),
        "PEP 3333: %2F decodes to '/' like any other escape (as every WSGI server does)",
    ),
    Valid(
        "percent-lowercase-hex-and-percent",
        b"GET /%7euser/100%25 HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/~user/100%", "body": b""},),
        "RFC 3986 2.1: hex digits are case-insensitive; %25 decodes once to '%'",
    ),
    Valid(
        "path-sub-delims",
        b"GET /a;b=c/d:e@f!$&'()*+, HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/a;b=c/d:e@f!$&'()*+,", "body": b""},),
        "RFC 3986 3.3: pchar includes sub-delims, ':' and '@'",
    ),
    # ------------------------------------------------------------------
    # HTTP/1.0
    # ------------------------------------------------------------------
    Valid(
        "http10-no-host",
        b"GET /old HTTP/1.0\r\n\r\n",
        ({"SERVER_PROTOCOL": "HTTP/1.0", "PATH_INFO": "/old", "HTTP_HOST": None, "body": b""},),
        "RFC 9112 3.2: Host is only required for HTTP/1.1; the connection closes after",
    ),
    Valid(
        "http10-post-body",
        b"POST /form HTTP/1.0\r\nHost: example.com\r\nContent-Length: 3\r\n\r\na=1",
        ({"SERVER_PROTOCOL": "HTTP/1.0", "REQUEST_METHOD": "POST", "body": b"a=1"},),
        "RFC 9112 6.2: HTTP/1.0 bodies are framed by Content-Length",
    ),
    # h11 does not implement HTTP/1.0 keep-alive: it parses only the first request.
    Valid(
        "http10-keep-alive-pipelined",
        b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        (
            {"SERVER_PROTOCOL": "HTTP/1.0", "PATH_INFO": "/one", "body": b""},
            {"SERVER_PROTOCOL": "HTTP/1.0", "PATH_INFO": "/two", "body": b""},
        ),
        "RFC 9112 9.3 / Appendix C.2.2: an HTTP/1.0 keep-alive connection stays open",
    ),
    # ------------------------------------------------------------------
    # Bodies
    # ------------------------------------------------------------------
    Valid(
        "content-length-zero",
        b"POST /empty HTTP/1.1\r\n" + _HOST + b"Content-Length: 0\r\n\r\n",
        ({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "0", "body": b""},),
        "RFC 9110 8.6: an explicitly empty body",
    ),
    Valid(
        "content-length-leading-zeros",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 005\r\n\r\nhello",
        ({"body": b"hello"},),
        "RFC 9110 8.6: Content-Length = 1*DIGIT, so leading zeros are allowed",
    ),
    Valid(
        "content-length-20-digits",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 00000000000000000005\r\n\r\nhello",
        ({"body": b"hello"},),
        "RFC 9110 8.6: Content-Length = 1*DIGIT; up to 20 digits are accepted",
    ),
    Valid(
        "content-length-surrounding-ows",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: \t 5 \t\r\n\r\nhello",
        ({"CONTENT_LENGTH": "5", "body": b"hello"},),
        "RFC 9112 5: OWS around a field value is not part of it",
    ),
    Valid(
        "chunked-single",
        _CHUNKED_POST + b"\r\n5\r\nhello\r\n0\r\n\r\n",
        ({"REQUEST_METHOD": "POST", "body": b"hello"},),
        "RFC 9112 7.1",
    ),
    Valid(
        "chunked-several",
        _CHUNKED_POST + b"\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
        ({"body": b"hello world"},),
        "RFC 9112 7.1.3: chunks are concatenated",
    ),
    Valid(
        "chunked-empty",
        _CHUNKED_POST + b"\r\n0\r\n\r\n",
        ({"body": b""},),
        "RFC 9112 7.1: only the last-chunk",
    ),
    Valid(
        "chunked-uppercase-hex",
        _CHUNKED_POST + b"\r\nA\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
        ({"body": b"0123456789abcdefghijklmnopqrstuvwxyz"},),
        "RFC 9112 7.1 / RFC 5234: HEXDIG is case-insensitive ('A' is 10, '1a' is 26)",
    ),
    Valid(
        "chunked-leading-zeros",
        _CHUNKED_POST + b"\r\n0003\r\nabc\r\n000\r\n\r\n",
        ({"body": b"abc"},),
        "RFC 9112 7.1: chunk-size = 1*HEXDIG, so leading zeros are allowed",
    ),
    Valid(
        "chunked-extensions",
        _CHUNKED_POST + b"\r\n3;name=value\r\nabc\r\n2;flag\r\nde\r\n0;last=1\r\n\r\n",
        ({"body": b"abcde"},),
        "RFC 9112 7.1.1: unrecognised chunk extensions are ignored",
    ),
    Valid(
        "chunked-extension-quoted",
        _CHUNKED_POST + b'\r\n3;name="quoted value"\r\nabc\r\n0\r\n\r\n',
        ({"body": b"abc"},),
        "RFC 9112 7.1.1: chunk-ext-val = token / quoted-string",
    ),
    Valid(
        "chunked-benign-trailer",
        _CHUNKED_POST + b"Trailer: X-Checksum\r\n\r\n3\r\nabc\r\n0\r\n"
        b"X-Checksum: 900150983cd24fb0\r\n\r\n",
        ({"body": b"abc", "HTTP_X_CHECKSUM": None},),
        "RFC 9112 7.1.2: trailer fields are allowed; twistwsgi does not show them to the app",
    ),
    Valid(
        "chunked-case-insensitive",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ({"body": b"abc"},),
        "RFC 9112 7: transfer-coding names are case-insensitive",
    ),
    # Only a leading HTAB here: llhttp (httptools 0.9.0) refuses "chunked\t" with a
    # trailing HTAB ("Request has invalid Transfer-Encoding") although RFC 9112 5 makes it
    # OWS; a trailing SP is accepted. That llhttp quirk is left out of the corpus.
    Valid(
        "chunked-htab-ows",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n"
        b"0\r\n\r\n",
        ({"body": b"abc"},),
        "RFC 9112 5: HTAB is OWS before the value, which is still exactly 'chunked'",
    ),
    Valid(
        "expect-100-continue-content-length",
        b"POST /upload HTTP/1.1\r\n" + _HOST + b"Expect: 100-continue\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        ({"REQUEST_METHOD": "POST", "body": b"hello"},),
        "RFC 9110 10.1.1: 100-continue is the one expectation a server must support",
    ),
    Valid(
        "expect-100-continue-on-two-lines",
        b"POST /upload HTTP/1.1\r\n" + _HOST + b"Expect: 100-continue\r\n"
        b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        ({"REQUEST_METHOD": "POST", "body": b"hello"},),
        "RFC 9110 5.3: Expect is a list field; two lines are one list of two members",
    ),
    Valid(
        "expect-empty-is-no-expectation",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Expect:\r\nContent-Length: 3\r\n\r\nabc",
        ({"body": b"abc"},),
        "RFC 9110 5.6.1: an empty list holds no expectation (nginx ignores it too)",
    ),
    Valid(
        "expect-100-continue-mixed-case-chunked",
        _CHUNKED_POST + b"Expect: 100-Continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ({"body": b"hello"},),
        "RFC 9110 10.1.1: the 100-continue expectation is case-insensitive",
    ),
    # ------------------------------------------------------------------
    # Header fields
    # ------------------------------------------------------------------
    Valid(
        "field-obs-text-value",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: caf\xe9 \xff\r\n\r\n",
        ({"HTTP_X_FOO": "caf\xe9 \xff", "body": b""},),
        "RFC 9110 5.5: obs-text (0x80-0xFF) is allowed in values; latin-1 per PEP 3333",
    ),
    Valid(
        "field-htab-inside-value",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: a\tb\r\n\r\n",
        ({"HTTP_X_FOO": "a\tb", "body": b""},),
        "RFC 9110 5.5: field-value may contain HTAB between vchars",
    ),
    Valid(
        "field-value-ows-trimmed",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo: \t  bar baz \t \r\n\r\n",
        ({"HTTP_X_FOO": "bar baz", "body": b""},),
        "RFC 9112 5: leading and trailing OWS is not part of the value; inner SP stays",
    ),
    Valid(
        "field-no-space-after-colon",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Foo:bar\r\n\r\n",
        ({"HTTP_X_FOO": "bar", "body": b""},),
        "RFC 9112 5: OWS after the colon is optional",
    ),
    Valid(
        "field-empty-value",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Empty:\r\n\r\n",
        ({"HTTP_X_EMPTY": "", "body": b""},),
        "RFC 9110 5.5: field-value may be empty",
    ),
    Valid(
        "field-name-case-insensitive",
        b"GET / HTTP/1.1\r\nhOsT: example.com\r\nx-fOO-bAr: 1\r\n\r\n",
        ({"HTTP_HOST": "example.com", "HTTP_X_FOO_BAR": "1", "body": b""},),
        "RFC 9110 5.1: field names are case-insensitive",
    ),
    Valid(
        "field-name-all-tchars",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-!#$%&'*+.^`|~9: ok\r\n\r\n",
        ({"HTTP_X_!#$%&'*+.^`|~9": "ok", "body": b""},),
        "RFC 9110 5.6.2: every tchar except '_' is allowed in a field name",
    ),
    Valid(
        "field-repeated-joined",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X-Multi: a\r\nX-Multi: b\r\n\r\n",
        ({"HTTP_X_MULTI": "a,b", "body": b""},),
        "RFC 9110 5.3: repeated field lines combine into one comma-separated list",
    ),
    Valid(
        "field-underscore-dropped",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X_Foo: 1\r\n\r\n",
        ({"HTTP_X_FOO": None, "body": b""},),
        "RFC 9110 5.1: '_' is a tchar, but X_Foo would collide with X-Foo; dropped",
    ),
    Valid(
        "field-underscore-cannot-spoof",
        b"GET / HTTP/1.1\r\n" + _HOST + b"X_Remote_User: mallory\r\nX-Remote-User: alice\r\n\r\n",
        ({"HTTP_X_REMOTE_USER": "alice", "body": b""},),
        "RFC 9110 5.1: the underscore twin is dropped, so a field an authenticating"
        " proxy in front set stays unspoofed",
    ),
    Valid(
        "fields-one-hundred",
        b"GET / HTTP/1.1\r\n" + _HOST + _fields(LIMIT_FIELDS - 1) + b"\r\n",
        ({"HTTP_X_FIELD_0": "v", "HTTP_X_FIELD_98": "v", "body": b""},),
        "RFC 6585 5: Host + 99 fields = 100 field lines, exactly at the limit",
    ),
    Valid(
        "field-line-at-limit",
        b"GET / HTTP/1.1\r\n" + _HOST + _long_line(LIMIT_FIELD_LINE) + b"\r\n",
        ({"HTTP_X_LONG": "a" * (LIMIT_FIELD_LINE - len(b"X-Long: ")), "body": b""},),
        "RFC 6585 5: a field line of exactly 8192 bytes is within the limit",
    ),
    Valid(
        "header-section-large-under-limit",
        b"GET / HTTP/1.1\r\n" + _HOST + _big_section() + b"\r\n",
        ({"HTTP_X_BIG_3": "b" * 7000, "body": b""},),
        "RFC 6585 5: a 28 KB header section is under the 32768 limit",
    ),
    Valid(
        "target-at-limit",
        b"GET /" + b"a" * (LIMIT_TARGET - 1) + b" HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/" + "a" * (LIMIT_TARGET - 1), "body": b""},),
        "RFC 9112 3: a request-target of exactly 8192 bytes is within the limit",
    ),
    # ------------------------------------------------------------------
    # Host values
    # ------------------------------------------------------------------
    Valid(
        "host-with-port",
        b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        ({"HTTP_HOST": "example.com:8080", "body": b""},),
        "RFC 9110 7.2: Host = uri-host [':' port]",
    ),
    Valid(
        "host-ipv6-literal",
        b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n",
        ({"HTTP_HOST": "[2001:db8::1]:8443", "body": b""},),
        "RFC 3986 3.2.2: IP-literal in brackets, then a port",
    ),
    Valid(
        "host-empty",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        ({"HTTP_HOST": "", "body": b""},),
        "RFC 9112 3.2: a client with no authority sends an empty Host (reg-name may be empty)",
    ),
    # ------------------------------------------------------------------
    # Target forms
    # ------------------------------------------------------------------
    Valid(
        "absolute-form-http",
        b"GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
        ({"PATH_INFO": "/a/b", "QUERY_STRING": "x=1", "body": b""},),
        "RFC 9112 3.2.2: a server MUST accept absolute-form; the path comes from the target",
    ),
    Valid(
        "absolute-form-https-port-no-path",
        b"GET https://example.com:8443?x=1 HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/", "QUERY_STRING": "x=1", "body": b""},),
        "RFC 9110 4.2.3: an empty path in an http(s) URI is equivalent to '/'",
    ),
    # ------------------------------------------------------------------
    # Connection handling
    # ------------------------------------------------------------------
    # h11 refuses this one ("no request line received"); llhttp skips the empty line.
    Valid(
        "leading-empty-line",
        b"\r\nGET /after-crlf HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/after-crlf", "body": b""},),
        "RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line",
    ),
    # h11 refuses these two as well.
    Valid(
        "leading-bare-lf-line",
        b"\n\r\n\nGET /after-lf HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/after-lf", "body": b""},),
        "RFC 9112 2.2: a bare LF may end a line; empty lines before the request-line",
    ),
    Valid(
        "pipelined-empty-line-between-requests",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Content-Length: 3\r\n\r\na\rb\r\n" + _GET,
        ({"body": b"a\rb"}, {"body": b""}),
        "RFC 9112 2.2: an empty line before a pipelined request is ignored; a CR in a body is data",
    ),
    Valid(
        "connection-close",
        b"GET / HTTP/1.1\r\n" + _HOST + b"Connection: close\r\n\r\n",
        ({"HTTP_CONNECTION": "close", "body": b""},),
        "RFC 9112 9.6: the request is served, then the connection closes",
    ),
    # httptools raises HttpParserUpgrade after on_message_complete for this request; the
    # protocol has to treat that as "serve, then close", not as a parse error.
    Valid(
        "upgrade-websocket-served-plainly",
        b"GET /chat HTTP/1.1\r\n" + _HOST + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        (
            {
                "PATH_INFO": "/chat",
                "HTTP_UPGRADE": "websocket",
                "HTTP_CONNECTION": "Upgrade",
                "body": b"",
            },
        ),
        "RFC 9110 7.8: a server MAY ignore Upgrade; answered normally, then closed",
    ),
    # ------------------------------------------------------------------
    # Pipelining
    # ------------------------------------------------------------------
    Valid(
        "pipelined-two-gets",
        b"GET /one HTTP/1.1\r\n" + _HOST + b"\r\nGET /two HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"PATH_INFO": "/one", "body": b""}, {"PATH_INFO": "/two", "body": b""}),
        "RFC 9112 9.3.2: requests are answered in order",
    ),
    Valid(
        "pipelined-head-then-get",
        b"HEAD /a HTTP/1.1\r\n" + _HOST + b"\r\nGET /b HTTP/1.1\r\n" + _HOST + b"\r\n",
        ({"REQUEST_METHOD": "HEAD", "body": b""}, {"REQUEST_METHOD": "GET", "body": b""}),
        "RFC 9112 9.3.2: a HEAD response has no body, so framing must stay in step",
    ),
    Valid(
        "pipelined-cl-chunked-get",
        b"POST /a HTTP/1.1\r\n" + _HOST + b"Content-Length: 5\r\n\r\nfirst"
        b"POST /b HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        b"6\r\nsecond\r\n0\r\nX-Checksum: 1\r\n\r\n"
        b"GET /c?third HTTP/1.1\r\n" + _HOST + b"\r\n",
        (
            {"REQUEST_METHOD": "POST", "PATH_INFO": "/a", "body": b"first"},
            {"REQUEST_METHOD": "POST", "PATH_INFO": "/b", "body": b"second"},
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/c", "QUERY_STRING": "third", "body": b""},
        ),
        "RFC 9112 9.3.2/6.3: each body ends exactly where its framing says",
    ),
    Valid(
        "pipelined-body-looks-like-request",
        b"POST /a HTTP/1.1\r\n" + _HOST + b"Content-Length: 19\r\n\r\n"
        b"GET /x HTTP/1.1\r\n\r\n"
        b"PUT /b HTTP/1.1\r\n" + _HOST + b"Content-Length: 2\r\n\r\nok",
        (
            {"PATH_INFO": "/a", "body": b"GET /x HTTP/1.1\r\n\r\n"},
            {"REQUEST_METHOD": "PUT", "PATH_INFO": "/b", "body": b"ok"},
        ),
        "RFC 9112 6.3: a body that looks like a request is still only body",
    ),
    # ------------------------------------------------------------------
    # Beyond the classic vectors: what the research cases above must not
    # catch (see the INVALID section of the same name for the sources)
    # ------------------------------------------------------------------
    Valid(
        "chunked-trailing-space-ows",
        b"POST / HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n"
        b"0\r\n\r\n",
        ({"body": b"abc"},),
        "RFC 9112 5: a trailing SP is OWS, not part of the value 'chunked'",
    ),
    Valid(
        "chunked-size-zero-padded-long",
        _CHUNKED_POST + b"\r\n" + b"0" * 200 + b"3\r\nabc\r\n0\r\n\r\n",
        ({"body": b"abc"},),
        "RFC 9112 7.1: chunk-size = 1*HEXDIG; 200 leading zeros are still the size 3",
    ),
    Valid(
        "host-port-out-of-range",
        b"GET / HTTP/1.1\r\nHost: example.com:99999\r\n\r\n",
        ({"HTTP_HOST": "example.com:99999", "body": b""},),
        "RFC 3986 3.2.3: port = *DIGIT, no range; the Host field is well-formed",
    ),
    Valid(
        "host-empty-port",
        b"GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n",
        ({"HTTP_HOST": "example.com:", "body": b""},),
        "RFC 3986 3.2.3: port = *DIGIT may be empty (producers should omit the ':')",
    ),
    Valid(
        "expect-100-continue-http10-ignored",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        ({"SERVER_PROTOCOL": "HTTP/1.0", "body": b"abc"},),
        "RFC 9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request",
    ),
    Valid(
        "pipelined-head-with-body-then-get",
        b"HEAD /a HTTP/1.1\r\n" + _HOST + b"Content-Length: 3\r\n\r\nabc" + _GET,
        ({"REQUEST_METHOD": "HEAD", "body": b"abc"}, {"REQUEST_METHOD": "GET", "body": b""}),
        "RFC 9112 6.3: a HEAD request's Content-Length still frames its body, so the GET"
        " after it is the second request (Kettle 2019: servers that ignore it desync)",
    ),
)
