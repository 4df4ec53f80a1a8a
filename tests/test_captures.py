r"""Captures of regular-expression mounts (``$1``, ``${1}``, ``$name``) in their settings.

First the pure reading and expansion (:mod:`twistwsgi.captures`, plain pytest and
hypothesis), then the configuration's refusals, then whole sites built from a
``site.toml`` and driven through the real protocol on a ``StringTransport``, for
static, proxy and return mounts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from tests.test_locations import (
    HOST,
    build,
    config_error,
    counted_patterns,
    get,
    proxy_router,
    write_site,
)
from tests.test_proxy import FakeEndpoint
from twistwsgi import cli, routing
from twistwsgi.captures import (
    CaptureTemplate,
    CapturingHandler,
    FileTemplate,
    Groups,
    split_captures,
    split_upstream_url,
)
from twistwsgi.cli import load_config
from twistwsgi.config import ConfigError, MountConfig, default_options
from twistwsgi.fixed_response import FixedResponse, parse_return
from twistwsgi.http.request import RequestHead, Route
from twistwsgi.http.rules import compile_location_pattern
from twistwsgi.routing import Mount, MountTable
from twistwsgi.service import make_service
from twistwsgi.site import _accel_resolver
from twistwsgi.static import CapturedStaticHandler, StaticHandler, StaticOptions
from twistwsgi.testing import capture_log_events, connect, parse_responses


@pytest.fixture(autouse=True)
def _patterns_have_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the location patterns a second per lookup instead of 10 ms.

    Nothing here is about the time limit (tests/test_locations.py is), and on a busy
    machine a collection of the whole test process's garbage between two patterns
    can take the 10 ms: the lookup would then answer 500.
    """
    monkeypatch.setattr(routing, "LOCATION_PATTERN_TIME_LIMIT", 1.0)


# -- reading and expanding ------------------------------------------------------------------


def groups(pattern: str) -> Groups:
    return Groups.of(compile_location_pattern(pattern, caseless=False))


def match(pattern: str, path: bytes) -> Any:
    # (?s): "." takes CR and LF too, as they may be in a decoded path.
    found = compile_location_pattern("(?s)" + pattern, caseless=False).search(path)
    assert found is not None
    return found


def request(path: bytes = b"/", query: bytes = b"") -> RequestHead:
    target = path + (b"?" + query if query else b"")
    return RequestHead(
        method=b"GET",
        target=target,
        path=path,
        decoded_path=path,
        query=query,
        version=b"1.1",
        headers=[(b"host", b"a.test")],
        authority=b"a.test",
        content_length=None,
        chunked=False,
        scheme="http",
        peer=("192.0.2.1", 4000),
        local=None,
    )


def test_references_are_read_as_nginx_reads_them() -> None:
    named = groups(r"^/(?<user>[a-z]+)/(\d)(?P<rest>.*)$")
    assert split_captures("/a/$1/b", named) == ["/a/", 1, "/b"]
    assert split_captures("${1}x$12", named) == [1, "x", 1, "2"]  # one digit, as nginx
    assert split_captures("/$user${rest}", named) == ["/", "user", "rest"]
    # Not a group: a variable, left in the text for the setting to read.
    assert split_captures("$host/$users", named) == ["$host/$users"]


def test_a_capture_the_pattern_has_not_is_refused() -> None:
    with pytest.raises(ValueError, match=r"uses \$2, but the mount's pattern has 1 group"):
        split_captures("/$2", groups(r"^/(a)"))
    with pytest.raises(ValueError, match=r"uses \$1: captures are for regular-expression"):
        split_captures("/x/${1}", None)


def test_a_group_that_took_no_part_is_empty() -> None:
    template = CaptureTemplate("/a$1/$2", groups(r"^/(x)?(y)$"), url=True)
    assert template.render(match(r"^/(x)?(y)$", b"/y"), request()) == b"/a/y"


@pytest.mark.parametrize(
    ("captured", "in_path", "in_query"),
    [
        (b"plain", b"plain", b"plain"),
        (b"a b", b"a%20b", b"a%20b"),
        (b"a?b#c", b"a%3Fb%23c", b"a%3Fb%23c"),
        (b"a&b=c+d;e", b"a&b=c+d;e", b"a%26b=c%2Bd%3Be"),  # an argument stays one
        (b"100%25", b"100%2525", b"100%2525"),  # decoded text: its % is a %, once
        (b"\r\nX: y", b"%0D%0AX:%20y", b"%0D%0AX:%20y"),
        ("café".encode(), b"caf%C3%A9", b"caf%C3%A9"),
        (b"a/b", b"a/b", b"a/b"),
    ],
)
def test_a_capture_in_a_url_is_encoded_for_its_place(
    captured: bytes, in_path: bytes, in_query: bytes
) -> None:
    found = match(r"^/(.*)$", b"/" + captured)
    path = CaptureTemplate("/p/$1", groups(r"^/(.*)$"), url=True)
    assert path.render(found, request()) == b"/p/" + in_path
    query = CaptureTemplate("/p?q=$1&x=1", groups(r"^/(.*)$"), url=True)
    assert query.render(found, request()) == b"/p?q=" + in_query + b"&x=1"


def test_variables_beside_captures_keep_their_meaning() -> None:
    template = CaptureTemplate("/v$1/$2$is_args$args", groups(r"^/api/v(\d+)/(.*)$"), url=True)
    found = match(r"^/api/v(\d+)/(.*)$", b"/api/v2/users")
    assert template.render(found, request(b"/api/v2/users", b"page=2")) == b"/v2/users?page=2"
    assert template.render(found, request(b"/api/v2/users")) == b"/v2/users"


@pytest.mark.parametrize(
    "text", ["/x$is_args$args&c=$1", "/x$request_uri&c=$1", "/x/$http_x_base/$1"]
)
@pytest.mark.parametrize("target", [False, True])
def test_a_capture_after_a_variable_that_may_start_the_query_stays_one_argument(
    text: str, *, target: bool
) -> None:
    """A variable may bring the ``?`` (``$is_args``, ``$request_uri``, a header's value):
    a capture after it is encoded as in a query, so its ``&`` adds no argument.
    """
    template = CaptureTemplate(text, groups(r"^/p/(.*)$"), url=True, target=target)
    head = request(b"/p/a&admin=1", b"z=1")
    head.headers.append((b"x-base", b"b?k=v"))
    rendered = template.render(match(r"^/p/(.*)$", b"/p/a&admin=1"), head)
    assert rendered.endswith(b"a%26admin=1"), rendered  # (not "a&admin=1")


def test_an_unknown_variable_is_still_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown variable \$nope"):
        CaptureTemplate("/x/$1/$nope", groups(r"^/(a)"), url=True)


@pytest.mark.parametrize(
    "text",
    [
        "$1",
        "${1}/x",
        "https://example.com$1",
        "https://$1.example.com/",
        "https://example.com:$1/",
        "$scheme://$1/x",
        "${scheme}://$1/x",
        "${scheme}://${host}$1",
        "//$1/x",
        "$host$1",
    ],
)
def test_a_capture_may_not_choose_the_site_a_redirect_sends_to(text: str) -> None:
    with pytest.raises(ValueError, match="comes before the URL's path"):
        CaptureTemplate(text, groups(r"^/(.*)$"), url=True)


@pytest.mark.parametrize(
    "text",
    [
        "/new/$1",
        "https://example.com/$1",
        "$scheme://$host/x/$1",
        "${scheme}://${host}/x/$1",
        "/a?to=$1",
    ],
)
def test_a_capture_in_a_redirects_path_or_query_is_taken(text: str) -> None:
    CaptureTemplate(text, groups(r"^/(.*)$"), url=True)


def test_a_redirect_never_starts_with_two_slashes() -> None:
    """``//evil.example`` would be another site to a browser (RFC 3986 4.2)."""
    template = CaptureTemplate("/$1", groups(r"^/r(/.*)$"), url=True)
    assert template.render(match(r"^/r(/.*)$", b"/r/evil.example"), request()) == (
        b"/%2Fevil.example"
    )


def test_a_body_text_takes_captures_as_they_are() -> None:
    template = CaptureTemplate("hello $name\n", groups(r"^/(?<name>.*)$"), url=False)
    assert template.render(match(r"^/(?<name>.*)$", b"/a b%"), request()) == b"hello a b%\n"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (b"/x/y", b"/y"),
        (b"/x//y", b"/y"),  # one leading slash: never a //authority
        (b"/x/", b"/"),
        (b"/x#", b"/%23"),
    ],
)
def test_an_upstream_target_starts_with_one_slash(path: bytes, target: bytes) -> None:
    template = CaptureTemplate("/$1", groups(r"^/x/*(.*)$"), url=True, target=True)
    assert template.render(match(r"^/x/*(.*)$", path), request()) == target
    empty = CaptureTemplate("$1", groups(r"^/x/*(.*)$"), url=True, target=True)
    assert empty.render(match(r"^/x/*(.*)$", b"/x/"), request()) == b"/"


@pytest.mark.parametrize("written", ["/x$uri", "/x${uri}", "/x$URI", "/x${Uri}"])
def test_uri_in_an_upstream_target_is_encoded_as_a_capture_however_spelled(written: str) -> None:
    """A variable's name is read without case (nginx's), so ``$URI`` is ``$uri``: its
    decoded ``?`` and ``#`` must not start the query upstream, whatever the spelling.
    """
    template = CaptureTemplate(written, groups(r"^/p/(.*)$"), url=True, target=True)
    path = b"/p/a?b#c"  # (decoded from /p/a%3Fb%23c)
    assert template.render(match(r"^/p/(.*)$", path), request(path)) == b"/x/p/a%3Fb%23c"


def test_a_capture_after_a_variable_at_a_targets_start_stays_one_argument() -> None:
    """A target is its path from its first byte (a unix socket's URL may start it with
    ``$uri``: ``unix:/run/a.sock:$uri$is_args$args``), so a variable right after
    ``$uri`` may bring the ``?``: a capture after it is encoded as in a query.
    """
    template = CaptureTemplate(
        "$uri$is_args$args&c=$1", groups(r"^/p/(.*)$"), url=True, target=True
    )
    path = b"/p/a&admin=1"
    rendered = template.render(match(r"^/p/(.*)$", path), request(path, b"z=1"))
    assert rendered == b"/p/a&admin=1?z=1&c=a%26admin=1"


def test_uri_outside_a_target_is_a_variable_not_a_capture() -> None:
    """Only a target encodes ``$uri`` as a capture: in a ``Location`` it is encoded as
    every variable is there (what a URI may not hold, RFC 3986 2), in a body text
    it is as it is.
    """
    path = b"/p/a b%"
    found = match(r"^/p/(.*)$", path)
    location = CaptureTemplate("/x/$1?from=$uri", groups(r"^/p/(.*)$"), url=True)
    assert location.render(found, request(path)) == b"/x/a%20b%25?from=/p/a%20b%25"
    text = CaptureTemplate("said $1 at $uri", groups(r"^/p/(.*)$"), url=False)
    assert text.render(found, request(path)) == b"said a b% at /p/a b%"


_TARGET_CHARS = re.compile(
    rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*(\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*)?"
)


@given(st.binary(max_size=40).filter(lambda value: b"\0" not in value))
def test_an_upstream_target_is_origin_form_and_gives_back_the_capture(captured: bytes) -> None:
    """For any capture: RFC 9112 3.2.1 origin-form, decoding to the capture (no double
    encoding), never a second leading slash (nor an absolute form).
    """
    template = CaptureTemplate("/v/$1?q=$1", groups(r"^/(.*)$"), url=True, target=True)
    target = template.render(match(r"^/(.*)$", b"/" + captured), request())
    assert _TARGET_CHARS.fullmatch(target), target
    assert not target.startswith(b"//")
    path, _, query = target.partition(b"?")
    assert unquote_to_bytes(path) == b"/v/" + captured
    assert unquote_to_bytes(query) == b"q=" + captured


def test_an_upstream_url_is_cut_where_its_path_starts() -> None:
    assert split_upstream_url("http://b:8080/v$1/$2?x=$3") == ("http://b:8080", "/v$1/$2?x=$3")
    assert split_upstream_url("https://b?x=$1") == ("https://b", "?x=$1")
    assert split_upstream_url("http://b") == ("http://b", "")
    assert split_upstream_url("unix:/run/a.sock:/v$1") == ("unix:/run/a.sock", "/v$1")
    assert split_upstream_url("unix:/run/a.sock") == ("unix:/run/a.sock", "")


def test_a_directorys_fixed_part_is_cut_before_the_first_capture() -> None:
    avatars = FileTemplate("/srv/avatars/$1.png", groups(r"^/users/(\d+)/avatar$"))
    assert avatars.root == "/srv/avatars"
    assert avatars.expand(match(r"^/users/(\d+)/avatar$", b"/users/12/avatar")) == b"/12.png"
    home = FileTemplate("/home/$user/www$rest", groups(r"^/~(?<user>[a-z]+)(?<rest>/.*)?$"))
    assert home.root == "/home"
    pattern = r"^/~(?<user>[a-z]+)(?<rest>/.*)?$"
    assert home.expand(match(pattern, b"/~bob")) == b"/bob/www"  # (no rest: empty)
    assert home.expand(match(pattern, b"/~bob/a/b")) == b"/bob/www/a/b"
    # Cut at the last "/" before the capture, even in the middle of a name.
    assert FileTemplate("/srv/img$1", groups(r"(.*)")).root == "/srv"


@pytest.mark.parametrize(
    ("directory", "error"),
    [
        ("/$1", "is the file system's root"),
        ("/x$1", "is the file system's root"),
        ("/srv/$1/../etc", "a . or .. segment"),
        ("/srv/$1/./x", "a . or .. segment"),
        ("/srv/$1/$host", r"\$host is no group"),
        ("/srv/$2", r"uses \$2, but the mount's pattern has 1"),
        ("/srv/$1/$0", r"\$0 is no group"),
        ("/srv/$1/${10}", r"\$\{10\} is no group"),
        ("/srv/$1/a$", r"\$ is no group"),
    ],
)
def test_a_directory_that_could_escape_or_stay_literal_is_refused(
    directory: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        FileTemplate(directory, groups(r"^/(.*)$"))


def test_a_nul_in_a_capture_names_no_file() -> None:
    template = FileTemplate("/srv/$1", groups(r"^/(.*)$"))
    assert template.expand(match(r"^/(.*)$", b"/a\0b")) is None


_PATH_PIECES = st.lists(
    st.sampled_from([b"..", b".", b"/", b"a", b".a", b"\\", b"\0", b"~", b"%2e"])
    | st.binary(max_size=3),
    max_size=12,
).map(b"".join)


@given(_PATH_PIECES, st.sampled_from(["$1", "x/$1", "pre$1.png", "$1/sub/$1"]))
def test_the_file_a_capture_names_is_never_outside_the_fixed_directory(
    captured: bytes, written: str
) -> None:
    """Whatever a capture holds, the static mount's lookup stays below the fixed
    directory: ``..``, ``.``, hidden names and NULs name nothing.
    """
    root = "/srv/fixed"
    template = FileTemplate(f"{root}/{written}", groups(r"^/(.*)$"))
    # (Hidden names allowed: the rule against them would hide ".." too.)
    options = {**default_options("static"), "dotfiles": True}
    handler = StaticHandler(StaticOptions.from_mount(root, options), now=lambda: 0.0)
    expanded = template.expand(match(r"^/(.*)$", b"/" + captured))
    if expanded is None:
        assert b"\0" in captured
        return
    mapped = handler._map(expanded)
    if mapped is None:
        return
    assert b"\0" not in mapped or b"\0" in captured
    normal = os.path.normpath(mapped)
    assert normal == os.fsencode(root) or normal.startswith(os.fsencode(root) + b"/")
    assert b"/../" not in mapped + b"/" and not mapped.endswith(b"/..")


# -- the configuration ------------------------------------------------------------------------


def mount(text: str) -> str:
    return HOST + "[[host.mount]]\n" + text + "\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "path = '~ ^/old/(.*)$'\nreturn = '301 /new/$2'",
            "host[0].mount[1].return: '/new/$2' uses $2, but the mount's pattern has 1 group(s)",
        ),
        (
            "path = '/old'\nreturn = '301 /new/$1'",
            "host[0].mount[1].return: '/new/$1' uses $1: captures are for"
            " regular-expression mounts (path = '~ REGEX' or '~* REGEX')",
        ),
        (
            "path = '= /old'\nreturn = '200 ${1}'",
            "host[0].mount[1].return: '${1}' uses $1: captures are for",
        ),
        (
            "path = '~ ^/old/(?<slug>.*)$'\nreturn = '301 /new/$slugs'",
            "host[0].mount[1].return: '/new/$slugs': unknown variable $slugs here",
        ),
        (
            "path = '~ ^/old/(.*)$'\nreturn = '301 https://example.com$1'",
            "host[0].mount[1].return: 'https://example.com$1': $1 comes before the URL's path",
        ),
        (
            "path = '/s'\nstatic = 'DIR/site/$1'",
            "host[0].mount[1].static: 'TMP/site/$1' uses $1: captures are for",
        ),
        (
            "path = '~ ^/s/(.*)$'\nstatic = 'DIR/site/$name'",
            "host[0].mount[1].static: 'TMP/site/$name': $name is no group of the mount's pattern",
        ),
        (
            "path = '~ ^/s/(.*)$'\nstatic = 'DIR/site/$3'",
            "host[0].mount[1].static: 'TMP/site/$3' uses $3, but the mount's pattern has 1",
        ),
        (
            "path = '~ ^/s/(.*)$'\nstatic = 'DIR/missing/$1'",
            "host[0].mount[1].static: directory 'TMP/missing' (before the first capture)"
            " does not exist",
        ),
        (
            "path = '~ ^/s/(.*)$'\nstatic = '/$1'",
            "host[0].mount[1].static: '/$1': the directory before the first capture is the"
            " file system's root",
        ),
        (
            "path = '~ ^/p/(.*)$'\nproxy = 'http://b$1/x'",
            "host[0].mount[1].proxy: 'http://b$1/x': the scheme, host and port of an"
            " upstream are fixed",
        ),
        (
            "path = '~ ^/p/(.*)$'\nproxy = 'http://$host/x'",
            "host[0].mount[1].proxy: 'http://$host/x': the scheme, host and port",
        ),
        (  # (not "bad port": the $ is what is wrong)
            "path = '~ ^/p/(.*)$'\nproxy = 'http://b:9000$1'",
            "host[0].mount[1].proxy: 'http://b:9000$1': the scheme, host and port",
        ),
        (  # nginx's idiom: the whole target is what a pattern mount forwards anyway
            "path = '~ ^/p/(.*)$'\nproxy = 'http://b:9000$request_uri'",
            "host[0].mount[1].proxy: 'http://b:9000$request_uri': the scheme, host and port"
            " of an upstream are fixed (a capture or variable may go in its path, in a"
            " regular-expression mount; for nginx's http://b$request_uri write http://b:"
            " a regular-expression mount forwards the path and query as sent)",
        ),
        (
            "path = '~ ^/p/(.*)$'\nproxy = 'http://b/x/$2'",
            "host[0].mount[1].proxy: '/x/$2' uses $2, but the mount's pattern has 1",
        ),
        (
            "path = '~ ^/p/(.*)$'\nproxy = ['http://a/x/$1', 'http://b/y/$1']",
            "host[0].mount[1].proxy: the upstreams of a mount whose URL uses captures or"
            " variables give the same path and query",
        ),
        (
            "path = '~ ^/p/(.*)$'\nproxy = 'http://b/fixed'",
            "host[0].mount[1].proxy: 'http://b/fixed': a regular-expression mount forwards"
            " the whole path",
        ),
        (
            "path = '/p'\nproxy = 'http://b/x/$1'",
            "host[0].mount[1].proxy: '/x/$1' uses $1: captures are for",
        ),
        (
            "path = '/p'\nproxy = 'http://b/x?a=$arg_a'",
            "host[0].mount[1].proxy: an upstream URL has no query or fragment",
        ),
        (  # nginx's proxy_pass http://b/x$uri in a prefix location: not sent as written
            "path = '/p'\nproxy = 'http://b/x$uri'",
            "host[0].mount[1].proxy: 'http://b/x$uri': $uri would be sent as written:"
            " variables go in a regular-expression mount's upstream path",
        ),
        (
            "path = '= /p'\nproxy = 'http://b/x/${host}/'",
            "host[0].mount[1].proxy: 'http://b/x/${host}/': ${host} would be sent as written",
        ),
        (
            "path = '~ ^/p/(.*)$'\nproxy = 'http://b'\nproxy_set_header = { X-A = '$1' }",
            "unknown variable $1 here: the captures of a regular-expression mount path ($1"
            " to $9 and its named groups) are offered to its static, proxy and return"
            " settings only",
        ),
        (
            "path = '~ ^/old/(.*)$'\nreturn = '301 /new/$0'",
            "host[0].mount[1].return: '/new/$0': $0 is no group: nginx numbers captures $1"
            " to $9, one digit each ($10 is $1 then a 0)",
        ),
    ],
)
def test_captures_a_mount_cannot_give_are_one_line_at_start_up(
    tmp_path: Path, text: str, error: str
) -> None:
    message = config_error(tmp_path, mount(text))
    assert error.replace("TMP", str(tmp_path)) in message, message


def test_a_capture_the_pattern_has_not_exits_2_with_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path, mount("path = '~ ^/old/(.*)$'\nreturn = '301 /new/$2'"))
    with pytest.raises(SystemExit) as raised:
        cli.Options().parseOptions(["--config", path])
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert "host[0].mount[1].return: '/new/$2' uses $2, but the mount's pattern has 1" in err


def test_a_reload_refuses_it_too_and_the_old_table_serves(tmp_path: Path) -> None:
    site = mount("path = '~ ^/old/(.*)$'\nreturn = '301 /new/$1'")
    given: dict[str, Any] = {"config": write_site(tmp_path, site), "threads": "0"}
    reactor = MemoryReactorClock()
    service = make_service(cli.load_config(given), reactor=reactor, endpoints=[])
    service.startService()

    def location() -> bytes | None:
        client = connect(service.factory.handler)
        client.send(b"GET /old/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        [response] = parse_responses(client.take(), [b"GET"])
        found: bytes | None = response.header(b"location")
        return found

    assert location() == b"/new/x"
    write_site(tmp_path, site.replace("$1", "$2"))
    with capture_log_events() as events:
        cli.reload_server(reactor, service, given, [])
    [refused] = [formatEvent(event) for event in events if "Reload refused" in formatEvent(event)]
    assert "host[0].mount[1].return: '/new/$2' uses $2, but the mount's pattern has 1" in refused
    assert location() == b"/new/x"
    service.stopService()


def test_a_dollar_that_is_no_variable_stays_in_a_prefix_mounts_upstream_path(
    tmp_path: Path,
) -> None:
    """OData's ``$metadata`` is a name, not a variable: sent as written, as before."""
    text = mount("path = '/odata'\nproxy = 'http://b/odata/$metadata'")
    upstream = load_config({"config": write_site(tmp_path, text)}).hosts[0].mounts[1].target
    assert upstream[0].url == "http://b/odata/$metadata"


def test_a_literal_dollar_directory_of_a_prefix_mount_is_still_served(tmp_path: Path) -> None:
    """A directory really named so is no capture (its existing meaning is kept)."""
    (tmp_path / "site" / "$1").mkdir(parents=True)
    (tmp_path / "site" / "$1" / "a.txt").write_bytes(b"literal")
    router, _ = build(tmp_path, mount("path = '/s'\nstatic = 'DIR/site/$1'"))
    assert get(router, b"/s/a.txt").body == b"literal"


# -- static mounts ----------------------------------------------------------------------------


STATIC = mount(
    "path = '~ ^/users/(\\d+)/avatar$'\nstatic = 'DIR/avatars/$1.png'\n"
    "[[host.mount]]\npath = '~ ^/~(?<user>[a-z]+)(?<rest>/.*)?$'\n"
    "static = 'DIR/home/${user}/www$rest'\n"
    "[[host.mount]]\npath = '~ ^/f/(.*)$'\nstatic = 'DIR/files/$1'\n"
    "[[host.mount]]\npath = '~ ^/h(.*)$'\nstatic = 'DIR/files/sub/$1'\n"
    "[[host.mount]]\npath = '~ ^/d/(\\w+)/$'\nstatic = 'DIR/files/$1'\n"
    "[[host.mount]]\npath = '~ ^/t(.*)/x(.*)$'\nstatic = 'DIR/files/sub/$1/$2'\n"
    "dotfiles = true\n"
)


def static_site(tmp_path: Path) -> Any:
    for name in ("avatars", "home/bob/www/d", "files/sub"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "avatars" / "12.png").write_bytes(b"png of 12")
    (tmp_path / "home" / "bob" / "www" / "index.html").write_bytes(b"bob's index")
    (tmp_path / "home" / "bob" / "www" / "d" / "a.txt").write_bytes(b"bob's a")
    (tmp_path / "files" / "ok.txt").write_bytes(b"ok")
    (tmp_path / "files" / "okfile").write_bytes(b"ok")
    (tmp_path / "files" / ".hidden").write_bytes(b"hidden")
    (tmp_path / "files" / "sub" / "index.html").write_bytes(b"sub index")
    (tmp_path / "secret.txt").write_bytes(b"SECRET")
    (tmp_path / "files" / "out").symlink_to(tmp_path)
    router, _ = build(tmp_path, STATIC)
    return router


def test_a_capture_names_the_file_as_nginxs_alias(tmp_path: Path) -> None:
    router = static_site(tmp_path)
    found = get(router, b"/users/12/avatar")
    assert (found.status, found.body) == (200, b"png of 12")
    assert get(router, b"/users/13/avatar").status == 404
    assert get(router, b"/~bob/d/a.txt").body == b"bob's a"
    assert get(router, b"/f/ok.txt").body == b"ok"


def test_a_directory_is_redirected_to_its_slash_then_its_index_served(tmp_path: Path) -> None:
    router = static_site(tmp_path)
    moved = get(router, b"/~bob?x=1")
    assert (moved.status, moved.header(b"location")) == (301, b"/~bob/?x=1")
    assert get(router, b"/~bob/").body == b"bob's index"
    assert get(router, b"/~bob/d").header(b"location") == b"/~bob/d/"
    assert get(router, b"/~alice/").status == 404


# (target, what answers): "root" when the normalised path leaves the pattern (it never
# reaches the mount), else the 404 of a defence of static mounts.
_ROOT = (200, b"root")
_MISS = (404, b"Not Found\n")


@pytest.mark.parametrize(
    ("target", "answer"),
    [
        (b"/f/../secret.txt", _ROOT),  # dot-segments are resolved before the patterns
        (b"/f/%2e%2e/secret.txt", _ROOT),
        (b"/f/%2E%2E%2Fsecret.txt", _ROOT),
        (b"/f/%2F..%2F..%2Fsecret.txt", _ROOT),
        (b"/f/a/../../secret.txt", _ROOT),
        (b"/f//../secret.txt", _MISS),  # files/secret.txt: none
        (b"/f/..%5csecret.txt", _MISS),  # an encoded backslash
        (b"/f/..%5c..%5csecret.txt", _MISS),
        (b"/f/out/secret.txt", _MISS),  # a link out of the directory
        (b"/f/.hidden", _MISS),  # a hidden name
        (b"/f/%2ehidden", _MISS),
        (b"/f/...", _MISS),
        (b"/f/..%c0%af../secret.txt", _MISS),  # an overlong "/" is no slash
        (b"/h..", _MISS),  # $1 is "..": sub/.. names nothing
        (b"/h../ok.txt", _MISS),  # $1 is "../ok.txt": a .. segment, even inside
        (b"/h.%2e/ok.txt", _MISS),
        (b"/h..%2fok.txt", _MISS),  # an encoded slash
        (b"/h/../../../secret.txt", (404, b"Not Found\n")),  # above the root
        (b"/t../x../secret.txt", _MISS),  # sub/$1/$2 is sub/../../secret.txt
        (b"/t%2e%2e/x%2e%2e/secret.txt", _MISS),
        (b"/t../x..%2Fsecret.txt", _MISS),
        (b"/t../x../out/secret.txt", _MISS),
    ],
)
def test_no_capture_reaches_a_file_outside_the_fixed_directory(
    tmp_path: Path, target: bytes, answer: tuple[int, bytes]
) -> None:
    router = static_site(tmp_path)
    found = get(router, target)
    assert (found.status, found.body) == answer


def test_a_nul_or_backslash_through_a_capture_is_refused(tmp_path: Path) -> None:
    router = static_site(tmp_path)
    assert get(router, b"/f/ok.txt%00").status == 400  # no encoded NUL in a path
    assert get(router, b"/f/..\\secret.txt").status in (400, 404)


def test_an_encoded_slash_or_a_backslash_names_no_file_through_a_capture(
    tmp_path: Path,
) -> None:
    """As for every static mount: the files exist, the request spells them so, 404."""
    router = static_site(tmp_path)
    (tmp_path / "files" / "a\\b.txt").write_bytes(b"backslash")
    assert get(router, b"/f/sub/index.html").body == b"sub index"
    assert get(router, b"/f/sub%2Findex.html").status == 404
    assert get(router, b"/f/sub%2findex.html").status == 404
    assert get(router, b"/f/a%5Cb.txt").status == 404
    assert get(router, b"/f/a\\b.txt").status == 404


def test_a_request_for_a_directory_carries_its_slash_into_the_expanded_path(
    tmp_path: Path,
) -> None:
    r"""``~ ^/d/(\w+)/$`` with ``files/$1``: ``/d/sub/`` is the directory ``files/sub``
    with its slash (its index), not a redirect to ``/d/sub//`` (nginx builds
    ``files/subindex.html`` there).
    """
    router = static_site(tmp_path)
    assert get(router, b"/d/sub/").body == b"sub index"
    assert get(router, b"/d/okfile/").status == 404  # a file asked for as a directory


def test_a_static_mounts_partner_gets_its_captures(tmp_path: Path) -> None:
    """``try_files $uri @app``: the mount that answers a miss sees the same match."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_bytes(b"file a")
    text = mount(
        "path = '~ ^/p/(?<name>.*)$'\nstatic = 'DIR/files/$name'\nfallthrough = true\n"
        "[[host.mount]]\npath = '~ ^/p/(?<name>.*)$'\nreturn = '200 no file $name'"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/p/a.txt").body == b"file a"
    assert get(router, b"/p/b.txt").body == b"no file b.txt"


def test_an_exact_mounts_miss_passed_to_a_pattern_mount_gets_its_captures(
    tmp_path: Path,
) -> None:
    """``= /p/a.txt`` with fallthrough passes its miss to the pattern its path reaches.

    That mount's captures are those of its pattern in the exact path, as if the
    request had been routed to it: not empty ones (a return answered "no file ",
    a static mount 404).
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "avatars").mkdir()
    (tmp_path / "avatars" / "12.png").write_bytes(b"png of 12")
    text = mount(
        "path = '= /p/a.txt'\nstatic = 'DIR/files'\nfallthrough = true\n"
        "[[host.mount]]\npath = '~ ^/p/(?<name>.*)$'\nreturn = '200 no file $name'\n"
        "[[host.mount]]\npath = '= /users/12/avatar'\nstatic = 'DIR/files'\n"
        "fallthrough = true\n"
        "[[host.mount]]\npath = '~ ^/users/(\\d+)/avatar$'\nstatic = 'DIR/avatars/$1.png'"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/p/a.txt").body == b"no file a.txt"
    assert get(router, b"/users/12/avatar").body == b"png of 12"


def test_x_accel_redirect_to_a_mount_with_captures_serves_the_file_they_name(
    tmp_path: Path,
) -> None:
    (tmp_path / "avatars").mkdir()
    (tmp_path / "avatars" / "7.png").write_bytes(b"png of 7")
    options = {**default_options("static"), "internal": True}
    written = f"{tmp_path}/avatars/$1.png"
    pattern = compile_location_pattern(r"^/private/(\d+)$", caseless=False)
    template = FileTemplate(written, Groups.of(pattern))
    avatars = CapturedStaticHandler(
        StaticOptions.from_mount(template.root, options), template, now=lambda: 0.0
    )
    resolve = _accel_resolver(
        [(MountConfig(r"^/private/(\d+)$", "static", written, options, "t", match="~"), avatars)]
    )
    assert resolve(b"x-accel-redirect", b"/private/7") == (avatars, b"/7.png")
    assert resolve(b"x-accel-redirect", b"/private/x") is None
    # Through an application's answer, as a request routed there.
    site = mount(
        "path = '/dl'\napp = 'tests.apps:accel'\nx_accel_redirect = true\n"
        "[[host.mount]]\npath = '~ ^/private/(\\d+)$'\nstatic = 'DIR/avatars/$1.png'\n"
        "internal = true"
    )
    router, _ = build(tmp_path, site)
    assert get(router, b"/dl/7").body == b"png of 7"
    assert get(router, b"/private/7").status == 404  # internal


# -- proxy mounts -----------------------------------------------------------------------------


def proxy_site(tmp_path: Path, text: str) -> tuple[Any, dict[str, FakeEndpoint]]:
    return proxy_router(tmp_path, mount(text))


def forwarded(router: Any, endpoint: FakeEndpoint, target: bytes) -> bytes:
    """The request-target ``endpoint`` got for ``target`` (parsed by h11)."""
    connect(router).send(b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    request, _ = endpoint.last.request()
    assert request.headers  # (h11 read the whole head)
    sent: bytes = request.target
    return sent


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        (b"/api/v2/users?page=2", b"/v2/users?page=2"),
        (b"/api/v2/users", b"/v2/users"),
        (b"/api/v10/a%20b%3Fc%23d", b"/v10/a%20b%3Fc%23d"),  # decoded, encoded again
        (b"/api/v2/caf%C3%A9", b"/v2/caf%C3%A9"),
        (b"/api/v2/100%25", b"/v2/100%25"),  # not %2525: the capture's % is one
        (b"/api/v2/a%2Fb", b"/v2/a/b"),  # what was matched: the decoded path
        (b"/api/v2/a/../b", b"/v2/b"),  # ... its dot-segments resolved
        (b"/api/v2//x", b"/v2/x"),  # ... its slashes merged
        (b"/api/v2/%0d%0aX:%20y", b"/v2/%0D%0AX:%20y"),  # no field can be added
        (b"/api/v2/", b"/v2/"),
    ],
)
def test_a_proxy_mount_sends_the_target_its_captures_make(
    tmp_path: Path, target: bytes, sent: bytes
) -> None:
    router, endpoints = proxy_site(
        tmp_path,
        "path = '~ (?s)^/api/v(\\d+)/(.*)$'\n"
        "proxy = ['http://10.0.0.1:9000/v$1/$2$is_args$args', 'http://10.0.0.2:9000/v$1/$2$is_args$args']\n"
        "balance = 'hash $uri'",
    )
    # (Either upstream: the same target, each its own pool at its own address.)
    assert sorted(endpoints) == ["http://10.0.0.1:9000", "http://10.0.0.2:9000"]
    connect(router).send(b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    used = [endpoint for endpoint in endpoints.values() if endpoint.connections]
    assert len(used) == 1
    request, _ = used[0].last.request()
    assert request.target == sent


def test_an_exact_mounts_miss_is_proxied_with_the_pattern_mounts_captures(
    tmp_path: Path,
) -> None:
    """The upstream gets ``/v2/x`` for ``/api/v2/x``, not ``/v/`` (empty captures)."""
    (tmp_path / "files").mkdir()
    router, endpoints = proxy_site(
        tmp_path,
        "path = '= /api/v2/x'\nstatic = 'DIR/files'\nfallthrough = true\n"
        "[[host.mount]]\npath = '~ ^/api/v(\\d+)/(.*)$'\nproxy = 'http://10.0.0.1:9000/v$1/$2'",
    )
    endpoint = endpoints["http://10.0.0.1:9000"]
    assert forwarded(router, endpoint, b"/api/v2/x") == b"/v2/x"


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        (b"/p/a%3Fb=c", b"/x/p/a%3Fb=c"),  # its ? is the path's: no query
        (b"/p/%2541", b"/x/p/%2541"),  # its % is a %: never decoded twice
        (b"/p/a%20b?z=1", b"/x/p/a%20b?z=1"),
        (b"/p/a%26b?z=1", b"/x/p/a&b?z=1"),
        (b"/q/a%26b=c?z=1", b"/y?u=/q/a%26b=c&z=1"),  # in the query: one argument
    ],
)
def test_uri_in_an_upstream_target_is_encoded_as_a_capture(
    tmp_path: Path, target: bytes, sent: bytes
) -> None:
    """``$uri`` is the decoded path, as a capture is: it goes out encoded the same way
    (nginx sends it decoded, so a client's ``%3F`` would start the upstream's query).
    """
    router, endpoints = proxy_site(
        tmp_path,
        "path = '~ ^/p/'\nproxy = 'http://10.0.0.1:9000/x$uri$is_args$args'\n"
        "[[host.mount]]\npath = '~ ^/q/'\nproxy = 'http://10.0.0.2:9000/y?u=$uri&$args'",
    )
    endpoint = endpoints[
        "http://10.0.0.2:9000" if target.startswith(b"/q") else "http://10.0.0.1:9000"
    ]
    assert forwarded(router, endpoint, target) == sent


def test_a_capture_in_the_upstream_query_is_one_argument(tmp_path: Path) -> None:
    router, endpoints = proxy_site(
        tmp_path, "path = '~ ^/s/(.*)$'\nproxy = 'http://10.0.0.1:9000/search?q=$1&page=$arg_p'"
    )
    endpoint = endpoints["http://10.0.0.1:9000"]
    assert forwarded(router, endpoint, b"/s/a%26b%3Dc?p=3") == b"/search?q=a%26b=c&page=3"
    assert forwarded(router, endpoint, b"/s/x%2By%3B") == b"/search?q=x%2By%3B&page="


def redirected(router: Any, endpoint: FakeEndpoint, target: bytes, location: bytes) -> bytes:
    """The ``Location`` a client gets when the upstream answers ``target`` with ``location``."""
    client = connect(router)
    client.send(b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    endpoint.last.respond(
        b"HTTP/1.1 301 Moved\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
    )
    [answer] = parse_responses(client.take(), [b"GET"])
    value = answer.header(b"location")
    assert value is not None
    return bytes(value)


def test_the_default_proxy_redirect_cannot_map_a_targets_path_back(tmp_path: Path) -> None:
    """The upstream's ``/v2/users/`` is the client's ``/api/v2/users/``: no rule of
    ``default`` knows it, so it rewrites nothing (nginx's too, with variables), rather
    than send the client to ``/v2/users/``, another mount's path. A table does it.
    """
    router, endpoints = proxy_site(
        tmp_path,
        "path = '~ ^/api/v(\\d+)/(.*)$'\nproxy = 'http://10.0.0.1:9000/v$1/$2'\n"
        "[[host.mount]]\npath = '~ ^/b/(.*)$'\nproxy = 'http://10.0.0.2:9000/$1'\n"
        "proxy_redirect = { 'http://10.0.0.2:9000/' = '/b/' }",
    )
    endpoint = endpoints["http://10.0.0.1:9000"]
    upstream = b"http://10.0.0.1:9000/v2/users/"
    assert redirected(router, endpoint, b"/api/v2/users", upstream) == upstream
    endpoint = endpoints["http://10.0.0.2:9000"]
    assert redirected(router, endpoint, b"/b/x", b"http://10.0.0.2:9000/x/") == b"/b/x/"


def test_a_capture_never_makes_a_second_leading_slash(tmp_path: Path) -> None:
    router, endpoints = proxy_site(tmp_path, "path = '~ ^/x(/.*)$'\nproxy = 'unix:/run/a.sock:/$1'")
    endpoint = endpoints["unix:/run/a.sock"]
    assert forwarded(router, endpoint, b"/x/y") == b"/y"


def test_a_proxy_mount_without_a_template_forwards_as_before(tmp_path: Path) -> None:
    router, endpoints = proxy_site(
        tmp_path, "path = '~ ^/api/(.*)$'\nproxy = 'http://10.0.0.1:9000'"
    )
    endpoint = endpoints["http://10.0.0.1:9000"]
    assert forwarded(router, endpoint, b"/api/a%2Fb?x=1") == b"/api/a%2Fb?x=1"


# -- return mounts ----------------------------------------------------------------------------


RETURNS = mount(
    "path = '~ (?s)^/old/(.*)$'\nreturn = '301 https://example.com/new/$1'\n"
    "[[host.mount]]\npath = '~ ^/q/(.*)$'\nreturn = '302 /search?q=$1&from=$host'\n"
    "[[host.mount]]\npath = '~ ^/r(/.*)$'\nreturn = '302 /$1'\n"
    "[[host.mount]]\npath = '~ ^/say/(?P<word>[^/]*)(/x)?$'\nreturn = '200 said ${word}[$2]'\n"
)


def test_a_return_mount_redirects_with_its_captures(tmp_path: Path) -> None:
    router, _ = build(tmp_path, RETURNS)
    moved = get(router, b"/old/a/b%20c?x=1")
    assert (moved.status, moved.header(b"location")) == (301, b"https://example.com/new/a/b%20c")
    assert get(router, b"/q/a%26b").header(b"location") == b"/search?q=a%26b&from=a.test"
    assert get(router, b"/r/evil.example").header(b"location") == b"/%2Fevil.example"


def test_a_capture_with_cr_or_lf_cannot_split_the_location_field(tmp_path: Path) -> None:
    """The decoded ``%0d%0a`` is encoded again: h11 reads one Location, no other field."""
    router, _ = build(tmp_path, RETURNS)
    moved = get(router, b"/old/x%0d%0aSet-Cookie:%20a=b")
    assert moved.header(b"location") == b"https://example.com/new/x%0D%0ASet-Cookie:%20a=b"
    assert moved.header(b"set-cookie") is None


def test_a_return_text_takes_captures_and_an_unset_group_is_empty(tmp_path: Path) -> None:
    router, _ = build(tmp_path, RETURNS)
    assert get(router, b"/say/hi").body == b"said hi[]"
    assert get(router, b"/say/hi/x").body == b"said hi[/x]"
    assert get(router, b"/say/hi", b"HEAD").body == b""


def test_the_patterns_are_searched_once_for_captures(tmp_path: Path, monkeypatch: Any) -> None:
    """The captures come from the match that chose the mount: not a second search."""
    searched = counted_patterns(monkeypatch)
    site = RETURNS + "[[host.mount]]\npath = '/up'\napp = 'tests.apps:environ'\nmax_body = 9\n"
    router, _ = build(tmp_path, site)
    assert router.table.body_limits  # (the protocol asks for the mount first)
    assert get(router, b"/say/hi", b"POST", b"x").body == b"said hi[]"
    assert searched == [b"/say/hi"] * 4  # the fourth pattern found it, once


def test_captures_survive_a_mount_that_answers_later(tmp_path: Path) -> None:
    """A mount's rate_delay holds a request while others are routed: the held one
    keeps the captures of its own match, not the table's last.
    """
    text = mount(
        "path = '~ ^/say/(.*)$'\nreturn = '200 said $1'\n"
        "rate_limit = '1r/s'\nrate_burst = 5\nrate_delay = 1"
    )
    router, builder = build(tmp_path, text)
    clients = []
    for word in (b"one", b"two", b"three"):
        client = connect(router)
        client.send(b"GET /say/" + word + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
        clients.append(client)
    answered = [parse_responses(client.take(), [b"GET"]) for client in clients]
    assert [len(responses) for responses in answered] == [1, 1, 0]  # the third is held
    assert get(router, b"/other").body == b"root"  # (the table searched again)
    builder._reactor.advance(5)
    [late] = parse_responses(clients[2].take(), [b"GET"])
    assert late.body == b"said three"


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"proxy": ["/x=http://b/y/$1"]}, "--proxy '/x=http://b/y/$1': '/y/$1' uses $1:"),
        ({"proxy": ["/x=http://b/y?a=$arg_a"]}, "an upstream URL has no query or fragment"),
        ({"proxy": ["/x=http://b/y$uri"]}, "'http://b/y$uri': $uri would be sent as written"),
        ({"proxy": ["/x=unix:/run/a.sock:/v/${1}"]}, "'/v/${1}' uses $1: captures are for"),
        ({"static": ["/s=/tmp/$1"]}, "--static '/s=/tmp/$1': '/tmp/$1' uses $1:"),
        ({"return": ["/o=301 /n/${1}"]}, "--return '/o=301 /n/${1}': '/n/${1}' uses $1:"),
        ({"vhost": ["a.t=static:/tmp/${2}/x"]}, "'/tmp/${2}/x' uses $2: captures are for"),
    ],
)
def test_the_command_lines_prefixes_refuse_captures(given: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(given)
    assert error in str(raised.value)


def test_a_variable_never_ends_the_upstream_target_with_a_fragment() -> None:
    """A ``#`` a header brings goes out as ``%23`` (a request-target has no fragment)."""
    template = CaptureTemplate("/v$1?tag=$http_x_tag", groups(r"^/(.*)$"), url=True, target=True)
    head = request(b"/x")
    head.headers.append((b"x-tag", b"a#b"))
    assert template.render(match(r"^/(.*)$", b"/x"), head) == b"/vx?tag=a%23b"


def test_the_last_match_is_given_only_to_the_mount_it_chose() -> None:
    first = Mount(b"", "a", match="~", pattern=compile_location_pattern(r"^/(a)", caseless=False))
    second = Mount(b"", "b", match="~", pattern=compile_location_pattern(r"^/(b)", caseless=False))
    table = MountTable([first, second])
    assert table.lookup(b"/a") is first
    assert table.last_match("a").group(1) == b"a"
    assert table.last_match("b") is None  # (its handler asked out of turn: no captures)
    assert table.lookup(b"/c") is None
    assert table.last_match("a") is None


def test_try_files_takes_the_expanded_path_as_uri(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "about.html").write_bytes(b"about page")
    text = mount(
        "path = '~ ^/p/(\\w+)$'\nstatic = 'DIR/pages/$1'\ntry_files = ['$uri', '$uri.html', '=410']"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/p/about").body == b"about page"
    assert get(router, b"/p/contact").status == 410


def test_captures_come_from_the_path_a_host_rewrite_made(tmp_path: Path) -> None:
    """The mounts see the rewritten path (nginx's server rewrites run first): the
    captures are of the match in it.
    """
    text = (
        "[[host]]\nnames = ['a.test']\nrewrite = ['^/legacy/(.*)$ /old/$1 last']\n"
        "[[host.mount]]\npath = '/'\nreturn = '200 root'\n"
        "[[host.mount]]\npath = '~ ^/old/(.*)$'\nreturn = '301 /new/$1'\n"
    )
    router, _ = build(tmp_path, text)
    assert get(router, b"/legacy/a%20b").header(b"location") == b"/new/a%20b"


def test_a_capturing_handler_used_without_its_router_answers_500_and_says_so() -> None:
    spec = parse_return("200 said $1", check_variables=False)
    said = CaptureTemplate("said $1", groups(r"^/(.*)$"), url=False)
    handler = CapturingHandler(FixedResponse(spec, captured=said))
    client = connect(handler)
    with capture_log_events() as events:
        client.send(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
    [answer] = parse_responses(client.take(), [b"GET"])
    assert answer.status == 500
    assert any("did not route" in formatEvent(event) for event in events)


def test_a_static_mount_with_captures_given_no_match_serves_nothing(tmp_path: Path) -> None:
    """Without the match that chose it (a plain route, or none), no file: not the
    fixed directory's index, which empty captures would name.
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "index.html").write_bytes(b"the index")
    template = FileTemplate(f"{tmp_path}/files/$1", groups(r"^/f(.*)$"))
    handler = CapturedStaticHandler(
        StaticOptions.from_mount(template.root, default_options("static")),
        template,
        now=lambda: 0.0,
    )

    class PlainRoute:
        def handle(self, exchange: Any) -> None:
            exchange.route = Route(b"", exchange.request.path, "a.test")
            handler.handle(exchange)

    for served in (handler, PlainRoute()):
        client = connect(served)
        client.send(b"GET /f/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
        [answer] = parse_responses(client.take(), [b"GET"])
        assert (answer.status, answer.body) == (404, b"Not Found\n")


def test_a_capture_after_a_variable_in_a_redirects_host_is_encoded_for_the_path() -> None:
    """``$host`` before the path cannot bring its ``?``: the capture is a path's."""
    template = CaptureTemplate("$scheme://$host/x/$1", groups(r"^/(.*)$"), url=True)
    found = match(r"^/(.*)$", b"/a&b;c+d")
    assert template.render(found, request()) == b"http://a.test/x/a&b;c+d"


@given(_PATH_PIECES | st.binary(max_size=30))
@example(b"/evil.example/x")
@example(b"@evil.example")
@example(b"?x#y")
@example(b"\r\nSet-Cookie: a=b")
def test_a_redirects_site_is_fixed_whatever_the_capture(captured: bytes) -> None:
    """For any capture: no control byte or space in ``Location``, the same host, no
    query or fragment it starts, and the capture back when decoded (RFC 3986 2.1:
    encoded once).
    """
    found = match(r"^/(.*)$", b"/" + captured)
    for text, host in (("https://example.com/new/$1", "example.com"), ("/$1", "")):
        location = CaptureTemplate(text, groups(r"^/(.*)$"), url=True).render(found, request())
        assert not re.search(rb"[\x00-\x20\x7f-\xff]", location)
        parts = urlsplit(location.decode("ascii"))
        assert (parts.netloc, parts.query, parts.fragment) == (host, "", "")
        if host:
            assert unquote_to_bytes(location[len("https://example.com/new/") :]) == captured
