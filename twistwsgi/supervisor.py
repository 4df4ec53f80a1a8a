"""Several server processes on the same listening sockets: the master of ``--workers``.

The :class:`Supervisor` binds every listener once, then starts worker processes
(:mod:`twistwsgi.worker`) that inherit the listening sockets and each serve on them
as a whole server of their own (routing, threads, static files, proxy pools): the
kernel hands each new connection to one of them, as it does for gunicorn's or
nginx's workers. The supervisor serves no request itself. It relays the workers' log
events into its own log (wherever ``twistd`` sends it), starts a worker again when
one dies (at once if it had been serving a while, after a growing delay if it keeps
dying young), replaces them all on a reload, and stops them all gracefully.

SIGTTIN and SIGTTOU (:meth:`Supervisor.add_worker`, :meth:`Supervisor.remove_worker`)
start one worker more or stop the last one, as gunicorn's, until the next reload.

A reload (SIGHUP) starts a new set of workers beside the old ones, as nginx and
gunicorn do: they import the applications afresh, so new code is served as well as
a new configuration, and nothing is refused meanwhile (the listening sockets stay
open in this process). Once every new worker serves, the old ones are told to stop
gracefully; if one of the new workers cannot start, the others are stopped and the
old ones keep serving.

Master and worker speak over three pipes besides the sockets:

* the control pipe (the worker's descriptor :data:`CONTROL_FD`, written by the
  master): one command per line (``stop``, ``stop-now``, ``keep``, ``reopen``).
  Its end of file means the master is gone: the worker stops gracefully. One
  whose event loop cannot read it (blocked, or still importing) is ended by a
  thread of its own (:class:`twistwsgi.worker.MasterWatch`), so no worker outlives
  a killed master by more than its graceful timeout and :data:`KILL_GRACE`.
* the report pipe (:data:`REPORT_FD`, read by the master): one JSON object per
  line: ``{"ready": true}`` once the worker serves, ``{"log": {...}}`` for each log
  event, ``{"error": "..."}`` for the start-up error it exits with, ``{"recycle":
  N}`` once it has answered its ``--max-requests`` (N of them), with ``stuck``,
  ``memory`` and ``memory_limit``, or ``lifetime`` when stuck threads,
  ``max_worker_memory`` or ``max_worker_lifetime`` are the reason instead, and
  ``{"alive": true}``, a heartbeat from the worker's event loop once it serves,
  every second (a third of its ``worker_timeout`` if shorter; none without one). A
  worker that has served and whose event loop sends no report (log events, which
  any thread writes, do not count) for its ``worker_timeout`` (the loop is
  blocked) is sent SIGUSR2, killed :data:`DUMP_GRACE` seconds later and
  replaced as a worker that died (gunicorn's ``--timeout``).
* the dump pipe (its descriptor follows the listeners and the shared limits; the
  payload says which), read by the master: what the worker's ``faulthandler``
  writes on SIGUSR2, the Python stack of each of its threads, written by C code
  even while a thread holds the GIL. The master logs it as one event (its first
  :data:`DUMP_LIMIT` bytes): for the SIGUSR2 of a worker_timeout, once the process
  has ended, beside its kill; for one the master did not send (an operator's ``kill
  -USR2``, to see where a running worker's threads are), once the pipe has been quiet
  for :data:`DUMP_QUIET` seconds, while the worker runs on.

What a worker builds its configuration from (the options, the configuration file's
text, ...) comes as one JSON document on its standard input, which then ends: the
environment would cap it at 128 KiB (a variable's limit on Linux).

Commands go over the pipe rather than as signals because a service manager's stop
(systemd's default ``KillMode=control-group``) and a terminal's Ctrl-C already
signal every process of the group: a worker then gets that signal once and the
master's command once, never the same signal twice (which means "stop now").

Nothing here imports the global reactor; it is passed in.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
)
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import InvalidLogLevelError, Logger, LogLevel
from twisted.python.failure import Failure

from twistwsgi import metrics as metrics_module
from twistwsgi.config import MAX_WORKERS
from twistwsgi.proxy_protocol import ProxyProtocolEndpoint
from twistwsgi.service import (
    ListenError,
    MetricsListener,
    StartError,
    listen_failure_reason,
    report_start_error,
    stop_listening,
)
from twistwsgi.shared_limits import SEATS, SharedLimits

__all__ = [
    "CONTROL_FD",
    "FIRST_LISTENER_FD",
    "PAYLOAD_VARIABLE",
    "REPORT_FD",
    "Supervisor",
    "mebibytes",
]

_log = Logger(namespace="twistwsgi.supervisor")

#: The worker's end of the control pipe (it reads commands there).
CONTROL_FD = 3
#: The worker's end of the report pipe (it writes JSON lines there).
REPORT_FD = 4
#: The worker's descriptor of the first listening socket; the others follow in order.
FIRST_LISTENER_FD = 5
#: Set in a worker's environment: it reads its configuration from standard input.
PAYLOAD_VARIABLE = "TWISTWSGI_WORKER"
#: What systemd's socket activation set for the master: the worker gets its sockets
#: another way, and these would describe descriptors it does not have.
_SOCKET_ACTIVATION_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

#: A worker that ends sooner than this after its start (or before it served) is
#: failing young: it is started again after a delay that doubles each time, from
#: :data:`FIRST_RESTART_DELAY` up to :data:`MAX_RESTART_DELAY`, so a worker that
#: cannot start (an application that now fails to import) does not spin.
YOUNG_WORKER = 10.0
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A slot whose worker is replaced for stuck threads again and again (every request
#: hangs: a database down) has each replacement wait longer: the second may start
#: this long after the first, each next one twice as long, up to
#: :data:`MAX_STUCK_DELAY`; a slot without such a replacement for twice that long
#: starts afresh. Each replacement imports the application again, and one that hangs
#: as its predecessor did frees nothing.
FIRST_STUCK_DELAY = 60.0
MAX_STUCK_DELAY = 600.0
#: Seconds past the graceful timeout a stopping worker gets before it is killed: its
#: own graceful timeout drops what is left, then its threads are let go.
KILL_GRACE = 5.0
#: Seconds after a worker exited that its end waits for its pipes to be read whole.
PIPE_GRACE = 1.0
#: Seconds a reload's new workers may take to serve (import the applications) before
#: they are killed and the reload refused.
RELOAD_TIMEOUT = 60.0
#: Seconds between the SIGUSR2 that has a silent worker write its threads' stacks and
#: the SIGKILL that ends it: faulthandler writes from its signal handler, at once.
DUMP_GRACE = 1.0
#: The most of a worker's stack dump that is kept for the log (the rest is counted).
DUMP_LIMIT = 64 * 1024
#: Seconds the dump pipe stays quiet before a dump the master did not ask for is logged
#: while the worker runs on. faulthandler writes every thread's stack from one signal
#: handler call, at once, so a pause this long means the dump is whole.
DUMP_QUIET = 0.5
#: A worker_timeout timer that fires more than this many seconds after its time says
#: that this process did not run meanwhile (the machine was suspended, the process
#: stopped, the clock stepped): the workers' reports are still unread in their pipes,
#: so the worker is given another period rather than killed for the master's silence.
MASTER_LATE = 1.0


#: The endpoints whose listening socket is the whole of what they do, so that a worker
#: adopting it serves as they would (ssl: gets its certificate back in the worker). A
#: wrapping endpoint (a plugin's) would be lost: the worker sees the socket. haproxy:
#: is ours (ProxyProtocolEndpoint): its socket is shared, and the worker reads the
#: header again.
SHAREABLE_ENDPOINTS = (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    SSL4ServerEndpoint,
    UNIXServerEndpoint,
    AdoptedStreamServerEndpoint,
)


class _SharingError(Exception):
    """Why a listener cannot be bound for the workers, in a few words."""


def _listen_at_once(endpoint: IStreamServerEndpoint) -> Any:
    """Listen on ``endpoint`` (never accepting); its port, a socket to share.

    Raises:
        _SharingError: it is not an endpoint the workers can serve as it would, it
            did not listen at once, or it failed to.
    """
    if isinstance(endpoint, ProxyProtocolEndpoint):
        endpoint = endpoint.wrapped
    if not isinstance(endpoint, SHAREABLE_ENDPOINTS):
        raise _SharingError(
            "only tcp, tcp6, ssl, unix and systemd listeners (and haproxy: in front of"
            " them) can be shared with worker processes (they serve the socket itself)"
        )
    outcome: list[Any] = []
    listening = endpoint.listen(_Refuse()).addBoth(outcome.append)
    if not outcome:
        listening.cancel()  # (a port it delivers later is not kept)
        raise _SharingError("it does not listen at once on a socket the workers could share")
    port = outcome[0]
    if isinstance(port, Failure):
        raise _SharingError(listen_failure_reason(port))
    if not callable(getattr(port, "fileno", None)):
        port.stopListening()
        raise _SharingError("it is not a socket the workers could share")
    return port


class _ProcessReactor(IReactorProcess, IReactorTime):
    """What the supervisor needs of a reactor."""


class _Refuse(Factory):
    """The master's own listening ports never accept (it only holds the sockets)."""

    noisy = False  # (Twisted would log the factory's start and stop)

    def logPrefix(self) -> str:
        return "A listener for the workers"  # "... starting on 8080"

    def buildProtocol(self, addr: object) -> None:
        return None


@dataclass(eq=False)  # (each is its process's: compared by identity)
class _Worker:
    """One worker slot's current process."""

    number: int
    started: float
    process: IProcessTransport | None = None
    ready: bool = False
    error: str | None = None
    pid: int | None = None
    restart: IDelayedCall | None = None
    failures: int = 0
    #: For a process told to stop on its own (an old worker after a reload): when
    #: it is killed if still running.
    deadline: IDelayedCall | None = None
    #: Replacements for --max-requests that could not start, in a row, and when
    #: the next may be tried.
    recycle_failures: int = 0
    recycle_not_before: float = 0.0
    #: When a replacement for stuck threads may start (see FIRST_STUCK_DELAY).
    stuck_not_before: float = 0.0
    #: Whether this process was started to replace one with stuck threads.
    replaces_stuck: bool = False
    #: The worker_timeout this process was started with (0: not watched), and, from
    #: its readiness to its end, the call that fires that long after the last
    #: report its event loop sent.
    timeout: float = 0.0
    silence: IDelayedCall | None = None
    #: Whether it was killed for its silence.
    timed_out: bool = False


class _WorkerProtocol(ProcessProtocol):
    """The master's side of one worker process: its reports and its end.

    The end is taken from the process's exit, once its pipes are read to their end
    or at most :data:`PIPE_GRACE` seconds later: a process the application started
    (a shell's ``cmd &``, a fork) may hold the pipes open long after the worker
    exited, and the worker must still be replaced (and a stop not wait for it).
    Reports read after that (the old process's last log lines) are still logged,
    but say nothing about the worker's slot.

    What arrives on the dump pipe (``dump_fd``) is kept, up to :data:`DUMP_LIMIT`
    bytes, and logged as one event: at the end when the master sent the SIGUSR2 for
    a worker_timeout (what comes after it, once that pipe closes), else once the pipe
    has been quiet for :data:`DUMP_QUIET` seconds, or at the end if that comes first.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        worker: _Worker,
        clock: IReactorTime,
        seat: int | None,
        dump_fd: int | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._worker = worker
        self._clock = clock
        #: The process's column in the shared conn_limit counts (see shared_limits).
        self.seat = seat
        #: The process's id, kept for its dump (the slot's changes with a restart).
        self.pid: int | None = None
        self._reports = b""
        self._dump_fd = dump_fd
        self._dump = bytearray()
        self._dump_cut = 0
        self._dump_quiet: IDelayedCall | None = None
        #: Whether the master sent this process its SIGUSR2 (worker_timeout), kept at
        #: the end: the slot's flag is cleared when its next process starts.
        self._silenced = False
        self._exit: BaseException | None = None
        self._grace: IDelayedCall | None = None
        self.ended = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == self._dump_fd:
            room = DUMP_LIMIT - len(self._dump)
            self._dump += data[:room]
            self._dump_cut += max(len(data) - room, 0)
            if not self.ended:
                _cancel(self._dump_quiet)
                self._dump_quiet = self._clock.callLater(DUMP_QUIET, self._dump_quiet_reached)
            return
        if childFD != REPORT_FD:
            return
        lines = (self._reports + data).split(b"\n")
        self._reports = lines.pop()
        for line in lines:
            self._supervisor._report(self._worker, line, current=not self.ended)

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == self._dump_fd and self.ended:
            self._log_dump()  # (what came once the process's end was taken)

    def _dump_quiet_reached(self) -> None:
        """Log a dump nobody here asked for; a worker_timeout's waits for the end."""
        self._dump_quiet = None
        if not self.ended and not self._worker.timed_out:
            self._log_dump()

    def _log_dump(self) -> None:
        """Log the stacks the process wrote on the dump pipe, if any, once."""
        if not self._dump and not self._dump_cut:
            return
        text = self._dump.decode("utf-8", "replace").rstrip("\n")
        if self._dump_cut:
            text += f"\n... ({self._dump_cut} bytes more, not kept)"
        self._dump, self._dump_cut = bytearray(), 0
        if self._silenced if self.ended else self._worker.timed_out:
            _log.error(
                "Worker {number} (pid {pid}) was stopped here (its threads' stacks):\n{stacks}",
                number=self._worker.number,
                pid=self.pid,
                stacks=text,
            )
        else:
            _log.info(
                "Worker {number} (pid {pid}) was sent SIGUSR2; its threads' stacks:\n{stacks}",
                number=self._worker.number,
                pid=self.pid,
                stacks=text,
            )

    def processExited(self, reason: Failure) -> None:
        self._exit = reason.value or ProcessDone(0)
        self._grace = self._clock.callLater(PIPE_GRACE, self._end)

    def processEnded(self, reason: Failure) -> None:
        if self._exit is None:
            self._exit = reason.value or ProcessDone(0)
        self._end()

    def _end(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        if not self.ended:
            _cancel(self._dump_quiet)
            self._dump_quiet = None
            self._silenced = self._worker.timed_out
            self.ended = True
            assert self._exit is not None
            self._log_dump()
            # The process has exited: nothing of it counts requests in progress any
            # more (its seat is cleared before the seat is given to another).
            self._supervisor._free_seat(self.seat, self)
            self.seat = None
            self._supervisor._metrics_ended(self._worker.pid)
            self._supervisor._ended(self._worker, self._exit)


def last_error_line(written: bytes) -> str:
    """The reason a checking process gave: its last line on stderr, without prefix."""
    lines = written.decode("utf-8", "replace").strip().splitlines()
    return lines[-1].removeprefix("twistwsgi: error: ") if lines else ""


class Supervisor(Service):
    """Binds the listeners, runs ``workers`` server processes on them, stops them.

    Args:
        endpoints: ``(description, endpoint)`` pairs; each must listen at once on a
            socket (tcp, tcp6, ssl, unix, systemd), which the workers inherit.
        workers: how many worker processes to keep running.
        reactor: spawns the processes and times restarts and the stop.
        configuration: what each worker builds its configuration from, as JSON
            values: ``options`` (setting name to the value given), ``config_content``
            (the configuration file's text as accepted, or None), ``start_directory``
            (where relative paths were given from). A reload that takes over
            replaces the text.
        graceful_timeout: the workers' graceful timeout; a stopping worker still
            running :data:`KILL_GRACE` seconds past it is killed.
        worker_timeout: seconds a worker that has served may go without a report
            from its event loop (a heartbeat every second) before it is sent SIGUSR2 (its
            threads' stacks) and killed; 0: never.
        on_start_error: called with a one-line message when a listener cannot be
            bound; by default the :class:`ListenError` is raised.
        on_failed_start: called with a one-line message when a worker ends before
            every worker of the first start served (the server then cannot run as
            configured); by default the supervisor stops.
        command: the program and arguments that start a worker.
        environ: the environment the workers start with (besides their options).
        metrics: the ``metrics_listen`` endpoint, as ``(description, endpoint)``:
            this process serves there the sum of what its workers report.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        *,
        workers: int,
        reactor: _ProcessReactor,
        configuration: Mapping[str, Any],
        graceful_timeout: float = 30.0,
        worker_timeout: float = 0.0,
        on_start_error: Callable[[str], None] | None = None,
        on_failed_start: Callable[[str], None] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "twistwsgi.worker"),
        environ: Mapping[str, str] | None = None,
        metrics: tuple[str, IStreamServerEndpoint] | None = None,
    ) -> None:
        self._endpoints = list(endpoints)
        self._count = workers
        self._reactor = reactor
        self._configuration = dict(configuration)
        self._graceful_timeout = graceful_timeout
        self._worker_timeout = worker_timeout
        self._on_start_error = on_start_error
        self._on_failed_start = on_failed_start
        # A reload in progress: its new workers (by slot), what they were started
        # with (configuration, graceful timeout, worker timeout), when it is given
        # up, and what waits for it.
        self._incoming: dict[int, _Worker] | None = None
        self._incoming_with: tuple[dict[str, Any], float, float] = (
            self._configuration,
            graceful_timeout,
            worker_timeout,
        )
        self._reload_deadline: IDelayedCall | None = None
        self._reloading: Deferred[None] | None = None
        # Old workers told to stop, until they end.
        self._retiring: list[_Worker] = []
        # Replacements for --max-requests starting, by slot (see _recycle).
        self._successors: dict[int, _Worker] = {}
        # Replacements for stuck threads, by slot: how many in a row, the last when.
        self._stuck_replacements: dict[int, tuple[int, float]] = {}
        self._command = list(command)
        self._environ = dict(os.environ if environ is None else environ)
        self.ports: list[IListeningPort] = []
        self._workers: dict[int, _Worker] = {}
        self._announced = False
        self._stopping: Deferred[None] | None = None
        self._stop_now_asked = False
        self._ended_all: Deferred[None] | None = None
        self._kill_call: IDelayedCall | None = None
        # The rate_limit and conn_limit counts every worker shares (made at the
        # first start; None if that failed), and the seats no process holds.
        self.shared_limits: SharedLimits | None = None
        self._free_seats = list(range(SEATS))
        # Processes started while every seat was held, in order, for the next ones.
        self._seatless: list[_WorkerProtocol] = []
        # The workers' last metrics, by process id; what ended ones had counted.
        self._metrics: MetricsListener | None = None
        if metrics is not None:
            self._metrics = MetricsListener(*metrics, self.metrics_text, reactor)
        self._worker_metrics: dict[int, dict[str, Any]] = {}
        self._bad_metrics: set[int] = set()
        self._ended_metrics = metrics_module.empty()

    @property
    def pids(self) -> list[int | None]:
        """The process ids of the workers running now, in slot order."""
        return [worker.pid for _, worker in sorted(self._workers.items()) if worker.process]

    def privilegedStartService(self) -> None:
        """Bind every listener (before ``twistd`` drops privileges)."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """Bind the listeners if not done yet, then start the workers."""
        if self._stopping is not None:
            self._start_failed(StartError("cannot start while the workers are still stopping"))
            return
        if not self._listen():
            return
        super().startService()
        self._announced = False
        if self.shared_limits is None:
            try:
                self.shared_limits = SharedLimits.create()
            except OSError as error:
                _log.warn(
                    "Cannot share rate_limit and conn_limit counts between the workers"
                    " ({error}): each worker counts its own clients",
                    error=error,
                )
        for number in range(1, self._count + 1):
            self._spawn(self._workers.setdefault(number, _Worker(number, 0.0)))

    def _listen(self) -> bool:
        if self.ports:
            return True
        for description, endpoint in self._endpoints:
            try:
                port = _listen_at_once(endpoint)
            except _SharingError as problem:
                self._close_ports()
                self._start_failed(ListenError(f"cannot listen on {description!r}: {problem}"))
                return False
            port.stopReading()  # the workers accept, never this process
            self.ports.append(port)
            _log.info(
                "Listening on {description} ({address})",
                description=description,
                address=port.getHost(),
            )
        if self._metrics is not None:
            reason = self._metrics.listen()
            if reason is not None:
                self._close_ports()
                self._start_failed(
                    ListenError(f"cannot listen on {self._metrics.description!r}: {reason}")
                )
                return False
        return True

    def _close_ports(self) -> Deferred[Any]:
        ports, self.ports = self.ports, []
        stopped = stop_listening(ports)
        if self._metrics is not None:
            return DeferredList([stopped, self._metrics.close()], consumeErrors=True)
        return stopped

    def metrics_text(self) -> bytes:
        """The workers' metrics summed, in Prometheus's text format (what is served)."""
        total = metrics_module.merge([self._ended_metrics, *self._worker_metrics.values()])
        # The current set's (a reload's outgoing and incoming sets overlap).
        serving = sum(1 for worker in self._workers.values() if worker.process and worker.ready)
        return metrics_module.render(total, workers=serving)

    def _metrics_ended(self, pid: int | None) -> None:
        """Keep the counters of process ``pid``, which has ended (its gauges go)."""
        self._bad_metrics.discard(pid or 0)
        last = self._worker_metrics.pop(pid or 0, None)
        if last is not None:
            self._ended_metrics = metrics_module.retire(self._ended_metrics, last)

    def _start_failed(self, error: StartError) -> None:
        report_start_error(self._on_start_error, error)

    def _spawn(self, worker: _Worker) -> None:
        """Start the process of ``worker``'s slot; if that fails, try again later."""
        try:
            self._start_process(
                worker, self._configuration, self._graceful_timeout, self._worker_timeout
            )
        except OSError as error:  # fork failed: out of memory, or a process limit
            _log.error("Cannot start worker {number}: {error}", number=worker.number, error=error)
            self._restart_later(worker)

    def _start_process(
        self,
        worker: _Worker,
        configuration: Mapping[str, Any],
        graceful_timeout: float,
        worker_timeout: float,
    ) -> None:
        """Start ``worker``'s process, with the listening sockets and the three pipes.

        ``graceful_timeout`` is the one it will be stopped with: a worker that
        outlives this process by more than that and :data:`KILL_GRACE` ends itself.
        ``worker_timeout`` is how long it may go without a report once it serves.

        Raises:
            OSError: the process could not be started.
        """
        worker.restart = None
        worker.ready = False
        worker.error = None
        worker.started = self._reactor.seconds()
        worker.timeout = worker_timeout
        worker.timed_out = False
        # A new process: what held back its predecessor's replacement is not its.
        worker.recycle_failures = 0
        worker.recycle_not_before = worker.stuck_not_before = 0.0
        child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2, CONTROL_FD: "w", REPORT_FD: "r"}
        for index, port in enumerate(self.ports):
            child_fds[FIRST_LISTENER_FD + index] = port.fileno()  # type: ignore[attr-defined]
        limits: tuple[int, int | None] | None = None
        if self.shared_limits is not None:
            # After the listeners; a process beyond the seats still shares the
            # rate counts (and counts its connections alone until a seat frees).
            limits = (FIRST_LISTENER_FD + len(self.ports), self._take_seat())
            child_fds[limits[0]] = self.shared_limits.fd
        seat = limits[1] if limits is not None else None
        # After the listeners and the limits: those keep their places, where a
        # worker of another release (twistwsgi upgraded under this master) looks.
        dump_fd = max(child_fds) + 1
        child_fds[dump_fd] = "r"
        protocol = _WorkerProtocol(self, worker, self._reactor, seat, dump_fd)
        try:
            process = self._reactor.spawnProcess(
                protocol,
                self._command[0],
                self._command,
                env=self._worker_environ(),
                childFDs=child_fds,
            )
        except BaseException:
            self._free_seat(seat)
            raise
        if limits is not None and seat is None:
            self._seatless.append(protocol)
        worker.process = process
        worker.pid = protocol.pid = process.pid
        payload = self._payload(
            worker.number,
            configuration,
            limits,
            orphan_allowance=graceful_timeout + KILL_GRACE,
            worker_timeout=worker_timeout,
            dump_fd=dump_fd,
        )
        process.writeToChild(0, payload)
        process.closeChildFD(0)
        _log.info("Started worker {number} (pid {pid})", number=worker.number, pid=worker.pid)

    def _worker_environ(self) -> dict[str, str]:
        """The environment of a worker."""
        environ = {
            name: value
            for name, value in self._environ.items()
            if name not in _SOCKET_ACTIVATION_VARIABLES
        }
        environ[PAYLOAD_VARIABLE] = "1"
        return environ

    def _take_seat(self) -> int | None:
        """A seat for a new process; ``None`` when all are held."""
        if not self._free_seats:
            return None
        return self._free_seats.pop(0)

    def _free_seat(self, seat: int | None, ended: _WorkerProtocol | None = None) -> None:
        """Give back the seat of a process that has exited, its counts cleared.

        A process still running without a seat (``ended`` is not one any more) is
        given it at once.
        """
        if ended in self._seatless:
            self._seatless.remove(ended)
        if seat is None:
            return
        if self.shared_limits is not None:
            self.shared_limits.clear_seat(seat)
        while self._seatless:
            waiting = self._seatless.pop(0)
            process = waiting.transport
            if process is None:
                continue
            try:
                process.writeToChild(CONTROL_FD, b"seat %d\n" % seat)
            except (KeyError, OSError):
                continue  # its control pipe is closed: it is ending
            waiting.seat = seat
            return
        self._free_seats.append(seat)

    def _payload(
        self,
        number: int,
        configuration: Mapping[str, Any],
        limits: tuple[int, int | None] | None = None,
        *,
        orphan_allowance: float,
        worker_timeout: float,
        dump_fd: int,
    ) -> bytes:
        """What worker ``number`` reads on its standard input.

        ``limits``: the descriptor of the shared limits and the process's seat.
        ``orphan_allowance``: how long the worker may outlive this process (see
        :class:`twistwsgi.worker.MasterWatch`). ``worker_timeout``: how often it
        must send a report (see :class:`twistwsgi.worker.Heartbeat`), and
        ``dump_fd`` where its stack dump goes.
        """
        payload = {
            **configuration,
            "count_metrics": self._metrics is not None,
            "limits": list(limits) if limits is not None else None,
            "number": number,
            "listen": [description for description, _ in self._endpoints],
            "sys_path": sys.path,
            "master_pid": os.getpid(),
            "orphan_allowance": orphan_allowance,
            "worker_timeout": worker_timeout,
            "dump_fd": dump_fd,
        }
        return json.dumps(payload).encode("utf-8")

    def _report(self, worker: _Worker, line: bytes, *, current: bool = True) -> None:
        """Act on one line of a worker's report pipe (its log only, if not ``current``)."""
        try:
            report = json.loads(line)
            if not isinstance(report, dict):
                raise ValueError("not an object")
        except ValueError:
            _log.warn(
                "Worker {number} wrote an unreadable report: {line!r}",
                number=worker.number,
                line=line[:200],
            )
            return
        event = report.get("log")
        if isinstance(event, dict):
            self._relay(worker, event)
        if not current:
            return
        if event is None:
            # Every report but a log event comes from the worker's event loop (the
            # heartbeat, metrics, readiness, a replacement's reason); a log event may
            # come from any of its threads, which log on while the loop is blocked.
            self._heard_from(worker)
        if isinstance(report.get("error"), str):
            worker.error = report["error"]
        if report.get("ready") is True and not worker.ready:
            worker.ready = True
            self._watch(worker)
            if self._is_incoming(worker):
                self._take_over_if_all_ready()
            elif self._successors.get(worker.number) is worker:
                self._hand_over(worker)
            else:
                self._announce_if_all_ready()
        if "metrics" in report and worker.pid is not None:
            counted = metrics_module.checked(report["metrics"])
            if counted is not None:
                self._worker_metrics[worker.pid] = counted
            elif worker.pid not in self._bad_metrics:
                self._bad_metrics.add(worker.pid)
                _log.warn(
                    "Worker {number} (pid {pid}) sent metrics of a shape this master does"
                    " not know; they are left out",
                    number=worker.number,
                    pid=worker.pid,
                )
        answered = report.get("recycle")
        if isinstance(answered, int) and self._workers.get(worker.number) is worker:
            stuck, memory = report.get("stuck"), report.get("memory")
            memory_limit, lifetime = report.get("memory_limit"), report.get("lifetime")
            if isinstance(stuck, int):
                self._recycle(worker, answered, stuck=stuck)
            elif isinstance(memory, int) and isinstance(memory_limit, int):
                self._recycle(worker, answered, memory=(memory, memory_limit))
            elif isinstance(lifetime, (int, float)):
                self._recycle(worker, answered, lifetime=lifetime)
            else:
                self._recycle(worker, answered)

    def _watch(self, worker: _Worker) -> None:
        """From now on, ``worker`` that goes ``worker.timeout`` without a report is killed."""
        if worker.timeout > 0 and worker.process is not None:
            worker.silence = self._reactor.callLater(worker.timeout, self._silent, worker)

    def _heard_from(self, worker: _Worker) -> None:
        """``worker``'s event loop sent a report: it runs (see :meth:`_watch`)."""
        if worker.silence is not None and worker.silence.active():
            worker.silence.reset(worker.timeout)

    def _silent(self, worker: _Worker) -> None:
        """``worker`` sent nothing for its worker_timeout: dump its stacks, kill it.

        Its end is then taken as that of any worker that died after serving. One
        that has exited meanwhile (its pipes held open, see :data:`PIPE_GRACE`) is
        left to that end.
        """
        call, worker.silence = worker.silence, None
        if worker.process is None:
            return
        if call is not None and self._reactor.seconds() - call.getTime() > MASTER_LATE:
            self._watch(worker)  # (this process did not run: see MASTER_LATE)
            return
        try:
            # faulthandler's handler in the worker writes every thread's stack to the
            # dump pipe (logged at its end); it returns, and the process runs on.
            # (Twisted takes the names of five signals only; the number for others.)
            worker.process.signalProcess(signal.SIGUSR2)
        except ProcessExitedAlready:
            return
        worker.timed_out = True
        replaced = self._stopping is None and self._workers.get(worker.number) is worker
        _log.error(
            "Worker {number} (pid {pid}) sent no heartbeat for {timeout:g}s: its event"
            " loop is blocked; killing it{and_then}",
            number=worker.number,
            pid=worker.pid,
            timeout=worker.timeout,
            and_then=" and starting another" if replaced else "",
        )
        _cancel(worker.deadline)
        worker.deadline = self._reactor.callLater(DUMP_GRACE, self._kill, worker)

    def _recycle(
        self,
        worker: _Worker,
        answered: int,
        *,
        stuck: int | None = None,
        memory: tuple[int, int] | None = None,
        lifetime: float | None = None,
    ) -> None:
        """Start a replacement for ``worker``, which answered its ``--max-requests``.

        Or which has ``stuck`` threads, held by requests answered 504 past
        app_timeout; or uses more ``memory`` than max_worker_memory (used, limit);
        or has served for max_worker_lifetime (``lifetime``).

        The old one serves on until the new one serves, then stops accepting and
        finishes its requests (:meth:`_hand_over`), as a reload's sets do: the slot
        never goes without a worker, and a replacement that cannot start (the code
        on disk changed and does not import) leaves the old one serving, tried
        again after a delay that doubles.
        """
        number = worker.number
        now = self._reactor.seconds()
        if (
            not self.running
            or number in self._successors
            or self._incoming is not None  # (the reload replaces it)
            or now < worker.recycle_not_before
        ):
            return
        if stuck is not None and (
            now < worker.stuck_not_before or self._stuck_replacement_waits(worker, now)
        ):
            return
        if (memory is not None or lifetime is not None) and (self._successors or self._retiring):
            # One at a time: workers started together grow and age together, and
            # each replacement adds a process (an application imported afresh) until
            # the one it replaces has ended; all at once, the memory this is about
            # would double. The next asks again within a second.
            return
        if memory is not None:
            _log.warn(
                "Worker {number} (pid {pid}) uses {used} MiB of memory, more than"
                " max_worker_memory ({limit} MiB); starting its replacement",
                number=number,
                pid=worker.pid,
                used=mebibytes(memory[0]),
                limit=mebibytes(memory[1]),
            )
        elif lifetime is not None:
            _log.info(
                "Worker {number} (pid {pid}) has served for max_worker_lifetime"
                " ({lifetime:g}s); starting its replacement",
                number=number,
                pid=worker.pid,
                lifetime=lifetime,
            )
        elif stuck is None:
            _log.info(
                "Worker {number} (pid {pid}) answered {answered} requests (max_requests);"
                " starting its replacement",
                number=number,
                pid=worker.pid,
                answered=answered,
            )
        else:
            _log.warn(
                "Worker {number} (pid {pid}) has {stuck} thread(s) held by requests"
                " answered 504 (app_timeout); starting its replacement",
                number=number,
                pid=worker.pid,
                stuck=stuck,
            )
        successor = self._successors[number] = _Worker(number, 0.0)
        successor.replaces_stuck = stuck is not None
        try:
            self._start_process(
                successor, self._configuration, self._graceful_timeout, self._worker_timeout
            )
        except OSError as error:
            del self._successors[number]
            self._recycle_failed(worker, f"cannot start a process: {error}")

    def _stuck_replacement_waits(self, worker: _Worker, now: float) -> bool:
        """Whether ``worker``'s replacement for stuck threads must wait (see FIRST_STUCK_DELAY).

        A replacement counts once it has taken over (:meth:`_hand_over`): one that
        could not start, or ended before it served, is no strike.
        """
        strikes, last = self._stuck_strikes(worker.number, now)
        if strikes:
            wait = min(FIRST_STUCK_DELAY * 2 ** (strikes - 1), MAX_STUCK_DELAY)
            # (The wall clock stepped back: never longer than the cap from now.)
            start = min(last + wait, now + MAX_STUCK_DELAY)
            if now < start:
                worker.stuck_not_before = start
                _log.warn(
                    "Worker {number} (pid {pid}) has threads held by requests answered 504"
                    " again ({strikes} replacement(s) in a row for that): its replacement"
                    " waits {delay:.0f}s (does the application wait on something that is"
                    " down?)",
                    number=worker.number,
                    pid=worker.pid,
                    strikes=strikes,
                    delay=start - now,
                )
                return True
        return False

    def _stuck_strikes(self, number: int, now: float) -> tuple[int, float]:
        """Slot ``number``'s stuck replacements in a row and the last one's time.

        None after twice MAX_STUCK_DELAY without one: the count starts afresh.
        """
        strikes, last = self._stuck_replacements.get(number, (0, -math.inf))
        return (0, last) if now - last > 2 * MAX_STUCK_DELAY else (strikes, last)

    def _hand_over(self, successor: _Worker) -> None:
        """A replacement for --max-requests serves: the worker it replaces stops."""
        number = successor.number
        del self._successors[number]
        if successor.replaces_stuck:
            now = self._reactor.seconds()
            strikes, _ = self._stuck_strikes(number, now)
            self._stuck_replacements[number] = (strikes + 1, now)
        old = self._workers.get(number)
        self._workers[number] = successor
        if old is not None:
            # One that ended meanwhile (the OOM killer's first pick) may have a restart
            # pending: it would start a process in a slot that is no longer its own,
            # which nothing would ever stop.
            _cancel(old.restart)
            old.restart = None
            if old.process is not None:
                self._stop_workers([old], self._graceful_timeout)

    def _recycle_failed(self, worker: _Worker, how: str) -> None:
        worker.recycle_failures += 1
        delay = _restart_delay(worker.recycle_failures)
        worker.recycle_not_before = self._reactor.seconds() + delay
        _log.warn(
            "The replacement of worker {number} (pid {pid}) could not start: {how};"
            " worker {number} serves on, another try in {delay}s",
            number=worker.number,
            pid=worker.pid,
            how=how,
            delay=delay,
        )

    def _is_incoming(self, worker: _Worker) -> bool:
        """Whether ``worker`` is one of a reload's new workers, not serving yet."""
        return self._incoming is not None and self._incoming.get(worker.number) is worker

    def _everyone(self) -> list[_Worker]:
        """Every worker with a process: serving, starting for a reload, or stopping."""
        workers = [
            *self._workers.values(),
            *(self._incoming or {}).values(),
            *self._successors.values(),
            *self._retiring,
        ]
        return [worker for worker in workers if worker.process is not None]

    def _relay(self, worker: _Worker, event: dict[str, Any]) -> None:
        """Log a worker's event here, as it was logged there, naming the worker.

        Its namespace, level, time and system (``-`` for Twisted's legacy log) are
        kept; the system gains ``worker N`` (``new worker N`` for a reload's starting
        worker, ``old worker N`` for one told to stop).
        """
        namespace = str(event.get("namespace") or "twistwsgi.worker")
        try:
            level = LogLevel.levelWithName(str(event.get("level")))
        except InvalidLogLevelError:
            level = LogLevel.info
        system = event.get("system") or f"{namespace}#{level.name}"
        logged_at = event.get("time")
        _log.observer(
            {
                "log_logger": _log,
                "log_level": level,
                "log_namespace": namespace,
                "log_source": None,
                "log_format": "{log_text}",
                "log_text": str(event.get("text", "")),
                "log_time": logged_at if isinstance(logged_at, (int, float)) else time.time(),
                "log_system": f"{system} {self._title(worker)}",
                "worker": worker.number,
            }
        )

    def _title(self, worker: _Worker) -> str:
        """How ``worker`` is named in the log.

        A reload's new workers and those told to stop share their slot numbers with
        the serving ones.
        """
        if worker in self._retiring:
            return f"old worker {worker.number}"
        if self._is_incoming(worker) or self._successors.get(worker.number) is worker:
            return f"new worker {worker.number}"
        return f"worker {worker.number}"

    def _announce_if_all_ready(self) -> None:
        if self._announced or self._stopping is not None:
            return
        if all(worker.ready for worker in self._workers.values()):
            self._announced = True
            _log.info(
                "Ready: serving on {count} endpoint(s) with {workers} worker processes",
                count=len(self.ports),
                workers=len(self._workers),
            )

    def _ended(self, worker: _Worker, reason: BaseException) -> None:
        """A worker process ended: start another, unless it was told to stop.

        A reload's new worker that ends before they all serve gives the reload up.
        """
        pid = worker.pid
        worker.process = None
        _cancel(worker.silence)
        _cancel(worker.deadline)  # (a retiring worker's, or the kill after a dump)
        worker.silence = worker.deadline = None
        retired = worker in self._retiring
        if retired:
            self._retiring.remove(worker)
        if self._stopping is not None:
            if not self._everyone():
                ended, self._ended_all = self._ended_all, None
                if ended is not None:
                    ended.callback(None)
            return
        if retired:
            return
        if worker.timed_out:
            how = f"was killed after {worker.timeout:g}s without a heartbeat"
        else:
            how = worker.error or _how_it_ended(reason)
        if self._successors.get(worker.number) is worker:
            del self._successors[worker.number]
            serving = self._workers.get(worker.number)
            if serving is not None:
                self._recycle_failed(serving, f"pid {pid} {how}")
            return
        if self._is_incoming(worker):
            what = "could not start" if not worker.ready else "ended before the others served"
            self._give_up_reload(f"new worker {worker.number} (pid {pid}) {what}: {how}")
            return
        if self._workers.get(worker.number) is not worker:
            return  # (an old worker a reload replaced)
        if not self._announced and not worker.timed_out:
            # The first start has not served yet: a worker that ends now would be
            # started again for ever while clients wait on a socket nobody serves.
            # (One killed for its silence served: it is started again.)
            message = f"worker {worker.number} (pid {pid}) could not start: {how}"
            if self._on_failed_start is None:
                _log.error("Stopping: {message}", message=message)
                self.stopService()
            else:
                self._on_failed_start(message)
            return
        lived = self._reactor.seconds() - worker.started
        young = not worker.ready or lived < YOUNG_WORKER
        worker.failures = worker.failures + 1 if young else 0
        delay = _restart_delay(worker.failures)
        if worker.error:  # (reported before it exits with status 2)
            message = "Worker {number} (pid {pid}) could not start: {how}; trying again in {delay}s"
        else:
            message = "Worker {number} (pid {pid}) {how}; starting another in {delay}s"
        _log.warn(message, number=worker.number, pid=pid, how=how, delay=delay)
        self._restart_later(worker, delay)

    def _restart_later(self, worker: _Worker, delay: float | None = None) -> None:
        if delay is None:
            worker.failures += 1
            delay = _restart_delay(worker.failures)
        worker.restart = self._reactor.callLater(delay, self._spawn, worker)

    def _send(self, command: bytes, workers: Sequence[_Worker] | None = None) -> None:
        """Write ``command`` to ``workers``' control pipes (default: every worker's)."""
        for worker in self._everyone() if workers is None else workers:
            if worker.process is not None:
                with contextlib.suppress(KeyError):  # its control pipe closed: ending
                    worker.process.writeToChild(CONTROL_FD, command + b"\n")

    def reload(
        self,
        graceful_timeout: float,
        content: str | None,
        workers: int | None = None,
        worker_timeout: float | None = None,
    ) -> Deferred[None]:
        """Replace every worker by a new one built from the configuration ``content``.

        SIGHUP's work, given the configuration file's new text (already validated
        here), the number of workers it asks for (default: as many as now) and its
        worker_timeout (default: the one in force), which the new workers get. The
        workers reopen their access logs and read their certificates again at once
        (logrotate's and certbot's SIGHUP must not wait for a slow start). Then a
        new set of workers starts beside them, importing the applications afresh
        (new code as well as the new configuration); once every one of them serves,
        the old workers are told to stop gracefully, and the new text is what
        workers started from then on build. A new worker that ends first, or that
        does not serve within :data:`RELOAD_TIMEOUT`, gives the reload up with one
        line: the other new workers are stopped and the old ones keep serving. A
        reload asked for meanwhile replaces the one in progress at once (its new
        workers are stopped), as nginx acts on each SIGHUP: a fixed release need not
        wait for a broken one to time out. The Deferred fires when the last one is
        decided.
        """
        if not self.running:
            if self._stopping is not None:  # (the workers are told to stop)
                _log.info("Reload ignored: the server is stopping")
            return succeed(None)
        self.keep_configuration()
        reloading = self._reloading
        if reloading is None:
            reloading = self._reloading = Deferred()
        else:
            _log.info("Reload: a newer one replaces the reload in progress")
            self._drop_incoming()
        if worker_timeout is None:
            worker_timeout = self._worker_timeout
        self._start_new_workers(graceful_timeout, content, workers, worker_timeout)
        return reloading

    def _start_new_workers(
        self,
        graceful_timeout: float,
        content: str | None,
        workers: int | None,
        worker_timeout: float,
    ) -> None:
        """Start a reload's new workers with the configuration file's text ``content``.

        They build in the directory the start directory's name leads to now (a link
        a deployment moved), and so do the workers started for this set later: a
        worker that dies after a refused reload starts again with the code that
        serves, not with the release that was refused.
        """
        self._incoming = incoming = {}
        configuration = {**self._configuration, "config_content": content}
        configuration.update(pinned_directories(configuration))
        self._incoming_with = (configuration, graceful_timeout, worker_timeout)
        self._reload_deadline = self._reactor.callLater(RELOAD_TIMEOUT, self._reload_timed_out)
        count = workers or self._count
        _log.info(
            "Reload: starting {count} new worker process(es); the old ones serve meanwhile",
            count=count,
        )
        for number in range(1, count + 1):
            worker = incoming[number] = _Worker(number, 0.0)
            try:
                self._start_process(worker, *self._incoming_with)
            except OSError as error:
                self._give_up_reload(f"cannot start a new worker process: {error}")
                break

    def _take_over_if_all_ready(self) -> None:
        """Once every new worker of a reload serves, the old ones stop gracefully."""
        incoming = self._incoming
        if incoming is None or not all(worker.ready for worker in incoming.values()):
            return
        old, old_timeout = self._workers, self._graceful_timeout
        self._workers, self._incoming = incoming, None
        self._stuck_replacements = {}  # (a new set, new code: no strikes of the old)
        self._configuration, self._graceful_timeout, self._worker_timeout = self._incoming_with
        self._count = len(incoming)
        # Replacements for --max-requests were of the old set.
        successors, self._successors = list(self._successors.values()), {}
        retiring = [worker for worker in [*old.values(), *successors] if worker.process]
        for worker in old.values():
            _cancel(worker.restart)
            worker.restart = None
        self._stop_workers(retiring, old_timeout)
        if not self._announced:  # (a reload before the first start served)
            self._announce_if_all_ready()
        _log.info(
            "Reloaded: {count} new worker process(es) serve; {old} old one(s) finish"
            " their requests (up to {timeout}s)",
            count=len(incoming),
            old=len(retiring),
            timeout=old_timeout,
        )
        self._reload_over()

    def _reload_timed_out(self) -> None:
        self._reload_deadline = None
        if self._incoming is None:
            return
        starting = [str(worker.number) for worker in self._incoming.values() if not worker.ready]
        self._give_up_reload(
            f"new worker(s) {', '.join(starting)} did not serve within {RELOAD_TIMEOUT:g}s"
            " (importing the applications?)"
        )

    def _give_up_reload(self, problem: str) -> None:
        """Stop a reload's new workers; the old ones keep serving."""
        _log.error("Reload refused, the old workers keep serving: {error}", error=problem)
        self._drop_incoming()
        self._reload_over()

    def _drop_incoming(self) -> None:
        """Stop the new workers of the reload in progress."""
        incoming, self._incoming = self._incoming or {}, None
        _cancel(self._reload_deadline)
        self._reload_deadline = None
        started = [worker for worker in incoming.values() if worker.process is not None]
        self._stop_workers(started, self._incoming_with[1])

    def _stop_workers(self, workers: Sequence[_Worker], graceful_timeout: float) -> None:
        """Stop ``workers``: gracefully those that serve, at once those starting.

        One that serves may have taken connections: it finishes them. One that does
        not serve yet holds none, may be stuck importing, and reads no command
        before its import ends: it is killed (else, once started, it would serve an
        old configuration).
        """
        self._retire([worker for worker in workers if worker.ready], graceful_timeout)
        for worker in workers:
            if not worker.ready:
                self._retiring.append(worker)
                self._kill(worker)

    def _reload_over(self) -> None:
        _cancel(self._reload_deadline)
        self._reload_deadline = None
        reloading, self._reloading = self._reloading, None
        if reloading is not None:
            reloading.callback(None)

    def _retire(self, workers: Sequence[_Worker], graceful_timeout: float) -> None:
        """Tell ``workers`` to stop gracefully; those still running after it are killed."""
        self._send(b"stop", workers)
        for worker in workers:
            self._retiring.append(worker)
            worker.deadline = self._reactor.callLater(
                graceful_timeout + KILL_GRACE, self._kill, worker, late=True
            )

    def add_worker(self) -> None:
        """One worker more (SIGTTIN, as gunicorn's), up to :data:`MAX_WORKERS`.

        Until the next reload, which starts as many as the configuration asks.
        """
        if not self._may_resize("SIGTTIN"):
            return
        if self._count >= MAX_WORKERS:
            _log.warn("SIGTTIN: already {count} workers, the most there may be", count=self._count)
            return
        self._count += 1
        number = self._count
        _log.info(
            "SIGTTIN: starting worker {number} ({count} workers from now on)",
            number=number,
            count=self._count,
        )
        self._spawn(self._workers.setdefault(number, _Worker(number, 0.0)))

    def remove_worker(self) -> None:
        """One worker fewer (SIGTTOU, as gunicorn's), down to one.

        The last slot's worker stops gracefully, as a replaced one does (killed if it
        outstays the graceful timeout); its replacement, if one is starting, is
        stopped too. Until the next reload, which starts as many as the
        configuration asks.
        """
        if not self._may_resize("SIGTTOU"):
            return
        if self._count <= 1:
            _log.warn("SIGTTOU: one worker is the fewest there may be")
            return
        number = self._count
        self._count -= 1
        worker = self._workers.pop(number, None)
        stopping = [] if worker is None else [worker]
        successor = self._successors.pop(number, None)
        if successor is not None:
            stopping.append(successor)
        for ending in stopping:
            _cancel(ending.restart)
            ending.restart = None
        _log.info(
            "SIGTTOU: stopping worker {number} (pid {pid}; {count} workers from now on)",
            number=number,
            pid=worker.pid if worker is not None and worker.process else "-",
            count=self._count,
        )
        self._stop_workers(
            [ending for ending in stopping if ending.process is not None], self._graceful_timeout
        )
        # The first start may have waited only for the worker just removed.
        self._announce_if_all_ready()

    def _may_resize(self, signal_name: str) -> bool:
        """Whether the number of workers may change now; the log says why not."""
        if not self.running or self._stopping is not None:
            return False
        if self._incoming is not None:
            _log.warn(
                "{signal} ignored: a reload is in progress (it starts as many workers as"
                " the configuration asks)",
                signal=signal_name,
            )
            return False
        return True

    def keep_configuration(self) -> None:
        """Have every worker reopen its access log and read its certificates again.

        What a refused reload still does (logrotate's SIGHUP, certbot's renewal).
        """
        self._send(b"keep")

    def reopen_access_log(self) -> None:
        """Have every worker reopen its access log file (SIGUSR1's work)."""
        self._send(b"reopen")

    def stopService(self) -> Deferred[None]:
        """Stop listening, stop the workers gracefully; kill those that outstay it.

        The Deferred fires once every worker process has ended.
        """
        super().stopService()
        if self._stopping is not None:
            return self._stopping
        for worker in self._workers.values():
            _cancel(worker.restart)
            worker.restart = None
        if self._incoming is not None:
            self._retiring.extend(self._incoming.values())
            self._incoming = None
            self._reload_over()  # (no reload follows: not running)
        closed = self._close_ports()
        running = self._everyone()
        ended: Deferred[None] = succeed(None)
        if running:
            _log.info(
                "Shutting down: stopping {count} worker process(es), each waiting up to"
                " {timeout}s for its requests in progress",
                count=len(running),
                timeout=self._graceful_timeout,
            )
            ended = self._ended_all = Deferred()
            self._kill_call = self._reactor.callLater(
                self._graceful_timeout + KILL_GRACE, self._kill_remaining
            )
        self._send(b"stop")
        if self._stop_now_asked:
            self._send(b"stop-now")
        # Those still starting (a reload's, a restart's) hold no connection and read
        # no command before their import ends: killed, or the stop waits for them.
        for worker in running:
            if not worker.ready:
                self._kill(worker)
        stopping: Deferred[Any] = DeferredList([closed, ended])
        self._stopping = stopping
        stopping.addBoth(self._stop_over)  # (at once when nothing was running)
        return stopping

    def _stop_over(self, result: object) -> None:
        _cancel(self._kill_call)
        self._kill_call = None
        self._stopping = None
        self._workers.clear()
        self._successors.clear()
        for worker in self._retiring:
            _cancel(worker.deadline)
        self._retiring.clear()

    def stop_now(self) -> None:
        """End a graceful stop at once: each worker drops what it still serves.

        Asked for before the stop began (two signals in one reactor pass), it is
        remembered and sent with the stop.
        """
        self._stop_now_asked = True
        if self._stopping is None:
            return
        _log.warn("Stop requested again; the workers drop their connections now")
        self._send(b"stop-now")

    def _kill_remaining(self) -> None:
        self._kill_call = None
        for worker in self._everyone():
            self._kill(worker, late=True)

    def _kill(self, worker: _Worker, *, late: bool = False) -> None:
        _cancel(worker.deadline)
        worker.deadline = None
        if worker.process is None:
            return
        if late:
            _log.warn(
                "Worker {number} (pid {pid}) did not stop in time; killing it",
                number=worker.number,
                pid=worker.pid,
            )
        with contextlib.suppress(ProcessExitedAlready):
            worker.process.signalProcess("KILL")


def pinned_directories(configuration: Mapping[str, Any]) -> dict[str, str]:
    """Where a set of workers builds and serves, fixed when the set starts.

    ``build_directory`` is the ``start_directory`` and ``serve_directory`` the
    ``run_directory`` (twistd's ``--rundir``, if any) as they lead at that moment,
    links resolved: a link a deployment moves to the next release is followed by a
    reload, and a worker of the set started again later (it died, or reached
    --max-requests) stays with the release its set serves.
    """
    pinned = {}
    start = configuration.get("start_directory")
    if isinstance(start, str):
        pinned["build_directory"] = os.path.realpath(start)
    run = configuration.get("run_directory")
    if isinstance(run, str) and run:
        pinned["serve_directory"] = os.path.realpath(run)
    return pinned


def _cancel(call: IDelayedCall | None) -> None:
    """Cancel ``call`` if it is still to come."""
    if call is not None and call.active():
        call.cancel()


def mebibytes(size: int) -> str:
    """``size`` bytes in MiB, as the log lines of max_worker_memory show them (``612.4``)."""
    return f"{size / 2**20:.1f}"


def _restart_delay(failures: int) -> float:
    """Seconds before a worker is started again, after ``failures`` young ends in a row."""
    if failures <= 0:
        return 0.0
    return float(min(FIRST_RESTART_DELAY * 2 ** (failures - 1), MAX_RESTART_DELAY))


def _how_it_ended(reason: BaseException) -> str:
    """A few words on how a process ended, from Twisted's ProcessDone/Terminated."""
    if isinstance(reason, ProcessTerminated) and reason.signal is not None:
        try:
            name = signal.Signals(reason.signal).name
        except ValueError:
            name = f"signal {reason.signal}"
        if reason.signal == signal.SIGKILL:
            # What the kernel's out-of-memory killer sends (gunicorn says the same).
            return f"was killed by {name} (out of memory?)"
        return f"was killed by {name}"
    code = getattr(reason, "exitCode", None)
    return f"exited with status {code if code is not None else 0}"
