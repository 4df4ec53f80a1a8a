"""The proxy's pure rules: upstream URLs, path mapping, header rewriting, trust."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import h11
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from twistwsgi.forwarding import (
    DEFAULT_HIDDEN,
    HiddenFields,
    RepeatedFields,
    TrustedProxies,
    forwarded_element,
    parse_upstream,
    request_fields,
    response_fields,
    upgrade_accepted,
    upgrade_protocols,
    upstream_target,
)
from twistwsgi.http.request import PreparedHeaders, RequestHead, Route
from twistwsgi.http.rules import unquote_path
from twistwsgi.routing import path_below, remove_dot_segments


def head(
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: bytes = b"GET",
    peer: tuple[str, int] | None = ("192.0.2.7", 5555),
    scheme: str = "http",
    authority: bytes = b"example.org",
    content_length: int | None = None,
    chunked: bool = False,
) -> RequestHead:
    path, _, query = target.partition(b"?")
    return RequestHead(
        method=method,
        target=target,
        path=path,
        decoded_path=unquote_path(path),
        query=query,
        version=b"1.1",
        headers=headers if headers is not None else [(b"Host", authority)],
        authority=authority,
        content_length=content_length,
        chunked=chunked,
        scheme=scheme,
        peer=peer,
        local=("127.0.0.1", 8080),
    )


def route_for(request: RequestHead, prefix: bytes) -> Route:
    """The route the Router gives ``request`` under the mount ``prefix``."""
    path = remove_dot_segments(request.decoded_path)
    assert path is not None
    return Route(prefix, path_below(path, prefix), None)


def fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Parse header lines with h11 (as the upstream would), names as sent."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: u\r\n" + raw + b"\r\n")
    event = server.next_event()
    assert isinstance(event, h11.Request)
    return [(name, value) for name, value in event.headers.raw_items() if name != b"Host"]


def values(pairs: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in pairs if key.lower() == name]


# -- upstream URLs -------------------------------------------------------------------------


def test_parse_http_upstream_without_path() -> None:
    """A URL without a path has no prefix; the default port is left out of Host."""
    address = parse_upstream("http://backend")
    assert (address.scheme, address.host, address.port) == ("http", "backend", 80)
    assert address.prefix is None
    assert address.host_field == b"backend"
    assert not address.tls


def test_parse_https_upstream_with_port_and_prefix() -> None:
    """An https URL with a port and a path keeps both."""
    address = parse_upstream("https://api.example.org:8443/v2/")
    assert address.tls
    assert address.port == 8443
    assert address.prefix == b"/v2/"
    assert address.host_field == b"api.example.org:8443"


def test_parse_ipv6_upstream() -> None:
    """An IPv6 literal is bracketed in the Host value."""
    address = parse_upstream("http://[::1]:9000")
    assert address.host == "::1"
    assert address.host_field == b"[::1]:9000"


def test_parse_unix_upstream() -> None:
    """A unix: URL names a socket path and sends Host: localhost."""
    address = parse_upstream("unix:/run/app.sock")
    assert address.scheme == "unix"
    assert address.socket_path == "/run/app.sock"
    assert address.host_field == b"localhost"
    assert address.prefix is None


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("unix:/run/app.sock:/v2", b"/v2"),
        ("unix:/run/app.sock:/", b"/"),
        ("unix:/run/app.sock:/a b/é", b"/a%20b/%C3%A9"),
    ],
)
def test_a_unix_upstream_may_name_a_prefix_after_a_colon(url: str, prefix: bytes) -> None:
    """As nginx's http://unix:/run/app.sock:/v2 (a socket's path holds no colon)."""
    address = parse_upstream(url)
    assert (address.socket_path, address.prefix) == ("/run/app.sock", prefix)
    assert address.url == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "unix:relative",
        "http://",
        "unix:/run/app.sock:v2",
        "unix:/run/app.sock:",
        "unix:/run/app.sock:/v2?x=1",
        "unix:/run/app.sock:/v2#top",
        "unix::/v2",
    ],
)
def test_parse_rejects_other_urls(url: str) -> None:
    """Anything but http, https or unix:/path is refused."""
    with pytest.raises(ValueError):
        parse_upstream(url)


# -- path mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mount", "prefix", "target", "expected"),
    [
        (b"/api", None, b"/api/users", b"/api/users"),
        (b"/api", b"/", b"/api/users", b"/users"),
        (b"/api", b"/v2", b"/api/users", b"/v2/users"),
        (b"/api", b"/v2/", b"/api/users", b"/v2/users"),
        (b"/api", b"/v2", b"/api", b"/v2"),
        (b"/api", b"/", b"/api", b"/"),
        (b"/api", b"/v2", b"/api/", b"/v2/"),
        (b"", b"/v2", b"/users", b"/v2/users"),
        (b"", None, b"/users?a=1&b", b"/users?a=1&b"),
        (b"/api", b"/", b"/api/x?", b"/x?"),
        (b"/api", b"/v2", b"/api/a%2Fb?q=%20", b"/v2/a%2Fb?q=%20"),
        # The raw path below the mount goes on as sent (%2F stays %2F, as in GitLab's
        # project ids) also when it does not spell the mount byte for byte: doubled
        # slashes before or in it, or a mount path written in UTF-8.
        (b"/api", None, b"//api/projects/group%2Fproject", b"//api/projects/group%2Fproject"),
        (b"/api", b"/", b"//api/projects/group%2Fproject", b"/projects/group%2Fproject"),
        (b"/v", b"/base/", b"//v/a%2Fb", b"/base/a%2Fb"),
        (b"/a/b", b"/x", b"/a//b//c%3Dd", b"/x//c%3Dd"),
        ("/日本".encode(), b"/jp/", b"/%E6%97%A5%E6%9C%AC/a%2Fb", b"/jp/a%2Fb"),
        ("/日本".encode(), b"/jp/", b"/%e6%97%a5%e6%9c%ac/x%3Dy", b"/jp/x%3Dy"),
        ("/日本".encode(), None, b"/%E6%97%A5%E6%9C%AC/a%2Fb", b"/%E6%97%A5%E6%9C%AC/a%2Fb"),
    ],
)
def test_path_mapping(mount: bytes, prefix: bytes | None, target: bytes, expected: bytes) -> None:
    """Nginx's proxy_pass rule on segment boundaries; raw path and query forwarded."""
    request = head(target)
    assert upstream_target(request, route_for(request, mount), prefix) == expected


def test_dot_segments_are_forwarded_normalised() -> None:
    """A path with dot-segments goes upstream in the normalised form the router used,
    so it cannot climb out of the upstream's prefix.
    """
    request = head(b"/api/../api/%2e%2e/secret")
    route = route_for(request, b"")
    assert upstream_target(request, route, None) == b"/secret"
    request = head(b"/api/x/../y")
    assert upstream_target(request, route_for(request, b"/api"), b"/v2") == b"/v2/y"


def test_unrouted_dot_segments_stay_below_the_prefix() -> None:
    """Without a Router (a handler used on its own) the path is normalised here, and
    one that climbs above the root is refused rather than sent out of the prefix.
    """
    request = head(b"/a/../b/./c")
    assert upstream_target(request, None, b"/v2") == b"/v2/b/c"
    assert upstream_target(request, None, None) == b"/b/c"
    assert upstream_target(head(b"/plain"), None, b"/v2") == b"/v2/plain"
    with pytest.raises(ValueError, match="climbs above the root"):
        upstream_target(head(b"/../admin"), None, b"/v2")
    with pytest.raises(ValueError):
        upstream_target(head(b"/%2e%2e/admin"), None, None)


def test_encoded_prefix_falls_back_to_reencoding() -> None:
    """When the raw path does not start with the mount prefix literally, the decoded
    rest of the path is re-encoded.
    """
    request = head(b"/%61pi/a%20b")
    assert upstream_target(request, route_for(request, b"/api"), b"/v2") == b"/v2/a%20b"


def test_asterisk_form_is_kept() -> None:
    """OPTIONS * goes upstream as * when the upstream has no prefix."""
    request = RequestHead(
        method=b"OPTIONS",
        target=b"*",
        path=b"",
        decoded_path=b"",
        query=b"",
        version=b"1.1",
        headers=[],
        authority=b"x",
        content_length=None,
        chunked=False,
        scheme="http",
        peer=None,
        local=None,
    )
    assert upstream_target(request, Route(b"", b"", None), None) == b"*"


_SEGMENT = st.text(
    alphabet=st.sampled_from(list("abcXYZ019-._~!$&'()*+,;=:@ %é/?")), min_size=0, max_size=8
)


@given(
    segments=st.lists(_SEGMENT, max_size=5),
    mount=st.sampled_from([b"", b"/api", b"/a b"]),
    prefix=st.sampled_from([None, b"/", b"/v2", b"/v2/"]),
)
def test_mapped_path_decodes_to_the_routed_path(
    segments: list[str], mount: bytes, prefix: bytes | None
) -> None:
    """Whatever the client sent, the forwarded path decodes to the upstream prefix
    followed by the path the router matched below the mount.
    """
    from urllib.parse import quote

    raw = (mount + b"/" + "/".join(quote(s, safe="") for s in segments).encode()).replace(
        b" ", b"%20"
    )
    request = head(raw)
    # A path above the root never reaches the proxy: the Router answers it (404).
    assume(remove_dot_segments(request.decoded_path) is not None)
    route = route_for(request, mount)
    forwarded = upstream_target(request, route, prefix)
    assert b"?" not in forwarded
    decoded = unquote_to_bytes(forwarded)
    if prefix is None:
        assert decoded == route.script_name + route.path_info
    elif route.path_info:
        assert decoded == prefix.rstrip(b"/") + route.path_info
    else:
        assert decoded == prefix


# -- request fields ----------------------------------------------------------------------------


def test_hop_by_hop_and_connection_named_fields_are_removed() -> None:
    """Connection, the fields it names, Keep-Alive, TE, Trailer, Upgrade,
    Proxy-Connection and Expect are not forwarded; others keep order and case.
    """
    request = head(
        headers=[
            (b"Host", b"example.org"),
            (b"X-One", b"1"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"x-secret", b"hidden"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-T"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Upgrade", b"websocket"),
            (b"Expect", b"100-continue"),
            (b"accept", b"*/*"),
        ]
    )
    sent = fields(request_fields(request, trusted=False))
    names = [name for name, _ in sent]
    assert names[:2] == [b"X-One", b"accept"]
    for dropped in (
        b"connection",
        b"keep-alive",
        b"x-secret",
        b"te",
        b"trailer",
        b"proxy-connection",
        b"upgrade",
        b"expect",
    ):
        assert not values(sent, dropped), dropped


def test_repeated_fields_are_kept_separately() -> None:
    """Repeated request fields (Cookie, Accept) go upstream as separate lines, in order."""
    request = head(
        headers=[
            (b"Host", b"example.org"),
            (b"Cookie", b"a=1"),
            (b"Accept", b"text/html"),
            (b"Cookie", b"b=2"),
        ]
    )
    sent = fields(request_fields(request, trusted=False))
    assert values(sent, b"cookie") == [b"a=1", b"b=2"]


def test_framing_is_redeclared() -> None:
    """Content-Length is re-declared as received; a chunked body stays chunked."""
    request = head(headers=[(b"Content-Length", b"5")], content_length=5, method=b"POST")
    assert values(fields(request_fields(request, trusted=False)), b"content-length")
    request = head(headers=[(b"Transfer-Encoding", b"chunked")], chunked=True, method=b"POST")
    sent = fields(request_fields(request, trusted=False))
    assert values(sent, b"transfer-encoding") == [b"chunked"]


def test_upgrade_is_passed_on_when_asked() -> None:
    """An upgrade request keeps Upgrade and says Connection: upgrade."""
    request = head(
        headers=[(b"Host", b"x"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    )
    sent = fields(request_fields(request, trusted=False, upgrade=upgrade_protocols(request)))
    assert values(sent, b"upgrade") == [b"websocket"]
    assert values(sent, b"connection") == [b"upgrade"]


def test_special_context_is_asked_only_for_special_fields() -> None:
    """when_special is called only for hop-by-hop or forwarding fields, and then decides.

    Without such a field the lines are those of trusted=False, upgrade=() (neither can
    matter); with one, the context's trust and upgrade are used as the arguments would be.
    """
    asked: list[bool] = []

    def context(trusted: bool, upgrade: list[bytes]) -> Callable[[], tuple[bool, list[bytes]]]:
        def special() -> tuple[bool, list[bytes]]:
            asked.append(True)
            return trusted, upgrade

        return special

    plain = head(headers=[(b"Host", b"x"), (b"Accept", b"*/*")])
    assert request_fields(plain, when_special=context(True, [b"websocket"])) == request_fields(
        plain, trusted=False
    )
    assert asked == []
    upgrading = head(
        headers=[(b"Host", b"x"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    )
    sent = fields(request_fields(upgrading, when_special=context(False, [b"websocket"])))
    assert asked == [True]
    assert values(sent, b"upgrade") == [b"websocket"]
    assert values(sent, b"connection") == [b"upgrade"]
    forwarded = head(headers=[(b"Host", b"x"), (b"X-Forwarded-For", b"203.0.113.9")])
    for trusted in (False, True):
        assert request_fields(forwarded, when_special=context(trusted, [])) == request_fields(
            forwarded, trusted=trusted
        )


def test_forwarding_fields_from_an_untrusted_client_are_replaced() -> None:
    """Spoofed X-Forwarded-*, Forwarded and X-Real-IP from an untrusted client are
    dropped and replaced with what the proxy saw.
    """
    request = head(
        headers=[
            (b"Host", b"example.org"),
            (b"X-Forwarded-For", b"6.6.6.6"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"evil"),
            (b"Forwarded", b"for=6.6.6.6"),
            (b"X-Real-IP", b"6.6.6.6"),
        ]
    )
    sent = fields(request_fields(request, trusted=False))
    assert values(sent, b"x-forwarded-for") == [b"192.0.2.7"]
    assert values(sent, b"x-forwarded-proto") == [b"http"]
    assert values(sent, b"x-forwarded-host") == [b"example.org"]
    assert values(sent, b"forwarded") == [b"for=192.0.2.7;host=example.org;proto=http"]
    assert not values(sent, b"x-real-ip")


@pytest.mark.parametrize("trusted", [False, True])
def test_underscore_spellings_of_forwarding_fields_are_dropped(trusted: bool) -> None:
    """X-Forwarded_For and X_Real_IP would reach a CGI-style upstream as the real
    HTTP_X_FORWARDED_FOR and HTTP_X_REAL_IP: they are never passed on. Other fields
    with underscores are the upstream's business and pass.
    """
    request = head(
        headers=[
            (b"Host", b"example.org"),
            (b"X-Forwarded_For", b"6.6.6.6"),
            (b"X_Real_IP", b"6.6.6.6"),
            (b"x_forwarded_proto", b"https"),
            (b"My_Header", b"kept"),
        ]
    )
    sent = fields(request_fields(request, trusted=trusted))
    names = [name.lower() for name, _ in sent]
    assert b"my_header" in names
    assert not [name for name in names if b"_" in name and name != b"my_header"]
    assert values(sent, b"x-forwarded-for") == [b"192.0.2.7"]
    assert values(sent, b"x-forwarded-proto") == [b"http"]
    assert not values(sent, b"x-real-ip")


def test_forwarding_fields_from_a_trusted_proxy_are_extended() -> None:
    """From a trusted proxy, X-Forwarded-For and Forwarded get this hop appended and
    the incoming proto and host are kept.
    """
    request = head(
        headers=[
            (b"Host", b"example.org"),
            (b"X-Forwarded-For", b"203.0.113.1"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"public.example"),
            (b"Forwarded", b"for=203.0.113.1;proto=https"),
            (b"X-Real-IP", b"203.0.113.1"),
        ],
    )
    sent = fields(request_fields(request, trusted=True))
    assert values(sent, b"x-forwarded-for") == [b"203.0.113.1, 10.0.0.1, 192.0.2.7"]
    assert values(sent, b"x-forwarded-proto") == [b"https"]
    assert values(sent, b"x-forwarded-host") == [b"public.example"]
    assert values(sent, b"forwarded") == [
        b"for=203.0.113.1;proto=https, for=192.0.2.7;host=example.org;proto=http"
    ]
    assert values(sent, b"x-real-ip") == [b"203.0.113.1"]


def test_the_proto_and_host_a_trusted_proxy_wrote_are_its_last_values() -> None:
    """A proxy that appends to X-Forwarded-Proto and -Host puts its own value last; one
    before it may be the client's. The last is passed on, alone.
    """
    request = head(
        headers=[
            (b"Host", b"example.org"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"forged.example, public.example"),
            (b"X-Forwarded-Proto", b"gopher, http"),
        ],
    )
    sent = fields(request_fields(request, trusted=True))
    assert values(sent, b"x-forwarded-proto") == [b"http"]
    assert values(sent, b"x-forwarded-host") == [b"public.example"]


def test_forwarded_for_ipv6_and_unknown() -> None:
    """RFC 7239 6: IPv6 nodes are bracketed and quoted; a UNIX-socket client is unknown."""
    assert forwarded_element("2001:db8::1", b"h:8080", "https") == (
        b'for="[2001:db8::1]";host="h:8080";proto=https'
    )
    assert forwarded_element(None, b"", "http") == b"for=unknown;proto=http"
    request = head(peer=None)
    sent = fields(request_fields(request, trusted=False))
    assert not values(sent, b"x-forwarded-for")
    assert values(sent, b"forwarded") == [b"for=unknown;host=example.org;proto=http"]


@pytest.mark.parametrize("special", [False, True])
def test_a_link_local_clients_zone_is_not_forwarded(special: bool) -> None:
    """fe80::1%eth0: the zone names this host's interface; RFC 7239 6 has no place
    for it, and X-Forwarded-For gets the address alone too.
    """
    headers = [(b"X-Forwarded-For", b"203.0.113.1")] if special else []
    request = head(peer=("fe80::1%eth0", 5000), headers=headers)
    sent = fields(request_fields(request, trusted=False))
    assert values(sent, b"x-forwarded-for") == [b"fe80::1"]
    assert values(sent, b"forwarded") == [b'for="[fe80::1]";host=example.org;proto=http']


# -- response fields ----------------------------------------------------------------------------


def test_response_hop_by_hop_removed_and_set_cookie_kept() -> None:
    """Hop-by-hop response fields and those Connection names are removed;
    Set-Cookie lines pass unmerged and in order.
    """
    kept = response_fields(
        [
            (b"Set-Cookie", b"a=1; Path=/"),
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"secret"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Set-Cookie", b"b=2, c=3"),
            (b"Content-Type", b"text/plain"),
        ]
    )
    assert kept == [
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"Set-Cookie", b"b=2, c=3"),
        (b"Content-Type", b"text/plain"),
    ]


# -- trust ----------------------------------------------------------------------------------------


def test_trusted_proxies_by_cidr() -> None:
    """Addresses inside a configured network are trusted, others and None are not;
    IPv4-mapped IPv6 addresses count as their IPv4 address.
    """
    trusted = TrustedProxies(["10.0.0.0/8", "::1"])
    assert trusted.trusts("10.1.2.3")
    assert trusted.trusts("::1")
    assert trusted.trusts("::ffff:10.0.0.5")
    assert not trusted.trusts("192.0.2.1")
    assert not trusted.trusts(None)
    assert not trusted.trusts("not an address")
    assert not TrustedProxies([]).trusts("10.1.2.3")


@given(st.ip_addresses(v=4))
def test_trust_matches_ipaddress(address: object) -> None:
    """The cached verdict is the ipaddress module's membership test."""
    import ipaddress

    trusted = TrustedProxies(["172.16.0.0/12"])
    expected = ipaddress.ip_address(str(address)) in ipaddress.ip_network("172.16.0.0/12")
    assert trusted.trusts(str(address)) is expected
    assert trusted.trusts(str(address)) is expected  # from the cache


def test_unix_sockets_are_trusted_only_when_configured() -> None:
    """``unix:`` trusts clients without an address (UNIX sockets), and nothing else."""
    assert not TrustedProxies(["10.0.0.0/8"]).trusts(None)
    trusted = TrustedProxies(["unix:"])
    assert trusted and trusted.trusts(None)
    assert not trusted.trusts("10.1.2.3")
    both = TrustedProxies(["10.0.0.0/8", "unix:"])
    assert both.trusts(None) and both.trusts("10.1.2.3") and not both.trusts("192.0.2.1")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([(b"Upgrade", b"websocket")], [b"websocket"]),
        (
            [(b"upgrade", b"h2c, WebSocket"), (b"Upgrade", b" IRC/6.9 ,")],
            [b"WebSocket", b"IRC/6.9"],
        ),
        ([(b"Upgrade", b"h2c"), (b"Upgrade", b"H2C/1")], []),
        ([(b"Upgrade", b", ,")], []),
        ([], []),
    ],
)
def test_upgrade_protocols_leave_out_h2c(
    fields: list[tuple[bytes, bytes]], expected: list[bytes]
) -> None:
    """List members in order (RFC 9110 5.6.1: empty ones ignored), h2c never."""
    assert upgrade_protocols(head(headers=fields)) == expected


@pytest.mark.parametrize(
    ("requested", "answered", "accepted"),
    [
        ([b"websocket"], [(b"Upgrade", b"websocket")], True),
        ([b"websocket"], [(b"upgrade", b"WebSocket")], True),
        ([b"HTTP/2.0", b"IRC/6.9"], [(b"Upgrade", b"IRC/6.9")], True),
        ([b"websocket"], [(b"Upgrade", b"websocket, h2c")], False),
        ([b"websocket"], [(b"Upgrade", b"IRC/6.9")], False),
        ([b"IRC/6.9"], [(b"Upgrade", b"IRC/7")], False),
        ([b"websocket"], [], False),
    ],
)
def test_upgrade_accepted_only_for_offered_protocols(
    requested: list[bytes], answered: list[tuple[bytes, bytes]], accepted: bool
) -> None:
    """RFC 9110 7.8: a 101 may only name protocols the request offered."""
    assert upgrade_accepted(requested, answered) is accepted


@pytest.mark.parametrize("common", [b"keep-alive", b"Keep-Alive", b"close", b"Close"])
def test_a_common_connection_value_goes_with_what_another_line_names(common: bytes) -> None:
    """``Connection: keep-alive`` (or ``close``) is dropped with the Keep-Alive field;
    what a second Connection line names is dropped too, before it or after.
    """
    fields = [
        (b"Connection", common),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Internal", b"secret"),
        (b"Content-Length", b"2"),
    ]
    named = (b"Connection", b"X-Internal")
    assert response_fields([*fields, named]) == [(b"Content-Length", b"2")]
    assert response_fields([named, *fields]) == [(b"Content-Length", b"2")]
    assert response_fields(fields) == [(b"X-Internal", b"secret"), (b"Content-Length", b"2")]


def test_response_fields_keep_upgrade_only_in_a_426() -> None:
    """RFC 9110 15.5.22: a 426 names the protocols in Upgrade, in its place;
    elsewhere Upgrade is hop-by-hop.
    """
    fields = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"X-A", b"1")]
    assert response_fields(fields, 426) == [(b"Upgrade", b"websocket"), (b"X-A", b"1")]
    assert response_fields(fields, 200) == [(b"X-A", b"1")]


def test_hidden_response_fields_are_left_out_in_any_case() -> None:
    """The hidden names go, whatever their case, with the hop-by-hop ones; a name of
    the same length that is not hidden stays.
    """
    hidden = HiddenFields([*DEFAULT_HIDDEN, b"x-powered-by"])
    fields = [
        (b"Server", b"gunicorn/20.1"),
        (b"DATE", b"Mon, 01 Jan 2001 00:00:00 GMT"),
        (b"X-Pad", b"avoid browser bug"),
        (b"x-Powered-By", b"PHP/8"),
        (b"X-Powered-Ax", b"kept"),
        (b"Vary", b"Accept"),  # a length looked at, not hidden
        (b"Connection", b"X-Other"),
        (b"X-Other", b"named by Connection"),
        (b"Set-Cookie", b"a=1"),
    ]
    assert response_fields(fields, 200, hidden) == [
        (b"X-Powered-Ax", b"kept"),
        (b"Vary", b"Accept"),
        (b"Set-Cookie", b"a=1"),
    ]
    assert response_fields(fields[:2], 200) == fields[:2]  # nothing hidden by default here


def test_watched_response_fields_are_noted_hidden_or_not() -> None:
    """A proxy mount learns from the one scan which of the fields it acts on came
    (in any case), whether they are passed on or hidden; nothing else is noted.
    """
    hidden = HiddenFields([b"date", b"x-accel-limit-rate"], [b"location", b"x-accel-limit-rate"])
    fields = [
        (b"LOCATION", b"http://upstream/x"),
        (b"Date", b"Mon, 01 Jan 2001 00:00:00 GMT"),
        (b"X-Accel-Limit-Rate", b"100"),
        (b"Refresh", b"0; url=/"),
        (b"Connection", b"keep-alive"),
    ]
    seen: set[bytes] = set()
    kept = response_fields(fields, 200, hidden, seen)
    assert kept == [(b"LOCATION", b"http://upstream/x"), (b"Refresh", b"0; url=/")]
    assert seen == {b"location", b"x-accel-limit-rate"}
    seen.clear()
    response_fields(fields[3:], 200, hidden, seen)
    assert seen == set()


_SOME_NAMES = [b"location", b"refresh", b"x-accel-limit-rate", b"date", b"x-pad", b"via"]


@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from([*_SOME_NAMES, b"connection"]).flatmap(
                lambda name: st.sampled_from([name, name.upper(), name.title()])
            ),
            st.sampled_from([b"x", b"location", b"close, refresh", b"keep-alive"]),
        ),
        max_size=8,
    ),
    hidden=st.sets(st.sampled_from(_SOME_NAMES)),
    watched=st.sets(st.sampled_from(_SOME_NAMES)),
)
def test_every_watched_field_that_came_is_noted(
    fields: list[tuple[bytes, bytes]], hidden: set[bytes], watched: set[bytes]
) -> None:
    """What the proxy skips rewriting or pacing for must really be absent: each
    watched name present in any case is noted, hidden, passed on, or named by
    Connection; and the fields kept are those kept without watching.
    """
    seen: set[bytes] = set()
    kept = response_fields(fields, 200, HiddenFields(hidden, watched), seen)
    assert seen == {name.lower() for name, _ in fields} & watched
    assert kept == response_fields(fields, 200, HiddenFields(hidden))


def test_trusted_proxies_given_one_string_say_so() -> None:
    """A lone string was iterated character by character: "'1' does not appear to be
    an IPv4 or IPv6 network" pointed away from the mistake.
    """
    with pytest.raises(TypeError, match="a sequence of addresses or networks, not one string"):
        TrustedProxies("10.0.0.1")


def test_repeated_fields_are_prepared_once_they_repeat() -> None:
    """The same fields again come back as one PreparedHeaders, reused while they repeat."""
    memo = RepeatedFields()
    first = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"13")]
    assert memo.reuse(first) is first
    second = memo.reuse(list(first))
    assert type(second) is PreparedHeaders
    assert second == first
    assert memo.reuse(list(first)) is second
    # Other fields pass as they are, and are the ones remembered from then on.
    other = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"14")]
    assert memo.reuse(other) is other
    assert memo.reuse([*first]) == first
    assert type(memo.reuse([*first])) is PreparedHeaders
    assert memo.reuse([]) == []


def test_repeated_answers_give_the_fields_relayed_for_them() -> None:
    """The same answer and status give the fields relayed for it, when reuse
    was told response_fields alone made them; nothing otherwise.
    """
    memo = RepeatedFields()
    answer = [(b"Server", b"u"), (b"Content-Length", b"2")]
    kept = [(b"Content-Length", b"2")]
    assert memo.relayed(list(answer), 200) is None
    memo.reuse(kept, answer, 200)
    relayed = memo.relayed(list(answer), 200)
    assert type(relayed) is PreparedHeaders
    assert relayed == kept
    assert memo.relayed(list(answer), 200) is relayed
    assert memo.reuse(list(kept), list(answer), 200) is relayed  # (the same fields again)
    assert memo.relayed(list(answer), 404) is None
    assert memo.relayed([*answer, (b"X-Other", b"1")], 200) is None
    # Fields something else changed or chose stand for no answer.
    memo.reuse(kept, None, 200)
    assert memo.relayed(list(answer), 200) is None
