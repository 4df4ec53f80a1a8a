"""The metrics endpoint (metrics_listen): what is counted, and the text a scraper reads.

Every scrape is parsed by prometheus_client's own parser of the text format. The
counting runs through the real protocol in memory; the workers' sum is in
test_workers.py.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from tests import apps
from twistwsgi import cli
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.http.protocol import HTTPFactory
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
from twistwsgi.service import ListenError, ServerService, _response_log, make_service
from twistwsgi.testing import connect, parse_responses


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``text`` by name and labels, read by the reference parser."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def kinds(text: bytes) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text.decode())}


class Ended:
    def __init__(
        self,
        status: int,
        started: float,
        body_sent: int,
        client_closed: bool = False,
        route: Route | None = None,
    ) -> None:
        self.status = status
        self.started = started
        self.body_sent = body_sent
        self.client_closed = client_closed
        self.route = route


# -- counting and the text -------------------------------------------------------------


def test_the_text_reads_back_as_what_was_counted() -> None:
    now = [100.0]
    counted = RequestMetrics(lambda: now[0])
    for status, took, size in [(200, 0.002, 13), (200, 0.3, 7), (404, 0.005, 10), (499, 11, 0)]:
        counted(Ended(status, now[0] - took, size))
    gauges = {"connections_open": 3, "threads": 10, "threads_busy": 2, "thread_queue": 1}
    text = render(counted.snapshot(7, gauges), workers=2)
    found = samples(text)
    assert found["twistwsgi_connections_accepted_total", ()] == 7
    assert found["twistwsgi_connections_open", ()] == 3
    assert found["twistwsgi_responses_total", (("code", "200"),)] == 2
    assert found["twistwsgi_responses_total", (("code", "404"),)] == 1
    assert found["twistwsgi_responses_total", (("code", "499"),)] == 1
    assert found["twistwsgi_response_body_bytes_total", ()] == 30
    assert found["twistwsgi_threads", ()] == 10
    assert found["twistwsgi_threads_busy", ()] == 2
    assert found["twistwsgi_thread_queue", ()] == 1
    assert found["twistwsgi_workers", ()] == 2
    name = "twistwsgi_request_duration_seconds"
    # An observation on a bound counts in that bucket (le: less or equal).
    assert found[f"{name}_bucket", (("le", "0.005"),)] == 2
    assert found[f"{name}_bucket", (("le", "0.25"),)] == 2
    assert found[f"{name}_bucket", (("le", "0.5"),)] == 3
    assert found[f"{name}_bucket", (("le", "10.0"),)] == 3
    assert found[f"{name}_bucket", (("le", "1.0"),)] == 3
    assert found[f"{name}_bucket", (("le", "+Inf"),)] == 4
    assert found[f"{name}_count", ()] == 4
    assert found[f"{name}_sum", ()] == pytest.approx(0.002 + 0.3 + 0.005 + 11)
    assert kinds(text) == {
        "twistwsgi_connections_accepted": "counter",
        "twistwsgi_connections_open": "gauge",
        "twistwsgi_responses": "counter",
        "twistwsgi_request_duration_seconds": "histogram",
        "twistwsgi_response_body_bytes": "counter",
        "twistwsgi_threads": "gauge",
        "twistwsgi_threads_busy": "gauge",
        "twistwsgi_thread_queue": "gauge",
        "twistwsgi_workers": "gauge",
        "twistwsgi_mount_responses": "counter",
        "twistwsgi_mount_request_duration_seconds": "histogram",
    }


@given(st.lists(st.floats(0, 20, allow_nan=False), max_size=50))
def test_the_histogram_is_cumulative_and_ends_with_every_observation(
    durations: list[float],
) -> None:
    counted = RequestMetrics(lambda: 1000.0)
    for took in durations:
        counted(Ended(200, 1000.0 - took, 0))
    found = samples(render(counted.snapshot(0, {})))
    name = "twistwsgi_request_duration_seconds_bucket"
    for bound in (*DURATION_BUCKETS, math.inf):
        label = "+Inf" if bound == math.inf else repr(float(bound))
        expected = sum(1 for took in durations if 1000.0 - (1000.0 - took) <= bound)
        assert found[name, (("le", label),)] == expected


def test_responses_and_durations_are_counted_per_host_and_mount() -> None:
    """What the router sent where; the server's refusals (no route) only in the totals."""
    now = [50.0]
    counted = RequestMetrics(lambda: now[0])
    api = Route(b"/api", b"/users", "shop.example")
    root = Route(b"", b"/", "shop.example")
    other = Route(b'/q"x', b"", None)  # a catch-all host; a quote in a path
    counted(Ended(200, now[0] - 0.002, 5, route=api))
    counted(Ended(200, now[0] - 0.3, 5, route=api))
    counted(Ended(502, now[0] - 0.02, 5, route=api))
    counted(Ended(404, now[0] - 0.001, 5, route=root))
    counted(Ended(200, now[0] - 0.001, 5, route=other))
    counted(Ended(400, now[0], 5))  # refused: no route
    found = samples(render(counted.snapshot(1, {})))
    name = "twistwsgi_mount_responses_total"
    shop_api = (("host", "shop.example"), ("mount", "/api"))
    assert found[name, (("code", "200"), *shop_api)] == 2
    assert found[name, (("code", "502"), *shop_api)] == 1
    assert found[name, (("code", "404"), ("host", "shop.example"), ("mount", "/"))] == 1
    assert found[name, (("code", "200"), ("host", "_"), ("mount", '/q"x'))] == 1
    assert not any(key[0] == name and ("code", "400") in key[1] for key in found)
    assert found["twistwsgi_responses_total", (("code", "400"),)] == 1
    duration = "twistwsgi_mount_request_duration_seconds"
    for bound, below in (("0.005", 1), ("0.025", 2), ("+Inf", 3)):
        labels = tuple(sorted((*shop_api, ("le", bound))))
        assert found[f"{duration}_bucket", labels] == below
    assert found[f"{duration}_count", shop_api] == 3
    assert found[f"{duration}_sum", shop_api] == pytest.approx(0.322)


def test_the_workers_sum_per_mount_too() -> None:
    api = Route(b"/api", b"", "a.example")
    first, second = RequestMetrics(lambda: 1.0), RequestMetrics(lambda: 1.0)
    first(Ended(200, 0.5, 1, route=api))
    second(Ended(200, 0.0, 1, route=api))
    second(Ended(200, 0.0, 1, route=Route(b"", b"", "b.example")))
    total = merge([first.snapshot(1, {}), checked(second.snapshot(1, {})) or {}])
    found = samples(render(total))
    labels = (("code", "200"), ("host", "a.example"), ("mount", "/api"))
    assert found["twistwsgi_mount_responses_total", labels] == 2
    assert found["twistwsgi_mount_request_duration_seconds_sum", labels[1:]] == 1.5
    assert (
        found[
            "twistwsgi_mount_responses_total",
            (("code", "200"), ("host", "b.example"), ("mount", "/")),
        ]
        == 1
    )


def test_the_workers_sum_and_an_ended_one_keeps_its_counters_only() -> None:
    first, second = RequestMetrics(lambda: 0.0), RequestMetrics(lambda: 0.0)
    first(Ended(200, 0.0, 5))
    second(Ended(200, 0.0, 6))
    second(Ended(500, 0.0, 1))
    gauges = {"connections_open": 1, "threads": 10, "threads_busy": 1, "thread_queue": 0}
    one, two = first.snapshot(1, gauges), second.snapshot(2, gauges)
    total = samples(render(merge([one, two])))
    assert total["twistwsgi_responses_total", (("code", "200"),)] == 2
    assert total["twistwsgi_responses_total", (("code", "500"),)] == 1
    assert total["twistwsgi_threads", ()] == 20
    assert total["twistwsgi_connections_accepted_total", ()] == 3
    ended = retire(empty(), two)
    after = samples(render(merge([ended, one])))
    assert after["twistwsgi_responses_total", (("code", "500"),)] == 1  # kept
    assert after["twistwsgi_connections_accepted_total", ()] == 3
    assert after["twistwsgi_threads", ()] == 10  # its threads are gone
    assert after["twistwsgi_connections_open", ()] == 1


# -- through the server ----------------------------------------------------------------


class Listening:
    """An endpoint that listens at once on a fake port (records the factory)."""

    def __init__(self) -> None:
        self.factory: Any = None

    def listen(self, factory: Any) -> Any:
        self.factory = factory
        return succeed(_Port())


class _Port:
    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 9090)

    def stopListening(self) -> None:
        pass


def ask(factory: HTTPFactory, request: bytes, methods: list[bytes] | None = None) -> list[Any]:
    """Send ``request`` on a new in-memory connection to ``factory``; the responses."""
    peer = IPv4Address("TCP", "192.0.2.1", 5000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 80))
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    protocol.connectionLost(Failure(ConnectionDone()))
    return parse_responses(transport.value(), methods)


def served(metrics_endpoint: Any) -> ServerService:
    config = ServerConfig(threads=0, metrics_listen="tcp:9090")
    service = make_service(
        config,
        apps.hello,
        reactor=MemoryReactorClock(),
        endpoints=[],
        metrics_endpoint=metrics_endpoint,
    )
    service.startService()
    return service


def test_a_scrape_counts_what_the_server_answered() -> None:
    endpoint = Listening()
    service = served(endpoint)
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert [response.status for response in ask(service.factory, request * 2)] == [200, 200]
    [refused] = ask(service.factory, b"GET / HTTP/9.9\r\n\r\n")
    assert refused.status == 505
    [scrape] = ask(endpoint.factory, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
    assert scrape.status == 200
    assert scrape.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
    found = samples(scrape.body)
    assert found["twistwsgi_responses_total", (("code", "200"),)] == 2
    assert found["twistwsgi_responses_total", (("code", "505"),)] == 1  # refusals too
    # The command line's host has no names: "_", as nginx's catch-all server_name.
    per_mount = (("code", "200"), ("host", "_"), ("mount", "/"))
    assert found["twistwsgi_mount_responses_total", per_mount] == 2
    assert found["twistwsgi_connections_accepted_total", ()] == 2
    assert found["twistwsgi_response_body_bytes_total", ()] == 26 + len(refused.body)
    assert ("twistwsgi_workers", ()) not in found  # one process
    service.stopService()


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(b"GET /other HTTP/1.1", 404), (b"POST /metrics HTTP/1.1", 405)],
)
def test_the_metrics_listener_serves_nothing_else(request_line: bytes, status: int) -> None:
    endpoint = Listening()
    served(endpoint)
    [response] = ask(endpoint.factory, request_line + b"\r\nHost: m\r\nContent-Length: 0\r\n\r\n")
    assert response.status == status


def test_a_head_request_gets_the_fields_only() -> None:
    endpoint = Listening()
    served(endpoint)
    [response] = ask(endpoint.factory, b"HEAD /metrics HTTP/1.1\r\nHost: m\r\n\r\n", [b"HEAD"])
    assert (response.status, response.body) == (200, b"")


def test_a_metrics_endpoint_that_cannot_listen_fails_the_start() -> None:
    @implementer(IStreamServerEndpoint)
    class Refusing:
        def listen(self, factory: Any) -> Any:
            return fail(ValueError("no"))

    config = ServerConfig(threads=0, metrics_listen="tcp:9090")
    service = make_service(
        config, apps.hello, reactor=MemoryReactorClock(), endpoints=[], metrics_endpoint=Refusing()
    )
    with pytest.raises(ListenError, match="cannot listen on 'tcp:9090': no"):
        service.startService()


def test_metrics_listen_cannot_be_a_listen_too(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="is a listen too"):
        cli.load_config(
            {"app": "tests.apps:hello", "listen": ["tcp:8080"], "metrics_listen": "tcp:8080"}
        )
    site = tmp_path / "site.toml"
    site.write_text('[server]\nmetrics_listen = "unix:m.sock"\n')
    config = cli.load_config({"config": str(site), "app": "tests.apps:hello"})
    assert config.metrics_listen == f"unix:{tmp_path}/m.sock"  # from the file's directory


def test_without_metrics_listen_nothing_is_counted() -> None:
    service = make_service(ServerConfig(threads=0), apps.hello, reactor=MemoryReactorClock())
    assert service.factory.metrics is None and service.metrics is None
    with pytest.raises(ValueError, match="counts no metrics"):
        service.metrics_snapshot()


def test_a_reload_that_moves_the_access_log_keeps_counting(tmp_path: Any) -> None:
    endpoint = Listening()
    service = served(endpoint)
    assert service.config is not None
    service.reload(replace(service.config, access_log=str(tmp_path / "access.log")))
    ask(service.factory, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    [scrape] = ask(endpoint.factory, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
    assert samples(scrape.body)["twistwsgi_responses_total", (("code", "200"),)] == 1
    service.stopService()  # (closes the access log)
    assert (tmp_path / "access.log").read_text().count('"GET / HTTP/1.1" 200') == 1


# -- after review ---------------------------------------------------------------------


class Held:
    """Keeps each exchange unanswered (for the test to end)."""

    def __init__(self) -> None:
        self.exchanges: list[Any] = []

    def handle(self, exchange: Any) -> None:
        self.exchanges.append(exchange)


def test_an_exchange_ended_unanswered_counts_as_the_access_log_has_it() -> None:
    """499 when the client left first, 444 when the server dropped it."""
    counted = RequestMetrics(lambda: 0.0)
    held = Held()
    left = connect(held, response_log=counted)
    left.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    left.protocol.connectionLost(Failure(ConnectionDone()))
    dropped = connect(held, response_log=counted)
    dropped.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    held.exchanges[-1].abort()
    assert counted.responses == {499: 1, 444: 1}


def test_a_tunnel_counts_as_a_response_but_not_as_a_duration() -> None:
    """A WebSocket's 101 lasts as long as the tunnel: no request took that long."""
    counted = RequestMetrics(lambda: 3600.0)
    counted(Ended(101, 0.0, 0))
    counted(Ended(200, 3599.999, 2))
    assert counted.responses == {101: 1, 200: 1}
    assert sum(counted.durations) == 1 and counted.duration_sum == pytest.approx(0.001)


def good_report() -> dict[str, Any]:
    counted = RequestMetrics(lambda: 0.0)
    counted(Ended(200, 0.0, 5))
    counted(Ended(200, 0.0, 5, route=Route(b"/a", b"", "a.example")))
    return counted.snapshot(1, {"threads": 10})


#: A mount's valid counts, for spoiling its other keys.
COUNTS: dict[str, Any] = {
    "responses": {"200": 1},
    "durations": [0] * (len(DURATION_BUCKETS) + 1),
    "duration_sum": 0.0,
}


def test_a_report_from_before_the_mounts_counts_with_none() -> None:
    """A worker still running the version before per-mount counts, during a reload."""
    report = {key: value for key, value in good_report().items() if key != "mounts"}
    assert checked(report) is not None
    assert merge([report])["mounts"] == []


@pytest.mark.parametrize(
    "spoil",
    [
        lambda report: "not a dict",
        lambda report: {**report, "connections_accepted": "12"},
        lambda report: {**report, "body_bytes": -1},
        lambda report: {**report, "threads": 1.5},
        lambda report: {**report, "thread_queue": True},
        lambda report: {**report, "duration_sum": float("nan")},
        lambda report: {**report, "duration_sum": "1"},
        lambda report: {**report, "responses": {"OK": 1}},
        lambda report: {**report, "responses": {"200": -1}},
        lambda report: {**report, "responses": []},
        lambda report: {**report, "durations": [0, 1]},
        lambda report: {**report, "durations": [-1] * (len(DURATION_BUCKETS) + 1)},
        lambda report: {key: value for key, value in report.items() if key != "threads"},
        lambda report: {**report, "mounts": {}},
        lambda report: {**report, "mounts": [{"host": 1, "mount": "/", **COUNTS}]},
        lambda report: {**report, "mounts": [{"host": "a", "mount": None, **COUNTS}]},
        lambda report: {
            **report,
            "mounts": [{"host": "a", "mount": "/", **COUNTS, "durations": [1]}],
        },
        lambda report: {
            **report,
            "mounts": [{"host": "a", "mount": "/", **COUNTS, "responses": {"200": -2}}],
        },
        lambda report: {**report, "mounts": ["a"]},
    ],
)
def test_a_report_of_another_shape_is_refused(spoil: Any) -> None:
    """A worker runs the application's code (and maybe another version after a
    reload): what it sends must not break the master's sums.
    """
    assert checked(good_report()) is not None
    assert checked(spoil(good_report())) is None


def test_an_access_log_that_fails_still_lets_the_response_be_counted() -> None:
    counted = RequestMetrics(lambda: 0.0)

    class Failing:
        def __call__(self, ended: Any) -> None:
            raise OSError(28, "No space left on device")

    log = _response_log(Failing(), counted)  # type: ignore[arg-type]
    assert log is not None
    ended: Any = Ended(200, 0.0, 2)
    with pytest.raises(OSError, match="No space left"):
        log(ended)
    assert counted.responses == {200: 1}


def test_a_worker_counts_for_its_master_whatever_its_file_says() -> None:
    """A reload whose file drops metrics_listen: the master still serves them (the
    change waits for a restart), so the new workers must still count.
    """
    service = make_service(
        ServerConfig(threads=0), apps.hello, reactor=MemoryReactorClock(), count_metrics=True
    )
    assert service.factory.metrics is not None and service.metrics is None
