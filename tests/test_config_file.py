"""The configuration file: the documented example, the command line over the file, and
every validation error naming the file, the key path and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twistwsgi.cli import load_config
from twistwsgi.config import ConfigError, ServerConfig, Upstream, read_config_file
from twistwsgi.site import SiteBuilder, describe_routing

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


SERVER = '[server]\nlisten = ["tcp:8080"]\n'
ONE_HOST = '[[host]]\nnames = ["a.example"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[severs]\n", "site.toml: severs: unknown key"),
        (SERVER + "threds = 4\n" + ONE_HOST, "site.toml: server.threds: unknown setting"),
        ("[server]\nthreads = 'many'\n" + ONE_HOST, "site.toml: server.threads: expected a whole"),
        ("[server]\nlisten = 8080\n" + ONE_HOST, "site.toml: server.listen: expected one endpoint"),
        ("[server]\nmax_body = '1q'\n" + ONE_HOST, "site.toml: server.max_body: expected a size"),
        ("server = 3\n", "site.toml: server: expected a table"),
        ("host = 3\n", "site.toml: host: expected an array of tables"),
        ('[[host]]\nname = ["a"]\n', "site.toml: host[0].name: unknown key"),
        ("[[host]]\n[[host.mount]]\npath = '/'\napp = 'a:b'\n", "host[0].names: missing"),
        ('[[host]]\nnames = "a b"\n', "host[0].names: 'a b' is not a host name"),
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
            "host[0].mount[1]: a mount needs exactly one of app, static or proxy",
        ),
        (
            ONE_HOST + '[[host.mount]]\npath = "/x"\napp = "a:b"\nproxy = "http://u"\n',
            "host[0].mount[1]: a mount needs exactly one of app, static or proxy",
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
            ONE_HOST.replace('names = ["a.example"]', 'names = ["a.example"]\ndefault = true')
            + '[[host]]\nnames = ["b"]\ndefault = true\n[[host.mount]]\npath = "/"\napp = "a:b"\n',
            "site.toml: host[1].default: site.toml: host[0] is already the default host",
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


def test_unimportable_app_is_named_by_its_mount(tmp_path: Path) -> None:
    """An application that does not import is reported with its mount's key path."""
    config = load(tmp_path, ONE_HOST.replace("tests.apps:hello", "tests.apps:nothing"))
    with pytest.raises(ConfigError) as raised:
        SiteBuilder(reactor=None, threadpool=None).build(config)
    assert str(raised.value).startswith("site.toml: host[0].mount[0]: ")
    assert "has no attribute 'nothing'" in str(raised.value)
