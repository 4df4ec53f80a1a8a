"""Upstream servers of a proxy mount: connection pools, endpoints, TLS, health checks.

* :class:`UpstreamPool` keeps the idle keep-alive connections of one upstream:
  ``keepalive`` of them, each closed after ``keepalive_timeout`` unused. The most
  recently used idle connection is reused first (a stack), so under a light load the
  older ones time out instead of all being kept warm. An event loop handles the
  responses that arrive together in one batch, so with more requests in flight than
  ``keepalive`` the idle count briefly overshoots just before the next requests
  arrive; closing those connections would make every burst reconnect (measured: one
  new connection per eight requests at 50 in flight with ``keepalive 32``). So
  connections beyond ``keepalive`` are kept too, but only for
  :data:`OVERFLOW_IDLE_TIMEOUT` (1 s) unused: the pool holds ``keepalive`` idle
  connections at rest and never more than the recent concurrency. Connections in use are not
  capped here (as nginx's ``keepalive``): the pool bounds what is kept; concurrency is
  bounded by the balancer's ``max_conns``, which the proxy applies to requests.
  Connecting is bounded by ``connect_timeout`` (the attempt is cancelled; 0: no limit
  but the endpoint's own 30 s); over TLS, connecting includes the handshake: a
  connection is handed out only once the handshake has completed, and a handshake
  that fails (a certificate that does not verify) or stalls is a connect failure.
  ``keepalive = 0`` or ``keepalive_timeout = 0`` closes every connection after its
  response.
* :func:`client_endpoint` turns an :class:`~twistwsgi.forwarding.UpstreamAddress`
  into a Twisted client endpoint: TCP (an IP literal directly, a name through
  ``HostnameEndpoint``), a UNIX socket, or TLS around TCP. TLS verifies the
  upstream's certificate and name by default (``service_identity``), against the
  system's CAs or a configured CA file; ``tls_verify = false`` turns it off. Only
  ``http/1.1`` is offered over ALPN.
* :class:`HealthCheck` polls a path on one upstream every ``health_interval`` on a
  fresh connection (``GET``, ``Connection: close``); a 2xx or 3xx head within the
  interval is healthy, anything else unhealthy. Upstreams start out healthy.
* :class:`UpstreamGroup` is what a proxy mount holds: the pools, the
  :class:`~twistwsgi.balancing.Balancer` over them, and the health checks.
  :meth:`UpstreamGroup.close` (on reload or shutdown) stops the checks and closes the
  idle connections; requests in flight finish, and their connections close after.

Everything here runs in the reactor thread; the reactor is passed in.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistwsgi.balancing import Balancer, Peer
from twistwsgi.forwarding import UpstreamAddress
from twistwsgi.host_certificates import is_encrypted_pem
from twistwsgi.http.client import (
    STATE_IDLE,
    ClientConnection,
    ClientSettings,
    ErrorKind,
    UpstreamError,
)

__all__ = [
    "CONNECT_BACKSTOP",
    "EndpointFactory",
    "HealthCheck",
    "UpstreamGroup",
    "UpstreamPool",
    "client_endpoint",
    "load_trust_root",
]

_log = Logger(namespace="twistwsgi.proxy")

#: Seconds an idle connection beyond ``keepalive`` is kept (see :class:`UpstreamPool`).
OVERFLOW_IDLE_TIMEOUT = 1.0

#: Seconds a connection attempt (TCP connect and TLS handshake) may take when
#: ``connect_timeout`` is 0, "no limit of its own": an attempt never waits forever.
CONNECT_BACKSTOP = 30

#: Builds the client endpoint for an upstream address (tests pass in-memory ones).
EndpointFactory = Callable[[UpstreamAddress], IStreamClientEndpoint]


def load_trust_root(path: str) -> Any:
    """Load a PEM file of CA certificates as a trust root for verifying upstreams.

    Raises:
        ValueError: when the file holds no readable certificate.
    """
    with open(path, "rb") as file:
        pem = file.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + block for block in pem.split(marker)[1:]]
    if not blocks:
        raise ValueError("no PEM certificate in the file")
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as error:
        raise ValueError(f"unreadable certificate: {error}") from None
    return ssl.trustRootFromCertificates(certificates)


@dataclass(frozen=True)
class ClientIdentity:
    """The certificate (and chain) a proxy mount shows https upstreams that ask for one.

    nginx's ``proxy_ssl_certificate`` and ``proxy_ssl_certificate_key``.
    """

    certificate: Any  # twisted.internet.ssl.PrivateCertificate
    chain: tuple[Any, ...]  # OpenSSL X509 objects, sent after it

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``CertificateOptions`` that present it."""
        return {
            "privateKey": self.certificate.privateKey.original,
            "certificate": self.certificate.original,
            "extraCertChain": list(self.chain),
        }


class IdentityError(ValueError):
    """What is wrong with a mount's upstream certificate or key.

    Attributes:
        key: whether it is about the key's file (``upstream_key``), not the
            certificate's.
    """

    def __init__(self, message: str, *, key: bool = False) -> None:
        super().__init__(message)
        self.key = key


def load_client_identity(certificate_path: str, key_path: str | None) -> ClientIdentity:
    """Read a mount's upstream client certificate, its chain and its key (PEM).

    With cryptography's readers, as host certificates are read: a key that needs a
    passphrase is an error, never OpenSSL's prompt on the terminal.

    Raises:
        IdentityError: saying what is wrong: no certificate, no key, an encrypted
            key, a key that is not the certificate's; and in which file.
        OSError: a file cannot be read.
    """
    with open(certificate_path, "rb") as file:
        certificate_pem = file.read()
    in_own_file = key_path is not None
    key_pem = certificate_pem
    if key_path is not None:
        with open(key_path, "rb") as file:
            key_pem = file.read()
    try:
        certificates = x509.load_pem_x509_certificates(certificate_pem)
    except ValueError:
        raise IdentityError(
            "no PEM certificate could be read (the certificate first, then its chain)"
        ) from None
    if is_encrypted_pem(key_pem):
        raise IdentityError(
            "the key is encrypted; give a key without a passphrase", key=in_own_file
        )
    if b"PRIVATE KEY-----" not in key_pem:
        problem = "no private key" + ("" if in_own_file else ": give its file as upstream_key")
        raise IdentityError(problem, key=in_own_file)
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise IdentityError(f"cannot load the private key: {error}", key=in_own_file) from None
    leaf = certificates[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ) != leaf.public_key().public_bytes(serialization.Encoding.PEM, public):
        raise IdentityError("this key is not the certificate's", key=in_own_file)
    # Twisted's types, from PEM the readers above accepted (the key unencrypted).
    plain_key = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certificate = ssl.PrivateCertificate.loadPEM(
        leaf.public_bytes(serialization.Encoding.PEM) + plain_key
    )
    chain = tuple(
        ssl.Certificate.loadPEM(extra.public_bytes(serialization.Encoding.PEM)).original
        for extra in certificates[1:]
    )
    return ClientIdentity(certificate, chain)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedTLS:
    """TLS without certificate verification (``tls_verify = false``); SNI still sent."""

    def __init__(self, hostname: str, identity: ClientIdentity | None = None) -> None:
        shown = identity.options() if identity is not None else {}
        options = ssl.CertificateOptions(acceptableProtocols=[b"http/1.1"], **shown)
        self._context = options.getContext()
        self._server_name = (
            None if isIPAddress(hostname) or isIPv6Address(hostname) else hostname.encode("idna")
        )

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """Create the OpenSSL connection for one TLS connection."""
        from OpenSSL import SSL  # noqa: PLC0415 - pyOpenSSL is only needed for TLS upstreams

        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def client_endpoint(
    reactor: Any,
    address: UpstreamAddress,
    *,
    connect_timeout: float,
    tls_verify: bool = True,
    trust_root: Any = None,
    identity: ClientIdentity | None = None,
) -> IStreamClientEndpoint:
    """The Twisted client endpoint that reaches ``address`` (see the module docstring).

    Args:
        reactor: provides the TCP, UNIX and time interfaces.
        address: the upstream.
        connect_timeout: seconds an attempt may take.
        tls_verify: verify an https upstream's certificate and name.
        trust_root: the CAs to verify with (``None``: the system's).
        identity: the client certificate shown an https upstream that asks.
    """
    endpoint: IStreamClientEndpoint
    # Our own timer (UpstreamPool.connect) cancels first; this is a backstop.
    timeout = math.ceil(connect_timeout) + 1 if connect_timeout > 0 else CONNECT_BACKSTOP
    if address.scheme == "unix":
        return UNIXClientEndpoint(reactor, address.socket_path, timeout=timeout)
    host = address.host
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, address.port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, address.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, address.port, timeout=timeout)
    if not address.tls:
        return endpoint
    creator: Any
    if tls_verify:
        creator = ssl.optionsForClientTLS(
            host,
            trustRoot=trust_root if trust_root is not None else ssl.platformTrust(),
            clientCertificate=identity.certificate if identity is not None else None,
            acceptableProtocols=[b"http/1.1"],
            extraCertificateOptions=(
                {"extraCertChain": list(identity.chain)} if identity is not None else None
            ),
        )
    else:
        creator = _UnverifiedTLS(host, identity)
    # The clock given: TLS batches small writes on a timer, which must be ours.
    return wrapClientTLS(creator, endpoint, clock=reactor)


def _handshaken(connection: ClientConnection) -> Any:
    """The connection, or a Deferred of it when its TLS handshake is still going on.

    A connection that is neither ready nor handshaking has already ended: that is a
    connect failure too, never a connection handed out to be sent on.
    """
    return connection if connection.idle else connection.wait_for_handshake()


class _ConnectionFactory(Factory):
    """Builds the pool's connections."""

    noisy = False  # no "Starting factory" line per connection

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool

    def buildProtocol(self, addr: IAddress | None) -> ClientConnection:
        """A new connection owned by the pool."""
        return ClientConnection(self._pool, self._pool.settings, self._pool.clock)


class UpstreamPool:
    """The connections of one upstream (see the module docstring).

    Args:
        address: the upstream.
        endpoint: how to connect to it.
        settings: the connections' timeouts.
        clock: the source of time and timers.
        keepalive: idle connections kept at most (0: none, close after each response).
        connect_timeout: seconds a connection attempt may take.

    Attributes:
        connections: every open connection for requests (idle, busy or
            tunnelling; a health check's is not one once it is asking).
        idle: the idle connections, the most recently used last.
    """

    def __init__(
        self,
        address: UpstreamAddress,
        endpoint: IStreamClientEndpoint,
        *,
        settings: ClientSettings,
        clock: IReactorTime,
        keepalive: int,
        connect_timeout: float,
    ) -> None:
        self.address = address
        self.name = address.url
        self.settings = settings
        self.clock = clock
        self._endpoint = endpoint
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._factory = _ConnectionFactory(self)
        self.connections: set[ClientConnection] = set()
        self.idle: list[ClientConnection] = []
        self.closed = False

    def take(self, *, unread_checked: bool = False) -> ClientConnection | None:
        """An idle connection to reuse, or ``None``.

        Args:
            unread_checked: make sure nothing waits unread on it first (see
                :meth:`ClientConnection.input_pending`); for a connection that may
                have been given back in this reactor turn.
        """
        idle = self.idle
        index = len(idle)
        while index:
            index -= 1
            connection = idle[index]
            if connection.settling:
                continue  # taken once the read that gave it back is handled
            del idle[index]
            if connection.state is not STATE_IDLE:  # (connection.idle, without a call)
                continue
            if unread_checked and connection.drop_if_input_pending():
                continue
            return connection
        return None

    def connect(self) -> Deferred[ClientConnection]:
        """Open a new connection.

        Returns:
            A Deferred that fires with the connected :class:`ClientConnection` (over
            TLS, once its handshake has completed), or fails with an
            :class:`UpstreamError` of kind ``CONNECT``. Cancelling it abandons the
            attempt.
        """
        shortage = _descriptor_shortage()
        if shortage is not None:
            # Out of descriptors, a host name's resolution fails in Twisted's resolver
            # thread and the attempt would only time out, blamed on the upstream.
            return fail(_shortage_error(shortage))
        # The endpoint's Deferred fires once TCP is connected; the TLS handshake
        # (if any) is part of connecting, under the same timer.
        connecting: Deferred[Any] = self._endpoint.connect(self._factory)
        attempt = connecting.addCallback(_handshaken)
        timed_out: list[bool] = []

        def fire_timeout() -> None:
            timed_out.append(True)
            attempt.cancel()

        # 0 ("no limit of its own") still gives up after the endpoint's backstop:
        # the endpoint's own timeout covers TCP only, not a TLS handshake.
        limit = self._connect_timeout if self._connect_timeout > 0 else CONNECT_BACKSTOP
        timer = self.clock.callLater(limit, fire_timeout)

        def done(result: Any) -> Any:
            if timer is not None and timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if timed_out:
                    detail = f"connecting timed out after {limit:g}s"
                elif result.check(CancelledError, ConnectingCancelledError, UpstreamError):
                    return result
                else:
                    shortage = _local_shortage(result.value)
                    if shortage is not None:
                        raise _shortage_error(shortage)
                    detail = result.getErrorMessage()
                raise UpstreamError(ErrorKind.CONNECT, detail)
            return result

        return attempt.addBoth(done)

    def connection_made(self, connection: ClientConnection) -> None:
        """Track a new connection."""
        self.connections.add(connection)

    def connection_reusable(self, connection: ClientConnection) -> float | None:
        """Keep ``connection`` idle for reuse; say for how long (``None``: close it)."""
        keep = self.settings.keepalive_timeout
        if self.closed or self._keepalive <= 0 or keep <= 0:
            return None
        idle = self.idle
        idle.append(connection)
        if len(idle) > self._keepalive:
            # Over the limit: a burst of responses that ended together. Kept briefly,
            # since the requests that follow would otherwise open new connections.
            return min(OVERFLOW_IDLE_TIMEOUT, keep)
        return keep

    def connection_closed(self, connection: ClientConnection) -> None:
        """Forget a closed connection."""
        self.connections.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    def close(self) -> None:
        """Close the idle connections; the busy ones close when their response ends."""
        self.closed = True
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


_HEALTH_HEAD = (
    b"GET %b HTTP/1.1\r\nHost: %b\r\nUser-Agent: twistwsgi-health-check\r\n"
    b"Connection: close\r\n\r\n"
)


#: errno values that say this server, not the upstream, ran out of something.
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _descriptor_shortage() -> str | None:
    """What this process lacks to open one more descriptor, if anything.

    Checked before each new upstream connection (pooled ones are reused): one open
    and close of /dev/null, two system calls.
    """
    try:
        descriptor = os.open(os.devnull, os.O_RDONLY)
    except OSError as error:
        return _local_shortage(error)
    os.close(descriptor)
    return None


def _local_shortage(error: BaseException | None) -> str | None:
    """What this server lacks, if connecting failed for want of a socket.

    Twisted reports a socket() that failed with EMFILE as a ConnectBindError whose
    ``osError`` is the errno; nothing about the upstream is known then.
    """
    code = getattr(error, "osError", None)
    if code is None and isinstance(error, OSError):
        code = error.errno
    if code in _SHORTAGES:
        return os.strerror(code)
    return None


def _shortage_error(shortage: str) -> UpstreamError:
    return UpstreamError(ErrorKind.LOCAL, f"this server cannot open a socket: {shortage}")


class HealthCheck:
    """Polls a path on one upstream and sets its peer's ``healthy`` flag.

    Args:
        pool: the upstream's pool (a fresh connection per check).
        peer: the balancer's view of the upstream.
        path: the path (and query) to request.
        interval: seconds between checks; also the time a check may take.
        clock: the source of timers.
        on_recovered: called when the upstream passes again after failing.
    """

    def __init__(
        self,
        pool: UpstreamPool,
        peer: Peer[UpstreamPool],
        path: str,
        interval: float,
        clock: IReactorTime,
        *,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        self._on_recovered = on_recovered
        self._pool = pool
        self._peer = peer
        self._head = _HEALTH_HEAD % (path.encode("utf-8"), pool.address.host_field)
        self._interval = interval
        self._clock = clock
        self._next: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        self._connecting: Deferred[ClientConnection] | None = None
        self._connection: ClientConnection | None = None
        self._stopped = False

    def start(self) -> None:
        """Run the first check at once, then every interval."""
        self._next = self._clock.callLater(0, self._run)

    def stop(self) -> None:
        """Stop checking; a check in progress is abandoned."""
        self._stopped = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._end_check()

    def _run(self) -> None:
        self._next = None
        if self._stopped:
            return
        self._deadline = self._clock.callLater(self._interval, self._timed_out)
        connecting = self._pool.connect()
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, connection: ClientConnection) -> None:
        self._connecting = None
        if self._stopped or self._deadline is None:
            connection.abort()
            return
        self._connection = connection
        # Not one of the upstream's connections for requests (see upstream_states).
        self._pool.connections.discard(connection)
        connection.send(self._head, self)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError, ConnectingCancelledError):
            return
        error = failure.value
        if isinstance(error, UpstreamError) and error.kind is ErrorKind.LOCAL:
            # Nothing was learnt about the upstream: no verdict, try again later.
            self._end_check()
            if not self._stopped:
                self._next = self._clock.callLater(self._interval, self._run)
            return
        self._verdict(False, failure.getErrorMessage())

    def _timed_out(self) -> None:
        self._deadline = None
        self._verdict(False, f"no answer within {self._interval:g}s")

    def _end_check(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()

    def _verdict(self, healthy: bool, detail: str) -> None:
        self._end_check()
        if self._stopped:
            return
        peer = self._peer
        if healthy != peer.healthy:
            peer.healthy = healthy
            if healthy:
                _log.info("Upstream {upstream} passed its health check", upstream=peer.name)
                if self._on_recovered is not None:
                    self._on_recovered()  # requests may be waiting for it
            else:
                _log.warn(
                    "Upstream {upstream} failed its health check ({detail});"
                    " it gets no requests until it passes",
                    upstream=peer.name,
                    detail=detail,
                )
        self._next = self._clock.callLater(self._interval, self._run)

    # -- ResponseHandler -----------------------------------------------------------------

    def response_interim(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Only the final status counts."""

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """2xx and 3xx are healthy."""
        self._verdict(200 <= status < 400, f"status {status}")

    def response_data(self, data: bytes, complete: bool) -> None:
        """The body does not matter."""

    def response_failed(self, error: UpstreamError) -> None:
        """A broken exchange is unhealthy."""
        self._connection = None
        self._verdict(False, error.detail)

    def response_upgraded(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], tail: bytes
    ) -> None:
        """Not asked for; the connection refuses it before this is called."""

    def tunnel_data(self, data: bytes) -> None:
        """Not used."""

    def tunnel_closed(self, reason: Failure) -> None:
        """Not used."""

    def sending_paused(self) -> None:
        """Not used: a check has no body."""

    def sending_resumed(self) -> None:
        """Not used: a check has no body."""


class UpstreamGroup:
    """The upstreams of one proxy mount (see the module docstring).

    Args:
        pools: one pool per upstream, with its weight and whether it is a backup.
        clock: the source of time and timers.
        balance: the balancing policy.
        max_fails: passive health: failures that take an upstream out.
        fail_timeout: passive health: the failure window and the time out.
        health_check: a path to poll on every upstream, or ``None``.
        health_interval: seconds between polls.
        max_conns: requests in progress per upstream at most (0: no limit); health
            checks are not requests and do not count.

    Attributes:
        on_recovered: called when an upstream passes its health check again (the
            proxy then serves the requests waiting for a free upstream).
    """

    def __init__(
        self,
        pools: Sequence[tuple[UpstreamPool, int, bool, bool]],
        *,
        clock: IReactorTime,
        balance: str = "round_robin",
        max_fails: int = 1,
        fail_timeout: float = 10.0,
        health_check: str | None = None,
        health_interval: float = 5.0,
        max_conns: int = 0,
    ) -> None:
        self.clock = clock
        self.peers = [
            Peer(pool, pool.name, weight, backup=backup, down=down)
            for pool, weight, backup, down in pools
        ]
        self.balancer = Balancer(
            self.peers,
            policy=balance,
            max_fails=max_fails,
            fail_timeout=fail_timeout,
            max_conns=max_conns,
        )
        self.on_recovered: Callable[[], None] | None = None
        self.checks: list[HealthCheck] = []
        if health_check is not None:
            for peer in self.peers:
                if peer.down:
                    continue  # (nothing is sent to it, not even a check)
                check = HealthCheck(
                    peer.target,
                    peer,
                    health_check,
                    health_interval,
                    clock,
                    on_recovered=self._recovered,
                )
                self.checks.append(check)
                check.start()

    def _recovered(self) -> None:
        if self.on_recovered is not None:
            self.on_recovered()

    def close(self) -> None:
        """Stop the health checks and close the idle connections."""
        for check in self.checks:
            check.stop()
        for peer in self.peers:
            peer.target.close()
