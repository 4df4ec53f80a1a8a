"""Every process the suite starts: spawning, readiness, memory and CPU time, guaranteed cleanup.

Each child runs in its own session (so its own process group): a terminal's Ctrl-C reaches only the
harness, and stopping a server kills its whole group (gunicorn's, uWSGI's and twistwsgi's workers,
nginx's worker, granian's worker). Every live child is kept in a registry that `stop_all` empties;
the harness calls it in a ``finally``, from ``atexit`` and on SIGTERM/SIGHUP (turned into
SystemExit so the ``finally`` blocks run). As a last resort each child asks the kernel for SIGKILL
when the harness dies (``PR_SET_PDEATHSIG``), which covers a harness killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
STOP_GRACE_SECONDS = 3.0


def _die_with_parent() -> None:
    """Runs in the forked child before exec: SIGKILL it if the harness dies first."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
    capture_stdout: bool = False,
    merge_stderr: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session and register it for cleanup.

    Output goes to ``log_path`` (stdout and stderr together), or to a pipe with
    ``capture_stdout`` (stderr joining it with ``merge_stderr``), or nowhere.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    with contextlib.ExitStack() as stack:
        stdout: int | IO[bytes]
        if capture_stdout:
            stdout = subprocess.PIPE
        elif log_path is not None:
            stdout = stack.enter_context(log_path.open("ab"))
        else:
            stdout = subprocess.DEVNULL
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT if log_path or merge_stderr else subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 -- the harness runs no threads
        )
    _LIVE[proc.pid] = proc
    return proc


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int | None:
    """Stop ``proc`` and everything in its process group; return its exit status.

    The leader gets ``sig`` (each server's own quick shutdown), then the group gets SIGKILL
    after a short grace period, and once more at the end for any stragglers.
    """
    pgid = proc.pid  # a session leader's pid is its process group id
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(pgid, signal.SIGKILL)
            proc.wait()
    _kill_group(pgid, signal.SIGKILL)
    _LIVE.pop(proc.pid, None)
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return proc.returncode


def stop_all() -> None:
    """Kill every process still registered (idempotent; used by ``finally`` and ``atexit``)."""
    for proc in list(_LIVE.values()):
        _kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_SECONDS)
        _LIVE.pop(proc.pid, None)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_cleanup_handlers() -> None:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C does, and clean up at interpreter exit."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE's soft limit (inherited by every child) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _probe(port: int, path: str) -> str | None:
    """Send one GET and return the response's status line, or None if there is none yet."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(request.encode("ascii"))
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                data = sock.recv(4096)
                if not data:
                    break
                head += data
    except OSError:
        return None
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    return line if line.startswith("HTTP/") else None


@dataclass
class Readiness:
    """What the readiness poll found: the probe's status line, or why the server is not up."""

    status_line: str | None = None
    exited_with: int | None = None
    timed_out: bool = False

    @property
    def ready(self) -> bool:
        """True when the server answered an HTTP request."""
        return self.status_line is not None


def wait_until_ready(
    proc: subprocess.Popen[bytes], port: int, path: str = "/", timeout: float = 30.0
) -> Readiness:
    """Poll until the server answers one HTTP request, exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return Readiness(exited_with=proc.returncode)
        status_line = _probe(port, path)
        if status_line is not None:
            return Readiness(status_line=status_line)
        time.sleep(0.05)  # poll interval, not a readiness guess
    return Readiness(timed_out=True)


def group_pids(leader: int) -> list[int]:
    """Pids of the leader's process group plus any descendant that left it."""
    parents: dict[int, int] = {}
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        pid, ppid, pgrp = int(entry.name), int(fields[1]), int(fields[2])
        parents[pid] = ppid
        if pgrp == leader:
            members.add(pid)
    members.add(leader)
    changed = True
    while changed:
        found = {pid for pid, ppid in parents.items() if ppid in members} - members
        members |= found
        changed = bool(found)
    return sorted(pid for pid in members if pid in parents)


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    """A process's CPU time in clock ticks: its own (every thread's) and its reaped children's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # After the parenthesised command name: state is field 3, utime 14, stime 15, cutime 16,
    # cstime 17 (proc(5)). A child reaped during a window moves from its own fields to its
    # parent's cutime/cstime, so the group's sum carries on across the exit.
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])


def group_cpu_seconds(leader: int) -> float:
    """CPU seconds (user and system) used so far by the leader's whole process group."""
    ticks = sum(_cpu_ticks(pid) for pid in group_pids(leader))
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(leader: int) -> int:
    """Current resident memory of the whole process group, in KiB."""
    return sum(_status_kib(pid, "VmRSS") for pid in group_pids(leader))


def hwm_kib(leader: int) -> int:
    """Sum of each group member's resident high-water mark (VmHWM), in KiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in group_pids(leader))


def reset_hwm(leader: int) -> None:
    """Reset each member's VmHWM to its current RSS (writing 5 to clear_refs, Linux 4.0+)."""
    for pid in group_pids(leader):
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class PeakRss:
    """Peak resident memory of a process group over a window: sampled sums and high-water marks."""

    leader: int
    sampled_max_kib: int = 0
    samples: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Open the window: reset the high-water marks and take the first sample."""
        reset_hwm(self.leader)
        self.sample()

    def sample(self) -> None:
        """Record the group's current RSS."""
        value = rss_kib(self.leader)
        self.samples.append(value)
        self.sampled_max_kib = max(self.sampled_max_kib, value)

    def peak_kib(self) -> int:
        """The larger of the sampled maximum and the summed high-water marks."""
        return max(self.sampled_max_kib, hwm_kib(self.leader))


def wait_sampling(
    proc: subprocess.Popen[bytes], peak: PeakRss | None, timeout: float, interval: float = 0.1
) -> bool:
    """Wait for ``proc`` to exit, sampling ``peak`` meanwhile; False if it outlived ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proc.wait(interval)
        except subprocess.TimeoutExpired:
            if peak is not None:
                peak.sample()
            continue
        return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    stop_signal: int = signal.SIGINT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the duration of a ``with`` block, stopping its group on the way out."""
    proc = spawn(argv, cwd=cwd, env=env, log_path=log_path)
    try:
        yield proc
    finally:
        stop(proc, stop_signal)
