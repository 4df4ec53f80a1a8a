"""The pure file-serving rules in ``twistwsgi.files``: entity tags, HTTP-dates, the
RFC 9110 13.2.2 preconditions, ``Range`` parsing and coalescing, ``If-Range``, the
``multipart/byteranges`` framing, ``Accept-Encoding`` negotiation and media types.

Every expectation comes from an oracle that does not share code with the module:
the standard library's ``email`` package (date formatting, MIME parsing), a
brute-force byte-offset model of RFC 9110 14.1.2, regular expressions written from
the RFC's ABNF, and hand-written tables citing the RFC text.
"""

from __future__ import annotations

import email.utils
import itertools
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from twistwsgi.files import (
    ByteRange,
    Precondition,
    RangeResult,
    accepted_encodings,
    content_type,
    etag_for,
    evaluate_preconditions,
    if_range_allows,
    multipart_parts,
    parse_http_date,
    parse_range,
    preferred_encoding,
)

# -- HTTP-dates (RFC 9110 5.6.7) ------------------------------------------------------

#: Day and month names of RFC 9110 5.6.7 (``day-name``, ``day-name-l``, ``month``),
#: spelled out here so the formats below do not depend on the host's locale.
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: The example instant of RFC 9110 5.6.7, 1994-11-06 08:49:37 UTC.
RFC_EXAMPLE_TIME = int(datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp())
#: The clock the functions are given where its value does not matter (2026-12-05).
NOW = datetime(2026, 12, 5, tzinfo=UTC).timestamp()

timestamps = st.integers(min_value=0, max_value=2**32)


def utc(timestamp: int) -> datetime:
    """The UTC calendar time of a POSIX timestamp."""
    return datetime.fromtimestamp(timestamp, UTC)


def rfc850_date(timestamp: int) -> str:
    """Format ``rfc850-date``: ``Sunday, 06-Nov-94 08:49:37 GMT``."""
    moment = utc(timestamp)
    return (
        f"{LONG_DAY_NAMES[moment.weekday()]}, {moment.day:02d}-{MONTHS[moment.month - 1]}-"
        f"{moment.year % 100:02d} {moment:%H:%M:%S} GMT"
    )


def asctime_date(timestamp: int) -> str:
    """Format ``asctime-date``: ``Sun Nov  6 08:49:37 1994`` (day padded with a space)."""
    moment = utc(timestamp)
    return (
        f"{DAY_NAMES[moment.weekday()]} {MONTHS[moment.month - 1]} {moment.day:2d} "
        f"{moment:%H:%M:%S} {moment.year}"
    )


def fifty_years_after(moment: datetime) -> datetime:
    """The same calendar instant 50 years later (28 February for a 29 February)."""
    day = 28 if (moment.month, moment.day) == (2, 29) else moment.day
    return moment.replace(year=moment.year + 50, day=day)


def rfc850_reading(timestamp: int, now: datetime) -> int:
    """The instant RFC 9110 5.6.7 makes of ``rfc850_date(timestamp)`` at ``now``.

    "Recipients of a timestamp value in rfc850-date format, which uses a two-digit
    year, MUST interpret a timestamp that appears to be more than 50 years in the
    future as representing the most recent year in the past that had the same last
    two digits."
    """
    moment = utc(timestamp)
    candidate = moment.replace(year=now.year - now.year % 100 + moment.year % 100)
    if candidate > fifty_years_after(now):
        candidate = candidate.replace(year=candidate.year - 100)
    return int(candidate.timestamp())


@given(timestamps)
def test_imf_fixdate_from_the_standard_library_parses_back(timestamp: int) -> None:
    """An IMF-fixdate as ``email.utils.formatdate(usegmt=True)`` writes it parses to
    the timestamp it was made from.
    """
    assert parse_http_date(email.utils.formatdate(timestamp, usegmt=True), NOW) == timestamp


@given(timestamps)
def test_asctime_date_parses_to_the_same_timestamp(timestamp: int) -> None:
    """The obsolete ``asctime-date`` form (RFC 9110 5.6.7, always UTC) parses to the
    timestamp it was made from.
    """
    assert parse_http_date(asctime_date(timestamp), NOW) == timestamp


@given(timestamps)
def test_rfc850_date_reads_the_two_digit_year_in_the_fifty_year_window(timestamp: int) -> None:
    """An ``rfc850-date`` parses to the instant RFC 9110 5.6.7's rule gives: the same
    timestamp whenever it lies less than 50 years ahead, else a century earlier.
    """
    now = utc(int(NOW))
    moment = utc(timestamp)
    candidate = moment.replace(year=now.year - now.year % 100 + moment.year % 100)
    # Clear of the window's edge, which the next test pins to the second.
    assume(abs(candidate - fifty_years_after(now)) > timedelta(days=2))
    assert parse_http_date(rfc850_date(timestamp), NOW) == rfc850_reading(timestamp, now)


@pytest.mark.parametrize(
    ("value", "year"),
    [
        ("Sunday, 29-Nov-76 12:00:00 GMT", 2076),  # 50 years minus two days ahead
        ("Tuesday, 01-Dec-76 00:00:00 GMT", 2076),  # exactly 50 years ahead
        ("Tuesday, 01-Dec-76 00:00:01 GMT", 1976),  # one second more
        ("Thursday, 03-Dec-76 00:00:00 GMT", 1976),
    ],
)
def test_rfc850_window_edge_is_an_instant_not_a_year(value: str, year: int) -> None:
    """At 2026-12-01 00:00 UTC, a date in December 2076 after that moment is more
    than 50 years ahead (RFC 9110 5.6.7), though its year is only 50 more.
    """
    now = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    parsed = parse_http_date(value, now)
    assert parsed is not None
    assert datetime.fromtimestamp(parsed, UTC).year == year


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ],
)
def test_the_three_examples_of_the_rfc_are_the_same_instant(value: str) -> None:
    """The three example dates of RFC 9110 5.6.7 all name 1994-11-06 08:49:37 UTC."""
    assert parse_http_date(value, NOW) == RFC_EXAMPLE_TIME


@pytest.mark.parametrize(
    "zone",
    ["EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT", "CET", "CEST", "JST", "BST", "XYZ"],
)
def test_named_zones_other_than_gmt_are_refused(zone: str) -> None:
    """A date in any named zone but GMT is not an HTTP-date ("HTTP-date ... MUST be
    represented in Greenwich Mean Time", RFC 9110 5.6.7), so it parses to ``None``
    rather than being read as if it were GMT.
    """
    assert parse_http_date(f"Sun, 06 Nov 1994 08:49:37 {zone}", NOW) is None


@given(
    timestamps,
    st.sampled_from("+-"),
    st.integers(min_value=0, max_value=23),
    st.integers(min_value=0, max_value=59),
)
def test_numeric_zone_offsets_are_refused(
    timestamp: int, sign: str, hours: int, minutes: int
) -> None:
    """A date with a non-zero numeric offset is not an HTTP-date (RFC 9110 5.6.7):
    ``None``.
    """
    assume((hours, minutes) != (0, 0))
    formatted = email.utils.formatdate(timestamp, usegmt=True)
    assert parse_http_date(f"{formatted[:-3]}{sign}{hours:02d}{minutes:02d}", NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "garbage",
        "0",
        "784111777",
        "Sun, 06 Nov 1994",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Thu, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 1994 08:61:37 GMT",
    ],
)
def test_garbage_and_impossible_dates_give_none(value: str) -> None:
    """Empty strings, text that is no date and impossible calendar dates (day 32,
    31 February, hour 25; RFC 9110 5.6.7 dates are a subset of RFC 5322 3.3, whose
    day, hour and minute must exist) are not HTTP-dates: ``None``.
    """
    assert parse_http_date(value, NOW) is None


@given(st.text())
def test_parse_http_date_never_raises(value: str) -> None:
    """Whatever the text, the parser answers ``None`` or an ``int``; it never raises."""
    result = parse_http_date(value, NOW)
    assert result is None or isinstance(result, int)


# -- entity tags (RFC 9110 8.8.3) -----------------------------------------------------

#: ``entity-tag`` without ``weak`` (RFC 9110 8.8.3): ``opaque-tag = DQUOTE *etagc
#: DQUOTE``, ``etagc = %x21 / %x23-7E / obs-text``, ``obs-text = %x80-FF``.
STRONG_ENTITY_TAG = re.compile(r'"[\x21\x23-\x7e\x80-\xff]*"')

file_identities = st.tuples(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
)
FileIdentity = tuple[int, int, int, int]
suffixes = st.sampled_from(["", "br", "gz", "zst"])


@given(file_identities, suffixes)
def test_etag_is_a_strong_entity_tag(identity: FileIdentity, suffix: str) -> None:
    """The tag matches the ``entity-tag`` ABNF of RFC 9110 8.8.3 with no ``W/``."""
    assert STRONG_ENTITY_TAG.fullmatch(etag_for(*identity, suffix))


@given(file_identities, file_identities, suffixes)
def test_etag_changes_exactly_when_the_file_changes(
    first: FileIdentity, second: FileIdentity, suffix: str
) -> None:
    """Two files (inode, size, mtime_ns, ctime_ns) get the same tag only if all agree."""
    assert (etag_for(*first, suffix) == etag_for(*second, suffix)) == (first == second)


@given(file_identities, st.integers(min_value=0, max_value=3), st.integers(min_value=1))
def test_etag_changes_when_any_one_field_changes(
    identity: FileIdentity, field: int, delta: int
) -> None:
    """Changing only the inode, only the size, only the modification time or only the
    change time gives a new tag (a rename-into-place, a truncation, a touch, or a
    rewrite with the mtime put back).
    """
    changed = list(identity)
    changed[field] += delta
    assert etag_for(*identity) != etag_for(changed[0], changed[1], changed[2], changed[3])


@given(file_identities)
def test_etag_suffix_tells_variants_apart(identity: FileIdentity) -> None:
    """The plain file and each precompressed sibling of it get distinct tags."""
    tags = {etag_for(*identity, suffix) for suffix in ("", "br", "gz", "zst")}
    assert len(tags) == 4


# -- preconditions (RFC 9110 13.2.2) --------------------------------------------------

ETAG = '"abc"'
OTHER = '"xyz"'
EARLIER = "Sat, 05 Nov 1994 08:49:37 GMT"  # a day before RFC_EXAMPLE_TIME
SAME = "Sun, 06 Nov 1994 08:49:37 GMT"  # RFC_EXAMPLE_TIME
LATER = "Mon, 07 Nov 1994 08:49:37 GMT"  # a day after
PROCEED = Precondition.PROCEED
NOT_MODIFIED = Precondition.NOT_MODIFIED
FAILED = Precondition.FAILED


def row(
    why: str,
    expected: Precondition,
    *,
    method: str = "GET",
    im: str | None = None,
    inm: str | None = None,
    ims: str | None = None,
    ius: str | None = None,
) -> object:
    """One row of the precondition table, its id naming the RFC step it checks."""
    return pytest.param(method, im, inm, ims, ius, expected, id=why)


PRECONDITION_TABLE = [
    row("no preconditions: step 5, perform the method", PROCEED),
    # Step 1: If-Match, strong comparison (13.1.1).
    row("step 1: If-Match same tag is true", PROCEED, im=ETAG),
    row("step 1: If-Match other tag is false, 412", FAILED, im=OTHER),
    row("step 1: If-Match false on PUT, 412", FAILED, method="PUT", im=OTHER),
    row("step 1: If-Match * matches a current representation", PROCEED, im="*"),
    row("step 1: If-Match a list holding the tag", PROCEED, im=f"{OTHER}, {ETAG}"),
    row("step 1: If-Match weak tag never matches (strong)", FAILED, im=f"W/{ETAG}"),
    row("step 1: If-Match empty list elements ignored (5.6.1.2)", PROCEED, im=f"{OTHER}, , {ETAG}"),
    # Step 2: If-Unmodified-Since, only without If-Match.
    row("step 2: IUS before Last-Modified, 412", FAILED, ius=EARLIER),
    row("step 2: IUS equal to Last-Modified is true", PROCEED, ius=SAME),
    row("step 2: IUS after Last-Modified is true", PROCEED, ius=LATER),
    row("step 2: IUS false on DELETE, 412", FAILED, method="DELETE", ius=EARLIER),
    row("step 2: IUS invalid date ignored (13.1.4)", PROCEED, ius="not a date"),
    row(
        "step 2: IUS with a list of dates ignored (13.1.4)",
        PROCEED,
        ius=f"{EARLIER}, {LATER}",
    ),
    row("step 2 skipped: If-Match present, IUS ignored", PROCEED, im=ETAG, ius=EARLIER),
    # Steps 1 and 2 come before step 3.
    row("step 1 before step 3: 412 not 304", FAILED, im=OTHER, inm=ETAG),
    row("step 2 before step 3: 412 not 304", FAILED, ius=EARLIER, inm=ETAG),
    row("steps 1 then 3: If-Match true, INM match, 304", NOT_MODIFIED, im=ETAG, inm=ETAG),
    # Step 3: If-None-Match, weak comparison (13.1.2).
    row("step 3: INM match on GET, 304", NOT_MODIFIED, inm=ETAG),
    row("step 3: INM match on HEAD, 304", NOT_MODIFIED, method="HEAD", inm=ETAG),
    row("step 3: INM match on POST, 412", FAILED, method="POST", inm=ETAG),
    row("step 3: INM match on PUT, 412", FAILED, method="PUT", inm=ETAG),
    row("step 3: INM weak tag matches (weak comparison)", NOT_MODIFIED, inm=f"W/{ETAG}"),
    row("step 3: INM other tag is true, proceed", PROCEED, inm=OTHER),
    row("step 3: INM * on GET, 304", NOT_MODIFIED, inm="*"),
    row("step 3: INM * on PUT, 412", FAILED, method="PUT", inm="*"),
    row("step 3: INM a list holding a weak tag", NOT_MODIFIED, inm=f"{OTHER}, W/{ETAG}"),
    row(
        "step 3: INM empty list elements ignored (5.6.1.2)",
        NOT_MODIFIED,
        inm=f"{OTHER}, , {ETAG}",
    ),
    # Step 4: If-Modified-Since, only for GET/HEAD without If-None-Match.
    row("step 4: IMS equal to Last-Modified, 304", NOT_MODIFIED, ims=SAME),
    row("step 4: IMS after Last-Modified, 304", NOT_MODIFIED, ims=LATER),
    row("step 4: IMS on HEAD, 304", NOT_MODIFIED, method="HEAD", ims=SAME),
    row("step 4: IMS before Last-Modified, proceed", PROCEED, ims=EARLIER),
    row("step 4: IMS invalid date ignored (13.1.3)", PROCEED, ims="not a date"),
    row("step 4: IMS with a list of dates ignored (13.1.3)", PROCEED, ims=f"{LATER}, {EARLIER}"),
    row("step 4: IMS ignored for POST (13.1.3)", PROCEED, method="POST", ims=LATER),
    row("step 4 skipped: INM present and false, IMS ignored", PROCEED, inm=OTHER, ims=LATER),
    row("step 3 decides: INM match wins over old IMS", NOT_MODIFIED, inm=ETAG, ims=EARLIER),
]


@pytest.mark.parametrize(("method", "im", "inm", "ims", "ius", "expected"), PRECONDITION_TABLE)
def test_preconditions_follow_rfc_9110_13_2_2(
    *,
    method: str,
    im: str | None,
    inm: str | None,
    ims: str | None,
    ius: str | None,
    expected: Precondition,
) -> None:
    """Each row is one rule of RFC 9110 13.2.2's evaluation order (or the field
    definitions in 13.1) for a representation with tag ``"abc"`` last modified at
    the RFC's example date.
    """
    outcome = evaluate_preconditions(
        method=method,
        etag=ETAG,
        last_modified=RFC_EXAMPLE_TIME,
        if_match=im,
        if_none_match=inm,
        if_modified_since=ims,
        if_unmodified_since=ius,
        now=NOW,
    )
    assert outcome is expected


@given(timestamps, timestamps, st.sampled_from(["GET", "HEAD"]))
def test_if_modified_since_is_a_comparison_of_seconds(
    last_modified: int, since: int, method: str
) -> None:
    """For GET and HEAD, ``If-Modified-Since`` gives 304 exactly when the
    representation was not modified after the date (RFC 9110 13.1.3).
    """
    outcome = evaluate_preconditions(
        method=method,
        etag=ETAG,
        last_modified=last_modified,
        if_match=None,
        if_none_match=None,
        if_modified_since=email.utils.formatdate(since, usegmt=True),
        if_unmodified_since=None,
        now=NOW,
    )
    assert outcome is (NOT_MODIFIED if last_modified <= since else PROCEED)


@given(timestamps, timestamps, st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]))
def test_if_unmodified_since_is_a_comparison_of_seconds(
    last_modified: int, since: int, method: str
) -> None:
    """``If-Unmodified-Since`` gives 412 exactly when the representation was
    modified after the date, whatever the method (RFC 9110 13.1.4).
    """
    outcome = evaluate_preconditions(
        method=method,
        etag=ETAG,
        last_modified=last_modified,
        if_match=None,
        if_none_match=None,
        if_modified_since=None,
        if_unmodified_since=email.utils.formatdate(since, usegmt=True),
        now=NOW,
    )
    assert outcome is (FAILED if last_modified > since else PROCEED)


# -- Range (RFC 9110 14.1.2, 14.2) ----------------------------------------------------


#: ``DIGIT`` is ASCII only (RFC 5234 B.1); ``str.isdigit`` would take "²" or "٣".
ASCII_DIGITS = re.compile(r"[0-9]*")


def reference_ranges(value: str, size: int, max_ranges: int) -> list[ByteRange] | RangeResult:
    """A brute-force reading of a ``Range`` value for a ``size``-byte representation.

    RFC 9110 14.1.1/14.1.2: ``ranges-specifier = range-unit "=" range-set``,
    ``range-set = 1#range-spec`` (empty list elements allowed, 5.6.1.2),
    ``int-range = first-pos "-" [ last-pos ]``, ``suffix-range = "-" suffix-length``,
    all positions ``1*DIGIT``. An invalid specifier (other unit, bad syntax,
    last-pos < first-pos) is ignored. The set is satisfiable if some int-range has
    ``first-pos < size`` or some suffix-range a non-zero length; otherwise 416. The
    selected bytes are collected one offset at a time and the runs of consecutive
    offsets are the ranges; more runs than ``max_ranges`` are ignored (14.2).
    """
    unit, equals, range_set = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return RangeResult.IGNORE
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if not specs:
        return RangeResult.IGNORE
    offsets: set[int] = set()
    satisfiable = False
    selected: list[ByteRange] = []  # each specifier's bytes, in the request's order
    for spec in specs:
        first_text, dash, last_text = spec.partition("-")
        if not dash or not ASCII_DIGITS.fullmatch(first_text + last_text):
            return RangeResult.IGNORE
        if first_text == "":
            if last_text == "":
                return RangeResult.IGNORE
            suffix = int(last_text)
            satisfiable = satisfiable or suffix > 0
            offsets.update(range(max(size - suffix, 0), size))
            if suffix > 0 and size > 0:
                selected.append(ByteRange(max(size - suffix, 0), size - 1))
        else:
            first = int(first_text)
            last = int(last_text) if last_text else None
            if last is not None and last < first:
                return RangeResult.IGNORE
            satisfiable = satisfiable or first < size
            end = size if last is None else min(last + 1, size)
            offsets.update(range(first, end))
            if first < end:
                selected.append(ByteRange(first, end - 1))
    if not satisfiable:
        return RangeResult.UNSATISFIABLE
    if not offsets:
        # Satisfiable but empty: a suffix-range of a zero-length representation. There
        # is no Content-Range for an empty range, so the whole (empty) body is sent.
        return RangeResult.IGNORE
    runs: list[ByteRange] = []
    for offset in sorted(offsets):
        if runs and runs[-1].last + 1 == offset:
            runs[-1] = ByteRange(runs[-1].first, offset)
        else:
            runs.append(ByteRange(offset, offset))
    if len(runs) > max_ranges:
        return RangeResult.IGNORE
    # Ranges that did not merge keep the request's order (RFC 9110 14.2, 15.3.7.2).
    return selected if len(runs) == len(selected) else runs


def offsets_of(ranges: list[ByteRange]) -> set[int]:
    """Every byte offset the ranges cover."""
    return {
        offset for byte_range in ranges for offset in range(byte_range.first, byte_range.last + 1)
    }


positions = st.integers(min_value=0, max_value=48)
ows = st.sampled_from(["", " ", "\t", " \t "])


@st.composite
def range_specs(draw: st.DrawFn) -> str:
    """One list element of a ``range-set``: int-range, open, suffix or empty."""
    kind = draw(st.sampled_from(["int", "open", "suffix", "empty"]))
    if kind == "int":
        text = f"{draw(positions)}-{draw(positions)}"
    elif kind == "open":
        text = f"{draw(positions)}-"
    elif kind == "suffix":
        text = f"-{draw(positions)}"
    else:
        text = ""
    return draw(ows) + text + draw(ows)


@st.composite
def range_fields(draw: st.DrawFn) -> str:
    """A ``Range`` value in the ``bytes`` unit, any case, 1 to 6 list elements."""
    unit = draw(st.sampled_from(["bytes", "Bytes", "BYTES"]))
    return unit + "=" + ",".join(draw(st.lists(range_specs(), min_size=1, max_size=6)))


@given(
    range_fields(), st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=5)
)
@example("bytes=8-9,0-1", 40, 5)
@example("bytes=30-,-45,2-3", 40, 5)
def test_parse_range_agrees_with_the_brute_force_reference(
    value: str, size: int, max_ranges: int
) -> None:
    """Ranges come back non-overlapping and non-adjacent (coalesced), inside
    ``[0, size)``, covering exactly the offsets RFC 9110 14.1.2 selects, in the
    request's order unless some had to be coalesced (then sorted); an unsatisfiable
    set gives UNSATISFIABLE, an invalid one or too many ranges IGNORE.
    """
    expected = reference_ranges(value, size, max_ranges)
    result = parse_range(value, size, max_ranges)
    if isinstance(result, list):
        assert result, "an empty list of ranges"
        assert len(result) <= max_ranges
        for byte_range in result:
            assert 0 <= byte_range.first <= byte_range.last < size
        by_offset = sorted(result, key=lambda byte_range: byte_range.first)
        for previous, following in itertools.pairwise(by_offset):
            assert following.first > previous.last + 1, "overlapping or adjacent"
        assert isinstance(expected, list), f"expected {expected}, got ranges {result}"
        assert offsets_of(result) == offsets_of(expected)
    assert result == expected


@st.composite
def separate_ranges(draw: st.DrawFn) -> list[ByteRange]:
    """2 to 6 ranges of a 1000-byte representation, neither overlapping nor adjacent,
    in any order.
    """
    count = draw(st.integers(min_value=2, max_value=6))
    bounds = draw(st.lists(st.integers(0, 999), min_size=2 * count, max_size=2 * count))
    bounds = sorted(set(bounds))
    ranges = [ByteRange(bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
    assume(len(ranges) >= 2)
    assume(all(b.first > a.last + 1 for a, b in itertools.pairwise(ranges)))
    return draw(st.permutations(ranges))


@given(separate_ranges())
def test_ranges_that_need_no_coalescing_keep_the_requests_order(
    ranges: list[ByteRange],
) -> None:
    """RFC 9110 15.3.7.2: the parts come in the order the request asked for them."""
    value = "bytes=" + ",".join(f"{byte_range.first}-{byte_range.last}" for byte_range in ranges)
    assert parse_range(value, 1000, 10) == ranges


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        # The examples of RFC 9110 14.1.2, for a 10000-byte representation.
        ("bytes=0-499", 10000, [ByteRange(0, 499)]),
        ("bytes=500-999", 10000, [ByteRange(500, 999)]),
        ("bytes=-500", 10000, [ByteRange(9500, 9999)]),
        ("bytes=9500-", 10000, [ByteRange(9500, 9999)]),
        ("bytes=0-0,-1", 10000, [ByteRange(0, 0), ByteRange(9999, 9999)]),
        ("bytes=500-600,601-999", 10000, [ByteRange(500, 999)]),
        ("bytes=500-700,601-999", 10000, [ByteRange(500, 999)]),
        # Clipping (14.1.2: last-pos past the end means the remainder).
        ("bytes=5-100", 10, [ByteRange(5, 9)]),
        ("bytes=-100", 10, [ByteRange(0, 9)]),
        # The request's order (RFC 9110 15.3.7.2), unless ranges had to be coalesced.
        ("bytes=8-9,0-1", 10, [ByteRange(8, 9), ByteRange(0, 1)]),
        ("bytes=-1,4-5,0-0", 10, [ByteRange(9, 9), ByteRange(4, 5), ByteRange(0, 0)]),
        ("bytes=8-9,0-1,1-2", 10, [ByteRange(0, 2), ByteRange(8, 9)]),
        ("bytes=0-1,2-3", 10, [ByteRange(0, 3)]),
        ("bytes=0-5,2-3", 10, [ByteRange(0, 5)]),
        ("bytes=-2,0-7", 10, [ByteRange(0, 9)]),
        # Unit names are case-insensitive (14.1); OWS around list elements (5.6.1).
        ("BYTES=0-1", 10, [ByteRange(0, 1)]),
        ("bytes= 0-1 ,\t3-4", 10, [ByteRange(0, 1), ByteRange(3, 4)]),
        ("bytes=0-1,,3-4,", 10, [ByteRange(0, 1), ByteRange(3, 4)]),
        # An unsatisfiable range-spec alongside a satisfiable one is dropped.
        ("bytes=20-30,0-1", 10, [ByteRange(0, 1)]),
        ("bytes=20-,0-1", 10, [ByteRange(0, 1)]),
        ("bytes=-0,0-1", 10, [ByteRange(0, 1)]),
    ],
)
def test_parse_range_examples(value: str, size: int, expected: list[ByteRange]) -> None:
    """The worked examples of RFC 9110 14.1.2, clipping, coalescing and list syntax."""
    assert parse_range(value, size, 10) == expected


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=20-", 10),
        ("bytes=10-20", 10),
        ("bytes=-0", 10),
        ("bytes=10-,-0,11-12", 10),
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-0", 0),
    ],
)
def test_unsatisfiable_range_sets(value: str, size: int) -> None:
    """A valid set with no int-range starting inside the representation and no
    non-zero suffix-range is unsatisfiable (RFC 9110 14.1.2), for which a server
    SHOULD send 416 (14.2).
    """
    assert parse_range(value, size, 10) is RangeResult.UNSATISFIABLE


@pytest.mark.parametrize(
    "value",
    [
        "bytes=5-1",
        "bytes=a-b",
        "bytes=0-a",
        "items=0-1",
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes= , ",
        "",
        "=0-1",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=+1-2",
        "bytes=0x1-2",
        "bytes=1 -2",
        "bytes=1.5-2",
        "bytes=0-1;q=1",
        "bytes=0-1,5-1",
        "bytes=\u0660-\u0663",
    ],
)
def test_invalid_range_values_are_ignored(value: str) -> None:
    """Another unit, or a ranges-specifier with any invalid range-spec (last-pos
    before first-pos, non-DIGIT positions, no range-spec at all: ``range-set =
    1#range-spec``), makes the field one to ignore (RFC 9110 14.1.1, 14.2).
    """
    assert parse_range(value, 10, 10) is RangeResult.IGNORE


@pytest.mark.parametrize(
    ("value", "max_ranges", "expected"),
    [
        ("bytes=0-0,2-2,4-4", 2, RangeResult.IGNORE),
        ("bytes=0-0,2-2,4-4", 3, [ByteRange(0, 0), ByteRange(2, 2), ByteRange(4, 4)]),
        ("bytes=0-0,1-1,2-2,3-3", 1, [ByteRange(0, 3)]),
        ("bytes=0-0,0-0,0-0,0-0", 1, [ByteRange(0, 0)]),
    ],
)
def test_max_ranges_counts_after_coalescing(
    value: str, max_ranges: int, expected: list[ByteRange] | RangeResult
) -> None:
    """More ranges than ``max_ranges`` once coalesced are ignored (RFC 9110 14.2 lets a
    server ignore many small ranges); overlapping or adjacent ones count once.
    """
    assert parse_range(value, 10, max_ranges) == expected


@pytest.mark.parametrize("value", ["bytes=-1", "bytes=-5", "bytes=-5,0-"])
def test_suffix_range_of_an_empty_representation_is_satisfiable(value: str) -> None:
    """For a zero-length representation "the only satisfiable form of range-spec is a
    suffix-range with a non-zero suffix-length" (RFC 9110 14.1.2), so no 416; as no
    ``Content-Range`` can name an empty range, the whole (empty) body is sent.
    """
    assert parse_range(value, 0, 10) is RangeResult.IGNORE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-" + "9" * 5000, [ByteRange(0, 9)]),
        ("bytes=-" + "9" * 5000, [ByteRange(0, 9)]),
        ("bytes=" + "9" * 5000 + "-", RangeResult.UNSATISFIABLE),
        ("bytes=0-1," + "9" * 5000 + "-", [ByteRange(0, 1)]),
    ],
)
def test_very_large_positions_are_handled(
    value: str, expected: list[ByteRange] | RangeResult
) -> None:
    """A huge position is clipped or unsatisfiable, never an exception: "recipients
    MUST anticipate potentially large decimal numerals and prevent parsing errors
    due to integer conversion overflows" (RFC 9110 14.1.2). 5000 digits fit in an
    8 KiB field but exceed Python's default limit for ``int(str)``.
    """
    assert parse_range(value, 10, 10) == expected


# -- If-Range (RFC 9110 13.1.5) -------------------------------------------------------


@given(file_identities, timestamps)
def test_if_range_entity_tag_needs_strong_equality(
    identity: FileIdentity, last_modified: int
) -> None:
    """The current tag allows the range; the same tag marked weak, or another tag,
    does not (RFC 9110 13.1.5: "strong comparison").
    """
    etag = etag_for(*identity)
    other = etag_for(identity[0], identity[1], identity[2], identity[3] + 1)
    assert if_range_allows(etag, etag, last_modified, NOW)
    assert if_range_allows(f"  {etag} ", etag, last_modified, NOW)
    assert not if_range_allows(f"W/{etag}", etag, last_modified, NOW)
    assert not if_range_allows(other, etag, last_modified, NOW)
    assert not if_range_allows(f"W/{other}", etag, last_modified, NOW)


@given(timestamps, timestamps)
def test_if_range_date_needs_exact_equality(last_modified: int, date: int) -> None:
    """A date allows the range exactly when it equals ``Last-Modified`` (RFC 9110
    13.1.5: "exactly matches").
    """
    value = email.utils.formatdate(date, usegmt=True)
    assert if_range_allows(value, ETAG, last_modified, NOW) == (date == last_modified)


@pytest.mark.parametrize(
    ("value", "allows"),
    [
        (None, True),
        (SAME, True),
        ("Sun Nov  6 08:49:37 1994", True),
        (EARLIER, False),
        (LATER, False),
        ("not a date", False),
        ("", False),
        (ETAG, True),
        (f"W/{ETAG}", False),
        (OTHER, False),
        ('"abc', False),
    ],
)
def test_if_range_examples(value: str | None, allows: bool) -> None:
    """Without ``If-Range`` ranges apply; otherwise only a strongly matching tag or
    the exact ``Last-Modified`` date lets them (RFC 9110 13.1.5: "If the validator
    does not match, the server MUST ignore the Range header field").
    """
    assert if_range_allows(value, ETAG, RFC_EXAMPLE_TIME, NOW) is allows


# -- multipart/byteranges (RFC 9110 14.6) ---------------------------------------------

boundaries = st.text(
    alphabet="0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?",
    min_size=8,
    max_size=70,
)
#: (the media type as sent, its type/subtype, its parameters)
media_types = st.sampled_from(
    [
        ("application/octet-stream", "application/octet-stream", {}),
        ("text/plain; charset=utf-8", "text/plain", {"charset": "utf-8"}),
        ("image/png", "image/png", {}),
        ("text/html; charset=iso-8859-1", "text/html", {"charset": "iso-8859-1"}),
    ]
)


@st.composite
def files_and_ranges(draw: st.DrawFn) -> tuple[bytes, list[ByteRange]]:
    """A file's bytes and 1 to 6 ranges inside it (in any order, as the framing
    does not depend on order).
    """
    data = draw(st.binary(min_size=1, max_size=300))
    offsets = st.integers(min_value=0, max_value=len(data) - 1)
    pairs = draw(st.lists(st.tuples(offsets, offsets), min_size=1, max_size=6))
    return data, [ByteRange(min(pair), max(pair)) for pair in pairs]


@given(files_and_ranges(), media_types, boundaries)
def test_multipart_body_parses_with_the_standard_library(
    case: tuple[bytes, list[ByteRange]],
    media: tuple[str, str, dict[str, str]],
    boundary: str,
) -> None:
    """The framing around the file's slices is a ``multipart/byteranges`` body the
    ``email`` parser reads without defects: one part per range, each with the media
    type, ``Content-Range: bytes first-last/size`` and exactly that slice; the
    returned length is the body's real length.
    """
    data, ranges = case
    media_type, expected_type, expected_params = media
    assume(boundary.encode() not in data)
    parts, closing, length = multipart_parts(ranges, len(data), media_type, boundary)
    assert [byte_range for _head, byte_range in parts] == ranges
    body = b"".join(head + data[r.first : r.last + 1] for head, r in parts) + closing
    assert length == len(body)

    header = f'Content-Type: multipart/byteranges; boundary="{boundary}"\r\n\r\n'
    message = BytesParser(policy=policy.default).parsebytes(header.encode("ascii") + body)
    assert message.get_content_type() == "multipart/byteranges"
    assert message.get_boundary() == boundary
    assert message.defects == []
    assert not message.preamble
    received = list(message.iter_parts())
    assert len(received) == len(ranges)
    for part, byte_range in zip(received, ranges, strict=True):
        assert part.defects == []
        assert part.get_content_type() == expected_type
        assert dict(part["Content-Type"].params) == expected_params
        assert str(part["Content-Range"]) == (
            f"bytes {byte_range.first}-{byte_range.last}/{len(data)}"
        )
        assert part.get_payload(decode=True) == data[byte_range.first : byte_range.last + 1]


# -- Accept-Encoding (RFC 9110 12.5.3) ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gzip", {"gzip": 1.0}),
        ("gzip, br", {"gzip": 1.0, "br": 1.0}),
        ("gzip;q=0.5, br;q=1.0", {"gzip": 0.5, "br": 1.0}),
        ("gzip ; q=0.5 ,br", {"gzip": 0.5, "br": 1.0}),
        ("GZIP;q=0.25", {"gzip": 0.25}),
        ("*;q=0.1", {"*": 0.1}),
        ("gzip;q=0", {"gzip": 0.0}),
        ("", {}),
        (" , ,gzip,,", {"gzip": 1.0}),
        ("gzip;q=2, br", {"br": 1.0}),
        ("gzip;q=abc, br", {"br": 1.0}),
        ("gzip;q=0.5.5, br", {"br": 1.0}),
        ("gzip;q=-1, br", {"br": 1.0}),
        ("@@, br", {"br": 1.0}),
        ("gzip;level=9, br", {"br": 1.0}),
        ("gzip;Q=0.5", {"gzip": 0.5}),
    ],
)
def test_accepted_encodings_parse(value: str, expected: dict[str, float]) -> None:
    """Codings (case-insensitive) with their weight, 1 by default; a member with a
    weight outside 0-1, a malformed weight or no coding is skipped. ``"q="`` is an
    ABNF literal (RFC 9110 12.4.2) and so case-insensitive (RFC 5234 2.3).
    """
    assert accepted_encodings(value) == expected


@pytest.mark.parametrize(
    ("value", "available", "expected"),
    [
        (None, ["br", "gzip"], None),
        ("", ["br", "gzip"], None),
        ("identity", ["br", "gzip"], None),
        ("gzip", ["br", "gzip"], "gzip"),
        ("br", ["br", "gzip"], "br"),
        ("deflate", ["br", "gzip"], None),
        # Ties go to the server's order.
        ("gzip, br", ["br", "gzip"], "br"),
        ("gzip, br", ["gzip", "br"], "gzip"),
        ("*", ["br", "gzip"], "br"),
        # Quality values beat the server's order.
        ("br;q=0.5, gzip;q=0.9", ["br", "gzip"], "gzip"),
        ("br;q=0.001, gzip;q=0.002", ["br", "gzip"], "gzip"),
        # q=0 is a refusal ("not acceptable", 12.4.2), even of what "*" allows.
        ("gzip;q=0, br;q=0", ["br", "gzip"], None),
        ("*, br;q=0", ["br", "gzip"], "gzip"),
        ("*;q=0", ["br", "gzip"], None),
        ("*;q=0, gzip", ["br", "gzip"], "gzip"),
        ("*;q=0.5, gzip", ["br", "gzip"], "gzip"),
        ("*;q=0.5, gzip;q=0.1", ["br", "gzip"], "br"),
        # x-gzip is gzip (RFC 9110 8.4.1.3).
        ("x-gzip", ["br", "gzip"], "gzip"),
        ("x-gzip;q=0, *", ["gzip"], None),
        ("x-gzip;q=0.5, br;q=0.4", ["br", "gzip"], "gzip"),
        # Malformed members are skipped, the rest still count.
        ("gzip;q=oops, br", ["br", "gzip"], "br"),
        ("gzip;q=7, br;q=0.1", ["br", "gzip"], "br"),
        ("gzip;Q=0.5", ["gzip"], "gzip"),
    ],
)
def test_preferred_encoding_examples(
    value: str | None, available: list[str], expected: str | None
) -> None:
    """The client's qualities choose among the server's available codings, ties go
    to the server's order, q=0 refuses, ``*`` covers the codings not listed and
    ``None`` (identity) comes back when nothing suits or the field is missing.
    """
    assert preferred_encoding(value, available) == expected


def qvalue(thousandths: int, long_form: bool) -> str:
    """Format a weight per ``qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )``."""
    if thousandths == 1000:
        return "1.000" if long_form else "1"
    text = f"0.{thousandths:03d}"
    return text if long_form else text.rstrip("0").rstrip(".")


@given(
    st.dictionaries(
        st.sampled_from(["br", "gzip", "zstd", "deflate"]), st.integers(min_value=0, max_value=1000)
    ),
    st.permutations(["br", "gzip", "zstd"]),
    st.booleans(),
)
def test_preferred_encoding_maximises_quality_then_server_order(
    weights: dict[str, int], available: list[str], long_form: bool
) -> None:
    """The chosen coding has the highest non-zero weight among the available ones,
    the earliest in the server's order among equals; ``None`` when none is above 0.
    """
    value = ", ".join(
        f"{coding};q={qvalue(weight, long_form)}" for coding, weight in weights.items()
    )
    candidates = [
        (weights[coding], -rank, coding)
        for rank, coding in enumerate(available)
        if weights.get(coding, 0) > 0
    ]
    expected = max(candidates)[2] if candidates else None
    assert preferred_encoding(value, available) == expected


# -- media types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("old.htm", "text/html; charset=utf-8"),
        ("site.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("module.mjs", "text/javascript; charset=utf-8"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("README.md", "text/markdown; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("app.js.map", "application/json; charset=utf-8"),
        ("site.webmanifest", "application/manifest+json; charset=utf-8"),
        ("logo.svg", "image/svg+xml; charset=utf-8"),
        ("photo.png", "image/png"),
        ("photo.jpg", "image/jpeg"),
        ("anim.gif", "image/gif"),
        ("photo.webp", "image/webp"),
        ("photo.avif", "image/avif"),
        ("font.woff", "font/woff"),
        ("font.woff2", "font/woff2"),
        ("code.wasm", "application/wasm"),
        ("paper.pdf", "application/pdf"),
        # Media a site serves that Python's table lacks without the host's mime.types.
        ("segment0.ts", "video/mp2t"),  # HLS segments (nginx's mime.types)
        ("movie.mkv", "video/matroska"),  # RFC 9559
        ("song.m4a", "audio/mp4"),  # RFC 4337
        ("song.flac", "audio/flac"),  # RFC 9639
        ("meeting.ics", "text/calendar; charset=utf-8"),  # RFC 5545
        ("photo.jxl", "image/jxl"),
        ("scene.gltf", "model/gltf+json"),
        ("scene.glb", "model/gltf-binary"),
        ("dump.zst", "application/zstd"),  # RFC 8878
        ("blob.bin", "application/octet-stream"),
        ("file.qqqunknown", "application/octet-stream"),
        ("Makefile", "application/octet-stream"),
        ("dir.html/README", "application/octet-stream"),
        ("INDEX.HTML", "text/html; charset=utf-8"),
        ("Photo.PNG", "image/png"),
        ("Data.Json", "application/json; charset=utf-8"),
        ("LOGO.SVG", "image/svg+xml; charset=utf-8"),
        ("/srv/www/a.b/c.CSS", "text/css; charset=utf-8"),
    ],
)
def test_content_type_table(path: str, expected: str) -> None:
    """Media types by extension (case-insensitive, IANA registrations), with a
    charset on text types, JSON, JavaScript and SVG, none on images, fonts or
    binaries, and ``application/octet-stream`` when the extension is unknown.
    """
    assert content_type(path) == expected


def test_the_hosts_media_types_apply_from_the_start(tmp_path: Path) -> None:
    """The host's mime.types are read at import: they were used only once something
    in the process had called mimetypes.guess_type(), so a file's type changed
    mid-run.
    """
    table = tmp_path / "mime.types"
    table.write_text("application/x-twistwsgi-test\tzzq\n")
    script = (
        "import mimetypes, sys\n"
        f"mimetypes.knownfiles = [{str(table)!r}]\n"
        "from twistwsgi.files import content_type\n"
        "print(content_type('a.zzq'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "application/x-twistwsgi-test"


def test_content_type_uses_the_given_charset() -> None:
    """The ``charset`` argument is the one announced for text types."""
    assert content_type("a.txt", "iso-8859-1") == "text/plain; charset=iso-8859-1"
    assert content_type("a.png", "iso-8859-1") == "image/png"


@given(st.text(alphabet="qjxz", min_size=6, max_size=12))
def test_unknown_extensions_are_octet_stream(extension: str) -> None:
    """An extension nobody registered gives ``application/octet-stream``."""
    assert content_type(f"file.{extension}") == "application/octet-stream"


@given(
    st.sampled_from(["html", "css", "js", "json", "svg", "png", "jpg", "woff2", "txt"]),
    st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_content_type_ignores_the_extension_case(extension: str, upper: list[bool]) -> None:
    """Any mix of upper and lower case in the extension gives the same answer."""
    mixed = "".join(
        char.upper() if flag else char for char, flag in zip(extension, upper, strict=False)
    )
    assert content_type(f"file.{mixed}") == content_type(f"file.{extension}")
