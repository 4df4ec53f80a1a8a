"""The worker threads WSGI applications run on.

A fixed number of daemon threads take callables from one queue. It offers the one
method the WSGI bridge needs from a thread pool, ``callInThread``, so Twisted's own
``ThreadPool`` can be injected instead. It exists because the per-call cost matters
at tens of thousands of requests per second (Twisted's pool routes every call through
a coordinator), and because its threads are daemons: an application stuck past the
graceful timeout cannot keep the process from exiting.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger

__all__ = ["ThreadPoolLike", "WorkerPool"]

_log = Logger(namespace="twistwsgi.threads")


class ThreadPoolLike(Protocol):
    """What the WSGI bridge needs from a pool (Twisted's ``ThreadPool`` fits)."""

    def callInThread(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` in one of the pool's threads."""


class WorkerPool:
    """A fixed set of daemon threads running queued calls in order of arrival.

    Attributes:
        size: the number of threads.
        name: prefix of the threads' names.
    """

    def __init__(self, size: int, name: str = "twistwsgi-worker") -> None:
        if size < 1:
            raise ValueError("A worker pool needs at least one thread")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[
            tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @property
    def started(self) -> bool:
        """Whether the threads are running."""
        return bool(self._threads)

    def start(self) -> None:
        """Start the threads (called from the reactor thread)."""
        if self._threads:
            return
        for number in range(self.size):
            thread = threading.Thread(
                target=self._work, args=(self._queue,), name=f"{self.name}-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def callInThread(self, func: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Queue ``func(*args, **kwargs)`` for the next free thread (any thread)."""
        self._queue.put((func, args, kwargs))

    def stop(self, timeout: float = 5.0) -> None:
        """Let each thread finish its current call, then end it.

        Waits at most ``timeout`` seconds in all; a thread still busy after that is
        left behind (it is a daemon and does not hold the process).
        """
        threads = self.release()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                _log.warn("Worker thread {name} is still busy; leaving it", name=thread.name)

    def release(self) -> list[threading.Thread]:
        """Tell the threads to end once the calls queued so far are done; do not wait.

        Returns:
            The threads, for the caller to wait on as it sees fit (the service
            polls them, so the reactor thread never blocks on a busy one). Calls
            queued from now on wait for the next :meth:`start`, whose threads take
            them from a queue of their own: a thread still busy from before cannot
            take their stop signal.
        """
        threads, self._threads = self._threads, []
        if threads:
            ending, self._queue = self._queue, queue.SimpleQueue()
            for _ in threads:
                ending.put(None)
        return threads

    def _work(self, jobs: queue.SimpleQueue[Any]) -> None:
        """Run calls from ``jobs`` until the stop sentinel (in a worker thread)."""
        get = jobs.get
        while True:
            item = get()
            if item is None:
                return
            func, args, kwargs = item
            try:
                func(*args, **kwargs)
            except BaseException:
                _log.failure("Uncaught exception in a worker thread")
            # Drop the finished call before waiting for the next: held in these
            # names, it (a WSGI request with its connection, environ and body) would
            # live on until this thread's next call, which on an idle server is
            # never. Twisted's ThreadPool deletes them for the same reason.
            del item, func, args, kwargs
