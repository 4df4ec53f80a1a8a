"""Every bad configuration ends in the one-line error and exit status 2.

The holes fuzzing the configuration found, each as the value a user would write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.config import ConfigError, build_config


def flag_source(name: str) -> str:
    return "--" + name.replace("_", "-")


def refusal(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    """The one line ``twistd wsgi ARGV`` refuses ARGV with (exit status 2)."""
    with pytest.raises(SystemExit) as raised:
        cli.Options().parseOptions(argv)
    assert raised.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("twistwsgi: error: ")
    return err.removeprefix("twistwsgi: error: ").rstrip("\n")


LONG_SOCKET = "/tmp/" + "s" * 110 + ".sock"


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        # Each passed --check-config and failed only when the server listened.
        ("tcp:99999", "--listen 'tcp:99999': a port is 0 to 65535, got '99999'"),
        ("tcp:port=70000", "--listen 'tcp:port=70000': a port is 0 to 65535, got '70000'"),
        ("ssl:-1:privateKey=k.pem", "--listen 'ssl:-1:privateKey=k.pem': a port is 0 to"),
        (
            f"unix:{LONG_SOCKET}",
            f"--listen 'unix:{LONG_SOCKET}': a UNIX socket path is at most 107 bytes, got 120",
        ),
        (
            "unix:/nonexistent-dir/app.sock",
            "--listen 'unix:/nonexistent-dir/app.sock': no directory '/nonexistent-dir'"
            " to put the socket in",
        ),
        # Said as the port's fault, or as a keyword call's TypeError.
        (
            "tcp:8080:backlog=x",
            "--listen 'tcp:8080:backlog=x': backlog= is a whole number, got 'x'",
        ),
        (
            "tcp:8080:interface=::1",
            "--listen 'tcp:8080:interface=::1': the colons of an IPv6 interface= are escaped"
            " with \\ (interface=\\:\\:1)",
        ),
        # Each connection would have to open with two PROXY headers.
        (
            "haproxy:haproxy:tcp:8080",
            "--listen 'haproxy:haproxy:tcp:8080': haproxy: wraps an endpoint of another kind",
        ),
        # Twisted's own message held the newline: two lines on stderr.
        ("tc\np:8080", "--listen 'tc\\np:8080': holds a control character"),
        # A NUL in a file name raised ValueError out of open() at build time.
        ("ssl:0:privateKey=/k\x00.pem", "--listen 'ssl:0:privateKey=/k\\x00.pem': holds a"),
    ],
)
def test_listeners_that_could_not_listen_are_refused_with_the_configuration(
    listen: str, problem: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """What would fail only at listen time is refused with the other settings, so
    that --check-config says it too, in the terms of the endpoint string.
    """
    assert refusal(["--return", "/=200 ok", "--listen", listen], capfd).startswith(problem)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("tcp:8080", "tcp:port=8080"),
        ("tcp:8080", "tcp:8080:interface=0.0.0.0"),
        ("tcp:8080:interface=127.0.0.1", "ssl:8080:interface=127.0.0.1:privateKey=k.pem"),
        ("unix:/tmp/app.sock", "haproxy:unix:/tmp/app.sock"),
        ("unix:/tmp/app.sock", "unix:address=/tmp//app.sock"),
    ],
)
def test_one_address_spelt_two_ways_is_refused(first: str, second: str) -> None:
    """As the same string given twice is: the second would fail to listen with
    "address already in use", which reads like another process holding it.
    """
    with pytest.raises(ConfigError) as raised:
        build_config({"app": "a:b", "listen": [first, second]}, source=flag_source)
    assert str(raised.value) == (
        f"--listen {second!r}: listens where {first!r} does: give the address once"
    )


def test_port_zero_listens_anywhere_so_never_twice() -> None:
    """Port 0 is a new port each time (a test's listener): two never collide."""
    config = build_config({"app": "a:b", "listen": ["tcp:0", "tcp:port=0"]}, source=flag_source)
    assert config.listen == ("tcp:0", "tcp:port=0")


def test_metrics_on_a_listen_address_spelt_another_way_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        build_config(
            {"app": "a:b", "listen": ["tcp:9090"], "metrics_listen": "tcp:port=9090"},
            source=flag_source,
        )
    assert str(raised.value) == (
        "--metrics-listen: 'tcp:port=9090' is a listen too ('tcp:9090'): give the metrics their own"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://backend\x00:9000", "holds a control character"),
        ("http://127.0.0.1:9000/a\x01b", "holds a control character"),
        ("http://127.0.0.1:0", "port 0 cannot be connected to"),
        ("http://backend..internal:9000", "'backend..internal' is not a host name"),
        ("http://back%00end:9000", "'back%00end' is not a host name"),
        ("http://" + "a" * 64 + ":9000", "is not a host name"),
        ("http://user:secret@backend:9000", "no user or password in an upstream URL"),
    ],
)
def test_upstream_urls_no_connection_could_follow_are_refused(
    url: str, problem: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Accepted before, each upstream failed every request at connect time (502)."""
    message = refusal(["--proxy", f"/={url}"], capfd)
    assert message.startswith(f"--proxy {'/=' + url!r}: ")
    assert problem in message


def test_an_auth_request_host_that_is_no_host_name_is_refused(tmp_path: Path) -> None:
    """As an upstream's (its port 0, user and controls were refused already)."""
    path = tmp_path / "site.toml"
    path.write_text(
        '[[host]]\nnames = ["a.test"]\n[[host.mount]]\npath = "/"\nreturn = "200 ok"\n'
        'auth_request = "http://auth..internal:4180/check"\n'
    )
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(path)})
    assert str(raised.value) == (
        "site.toml: host[0].mount[0].auth_request: 'auth..internal' is not a host name,"
        " in 'http://auth..internal:4180/check'"
    )


def test_a_config_path_with_a_nul_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """open() raised ValueError ("embedded null byte"): a traceback."""
    message = refusal(["--config", "site\x00.toml"], capfd)
    assert message == "site\\x00.toml: cannot read the configuration file: a path holds no NUL"


def test_a_config_path_with_a_newline_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """The path was the first words of the message, newline and all."""
    message = refusal(["--config", "site\n.toml"], capfd)
    assert message == (
        "site\\n.toml: cannot read the configuration file: No such file or directory"
    )


@pytest.mark.parametrize("where", ["server", "host", "mount"])
def test_an_access_log_path_with_a_nul_is_refused(tmp_path: Path, where: str) -> None:
    """The open at start-up raised ValueError ("embedded null byte"): a traceback."""
    key = 'access_log = "/tmp/a\\u0000.log"'
    server = key if where == "server" else ""
    host = key if where == "host" else ""
    mount = key if where == "mount" else ""
    path = tmp_path / "site.toml"
    path.write_text(
        f'[server]\n{server}\n[[host]]\nnames = ["a.test"]\n{host}\n'
        f'[[host.mount]]\npath = "/"\nreturn = "200 ok"\n{mount}\n'
    )
    expected = {"server": "server", "host": "host[0]", "mount": "host[0].mount[0]"}[where]
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(path)})
    assert str(raised.value) == (
        f"site.toml: {expected}.access_log: '/tmp/a\\x00.log': a path holds no NUL"
    )


def test_a_header_value_that_is_not_text_names_the_header(tmp_path: Path) -> None:
    """The error named the headers table, not which of its fields was wrong."""
    path = tmp_path / "site.toml"
    path.write_text(
        '[[host]]\nnames = ["a.test"]\n[[host.mount]]\npath = "/"\nreturn = "200 ok"\n'
        'headers = { X-Frame-Options = "DENY", X-Count = 3 }\n'
    )
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(path)})
    assert str(raised.value) == (
        "site.toml: host[0].mount[0].headers: the value of 'X-Count' is not text: 3"
    )


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO that a blocked open of it can always get past.

    A writer in a thread opens it again and again, each time a reader comes: each
    open of the FIFO for reading then returns, and reads an end of file, rather than
    waiting for ever (a test of the hang would otherwise hang). At the end the
    writer is let go.
    """
    path = tmp_path / "fifo.pem"
    os.mkfifo(path)
    done = threading.Event()

    def write_ends() -> None:
        while not done.is_set():
            path.open("wb").close()

    writer = threading.Thread(target=write_ends, daemon=True)
    writer.start()
    yield path
    done.set()
    # (With a reader there, the writer's open waiting now returns.)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    writer.join()
    os.close(reader)


@pytest.mark.parametrize("parameter", ["privateKey", "certKey"])
def test_a_listener_file_that_is_a_fifo_is_refused(
    tmp_path: Path, fifo: Path, parameter: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The start-up waited, silent, for something to write to the FIFO."""
    key, certificate = write_self_signed_certificate(tmp_path)
    files = {"privateKey": str(key), "certKey": str(certificate), parameter: str(fifo)}
    listen = f"ssl:0:privateKey={files['privateKey']}:certKey={files['certKey']}"
    options = cli.Options()
    options.parseOptions(["--return", "/=200 ok", "--listen", listen])
    with pytest.raises(SystemExit) as raised:
        cli.build_endpoints(MemoryReactorClock(), options.config)
    assert raised.value.code == 2
    assert capfd.readouterr().err == (
        f"twistwsgi: error: --listen {listen!r}: {parameter}= {str(fifo)!r} is not a regular file\n"
    )


@pytest.mark.parametrize("key", ["tls_ca", "auth_basic_user_file"])
def test_a_file_that_is_a_fifo_is_not_said_to_be_missing(
    tmp_path: Path, fifo: Path, key: str
) -> None:
    """It was "file ... does not exist", of a file the user can see."""
    others = 'auth_basic = "staff"\n' if key == "auth_basic_user_file" else ""
    target = 'proxy = "https://127.0.0.1:9443"' if key == "tls_ca" else 'return = "200 ok"'
    path = tmp_path / "site.toml"
    path.write_text(
        f'[[host]]\nnames = ["a.test"]\n[[host.mount]]\npath = "/"\n{target}\n'
        f'{key} = "{fifo}"\n{others}'
    )
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(path)})
    assert str(raised.value) == (
        f"site.toml: host[0].mount[0].{key}: file {str(fifo)!r} is not a regular file"
    )


def test_an_error_line_is_one_line_whatever_it_quotes(capfd: pytest.CaptureFixture[str]) -> None:
    """The last guard of the promise: a message quoting text it did not escape (an
    exception's own message, a path) still prints as one line.
    """
    with pytest.raises(SystemExit):
        cli.exit_with_error("--listen 'x': Unknown endpoint type: 'a\nb\r\x1b[2J'")
    assert capfd.readouterr().err == (
        "twistwsgi: error: --listen 'x': Unknown endpoint type: 'a\\nb\\r\\x1b[2J'\n"
    )
