"""The redirect of requests that did not come over TLS to the same URL on https.

nginx users write it as a ``server`` on port 80 with ``return 301
https://$host$request_uri``; here a host (or every host) has ``https_redirect``,
and :class:`HttpsRedirect` is that host's guard in the routing table (see
:class:`~twistwsgi.routing.MountTable`), so it answers before any mount.

- GET and HEAD get ``301 Moved Permanently``: every client follows it, and caches it
  (RFC 9110 §15.4.2). Other methods get ``308 Permanent Redirect`` (RFC 9110
  §15.4.9), which a client follows with the same method and body, where after a 301
  browsers send a POST again as a GET without its body.
- The URL keeps the request's host name (normalised: lower case, without its port),
  its path and query as sent; the port is the one clients reach TLS on (none in the
  URL for 443). A request without a host name (HTTP/1.0) goes to the host's first
  configured name, else to the address it came to, as nginx's ``$host`` falls back to
  the ``server_name``.
- A request from a trusted proxy that says the client used https
  (``X-Forwarded-Proto`` or ``Forwarded``'s ``proto``) is not redirected: the TLS
  ended in front of this server.
- ``OPTIONS *`` is about the server, not a resource: it is not redirected.
- A mount with ``https_redirect = false`` is not redirected either (``exempt``, a
  table of the host's mounts whose targets say which are): a health check or an ACME
  challenge over plain HTTP, as nginx's port-80 server keeps such a ``location``
  beside its ``return 301``.

Pure logic on the exchange's request: no Twisted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twistwsgi.forwarding import TrustedProxies, forwarded_scheme
from twistwsgi.http.request import RequestHead
from twistwsgi.http.rules import claimed_names, is_plain_name
from twistwsgi.routing import (
    LocationTimeoutError,
    MountTable,
    answer_error,
    answer_plain,
    remove_dot_segments,
)

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = ["HttpsRedirect"]

_BODIES = {301: b"Moved Permanently\n", 308: b"Permanent Redirect\n"}
_NO_HOST = b"Bad Request: no host name to redirect to https with\n"


class HttpsRedirect:
    """Answers a host's requests that did not come over TLS with a redirect to https.

    Args:
        port: the port clients reach TLS on.
        trusted_proxies: proxies whose word on the client's scheme is believed.
        names: the host's configured names (the first plain one stands in for a
            missing ``Host``).
    """

    def __init__(
        self,
        port: int,
        trusted_proxies: TrustedProxies,
        names: Sequence[str],
        exempt: MountTable[bool] | None = None,
    ) -> None:
        self.port = port
        self._exempt = exempt
        self._port_suffix = b"" if port == 443 else b":%d" % port
        self._trusted_proxies = trusted_proxies
        self._fallback_name = next(
            # (.example.org names example.org, as nginx's $server_name has it.)
            (
                claimed_names(name)[0]
                for name in names
                if is_plain_name(name) or name.startswith(".")
            ),
            None,
        )

    def answers(self, request: RequestHead) -> bool:
        """Whether ``request`` is answered with a redirect (or the 400 without a host).

        The protocol asks before it reads the body, so that the redirect, not the
        body limit, answers a large upload sent over plain HTTP, as nginx's
        ``return 301`` (server rewrite phase) comes before its
        ``client_max_body_size`` check.
        """
        if request.scheme == "https" or request.target == b"*":
            return False
        trusted = self._trusted_proxies
        if trusted and trusted.trusts_peer(request.peer) and forwarded_scheme(request) == "https":
            return False
        exempt = self._exempt
        if exempt is not None:
            # A mount with https_redirect = false answers over plain HTTP itself.
            path = remove_dot_segments(request.decoded_path)
            try:
                mount = exempt.lookup(path) if path is not None else None
            except LocationTimeoutError:
                # Not known to be exempt: redirected (over https the router's own
                # lookup decides, and fails closed). Not kept for the next request.
                mount = None
                exempt.forget()
            if mount is not None and mount.target:
                return False
        return True

    def __call__(self, exchange: Exchange, name: str | None) -> bool:
        """Redirect ``exchange`` if it did not come over TLS; whether it was answered.

        ``name`` is the request's normalised host name, if it has one.
        """
        request = exchange.request
        if not self.answers(request):
            return False
        host = name or self._fallback_name or _local_address(request)
        if host is None:
            answer_error(exchange, 400, _NO_HOST)
            return True
        target = request.target
        if not target.startswith(b"/"):  # the absolute form: its path and query
            target = (request.path or b"/") + (b"?" + request.query if request.query else b"")
        location = b"https://" + host.encode("ascii") + self._port_suffix + target
        status = 301 if request.method in (b"GET", b"HEAD") else 308
        fields = [(b"Location", location)]
        if request.has_body:
            # Its body, unlimited here (the redirect comes before the body limit),
            # is not read on: the connection closes (lingering, within its bounds).
            fields.append((b"Connection", b"close"))
        answer_plain(exchange, status, _BODIES[status], fields)
        return True


def _local_address(request: RequestHead) -> str | None:
    """The address the request came to, as a URL's host (``None`` on a UNIX socket)."""
    if request.local is None:
        return None
    address = request.local[0]
    return f"[{address}]" if ":" in address else address
