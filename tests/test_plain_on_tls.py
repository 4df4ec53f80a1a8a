"""The check of a TLS connection's first read (twistwsgi.http.plain_on_tls), in memory.

The real-socket tests (test_sockets.py) show the 400 reaching a plain-HTTP client and
TLS clients served as before; these pin how the first bytes are decided.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twistwsgi.http.plain_on_tls import _FirstReadCheck

#: What the stand-in for the protocol answers a plain request with.
REFUSAL = b"HTTP/1.1 400 Bad Request\r\n..."


class _TLSLayer:
    """Stands in for the TLS protocol the check sits in front of."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


def _checked() -> tuple[_FirstReadCheck, Any, _TLSLayer, list[bytes]]:
    tls = _TLSLayer()
    refused: list[bytes] = []

    def refuse(data: bytes) -> bytes:
        refused.append(data)
        return REFUSAL

    check = _FirstReadCheck(tls, refuse)  # type: ignore[arg-type]
    transport: Any = StringTransport()
    transport.protocol = check
    check.transport = transport
    return check, transport, tls, refused


def test_a_request_line_gets_the_400_and_the_close() -> None:
    check, transport, tls, refused = _checked()
    check.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert transport.value() == REFUSAL
    assert transport.disconnecting
    assert refused == [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]
    assert tls.received == b""
    assert transport.protocol is tls  # the close reaches the TLS layer, then HTTP


def test_empty_lines_before_the_request_line_wait_for_the_byte_that_decides() -> None:
    check, transport, tls, refused = _checked()
    check.dataReceived(b"\r\n")  # RFC 9112 2.2
    assert transport.value() == b""
    assert transport.protocol is check
    check.dataReceived(b"\r\nPOST /x HTTP/1.1\r\n")
    assert transport.value() == REFUSAL
    assert refused == [b"POST /x HTTP/1.1\r\n"]
    assert tls.received == b""


def test_a_tls_record_goes_to_tls_and_the_check_steps_aside() -> None:
    check, transport, tls, refused = _checked()
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    check.dataReceived(hello)
    assert tls.received == hello
    assert transport.protocol is tls
    assert transport.value() == b"" and not transport.disconnecting
    assert refused == []


def test_endless_empty_lines_are_left_to_tls() -> None:
    check, transport, tls, _ = _checked()
    check.dataReceived(b"\r\n" * 40)
    assert tls.received == b"\r\n" * 40  # TLS refuses them its own way
    assert transport.protocol is tls


def test_a_client_leaving_before_a_byte_reaches_the_tls_layer() -> None:
    check, _, tls, _ = _checked()
    check.connectionLost(Failure(ConnectionError("gone")))
    assert len(tls.lost) == 1
