"""A worker process's parts: inherited listeners, the report pipe, the control pipe."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, formatEvent, formatTime
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from twistwsgi.shared_limits import SharedLimits
from twistwsgi.testing import capture_log_events
from twistwsgi.worker import (
    HEARTBEAT_INTERVAL,
    REQUEST_COUNT_INTERVAL,
    Heartbeat,
    InheritedEndpoint,
    MasterWatch,
    ReplacementWatch,
    ReportPipe,
    _Control,
    _shared_limits,
    request_limit,
    resident_memory,
    take_dump_signal,
)

reactor: Any = global_reactor


class Counting(Factory):
    """Counts the connections its port accepted (and closes them)."""

    def __init__(self) -> None:
        self.accepted = 0

    def buildProtocol(self, addr: object) -> Protocol:
        self.accepted += 1
        return Protocol()


def listening(family: int, directory: Path) -> socket.socket:
    listener = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        listener.bind(str(directory / "s"))
    else:
        listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)  # (as the master's Twisted port leaves it)
    return listener


class InheritedEndpointTests(TestCase):
    """Adopting inherited sockets on the real reactor (a worker's own)."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tw-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def adopt(self, listener: socket.socket, factory: Any, tls: Any = None) -> Any:
        port = await InheritedEndpoint(reactor, os.dup(listener.fileno()), tls).listen(factory)
        self.addCleanup(port.stopListening)
        return port

    async def until(self, condition: Any) -> None:
        for _ in range(3000):  # the bound only turns a hang into a failure
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not met")

    async def test_each_family_is_adopted_and_its_descriptor_let_go(self) -> None:
        """The port holds its own duplicate: the inherited descriptor is closed, so the
        socket ends with the port.
        """
        for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            listener = listening(family, self.directory)
            self.addCleanup(listener.close)
            inherited = os.dup(listener.fileno())
            factory = Counting()
            port = await InheritedEndpoint(reactor, inherited).listen(factory)
            self.addCleanup(port.stopListening)
            with self.assertRaises(OSError):
                os.fstat(inherited)
            client = socket.socket(family, socket.SOCK_STREAM)
            self.addCleanup(client.close)
            client.connect(listener.getsockname())
            await self.until(lambda factory=factory: factory.accepted == 1)

    async def test_a_tls_listener_wraps_the_factory_in_tls(self) -> None:
        listener = listening(socket.AF_INET, self.directory)
        self.addCleanup(listener.close)
        factory = Counting()
        options = CertificateOptions()
        endpoint = InheritedEndpoint(reactor, os.dup(listener.fileno()), options)
        port: Any = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port.factory, TLSMemoryBIOFactory)
        self.assertIs(port.factory.wrappedFactory, factory)
        self.assertIs(endpoint.tls_options, options)

    async def test_ports_on_one_socket_take_turns_accepting(self) -> None:
        """Two workers woken by the same burst share it: each port accepts one
        connection per turn (Twisted's own would take all 20 in its first turn).
        """
        listener = listening(socket.AF_INET, self.directory)
        self.addCleanup(listener.close)
        first, second = Counting(), Counting()
        await self.adopt(listener, first)
        await self.adopt(listener, second)
        # Connected before the reactor runs again: all 20 wait in the backlog.
        clients = [socket.create_connection(listener.getsockname()) for _ in range(20)]
        for client in clients:
            self.addCleanup(client.close)
        await self.until(lambda: first.accepted + second.accepted == 20)
        self.assertLessEqual(abs(first.accepted - second.accepted), 2)

    async def test_a_worker_leaves_a_unix_socket_as_the_master_made_it(self) -> None:
        """Its mode and backlog stay, and one worker stopping neither shuts the socket
        down for the others nor removes its path (Twisted's adopted port did both).
        """
        listener = listening(socket.AF_UNIX, self.directory)
        self.addCleanup(listener.close)
        path = self.directory / "s"
        os.chmod(path, 0o600)
        first, second = Counting(), Counting()
        stopping = await self.adopt(listener, first)
        await self.adopt(listener, second)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        await stopping.stopListening()
        self.assertTrue(path.exists())
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(str(path))
        await self.until(lambda: second.accepted == 1)
        self.assertEqual(first.accepted, 0)

    def test_a_descriptor_that_is_no_socket_fails_the_listen(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        failure = self.failureResultOf(InheritedEndpoint(reactor, read).listen(Counting()))
        self.assertIsInstance(failure.value, OSError)
        os.fstat(read)  # still open: nothing was adopted


def test_reports_are_json_lines_and_log_events_keep_level_namespace_and_text() -> None:
    stream = io.BytesIO()
    reports = ReportPipe(stream)
    reports.send({"ready": True})
    log = Logger(namespace="twistwsgi.wsgi", observer=reports)
    log.info("{count} request(s) for {path}", count=2, path="/ü")
    try:
        raise ValueError("broken")
    except ValueError:
        log.failure("Application error")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {"ready": True}
    logged_at = second["log"].pop("time")
    assert isinstance(logged_at, float)
    assert second == {
        "log": {
            "level": "info",
            "namespace": "twistwsgi.wsgi",
            "text": "2 request(s) for /ü",
            "system": None,
        }
    }
    assert third["log"]["level"] == "critical"
    assert third["log"]["text"].startswith("Application error\nTraceback")
    assert "ValueError: broken" in third["log"]["text"]


def test_once_the_master_is_gone_log_lines_go_to_stderr_naming_the_worker() -> None:
    read, write = os.pipe()
    os.close(read)
    stream = os.fdopen(write, "wb", buffering=0)
    fallback = io.StringIO()
    reports = ReportPipe(stream, fallback, number=2)
    reports.send({"ready": True})  # EPIPE: nothing raised
    at = 1796490000.0  # 2026-12-03 15:40:00 UTC
    reports.send({"log": {"level": "info", "namespace": "n", "text": "drained", "time": at}})
    stream.close()
    closed = ReportPipe(stream, fallback, number=3)
    closed.send(
        {"log": {"level": "warn", "namespace": "n", "text": "closed", "time": at, "system": "-"}}
    )
    assert fallback.getvalue() == (
        f"{formatTime(at)} [n#info worker 2] drained\n{formatTime(at)} [- worker 3] closed\n"
    )


class RunningReactor:
    running = True
    _stopped = False
    stops = 0

    def stop(self) -> None:
        self.stops += 1
        self._stopped = True


def test_commands_from_the_master_are_carried_out_line_by_line() -> None:
    done: list[str] = []
    control = _Control(
        RunningReactor(),
        {b"reopen": lambda: done.append("reopen"), b"stop": lambda: done.append("stop")},
    )
    control.childDataReceived("control", b"reo")
    assert done == []
    with capture_log_events() as events:
        control.childDataReceived("control", b"pen\nstop\nbogus\n")
    assert done == ["reopen", "stop"]
    assert formatEvent(events[0]) == "Unknown command from the master: b'bogus'"


def test_the_end_of_the_control_pipe_stops_the_worker_once() -> None:
    reactor = RunningReactor()
    control = _Control(reactor, {})
    control.childConnectionLost("control", Failure(EOFError()))
    control.childConnectionLost("control", Failure(EOFError()))
    assert reactor.stops == 1


class Parent:
    """The parent process id a MasterWatch sees, and the time on its clock."""

    def __init__(self) -> None:
        self.pid = 4000
        self.now = 100.0
        self.ended: list[str] = []

    def watch(self, allowance: float) -> MasterWatch:
        return MasterWatch(
            4000,
            allowance,
            number=2,
            parent=lambda: self.pid,
            monotonic=lambda: self.now,
            end=self.ended.append,
        )


def test_a_worker_that_outlives_its_master_by_the_allowance_ends_itself() -> None:
    """One whose event loop never reads the control pipe's end (blocked) would hold
    the listening sockets for ever: the watch ends it, counting from when it saw the
    parent change (to init, or a subreaper), not from the worker's start.
    """
    parent = Parent()
    watch = parent.watch(35.0)
    for _ in range(100):
        watch.look()
        parent.now += 1.0
    assert parent.ended == []
    parent.pid = 1
    watch.look()
    parent.now += 34.9
    watch.look()
    assert parent.ended == []
    parent.now += 0.1
    watch.look()
    assert parent.ended == [
        f"twistwsgi worker 2 (pid {os.getpid()}): the master process (pid 4000) is gone"
        " and this worker did not stop within 35s (its event loop is blocked?); exiting"
    ]


def test_a_worker_whose_master_is_gone_at_the_first_look_is_given_only_the_allowance() -> None:
    """The master died while the worker started (the checking process has no
    allowance: it has nothing to finish).
    """
    parent = Parent()
    parent.pid = 77
    watch = parent.watch(0.0)
    watch.look()
    assert len(parent.ended) == 1


class Answered:
    responses = 0


class RecordedReports(ReportPipe):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, report: Mapping[str, Any]) -> None:
        self.sent.append(dict(report))


def test_a_worker_asks_to_be_replaced_once_it_answered_its_requests() -> None:
    """Looked at once a second; from the limit on, at every look (the master acts on
    the first it can).
    """
    answered, reports, clock = Answered(), RecordedReports(), Clock()
    ReplacementWatch(answered, reports, clock, limit=100).start()
    answered.responses = 99
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == []
    answered.responses = 104
    clock.advance(REQUEST_COUNT_INTERVAL - 0.01)
    assert reports.sent == []
    clock.advance(0.01)
    assert reports.sent == [{"recycle": 104}]
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == [{"recycle": 104}] * 2


def test_each_worker_adds_its_own_random_jitter_to_max_requests() -> None:
    assert request_limit(1000, 0) == 1000
    drawn = {request_limit(1000, 5) for _ in range(500)}
    assert drawn <= set(range(1000, 1006))
    assert len(drawn) > 1


def test_a_worker_asks_to_be_replaced_once_half_its_threads_are_stuck() -> None:
    """Requests answered 504 past app_timeout keep their threads: with half of them
    (at least one) so held, the worker asks the master for a replacement at each
    look, as for --max-requests (gunicorn kills a worker past --timeout).
    """
    answered, reports, clock = Answered(), RecordedReports(), Clock()
    stuck = [0]
    ReplacementWatch(answered, reports, clock, threads=10, stuck=lambda: stuck[0]).start()
    answered.responses = 7
    stuck[0] = 4
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == []
    stuck[0] = 5
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == [{"recycle": 7, "stuck": 5}]
    lone = RecordedReports()
    ReplacementWatch(answered, lone, clock, threads=1, stuck=lambda: 1).start()
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert lone.sent == [{"recycle": 7, "stuck": 1}]


MIB = 2**20


def test_a_worker_asks_to_be_replaced_once_its_memory_passes_max_worker_memory() -> None:
    """As uWSGI's reload-on-rss: looked at once a second, asked at every look over
    the limit (not at it); a size that cannot be read asks for nothing.
    """
    answered, reports, clock = Answered(), RecordedReports(), Clock()
    used: list[int | None] = [512 * MIB]
    watch = ReplacementWatch(
        answered, reports, clock, memory_limit=512 * MIB, resident=lambda: used[0]
    )
    watch.start()
    answered.responses = 3
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == []
    used[0] = 512 * MIB + 1
    clock.advance(REQUEST_COUNT_INTERVAL - 0.01)
    assert reports.sent == []
    clock.advance(0.01)
    over = {"recycle": 3, "memory": 512 * MIB + 1, "memory_limit": 512 * MIB}
    assert reports.sent == [over]
    used[0] = None
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == [over]
    used[0] = 600 * MIB
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == [over, {**over, "memory": 600 * MIB}]


def test_a_worker_asks_to_be_replaced_once_it_served_for_max_worker_lifetime() -> None:
    """As uWSGI's max-worker-lifetime, counted from the start of the watch on the
    monotonic clock: the reactor's (the wall clock) stepping forward does not count.
    """
    answered, reports, clock = Answered(), RecordedReports(), Clock()
    steady = [1000.0]
    watch = ReplacementWatch(answered, reports, clock, lifetime=5.0, monotonic=lambda: steady[0])
    steady[0] += 3.0  # (the time before the start does not count)
    watch.start()
    clock.advance(86400.0)  # the wall clock steps a day
    for _ in range(4):
        steady[0] += REQUEST_COUNT_INTERVAL
        clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == []
    answered.responses = 9
    steady[0] += REQUEST_COUNT_INTERVAL
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert reports.sent == [{"recycle": 9, "lifetime": 5.0}]


def test_the_reasons_to_be_replaced_are_reported_one_at_a_time() -> None:
    """Stuck threads first (the worker is losing capacity), then its requests (whose
    replacement the master never holds back), then memory, then its lifetime: one
    report a look, the first reason that holds.
    """
    answered, clock = Answered(), Clock()
    answered.responses = 50
    stuck, used = [1], [2 * MIB]

    def watched(**reasons: Any) -> RecordedReports:
        reports = RecordedReports()
        ReplacementWatch(
            answered,
            reports,
            clock,
            stuck=lambda: stuck[0],
            resident=lambda: used[0],
            monotonic=clock.seconds,
            **reasons,
        ).start()
        return reports

    every = watched(threads=2, memory_limit=MIB, lifetime=1.0, limit=10)
    no_threads = watched(memory_limit=MIB, lifetime=1.0, limit=10)
    memory_and_lifetime = watched(memory_limit=MIB, lifetime=1.0)
    lifetime_only = watched(lifetime=1.0)
    clock.advance(REQUEST_COUNT_INTERVAL)
    assert every.sent == [{"recycle": 50, "stuck": 1}]
    assert no_threads.sent == [{"recycle": 50}]
    assert memory_and_lifetime.sent == [{"recycle": 50, "memory": 2 * MIB, "memory_limit": MIB}]
    assert lifetime_only.sent == [{"recycle": 50, "lifetime": 1.0}]


def test_a_worker_over_max_worker_memory_at_its_first_look_says_so_once() -> None:
    """A fresh worker over the limit is replaced by one that is over it too: a limit
    below what the application needs is said in the log, not only the replacements.
    """
    answered, reports, clock = Answered(), RecordedReports(), Clock()
    used = [700 * MIB]
    ReplacementWatch(
        answered, reports, clock, memory_limit=512 * MIB, resident=lambda: used[0]
    ).start()
    with capture_log_events() as events:
        clock.advance(REQUEST_COUNT_INTERVAL)
        clock.advance(REQUEST_COUNT_INTERVAL)
    assert [formatEvent(event) for event in events] == [
        "This worker uses 700.0 MiB of memory at its start, more than max_worker_memory"
        " (512.0 MiB): it will be replaced, and so will its replacement; set"
        " max_worker_memory above what a worker uses once warm"
    ]
    assert len(reports.sent) == 2
    grown, grown_reports = RecordedReports(), [100 * MIB]
    ReplacementWatch(
        answered, grown, clock, memory_limit=512 * MIB, resident=lambda: grown_reports[0]
    ).start()
    with capture_log_events() as events:
        clock.advance(REQUEST_COUNT_INTERVAL)
        grown_reports[0] = 600 * MIB
        clock.advance(REQUEST_COUNT_INTERVAL)
    assert len(grown.sent) == 1
    assert [formatEvent(event) for event in events] == []


def test_resident_memory_is_what_the_process_holds_now() -> None:
    """In bytes, as ps's RSS (the kernel's VmRSS): it grows by what is allocated
    and written to.
    """
    before = resident_memory()
    status = Path("/proc/self/status").read_text()
    [vm_rss] = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    assert before is not None and abs(before - int(vm_rss) * 1024) < 4 * MIB
    held = b"x" * (64 * MIB)
    grown = resident_memory()
    assert grown is not None and grown - before >= 60 * MIB
    del held


def test_without_proc_the_peak_is_in_bytes_on_macos_and_kib_elsewhere(monkeypatch: Any) -> None:
    def no_proc(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", args[0])

    monkeypatch.setattr("twistwsgi.worker.open", no_proc, raising=False)
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=1000))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert resident_memory() == 1000
    for platform in ("linux", "freebsd14"):
        monkeypatch.setattr(sys, "platform", platform)
        assert resident_memory() == 1000 * 1024


def test_without_proc_the_peak_resident_size_stands_in(monkeypatch: Any) -> None:
    def no_proc(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", args[0])

    now = resident_memory()
    monkeypatch.setattr("twistwsgi.worker.open", no_proc, raising=False)
    peak = resident_memory()
    assert now is not None and peak is not None
    assert now <= peak < 100 * now


def test_a_worker_that_cannot_use_the_shared_counts_counts_its_own(tmp_path: Path) -> None:
    """Tables another version laid out (a reload into new code): said, and not used."""
    assert _shared_limits(None) is None
    with open(tmp_path / "other", "w+b") as other:
        other.truncate(4096)
        with capture_log_events() as events:
            assert _shared_limits([os.dup(other.fileno()), 0]) is None
    assert [formatEvent(event) for event in events] == [
        "Cannot use the rate_limit and conn_limit counts the workers share (the shared"
        " limits file has another size): this worker counts its own clients"
    ]


def test_a_worker_without_a_seat_shares_the_rate_only() -> None:
    tables = SharedLimits.create()
    try:
        with capture_log_events() as events:
            limits = _shared_limits([os.dup(tables.fd), None])
        assert limits is not None and limits.seat is None
        assert "counts its own clients' requests in progress until a seat frees" in formatEvent(
            events[0]
        )
        limits.close()
    finally:
        tables.close()


def test_the_heartbeat_goes_from_the_event_loop_every_second() -> None:
    """Any line would do for the master; this one guarantees one per interval."""
    reports, clock = RecordedReports(), Clock()
    Heartbeat(reports, clock, 30.0).start()
    assert reports.sent == []  # (the readiness report was the first sign)
    clock.advance(HEARTBEAT_INTERVAL - 0.01)
    assert reports.sent == []
    clock.advance(0.01)
    assert reports.sent == [{"alive": True}]
    for _ in range(5):
        clock.advance(HEARTBEAT_INTERVAL)
    assert reports.sent == [{"alive": True}] * 6


def test_a_short_worker_timeout_gets_three_heartbeats_within_it() -> None:
    reports, clock = RecordedReports(), Clock()
    Heartbeat(reports, clock, 1.5).start()
    for _ in range(3):
        clock.advance(0.5)
    assert reports.sent == [{"alive": True}] * 3


def test_without_a_worker_timeout_no_heartbeat_is_sent() -> None:
    reports, clock = RecordedReports(), Clock()
    Heartbeat(reports, clock, 0.0).start()
    assert clock.getDelayedCalls() == []
    clock.advance(3600.0)
    assert reports.sent == []


def blocked_in_the_application() -> None:
    """Where the dump below finds this thread (raise: handled before it returns)."""
    signal.raise_signal(signal.SIGUSR2)


def test_sigusr2_writes_every_threads_stack_to_the_dump_pipe() -> None:
    """By faulthandler's own handler, which writes even while a thread holds the GIL,
    in place of the application's (a Python handler, here).
    """
    dumped = ""
    readable, writable = os.pipe()
    os.set_inheritable(writable, True)  # (as dup2 leaves it in a worker)
    # (Were it not taken, SIGUSR2 would end this process, not fail the test.)
    previous = signal.signal(signal.SIGUSR2, lambda number, frame: None)
    try:
        take_dump_signal(writable, 30.0)
        assert not os.get_inheritable(writable)
        blocked_in_the_application()
        os.set_blocking(readable, False)
        with contextlib.suppress(BlockingIOError):
            dumped = os.read(readable, 1 << 20).decode()
    finally:
        faulthandler.unregister(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, previous)
        os.close(readable)
        os.close(writable)
    assert "most recent call first" in dumped
    assert "in blocked_in_the_application" in dumped


def test_without_a_worker_timeout_sigusr2_is_the_applications() -> None:
    # (typeshed says None: it returns whether a handler was registered)
    unregister: Any = faulthandler.unregister
    readable, writable = os.pipe()
    try:
        take_dump_signal(writable, 0.0)
        with pytest.raises(OSError):
            os.fstat(writable)  # (closed: not needed)
        assert not unregister(signal.SIGUSR2)  # (never registered)
    finally:
        os.close(readable)
    take_dump_signal(None, 30.0)  # (a master of an older release gives no pipe)
    assert not unregister(signal.SIGUSR2)
