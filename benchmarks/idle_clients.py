"""Open many keep-alive connections to a server, send one request on each, and hold them idle.

Used by scenario 7 (run by the harness, not by hand). Protocol on stdin/stdout, one JSON object a
line: after the opening phase it prints ``{"phase": "opened", ...}``; each line then read from
stdin prints ``{"phase": "report", ...}`` with how many connections are still open; end of stdin
closes every connection and exits.

Counts: ``attempted`` (always N), ``connected``, ``answered`` (got the whole response),
``closed_by_server`` (after answering), and derived ``not_connected`` (no connection within the
opening window: refused, timed out, or never tried because 200 earlier ones still waited for an
answer), ``no_answer`` and ``still_open``.

Usage: python idle_clients.py --port PORT --count N [--open-timeout S] [--path /]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
from dataclasses import asdict, dataclass

OPEN_CONCURRENCY = 200
CONNECT_TIMEOUT = 5.0


@dataclass
class Tally:
    """What happened to the connections so far."""

    attempted: int = 0
    connected: int = 0
    answered: int = 0
    closed_by_server: int = 0

    def summary(self) -> dict[str, int]:
        """The counts plus what follows from them."""
        return {
            **asdict(self),
            "not_connected": self.attempted - self.connected,
            "no_answer": self.connected - self.answered,
            "still_open": self.answered - self.closed_by_server,
        }


def _raise_nofile(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _read_response(reader: asyncio.StreamReader) -> None:
    """Read one response with a Content-Length body (the hello app's)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)


class Holder:
    """Owns the connections and watches each one for the server closing it."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode("ascii")
        self.tally = Tally()
        self.writers: list[asyncio.StreamWriter] = []
        self.watchers: list[asyncio.Task[None]] = []

    async def open_one(self, gate: asyncio.Semaphore, answer_timeout: float) -> None:
        """Connect, send the request, wait for the answer, then watch the idle connection."""
        self.tally.attempted += 1
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                return
            self.tally.connected += 1
            self.writers.append(writer)
            try:
                writer.write(self.request)
                await asyncio.wait_for(_read_response(reader), answer_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                return
        self.tally.answered += 1
        self.watchers.append(asyncio.create_task(self._watch(reader)))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)  # b"" (or an error) once the server closes the connection
        self.tally.closed_by_server += 1

    def close(self) -> None:
        """Close every connection."""
        for task in self.watchers:
            task.cancel()
        for writer in self.writers:
            writer.close()


def _emit(phase: str, tally: Tally) -> None:
    record = {"phase": phase, **tally.summary()}
    print(json.dumps(record), flush=True)


async def _main(args: argparse.Namespace) -> None:
    holder = Holder(args.port, args.path)
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    openers = [
        asyncio.create_task(holder.open_one(gate, args.open_timeout)) for _ in range(args.count)
    ]
    await asyncio.wait(openers, timeout=args.open_timeout + CONNECT_TIMEOUT)
    for task in openers:
        task.cancel()
    _emit("opened", holder.tally)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        _emit("report", holder.tally)
    holder.close()


def main() -> None:
    """Parse the arguments and hold the connections until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--open-timeout", type=float, default=20.0)
    parser.add_argument("--path", default="/")
    args = parser.parse_args()
    _raise_nofile(args.count)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
