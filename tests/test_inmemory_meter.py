"""The in-memory meter of benchmarks/inmemory.py: each case runs and checks its responses.

A handful of requests per case, so the meter cannot rot while nobody measures; and the checks
that keep a broken change from looking fast do refuse a wrong response.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import inmemory
from twistwsgi import forwarding


@pytest.fixture(scope="module")
def docroot() -> Iterator[Path]:
    with inmemory.docroot_with_file() as root:
        yield root


@pytest.mark.parametrize("case", inmemory.CASES)
def test_each_case_serves_keep_alive_requests(case: str, docroot: Path) -> None:
    cost = inmemory.measure(case, requests=5, repeat=2, docroot=docroot)
    assert cost > 0


@pytest.mark.parametrize("case", inmemory.CASES)
def test_each_case_answers_a_200_with_its_body(case: str, docroot: Path) -> None:
    built = inmemory.build(case, docroot)
    try:
        inmemory.check_first(case, built.run(1, None), built.body)
        with pytest.raises(AssertionError, match="got status 200"):
            inmemory.check_first(case, built.run(1, None), built.body + b"!")
    finally:
        built.close()


def test_a_refusal_is_not_taken_for_an_answer() -> None:
    refusal = b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nHello, World!"
    with pytest.raises(AssertionError, match="status 404"):
        inmemory.check_first("hello", refusal, inmemory.HELLO_BODY)


def test_a_response_that_changes_is_refused(docroot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(
        [inmemory.UPSTREAM_RESPONSE, inmemory.UPSTREAM_RESPONSE.replace(b"Hello", b"Jello")]
    )
    real_pump = inmemory.Upstream.pump

    def pump(self: inmemory.Upstream) -> bool:
        monkeypatch.setattr(
            inmemory, "UPSTREAM_RESPONSE", next(answers, inmemory.UPSTREAM_RESPONSE)
        )
        return real_pump(self)

    monkeypatch.setattr(inmemory.Upstream, "pump", pump)
    with pytest.raises(AssertionError, match="differs from the first"):
        inmemory.measure("proxy", requests=3, repeat=1, docroot=docroot)


def test_an_upstream_connection_per_request_is_refused(
    docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closing = inmemory.UPSTREAM_RESPONSE.replace(b"keep-alive", b"close")
    monkeypatch.setattr(inmemory, "UPSTREAM_RESPONSE", closing)
    with pytest.raises(AssertionError, match="not kept alive"):
        inmemory.measure("proxy", requests=3, repeat=1, docroot=docroot)


def test_a_broken_request_to_the_upstream_is_refused(
    docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream answers whatever it gets: a change that breaks what the proxy
    sends (here its forwarding fields left out) must not look fast.
    """
    # (request_fields looks the block up in the cache first: an empty one, so that
    # each request asks _forwarding_block.)
    monkeypatch.setattr(forwarding, "_blocks", {})
    monkeypatch.setattr(forwarding, "_forwarding_block", lambda *arguments: b"")
    with pytest.raises(AssertionError, match="the upstream got"):
        inmemory.measure("proxy", requests=3, repeat=1, docroot=docroot)


def test_a_request_to_the_upstream_that_changes_is_refused(
    docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = iter([b"X-Forwarded-For: 127.0.0.1\r\n"])
    monkeypatch.setattr(forwarding, "_blocks", {})  # (each request asks, as above)
    monkeypatch.setattr(
        forwarding, "_forwarding_block", lambda *arguments: next(blocks, b"X-Other: 1\r\n")
    )
    with pytest.raises(AssertionError, match="differs from the first"):
        inmemory.measure("proxy", requests=3, repeat=1, docroot=docroot)
