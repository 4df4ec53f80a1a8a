"""The one reader of ``$`` templates, and its spellings read the same in every setting.

The reader is pure logic, tested on strings; the property renders templates through
each setting that takes them (a rewrite line, a mount's captures, a header value, a
log line) on request heads.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import formatEvent

from twistwsgi.captures import CaptureTemplate
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.request import RequestHead
from twistwsgi.http.rules import compile_location_pattern
from twistwsgi.log_format import LogFormat, RequestTemplate
from twistwsgi.rewrite import Rewrites, parse_rewrite
from twistwsgi.templates import Groups, Reference, read_template, split_captures, starts_with_scheme
from twistwsgi.testing import capture_log_events, request_head


def test_references_are_cut_as_nginx_cuts_them() -> None:
    assert read_template("/a${1}0$12${host}x$uri.html") == (
        "/a",
        Reference(1, "${1}", 2, 6),
        "0",
        Reference(1, "$1", 7, 9),
        "2",
        Reference("host", "${host}", 10, 17),
        "x",
        Reference("uri", "$uri", 18, 22),
        ".html",
    )
    # A $ that starts no reference is itself; digits alone are read, for refusing.
    assert read_template("/a$-$") == ("/a$-$",)
    assert [token.key for token in read_template("$0${10}$1x") if isinstance(token, Reference)] == [
        "0",
        "10",
        1,
    ]


@pytest.mark.parametrize("text", ["/a${1", "/a${host", "${}", "${ host}", "${host-x}", "${café}"])
def test_a_brace_left_open_is_refused_or_left_as_text(text: str) -> None:
    """Refused saying what closes it: ``${}`` and ``${café}`` do have their brace."""
    with pytest.raises(
        ValueError, match=r"is not closed: .* \(a name of ASCII letters, digits and _, then \}\)$"
    ):
        read_template(text)
    assert "".join(map(str, read_template(text, strict=False))) == text


def test_scheme_starts_a_url_braced_or_not() -> None:
    assert starts_with_scheme("$scheme://a") and starts_with_scheme("${scheme}://a")
    assert not starts_with_scheme("$schemes://a") and not starts_with_scheme("/$scheme")
    assert not starts_with_scheme("${scheme")


@pytest.mark.parametrize("written", ["/$0", "/${0}", "/${10}", "/${01}"])
def test_a_number_that_is_no_capture_is_refused_alike_everywhere(written: str) -> None:
    """The same words for a mount's captures and a rewrite line's."""
    groups = Groups(count=9, names=frozenset())
    reference = written[1:]
    expected = f"{written!r}: {reference} is no group: nginx numbers captures $1 to $9"
    for where in (groups, None):
        with pytest.raises(ValueError) as caught:
            split_captures(written, where)
        assert str(caught.value).startswith(expected)
    with pytest.raises(ValueError) as caught:
        parse_rewrite(f"^/(a)$ {written} last")
    assert str(caught.value).startswith(expected)


# -- one spelling or the other: the same value -------------------------------------------------

_PATTERN = r"^/(?<name>[a-z]*)(\d*)$"
_VARIABLES = ["host", "args", "uri", "arg_page", "request_uri", "is_args", "http_x_a", "scheme"]
_CAPTURES: list[int | str] = [1, 2, "name"]
_TEXT = st.text(alphabet="ab/._-=&?09", max_size=3)


def _parts(references: list[Any]) -> Any:
    return st.lists(
        st.one_of(_TEXT, st.sampled_from(references).map(lambda key: (key,))), max_size=6
    )


def _spell(parts: list[Any], *, braced: bool) -> str:
    """The template, each reference braced, or bare where that reads the same."""
    written = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            written.append(part)
            continue
        (key,) = part
        after = next((p for p in parts[index + 1 :] if p != ""), "")
        following = after[:1] if isinstance(after, str) else "$"
        # A bare name runs on into letters, digits and _ after it; a bare number is
        # one digit, whatever follows.
        runs_on = isinstance(key, str) and (following.isalnum() or following == "_")
        written.append(f"${{{key}}}" if braced or runs_on else f"${key}")
    return "".join(written)


def _request() -> RequestHead:
    return request_head(
        b"/ab12?page=3&x=y",
        host=b"shop.example",
        headers=[(b"host", b"shop.example"), (b"x-a", b"v")],
        scheme="https",
    )


def _outcome(render: Any, written: str, **options: bool) -> Any:
    """What ``render`` makes of ``written``: its value, or that it was refused."""
    try:
        return render(written, **options)
    except ValueError:
        return ValueError


def _rewritten(line: str) -> Any:
    outcome = Rewrites([parse_rewrite(line)], TrustedProxies(())).target(_request())
    if isinstance(outcome, RequestHead):
        return outcome.decoded_path, outcome.query
    return outcome


def _captured(written: str, *, url: bool, target: bool) -> bytes:
    pattern = compile_location_pattern(_PATTERN, caseless=False)
    template = CaptureTemplate(written, Groups.of(pattern), url=url, target=target)
    return template.render(pattern.search(b"/ab12"), _request())


@given(_parts([*_CAPTURES, *_VARIABLES]))
def test_braced_and_bare_references_render_the_same_in_a_rewrite_line(parts: list[Any]) -> None:
    bare, braced = _spell(parts, braced=False), _spell(parts, braced=True)
    for flag in ("permanent", ""):
        line = f"{_PATTERN} /{{}} {flag}"
        assert _outcome(_rewritten, line.format(bare)) == _outcome(_rewritten, line.format(braced))


@given(
    _parts([*_CAPTURES, *_VARIABLES]),
    st.sampled_from([(True, False), (True, True), (False, False)]),
)
def test_braced_and_bare_references_render_the_same_in_a_mounts_setting(
    parts: list[Any], kind: tuple[bool, bool]
) -> None:
    url, target = kind
    bare, braced = _spell(parts, braced=False), _spell(parts, braced=True)
    assert _outcome(_captured, "/v/" + bare, url=url, target=target) == _outcome(
        _captured, "/v/" + braced, url=url, target=target
    )


@given(_parts(_VARIABLES))
def test_braced_and_bare_variables_render_the_same_in_a_header_and_a_log_line(
    parts: list[Any],
) -> None:
    bare, braced = _spell(parts, braced=False), _spell(parts, braced=True)
    request = _request()
    assert RequestTemplate(bare).render(request) == RequestTemplate(braced).render(request)

    class Logged:
        status = 200
        body_sent = 0
        started = 0.0
        client_closed = False

        def __init__(self) -> None:
            self.request = request

    logged: Any = Logged()
    assert LogFormat(bare).format(logged, 0.0) == LogFormat(braced).format(logged, 0.0)


#: A path whose decoded form holds what each place encodes its own way.
_ODD_PATH = b"/ab%3F1%26%23%25x"


def _odd_request() -> RequestHead:
    request = _request()
    return request_head(
        _ODD_PATH + b"?page=3", host=b"shop.example", headers=request.headers, scheme="https"
    )


def _captured_odd(written: str, *, url: bool, target: bool) -> bytes:
    pattern = compile_location_pattern(r"^/(?<name>[a-z]*)(.*)$", caseless=False)
    template = CaptureTemplate(written, Groups.of(pattern), url=url, target=target)
    request = _odd_request()
    return template.render(pattern.search(request.decoded_path), request)


def _rewritten_odd(line: str) -> Any:
    outcome = Rewrites([parse_rewrite(line)], TrustedProxies(())).target(_odd_request())
    if isinstance(outcome, RequestHead):
        return outcome.decoded_path, outcome.query
    return outcome


@given(
    _parts([*_CAPTURES, *_VARIABLES]),
    st.sampled_from([(True, False), (True, True), (False, False)]),
    st.randoms(use_true_random=False),
)
def test_a_variables_name_reads_the_same_in_any_case_in_every_setting(
    parts: list[Any], kind: tuple[bool, bool], random: Any
) -> None:
    """A variable's name is read without case, as nginx reads it: ``$URI`` is ``$uri``
    wherever it stands, encoded as ``$uri`` is (a proxy target's decoded path too).
    """
    lower = _spell(parts, braced=False)
    cased = [
        (part[0].swapcase(),)
        if isinstance(part, tuple) and part[0] in _VARIABLES and random.random() < 0.5
        else part
        for part in parts
    ]
    mixed = _spell(cased, braced=False)
    url, target = kind
    assert _outcome(_captured_odd, "/v/" + lower, url=url, target=target) == _outcome(
        _captured_odd, "/v/" + mixed, url=url, target=target
    )
    for flag in ("permanent", "last"):
        line = f"^/(?<name>[a-z]*)(.*)$ /{{}} {flag}"
        assert _outcome(_rewritten_odd, line.format(lower)) == _outcome(
            _rewritten_odd, line.format(mixed)
        )


_SPELLINGS = st.text(alphabet="$${}19az_A-/.", max_size=12)


@given(_SPELLINGS)
def test_a_template_reads_back_as_written(text: str) -> None:
    """The reader keeps every character: text and references, each where it stood."""
    tokens = read_template(text, strict=False)
    assert "".join(t if isinstance(t, str) else t.spelled for t in tokens) == text
    for token in tokens:
        if isinstance(token, Reference):
            assert text[token.start : token.end] == token.spelled


_EVERY_SETTING = """\
[server]
access_log_format = "${host} $URI ${status} $request_uri"
[[host]]
names = ["shop.example"]
rewrite = [
    '^/old/(?<slug>.*)$ /new/${slug}$is_args$args? permanent',
    '^/in/(.*)$ /files/${1} last',
]
[[host.mount]]
path = "/files"
static = "FILES"
try_files = ["$uri", "${URI}.txt", "=404"]
[[host.mount]]
path = '~ ^/r/(?<name>[a-z]+)([0-9]*)$'
return = "302 /to/${name}$is_args${2}"
[[host.mount]]
path = '~ ^/s/(.+)$'
static = "FILES/$1"
"""


def test_no_template_is_read_while_requests_are_answered(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every setting's ``$`` references are read when the configuration is loaded;
    answering a request only renders the pieces (the reader's pattern, taken away
    once the server is built, is never asked again).
    """
    from tests.test_rewrite import exchange, serve
    from twistwsgi import templates

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_bytes(b"file a\n")
    site = _EVERY_SETTING.replace("FILES", str(tmp_path / "files"))
    service, _ = serve(tmp_path, site)

    class Unread:
        def finditer(self, text: str) -> Any:
            raise AssertionError(f"{text!r} read while answering a request")

    read_template.cache_clear()
    monkeypatch.setattr(templates, "_REFERENCE", Unread())
    targets = [b"/old/x?q=1", b"/in/a", b"/files/a", b"/r/ab12?p=1", b"/s/a.txt"]
    with capture_log_events() as events:
        responses = exchange(
            service,
            b"".join(b"GET " + t + b" HTTP/1.1\r\nHost: shop.example\r\n\r\n" for t in targets),
            [b"GET"] * len(targets),
        )
    assert [(r.status, r.header(b"location")) for r in responses] == [
        (301, b"/new/x?q=1"),
        (200, None),
        (200, None),
        (302, b"/to/ab?12"),
        (200, None),
    ]
    assert "shop.example /r/ab12 302 /r/ab12?p=1" in map(formatEvent, events)
