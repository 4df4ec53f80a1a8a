"""Two shortcuts around Twisted's transports, for the per-request hot path.

* :func:`write_now` sends response bytes on a plain TCP or UNIX socket immediately when
  the transport has nothing buffered. Twisted's ``write`` only buffers and registers
  the socket for writability, so every response would otherwise cost two
  ``epoll_ctl`` calls and a trip round the event loop before its bytes leave.
  Whatever the kernel does not take at once is handed to ``transport.write`` as usual,
  so ordering, producers and connection loss work exactly as before.
* :class:`ReactorInbox` runs calls from worker threads in the reactor with one wakeup
  per batch. ``reactor.callFromThread`` writes a byte to the waker pipe for every
  call; under load most of those wakeups are redundant.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

__all__ = ["ReactorInbox", "write_now"]

_log = Logger(namespace="twistwsgi.http")


def write_now(transport: Any, data: bytes, flags: int = 0) -> None:
    """Write ``data``, sending it straight to the socket when nothing is queued.

    ``flags`` go to ``send`` (``MSG_MORE`` for a head a file will follow). Reactor
    thread only.
    """
    if (
        isinstance(transport, tcp.Connection)
        and transport.connected
        and not transport.disconnecting
        and transport.offset == len(transport.dataBuffer)
        and not transport._tempDataLen
    ):
        try:
            sent = transport.socket.send(data, flags)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Let Twisted see (and report) the broken connection its own way.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class ReactorInbox:
    """Runs callables from any thread in the reactor thread, in order, batched.

    Args:
        reactor: used for one ``callFromThread`` per batch.
    """

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def call(self, func: Callable[..., object], *args: Any) -> None:
        """Run ``func(*args)`` in the reactor thread soon (any thread)."""
        self._calls.append((func, args))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        """Run every queued call (reactor thread)."""
        # Reset before draining: a call queued after this point either is run by
        # the loop below or schedules a new drain.
        with self._lock:
            self._scheduled = False
        calls = self._calls
        while calls:
            func, args = calls.popleft()
            try:
                func(*args)
            except Exception:
                _log.failure("Error in a call handed to the reactor by a worker thread")
