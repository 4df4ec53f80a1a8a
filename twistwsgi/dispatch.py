"""Process-wide tuning of how Twisted's reactor hands socket events to protocols.

For every readable or writable socket, Twisted's poll-based reactors (epoll, poll,
select) call ``twisted.python.log.callWithLogger``, which asks the connection for
its log prefix and pushes a log context holding it before calling the handler. Only
*legacy* log calls made inside the handler read that context (``log.msg`` and
``log.err``, which prefix their lines with it, e.g. ``[HTTP11Protocol,3,127.0.0.1]``);
events from ``twisted.logger.Logger``, which twistwsgi uses throughout, do not.

The push costs more than its use here: measured on loopback with ``wrk -t1 -c50``,
runs alternating with and without it (two series, machine load differing),
dispatching without it served 9-14% more hello-world requests with
``--threads 0``, 15-18% more proxied requests and 13-38% more 10 KB static files.
:func:`skip_log_context` replaces the function with one that calls the handler
directly. Errors are still caught and logged, with the connection's prefix, as
before; what is lost is the prefix on legacy log lines that Twisted itself writes
while handling an event (they say ``[-]``).

The command line (:mod:`twistwsgi.cli`) installs it, since the process is ours.
Library users decide for their own process: nothing here runs on import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python import log

__all__ = ["log_context_skipped", "restore_log_context", "skip_log_context"]

# Twisted's own callWithLogger while ours is installed (at most one entry).
_saved: list[Callable[..., Any]] = []


def _call_without_log_context(logger: Any, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Call ``func``; log what it raises as Twisted's version does, prefix included."""
    try:
        return func(*args, **kw)
    except KeyboardInterrupt:
        raise
    except BaseException:
        try:
            prefix = logger.logPrefix()
        except Exception:
            prefix = "(buggy logPrefix method)"
        log.err(system=prefix)
        return None


def skip_log_context() -> None:
    """Dispatch reactor events without the per-event log context (idempotent)."""
    if not _saved:
        _saved.append(log.callWithLogger)
        log.callWithLogger = _call_without_log_context


def restore_log_context() -> None:
    """Put Twisted's own ``callWithLogger`` back."""
    if _saved:
        log.callWithLogger = _saved.pop()


def log_context_skipped() -> bool:
    """Whether :func:`skip_log_context` is in effect."""
    return log.callWithLogger is _call_without_log_context
