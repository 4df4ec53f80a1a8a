"""What a reverse proxy passes on when its upstream misbehaves: twistwsgi beside nginx.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/upstream_wire.py [--proxies twistwsgi,nginx]
        [--cases SUBSTRING] [--port-base N] [--timeout S] [--raw] [--logs DIR]

Owns a scripted, misbehaving HTTP/1.1 upstream (:class:`Upstream`, plain sockets in threads,
one behaviour per request path ``/case/NAME``, a well-formed ``B-OK`` for ``/b``), the
launch of each proxy in front of it (twistwsgi through a configuration file with short
timeouts, nginx with a temporary prefix, ``proxy_http_version 1.1`` and an upstream
``keepalive`` pool), and the exchange a client makes through a proxy for each behaviour:
on one keep-alive connection, request A (``/case/NAME``, which gets the misbehaviour), a
short pause (so bytes an upstream sends unasked reach the proxy first), then request B
(``/b``), whose answer must be exactly its own. What the client read is judged with h11
(:func:`exchange`): a response that h11 refuses, bytes past a response's end, a B answered
with anything but ``B-OK`` (the pooled connection was poisoned), or ``EVIL`` (the marker
of every broken upstream response) in a body that reached the client complete are
failures; a body cut short by a close is how a proxy tells the client the rest is
missing. Prints a table (behaviour | nginx | twistwsgi). Not part of
``make test`` (nginx may be missing): tests/test_upstream_wire.py runs some behaviours
against twistwsgi alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h11

REPO = Path(__file__).resolve().parent.parent
#: The marker of a broken upstream response's body: it must never reach a client as a body.
EVIL = b"EVIL"
B_BODY = b"B-OK"
#: Response and idle timeouts given to both proxies (seconds).
PROXY_TIMEOUT = 2.0
#: Between A's answer and request B: unsolicited bytes reach the proxy in this time.
PAUSE_S = 0.3

Behaviour = Callable[[socket.socket, bytes], bool]


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def _send(data: bytes) -> Behaviour:
    """Send ``data`` and keep the connection (read the next request)."""

    def behave(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(data)
        return True

    return behave


def _send_close(data: bytes) -> Behaviour:
    """Send ``data``, then close."""

    def behave(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(data)
        return False

    return behave


def _send_reset(data: bytes) -> Behaviour:
    """Send ``data``, then reset the connection (SO_LINGER 0)."""

    def behave(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(data)
        time.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    return behave


def _send_hold(data: bytes, seconds: float = 2 * PROXY_TIMEOUT + 1) -> Behaviour:
    """Send ``data``, then neither more nor a close for ``seconds``."""

    def behave(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(data)
        time.sleep(seconds)
        return False

    return behave


def _trickle(data: bytes, interval: float = 1.0) -> Behaviour:
    """Send ``data`` one byte at a time, ``interval`` apart (until the proxy gives up)."""

    def behave(sock: socket.socket, request: bytes) -> bool:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(interval)
        return False

    return behave


def _then_unsolicited(data: bytes, unsolicited: bytes) -> Behaviour:
    """Send ``data`` (a whole response), then ``unsolicited`` on the idle connection."""

    def behave(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(data)
        time.sleep(PAUSE_S / 3)
        sock.sendall(unsolicited)
        return True

    return behave


_EVIL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@dataclass(frozen=True)
class Case:
    """One upstream misbehaviour, answered to request A."""

    name: str
    behave: Behaviour
    method: str = "GET"
    body: bytes = b""  # request A's body


CASES: tuple[Case, ...] = (
    Case(
        "cl-duplicate-differing",
        _send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nEVIL"),
    ),
    Case(
        "cl-and-chunked",
        _send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nEVIL\r\n0\r\n\r\n"
        ),
    ),
    Case(
        "te-gzip-chunked",
        _send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n"),
    ),
    Case(
        "te-chunked-gzip",
        _send_close(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n"
        ),
    ),
    Case(
        "te-chunked-space",
        _send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked \r\n\r\n4\r\nEVIL\r\n0\r\n\r\n"),
    ),
    Case(
        "te-xchunked",
        _send_close(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n"
        ),
    ),
    Case(
        "te-chunked-twice",
        _send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nEVIL\r\n0\r\n\r\n"
        ),
    ),
    Case("chunk-size-overflow", _send(_CHUNKED + b"10000000000000004\r\nEVIL\r\n0\r\n\r\n")),
    Case("chunk-size-sign", _send(_CHUNKED + b"+4\r\nEVIL\r\n0\r\n\r\n")),
    Case("chunk-size-0x", _send(_CHUNKED + b"0x4\r\nEVIL\r\n0\r\n\r\n")),
    Case("chunk-ext-bare-cr", _send(_CHUNKED + b"4;a=\rb\r\nEVIL\r\n0\r\n\r\n")),
    Case("chunk-ext-bare-lf", _send(_CHUNKED + b"4;a\nEVIL\r\n0\r\n\r\n")),
    Case("chunk-no-crlf-after-data", _send(_CHUNKED + b"4\r\nEVILXX0\r\n\r\n")),
    Case(
        "body-short-then-close", _send_close(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nEVIL")
    ),
    Case(
        "body-longer-second-response",
        _send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA!" + _EVIL_RESPONSE),
    ),
    Case(
        "body-longer-later",
        _then_unsolicited(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA!", _EVIL_RESPONSE),
    ),
    Case(
        "head-with-body", _send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"), method="HEAD"
    ),
    Case("head-with-chunked-body", _send(_CHUNKED + b"4\r\nEVIL\r\n0\r\n\r\n"), method="HEAD"),
    Case("204-with-body", _send(b"HTTP/1.1 204 No Content\r\n\r\nEVIL")),
    Case(
        "204-with-content-length",
        _send(b"HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nEVIL"),
    ),
    Case("304-with-body", _send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case(
        "1xx-with-body",
        _send(b"HTTP/1.1 100 Continue\r\nContent-Length: 4\r\n\r\nEVIL" + _ok(b"A!")),
    ),
    Case("many-1xx", _send(b"HTTP/1.1 102 Processing\r\n\r\n" * 3000 + _ok(b"A!"))),
    Case("101-without-upgrade", _send(b"HTTP/1.1 101 Switching Protocols\r\n\r\nEVIL")),
    Case("obs-fold", _send(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nA!")),
    Case("space-before-colon", _send(b"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\nEVIL")),
    Case("nul-in-value", _send(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nA!")),
    Case(
        "bare-cr-in-value",
        _send(b"HTTP/1.1 200 OK\r\nX-A: a\rX-B: b\r\nContent-Length: 2\r\n\r\nA!"),
    ),
    Case(
        "bare-lf-in-value",
        _send(b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 2\r\n\r\nA!"),
    ),
    Case("invalid-name-char", _send(b"HTTP/1.1 200 OK\r\nX(A): a\r\nContent-Length: 2\r\n\r\nA!")),
    Case("status-2000", _send(b"HTTP/1.1 2000 OK\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case("status-http2", _send(b"HTTP/2 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case("status-icy", _send_close(b"ICY 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case("status-no-reason", _send(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nA!")),
    Case("status-reason-control", _send(b"HTTP/1.1 200 O\x1b[31mK\r\nContent-Length: 2\r\n\r\nA!")),
    Case("status-099", _send(b"HTTP/1.1 099 Low\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case("http10-close-delimited", _send_close(b"HTTP/1.0 200 OK\r\n\r\nA-close-delimited")),
    Case("http09-no-head", _send_close(b"EVIL body with no head\r\n")),
    Case("response-before-request-body", _send(_ok(b"A!")), method="POST", body=b"x" * 200_000),
    Case(
        "huge-head",
        _send(
            b"HTTP/1.1 200 OK\r\n"
            + b"X-Big: "
            + b"a" * 70_000
            + b"\r\nContent-Length: 4\r\n\r\nEVIL"
        ),
    ),
    Case(
        "many-headers",
        _send(b"HTTP/1.1 200 OK\r\n" + b"X-Many: a\r\n" * 8000 + b"Content-Length: 4\r\n\r\nEVIL"),
    ),
    Case("header-line-never-ends", _send_hold(b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 200_000)),
    Case("close-mid-head", _send_close(b"HTTP/1.1 200 OK\r\nContent-Le")),
    Case("close-mid-chunk", _send_close(_CHUNKED + b"a\r\nEVIL")),
    Case("reset-mid-body", _send_reset(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nEVIL")),
    Case("stall-mid-body", _send_hold(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nEVIL")),
    Case(
        "connection-close-stays-open",
        _send_hold(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nA!"),
    ),
    Case("unsolicited-on-idle", _then_unsolicited(_ok(b"A!"), _EVIL_RESPONSE)),
    Case("unsolicited-crlf-on-idle", _then_unsolicited(_ok(b"A!"), b"\r\n")),
    Case("set-cookie-repeated", _send(_ok(b"A!", b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))),
    Case("cl-plus", _send(b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\nEVIL")),
    Case("cl-hex", _send(b"HTTP/1.1 200 OK\r\nContent-Length: 0x4\r\n\r\nEVIL")),
    Case("cl-leading-space", _send(b"HTTP/1.1 200 OK\r\nContent-Length:  4\r\n\r\nA!A!")),
    Case("cl-list-same", _send(b"HTTP/1.1 200 OK\r\nContent-Length: 4,4\r\n\r\nA!A!")),
    Case("cl-negative", _send(b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\nEVIL")),
    Case(
        "cl-overflow",
        _send(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nEVIL"),
    ),
    Case(
        "trailer-forbidden-fields",
        _send(
            _CHUNKED + b"2\r\nA!\r\n0\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
            b"Set-Cookie: evil=1\r\n\r\n"
        ),
    ),
    Case("trailer-never-ends", _send_hold(_CHUNKED + b"2\r\nA!\r\n0\r\nX-T: " + b"a" * 100_000)),
    Case("lf-only-line-endings", _send(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nA!")),
    Case("trickle-head", _trickle(_ok(b"A!"))),
    Case("close-after-complete", _send_close(_ok(b"A!"))),
    Case(
        "hop-by-hop-fields",
        _send(
            _ok(
                b"A!",
                b"Connection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
                b"Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTrailer: X-T\r\n",
            )
        ),
    ),
    Case(
        "http10-chunked",
        _send(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            b"2\r\nA!\r\n0\r\n\r\n"
        ),
    ),
    Case(
        "http10-keep-alive",
        _send(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nA!"),
    ),
    Case(
        "cl-duplicate-same",
        _send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nA!"),
    ),
    Case("chunk-size-trailing-space", _send(_CHUNKED + b"2 \r\nA!\r\n0\r\n\r\n")),
    Case(
        "chunk-size-leading-zeros", _send(_CHUNKED + b"00000000000000000000002\r\nA!\r\n0\r\n\r\n")
    ),
    Case("chunk-ext-endless", _send_hold(_CHUNKED + b"2;" + b"a" * 200_000)),
    Case("chunk-data-after-last", _send(_CHUNKED + b"2\r\nA!\r\n0\r\n\r\nEVIL")),
    Case("version-1.2", _send(b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nA!")),
    Case("status-double-space", _send(b"HTTP/1.1  200 OK\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case("205-with-body", _send(b"HTTP/1.1 205 Reset Content\r\nContent-Length: 4\r\n\r\nEVIL")),
    Case("space-in-name", _send(b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nA!")),
    Case("leading-empty-lines", _send(b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA!")),
    Case(
        "head-body-later",
        _then_unsolicited(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"EVIL"),
        method="HEAD",
    ),
    Case("304-body-later", _then_unsolicited(b"HTTP/1.1 304 Not Modified\r\n\r\n", _EVIL_RESPONSE)),
    Case("trailer-obs-fold", _send(_CHUNKED + b"2\r\nA!\r\n0\r\nX-T: a\r\n b\r\n\r\n")),
    Case("trailer-bare-lf", _send(_CHUNKED + b"2\r\nA!\r\n0\r\nX-T: a\nEVIL: b\r\n\r\n")),
    Case("interim-then-close", _send_close(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")),
    Case("interim-then-stall", _send_hold(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")),
)


# -- the upstream ---------------------------------------------------------------------------


def _read_request(sock: socket.socket, buffered: bytes) -> tuple[bytes, bytes] | None:
    """One request (head and Content-Length body) and what followed it; None at a close."""
    data = buffered
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head, rest[length:] if len(rest) >= length else b""


class Upstream:
    """The scripted upstream: ``/case/NAME`` gets that case's behaviour, ``/b`` gets ``B-OK``.

    A request body is not read before the behaviour runs (``response-before-request-body``
    answers early); what arrived of it is skipped when the connection carries on.
    """

    def __init__(self, port: int, cases: Sequence[Case]) -> None:
        """Listen on 127.0.0.1:``port`` (0: any free one, then in ``port``)."""
        self.cases = {case.name: case for case in cases}
        self.listener = socket.create_server(("127.0.0.1", port), backlog=64)
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffered = b""
        with contextlib.closing(sock):
            try:
                while True:
                    request = _read_request(sock, buffered)
                    if request is None:
                        return
                    head, buffered = request
                    target = head.split(b" ")[1].decode("latin-1")
                    if target.startswith("/case/") and target[6:] in self.cases:
                        case = self.cases[target[6:]]
                        if not case.behave(sock, head):
                            return
                        if case.body:
                            # The early answer's body is not followed: what is left of
                            # it is dropped. Only then: a request the proxy sent next on
                            # the connection (pipelining) must be read and answered.
                            buffered = b""
                            sock.setblocking(False)
                            with contextlib.suppress(BlockingIOError):
                                while sock.recv(1 << 20):
                                    pass
                            sock.setblocking(True)
                    else:
                        sock.sendall(_ok(B_BODY))
            except OSError:
                return


# -- the proxies -----------------------------------------------------------------------------


@contextlib.contextmanager
def twistwsgi(port: int, upstream: int, scratch: Path) -> Iterator[Path]:
    """twistwsgi proxying to ``upstream``; yields its log file."""
    config = scratch / "twistwsgi.toml"
    config.write_text(
        f'[server]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\naccess_log = "off"\n'
        f'[[host]]\nnames = ["upstream-wire"]\n[[host.mount]]\npath = "/"\n'
        f'proxy = "http://127.0.0.1:{upstream}"\n'
        f'response_timeout = "{PROXY_TIMEOUT:g}s"\nidle_timeout = "{PROXY_TIMEOUT:g}s"\n'
    )
    log = scratch / "twistwsgi.log"
    command = [str(REPO / ".venv/bin/twistd"), "-n", "--pidfile=", "wsgi", "--config", str(config)]
    with _process(command, port, log, env={**os.environ, "PYTHONPATH": str(REPO)}):
        yield log


@contextlib.contextmanager
def nginx(port: int, upstream: int, scratch: Path) -> Iterator[Path]:
    """nginx proxying to ``upstream`` with a keep-alive pool; yields its error log."""
    prefix = scratch / "nginx"
    (prefix / "logs").mkdir(parents=True)
    timeout = f"{PROXY_TIMEOUT:g}s"
    (prefix / "nginx.conf").write_text(
        "daemon off;\nworker_processes 1;\npid nginx.pid;\nerror_log logs/error.log info;\n"
        "events { worker_connections 256; }\nhttp {\n access_log off;\n"
        f" client_body_temp_path {prefix}/tmp;\n proxy_temp_path {prefix}/ptmp;\n"
        f" upstream up {{ server 127.0.0.1:{upstream}; keepalive 8; }}\n"
        f" server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://up;\n"
        '   proxy_http_version 1.1;\n   proxy_set_header Connection "";\n'
        f"   proxy_read_timeout {timeout};\n   proxy_next_upstream off;\n  }}\n }}\n}}\n"
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    command = [binary, "-p", str(prefix), "-c", "nginx.conf", "-e", "logs/error.log"]
    with _process(command, port, prefix / "startup.log"):
        yield prefix / "logs" / "error.log"


@contextlib.contextmanager
def _process(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    with log.open("wb") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the client and the verdict --------------------------------------------------------------


@dataclass
class Read:
    """One response as a client read it, and how the reading ended."""

    data: bytes
    end: str  # "complete", "closed", "timeout"
    seconds: float


def _request(method: str, target: str, body: bytes = b"") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body) if body or method == "POST" else b""
    return b"%b %b HTTP/1.1\r\nHost: upstream-wire\r\n%b\r\n%b" % (
        method.encode(),
        target.encode(),
        length,
        body,
    )


def _parse(method: str, data: bytes) -> tuple[h11.Response | None, bytes, bool, str]:
    """(head, body, complete, error) of the first response in ``data``."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    head: h11.Response | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return head, body, True, ""
            else:
                return head, body, False, ""
    except h11.RemoteProtocolError as error:
        return head, body, False, str(error)


def _ended(method: str, data: bytes) -> bool:
    """Whether ``data`` holds a whole response (or bytes h11 refuses)."""
    if not data:
        return False  # (h11 would take no bytes for the end of the connection)
    _, _, complete, error = _parse(method, data)
    return complete or bool(error)


def _read(sock: socket.socket, method: str, timeout: float, *, data: bytes = b"") -> Read:
    """Read a response, ``data`` being its start already read."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Read(data, "timeout", time.monotonic() - started)
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            return Read(data, "timeout", time.monotonic() - started)
        except OSError:
            return Read(data, "closed", time.monotonic() - started)
        if not piece:
            return Read(data, "closed", time.monotonic() - started)
        data += piece
        if _ended(method, data):
            # A moment more for bytes past its end.
            sock.settimeout(0.2)
            with contextlib.suppress(OSError):
                data += sock.recv(65536)
            return Read(data, "complete", time.monotonic() - started)


@dataclass
class Outcome:
    """What a client saw for one case: a short text, and whether it is broken."""

    text: str
    broken: bool
    raw: bytes = b""


def _describe(method: str, read: Read) -> tuple[str, bool, bool]:
    """(text, broken, complete) of one response read."""
    head, body, complete, error = _parse(method, read.data)
    if not read.data:
        return f"nothing, {read.end}", read.end == "timeout", False
    if error:
        return f"h11 refuses: {error}", True, False
    assert head is not None or not complete
    if head is None:
        return f"cut head, {read.end}", read.end == "timeout", False
    # A body cut short (the connection closed mid-body) is how a proxy says the rest is
    # missing; a complete one holding the marker was passed on as if well-formed.
    broken = complete and EVIL in body
    text = f"{head.status_code}"
    if not complete:
        text += f" cut after {len(body)} bytes, {read.end}"
        broken |= read.end == "timeout"
    elif body:
        text += f" {len(body)}B"
    if broken:
        text += " EVIL passed on"
    return text, broken, complete


def exchange(port: int, case: Case, timeout: float) -> Outcome:
    """Request A (the case), then request B on the same connection; judge what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_request(case.method, f"/case/{case.name}", case.body))
        first = _read(sock, case.method, timeout)
        text, broken, complete = _describe(case.method, first)
        length = _response_length(case.method, first.data)
        if complete and len(first.data) > length:
            text += f"; {len(first.data) - length} bytes past its end"
            broken = True
        if first.seconds > 2 * PROXY_TIMEOUT + 0.5:
            text += f" after {first.seconds:.1f}s"
        if not complete or first.end != "complete":
            return Outcome(text, broken, first.data)
        time.sleep(PAUSE_S)
        try:
            sock.sendall(_request("GET", "/b"))
        except OSError:
            return Outcome(text + "; closed", broken, first.data)
        second = _read(sock, "GET", timeout)
        second_head, second_body, second_complete, _ = _parse("GET", second.data)
        if not second.data and second.end == "closed":
            return Outcome(text + "; closed", broken, first.data)
        if second_complete and second_head is not None and second_body == B_BODY:
            return Outcome(text + "; B ok", broken, first.data)
        return Outcome(text + f"; B got {second.data[:60]!r} POISONED", True, first.data)


def _response_length(method: str, data: bytes) -> int:
    """How many bytes of ``data`` the first response takes (h11's view)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    with contextlib.suppress(h11.RemoteProtocolError):
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return len(data) - len(conn.trailing_data[0])
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
    return len(data)


def run(
    proxy: str, cases: Sequence[Case], *, port_base: int, timeout: float
) -> tuple[dict[str, Outcome], str]:
    """Every case through one proxy; the outcomes and the proxy's log."""
    launch = {"twistwsgi": twistwsgi, "nginx": nginx}[proxy]
    upstream_port, proxy_port = port_base, port_base + 1
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="upstream-wire-") as scratch:
        upstream = Upstream(upstream_port, cases)
        try:
            with launch(proxy_port, upstream_port, Path(scratch)) as log:
                for case in cases:
                    try:
                        outcomes[case.name] = exchange(proxy_port, case, timeout)
                    except OSError as error:
                        outcomes[case.name] = Outcome(f"client error: {error}", True)
                logged = log.read_text(errors="replace")
        finally:
            upstream.close()
    return outcomes, logged


def main(argv: list[str] | None = None) -> int:
    """Run the cases through each proxy and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", default="nginx,twistwsgi")
    parser.add_argument("--cases", default="")
    parser.add_argument("--port-base", type=int, default=53000)
    parser.add_argument("--timeout", type=float, default=3 * PROXY_TIMEOUT)
    parser.add_argument("--logs", type=Path, help="write each proxy's log into this directory")
    parser.add_argument("--raw", action="store_true", help="print what the client read of A")
    args = parser.parse_args(argv)
    wanted = [part for part in args.cases.split(",") if part]
    cases = [case for case in CASES if not wanted or any(w in case.name for w in wanted)]
    proxies = args.proxies.split(",")
    columns = proxies
    results: dict[str, dict[str, Outcome]] = {}
    for index, column in enumerate(columns):
        results[column], log = run(
            column, cases, port_base=args.port_base + 10 * index, timeout=args.timeout
        )
        if "Traceback" in log or "Unhandled" in log:
            print(f"{column}: a traceback in the log:\n{log}", file=sys.stderr)
        if args.logs:
            (args.logs / f"{column}.log").write_text(log)
    print("| behaviour | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for case in cases:
        cells = []
        for column in columns:
            outcome = results[column][case.name]
            cells.append(("**BROKEN** " if outcome.broken else "") + outcome.text)
        print(f"| {case.name} | " + " | ".join(cells) + " |")
    if args.raw:
        for case in cases:
            for column in columns:
                print(f"{case.name} {column}: {results[column][case.name].raw[:400]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
