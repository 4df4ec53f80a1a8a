"""nginx-style access-log templates (``twistwsgi.log_format``), pure: the combined
template writes what the fast combined formatter writes, each variable's value,
the three escapes (JSON lines parse back), and the refusal of unknown names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_access_log import FakeExchange, FakeRequest
from twistwsgi.access_log import COMBINED, format_combined
from twistwsgi.config import ServerConfig
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.request import PartialRequest, RequestHead
from twistwsgi.log_format import (
    VARIABLES,
    LogFormat,
    RequestTemplate,
    log_time,
    uses_upstream_variables,
)
from twistwsgi.service import access_log_format
from twistwsgi.testing import request_head

# The access log's fakes.
Response = FakeExchange
Request = FakeRequest


NOW = 971186136.25  # 10/Oct/2000:13:55:36 +0000


def line(template: str, response: FakeExchange | None = None, escape: str = "default") -> str:
    return LogFormat(template, escape).format(
        response or Response(Request(target=b"/path?q=1")), NOW
    )


_bytes = st.binary(max_size=40)
_requests = st.builds(
    FakeRequest,
    method=st.sampled_from([b"GET", b"POST", b""]),
    target=_bytes,
    version=st.sampled_from([b"1.1", b"1.0", b""]),
    peer=st.one_of(st.none(), st.tuples(st.just("203.0.113.5"), st.integers(1, 65535))),
    headers=st.lists(
        st.tuples(st.sampled_from([b"referer", b"user-agent", b"x-other"]), _bytes), max_size=3
    ),
)


@given(
    request=_requests,
    status=st.sampled_from([0, 200, 404, 500]),
    client_closed=st.booleans(),
    sent=st.integers(0, 10**9),
    now=st.floats(0, 4 * 10**9),
)
def test_the_combined_template_writes_what_format_combined_writes(
    request: FakeRequest, status: int, client_closed: bool, sent: int, now: float
) -> None:
    """The default fast path and the template language agree, byte for byte."""
    response = Response(request, status, sent, client_closed)
    assert LogFormat(COMBINED).format(response, now) == format_combined(
        response, log_time(int(now))
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$remote_addr:$remote_port", "192.0.2.7:51000"),
        ("[$time_local]", "[10/Oct/2000:13:55:36 +0000]"),
        ("$time_iso8601", "2000-10-10T13:55:36+00:00"),
        ("$msec", "971186136.250"),
        ("$request", "GET /path?q=1 HTTP/1.1"),
        ("$request_method $request_uri $server_protocol $scheme", "GET /path?q=1 HTTP/1.1 http"),
        ("$status $body_bytes_sent", "200 13"),
        ("${status}s", "200s"),
        ("$remote_user", "-"),
        ("$STATUS", "200"),
        ("cost $$status", "cost $200"),
    ],
)
def test_variables(template: str, expected: str) -> None:
    assert line(template) == expected


def test_every_documented_variable_is_known() -> None:
    for name in VARIABLES:
        LogFormat(f"${name}").format(Response(), NOW)


def test_request_time_counts_from_the_first_byte_of_the_request() -> None:
    assert line("$request_time", Response(started=NOW - 1.5)) == "1.500"
    # A clock stepped back is no negative duration.
    assert line("$request_time", Response(started=NOW + 3)) == "0.000"


def test_header_fields_are_any_http_variable() -> None:
    """A field the request lacks is "-"; an empty one stays empty, as nginx logs it."""
    request = Request(headers=[(b"x-request-id", b"abc-123"), (b"referer", b"")])
    assert line("$http_x_request_id $http_x_missing [$http_referer]", Response(request)) == (
        "abc-123 - []"
    )


def test_a_field_sent_on_several_lines_is_logged_whole() -> None:
    """As nginx 1.23+ joins them: ", " (RFC 9110 5.3), "; " for Cookie."""
    request = Request(
        headers=[
            (b"X-Forwarded-For", b"1.1.1.1"),
            (b"cookie", b"a=1"),
            (b"x-forwarded-for", b"2.2.2.2"),
            (b"Cookie", b"b=2"),
        ]
    )
    assert line("$http_x_forwarded_for|$http_cookie", Response(request)) == (
        "1.1.1.1, 2.2.2.2|a=1; b=2"
    )


@pytest.mark.parametrize(
    ("authority", "header", "expected"),
    [
        (b"Shop.Example:8080", None, "shop.example"),
        (None, b"API.example.org", "api.example.org"),
        (b"[2001:DB8::1]:443", None, "[2001:db8::1]"),
        (None, None, "-"),
    ],
)
def test_host_is_the_request_host_name(
    authority: bytes | None, header: bytes | None, expected: str
) -> None:
    headers = [(b"host", header)] if header is not None else []
    response = Response(Request(authority=authority, headers=headers))
    assert line("$host", response) == expected


def test_a_request_without_a_response_is_499_or_444() -> None:
    assert line("$status", Response(status=0, client_closed=True)) == "499"
    assert line("$status", Response(status=0)) == "444"


def test_a_unix_socket_client() -> None:
    assert line("$remote_addr $remote_port", Response(Request(peer=None))) == "unix: -"


def _as_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


# (Not an absolute form: $request_uri is then the part from its path on.)
@given(agent=_bytes, target=_bytes.filter(lambda target: b"://" not in target))
def test_json_lines_parse_back_to_the_text_sent(agent: bytes, target: bytes) -> None:
    """With escape=json every value is valid JSON string content (ASCII): UTF-8 comes
    back as its text, other bytes as the Latin-1 character of the same number, and a
    value not there (an empty target here) as nothing, as nginx writes it.
    """
    request = Request(target=target, headers=[(b"user-agent", agent)])
    template = '{"agent":"$http_user_agent","uri":"$request_uri","status":$status}'
    text = line(template, Response(request), escape="json")
    assert text.isascii()
    record = json.loads(text)
    assert record["agent"] == _as_text(agent)
    assert record["uri"] == _as_text(target)
    assert record["status"] == 200


def test_json_escaping_keeps_utf8_text_and_leaves_missing_values_empty() -> None:
    request = Request(headers=[(b"user-agent", "café ☃".encode())])
    text = line('{"a":"$http_user_agent","id":"$http_x_request_id"}', Response(request), "json")
    assert json.loads(text) == {"a": "café ☃", "id": ""}


def test_default_escaping_keeps_a_line_one_record() -> None:
    request = Request(headers=[(b"user-agent", b'evil"\n1.2.3.4 - - [forged]')])
    assert line('"$http_user_agent"', Response(request)) == r'"evil\x22\x0A1.2.3.4 - - [forged]"'
    assert line("$http_user_agent", Response(request), escape="none") == (
        'evil"\n1.2.3.4 - - [forged]'
    )


def test_an_unclosed_brace_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not closed: '\$\{status'"):
        LogFormat("${status")


@pytest.mark.parametrize("template", ["$bytes_sent", "$upstream_cache_status", "${nope}", "$http_"])
def test_an_unknown_variable_is_refused_by_name(template: str) -> None:
    with pytest.raises(ValueError, match=r"unknown variable \$\w+ \(known: \$http_NAME, "):
        LogFormat(template)


def test_an_unknown_escape_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown escape 'xml'"):
        LogFormat("$status", "xml")


def test_time_iso8601_is_utc() -> None:
    assert line("$time_iso8601") == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW))


def test_upstream_variables_come_from_the_handlers_notes() -> None:
    """A proxy mount leaves them (see test_proxy); any other response has none."""

    @dataclass
    class Proxied(Response):
        log_notes: dict[str, str] | None = None

    notes = {
        "upstream_addr": "10.0.0.1:9000, unix:/run/app.sock",
        "upstream_status": "502, 200",
        "upstream_response_time": "0.001, 0.250",
    }
    template = "$upstream_addr|$upstream_status|$upstream_response_time"
    assert line(template, Proxied(log_notes=notes)) == (
        "10.0.0.1:9000, unix:/run/app.sock|502, 200|0.001, 0.250"
    )
    assert line(template, Proxied()) == "-|-|-"
    assert line(template) == "-|-|-"


@pytest.mark.parametrize(
    ("template", "uses"),
    [
        (None, False),
        ("$status $request_time", False),
        ("$upstream_addr", True),
        ("${UPSTREAM_RESPONSE_TIME}s", True),
        ("upstream_addr", False),
    ],
)
def test_a_proxy_knows_whether_the_log_writes_upstream_variables(
    template: str | None, uses: bool
) -> None:
    assert uses_upstream_variables(template) is uses


def test_a_refused_request_has_a_request_id_too() -> None:
    partial = PartialRequest(method=b"GET")
    assert len(partial.request_id) == 32 and partial.request_id == partial.request_id


def _head(target: bytes) -> RequestHead:
    return request_head(target, peer=("192.0.2.7", 51000))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/a/./b/../c//d%20e?x=1&y", "/a/c/d e|x=1&y|?"),
        (b"/p", "/p|-|"),
        (b"/p?", "/p|-|"),
        (b"/%2e%2e/x", "-|-|"),
    ],
)
def test_uri_args_and_is_args_are_nginxs(target: bytes, expected: str) -> None:
    """$uri is the path routing matched (decoded, dot-segments resolved, slashes merged;
    a path above the root has none), $args the query, $is_args ? when there is one.
    """
    response = FakeExchange(_head(target))  # type: ignore[arg-type]
    assert LogFormat("$uri|$args|$is_args", "none").format(response, NOW) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://a.test/p?q=1", "/p?q=1"),
        (b"http://a.test", "/"),
        (b"://x", "://x"),  # no scheme: not the absolute form
        (b"/p?q", "/p?q"),
        (b"*", "*"),
    ],
)
def test_request_uri_is_from_the_path_on_for_a_refused_head_too(
    target: bytes, expected: str
) -> None:
    response = FakeExchange(PartialRequest(method=b"GET", target=target))  # type: ignore[arg-type]
    assert line("$request_uri", response) == expected


def test_a_refused_request_has_no_uri() -> None:
    response = FakeExchange(PartialRequest(method=b"GET", target=b"/x"))  # type: ignore[arg-type]
    assert line("$uri|$args|$is_args", response) == "-|-|"


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        ([b"theme=dark; sid=abc123"], "abc123|dark"),
        ([b"theme=dark", b"SID=q1"], "q1|dark"),  # another line; the name without case
        ([b"sid=first; sid=second"], "first|-"),  # the first of the name
        ([b"theme=dark, sid=abc"], "abc|dark"),  # two lines joined with ",", as nginx reads
        ([b'sid="quoted value"'], '"quoted value"|-'),  # as sent
        ([b"sid=;theme=x"], "|x"),  # empty, and no space after ;
        ([b"sid = spaced ;theme=x"], "spaced|x"),  # trimmed, as RFC 6265 5.2 reads a pair
        ([b"sidx=1; xsid=2; sid"], "-|-"),  # no cookie of that name; one without =
        ([], "-|-"),
    ],
)
def test_cookie_variables_are_nginxs(cookies: list[bytes], expected: str) -> None:
    """$cookie_NAME: the value of the first cookie of that name in any Cookie line."""
    head = request_head(b"/", headers=[(b"Cookie", line_) for line_ in cookies])
    response = FakeExchange(head)  # type: ignore[arg-type]
    assert LogFormat("$cookie_sid|$cookie_theme", "none").format(response, NOW) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/p?user=ann&page=2", "ann|2"),
        (b"/p?USER=Ann%20B&user=second", "Ann%20B|-"),  # the first; still encoded
        (b"/p?username=x&page", "-|-"),  # no user; a page without =
        (b"/p?user=&page=3", "|3"),
        (b"/p", "-|-"),
        (b"http://a.test/p?user=abs", "abs|-"),  # the absolute form's query
    ],
)
def test_argument_variables_are_nginxs(target: bytes, expected: str) -> None:
    """$arg_NAME: the first query argument of that name, as sent."""
    response = FakeExchange(_head(target))  # type: ignore[arg-type]
    assert LogFormat("$arg_user|$arg_page", "none").format(response, NOW) == expected


def test_prefixed_variables_need_a_name() -> None:
    """$cookie_ or $arg_ alone is refused, naming the variables known."""
    for template in ("$cookie_", "${arg_}"):
        with pytest.raises(ValueError, match=r"\$cookie_NAME, \$arg_NAME"):
            LogFormat(template)


BALANCER = TrustedProxies(["127.0.0.0/8", "unix:"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proxies", "expected"),
    [
        (("127.0.0.1", 5000), b"203.0.113.9", BALANCER, "203.0.113.9"),  # reported
        (("127.0.0.1", 5000), b"203.0.113.9, 127.0.0.2", BALANCER, "203.0.113.9"),
        (("192.0.2.7", 5000), b"203.0.113.9", BALANCER, "192.0.2.7"),  # not believed
        (("127.0.0.1", 5000), b"203.0.113.9", None, "127.0.0.1"),  # none trusted
        (("127.0.0.1", 5000), None, BALANCER, "127.0.0.1"),  # no report
        (None, b"203.0.113.9", BALANCER, "203.0.113.9"),  # a trusted UNIX socket
        (None, None, BALANCER, "unix:"),
        (("127.0.0.1", 5000), b"not an address", BALANCER, "unknown"),
    ],
)
def test_client_addr_is_the_client_the_rules_see(
    peer: tuple[str, int] | None,
    forwarded_for: bytes | None,
    proxies: TrustedProxies | None,
    expected: str,
) -> None:
    """$client_addr, in a log line and in a request template: behind a trusted
    proxy the address it reports (nginx's realip $remote_addr), else the connection's.
    """
    headers = [] if forwarded_for is None else [(b"X-Forwarded-For", forwarded_for)]
    head = request_head(b"/", headers=headers, peer=peer)
    response = FakeExchange(head)  # type: ignore[arg-type]
    assert LogFormat("$client_addr", "none", proxies).format(response, NOW) == expected
    rendered = RequestTemplate("$client_addr").render(head, proxies=proxies)
    assert rendered == expected.encode()
    assert LogFormat("$remote_addr", "none", proxies).format(response, NOW) == (
        peer[0] if peer else "unix:"
    )


def test_a_refused_head_has_the_connections_client() -> None:
    """Before its fields were read there is no report to believe."""
    partial = PartialRequest(method=b"GET", target=b"/", peer=("127.0.0.1", 5000))
    response = FakeExchange(partial)  # type: ignore[arg-type]
    assert LogFormat("$client_addr", "none", BALANCER).format(response, NOW) == "127.0.0.1"


def test_the_access_log_believes_the_servers_trusted_proxies() -> None:
    config = ServerConfig(trusted_proxies=("127.0.0.0/8",), access_log_format="$client_addr")
    log_format = access_log_format(config)
    assert log_format is not None
    head = request_head(
        b"/", headers=[(b"X-Forwarded-For", b"198.51.100.4")], peer=("127.0.0.1", 1)
    )
    assert log_format.format(FakeExchange(head), NOW) == "198.51.100.4"  # type: ignore[arg-type]


def test_a_client_of_a_dual_stack_balancer_is_written_as_a_socket_shows_it() -> None:
    """::ffff:203.0.113.9, not the hex Python before 3.13 writes (::ffff:cb00:7109)."""
    head = request_head(
        b"/", headers=[(b"X-Forwarded-For", b"::ffff:203.0.113.9")], peer=("127.0.0.1", 1)
    )
    response = FakeExchange(head)  # type: ignore[arg-type]
    assert LogFormat("$client_addr", "none", BALANCER).format(response, NOW) == (
        "::ffff:203.0.113.9"
    )
