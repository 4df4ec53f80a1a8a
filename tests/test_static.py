"""Static files through the router and the protocol: RFC 9110 conditional and range
requests, precompressed siblings, directories, fall-through, X-Accel-Redirect, and
path traversal. The files themselves are the oracle for bodies; h11 parses every
response, and the standard library's email parser reads multipart/byteranges.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import errno
import functools
import gzip
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent

from twistwsgi import static
from twistwsgi.cli import load_config
from twistwsgi.http.compression import GzipSettings
from twistwsgi.http.wire import http_date
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder
from twistwsgi.static import StaticHandler, StaticOptions
from twistwsgi.testing import (
    ParsedResponse,
    PullingTransport,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    capture_log_events,
    connect,
    parse_responses,
)

SECRET = b"top secret, outside the served directory"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A served directory, and a secret file beside it."""
    return make_site(tmp_path)


def make_site(tmp_path: Path) -> Path:
    """The directory of :func:`site` (for other modules' fixtures)."""
    root = tmp_path / "www"
    (root / "css").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "empty").mkdir()
    (root / "sub").mkdir()
    (root / "a.txt").write_bytes(b"hello static\n")
    (root / "css" / "app.css").write_bytes(b"body { color: red }\n")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "big.bin").write_bytes(os.urandom(200_000))
    (root / "page.html").write_bytes(b"<p>plain</p>")
    (root / "page.html.gz").write_bytes(b"gzip bytes")
    (root / "page.html.br").write_bytes(b"brotli bytes")
    (root / ".env").write_bytes(b"SECRET=1")
    (root / "sub" / ".hidden").write_bytes(b"hidden")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "acme").write_bytes(b"token")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "link_out").symlink_to(outside)
    (root / "link_file").symlink_to(tmp_path / "secret.txt")
    (root / "link_in").symlink_to(root / "a.txt")
    os.mkfifo(root / "fifo")
    return root


def config_text(root: Path, options: str = "", app: str | None = None) -> str:
    text = '[[host]]\nnames = ["files.example"]\ndefault = true\n'
    text += f'[[host.mount]]\npath = "/static"\nstatic = "{root}"\n{options}\n'
    if app is not None:
        text += f'[[host.mount]]\npath = "/"\napp = "{app}"\n'
    return text


def router_for(tmp_path: Path, text: str) -> Router:
    path = tmp_path / "site.toml"
    path.write_text(text)
    config = load_config({"config": str(path)})
    reactor = SynchronousReactorThreads()
    reactor.advance(time.time())  # the files' modification times are real ones
    builder = SiteBuilder(reactor=reactor, threadpool=SynchronousThreadPool())
    return Router(builder.build(config))


def request(
    router: Router | StaticHandler,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    method: bytes = b"GET",
) -> ParsedResponse:
    connection = connect(router, transport=PullingTransport())
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    connection.send(
        method + b" " + target + b" HTTP/1.1\r\nHost: files.example\r\n" + fields + b"\r\n"
    )
    [response] = parse_responses(connection.take(), [method])
    return response


@pytest.fixture
def files(site: Path, tmp_path: Path) -> Router:
    return router_for(tmp_path, config_text(site))


# -- plain GET and HEAD -------------------------------------------------------------------


def test_get_sends_the_file_with_validators(files: Router, site: Path) -> None:
    """GET answers with the bytes, a charset for text, a strong ETag, Last-Modified,
    Accept-Ranges and nosniff.
    """
    response = request(files, b"/static/a.txt")
    assert response.status == 200
    assert response.body == (site / "a.txt").read_bytes()
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    etag = response.header(b"etag")
    assert etag is not None and etag.startswith(b'"') and not etag.startswith(b"W/")
    assert response.header(b"last-modified") is not None
    assert response.header(b"accept-ranges") == b"bytes"
    assert response.header(b"x-content-type-options") == b"nosniff"


def test_large_file_is_sent_whole(files: Router, site: Path) -> None:
    """A file larger than the memory cache goes out through the file sender intact."""
    response = request(files, b"/static/big.bin")
    assert response.body == (site / "big.bin").read_bytes()
    assert response.header(b"content-type") == b"application/octet-stream"


def test_head_has_the_headers_and_no_body(files: Router) -> None:
    """HEAD sends the same headers (the length included) and no body."""
    response = request(files, b"/static/big.bin", method=b"HEAD")
    assert response.header(b"content-length") == b"200000"
    assert response.body == b""


def test_other_methods_get_405_with_allow(files: Router) -> None:
    """POST and friends are 405 with Allow: GET, HEAD (RFC 9110 15.5.6)."""
    response = request(files, b"/static/a.txt", method=b"DELETE")
    assert response.status == 405
    assert response.header(b"allow") == b"GET, HEAD"


def test_a_changed_file_is_never_served_stale(files: Router, site: Path) -> None:
    """A cached small file is checked on every request: new content, new ETag."""
    first = request(files, b"/static/a.txt")
    (site / "a.txt").write_bytes(b"changed content, longer than before\n")
    second = request(files, b"/static/a.txt")
    assert second.body == b"changed content, longer than before\n"
    assert second.header(b"etag") != first.header(b"etag")


def test_a_rewrite_keeping_size_and_mtime_is_not_served_stale(files: Router, site: Path) -> None:
    """Rewritten in place with the same size and its old mtime restored (cp -p, rsync
    -t), a cached file is still read again: its change time moved.
    """
    path = site / "a.txt"
    before = path.stat()
    first = request(files, b"/static/a.txt")
    path.write_bytes(bytes(reversed(first.body)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    second = request(files, b"/static/a.txt")
    assert second.body == bytes(reversed(first.body)) != first.body


@pytest.mark.parametrize("size", [13, 300_000])  # from memory, and from disk
def test_a_rewrite_keeping_size_and_mtime_gets_a_new_etag(
    files: Router, site: Path, size: int
) -> None:
    """Rewritten in place with the same size and its old mtime put back (cp -p, rsync
    -t --inplace, a build that dates every file alike), a file is another
    representation: its strong ETag changes (RFC 9110 8.8.3), so a client holding the
    old one gets the new bytes, not a 304, and no range of them to splice into the old
    ones (If-Range, RFC 9110 13.1.5).
    """
    path = site / "rewritten.bin"
    path.write_bytes(b"a" * size)
    before = path.stat()
    first = request(files, b"/static/rewritten.bin")
    old_tag = first.header(b"etag")
    assert old_tag is not None
    path.write_bytes(b"b" * size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    second = request(files, b"/static/rewritten.bin")
    assert second.body == b"b" * size
    assert second.header(b"etag") != old_tag
    revalidated = request(files, b"/static/rewritten.bin", [(b"if-none-match", old_tag)])
    assert (revalidated.status, revalidated.body) == (200, b"b" * size)
    resumed = request(
        files, b"/static/rewritten.bin", [(b"range", b"bytes=5-"), (b"if-range", old_tag)]
    )
    assert (resumed.status, resumed.body) == (200, b"b" * size)


@pytest.mark.parametrize("size", [13, 300_000])  # from memory, and from disk
def test_a_file_removed_and_made_again_alike_is_not_served_stale(
    files: Router, site: Path, size: int
) -> None:
    """Removed, then written again with the same size and the old mtime: the file
    system may hand the new file the old inode number (ext4 and tmpfs often do), so
    device, inode, size and mtime can all agree; its change time does not. New bytes,
    new ETag, whether or not the number came back.
    """
    path = site / "recreated.bin"
    path.write_bytes(b"a" * size)
    before = path.stat()
    first = request(files, b"/static/recreated.bin")
    path.unlink()
    path.write_bytes(b"b" * size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = request(files, b"/static/recreated.bin")
    assert second.body == b"b" * size
    assert second.header(b"etag") != first.header(b"etag")


def test_a_file_dated_in_the_future_is_last_modified_now(site: Path) -> None:
    """RFC 9110 8.8.2.1: Last-Modified is never later than the response; and a
    client holding it still sees the file's next change.
    """
    clock = [1_800_000_000.0]
    handler = StaticHandler(StaticOptions(root=str(site)), now=lambda: clock[0])
    target = site / "future.txt"
    target.write_bytes(b"from the future")
    os.utime(target, (2_000_000_000, 2_000_000_000))
    first = request(handler, b"/future.txt")
    assert first.header(b"last-modified") == http_date(1_800_000_000)
    since = [(b"if-modified-since", http_date(1_800_000_000))]
    assert request(handler, b"/future.txt", since).status == 304
    clock[0] += 60
    target.write_bytes(b"changed, still dated ahead")
    os.utime(target, (2_000_000_000, 2_000_000_000))
    changed = request(handler, b"/future.txt", since)
    assert (changed.status, changed.body) == (200, b"changed, still dated ahead")
    assert changed.header(b"last-modified") == http_date(1_800_000_060)


def test_cache_control_and_extra_headers_from_the_mount(site: Path, tmp_path: Path) -> None:
    """cache_control and headers options are sent with every file."""
    router = router_for(
        tmp_path,
        config_text(
            site,
            'cache_control = "public, max-age=31536000, immutable"\n'
            'headers = { X-Frame-Options = "DENY" }',
        ),
    )
    response = request(router, b"/static/css/app.css")
    assert response.header(b"cache-control") == b"public, max-age=31536000, immutable"
    assert response.header(b"x-frame-options") == b"DENY"
    assert response.header(b"content-type") == b"text/css; charset=utf-8"


# -- conditional requests (RFC 9110 13) ----------------------------------------------------


def validators(router: Router, target: bytes = b"/static/a.txt") -> tuple[bytes, bytes]:
    response = request(router, target)
    etag = response.header(b"etag")
    modified = response.header(b"last-modified")
    assert etag is not None and modified is not None
    return etag, modified


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({b"if-none-match": "{etag}"}, 304),
        ({b"if-none-match": "W/{etag}"}, 304),  # weak comparison
        ({b"if-none-match": '"other", {etag}'}, 304),
        ({b"if-none-match": "*"}, 304),
        ({b"if-none-match": '"other"'}, 200),
        ({b"if-modified-since": "{modified}"}, 304),
        ({b"if-modified-since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200),
        ({b"if-modified-since": "not a date"}, 200),
        # If-None-Match wins over If-Modified-Since (13.2.2 step 3 before step 4).
        ({b"if-none-match": '"other"', b"if-modified-since": "{modified}"}, 200),
        ({b"if-match": "{etag}"}, 200),
        ({b"if-match": "W/{etag}"}, 412),  # strong comparison
        ({b"if-match": '"other"'}, 412),
        ({b"if-match": "*"}, 200),
        ({b"if-unmodified-since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 412),
        ({b"if-unmodified-since": "{modified}"}, 200),
        # If-Match wins over If-Unmodified-Since (step 1 before step 2).
        ({b"if-match": "{etag}", b"if-unmodified-since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200),
        # A failed If-Match is 412 even when If-None-Match would give 304.
        ({b"if-match": '"other"', b"if-none-match": "{etag}"}, 412),
    ],
)
def test_preconditions_follow_rfc9110_13_2_2(
    files: Router, fields: dict[bytes, str], status: int
) -> None:
    """The four preconditions give 200, 304 or 412 in the RFC's order."""
    etag, modified = validators(files)
    headers = [
        (name, value.format(etag=etag.decode(), modified=modified.decode()).encode())
        for name, value in fields.items()
    ]
    response = request(files, b"/static/a.txt", headers)
    assert response.status == status
    if status == 304:
        assert response.body == b""
        assert response.header(b"etag") == etag


# -- ranges (RFC 9110 14) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=199990-", 199990, 199999),
        ("bytes=-25", 199975, 199999),
        ("bytes=100-199999999", 100, 199999),
        ("bytes=5-5", 5, 5),
        ("bytes=0-10,5-20", 0, 20),  # overlapping ranges coalesce to one
    ],
)
def test_single_range_is_206(files: Router, site: Path, spec: str, first: int, last: int) -> None:
    """A satisfiable single range is 206 with Content-Range and exactly those bytes."""
    response = request(files, b"/static/big.bin", [(b"range", spec.encode())])
    content = (site / "big.bin").read_bytes()
    assert response.status == 206
    assert response.header(b"content-range") == f"bytes {first}-{last}/200000".encode()
    assert response.body == content[first : last + 1]


def test_range_of_a_small_cached_file(files: Router, site: Path) -> None:
    """Ranges work on files served from memory too."""
    response = request(files, b"/static/a.txt", [(b"range", b"bytes=6-11")])
    assert (response.status, response.body) == (206, b"static")


def test_multiple_ranges_are_multipart_byteranges(files: Router, site: Path) -> None:
    """Several ranges come as multipart/byteranges; each part has its Content-Range."""
    content = (site / "big.bin").read_bytes()
    response = request(files, b"/static/big.bin", [(b"range", b"bytes=0-99,1000-1099,-50")])
    assert response.status == 206
    content_type = response.header(b"content-type")
    assert content_type is not None and content_type.startswith(b"multipart/byteranges")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type + b"\r\n\r\n" + response.body
    )
    parts = list(message.iter_parts())
    expected = [(0, 99), (1000, 1099), (199950, 199999)]
    assert len(parts) == 3
    for part, (first, last) in zip(parts, expected, strict=True):
        assert part["Content-Range"] == f"bytes {first}-{last}/200000"
        assert part.get_payload(decode=True) == content[first : last + 1]
    assert int(response.header(b"content-length") or 0) == len(response.body)


def test_unsatisfiable_range_is_416(files: Router) -> None:
    """A range wholly past the end is 416 with Content-Range: bytes */size."""
    response = request(files, b"/static/big.bin", [(b"range", b"bytes=300000-")])
    assert response.status == 416
    assert response.header(b"content-range") == b"bytes */200000"


@pytest.mark.parametrize("spec", [b"bytes=5-1", b"items=0-1", b"bytes=a-b", b"bytes"])
def test_invalid_range_is_ignored(files: Router, spec: bytes) -> None:
    """An invalid Range field is ignored: the whole file, 200 (RFC 9110 14.2)."""
    response = request(files, b"/static/big.bin", [(b"range", spec)])
    assert (response.status, len(response.body)) == (200, 200000)


def test_too_many_ranges_send_the_whole_file(site: Path, tmp_path: Path) -> None:
    """More ranges than max_ranges: the whole file instead."""
    router = router_for(tmp_path, config_text(site, "max_ranges = 2"))
    response = request(router, b"/static/big.bin", [(b"range", b"bytes=0-0,10-10,20-20")])
    assert (response.status, len(response.body)) == (200, 200000)


def test_if_range_with_the_current_etag_allows_the_range(files: Router) -> None:
    """If-Range with the current strong ETag: the range is served."""
    etag, _ = validators(files, b"/static/big.bin")
    response = request(files, b"/static/big.bin", [(b"range", b"bytes=0-3"), (b"if-range", etag)])
    assert response.status == 206


@pytest.mark.parametrize("validator", [b'"stale"', b"Sat, 01 Jan 2000 00:00:00 GMT"])
def test_if_range_with_a_stale_validator_sends_everything(files: Router, validator: bytes) -> None:
    """If-Range that no longer matches: the whole file, 200 (RFC 9110 13.1.5)."""
    response = request(
        files, b"/static/big.bin", [(b"range", b"bytes=0-3"), (b"if-range", validator)]
    )
    assert (response.status, len(response.body)) == (200, 200000)


# -- precompressed siblings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "body", "encoding"),
    [
        (b"gzip, br", b"brotli bytes", b"br"),
        (b"gzip", b"gzip bytes", b"gzip"),
        (b"br;q=0.5, gzip;q=0.9", b"gzip bytes", b"gzip"),
        (b"identity", b"<p>plain</p>", None),
        (b"br;q=0", b"<p>plain</p>", None),
    ],
)
def test_precompressed_sibling_is_negotiated(
    files: Router, accept: bytes, body: bytes, encoding: bytes | None
) -> None:
    """file.br/file.gz are sent with Content-Encoding when accepted; Vary is set."""
    response = request(files, b"/static/page.html", [(b"accept-encoding", accept)])
    assert response.body == body
    assert response.header(b"content-encoding") == encoding
    assert response.header(b"vary") == b"Accept-Encoding"
    assert response.header(b"content-type") == b"text/html; charset=utf-8"


def test_siblings_have_their_own_etags(files: Router) -> None:
    """Each representation has its own ETag, so caches never mix them."""
    plain = request(files, b"/static/page.html")
    gz = request(files, b"/static/page.html", [(b"accept-encoding", b"gzip")])
    assert plain.header(b"etag") != gz.header(b"etag")


@pytest.mark.parametrize("sibling_first", [True, False])
def test_a_sibling_asked_for_by_name_is_its_own_representation(
    files: Router, sibling_first: bool
) -> None:
    """page.html.gz fetched by its own name is a gzip file with no Content-Encoding,
    and page.html negotiated to it is HTML with Content-Encoding: gzip, whichever
    was asked for first (the memory cache holds the same bytes for both).
    """
    accepted = [(b"accept-encoding", b"gzip")]
    order = [b"/static/page.html.gz", b"/static/page.html"]
    responses = {}
    for target in order if sibling_first else order[::-1]:
        for _ in range(2):  # the second from the cache
            responses[target] = response = request(files, target, accepted)
            assert response.body == b"gzip bytes"
    direct, negotiated = responses[order[0]], responses[order[1]]
    assert direct.header(b"content-encoding") is None
    assert direct.header(b"content-type") != b"text/html; charset=utf-8"
    assert negotiated.header(b"content-encoding") == b"gzip"
    assert negotiated.header(b"content-type") == b"text/html; charset=utf-8"


def test_a_large_sibling_is_sent_from_disk(site: Path, files: Router) -> None:
    """A sibling above the memory cache's size is read from its own file."""
    compressed = os.urandom(300_000)
    (site / "bundle.js").write_bytes(os.urandom(400_000))
    (site / "bundle.js.gz").write_bytes(compressed)
    response = request(files, b"/static/bundle.js", [(b"accept-encoding", b"gzip")])
    assert response.status == 200
    assert response.header(b"content-encoding") == b"gzip"
    assert response.body == compressed


def mount_on_clock(site: Path) -> tuple[StaticHandler, Clock]:
    clock = Clock()
    clock.advance(time.time())  # the files' modification times are real ones
    return StaticHandler(StaticOptions(root=str(site)), now=clock.seconds), clock


GZIP_ACCEPTED = [(b"accept-encoding", b"gzip, deflate, br")]


def test_a_file_without_siblings_is_believed_so_for_a_second(site: Path) -> None:
    """A browser asks with Accept-Encoding every time; a file found without a .br
    or .gz sibling is not looked at again for SIBLING_RECHECK seconds: a sibling
    added meanwhile is served once they have passed.
    """
    handler, clock = mount_on_clock(site)
    assert request(handler, b"/a.txt", GZIP_ACCEPTED).header(b"content-encoding") is None
    (site / "a.txt.gz").write_bytes(b"gzip of a.txt")
    clock.advance(static.SIBLING_RECHECK - 0.01)
    assert request(handler, b"/a.txt", GZIP_ACCEPTED).body == b"hello static\n"
    clock.advance(0.01)
    response = request(handler, b"/a.txt", GZIP_ACCEPTED)
    assert (response.header(b"content-encoding"), response.body) == (b"gzip", b"gzip of a.txt")


def test_a_changed_file_has_its_siblings_looked_for_at_once(site: Path) -> None:
    """A deployment writes the file and its sibling: the new file's siblings are
    looked for, whatever was believed of the old one.
    """
    handler, _clock = mount_on_clock(site)
    assert request(handler, b"/a.txt", GZIP_ACCEPTED).header(b"content-encoding") is None
    (site / "a.txt").write_bytes(b"hello again, static\n")
    (site / "a.txt.gz").write_bytes(b"gzip of the new a.txt")
    response = request(handler, b"/a.txt", GZIP_ACCEPTED)
    assert (response.header(b"content-encoding"), response.body) == (
        b"gzip",
        b"gzip of the new a.txt",
    )


def test_a_sibling_removed_is_noticed_at_once(site: Path) -> None:
    """Only absence is remembered: a sibling found is looked at on every request."""
    handler, _clock = mount_on_clock(site)
    assert request(handler, b"/page.html", GZIP_ACCEPTED).body == b"brotli bytes"
    (site / "page.html.br").unlink()
    assert request(handler, b"/page.html", GZIP_ACCEPTED).body == b"gzip bytes"


def test_precompressed_can_be_switched_off(site: Path, tmp_path: Path) -> None:
    """Precompressed = false always sends the file itself."""
    router = router_for(tmp_path, config_text(site, "precompressed = false"))
    response = request(router, b"/static/page.html", [(b"accept-encoding", b"gzip, br")])
    assert response.body == b"<p>plain</p>"
    assert response.header(b"vary") is None


# -- gzip on the fly ------------------------------------------------------------------------

#: A stylesheet long enough to compress (gzip_min_length is 256 bytes by default).
STYLES = b"".join(
    b".rule-%d { color: #%06x; margin: %dpx }\n" % (i, i * 997, i) for i in range(400)
)
GZIP = (b"accept-encoding", b"gzip")


def gzip_router(
    site: Path, tmp_path: Path, mount: str = "", server: str = "gzip = true\n"
) -> Router:
    if not (site / "css" / "site.css").exists():
        (site / "css" / "site.css").write_bytes(STYLES)
    return router_for(tmp_path, f"[server]\n{server}" + config_text(site, mount))


def test_a_file_is_sent_gzipped_with_its_length_and_a_strong_etag_of_its_own(
    site: Path, tmp_path: Path
) -> None:
    """With gzip on, a stylesheet with no .gz sibling is compressed: Content-Length
    of the compressed bytes (not chunked), Content-Encoding, Vary, Accept-Ranges, and
    a strong ETag that is not the identity's. It decompresses to the file.
    """
    router = gzip_router(site, tmp_path)
    response = request(router, b"/static/css/site.css", [GZIP])
    assert response.status == 200
    assert response.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(response.body) == STYLES
    assert len(response.body) < len(STYLES) // 4
    assert response.header(b"content-length") == b"%d" % len(response.body)
    assert response.header(b"transfer-encoding") is None
    assert response.header(b"vary") == b"Accept-Encoding"
    assert response.header(b"accept-ranges") == b"bytes"
    assert response.header(b"content-type") == b"text/css; charset=utf-8"
    identity = request(router, b"/static/css/site.css")
    assert identity.body == STYLES
    assert identity.header(b"content-encoding") is None
    assert identity.header(b"vary") == b"Accept-Encoding"
    etag = response.header(b"etag")
    assert etag is not None and not etag.startswith(b"W/")
    assert etag != identity.header(b"etag")


def test_the_gzip_form_is_the_same_bytes_every_time(site: Path, tmp_path: Path) -> None:
    """Made again (another process, a reload), the same file gives the same bytes and
    tag, as a strong ETag must; a changed file gives new ones, never the old form.
    """
    first = request(gzip_router(site, tmp_path), b"/static/css/site.css", [GZIP])
    router = gzip_router(site, tmp_path)  # a new handler: nothing in memory
    again = request(router, b"/static/css/site.css", [GZIP])
    assert (again.body, again.header(b"etag")) == (first.body, first.header(b"etag"))
    (site / "css" / "site.css").write_bytes(STYLES + b".new { color: blue }\n")
    changed = request(router, b"/static/css/site.css", [GZIP])
    assert gzip.decompress(changed.body) == STYLES + b".new { color: blue }\n"
    assert changed.header(b"etag") != first.header(b"etag")


def test_the_level_changes_the_bytes_and_the_tag(site: Path, tmp_path: Path) -> None:
    fastest = request(gzip_router(site, tmp_path), b"/static/css/site.css", [GZIP])
    smallest = request(
        gzip_router(site, tmp_path, server="gzip = true\ngzip_level = 9\n"),
        b"/static/css/site.css",
        [GZIP],
    )
    assert gzip.decompress(smallest.body) == STYLES
    assert len(smallest.body) < len(fastest.body)
    assert smallest.header(b"etag") != fastest.header(b"etag")


def test_the_gzip_form_answers_conditions_and_ranges(site: Path, tmp_path: Path) -> None:
    """Its own ETag gets a 304 (with Vary); a Range counts its compressed bytes."""
    router = gzip_router(site, tmp_path)
    whole = request(router, b"/static/css/site.css", [GZIP])
    etag = whole.header(b"etag")
    assert etag is not None
    cached = request(router, b"/static/css/site.css", [GZIP, (b"if-none-match", etag)])
    assert (cached.status, cached.body) == (304, b"")
    assert cached.header(b"etag") == etag and cached.header(b"vary") == b"Accept-Encoding"
    # The identity's validator does not match the gzip form, nor the reverse.
    assert request(router, b"/static/css/site.css", [(b"if-none-match", etag)]).status == 200
    ranged = request(router, b"/static/css/site.css", [GZIP, (b"range", b"bytes=10-29")])
    assert (ranged.status, ranged.body) == (206, whole.body[10:30])
    assert ranged.header(b"content-encoding") == b"gzip"
    head = request(router, b"/static/css/site.css", [GZIP], method=b"HEAD")
    assert head.body == b""
    assert head.header(b"content-length") == whole.header(b"content-length")
    assert head.header(b"etag") == etag


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (b"gzip;q=0", None),
        (b"identity", None),
        (b"br", None),
        (b"x-gzip", b"gzip"),
        (b"*", b"gzip"),
        (b"gzip;q=0.1, br", b"gzip"),
    ],
)
def test_accept_encoding_decides(
    site: Path, tmp_path: Path, accept: bytes, expected: bytes | None
) -> None:
    router = gzip_router(site, tmp_path)
    response = request(router, b"/static/css/site.css", [(b"accept-encoding", accept)])
    assert response.header(b"content-encoding") == expected
    body = gzip.decompress(response.body) if expected else response.body
    assert body == STYLES


def test_a_precompressed_sibling_comes_first(site: Path, tmp_path: Path) -> None:
    """A .gz on disk is sent, not a form made here; a .br goes to a client that
    prefers it, gzip made here to one that prefers gzip.
    """
    router = gzip_router(site, tmp_path)
    response = request(router, b"/static/page.html", [GZIP])
    assert response.body == b"gzip bytes"
    (site / "app.js").write_bytes(STYLES)
    (site / "app.js.br").write_bytes(b"brotli of app.js")
    brotli = request(router, b"/static/app.js", [(b"accept-encoding", b"gzip, br")])
    assert brotli.body == b"brotli of app.js"
    made = request(router, b"/static/app.js", [(b"accept-encoding", b"gzip, br;q=0.5")])
    assert made.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(made.body) == STYLES
    off = router_for(
        tmp_path, "[server]\ngzip = true\n" + config_text(site, "precompressed = false")
    )
    made = request(off, b"/static/app.js", [(b"accept-encoding", b"gzip, br")])
    assert gzip.decompress(made.body) == STYLES
    # The identity too says it varies: a cache must not hand it to every client.
    assert request(off, b"/static/app.js").header(b"vary") == b"Accept-Encoding"


def test_files_sent_as_they_are(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not compressed: a type not in gzip_types, a file below gzip_min_length or
    above the size compressed on the fly, and one that does not get smaller (which
    is not compressed again while it is unchanged).
    """
    monkeypatch.setitem(static.GZIP_FILE_LIMITS, 1, 100_000)
    (site / "large.txt").write_bytes(b"x" * 100_001)
    (site / "noise.txt").write_bytes(os.urandom(5000))
    router = gzip_router(site, tmp_path)
    compressors = counting_compressors(monkeypatch)
    for target, content in [
        (b"/static/big.bin", (site / "big.bin").read_bytes()),
        (b"/static/a.txt", b"hello static\n"),
        (b"/static/large.txt", b"x" * 100_001),
        (b"/static/noise.txt", (site / "noise.txt").read_bytes()),
        (b"/static/noise.txt", (site / "noise.txt").read_bytes()),
    ]:
        response = request(router, target, [GZIP])
        assert response.header(b"content-encoding") is None, target
        assert response.body == content
    assert len(compressors) == 1  # noise.txt, once
    assert request(router, b"/static/large.txt").header(b"vary") == b"Accept-Encoding"


def test_a_file_above_the_memory_cache_is_compressed_once(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file sent from disk as it is (above memory_cache) is read whole to be
    compressed; its gzip form is kept in memory and not made again.
    """
    bundle = STYLES * 40  # about 600 KB
    (site / "bundle.js").write_bytes(bundle)
    router = gzip_router(site, tmp_path)
    compressors = counting_compressors(monkeypatch)
    for _ in range(3):
        response = request(router, b"/static/bundle.js", [GZIP])
        assert gzip.decompress(response.body) == bundle
        assert response.header(b"content-length") == b"%d" % len(response.body)
    assert len(compressors) == 1
    assert request(router, b"/static/bundle.js").body == bundle


def counting_compressors(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one with each compressor made from now on."""
    made: list[int] = []
    real = zlib.compressobj

    def counted(*args: Any) -> Any:
        made.append(1)
        return real(*args)

    monkeypatch.setattr(zlib, "compressobj", counted)
    return made


def gzip_handler(site: Path, **options: Any) -> StaticHandler:
    return StaticHandler(
        StaticOptions(root=str(site), gzip=GzipSettings(), **options), now=time.time
    )


def test_the_memory_count_is_what_the_cache_holds(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changing again and again, both its forms in a full cache: the bytes
    counted against the budget stay the bytes held (a form replaced after being
    evicted was once taken off twice, and the cache then outgrew its budget).
    """
    monkeypatch.setattr(static, "CACHE_BUDGET", 40_000)
    handler = gzip_handler(site)
    (site / "filler.css").write_bytes(STYLES[:30_000])
    for round_ in range(12):
        (site / "css" / "site.css").write_bytes(STYLES[: 2000 + 100 * round_])
        for target in (b"/css/site.css", b"/filler.css"):
            for accept in ([GZIP], []):
                assert request(handler, target, accept).status == 200
        held = sum(len(entry.data or b"") for entry in handler._cache.values())
        assert handler._cached_bytes == held <= 40_000


def test_a_large_form_that_left_the_cache_is_not_made_again(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large files whose forms do not fit the cache together: each is compressed
    once per change, then sent as it is, rather than compressed for each request
    (each compression holds every other client).
    """
    monkeypatch.setattr(static, "CACHE_BUDGET", 100_000)
    handler = gzip_handler(site)
    contents = {}
    for index in range(3):
        content = base64.b64encode(os.urandom(75_000))  # 100 KB, a form of about 76 KB
        contents[b"/bundle%d.js" % index] = content
        (site / f"bundle{index}.js").write_bytes(content)
    made = counting_compressors(monkeypatch)
    for _ in range(3):
        for target, content in contents.items():
            response = request(handler, target, [GZIP])
            body = response.body
            if response.header(b"content-encoding") == b"gzip":
                body = gzip.decompress(body)
            assert body == content
    assert len(made) == 3


def test_a_304_for_the_gzip_form_compresses_nothing(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form's ETag comes from the file and the level: a new process (or one
    whose cache let the form go) answers a revalidation without compressing.
    """
    etag = request(gzip_router(site, tmp_path), b"/static/css/site.css", [GZIP]).header(b"etag")
    assert etag is not None
    made = counting_compressors(monkeypatch)
    fresh = gzip_router(site, tmp_path)
    response = request(fresh, b"/static/css/site.css", [GZIP, (b"if-none-match", etag)])
    assert (response.status, response.header(b"etag")) == (304, etag)
    assert response.header(b"vary") == b"Accept-Encoding"
    failed = request(fresh, b"/static/css/site.css", [GZIP, (b"if-match", b'"other"')])
    assert failed.status == 412
    assert made == []
    assert request(fresh, b"/static/css/site.css", [GZIP]).status == 200
    assert made == [1]


def test_the_etag_names_the_zlib_that_made_the_form(site: Path, tmp_path: Path) -> None:
    """zlib-ng makes other bytes than zlib at the same level: one strong tag must not
    stand for both (servers sharing files, or an upgrade).
    """
    response = request(gzip_router(site, tmp_path), b"/static/css/site.css", [GZIP])
    etag = response.header(b"etag")
    assert etag is not None
    assert etag.endswith(b"-z1-" + zlib.ZLIB_RUNTIME_VERSION.encode("ascii") + b'"')


def test_higher_levels_compress_smaller_files_only_and_no_memory_cache_none(
    site: Path, tmp_path: Path
) -> None:
    """The largest file compressed shrinks as the level's cost grows (the reactor
    is held while it runs); with memory_cache = 0 nothing is kept, so nothing is
    compressed on the fly.
    """
    (site / "large.js").write_bytes(STYLES * 40)  # about 600 KB
    level9 = gzip_router(site, tmp_path, server="gzip = true\ngzip_level = 9\n")
    assert request(level9, b"/static/large.js", [GZIP]).header(b"content-encoding") is None
    assert request(level9, b"/static/css/site.css", [GZIP]).header(b"content-encoding") == b"gzip"
    level1 = gzip_router(site, tmp_path)
    assert request(level1, b"/static/large.js", [GZIP]).header(b"content-encoding") == b"gzip"
    uncached = gzip_router(site, tmp_path, mount="memory_cache = 0")
    response = request(uncached, b"/static/css/site.css", [GZIP])
    assert (response.header(b"content-encoding"), response.body) == (None, STYLES)


def test_the_mount_turns_it_on_or_off(site: Path, tmp_path: Path) -> None:
    off = gzip_router(site, tmp_path, mount="gzip = false")
    response = request(off, b"/static/css/site.css", [GZIP])
    assert (response.header(b"content-encoding"), response.body) == (None, STYLES)
    on = gzip_router(site, tmp_path, mount="gzip = true", server="")
    response = request(on, b"/static/css/site.css", [GZIP])
    assert gzip.decompress(response.body) == STYLES
    plain = gzip_router(site, tmp_path, server="")
    assert request(plain, b"/static/css/site.css", [GZIP]).body == STYLES


def test_an_x_accel_file_is_compressed_unless_the_application_says_no_transform(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The internal mount's gzip applies to the files an application hands it, but
    not when the application's Cache-Control says no-transform (RFC 9111 5.2.2.6).
    """
    (site / "css" / "site.css").write_bytes(STYLES)
    for fields, compressed in [
        ([("X-Accel-Redirect", "/protected/css/site.css")], True),
        (
            [
                ("Cache-Control", "private, no-transform"),
                ("X-Accel-Redirect", "/protected/css/site.css"),
            ],
            False,
        ),
    ]:
        router = accel_router(site, tmp_path, monkeypatch, fields, "gzip = true\n")
        response = request(router, b"/page", [GZIP])
        assert (response.header(b"content-encoding") == b"gzip") is compressed
        assert (gzip.decompress(response.body) if compressed else response.body) == STYLES


# -- a file replaced while it is served ---------------------------------------------------


def before_opening(monkeypatch: pytest.MonkeyPatch, hook: Callable[[Path], None]) -> list[Path]:
    """Call ``hook`` with each path the handler opens, just before it opens it (after
    its stat). Returns the opened paths, in order.
    """
    opened: list[Path] = []
    open_file = static._open_file

    def opening(path: bytes, *vet: Any) -> Any:
        opened.append(Path(os.fsdecode(path)))
        hook(opened[-1])
        return open_file(path, *vet)

    monkeypatch.setattr(static, "_open_file", opening)
    return opened


def replace_when_opened(
    monkeypatch: pytest.MonkeyPatch, target: Path, contents: list[bytes | None]
) -> list[Path]:
    """Make the handler's next opens of ``target`` find it replaced (or removed, for
    ``None``) just before, as a deploy writing a new file and renaming it over the old
    one would, between the handler's stat and its open. Returns the opened paths.
    """

    def replace(path: Path) -> None:
        if path == target and contents:
            content = contents.pop(0)
            if content is None:
                target.unlink()
            else:
                staged = target.with_name(target.name + ".new")
                staged.write_bytes(content)
                staged.replace(target)

    return before_opening(monkeypatch, replace)


@pytest.mark.parametrize("size", [1_000, 300_000])  # from memory, and from disk
def test_a_file_replaced_after_its_stat_is_served_as_the_new_file(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path, size: int
) -> None:
    target = site / "deployed.bin"
    target.write_bytes(b"o" * size)
    new = os.urandom(size + 7)
    replace_when_opened(monkeypatch, target, [new])
    response = request(files, b"/static/deployed.bin")
    assert response.status == 200
    assert response.body == new
    assert response.header(b"content-length") == b"%d" % len(new)


def test_a_file_removed_after_its_stat_is_404(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path
) -> None:
    target = site / "gone.bin"
    target.write_bytes(os.urandom(300_000))
    replace_when_opened(monkeypatch, target, [None])
    assert request(files, b"/static/gone.bin").status == 404


def test_a_file_that_keeps_changing_is_503(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path
) -> None:
    target = site / "busy.bin"
    target.write_bytes(os.urandom(300_000))
    replace_when_opened(monkeypatch, target, [os.urandom(300_000) for _ in range(5)])
    response = request(files, b"/static/busy.bin")
    assert response.status == 503
    assert response.header(b"retry-after") == b"1"
    # And the next request, once it stopped changing, gets it.
    monkeypatch.undo()
    assert request(files, b"/static/busy.bin").body == target.read_bytes()


class _ChangedWhenRead:
    """An open file that ``change`` alters the first time it is read, after its fstat."""

    def __init__(self, handle: Any, change: Callable[[], object]) -> None:
        self._handle = handle
        self._change: Callable[[], object] | None = change

    def fileno(self) -> int:
        return int(self._handle.fileno())

    def read(self, size: int = -1) -> bytes:
        change, self._change = self._change, None
        if change is not None:
            change()
        return bytes(self._handle.read(size))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _ChangedWhenRead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.mark.parametrize(
    "change",
    [
        lambda path: path.write_bytes(path.read_bytes() + b"appended"),
        lambda path: os.truncate(path, 400),
        # In place, same size: only a signature taken after the read tells.
        lambda path: path.write_bytes(path.read_bytes().upper()),
    ],
    ids=["grown", "truncated", "rewritten"],
)
def test_a_small_file_changed_while_it_is_read_is_served_whole_as_it_is_now(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path, change: Callable[[Path], object]
) -> None:
    """A small file is read whole into memory after its fstat; written to meanwhile
    (appended to, truncated, rewritten in place), the bytes read are not those of the
    file that was looked at. They are not served under its head (a body longer or
    shorter than the Content-Length sent, a connection cut): the file is looked up
    again and its new content served whole, with its own head.
    """
    target = site / "written.txt"
    target.write_bytes(b"x" * 1_000)
    open_file = static._open_file

    def opening(path: bytes, *vet: Any) -> Any:
        handle = open_file(path, *vet)
        if Path(os.fsdecode(path)) == target:
            monkeypatch.setattr(static, "_open_file", open_file)  # once
            return _ChangedWhenRead(handle, lambda: change(target))
        return handle

    monkeypatch.setattr(static, "_open_file", opening)
    with capture_log_events() as events:
        response = request(files, b"/static/written.txt")
    assert response.status == 200
    assert response.body == target.read_bytes()
    assert response.header(b"content-length") == b"%d" % target.stat().st_size
    assert not [event for event in events if event.get("log_level") is LogLevel.error]
    # And what is kept is the new file, under its own signature.
    again = request(files, b"/static/written.txt")
    assert again.body == target.read_bytes()
    assert again.header(b"etag") == response.header(b"etag")


# -- directories -------------------------------------------------------------------------


def test_directory_without_slash_redirects(files: Router, site: Path) -> None:
    """A directory asked for without its trailing slash is 301 to the slash, the
    query kept.
    """
    response = request(files, b"/static/docs?x=1")
    assert response.status == 301
    assert response.header(b"location") == b"/static/docs/?x=1"
    # The mount's own directory as well (its relative links need the slash).
    (site / "index.html").write_bytes(b"<a href=a.txt>a</a>")
    response = request(files, b"/static?x=1")
    assert response.status == 301
    assert response.header(b"location") == b"/static/?x=1"
    assert request(files, b"/static/").body == b"<a href=a.txt>a</a>"


def test_directory_index_is_served(files: Router) -> None:
    """index.html answers for its directory."""
    response = request(files, b"/static/docs/")
    assert (response.status, response.body) == (200, b"<h1>docs</h1>")


def test_directory_without_index_is_403_unless_listed(
    files: Router, site: Path, tmp_path: Path
) -> None:
    """No index and no listing: 403; with listing: an HTML page with escaped names."""
    assert request(files, b"/static/empty/").status == 403
    # Without the slash it is redirected first, as nginx does: never 404 for a
    # directory that answers 403 with its slash.
    redirected = request(files, b"/static/empty")
    assert (redirected.status, redirected.header(b"location")) == (301, b"/static/empty/")
    (site / "empty" / "<script>alert(1)<b>.txt").write_bytes(b"x")
    router = router_for(tmp_path, config_text(site, "listing = true"))
    response = request(router, b"/static/empty/")
    assert response.status == 200
    assert b"<script>alert" not in response.body
    assert b"&lt;script&gt;alert(1)&lt;b&gt;.txt" in response.body
    assert b'href="%3Cscript%3Ealert%281%29%3Cb%3E.txt"' in response.body
    listing = request(router, b"/static/")
    assert b".env" not in listing.body  # dotfiles stay hidden in listings


@pytest.mark.parametrize("symlinks", ["inside", "never"])
def test_a_listing_shows_what_is_served_and_any_name(
    site: Path, tmp_path: Path, symlinks: str
) -> None:
    """A name that is not UTF-8 is listed (not a 500); a link that answers 404
    (out of the directory, or any link with symlinks = "never") is not listed.
    """
    os.mkdir(os.fsencode(site / "empty") + b"/caf\xe9")
    router = router_for(tmp_path, config_text(site, f'listing = true\nsymlinks = "{symlinks}"'))
    listing = request(router, b"/static/empty/")
    assert listing.status == 200
    assert "caf\ufffd/".encode() in listing.body
    assert b'href="caf%E9/"' in listing.body
    root = request(router, b"/static/").body
    for link in (b"link_out", b"link_file"):  # lead outside the directory
        assert link not in root
        assert request(router, b"/static/" + link).status == 404
    assert (b"link_in" in root) is (symlinks == "inside")
    assert request(router, b"/static/link_in").status == (200 if symlinks == "inside" else 404)
    assert b"a.txt" in root


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), 403),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), 404),
        (OSError(errno.EIO, "Input/output error"), 500),
        (OSError(errno.EMFILE, "Too many open files"), 500),
    ],
)
def test_a_listing_that_cannot_be_read_says_why(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, status: int
) -> None:
    """Every failure to read a directory was a 403 with no log line: a disk error or
    the open-files limit looked like a permission, and nobody was told. The server's
    own trouble is a 500 with a line naming the directory.
    """
    router = router_for(tmp_path, config_text(site, "listing = true"))

    def failing(path: Any) -> Any:
        raise error

    monkeypatch.setattr(os, "scandir", failing)
    with capture_log_events() as events:
        response = request(router, b"/static/empty/")
    assert response.status == status
    lines = [formatEvent(e) for e in events if e["log_level"].name == "error"]
    assert len(lines) == (1 if status == 500 else 0)
    assert all(str(error.strerror) in line and "/empty" in line for line in lines)


def test_an_entry_that_cannot_be_looked_at_is_left_out_of_a_listing(
    site: Path, tmp_path: Path
) -> None:
    """A symbolic link loop (or a link to what may not be read) made the whole listing
    a 500 (a 403 before): the entry is left out, the others are listed.
    """
    (site / "empty" / "a").symlink_to(site / "empty" / "b")
    (site / "empty" / "b").symlink_to(site / "empty" / "a")
    (site / "empty" / "kept.txt").write_text("kept")
    router = router_for(tmp_path, config_text(site, 'listing = true\nsymlinks = "inside"'))
    with capture_log_events() as events:
        listing = request(router, b"/static/empty/")
    assert listing.status == 200
    assert b"kept.txt" in listing.body
    assert b'href="a"' not in listing.body and b'href="b"' not in listing.body
    assert not [e for e in events if e["log_level"].name == "error"]


def test_an_entry_removed_while_its_directory_is_listed_is_left_out(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path
) -> None:
    """A name read from the directory and removed before its stat is left out; the
    listing goes on with the others (not a 404 or 500 for the whole directory).
    """
    directory = site / "empty"
    for name in ("going.txt", "kept.txt", "sub"):
        (directory / name).write_text(name)
    scandir = os.scandir

    class Removing:
        """os.scandir's iterator, removing going.txt as its entry is handed out."""

        def __init__(self, *args: Any) -> None:
            self._entries = scandir(*args)

        def __enter__(self) -> Removing:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self._entries.close()

        def __iter__(self) -> Any:
            for entry in self._entries:
                if entry.name == "going.txt":
                    (directory / "going.txt").unlink()
                yield entry

    monkeypatch.setattr(os, "scandir", Removing)
    router = router_for(tmp_path, config_text(site, "listing = true"))
    listing = request(router, b"/static/empty/")
    assert listing.status == 200
    assert b"kept.txt" in listing.body and b"sub" in listing.body
    assert b"going.txt" not in listing.body


def test_a_site_serves_files_on_its_reactors_clock(site: Path, tmp_path: Path) -> None:
    """Last-Modified is never later than the response's Date (RFC 9110 8.8.2.1): the
    site built its static handlers on the wall clock, not on the reactor's, so on
    another clock Last-Modified could come after Date.
    """
    path = tmp_path / "site.toml"
    path.write_text(config_text(site, ""))
    reactor = SynchronousReactorThreads()
    reactor.advance(1_000_000_000)  # 2001: before the files were written
    builder = SiteBuilder(reactor=reactor, threadpool=SynchronousThreadPool())
    router = Router(builder.build(load_config({"config": str(path)})))
    response = request(router, b"/static/a.txt")
    assert response.status == 200
    assert response.header(b"last-modified") == b"Sun, 09 Sep 2001 01:46:40 GMT"


def test_redirect_location_cannot_become_protocol_relative(files: Router) -> None:
    """A path starting with // redirects to a single-slash path, never //host/."""
    response = request(files, b"//static/docs")
    assert response.status in (301, 404)
    location = response.header(b"location")
    assert location is None or not location.startswith(b"//")


# -- dotfiles, symlinks and traversal -------------------------------------------------------

TRAVERSALS = [
    b"/static/../secret.txt",
    b"/static/..%2fsecret.txt",
    b"/static/..%2Fsecret.txt",
    b"/static/%2e%2e/secret.txt",
    b"/static/%2E%2E/secret.txt",
    b"/static/.%2e/secret.txt",
    b"/static/%2e./secret.txt",
    b"/static/%2e%2e%2fsecret.txt",
    b"/static/..%5csecret.txt",
    b"/static/..%5Csecret.txt",
    b"/static/..\\secret.txt",
    b"/static/%252e%252e/secret.txt",
    b"/static//../secret.txt",
    b"/static/./../secret.txt",
    b"/static/css/../../secret.txt",
    b"/static/css/%2e%2e/%2e%2e/secret.txt",
    b"/static/../../../../../../etc/passwd",
    b"/static/..;/secret.txt",
    b"/static/..%c0%afsecret.txt",
    b"/static/%c0%ae%c0%ae/secret.txt",
    b"/static/%e0%80%ae%e0%80%ae/secret.txt",
    b"/static//etc/passwd",
    b"/static/%2fetc%2fpasswd",
    b"/static/link_out/secret.txt",
    b"/static/link_file",
    b"/static/.env",
    b"/static/%2eenv",
    b"/static/%2e%65%6e%76",
    b"/static/sub/.hidden",
    b"/static/sub/%2ehidden",
    b"/static/.git/config",
    b"/static/fifo",
    b"/static/a.txt/",
    b"/static/a.txt/..",
    b"/static/" + b"a" * 400,
    b"/static/C:%5cWindows%5cwin.ini",
    b"http://files.example/static/../secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode("latin-1")[:40] for t in TRAVERSALS])
def test_no_path_escapes_the_directory(files: Router, target: bytes) -> None:
    """Every traversal attempt is a 404 (403 only for the one that normalises to the
    served directory itself, which has no index) and never shows the secret or a
    hidden file.
    """
    response = request(files, target)
    expected = 403 if target == b"/static/a.txt/.." else 404
    assert response.status == expected, response.status
    assert SECRET not in response.body
    assert b"SECRET=1" not in response.body and response.body != b"hidden"


def test_a_large_file_is_resolved_once_then_checked_by_stat(
    files: Router, site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file sent from disk keeps its checked facts: later requests stat it but do
    not check its path again (resolved, an lstat per component; or on Linux opened
    and its descriptor checked), until it changes.
    """
    resolved: list[Any] = []
    real_realpath = os.path.realpath
    real_opened_path = static._opened_path

    def counting_realpath(path: Any) -> Any:
        resolved.append(path)
        return real_realpath(path)

    def counting_opened_path(descriptor: int) -> bytes | None:
        resolved.append(descriptor)
        return real_opened_path(descriptor)

    monkeypatch.setattr(os.path, "realpath", counting_realpath)
    monkeypatch.setattr(static, "_opened_path", counting_opened_path)
    first = request(files, b"/static/big.bin")
    checks = len(resolved)
    assert checks
    second = request(files, b"/static/big.bin")
    assert len(resolved) == checks
    assert second.body == first.body == (site / "big.bin").read_bytes()
    (site / "big.bin").write_bytes(os.urandom(150_000))
    third = request(files, b"/static/big.bin")
    assert len(resolved) > checks
    assert third.body == (site / "big.bin").read_bytes()
    assert third.header(b"etag") != first.header(b"etag")


def test_a_link_swapped_to_point_outside_is_refused_after_caching(
    files: Router, site: Path, tmp_path: Path
) -> None:
    """Remembering a file does not remember its path: a link that pointed inside and
    now leads out of the directory is refused on the next request.
    """
    inside = site / "inside.bin"
    inside.write_bytes(os.urandom(100_000))
    (site / "swap").symlink_to(inside)
    assert request(files, b"/static/swap").status == 200
    outside = tmp_path / "outside" / "big-secret.bin"
    outside.write_bytes(SECRET * 4000)
    (site / "swap").unlink()
    (site / "swap").symlink_to(outside)
    assert request(files, b"/static/swap").status == 404


@pytest.mark.parametrize("symlinks", ["inside", "never"])
@pytest.mark.parametrize("size", [1_000, 300_000])  # from memory, and from disk
def test_the_open_file_check_takes_names_that_are_not_utf8(
    site: Path, tmp_path: Path, *, symlinks: str, size: int
) -> None:
    """The kernel names the open file in bytes, as the path was built: a name that
    is not UTF-8, in a directory and a file, passes the check under either policy,
    as do its directory's index and listing.
    """
    directory = os.fsencode(site) + b"/d\xe9p\xf4t"
    os.mkdir(directory)
    with open(directory + b"/caf\xe9.bin", "wb") as handle:
        handle.write(b"c" * size)
    with open(directory + b"/index.html", "wb") as handle:
        handle.write(b"<p>index</p>")
    router = router_for(tmp_path, config_text(site, f'symlinks = "{symlinks}"'))
    response = request(router, b"/static/d%E9p%F4t/caf%E9.bin")
    assert response.status == 200
    assert response.body == b"c" * size
    assert request(router, b"/static/d%E9p%F4t/").body == b"<p>index</p>"


@pytest.mark.parametrize("size", [1_000, 300_000])  # from memory, and from disk
def test_a_link_flipped_to_another_name_of_the_same_file_serves_only_its_bytes(
    site: Path, tmp_path: Path, *, size: int
) -> None:
    """The link check is made once per signature (device, inode, size, times): a
    link flipped from a file inside to a hard link of it outside keeps the signature,
    and is served, but only ever the bytes that were found inside. Written to
    through the outside name, or its name inside removed, the file changes its
    signature (a write and a link count both move its change time): it is checked
    again, and refused.
    """
    inside = site / "shared.bin"
    inside.write_bytes(b"p" * size)
    outside = tmp_path / "outside" / "shared.bin"
    os.link(inside, outside)
    link = site / "flip"
    link.symlink_to(inside)
    router = router_for(tmp_path, config_text(site))
    assert request(router, b"/static/flip").body == b"p" * size
    repoint(link, outside)
    assert request(router, b"/static/flip").body == b"p" * size
    with outside.open("r+b") as handle:
        handle.write(SECRET)
    response = request(router, b"/static/flip")
    assert response.status == 404
    assert SECRET not in response.body
    # Its name inside removed (the bytes as they were, the link count moved): refused.
    repoint(link, inside)
    assert request(router, b"/static/flip").status == 200
    repoint(link, outside)
    inside.unlink()
    assert request(router, b"/static/flip").status == 404


def swap_around_the_check(
    monkeypatch: pytest.MonkeyPatch,
    path: Path,
    during: Callable[[], None],
    after: Callable[[], None],
) -> list[Path]:
    """While the handler resolves ``path`` (its link check), ``during`` changes what
    it leads to and ``after`` changes it back: the stat before the check and the open
    after it see one file, the check another. (An attacker who swaps a link in a loop
    gets this order by chance; here it comes every time.) Returns the paths checked.

    The check is ``os.path.realpath`` where ``/proc`` cannot be asked, and on Linux
    the opening of the path itself (``O_PATH``) that the look-up stats and checks;
    not the one that opens the file for reading, which sees what the link leads to.
    """
    real_realpath = os.path.realpath
    real_open = os.open
    real_open_vetted = getattr(static, "_open_vetted", None)
    checked: list[Path] = []
    reading: list[bool] = []

    def open_vetted(*args: Any) -> Any:
        assert real_open_vetted is not None
        reading.append(True)
        try:
            return real_open_vetted(*args)
        finally:
            reading.pop()

    def open_path(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if reading or not flags & getattr(os, "O_PATH", 0) or Path(os.fsdecode(name)) != path:
            return real_open(name, flags, *args, **kwargs)
        checked.append(path)
        during()
        try:
            return real_open(name, flags, *args, **kwargs)
        finally:
            after()

    def realpath(name: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(os.fsdecode(name)) != path:
            return real_realpath(name, *args, **kwargs)
        checked.append(path)
        during()
        try:
            return real_realpath(name, *args, **kwargs)
        finally:
            after()

    monkeypatch.setattr(os.path, "realpath", realpath)
    monkeypatch.setattr(os, "open", open_path)
    if real_open_vetted is not None:
        monkeypatch.setattr(static, "_open_vetted", open_vetted)
    return checked


def repoint(link: Path, target: Path) -> None:
    link.unlink()
    link.symlink_to(target)


@pytest.mark.parametrize("size", [1_000, 300_000])  # from memory, and from disk
@pytest.mark.parametrize("symlinks", ["inside", "never"])
@pytest.mark.parametrize("swapped", ["file", "directory"])
def test_a_link_swapped_around_its_check_never_serves_a_file_outside(
    monkeypatch: pytest.MonkeyPatch,
    site: Path,
    tmp_path: Path,
    *,
    size: int,
    symlinks: str,
    swapped: str,
) -> None:
    """The link check resolves the path, and the file is opened by path afterwards: a
    link pointed elsewhere in between must not lead the opening out of the directory.
    The check looks at a harmless target (inside, or with ``symlinks = "never"`` no
    link at all); the stat before it and the opening after it see the link out. The
    opened file is what counts: 404, never the secret, on every request.
    """
    secret = (SECRET * (size // len(SECRET) + 1))[:size]
    outside = tmp_path / "outside"
    (outside / "file.bin").write_bytes(secret)
    harmless = site / "harmless"
    harmless.mkdir()
    (harmless / "file.bin").write_bytes(b"h" * size)
    if swapped == "file":
        link, target, checked_path = site / "swapped", outside / "file.bin", site / "swapped"
        stand_in = harmless / "file.bin"
        requested = b"/static/swapped"
    else:
        # A directory of the path, not the file, becomes the link.
        link, target, checked_path = site / "dir", outside, site / "dir" / "file.bin"
        stand_in = harmless
        requested = b"/static/dir/file.bin"
    link.symlink_to(target)

    def during() -> None:
        if symlinks == "inside":
            repoint(link, stand_in)
        else:
            link.unlink()
            if stand_in.is_dir():
                shutil.copytree(stand_in, link)
            else:
                shutil.copyfile(stand_in, link)

    def after() -> None:
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
        link.symlink_to(target)

    checked = swap_around_the_check(monkeypatch, checked_path, during, after)
    router = router_for(tmp_path, config_text(site, f'symlinks = "{symlinks}"'))
    for _ in range(2):
        response = request(router, requested)
        assert secret not in response.body
        # 404 where the check follows the stat (the open file is refused); where the
        # two are one look (Linux), the file opened is not the one stat-ed: changed
        # twice while served, 503, as for any file replaced under the server.
        assert response.status in {404, 503}
    assert checked


def test_a_revalidation_of_a_gzip_form_answers_nothing_about_a_file_outside(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path
) -> None:
    """A revalidation of a compressed form is answered without reading the file (a
    304 compresses nothing), but not without opening it: with the link swapped around
    its check, the 304 (and the ETag in it) would tell of a file outside.
    """
    outside = tmp_path / "outside" / "styles.css"
    outside.write_bytes(STYLES * 10)  # above memory_cache: its bytes are not read
    harmless = site / "harmless.css"
    harmless.write_bytes(STYLES * 10)
    link = site / "swapped.css"
    link.symlink_to(outside)
    checked = swap_around_the_check(
        monkeypatch, link, lambda: repoint(link, harmless), lambda: repoint(link, outside)
    )
    router = gzip_router(site, tmp_path, "memory_cache = 100")
    response = request(router, b"/static/swapped.css", [GZIP, (b"if-none-match", b"*")])
    assert response.status in {404, 503}  # (see the test above)
    assert response.header(b"etag") is None
    assert checked


def test_a_listed_directory_swapped_around_its_check_never_lists_one_outside(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path
) -> None:
    """A listing reads the directory it opened, which must be the one checked: a link
    pointed out of the directory in between lists nothing of what is there.
    """
    outside = tmp_path / "outside"
    (outside / "secret-name.txt").write_bytes(SECRET)
    harmless = site / "harmless"
    harmless.mkdir()
    (harmless / "public-name.txt").write_bytes(b"public")
    link = site / "dir"
    link.symlink_to(outside)
    checked = swap_around_the_check(
        monkeypatch, link, lambda: repoint(link, harmless), lambda: repoint(link, outside)
    )
    router = router_for(tmp_path, config_text(site, "listing = true"))
    response = request(router, b"/static/dir/")
    assert b"secret-name" not in response.body
    assert response.status in {404, 503}  # (see the test above)
    assert checked


@pytest.mark.parametrize("symlinks", ["inside", "never"])
@pytest.mark.parametrize("asked", ["redirect", "forbidden", "try_files"])
def test_answers_from_a_stat_do_not_tell_whether_a_path_outside_exists(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path, *, symlinks: str, asked: str
) -> None:
    """Some answers come from a stat alone, nothing opened: a directory's redirect to
    its slash, the 403 of a directory without an index, ``try_files`` choosing the
    name that exists. A link swapped around the path's check must not make them tell
    whether what it leads to outside exists: the answer is the same with the target
    there and with it missing (the stat and the check are one look, at one file).
    """
    outside = tmp_path / "outside"
    (outside / "private").mkdir()
    (outside / "private" / "notes.txt").write_bytes(SECRET)
    harmless = site / "harmless"
    harmless.mkdir()
    if asked == "try_files":
        options = 'try_files = ["$uri", "/a.txt"]'
        link, stand_in, requested = site / "f", site / "a.txt", b"/static/f"
    else:
        options = ""
        link, stand_in = site / "dir", harmless
        requested = b"/static/dir" if asked == "redirect" else b"/static/dir/"
    answers = []
    there = outside / "private" / "notes.txt" if asked == "try_files" else outside / "private"
    for target in (there, outside / "missing"):
        link.symlink_to(target)

        def during(target: Path = target) -> None:
            link.unlink()
            if symlinks == "inside":
                link.symlink_to(stand_in)
            elif stand_in.is_dir():
                shutil.copytree(stand_in, link)
            else:
                shutil.copyfile(stand_in, link)

        def after(target: Path = target) -> None:
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
            link.symlink_to(target)

        with monkeypatch.context() as patched:
            swap_around_the_check(patched, link, during, after)
            router = router_for(tmp_path, config_text(site, f'symlinks = "{symlinks}"\n{options}'))
            response = request(router, requested)
        answers.append((response.status, response.header(b"location")))
        assert SECRET not in response.body
        link.unlink()
    assert answers[0] == answers[1]


@pytest.mark.parametrize("symlinks", ["inside", "never"])
def test_a_link_through_a_directory_outside_the_server_may_not_search_is_404(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path, *, symlinks: str
) -> None:
    """A directory the server may not search fails the look-up with EACCES, found
    while the path is resolved: through a link out of the directory, a 403 would
    tell that the directory is there (a 404 that it is not). Out of bounds, both are
    404; a directory inside that may not be searched is still 403.
    """
    locked = tmp_path / "outside" / "locked"
    locked.mkdir()
    inside_locked = site / "locked"
    inside_locked.mkdir()
    (site / "peek").symlink_to(locked / "x")
    (site / "miss").symlink_to(tmp_path / "outside" / "nothing" / "x")
    # The tests may run as root, whom no mode stops: the kernel's answer for a path
    # through a directory of mode 000, made by hand.
    refused = {site / "peek", inside_locked / "x"}
    real_stat, real_open = os.stat, os.open

    def refusing_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, (str, bytes)) and Path(os.fsdecode(path)) in refused:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    def refusing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if isinstance(path, (str, bytes)) and Path(os.fsdecode(path)) in refused:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refusing_stat)
    monkeypatch.setattr(os, "open", refusing_open)
    router = router_for(tmp_path, config_text(site, f'symlinks = "{symlinks}"'))
    assert request(router, b"/static/miss").status == 404
    assert request(router, b"/static/peek").status == 404
    assert request(router, b"/static/locked/x").status == 403


@pytest.mark.parametrize("kind", ["file", "directory", "below a file"])
def test_a_link_swapped_around_its_check_does_not_tell_what_the_server_may_not_read(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path, *, kind: str
) -> None:
    """The file (or listed directory) is opened for reading after its look-up: a link
    pointed out of the directory for that opening must not make the opening's
    failure tell of what is there: a permission error (403) that a file the server
    may not read is there, a "not a directory" (500) that a name is a file, where a
    missing one is another answer: all are refused the same way.
    """
    outside = tmp_path / "outside"
    unreadable = outside / "unreadable"
    target = unreadable
    if kind == "directory":
        unreadable.mkdir()
        stand_in = site / "empty"
        link, requested = site / "d", b"/static/d/"
    else:
        unreadable.write_bytes(SECRET)
        stand_in = site / "a.txt"
        link, requested = site / "f", b"/static/f"
        if kind == "below a file":
            target = unreadable / "x"
    real_realpath, real_open = os.path.realpath, os.open

    def leads_to(path: Any) -> Path:
        name = os.fsdecode(path)
        if name.startswith("/proc/self/fd/"):
            return Path(os.readlink(name))
        return Path(real_realpath(name))

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # The tests may run as root: the refusal of a file of mode 000, by hand.
        if not flags & getattr(os, "O_PATH", 0) and leads_to(path) == unreadable:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    answers = []
    for leads_to_now in (target, outside / "missing"):
        link.symlink_to(leads_to_now)
        with monkeypatch.context() as patched:
            swap_around_the_check(
                patched,
                link,
                lambda: repoint(link, stand_in),
                functools.partial(repoint, link, leads_to_now),
            )
            router = router_for(tmp_path, config_text(site, "listing = true"))
            response = request(router, requested)
        assert SECRET not in response.body
        answers.append(response.status)
        link.unlink()
    assert answers[0] == answers[1]


@pytest.mark.parametrize("symlinks", ["inside", "never"])
def test_a_listed_link_swapped_around_its_check_shows_nothing_outside(
    monkeypatch: pytest.MonkeyPatch, site: Path, tmp_path: Path, *, symlinks: str
) -> None:
    """A listing reads its directory's names, looks at each (following a link) and
    checks a link's path: a link pointed out of the directory once its name is read,
    and at something harmless while its path is checked, must not show the size and
    date of what is outside (nor, with ``"never"``, be listed at all).
    """
    outside = tmp_path / "outside" / "secret.bin"
    outside.write_bytes(b"s" * 12_345)
    listed = site / "listed"
    listed.mkdir()
    harmless = site / "harmless.bin"
    harmless.write_bytes(b"p" * 10)
    entry = listed / "entry.bin"
    entry.symlink_to(harmless)
    real_scandir = os.scandir

    class Swapping:
        """The directory's entries, the link pointed out once its name is read."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __enter__(self) -> Swapping:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def __iter__(self) -> Iterator[os.DirEntry[Any]]:
            for item in self.inner:
                if item.name == "entry.bin":
                    repoint(entry, outside)
                yield item

    def scandir(*args: Any) -> Any:
        return Swapping(real_scandir(*args))

    def during() -> None:
        entry.unlink()
        if symlinks == "inside":
            entry.symlink_to(harmless)
        else:
            shutil.copyfile(harmless, entry)

    monkeypatch.setattr(os, "scandir", scandir)
    swap_around_the_check(monkeypatch, entry, during, lambda: repoint(entry, outside))
    router = router_for(tmp_path, config_text(site, f'listing = true\nsymlinks = "{symlinks}"'))
    response = request(router, b"/static/listed/")
    assert response.status == 200
    assert b"12,345" not in response.body
    if symlinks == "never":
        assert b"entry.bin" not in response.body


@pytest.mark.parametrize("target", [b"/static/a%00.txt", b"/static/%00"])
def test_encoded_nul_is_refused_before_routing(files: Router, target: bytes) -> None:
    """An encoded NUL never reaches the file system: 400."""
    assert request(files, target).status == 400


def test_symlink_inside_the_directory_is_followed(files: Router) -> None:
    """A link to a file inside the directory is served by default."""
    assert request(files, b"/static/link_in").body == b"hello static\n"


def test_symlinks_never_refuses_every_link(site: Path, tmp_path: Path) -> None:
    """Symlinks = "never": even a link that stays inside is 404."""
    router = router_for(tmp_path, config_text(site, 'symlinks = "never"'))
    assert request(router, b"/static/link_in").status == 404
    assert request(router, b"/static/a.txt").status == 200


def test_well_known_is_served_and_dotfiles_can_be_enabled(
    site: Path, tmp_path: Path, files: Router
) -> None:
    """/.well-known/ is always served; dotfiles = true serves other dotfiles."""
    assert request(files, b"/static/.well-known/acme").body == b"token"
    router = router_for(tmp_path, config_text(site, "dotfiles = true"))
    assert request(router, b"/static/.env").body == b"SECRET=1"


# -- fall-through and X-Accel-Redirect ----------------------------------------------------


def test_fallthrough_lets_one_prefix_be_files_and_an_app(site: Path, tmp_path: Path) -> None:
    """With fallthrough, existing files are served and the rest (and POST) go to
    the application mounted at the same path.
    """
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        f'[[host.mount]]\npath = "/"\nstatic = "{site}"\nfallthrough = true\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:environ"\n'
    )
    router = router_for(tmp_path, text)
    assert request(router, b"/a.txt").body == b"hello static\n"
    missing = request(router, b"/no/such/page")
    assert missing.status == 200 and b'"PATH_INFO": "/no/such/page"' in missing.body
    post = request(router, b"/a.txt", [(b"content-length", b"0")], method=b"POST")
    assert b'"REQUEST_METHOD": "POST"' in post.body
    assert b'"SCRIPT_NAME": ""' in request(router, b"/empty/").body
    # A directory with nothing to serve is the application's with or without its slash.
    assert b'"PATH_INFO": "/empty"' in request(router, b"/empty").body


@pytest.mark.parametrize("app_first", [False, True], ids=["static first", "app first"])
def test_a_miss_falls_through_to_the_static_mount_before_its_partner(
    tmp_path: Path, app_first: bool
) -> None:
    """/sub passes misses on to / (files, passing on to the application there): a
    file under / is served whichever of the two / mounts the file lists first (the
    application's answer came back when it was listed first).
    """
    (tmp_path / "empty").mkdir()
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "x.txt").write_bytes(b"x under /\n")
    files = f'[[host.mount]]\npath = "/"\nstatic = "{tmp_path / "root"}"\nfallthrough = true\n'
    app = '[[host.mount]]\npath = "/"\napp = "tests.apps:environ"\n'
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        f'[[host.mount]]\npath = "/sub"\nstatic = "{tmp_path / "empty"}"\nfallthrough = true\n'
        + (app + files if app_first else files + app)
    )
    router = router_for(tmp_path, text)
    assert request(router, b"/sub/x.txt").body == b"x under /\n"
    assert b'"PATH_INFO": "/sub/missing"' in request(router, b"/sub/missing").body


def accel_app(field: str, value: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = b"this body is replaced by the file"
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/pdf"),
                ("Content-Disposition", 'attachment; filename="report.pdf"'),
                ("Content-Length", str(len(body))),
                (field, value),
            ],
        )
        return [body]

    return app


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("X-Accel-Redirect", "/protected/big.bin"),
        ("X-Accel-Redirect", "//protected//big.bin"),
        ("X-Sendfile", "SITE/big.bin"),
    ],
)
def test_x_accel_redirect_serves_the_file_instead(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    """An application's X-Accel-Redirect (a URL of an internal static mount) or
    X-Sendfile (a path inside a static directory) is replaced by that file, with
    the application's other headers kept and ranges honoured.
    """
    import tests.apps

    monkeypatch.setattr(
        tests.apps, "accel", accel_app(field, value.replace("SITE", str(site))), raising=False
    )
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        f'[[host.mount]]\npath = "/protected"\nstatic = "{site}"\ninternal = true\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:accel"\nx_accel_redirect = true\n'
    )
    router = router_for(tmp_path, text)
    content = (site / "big.bin").read_bytes()
    response = request(router, b"/download")
    assert response.status == 200
    assert response.body == content
    assert response.header(b"content-disposition") == b'attachment; filename="report.pdf"'
    assert response.header(b"content-type") == b"application/pdf"
    assert response.header(b"x-accel-redirect") is None and response.header(b"x-sendfile") is None
    ranged = request(router, b"/download", [(b"range", b"bytes=10-19")])
    assert (ranged.status, ranged.body) == (206, content[10:20])
    # The internal mount is not reachable directly.
    assert request(router, b"/protected/big.bin").status == 404
    assert request(router, b"//protected/big.bin").status == 404


@pytest.mark.parametrize(
    ("public_root", "internal_first"),
    [("files", False), ("files", True), ("files/protected", False), ("files/protected", True)],
)
def test_x_sendfile_is_served_by_the_mount_that_holds_the_file_most_closely(
    tmp_path: Path, public_root: str, internal_first: bool
) -> None:
    """A mount of a subdirectory (with its own rate here) before the mount of the tree
    that contains it, whatever their URL prefixes; of two mounts of one directory, the
    internal one; in any order in the file.
    """
    from twistwsgi.wsgi import WSGIHandler

    protected = tmp_path / "files" / "protected"
    protected.mkdir(parents=True)
    (protected / "big.iso").write_bytes(b"x")
    public = f'[[host.mount]]\npath = "/files"\nstatic = "{tmp_path / public_root}"\n'
    internal = (
        f'[[host.mount]]\npath = "/p"\nstatic = "{protected}"\ninternal = true\n'
        'limit_rate = "100k"\n'
    )
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        + (internal + public if internal_first else public + internal)
        + '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nx_accel_redirect = true\n'
    )
    router = router_for(tmp_path, text)
    mounts = router.table.hosts.lookup("files.example")
    assert mounts is not None
    application = next(mount.target for mount in mounts.mounts if mount.prefix == b"")
    assert isinstance(application, WSGIHandler) and application.accel is not None
    resolved = application.accel(b"x-sendfile", str(protected / "big.iso").encode())
    assert resolved is not None
    assert (resolved[0].options.root, resolved[1]) == (str(protected), b"/big.iso")
    assert resolved[0].options.limit_rate == 100 * 1024


def accel_router(
    site: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fields: list[tuple[str, str]],
    internal_options: str = "",
) -> Router:
    """An application answering every request with ``fields`` (an X-Accel-Redirect
    among them), in front of an internal static mount of ``site``.
    """
    import tests.apps

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", fields)
        return [b""]

    monkeypatch.setattr(tests.apps, "accel", app, raising=False)
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        f'[[host.mount]]\npath = "/protected"\nstatic = "{site}"\ninternal = true\n'
        f"{internal_options}"
        '[[host.mount]]\npath = "/"\napp = "tests.apps:accel"\nx_accel_redirect = true\n'
    )
    return router_for(tmp_path, text)


def test_x_accel_keeps_the_files_vary_beside_the_applications(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sibling negotiated after an X-Accel-Redirect varies on Accept-Encoding too,
    or a shared cache would hand gzip bytes to clients that cannot decode them.
    """
    fields = [("Vary", "Cookie"), ("X-Accel-Redirect", "/protected/page.html")]
    router = accel_router(site, tmp_path, monkeypatch, fields)
    response = request(router, b"/page", [(b"accept-encoding", b"gzip")])
    assert response.header(b"content-encoding") == b"gzip"
    assert response.headers.count((b"vary", b"Cookie, Accept-Encoding")) == 1
    assert [name for name, _ in response.headers].count(b"vary") == 1


def test_x_accel_fields_are_matched_whatever_their_case(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEP 3333 leaves field names' case to the application: a lower-case
    content-type still replaces the file's in a multipart answer (and types its
    parts), and a lower-case cache-control is still repeated on a 304.
    """
    fields = [
        ("content-type", "application/pdf"),
        ("cache-control", "private, max-age=60"),
        ("expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
        ("content-location", "/reports/1.pdf"),
        ("X-Accel-Redirect", "/protected/big.bin"),
    ]
    router = accel_router(site, tmp_path, monkeypatch, fields)
    ranged = request(router, b"/report", [(b"range", b"bytes=0-1,5-6")])
    assert ranged.status == 206
    types = [value for name, value in ranged.headers if name == b"content-type"]
    assert len(types) == 1 and types[0].startswith(b"multipart/byteranges; boundary=")
    assert b"Content-Type: application/pdf" in ranged.body
    assert b"application/octet-stream" not in ranged.body
    etag = request(router, b"/report").header(b"etag")
    assert etag is not None
    not_modified = request(router, b"/report", [(b"if-none-match", etag)])
    assert not_modified.status == 304
    # RFC 9110 15.4.5: what the 200 would have carried of these.
    assert not_modified.header(b"cache-control") == b"private, max-age=60"
    assert not_modified.header(b"expires") == b"Thu, 01 Jan 2037 00:00:00 GMT"
    assert not_modified.header(b"content-location") == b"/reports/1.pdf"
    assert not_modified.header(b"etag") == etag


def test_x_sendfile_outside_every_static_directory_is_refused(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """X-Sendfile naming a file outside the static directories serves nothing."""
    import tests.apps

    monkeypatch.setattr(
        tests.apps, "accel", accel_app("X-Sendfile", str(tmp_path / "secret.txt")), raising=False
    )
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        f'[[host.mount]]\npath = "/protected"\nstatic = "{site}"\ninternal = true\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:accel"\nx_accel_redirect = true\n'
    )
    response = request(router_for(tmp_path, text), b"/download")
    assert response.status == 404
    assert SECRET not in response.body


def test_without_the_option_accel_headers_are_passed_on(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without x_accel_redirect the application's answer is sent as it is."""
    import tests.apps

    monkeypatch.setattr(tests.apps, "accel", accel_app("X-Accel-Redirect", "/x"), raising=False)
    text = (
        '[[host]]\nnames = ["files.example"]\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:accel"\n'
    )
    response = request(router_for(tmp_path, text), b"/download")
    assert response.body == b"this body is replaced by the file"
    assert response.header(b"x-accel-redirect") == b"/x"


def test_the_memory_cache_lets_the_least_recently_used_file_go(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path
) -> None:
    """Over its budget, the cache drops the file asked for longest ago, not the one
    cached first: a hot file stays in memory.
    """
    for name in ("hot", "cold", "new"):
        (site / f"{name}.bin").write_bytes(os.urandom(10_000))
    monkeypatch.setattr(static, "CACHE_BUDGET", 25_000)  # room for two of them
    for target in (b"hot", b"cold", b"hot", b"new"):  # "new" pushes one out
        assert request(files, b"/static/" + target + b".bin").status == 200
    opened = replace_when_opened(monkeypatch, site / "unused", [])
    for target in (b"hot", b"cold"):
        assert request(files, b"/static/" + target + b".bin").status == 200
    # Only the cold file had to be read from disk again.
    assert [path.name for path in opened] == ["cold.bin"]


class _CountingPulls(PullingTransport):
    """A PullingTransport that stops a pull producer which keeps being called without
    an end: a sender spinning on a file that ended would otherwise hold the test (and
    a real reactor) for ever.
    """

    pulls = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if streaming:
            super().registerProducer(producer, streaming)
            return
        StringTransport.registerProducer(self, producer, streaming)
        while self.producer is producer and not self.disconnecting:
            self.pulls += 1
            assert self.pulls < 1_000, "the file sender spins"
            cast(IPullProducer, producer).resumeProducing()


@pytest.mark.parametrize("cut", [0, 100_000, 299_999])
def test_a_file_cut_short_while_it_is_sent_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path, cut: int
) -> None:
    """A file truncated after its head went out (a log rotated, a deploy writing in
    place) cannot keep the Content-Length promise: the connection ends after the
    bytes there were (the client sees a short body, RFC 9112 6.3), the request
    pipelined behind it is not answered on it, the sender does not spin, and one
    error line names the file and where it ended, as nginx's "was truncated" alert.
    The next request gets the file as it is now.
    """
    target = site / "cut.bin"
    content = os.urandom(300_000)
    target.write_bytes(content)
    real_pread = os.pread
    reads: list[int] = []

    def pread(descriptor: int, size: int, offset: int) -> bytes:
        if not reads:
            os.truncate(target, cut)
        reads.append(offset)
        return real_pread(descriptor, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    transport = _CountingPulls()
    connection = connect(files, transport=transport)
    with capture_log_events() as events:
        connection.send(
            b"GET /static/cut.bin HTTP/1.1\r\nHost: files.example\r\n\r\n"
            b"GET /static/a.txt HTTP/1.1\r\nHost: files.example\r\n\r\n"
        )
    written = connection.take()
    assert connection.is_closed()
    head, _, body = written.partition(b"\r\n\r\n")
    assert b"Content-Length: 300000" in head
    assert body == content[:cut]  # and nothing of the next response
    errors = [event for event in events if event.get("log_level") is LogLevel.error]
    assert [formatEvent(event) for event in errors] == [
        f"{target} was truncated at {cut} bytes while it was sent (300000 announced);"
        " closing the connection"
    ]
    assert not [event for event in events if "log_failure" in event]
    monkeypatch.undo()
    again = request(files, b"/static/cut.bin")
    assert again.body == content[:cut]
    assert again.header(b"content-length") == b"%d" % cut


class _FailingSend:
    """An exchange whose file sending fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.finished = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        pass

    def send_file(self, file: Any, offset: int, count: int) -> Deferred[None]:
        return fail(self.error)

    def finish(self, data: bytes = b"") -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (ConnectionLost("The client went away during a file response"), False),
        (BrokenPipeError(32, "Broken pipe"), False),
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (OSError(5, "Input/output error"), True),
    ],
)
def test_only_a_failure_on_the_server_side_is_logged_as_one(
    site: Path, error: Exception, logged: bool
) -> None:
    """A client leaving mid-file is ordinary (the access log has its bytes)."""
    exchange = _FailingSend(error)
    with open(site / "a.txt", "rb") as handle, capture_log_events() as events:
        static._send_pieces(exchange, handle, iter([(b"", 0, 1)]), b"")  # type: ignore[arg-type]
    assert exchange.aborted
    assert bool([e for e in events if "log_failure" in e]) == logged


# -- files that cannot be opened as they were seen ---------------------------------------


def refuse_opening(monkeypatch: pytest.MonkeyPatch, refused: Path) -> None:
    """Make opening ``refused`` fail with EACCES (the tests may run as root, whom no
    mode stops).
    """

    def refuse(path: Path) -> None:
        if path == refused:
            raise PermissionError(13, "Permission denied", str(path))

    before_opening(monkeypatch, refuse)


def test_a_fifo_renamed_over_a_file_after_its_stat_is_404_without_waiting(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path
) -> None:
    """Opening a FIFO waits for a writer: in the reactor thread every other request
    would wait too. The open does not wait, and finds another file than the one
    seen: looked up again, a FIFO is never served.
    """
    target = site / "swapped.bin"
    target.write_bytes(os.urandom(300_000))
    fifo = site / "swapped.fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    rescued: list[bool] = []

    def rescue() -> None:
        # Lets an open that waits return, so that a failing test fails, not hangs.
        if not done.wait(30):
            rescued.append(True)
            os.close(os.open(target, os.O_WRONLY))

    threading.Thread(target=rescue, daemon=True).start()

    def swap(path: Path) -> None:
        if path == target and fifo.exists():
            fifo.replace(target)

    before_opening(monkeypatch, swap)
    try:
        response = request(files, b"/static/swapped.bin")
    finally:
        done.set()
    assert response.status == 404
    assert not rescued


@pytest.mark.parametrize("size", [1_000, 300_000])  # from memory, and from disk
def test_an_unreadable_precompressed_sibling_gives_way_to_the_file(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path, size: int
) -> None:
    """A .gz nobody may read (a umask on the build output) is passed over for the
    file itself, as nginx does, instead of a 403 for every browser; said once.
    """
    content = os.urandom(size)
    (site / "app.js").write_bytes(content)
    (site / "app.js.gz").write_bytes(b"gzip of app.js")
    refuse_opening(monkeypatch, site / "app.js.gz")
    gzip = [(b"accept-encoding", b"gzip")]
    with capture_log_events() as events:
        first = request(files, b"/static/app.js", gzip)
        second = request(files, b"/static/app.js", gzip)
        head = request(files, b"/static/app.js", gzip, method=b"HEAD")
    for response in (first, second, head):
        assert response.status == 200
        assert response.header(b"content-encoding") is None
        assert response.header(b"vary") == b"Accept-Encoding"
        assert response.header(b"content-length") == b"%d" % size
    assert first.body == second.body == content
    said = [formatEvent(e) for e in events if "Cannot read" in formatEvent(e)]
    assert len(said) == 1 and "app.js.gz" in said[0]


def test_an_unreadable_brotli_sibling_gives_way_to_the_gzip_one(
    monkeypatch: pytest.MonkeyPatch, files: Router, site: Path
) -> None:
    """The next choice is the next sibling the client accepts, from the first request
    on (the same answer each time), not the uncompressed file.
    """
    (site / "app.js").write_bytes(b"plain")
    (site / "app.js.br").write_bytes(b"brotli")
    (site / "app.js.gz").write_bytes(b"gzip")
    refuse_opening(monkeypatch, site / "app.js.br")
    both = [(b"accept-encoding", b"br, gzip")]
    answers = [request(files, b"/static/app.js", both) for _ in range(2)]
    for response in answers:
        assert (response.status, response.body) == (200, b"gzip")
        assert response.header(b"content-encoding") == b"gzip"


@pytest.mark.parametrize(
    "asked",
    [
        (b"HEAD", []),
        (b"GET", [(b"if-none-match", b"ETAG")]),
        (b"GET", [(b"if-match", b"ETAG")]),
        (b"GET", [(b"range", b"bytes=0-9")]),
    ],
)
def test_a_file_that_cannot_be_read_is_403_for_head_and_conditions_too(
    monkeypatch: pytest.MonkeyPatch,
    files: Router,
    site: Path,
    asked: tuple[bytes, list[tuple[bytes, bytes]]],
) -> None:
    """RFC 9110 9.3.2: HEAD gets what GET would; a 304 or 206 would tell (and show the
    ETag of) a file the server may not read, which GET answers with 403.
    """
    target = site / "private.bin"
    target.write_bytes(os.urandom(300_000))
    etag = request(files, b"/static/private.bin", method=b"HEAD").header(b"etag")
    assert etag is not None
    refuse_opening(monkeypatch, target)
    method, fields = asked
    fields = [(name, etag if value == b"ETAG" else value) for name, value in fields]
    assert request(files, b"/static/private.bin").status == 403
    assert request(files, b"/static/private.bin", fields, method=method).status == 403


# -- a remembered file's short way (StaticHandler._send_remembered) -------------------------


class _AlwaysServe(StaticHandler):
    """A mount that never takes the short way: every request goes through serve."""

    def _send_remembered(self, exchange: Any, request: Any, path_info: bytes) -> bool:
        return False


_SHORT_WAY_NAMES = ("a.txt", "text.txt", "page.html", "page.html.gz", "big.bin", "link_in")
_SHORT_WAY_FIELDS = (
    (),
    ((b"Accept-Encoding", b"gzip, deflate, br, zstd"),),
    ((b"accept-encoding", b"gzip"), (b"User-Agent", b"curl/8")),
    ((b"Accept-Encoding", b"identity"),),
    ((b"Accept-Encoding", b""),),
    ((b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"br")),
    ((b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"")),
    ((b"If-None-Match", b'"other"'), (b"If-None-Match", b"*")),
    ((b"Accept-Encoding", b"gzip"), (b"If-None-Match", b"*")),
    ((b"If-None-Match", b"*"),),
    ((b"If-None-Match", b'"other"'), (b"Accept-Encoding", b"gzip")),
    ((b"IF-MODIFIED-SINCE", b"Sat, 01 Jan 2000 00:00:00 GMT"),),
    ((b"If-Modified-Since", b"Sat, 01 Jan 2100 00:00:00 GMT"), (b"Accept-Encoding", b"br")),
    ((b"If-Match", b'"nope"'),),
    ((b"If-Match", b"*"), (b"If-Match", b'"nope"')),
    ((b"If-Unmodified-Since", b"Sat, 01 Jan 2000 00:00:00 GMT"),),
    ((b"If-None-Match", b"*"), (b"Range", b"bytes=0-3")),
    ((b"Range", b"bytes=0-3"),),
    ((b"X-Other", b"1"), (b"If-Range", b'"x"')),
    ((b"User-Agent", b"curl/8"), (b"Accept", b"*/*")),
)
_SHORT_WAY_OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"gzip": GzipSettings(min_length=1)},
    {"precompressed": False},
    {"precompressed": False, "gzip": GzipSettings(min_length=1)},
)


def _change_file(root: Path, name: str, change: str, outside: Path) -> None:
    """Change the file ``name`` under ``root`` as ``change`` says (between two requests)."""
    sibling = change.startswith("sibling")
    path = root / (name + change[7:] if sibling else name)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    if sibling:
        path.write_bytes(b"a sibling of " + name.encode())
    elif change == "rewrite":
        path.write_bytes(b"rewritten " + name.encode())
    elif change == "longer":
        path.write_bytes(b"a longer body than before, to be compressed: " * 20)
    elif change == "link_out":
        path.symlink_to(outside)
    elif change == "directory":
        path.mkdir()
        (path / "index.html").write_bytes(b"<p>an index</p>")
    # "delete": gone


_short_way_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("request"),
            st.sampled_from(_SHORT_WAY_NAMES),
            st.sampled_from(("", "/")),
            st.sampled_from((b"GET", b"HEAD")),
            st.sampled_from(_SHORT_WAY_FIELDS),
        ),
        st.tuples(
            st.just("change"),
            st.sampled_from(_SHORT_WAY_NAMES),
            st.sampled_from(
                ("rewrite", "longer", "delete", "link_out", "directory", "sibling.gz", "sibling.br")
            ),
        ),
        st.tuples(st.just("wait"), st.sampled_from((0.5, static.SIBLING_RECHECK))),
    ),
    min_size=1,
    max_size=14,
)
_GET = b"GET"
_BROWSER = ((b"Accept-Encoding", b"gzip, br"),)


@settings(max_examples=150, deadline=None)
@given(options=st.sampled_from(_SHORT_WAY_OPTIONS), steps=_short_way_steps)
@example(  # a file remembered, then asked for as a directory (twice: its path known)
    options={},
    steps=[
        ("request", "a.txt", "", _GET, ()),
        ("request", "a.txt", "/", _GET, ()),
        ("request", "a.txt", "/", _GET, ()),
    ],
)
@example(  # a sibling asked for by name, remembered as page.html's encoding, asked again
    options={},
    steps=[
        ("request", "page.html.gz", "", _GET, ()),
        ("request", "page.html", "", _GET, ((b"Accept-Encoding", b"gzip"),)),
        ("request", "page.html.gz", "", _GET, ()),
    ],
)
@example(  # a field the file rules read, on a remembered file
    options={},
    steps=[
        ("request", "a.txt", "", _GET, ()),
        ("request", "a.txt", "", _GET, ((b"If-None-Match", b"*"),)),
        ("request", "a.txt", "", _GET, ((b"Range", b"bytes=0-3"),)),
        ("request", "a.txt", "", _GET, ((b"Accept-Encoding", b"gzip"), (b"Range", b"bytes=0-3"))),
    ],
)
@example(  # preconditions: 304, 412 and 200 (none of them holds), with Accept-Encoding
    options={},
    steps=[
        ("request", "a.txt", "", _GET, ()),
        ("request", "a.txt", "", _GET, ((b"If-None-Match", b"*"), *_BROWSER)),
        ("request", "a.txt", "", _GET, ((b"If-Match", b'"nope"'),)),
        ("request", "a.txt", "", _GET, ((b"If-None-Match", b'"other"'),)),
        ("request", "a.txt", "", _GET, ((b"If-Range", b'"other"'),)),
    ],
)
@example(  # several lines of a field: one list (RFC 9110 5.3)
    options={},
    steps=[
        ("request", "page.html", "", _GET, ()),
        (
            "request",
            "page.html",
            "",
            _GET,
            ((b"If-None-Match", b'"other"'), (b"If-None-Match", b"*")),
        ),
        (
            "request",
            "page.html",
            "",
            _GET,
            ((b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"")),
        ),
    ],
)
@example(  # a remembered file rewritten, removed, swapped for a link out
    options={},
    steps=[
        ("request", "a.txt", "", _GET, ()),
        ("change", "a.txt", "longer"),
        ("request", "a.txt", "", _GET, ()),
        ("change", "a.txt", "link_out"),
        ("request", "a.txt", "", _GET, ()),
        ("change", "a.txt", "delete"),
        ("request", "a.txt", "", _GET, ()),
    ],
)
@example(  # a sibling added: not seen until the file's absence of one is looked at again
    options={},
    steps=[
        ("request", "a.txt", "", _GET, _BROWSER),
        ("change", "a.txt", "sibling.br"),
        ("request", "a.txt", "", _GET, _BROWSER),
        ("wait", static.SIBLING_RECHECK),
        ("request", "a.txt", "", _GET, _BROWSER),
        ("request", "a.txt", "", _GET, _BROWSER),
    ],
)
@example(  # a file's absence of siblings was found before it changed: looked at again
    options={},
    steps=[
        ("request", "a.txt", "", _GET, _BROWSER),
        ("change", "a.txt", "rewrite"),
        ("request", "a.txt", "", _GET, ()),
        ("change", "a.txt", "sibling.br"),
        ("request", "a.txt", "", _GET, _BROWSER),
    ],
)
@example(  # the gzip form of one file, and another that does not get smaller
    options={"gzip": GzipSettings(min_length=1)},
    steps=[
        ("request", "text.txt", "", _GET, _BROWSER),
        ("request", "text.txt", "", _GET, _BROWSER),
        ("request", "a.txt", "", _GET, _BROWSER),
        ("request", "a.txt", "", _GET, _BROWSER),
        ("change", "a.txt", "longer"),
        ("request", "a.txt", "", _GET, _BROWSER),
        ("request", "a.txt", "", _GET, _BROWSER),
    ],
)
@example(  # two Accept-Encoding lines: one list (RFC 9110 5.3)
    options={"precompressed": False, "gzip": GzipSettings(min_length=1)},
    steps=[
        ("request", "text.txt", "", _GET, ((b"Accept-Encoding", b"identity"),)),
        ("request", "text.txt", "", _GET, ((b"Accept-Encoding", b"br"),)),
        (
            "request",
            "text.txt",
            "",
            _GET,
            ((b"Accept-Encoding", b"br"), (b"accept-encoding", b"gzip")),
        ),
    ],
)
def test_the_short_way_answers_as_serve_does(
    options: dict[str, Any], steps: list[tuple[Any, ...]]
) -> None:
    """A GET of a file kept in memory, with none of the fields the file rules read but
    Accept-Encoding, skips serve's steps: every answer and log line is serve's own,
    whatever the request, the mount's options, the time, and whatever happened to
    the file (or its siblings) since it was remembered.
    """
    with tempfile.TemporaryDirectory() as directory:
        root = make_site(Path(directory))
        (root / "text.txt").write_bytes(b"text that gzip makes smaller, " * 40)
        outside = Path(directory) / "secret.txt"
        now = [4_000_000_000.0]

        def mount(kind: type[StaticHandler]) -> StaticHandler:
            return kind(StaticOptions(root=str(root), **options), now=lambda: now[0])

        short, always = mount(StaticHandler), mount(_AlwaysServe)
        for step in steps:
            if step[0] == "change":
                _change_file(root, step[1], step[2], outside)
                continue
            if step[0] == "wait":
                now[0] += step[1]
                continue
            _, name, slash, method, fields = step
            head = b"%s /%s%s HTTP/1.1\r\nHost: files.example\r\n" % (
                method,
                name.encode(),
                slash.encode(),
            )
            head += b"".join(field + b": " + value + b"\r\n" for field, value in fields)
            answers = []
            for handler in (short, always):
                with capture_log_events() as events:
                    connection = connect(handler, transport=PullingTransport())
                    connection.send(head + b"\r\n")
                    written = connection.take()
                answers.append((written, [formatEvent(event) for event in events]))
            assert answers[0] == answers[1]
