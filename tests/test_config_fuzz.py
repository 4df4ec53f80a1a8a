"""Every bad configuration ends in the one-line error and exit status 2.

The holes fuzzing the configuration found, each as the value a user would write.
"""

from __future__ import annotations

import pytest

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
    ],
)
def test_upstream_urls_no_connection_could_follow_are_refused(
    url: str, problem: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Accepted before, each upstream failed every request at connect time (502)."""
    message = refusal(["--proxy", f"/={url}"], capfd)
    assert message.startswith(f"--proxy {'/=' + url!r}: ")
    assert problem in message
