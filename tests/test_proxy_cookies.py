"""proxy_cookie_path and proxy_cookie_domain: an upstream's Set-Cookie rewritten as nginx does.

The rewriting is pure logic, tested on its own; then through the proxy with an
in-memory upstream (tests.test_proxy's), and the configuration.
"""

from __future__ import annotations

import re
import tomllib
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_proxy import SWITCHED, WEBSOCKET_UPGRADE, make_proxy, one_response
from twistwsgi import cli
from twistwsgi.config import ConfigError
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.proxy_cookies import CookieRewrite, parse_flags
from twistwsgi.site import describe_routing
from twistwsgi.testing import request_head

NOBODY = TrustedProxies(())
REQUEST = request_head(b"/app/account", host=b"www.example.com")


def rewritten(value: bytes, paths: Any = (), domains: Any = (), flags: Any = ()) -> bytes:
    return CookieRewrite(paths, domains, flags).cookie(value, REQUEST, None, NOBODY)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"sid=1; Path=/", b"sid=1; Path=/app/"),
        (b"sid=1; path=/account; HttpOnly", b"sid=1; path=/app/account; HttpOnly"),
        (b"sid=1;Path=/x", b"sid=1;Path=/app/x"),  # no space after ;
        (b"sid=1; Path = /x ; Secure", b"sid=1; Path = /app/x ; Secure"),  # spaces kept
        (b"sid=1; Path=/Account", b"sid=1; Path=/app/Account"),
        (b"sid=1", b"sid=1"),  # no attributes
        (b"path=/; Max-Age=60", b"path=/; Max-Age=60"),  # a cookie named path
        (b"sid=1; Path=relative", b"sid=1; Path=relative"),  # no rule starts it
        (b"sid=1; XPath=/x; Path=/y", b"sid=1; XPath=/x; Path=/app/y"),
        (b"sid=1; Path=/a; Path=/b", b"sid=1; Path=/app/a; Path=/app/b"),  # each, as sent
    ],
)
def test_path_prefixes_are_replaced(value: bytes, expected: bytes) -> None:
    """The first prefix that starts the Path attribute is replaced; the rest of the
    line, other attributes and the cookie itself, is left as it was.
    """
    assert rewritten(value, paths=[("/", "/app/")]) == expected


def test_the_first_path_rule_that_matches_wins_and_case_counts() -> None:
    rules = [("/api/", "/v2/"), ("/", "/app/")]
    assert rewritten(b"a=1; Path=/api/x", paths=rules) == b"a=1; Path=/v2/x"
    assert rewritten(b"a=1; Path=/API/x", paths=rules) == b"a=1; Path=/app/API/x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"a=1; Domain=internal.example", b"a=1; Domain=www.example.com"),
        (b"a=1; domain=.Internal.EXAMPLE; Path=/", b"a=1; domain=.www.example.com; Path=/"),
        (b"a=1; Domain=sub.internal.example", b"a=1; Domain=sub.internal.example"),  # whole
        (b"a=1; Domain=internal.example.org", b"a=1; Domain=internal.example.org"),
        (b"a=1; Domain=other.example", b"a=1; Domain=other.example"),
    ],
)
def test_domains_are_matched_whole_without_case(value: bytes, expected: bytes) -> None:
    """The Domain is compared whole, without case, its leading dot set aside and kept
    (in the configuration too).
    """
    for configured in ("internal.example", ".Internal.Example"):
        assert rewritten(value, domains=[(configured, "$host")]) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"a=1; Domain=.b.internal", b"a=1; Domain=.shop.example"),
        (b"a=1; Domain=b.internal", b"a=1; Domain=shop.example"),
    ],
)
def test_a_dotted_replacement_gives_one_dot(value: bytes, expected: bytes) -> None:
    """The nginx idiom { ".b.internal" = ".shop.example" }: the replacement's dot goes, the
    upstream's stays; "..shop.example" would be refused by browsers (RFC 6265 5.2.3).
    """
    assert rewritten(value, domains=[(".b.internal", ".shop.example")]) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"a=1; Domain=internal.example; Secure", b"a=1; Secure"),
        (b"a=1; Secure; Domain=.internal.example", b"a=1; Secure"),
        (b"a=1; Path=/; HttpOnly", b"a=1; HttpOnly"),
    ],
)
def test_an_empty_replacement_removes_the_attribute(value: bytes, expected: bytes) -> None:
    """A host-only cookie (no Domain), or a path-default one (no Path)."""
    rules = [("internal.example", "")]
    assert rewritten(value, paths=[("/", "$http_x_missing")], domains=rules) == expected


def test_a_variable_cannot_end_the_attribute() -> None:
    """A ; in a variable's value is percent-encoded, a control escaped: no attribute
    of a client's making (RFC 6265 4.1.1).
    """
    request = request_head(b"/", headers=[(b"X-Tenant", b"t1; Domain=evil.example\x01")])
    rewrite = CookieRewrite([("/", "/$http_x_tenant/")])
    value = rewrite.cookie(b"a=1; Path=/", request, None, NOBODY)
    assert value == b"a=1; Path=/t1%3B Domain=evil.example\\x01/"
    morsel = SimpleCookie(value.decode("latin-1"))["a"]
    assert morsel["domain"] == ""


@given(
    name=st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True),
    value=st.from_regex(r"[A-Za-z0-9_]{0,8}", fullmatch=True),
    path=st.from_regex(r"(/[a-z0-9]{0,4}){1,3}", fullmatch=True),
    attributes=st.lists(st.sampled_from(["Secure", "HttpOnly", "Max-Age=60", "SameSite=Lax"])),
)
def test_only_the_path_changes(name: str, value: str, path: str, attributes: list[str]) -> None:
    """Read back by Python's cookie parser, a rewritten line has the same cookie and
    attributes, and the path with its prefix replaced.
    """
    line = "; ".join([f"{name}={value}", f"Path={path}", *attributes]).encode()
    cookie = SimpleCookie(rewritten(line, paths=[("/", "/app/")]).decode())
    original = SimpleCookie(line.decode())
    assert cookie[name].value == original[name].value
    assert cookie[name]["path"] == "/app/" + path[1:]
    for key in ("secure", "httponly", "max-age", "samesite"):
        assert cookie[name][key] == original[name][key]


HARDEN = [("theme", "nosecure nohttponly nosamesite"), ("*", "secure httponly samesite=lax")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"sid=1", b"sid=1; Secure; HttpOnly; SameSite=Lax"),
        (b"sid=1; Path=/; secure", b"sid=1; Path=/; secure; HttpOnly; SameSite=Lax"),
        (b"sid=1;HTTPONLY", b"sid=1;HTTPONLY; Secure; SameSite=Lax"),  # present: kept
        (b"sid=1; samesite=None; Secure", b"sid=1; SameSite=Lax; Secure; HttpOnly"),
        (b"theme=dark; Secure; Path=/; HttpOnly; SameSite=Strict", b"theme=dark; Path=/"),
        (b"theme=dark", b"theme=dark"),  # its own entry, not *: nothing to remove
        (b"Theme=dark; Secure", b"Theme=dark"),  # the name without case, as nginx's
        (b"sid=1;", b"sid=1; Secure; HttpOnly; SameSite=Lax"),  # not after an empty one
        (b"sid=1; Path=/ ;  ", b"sid=1; Path=/ ; Secure; HttpOnly; SameSite=Lax"),
        (b"sid; Path=/", b"sid; Path=/; Secure; HttpOnly; SameSite=Lax"),  # no name: *'s
    ],
)
def test_flags_are_added_set_or_removed(value: bytes, expected: bytes) -> None:
    """The entry naming the cookie, else *: missing flags added at the end, SameSite
    given the value asked for, the no- forms removing every such attribute.
    """
    assert rewritten(value, flags=HARDEN) == expected


def test_flags_with_a_path_rewrite() -> None:
    assert rewritten(b"sid=1; Path=/", paths=[("/", "/app/")], flags=[("sid", "secure")]) == (
        b"sid=1; Path=/app/; Secure"
    )


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        ("secure secure", "sets secure twice"),
        ("secure nosecure", "sets secure twice"),
        ("samesite=maybe", "'samesite=maybe' is not a cookie flag"),
        ("samesite", "'samesite' is not a cookie flag"),
        ("nosamesite=lax", "is not a cookie flag"),
        ("", "no flags given"),
    ],
)
def test_bad_flags_are_named(words: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_flags(words)


# -- through the proxy ------------------------------------------------------------------


def cookies_through(**options: Any) -> list[bytes]:
    setup = make_proxy(("http://10.0.0.1:9000/",), mount="/app", routed=True, **options)
    client = setup.client()
    client.send(b"GET /app/account HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=1; Path=/; Domain=backend.internal\r\n"
        b"X-Cookie-2: a=1; Path=/\r\nSet-Cookie: theme=dark; Path=/prefs\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    response = one_response(client)
    assert response.header(b"x-cookie-2") == b"a=1; Path=/"  # not a Set-Cookie
    return response.header_values(b"set-cookie")  # type: ignore[no-any-return]


def test_a_proxy_mount_rewrites_every_set_cookie() -> None:
    assert cookies_through(
        proxy_cookie_path=(("/", "/app/"),), proxy_cookie_domain=(("backend.internal", "$host"),)
    ) == [b"sid=1; Path=/app/; Domain=shop.example", b"theme=dark; Path=/app/prefs"]


def test_a_proxy_mount_sets_flags_alone() -> None:
    assert cookies_through(proxy_cookie_flags=(("sid", "secure httponly"),)) == [
        b"sid=1; Path=/; Domain=backend.internal; Secure; HttpOnly",
        b"theme=dark; Path=/prefs",
    ]


def test_without_the_settings_cookies_pass_unchanged() -> None:
    assert cookies_through() == [
        b"sid=1; Path=/; Domain=backend.internal",
        b"theme=dark; Path=/prefs",
    ]


def test_the_cookies_of_a_switch_of_protocols_are_rewritten_too() -> None:
    setup = make_proxy(proxy_cookie_path=(("/", "/ws/"),))
    client = setup.client()
    client.send(WEBSOCKET_UPGRADE)
    setup.endpoint().last.respond(
        SWITCHED.replace(b"\r\n\r\n", b"\r\nSet-Cookie: a=1; Path=/\r\n\r\n")
    )
    assert b"\r\nSet-Cookie: a=1; Path=/ws/\r\n" in client.take()


# -- configuration ----------------------------------------------------------------------


def load(directory: Path, extra: str) -> Any:
    site = directory / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n[[host.mount]]\npath = '/app'\n"
        f"proxy = 'http://127.0.0.1:9000/'\n{extra}\n"
    )
    return cli.load_config({"config": str(site)})


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("proxy_cookie_path = 'on'", "proxy_cookie_path: expected off or a table of cookie paths"),
        ("proxy_cookie_path = {}", "is an empty table: write off to rewrite nothing"),
        ("proxy_cookie_path = { 'app' = '/' }", "'app' is not the start of a path"),
        ("proxy_cookie_path = { '/a b' = '/' }", "is not a cookie path (no spaces"),
        ("proxy_cookie_domain = { '~^(.*)$' = 'a' }", "plain text here (no ~ regular"),
        ("proxy_cookie_path = { '/' = '/a;b' }", "holds a control character or a ;"),
        ("proxy_cookie_path = { '/' = '/$nope/' }", "the replacement of '/': unknown variable"),
        ("proxy_cookie_path = { '/' = 1 }", "the replacement of '/' is not text"),
        ("proxy_cookie_domain = { '$host' = 'a' }", "proxy_cookie_domain: '$host': the domains"),
        ("proxy_cookie_domain = { 'a;b' = 'a' }", "is not a cookie domain"),
        ("proxy_cookie_domain = true", "expected off or a table of cookie domains"),
        ("proxy_cookie_flags = { 'a b' = 'secure' }", "'a b' is not a cookie name (or *"),
        ("proxy_cookie_flags = { '*' = 'safe' }", "the flags of '*': 'safe' is not a cookie flag"),
        ("proxy_cookie_flags = { '~' = 'secure' }", "no ~ regular expressions); * stands for"),
        ("proxy_cookie_flags = { '~^sess' = 'secure' }", "cookie names are plain here"),
        (
            "proxy_cookie_flags = { 'SID' = 'secure', 'sid' = 'httponly' }",
            "'sid' is given twice (names are matched without case)",
        ),
        ("proxy_cookie_flags = { '*' = ['secure'] }", "the flags of '*' are not text"),
        ("proxy_cookie_flags = {}", "is an empty table: write off to set no flags"),
        ("proxy_cookie_flags = 'on'", "expected off or a table of cookie names (or *)"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, extra)
    message = str(raised.value)
    assert message.startswith("site.toml: host[0].mount[0].proxy_cookie_"), message
    assert problem in message


def test_off_and_tables_load(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "proxy_cookie_path = 'off'\nproxy_cookie_domain = { 'b.internal' = '$host' }\n"
        "proxy_cookie_flags = { '*' = ' Secure  SameSite=Lax ' }",
    )
    options = config.hosts[0].mounts[0].options
    assert options["proxy_cookie_flags"] == (("*", "secure samesite=lax"),)
    assert options["proxy_cookie_path"] == ()
    assert options["proxy_cookie_domain"] == (("b.internal", "$host"),)
    shown = describe_routing(config)
    line = next(line for line in shown.splitlines() if "proxy_cookie_domain=" in line)
    value, flags = line.split("proxy_cookie_domain=", 1)[1].split(" proxy_cookie_flags=")
    assert tomllib.loads(f"v = {value}")["v"] == {"b.internal": "$host"}
    assert tomllib.loads(f"v = {flags}")["v"] == {"*": "secure samesite=lax"}


def test_only_proxy_mounts_take_them(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n[[host.mount]]\npath = '/'\n"
        "app = 'tests.apps:hello'\nproxy_cookie_path = { '/' = '/x/' }\n"
    )
    with pytest.raises(ConfigError, match="proxy_cookie_path: only applies to proxy mounts"):
        cli.load_config({"config": str(site)})
