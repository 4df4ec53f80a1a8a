"""``wsgi.input`` on the thread pool (``_ThreadedInput``) read as a file is read.

PEP 3333 ("Input and Error Streams") gives ``wsgi.input`` the semantics of a file:
whatever pieces the body arrived in, every mix of ``read(n)``, ``read()``,
``readline(n)``, ``readlines(hint)`` and iteration returns what the same calls on an
``io.BytesIO`` of the whole body return. The body is queued whole before the reads,
so no read waits (the reads that wait are the protocol tests' business). The
pieces are counted as read: the client, paused past the high-water mark, is
resumed, and nothing stays accounted once everything is read.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from twistwsgi.http.request import RequestHead
from twistwsgi.testing import request_head
from twistwsgi.wsgi import INPUT_HIGH_WATER, _ThreadedInput


class FakeExchange:
    """What the input calls on its exchange: counts pauses and resumes."""

    def __init__(self) -> None:
        self.request: RequestHead = request_head(b"/", method=b"POST")
        self.paused = 0
        self.resumed = 0
        self.continued = 0

    def pause_body(self) -> None:
        self.paused += 1

    def resume_body(self) -> None:
        self.resumed += 1

    def continue_body(self) -> None:
        self.continued += 1


class RunAtOnce:
    """An inbox that runs every call handed to the reactor at once."""

    def call(self, func: Callable[..., object], *args: Any) -> None:
        func(*args)


def fed(pieces: list[bytes]) -> tuple[_ThreadedInput, FakeExchange]:
    exchange = FakeExchange()
    stream = _ThreadedInput(exchange, RunAtOnce())  # type: ignore[arg-type]
    for piece in pieces:
        stream.body_received(piece)
    stream.body_finished()
    return stream, exchange


Operation = tuple[str, int | None]
SIZES = st.one_of(st.none(), st.integers(min_value=-1, max_value=40))
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), SIZES),
        st.tuples(st.just("readline"), SIZES),
        st.tuples(st.just("readlines"), st.integers(min_value=-1, max_value=40)),
        st.tuples(st.just("next"), st.none()),
    ),
    max_size=12,
)
PIECES = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\0", b"\n")), max_size=8)


def apply(stream: Any, operation: Operation) -> object:
    name, size = operation
    if name == "read":
        return stream.read(size) if size is not None else stream.read()
    if name == "readline":
        return stream.readline(size) if size is not None else stream.readline()
    if name == "readlines":
        return stream.readlines(size)
    return next(iter(stream), b"")


@settings(max_examples=300)
@given(pieces=PIECES, operations=OPERATIONS)
# Reads that stop inside a piece, then lines limited to less than was read of it.
@example(pieces=[b"abcdef\nxy"], operations=[("read", 3), ("readline", 2), ("readline", 9)])
@example(pieces=[b"ab\ncd", b"ef\ng"], operations=[("readline", 1), ("read", 3), ("next", None)])
def test_reads_return_what_a_file_of_the_body_returns(
    pieces: list[bytes], operations: list[Operation]
) -> None:
    """Every mix of reads returns what an io.BytesIO of the whole body returns."""
    stream, _ = fed([piece for piece in pieces if piece])
    reference = io.BytesIO(b"".join(pieces))
    for operation in [*operations, ("read", None)]:
        assert apply(stream, operation) == apply(reference, operation), operation
    assert stream.read(1) == b""
    assert stream._buffered == 0


@settings(max_examples=50, deadline=None)
@given(
    pieces=st.lists(st.integers(min_value=1, max_value=3 * 65536), min_size=1, max_size=10),
    read_size=st.integers(min_value=1000, max_value=3 * 65536),
)
def test_large_pieces_read_in_any_size(pieces: list[int], read_size: int) -> None:
    """Reads of any size across large pieces return the body in order, each piece's
    bytes once, and the client paused past the high-water mark is resumed.
    """
    total = sum(pieces)
    body = (bytes(range(251)) * (total // 251 + 1))[:total]
    split: list[bytes] = []
    at = 0
    for size in pieces:
        split.append(body[at : at + size])
        at += size
    stream, exchange = fed(split)
    parts: list[bytes] = []
    while part := stream.read(read_size):
        assert len(part) == read_size or len(b"".join(parts)) + len(part) == len(body)
        parts.append(part)
    assert b"".join(parts) == body
    assert exchange.paused == (1 if len(body) > INPUT_HIGH_WATER else 0)
    assert exchange.resumed == exchange.paused
    assert stream._buffered == 0
