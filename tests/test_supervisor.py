"""The master of --workers: listeners, worker processes, restarts, reports, stop.

The supervisor runs here on a ``Clock`` with a recording process spawner and
endpoints that hand back fake ports; the real processes are in ``test_workers.py``.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.error import (
    CannotListenError,
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import formatEvent
from twisted.python.failure import Failure

from twistwsgi.config import MAX_WORKERS
from twistwsgi.metrics import empty
from twistwsgi.proxy_protocol import ProxyProtocolEndpoint
from twistwsgi.service import ListenError
from twistwsgi.shared_limits import ENTERED, SEATS, SharedLimits
from twistwsgi.supervisor import (
    CONTROL_FD,
    DUMP_GRACE,
    DUMP_LIMIT,
    DUMP_QUIET,
    FIRST_LISTENER_FD,
    FIRST_RESTART_DELAY,
    KILL_GRACE,
    MAX_RESTART_DELAY,
    MAX_STUCK_DELAY,
    PAYLOAD_VARIABLE,
    PIPE_GRACE,
    RELOAD_TIMEOUT,
    REPORT_FD,
    YOUNG_WORKER,
    Supervisor,
    pinned_directories,
)
from twistwsgi.testing import capture_log_events


@dataclass
class FakePort:
    descriptor: int
    reading: bool = True
    listening: bool = True

    def fileno(self) -> int:
        return self.descriptor

    def stopReading(self) -> None:
        self.reading = False

    def stopListening(self) -> None:
        self.listening = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)


class FakeEndpoint(TCP4ServerEndpoint):
    """A tcp: endpoint (one the workers can share) whose listen gives ``result``."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def listen(self, factory: object) -> Deferred[Any]:
        if isinstance(self.result, Deferred):
            return self.result
        if isinstance(self.result, Exception):
            return fail(self.result)
        return succeed(self.result)


@dataclass
class FakeProcess:
    pid: int
    protocol: Any
    executable: str
    args: list[str]
    env: dict[str, str]
    child_fds: dict[int, Any]
    written: list[tuple[int, bytes]] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    #: Whether Twisted has reaped it (a signal then raises ProcessExitedAlready).
    reaped: bool = False

    def writeToChild(self, descriptor: int, data: bytes) -> None:
        self.written.append((descriptor, data))

    def write(self, data: bytes) -> None:  # (to standard input)
        self.written.append((0, data))

    def closeChildFD(self, descriptor: int) -> None:
        self.written.append((descriptor, b"<closed>"))

    def closeStdin(self) -> None:
        self.closeChildFD(0)

    def payload(self) -> Any:
        """What the process was given on standard input (which was then closed)."""
        given = [data for descriptor, data in self.written if descriptor == 0]
        assert given[-1] == b"<closed>"
        return json.loads(b"".join(given[:-1]))

    def signalProcess(self, name: str | int) -> None:
        """Recorded by name; as Twisted's, only five are taken by name, others by number."""
        if self.reaped:
            raise ProcessExitedAlready()
        if isinstance(name, int):
            name = signal.Signals(name).name.removeprefix("SIG")
        elif name not in ("HUP", "STOP", "INT", "KILL", "TERM"):
            raise TypeError(f"{name!r} is no signal Twisted knows by name")
        self.signals.append(name)

    def dump(self, data: bytes) -> None:
        """The worker's faulthandler writes ``data`` on the dump pipe."""
        self.protocol.childDataReceived(self.payload()["dump_fd"], data)

    def commands(self) -> list[bytes]:
        return [data for descriptor, data in self.written if descriptor == CONTROL_FD]

    def report(self, value: Any) -> None:
        self.protocol.childDataReceived(REPORT_FD, json.dumps(value).encode() + b"\n")

    def end(self, reason: Exception | None = None) -> None:
        """The process exits and its pipes close."""
        self.protocol.processExited(Failure(reason or ProcessDone(0)))
        self.protocol.processEnded(Failure(reason or ProcessDone(0)))


class ProcessClock(Clock):
    """A Clock that also spawns (recorded) processes."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.refuse_spawn = False

    def spawnProcess(  # noqa: PLR0917 - IReactorProcess's signature
        self,
        processProtocol: Any,
        executable: str,
        args: list[str],
        env: dict[str, str],
        path: str | None = None,
        childFDs: dict[int, Any] | None = None,
    ) -> FakeProcess:
        if self.refuse_spawn:
            raise OSError(11, "Resource temporarily unavailable")
        process = FakeProcess(
            1000 + len(self.processes), processProtocol, executable, list(args), env, childFDs or {}
        )
        process.protocol.makeConnection(process)
        self.processes.append(process)
        return process

    def checks(self) -> list[FakeProcess]:
        return [process for process in self.processes if process.args[-1] == "--check"]


def supervisor(
    count: int = 2,
    endpoints: list[tuple[str, Any]] | None = None,
    errors: list[str] | None = None,
    environ: dict[str, str] | None = None,
    failed: list[str] | None = None,
    *,
    worker_timeout: float = 0.0,
) -> tuple[Supervisor, ProcessClock]:
    clock = ProcessClock()
    if endpoints is None:
        endpoints = [
            ("tcp:8080", FakeEndpoint(FakePort(7))),
            ("unix:/s", FakeEndpoint(FakePort(9))),
        ]
    started = Supervisor(
        endpoints,
        workers=count,
        reactor=clock,  # type: ignore[arg-type]
        configuration={
            "options": {"app": "tests.apps:hello", "listen": ["tcp:8080", "unix:/s"]},
            "config_content": "[server]\n",
            "start_directory": "/srv",
        },
        graceful_timeout=30.0,
        worker_timeout=worker_timeout,
        on_start_error=errors.append if errors is not None else None,
        on_failed_start=failed.append if failed is not None else None,
        command=["/usr/bin/python3", "-m", "twistwsgi.worker"],
        environ=environ if environ is not None else {"PATH": "/bin"},
    )
    return started, clock


def running(count: int = 2, worker_timeout: float = 0.0) -> tuple[Supervisor, ProcessClock]:
    """A started supervisor whose workers all said they are ready."""
    started, clock = supervisor(count, worker_timeout=worker_timeout)
    started.privilegedStartService()
    started.startService()
    for process in clock.processes:
        process.report({"ready": True})
    return started, clock


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


def test_workers_start_with_the_listening_sockets_and_three_pipes() -> None:
    """Each worker gets what to build on its standard input (then closed), the
    sockets from descriptor 5 on, in listener order, the control pipe on 3, the
    report pipe on 4, the shared limits after the sockets, with a seat of its
    own, and the dump pipe last; the master never accepts itself.
    """
    started, clock = supervisor(
        environ={"PATH": "/bin", "LISTEN_FDS": "1", "LISTEN_PID": "9", "LISTEN_FDNAMES": "x"}
    )
    started.privilegedStartService()
    started.startService()
    assert [process.pid for process in clock.processes] == [1000, 1001]
    assert started.pids == [1000, 1001]
    assert all(not port.reading for port in started.ports)  # type: ignore[attr-defined]
    for number, process in enumerate(clock.processes, start=1):
        assert process.args == ["/usr/bin/python3", "-m", "twistwsgi.worker"]
        assert process.child_fds == {
            0: "w",
            1: 1,
            2: 2,
            CONTROL_FD: "w",
            REPORT_FD: "r",
            FIRST_LISTENER_FD: 7,
            FIRST_LISTENER_FD + 1: 9,
            FIRST_LISTENER_FD + 2: started.shared_limits.fd,  # type: ignore[union-attr]
            FIRST_LISTENER_FD + 3: "r",
        }
        payload = process.payload()
        assert payload["limits"] == [FIRST_LISTENER_FD + 2, number - 1]
        assert payload["dump_fd"] == FIRST_LISTENER_FD + 3
        assert payload["worker_timeout"] == 0.0  # (not watched unless asked)
        assert payload["number"] == number
        assert payload["listen"] == ["tcp:8080", "unix:/s"]
        assert payload["options"]["app"] == "tests.apps:hello"
        assert payload["config_content"] == "[server]\n"
        assert payload["start_directory"] == "/srv"
        assert isinstance(payload["sys_path"], list)
        # A worker that outlives this process by more than the time a stop gives
        # it before the kill ends itself (see twistwsgi.worker.MasterWatch).
        assert payload["master_pid"] == os.getpid()
        assert payload["orphan_allowance"] == 30.0 + KILL_GRACE
        # The master's socket activation says nothing true about the worker.
        assert {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}.isdisjoint(process.env)
        assert process.env["PATH"] == "/bin"
        assert process.env[PAYLOAD_VARIABLE] == "1"


def test_ready_is_said_once_every_worker_serves() -> None:
    started, clock = supervisor(2)
    with capture_log_events() as events:
        started.startService()
        clock.processes[0].report({"ready": True})
        assert not any("Ready" in text for text in messages(events))
        clock.processes[1].report({"ready": True})
        clock.processes[1].report({"ready": True})
    ready = [text for text in messages(events) if text.startswith("Ready")]
    assert ready == ["Ready: serving on 2 endpoint(s) with 2 worker processes"]


def test_log_events_of_a_worker_are_logged_here_naming_it() -> None:
    """A worker's event keeps its level, namespace and text; the system names the
    worker; lines split across reads are joined; an unreadable line is reported.
    """
    _, clock = running(2)
    second = clock.processes[1]
    line = json.dumps(
        {
            "log": {
                "level": "error",
                "namespace": "twistwsgi.wsgi",
                "text": "boom {x}",
                "time": 1234.5,
            }
        }
    ).encode()
    legacy = {"level": "info", "namespace": "log_legacy", "text": "Port closed", "system": "-"}
    with capture_log_events() as events:
        second.protocol.childDataReceived(REPORT_FD, line[:10])
        second.protocol.childDataReceived(REPORT_FD, line[10:] + b"\nnot json\n")
        second.protocol.childDataReceived(1, b"ignored\n")
        second.report({"log": legacy})
    relayed, unreadable, legacy_relayed = events
    assert relayed["log_time"] == 1234.5  # when the worker logged it
    assert legacy_relayed["log_system"] == "- worker 2"
    assert relayed["log_namespace"] == "twistwsgi.wsgi"
    assert relayed["log_level"].name == "error"
    assert relayed["log_system"] == "twistwsgi.wsgi#error worker 2"
    assert messages([relayed]) == ["boom {x}"]
    assert unreadable["log_level"].name == "warn"
    assert "Worker 2 wrote an unreadable report: b'not json'" in messages([unreadable])[0]


def test_a_worker_that_dies_after_serving_a_while_is_replaced_at_once() -> None:
    started, clock = running(2)
    clock.advance(YOUNG_WORKER + 1)
    with capture_log_events() as events:
        clock.processes[0].end(ProcessTerminated(signal=signal.SIGKILL))
        clock.advance(0)
    assert [process.pid for process in clock.processes] == [1000, 1001, 1002]
    assert started.pids == [1002, 1001]
    assert clock.processes[2].payload()["number"] == 1
    assert messages(events)[0] == (
        "Worker 1 (pid 1000) was killed by SIGKILL (out of memory?); starting another in 0.0s"
    )
    assert messages(events)[1] == "Started worker 1 (pid 1002)"


def test_a_worker_that_keeps_dying_young_is_restarted_ever_later() -> None:
    """Delays double from 0.5 s up to 30 s; one that then serves a while resets them."""
    _, clock = running(1)
    delays = []
    for _ in range(9):
        spawned = len(clock.processes)
        with capture_log_events() as events:
            clock.processes[-1].end(ProcessTerminated(exitCode=1))
        assert "exited with status 1" in messages(events)[0]
        waited = 0.0
        while len(clock.processes) == spawned:
            clock.advance(0.25)
            waited += 0.25
        delays.append(waited)
    assert delays == [FIRST_RESTART_DELAY, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_RESTART_DELAY, 30.0, 30.0]
    clock.processes[-1].report({"ready": True})
    clock.advance(YOUNG_WORKER)
    clock.processes[-1].end()
    clock.advance(0)
    assert len(clock.processes) == 11


def test_a_worker_that_cannot_start_once_serving_is_logged_and_tried_again() -> None:
    _, clock = running(1)
    clock.advance(YOUNG_WORKER)
    clock.processes[0].end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    with capture_log_events() as events:
        clock.processes[1].report({"error": "--app: cannot import module 'gone'"})
        clock.processes[1].end(ProcessTerminated(exitCode=2))
    assert messages(events) == [
        "Worker 1 (pid 1001) could not start: --app: cannot import module 'gone';"
        " trying again in 0.5s"
    ]


def test_a_failed_fork_is_logged_and_tried_again_later() -> None:
    started, clock = supervisor(1)
    clock.refuse_spawn = True
    with capture_log_events() as events:
        started.startService()
    assert "Cannot start worker 1: [Errno 11] Resource temporarily unavailable" in messages(events)
    clock.refuse_spawn = False
    clock.advance(FIRST_RESTART_DELAY)
    assert len(clock.processes) == 1


def test_stop_closes_the_listeners_and_tells_the_workers_then_waits_for_them() -> None:
    started, clock = running(2)
    ports = list(started.ports)
    stopped = started.stopService()
    assert all(not port.listening for port in ports)  # type: ignore[attr-defined]
    assert [process.commands() for process in clock.processes] == [[b"stop\n"]] * 2
    fired: list[object] = []
    stopped.addCallback(fired.append)
    clock.processes[0].end()
    assert not fired
    clock.processes[1].end(ProcessTerminated(exitCode=1))
    assert fired
    clock.advance(60)
    assert len(clock.processes) == 2  # none started again
    assert clock.getDelayedCalls() == []


def test_a_pending_restart_is_cancelled_by_a_stop_and_a_start_begins_anew() -> None:
    started, clock = running(1)
    clock.processes[0].end(ProcessTerminated(exitCode=1))
    fired: list[object] = []
    started.stopService().addCallback(fired.append)
    assert fired
    clock.advance(MAX_RESTART_DELAY)
    assert len(clock.processes) == 1
    started.startService()  # stopped with nothing running: nothing to wait for
    assert started.pids == [1001]


def test_workers_that_outstay_the_graceful_timeout_are_killed() -> None:
    started, clock = running(2)
    stopped = started.stopService()
    clock.processes[0].end()
    clock.advance(30.0 + KILL_GRACE - 0.1)
    assert clock.processes[1].signals == []
    with capture_log_events() as events:
        clock.advance(0.1)
    assert clock.processes[0].signals == []
    assert clock.processes[1].signals == ["KILL"]
    assert messages(events) == ["Worker 2 (pid 1001) did not stop in time; killing it"]
    fired: list[object] = []
    stopped.addCallback(fired.append)
    clock.processes[1].end(ProcessTerminated(signal=signal.SIGKILL))
    assert fired


def test_a_second_stop_signal_has_the_workers_drop_their_connections() -> None:
    started, clock = running(1)
    started.stopService()
    started.stop_now()
    assert clock.processes[0].commands() == [b"stop\n", b"stop-now\n"]


def test_a_second_stop_asked_before_the_stop_began_goes_with_it() -> None:
    """Two signals in one reactor pass: the stop is still queued when the second
    asks for the immediate one; it is sent with the stop.
    """
    started, clock = running(1)
    started.stop_now()
    assert clock.processes[0].commands() == []
    started.stopService()
    assert clock.processes[0].commands() == [b"stop\n", b"stop-now\n"]


def test_a_reload_during_the_stop_starts_nothing_and_says_so() -> None:
    """A SIGHUP racing systemd's stop: no new worker starts in a server that is
    draining, each worker is told to stop once, and the stop still ends.
    """
    started, clock = running(2)
    stopped: list[object] = []
    started.stopService().addCallback(stopped.append)
    with capture_log_events() as events:
        reloaded = started.reload(5.0, "[server]\n")
    fired: list[object] = []
    reloaded.addCallback(fired.append)
    assert fired == [None]
    assert messages(events) == ["Reload ignored: the server is stopping"]
    assert len(clock.processes) == 2
    assert [process.commands() for process in clock.processes] == [[b"stop\n"]] * 2
    for process in clock.processes:
        process.end()
    assert stopped


def new_workers(clock: ProcessClock, old: int) -> list[FakeProcess]:
    """The processes a reload started, after the ``old`` ones."""
    return clock.processes[old:]


def test_a_reload_starts_new_workers_and_stops_the_old_once_all_serve() -> None:
    """The old workers reopen their logs and read certificates at once and serve
    until every new worker serves (with the new text); then they are told to stop,
    are killed if they outstay their own graceful timeout, and the new text and
    graceful timeout are what counts from then on.
    """
    started, clock = running(2)
    old = clock.processes[:2]
    with capture_log_events() as events:
        reloaded = started.reload(5.0, "[server]\nthreads = 4\n")
    fired: list[object] = []
    reloaded.addCallback(fired.append)
    new = new_workers(clock, 2)
    assert [process.payload()["number"] for process in new] == [1, 2]
    assert [process.payload()["config_content"] for process in new] == [
        "[server]\nthreads = 4\n"
    ] * 2
    # (Their own graceful timeout, not the old workers'.)
    assert [process.payload()["orphan_allowance"] for process in new] == [5.0 + KILL_GRACE] * 2
    assert new[0].args == ["/usr/bin/python3", "-m", "twistwsgi.worker"]
    assert new[0].child_fds == old[0].child_fds
    assert [process.commands() for process in old] == [[b"keep\n"]] * 2
    assert messages(events) == [
        "Reload: starting 2 new worker process(es); the old ones serve meanwhile",
        "Started worker 1 (pid 1002)",
        "Started worker 2 (pid 1003)",
    ]
    new[0].report({"ready": True})
    assert [process.commands() for process in old] == [[b"keep\n"]] * 2
    assert started.pids == [1000, 1001]
    assert not fired
    with capture_log_events() as events:
        new[1].report({"ready": True})
    assert fired
    assert [process.commands() for process in old] == [[b"keep\n", b"stop\n"]] * 2
    assert new[0].commands() == []
    assert started.pids == [1002, 1003]
    assert messages(events) == [
        "Reloaded: 2 new worker process(es) serve; 2 old one(s) finish their requests (up to 30.0s)"
    ]
    # An old worker that ends is not started again; one that outstays is killed.
    with capture_log_events() as events:
        old[0].end()
    assert messages(events) == []
    clock.advance(30.0 + KILL_GRACE - 0.1)
    assert old[1].signals == []
    clock.advance(0.1)
    assert old[1].signals == ["KILL"]
    old[1].end(ProcessTerminated(signal=signal.SIGKILL))
    assert len(clock.processes) == 4
    # A new worker that dies is started again with the new text.
    clock.advance(YOUNG_WORKER)
    new[0].end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    assert clock.processes[-1].payload()["config_content"] == "[server]\nthreads = 4\n"
    clock.processes[-1].report({"ready": True})
    started.stopService()
    clock.advance(5.0 + KILL_GRACE - 0.1)
    assert new[1].signals == clock.processes[-1].signals == []
    clock.advance(0.1)
    assert new[1].signals == clock.processes[-1].signals == ["KILL"]


def test_a_reload_can_change_the_number_of_workers() -> None:
    started, clock = running(2)
    started.reload(30.0, "[server]\nworkers = 3\n", 3)
    new = new_workers(clock, 2)
    assert [process.payload()["number"] for process in new] == [1, 2, 3]
    for process in new:
        process.report({"ready": True})
    assert started.pids == [1002, 1003, 1004]
    assert [process.commands() for process in clock.processes[:2]] == [[b"keep\n", b"stop\n"]] * 2
    started.reload(30.0, "[server]\nworkers = 1\n", 1)
    [last] = new_workers(clock, 5)
    last.report({"ready": True})
    assert started.pids == [1005]
    assert [process.commands()[-1] for process in new] == [b"stop\n"] * 3


def test_a_new_worker_that_cannot_start_gives_the_reload_up() -> None:
    """Its reason is the one line; the new worker that serves stops gracefully,
    the one still starting is killed, and the old ones keep serving the old text.
    """
    started, clock = running(2)
    old = clock.processes[:2]
    fired: list[object] = []
    started.reload(5.0, "[server]\nbroken\n").addCallback(fired.append)
    first, second = new_workers(clock, 2)
    first.report({"ready": True})
    with capture_log_events() as events:
        second.report({"error": "--app: cannot import module 'x'"})
        second.end(ProcessTerminated(exitCode=2))
    assert fired
    assert messages(events) == [
        "Reload refused, the old workers keep serving: new worker 2 (pid 1003) could not"
        " start: --app: cannot import module 'x'"
    ]
    assert first.commands() == [b"stop\n"]
    assert first.signals == []
    assert [process.commands() for process in old] == [[b"keep\n"]] * 2
    assert started.pids == [1000, 1001]
    clock.advance(5.0 + KILL_GRACE)
    assert first.signals == ["KILL"]
    first.end(ProcessTerminated(signal=signal.SIGKILL))
    assert len(clock.processes) == 4  # neither new worker is started again
    clock.advance(YOUNG_WORKER)
    old[0].end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    assert clock.processes[-1].payload()["config_content"] == "[server]\n"
    # Not given up for ever: the next reload starts new workers again.
    started.reload(5.0, "[server]\nfixed = 1\n")
    assert len(clock.processes) == 7


def test_a_new_worker_still_starting_when_another_fails_is_killed() -> None:
    started, clock = running(2)
    started.reload(5.0, "[server]\n")
    first, second = new_workers(clock, 2)
    with capture_log_events() as events:
        first.end(ProcessTerminated(signal=signal.SIGSEGV))
    assert messages(events) == [
        "Reload refused, the old workers keep serving: new worker 1 (pid 1002) could not"
        " start: was killed by SIGSEGV"
    ]
    assert second.signals == ["KILL"]
    assert second.commands() == []
    with capture_log_events() as events:
        second.end(ProcessTerminated(signal=signal.SIGKILL))
    assert messages(events) == []
    assert started.pids == [1000, 1001]


def test_new_workers_that_do_not_serve_in_time_give_the_reload_up() -> None:
    started, clock = running(1)
    with capture_log_events() as events:
        started.reload(1.0, "slow")
        [new] = new_workers(clock, 1)
        clock.advance(RELOAD_TIMEOUT - 0.1)
        assert new.signals == []
        clock.advance(0.1)
        assert new.signals == ["KILL"]
        new.end(ProcessTerminated(signal=signal.SIGKILL))
    assert messages(events)[-1] == (
        "Reload refused, the old workers keep serving: new worker(s) 1 did not serve"
        " within 60s (importing the applications?)"
    )
    assert clock.processes[0].commands() == [b"keep\n"]
    assert started.pids == [1000]


def test_an_old_worker_that_dies_during_a_reload_is_replaced_until_the_new_ones_serve() -> None:
    started, clock = running(2)
    clock.advance(YOUNG_WORKER)
    started.reload(5.0, "new")
    clock.processes[0].end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    stand_in = clock.processes[-1]
    assert stand_in.payload()["config_content"] == "[server]\n"
    clock.processes[1].end(ProcessTerminated(exitCode=1))  # young now: restart later
    new = clock.processes[2:4]
    for process in new:
        process.report({"ready": True})
    # Still starting: killed (it would serve the old configuration once started).
    assert (stand_in.commands(), stand_in.signals) == ([], ["KILL"])
    clock.advance(MAX_RESTART_DELAY)
    assert len(clock.processes) == 5  # the pending restart was dropped
    assert started.pids == [1002, 1003]


def test_a_reload_asked_for_during_a_reload_replaces_it_at_once() -> None:
    """As nginx acts on each SIGHUP: a fixed release need not wait for a broken one
    to time out. The new workers of the first that serve stop gracefully, those
    still starting are killed; one Deferred fires, when the last is decided.
    """
    started, clock = running(2)
    fired: list[object] = []
    started.reload(1.0, "hangs").addCallback(fired.append)
    serving, importing = new_workers(clock, 2)
    serving.report({"ready": True})
    with capture_log_events() as events:
        started.reload(2.0, "fixed").addCallback(fired.append)
    assert messages(events)[0] == "Reload: a newer one replaces the reload in progress"
    assert serving.commands() == [b"keep\n", b"stop\n"]
    assert importing.signals == ["KILL"]
    first, second = new_workers(clock, 4)
    assert first.payload()["config_content"] == "fixed"
    assert not fired
    for process in (first, second):
        process.report({"ready": True})
    assert len(fired) == 2
    assert started.pids == [first.pid, second.pid]
    assert [process.commands()[-1] for process in clock.processes[:2]] == [b"stop\n"] * 2
    for process in [*clock.processes[:2], serving, importing]:
        process.end()
    assert clock.getDelayedCalls() == []  # (the first reload's deadline is gone)


def test_a_new_worker_that_cannot_be_started_refuses_that_reload_only() -> None:
    """A spawn that fails at once (E2BIG, EAGAIN) is one refusal, not the end of
    every later reload.
    """
    started, clock = running(2)
    clock.refuse_spawn = True
    with capture_log_events() as events:
        fired: list[object] = []
        started.reload(1.0, "first").addCallback(fired.append)
    assert fired
    assert messages(events)[-1] == (
        "Reload refused, the old workers keep serving: cannot start a new worker"
        " process: [Errno 11] Resource temporarily unavailable"
    )
    clock.refuse_spawn = False
    started.reload(1.0, "second")
    assert [process.payload()["config_content"] for process in new_workers(clock, 2)] == [
        "second"
    ] * 2


def test_a_stop_during_a_reload_stops_old_and_new_workers_and_no_reload_follows() -> None:
    """A new worker that serves stops gracefully; one still starting (which reads no
    command before its import ends) is killed at once.
    """
    started, clock = running(1)
    started.reload(1.0, "new", 2)
    serving, importing = new_workers(clock, 1)
    serving.report({"ready": True})
    fired: list[object] = []
    started.stopService().addCallback(fired.append)
    assert clock.processes[0].commands() == [b"keep\n", b"stop\n"]
    assert serving.commands() == [b"stop\n"]
    assert (serving.signals, importing.signals) == ([], ["KILL"])
    with capture_log_events() as events:
        importing.report({"ready": True})
        started.reload(3.0, "while stopping")
    assert len(clock.processes) == 3
    assert [text for text in messages(events) if "Reload" in text] == [
        "Reload ignored: the server is stopping"
    ]
    assert started.pids == [1000]
    for process in clock.processes:
        assert not fired
        process.end()
    assert fired
    assert clock.getDelayedCalls() == []


def test_a_stop_bounds_the_old_workers_by_its_own_timeout_too() -> None:
    """A stop ends the whole server within the graceful timeout in force, old
    workers that were given longer included.
    """
    started, clock = running(1)
    started.reload(1.0, "new")
    [new] = new_workers(clock, 1)
    new.report({"ready": True})
    started.stopService()
    assert clock.processes[0].commands() == [b"keep\n", b"stop\n", b"stop\n"]
    clock.advance(1.0 + KILL_GRACE - 0.1)
    assert new.signals == clock.processes[0].signals == []
    clock.advance(0.1)
    assert new.signals == clock.processes[0].signals == ["KILL"]


def test_log_reopening_is_passed_to_every_worker() -> None:
    """Old workers that still finish their requests reopen their logs too."""
    started, clock = running(2)
    started.reopen_access_log()
    started.keep_configuration()
    assert [process.commands() for process in clock.processes] == [[b"reopen\n", b"keep\n"]] * 2
    started.reload(1.0, "new", 1)
    [new] = new_workers(clock, 2)
    started.reopen_access_log()
    new.report({"ready": True})
    started.reopen_access_log()
    assert new.commands() == [b"reopen\n", b"reopen\n"]
    assert [process.commands()[-2:] for process in clock.processes[:2]] == [
        [b"stop\n", b"reopen\n"]
    ] * 2


def test_a_worker_that_ends_before_the_first_start_served_fails_the_start() -> None:
    """Started again for ever, it would leave clients waiting on a socket nobody
    serves: the start fails, with the worker's reason.
    """
    failed: list[str] = []
    started, clock = supervisor(2, failed=failed)
    started.startService()
    clock.processes[0].report({"ready": True})
    clock.processes[1].report({"error": "--listen 'ssl:443': cannot load the key"})
    clock.processes[1].end(ProcessTerminated(exitCode=2))
    assert failed == [
        "worker 2 (pid 1001) could not start: --listen 'ssl:443': cannot load the key"
    ]
    clock.advance(MAX_RESTART_DELAY)
    assert len(clock.processes) == 2  # not started again


def test_without_a_handler_a_failed_start_stops_the_supervisor() -> None:
    started, clock = supervisor(1)
    started.startService()
    with capture_log_events() as events:
        clock.processes[0].end(ProcessTerminated(signal=signal.SIGSEGV))
    assert messages(events)[0] == (
        "Stopping: worker 1 (pid 1000) could not start: was killed by SIGSEGV"
    )
    assert not started.running


def test_a_listener_that_cannot_bind_stops_the_start_and_closes_the_others() -> None:
    first = FakePort(7)
    errors: list[str] = []
    started, clock = supervisor(
        endpoints=[
            ("tcp:8080", FakeEndpoint(first)),
            ("tcp:80", FakeEndpoint(CannotListenError("", 80, OSError(13, "Permission denied")))),
        ],
        errors=errors,
    )
    started.privilegedStartService()
    started.startService()  # (twistd calls both)
    assert errors[0] == "cannot listen on 'tcp:80': [Errno 13] Permission denied"
    assert not first.listening
    assert clock.processes == []


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (Deferred(), "it does not listen at once on a socket the workers could share"),
        (object(), "it is not a socket the workers could share"),
    ],
)
def test_a_listener_the_workers_cannot_share_is_refused(result: Any, problem: str) -> None:
    if not isinstance(result, Deferred):

        class NotASocket:
            stopped = False

            def stopListening(self) -> None:
                self.stopped = True

        result = NotASocket()
    started, _ = supervisor(endpoints=[("custom:x", FakeEndpoint(result))])
    with pytest.raises(ListenError) as raised:
        started.startService()
    assert str(raised.value) == f"cannot listen on 'custom:x': {problem}"
    if not isinstance(result, Deferred):
        assert result.stopped


def test_a_worker_whose_pipes_outlive_it_is_still_replaced() -> None:
    """A process the application started may hold the worker's pipes: the exit
    counts after a short grace, and what the old pipes still bring is only logged.
    """
    _, clock = running(1)
    clock.advance(YOUNG_WORKER)
    old = clock.processes[0]
    with capture_log_events() as events:
        old.protocol.processExited(Failure(ProcessTerminated(signal=signal.SIGKILL)))
        clock.advance(PIPE_GRACE - 0.1)
        assert len(clock.processes) == 1
        clock.advance(0.1)
        assert len(clock.processes) == 2  # replaced
        old.report({"ready": True})  # (not the replacement's readiness)
        old.report({"log": {"level": "info", "namespace": "n", "text": "late line"}})
        old.protocol.processEnded(Failure(ProcessTerminated(signal=signal.SIGKILL)))
    assert "late line" in messages(events)
    assert sum("was killed by SIGKILL" in text for text in messages(events)) == 1
    new = clock.processes[1]
    failed = ProcessTerminated(exitCode=1)
    new.end(failed)  # young and never ready: a restart after a delay, not at once
    clock.advance(0)
    assert len(clock.processes) == 2


def test_a_command_to_a_worker_whose_control_pipe_closed_is_skipped() -> None:
    """Twisted forgets a closed pipe at once, before the process's end is known."""
    started, clock = running(2)

    def closed(descriptor: int, data: bytes) -> None:
        raise KeyError(descriptor)

    clock.processes[0].writeToChild = closed  # type: ignore[method-assign]
    started.reopen_access_log()
    stopping = started.stopService()
    assert clock.processes[1].commands() == [b"reopen\n", b"stop\n"]
    clock.processes[0].end()
    clock.processes[1].end()
    assert stopping.called


def test_a_wrapping_endpoint_is_refused_with_workers() -> None:
    """A plugin's endpoint (here Twisted's own haproxy:, as a library user may build
    it) wraps its socket: a worker adopting the socket would serve without the
    wrapper.
    """
    errors: list[str] = []
    wrapped = serverFromString(MemoryReactor(), "haproxy:tcp:8080")
    started, clock = supervisor(endpoints=[("haproxy:tcp:8080", wrapped)], errors=errors)
    started.startService()
    assert errors == [
        "cannot listen on 'haproxy:tcp:8080': only tcp, tcp6, ssl, unix and systemd"
        " listeners (and haproxy: in front of them) can be shared with worker processes"
        " (they serve the socket itself)"
    ]
    assert clock.processes == []


def test_a_proxy_protocol_listener_shares_the_socket_it_wraps() -> None:
    """The server's haproxy: listeners: the workers read the header themselves."""
    endpoint = ProxyProtocolEndpoint(FakeEndpoint(FakePort(7)), Clock())
    started, clock = supervisor(1, endpoints=[("haproxy:tcp:8080", endpoint)])
    started.startService()
    [process] = clock.processes
    assert process.child_fds[FIRST_LISTENER_FD] == 7
    assert process.payload()["listen"] == ["haproxy:tcp:8080"]


def test_a_worker_with_stuck_threads_is_replaced_and_says_why() -> None:
    started, clock = running(2)
    with capture_log_events() as events:
        clock.processes[0].report({"recycle": 12, "stuck": 5})
    assert messages(events) == [
        "Worker 1 (pid 1000) has 5 thread(s) held by requests answered 504"
        " (app_timeout); starting its replacement",
        "Started worker 1 (pid 1002)",
    ]
    started.stopService()
    for process in clock.processes:
        process.end()


def test_a_worker_that_answered_its_max_requests_is_replaced_once_its_successor_serves() -> None:
    """As gunicorn's --max-requests, but no slot left empty: the old worker serves on
    until its replacement serves, then stops accepting and finishes its requests
    (killed if it outstays its graceful timeout); later reports change nothing.
    """
    started, clock = running(2)
    old = clock.processes[0]
    with capture_log_events() as events:
        old.report({"recycle": 1000})
    assert messages(events) == [
        "Worker 1 (pid 1000) answered 1000 requests (max_requests); starting its replacement",
        "Started worker 1 (pid 1002)",
    ]
    [new] = new_workers(clock, 2)
    assert new.payload()["number"] == 1
    old.report({"recycle": 1001})
    assert len(clock.processes) == 3
    assert (old.commands(), started.pids) == ([], [1000, 1001])
    new.report({"ready": True})
    assert old.commands() == [b"stop\n"]
    assert started.pids == [1002, 1001]
    old.report({"recycle": 1002})
    assert len(clock.processes) == 3
    with capture_log_events() as events:
        old.end()
    assert messages(events) == []
    clock.advance(30.0 + KILL_GRACE)
    assert len(clock.processes) == 3
    started.stopService()
    for process in clock.processes[1:]:
        process.end()
    assert clock.getDelayedCalls() == []


MIB = 2**20


def test_a_worker_over_max_worker_memory_is_replaced_and_says_how_much_it_used() -> None:
    started, clock = running(2)
    old = clock.processes[0]
    with capture_log_events() as events:
        old.report({"recycle": 7, "memory": 612 * MIB + MIB // 2, "memory_limit": 512 * MIB})
    assert messages(events) == [
        "Worker 1 (pid 1000) uses 612.5 MiB of memory, more than max_worker_memory"
        " (512.0 MiB); starting its replacement",
        "Started worker 1 (pid 1002)",
    ]
    [new] = new_workers(clock, 2)
    new.report({"ready": True})
    assert old.commands() == [b"stop\n"]
    assert started.pids == [1002, 1001]


def test_a_worker_that_served_for_max_worker_lifetime_is_replaced() -> None:
    _, clock = running(1)
    with capture_log_events() as events:
        clock.processes[0].report({"recycle": 7, "lifetime": 21600.0})
    assert messages(events) == [
        "Worker 1 (pid 1000) has served for max_worker_lifetime (21600s); starting its replacement",
        "Started worker 1 (pid 1001)",
    ]


def test_workers_over_memory_or_lifetime_are_replaced_one_at_a_time() -> None:
    """Each once the one before has ended: workers started together grow and age
    together, and each replacement adds a process until the old one has ended.
    Stuck threads and max_requests do not wait.
    """
    started, clock = running(3)
    first, second, third = clock.processes
    over = {"recycle": 7, "memory": 600 * MIB, "memory_limit": 512 * MIB}
    first.report(over)
    [replacement] = new_workers(clock, 3)
    second.report(over)
    second.report({"recycle": 7, "lifetime": 60.0})
    assert len(clock.processes) == 4
    replacement.report({"ready": True})
    assert first.commands() == [b"stop\n"]
    second.report(over)  # (the first still finishes its requests)
    assert len(clock.processes) == 4
    third.report({"recycle": 1000})  # max_requests: not held back
    assert len(clock.processes) == 5
    first.end()
    second.report(over)  # (the third's replacement is still starting)
    assert len(clock.processes) == 5
    clock.processes[4].report({"ready": True})
    third.end()
    second.report({"recycle": 7, "lifetime": 60.0})
    [second_replacement] = new_workers(clock, 5)
    assert second_replacement.payload()["number"] == 2
    started.stopService()


def test_a_worker_that_ends_while_its_replacement_starts_leaves_no_stray_process() -> None:
    """Killed (the OOM killer's first pick) while its successor imports, and its own
    restart failing to fork: once the successor serves, the pending restart is
    dropped; it would start a process in a slot that is no longer its own, which
    nothing would stop, and which would hold back every later replacement.
    """
    started, clock = running(2)
    clock.advance(60.0)
    first, second = clock.processes
    first.report({"recycle": 7, "memory": 600 * MIB, "memory_limit": 512 * MIB})
    successor = clock.processes[2]
    clock.refuse_spawn = True
    first.end(ProcessTerminated(signal=9))
    clock.advance(0)  # (the restart fails to fork: tried again later)
    clock.refuse_spawn = False
    successor.report({"ready": True})
    clock.advance(60.0)
    assert len(clock.processes) == 3
    assert started.pids == [successor.pid, second.pid]
    second.report({"recycle": 7, "memory": 600 * MIB, "memory_limit": 512 * MIB})
    assert len(clock.processes) == 4  # (nothing retiring holds it back)


def test_sigttin_adds_a_worker_in_a_new_slot() -> None:
    """As gunicorn's TTIN: one more worker, until the next reload."""
    started, clock = running(2)
    with capture_log_events() as events:
        started.add_worker()
    assert messages(events) == [
        "SIGTTIN: starting worker 3 (3 workers from now on)",
        "Started worker 3 (pid 1002)",
    ]
    [third] = new_workers(clock, 2)
    assert third.payload()["number"] == 3
    third.report({"ready": True})
    assert started.pids == [1000, 1001, 1002]
    third.end(ProcessTerminated(signal=9))  # (replaced as any other)
    clock.advance(FIRST_RESTART_DELAY)
    assert clock.processes[3].payload()["number"] == 3


def test_sigttou_stops_the_last_slots_worker_gracefully_down_to_one() -> None:
    started, clock = running(3)
    third = clock.processes[2]
    with capture_log_events() as events:
        started.remove_worker()
    assert messages(events) == ["SIGTTOU: stopping worker 3 (pid 1002; 2 workers from now on)"]
    assert third.commands() == [b"stop\n"]
    assert started.pids == [1000, 1001]
    third.end()
    clock.advance(60.0)
    assert len(clock.processes) == 3  # (not started again)
    started.remove_worker()
    assert clock.processes[1].commands() == [b"stop\n"]
    with capture_log_events() as events:
        started.remove_worker()
    assert messages(events) == ["SIGTTOU: one worker is the fewest there may be"]
    assert clock.processes[0].commands() == []
    clock.advance(30.0 + KILL_GRACE)
    assert clock.processes[1].signals == ["KILL"]  # (outstayed its graceful timeout)


def test_sigttou_stops_a_slots_replacement_and_drops_its_pending_restart() -> None:
    started, clock = running(3)
    clock.advance(60.0)
    clock.processes[2].report({"recycle": 1000})
    [successor] = new_workers(clock, 3)
    started.remove_worker()
    assert successor.signals == ["KILL"]  # (still importing: holds no connection)
    assert clock.processes[2].commands() == [b"stop\n"]
    clock.processes[1].end(ProcessTerminated(signal=9))  # slot 2 restarts later...
    started.remove_worker()  # ...but is removed first
    clock.advance(60.0)
    assert len(clock.processes) == 4
    assert started.pids == [1000]


def test_sigttou_during_the_first_start_still_announces_it() -> None:
    """The worker removed may be the one the start waited for: without the
    announcement, any later death of a worker would stop the server as a failed start.
    """
    failed: list[str] = []
    started, clock = supervisor(3, failed=failed)
    started.privilegedStartService()
    started.startService()
    clock.processes[0].report({"ready": True})
    clock.processes[1].report({"ready": True})
    with capture_log_events() as events:
        started.remove_worker()  # (slot 3 was still importing)
    assert "Ready: serving on 2 endpoint(s) with 2 worker processes" in messages(events)
    clock.processes[2].end(ProcessTerminated(signal=9))
    clock.advance(3600.0)
    clock.processes[0].end(ProcessTerminated(signal=9))
    assert failed == []
    clock.advance(FIRST_RESTART_DELAY)
    assert clock.processes[-1].payload()["number"] == 1


def test_sigttou_gives_the_removed_worker_its_graceful_timeout() -> None:
    started, clock = running(2)
    started.remove_worker()
    clock.advance(30.0 + KILL_GRACE - 0.5)
    assert clock.processes[1].signals == []
    clock.advance(1.0)
    assert clock.processes[1].signals == ["KILL"]


def test_a_reload_after_sigttin_starts_as_many_as_the_configuration_asks() -> None:
    started, clock = running(2)
    started.add_worker()
    clock.processes[2].report({"ready": True})
    started.reload(30.0, "new", 2)
    new = new_workers(clock, 3)
    assert [process.payload()["number"] for process in new] == [1, 2]
    for process in new:
        process.report({"ready": True})
    assert [process.commands() for process in clock.processes[:3]] == [[b"keep\n", b"stop\n"]] * 3
    started.remove_worker()
    assert new[1].commands() == [b"stop\n"]
    assert started.pids == [new[0].pid]
    started.add_worker()
    assert clock.processes[-1].payload()["number"] == 2


def test_the_number_of_workers_does_not_change_during_a_reload_or_past_the_most() -> None:
    started, clock = running(1)
    started.reload(30.0, "new")
    with capture_log_events() as events:
        started.add_worker()
        started.remove_worker()
    assert messages(events) == [
        "SIGTTIN ignored: a reload is in progress (it starts as many workers as the"
        " configuration asks)",
        "SIGTTOU ignored: a reload is in progress (it starts as many workers as the"
        " configuration asks)",
    ]
    assert len(clock.processes) == 2
    most, _ = running(MAX_WORKERS)
    with capture_log_events() as events:
        most.add_worker()
    assert messages(events) == [f"SIGTTIN: already {MAX_WORKERS} workers, the most there may be"]


def test_a_replacement_that_cannot_start_leaves_the_old_worker_serving() -> None:
    """The code on disk changed and does not import: tried again later, each time
    after a delay that doubles.
    """
    started, clock = running(1)
    old = clock.processes[0]
    old.report({"recycle": 10})
    [failing] = new_workers(clock, 1)
    with capture_log_events() as events:
        failing.report({"error": "--app: cannot import module 'x'"})
        failing.end(ProcessTerminated(exitCode=2))
    assert messages(events) == [
        "The replacement of worker 1 (pid 1000) could not start: pid 1001 --app: cannot"
        " import module 'x'; worker 1 serves on, another try in 0.5s"
    ]
    assert (old.commands(), started.pids) == ([], [1000])
    old.report({"recycle": 11})
    assert len(clock.processes) == 2
    clock.advance(FIRST_RESTART_DELAY)
    old.report({"recycle": 12})
    [second] = new_workers(clock, 2)
    second.end(ProcessTerminated(exitCode=2))
    clock.advance(FIRST_RESTART_DELAY)
    old.report({"recycle": 13})
    assert len(clock.processes) == 3  # (1 s now)


def test_a_reload_takes_over_from_a_replacement_still_starting() -> None:
    started, clock = running(1)
    clock.processes[0].report({"recycle": 10})
    [successor] = new_workers(clock, 1)
    started.reload(30.0, "new")
    [new] = new_workers(clock, 2)
    new.report({"ready": True})
    assert successor.signals == ["KILL"]
    successor.report({"ready": True})
    assert started.pids == [new.pid]


def test_only_a_serving_worker_is_replaced_for_its_max_requests() -> None:
    """Not a reload's new worker (replaced with the reload's), not one stopping."""
    started, clock = running(1)
    started.reload(30.0, "new")
    [new] = new_workers(clock, 1)
    new.report({"recycle": 5})
    assert len(clock.processes) == 2
    assert new.commands() == []
    started.stopService()
    clock.processes[0].report({"recycle": 5})
    assert len(clock.processes) == 2


def test_the_log_tells_a_reloads_new_and_old_workers_from_the_serving_ones() -> None:
    started, clock = running(1)
    started.reload(30.0, "new")
    [new] = new_workers(clock, 1)
    old = clock.processes[0]
    event = {"log": {"level": "info", "namespace": "twistwsgi.service", "text": "x"}}
    with capture_log_events() as events:
        new.report(event)
        old.report(event)
        new.report({"ready": True})
        new.report(event)
        old.report(event)
    systems = [event["log_system"] for event in events if event.get("log_text") == "x"]
    assert systems == [
        "twistwsgi.service#info new worker 1",
        "twistwsgi.service#info worker 1",
        "twistwsgi.service#info worker 1",
        "twistwsgi.service#info old worker 1",
    ]


def test_each_set_of_workers_builds_and_serves_where_its_directories_led_at_its_start(
    tmp_path: Path,
) -> None:
    """A link a deployment moves is followed by a reload, not by a worker of the
    serving set started again (after a refused reload, say).
    """
    for name in ("release-1", "release-2", "release-1/run", "release-2/run"):
        (tmp_path / name).mkdir()
    current = tmp_path / "current"
    current.symlink_to("release-1")
    configuration = {"start_directory": str(current), "run_directory": f"{current}/run"}
    assert pinned_directories(configuration) == {
        "build_directory": os.path.realpath(tmp_path / "release-1"),
        "serve_directory": os.path.realpath(tmp_path / "release-1/run"),
    }
    started, clock = running(1)
    started._configuration.update(configuration)
    current.unlink()
    current.symlink_to("release-2")
    started.reload(30.0, "new")
    [new] = new_workers(clock, 1)
    assert new.payload()["build_directory"] == os.path.realpath(tmp_path / "release-2")
    new.report({"ready": True})
    current.unlink()
    current.symlink_to("release-1")
    clock.advance(YOUNG_WORKER)
    new.end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    assert clock.processes[-1].payload()["serve_directory"] == os.path.realpath(
        tmp_path / "release-2/run"
    )


# -- the shared rate_limit and conn_limit counts -----------------------------------------


def test_a_worker_that_dies_frees_the_places_it_held() -> None:
    """Its seat's counts are cleared before another process is given the seat."""
    started, clock = running(2)
    tables = started.shared_limits
    assert tables is not None
    dying_seat = clock.processes[0].payload()["limits"][1]
    living_seat = clock.processes[1].payload()["limits"][1]
    dying, living = SharedLimits(tables.fd, dying_seat), SharedLimits(tables.fd, living_seat)
    for counting in (dying, dying, living):
        assert counting.enter(42, 5) == ENTERED
    clock.advance(YOUNG_WORKER + 1)
    clock.processes[0].end(ProcessTerminated(signal=signal.SIGKILL))
    assert tables.in_progress(42) == 1  # the living worker's place only
    clock.advance(0)
    seats = [process.payload()["limits"][1] for process in clock.processes]
    assert seats[2] not in (living_seat, None)
    dying.close()
    living.close()


def test_a_worker_beyond_the_seats_is_given_the_next_one_that_frees() -> None:
    """More processes than seats (a reload of many workers): the one without a
    seat counts alone only until a process ends; its seat, cleared, goes to it.
    """
    started, clock = running(SEATS + 2)
    seats = [process.payload()["limits"][1] for process in clock.processes]
    assert seats == [*range(SEATS), None, None]
    tables = started.shared_limits
    assert tables is not None
    held = SharedLimits(tables.fd, 3)
    assert held.enter(42, 5) == ENTERED
    clock.advance(YOUNG_WORKER + 1)
    clock.processes[3].end(ProcessTerminated(signal=signal.SIGKILL))
    assert tables.in_progress(42) == 0  # cleared before it is given again
    waiting, last = clock.processes[SEATS], clock.processes[SEATS + 1]
    assert waiting.commands() == [b"seat 3\n"]
    assert last.commands() == []
    clock.advance(0)  # the replacement of the ended worker: no seat free
    assert clock.processes[-1].payload()["limits"][1] is None
    waiting.end()  # it had the seat: the next in line gets it
    assert last.commands() == [b"seat 3\n"]
    held.close()


def test_a_seat_is_given_back_once_whatever_ends_the_process() -> None:
    """A process that exited and whose pipes then closed (two reports of one end),
    one whose start failed, many restarts: each live process holds its own seat.
    """
    started, clock = running(2)
    first_seat = clock.processes[0].payload()["limits"][1]
    clock.advance(YOUNG_WORKER + 1)
    clock.processes[0].end(ProcessTerminated(signal=signal.SIGKILL))  # exited, then ended
    clock.advance(0)
    clock.refuse_spawn = True
    clock.processes[1].end(ProcessTerminated(exitCode=1))
    clock.advance(FIRST_RESTART_DELAY)  # its restart cannot be started: the seat is kept free
    clock.refuse_spawn = False
    for _ in range(3 * SEATS):  # workers dying and started again, over and over
        clock.advance(MAX_RESTART_DELAY + YOUNG_WORKER + 1)
        for process in clock.processes[-2:]:
            if process.protocol.seat is not None and not process.protocol.ended:
                process.end(ProcessTerminated(exitCode=1))
    live = [p for p in clock.processes if not p.protocol.ended]
    seats = [process.protocol.seat for process in live]
    assert None not in seats and len(set(seats)) == len(seats)
    assert first_seat is not None
    assert sorted(started._free_seats + seats) == list(range(SEATS))


def test_without_shared_counts_the_workers_count_their_own(monkeypatch: Any) -> None:
    def cannot(cls: Any) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(SharedLimits, "create", classmethod(cannot))
    started, clock = supervisor(1)
    with capture_log_events() as events:
        started.startService()
    assert (
        "Cannot share rate_limit and conn_limit counts between the workers"
        " ([Errno 24] Too many open files): each worker counts its own clients"
    ) in messages(events)
    [process] = clock.processes
    assert process.payload()["limits"] is None
    # The sockets, then the dump pipe.
    assert max(process.child_fds) == FIRST_LISTENER_FD + 2
    assert process.payload()["dump_fd"] == FIRST_LISTENER_FD + 2


# -- metrics -----------------------------------------------------------------------------


def worker_metrics(ok: int, threads: int) -> dict[str, Any]:
    snapshot = empty()
    snapshot["responses"] = {"200": ok}
    snapshot["connections_accepted"] = ok
    snapshot["threads"] = threads
    return snapshot


def serving_metrics(workers: int) -> tuple[Supervisor, ProcessClock]:
    """A started supervisor of ``workers`` that serves their metrics."""
    clock = ProcessClock()
    started = Supervisor(
        [("tcp:8080", FakeEndpoint(FakePort(7)))],
        workers=workers,
        reactor=clock,  # type: ignore[arg-type]
        configuration={"options": {}, "config_content": None, "start_directory": "/"},
        command=["python3"],
        environ={},
        metrics=("tcp:9090", FakeEndpoint(FakePort(8))),
    )
    started.startService()
    return started, clock


def test_the_master_serves_what_its_workers_last_reported() -> None:
    started, clock = serving_metrics(2)
    first, second = clock.processes
    for process in (first, second):
        process.report({"ready": True})
    first.report({"metrics": worker_metrics(1, 10)})
    first.report({"metrics": worker_metrics(4, 10)})  # (the last report counts)
    second.report({"metrics": worker_metrics(2, 10)})
    lines = started.metrics_text().decode().splitlines()
    assert 'twistwsgi_responses_total{code="200"} 6' in lines
    assert "twistwsgi_threads 20" in lines
    assert "twistwsgi_workers 2" in lines
    clock.advance(YOUNG_WORKER + 1)
    first.end(ProcessTerminated(signal=signal.SIGKILL))
    lines = started.metrics_text().decode().splitlines()
    assert 'twistwsgi_responses_total{code="200"} 6' in lines  # its counts stay
    assert "twistwsgi_threads 10" in lines  # its threads do not
    assert "twistwsgi_workers 1" in lines


def test_a_report_of_another_shape_is_left_out_and_said_once() -> None:
    """A worker runs the application's code: a bad report must not break the
    sums, nor the replacement of that worker when it ends.
    """
    started, clock = serving_metrics(1)
    [worker] = clock.processes
    assert worker.payload()["count_metrics"] is True
    worker.report({"ready": True})
    with capture_log_events() as events:
        worker.report({"metrics": worker_metrics(3, 10)})
        worker.report({"metrics": {**worker_metrics(3, 10), "responses": {"OK": 1}}})
        worker.report({"metrics": "garbage"})
    said = [text for text in messages(events) if "metrics of a shape" in text]
    assert said == [
        "Worker 1 (pid 1000) sent metrics of a shape this master does not know; they are left out"
    ]
    assert 'twistwsgi_responses_total{code="200"} 3' in started.metrics_text().decode()
    clock.advance(YOUNG_WORKER + 1)
    worker.end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    assert len(clock.processes) == 2  # replaced
    assert 'twistwsgi_responses_total{code="200"} 3' in started.metrics_text().decode()


def test_replacements_for_stuck_threads_in_a_row_wait_ever_longer() -> None:
    """Every request hangs (a database down): each replacement would hang as its
    predecessor did, importing the application again each time; after the first,
    each waits twice as long as the last (from 60 s), up to MAX_STUCK_DELAY; twenty
    quiet minutes start the count afresh.
    """
    started, clock = running(1)

    def serving() -> FakeProcess:
        return [p for p in clock.processes if not p.protocol.ended][-1]

    def report(stuck: bool = True) -> bool:
        """The serving worker reports; whether a replacement started (and took over)."""
        current = serving()
        before = len(clock.processes)
        current.report({"recycle": 1, "stuck": 5} if stuck else {"recycle": 1000})
        if len(clock.processes) == before:
            return False
        clock.processes[-1].report({"ready": True})  # the old one is told to stop
        current.end()
        return True

    clock.advance(100)
    assert report()  # the first: at once
    clock.advance(70)
    assert report()  # the second: 60 s after the first had passed
    clock.advance(70)
    with capture_log_events() as events:
        assert not report()  # the third waits 120 s from the second
        assert not report()  # (said once)
    waits = [text for text in messages(events) if "its replacement waits" in text]
    assert len(waits) == 1 and "waits 50s" in waits[0]
    assert report(stuck=False)  # --max-requests is not held back by it
    assert not report()  # (its successor: the same slot's count)
    clock.advance(50)
    assert report()
    for _ in range(6):  # many in a row: never more than MAX_STUCK_DELAY apart
        clock.advance(MAX_STUCK_DELAY)
        assert report()
    clock.advance(2 * MAX_STUCK_DELAY + 1)  # quiet for long: afresh
    assert report()
    clock.advance(1)
    assert not report()  # the second of the new run waits 60 s, not the cap
    clock.advance(59)
    assert report()
    started.stopService()
    for process in clock.processes:
        if not process.protocol.ended:
            process.end()


def test_a_stuck_replacement_that_never_served_is_no_strike() -> None:
    started, clock = running(1)
    clock.advance(100)
    clock.refuse_spawn = True
    clock.processes[0].report({"recycle": 1, "stuck": 5})  # cannot start
    clock.refuse_spawn = False
    clock.advance(1)  # (past the retry delay of a replacement that could not start)
    before = len(clock.processes)
    clock.processes[0].report({"recycle": 1, "stuck": 5})
    assert len(clock.processes) == before + 1  # no wait: the first did not count
    started.stopService()
    for process in clock.processes:
        process.end()


def test_a_reload_starts_the_stuck_count_afresh() -> None:
    """New code may not hang where the old did: its first stuck replacement is at once."""
    started, clock = running(1)
    clock.advance(100)
    for _ in range(2):
        current = [p for p in clock.processes if not p.protocol.ended][-1]
        current.report({"recycle": 1, "stuck": 5})
        clock.processes[-1].report({"ready": True})
        current.end()
        clock.advance(61)
    started.reload(30.0, "[server]\n")
    [new] = new_workers(clock, len(clock.processes) - 1)
    new.report({"ready": True})
    for process in clock.processes[:-1]:
        if not process.protocol.ended:
            process.end()
    before = len(clock.processes)
    new.report({"recycle": 1, "stuck": 5})
    assert len(clock.processes) == before + 1
    started.stopService()
    for process in clock.processes:
        if not process.protocol.ended:
            process.end()


# -- worker_timeout ----------------------------------------------------------------------


def beating(clock: ProcessClock, seconds: float, *alive: FakeProcess) -> None:
    """Let ``seconds`` pass, each of ``alive`` sending its heartbeat every second."""
    for _ in range(int(seconds)):
        clock.advance(1.0)
        for process in alive:
            process.report({"alive": True})


def test_a_silent_worker_is_dumped_then_killed_and_replaced() -> None:
    """As gunicorn's --timeout: worker_timeout seconds after its last report line, SIGUSR2
    (its faulthandler writes its threads' stacks), SIGKILL DUMP_GRACE later; then
    replaced as any worker that died after serving, its stacks logged at its end.
    """
    started, clock = running(2, worker_timeout=30.0)
    first, second = clock.processes
    beating(clock, 29, first)
    clock.advance(0.9)
    assert second.signals == []
    with capture_log_events() as events:
        clock.advance(0.1)
    assert second.signals == ["USR2"]
    assert messages(events) == [
        "Worker 2 (pid 1001) sent no heartbeat for 30s: its event loop is blocked;"
        " killing it and starting another"
    ]
    assert events[0]["log_level"].name == "error"
    second.dump(b"Thread 0x01 (most recent call first):\n")
    second.dump(b'  File "app.py", line 9 in handler\n')
    clock.advance(DUMP_GRACE - 0.1)
    assert second.signals == ["USR2"]
    clock.advance(0.1)
    assert second.signals == ["USR2", "KILL"]
    with capture_log_events() as events:
        second.end(ProcessTerminated(signal=signal.SIGKILL))
        clock.advance(0)
    assert messages(events) == [
        "Worker 2 (pid 1001) was stopped here (its threads' stacks):\n"
        "Thread 0x01 (most recent call first):\n"
        '  File "app.py", line 9 in handler',
        "Worker 2 (pid 1001) was killed after 30s without a heartbeat; starting another in 0.0s",
        "Started worker 2 (pid 1002)",
    ]
    assert events[0]["log_level"].name == "error"
    assert started.pids == [1000, 1002]
    assert first.signals == []
    # Its replacement is watched in turn, from its readiness.
    replacement = clock.processes[2]
    assert replacement.payload()["worker_timeout"] == 30.0
    beating(clock, 60, first)
    assert replacement.signals == []
    replacement.report({"ready": True})
    beating(clock, 30, first)
    assert replacement.signals == ["USR2"]
    assert first.signals == []


def test_a_report_from_the_event_loop_is_a_sign_of_life_a_log_line_is_not() -> None:
    """Metrics and the heartbeat come from the loop; a log line may come from any thread."""
    _, clock = running(1, worker_timeout=3.0)
    [worker] = clock.processes
    metrics = json.dumps({"metrics": {}}).encode()
    for data in [metrics + b"\n", metrics[:5], metrics[5:] + b"\n"] * 4:
        clock.advance(1.4)  # (half a line is no line: two steps)
        worker.protocol.childDataReceived(REPORT_FD, data)
    assert worker.signals == []
    # A thread logs on while the loop is blocked: no report from the loop comes.
    line = json.dumps({"log": {"level": "info", "namespace": "n", "text": "x"}}).encode()
    for data in [line + b"\n", b"not json\n", line + b"\n"]:
        clock.advance(1.0)
        worker.protocol.childDataReceived(REPORT_FD, data)
    assert worker.signals == ["USR2"]  # (3 s after the last report from the loop)


def test_without_a_worker_timeout_nothing_is_watched() -> None:
    started, clock = running(2, worker_timeout=0.0)
    assert clock.getDelayedCalls() == []
    clock.advance(3600.0)
    assert [process.signals for process in clock.processes] == [[], []]
    started.stopService()
    for process in clock.processes:
        process.end()
    assert clock.getDelayedCalls() == []


def test_a_worker_still_starting_is_not_watched() -> None:
    """Importing the applications may take long; RELOAD_TIMEOUT bounds a reload's."""
    started, clock = supervisor(1, worker_timeout=5.0)
    started.startService()
    clock.advance(50.0)
    assert clock.processes[0].signals == []
    assert clock.getDelayedCalls() == []


def test_the_watch_ends_with_the_process() -> None:
    """A worker that ends (however) leaves no timer to signal it, or its slot's next."""
    started, clock = running(2, worker_timeout=20.0)
    first, second = clock.processes
    clock.advance(YOUNG_WORKER)
    first.end(ProcessTerminated(exitCode=1))
    clock.advance(0)
    beating(clock, 30, second)
    assert first.signals == []
    started.stopService()
    for process in clock.processes[1:]:
        process.end()
    assert clock.getDelayedCalls() == []
    assert first.signals == second.signals == []


def test_a_worker_silent_soon_after_its_start_is_started_again_later() -> None:
    """As one that keeps dying young: the delay grows (the application may block at
    once, on every request).
    """
    _, clock = running(1, worker_timeout=3.0)
    clock.advance(3.0)
    clock.advance(DUMP_GRACE)
    [worker] = clock.processes
    assert worker.signals == ["USR2", "KILL"]
    with capture_log_events() as events:
        worker.end(ProcessTerminated(signal=signal.SIGKILL))
    assert messages(events) == [
        "Worker 1 (pid 1000) was killed after 3s without a heartbeat; starting another in 0.5s"
    ]
    clock.advance(FIRST_RESTART_DELAY)
    assert len(clock.processes) == 2


def test_a_silent_worker_that_exited_meanwhile_ends_as_it_exited() -> None:
    """Exited, its pipes still held (see PIPE_GRACE): nothing to signal or kill."""
    _, clock = running(1, worker_timeout=5.0)
    [worker] = clock.processes
    clock.advance(YOUNG_WORKER)
    worker.report({"alive": True})
    clock.advance(4.5)
    worker.protocol.processExited(Failure(ProcessTerminated(exitCode=1)))
    worker.reaped = True
    with capture_log_events() as events:
        clock.advance(0.5)
        assert worker.signals == []
        clock.advance(PIPE_GRACE)
    assert messages(events) == [
        "Worker 1 (pid 1000) exited with status 1; starting another in 0.0s",
        "Started worker 1 (pid 1001)",
    ]


def test_a_late_timer_means_this_process_did_not_run_and_gives_another_period() -> None:
    """The machine was suspended, or the master stopped: the workers' heartbeats wait
    unread in their pipes, and a silence it did not see is no reason to kill them.
    """
    _, clock = running(1, worker_timeout=30.0)
    [worker] = clock.processes
    clock.advance(100.0)  # (one step: the timer fires 70 s late)
    assert worker.signals == []
    clock.advance(29.9)
    assert worker.signals == []
    clock.advance(0.1)
    assert worker.signals == ["USR2"]


def test_a_silent_successor_is_replaced_once_it_serves() -> None:
    """A --max-requests replacement is watched once ready, when it takes the slot over."""
    started, clock = running(1, worker_timeout=10.0)
    old = clock.processes[0]
    old.report({"recycle": 1000})
    [successor] = new_workers(clock, 1)
    beating(clock, 30, old)
    assert successor.signals == []
    successor.report({"ready": True})
    assert old.commands() == [b"stop\n"]
    old.end()
    clock.advance(10.0)
    clock.advance(DUMP_GRACE)
    assert successor.signals == ["USR2", "KILL"]
    successor.end(ProcessTerminated(signal=signal.SIGKILL))
    clock.advance(FIRST_RESTART_DELAY)
    assert started.pids == [1002]
    assert clock.processes[2].payload()["number"] == 1


def test_a_silent_new_worker_of_a_reload_gives_the_reload_up() -> None:
    """Ready, waiting for the others: its silence is its end, as any other, with the
    reload's worker_timeout; the old workers keep serving (and stay watched with theirs).
    """
    started, clock = running(2, worker_timeout=30.0)
    old = clock.processes[:2]
    fired: list[object] = []
    started.reload(30.0, "new", worker_timeout=5.0).addCallback(fired.append)
    first, second = new_workers(clock, 2)
    assert [process.payload()["worker_timeout"] for process in (first, second)] == [5.0] * 2
    first.report({"ready": True})
    beating(clock, 5, *old)
    assert first.signals == ["USR2"]
    clock.advance(DUMP_GRACE)
    assert first.signals == ["USR2", "KILL"]
    with capture_log_events() as events:
        first.end(ProcessTerminated(signal=signal.SIGKILL))
    assert fired
    assert messages(events) == [
        "Reload refused, the old workers keep serving: new worker 1 (pid 1002) ended"
        " before the others served: was killed after 5s without a heartbeat"
    ]
    assert second.signals == ["KILL"]  # (still starting)
    second.end(ProcessTerminated(signal=signal.SIGKILL))
    assert started.pids == [1000, 1001]
    assert len(clock.processes) == 4
    # (The old ones beat until 5 s; now 6 s.)
    beating(clock, 28, *old[1:])
    clock.advance(0.9)
    assert old[0].signals == []
    clock.advance(0.1)
    assert old[0].signals == ["USR2"]
    assert old[1].signals == []


def test_a_silent_old_worker_is_killed_and_not_replaced() -> None:
    """One a reload retired may be killed before its graceful timeout is out."""
    started, clock = running(1, worker_timeout=10.0)
    [old] = clock.processes
    started.reload(30.0, "new", worker_timeout=0.0)
    [new] = new_workers(clock, 1)
    new.report({"ready": True})
    assert old.commands() == [b"keep\n", b"stop\n"]
    with capture_log_events() as events:
        clock.advance(10.0)
    assert messages(events) == [
        "Worker 1 (pid 1000) sent no heartbeat for 10s: its event loop is blocked; killing it"
    ]
    clock.advance(DUMP_GRACE)
    assert old.signals == ["USR2", "KILL"]
    with capture_log_events() as events:
        old.end(ProcessTerminated(signal=signal.SIGKILL))
    assert messages(events) == []
    clock.advance(3600.0)
    assert len(clock.processes) == 2
    assert new.signals == []  # (its set has no worker_timeout)
    assert clock.getDelayedCalls() == []  # (the graceful deadline went with it)


def test_a_silent_worker_during_a_stop_is_killed_and_not_replaced() -> None:
    started, clock = running(2, worker_timeout=20.0)
    first, second = clock.processes
    stopped: list[object] = []
    started.stopService().addCallback(stopped.append)
    first.end()
    with capture_log_events() as events:
        clock.advance(20.0)
    assert messages(events) == [
        "Worker 2 (pid 1001) sent no heartbeat for 20s: its event loop is blocked; killing it"
    ]
    clock.advance(DUMP_GRACE)
    assert second.signals == ["USR2", "KILL"]
    second.dump(b"Thread 0x02 (most recent call first):\n")
    with capture_log_events() as events:
        second.end(ProcessTerminated(signal=signal.SIGKILL))
    assert [text.splitlines()[0] for text in messages(events)] == [
        "Worker 2 (pid 1001) was stopped here (its threads' stacks):"
    ]
    assert stopped
    assert len(clock.processes) == 2
    assert clock.getDelayedCalls() == []


def test_a_silent_worker_before_the_first_start_served_is_started_again() -> None:
    """It served (it was ready): its end is no failed start, which would stop the server."""
    failed: list[str] = []
    started, clock = supervisor(2, failed=failed, worker_timeout=5.0)
    started.startService()
    first, second = clock.processes
    first.report({"ready": True})
    clock.advance(5.0)
    clock.advance(DUMP_GRACE)
    assert first.signals == ["USR2", "KILL"]
    first.end(ProcessTerminated(signal=signal.SIGKILL))
    assert failed == []
    clock.advance(FIRST_RESTART_DELAY)
    assert clock.processes[-1].payload()["number"] == 1
    assert second.signals == []


def test_a_dump_is_logged_once_at_the_end_and_bounded() -> None:
    _, clock = running(1, worker_timeout=5.0)
    [worker] = clock.processes
    clock.advance(5.0)
    assert worker.signals == ["USR2"]
    with capture_log_events() as events:
        for _ in range(DUMP_LIMIT // 1000 + 1):
            worker.dump(b"x" * 999 + b"\n")
        clock.advance(DUMP_QUIET)
        assert messages(events) == []  # (not before its end)
        worker.end(ProcessTerminated(signal=signal.SIGKILL))
        clock.advance(FIRST_RESTART_DELAY)  # (its replacement starts: the slot is reset)
        assert len(clock.processes) == 2
        worker.dump(b"more")
    dumps = [text for text in messages(events) if "was stopped here" in text]
    kept = (b"x" * 999 + b"\n") * (DUMP_LIMIT // 1000 + 1)
    assert dumps == [
        "Worker 1 (pid 1000) was stopped here (its threads' stacks):\n"
        + kept[:DUMP_LIMIT].decode().rstrip("\n")
        + f"\n... ({len(kept) - DUMP_LIMIT} bytes more, not kept)"
    ]
    # What comes after the end is logged when the pipe closes.
    with capture_log_events() as events:
        worker.protocol.childConnectionLost(worker.payload()["dump_fd"])
    assert messages(events) == ["Worker 1 (pid 1000) was stopped here (its threads' stacks):\nmore"]


def test_a_dump_the_master_did_not_ask_for_is_logged_while_the_worker_runs_on() -> None:
    """An operator's kill -USR2 shows where a running worker's threads are: logged once
    the pipe is quiet, at info, and the worker is neither killed nor replaced.
    """
    _, clock = running(1, worker_timeout=30.0)
    [worker] = clock.processes
    with capture_log_events() as events:
        worker.dump(b"Thread 0x01 (most recent call first):\n")
        clock.advance(DUMP_QUIET - 0.1)
        worker.dump(b'  File "app.py", line 9 in handler\n')
        clock.advance(DUMP_QUIET - 0.1)
        assert messages(events) == []  # (still being written)
        clock.advance(0.1)
    assert messages(events) == [
        "Worker 1 (pid 1000) was sent SIGUSR2; its threads' stacks:\n"
        "Thread 0x01 (most recent call first):\n"
        '  File "app.py", line 9 in handler'
    ]
    assert events[0]["log_level"].name == "info"
    with capture_log_events() as events:
        worker.dump(b"Thread 0x02 (most recent call first):\n")
        clock.advance(DUMP_QUIET)
    assert messages(events) == [
        "Worker 1 (pid 1000) was sent SIGUSR2; its threads' stacks:\n"
        "Thread 0x02 (most recent call first):"
    ]
    beating(clock, 60, worker)
    assert worker.signals == []
    assert len(clock.processes) == 1


def test_a_dump_the_master_did_not_ask_for_is_logged_at_an_earlier_end() -> None:
    _, clock = running(1, worker_timeout=30.0)
    [worker] = clock.processes
    worker.dump(b"Thread 0x01 (most recent call first):\n")
    with capture_log_events() as events:
        worker.end(ProcessTerminated(exitCode=1))
        clock.advance(DUMP_QUIET)
    dumps = [text for text in messages(events) if "stacks" in text]
    assert dumps == [
        "Worker 1 (pid 1000) was sent SIGUSR2; its threads' stacks:\n"
        "Thread 0x01 (most recent call first):"
    ]


def test_a_worker_that_ends_without_a_dump_logs_none() -> None:
    _, clock = running(1, worker_timeout=5.0)
    with capture_log_events() as events:
        clock.processes[0].end(ProcessTerminated(exitCode=1))
        clock.processes[0].protocol.childConnectionLost(clock.processes[0].payload()["dump_fd"])
    assert not any("was stopped here" in text for text in messages(events))
