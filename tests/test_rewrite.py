"""Redirects by regular expression (nginx's rewrite ... permanent|redirect).

The rules are pure logic, tested on request heads; a few tests go through the router
built from a configuration file, with raw bytes and h11.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent

from twistwsgi import cli
from twistwsgi.config import ConfigError
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.request import RequestHead
from twistwsgi.rewrite import RewriteRedirects, RewriteRule, parse_rewrite
from twistwsgi.service import ServerService, make_service
from twistwsgi.site import describe_routing
from twistwsgi.testing import capture_log_events, parse_responses, request_head

NOBODY = TrustedProxies(())


def head(target: bytes, host: bytes = b"shop.example", scheme: str = "https") -> RequestHead:
    return request_head(target, host=host, scheme=scheme)


def target(lines: list[str], request_target: bytes) -> tuple[int, bytes] | str | None:
    redirects = RewriteRedirects([parse_rewrite(line) for line in lines], NOBODY)
    return redirects.target(head(request_target))


@pytest.mark.parametrize(
    ("line", "request_target", "expected"),
    [
        # Groups, the query appended.
        (
            r"^/blog/\d+/(.+)$ /articles/$1 permanent",
            b"/blog/2019/my-post",
            (301, b"/articles/my-post"),
        ),
        (
            r"^/blog/\d+/(.+)$ /articles/$1 permanent",
            b"/blog/7/p?ref=x",
            (301, b"/articles/p?ref=x"),
        ),
        # A replacement with a query of its own: the request's after an &.
        (
            r"^/search/(\w+)$ /find?q=$1 redirect",
            b"/search/cats?page=2",
            (302, b"/find?q=cats&page=2"),
        ),
        # A replacement ending in ?: the request's query dropped.
        (r"^/old$ /new? permanent", b"/old?utm=1", (301, b"/new")),
        # A URL alone is a 302; variables; a group that did not match is empty.
        (r"^/shop(/.*)?$ https://shop.example.com$1", b"/shop", (302, b"https://shop.example.com")),
        (
            r"^/shop(/.*)?$ https://shop.example.com$1",
            b"/shop/a",
            (302, b"https://shop.example.com/a"),
        ),
        (r"^/(.*)$ $scheme://www.$host/$1 permanent", b"/x", (301, b"https://www.shop.example/x")),
        # Searched, not matched whole; in the decoded path without dot-segments.
        (r"/index\.php$ / permanent", b"/a/b/index.php", (301, b"/")),
        (
            r"^/caf\xe9/(.*) /coffee/$1 permanent".replace(r"\xe9", "é"),
            b"/caf%C3%A9/x",
            (301, b"/coffee/x"),
        ),
        (r"^/a/(.*)$ /b/$1 permanent", b"/x/../a/y", (301, b"/b/y")),
        # (?i) as nginx's PCRE.
        (r"(?i)^/FAQ$ /help permanent", b"/faq", (301, b"/help")),
        # No match.
        (r"^/blog/ /articles/ permanent", b"/news", None),
        # Above the root: the router's 404, no redirect.
        (r"^ /x permanent", b"/../x", None),
        # Runs of slashes are one, as in nginx's $uri: // cannot step around a line
        # nor make a Location another site's.
        (r"^/blog/(.*)$ /articles/$1 permanent", b"//blog//x", (301, b"/articles/x")),
        (r"^/(.*)/$ /$1 permanent", b"//evil.example/", (301, b"/evil.example")),
        (r"^/(.*)/$ /$1 permanent", b"/%2Fevil.example/", (301, b"/evil.example")),
        (r"^/go(/.*)$ /$1 redirect", b"/go/evil.example", (302, b"/%2Fevil.example")),
        # In the query a group cannot add arguments (nginx escapes & + ; there).
        (
            r"^/search/(.+)$ /find?q=$1 redirect",
            b"/search/a%26admin%3D1",
            (302, b"/find?q=a%26admin=1"),
        ),
        (r"^/search/(.+)$ /find?q=$1 redirect", b"/search/c%2B%2B", (302, b"/find?q=c%2B%2B")),
        (r"^/p/(.+)$ /q/$1 redirect", b"/p/a&b+c", (302, b"/q/a&b+c")),  # (in the path: kept)
        (r"^/s/(.*)$ /f?q=$1 redirect", b"/s/caf%C3%A9%3F%20x", (302, b"/f?q=caf%C3%A9%3F%20x")),
        # PCRE's syntax: named groups ($name, ${name}), POSIX classes, quoted words.
        (
            r"^/item/(?<id>[[:digit:]]+)$ /items/${id}/$id permanent",
            b"/item/42",
            (301, b"/items/42/42"),
        ),
        (r'"^/blog/\d{4}/(.+)$" /articles/$1 permanent', b"/blog/2019/x", (301, b"/articles/x")),
        (r"'^/a b$' /ab permanent", b"/a%20b", (301, b"/ab")),
        # A URL redirects whatever last or break say, as in nginx.
        (r"^/a(.*) https://x.example$1 last", b"/a/x", (302, b"https://x.example/x")),
    ],
)
def test_a_line_redirects_as_nginx_would(
    line: str, request_target: bytes, expected: tuple[int, bytes] | None
) -> None:
    assert target([line], request_target) == expected


def test_groups_are_percent_encoded_where_a_path_cannot_hold_them() -> None:
    """A group comes decoded: ?, #, a space, a CR LF and non-ASCII go back encoded,
    so no path can end the Location field or add a query.
    """
    found = target([r"(?s)^/go/(.*)$ /to/$1 redirect"], b"/go/a%3Fb%23c%20d%0D%0Ae/%C3%A9")
    assert found == (302, b"/to/a%3Fb%23c%20d%0D%0Ae/%C3%A9")


@given(st.binary(min_size=0, max_size=40))
def test_a_location_holds_only_uri_characters(path: bytes) -> None:
    """Whatever bytes the path decodes to, the Location is URI characters only."""
    from urllib.parse import quote_from_bytes

    found = target([r"(?s)^/(.*)$ /to/$1 redirect"], b"/" + quote_from_bytes(path).encode())
    if found is None:
        return  # (a path with dot-segments above the root)
    assert isinstance(found, tuple)
    _, location = found
    assert all(0x21 <= byte <= 0x7E and byte not in b'"<>\\^`{|}' for byte in location)


def test_options_star_is_not_rewritten() -> None:
    redirects = RewriteRedirects([parse_rewrite(r"^(.*)$ https://new.example$1 permanent")], NOBODY)
    star = request_head(b"*", method=b"OPTIONS")
    assert redirects.target(star) is None
    assert not redirects.answers(star)


def test_a_line_that_backtracks_too_long_is_cut_off_and_answered_500() -> None:
    """A path made to backtrack a line for minutes costs TIME_LIMIT, once per
    request (the body limit's question and the answer share it), then a 500 and a
    log line naming the line.
    """
    # Each extra "a" multiplies the ways to try (by about 1.6): far past the limit.
    line = parse_rewrite(r"^/(a|aa)+$ /p/$1 permanent")
    redirects = RewriteRedirects([line], NOBODY)
    request = head(b"/" + b"a" * 60 + b"!")
    with capture_log_events() as events:
        assert redirects.answers(request)
        assert redirects.target(request) == "timed out"
    (logged,) = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.rewrite"]
    assert logged.startswith("Rewrite line ^/(a|aa)+$ took over 0.05s on a path of 62 bytes")


def test_without_the_regex_package_lines_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def missing(name: str, *args: Any) -> Any:
        if name == "regex":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ValueError, match=r"pip install 'twistwsgi\[rewrite\]'"):
        parse_rewrite("^/a /b permanent")


def test_the_first_line_that_matches_answers() -> None:
    lines = [r"^/a /first permanent", r"^/a/b /second permanent", r"^/c /third redirect"]
    assert target(lines, b"/a/b") == (301, b"/first")
    assert target(lines, b"/c") == (302, b"/third")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (r"^/a /b last", "rewrites the request inside the server"),
        (r"^/a /b break", "rewrites the request inside the server"),
        (r"^/a /b", "rewrites the request inside the server"),
        (r"^/a /b gone", "expected 'REGEX REPLACEMENT permanent'"),
        (r"^/a", "expected 'REGEX REPLACEMENT permanent'"),
        (r"^/a /b permanent extra", "expected 'REGEX REPLACEMENT permanent'"),
        (r"^/(a /b permanent", "'^/(a' is not a regular expression"),
        (r"^/(a)$ /b/$2 permanent", "uses $2, but '^/(a)$' has 1 group(s)"),
        (r"^/a /b/$bogus permanent", "unknown variable $bogus"),
        (r'"^/a /b permanent', "a quote is not closed"),
        (r'"^/a"x /b permanent', "a space must follow a closing quote"),
    ],
)
def test_lines_that_cannot_be_read_are_refused(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_rewrite(line)
    assert message in str(caught.value)


def test_a_rule_reads_back_as_written() -> None:
    rule = parse_rewrite(r"^/x$  https://y.example/  ")
    assert rule == RewriteRule("^/x$", "https://y.example/", 302)
    assert str(rule) == "^/x$ https://y.example/ redirect"
    quoted = parse_rewrite(r'"^/a\d{2} b$" /c permanent')
    assert quoted.pattern == r"^/a\d{2} b$"
    assert str(quoted) == r'"^/a\\d{2} b$" /c permanent'
    assert parse_rewrite(str(quoted)) == quoted


# -- through the router ------------------------------------------------------------------

SITE = r"""
[[host]]
names = ["shop.example"]
rewrite = [
    '^/blog/\d+/(.+)$ /articles/$1 permanent',
    '^/old-shop(/.*)?$ https://shop.example$1 redirect',
]
[[host.mount]]
path = "/"
app = "tests.apps:hello"
"""


def serve(tmp_path: Path, text: str = SITE) -> tuple[ServerService, str]:
    """The service of ``text`` (no threads, no sockets) and its --check-config text."""
    (tmp_path / "site.toml").write_text(text)
    config = cli.load_config({"config": str(tmp_path / "site.toml"), "threads": "0"})
    service = make_service(config, reactor=MemoryReactorClock(), endpoints=[])
    return service, describe_routing(config)


def exchange(service: ServerService, data: bytes, methods: list[bytes]) -> list[Any]:
    protocol: Any = service.factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return parse_responses(transport.value(), methods)


def test_the_host_redirects_before_its_mounts(tmp_path: Path) -> None:
    service, _ = serve(tmp_path)
    moved, found, served = exchange(
        service,
        b"GET /blog/2020/hello?x=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n"
        b"HEAD /old-shop HTTP/1.1\r\nHost: shop.example\r\n\r\n"
        b"GET /elsewhere HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        [b"GET", b"HEAD", b"GET"],
    )
    assert (moved.status, moved.header(b"location")) == (301, b"/articles/hello?x=1")
    assert moved.body == b"Moved Permanently\n"
    assert (found.status, found.header(b"location"), found.body) == (
        302,
        b"https://shop.example",
        b"",
    )
    assert (served.status, served.body) == (200, b"Hello, World!")


def test_a_redirect_is_answered_from_the_head_whatever_the_body(tmp_path: Path) -> None:
    """A body over max_body to a redirected path gets the redirect, not a 413, as
    nginx's rewrite in a server block answers before client_max_body_size is read.
    """
    service, _ = serve(tmp_path)
    (response,) = exchange(
        service,
        b"POST /blog/1/x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 99999999\r\n\r\n",
        [b"POST"],
    )
    assert (response.status, response.header(b"location")) == (301, b"/articles/x")


def test_check_config_lists_the_lines(tmp_path: Path) -> None:
    _, described = serve(tmp_path)
    assert r"  rewrite ^/blog/\d+/(.+)$ /articles/$1 permanent" in described


def test_a_line_that_cannot_be_read_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        serve(tmp_path, SITE.replace("permanent'", "last'"))
    assert str(caught.value).startswith("site.toml: host[0].rewrite: ")
    assert "rewrites the request inside the server" in str(caught.value)


def test_a_request_whose_lines_run_out_of_time_gets_500(tmp_path: Path) -> None:
    text = SITE.replace("rewrite = [", "rewrite = [\n    '^/(a|aa)+$ /p/$1 permanent',")
    service, _ = serve(tmp_path, text)
    target = b"/" + b"a" * 60 + b"!"
    (response,) = exchange(
        service, b"GET " + target + b" HTTP/1.1\r\nHost: shop.example\r\n\r\n", [b"GET"]
    )
    assert (response.status, response.body) == (
        500,
        b"Internal Server Error: the address could not be rewritten\n",
    )
