"""The metrics of the proxy mounts' upstreams: what each attempt counts, and the gauges.

The attempts run through the real protocol and proxy with in-memory upstreams (the
fixtures of test_proxy.py); every scrape is read back by prometheus_client's parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.test_metrics import Ended, kinds, samples
from tests.test_proxy import (
    ACCEL,
    OK,
    TWO,
    UNAVAILABLE,
    FakeEndpoint,
    Setup,
    big_response,
    make_proxy,
    numbered,
)
from twistwsgi import cli
from twistwsgi.config import MountConfig, ServerConfig, default_options
from twistwsgi.forwarding import UpstreamAddress
from twistwsgi.http.request import Route
from twistwsgi.metrics import (
    DURATION_BUCKETS,
    RequestMetrics,
    checked,
    empty,
    merge,
    render,
    retire,
)
from twistwsgi.proxy import ACCEL_DRAIN_LIMIT, build_proxy
from twistwsgi.service import make_service
from twistwsgi.site import _accel_resolver
from twistwsgi.static import StaticHandler, StaticOptions

A = "http://10.0.0.1:9000"
B = "http://10.0.0.2:9000"
#: The labels of the mount make_proxy(routed=True) serves (a catch-all host at /).
MOUNT = (("host", "_"), ("mount", "/"))
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def labels(upstream: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*MOUNT, ("upstream", upstream), *extra)))


def counting(urls: tuple[str, ...] = (A,), **options: Any) -> tuple[Setup, RequestMetrics]:
    """A routed proxy whose ended exchanges are counted, as with metrics_listen."""
    setup = make_proxy(urls, routed=True, **options)
    setup.handler.log_upstreams = True  # (what the site sets when metrics are counted)
    return setup, RequestMetrics(setup.clock.seconds)


def scrape(setup: Setup, counted: RequestMetrics) -> dict[Any, float]:
    states = [("_", "/", *state) for state in setup.handler.upstream_states()]
    return samples(render(counted.snapshot(0, {}, states)))


# -- each attempt, through the proxy -----------------------------------------------------


def test_an_answered_request_counts_its_upstream_status_and_time() -> None:
    setup, counted = counting()
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.clock.advance(0.3)
    setup.endpoint().last.respond(OK)
    assert client.take().startswith(b"HTTP/1.1 200")
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_requests_total", labels(A)] == 1
    assert found["twistwsgi_upstream_responses_total", labels(A, ("code", "200"))] == 1
    assert not any(name == "twistwsgi_upstream_failures_total" for name, _ in found)
    name = "twistwsgi_upstream_response_duration_seconds"
    assert found[f"{name}_bucket", labels(A, ("le", "0.25"))] == 0
    assert found[f"{name}_bucket", labels(A, ("le", "0.5"))] == 1
    assert found[f"{name}_sum", labels(A)] == pytest.approx(0.3)
    assert found[f"{name}_count", labels(A)] == 1


def test_a_refused_connection_counts_as_a_failure_and_the_retry_on_its_upstream() -> None:
    setup, counted = counting(TWO)
    setup.endpoint(0).refuse = True
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.endpoint(1).last.respond(OK)
    assert client.take().startswith(b"HTTP/1.1 200")
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_requests_total", labels(A)] == 1
    assert found["twistwsgi_upstream_failures_total", labels(A, ("reason", "connect"))] == 1
    assert not any(
        name == "twistwsgi_upstream_responses_total" and ("upstream", A) in key
        for name, key in found
    )
    assert found["twistwsgi_upstream_requests_total", labels(B)] == 1
    assert found["twistwsgi_upstream_responses_total", labels(B, ("code", "200"))] == 1
    # max_fails (1) took the refusing one out: the gauge says so, the other is in.
    assert found["twistwsgi_upstream_down", labels(A)] == 1
    assert found["twistwsgi_upstream_down", labels(B)] == 0


def test_an_answer_retried_elsewhere_counts_as_a_response_not_a_failure() -> None:
    """retry_statuses: the 503 was an answer (not relayed), not a broken exchange."""
    setup, counted = counting(TWO, retry_statuses=(503,))
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.endpoint(0).last.respond(UNAVAILABLE)
    setup.endpoint(1).last.respond(OK)
    assert client.take().startswith(b"HTTP/1.1 200")
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_responses_total", labels(A, ("code", "503"))] == 1
    assert found["twistwsgi_upstream_responses_total", labels(B, ("code", "200"))] == 1
    assert not any(name == "twistwsgi_upstream_failures_total" for name, _ in found)


def test_no_head_in_time_is_a_timeout_with_its_time() -> None:
    setup, counted = counting()
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.clock.advance(30)  # response_timeout
    assert client.take().startswith(b"HTTP/1.1 504")
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_failures_total", labels(A, ("reason", "timeout"))] == 1
    name = "twistwsgi_upstream_response_duration_seconds"
    assert found[f"{name}_sum", labels(A)] == pytest.approx(30)
    assert found[f"{name}_bucket", labels(A, ("le", "+Inf"))] == 1


def test_a_response_that_breaks_off_counts_its_status_and_the_failure() -> None:
    setup, counted = counting()
    client = setup.client(response_log=counted)
    client.send(GET)
    upstream = setup.endpoint().last
    upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    upstream.close(ConnectionLost())
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_responses_total", labels(A, ("code", "200"))] == 1
    assert found["twistwsgi_upstream_failures_total", labels(A, ("reason", "closed"))] == 1


def test_a_client_that_leaves_first_leaves_a_request_without_answer_or_failure() -> None:
    setup, counted = counting()
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.clock.advance(2)
    client.protocol.connectionLost(Failure(ConnectionDone()))
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_requests_total", labels(A)] == 1
    assert not any(
        name in ("twistwsgi_upstream_responses_total", "twistwsgi_upstream_failures_total")
        for name, _ in found
    )
    assert found["twistwsgi_upstream_response_duration_seconds_sum", labels(A)] == 2


def test_the_time_ends_with_the_upstreams_response_not_the_slow_client() -> None:
    """As $upstream_response_time: a response held for a slow client took its upstream
    only until it was whole.
    """
    setup, counted = counting()
    client = setup.client(response_log=counted)
    client.send(GET)
    body = numbered(0, 30)
    setup.clock.advance(0.25)
    upstream = setup.endpoint().last
    upstream.respond(big_response(len(body)) + body[:10_000])
    client.protocol.pauseProducing()  # (the spool takes the rest)
    setup.clock.advance(0.25)
    upstream.respond(body[10_000:])
    setup.clock.advance(60)
    client.protocol.resumeProducing()
    assert client.take().endswith(body[-10:])
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_response_duration_seconds_sum", labels(A)] == 0.5


def test_the_gauges_show_requests_in_progress_and_connections_busy_or_idle() -> None:
    setup, counted = counting()
    first, second = setup.client(response_log=counted), setup.client(response_log=counted)
    first.send(GET)
    second.send(GET)
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_active_requests", labels(A)] == 2
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "busy"))] == 2
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "idle"))] == 0
    setup.endpoint().connections[0].respond(OK)
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_active_requests", labels(A)] == 1
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "busy"))] == 1
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "idle"))] == 1
    # Counted before any request ended: the upstream is there from the start.
    assert found["twistwsgi_upstream_requests_total", labels(A)] == 1


def test_an_upstream_failing_its_health_check_is_down() -> None:
    setup, counted = counting()
    assert scrape(setup, counted)["twistwsgi_upstream_down", labels(A)] == 0
    setup.handler.group.peers[0].healthy = False  # (the check's verdict; see HealthCheck)
    assert scrape(setup, counted)["twistwsgi_upstream_down", labels(A)] == 1


def test_without_the_notes_nothing_is_counted_per_upstream() -> None:
    """A proxy that does not note its attempts (no metrics, no access log asking)."""
    setup = make_proxy(routed=True)
    counted = RequestMetrics(setup.clock.seconds)
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.endpoint().last.respond(OK)
    assert counted.responses == {200: 1}
    assert counted.upstreams == {}


# -- the counts, merged and rendered ----------------------------------------------------


class Notes:
    def __init__(self, *attempts: tuple[str, int, str | None, float]) -> None:
        self._attempts = list(attempts)

    def attempts(self) -> list[tuple[str, int, str | None, float]]:
        return self._attempts


def proxied(status: int, *attempts: tuple[str, int, str | None, float]) -> Ended:
    ended = Ended(status, 0.0, 0, route=Route(b"/api", b"/x", "shop.example"))
    ended.log_notes = Notes(*attempts)  # type: ignore[attr-defined]
    return ended


SHOP = (("host", "shop.example"), ("mount", "/api"))


def at_shop(upstream: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*SHOP, ("upstream", upstream), *extra)))


def test_a_tunnel_counts_as_an_answer_but_not_as_a_duration() -> None:
    counted = RequestMetrics(lambda: 3600.0)
    counted(proxied(101, (A, 101, None, 3600.0)))
    counted(proxied(200, (A, 200, None, 0.001)))
    found = samples(render(counted.snapshot(0, {})))
    assert found["twistwsgi_upstream_responses_total", at_shop(A, ("code", "101"))] == 1
    assert found["twistwsgi_upstream_response_duration_seconds_count", at_shop(A)] == 1


def test_the_workers_sum_per_upstream_and_an_ended_one_keeps_its_counters_only() -> None:
    first, second = RequestMetrics(lambda: 0.0), RequestMetrics(lambda: 0.0)
    first(proxied(200, (A, 200, None, 0.02)))
    second(proxied(502, (A, 0, "connect", 0.001), (B, 0, "closed", 0.5)))
    # Each worker keeps its own passive health: A is out in one of the two.
    state_a = ("shop.example", "/api", A)
    one = first.snapshot(1, {}, [(*state_a, 0, 1, 1, 2)])
    two = checked(second.snapshot(1, {}, [(*state_a, 1, 0, 0, 1)]))
    assert two is not None
    found = samples(render(merge([one, two])))
    upstream = at_shop(A)
    assert found["twistwsgi_upstream_requests_total", upstream] == 2
    assert found["twistwsgi_upstream_down", upstream] == 1
    assert found["twistwsgi_upstream_active_requests", upstream] == 1
    assert found["twistwsgi_upstream_connections", at_shop(A, ("state", "idle"))] == 3
    assert found["twistwsgi_upstream_failures_total", at_shop(A, ("reason", "connect"))] == 1
    assert found["twistwsgi_upstream_failures_total", at_shop(B, ("reason", "closed"))] == 1
    assert found["twistwsgi_upstream_down", at_shop(B)] == 0  # counted, not served now
    after = samples(render(merge([retire(empty(), two), one])))
    assert after["twistwsgi_upstream_requests_total", upstream] == 2  # kept
    assert after["twistwsgi_upstream_down", upstream] == 0  # its view went with it
    assert after["twistwsgi_upstream_connections", at_shop(A, ("state", "idle"))] == 2


def test_failures_of_one_kind_in_two_workers_add_up() -> None:
    first, second = RequestMetrics(lambda: 0.0), RequestMetrics(lambda: 0.0)
    first(proxied(502, (A, 0, "connect", 0.0)))
    second(proxied(502, (A, 0, "connect", 0.0)))
    found = samples(render(merge([first.snapshot(1, {}), second.snapshot(1, {})])))
    assert found["twistwsgi_upstream_failures_total", at_shop(A, ("reason", "connect"))] == 2


def test_an_upstream_listed_twice_in_a_mount_shows_once_with_their_sum() -> None:
    """The same URL twice (twice its share of requests): one series, both pools' gauges."""
    setup, counted = counting((A, A))
    first, second = setup.client(response_log=counted), setup.client(response_log=counted)
    first.send(GET)
    second.send(GET)
    assert [peer.active for peer in setup.handler.group.peers] == [1, 1]
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_active_requests", labels(A)] == 2
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "busy"))] == 2


def test_the_families_are_written_only_with_upstreams_to_show() -> None:
    nothing = render(RequestMetrics(lambda: 0.0).snapshot(0, {}))
    assert b"twistwsgi_upstream" not in nothing
    counted = RequestMetrics(lambda: 0.0)
    counted(proxied(200, (A, 200, None, 0.0)))
    text = render(counted.snapshot(0, {}))
    assert {name: kind for name, kind in kinds(text).items() if "upstream" in name} == {
        "twistwsgi_upstream_requests": "counter",
        "twistwsgi_upstream_responses": "counter",
        "twistwsgi_upstream_failures": "counter",
        "twistwsgi_upstream_response_duration_seconds": "histogram",
        "twistwsgi_upstream_down": "gauge",
        "twistwsgi_upstream_active_requests": "gauge",
        "twistwsgi_upstream_connections": "gauge",
    }


def upstream_report() -> dict[str, Any]:
    counted = RequestMetrics(lambda: 0.0)
    counted(proxied(200, (A, 200, None, 0.0), (B, 0, "timeout", 1.0)))
    return counted.snapshot(1, {}, [("shop.example", "/api", A, 0, 1, 1, 0)])


def spoil_upstream(**changes: Any) -> Any:
    def spoil(report: dict[str, Any]) -> dict[str, Any]:
        first, *rest = report["upstreams"]
        entry = {key: value for key, value in {**first, **changes}.items() if value is not ...}
        return {**report, "upstreams": [entry, *rest]}

    return spoil


@pytest.mark.parametrize(
    "spoil",
    [
        lambda report: {**report, "upstreams": {}},
        lambda report: {**report, "upstreams": ["a"]},
        spoil_upstream(upstream=None),
        spoil_upstream(host=...),
        spoil_upstream(requests=-1),
        spoil_upstream(requests=...),
        spoil_upstream(down=True),
        spoil_upstream(idle=1.0),
        spoil_upstream(failures=[]),
        spoil_upstream(failures={"timeout": -1}),
        spoil_upstream(failures={3: 1}),
        spoil_upstream(responses={"2xx": 1}),
        spoil_upstream(durations=[0]),
        spoil_upstream(duration_sum=float("inf")),
        spoil_upstream(duration_sum=10**400),  # (no float: the sums would raise)
        spoil_upstream(responses={"\u00b2\u00b3\u2074": 1}),  # (digits, not ASCII ones)
    ],
)
def test_an_upstream_entry_of_another_shape_is_refused(spoil: Any) -> None:
    assert checked(upstream_report()) is not None
    assert checked(spoil(upstream_report())) is None


def test_a_report_from_before_the_upstreams_counts_with_none() -> None:
    report = {key: value for key, value in upstream_report().items() if key != "upstreams"}
    assert checked(report) is not None
    assert merge([report])["upstreams"] == []


def test_each_attempt_lands_in_one_bucket() -> None:
    counted = RequestMetrics(lambda: 0.0)
    for took in (0.0, *DURATION_BUCKETS, 11.0):
        counted(proxied(200, (A, 200, None, took)))
    (counts,) = counted.upstreams.values()
    assert counts.durations == [2] + [1] * (len(DURATION_BUCKETS) - 1) + [1]


# -- through the service ----------------------------------------------------------------


def proxy_service(
    config: ServerConfig, endpoints: dict[str, FakeEndpoint], reactor: MemoryReactorClock
) -> Any:
    """make_service with proxy mounts connecting to fake upstreams."""

    def endpoint_factory(address: UpstreamAddress) -> FakeEndpoint:
        endpoint = endpoints.setdefault(address.url, FakeEndpoint(address))
        endpoint.clock = reactor
        return endpoint

    def build(mount: MountConfig, server: ServerConfig) -> Any:
        return build_proxy(mount, server, reactor=reactor, endpoint_factory=endpoint_factory)

    service = make_service(config, reactor=reactor, endpoints=[], builders={"proxy": build})
    service.startService()
    return service


def shop(directory: Path, *urls: str, server: str = "") -> ServerConfig:
    """A configuration proxying shop.example/api to ``urls``."""
    site = directory / "site.toml"
    site.write_text(
        f'[server]\nthreads = 0\n{server}\n[[host]]\nnames = ["shop.example"]\n'
        f'[[host.mount]]\npath = "/api"\nproxy = {list(urls)!r}\n'.replace("'", '"')
    )
    return cli.load_config({"config": str(site)})


def test_a_served_proxy_counts_for_the_metrics_and_a_reload_keeps_the_counts(
    tmp_path: Path,
) -> None:
    reactor = MemoryReactorClock()
    endpoints: dict[str, FakeEndpoint] = {}
    metrics = 'metrics_listen = "tcp:9090"'
    service = proxy_service(shop(tmp_path, A, B, server=metrics), endpoints, reactor)
    protocol = service.factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    endpoints[A].last.respond(OK)
    assert transport.value().startswith(b"HTTP/1.1 200")
    found = samples(render(service.metrics_snapshot()))
    assert found["twistwsgi_upstream_requests_total", at_shop(A)] == 1
    assert found["twistwsgi_upstream_connections", at_shop(A, ("state", "idle"))] == 1
    assert found["twistwsgi_upstream_requests_total", at_shop(B)] == 0
    # A reload without A: its counts stay (counters never go back), its gauges end.
    service.reload(shop(tmp_path, B, server=metrics))
    found = samples(render(service.metrics_snapshot()))
    assert found["twistwsgi_upstream_requests_total", at_shop(A)] == 1
    assert found["twistwsgi_upstream_connections", at_shop(A, ("state", "idle"))] == 0
    assert found["twistwsgi_upstream_down", at_shop(B)] == 0
    service.stopService()


def test_without_metrics_a_proxy_does_not_note_its_attempts(tmp_path: Path) -> None:
    service = proxy_service(shop(tmp_path, A), {}, MemoryReactorClock())
    [(_, _, handler)] = service._router.table.proxied
    assert handler.log_upstreams is False
    with pytest.raises(ValueError, match="counts no metrics"):
        service.metrics_snapshot()


# -- after review ---------------------------------------------------------------------


@pytest.mark.parametrize("body_length", [20, ACCEL_DRAIN_LIMIT * 4])
def test_after_an_x_accel_redirect_the_time_is_the_upstreams_not_the_files(
    tmp_path: Path, body_length: int
) -> None:
    """The upstream's part ends with its body read and dropped (or its connection
    dropped, past ACCEL_DRAIN_LIMIT), however long the client takes over the file.
    """
    (tmp_path / "f").write_bytes(bytes(2_000_000))
    setup, counted = counting()
    options = {**default_options("static"), "internal": True}
    static = StaticHandler(
        StaticOptions.from_mount(str(tmp_path), options), now=setup.clock.seconds
    )
    mount = MountConfig("/protected", "static", str(tmp_path), options, "test")
    setup.handler.accel = _accel_resolver([(mount, static)])
    client = setup.client(response_log=counted)
    client.send(GET)
    setup.clock.advance(0.1)
    head = ACCEL.replace(b"report.pdf", b"f").replace(b"Length: 20", b"Length: %d" % body_length)
    setup.endpoint().last.respond(head + bytes(min(body_length, ACCEL_DRAIN_LIMIT + 1)))
    while not counted.responses:  # a slow client reads the file
        setup.clock.advance(0.1)
        client.take()
        producer = client.transport.producer
        assert producer is not None
        producer.resumeProducing()
    assert scrape(setup, counted)[
        "twistwsgi_upstream_response_duration_seconds_sum", labels(A)
    ] == pytest.approx(0.1)


def test_a_health_checks_connection_is_neither_busy_nor_idle() -> None:
    setup, counted = counting(TWO, health_check="/healthz", health_interval=5.0)
    setup.clock.advance(0)  # the checks connect and ask
    assert setup.endpoint().connections  # (one is open)
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "busy"))] == 0
    assert found["twistwsgi_upstream_connections", labels(A, ("state", "idle"))] == 0


def test_a_url_listed_twice_is_down_once() -> None:
    """Down is 1 in one process (the two pools are one upstream to the operator)."""
    setup, counted = counting((A, A))
    for peer in setup.handler.group.peers:  # (one fake endpoint each)
        peer.target._endpoint.refuse = True  # type: ignore[attr-defined]
    setup.client(response_log=counted).send(GET)
    assert all(not setup.handler.balancer.usable(peer, 0.0) for peer in setup.handler.group.peers)
    assert scrape(setup, counted)["twistwsgi_upstream_down", labels(A)] == 1


def test_an_ended_workers_upstream_with_nothing_counted_is_not_kept() -> None:
    """As in one process: a reload's removed upstream shows only for what it counted."""
    unused = ("_", "/", "http://old:1", 0, 0, 0, 1)
    last = RequestMetrics(lambda: 0.0).snapshot(1, {}, [unused])
    assert b"http://old:1" not in render(merge([retire(empty(), last), empty()]))
    used = RequestMetrics(lambda: 0.0)
    used(proxied(200, ("http://old:1", 200, None, 0.0)))
    kept = retire(empty(), used.snapshot(1, {}, [unused]))
    assert [entry["upstream"] for entry in kept["upstreams"]] == ["http://old:1"]


def test_an_upstream_marked_down_shows_as_down() -> None:
    setup, counted = counting(TWO, down=(1,))
    found = scrape(setup, counted)
    assert found["twistwsgi_upstream_down", labels(A)] == 0
    assert found["twistwsgi_upstream_down", labels(B)] == 1
