"""gzip on the fly for application and proxy mounts (nginx's ``gzip on``).

The choice (``accepts_gzip``, ``gzip_plan``) with plain pytest; whole responses in
memory through the routing table a configuration file builds, read by h11 and
decompressed with ``gzip``; the proxy over real sockets in ``test_site_end_to_end``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from tests.test_access import head as request_head
from twistwsgi import cli
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.http.compression import GzipSettings, accepts_gzip, gzip_plan
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder
from twistwsgi.testing import (
    ParsedResponse,
    PullingTransport,
    capture_log_events,
    connect,
    parse_responses,
)

PAGE = b"<html><body>" + b"<p>Hello, compressed world.</p>\n" * 400 + b"</body></html>\n"


def head(*fields: tuple[bytes, bytes], version: bytes = b"1.1") -> RequestHead:
    return request_head(("127.0.0.1", 1), *fields, version=version)


# -- whether the client accepts gzip (RFC 9110 12.5.3) -----------------------------------


@pytest.mark.parametrize(
    ("values", "accepted"),
    [
        ([b"gzip"], True),
        ([b"GZIP"], True),
        ([b"x-gzip"], True),
        ([b"gzip, deflate, br"], True),
        ([b"br;q=1.0, gzip;q=0.8, *;q=0.1"], True),
        ([b"gzip;q=0.001"], True),
        ([b"gzip;q=0"], False),
        ([b"gzip; q=0.0"], False),
        ([b"gzip;q=0, *"], False),  # named explicitly: the star does not bring it back
        ([b"*"], True),
        ([b"*;q=0"], False),
        ([b"deflate, br"], False),
        ([b"identity"], False),
        ([b""], False),
        ([], False),  # no preference: the identity
        ([b"gzip;q=bad"], False),
        ([b"gzip;q=2"], False),
        ([b"deflate", b"gzip"], True),  # two field lines are one list
    ],
)
def test_accepts_gzip(values: list[bytes], accepted: bool) -> None:
    request = head(*((b"Accept-Encoding", value) for value in values))
    assert accepts_gzip(request) is accepted


# -- which responses, and their fields --------------------------------------------------------

ACCEPTS = (b"Accept-Encoding", b"gzip")
HTML = [(b"Content-Type", b"text/html; charset=utf-8")]


def plan(
    headers: list[tuple[bytes, bytes]],
    status: int = 200,
    request: RequestHead | None = None,
    settings: GzipSettings | None = None,
) -> tuple[list[tuple[bytes, bytes]], bool] | None:
    return gzip_plan(request or head(ACCEPTS), status, headers, settings or GzipSettings())


def test_a_compressed_response_loses_its_length_and_gets_its_coding_and_vary() -> None:
    fields, compress = plan([*HTML, (b"Content-Length", b"5000"), (b"ETag", b'"v1"')]) or ([], 0)
    assert compress is True
    assert fields == [
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"ETag", b'W/"v1"'),  # the bytes differ from the identity form's
        (b"Vary", b"Accept-Encoding"),
        (b"Content-Encoding", b"gzip"),
    ]


def test_a_client_that_does_not_accept_gzip_gets_vary_only() -> None:
    """So a cache keeps the two forms apart (nginx's gzip_vary on)."""
    headers = [*HTML, (b"Content-Length", b"5000")]
    assert plan(headers, request=head()) == ([*headers, (b"Vary", b"Accept-Encoding")], False)


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        (b"Cookie", b"Cookie, Accept-Encoding"),
        (b"accept-encoding", b"accept-encoding"),
        (b"Cookie, Accept-Encoding", b"Cookie, Accept-Encoding"),
        (b"*", b"*"),
    ],
)
def test_vary_is_extended_once(vary: bytes, expected: bytes) -> None:
    fields, _ = plan([*HTML, (b"Vary", vary)]) or ([], False)
    assert [value for name, value in fields if name == b"Vary"] == [expected]


@pytest.mark.parametrize(
    ("headers", "status", "request_version"),
    [
        ([*HTML, (b"Content-Encoding", b"br")], 200, b"1.1"),  # coded already
        ([*HTML, (b"Cache-Control", b"public, no-transform")], 200, b"1.1"),
        ([(b"Content-Type", b"image/png")], 200, b"1.1"),
        ([], 200, b"1.1"),  # no Content-Type: nothing says it is text
        ([*HTML, (b"Content-Length", b"255")], 200, b"1.1"),  # below gzip_min_length
        (HTML, 204, b"1.1"),
        (HTML, 205, b"1.1"),  # no content either (RFC 9110 15.3.6)
        (HTML, 206, b"1.1"),  # its Content-Range counts the identity's bytes
        (HTML, 304, b"1.1"),
        (HTML, 200, b"1.0"),  # no chunked framing: nginx's gzip_http_version 1.1
    ],
)
def test_responses_left_as_they_are(
    headers: list[tuple[bytes, bytes]], status: int, request_version: bytes
) -> None:
    assert plan(headers, status, head(ACCEPTS, version=request_version)) is None


def test_a_known_length_is_held_to_the_minimum_as_a_content_length_is() -> None:
    """A body the server has whole (a list result) knows its length without the field."""
    assert gzip_plan(head(ACCEPTS), 200, HTML, GzipSettings(), known_length=10) is None
    assert gzip_plan(head(ACCEPTS), 200, HTML, GzipSettings(), known_length=1000)


def test_error_pages_are_compressed_too() -> None:
    assert (plan(HTML, 404) or ([], False))[1] is True


def test_a_whole_type_matches_with_a_star() -> None:
    settings = GzipSettings(types=frozenset({"text/*"}))
    assert (plan([(b"Content-Type", b"text/x-custom")], settings=settings) or ([], 0))[1]
    assert plan([(b"Content-Type", b"application/json")], settings=settings) is None


# -- whole responses ---------------------------------------------------------------------------


def _page(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))],
    )
    return [PAGE]


def _pieces(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The page in 100 pieces of unknown total length, as a template engine yields."""
    start_response("200 OK", [("Content-Type", "text/html")])
    size = len(PAGE) // 100 + 1
    return (PAGE[start : start + size] for start in range(0, len(PAGE), size))


def _small(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"small"]


def _drip(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Writes with the write() callable, then checks what the client got so far."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first line\n")
    SEEN.append(environ["test.transport"].value())
    write(b"second line\n")
    return []


def _short(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "10000")])
    # Streamed: a list this short of its length is answered 500 before anything is sent.
    return iter([PAGE[:3000]])


def _long(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "300")])
    return iter([PAGE[:3000]])


def _ranged(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Accept-Ranges", "bytes")])
    return [PAGE]


def _reset(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("205 Reset Content", [("Content-Type", "text/plain")])
    return []


#: What the client had received when _drip looked (set by the application).
SEEN: list[bytes] = []

#: Where the file the ``file`` application hands over is (set by the test).
PAGE_FILE: list[Path] = []


def _file(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))])
    wrapper = environ["wsgi.file_wrapper"]
    return wrapper(PAGE_FILE[-1].open("rb"))  # type: ignore[no-any-return]


APPS = {
    **{
        name: validator(app)
        for name, app in (("page", _page), ("pieces", _pieces), ("small", _small))
    },
    # Not wrapped: the validator's iterator would hide the file wrapper (the file
    # would be read and written as any body instead of handed to the reactor) and
    # the list (sent whole in one write, its length known with the head).
    "file": _file,
    "listed": _page,
    # Not wrapped either: they break the rules the validator enforces on purpose.
    "short": _short,
    "long": _long,
    **{name: validator(app) for name, app in (("ranged", _ranged), ("reset", _reset))},
}


def load(directory: Path, server: str, mounts: str) -> ServerConfig:
    site = directory / "site.toml"
    host = f'[[host]]\nnames = ["a.test"]\n{mounts}'
    site.write_text(f'[server]\nlisten = ["tcp:80"]\nthreads = 0\n{server}\n{host}')
    return cli.load_config({"config": str(site)})


def app_mount(path: str, app: str, extra: str = "") -> str:
    return f'[[host.mount]]\npath = "{path}"\napp = "{app}"\n{extra}\n'


SITE = (
    app_mount("/page", "page")
    + app_mount("/pieces", "pieces")
    + app_mount("/small", "small")
    + app_mount("/file", "file")
)


def exchange(
    config: ServerConfig, requests: list[tuple[bytes, bytes, list[bytes]]]
) -> list[ParsedResponse]:
    """Send ``(method, path, fields)`` requests on one connection; the answers."""
    table = SiteBuilder(reactor=MemoryReactorClock(), threadpool=None, load=APPS.__getitem__).build(
        config
    )
    connection = connect(Router(table), transport=PullingTransport())  # (the file)
    for method, path, fields in requests:
        more = b"".join(field + b"\r\n" for field in fields)
        connection.protocol.dataReceived(
            method + b" " + path + b" HTTP/1.1\r\nHost: a.test\r\n" + more + b"\r\n"
        )
    return parse_responses(connection.transport.value(), [method for method, _, _ in requests])


GZIP = b"Accept-Encoding: gzip, deflate"


def test_a_page_is_sent_gzipped_and_decompresses_to_itself(tmp_path: Path) -> None:
    [response] = exchange(load(tmp_path, "gzip = true", SITE), [(b"GET", b"/page", [GZIP])])
    assert response.status == 200
    assert response.header(b"content-encoding") == b"gzip"
    assert response.header(b"content-length") is None
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.header(b"vary") == b"Accept-Encoding"
    assert len(response.body) < len(PAGE) // 10
    assert gzip.decompress(response.body) == PAGE


def test_a_page_sent_in_one_write_is_framed_for_its_compressed_length(tmp_path: Path) -> None:
    """A list result goes out with the head in one write, its length known then:
    the uncompressed length must not become the Content-Length.
    """
    config = load(tmp_path, "gzip = true", app_mount("/", "listed"))
    [response] = exchange(config, [(b"GET", b"/", [GZIP])])
    assert response.header(b"content-length") is None
    assert gzip.decompress(response.body) == PAGE


def test_a_streamed_page_and_the_next_on_the_connection(tmp_path: Path) -> None:
    """One compressor per response: the second starts a gzip stream of its own."""
    answers = exchange(
        load(tmp_path, "gzip = true", SITE),
        [(b"GET", b"/pieces", [GZIP]), (b"GET", b"/page", [GZIP]), (b"GET", b"/page", [])],
    )
    streamed, whole, identity = answers
    assert gzip.decompress(streamed.body) == PAGE
    assert gzip.decompress(whole.body) == PAGE
    assert identity.header(b"content-encoding") is None
    assert identity.header(b"content-length") == str(len(PAGE)).encode()
    assert identity.header(b"vary") == b"Accept-Encoding"
    assert identity.body == PAGE


def test_head_has_the_fields_of_a_get(tmp_path: Path) -> None:
    [response] = exchange(load(tmp_path, "gzip = true", SITE), [(b"HEAD", b"/page", [GZIP])])
    assert response.header(b"content-encoding") == b"gzip"
    assert response.header(b"content-length") is None
    assert response.body == b""


def test_short_and_file_responses_go_as_they_are(tmp_path: Path) -> None:
    """A file handed over with wsgi.file_wrapper keeps its Content-Length and goes
    out zero-copy; a body under gzip_min_length is not worth the gzip frame.
    """
    PAGE_FILE.append(tmp_path / "page.html")
    PAGE_FILE[-1].write_bytes(PAGE)
    small, from_file = exchange(
        load(tmp_path, "gzip = true", SITE),
        [(b"GET", b"/small", [GZIP]), (b"GET", b"/file", [GZIP])],
    )
    assert (small.header(b"content-encoding"), small.body) == (None, b"small")
    assert from_file.header(b"content-encoding") is None
    assert from_file.body == PAGE


def test_a_mount_turns_it_on_or_off(tmp_path: Path) -> None:
    mounts = app_mount("/page", "page", "gzip = false") + app_mount(
        "/pieces", "pieces", "gzip = true"
    )
    off, on = exchange(
        load(tmp_path, "", mounts), [(b"GET", b"/page", [GZIP]), (b"GET", b"/pieces", [GZIP])]
    )
    assert off.header(b"content-encoding") is None and off.header(b"vary") is None
    assert on.header(b"content-encoding") == b"gzip"


def test_gzip_level_and_types_come_from_the_server(tmp_path: Path) -> None:
    config = load(tmp_path, 'gzip = true\ngzip_types = ["text/plain"]\ngzip_level = 9', SITE)
    [page] = exchange(config, [(b"GET", b"/page", [GZIP])])
    assert page.header(b"content-encoding") is None  # text/html is not listed now


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("gzip_level = 0", "a gzip level is 1 (fastest) to 9 (smallest), got 0"),
        ('gzip_types = ["html"]', "'html' is not a media type (such as text/html or text/*)"),
        ('gzip_types = ["*/*"]', "'*/*' is not a media type (such as text/html or text/*)"),
    ],
)
def test_settings_that_do_not_parse(tmp_path: Path, line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, line, SITE)
    assert str(raised.value) == f"site.toml: server.{line.split(' ', maxsplit=1)[0]}: {problem}"


def test_each_write_reaches_the_client_at_once(tmp_path: Path) -> None:
    """PEP 3333: a server may not hold back what the application wrote. Each piece
    is flushed from the compressor: a streamed page or long poll is not delayed
    until the end (or until the compressor has a block).
    """
    config = load(tmp_path, "gzip = true", app_mount("/", "drip"))
    table = SiteBuilder(reactor=MemoryReactorClock(), threadpool=None, load=_with_transport).build(
        config
    )
    connection = connect(Router(table))
    TRANSPORTS.append(connection.transport)
    SEEN.clear()
    connection.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.test\r\n" + GZIP + b"\r\n\r\n")
    [so_far] = SEEN
    body = so_far.split(b"\r\n\r\n", 1)[1]
    first = _unchunked(body)
    assert zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(first) == b"first line\n"
    [response] = parse_responses(connection.transport.value())
    assert gzip.decompress(response.body) == b"first line\nsecond line\n"


#: The in-memory transport of the connection _with_transport's application sees.
TRANSPORTS: list[Any] = []


def _with_transport(reference: str) -> Any:
    app = APPS[reference] if reference != "drip" else _drip

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        environ["test.transport"] = TRANSPORTS[-1]
        return app(environ, start_response)

    return validator(wrapped) if reference != "drip" else wrapped


def _unchunked(body: bytes) -> bytes:
    """The data of the complete chunks at the start of a chunked body."""
    data = b""
    while b"\r\n" in body:
        size_line, rest = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0 or len(rest) < size + 2:
            break
        data += rest[:size]
        body = rest[size + 2 :]
    return data


def test_a_declared_length_is_held_to_when_compressed(tmp_path: Path) -> None:
    """Short of its Content-Length: the connection ends with no last chunk and no
    gzip trailer, so no client takes it for whole. Longer: cut at the length, as
    a response sent as it is would be.
    """
    config = load(
        tmp_path, "gzip = true", app_mount("/short", "short") + app_mount("/long", "long")
    )
    with capture_log_events() as events:
        table = SiteBuilder(
            reactor=MemoryReactorClock(), threadpool=None, load=APPS.__getitem__
        ).build(config)
        short = connect(Router(table))
        short.protocol.dataReceived(b"GET /short HTTP/1.1\r\nHost: a.test\r\n" + GZIP + b"\r\n\r\n")
        long = connect(Router(table))
        long.protocol.dataReceived(b"GET /long HTTP/1.1\r\nHost: a.test\r\n" + GZIP + b"\r\n\r\n")
    assert short.transport.disconnecting or short.transport.disconnected
    assert not short.transport.value().endswith(b"0\r\n\r\n")
    [cut] = parse_responses(long.transport.value())
    assert gzip.decompress(cut.body) == PAGE[:300]
    lines = [formatEvent(event) for event in events]
    assert any("ended 7000 bytes short of its Content-Length" in line for line in lines)
    assert any("is longer than its Content-Length" in line for line in lines)


def test_a_compressed_response_offers_no_ranges(tmp_path: Path) -> None:
    """A client resuming the download would ask for the identity's bytes."""
    [response] = exchange(
        load(tmp_path, "gzip = true", app_mount("/", "ranged")), [(b"GET", b"/", [GZIP])]
    )
    assert response.header(b"content-encoding") == b"gzip"
    assert response.header(b"accept-ranges") is None


def test_205_and_short_known_bodies_are_not_compressed(tmp_path: Path) -> None:
    """A 205 carries no content (RFC 9110 15.3.6); a body whose whole length the
    server knows is held to gzip_min_length as a Content-Length is.
    """
    config = load(
        tmp_path, "gzip = true", app_mount("/reset", "reset") + app_mount("/small", "small")
    )
    reset, small = exchange(config, [(b"GET", b"/reset", [GZIP]), (b"GET", b"/small", [GZIP])])
    assert reset.status == 205 and reset.header(b"content-encoding") is None
    assert small.header(b"content-encoding") is None


def test_gzip_level_is_the_compressors(tmp_path: Path) -> None:
    """The gzip header's XFL byte (RFC 1952 2.3.1): 2 for the slowest level, 4 for
    the fastest.
    """
    for level, flag in ((1, 4), (9, 2)):
        [response] = exchange(
            load(tmp_path, f"gzip = true\ngzip_level = {level}", SITE), [(b"GET", b"/page", [GZIP])]
        )
        assert response.body[8] == flag


def test_check_config_says_gzip_is_on(tmp_path: Path) -> None:
    from twistwsgi.site import describe_routing

    text = describe_routing(load(tmp_path, "gzip = true", SITE))
    assert "gzip: applications, proxied upstreams, static files and return mounts, level 1" in (
        text
    )
    assert "gzip:" not in describe_routing(load(tmp_path, "", SITE))


def test_a_directory_listing_is_gzipped_as_a_page(tmp_path: Path) -> None:
    """A large directory's page is mostly markup (it was always sent whole)."""
    (tmp_path / "files").mkdir()
    for number in range(200):
        (tmp_path / "files" / f"report-{number:04}.csv").write_text("x")
    config = load(
        tmp_path,
        "gzip = true",
        '[[host.mount]]\npath = "/files"\nstatic = "files"\nlisting = true\n',
    )
    plain, packed, headed = exchange(
        config,
        [(b"GET", b"/files/", []), (b"GET", b"/files/", [GZIP]), (b"HEAD", b"/files/", [GZIP])],
    )
    assert plain.header(b"content-encoding") is None
    assert plain.header(b"vary") == b"Accept-Encoding"
    assert b"report-0199.csv" in plain.body
    assert packed.header(b"content-encoding") == b"gzip"
    assert packed.header(b"vary") == b"Accept-Encoding"
    assert gzip.decompress(packed.body) == plain.body
    assert len(packed.body) < len(plain.body) // 5
    assert headed.header(b"content-length") == packed.header(b"content-length")
    unzipped = exchange(
        load(tmp_path, "", '[[host.mount]]\npath = "/files"\nstatic = "files"\nlisting = true\n'),
        [(b"GET", b"/files/", [GZIP])],
    )[0]
    assert unzipped.header(b"content-encoding") is None and unzipped.header(b"vary") is None


@pytest.mark.parametrize(
    "server",
    [
        "gzip = true\ngzip_min_length = 100000",  # the page is shorter
        'gzip = true\ngzip_types = ["application/json"]',  # not HTML
    ],
)
def test_a_listing_follows_the_gzip_settings(tmp_path: Path, server: str) -> None:
    (tmp_path / "files").mkdir()
    for number in range(200):
        (tmp_path / "files" / f"report-{number:04}.csv").write_text("x")
    config = load(
        tmp_path, server, '[[host.mount]]\npath = "/files"\nstatic = "files"\nlisting = true\n'
    )
    [response] = exchange(config, [(b"GET", b"/files/", [GZIP])])
    assert response.header(b"content-encoding") is None
