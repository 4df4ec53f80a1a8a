"""What a listening port does when accept(2) fails for want of a resource.

Twisted's ``tcp.Port`` (and the UNIX port built on it) handles EMFILE with a spare
descriptor it keeps open: it closes the spare, accepts the waiting connections and
closes each at once, then opens the spare again. It logs three lines for each read
of the port and one more for each connection so closed: a burst of clients at the
open-files limit writes a line per client. Without the spare (ENFILE, ENOBUFS,
ENOMEM, or EMFILE after a worker thread took the slot the spare left free: it is
opened again only at the next EMFILE recovery) the accept fails, the port stays
readable, and the reactor calls it again at once: a line per turn of the loop, at
full CPU, until a descriptor comes free.

:class:`AcceptFailures` stands between such a port and the log. It counts those
events and says them in one line per :data:`LOG_INTERVAL` at most, with the
counts; and a port whose accept failed with its spare gone rests for
:data:`RETRY_DELAY` (its clients wait in the listen backlog meanwhile), as nginx
disables its accept events for ``accept_mutex_delay`` (500 ms) after EMFILE or
ENFILE, and the spare is opened again then.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogEvent, Logger
from zope.interface import implementer

__all__ = ["LOG_INTERVAL", "RETRY_DELAY", "AcceptFailures"]

_log = Logger(namespace="twistwsgi.http")

#: Seconds between two lines about connections that could not be accepted, at least.
LOG_INTERVAL = 10.0
#: Seconds a port rests after its accept failed without a spare descriptor (nginx's
#: accept_mutex_delay, which it also waits after EMFILE without an accept mutex).
RETRY_DELAY = 0.5

# The formats of Twisted's accept-loop events (twisted.internet.tcp._accept).
_RELEASING = "EMFILE encountered;"
_CLOSED = "EMFILE recovery: Closed socket"
_RESERVING = "Re-reserving EMFILE recovery"
_FAILED = "Could not accept new connection"


class AcceptFailures:
    """Counts a factory's accept failures, says them seldom, and rests failing ports.

    Attributes:
        closed: connections accepted with the spare descriptor and closed at once.
        failed: accepts that failed without it (each followed by a rest).
    """

    def __init__(
        self, clock: IReactorTime, *, may_resume: Callable[[Any], bool] | None = None
    ) -> None:
        """Watch ports for a factory.

        Args:
            clock: the time, and the timers of the rests and the log lines.
            may_resume: whether a rested port may read again (not paused for another
                reason, such as the connection limit, nor closing); always by default.
        """
        self.clock = clock
        self.closed = 0
        self.failed = 0
        self._may_resume = may_resume or (lambda port: True)
        self._errors: set[str] = set()
        self._logged_at: float | None = None
        self._said_closed = 0
        self._said_failed = 0
        self._resting: dict[int, Any] = {}
        self._pending: Any = None

    def watch(self, port: Any) -> None:
        """Take the accept-loop events of ``port`` (a Twisted ``tcp.Port``).

        Twisted gives the port a class-level ``Logger`` whose events its accept loop
        buffers and then hands to that logger's observer; an instance attribute of
        the same name takes its place. A port without one is left as it is.
        """
        logger = getattr(port, "_logger", None)
        if isinstance(logger, Logger):
            observer = _Observer(self, port, logger.observer)
            port._logger = Logger(namespace=logger.namespace, source=port, observer=observer)

    def event(self, port: Any, event: LogEvent, forward: ILogObserver) -> None:
        """One event of ``port``'s logger: counted if it is an accept failure."""
        text = str(event.get("log_format") or "")
        if text.startswith((_RELEASING, _RESERVING)):
            self._errors.add("EMFILE")
            return
        if text.startswith(_CLOSED):
            self.closed += 1
        elif text.startswith(_FAILED):
            self.failed += 1
            self._errors.add(str(event.get("acceptError", "?")))
            self._rest(port)
        else:
            forward(event)
            return
        self._say()

    def _rest(self, port: Any) -> None:
        """Stop reading ``port`` for RETRY_DELAY: it stays readable while accept fails."""
        if id(port) in self._resting:
            return
        port.stopReading()
        self._resting[id(port)] = self.clock.callLater(RETRY_DELAY, self._resume, port)

    def _resume(self, port: Any) -> None:
        del self._resting[id(port)]
        # The spare descriptor is opened again only by Twisted's next EMFILE
        # recovery; without it every EMFILE from now on would be a rest.
        reservation = getattr(tcp, "_reservedFD", None)
        if reservation is not None and not reservation.available():
            reservation.reserve()
        if self._may_resume(port):
            port.startReading()

    def stop(self) -> None:
        """Cancel the rests and the pending line (the ports are closing)."""
        for call in self._resting.values():
            if call.active():
                call.cancel()
        self._resting.clear()
        if self._pending_line():
            self._pending.cancel()

    def _say(self) -> None:
        """Log the counts now, if the last line is LOG_INTERVAL old, or later."""
        now = self.clock.seconds()
        last = self._logged_at
        if last is not None and now - last < LOG_INTERVAL:
            if not self._pending_line():
                self._pending = self.clock.callLater(LOG_INTERVAL - (now - last), self._flush)
            return
        self._logged_at = now
        closed, failed = self.closed - self._said_closed, self.failed - self._said_failed
        self._said_closed, self._said_failed = self.closed, self.failed
        errors = ", ".join(_described(name) for name in sorted(self._errors))
        self._errors = set()
        done = []
        if closed:
            done.append(f"{closed} new connection(s) closed at once")
        if failed:
            done.append(f"{failed} pause(s) of {RETRY_DELAY} s, new ones waiting in the backlog")
        _log.error(
            "accept() failed: {errors}; {done} (said at most every {interval} s)",
            errors=errors,
            done=", ".join(done),
            interval=LOG_INTERVAL,
        )

    def _pending_line(self) -> bool:
        return self._pending is not None and self._pending.active()

    def _flush(self) -> None:
        self._pending = None
        if self.closed != self._said_closed or self.failed != self._said_failed:
            self._say()


def _described(name: str) -> str:
    """``EMFILE (Too many open files)`` for an errno name, the name for another."""
    code = getattr(errno, name, None)
    return f"{name} ({os.strerror(code)})" if isinstance(code, int) else name


@implementer(ILogObserver)
class _Observer:
    """The observer of one port's logger: its events go to :class:`AcceptFailures`."""

    def __init__(self, failures: AcceptFailures, port: Any, forward: ILogObserver) -> None:
        self._failures = failures
        self._port = port
        self._forward = forward

    def __call__(self, event: LogEvent) -> None:
        self._failures.event(self._port, event, self._forward)
