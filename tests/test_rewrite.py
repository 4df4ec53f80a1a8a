"""A host's rewrite lines: redirects (permanent, redirect) and rewrites inside (last, break).

The rules are pure logic, tested on request heads; a few tests go through the router
built from a configuration file (or, for a proxy mount, a router around an
in-memory upstream), with raw bytes and h11.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent

from tests.test_proxy import make_proxy
from twistwsgi import cli
from twistwsgi.config import ConfigError
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.exchange import Handler
from twistwsgi.http.request import RequestHead, RewrittenRequest
from twistwsgi.log_format import LogFormat, RequestTemplate
from twistwsgi.rewrite import Outcome, RewriteRule, Rewrites, parse_rewrite
from twistwsgi.routing import HostTable, Mount, MountTable, Router, RoutingTable
from twistwsgi.service import ServerService, make_service
from twistwsgi.site import describe_routing
from twistwsgi.testing import capture_log_events, connect, parse_responses, request_head

NOBODY = TrustedProxies(())


def head(target: bytes, host: bytes = b"shop.example", scheme: str = "https") -> RequestHead:
    return request_head(target, host=host, scheme=scheme)


def target(lines: list[str], request_target: bytes) -> Outcome:
    redirects = Rewrites([parse_rewrite(line) for line in lines], NOBODY)
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
        # Braces, as in every template (twistwsgi.templates).
        # ${1}0 is $1 then a 0 (nginx's way to write a digit after a capture).
        (r"^/v(\d)/(.*)$ /v${1}0/${2} permanent", b"/v1/x", (301, b"/v10/x")),
        (r"^/(?<name>[a-z]+)$ /${name}x permanent", b"/ab", (301, b"/abx")),
        (r"^/a$ /b/${host} permanent", b"/a", (301, b"/b/shop.example")),
        (r"^/a$ /b?${args}&y=1? permanent", b"/a?page=2", (301, b"/b?page=2&y=1")),
        (r"^/a$ /b?p=${arg_page}? permanent", b"/a?page=2", (301, b"/b?p=2")),
        # ${scheme} starts a URL as $scheme does: a redirect whatever the flag.
        (r"^/a$ ${scheme}://b.example/a last", b"/a", (302, b"https://b.example/a")),
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


#: Redirects whose group follows a variable that may bring the "?" (its value).
AFTER_A_VARIABLE = [
    r"^/p/(.*)$ /x$is_args$args&c=$1 redirect",
    r"^/p/(.*)$ /x$request_uri&c=$1 redirect",
    r"^/p/(.*)$ /x/$http_x_base/$1 redirect",
    r"^/p/(.*)$ /x$is_args$1 redirect",
    r"^/(p)/(.*)$ /$1/$is_args$2 redirect",  # (after a group, "/\0/" is in the path)
    r"^/p/(?<rest>.*)$ https://$host/x$is_args${rest} permanent",
    # A Location that starts with a group or a variable starts with its path.
    r"^(/p)/(.*)$ $1/x$is_args$args&c=$2 redirect",
    r"^/p/(.*)$ $request_uri&c=$1 redirect",
]


@pytest.mark.parametrize("line", AFTER_A_VARIABLE)
def test_a_group_after_a_variable_that_may_start_the_query_stays_one_argument(
    line: str,
) -> None:
    """A variable may bring the Location's ``?`` (``$is_args``, ``$request_uri``, a
    header's value): a group after it is encoded as in a query, as a mount's capture
    is, so its ``&`` adds no argument to the redirect.
    """
    request = head(b"/p/a%26admin=1?z=1")
    request.headers.append((b"x-base", b"b?k=v"))
    found = Rewrites([parse_rewrite(line)], NOBODY).target(request)
    assert isinstance(found, tuple)
    assert b"a&admin=1" not in found[1], found
    assert found[1].endswith((b"a%26admin=1", b"a%26admin=1&z=1", b"a%26admin=1?z=1")), found


@given(st.sampled_from(AFTER_A_VARIABLE), st.binary(max_size=30))
def test_a_group_adds_no_argument_to_a_redirect(line: str, group: bytes) -> None:
    """Whatever bytes a group holds, the Location has the arguments it has without it."""
    from urllib.parse import quote_from_bytes

    rules = Rewrites([parse_rewrite("(?s)" + line)], NOBODY)  # (a group may hold a LF)

    def arguments(path: bytes) -> tuple[int, int]:
        request = head(b"/p/" + quote_from_bytes(path).encode() + b"?z=1")
        request.headers.append((b"x-base", b"b?k=v"))
        found = rules.target(request)
        assert isinstance(found, tuple)
        query = found[1].partition(b"?")[2]
        return query.count(b"&"), query.count(b"?")

    assert arguments(b"/" + group) == arguments(b"/")


@given(
    st.binary(min_size=0, max_size=40),
    st.sampled_from(
        ["/to/$1", "/to/${1}", "$1", "/${1}", "/x$is_args${1}", "${scheme}://a.test/${1}?q=$1"]
    ),
)
def test_a_location_holds_only_uri_characters(path: bytes, replacement: str) -> None:
    """Whatever bytes the path decodes to, and however a group is spelled, the
    Location is URI characters only and names no other site (no leading ``//``).
    """
    from urllib.parse import quote_from_bytes

    line = f"(?s)^(.*)$ {replacement} redirect"  # (a group that starts with /)
    found = target([line], b"/" + quote_from_bytes(path, safe="").encode())
    if found is None:
        return  # (a path with dot-segments above the root)
    assert isinstance(found, tuple)
    _, location = found
    assert all(0x21 <= byte <= 0x7E and byte not in b'"<>\\^`{|}' for byte in location)
    assert not location.startswith(b"//")


def test_options_star_is_not_rewritten() -> None:
    redirects = Rewrites([parse_rewrite(r"^(.*)$ https://new.example$1 permanent")], NOBODY)
    star = request_head(b"*", method=b"OPTIONS")
    assert redirects.target(star) is None
    assert not redirects.answers(star)


def test_a_line_that_backtracks_too_long_is_cut_off_and_answered_500() -> None:
    """A path made to backtrack a line for minutes costs TIME_LIMIT twice (once more
    before it counts) per request (the body limit's question and the answer share
    it), then a 500 and a log line naming the line.
    """
    # Each extra "a" multiplies the ways to try (by about 1.6): far past the limit.
    line = parse_rewrite(r"^/(a|aa)+$ /p/$1 permanent")
    redirects = Rewrites([line], NOBODY)
    request = head(b"/" + b"a" * 60 + b"!")
    with capture_log_events() as events:
        assert redirects.answers(request)
        assert redirects.target(request) == "timed out"
    (logged,) = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.rewrite"]
    assert logged.startswith("Rewrite line ^/(a|aa)+$ took over 0.05s on a path of 62 bytes")


def test_lines_that_ran_out_of_time_once_are_run_again() -> None:
    """A pause of the process (the reactor waiting for the GIL behind busy threads, a
    collection) is not taken for a backtracking line: the redirect is answered.
    """
    redirects = Rewrites([parse_rewrite(r"^/old/(.*)$ /new/$1 permanent")], NOBODY)
    [line] = redirects._compiled
    real = line.regex
    searched: list[bytes] = []

    class StallsOnce:
        def search(self, path: bytes, timeout: float) -> Any:
            searched.append(path)
            if len(searched) == 1:
                raise TimeoutError
            return real.search(path, timeout=timeout)

    line.regex = StallsOnce()
    with capture_log_events() as events:
        assert redirects.target(head(b"/old/x")) == (301, b"/new/x")
    assert searched == [b"/old/x"] * 2
    assert [e for e in events if e.get("log_namespace") == "twistwsgi.rewrite"] == []


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
        (r"^/a b last", "needs a replacement that is a path"),
        (r"^/a b", "needs a replacement that is a path"),
        (r"^/a ''", "needs a replacement that is a path"),
        (r"^/a /b gone", "expected 'REGEX REPLACEMENT [FLAG]'"),
        (r"^/a", "expected 'REGEX REPLACEMENT [FLAG]'"),
        (r"^/a /b permanent extra", "expected 'REGEX REPLACEMENT [FLAG]'"),
        (r"^/(a)$ /b/$2 last", "uses $2, but '^/(a)$' has 1 group(s)"),
        (r"^/a /b?q=$bogus", "unknown variable $bogus"),
        (r"^/(a /b permanent", "'^/(a' is not a regular expression"),
        (r"^/(a)$ /b/$2 permanent", "uses $2, but '^/(a)$' has 1 group(s)"),
        (r"^/a /b/$bogus permanent", "unknown variable $bogus"),
        (r'"^/a /b permanent', "a quote is not closed"),
        (r'"^/a"x /b permanent', "a space must follow a closing quote"),
        # Braces, refused as everywhere (twistwsgi.templates).
        (r"^/a /b/${nope} last", "'/b/${nope}': unknown variable $nope here (known: "),
        (r"^/a /b/${nope} permanent", "'/b/${nope}': unknown variable $nope here (known: "),
        (r"^/(a)$ /b/${2} last", "'/b/${2}' uses $2, but '^/(a)$' has 1 group(s)"),
        # A message names the whole replacement, whichever part (path, query) it
        # is about, and with the "?" that drops the request's query.
        (r"^/a /b?q=$bogus last", "'/b?q=$bogus': unknown variable $bogus"),
        (r"^/a /b/$bogus?q=1 last", "'/b/$bogus?q=1': unknown variable $bogus"),
        (r"^/a /b/$bogus? permanent", "'/b/$bogus?': unknown variable $bogus"),
        (r"^/(a)$ /b?q=$2 last", "'/b?q=$2' uses $2, but '^/(a)$' has 1 group(s)"),
        # As a mount's captures: nginx reads one digit, so these name no group.
        (r"^/(a)$ /b/${10} last", "'/b/${10}': ${10} is no group: nginx numbers captures"),
        (r"^/(a)$ /b/$0 permanent", "'/b/$0': $0 is no group: nginx numbers captures"),
        (r"^/(a)$ /b/${1 last", "a variable opened with ${ is not closed: '/b/${1'"),
    ],
)
def test_lines_that_cannot_be_read_are_refused(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_rewrite(line)
    assert message in str(caught.value)


# -- braces: the same references as everywhere else (twistwsgi.templates) -----------------


def test_braced_references_rewrite_inside_the_server() -> None:
    inside = target([r"^/v(\d)/(?<rest>.*)$ /api/v${1}0/${rest}?h=${host}"], b"/v2/x?q=1")
    assert isinstance(inside, RequestHead)
    assert (inside.decoded_path, inside.query) == (b"/api/v20/x", b"h=shop.example&q=1")


def test_an_unknown_braced_variable_is_one_line_naming_the_line(tmp_path: Path) -> None:
    text = SITE.replace("rewrite = [", "rewrite = [\n    '^/a /b/${nope} last',")
    with pytest.raises(ConfigError) as caught:
        serve(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("site.toml: host[0].rewrite[0]: '/b/${nope}': unknown variable $nope")


def test_a_rule_reads_back_as_written() -> None:
    rule = parse_rewrite(r"^/x$  https://y.example/  ")
    assert rule == RewriteRule("^/x$", "https://y.example/", "redirect")
    assert (rule.status, str(rule)) == (302, "^/x$ https://y.example/ redirect")
    inside = parse_rewrite(r"^/a(.*)$  /b$1")
    assert (inside, inside.status, str(inside)) == (
        RewriteRule("^/a(.*)$", "/b$1", ""),
        None,
        "^/a(.*)$ /b$1",
    )
    assert parse_rewrite(r"^/a /b last").status is None
    assert str(parse_rewrite(r"^/a /b break")) == "^/a /b break"
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
        serve(tmp_path, SITE.replace("redirect'", "elsewhere'"))
    assert str(caught.value).startswith("site.toml: host[0].rewrite[1]: expected")
    with pytest.raises(ConfigError) as caught:
        serve(tmp_path, SITE.replace("rewrite = [", "rewrite = [\n    '^/a b last',"))
    assert str(caught.value).startswith("site.toml: host[0].rewrite[0]: ")
    assert "needs a replacement that is a path" in str(caught.value)
    one = SITE.replace("rewrite = [", "rewrite = '^/a b last'\nxrewrite = [")
    with pytest.raises(ConfigError) as caught:
        serve(
            tmp_path,
            one[: one.index("xrewrite")] + one[one.index("]", one.index("xrewrite")) + 1 :],
        )
    assert str(caught.value).startswith("site.toml: host[0].rewrite: ")


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


# -- rewrites inside the server (last, break, no flag) -----------------------------------


def rewritten(lines: list[str], request_target: bytes) -> tuple[bytes, bytes, bytes]:
    """The new $uri, its encoded path and $args the lines make of the request."""
    found = target(lines, request_target)
    assert isinstance(found, RewrittenRequest), found
    return found.decoded_path, found.path, found.query


@pytest.mark.parametrize(
    ("lines", "request_target", "expected"),
    [
        # last and break at server level: both the location search with the new URI.
        ([r"^/old/(.*)$ /new/$1 last"], b"/old/a/b?x=1", (b"/new/a/b", b"/new/a/b", b"x=1")),
        ([r"^/old/(.*)$ /new/$1 break"], b"/old/a", (b"/new/a", b"/new/a", b"")),
        # No flag: the next lines go on with the new URI; last and break stop them.
        (
            [r"^/a/(.*)$ /b/$1", r"^/b/(.*)$ /c/$1 last", r"^/c/(.*)$ /d/$1 last"],
            b"/a/x",
            (b"/c/x", b"/c/x", b""),
        ),
        (
            [r"^/a/(.*)$ /b/$1 break", r"^/b/(.*)$ /c/$1 last"],
            b"/a/x",
            (b"/b/x", b"/b/x", b""),
        ),
        # The query: kept; the replacement's own before "&" and the request's; none
        # after a final "?".
        ([r"^/u/(.*)$ /show?user=$1 last"], b"/u/bob?x=1", (b"/show", b"/show", b"user=bob&x=1")),
        ([r"^/u/(.*)$ /show?user=$1? last"], b"/u/bob?x=1", (b"/show", b"/show", b"user=bob")),
        ([r"^/old$ /new? last"], b"/old?x=1", (b"/new", b"/new", b"")),
        (
            [r"^/a$ /b?n=1", r"^/b$ /c?m=2 last"],
            b"/a?o=3",
            (b"/c", b"/c", b"m=2&n=1&o=3"),
        ),
        # The legacy front controller: the page from the query, the query dropped.
        (
            [r"^/index\.php$ /pages/$arg_page? last"],
            b"/index.php?page=about",
            (b"/pages/about", b"/pages/about", b""),
        ),
        # A group is the decoded $uri's bytes, in the new $uri as they are (nothing
        # decodes it again): a "?" or "%" stays in the path, encoded in its spelling.
        (
            [r"^/old/(.*)$ /new/$1 last"],
            b"/old/a%3Fb%2520%C3%A9?q",
            (b"/new/a?b%20\xc3\xa9", b"/new/a%3Fb%2520%C3%A9", b"q"),
        ),
        # In the arguments a group is encoded and cannot add one.
        (
            [r"^/s/(.*)$ /find?q=$1 last"],
            b"/s/a%26b%3Dc+d%20e",
            (b"/find", b"/find", b"q=a%26b=c%2Bd%20e"),
        ),
        # Arguments come after the replacement's own "?" only: one a variable brings
        # into the path ($is_args) is a byte of the new $uri, so a group after it
        # adds no argument (nginx's ngx_http_script_start_args_code).
        (
            [r"^/(.*)$ /x$is_args$1 last"],
            b"/a%26admin=1?z=1",
            (b"/x?a&admin=1", b"/x%3Fa&admin=1", b"z=1"),
        ),
        # Named groups; the lines see $uri (decoded, no dot-segments, one slash).
        ([r"^/i/(?<id>\d+)$ /items/${id} last"], b"//i/./42", (b"/items/42", b"/items/42", b"")),
        # A path of the lines' making is taken as the new $uri; the router removes
        # its dot-segments as for any request.
        ([r"^/a(.*)$ /b/.$1 last"], b"/a./x", (b"/b/../x", b"/b/../x", b"")),
        # One that climbs above the root ends the lines: the router's 404.
        ([r"^/x$ /../y", r"^ /z last"], b"/x", (b"/../y", b"/../y", b"")),
    ],
)
def test_a_line_rewrites_inside_as_nginx_would(
    lines: list[str], request_target: bytes, expected: tuple[bytes, bytes, bytes]
) -> None:
    assert rewritten(lines, request_target) == expected


def test_a_redirect_after_a_rewrite_starts_from_the_rewritten_uri() -> None:
    lines = [r"^/a/(.*)$ /b/$1?n=1", r"^/b/(.*)$ /c/$1 permanent"]
    assert target(lines, b"/a/x?o=2") == (301, b"/c/x?n=1&o=2")
    # last stops the lines: the redirect after it is not reached.
    lines = [r"^/a/(.*)$ /b/$1 last", r"^/b/(.*)$ /c/$1 permanent"]
    assert rewritten(lines, b"/a/x") == (b"/b/x", b"/b/x", b"")


def test_a_rewritten_request_keeps_what_the_client_sent() -> None:
    """$request_uri, the request line and REQUEST_URI read the target as sent; the
    id is the same, so the log and an upstream match.
    """
    request = head(b"/old/x?y=1")
    rewrites = Rewrites([parse_rewrite(r"^/old/(.*)$ /new/$1?z=2 last")], NOBODY)
    found = rewrites.rewritten(request)
    assert isinstance(found, RewrittenRequest)
    assert (found.original, found.target, found.request_id) == (
        request,
        b"/old/x?y=1",
        request.request_id,
    )
    template = RequestTemplate("$uri|$request_uri|$args|$is_args|$request_method", escape="none")
    assert template.render(found) == b"/new/x|/old/x?y=1|z=2&y=1|?|GET"
    absolute = rewrites.rewritten(request_head(b"http://a.test/old/x?y=1"))
    assert template.render(absolute) == b"/new/x|/old/x?y=1|z=2&y=1|?|GET"
    # (forward_auth copies fields into the request: still rewritten.)
    copied = found.with_headers([(b"Host", b"b.test")])
    assert isinstance(copied, RewrittenRequest)
    assert (copied.decoded_path, copied.original, copied.headers) == (
        b"/new/x",
        request,
        [(b"Host", b"b.test")],
    )
    # The guard answers none of these: the mounts do.
    assert not rewrites.answers(request)
    assert rewrites.rewritten(head(b"/other")) is not None


def test_lines_run_once_per_request() -> None:
    """The body limit's question and the router's get the same request."""
    rewrites = Rewrites([parse_rewrite(r"^/old/(.*)$ /new/$1 last")], NOBODY)
    request = head(b"/old/x")
    first = rewrites.rewritten(request)
    assert rewrites.rewritten(request) is first
    other = head(b"/plain")
    assert rewrites.rewritten(other) is other


def test_a_rewrite_to_no_path_is_answered_500_and_logged() -> None:
    """A 500, as nginx's for "the rewritten URI has a zero length"."""
    rewrites = Rewrites([parse_rewrite(r"^/x(.*)$ $1 last")], NOBODY)
    with capture_log_events() as events:
        assert rewrites.answers(head(b"/x"))
        assert rewrites.target(head(b"/x")) == "not a path"
        assert isinstance(rewrites.target(head(b"/x/y")), RewrittenRequest)
    logged = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.rewrite"]
    assert len(logged) == 2
    assert logged[0].startswith("Rewrite line ^/x(.*)$ made b'' of /x, not a path")


@given(st.binary(min_size=0, max_size=40), st.binary(max_size=10))
def test_the_rewritten_path_decodes_to_the_new_uri(path: bytes, query: bytes) -> None:
    """Whatever bytes the $uri holds, the encoded path is URI characters that decode
    back to it (what a proxy mount sends, what a static mount checks), and the
    query is the request's.
    """
    from urllib.parse import quote_from_bytes, unquote_to_bytes

    query = quote_from_bytes(query).encode()
    request = head(b"/" + quote_from_bytes(path).encode() + (b"?" + query if query else b""))
    rewrites = Rewrites([parse_rewrite(r"(?s)^/(.*)$ /to/$1 last")], NOBODY)
    found = rewrites.target(request)
    if found is None:
        return  # (a path with dot-segments above the root)
    assert isinstance(found, RewrittenRequest)
    assert found.decoded_path.startswith(b"/to/")
    assert unquote_to_bytes(found.path) == found.decoded_path
    assert all(0x21 <= byte <= 0x7E and byte not in b'"<>\\^`{|}?#' for byte in found.path)
    assert found.query == query


INSIDE = r"""
[[host]]
names = ["shop.example"]
rewrite = [
    '^/old/(.*)$ /app/$1 last',
    '^/up$ /small last',
    '^/small/ok$ /app/ok last',
    '^/v/(.*)$ /r/$1?v=1',
    '^/r/(.*)$ /r/2/$1',
    '^/files-old/(.*)$ /files/$1 break',
    '^/gone/(.*)$ /old/$1',
    '^/old/(.*)$ /moved/$1 permanent',
]
[[host.mount]]
path = "/"
app = "tests.apps:hello"
[[host.mount]]
path = "/app"
app = "tests.apps:environ"
[[host.mount]]
path = "/small"
app = "tests.apps:environ"
max_body = 10
[[host.mount]]
path = "/r"
return = "200 $uri|$request_uri|$args"
[[host.mount]]
path = "/files"
static = "FILES"
"""


def serve_inside(tmp_path: Path, text: str = INSIDE) -> tuple[ServerService, str]:
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "a.txt").write_bytes(b"file a\n")
    return serve(tmp_path, text.replace("FILES", str(tmp_path / "files")))


def get(service: ServerService, target: bytes, extra: bytes = b"") -> Any:
    (response,) = exchange(
        service,
        b"GET " + target + b" HTTP/1.1\r\nHost: shop.example\r\n" + extra + b"\r\n",
        [b"GET"],
    )
    return response


def test_an_application_sees_the_rewritten_path_and_query(tmp_path: Path) -> None:
    """PATH_INFO and SCRIPT_NAME from the new $uri, QUERY_STRING its $args;
    REQUEST_URI (and RAW_URI) as the client sent it, as uWSGI's REQUEST_URI is
    nginx's $request_uri.
    """
    service, _ = serve_inside(tmp_path)
    response = get(service, b"/old/a%3Fb/c?x=1")
    seen = json.loads(response.body)
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"], seen["QUERY_STRING"]) == (
        "/app",
        "/a?b/c",
        "x=1",
    )
    assert seen["REQUEST_URI"] == seen["RAW_URI"] == "/old/a%3Fb/c?x=1"
    # The lines go on, never back (nginx's run once): /gone/z becomes /old/z, which
    # the first line does not see again, and the last redirects from it.
    moved = get(service, b"/gone/z?k=1")
    assert (moved.status, moved.header(b"location")) == (301, b"/moved/z?k=1")


def test_a_return_mount_and_the_log_see_uri_and_request_uri_as_nginx(tmp_path: Path) -> None:
    service, _ = serve_inside(tmp_path)
    logged: list[str] = []
    template = LogFormat("$request|$uri|$request_uri|$args|$status")
    connection = connect(
        service.factory.handler, response_log=lambda done: logged.append(template.format(done, 0.0))
    )
    connection.send(b"GET /v/x?o=2 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    (response,) = parse_responses(connection.take(), [b"GET"])
    # Two lines without a flag: /v/x, /r/x (v=1 before the request's o=2), /r/2/x.
    assert (response.status, response.body) == (200, b"/r/2/x|/v/x?o=2|v=1&o=2")
    assert logged == ["GET /v/x?o=2 HTTP/1.1|/r/2/x|/v/x?o=2|v=1&o=2|200"]


def test_a_static_mount_serves_the_rewritten_path(tmp_path: Path) -> None:
    service, _ = serve_inside(tmp_path)
    assert (get(service, b"/files-old/a.txt").status, get(service, b"/files-old/a.txt").body) == (
        200,
        b"file a\n",
    )
    assert get(service, b"/files-old/b.txt").status == 404
    # A directory's redirect adds its slash to the path the mount served.
    (tmp_path / "files" / "sub").mkdir()
    moved = get(service, b"/files-old/sub?k=1")
    assert (moved.status, moved.header(b"location")) == (301, b"/files/sub/?k=1")


def test_the_body_limit_is_the_rewritten_paths_mount(tmp_path: Path) -> None:
    """The 413 is decided from the head, by the mount the rewritten path goes to:
    /up goes to /small (10 bytes), /small/ok leaves it for /app (the server's).
    """
    service, _ = serve_inside(tmp_path)
    body = b"x" * 100
    head_of = b" HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100\r\n\r\n"
    (refused,) = exchange(service, b"POST /up" + head_of + body, [b"POST"])
    assert refused.status == 413
    (taken,) = exchange(service, b"POST /small/ok" + head_of + body, [b"POST"])
    seen = json.loads(taken.body)
    assert (taken.status, seen["SCRIPT_NAME"], seen["PATH_INFO"], seen["body_length"]) == (
        200,
        "/app",
        "/ok",
        "100",
    )


def test_the_https_redirect_comes_before_the_lines(tmp_path: Path) -> None:
    """The client is sent to https with its own URI; the lines run there."""
    service, _ = serve_inside(
        tmp_path, INSIDE.replace("rewrite = [", "https_redirect = 443\nrewrite = [")
    )
    response = get(service, b"/old/x?y=1")
    assert (response.status, response.header(b"location")) == (
        301,
        b"https://shop.example/old/x?y=1",
    )


def test_check_config_lists_the_lines_with_their_flags(tmp_path: Path) -> None:
    _, described = serve_inside(tmp_path)
    assert "  rewrite ^/old/(.*)$ /app/$1 last" in described
    assert "  rewrite ^/files-old/(.*)$ /files/$1 break" in described
    assert "  rewrite ^/gone/(.*)$ /old/$1\n" in described
    assert "  rewrite ^/old/(.*)$ /moved/$1 permanent" in described


def proxy_behind_rewrite(upstream: str, line: str) -> Any:
    """A proxy mount at /api whose host rewrites requests with ``line`` first."""
    setup = make_proxy((upstream,), mount="/api")
    rewrites = Rewrites([parse_rewrite(line)], NOBODY)
    mounts: MountTable[Handler] = MountTable(
        [Mount(b"/api", setup.handler)], rewrites, rewrite=rewrites.rewritten
    )
    setup.router = Router(RoutingTable(HostTable([], mounts), guarded=True))
    return setup


@pytest.mark.parametrize(
    ("upstream", "sent"),
    [
        # Without a path the rewritten URI goes as it is, encoded again.
        ("http://10.0.0.1:9000", b"/api/a%3Fb%20c?from=old&q=1"),
        # With one, it is mapped as any other: the mount's prefix replaced.
        ("http://10.0.0.1:9000/v2", b"/v2/a%3Fb%20c?from=old&q=1"),
    ],
)
def test_a_proxy_mount_forwards_the_rewritten_uri(upstream: str, sent: bytes) -> None:
    setup = proxy_behind_rewrite(upstream, r"^/old/(.*)$ /api/$1?from=old last")
    client = setup.client()
    client.send(b"GET /old/a%3fb%20c?q=1 HTTP/1.1\r\nHost: example.org\r\n\r\n")
    request, _ = setup.endpoint().last.request()
    assert request.target == sent


def test_the_protocols_questions_see_the_rewritten_path() -> None:
    """The body limit (413 from the head) and the log of a refused request are the
    mount's the rewritten path goes to, not the one the client's path names.
    """
    refused: list[Any] = []
    rewrites = Rewrites([parse_rewrite(r"^/up$ /small last")], NOBODY)
    target: Any = object()
    mounts: MountTable[Any] = MountTable(
        [
            Mount(b"/small", target, max_body=10, refusal_log=refused.append),
            Mount(b"", target, max_body=1000),
        ],
        rewrites,
        rewrite=rewrites.rewritten,
    )
    router = Router(RoutingTable(HostTable([], mounts), body_limits=True, guarded=True))
    request = request_head(b"/up", content_length=100)
    assert router.body_limit(request) == 10
    assert router.access_log_for(request) == refused.append
    plain = request_head(b"/other", content_length=100)
    assert router.body_limit(plain) == 1000
    assert router.access_log_for(plain) is None


@pytest.mark.parametrize(
    ("line", "request_target", "expected"),
    [
        # $uri holds a decoded "#": in the new query it is encoded, or an upstream
        # would read the rest of the request line as a fragment (RFC 9112 3.2).
        (r"^/q/(.*)$ /app?to=$uri last", b"/q/a%23b?z=1", b"to=/q/a%23b&z=1"),
        (r"^/q/(.*)$ /app?to=$uri$1 last", b"/q/%23", b"to=/q/%23%23"),
        (r"^/q/(.*)$ /app?h=$http_x_tag last", b"/q/x", b"h=a%23b"),
    ],
)
def test_a_rewritten_query_holds_no_fragment(
    line: str, request_target: bytes, expected: bytes
) -> None:
    request = request_head(request_target, headers=[(b"Host", b"shop.example"), (b"X-Tag", b"a#b")])
    found = Rewrites([parse_rewrite(line)], NOBODY).target(request)
    assert isinstance(found, RewrittenRequest)
    assert found.query == expected


def test_a_proxy_mount_gets_a_request_line_without_a_fragment() -> None:
    setup = proxy_behind_rewrite("http://10.0.0.1:9000", r"^/old/(.*)$ /api/x?from=$uri last")
    client = setup.client()
    client.send(b"GET /old/a%23b HTTP/1.1\r\nHost: example.org\r\n\r\n")
    request, _ = setup.endpoint().last.request()
    assert request.target == b"/api/x?from=/old/a%23b"


def test_a_rewrite_to_a_path_without_its_slash_is_answered_500() -> None:
    """Not only an empty URI: "y" would be a path no mount could hold."""
    rewrites = Rewrites([parse_rewrite(r"^/x(.*)$ $1 last")], NOBODY)
    with capture_log_events():
        assert rewrites.target(head(b"/xy")) == "not a path"


def test_the_next_lines_see_the_rewritten_uri_normalised() -> None:
    """After a line without a flag the next ones search the new $uri as they search
    the client's: dot-segments resolved, runs of slashes made one.
    """
    lines = [r"^/a/(.*)$ /b/../c//$1", r"^/c/(.*)$ /d/$1 last"]
    assert rewritten(lines, b"/a/x") == (b"/d/x", b"/d/x", b"")


def test_a_rewrite_does_not_open_an_internal_mount(tmp_path: Path) -> None:
    """An ``internal`` static mount is for X-Accel-Redirect alone: a line that
    rewrites to it gets the 404 a direct request gets (nginx would serve it, a
    rewrite making the request internal there).
    """
    text = INSIDE.replace("'^/old/(.*)$ /app/$1 last',", "'^/p/(.*)$ /files/$1 last',", 1)
    service, _ = serve_inside(tmp_path, text + "internal = true\n")
    assert get(service, b"/p/a.txt").status == 404
    assert get(service, b"/files/a.txt").status == 404
