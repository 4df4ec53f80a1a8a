r"""Reading the PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer sends.

The header opens a connection, before any byte of the client's, and names the
client the balancer accepted and the address it reached (haproxy.org's
``proxy-protocol.txt``). Version 1 is one text line of at most 107 bytes::

    PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n
    PROXY UNKNOWN\r\n

version 2 a 12-byte signature, a version and command byte, a family byte, a
length, the addresses, then type-length-value fields (TLVs).

:func:`read_header` reads one from the start of a buffer, strictly: an address
that is not one of its family (``999.0.113.7``, an IPv6 address in a ``TCP4``
line), a port outside 0-65535, a line without its end: :class:`InvalidHeaderError`.
Addresses come out canonical (``2001:db8::7`` however it was written), so that a
client is one client for the limits and the logs. What names no IP client
(version 1's ``UNKNOWN``, version 2's ``LOCAL`` command, its unspecified, UNIX
and UDP families) gives no addresses: the connection's own are kept, as the
format asks (the balancer's health check, for one), never a UNIX-socket client
with what that would be trusted with.

Pure logic: no Twisted.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["V1_MAX", "V2_MAX", "InvalidHeaderError", "ProxyHeader", "read_header"]

#: Version 2's signature, its first 12 bytes.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
#: The longest version 1 line, its CRLF included (the format's limit).
V1_MAX = 107
#: The longest version 2 header accepted: the fixed part, the longest addresses
#: (UNIX, 216 bytes) and room for TLVs (a balancer's are a few hundred bytes).
V2_MAX = 16 + 4096
_V2_FIXED = struct.Struct("!BBH")
_PORT_DIGITS = frozenset(b"0123456789")
# Version 2's TCP families: their name, address width and address type.
_V2_TCP: dict[int, tuple[str, int, type[ipaddress.IPv4Address | ipaddress.IPv6Address]]] = {
    0x11: ("IPv4", 4, ipaddress.IPv4Address),
    0x21: ("IPv6", 16, ipaddress.IPv6Address),
}
# Version 2 TLV: the client's connection was TLS (PP2_TYPE_SSL, PP2_CLIENT_SSL).
_PP2_TYPE_SSL = 0x20
_PP2_CLIENT_SSL = 0x01


class InvalidHeaderError(ValueError):
    """What is wrong with the header, in a few words."""


@dataclass(frozen=True)
class ProxyHeader:
    """One header read.

    Attributes:
        length: the bytes it took (the client's begin after them).
        source: the client's address and port, or ``None`` when the header names
            no IP client (keep the connection's).
        destination: the address and port the client reached, or ``None``.
        client_tls: whether the balancer says the client's connection was TLS
            (a version 2 ``PP2_TYPE_SSL`` field), TLS having ended at the balancer.
    """

    length: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    client_tls: bool = False


def read_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; ``None`` if more bytes are needed.

    Raises:
        InvalidHeaderError: ``data`` does not start with a header, or its header is
            malformed.
    """
    if data[:12] == V2_SIGNATURE[: len(data)] and data[:1] == b"\r":
        if len(data) < 16:
            return None
        return _read_v2(data)
    if data[:6] == _V1_PREFIX[: len(data)]:
        if len(data) < 6:
            return None
        return _read_v1(data)
    raise InvalidHeaderError("no PROXY protocol header")


def _read_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise InvalidHeaderError("a version 1 line longer than 107 bytes")
        return None
    fields = data[:end].split(b" ")
    length = end + 2
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return ProxyHeader(length)  # (whatever follows UNKNOWN is to be ignored)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise InvalidHeaderError("a version 1 line that is not PROXY TCP4, TCP6 or UNKNOWN")
    version = 4 if fields[1] == b"TCP4" else 6
    source = (_address(fields[2], version), _port(fields[4]))
    destination = (_address(fields[3], version), _port(fields[5]))
    return ProxyHeader(length, source, destination)


def _address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidHeaderError(f"{text[:50]!r} is not an IP address") from None
    if address.version != version:
        raise InvalidHeaderError(f"{text[:50]!r} is not an IPv{version} address")
    return str(address)


def _port(text: bytes) -> int:
    if not text or len(text) > 5 or not _PORT_DIGITS.issuperset(text):
        raise InvalidHeaderError(f"{text[:10]!r} is not a port")
    port = int(text)
    if port > 65535:
        raise InvalidHeaderError(f"{text[:10]!r} is not a port")
    return port


def _read_v2(data: bytes) -> ProxyHeader | None:
    if data[:12] != V2_SIGNATURE:
        raise InvalidHeaderError("no PROXY protocol header")
    version_command, family, size = _V2_FIXED.unpack_from(data, 12)
    if version_command >> 4 != 2:
        raise InvalidHeaderError(f"version {version_command >> 4} of the binary header")
    command = version_command & 0x0F
    if command > 1:
        raise InvalidHeaderError(f"command {command} of a version 2 header")
    length = 16 + size
    if length > V2_MAX:
        raise InvalidHeaderError("a version 2 header longer than 4112 bytes")
    if len(data) < length:
        return None
    body = data[16:length]
    if command == 0:  # LOCAL: the balancer's own connection
        return ProxyHeader(length)
    kind = _V2_TCP.get(family)
    if kind is None:
        # Unspecified, UDP or UNIX: no IP client to name.
        return ProxyHeader(length)
    name, width, address = kind
    if size < 2 * width + 4:
        raise InvalidHeaderError(f"version 2 {name} addresses cut short")
    source_port, destination_port = struct.unpack_from("!HH", body, 2 * width)
    source = (str(address(body[:width])), source_port)
    destination = (str(address(body[width : 2 * width])), destination_port)
    return ProxyHeader(length, source, destination, _client_tls(body[2 * width + 4 :]))


def _client_tls(tlvs: bytes) -> bool:
    """Whether the TLVs hold PP2_TYPE_SSL with the client-connected-over-TLS bit."""
    offset = 0
    while offset + 3 <= len(tlvs):
        kind = tlvs[offset]
        (size,) = struct.unpack_from("!H", tlvs, offset + 1)
        value = tlvs[offset + 3 : offset + 3 + size]
        if len(value) < size:
            raise InvalidHeaderError("a version 2 field cut short")
        if kind == _PP2_TYPE_SSL:
            return bool(value[:1]) and bool(value[0] & _PP2_CLIENT_SSL)
        offset += 3 + size
    return False
