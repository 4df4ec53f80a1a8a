"""A mount's allow and deny: the client address they match, and the 403 in front of
every kind of mount (in memory through the routing table a configuration builds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock

from tests.test_redirect import ask
from twistwsgi import cli
from twistwsgi.access import AccessRules, RateLimit, client_address
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.request import RequestHead
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder
from twistwsgi.testing import connect, parse_responses


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
        ('rate_limit = "0.5r/m"', "rate_limit: the smallest rate is 1r/m, got '0.5r/m'"),
    ],
)
def test_rate_settings_that_do_not_hold(tmp_path: Path, keys: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f'[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n{keys}\n')
    assert str(raised.value) == f"site.toml: host[0].mount[0].{problem}"


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
