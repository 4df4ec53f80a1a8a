"""The configuration file: the documented example, the command line over the file, and
every validation error naming the file, the key path and the problem.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from twistwsgi import site as site_module
from twistwsgi.cli import load_config
from twistwsgi.config import SETTINGS, ConfigError, ServerConfig, Upstream, read_config_file
from twistwsgi.http.rules import compile_host_pattern
from twistwsgi.reference import configuration_reference
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder, describe_routing
from twistwsgi.testing import capture_log_events, connect, parse_responses

EXAMPLE = """\
[server]
listen = ["tcp:80", "ssl:443:privateKey=/etc/tls/key.pem:certKey=/etc/tls/cert.pem"]
threads = 16
access_log = "/var/log/twistwsgi/access.log"

[[host]]
names = ["example.com", "www.example.com"]
[[host.mount]]
path = "/"
app = "shop.wsgi:application"
[[host.mount]]
path = "/static"
static = "STATIC"
cache_control = "public, max-age=31536000, immutable"

[[host]]
names = ["*.example.org"]          # wildcard
default = true                      # unknown Host headers land here
[[host.mount]]
path = "/api"
proxy = "http://127.0.0.1:9000"
"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> str:
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(text.replace("STATIC", str(static)))
    return str(path)


def load(tmp_path: Path, text: str, **given: Any) -> ServerConfig:
    return load_config({"config": write(tmp_path, text), **given})


def error_of(tmp_path: Path, text: str, **given: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, **given)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_the_documented_example_loads_as_written(tmp_path: Path) -> None:
    """The example from the documentation is valid: two hosts, three mount kinds."""
    config = load(tmp_path, EXAMPLE)
    assert config.listen[0] == "tcp:80"
    assert config.threads == 16
    assert config.access_log == "/var/log/twistwsgi/access.log"
    shop, org = config.hosts
    assert shop.names == ("example.com", "www.example.com")
    assert not shop.default
    assert [(m.path, m.kind) for m in shop.mounts] == [("/", "app"), ("/static", "static")]
    assert shop.mounts[1].options["cache_control"] == "public, max-age=31536000, immutable"
    assert org.default
    assert [(m.path, m.kind, m.target) for m in org.mounts] == [
        ("/api", "proxy", (Upstream("http://127.0.0.1:9000"),))
    ]


@pytest.mark.parametrize(
    ("written", "statuses"), [("[504, 502, 502]", (502, 504)), ("503", (503,))]
)
def test_retry_statuses_are_read_as_a_set_of_codes(
    tmp_path: Path, written: str, statuses: tuple[int, ...]
) -> None:
    """One code or a list of them; a code written twice is the same setting."""
    text = (
        ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
        f"retry_statuses = {written}\nretry_tries = 2\nretry_timeout = '5s'\n"
    )
    options = load(tmp_path, text).hosts[0].mounts[1].options
    assert (options["retry_statuses"], options["retry_tries"], options["retry_timeout"]) == (
        statuses,
        2,
        5.0,
    )


def test_backup_upstreams_are_read_and_described(tmp_path: Path) -> None:
    """weight=N and backup in either order, as nginx's server parameters; the routing
    description (--check-config) writes them back.
    """
    from twistwsgi.site import describe_routing

    text = (
        ONE_HOST + '[[host.mount]]\npath = "/p"\n'
        'proxy = ["http://u", "http://v\tbackup weight = 3", "http://w weight=2 backup"]\n'
    )
    config = load(tmp_path, text)
    assert config.hosts[0].mounts[1].target == (
        Upstream("http://u"),
        Upstream("http://v", 3, backup=True),
        Upstream("http://w", 2, backup=True),
    )
    assert "proxy  http://u, http://v weight=3 backup, http://w weight=2 backup" in (
        describe_routing(config)
    )


def test_an_upstream_marked_down_is_read_and_described(tmp_path: Path) -> None:
    """As nginx's server ... down, with the other parameters in any order."""
    from twistwsgi.site import describe_routing

    text = (
        ONE_HOST + '[[host.mount]]\npath = "/p"\n'
        'proxy = ["http://u down", "http://v backup down weight=3", "http://w"]\n'
    )
    config = load(tmp_path, text)
    assert config.hosts[0].mounts[1].target == (
        Upstream("http://u", down=True),
        Upstream("http://v", 3, backup=True, down=True),
        Upstream("http://w"),
    )
    assert "proxy  http://u down, http://v weight=3 backup down, http://w" in (
        describe_routing(config)
    )


@pytest.mark.parametrize(
    ("written", "kept"),
    [("random", "random"), ("random two", "random two"), ("random two least_conn", "random two")],
)
def test_random_balancing_is_read_as_nginx_writes_it(
    tmp_path: Path, written: str, kept: str
) -> None:
    text = ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
    config = load(tmp_path, text + f'balance = "{written}"\n')
    assert config.hosts[0].mounts[1].options["balance"] == kept


def test_worker_timeout_is_read_from_the_server_table(tmp_path: Path) -> None:
    mounts = '[[host]]\nnames = ["a"]\n[[host.mount]]\npath = "/"\nstatic = "STATIC"\n'
    text = '[server]\nworkers = 2\nworker_timeout = "2m"\n' + mounts
    assert load(tmp_path, text).worker_timeout == 120.0
    bad = "[server]\nworkers = 2\nworker_timeout = -1\n" + mounts
    assert error_of(tmp_path, bad).endswith(
        "site.toml: server.worker_timeout: expected a duration >= 0, got -1"
    )


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    """Options on the command line win over the file's [server] values."""
    config = load(tmp_path, EXAMPLE, threads="4", listen=["tcp:8080"])
    assert config.threads == 4
    assert config.listen == ("tcp:8080",)
    assert config.source("threads") == "--threads"
    assert config.source("access_log") == "site.toml: server.access_log"


def test_check_config_prints_the_routing_table(tmp_path: Path) -> None:
    """The routing table lists each host and its mounts, longest prefix first."""
    text = describe_routing(load(tmp_path, EXAMPLE))
    assert "host example.com, www.example.com" in text
    assert "host *.example.org  [default]" in text
    paths = [line.split()[0] for line in text.splitlines() if line.startswith("  /")]
    assert paths.index("/static") < paths.index("/")


def test_check_config_shows_the_options_a_mount_changes(tmp_path: Path) -> None:
    """Options set away from their defaults are printed under their mount, as the
    file writes them; defaults are not.
    """
    (tmp_path / "files").mkdir()
    text = describe_routing(
        load(
            tmp_path,
            '[[host]]\nnames = ["a.example"]\n'
            '[[host.mount]]\npath = "/"\nstatic = "files"\nfallthrough = true\n'
            'internal = false\nindex = ["index.htm", "default.htm"]\n'
            'cache_control = "public, max-age=60"\n'
            '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\nx_accel_redirect = true\n',
        )
    )
    lines = text.splitlines()
    static = lines.index(next(line for line in lines if " static " in line))
    assert lines[static + 1].split() == [
        'cache_control="public,',
        'max-age=60"',
        'index=["index.htm",',
        '"default.htm"]',
        "fallthrough=true",
    ]
    assert "x_accel_redirect=true" in text
    assert "internal" not in text  # its default


SERVER = '[server]\nlisten = ["tcp:8080"]\n'
ONE_HOST = '[[host]]\nnames = ["a.example"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[severs]\n", "site.toml: severs: unknown key"),
        (SERVER + "threds = 4\n" + ONE_HOST, "site.toml: server.threds: unknown key"),
        ("[server]\nthreads = 'many'\n" + ONE_HOST, "site.toml: server.threads: expected a whole"),
        ("[server]\nlisten = 8080\n" + ONE_HOST, "site.toml: server.listen: expected one endpoint"),
        ("[server]\nmax_body = '1q'\n" + ONE_HOST, "site.toml: server.max_body: expected a size"),
        ("server = 3\n", "site.toml: server: expected a table"),
        ("host = 3\n", "site.toml: host: expected an array of tables"),
        ('[[host]]\nname = ["a"]\n', "site.toml: host[0].name: unknown key"),
        ("[[host]]\n[[host.mount]]\npath = '/'\napp = 'a:b'\n", "host[0].names: missing"),
        ('[[host]]\nnames = "a b"\n', "host[0].names: 'a b' is not a host name"),
        ('[[host]]\nnames = ["[::g]"]\n', "host[0].names: '[::g]' is not a host name"),
        ('[[host]]\nnames = ["*.example.*"]\n', "'*.example.*' is not a host name"),
        ('[[host]]\nnames = ["mail*"]\n', "host[0].names: 'mail*' is not a host name"),
        ('[[host]]\nnames = ["*mail.example"]\n', "'*mail.example' is not a host name"),
        ('[[host]]\nnames = ["~"]\n', "host[0].names: '~' alone: a regular expression"),
        ('[[host]]\nnames = ["~ ^a$"]\n', "host[0].names: ~ ^a$: a space in a host name"),
        (
            '[[host]]\nnames = ["~^(www"]\n',
            "host[0].names: ~^(www: not a regular expression (missing )",
        ),
        (
            ONE_HOST.replace('"a.example"', '".a.example"')
            + '[[host]]\nnames = ["b.a.example"]\n[[host.mount]]\npath = "/"\napp = "a:b"\n'
            + '[[host]]\nnames = ["*.A.example"]\n[[host.mount]]\npath = "/"\napp = "a:b"\n',
            "site.toml: host[2].names: '*.A.example' is already a name of site.toml: host[0]",
        ),
        ('[[host]]\nnames = ["[1:2]"]\n', "host[0].names: '[1:2]' is not an IPv6 address"),
        (
            '[[host]]\nnames = ["[fe80::1%eth0]"]\n',
            "host[0].names: '[fe80::1%eth0]': an IPv6 zone identifier cannot be",
        ),
        ("[[host]]\nnames = []\n", "host[0].names: expected a list of host names"),
        ('[[host]]\nnames = ["a"]\ndefault = "yes please"\n', "host[0].default: expected true"),
        ('[[host]]\nnames = ["a"]\n', "site.toml: host[0]: a host needs at least one"),
        (
            ONE_HOST + '[[host.mount]]\npath = "/x"\nap = "a:b"\n',
            "site.toml: host[0].mount[1].ap: unknown key",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "x"\napp = "a:b"\n',
            "host[0].mount[1].path: a mount path starts with /",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/a/../b"\napp = "a:b"\n',
            "host[0].mount[1].path: a mount path has no empty, . or .. segments",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/x"\n',
            "host[0].mount[1]: a mount needs exactly one of app, static, proxy or return",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/x"\napp = "a:b"\nproxy = "http://u"\n',
            "host[0].mount[1]: a mount needs exactly one of app, static, proxy or return",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/"\napp = "a:c"\n',
            "host[0].mount[1]: path '/' is already mounted by site.toml: host[0].mount[0]",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/s"\nstatic = "/no/such/dir"\n',
            "host[0].mount[1].static: directory '/no/such/dir' does not exist",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "ftp://x"\n',
            "host[0].mount[1].proxy: expected an upstream URL",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/x"\napp = "a:b"\ncache_control = "no-store"\n',
            "host[0].mount[1].cache_control: only applies to static mounts",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/s"\nstatic = "STATIC"\ncache_control = "a\\nb"\n',
            "host[0].mount[1].cache_control: a header value cannot contain control",
        ),
        (
            ONE_HOST
            + '[[host]]\nnames = ["A.Example."]\n[[host.mount]]\npath = "/"\napp = "a:b"\n',
            "site.toml: host[1].names: 'A.Example.' is already a name of site.toml: host[0]",
        ),
        (
            ONE_HOST.replace('"a.example"', '"[::1]"')
            + '[[host]]\nnames = ["[0:0:0::1]"]\n[[host.mount]]\npath = "/"\napp = "a:b"\n',
            "site.toml: host[1].names: '[0:0:0::1]' is already a name of site.toml: host[0]",
        ),
        (
            ONE_HOST.replace('names = ["a.example"]', 'names = ["a.example"]\ndefault = true')
            + '[[host]]\nnames = ["b"]\ndefault = true\n[[host.mount]]\npath = "/"\napp = "a:b"\n',
            "site.toml: host[1].default: site.toml: host[0] is already the default host",
        ),
        (
            ONE_HOST
            + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nbalance = "hash $cookie"\n',
            "host[0].mount[1].balance: the hash key '$cookie': unknown variable $cookie",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nbalance = "sticky"\n',
            "host[0].mount[1].balance: expected round_robin, least_conn, random, random two,"
            " ip_hash or hash KEY",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nbalance = "hash x$"\n',
            "host[0].mount[1].balance: the hash key 'x$' has no $variable, so every request",
        ),
        (
            ONE_HOST
            + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nbalance = "hash consistent"\n',
            "balance: the hash key 'consistent' has no $variable",
        ),
        (
            ONE_HOST
            + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            + 'proxy_pass_header = ["X-Powered-By"]\n',
            "host[0].mount[1].proxy_pass_header: 'X-Powered-By' is not hidden by default:"
            " only Date, Server, X-Pad are",
        ),
        (
            ONE_HOST
            + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            + 'proxy_pass_header = ["Server"]\nproxy_hide_header = ["server"]\n',
            "host[0].mount[1].proxy_pass_header: server is also in proxy_hide_header",
        ),
        (
            ONE_HOST
            + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            + 'proxy_hide_header = ["Content-Length"]\n',
            "proxy_hide_header: 'Content-Length' frames or describes the response",
        ),
        (
            ONE_HOST
            + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nproxy_hide_header = ["X Y"]\n',
            "proxy_hide_header: 'X Y' is not a header name",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\napp = "a:b"\nproxy_hide_header = "X-A"\n',
            "proxy_hide_header: only applies to proxy mounts",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            "retry_statuses = [503, 200]\n",
            "host[0].mount[1].retry_statuses: expected status codes from 400 to 599"
            " (e.g. [502, 503, 504]), got 200",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            "retry_statuses = [600]\n",
            "retry_statuses: expected status codes from 400 to 599 (e.g. [502, 503, 504]), got 600",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            "retry_statuses = [399]\n",
            "retry_statuses: expected status codes from 400 to 599 (e.g. [502, 503, 504]), got 399",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            "retry_statuses = [true]\n",
            "retry_statuses: expected status codes from 400 to 599 (e.g. [502, 503, 504]),"
            " got True",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            'retry_statuses = "503"\n',
            "retry_statuses: expected a list of status codes (e.g. [502, 503, 504]), got '503'",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nretry_statuses = [503]\n',
            "host[0].mount[1].retry_statuses: needs more than one upstream",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\nretry_timeout = 5\n',
            "host[0].mount[1].retry_timeout: needs more than one upstream",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            "retry_statuses = [503]\nretry_tries = 1\n",
            "host[0].mount[1].retry_statuses: has no effect with retry_tries = 1",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = ["http://u", "http://v"]\n'
            "retry = false\nretry_tries = 2\n",
            "host[0].mount[1].retry_tries: has no effect with retry = false",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            "retry = false\nretry_non_idempotent = true\n",
            "host[0].mount[1].retry_non_idempotent: has no effect with retry = false",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            'proxy_ignore_headers = ["X-Accel-Redirect"]\n',
            "host[0].mount[1].proxy_ignore_headers: X-Accel-Redirect is read only with"
            " x_accel_redirect = true: leave that off (its default) instead",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            'proxy_ignore_headers = ["Expires"]\n',
            "host[0].mount[1].proxy_ignore_headers: 'Expires' is not acted on from an"
            " upstream's answer: only X-Accel-Buffering and X-Accel-Limit-Rate are",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "https://unix:/run/a.sock"\n',
            "host[0].mount[1].proxy: no TLS over a UNIX socket: write unix:/path/to.sock:/uri"
            " (plain HTTP), got 'https://unix:/run/a.sock'",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://unix:/run/api.sock:/v2"\n',
            "host[0].mount[1].proxy: write a UNIX socket as unix:/path/to.sock:/uri (nginx's"
            " http://unix:/...), got 'http://unix:/run/api.sock:/v2'",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "unix:/run/api.sock:v2"\n',
            "host[0].mount[1].proxy: expected unix:/path/to/socket or"
            " unix:/path/to/socket:/prefix, got 'unix:/run/api.sock:v2'",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/p"\nproxy = "http://u"\n'
            "proxy_intercept_errors = true\n",
            "host[0].mount[1].proxy_intercept_errors: the host has no error_pages to send",
        ),
        ("[server\n", "site.toml: not valid TOML"),
        (SERVER, "nothing to serve"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None,
)
def test_validation_errors_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    """Every validation error is one line naming the file, the key path and the
    problem.
    """
    assert expected in error_of(tmp_path, text)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A configuration file that does not exist is named in the error."""
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        read_config_file(str(tmp_path / "missing.toml"))


def test_command_line_mounts_and_file_hosts_do_not_mix(tmp_path: Path) -> None:
    """--app with [[host]] tables in the file is refused: the mount belongs in a host."""
    message = error_of(tmp_path, ONE_HOST, app="tests.apps:hello")
    assert "--app" in message and "put this mount in one of them" in message


def test_command_line_makes_one_catch_all_host() -> None:
    """--app and --static without a file make one default host with both mounts."""
    config = load_config({"app": "tests.apps:hello", "static": ["/static=/tmp"]})
    [host] = config.hosts
    assert host.default and host.names == ()
    assert [(m.path, m.kind) for m in host.mounts] == [("/", "app"), ("/static", "static")]


def test_an_upstream_marked_down_on_the_command_line_is_refused(tmp_path: Path) -> None:
    """A reload reads the flags again: marked down there, it could never serve."""
    with pytest.raises(ConfigError) as raised:
        load_config({"proxy": ["/api=http://127.0.0.1:9000 down"]})
    assert str(raised.value) == (
        "--proxy '/api=http://127.0.0.1:9000 down': down is for an upstream in a"
        " configuration file, where a reload can bring it back; on the command line it"
        " would never serve"
    )
    site = tmp_path / "site.toml"
    site.write_text('[server]\nproxy = ["/api=http://127.0.0.1:9000 down"]\n')
    [host] = load_config({"config": str(site)}).hosts  # (the file's: a reload edits it)
    assert host.mounts[0].target[0].down


def test_unimportable_app_is_named_by_its_key_path(tmp_path: Path) -> None:
    """An application that does not import is reported at the key that names it
    (host[0].mount[0].app), like every other error in a mount's keys.
    """
    config = load(tmp_path, ONE_HOST.replace("tests.apps:hello", "tests.apps:nothing"))
    with pytest.raises(ConfigError) as raised:
        SiteBuilder(reactor=None, threadpool=None).build(config)
    assert str(raised.value).startswith("site.toml: host[0].mount[0].app: ")
    assert "has no attribute 'nothing'" in str(raised.value)


@pytest.mark.parametrize(
    ("given", "where"),
    [
        ({"app": "tests.apps:nothing"}, "--app"),
        (
            {"vhost": ["a.example/x=app:tests.apps:nothing"]},
            "--vhost 'a.example/x=app:tests.apps:nothing'",
        ),
    ],
)
def test_unimportable_command_line_app_is_named_by_its_flag(
    given: dict[str, Any], where: str
) -> None:
    """From the command line, the flag as typed names the application."""
    with pytest.raises(ConfigError) as raised:
        SiteBuilder(reactor=None, threadpool=None).build(load_config(given))
    assert raised.value.where == where


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "check_config = true",
            "site.toml: server.check_config: unknown key"
            " (--check-config is a command-line option only)",
        ),
        (
            'config = "other.toml"',
            "site.toml: server.config: unknown key (--config is a command-line option only)",
        ),
        (
            'vhost = ["b.example=app:a:b"]',
            "site.toml: server.vhost: unknown key (--vhost is a command-line option only)",
        ),
    ],
)
def test_command_line_only_settings_are_unknown_keys_in_the_file(
    tmp_path: Path, line: str, expected: str
) -> None:
    """--config, --check-config and --vhost have no [server] key: check_config = true
    would make every start print the routing table and exit without serving.
    """
    assert error_of(tmp_path, f"[server]\n{line}\n" + ONE_HOST) == expected


def test_configuration_reference_lists_only_file_keys() -> None:
    """The [server] table of docs/configuration.md lists exactly the settings a file
    may hold: not config, check_config or vhost.
    """
    page = configuration_reference()
    server = page.split("## `[server]`", 1)[1].split("## `[[host]]`", 1)[0]
    listed = {row.split("`")[1] for row in server.splitlines() if row.startswith("| `")}
    assert listed == {setting.name for setting in SETTINGS if setting.file}
    assert not listed & {"config", "check_config", "vhost"}


# -- --vhost beside a configuration file --------------------------------------------------


def test_command_line_vhosts_are_added_to_the_files_hosts(tmp_path: Path) -> None:
    """The hosts of --vhost come after the file's [[host]] tables, and --check-config
    prints them with the others.
    """
    config = load(
        tmp_path,
        ONE_HOST,
        vhost=["b.example=app:tests.apps:hello", "b.example/api=proxy:http://127.0.0.1:9000"],
    )
    assert [(host.names, host.where) for host in config.hosts] == [
        (("a.example",), "site.toml: host[0]"),
        (("b.example",), "--vhost 'b.example=app:tests.apps:hello'"),
    ]
    text = describe_routing(config)
    assert "host a.example\n" in text
    assert text.endswith(
        "host b.example\n"
        "  /api                     proxy  http://127.0.0.1:9000\n"
        "  /                        app    tests.apps:hello\n"
    )


def test_a_name_in_the_file_and_in_a_vhost_is_refused(tmp_path: Path) -> None:
    """A name given both to a [[host]] and to --vhost is the duplicate-name error."""
    message = error_of(tmp_path, ONE_HOST, vhost=["c.example,A.Example.=app:tests.apps:hello"])
    assert message == (
        "--vhost 'c.example,A.Example.=app:tests.apps:hello': 'A.Example.' is already a name"
        " of site.toml: host[0]"
    )


# -- ranges of proxy and static mount options ---------------------------------------------

PROXY = ONE_HOST + '[[host.mount]]\npath = "/api"\nproxy = "http://127.0.0.1:9000"\n'
STATIC = ONE_HOST + '[[host.mount]]\npath = "/s"\nstatic = "STATIC"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PROXY + "keepalive = -1\n", "host[0].mount[1].keepalive: expected a whole number >= 0"),
        (PROXY + "max_fails = -3\n", "host[0].mount[1].max_fails: expected a whole number >= 0"),
        (PROXY + "keepalive = 1.5\n", "host[0].mount[1].keepalive: expected a whole number"),
        (PROXY + "max_conns = -1\n", "host[0].mount[1].max_conns: expected a whole number >= 0"),
        (PROXY + "max_conns = 2.5\n", "host[0].mount[1].max_conns: expected a whole number"),
        (PROXY + "queue = -5\n", "host[0].mount[1].queue: expected a whole number >= 0"),
        (
            PROXY + 'queue_timeout = "-1s"\n',
            "host[0].mount[1].queue_timeout: expected a duration",
        ),
        (
            PROXY + "queue_timeout = -30\n",
            "host[0].mount[1].queue_timeout: expected a duration >= 0, got -30",
        ),
        (
            PROXY + "connect_timeout = -1\n",
            "host[0].mount[1].connect_timeout: expected a duration >= 0, got -1",
        ),
        (
            PROXY + 'response_timeout = "-2s"\n',
            "host[0].mount[1].response_timeout: expected a duration",
        ),
        (
            PROXY + "idle_timeout = -0.5\n",
            "host[0].mount[1].idle_timeout: expected a duration >= 0, got -0.5",
        ),
        (
            PROXY + "keepalive_timeout = -1\n",
            "host[0].mount[1].keepalive_timeout: expected a duration >= 0",
        ),
        (
            PROXY + "fail_timeout = -10\n",
            "host[0].mount[1].fail_timeout: expected a duration >= 0",
        ),
        (
            PROXY + "connect_timeout = nan\n",
            "host[0].mount[1].connect_timeout: expected a finite duration, got nan",
        ),
        (
            PROXY + 'health_check = "/h"\nhealth_interval = 0\n',
            "host[0].mount[1].health_interval: expected more than 0, got 0",
        ),
        (
            PROXY + 'health_check = "/h"\nhealth_interval = "0ms"\n',
            "host[0].mount[1].health_interval: expected more than 0, got '0ms'",
        ),
        (
            PROXY + 'health_check = "/h"\nhealth_interval = -5\n',
            "host[0].mount[1].health_interval: expected more than 0, got -5",
        ),
        (
            # Without a health_check the interval is unused, but 0 is still no interval.
            PROXY + "health_interval = 0\n",
            "host[0].mount[1].health_interval: expected more than 0",
        ),
        (
            PROXY.replace('9000"', '9000 weight=0"'),
            "host[0].mount[1].proxy: expected 'URL', then weight=N (N >= 1), backup or down,"
            " each once",
        ),
        (
            PROXY.replace('9000"', '9000 weight=-2"'),
            "host[0].mount[1].proxy: expected 'URL', then weight=N (N >= 1), backup or down,"
            " each once",
        ),
        (
            PROXY.replace('9000"', '9000 backup weight=2 backup"'),
            "host[0].mount[1].proxy: expected 'URL', then weight=N (N >= 1), backup or down,"
            " each once,"
            " got 'http://127.0.0.1:9000 backup weight=2 backup'",
        ),
        (
            PROXY.replace('9000"', '9000 weight=2 weight=3"'),
            "host[0].mount[1].proxy: expected 'URL', then weight=N (N >= 1), backup or down,"
            " each once",
        ),
        (
            PROXY.replace('9000"', '9000 down weight=2 down"'),
            "host[0].mount[1].proxy: expected 'URL', then weight=N (N >= 1), backup or down,"
            " each once, got 'http://127.0.0.1:9000 down weight=2 down'",
        ),
        (
            PROXY.replace('9000"', '9000 spare"'),
            "host[0].mount[1].proxy: expected 'URL', then weight=N (N >= 1), backup or down,"
            " each once",
        ),
        (
            PROXY.replace('9000"', '9000 backup"'),
            "host[0].mount[1].proxy: every upstream is a backup",
        ),
        (
            PROXY.replace('"http://127.0.0.1:9000"', '["http://a", "http://b backup"]')
            + 'balance = "hash $request_uri consistent"\n',
            "host[0].mount[1].balance: hash takes no backup upstreams",
        ),
        (
            PROXY.replace('"http://127.0.0.1:9000"', '["http://a", "http://b backup"]')
            + 'balance = "ip_hash"\n',
            "host[0].mount[1].balance: ip_hash takes no backup upstreams",
        ),
        (
            PROXY.replace('"http://127.0.0.1:9000"', '["http://a", "http://b backup"]')
            + 'balance = "random two least_conn"\n',
            "host[0].mount[1].balance: random takes no backup upstreams: random draws from",
        ),
        (STATIC + "max_ranges = -1\n", "host[0].mount[1].max_ranges: expected a whole number"),
        (STATIC + "memory_cache = -1\n", "host[0].mount[1].memory_cache: expected a size >= 0"),
        ("[server]\ngraceful_timeout = -1\n" + ONE_HOST, "server.graceful_timeout: expected a"),
        ("[server]\nthreads = -1\n" + ONE_HOST, "server.threads: expected a whole number >= 0"),
        (
            "[server]\nheader_timeout = 0\n" + ONE_HOST,
            "server.header_timeout: expected more than 0",
        ),
        ("[server]\nmax_header_count = 0\n" + ONE_HOST, "server.max_header_count: expected more"),
    ],
    ids=lambda value: None if "\n" in value else value.split(":")[0],
)
def test_out_of_range_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Negative counts, timeouts and weights, and a health-check interval that is
    not more than 0, are one-line errors naming the file and the key path.
    """
    message = error_of(tmp_path, text)
    assert message.startswith("site.toml: ")
    assert expected in message


def test_zero_keeps_its_documented_meaning(tmp_path: Path) -> None:
    """0 is valid where docs/proxy.md gives it a meaning: a timeout of 0 is no
    timeout, keepalive_timeout = 0 closes idle connections at once, keepalive = 0
    keeps none, max_fails = 0 never takes an upstream out, max_conns = 0 is no limit,
    queue = 0 lets no request wait.
    """
    zeros = (
        "connect_timeout",
        "response_timeout",
        "idle_timeout",
        "keepalive",
        "keepalive_timeout",
        "max_fails",
        "fail_timeout",
        "max_conns",
        "queue",
        "queue_timeout",
    )
    text = PROXY + "".join(f"{name} = 0\n" for name in zeros)
    text += 'health_check = "/h"\nhealth_interval = "250ms"\n'
    [host] = load(tmp_path, text).hosts
    options = host.mounts[1].options
    assert {name: options[name] for name in zeros} == dict.fromkeys(zeros, 0)
    assert options["health_interval"] == 0.25


def test_connection_limit_defaults_and_values(tmp_path: Path) -> None:
    """max_conns is off by default (queue 100, queue_timeout 30 s); given values are
    parsed with their kinds.
    """
    [host] = load(tmp_path, PROXY).hosts
    options = host.mounts[1].options
    assert (options["max_conns"], options["queue"], options["queue_timeout"]) == (0, 100, 30.0)
    text = PROXY + 'max_conns = 4\nqueue = 10\nqueue_timeout = "1500ms"\n'
    [host] = load(tmp_path, text).hosts
    options = host.mounts[1].options
    assert (options["max_conns"], options["queue"], options["queue_timeout"]) == (4, 10, 1.5)


# -- command-line mounts are named as typed -------------------------------------------------


def test_command_line_mounts_are_named_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --static or --proxy mount is named in errors by the text given on the
    command line, not by its parsed value (an absolute path, Upstream objects).
    """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "files").mkdir()
    config = load_config(
        {
            "app": "tests.apps:hello",
            "static": ["/s=./files"],
            "proxy": ["/api=http://127.0.0.1:9000 weight=2", "/b=http://[::1]:81"],
        }
    )
    assert [mount.where for mount in config.hosts[0].mounts] == [
        "--app",
        "--static '/s=./files'",
        "--proxy '/api=http://127.0.0.1:9000 weight=2'",
        "--proxy '/b=http://[::1]:81'",
    ]
    # The parsed values themselves are unchanged.
    assert config.hosts[0].mounts[1].target == str(tmp_path / "files")
    assert config.hosts[0].mounts[2].target == (Upstream("http://127.0.0.1:9000", 2),)


def test_duplicate_command_line_mounts_are_named_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two mounts at one path: the error quotes both as they were typed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "files").mkdir()
    with pytest.raises(ConfigError) as raised:
        load_config({"static": ["/s=./files"], "proxy": ["/s=http://127.0.0.1:9000 weight=2"]})
    assert str(raised.value) == (
        "--proxy '/s=http://127.0.0.1:9000 weight=2': path '/s' is already mounted by"
        " --static '/s=./files'"
    )


def test_server_table_mounts_are_named_by_file_key_and_text(tmp_path: Path) -> None:
    """Mounts from [server] static and proxy are named by the file, key and value."""
    text = '[server]\nproxy = ["/api=http://127.0.0.1:9000"]\nstatic = [["/s", "STATIC"]]\n'
    [host] = load(tmp_path, text).hosts
    assert [mount.where for mount in host.mounts] == [
        f"site.toml: server.static '/s={tmp_path / 'static'}'",
        "site.toml: server.proxy '/api=http://127.0.0.1:9000'",
    ]


def test_trusted_proxies_accept_unix_sockets(tmp_path: Path) -> None:
    """trusted_proxies takes unix: (or unix) beside CIDR networks, normalised to unix:."""
    text = '[server]\ntrusted_proxies = ["10.0.0.0/8", "unix", "UNIX:"]\n' + ONE_HOST
    assert load(tmp_path, text).trusted_proxies == ("10.0.0.0/8", "unix:", "unix:")
    message = error_of(tmp_path, '[server]\ntrusted_proxies = ["unix:/run/x"]\n' + ONE_HOST)
    assert "site.toml: server.trusted_proxies: 'unix:/run/x' is not an IP address" in message


def test_request_buffering_is_a_switch_off_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, ONE_HOST).request_buffering is False
    assert load(tmp_path, "[server]\nrequest_buffering = true\n" + ONE_HOST).request_buffering
    message = error_of(tmp_path, '[server]\nrequest_buffering = "sometimes"\n' + ONE_HOST)
    assert "site.toml: server.request_buffering: expected true or false" in message


def test_server_table_paths_are_read_from_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[server] static and access_log paths, like mount paths, are relative to the
    file, not to where the server starts; "-" and "off" are not paths.
    """
    site = tmp_path / "site"
    (site / "assets").mkdir(parents=True)
    config = site / "site.toml"
    config.write_text(
        '[server]\nstatic = ["/s=assets", ["/t", "./assets"]]\naccess_log = "logs/access.log"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config({"config": str(config)})
    assert [mount.target for mount in loaded.hosts[0].mounts] == [str(site / "assets")] * 2
    assert loaded.access_log == str(site / "logs" / "access.log")
    for special in ("-", "off"):
        config.write_text(f'[server]\nstatic = ["/s=assets"]\naccess_log = "{special}"\n')
        assert load_config({"config": str(config)}).access_log == special


@pytest.mark.parametrize(
    ("listen", "files"),
    [
        (
            "ssl:443:privateKey=tls/key.pem:certKey=tls/cert.pem",
            {"privateKey": "SITE/tls/key.pem", "certKey": "SITE/tls/cert.pem"},
        ),
        (
            "ssl:443:privateKey=/etc/key.pem:extraCertChain=chain.pem:dhParameters=dh.pem",
            {
                "privateKey": "/etc/key.pem",
                "extraCertChain": "SITE/chain.pem",
                "dhParameters": "SITE/dh.pem",
            },
        ),
        ("unix:run/app.sock:mode=660", {0: "SITE/run/app.sock", "mode": "660"}),
        ("unix:address=app.sock:lockfile=1", {"address": "SITE/app.sock", "lockfile": "1"}),
        ("unix:/run/app.sock", {0: "/run/app.sock"}),
        (r"ssl:443:privateKey=a\:b.pem", {"privateKey": "SITE/a:b.pem"}),
        (
            r"ssl:443:privateKey=k\\:certKey=c.pem",
            {"privateKey": "SITE/k\\", "certKey": "SITE/c.pem"},
        ),
        ("ssl:443:privateKey=~/k.pem", {"privateKey": "HOME/k.pem"}),
        ("tcp:8080:interface=127.0.0.1", {0: "8080", "interface": "127.0.0.1"}),
        ("systemd:domain=INET:index=0", {"domain": "INET", "index": "0"}),
    ],
)
def test_files_named_by_listen_endpoints_are_read_from_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str, files: dict[Any, str]
) -> None:
    r"""As nginx reads a relative ssl_certificate from its configuration directory:
    the key and certificate files and a UNIX socket path of the file's listen
    endpoints are relative to the file; other parameters are left as written.
    Twisted's own parser reads the result back, so a directory with the characters
    endpoint strings treat specially (``:``, ``=``, ``\``) keeps its name.
    """
    from twisted.internet.endpoints import _parse

    site = tmp_path / "si:t=e\\x"
    (site / "run").mkdir(parents=True)  # (a socket's directory is to exist)
    config = site / "site.toml"
    config.write_text(f"[server]\nlisten = ['{listen}']\n" + ONE_HOST)  # a TOML literal
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/home/someone")
    [loaded] = load_config({"config": str(config)}).listen
    positional, named = _parse(loaded)
    parsed = {**dict(enumerate(positional[1:])), **named}
    if listen.startswith("ssl:443:"):
        files = {0: "443", **files}
    expected = {
        key: value.replace("SITE", str(site)).replace("HOME", "/home/someone")
        for key, value in files.items()
    }
    assert parsed == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[1]", "expected a table of header names and values"),
        ('["ab"]', "expected a table of header names and values"),
        ('[["X-A"]]', "expected a table of header names and values"),
        ('"X-A: 1"', "expected a table of header names and values"),
    ],
)
def test_mount_headers_must_be_a_table(tmp_path: Path, value: str, problem: str) -> None:
    """Headers = { Name = "value" }: an array is refused with the key path, not taken
    apart character by character ("ab" was the header a: b) or left to crash.
    """
    text = (
        '[[host]]\nnames = ["a.example"]\n[[host.mount]]\npath = "/s"\nstatic = "STATIC"\n'
        f"headers = {value}\n"
    )
    message = error_of(tmp_path, text)
    assert "site.toml: host[0].mount[0].headers" in message and problem in message


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """TOML is UTF-8; a Latin-1 file is a configuration error naming the file."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\napp = "tests.apps:hello"\n# caf\xe9\n')
    with pytest.raises(ConfigError) as raised:
        read_config_file(str(path))
    message = str(raised.value)
    assert "latin1.toml" in message and "not UTF-8" in message and "0xe9" in message
    assert "\n" not in message


def test_an_empty_config_path_is_named_as_the_flag() -> None:
    """--config= names the flag rather than printing an empty file name."""
    with pytest.raises(ConfigError, match=r"^--config: expected the path of a TOML file"):
        read_config_file("")


def test_a_mount_path_in_any_script_matches_the_url_browsers_send(tmp_path: Path) -> None:
    """A mount path is text: ``/日本`` is matched as its UTF-8 bytes, the form a browser
    percent-encodes (``/%E6%97%A5%E6%9C%AC``), and SCRIPT_NAME carries those bytes as
    PEP 3333 says (latin-1 str). It was encoded as latin-1: ``/café`` never matched and
    ``/日本`` stopped the server with a traceback.
    """
    import json

    from tests.test_static import request, router_for

    text = (
        '[[host]]\nnames = ["files.example"]\n'
        '[[host.mount]]\npath = "/日本"\napp = "tests.apps:environ"\n'
        '[[host.mount]]\npath = "/café"\napp = "tests.apps:environ"\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    )
    router = router_for(tmp_path, text)
    for path, encoded in (("/日本", b"/%E6%97%A5%E6%9C%AC"), ("/café", b"/caf%C3%A9")):
        response = request(router, encoded + b"/x")
        assert response.status == 200
        seen = json.loads(response.body)
        assert seen["SCRIPT_NAME"] == path.encode().decode("latin-1")
        assert seen["PATH_INFO"] == "/x"


def test_a_mount_path_with_a_character_newer_than_python_is_taken(tmp_path: Path) -> None:
    """U+1FAE8 (an emoji of Unicode 15) is unassigned in Python 3.11's tables: not
    refused as invisible.
    """
    text = ONE_HOST + '[[host.mount]]\npath = "/\U0001fae8"\napp = "tests.apps:hello"\n'
    [host] = load(tmp_path, text).hosts
    assert "/\U0001fae8" in [mount.path for mount in host.mounts]


@pytest.mark.parametrize("path", ["/a\\u007fb", "/a\\u0085b", "/a\\u200bb", "/a\\u00a0b"])
def test_a_mount_path_with_an_invisible_character_is_refused(tmp_path: Path, path: str) -> None:
    """Control characters (C0, DEL, C1) and invisible format characters cannot be typed
    in a URL as they look: refused with the same line as spaces; ``path`` is written
    with TOML's escapes.
    """
    text = ONE_HOST + f'[[host.mount]]\npath = "{path}"\napp = "a:b"\n'
    assert "a mount path is a plain path" in error_of(tmp_path, text)


def test_the_routing_listing_keeps_its_columns_for_any_script(tmp_path: Path) -> None:
    """Mount paths with wide characters (two columns) or combining marks (none) are
    padded to the same column as ASCII ones.
    """
    text = (
        '[[host]]\nnames = ["a.example"]\n'
        '[[host.mount]]\npath = "/日本"\napp = "tests.apps:hello"\n'
        '[[host.mount]]\npath = "/cafe\u0301"\napp = "tests.apps:hello"\n'
        '[[host.mount]]\npath = "/plain"\napp = "tests.apps:hello"\n'
    )
    listing = describe_routing(load(tmp_path, text)).splitlines()
    lines = [line for line in listing if " app " in line]
    assert len(lines) == 3

    def column_of_kind(line: str) -> int:
        before = line[: line.index(" app ")]
        wide = sum(1 for char in before if unicodedata.east_asian_width(char) in "WF")
        marks = sum(1 for char in before if unicodedata.combining(char))
        return len(before) + wide - marks

    assert len({column_of_kind(line) for line in lines}) == 1, lines


NAME_FORMS = r"""
[[host]]
names = [".example.org"]
[[host.mount]]
path = "/"
return = "200 short form"

[[host]]
names = ["mail.*"]
[[host.mount]]
path = "/"
return = "200 wildcard at the end"

[[host]]
names = ['~^(?<user>[a-z]+)\.users\.test$', '~\.test$']
[[host.mount]]
path = "/"
return = "200 regular expression"

[[host]]
names = ["default.test"]
default = true
[[host.mount]]
path = "/"
return = "200 default"
"""


@pytest.mark.parametrize(
    ("host", "body"),
    [
        (b"example.org", b"short form"),
        (b"www.Example.org", b"short form"),
        (b"mail.example.net:8080", b"wildcard at the end"),
        (b"Ann.users.test", b"regular expression"),
        (b"other.test", b"regular expression"),
        (b"default.test", b"default"),  # an exact name before a regular expression
        (b"other.example", b"default"),
    ],
)
def test_nginxs_other_forms_of_server_name_route_requests(
    tmp_path: Path, host: bytes, body: bytes
) -> None:
    """Nginx's .example.org, mail.* and ~REGEX (PCRE's named groups included),
    as --check-config shows them.
    """
    config = load(tmp_path, NAME_FORMS)
    router = Router(SiteBuilder(reactor=Clock(), threadpool=None).build(config))
    client = connect(router)
    client.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    [response] = parse_responses(client.take())
    assert (response.status, response.body) == (200, body)
    assert "host ~^(?<user>[a-z]+)\\.users\\.test$, ~\\.test$" in describe_routing(config)


def test_a_host_pattern_that_backtracks_is_stopped_and_named_in_the_log(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        NAME_FORMS.replace(r"'~\.test$'", "'~^(a|aa)+$'"),
    )
    router = Router(SiteBuilder(reactor=Clock(), threadpool=None).build(config))
    client = connect(router)
    name = b"a" * 60 + b"b"
    with capture_log_events() as events:
        client.send(b"GET / HTTP/1.1\r\nHost: " + name + b"\r\n\r\n")
    [response] = parse_responses(client.take())
    assert (response.status, response.body) == (200, b"default")
    assert [formatEvent(event) for event in events] == [
        "Host name ~^(a|aa)+$ took over 0.01s on the name " + "a" * 60 + "b (61 bytes):"
        " no regular-expression host name matches it"
    ]


def test_a_request_searches_the_host_patterns_once(tmp_path: Path, monkeypatch: Any) -> None:
    """Routing, and the host's name the route carries, come from one lookup: each
    table's time limit is spent at most once per request.
    """
    searched: list[str] = []

    class Counting:
        def __init__(self, compiled: Any) -> None:
            self.compiled = compiled

        def search(self, name: str, timeout: float) -> Any:
            searched.append(name)
            return self.compiled.search(name, timeout=timeout)

    monkeypatch.setattr(
        site_module, "compile_host_pattern", lambda pattern: Counting(compile_host_pattern(pattern))
    )
    config = load(tmp_path, NAME_FORMS)
    client = connect(Router(SiteBuilder(reactor=Clock(), threadpool=None).build(config)))
    client.send(b"GET / HTTP/1.1\r\nHost: fresh.example\r\n\r\n")
    [response] = parse_responses(client.take())
    assert response.body == b"default"
    assert searched == ["fresh.example", "fresh.example"]  # (two patterns, once each)
