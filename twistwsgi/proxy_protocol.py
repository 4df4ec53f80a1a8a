"""Listeners behind a load balancer that speaks the PROXY protocol (``haproxy:`` endpoints).

A load balancer that passes TCP through (HAProxy in ``mode tcp``, AWS's Network
Load Balancer, a Kubernetes ingress with ``use-proxy-protocol``) opens each of its
connections to the server with a PROXY protocol header, version 1 (text) or 2
(binary), naming the client it accepted. With ``--listen haproxy:tcp:8080`` the
server reads that header before anything else, and the client it names is the
connection's peer everywhere: ``REMOTE_ADDR``, the access log, ``allow``/``deny``
and the limits, the forwarding headers sent upstream (nginx's ``listen ...
proxy_protocol`` with ``real_ip_header proxy_protocol``; gunicorn's
``--proxy-protocol``). A connection that does not open with a valid header is
closed. Whoever can connect to such a listener can claim any address: it must be
reachable by the load balancer only.

Twisted reads the header (:mod:`twisted.protocols.haproxy`), but its ``haproxy:``
endpoint wraps the endpoint it is given as a whole, so that over ``ssl:`` it
expects the header inside the TLS session, where no load balancer sends it (the
header comes first on the connection, then the client's TLS handshake).
:class:`ProxyProtocolEndpoint` reads it before TLS: the listener is the wrapped
endpoint's socket with TLS taken off, and the connection goes through the header,
then TLS, then HTTP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

__all__ = ["ProxyProtocolEndpoint", "proxy_protocol_factory"]


def proxy_protocol_factory(factory: IProtocolFactory, tls_options: Any | None) -> Any:
    """``factory`` behind the PROXY header, and behind TLS first if ``tls_options`` is given.

    The header is read on the connection as it arrives; what follows is TLS (with
    ``tls_options``: a server's context factory), then what ``factory`` speaks.
    """
    if tls_options is not None:
        factory = TLSMemoryBIOFactory(tls_options, False, factory)
    return HAProxyWrappingFactory(factory)


@implementer(IStreamServerEndpoint)
class ProxyProtocolEndpoint:
    """Listens as ``wrapped`` does, each connection opening with a PROXY header.

    Args:
        wrapped: the endpoint the load balancer connects to (``tcp:``, ``unix:``,
            ``ssl:``, ...).

    Attributes:
        wrapped: as given; its socket is the one shared with worker processes.
        tls_options: the context factory of a wrapped ``ssl:`` endpoint, else
            ``None``; TLS begins after the header.
    """

    def __init__(self, wrapped: IStreamServerEndpoint) -> None:
        self.wrapped = wrapped
        options = None
        if isinstance(wrapped, SSL4ServerEndpoint):
            options = wrapped._sslContextFactory
        self.tls_options = options

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Listen on the wrapped endpoint's socket, reading the header first."""
        wrapped = self.wrapped
        if isinstance(wrapped, SSL4ServerEndpoint):
            # What listenSSL does (a TCP port whose factory is TLS), with the
            # header read before the TLS.
            reactor: Any = wrapped._reactor
            return execute(
                reactor.listenTCP,
                wrapped._port,
                proxy_protocol_factory(protocolFactory, self.tls_options),
                backlog=wrapped._backlog,
                interface=wrapped._interface,
            )
        return wrapped.listen(proxy_protocol_factory(protocolFactory, None))
