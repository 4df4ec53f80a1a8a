"""Choosing an upstream for each request: balancing policies and health bookkeeping.

Pure logic (no Twisted, time passed in), used by :mod:`twistwsgi.upstream`.

**Policies.** ``round_robin`` is nginx's smooth weighted round-robin: with weights
5, 1, 1 the picks go a a b a c a a, never five in a row to the heavy one. ``least_conn``
picks the upstream with the fewest requests in progress relative to its weight
(``active / weight``), breaking ties by the same weighted round-robin, so idle
upstreams share the load evenly. ``random`` (nginx's ``random``) picks an upstream
at random, in proportion to the weights; ``random_two`` (nginx's ``random two
least_conn``) draws two different upstreams so and takes the one with fewer requests
in progress relative to its weight (the first drawn on a tie, where nginx keeps the
second: at rest every pair ties, and keeping the second would give a heavy upstream
about half its weighted share): the "power of two choices", which nginx advises
where several balancers send to the same upstreams without seeing each other's
counts, as the worker processes of ``--workers`` do: each one's ``least_conn`` alone
would send every worker's next request to the same idle upstream.

The hash policies keep a request's upstream from one request to the next. ``hash``
(nginx's ``hash KEY``) maps a key made from the request (``$cookie_session``,
``$request_uri``) to an upstream by weight; ``consistent_hash`` (nginx's ``hash KEY
consistent``) places each upstream on a ring of points (160 per unit of weight, as
nginx's ketama, fewer in proportion past 65,536 in all) and takes the first point
after the key's, so adding or removing an upstream moves only the keys of its share
(past the 65,536, a few others too); ``ip_hash`` is ``consistent_hash`` over the
client's network (its caller makes the key: nginx's ``ip_hash`` hashes an IPv4
address's first three octets). The hash of a key is BLAKE2b, the same in every
process and after every restart, so each worker sends a key to the same upstream.
When the key's upstream cannot take the request (out after failures, failing its
health check, full, or tried already for this request), ``hash`` hashes again (up to
20 times, as nginx, then weighted round-robin) and ``consistent_hash`` goes on round
the ring to the next point of one that can; the key comes back to its upstream when
that one is back. A request without a key (an empty one: no such cookie yet) goes by
weighted round-robin rather than all to one upstream (nginx hashes the empty key).

**Passive health** (nginx's ``max_fails``/``fail_timeout``). A failed attempt
(connecting failed or timed out, the connection broke before a response head, the
head was malformed or did not come within ``response_timeout``) counts against its
upstream; failures older than ``fail_timeout`` are forgotten. After ``max_fails``
failures the upstream gets no requests for ``fail_timeout`` seconds. Then a single
request is let through as a probe: if it gets a response head the upstream is back,
if it fails the upstream stays out for another ``fail_timeout``. An HTTP error status
is a response, not a failure, unless the caller says otherwise (the proxy counts a
5xx or 429 it retries elsewhere, nginx's ``proxy_next_upstream http_503``). With only
one upstream (those marked down do not count) there is nowhere else to go, so
passive health is not applied (as nginx, which counts them): taking the only
upstream out would turn a brief error into a ``fail_timeout``-long outage. For the
same reason, when every upstream is left out after failures (all restarting at
once, say), requests are not refused for ``fail_timeout``: each goes to the upstream
whose time out ends first (nginx answers 502 "no live upstreams" until one of its
``fail_timeout`` ends, without trying).

**Connection limit** (nginx's ``max_conns``). With ``max_conns`` set, a peer with that
many requests in progress (:attr:`Peer.active`) is *full*: it is not picked until one
of them ends. Full is not failed: it has no effect on passive health. When the only
peers a request could use are full, :meth:`Balancer.pick` answers ``None`` and
:meth:`Balancer.busy` says so, so the caller can make the request wait for a free
slot rather than refuse it. A full peer is not a reason to fall back on one left out
after failures: the fallback below is for when every peer failed, not for a busy one.

**Backup peers** (nginx's ``server ... backup``) get requests only when no other peer
can take them: every other one is out (failing its health check, left out after
failures), tried already for this request, or full. Whether a peer is full decides
here as for any other: with the others full and the backups full too, the request
waits (for whichever frees first), and with every peer out the fallback below
takes the one back soonest, backup or not. As nginx, the hash policies take no
backups (a key's upstream is meant to be the same one from request to request), nor
do the random ones (a draw from all alike has no order to keep backups behind).

**Down peers** (nginx's ``server ... down``) are marked so in the configuration, to
take an upstream out for maintenance with a reload: such a peer is unhealthy for good
(and never checked), so nothing is sent to it, while it keeps its place among the
others: its weight in ``hash``, its points on the ring, so the keys of the other
peers stay where they were (nginx's advice for ``ip_hash``), and its keys go to the
others until it is back.

**Active health** is decided elsewhere (a path polled by :mod:`twistwsgi.upstream`);
it sets :attr:`Peer.healthy`, and an unhealthy upstream is never picked, not even
when no other is left.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import random
from collections.abc import Collection, Sequence
from typing import Generic, TypeVar

__all__ = [
    "HASH_POLICIES",
    "NO_BACKUP_POLICIES",
    "POLICIES",
    "Balancer",
    "Peer",
    "client_network",
    "parse_balance",
]

T = TypeVar("T")

#: The balancing policies.
POLICIES = (
    "round_robin",
    "least_conn",
    "random",
    "random_two",
    "hash",
    "consistent_hash",
    "ip_hash",
)

#: The policies that pick by a key the caller makes from each request.
HASH_POLICIES = frozenset({"hash", "consistent_hash", "ip_hash"})

#: The policies that take no backup peers (nginx refuses ``backup`` with them).
NO_BACKUP_POLICIES = HASH_POLICIES | {"random", "random_two"}

#: Points on the ring per unit of weight (nginx's ketama places 160).
_RING_POINTS = 160

#: At most this many points in all, whatever the weights (a weight of 10,000 would
#: otherwise make millions): the shares stay as the weights say, give or take.
_RING_LIMIT = 1 << 16

#: The ring's circumference: a point is a 64-bit hash.
_RING_SIZE = 1 << 64

#: How many times ``hash`` hashes again before round-robin (nginx's 20).
_HASH_TRIES = 20


def parse_balance(text: str) -> tuple[str, str | None]:
    """The policy and key template a mount's ``balance`` names, as nginx writes them.

    ``round_robin``, ``least_conn``, ``random``, ``random two`` (or ``random two
    least_conn``, nginx's whole form: ``random_two``), ``ip_hash``, ``hash KEY`` or
    ``hash KEY consistent``; the key is returned as written (its variables are the
    caller's to read, and a key without any the caller's to refuse).

    Raises:
        ValueError: naming what is wrong.
    """
    words = text.split()
    expected = (
        "expected round_robin, least_conn, random, random two, ip_hash or hash KEY [consistent]"
    )
    if not words:
        raise ValueError(expected)
    policy = words[0].lower().replace("-", "_")
    if policy in ("round_robin", "least_conn", "ip_hash"):
        if len(words) > 1:
            raise ValueError(f"{policy} takes nothing after it, got {text!r}")
        return policy, None
    if policy == "random_two" and len(words) == 1:
        return policy, None  # (the policy's own name, as round_robin is written)
    if policy == "random":
        rest = [word.lower().replace("-", "_") for word in words[1:]]
        if not rest:
            return "random", None
        if rest in (["two"], ["two", "least_conn"]):
            return "random_two", None
        # (nginx Plus's least_time needs response times this server does not keep.)
        raise ValueError(f"expected random, random two or random two least_conn, got {text!r}")
    if policy != "hash":
        raise ValueError(f"{expected}, got {text!r}")
    if len(words) == 1:
        raise ValueError(f"hash needs a key such as $request_uri or $cookie_NAME, got {text!r}")
    consistent = len(words) == 3 and words[2].lower() == "consistent"
    if len(words) > 2 and not consistent:
        # nginx's "hash key [consistent]": a misspelt consistent is not a key.
        raise ValueError(
            f"expected hash KEY or hash KEY consistent (the key one word, such as"
            f" $host$request_uri), got {text!r}"
        )
    return ("consistent_hash" if consistent else "hash"), words[1]


def client_network(client: str | None) -> bytes | None:
    """The key ``ip_hash`` hashes for a client address: nginx's network of the client.

    An IPv4 address's first three octets (its /24: clients of one network share an
    upstream, as nginx's ``ip_hash``), an IPv4 client of a dual-stack listener
    (``::ffff:192.0.2.7``) as the IPv4 address it is, an IPv6 address whole; ``None``
    for a client with no IP address (a UNIX socket, an unknown one), which then goes
    by round-robin (nginx hashes one pseudo address for them all, sending each to
    the same upstream).
    """
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return None  # "unknown": a forwarding entry that was no address
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return address.compressed.encode("ascii")
        address = address.ipv4_mapped
    return ".".join(str(address).split(".")[:3]).encode("ascii")


def _hash(data: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process (Python's hash() is not)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Peer(Generic[T]):
    """One upstream as the balancer sees it.

    Attributes:
        target: what the caller attached (the upstream's connection pool).
        name: names the upstream in logs.
        weight: its share of requests relative to the others (at least 1).
        active: requests in progress on it.
        fails: recent failed attempts.
        healthy: the active health check's verdict (``True`` without checks);
            ``False`` for good for a peer marked down.
        backup: picked only when no other peer can take the request.
        down: marked down (nginx's ``server ... down``): never picked, as a peer
            failing its health check, and not checked.
    """

    __slots__ = (
        "_current",
        "_down_until",
        "_window_start",
        "active",
        "backup",
        "down",
        "fails",
        "healthy",
        "name",
        "target",
        "weight",
    )

    def __init__(
        self, target: T, name: str, weight: int = 1, *, backup: bool = False, down: bool = False
    ) -> None:
        if weight < 1:
            raise ValueError("a weight is at least 1")
        self.target = target
        self.name = name
        self.weight = weight
        self.backup = backup
        self.down = down
        self.active = 0
        self.fails = 0
        self.healthy = not down
        self._current = 0
        self._down_until = 0.0
        self._window_start = 0.0

    def __repr__(self) -> str:
        backup = " backup" if self.backup else ""
        down = " down" if self.down else ""
        return f"<Peer {self.name} weight={self.weight}{backup}{down} active={self.active}>"


class Balancer(Generic[T]):
    """Picks peers by policy, counting requests in progress and failures.

    Args:
        peers: the upstreams, in configuration order.
        policy: one of :data:`POLICIES`.
        max_fails: failures within ``fail_timeout`` that take a peer out (0: never).
        fail_timeout: the failure window and the time a peer stays out.
        max_conns: requests in progress that make a peer full (0: no limit).
        rng: the random numbers of the ``random`` policies (a seeded one in tests).
    """

    def __init__(
        self,
        peers: Sequence[Peer[T]],
        *,
        policy: str = "round_robin",
        max_fails: int = 1,
        fail_timeout: float = 10.0,
        max_conns: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        if not peers:
            raise ValueError("a balancer needs at least one peer")
        if policy not in POLICIES:
            raise ValueError(f"unknown balancing policy {policy!r}")
        if max_conns < 0:
            raise ValueError("max_conns is 0 (no limit) or more")
        self.peers = tuple(peers)
        self.policy = policy
        primaries = tuple(peer for peer in self.peers if not peer.backup)
        backups = tuple(peer for peer in self.peers if peer.backup)
        if not primaries:
            raise ValueError("every peer is a backup")
        if backups and policy in NO_BACKUP_POLICIES:
            raise ValueError(f"{policy} takes no backup peers")
        # The peers pick chooses from, in order: the backups only when none of the
        # others can take the request.
        self._primaries = primaries
        self._backups = backups
        # One upstream (not counting those marked down): passive health is not
        # applied (see the module docstring).
        live = sum(1 for peer in self.peers if not peer.down)
        self.max_fails = max(0, max_fails) if live > 1 else 0
        self.fail_timeout = fail_timeout
        self.max_conns = max_conns
        self._single = self.peers[0] if len(self.peers) == 1 else None
        self.hashed = policy in HASH_POLICIES
        self._rng = rng if rng is not None else random.Random()
        # hash: each peer's share of the key space, as running totals of the weights.
        self._weight_ends: list[int] = []
        total = 0
        for peer in self.peers:
            total += peer.weight
            self._weight_ends.append(total)
        # consistent_hash and ip_hash: each peer's points on the ring, sorted.
        self._ring: dict[int, list[int]] = {}
        if policy in ("consistent_hash", "ip_hash"):
            self._build_ring()

    def _build_ring(self) -> None:
        """Place each peer's points, from its name, so the ring is the same everywhere.

        A peer's points depend on its own name and weight only (160 per unit, as
        nginx's), so a change to one upstream moves only the keys it gains or loses.
        Past :data:`_RING_LIMIT` points in all every peer gets fewer in proportion;
        those it keeps are the first of its sequence, so most keys of the others
        stay (those on the points a peer loses move). A peer named twice (the same
        URL listed twice) takes its place in the list as well, so the two get points
        of their own.
        """
        total = sum(peer.weight for peer in self.peers) * _RING_POINTS
        scale = min(1.0, _RING_LIMIT / total)
        seen: dict[str, int] = {}
        for peer in self.peers:
            occurrence = seen.get(peer.name, 0)
            seen[peer.name] = occurrence + 1
            count = max(1, int(peer.weight * _RING_POINTS * scale))
            label = f"{peer.name}#{occurrence}-".encode()
            self._ring[id(peer)] = sorted(_hash(label + b"%d" % n) for n in range(count))

    def usable(self, peer: Peer[T], now: float) -> bool:
        """Whether ``peer`` may get a request now."""
        if not peer.healthy:
            return False
        return not (self.max_fails and peer.fails >= self.max_fails and now < peer._down_until)

    def pick(
        self, now: float, exclude: Collection[Peer[T]] = (), key: bytes | None = None
    ) -> Peer[T] | None:
        """Choose the peer for the next attempt, or ``None`` when none can take it now.

        When every healthy peer not in ``exclude`` is left out after failures, the one
        whose time out ends first is chosen all the same (see the module docstring).
        ``None`` means each peer was tried for this request or is actively unhealthy,
        or the peers it could use are full: :meth:`busy` tells which. Whether a peer
        is given does not depend on ``key``, only which one.

        Args:
            now: the current time.
            exclude: peers already tried for this request.
            key: the request's key, for the hash policies (``None`` or empty: none).
        """
        limit = self.max_conns
        single = self._single
        if single is not None:
            if single.healthy and single not in exclude and not (limit and single.active >= limit):
                return single
            return None
        # (_free, inline: the common case costs no call.)
        candidates = [
            peer for peer in self._primaries if peer not in exclude and self.usable(peer, now)
        ]
        full = False
        if limit and candidates:
            candidates = [peer for peer in candidates if peer.active < limit]
            full = not candidates
        if not candidates and self._backups:
            candidates, backups_full = self._free(self._backups, now, exclude)
            full = full or backups_full
        if not candidates:
            # Busy: wait for one of them rather than fall back.
            return None if full else self._back_soonest(exclude)
        if self.hashed and key:
            chosen = self._by_key(key, candidates)
        elif self.policy in ("random", "random_two"):
            chosen = self._random_choice(candidates, two=self.policy == "random_two")
        else:
            if self.policy == "least_conn" and len(candidates) > 1:
                candidates = self._least_busy(candidates)
            chosen = self._weighted_round_robin(candidates)
        if self.max_fails and chosen.fails >= self.max_fails:
            # A peer back from its time out: this request is the probe; the others
            # wait for its outcome (or for another fail_timeout).
            chosen._down_until = now + self.fail_timeout
        return chosen

    @staticmethod
    def _least_busy(candidates: list[Peer[T]]) -> list[Peer[T]]:
        """The ``candidates`` with the fewest requests in progress for their weight."""
        best = candidates[0]
        ties = [best]
        for peer in candidates[1:]:
            # active/weight compared without division.
            left = peer.active * best.weight
            right = best.active * peer.weight
            if left < right:
                best = peer
                ties = [peer]
            elif left == right:
                ties.append(peer)
        return ties

    def _free(
        self, tier: tuple[Peer[T], ...], now: float, exclude: Collection[Peer[T]]
    ) -> tuple[list[Peer[T]], bool]:
        """The peers of ``tier`` that can take the request now, and whether it has some.

        The second is true when usable peers of ``tier`` exist but all are at
        ``max_conns``.
        """
        live = [peer for peer in tier if peer not in exclude and self.usable(peer, now)]
        limit = self.max_conns
        if not (limit and live):
            return live, False
        free = [peer for peer in live if peer.active < limit]
        return free, not free

    def busy(self, now: float, exclude: Collection[Peer[T]] = ()) -> bool:
        """Whether no peer can take a request now only because of ``max_conns``.

        True when the peers :meth:`pick` would choose from (those usable now, or
        when none is, every healthy one) exist and are all full: a request that
        waits gets one once a request in progress ends. False when :meth:`pick` has
        a peer to give, and when nothing is left for this request (every peer
        tried or actively unhealthy): then waiting would not help.

        Args:
            now: the current time.
            exclude: peers already tried for this request.
        """
        limit = self.max_conns
        if not limit:
            return False
        some_full = False
        for tier in (self._primaries, self._backups):
            free, full = self._free(tier, now, exclude)
            if free:
                return False
            some_full = some_full or full
        if some_full:
            return True
        live = [peer for peer in self.peers if peer.healthy and peer not in exclude]
        return bool(live) and all(peer.active >= limit for peer in live)

    def next_recovery(self, now: float) -> float | None:
        """When the first peer now out after failures may be tried again, or ``None``.

        Requests waiting for a free peer are looked at again then: a cool-down ending
        frees capacity without any request ending.
        """
        if not self.max_fails:
            return None
        ends = [
            peer._down_until
            for peer in self.peers
            if peer.healthy and peer.fails >= self.max_fails and peer._down_until > now
        ]
        return min(ends) if ends else None

    def _back_soonest(self, exclude: Collection[Peer[T]]) -> Peer[T] | None:
        """The healthy peer not in ``exclude`` and not full whose time out ends first."""
        limit = self.max_conns
        best = None
        for peer in self.peers:
            if (
                peer.healthy
                and peer not in exclude
                and not (limit and peer.active >= limit)
                and (best is None or peer._down_until < best._down_until)
            ):
                best = peer
        return best

    def _by_key(self, key: bytes, candidates: list[Peer[T]]) -> Peer[T]:
        """The peer ``key`` maps to among ``candidates`` (see the module docstring)."""
        hashed = _hash(key)
        if self.policy == "hash":
            allowed = set(map(id, candidates))
            ends = self._weight_ends
            for attempt in range(_HASH_TRIES):
                if attempt:
                    hashed = _hash(b"%d:%s" % (attempt, key))
                index = bisect.bisect_right(ends, hashed % ends[-1])
                peer = self.peers[index]
                if id(peer) in allowed:
                    return peer
            return self._weighted_round_robin(candidates)
        # The first point after the key's that belongs to a candidate: the nearest
        # of each candidate's own (a bisection each, where walking the ring past the
        # points of peers that cannot take the request could take thousands of steps).
        ring = self._ring
        best = candidates[0]
        best_distance = _RING_SIZE
        for peer in candidates:
            points = ring[id(peer)]
            index = bisect.bisect_left(points, hashed)
            point = points[index] if index < len(points) else points[0] + _RING_SIZE
            if point - hashed < best_distance:
                best, best_distance = peer, point - hashed
        return best

    def _random_choice(self, candidates: list[Peer[T]], *, two: bool) -> Peer[T]:
        """A peer drawn by weight; with ``two``, the less busy of two drawn so."""
        if len(candidates) == 1:
            return candidates[0]
        choices = self._rng.choices
        first = choices(candidates, [peer.weight for peer in candidates])[0]
        if not two:
            return first
        others = [peer for peer in candidates if peer is not first]
        second = choices(others, [peer.weight for peer in others])[0]
        # Fewer requests in progress relative to the weight (compared without
        # division); the first drawn on a tie.
        if second.active * first.weight < first.active * second.weight:
            return second
        return first

    @staticmethod
    def _weighted_round_robin(candidates: list[Peer[T]]) -> Peer[T]:
        """Nginx's smooth weighted round-robin over ``candidates``."""
        if len(candidates) == 1:
            return candidates[0]
        total = 0
        best = candidates[0]
        for peer in candidates:
            peer._current += peer.weight
            total += peer.weight
            if peer._current > best._current:
                best = peer
        best._current -= total
        return best

    def acquire(self, peer: Peer[T]) -> None:
        """Count a request starting on ``peer``.

        (The proxy counts in place, without the call: keep the two alike.)
        """
        peer.active += 1

    def release(self, peer: Peer[T]) -> None:
        """Count a request ending on ``peer`` (in place in the proxy too, see acquire)."""
        if peer.active > 0:
            peer.active -= 1

    def failed(self, peer: Peer[T], now: float) -> bool:
        """Count a failed attempt on ``peer``.

        Returns:
            Whether this failure took the peer out (for a log line).
        """
        if not self.max_fails:
            return False
        if 0 < peer.fails < self.max_fails and now - peer._window_start > self.fail_timeout:
            peer.fails = 0  # the earlier failures are too old to count
        if peer.fails == 0:
            peer._window_start = now
        peer.fails += 1
        if peer.fails >= self.max_fails:
            peer._down_until = now + self.fail_timeout
            return True
        return False

    def succeeded(self, peer: Peer[T]) -> None:
        """An attempt on ``peer`` got a response: forget its failures."""
        if peer.fails:
            peer.fails = 0
            peer._down_until = 0.0
