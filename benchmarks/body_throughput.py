"""Request and response body throughput through the WSGI bridge, without wrk.

Starts the real server (the command line's configuration, event dispatch and
garbage-collection tuning) in a child process on ``127.0.0.1:0`` and drives it
from plain sockets, one client thread per connection, each sending its requests
one after the other on its keep-alive connection:

- ``upload``: ``POST`` bodies of ``--size`` bytes (``Content-Length``, or chunked
  with ``--chunked`` in 64 KiB chunks) to ``benchmarks.apps:upload``, which reads
  them in 64 KiB ``wsgi.input`` reads and answers with the count (checked).
- ``stream``: ``GET`` of ``benchmarks.apps:stream_100k``, 100 KB yielded in 8 KB
  chunks and sent chunked (the response is read to its last chunk).

It prints requests a second, body megabytes (10^6 bytes) a second and the
server's CPU time per request (user and kernel, from ``/proc``: steadier than the
wall time on a shared machine), for the server's thread pool (``--threads``,
default 10) or the reactor thread (``--threads 0``). ``--profile FILE`` runs the
server under cProfile and writes the statistics of every thread, merged, to
``FILE`` and the reactor thread's alone to ``FILE.reactor`` (read them with
``python -m pstats FILE``); each thread's times are wall-clock, its waits
included, and the throughput is then the profiler's. The machine's other load
shows in the numbers: compare two builds in alternating runs, best of several.

Usage: python benchmarks/body_throughput.py upload --size 10000000 --count 100
       python benchmarks/body_throughput.py stream --count 5000 --connections 50
       python benchmarks/body_throughput.py upload --threads 0 --profile up.prof
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
APPS = {"upload": "benchmarks.apps:upload", "stream": "benchmarks.apps:stream_100k"}
SEND_CHUNK = 64 * 1024
_LAST_CHUNK = b"\r\n0\r\n\r\n"


@dataclass(frozen=True)
class Result:
    """What one run measured.

    Attributes:
        requests: requests answered (each checked).
        seconds: wall time from the first request sent to the last answer read.
        body_bytes: request body bytes sent (upload) or response body bytes read
            (stream).
        server_cpu: the server process's CPU seconds (user and system, every
            thread) over the run, from ``/proc`` (``None`` elsewhere): less
            sensitive to the machine's other load than the wall time.
        server_system: of ``server_cpu``, the seconds in the kernel (the
            socket's copies and TCP, mostly).
    """

    requests: int
    seconds: float
    body_bytes: int
    server_cpu: float | None = None
    server_system: float | None = None

    @property
    def per_second(self) -> float:
        """Requests a second."""
        return self.requests / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        """Body megabytes (10^6 bytes) a second."""
        return self.body_bytes / self.seconds / 1e6


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """The user and system CPU seconds process ``pid`` has used, if ``/proc`` says."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3.
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# -- the server (child process) ---------------------------------------------------------------


def serve(scenario: str, threads: int, profile: str | None) -> None:
    """Run the server for ``scenario`` until stdin closes; print its port first."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    from twistwsgi import cli
    from twistwsgi.dispatch import read_inline, skip_log_context
    from twistwsgi.service import make_service

    given = {
        "app": APPS[scenario],
        "listen": ["tcp:0:interface=127.0.0.1"],
        "threads": str(threads),
        "access_log": "off",
        "max_body": "0",
        "keepalive_requests": "0",
    }
    config = cli.load_config(given)
    service = make_service(config, reactor=reactor, endpoints=cli.build_endpoints(reactor, config))
    skip_log_context()
    read_inline(reactor)
    reactor.callWhenRunning(cli.tune_garbage_collection)

    def started() -> None:
        service.startService()
        port = service.ports[0].getHost().port  # type: ignore[attr-defined]
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        threading.Thread(target=_stop_when_stdin_closes, args=(reactor,), daemon=True).start()

    reactor.callWhenRunning(started)
    if profile is None:
        reactor.run()
        return
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []

    def profile_thread(*_: object) -> None:
        # Each worker thread profiles itself from its first call on.
        sys.setprofile(None)
        worker = cProfile.Profile()
        profiles.append(worker)
        worker.enable()

    threading.setprofile(profile_thread)
    main = cProfile.Profile()
    main.enable()
    reactor.run()
    main.disable()
    pstats.Stats(main).dump_stats(profile + ".reactor")
    stats = pstats.Stats(main)
    for worker in profiles:
        worker.create_stats()
        stats.add(worker)
    stats.dump_stats(profile)


def _stop_when_stdin_closes(reactor: object) -> None:
    sys.stdin.read()
    reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]


# -- the clients ------------------------------------------------------------------------------


def _read_response(connection: socket.socket, buffer: bytearray) -> bytes:
    """Read one response with a ``Content-Length``; return its body."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        _receive(connection, buffer)
    head = bytes(buffer[:end]).lower()
    at = head.index(b"content-length:") + len(b"content-length:")
    length = int(head[at:].split(b"\r\n", 1)[0])
    total = end + 4 + length
    while len(buffer) < total:
        _receive(connection, buffer)
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    if not head.startswith(b"http/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:80]!r}")
    return body


def _read_chunked(connection: socket.socket, buffer: bytearray) -> int:
    """Read one chunked response to its last chunk; return its body's size."""
    while not buffer.endswith(_LAST_CHUNK):
        _receive(connection, buffer)
    end = buffer.index(b"\r\n\r\n")
    if not buffer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {bytes(buffer[:80])!r}")
    size = 0
    at = end + 4
    while True:  # (the client's own cost: sizes only, no copies)
        line_end = buffer.index(b"\r\n", at)
        length = int(buffer[at:line_end], 16)
        if not length:
            break
        size += length
        at = line_end + 2 + length + 2
    del buffer[:]
    return size


def _receive(connection: socket.socket, buffer: bytearray) -> None:
    data = connection.recv(1 << 20)
    if not data:
        raise RuntimeError("the server closed the connection")
    buffer += data


def _upload_client(port: int, count: int, body: bytes, *, chunked: bool) -> int:
    sent = 0
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n"
    else:
        framing = b"Content-Length: %d\r\n" % len(body)
    head = b"POST /upload HTTP/1.1\r\nHost: bench\r\n" + framing + b"\r\n"
    view = memoryview(body)
    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        for _ in range(count):
            connection.sendall(head)
            if chunked:
                for start in range(0, len(body), SEND_CHUNK):
                    piece = view[start : start + SEND_CHUNK]
                    connection.sendall(b"%x\r\n" % len(piece))
                    connection.sendall(piece)
                    connection.sendall(b"\r\n")
                connection.sendall(b"0\r\n\r\n")
            else:
                connection.sendall(view)
            answer = _read_response(connection, buffer)
            if answer != b"%d" % len(body):
                raise RuntimeError(f"the app read {answer!r} of {len(body)} bytes")
            sent += len(body)
    return sent


def _stream_client(port: int, count: int) -> int:
    received = 0
    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        for _ in range(count):
            connection.sendall(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")
            received += _read_chunked(connection, buffer)
    return received


def measure(
    port: int,
    scenario: str,
    *,
    count: int,
    connections: int,
    size: int = 10_000_000,
    chunked: bool = False,
) -> Result:
    """Send ``count`` requests over ``connections`` connections; time them."""
    body = b"u" * size
    shares = [count // connections + (i < count % connections) for i in range(connections)]
    totals: list[int] = []
    errors: list[BaseException] = []

    def client(share: int) -> None:
        try:
            if scenario == "upload":
                totals.append(_upload_client(port, share, body, chunked=chunked))
            else:
                totals.append(_stream_client(port, share))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=client, args=(share,)) for share in shares if share]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    return Result(requests=count, seconds=seconds, body_bytes=sum(totals))


def run(
    scenario: str,
    *,
    count: int,
    connections: int,
    threads: int = 10,
    size: int = 10_000_000,
    chunked: bool = False,
    profile: str | None = None,
) -> Result:
    """Start the server for ``scenario`` in a child process, measure, stop it."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")])
    )
    argv = [sys.executable, __file__, "--serve", scenario, "--threads", str(threads)]
    if profile is not None:
        argv += ["--profile", profile]
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
        cwd=REPOSITORY,
    ) as server:
        assert server.stdout is not None and server.stdin is not None
        try:
            line = server.stdout.readline()
            if not line.strip().isdigit():
                raise RuntimeError(f"the server did not start: {line!r}")
            port = int(line)
            # One request first: imports and the first thread are not measured.
            measure(port, scenario, count=1, connections=1, size=min(size, 1024), chunked=chunked)
            cpu_before = _cpu_seconds(server.pid)
            result = measure(
                port, scenario, count=count, connections=connections, size=size, chunked=chunked
            )
            cpu_after = _cpu_seconds(server.pid)
            if cpu_before is None or cpu_after is None:
                return result
            user = cpu_after[0] - cpu_before[0]
            system = cpu_after[1] - cpu_before[1]
            return replace(result, server_cpu=user + system, server_system=system)
        finally:
            server.stdin.close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> None:
    """Parse the command line and run a measurement (or serve, in the child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(APPS))
    parser.add_argument("--count", type=int, default=0, help="requests (default 100/5000)")
    parser.add_argument("--connections", type=int, default=0, help="(default 10/50)")
    parser.add_argument("--size", type=int, default=10_000_000, help="upload body bytes")
    parser.add_argument("--chunked", action="store_true", help="chunked uploads")
    parser.add_argument("--threads", type=int, default=10, help="0: the reactor thread")
    parser.add_argument("--profile", help="write the server's cProfile statistics here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(options.scenario, options.threads, options.profile)
        return
    upload = options.scenario == "upload"
    result = run(
        options.scenario,
        count=options.count or (100 if upload else 5000),
        connections=options.connections or (10 if upload else 50),
        threads=options.threads,
        size=options.size,
        chunked=options.chunked,
        profile=options.profile,
    )
    print(
        f"{options.scenario} threads={options.threads}: {result.requests} requests in"
        f" {result.seconds:.2f} s, {result.per_second:.1f} req/s,"
        f" {result.megabytes_per_second:.1f} MB/s of body"
        + (
            ""
            if result.server_cpu is None
            else f", server CPU {result.server_cpu / result.requests * 1e3:.3f} ms/request"
            f" ({(result.server_system or 0) / result.requests * 1e3:.3f} in the kernel)"
        )
    )


if __name__ == "__main__":
    main()
