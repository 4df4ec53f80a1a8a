"""Reading the PROXY protocol header (proxy_header.read_header): both versions, the
forms a balancer sends, strictness, and any split of the bytes.

Version 2 headers are built here from the specification's layout
(haproxy.org's proxy-protocol.txt, section 2.2).
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi.proxy_header import V1_MAX, InvalidHeaderError, ProxyHeader, read_header

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(
    source: str = "203.0.113.8",
    destination: str = "192.0.2.10",
    ports: tuple[int, int] = (52000, 443),
    *,
    command: int = 1,
    family: int | None = None,
    tlvs: bytes = b"",
) -> bytes:
    """A version 2 header: TCP over IPv4 or IPv6 (from the addresses), PROXY or LOCAL."""
    six = ":" in source
    kind = socket.AF_INET6 if six else socket.AF_INET
    body = socket.inet_pton(kind, source) + socket.inet_pton(kind, destination)
    body += struct.pack("!HH", *ports) + tlvs
    byte = family if family is not None else (0x21 if six else 0x11)
    return SIGNATURE + bytes([0x20 | command, byte]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\nGET",
            ProxyHeader(45, ("203.0.113.7", 51000), ("192.0.2.10", 443)),
        ),
        # Addresses come out canonical, however written.
        (
            b"PROXY TCP6 2001:DB8:0::7 2001:db8::1 1 65535\r\n",
            ProxyHeader(46, ("2001:db8::7", 1), ("2001:db8::1", 65535)),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(15)),  # the shortest line: no IP client
        (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", ProxyHeader(39)),
        (
            v2(),
            ProxyHeader(28, ("203.0.113.8", 52000), ("192.0.2.10", 443)),
        ),
        (
            v2("2001:db8:0:0:0:0:0:8", "2001:db8::10"),
            ProxyHeader(52, ("2001:db8::8", 52000), ("2001:db8::10", 443)),
        ),
        (v2(command=0), ProxyHeader(28)),  # LOCAL: the balancer's own connection
        (v2(family=0x12), ProxyHeader(28)),  # UDP: no client to name
        (v2(family=0x00), ProxyHeader(28)),  # unspecified
        # A UNIX family names no IP client: not a UNIX-socket client either.
        (
            SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + b"/run/c".ljust(216, b"\0"),
            ProxyHeader(232),
        ),
        # Fields after the addresses are skipped; PP2_TYPE_SSL says the client's TLS.
        (
            v2(tlvs=tlv(0x04, b"\0" * 4) + tlv(0x20, b"\x01" + b"\0" * 4)),
            ProxyHeader(43, ("203.0.113.8", 52000), ("192.0.2.10", 443), client_tls=True),
        ),
        (
            v2(tlvs=tlv(0x20, b"\x00" + b"\0" * 4)),
            ProxyHeader(36, ("203.0.113.8", 52000), ("192.0.2.10", 443)),
        ),
    ],
)
def test_a_header_read(data: bytes, expected: ProxyHeader) -> None:
    assert read_header(data) == expected


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "no PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "no PROXY protocol header"),  # a TLS ClientHello
        (b"PROXY TCP4 999.0.113.7 192.0.2.10 51000 443\r\n", "is not an IP address"),
        (b"PROXY TCP4 203.000.113.7 192.0.2.10 51000 443\r\n", "is not an IP address"),
        (b"PROXY TCP4 2001:db8::7 192.0.2.10 51000 443\r\n", "is not an IPv4 address"),
        (b"PROXY TCP6 203.0.113.7 2001:db8::1 51000 443\r\n", "is not an IPv6 address"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.10 65536 443\r\n", "is not a port"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.10 abc 443\r\n", "is not a port"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.10 -1 443\r\n", "is not a port"),
        (b"PROXY TCP4 203.0.113.7 192.0.2.10 51000\r\n", "not PROXY TCP4"),
        (b"PROXY UDP4 203.0.113.7 192.0.2.10 1 2\r\n", "not PROXY TCP4"),
        (b"PROXY TCP4  203.0.113.7 192.0.2.10 1 2\r\n", "not PROXY TCP4"),
        (b"PROXY " + b"x" * V1_MAX, "longer than 107"),
        (SIGNATURE + b"\x11\x11\x00\x00", "version 1 of the binary header"),
        (SIGNATURE + b"\x22\x11\x00\x00", "command 2"),
        (SIGNATURE + b"\x21\x11\x00\x04" + b"\0" * 4, "IPv4 addresses cut short"),
        (SIGNATURE + b"\x21\x21\x00\x0c" + b"\0" * 12, "IPv6 addresses cut short"),
        (SIGNATURE + b"\x21\x11\xff\xff", "longer than 4112"),
        (v2(tlvs=b"\x20\x00\x09\x01"), "field cut short"),
        (SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x00", "no PROXY protocol header"),
    ],
)
def test_a_header_refused(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidHeaderError, match=problem):
        read_header(data)


HEADERS = [
    b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    v2("2001:db8::8", "2001:db8::10", tlvs=tlv(0x20, b"\x01\0\0\0\0")),
]


@given(st.sampled_from(HEADERS), st.binary(max_size=30))
def test_any_beginning_asks_for_more_and_the_whole_is_read_once(
    header: bytes, after: bytes
) -> None:
    """However the balancer's bytes are split, a beginning is never refused or taken
    for a header, and the client's bytes after it are not part of it.
    """
    for end in range(len(header)):
        assert read_header(header[:end]) is None
    read = read_header(header + after)
    assert read is not None and read.length == len(header)
