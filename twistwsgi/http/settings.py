"""Limits and timeouts the HTTP/1.1 protocol enforces, as one frozen value.

The defaults follow nginx where nginx has a counterpart (``large_client_header_buffers
4 8k``, ``client_max_body_size 1m``, ``client_header_timeout``/``client_body_timeout``/
``send_timeout 60s``) so that users moving from nginx meet the same behaviour. The
config layer builds this value from the command line or the config file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HttpSettings"]


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What the HTTP/1.1 protocol accepts and how long it waits.

    Attributes:
        max_request_line: longest request-target (or token of a method llhttp does not
            know) in bytes; longer is 414.
        max_header_field: longest single field line (name, colon, value); longer is 431.
        max_header_count: most field lines in the header (or trailer) section; more is
            431.
        max_header_total: largest header section in bytes; larger is 431.
        max_body: largest request body in bytes, ``0`` for no limit; larger is 413,
            decided from Content-Length before any of the body is read.
        keepalive_timeout: seconds an idle persistent connection is kept open.
        keepalive_requests: requests one connection serves, ``0`` for no limit; the
            last is answered with ``Connection: close`` (nginx's
            ``keepalive_requests``).
        keepalive_time: seconds one connection is reused for, ``0`` for no limit; the
            first request begun later is its last (nginx's ``keepalive_time``).
        header_timeout: seconds a client has to send a whole request head; 408 after.
        body_timeout: seconds the server waits between two reads of a request body
            it has asked for; 408 after.
        send_timeout: seconds a client may leave a response unread before the
            connection is aborted.
        server_header: value of the ``Server`` field, empty to send none.
        max_connections: most connections open at once, ``0`` for no limit; at the
            limit new ones wait in the listen backlog (nginx's ``worker_connections``).
    """

    max_request_line: int = 8192
    max_header_field: int = 8192
    max_header_count: int = 100
    max_header_total: int = 32768
    max_body: int = 1024 * 1024
    keepalive_timeout: float = 5.0
    keepalive_requests: int = 1000
    keepalive_time: float = 3600.0
    header_timeout: float = 60.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    server_header: bytes = b"twistwsgi"
    max_connections: int = 0

    def __post_init__(self) -> None:
        """Refuse values of the wrong type or sign, which would fail per request.

        Raises:
            TypeError: a field of the wrong type (``max_body="1m"`` as a flag spells
                it, a ``str`` server header).
            ValueError: a negative limit or timeout, an infinite or NaN timeout, or 0
                where it would refuse every request (only ``max_body``,
                ``max_connections`` and the ``keepalive_`` three may be 0).
        """
        for name in _INTEGERS:
            value = getattr(self, name)
            if type(value) is not int:
                raise TypeError(f"HttpSettings: {name} must be an int, not {value!r}")
        for name in _SECONDS:
            value = getattr(self, name)
            if type(value) not in (int, float):
                raise TypeError(f"HttpSettings: {name} must be a number, not {value!r}")
        for name in _SECONDS:
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"HttpSettings: {name} must be finite")
        for name in _INTEGERS + _SECONDS:
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"HttpSettings: {name} must not be negative")
            if value == 0 and name not in _ZERO_ALLOWED:
                # Every request would be refused (or timed out at once).
                raise ValueError(f"HttpSettings: {name} must be more than 0")
        if type(self.server_header) is not bytes:
            raise TypeError(
                f"HttpSettings: server_header must be bytes, not {self.server_header!r}"
            )


_INTEGERS = (
    "max_request_line",
    "max_header_field",
    "max_header_count",
    "max_header_total",
    "max_body",
    "max_connections",
    "keepalive_requests",
)
_SECONDS = (
    "keepalive_timeout",
    "keepalive_time",
    "header_timeout",
    "body_timeout",
    "send_timeout",
)
#: 0 means "no limit" (max_body, max_connections, keepalive_requests, keepalive_time)
#: or "close at once" (keepalive_timeout).
_ZERO_ALLOWED = frozenset(
    {"max_body", "max_connections", "keepalive_timeout", "keepalive_requests", "keepalive_time"}
)
