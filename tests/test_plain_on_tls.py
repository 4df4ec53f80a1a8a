"""The check of a TLS connection's first read (twistwsgi.http.plain_on_tls), in memory.

The real-socket tests (test_sockets.py) show the 400 reaching a plain-HTTP client and
TLS clients served as before; these pin how the first bytes are decided.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.test_protocol import Echo
from twistwsgi.http.plain_on_tls import _FirstReadCheck
from twistwsgi.testing import connect

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

    transport: Any = StringTransport()

    def restore() -> None:
        transport.protocol = tls

    check = _FirstReadCheck(tls, refuse, restore)  # type: ignore[arg-type]
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


@pytest.mark.parametrize(("method", "has_body"), [(b"GET", True), (b"HEAD", False)])
def test_the_protocol_answers_plain_http_as_its_other_refusals(
    method: bytes, has_body: bool
) -> None:
    """The 400 has Date and Server like every response, and no body for HEAD (RFC
    9110 9.3.2); the access log counts the body bytes sent.
    """
    logged: list[Any] = []
    connection = connect(Echo(), response_log=logged.append)
    response = connection.protocol._plain_http_refused(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nDate: " in head and b"\r\nServer: " in head
    assert bool(body) is has_body
    [refusal] = logged
    assert (refusal.request.method, refusal.body_sent) == (method, len(body))
