"""Virtual hosts and mounts: host normalisation and matching, dot-segments, prefixes,
and the Router on the wire.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from twistwsgi.http.exchange import Exchange
from twistwsgi.http.rules import compile_host_pattern
from twistwsgi.routing import (
    HOST_PATTERN_TIME_LIMIT,
    LONGEST_HOST_NAME,
    HostTable,
    Mount,
    MountTable,
    Router,
    RoutingTable,
    match_prefix,
    merge_slashes,
    normalize_host,
    normalize_name,
    path_below,
    remove_dot_segments,
)
from twistwsgi.testing import connect, parse_responses

# -- host names -------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(domains, st.integers(0, 65535), st.booleans(), st.booleans())
def test_normalize_host_ignores_case_port_and_trailing_dot(
    name: str, port: int, with_port: bool, upper: bool
) -> None:
    """Case, a port and a trailing dot do not change the normalised name."""
    written = (name.upper() if upper else name) + "."
    if with_port:
        written += f":{port}"
    assert normalize_host(written.encode()) == name


def ipv6_spellings(address: ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    """Ways to write one IPv6 address: compressed, partly compressed (0:0::1) or not
    at all, with or without leading zeros, in any case, and the dotted IPv4 tail of
    a mapped address.
    """
    groups = [group.lstrip("0") or "0" for group in address.exploded.split(":")]
    forms = [address.compressed, address.exploded, ":".join(groups)]
    runs = [
        (start, length)
        for start in range(8)
        for length in range(2, 9 - start)
        if groups[start : start + length] == ["0"] * length
    ]
    if runs:
        # Compress all but the first zero of the longest run: [0:0::1] for [::1].
        start, length = max(runs, key=lambda run: run[1])
        head = ":".join(groups[: start + 1])
        forms.append(head + "::" + ":".join(groups[start + length :]))
    if address.ipv4_mapped is not None:
        forms.append(f"::ffff:{address.ipv4_mapped}")
    return st.sampled_from(forms).flatmap(
        lambda form: st.sampled_from([form, form.upper(), form.swapcase()])
    )


ipv6_written = (
    st.ip_addresses(v=6)
    .map(lambda address: ipaddress.IPv6Address(int(address)))  # typed as either version
    .flatmap(lambda address: st.tuples(st.just(address), ipv6_spellings(address)))
)


@given(ipv6_written, st.integers(1, 65535), st.booleans())
def test_normalize_host_compresses_ipv6_literals(
    written: tuple[ipaddress.IPv6Address, str], port: int, with_port: bool
) -> None:
    """Every spelling of an IPv6 address in brackets, with or without a port,
    normalises to the compressed lower-case form, which is also what a configured
    name in any spelling normalises to: Host: [0:0::1] finds names = ["[::1]"].
    """
    address, form = written
    authority = f"[{form}]" + (f":{port}" if with_port else "")
    expected = f"[{address.compressed}]"
    assert normalize_host(authority.encode()) == expected
    assert normalize_name(f" [{form}] ") == expected
    hosts = HostTable([([f"[{form}]"], "six")], default=None)
    assert hosts.lookup(normalize_host(f"[{address.exploded}]:{port}".encode())) == "six"


@pytest.mark.parametrize(
    "authority",
    [
        b"[fe80::1%25eth0]",
        b"[fe80::1%eth0]:80",
        b"[::g]",
        b"[1:2:3]",
        b"[127.0.0.1]",
        b"[v1.future]",
        b"[]",
    ],
)
def test_ipv6_literals_that_are_not_addresses_normalise_to_none(authority: bytes) -> None:
    """A bracketed literal that is not an IPv6 address, or carries a zone identifier
    (an interface of the client's own machine), matches no name.
    """
    assert normalize_host(authority) is None


@pytest.mark.parametrize(
    ("authority", "name"),
    [(b"example.com:", "example.com"), (b"Example.COM.:", "example.com"), (b"[::1]:", "[::1]")],
)
def test_an_empty_port_is_no_port(authority: bytes, name: str) -> None:
    """RFC 3986 3.2.3 and 6.2.3: ``host:`` is the same authority as ``host``."""
    assert normalize_host(authority) == name


@pytest.mark.parametrize(
    "authority", [b"", b"a:b", b"[::1", b"[::1]x", b"[::1]:x", b"caf\xc3\xa9.example"]
)
def test_malformed_authorities_normalise_to_none(authority: bytes) -> None:
    """Empty or malformed authorities match no name (only the default host)."""
    assert normalize_host(authority) is None


def test_normalize_name_of_configured_names() -> None:
    """Configured names are compared lower-case, without a trailing dot; IPv6
    literals in their compressed form.
    """
    assert normalize_name(" WWW.Example.COM. ") == "www.example.com"
    assert normalize_name("*.Example.org") == "*.example.org"
    assert normalize_name("[0:0:0:0:0:0:0:1]") == "[::1]"
    assert normalize_name("[2001:DB8:0::7]") == "[2001:db8::7]"


def table() -> HostTable[str]:
    return HostTable(
        [
            (["example.com", "www.example.com"], "shop"),
            (["*.example.org"], "org"),
            (["*.api.example.org"], "api"),
            (["[::1]"], "local6"),
        ],
        default=None,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", "shop"),
        ("www.example.com", "shop"),
        ("a.example.org", "org"),
        ("deep.a.example.org", "org"),
        ("v1.api.example.org", "api"),  # the longest wildcard wins
        ("api.example.org", "org"),
        ("example.org", None),  # *.example.org needs a label before the suffix
        ("[::1]", "local6"),
        (normalize_host(b"[0:0::1]:8443"), "local6"),
        ("other.net", None),
        (None, None),
    ],
)
def test_host_lookup_exact_then_longest_wildcard(name: str | None, expected: str | None) -> None:
    """Exact names first, then the longest wildcard suffix, then the default."""
    assert table().lookup(name) == expected


def test_default_host_catches_unknown_names() -> None:
    """Unknown names (and no name at all) land on the default."""
    hosts = HostTable([(["a.example"], "a")], default="fallback")
    assert hosts.lookup("b.example") == "fallback"
    assert hosts.lookup(None) == "fallback"
    assert hosts.lookup("a.example") == "a"


_host_names = st.sampled_from(["a.example", "b.example", "[::1]", "x", "a.example.", ""])


@given(
    st.lists(_host_names.filter(bool), unique=True, max_size=4),
    st.one_of(st.none(), _host_names, domains),
    st.sampled_from([None, "fallback"]),
)
def test_a_table_of_exact_names_answers_as_the_general_lookup(
    names: list[str], name: str | None, default: str | None
) -> None:
    """A table without wildcards or patterns binds its one-look-up method (ea77ba6):
    every name, none included, finds what the general lookup finds.
    """
    listed = [n for n in names if not n.endswith(".") or n[:-1] not in names]
    hosts = HostTable([([n], n.upper()) for n in listed], default)
    assert hosts.lookup.__func__ is HostTable._lookup_exact  # type: ignore[attr-defined]
    assert hosts.lookup(name) == HostTable.lookup(hosts, name)


def test_exact_name_beats_wildcard() -> None:
    """An exact name wins over a wildcard that also matches."""
    hosts = HostTable([(["*.example.org"], "wild"), (["www.example.org"], "exact")], None)
    assert hosts.lookup("www.example.org") == "exact"


@pytest.mark.parametrize(
    "names", [["a.example", "A.Example."], ["*.x.org", "*.X.org"]], ids=["exact", "wildcard"]
)
def test_duplicate_names_are_refused(names: list[str]) -> None:
    """The same name twice (whatever its case) is a configuration error."""
    with pytest.raises(ValueError, match="listed twice"):
        HostTable([([names[0]], 1), ([names[1]], 2)], None)


def nginx_table(**options: Any) -> HostTable[str]:
    return HostTable(
        [
            (["shop.example.com"], "exact"),
            (["*.example.com"], "front"),
            (["*.eu.example.com"], "front-eu"),
            (["mail.*"], "end"),
            (["mail.example.*"], "end-long"),
            ([r"~^www\d*\.example\.net$"], "first-regex"),
            ([r"~example\.net$"], "second-regex"),
            ([".example.org"], "both"),
        ],
        default="default",
        compile_pattern=compile_host_pattern,
        **options,
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"shop.example.com", "exact"),
        (b"a.example.com", "front"),
        (b"a.eu.example.com", "front-eu"),  # the longest wildcard in front
        (b"mail.example.com", "front"),  # a wildcard in front before one at the end
        (b"mail.example.net", "end-long"),  # the longest wildcard at the end
        (b"mail.test", "end"),
        (b"mail", "default"),  # mail.* needs something after the dot
        (b"email.test", "default"),
        (b"mail.www.example.net", "end"),  # a wildcard before a regular expression
        (b"WWW12.Example.NET:8080", "first-regex"),  # matched in the normalised name
        (b"www.example.net.", "first-regex"),
        (b"api.example.net", "second-regex"),  # the first that matches, in order
        (b"example.org", "both"),  # .example.org: the name and *.example.org
        (b"a.b.example.org", "both"),
        (b"xexample.org", "default"),
        (b"other.test", "default"),
    ],
)
def test_host_names_are_looked_up_in_nginxs_server_name_order(host: bytes, expected: str) -> None:
    """Exact, the longest wildcard in front, the longest at the end, the first
    regular expression in the order given, then the default (nginx's order).
    """
    assert nginx_table().lookup(normalize_host(host)) == expected


def test_a_short_form_name_claims_both_of_its_names() -> None:
    for other in ["example.org", "*.example.org", "Example.Org."]:
        with pytest.raises(ValueError, match=r"'\.example\.org' is listed twice"):
            HostTable([([other], 1), ([".example.org"], 2)], None)
    assert (
        HostTable([(["www.example.org"], 1), ([".example.org"], 2)], None).lookup("www.example.org")
        == 1
    )


def test_regular_expression_names_keep_their_case_and_need_a_compiler() -> None:
    r"""\D is not \d: the pattern is not lower-cased; the name it is searched in is.
    A pattern with a capital letter matches without case, as nginx compiles one.
    """
    hosts = HostTable([([r"~^\d+$"], "digits")], None, compile_pattern=compile_host_pattern)
    assert hosts.lookup("123") == "digits"
    assert hosts.lookup("a1") is None
    upper = HostTable(
        [([r"~^(?<user>[A-Z]+)\.Example\.org$"], "users")],
        None,
        compile_pattern=compile_host_pattern,
    )
    assert upper.lookup(normalize_host(b"Ann.example.ORG")) == "users"
    lower = HostTable([([r"~^www\."], "www")], None, compile_pattern=compile_host_pattern)
    assert lower.lookup(normalize_host(b"WWW.example.org")) == "www"
    with pytest.raises(ValueError, match="no regular expressions here"):
        HostTable([(["~^a$"], 1)], None)


class CountedPattern:
    """A compiled pattern that counts its searches, and may time out or match."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.searched: list[tuple[str, float]] = []

    def search(self, name: str, timeout: float) -> object:
        self.searched.append((name, timeout))
        if self.outcome == "timeout":
            raise TimeoutError("regex timed out")
        return object() if self.outcome == "match" else None


def test_a_name_is_searched_once_and_only_up_to_a_dns_names_length() -> None:
    patterns = {"~slow": CountedPattern("miss"), "~hit": CountedPattern("match")}
    hosts = HostTable(
        [(["~slow"], "slow"), (["~hit"], "hit")],
        "default",
        compile_pattern=lambda pattern: patterns["~" + pattern],
    )
    assert hosts.lookup("a.test") == "hit"
    assert hosts.lookup("a.test") == "hit"
    assert [name for name, _ in patterns["~slow"].searched] == ["a.test"]
    assert [name for name, _ in patterns["~hit"].searched] == ["a.test"]
    longest = "a" * LONGEST_HOST_NAME
    assert hosts.lookup(longest) == "hit"
    assert hosts.lookup(longest + "a") == "default"
    assert len(patterns["~hit"].searched) == 2


def test_patterns_that_time_out_match_nothing_and_say_so() -> None:
    """The patterns of one table share HOST_PATTERN_TIME_LIMIT per name: past it the
    default answers (nginx answers 500 when PCRE gives up), and the log says which.
    A timeout is not remembered: the machine may only have been busy.
    """
    now = [100.0]
    slow, later = CountedPattern("timeout"), CountedPattern("match")
    compiled = {"slow": slow, "later": later}
    said: list[tuple[str, str]] = []
    hosts = HostTable(
        [(["~slow"], "slow"), (["~later"], "later")],
        "default",
        compile_pattern=compiled.__getitem__,
        timed_out=lambda pattern, name: said.append((pattern, name)),
        clock=lambda: now[0],
    )
    assert hosts.lookup("a.test") == "default"
    assert said == [("~slow", "a.test")]
    # Searched once more before it counts (the process, not the pattern, may
    # have taken the time), with the whole limit each time.
    assert len(slow.searched) == 2
    for name, timeout in slow.searched:
        assert name == "a.test"
        assert abs(timeout - HOST_PATTERN_TIME_LIMIT) < 1e-9
    assert later.searched == []
    slow.outcome = "miss"
    assert hosts.lookup("a.test") == "later"
    assert said == [("~slow", "a.test")]


def test_a_name_whose_search_ran_out_of_time_once_is_searched_again() -> None:
    """A pause of the process (the reactor waiting for the GIL, a collection) is not
    taken for a backtracking pattern: the name finds its host, nothing is logged.
    """

    class StallsOnce(CountedPattern):
        def search(self, name: str, timeout: float) -> object:
            try:
                return super().search(name, timeout)  # runs out of time the first time
            finally:
                self.outcome = "match"

    stalls = StallsOnce("timeout")
    said: list[tuple[str, str]] = []
    hosts = HostTable(
        [(["~^api\\."], "api")],
        "default",
        compile_pattern=lambda _: stalls,
        timed_out=lambda pattern, name: said.append((pattern, name)),
    )
    assert hosts.lookup("api.test") == "api"
    assert len(stalls.searched) == 2 and said == []


def test_the_patterns_of_a_table_share_one_time_limit() -> None:
    """Each pattern gets what the ones before it left, and none once it is spent."""
    now = [0.0]

    class Takes:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds
            self.given: list[float] = []

        def search(self, name: str, timeout: float) -> object:
            self.given.append(timeout)
            now[0] += min(self.seconds, timeout)
            if self.seconds > timeout:
                raise TimeoutError("regex timed out")
            return None

    patterns = [Takes(0.004), Takes(0.006), Takes(0.001)]
    said: list[tuple[str, str]] = []
    hosts = HostTable(
        [([f"~p{index}"], index) for index in range(3)],
        None,
        compile_pattern=lambda pattern: patterns[int(pattern[1:])],
        timed_out=lambda pattern, name: said.append((pattern, name)),
        clock=lambda: now[0],
    )
    assert hosts.lookup("x.test") is None
    # Twice over: once more before it counts, with a fresh limit.
    assert now[0] == pytest.approx(2 * HOST_PATTERN_TIME_LIMIT)
    assert patterns[0].given == [pytest.approx(0.01)] * 2
    assert patterns[1].given == [pytest.approx(0.006)] * 2
    assert patterns[2].given == []  # (nothing left for it: not even a moment)
    assert said == [("~p2", "x.test")]


def test_the_memory_of_names_is_bounded() -> None:
    """At most _PATTERN_MEMORY names, and none longer than a DNS name."""
    pattern = CountedPattern("miss")
    hosts = HostTable([(["~p"], 1)], 0, compile_pattern=lambda _: pattern)
    for index in range(2000):
        hosts.lookup(f"n{index}.test")
    assert 0 < len(hosts._found) <= 1024
    hosts.lookup("a" * 8000)
    assert "a" * 8000 not in hosts._found


def test_a_pattern_that_backtracks_is_stopped() -> None:
    """A real one: without the limit this search would take years."""
    said: list[tuple[str, str]] = []
    hosts = HostTable(
        [(["~^(a|aa)+$"], "slow")],
        "default",
        compile_pattern=compile_host_pattern,
        timed_out=lambda pattern, name: said.append((pattern, name)),
    )
    name = "a" * 100 + "b"
    assert hosts.lookup(name) == "default"
    assert said == [("~^(a|aa)+$", name)]


# -- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/a/b", b"/a/b"),
        (b"/a/./b", b"/a/b"),
        (b"/a/../b", b"/b"),
        (b"/a/b/..", b"/a/"),
        (b"/a/b/.", b"/a/b/"),
        (b"/static/../app/x", b"/app/x"),
        (b"//a", b"//a"),
        (b"/..", None),
        (b"/a/../../etc/passwd", None),
        (b"/.../x", b"/.../x"),
        (b"/a.b/c", b"/a.b/c"),
    ],
)
def test_remove_dot_segments(path: bytes, expected: bytes | None) -> None:
    """Dot-segments are resolved (RFC 3986 5.2.4); climbing above / is refused."""
    assert remove_dot_segments(path) == expected


segments = st.lists(
    st.sampled_from([b"a", b"b", b".", b"..", b"", b".x", b"x."]), min_size=1, max_size=8
)


@given(segments)
def test_normalised_paths_have_no_dot_segments_and_are_stable(parts: list[bytes]) -> None:
    """The result has no . or .. segment and normalising it again changes nothing."""
    result = remove_dot_segments(b"/" + b"/".join(parts))
    if result is None:
        return
    assert result.startswith(b"/")
    assert b"." not in result.split(b"/") and b".." not in result.split(b"/")
    assert remove_dot_segments(result) == result


@pytest.mark.parametrize(
    ("path", "prefix", "matches"),
    [
        (b"/static", b"/static", True),
        (b"/static/", b"/static", True),
        (b"/static/app.css", b"/static", True),
        (b"/staticfoo", b"/static", False),
        (b"/stat", b"/static", False),
        (b"/anything", b"", True),
        (b"", b"", True),
    ],
)
def test_prefix_matches_on_segment_boundaries(path: bytes, prefix: bytes, matches: bool) -> None:
    """/static matches /static and below, never /staticfoo."""
    assert match_prefix(path, prefix) is matches


def test_longest_mount_prefix_wins() -> None:
    """The most specific mount answers."""
    mounts = MountTable([Mount(b"", "root"), Mount(b"/api", "api"), Mount(b"/api/v2", "v2")])
    assert mounts.lookup(b"/api/v2/users") is not None
    assert mounts.lookup(b"/api/v2/users").target == "v2"  # type: ignore[union-attr]
    assert mounts.lookup(b"/api/v1").target == "api"  # type: ignore[union-attr]
    assert mounts.lookup(b"/api2").target == "root"  # type: ignore[union-attr]


def test_mount_table_without_root_misses() -> None:
    """Without a / mount, paths outside every prefix match nothing."""
    assert MountTable([Mount(b"/api", "api")]).lookup(b"/other") is None


def test_two_mounts_at_one_path_are_refused() -> None:
    """Two mounts with the same prefix are a configuration error."""
    with pytest.raises(ValueError, match="two mounts at '/x'"):
        MountTable([Mount(b"/x", 1), Mount(b"/x", 2)])


# -- the router on the wire ----------------------------------------------------------------


class Recorder:
    """Answers with its name and the route it was given."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self, exchange: Exchange) -> None:
        route = exchange.route
        assert route is not None
        body = f"{self.name} {route.script_name.decode()}|{route.path_info.decode()}|{route.host}"
        exchange.start_response(200, [(b"Content-Type", b"text/plain")])
        exchange.finish(body.encode())


def router(default: bool) -> Router:
    shop = MountTable(
        [Mount(b"", Recorder("shop")), Mount(b"/static", Recorder("files"))],
        name="example.com",
    )
    org = MountTable([Mount(b"/api", Recorder("api"))], name="*.example.org")
    hosts: HostTable[Any] = HostTable(
        [(["example.com", "www.example.com"], shop), (["*.example.org"], org)],
        default=org if default else None,
    )
    return Router(RoutingTable(hosts))


def ask(handler: Any, host: bytes, path: bytes, transport: Any = None) -> tuple[int, bytes]:
    connection = connect(handler, transport=transport)
    connection.send(b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    [response] = parse_responses(connection.take())
    return response.status, response.body


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        (b"example.com", b"/cart", b"shop |/cart|example.com"),
        (b"WWW.Example.com:8080", b"/", b"shop |/|example.com"),
        (b"example.com", b"/static/app.css", b"files /static|/app.css|example.com"),
        (b"example.com", b"/staticfoo", b"shop |/staticfoo|example.com"),
        (b"example.com", b"/static/../cart", b"shop |/cart|example.com"),
        (b"example.com", b"/static/%2e%2e/cart", b"shop |/cart|example.com"),
        (b"a.example.org", b"/api/v1", b"api /api|/v1|*.example.org"),
    ],
)
def test_router_picks_host_and_mount(host: bytes, path: bytes, expected: bytes) -> None:
    """Host first, then the longest mount on the normalised path; the handler gets
    SCRIPT_NAME and PATH_INFO split at the mount.
    """
    assert ask(router(default=False), host, path) == (200, expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"//static/app.css", b"files /static|/app.css|example.com"),
        (b"/static//app.css", b"files /static|//app.css|example.com"),
        (b"///static///", b"files /static|///|example.com"),
        (b"//cart", b"shop |//cart|example.com"),
        (b"//", b"shop |//|example.com"),
    ],
)
def test_runs_of_slashes_count_as_one_when_choosing_the_mount(path: bytes, expected: bytes) -> None:
    """``//static/app.css`` is under ``/static``, as nginx's merge_slashes has it: a
    mount cannot be stepped around with an extra slash (a 403 mount in front of a
    proxied ``/`` would be). SCRIPT_NAME is the mount's path; the slashes below it
    stay in PATH_INFO for the application.
    """
    assert ask(router(default=False), b"example.com", path) == (200, expected)


segments_with_empty = st.lists(st.sampled_from([b"", b"a", b"b", b"ab"]), max_size=6)


@given(segments_with_empty, st.lists(st.sampled_from([b"a", b"b", b"ab"]), max_size=3))
def test_a_path_is_split_at_its_mount_as_its_merged_form_is(
    parts: list[bytes], prefix_parts: list[bytes]
) -> None:
    """Matching on the path with merged slashes, and cutting the raw path after the
    prefix's segments, agree with cutting the merged path at the prefix.
    """
    path = b"/" + b"/".join(parts)
    prefix = b"".join(b"/" + part for part in prefix_parts)
    merged = merge_slashes(path)
    assert b"//" not in merged
    if match_prefix(merged, prefix):
        rest = path_below(path, prefix)
        assert path.endswith(rest)
        assert merge_slashes(rest or b"/") == (merged[len(prefix) :] or b"/")


@given(
    st.lists(st.lists(st.sampled_from([b"a", b"b", b"ab"]), max_size=3), max_size=4),
    segments_with_empty,
)
# The path its prefix itself, one a prefix of its first segment, and under the root.
@example([[b"a"]], [b"a"])
@example([[b"a"]], [b"ab"])
@example([[], [b"a", b"b"]], [b"a", b"", b"b"])
def test_a_mount_table_finds_the_longest_prefix_that_match_prefix_accepts(
    prefixes: list[list[bytes]], parts: list[bytes]
) -> None:
    """MountTable.lookup tests each prefix in place (ea77ba6): it finds the longest
    prefix match_prefix accepts for the path with its slashes merged, as before.
    """
    mounts = {b"".join(b"/" + part for part in prefix) for prefix in prefixes}
    table = MountTable([Mount(prefix, prefix) for prefix in mounts])
    path = b"/" + b"/".join(parts)
    accepted = [prefix for prefix in mounts if match_prefix(merge_slashes(path), prefix)]
    found = table.lookup(path)
    assert (found.target if found else None) == max(accepted, key=len, default=None)


def test_unknown_host_without_default_is_404() -> None:
    """No match and no default: 404."""
    assert ask(router(default=False), b"other.net", b"/")[0] == 404


def test_unknown_host_over_tls_is_421() -> None:
    """Over TLS, a name this server does not serve is 421 Misdirected Request."""
    from twisted.internet.interfaces import ISSLTransport
    from twisted.internet.testing import StringTransport
    from zope.interface import alsoProvides

    transport = StringTransport()
    alsoProvides(transport, ISSLTransport)
    assert ask(router(default=False), b"other.net", b"/", transport)[0] == 421


def test_unknown_host_lands_on_the_default() -> None:
    """With a default host, unknown names are served by it."""
    assert ask(router(default=True), b"other.net", b"/api/x") == (
        200,
        b"api /api|/x|*.example.org",
    )


def test_path_outside_every_mount_is_404() -> None:
    """A host without a mount for the path answers 404."""
    assert ask(router(default=False), b"a.example.org", b"/other")[0] == 404


def test_path_above_the_root_is_404() -> None:
    """A path that climbs above / names nothing: 404, as for any missing name."""
    assert ask(router(default=False), b"example.com", b"/a/../../x")[0] == 404


def test_replace_swaps_the_table_for_new_requests() -> None:
    """replace() routes later requests with the new table."""
    routes = router(default=False)
    assert ask(routes, b"other.net", b"/api/x")[0] == 404
    routes.replace(router(default=True).table)
    assert ask(routes, b"other.net", b"/api/x")[0] == 200
