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

Each line is one ``write`` of its own, unbuffered, so that the workers appending to
one file never mix their lines (an ``O_APPEND`` write lands whole), and on a pipe
(stdout read by docker or journald, a FIFO) a line is cut to ``PIPE_BUF`` bytes,
the most POSIX writes to a pipe in one piece. A destination that blocks (a pipe read
slowly) holds the writing process until it takes the line, as nginx's log does: no
line is dropped and nothing is queued in memory. One that fails (a full disk, an
``EIO``) loses the line: the server log says so once, and once more, with how many
were lost, when writing works again. Another line format can be given as an nginx
``log_format`` template (:class:`~twistwsgi.log_format.LogFormat`), with the
request's time among its variables.

A host or a mount may have its own destination, as nginx's ``access_log`` in a
``server`` or ``location`` block: :class:`AccessLogFiles` holds one
:class:`AccessLog` per destination they name, kept across reloads (a destination
still named is not reopened, so no line is lost between two files), and
:data:`NOT_LOGGED` stands for ``off``. The router says which of them an exchange's
line goes to (``Exchange.access_log``).

Runs in the reactor thread.
"""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Callable
from typing import IO, Protocol

from twisted.logger import Logger, LogLevel

from twistwsgi.log_format import (
    LogFormat,
    LoggedResponse,
    escape,
    log_time,
    logged_status,
    request_line,
)

__all__ = [
    "COMBINED",
    "CUT_MARK",
    "NOT_LOGGED",
    "AccessLog",
    "AccessLogFiles",
    "LoggedExchange",
    "escape",
    "format_combined",
    "log_time",
]

_log = Logger(namespace="twistwsgi.access")
# The destination's own troubles, apart from the lines.
_trouble = Logger(namespace="twistwsgi.access_log")

#: What a line cut to fit a pipe ends with, before its newline.
CUT_MARK = b"..."

#: nginx's predefined ``combined`` format: what :func:`format_combined` writes.
COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent'
    ' "$http_referer" "$http_user_agent"'
)

#: What the access log reads from an ended exchange or a refusal.
LoggedExchange = LoggedResponse


def format_combined(exchange: LoggedExchange, timestamp: str) -> str:
    """Format one access-log line (without the newline).

    The fast form of ``LogFormat(COMBINED)``, the default: it writes the same line.
    """
    request = exchange.request
    peer = request.peer
    # A client on a UNIX socket has no address: nginx's $remote_addr is "unix:" then.
    remote = peer[0] if peer else "unix:"
    line = escape(request_line(request)) or "-"
    referer = agent = None
    for name, value in request.headers:
        # Both read in one pass; a field on several lines is written whole, joined
        # with ", " as $http_NAME writes it (nginx 1.23+). The length first: most
        # fields are neither, and a request may have many.
        size = len(name)
        if size == 7 and name.lower() == b"referer":
            referer = value if referer is None else referer + b", " + value
        elif size == 10 and name.lower() == b"user-agent":
            agent = value if agent is None else agent + b", " + value
    status = logged_status(exchange)
    user = getattr(exchange, "remote_user", None)
    user_text = "-" if user is None else escape(user.encode("utf-8"))
    return (
        f'{remote} - {user_text} [{timestamp}] "{line}" {status} {exchange.body_sent} '
        f'"{escape(referer) if referer is not None else "-"}" '
        f'"{escape(agent) if agent is not None else "-"}"'
    )


class _Clock(Protocol):
    def seconds(self) -> float: ...


class AccessLog:
    """Writes a line for each ended exchange, in the combined format or another.

    Args:
        destination: a file path, ``"-"`` for stdout, or ``""`` for the Twisted log.
        clock: the time source (the reactor).
        log_format: the line format; ``None`` for the combined format.

    Attributes:
        log_format: as given; may be replaced (a reload).
    """

    def __init__(
        self, destination: str, *, clock: _Clock, log_format: LogFormat | None = None
    ) -> None:
        self._destination = destination
        self._clock = clock
        self.log_format = log_format
        self._file: IO[bytes] | None = None
        self._fd = -1
        # The most one write may carry: PIPE_BUF on a pipe, else no limit.
        self._most = 0
        self._second = -1
        self._timestamp = ""
        # Lines lost since the last write that worked (the first loss is reported).
        self._lost = 0
        # The last write stopped mid-line: the next line begins on a line of its own.
        self._cut = False
        self.reopen()

    @property
    def destination(self) -> str:
        """The destination, as given."""
        return self._destination

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
        # Unbuffered: each line is one write (see _write), none held back in memory.
        new = open(target, "ab", buffering=0)  # noqa: SIM115
        fd = new.fileno()
        mode = os.fstat(fd).st_mode
        self._most = select.PIPE_BUF if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else 0
        self._file, self._fd, self._cut = new, fd, False
        if old is not None:
            old.close()

    def close(self) -> None:
        """Close the destination file."""
        if self._file is not None:
            self._file.close()
            self._file, self._fd = None, -1

    def __call__(self, exchange: LoggedExchange) -> None:
        """Log ``exchange``."""
        now = self._clock.seconds()
        log_format = self.log_format
        if log_format is not None:
            line = log_format.format(exchange, now)
        else:
            second = int(now)
            if second != self._second:
                self._second = second
                self._timestamp = log_time(second)
            line = format_combined(exchange, self._timestamp)
        if self._file is not None:
            self._write(line)
        else:
            # The event Logger.info would build, given to the log's observers
            # directly: Logger.emit's own work (checking the level, gathering the
            # fields) was a quarter of what a line cost through twistd's file
            # observer (5 of 22 us in a loop).
            _log.observer(
                {
                    "log_logger": _log,
                    "log_level": LogLevel.info,
                    "log_namespace": "twistwsgi.access",
                    "log_source": None,
                    "log_format": "{line}",
                    "log_time": now,
                    "line": line,
                }
            )

    def _write(self, line: str) -> None:
        """Write ``line`` and its newline in one write; on failure, drop it and say so.

        Never raises: a log that cannot be written must not fail the responses.
        """
        # UTF-8: the escaped values are ASCII; a template's own text, or a value
        # under escape=none, may be anything.
        data = (line + "\n").encode("utf-8")
        if self._cut:
            data = b"\n" + data
        most = self._most
        if most and len(data) > most:
            # POSIX (write(2), "Pipes and FIFOs") makes a pipe write atomic only up
            # to PIPE_BUF: a longer one may be split, and another worker's lines
            # land between its pieces.
            data = data[: most - len(CUT_MARK) - 1] + CUT_MARK + b"\n"
        written = 0
        try:
            while written < len(data):
                # A write may be short (a disk filling up, a signal): go on from there.
                written += os.write(self._fd, data[written:])
        except OSError as error:
            self._cut = written > 0
            self._lost += 1
            if self._lost == 1:
                _trouble.error(
                    "Cannot write the access log {path}: {error}; its lines are lost"
                    " until it can be written again",
                    path=self._name(),
                    error=error.strerror or str(error),
                )
            return
        self._cut = False
        if self._lost:
            _trouble.warn(
                "The access log {path} is written again; {lost} lines were lost",
                path=self._name(),
                lost=self._lost,
            )
            self._lost = 0

    def _name(self) -> str:
        """The destination, as the server log names it."""
        return "stdout" if self._destination == "-" else repr(self._destination)


def _not_logged(exchange: LoggedExchange) -> None:
    """Write nothing: the destination ``off``."""


#: The access log of a host or mount whose ``access_log`` is ``off``.
NOT_LOGGED: Callable[[LoggedExchange], None] = _not_logged


class AccessLogFiles:
    """The access logs of hosts and mounts that name their own, one per destination.

    Args:
        clock: the time source (the reactor).

    Attributes:
        log_format: the line format of every one (the server's), ``None`` for the
            combined format (see :meth:`set_format`).
    """

    def __init__(self, *, clock: _Clock) -> None:
        self._clock = clock
        self.log_format: LogFormat | None = None
        self._logs: dict[str, AccessLog] = {}
        # The destinations the build under way names, with their own formats (None:
        # the server's), and those of the table serving, as its build named them.
        self._named: dict[str, LogFormat | None] = {}
        self._serving: dict[str, LogFormat | None] = {}
        self._before: set[str] = set()  # those open when it began
        # Those the serving table no longer names, kept for the exchanges in flight.
        self._retired: list[AccessLog] = []

    def begin(self) -> None:
        """A routing table is being built: the destinations it names are noted."""
        self._named = {}
        self._before = set(self._logs)

    def abandon(self) -> None:
        """The table being built will not serve: close the files its build opened."""
        for destination in list(self._logs):
            if destination not in self._before:
                self._logs.pop(destination).close()

    def get(
        self, destination: str, own_format: LogFormat | None = None
    ) -> Callable[[LoggedExchange], None]:
        """The log writing to ``destination`` (a path, ``-``, or ``off``).

        Args:
            destination: where the lines go.
            own_format: the lines' format, if not the server's (nginx's access_log
                PATH FORMAT).

        Raises:
            OSError: the file cannot be opened.
            ValueError: the build named ``destination`` with another format already
                (one file, one line format).
        """
        if destination == "off":
            return NOT_LOGGED
        template = own_format.template if own_format is not None else None
        if destination in self._named:
            named = self._named[destination]
            if (named.template if named is not None else None) != template:
                raise ValueError(f"{destination!r} is written with another line format elsewhere")
        self._named[destination] = own_format
        log = self._logs.get(destination)
        if log is None:
            # (A log already open takes a new format when the table serves: settle.)
            log = self._logs[destination] = AccessLog(
                destination,
                clock=self._clock,
                log_format=own_format if own_format is not None else self.log_format,
            )
        return log

    def settle(self) -> None:
        """The table being built now serves: retire the logs it does not name.

        A retired log stays open until the next table serves (or :meth:`close`), so
        the exchanges the old table routed, still in flight (a download, a
        WebSocket), write their lines where their request was to be logged. One
        still in flight after two reloads writes to the server log (a closed
        :class:`AccessLog` writes there).
        """
        for log in self._retired:
            log.close()
        self._retired = [
            self._logs.pop(destination)
            for destination in list(self._logs)
            if destination not in self._named
        ]
        self._serving = dict(self._named)
        for destination, own_format in self._serving.items():
            if own_format is not None:  # (set_format gives the others the server's)
                self._logs[destination].log_format = own_format

    def set_format(self, log_format: LogFormat | None) -> None:
        """Write every line with ``log_format`` from now on (a reload)."""
        self.log_format = log_format
        for destination, log in self._logs.items():
            if self._serving.get(destination) is None:  # (not one of its own)
                log.log_format = log_format

    def reopen(self) -> list[tuple[str, OSError]]:
        """Reopen every file (log rotation); those that cannot be, with why.

        One that cannot be reopened keeps writing to its open file.
        """
        failed = []
        for destination, log in self._logs.items():
            try:
                log.reopen()
            except OSError as error:
                failed.append((destination, error))
        return failed

    def close(self) -> None:
        """Close every file."""
        for log in [*self._logs.values(), *self._retired]:
            log.close()
        self._logs.clear()
        self._serving = {}
        self._retired = []
