"""The short way for a simple head, against llhttp's way: the same requests, the same answers.

A read that is one whole GET or HEAD head of the simplest kind (``rules.SIMPLE_HEAD``)
is read by ``HTTP11Protocol._take_simple_head`` with two regular expressions instead of
llhttp and its six calls back. What it reads must be what llhttp and the head rules read,
and it must take nothing the general way refuses or treats apart. Four checks:

* the grammar alone: every head drawn from it matches, and llhttp reads the same
  method, target, version and field lines from it; heads just outside it do not match,
  and a head cut short fails at once (no backtracking through its field lines);
* the protocol, with the short way and without it (its match replaced by one that never
  matches), given the same reads: heads drawn near the grammar, mutated by a byte or
  two, followed by a second request, a partial head and the clock run past the
  timeouts, under default and small limits. The bytes written, what the application
  was given, the access log, the log events and the connection's end are the same;
* the short way is taken where it should be (wrk's and a browser's head), and where
  a head asks for what only the general way does, it is not;
* what the drawn sessions do not reach: a short-way head after what only llhttp reads
  (a body, a chunked body and its trailer, pipelined heads, an Upgrade answered
  without switching, sliced large heads, empty lines, a split method), the limits at
  their bounds, a shutdown or the connection limit reached while idle, and the PROXY
  protocol's header before it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from wsgiref.validate import validator

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from twistwsgi.access_log import AccessLog
from twistwsgi.http import protocol as protocol_module
from twistwsgi.http import rules
from twistwsgi.http.exchange import Exchange
from twistwsgi.http.settings import HttpSettings
from twistwsgi.testing import (
    QueueingPool,
    SynchronousReactorThreads,
    capture_log_events,
    connect,
)
from twistwsgi.wsgi import WSGIHandler

# -- the grammar alone -------------------------------------------------------------------

_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PATH_CHARS = "abcXYZ019-._~!$&'()*+,;=:@/"
_QUERY_CHARS = _PATH_CHARS + "?%"
# Percent-escapes a path may hold: well formed (two hex digits, either case) ...
_ESCAPES = st.tuples(
    st.sampled_from("0123456789abcdefABCDEF"), st.sampled_from("0123456789abcdefABCDEF")
).map(lambda digits: "%" + "".join(digits))
# ... and ones the general way refuses or treats apart (NUL, encoded separators).
_ODD_ESCAPES = st.sampled_from(["%00", "%2f", "%2F", "%5c", "%2e%2e", "%", "%2", "%zz", "%%"])
_VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))

_names = st.text(_TCHARS, min_size=1, max_size=12).map(str.encode)
_values = st.text(_VISIBLE + " \t", max_size=24).map(str.encode)
_ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])


@st.composite
def simple_heads(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A head of the simple grammar, and its field lines as the protocol keeps them."""
    method = draw(st.sampled_from([b"GET", b"HEAD"]))
    path = draw(st.lists(st.sampled_from(list(_PATH_CHARS)) | _ESCAPES, max_size=20))
    target = ("/" + "".join(path)).encode()
    if draw(st.booleans()):
        target += b"?" + draw(st.text(_QUERY_CHARS, max_size=20)).encode()
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    kept = []
    for name, value in draw(st.lists(st.tuples(_names, _values), max_size=8)):
        head += name + b":" + draw(_ows) + value + draw(_ows) + b"\r\n"
        kept.append((name, value.strip(b" \t")))
    return head + b"\r\n", kept


class _LlhttpReading:
    """What llhttp reads of a head, through the callbacks the protocol uses."""

    def __init__(self) -> None:
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, part: bytes) -> None:
        self.target += part

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value.rstrip(b" \t")))  # (as on_header strips)

    def on_message_complete(self) -> None:
        self.complete = True


@given(simple_heads())
def test_a_simple_head_reads_as_llhttp_reads_it(
    drawn: tuple[bytes, list[tuple[bytes, bytes]]],
) -> None:
    head, kept = drawn
    simple = rules.SIMPLE_HEAD.fullmatch(head)
    assert simple is not None
    method, target, path, escaped, query, minor, field_lines = simple.groups()
    # The path and query groups split the target as the general way splits it.
    assert (path + escaped, query or b"") == target.partition(b"?")[::2]
    assert escaped[:1] in (b"", b"%")
    fields = rules.SIMPLE_FIELD.findall(field_lines)
    assert fields == kept
    reading = _LlhttpReading()
    parser = httptools.HttpRequestParser(reading)
    parser.feed_data(head)
    assert reading.complete
    assert (parser.get_method(), reading.target) == (method, target)
    assert parser.get_http_version() == "1." + minor.decode()
    assert reading.fields == fields


_WRK = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n",  # (malformed escapes in the path)
        b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a% HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET / RTSP/1.0\r\nHost: a\r\n\r\n",
        b"GET /\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  # (obs-fold)
        b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \xe9\r\n\r\n",  # (obs-text)
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX(: a\r\n\r\n",
        _WRK,  # (no empty line yet)
        _WRK + b"\r\nGET / HTTP/1.1\r\n",  # (another request after it)
    ],
)
def test_a_head_outside_the_grammar_does_not_match(head: bytes) -> None:
    assert rules.SIMPLE_HEAD.fullmatch(head) is None


def test_a_head_cut_short_does_not_match() -> None:
    """No cut of a head with 100 field lines matches (a slice of a pipelined read).

    The field lines are matched possessively, so each failure is one pass, not 2**100.
    """
    head = _WRK + b"".join(b"X-Field-%d: v\r\n" % n for n in range(100)) + b"\r\n"
    assert rules.SIMPLE_HEAD.fullmatch(head) is not None
    for cut in range(len(head)):
        assert rules.SIMPLE_HEAD.fullmatch(head[:cut]) is None


# -- the protocol, with the short way and without -----------------------------------------


def _never_matches(data: bytes, /) -> None:
    """A match of the simple grammar that matches nothing (the general way only)."""


@contextmanager
def short_way(taken: bool) -> Iterator[None]:
    """Run the protocol with the short way, or with its match replaced by none."""
    with pytest.MonkeyPatch.context() as patch:
        if not taken:
            patch.setattr(protocol_module, "_simple_head", _never_matches)
        yield


# Every fact of a request head the handlers read.
_HEAD_FACTS = (
    "method",
    "target",
    "path",
    "decoded_path",
    "query",
    "version",
    "headers",
    "authority",
    "content_length",
    "chunked",
    "scheme",
    "peer",
    "local",
    "client_certificate",
)


class _RecordingHandler:
    """Records each request head it is handed, then lets the WSGI bridge answer it."""

    def __init__(self, inner: WSGIHandler) -> None:
        self.heads: list[tuple[Any, ...]] = []
        self._inner = inner

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        self.heads.append(tuple(getattr(request, fact) for fact in _HEAD_FACTS))
        self._inner.handle(exchange)


def _echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answers with the CGI-style keys and the body of its environ (what an app reads)."""
    body = b""
    while piece := environ["wsgi.input"].read(65536):
        body += piece
    facts = sorted((key, value) for key, value in environ.items() if isinstance(value, str))
    text = repr((facts, body)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


@dataclass
class Session:
    """What the client sends: reads, with the seconds to wait after each."""

    reads: list[bytes]
    waits: list[float]
    limits: dict[str, Any] = field(default_factory=dict)
    #: The application runs in a pool that holds each call until the wait is over
    #: (a handler still working when timers fire); else in the reactor thread.
    held: bool = False


@dataclass
class Observed:
    """Everything the client and the operator could see of a session."""

    written: list[bytes]
    closed: list[bool]
    heads: list[tuple[Any, ...]]
    log: list[str]


def serve(session: Session) -> Observed:
    """Play ``session`` against a fresh connection and record what was seen."""
    clock = Clock()
    clock.advance(971186136)
    pool = QueueingPool() if session.held else None
    handler = _RecordingHandler(
        WSGIHandler(validator(_echo), reactor=SynchronousReactorThreads(), threadpool=pool)
    )
    access = AccessLog("", clock=clock)
    observed = Observed([], [], handler.heads, [])
    with capture_log_events() as events:
        connection = connect(
            handler,
            settings=HttpSettings(**session.limits),
            clock=clock,
            response_log=access,
        )
        for data, wait in zip(session.reads, session.waits, strict=True):
            if not connection.is_closed():
                connection.send(data)
            observed.written.append(connection.take())
            clock.advance(wait)
            if pool is not None:
                pool.run_all()
            observed.written.append(connection.take())
            observed.closed.append(connection.is_closed())
    observed.log = [formatEvent(event) for event in events]
    return observed


_NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Connection",
    b"connection",
    b"Proxy-Connection",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Expect",
    b"Upgrade",
    b"Keep-Alive",
    b"TE",
    b"Accept",
    b"Cookie",
    b"X-Forwarded-For",
    b"X_Under",
]
_HOSTS = [
    b"example.com",
    b"127.0.0.1:8080",
    b"[::1]:80",
    b"a b",
    b"",
    b":80",
    b"a@b",
    b"EXAMPLE.com.",
]
_CONNECTIONS = [
    b"keep-alive",
    b"Keep-Alive",
    b"close",
    b"Close",
    b"upgrade",
    b"foo, keep-alive",
    b"foo",
    b"TE",
    b"",
]
_OTHER_VALUES = [b"0", b"5", b"chunked", b"100-continue", b"websocket", b"*/*", b"a=b; c=d"]
# Bytes a mutation puts in: each byte class the grammar draws a line at.
_MUTATIONS = b' \t\r\n\x00\x7f\x80\xff%#?/\\:;"<>{}@,=Aa0'


@st.composite
def near_simple_heads(draw: st.DrawFn) -> bytes:
    """A head of the simple grammar or near it: special fields, odd hosts, mutations."""
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST", b"OPTIONS", b"PRI"]))
    pieces = st.sampled_from(list(_QUERY_CHARS)) | _ESCAPES | _ODD_ESCAPES
    target = ("/" + "".join(draw(st.lists(pieces, max_size=12)))).encode()
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0", b"1.2", b"2.0"]))
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    if draw(st.integers(0, 4)):
        head += b"Host: " + draw(st.sampled_from(_HOSTS)) + b"\r\n"
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(_NAMES) | _names)
        lower = name.lower()
        if lower == b"host":
            value = draw(st.sampled_from(_HOSTS))
        elif lower in (b"connection", b"proxy-connection"):
            value = draw(st.sampled_from(_CONNECTIONS))
        else:
            value = draw(st.sampled_from(_OTHER_VALUES) | _values)
        head += name + b":" + draw(_ows) + value + draw(_ows) + b"\r\n"
    head += b"\r\n"
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(head) - 1))
        byte = draw(st.sampled_from(list(_MUTATIONS)))
        change = draw(st.sampled_from(["replace", "insert", "delete"]))
        if change == "replace":
            head = head[:at] + bytes([byte]) + head[at + 1 :]
        elif change == "insert":
            head = head[:at] + bytes([byte]) + head[at:]
        else:
            head = head[:at] + head[at + 1 :]
    return head


# Limits small enough for drawn heads to reach them, and the defaults.
_LIMITS = [
    {},
    {"max_request_line": 8, "max_header_field": 24, "max_header_total": 48},
    {"max_header_count": 2},
    {"max_request_line": 3},
    {"keepalive_requests": 2},
    {"keepalive_timeout": 0},
    {"keepalive_time": 1.0},
    {"header_timeout": 2.0, "keepalive_timeout": 10.0},
]


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """A drawn head, a second one, then the start of a third, with waits between."""
    first = draw(near_simple_heads())
    second = draw(st.sampled_from([_WRK + b"\r\n"]) | near_simple_heads())
    third = draw(st.sampled_from([_WRK + b"\r\n"]) | near_simple_heads())
    third = third[: draw(st.integers(0, len(third)))]
    reads = [first, second] + ([third] if third else [])
    waits = [draw(st.sampled_from([0.0, 0.5, 1.5, 3.0, 11.0])) for _ in reads]
    return Session(reads, waits, draw(st.sampled_from(_LIMITS)), draw(st.booleans()))


DIFFERENTIAL = settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _compare(session: Session) -> Observed:
    with short_way(taken=False):
        general = serve(session)
    with short_way(taken=True):
        short = serve(session)
    assert short == general
    return short


@DIFFERENTIAL
@given(sessions())
def test_the_short_way_answers_as_the_general_way(session: Session) -> None:
    _compare(session)


# -- where the short way is taken ----------------------------------------------------------

_BROWSER = (
    b"GET /static/app.js?v=3 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b'If-None-Match: "abc"\r\n'
    b"\r\n"
)


@contextmanager
def counting_short_ways() -> Iterator[list[bool]]:
    """Record what each call of _take_simple_head answered."""
    answers: list[bool] = []
    take = protocol_module.HTTP11Protocol._take_simple_head

    def counted(self: Any, data: bytes, simple: Any) -> bool:
        answer = take(self, data, simple)
        answers.append(answer)
        return answer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol_module.HTTP11Protocol, "_take_simple_head", counted)
        yield answers


@pytest.mark.parametrize(
    "reads",
    [
        [_WRK + b"\r\n"] * 3,
        [_BROWSER, _BROWSER.replace(b"GET", b"HEAD", 1)],
        [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"],  # (ab -k)
        [b"GET /a?b=%zz&c=/d HTTP/1.1\r\nHost: a\r\nEmpty:\r\n\r\n"],
        [b"GET /caf%C3%A9/a%20b%2e HTTP/1.1\r\nHost: a\r\n\r\n"],
    ],
    ids=["wrk", "browser", "http-1.0-keep-alive", "query-and-empty-field", "escaped-path"],
)
def test_the_short_way_takes_a_plain_request(reads: list[bytes]) -> None:
    with counting_short_ways() as answers:
        observed = _compare(Session(reads, [0.0] * len(reads)))
    assert answers == [True] * len(reads)
    assert len(observed.heads) == len(reads)


_SECOND = _WRK + b"\r\n"


@pytest.mark.parametrize(
    ("reads", "limits"),
    [
        ([b"GET / HTTP/1.1\r\n\r\n"], {}),  # no Host: 400
        ([_WRK + b"Host: b\r\n\r\n"], {}),  # a second Host: 400
        ([b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"], {}),  # a malformed Host: 400
        ([b"GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n"], {}),  # an encoded NUL: 400
        ([_WRK + b"Connection: close\r\n\r\n", _SECOND], {}),
        ([_WRK + b"Connection: keep-alive, Upgrade\r\n\r\n"], {}),
        ([_WRK + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"], {}),
        ([b"GET / HTTP/1.0\r\n\r\n", _SECOND], {}),
        ([b"GET / HTTP/1.0\r\nConnection: TE\r\n\r\n", _SECOND], {}),
        ([_WRK + b"Content-Length: 0\r\n\r\n"], {}),
        ([_WRK + b"Transfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"], {}),
        ([_WRK + b"Expect: 100-continue\r\n\r\n"], {}),
        ([_WRK + b"\r\n", _SECOND], {"keepalive_requests": 2}),
        ([_WRK + b"\r\n"], {"keepalive_timeout": 0}),
        ([b"GET /abc HTTP/1.1\r\nHost: a\r\n\r\n"], {"max_request_line": 3}),
        ([_WRK + b"\r\n"], {"max_header_field": 20}),
        ([_WRK + b"X: y\r\n\r\n"], {"max_header_count": 1}),
        ([_WRK + b"\r\n"], {"max_header_total": 20}),
    ],
    ids=[
        "no-host",
        "two-hosts",
        "bad-host",
        "encoded-nul",
        "connection-close",
        "connection-upgrade",
        "upgrade",
        "http-1.0-closing",
        "http-1.0-other-option",
        "content-length",
        "chunked",
        "expect",
        "last-of-keepalive-requests",
        "keepalive-off",
        "target-over-limit",
        "field-over-limit",
        "count-over-limit",
        "section-over-limit",
    ],
)
def test_the_short_way_leaves_the_rest_to_the_general_way(
    reads: list[bytes], limits: dict[str, Any]
) -> None:
    with counting_short_ways() as answers:
        _compare(Session(reads, [0.0] * len(reads), limits))
    # The head in question fits the grammar, and it was offered last and declined
    # (the first of keepalive_requests 2 is taken; nothing after it is offered).
    assert rules.SIMPLE_HEAD.fullmatch(reads[-1 if limits.get("keepalive_requests") else 0])
    assert answers[-1] is False
    assert answers.count(True) == (1 if limits.get("keepalive_requests") else 0)


def test_the_timeouts_after_a_short_way_request_are_the_general_ways() -> None:
    """Idle and unfinished connections time out at the same moments either way.

    A keep-alive connection left idle closes, and a head left unfinished gets its 408
    (the short way arms no header timer of its own).
    """
    reads = [_WRK + b"\r\n", b"GET /late HTTP/1.1\r\n"]
    for waits, held in itertools.product(
        itertools.product([0.0, 2.5, 4.9, 5.1, 61.0], repeat=2), [False, True]
    ):
        _compare(Session(reads, list(waits), held=held))
        _compare(
            Session(reads, list(waits), {"header_timeout": 3.0, "keepalive_timeout": 30.0}, held)
        )


# -- contexts the drawn sessions do not reach ----------------------------------------------

_PLAIN = _WRK + b"\r\n"
_BIG = _WRK + b"Cookie: " + b"c" * 3000 + b"\r\n\r\n"  # (over PIPELINE_SLICE: sliced)
_MANY = _WRK + b"".join(b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n"  # (100 fields)


@pytest.mark.parametrize(
    "reads",
    [
        [_WRK + b"Content-Length: 3\r\n\r\nabc", _PLAIN, b"GET /p HTTP/1.1\r\n"],
        [_WRK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", _PLAIN, b"GET"],
        [_WRK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r", b"\n", _PLAIN],
        [_WRK + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n\r\n", _PLAIN, b"GET /p"],
        [_PLAIN + _PLAIN, _PLAIN, b"GET /p HTTP/1.1\r\n"],
        [
            _WRK + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            _PLAIN,
            b"GET /p HTTP/1.1\r\n",
        ],
        [_BIG, _BIG, _PLAIN],
        [_MANY, _MANY, _PLAIN],
        [b"\r\n", _PLAIN, b"\n", _PLAIN],
        [_PLAIN + b"\r\n", _PLAIN, b"\r"],
        [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] * 2 + [b"GET / HTTP/1.0\r\n"],
        [_WRK + b"Proxy-Connection: close\r\n\r\n", _PLAIN, _PLAIN],
        [_WRK + b"Proxy-Connection: upgrade\r\n\r\n", _PLAIN, _PLAIN],
        [b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n", _PLAIN],
        [b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", _PLAIN, b"GET /x HTTP/1.1\r\n"],
        [b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", _PLAIN],
        [b"GE", _PLAIN[2:], _PLAIN],
        [_WRK + b"Content-Length: 0\r\n\r\n", _PLAIN],
    ],
    ids=[
        "after-a-body",
        "after-a-chunked-body",
        "after-a-chunked-body-split-in-its-end",
        "after-a-trailer",
        "after-pipelined-heads",
        "after-an-upgrade-not-switched",
        "sliced-heads",
        "max-header-count-fields",
        "after-empty-lines",
        "after-an-empty-line-and-before-a-bare-cr",
        "http-1.0-keep-alive",
        "proxy-connection-close",
        "proxy-connection-upgrade",
        "http-1.0-proxy-connection-keep-alive",
        "after-a-post-without-body",
        "after-an-asterisk-form",
        "after-a-split-method",
        "after-content-length-0",
    ],
)
@pytest.mark.parametrize("limits", [{}, {"header_timeout": 2.0, "keepalive_timeout": 10.0}])
@pytest.mark.parametrize("wait", [0.0, 3.0])
def test_the_short_way_after_what_only_the_general_way_reads(
    reads: list[bytes], limits: dict[str, Any], wait: float
) -> None:
    """Whatever came before on the connection, a short-way head is read as llhttp reads it."""
    _compare(Session(reads, [wait] * len(reads), limits))
    if b"Content-Length: 3\r\n\r\n" not in reads[0]:
        # (The pool runs the application at once, in this thread: one that reads a
        # body still to come would wait for ever.)
        _compare(Session(reads, [wait] * len(reads), limits, held=True))


@pytest.mark.parametrize(
    ("fields", "limits"),
    [
        (b"X: " + b"v" * 19 + b"\r\n", {"max_header_field": 24}),  # (name, value, 2: 24)
        (b"X: " + b"v" * 20 + b"\r\n", {"max_header_field": 24}),
        (b"", {"max_header_total": len(b"Host127.0.0.1:8080") + 2}),
        (b"", {"max_header_total": len(b"Host127.0.0.1:8080") + 1}),
        (b"X: y\r\n", {"max_header_count": 2}),
        (b"X: y\r\nZ: w\r\n", {"max_header_count": 2}),
    ],
)
def test_the_limits_at_their_bounds_are_the_general_ways(
    fields: bytes, limits: dict[str, Any]
) -> None:
    _compare(Session([_WRK + fields + b"\r\n", _PLAIN], [0.0, 0.0], limits))
    target = b"/" + b"a" * 7
    head = b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target
    for most in (len(target) - 1, len(target)):
        _compare(Session([head, head], [0.0, 0.0], {"max_request_line": most}))


def _serve_around(between: str, taken: bool) -> tuple[bytes, bool, list[str]]:
    """A request, then ``between`` happens to the server, then a plain request."""
    clock = Clock()
    handler = WSGIHandler(validator(_echo), reactor=SynchronousReactorThreads(), threadpool=None)
    access = AccessLog("", clock=clock)
    with short_way(taken), capture_log_events() as events:
        connection = connect(handler, clock=clock, response_log=access)
        connection.send(_PLAIN)
        if between == "shutdown":
            connection.factory.shut_down()
        elif between == "capacity":
            # (At max_connections, a factory given no port counts as waited on.)
            connection.factory.at_capacity = True
        elif between == "close-when-idle":
            connection.protocol.close_when_idle()
        connection.send(_PLAIN)
        clock.advance(1.0)
        connection.send(_PLAIN)
        written = connection.take()
    return written, connection.is_closed(), [formatEvent(event) for event in events]


@pytest.mark.parametrize("between", ["shutdown", "capacity", "close-when-idle"])
def test_a_request_while_the_server_closes_is_answered_as_the_general_way_answers_it(
    between: str,
) -> None:
    assert _serve_around(between, taken=True) == _serve_around(between, taken=False)


def _proxied(reads: list[bytes], taken: bool) -> tuple[bytes, list[str]]:
    from tests.test_proxy_protocol import Proxied

    log: list[str] = []
    with short_way(taken):
        connection = Proxied(log)
        connection.send(*reads)
    return connection.transport.value(), log


@pytest.mark.parametrize(
    "reads",
    [
        [b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n", _PLAIN, _PLAIN],
        [b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n" + _PLAIN, _PLAIN],
        [b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n", b"\r\n" + _PLAIN, _PLAIN],
        [b"PROXY TCP4 nowhere 192.0.2.10 51000 443\r\n", _PLAIN],
    ],
    ids=["header-alone", "header-and-head", "empty-line-first", "no-ip-address"],
)
def test_a_proxy_protocol_connection_is_read_as_the_general_way_reads_it(
    reads: list[bytes],
) -> None:
    """The addresses the PROXY header names are the ones the short way's requests get."""
    assert _proxied(reads, taken=True) == _proxied(reads, taken=False)
