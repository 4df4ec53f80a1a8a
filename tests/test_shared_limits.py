"""The rate_limit and conn_limit counts shared by worker processes (shared_limits).

The rate table is checked against the in-process RateLimit (a dict) as oracle, the
connection table against a plain count of what each seat holds, and the locking
with real processes counting in the same file at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_access import FakeClock, head
from twistwsgi import shared_limits
from twistwsgi.access import RateLimit, SharedRateLimit
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.shared_limits import (
    CONN_GROUPS,
    ENTERED,
    RATE_GROUPS,
    REFUSED,
    SEATS,
    UNCOUNTED,
    WAYS,
    LayoutError,
    SharedLimits,
)


@pytest.fixture
def tables() -> Iterator[SharedLimits]:
    made = SharedLimits.create()
    yield made
    made.close()


def seat(tables: SharedLimits, number: int) -> SharedLimits:
    """The same tables as another process with seat ``number`` maps them."""
    return SharedLimits(tables.fd, number)


def same_group(count: int, groups: int) -> list[int]:
    """``count`` keys that fall into the same group of a table of ``groups``."""
    return [5 + groups * n for n in range(count)]


# -- the rate table --------------------------------------------------------------------


@given(
    rate=st.sampled_from([0.5, 1.0, 10.0]),
    burst=st.integers(0, 3),
    steps=st.lists(st.tuples(st.integers(0, 5), st.floats(0, 3)), max_size=80),
)
def test_the_shared_buckets_answer_as_the_in_process_ones(
    rate: float, burst: int, steps: list[tuple[int, float]]
) -> None:
    """With no more clients than a group holds, every answer is the dict's: the
    lookup, the first request of a client and the reuse of emptied entries change
    nothing.
    """
    made = SharedLimits.create()
    try:
        clock = FakeClock()
        oracle = RateLimit(rate, burst, TrustedProxies([]), clock)
        shared = SharedRateLimit(
            rate, burst, TrustedProxies([]), clock, tables=made, scope="host /login"
        )
        for client, wait in steps:
            clock.now += wait
            request = head((f"192.0.2.{client}", 1))
            # (The lead too, which rate_delay holds requests back by.)
            assert shared.count(request) == oracle.count(request)
    finally:
        made.close()


def test_a_refused_request_is_not_counted(tables: SharedLimits) -> None:
    assert [tables.rate(7, 100.0, 1.0, 2) for _ in range(4)] == [None, None, None, 1]
    assert tables.rate(7, 101.0, 1.0, 2) is None  # one drained in a second: one fits
    assert tables.rate(7, 101.0, 1.0, 2) == 1


def test_every_process_counts_in_the_same_bucket(tables: SharedLimits) -> None:
    other = seat(tables, 3)
    assert tables.rate(7, 100.0, 1.0, 1) is None
    assert other.rate(7, 100.0, 1.0, 1) is None
    assert tables.rate(7, 100.0, 1.0, 1) == 1
    assert other.rate(7, 100.0, 1.0, 1) == 1
    other.close()


def test_a_full_group_forgets_the_client_least_recently_let_through(
    tables: SharedLimits,
) -> None:
    keys = same_group(WAYS + 1, RATE_GROUPS)
    for offset, key in enumerate(keys[:WAYS]):
        assert tables.rate(key, 100.0 + offset, 0.001, 0) is None  # slow: never empty
    assert tables.rate(keys[3], 120.0, 0.001, 0) is not None  # refused: not "let through"
    assert tables.rate(keys[WAYS], 121.0, 0.001, 0) is None  # takes the oldest: keys[0]
    assert tables.rate(keys[0], 122.0, 0.001, 0) is None  # forgotten: a new client
    # keys[1] went next (the oldest left), keys[3] is still remembered.
    assert tables.rate(keys[3], 123.0, 0.001, 0) is not None
    assert tables.rate(keys[2], 124.0, 0.001, 0) is not None
    assert tables.rate(keys[1], 125.0, 0.001, 0) is None


def test_an_emptied_bucket_is_taken_before_a_remembered_one(tables: SharedLimits) -> None:
    keys = same_group(WAYS + 1, RATE_GROUPS)
    for key in keys[1:WAYS]:
        tables.rate(key, 100.0, 0.001, 0)
    tables.rate(keys[0], 100.5, 10.0, 0)  # the most recent, but empty from 100.6 on
    assert tables.rate(keys[WAYS], 101.0, 0.001, 0) is None
    for key in keys[1:WAYS]:  # none of the live ones was forgotten
        assert tables.rate(key, 101.0, 0.001, 0) is not None


# -- the connection table --------------------------------------------------------------


def test_the_limit_holds_over_every_seat(tables: SharedLimits) -> None:
    first, second = seat(tables, 0), seat(tables, 1)
    assert first.enter(9, 2) == ENTERED
    assert second.enter(9, 2) == ENTERED
    assert first.enter(9, 2) == REFUSED
    assert second.enter(9, 2) == REFUSED
    second.leave(9)
    assert first.enter(9, 2) == ENTERED
    assert tables.in_progress(9) == 2
    first.close()
    second.close()


def test_a_seat_gives_back_only_its_own_places(tables: SharedLimits) -> None:
    first, second = seat(tables, 0), seat(tables, 1)
    assert first.enter(9, 5) == ENTERED
    second.leave(9)  # holds none there: nothing changes
    assert tables.in_progress(9) == 1
    first.leave(9)
    first.leave(9)
    assert tables.in_progress(9) == 0
    first.close()
    second.close()


def test_clearing_a_seat_frees_what_its_process_held(tables: SharedLimits) -> None:
    """A worker that died with requests in progress leaves no place taken."""
    dead, alive = seat(tables, SEATS - 1), seat(tables, 0)
    keys = same_group(3, CONN_GROUPS)
    for key in keys:
        assert dead.enter(key, 2) == ENTERED
        assert dead.enter(key, 2) == ENTERED
    assert alive.enter(keys[0], 3) == ENTERED
    assert alive.enter(keys[0], 3) == REFUSED
    tables.clear_seat(SEATS - 1)
    assert [tables.in_progress(key) for key in keys] == [1, 0, 0]
    assert alive.enter(keys[0], 3) == ENTERED
    dead.close()
    alive.close()


def test_a_full_group_lets_the_request_through_uncounted(tables: SharedLimits) -> None:
    counting = seat(tables, 2)
    keys = same_group(WAYS + 1, CONN_GROUPS)
    for key in keys[:WAYS]:
        assert counting.enter(key, 1) == ENTERED
    assert counting.enter(keys[WAYS], 1) == UNCOUNTED
    assert tables.in_progress(keys[WAYS]) == 0
    # A key whose requests are all over frees its entry for another.
    counting.leave(keys[0])
    assert counting.enter(keys[WAYS], 1) == ENTERED
    assert counting.enter(keys[WAYS], 1) == REFUSED
    counting.close()


@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 3)), max_size=80),
)
def test_the_counts_follow_the_requests_of_every_seat(
    most: int, steps: list[tuple[bool, int, int]]
) -> None:
    """Entering and leaving from four seats in any order: a request is let in
    exactly when fewer than the limit are in progress over all seats.
    """
    made = SharedLimits.create()
    seats = [seat(made, number) for number in (0, 1, 2, SEATS - 1)]
    held = [[0] * 3 for _ in seats]  # per seat, per key
    try:
        for enter, key, which in steps:
            table = seats[which]
            if enter:
                total = sum(counts[key] for counts in held)
                answer = table.enter(1 + key * CONN_GROUPS, most)
                assert answer == (ENTERED if total < most else REFUSED)
                held[which][key] += answer == ENTERED
            else:
                table.leave(1 + key * CONN_GROUPS)
                held[which][key] = max(held[which][key] - 1, 0)
            for number in range(3):
                expected = sum(counts[number] for counts in held)
                assert made.in_progress(1 + number * CONN_GROUPS) == expected
    finally:
        for table in seats:
            table.close()
        made.close()


def test_a_process_without_a_seat_cannot_count_connections(tables: SharedLimits) -> None:
    with pytest.raises(ValueError, match="no seat"):
        tables.enter(9, 1)
    with pytest.raises(ValueError, match="not one of"):
        SharedLimits(tables.fd, SEATS)


# -- the file and the keys --------------------------------------------------------------


def test_a_file_laid_out_otherwise_is_refused(tmp_path: Path, tables: SharedLimits) -> None:
    with open(tmp_path / "other", "w+b") as other:
        other.truncate(4096)
        with pytest.raises(LayoutError, match="size"):
            SharedLimits(other.fileno())
    os.pwrite(tables.fd, b"twlimit0", 0)  # another version's magic
    with pytest.raises(LayoutError, match="layout"):
        SharedLimits(tables.fd)


def test_keys_are_the_same_in_every_process_that_maps_the_tables(
    tables: SharedLimits,
) -> None:
    """Python's hash of a string differs from process to process: the key must not.
    It is salted per tables: another server's keys (or a guess) differ.
    """
    here = [
        tables.key("h /a", "192.0.2.1"),
        tables.key("h /a", None),
        tables.key("h /b", ""),
    ]
    assert len(set(here)) == 3 and 0 not in here
    code = (
        "import sys; from twistwsgi.shared_limits import SharedLimits;"
        "t = SharedLimits(int(sys.argv[1]));"
        "print(t.key('h /a', '192.0.2.1'), t.key('h /a', None), t.key('h /b', ''))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(tables.fd)],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        pass_fds=[tables.fd],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert [int(word) for word in output.split()] == here
    other = SharedLimits.create()
    assert other.key("h /a", "192.0.2.1") != here[0]
    other.close()


def test_the_tables_descriptor_is_their_own_and_not_inherited(tables: SharedLimits) -> None:
    """A library closing the descriptor it was given, or a program the application
    starts, must not reach the locks or the counts.
    """
    given = os.dup(tables.fd)
    os.set_inheritable(given, True)
    mapped = SharedLimits(given)
    os.close(given)  # (the caller's descriptor: the tables keep working)
    assert not os.get_inheritable(mapped.fd)
    assert mapped.rate(7, 100.0, 1.0, 0) is None
    assert tables.rate(7, 100.0, 1.0, 0) == 1
    mapped.close()


def test_a_lowered_rate_keeps_a_refused_client_remembered(tables: SharedLimits) -> None:
    """After a reload to a slower rate, a client the new rate refuses is not taken
    for an empty bucket (its entry empties by the rate in force), even in a full group.
    """
    keys = same_group(WAYS + 1, RATE_GROUPS)
    for other in keys[1:WAYS]:
        tables.rate(other, 99.0, 1 / 60, 5)  # let through before it: older
    for _ in range(6):
        tables.rate(keys[0], 100.0, 10.0, 5)  # 10r/s, burst 5: all let through
    assert tables.rate(keys[0], 100.5, 1 / 60, 5) == 60  # reloaded to 1r/m: refused
    assert tables.rate(keys[WAYS], 102.0, 1 / 60, 5) is None  # a ninth: one must go
    assert tables.rate(keys[0], 102.0, 1 / 60, 5) == 59  # not the refused client


def test_a_seat_given_later_counts_from_then_on(tables: SharedLimits) -> None:
    late = SharedLimits(tables.fd)
    assert late.seat is None
    late.take_seat(5)
    assert late.enter(9, 1) == ENTERED
    tables.clear_seat(5)
    assert tables.in_progress(9) == 0
    late.close()


COUNTER = """
import os, sys
from twistwsgi.shared_limits import ENTERED, SharedLimits
fd, seat, rounds = (int(word) for word in sys.argv[1:])
tables = SharedLimits(fd, seat)
print("ready", flush=True)
sys.stdin.readline()  # all start counting at once
let_through = over = 0
for round in range(rounds):
    let_through += tables.rate(77, 100.0, 1e-9, 40_000) is None
    if tables.enter(88, 2) == ENTERED:
        over += tables.in_progress(88) > 2
        tables.leave(88)
print(let_through, over)
"""


def test_processes_counting_at_once_lose_no_count(tables: SharedLimits) -> None:
    """Four processes hammer one bucket and one count at once: exactly the burst
    and one more are let through in all, never more than the limit is in progress,
    and every place given back is gone.
    """
    os.set_inheritable(tables.fd, True)
    counters = [
        subprocess.Popen(
            [sys.executable, "-c", COUNTER, str(tables.fd), str(number), "20000"],
            pass_fds=[tables.fd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for number in range(4)
    ]
    for counter in counters:
        assert counter.stdout is not None and counter.stdout.readline() == "ready\n"
    for counter in counters:
        assert counter.stdin is not None
        counter.stdin.write("go\n")
        counter.stdin.flush()
    outputs = [counter.communicate()[0] for counter in counters]
    assert [counter.returncode for counter in counters] == [0] * 4
    counted = [[int(word) for word in output.split()] for output in outputs]
    assert sum(let_through for let_through, _ in counted) == 40_001
    assert [over for _, over in counted] == [0] * 4
    assert tables.in_progress(88) == 0


def test_the_module_keeps_to_its_size() -> None:
    """The tables' pages are allocated as written; their size is still bounded."""
    assert shared_limits._SIZE < 16 * 1024 * 1024
