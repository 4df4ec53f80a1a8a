"""The PEP 3333 environ built by ``twistwsgi.environ`` from a hand-built
:class:`RequestHead`: CGI key names, ``SERVER_NAME``/``SERVER_PORT``, the latin-1
round trip and the fallbacks for HTTP/1.0 and UNIX sockets. ``wsgiref.validate``'s
``check_environ`` is used as an independent PEP 3333 check.
"""

from __future__ import annotations

import io
import string
import warnings
from typing import Any
from urllib.parse import quote, urlsplit
from wsgiref.validate import check_environ  # type: ignore[attr-defined]  # not in typeshed

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi import environ as environ_module
from twistwsgi.environ import build_environ, environ_key, split_authority
from twistwsgi.http.request import Address, RequestHead

BASE: dict[str, Any] = {
    "wsgi.version": (1, 0),
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "SERVER_SOFTWARE": "twistwsgi",
}


def make_request(
    *,
    method: bytes = b"GET",
    target: bytes = b"/",
    query: bytes = b"",
    version: bytes = b"1.1",
    headers: list[tuple[bytes, bytes]] | None = None,
    authority: bytes = b"example.com",
    scheme: str = "http",
    peer: Address | None = ("192.0.2.7", 51000),
    local: Address | None = ("198.51.100.1", 8080),
) -> RequestHead:
    """A RequestHead as the protocol would build it, with overridable facts."""
    path = target.partition(b"?")[0]
    if headers is None:
        headers = [(b"Host", authority)] if authority else []
    return RequestHead(
        method=method,
        target=target,
        path=path,
        decoded_path=path,
        query=query,
        version=version,
        headers=headers,
        authority=authority,
        content_length=None,
        chunked=False,
        scheme=scheme,
        peer=peer,
        local=local,
    )


def environ_for(
    request: RequestHead,
    *,
    script_name: bytes = b"",
    path_info: bytes | None = None,
    trusted: bool = False,
) -> dict[str, Any]:
    """Build the environ for ``request``, PATH_INFO defaulting to its path."""
    return build_environ(
        request,
        script_name=script_name,
        path_info=request.decoded_path if path_info is None else path_info,
        base=BASE,
        trusted=trusted,
    )


def validate(environ: dict[str, Any]) -> None:
    """Run wsgiref's PEP 3333 environ check, with its warnings as errors."""
    complete = dict(environ, **{"wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_environ(complete)


# -- environ_key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        (b"Host", "HTTP_HOST"),
        (b"host", "HTTP_HOST"),
        (b"User-Agent", "HTTP_USER_AGENT"),
        (b"X-Forwarded-For", "HTTP_X_FORWARDED_FOR"),
        (b"x-real-ip", "HTTP_X_REAL_IP"),
        (b"Content-Type", "CONTENT_TYPE"),
        (b"content-length", "CONTENT_LENGTH"),
        (b"CONTENT-LENGTH", "CONTENT_LENGTH"),
        (b"Content-MD5", "HTTP_CONTENT_MD5"),
        (b"Accept", "HTTP_ACCEPT"),
    ],
)
def test_environ_key_cgi_mapping(name: bytes, key: str) -> None:
    """RFC 3875 4.1.18: ``HTTP_`` + the name upper-cased with "-" as "_";
    Content-Type and Content-Length become CONTENT_TYPE/CONTENT_LENGTH (PEP 3333).
    """
    assert environ_key(name) == key
    assert environ_key(name) == key  # again, from the cache


@pytest.mark.parametrize(
    "name", [b"X_Real_IP", b"x_forwarded_for", b"Content_Type", b"Content_Length", b"_", b"a_"]
)
def test_environ_key_drops_underscore_names(name: bytes) -> None:
    """Names with "_" are dropped (None), so they cannot pose as the "-" spelling a
    front proxy sets; the cached answer stays None.
    """
    assert environ_key(name) is None
    assert environ_key(name) is None


_TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"


def reference_key(name: str) -> str | None:
    """The environ key for ``name``, written from RFC 3875 4.1.18 and PEP 3333."""
    if "_" in name:
        return None
    cgi = name.upper().replace("-", "_")
    if cgi in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return cgi
    return "HTTP_" + cgi


@given(st.text(_TCHAR, min_size=1, max_size=30))
def test_environ_key_matches_reference(name: str) -> None:
    """For any field name (RFC 9110 5.6.2 token), the first and the cached answer
    both equal the reference mapping.
    """
    raw = name.encode("ascii")
    assert environ_key(raw) == reference_key(name)
    assert environ_key(raw) == reference_key(name)


def test_environ_key_past_the_cache_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the name cache is full, names outside it still map correctly."""
    monkeypatch.setattr(environ_module, "_KEY_CACHE", {})
    monkeypatch.setattr(environ_module, "_KEY_CACHE_LIMIT", 2)
    names = ["Accept", "X_Bad", "Content-Type", "X-One", "Y_Two", "Content-Length"]
    for _ in range(2):
        for name in names:
            assert environ_key(name.encode("ascii")) == reference_key(name)


# -- split_authority ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "scheme", "server"),
    [
        (b"example.com", "http", ("example.com", "80")),
        (b"example.com", "https", ("example.com", "443")),
        (b"Example.COM:8080", "http", ("example.com", "8080")),
        (b"example.com:8443", "https", ("example.com", "8443")),
        (b"example.com:", "http", ("example.com", "80")),
        (b"example.com:", "https", ("example.com", "443")),
        (b"127.0.0.1:81", "http", ("127.0.0.1", "81")),
        (b"[::1]", "http", ("[::1]", "80")),
        (b"[::1]:8443", "https", ("[::1]", "8443")),
        (b"[FE80::1]:8080", "http", ("[fe80::1]", "8080")),
        (b"[::1]:", "https", ("[::1]", "443")),
    ],
)
def test_split_authority(authority: bytes, scheme: str, server: tuple[str, str]) -> None:
    """Host and port split at the last colon outside IPv6 brackets, name lower-cased
    (RFC 3986 3.2.2), port defaulting to the scheme's when absent or empty (RFC 3986
    3.2.3).
    """
    assert split_authority(authority, scheme) == server
    assert split_authority(authority, scheme) == server  # again, from the cache


def test_split_authority_cache_is_per_scheme() -> None:
    """The same authority gives each scheme its own default port, in either order."""
    assert split_authority(b"cache-order.example", "https") == ("cache-order.example", "443")
    assert split_authority(b"cache-order.example", "http") == ("cache-order.example", "80")
    assert split_authority(b"cache-order.example", "https") == ("cache-order.example", "443")


def test_split_authority_empty() -> None:
    """An empty authority (HTTP/1.0 without Host) gives None."""
    assert split_authority(b"", "http") is None
    assert split_authority(b"", "https") is None


# -- build_environ --------------------------------------------------------------------


def test_build_environ_has_every_pep3333_key() -> None:
    """Every CGI key PEP 3333 lists is set from the request, as a native string,
    base keys are copied, and wsgiref's check_environ accepts the result.
    """
    request = make_request(
        method=b"POST",
        target=b"/app/items?x=1&y=%20",
        query=b"x=1&y=%20",
        headers=[
            (b"Host", b"example.com:8080"),
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", b"5"),
            (b"User-Agent", b"test/1"),
        ],
        authority=b"example.com:8080",
    )
    environ = environ_for(request, script_name=b"/app", path_info=b"/items")
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == "/items"
    assert environ["QUERY_STRING"] == "x=1&y=%20"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "5"
    assert environ["SERVER_NAME"] == "example.com"
    assert environ["SERVER_PORT"] == "8080"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["HTTP_HOST"] == "example.com:8080"
    assert environ["HTTP_USER_AGENT"] == "test/1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["REQUEST_URI"] == environ["RAW_URI"] == "/app/items?x=1&y=%20"
    assert environ["REMOTE_ADDR"] == "192.0.2.7"
    assert environ["REMOTE_PORT"] == "51000"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ
    for key, value in BASE.items():
        assert environ[key] == value
    validate(environ)


def test_build_environ_leaves_base_alone() -> None:
    """The base mapping is copied, not modified, and each environ is a new dict."""
    base = dict(BASE)
    request = make_request()
    first = build_environ(request, script_name=b"", path_info=b"/", base=base)
    second = build_environ(request, script_name=b"", path_info=b"/", base=base)
    assert base == BASE
    assert first is not second
    first["HTTP_X"] = "changed"
    assert "HTTP_X" not in second


def test_build_environ_https_and_http10() -> None:
    """wsgi.url_scheme follows the connection's scheme; an HTTP/1.0 request says
    HTTP/1.0 in SERVER_PROTOCOL; the https default port is 443.
    """
    environ = environ_for(make_request(scheme="https", version=b"1.0"))
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "443")
    validate(environ)


def test_repeated_headers_are_joined_with_commas() -> None:
    """RFC 9110 5.3: field lines with the same name (in any case) combine into one
    comma-separated value, in order; other fields are not disturbed.
    """
    request = make_request(
        headers=[
            (b"Host", b"example.com"),
            (b"Accept", b"text/html"),
            (b"X-Trace", b"1"),
            (b"accept", b"application/json"),
            (b"ACCEPT", b"*/*"),
        ]
    )
    environ = environ_for(request)
    assert environ["HTTP_ACCEPT"] == "text/html,application/json,*/*"
    assert environ["HTTP_X_TRACE"] == "1"


def test_underscore_header_does_not_reach_or_merge_into_the_dash_key() -> None:
    """``X_Forwarded_For`` is dropped: it neither appears nor joins the value of
    ``X-Forwarded-For`` (the header spoofing that nginx and gunicorn also prevent),
    even from a trusted proxy.
    """
    request = make_request(
        headers=[
            (b"Host", b"example.com"),
            (b"X_Forwarded_For", b"6.6.6.6"),
            (b"X-Forwarded-For", b"192.0.2.1"),
        ]
    )
    environ = environ_for(request, trusted=True)
    assert environ["HTTP_X_FORWARDED_FOR"] == "192.0.2.1"
    assert not any("6.6.6.6" in str(value) for value in environ.values())


def test_absolute_form_authority_overrides_host() -> None:
    """RFC 9112 3.2.2: with an absolute-form target, its authority replaces the
    Host field, in HTTP_HOST and in SERVER_NAME/SERVER_PORT.
    """
    request = make_request(
        target=b"http://a.example:8081/x",
        headers=[(b"Host", b"b.example")],
        authority=b"a.example:8081",
    )
    environ = environ_for(request, path_info=b"/x")
    assert environ["HTTP_HOST"] == "a.example:8081"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("a.example", "8081")
    assert environ["REQUEST_URI"] == "http://a.example:8081/x"


def test_server_name_falls_back_to_the_local_address() -> None:
    """An HTTP/1.0 request without Host has no HTTP_HOST; SERVER_NAME/SERVER_PORT
    come from the listening socket's address (PEP 3333 "URL Reconstruction").
    """
    request = make_request(version=b"1.0", authority=b"", local=("198.51.100.1", 8080))
    environ = environ_for(request)
    assert "HTTP_HOST" not in environ
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("198.51.100.1", "8080")
    validate(environ)


def test_unix_socket_peer_and_local() -> None:
    """On a UNIX socket (no peer address) REMOTE_ADDR is empty and REMOTE_PORT
    absent; SERVER_NAME and SERVER_PORT stay set.
    """
    request = make_request(peer=None, local=None)
    environ = environ_for(request)
    assert environ["REMOTE_ADDR"] == ""
    assert "REMOTE_PORT" not in environ
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "80")
    validate(environ)


def test_unix_socket_without_host_still_has_a_server_port() -> None:
    """PEP 3333: "SERVER_NAME and SERVER_PORT are required strings and must never
    be empty" (RFC 3875 4.1.15: server-port = 1*digit), also for an HTTP/1.0
    request without Host on a UNIX socket.
    """
    request = make_request(version=b"1.0", authority=b"", peer=None, local=None)
    environ = environ_for(request)
    assert environ["SERVER_NAME"]
    assert environ["SERVER_PORT"].isdigit()


def reconstruct_url(environ: dict[str, Any]) -> str:
    """The URL reconstruction algorithm from PEP 3333, verbatim."""
    url: str = environ["wsgi.url_scheme"] + "://"
    if environ.get("HTTP_HOST"):
        url += environ["HTTP_HOST"]
    else:
        url += environ["SERVER_NAME"]
        if environ["wsgi.url_scheme"] == "https":
            if environ["SERVER_PORT"] != "443":
                url += ":" + environ["SERVER_PORT"]
        elif environ["SERVER_PORT"] != "80":
            url += ":" + environ["SERVER_PORT"]
    url += quote(environ.get("SCRIPT_NAME", ""))
    url += quote(environ.get("PATH_INFO", ""))
    if environ.get("QUERY_STRING"):
        url += "?" + environ["QUERY_STRING"]
    return url


@pytest.mark.parametrize(
    ("authority", "local", "host", "port"),
    [
        (b"example.com:8080", ("198.51.100.1", 80), "example.com", 8080),
        (b"[2001:db8::1]:8443", ("198.51.100.1", 80), "2001:db8::1", 8443),
        (b"", ("198.51.100.1", 8080), "198.51.100.1", 8080),
        (b"", ("2001:db8::2", 8080), "2001:db8::2", 8080),
        (b"", ("::1", 80), "::1", None),
    ],
)
def test_pep3333_url_reconstruction(
    authority: bytes, local: Address, host: str, port: int | None
) -> None:
    """PEP 3333's URL reconstruction gives a URL naming the server's host and port,
    also when SERVER_NAME comes from an IPv6 local address (RFC 3875 4.1.14:
    server-name is hostname | ipv4-address | "[" ipv6-address "]").
    """
    request = make_request(version=b"1.0", target=b"/p", authority=authority, local=local)
    environ = environ_for(request)
    url = urlsplit(reconstruct_url(environ))
    assert url.hostname == host
    assert url.port == port
    assert url.path == "/p"


@given(
    path_info=st.binary(max_size=40),
    query=st.binary(max_size=40),
    value=st.binary(max_size=40),
    target=st.binary(max_size=40),
)
def test_latin1_round_trip(path_info: bytes, query: bytes, value: bytes, target: bytes) -> None:
    """PEP 3333 "Unicode Issues": every environ string is the request's bytes
    decoded as latin-1, so ``.encode("latin-1")`` gives the original bytes back.
    """
    request = make_request(
        target=target,
        query=query,
        headers=[(b"Host", b"example.com"), (b"X-Value", value), (b"Referer", value)],
    )
    environ = environ_for(request, path_info=b"/" + path_info, script_name=b"/s" + path_info)
    assert environ["PATH_INFO"].encode("latin-1") == b"/" + path_info
    assert environ["SCRIPT_NAME"].encode("latin-1") == b"/s" + path_info
    assert environ["QUERY_STRING"].encode("latin-1") == query
    assert environ["HTTP_X_VALUE"].encode("latin-1") == value
    assert environ["HTTP_REFERER"].encode("latin-1") == value
    assert environ["REQUEST_URI"].encode("latin-1") == target
    for key, item in environ.items():
        if "." not in key:
            assert type(item) is str, key


# -- forwarding fields and trusted proxies ------------------------------------------------

FORWARDING = [
    (b"X-Forwarded-For", b"203.0.113.9"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Host", b"shop.example"),
    (b"X-Forwarded-Port", b"443"),
    (b"X-Forwarded-Prefix", b"/shop"),
    (b"X-Real-IP", b"203.0.113.9"),
    (b"Forwarded", b"for=203.0.113.9;proto=https"),
]


def test_forwarding_fields_from_an_untrusted_client_are_dropped() -> None:
    """A client's X-Forwarded-* or Forwarded is its own claim: the application (or a
    ProxyFix in it) must not take it for a proxy's, and the scheme stays the socket's.
    """
    request = make_request(headers=[(b"Host", b"example.com"), *FORWARDING])
    environ = environ_for(request)
    assert not [key for key in environ if "FORWARDED" in key or key == "HTTP_X_REAL_IP"]
    assert environ["wsgi.url_scheme"] == "http"
    validate(environ)


def test_forwarding_fields_from_a_trusted_proxy_reach_the_app() -> None:
    """From a trusted proxy every field is passed on and X-Forwarded-Proto sets the
    scheme, and with it the default SERVER_PORT (gunicorn's forwarded_allow_ips).
    """
    request = make_request(headers=[(b"Host", b"shop.example"), *FORWARDING])
    environ = environ_for(request, trusted=True)
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
    assert environ["HTTP_X_REAL_IP"] == "203.0.113.9"
    assert environ["HTTP_FORWARDED"] == "for=203.0.113.9;proto=https"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["SERVER_PORT"] == "443"
    validate(environ)


@pytest.mark.parametrize(
    ("fields", "scheme"),
    [
        ([(b"X-Forwarded-Proto", b"HTTPS")], "https"),
        ([(b"X-Forwarded-Proto", b"http, https")], "https"),
        # The value the trusted proxy appended is the last: one before it may be the
        # client's own (as gunicorn, which refuses contradictory values, or ProxyFix).
        ([(b"X-Forwarded-Proto", b"https, http")], "http"),
        ([(b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Proto", b"http")], "http"),
        ([(b"X-Forwarded-Proto", b"http")], "http"),
        ([(b"X-Forwarded-Proto", b"gopher")], "http"),  # not a scheme of ours: ignored
        ([(b"Forwarded", b'for=1.2.3.4;proto="https", for=5.6.7.8;proto=http')], "http"),
        ([(b"Forwarded", b"for=1.2.3.4;proto=http, for=5.6.7.8;proto=https")], "https"),
        ([(b"Forwarded", b"for=1.2.3.4;proto=https"), (b"Forwarded", b"for=5.6.7.8")], "http"),
        ([(b"Forwarded", b"for=1.2.3.4")], "http"),
        (
            [(b"X-Forwarded-Proto", b"http"), (b"Forwarded", b"proto=https")],
            "http",  # X-Forwarded-Proto first, as gunicorn and ProxyFix read it
        ),
    ],
)
def test_the_scheme_a_trusted_proxy_reports(fields: list[tuple[bytes, bytes]], scheme: str) -> None:
    """The last value, the one the trusted proxy wrote, decides; anything but http or
    https is ignored.
    """
    request = make_request(headers=[(b"Host", b"example.com"), *fields])
    assert environ_for(request, trusted=True)["wsgi.url_scheme"] == scheme
