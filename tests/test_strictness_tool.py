"""The strictness tool's reading and naming (benchmarks/harness/strictness.py), without servers.

``benchmarks/strictness.py`` starts real servers and is not run here; what is checked is what
it makes of the bytes a server answered and the calls its application saw: the tolerant reader
of responses, the verdict for each kind of case, the findings and the page.
"""

from __future__ import annotations

import pytest

from benchmarks.harness.strictness import (
    TWISTWSGI,
    Call,
    Case,
    Observation,
    Outcome,
    Verdict,
    calls_from_record,
    classify,
    findings,
    mismatches,
    only_twistwsgi_refuses,
    read_statuses,
    render,
    tally,
)

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad"
_CHUNKED_OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
_HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n"

_INVALID = Case("invalid", "cl-te", b"raw", requests=0, status=400)
_PIPELINED = Case("invalid", "get-then-bad", b"raw", requests=1, status=400)
_VALID = Case("valid", "post", b"raw", requests=1, bodies=(5,))
_TWO = Case("valid", "two", b"raw", requests=2, bodies=(0, 0))


def _call(body_len: int = 0, path: str = "/") -> Call:
    return Call("POST", path, body_len)


# -- the reader -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "statuses", "junk"),
    [
        (b"", [], False),
        (_OK, [200], False),
        (_OK + _BAD, [200, 400], False),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + _OK, [100, 200], False),
        (_CHUNKED_OK + _BAD, [200, 400], False),
        (_HEAD_OK + _OK, [200, 200], False),  # a HEAD answer has no body
        (  # a body that looks like a status line is still a body
            b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nHTTP/1.1 201 A\r\n" + _BAD,
            [200, 400],
            False,
        ),
        (b"HTTP/1.0 400 Bad Request\r\n\r\nclose-delimited HTTP/1.1 200", [400], False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", [200], False),  # cut short
        (b"garbage\r\n", [], True),
        (_OK + b"junk", [200], True),
    ],
)
def test_read_statuses(data: bytes, statuses: list[int], junk: bool) -> None:
    """Statuses are read in order, bodies stepped over by their framing, junk noticed."""
    assert read_statuses(data) == (statuses, junk)


# -- the verdicts -----------------------------------------------------------------------


def test_an_error_with_no_call_is_refused() -> None:
    outcome = classify(_INVALID, Observation(received=_BAD, closed=True))
    assert (outcome.verdict, outcome.text, outcome.status) == (Verdict.REFUSED, "refused 400", 400)


def test_a_501_for_an_unknown_method_is_refused() -> None:
    """method-unknown is answered 501 (RFC 9110 9.1): a refusal like any error status."""
    case = Case("invalid", "method-unknown", b"FOO / HTTP/1.1\r\n", requests=0, status=501)
    answer = b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    outcome = classify(case, Observation(received=answer, closed=True))
    assert (outcome.verdict, outcome.text, outcome.status) == (Verdict.REFUSED, "refused 501", 501)


def test_the_bad_request_reaching_the_app_is_passed() -> None:
    seen = Observation(received=_OK, calls=[_call(5)])
    outcome = classify(_INVALID, seen)
    assert (outcome.verdict, outcome.text) == (Verdict.PASSED, "app: POST / len 5")


def test_more_calls_than_requests_is_a_desync() -> None:
    seen = Observation(received=_OK + _OK, calls=[_call(), _call(path="/smuggled")])
    outcome = classify(_INVALID, seen)
    assert (outcome.verdict, outcome.text) == (Verdict.DESYNC, "app x2 (desync)")


def test_the_valid_requests_before_the_bad_one_do_not_count() -> None:
    """In a pipelined case the first request is expected to reach the application."""
    refused = classify(_PIPELINED, Observation(received=_OK + _BAD, calls=[_call()]))
    assert refused.verdict is Verdict.REFUSED
    closed = classify(_PIPELINED, Observation(received=_OK, closed=True, calls=[_call()]))
    assert (closed.verdict, closed.text) == (Verdict.NO_ANSWER, "app x1, then closed")


@pytest.mark.parametrize(
    ("seen", "verdict", "text"),
    [
        (Observation(closed=True), Verdict.NO_ANSWER, "no answer"),
        (Observation(timed_out=True), Verdict.TIMEOUT, "timeout"),
        (Observation(received=b"nonsense", closed=True), Verdict.NO_ANSWER, "no HTTP answer"),
        (Observation(received=_OK), Verdict.NO_ANSWER, "answered 200, app not called"),
    ],
)
def test_nothing_reached_the_app_and_no_error(
    seen: Observation, verdict: Verdict, text: str
) -> None:
    outcome = classify(_INVALID, seen)
    assert (outcome.verdict, outcome.text) == (verdict, text)


def test_a_valid_request_served_as_sent_is_passed() -> None:
    outcome = classify(_VALID, Observation(received=_OK, calls=[_call(5)]))
    assert (outcome.verdict, outcome.text) == (Verdict.PASSED, "app: POST / len 5")
    two = classify(_TWO, Observation(received=_OK + _OK, calls=[_call(), _call()]))
    assert (two.verdict, two.text) == (Verdict.PASSED, "app x2")


def test_a_valid_request_with_another_body_is_named() -> None:
    outcome = classify(_VALID, Observation(received=_OK, calls=[_call(0)]))
    assert outcome.verdict is Verdict.OTHER_BODY
    assert outcome.text == "app: POST / len 0 (body sent: 5)"


def test_a_valid_pipeline_cut_short_by_a_refusal() -> None:
    outcome = classify(_TWO, Observation(received=_OK + _BAD, calls=[_call()]))
    assert (outcome.verdict, outcome.text) == (Verdict.REFUSED, "app x1, refused 400")


def test_a_valid_request_refused() -> None:
    outcome = classify(_VALID, Observation(received=_BAD, closed=True))
    assert outcome.verdict is Verdict.REFUSED


# -- findings and the page -------------------------------------------------------------


def _results() -> dict[str, dict[str, Outcome]]:
    refused = classify(_INVALID, Observation(received=_BAD))
    passed = classify(_INVALID, Observation(received=_OK, calls=[_call()]))
    served = classify(_VALID, Observation(received=_OK, calls=[_call(5)]))
    turned_away = classify(_VALID, Observation(received=_BAD))
    return {
        TWISTWSGI: {_INVALID.key: passed, _VALID.key: turned_away},
        "gunicorn": {_INVALID.key: refused, _VALID.key: served},
        "waitress": {_INVALID.key: passed, _VALID.key: served},
    }


def test_findings_name_the_stricter_peers() -> None:
    """An invalid case a peer refuses and twistwsgi passes, and a valid case every peer
    serves and twistwsgi refuses, are findings; the corpus mismatches are listed too.
    """
    results = _results()
    found = findings([_INVALID, _VALID], results)
    assert [(f.case.name, f.peers) for f in found] == [
        ("cl-te", ("gunicorn",)),
        ("post", ("gunicorn", "waitress")),
    ]
    wrong = mismatches([_INVALID, _VALID], results)
    assert [case.name for case, _ in wrong] == ["cl-te", "post"]


def test_no_finding_when_twistwsgi_refuses() -> None:
    refused = classify(_INVALID, Observation(received=_BAD))
    results = {TWISTWSGI: {_INVALID.key: refused}, "nginx": {_INVALID.key: refused}}
    assert findings([_INVALID], results) == []
    assert mismatches([_INVALID], results) == []
    assert only_twistwsgi_refuses([_INVALID], results) == []


def test_refused_by_twistwsgi_alone() -> None:
    """A case every peer lets through and twistwsgi refuses is listed as such."""
    refused = classify(_INVALID, Observation(received=_BAD))
    passed = classify(_INVALID, Observation(received=_OK, calls=[_call()]))
    results = {TWISTWSGI: {_INVALID.key: refused}, "nginx": {_INVALID.key: passed}}
    assert only_twistwsgi_refuses([_INVALID], results) == [_INVALID]
    page = render([_INVALID], results, servers=[TWISTWSGI, "nginx"])
    assert "## Refused by twistwsgi alone\n\n- `cl-te` (invalid): \n" in page


def test_tally_and_page() -> None:
    results = _results()
    counts = tally([_INVALID, _VALID], results["gunicorn"])
    assert (counts.invalid, counts.refused, counts.passed, counts.valid, counts.served) == (
        1,
        1,
        0,
        1,
        1,
    )
    page = render(
        [_INVALID, _VALID],
        results,
        servers=[TWISTWSGI, "gunicorn", "waitress"],
    )
    assert "| gunicorn | 1 / 1 | 0 | 0 | 0 | 1 / 1 |" in page
    assert "| `cl-te` | app: POST / len 0 | refused 400 | app: POST / len 0 |" in page
    assert "- `cl-te` (invalid): twistwsgi app: POST / len 0; gunicorn refuse it." in page


# -- the application's record --------------------------------------------------------------


def test_a_call_whose_body_read_never_ended_still_counts() -> None:
    """The recording application notes a call when it begins, then what its body read
    came to: a server that calls it for a body that never comes (or fails the read) has
    still passed the request on, and the verdict says so.
    """
    lines = [
        '{"case": "invalid:cl-te", "event": "call", "call": "a", "method": "POST",'
        ' "path": "/", "query": ""}',
        '{"case": "valid:post", "event": "call", "call": "b", "method": "POST",'
        ' "path": "/p", "query": "q=1"}',
        '{"case": "valid:post", "event": "read", "call": "b", "body_len": 5}',
        # Behind nginx the recording upstream writes each request once, whole.
        '{"case": "valid:two", "method": "GET", "path": "/", "query": "", "body_len": 0}',
    ]
    calls = calls_from_record(lines)
    assert calls == {
        "invalid:cl-te": [Call("POST", "/", None)],
        "valid:post": [Call("POST", "/p?q=1", 5)],
        "valid:two": [Call("GET", "/", 0)],
    }
    outcome = classify(_INVALID, Observation(timed_out=True, calls=calls["invalid:cl-te"]))
    assert (outcome.verdict, outcome.text) == (Verdict.PASSED, "app: POST / body unread")


def test_a_call_whose_body_the_server_then_refused_is_named_apart() -> None:
    """A server that calls the application with the head, then fails its body read and
    answers an error (gunicorn on bad chunks, twistwsgi past 64 KiB of a body over
    --max-body) refused the request, but not before the application ran: the cell says
    so, and the summary counts it apart.
    """
    seen = Observation(received=_BAD, closed=True, calls=[Call("POST", "/", None)])
    outcome = classify(_INVALID, seen)
    assert (outcome.verdict, outcome.text, outcome.status) == (
        Verdict.REFUSED_IN_BODY,
        "app called, body refused 400",
        400,
    )
    results = {TWISTWSGI: {_INVALID.key: outcome}}
    assert tally([_INVALID], results[TWISTWSGI]).refused == 1
    assert mismatches([_INVALID], results) == []
    page = render([_INVALID], results, servers=[TWISTWSGI])
    assert "| twistwsgi | 1 / 1 (1 after calling the app) | 0 | 0 | 0 | 0 / 0 |" in page
