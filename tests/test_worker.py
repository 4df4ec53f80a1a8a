"""A worker process's parts: inherited listeners, the report pipe, the control pipe."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from twistwsgi.worker import InheritedEndpoint, ReportPipe, _Control


def results(deferred: Any) -> list[Any]:
    seen: list[Any] = []
    deferred.addBoth(seen.append)
    return seen


class AnyFamilyReactor(MemoryReactor):
    """MemoryReactor adopts only INET ports; UNIX ones are recorded the same way."""

    def adoptStreamPort(self, fileno: int, addressFamily: int, factory: Any) -> Any:
        self.adoptedPorts.append((fileno, addressFamily, factory))
        return object()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX])
def test_an_inherited_socket_is_adopted_with_its_family_and_then_let_go(
    family: int, short_directory: Path
) -> None:
    """The port holds its own duplicate: the inherited descriptor is closed, so the
    socket ends with the port.
    """
    listener = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        listener.bind(str(short_directory / "s"))
    else:
        listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    listener.listen(1)
    descriptor = listener.detach()
    reactor = AnyFamilyReactor()
    factory = object()
    [port] = results(InheritedEndpoint(reactor, descriptor).listen(factory))
    assert reactor.adoptedPorts == [(descriptor, family, factory)]
    with pytest.raises(OSError):
        os.fstat(descriptor)
    assert port is not None


def test_a_tls_listener_wraps_the_factory_in_tls() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    options = CertificateOptions()
    reactor = MemoryReactor()
    factory = object()
    endpoint = InheritedEndpoint(reactor, listener.detach(), options)
    results(endpoint.listen(factory))
    [(_, family, adopted)] = reactor.adoptedPorts
    assert family == socket.AF_INET
    assert isinstance(adopted, TLSMemoryBIOFactory)
    assert adopted.wrappedFactory is factory
    assert endpoint.tls_options is options


def test_a_descriptor_that_is_no_socket_fails_the_listen() -> None:
    read, write = os.pipe()
    try:
        [outcome] = results(InheritedEndpoint(MemoryReactor(), read).listen(object()))
        assert isinstance(outcome, Failure)
        os.fstat(read)  # still open: nothing was adopted
    finally:
        os.close(read)
        os.close(write)


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
    assert second == {
        "log": {"level": "info", "namespace": "twistwsgi.wsgi", "text": "2 request(s) for /ü"}
    }
    assert third["log"]["level"] == "critical"
    assert third["log"]["text"].startswith("Application error\nTraceback")
    assert "ValueError: broken" in third["log"]["text"]


def test_a_master_that_is_gone_does_not_break_the_worker_reporting() -> None:
    read, write = os.pipe()
    os.close(read)
    stream = os.fdopen(write, "wb", buffering=0)
    ReportPipe(stream).send({"ready": True})  # EPIPE: nothing raised
    stream.close()
    ReportPipe(stream).send({"ready": True})  # closed: nothing raised


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
        {b"reload": lambda: done.append("reload"), b"stop": lambda: done.append("stop")},
    )
    control.childDataReceived("control", b"rel")
    assert done == []
    control.childDataReceived("control", b"oad\nstop\nbogus\n")
    assert done == ["reload", "stop"]


def test_the_end_of_the_control_pipe_stops_the_worker_once() -> None:
    reactor = RunningReactor()
    control = _Control(reactor, {})
    control.childConnectionLost("control", Failure(EOFError()))
    control.childConnectionLost("control", Failure(EOFError()))
    assert reactor.stops == 1
