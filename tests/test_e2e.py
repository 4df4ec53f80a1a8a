"""End to end: ``twistd -n wsgi`` in a subprocess, on a UNIX socket.

Checks the packaged entry point as a user runs it: the plugin loads, the application
imports, requests are served and logged, SIGTERM lets an in-flight request finish
before the process exits 0, and a start-up error is one line with exit status 2.
Readiness is taken from the server's own "Ready" log line (logged once the reactor
runs and signals are handled), never from a sleep.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost")
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self._path)
        self.sock = sock


class Server:
    """A twistd process whose output lines are collected by a reader thread."""

    def __init__(self, *args: str, **popen: Any) -> None:
        command = popen.pop("command", [str(TWISTD), "--nodaemon", "--pidfile=", "wsgi"])
        self.process = subprocess.Popen(
            [*command, *args],
            cwd=popen.pop("cwd", ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **popen.pop("env", {})},
            **popen,
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Return the first output line containing ``text`` (fail if the process
        ends first; the timeout only turns a hang into a failure).
        """
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                status = self.process.poll()
                raise AssertionError(
                    f"no {text!r} (exit {status}) in output: {self.seen}"
                ) from None
            self.seen.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=60)
        self._reader.join(timeout=60)  # the pipe is at its end once the process is
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status


@pytest.fixture
def socket_path(short_directory: Path) -> Path:
    return short_directory / "s.sock"


@pytest.fixture
def server(socket_path: Path) -> Iterator[Server]:
    running = Server(
        "--app", "tests.apps:environ", "--listen", f"unix:{socket_path}", "--access-log", "-"
    )
    try:
        running.wait_for("Ready: serving")
        yield running
    finally:
        running.stop()


def test_serves_requests_and_logs_them(server: Server, socket_path: Path) -> None:
    """A request over the socket reaches the application and is access-logged."""
    connection = UnixHTTPConnection(socket_path)
    connection.request("GET", "/hello?x=1", headers={"User-Agent": "e2e-test"})
    response = connection.getresponse()
    seen = json.loads(response.read())
    connection.close()
    assert response.status == 200
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/hello", "x=1")
    line = server.wait_for('"GET /hello?x=1 HTTP/1.1" 200')
    assert '"e2e-test"' in line


def test_sigttin_to_a_server_without_workers_is_said_and_changes_nothing(
    server: Server, socket_path: Path
) -> None:
    """Its default action would stop (freeze) the process: a script written for
    gunicorn's TTIN must not take the server down.
    """
    server.process.send_signal(signal.SIGTTIN)
    server.wait_for("SIGTTIN ignored: this server serves without worker processes")
    connection = UnixHTTPConnection(socket_path)
    connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.sock.settimeout(30)
    connection.sock.connect(str(socket_path))
    connection.request("GET", "/after")
    assert connection.getresponse().status == 200
    connection.close()


def test_sigterm_lets_the_request_in_flight_finish(server: Server, socket_path: Path) -> None:
    """On SIGTERM the server stops accepting, finishes the request in progress
    (answering with Connection: close), and exits with status 0.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(socket_path))
    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    server.process.send_signal(signal.SIGTERM)
    server.wait_for("Shutting down: waiting")
    sock.sendall(b"67890")
    received = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in head
    assert json.loads(body)["body_length"] == "10"
    assert server.stop() == 0


def test_unimportable_app_is_one_line_and_exit_2(socket_path: Path) -> None:
    """A start-up error prints one line naming the problem and exits with 2."""
    result = subprocess.run(  # noqa: PLW1510 - the exit status is what is checked
        [
            str(TWISTD),
            "--nodaemon",
            "--pidfile=",
            "wsgi",
            "--app",
            "tests.apps:missing",
            "--listen",
            f"unix:{socket_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "twistwsgi: error:" in line]
    assert errors == [
        "twistwsgi: error: --app: module 'tests.apps' has no attribute 'missing'"
        " (app 'tests.apps:missing')"
    ]


@pytest.mark.parametrize("case", ["nul in a log path", "a fifo as the key"])
def test_what_the_configuration_fuzzing_found_is_one_line_and_exit_2(
    case: str, socket_path: Path, tmp_path: Path
) -> None:
    """Two of the holes tests/test_config_fuzz.py found, as a user met them: a NUL
    in a file's access_log path was a traceback (exit status 1) from the open at
    start; an ssl: key that is a FIFO held the start, silent, for ever (here until
    the timeout).
    """
    fifo = tmp_path / "key.pem"
    os.mkfifo(fifo)
    if case == "nul in a log path":
        setting = f'access_log = "{tmp_path}/access\\u0000.log"'
        expected = ": a path holds no NUL"
    else:
        setting = f'listen = ["ssl:0:interface=127.0.0.1:privateKey={fifo}"]'
        expected = f": privateKey= {str(fifo)!r} is not a regular file"
    config = tmp_path / "site.toml"
    config.write_text(
        f"[server]\n{setting}\n"
        '[[host]]\nnames = ["a.test"]\n[[host.mount]]\npath = "/"\nreturn = "200 ok"\n'
    )
    result = subprocess.run(  # noqa: PLW1510 - the exit status is what is checked
        [str(TWISTD), "--nodaemon", "--pidfile=", "wsgi", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if "twistwsgi: error:" in line]
    assert error.startswith("twistwsgi: error: site.toml: server.") and error.endswith(expected)


def test_starts_over_a_socket_left_by_a_crash(socket_path: Path) -> None:
    """A socket file (and lock) left by a killed server do not stop the next start."""
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(socket_path))
    left.close()
    os.symlink("1", f"{socket_path}.lock")  # a live process id: init's
    running = Server("--app", "tests.apps:hello", "--listen", f"unix:{socket_path}")
    try:
        running.wait_for("Ready: serving")
        connection = UnixHTTPConnection(socket_path)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        assert running.stop() == 0


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


@pytest.mark.parametrize("daemon", [False, True], ids=["nodaemon", "daemon"])
def test_a_port_in_use_ends_the_start_and_leaves_no_pidfile(
    daemon: bool, taken_port: int, tmp_path: Path
) -> None:
    """A port that cannot be bound ends the start with the reason on stderr and no
    pidfile left behind, also when twistd daemonises (its parent waits for the
    child's status: it must hear of the failure, not wait forever).
    """
    pidfile = tmp_path / "twistd.pid"
    command = [str(TWISTD), f"--pidfile={pidfile}", f"--logfile={tmp_path / 'twistd.log'}"]
    if not daemon:
        command.append("--nodaemon")
    result = subprocess.run(  # noqa: PLW1510 - the exit status is what is checked
        [
            *command,
            "wsgi",
            "--app",
            "tests.apps:hello",
            "--listen",
            f"tcp:{taken_port}:interface=127.0.0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    message = f"cannot listen on 'tcp:{taken_port}:interface=127.0.0.1'"
    if daemon:
        # twistd's parent reports (the first 100 bytes of) what its child raised,
        # with its own status: the cause comes first.
        assert result.returncode == 1
        assert "Address already in use" in result.stderr
        # The child tells its parent before it removes the pidfile (twistd's order in
        # postApplication), so the parent can be gone first: wait for the child.
        wait_for_process_named_in(pidfile)
    else:
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if "twistwsgi: error:" in line]
        assert len(errors) == 1 and message in errors[0]
    assert not pidfile.exists()


def wait_for_process_named_in(pidfile: Path, timeout: float = 60) -> None:
    """Wait until the process whose id ``pidfile`` holds has ended, if it still runs."""
    try:
        pid = int(pidfile.read_text())
        descriptor = os.pidfd_open(pid)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return  # no pidfile (or half written, as the child removes it), or gone
    try:
        ready, _, _ = select.select([descriptor], [], [], timeout)
        assert ready, f"process {pid} still runs"
    finally:
        os.close(descriptor)


def socket_activated_server(*args: str) -> tuple[Server, int]:
    """Twistd with ``args``, given a listening socket the way systemd hands it over
    (descriptor 3, LISTEN_FDS=1, LISTEN_FDNAMES, LISTEN_PID=the server's pid); and
    the socket's port.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    descriptor = listener.fileno()

    def as_descriptor_3() -> None:
        os.dup2(descriptor, 3)  # the duplicate is inheritable

    # LISTEN_PID must name the server itself: the shell sets it to its own pid,
    # which exec hands on to twistd.
    server = Server(
        *args,
        command=[
            "/bin/sh",
            "-c",
            'export LISTEN_PID=$$; exec "$0" "$@"',
            str(TWISTD),
            "--nodaemon",
            "--pidfile=",
            "wsgi",
        ],
        env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "myapp.socket"},
        pass_fds=(descriptor, 3),  # 3 is the dup2 target: keep it through close_fds
        preexec_fn=as_descriptor_3,
    )
    listener.close()  # the server holds its own copy now
    return server, port


def test_systemd_socket_activation() -> None:
    """A listening socket handed over the way systemd does it is served by a
    systemd: endpoint.
    """
    server, port = socket_activated_server(
        "--app", "tests.apps:hello", "--listen", "systemd:domain=INET:index=0"
    )
    try:
        server.wait_for("Ready: serving")
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"Hello, World!")
        connection.close()
    finally:
        assert server.stop() == 0


def site_config(path: Path, socket_path: Path, app: str) -> None:
    path.write_text(
        f'[server]\nlisten = ["unix:{socket_path}"]\n'
        f'[[host]]\nnames = ["reload.example"]\ndefault = true\n'
        f'[[host.mount]]\npath = "/"\napp = "{app}"\n'
    )


def test_sighup_swaps_the_configuration_under_traffic(tmp_path: Path, socket_path: Path) -> None:
    """SIGHUP re-reads the file and swaps the routing table while requests keep
    coming: none fails, the new application answers afterwards, a request in flight
    across the reload completes, and a broken file is refused without effect.
    """
    config = tmp_path / "site.toml"
    site_config(config, socket_path, "tests.apps:version_a")
    server = Server("--config", str(config))
    try:
        server.wait_for("Ready: serving")
        answers: list[bytes] = []
        failures: list[BaseException] = []
        stop = threading.Event()
        progress = threading.Condition()

        def traffic() -> None:
            try:
                connection = UnixHTTPConnection(socket_path)
                while not stop.is_set():
                    connection.request("GET", "/", headers={"Host": "reload.example"})
                    answer = connection.getresponse().read()
                    with progress:
                        answers.append(answer)
                        progress.notify_all()
                connection.close()
            except BaseException as error:
                failures.append(error)
                with progress:
                    progress.notify_all()

        def wait_for_answers(count: int) -> None:
            # Progress, not time: the traffic thread may start late on a busy machine.
            with progress:
                assert progress.wait_for(lambda: len(answers) >= count or failures, 60)
            assert failures == []

        worker = threading.Thread(target=traffic)
        worker.start()
        wait_for_answers(1)  # A has answered before the reload
        # A request in flight across the reload: the application (A) is already
        # reading its body (Expect: 100-continue hands it over at once).
        in_flight = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        in_flight.connect(str(socket_path))
        in_flight.sendall(
            b"POST / HTTP/1.1\r\nHost: reload.example\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert in_flight.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        in_flight.sendall(b"ab")
        site_config(config, socket_path, "tests.apps:version_b")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reloaded the configuration")
        in_flight.sendall(b"cd")
        assert in_flight.recv(65536).endswith(b"\r\n\r\nA")  # routed before the reload
        in_flight.close()
        seen_b = len(answers)
        config.write_text("[server]\nthreads = 'many'\n")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reload refused")
        wait_for_answers(seen_b + 1)
        stop.set()
        worker.join(timeout=30)
        assert failures == []
        assert set(answers) == {b"A", b"B"}
        assert answers.index(b"B") > 0 and b"A" not in answers[answers.index(b"B") :]
        assert len(answers) > seen_b  # still serving B after the refused reload
    finally:
        assert server.stop() == 0
