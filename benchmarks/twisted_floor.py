"""The floor: what Twisted's reactor alone costs per request on this machine.

Not an HTTP server. It parses nothing but the end of each request head (and, for files, the
path in the request line), and answers with response bytes built at start-up, so whatever
it reaches is the most any HTTP server written in Python on Twisted's reactor can reach on the
same machine: the reactor loop, one ``recv`` and one ``send`` per batch of requests, and
nothing else. Three modes, one per kind of scenario:

- ``hello``: every request gets the 13-byte ``Hello, World!`` with the headers twistwsgi sends.
- ``files DIR``: a request for ``/static/NAME`` gets the bytes of ``DIR/NAME`` (read once, kept
  in memory, no ``sendfile``), with the headers twistwsgi's static files send; so for large files
  it is a floor of a different machine (copies from memory), not a ceiling for sendfile.
- ``relay HOST:PORT``: each client connection gets its own connection to the upstream and the
  bytes are copied both ways unread: the floor of a reverse proxy that keeps one upstream
  connection per client connection.

With ``--direct`` it takes the reactor paths twistwsgi's command line installs: socket events
dispatched without Twisted's log context, reads handed to the protocol from the poll loop, and
writes sent straight to the socket, held to the end of each batch of events
(:mod:`twistwsgi.dispatch`, :mod:`twistwsgi.http.transport`). Without it, Twisted's own paths,
which twistwsgi no longer takes: so the plain floor is not an upper bound for twistwsgi, the
direct one is.

Usage: python twisted_floor.py --listen tcp:8080:interface=127.0.0.1 hello
       python twisted_floor.py --listen ... files /path/to/static
       python twisted_floor.py --listen ... relay 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

from twisted.internet import endpoints, protocol, reactor, task

HEAD_END = b"\r\n\r\n"

#: How a protocol sends: ``transport.write`` or twistwsgi's ``write_now``.
Writer = Callable[[Any, bytes], None]


def _twisted_write(transport: Any, data: bytes) -> None:
    transport.write(data)


HELLO_BODY = b"Hello, World!"


class Responses:
    """Response bytes by request path, their Date header refreshed once a second."""

    def __init__(self) -> None:
        self._parts: dict[bytes, tuple[bytes, bytes]] = {}
        self.by_path: dict[bytes, bytes] = {}
        self.fallback = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def add(self, path: bytes, headers: list[tuple[str, str]], body: bytes) -> None:
        status = b"HTTP/1.1 200 OK\r\nServer: twisted-floor\r\n"
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._parts[path] = (status, lines.encode("latin-1") + b"\r\n" + body)

    def refresh_date(self) -> None:
        date = f"Date: {formatdate(usegmt=True)}\r\n".encode("ascii")
        self.by_path = {path: status + date + rest for path, (status, rest) in self._parts.items()}


class AnswerEachHead(protocol.Protocol):
    """Answers every complete request head with the pre-built response for its path."""

    def __init__(self, responses: Responses, one_path: bool, write: Writer) -> None:
        self._responses = responses
        self._one_path = one_path
        self._write = write
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        buffer = self._pending + data if self._pending else data
        by_path = self._responses.by_path
        replies = []
        start = 0
        while (end := buffer.find(HEAD_END, start)) >= 0:
            if self._one_path:
                path = b"/"
            else:
                first_space = buffer.find(b" ", start, end)
                path = buffer[first_space + 1 : buffer.find(b" ", first_space + 1, end)]
            replies.append(by_path.get(path, self._responses.fallback))
            start = end + len(HEAD_END)
        self._pending = buffer[start:]
        if replies:
            self._write(self.transport, b"".join(replies))


class RelayToClient(protocol.Protocol):
    """The upstream side of a relay: copies what the upstream sends to the client."""

    def __init__(self, client: RelayFromClient, write: Writer) -> None:
        self._client = client
        self._write = write

    def connectionMade(self) -> None:
        self._client.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        self._write(self._client.transport, data)

    def connectionLost(self, reason: object = None) -> None:
        self._client.transport.loseConnection()


class RelayFromClient(protocol.Protocol):
    """The client side of a relay: one upstream connection, opened when the client connects."""

    def __init__(self, upstream: tuple[str, int], write: Writer) -> None:
        self._upstream_address = upstream
        self._write = write
        self._upstream: RelayToClient | None = None
        self._early: list[bytes] = []

    def connectionMade(self) -> None:
        host, port = self._upstream_address
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port)
        connecting = endpoints.connectProtocol(endpoint, RelayToClient(self, self._write))
        connecting.addErrback(lambda _: self.transport.loseConnection())

    def upstream_ready(self, upstream: RelayToClient) -> None:
        self._upstream = upstream
        for data in self._early:
            self._write(upstream.transport, data)
        self._early = []

    def dataReceived(self, data: bytes) -> None:
        if self._upstream is None:
            self._early.append(data)
        else:
            self._write(self._upstream.transport, data)

    def connectionLost(self, reason: object = None) -> None:
        if self._upstream is not None:
            self._upstream.transport.loseConnection()


class EachConnection(protocol.Factory):
    """A factory calling ``make`` for each connection's protocol."""

    def __init__(self, make: Callable[[], protocol.Protocol]) -> None:
        self._make = make

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        built = self._make()
        built.factory = self
        return built


def _hello() -> Responses:
    responses = Responses()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO_BODY)))]
    responses.add(b"/", headers, HELLO_BODY)
    return responses


def _files(folder: Path) -> Responses:
    responses = Responses()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        body = path.read_bytes()
        status = path.stat()
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
            ("Last-Modified", formatdate(status.st_mtime, usegmt=True)),
            ("ETag", f'"{hashlib.sha1(body).hexdigest()[:16]}"'),
            ("Accept-Ranges", "bytes"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        responses.add(f"/static/{path.name}".encode(), headers, body)
    return responses


def main() -> None:
    """Serve the chosen mode until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="Twisted server endpoint string")
    parser.add_argument(
        "--direct", action="store_true", help="take twistwsgi's dispatch and write paths"
    )
    parser.add_argument("mode", choices=("hello", "files", "relay"))
    parser.add_argument("where", nargs="?", help="files: the folder; relay: HOST:PORT")
    args = parser.parse_args()
    write: Writer = _twisted_write
    if args.direct:
        from twistwsgi import dispatch
        from twistwsgi.http.transport import write_now

        dispatch.skip_log_context()
        dispatch.read_inline(reactor)
        write = write_now
    if args.mode == "relay":
        host, _, port = args.where.rpartition(":")
        factory = EachConnection(lambda: RelayFromClient((host, int(port)), write))
    else:
        responses = _hello() if args.mode == "hello" else _files(Path(args.where))
        task.LoopingCall(responses.refresh_date).start(1.0)
        one_path = args.mode == "hello"
        factory = EachConnection(lambda: AnswerEachHead(responses, one_path, write))
    listening = endpoints.serverFromString(reactor, args.listen).listen(factory)
    listening.addCallback(lambda port: print(f"{args.mode} on {port.getHost()}", flush=True))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
