"""End to end: ``twistd -n wsgi --workers 2``, real processes on real sockets.

Which worker answers is made certain by stopping the other one (SIGSTOP): a stopped
process does not accept, so every new connection goes to the one left running.
Readiness and each step are taken from the server's log lines, never from a sleep.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_e2e import ROOT, TWISTD, Server, UnixHTTPConnection, socket_activated_server
from tests.test_sockets import write_self_signed_certificate


def started_workers(server: Server, count: int) -> dict[int, int]:
    """Wait for ``count`` "Started worker N (pid P)" lines; return {N: P}."""
    workers: dict[int, int] = {}
    while len(workers) < count:
        line = server.wait_for("Started worker")
        found = re.search(r"Started worker (\d+) \(pid (\d+)\)", line)
        assert found is not None
        workers[int(found[1])] = int(found[2])
    return workers


def answered_by(socket_path: Path, body: bytes = b"") -> tuple[int, str]:
    """One request on a new connection: the (pid, url scheme) that answered it."""
    connection = UnixHTTPConnection(socket_path)
    connection.request("POST", "/", body=body)
    response = connection.getresponse()
    pid, scheme = response.read().decode().split()
    connection.close()
    assert response.status == 200
    return int(pid), scheme


def one_app_site(socket_path: Path, app: str, server: str = "workers = 2\n") -> str:
    """A configuration file listening on ``socket_path``: one default host, ``app`` at "/".

    ``server``: the ``[server]`` lines after ``listen``.
    """
    return (
        f'[server]\nlisten = ["unix:{socket_path}"]\n{server}'
        '[[host]]\nnames = ["x"]\ndefault = true\n'
        f'[[host.mount]]\npath = "/"\napp = "{app}"\n'
    )


def blocked_request(server: Server, socket_path: Path, target: bytes) -> socket.socket:
    """Send GET ``target`` to the one worker; return its client once the application
    says that it blocks the worker's event loop.
    """
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(socket_path))
    client.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    server.wait_for("blocking the event loop")
    return client


@pytest.fixture
def socket_path(short_directory: Path) -> Path:
    return short_directory / "w.sock"


@pytest.fixture
def workers(socket_path: Path) -> Iterator[tuple[Server, dict[int, int]]]:
    server = Server(
        "--app", "tests.apps:process", "--listen", f"unix:{socket_path}", "--workers", "2"
    )
    try:
        pids = started_workers(server, 2)
        server.wait_for("Ready: serving on 1 endpoint(s) with 2 worker processes")
        yield server, pids
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        server.stop()


def serving_alone(pid: int, pids: dict[int, int], socket_path: Path) -> int:
    """Stop the other workers, ask, let them go on: the pid that answered."""
    others = [other for other in pids.values() if other != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        answer, _ = answered_by(socket_path)
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
    return answer


def test_every_worker_serves_the_shared_socket(
    workers: tuple[Server, dict[int, int]], socket_path: Path
) -> None:
    server, pids = workers
    for pid in pids.values():
        assert serving_alone(pid, pids, socket_path) == pid
    # Their log lines reach the master's log, each naming its worker.
    line = server.wait_for('"POST / HTTP/1.1" 200')
    assert re.search(r"\[twistwsgi\.access#info worker [12]\]", line)


def test_sigterm_lets_each_worker_finish_its_request_then_exits_0(
    workers: tuple[Server, dict[int, int]], socket_path: Path
) -> None:
    server, _ = workers
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(socket_path))
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    server.process.send_signal(signal.SIGTERM)
    server.wait_for("Shutting down: stopping 2 worker process(es)")
    server.wait_for("Shutting down: waiting up to 30.0s for 1 connection(s)")
    sock.sendall(b"67890")
    received = b""
    while data := sock.recv(65536):
        received += data
    sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in head
    assert body.endswith(b" http")
    # stop() waits for the master and for the end of its output pipe, which the
    # workers hold too: all three processes have ended.
    assert server.stop() == 0
    assert not socket_path.exists()


def test_a_worker_that_dies_is_replaced(
    workers: tuple[Server, dict[int, int]], socket_path: Path
) -> None:
    server, pids = workers
    os.kill(pids[1], signal.SIGKILL)
    server.wait_for(f"Worker 1 (pid {pids[1]}) was killed by SIGKILL (out of memory?)")
    replacement = started_workers(server, 1)[1]
    server.wait_for("[twistwsgi.service#info worker 1] Ready: serving")
    assert replacement != pids[1]
    survivors = {1: replacement, 2: pids[2]}
    assert serving_alone(replacement, survivors, socket_path) == replacement


def test_the_workers_stop_when_the_master_is_killed(socket_path: Path) -> None:
    """No orphan keeps serving: the end of the control pipe stops each worker."""
    server = Server(
        "--app", "tests.apps:process", "--listen", f"unix:{socket_path}", "--workers", "2"
    )
    started_workers(server, 2)
    server.wait_for("with 2 worker processes")
    server.process.kill()
    server.process.wait(timeout=60)
    # The workers hold the output pipe too: its end means both have exited.
    server._reader.join(timeout=60)
    assert not server._reader.is_alive()
    if server.process.stdout is not None:
        server.process.stdout.close()


def test_a_worker_whose_event_loop_is_blocked_ends_once_the_master_is_killed(
    socket_path: Path,
) -> None:
    """It never reads the control pipe's end, and would hold the socket for ever: it
    ends itself its graceful timeout and 5 s after its master went, its client's
    connection closed, and the socket is free for the next server.
    """
    server = Server(
        *("--app", "tests.apps:blocking", "--listen", f"unix:{socket_path}", "--workers", "1"),
        *("--threads", "0", "--graceful-timeout", "0"),
    )
    worker = started_workers(server, 1)[1]
    server.wait_for("with 1 worker processes")
    client = blocked_request(server, socket_path, b"/")
    server.process.kill()
    server.process.wait(timeout=60)
    assert server.wait_for("the master process", timeout=60).strip() == (
        f"twistwsgi worker 1 (pid {worker}): the master process (pid {server.process.pid})"
        " is gone and this worker did not stop within 5s (its event loop is blocked?);"
        " exiting"
    )
    # The worker held the output pipe too: its end means it has exited.
    server._reader.join(timeout=60)
    assert not server._reader.is_alive()
    if server.process.stdout is not None:
        server.process.stdout.close()
    assert client.recv(1) == b""
    client.close()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late,
        pytest.raises(ConnectionRefusedError),
    ):
        late.connect(str(socket_path))


def test_a_worker_whose_event_loop_is_blocked_is_dumped_killed_and_replaced(
    socket_path: Path,
) -> None:
    """--worker-timeout (gunicorn's --timeout): no heartbeat for that long, the master
    logs its threads' stacks (the application's function among them), kills it and
    starts another, which serves; the blocked request's client loses its connection.
    """
    server = Server(
        *("--app", "tests.apps:blocks_on_path", "--listen", f"unix:{socket_path}"),
        *("--workers", "1", "--threads", "0", "--worker-timeout", "2"),
    )
    try:
        worker = started_workers(server, 1)[1]
        server.wait_for("with 1 worker processes")
        client = blocked_request(server, socket_path, b"/block")
        server.wait_for(
            f"Worker 1 (pid {worker}) sent no heartbeat for 2s: its event loop is blocked;"
            " killing it and starting another"
        )
        server.wait_for(f"Worker 1 (pid {worker}) was stopped here (its threads' stacks):")
        server.wait_for("in _stuck_in_the_application")
        server.wait_for(f"Worker 1 (pid {worker}) was killed after 2s without a heartbeat")
        replacement = started_workers(server, 1)[1]
        assert replacement != worker
        server.wait_for("[twistwsgi.service#info worker 1] Ready: serving")
        assert client.recv(1) == b""
        client.close()
        assert answered_by(socket_path)[0] == replacement
    finally:
        server.stop()


def test_a_reload_starts_its_workers_with_its_worker_timeout(
    tmp_path: Path, socket_path: Path
) -> None:
    config = tmp_path / "site.toml"

    def write(worker_timeout: str) -> None:
        config.write_text(
            one_app_site(
                socket_path,
                "tests.apps:blocks_on_path",
                f"workers = 1\nthreads = 0\nworker_timeout = {worker_timeout}\n",
            )
        )

    write("0")
    server = Server("--config", "site.toml", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    try:
        old = started_workers(server, 1)[1]
        server.wait_for("with 1 worker processes")
        write('"1s"')
        server.process.send_signal(signal.SIGHUP)
        new = started_workers(server, 1)[1]
        server.wait_for("Reloaded: 1 new worker process(es) serve")
        wait_until_ended(old)  # (the new worker takes every connection from then on)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(socket_path))
        client.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for(f"Worker 1 (pid {new}) sent no heartbeat for 1s")
        assert client.recv(1) == b""
        client.close()
    finally:
        server.stop()


def test_sigusr2_sent_by_hand_logs_a_running_workers_stacks(socket_path: Path) -> None:
    """An operator's kill -USR2 shows where a worker's threads are, and it serves on."""
    server = Server(
        *("--app", "tests.apps:process", "--listen", f"unix:{socket_path}"),
        *("--workers", "1", "--worker-timeout", "30"),
    )
    try:
        [worker] = started_workers(server, 1).values()
        server.wait_for("with 1 worker processes")
        os.kill(worker, signal.SIGUSR2)
        server.wait_for(f"Worker 1 (pid {worker}) was sent SIGUSR2; its threads' stacks:")
        server.wait_for("most recent call first")
        assert answered_by(socket_path)[0] == worker
        assert not [line for line in server.seen if "killed" in line]
        assert len([line for line in server.seen if "Started worker" in line]) == 1
    finally:
        assert server.stop() == 0


def test_a_worker_whose_event_loop_runs_outlives_its_worker_timeout(socket_path: Path) -> None:
    """Its heartbeat keeps it: it is still the one serving once it has served twice
    its worker_timeout (max_worker_lifetime's report says when, on its own clock).
    """
    server = Server(
        *("--app", "tests.apps:process", "--listen", f"unix:{socket_path}"),
        *("--workers", "1", "--worker-timeout", "1", "--max-worker-lifetime", "2"),
    )
    try:
        [first] = started_workers(server, 1).values()
        server.wait_for(f"Worker 1 (pid {first}) has served for max_worker_lifetime (2s)")
        assert not [line for line in server.seen if "heartbeat" in line]
    finally:
        assert server.stop() == 0


def test_an_unimportable_app_is_one_line_and_exit_2_before_any_worker(
    socket_path: Path,
) -> None:
    result = subprocess.run(  # noqa: PLW1510 - the exit status is what is checked
        [
            *(str(TWISTD), "--nodaemon", "--pidfile=", "wsgi", "--workers", "2"),
            *("--app", "tests.no_such_module:app", "--listen", f"unix:{socket_path}"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "twistwsgi: error: --app: cannot import module 'tests.no_such_module' for app"
        " 'tests.no_such_module:app': ModuleNotFoundError: No module named"
        " 'tests.no_such_module'"
    ]
    assert "Started worker" not in result.stdout
    assert not socket_path.exists()


def write_release(directory: Path, answer: str) -> None:
    """An application module, release_app.py, that answers ``answer``, its pid and
    its working directory once it has read the body (saying in the log when it
    begins to).
    """
    directory.mkdir(exist_ok=True)
    (directory / "release_app.py").write_text(
        "import os\n"
        "from wsgiref.validate import validator\n"
        "@validator\n"
        "def app(environ, start_response):\n"
        f"    environ['wsgi.errors'].write('{answer} reads a body\\n')\n"
        "    environ['wsgi.errors'].flush()\n"
        "    while environ['wsgi.input'].read(65536):\n"
        "        pass\n"
        f"    body = f'{answer} {{os.getpid()}} {{os.getcwd()}}'.encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),"
        " ('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )


def release_answer(socket_path: Path) -> tuple[str, int, str]:
    """What the application answered, the pid and directory it answered from."""
    connection = UnixHTTPConnection(socket_path)
    connection.request("GET", "/")
    answer, pid, directory = connection.getresponse().read().decode().split()
    connection.close()
    return answer, int(pid), directory


def wait_until_ended(pid: int) -> None:
    """Wait for process ``pid`` to end (60 s turn a hang into a failure)."""
    with contextlib.suppress(ProcessLookupError):
        descriptor = os.pidfd_open(pid)
        try:
            ready, _, _ = select.select([descriptor], [], [], 60)
            assert ready, f"process {pid} still runs"
        finally:
            os.close(descriptor)


def test_sighup_replaces_the_workers_with_new_code_and_a_new_configuration(
    tmp_path: Path, socket_path: Path
) -> None:
    """New workers import the changed module and build the changed file, while the
    old ones serve; then each old one finishes its request in progress and ends.
    """
    write_release(tmp_path, "A")
    config = tmp_path / "site.toml"

    def write(workers: int) -> None:
        config.write_text(one_app_site(socket_path, "release_app:app", f"workers = {workers}\n"))

    write(2)
    server = Server("--config", "site.toml", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    try:
        old = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        # A request in progress on an old worker: its application reads a body
        # not sent in full (more than is received before the application runs).
        in_progress = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        in_progress.connect(str(socket_path))
        in_progress.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        in_progress.sendall(b"x" * 70_000)
        server.wait_for("A reads a body")
        write_release(tmp_path, "B")
        write(3)  # (the number of workers changes with a reload too)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reload: starting 3 new worker process(es)")
        new = started_workers(server, 3)
        server.wait_for("Reloaded: 3 new worker process(es) serve; 2 old one(s) finish")
        assert set(new.values()).isdisjoint(old.values())
        in_progress.sendall(b"x" * 30_000)
        received = b""
        while data := in_progress.recv(65536):
            received += data
        in_progress.close()
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert body.startswith(b"A ")
        assert int(body.split()[1]) in old.values()
        # (An old worker accepts until it has read its stop command.)
        for pid in old.values():
            wait_until_ended(pid)
        answer, pid, _ = release_answer(socket_path)
        assert (answer, pid in new.values()) == ("B", True)
    finally:
        assert server.stop() == 0


def test_a_reload_whose_code_does_not_import_leaves_the_old_workers_serving(
    tmp_path: Path, socket_path: Path
) -> None:
    write_release(tmp_path, "A")
    server = Server(
        *("--app", "release_app:app", "--listen", f"unix:{socket_path}", "--workers", "2"),
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        old = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        (tmp_path / "release_app.py").write_text("raise RuntimeError('half deployed')\n")
        server.process.send_signal(signal.SIGHUP)
        line = server.wait_for("Reload refused")
        assert re.search(
            r"Reload refused, the old workers keep serving: new worker \d \(pid \d+\) could"
            r" not start: --app: cannot import module 'release_app' .*RuntimeError: half"
            r" deployed",
            line,
        )
        answer, pid, _ = release_answer(socket_path)
        assert (answer, pid in old.values()) == ("A", True)
    finally:
        assert server.stop() == 0


def test_a_reload_follows_a_symbolic_link_a_deployment_moved(
    tmp_path: Path, socket_path: Path
) -> None:
    """Started in ``current`` (a link to a release, named by $PWD as a shell does),
    the new workers of a reload import from the release the link leads to then. An
    old release removed (where the master started) is no matter; after a refused
    release, a worker that dies starts again with the release that serves.
    """
    current = tmp_path / "current"

    def deploy(release: str, answer: str) -> None:
        write_release(tmp_path / release, answer)
        replacement = tmp_path / "current.new"
        replacement.symlink_to(release)
        replacement.replace(current)

    deploy("release-1", "A")
    server = Server(
        *("--app", "release_app:app", "--listen", f"unix:{socket_path}", "--workers", "1"),
        cwd=current,
        env={"PYTHONPATH": str(ROOT), "PWD": str(current)},
    )
    try:
        [first] = started_workers(server, 1).values()
        server.wait_for("with 1 worker processes")
        assert release_answer(socket_path)[0] == "A"
        deploy("release-2", "B")
        server.process.send_signal(signal.SIGHUP)
        [second] = started_workers(server, 1).values()
        server.wait_for("Reloaded: 1 new worker process(es) serve")
        wait_until_ended(first)
        # Imported from there, and serving from there (where relative files are).
        release_2 = os.path.realpath(tmp_path / "release-2")
        assert release_answer(socket_path) == ("B", second, release_2)
        shutil.rmtree(tmp_path / "release-1")
        deploy("release-3", "C")
        (tmp_path / "release-3" / "release_app.py").write_text("raise ImportError('half')\n")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reload refused, the old workers keep serving")
        os.kill(second, signal.SIGKILL)
        [third] = started_workers(server, 1).values()
        server.wait_for("Ready: serving")
        assert release_answer(socket_path) == ("B", third, release_2)
        write_release(tmp_path / "release-3", "C")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reloaded: 1 new worker process(es) serve")
        wait_until_ended(third)
        assert release_answer(socket_path)[0] == "C"
    finally:
        assert server.stop() == 0


def test_a_tls_listener_is_shared_with_its_certificate(tmp_path: Path) -> None:
    key, cert = write_self_signed_certificate(tmp_path)
    server = Server(
        "--app",
        "tests.apps:process",
        "--workers",
        "2",
        "--listen",
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
    )
    try:
        line = server.wait_for("Listening on ssl:0")
        found = re.search(r"port=(\d+)", line)
        assert found is not None
        server.wait_for("with 2 worker processes")
        context = ssl.create_default_context(cafile=str(cert))
        connection = http.client.HTTPSConnection("127.0.0.1", int(found[1]), context=context)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read().decode().split()[1] == "https"
        connection.close()
    finally:
        assert server.stop() == 0


def test_a_socket_from_systemd_is_shared_with_the_workers() -> None:
    """Socket activation (descriptor 3, LISTEN_FDS=1, LISTEN_PID of the master): the
    workers serve the master's socket, without looking for systemd's themselves.
    """
    server, port = socket_activated_server(
        "--app",
        "tests.apps:process",
        "--workers",
        "2",
        "--listen",
        "systemd:domain=INET:index=0",
    )
    try:
        pids = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.read().split()[0]) in pids.values()
        connection.close()
    finally:
        assert server.stop() == 0


def test_a_worker_that_cannot_start_fails_the_start_with_its_reason(tmp_path: Path) -> None:
    """The check passed (the application imported once) but the workers cannot start
    it: the master stops with their reason and status 2 instead of restarting them
    for ever while clients wait.
    """
    (tmp_path / "flaky_app.py").write_text(
        "import pathlib\n"
        "marker = pathlib.Path(__file__).with_name('imported')\n"
        "if marker.exists():\n"
        "    raise RuntimeError('imported twice')\n"
        "marker.touch()\n"
        "from tests.apps import process as app\n"
    )
    result = subprocess.run(  # noqa: PLW1510 - the exit status is what is checked
        [
            *(str(TWISTD), "--nodaemon", "--pidfile=", "wsgi", "--workers", "2"),
            *("--app", "flaky_app:app", "--listen", "tcp:0:interface=127.0.0.1"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        r"twistwsgi: error: worker \d \(pid \d+\) could not start: --app: cannot import"
        r" module 'flaky_app' .*RuntimeError: imported twice",
        line,
    )


def test_a_relative_config_file_is_found_after_rundir(tmp_path: Path, socket_path: Path) -> None:
    """A twistd --rundir changes directory before the workers start: they still build
    the configuration the master read, with paths relative to where it started (the
    application too), serve from the run directory (relative: from where the
    server started), and a reload finds the file again.
    """
    write_release(tmp_path, "A")
    (tmp_path / "run").mkdir()
    (tmp_path / "site.toml").write_text(one_app_site(socket_path, "release_app:app"))
    server = Server(
        "--config",
        "site.toml",
        command=[str(TWISTD), "--nodaemon", "--pidfile=", "--rundir=run", "wsgi"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    run = os.path.realpath(tmp_path / "run")
    try:
        old = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        assert release_answer(socket_path)[::2] == ("A", run)
        write_release(tmp_path, "B")
        server.process.send_signal(signal.SIGHUP)  # the file is read again from there
        server.wait_for("Reloaded: 2 new worker process(es) serve")
        for pid in old.values():
            wait_until_ended(pid)
        assert release_answer(socket_path)[::2] == ("B", run)
    finally:
        assert server.stop() == 0


def test_workers_ignore_sigint_when_the_master_was_started_ignoring_it(
    socket_path: Path,
) -> None:
    """A shell's background job ignores SIGINT: a Ctrl-C for the shell (to the
    whole process group) must not stop the workers, which the master would restart.
    """
    server = Server(
        "--app",
        "tests.apps:process",
        "--listen",
        f"unix:{socket_path}",
        "--workers",
        "2",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        start_new_session=True,
    )
    try:
        started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        os.killpg(server.process.pid, signal.SIGINT)
    finally:
        assert server.stop() == 0  # (SIGTERM: each worker has had its SIGINT first)
    while not server.lines.empty():
        server.seen.append(server.lines.get())
    assert not [line for line in server.seen if "SIGINT" in line or "another" in line]


def test_a_configuration_file_larger_than_an_environment_variable(
    tmp_path: Path, socket_path: Path
) -> None:
    """Linux caps one environment variable at 128 KiB: a worker reads what to build
    on its standard input, at the start and after a reload.
    """
    config = tmp_path / "site.toml"
    config.write_text("# padding\n" * 20_000 + one_app_site(socket_path, "tests.apps:process"))
    assert config.stat().st_size > 128 * 1024
    server = Server("--config", str(config))
    try:
        server.wait_for("with 2 worker processes")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reloaded: 2 new worker process(es) serve")
        assert answered_by(socket_path)[1] == "http"
    finally:
        assert server.stop() == 0


def test_a_process_the_application_starts_at_import_does_not_hold_the_start(
    tmp_path: Path, socket_path: Path
) -> None:
    """It inherits the checking process's stderr: a pipe would keep the start (and
    each reload) waiting until it ends; a file does not.
    """
    (tmp_path / "sidecar_app.py").write_text(
        "import pathlib, subprocess, sys\n"
        "helper = subprocess.Popen(['sleep', '600'])\n"
        "pathlib.Path(__file__).with_name('helpers').open('a').write(f'{helper.pid}\\n')\n"
        "from tests.apps import process as app\n"
    )
    server = Server(
        "--app",
        "sidecar_app:app",
        "--listen",
        f"unix:{socket_path}",
        "--workers",
        "2",
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    try:
        server.wait_for("with 2 worker processes", timeout=60)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("Reloaded: 2 new worker process(es) serve", timeout=60)
    finally:
        # First: they hold the server's output pipe too, which stop() reads to its end.
        for pid in (tmp_path / "helpers").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        assert server.stop() == 0


def test_one_worker_is_replaced_after_its_max_requests(socket_path: Path) -> None:
    """--workers 1 is a master and one worker: one that answered --max-requests is
    replaced by a new one, and the old one ends.
    """
    server = Server(
        *("--app", "tests.apps:process", "--listen", f"unix:{socket_path}"),
        *("--workers", "1", "--max-requests", "3"),
    )
    try:
        [first] = started_workers(server, 1).values()
        server.wait_for("with 1 worker processes")
        assert {answered_by(socket_path)[0] for _ in range(3)} == {first}
        server.wait_for(f"Worker 1 (pid {first}) answered 3 requests (max_requests)")
        [second] = started_workers(server, 1).values()
        server.wait_for("[twistwsgi.service#info worker 1] Ready: serving")
        wait_until_ended(first)
        assert answered_by(socket_path)[0] == second
    finally:
        assert server.stop() == 0


def test_workers_over_max_worker_memory_are_replaced_one_at_a_time(socket_path: Path) -> None:
    """Every worker uses more than 1 MiB: each is replaced once its successor
    serves, and the next replacement starts once the worker replaced before has
    ended (the master has reaped it), never beside it.
    """
    server = Server(
        *("--app", "tests.apps:process", "--listen", f"unix:{socket_path}"),
        *("--workers", "2", "--max-worker-memory", "1m"),
    )
    try:
        started_workers(server, 2)
        replaced: list[int] = []
        for _ in range(2):
            line = server.wait_for("MiB of memory, more than max_worker_memory (1.0 MiB)")
            found = re.search(r"Worker \d \(pid (\d+)\) uses [0-9.]+ MiB", line)
            assert found is not None, line
            for earlier in replaced:
                with pytest.raises(ProcessLookupError):
                    os.kill(earlier, 0)
            replaced.append(int(found[1]))
        assert replaced[0] != replaced[1]
        answered_by(socket_path)
    finally:
        assert server.stop() == 0


def test_a_worker_is_replaced_after_max_worker_lifetime(socket_path: Path) -> None:
    server = Server(
        *("--app", "tests.apps:process", "--listen", f"unix:{socket_path}"),
        *("--workers", "1", "--max-worker-lifetime", "1s"),
    )
    try:
        [first] = started_workers(server, 1).values()
        server.wait_for(
            f"Worker 1 (pid {first}) has served for max_worker_lifetime (1s); starting its"
            " replacement"
        )
        wait_until_ended(first)
        assert answered_by(socket_path)[0] != first
    finally:
        assert server.stop() == 0


def ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores, as the kernel has them (SigIgn).

    A stop signal sent to a process of an orphaned process group (the test's, as a
    service's under systemd) is dropped by the kernel whatever the process does with
    it: only its disposition tells whether it ignores it.
    """
    with open(f"/proc/{pid}/status") as status:
        mask = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def test_sigttin_and_sigttou_add_and_remove_a_worker(socket_path: Path) -> None:
    """As gunicorn's; the workers themselves ignore both (systemctl kill sends a
    signal to every process of the unit, and the default action stops a process).
    """
    server = Server(
        *("--app", "tests.apps:process", "--listen", f"unix:{socket_path}"),
        *("--workers", "1"),
    )
    try:
        [first] = started_workers(server, 1).values()
        server.wait_for("with 1 worker processes")
        os.kill(first, signal.SIGTTIN)
        os.kill(first, signal.SIGTTOU)
        server.process.send_signal(signal.SIGTTIN)
        server.wait_for("SIGTTIN: starting worker 2 (2 workers from now on)")
        [second] = started_workers(server, 1).values()
        server.wait_for("[twistwsgi.service#info worker 2] Ready: serving")
        server.process.send_signal(signal.SIGTTOU)
        server.wait_for(f"SIGTTOU: stopping worker 2 (pid {second}; 1 workers from now on)")
        wait_until_ended(second)
        assert {signal.SIGTTIN, signal.SIGTTOU} <= ignored_signals(first)
        assert answered_by(socket_path)[0] == first
    finally:
        assert server.stop() == 0


def test_a_worker_signalled_while_it_imports_serves_once_it_has(
    tmp_path: Path, socket_path: Path
) -> None:
    """SIGHUP and SIGUSR1 end a process by default: systemctl kill -s SIGUSR1 (a
    logrotate recipe) reaches every process of the unit, and a worker still
    importing the application failed its start, which stops the server at its
    first. Held, they are acted on once the worker runs.
    """
    release = tmp_path / "release"
    os.mkfifo(release)
    (tmp_path / "held_app.py").write_text(
        "import pathlib\n"
        "here = pathlib.Path(__file__).parent\n"
        "if (here / 'checked').exists():  # (the worker's import, after the check's)\n"
        "    print('held_app: importing', flush=True)\n"
        "    (here / 'release').read_bytes()  # until the test opens the FIFO\n"
        "(here / 'checked').touch()\n"
        "from tests.apps import process as app\n"
    )
    server = Server(
        *("--app", "held_app:app", "--listen", f"unix:{socket_path}", "--workers", "1"),
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    try:
        [pid] = started_workers(server, 1).values()
        server.wait_for("held_app: importing")
        os.kill(pid, signal.SIGUSR1)
        os.kill(pid, signal.SIGHUP)
        # Opened beside: a worker that died leaves no reader, and the open would wait.
        threading.Thread(target=lambda: release.open("wb").close(), daemon=True).start()
        server.wait_for("Ready: serving on 1 endpoint(s) with 1 worker processes")
        assert answered_by(socket_path)[0] == pid
    finally:
        assert server.stop() == 0


def test_reload_replaces_the_worker_when_a_python_file_changes(
    tmp_path: Path, socket_path: Path
) -> None:
    """--reload (development): one worker, replaced when a Python file under the
    start directory is saved; a save that does not import leaves it serving.
    """
    write_release(tmp_path, "A")
    server = Server(
        *("--app", "release_app:app", "--listen", f"unix:{socket_path}", "--reload"),
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        first = started_workers(server, 1)
        server.wait_for("--reload: watching 1 Python files under")
        server.wait_for("with 1 worker process")
        assert release_answer(socket_path)[0] == "A"
        write_release(tmp_path, "Bb")
        server.wait_for("release_app.py changed: reloading")
        server.wait_for("Reloaded: 1 new worker process(es) serve")
        # The old worker may accept one more connection before it reads its stop.
        wait_until_ended(first[1])
        answer, pid, _ = release_answer(socket_path)
        assert (answer, pid in first.values()) == ("Bb", False)
        (tmp_path / "release_app.py").write_text("def app(:\n")
        server.wait_for("Reload refused, the old workers keep serving")
        assert release_answer(socket_path)[0] == "Bb"
    finally:
        assert server.stop() == 0


def test_a_worker_whose_threads_are_stuck_is_replaced(tmp_path: Path, socket_path: Path) -> None:
    """A request past --app-timeout is answered 504, but its thread cannot be stopped:
    with half the worker's threads so held, the worker is replaced and the new one
    serves (gunicorn kills a worker past --timeout).
    """
    (tmp_path / "stuck_app.py").write_text(
        "import os, threading\n"
        "from wsgiref.validate import validator\n"
        "never = threading.Event()\n"
        "@validator\n"
        "def app(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/stuck':\n"
        "        never.wait()\n"
        "    body = str(os.getpid()).encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),"
        " ('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    server = Server(
        *("--app", "stuck_app:app", "--listen", f"unix:{socket_path}", "--workers", "1"),
        *("--threads", "2", "--app-timeout", "1s", "--graceful-timeout", "1s"),
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        [old] = started_workers(server, 1).values()
        server.wait_for("with 1 worker process")
        stuck = UnixHTTPConnection(socket_path)
        stuck.request("GET", "/stuck")
        assert stuck.getresponse().status == 504
        stuck.close()
        server.wait_for("has 1 thread(s) held by requests answered 504 (app_timeout)")
        wait_until_ended(old)
        connection = UnixHTTPConnection(socket_path)
        connection.request("GET", "/")
        answer = connection.getresponse().read()
        connection.close()
        assert int(answer) != old
    finally:
        assert server.stop() == 0


def status_alone(pid: int, pids: dict[int, int], socket_path: Path, path: str) -> int:
    """Stop the other workers, GET ``path`` on a new connection, let them go on: the status."""
    others = [other for other in pids.values() if other != pid]
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        connection = UnixHTTPConnection(socket_path)
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        connection.close()
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
    return response.status


def test_the_workers_count_rate_limit_and_conn_limit_together(
    tmp_path: Path, socket_path: Path
) -> None:
    """A client that goes to each worker in turn is held to a mount's limits as a
    whole (every UNIX-socket client is one client); a worker killed with a request
    in progress gives its place back.
    """
    (tmp_path / "site.toml").write_text(
        f'[server]\nlisten = ["unix:{socket_path}"]\nworkers = 2\n'
        '[[host]]\nnames = ["x"]\ndefault = true\n'
        '[[host.mount]]\npath = "/rate"\napp = "tests.apps:process"\nrate_limit = "1r/m"\n'
        '[[host.mount]]\npath = "/conn"\napp = "tests.apps:process"\nconn_limit = 1\n'
    )
    server = Server("--config", str(tmp_path / "site.toml"))
    try:
        pids = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        assert status_alone(pids[1], pids, socket_path, "/rate") == 200
        assert status_alone(pids[2], pids, socket_path, "/rate") == 429
        # Worker 1 runs a request: the application is reading its body (it asked
        # for the rest with 100 Continue).
        os.kill(pids[2], signal.SIGSTOP)
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            held.connect(str(socket_path))
            held.sendall(
                b"POST /conn HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert held.recv(100).startswith(b"HTTP/1.1 100 Continue")
        finally:
            os.kill(pids[2], signal.SIGCONT)
        assert status_alone(pids[2], pids, socket_path, "/conn") == 429
        os.kill(pids[1], signal.SIGKILL)
        server.wait_for(f"Worker 1 (pid {pids[1]}) was killed by SIGKILL")
        assert status_alone(pids[2], {2: pids[2]}, socket_path, "/conn") == 200
        held.close()
    finally:
        assert server.stop() == 0


def test_a_proxy_protocol_listener_is_shared_with_the_workers(socket_path: Path) -> None:
    """Each worker reads the PROXY header on the socket it shares: the client it
    names is the application's REMOTE_ADDR whichever worker answers.
    """
    server = Server(
        "--app",
        "tests.apps:environ",
        "--listen",
        f"haproxy:unix:{socket_path}",
        "--workers",
        "2",
    )
    try:
        pids = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        for pid in pids.values():
            others = [other for other in pids.values() if other != pid]
            for other in others:
                os.kill(other, signal.SIGSTOP)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                    raw.connect(str(socket_path))
                    raw.sendall(
                        b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n"
                        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    received = b""
                    while chunk := raw.recv(65536):
                        received += chunk
            finally:
                for other in others:
                    os.kill(other, signal.SIGCONT)
            assert received.startswith(b"HTTP/1.1 200 OK")
            assert b'"REMOTE_ADDR": "203.0.113.7"' in received
    finally:
        assert server.stop() == 0


def scrape(path: Path) -> str:
    """The master's metrics, read on its UNIX socket."""
    connection = UnixHTTPConnection(path)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    assert response.status == 200
    return text


def scrape_until(path: Path, wanted: str) -> str:
    """Scrape until ``wanted`` is a line of the text (workers report every second)."""
    seen = ""
    for _ in range(100_000):  # (a hang becomes a failure, not a wait for ever)
        seen = scrape(path)
        if wanted in seen.splitlines():
            return seen
    raise AssertionError(f"no {wanted!r} in {seen}")


def test_the_master_serves_the_sum_of_its_workers_metrics(
    socket_path: Path, short_directory: Path
) -> None:
    """Counted in each worker, served by the master; a worker that dies takes its
    gauges away but not its counts (counters never go back).
    """
    metrics_path = short_directory / "m.sock"
    server = Server(
        "--app",
        "tests.apps:process",
        "--listen",
        f"unix:{socket_path}",
        "--workers",
        "2",
        "--metrics-listen",
        f"unix:{metrics_path}",
    )
    try:
        pids = started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        # Each worker reports as it starts: its gauges are there once it serves.
        first = scrape(metrics_path).splitlines()
        assert "twistwsgi_workers 2" in first
        assert "twistwsgi_threads 20" in first
        for pid in pids.values():
            assert serving_alone(pid, pids, socket_path) == pid
        scrape_until(metrics_path, 'twistwsgi_responses_total{code="200"} 2')
        os.kill(pids[1], signal.SIGKILL)
        server.wait_for(f"Worker 1 (pid {pids[1]}) was killed by SIGKILL")
        assert 'twistwsgi_responses_total{code="200"} 2' in scrape(metrics_path).splitlines()
        answered_by(socket_path)  # (worker 2 or the one replacing worker 1)
        scrape_until(metrics_path, 'twistwsgi_responses_total{code="200"} 3')
    finally:
        assert server.stop() == 0


def test_a_proxy_protocol_tls_listener_is_shared_with_the_workers(
    tmp_path: Path, socket_path: Path
) -> None:
    """haproxy:ssl: under --workers: each worker reads the header, then TLS."""
    key, cert = write_self_signed_certificate(tmp_path)
    server = Server(
        "--app",
        "tests.apps:environ",
        "--listen",
        f"haproxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        "--workers",
        "2",
    )
    try:
        line = server.wait_for("Listening on haproxy:ssl:0")
        found = re.search(r"host='127\.0\.0\.1', port=(\d+)", line)
        assert found is not None
        started_workers(server, 2)
        server.wait_for("with 2 worker processes")
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", int(found[1])), timeout=30) as raw:
            raw.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.10 51000 443\r\n")
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                received = b""
                while chunk := tls.recv(65536):
                    received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert b'"REMOTE_ADDR": "203.0.113.7"' in received
        assert b'"wsgi.url_scheme": "https"' in received
    finally:
        assert server.stop() == 0
