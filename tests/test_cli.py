"""The ``twistd wsgi`` command line: options from the schema, one-line errors, exit 2."""

from __future__ import annotations

import functools
import gc
import os
import pty
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import _SystemdParser
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone, ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.systemd import ListenFDs
from twisted.scripts._twistd_unix import ServerOptions

from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.config import SETTINGS, ServerConfig
from twistwsgi.dispatch import (
    log_context_skipped,
    read_generic,
    reads_inline,
    restore_log_context,
    twisted_checked,
)
from twistwsgi.service import ServerService, StartError, make_service
from twistwsgi.testing import capture_log_events


def parse(*argv: str) -> cli.Options:
    options = cli.Options()
    options.parseOptions(list(argv))
    return options


def test_plugin_is_found_as_wsgi() -> None:
    """Twistd and twist find the plugin under the name wsgi."""
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "wsgi" in makers
    assert makers["wsgi"].module == "twistwsgi.cli"  # type: ignore[attr-defined]


def test_every_setting_has_a_flag_in_help() -> None:
    """The options are generated from the schema: each setting has its flag."""
    text = str(cli.Options())
    for setting in SETTINGS:
        assert setting.flag in text


def test_options_build_a_config() -> None:
    """Flags become a validated ServerConfig; --listen may be repeated."""
    options = parse(
        "--app",
        "tests.apps:hello",
        "--listen",
        "tcp:8080",
        "--listen",
        "unix:/tmp/x.sock",
        "--threads",
        "0",
        "--max-body",
        "10m",
        "--keepalive-timeout",
        "500ms",
        "--access-log",
        "off",
    )
    config = options.config
    assert config.app == "tests.apps:hello"
    assert config.listen == ("tcp:8080", "unix:/tmp/x.sock")
    assert config.threads == 0
    assert config.http.max_body == 10 * 1024 * 1024
    assert config.http.keepalive_timeout == 0.5
    assert config.access_log == "off"


def test_defaults_apply_when_flags_are_absent() -> None:
    """Without flags the documented defaults are used."""
    config = parse("--app", "tests.apps:hello").config
    assert config.listen == ("tcp:8080",)
    assert config.threads == 10
    assert config.graceful_timeout == 30.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--threads", "2"],
            "nothing to serve: give --app, --static, --proxy, --return or --vhost",
        ),
        (["--app", "tests.apps:hello", "--threads", "many"], "--threads: expected a whole number"),
        (["--app", "no-module"], "--app: expected module, module:name or module:factory()"),
        (["--app", "tests.apps:hello", "--max-body", "1q"], "--max-body: expected a size"),
        (["--app", "tests.apps:hello", "--listen", "8080"], "--listen: expected a Twisted"),
        (
            ["--app", "tests.apps:hello", "--workers", "2", "--worker-timeout", "-1"],
            "--worker-timeout: expected a duration such as 30, 30s, 500ms or 5m, got '-1'",
        ),
        (
            ["--app", "tests.apps:hello", "--workers", "2", "--worker-timeout", "soon"],
            "--worker-timeout: expected a duration such as 30, 30s, 500ms or 5m, got 'soon'",
        ),
        (
            ["--app", "tests.apps:hello", "--header-timeout", "0"],
            "--header-timeout: expected more than 0, got '0'",
        ),
        (
            ["--proxy", "/a=http://127.0.0.1:1 weight=2", "--proxy", "/a=http://127.0.0.1:2"],
            "twistwsgi: error: --proxy '/a=http://127.0.0.1:2': path '/a' is already mounted"
            " by --proxy '/a=http://127.0.0.1:1 weight=2'\n",
        ),
        (
            ["--vhost", "api.example.com"],
            "twistwsgi: error: --vhost 'api.example.com': expected NAMES[/PREFIX]=KIND:TARGET",
        ),
        (
            ["--vhost", "a.example=php:index.php"],
            "twistwsgi: error: --vhost 'a.example=php:index.php': unknown kind 'php'",
        ),
        (
            ["--vhost", "a.example=static:/no/such/dir"],
            "twistwsgi: error: --vhost 'a.example=static:/no/such/dir': directory"
            " '/no/such/dir' does not exist\n",
        ),
        (
            ["--vhost", "a.example=app:m:a", "--vhost", "a.example=proxy:http://127.0.0.1:1"],
            "twistwsgi: error: --vhost 'a.example=proxy:http://127.0.0.1:1': path '/' is"
            " already mounted by --vhost 'a.example=app:m:a'\n",
        ),
        (
            ["--vhost", "a.example=app:m:a", "--vhost", "*.x,A.EXAMPLE=app:m:b"],
            "twistwsgi: error: --vhost '*.x,A.EXAMPLE=app:m:b': 'A.EXAMPLE' is already a name"
            " of --vhost 'a.example=app:m:a'; to add a mount to that host, give all its"
            " names: a.example\n",
        ),
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: list[str], expected: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A bad value is one line on stderr naming the flag, and exit status 2."""
    with pytest.raises(SystemExit) as raised:
        parse(*argv)
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert expected in err


@pytest.fixture(autouse=True)
def _twisted_log_context_restored() -> Any:
    """Put the event dispatch back as it was: makeService tunes it for the process."""
    inline = reads_inline(global_reactor)
    yield
    restore_log_context()
    if not inline:
        read_generic(global_reactor)


@pytest.fixture(autouse=True)
def _nothing_left_for_the_reactor_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop what makeService asks the global reactor to do once it runs.

    That is tuning the garbage collector and installing signal handlers: the first
    test to run the reactor would do both to the whole test process. (Tests that
    check those calls record them.)
    """
    monkeypatch.setattr(global_reactor, "callWhenRunning", lambda func, *args, **kwargs: None)


def make(*argv: str) -> Any:
    return cli.makeService(parse(*argv))


def test_unimportable_app_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    """An app that does not import: one line naming the module and exception."""
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.no_such_module:app")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert "tests.no_such_module" in err and "ModuleNotFoundError" in err
    assert err.count("\n") == 1


def test_bad_endpoint_string_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    """An endpoint string Twisted cannot parse is refused before start-up."""
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", "nonsense:1")
    assert raised.value.code == 2
    assert "--listen 'nonsense:1'" in capfd.readouterr().err


def test_missing_certificate_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    """An ssl: endpoint naming a missing key file is refused before start-up."""
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", "ssl:0:privateKey=/no/key.pem")
    assert raised.value.code == 2
    assert "ssl:0" in capfd.readouterr().err


def test_make_service_builds_a_server_service() -> None:
    """A valid command line builds the service with its endpoints (not started)."""
    service = make("--app", "tests.apps:hello", "--listen", "tcp:0:interface=127.0.0.1")
    assert isinstance(service, ServerService)
    assert not service.running
    # The command line's process-wide dispatch tuning.
    assert log_context_skipped()
    read_generic(global_reactor)  # the test session reads inline too (conftest.py)
    make("--app", "tests.apps:hello", "--listen", "tcp:0:interface=127.0.0.1")
    applies = isinstance(global_reactor, EPollReactor) and twisted_checked()
    assert reads_inline(global_reactor) == applies


@pytest.fixture
def collection_settings_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collection_settings_restored")
def test_garbage_collection_is_tuned_once_the_reactor_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    when_running: list[Callable[..., object]] = []
    monkeypatch.setattr(
        global_reactor, "callWhenRunning", lambda func, *args: when_running.append(func)
    )
    make("--app", "tests.apps:hello", "--listen", "tcp:0:interface=127.0.0.1")
    assert cli.tune_garbage_collection in when_running
    gc.set_threshold(*cli._INTERPRETER_GC_THRESHOLDS)
    cli.tune_garbage_collection()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == cli.YOUNG_GC_THRESHOLD


@pytest.mark.usefixtures("collection_settings_restored")
def test_thresholds_an_application_set_are_kept() -> None:
    gc.set_threshold(123, 4, 5)
    cli.tune_garbage_collection()
    assert gc.get_threshold() == (123, 4, 5)


class _RecordingCollector:
    """Stands in for the ``gc`` module the CLI calls, recording what it asks."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def collect(self) -> int:
        self.calls.append("collect")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def get_threshold(self) -> tuple[int, int, int]:
        return (1, 1, 1)  # as if the application had set its own


def test_a_reload_gives_what_it_replaced_back_to_the_collector(
    tmp_path: Path,
    installed: dict[int, Callable[[int, object], None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replaced routing table was frozen with the start-up objects: a reload
    unfreezes at once, and freezes again only after the graceful timeout, when the
    requests that still hold the old table have ended. A refused reload replaces
    nothing.
    """
    collector = _RecordingCollector()
    monkeypatch.setattr(cli, "gc", collector)
    site = tmp_path / "site.toml"
    hello_site = '[server]\nthreads = 0\n[[host]]\nnames = ["a.example"]\ndefault = true\n'
    site.write_text(hello_site + '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n')
    given = {"config": str(site)}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    reactor = CallsFromThreads()
    cli._handle_reload_signals(reactor, service, given)
    site.write_text(hello_site + '[[host.mount]]\npath = "/"\napp = "tests.apps:environ"\n')
    installed[signal.SIGHUP](signal.SIGHUP, None)
    reactor.calls.pop()()
    assert collector.calls == ["unfreeze"]
    assert reactor.later == [(30.0, cli.tune_garbage_collection)]
    site.write_text("[server]\nthreads = 'many'\n")
    installed[signal.SIGHUP](signal.SIGHUP, None)
    with capture_log_events():
        reactor.calls.pop()()
    assert collector.calls == ["unfreeze"]
    assert len(reactor.later) == 1
    service.stopService()


@pytest.mark.usefixtures("collection_settings_restored")
def test_tuning_again_collects_what_was_frozen_and_has_become_garbage() -> None:
    class Node:
        other: Any = None

    cycle = Node()
    cycle.other = cycle
    alive = weakref.ref(cycle)
    cli.tune_garbage_collection()
    del cycle
    cli.tune_garbage_collection()
    assert alive() is None


def test_vhost_is_repeatable_beside_the_single_site(tmp_path: Path) -> None:
    """The issue's example: --app and --static make the default host, each --vhost
    adds a host (or a mount of one, for names given again).
    """
    (tmp_path / "static").mkdir()
    (tmp_path / "docs").mkdir()
    config = parse(
        "--app",
        "shop.wsgi:app",
        "--static",
        f"/static={tmp_path / 'static'}",
        "--vhost",
        "api.example.com=proxy:http://127.0.0.1:9000",
        "--vhost",
        f"docs.example.com=static:{tmp_path / 'docs'}",
        "--vhost",
        "docs.example.com/search=app:search:app",
    ).config
    assert [(host.names, host.default) for host in config.hosts] == [
        ((), True),
        (("api.example.com",), False),
        (("docs.example.com",), False),
    ]
    assert [(m.path, m.kind) for m in config.hosts[2].mounts] == [
        ("/", "static"),
        ("/search", "app"),
    ]


def test_check_config_prints_the_vhosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check-config imports every --vhost application and prints every host."""
    (tmp_path / "docs").mkdir()
    options = parse(
        "--app",
        "tests.apps:hello",
        "--vhost",
        f"docs.example.com,*.docs.example.com=static:{tmp_path / 'docs'}",
        "--vhost",
        "*.docs.example.com,docs.example.com/search=app:tests.apps:environ",
        "--vhost",
        "api.example.com=proxy:http://127.0.0.1:9000",
        "--check-config",
    )
    with pytest.raises(SystemExit) as raised:
        cli.makeService(options)
    assert raised.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        "host (any host name)",
        "  /                        app    tests.apps:hello",
        "host docs.example.com, *.docs.example.com",
        "  /search                  app    tests.apps:environ",
        f"  /                        static {tmp_path / 'docs'}",
        "host api.example.com",
        "  /                        proxy  http://127.0.0.1:9000",
        "configuration OK",
    ]


class CallsFromThreads:
    """Collects what the SIGHUP handler hands to the reactor, for the test to run."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []
        self.later: list[tuple[float, Callable[[], object]]] = []

    def callFromThread(self, function: Callable[..., object], *args: object) -> None:
        self.calls.append(functools.partial(function, *args))

    def callLater(self, delay: float, function: Callable[[], object]) -> None:
        self.later.append((delay, function))


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> dict[int, Callable[[int, object], None]]:
    """The signal handlers the code under test installs, by signal number.

    They are collected rather than installed: the test calls them itself.
    """
    handlers: dict[int, Callable[[int, object], None]] = {}
    monkeypatch.setattr(
        signal, "signal", lambda number, handler: handlers.update({number: handler})
    )
    return handlers


def test_sigusr1_still_reaches_the_handler_it_replaced(
    monkeypatch: pytest.MonkeyPatch,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """A daemonising twistd rotates twistd.log on SIGUSR1: replacing its handler to
    reopen the access log stopped that rotation.
    """
    rotated: list[int] = []
    monkeypatch.setattr(signal, "getsignal", lambda number: lambda n, f: rotated.append(n))
    given = {"app": "tests.apps:hello", "threads": "0", "access_log": "off"}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    reactor = CallsFromThreads()
    cli._handle_reload_signals(reactor, service, given)
    installed[signal.SIGUSR1](signal.SIGUSR1, None)
    assert rotated == [signal.SIGUSR1]
    assert len(reactor.calls) == 1  # and the access log is reopened


def test_sighup_reopens_the_access_log_even_when_the_file_is_refused(
    tmp_path: Path,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """Logrotate moves the log away and sends SIGHUP: the log is reopened at its
    path, also when the configuration file no longer validates (which is refused).
    """
    log, site = tmp_path / "access.log", tmp_path / "site.toml"
    site.write_text(
        f'[server]\nthreads = 0\naccess_log = "{log}"\n'
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    )
    given = {"config": str(site)}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    service.startService()
    reactor = CallsFromThreads()
    cli._handle_reload_signals(reactor, service, given)

    def get(path: bytes) -> None:
        protocol = service.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: a.example\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))

    get(b"/before")
    log.rename(tmp_path / "access.log.1")
    site.write_text("[server]\nthreads = 'many'\n")
    with capture_log_events() as events:
        installed[signal.SIGHUP](signal.SIGHUP, None)
        [reload] = reactor.calls
        reload()
    assert any("Reload refused" in formatEvent(event) for event in events)
    get(b"/after")
    service.stopService()
    assert "GET /before" in (tmp_path / "access.log.1").read_text()
    assert "GET /after" in log.read_text() and "/before" not in log.read_text()


# -- start-up errors found by an audit ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--app", "tests.apps:hello", "--bogus-flag"], "option --bogus-flag not recognized"),
        (["--app", "tests.apps:hello", "--threads"], "option --threads requires argument"),
        (["--app", "tests.apps:hello", "extra"], "Wrong number of arguments"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], problem: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A typo in a flag is a start-up error like a bad value: one line, status 2,
    through twistd's own parser as a user runs it (not the usage text and status 1).
    """
    with pytest.raises(SystemExit) as raised:
        ServerOptions().parseOptions(["--nodaemon", "wsgi", *argv])
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("twistwsgi: error: ") and problem in err and "(see --help)" in err


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("tcp:notaport", "the port must be a number, got 'notaport'"),
        ("tcp:0:bogus=1", "unknown parameter 'bogus' for a tcp: endpoint"),
        ("systemd:domain=INET:index=0", "no such socket passed by systemd"),
    ],
)
def test_endpoint_errors_say_what_is_wrong(
    endpoint: str,
    problem: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Endpoint strings are reported in their own terms, not as int() or a keyword
    call's TypeError.
    """
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", endpoint)
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert f"--listen {endpoint!r}: {problem}" in err


@pytest.mark.parametrize(
    ("descriptors", "names", "passed"),
    [
        (
            [],
            [],
            "no such socket passed by systemd (it passed none: start the server from a"
            " .socket unit; sockets passed without names (systemd-socket-activate without"
            " --fdname) are not seen)",
        ),
        ([3], ["http"], "no such socket passed by systemd (it passed 1: index=0 name=http)"),
    ],
)
def test_a_missing_systemd_socket_says_what_systemd_passed(
    descriptors: list[int],
    names: list[str],
    passed: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twisted removes LISTEN_FDS from the environment once it has read it, so the
    message says what Twisted kept, not the variable (which said "unset" then).
    """
    monkeypatch.setattr(_SystemdParser, "_sddaemon", ListenFDs(descriptors, names))
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", "systemd:domain=INET:index=1")
    assert raised.value.code == 2
    assert passed in capfd.readouterr().err


def test_a_tls_key_that_does_not_load_names_the_files(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a PEM key is said to be one, not as an OpenSSL tuple alone."""
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", f"ssl:0:privateKey={key}:certKey={key}")
    assert raised.value.code == 2
    assert "cannot load the private key or certificate" in capfd.readouterr().err


#: The repository, where a `twistd` subprocess finds the test applications.
ROOT = Path(__file__).resolve().parent.parent


def check_config_command(*options: str) -> list[str]:
    """The `twistd -n wsgi ... --check-config` command line serving tests.apps:hello."""
    twistd = str(Path(sys.executable).parent / "twistd")
    return [twistd, "--nodaemon", "wsgi", "--app", "tests.apps:hello", *options, "--check-config"]


def test_check_config_shows_any_mount_path_on_any_terminal(tmp_path: Path) -> None:
    """A mount path in any script is listed in its columns (a CJK character is two
    wide), and a terminal that cannot show it (an ASCII locale) gets escapes instead
    of a UnicodeEncodeError traceback.
    """
    (tmp_path / "jp").mkdir()
    command = check_config_command("--static", f"/日本={tmp_path / 'jp'}")
    shown = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0, shown.stderr
    columns = 5  # "/" and two characters two columns wide each
    line = "  /日本" + " " * (24 - columns) + f" static {tmp_path / 'jp'}"
    assert line in shown.stdout.splitlines()
    ascii_only = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )
    assert ascii_only.returncode == 0, ascii_only.stderr
    assert b"/\\u65e5\\u672c" in ascii_only.stdout
    assert b"Traceback" not in ascii_only.stderr


def test_check_config_read_by_head_is_no_error(tmp_path: Path) -> None:
    """`--check-config | head -1` ended in a BrokenPipeError traceback: a reader
    that stops early is not an error.
    """
    statics = []
    for number in range(2000):  # a listing longer than a pipe's buffer
        (tmp_path / f"d{number}").mkdir()
        statics += ["--static", f"/s{number}={tmp_path / f'd{number}'}"]
    read, write = os.pipe()
    with subprocess.Popen(
        check_config_command(*statics), cwd=ROOT, stdout=write, stderr=subprocess.PIPE
    ) as server:
        os.close(write)
        with os.fdopen(read, "rb") as reader:
            reader.readline()  # head -1
        _, err = server.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert server.returncode == 0


def test_check_config_does_not_create_the_access_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checking a configuration leaves no file behind."""
    log = tmp_path / "logs-here" / "access.log"
    (tmp_path / "logs-here").mkdir()
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--access-log", str(log), "--check-config")
    assert raised.value.code == 0
    assert "configuration OK" in capsys.readouterr().out
    assert not log.exists()


def test_check_config_checks_the_hosts_logs_without_creating_them(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A host's and a mount's own access logs are checked as the server's is: a file a
    start could open is not made; one it could not is the one-line error naming it.
    """
    site = tmp_path / "site.toml"
    text = (
        '[[host]]\nnames = ["a.example"]\naccess_log = "a.log"\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\naccess_log = "m.log"\n'
    )
    site.write_text(text)
    with pytest.raises(SystemExit) as raised:
        make("--config", str(site), "--check-config")
    assert raised.value.code == 0
    assert not (tmp_path / "a.log").exists() and not (tmp_path / "m.log").exists()
    capfd.readouterr()
    site.write_text(text.replace('"m.log"', '"missing/m.log"'))
    with pytest.raises(SystemExit) as raised:
        make("--config", str(site), "--check-config")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert "site.toml: host[0].mount[0].access_log: cannot open" in err and "no directory" in err
    site.write_text(text.replace('"a.log"', '"missing/a.log"'))
    with pytest.raises(SystemExit) as raised:
        make("--config", str(site), "--check-config")
    assert "site.toml: host[0].access_log: cannot open" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("missing/access.log", "no directory"),
        (".", "it is a directory"),
        ("newdir/", "it is a directory"),
        ("dangling.log", "no directory"),  # a link into a missing directory
    ],
)
def test_check_config_refuses_an_access_log_a_start_could_not_open(
    where: str,
    problem: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A check that passes promises a start that opens its log, as nginx -t does."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dangling.log").symlink_to(tmp_path / "missing" / "access.log")
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--access-log", where, "--check-config")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert f"--access-log: cannot open {where!r}: {problem}" in err
    assert not (tmp_path / "missing").exists()


def options_under(settings: dict[str, Any]) -> cli.Options:
    """The plugin's options under a runner (twistd's ServerOptions) set so."""
    options = parse("--app", "tests.apps:hello")
    runner = usage.Options()
    runner.update(settings)
    options.parent = runner
    return options


def test_a_start_error_removes_twistds_pidfile_and_exits_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Under twistd -n the pidfile it wrote is gone after the one-line error, so the
    next start does not find a stale (or reused) process id.
    """
    pidfile = tmp_path / "twistd.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    on_error = cli._start_error_handler(options_under({"pidfile": str(pidfile)}))
    with pytest.raises(SystemExit) as raised:
        on_error("cannot listen on 'tcp:80': address in use")
    assert raised.value.code == 2
    assert not pidfile.exists()
    assert capfd.readouterr().err == "twistwsgi: error: cannot listen on 'tcp:80': address in use\n"


def test_a_start_error_leaves_another_process_pidfile(tmp_path: Path) -> None:
    """A pidfile that names another process is not ours to remove."""
    pidfile = tmp_path / "twistd.pid"
    pidfile.write_text("1\n")
    on_error = cli._start_error_handler(options_under({"pidfile": str(pidfile)}))
    with pytest.raises(SystemExit):
        on_error("cannot listen")
    assert pidfile.read_text() == "1\n"


def test_a_start_error_in_a_daemon_goes_through_twistd() -> None:
    """A daemonised twistd's parent waits on a status pipe that only an Exception
    makes twistd write: the error is raised for it rather than exiting.
    """
    on_error = cli._start_error_handler(options_under({"pidfile": "x.pid", "statusPipe": 7}))
    with pytest.raises(StartError) as raised:
        on_error("cannot listen on 'tcp:80:interface=127.0.0.1': Couldn't listen: in use")
    # twistd shows its parent only 100 bytes: the cause goes first.
    assert str(raised.value) == (
        "Couldn't listen: in use (cannot listen on 'tcp:80:interface=127.0.0.1')"
    )


def test_sigusr1_reopens_the_access_log(
    tmp_path: Path,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """Nginx's log-rotation signal reopens the log; it does not end the server."""
    log = tmp_path / "access.log"
    given = {"app": "tests.apps:hello", "threads": "0", "access_log": str(log)}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    service.startService()
    reactor = CallsFromThreads()
    cli._handle_reload_signals(reactor, service, given)
    log.rename(tmp_path / "access.log.1")
    installed[signal.SIGUSR1](signal.SIGUSR1, None)
    [reopen] = reactor.calls
    reopen()
    protocol = service.factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    service.stopService()
    assert "GET /after" in log.read_text()


def test_a_reload_that_fails_unexpectedly_keeps_serving_and_reopens_the_log(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """Whatever goes wrong while reading the file, the reload is refused with a log
    line, and the access log is reopened all the same.
    """
    given = {"app": "tests.apps:hello", "threads": "0", "access_log": str(tmp_path / "a.log")}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    reopened: list[bool] = []
    monkeypatch.setattr(service, "reopen_access_log", lambda: reopened.append(True))

    def broken(given: dict[str, Any]) -> Any:
        raise UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte")

    monkeypatch.setattr(cli, "load_config", broken)
    reactor = CallsFromThreads()
    cli._handle_reload_signals(reactor, service, given)
    installed[signal.SIGHUP](signal.SIGHUP, None)
    [reload] = reactor.calls
    with capture_log_events() as events:
        reload()
    assert reopened == [True]
    assert any("Reload refused" in formatEvent(event) for event in events)
    service.stopService()


def test_a_second_stop_signal_stops_now(
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """Once a graceful stop began, SIGTERM or SIGINT again ends the draining."""
    stopped: list[bool] = []

    class Service:
        def stop_now(self) -> None:
            stopped.append(True)

    reactor = CallsFromThreads()
    cli._second_signal_stops_now(reactor, Service())  # type: ignore[arg-type]
    assert set(installed) == {signal.SIGTERM, signal.SIGINT}
    installed[signal.SIGINT](signal.SIGINT, None)
    for call in reactor.calls:
        call()
    assert stopped == [True]


def test_two_quick_stop_signals_stop_gracefully_once_then_at_once(
    monkeypatch: pytest.MonkeyPatch,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """A second SIGTERM before the stop has begun (kill twice, a supervisor and a
    timeout) asked Twisted's handler to stop the reactor again, which then logged a
    critical ReactorNotRunning: only the first reaches Twisted's handler.
    """
    twisted_handler: list[int] = []
    current: dict[int, Any] = {
        signal.SIGTERM: lambda number, frame: twisted_handler.append(number),
        signal.SIGINT: lambda number, frame: twisted_handler.append(number),
    }
    monkeypatch.setattr(signal, "getsignal", lambda number: installed.get(number, current[number]))
    stopped: list[bool] = []

    class Service:
        def stop_now(self) -> None:
            stopped.append(True)

    reactor = CallsFromThreads()
    cli._one_graceful_stop(reactor, Service())  # type: ignore[arg-type]
    installed[signal.SIGTERM](signal.SIGTERM, None)
    installed[signal.SIGTERM](signal.SIGTERM, None)
    installed[signal.SIGINT](signal.SIGINT, None)
    assert twisted_handler == [signal.SIGTERM]
    for call in reactor.calls:
        call()
    assert stopped == [True, True]


def test_a_stop_signal_arriving_inside_the_handler_is_the_second(
    monkeypatch: pytest.MonkeyPatch,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """Python runs a signal handler between two bytecodes of whatever runs, the
    handler itself included: a second SIGTERM 0.1 ms after the first entered it
    again before it was swapped out (2 runs in 8 still logged ReactorNotRunning).
    """
    twisted_handler: list[int] = []
    twisted: dict[int, Any] = {signal.SIGTERM: lambda number, frame: twisted_handler.append(number)}
    inside: list[bool] = []

    def getsignal(number: int) -> Any:
        if number in installed and not inside:
            inside.append(True)  # the second signal, while the first is handled
            installed[signal.SIGTERM](signal.SIGTERM, None)
        return installed.get(number, twisted.get(number, signal.SIG_IGN))

    reactor = CallsFromThreads()
    stopped: list[bool] = []

    class Service:
        def stop_now(self) -> None:
            stopped.append(True)

    monkeypatch.setattr(signal, "getsignal", lambda number: twisted.get(number, signal.SIG_IGN))
    cli._one_graceful_stop(reactor, Service())  # type: ignore[arg-type]
    monkeypatch.setattr(signal, "getsignal", getsignal)
    installed[signal.SIGTERM](signal.SIGTERM, None)
    assert twisted_handler == [signal.SIGTERM]
    for call in reactor.calls:
        call()
    assert stopped == [True]


def test_a_worker_stopped_by_its_master_and_a_signal_at_once_logs_no_error(
    monkeypatch: pytest.MonkeyPatch,
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """Systemd's default KillMode sends SIGTERM to the master and every worker at
    once: a worker's reactor could be stopped by its master's "stop" command after
    Twisted's handler had queued a stop of its own, which then logged a critical
    ReactorNotRunning traceback at every such shutdown. The first signal now
    queues a stop that does nothing once the reactor is stopping.
    """

    class Reactor(CallsFromThreads):
        _stopped = False
        _exitSignal: int | None = None  # noqa: N815 - Twisted's name

        def stop(self) -> None:
            if self._stopped:
                raise ReactorNotRunning("Can't stop reactor that isn't running.")
            self._stopped = True

        def sigTerm(self, number: int, frame: object = None) -> None:
            self.callFromThread(self.stop)  # (as Twisted's: the stop queued)
            self._exitSignal = number

        def sigInt(self, number: int, frame: object = None) -> None:
            self.sigTerm(number, frame)

    reactor = Reactor()
    current = {signal.SIGTERM: reactor.sigTerm, signal.SIGINT: reactor.sigInt}
    monkeypatch.setattr(signal, "getsignal", lambda number: installed.get(number, current[number]))

    class Service:
        def stop_now(self) -> None:
            raise AssertionError("one signal stops gracefully")

    cli._one_graceful_stop(reactor, Service())  # type: ignore[arg-type]
    with capture_log_events() as events:
        installed[signal.SIGTERM](signal.SIGTERM, None)
    assert any("Received SIGTERM, shutting down" in formatEvent(event) for event in events)
    assert reactor._exitSignal == signal.SIGTERM
    reactor.stop()  # the master's "stop" command, handled first
    for call in reactor.calls:
        call()  # the signal's stop: nothing to do, and no error
    assert reactor._stopped


def encrypted_key() -> bytes:
    """A PEM private key (PKCS#8) encrypted with a passphrase."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def test_an_encrypted_tls_key_is_refused_without_a_prompt(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """OpenSSL would ask for a passphrase on the terminal: the server says the key is
    encrypted instead (a service has no one to type it).
    """
    path = tmp_path / "key.pem"
    path.write_bytes(encrypted_key())
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", f"ssl:0:privateKey={path}:certKey={path}")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert f"the private key '{path}' is encrypted; give a key without a passphrase" in err


def test_an_encrypted_key_after_the_certificate_in_one_file_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The whole key file is searched: an encrypted key after a certificate (and over
    4 KB into the file) still got OpenSSL's passphrase prompt.
    """
    _, cert = write_self_signed_certificate(tmp_path)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(cert.read_bytes() + b"# padding\n" * 500 + encrypted_key())
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", f"ssl:0:privateKey={combined}")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "is encrypted" in err


def test_an_encrypted_key_in_the_certificate_file_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Twisted reads certKey= for the certificate and its chain, and OpenSSL then met
    an encrypted key there too: two passphrase prompts, although privateKey= named a
    plain key. The certificate file is searched as well.
    """
    key, cert = write_self_signed_certificate(tmp_path)
    combined = tmp_path / "cert-and-encrypted-key.pem"
    combined.write_bytes(cert.read_bytes() + encrypted_key())
    with pytest.raises(SystemExit) as raised:
        make(
            "--app",
            "tests.apps:hello",
            "--listen",
            f"ssl:0:privateKey={key}:certKey={combined}",
        )
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and f"'{combined}' is encrypted" in err


def test_an_encrypted_key_behind_an_escaped_path_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    r"""A config file in a directory named site=prod writes site\=prod into its
    endpoints; the checks read the escaped path and missed the encrypted key.
    """
    from twistwsgi.config import escape

    directory = tmp_path / "site=prod"
    directory.mkdir()
    key = directory / "key.pem"
    key.write_bytes(encrypted_key())
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", f"ssl:0:privateKey={escape(str(key))}")
    assert raised.value.code == 2
    assert "is encrypted" in capfd.readouterr().err


def test_the_word_encrypted_in_a_comment_is_not_an_encrypted_key(tmp_path: Path) -> None:
    key, cert = write_self_signed_certificate(tmp_path)
    key.write_bytes(b"# this key is not ENCRYPTED\n" + key.read_bytes())
    make("--app", "tests.apps:hello", "--listen", f"ssl:0:privateKey={key}:certKey={cert}")


@pytest.mark.parametrize("repeated", ["certKey", "privateKey", "interface"])
def test_a_parameter_given_twice_in_an_endpoint_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], repeated: str
) -> None:
    """Twisted keeps the last silently: a second certificate would just vanish."""
    key, cert = write_self_signed_certificate(tmp_path)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}:{repeated}={cert}"
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", listen)
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and f"{repeated}= is given more than once" in err


# RFC 7919's ffdhe2048 group, as `openssl genpkey -genparam -algorithm DH -pkeyopt
# group:ffdhe2048` writes it.
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@pytest.mark.parametrize("content", [None, "not DH parameters\n"])
def test_dh_parameters_that_do_not_load_are_refused_at_start(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], content: str | None
) -> None:
    """Twisted loads them at the first connection: every handshake failed after a
    start (and --check-config) that said all was well.
    """
    key, cert = write_self_signed_certificate(tmp_path)
    dh = tmp_path / "dh.pem"
    if content is not None:
        dh.write_text(content)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}:dhParameters={dh}"
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", listen, "--check-config")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "dhParameters=" in err
    dh.write_text(FFDHE2048)
    make("--app", "tests.apps:hello", "--listen", listen)


def served_certificate_subject(endpoint: Any) -> str:
    """The common name of the certificate a new TLS connection would be offered."""
    from cryptography.x509.oid import NameOID
    from OpenSSL import SSL

    certificate = SSL.Connection(cli._tls_options(endpoint).getContext()).get_certificate(
        as_cryptography=True
    )
    assert certificate is not None
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_reload_reads_renewed_tls_files_and_keeps_the_old_ones_when_broken(
    tmp_path: Path,
) -> None:
    """SIGHUP kept serving the certificate read at start (a renewed one was never
    used until a restart); files that no longer load leave the last good ones.
    """
    key, cert = write_self_signed_certificate(tmp_path, "first.example")
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    endpoint = cli._endpoint_for(global_reactor, description)
    assert served_certificate_subject(endpoint) == "first.example"
    write_self_signed_certificate(tmp_path, "renewed.example")
    with capture_log_events() as events:
        cli.reload_certificates(global_reactor, [(description, endpoint)])
    assert served_certificate_subject(endpoint) == "renewed.example"
    assert any("read the TLS files" in formatEvent(event) for event in events)
    key.write_text("half-written\n")
    with capture_log_events() as events:
        cli.reload_certificates(global_reactor, [(description, endpoint)])
    assert served_certificate_subject(endpoint) == "renewed.example"
    [error] = [formatEvent(e) for e in events if e["log_level"].name == "error"]
    assert "were not read again" in error and "cannot load the private key" in error


def test_tls_ciphers_choose_what_a_listener_offers(tmp_path: Path) -> None:
    """--tls-ciphers is nginx's ssl_ciphers: static RSA and CBC can be left out."""
    from OpenSSL import SSL

    key, cert = write_self_signed_certificate(tmp_path)
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"

    def offered(config: ServerConfig) -> list[str]:
        options = cli._tls_options(cli._endpoint_for(global_reactor, description, config))
        return list(SSL.Connection(options.getContext()).get_cipher_list())

    default = offered(ServerConfig())
    assert "AES128-SHA" in default  # Twisted's list keeps static RSA with CBC
    chosen = offered(ServerConfig(tls_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20"))
    assert chosen and all("ECDHE" in name or name.startswith("TLS_") for name in chosen)
    assert "AES128-SHA" not in chosen


def test_reload_keeps_the_tls_settings_a_listener_was_built_with(tmp_path: Path) -> None:
    """reload_certificates(reactor, endpoints), as library users call it, rebuilt the
    contexts with the default settings: a restricted cipher list was lost and session
    tickets came back on. Given a configuration, it applies that one's (SIGHUP).
    """
    from OpenSSL import SSL

    key, cert = write_self_signed_certificate(tmp_path)
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    strict = ServerConfig(tls_ciphers="ECDHE+AESGCM", tls_session_tickets=False)
    endpoint = cli._endpoint_for(global_reactor, description, strict)

    def ciphers() -> list[str]:
        context = cli._tls_options(endpoint).getContext()
        return list(SSL.Connection(context).get_cipher_list())

    def tickets() -> bool:
        from OpenSSL._util import lib  # pyOpenSSL has no getter for a used context

        context = cli._tls_options(endpoint).getContext()
        return not lib.SSL_CTX_get_options(context._context) & SSL.OP_NO_TICKET

    restricted = ciphers()
    assert "AES128-SHA" not in restricted and not tickets()
    cli.reload_certificates(global_reactor, [(description, endpoint)])
    assert ciphers() == restricted and not tickets()
    cli.reload_certificates(global_reactor, [(description, endpoint)], ServerConfig())
    assert "AES128-SHA" in ciphers() and tickets()
    cli.reload_certificates(global_reactor, [(description, endpoint)])
    assert "AES128-SHA" in ciphers() and tickets()  # the settings of the last reload


def serve_with_reload_signals(site: Path) -> tuple[Any, ServerService, CallsFromThreads]:
    """Build the one TLS listener and the service of ``site`` with the SIGHUP handler
    installed (collected by ``installed``); SIGHUP's work is left in the returned
    reactor's ``calls``.
    """
    given = {"config": str(site)}
    config = cli.load_config(given)
    endpoints = cli.build_endpoints(global_reactor, config)
    [(_, endpoint)] = endpoints
    service = make_service(config, reactor=MemoryReactorClock(), endpoints=[])
    reactor = CallsFromThreads()
    cli._handle_reload_signals(reactor, service, given, endpoints)
    return endpoint, service, reactor


def test_a_refused_reload_leaves_the_tls_settings_as_they_were(
    tmp_path: Path, installed: dict[int, Callable[[int, object], None]]
) -> None:
    """A file whose mounts do not build is refused whole: its tls_ciphers were
    applied to the listeners all the same (the log said the old configuration keeps
    serving), while a renewed certificate is still read.
    """
    from OpenSSL import SSL

    key, cert = write_self_signed_certificate(tmp_path, "first.example")
    site = tmp_path / "site.toml"

    def write(app: str, ciphers: str) -> None:
        site.write_text(
            "[server]\n"
            f'listen = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
            f'threads = 0\naccess_log = "off"\n{ciphers}\n'
            f'[[host]]\nnames = ["a"]\ndefault = true\nmount = [{{path = "/", app = "{app}"}}]\n'
        )

    write("tests.apps:hello", "")
    endpoint, _, reactor = serve_with_reload_signals(site)

    write_self_signed_certificate(tmp_path, "renewed.example")
    write("no_such_module_for_this_test:app", 'tls_ciphers = "ECDHE+AESGCM"')
    installed[signal.SIGHUP](signal.SIGHUP, None)
    [reload] = reactor.calls
    with capture_log_events() as events:
        reload()
    assert any("Reload refused" in formatEvent(event) for event in events)
    context = cli._tls_options(endpoint).getContext()
    assert "AES128-SHA" in SSL.Connection(context).get_cipher_list()
    assert served_certificate_subject(endpoint) == "renewed.example"


def write_host_site(directory: Path, host_certificate: str) -> Path:
    """A file listening on ssl: (its own certificate for listener.test) with a host
    a.test whose tls_certificate is ``host_certificate`` (key in a-key.pem).
    """
    key, cert = write_self_signed_certificate(directory, names=("listener.test",), prefix="own-")
    site = directory / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
        'threads = 0\naccess_log = "off"\n'
        f'[[host]]\nnames = ["a.test"]\ntls_certificate = "{host_certificate}"\n'
        'tls_key = "a-key.pem"\nmount = [{path = "/", app = "tests.apps:hello"}]\n'
    )
    return site


def test_sighup_reads_renewed_host_certificates_and_keeps_one_broken_in_place(
    tmp_path: Path, installed: dict[int, Callable[[int, object], None]]
) -> None:
    """A renewed site certificate (certbot's deploy hook reloads): clients naming it get
    the new one. One that no longer loads where it was read before (half-written, or
    root's alone after --uid) keeps serving what was read, with a line naming the
    host, while the listener's own renewed files and the other hosts' are read. A
    new path that does not load refuses the file whole.
    """
    from tests.test_host_certificates import served_names

    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = write_host_site(tmp_path, "a-cert.pem")
    endpoint, service, reactor = serve_with_reload_signals(site)

    def served(name: bytes) -> tuple[str, ...]:
        return served_names(cli._tls_options(endpoint).getContext(), name)

    def sighup() -> list[str]:
        installed[signal.SIGHUP](signal.SIGHUP, None)
        with capture_log_events() as events:
            reactor.calls.pop()()
        return [formatEvent(event) for event in events]

    assert served(b"a.test") == ("a.test",)
    write_self_signed_certificate(tmp_path, names=("a.test", "renewed.a.test"), prefix="a-")
    sighup()
    assert served(b"a.test") == ("a.test", "renewed.a.test")

    (tmp_path / "a-cert.pem").write_text("half-written\n")
    write_self_signed_certificate(
        tmp_path, names=("listener.test", "renewed.listener.test"), prefix="own-"
    )
    lines = sighup()
    assert not any("Reload refused" in line for line in lines)
    [kept] = [line for line in lines if "were not read again" in line]
    assert "site.toml: host[0]" in kept and "cannot load the certificate" in kept
    assert served(b"a.test") == ("a.test", "renewed.a.test")
    assert served(b"other.test") == ("listener.test", "renewed.listener.test")

    serving = service.config
    (tmp_path / "broken.pem").write_text("half-written\n")
    write_host_site(tmp_path, "broken.pem")
    [refusal] = [line for line in sighup() if "Reload refused" in line]
    assert "site.toml: host[0].tls_certificate: " in refusal
    assert "cannot load the certificate" in refusal
    assert service.config is serving
    assert served(b"a.test") == ("a.test", "renewed.a.test")


def test_reload_certificates_with_a_host_certificate_never_read_logs_and_keeps(
    tmp_path: Path,
) -> None:
    """reload_certificates given a configuration whose new host's files do not load
    (as a library user may call it, or a file broken between SIGHUP's check and the
    read): a line says so and the listener keeps its context, instead of an
    exception out of the signal's work.
    """
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = write_host_site(tmp_path, "a-cert.pem")
    config = cli.load_config({"config": str(site)})
    [(description, endpoint)] = cli.build_endpoints(global_reactor, config)
    before = cli._tls_options(endpoint).getContext()
    (tmp_path / "never-read.pem").write_text("half-written\n")
    with capture_log_events() as events:
        cli.reload_certificates(
            global_reactor, [(description, endpoint)], _with_host_certificate(config, tmp_path)
        )
    [error] = [formatEvent(e) for e in events if e["log_level"].name == "error"]
    assert "were not read again" in error and "never-read.pem" in error
    assert cli._tls_options(endpoint).getContext() is before


def _with_host_certificate(config: ServerConfig, directory: Path) -> ServerConfig:
    """``config`` with its first host's certificate at never-read.pem."""
    from dataclasses import replace

    first = replace(config.hosts[0], tls_certificate=str(directory / "never-read.pem"))
    return replace(config, hosts=(first, *config.hosts[1:]))


def test_a_host_added_on_reload_is_served_when_the_listeners_files_cannot_be_read(
    tmp_path: Path, installed: dict[int, Callable[[int, object], None]]
) -> None:
    """The listener's own key no longer readable on SIGHUP (root's alone, after
    --uid): its files are not read again, but a host the file adds gets its own
    certificate all the same, and one the file removes no longer gets its.
    """
    from tests.test_host_certificates import served_names

    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    write_self_signed_certificate(tmp_path, names=("b.test",), prefix="b-")
    site = write_host_site(tmp_path, "a-cert.pem")
    endpoint, service, reactor = serve_with_reload_signals(site)
    key, cert = tmp_path / "own-key.pem", tmp_path / "own-cert.pem"
    site.write_text(
        "[server]\n"
        f'listen = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
        'threads = 0\naccess_log = "off"\n'
        '[[host]]\nnames = ["b.test"]\ntls_certificate = "b-cert.pem"\n'
        'tls_key = "b-key.pem"\nmount = [{path = "/", app = "tests.apps:hello"}]\n'
    )
    key.write_text("unreadable now\n")
    installed[signal.SIGHUP](signal.SIGHUP, None)
    with capture_log_events() as events:
        reactor.calls.pop()()
    assert any("were not read again" in formatEvent(event) for event in events)
    context = cli._tls_options(endpoint).getContext()
    assert served_names(context, b"b.test") == ("b.test",)
    assert served_names(context, b"a.test") == ("listener.test",)
    assert service.config is not None and service.config.hosts[0].names == ("b.test",)


def test_a_host_certificate_that_does_not_load_stops_the_start(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """--check-config included: one line naming the file's key, exit status 2."""
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    write_self_signed_certificate(tmp_path, names=("b.test",), prefix="b-")
    site = write_host_site(tmp_path, "b-cert.pem")  # with a-key.pem: not its key
    for check in ((), ("--check-config",)):
        with pytest.raises(SystemExit) as raised:
            make("--config", str(site), *check)
        assert raised.value.code == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1
        assert "site.toml: host[0].tls_key: " in err
        assert f"this key is not the key of {str(tmp_path / 'b-cert.pem')!r}" in err


def test_tls_ciphers_openssl_does_not_know_are_refused_at_start(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    key, cert = write_self_signed_certificate(tmp_path)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    with pytest.raises(SystemExit) as raised:
        make("--app", "tests.apps:hello", "--listen", listen, "--tls-ciphers", "NO-SUCH-CIPHER")
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert "--tls-ciphers 'NO-SUCH-CIPHER': OpenSSL knows no cipher in this list" in err


def stale_socket(path: Path) -> None:
    """Leave a socket file nobody listens on, as a crashed server does."""
    import socket

    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))
    left.close()


def test_a_stale_unix_socket_is_removed_before_listening(short_directory: Path) -> None:
    """A socket file left by a crash (nothing listens) would fail the bind."""
    path = short_directory / "app.sock"
    stale_socket(path)
    cli._clear_stale_unix_socket(f"unix:{path}:mode=660")
    assert not path.exists()


def test_a_stale_lock_beside_a_stale_socket_is_removed(short_directory: Path) -> None:
    """Twisted's lock naming a live process (pid reused) no longer blocks the start
    when nothing listens on the socket.
    """
    path = short_directory / "app.sock"
    stale_socket(path)
    os.symlink("1", f"{path}.lock")
    cli._clear_stale_unix_socket(f"unix:address={path}")
    assert not path.exists() and not os.path.lexists(f"{path}.lock")


def test_a_lock_naming_this_process_is_removed(short_directory: Path) -> None:
    """Restarted as the same pid (a container's process 1): the lock is not held."""
    path = short_directory / "app.sock"
    os.symlink(str(os.getpid()), f"{path}.lock")
    cli._clear_stale_unix_socket(f"unix:{path}")
    assert not os.path.lexists(f"{path}.lock")


def test_a_socket_something_listens_on_is_left_alone(short_directory: Path) -> None:
    """Another server's socket and lock are kept: starting beside it must fail."""
    import socket

    path = short_directory / "app.sock"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(path))
    listening.listen()
    os.symlink("1", f"{path}.lock")
    try:
        cli._clear_stale_unix_socket(f"unix:{path}")
        assert path.exists() and os.path.lexists(f"{path}.lock")
    finally:
        listening.close()


def test_a_file_that_is_not_a_socket_is_left_alone(short_directory: Path) -> None:
    """Only socket files are removed; anything else is for the bind to report."""
    path = short_directory / "app.sock"
    path.write_text("data\n")
    cli._clear_stale_unix_socket(f"unix:{path}")
    assert path.read_text() == "data\n"


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:8080", "tcp:8080:backlog=511"),
        ("tcp6:8080:interface=\\:\\:1", "tcp6:8080:interface=\\:\\:1:backlog=511"),
        ("ssl:8443:privateKey=k.pem", "ssl:8443:privateKey=k.pem:backlog=511"),
        ("unix:/run/a.sock:mode=660", "unix:/run/a.sock:mode=660:backlog=511"),
        ("tcp:8080:backlog=2048", "tcp:8080:backlog=2048"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_endpoints_listen_with_nginxs_backlog_unless_given(description: str, expected: str) -> None:
    """Twisted's backlog of 50 overflows under a burst of connections; 511 is nginx's."""
    assert cli._with_backlog(description) == expected


def test_built_endpoints_listen_with_the_default_backlog() -> None:
    """The endpoint built from the configuration really listens with it."""
    from twisted.internet.testing import MemoryReactor

    reactor = MemoryReactor()
    config = cli.load_config({"app": "tests.apps:hello", "listen": ["tcp:8080"]})
    [(description, endpoint)] = cli.build_endpoints(reactor, config)
    endpoint.listen(make_service(config, reactor=MemoryReactorClock(), endpoints=[]).factory)
    [(port, _factory, backlog, _interface)] = reactor.tcpServers
    assert (description, port, backlog) == ("tcp:8080", 8080, 511)


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    """A soft limit of 256 (below the hard one) is raised at start-up: each connection
    holds a descriptor, and the soft limit would end accepting first.
    """
    import subprocess
    import sys

    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from twistwsgi.cli import raise_open_files_limit\n"
        "print(raise_open_files_limit()[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    reported, in_force, hard = (int(value) for value in result.stdout.split())
    if hard == 256:
        pytest.skip("the hard limit is 256 here: nothing to raise")
    assert reported == in_force == (hard if hard != -1 else 1 << 20)


def test_a_socket_whose_server_does_not_accept_is_left_alone_without_waiting(
    short_directory: Path,
) -> None:
    """A listening socket with a full backlog (a server paused at max_connections, or
    hung) makes a blocking connect wait forever; the probe does not block.
    """
    import socket

    path = short_directory / "app.sock"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(path))
    listening.listen(0)
    fillers = []
    try:
        while True:  # fill the backlog; the next connect would block
            filler = socket.socket(socket.AF_UNIX)
            filler.setblocking(False)
            try:
                filler.connect(str(path))
            except BlockingIOError:
                filler.close()
                break
            fillers.append(filler)
        import threading

        # In a thread: a probe that blocks would hang here; the join's timeout only
        # turns that hang into a failure.
        probing = threading.Thread(
            target=cli._clear_stale_unix_socket, args=(f"unix:{path}",), daemon=True
        )
        probing.start()
        probing.join(timeout=30)
        assert not probing.is_alive()
        assert path.exists()
    finally:
        for filler in fillers:
            filler.close()
        listening.close()


def test_check_config_leaves_a_stale_socket_in_place(
    short_directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run changes nothing on disk, stale sockets included."""
    path = short_directory / "app.sock"
    stale_socket(path)
    with pytest.raises(SystemExit):
        make("--app", "tests.apps:hello", "--listen", f"unix:{path}", "--check-config")
    assert path.exists()


@pytest.mark.parametrize(
    ("given", "expected"), [([], True), (["--tls-session-tickets", "off"], False)]
)
def test_tls_session_tickets_are_on_unless_turned_off(given: list[str], expected: bool) -> None:
    """A setting on by default takes a value on the command line: a flag could only
    turn it on.
    """
    options = cli.Options()
    options.parseOptions(["--app", "tests.apps:hello", *given])
    assert options.config.tls_session_tickets is expected


def test_the_working_directory_is_named_as_the_shell_named_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$PWD when it leads to the current directory (a link a deployment moves
    keeps its name), else the directory itself: $PWD may be stale (a process that
    changed directory without updating it), relative, or unset.
    """
    release = tmp_path / "release-1"
    release.mkdir()
    current = tmp_path / "current"
    current.symlink_to(release)
    monkeypatch.chdir(current)
    resolved = os.getcwd()
    assert resolved == os.path.realpath(release)
    monkeypatch.setenv("PWD", str(current))
    assert cli.logical_working_directory() == str(current)
    monkeypatch.setenv("PWD", str(tmp_path))
    assert cli.logical_working_directory() == resolved
    monkeypatch.setenv("PWD", "current")
    assert cli.logical_working_directory() == resolved
    monkeypatch.setenv("PWD", str(tmp_path / "gone"))
    assert cli.logical_working_directory() == resolved
    monkeypatch.delenv("PWD")
    assert cli.logical_working_directory() == resolved


def test_a_sighup_while_the_server_starts_is_a_reload_once_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its default action would end the process (systemctl reload just after a
    restart, while the applications import).
    """
    monkeypatch.setattr(cli, "_early_hangups", [])
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    previous_user1 = signal.getsignal(signal.SIGUSR1)
    try:
        cli.hold_hangups_until_running()
        os.kill(os.getpid(), signal.SIGHUP)  # (handled before the call returns)
        assert cli._early_hangups == [signal.SIGHUP]
        reactor = CallsFromThreads()
        reloads: list[str] = []
        cli._on_reload_signals(reactor, lambda: reloads.append("reload"), lambda: None)
        [call] = reactor.calls
        call()
        assert reloads == ["reload"]
        assert cli._early_hangups == []
        installed = signal.getsignal(signal.SIGHUP)
        assert callable(installed)
        installed(signal.SIGHUP, None)
        assert len(reactor.calls) == 2  # from now on, each SIGHUP is one reload
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGUSR1, previous_user1)


def test_a_sigusr1_while_the_server_starts_reopens_the_log_once_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its default action ends the process: logrotate's kill -USR1 (an nginx recipe)
    during a restart, while the applications import, would kill the server. Held,
    it reopens the log once the server runs, and is not handed on again after that.
    """
    monkeypatch.setattr(cli, "_early_hangups", [])
    numbers = (signal.SIGHUP, signal.SIGUSR1)
    previous = {number: signal.signal(number, signal.SIG_DFL) for number in numbers}
    try:
        cli.hold_hangups_until_running()
        holder = signal.getsignal(signal.SIGUSR1)
        assert callable(holder)
        holder(signal.SIGUSR1, None)
        assert cli._early_hangups == [signal.SIGUSR1]
        reactor = CallsFromThreads()
        done: list[str] = []
        cli._on_reload_signals(
            reactor, lambda: done.append("reload"), lambda: done.append("reopen")
        )
        for call in reactor.calls:
            call()
        assert done == ["reopen"]
        installed = signal.getsignal(signal.SIGUSR1)
        assert callable(installed)
        installed(signal.SIGUSR1, None)
        assert cli._early_hangups == []  # (the holder is not chained)
        reactor.calls[-1]()
        assert done == ["reopen", "reopen"]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass
class WorkerCountSignals:
    """The SIGTTIN/SIGTTOU handlers installed, what they hand the reactor, and asked."""

    reactor: CallsFromThreads
    asked: list[str]


@pytest.fixture
def worker_count_signals() -> Iterator[WorkerCountSignals]:
    previous = {number: signal.getsignal(number) for number in (signal.SIGTTIN, signal.SIGTTOU)}
    installed = WorkerCountSignals(CallsFromThreads(), [])
    cli._on_worker_count_signals(
        installed.reactor,
        lambda: installed.asked.append("more"),
        lambda: installed.asked.append("fewer"),
    )
    try:
        yield installed
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def test_sigttin_and_sigttou_change_the_workers_in_the_reactor_loop(
    worker_count_signals: WorkerCountSignals,
) -> None:
    """As gunicorn's; without workers they are said to do nothing (their default
    action, stopping the process, would freeze the server).
    """
    os.kill(os.getpid(), signal.SIGTTIN)
    os.kill(os.getpid(), signal.SIGTTOU)
    for call in worker_count_signals.reactor.calls:
        call()
    assert worker_count_signals.asked == ["more", "fewer"]
    with capture_log_events() as events:
        cli._no_workers_to_count("SIGTTIN")
    assert [formatEvent(event) for event in events] == [
        "SIGTTIN ignored: this server serves without worker processes (workers = 0)"
    ]


def test_sigttou_from_the_kernel_to_a_background_job_lets_its_write_through(
    monkeypatch: pytest.MonkeyPatch, worker_count_signals: WorkerCountSignals
) -> None:
    """A background job writing to its terminal under stty tostop gets SIGTTOU from
    the kernel, which restarts the write once the handler returns: acted on, the
    signal would come back for ever (and remove workers). It is ignored until the
    reactor runs next, then handled again.
    """
    handler = signal.getsignal(signal.SIGTTOU)
    monkeypatch.setattr(cli, "_in_background_of_a_terminal", lambda: True)
    assert callable(handler)
    handler(signal.SIGTTOU, None)
    assert signal.getsignal(signal.SIGTTOU) == signal.SIG_IGN
    [restore] = worker_count_signals.reactor.calls
    restore()
    assert signal.getsignal(signal.SIGTTOU) is handler
    assert worker_count_signals.asked == []


def test_a_background_job_of_a_terminal_is_told_apart_from_its_foreground() -> None:
    """In a child that a pseudo-terminal controls: its own process group is the
    terminal's foreground; a grandchild in a group of its own is a background job.
    """
    pid, terminal = pty.fork()
    if pid == 0:  # (the child: nothing but exit codes from here)
        try:
            foreground = cli._in_background_of_a_terminal()
            inner = os.fork()
            if inner == 0:
                os.setpgid(0, 0)
                os._exit(0 if cli._in_background_of_a_terminal() else 1)
            _, status = os.waitpid(inner, 0)
            os._exit(0 if not foreground and os.WEXITSTATUS(status) == 0 else 1)
        except BaseException:
            os._exit(2)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(terminal)
    assert os.WEXITSTATUS(status) == 0


def test_an_ignored_sighup_stays_ignored_while_the_server_starts() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        cli.hold_hangups_until_running()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sigttin_and_sigttou_are_ignored_while_the_server_starts() -> None:
    """Their default action stops the process: one sent before the reactor runs
    (systemctl kill -s SIGTTIN while the applications import) would freeze the
    server, which answers them only once their handlers are in place.
    """
    numbers = (signal.SIGTTIN, signal.SIGTTOU)
    previous = {number: signal.signal(number, signal.SIG_DFL) for number in numbers}
    try:
        cli.ignore_worker_count_signals_while_starting()
        assert {number: signal.getsignal(number) for number in numbers} == {
            number: signal.SIG_IGN for number in numbers
        }
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def test_the_server_holds_a_sighup_from_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """MakeService holds SIGHUP, and ignores SIGTTIN and SIGTTOU, before it imports
    anything (an application's import may take long); a configuration check does not.
    """
    held: list[str] = []
    monkeypatch.setattr(cli, "hold_hangups_until_running", lambda: held.append("held"))
    monkeypatch.setattr(
        cli, "ignore_worker_count_signals_while_starting", lambda: held.append("ignored")
    )
    monkeypatch.setattr(cli, "raise_open_files_limit", lambda: held.append("limit"))
    monkeypatch.setattr(cli, "settle_temporary_directory", lambda: held.append("tmp"))
    build_endpoints = cli.build_endpoints
    monkeypatch.setattr(cli, "build_endpoints", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        make("--app", "tests.apps:hello")
    assert held == ["held", "ignored", "limit", "tmp"]
    monkeypatch.setattr(cli, "build_endpoints", build_endpoints)
    with pytest.raises(SystemExit):
        make("--app", "tests.apps:hello", "--check-config")
    assert held == ["held", "ignored", "limit", "tmp"]


def test_once_stopped_the_process_ignores_stop_signals(
    installed: dict[int, Callable[[int, object], None]],
) -> None:
    """A second SIGTERM a moment after the first met the default action Python puts
    back as it finalizes: killed (-15) after a clean stop. Ignored, it cannot.
    """
    stopped = SimpleNamespace(_exitSignal=signal.SIGTERM)  # (what twistd reads)
    cli._exit_zero_after_signal(stopped)
    assert stopped._exitSignal is None  # (twistd re-raises it otherwise)
    ignored: dict[int, Any] = dict(installed)
    assert ignored == {signal.SIGTERM: signal.SIG_IGN, signal.SIGINT: signal.SIG_IGN}
