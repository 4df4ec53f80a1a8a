"""The ``twistd wsgi`` command line: options from the schema, one-line errors, exit 2."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from twistwsgi import cli
from twistwsgi.config import SETTINGS
from twistwsgi.service import ServerService


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
        (["--threads", "2"], "nothing to serve: give --app, --static or --proxy"),
        (["--app", "tests.apps:hello", "--threads", "many"], "--threads: expected a whole number"),
        (["--app", "nocolon"], "--app: expected module:name"),
        (["--app", "tests.apps:hello", "--max-body", "1q"], "--max-body: expected a size"),
        (["--app", "tests.apps:hello", "--listen", "8080"], "--listen: expected a Twisted"),
        (
            ["--app", "tests.apps:hello", "--header-timeout", "0"],
            "--header-timeout: expected more than 0, got '0'",
        ),
        (
            ["--proxy", "/a=http://127.0.0.1:1 weight=2", "--proxy", "/a=http://127.0.0.1:2"],
            "twistwsgi: error: --proxy '/a=http://127.0.0.1:2': path '/a' is already mounted"
            " by --proxy '/a=http://127.0.0.1:1 weight=2'\n",
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
