"""Nginx's location modifiers for mounts: ``= /exact``, ``^~ /prefix``, ``~`` and ``~*``.

First the lookup order alone (:class:`~twistwsgi.routing.MountTable`, plain pytest and
hypothesis), then the configuration's errors, then whole sites built from a
``site.toml`` and driven through the real protocol on a ``StringTransport``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from tests import test_host_access_logs as access_logs
from tests.test_proxy import FakeEndpoint
from twistwsgi import site as site_module
from twistwsgi.cli import load_config
from twistwsgi.config import ConfigError, MountConfig, ServerConfig, default_options
from twistwsgi.forwarding import UpstreamAddress
from twistwsgi.http.rules import compile_location_pattern
from twistwsgi.http.settings import HttpSettings
from twistwsgi.metrics import RequestMetrics
from twistwsgi.proxy import build_proxy
from twistwsgi.routing import (
    LOCATION_PATTERN_TIME_LIMIT,
    LocationTimeoutError,
    Mount,
    MountTable,
    Router,
    match_prefix,
    merge_slashes,
)
from twistwsgi.site import SiteBuilder, _accel_resolver, describe_routing
from twistwsgi.static import StaticHandler, StaticOptions
from twistwsgi.testing import (
    SynchronousReactorThreads,
    SynchronousThreadPool,
    capture_log_events,
    connect,
    parse_responses,
)

# -- the lookup order ---------------------------------------------------------------------


def regex(pattern: str, target: str, *, caseless: bool = False) -> Mount[str]:
    """A regular-expression mount, as the site builds one."""
    label = ("~* " if caseless else "~ ") + pattern
    compiled = compile_location_pattern(pattern, caseless=caseless)
    return Mount(b"", target, match="~", pattern=compiled, label=label.encode())


def exact(path: bytes, target: str) -> Mount[str]:
    """An exact mount (``= path``) whose route prefix is its path, as an application's."""
    prefix = path.rstrip(b"/")
    return Mount(prefix, target, match="=", pattern=path, label=b"= " + path)


def target(table: MountTable[str], path: bytes) -> str | None:
    found = table.lookup(path)
    return None if found is None else found.target


def nginx_table() -> MountTable[str]:
    """The cases of nginx's documentation for ``location``, and a few more."""
    return MountTable(
        [
            exact(b"/", "exact root"),
            Mount(b"", "root"),
            Mount(b"/documents", "documents"),
            Mount(b"/images", "images", match="^~"),
            regex(r"\.(gif|jpg|jpeg)$", "pictures", caseless=True),
            Mount(b"/api/v1/longer", "longer prefix"),
            regex(r"^/api/v[0-9]+/", "api"),
            regex(r"^/api/", "api, second"),
            exact(b"/api/v1/x", "exact api"),
        ]
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/", "exact root"),  # = / before the / prefix
        (b"/index.html", "root"),
        (b"/documents/document.html", "documents"),
        (b"/images/1.gif", "images"),  # ^~: the regular expressions are not tried
        (b"/documents/1.jpg", "pictures"),  # a regular expression beats a longer prefix
        (b"/documents/1.JPG", "pictures"),  # ~* ignores case
        (b"/api/v1/longer/x", "api"),  # the longest plain prefix loses to a pattern
        (b"/api/v2/", "api"),  # the first pattern that matches, in the order written
        (b"/api/other", "api, second"),
        (b"/api/v1/x", "exact api"),  # exact beats everything
        (b"/api/v1/x/", "api"),  # ... that path alone
        (b"//api//v1/x", "exact api"),  # slashes merged, as for prefixes
        (b"//documents//1.jpg", "pictures"),
        (b"/\xff\xfe.jpg", "pictures"),  # not UTF-8: matched as bytes, no crash
        (b"/caf\xc3\xa9", "root"),
    ],
)
def test_mounts_are_looked_up_in_nginxs_location_order(path: bytes, expected: str) -> None:
    assert target(nginx_table(), path) == expected


def test_a_caseful_pattern_keeps_its_case() -> None:
    table = MountTable([Mount(b"", "root"), regex(r"\.png$", "png")])
    assert target(table, b"/a.png") == "png"
    assert target(table, b"/a.PNG") == "root"


def test_non_ascii_characters_in_a_pattern_match_their_utf8_bytes() -> None:
    """The decoded path holds UTF-8 bytes, and the pattern is compiled to match them."""
    table = MountTable([regex("^/café$", "café"), regex(r"^/(?<word>\w+)$", "ascii word")])
    assert target(table, "/café".encode()) == "café"
    assert target(table, "/cafés".encode()) is None  # \w is an ASCII letter here
    assert target(table, b"/cafe") == "ascii word"


def test_without_a_prefix_a_path_no_pattern_matches_is_missed() -> None:
    table = MountTable([regex(r"\.php$", "php"), exact(b"/x", "x")])
    assert target(table, b"/index.php") == "php"
    assert target(table, b"/index.html") is None


def test_a_longest_prefix_without_caret_tilde_lets_the_patterns_speak() -> None:
    """Only the longest prefix's ^~ counts (nginx remembers that one location)."""
    table = MountTable(
        [Mount(b"/a", "a", match="^~"), Mount(b"/a/b", "a/b"), regex(r"\.css$", "css")]
    )
    assert target(table, b"/a/x.css") == "a"
    assert target(table, b"/a/b/x.css") == "css"


def test_a_table_of_prefixes_alone_keeps_the_prefix_lookup() -> None:
    """No per-request cost for what it does not have: the plain method is kept."""
    plain = MountTable([Mount(b"", "root"), Mount(b"/a", "a", match="^~")])
    assert plain.lookup.__func__ is MountTable.lookup  # type: ignore[attr-defined]
    searching = MountTable([Mount(b"", "root"), exact(b"/a", "a")])
    assert searching.lookup.__func__ is not MountTable.lookup  # type: ignore[attr-defined]


def old_lookup(mounts: list[tuple[bytes, str]], path: bytes) -> str | None:
    """The longest-prefix rule as it was before the location forms."""
    merged = merge_slashes(path)
    for prefix, name in sorted(mounts, key=lambda item: len(item[0]), reverse=True):
        if match_prefix(merged, prefix):
            return name
    return None


segment = st.sampled_from([b"a", b"b", b"ab", b"c.css", b"\xff", b""])
paths = st.lists(segment, min_size=1, max_size=5).map(lambda parts: b"/" + b"/".join(parts))
prefixes = st.lists(
    st.lists(st.sampled_from([b"a", b"b", b"ab"]), max_size=3).map(
        lambda parts: b"".join(b"/" + part for part in parts)
    ),
    max_size=5,
    unique=True,
)


@given(prefixes, st.lists(st.booleans(), min_size=5, max_size=5), paths)
def test_without_exact_or_pattern_mounts_the_lookup_is_the_longest_prefix(
    chosen: list[bytes], stops: list[bool], path: bytes
) -> None:
    """^~ changes nothing in a table without regular expressions, and an exact path
    that is not the request's changes nothing either.
    """
    mounts = [(prefix, f"m{index}") for index, prefix in enumerate(chosen)]
    table = MountTable(
        Mount(prefix, name, match="^~" if stop else "")
        for (prefix, name), stop in zip(mounts, stops, strict=False)
    )
    assert target(table, path) == old_lookup(mounts, path)
    other = merge_slashes(path) + b"/elsewhere"
    with_exact = MountTable([*(Mount(p, n) for p, n in mounts), exact(other, "exact")])
    assert target(with_exact, path) == old_lookup(mounts, path)


@given(prefixes, paths)
def test_a_pattern_wins_unless_the_longest_prefix_is_caret_tilde(
    chosen: list[bytes], path: bytes
) -> None:
    mounts = [Mount(prefix, f"m{index}") for index, prefix in enumerate(chosen)]
    longest = old_lookup([(m.prefix, m.target) for m in mounts], path)
    everything = MountTable([*mounts, regex("", "pattern")])  # (found in every path)
    assert target(everything, path) == "pattern"
    stopping = MountTable(
        [*(Mount(m.prefix, m.target, match="^~") for m in mounts), regex("", "pattern")]
    )
    assert target(stopping, path) == (longest or "pattern")


def test_two_mounts_at_one_place_are_refused_but_exact_beside_prefix_is_not() -> None:
    MountTable([Mount(b"/x", "prefix"), exact(b"/x", "exact")])
    with pytest.raises(ValueError, match="two mounts at '= /x'"):
        MountTable([exact(b"/x", "one"), exact(b"/x", "two")])
    with pytest.raises(ValueError, match=r"two mounts at '~ \\\\\.css\$'"):
        MountTable([regex(r"\.css$", "one"), regex(r"\.css$", "two")])
    # The same pattern without case is another mount, as in nginx.
    MountTable([regex(r"\.css$", "one"), regex(r"\.css$", "two", caseless=True)])


class Stuck:
    """A compiled pattern whose every search runs out of time."""

    pattern = b"(a|aa)+$"
    flags = 0

    def __init__(self) -> None:
        self.searched: list[bytes] = []

    def search(self, path: bytes, timeout: float) -> Any:
        self.searched.append(path)
        raise TimeoutError


def test_a_pattern_that_times_out_fails_the_lookup_and_is_named() -> None:
    """No prefix answers for it, and no pattern after it is tried."""
    stuck = Stuck()
    later = regex("", "later")
    said: list[tuple[str, bytes]] = []
    table = MountTable(
        [
            Mount(b"/a", "prefix"),
            Mount(b"", "stuck", match="~", pattern=stuck, label=b"~ (a|aa)+$"),
            later,
        ],
        timed_out=lambda label, path: said.append((label, path)),
    )
    with pytest.raises(LocationTimeoutError) as raised:
        table.lookup(b"/a/aaaa")
    assert raised.value.pattern == "~ (a|aa)+$"
    assert said == [("~ (a|aa)+$", b"/a/aaaa")]
    assert stuck.searched == [b"/a/aaaa"] * 2  # (once more before it counts)
    # The next lookup of that path (the router's, after the body limit's) is told
    # without a search; the one after searches again.
    with pytest.raises(LocationTimeoutError):
        table.lookup(b"/a/aaaa")
    assert stuck.searched == [b"/a/aaaa"] * 2 and len(said) == 1
    with pytest.raises(LocationTimeoutError):
        table.lookup(b"/a/aaaa")
    assert stuck.searched == [b"/a/aaaa"] * 4


class StallsOnce:
    """A compiled pattern whose first search runs out of time (the process paused:
    the reactor waited for the GIL, a collection ran), found on the second.
    """

    pattern = b"^/api/"
    flags = 0

    def __init__(self) -> None:
        self.searched = 0

    def search(self, path: bytes, timeout: float) -> Any:
        self.searched += 1
        if self.searched == 1:
            raise TimeoutError
        return object()


def test_a_lookup_that_ran_out_of_time_once_is_made_again_and_routed() -> None:
    """A pause of the process is not taken for a backtracking pattern: no 500, no log."""
    stalls = StallsOnce()
    said: list[str] = []
    table = MountTable(
        [Mount(b"", "root"), Mount(b"", "api", match="~", pattern=stalls, label=b"~ ^/api/")],
        timed_out=lambda label, path: said.append(label),
    )
    assert target(table, b"/api/x") == "api"
    assert stalls.searched == 2 and said == []
    assert target(table, b"/api/x") == "api"  # (the router's lookup: remembered)
    assert stalls.searched == 2


def test_the_patterns_of_a_host_share_one_time_limit_per_lookup() -> None:
    """A pattern that used the time up leaves none to those after it."""
    now = [100.0]
    tried: list[str] = []

    class Slow:
        pattern = b"slow"
        flags = 0

        def search(self, path: bytes, timeout: float) -> Any:
            assert timeout == pytest.approx(LOCATION_PATTERN_TIME_LIMIT)
            tried.append("slow")
            now[0] += LOCATION_PATTERN_TIME_LIMIT  # it took all of it, and found nothing
            return None

    said: list[str] = []
    table = MountTable(
        [Mount(b"", "root"), Mount(b"", "slow", match="~", pattern=Slow()), regex("", "next")],
        timed_out=lambda label, path: said.append(label),
        clock=lambda: now[0],
    )
    with pytest.raises(LocationTimeoutError):
        table.lookup(b"/x")
    # The one that took the time, named once, after the second search.
    assert tried == ["slow", "slow"] and said == ["~ slow"]


def test_a_pattern_that_backtracks_is_stopped() -> None:
    said: list[str] = []
    table = MountTable(
        [Mount(b"", "root"), regex("^/(a|aa)+$", "bad")],
        timed_out=lambda label, path: said.append(label),
    )
    with pytest.raises(LocationTimeoutError):
        table.lookup(b"/" + b"a" * 80 + b"b")
    assert said == ["~ ^/(a|aa)+$"]


# -- the configuration --------------------------------------------------------------------


def write_site(tmp_path: Path, text: str) -> str:
    for name in ("site", "media"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = tmp_path / "site.toml"
    path.write_text(text.replace("DIR", str(tmp_path)))
    return str(path)


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config({"config": write_site(tmp_path, text)})
    message = str(raised.value)
    assert "\n" not in message
    return message


HOST = '[[host]]\nnames = ["a.test"]\n[[host.mount]]\npath = "/"\nreturn = "200 root"\n'


@pytest.mark.parametrize(
    ("path", "match", "written"),
    [
        ("'= /favicon.ico'", "=", "/favicon.ico"),
        ("'=/favicon.ico'", "=", "/favicon.ico"),
        ("'= /docs/'", "=", "/docs/"),  # the trailing slash is the path's
        ("'= /'", "=", "/"),
        ("'^~ /media/'", "^~", "/media"),
        ("'~ ^/api/v[0-9]+/'", "~", "^/api/v[0-9]+/"),
        ("'~*\\.(css|js)$'", "~*", "\\.(css|js)$"),  # no space, as nginx allows
        ("'~*   \\.png$  '", "~*", "\\.png$"),
        ("'/plain/'", "", "/plain"),
    ],
)
def test_the_location_forms_are_read(tmp_path: Path, path: str, match: str, written: str) -> None:
    text = HOST + f"[[host.mount]]\npath = {path}\nreturn = '200 x'\n"
    mount = load_config({"config": write_site(tmp_path, text)}).hosts[0].mounts[1]
    assert (mount.match, mount.path) == (match, written)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("'~ ('", "host[0].mount[1].path: not a regular expression (missing )"),
        ("'~*'", "host[0].mount[1].path: '~*': a regular expression follows ~*"),
        ("'~ '", "host[0].mount[1].path: '~': a regular expression follows ~"),
        ("'^~/media'", "host[0].mount[1].path: '^~/media': ^~ is followed by a space"),
        ("'= media'", "host[0].mount[1].path: an exact mount path (= /path) starts with /"),
        ("'= /a/../b'", "host[0].mount[1].path: a mount path has no empty, . or .. segments"),
        ("'@app'", "host[0].mount[1].path: a mount path starts with /"),
        # nginx reads the first of two words as the modifier: ~~, =~ and ~*x are none.
        ("'~~ x'", "host[0].mount[1].path: '~~ x': '~~' is not a modifier (=, ^~, ~ or ~*)"),
        ("'=~ /x'", "host[0].mount[1].path: '=~ /x': '=~' is not a modifier"),
        ("'~*x y'", "host[0].mount[1].path: '~*x y': '~*x' is not a modifier"),
    ],
)
def test_a_path_that_cannot_be_read_is_one_line_naming_it(
    tmp_path: Path, path: str, problem: str
) -> None:
    text = HOST + f"[[host.mount]]\npath = {path}\nreturn = '200 x'\n"
    message = config_error(tmp_path, text)
    assert f"site.toml: {problem}" in message


@pytest.mark.parametrize(
    ("mounts", "problem"),
    [
        (
            "path = '~ \\.css$'\nreturn = '200 a'\n[[host.mount]]\npath = '~ \\.css$'\n"
            "return = '200 b'\n",
            "host[0].mount[2]: path '~ \\\\.css$' is already mounted by",
        ),
        (
            "path = '^~ /x'\nreturn = '200 a'\n[[host.mount]]\npath = '/x'\nreturn = '200 b'\n",
            "host[0].mount[2]: path '/x' is already mounted by",
        ),
        (
            "path = '= /x'\nreturn = '200 a'\n[[host.mount]]\npath = '= /x'\nreturn = '200 b'\n",
            "host[0].mount[2]: path '= /x' is already mounted by",
        ),
        (
            "path = '~ ^/api/'\nproxy = 'http://127.0.0.1:9000/v1'\n",
            "host[0].mount[1].proxy: 'http://127.0.0.1:9000/v1': a regular-expression mount"
            " forwards the whole path, so its upstream URLs have no path",
        ),
        (
            "path = '~* \\.png$'\nstatic = 'DIR/site'\nfallthrough = true\n",
            "host[0].mount[1].fallthrough: a ~* mount passes its misses only to a mount at"
            " the same path",
        ),
    ],
)
def test_mounts_that_cannot_work_together_are_refused(
    tmp_path: Path, mounts: str, problem: str
) -> None:
    assert problem in config_error(tmp_path, HOST + "[[host.mount]]\n" + mounts)


def test_exact_beside_a_prefix_at_the_same_path_is_taken(tmp_path: Path) -> None:
    text = (
        HOST + "[[host.mount]]\npath = '= /x'\nreturn = '200 a'\n"
        "[[host.mount]]\npath = '/x'\nreturn = '200 b'\n"
    )
    assert len(load_config({"config": write_site(tmp_path, text)}).hosts[0].mounts) == 3


def test_without_the_regex_package_a_pattern_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "regex", None)  # (import regex: ImportError)
    message = config_error(tmp_path, HOST + "[[host.mount]]\npath = '~ x'\nreturn = '200 x'\n")
    assert "host[0].mount[1].path: regular-expression mount paths (~, ~*) need the regex" in (
        message
    )
    assert "pip install 'twistwsgi[regex]'" in message


@pytest.mark.parametrize("flag", ["static", "proxy", "return"])
@pytest.mark.parametrize("path", ["= /x", "=/x", "~ \\.png$", "~*x", "^~ /x"])
def test_the_command_line_takes_plain_prefixes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "files").mkdir()
    target = {"static": "./files", "proxy": "http://127.0.0.1:9000", "return": "200 x"}[flag]
    with pytest.raises(ConfigError) as raised:
        load_config({flag: [f"{path}={target}"]})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"--{flag} {f'{path}={target}'!r}: ")
    assert "are for the configuration file's [[host.mount]] path" in message


def test_check_config_lists_mounts_in_lookup_order_as_written(tmp_path: Path) -> None:
    text = (
        HOST + "[[host.mount]]\npath = '~ ^/b'\nreturn = '200 b'\n"
        "[[host.mount]]\npath = '~* ^/a'\nreturn = '200 a'\n"
        "[[host.mount]]\npath = '^~ /media'\nreturn = '200 m'\n"
        "[[host.mount]]\npath = '= /favicon.ico'\nreturn = '204'\n"
    )
    listing = describe_routing(load_config({"config": write_site(tmp_path, text)}))
    paths = [line.split()[0:2] for line in listing.splitlines() if line.startswith("  ")]
    assert paths == [
        ["=", "/favicon.ico"],
        ["^~", "/media"],
        ["/", "return"],
        ["~", "^/b"],
        ["~*", "^/a"],
    ]


# -- whole sites through the protocol -------------------------------------------------------

SITE = """\
[[host]]
names = ["a.test"]
[[host.mount]]
path = "/"
return = "200 root"
[[host.mount]]
path = "= /exact"
app = "tests.apps:environ"
[[host.mount]]
path = "= /favicon.ico"
static = "DIR/site"
[[host.mount]]
path = "^~ /media"
static = "DIR/media"
[[host.mount]]
path = '~* \\.(css|png)$'
static = "DIR/site"
headers = { X-Kind = "pictures" }
[[host.mount]]
path = '~ ^/api/v[0-9]+/'
app = "tests.apps:environ"
max_body = 10
[[host.mount]]
path = "/api/vX/longer"
return = "200 longer prefix"
[[host.mount]]
path = '~ ^/gone/'
return = "410"
"""


def build(
    tmp_path: Path, text: str, builders: dict[str, Any] | None = None
) -> tuple[Router, SiteBuilder]:
    config = load_config({"config": write_site(tmp_path, text)})
    (tmp_path / "site" / "img").mkdir(exist_ok=True)
    (tmp_path / "site" / "img" / "a.png").write_bytes(b"site png")
    (tmp_path / "site" / "img" / "b.PNG").write_bytes(b"site PNG")
    (tmp_path / "site" / "favicon.ico").write_bytes(b"icon")
    (tmp_path / "media" / "a.png").write_bytes(b"media png")
    reactor = SynchronousReactorThreads()
    reactor.advance(time.time())
    builder = SiteBuilder(reactor=reactor, threadpool=SynchronousThreadPool(), builders=builders)
    return Router(builder.build(config)), builder


def get(router: Router, target: bytes, method: bytes = b"GET", body: bytes = b"") -> Any:
    client = connect(router)
    client.factory.body_limit = router.body_limit  # (as the service wires it)
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    client.send(method + b" " + target + b" HTTP/1.1\r\nHost: a.test\r\n" + length + b"\r\n" + body)
    [response] = parse_responses(client.take(), [method])
    return response


def environ_of(response: Any) -> tuple[str, str]:
    assert response.status == 200, response.body
    seen = json.loads(response.body)
    return seen["SCRIPT_NAME"], seen["PATH_INFO"]


def test_an_exact_application_mount_takes_its_path_as_script_name(tmp_path: Path) -> None:
    router, _ = build(tmp_path, SITE)
    assert environ_of(get(router, b"/exact")) == ("/exact", "")
    assert environ_of(get(router, b"//exact")) == ("/exact", "")
    assert get(router, b"/exact/").body == b"root"  # that path alone


def test_a_regular_expression_application_mount_gets_the_whole_path(tmp_path: Path) -> None:
    router, _ = build(tmp_path, SITE)
    assert environ_of(get(router, b"/api/v2/users")) == ("", "/api/v2/users")
    # A longer plain prefix loses to the pattern, and the doubled slashes stay the app's.
    assert environ_of(get(router, b"/api/v1/longer/x")) == ("", "/api/v1/longer/x")
    assert environ_of(get(router, b"/api/v1//x")) == ("", "/api/v1//x")
    assert get(router, b"/api/vX/longer/x").body == b"longer prefix"  # no pattern matches
    assert get(router, b"/api/v1").body == b"root"


def test_static_mounts_of_each_form_serve_the_file_they_name(tmp_path: Path) -> None:
    router, _ = build(tmp_path, SITE)
    pictured = get(router, b"/img/a.png")
    assert (pictured.status, pictured.body) == (200, b"site png")  # whole path, as root
    assert pictured.header(b"x-kind") == b"pictures"
    assert get(router, b"//img//a.png").body == b"site png"
    assert get(router, b"/img/b.PNG").body == b"site PNG"  # ~*: without case
    assert get(router, b"/img/a.PNG").status == 404  # found by ~*; no such file
    assert get(router, b"/media/a.png").body == b"media png"  # ^~ before the pattern
    assert get(router, b"/favicon.ico").body == b"icon"  # exact: under its directory
    assert get(router, b"/x%FF.png").status == 404  # not UTF-8: matched, and missed


def test_a_return_mount_reached_by_a_pattern_answers(tmp_path: Path) -> None:
    router, _ = build(tmp_path, SITE)
    assert get(router, b"/gone/x").status == 410
    assert get(router, b"/gone").body == b"root"


def test_the_body_limit_of_a_pattern_mount_is_decided_from_the_head(tmp_path: Path) -> None:
    router, _ = build(tmp_path, SITE)
    refused = get(router, b"/api/v3/upload", b"POST", b"x" * 11)
    assert refused.status == 413
    assert environ_of(get(router, b"/api/v3/upload", b"POST", b"x" * 10)) == (
        "",
        "/api/v3/upload",
    )
    assert get(router, b"/exact", b"POST", b"x" * 11).status == 200  # the server's limit


def proxy_router(tmp_path: Path, text: str) -> tuple[Any, dict[str, FakeEndpoint]]:
    """The router of the site ``text``, its proxy mounts' upstreams in memory (by URL)."""
    endpoints: dict[str, FakeEndpoint] = {}

    def factory(address: UpstreamAddress) -> FakeEndpoint:
        endpoints[address.url] = FakeEndpoint(address)
        return endpoints[address.url]

    def builder(mount: MountConfig, config: ServerConfig) -> Any:
        return build_proxy(mount, config, reactor=Clock(), endpoint_factory=factory)

    router, _ = build(tmp_path, text, {"proxy": builder})
    return router, endpoints


def test_a_regular_expression_proxy_mount_forwards_the_whole_path(tmp_path: Path) -> None:
    text = (
        HOST + "[[host.mount]]\npath = '~ ^/api/v[0-9]+/'\nproxy = 'http://10.0.0.1:9000'\n"
        "[[host.mount]]\npath = '= /p'\nproxy = 'http://10.0.0.2:9000/q'\n"
    )
    router, endpoints = proxy_router(tmp_path, text)
    connect(router).send(b"GET /api/v2/a%2Fb?x=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    request, _ = endpoints["http://10.0.0.1:9000"].last.request()
    assert request.target == b"/api/v2/a%2Fb?x=1"
    connect(router).send(b"GET /p?y HTTP/1.1\r\nHost: a.test\r\n\r\n")
    request, _ = endpoints["http://10.0.0.2:9000/q"].last.request()
    assert request.target == b"/q?y"  # an exact mount's path is replaced, as a prefix's
    proxied = router.table.proxied
    assert [(host, label) for host, label, _handler in proxied] == [
        ("a.test", b"~ ^/api/v[0-9]+/"),
        ("a.test", b"= /p"),
    ]


def test_metrics_label_a_pattern_mount_by_its_path_as_written(tmp_path: Path) -> None:
    router, _ = build(tmp_path, SITE)
    metrics = RequestMetrics(lambda: 0.0)
    client = connect(router, response_log=metrics)
    client.send(b"GET /api/v2/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
    client.send(b"GET /other HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert set(metrics.mounts) == {("a.test", "~ ^/api/v[0-9]+/"), ("a.test", "/")}


FALLING = """\
[[host]]
names = ["a.test"]
[[host.mount]]
path = '~* \\.(png|css)$'
static = "DIR/site"
fallthrough = true
[[host.mount]]
path = '~* \\.(png|css)$'
app = "tests.apps:environ"
max_body = 10
[[host.mount]]
path = '= /robots.txt'
static = "DIR/site"
fallthrough = true
[[host.mount]]
path = '~ \\.txt$'
return = "200 text pattern"
[[host.mount]]
path = '= /humans.txt'
static = "DIR/site"
fallthrough = true
[[host.mount]]
path = '= /humans.txt'
app = "tests.apps:environ"
[[host.mount]]
path = "/"
app = "tests.apps:environ"
"""


def test_a_pattern_static_mount_passes_its_misses_to_its_partner(tmp_path: Path) -> None:
    router, _ = build(tmp_path, FALLING)
    assert get(router, b"/img/a.png").body == b"site png"
    assert environ_of(get(router, b"/img/missing.png")) == ("", "/img/missing.png")
    # A body is for the partner, under its limit, decided from the head.
    assert get(router, b"/img/a.png", b"POST", b"x" * 11).status == 413
    assert environ_of(get(router, b"/img/a.png", b"POST", b"x" * 10)) == ("", "/img/a.png")


def test_an_exact_static_mount_passes_its_misses_on(tmp_path: Path) -> None:
    """To its partner at the same path, else where the path goes without it."""
    router, _ = build(tmp_path, FALLING)
    assert get(router, b"/robots.txt").body == b"text pattern"  # (no robots.txt file)
    (tmp_path / "site" / "robots.txt").write_bytes(b"robots")
    assert get(router, b"/robots.txt").body == b"robots"
    assert environ_of(get(router, b"/humans.txt")) == ("/humans.txt", "")


def test_x_accel_redirect_finds_static_mounts_in_the_lookup_order(tmp_path: Path) -> None:
    options = {**default_options("static"), "internal": True}

    def static(root: Path) -> StaticHandler:
        root.mkdir(exist_ok=True)
        return StaticHandler(StaticOptions.from_mount(str(root), options), now=lambda: 0.0)

    pdfs, files, media = (
        static(tmp_path / "pdfs"),
        static(tmp_path / "files"),
        static(tmp_path / "m"),
    )
    resolve = _accel_resolver(
        [
            (MountConfig("/files", "static", "f", options, "t"), files),
            (MountConfig("\\.pdf$", "static", "p", options, "t", match="~"), pdfs),
            (MountConfig("/files/media", "static", "m", options, "t", match="^~"), media),
        ]
    )
    assert resolve(b"x-accel-redirect", b"/files/a.txt") == (files, b"/a.txt")
    assert resolve(b"x-accel-redirect", b"/files/a.pdf") == (pdfs, b"/files/a.pdf")
    assert resolve(b"x-accel-redirect", b"/files/media/a.pdf") == (media, b"/a.pdf")
    assert resolve(b"x-accel-redirect", b"/elsewhere/b.pdf") == (pdfs, b"/elsewhere/b.pdf")
    assert resolve(b"x-accel-redirect", b"/elsewhere/b.txt") is None


def test_https_redirect_exemptions_follow_the_lookup_order(tmp_path: Path) -> None:
    text = (
        '[[host]]\nnames = ["a.test"]\nhttps_redirect = 443\n'
        "[[host.mount]]\npath = '/'\nreturn = '200 root'\n"
        "[[host.mount]]\npath = '~ ^/\\.well-known/acme-challenge/'\nreturn = '200 acme'\n"
        "https_redirect = false\n"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/.well-known/acme-challenge/t").body == b"acme"
    assert get(router, b"/x").status == 301


def test_a_mounts_access_rules_apply_through_a_pattern(tmp_path: Path) -> None:
    text = (
        HOST + "[[host.mount]]\npath = '~ ^/admin'\nreturn = '200 admin'\nallow = ['10.0.0.0/8']\n"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/admin/x").status == 403
    assert get(router, b"/x").body == b"root"


def test_a_pattern_that_backtracks_is_stopped_and_named_in_the_log(tmp_path: Path) -> None:
    text = HOST + "[[host.mount]]\npath = '~ ^/(a|aa)+$'\nreturn = '200 bad'\n"
    router, _ = build(tmp_path, text)
    with capture_log_events() as events:
        response = get(router, b"/" + b"a" * 60 + b"b")
    assert response.status == 500
    assert [formatEvent(event) for event in events] == [
        "Mount path ~ ^/(a|aa)+$ took over 0.01s on the path b'/" + "a" * 60 + "b' (62 bytes):"
        " the request is answered 500 Internal Server Error"
    ]


def test_a_reload_swaps_the_patterns(tmp_path: Path) -> None:
    router, builder = build(tmp_path, SITE)
    assert environ_of(get(router, b"/api/v2/x")) == ("", "/api/v2/x")
    changed = SITE.replace("~ ^/api/v[0-9]+/", "~ ^/api/v[3-9]/")
    router.replace(builder.build(load_config({"config": write_site(tmp_path, changed)})))
    assert get(router, b"/api/v2/x").body == b"root"
    assert environ_of(get(router, b"/api/v3/x")) == ("", "/api/v3/x")


def test_a_pattern_a_program_gives_is_checked_when_built(tmp_path: Path) -> None:
    config = load_config({"config": write_site(tmp_path, HOST)})
    bad = MountConfig("(", "return", config.hosts[0].mounts[0].target, {}, "prog", match="~")
    host = config.hosts[0]
    broken = type(config)(
        **{
            **{name: getattr(config, name) for name in config.__dataclass_fields__},
            "hosts": (type(host)(host.names, host.default, (*host.mounts, bad), host.where),),
        }
    )
    reactor = SynchronousReactorThreads()
    with pytest.raises(ConfigError, match=r"^prog\.path: not a regular expression"):
        SiteBuilder(reactor=reactor, threadpool=None).build(broken)


def test_a_request_searches_the_patterns_once(tmp_path: Path, monkeypatch: Any) -> None:
    """The body limit (asked from the head) and the routing share one search."""
    searched = counted_patterns(monkeypatch)
    router, _ = build(tmp_path, SITE)
    assert router.table.body_limits
    assert get(router, b"/other", b"POST", b"x").body == b"root"
    assert searched == [b"/other"] * 3  # (three patterns, once each)
    searched.clear()
    assert environ_of(get(router, b"/api/v2/x", b"POST", b"x")) == ("", "/api/v2/x")
    assert searched == [b"/api/v2/x"] * 2  # (the second found it)


def test_a_search_that_ran_out_of_time_is_not_remembered_past_the_router() -> None:
    stuck = Stuck()
    table = MountTable(
        [Mount(b"", "root"), Mount(b"", "stuck", match="~", pattern=stuck)],
        timed_out=lambda label, path: None,
    )
    for _ in range(2):
        with pytest.raises(LocationTimeoutError):
            table.lookup(b"/a")
        table.forget()  # (as the router does once it answered the 500)
    assert stuck.searched == [b"/a"] * 4  # (twice per request)
    assert target(table, b"") == "root"  # (OPTIONS *: no pattern is searched)


def test_exact_root_and_a_caret_tilde_pair_route_as_nginx(tmp_path: Path) -> None:
    """= / is the root's path alone; ^~ on the partner of a static mount stops the
    patterns for the static mount too (the pair is one place).
    """
    text = (
        HOST + "[[host.mount]]\npath = '= /'\napp = 'tests.apps:environ'\n"
        "[[host.mount]]\npath = '/assets'\nstatic = 'DIR/site'\nfallthrough = true\n"
        "[[host.mount]]\npath = '^~ /assets'\napp = 'tests.apps:environ'\n"
        "[[host.mount]]\npath = '~ \\.css$'\nreturn = '200 css pattern'\n"
    )
    router, _ = build(tmp_path, text)
    assert environ_of(get(router, b"/")) == ("", "/")
    assert get(router, b"/x").body == b"root"
    assert environ_of(get(router, b"/assets/x.css")) == ("/assets", "/x.css")
    assert get(router, b"/other/x.css").body == b"css pattern"


def test_a_pattern_mount_logs_its_requests_and_refusals_in_its_own_log(tmp_path: Path) -> None:
    text = (
        '[[host]]\nnames = ["a.example"]\naccess_log = "site.log"\n'
        '[[host.mount]]\npath = "/"\nreturn = "200 root"\n'
        "[[host.mount]]\npath = '~ ^/up'\napp = 'tests.apps:hello'\n"
        'access_log = "up.log"\nmax_body = 10\n'
    )
    service = access_logs.serve(access_logs.site(tmp_path, text))
    access_logs.send(
        service, b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 99\r\n\r\n"
    )
    access_logs.send(service, b"GET /up/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    access_logs.send(service, b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    service.stopService()
    assert access_logs.requests(tmp_path / "up.log") == [
        "POST /upload HTTP/1.1 413",
        "GET /up/x HTTP/1.1 200",
    ]
    assert access_logs.requests(tmp_path / "site.log") == ["GET /x HTTP/1.1 200"]


def test_options_asterisk_is_not_matched_by_patterns(tmp_path: Path) -> None:
    """OPTIONS * names no path: the root mount takes it, as before (nginx's rewrite
    here, too, leaves it alone).
    """
    table = MountTable([Mount(b"", "root"), regex("", "everything")])
    assert target(table, b"") == "root"
    text = HOST + "[[host.mount]]\npath = '~ .*'\nreturn = '200 pattern'\n"
    router, _ = build(tmp_path, text)
    client = connect(router)
    client.send(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")
    [response] = parse_responses(client.take())
    assert response.body == b"root"
    assert get(router, b"/x").body == b"pattern"


# -- a lookup that ran out of time fails closed -----------------------------------------------


def counted_patterns(monkeypatch: Any) -> list[bytes]:
    """Count the searches of every mount pattern the site builds; the paths searched."""
    searched: list[bytes] = []

    class Counting:
        def __init__(self, compiled: Any) -> None:
            self.compiled = compiled
            self.pattern, self.flags = compiled.pattern, compiled.flags
            self.groups, self.groupindex = compiled.groups, compiled.groupindex

        def search(self, path: bytes, timeout: float) -> Any:
            searched.append(path)
            return self.compiled.search(path, timeout=timeout)

    monkeypatch.setattr(
        site_module,
        "compile_location_pattern",
        lambda pattern, caseless: Counting(compile_location_pattern(pattern, caseless=caseless)),
    )
    return searched


def stuck_patterns(monkeypatch: Any) -> list[bytes]:
    """Make every mount pattern the site builds run out of time; the paths searched."""
    searched: list[bytes] = []

    class Stopped:
        def __init__(self, compiled: Any) -> None:
            self.pattern, self.flags = compiled.pattern, compiled.flags
            self.groups, self.groupindex = compiled.groups, compiled.groupindex

        def search(self, path: bytes, timeout: float) -> Any:
            searched.append(path)
            raise TimeoutError

    monkeypatch.setattr(
        site_module,
        "compile_location_pattern",
        lambda pattern, caseless: Stopped(compile_location_pattern(pattern, caseless=caseless)),
    )
    return searched


REFUSING = (
    '[[host]]\nnames = ["a.test"]\nerror_pages = { 500 = "500.html" }\n'
    '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nmax_body = 5\n'
    "[[host.mount]]\npath = '~ /\\.git'\nreturn = '403'\n"
)


def test_a_timed_out_lookup_is_answered_500_and_not_routed_on(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A client that makes the refusing pattern slow does not reach the root mount."""
    searched = stuck_patterns(monkeypatch)
    (tmp_path / "500.html").write_bytes(b"<p>our 500 page</p>")
    router, _ = build(tmp_path, REFUSING)
    with capture_log_events() as events:
        response = get(router, b"/x/.git/config")
    assert (response.status, response.body) == (500, b"<p>our 500 page</p>")
    assert [formatEvent(event) for event in events] == [
        "Mount path ~ /\\.git took over 0.01s on the path b'/x/.git/config' (14 bytes):"
        " the request is answered 500 Internal Server Error"
    ]
    assert searched == [b"/x/.git/config"] * 2  # (once more before it counts)
    # The next request for that path is searched again (a pause may have caused it).
    assert get(router, b"/x/.git/config").status == 500
    assert searched == [b"/x/.git/config"] * 4


def test_a_timed_out_lookup_picks_no_mounts_body_limit(tmp_path: Path, monkeypatch: Any) -> None:
    """The body limit asked from the head does not fall back to the root mount's 5
    bytes either: the request is answered 500 from its head, and looked up once
    (its pattern searched twice: once more before it counts).
    """
    searched = stuck_patterns(monkeypatch)
    (tmp_path / "500.html").write_bytes(b"<p>our 500 page</p>")
    router, _ = build(tmp_path, REFUSING)
    assert router.table.body_limits
    response = get(router, b"/upload", b"POST", b"x" * 50)
    assert response.status == 500
    assert searched == [b"/upload"] * 2  # (once more before it counts)
    assert get(router, b"/upload", b"POST", b"x" * 50).status == 500
    assert searched == [b"/upload"] * 4
    # Nor does the server's limit answer 413 first: nginx's 500 comes before its
    # client_max_body_size check.
    client = connect(router, settings=HttpSettings(max_body=10))
    client.factory.body_limit = router.body_limit
    client.send(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 50\r\n\r\n")
    [response] = parse_responses(client.take(), [b"POST"])
    assert response.status == 500


def test_a_timed_out_exemption_lookup_redirects(tmp_path: Path, monkeypatch: Any) -> None:
    """A path whose https_redirect exemption cannot be decided is redirected."""
    stuck_patterns(monkeypatch)
    text = (
        '[[host]]\nnames = ["a.test"]\nhttps_redirect = 443\n'
        "[[host.mount]]\npath = '/'\nreturn = '200 root'\n"
        "[[host.mount]]\npath = '~ ^/\\.well-known/'\nreturn = '200 acme'\n"
        "https_redirect = false\n"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/.well-known/x").status == 301


def test_a_timed_out_x_accel_redirect_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    """It is not served by the prefix mount the pattern would have been tried before."""
    searched = stuck_patterns(monkeypatch)
    options = {**default_options("static"), "internal": True}
    (tmp_path / "f").mkdir()
    files = StaticHandler(StaticOptions.from_mount(str(tmp_path / "f"), options), now=lambda: 0.0)
    resolve = _accel_resolver(
        [
            (MountConfig("/files", "static", "f", options, "t"), files),
            (MountConfig("\\.secret$", "static", "f", options, "t", match="~"), files),
        ]
    )
    assert resolve(b"x-accel-redirect", b"/files/a.secret") is None
    assert resolve(b"x-accel-redirect", b"/files/a.secret") is None
    assert searched == [b"/files/a.secret"] * 4  # (searched again each time, twice)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("^~ = /x", "'^~ = /x': ^~ is followed by a plain prefix, not another modifier"),
        ("^~ ~ x", "'^~ ~ x': ^~ is followed by a plain prefix, not another modifier"),
    ],
)
def test_a_modifier_after_caret_tilde_is_named_as_such(
    tmp_path: Path, path: str, message: str
) -> None:
    """The file's path is not refused as if it came from the command line."""
    text = HOST + f"[[host.mount]]\npath = {path!r}\nreturn = '200 x'\n"
    assert config_error(tmp_path, text) == f"site.toml: host[0].mount[1].path: {message}"
