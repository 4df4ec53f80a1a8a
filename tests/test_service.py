"""The server service: listening on endpoints, worker threads, graceful shutdown.

A ``MemoryReactorClock`` records listening and provides time; connections are
in-memory protocols, so shutdown is checked without sockets or real time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.apps import hello
from twistwsgi import cli
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.http.exchange import Exchange
from twistwsgi.http.protocol import (
    CAPACITY_LOG_INTERVAL,
    DRAIN_INTERVAL,
    IDLE_GRACE,
    HTTP11Protocol,
    HTTPFactory,
)
from twistwsgi.http.settings import HttpSettings
from twistwsgi.routing import Router
from twistwsgi.service import ListenError, ServerService, StartError, make_factory, make_service
from twistwsgi.testing import capture_log_events, parse_responses
from twistwsgi.threads import WorkerPool
from twistwsgi.wsgi import WSGIHandler


class Held:
    """Keeps exchanges for the test to answer."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def handle(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


def open_connection(factory: HTTPFactory) -> tuple[HTTP11Protocol, StringTransport]:
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def closing(transport: StringTransport) -> bool:
    """Whether loseConnection() was called on ``transport`` (read anew each time)."""
    return bool(transport.disconnecting)


def aborted(transport: StringTransport) -> bool:
    """Whether abortConnection() was called on ``transport``."""
    return bool(getattr(transport, "disconnected", False))


def close_if_asked(protocol: HTTP11Protocol, transport: StringTransport) -> None:
    """Play the reactor: a transport asked to close reports the connection lost."""
    if transport.disconnecting or getattr(transport, "disconnected", False):
        protocol.connectionLost(Failure(ConnectionDone()))


def test_service_listens_on_every_endpoint() -> None:
    """StartService listens on each endpoint with the one factory."""
    reactor = MemoryReactorClock()
    config = ServerConfig(listen=("tcp:8080:interface=127.0.0.1", "tcp:8081"))
    endpoints = [(d, serverFromString(reactor, d)) for d in config.listen]
    service = make_service(config, hello, reactor=reactor, endpoints=endpoints)
    service.startService()
    ports = [(port, interface) for port, _factory, _backlog, interface in reactor.tcpServers]
    assert ports == [(8080, "127.0.0.1"), (8081, "")]
    assert {id(factory) for _, factory, _, _ in reactor.tcpServers} == {id(service.factory)}
    service.stopService()


@implementer(IStreamServerEndpoint)
class RefusingEndpoint:
    def listen(self, factory: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError("no"))


def test_listen_failure_raises_a_one_line_error() -> None:
    """An endpoint that fails at start-up raises ListenError naming it."""
    factory = make_factory(hello, reactor=MemoryReactorClock(), threadpool=None)
    service = ServerService(factory, [("tcp:80", RefusingEndpoint())], clock=MemoryReactorClock())
    with pytest.raises(ListenError, match="cannot listen on 'tcp:80'"):
        service.privilegedStartService()


def test_listen_failure_goes_to_the_given_callback() -> None:
    """With on_listen_error, the message goes there instead."""
    messages: list[str] = []
    factory = make_factory(hello, reactor=MemoryReactorClock(), threadpool=None)
    service = ServerService(
        factory,
        [("tcp:80", RefusingEndpoint())],
        clock=MemoryReactorClock(),
        on_start_error=messages.append,
    )
    service.privilegedStartService()
    assert len(messages) == 1 and "tcp:80" in messages[0]


def test_a_unix_path_another_server_holds_is_said_in_plain_words(
    short_directory: Path,
) -> None:
    """Twisted's "Couldn't listen on any:b'...': Cannot acquire lock." becomes the
    reason a user can act on: which process holds the path's lock.
    """
    from twisted.internet import reactor

    path = f"{short_directory}/app.sock"
    os.symlink(str(os.getppid()), f"{path}.lock")  # a live process, as a running server's
    messages: list[str] = []
    factory = make_factory(hello, reactor=MemoryReactorClock(), threadpool=None)
    description = f"unix:{path}"
    service = ServerService(
        factory,
        [(description, serverFromString(reactor, description))],
        clock=MemoryReactorClock(),
        on_start_error=messages.append,
    )
    service.privilegedStartService()
    assert messages == [
        f"cannot listen on {description!r}: address already in use:"
        f" process {os.getppid()} holds its lock file '{path}.lock'"
    ]


def build(held: Held, clock: MemoryReactorClock, timeout: float = 30.0) -> ServerService:
    factory = HTTPFactory(held, settings=HttpSettings(), clock=clock)
    return ServerService(
        factory,
        [("tcp:8080", serverFromString(clock, "tcp:8080"))],
        clock=clock,
        graceful_timeout=timeout,
    )


def test_shutdown_closes_idle_connections_and_waits_for_busy_ones() -> None:
    """Stopping stops listening, closes idle connections at once, and fires only
    when the busy connection's response has been sent (with Connection: close).
    """
    clock = MemoryReactorClock()
    held = Held()
    service = build(held, clock)
    service.startService()
    idle_protocol, idle = open_connection(service.factory)
    busy_protocol, busy = open_connection(service.factory)
    busy_protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    stopped = service.stopService()
    done: list[object] = []
    stopped.addCallback(done.append)
    assert not closing(idle)  # (just connected: its request may be on its way)
    clock.advance(IDLE_GRACE)
    assert closing(idle)
    close_if_asked(idle_protocol, idle)
    assert not busy.disconnecting
    assert done == []
    exchange = held.exchanges[0]
    exchange.start_response(200, [])
    exchange.finish(b"finished")
    [response] = parse_responses(busy.value())
    assert response.body == b"finished"
    assert response.header(b"connection") == b"close"
    close_if_asked(busy_protocol, busy)
    assert done == [None]


def test_the_shutdown_line_counts_only_connections_with_a_request() -> None:
    """Idle keep-alive connections are closed at once: the line counts the others,
    including a request that stopped parsing (an Upgrade request, whose answer or
    101 is pending).
    """
    clock = MemoryReactorClock()
    service = build(Held(), clock)
    service.startService()
    for _ in range(3):
        open_connection(service.factory)
    busy_protocol, _busy = open_connection(service.factory)
    busy_protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    upgrading_protocol, _upgrading = open_connection(service.factory)
    upgrading_protocol.dataReceived(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    with capture_log_events() as events:
        service.stopService()
    [line] = [formatEvent(event) for event in events if "Shutting down" in formatEvent(event)]
    assert (
        line == "Shutting down: waiting up to 30.0s for 2 connection(s) with a request in progress"
    )


def assert_stop_drops_after(
    service: ServerService,
    clock: MemoryReactorClock,
    protocol: HTTP11Protocol,
    transport: StringTransport,
    timeout: float,
) -> None:
    """Stopping ``service`` keeps the busy connection until ``timeout`` seconds have
    passed, then drops it, and the shutdown completes.
    """
    done: list[object] = []
    service.stopService().addCallback(done.append)
    clock.advance(timeout - 0.5)
    assert not aborted(transport)
    clock.advance(1.0)
    assert aborted(transport)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert done == [None]


def serving_one_request(
    timeout: float,
) -> tuple[ServerService, MemoryReactorClock, HTTP11Protocol, StringTransport]:
    """A started service with one connection whose request is not answered."""
    clock = MemoryReactorClock()
    service = build(Held(), clock, timeout=timeout)
    service.startService()
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    return service, clock, protocol, transport


def test_graceful_timeout_drops_what_is_left() -> None:
    """A request still running after the graceful timeout has its connection
    dropped, and the shutdown completes.
    """
    service, clock, protocol, transport = serving_one_request(timeout=30.0)
    assert_stop_drops_after(service, clock, protocol, transport, 30.0)


def test_new_connections_during_shutdown_are_closed() -> None:
    """A connection accepted while shutting down is closed straight away."""
    clock = MemoryReactorClock()
    service = build(Held(), clock)
    service.startService()
    service.stopService()
    _protocol, transport = open_connection(service.factory)
    assert transport.disconnecting


def test_worker_pool_starts_and_stops_with_the_service() -> None:
    """The worker pool runs exactly while the service does."""
    clock = MemoryReactorClock()
    pool = WorkerPool(2)
    factory = make_factory(hello, reactor=clock, threadpool=pool)
    service = ServerService(
        factory, [("tcp:0", serverFromString(clock, "tcp:0"))], clock=clock, pool=pool
    )
    service.startService()
    assert pool.started
    service.stopService()
    assert not pool.started


def test_a_second_stop_drops_the_draining_connections_at_once() -> None:
    """stop_now (a second SIGTERM) ends the graceful stop without waiting for the
    timeout.
    """
    service, clock, protocol, transport = serving_one_request(timeout=30.0)
    done: list[object] = []
    service.stopService().addCallback(done.append)
    clock.advance(1.0)
    assert not aborted(transport)
    with capture_log_events() as events:
        service.stop_now()
    assert aborted(transport)
    assert any("dropping 1 connection(s) now" in formatEvent(event) for event in events)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert done == [None]
    assert not clock.getDelayedCalls()  # the graceful deadline is cancelled


def test_a_second_stop_asked_before_the_drain_began_is_kept_for_it() -> None:
    """Two signals in one reactor pass: the stop is still queued when the second
    asks for the immediate one, which the drain then does as it begins (it did
    nothing before, and the server drained for the whole graceful timeout).
    """
    service, clock, protocol, transport = serving_one_request(timeout=30.0)
    service.stop_now()
    assert not aborted(transport)
    done: list[object] = []
    with capture_log_events() as events:
        service.stopService().addCallback(done.append)
        clock.advance(0.1)
    assert aborted(transport)
    assert any("dropping 1 connection(s) now" in formatEvent(event) for event in events)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert done == [None]


class ThreadLimitedPool(WorkerPool):
    """A pool whose threads cannot start, as past a process's thread limit."""

    def start(self) -> None:
        raise RuntimeError("can't start new thread")


@pytest.mark.parametrize("with_callback", [False, True])
def test_worker_threads_that_cannot_start_are_a_one_line_start_error(
    with_callback: bool,
) -> None:
    """Past the thread limit, starting is a StartError naming the count and the
    remedy (or goes to on_start_error), not a traceback.
    """
    clock = MemoryReactorClock()
    pool = ThreadLimitedPool(5000)
    factory = make_factory(hello, reactor=clock, threadpool=pool)
    messages: list[str] = []
    service = ServerService(
        factory,
        [],
        clock=clock,
        pool=pool,
        on_start_error=messages.append if with_callback else None,
    )
    expected = "cannot start 5000 worker threads: can't start new thread; lower --threads"
    if with_callback:
        service.startService()
        assert len(messages) == 1 and expected in messages[0]
    else:
        with pytest.raises(StartError, match=expected):
            service.startService()
    assert not service.running


def test_library_factory_listens_with_any_endpoint() -> None:
    """make_factory's result is an ordinary Twisted server factory."""
    reactor = MemoryReactorClock()
    factory = make_factory(hello, reactor=reactor, threadpool=None)
    serverFromString(reactor, "unix:/tmp/twistwsgi-test.sock").listen(factory)
    [(address, listened_factory, _backlog, _mode, _lock)] = reactor.unixServers
    assert address == "/tmp/twistwsgi-test.sock"
    assert listened_factory is factory


# -- a site built from the command line, requests through the whole service -----------------


def request(service: ServerService, host: bytes, target: bytes) -> bytes:
    """Send one GET through the service's factory; return what was written back.

    The client then closes the connection, so a shutdown has nothing to wait for.
    """
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    written: bytes = transport.value()
    return written


def test_command_line_vhosts_serve_by_host_name(tmp_path: Path) -> None:
    """The issue's example, from option parsing to responses: the --app/--static
    site answers unknown names, each --vhost host its own names (case, port and
    trailing dot aside), with SCRIPT_NAME at its mount path; the proxy host forwards
    to its upstream.
    """
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "app.css").write_bytes(b"body {}\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    options = cli.Options()
    options.parseOptions(
        [
            "--app=tests.apps:hello",
            f"--static=/static={tmp_path / 'static'}",
            "--vhost=api.example.com=proxy:http://127.0.0.1:9000",
            f"--vhost=docs.example.com=static:{tmp_path / 'docs'}",
            "--vhost=docs.example.com/search=app:tests.apps:environ",
            "--threads=0",
            "--access-log=off",
        ]
    )
    reactor = MemoryReactorClock()
    service = make_service(options.config, reactor=reactor, endpoints=[])
    service.startService()

    def answer(host: bytes, target: bytes) -> tuple[int, bytes]:
        [response] = parse_responses(request(service, host, target))
        return response.status, response.body

    assert answer(b"shop.example", b"/") == (200, b"Hello, World!")
    assert answer(b"shop.example", b"/static/app.css") == (200, b"body {}\n")
    assert answer(b"docs.example.com", b"/") == (200, b"<h1>docs</h1>\n")
    assert answer(b"Docs.Example.COM.:8080", b"/static/app.css")[0] == 404
    status, body = answer(b"docs.example.com", b"/search/q?x=1")
    environ = json.loads(body)
    assert (status, environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (200, "/search", "/q")
    # The proxy host: the request goes to the upstream, whose answer comes back.
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET /v1/items HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
    assert transport.value() == b""
    [(host, port, connector, _timeout, _bind)] = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 9000)
    upstream = connector.buildProtocol(None)
    assert upstream is not None
    upstream_transport = StringTransport()
    upstream.makeConnection(upstream_transport)
    sent = upstream_transport.value()
    assert sent.startswith(b"GET /v1/items HTTP/1.1\r\n")
    assert b"\r\nHost: api.example.com\r\n" in sent
    upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nupstream")
    [response] = parse_responses(transport.value())
    assert (response.status, response.body) == (200, b"upstream")
    protocol.connectionLost(Failure(ConnectionDone()))
    upstream.connectionLost(Failure(ConnectionDone()))
    service.stopService()


# -- reload: what applies, what waits for a restart -----------------------------------------


def serve(given: dict[str, Any], **builders: Any) -> tuple[ServerService, MemoryReactorClock]:
    """Build and start a service from command-line values (no listening, no threads)."""
    reactor = MemoryReactorClock()
    config = cli.load_config({"threads": "0", **given})
    service = make_service(config, reactor=reactor, endpoints=[], builders=builders or None)
    service.startService()
    return service, reactor


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_reload_applies_the_new_graceful_timeout() -> None:
    """After a reload with graceful_timeout = 5, shutdown drops what is left after
    5 seconds, not after the 30 the server started with.
    """
    held = Held()
    given = {"proxy": ["/=http://127.0.0.1:1"], "access_log": "off"}
    service, clock = serve(given, proxy=lambda mount, config: held)
    assert service.reload(cli.load_config({**given, "threads": "0", "graceful_timeout": "5"}))
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(held.exchanges) == 1
    assert_stop_drops_after(service, clock, protocol, transport, 5.0)


def test_a_reload_while_the_server_drains_is_ignored() -> None:
    """A SIGHUP during the graceful stop (a reload racing systemd's stop) would build
    new mounts in a process about to exit, and close the ones the draining requests
    were given: it is ignored, with a line saying so, as the master of --workers
    ignores it then.
    """
    held = Held()
    built: list[object] = []

    def proxy(mount: object, config: object) -> Held:
        built.append(mount)
        return held

    given = {"proxy": ["/=http://127.0.0.1:1"], "access_log": "off"}
    service, _ = serve(given, proxy=proxy)
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    done: list[object] = []
    service.stopService().addCallback(done.append)
    serving, mounts = service.config, len(built)
    with capture_log_events() as events:
        assert not service.reload(cli.load_config({**given, "threads": "0"}))
    assert [formatEvent(event) for event in events] == ["Reload ignored: the server is stopping"]
    assert service.config is serving
    assert len(built) == mounts
    held.exchanges[0].start_response(200, [])
    held.exchanges[0].finish(b"done")
    close_if_asked(protocol, transport)
    assert done == [None]


def test_reload_switches_the_access_log_to_the_new_path(tmp_path: Path) -> None:
    """A new access_log path takes effect on reload: later lines go to the new file,
    the old one is closed and gets no more.
    """
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    given = {"app": "tests.apps:hello", "access_log": str(old)}
    service, _clock = serve(given)
    request(service, b"a", b"/before")
    assert service.reload(cli.load_config({**given, "threads": "0", "access_log": str(new)}))
    request(service, b"a", b"/after")
    assert [line.split('"')[1] for line in lines(old)] == ["GET /before HTTP/1.1"]
    assert [line.split('"')[1] for line in lines(new)] == ["GET /after HTTP/1.1"]
    assert service.config is not None and service.config.access_log == str(new)
    # Off and back on: nothing is logged meanwhile.
    assert service.reload(cli.load_config({**given, "threads": "0", "access_log": "off"}))
    request(service, b"a", b"/unlogged")
    assert service.factory.response_log is None
    assert service.reload(cli.load_config({**given, "threads": "0"}))
    request(service, b"a", b"/again")
    service.stopService()
    assert [line.split('"')[1] for line in lines(old)] == [
        "GET /before HTTP/1.1",
        "GET /again HTTP/1.1",
    ]
    assert len(lines(new)) == 1


def test_the_access_log_format_applies_and_a_reload_changes_it(tmp_path: Path) -> None:
    """access_log_format and access_log_escape shape the lines, and a reload that
    changes only them (same file) applies to the next line.
    """
    path = tmp_path / "access.log"
    given = {
        "app": "tests.apps:hello",
        "access_log": str(path),
        "access_log_format": '{"uri":"$request_uri","status":$status}',
        "access_log_escape": "json",
    }
    service, _clock = serve(given)
    request(service, b"a", b'/say"hi"')
    changed = {**given, "threads": "0", "access_log_format": "$status $request_method $host"}
    del changed["access_log_escape"]
    assert service.reload(cli.load_config(changed))
    request(service, b"Shop.Example:8080", b"/")
    del changed["access_log_format"]
    assert service.reload(cli.load_config(changed))
    request(service, b"a", b"/combined")
    service.stopService()
    first, second, third = lines(path)
    assert json.loads(first) == {"uri": '/say"hi"', "status": 200}
    assert second == "200 GET shop.example"
    assert '"GET /combined HTTP/1.1" 200 13 "-" "-"' in third


def test_an_access_log_format_built_in_python_is_checked() -> None:
    """A ServerConfig made in Python skips the command line's checks: an unknown
    variable is the same one-line error, at start and refused on reload.
    """
    bad = ServerConfig(threads=0, access_log="-", access_log_format="$status $bogus")
    with pytest.raises(ConfigError, match=r"--access-log-format: unknown variable \$bogus"):
        make_service(bad, hello, reactor=MemoryReactorClock())
    service = make_service(
        ServerConfig(threads=0, access_log="off"), hello, reactor=MemoryReactorClock()
    )
    with capture_log_events() as events:
        assert not service.reload(bad)
    assert any("unknown variable $bogus" in formatEvent(event) for event in events)


def test_reload_keeps_the_old_access_log_when_the_new_cannot_open(tmp_path: Path) -> None:
    """An access_log the server cannot open does not break the reload: the rest of
    the configuration applies, the log keeps going to the old file, one error line
    says why, and the next reload tries the new path again.
    """
    old, unopenable = tmp_path / "old.log", tmp_path / "no-such-dir" / "access.log"
    given = {"app": "tests.apps:hello", "access_log": str(old)}
    service, _clock = serve(given)
    changed = {"app": "tests.apps:environ", "threads": "0", "access_log": str(unopenable)}
    with capture_log_events() as events:
        assert service.reload(cli.load_config(changed))
    errors = [formatEvent(event) for event in events if event["log_level"] == LogLevel.error]
    assert len(errors) == 1
    assert str(unopenable) in errors[0] and "No such file or directory" in errors[0]
    [response] = parse_responses(request(service, b"a", b"/"))
    assert json.loads(response.body)["PATH_INFO"] == "/"  # the new application
    assert len(lines(old)) == 1
    assert service.config is not None and service.config.access_log == str(old)
    unopenable.parent.mkdir()
    assert service.reload(cli.load_config(changed))
    request(service, b"a", b"/")
    service.stopService()
    assert (len(lines(old)), len(lines(unopenable))) == (1, 1)


def test_reload_warns_only_for_settings_that_need_a_restart(tmp_path: Path) -> None:
    """Changes to listen and threads are logged as needing a restart; graceful_timeout,
    access_log and limits are applied without a warning.
    """
    given = {"app": "tests.apps:hello", "access_log": "off"}
    service, _clock = serve(given)
    applied = {**given, "threads": "0", "graceful_timeout": "1", "max_body": "1k"}
    applied["access_log"] = str(tmp_path / "access.log")
    with capture_log_events() as events:
        assert service.reload(cli.load_config(applied))
    assert [e for e in events if e["log_level"] >= LogLevel.warn] == []
    assert service.factory.settings.max_body == 1024
    with capture_log_events() as events:
        assert service.reload(cli.load_config({**applied, "threads": "4", "listen": "tcp:81"}))
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert sorted(warnings) == [
        "Reload: listen changed; it takes effect at the next restart",
        "Reload: threads changed; it takes effect at the next restart",
    ]
    service.stopService()


@pytest.mark.parametrize(
    ("peer", "seen"),
    [
        ("10.1.2.3", {"wsgi.url_scheme": "https", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}),
        ("192.0.2.50", {"wsgi.url_scheme": "http", "HTTP_X_FORWARDED_FOR": None}),
    ],
    ids=["trusted", "untrusted"],
)
def test_trusted_proxies_decide_what_the_application_sees(
    peer: str, seen: dict[str, str | None]
) -> None:
    """--trusted-proxies applies to applications as to proxy mounts: a trusted
    proxy's fields reach the app and set its scheme; another client's are dropped.
    """
    from twisted.internet.address import IPv4Address

    given = {"app": "tests.apps:environ", "threads": "0", "trusted_proxies": "10.0.0.0/8"}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    protocol = service.factory.buildProtocol(IPv4Address("TCP", peer, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )
    [response] = parse_responses(transport.value())
    environ = json.loads(response.body)
    for key, value in seen.items():
        assert environ.get(key) == value, key


class PausablePort:
    """A listening port that records being paused and resumed (as tcp.Port reads)."""

    def __init__(self) -> None:
        self.reading = True
        self.connected = True
        self.changes: list[bool] = []

    def stopReading(self) -> None:
        self.reading = False
        self.changes.append(False)

    def startReading(self) -> None:
        self.reading = True
        self.changes.append(True)

    def stopListening(self) -> None:
        pass

    def getHost(self) -> str:
        return "fake"


@implementer(IStreamServerEndpoint)
class PausablePortEndpoint:
    def __init__(self) -> None:
        self.port = PausablePort()

    def listen(self, factory: Any) -> Deferred[Any]:
        return succeed(self.port)


def limited_service(
    max_connections: int,
) -> tuple[HTTPFactory, Held, PausablePort, ServerService]:
    """A started service at ``max_connections`` whose handler keeps its exchanges, on
    a port that records being paused and resumed.
    """
    clock = MemoryReactorClock()
    held = Held()
    factory = HTTPFactory(held, settings=HttpSettings(max_connections=max_connections), clock=clock)
    endpoint = PausablePortEndpoint()
    service = ServerService(factory, [("tcp:8080", endpoint)], clock=clock)
    service.startService()
    return factory, held, endpoint.port, service


def test_at_max_connections_the_server_stops_accepting_until_one_closes() -> None:
    """As nginx at worker_connections: the listening port is paused at the limit
    (new connections wait in the backlog) and resumed when a connection closes.
    """
    factory, _, port, service = limited_service(2)
    first, _ = open_connection(factory)
    assert port.changes == []
    with capture_log_events() as events:
        open_connection(factory)
    assert port.changes == [False]
    assert any("2 connections open (max_connections)" in formatEvent(e) for e in events)
    first.connectionLost(Failure(ConnectionDone()))
    assert port.reading and port.changes == [False, True]
    service.stopService()


def test_connections_accepted_past_the_limit_in_one_read_are_closed_at_once() -> None:
    """Pausing the port does not stop the accept loop already running (Twisted
    accepts up to 100 waiting connections in one read): those beyond the limit
    are closed at once instead of being served past it.
    """
    factory, _, port, service = limited_service(2)
    opened = [open_connection(factory) for _ in range(2)]
    with capture_log_events() as events:
        late = [open_connection(factory) for _ in range(3)]
    assert len(factory.connections) == 2
    assert all(aborted(transport) for _, transport in late)
    assert not any(aborted(transport) for _, transport in opened)
    warnings = [formatEvent(e) for e in events if "beyond max_connections (2)" in formatEvent(e)]
    assert len(warnings) == 1
    for protocol, _ in late:
        protocol.connectionLost(Failure(ConnectionDone()))
    assert len(factory.connections) == 2 and port.changes == [False]
    opened[0][0].connectionLost(Failure(ConnectionDone()))
    assert port.changes == [False, True]
    service.stopService()


def test_a_port_closed_without_being_forgotten_is_not_read_again() -> None:
    """A library user may close a port without remove_listeners(): a connection
    closing then must not make the closed port read (Twisted raises on it, inside
    the connection's close, and a shutdown waiting for it would never end).
    """
    clock = MemoryReactorClock()
    factory = HTTPFactory(Held(), settings=HttpSettings(max_connections=1), clock=clock)
    port = PausablePort()
    factory.add_listener(port)
    protocol, _ = open_connection(factory)
    assert port.changes == [False]
    port.connected = False  # as tcp.Port after its connectionLost
    closed = factory.shut_down()
    protocol.connectionLost(Failure(ConnectionDone()))
    assert port.changes == [False]
    assert closed.called


def test_at_the_limit_a_response_gives_its_connection_up_for_those_waiting() -> None:
    """Idle connections were closed only at the moment the limit was reached: one
    that went idle later held its place for the whole keep-alive timeout while new
    clients waited in the backlog (8 s in the docs audit). A response made at the
    limit says Connection: close and closes (announced, so the client does not send
    its next request on a connection closing under it), and accepting resumes.
    """
    factory, held, port, service = limited_service(2)
    (first, first_transport), (second, second_transport) = (
        open_connection(factory),
        open_connection(factory),
    )
    assert port.changes == [False]
    first.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    [exchange] = held.exchanges
    exchange.start_response(204, [])
    exchange.finish()
    [response] = parse_responses(first_transport.value())
    assert response.status == 204
    assert (b"connection", b"close") in response.headers
    assert first_transport.disconnecting
    first.connectionLost(Failure(ConnectionDone()))
    assert port.changes == [False, True]
    second.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # below the limit now
    held.exchanges[-1].start_response(204, [])
    held.exchanges[-1].finish()
    [kept] = parse_responses(second_transport.value())
    assert (b"connection", b"close") not in kept.headers
    assert not second_transport.disconnecting
    service.stopService()


def test_at_the_limit_an_idle_connection_is_closed_for_a_client_waiting() -> None:
    """A response whose head went out (keep-alive) before the limit was reached ends
    while a client waits: the connection went idle for the whole keep-alive timeout
    (the newcomer answered after 6 s instead of 1 in a review). It closes once idle
    for IDLE_GRACE, as nginx drains a keep-alive connection when it needs one; not
    at once, which lost the request its client sent right after the answer (47
    to 438 POSTs in 20 s in an audit).
    """
    # Its port cannot be asked whether a client waits: it counts as waited on.
    factory, held, _, service = limited_service(2)
    clock: Any = factory.clock
    streaming, transport = open_connection(factory)
    streaming.dataReceived(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
    [exchange] = held.exchanges
    exchange.start_response(200, [(b"Content-Type", b"text/plain")])
    exchange.write(b"first")  # the head goes out: keep-alive, below the limit
    open_connection(factory)  # the limit is reached
    exchange.finish(b"last")
    assert not transport.disconnecting
    clock.advance(IDLE_GRACE - DRAIN_INTERVAL)
    assert not transport.disconnecting
    # The next request in that time is answered, with Connection: close.
    streaming.dataReceived(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    clock.advance(IDLE_GRACE)
    assert not transport.disconnecting  # busy: not idle
    held.exchanges[-1].start_response(204, [])
    held.exchanges[-1].finish()
    last = parse_responses(transport.value())[-1]
    assert (last.status, last.header(b"connection")) == (204, b"close")
    assert closing(transport)
    service.stopService()


def test_at_the_limit_connections_longest_idle_are_closed_first_after_a_grace() -> None:
    """While a client waits, connections waiting for a request are closed once
    idle for IDLE_GRACE, longest idle first, looked for every DRAIN_INTERVAL; one
    that never sent a request counts (nginx reuses those too: four silent sockets
    held a newcomer out for the header timeout in an audit).
    """
    factory, held, _, service = limited_service(3)
    clock: Any = factory.clock
    _silent, silent = open_connection(factory)
    clock.advance(0.1)
    answered, kept_alive = open_connection(factory)
    answered.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    held.exchanges[-1].start_response(204, [])
    held.exchanges[-1].finish()
    busy_protocol, busy = open_connection(factory)  # the limit is reached
    busy_protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    closed: list[str] = []
    for _ in range(8):
        clock.advance(DRAIN_INTERVAL / 2)
        for name, transport in (("silent", silent), ("kept-alive", kept_alive)):
            if transport.disconnecting and name not in closed:
                closed.append(name)
    assert closed == ["silent", "kept-alive"]
    assert not busy.disconnecting
    service.stopService()


def test_a_port_closing_at_the_limit_is_not_resumed() -> None:
    """Once the service stops, a connection closing does not start the port again."""
    factory, _, port, service = limited_service(1)
    protocol, _ = open_connection(factory)
    service.stopService()
    protocol.connectionLost(Failure(ConnectionDone()))
    assert port.changes == [False]


def test_max_connections_0_follows_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 means a third of the open-files limit less the descriptors kept for the
    process: each connection may hold two more (a file or an upstream connection,
    and a response spool's temporary file); with the whole limit, proxying and
    static files failed with EMFILE in an audit.
    """
    import resource

    from twistwsgi import service as service_module

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    config = cli.load_config({"app": "tests.apps:hello"})
    assert service_module.server_settings(config).max_connections == (1024 - 128) // 3
    given = cli.load_config({"app": "tests.apps:hello", "max_connections": "300"})
    assert service_module.server_settings(given).max_connections == 300
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert service_module.server_settings(config).max_connections == 0


def test_at_the_limit_idle_keep_alive_connections_are_closed() -> None:
    """Reaching max_connections closes connections waiting between requests (as
    nginx drains its keep-alive ones), so waiting clients get in; a connection with
    a request in progress is kept.
    """
    clock = MemoryReactorClock()
    held = Held()
    factory = HTTPFactory(held, settings=HttpSettings(max_connections=3), clock=clock)
    idle = []
    for _ in range(2):
        protocol, transport = open_connection(factory)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        exchange = held.exchanges[-1]
        exchange.start_response(200, [(b"Content-Length", b"0")])
        exchange.finish()
        idle.append(transport)
    clock.advance(IDLE_GRACE)
    busy_protocol, busy = open_connection(factory)
    busy_protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [transport.disconnecting for transport in idle] == [True, True]
    assert not busy.disconnecting


def test_an_answered_connection_gets_the_whole_grace_whatever_its_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The grace counts from the end of the last response, not from the connection's
    start: an old connection just answered is not closed under its next request.
    When one at a time may go, the one idle longest goes first.
    """
    from twistwsgi.http import protocol as protocol_module

    monkeypatch.setattr(protocol_module, "_IDLE_DRAIN_BATCH", 1)
    factory, held, _, service = limited_service(3)
    clock: Any = factory.clock
    old, old_transport = open_connection(factory)
    clock.advance(10)
    _young, young_transport = open_connection(factory)  # idle since 10, never asked
    clock.advance(1)
    old.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    held.exchanges[-1].start_response(204, [])
    held.exchanges[-1].finish()  # answered at 11: idle since 11
    busy, _ = open_connection(factory)  # the limit is reached
    busy.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    clock.advance(DRAIN_INTERVAL)
    assert (closing(young_transport), closing(old_transport)) == (True, False)
    clock.advance(IDLE_GRACE - 2 * DRAIN_INTERVAL)
    assert not closing(old_transport)  # idle since 11: still within its grace
    clock.advance(2 * DRAIN_INTERVAL)
    assert closing(old_transport)
    service.stopService()


def test_connections_are_closed_longest_idle_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from twistwsgi.http import protocol as protocol_module

    monkeypatch.setattr(protocol_module, "_IDLE_DRAIN_BATCH", 1)
    factory, _, _, service = limited_service(6)
    clock: Any = factory.clock
    transports = []
    for _ in range(5):
        transports.append(open_connection(factory)[1])
        clock.advance(1)
    busy, _ = open_connection(factory)  # the limit is reached
    busy.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    order: list[int] = []
    for _ in range(5):
        clock.advance(DRAIN_INTERVAL)
        order += [
            n for n, transport in enumerate(transports) if closing(transport) and n not in order
        ]
    assert order == [0, 1, 2, 3, 4]
    service.stopService()


def test_an_upgrade_answered_without_switching_starts_its_idle_time_then() -> None:
    """After an Upgrade request answered as an ordinary one, the connection goes on
    with HTTP/1.1 and is idle from then: not since it opened (which closed it at
    once for a waiting client, under its next request).
    """
    factory, held, _, service = limited_service(3)
    clock: Any = factory.clock
    upgraded, transport = open_connection(factory)
    clock.advance(10)
    upgraded.dataReceived(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    held.exchanges[-1].start_response(200, [(b"Content-Length", b"0")])
    held.exchanges[-1].finish()
    for _ in range(2):
        busy, _ = open_connection(factory)
        busy.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    clock.advance(DRAIN_INTERVAL)
    assert not closing(transport)
    clock.advance(IDLE_GRACE)
    assert closing(transport)
    service.stopService()


class GoneTransport(StringTransport):
    """A connection whose socket Twisted has already dropped."""

    def getHandle(self) -> Any:
        raise AttributeError("socket")


def test_an_idle_connection_whose_socket_is_gone_is_closed_quietly() -> None:
    factory = HTTPFactory(Held(), settings=HttpSettings(), clock=MemoryReactorClock())
    protocol = factory.buildProtocol(None)
    transport = GoneTransport()
    protocol.makeConnection(transport)
    assert protocol.close_if_idle()
    assert closing(transport)


class PeekableTransport(StringTransport):
    """A StringTransport whose socket the protocol can peek into (one end of a pair)."""

    def __init__(self, handle: socket.socket) -> None:
        super().__init__()
        self._handle = handle

    def getHandle(self) -> socket.socket:
        return self._handle


@dataclass
class SocketConnection:
    """A protocol on one end of a socket pair; the test is the client at the other."""

    protocol: Any
    transport: PeekableTransport
    server_end: socket.socket
    client_end: socket.socket
    clock: MemoryReactorClock
    held: Held


@contextlib.contextmanager
def socket_connection(
    *,
    settings: HttpSettings | None = None,
    clock: MemoryReactorClock | None = None,
    transport_class: type[PeekableTransport] = PeekableTransport,
) -> Iterator[SocketConnection]:
    """Connect a protocol to one end of a socket pair (closed afterwards)."""
    held = Held()
    clock = clock or MemoryReactorClock()
    factory = HTTPFactory(held, settings=settings or HttpSettings(), clock=clock)
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        protocol = factory.buildProtocol(None)
        transport = transport_class(server_end)
        protocol.makeConnection(transport)
        yield SocketConnection(protocol, transport, server_end, client_end, clock, held)


def test_a_connection_whose_next_request_has_arrived_is_not_closed() -> None:
    """Bytes in the socket the reactor has not read yet are a request: closing
    would reset the connection under it. It is read and answered instead.
    """
    with socket_connection(settings=HttpSettings(max_connections=1)) as connection:
        connection.client_end.sendall(b"GET / HTTP/1.1\r\n")
        connection.clock.advance(IDLE_GRACE + DRAIN_INTERVAL)
        assert not connection.transport.disconnecting
        connection.server_end.recv(100)  # the reactor reads it: nothing waits any more
        connection.clock.advance(DRAIN_INTERVAL)
        assert connection.transport.disconnecting


def _read_and_answer_closing(connection: SocketConnection) -> None:
    """Let the protocol read what waits in the socket (as the reactor would next), then
    answer the request: the response says Connection: close and the connection ends.
    """
    connection.protocol.dataReceived(connection.server_end.recv(100))
    [exchange] = connection.held.exchanges
    exchange.start_response(200, [(b"Content-Length", b"2")])
    exchange.finish(b"ok")
    [response] = parse_responses(connection.transport.value())
    assert (response.status, response.header(b"connection")) == (200, b"close")
    assert connection.transport.disconnecting


def test_a_shutdown_answers_a_next_request_that_has_arrived_before_closing() -> None:
    """A keep-alive client's next request already in the socket when the server
    stops (a reload replacing the worker) is read and answered with Connection:
    close, not reset under it.
    """
    with socket_connection() as connection:
        connection.clock.advance(IDLE_GRACE)  # (idle long enough to close, but for the bytes)
        connection.client_end.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        connection.protocol.close_when_idle()
        assert not connection.transport.disconnecting
        _read_and_answer_closing(connection)


def test_a_request_arriving_as_the_shutdown_grace_ends_is_answered() -> None:
    """A connection spared for IDLE_GRACE (just answered) whose next request is in
    the socket when the grace ends is not closed under it: the reactor runs its
    timers before it reads, so the timer finds the request unread. It is read and
    answered, with Connection: close.
    """
    with socket_connection() as connection:
        connection.protocol.close_when_idle()  # (just connected: spared for IDLE_GRACE)
        assert not connection.transport.disconnecting
        connection.client_end.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        connection.clock.advance(IDLE_GRACE)  # the timer fires before the reactor reads
        assert not connection.transport.disconnecting
        _read_and_answer_closing(connection)


def test_a_keep_alive_timeout_answers_a_request_arriving_as_it_ends() -> None:
    """The keep-alive timeout likewise leaves a request already in the socket to be
    read; a connection with nothing there closes at its timeout, its FIN sent then.
    """
    clock = MemoryReactorClock()
    settings = HttpSettings()
    with (
        socket_connection(clock=clock, transport_class=SocketTransport) as arriving,
        socket_connection(clock=clock, transport_class=SocketTransport) as empty,
    ):
        arriving.client_end.sendall(b"GET / HTTP/1.1\r\n")
        clock.advance(settings.header_timeout)
        assert [arriving.transport.disconnecting, empty.transport.disconnecting] == [
            False,
            True,
        ]
        empty.client_end.setblocking(False)
        assert empty.client_end.recv(1) == b""  # its FIN went as the timeout closed it


class SocketTransport(PeekableTransport):
    """A PeekableTransport that tells what it has not sent, as tcp.Connection does."""

    def __init__(self, handle: socket.socket) -> None:
        super().__init__(handle)
        # tcp.Connection's buffer of what the kernel did not take yet.
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0


def test_a_shutdown_sends_its_fin_as_it_decides_an_idle_connection_closes() -> None:
    """The FIN leaves when the socket is found empty, not a reactor turn later.

    Twisted's loseConnection closes on the next write event: a request the client
    sends meanwhile (before any FIN reached it, so it could not know) is left
    unread, and the close resets the connection under it. Sent at once, the FIN
    tells the client before it sends (RFC 9112 9.6); only a request already on the
    wire as the FIN leaves still meets the close, as with any keep-alive timeout.
    """
    with socket_connection(transport_class=SocketTransport) as connection:
        connection.clock.advance(IDLE_GRACE)
        connection.protocol.close_when_idle()
        assert connection.transport.disconnecting
        connection.client_end.setblocking(False)
        assert connection.client_end.recv(1) == b""  # the server's FIN, already there


def test_a_shutdown_keeps_its_fin_behind_a_response_still_being_sent() -> None:
    """An idle connection whose last response is still in the transport's buffer
    (a slow reader) closes after it, as loseConnection does: no early FIN.
    """
    with socket_connection(transport_class=SocketTransport) as connection:
        assert isinstance(connection.transport, SocketTransport)
        connection.transport.dataBuffer = b"the tail of the last response"
        connection.clock.advance(IDLE_GRACE)
        connection.protocol.close_when_idle()
        assert connection.transport.disconnecting
        connection.client_end.setblocking(False)
        with pytest.raises(BlockingIOError):
            connection.client_end.recv(1)


class RecordingPort(PausablePort):
    """A port that adds its name to a shared list each time it resumes."""

    def __init__(self, name: str, started: list[str]) -> None:
        super().__init__()
        self.name = name
        self.started = started

    def startReading(self) -> None:
        super().startReading()
        self.started.append(self.name)


def test_each_resume_starts_with_another_listener() -> None:
    """The reactor reports the first port resumed first, and its accept batch took
    all the room each time: clients of a second listener waited for ever (6 of 8
    timed out at 15 s in an audit). The order rotates.
    """
    clock = MemoryReactorClock()
    factory = HTTPFactory(Held(), settings=HttpSettings(max_connections=1), clock=clock)
    started: list[str] = []
    for name in ("a", "b", "c"):
        port = RecordingPort(name, started)
        factory.add_listener(port)
    for _ in range(3):
        protocol, _ = open_connection(factory)
        protocol.connectionLost(Failure(ConnectionDone()))
    assert started == ["b", "c", "a", "c", "a", "b", "a", "b", "c"]


def test_reaching_the_limit_is_logged_once_in_a_while() -> None:
    """A server held at its limit reaches it each time a connection closes: two
    lines per connection flooded the log (9 MB in 34 s in an audit). One warning
    per CAPACITY_LOG_INTERVAL, the "again" line only after a warning, and none
    once shutting down.
    """
    factory, _, _, service = limited_service(1)
    clock: Any = factory.clock
    with capture_log_events() as events:
        for _ in range(5):
            protocol, _ = open_connection(factory)
            protocol.connectionLost(Failure(ConnectionDone()))
        clock.advance(CAPACITY_LOG_INTERVAL)
        protocol, _ = open_connection(factory)
        service.stopService()
        protocol.connectionLost(Failure(ConnectionDone()))
    lines = [formatEvent(event) for event in events if "onnections" in formatEvent(event)]
    assert [line.split(" ")[0] for line in lines if "max_connections" in line] == ["1", "1"]
    assert lines.count("Accepting connections again") == 1


def test_a_reload_raising_the_limit_resumes_accepting_at_once() -> None:
    """A paused server given a higher max_connections on reload accepts again without
    waiting for a connection to close (a long tunnel might never).
    """
    factory, _, port, service = limited_service(1)
    protocol, _ = open_connection(factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # busy: not drained
    assert port.changes == [False]
    factory.update_settings(HttpSettings(max_connections=10))
    assert port.changes == [False, True]
    service.stopService()


def test_new_settings_bring_their_server_header() -> None:
    """update_settings (a reload) kept sending the Server value the factory was made with."""
    clock = MemoryReactorClock()
    held = Held()
    factory = HTTPFactory(held, settings=HttpSettings(server_header=b"old"), clock=clock)
    factory.update_settings(HttpSettings(server_header=b"new"))
    protocol, transport = open_connection(factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    [exchange] = held.exchanges
    exchange.start_response(204, [])
    exchange.finish()
    [response] = parse_responses(transport.value())
    assert (b"server", b"new") in response.headers


# -- the service's life cycle, as a library user drives it ----------------------------------


def test_a_stopped_service_serves_again_when_started(tmp_path: Path) -> None:
    """IService allows stop then start (a MultiService does it to its children): the
    restarted service listened but closed every connection at once, its access log
    closed; its proxy mounts' pools and health checks closed too.
    """
    log = tmp_path / "access.log"
    given = {
        "app": "tests.apps:hello",
        "proxy": ["/api=http://127.0.0.1:9000"],
        "access_log": str(log),
    }
    reactor = MemoryReactorClock()
    config = cli.load_config({"threads": "0", **given})
    endpoints = [("tcp:8080", serverFromString(reactor, "tcp:8080"))]
    service = make_service(config, reactor=reactor, endpoints=endpoints)
    service.startService()
    request(service, b"a", b"/first")
    proxy_before = proxy_handler(service)
    stopped: list[object] = []
    service.stopService().addCallback(stopped.append)
    assert stopped == [None]
    assert proxy_before.group.peers[0].target.closed
    service.startService()
    assert len(reactor.tcpServers) == 2  # listening again
    [response] = parse_responses(request(service, b"a", b"/second"))
    assert (response.status, response.body) == (200, b"Hello, World!")
    assert [line.split('"')[1] for line in lines(log)] == [
        "GET /first HTTP/1.1",
        "GET /second HTTP/1.1",
    ]
    proxy_after = proxy_handler(service)
    assert proxy_after is not proxy_before and not proxy_after.group.peers[0].target.closed
    service.stopService()


def proxy_handler(service: ServerService) -> Any:
    """The proxy mount's handler of the first host (or the default one)."""
    router: Any = service._router
    [handler] = [h for h in router.table.handlers if hasattr(h, "group")]
    return handler


def test_reload_keeps_the_application_of_the_library_form() -> None:
    """make_service(config, app) then reload(config), to change a limit: the new table
    came from config's hosts, which that form has none of, and every request was a
    404 after a reload that reported success. A configuration with hosts is refused.
    """
    reactor = MemoryReactorClock()
    service = make_service(ServerConfig(threads=0, access_log="off"), hello, reactor=reactor)
    service.startService()
    assert service.reload(ServerConfig(threads=0, access_log="off", graceful_timeout=5))
    [response] = parse_responses(request(service, b"a", b"/"))
    assert (response.status, response.body) == (200, b"Hello, World!")
    with_hosts = cli.load_config({"threads": "0", "access_log": "off", "app": "tests.apps:environ"})
    with capture_log_events() as events:
        assert not service.reload(with_hosts)
    assert any("built with an application" in formatEvent(event) for event in events)
    [response] = parse_responses(request(service, b"a", b"/"))
    assert response.body == b"Hello, World!"
    service.stopService()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"graceful_timeout": "5"}, "--graceful-timeout: expected a number of seconds"),
        ({"thread_queue_timeout": -1.0}, "--thread-queue-timeout: expected a duration >= 0"),
    ],
)
def test_a_reload_checks_a_configuration_built_in_python(
    given: dict[str, Any], message: str
) -> None:
    """reload() took the numbers make_service checks unchecked: graceful_timeout="5"
    broke the drain of the next stop, a negative thread_queue_timeout raised a bare
    ValueError out of the reload. It is refused, and the old configuration serves on.
    """
    reactor = MemoryReactorClock()
    service = make_service(ServerConfig(threads=0, access_log="off"), hello, reactor=reactor)
    service.startService()
    with capture_log_events() as events:
        assert not service.reload(ServerConfig(threads=0, access_log="off", **given))
    assert any(message in formatEvent(event) for event in events)
    [response] = parse_responses(request(service, b"a", b"/"))
    assert response.body == b"Hello, World!"
    done: list[object] = []
    service.stopService().addCallback(done.append)
    assert done == [None]


def app_handler(service: ServerService, host: str = "a") -> WSGIHandler:
    """The WSGI handler mounted at / for ``host``."""
    router = service.factory.handler
    assert isinstance(router, Router)
    mounts = router.table.hosts.lookup(host)
    assert mounts is not None
    mount = mounts.lookup(b"/")
    assert mount is not None
    assert isinstance(mount.target, WSGIHandler)
    return mount.target


def test_request_buffering_reaches_every_application_and_a_reload_changes_it() -> None:
    """The setting reaches the applications of the configuration (and of the
    library form), and a SIGHUP reload switches it for new requests.
    """
    given = {"app": "tests.apps:hello", "access_log": "off", "request_buffering": "on"}
    service, _clock = serve(given)
    assert app_handler(service).request_buffering
    assert app_handler(service).queue_timeout == 60.0
    changed = {**given, "threads": "0", "request_buffering": "off", "thread_queue_timeout": "5s"}
    assert service.reload(cli.load_config(changed))
    assert not app_handler(service).request_buffering
    assert app_handler(service).queue_timeout == 5.0
    service.stopService()
    library = make_service(
        ServerConfig(threads=0, access_log="off", request_buffering=True),
        hello,
        reactor=MemoryReactorClock(),
    )
    assert app_handler(library).request_buffering


def test_a_negative_thread_queue_timeout_built_in_python_is_refused() -> None:
    bad = ServerConfig(threads=0, access_log="off", thread_queue_timeout=-1)
    with pytest.raises(ConfigError, match="--thread-queue-timeout: expected a duration >= 0"):
        make_service(bad, hello, reactor=MemoryReactorClock())


@implementer(IStreamServerEndpoint)
class PendingEndpoint:
    """Listens asynchronously: the test decides when, or the caller cancels."""

    def __init__(self) -> None:
        self.cancelled = False
        self.listening: Deferred[Any] = Deferred(lambda _: setattr(self, "cancelled", True))

    def listen(self, factory: Any) -> Deferred[Any]:
        return self.listening


def test_a_stop_cancels_a_listen_still_pending() -> None:
    """Twisted's own endpoint service cancels it: a port that began listening after
    the stop stayed open, owned by a stopped service.
    """
    clock = MemoryReactorClock()
    endpoint = PendingEndpoint()
    factory = make_factory(hello, reactor=clock, threadpool=None)
    service = ServerService(factory, [("onion:80", endpoint)], clock=clock)
    service.startService()
    with capture_log_events() as events:
        service.stopService()
    assert endpoint.cancelled
    assert service.ports == []
    assert not [e for e in events if e["log_level"] in (LogLevel.error, LogLevel.critical)]


def test_a_failed_start_closes_what_it_opened_and_fails_again() -> None:
    """With the second endpoint refused, the first kept listening and a later start
    reported nothing while serving on half the endpoints.
    """
    clock = MemoryReactorClock()
    factory = make_factory(hello, reactor=clock, threadpool=None)
    pool = WorkerPool(1)
    opened = OpeningEndpoint()
    service = ServerService(
        factory, [("tcp:8080", opened), ("tcp:80", RefusingEndpoint())], clock=clock, pool=pool
    )
    with pytest.raises(ListenError):
        service.startService()
    assert service.ports == [] and not service.running and not pool.started
    assert [port.listening for port in opened.ports] == [False]
    with pytest.raises(ListenError):
        service.startService()
    assert [port.listening for port in opened.ports] == [False, False]
    assert service.ports == [] and not service.running


class FakePort:
    def __init__(self) -> None:
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False

    def getHost(self) -> str:
        return "fake"


@implementer(IStreamServerEndpoint)
class OpeningEndpoint:
    """Listens at once, on a port that records whether it was closed."""

    def __init__(self) -> None:
        self.ports: list[FakePort] = []

    def listen(self, factory: Any) -> Deferred[Any]:
        self.ports.append(FakePort())
        return succeed(self.ports[-1])


def test_a_stopped_service_leaves_no_timer_behind() -> None:
    """The "Ready" line's call was left pending on the clock after the stop."""
    clock = MemoryReactorClock()
    service = build(Held(), clock)
    service.startService()
    service.stopService()
    assert clock.getDelayedCalls() == []


def test_make_factory_script_name_is_a_mount() -> None:
    """Under script_name, the application gets its requests with SCRIPT_NAME set;
    requests outside the prefix are a 404, as for a mount from the configuration
    (they reached the application with an empty SCRIPT_NAME).
    """
    from tests.apps import environ

    factory = make_factory(
        environ, reactor=MemoryReactorClock(), threadpool=None, script_name=b"/app/"
    )

    def answer(target: bytes) -> tuple[int, bytes]:
        protocol, transport = open_connection(factory)
        protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        [response] = parse_responses(transport.value())
        return response.status, response.body

    status, body = answer(b"/app/page")
    seen = json.loads(body)
    assert (status, seen["SCRIPT_NAME"], seen["PATH_INFO"]) == (200, "/app", "/page")
    assert answer(b"/other")[0] == 404
    assert answer(b"/application")[0] == 404


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"script_name": b"app"}, "script_name must be empty or start with '/'"),
        ({"script_name": "/app"}, "script_name must be bytes"),
        ({"settings": {"server_header": "custom"}}, "server_header must be bytes"),
        ({"settings": {"max_body": "1m"}}, "max_body must be an int"),
        ({"settings": {"keepalive_timeout": None}}, "keepalive_timeout must be a number"),
        ({"settings": {"max_connections": -1}}, "max_connections must not be negative"),
        ({"settings": {"max_header_count": 0}}, "max_header_count must be more than 0"),
        ({"settings": {"max_request_line": 0}}, "max_request_line must be more than 0"),
        ({"settings": {"body_timeout": float("nan")}}, "body_timeout must be finite"),
        ({"settings": {"header_timeout": float("inf")}}, "header_timeout must be finite"),
        # A NaN queue timeout answered every request 503, the one already running too;
        # "5" failed on a bare comparison; "off" turned request buffering on.
        ({"thread_queue_timeout": float("nan")}, "queue_timeout must be finite"),
        ({"app_timeout": float("inf")}, "app_timeout must be finite"),
        ({"thread_queue_timeout": "5"}, "queue_timeout must be a number of seconds"),
        ({"app_timeout": None}, "app_timeout must be a number of seconds"),
        ({"max_response_buffer": "1m"}, "max_response_buffer must be an int"),
        ({"request_buffering": "off"}, "request_buffering must be True or False"),
        ({"response_buffering": 0}, "response_buffering must be True or False"),
    ],
)
def test_make_factory_refuses_arguments_that_could_not_serve(
    arguments: dict[str, Any], message: str
) -> None:
    """Each of these was accepted, then left connections unanswered or answered 500."""
    with pytest.raises((TypeError, ValueError), match=message):
        given: dict[str, Any] = {"threadpool": None, **arguments}
        if "settings" in given:
            given["settings"] = HttpSettings(**given["settings"])
        make_factory(hello, reactor=MemoryReactorClock(), **given)


def test_a_stop_polls_a_busy_worker_thread_instead_of_blocking_the_reactor() -> None:
    """A request running past the graceful timeout: the stop waited for its thread
    in the reactor thread (up to a second with every other service frozen). It is
    polled on the clock now, and left with a warning after WORKER_STOP_TIMEOUT.
    """
    import threading

    from twistwsgi.service import WORKER_STOP_TIMEOUT

    clock = MemoryReactorClock()
    pool = WorkerPool(1)
    factory = make_factory(hello, reactor=clock, threadpool=pool)
    service = ServerService(factory, [], clock=clock, pool=pool)
    service.startService()
    entered, release = threading.Event(), threading.Event()

    def block() -> None:
        entered.set()
        release.wait(30)

    pool.callInThread(block)
    assert entered.wait(30)
    try:
        done: list[object] = []
        with capture_log_events() as events:
            service.stopService().addCallback(done.append)
            assert done == []  # returned without waiting for the thread
            clock.advance(WORKER_STOP_TIMEOUT)
        assert done == [None]
        assert any("still busy" in formatEvent(event) for event in events)
    finally:
        release.set()


def test_a_worker_left_busy_at_shutdown_is_named_by_its_request() -> None:
    """The warning named the thread only ("twistwsgi-worker-0 is still busy"): which
    view hung was left to guess. It names the request the thread is running.
    """
    import threading

    from twistwsgi.service import WORKER_STOP_TIMEOUT

    entered, release = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        entered.set()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    clock = MemoryReactorClock()
    pool = WorkerPool(1)
    factory = make_factory(slow, reactor=clock, threadpool=pool)
    service = ServerService(factory, [], clock=clock, pool=pool, graceful_timeout=1.0)
    service.startService()
    protocol, transport = open_connection(factory)
    protocol.dataReceived(b"GET /report?year=2026 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert entered.wait(30)
    try:
        with capture_log_events() as events:
            service.stopService()
            clock.advance(1.0)  # the graceful timeout: the connection is dropped
            close_if_asked(protocol, transport)
            for _ in range(int(WORKER_STOP_TIMEOUT / 0.02) + 10):
                clock.advance(0.02)
        lines = [formatEvent(event) for event in events if "still busy" in formatEvent(event)]
        assert lines and "still busy with GET /report?year=2026" in lines[0]
    finally:
        release.set()


def test_a_shutdown_does_not_wait_for_a_body_nobody_reads() -> None:
    """A connection discarding the upload of a request already answered closes at
    once (lingering) when the stop begins: it waited for the whole upload, then for
    the keep-alive timeout.
    """
    from twistwsgi.http.protocol import LINGER_TIMEOUT

    class Refuses:
        def handle(self, exchange: Exchange) -> None:
            exchange.start_response(403, [(b"Content-Length", b"0")])
            exchange.finish()

    clock = MemoryReactorClock()
    factory = HTTPFactory(Refuses(), settings=HttpSettings(max_body=0), clock=clock)
    service = ServerService(factory, [], clock=clock)
    service.startService()
    protocol, transport = open_connection(factory)
    protocol.dataReceived(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n")
    protocol.dataReceived(b"x" * 100_000)
    [response] = parse_responses(transport.value())
    assert response.status == 403
    done: list[object] = []
    service.stopService().addCallback(done.append)
    protocol.dataReceived(b"x" * 100_000)  # read and dropped while lingering
    clock.advance(LINGER_TIMEOUT)
    close_if_asked(protocol, transport)
    assert done == [None]


def test_a_start_during_the_last_stops_drain_is_refused() -> None:
    """The drain of the stop, ending after a restart, stopped the new worker threads
    and closed the new mounts, and its graceful timeout dropped the new connections.
    A start before the stop is over is refused; once it is over, it works.
    """
    clock = MemoryReactorClock()
    held = Held()
    service = build(held, clock)
    service.startService()
    busy_protocol, busy = open_connection(service.factory)
    busy_protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    done: list[object] = []
    service.stopService().addCallback(done.append)
    with pytest.raises(StartError, match="still draining connections"):
        service.startService()
    assert service.running == 0
    held.exchanges[0].start_response(200, [])
    held.exchanges[0].finish(b"done")
    close_if_asked(busy_protocol, busy)
    assert done == [None]
    service.startService()
    assert service.running == 1
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(held.exchanges) == 2
    clock.advance(60)  # the first stop's graceful timeout is long gone: nothing dropped
    assert not aborted(transport)
    service.stopService()


class SlowlyClosingPort(PausablePort):
    """A port whose close ends when the test says, as a TCP port's ends a turn later."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: Deferred[None] = Deferred()

    def stopListening(self) -> Deferred[None]:  # type: ignore[override]
        return self.closed


@implementer(IStreamServerEndpoint)
class SlowlyClosingEndpoint:
    def __init__(self) -> None:
        self.port = SlowlyClosingPort()

    def listen(self, factory: Any) -> Deferred[Any]:
        return succeed(self.port)


def test_a_second_stop_waits_for_the_stop_in_progress() -> None:
    """A MultiService stops every child, even one already stopping: the second stop
    began a teardown of its own, over at once (no port left to close), which let a
    start in while the first was still closing its port; the first stop then drained
    the restarted server, and closed each new connection. The second stop now fires
    when the first does, and a start before that is refused.
    """
    clock = MemoryReactorClock()
    endpoint = SlowlyClosingEndpoint()
    service = ServerService(
        make_factory(hello, reactor=clock, threadpool=None),
        [("tcp:8080", endpoint)],
        clock=clock,
    )
    service.startService()
    first: list[object] = []
    second: list[object] = []
    service.stopService().addCallback(first.append)
    service.stopService().addCallback(second.append)
    assert (first, second) == ([], [])
    with pytest.raises(StartError, match="still draining connections"):
        service.startService()
    endpoint.port.closed.callback(None)
    assert (first, second) == ([None], [None])
    endpoint.port.closed = Deferred()
    service.startService()
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    [response] = parse_responses(transport.value())
    assert response.status == 200 and response.header(b"connection") is None
    assert not closing(transport)


def test_a_failure_twistd_meets_in_the_privileged_start_is_reported_once() -> None:
    """Twistd (the program) calls privilegedStartService, then startService: with an
    on_start_error that does not exit, the second call listened again and reported
    the failure again, naming a port of its own not yet closed.
    """
    clock = MemoryReactorClock()
    messages: list[str] = []
    opened = OpeningEndpoint()
    service = ServerService(
        make_factory(hello, reactor=clock, threadpool=None),
        [("tcp:8080", opened), ("tcp:80", RefusingEndpoint())],
        clock=clock,
        on_start_error=messages.append,
    )
    service.privilegedStartService()
    service.startService()
    assert len(messages) == 1 and "tcp:80" in messages[0]
    assert len(opened.ports) == 1 and not service.running
    service.startService()  # a later start tries again
    assert len(messages) == 2 and len(opened.ports) == 2


def test_make_service_says_when_listen_is_one_string() -> None:
    """ServerConfig(listen="tcp:8080") was read letter by letter: "Unknown endpoint
    type: 't'" pointed away from the mistake.
    """
    with pytest.raises(TypeError, match="listen must be a sequence of endpoint strings"):
        make_service(ServerConfig(listen="tcp:8080"), hello, reactor=MemoryReactorClock())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"threads": -4}, "--threads: expected a whole number >= 0"),
        ({"graceful_timeout": -1.0}, "--graceful-timeout: expected a duration >= 0"),
        # Text the command line would parse is not a number here: threads="4" failed
        # with a bare TypeError, and graceful_timeout="30s" was let through, to fail
        # the drain at the first stop.
        ({"threads": "4"}, "--threads: expected a whole number, got '4'"),
        ({"graceful_timeout": "30s"}, "--graceful-timeout: expected a number of seconds"),
        ({"thread_queue_timeout": "5"}, "--thread-queue-timeout: expected a number of seconds"),
        ({"app_timeout": "5"}, "--app-timeout: expected a number of seconds"),
    ],
)
def test_make_service_checks_a_configuration_built_in_python(
    given: dict[str, Any], message: str
) -> None:
    """A ServerConfig built in Python skips the command line's checks: threads=-4 ran
    the application in the reactor thread, a negative graceful timeout went unsaid.
    """
    with pytest.raises(ConfigError, match=message):
        make_service(ServerConfig(**given), hello, reactor=MemoryReactorClock())
