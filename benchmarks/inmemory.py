"""In-memory cost of one request through twistwsgi: Python time per request, no sockets.

wrk on loopback measures the whole machine (kernel, the other engineers' test suites); this
meter measures only the Python that twistwsgi runs per request, so a change to the request
path can be compared A/B in seconds and profiled. It builds the server the way ``twistd wsgi``
does: the command line is parsed by :class:`twistwsgi.cli.Options` and the service built by
:func:`twistwsgi.service.make_service`, with the options the benchmark suite gives twistwsgi
(``--access-log off --keepalive-requests 0``). Its protocol is connected to an in-memory
transport and sent keep-alive requests one at a time, the way wrk's connections send them:

* ``hello``: ``--app benchmarks.apps:hello --threads 0`` (the application called in the
  reactor thread), ``GET /``;
* ``static``: ``--static /static=DIR`` with a 10 KB file, ``GET /static/10k.bin``;
* ``proxy``: ``--proxy /=http://127.0.0.1:8081``, whose upstream is an in-memory peer answering
  every request head with a fixed 13-byte response. The proxy's own client, pool and
  forwarding code run; only the upstream connection's endpoint is replaced (connecting hands
  over an in-memory transport at once).

Time comes from a :class:`twisted.internet.task.Clock` that never advances (timers are set
and cancelled as in production, but never fire; the ``Date`` header stays the same). Each
case prints microseconds per request: the best of ``--repeat`` runs of ``--requests``
requests each (the best, not the mean: on a shared machine the noise only ever adds time).
The first response is parsed with h11 and must be a 200 with the expected body; every later
response of the run must be byte-for-byte the same, so a change that breaks a response
cannot look fast. The proxy's upstream checks what it is sent the same way (the first
request parsed with h11, the later ones the same bytes).

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/inmemory.py            # all three cases
    PYTHONPATH=$PWD .venv/bin/python benchmarks/inmemory.py proxy --repeat 9
    PYTHONPATH=$PWD .venv/bin/python benchmarks/inmemory.py --profile proxy

To compare two commits, run it in two worktrees (``git worktree add /tmp/base main``)
alternately, several times each, and compare the best numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from twistwsgi.cli import Options
from twistwsgi.config import MountConfig, ServerConfig
from twistwsgi.forwarding import UpstreamAddress
from twistwsgi.proxy import ProxyHandler, build_proxy
from twistwsgi.service import make_service

CASES = ("hello", "static", "proxy")

#: What wrk sends on each keep-alive request (``wrk -t1 -c50 http://127.0.0.1:8080/``),
#: before the empty line (a browser's request adds :data:`BROWSER_FIELDS`).
REQUEST_HEAD = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"

#: The other field lines a browser sends with a page or file request (Firefox's, and a
#: field with an underscore, which a proxy treats apart): for paths only such a request takes.
BROWSER_FIELDS = (
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: http://127.0.0.1:8080/\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Priority: u=0, i\r\n"
    b"X_Request_Tag: 7\r\n"
)

HELLO_BODY = b"Hello, World!"

#: The upstream's answer to every request head, as the benchmark's upstream (nginx's
#: ``return 200 "Hello, World!"`` with ``default_type text/plain``) words it.
UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n" + HELLO_BODY
)

STATIC_SIZE = 10 * 1024

SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8080)
CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
UPSTREAM_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8081)


class MemoryTransport(StringTransport):
    """A ``StringTransport`` that keeps what is written as a list of chunks.

    (Joined once when taken: cheaper than ``StringTransport``'s ``BytesIO``, so less of the
    measured time is the meter's own.)
    """

    def __init__(self, host: IPv4Address, peer: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Keep ``data``."""
        self.chunks.append(data)

    def writeSequence(self, seq: Any) -> None:  # noqa: N802 - Twisted's name
        """Keep each chunk of ``seq``."""
        self.chunks.extend(seq)

    def take(self) -> bytes:
        """Return and forget what was written so far."""
        written = b"".join(self.chunks)
        self.chunks.clear()
        return written


@dataclass
class Upstream:
    """The in-memory upstream: its connections (client protocol, transport) as opened.

    It answers whatever it is sent, so it checks what it is sent: the first request
    is parsed with h11 and must be the client's ``GET /`` with this hop's forwarding
    fields; every later one must be byte-for-byte the same (a change that breaks the
    request the proxy sends must not look fast either).
    """

    connections: list[tuple[Any, MemoryTransport]] = field(default_factory=list)
    first_request: bytes | None = None

    def pump(self) -> bool:
        """Answer each request head the proxy wrote; whether any was answered."""
        answered = False
        for protocol, transport in self.connections:
            if transport.disconnecting:
                continue
            sent = transport.take()
            heads = sent.count(b"\r\n\r\n")
            if heads:
                self._check(sent, heads)
                answered = True
                protocol.dataReceived(UPSTREAM_RESPONSE * heads)
        return answered

    def _check(self, sent: bytes, heads: int) -> None:
        if self.first_request is None:
            check_upstream_request(sent)
            self.first_request = sent
        elif sent != self.first_request * heads:
            raise AssertionError(
                f"proxy: a request to the upstream differs from the first one: {sent[:300]!r}"
            )


def check_upstream_request(sent: bytes) -> None:
    """Parse what the proxy sent with h11: one ``GET /`` the client's, or raise."""
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(sent)
    request = parser.next_event()
    fields = dict(request.headers) if isinstance(request, h11.Request) else {}
    if (
        not isinstance(request, h11.Request)
        or (request.method, request.target) != (b"GET", b"/")
        or fields.get(b"host") != b"127.0.0.1:8080"
        or fields.get(b"x-forwarded-for") != CLIENT_ADDRESS.host.encode("ascii")
        or not isinstance(parser.next_event(), h11.EndOfMessage)
        or parser.trailing_data[0]
    ):
        raise AssertionError(f"proxy: the upstream got {sent[:300]!r}")


@implementer(IStreamClientEndpoint)
@dataclass
class MemoryEndpoint:
    """Connects at once to :class:`Upstream` through a :class:`MemoryTransport`."""

    upstream: Upstream

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        """Open one in-memory connection to the upstream."""
        protocol = factory.buildProtocol(UPSTREAM_ADDRESS)
        assert protocol is not None
        transport = MemoryTransport(CLIENT_ADDRESS, UPSTREAM_ADDRESS)
        protocol.makeConnection(transport)
        self.upstream.connections.append((protocol, transport))
        return succeed(protocol)


@dataclass
class Case:
    """One case, built: how to send one request, and what must come back."""

    run: Callable[[int, bytes | None], bytes]
    target: bytes
    body: bytes
    close: Callable[[], None]


def _argv(case: str, docroot: Path) -> list[str]:
    common = ["--access-log", "off", "--keepalive-requests", "0"]
    if case == "proxy":
        return ["--proxy", "/=http://127.0.0.1:8081", *common]
    argv = ["--app", "benchmarks.apps:hello", "--threads", "0", *common]
    if case == "static":
        argv += ["--static", f"/static={docroot / 'static'}"]
    return argv


def build(case: str, docroot: Path, *, fields: bytes = b"") -> Case:
    """Build the server of ``case`` and one keep-alive connection to it.

    ``fields`` are field lines (each ending in CRLF) each request carries after Host.
    """
    options = Options()
    options.parseOptions(_argv(case, docroot))
    config: ServerConfig = options.config
    clock = Clock()
    upstream = Upstream()

    def proxy_mount(mount: MountConfig, config: ServerConfig) -> ProxyHandler:
        def endpoint(address: UpstreamAddress) -> MemoryEndpoint:
            return MemoryEndpoint(upstream)

        return build_proxy(mount, config, reactor=clock, endpoint_factory=endpoint)

    service = make_service(config, reactor=clock, endpoints=[], builders={"proxy": proxy_mount})
    protocol = service.factory.buildProtocol(CLIENT_ADDRESS)
    transport = MemoryTransport(SERVER_ADDRESS, CLIENT_ADDRESS)
    protocol.makeConnection(transport)
    target = b"/static/10k.bin" if case == "static" else b"/"
    request = REQUEST_HEAD % target + fields + b"\r\n"
    receive = protocol.dataReceived
    pump = upstream.pump
    advance = clock.advance

    def run(count: int, expected: bytes | None) -> bytes:
        # With ``expected``, each response is taken as it is written and compared, as a
        # socket would take it: kept until the end, 20,000 copies of a 10 KB file made
        # the meter time its own 200 MB of allocations (page faults, one huge join).
        take = transport.take
        for _ in range(count):
            receive(request)
            # The proxy's request reaches the upstream, whose answer comes back; then
            # calls the server scheduled for "now" run, as the reactor would run them.
            while pump():
                pass
            advance(0)
            if expected is not None and take() != expected:
                raise AssertionError(f"{case}: a response differs from the first one")
        if len(upstream.connections) > 1:
            raise AssertionError(f"{case}: the upstream connection was not kept alive")
        return take()

    def close() -> None:
        protocol.transport.loseConnection()
        service.stopService()

    body = (docroot / "static" / "10k.bin").read_bytes() if case == "static" else HELLO_BODY
    return Case(run, target, body, close)


def check_first(case: str, response: bytes, expected_body: bytes) -> None:
    """Parse one response with h11: a 200 with ``expected_body``, or raise."""
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    parser.receive_data(response)
    status = None
    body = b""
    while True:
        event = parser.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) or event is h11.NEED_DATA:
            break
    if status != 200 or body != expected_body:
        raise AssertionError(f"{case}: got status {status} and a {len(body)}-byte body")
    if parser.their_state is not h11.DONE or parser.trailing_data[0]:
        raise AssertionError(f"{case}: not one whole response: {response[:200]!r}")


@contextmanager
def docroot_with_file() -> Iterator[Path]:
    """A temporary document root holding ``static/10k.bin`` (as the benchmark suite's)."""
    with tempfile.TemporaryDirectory(prefix="twistwsgi-inmemory-") as directory:
        root = Path(directory)
        (root / "static").mkdir()
        (root / "static" / "10k.bin").write_bytes(bytes(range(256)) * (STATIC_SIZE // 256))
        yield root


def measure(case: str, *, requests: int, repeat: int, docroot: Path) -> float:
    """Microseconds per request of ``case``: the best of ``repeat`` runs of ``requests``.

    Raises:
        AssertionError: a response is not the expected 200.
    """
    built = build(case, docroot)
    try:
        first = built.run(1, None)
        check_first(case, first, built.body)
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            built.run(requests, first)
            elapsed = time.perf_counter() - started
            best = min(best, elapsed)
        return best / requests * 1e6
    finally:
        built.close()


def profile(case: str, *, requests: int, docroot: Path, limit: int = 45) -> None:
    """Print a cProfile listing of ``requests`` requests of ``case``, by own time."""
    built = build(case, docroot)
    try:
        first = built.run(1, None)
        check_first(case, first, built.body)
        profiler = cProfile.Profile()
        profiler.enable()
        built.run(requests, first)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(limit)
    finally:
        built.close()


def chosen_cases(parser: argparse.ArgumentParser, names: list[str]) -> tuple[str, ...]:
    """The cases named on a command line (all when none); a usage error for another name."""
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown case {unknown[0]!r} (choose from {', '.join(CASES)})")
    return tuple(names) or CASES


def main(argv: list[str] | None = None) -> int:
    """Measure (or profile) the cases named on the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("cases", nargs="*", metavar="CASE", help="hello, static, proxy (all)")
    parser.add_argument("--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (the best counts)")
    parser.add_argument("--profile", choices=CASES, help="print a cProfile listing of one case")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.cases)
    with docroot_with_file() as docroot:
        if args.profile:
            profile(args.profile, requests=args.requests, docroot=docroot)
            return 0
        for case in cases:
            cost = measure(case, requests=args.requests, repeat=args.repeat, docroot=docroot)
            print(f"{case:8} {cost:7.2f} us/request", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
