"""Answering plain HTTP sent to a TLS port with a 400, as nginx does.

A client that speaks plain HTTP to an ``ssl:`` endpoint (``http://host:443/``) sends
a request line where TLS expects a handshake record, and Twisted's TLS layer drops
the connection: curl reports "Empty reply from server", a browser a vague network
error. nginx answers ``400 The plain HTTP request was sent to HTTPS port``.

:func:`watch_for_plain_http` puts a check of the first read under the TLS layer of a
new connection. A first byte that is an ASCII letter cannot start a TLS record (a
handshake record starts with 0x16, an alert with 0x15, an SSLv2-style hello with
0x80) but starts every request line (after the empty lines RFC 9112 2.2 allows):
that client gets a plain-text 400 and the close. Any other first read goes to TLS,
and the check steps aside for good (the socket's protocol is the TLS layer again),
so it costs nothing after the first read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from twistwsgi.proxy_protocol import ProxyHeaderReader

__all__ = ["PLAIN_HTTP_REASON", "watch_for_plain_http"]

#: Why the request is refused (RFC 9110 15.5.1: 400), for the response body and the log.
PLAIN_HTTP_REASON = "This port speaks HTTPS; the request was sent as plain HTTP"


def watch_for_plain_http(tls: Any, refuse: Callable[[bytes], bytes]) -> None:
    """Check the first bytes ``tls``'s socket receives (call from ``connectionMade``).

    ``refuse`` is called with those bytes when they are plain HTTP; it returns the
    400 response to send in plain text before the close (and logs it). Only a TLS
    layer of Twisted's that sits directly on a TCP or UNIX socket, or on the PROXY
    header's reader (a ``haproxy:ssl:`` listener: the first bytes after the
    header), is watched; on anything else this does nothing.
    """
    if not isinstance(tls, TLSMemoryBIOProtocol):
        return
    below: Any = tls.transport
    if isinstance(below, tcp.Connection):
        slot = "protocol"  # the socket hands its reads to its protocol
    elif isinstance(below, ProxyHeaderReader):
        slot = "wrappedProtocol"  # the reader hands what follows the header on
    else:
        return
    if getattr(below, slot) is not tls:
        return

    def restore() -> None:
        setattr(below, slot, tls)

    check = _FirstReadCheck(tls, refuse, restore)
    check.transport = below
    setattr(below, slot, check)


#: Empty lines waited through before the first read is decided (then TLS decides).
_MAX_BLANK = 64


class _FirstReadCheck(Protocol):
    """The socket's protocol until its first read, in front of the TLS layer."""

    def __init__(
        self,
        tls: TLSMemoryBIOProtocol,
        refuse: Callable[[bytes], bytes],
        restore: Callable[[], None],
    ) -> None:
        self._tls = tls
        self._refuse = refuse
        self._restore = restore
        self._blank = b""

    def dataReceived(self, data: bytes) -> None:
        """Refuse a plain request; hand anything else to TLS, and step aside."""
        data = self._blank + data
        request = data.lstrip(b"\r\n")
        if not request and len(data) <= _MAX_BLANK:
            # RFC 9112 2.2: empty lines may come before a request line; no TLS record
            # starts with CR or LF either. Wait for the byte that decides.
            self._blank = data
            return
        transport: Any = self.transport
        self._restore()  # every later event goes straight to TLS
        if request[:1].isalpha():
            transport.write(self._refuse(request))
            transport.loseConnection()
            return
        self._tls.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The client left before sending anything."""
        self._tls.connectionLost(reason)
