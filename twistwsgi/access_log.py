r"""The access log: one line per response in the combined log format.

The combined format is what nginx (``log_format combined``), Apache and gunicorn
write, so existing log tools read it unchanged::

    127.0.0.1 - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/8"

Requests the server refused itself (malformed, too large, too slow: a 4xx or 5xx it
answers without any handler) are logged too, with the request line as far as it was
read, or ``"-"`` when none of it was usable. An exchange that ended before a
response was started is logged with nginx's 499 (the client closed the connection)
or 444 (the server dropped it). Quotes, backslashes and bytes outside printable ASCII
in the request line, Referer and User-Agent are written as ``\\xHH`` (as nginx
does), so a client cannot forge log lines. Lines go to the Twisted log (the
default), to stdout, or to a file opened in append mode; :meth:`AccessLog.reopen`
reopens the file after log rotation.

Runs in the reactor thread.
"""

from __future__ import annotations

import os
import re
import time
from typing import IO, Protocol

from twisted.logger import Logger

__all__ = ["AccessLog", "LoggedExchange", "escape", "format_combined", "log_time"]

_log = Logger(namespace="twistwsgi.access")

_UNSAFE = re.compile(rb'[^\x20-\x7e]|["\\]')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Request(Protocol):
    method: bytes
    target: bytes
    version: bytes
    peer: tuple[str, int] | None

    def header(self, name: bytes) -> bytes | None: ...


class LoggedExchange(Protocol):
    """What the access log reads from an ended exchange or a refusal."""

    @property
    def request(self) -> _Request:
        """The request facts."""

    status: int
    body_sent: int

    @property
    def client_closed(self) -> bool:
        """Whether the client closed the connection before the exchange ended."""


def escape(value: bytes) -> str:
    r"""Escape ``value`` for a quoted log field (``\\xHH`` for unsafe bytes)."""
    if not _UNSAFE.search(value):
        return value.decode("ascii")
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value).decode("ascii")


def log_time(seconds: float) -> str:
    """Format ``seconds`` as ``10/Oct/2000:13:55:36 +0000`` (always UTC)."""
    tm = time.gmtime(seconds)
    return (
        f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000"
    )


def format_combined(exchange: LoggedExchange, timestamp: str) -> str:
    """Format one access-log line (without the newline)."""
    request = exchange.request
    peer = request.peer
    # A client on a UNIX socket has no address: nginx's $remote_addr is "unix:" then.
    remote = peer[0] if peer else "unix:"
    if request.version:
        line = escape(b"%s %s HTTP/%s" % (request.method, request.target, request.version))
    else:
        line = _partial_line(request)
    referer = request.header(b"referer")
    agent = request.header(b"user-agent")
    # No response was started: the field still holds three digits, as log parsers
    # expect. nginx's 499 (NGX_HTTP_CLIENT_CLOSED_REQUEST, ngx_http_request.h) when
    # the client closed the connection first. When the server dropped it (the
    # graceful timeout, a handler's abort), nginx's 444, its code for closing "without
    # any response" (NGX_HTTP_CLOSE); nginx itself logs 000 for a request cut off at
    # worker_shutdown_timeout (ngx_http_terminate_request(r, 0) leaves the status 0,
    # which $status prints as "%03ui"), but 000 is no HTTP status code at all.
    status = exchange.status or (499 if exchange.client_closed else 444)
    return (
        f'{remote} - - [{timestamp}] "{line}" {status} {exchange.body_sent} '
        f'"{escape(referer) if referer is not None else "-"}" '
        f'"{escape(agent) if agent is not None else "-"}"'
    )


def _partial_line(request: _Request) -> str:
    """The request line of a request refused before its line was read whole.

    nginx logs the raw bytes read of the line, or ``-`` when no byte of one was read
    (``ngx_http_variable_request_line``: the variable is "not found"). The protocol
    keeps what llhttp parsed, not raw bytes, so a line that was not a request line
    at all (a bad method, a TLS handshake on a plain port) is ``-`` here.
    """
    if not request.method:
        return "-"
    if not request.target:
        return escape(request.method)
    return escape(request.method + b" " + request.target)


class _Clock(Protocol):
    def seconds(self) -> float: ...


class AccessLog:
    """Writes combined-format lines for ended exchanges.

    Args:
        destination: a file path, ``"-"`` for stdout, or ``""`` for the Twisted log.
        clock: the time source (the reactor).
    """

    def __init__(self, destination: str, *, clock: _Clock) -> None:
        self._destination = destination
        self._clock = clock
        self._file: IO[str] | None = None
        self._second = -1
        self._timestamp = ""
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the destination file, e.g. after logrotate moved it."""
        if self._destination == "":
            return
        old = self._file
        if self._destination == "-":
            # A duplicate of descriptor 1: twistd replaces sys.stdout with a file
            # that feeds its own log, which is not where "-" should go.
            if old is not None:
                return
            target: int | str = os.dup(1)
        else:
            target = self._destination
        self._file = open(target, "a", encoding="ascii", buffering=1)  # noqa: SIM115
        if old is not None:
            old.close()

    def close(self) -> None:
        """Close the destination file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __call__(self, exchange: LoggedExchange) -> None:
        """Log ``exchange``."""
        now = self._clock.seconds()
        second = int(now)
        if second != self._second:
            self._second = second
            self._timestamp = log_time(second)
        line = format_combined(exchange, self._timestamp)
        if self._file is not None:
            self._file.write(line + "\n")
        else:
            _log.info("{line}", line=line)
