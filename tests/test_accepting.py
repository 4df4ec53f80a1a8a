"""Listening ports when accept(2) fails for want of descriptors (EMFILE, ENFILE).

A real Twisted ``tcp.Port`` over a scripted socket, in a memory reactor: each
``doRead`` is one turn of the event loop finding the port readable.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from tests.test_service import Held
from twistwsgi.http.accepting import LOG_INTERVAL, RETRY_DELAY
from twistwsgi.http.protocol import HTTPFactory
from twistwsgi.http.settings import HttpSettings
from twistwsgi.testing import capture_log_events

CLIENT = "client"


class ScriptedSocket:
    """A listening socket whose accept() follows a script, then says EAGAIN."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.closed_clients = 0

    def accept(self) -> tuple[Any, tuple[str, int]]:
        step = self.script.pop(0) if self.script else errno.EAGAIN
        if isinstance(step, int):
            raise OSError(step, os.strerror(step))
        return _Client(self), ("127.0.0.1", 40000)

    def fileno(self) -> int:
        return -1


class _Client:
    def __init__(self, listener: ScriptedSocket) -> None:
        self._listener = listener

    def close(self) -> None:
        self._listener.closed_clients += 1


class Reservation:
    """Twisted's spare descriptor, as its ``_IFileDescriptorReservation``."""

    def __init__(self, *, held: bool) -> None:
        self.held = held
        self.reserved = 0

    def available(self) -> bool:
        return self.held

    def reserve(self) -> None:
        self.reserved += 1
        self.held = True

    def __enter__(self) -> None:
        self.held = False

    def __exit__(self, *exc: object) -> None:
        self.reserve()


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


def listening(reactor: MemoryReactorClock) -> tuple[tcp.Port, ScriptedSocket, HTTPFactory]:
    factory = HTTPFactory(Held(), settings=HttpSettings(), clock=reactor)
    port = tcp.Port(0, factory, reactor=reactor)
    listener = ScriptedSocket()
    port.socket = listener
    port.connected = True
    port.numberAccepts = 100  # (as startListening sets it)
    port.startReading()
    factory.add_listener(port)
    return port, listener, factory


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


def test_without_the_spare_a_failing_port_rests_instead_of_spinning(
    monkeypatch: pytest.MonkeyPatch, reactor: MemoryReactorClock
) -> None:
    """Without Twisted's spare descriptor accept fails and the port stays readable:
    the loop called it again at once, a log line each time (ENFILE, or EMFILE once
    a thread took the spare's slot). The port now rests RETRY_DELAY (nginx's
    accept_mutex_delay), out of the reactor, the spare is taken again, and the
    failures are one line per LOG_INTERVAL.
    """
    reservation = Reservation(held=False)
    monkeypatch.setattr(tcp, "_reservedFD", reservation)
    port, listener, _ = listening(reactor)
    with capture_log_events() as events:
        turns = 0
        while reactor.seconds() < 3 * LOG_INTERVAL:
            if port in reactor.getReaders():
                listener.script = [errno.ENFILE]
                port.doRead()
                turns += 1
            reactor.advance(RETRY_DELAY / 5)
    said = [line for line in lines(events) if "accept" in line.lower()]
    assert turns <= 3 * LOG_INTERVAL / RETRY_DELAY + 1
    assert 2 <= len(said) <= 3
    assert "ENFILE (Too many open files in system)" in said[0]
    assert reservation.reserved == 1  # (ENFILE: the spare, held again, is no help)
    reactor.advance(RETRY_DELAY)
    assert port in reactor.getReaders()


def test_connections_closed_with_the_spare_are_counted_not_logged_each(
    monkeypatch: pytest.MonkeyPatch, reactor: MemoryReactorClock
) -> None:
    """With the spare, Twisted accepts the waiting clients and closes each, with
    three lines a read and one a client: 50 reads were 150 lines. Now one line,
    then one with the counts LOG_INTERVAL later.
    """
    monkeypatch.setattr(tcp, "_reservedFD", Reservation(held=True))
    port, listener, _ = listening(reactor)
    with capture_log_events() as events:
        for _ in range(50):
            listener.script = [errno.EMFILE, CLIENT]
            port.doRead()
            reactor.advance(0.01)
        reactor.advance(LOG_INTERVAL)
    assert listener.closed_clients == 50
    said = lines(events)
    assert len(said) == 2, said
    assert "EMFILE (Too many open files)" in said[0]
    assert "1 new connection(s) closed at once" in said[0]
    assert "49 new connection(s) closed at once" in said[1]
    assert port in reactor.getReaders()


def test_a_port_at_the_connection_limit_stays_paused_after_its_rest(
    monkeypatch: pytest.MonkeyPatch, reactor: MemoryReactorClock
) -> None:
    """The rest ends by reading again only where nothing else paused the port."""
    monkeypatch.setattr(tcp, "_reservedFD", Reservation(held=False))
    port, listener, factory = listening(reactor)
    listener.script = [errno.EMFILE]
    port.doRead()
    assert port not in reactor.getReaders()
    factory.at_capacity = True
    reactor.advance(RETRY_DELAY)
    assert port not in reactor.getReaders()
    factory.at_capacity = False
    listener.script = [errno.ENFILE]
    port.startReading()
    port.doRead()
    factory.remove_listeners()
    reactor.advance(RETRY_DELAY)
    assert port not in reactor.getReaders()
    assert not reactor.getDelayedCalls()


def test_other_events_of_the_port_reach_the_log(
    monkeypatch: pytest.MonkeyPatch, reactor: MemoryReactorClock
) -> None:
    """Only accept failures are summarised: the port's other lines are as before."""
    port, _, _ = listening(reactor)
    with capture_log_events() as events:
        port._logger.info("something else {n}", n=socket.AF_INET.value)
    assert lines(events) == [f"something else {socket.AF_INET.value}"]
