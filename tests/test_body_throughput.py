"""The body throughput harness (``benchmarks/body_throughput.py``) runs, at a tiny size.

It starts the real server in a child process and checks every answer itself (the
byte count the upload application read, the streamed body's size): a run that
completes is a run whose bodies went through whole. No timing is asserted.
"""

from __future__ import annotations

import pytest

from benchmarks import body_throughput
from benchmarks.apps import STREAM_TOTAL


@pytest.mark.parametrize(
    ("scenario", "threads", "chunked"),
    [("upload", 2, False), ("upload", 0, True), ("stream", 2, False), ("stream", 0, False)],
)
def test_the_harness_measures_whole_bodies(scenario: str, threads: int, chunked: bool) -> None:
    """Each request is answered and counted, its body whole, in both thread modes."""
    size = 300_000
    result = body_throughput.run(
        scenario, count=5, connections=2, threads=threads, size=size, chunked=chunked
    )
    assert result.requests == 5
    expected = size if scenario == "upload" else STREAM_TOTAL
    assert result.body_bytes == 5 * expected
    assert result.seconds > 0
