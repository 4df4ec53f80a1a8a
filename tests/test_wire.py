"""The bytes the server writes, from ``twistwsgi.http.wire``: status lines, the
IMF-fixdate, the per-second Date cache, chunk framing and response heads. Checked
against stdlib references and h11, not against the code's own formatting.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi.http import wire
from twistwsgi.http.wire import DateCache, chunk, http_date, status_line
from twistwsgi.testing import parse_responses

#: The last second of year 9999, the largest IMF-fixdate (4-digit year).
MAX_SECONDS = 253402300799

# RFC 9110 5.6.7 IMF-fixdate.
IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    rb"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


# -- status lines ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (100, b"HTTP/1.1 100 Continue\r\n"),
        (599, b"HTTP/1.1 599 \r\n"),
    ],
)
def test_status_line_standard_reason(status: int, line: bytes) -> None:
    """RFC 9112 4: ``HTTP-version SP status-code SP [reason-phrase] CRLF``; the
    standard phrase by default, an empty one (the SP stays) for unknown codes.
    """
    assert status_line(status) == line


def test_status_line_custom_reason() -> None:
    """A given reason replaces the standard phrase, even an empty one."""
    assert status_line(200, b"Fine Thanks") == b"HTTP/1.1 200 Fine Thanks\r\n"
    assert status_line(404, b"") == b"HTTP/1.1 404 \r\n"
    assert status_line(299, b"Custom") == b"HTTP/1.1 299 Custom\r\n"


def test_status_line_cache_keeps_reasons_apart() -> None:
    """The cache is keyed by status and reason: a custom reason never leaks into
    the default line of the same status, and repeated calls give equal bytes.
    """
    first = status_line(203)
    assert status_line(203, b"Other") == b"HTTP/1.1 203 Other\r\n"
    assert status_line(203) == first == b"HTTP/1.1 203 Non-Authoritative Information\r\n"
    assert status_line(203, b"Other") == b"HTTP/1.1 203 Other\r\n"


def test_status_line_past_the_cache_limit() -> None:
    """Once the cache is full, lines are still built correctly (just not kept)."""
    for number in range(1100):
        reason = b"R%d" % number
        assert status_line(200, reason) == b"HTTP/1.1 200 " + reason + b"\r\n"
    assert status_line(200, b"R7") == b"HTTP/1.1 200 R7\r\n"


_VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
_reason = st.text(_VISIBLE + " ", max_size=20).map(lambda text: text.strip().encode("ascii"))


@given(st.integers(100, 999).filter(lambda status: status != 101), _reason)
def test_status_line_parses_with_h11(status: int, reason: bytes) -> None:
    """h11 reads back the status and reason of any line with a printable reason
    (101 left out: h11 refuses a protocol switch nobody asked for).
    """
    head = status_line(status, reason) + b"Content-Length: 0\r\n\r\n"
    if status < 200:
        head += b"HTTP/1.1 204 No Content\r\n\r\n"
    parsed = parse_responses(head)[0]
    assert parsed.status == status
    assert parsed.reason == reason
    assert parsed.http_version == b"1.1"


# -- dates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, b"Thu, 01 Jan 1970 00:00:00 GMT"),
        (784111777, b"Sun, 06 Nov 1994 08:49:37 GMT"),
        (951782400, b"Tue, 29 Feb 2000 00:00:00 GMT"),
        (MAX_SECONDS, b"Fri, 31 Dec 9999 23:59:59 GMT"),
    ],
)
def test_http_date_examples(seconds: int, text: bytes) -> None:
    """The RFC 9110 5.6.7 example date, the epoch, a leap day and the largest date."""
    assert http_date(seconds) == text


@given(st.floats(min_value=0, max_value=MAX_SECONDS + 0.999))
def test_http_date_matches_email_utils(seconds: float) -> None:
    """For any time from 1970 to 9999, the value equals the stdlib's
    ``formatdate(usegmt=True)`` and is an IMF-fixdate (RFC 9110 5.6.7).
    """
    text = http_date(seconds)
    assert text == email.utils.formatdate(seconds, usegmt=True).encode("ascii")
    assert IMF_FIXDATE.fullmatch(text)


@given(st.integers(min_value=0, max_value=MAX_SECONDS))
def test_http_date_parses_back(seconds: int) -> None:
    """Parsing the value with the stdlib gives back the same second in UTC."""
    parsed = email.utils.parsedate_to_datetime(http_date(seconds).decode("ascii"))
    assert parsed == datetime.fromtimestamp(seconds, UTC)


def test_date_cache_formats_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """DateCache calls http_date only when the whole second changes, and returns
    the value of the current second (fractions truncated).
    """
    calls: list[float] = []
    real = wire.http_date

    def counting(seconds: float) -> bytes:
        calls.append(seconds)
        return real(seconds)

    monkeypatch.setattr(wire, "http_date", counting)
    cache = DateCache()
    assert cache.get(100.0) == real(100)
    assert cache.get(100.5) == real(100)
    assert cache.get_fields(100.999) == b"Date: " + real(100) + b"\r\n"
    assert len(calls) == 1
    assert cache.get(101.0) == real(101)
    assert cache.get_fields(101.2) == b"Date: " + real(101) + b"\r\n"
    assert len(calls) == 2
    # Going back (a clock stepped backwards) is a new second as well.
    assert cache.get_fields(100.5) == b"Date: " + real(100) + b"\r\n"
    assert len(calls) == 3


def test_date_cache_fields_include_server_only_when_set() -> None:
    """get_fields ends with a Server line when a server value is set, and has only
    the Date line otherwise.
    """
    assert DateCache().get_fields(0) == b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    assert DateCache(b"twistwsgi").get_fields(0) == (
        b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: twistwsgi\r\n"
    )


def test_date_cache_fields_parse_as_header_lines() -> None:
    """The cached lines form valid field lines that h11 reads as Date and Server."""
    cache = DateCache(b"test/1.0")
    head = b"HTTP/1.1 204 No Content\r\n" + cache.get_fields(784111777.25) + b"\r\n"
    response = parse_responses(head)[0]
    assert response.header(b"date") == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert response.header(b"server") == b"test/1.0"


# -- chunks ---------------------------------------------------------------------------


def parse_chunk(framed: bytes) -> tuple[bytes, bytes]:
    """Parse one chunk (RFC 9112 7.1) from ``framed``; return its data and the rest."""
    size_line, crlf, rest = framed.partition(b"\r\n")
    assert crlf, "chunk-size line has no CRLF"
    assert re.fullmatch(rb"[0-9A-Fa-f]+", size_line), size_line
    size = int(size_line, 16)
    data, end = rest[:size], rest[size : size + 2]
    assert len(data) == size, "chunk shorter than its size"
    assert end == b"\r\n", "chunk-data not followed by CRLF"
    return data, rest[size + 2 :]


@given(st.binary(min_size=1, max_size=5000))
def test_chunk_parses_back(data: bytes) -> None:
    """For any non-empty bytes, the framed chunk parses back to exactly those bytes
    with nothing left over (RFC 9112 7.1).
    """
    assert parse_chunk(chunk(data)) == (data, b"")


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8))
def test_chunks_form_a_body_h11_reads(pieces: list[bytes]) -> None:
    """A chunked body made of chunk() pieces and the last-chunk is read by h11 as
    the pieces joined.
    """
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = head + b"".join(chunk(piece) for piece in pieces) + b"0\r\n\r\n"
    (response,) = parse_responses(raw)
    assert response.body == b"".join(pieces)


def test_chunk_size_is_hex() -> None:
    """The chunk size is written in hexadecimal."""
    assert chunk(b"x" * 255).split(b"\r\n")[0].lower() == b"ff"
    assert chunk(b"x" * 16).split(b"\r\n")[0] == b"10"
