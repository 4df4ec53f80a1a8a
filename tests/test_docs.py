"""The documentation stays true: generated pages are current, examples run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from twistwsgi.reference import cli_reference

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    """docs/cli.md is exactly what the settings schema generates."""
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference(), (
        "run: python -m twistwsgi.reference > docs/cli.md"
    )


def test_library_example_runs_two_servers_in_one_reactor() -> None:
    """The library example builds a MultiService that listens with both the WSGI
    server and the echo server on one reactor, and stops cleanly.
    """
    path = ROOT / "docs" / "examples" / "wsgi_and_echo.py"
    spec = importlib.util.spec_from_file_location("wsgi_and_echo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reactor = MemoryReactorClock()
    top = module.build(reactor)
    top.startService()
    ports = sorted(port for port, _factory, _backlog, _interface in reactor.tcpServers)
    assert ports == [8080, 8081]
    echo_factory = next(f for port, f, _, _ in reactor.tcpServers if port == 8081)
    protocol = echo_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"ping\n")
    assert transport.value() == b"ping\n"
    top.stopService()


def test_readme_starts_with_the_two_commands() -> None:
    """The README shows make run and make test before anything else."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block and "make test" in first_block
