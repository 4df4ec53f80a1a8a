"""The server service: listening on endpoints, worker threads, graceful shutdown.

A ``MemoryReactorClock`` records listening and provides time; connections are
in-memory protocols, so shutdown is checked without sockets or real time.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.apps import hello
from twistwsgi.config import ServerConfig
from twistwsgi.http.exchange import Exchange
from twistwsgi.http.protocol import HTTP11Protocol, HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.service import ListenError, ServerService, make_factory, make_service
from twistwsgi.testing import parse_responses
from twistwsgi.threads import WorkerPool


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
        on_listen_error=messages.append,
    )
    service.privilegedStartService()
    assert len(messages) == 1 and "tcp:80" in messages[0]


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
    assert idle.disconnecting
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


def test_graceful_timeout_drops_what_is_left() -> None:
    """A request still running after the graceful timeout has its connection
    dropped, and the shutdown completes.
    """
    clock = MemoryReactorClock()
    held = Held()
    service = build(held, clock, timeout=30.0)
    service.startService()
    protocol, transport = open_connection(service.factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    done: list[object] = []
    service.stopService().addCallback(done.append)
    clock.advance(29.0)
    assert not aborted(transport)
    clock.advance(1.5)
    assert aborted(transport)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert done == [None]


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


def test_library_factory_listens_with_any_endpoint() -> None:
    """make_factory's result is an ordinary Twisted server factory."""
    reactor = MemoryReactorClock()
    factory = make_factory(hello, reactor=reactor, threadpool=None)
    serverFromString(reactor, "unix:/tmp/twistwsgi-test.sock").listen(factory)
    [(address, listened_factory, _backlog, _mode, _lock)] = reactor.unixServers
    assert address == "/tmp/twistwsgi-test.sock"
    assert listened_factory is factory
