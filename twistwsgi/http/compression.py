"""Which responses are compressed with gzip on the fly, and how their fields change.

nginx's ``gzip on`` for the responses of applications and proxied upstreams: the
exchange asks :func:`gzip_plan` when it sends the head, and compresses the body as
it goes if the plan says so. A response is compressed when

- the request is HTTP/1.1 (nginx's ``gzip_http_version 1.1``: without chunked
  framing an HTTP/1.0 response would end with the connection), and its
  ``Accept-Encoding`` accepts gzip (RFC 9110 §12.5.3: ``gzip`` or ``x-gzip`` or
  ``*`` with a q-value above 0, and not ``gzip;q=0``);
- the response has content (not 1xx, 204, 206, 304), no ``Content-Encoding`` of its
  own, no ``Cache-Control: no-transform`` (RFC 9111 §5.2.2.6), a ``Content-Type``
  among the compressed types, and a ``Content-Length``, if it has one, of at least
  the minimum length.

Such a response, compressed or not (the client may not accept gzip), gets ``Vary:
Accept-Encoding`` (RFC 9110 §12.5.5), as with nginx's ``gzip_vary on``, so a cache
keeps the two forms apart. A compressed one loses its ``Content-Length`` (the body is
sent chunked), gets ``Content-Encoding: gzip``, and a strong ``ETag`` becomes weak
(RFC 9110 §8.8.1: the bytes differ from the identity form's), as nginx does.

Pure logic on field lists: no Twisted.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from twistwsgi.http.request import RequestHead

__all__ = ["DEFAULT_TYPES", "GzipSettings", "accepts_gzip", "gzip_plan", "new_compressor"]

#: The media types compressed unless configured otherwise: text that compresses well
#: and that browsers and API clients ask for gzipped. ``text/event-stream`` is left
#: out: the compressor holds small events back until it has a block to send.
DEFAULT_TYPES = (
    "text/html",
    "text/plain",
    "text/css",
    "text/csv",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/xml",
    "application/atom+xml",
    "application/rss+xml",
    "application/xhtml+xml",
    "application/wasm",
    "image/svg+xml",
)


@dataclass(frozen=True)
class GzipSettings:
    """How a mount compresses.

    Attributes:
        types: media types compressed (lower case; ``text/*`` for a whole type).
        min_length: responses with a ``Content-Length`` below this are sent as they
            are (gzip's header and trailer would cost more than they save).
        level: the zlib compression level, 1 (fastest, nginx's default) to 9.
    """

    types: frozenset[str] = frozenset(DEFAULT_TYPES)
    min_length: int = 256
    level: int = 1

    def compresses(self, media_type: str) -> bool:
        """Whether responses of ``media_type`` (lower case, no parameters) are compressed."""
        return media_type in self.types or media_type.split("/", 1)[0] + "/*" in self.types


def new_compressor(settings: GzipSettings) -> zlib._Compress:
    """A compressor that writes the gzip format (RFC 1952)."""
    return zlib.compressobj(settings.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


def accepts_gzip(request: RequestHead) -> bool:
    """Whether the request's ``Accept-Encoding`` accepts gzip (RFC 9110 §12.5.3)."""
    values = [value for name, value in request.headers if name.lower() == b"accept-encoding"]
    if not values:
        return False  # no preference: the identity is what every client reads
    gzip: float | None = None
    star: float | None = None
    for item in b",".join(values).split(b","):
        coding, _, parameters = item.partition(b";")
        coding = coding.strip().lower()
        quality = _quality(parameters)
        if coding in (b"gzip", b"x-gzip"):
            gzip = quality if gzip is None else max(gzip, quality)
        elif coding == b"*":
            star = quality
    if gzip is not None:
        return gzip > 0
    return star is not None and star > 0


def _quality(parameters: bytes) -> float:
    """The q-value of a list member's parameters (1 when none; 0 when malformed)."""
    for parameter in parameters.split(b";"):
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0


def gzip_plan(
    request: RequestHead,
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    settings: GzipSettings,
) -> tuple[list[tuple[bytes, bytes]], bool] | None:
    """The fields to send and whether to compress, or ``None`` to leave it all be.

    ``None`` for a response that is never compressed; otherwise the fields with
    ``Vary: Accept-Encoding``, changed for gzip when the client accepts it.
    """
    if status < 200 or status in (204, 206, 304) or request.version != b"1.1":
        return None
    media_type = ""
    length: int | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif lower == b"content-encoding":
            return None
        elif lower == b"content-length":
            length = int(value) if value.strip().isdigit() else None
        elif lower == b"cache-control" and b"no-transform" in value.lower():
            return None
    if not media_type or not settings.compresses(media_type):
        return None
    if length is not None and length < settings.min_length:
        return None
    compress = accepts_gzip(request)
    fields = _with_vary(headers)
    if compress:
        fields = [
            (name, _weak(value) if name.lower() == b"etag" else value)
            for name, value in fields
            if name.lower() != b"content-length"
        ]
        fields.append((b"Content-Encoding", b"gzip"))
    return fields, compress


def _with_vary(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``Accept-Encoding`` in ``Vary`` (once; ``*`` already covers it)."""
    fields = list(headers)
    for index, (name, value) in enumerate(fields):
        if name.lower() == b"vary":
            names = [part.strip().lower() for part in value.split(b",")]
            if b"accept-encoding" in names or b"*" in names:
                return fields
            fields[index] = (
                name,
                value + b", Accept-Encoding" if value.strip() else b"Accept-Encoding",
            )
            return fields
    fields.append((b"Vary", b"Accept-Encoding"))
    return fields


def _weak(etag: bytes) -> bytes:
    """A strong entity tag made weak (``"x"`` → ``W/"x"``); a weak one as it is."""
    stripped = etag.strip()
    return stripped if stripped.startswith(b"W/") else b"W/" + stripped
