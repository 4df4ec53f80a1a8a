"""Return mounts (nginx's ``return``): redirects, fixed bodies, errors and 444.

The value's reading is pure logic, tested as such (with a property: what
``--check-config`` prints reads back as the same answer); the answers go through
the routing table a configuration file builds, as raw request bytes with h11
reading them; once a real server and curl follow a host's redirect to another.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import alsoProvides

from tests.live import port_of, serve_live
from twistwsgi import cli
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.fixed_response import REDIRECT_STATUSES, ReturnSpec, parse_return
from twistwsgi.http.protocol import LINGER_TIMEOUT
from twistwsgi.http.settings import HttpSettings
from twistwsgi.log_format import logged_status
from twistwsgi.routing import Router, RoutingTable
from twistwsgi.service import standard_builders
from twistwsgi.site import SiteBuilder, describe_routing
from twistwsgi.testing import (
    Connection,
    ParsedResponse,
    QueueingPool,
    SynchronousReactorThreads,
    connect,
    parse_responses,
)

# -- reading the value ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("301 https://example.com$request_uri", ReturnSpec(301, "https://example.com$request_uri")),
        ("308 /new", ReturnSpec(308, "/new")),
        ("  302   https://a.test/x  \n", ReturnSpec(302, "https://a.test/x")),
        # nginx: a URL alone is a 302 when it starts with one of these.
        ("https://a.test$request_uri", ReturnSpec(302, "https://a.test$request_uri")),
        ("http://a.test/", ReturnSpec(302, "http://a.test/")),
        ("$scheme://a.test$request_uri", ReturnSpec(302, "$scheme://a.test$request_uri")),
        # Braces as everywhere (twistwsgi.templates): ${scheme} starts a URL too.
        ("${scheme}://a.test${request_uri}", ReturnSpec(302, "${scheme}://a.test${request_uri}")),
        ("410", ReturnSpec(410)),
        ("410\n", ReturnSpec(410)),
        ("204", ReturnSpec(204)),
        ("444", ReturnSpec(444)),
        # A body keeps its own spaces and last newline.
        ("200 ok\n", ReturnSpec(200, "ok\n")),
        ("200  two  words ", ReturnSpec(200, "two  words ")),
        ("403 no entry for $remote_addr", ReturnSpec(403, "no entry for $remote_addr")),
        # nginx's quoted arguments, with its escapes inside the quotes.
        ('301 "https://a.test$request_uri"', ReturnSpec(301, "https://a.test$request_uri")),
        ('"https://a.test/"', ReturnSpec(302, "https://a.test/")),
        ('200 "ok\\n"', ReturnSpec(200, "ok\n")),
        ("200 'it\\'s \\\\ \\t'", ReturnSpec(200, "it's \\ \t")),
        ('200 ""', ReturnSpec(200, "")),
        ('200 "unbalanced', ReturnSpec(200, '"unbalanced')),
        # Whitespace after the closing quote is outside the argument, as in nginx.
        ('200 "ok"\n', ReturnSpec(200, "ok")),
        ("200 ok\tthere\n", ReturnSpec(200, "ok\tthere\n")),
    ],
)
def test_values_read_as_nginx_reads_return(value: str, expected: ReturnSpec) -> None:
    assert parse_return(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("301", "301 needs the URL to redirect to"),
        ("307\n", "307 needs the URL"),
        ("444 bye", "444 closes the connection without a response: it takes no text"),
        ("199 early", "'199' is not a status to return: 200-599, or 444"),
        ("600", "'600' is not a status to return"),
        ("0200", "'0200' is not a status to return"),
        ("20", "'20' is not a status to return"),
        ("\uff13\uff10\uff11 /x", "is not a status to return"),
        ("/relative", "'/relative' is not a status code or a URL"),
        ("moved", "'moved' is not a status code or a URL"),
        ("204 nothing", "a 204 response has no content: it takes no text"),
        ("205 x", "a 205 response has no content"),
        ("304 x", "a 304 response has no content"),
        ("301 https://a.test/a b", "'https://a.test/a b': a URL holds no spaces"),
        ("https://a.test/a b", "a URL holds no spaces"),
        ("301 /a\x01b", "holds a control character"),
        ("426 upgrade", "426 must be sent with Upgrade, which a return mount cannot send"),
        ('200 "a" "b"', "one quoted text only (nginx's return takes one argument"),
        ("403 \x01", "holds a control character"),
        ("200 $status", "unknown variable $status here"),
        ("301 https://a.test${request_uri", "a variable opened with ${ is not closed"),
    ],
)
def test_bad_values_say_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_return(value)
    assert problem in str(raised.value)


_STATUSES = st.one_of(st.integers(200, 599), st.just(444))
#: Texts nginx's quoting can spell: no control characters other than \t, \n, \r.
_TEXTS = st.text(
    st.characters(
        codec="utf-8",
        exclude_characters="$" + "".join(map(chr, [*range(9), 11, 12, *range(14, 32), 127])),
    ),
    min_size=1,
    max_size=20,
).filter(lambda text: text.strip() == text)


@given(status=_STATUSES, text=st.one_of(st.none(), _TEXTS))
def test_what_check_config_prints_reads_back_the_same(status: int, text: str | None) -> None:
    """Every answer that reads, printed as --check-config prints it (a text with a
    line break or quotes around it quoted, on one line), reads back as itself.
    """
    written = str(status) if text is None else f"{status} {text}"
    try:
        spec = parse_return(written)
    except ValueError:
        return
    shown = str(spec)
    assert "\n" not in shown
    assert parse_return(shown) == spec


def test_a_text_with_controls_nginx_cannot_escape_is_shown_as_json() -> None:
    assert str(ReturnSpec(200, "a\x01b\n")) == '200 "a\\u0001b\\n"'


@pytest.mark.parametrize("url", ['""', "''"])
def test_a_redirect_to_an_empty_quoted_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="301 needs the URL to redirect to"):
        parse_return(f"301 {url}")


@given(status=st.sampled_from(sorted(REDIRECT_STATUSES)), text=_TEXTS)
def test_a_redirect_takes_only_a_url_without_spaces(status: int, text: str) -> None:
    # A text in matching quotes is read as nginx reads a quoted word: the quoting
    # tests cover those.
    assume(not (len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]))
    try:
        spec = parse_return(f"{status} {text}")
    except ValueError:
        assert any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in text)
    else:
        assert spec == ReturnSpec(status, text)


# -- answers --------------------------------------------------------------------------------


def load(directory: Path, hosts: str, **given_settings: Any) -> ServerConfig:
    site = directory / "site.toml"
    site.write_text(hosts)
    return cli.load_config({"config": str(site), **given_settings})


def serve(
    config: ServerConfig,
    *,
    tls: bool = False,
    response_log: Any = None,
    body_limits: bool = False,
) -> Connection:
    memory = MemoryReactorClock()
    table = SiteBuilder(reactor=memory, threadpool=None, builders=standard_builders(memory)).build(
        config
    )
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "192.0.2.9", 54321),
    )
    if tls:
        alsoProvides(transport, ISSLTransport)
    router = Router(table)
    connection = connect(router, transport=transport, response_log=response_log)
    if body_limits:
        connection.factory.body_limit = router.body_limit  # (as the service does)
    return connection


def answer(config: ServerConfig, request: bytes, *, tls: bool = False) -> ParsedResponse:
    connection = serve(config, tls=tls)
    connection.send(request)
    method = request.split(b" ", 1)[0]
    [response] = parse_responses(connection.take(), [method])
    return response


def get(path: bytes, host: bytes = b"a.test", *more: bytes) -> bytes:
    fields = b"".join(field + b"\r\n" for field in more)
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + fields + b"\r\n"


def mount(path: str, value: str, extra: str = "") -> str:
    # A TOML basic string, as JSON writes one: "\n" is a newline.
    return f"[[host.mount]]\npath = {path!r}\nreturn = {json.dumps(value)}\n{extra}\n"


def site(*mounts: str, names: str = '"a.test"', host_extra: str = "") -> str:
    return f"[[host]]\nnames = [{names}]\n{host_extra}\n" + "".join(mounts)


def test_a_name_moved_keeps_the_request_uri(tmp_path: Path) -> None:
    """As nginx's server { server_name www...; return 301 https://apex$request_uri; }."""
    config = load(
        tmp_path,
        site(mount("/", "301 https://a.test$request_uri"), names='"www.a.test"')
        + site(mount("/", "200 apex")),
    )
    response = answer(config, get(b"/p/a%20b?x=1&y", b"WWW.a.test:8080"))
    assert response.status == 301
    assert response.header(b"location") == b"https://a.test/p/a%20b?x=1&y"
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    assert response.body == b"Moved Permanently\n"
    assert answer(config, get(b"/p")).body == b"apex"


@pytest.mark.parametrize(
    ("value", "target", "status", "location"),
    [
        (
            "302 $scheme://$host$uri$is_args$args",
            b"/a/./b/../c//d?q=1",
            302,
            b"http://a.test/a/c/d?q=1",
        ),
        ("302 $scheme://$host$uri$is_args$args", b"/a", 302, b"http://a.test/a"),
        ("303 /done?from=$request_method", b"/x", 303, b"/done?from=GET"),
        ("https://$host/new$request_uri", b"/old?a", 302, b"https://a.test/new/old?a"),
        # $uri is decoded: a CR LF it brings cannot end the field (nginx's can),
        # nor a space or a byte outside ASCII spoil the URL: percent-encoded again.
        (
            "307 https://a.test$uri",
            b"/x%0d%0aSet-Cookie:%20a=b",
            307,
            b"https://a.test/x%0D%0ASet-Cookie:%20a=b",
        ),
        ("307 https://a.test$uri", b"/a%20b/%FF%5C", 307, b"https://a.test/a%20b/%FF%5C"),
        # A "%" that starts no percent-encoding is one itself.
        ("307 https://a.test$uri", b"/100%25", 307, b"https://a.test/100%25"),
        # Text outside ASCII in the URL as written: its UTF-8, percent-encoded.
        (
            "301 https://a.test/caf\u00e9$is_args$args",
            b"/?q=1",
            301,
            b"https://a.test/caf%C3%A9?q=1",
        ),
        # The absolute form: $request_uri is its path and query, as nginx's.
        ("301 https://b.test$request_uri", b"http://a.test/x?y=1", 301, b"https://b.test/x?y=1"),
        # Quoted as in an nginx file: the quotes are taken off.
        ('301 "https://b.test$request_uri"', b"/x", 301, b"https://b.test/x"),
    ],
)
def test_redirect_urls_take_request_variables(
    tmp_path: Path, value: str, target: bytes, status: int, location: bytes
) -> None:
    config = load(tmp_path, site(mount("/", value)))
    response = answer(config, get(target))
    assert response.status == status
    assert response.header(b"location") == location
    assert response.header(b"set-cookie") is None


def test_the_scheme_is_https_over_tls(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/", "301 $scheme://b.test$request_uri")))
    assert answer(config, get(b"/x"), tls=True).header(b"location") == b"https://b.test/x"


def test_head_gets_the_fields_without_the_body(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/r", "301 /s"), mount("/t", "200 text")))
    redirect = answer(config, b"HEAD /r HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (redirect.status, redirect.body) == (301, b"")
    assert redirect.header(b"content-length") == b"18"
    text = answer(config, b"HEAD /t HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (text.status, text.body, text.header(b"content-length")) == (200, b"", b"4")


def test_a_text_is_the_body_with_request_variables(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/who", "200 you are $remote_addr, asking for $uri\n")))
    response = answer(config, get(b"/who/%41"))
    assert response.status == 200
    assert response.body == b"you are 192.0.2.9, asking for /who/A\n"
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"


def test_a_text_keeps_what_a_variable_brings_in_the_body(tmp_path: Path) -> None:
    """A body may hold line breaks (the field rule is for fields): $uri's decoded
    bytes go in as they are.
    """
    config = load(tmp_path, site(mount("/", "200 [$uri]")))
    assert answer(config, get(b"/a%0Ab")).body == b"[/a\nb]"


def test_the_mounts_headers_may_give_the_content_type(tmp_path: Path) -> None:
    """As nginx users write default_type application/json beside return 200 '{...}'."""
    config = load(
        tmp_path,
        site(
            mount(
                "/status",
                '200 {"ok": true}',
                "headers = { Content-Type = 'application/json', Cache-Control = 'no-store' }",
            )
        ),
    )
    response = answer(config, get(b"/status"))
    assert response.header_values(b"content-type") == [b"application/json"]
    assert response.header(b"cache-control") == b"no-store"
    assert response.body == b'{"ok": true}'


def test_an_error_without_text_is_the_servers_with_the_hosts_page(tmp_path: Path) -> None:
    page = tmp_path / "gone.html"
    page.write_bytes(b"<h1>gone for good</h1>")
    config = load(
        tmp_path,
        site(
            mount("/old", "410"),
            mount("/", "403"),
            host_extra='error_pages = { 410 = "gone.html" }',
        ),
    )
    gone = answer(config, get(b"/old/page"))
    assert (gone.status, gone.body) == (410, b"<h1>gone for good</h1>")
    assert gone.header(b"content-type") == b"text/html; charset=utf-8"
    forbidden = answer(config, get(b"/x"))
    assert (forbidden.status, forbidden.body) == (403, b"Forbidden\n")


def test_400_is_an_error_answer_too(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/", "400")))
    response = answer(config, get(b"/"))
    assert (response.status, response.body) == (400, b"Bad Request\n")


def test_an_error_with_text_sends_the_text_not_the_page(tmp_path: Path) -> None:
    page = tmp_path / "403.html"
    page.write_bytes(b"<h1>page</h1>")
    config = load(
        tmp_path,
        site(mount("/", "403 not from here\n"), host_extra='error_pages = { 403 = "403.html" }'),
    )
    response = answer(config, get(b"/"))
    assert (response.status, response.body) == (403, b"not from here\n")


@pytest.mark.parametrize(
    ("status", "length"), [(200, b"0"), (205, b"0"), (299, b"0"), (204, None), (304, None)]
)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_status_without_text_has_an_empty_body(
    tmp_path: Path, status: int, length: bytes | None, method: bytes
) -> None:
    """Content-Length: 0 for HEAD as for GET, none where RFC 9110 8.6 forbids it."""
    config = load(tmp_path, site(mount("/", str(status))))
    response = answer(config, method + b" / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (response.status, response.body) == (status, b"")
    assert response.header(b"content-length") == length
    assert response.header(b"content-type") is None


def test_an_unknown_error_status_gets_its_code_as_the_body(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/", "599")))
    response = answer(config, get(b"/"))
    assert (response.status, response.body) == (599, b"599\n")


def test_444_closes_the_connection_without_a_byte(tmp_path: Path) -> None:
    """A default host that drops requests for names it does not serve."""
    ended: list[Any] = []
    config = load(
        tmp_path,
        site(mount("/", "444"), names='"unknown.invalid"', host_extra="default = true")
        + site(mount("/", "200 served")),
    )
    connection = serve(config, response_log=ended.append)
    connection.send(get(b"/", b"scanner.example") + get(b"/", b"a.test"))
    assert connection.take() == b""
    assert connection.is_closed()
    assert [logged_status(end) for end in ended] == [444]
    served = serve(config)
    served.send(get(b"/", b"a.test"))
    assert parse_responses(served.take())[0].body == b"served"


@pytest.mark.parametrize("value", ["200 ok", "308 /new", "410"])
def test_a_body_that_came_with_its_head_keeps_the_connection(tmp_path: Path, value: str) -> None:
    """Read whole before the answer, as a body: what follows is the next request."""
    config = load(tmp_path, site(mount("/", value)))
    connection = serve(config, body_limits=True)
    connection.send(
        b"POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello" + get(b"/again")
    )
    responses = parse_responses(connection.take(), [b"POST", b"GET"])
    assert [response.status for response in responses] == [int(value[:3])] * 2
    assert not connection.is_closed()


@pytest.mark.parametrize(
    ("value", "extra"),
    [("200 ok", ""), ("308 /new", ""), ("410", ""), ("200 inside", "allow = ['10.0.0.0/8']")],
)
def test_an_answer_before_the_body_closes_the_connection(
    tmp_path: Path, value: str, extra: str
) -> None:
    """The rest of the body is not read through, whatever the answer: the mount's or
    its rules' (a 403 here), so no limit-free body keeps a connection busy.
    """
    config = load(tmp_path, site(mount("/", value, extra)))
    connection = serve(config, body_limits=True)
    connection.send(
        b"POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000000\r\n\r\nhello"
    )
    [response] = parse_responses(connection.take(), [b"POST"], complete=False)
    assert response.status == (403 if extra else int(value[:3]))
    assert response.header(b"connection") == b"close"
    connection.send(b"x" * 100_000)  # dropped while the connection lingers
    connection.clock.advance(LINGER_TIMEOUT)
    assert connection.is_closed()
    assert connection.take() == b""


def test_no_body_limit_comes_before_the_answer(tmp_path: Path) -> None:
    """As nginx's return in a server block, which comes before client_max_body_size:
    a moved upload endpoint answers its redirect, not 413, and a 444 host stays
    silent.
    """
    config = load(
        tmp_path,
        site(mount("/upload", "308 https://b.test$request_uri"))
        + site(mount("/", "444"), names='"drop.test"'),
    )
    big = b"Content-Length: 2000000\r\n\r\n" + b"x" * 1000
    moving = serve(config, body_limits=True)
    moving.send(b"POST /upload/f HTTP/1.1\r\nHost: a.test\r\n" + big)
    [moved] = parse_responses(moving.take(), [b"POST"], complete=False)
    assert (moved.status, moved.header(b"location")) == (308, b"https://b.test/upload/f")
    dropping = serve(config, body_limits=True)
    dropping.send(b"POST / HTTP/1.1\r\nHost: drop.test\r\n" + big)
    dropping.clock.advance(LINGER_TIMEOUT)  # (what the client sends meanwhile is dropped)
    assert dropping.take() == b""
    assert dropping.is_closed()


def test_expect_100_continue_is_answered_without_asking_for_the_body(tmp_path: Path) -> None:
    """The answer does not need the body: no 100 Continue, the final response at once."""
    config = load(tmp_path, site(mount("/", "301 /elsewhere")))
    connection = serve(config)
    connection.send(
        b"PUT /big HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    [response] = parse_responses(connection.take(), [b"PUT"], complete=False)
    assert response.status == 301
    assert response.header(b"connection") == b"close"


def test_access_rules_come_before_the_answer(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/", "200 inside", "allow = ['10.0.0.0/8']")))
    assert answer(config, get(b"/")).status == 403


def test_a_longer_mount_takes_its_own_path(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        site(mount("/", "301 https://a.test$request_uri"))
        + "[[host.mount]]\npath = '/healthz'\nreturn = '200 ok'\n",
    )
    assert answer(config, get(b"/healthz")).body == b"ok"
    assert answer(config, get(b"/healthzz")).status == 301


# -- configuration -------------------------------------------------------------------------


def config_error(directory: Path, hosts: str, **given_settings: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        load(directory, hosts, **given_settings)
    return str(raised.value)


def test_a_bad_value_names_the_mounts_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, site(mount("/", "301")))
    assert message.endswith(
        ".return: 301 needs the URL to redirect to, e.g. '301 https://example.com$request_uri'"
    )
    assert "host[0].mount[0].return" in message


def test_a_mount_with_return_and_another_kind_is_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, site("[[host.mount]]\npath = '/'\nreturn = '410'\napp = 'tests.apps:hello'\n")
    )
    assert "a mount needs exactly one of app, static, proxy or return" in message


def test_options_of_other_kinds_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, site(mount("/", "410", "max_body = '1k'")))
    assert "max_body: only applies to app or proxy mounts" in message


def test_the_command_line_serves_return_beside_the_app(tmp_path: Path) -> None:
    config = cli.load_config(
        {"app": "tests.apps:hello", "return": ["/healthz=200 ok", "/old=308 /new"]}
    )
    assert answer(config, get(b"/old/x")).header(b"location") == b"/new"
    assert answer(config, get(b"/healthz")).body == b"ok"
    assert answer(config, get(b"/hello")).body == b"Hello, World!"


def test_a_bad_command_line_value_is_named_as_written() -> None:
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"app": "tests.apps:hello", "return": ["/ok=200 ok", "/old=301"]})
    assert str(raised.value) == (
        "--return '/old=301': 301 needs the URL to redirect to, e.g."
        " '301 https://example.com$request_uri'"
    )


def test_a_toml_number_is_a_status(tmp_path: Path) -> None:
    config = load(tmp_path, "[[host]]\nnames = ['a.test']\nmount = [{path = '/', return = 410}]\n")
    assert answer(config, get(b"/")).status == 410


def test_a_command_line_value_without_a_prefix_shows_a_return_example() -> None:
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"app": "tests.apps:hello", "return": ["/healthz"]})
    assert "expected PREFIX=TARGET (e.g. '/healthz=200 ok'), got '/healthz'" in str(raised.value)


def test_a_vhost_may_return(tmp_path: Path) -> None:
    config = cli.load_config(
        {
            "app": "tests.apps:hello",
            "vhost": ["www.a.test=return:301 https://a.test$request_uri"],
        }
    )
    response = answer(config, get(b"/x?y", b"www.a.test"))
    assert (response.status, response.header(b"location")) == (301, b"https://a.test/x?y")
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"app": "tests.apps:hello", "vhost": ["b.test=return:"]})
    assert "nothing after return:" in str(raised.value)


def test_check_config_shows_the_answer_on_one_line(tmp_path: Path) -> None:
    config = load(tmp_path, site(mount("/healthz", "200 ok\n"), mount("/", "444")))
    shown = describe_routing(config)
    assert '/healthz                 return 200 "ok\\n"' in shown
    assert "/                        return 444" in shown


# -- a real client ------------------------------------------------------------------------


class CurlTests(TestCase):
    """curl follows a name's redirect to another host of the same server."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def test_curl_follows_www_to_the_apex(self) -> None:
        if shutil.which("curl") is None:
            self.skipTest("curl is not installed (make test installs it)")
        site_file = self.directory / "site.toml"
        site_file.write_text(
            site(mount("/", "301 http://a.test$request_uri"), names='"www.a.test"')
            + "[[host]]\nnames = ['a.test']\nmount = [{path = '/', app = 'tests.apps:hello'}]\n"
        )
        service = serve_live(
            self,
            {
                "config": str(site_file),
                "listen": ["tcp:0:interface=127.0.0.1"],
                "threads": "0",
                "access_log": "off",
            },
        )
        port = port_of(service)
        result = await deferToThread(
            subprocess.run,
            [
                "curl",
                "-sS",
                "-L",
                "--max-time",
                "20",
                # Every name and port to the server: the Location has no port.
                "--connect-to",
                f"::127.0.0.1:{port}",
                "-w",
                "\n%{http_code} %{num_redirects} %{url_effective}",
                "http://www.a.test/hello?x=1",
            ],
            capture_output=True,
        )
        body, _, summary = result.stdout.decode().rpartition("\n")
        assert body == "Hello, World!", result.stderr
        assert summary == "200 1 http://a.test/hello?x=1"


def test_gzip_compresses_a_long_text(tmp_path: Path) -> None:
    config = load(tmp_path, "[server]\ngzip = true\n" + site(mount("/", "200 " + "x" * 2000)))
    connection = serve(config)
    connection.send(get(b"/", b"a.test", b"Accept-Encoding: gzip"))
    [response] = parse_responses(connection.take())
    assert response.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(response.body) == b"x" * 2000


def test_the_forwarded_for_of_a_trusted_proxy_is_kept(tmp_path: Path) -> None:
    """$proxy_add_x_forwarded_for reads the client's list only from a trusted proxy."""
    text = site(mount("/", "200 $proxy_add_x_forwarded_for"))
    xff = b"X-Forwarded-For: 203.0.113.4"
    trusting = load(tmp_path, "[server]\ntrusted_proxies = ['192.0.2.0/24']\n" + text)
    assert answer(trusting, get(b"/", b"a.test", xff)).body == b"203.0.113.4, 192.0.2.9"
    untrusting = load(tmp_path, text)
    assert answer(untrusting, get(b"/", b"a.test", xff)).body == b"192.0.2.9"


def test_the_servers_limit_still_bounds_a_body_read_after_a_reload(tmp_path: Path) -> None:
    """A head read as a return mount's, handled after a reload made the path an
    application's: what is read of its body is bounded by the server's max_body.
    """
    pool = QueueingPool()
    clock = SynchronousReactorThreads()

    def table(text: str) -> RoutingTable:
        config = load(tmp_path, text)
        return SiteBuilder(reactor=clock, threadpool=pool).build(config)

    app = "[[host]]\nnames = ['a.test']\n[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
    router = Router(table(app + "[[host.mount]]\npath = '/up'\nreturn = '200 moved'\n"))
    connection = connect(router, settings=HttpSettings(max_body=1000), clock=clock)
    connection.factory.body_limit = router.body_limit
    connection.send(
        get(b"/")
        + b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5000\r\n\r\n"
        + b"x" * 5000
    )
    router.replace(table(app + "[[host.mount]]\npath = '/up'\napp = 'tests.apps:echo'\n"))
    for _ in range(5):
        pool.run_all()
    responses = parse_responses(connection.take(), [b"GET", b"POST"], complete=False)
    assert [response.status for response in responses] == [200, 413]
