r"""A WSGI application and a line-based echo server in one Twisted process.

Run it with ``python docs/examples/wsgi_and_echo.py`` (from a checkout with twistwsgi
installed), then::

    curl http://127.0.0.1:8080/
    printf 'hello\n' | nc -q 1 127.0.0.1 8081

Ctrl-C (SIGINT) or SIGTERM stops both: the web server drains its in-flight
requests first, exactly as under ``twistd wsgi``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from twistwsgi.config import ServerConfig
from twistwsgi.service import make_service


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """An ordinary WSGI application."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello from the WSGI side\n"]


class Echo(LineReceiver):
    """Sends every line back."""

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        """Echo ``line``."""
        self.sendLine(line)


def build(reactor: Any) -> MultiService:
    """Both servers as children of one service, started and stopped together."""
    top = MultiService()
    web = make_service(
        ServerConfig(listen=("tcp:8080:interface=127.0.0.1",), threads=4),
        application,
        reactor=reactor,
    )
    web.setServiceParent(top)
    echo = StreamServerEndpointService(
        serverFromString(reactor, "tcp:8081:interface=127.0.0.1"),
        Factory.forProtocol(Echo),
    )
    echo.setServiceParent(top)
    return top


def main() -> None:
    """Run until SIGINT or SIGTERM."""
    from twisted.internet import reactor  # noqa: PLC0415 - only when run as a script

    top = build(reactor)
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
