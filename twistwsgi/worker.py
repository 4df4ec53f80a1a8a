"""One worker process of ``--workers``: the whole server, on sockets it inherits.

The supervisor (:mod:`twistwsgi.supervisor`) starts it as ``python -m
twistwsgi.worker`` with the master's options on its standard input; it is never run
by hand. It builds its configuration from those options as the master did, adopts the
listening sockets it inherited (wrapping TLS ones with the endpoint's certificate),
and serves exactly as a single-process server does: the same signals (SIGTERM and
SIGINT stop it gracefully, a second one at once; SIGHUP reloads; SIGUSR1 reopens the
access log), plus the same commands from the master over the control pipe. Its log
events go to the master over the report pipe, and with a ``worker_timeout`` a
heartbeat from its event loop (:class:`Heartbeat`); SIGUSR2 then writes the stacks
of its threads to the dump pipe (the master sends it to a worker whose heartbeat
stopped, before it kills it). It stops when the master is gone: on the end of the
control pipe, or by :class:`MasterWatch`'s thread when its event loop cannot read
that.

With ``--check`` it only builds the configuration and the mounts (importing the
applications) and exits: 0, or 2 with one line on stderr, which the master shows as
its own start-up error before any worker starts.

Like :mod:`twistwsgi.cli`, this module installs and runs the global reactor (in
:func:`main` only).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, NoReturn, Protocol

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorSocket,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.process import ProcessReader
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, eventAsText, formatTime, globalLogBeginner
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from twistwsgi.config import proxy_protocol_inner
from twistwsgi.proxy_protocol import proxy_protocol_factory
from twistwsgi.shared_limits import SharedLimits
from twistwsgi.supervisor import (
    CONTROL_FD,
    FIRST_LISTENER_FD,
    PAYLOAD_VARIABLE,
    REPORT_FD,
    mebibytes,
)
from twistwsgi.wsgi import stuck_threads

__all__ = ["Heartbeat", "InheritedEndpoint", "MasterWatch", "ReportPipe", "main"]

_log = Logger(namespace="twistwsgi.worker")

#: Seconds between a worker's metrics reports to its master (a scrape sees counts
#: at most this old).
METRICS_INTERVAL = 1.0


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """Listens on a socket this process inherited (already bound and listening).

    Args:
        reactor: adopts the socket.
        fileno: the inherited descriptor; it is closed once adopted (the port holds
            its own duplicate), so the socket ends with the port.
        tls_options: the context factory of an ``ssl:`` listener: connections are
            then TLS, as ``listenSSL`` makes them.
        proxy_protocol: each connection opens with a PROXY protocol header (a
            ``haproxy:`` listener), read before TLS.

    Attributes:
        tls_options: as given (a reload swaps its context for renewed certificates).
    """

    def __init__(
        self,
        reactor: IReactorSocket,
        fileno: int,
        tls_options: Any | None = None,
        *,
        proxy_protocol: bool = False,
    ) -> None:
        self._reactor = reactor
        self._fileno = fileno
        self.tls_options = tls_options
        self._proxy_protocol = proxy_protocol

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        """Adopt the socket with ``protocolFactory`` (wrapped in TLS if it has TLS)."""
        factory = protocolFactory
        if self._proxy_protocol:
            clock: Any = self._reactor
            factory = proxy_protocol_factory(protocolFactory, self.tls_options, clock)
        elif self.tls_options is not None:
            factory = TLSMemoryBIOFactory(self.tls_options, False, protocolFactory)
        try:
            with socket.socket(fileno=os.dup(self._fileno)) as probe:
                family = probe.family
            port: _SharedTCPPort | _SharedUNIXPort
            # What reactor.adoptStreamPort does, with ports that take turns.
            if family == socket.AF_UNIX:
                port = _SharedUNIXPort._fromListeningDescriptor(
                    self._reactor, self._fileno, factory
                )
            else:
                port = _SharedTCPPort._fromListeningDescriptor(
                    self._reactor, self._fileno, family, factory
                )
            port.startListening()
        except Exception:
            return fail()
        os.close(self._fileno)
        return succeed(port)


class _TakingTurns:
    """One accept each time the socket is readable, for a port shared with others.

    Twisted's port accepts up to 100 connections each time (then as many as it last
    found): the worker that wakes first takes a whole burst, and with keep-alive one
    worker served all 50 of a benchmark's connections while the other idled.
    Accepting one at a time lets every worker woken by the same readiness take its
    turn, as nginx's default ``multi_accept off`` does; a busy worker comes back to
    the socket less often, so it takes fewer.
    """

    @property
    def numberAccepts(self) -> int:
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        pass  # (Twisted adapts it after every round)


class _SharedTCPPort(_TakingTurns, tcp.Port):
    """A TCP port that takes turns with the other workers."""


class _SharedUNIXPort(_TakingTurns, unix.Port):
    """A UNIX-socket port that takes turns with the other workers, on the master's socket.

    Twisted's own adopted UNIX port treats the socket as its own: it sets its mode to
    0666 and listens again with a backlog of 50 when it starts, and shuts the socket
    down (for every process holding it) and removes its path when it stops. One
    worker stopping then left the others spinning on a dead socket and the path
    gone. This one takes the socket as the master made it (its mode=, backlog= and
    lock) and only closes its own descriptor; the master removes the path.
    """

    _shouldShutdown = False

    def startListening(self) -> None:
        """Serve on the inherited socket as it is."""
        tcp._reservedFD.reserve()  # (Twisted's spare descriptor for EMFILE, as it does)
        inherited = self._preexistingSocket
        assert inherited is not None
        self._preexistingSocket = None
        self.factory.doStart()  # type: ignore[union-attr]
        self.connected = True
        self.socket = inherited
        self.fileno = inherited.fileno  # type: ignore[method-assign]
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        """Close this worker's descriptor; the path and lock are the master's."""
        tcp.Port.connectionLost(self, reason)


@implementer(ILogObserver)
class ReportPipe:
    """Writes a worker's reports to the master, one JSON object per line.

    Log events come from any thread (an application's ``wsgi.errors``, a worker
    thread's failure): each line is written whole under a lock. Once the master is
    gone, log events go to ``fallback`` (stderr) instead, as lines of twistd's format
    naming worker ``number``.
    """

    def __init__(self, stream: IO[bytes], fallback: IO[str] | None = None, number: int = 0) -> None:
        self._stream = stream
        self._number = number
        self._fallback = fallback if fallback is not None else sys.__stderr__ or sys.stderr
        self._master_gone = False
        self._lock = threading.Lock()

    def send(self, report: Mapping[str, Any]) -> None:
        """Write one report; once the master is gone, log text goes to stderr."""
        line = json.dumps(report, ensure_ascii=False).encode("utf-8", "replace") + b"\n"
        with self._lock:
            if not self._master_gone:
                try:
                    # A raw write may be short (a signal during a blocked write): a
                    # line cut there would garble the next one too.
                    view = memoryview(line)
                    while view:
                        view = view[self._stream.write(view) or 0 :]
                    return
                except (BrokenPipeError, ValueError):
                    # The master was killed (the control pipe's end stops this
                    # worker): what it logs while it drains goes where it can.
                    self._master_gone = True
            event = report.get("log")
            if isinstance(event, dict):
                logged_at = event.get("time")
                when = formatTime(logged_at if isinstance(logged_at, float) else time.time())
                system = event.get("system") or f"{event.get('namespace')}#{event.get('level')}"
                self._fallback.write(
                    f"{when} [{system} worker {self._number}] {event.get('text', '')}\n"
                )
                self._fallback.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        """A log observer: send ``event``'s level, namespace, text, time and system."""
        level = event.get("log_level")
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        self.send(
            {
                "log": {
                    "level": getattr(level, "name", "info"),
                    "namespace": event.get("log_namespace", "twistwsgi.worker"),
                    "text": text,
                    "time": event.get("log_time"),
                    "system": event.get("log_system"),
                }
            }
        )


#: Seconds between two looks at how many requests a worker has answered.
REQUEST_COUNT_INTERVAL = 1.0


class _Answered(Protocol):
    responses: int


def request_limit(max_requests: int, jitter: int) -> int:
    """This worker's share of requests: ``max_requests`` plus 0 to ``jitter`` at random.

    The random part spreads over time the replacements of workers started together
    (gunicorn's --max-requests-jitter).
    """
    return max_requests + random.randint(0, jitter)


def resident_memory() -> int | None:
    """This process's resident memory in bytes (ps's RSS column), or None if unknown.

    Linux's ``/proc/self/statm`` (its second field counts resident pages). Where
    there is none, the peak that ``getrusage`` reports stands in: CPython seldom
    gives the system back what it took, so for a process that grows the two are
    close.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        pass
    try:
        import resource  # noqa: PLC0415 - POSIX only, and only without /proc

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # (macOS: bytes)


class ReplacementWatch:
    """Asks the master for a replacement of this worker, once a second, when it is due.

    Four reasons, looked at together (nothing is added to each request), in this
    order (the first that holds is reported):

    - ``threads``: half of them, rounded up, are held by requests answered 504 past
      ``app_timeout`` (``{"recycle": count, "stuck": n}``). A Python thread cannot be
      stopped, so a worker whose application hangs loses capacity with each;
      gunicorn kills such a worker (``--timeout``). The replacement starts, then
      this worker stops accepting, finishes its other requests and exits, the stuck
      threads with it (killed at the end of its graceful timeout at the latest).
    - ``limit``: gunicorn's ``--max-requests``: the factory's count of ended
      exchanges has reached it (``{"recycle": count}``). Before the two below, whose
      replacements the master holds back while another goes on: a worker past its
      max_requests is not held back for being over them too.
    - ``memory_limit``: ``max_worker_memory``, uWSGI's ``reload-on-rss``: the
      process's resident memory is above it (``{"recycle": count, "memory": bytes,
      "memory_limit": bytes}``). Above it at the first look, it is said in the log
      too: a fresh worker over the limit is replaced again and again.
    - ``lifetime``: ``max_worker_lifetime``, uWSGI's ``max-worker-lifetime``: the
      worker has served that many seconds (``{"recycle": count, "lifetime": s}``),
      on ``monotonic``'s clock (a step of the wall clock, a VM resumed, would make
      every worker due at once).

    The report goes at each look until the master stops this worker (it acts on the
    first, when the worker is one of those serving).
    """

    def __init__(
        self,
        counted: _Answered,
        reports: ReportPipe,
        clock: IReactorTime,
        *,
        limit: int | None = None,
        threads: int = 0,
        stuck: Callable[[], int] = stuck_threads,
        memory_limit: int | None = None,
        lifetime: float | None = None,
        resident: Callable[[], int | None] = resident_memory,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counted = counted
        self._limit = limit
        self._stuck_threshold = (threads + 1) // 2 if threads else None  # at least one
        self._memory_limit = memory_limit
        self._lifetime = lifetime
        self._reports = reports
        self._stuck = stuck
        self._resident = resident
        self._monotonic = monotonic
        self._started = monotonic()
        self._first_look = True
        self._loop = LoopingCall(self._look)
        self._loop.clock = clock

    def start(self) -> None:
        """Look from now on (the lifetime counts from now too)."""
        self._started = self._monotonic()
        self._loop.start(REQUEST_COUNT_INTERVAL, now=False)

    def _look(self) -> None:
        answered = self._counted.responses
        threshold = self._stuck_threshold
        if threshold is not None:
            stuck = self._stuck()
            if stuck >= threshold:
                self._reports.send({"recycle": answered, "stuck": stuck})
                return
        if self._limit is not None and answered >= self._limit:
            self._reports.send({"recycle": answered})
            return
        first_look, self._first_look = self._first_look, False
        memory_limit = self._memory_limit
        if memory_limit is not None:
            resident = self._resident()
            if resident is not None and resident > memory_limit:
                if first_look:
                    _log.warn(
                        "This worker uses {used} MiB of memory at its start, more than"
                        " max_worker_memory ({limit} MiB): it will be replaced, and so"
                        " will its replacement; set max_worker_memory above what a worker"
                        " uses once warm",
                        used=mebibytes(resident),
                        limit=mebibytes(memory_limit),
                    )
                self._reports.send(
                    {"recycle": answered, "memory": resident, "memory_limit": memory_limit}
                )
                return
        lifetime = self._lifetime
        if lifetime is not None and self._monotonic() - self._started >= lifetime:
            self._reports.send({"recycle": answered, "lifetime": lifetime})


#: Seconds between two heartbeats of a worker to its master, at most (a third of the
#: worker_timeout if that is shorter).
HEARTBEAT_INTERVAL = 1.0


def heartbeat_interval(worker_timeout: float) -> float:
    """Seconds between two heartbeats: three or more are sent within ``worker_timeout``."""
    return min(HEARTBEAT_INTERVAL, worker_timeout / 3)


class Heartbeat:
    """Sends ``{"alive": true}`` to the master from the event loop, at each interval.

    Only the event loop sends it, so its absence tells the master that the loop is
    blocked (an application call that never returns under ``--threads 0``, a C call
    holding the GIL, a deadlock): past ``worker_timeout`` seconds without a report
    from the loop (log events, which any thread sends, do not count), the master
    dumps this worker's stacks (SIGUSR2) and kills it. With a ``worker_timeout`` of 0
    nothing is sent.
    """

    def __init__(self, reports: ReportPipe, clock: IReactorTime, worker_timeout: float) -> None:
        self._worker_timeout = worker_timeout
        self._loop = LoopingCall(reports.send, {"alive": True})
        self._loop.clock = clock

    def start(self) -> None:
        """Beat from now on (the report that this worker serves was the first sign)."""
        if self._worker_timeout <= 0:
            return
        self._loop.start(heartbeat_interval(self._worker_timeout), now=False).addErrback(
            lambda failure: _log.failure("Cannot send the heartbeat", failure)
        )


def take_dump_signal(dump_fd: int | None, worker_timeout: float) -> None:
    """Have SIGUSR2 write every thread's Python stack to ``dump_fd``, for the master.

    faulthandler's handler is C code: it writes even while the thread that blocks
    the event loop holds the GIL, where a Python handler would never run. Called
    once the applications are imported, so it replaces a handler of theirs. Without
    a ``worker_timeout`` (or a master that gave no dump pipe) SIGUSR2 is left alone,
    and the pipe closed.
    """
    if dump_fd is None:
        return
    if worker_timeout <= 0:
        os.close(dump_fd)
        return
    # Not inherited by the programs the application runs: the master reads the
    # pipe to its end, which one of those would hold back.
    os.set_inheritable(dump_fd, False)
    faulthandler.register(signal.SIGUSR2, file=dump_fd, all_threads=True, chain=False)


#: Seconds between two looks of a worker's :class:`MasterWatch` at its parent process.
MASTER_LOOK_INTERVAL = 1.0


class MasterWatch:
    """Ends this worker once it has outlived its master by more than ``allowance`` seconds.

    The end of the control pipe stops a worker gracefully, but only when its event
    loop reads it: a worker whose loop is blocked (an application that never
    returns under ``--threads 0``, a call stuck in the kernel) or that is still
    importing its applications never does, and would go on holding the listening
    sockets, so that no new server could bind the port, for as long as it lives.
    A thread of its own looks at the parent process once a second: once it is no
    longer ``master`` (the orphan was given to init or to a subreaper) and
    ``allowance`` seconds have passed since (the graceful timeout and the time the
    master would have given before killing it), the process exits with status 1 at
    once, as the master would have killed it.

    Args:
        master: the master's process id.
        allowance: seconds a worker may outlive its master (it stops gracefully
            meanwhile if its event loop runs).
        number: this worker's slot, for the line it leaves on stderr.
        parent: the parent's process id now (``os.getppid``).
        monotonic: a clock that the system's time does not move.
        end: ends the process with a message (writes it to stderr, ``os._exit(1)``).
    """

    def __init__(
        self,
        master: int,
        allowance: float,
        *,
        number: int = 0,
        parent: Callable[[], int] = os.getppid,
        monotonic: Callable[[], float] = time.monotonic,
        end: Callable[[str], object] | None = None,
    ) -> None:
        self._master = master
        self._allowance = allowance
        self._number = number
        self._parent = parent
        self._monotonic = monotonic
        self._end = end if end is not None else _end_orphan
        self._gone_since: float | None = None

    def look(self) -> None:
        """Note when the master went; past the allowance since, end this process."""
        if self._gone_since is None:
            if self._parent() == self._master:
                return
            self._gone_since = self._monotonic()
        if self._monotonic() - self._gone_since >= self._allowance:
            self._end(
                f"twistwsgi worker {self._number} (pid {os.getpid()}): the master process"
                f" (pid {self._master}) is gone and this worker did not stop within"
                f" {self._allowance:g}s (its event loop is blocked?); exiting"
            )

    def start(self) -> None:
        """Look once a second from now on, in a thread that never holds the process up."""
        threading.Thread(target=self._run, name="twistwsgi master watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(MASTER_LOOK_INTERVAL)
            self.look()


def _end_orphan(message: str) -> None:
    """Write ``message`` to stderr and end the process at once.

    Straight to the descriptor: the event loop, or a thread holding the lock of
    the log, may be the very thing that is stuck.
    """
    with contextlib.suppress(OSError):
        os.write(2, message.encode("utf-8", "replace") + b"\n")
    os._exit(1)


class _Control:
    """Reads the master's commands from the control pipe, one a line, and carries them out."""

    def __init__(
        self,
        reactor: Any,
        actions: Mapping[bytes, Callable[[], object]],
        seat: Callable[[int], object] | None = None,
    ) -> None:
        self._reactor = reactor
        self._actions = actions
        self._seat = seat
        self._buffer = b""

    def childDataReceived(self, name: str, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            command, _, argument = line.strip().partition(b" ")
            action = self._actions.get(line.strip())
            if action is not None:
                action()
            elif command == b"seat" and argument.isdigit() and self._seat is not None:
                # A seat in the shared conn_limit counts, freed after this process
                # started without one.
                self._seat(int(argument))
            else:
                _log.warn("Unknown command from the master: {line!r}", line=line[:100])

    def childConnectionLost(self, name: str, reason: Failure) -> None:
        # The master is gone (killed, or crashed): stop as on SIGTERM.
        if self._reactor.running and not self._reactor._stopped:
            _log.warn("The master process is gone; stopping")
            self._reactor.stop()


def _fail(message: str, reports: ReportPipe | None) -> NoReturn:
    """End a worker that cannot start: the message goes to the master, exit 2."""
    if reports is None:
        from twistwsgi.cli import exit_with_error  # noqa: PLC0415

        exit_with_error(message)
    reports.send({"error": message})
    raise SystemExit(2)


def _read_payload() -> dict[str, Any]:
    """Read what the master sent on standard input, then leave /dev/null there.

    /dev/null, as a daemon has: the application may read standard input, and a
    free descriptor 0 would be taken by the next file opened (the reactor's own).
    """
    if os.environ.pop(PAYLOAD_VARIABLE, None) is None:
        sys.stderr.write("twistwsgi.worker is started by `twistd wsgi --workers N`, not by hand\n")
        raise SystemExit(2)
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    payload: dict[str, Any] = json.loads(b"".join(chunks))
    return payload


def _change_directory(path: str, reports: ReportPipe | None) -> None:
    """Change to directory ``path``, or end as a worker that cannot start."""
    try:
        os.chdir(path)
    except OSError as error:
        _fail(f"cannot change to directory {path!r}: {error.strerror}", reports)


def _shared_limits(given: list[Any] | None) -> SharedLimits | None:
    """The rate_limit and conn_limit counts the master shares, from ``[descriptor, seat]``.

    Without them (a master that could not make them, or whose tables another
    version laid out, as after a reload into new code) this worker counts its own
    clients, and says so.
    """
    if given is None:
        return None
    descriptor, seat = given
    try:
        limits = SharedLimits(descriptor, seat)
    except (OSError, ValueError) as error:
        os.close(descriptor)
        _log.warn(
            "Cannot use the rate_limit and conn_limit counts the workers share ({error}):"
            " this worker counts its own clients",
            error=error,
        )
        return None
    # The tables keep a descriptor of their own; this one would be inherited by
    # the programs the application starts (dup2 made it inheritable).
    os.close(descriptor)
    if seat is None:
        _log.warn(
            "More worker processes than seats in the shared conn_limit counts: this"
            " worker counts its own clients' requests in progress until a seat frees"
            " (rate_limit is shared)"
        )
    return limits


def _encoded(text: str | None) -> bytes | None:
    """The configuration file's text as the master sent it, as the bytes it was."""
    return text.encode("utf-8") if text is not None else None


def main(arguments: list[str] | None = None) -> None:
    """Run one worker (or, with ``--check``, check the configuration) and exit."""
    check = "--check" in (sys.argv[1:] if arguments is None else arguments)
    # The master's signals (gunicorn's): systemctl kill and a KillMode=control-group
    # stop send them to every process of the unit, and their default action would
    # stop (freeze) this one.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    payload = _read_payload()
    # Before the applications import (which may hang too): see MasterWatch. (A
    # master of an older release, twistwsgi upgraded under it, does not say: its
    # parent then, and the default graceful timeout and kill grace.)
    MasterWatch(
        payload.get("master_pid", os.getppid()),
        payload.get("orphan_allowance", 35.0),
        number=payload["number"],
    ).start()
    if payload.get("ignore_interrupts"):
        # Started by a master that ignores SIGINT (a shell's background job): a
        # Ctrl-C for the shell must not end this worker, even while it imports.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:] = payload["sys_path"]
    # Imported only now: the master's import path is in place.
    from twistwsgi import cli  # noqa: PLC0415
    from twistwsgi.config import ConfigError  # noqa: PLC0415
    from twistwsgi.service import make_service  # noqa: PLC0415

    # SIGHUP and SIGUSR1 end a process by default, and systemctl kill sends them to
    # every process of the unit too: held while the applications import (the first
    # start would fail), acted on once this worker runs.
    cli.hold_hangups_until_running()

    reports = None
    if not check:
        reports = ReportPipe(os.fdopen(REPORT_FD, "wb", buffering=0), number=payload["number"])
        globalLogBeginner.beginLoggingTo([reports], redirectStandardIO=True)
    from twisted.internet import reactor as installed  # noqa: PLC0415 - this process's own

    reactor: Any = installed
    options = dict(payload["options"])
    if payload["listen"]:
        # The listeners are the master's, whatever the file says now (a changed
        # listen waits for a restart): what follows from them (https_redirect =
        # "on") too.
        options["listen"] = list(payload["listen"])
    # It builds where the master's start directory led when this worker's set
    # started (the server's start, or the reload that started them), as a single
    # process builds before twistd's --rundir takes it elsewhere. A link a
    # deployment moves to each release is followed by a reload only: a worker
    # started again after a refused reload builds the release that serves. It
    # serves from there too, or from the --rundir.
    _change_directory(payload["build_directory"], reports)
    try:
        config = cli.load_config(options, _encoded(payload.get("config_content")))
        if check:
            # Its one-line errors go to stderr (exit 2), where the master reads them.
            for description in payload["listen"]:  # (their TLS settings)
                cli.endpoint_tls_options(reactor, description, config)
            cli.check_mounts(reactor, config, [])
            raise SystemExit(0)
        cli.raise_open_files_limit()
        cli.settle_temporary_directory()
        endpoints: list[tuple[str, IStreamServerEndpoint]] = []
        for index, description in enumerate(payload["listen"]):
            tls = cli.endpoint_tls_options(reactor, description, config)
            fileno = FIRST_LISTENER_FD + index
            proxy_protocol = proxy_protocol_inner(description) is not None
            endpoints.append(
                (
                    description,
                    InheritedEndpoint(reactor, fileno, tls, proxy_protocol=proxy_protocol),
                )
            )

        def start_error(message: str) -> None:
            _fail(message, reports)

        shared_limits = _shared_limits(payload.get("limits"))

        service = make_service(
            config,
            reactor=reactor,
            endpoints=endpoints,
            on_start_error=start_error,
            shared_limits=shared_limits,
            serve_metrics=False,  # (the master serves the sum)
            count_metrics=bool(payload.get("count_metrics")),
        )
    except ConfigError as error:
        _fail(str(error), reports)
    if payload.get("serve_directory"):
        _change_directory(payload["serve_directory"], reports)
    assert reports is not None
    service.startService()
    ReplacementWatch(
        service.factory,
        reports,
        reactor,
        limit=(
            request_limit(config.max_requests, config.max_requests_jitter)
            if config.max_requests
            else None
        ),
        threads=config.threads,
        memory_limit=config.max_worker_memory or None,
        lifetime=config.max_worker_lifetime or None,
    ).start()

    def stop() -> None:
        if not reactor._stopped:  # (a SIGTERM may have begun the stop already)
            reactor.stop()

    def keep() -> None:
        service.reopen_access_log()
        cli.reload_certificates(reactor, endpoints, service.config)

    commands: dict[bytes, Callable[[], object]] = {
        b"stop": stop,
        b"stop-now": service.stop_now,
        b"keep": keep,
        b"reopen": service.reopen_access_log,
    }
    if service.factory.metrics is not None:
        # What it counted goes to the master every second, and once more at the end.
        def send_metrics() -> None:
            reports.send({"metrics": service.metrics_snapshot()})

        LoopingCall(send_metrics).start(METRICS_INTERVAL, now=True).addErrback(
            lambda failure: _log.failure("Cannot send metrics", failure)
        )
        reactor.addSystemEventTrigger("after", "shutdown", send_metrics)
    ProcessReader(
        reactor,
        _Control(reactor, commands, shared_limits.take_seat if shared_limits else None),
        "control",
        CONTROL_FD,
    )
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    cli.serve_in_this_process(reactor, service, options, endpoints)
    # (A master of an older release gives neither.)
    worker_timeout = float(payload.get("worker_timeout") or 0.0)
    reactor.callWhenRunning(reports.send, {"ready": True})
    reactor.callWhenRunning(Heartbeat(reports, reactor, worker_timeout).start)
    take_dump_signal(payload.get("dump_fd"), worker_timeout)
    reactor.run()


if __name__ == "__main__":
    main()
