"""A whole server on the real reactor, for the few tests that talk to it with real clients."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.trial.unittest import TestCase

from twistwsgi import cli
from twistwsgi.service import ServerService, make_service


def serve_live(test: TestCase, values: dict[str, Any]) -> ServerService:
    """Start the server the command-line ``values`` describe; stopped after ``test``.

    Listens where ``values`` say (``tcp:0:interface=127.0.0.1`` for a free port);
    the ports are in the service's ``ports``, in the order of ``listen``.
    """
    config = cli.load_config(values)
    service = make_service(
        config, reactor=global_reactor, endpoints=cli.build_endpoints(global_reactor, config)
    )
    service.startService()
    test.addCleanup(service.stopService)
    return service


def port_of(service: ServerService, index: int = 0) -> int:
    """The port the service's ``index``-th listener got."""
    return int(service.ports[index].getHost().port)  # type: ignore[attr-defined]
