"""Balancing policies and passive health bookkeeping (pure, time passed in)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi.balancing import Balancer, Peer


def peers(*weights: int) -> list[Peer[str]]:
    return [Peer(f"u{index}", f"u{index}", weight) for index, weight in enumerate(weights)]


def set_states(
    group: list[Peer[str]], states: list[tuple[bool, int, float, bool, int]]
) -> list[Peer[str]]:
    """Give each peer its (healthy, fails, down until, excluded, active) state; return
    the excluded peers.
    """
    exclude = []
    for peer, (healthy, fails, down_until, excluded, active) in zip(group, states, strict=True):
        peer.healthy = healthy
        peer.fails = fails
        peer._down_until = down_until
        peer.active = active
        if excluded:
            exclude.append(peer)
    return exclude


def test_round_robin_is_smooth() -> None:
    """Weights 5, 1, 1 give nginx's smooth sequence, never five in a row."""
    group = peers(5, 1, 1)
    balancer = Balancer(group)
    picks = [balancer.pick(0.0) for _ in range(7)]
    assert [p.name for p in picks if p is not None] == ["u0", "u0", "u1", "u0", "u2", "u0", "u0"]


@given(st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5))
def test_round_robin_honours_weights(weights: list[int]) -> None:
    """Over one cycle of sum(weights) picks, each peer is picked exactly its weight."""
    group = peers(*weights)
    balancer = Balancer(group)
    counts = Counter(balancer.pick(0.0) for _ in range(sum(weights)))
    assert [counts[peer] for peer in group] == weights


def test_least_conn_prefers_fewer_active_per_weight() -> None:
    """least_conn picks the smallest active/weight; ties go round-robin."""
    a, b, c = group = peers(1, 2, 1)
    balancer = Balancer(group, policy="least_conn")
    a.active, b.active, c.active = 1, 1, 2
    assert balancer.pick(0.0) is b  # 1/2 beats 1/1 and 2/1
    a.active = b.active = c.active = 0
    assert {balancer.pick(0.0) for _ in range(4)} == {a, b, c}


def test_least_conn_tracks_acquire_and_release() -> None:
    """Requests in progress steer new ones to the idle peer."""
    group = peers(1, 1)
    balancer = Balancer(group, policy="least_conn")
    first = balancer.pick(0.0)
    assert first is not None
    balancer.acquire(first)
    second = balancer.pick(0.0)
    assert second is not first
    balancer.release(first)
    assert first.active == 0


def test_exclude_skips_tried_peers() -> None:
    """Peers already tried for a request are not picked again; none left gives None."""
    a, b = group = peers(1, 1)
    balancer = Balancer(group)
    assert balancer.pick(0.0, [a]) is b
    assert balancer.pick(0.0, [a, b]) is None


def test_max_fails_takes_a_peer_out_for_fail_timeout() -> None:
    """After max_fails failures within fail_timeout, the peer gets no requests for
    fail_timeout; then one probe request goes through.
    """
    a, b = group = peers(1, 1)
    balancer = Balancer(group, max_fails=2, fail_timeout=10.0)
    assert not balancer.failed(a, 100.0)
    assert balancer.failed(a, 101.0)
    assert not balancer.usable(a, 105.0)
    assert {balancer.pick(105.0) for _ in range(4)} == {b}
    assert balancer.usable(a, 111.5)
    # The probe: once picked, the others wait for its outcome.
    picks = [balancer.pick(111.5) for _ in range(3)]
    assert picks.count(a) == 1
    balancer.succeeded(a)
    assert a.fails == 0
    assert balancer.usable(a, 111.6)


def test_a_failed_probe_keeps_the_peer_out() -> None:
    """A probe that fails takes the peer out for another fail_timeout."""
    a, _b = group = peers(1, 1)
    balancer = Balancer(group, max_fails=1, fail_timeout=10.0)
    assert balancer.failed(a, 0.0)
    assert balancer.usable(a, 10.0)
    assert balancer.failed(a, 10.0)
    assert not balancer.usable(a, 15.0)


def test_old_failures_are_forgotten() -> None:
    """Failures further apart than fail_timeout do not add up."""
    a, _b = group = peers(1, 1)
    balancer = Balancer(group, max_fails=2, fail_timeout=10.0)
    balancer.failed(a, 0.0)
    assert not balancer.failed(a, 20.0)
    assert balancer.usable(a, 20.0)


def test_max_fails_zero_never_takes_out() -> None:
    """Passive health is off with max_fails = 0."""
    a, _b = group = peers(1, 1)
    balancer = Balancer(group, max_fails=0)
    for when in range(10):
        balancer.failed(a, float(when))
    assert balancer.usable(a, 10.0)


def test_a_single_upstream_is_never_taken_out_passively() -> None:
    """With one upstream there is nowhere else to go: failures do not remove it."""
    (a,) = group = peers(1)
    balancer = Balancer(group, max_fails=1, fail_timeout=10.0)
    balancer.failed(a, 0.0)
    assert balancer.pick(1.0) is a


def test_unhealthy_peers_are_not_picked() -> None:
    """The active health verdict removes a peer, even a single one."""
    a, b = group = peers(1, 1)
    balancer = Balancer(group)
    a.healthy = False
    assert {balancer.pick(0.0) for _ in range(3)} == {b}
    (only,) = single = peers(1)
    only.healthy = False
    assert Balancer(single).pick(0.0) is None


def test_all_peers_failed_falls_back_to_the_one_back_soonest() -> None:
    """When every peer is left out after failures, pick still answers (as nginx tries
    its peers then): the one whose time out ends first, not one already tried.
    """
    a, b, c = group = peers(1, 1, 1)
    balancer = Balancer(group, max_fails=1, fail_timeout=10.0)
    balancer.failed(b, 0.0)
    balancer.failed(a, 1.0)
    balancer.failed(c, 2.0)
    assert balancer.pick(3.0) is b
    assert balancer.pick(3.0, [b]) is a
    assert balancer.pick(3.0, [a, b]) is c
    assert balancer.pick(3.0, [a, b, c]) is None


def test_next_recovery_is_the_first_cool_down_to_end() -> None:
    """The time the first peer out after failures may be tried again; actively
    unhealthy peers and cool-downs already over do not count.
    """
    a, b, _ = group = peers(1, 1, 1)
    balancer = Balancer(group, max_fails=1, fail_timeout=10.0)
    assert balancer.next_recovery(0.0) is None
    balancer.failed(a, 0.0)
    balancer.failed(b, 4.0)
    assert balancer.next_recovery(5.0) == 10.0
    a.healthy = False
    assert balancer.next_recovery(5.0) == 14.0
    assert balancer.next_recovery(14.0) is None
    assert Balancer(group, max_fails=0).next_recovery(5.0) is None


def test_actively_unhealthy_peers_are_never_the_fallback() -> None:
    """The fallback is among peers out after failures only; an unhealthy one stays out."""
    a, b = group = peers(1, 1)
    balancer = Balancer(group, max_fails=1, fail_timeout=10.0)
    balancer.failed(a, 0.0)
    balancer.failed(b, 1.0)
    a.healthy = False
    assert balancer.pick(2.0) is b
    b.healthy = False
    assert balancer.pick(2.0) is None


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 3), st.floats(0.0, 30.0), st.booleans()),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 3),
    st.floats(0.0, 30.0),
    st.sampled_from(["round_robin", "least_conn"]),
)
def test_pick_never_excluded_or_unhealthy_and_only_none_when_nothing_is_left(
    states: list[tuple[bool, int, float, bool]], max_fails: int, now: float, policy: str
) -> None:
    """Never an excluded or actively unhealthy peer; some peer whenever a healthy one
    not excluded exists; a peer still out after failures only when no other is usable,
    and then the one back soonest.
    """
    group = peers(*[1] * len(states))
    balancer = Balancer(group, policy=policy, max_fails=max_fails, fail_timeout=10.0)
    exclude = set_states(group, [(*state, 0) for state in states])
    allowed = [peer for peer in group if peer.healthy and peer not in exclude]
    usable = [peer for peer in allowed if balancer.usable(peer, now)]
    chosen = balancer.pick(now, exclude)
    if not allowed:
        assert chosen is None
        return
    assert chosen in allowed
    if usable:
        assert chosen in usable
    else:
        assert chosen._down_until == min(peer._down_until for peer in allowed)


def test_bad_arguments() -> None:
    """No peers, an unknown policy, a zero weight or a negative max_conns are refused."""
    with pytest.raises(ValueError):
        Balancer([])
    with pytest.raises(ValueError):
        Balancer(peers(1), policy="random")
    with pytest.raises(ValueError):
        Peer("x", "x", 0)
    with pytest.raises(ValueError):
        Balancer(peers(1), max_conns=-1)


# -- max_conns ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["round_robin", "least_conn"])
def test_a_full_peer_is_skipped(policy: str) -> None:
    """A peer with max_conns requests in progress is not picked, whatever the policy
    and weight; once one of its requests ends it is picked again.
    """
    a, b = group = peers(5, 1)
    balancer = Balancer(group, policy=policy, max_conns=2)
    a.active = 2
    assert {balancer.pick(0.0) for _ in range(6)} == {b}
    assert not balancer.busy(0.0)
    b.active = 2
    assert balancer.pick(0.0) is None
    balancer.release(a)
    assert {balancer.pick(0.0) for _ in range(6)} == {a}


def test_all_full_is_busy_not_none_usable() -> None:
    """Every peer full: pick gives None and busy says waiting helps. Every peer
    unhealthy or tried: pick gives None too, but busy says nothing is left.
    """
    a, b = group = peers(1, 1)
    balancer = Balancer(group, max_conns=1)
    a.active = b.active = 1
    assert balancer.pick(0.0) is None
    assert balancer.busy(0.0)
    assert balancer.busy(0.0, [a])  # a retry: the untried peer is full
    assert balancer.pick(0.0, [a, b]) is None
    assert not balancer.busy(0.0, [a, b])  # each tried: waiting would not help
    a.active = b.active = 0
    a.healthy = b.healthy = False
    assert balancer.pick(0.0) is None
    assert not balancer.busy(0.0)


def test_a_single_full_upstream_is_busy() -> None:
    """The one-upstream shortcut honours max_conns too."""
    (a,) = group = peers(1)
    balancer = Balancer(group, max_conns=1)
    balancer.acquire(a)
    assert balancer.pick(0.0) is None
    assert balancer.busy(0.0)
    balancer.release(a)
    assert balancer.pick(0.0) is a
    assert not balancer.busy(0.0)


def test_full_is_not_failed() -> None:
    """Being full has no passive-health effect, and a busy peer is waited for rather
    than replaced by one left out after failures.
    """
    a, b = group = peers(1, 1)
    balancer = Balancer(group, max_conns=1, max_fails=1, fail_timeout=10.0)
    a.active = 1
    balancer.failed(b, 0.0)
    assert balancer.pick(1.0) is None
    assert balancer.busy(1.0)
    assert a.fails == 0 and balancer.usable(a, 1.0)


def test_the_fallback_after_failures_skips_full_peers() -> None:
    """When every peer is out after failures, the fallback is the one back soonest
    among those with room; all of them full is busy.
    """
    a, b = group = peers(1, 1)
    balancer = Balancer(group, max_conns=1, max_fails=1, fail_timeout=10.0)
    balancer.failed(a, 0.0)
    balancer.failed(b, 1.0)
    a.active = 1
    assert balancer.pick(2.0) is b
    b.active = 1
    assert balancer.pick(2.0) is None
    assert balancer.busy(2.0)


def test_no_limit_is_never_busy() -> None:
    """Without max_conns nothing is full, however many requests are in progress."""
    a, b = group = peers(1, 1)
    balancer = Balancer(group)
    a.active = b.active = 10_000
    assert balancer.pick(0.0) is not None
    assert not balancer.busy(0.0)


@given(
    st.lists(
        st.tuples(
            st.booleans(), st.integers(0, 3), st.floats(0.0, 30.0), st.booleans(), st.integers(0, 3)
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 3),
    st.integers(0, 3),
    st.floats(0.0, 30.0),
    st.sampled_from(["round_robin", "least_conn"]),
)
def test_pick_respects_max_conns_and_busy_explains_none(
    states: list[tuple[bool, int, float, bool, int]],
    max_fails: int,
    max_conns: int,
    now: float,
    policy: str,
) -> None:
    """A picked peer is never full; pick gives None exactly when nothing is left for
    the request or busy says every peer it could use is full; busy is never true
    while pick has a peer to give, nor without max_conns.
    """
    group = peers(*[1] * len(states))
    balancer = Balancer(
        group, policy=policy, max_fails=max_fails, fail_timeout=10.0, max_conns=max_conns
    )
    exclude = set_states(group, states)
    allowed = [peer for peer in group if peer.healthy and peer not in exclude]
    busy = balancer.busy(now, exclude)
    chosen = balancer.pick(now, exclude)
    if chosen is not None:
        assert chosen in allowed
        assert not max_conns or chosen.active < max_conns
        assert not busy
    else:
        assert busy or not allowed
    if busy:
        assert max_conns and allowed
