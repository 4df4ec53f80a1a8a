"""Replay the request corpus through the protocol: whole, line by line, byte by byte.

Every invalid request must be refused with its status and ``Connection: close``
without the application ever seeing it; every valid one must reach the application
with the environ the corpus expects. Both ways of running an application (worker
threads and the reactor thread) are covered. Responses are parsed with h11.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest

from tests.request_corpus import INVALID, VALID, Invalid, Valid
from twistwsgi.http.protocol import DISPATCH_BUFFER
from twistwsgi.http.settings import HttpSettings
from twistwsgi.testing import (
    CallQueue,
    SynchronousReactorThreads,
    TrackingPool,
    connect,
    parse_responses,
)
from twistwsgi.wsgi import ClientDisconnected, WSGIHandler


def _whole(raw: bytes) -> list[bytes]:
    return [raw]


def _lines(raw: bytes) -> list[bytes]:
    pieces = raw.split(b"\n")
    return [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def _bytes(raw: bytes) -> list[bytes]:
    # Byte by byte, except for the few corpus entries near a megabyte, which go in
    # 997-byte pieces (a prime, so no piece boundary lines up with the framing).
    size = 1 if len(raw) <= 64 * 1024 else 997
    return [raw[i : i + size] for i in range(0, len(raw), size)]


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": _whole,
    "lines": _lines,
    "bytes": _bytes,
}


class Recorder:
    """A WSGI application that answers with the string part of its environ as JSON."""

    def __init__(self) -> None:
        self.calls = 0
        self.input_errors = 0
        self.bytes_read = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        body = b""
        while True:
            try:
                piece = environ["wsgi.input"].read(65536)
            except ClientDisconnected:
                self.input_errors += 1
                raise
            if not piece:
                break
            body += piece
            self.bytes_read += len(piece)
        seen = {key: value for key, value in environ.items() if isinstance(value, str)}
        seen["body"] = body.decode("latin-1")
        payload = json.dumps(seen).encode("ascii")
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


@pytest.fixture(scope="module")
def pool() -> Iterator[TrackingPool]:
    workers = TrackingPool(2)
    workers.start()
    yield workers
    workers.stop()


def _replay(raw: bytes, split: str, pool: TrackingPool | None) -> tuple[bytes, Recorder]:
    """Send ``raw`` in pieces; with a pool, play the reactor for its worker threads."""
    recorder = Recorder()
    calls = CallQueue()
    handler = WSGIHandler(
        validator(recorder),
        reactor=calls if pool is not None else SynchronousReactorThreads(),
        threadpool=pool,
    )
    connection = connect(handler)
    for piece in SPLITS[split](raw):
        connection.send(piece)
        calls.run_pending()
    if pool is not None:
        calls.run_until(lambda: pool.idle)
    return connection.transport.value(), recorder


MODES = ["threads", "inline"]


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", INVALID, ids=[case.name for case in INVALID])
def test_invalid_request_is_refused(
    case: Invalid, split: str, mode: str, pool: TrackingPool
) -> None:
    """The corpus request is refused with its status and Connection: close; the
    application only sees the valid requests pipelined before it.
    """
    written, recorder = _replay(case.raw, split, pool if mode == "threads" else None)
    responses = [r for r in parse_responses(written) if r.status >= 200]
    assert [r.status for r in responses] == [200] * case.answered_before + [case.status], case.why
    assert responses[-1].header(b"connection") == b"close"
    if mode == "threads" and len(case.raw) > DISPATCH_BUFFER:
        # A body this large streams to the application once DISPATCH_BUFFER bytes
        # are in; the limit is crossed later. The application's read fails instead,
        # and it never gets more than max_body bytes.
        assert recorder.calls <= case.answered_before + 1
        assert recorder.input_errors == recorder.calls - case.answered_before
        assert recorder.bytes_read <= HttpSettings().max_body
    else:
        assert recorder.calls == case.answered_before


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", VALID, ids=[case.name for case in VALID])
def test_valid_request_reaches_the_application(
    case: Valid, split: str, mode: str, pool: TrackingPool
) -> None:
    """Each request in the corpus entry reaches the application with the expected
    environ and body, and is answered 200 in order.
    """
    written, recorder = _replay(case.raw, split, pool if mode == "threads" else None)
    methods = [str(expect.get("REQUEST_METHOD", "GET")).encode() for expect in case.expect]
    interim_and_final = parse_responses(written, methods)
    responses = [r for r in interim_and_final if r.status >= 200]
    assert [r.status for r in responses] == [200] * len(case.expect), case.why
    assert recorder.calls == len(case.expect)
    for response, expect in zip(responses, case.expect, strict=True):
        if response.body == b"":
            # HEAD: the body is not sent; its length still is.
            assert expect.get("REQUEST_METHOD") == "HEAD"
            continue
        seen = json.loads(response.body)
        for key, value in expect.items():
            if key == "body":
                assert isinstance(value, bytes)
                assert seen["body"].encode("latin-1") == value
            elif value is None:
                assert key not in seen, key
            else:
                assert seen.get(key) == value, key


#: The corpus entries with a chunked body: the chunk-size line check follows the body
#: from line to line, so they are cut in two at every byte, in each place a read may end.
_ALL: list[Invalid | Valid] = [*INVALID, *VALID]
CHUNKED = [case for case in _ALL if b"chunked" in case.raw.lower() and len(case.raw) < 512]


@pytest.mark.parametrize("case", CHUNKED, ids=[case.name for case in CHUNKED])
def test_chunked_request_cut_anywhere(case: Invalid | Valid) -> None:
    """A request with a chunked body gets the same answers wherever a read ends."""
    for cut in range(1, len(case.raw)):
        recorder = Recorder()
        handler = WSGIHandler(
            validator(recorder), reactor=SynchronousReactorThreads(), threadpool=None
        )
        connection = connect(handler)
        connection.send(case.raw[:cut])
        if not connection.is_closed():
            connection.send(case.raw[cut:])
        statuses = [
            r.status for r in parse_responses(connection.transport.value()) if r.status >= 200
        ]
        if isinstance(case, Invalid):
            assert statuses == [200] * case.answered_before + [case.status], cut
        else:
            assert statuses == [200] * len(case.expect), cut
