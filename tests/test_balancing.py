"""Balancing policies and passive health bookkeeping (pure, time passed in)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi.balancing import POLICIES, Balancer, Peer, _hash, client_network, parse_balance


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


#: Each policy, with a key for those that hash one (and one request without a key).
POLICIES_AND_KEYS = [
    ("round_robin", None),
    ("least_conn", None),
    ("hash", b"/some/uri"),
    ("consistent_hash", b"session-7"),
    ("ip_hash", b"192.0.2"),
    ("consistent_hash", b""),
]


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
    st.sampled_from(POLICIES_AND_KEYS),
)
def test_pick_never_excluded_or_unhealthy_and_only_none_when_nothing_is_left(
    states: list[tuple[bool, int, float, bool]],
    max_fails: int,
    now: float,
    policy_and_key: tuple[str, bytes | None],
) -> None:
    """Never an excluded or actively unhealthy peer; some peer whenever a healthy one
    not excluded exists; a peer still out after failures only when no other is usable,
    and then the one back soonest.
    """
    policy, key = policy_and_key
    group = peers(*[1] * len(states))
    balancer = Balancer(group, policy=policy, max_fails=max_fails, fail_timeout=10.0)
    exclude = set_states(group, [(*state, 0) for state in states])
    allowed = [peer for peer in group if peer.healthy and peer not in exclude]
    usable = [peer for peer in allowed if balancer.usable(peer, now)]
    chosen = balancer.pick(now, exclude, key)
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
        Balancer(peers(1), policy="fair")
    with pytest.raises(ValueError):
        Peer("x", "x", 0)
    with pytest.raises(ValueError):
        Balancer(peers(1), max_conns=-1)


# -- max_conns ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["round_robin", "least_conn", "hash", "consistent_hash"])
def test_a_full_peer_is_skipped(policy: str) -> None:
    """A peer with max_conns requests in progress is not picked, whatever the policy
    and weight; once one of its requests ends it is picked again.
    """
    a, b = group = peers(5, 1)
    balancer = Balancer(group, policy=policy, max_conns=2)
    keys = [b"k%d" % n for n in range(12)]  # ignored by the policies without a key
    a.active = 2
    assert {balancer.pick(0.0, key=key) for key in keys} == {b}
    assert not balancer.busy(0.0)
    b.active = 2
    assert balancer.pick(0.0, key=keys[0]) is None
    balancer.release(a)
    assert {balancer.pick(0.0, key=key) for key in keys} == {a}


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
    st.sampled_from(POLICIES_AND_KEYS),
)
def test_pick_respects_max_conns_and_busy_explains_none(
    states: list[tuple[bool, int, float, bool, int]],
    max_fails: int,
    max_conns: int,
    now: float,
    policy_and_key: tuple[str, bytes | None],
) -> None:
    """A picked peer is never full; pick gives None exactly when nothing is left for
    the request or busy says every peer it could use is full; busy is never true
    while pick has a peer to give, nor without max_conns.
    """
    policy, key = policy_and_key
    group = peers(*[1] * len(states))
    balancer = Balancer(
        group, policy=policy, max_fails=max_fails, fail_timeout=10.0, max_conns=max_conns
    )
    exclude = set_states(group, states)
    allowed = [peer for peer in group if peer.healthy and peer not in exclude]
    busy = balancer.busy(now, exclude)
    chosen = balancer.pick(now, exclude, key)
    if chosen is not None:
        assert chosen in allowed
        assert not max_conns or chosen.active < max_conns
        assert not busy
    else:
        assert busy or not allowed
    if busy:
        assert max_conns and allowed


# -- the hash policies ----------------------------------------------------------------------


def keys(count: int) -> list[bytes]:
    return [b"/item/%d" % n for n in range(count)]


@pytest.mark.parametrize("policy", ["hash", "consistent_hash", "ip_hash"])
def test_a_key_keeps_its_upstream(policy: str) -> None:
    """Each key goes to one upstream every time, and the keys are spread over all."""
    group = peers(1, 1, 1)
    balancer = Balancer(group, policy=policy)
    first = {key: balancer.pick(0.0, key=key) for key in keys(300)}
    for _ in range(3):
        assert {key: balancer.pick(0.0, key=key) for key in keys(300)} == first
    assert set(first.values()) == set(group)


@pytest.mark.parametrize("policy", ["hash", "consistent_hash"])
def test_keys_are_shared_by_weight(policy: str) -> None:
    """Weights 3:1 give the first upstream about three keys in four (the hash spreads
    keys, it does not count them: within a few per cent over 4,000 keys).
    """
    a, b = group = peers(3, 1)
    balancer = Balancer(group, policy=policy)
    counts = Counter(balancer.pick(0.0, key=key) for key in keys(4000))
    assert 0.70 < counts[a] / 4000 < 0.80
    assert counts[a] + counts[b] == 4000


def test_a_new_process_maps_keys_the_same() -> None:
    """The hash is not Python's (random in each process): another interpreter, with
    another PYTHONHASHSEED, sends each key to the same upstream, as each worker must.
    """
    script = (
        "from twistwsgi.balancing import Balancer, Peer\n"
        "for policy in ('hash', 'consistent_hash'):\n"
        "    group = [Peer(n, n) for n in ('http://a:1', 'http://b:2', 'http://c:3')]\n"
        "    balancer = Balancer(group, policy=policy)\n"
        "    print(' '.join(balancer.pick(0.0, key=b'/item/%d' % n).name for n in range(40)))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        ran = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=environment,
        )
        outputs.append(ran.stdout)
    assert outputs[0] == outputs[1]
    here = []
    for policy in ("hash", "consistent_hash"):
        group = [Peer(n, n) for n in ("http://a:1", "http://b:2", "http://c:3")]
        balancer = Balancer(group, policy=policy)
        picked = [balancer.pick(0.0, key=b"/item/%d" % n) for n in range(40)]
        here.append(" ".join(peer.name for peer in picked if peer is not None))
    assert outputs[0].splitlines() == here


def test_consistent_hash_moves_only_the_keys_of_a_changed_upstream() -> None:
    """Removing an upstream moves only the keys it had; adding one takes keys only
    from the others to it (nginx's consistent, ketama): caches and sessions keyed
    so stay where they are.
    """
    names = [f"http://10.0.0.{n}:80" for n in range(1, 5)]
    four = Balancer([Peer(n, n) for n in names], policy="consistent_hash")
    three = Balancer([Peer(n, n) for n in names[:3]], policy="consistent_hash")
    before = {key: four.pick(0.0, key=key) for key in keys(2000)}
    after = {key: three.pick(0.0, key=key) for key in keys(2000)}
    moved = 0
    for key, peer in before.items():
        assert peer is not None and after[key] is not None
        if peer.name == names[3]:
            moved += 1
        else:
            assert after[key].name == peer.name  # type: ignore[union-attr]
    assert 300 < moved < 700  # about a quarter of the keys were on the one removed


@pytest.mark.parametrize(
    ("before", "after", "share"),
    [
        ((2, 2), (2, 2, 1), 0.2),  # one added, with a smaller weight
        ((1, 2, 2), (2, 2), 0.2),  # the first removed
        ((2, 2, 1), (2, 2, 2), 1 / 7),  # a weight raised
    ],
)
def test_a_change_to_one_upstream_moves_only_its_share(
    before: tuple[int, ...], after: tuple[int, ...], share: float
) -> None:
    """Each upstream's points are its own, whatever the others' weights (no common
    divisor taken out), so about the share that changed hands moves, not twice it.
    """
    names = ["http://a:1", "http://b:1", "http://c:1"]
    if len(before) > len(after):
        names_before, names_after = names, names[1:]
    else:
        names_before, names_after = names[: len(before)], names[: len(after)]
    old = Balancer(
        [Peer(n, n, w) for n, w in zip(names_before, before, strict=True)],
        policy="consistent_hash",
    )
    new = Balancer(
        [Peer(n, n, w) for n, w in zip(names_after, after, strict=True)],
        policy="consistent_hash",
    )
    moved = sum(
        old.pick(0.0, key=key).name != new.pick(0.0, key=key).name  # type: ignore[union-attr]
        for key in keys(5000)
    )
    assert moved / 5000 < share * 1.3


def test_a_key_skips_many_points_of_upstreams_out_at_once() -> None:
    """The heavy upstream out, a key goes to the nearest point of the others, as a
    walk round the ring would find it.
    """
    heavy, *light = group = peers(1000, 1, 1)
    balancer = Balancer(group, policy="consistent_hash")
    heavy.healthy = False
    top = [max(balancer._ring[id(peer)]) for peer in light]
    # Keys past a light upstream's last point too: its next is its first, round the ring.
    past = [key for key in keys(20_000) if _hash(key) > min(top)][:50]
    assert past
    for key in [*keys(300), *past]:
        hashed = _hash(key)
        nearest = min(
            light,
            key=lambda peer: min(
                (point - hashed) % (1 << 64) for point in balancer._ring[id(peer)]
            ),
        )
        assert balancer.pick(0.0, key=key) is nearest


def test_plain_hash_remaps_when_upstreams_change() -> None:
    """``hash`` without consistent is nginx's: the key modulo the weights, so a
    changed list moves most keys (what consistent is for).
    """
    names = [f"http://10.0.0.{n}:80" for n in range(1, 5)]
    four = Balancer([Peer(n, n) for n in names], policy="hash")
    three = Balancer([Peer(n, n) for n in names[:3]], policy="hash")
    kept = sum(
        four.pick(0.0, key=key).name == three.pick(0.0, key=key).name  # type: ignore[union-attr]
        for key in keys(2000)
    )
    assert kept < 1200


@pytest.mark.parametrize("policy", ["hash", "consistent_hash"])
def test_a_key_whose_upstream_is_out_goes_elsewhere_and_comes_back(policy: str) -> None:
    """Out after failures, failing its health check, or tried already: the key goes
    to another upstream, the same one each time; it comes back once its own is back.
    """
    group = peers(1, 1, 1)
    balancer = Balancer(group, policy=policy, max_fails=1, fail_timeout=10.0)
    key = b"/sticky"
    home = balancer.pick(0.0, key=key)
    assert home is not None
    balancer.failed(home, 0.0)
    elsewhere = balancer.pick(1.0, key=key)
    assert elsewhere is not None and elsewhere is not home
    assert balancer.pick(2.0, key=key) is elsewhere
    # Back from its time out: the key's next request is the probe.
    assert balancer.pick(11.0, key=key) is home
    assert balancer.pick(11.5, key=key) is elsewhere  # while the probe is out
    balancer.succeeded(home)
    assert balancer.pick(12.0, key=key) is home
    home.healthy = False
    assert balancer.pick(13.0, key=key) is elsewhere
    home.healthy = True
    retry = balancer.pick(14.0, [home], key=key)
    assert retry is elsewhere  # a retry after a failed attempt on home
    assert balancer.pick(14.0, [home, elsewhere], key=key) not in (home, elsewhere, None)


def test_hash_goes_round_robin_after_twenty_misses() -> None:
    """A key whose 20 hashes all land on upstreams that cannot take it goes by
    weighted round-robin over those that can (nginx's hash, after its 20 tries).
    """
    group = peers(*[1] * 40)
    balancer = Balancer(group, policy="hash")
    for peer in group[2:]:
        peer.healthy = False
    usable = set(group[:2])

    def missed(key: bytes) -> bool:
        hashed = _hash(key)
        for attempt in range(20):
            if attempt:
                hashed = _hash(b"%d:%s" % (attempt, key))
            if group[hashed % 40] in usable:
                return False
        return True

    key = next(key for key in keys(1000) if missed(key))
    picked = [balancer.pick(0.0, key=key) for _ in range(4)]
    assert picked[0] is not picked[1] and picked[:2] == picked[2:]
    assert set(picked) == usable
    hit = next(key for key in keys(1000) if not missed(key))
    assert len({balancer.pick(0.0, key=hit) for _ in range(4)}) == 1


@pytest.mark.parametrize("policy", ["hash", "consistent_hash", "ip_hash"])
def test_no_key_goes_round_robin(policy: str) -> None:
    """A request without a key (an empty one: the cookie not set yet) goes by
    weighted round-robin rather than all to one upstream, as nginx sends them.
    """
    group = peers(2, 1)
    balancer = Balancer(group, policy=policy)
    picked = [balancer.pick(0.0, key=b"") for _ in range(6)] + [
        balancer.pick(0.0) for _ in range(3)
    ]
    assert Counter(picked) == {group[0]: 6, group[1]: 3}


def test_the_ring_of_large_weights_is_bounded_and_keeps_their_shares() -> None:
    """Weights of 10,000 and 30,000 place a bounded number of points (not 6.4
    million), still about one key in four and three in four.
    """
    _, b = group = peers(10_000, 30_000)
    balancer = Balancer(group, policy="consistent_hash")
    assert [len(points) for points in balancer._ring.values()] == [16_384, 49_152]
    counts = Counter(balancer.pick(0.0, key=key) for key in keys(4000))
    assert 0.68 < counts[b] / 4000 < 0.82
    huge = Balancer(peers(*range(1000, 1100)), policy="consistent_hash")
    assert sum(len(points) for points in huge._ring.values()) <= 1 << 16


def test_the_same_url_twice_has_points_of_its_own() -> None:
    """An upstream listed twice (to double its share, nginx-style) gets both shares."""
    group = [Peer("one", "http://a:1"), Peer("two", "http://a:1"), Peer("three", "http://b:1")]
    balancer = Balancer(group, policy="consistent_hash")
    counts = Counter(balancer.pick(0.0, key=key) for key in keys(3000))
    assert all(counts[peer] > 700 for peer in group)


@pytest.mark.parametrize(
    ("client", "network"),
    [
        ("192.0.2.7", b"192.0.2"),
        ("::ffff:192.0.2.9", b"192.0.2"),  # an IPv4 client of a dual-stack listener
        ("2001:DB8:0::7", b"2001:db8::7"),
        ("192.0.2.200", b"192.0.2"),
        ("2001:db8::7", b"2001:db8::7"),
        (None, None),
        ("unknown", None),
        ("", None),
    ],
)
def test_client_network(client: str | None, network: bytes | None) -> None:
    """ip_hash's key: an IPv4 client's /24 (nginx's first three octets), an IPv6 one
    whole; a client with no address (a UNIX socket, unknown) has none.
    """
    assert client_network(client) == network


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("round_robin", ("round_robin", None)),
        ("least-conn", ("least_conn", None)),
        ("IP_HASH", ("ip_hash", None)),
        ("hash $request_uri", ("hash", "$request_uri")),
        ("hash $cookie_sid consistent", ("consistent_hash", "$cookie_sid")),
        ("hash\t$host$uri  CONSISTENT", ("consistent_hash", "$host$uri")),
        ("hash $arg_consistent", ("hash", "$arg_consistent")),
        ("hash consistent", ("hash", "consistent")),  # a key (config refuses it: no $)
        ("random", ("random", None)),
        ("random two", ("random_two", None)),
        ("Random  Two least-conn", ("random_two", None)),
        ("random_two", ("random_two", None)),  # (the policy's own name)
    ],
)
def test_parse_balance(text: str, parsed: tuple[str, str | None]) -> None:
    assert parse_balance(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected round_robin"),
        ("fair", "expected round_robin"),
        ("random three", "expected random, random two or random two least_conn"),
        ("random two least_time", "expected random, random two or random two least_conn"),
        ("random least_conn", "expected random, random two or random two least_conn"),
        ("random_two least_conn", "expected round_robin"),
        ("ip_hash $remote_addr", "takes nothing after it"),
        ("hash", "needs a key"),
        ("hash $request_uri consitent", "expected hash KEY or hash KEY consistent"),
        ("hash $request_uri consistent consistent", "expected hash KEY or hash KEY consistent"),
        ("hash $host $uri", "the key one word"),
    ],
)
def test_parse_balance_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_balance(text)


# -- backup peers ---------------------------------------------------------------------------


def with_backups(
    *backup: bool, policy: str = "round_robin", max_fails: int = 1, max_conns: int = 0
) -> Balancer[str]:
    group = [Peer(f"u{index}", f"u{index}", backup=flag) for index, flag in enumerate(backup)]
    return Balancer(
        group, policy=policy, fail_timeout=10.0, max_fails=max_fails, max_conns=max_conns
    )


@pytest.mark.parametrize("policy", ["round_robin", "least_conn"])
def test_backups_get_nothing_while_another_can_take_it(policy: str) -> None:
    balancer = with_backups(False, True, False, policy=policy)
    picks = Counter(getattr(balancer.pick(0.0), "name", None) for _ in range(20))
    assert picks == {"u0": 10, "u2": 10}


def test_a_backup_serves_while_the_others_are_out_then_hands_back() -> None:
    balancer = with_backups(False, False, True)
    first, second, backup = balancer.peers
    balancer.failed(first, 0.0)
    assert balancer.pick(1.0) is second
    balancer.failed(second, 1.0)
    assert [balancer.pick(2.0) for _ in range(3)] == [backup] * 3
    assert balancer.pick(12.0) in (first, second)  # back after fail_timeout


def test_a_backup_takes_a_request_that_tried_the_others() -> None:
    balancer = with_backups(False, True, True)
    first, spare, other = balancer.peers
    assert balancer.pick(0.0, [first]) is spare
    assert balancer.pick(0.0, [first, spare]) is other
    assert balancer.pick(0.0, [first, spare, other]) is None


def test_backups_take_the_overflow_of_full_peers_then_all_wait() -> None:
    """As nginx: a peer at max_conns cannot take the request, so a backup does."""
    balancer = with_backups(False, True, max_conns=1)
    first, backup = balancer.peers
    balancer.acquire(first)
    assert not balancer.busy(0.0)
    assert balancer.pick(0.0) is backup
    balancer.acquire(backup)
    assert balancer.pick(0.0) is None
    assert balancer.busy(0.0)


def test_the_others_full_and_the_backup_out_is_busy() -> None:
    """The backup left out is no reason to fall back while the others only wait."""
    balancer = with_backups(False, False, True, max_conns=1)
    first, second, backup = balancer.peers
    balancer.acquire(first)
    balancer.acquire(second)
    balancer.failed(backup, 0.0)
    assert balancer.pick(1.0) is None
    assert balancer.busy(1.0)


def test_every_peer_out_falls_back_on_the_one_back_soonest_backup_or_not() -> None:
    balancer = with_backups(False, True)
    first, backup = balancer.peers
    balancer.failed(first, 1.0)
    balancer.failed(backup, 0.0)
    assert balancer.pick(2.0) is backup


def test_backups_need_another_peer_and_no_hash() -> None:
    with pytest.raises(ValueError, match="every peer is a backup"):
        with_backups(True, True)
    for policy in ("hash", "consistent_hash", "ip_hash"):
        with pytest.raises(ValueError, match="takes no backup peers"):
            with_backups(False, True, policy=policy)


@given(
    st.lists(
        st.tuples(
            st.booleans(), st.integers(0, 3), st.floats(0.0, 30.0), st.booleans(), st.integers(0, 3)
        ),
        min_size=2,
        max_size=5,
    ),
    st.lists(st.booleans(), min_size=5, max_size=5),
    st.integers(0, 3),
    st.integers(0, 3),
    st.floats(0.0, 30.0),
    st.sampled_from(["round_robin", "least_conn"]),
)
def test_a_backup_is_picked_only_when_no_other_can_take_the_request(  # noqa: PLR0917
    states: list[tuple[bool, int, float, bool, int]],
    backup: list[bool],
    max_fails: int,
    max_conns: int,
    now: float,
    policy: str,
) -> None:
    """Whatever the states: a backup only when no other peer is usable, free and not
    tried; a peer out after failures only when none at all is usable (and then the
    one back soonest); None exactly when busy or nothing is left, as without backups.
    """
    flags = backup[: len(states)]
    if all(flags):
        flags[0] = False
    group = [Peer(f"u{index}", f"u{index}", backup=flag) for index, flag in enumerate(flags)]
    balancer = Balancer(
        group, policy=policy, max_fails=max_fails, fail_timeout=10.0, max_conns=max_conns
    )
    exclude = set_states(group, states)
    allowed = [peer for peer in group if peer.healthy and peer not in exclude]

    def can_take(peer: Peer[str]) -> bool:
        return (
            peer in allowed
            and balancer.usable(peer, now)
            and not (max_conns and peer.active >= max_conns)
        )

    # (Before pick, which makes a peer back from its time out the probe.)
    takers = [peer for peer in group if can_take(peer)]
    any_usable = any(balancer.usable(peer, now) for peer in allowed)
    busy = balancer.busy(now, exclude)
    chosen = balancer.pick(now, exclude, None)
    if chosen is None:
        assert busy or not allowed
        assert not takers
        return
    assert not busy
    assert chosen in allowed and not (max_conns and chosen.active >= max_conns)
    if takers:
        assert chosen in takers
        if chosen.backup:
            assert all(peer.backup for peer in takers)
    else:
        assert not any_usable
        free = [peer for peer in allowed if not (max_conns and peer.active >= max_conns)]
        assert chosen._down_until == min(peer._down_until for peer in free)


# -- peers marked down ------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_a_peer_marked_down_gets_nothing_even_when_the_others_are_out(policy: str) -> None:
    """Never picked, not as the back-soonest fallback either: nothing is sent to it."""
    group = [Peer("a", "a"), Peer("b", "b", down=True), Peer("c", "c")]
    balancer = Balancer(group, policy=policy, fail_timeout=10.0)
    first, _marked, third = group
    picks = {balancer.pick(0.0, key=b"k%d" % n) for n in range(50)}
    assert picks == {first, third}
    balancer.failed(first, 0.0)
    balancer.failed(third, 1.0)
    assert balancer.pick(2.0, key=b"k") is first  # (back soonest; not the one marked)
    assert balancer.pick(2.0, [first, third], key=b"k") is None
    assert not balancer.busy(2.0, [first, third])
    assert balancer.next_recovery(2.0) == 10.0


def test_every_peer_marked_down_gives_none() -> None:
    balancer = Balancer([Peer("a", "a", down=True)], max_conns=1)
    assert balancer.pick(0.0) is None
    assert not balancer.busy(0.0)


def test_a_backup_serves_while_the_others_are_marked_down() -> None:
    group = [Peer("a", "a", down=True), Peer("spare", "spare", backup=True)]
    assert Balancer(group).pick(0.0) is group[1]


@pytest.mark.parametrize("policy", ["hash", "consistent_hash", "ip_hash"])
def test_a_peer_marked_down_keeps_the_other_keys_where_they_were(policy: str) -> None:
    """As nginx advises for ip_hash: mark a server down rather than remove it, so the
    keys of the others stay; only its own keys move, and come back with it.
    """
    names = [f"http://10.0.0.{n}:80" for n in range(1, 5)]
    every = Balancer([Peer(n, n) for n in names], policy=policy)
    one_down = Balancer([Peer(n, n, down=n == names[3]) for n in names], policy=policy)
    moved = 0
    for key in keys(2000):
        before, after = every.pick(0.0, key=key), one_down.pick(0.0, key=key)
        assert before is not None and after is not None and after.name != names[3]
        if before.name == names[3]:
            moved += 1
        else:
            assert after.name == before.name
    assert 300 < moved < 700


# -- random and random two ----------------------------------------------------------------


def randomly(*weights: int, two: bool = False) -> Balancer[str]:
    group = [Peer(f"u{index}", f"u{index}", weight) for index, weight in enumerate(weights)]
    policy = "random_two" if two else "random"
    return Balancer(group, policy=policy, rng=random.Random(7))


@pytest.mark.parametrize("two", [False, True])
def test_random_draws_in_proportion_to_the_weights(two: bool) -> None:
    """With none in progress random two takes the first drawn: by weight too."""
    balancer = randomly(3, 1, 1, two=two)
    picks = Counter(getattr(balancer.pick(0.0), "name", None) for _ in range(5000))
    assert 0.55 < picks["u0"] / 5000 < 0.65  # 3 of 5
    assert 0.15 < picks["u1"] / 5000 < 0.25


def test_random_two_takes_the_less_busy_for_its_weight() -> None:
    balancer = randomly(2, 1, two=True)
    heavy, light = balancer.peers
    heavy.active, light.active = 3, 1  # 1.5 and 1 per unit of weight
    assert {balancer.pick(0.0) for _ in range(50)} == {light}
    light.active = 2  # 1.5 against 2
    assert {balancer.pick(0.0) for _ in range(50)} == {heavy}


@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(0, 6)), min_size=2, max_size=6),
    st.randoms(use_true_random=False),
)
def test_random_two_never_takes_the_one_busiest_for_its_weight(
    states: list[tuple[int, int]], rng: random.Random
) -> None:
    group = [Peer(f"u{index}", f"u{index}", weight) for index, (weight, _) in enumerate(states)]
    for peer, (_, active) in zip(group, states, strict=True):
        peer.active = active
    balancer = Balancer(group, policy="random_two", rng=rng)
    loads = [peer.active / peer.weight for peer in group]
    busiest = max(loads)
    chosen = balancer.pick(0.0)
    assert chosen is not None
    if loads.count(busiest) == 1:
        assert chosen.active / chosen.weight < busiest


@pytest.mark.parametrize("two", [False, True])
def test_random_leaves_out_what_the_others_leave_out(two: bool) -> None:
    """Tried, full, failing, marked down: only the rest is drawn from."""
    group = [Peer(f"u{n}", f"u{n}") for n in range(4)] + [Peer("u4", "u4", down=True)]
    balancer = Balancer(
        group,
        policy="random_two" if two else "random",
        max_conns=1,
        fail_timeout=10.0,
        rng=random.Random(3),
    )
    tried, full, failed, free, _down = group
    balancer.acquire(full)
    balancer.failed(failed, 0.0)
    assert {balancer.pick(1.0, [tried]) for _ in range(30)} == {free}
    balancer.acquire(free)
    assert balancer.pick(1.0, [tried]) is None
    assert balancer.busy(1.0, [tried])


def test_random_takes_no_backups() -> None:
    for policy in ("random", "random_two"):
        with pytest.raises(ValueError, match="takes no backup peers"):
            with_backups(False, True, policy=policy)


@pytest.mark.parametrize("two", [False, True])
def test_random_lets_one_probe_through_to_a_peer_back_from_its_time_out(two: bool) -> None:
    """As the other policies: the others wait for the probe's outcome."""
    balancer = randomly(1, 1, 1, two=two)
    back = balancer.peers[0]
    balancer.failed(back, 0.0)
    picks = [balancer.pick(11.0) for _ in range(60)]
    assert picks.count(back) == 1


def test_one_upstream_beside_those_marked_down_has_no_passive_health() -> None:
    """As a single upstream: taking it out would leave nowhere to go."""
    group = [Peer("a", "a"), Peer("b", "b", down=True)]
    assert Balancer(group, max_fails=3).max_fails == 0
    group = [Peer("a", "a"), Peer("b", "b", down=True), Peer("c", "c", backup=True)]
    assert Balancer(group, max_fails=3).max_fails == 3
