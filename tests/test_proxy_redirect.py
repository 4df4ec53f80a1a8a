"""proxy_redirect: an upstream's Location and Refresh URLs rewritten as nginx does.

The rewriting is pure logic, tested on its own (with a property: a URL an upstream
makes for the path it was given comes back as the client's path); then through the
proxy with an in-memory upstream (tests.test_proxy's), and the configuration.
"""

from __future__ import annotations

import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_proxy import make_proxy, one_response
from twistwsgi import cli
from twistwsgi.config import ConfigError
from twistwsgi.forwarding import TrustedProxies, parse_upstream, upstream_target
from twistwsgi.http.request import RequestHead, Route
from twistwsgi.proxy_redirect import RedirectRewrite, redirect_rewrite
from twistwsgi.routing import match_prefix, merge_slashes, path_below
from twistwsgi.site import describe_routing
from twistwsgi.testing import request_head

NOBODY = TrustedProxies(())


def head(target: bytes = b"/", host: bytes = b"shop.example", scheme: str = "https") -> RequestHead:
    return request_head(target, host=host, scheme=scheme, local=("192.0.2.1", 443))


def default(mount: str, *urls: str) -> RedirectRewrite:
    rewrite = redirect_rewrite("default", mount, [parse_upstream(url) for url in urls])
    assert rewrite is not None
    return rewrite


def location(rewrite: RedirectRewrite, url: bytes) -> bytes:
    return rewrite.location(url, head(), None, NOBODY)


@pytest.mark.parametrize(
    ("mount", "upstream", "url", "expected"),
    [
        # The upstream URL has a path: it stands for the mount's.
        ("/app", "http://u:9000/", b"http://u:9000/login?next=/x", b"/app/login?next=/x"),
        ("/app", "http://u:9000/", b"http://u:9000/", b"/app/"),
        ("/app", "http://u:9000/", b"http://u:9000", b"/app/"),
        ("/app", "http://u:9000/", b"http://u:9000?x", b"/app/?x"),
        ("/app", "http://u:9000/v2", b"http://u:9000/v2/users", b"/app/users"),
        ("/app", "http://u:9000/v2/", b"http://u:9000/v2/users", b"/app/users"),
        ("/app", "http://u:9000/v2", b"http://u:9000/v2", b"/app"),
        ("/app", "http://u:9000/v2", b"http://u:9000/v2#top", b"/app#top"),
        ("/", "http://u:9000/v2", b"http://u:9000/v2/users", b"/users"),
        ("/", "http://u:9000/v2", b"http://u:9000/v2", b"/"),
        ("/", "http://u:9000/v2", b"http://u:9000/v2?q", b"/?q"),
        ("/", "http://u:9000/", b"http://u:9000/x", b"/x"),
        # No path: the request's path was passed unchanged, and comes back so.
        ("/api", "http://u:9000", b"http://u:9000/api/login", b"/api/login"),
        ("/api", "http://u:9000", b"http://u:9000", b"/"),
        ("/api", "http://u:9000", b"http://u:9000?q", b"/?q"),
        # Scheme and host without case (RFC 3986 6.2.2.1); the default port left out.
        ("/app", "http://U:9000/", b"HTTP://u:9000/x", b"/app/x"),
        ("/app", "https://backend.internal/", b"https://Backend.Internal/x", b"/app/x"),
        ("/app", "http://u:80/", b"http://u/x", b"/app/x"),
        ("/app", "http://u/", b"http://u:80/x", b"/app/x"),
        ("/app", "https://u/", b"https://u:443/x", b"/app/x"),
        ("/app", "http://[::1]/", b"http://[::1]:80/x", b"/app/x"),
        # A path that would read as another host's URL stays a path on this one.
        ("/", "http://u:9000/", b"http://u:9000//evil.example/x", b"/.//evil.example/x"),
        ("/api", "http://u:9000", b"http://u:9000//evil.example/x", b"/.//evil.example/x"),
        ("/", "http://u:9000/", b"http://u:9000/\\evil.example/", b"/./\\evil.example/"),
        ("/", "http://u:9000", b"http://u:9000/\t/evil.example/", b"/./\t/evil.example/"),
        # The mount's path as a URL writes it.
        ("/caf\u00e9 menu", "http://u:9000/", b"http://u:9000/x", b"/caf%C3%A9%20menu/x"),
        # The Host a UNIX-socket upstream is sent (preserve_host = false).
        ("/app", "unix:/run/app.sock", b"http://localhost/app/x", b"/app/x"),
    ],
)
def test_the_default_turns_an_upstream_url_into_the_mounts(
    mount: str, upstream: str, url: bytes, expected: bytes
) -> None:
    assert location(default(mount, upstream), url) == expected


@pytest.mark.parametrize(
    ("upstream", "url"),
    [
        # Not the upstream: another host, port, scheme, or a longer name.
        ("http://u:9000/", b"http://shop.example/login"),
        ("http://u:9000/", b"http://u:9001/login"),
        ("http://u/", b"http://u:8080/login"),
        ("http://u/", b"http://u:443/login"),
        ("http://u:9000/", b"http://u:90001/login"),
        ("http://u:9000/", b"https://u:9000/login"),
        ("http://u:9000/", b"http://u:9000.evil.example/login"),
        ("http://u:9000/", b"http://u:9000@evil.example/login"),
        # Not below its path, on segment boundaries.
        ("http://u:9000/v2", b"http://u:9000/v2x/users"),
        ("http://u:9000/v2", b"http://u:9000/v1/users"),
        # Relative URLs are left alone, as nginx leaves them.
        ("http://u:9000/", b"/login"),
        ("http://u:9000/", b"login"),
        ("http://u:9000/", b"//u:9000/login"),
        ("http://u:9000/", b""),
    ],
)
def test_the_default_leaves_other_urls_alone(upstream: str, url: bytes) -> None:
    assert location(default("/app", upstream), url) == url


def test_each_upstream_of_the_mount_is_known() -> None:
    rewrite = default("/app", "http://a:9000/", "http://b:9000/v2")
    assert location(rewrite, b"http://a:9000/x") == b"/app/x"
    assert location(rewrite, b"http://b:9000/v2/x") == b"/app/x"


def test_of_two_upstreams_on_one_server_the_longer_path_wins() -> None:
    """Listed in either order: http://u/v2/x is below /v2, not http://u/ + v2/x."""
    for order in (
        ("http://u/", "http://u/v2", "http://u"),
        ("http://u", "http://u/v2", "http://u/"),
    ):
        assert location(default("/app", *order), b"http://u/v2/x/edit") == b"/app/x/edit"


#: Path segments as clients send them: percent-encoded bytes, empty segments (a
#: doubled slash), no dot-segments (the router resolves those first).
_SEGMENT = st.text(alphabet=st.sampled_from("abcXYZ019-_~%4120"), min_size=0, max_size=6)

#: A mount's path is configured decoded, without empty or dot segments.
_MOUNT_SEGMENT = st.text(
    alphabet=st.sampled_from("abcXYZ019-._~\u00e9"), min_size=1, max_size=6
).filter(lambda segment: segment not in (".", ".."))


def _routed(target: bytes, mount: bytes) -> tuple[RequestHead, Route] | None:
    """A request for ``target`` as the router hands it to the mount ``mount`` (its
    decoded prefix), or ``None`` when the router would send it elsewhere.
    """
    request = head(target)
    decoded = request.decoded_path
    if not match_prefix(merge_slashes(decoded), mount):
        return None
    return request, Route(mount, path_below(decoded, mount), "shop.example")


@given(
    mount=st.lists(_MOUNT_SEGMENT, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    prefix=st.sampled_from([None, "/", "/v2", "/v2/", "/a/b", "/caf%C3%A9"]),
    rest=st.lists(_SEGMENT, max_size=4).map(lambda parts: "".join("/" + p for p in parts)),
    # (Not a bare "?": urljoin, standing in for a browser, drops it.)
    query=st.sampled_from(["", "?x=1"]),
)
def test_a_redirect_to_what_the_upstream_was_sent_leads_back_to_it(
    mount: str, prefix: str | None, rest: str, query: str
) -> None:
    """The inverse of the path mapping, checked with the mapping itself: the client
    asks for a path below the mount; the upstream is sent what
    forwarding.upstream_target makes of it and redirects to exactly that URL. The
    client, following the rewritten Location (resolved against its own URL, as a
    browser does), asks for a path that the router sends to the same mount and that
    reaches the upstream as the same target.
    """
    mount_prefix = mount.rstrip("/").encode("utf-8")
    encoded_mount = urllib.parse.quote(mount.rstrip("/")).encode("ascii")
    client_target = ((encoded_mount + rest.encode()) or b"/") + query.encode()
    routed = _routed(client_target, mount_prefix)
    assert routed is not None
    address = parse_upstream("http://u:9000" + (prefix or ""))
    sent = upstream_target(*routed, address.prefix)
    rewritten = location(default(mount, "http://u:9000" + (prefix or "")), b"http://u:9000" + sent)
    followed = urllib.parse.urljoin(
        "https://shop.example" + client_target.decode(), rewritten.decode()
    )
    assert followed.startswith("https://shop.example/"), (rewritten, followed)
    again = _routed(followed[len("https://shop.example") :].encode(), mount_prefix)
    assert again is not None, (rewritten, followed)
    assert upstream_target(*again, address.prefix) == sent, (rewritten, followed)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"5; url=http://u:9000/next", b"5; url=/app/next"),
        (b"0;URL=http://u:9000/next", b"0;URL=/app/next"),
        (b"3; url = 'http://u:9000/next'", b"3; url = '/app/next'"),
        (b"3; url='http://u:9000'", b"3; url='/app/'"),
        (b'3; URL="http://u:9000/a?b"', b'3; URL="/app/a?b"'),
        (b"3; url=http://other.example/", b"3; url=http://other.example/"),
        (b"30", b"30"),
    ],
)
def test_refresh_has_its_url_rewritten(value: bytes, expected: bytes) -> None:
    rewrite = default("/app", "http://u:9000/")
    assert rewrite.refresh(value, head(), None, NOBODY) == expected


def test_pairs_replace_prefixes_in_order_with_variables() -> None:
    rewrite = redirect_rewrite(
        (
            ("http://backend.internal/admin/", "/staff/"),
            ("http://backend.internal/", "$scheme://$host/app/"),
            ("/", "/app/"),
        ),
        "/app",
        [parse_upstream("http://u:9000/")],
    )
    assert rewrite is not None
    assert location(rewrite, b"http://backend.internal/admin/x") == b"/staff/x"
    assert location(rewrite, b"http://backend.internal/x?y") == b"https://shop.example/app/x?y"
    assert location(rewrite, b"/login") == b"/app/login"
    # The default is not applied beside a table, as in nginx.
    assert location(rewrite, b"http://u:9000/x") == b"http://u:9000/x"


def test_replacements_read_a_trusted_proxys_forwarding_fields() -> None:
    """As proxy_set_header's: the client's X-Forwarded-For counts from a trusted proxy."""
    rewrite = redirect_rewrite((("/", "/$proxy_add_x_forwarded_for/"),), "/", [])
    assert rewrite is not None
    request = head()
    request.headers.append((b"X-Forwarded-For", b"203.0.113.4"))
    trusting = TrustedProxies(("192.0.2.0/24",))
    # (Percent-encoded where a URL may not hold it: the space.)
    assert rewrite.location(b"/x", request, None, trusting) == b"/203.0.113.4,%20192.0.2.9/x"
    assert rewrite.location(b"/x", request, None, NOBODY) == b"/192.0.2.9/x"


def test_a_pair_cannot_make_another_hosts_url_either() -> None:
    rewrite = redirect_rewrite((("http://backend.internal/", "/"),), "/", [])
    assert rewrite is not None
    assert location(rewrite, b"http://backend.internal//evil.example/") == (b"/.//evil.example/")


def test_off_rewrites_nothing() -> None:
    assert redirect_rewrite("off", "/app", [parse_upstream("http://u:9000/")]) is None


def test_only_location_and_refresh_are_rewritten() -> None:
    rewrite = default("/app", "http://u:9000/")
    fields = [
        (b"LOCATION", b"http://u:9000/a"),
        (b"Content-Location", b"http://u:9000/b"),
        (b"Refresh", b"1; url=http://u:9000/c"),
        (b"Link", b"<http://u:9000/d>; rel=next"),
        (b"X-Location", b"http://u:9000/e"),
    ]
    rewrite.fields(fields, head(), None, NOBODY)
    assert fields == [
        (b"LOCATION", b"/app/a"),
        (b"Content-Location", b"http://u:9000/b"),
        (b"Refresh", b"1; url=/app/c"),
        (b"Link", b"<http://u:9000/d>; rel=next"),
        (b"X-Location", b"http://u:9000/e"),
    ]


# -- through the proxy ------------------------------------------------------------------


def redirected(location_value: bytes, **options: Any) -> bytes | None:
    setup = make_proxy(("http://10.0.0.1:9000/",), mount="/app", routed=True, **options)
    client = setup.client()
    client.send(b"GET /app/account HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    upstream = setup.endpoint().last
    upstream.respond(
        b"HTTP/1.1 302 Found\r\nLocation: "
        + location_value
        + b"\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"
    )
    response = one_response(client)
    assert response.status == 302
    assert response.header_values(b"set-cookie") == [b"a=1", b"b=2"]
    return response.header(b"location")  # type: ignore[no-any-return]


def test_a_proxied_redirect_to_the_upstream_goes_to_the_mount() -> None:
    assert redirected(b"http://10.0.0.1:9000/login?next=/account") == (b"/app/login?next=/account")


def test_a_proxied_redirect_elsewhere_passes() -> None:
    assert redirected(b"https://shop.example/app/login") == b"https://shop.example/app/login"


def test_off_passes_the_upstreams_url() -> None:
    url = b"http://10.0.0.1:9000/login"
    assert redirected(url, proxy_redirect="off") == url


def test_a_table_puts_the_prefix_back_on_relative_urls() -> None:
    assert redirected(b"/login", proxy_redirect=(("/", "/app/"),)) == b"/app/login"


def test_a_proxied_refresh_to_the_upstream_goes_to_the_mount() -> None:
    """Refresh is rewritten through the proxy too, in any case, with or without Location."""
    setup = make_proxy(("http://10.0.0.1:9000/",), mount="/app", routed=True)
    client = setup.client()
    client.send(b"GET /app/wait HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 200 OK\r\nREFRESH: 5; url=http://10.0.0.1:9000/done\r\nContent-Length: 0\r\n\r\n"
    )
    response = one_response(client)
    assert response.header(b"refresh") == b"5; url=/app/done"


# -- configuration ----------------------------------------------------------------------


def load(directory: Path, value: str) -> object:
    site = directory / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n[[host.mount]]\npath = '/app'\n"
        f"proxy = 'http://127.0.0.1:9000/'\nproxy_redirect = {value}\n"
    )
    return cli.load_config({"config": str(site)})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("'sometimes'", "expected default, off or a table of URL prefixes and replacements"),
        ("{}", "is an empty table: write off to rewrite nothing"),
        ("{ '/' = 3 }", "the replacement of '/' is not text: 3"),
        ("{ '' = '/x/' }", "'' is not the start of a URL"),
        ("{ 'http://a b/' = '/x/' }", "'http://a b/' is not the start of a URL"),
        ("{ '/' = '/$status/' }", "the replacement of '/': unknown variable $status here"),
        ("{ '/' = \"/a\\n\" }", "the replacement of '/' holds a control character"),
        ("true", "expected default, off or a table"),
        ("{ '~^http://a/' = '/' }", "prefixes are plain text here (no ~ regular expressions"),
        ("{ 'default' = '/a/' }", "nginx's default is written out here"),
        ("{ 'http://$proxy_host/' = '/' }", "prefixes are plain text here"),
        ("{ '/\u00a0x' = '/' }", "is not the start of a URL"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, value)
    message = str(raised.value)
    assert message.startswith("site.toml: host[0].mount[0].proxy_redirect: "), message
    assert problem in message


def test_check_config_shows_a_table_as_toml(tmp_path: Path) -> None:
    config = load(tmp_path, "{ '/' = '/app/', 'http://b/' = '$scheme://$host/' }")
    shown = describe_routing(config)  # type: ignore[arg-type]
    line = next(line for line in shown.splitlines() if "proxy_redirect=" in line)
    value = line.split("proxy_redirect=", 1)[1]
    assert tomllib.loads(f"v = {value}")["v"] == {"/": "/app/", "http://b/": "$scheme://$host/"}


def test_check_config_writes_any_prefix_as_toml_reads_it(tmp_path: Path) -> None:
    """Characters beyond the BMP as they are (JSON's surrogate pairs are no TOML)."""
    config = load(tmp_path, "{ 'http://u/\U0001f600/' = '/app/' }")
    shown = describe_routing(config)  # type: ignore[arg-type]
    value = next(line for line in shown.splitlines() if "proxy_redirect=" in line)
    parsed = tomllib.loads("v = " + value.split("proxy_redirect=", 1)[1])
    assert parsed["v"] == {"http://u/\U0001f600/": "/app/"}


def test_off_is_shown_and_default_is_not(tmp_path: Path) -> None:
    assert 'proxy_redirect="off"' in describe_routing(load(tmp_path, "'off'"))  # type: ignore[arg-type]
    assert "proxy_redirect" not in describe_routing(load(tmp_path, "'Default'"))  # type: ignore[arg-type]
