"""The servers under test and the exact command line each one runs with.

Every server listens on 127.0.0.1 only, runs one process unless the scenario asks for several, and
logs no requests. Thread counts match where a server has a threadpool (10, like twistd web's
reactor threadpool). Each is stopped with the signal its launch names: SIGINT for most, SIGTERM for
twistwsgi, whose master then stops its ``--workers`` processes gracefully. Peers run from a scratch
directory holding a ``benchmarks`` symlink, so they import the same ``benchmarks.apps`` while the
peers' twistd cannot pick up twistwsgi's plugin from the repository's ``twisted/plugins``.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .environment import twistwsgi_help

TWISTWSGI_VARIANTS = ("twistwsgi", "twistwsgi-inline")
WSGI_PEERS = (
    "twistd-web",
    "gunicorn-sync",
    "gunicorn-gthread",
    "waitress",
    "uwsgi",
    "granian",
)
FLOOR = "twisted-floor"
FLOOR_DIRECT = "twisted-floor-direct"
FLOORS = (FLOOR, FLOOR_DIRECT)
ALL_SERVERS = (*TWISTWSGI_VARIANTS, *WSGI_PEERS, "nginx", *FLOORS)
THREADS = 10
IDLE_KEEP_ALIVE_SECONDS = 75


@dataclass(frozen=True)
class Target:
    """What a server has to serve in a scenario.

    Attributes:
        kind: a WSGI app from ``benchmarks.apps``, static files, or a reverse proxy.
        app: the app's name for ``kind == "wsgi"``.
        workers: processes the server may use.
        hold_idle: the scenario holds idle keep-alive connections for a while.
        docroot: for static files, the directory that holds ``static/``.
        upstream_port: for the proxy, where the upstream listens on 127.0.0.1.
    """

    kind: Literal["wsgi", "static", "proxy"]
    app: str = "hello"
    workers: int = 1
    hold_idle: bool = False
    docroot: Path | None = None
    upstream_port: int | None = None


@dataclass(frozen=True)
class Context:
    """Paths and facts shared by every launch in one run."""

    repo: Path
    project_bin: Path
    peers_bin: Path
    app_root: Path
    scratch: Path
    nginx: str | None
    twistwsgi_help: str | None

    @classmethod
    def for_run(
        cls, *, repo: Path, project_bin: Path, peers_bin: Path, scratch: Path, nginx: str | None
    ) -> Context:
        """The context of a run in ``scratch`` (the applications' root is made there)."""
        return cls(
            repo=repo,
            project_bin=project_bin,
            peers_bin=peers_bin,
            app_root=scratch / "approot",
            scratch=scratch,
            nginx=nginx,
            twistwsgi_help=twistwsgi_help(project_bin / "twistd", repo),
        )


@dataclass(frozen=True)
class Launch:
    """A server process to start: its command, directory, extra environment, config files.

    ``stop_signal`` goes to the process the harness started (the master, for a server with
    several processes) when its measurement is over; its process group gets SIGKILL after a
    grace period either way.
    """

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGINT

    def display(self, context: Context) -> str:
        """The command line as the report shows it (the suite's paths shortened)."""
        return shorten(shlex.join(self.argv), context)


@dataclass(frozen=True)
class Unavailable:
    """A server that cannot take part, and why (shown in the report instead of numbers)."""

    reason: str


Builder = Callable[[Context, Target, int], Launch | Unavailable | None]


@contextlib.contextmanager
def scratch(bench_dir: Path) -> Iterator[Path]:
    """A temporary directory for configs, files and the peers' import root (``approot``)."""
    path = Path(tempfile.mkdtemp(prefix="twistwsgi-bench-"))
    try:
        path.chmod(0o755)  # nginx's workers may run as nobody
        app_root = path / "approot"
        app_root.mkdir()
        (app_root / "benchmarks").symlink_to(bench_dir, target_is_directory=True)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shorten(text: str, context: Context) -> str:
    """Replace the suite's absolute paths with short, readable ones."""
    return (
        text.replace(f"{context.scratch}/", "$TMP/")
        .replace(str(context.scratch), "$TMP")
        .replace(f"{context.repo}/", "")
    )


def _listen(port: int) -> str:
    return f"tcp:{port}:interface=127.0.0.1"


def _app(target: Target, separator: str = ":") -> str:
    return f"benchmarks.apps{separator}{target.app}"


def _peer(context: Context, argv: list[str]) -> Launch:
    return Launch(argv=argv, cwd=context.app_root, env={"PYTHONPATH": str(context.app_root)})


# -- twistwsgi ---------------------------------------------------------------------------------

_FEATURE_OPTIONS = {"static": "--static", "proxy": "--proxy"}


def _missing_feature(context: Context, target: Target) -> Unavailable | None:
    """Report a feature twistwsgi does not offer yet (its option is not in ``--help``)."""
    needed = [target.kind] if target.kind in ("static", "proxy") else []
    help_text = context.twistwsgi_help
    for feature in needed:
        option = _FEATURE_OPTIONS[feature]
        if help_text is None or option not in help_text:
            why = "`twistd wsgi --help` failed" if help_text is None else f"no {option} option"
            return Unavailable(f"not available (feature not built yet: {why})")
    return None


def _twistwsgi_limits(context: Context, target: Target) -> list[str]:
    """Lift the defaults that would end a scenario early where the peers have no such limit.

    The 1 MiB body limit (413 for the 10 MB upload), the 5 s idle keep-alive timeout (the idle
    connections of scenario 7 are held longer; gunicorn gets the same 75 s), and the 1000
    requests a connection serves (nginx's keepalive_requests default, which the nginx configs
    here lift to 1,000,000; gunicorn, waitress, uWSGI and granian have no such cap): every wrk
    connection would otherwise reconnect every 1000 requests, which no peer's does.
    """
    help_text = context.twistwsgi_help or ""
    extra = []
    if "--keepalive-requests" in help_text:
        extra += ["--keepalive-requests", "0"]
    if target.app == "upload" and "--max-body" in help_text:
        extra += ["--max-body", "0"]
    if target.hold_idle and "--keepalive-timeout" in help_text:
        extra += ["--keepalive-timeout", str(IDLE_KEEP_ALIVE_SECONDS)]
    return extra


def _twistwsgi(threads: int) -> Builder:
    def build(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
        missing = _missing_feature(context, target)
        if missing is not None:
            return missing
        argv = [
            str(context.project_bin / "twistd"),
            "--nodaemon",
            "--pidfile=",
            "wsgi",
        ]
        if target.kind == "proxy":
            argv += ["--proxy", f"/=http://127.0.0.1:{target.upstream_port}"]
        else:
            argv += ["--app", _app(target if target.kind == "wsgi" else Target("wsgi"))]
        if target.kind == "static":
            argv += ["--static", f"/static={target.docroot}/static"]
        argv += ["--listen", _listen(port), "--threads", str(threads), "--access-log", "off"]
        if target.workers > 1:
            argv += ["--workers", str(target.workers)]
        argv += _twistwsgi_limits(context, target)
        # SIGTERM: its normal stop; with --workers the master passes it on as a graceful stop.
        return Launch(
            argv=argv,
            cwd=context.repo,
            env={"PYTHONPATH": str(context.repo)},
            stop_signal=signal.SIGTERM,
        )

    return build


# -- WSGI peers --------------------------------------------------------------------------------


def _twistd_web(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
    if target.workers > 1:
        return None
    twistd = str(context.peers_bin / "twistd")
    if target.kind == "proxy":
        script = context.repo / "benchmarks" / "twisted_proxy.py"
        argv = [
            str(context.peers_bin / "python"),
            str(script),
            "--listen",
            _listen(port),
            "--upstream",
            f"127.0.0.1:{target.upstream_port}",
        ]
        return _peer(context, argv)
    argv = [twistd, "-n", "--pidfile=", "web", "--listen", _listen(port)]
    if target.kind == "static":
        argv += ["--path", str(target.docroot)]
    else:
        argv += ["--wsgi", _app(target, ".")]
    return _peer(context, [*argv, "--logfile", "/dev/null"])


def _gunicorn(worker_class: str) -> Builder:
    def build(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
        if target.kind != "wsgi":
            return None
        argv = [
            str(context.peers_bin / "gunicorn"),
            "-w",
            str(target.workers),
            "-k",
            worker_class,
        ]
        if worker_class == "gthread":
            argv += ["--threads", str(THREADS)]
            if target.hold_idle:
                argv += ["--keep-alive", str(IDLE_KEEP_ALIVE_SECONDS)]
        return _peer(context, [*argv, "-b", f"127.0.0.1:{port}", _app(target)])

    return build


def _waitress(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
    if target.kind != "wsgi" or target.workers > 1:
        return None
    argv = [
        str(context.peers_bin / "waitress-serve"),
        f"--listen=127.0.0.1:{port}",
        f"--threads={THREADS}",
        _app(target),
    ]
    return _peer(context, argv)


def _uwsgi(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
    if target.kind != "wsgi":
        return None
    binary = context.peers_bin / "uwsgi"
    if not binary.exists():
        return Unavailable("not installed (see the install notes)")
    # --http-socket closes every connection and --http11-socket pins a connection to a worker
    # thread until its socket timeout (the other connections starve), so the comparison uses
    # uWSGI's own HTTP router (--http, one extra process) with keep-alive.
    argv = [
        str(binary),
        "--master",
        "--http",
        f"127.0.0.1:{port}",
        "--http-keepalive",
        "--http-auto-chunked",
        "--processes",
        str(target.workers),
        "--threads",
        str(THREADS),
        "--module",
        _app(target),
        "--need-app",
        "--disable-logging",
        "--die-on-term",
    ]
    return _peer(context, argv)


def _granian(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
    if target.kind != "wsgi":
        return None
    argv = [
        str(context.peers_bin / "granian"),
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(target.workers),
        "--blocking-threads",
        str(THREADS),
        _app(target),
    ]
    return _peer(context, argv)


# -- nginx -------------------------------------------------------------------------------------


def nginx_launch(context: Context, name: str, server_block: str, upstreams: str = "") -> Launch:
    """nginx with one worker and no access log, its config generated under the scratch dir."""
    if context.nginx is None:
        raise RuntimeError("nginx is not installed")
    prefix = context.scratch / name
    temp = prefix / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    # The workers may run as nobody (when the harness is root): they must read and write here.
    prefix.chmod(0o755)
    temp.chmod(0o777)
    config = f"""# Generated by benchmarks/harness/servers.py
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 10240;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{upstreams}
    server {{
{server_block}
    }}
}}
"""
    config_path = prefix / "nginx.conf"
    config_path.write_text(config)
    argv = [
        context.nginx,
        "-p",
        str(prefix),
        "-e",
        str(prefix / "error.log"),
        "-c",
        str(config_path),
        "-g",
        "daemon off;",
    ]
    return Launch(argv=argv, cwd=prefix, files={"nginx.conf": shorten(config, context)})


def _nginx(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
    if target.kind == "wsgi":
        return None
    if context.nginx is None:
        return Unavailable("not installed (apt-get install nginx-light)")
    listen = f"        listen 127.0.0.1:{port};\n"
    if target.kind == "static":
        block = (
            f"{listen}        location /static/ {{\n            root {target.docroot};\n        }}"
        )
        return nginx_launch(context, f"nginx-static-{port}", block)
    upstreams = (
        f"    upstream app {{\n        server 127.0.0.1:{target.upstream_port};\n"
        "        keepalive 64;\n    }"
    )
    block = (
        f"{listen}        location / {{\n            proxy_pass http://app;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n        }'
    )
    return nginx_launch(context, f"nginx-proxy-{port}", block, upstreams)


def upstream_launch(context: Context, port: int) -> Launch:
    """The proxy scenario's fast upstream: nginx answering ``Hello, World!`` itself."""
    block = (
        f"        listen 127.0.0.1:{port};\n        location / {{\n"
        "            default_type text/plain;\n"
        '            return 200 "Hello, World!";\n        }'
    )
    return nginx_launch(context, f"nginx-upstream-{port}", block)


# -- the floor --------------------------------------------------------------------------------


def _twisted_floor(direct: bool) -> Builder:
    """``benchmarks/twisted_floor.py`` on twistwsgi's own Python and Twisted.

    It takes part where a fixed answer stands in for the real work: hello world, the static
    files, and the proxy (as a byte relay); not where the application's own time is measured.
    ``direct``: with ``--direct``, on the reactor paths twistwsgi's command line installs.
    """

    def build(context: Context, target: Target, port: int) -> Launch | Unavailable | None:
        if target.workers > 1 or target.hold_idle:
            return None
        script = context.repo / "benchmarks" / "twisted_floor.py"
        argv = [str(context.project_bin / "python"), str(script), "--listen", _listen(port)]
        if direct:
            argv.append("--direct")
        if target.kind == "static":
            argv += ["files", str(target.docroot / "static" if target.docroot else "")]
        elif target.kind == "proxy":
            argv += ["relay", f"127.0.0.1:{target.upstream_port}"]
        elif target.app == "hello":
            argv += ["hello"]
        else:
            return None
        return Launch(argv=argv, cwd=context.repo)

    return build


BUILDERS: dict[str, Builder] = {
    "twistwsgi": _twistwsgi(THREADS),
    "twistwsgi-inline": _twistwsgi(0),
    "twistd-web": _twistd_web,
    "gunicorn-sync": _gunicorn("sync"),
    "gunicorn-gthread": _gunicorn("gthread"),
    "waitress": _waitress,
    "uwsgi": _uwsgi,
    "granian": _granian,
    "nginx": _nginx,
    FLOOR: _twisted_floor(direct=False),
    FLOOR_DIRECT: _twisted_floor(direct=True),
}


def build(name: str, context: Context, target: Target, port: int) -> Launch | Unavailable | None:
    """The launch of server ``name`` for ``target`` (None: it does not take part)."""
    return BUILDERS[name](context, target, port)
