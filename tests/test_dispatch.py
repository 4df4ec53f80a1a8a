"""Dispatching reactor events without Twisted's per-event log context.

The unit tests call the replacement directly; the socket test shows the real reactor
goes through it (a legacy log line written while handling an event has no
connection prefix any more) and that an exception in a protocol is still logged
with the connection's prefix and drops only that connection.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.python import log
from twisted.trial.unittest import TestCase

from twistwsgi.dispatch import log_context_skipped, restore_log_context, skip_log_context
from twistwsgi.testing import capture_log_events


class Prefixed:
    def logPrefix(self) -> str:
        return "Conn,7,127.0.0.1"


@pytest.fixture
def skipped() -> Any:
    skip_log_context()
    yield
    restore_log_context()


def test_skip_and_restore_are_idempotent() -> None:
    original = log.callWithLogger
    skip_log_context()
    skip_log_context()
    assert log_context_skipped()
    restore_log_context()
    restore_log_context()
    assert log.callWithLogger is original
    assert not log_context_skipped()


@pytest.mark.usefixtures("skipped")
def test_the_handler_runs_with_its_arguments_and_result() -> None:
    assert log.callWithLogger(Prefixed(), lambda a, b=0: a + b, 2, b=3) == 5


@pytest.mark.usefixtures("skipped")
def test_an_exception_is_logged_with_the_prefix_and_not_raised() -> None:
    def broken() -> None:
        raise ValueError("in a handler")

    with capture_log_events() as events:
        assert log.callWithLogger(Prefixed(), broken) is None
    (event,) = [e for e in events if e.get("isError")]
    assert event["failure"].check(ValueError)
    assert event["log_system"] == "Conn,7,127.0.0.1"


@pytest.mark.usefixtures("skipped")
def test_keyboard_interrupt_goes_through() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log.callWithLogger(Prefixed(), interrupted)


class _Shouting(Protocol):
    """Writes a legacy log line for each read, then fails on ``boom``."""

    def dataReceived(self, data: bytes) -> None:
        log.msg("read " + data.decode())
        if b"boom" in data:
            raise RuntimeError("protocol bug")
        self.transport.write(data.upper())  # type: ignore[union-attr]


class RealReactorTests(TestCase):
    async def test_the_reactor_dispatches_through_it(self) -> None:
        skip_log_context()
        self.addCleanup(restore_log_context)
        factory: Any = Factory.forProtocol(_Shouting)
        reactor: Any = global_reactor
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = ("127.0.0.1", port.getHost().port)

        def client() -> tuple[bytes, bytes]:
            with socket.create_connection(address, timeout=10) as good:
                good.sendall(b"hi")
                answer = good.recv(100)
                with socket.create_connection(address, timeout=10) as bad:
                    bad.sendall(b"boom")
                    closed = bad.recv(100)  # b"": the server dropped it
                good.sendall(b"again")
                return answer + good.recv(100), closed

        with capture_log_events() as events:
            answers, closed = await deferToThread(client)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(answers, b"HIAGAIN")
        self.assertEqual(closed, b"")
        reads = [e for e in events if str(e.get("log_text", "")).startswith("read ")]
        self.assertTrue(reads)
        # No connection prefix: the reactor did not push a log context.
        self.assertEqual({e.get("log_system") for e in reads}, {"-"})
        failures = [e["failure"] for e in events if e.get("isError") and "failure" in e]
        self.assertTrue(any(failure.check(RuntimeError) for failure in failures))
