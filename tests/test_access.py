"""A mount's allow, deny, rate_limit and conn_limit: the client address they match,
and the 403 and 429 in front of every kind of mount (in memory through the protocol
and the routing table a configuration builds).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.test_proxy import SWITCHED, WEBSOCKET_UPGRADE, make_proxy
from tests.test_redirect import ask
from twistwsgi import cli
from twistwsgi.access import (
    AccessRules,
    ConnectionLimit,
    GuardedHandler,
    RateLimit,
    SharedConnectionLimit,
    client_address,
    held_for,
)
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.exchange import Exchange
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import Router
from twistwsgi.service import standard_builders
from twistwsgi.shared_limits import CONN_GROUPS, ENTERED, WAYS, SharedLimits
from twistwsgi.site import SiteBuilder
from twistwsgi.testing import (
    Connection,
    QueueingPool,
    SynchronousReactorThreads,
    capture_log_events,
    connect,
    parse_responses,
)


def head(peer: Any, *fields: tuple[bytes, bytes], version: bytes = b"1.1") -> RequestHead:
    """A GET / for a.test from ``peer`` with ``fields``."""
    return RequestHead(
        method=b"GET",
        target=b"/",
        path=b"/",
        decoded_path=b"/",
        query=b"",
        version=version,
        headers=[(b"Host", b"a.test"), *fields],
        authority=b"a.test",
        content_length=None,
        chunked=False,
        scheme="http",
        peer=peer,
        local=("127.0.0.1", 80),
    )


PROXY = ("10.0.0.5", 40000)
TRUSTED = TrustedProxies(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "fields", "expected"),
    [
        (("192.0.2.1", 1), [], "192.0.2.1"),
        (None, [], None),  # a UNIX socket
        # From anyone else, a forwarding field is the client's claim: ignored.
        (("192.0.2.1", 1), [(b"X-Forwarded-For", b"198.51.100.7")], "192.0.2.1"),
        (PROXY, [(b"X-Forwarded-For", b"198.51.100.7")], "198.51.100.7"),
        # The last entry is the one the trusted proxy appended; before it, the client's.
        (PROXY, [(b"X-Forwarded-For", b"10.9.9.9, 198.51.100.7")], "198.51.100.7"),
        (
            PROXY,
            [(b"X-Forwarded-For", b"1.1.1.1"), (b"x-forwarded-for", b"203.0.113.4")],
            "203.0.113.4",
        ),
        (PROXY, [(b"Forwarded", b'for="[2001:db8::1]:4711";proto=https')], "2001:db8::1"),
        (PROXY, [(b"Forwarded", b"for=192.0.2.9, for=192.0.2.60:4711")], "192.0.2.60"),
        # A report that names no address: an unknown client, which allow refuses
        # (not the proxy, which allow may well list).
        (PROXY, [(b"Forwarded", b"for=unknown")], "unknown"),
        (PROXY, [(b"Forwarded", b"for=_hidden")], "unknown"),
        (PROXY, [(b"X-Forwarded-For", b"not an address")], "unknown"),
        (PROXY, [(b"X-Forwarded-For", b"203.000.113.009")], "unknown"),
        (PROXY, [], "10.0.0.5"),  # no report: the proxy itself
        # Ports and brackets, as proxies write them (RFC 3986 host[:port]).
        (PROXY, [(b"X-Forwarded-For", b"203.0.113.9:51234")], "203.0.113.9"),
        (PROXY, [(b"X-Forwarded-For", b"[2001:db8::9]")], "2001:db8::9"),
        (PROXY, [(b"X-Forwarded-For", b"[2001:db8::9]:443")], "2001:db8::9"),
        # A trusted balancer in front of the trusted proxy: read past it.
        (PROXY, [(b"X-Forwarded-For", b"203.0.113.9, 10.0.0.3")], "203.0.113.9"),
        (
            PROXY,
            [(b"X-Forwarded-For", b"203.0.113.9"), (b"X-Forwarded-For", b"10.0.0.3")],
            "203.0.113.9",
        ),
        (PROXY, [(b"X-Forwarded-For", b"10.0.0.4, 10.0.0.3")], "10.0.0.4"),  # all trusted
        (PROXY, [(b"Forwarded", b"for=203.0.113.9, for=10.0.0.3")], "203.0.113.9"),
        (PROXY, [(b"X-Forwarded-For", b"203.0.113.9, ,")], "203.0.113.9"),  # empty members
    ],
)
def test_the_client_address(
    peer: Any, fields: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert client_address(head(peer, *fields), TRUSTED) == expected


@pytest.mark.parametrize(
    ("allow", "deny", "peer", "refused"),
    [
        (["10.0.0.0/8"], [], ("10.1.2.3", 1), False),
        (["10.0.0.0/8"], [], ("192.0.2.1", 1), True),
        ([], ["192.0.2.0/24"], ("192.0.2.1", 1), True),
        ([], ["192.0.2.0/24"], ("198.51.100.1", 1), False),
        (["10.0.0.0/8"], ["10.6.0.0/16"], ("10.6.1.1", 1), True),  # deny is looked at first
        (["::1"], [], ("::1", 1), False),
        (["127.0.0.1"], [], ("::ffff:127.0.0.1", 1), False),  # an IPv4-mapped address
        (["unix:"], [], None, False),
        (["10.0.0.0/8"], [], None, True),  # a UNIX socket is in no network
    ],
)
def test_allow_and_deny(allow: list[str], deny: list[str], peer: Any, refused: bool) -> None:
    assert AccessRules(allow, deny, TrustedProxies([])).refuses(head(peer)) is refused


@pytest.mark.parametrize(("allow", "deny"), [(["0.0.0.0/0"], []), ([], ["192.0.2.0/24"])])
def test_an_unknown_client_is_refused_by_any_rule(allow: list[str], deny: list[str]) -> None:
    """A trusted proxy that reports no address: it could be one deny lists."""
    request = head(PROXY, (b"X-Forwarded-For", b"203.000.113.009"))
    assert AccessRules(allow, deny, TRUSTED).refuses(request)


# -- through the routing table ------------------------------------------------------------


def load(directory: Path, mounts: str, server: str = "") -> ServerConfig:
    site = directory / "site.toml"
    site.write_text(
        f'[server]\nlisten = ["tcp:80"]\n{server}\n[[host]]\nnames = ["a.test"]\n{mounts}'
    )
    return cli.load_config({"config": str(site)})


def get(path: bytes = b"/", *fields: bytes) -> bytes:
    more = b"".join(field + b"\r\n" for field in fields)
    return b"GET " + path + b" HTTP/1.1\r\nHost: a.test\r\n" + more + b"\r\n"


def peer(address: str) -> Any:
    return IPv6Address("TCP", address, 1) if ":" in address else IPv4Address("TCP", address, 1)


ADMIN = '[[host.mount]]\npath = "/admin"\napp = "tests.apps:hello"\nallow = ["10.0.0.0/8"]\n'


def test_an_application_mount_refuses_clients_outside_allow(tmp_path: Path) -> None:
    config = load(tmp_path, ADMIN)
    refused = ask(config, get(b"/admin/users"), peer=peer("192.0.2.1"))
    assert (refused.status, refused.body) == (403, b"Forbidden\n")
    assert ask(config, get(b"/admin/users"), peer=peer("10.2.3.4")).status == 200


def test_a_unix_socket_client_is_refused_unless_unix_is_allowed(tmp_path: Path) -> None:
    unix = UNIXAddress(None)
    assert ask(load(tmp_path, ADMIN), get(b"/admin"), peer=unix, local=unix).status == 403
    config = load(tmp_path, ADMIN.replace('"10.0.0.0/8"', '"unix:"'))
    assert ask(config, get(b"/admin"), peer=unix, local=unix).status == 200


def test_behind_a_trusted_proxy_the_reported_client_is_matched(tmp_path: Path) -> None:
    config = load(tmp_path, ADMIN, 'trusted_proxies = ["192.0.2.0/24"]')
    balancer = peer("192.0.2.10")
    assert ask(config, get(b"/admin"), peer=balancer).status == 403
    inside = get(b"/admin", b"X-Forwarded-For: 10.7.7.7")
    assert ask(config, inside, peer=balancer).status == 200
    # Not from the trusted proxy: the field is the client's own claim.
    assert ask(config, inside, peer=peer("198.51.100.1")).status == 403


def test_a_static_mount_passing_a_miss_on_goes_through_the_rules_of_the_mount_it_passes_to(
    tmp_path: Path,
) -> None:
    """The files are for everyone; the application behind them only for the allowed:
    a miss passed on must not step around the application mount's allow.
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.txt").write_text("file\n")
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/"\nstatic = "files"\nfallthrough = true\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nallow = ["10.0.0.0/8"]\n',
    )
    outside = peer("192.0.2.1")
    assert ask(config, get(b"/f.txt"), peer=outside).body == b"file\n"
    assert ask(config, get(b"/missing"), peer=outside).status == 403
    assert ask(config, get(b"/missing"), peer=peer("10.0.0.1")).body == b"Hello, World!"


def test_a_denied_client_never_reaches_a_proxy_mount(tmp_path: Path) -> None:
    """The 403 comes before the upstream is asked (here one that nothing answers)."""
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/api"\nproxy = "http://127.0.0.1:9"\ndeny = ["192.0.2.0/24"]\n',
    )
    assert ask(config, get(b"/api/x"), peer=peer("192.0.2.1")).status == 403


def test_a_static_mount_with_deny(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.txt").write_text("file\n")
    config = load(tmp_path, '[[host.mount]]\npath = "/"\nstatic = "files"\ndeny = ["192.0.2.1"]\n')
    assert ask(config, get(b"/f.txt"), peer=peer("192.0.2.1")).status == 403
    assert ask(config, get(b"/f.txt"), peer=peer("192.0.2.2")).status == 200


def test_a_network_that_is_not_one_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, ADMIN.replace('"10.0.0.0/8"', '"10.0.0.0/33"'))
    assert str(raised.value) == (
        "site.toml: host[0].mount[0].allow: '10.0.0.0/33' is not an IP address or network (CIDR)"
    )


def test_an_empty_allow_is_a_configuration_error(tmp_path: Path) -> None:
    """Meant as nginx's deny all, or as no rule? As no rule it would open the mount."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, ADMIN.replace('["10.0.0.0/8"]', "[]"))
    assert str(raised.value) == (
        "site.toml: host[0].mount[0].allow: is empty: list the networks that may use the"
        " mount, or leave it out"
    )


# -- rate_limit ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(rate: float, burst: int) -> tuple[RateLimit, FakeClock]:
    clock = FakeClock()
    return RateLimit(rate, burst, TrustedProxies([]), clock), clock


CLIENT = head(("192.0.2.1", 1))


def test_without_burst_requests_must_come_one_rate_apart() -> None:
    limit, clock = limited(2.0, 0)
    assert limit.retry_after(CLIENT) is None
    assert limit.retry_after(CLIENT) == 1  # half a second to wait: rounded up
    clock.now += 0.5
    assert limit.retry_after(CLIENT) is None
    assert limit.retry_after(CLIENT) == 1


def test_a_burst_goes_through_at_once_and_the_next_waits() -> None:
    """Nginx's burst=3 nodelay: the first request and three more at once."""
    limit, clock = limited(1.0, 3)
    assert [limit.retry_after(CLIENT) for _ in range(4)] == [None] * 4
    assert limit.retry_after(CLIENT) == 1
    # A refused request is not counted: after one second, one more fits.
    clock.now += 1.0
    assert limit.retry_after(CLIENT) is None
    assert limit.retry_after(CLIENT) == 1


def test_retry_after_says_how_long_the_bucket_takes_to_drain() -> None:
    limit, _ = limited(0.1, 0)  # 6r/m
    assert limit.retry_after(CLIENT) is None
    assert limit.retry_after(CLIENT) == 10


def test_clients_are_counted_apart() -> None:
    limit, _ = limited(1.0, 0)
    assert limit.retry_after(CLIENT) is None
    assert limit.retry_after(head(("192.0.2.2", 1))) is None
    assert limit.retry_after(head(None)) is None  # every UNIX-socket client: one
    assert limit.retry_after(head(None)) == 1


def test_a_flood_of_addresses_cannot_grow_memory() -> None:
    limit, clock = limited(1.0, 0)
    limit.MAX_CLIENTS = 100
    for number in range(1000):
        limit.retry_after(head((f"10.0.{number // 256}.{number % 256}", 1)))
        clock.now += 0.001
    assert len(limit._buckets) <= 100


def test_a_mount_answers_429_with_retry_after(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "30r/m"\n',
    )
    memory = MemoryReactorClock()
    table = SiteBuilder(reactor=memory, threadpool=None).build(config)
    connection = connect(Router(table))
    for _ in range(2):
        connection.protocol.dataReceived(get(b"/login"))
    first, second = parse_responses(connection.transport.value())
    assert first.status == 200
    assert (second.status, second.header(b"retry-after")) == (429, b"2")
    assert second.body == b"Too Many Requests\n"
    memory.advance(2)
    connection.transport.clear()
    connection.protocol.dataReceived(get(b"/login"))
    assert parse_responses(connection.transport.value())[0].status == 200


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            'rate_limit = "fast"',
            "rate_limit: expected requests per second or minute, as 10r/s or 30r/m, got 'fast'",
        ),
        (
            'rate_limit = "0r/s"',
            "rate_limit: expected requests per second or minute, as 10r/s or 30r/m, got '0r/s'",
        ),
        ("rate_burst = 5", "rate_burst: needs rate_limit, the rate it is a burst of"),
        ("rate_delay = 1", "rate_delay: needs rate_limit, the rate it holds requests to"),
        (
            'rate_limit = "1r/s"\nrate_burst = 3\nrate_delay = 3',
            "rate_delay: has no effect unless less than rate_burst (3): no request of a"
            " burst would be held",
        ),
        (
            'rate_limit = "1r/s"\nrate_delay = 0',
            "rate_delay: has no effect unless less than rate_burst (0): no request of a"
            " burst would be held",
        ),
        (
            'rate_limit = "1r/s"\nrate_burst = 3\nrate_delay = -1',
            "rate_delay: expected a whole number >= 0, got -1",
        ),
        ('rate_limit = "0.5r/m"', "rate_limit: the smallest rate is 1r/m, got '0.5r/m'"),
    ],
)
def test_rate_settings_that_do_not_hold(tmp_path: Path, keys: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f'[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n{keys}\n')
    assert str(raised.value) == f"site.toml: host[0].mount[0].{problem}"


@pytest.mark.parametrize(
    ("excess", "delay", "held"),
    [
        (0.0, 0, 0.0),
        (1.0, 0, 0.5),  # nginx without nodelay: one ahead waits one rate interval
        (3.0, 1, 1.0),
        (1.0, 1, 0.0),
        (1.0005, 1, 0.0),  # (nginx's thousandth of a request of slack)
        (5.0, None, 0.0),  # nodelay
    ],
)
def test_a_request_past_the_delay_waits_for_the_rate(
    excess: float, delay: int | None, held: float
) -> None:
    assert held_for(excess, 2.0, delay) == pytest.approx(held)


def test_the_count_says_how_far_ahead_of_the_rate_the_client_is() -> None:
    limit, clock = limited(1.0, 3)
    assert [limit.count(CLIENT) for _ in range(5)] == [
        (None, 0.0),
        (None, 1.0),
        (None, 2.0),
        (None, 3.0),
        (1, 3.0),
    ]
    clock.now += 2.5
    wait, lead = limit.count(CLIENT)
    assert wait is None and lead == pytest.approx(1.5)


def delaying(delay: int) -> tuple[GuardedHandler, HeldOpen, MemoryReactorClock]:
    """A handler behind rate_limit 1r/s, rate_burst 3, rate_delay ``delay``."""
    memory = MemoryReactorClock()
    held = HeldOpen()
    limit = RateLimit(1.0, 3, TrustedProxies([]), memory.seconds, delay)
    return GuardedHandler(held, None, limit, clock=memory), held, memory


def test_requests_of_a_burst_past_the_delay_are_held_until_the_rate_allows_them() -> None:
    """Nginx's limit_req burst=3 delay=1: two at once, then one a second; the one past
    the burst is refused at once.
    """
    handler, held, memory = delaying(1)
    clients = [client_of(handler) for _ in range(5)]
    for client in clients:
        client.send(get())
    assert len(held.exchanges) == 2
    [refused_one] = parse_responses(clients[4].take())
    assert (refused_one.status, refused_one.header(b"retry-after")) == (429, b"1")
    memory.advance(0.99)
    assert len(held.exchanges) == 2
    memory.advance(0.01)
    assert len(held.exchanges) == 3  # one ahead of the delay: a second
    memory.advance(1)
    assert len(held.exchanges) == 4
    for exchange in held.exchanges:
        answer(exchange)
    assert [parse_responses(client.take())[0].status for client in clients[:4]] == [200] * 4


def test_a_client_that_leaves_while_held_is_never_handed_on() -> None:
    handler, held, memory = delaying(0)
    first, second = client_of(handler), client_of(handler)
    first.send(get())
    second.send(get())
    assert len(held.exchanges) == 1

    def holds() -> list[Any]:
        return [
            call
            for call in memory.getDelayedCalls()
            if call.active() and getattr(getattr(call, "func", None), "__name__", "") == "_go_on"
        ]

    assert len(holds()) == 1
    second.protocol.connectionLost(Failure(ConnectionDone()))
    assert holds() == []
    memory.advance(5)
    assert len(held.exchanges) == 1


def test_a_rate_limit_that_delays_needs_a_clock() -> None:
    limit = RateLimit(1.0, 3, TrustedProxies([]), FakeClock(), 1)
    with pytest.raises(ValueError, match="needs a clock"):
        GuardedHandler(HeldOpen(), None, limit)


def test_a_mount_with_rate_delay_holds_its_requests_back(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "60r/m"\n'
        "rate_burst = 2\nrate_delay = 0\n",
    )
    memory = MemoryReactorClock()
    table = SiteBuilder(reactor=memory, threadpool=None).build(config)
    connection = connect(Router(table), clock=memory)
    for _ in range(3):
        connection.protocol.dataReceived(get(b"/login"))
    assert len(parse_responses(connection.transport.value())) == 1
    memory.advance(1)
    assert len(parse_responses(connection.transport.value())) == 2
    memory.advance(1)
    assert [r.status for r in parse_responses(connection.transport.value())] == [200] * 3


def test_a_held_request_still_needs_its_password(tmp_path: Path) -> None:
    """The hold comes first (nginx's limit_req, preaccess), the password after it."""
    (tmp_path / "htpasswd").write_text("alice:{PLAIN}secret\n")
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nrate_limit = "60r/m"\n'
        'rate_burst = 3\nrate_delay = 0\nauth_basic = "Staff"\n'
        f'auth_basic_user_file = "{tmp_path / "htpasswd"}"\n',
    )
    memory = MemoryReactorClock()
    router = Router(SiteBuilder(reactor=memory, threadpool=None).build(config))
    clients = [connect(router, clock=memory) for _ in range(3)]
    signed = b"Authorization: Basic " + base64.b64encode(b"alice:secret")
    for client, fields in zip(clients, [(), (), (signed,)], strict=True):
        client.send(get(b"/", *fields))
    assert parse_responses(clients[0].take())[0].status == 401  # (no lead: not held)
    assert clients[1].take() == clients[2].take() == b""  # held
    memory.advance(2)
    assert parse_responses(clients[1].take())[0].status == 401
    assert parse_responses(clients[2].take())[0].status == 200


def test_a_handler_failing_after_the_hold_is_answered_and_gives_its_place_back() -> None:
    """The hold's timer is not the protocol's dispatch, which answers 500 to a handler
    that raises: the hold does so itself, and the exchange ends (conn_limit's place).
    """
    memory = MemoryReactorClock()
    held = HeldOpen()
    limit = RateLimit(1.0, 3, TrustedProxies([]), memory.seconds, 0)
    handler = GuardedHandler(held, None, limit, places(1), clock=memory)
    first, second = client_of(handler), client_of(handler)
    first.send(get())
    answer(held.exchanges[0])
    held.fail = True
    with capture_log_events() as events:
        second.send(get())  # held a second, then the handler raises
        memory.advance(1)
    assert parse_responses(second.take())[0].status == 500
    assert [event["where"] for event in events if "the handler of" in event["log_format"]] == [
        "rate_delay"
    ]
    held.fail = False
    memory.advance(10)  # the bucket empty again
    third = client_of(handler)
    third.send(get())
    assert len(held.exchanges) == 2  # its place was free


def test_a_clock_stepped_back_locks_nobody_out() -> None:
    """NTP stepping the wall clock back an hour: a client at its burst drains from
    then on, rather than waiting for the hour to come round again.
    """
    limit, clock = limited(10.0, 2)
    assert [limit.retry_after(CLIENT) for _ in range(4)][-1] is not None  # at the burst
    clock.now -= 3600
    assert limit.retry_after(CLIENT) == 1
    clock.now += 1
    assert limit.retry_after(CLIENT) is None


def test_a_client_keeping_exactly_to_the_rate_is_never_refused() -> None:
    """Float rounding of now - then near 1.7e9 s made 40% of such requests 429s."""
    limit, clock = limited(10.0, 0)
    clock.now = 1.7e9
    refused = 0
    for _ in range(1000):
        refused += limit.retry_after(CLIENT) is not None
        clock.now += 0.1
    assert refused == 0


def test_forgetting_is_amortised_and_keeps_the_recent_clients() -> None:
    """The table full: a quarter goes at once (not a scan per newcomer), the least
    recently let through first.
    """
    limit, _ = limited(1 / 60, 5)
    limit.MAX_CLIENTS = 8
    addresses = [head((f"10.0.0.{n}", 1)) for n in range(8)]
    for request in addresses:
        limit.retry_after(request)
    limit.retry_after(addresses[0])  # the first is recent again
    limit.retry_after(head(("10.0.1.1", 1)))
    kept = set(limit._buckets)
    assert len(kept) == 7 and "10.0.0.0" in kept and "10.0.0.1" not in kept


def test_check_config_shows_the_rate_as_written(tmp_path: Path) -> None:
    from twistwsgi.site import describe_routing

    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
        "rate_burst = 2\n",
    )
    assert "rate_limit=1r/m rate_burst=2" in describe_routing(config)


# -- conn_limit ---------------------------------------------------------------------------


def places(limit: int, trusted: TrustedProxies | None = None) -> ConnectionLimit:
    return ConnectionLimit(limit, trusted or TrustedProxies([]))


def test_a_client_may_have_the_limit_in_progress_and_no_more() -> None:
    limit = places(2)
    first, second = limit.admit(CLIENT), limit.admit(CLIENT)
    assert first is not None and second is not None
    assert limit.admit(CLIENT) is None  # refused, and not counted
    first.release()
    third = limit.admit(CLIENT)
    assert third is not None and limit.admit(CLIENT) is None


def test_a_place_is_given_back_once_and_a_client_at_zero_is_forgotten() -> None:
    """An ending reported twice must not free another request's place."""
    limit = places(1)
    place = limit.admit(CLIENT)
    assert place is not None
    place.release(None)
    place.release(None)
    assert limit._counts == {}
    again = limit.admit(CLIENT)
    assert again is not None
    place.release(None)
    assert limit.admit(CLIENT) is None  # the old place's second release freed nothing
    again.release()
    assert limit._counts == {}


def test_clients_are_counted_apart_and_unix_and_unknown_clients_as_one() -> None:
    limit = places(1, TRUSTED)
    assert limit.admit(CLIENT) is not None
    assert limit.admit(head(("192.0.2.2", 1))) is not None
    assert limit.admit(head(None)) is not None
    assert limit.admit(head(None)) is None  # every UNIX-socket client: one
    unknown = (b"X-Forwarded-For", b"not an address")
    assert limit.admit(head(PROXY, unknown)) is not None
    assert limit.admit(head(("10.0.0.6", 1), unknown)) is None  # one unknown client
    assert limit.admit(head(PROXY)) is not None  # the proxy itself: another client


@given(
    st.integers(1, 3),
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 50)),
        max_size=60,
    ),
    st.randoms(use_true_random=False),
)
def test_the_counts_follow_the_requests_in_any_order(
    most: int, steps: list[tuple[bool, int, int]], random: Random
) -> None:
    """Admitting and releasing (some twice) in any order: a client is let in exactly
    when it has fewer than the limit in progress, no count goes below one or above
    the limit, and once every place is given back nothing is remembered.
    """
    limit = places(most)
    clients = [head((f"192.0.2.{n}", 1)) for n in range(3)]
    held: list[tuple[int, Any]] = []
    for admit, client, pick in steps:
        if admit or not held:
            in_progress = sum(1 for owner, _ in held if owner == client)
            place = limit.admit(clients[client])
            assert (place is not None) == (in_progress < most)
            if place is not None:
                held.append((client, place))
        else:
            _, place = held.pop(pick % len(held))
            place.release()
            place.release()  # a second ending changes nothing
        assert all(1 <= count <= most for count in limit._counts.values())
        expected = {f"192.0.2.{owner}" for owner, _ in held}
        assert set(limit._counts) == expected
    random.shuffle(held)
    for _, place in held:
        place.release()
    assert limit._counts == {}


class HeldOpen:
    """Keeps every exchange it is given, for the test to end; may fail instead."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.fail = False

    def handle(self, exchange: Exchange) -> None:
        if self.fail:
            raise RuntimeError("the handler failed")
        self.exchanges.append(exchange)


def guarded(most: int, trusted: TrustedProxies | None = None) -> tuple[GuardedHandler, HeldOpen]:
    held = HeldOpen()
    return GuardedHandler(held, None, None, places(most, trusted)), held


def client_of(handler: Any, address: str = "192.0.2.1") -> Connection:
    """A connection to ``handler`` from ``address``."""
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=peer(address)
    )
    return connect(handler, transport=transport)


def answer(exchange: Exchange) -> None:
    exchange.start_response(200, [(b"Content-Length", b"2")])
    exchange.finish(b"ok")


def refused(connection: Connection) -> None:
    """``connection``'s only response is the 429 of conn_limit."""
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (429, b"Too Many Requests\n")
    assert response.header(b"retry-after") is None  # no wait can be known


def test_the_request_past_the_limit_gets_429_and_never_reaches_the_handler() -> None:
    handler, held = guarded(2)
    first, second, third = client_of(handler), client_of(handler), client_of(handler)
    for connection in (first, second, third):
        connection.send(get())
    assert len(held.exchanges) == 2
    refused(third)
    assert first.take() == second.take() == b""  # both still in progress
    answer(held.exchanges[0])
    assert parse_responses(first.take())[0].status == 200
    third.send(get())  # the place the first left
    assert len(held.exchanges) == 3
    fourth = client_of(handler)
    fourth.send(get())
    refused(fourth)


def end_by_abort(exchange: Exchange, connection: Connection) -> None:
    exchange.start_response(200, [(b"Content-Length", b"10")])
    exchange.write(b"half")
    exchange.abort()


def end_by_client_leaving(exchange: Exchange, connection: Connection) -> None:
    exchange.start_response(200, [(b"Content-Length", b"10")])
    exchange.write(b"half")
    connection.protocol.connectionLost(Failure(ConnectionLost()))


def end_by_client_leaving_first(exchange: Exchange, connection: Connection) -> None:
    connection.protocol.connectionLost(Failure(ConnectionDone()))


@pytest.mark.parametrize("end", [end_by_abort, end_by_client_leaving, end_by_client_leaving_first])
def test_a_place_is_freed_however_the_exchange_ends(
    end: Callable[[Exchange, Connection], None],
) -> None:
    handler, held = guarded(1)
    first = client_of(handler)
    first.send(get())
    second = client_of(handler)
    second.send(get())
    refused(second)
    end(held.exchanges[0], first)
    second.send(get())
    assert len(held.exchanges) == 2


def test_a_failing_handler_gives_its_place_back() -> None:
    """The handler raising: the protocol answers 500, and that ends the exchange."""
    handler, held = guarded(1)
    held.fail = True
    failing = client_of(handler)
    failing.send(get())
    assert parse_responses(failing.take())[0].status == 500
    held.fail = False
    later = client_of(handler)
    later.send(get())
    assert len(held.exchanges) == 1


def test_an_exchange_that_ended_before_the_limit_saw_it_takes_no_place() -> None:
    """A close listener added once the exchange is over is never told: the place
    must not be kept for ever.
    """
    handler, _ = guarded(1)

    class AnswerThenPassOn:
        def handle(self, exchange: Exchange) -> None:
            answer(exchange)
            handler.handle(exchange)

    client_of(AnswerThenPassOn()).send(get())
    assert isinstance(handler.connections, ConnectionLimit)
    assert handler.connections._counts == {}


def test_clients_are_counted_apart_through_the_protocol() -> None:
    handler, held = guarded(1)
    client_of(handler, "192.0.2.1").send(get())
    other = client_of(handler, "2001:db8::1")
    other.send(get())
    same = client_of(handler, "192.0.2.1")
    same.send(get())
    assert len(held.exchanges) == 2
    assert other.take() == b""
    refused(same)


def test_behind_a_trusted_proxy_the_reported_client_is_counted() -> None:
    """Two clients through one balancer are two; one client through two balancer
    connections is one.
    """
    handler, held = guarded(1, TRUSTED)
    first = client_of(handler, "10.0.0.5")
    first.send(get(b"/", b"X-Forwarded-For: 203.0.113.1"))
    second = client_of(handler, "10.0.0.5")
    second.send(get(b"/", b"X-Forwarded-For: 203.0.113.2"))
    again = client_of(handler, "10.0.0.6")
    again.send(get(b"/", b"X-Forwarded-For: 203.0.113.1"))
    assert len(held.exchanges) == 2
    refused(again)


def test_pipelined_requests_take_one_place_at_a_time() -> None:
    """Requests pipelined on one connection are handed on one after the other, each
    once the one before ended: with a limit of 1, none of them is refused.
    """
    handler, held = guarded(1)
    connection = client_of(handler)
    connection.send(get(b"/1") + get(b"/2") + get(b"/3"))
    assert [e.request.path for e in held.exchanges] == [b"/1"]
    for expected in (b"/2", b"/3"):
        answer(held.exchanges[-1])
        assert held.exchanges[-1].request.path == expected
    answer(held.exchanges[-1])
    assert [r.status for r in parse_responses(connection.take())] == [200, 200, 200]


def test_a_websocket_holds_its_place_until_the_tunnel_closes() -> None:
    """As nginx keeps an upgraded request, and its limit_conn place, until the tunnel
    ends, a client may not open more WebSockets at once than the limit.
    """
    setup = make_proxy()
    handler = GuardedHandler(setup.handler, None, None, places(1))
    socket = connect(handler, clock=setup.clock)
    socket.send(WEBSOCKET_UPGRADE)
    upstream = setup.endpoint().last
    upstream.respond(SWITCHED)
    assert socket.take().startswith(b"HTTP/1.1 101")
    second = connect(handler, clock=setup.clock)
    second.send(WEBSOCKET_UPGRADE)
    refused(second)
    upstream.close()  # the upstream ends the tunnel; the client's connection goes
    assert socket.is_closed()
    socket.protocol.connectionLost(Failure(ConnectionDone()))
    third = connect(handler, clock=setup.clock)
    third.send(WEBSOCKET_UPGRADE)
    assert len(setup.endpoint().connections) == 2  # passed on to the upstream


def test_a_request_refused_by_the_rules_or_the_rate_takes_no_place() -> None:
    held = HeldOpen()
    limit = places(1)
    clock = FakeClock()
    rate = RateLimit(1.0, 0, TrustedProxies([]), clock)
    rules = AccessRules([], ["192.0.2.9"], TrustedProxies([]))
    handler = GuardedHandler(held, rules, rate, limit)
    denied = client_of(handler, "192.0.2.9")
    denied.send(get())
    assert parse_responses(denied.take())[0].status == 403
    first = client_of(handler)
    first.send(get())
    answer(held.exchanges[0])
    too_fast = client_of(handler)
    too_fast.send(get())
    assert parse_responses(too_fast.take())[0].status == 429
    assert limit._counts == {}
    clock.now += 1
    client_of(handler).send(get())
    assert len(held.exchanges) == 2


# -- conn_limit through the configuration -------------------------------------------------


def test_an_application_mount_counts_requests_until_they_are_answered(tmp_path: Path) -> None:
    """Requests waiting for a thread are in progress too."""
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/export"\napp = "tests.apps:hello"\nconn_limit = 1\n',
    )
    pool = QueueingPool()
    table = SiteBuilder(reactor=SynchronousReactorThreads(), threadpool=pool).build(config)
    router = Router(table)
    waiting = client_of(router)
    waiting.send(get(b"/export/a"))
    second = client_of(router)
    second.send(get(b"/export/b"))
    refused(second)
    pool.run_all()
    assert parse_responses(waiting.take())[0].body == b"Hello, World!"
    second.send(get(b"/export/b"))
    pool.run_all()
    assert parse_responses(second.take())[0].status == 200


def test_a_proxy_mount_counts_requests_waiting_for_the_upstream(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/api"\nproxy = "http://127.0.0.1:9"\nconn_limit = 1\n',
    )
    memory = MemoryReactorClock()
    builders = standard_builders(memory)
    router = Router(SiteBuilder(reactor=memory, threadpool=None, builders=builders).build(config))
    pending = client_of(router)
    pending.send(get(b"/api/x"))  # its upstream connection never completes
    second = client_of(router)
    second.send(get(b"/api/x"))
    refused(second)
    pending.protocol.connectionLost(Failure(ConnectionDone()))
    second.send(get(b"/api/x"))
    assert second.take() == b""  # in progress: waiting for the upstream


def test_a_static_mount_gives_the_place_back_when_the_file_is_sent(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.txt").write_text("file\n")
    config = load(tmp_path, '[[host.mount]]\npath = "/"\nstatic = "files"\nconn_limit = 1\n')
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    for _ in range(2):
        connection = client_of(router)
        connection.send(get(b"/f.txt"))
        assert parse_responses(connection.take())[0].body == b"file\n"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "expected more than 0, got 0"),
        ("-2", "expected more than 0, got -2"),
        ('"many"', "expected a whole number, got 'many'"),
        ("1.5", "expected a whole number, got 1.5"),
        ("true", "expected a whole number, got True"),
    ],
)
def test_a_conn_limit_that_is_not_a_positive_whole_number(
    tmp_path: Path, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(
            tmp_path,
            f'[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nconn_limit = {value}\n',
        )
    assert str(raised.value) == f"site.toml: host[0].mount[0].conn_limit: {problem}"


def test_check_config_shows_the_conn_limit(tmp_path: Path) -> None:
    from twistwsgi.site import describe_routing

    config = load(tmp_path, '[[host.mount]]\npath = "/"\nstatic = "."\nconn_limit = 3\n')
    assert describe_routing(config).splitlines()[-1].split() == ["conn_limit=3"]


# -- shared by worker processes ---------------------------------------------------------


@pytest.fixture
def shared() -> Iterator[SharedLimits]:
    made = SharedLimits.create()
    yield made
    made.close()


def worker_site(config: ServerConfig, tables: SharedLimits, seat: int | None) -> Router:
    """The routing of one worker process with ``seat``, on ``tables`` (as mapped by it)."""
    builder = SiteBuilder(
        reactor=MemoryReactorClock(),
        threadpool=QueueingPool(),
        shared_limits=SharedLimits(tables.fd, seat),
    )
    return Router(builder.build(config))


def test_under_workers_the_rate_is_counted_for_the_whole_server(
    tmp_path: Path, shared: SharedLimits
) -> None:
    """A client that sends each request to another worker is held to the rate."""
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
        "rate_burst = 1\n"
        '[[host.mount]]\npath = "/other"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n',
    )
    first, second = worker_site(config, shared, 0), worker_site(config, shared, 1)
    answers = []
    for router in (first, second, first, second):
        connection = client_of(router)
        connection.send(get(b"/login"))
        answers.append(connection.take())
    assert answers[0] == answers[1] == b""  # on a thread: let through
    assert [parse_responses(answer)[0].status for answer in answers[2:]] == [429, 429]
    other = client_of(second)
    other.send(get(b"/other"))
    assert other.take() == b""  # another mount: another bucket


def test_under_workers_requests_in_progress_are_counted_for_the_whole_server(
    tmp_path: Path, shared: SharedLimits
) -> None:
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/export"\napp = "tests.apps:hello"\nconn_limit = 2\n',
    )
    first, second = worker_site(config, shared, 0), worker_site(config, shared, 1)
    held = [client_of(first), client_of(second)]
    for connection in held:
        connection.send(get(b"/export"))
        assert connection.take() == b""
    third = client_of(first)
    third.send(get(b"/export"))
    refused(third)
    held[1].protocol.connectionLost(Failure(ConnectionLost()))  # one place free again
    fourth = client_of(first)
    fourth.send(get(b"/export"))
    assert fourth.take() == b""


def test_a_reload_keeps_counting_in_the_same_places(tmp_path: Path, shared: SharedLimits) -> None:
    """A new set of workers (a SIGHUP) builds the same mounts under the same names."""
    text = '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
    old = worker_site(load(tmp_path, text), shared, 0)
    new = worker_site(load(tmp_path, text), shared, 1)
    connection = client_of(old)
    connection.send(get(b"/login"))
    again = client_of(new)
    again.send(get(b"/login"))
    assert parse_responses(again.take())[0].status == 429


def test_a_worker_without_a_seat_counts_its_own_requests_in_progress(
    tmp_path: Path, shared: SharedLimits
) -> None:
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/export"\napp = "tests.apps:hello"\nconn_limit = 1\n',
    )
    seated, unseated = worker_site(config, shared, 0), worker_site(config, shared, None)
    for router in (seated, unseated):
        connection = client_of(router)
        connection.send(get(b"/export"))
        assert connection.take() == b""
    connection = client_of(unseated)
    connection.send(get(b"/export"))
    refused(connection)


def test_a_request_let_through_uncounted_gives_nothing_back(shared: SharedLimits) -> None:
    """The client's group full: let through, said once, and its end frees no other place."""
    tables = SharedLimits(shared.fd, 0)
    told: list[None] = []
    limit = SharedConnectionLimit(
        1, TrustedProxies([]), tables, "scope", on_full=lambda: told.append(None)
    )
    key = tables.key("scope", "192.0.2.1")
    others = [(key + n * CONN_GROUPS) % 2**64 for n in range(1, WAYS + 1)]
    for other in others:
        assert tables.enter(other, 1) == ENTERED
    uncounted = [limit.admit(CLIENT), limit.admit(CLIENT)]
    assert all(place is not None for place in uncounted) and len(told) == 1
    tables.leave(others[0])  # room again: the client is counted from now on
    counted = limit.admit(CLIENT)
    assert counted is not None and limit.admit(CLIENT) is None
    for place in uncounted:
        assert place is not None
        place.release()
    assert limit.admit(CLIENT) is None  # still held by the counted one
    counted.release()
    assert tables.in_progress(key) == 0
    tables.close()


def test_a_reload_in_one_process_keeps_the_counts(tmp_path: Path) -> None:
    """As nginx keeps a zone across reloads: a SIGHUP gives no client a fresh burst,
    and requests in progress count against the new configuration (then give their
    places back to it).
    """
    text = (
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
        '[[host.mount]]\npath = "/export"\napp = "tests.apps:hello"\nconn_limit = 1\n'
    )
    pool = QueueingPool()
    builder = SiteBuilder(reactor=SynchronousReactorThreads(), threadpool=pool)
    old = Router(builder.build(load(tmp_path, text)))
    client_of(old).send(get(b"/login"))
    in_progress = client_of(old)
    in_progress.send(get(b"/export"))
    new = Router(builder.build(load(tmp_path, text.replace("1r/m", "2r/m"))))
    again = client_of(new)
    again.send(get(b"/login"))
    [response] = parse_responses(again.take())
    assert (response.status, response.header(b"retry-after")) == (429, b"30")  # the new rate
    refused_export = client_of(new)
    refused_export.send(get(b"/export"))
    refused(refused_export)
    pool.run_all()  # the old request ends: its place is free in the new count
    later = client_of(new)
    later.send(get(b"/export"))
    assert later.take() == b""


def rate_limit_of(router: Router) -> Any:
    mounts = router.table.hosts.lookup("a.test")
    assert mounts is not None
    mount = mounts.lookup(b"/login")
    assert mount is not None
    guarded = mount.target
    assert isinstance(guarded, GuardedHandler)
    return guarded.limit


def test_a_reload_keeps_the_counts_and_takes_the_new_rate_delay(
    tmp_path: Path, shared: SharedLimits
) -> None:
    """In one process and under workers: the delay is the mount's as written now."""
    text = (
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
        "rate_burst = 3\nrate_delay = 1\n"
    )
    builder = SiteBuilder(reactor=SynchronousReactorThreads(), threadpool=QueueingPool())
    old = Router(builder.build(load(tmp_path, text)))
    assert rate_limit_of(old).delay == 1
    client_of(old).send(get(b"/login"))
    new = Router(builder.build(load(tmp_path, text.replace("rate_delay = 1", "rate_delay = 2"))))
    assert rate_limit_of(new).delay == 2
    assert rate_limit_of(new).count(CLIENT)[1] == pytest.approx(1.0)  # counted on
    assert rate_limit_of(worker_site(load(tmp_path, text), shared, 0)).delay == 1


def test_a_reload_that_fails_leaves_the_old_limits_as_they_were(tmp_path: Path) -> None:
    text = '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
    memory = MemoryReactorClock()
    builder = SiteBuilder(reactor=memory, threadpool=None)
    old = Router(builder.build(load(tmp_path, text)))
    broken = text.replace("1r/m", "60r/m") + (
        '[[host]]\nnames = ["b.test"]\n[[host.mount]]\npath = "/"\napp = "nowhere:app"\n'
    )  # (the first host is built, limits and all, before the second fails)
    with pytest.raises(ConfigError):
        builder.build(load(tmp_path, broken))
    connection = connect(old)
    for _ in range(2):
        connection.protocol.dataReceived(get(b"/login"))
    statuses = [response.status for response in parse_responses(connection.transport.value())]
    assert statuses == [200, 429]
    memory.advance(1)  # at 60r/m the next would fit
    connection.transport.clear()
    connection.protocol.dataReceived(get(b"/login"))
    assert parse_responses(connection.transport.value())[0].status == 429


def test_under_workers_each_mount_counts_apart(tmp_path: Path, shared: SharedLimits) -> None:
    """The same path on two hosts, and a static mount passing misses on to its
    partner at the same path: four buckets, not one.
    """
    (tmp_path / "files").mkdir()
    config = load(
        tmp_path,
        '[[host.mount]]\npath = "/login"\nstatic = "files"\nfallthrough = true\n'
        'rate_limit = "1r/m"\nrate_burst = 1\n'
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n'
        '[[host]]\nnames = ["b.test"]\n'
        '[[host.mount]]\npath = "/login"\napp = "tests.apps:hello"\nrate_limit = "1r/m"\n',
    )
    router = worker_site(config, shared, 0)
    # A miss goes through the static mount's bucket (burst 1), then the
    # application's (no burst): the first is let through by both, the second is
    # refused by the application's alone.
    statuses = []
    for _ in range(2):
        connection = client_of(router)
        connection.send(get(b"/login"))
        answered = connection.take()
        statuses.append(parse_responses(answered)[0].status if answered else "thread")
    assert statuses == ["thread", 429]
    other_host = client_of(router)
    other_host.send(b"GET /login HTTP/1.1\r\nHost: b.test\r\n\r\n")
    assert other_host.take() == b""  # b.test's own bucket: let through


def test_the_client_is_remembered_for_the_same_proxies_only() -> None:
    """Asked again with the same trusted proxies (another instance built from the
    same list included), the request answers from memory; with other proxies, the
    report is read again.
    """
    request = head(("10.0.0.1", 5000), (b"X-Forwarded-For", b"203.0.113.7"))
    assert client_address(request, TrustedProxies(["10.0.0.0/8"])) == "203.0.113.7"
    assert request.resolved_client == (("10.0.0.0/8",), "203.0.113.7")
    request.resolved_client = (("10.0.0.0/8",), "198.51.100.1")  # what memory says
    assert client_address(request, TrustedProxies(["10.0.0.0/8"])) == "198.51.100.1"
    assert client_address(request, TrustedProxies(["10.0.0.0/16"])) == "203.0.113.7"
    assert client_address(request, TrustedProxies(["192.0.2.0/24"])) == "10.0.0.1"
