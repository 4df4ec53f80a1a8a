"""Assembling the running server: handler, factory, listeners, worker threads, shutdown.

Two entry points for library users (both documented in ``docs/library.md``):

* :func:`make_factory` builds the Twisted server factory for a WSGI application, to
  listen with any endpoint: ``serverFromString(reactor, "tcp:8080").listen(factory)``.
* :class:`ServerService` is an ``IService`` that listens on endpoints, runs the worker
  threads and shuts down gracefully; it drops into a ``MultiService`` beside other
  Twisted services. :func:`make_service` builds one from a
  :class:`~twistwsgi.config.ServerConfig`.

Graceful shutdown (``stopService``, which ``twistd`` calls on SIGTERM and SIGINT):
stop accepting, close idle keep-alive connections, let in-flight requests finish (their
responses say ``Connection: close``) for up to the graceful timeout, drop whatever is
left, then stop the worker threads.

Nothing here imports the global reactor; it is passed in.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorCore,
    IReactorFromThreads,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistwsgi.access_log import COMBINED, AccessLog
from twistwsgi.config import SETTINGS, ConfigError, ServerConfig, host_verification
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.exchange import Handler
from twistwsgi.http.protocol import HTTPFactory, Refusal, ResponseLog
from twistwsgi.http.settings import HttpSettings
from twistwsgi.log_format import LogFormat
from twistwsgi.metrics import (
    MetricsHandler,
    RequestMetrics,
    UpstreamState,
    mount_labels,
    render,
)
from twistwsgi.response_spool import MAX_RESPONSE_BUFFER
from twistwsgi.routing import HostGuard, HostTable, Mount, MountTable, Router, RoutingTable
from twistwsgi.shared_limits import SharedLimits
from twistwsgi.site import MountBuilder, SiteBuilder, certificate_check, close_handlers
from twistwsgi.threads import ThreadPoolLike, WorkerPool
from twistwsgi.wsgi import (
    WSGIApplication,
    WSGIHandler,
    busy_threads,
    running_request,
    waiting_requests,
)

__all__ = [
    "ListenError",
    "ServerService",
    "StartError",
    "make_factory",
    "make_service",
    "standard_builders",
]

_log = Logger(namespace="twistwsgi.service")


class StartError(Exception):
    """The server could not start; the message is one line naming the problem."""


class ListenError(StartError):
    """An endpoint could not listen; the message is one line naming it."""


class _Reactor(IReactorTime, IReactorFromThreads, IReactorCore):
    """The reactor interfaces the server uses (for type annotations only)."""


def make_factory(
    app: WSGIApplication,
    *,
    reactor: Any,
    threadpool: ThreadPoolLike | None,
    settings: HttpSettings | None = None,
    response_log: ResponseLog | None = None,
    script_name: bytes = b"",
    trusted_proxies: Sequence[str] = (),
    request_buffering: bool = False,
    response_buffering: bool = True,
    max_response_buffer: int = MAX_RESPONSE_BUFFER,
    thread_queue_timeout: float = 0.0,
    app_timeout: float = 0.0,
) -> HTTPFactory:
    """Build the server factory that answers every request with ``app``.

    Args:
        app: the WSGI application.
        reactor: provides ``IReactorTime`` and ``IReactorFromThreads``.
        threadpool: where the application runs (anything with ``callInThread``: a
            started :class:`~twistwsgi.threads.WorkerPool` or Twisted ``ThreadPool``);
            ``None`` runs it in the reactor thread.
        settings: HTTP limits and timeouts (defaults if ``None``).
        response_log: called for each ended exchange, e.g. an
            :class:`~twistwsgi.access_log.AccessLog`.
        script_name: mount the application under this path prefix (``b"/app"``):
            it gets what is below it, with ``SCRIPT_NAME`` set; other paths are 404,
            as outside a mount from the configuration.
        trusted_proxies: addresses or CIDR networks (and ``unix:``) of proxies in
            front, whose forwarding fields the application sees; from other clients
            those fields are dropped (see ``--trusted-proxies``).
        request_buffering: receive each request body whole before the application
            gets a thread (see ``--request-buffering``).
        response_buffering: let a worker thread hand over a streamed response
            faster than its client reads it (see ``--response-buffering``, on by
            default as here).
        max_response_buffer: the most bytes one response holds so (see
            ``--max-response-buffer``).
        thread_queue_timeout: seconds a request may wait for a worker thread before
            it is answered 503 (see ``--thread-queue-timeout``, whose default is 60;
            here 0, no limit: the factory has no stop that would end the timer
            this keeps while requests wait).
        app_timeout: seconds the application may take to start a response before
            the request is answered 504 (see ``--app-timeout``, whose default is 60;
            here 0, no limit, for the same reason).

    Raises:
        TypeError, ValueError: for a ``script_name`` that is not bytes starting
            with ``/``, ``trusted_proxies`` that name no address, a timeout that is
            negative or not a finite number, a flag that is not a bool (see
            :class:`~twistwsgi.wsgi.WSGIHandler`).
    """
    if not isinstance(script_name, bytes):
        raise TypeError(f"script_name must be bytes, not {script_name!r}")
    if script_name and not script_name.startswith(b"/"):
        raise ValueError(f"script_name must be empty or start with '/': {script_name!r}")
    handler = WSGIHandler(
        app,
        reactor=reactor,
        threadpool=threadpool,
        trusted_proxies=TrustedProxies(trusted_proxies),
        request_buffering=request_buffering,
        response_buffering=response_buffering,
        max_response_buffer=max_response_buffer,
        queue_timeout=thread_queue_timeout,
        app_timeout=app_timeout,
        clock=reactor,
    )
    return HTTPFactory(
        Router(_one_mount(script_name.rstrip(b"/"), handler)),
        settings=settings or HttpSettings(),
        clock=reactor,
        response_log=response_log,
    )


def _one_mount(prefix: bytes, handler: Handler, guard: HostGuard | None = None) -> RoutingTable:
    """A routing table with one mount, for every host name (``guard`` before it)."""
    mounts: MountTable[Handler] = MountTable([Mount(prefix, handler)], guard)
    return RoutingTable(HostTable([], mounts), guarded=guard is not None)


def _unix_lock_held(path: object) -> str:
    """Why a UNIX socket path is taken, when Twisted's lock beside it is held.

    Twisted's ``unix:`` port (with the default ``lockfile=1``) takes ``PATH.lock``, a
    link naming its owner's process id, before it binds; a live owner means another
    server has the path (a stale socket and lock were already cleared by the CLI).
    """
    name = os.fsdecode(path) if isinstance(path, (str, bytes)) else "the socket"
    lock = f"{name}.lock"
    try:
        owner = f"process {os.readlink(lock)}"
    except OSError:
        owner = "another process"
    return f"address already in use: {owner} holds its lock file {lock!r}"


def listen_failure_reason(failure: Failure) -> str:
    """Why an endpoint could not listen, in a few words for a one-line error."""
    # The system's reason alone ("[Errno 98] Address already in use"): Twisted's
    # wording repeats the address the description already names.
    cause = getattr(failure.value, "socketError", None)
    if cause == "Cannot acquire lock":
        return _unix_lock_held(getattr(failure.value, "port", None))
    return str(cause) if isinstance(cause, OSError) else failure.getErrorMessage()


def stop_listening(ports: Sequence[IListeningPort]) -> Deferred[Any]:
    """Close ``ports``; fires once all are closed (a failure to close is let go)."""
    return DeferredList([maybeDeferred(port.stopListening) for port in ports], consumeErrors=True)


def report_start_error(handler: Callable[[str], None] | None, error: StartError) -> None:
    """Give ``error``'s one line to ``handler``, or raise it when there is none."""
    if handler is None:
        raise error
    handler(str(error))


class MetricsListener:
    """The metrics endpoint (``metrics_listen``) and what answers there.

    Args:
        description: the endpoint string, for errors and logs.
        endpoint: where to listen.
        collect: the exposition text now (see :func:`twistwsgi.metrics.render`).
        clock: the reactor.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        collect: Callable[[], bytes],
        clock: IReactorTime,
    ) -> None:
        self.description = description
        self._endpoint = endpoint
        self.factory = HTTPFactory(MetricsHandler(collect), settings=HttpSettings(), clock=clock)
        self.port: IListeningPort | None = None

    def listen(self) -> str | None:
        """Listen now; ``None``, or why it could not (a listener must listen at once)."""
        if self.port is not None:
            return None
        outcome: list[Any] = []
        listening = self._endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            listening.cancel()
            return "it does not listen at once"
        if isinstance(outcome[0], Failure):
            return listen_failure_reason(outcome[0])
        self.port = outcome[0]
        self.factory.serve_again()
        _log.info(
            "Serving metrics on {description} ({address})",
            description=self.description,
            address=self.port.getHost(),
        )
        return None

    def close(self) -> Deferred[Any]:
        """Stop listening and close the scrapers' connections."""
        port, self.port = self.port, None
        self.factory.shut_down()
        self.factory.abort_all()  # (a scrape in progress is not worth waiting for)
        return stop_listening([port] if port is not None else [])


class ServerService(Service):
    """Listens with one factory on several endpoints; shuts down gracefully.

    Args:
        factory: the server factory (see :func:`make_factory`).
        endpoints: ``(description, endpoint)`` pairs; the description names the
            endpoint in errors and logs.
        clock: the reactor (for the graceful timeout).
        pool: a worker pool to start and stop with the service, if any.
        graceful_timeout: seconds in-flight requests get on shutdown.
        access_log: closed when the service stops.
        on_start_error: called with a one-line message when the service cannot
            start (an endpoint fails to listen at once, the worker threads cannot
            be started); by default :class:`ListenError` or :class:`StartError` is
            raised. An endpoint failing later, while the reactor runs, is logged.
        router: the router whose table :meth:`reload` replaces.
        site_builder: builds routing tables from configurations (for reload).
        config: the configuration the service was built from.
        metrics: the metrics listener, listening and closed with the others.
    """

    def __init__(
        self,
        factory: HTTPFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        *,
        clock: IReactorTime,
        pool: WorkerPool | None = None,
        graceful_timeout: float = 30.0,
        access_log: AccessLog | None = None,
        on_start_error: Callable[[str], None] | None = None,
        router: Router | None = None,
        site_builder: SiteBuilder | None = None,
        config: ServerConfig | None = None,
        metrics: MetricsListener | None = None,
    ) -> None:
        self.factory = factory
        self.metrics = metrics
        self._on_start_error = on_start_error
        self._router = router
        self._site_builder = site_builder
        self.config = config
        self._endpoints = list(endpoints)
        self._clock = clock
        self._pool = pool
        self._graceful_timeout = graceful_timeout
        self._access_log = access_log
        self.ports: list[IListeningPort] = []
        self._listening = False
        # What endpoint.listen returned, so a stop can cancel those still pending.
        self._listen_calls: list[Deferred[IListeningPort]] = []
        self._drain_deadline: IDelayedCall | None = None
        self._stop_now_asked = False
        self._ready_call: IDelayedCall | None = None
        self._stopped = False  # stopped since built: a start must set up again
        self._stopping: Deferred[None] | None = None  # a stop still draining
        # A start failure privilegedStartService reported (to on_start_error), which
        # the startService that twistd calls next must not report again.
        self._privileged_start_failed = False

    def privilegedStartService(self) -> None:
        """Listen on every endpoint (before ``twistd`` drops privileges).

        Raises:
            ListenError: when an endpoint fails to listen synchronously (port in use,
                permission denied, missing certificate...). The endpoints opened
                before it are closed again: a later start tries them all anew.
        """
        super().privilegedStartService()
        if not (self._prepare_restart() and self._listen()):
            self._privileged_start_failed = True  # (reported to on_start_error)

    def startService(self) -> None:
        """Listen, if not done already, then start the worker threads.

        A service that was stopped may be started again once its stop is over (the
        Deferred of :meth:`stopService` has fired): it serves as before, with the
        access log reopened and its mounts built anew (their upstream pools and
        health checks were closed by the stop).

        Raises:
            ListenError: see :meth:`privilegedStartService`.
            StartError: when the worker threads cannot be started, the mounts
                cannot be built again on a restart, or the last stop is still
                draining connections.
        """
        if self._privileged_start_failed:
            self._privileged_start_failed = False
            return  # privilegedStartService said why, just before (twistd calls both)
        if not self._prepare_restart() or not self._listen():
            return
        if self._pool is not None:
            try:
                self._pool.start()
            except RuntimeError as error:  # "can't start new thread": a process limit
                self._pool.stop(timeout=0)
                self._close_ports()
                self._start_failed(
                    StartError(
                        f"cannot start {self._pool.size} worker threads: {error}; lower"
                        " --threads or raise the limit (ulimit -u, systemd TasksMax)"
                    )
                )
                return
        super().startService()
        # Logged from the first turn of the running reactor: from then on signals
        # are handled (twistd installs its handlers when the reactor starts).
        self._ready_call = self._clock.callLater(0, self._ready)

    def _ready(self) -> None:
        self._ready_call = None
        if self.running:
            _log.info("Ready: serving on {count} endpoint(s)", count=len(self.ports))

    def _prepare_restart(self) -> bool:
        """Undo what a stop closed, once, before listening again; say if it worked."""
        if self._stopping is not None:
            # Its drain would end in the restarted service: threads stopped, mounts
            # closed, and its graceful timeout dropping the new connections.
            self._start_failed(
                StartError(
                    "cannot start while the last stop is still draining connections;"
                    " start again once the Deferred of stopService() has fired"
                )
            )
            return False
        if not self._stopped:
            return True
        if self._router is not None and self._site_builder is not None and self.config is not None:
            try:
                table = self._site_builder.build(self.config)
            except ConfigError as error:
                self._start_failed(StartError(f"cannot build the mounts again: {error}"))
                return False
            self._router.replace(table)  # (the same access logs, opened again)
        self._stopped = False
        self._drain_deadline = None
        self.factory.serve_again()
        self.reopen_access_log()
        return True

    def _listen(self) -> bool:
        """Listen on every endpoint, unless done already; say whether it worked.

        On a synchronous failure, the ports opened so far are closed again and the
        failure is reported (raised, or given to ``on_start_error``).
        """
        if self._listening:
            return True
        self._listening = True
        for description, endpoint in self._endpoints:
            failed: list[str] = []
            listening = endpoint.listen(self.factory)
            self._listen_calls.append(listening)
            listening.addCallbacks(
                self._listening_on,
                self._listen_failed,
                callbackArgs=(description,),
                errbackArgs=(description, failed),
            )
            if failed:
                # Endpoints that listen synchronously (tcp, ssl, unix, systemd) fail
                # here, before the server runs: report it as a start-up error.
                self._close_ports()
                self._start_failed(ListenError(f"cannot listen on {description!r}: {failed[0]}"))
                return False
        metrics = self.metrics
        if metrics is not None:
            problem = metrics.listen()
            if problem is not None:
                self._close_ports()
                self._start_failed(
                    ListenError(f"cannot listen on {metrics.description!r}: {problem}")
                )
                return False
        return True

    def _close_ports(self) -> Deferred[Any]:
        """Stop listening: close the ports, cancel the listens still pending."""
        self._listening = False
        self.factory.remove_listeners()  # closing: a freed slot must not resume them
        calls, self._listen_calls = self._listen_calls, []
        for call in calls:
            call.cancel()  # (nothing happens to one that fired)
        ports, self.ports = self.ports, []
        stopped = stop_listening(ports)
        if self.metrics is not None:
            return DeferredList([stopped, self.metrics.close()], consumeErrors=True)
        return stopped

    def _start_failed(self, error: StartError) -> None:
        report_start_error(self._on_start_error, error)

    def metrics_snapshot(self) -> dict[str, Any]:
        """What this server counted and its gauges now (see :func:`metrics_snapshot`)."""
        return metrics_snapshot(self.factory, self._pool, self._router)

    def _listen_failed(self, failure: Failure, description: str, failed: list[str]) -> None:
        if failure.check(CancelledError):
            return  # the service stopped before this endpoint was listening
        reason = listen_failure_reason(failure)
        failed.append(reason)
        _log.error(
            "Cannot listen on {description}: {reason}", description=description, reason=reason
        )

    def _listening_on(self, port: IListeningPort, description: str) -> None:
        self.ports.append(port)
        if hasattr(port, "stopReading"):  # a socket port (TCP, TLS, UNIX, systemd)
            self.factory.add_listener(port)
        _log.info(
            "Listening on {description} ({address})",
            description=description,
            address=port.getHost(),
        )

    def reload(self, config: ServerConfig) -> bool:
        """Serve ``config``'s hosts and mounts from now on, if it builds whole.

        The new routing table is built completely first (applications imported);
        only then are new requests routed with it. Requests in flight finish with
        the handlers they started with; no connection is dropped. What applies:
        hosts and mounts (with ``trusted_proxies``, ``request_buffering``,
        ``thread_queue_timeout`` and ``app_timeout``), the graceful timeout, the
        access log destination and format, and limits and timeouts (for new connections). Listening
        endpoints and the numbers of threads and of worker processes need a restart:
        a change to them is logged as a warning. The access log file is reopened
        (for log rotation) even when the new routing table cannot be built.

        During a graceful stop it is ignored (with a line): the mounts it would
        build serve nothing in a process about to exit, and the old ones, which the
        draining requests use, would be closed under them.

        Returns:
            Whether the new configuration was applied; a failure is logged as one
            line and the old configuration keeps serving.
        """
        if self._stopping is not None:
            _log.info("Reload ignored: the server is stopping")
            return False
        if self._router is None or self._site_builder is None:
            self.reopen_access_log()
            _log.warn("Reload ignored: this server was not built from a configuration")
            return False
        try:
            _check_numbers(config)
            log_format = access_log_format(config)
            table = self._site_builder.build(config)
        except ConfigError as error:
            self.reopen_access_log()
            _log.error(
                "Reload refused, the old configuration keeps serving: {error}", error=str(error)
            )
            return False
        old = self.config
        if old is not None:
            for name in ("listen", "threads", "workers"):
                if getattr(old, name) != getattr(config, name):
                    _log.warn(
                        "Reload: {name} changed; it takes effect at the next restart",
                        name=name,
                    )
        old_handlers = self._router.table.handlers
        self._router.replace(table)
        close_handlers(old_handlers)
        logs = self._site_builder.access_logs
        logs.settle()
        logs.set_format(log_format)
        self.factory.update_settings(server_settings(config))
        self._graceful_timeout = config.graceful_timeout
        if old is not None and old.access_log != config.access_log:
            config = self._switch_access_log(old, config, log_format)
            self._reopen_site_logs()  # (logrotate's SIGHUP, whatever else changed)
        else:
            self.reopen_access_log()
        if self._access_log is not None:
            self._access_log.log_format = log_format
        self._set_response_log()
        self.config = config
        _log.info("Reloaded the configuration: {count} host(s)", count=len(config.hosts))
        return True

    def reopen_access_log(self) -> None:
        """Reopen the access log file, after log rotation.

        The hosts' and mounts' own access logs too. If that fails, lines keep going
        to the open file and one log line says why: SIGHUP must never break the
        running server.
        """
        self._reopen_site_logs()
        if self._access_log is None:
            return
        try:
            self._access_log.reopen()
        except OSError as error:
            # A reload must not stop the server: the old file object still works
            # (if it was moved away, lines go to its new name).
            _log.error(
                "Cannot reopen the access log {path!r}, still writing to the open file: {error}",
                path=self._access_log.destination,
                error=error.strerror or str(error),
            )

    def _reopen_site_logs(self) -> None:
        """Reopen the hosts' and mounts' own access logs (see :meth:`reopen_access_log`)."""
        if self._site_builder is not None:
            for destination, error in self._site_builder.access_logs.reopen():
                _log.error(
                    "Cannot reopen the access log {path!r}, still writing to the open"
                    " file: {error}",
                    path=destination,
                    error=error.strerror or str(error),
                )

    def _set_response_log(self) -> None:
        """Give ended exchanges to the access log(s) and metrics now configured."""
        router = self._router
        routed = router if router is not None and router.table.access_logs else None
        self.factory.response_log = _response_log(self._access_log, self.factory.metrics, routed)

    def _switch_access_log(
        self, old: ServerConfig, config: ServerConfig, log_format: LogFormat | None
    ) -> ServerConfig:
        """Send the access log to ``config.access_log`` instead of ``old``'s.

        The new destination is opened before the old one is closed. If it cannot be
        opened, the old one stays (reopened) and the returned configuration says so,
        so that the next reload tries the new destination again.
        """
        new_log: AccessLog | None = None
        if config.access_log != "off":
            try:
                new_log = AccessLog(
                    config.access_log or "", clock=self._clock, log_format=log_format
                )
            except OSError as error:
                _log.error(
                    "Reload: cannot open the access log {path!r} ({error});"
                    " it keeps going where it went",
                    path=config.access_log,
                    error=error.strerror or str(error),
                )
                self.reopen_access_log()
                return replace(config, access_log=old.access_log)
        previous, self._access_log = self._access_log, new_log
        self._set_response_log()
        if previous is not None:
            previous.close()
        return config

    def stopService(self) -> Deferred[None]:
        """Stop accepting, drain in-flight requests, then stop the worker threads.

        A stop asked for while one is in progress (a ``MultiService`` stops every
        child, even one already stopping) waits for that one: the Deferred fires
        when it is over.
        """
        super().stopService()
        if self._stopping is not None:
            # A second teardown, over at once with nothing left to close, would end
            # the refusal of a start while the first still drains (_prepare_restart).
            over: Deferred[None] = Deferred()

            def fire(result: object) -> object:
                over.callback(None)
                return result  # (for whoever waits on the first stop after this)

            self._stopping.addBoth(fire)
            return over
        self._stopped = True
        if self._ready_call is not None and self._ready_call.active():
            self._ready_call.cancel()
        self._ready_call = None
        stopped = self._close_ports()
        stopped.addCallback(lambda _: self._drain())
        stopped.addBoth(self._stop_workers)
        self._stopping = stopped
        stopped.addBoth(self._stop_over)
        return stopped

    def _stop_over(self, result: object) -> None:
        self._stopping = None

    def _drain(self) -> Deferred[None]:
        factory = self.factory
        drained = factory.shut_down()
        # Counted once idle connections were told to close: those are not waited for.
        busy = sum(1 for connection in factory.connections if connection.draining)
        if busy:
            _log.info(
                "Shutting down: waiting up to {timeout}s for {count} connection(s)"
                " with a request in progress",
                timeout=self._graceful_timeout,
                count=busy,
            )
        deadline = self._clock.callLater(self._graceful_timeout, self._give_up)
        self._drain_deadline = deadline
        if self._stop_now_asked:
            self.stop_now()  # (asked for before the drain began)

        def cancel(result: object) -> object:
            if deadline.active():
                deadline.cancel()
            return result

        drained.addBoth(cancel)
        return drained

    def _give_up(self) -> None:
        remaining = len(self.factory.connections)
        _log.warn("Graceful timeout reached; dropping {count} connection(s)", count=remaining)
        self.factory.abort_all()

    def stop_now(self) -> None:
        """End a graceful stop at once: drop the connections still draining.

        For a second SIGTERM or SIGINT (Ctrl-C twice), as nginx's fast shutdown.
        Asked for before the drain began (two signals in one reactor pass: the
        stop is still queued), it is remembered, and the drain drops them at once.
        """
        self._stop_now_asked = True
        deadline = self._drain_deadline
        if deadline is None or not deadline.active():
            return
        deadline.cancel()
        _log.warn(
            "Stop requested again; dropping {count} connection(s) now",
            count=len(self.factory.connections),
        )
        self.factory.abort_all()

    def _stop_workers(self, result: object) -> Deferred[None] | None:
        if self._router is not None:
            close_handlers(self._router.table.handlers)
        if self._access_log is not None:
            self._access_log.close()
        if self._site_builder is not None:
            self._site_builder.access_logs.close()
        if isinstance(result, Failure):
            _log.failure("Error while shutting down", failure=result)
        if self._pool is None:
            return None
        return self._threads_ended(self._pool.release())

    def _threads_ended(self, threads: list[threading.Thread]) -> Deferred[None]:
        """Fire when ``threads`` have ended, or after :data:`WORKER_STOP_TIMEOUT`.

        A thread still running an application past the graceful timeout is polled,
        not joined: the reactor thread (other services in the process) never waits.
        """
        # Idle threads end within microseconds of their stop signal.
        budget = time.monotonic() + 0.01
        for thread in threads:
            thread.join(max(budget - time.monotonic(), 0.0))
        ended: Deferred[None] = Deferred()
        deadline = self._clock.seconds() + WORKER_STOP_TIMEOUT

        def check() -> None:
            busy = [thread for thread in threads if thread.is_alive()]
            if busy and self._clock.seconds() < deadline:
                self._clock.callLater(0.02, check)
                return
            for thread in busy:
                _log.warn(
                    "Worker thread {name} is still busy with {request}; leaving it",
                    name=thread.name,
                    request=running_request(thread) or "an application",
                )
            ended.callback(None)

        check()
        return ended


#: Seconds a stopped service waits for a worker thread still running an application
#: (past the graceful timeout) before leaving it: it is a daemon, and holds nothing.
WORKER_STOP_TIMEOUT = 1.0


#: Descriptors the automatic max_connections leaves for the process itself: logs,
#: the reactor's own, idle upstream connections in the proxy pools.
RESERVED_DESCRIPTORS = 128


def server_settings(config: ServerConfig) -> HttpSettings:
    """The HTTP settings of ``config``, with max_connections 0 made concrete.

    0 means "a third of the open-files limit less :data:`RESERVED_DESCRIPTORS`" (at
    least 64): each connection may hold two descriptors besides its socket (a file
    it is sent, or its upstream connection, and a request body spooled to disk or a
    response waiting for a slow client in a temporary file), as nginx counts
    upstream connections in worker_connections; past the open-files limit those
    would fail (a 503 from a proxy mount, a 500 for a file).
    """
    settings = config.http
    if settings.max_connections:
        return settings
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return settings
    return replace(settings, max_connections=max((soft - RESERVED_DESCRIPTORS) // 3, 64))


def make_service(
    config: ServerConfig,
    app: WSGIApplication | None = None,
    *,
    reactor: Any,
    endpoints: Sequence[tuple[str, IStreamServerEndpoint]] | None = None,
    on_start_error: Callable[[str], None] | None = None,
    builders: dict[str, MountBuilder] | None = None,
    shared_limits: SharedLimits | None = None,
    serve_metrics: bool = True,
    metrics_endpoint: IStreamServerEndpoint | None = None,
    count_metrics: bool | None = None,
) -> ServerService:
    """Build a :class:`ServerService` from ``config``.

    Args:
        config: the validated configuration; its hosts and mounts are imported and
            built here.
        app: for library use, a WSGI application object to serve at ``/`` for every
            host name, instead of ``config.hosts``.
        reactor: the reactor to run on.
        endpoints: the endpoints to listen on, as ``(description, endpoint)``; by
            default they are built from ``config.listen`` with ``serverFromString``
            (which raises ``ValueError`` for a string it cannot parse).
        on_start_error: see :class:`ServerService`.
        builders: how static and proxy mounts become handlers (by mount kind); the
            standard ones by default.
        shared_limits: the tables of ``rate_limit`` and ``conn_limit`` counts that
            the worker processes share (a worker's); ``None``: counted in this
            process.
        serve_metrics: with ``metrics_listen``, whether this process serves them
            (a worker counts them for its master, which serves them).
        metrics_endpoint: the endpoint of ``metrics_listen``, if already built.
        count_metrics: whether to count the metrics; ``None``: with
            ``metrics_listen`` (a worker counts if its master serves them, whatever
            a reload's file says).

    Raises:
        ConfigError: when a mount cannot be built (an application that does not
            import, for instance), naming its key path; or when ``threads`` or
            ``graceful_timeout`` is out of range (a configuration built in Python).
        TypeError: when ``listen`` is one string rather than a sequence of them.
    """
    _check_numbers(config)
    listen: object = config.listen  # (typed a tuple; a Python caller may pass a str)
    if isinstance(listen, str):
        raise TypeError(
            f"listen must be a sequence of endpoint strings, not one string: give ({listen!r},)"
        )
    if endpoints is None:
        if config.tls_verify_client != "off" or any(
            host_verification(host, config)[0] != "off" for host in config.hosts
        ):
            # Twisted's ssl: endpoints would ask no client for a certificate, and
            # every request over them would be refused (see ClientCertificateCheck).
            raise ConfigError(
                "tls_verify_client",
                "needs the listeners twistwsgi builds: pass"
                " endpoints=twistwsgi.cli.build_endpoints(reactor, config)",
            )
        endpoints = [(text, serverFromString(reactor, text)) for text in config.listen]
    pool = WorkerPool(config.threads) if config.threads > 0 else None
    if count_metrics is None:
        count_metrics = config.metrics_listen is not None
    builder: SiteBuilder
    if app is not None:
        if config.hosts:
            raise ValueError("give either an application or hosts in the configuration")
        builder = _ApplicationSite(app, reactor=reactor, threadpool=pool)
    else:
        builder = SiteBuilder(
            reactor=reactor,
            threadpool=pool,
            builders=builders if builders is not None else standard_builders(reactor),
            shared_limits=shared_limits,
            note_upstreams=count_metrics,
        )
    log_format = access_log_format(config)
    table = builder.build(config)
    builder.access_logs.settle()
    builder.access_logs.set_format(log_format)
    router = Router(table)
    access_log = None
    if config.access_log != "off":
        try:
            access_log = AccessLog(config.access_log or "", clock=reactor, log_format=log_format)
        except OSError as error:
            raise ConfigError(
                config.source("access_log"),
                f"cannot open {config.access_log!r}: {error.strerror}",
            ) from None
    counted = RequestMetrics(reactor.seconds) if count_metrics else None
    response_log = _response_log(access_log, counted, router if table.access_logs else None)
    factory = HTTPFactory(
        router, settings=server_settings(config), clock=reactor, response_log=response_log
    )
    factory.body_limit = router.body_limit
    factory.error_pages = router.error_pages_for
    factory.metrics = counted
    metrics = None
    if counted is not None and serve_metrics and config.metrics_listen is not None:
        description = config.metrics_listen
        if metrics_endpoint is None:
            try:
                metrics_endpoint = serverFromString(reactor, description)
            except ValueError as error:
                raise ConfigError(
                    config.source("metrics_listen"), f"{description!r}: {error}"
                ) from None
        metrics = MetricsListener(
            description,
            metrics_endpoint,
            lambda: render(metrics_snapshot(factory, pool, router)),
            reactor,
        )
    return ServerService(
        factory,
        endpoints,
        clock=reactor,
        pool=pool,
        graceful_timeout=config.graceful_timeout,
        access_log=access_log,
        on_start_error=on_start_error,
        router=router,
        site_builder=builder,
        config=config,
        metrics=metrics,
    )


def _response_log(
    access_log: AccessLog | None, counted: RequestMetrics | None, router: Router | None = None
) -> ResponseLog | None:
    """What each ended exchange is given to: the access log, the metrics, or both.

    With a ``router`` whose hosts or mounts have access logs of their own, each line
    goes where the router said (``access_log`` of the exchange), or, for a request
    the protocol refused, where the router finds it would have said.
    """
    if router is None:
        if access_log is None or counted is None:
            return access_log or counted

        def log(ended: Any) -> None:
            try:
                access_log(ended)
            finally:
                counted(ended)  # (counted even when the log cannot be written)

        return log

    def routed_log(ended: Any) -> None:
        chosen = ended.access_log
        if chosen is None and isinstance(ended, Refusal):
            chosen = router.access_log_for(ended.request)
        if chosen is None:
            chosen = access_log
        try:
            if chosen is not None:
                chosen(ended)
        finally:
            if counted is not None:
                counted(ended)

    return routed_log


def metrics_snapshot(
    factory: HTTPFactory, pool: WorkerPool | None, router: Router | None = None
) -> dict[str, Any]:
    """What this process counted (see :mod:`twistwsgi.metrics`), with its gauges now.

    With the ``router`` serving, the gauges of its proxy mounts' upstreams too.

    Raises:
        ValueError: ``factory`` counts no metrics (no ``metrics_listen``).
    """
    if factory.metrics is None:
        raise ValueError("this server counts no metrics: give metrics_listen")
    gauges = {
        "connections_open": len(factory.connections),
        "threads": pool.size if pool is not None else 0,
        "threads_busy": busy_threads(),
        "thread_queue": waiting_requests(),
    }
    return factory.metrics.snapshot(factory.accepted, gauges, _upstream_states(router))


def _upstream_states(router: Router | None) -> list[UpstreamState]:
    """The upstreams of the proxy mounts ``router`` serves now (see ``upstream_states``)."""
    if router is None:
        return []
    from twistwsgi.proxy import ProxyHandler  # noqa: PLC0415

    states: list[UpstreamState] = []
    for host, prefix, handler in router.table.proxied:
        if isinstance(handler, ProxyHandler):
            labels = mount_labels(host, prefix)
            states.extend((*labels, *state) for state in handler.upstream_states())
    return states


class _ApplicationSite(SiteBuilder):
    """Builds the routing table of :func:`make_service` given an application.

    That one application at ``/`` for every host name, built again on a reload (with
    the reloaded ``trusted_proxies``) and on a restart.
    """

    def __init__(
        self, app: WSGIApplication, *, reactor: Any, threadpool: ThreadPoolLike | None
    ) -> None:
        super().__init__(reactor=reactor, threadpool=threadpool)
        self._application = app

    def build(self, config: ServerConfig) -> RoutingTable:
        """The table serving the application; a configuration with hosts is refused.

        Raises:
            ConfigError: ``config`` has hosts (they would replace the application).
        """
        if config.hosts:
            raise ConfigError("hosts", "this server was built with an application, not with hosts")
        handler = WSGIHandler(
            self._application,
            reactor=self._reactor,
            threadpool=self._threadpool,
            trusted_proxies=TrustedProxies(config.trusted_proxies),
            request_buffering=config.request_buffering,
            response_buffering=config.response_buffering,
            max_response_buffer=config.max_response_buffer,
            queue_timeout=config.thread_queue_timeout,
            app_timeout=config.app_timeout,
            clock=self._reactor,
        )
        # The configuration's tls_verify_client, as a site's hosts have it.
        verification = (config.tls_verify_client, config.tls_client_certificate)
        return _one_mount(b"", handler, certificate_check(verification))


def access_log_format(config: ServerConfig) -> LogFormat | None:
    """The access-log line format ``config`` asks for (``None``: the combined format).

    Raises:
        ConfigError: an unknown variable or escape (a configuration built in Python).
    """
    if config.access_log_format is None and config.access_log_escape == "default":
        return None
    try:
        return LogFormat(
            config.access_log_format or COMBINED,
            config.access_log_escape,
            TrustedProxies(config.trusted_proxies),
        )
    except ValueError as error:
        raise ConfigError(config.source("access_log_format"), str(error)) from None


def _check_numbers(config: ServerConfig) -> None:
    """Check the server numbers as the command line does (for a config built in Python).

    They must be numbers too: the command line's text forms (``"4"``, ``"30s"``) are
    parsed before a configuration is built, never after.

    Raises:
        ConfigError: naming the setting, e.g. ``--threads: expected a whole number >= 0``.
    """
    for setting in SETTINGS:
        if setting.name in ("threads", "graceful_timeout", "thread_queue_timeout", "app_timeout"):
            value = getattr(config, setting.name)
            try:
                setting.parse(value)
            except ValueError as error:
                raise ConfigError(config.source(setting.name), str(error)) from None
            # The parse takes the command line's text too ("4", "30s"); kept as text,
            # that failed later, graceful_timeout's only in the drain of the first stop.
            whole = setting.name == "threads"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                expected = "a whole number" if whole else "a number of seconds"
                message = f"expected {expected}, got {value!r}"
                raise ConfigError(config.source(setting.name), message)


def standard_builders(reactor: Any) -> dict[str, MountBuilder]:
    """The builders of static and proxy mounts that ship with twistwsgi."""
    # Imported here: the proxy pulls in the upstream client, needed only when used.
    from twistwsgi.proxy import proxy_builder  # noqa: PLC0415

    return {"proxy": proxy_builder(reactor)}
