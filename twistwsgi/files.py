"""The rules of serving a file over HTTP, as pure functions (no Twisted, no I/O).

Validators (RFC 9110 8.8): a strong ``ETag`` made from the file's inode, size,
modification and change times, and ``Last-Modified``. Conditional requests (RFC 9110 13): the
four preconditions evaluated in the order of 13.2.2, giving 304 or 412. Ranges
(RFC 9110 14): parsing ``Range`` into satisfiable byte ranges (suffix, open and
multiple ranges, coalesced), ``If-Range``, and the ``multipart/byteranges`` framing.
Content negotiation of precompressed siblings through ``Accept-Encoding`` (RFC 9110
12.5.3), media types with a charset for text, and HTTP-dates (RFC 9110 5.6.7).

The file handler (:mod:`twistwsgi.static`) does the I/O and calls these.
"""

from __future__ import annotations

import calendar
import datetime
import mimetypes
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from twistwsgi.http.rules import TOKEN

__all__ = [
    "ByteRange",
    "Precondition",
    "RangeResult",
    "accepted_encodings",
    "content_type",
    "etag_for",
    "evaluate_preconditions",
    "if_range_allows",
    "multipart_parts",
    "parse_http_date",
    "parse_range",
    "signature",
]


def signature(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must be unchanged for what is known of a file to stay valid.

    Its cached bytes, its facts, its parsed content: a different value means a
    different file.

    The change time too: a file rewritten in place to the same size with its old
    mtime put back (``cp -p``, ``rsync -t``, ``touch -r``) keeps size and mtime, but
    its ctime moves, which no user can set.
    """
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def etag_for(inode: int, size: int, mtime_ns: int, ctime_ns: int, suffix: str = "") -> str:
    """A strong entity tag for a file's current content (RFC 9110 8.8.3).

    Made from the inode, size, modification time and change time. Every write moves
    both times, but a file rewritten in place with its old mtime put back (``cp -p``,
    ``rsync -t --inplace``, a build dating every file alike) keeps inode, size and
    mtime: only the change time, which no user can set, tells the two contents
    apart. So any change of the file (a new inode after a rename-into-place, a new
    size, a write, an mtime set) gives a new tag; so does a change of its metadata
    alone (mode, owner, a new hard link), which costs a client one full response.
    ``suffix`` tells representations of the same file apart (``"br"``, ``"gz"`` for
    precompressed siblings).
    """
    tag = f"{inode:x}-{size:x}-{mtime_ns:x}-{ctime_ns:x}"
    if suffix:
        tag += "-" + suffix
    return f'"{tag}"'


_MONTH_NUMBERS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_MONTH = r"(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DATE_FORMATS = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(
        r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<day>[0-9]{2}) "
        + _MONTH
        + r" (?P<year>[0-9]{4}) "
        + _TIME
        + r" GMT",
        re.ASCII,
    ),
    # rfc850-date (obsolete): Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(
        r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (?P<day>[0-9]{2})-"
        + _MONTH
        + r"-(?P<year2>[0-9]{2}) "
        + _TIME
        + r" GMT",
        re.ASCII,
    ),
    # asctime-date (obsolete): Sun Nov  6 08:49:37 1994
    re.compile(
        r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
        + _MONTH
        + r" (?P<day>[ 0-9][0-9]) "
        + _TIME
        + r" (?P<year>[0-9]{4})",
        re.ASCII,
    ),
)


def parse_http_date(value: str, now: float) -> int | None:
    """Parse an HTTP-date (one of the three formats of RFC 9110 5.6.7) to seconds.

    The whole value must be one date in GMT that exists (no 31 February, no hour
    25); anything else, a list of dates included, is ``None``, which a precondition
    ignores (RFC 9110 13.1.3, 13.1.4). A two-digit year of the obsolete rfc850 form
    is the most recent such year not more than 50 years ahead of ``now`` (seconds
    since the epoch, from the caller's clock), as 5.6.7 requires.
    """
    text = value.strip()
    for number, pattern in enumerate(_DATE_FORMATS):
        match = pattern.fullmatch(text)
        if match is None:
            continue
        if number == 1:
            now_struct = time.gmtime(now)
            current = now_struct.tm_year
            year = current - current % 100 + int(match["year2"])
        else:
            year = int(match["year"])
        try:
            moment = datetime.datetime(
                year,
                _MONTH_NUMBERS[match["month"]],
                int(match["day"]),
                int(match["hour"]),
                int(match["minute"]),
                int(match["second"]),
                tzinfo=datetime.UTC,
            )
        except ValueError:
            return None  # a date that does not exist
        seconds = calendar.timegm(moment.utctimetuple())
        if number == 1:
            # "Appears to be more than 50 years in the future" compares instants, not
            # years: the same calendar moment 50 years from now is the edge.
            edge = now_struct[:6]
            day = 28 if edge[1:3] == (2, 29) else edge[2]
            limit = calendar.timegm((edge[0] + 50, edge[1], day, *edge[3:6], 0, 0, 0))
            if seconds > limit:
                try:
                    moment = moment.replace(year=year - 100)
                except ValueError:
                    return None  # 29 February of a century year that is not leap
                seconds = calendar.timegm(moment.utctimetuple())
        return seconds
    return None


_ETAG_RE = re.compile(r'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|$)')


def _entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """Parse a list of entity tags into ``(weak, opaque-tag)``; ``None`` means ``*``.

    Empty list elements are skipped (RFC 9110 5.6.1.2); a malformed member ends the
    list, and what was read before it still counts.
    """
    if value.strip() == "*":
        return None
    tags = []
    position = 0
    length = len(value)
    while position < length:
        while position < length and value[position] in " \t,":
            position += 1  # empty elements and separators
        if position >= length:
            break
        match = _ETAG_RE.match(value, position)
        if match is None:
            break
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags


def _strong_match(value: str, etag: str) -> bool:
    tags = _entity_tags(value)
    # (Membership, not any() over a generator: one left early is closed by throwing
    # GeneratorExit into it, an exception on every matching conditional request.)
    return tags is None or (False, etag) in tags


def _weak_match(value: str, etag: str) -> bool:
    tags = _entity_tags(value)
    return tags is None or (False, etag) in tags or (True, etag) in tags


class Precondition(Enum):
    """The outcome of evaluating a request's preconditions."""

    PROCEED = 200
    NOT_MODIFIED = 304
    FAILED = 412


# The outcomes by module-level names, for code run on every conditional request: on
# Python 3.11 each Precondition.MEMBER goes through EnumType's __getattr__ hook (~77 ns,
# see twistwsgi.http.protocol), as do RangeResult's below.
PROCEED: Final = Precondition.PROCEED
NOT_MODIFIED: Final = Precondition.NOT_MODIFIED
FAILED: Final = Precondition.FAILED


def evaluate_preconditions(
    *,
    method: str,
    etag: str,
    last_modified: int,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    now: float,
) -> Precondition:
    """Evaluate the preconditions of RFC 9110 13.2.2, in its order.

    1. ``If-Match``: no strong match → 412.
    2. Otherwise ``If-Unmodified-Since``: modified after the date → 412.
    3. ``If-None-Match``: a weak match → 304 for GET and HEAD, 412 for others.
    4. Otherwise, for GET and HEAD, ``If-Modified-Since``: not modified after the
       date → 304.

    Args:
        method: the request method.
        etag: the representation's current entity tag.
        last_modified: its modification time, in whole seconds.
        if_match: the field values, joined, or ``None`` when absent (likewise below).
        if_none_match: see ``if_match``.
        if_modified_since: see ``if_match``.
        if_unmodified_since: see ``if_match``.
        now: the current time, for the two-digit years of obsolete dates.
    """
    if if_match is not None:
        if not _strong_match(if_match, etag):
            return FAILED
    elif if_unmodified_since is not None:
        date = parse_http_date(if_unmodified_since, now)
        if date is not None and last_modified > date:
            return FAILED
    safe = method in ("GET", "HEAD")
    if if_none_match is not None:
        if _weak_match(if_none_match, etag):
            return NOT_MODIFIED if safe else FAILED
    elif safe and if_modified_since is not None:
        date = parse_http_date(if_modified_since, now)
        if date is not None and last_modified <= date:
            return NOT_MODIFIED
    return PROCEED


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range ``first``-``last`` of a representation.

    Attributes:
        first: the first byte's offset.
        last: the last byte's offset (inclusive).
    """

    first: int
    last: int

    @property
    def length(self) -> int:
        """How many bytes the range covers."""
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value for this range of a ``size``-byte whole."""
        return f"bytes {self.first}-{self.last}/{size}"


class RangeResult(Enum):
    """What to do with a Range field that gave no satisfiable ranges."""

    IGNORE = "ignore"  # send the whole representation (200)
    UNSATISFIABLE = "unsatisfiable"  # 416 with Content-Range: bytes */size


IGNORE_RANGE: Final = RangeResult.IGNORE
UNSATISFIABLE_RANGE: Final = RangeResult.UNSATISFIABLE


_RANGE_SPEC = re.compile(r"[ \t]*(?:([0-9]+)-([0-9]*)|-([0-9]+))[ \t]*", re.ASCII)
#: Decimal numerals longer than this are read as "larger than any file": RFC 9110
#: 14.1.2 says recipients must expect large numerals and not fail on them.
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_range(value: str, size: int, max_ranges: int) -> list[ByteRange] | RangeResult:
    """Turn a ``Range`` field value into satisfiable ranges (RFC 9110 14.1.2, 14.2).

    Ranges are clipped to the representation and keep the request's order (RFC 9110
    15.3.7.2), unless some overlap or touch: then they are coalesced, in offset order,
    so that a client cannot make the server send a byte twice.

    Args:
        value: the field value, e.g. ``bytes=0-499,-500``.
        size: the representation's length.
        max_ranges: more ranges than this (after coalescing) are ignored and the
            whole representation is sent, as RFC 9110 14.2 allows.

    Returns:
        The ranges, or :attr:`RangeResult.IGNORE` for a field to ignore (another
        unit, bad syntax, no range at all, too many ranges, or a suffix range of an
        empty representation, which no Content-Range can describe), or
        :attr:`RangeResult.UNSATISFIABLE` when no range overlaps the representation
        (416).
    """
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes":
        return IGNORE_RANGE
    members = [spec for spec in specs.split(",") if spec.strip(" \t")]
    if not members:
        return IGNORE_RANGE  # range-set = 1#range-spec: at least one
    ranges: list[ByteRange] = []
    suffix_of_empty = False
    for spec in members:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return IGNORE_RANGE
        first_text, last_text, suffix_text = match.groups()
        if suffix_text is not None:
            suffix = _number(suffix_text)
            if suffix == 0:
                continue
            if size == 0:
                suffix_of_empty = True  # satisfiable (14.1.2) but nothing to send
                continue
            ranges.append(ByteRange(max(size - suffix, 0), size - 1))
            continue
        first = _number(first_text)
        if last_text and _number(last_text) < first:
            return IGNORE_RANGE  # an invalid range-spec: the field is ignored
        if first >= size:
            continue  # unsatisfiable on its own
        last = min(_number(last_text), size - 1) if last_text else size - 1
        ranges.append(ByteRange(first, last))
    if not ranges:
        return IGNORE_RANGE if suffix_of_empty else UNSATISFIABLE_RANGE
    by_offset = sorted(ranges, key=lambda byte_range: byte_range.first)
    merged = [by_offset[0]]
    for byte_range in by_offset[1:]:
        previous = merged[-1]
        if byte_range.first <= previous.last + 1:
            merged[-1] = ByteRange(previous.first, max(previous.last, byte_range.last))
        else:
            merged.append(byte_range)
    if len(merged) > max_ranges:
        return IGNORE_RANGE
    return ranges if len(merged) == len(ranges) else merged


def if_range_allows(value: str | None, etag: str, last_modified: int, now: float) -> bool:
    """Whether ``If-Range`` lets the Range field apply (RFC 9110 13.1.5).

    An entity tag must match strongly; a date must equal ``Last-Modified`` exactly
    (``now`` reads the two-digit years of obsolete dates). Without the field,
    ranges apply.
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    date = parse_http_date(value, now)
    return date is not None and date == last_modified


def multipart_parts(
    ranges: Sequence[ByteRange], size: int, media_type: str, boundary: str
) -> tuple[list[tuple[bytes, ByteRange]], bytes, int]:
    """The framing of a ``multipart/byteranges`` body (RFC 9110 14.6).

    Returns:
        ``(parts, closing, length)``: each part's header bytes paired with its range,
        the closing delimiter, and the whole body's length.
    """
    parts = []
    length = 0
    for index, byte_range in enumerate(ranges):
        head = (
            f"{'' if index == 0 else chr(13) + chr(10)}--{boundary}\r\n"
            f"Content-Type: {media_type}\r\n"
            f"Content-Range: {byte_range.content_range(size)}\r\n\r\n"
        ).encode("latin-1")
        parts.append((head, byte_range))
        length += len(head) + byte_range.length
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return parts, closing, length + len(closing)


_CODING_RE = re.compile(
    r"[ \t]*(" + TOKEN + r")[ \t]*(?:;[ \t]*[qQ][ \t]*=[ \t]*([0-9.]+))?[ \t]*",
    re.ASCII,
)


def accepted_encodings(value: str | None) -> dict[str, float]:
    """Parse ``Accept-Encoding`` into coding → quality (RFC 9110 12.5.3).

    Malformed members are skipped. A missing field accepts no content coding here
    (only ``identity``), which is the safe reading for precompressed files.
    """
    if value is None:
        return {}
    qualities: dict[str, float] = {}
    for member in value.split(","):
        if not member.strip():
            continue
        match = _CODING_RE.fullmatch(member)
        if match is None:
            continue
        coding, quality = match.group(1).lower(), match.group(2)
        try:
            weight = 1.0 if quality is None else float(quality)
        except ValueError:
            continue
        if 0.0 <= weight <= 1.0:
            qualities[coding] = weight
    return qualities


def preferred_encoding(value: str | None, available: Sequence[str]) -> str | None:
    """The best coding of ``available`` the client accepts, or ``None`` for identity.

    The client's quality values decide; ties go to the server's order of preference.
    """
    qualities = accepted_encodings(value)
    best: tuple[float, int] | None = None
    choice = None
    for rank, coding in enumerate(available):
        weight = qualities.get(coding, qualities.get("*", 0.0))
        if coding == "gzip" and "x-gzip" in qualities and coding not in qualities:
            weight = qualities["x-gzip"]
        if weight <= 0.0:
            continue
        key = (weight, -rank)
        if best is None or key > best:
            best, choice = key, coding
    return choice


# Media types sent with a charset: text/* and the textual application types.
_TEXTUAL = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/manifest+json",
        "image/svg+xml",
    }
)
_EXTRA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    # Python's built-in table lacks these; a host's /etc/mime.types may have them.
    ".ts": "video/mp2t",  # HLS segments, as nginx's mime.types (not TypeScript)
    ".mkv": "video/matroska",  # RFC 9559
    ".m4a": "audio/mp4",  # RFC 4337
    ".flac": "audio/flac",  # RFC 9639
    ".ics": "text/calendar",  # RFC 5545
    ".jxl": "image/jxl",
    ".gltf": "model/gltf+json",
    ".glb": "model/gltf-binary",
    ".zst": "application/zstd",  # RFC 8878
}


if not mimetypes.inited:
    # Until init() reads the host's tables (/etc/mime.types), types_map is Python's
    # built-in one; an application's first guess_type() call reads them, and the
    # type of a static file then changed mid-run. (Once inited, it is left alone:
    # init() again would drop an application's add_type() entries.)
    mimetypes.init()


def content_type(path: str, charset: str = "utf-8") -> str:
    """The media type for ``path``'s extension, with a charset for text types.

    The server's own table comes first so the answer does not depend on the host's
    ``/etc/mime.types``; ``application/octet-stream`` when nothing is known.
    """
    extension = os.path.splitext(path)[1].lower()
    media_type = _EXTRA_TYPES.get(extension)
    if media_type is None:
        media_type = mimetypes.types_map.get(extension, "application/octet-stream")
    if media_type.startswith("text/") or media_type in _TEXTUAL:
        return f"{media_type}; charset={charset}"
    return media_type
