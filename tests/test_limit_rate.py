"""limit_rate and limit_rate_after: each response of a mount goes out at its rate.

The pace is pure logic (hypothesis); the protocol is driven through StringTransport
with a Clock, a client that reads whatever it is sent at once, so only the rate
holds the response back. The responses are parsed with h11 at the end: pacing
changes when bytes go, never which.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.live import port_of, serve_live
from tests.test_proxy import TWO, make_proxy
from twistwsgi import cli
from twistwsgi.config import MountConfig, default_options
from twistwsgi.http.compression import GzipSettings
from twistwsgi.http.exchange import Handler
from twistwsgi.http.pacing import MAX_STEP, ResponsePace, asked_limit
from twistwsgi.http.transport import end_batch, start_batch
from twistwsgi.response_spool import PIECE_SIZE
from twistwsgi.routing import HostTable, Mount, MountTable, Router, RoutingTable
from twistwsgi.site import SiteBuilder, _accel_resolver
from twistwsgi.static import StaticHandler, StaticOptions
from twistwsgi.testing import (
    CallQueue,
    Connection,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    TrackingPool,
    connect,
    parse_responses,
)
from twistwsgi.wsgi import WSGIHandler

KB = 1024


# -- the pace ---------------------------------------------------------------------------


def test_a_second_s_worth_and_the_bytes_after_go_at_once_then_the_rate() -> None:
    pace = ResponsePace(10 * KB, 4 * KB, start=100.0)
    assert pace.allowance(0, 100.0) == 14 * KB
    assert pace.wait(14 * KB, 100.0) == pytest.approx(pace.step / (10 * KB))
    assert pace.allowance(14 * KB, 102.0) == 20 * KB
    assert pace.wait(0, 100.0) == 0.0
    assert pace.wait(14 * KB - 10, 100.0, wanted=10) == 0.0  # (what is left fits)


@pytest.mark.parametrize(
    ("rate", "step"), [(1, 1), (50, 5), (100 * KB, 10 * KB), (100 * 1024 * KB, MAX_STEP)]
)
def test_a_step_is_a_tenth_of_a_second_within_bounds(rate: int, step: int) -> None:
    assert ResponsePace(rate, 0, 0.0).step == step


def test_a_rate_is_at_least_a_byte() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        ResponsePace(0, 0, 0.0)


@given(
    st.integers(1, 10**7),
    st.integers(0, 10**7),
    st.lists(st.tuples(st.floats(0, 5), st.integers(1, 10**6)), max_size=40),
)
def test_sending_only_when_the_wait_is_over_keeps_to_the_rate(
    rate: int, after: int, steps: list[tuple[float, int]]
) -> None:
    """Whatever the writes: one sent when wait() says 0 never takes the response past
    its allowance by more than itself (a writer sends what it has, then waits).
    """
    pace = ResponsePace(rate, after, start=0.0)
    now, sent = 0.0, 0
    for delay, size in steps:
        now += delay
        now += pace.wait(sent, now)
        assert pace.allowance(sent, now) >= min(pace.step, size) - 1e-6 * rate
        sent += size
        assert sent <= after + rate * (now + 1) + size


# -- through the protocol ---------------------------------------------------------------


def routed(handler: Any, rate: int, after: int = 0, prefix: bytes = b"") -> Router:
    mount = Mount(
        prefix, handler, limit_rate=(rate, after) if rate else None, limit_rate_after=after
    )
    table = RoutingTable(HostTable([], MountTable([mount])), paced=True)
    return Router(table)


def streaming(chunks: int, size: int) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([n % 256]) * size for n in range(chunks))

    return validator(app)


def received_over_time(client: Connection, clock: Clock, seconds: float) -> list[tuple[float, int]]:
    """Bytes the client has received at each 10 ms of ``seconds`` (it reads all at once)."""
    seen, total = [], 0
    for _ in range(int(seconds * 100)):
        total += len(client.transport.value()) - total
        seen.append((clock.seconds(), total))
        clock.advance(0.01)
    return seen


def test_an_application_s_pieces_go_at_the_mount_s_rate() -> None:
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(streaming(40, 5 * KB), reactor=clock, threadpool=None)
    client = connect(routed(handler, 20 * KB, after=10 * KB), clock=clock)
    client.send(b"GET /video HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = received_over_time(client, clock, 12.0)
    head = 200  # (about: the head and the chunk framing)
    for now, total in seen:
        allowed = 10 * KB + 20 * KB * (now + 1)
        assert total <= allowed + 5 * KB + head  # (one piece past it, at most)
        if total < 200 * KB:
            assert total >= allowed - 5 * KB - 2 * KB  # and never much behind
    (response,) = parse_responses(client.take())
    assert response.body == b"".join(bytes([n]) * 5 * KB for n in range(40))
    assert seen[-1][0] > 8.5  # 200 KB: 30 KB at once, then 20 KB a second
    assert not clock.getDelayedCalls() or all(
        call.getTime() > clock.seconds() for call in clock.getDelayedCalls()
    )


def test_a_client_that_catches_up_does_not_lift_the_rate() -> None:
    """The client's pauses and the rate's are two: a resume of one leaves the other."""
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(streaming(40, 5 * KB), reactor=clock, threadpool=None)
    client = connect(routed(handler, 20 * KB), clock=clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    for tick in range(1000):
        if tick % 7 == 3:
            client.protocol.pauseProducing()  # (the transport's buffer filled)
        elif tick % 7 == 5:
            client.protocol.resumeProducing()
        now, total = clock.seconds(), len(client.transport.value())
        assert total <= 20 * KB * (now + 1) + 5 * KB + 200
        clock.advance(0.01)
    (response,) = parse_responses(client.take())
    assert len(response.body) == 200 * KB


def test_without_a_limit_nothing_waits() -> None:
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(streaming(40, 5 * KB), reactor=clock, threadpool=None)
    client = connect(routed(handler, 0), clock=clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = parse_responses(client.take())
    assert len(response.body) == 200 * KB


def test_the_next_pipelined_response_is_not_held_by_the_last_one_s_pace() -> None:
    """The hold ends with its response: a response on another mount goes at once."""
    clock = SynchronousReactorThreads()
    slow = WSGIHandler(streaming(8, 5 * KB), reactor=clock, threadpool=None)
    fast = WSGIHandler(streaming(8, 5 * KB), reactor=clock, threadpool=None)
    mounts: MountTable[Handler] = MountTable(
        [Mount(b"/slow", slow, limit_rate=(10 * KB, 0)), Mount(b"", fast)]
    )
    router = Router(RoutingTable(HostTable([], mounts), paced=True))
    client = connect(router, clock=clock)
    client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(client.transport.value()) < 20 * KB
    while client.transport.value().count(b"HTTP/1.1 200 OK") < 2:
        clock.advance(0.01)
        assert clock.seconds() < 10
    # In the turn the first ended, the second was sent whole.
    first, second = parse_responses(client.take())
    assert len(first.body) == len(second.body) == 40 * KB
    assert clock.seconds() > 2.5  # (30 KB after the first second's 10)


@pytest.mark.parametrize("buffering", [False, True])
def test_a_proxied_response_goes_at_the_mount_s_rate(buffering: bool) -> None:
    """The upstream is read as the rate lets the client have it, or (buffering) into
    the spool, the upstream free at once: the client gets it at the rate either way.
    """
    setup = make_proxy()
    setup.handler.buffering = buffering
    client = connect(routed(setup.handler, 32 * KB), clock=setup.clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = bytes(range(256)) * 4 * 256  # 256 KB
    upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    pieces = [body[start : start + 4 * KB] for start in range(0, len(body), 4 * KB)]
    seen = []
    for _ in range(1000):
        # The upstream sends a piece whenever the proxy reads from it.
        if pieces and upstream.transport.producerState == "producing":
            upstream.respond(pieces.pop(0))
        seen.append((setup.clock.seconds(), len(client.transport.value())))
        setup.clock.advance(0.01)
    assert not pieces
    # Paced between the pieces the proxy writes: those it reads (4 KB here), or
    # from the spool, up to PIECE_SIZE.
    piece = PIECE_SIZE if buffering else 4 * KB
    for now, total in seen:
        assert total <= 32 * KB * (now + 1) + piece + 200
    (response,) = parse_responses(client.take())
    assert response.body == body
    done = next(now for now, total in seen if total > len(body))
    assert (len(body) - piece) / (32 * KB) - 1 - 0.1 < done < len(body) / (32 * KB)


class Bursting:
    """A handler that writes ``pieces`` without waiting, then finishes (no producer
    of its own until ``producer`` is given, then one that records what it is told).
    """

    def __init__(self, pieces: int, size: int = 50 * KB) -> None:
        self.pieces, self.size = pieces, size
        self.told: list[str] = []
        self.exchange: Any = None

    def handle(self, exchange: Any) -> None:
        exchange.start_response(200, [(b"Content-Length", b"%d" % (self.pieces * self.size))])
        for _ in range(self.pieces):
            exchange.write(b"x" * self.size)
        exchange.registerProducer(self, True)
        self.exchange = exchange

    def pauseProducing(self) -> None:
        self.told.append("pause")

    def resumeProducing(self) -> None:
        self.told.append("resume")

    def stopProducing(self) -> None:
        self.told.append("stop")


def pace_timers(clock: Clock) -> list[Any]:
    return [
        call
        for call in clock.getDelayedCalls()
        if call.active() and getattr(getattr(call, "func", None), "__name__", "") == "_pace_over"
    ]


def test_one_hold_at_a_time_and_a_producer_given_during_it_waits() -> None:
    clock = Clock()
    bursting = Bursting(3)
    client = connect(routed(bursting, 10 * KB), clock=clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(pace_timers(clock)) == 1
    assert bursting.told == ["pause"]  # (registered while held)
    client.protocol.pauseProducing()  # the client falls behind meanwhile
    client.protocol.resumeProducing()  # and catches up: the rate still holds it
    assert bursting.told == ["pause"]
    clock.advance(20)
    assert bursting.told == ["pause", "resume"]


@pytest.mark.parametrize("end", ["finish", "abort", "connection lost"])
def test_a_hold_ends_with_its_response(end: str) -> None:
    """A response finished, aborted or lost while held leaves no hold behind: the
    next pipelined response (another mount's, without a rate) goes at once.
    """
    clock = Clock()
    held = Bursting(2)
    quick = Bursting(1, size=10)
    mounts: MountTable[Any] = MountTable(
        [Mount(b"/held", held, limit_rate=(10 * KB, 0)), Mount(b"", quick)]
    )
    client = connect(
        Router(RoutingTable(HostTable([], mounts), paced=True)),
        clock=clock,
    )
    client.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    assert pace_timers(clock)
    if end == "finish":
        client.send(b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
        held.exchange.finish()
        assert quick.told == []  # (not paused: nothing holds the second response)
        assert client.transport.value().count(b"HTTP/1.1 200 OK") == 2
    elif end == "abort":
        held.exchange.abort()
    else:
        client.protocol.connectionLost(Failure(ConnectionDone()))
    assert pace_timers(clock) == []


def test_a_static_miss_passed_on_goes_at_the_rate_of_the_mount_it_goes_to(
    tmp_path: Path,
) -> None:
    """As nginx's try_files: the location that answers decides."""
    clock = Clock()
    options = {**default_options("static"), "fallthrough": True}
    static = StaticHandler(StaticOptions.from_mount(str(tmp_path), options), now=clock.seconds)
    bursting = Bursting(3)
    static.fallback = Mount(b"", bursting, limit_rate=(10 * KB, 0))
    client = connect(routed(static, 0, prefix=b""), clock=clock)
    client.send(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(pace_timers(clock)) == 1


def test_a_static_miss_passed_on_keeps_the_limit_rate_after_of_where_it_goes(
    tmp_path: Path,
) -> None:
    """The mount answering gives the bytes at full speed a rate it asks keeps."""
    clock = SynchronousReactorThreads()
    options = {**default_options("static"), "fallthrough": True}
    static = StaticHandler(StaticOptions.from_mount(str(tmp_path), options), now=clock.seconds)
    application = WSGIHandler(asking("20480"), reactor=clock, threadpool=None)
    static.fallback = Mount(b"", application, limit_rate_after=50 * KB)
    client = connect(routed(static, 0, prefix=b""), clock=clock)
    client.send(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_paced(received_over_time(client, clock, 8.0), 20 * KB, 50 * KB, 5 * KB, 200 * KB)


def test_the_site_gives_each_mount_its_rate(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[host]]\nnames = ["x"]\n[[host.mount]]\npath = "/v"\n'
        f'static = "{tmp_path}"\nlimit_rate = "500k"\nlimit_rate_after = "1m"\n'
        f'fallthrough = true\n[[host.mount]]\npath = "/v"\napp = "tests.apps:hello"\n'
        'limit_rate_after = "2m"\n'
        '[[host.mount]]\npath = "/"\nreturn = "204"\n'
    )
    config = cli.load_config({"config": str(site)})
    table = SiteBuilder(reactor=Clock(), threadpool=None).build(config)
    assert table.paced
    mounts = table.hosts.lookup("x")
    assert mounts is not None
    assert [(m.prefix, m.limit_rate, m.limit_rate_after) for m in mounts.mounts] == [
        (b"/v", (500 * KB, 1024 * KB), 1024 * KB),
        (b"", None, 0),
    ]
    static = mounts.mounts[0].target
    assert isinstance(static, StaticHandler) and static.fallback is not None
    assert (static.fallback.limit_rate, static.fallback.limit_rate_after) == (None, 2048 * KB)
    without = SiteBuilder(reactor=Clock(), threadpool=None).build(
        cli.load_config({"return": ["/=204"]})
    )
    assert not without.paced


# -- files ------------------------------------------------------------------------------


def static_mount(directory: Path, clock: Clock) -> StaticHandler:
    options = default_options("static")
    return StaticHandler(StaticOptions.from_mount(str(directory), options), now=clock.seconds)


def test_a_file_goes_at_the_mount_s_rate_after_its_first_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4 * 1024  # 1 MiB
    (tmp_path / "video.mp4").write_bytes(data)
    clock = Clock()
    client = connect(routed(static_mount(tmp_path, clock), 100 * KB, 200 * KB), clock=clock)
    client.send(b"GET /video.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = []
    for _ in range(1000):
        producer = client.transport.producer
        if producer is not None and producer is not client.protocol:
            producer.resumeProducing()  # (a client that takes whatever comes)
        seen.append((clock.seconds(), len(client.transport.value())))
        clock.advance(0.01)
    for now, total in seen:
        assert total <= 200 * KB + 100 * KB * (now + 1) + 400  # (the head)
    (response,) = parse_responses(client.take())
    assert response.body == data
    done = next(now for now, total in seen if total > len(data))
    assert 6.5 < done < 8.5  # 1024 KB: 300 at once, then 100 a second


def test_a_file_whose_client_leaves_while_it_waits_leaves_no_timer(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(bytes(300 * KB))
    clock = Clock()
    client = connect(routed(static_mount(tmp_path, clock), 10 * KB), clock=clock)
    client.send(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(100):
        producer = client.transport.producer
        if producer is None:
            break
        producer.resumeProducing()
    # Waiting for the rate, the sender is off the transport (which, over TLS, would
    # call it in a loop): a lost connection cannot tell it, the exchange does.
    assert [call for call in clock.getDelayedCalls() if call.active()]
    client.protocol.connectionLost(Failure(ConnectionDone()))
    assert [call for call in clock.getDelayedCalls() if call.active()] == []


class RealSocket(TestCase):
    """sendfile's steps are paced too (how fast is the benchmarks' to measure)."""

    async def test_a_paced_file_arrives_whole_over_a_real_socket(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        data = bytes(range(256)) * 1600  # 400 KB: 256 KB at once, the rest in 0.6 s
        (directory / "f.bin").write_bytes(data)
        site = directory / "site.toml"
        site.write_text(
            f'[[host]]\nnames = ["x"]\ndefault = true\n[[host.mount]]\npath = "/"\n'
            f'static = "{directory}"\nlimit_rate = "256k"\n'
        )
        service = serve_live(
            self,
            {
                "config": str(site),
                "listen": ["tcp:0:interface=127.0.0.1"],
                "threads": "0",
                "access_log": "off",
            },
        )
        port = port_of(service)

        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
                connection.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                received = b""
                while chunk := connection.recv(65536):
                    received += chunk
                return received

        (response,) = parse_responses(await deferToThread(fetch))
        assert response.body == data


# -- configuration ----------------------------------------------------------------------


def test_limit_rate_after_alone_is_for_the_rate_a_response_asks(tmp_path: Path) -> None:
    """As nginx takes it: nothing is paced, until an X-Accel-Limit-Rate asks."""
    site = tmp_path / "site.toml"
    site.write_text(
        '[[host]]\nnames = ["x"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
        'limit_rate_after = "1m"\n'
    )
    table = SiteBuilder(reactor=Clock(), threadpool=None).build(
        cli.load_config({"config": str(site)})
    )
    mounts = table.hosts.lookup("x")
    assert mounts is not None and table.paced
    assert [(m.limit_rate, m.limit_rate_after) for m in mounts.mounts] == [(None, 1024 * KB)]


# -- after review -----------------------------------------------------------------------


def test_a_file_sender_waiting_for_the_rate_is_off_the_transport(tmp_path: Path) -> None:
    """Over TLS, Twisted calls a pull producer in a loop (_PullToPush): one waiting
    for its rate would be called for nothing, at full CPU, until the wait ends.
    """
    (tmp_path / "f").write_bytes(bytes(300 * KB))
    clock = Clock()
    client = connect(routed(static_mount(tmp_path, clock), 64 * KB), clock=clock)
    client.send(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
    sender = client.transport.producer
    for _ in range(100):  # (a sender calling for nothing would be called for ever)
        if client.transport.producer is None:
            break
        client.transport.producer.resumeProducing()
    assert client.transport.producer is None
    clock.advance(1.0)  # the wait is over: it is back, for the transport to call
    assert client.transport.producer is sender
    client.protocol.connectionLost(Failure(ConnectionDone()))  # (its file closed)


def waiting_for_the_rate(client: Connection) -> bool:
    """Whether the worker thread of ``client``'s response waits, nothing in flight."""
    call: Any = client.protocol._response_producer
    if call is None:
        return False
    with call._cond:
        return bool(call._paused and not call._in_flight)


def test_a_threaded_application_hands_over_one_piece_at_a_time() -> None:
    """Pieces queued for the reactor beyond the one that starts a hold would go
    past it: a paced response's worker waits for each to be written.
    """
    calls, clock, pool = CallQueue(), Clock(), TrackingPool(1)
    pool.start()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 16 * KB for _ in range(12))

    try:
        handler = WSGIHandler(validator(app), reactor=calls, threadpool=pool)
        client = connect(routed(handler, 16 * KB), clock=clock)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        calls.run_until(lambda: waiting_for_the_rate(client))
        assert len(client.transport.value()) <= 32 * KB + 300
        while not pool.idle:
            clock.advance(0.1)
            calls.run_until(lambda: pool.idle or waiting_for_the_rate(client))
        calls.run_pending()
        (response,) = parse_responses(client.take())
        assert len(response.body) == 192 * KB
    finally:
        pool.stop()


def text_of(size: int) -> bytes:
    words = [b"pace", b"rate", b"limit", b"bytes", b"second", b"nginx", b"video"]
    return b" ".join(words[n % 7] + b"%d" % (n % 97) for n in range(size // 6))[:size]


@pytest.mark.parametrize(("gzip", "ranged"), [(False, False), (True, False), (False, True)])
def test_bytes_held_in_memory_are_paced_too(tmp_path: Path, gzip: bool, ranged: bool) -> None:
    """A file in the memory cache (whole or a range of it), or the gzip form made on
    the fly, is written in steps like a file from disk.
    """
    data = text_of(512 * KB)
    (tmp_path / "page.js").write_bytes(data)
    clock = Clock()
    options = {**default_options("static"), "memory_cache": 1024 * KB}
    settings = GzipSettings(frozenset({"text/javascript"}), 20, 1) if gzip else None
    static = StaticHandler(
        StaticOptions.from_mount(str(tmp_path), options, settings), now=clock.seconds
    )
    client = connect(routed(static, 10 * KB), clock=clock)
    accept = b"Accept-Encoding: gzip\r\n" if gzip else b""
    if ranged:
        accept = b"Range: bytes=1-%d\r\n" % (len(data) - 2)
    client.send(b"GET /page.js HTTP/1.1\r\nHost: x\r\n" + accept + b"\r\n")
    assert len(client.transport.value()) < 10 * KB + 1024 + 600  # a second's, a step, head
    for _ in range(200 * 20):
        clock.advance(0.05)
    (response,) = parse_responses(client.take())
    body = zlib.decompress(response.body, 31) if gzip else response.body
    assert body == (data[1:-1] if ranged else data)
    assert response.header(b"content-length") == b"%d" % len(response.body)


@pytest.mark.parametrize("rate", [256 * KB, 2048 * KB])
def test_with_buffering_a_paced_proxy_frees_its_upstream_at_once(rate: int) -> None:
    """The holds of the rate may each be shorter than the spool's grace: spooled at
    once, however fast the rate, so the upstream is free (nginx's proxy_buffering).
    """
    setup = make_proxy()
    setup.handler.buffering = True
    client = connect(routed(setup.handler, rate), clock=setup.clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = bytes(range(256)) * (16 * rate // 256)  # 16 seconds' worth
    upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    pieces = [body[start : start + 64 * KB] for start in range(0, len(body), 64 * KB)]
    read_whole_at = None
    for _ in range(2000):
        while pieces and upstream.transport.producerState == "producing":
            upstream.respond(pieces.pop(0))
        if not pieces and read_whole_at is None:
            read_whole_at = setup.clock.seconds()
        setup.clock.advance(0.01)
    (response,) = parse_responses(client.take())
    assert response.body == body
    assert read_whole_at is not None and read_whole_at < 1.0


# -- X-Accel-Limit-Rate: the rate an application or upstream asks for ------------------

ASK = b"X-Accel-Limit-Rate"


@pytest.mark.parametrize(
    ("fields", "mount", "expected"),
    [
        ([], (10 * KB, 5), (10 * KB, 5)),
        ([(ASK, b"2048")], None, (2048, 0)),
        ([(b"x-accel-limit-rate", b" 2048\t")], (10 * KB, 5), (2048, 5)),
        ([(ASK, b"0")], (10 * KB, 5), None),
        ([(ASK, b"100"), (ASK, b"0")], (10 * KB, 5), (100, 5)),
        ([(ASK, b"0"), (ASK, b"100")], (10 * KB, 5), None),
        ([(ASK, b"fast"), (ASK, b"100")], (10 * KB, 5), (10 * KB, 5)),
        ([(ASK, b"9223372036854775807")], None, (2**63 - 1, 0)),
        ([(ASK, b"0000000000000000000100")], None, (100, 0)),
        ([(b"X-Accel-Limit-Rates", b"100"), (b"X-Accel-Limit-Rat", b"100")], None, None),
        ([(ASK, b"2048")], (0, 7), (2048, 7)),  # (limit_rate_after alone: kept)
    ],
)
def test_an_x_accel_limit_rate_replaces_the_mount_s_rate(
    fields: list[tuple[bytes, bytes]],
    mount: tuple[int, int] | None,
    expected: tuple[int, int] | None,
) -> None:
    """As nginx reads them: the first field counts, limit_rate_after stays.

    ``mount`` is the mount's rate and limit_rate_after, 0 for no rate.
    """
    rate, after = mount or (0, 0)
    assert asked_limit(fields, (rate, after) if rate else None, after) == expected


@pytest.mark.parametrize(
    "value",
    [b"10k", b"-5", b"+5", b"", b"1.5", b"0x10", b"1 000", b"9223372036854775808", "١٢".encode()],
)
def test_an_x_accel_limit_rate_that_is_no_number_is_ignored(value: bytes) -> None:
    assert asked_limit([(ASK, value)], (10 * KB, 5), 5) == (10 * KB, 5)
    assert asked_limit([(ASK, value)], None, 5) is None


@given(st.integers(0, 10**18 - 1), st.one_of(st.none(), st.tuples(st.integers(1), st.integers(0))))
def test_any_number_of_bytes_a_second_is_read(rate: int, mount: tuple[int, int] | None) -> None:
    after = mount[1] if mount else 0
    expected = (rate, after) if rate else None
    fields = [(b"Content-Type", b"video/mp4"), (ASK, b"%d" % rate)]
    assert asked_limit(fields, mount, after) == expected


def asking(rate: str, chunks: int = 40, size: int = 5 * KB) -> Any:
    """A streaming application whose answer asks for ``rate`` (X-Accel-Limit-Rate)."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("X-Accel-Limit-Rate", rate)]
        )
        return (bytes([n % 256]) * size for n in range(chunks))

    return validator(app)


def assert_paced(
    seen: list[tuple[float, int]], rate: int, after: int, piece: int, total_size: int
) -> None:
    """What arrived kept to ``rate`` after ``after`` (within a piece), and not behind it."""
    head = 300  # (about: the head and the chunk framing)
    for now, total in seen:
        allowed = after + rate * (now + 1)
        assert total <= allowed + piece + head
        if total < total_size:
            assert total >= allowed - piece - 2 * KB


@pytest.mark.parametrize("mount", [None, (5 * KB, 10 * KB), (0, 10 * KB)])
def test_an_application_s_x_accel_limit_rate_sets_its_rate(mount: tuple[int, int] | None) -> None:
    """On a mount without a rate, or instead of the mount's (whose limit_rate_after
    stays, as in nginx, given with a rate or alone); the field is passed on, as
    X-Accel-Buffering is.
    """
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(asking("20480"), reactor=clock, threadpool=None)
    rate, after = mount if mount else (0, 0)
    client = connect(routed(handler, rate, after), clock=clock)
    client.send(b"GET /video HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = received_over_time(client, clock, 12.0)
    assert_paced(seen, 20 * KB, after, 5 * KB, 200 * KB)
    (response,) = parse_responses(client.take())
    assert response.body == b"".join(bytes([n]) * 5 * KB for n in range(40))
    assert response.header(b"x-accel-limit-rate") == b"20480"


def test_a_paced_application_is_paced_from_inside_a_batch_of_events_too() -> None:
    """In the reactor thread, the pieces a batch of events pulls are otherwise written
    as one (see _InlineCall._produce): a paced response's are not, each write may
    hold the next.
    """
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(asking("20480"), reactor=clock, threadpool=None)
    client = connect(routed(handler, 0), clock=clock)
    assert start_batch()
    try:
        client.send(b"GET /video HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        end_batch()
    seen = received_over_time(client, clock, 12.0)
    assert_paced(seen, 20 * KB, 0, 5 * KB, 200 * KB)
    (response,) = parse_responses(client.take())
    assert len(response.body) == 200 * KB


def test_an_x_accel_limit_rate_of_0_lifts_the_mount_s_rate() -> None:
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(asking("0"), reactor=clock, threadpool=None)
    client = connect(routed(handler, 10 * KB), clock=clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = parse_responses(client.take())  # all of it, at once
    assert len(response.body) == 200 * KB


def _replacing_its_head(environ: dict[str, Any], start_response: Any) -> Any:
    """Asks for a rate, then answers an error in place of that head (exc_info)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Limit-Rate", "1024")])
    try:
        raise LookupError("the video is gone")
    except LookupError:
        start_response(
            "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
        )
    return (b"e" * 10 * KB for _ in range(20))


replacing_its_head = validator(_replacing_its_head)


def test_an_error_answer_that_replaces_the_head_drops_its_rate() -> None:
    """start_response with exc_info replaces the head, and the rate it asked for."""
    clock = SynchronousReactorThreads()
    handler = WSGIHandler(replacing_its_head, reactor=clock, threadpool=None)
    client = connect(routed(handler, 0), clock=clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = parse_responses(client.take())  # all of it, at once
    assert (response.status, len(response.body)) == (500, 200 * KB)


@pytest.mark.parametrize("after", [0, 32 * KB])
def test_a_threaded_application_s_x_accel_limit_rate_paces_its_pieces(after: int) -> None:
    """The worker hands over one piece at a time, as under a mount's rate; the
    mount's limit_rate_after (given alone) goes first.
    """
    calls, clock, pool = CallQueue(), Clock(), TrackingPool(1)
    pool.start()
    try:
        handler = WSGIHandler(asking("16384", 12, 16 * KB), reactor=calls, threadpool=pool)
        client = connect(routed(handler, 0, after), clock=clock)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        calls.run_until(lambda: waiting_for_the_rate(client))
        assert len(client.transport.value()) <= after + 32 * KB + 300
        seen = []
        while not pool.idle:
            seen.append((clock.seconds(), len(client.transport.value())))
            clock.advance(0.1)
            calls.run_until(lambda: pool.idle or waiting_for_the_rate(client))
        calls.run_pending()
        assert_paced(seen, 16 * KB, after, 16 * KB, 192 * KB)
        (response,) = parse_responses(client.take())
        assert len(response.body) == 192 * KB
    finally:
        pool.stop()


def pulled_over_time(client: Connection, clock: Clock, seconds: float) -> list[tuple[float, int]]:
    """As received_over_time, a client that takes whatever comes from a file sender
    (called again while it sends, as a transport whose buffer empties at once).
    """
    seen = []
    for _ in range(int(seconds * 100)):
        for _ in range(16):
            producer = client.transport.producer
            before = len(client.transport.value())
            if producer is None or producer is client.protocol:
                break
            producer.resumeProducing()
            if len(client.transport.value()) == before:
                break
        seen.append((clock.seconds(), len(client.transport.value())))
        clock.advance(0.01)
    return seen


def file_answer(path: Path, fields: list[tuple[str, str]]) -> Any:
    """An application answering with ``path`` by wsgi.file_wrapper, with ``fields``.

    Not wrapped in wsgiref's validator, whose iterator in place of the result would
    hide the file wrapper.
    """

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "video/mp4"), *fields])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    return app


def internal_files(root: Path, clock: Clock, rate: int = 0, after: int = 0) -> Any:
    """An accel resolver to an internal static mount of ``root`` at /private."""
    options = {
        **default_options("static"),
        "internal": True,
        "limit_rate": rate,
        "limit_rate_after": after,
    }
    static = StaticHandler(StaticOptions.from_mount(str(root), options), now=clock.seconds)
    return _accel_resolver([(MountConfig("/private", "static", str(root), options, "t"), static)])


def film(tmp_path: Path) -> tuple[Path, bytes]:
    """A directory ``private`` holding film.mp4 (512 KiB), and the file's bytes."""
    data = bytes(range(256)) * 4 * 512
    root = tmp_path / "private"
    root.mkdir()
    (root / "film.mp4").write_bytes(data)
    return root, data


@pytest.mark.parametrize("how", ["file_wrapper", "X-Accel-Redirect"])
def test_a_file_an_application_hands_over_goes_at_the_rate_it_asks(
    tmp_path: Path, how: str
) -> None:
    """Its file_wrapper file, or the file its X-Accel-Redirect names (nginx's use of
    the field: the application decides who downloads how fast).
    """
    root, data = film(tmp_path)
    clock = SynchronousReactorThreads()
    accel = None
    if how == "file_wrapper":
        app = file_answer(root / "film.mp4", [("X-Accel-Limit-Rate", "102400")])
    else:
        fields = [
            ("Content-Type", "video/mp4"),
            ("X-Accel-Redirect", "/private/film.mp4"),
            ("X-Accel-Limit-Rate", "102400"),
        ]

        def redirecting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", fields)
            return [b""]

        app = validator(redirecting)
        accel = internal_files(root, clock)
    handler = WSGIHandler(app, reactor=clock, threadpool=SynchronousThreadPool(), accel=accel)
    client = connect(routed(handler, 0), clock=clock)
    client.send(b"GET /film HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = pulled_over_time(client, clock, 6.0)
    assert_paced(seen, 100 * KB, 0, 64 * KB, len(data))
    (response,) = parse_responses(client.take())
    assert response.body == data
    done = next(now for now, total in seen if total > len(data))
    assert 3.5 < done < 4.5  # 512 KiB: 100 at once, then 100 a second


def upstream_pieces(upstream: Any, pieces: list[bytes]) -> None:
    """The upstream sends a piece whenever the proxy reads from it."""
    while pieces and upstream.transport.producerState == "producing":
        upstream.respond(pieces.pop(0))


@pytest.mark.parametrize(
    ("buffering", "after", "hidden"),
    [(False, 0, False), (True, 0, False), (False, 64 * KB, False), (False, 0, True)],
)
def test_an_upstream_s_x_accel_limit_rate_sets_its_rate(
    buffering: bool, after: int, hidden: bool
) -> None:
    """With the mount's limit_rate_after (here alone) first. Hidden from the client
    by proxy_hide_header, the field still sets the rate: the scan that drops hidden
    fields is also the one that notes the rate field came.
    """
    setup = make_proxy(proxy_hide_header=("X-Accel-Limit-Rate",) if hidden else ())
    setup.handler.buffering = buffering
    client = connect(routed(setup.handler, 0, after), clock=setup.clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upstream = setup.endpoint().last
    body = bytes(range(256)) * 4 * 256  # 256 KB
    upstream.respond(
        b"HTTP/1.1 200 OK\r\nX-Accel-Limit-Rate: 32768\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    pieces = [body[start : start + 4 * KB] for start in range(0, len(body), 4 * KB)]
    seen = []
    for _ in range(1000):
        upstream_pieces(upstream, pieces)
        seen.append((setup.clock.seconds(), len(client.transport.value())))
        setup.clock.advance(0.01)
    assert_paced(seen, 32 * KB, after, PIECE_SIZE if buffering else 4 * KB, len(body))
    (response,) = parse_responses(client.take())
    assert response.body == body
    assert (response.header(b"x-accel-limit-rate") is None) == hidden


def answered_in_pieces(upstream: Any, head: bytes, body: bytes) -> None:
    """The upstream answers with ``head``, then ``body`` in 4 KB pieces (each a read)."""
    upstream.respond(head % len(body))
    for start in range(0, len(body), 4 * KB):
        upstream.respond(body[start : start + 4 * KB])


def test_an_upstream_s_x_accel_limit_rate_of_0_lifts_the_mount_s_rate() -> None:
    setup = make_proxy()
    client = connect(routed(setup.handler, 10 * KB), clock=setup.clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    body = bytes(256 * KB)
    head = b"HTTP/1.1 200 OK\r\nX-Accel-Limit-Rate: 0\r\nContent-Length: %d\r\n\r\n"
    answered_in_pieces(setup.endpoint().last, head, body)
    (response,) = parse_responses(client.take())  # all of it, at once
    assert response.body == body


def test_the_rate_of_an_answer_retried_elsewhere_is_dropped_with_it() -> None:
    setup = make_proxy(TWO, retry_statuses=(503,))
    client = connect(routed(setup.handler, 0), clock=setup.clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint(0).last.respond(
        b"HTTP/1.1 503 Busy\r\nX-Accel-Limit-Rate: 1024\r\nContent-Length: 0\r\n\r\n"
    )
    body = bytes(64 * KB)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
    answered_in_pieces(setup.endpoint(1).last, head, body)
    (response,) = parse_responses(client.take())  # all of it, at once
    assert response.body == body


@pytest.mark.parametrize(("threads", "asked"), [(False, True), (True, True), (True, False)])
def test_a_one_piece_body_goes_at_the_rate_too(threads: bool, asked: bool) -> None:
    """A list of one body, what most frameworks return: written in steps of the
    rate, the mount's or the one asked, not in one write past it, with the length a
    single write would have had. Not wrapped in wsgiref's validator, whose iterator
    in place of the list would make it a streamed body, whose pieces go as they come.
    """
    fields = [("Content-Type", "video/mp4")] + ([("X-Accel-Limit-Rate", "10240")] if asked else [])

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", fields)
        return [bytes(range(256)) * 800]  # 200 KB

    clock = SynchronousReactorThreads()
    pool = SynchronousThreadPool() if threads else None
    handler = WSGIHandler(app, reactor=clock, threadpool=pool)
    client = connect(routed(handler, 0 if asked else 10 * KB), clock=clock)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = received_over_time(client, clock, 22.0)
    assert_paced(seen, 10 * KB, 0, 1 * KB, 200 * KB)
    (response,) = parse_responses(client.take())
    assert response.body == bytes(range(256)) * 800
    assert response.header(b"content-length") == b"204800"


def test_a_threaded_error_answer_that_replaces_the_head_drops_its_rate() -> None:
    calls, clock, pool = CallQueue(), Clock(), TrackingPool(1)
    pool.start()
    try:
        handler = WSGIHandler(replacing_its_head, reactor=calls, threadpool=pool)
        client = connect(routed(handler, 0), clock=clock)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # The clock never moves: a response held for a rate would never end.
        calls.run_until(lambda: pool.idle and b"0\r\n\r\n" in client.transport.value())
        calls.run_pending()
        (response,) = parse_responses(client.take())
        assert (response.status, len(response.body)) == (500, 200 * KB)
    finally:
        pool.stop()


def test_a_head_answer_with_a_one_piece_body_is_not_held() -> None:
    """Nothing of the body goes: the head at once, with the GET's length."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "video/mp4"), ("X-Accel-Limit-Rate", "1024")])
        return [bytes(200 * KB)]

    clock = SynchronousReactorThreads()
    handler = WSGIHandler(app, reactor=clock, threadpool=SynchronousThreadPool())
    client = connect(routed(handler, 0), clock=clock)
    client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    (response,) = parse_responses(client.take(), methods=[b"HEAD"])
    assert response.header(b"content-length") == b"204800"
    assert pace_timers(clock) == []


@pytest.mark.parametrize(
    ("request_rate", "target", "asked", "rate", "after"),
    [
        (0, (100 * KB, 0), None, 100 * KB, 0),  # the target's own rate
        (0, (50 * KB, 100 * KB), "102400", 100 * KB, 100 * KB),  # asked, the target's after
        (10 * KB, (0, 0), None, 0, 0),  # the mount's rate is not the file's
        (0, (0, 100 * KB), "102400", 100 * KB, 100 * KB),  # the target's after alone
        (0, (100 * KB, 100 * KB), None, 100 * KB, 100 * KB),  # the target's, both
    ],
)
def test_an_x_accel_redirect_file_goes_at_the_rate_of_the_mount_that_sends_it(  # noqa: PLR0917
    tmp_path: Path,
    request_rate: int,
    target: tuple[int, int],
    asked: str | None,
    rate: int,
    after: int,
) -> None:
    """As nginx: the location the file is sent from decides (its limit_rate and
    limit_rate_after), unless the answer asks for a rate (which keeps its after).
    """
    root, data = film(tmp_path)
    clock = SynchronousReactorThreads()
    fields = [("Content-Type", "video/mp4"), ("X-Accel-Redirect", "/private/film.mp4")]
    if asked is not None:
        fields.append(("X-Accel-Limit-Rate", asked))

    def redirecting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", fields)
        return [b""]

    handler = WSGIHandler(
        validator(redirecting),
        reactor=clock,
        threadpool=SynchronousThreadPool(),
        accel=internal_files(root, clock, *target),
    )
    client = connect(routed(handler, request_rate), clock=clock)
    client.send(b"GET /film HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = pulled_over_time(client, clock, 6.0)
    if rate:
        assert_paced(seen, rate, after, 64 * KB, len(data))
    else:
        assert next(now for now, total in seen if total > len(data)) < 0.5  # no waiting
    (response,) = parse_responses(client.take())
    assert response.body == data


@pytest.mark.parametrize("hidden", [(), ("X-Accel-Limit-Rate",)])
def test_an_upstream_s_x_accel_redirect_file_goes_at_the_rate_it_asks(
    tmp_path: Path, hidden: tuple[str, ...]
) -> None:
    """Even with the field hidden from the client (proxy_hide_header), which only
    keeps it from the client, not from being read.
    """
    root, data = film(tmp_path)
    setup = make_proxy(proxy_hide_header=hidden)
    setup.handler.accel = internal_files(root, setup.clock)
    client = connect(routed(setup.handler, 0), clock=setup.clock)
    client.send(b"GET /film HTTP/1.1\r\nHost: x\r\n\r\n")
    setup.endpoint().last.respond(
        b"HTTP/1.1 200 OK\r\nX-Accel-Redirect: /private/film.mp4\r\n"
        b"X-Accel-Limit-Rate: 102400\r\nContent-Length: 0\r\n\r\n"
    )
    seen = pulled_over_time(client, setup.clock, 6.0)
    assert_paced(seen, 100 * KB, 0, 64 * KB, len(data))
    (response,) = parse_responses(client.take())
    assert response.body == data
    assert (response.header(b"x-accel-limit-rate") is None) == bool(hidden)


@pytest.mark.parametrize("redirected", [False, True])
def test_an_upstream_s_asked_rate_is_ignored_with_proxy_ignore_headers(
    tmp_path: Path, redirected: bool
) -> None:
    """As nginx's proxy_ignore_headers X-Accel-Limit-Rate: the mount's rate stands (none
    here), for the upstream's body and for the file it names alike.
    """
    root, data = film(tmp_path)
    setup = make_proxy(proxy_ignore_headers=("x-accel-limit-rate",))
    setup.handler.accel = internal_files(root, setup.clock)
    client = connect(routed(setup.handler, 0), clock=setup.clock)
    client.send(b"GET /film HTTP/1.1\r\nHost: x\r\n\r\n")
    if redirected:
        setup.endpoint().last.respond(
            b"HTTP/1.1 200 OK\r\nX-Accel-Redirect: /private/film.mp4\r\n"
            b"X-Accel-Limit-Rate: 1024\r\nContent-Length: 0\r\n\r\n"
        )
        seen = pulled_over_time(client, setup.clock, 0.5)
        assert seen[-1][1] > len(data)  # all of it, without waiting
    else:
        head = b"HTTP/1.1 200 OK\r\nX-Accel-Limit-Rate: 1024\r\nContent-Length: %d\r\n\r\n"
        answered_in_pieces(setup.endpoint().last, head, data)
    (response,) = parse_responses(client.take())
    assert response.body == data
    assert response.header(b"x-accel-limit-rate") == b"1024"  # (passed on all the same)
