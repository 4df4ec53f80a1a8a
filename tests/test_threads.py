"""Crossing threads: the WorkerPool applications run on (``twistwsgi.threads``) and
the ReactorInbox that hands their results back to the reactor in batches
(``twistwsgi.http.transport``). Event waits carry a generous timeout only so that a
broken implementation fails instead of hanging; no test depends on timing.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from twistwsgi.http.transport import ReactorInbox
from twistwsgi.testing import capture_log_events
from twistwsgi.threads import WorkerPool

#: Only turns a hang into a failure.
GUARD = 30.0

_numbers = itertools.count()


def pool_threads(name: str) -> list[threading.Thread]:
    """The live threads of the pool called ``name``."""
    return [thread for thread in threading.enumerate() if thread.name.startswith(name + "-")]


@pytest.fixture
def make_pool() -> Iterator[Callable[[int], WorkerPool]]:
    """Build started pools with unique thread names; stop them after the test."""
    pools: list[WorkerPool] = []

    def make(size: int) -> WorkerPool:
        pool = WorkerPool(size, name=f"test-pool-{next(_numbers)}")
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop(timeout=GUARD)


def wait(event: threading.Event) -> None:
    """Wait for ``event``, failing (not hanging) if it never comes."""
    assert event.wait(GUARD), "timed out waiting for a worker thread"


# -- WorkerPool -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1])
def test_pool_needs_a_thread(size: int) -> None:
    """A pool of fewer than one thread is refused."""
    with pytest.raises(ValueError, match="at least one"):
        WorkerPool(size)


def test_calls_run_on_a_worker_thread(make_pool: Callable[[int], WorkerPool]) -> None:
    """A call runs on one of the pool's daemon threads, with its arguments."""
    pool = make_pool(2)
    seen: list[tuple[threading.Thread, tuple[Any, ...], dict[str, Any]]] = []
    done = threading.Event()

    def record(*args: Any, **kwargs: Any) -> None:
        seen.append((threading.current_thread(), args, kwargs))
        done.set()

    pool.callInThread(record, 1, "two", key=3)
    wait(done)
    (thread, args, kwargs) = seen[0]
    assert thread is not threading.main_thread()
    assert thread.name.startswith(pool.name + "-")
    assert thread.daemon
    assert args == (1, "two")
    assert kwargs == {"key": 3}


def test_start_creates_size_threads_once(make_pool: Callable[[int], WorkerPool]) -> None:
    """start() creates ``size`` threads; calling it again creates no more."""
    pool = make_pool(3)
    pool.start()
    assert pool.started
    assert len(pool_threads(pool.name)) == 3


def test_threads_run_calls_concurrently(make_pool: Callable[[int], WorkerPool]) -> None:
    """With two threads, two calls run at the same time: each waits at a barrier
    the other must also reach.
    """
    pool = make_pool(2)
    barrier = threading.Barrier(3, timeout=GUARD)
    threads: set[str] = set()

    def meet() -> None:
        threads.add(threading.current_thread().name)
        barrier.wait()

    pool.callInThread(meet)
    pool.callInThread(meet)
    barrier.wait()
    assert len(threads) == 2


def test_one_thread_keeps_order_of_arrival(make_pool: Callable[[int], WorkerPool]) -> None:
    """With one thread, calls run one after the other in the order they were queued."""
    pool = make_pool(1)
    order: list[int] = []
    done = threading.Event()
    for number in range(200):
        pool.callInThread(order.append, number)
    pool.callInThread(done.set)
    wait(done)
    assert order == list(range(200))


def test_calls_queued_before_start_run_after_it() -> None:
    """Calls queued before start() wait for the threads, then run."""
    pool = WorkerPool(1, name=f"test-pool-{next(_numbers)}")
    done = threading.Event()
    ran: list[int] = []
    pool.callInThread(ran.append, 1)
    pool.callInThread(done.set)
    assert not pool.started
    pool.start()
    try:
        wait(done)
    finally:
        pool.stop(timeout=GUARD)
    assert ran == [1]


def test_exception_is_logged_and_the_thread_keeps_working(
    make_pool: Callable[[int], WorkerPool],
) -> None:
    """An exception in a call is logged as a failure, and the same (only) thread
    runs the next call.
    """
    pool = make_pool(1)
    done = threading.Event()
    names: list[str] = []

    def fail() -> None:
        names.append(threading.current_thread().name)
        raise ZeroDivisionError("boom in a worker")

    def after() -> None:
        names.append(threading.current_thread().name)
        done.set()

    with capture_log_events() as events:
        pool.callInThread(fail)
        pool.callInThread(after)
        wait(done)
    failures = [event for event in events if "log_failure" in event]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ZeroDivisionError)
    assert len(names) == 2
    assert names[0] == names[1]
    assert len(pool_threads(pool.name)) == 1


class _Held:
    """A value a test follows with a weak reference."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        """Do nothing (stands for an application call)."""


def test_an_idle_thread_holds_no_reference_to_its_last_call() -> None:
    """A thread waiting for its next call no longer holds the one it ran, nor its
    arguments.

    A call is a WSGI request: its exchange, connection, environ and body. Held until
    the thread's next call, an idle server would keep one finished request per thread
    alive (seen in a soak: ten finished connections per process, with their
    transports, long after every client had gone). Twisted's own ThreadPool drops
    them too. The loop runs here in the test's thread, on a queue whose second
    ``get`` looks at what is still alive while the loop waits in it.
    """
    pool = WorkerPool(1, name=f"test-pool-{next(_numbers)}")
    function, argument, keyword = _Held(), _Held(), _Held()
    references = [weakref.ref(function), weakref.ref(argument), weakref.ref(keyword)]
    alive_while_waiting: list[bool] = []

    class Jobs:
        def __init__(self, items: list[Any]) -> None:
            self.items = items

        def get(self) -> Any:
            if self.items:
                return self.items.pop()
            alive_while_waiting.extend(reference() is not None for reference in references)
            return None

    jobs = Jobs([(function, (argument,), {"keyword": keyword})])
    del function, argument, keyword
    pool._work(jobs)  # type: ignore[arg-type]
    assert alive_while_waiting == [False, False, False]


def test_stop_runs_queued_calls_then_ends_the_threads() -> None:
    """stop() lets the threads finish what was queued before it, then every thread
    ends and the pool is no longer started.
    """
    pool = WorkerPool(3, name=f"test-pool-{next(_numbers)}")
    pool.start()
    assert len(pool_threads(pool.name)) == 3
    lock = threading.Lock()
    ran: list[int] = []

    def record(number: int) -> None:
        with lock:
            ran.append(number)

    for number in range(50):
        pool.callInThread(record, number)
    pool.stop(timeout=GUARD)
    assert sorted(ran) == list(range(50))
    assert pool_threads(pool.name) == []
    assert not pool.started


def test_stop_leaves_a_busy_thread_behind_with_a_warning() -> None:
    """A thread still in a call when the stop timeout ends is left running (it is a
    daemon) with a warning, and ends by itself once its call returns.
    """
    pool = WorkerPool(1, name=f"test-pool-{next(_numbers)}")
    pool.start()
    entered = threading.Event()
    release = threading.Event()

    def block() -> None:
        entered.set()
        release.wait(GUARD)

    pool.callInThread(block)
    wait(entered)
    (thread,) = pool_threads(pool.name)
    with capture_log_events() as events:
        pool.stop(timeout=0.0)
    assert thread.is_alive()
    assert any("still busy" in str(event.get("log_format")) for event in events)
    release.set()
    thread.join(GUARD)
    assert not thread.is_alive()


def test_a_restart_keeps_every_thread_while_one_from_before_is_busy() -> None:
    """Started again while a thread of the last run is still in a call, the pool has
    its full size: that thread's stop signal cannot be taken by a new thread (they
    take calls from a queue of their own), and it ends once its call returns.
    """
    pool = WorkerPool(2, name=f"test-pool-{next(_numbers)}")
    pool.start()
    entered = threading.Event()
    release = threading.Event()
    blocked: list[threading.Thread] = []

    def block() -> None:
        blocked.append(threading.current_thread())
        entered.set()
        release.wait(GUARD)

    pool.callInThread(block)
    wait(entered)
    [busy] = blocked
    [idle] = [thread for thread in pool.release() if thread is not busy]
    idle.join(GUARD)  # it took its stop signal at once
    pool.start()
    ran: list[threading.Thread] = []
    both = threading.Barrier(3, timeout=GUARD)  # two new threads at once, and the test

    def meet() -> None:
        ran.append(threading.current_thread())
        both.wait()

    for _ in range(2):
        pool.callInThread(meet)
    both.wait()
    assert len(set(ran)) == 2 and busy not in ran
    release.set()
    busy.join(GUARD)
    assert not busy.is_alive()
    assert len([t for t in pool_threads(pool.name) if t.is_alive()]) == 2
    pool.stop(timeout=GUARD)


# -- ReactorInbox ---------------------------------------------------------------------


@implementer(IReactorFromThreads)
class RecordingReactor:
    """Records callFromThread calls; runs them only when the test says so."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[Callable[[], object]] = []
        self.wakeups = 0

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        """Record one wakeup (any thread)."""
        with self.lock:
            self.wakeups += 1
            self.pending.append(lambda: callable(*args, **kwargs))

    def run_pending(self) -> None:
        """Play the reactor thread: run recorded calls until none are left."""
        while True:
            with self.lock:
                if not self.pending:
                    return
                func = self.pending.pop(0)
            func()


def test_inbox_batches_calls_from_many_threads() -> None:
    """Calls from several threads, queued before the reactor drains, all run in one
    batch after a single wakeup, each thread's calls in the order it made them.
    """
    reactor = RecordingReactor()
    inbox = ReactorInbox(reactor)
    thread_count, per_thread = 4, 250
    start = threading.Barrier(thread_count, timeout=GUARD)
    ran: list[tuple[int, int]] = []
    reactor_threads: set[threading.Thread] = set()

    def record(sender: int, number: int) -> None:
        reactor_threads.add(threading.current_thread())
        ran.append((sender, number))

    def send(sender: int) -> None:
        start.wait()
        for number in range(per_thread):
            inbox.call(record, sender, number)

    senders = [threading.Thread(target=send, args=(n,)) for n in range(thread_count)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(GUARD)
        assert not sender.is_alive()
    assert ran == []
    assert reactor.wakeups == 1
    reactor.run_pending()
    assert len(ran) == thread_count * per_thread
    for sender_number in range(thread_count):
        numbers = [number for sender, number in ran if sender == sender_number]
        assert numbers == list(range(per_thread))
    assert reactor_threads == {threading.current_thread()}
    assert reactor.wakeups < thread_count * per_thread


def test_inbox_wakes_the_reactor_again_after_a_drain() -> None:
    """Once a batch has run, the next call schedules a new wakeup."""
    reactor = RecordingReactor()
    inbox = ReactorInbox(reactor)
    ran: list[str] = []
    inbox.call(ran.append, "a")
    inbox.call(ran.append, "b")
    assert reactor.wakeups == 1
    reactor.run_pending()
    inbox.call(ran.append, "c")
    assert reactor.wakeups == 2
    reactor.run_pending()
    assert ran == ["a", "b", "c"]


def test_inbox_runs_calls_queued_during_a_drain() -> None:
    """A call queued by a call being run (the reactor thread itself calling) is not
    lost: it runs once the reactor has run what it was given.
    """
    reactor = RecordingReactor()
    inbox = ReactorInbox(reactor)
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        inbox.call(ran.append, "nested")

    inbox.call(first)
    inbox.call(ran.append, "second")
    reactor.run_pending()
    assert ran == ["first", "second", "nested"]


def test_inbox_exception_does_not_stop_later_calls() -> None:
    """An exception in one call is logged and the calls after it in the same batch
    still run.
    """
    reactor = RecordingReactor()
    inbox = ReactorInbox(reactor)
    ran: list[int] = []

    def fail() -> None:
        raise KeyError("boom in the reactor")

    inbox.call(ran.append, 1)
    inbox.call(fail)
    inbox.call(ran.append, 2)
    with capture_log_events() as events:
        reactor.run_pending()
    assert ran == [1, 2]
    failures = [event for event in events if "log_failure" in event]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(KeyError)
    assert reactor.wakeups == 1
