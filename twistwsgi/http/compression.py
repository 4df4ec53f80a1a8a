"""Which responses are compressed with gzip on the fly, and how their fields change.

nginx's ``gzip on`` for the responses of applications and proxied upstreams: the
exchange asks :func:`gzip_plan` when it sends the head, and compresses the body as
it goes if the plan says so. A response is compressed when

- the request is HTTP/1.1 (nginx's ``gzip_http_version 1.1``: without chunked
  framing an HTTP/1.0 response would end with the connection), and its
  ``Accept-Encoding`` accepts gzip (RFC 9110 §12.5.3: ``gzip`` or ``x-gzip`` or
  ``*`` with a q-value above 0, and not ``gzip;q=0``);
- the response has content (not 1xx, 204, 205, 206, 304), no ``Content-Encoding`` of its
  own, no ``Cache-Control: no-transform`` (RFC 9111 §5.2.2.6), a ``Content-Type``
  among the compressed types, and a ``Content-Length``, if it has one, of at least
  the minimum length.

Such a response, compressed or not (the client may not accept gzip), gets ``Vary:
Accept-Encoding`` (RFC 9110 §12.5.5), as with nginx's ``gzip_vary on``, so a cache
keeps the two forms apart. A compressed one loses its ``Content-Length`` (the body is
sent chunked) and its ``Accept-Ranges``, gets ``Content-Encoding: gzip``, and a
strong ``ETag`` becomes weak (RFC 9110 §8.8.1: the bytes differ from the identity
form's), as nginx does.

Pure logic on field lists: no Twisted.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from twistwsgi.http.request import RequestHead

__all__ = ["DEFAULT_TYPES", "GzipSettings", "GzipStream", "accepts_gzip", "gzip_plan"]

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


class GzipStream:
    """One response's body in the gzip format (RFC 1952), as the handler writes it.

    Each piece is flushed (``Z_SYNC_FLUSH``) as it is written: a server may not hold
    back what an application wrote (PEP 3333, "Buffering and Streaming"), and a
    streamed page, long poll or proxied stream must reach the client as it comes
    (nginx flushes its gzip stream with each upstream read when it does not buffer).
    A flush costs a few bytes; a body written in one piece is compressed as well as
    ever.

    The ``Content-Length`` the handler declared (removed from the compressed
    response) is still held to, counted in uncompressed bytes: what goes past it is
    dropped (:attr:`cut`), and :attr:`missing` says how much of it never came, as
    for a response sent as it is.

    Args:
        settings: the compression level.
        declared_length: the handler's ``Content-Length``, if it gave one.
    """

    def __init__(self, settings: GzipSettings, declared_length: int | None) -> None:
        self._compressor = zlib.compressobj(settings.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self._declared = declared_length
        self._written = 0
        self.cut = False

    def write(self, data: bytes) -> bytes:
        """Compress a piece of the body; what the client can be sent now."""
        data = self._within_length(data)
        if not data:
            return b""
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes = b"") -> bytes:
        """Compress the last piece and end the gzip stream (its trailer included).

        A body short of its declared length gets no trailer: what was written is
        sent, and nothing says it is whole.
        """
        compressor = self._compressor
        out = compressor.compress(self._within_length(data))
        return out + compressor.flush(zlib.Z_SYNC_FLUSH if self.missing else zlib.Z_FINISH)

    @property
    def missing(self) -> int:
        """How many declared bytes were not written (0 with no declared length)."""
        return 0 if self._declared is None else max(self._declared - self._written, 0)

    def _within_length(self, data: bytes) -> bytes:
        declared = self._declared
        if declared is not None and self._written + len(data) > declared:
            data = data[: max(declared - self._written, 0)]
            self.cut = True
        self._written += len(data)
        return data


def declared_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` of response fields, if one plain number is given."""
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
    return None


def accepts_gzip(request: RequestHead) -> bool:
    """Whether the request's ``Accept-Encoding`` accepts gzip (RFC 9110 §12.5.3)."""
    accepted = request.joined(b"accept-encoding")
    if accepted is None:
        return False  # no preference: the identity is what every client reads
    gzip: float | None = None
    star: float | None = None
    for item in accepted.split(b","):
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
    known_length: int | None = None,
) -> tuple[list[tuple[bytes, bytes]], bool] | None:
    """The fields to send and whether to compress, or ``None`` to leave it all be.

    ``None`` for a response that is never compressed; otherwise the fields with
    ``Vary: Accept-Encoding``, changed for gzip when the client accepts it.
    ``known_length`` is the body's length when the server has it whole (held to
    the minimum length as a ``Content-Length`` is).
    """
    if status < 200 or status in (204, 205, 206, 304) or request.version != b"1.1":
        return None
    media_type = ""
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        elif lower == b"content-encoding" or (
            lower == b"cache-control" and b"no-transform" in value.lower()
        ):
            return None  # coded already, or not to be transformed (RFC 9111 5.2.2.6)
    if not media_type or not settings.compresses(media_type):
        return None
    length = declared_length(headers)
    if length is None:
        length = known_length
    if length is not None and length < settings.min_length:
        return None
    compress = accepts_gzip(request)
    fields = _with_vary(headers)
    if compress:
        # Ranges would count the identity's bytes, which a client resuming this
        # download does not have (a 206 is never compressed): no Accept-Ranges.
        fields = [
            (name, _weak(value) if name.lower() == b"etag" else value)
            for name, value in fields
            if name.lower() not in (b"content-length", b"accept-ranges")
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
