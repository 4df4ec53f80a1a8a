"""The WSGI applications every server runs in the benchmarks.

Plain PEP 3333 callables with no dependencies, so that each server (twistwsgi and every peer)
imports exactly the same code as ``benchmarks.apps:NAME``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

HELLO_BODY = b"Hello, World!"
STREAM_CHUNK = 8 * 1024
STREAM_TOTAL = 100 * 1024
UPLOAD_READ_SIZE = 64 * 1024
SLEEP_SECONDS = 0.010


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Answer every request with the 13-byte body ``Hello, World!`` and a Content-Length."""
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO_BODY)))],
    )
    return [HELLO_BODY]


def sleepy(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Wait 10 ms (a stand-in for a database or API call), then answer like `hello`."""
    time.sleep(SLEEP_SECONDS)
    return hello(environ, start_response)


def _stream_chunks() -> Iterator[bytes]:
    chunk = b"x" * STREAM_CHUNK
    remaining = STREAM_TOTAL
    while remaining > 0:
        piece = chunk[: min(STREAM_CHUNK, remaining)]
        remaining -= len(piece)
        yield piece


def stream_100k(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Yield 100 KB in 8 KB chunks without a Content-Length (chunked on HTTP/1.1)."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _stream_chunks()


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Read the whole request body in 64 KB reads and answer with the byte count."""
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH") or ""
    remaining = int(length_header) if length_header.isdigit() else None
    total = 0
    while remaining is None or remaining > 0:
        size = UPLOAD_READ_SIZE if remaining is None else min(UPLOAD_READ_SIZE, remaining)
        data = stream.read(size)
        if not data:
            break
        total += len(data)
        if remaining is not None:
            remaining -= len(data)
    body = str(total).encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
