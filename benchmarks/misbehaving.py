"""WSGI applications that break PEP 3333 or HTTP's rules, one per case, for ``app_wire.py``.

Each :class:`Misbehaviour` is one mistake an application can make with its response: a
``Content-Length`` that does not match its body, hop-by-hop fields, control characters in a
field, a status that is not one, ``start_response`` misused, a body of ``str``... The
dispatching application :func:`app` (served as ``benchmarks.apps:misbehaving`` by twistwsgi and
every peer) runs the case named by the first path segment, and answers ``/second`` with a
well-formed response: the request a client sends next on the same connection, to see whether
the framing of the first response left the connection usable. Plain PEP 3333 code with no
dependencies, so that every server imports the same thing; ``tests/test_app_wire.py`` runs each
case through twistwsgi in memory.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]

SECOND_PATH = "/second"
SECOND_BODY = b"second response"
BODY = b"hello"
TEXT = ("Content-Type", "text/plain")
_LEN = ("Content-Length", "5")
#: A value the size nginx refuses from an upstream many times over (proxy_buffer_size is
#: 4 or 8 KiB): one field of 1 MiB.
HUGE_VALUE = "x" * (1024 * 1024)


@dataclass(frozen=True)
class Misbehaviour:
    """One application mistake.

    Attributes:
        name: the path segment that selects it (``/name``).
        what: what the application does, for the table.
        app: the application.
        method: the request method the case is sent with.
        rule: what PEP 3333 or the RFCs say of it, for the table.
        injected: a field name that must not appear on the wire (header injection).
        failed: the application fails once its response has begun, or its body falls
            short of its length: no complete answer but a 5xx is right.
    """

    name: str
    what: str
    app: App
    method: str = "GET"
    rule: str = ""
    injected: str = ""
    failed: bool = False


def _fixed(status: str, headers: list[tuple[str, str]], body: Iterable[Any] = (BODY,)) -> App:
    """An application that answers ``status``, ``headers`` and ``body``, as given."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, list(headers))
        return list(body)

    return app


def _streamed(status: str, headers: list[tuple[str, str]], body: Iterable[Any]) -> App:
    """As :func:`_fixed`, the body yielded by a generator (no length known to the server)."""
    pieces = list(body)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, list(headers))
        yield from pieces

    return app


def _no_start_response(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return [BODY]


def _start_response_twice(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT])
    start_response("404 Not Found", [TEXT])
    return [BODY]


def _start_response_twice_caught(
    environ: Environ, start_response: StartResponse
) -> Iterable[bytes]:
    # An application that swallows the server's refusal of the second call: whatever the
    # server took from the first call must still go out whole.
    start_response("200 OK", [TEXT, ("Content-Length", "5")])
    with contextlib.suppress(Exception):
        start_response("404 Not Found", [TEXT, ("Content-Length", "9")])
    return [BODY]


def _write_then_yield(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    write = start_response("200 OK", [TEXT])
    yield b"one,"
    write(b"two,")  # PEP 3333 allows write() only before the iterable is returned
    yield b"three"


def _write_before_start(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    # write() is only returned by start_response: an application keeping one from an earlier
    # request has no other; here it calls the one it is given before its head is set.
    write = start_response("200 OK", [TEXT])
    write(b"early,")
    return [b"late"]


def _yield_str(environ: Environ, start_response: StartResponse) -> Iterator[Any]:
    start_response("200 OK", [TEXT])
    yield "text, not bytes"


def _yield_str_later(environ: Environ, start_response: StartResponse) -> Iterator[Any]:
    start_response("200 OK", [TEXT])
    yield b"bytes first,"
    yield "then text"


def _return_bytes(environ: Environ, start_response: StartResponse) -> Any:
    start_response("200 OK", [TEXT])
    return BODY  # iterating it gives ints


def _return_none(environ: Environ, start_response: StartResponse) -> Any:
    start_response("200 OK", [TEXT])
    return None


def _raise_before_body(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [TEXT])
    pieces: list[bytes] = []  # a generator that fails at its first step
    if not pieces:
        raise RuntimeError("failed before any body byte")
    yield from pieces


def _raise_mid_body(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [TEXT])
    yield b"partial,"
    raise RuntimeError("failed mid-body")


def _raise_mid_body_with_length(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [TEXT, ("Content-Length", "20")])
    yield b"partial,"
    raise RuntimeError("failed mid-body")


def _exc_info_after_body(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [TEXT])
    yield b"partial,"
    try:
        raise RuntimeError("failed mid-body")
    except RuntimeError:
        # PEP 3333: with the head sent, start_response re-raises; an application that
        # catches that too and yields on must not get its error page framed as more body.
        with contextlib.suppress(RuntimeError):
            start_response("500 Internal Server Error", [TEXT], sys.exc_info())
    yield b"error page after the body"


def _exc_info_before_body(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT, ("Content-Length", "100")])
    try:
        raise RuntimeError("failed before any body byte")
    except RuntimeError:
        start_response("500 Internal Server Error", [TEXT], sys.exc_info())
    return [b"replaced"]


class _ClosingRaises:
    """A result whose close() raises, after a body sent whole."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._pieces)

    def close(self) -> None:
        raise RuntimeError("close() failed")


def _close_raises(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT])
    return _ClosingRaises([b"streamed ", b"body"])


def _close_raises_with_length(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT, ("Content-Length", "5")])
    return _ClosingRaises([BODY])


def _chunked_by_hand(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [TEXT, ("Transfer-Encoding", "chunked")])
    yield b"5\r\nhello\r\n"
    yield b"0\r\n\r\n"


class _LyingLength(list[bytes]):
    """A list whose len() says one item; a server may take its one item for the body."""

    def __len__(self) -> int:
        return 1


def _length_lies(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT])
    return _LyingLength([BODY, b" and more"])


def _file_short(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT, ("Content-Length", "100")])
    file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the server through the wrapper
    file.write(BODY)
    file.seek(0)
    wrapper: Callable[[Any], Iterable[bytes]] = environ["wsgi.file_wrapper"]
    return wrapper(file)


class _WritesInClose:
    """A result whose close() still writes: after the body, when the server ends it."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write

    def __iter__(self) -> Iterator[bytes]:
        yield BODY

    def close(self) -> None:
        self._write(b" written in close()")


def _write_in_close(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _WritesInClose(start_response("200 OK", [TEXT]))


#: write() callables kept past their response by ``stale-write``, called by the next request.
_STALE: list[Callable[[bytes], Any]] = []


def _stale_write(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    _STALE.append(start_response("200 OK", [TEXT, _LEN]))
    return [BODY]


def _second(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    while _STALE:
        # An application that kept the write() of an earlier response on this connection
        # and calls it now: the bytes must not land in this response.
        with contextlib.suppress(Exception):  # a server may refuse it: as well
            _STALE.pop()(b"STALE")
    start_response("200 OK", [TEXT, ("Content-Length", str(len(SECOND_BODY)))])
    return [SECOND_BODY]


CASES: tuple[Misbehaviour, ...] = (
    # -- Content-Length --------------------------------------------------------------------
    Misbehaviour(
        "cl-larger",
        "Content-Length: 10, body of 5",
        _fixed("200 OK", [TEXT, ("Content-Length", "10")]),
        rule="RFC 9112 6.3: the client waits for 5 more bytes; abort once sent",
        failed=True,
    ),
    Misbehaviour(
        "cl-larger-streamed",
        "Content-Length: 10, 5 bytes yielded by a generator",
        _streamed("200 OK", [TEXT, ("Content-Length", "10")], [BODY]),
        rule="RFC 9112 6.3",
        failed=True,
    ),
    Misbehaviour(
        "cl-smaller",
        "Content-Length: 5, body of 40 that reads as a response",
        _fixed(
            "200 OK",
            [TEXT, _LEN],
            [BODY + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        ),
        rule="RFC 9112 6.3: the extra bytes would be the next response",
    ),
    Misbehaviour(
        "cl-smaller-streamed",
        "Content-Length: 5, 40 bytes yielded in two pieces",
        _streamed("200 OK", [TEXT, _LEN], [BODY, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]),
        rule="RFC 9112 6.3",
    ),
    Misbehaviour(
        "cl-not-a-number",
        "Content-Length: five",
        _fixed("200 OK", [TEXT, ("Content-Length", "five")]),
        rule="RFC 9110 8.6: 1*DIGIT",
    ),
    Misbehaviour(
        "cl-negative",
        "Content-Length: -1",
        _fixed("200 OK", [TEXT, ("Content-Length", "-1")]),
        rule="RFC 9110 8.6",
    ),
    Misbehaviour(
        "cl-plus",
        "Content-Length: +5",
        _fixed("200 OK", [TEXT, ("Content-Length", "+5")]),
        rule="RFC 9110 8.6: Python's int() takes it, the grammar does not",
    ),
    Misbehaviour(
        "cl-two-values",
        "Content-Length: 5 and Content-Length: 7",
        _fixed("200 OK", [TEXT, _LEN, ("Content-Length", "7")]),
        rule="RFC 9112 6.3: conflicting lengths are unrecoverable for the client",
    ),
    Misbehaviour(
        "cl-list",
        "Content-Length: 5, 7 (one field)",
        _fixed("200 OK", [TEXT, ("Content-Length", "5, 7")]),
        rule="RFC 9112 6.3",
    ),
    Misbehaviour(
        "cl-twice-same",
        "Content-Length: 5 twice",
        _fixed("200 OK", [TEXT, _LEN, _LEN]),
        rule="RFC 9110 8.6: a recipient may take identical values as one",
    ),
    # -- framing and hop-by-hop fields -----------------------------------------------------
    Misbehaviour(
        "te-chunked-raw",
        "Transfer-Encoding: chunked, body not chunked",
        _streamed("200 OK", [TEXT, ("Transfer-Encoding", "chunked")], [BODY]),
        rule="PEP 3333: hop-by-hop fields are the server's (a fatal error)",
    ),
    Misbehaviour(
        "te-chunked-by-hand",
        "Transfer-Encoding: chunked, body chunked by the application",
        _chunked_by_hand,
        rule="PEP 3333: hop-by-hop fields are the server's",
    ),
    Misbehaviour(
        "te-chunked-with-cl",
        "Transfer-Encoding: chunked and Content-Length: 5, body of 5",
        _fixed("200 OK", [TEXT, ("Transfer-Encoding", "chunked"), _LEN]),
        rule="RFC 9112 6.1: a sender must not send both",
    ),
    Misbehaviour(
        "te-gzip",
        "Transfer-Encoding: gzip, body plain",
        _fixed("200 OK", [TEXT, ("Transfer-Encoding", "gzip")]),
        rule="RFC 9112 6.1: a coding the body does not have",
    ),
    Misbehaviour(
        "connection-close",
        "Connection: close",
        _fixed("200 OK", [TEXT, _LEN, ("Connection", "close")]),
        rule="RFC 9112 9.6: the server must close after the response",
    ),
    Misbehaviour(
        "connection-keep-alive",
        "Connection: keep-alive, no length",
        _streamed("200 OK", [TEXT, ("Connection", "keep-alive")], [BODY]),
        rule="PEP 3333: hop-by-hop",
    ),
    Misbehaviour(
        "keep-alive-field",
        "Keep-Alive: timeout=5",
        _fixed("200 OK", [TEXT, _LEN, ("Keep-Alive", "timeout=5")]),
        rule="PEP 3333: hop-by-hop",
    ),
    Misbehaviour(
        "upgrade",
        "Upgrade: websocket on a 200",
        _fixed("200 OK", [TEXT, _LEN, ("Upgrade", "websocket")]),
        rule="PEP 3333: hop-by-hop; RFC 9110 7.8",
    ),
    Misbehaviour(
        "proxy-connection",
        "Proxy-Connection: keep-alive",
        _fixed("200 OK", [TEXT, _LEN, ("Proxy-Connection", "keep-alive")]),
        rule="PEP 3333: hop-by-hop",
    ),
    Misbehaviour(
        "te-field",
        "TE: trailers",
        _fixed("200 OK", [TEXT, _LEN, ("TE", "trailers")]),
        rule="PEP 3333: hop-by-hop (a request field)",
    ),
    Misbehaviour(
        "trailer-field",
        "Trailer: X-Checksum, no trailer sent",
        _streamed("200 OK", [TEXT, ("Trailer", "X-Checksum")], [BODY]),
        rule="PEP 3333: hop-by-hop",
    ),
    # -- field syntax ----------------------------------------------------------------------
    Misbehaviour(
        "crlf-in-value",
        "CR LF in a field value (header injection)",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", "a\r\nInjected: yes")]),
        rule="RFC 9110 5.5: CR, LF and NUL must never be sent",
        injected="injected",
    ),
    Misbehaviour(
        "lf-in-value",
        "bare LF in a field value",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", "a\nInjected: yes")]),
        rule="RFC 9110 5.5",
        injected="injected",
    ),
    Misbehaviour(
        "cr-in-value",
        "bare CR in a field value",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", "a\rInjected: yes")]),
        rule="RFC 9110 5.5",
        injected="injected",
    ),
    Misbehaviour(
        "crlfcrlf-in-value",
        "CR LF CR LF in a field value (a body and a second response)",
        _fixed(
            "200 OK",
            [TEXT, _LEN, ("X-Test", "a\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0")],
        ),
        rule="RFC 9110 5.5: response splitting",
    ),
    Misbehaviour(
        "nul-in-value",
        "NUL in a field value",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", "a\x00b")]),
        rule="RFC 9110 5.5",
    ),
    Misbehaviour(
        "ctl-in-value",
        "other control characters (\\x01, \\x1b, DEL) in a field value",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", "a\x01\x1b\x7fb")]),
        rule="RFC 9110 5.5: field-vchar excludes CTLs",
    ),
    Misbehaviour(
        "crlf-in-name",
        "CR LF in a field name",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test\r\nInjected", "yes")]),
        rule="RFC 9110 5.1: a name is a token",
        injected="injected",
    ),
    Misbehaviour(
        "space-in-name",
        "a space in a field name",
        _fixed("200 OK", [TEXT, _LEN, ("X Test", "yes")]),
        rule="RFC 9110 5.1: a name is a token",
    ),
    Misbehaviour(
        "colon-in-name",
        "a colon in a field name",
        _fixed("200 OK", [TEXT, _LEN, ("Injected:X-Test", "yes")]),
        rule="RFC 9110 5.1: a name is a token",
    ),
    Misbehaviour(
        "empty-name",
        "an empty field name",
        _fixed("200 OK", [TEXT, _LEN, ("", "yes")]),
        rule="RFC 9110 5.1",
    ),
    Misbehaviour(
        "non-latin1-value",
        "a str value with U+20AC (not ISO-8859-1)",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", "\u20ac")]),
        rule="PEP 3333: ISO-8859-1 native strings",
    ),
    Misbehaviour(
        "bytes-value",
        "a bytes field value",
        _fixed("200 OK", [TEXT, _LEN, ("X-Test", b"yes")]),  # type: ignore[list-item]
        rule="PEP 3333: native strings",
    ),
    Misbehaviour(
        "huge-head",
        "a 1 MiB field value",
        _fixed("200 OK", [TEXT, _LEN, ("X-Huge", HUGE_VALUE)]),
        rule="no limit in the RFCs; nginx in front refuses past proxy_buffer_size",
    ),
    Misbehaviour(
        "date-and-server",
        "Date and Server set by the application",
        _fixed(
            "200 OK",
            [TEXT, _LEN, ("Date", "Thu, 01 Jan 2015 00:00:00 GMT"), ("Server", "app/1")],
        ),
        rule="RFC 9110 6.6.1, 10.2.4: one of each",
    ),
    Misbehaviour(
        "set-cookie-x3",
        "Set-Cookie three times",
        _fixed("200 OK", [TEXT, _LEN, *(("Set-Cookie", f"c{i}=v{i}") for i in range(3))]),
        rule="RFC 9110 5.3: Set-Cookie cannot be combined into one line",
    ),
    # -- the status ------------------------------------------------------------------------
    Misbehaviour(
        "crlf-in-reason",
        "CR LF in the reason phrase",
        _fixed("200 OK\r\nInjected: yes", [TEXT, _LEN]),
        rule="RFC 9112 4: reason-phrase has no CR or LF",
        injected="injected",
    ),
    Misbehaviour(
        "nul-in-reason",
        "NUL in the reason phrase",
        _fixed("200 O\x00K", [TEXT, _LEN]),
        rule="RFC 9112 4",
    ),
    Misbehaviour("status-2-digits", "status '20 OK'", _fixed("20 OK", [TEXT, _LEN])),
    Misbehaviour("status-4-digits", "status '2000 OK'", _fixed("2000 OK", [TEXT, _LEN])),
    Misbehaviour("status-letters", "status 'abc'", _fixed("abc", [TEXT, _LEN])),
    Misbehaviour("status-no-reason", "status '200' (no space)", _fixed("200", [TEXT, _LEN])),
    Misbehaviour(
        "status-999",
        "status '999 Odd'",
        _fixed("999 Odd", [TEXT, _LEN]),
        rule="RFC 9110 15: 100-599",
    ),
    Misbehaviour(
        "status-100",
        "status 100 with a body",
        _fixed("100 Continue", [TEXT, _LEN]),
        rule="RFC 9110 15.2: a 1xx is interim, the client waits for another",
    ),
    Misbehaviour(
        "status-101",
        "status 101 without an Upgrade request",
        _fixed("101 Switching Protocols", [TEXT, _LEN, ("Upgrade", "websocket")]),
        rule="RFC 9110 15.2.2",
    ),
    Misbehaviour(
        "status-103",
        "status 103 with a body",
        _fixed("103 Early Hints", [TEXT, _LEN]),
        rule="RFC 9110 15.2",
    ),
    Misbehaviour(
        "204-with-body",
        "204 with a body",
        _streamed("204 No Content", [TEXT], [BODY]),
        rule="RFC 9110 15.3.5: no content; bytes would be the next response",
    ),
    Misbehaviour(
        "204-with-cl",
        "204 with Content-Length: 5 and a body",
        _fixed("204 No Content", [TEXT, _LEN]),
        rule="RFC 9110 8.6: no Content-Length in a 204",
    ),
    Misbehaviour(
        "304-with-body",
        "304 with Content-Length: 5 and a body",
        _fixed("304 Not Modified", [TEXT, _LEN]),
        rule="RFC 9110 15.4.5: no content (the length is the GET's)",
    ),
    Misbehaviour(
        "head-with-body",
        "HEAD answered with a body",
        _streamed("200 OK", [TEXT], [BODY]),
        method="HEAD",
        rule="RFC 9110 9.3.2: no content in a HEAD response",
    ),
    Misbehaviour(
        "head-with-cl-and-body",
        "HEAD answered with Content-Length: 5 and a body",
        _fixed("200 OK", [TEXT, _LEN]),
        method="HEAD",
        rule="RFC 9110 9.3.2",
    ),
    # -- start_response, write() and the iterable -------------------------------------------
    Misbehaviour(
        "no-start-response",
        "start_response never called",
        _no_start_response,
        rule="PEP 3333: an error before anything is sent",
    ),
    Misbehaviour(
        "start-response-twice",
        "start_response called twice without exc_info",
        _start_response_twice,
        rule="PEP 3333: a fatal error",
    ),
    Misbehaviour(
        "start-response-twice-caught",
        "the same, the error caught by the application",
        _start_response_twice_caught,
        rule="PEP 3333",
    ),
    Misbehaviour(
        "write-while-iterating",
        "write() called while the iterable is being consumed",
        _write_then_yield,
        rule="PEP 3333 allows write() before the iterable only; order must hold",
    ),
    Misbehaviour(
        "write-then-return",
        "write() then a returned list",
        _write_before_start,
        rule="PEP 3333: both are the body, in that order",
    ),
    Misbehaviour(
        "yield-str",
        "yields str, not bytes",
        _yield_str,
        rule="PEP 3333: bytes only",
    ),
    Misbehaviour(
        "yield-str-later",
        "yields bytes, then str",
        _yield_str_later,
        rule="PEP 3333: bytes only; abort once sent",
        failed=True,
    ),
    Misbehaviour(
        "return-bytes",
        "returns bytes, not a list of bytes",
        _return_bytes,
        rule="PEP 3333: an iterable of bytes",
    ),
    Misbehaviour("return-none", "returns None", _return_none, rule="PEP 3333"),
    Misbehaviour(
        "raise-before-body",
        "raises after start_response, before any body",
        _raise_before_body,
        rule="PEP 3333: a 500, nothing of the response sent",
    ),
    Misbehaviour(
        "raise-mid-body",
        "raises mid-body (no length)",
        _raise_mid_body,
        rule="PEP 3333: abort once bytes are out",
        failed=True,
    ),
    Misbehaviour(
        "raise-mid-body-cl",
        "raises mid-body (Content-Length: 20)",
        _raise_mid_body_with_length,
        rule="PEP 3333",
        failed=True,
    ),
    Misbehaviour(
        "exc-info-after-body",
        "yields on after start_response(exc_info) re-raised",
        _exc_info_after_body,
        rule="PEP 3333: the head is sent, the error cannot be",
        failed=True,
    ),
    Misbehaviour(
        "exc-info-before-body",
        "start_response(exc_info) before any body: a replacement",
        _exc_info_before_body,
        rule="PEP 3333: the new head replaces the first",
    ),
    Misbehaviour(
        "write-in-close",
        "write() called from close()",
        _write_in_close,
        rule="PEP 3333: the response is over once close() is called",
    ),
    Misbehaviour(
        "stale-write",
        "write() of this response called during the next request's",
        _stale_write,
        rule="PEP 3333: the bytes must not reach the next response",
    ),
    Misbehaviour(
        "length-lies",
        "a list subclass whose len() says 1, holding 2 items",
        _length_lies,
        rule="PEP 3333: a server may use len() only when it is 1 to set a length",
    ),
    Misbehaviour(
        "file-wrapper-short",
        "wsgi.file_wrapper of a 5-byte file, Content-Length: 100",
        _file_short,
        rule="RFC 9112 6.3: its size is known before the head",
        failed=True,
    ),
    Misbehaviour(
        "close-raises",
        "close() raises after a streamed body",
        _close_raises,
        rule="PEP 3333: close() is the server's to call",
    ),
    Misbehaviour(
        "close-raises-cl",
        "close() raises after a body with its Content-Length",
        _close_raises_with_length,
        rule="PEP 3333",
    ),
)

_BY_PATH = {f"/{case.name}": case for case in CASES}


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Run the case the path names; answer :data:`SECOND_PATH` well."""
    path = environ.get("PATH_INFO", "")
    if path == SECOND_PATH:
        return _second(environ, start_response)
    case = _BY_PATH.get(path)
    if case is None:
        start_response("404 Not Found", [TEXT, ("Content-Length", "10")])
        return [b"not found\n"]
    return case.app(environ, start_response)
