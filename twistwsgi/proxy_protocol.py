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

Twisted has a ``haproxy:`` endpoint of its own, but it wraps the endpoint it is
given as a whole, so that over ``ssl:`` it expects the header inside the TLS
session, where no load balancer sends it (the header comes first on the
connection, then the client's TLS handshake); and its reader takes an address of
any shape, refuses version 1's ``PROXY UNKNOWN``, a header split after its first
bytes and a UNIX family no worse than an IP one. :class:`ProxyProtocolEndpoint`
reads the header (:func:`twistwsgi.proxy_header.read_header`) before TLS: the
listener is the wrapped endpoint's socket with TLS taken off, and the connection
goes through the header, then TLS, then HTTP. A refused header is logged (at most
one line a minute per listener, with the count since).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from twistwsgi.http.request import describe_peer, peer_address
from twistwsgi.proxy_header import V2_MAX, InvalidHeaderError, ProxyHeader, read_header

__all__ = [
    "ProxyHeaderReader",
    "ProxyProtocolEndpoint",
    "proxy_protocol_factory",
    "socket_beneath",
]

_log = Logger(namespace="twistwsgi.proxy_protocol")

#: Seconds between two log lines about refused headers (per listener).
REFUSAL_LOG_INTERVAL = 60.0


class ProxyHeaderReader(ProtocolWrapper):
    """Reads the PROXY header, then hands the connection to the protocol it wraps.

    Until the header is read, nothing reaches the wrapped protocol; then its
    ``getPeer`` and ``getHost`` are the header's addresses (the connection's own
    when the header names none).

    Attributes:
        header: the header, once read.
    """

    factory: ProxyHeaderFactory

    def __init__(self, factory: ProxyHeaderFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self.header: ProxyHeader | None = None
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        """Read the header from the first bytes; pass everything after it on."""
        if self.header is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        pending = self._pending + data
        try:
            header = read_header(pending)
        except InvalidHeaderError as problem:
            self._refuse(str(problem))
            return
        if header is None:
            if len(pending) > V2_MAX:  # (read_header refuses first; a bound all the same)
                self._refuse("a header too long")
                return
            self._pending = pending
            return
        self._pending = b""
        self.header = header
        rest = pending[header.length :]
        if rest:
            self.wrappedProtocol.dataReceived(rest)

    def getPeer(self) -> IAddress:
        """The client the header names, else the connection's peer (the balancer)."""
        header = self.header
        if header is not None and header.source is not None:
            return _address(*header.source)
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """The address the client reached, as the header says, else the connection's."""
        header = self.header
        if header is not None and header.destination is not None:
            return _address(*header.destination)
        return self.transport.getHost()  # type: ignore[union-attr]

    def _refuse(self, problem: str) -> None:
        self.factory.refused(self.transport.getPeer(), problem)  # type: ignore[union-attr]
        self.transport.abortConnection()  # type: ignore[union-attr]


class ProxyHeaderFactory(WrappingFactory[ProxyHeaderReader]):
    """Wraps each connection of ``wrappedFactory`` in a :class:`ProxyHeaderReader`.

    Args:
        wrappedFactory: what serves the connection after the header.
        clock: times the log lines about refused headers.
    """

    protocol = ProxyHeaderReader
    noisy = False  # (no "Starting factory" line per listener and reload)

    def __init__(self, wrapped: Any, clock: IReactorTime) -> None:
        super().__init__(wrapped)
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def logPrefix(self) -> str:
        """The wrapped factory's prefix, marked as behind the PROXY protocol."""
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        name = inner() if callable(inner) else type(self.wrappedFactory).__name__
        return f"{name} (PROXY)"

    def refused(self, balancer: IAddress, problem: str) -> None:
        """Say that a connection was closed for its header (at most once a minute)."""
        now = self._clock.seconds()
        if self._logged_at is not None and now - self._logged_at < REFUSAL_LOG_INTERVAL:
            self._unlogged += 1
            return
        _log.warn(
            "Closed a connection from {balancer} on a PROXY protocol listener: {problem}"
            " (is the load balancer sending the header? {more} more since the last such line)",
            balancer=describe_peer(peer_address(balancer)),
            problem=problem,
            more=self._unlogged,
        )
        self._logged_at = now
        self._unlogged = 0


def proxy_protocol_factory(
    factory: IProtocolFactory, tls_options: Any | None, clock: IReactorTime
) -> ProxyHeaderFactory:
    """``factory`` behind the PROXY header, and behind TLS first if ``tls_options`` is given.

    The header is read on the connection as it arrives; what follows is TLS (with
    ``tls_options``: a server's context factory), then what ``factory`` speaks.
    """
    if tls_options is not None:
        factory = TLSMemoryBIOFactory(tls_options, False, factory)
    return ProxyHeaderFactory(factory, clock)


def socket_beneath(transport: ITransport) -> ITransport | None:
    """The socket's transport under a :class:`ProxyHeaderReader` whose header was read.

    A protocol whose transport it is may write there directly (the wrapper adds
    nothing to what is written), where the server's fast paths apply (writes
    without a trip round the reactor, ``sendfile``); reads still come through the
    reader. ``None`` for any other transport.
    """
    if isinstance(transport, ProxyHeaderReader) and transport.header is not None:
        return transport.transport
    return None


@implementer(IStreamServerEndpoint)
class ProxyProtocolEndpoint:
    """Listens as ``wrapped`` does, each connection opening with a PROXY header.

    Args:
        wrapped: the endpoint the load balancer connects to (``tcp:``, ``unix:``,
            ``ssl:``, ...).
        clock: times the log lines about refused headers.

    Attributes:
        wrapped: as given; its socket is the one shared with worker processes.
        tls_options: the context factory of a wrapped ``ssl:`` endpoint, else
            ``None``; TLS begins after the header.
    """

    def __init__(self, wrapped: IStreamServerEndpoint, clock: IReactorTime) -> None:
        self.wrapped = wrapped
        self._clock = clock
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
                proxy_protocol_factory(protocolFactory, self.tls_options, self._clock),
                backlog=wrapped._backlog,
                interface=wrapped._interface,
            )
        return wrapped.listen(proxy_protocol_factory(protocolFactory, None, self._clock))


def _address(host: str, port: int) -> IPv4Address | IPv6Address:
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)
