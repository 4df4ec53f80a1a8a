"""A mount's access rules by client address: nginx's ``allow`` and ``deny``.

A mount with ``deny`` refuses the clients in those networks; one with ``allow``
refuses every client outside them (nginx's ``allow ...; deny all;``). A client in both
is refused: ``deny`` is looked at first. A refused request gets ``403 Forbidden``
before its handler sees it, whichever way it reached the mount (routed there, or
passed on by a static mount's fall-through).

The client is the connection's peer. From a proxy in ``trusted_proxies``, it is the
address that proxy reports (see :func:`client_address`), as nginx's
``set_real_ip_from`` with ``real_ip_recursive on`` has it.

Pure logic on the exchange's request: no Twisted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twistwsgi.forwarding import Networks, TrustedProxies
from twistwsgi.http.request import RequestHead

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange, Handler

__all__ = ["AccessRules", "GuardedHandler", "client_address"]

_FORBIDDEN = b"Forbidden\n"


class AccessRules:
    """Which clients a mount refuses.

    Args:
        allow: networks (CIDR, ``unix:``) whose clients may use the mount; empty:
            every client not denied.
        deny: networks whose clients may not.
        trusted_proxies: proxies whose report of the client's address is believed.
    """

    def __init__(
        self, allow: Sequence[str], deny: Sequence[str], trusted_proxies: TrustedProxies
    ) -> None:
        self._allow = Networks(allow) if allow else None
        self._deny = Networks(deny) if deny else None
        self._trusted = trusted_proxies

    def refuses(self, request: RequestHead) -> bool:
        """Whether the client of ``request`` may not use the mount.

        An unknown client (a trusted proxy reported no address) is refused by
        either rule: it cannot be told apart from one that ``deny`` lists.
        """
        address = client_address(request, self._trusted)
        if address == _UNKNOWN:
            return True
        if self._deny is not None and self._deny.has(address):
            return True
        return self._allow is not None and not self._allow.has(address)


class GuardedHandler:
    """A mount's handler behind its access rules.

    Args:
        handler: what answers the requests the rules let through.
        rules: the rules.
    """

    def __init__(self, handler: Handler, rules: AccessRules) -> None:
        self.handler = handler
        self.rules = rules

    def handle(self, exchange: Exchange) -> None:
        """Answer 403 to a client the rules refuse; hand anyone else on."""
        if self.rules.refuses(exchange.request):
            exchange.start_response(
                403,
                [
                    (b"Content-Type", b"text/plain; charset=utf-8"),
                    (b"Content-Length", b"%d" % len(_FORBIDDEN)),
                ],
            )
            exchange.finish(_FORBIDDEN)
            return
        self.handler.handle(exchange)


def client_address(request: RequestHead, trusted_proxies: TrustedProxies) -> str | None:
    """The client's IP address (``None`` on a UNIX socket), as the rules match it.

    From a trusted proxy, the address it reports: the ``X-Forwarded-For`` entries
    (every line, in order), else the ``Forwarded`` elements' ``for=``, read from the
    right past the trusted proxies among them (nginx's ``real_ip_recursive on``), so
    a balancer in front of an ingress, both trusted, gives the client. An entry that
    is no address (a port or brackets are taken off first) makes the client unknown
    (``"unknown"``, refused by any rule); a trusted proxy that reports no one is
    matched by its own address.
    """
    peer = request.peer
    address = peer[0] if peer is not None else None
    if not (trusted_proxies and trusted_proxies.has(address)):
        return address
    forwarded_for: list[bytes] = []
    forwarded: list[bytes] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            forwarded_for.append(value)
        elif lower == b"forwarded":
            forwarded.append(value)
    nodes: list[bytes | None]
    # Empty list members are skipped (RFC 9110 5.6.1: "a, , b" is a list of two).
    if forwarded_for:
        entries = b",".join(forwarded_for).split(b",")
        nodes = [entry.strip() for entry in entries if entry.strip()]
    elif forwarded:
        elements = b",".join(forwarded).split(b",")
        nodes = [_forwarded_for(element) for element in elements if element.strip()]
    else:
        return address
    if not nodes:
        return address
    reported: str | None = address
    for node in reversed(nodes):
        reported = _node_address(node)
        if reported == _UNKNOWN or not trusted_proxies.has(reported):
            return reported
    return reported  # every hop a trusted proxy: the first of them


#: The client address of a report that names none: no network holds it.
_UNKNOWN = "unknown"


def _node_address(node: bytes | None) -> str:
    """The IP address of a forwarding entry (RFC 3986 host with an optional port)."""
    if not node:
        return _UNKNOWN
    text = node.decode("latin-1").strip()
    if text.startswith("["):  # "[2001:db8::1]" or "[2001:db8::1]:4711"
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:  # "192.0.2.60:4711"
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return _UNKNOWN  # "unknown", an obfuscated name (RFC 7239 6.3), or garbage


def _forwarded_for(element: bytes) -> bytes | None:
    """The node of a ``Forwarded`` element's ``for=`` (RFC 7239 4, 6), unquoted."""
    for pair in element.split(b";"):
        name, _, value = pair.partition(b"=")
        if name.strip().lower() == b"for":
            return value.strip().strip(b'"')
    return None
