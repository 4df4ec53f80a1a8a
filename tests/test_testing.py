"""The test helpers of twistwsgi.testing that docs/library.md offers to library users."""

from __future__ import annotations

import pytest

from twistwsgi.testing import CallQueue, parse_responses

CUT_SHORT = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
]


@pytest.mark.parametrize("raw", CUT_SHORT)
def test_a_framed_body_cut_short_is_an_incomplete_response(raw: bytes) -> None:
    """A body shorter than its framing said was read as if the connection had closed,
    and h11 raised its own error, with complete=False too.
    """
    with pytest.raises(AssertionError, match="Incomplete response"):
        parse_responses(raw)
    [response] = parse_responses(raw, complete=False)
    assert (response.status, response.body) == (200, b"ab")


def test_a_body_without_framing_ends_where_the_bytes_end() -> None:
    """An HTTP/1.0 response with neither field is delimited by the close."""
    [response] = parse_responses(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    assert (response.http_version, response.body) == (b"1.0", b"all of it")


def test_run_until_turns_a_hang_into_a_failure() -> None:
    """A condition that never comes true fails the test instead of hanging it."""
    calls = CallQueue()
    ran: list[int] = []
    calls.callFromThread(ran.append, 1)
    with pytest.raises(AssertionError, match="Timed out waiting for the worker threads"):
        calls.run_until(lambda: False, timeout=0.0)
    assert ran == [1]
    assert calls.run_pending() == 0
