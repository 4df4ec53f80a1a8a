"""Bytes the server writes: status lines, chunk framing, the Date and Server lines.

Pure functions and small caches with no Twisted import, so the exact bytes on the wire
can be tested directly. The protocol calls them for every response (it joins the field
lines of a head itself, keeping what framing needs to know); everything that can be
computed once (status lines, the Date value for the current second) is cached.
"""

from __future__ import annotations

import time

from twistwsgi.http.rules import reason_phrase

__all__ = ["DateCache", "chunk", "http_date", "status_line"]

_status_lines: dict[tuple[int, bytes | None], bytes] = {}
_STATUS_LINE_CACHE_LIMIT = 1024

_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)


def status_line(status: int, reason: bytes | None = None) -> bytes:
    r"""Return ``HTTP/1.1 NNN Reason\\r\\n`` (the standard reason if ``None``), cached.

    Responses always carry HTTP/1.1, whatever the request's version (RFC 9110 6.2: a
    server sends its own highest version, the minor version tells what it supports).
    """
    key = (status, reason)
    line = _status_lines.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status) if reason is None else reason)
        if len(_status_lines) < _STATUS_LINE_CACHE_LIMIT:
            _status_lines[key] = line
    return line


def http_date(seconds: float) -> bytes:
    """Format ``seconds`` since the epoch as an IMF-fixdate (RFC 9110 5.6.7)."""
    tm = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[tm.tm_wday],
        tm.tm_mday,
        _MONTHS[tm.tm_mon - 1],
        tm.tm_year,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    )


class DateCache:
    r"""The ``Date`` value and the ``Date``/``Server`` lines, once per second.

    Formatted at most once per second of the given clock.

    Attributes:
        server: the ``Server`` field value, empty for none.
        second: the whole second the cached values belong to.
        value: the formatted ``Date`` field value.
        fields: ``Date: ...\\r\\nServer: ...\\r\\n``, the lines most responses end with.
    """

    __slots__ = ("fields", "second", "server", "value")

    def __init__(self, server: bytes = b"") -> None:
        self.server = server
        self.second = -1
        self.value = b""
        self.fields = b""

    def _refresh(self, second: int) -> None:
        self.second = second
        self.value = http_date(second)
        server = b"Server: " + self.server + b"\r\n" if self.server else b""
        self.fields = b"Date: " + self.value + b"\r\n" + server

    def get(self, now: float) -> bytes:
        """Return the ``Date`` value for ``now``, reformatting only on a new second."""
        second = int(now)
        if second != self.second:
            self._refresh(second)
        return self.value

    def get_fields(self, now: float) -> bytes:
        """Return the ``Date`` and ``Server`` field lines for ``now``."""
        second = int(now)
        if second != self.second:
            self._refresh(second)
        return self.fields


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk of the chunked transfer coding (RFC 9112 7.1).

    Empty data frames as nothing: a zero-size chunk would end the body.
    """
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)
