"""The pure HTTP/1.1 rules in ``twistwsgi.http.rules``: transfer codings, ``Host``
syntax, request-target forms, path percent-decoding, ``Connection`` options and
reason phrases.
"""

from __future__ import annotations

import ipaddress
import string
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi.http.rules import (
    RequestError,
    TargetForm,
    classify_target,
    connection_options,
    is_valid_chunk_line,
    is_valid_host,
    names_another_protocol,
    reason_phrase,
    split_target,
    transfer_coding_is_chunked,
    unknown_method_status,
    unquote_path,
)

# -- transfer codings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [b"chunked"],
        [b"Chunked"],
        [b"CHUNKED"],
        [b" chunked "],
        [b"\tchunked\t"],
        [b"cHuNkEd"],
    ],
)
def test_single_chunked_coding_is_accepted(values: list[bytes]) -> None:
    """A lone ``chunked`` is accepted whatever its case or surrounding whitespace."""
    assert transfer_coding_is_chunked(values) is True


@pytest.mark.parametrize(
    "values",
    [
        [b"chunked,"],
        [b",chunked"],
        [b", chunked"],
        [b", ,chunked, ,"],
        [b"", b"chunked"],
        [b"chunked", b""],
        [b" , ", b"cHuNkEd"],
        [b"gzip,, chunked"],
        [b"x-custom", b"", b"Chunked"],
    ],
)
def test_empty_list_element_is_400(values: list[bytes]) -> None:
    """An empty element in the codings (``, chunked``) is refused with 400.

    RFC 9110 5.6.1 has recipients skip empty list elements, but in the framing field
    it is a known obfuscation (RFC 9112 11.2): a server in front that reads it
    otherwise frames the body differently. nginx refuses it too (501).
    """
    with pytest.raises(RequestError) as excinfo:
        transfer_coding_is_chunked(values)
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    "values",
    [
        [b"chunked, gzip"],
        [b"chunked", b"gzip"],
        [b"gzip"],
        [b"identity"],
        [b"chunked, chunked"],
        [b"chunked", b"chunked"],
        [b"gzip, chunked, chunked"],
        [b"chunked,gzip,chunked"],
        [],
        [b""],
        [b" , "],
    ],
)
def test_chunked_not_final_or_repeated_is_400(values: list[bytes]) -> None:
    """RFC 9112 6.3 item 4: when ``chunked`` is not the final coding (or is missing,
    or applied twice) the body length cannot be determined, so the answer is 400.
    """
    with pytest.raises(RequestError) as excinfo:
        transfer_coding_is_chunked(values)
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    "values",
    [
        [b"gzip, chunked"],
        [b"gzip", b"chunked"],
        [b"identity, chunked"],
        [b"deflate, gzip, chunked"],
        [b"x-custom", b"Chunked"],
    ],
)
def test_other_coding_before_chunked_is_501(values: list[bytes]) -> None:
    """RFC 9112 6.1: a transfer coding the server does not understand, ahead of a
    final ``chunked``, is answered with 501 Not Implemented.
    """
    with pytest.raises(RequestError) as excinfo:
        transfer_coding_is_chunked(values)
    assert excinfo.value.status == 501


# -- chunk-size lines (RFC 9112 7.1.1) --------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"3\r\n",
        b"0003\r\n",
        b"aF\r\n",
        b"3;name\r\n",
        b"3;name=value\r\n",
        b"3;a;b=c;d\r\n",
        b'3;name="quoted value"\r\n',
        b'3;name=""\r\n',
        b'3;name="a\\"b"\r\n',
        b"3 ;\tname = value\r\n",
        b"0;last=1\r\n",
    ],
)
def test_chunk_lines_the_grammar_allows(line: bytes) -> None:
    """Sizes, names, token and quoted values, and BWS around ';' and '=' are valid."""
    assert is_valid_chunk_line(line)


@pytest.mark.parametrize(
    "line",
    [
        b"3;a=\r\n",  # an empty value
        b"3;a=;b\r\n",
        b"3;=b\r\n",  # an empty name
        b"3;\r\n",
        b'3;a=b"c"\r\n',  # DQUOTE is no tchar
        b'3;a="b\r\n',  # an unterminated quoted-string
        b'3;a="b"c\r\n',
        b'3;a="x\ry"\r\n',  # CR is no qdtext
        b"3;a=\x00\r\n",
        b";a\r\n",  # no size
        b"3\n",  # a bare LF
        b"3",
    ],
)
def test_chunk_lines_the_grammar_refuses(line: bytes) -> None:
    """What chunk-size [ chunk-ext ] CRLF cannot produce is invalid."""
    assert not is_valid_chunk_line(line)


def test_request_error_str_has_status_and_detail() -> None:
    """A RequestError prints as ``"<status> <detail>"``, the form used in logs."""
    with pytest.raises(RequestError) as excinfo:
        transfer_coding_is_chunked([b"gzip, chunked"])
    error = excinfo.value
    assert error.detail
    assert str(error) == f"501 {error.detail}"


_CODINGS = ["chunked", "gzip", "deflate", "compress", "identity"]


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def coding_fields(draw: st.DrawFn) -> tuple[list[bytes], list[str]]:
    """Transfer-Encoding field values with padding, case and empty elements."""
    codings = draw(st.lists(st.sampled_from(_CODINGS), max_size=5))
    elements: list[str] = []
    for coding in codings:
        padding = draw(st.sampled_from(["", " ", "\t", "  "]))
        elements.append(padding + _random_case(draw, coding) + padding)
        if draw(st.booleans()):
            elements.append(draw(st.sampled_from(["", " "])))
    # Cut the element list into one or more field lines.
    values: list[bytes] = []
    start = 0
    while start < len(elements):
        size = draw(st.integers(1, len(elements) - start))
        values.append(",".join(elements[start : start + size]).encode("ascii"))
        start += size
    return values, codings


def _reference_framing(codings: list[str], values: list[bytes]) -> bool | int:
    """What RFC 9112 6.1/6.3 say about ``codings``: True, or the error status.

    An empty list element anywhere in ``values`` is refused (400) first.
    """
    if any(not element.strip() for value in values for element in value.split(b",")):
        return 400
    if not codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
        return 400
    if len(codings) > 1:
        return 501
    return True


@given(coding_fields())
def test_transfer_coding_matches_reference(case: tuple[list[bytes], list[str]]) -> None:
    """For any mix of codings, padding, case, empty elements and field lines, the
    decision equals that of a reference written from RFC 9112 6.1 and 6.3.
    """
    values, codings = case
    try:
        outcome: bool | int = transfer_coding_is_chunked(values)
    except RequestError as error:
        outcome = error.status
    assert outcome == _reference_framing(codings, values)


# -- Host syntax ----------------------------------------------------------------------

_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
_ALLOWED_ANYWHERE = set((_UNRESERVED + _SUB_DELIMS + "%:[]").encode("ascii"))
_FORBIDDEN = [bytes((byte,)) for byte in range(256) if byte not in _ALLOWED_ANYWHERE]

_hexdigit = st.sampled_from(string.hexdigits)
_pct_encoded = st.tuples(_hexdigit, _hexdigit).map(lambda pair: "%" + pair[0] + pair[1])
_reg_name = st.lists(
    st.one_of(st.sampled_from(_UNRESERVED + _SUB_DELIMS), _pct_encoded), max_size=30
).map("".join)
_ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_ipv6_text = st.one_of(
    st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).compressed),
    st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).exploded),
    st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n).compressed.upper()),
    _ipv4.map(lambda v4: "::ffff:" + v4),
)
_ipv_future = st.tuples(
    st.text(string.hexdigits, min_size=1, max_size=4),
    st.text(_UNRESERVED + _SUB_DELIMS + ":", min_size=1, max_size=20),
).map(lambda parts: "v" + parts[0] + "." + parts[1])
_ip_literal = st.one_of(_ipv6_text, _ipv_future).map(lambda inner: "[" + inner + "]")
_port = st.one_of(st.just(""), st.text(string.digits, max_size=6).map(lambda p: ":" + p))

#: ``host [ ":" port ]`` from the RFC 3986 3.2.2/3.2.3 grammar, as bytes; an empty
#: host only alone (RFC 9110 4.2.1: an ``http`` URI's host is never empty).
hosts = st.tuples(st.one_of(_reg_name, _ipv4, _ip_literal), _port).map(
    lambda parts: (parts[0] + parts[1] if parts[0] else "").encode("ascii")
)


@given(hosts)
def test_hosts_from_the_rfc3986_grammar_are_valid(host: bytes) -> None:
    """Every ``host[:port]`` built from the RFC 3986 3.2.2 grammar (reg-name with
    pct-encoded, IPv4address, bracketed IPv6address or IPvFuture) and 3.2.3 port
    is a valid Host field value (RFC 9110 7.2).
    """
    assert is_valid_host(host)


@given(st.binary(max_size=20), st.sampled_from(_FORBIDDEN), st.binary(max_size=20))
def test_any_byte_outside_the_grammar_makes_host_invalid(
    before: bytes, forbidden: bytes, after: bytes
) -> None:
    """A value containing a byte that no production of the Host grammar allows
    (space, "/", "@", backslash, "?", "#", controls, non-ASCII, ...) is invalid.
    """
    assert not is_valid_host(before + forbidden + after)


@given(hosts, st.sampled_from(_FORBIDDEN), st.integers(0, 100))
def test_forbidden_byte_inside_a_valid_host_makes_it_invalid(
    host: bytes, forbidden: bytes, position: int
) -> None:
    """Inserting one forbidden byte anywhere into an otherwise valid host makes it
    invalid, so a valid prefix or suffix cannot carry it through.
    """
    position = min(position, len(host))
    assert not is_valid_host(host[:position] + forbidden + host[position:])


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"EXAMPLE.com:8080",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8443",
        b"[v1.fe80::a+en1]",
        b"caf%C3%A9.example",
        b"example.com:",
        b"",
    ],
)
def test_valid_host_examples(host: bytes) -> None:
    """Common Host values, an empty port and the empty value (RFC 9110 7.2 allows
    an empty Host when the target has no authority) are valid.
    """
    assert is_valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        b"exa mple.com",
        b"example.com/path",
        b"user@example.com",
        b"example.com\\evil",
        b"example.com\r\nX: y",
        b"example.com:80:80",
        b"example.com:8o",
        b"::1",
        b"[::1",
        b"::1]",
        b"[]",
        b"a[::1]",
        b"[::1]x",
        b"[::g]",
        b"%4",
        b"%zz.example",
        b"example.com%",
        b":8080",  # a port with no host (RFC 9110 4.2.1)
        b":",
    ],
)
def test_invalid_host_examples(host: bytes) -> None:
    """Spaces, path or userinfo delimiters, backslashes, CRLF, a second colon, a
    non-numeric port, unbracketed or unbalanced IPv6 and broken percent-escapes
    are not valid Host values (RFC 3986 3.2.2).
    """
    assert not is_valid_host(host)


# -- request-target forms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "path", "query"),
    [
        (b"GET", b"/", b"/", b""),
        (b"GET", b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2"),
        (b"POST", b"/a?b?c", b"/a", b"b?c"),
        (b"GET", b"/a?", b"/a", b""),
        (b"GET", b"//double", b"//double", b""),
        (b"GET", b"/%2F?%3F", b"/%2F", b"%3F"),
    ],
)
def test_origin_form(method: bytes, target: bytes, path: bytes, query: bytes) -> None:
    """RFC 9112 3.2.1: a target starting with "/" is origin-form; it splits at the
    first "?" into a still-encoded path and the query, and has no authority.
    """
    form = classify_target(method, target)
    assert form is TargetForm.ORIGIN
    assert split_target(form, target) == (path, query, None)


@pytest.mark.parametrize(
    ("target", "path", "query", "authority"),
    [
        (b"http://example.com/a/b?x=1", b"/a/b", b"x=1", b"example.com"),
        (b"https://example.com:8443/", b"/", b"", b"example.com:8443"),
        (b"HTTP://Example.COM/x", b"/x", b"", b"Example.COM"),
        (b"HtTpS://[::1]:8443/x?y", b"/x", b"y", b"[::1]:8443"),
        (b"http://example.com", b"/", b"", b"example.com"),
        (b"http://example.com?q=1", b"/", b"q=1", b"example.com"),
        (b"http://example.com:80", b"/", b"", b"example.com:80"),
    ],
)
def test_absolute_form(target: bytes, path: bytes, query: bytes, authority: bytes) -> None:
    """RFC 9112 3.2.2: an http(s) absolute-form target (scheme case-insensitive,
    RFC 3986 3.1) yields its authority and path; an empty path becomes "/"
    (RFC 9112 3.2.1 for the origin server's view of the same URI).
    """
    form = classify_target(b"GET", target)
    assert form is TargetForm.ABSOLUTE
    assert split_target(form, target) == (path, query, authority)


@pytest.mark.parametrize(
    "target",
    [
        b"ftp://example.com/x",
        b"file:///etc/passwd",
        b"ws://example.com/",
        b"javascript://example.com/",
    ],
)
def test_absolute_form_with_other_scheme_is_400(target: bytes) -> None:
    """Only http and https absolute-form targets are served; other schemes are 400."""
    with pytest.raises(RequestError) as excinfo:
        classify_target(b"GET", target)
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    "target",
    [
        b"http:///path",
        b"http://user@example.com/",
        b"http://exa mple.com/",
        b"http://example.com:80:80/",
        b"http://[::1/",
        b"http:/example.com/",
        b"http:example.com",
        b"example.com",
        b"example.com:443",
        b"",
        b"**",
        b"?x",
    ],
)
def test_malformed_targets_are_400(target: bytes) -> None:
    """An empty or malformed authority, a missing "//", and anything that is not
    one of the four RFC 9112 3.2 forms is 400 (authority-form only with CONNECT).
    """
    with pytest.raises(RequestError) as excinfo:
        classify_target(b"GET", target)
    assert excinfo.value.status == 400


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"/a#b"),
        (b"GET", b"/#"),
        (b"GET", b"http://example.com/#x"),
        (b"GET", b"http://example.com#x"),
        (b"OPTIONS", b"*#x"),
        (b"CONNECT", b"example.com:443#x"),
    ],
)
def test_fragment_is_400(method: bytes, target: bytes) -> None:
    """RFC 9112 3.2: no request-target form includes a fragment; one is refused."""
    with pytest.raises(RequestError) as excinfo:
        classify_target(method, target)
    assert excinfo.value.status == 400


def test_asterisk_form_only_with_options() -> None:
    """RFC 9112 3.2.4: "*" is the asterisk-form, allowed only for OPTIONS; it has no
    path, query or authority.
    """
    form = classify_target(b"OPTIONS", b"*")
    assert form is TargetForm.ASTERISK
    assert split_target(form, b"*") == (b"", b"", None)
    for method in (b"GET", b"HEAD", b"POST", b"options"):
        with pytest.raises(RequestError) as excinfo:
            classify_target(method, b"*")
        assert excinfo.value.status == 400


@pytest.mark.parametrize("target", [b"example.com:443", b"[::1]:8443", b"127.0.0.1:22"])
def test_connect_takes_authority_form(target: bytes) -> None:
    """RFC 9112 3.2.3: CONNECT's target is the authority-form, with no path, query
    or authority taken from it by split_target.
    """
    form = classify_target(b"CONNECT", target)
    assert form is TargetForm.AUTHORITY
    assert split_target(form, target) == (b"", b"", None)


@pytest.mark.parametrize(
    "target",
    [b"/", b"/path", b"http://example.com/", b"http://example.com:80", b"user@example.com:443"],
)
def test_connect_with_another_form_is_400(target: bytes) -> None:
    """RFC 9112 3.2.3: CONNECT with an origin-form, absolute-form or userinfo target
    is 400.
    """
    with pytest.raises(RequestError) as excinfo:
        classify_target(b"CONNECT", target)
    assert excinfo.value.status == 400


@given(st.binary(max_size=40), st.sampled_from([b"GET", b"OPTIONS", b"CONNECT", b"POST"]))
def test_classify_target_raises_only_request_error(target: bytes, method: bytes) -> None:
    """For any bytes, classify_target returns a form or raises RequestError(400), and
    split_target accepts whatever it classified.
    """
    try:
        form = classify_target(method, target)
    except RequestError as error:
        assert error.status == 400
        return
    path, _query, authority = split_target(form, target)
    if form is TargetForm.ORIGIN:
        assert path.startswith(b"/")
    if form is TargetForm.ABSOLUTE:
        assert path.startswith(b"/")
        assert authority is not None
        assert is_valid_host(authority)


# -- percent-decoding -----------------------------------------------------------------


@given(st.binary().filter(lambda b: b"%" not in b))
def test_unquote_without_percent_is_identity(path: bytes) -> None:
    """RFC 3986 2.1: bytes without "%" contain no escape and decode to themselves."""
    assert unquote_path(path) == path


@given(st.binary(), st.booleans())
def test_unquote_inverts_quoting_every_byte(data: bytes, upper: bool) -> None:
    """Quoting every byte as %XX (either hex case) and unquoting gives the bytes
    back, for any bytes without NUL (RFC 3986 2.1: hex digits are case-insensitive).
    """
    data = data.replace(b"\x00", b"")
    template = "%{:02X}" if upper else "%{:02x}"
    quoted = "".join(template.format(byte) for byte in data).encode("ascii")
    assert unquote_path(quoted) == data


@st.composite
def well_formed_paths(draw: st.DrawFn) -> bytes:
    """Bytes whose every "%" starts a valid escape of a non-NUL byte."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=5).map(lambda b: b.replace(b"%", b"")),
                st.integers(1, 255).map(lambda n: b"%%%02X" % n),
                st.integers(1, 255).map(lambda n: b"%%%02x" % n),
            ),
            max_size=10,
        )
    )
    return b"".join(pieces)


@given(well_formed_paths())
def test_unquote_matches_urllib_on_well_formed_input(path: bytes) -> None:
    """On well-formed input, decoding equals urllib's ``unquote_to_bytes`` (the
    reference RFC 3986 2.1 decoder); in particular "%25" decodes only once.
    """
    assert unquote_path(path) == unquote_to_bytes(path)


def test_unquote_decodes_once() -> None:
    """Decoding is one pass: "%2541" becomes "%41", never "A"."""
    assert unquote_path(b"/%2541") == b"/%41"
    assert unquote_path(b"/a%2Fb%2fc") == b"/a/b/c"


@pytest.mark.parametrize(
    "path",
    [b"%", b"/a%", b"/a%4", b"/a%G1", b"/a%4G", b"/%%41", b"/% 41", b"/%-1", b"/%+1"],
)
def test_malformed_escape_is_400(path: bytes) -> None:
    """A "%" not followed by two hex digits makes the path ambiguous: 400."""
    with pytest.raises(RequestError) as excinfo:
        unquote_path(path)
    assert excinfo.value.status == 400


@pytest.mark.parametrize("path", [b"%00", b"/a%00b", b"/ok%41%00"])
def test_encoded_nul_is_400(path: bytes) -> None:
    """An escape that decodes to NUL is refused with 400."""
    with pytest.raises(RequestError) as excinfo:
        unquote_path(path)
    assert excinfo.value.status == 400


@given(st.binary())
def test_unquote_raises_only_request_error(path: bytes) -> None:
    """For any bytes, unquote_path returns bytes or raises RequestError(400)."""
    try:
        result = unquote_path(path)
    except RequestError as error:
        assert error.status == 400
    else:
        assert len(result) <= len(path)
        assert result == unquote_to_bytes(path)


# -- Connection options and reason phrases --------------------------------------------


@pytest.mark.parametrize(
    ("value", "options"),
    [
        (b"close", {b"close"}),
        (b"Close", {b"close"}),
        (b"Keep-Alive, Upgrade", {b"keep-alive", b"upgrade"}),
        (b" , ,close,\t", {b"close"}),
        (b"keep-alive,KEEP-ALIVE", {b"keep-alive"}),
        (b"", set()),
        (b" , ", set()),
    ],
)
def test_connection_options(value: bytes, options: set[bytes]) -> None:
    """RFC 9110 7.6.1: Connection is a comma-separated list of case-insensitive
    option tokens; empty elements are ignored (RFC 9110 5.6.1).
    """
    assert connection_options(value) == options


@given(
    st.sampled_from([b"keep-alive", b"close", b"upgrade", b"te"]).flatmap(
        lambda token: st.lists(st.booleans(), min_size=len(token), max_size=len(token)).map(
            lambda upper: bytes(
                byte - 32 if flip and 97 <= byte <= 122 else byte
                for byte, flip in zip(token, upper, strict=True)
            )
        )
    )
)
def test_connection_options_of_one_token_in_any_case(value: bytes) -> None:
    """The values split once ahead (keep-alive, close...) read as any other spelling."""
    assert connection_options(value) == {value.lower()}
    assert connection_options(value + b",") == connection_options(value)


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, b"OK"),
        (204, b"No Content"),
        (404, b"Not Found"),
        (431, b"Request Header Fields Too Large"),
        (505, b"HTTP Version Not Supported"),
    ],
)
def test_reason_phrase_standard(status: int, phrase: bytes) -> None:
    """Registered status codes get their standard phrase (RFC 9110 15)."""
    assert reason_phrase(status) == phrase


@pytest.mark.parametrize("status", [299, 599, 999, 0])
def test_reason_phrase_unknown_is_empty(status: int) -> None:
    """Unregistered codes get an empty phrase (RFC 9112 4: the reason is optional)."""
    assert reason_phrase(status) == b""


# -- methods llhttp does not know ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"FOO / HTTP/1.1\r\n", 501),
        (b"get /", 501),  # methods are case-sensitive (RFC 9110 9.1)
        (b"M-SRCH2 ", 501),
        (b"FOO! ", 501),  # '!' is a tchar
        (b"FOO", None),  # the token may go on
        (b"", None),
        (b" GET / HTTP/1.1", 400),  # SP with no token before it
        (b"GE@T / HTTP/1.1", 400),
        (b"GET\t/ HTTP/1.1", 400),
        (b"FOO\r\n", 400),
        (b"\x16\x03\x01\x00", 400),  # a TLS ClientHello
        (b"A" * 8, None),
        (b"A" * 8 + b" ", 501),
        (b"A" * 9, 414),  # past the limit (8 here)
        (b"A" * 9 + b"\x00", 414),  # decided by the length wherever the line ends
    ],
)
def test_an_unknown_method_is_answered_from_its_line(line: bytes, status: int | None) -> None:
    assert unknown_method_status(line, 8) == status


@given(line=st.binary(max_size=20), cut=st.integers(min_value=0, max_value=20))
def test_an_unknown_method_s_answer_does_not_change_with_more_bytes(line: bytes, cut: int) -> None:
    """Once a prefix of the line decides the answer, the whole line gives the same."""
    decided = unknown_method_status(line[:cut], 8)
    if decided is not None:
        assert unknown_method_status(line, 8) == decided


# -- the protocol a request line names ----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "other"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", False),
        (b"GET / HTTP/2.0\r\n", False),  # HTTP, in a version not served (505)
        (b"GET / RTSP/1.0\r\nHost: a\r\n\r\n", True),
        (b"DESCRIBE rtsp://a/ RTSP/2.0\r\n", True),
        (b"SOURCE /mount ICE/1.0\r\n", True),
        (b"GET / http/1.1\r\n", True),  # HTTP-name is case-sensitive (RFC 9112 2.3)
        (b"\r\n\r\nGET  /  RTSP/1.0\r\n", True),  # empty lines first, extra spaces
        (b"GET / RTSP/9", True),  # as far as llhttp read (its refusal of the digits)
        (b"GET /\r\n\r\n", False),  # HTTP/0.9's simple request names no protocol
        (b"GET /\r\nX: a b c\r\n", False),  # the fields after the line are not read
        (b"GET / HTTP/1.1\r\nX: RTSP/1.0\r\n", False),
    ],
)
def test_the_protocol_a_request_line_names(message: bytes, other: bool) -> None:
    assert names_another_protocol(message) is other
