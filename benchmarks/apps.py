"""The WSGI applications every server runs in the benchmarks.

Plain PEP 3333 callables with no dependencies, so that each server (twistwsgi and every peer)
imports exactly the same code as ``benchmarks.apps:NAME``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from benchmarks import misbehaving as _misbehaving

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


def _read_body(environ: Environ, *, limit: int | None = None) -> int:
    """Read the request body in 64 KB reads (up to ``limit`` bytes) and count it.

    Reads to the end of the body (``CONTENT_LENGTH``, or to an empty read without one,
    as a chunked body ends), so each server under test delivers the whole body.
    """
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH") or ""
    remaining = int(length_header) if length_header.isdigit() else None
    total = 0
    while (limit is None or total < limit) and (remaining is None or remaining > 0):
        size = UPLOAD_READ_SIZE if remaining is None else min(UPLOAD_READ_SIZE, remaining)
        data = stream.read(size)
        if not data:
            break
        total += len(data)
        if remaining is not None:
            remaining -= len(data)
    return total


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Read the whole request body in 64 KB reads and answer with the byte count."""
    total = _read_body(environ)
    body = str(total).encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


RECORD_READ_LIMIT = 4 * 1024 * 1024


def record(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Append what this call was given as JSON lines to the file ``$STRICTNESS_RECORD``.

    ``benchmarks/strictness.py`` learns from these lines, not from the response (a peer
    might mangle it), what reached the application: a ``call`` line as the call begins
    (the method, the path, and the case it was sending then: the file
    ``$STRICTNESS_CASE`` holds its id), then a ``read`` line with the body's length once
    it is read. A server may call the application for a body that never comes, and fail
    or hold the read: the call is on record all the same.
    """
    case_file = os.environ.get("STRICTNESS_CASE", "")
    try:
        with open(case_file, encoding="utf-8") as marker:
            case = marker.read().strip()
    except OSError:
        case = "?"
    call = uuid.uuid4().hex
    _record_line(
        {
            "case": case,
            "event": "call",
            "call": call,
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "query": environ.get("QUERY_STRING", ""),
        }
    )
    total = _read_body(environ, limit=RECORD_READ_LIMIT)
    _record_line({"case": case, "event": "read", "call": call, "body_len": total})
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def misbehaving(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Run the application mistake the path names (``benchmarks/misbehaving.py``)."""
    return _misbehaving.app(environ, start_response)


def _record_line(entry: dict[str, object]) -> None:
    with open(os.environ["STRICTNESS_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
