"""The misbehaving-application table's reading and naming, and twistwsgi's own row, in memory.

``benchmarks/app_wire.py`` starts real servers and is not run here (the peers' venv is not in
CI). What is checked: what ``benchmarks/harness/app_wire.py`` makes of the bytes a server
answered (each verdict, from hand-written wire bytes), the page it renders, and every case of
``benchmarks/misbehaving.py`` run through twistwsgi over an in-memory connection, on the thread
pool and in the reactor thread, judged the same way: the framing must hold in each. The
applications are not wrapped in ``wsgiref.validate.validator``: each breaks PEP 3333 on
purpose, and the validator would raise before the server saw the mistake.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address

from benchmarks import misbehaving
from benchmarks.app_wire import BEGIN_MARK, END_MARK, publish
from benchmarks.harness.app_wire import (
    End,
    Outcome,
    Row,
    Transcript,
    Verdict,
    crashed,
    judge,
    kept_count,
    parse_first,
    render,
)
from twistwsgi.testing import (
    PullingTransport,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    capture_log_events,
    connect,
)
from twistwsgi.wsgi import WSGIHandler

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
_SECOND = (
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(misbehaving.SECOND_BODY)
    + misbehaving.SECOND_BODY
)
_ERROR = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"


def _judge(
    first: bytes,
    end: End = End.COMPLETE,
    second: bytes | None = None,
    second_end: End | None = None,
    *,
    method: str = "GET",
    injected: str = "",
    failed: bool = False,
) -> Outcome:
    return judge(
        Transcript(method, first, end, second, second_end), injected=injected, failed=failed
    )


# -- the verdicts -----------------------------------------------------------------------


def test_a_response_kept_alive_whose_next_request_gets_its_answer_is_sent() -> None:
    outcome = _judge(_OK, second=_SECOND, second_end=End.COMPLETE)
    assert (outcome.verdict, outcome.text, outcome.kept) == (
        Verdict.SENT,
        "200, 5 bytes, kept alive",
        True,
    )


def test_a_response_then_a_close_is_sent() -> None:
    assert _judge(_OK, End.CLOSED).text == "200, 5 bytes, closed"
    assert _judge(_OK, second=b"", second_end=End.CLOSED).verdict is Verdict.SENT


def test_the_servers_own_error_is_named_and_its_traceback_is_a_leak() -> None:
    assert _judge(_ERROR, End.CLOSED).verdict is Verdict.ERROR_5XX
    leak = b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\nTraceback"
    assert _judge(leak, End.CLOSED).verdict is Verdict.LEAK


def test_a_response_cut_then_closed_is_aborted_and_one_left_open_hangs() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"
    assert _judge(cut, End.CLOSED).text == "200, closed after 5 body bytes"
    hang = _judge(cut, End.TIMEOUT)
    assert (hang.verdict, hang.kept) == (Verdict.HANG, False)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    assert _judge(chunked, End.CLOSED).verdict is Verdict.ABORTED


def test_a_body_the_close_delimits_is_whole_at_the_close() -> None:
    outcome = _judge(b"HTTP/1.1 200 OK\r\n\r\nhello", End.CLOSED)
    assert (outcome.verdict, outcome.text) == (Verdict.SENT, "200, 5 bytes, closed")


def test_bytes_past_the_end_of_a_response_are_broken() -> None:
    outcome = _judge(_OK + b"HTTP/1.1 200 OK\r\n", second=_SECOND, second_end=End.COMPLETE)
    assert (outcome.verdict, outcome.kept) == (Verdict.EXTRA_BYTES, False)
    assert "17 bytes after it" in outcome.text


def test_a_next_request_answered_with_another_response_is_a_desync() -> None:
    other = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    outcome = _judge(_OK, second=other, second_end=End.COMPLETE)
    assert (outcome.verdict, outcome.text) == (
        Verdict.DESYNC,
        "200, 5 bytes; next request got 404, not its answer",
    )
    assert _judge(_OK, second=b"", second_end=End.TIMEOUT).verdict is Verdict.HANG


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Test: a\r\nInjected: yes\r\nContent-Length: 0", Verdict.INJECTED),
        (b"HTTP/1.1 200 OK\r\nX-Test: a\nb\r\nContent-Length: 0", Verdict.UNPARSABLE),
        (b"HTTP/1.1 200 OK\r\nX-Test: a\x00b\r\nContent-Length: 0", Verdict.UNPARSABLE),
        (b"HTTP/1.1 20 OK\r\nContent-Length: 0", Verdict.UNPARSABLE),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7", Verdict.UNPARSABLE),
    ],
)
def test_heads_a_client_cannot_trust_are_broken(head: bytes, verdict: Verdict) -> None:
    outcome = _judge(head + b"\r\n\r\n", End.CLOSED, injected="injected")
    assert (outcome.verdict, outcome.kept) == (verdict, False)


def test_a_failed_response_that_reads_complete_hides_the_failure() -> None:
    """An application that failed mid-body: a complete 200 is broken, a 5xx or a cut not."""
    outcome = _judge(_OK, second=_SECOND, second_end=End.COMPLETE, failed=True)
    assert (outcome.verdict, outcome.kept) == (Verdict.HIDDEN_CUT, False)
    assert _judge(_ERROR, End.CLOSED, failed=True).verdict is Verdict.ERROR_5XX
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"
    assert _judge(cut, End.CLOSED, failed=True).verdict is Verdict.ABORTED


def test_an_unparsable_head_is_shown_with_h11s_reason() -> None:
    outcome = _judge(b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", End.CLOSED)
    assert outcome.text == "unparsable: illegal status line: b'HTTP/1.1 20 OK'"


def test_a_1xx_sent_as_the_answer_is_broken() -> None:
    outcome = _judge(b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nhello", End.TIMEOUT)
    assert (outcome.verdict, outcome.kept) == (Verdict.INTERIM, False)


def test_a_head_answer_has_no_body_and_its_length_is_the_gets() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert _judge(head, End.CLOSED, method="HEAD").text == "200, 0 bytes, closed"
    outcome = _judge(head + b"hello", End.CLOSED, method="HEAD")
    assert outcome.verdict is Verdict.EXTRA_BYTES


def test_silence_and_a_bare_close_are_told_apart() -> None:
    assert _judge(b"", End.CLOSED).verdict is Verdict.CLOSED
    assert _judge(b"", End.TIMEOUT).verdict is Verdict.HANG


def test_notes_name_hop_by_hop_fields_repeats_and_cookies() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n"
        b"Date: a\r\nDate: b\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
    )
    outcome = _judge(head, End.CLOSED)
    assert outcome.notes == ("passes keep-alive", "2 date lines", "2 set-cookie lines")
    assert outcome.cell() == "200, 0 bytes, closed; " + "; ".join(outcome.notes)


def test_a_close_announced_and_not_done_is_noted() -> None:
    said = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    outcome = _judge(said, second=_SECOND, second_end=End.COMPLETE)
    assert (outcome.verdict, outcome.notes) == (
        Verdict.SENT,
        ("said Connection: close, served the next request",),
    )


def test_a_server_that_exits_is_said_so() -> None:
    assert crashed(_judge(b"", End.CLOSED)).verdict is Verdict.CRASHED
    broken = crashed(_judge(_OK + b"x", End.CLOSED))
    assert (broken.verdict, broken.notes[-1]) == (Verdict.EXTRA_BYTES, "the server exited")


def test_parse_first_reads_past_the_default_h11_head_limit() -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Huge: " + b"x" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n"
    parsed = parse_first("GET", huge, closed=False)
    assert (parsed.complete, parsed.error) == (True, None)


# -- the page -----------------------------------------------------------------------------

_ROWS = [Row("a", "does a", "RFC 1"), Row("b", "does b", "")]


def test_the_page_counts_kept_framing_and_lists_broken_cases() -> None:
    good = Outcome(Verdict.SENT, "200, 5 bytes, kept alive")
    bad = Outcome(Verdict.EXTRA_BYTES, "200, 5 bytes + 3 bytes after it")
    results = {"twistwsgi": {"a": good, "b": good}, "peer": {"a": good, "b": bad}}
    assert kept_count(_ROWS, results["peer"]) == (1, 2)
    page = render(_ROWS, results, servers=["twistwsgi", "peer"], header="Run today.")
    assert page.startswith("Run today.\n")
    assert "| twistwsgi | 2 / 2 | — |" in page
    assert "| peer | 1 / 2 | `b` |" in page
    assert "| `a` | does a (RFC 1) | 200, 5 bytes, kept alive | 200, 5 bytes, kept alive |" in page
    assert "**broken**: 200, 5 bytes + 3 bytes after it" in page


def test_publish_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    docs = tmp_path / "wsgi.md"
    docs.write_text(f"# WSGI\n\nbefore\n\n{BEGIN_MARK}\n\nold\n\n{END_MARK}\n\nafter\n")
    publish("new table\n", docs)
    assert docs.read_text() == (
        f"# WSGI\n\nbefore\n\n{BEGIN_MARK}\n\nnew table\n\n{END_MARK}\n\nafter\n"
    )


def test_the_published_section_is_in_the_docs() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "wsgi.md").read_text()
    assert text.index(BEGIN_MARK) < text.index(END_MARK)


# -- twistwsgi's row, in memory ---------------------------------------------------------------


def _serve_case(case: misbehaving.Misbehaviour, *, threaded: bool) -> Transcript:
    """The case's request, then the second one if the connection stays open, as the tool
    sends them, through twistwsgi in memory (a file response is pulled to its end).
    """
    handler = WSGIHandler(
        misbehaving.app,
        reactor=SynchronousReactorThreads(),
        threadpool=SynchronousThreadPool() if threaded else None,
    )
    transport = PullingTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 54321),
    )
    connection = connect(handler, transport=transport)
    request = "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    connection.send(request.format(case.method, f"/{case.name}").encode())
    first = connection.take()
    if connection.is_closed():
        return Transcript(case.method, first, End.CLOSED)
    if not parse_first(case.method, first, closed=False).complete:
        return Transcript(case.method, first, End.TIMEOUT)
    connection.send(request.format("GET", misbehaving.SECOND_PATH).encode())
    second = connection.take()
    if connection.is_closed():
        second_end = End.CLOSED
    elif parse_first("GET", second, closed=False).complete:
        second_end = End.COMPLETE
    else:
        second_end = End.TIMEOUT
    return Transcript(case.method, first, End.COMPLETE, second, second_end)


# Where twistwsgi does not send the application's response as it is: its own 500 (nothing
# was out yet) or a cut (bytes were out). Every other case is sent well-framed.
_SERVER_ERRORS = {
    "cl-larger",  # a whole body short of its length
    "crlf-in-value",
    "lf-in-value",
    "cr-in-value",
    "crlfcrlf-in-value",
    "nul-in-value",
    "ctl-in-value",
    "crlf-in-name",
    "space-in-name",
    "colon-in-name",
    "empty-name",
    "non-latin1-value",
    "bytes-value",
    "crlf-in-reason",
    "nul-in-reason",
    "status-2-digits",
    "status-4-digits",
    "status-letters",
    "status-no-reason",
    "status-999",
    "status-100",
    "status-101",
    "status-103",
    "no-start-response",
    "start-response-twice",
    "yield-str",
    "return-bytes",
    "return-none",
    "raise-before-body",
    "exc-info-before-body",  # the application's own 500, which replaced its 200
    "file-wrapper-short",  # a file short of its length
}
_ABORTED = {
    "cl-larger-streamed",
    "yield-str-later",
    "raise-mid-body",
    "raise-mid-body-cl",
    "exc-info-after-body",  # going on after the re-raise
}


@pytest.mark.parametrize("threaded", [True, False], ids=["threads", "inline"])
@pytest.mark.parametrize("case", misbehaving.CASES, ids=lambda case: case.name)
def test_twistwsgi_keeps_the_framing_whatever_the_application_does(
    case: misbehaving.Misbehaviour, threaded: bool
) -> None:
    with capture_log_events():
        outcome = judge(
            _serve_case(case, threaded=threaded), injected=case.injected, failed=case.failed
        )
    assert outcome.kept, outcome.cell()
    expected = (
        Verdict.ERROR_5XX
        if case.name in _SERVER_ERRORS
        else Verdict.ABORTED
        if case.name in _ABORTED
        else Verdict.SENT
    )
    assert outcome.verdict is expected, outcome.cell()
    if outcome.verdict is Verdict.ERROR_5XX and case.name != "exc-info-before-body":
        assert outcome.text == "500, 22 bytes, kept alive"  # its own page, no traceback


def test_every_case_has_its_own_path() -> None:
    names = [case.name for case in misbehaving.CASES]
    assert len(set(names)) == len(names)
    assert f"/{names[0]}" != misbehaving.SECOND_PATH
