"""Every bad configuration ends in the one-line error and exit status 2.

First the holes the fuzzing below found, each as the value a user would write; then
the fuzzing itself: the configuration files shipped as examples (deploy/, the demo
site, each ```toml block of docs/) changed (a key deleted, misspelt or added, a value
of another type or range, a host, mount or listener repeated, a file that is not what
the key needs, an unknown table), loaded, and built as the start-up builds them on a
memory reactor; and random command lines through the option parser, built so too.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import math
import os
import re
import sys
import threading
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock

from tests.test_config import flag_source
from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.config import (
    BOOL,
    HOST_KEYS,
    MOUNT_KEYS,
    MOUNT_KINDS,
    SETTINGS,
    ConfigError,
    ServerConfig,
    Setting,
    build_config,
    escape,
)
from twistwsgi.service import ServerService, make_service


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


@pytest.mark.parametrize(
    ("mount_line", "message"),
    [
        # As an upstream's host (its port 0, user and controls were refused already).
        (
            'auth_request = "http://auth..internal:4180/check"',
            "site.toml: host[0].mount[0].auth_request: 'auth..internal' is not a host name,"
            " in 'http://auth..internal:4180/check'",
        ),
        # The error named the headers table, not which of its fields was wrong.
        (
            'headers = { X-Frame-Options = "DENY", X-Count = 3 }',
            "site.toml: host[0].mount[0].headers: the value of 'X-Count' is not text: 3",
        ),
    ],
)
def test_a_mount_setting_refused_says_what_is_wrong(
    tmp_path: Path, mount_line: str, message: str
) -> None:
    """A mount's auth_request host that is no host name, a header value that is not text."""
    path = tmp_path / "site.toml"
    path.write_text(
        '[[host]]\nnames = ["a.test"]\n[[host.mount]]\npath = "/"\nreturn = "200 ok"\n'
        + mount_line
        + "\n"
    )
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(path)})
    assert str(raised.value) == message


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


# The fuzzing. Each example is a configuration file shipped as an example, made whole
# (a fragment of docs/ becomes a host's mount) and pointed at files made here.

ROOT = Path(__file__).resolve().parent.parent

#: Keys whose value names a file or directory, by the table they are in.
_SERVER_FILES = ("access_log", "tls_client_certificate")
_HOST_FILES = ("access_log", "error_pages", "tls_certificate", "tls_key", "tls_client_certificate")
_MOUNT_FILES = (
    "access_log",
    "static",
    "auth_basic_user_file",
    "tls_ca",
    "upstream_certificate",
    "upstream_key",
)
_SETTING_NAMES = sorted(
    {setting.name for table in (SETTINGS, HOST_KEYS, MOUNT_KEYS) for setting in table}
)


def example_sources() -> list[tuple[str, str]]:
    """Every configuration shipped as an example: where it is, and its TOML text."""
    sources = [
        (name, (ROOT / name).read_text())
        for name in ("deploy/site.example.toml", "twistwsgi/demo/site.toml")
    ]
    for page in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"```toml\n(.*?)```", page.read_text(), re.S)
        sources += [(f"docs/{page.name} block {n}", text) for n, text in enumerate(blocks)]
    return sources


def whole(document: dict[str, Any]) -> dict[str, Any]:
    """A documentation fragment made a configuration that stands alone.

    The keys of one mount become a host's mount; a host without names or mounts gets
    them; a [server] alone gets a host, unless it has its own mounts (--app's).
    """
    document = copy.deepcopy(document)
    if not {"server", "host"} & set(document):
        mount = {"path": "/", **document}
        if not any(kind in mount for kind in MOUNT_KINDS):
            mount["proxy"] = "http://127.0.0.1:9000"
        document = {"host": [{"names": ["fragment.test"], "mount": [mount]}]}
    if isinstance(document.get("host"), dict):
        document["host"] = [document["host"]]  # ([[host.mount]] with no [[host]] above)
    server = document.get("server", {})
    if "host" not in document and not any(kind in server for kind in MOUNT_KINDS):
        document["host"] = [{}]
    for number, host in enumerate(document.get("host", [])):
        host.setdefault("names", [f"host{number}.test"])
        host.setdefault("mount", [{"path": "/", "return": "200 ok"}])
    return document


class Workspace:
    """The files the examples are pointed at, in one directory, and the bad ones.

    Attributes:
        root: the directory (the configuration file is written here).
        cwd: the working directory of command lines, where they make relative files.
        key: a private key, PEM.
        certificate: its self-signed certificate, PEM (and the CA of client certificates).
        bad_files: paths that are not what a file key needs: missing, a directory, empty,
            not PEM, half a PEM, a dangling link, a link to itself, a device, a NUL in
            the name, a path with a newline, a FIFO.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key, self.certificate = write_self_signed_certificate(
            root, names=("example.com", "*.example.org", "localhost")
        )
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        bad = root / "bad"
        bad.mkdir()
        (bad / "empty").write_bytes(b"")
        (bad / "garbage").write_bytes(b"\x00\xff not PEM\n")
        (bad / "half.pem").write_bytes(self.certificate.read_bytes()[:200])
        (bad / "directory").mkdir()
        (bad / "dangling").symlink_to(bad / "nowhere")
        (bad / "loop").symlink_to(bad / "loop")
        os.mkfifo(bad / "fifo")
        self.fifo = str(bad / "fifo")
        self.bad_files = [
            *(str(bad / name) for name in ("empty", "garbage", "half.pem", "directory")),
            *(str(bad / name) for name in ("dangling", "loop", "missing", "directory/")),
            "/dev/null",
            str(bad / "nul\x00name"),
            str(bad / "new\nline"),
            self.fifo,
            str(self.key),
            str(self.certificate),
        ]

    def local(self, path: str) -> Path:
        """Where the example's ``path`` (/srv/site) is made in the workspace."""
        return self.root / "site" / path.lstrip("/")

    def point_at_files(self, document: dict[str, Any]) -> dict[str, Any]:
        """The example with its directories, files and applications made here."""
        tables = [document.get("server", {})]
        for host in document.get("host", []):
            tables += [host, *host.get("mount", [])]
        for table in tables:
            for key, value in list(table.items()):
                table[key] = self._local_value(key, value)
        return document

    def _local_value(self, key: str, value: Any) -> Any:
        if key == "static" and isinstance(value, str):
            # A directory with captures ($1) exists up to the first capture.
            fixed = value.split("$")[0]
            whole_name = "$" not in value or fixed.endswith("/")
            directory = self.local(fixed) if whole_name else self.local(fixed).parent
            directory.mkdir(parents=True, exist_ok=True)
            return str(self.local(value))
        if key in ("tls_certificate", "tls_client_certificate", "tls_ca", "upstream_certificate"):
            return str(self.certificate)
        if key in ("tls_key", "upstream_key"):
            return str(self.key)
        if key == "app":
            return "twistwsgi.demo.app:application"
        if key in ("access_log", "auth_basic_user_file") and value not in ("-", "off"):
            path = self.local(value)
            path.parent.mkdir(parents=True, exist_ok=True)
            if key == "auth_basic_user_file":
                path.write_text("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
            return str(path)
        if key == "error_pages":
            pages = {}
            for status, page in value.items():
                pages[status] = self.local(page)
                pages[status].parent.mkdir(parents=True, exist_ok=True)
                pages[status].write_text("<h1>Sorry</h1>\n")
            return {status: str(path) for status, path in pages.items()}
        if key == "listen":
            files = f"privateKey={self.key}:certKey={self.certificate}"
            return [
                re.sub(r"privateKey=[^:]*:certKey=[^:]*", files, item)
                for item in ([value] if isinstance(value, str) else value)
            ]
        return value


def toml_text(value: Any) -> str:
    """``value`` written as TOML: a document as one inline table per top-level key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML's, with \u007f (which JSON leaves bare) added.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    items = (f"{toml_text(str(key))} = {toml_text(item)}" for key, item in value.items())
    return "{" + ", ".join(items) + "}"


def toml_document(document: dict[str, Any]) -> str:
    return "".join(
        f"{toml_text(str(key))} = {toml_text(value)}\n" for key, value in document.items()
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def examples(workspace: Workspace) -> list[tuple[str, dict[str, Any]]]:
    """The shipped examples, whole and pointed at the workspace's files; each loads."""
    made = []
    for name, text in example_sources():
        document = workspace.point_at_files(whole(tomllib.loads(text)))
        path = workspace.root / "site.toml"
        path.write_text(toml_document(document))
        cli.load_config({"config": str(path)})  # (a ConfigError names the example)
        made.append((name, document))
    return made


def test_every_shipped_example_is_a_starting_point(
    examples: list[tuple[str, dict[str, Any]]],
) -> None:
    """The fuzzing starts from every example there is, each of which loads."""
    names = [name for name, _ in examples]
    assert "deploy/site.example.toml" in names and "twistwsgi/demo/site.toml" in names
    assert len(names) >= 40


#: Values of every type and of the ranges settings take, for any key.
ODD_VALUES: list[Any] = [
    *("", " ", "x", "é", "\x00", "a\nb", "\u200b", "-1", "0", "99999999999999999999"),
    *(0, -1, 1, 2**63, 10**30, 1.5, -0.5, 0.0, math.inf, math.nan, 1e308, True, False),
    *([], [""], [1], ["x", "x"], {}, {"x": 1}, {"": ""}, [{}], [{"path": "/"}]),
    *("$foo", "$1", "${", "(", "~ (", "~ ^/(x)$", "= /x", "^~ /x", "/", "/x/../y", "//"),
    *("http://", "http://[::1", "http://127.0.0.1:99999", "https://h:0", "unix:", "tcp:"),
    *("tcp:99999", "ssl:443", "haproxy:tcp:1", "unix:/nonexistent/s.sock", "tcp:1:backlog=-1"),
    *("10r/s", "0r/s", "1r/x", "on", "off", "yes", "200", "200 ok", "999 x", "301", "444"),
    *("1k", "1g", "999999999g", "1ms", "0s", "5m", "1.5h", "nan", "inf", "-", "%", "\\"),
    *("127.0.0.1", "::1/129", "10.0.0.0/33", "all", "a=b", "x:y", "x:y(", "$request_uri"),
    *("tc\np:1", "ssl:0:privateKey=/k\x00.pem", {"X-A": 1}, {"X-A": ["1"]}, {"404": 1}),
    "x" * 300,
]

#: What is put in a string (a key's name or a value), and where.
INSERTED = [*"$()[]{}:=/\\ ~^*?#%\x00\n\t\"'.,;@!", "$1", "$uri", "${x}", "..", "é"]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The paths of every key and list item in ``value``, deepest last."""
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        yield (*prefix, key)
        yield from paths(item, (*prefix, key))


def tables(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document and every table in it, where keys may be added."""
    found = [document]
    for path in paths(document):
        value = at(document, path)
        if isinstance(value, dict):
            found.append(value)
    return found


def at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def mutate(
    document: dict[str, Any], data: st.DataObject, workspace: Workspace
) -> tuple[str, str | None]:
    """Change ``document`` in place once; say how, and the key it is about (if one)."""
    all_paths = list(paths(document))
    kind = data.draw(
        st.sampled_from(["delete", "rename", "value", "edit", "repeat", "add", "file", "unknown"])
        if all_paths
        else st.sampled_from(["add", "unknown"])
    )
    if kind == "unknown":
        name = data.draw(st.sampled_from(["servers", "hosts", "mount", "Server", "x"]))
        document[name] = {"threads": 1}
        return f"unknown table {name}", name
    if kind == "add":
        table = data.draw(st.sampled_from(tables(document)))
        name = data.draw(st.sampled_from(_SETTING_NAMES))
        table[name] = copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES)))
        return f"added {name} = {table[name]!r}", name
    if kind == "file":
        return mutate_file(document, data, workspace)
    path = data.draw(st.sampled_from(all_paths))
    parent, last = at(document, path[:-1]), path[-1]
    named = next((key for key in reversed(path) if isinstance(key, str)), None)
    if kind == "delete":
        del parent[last]
        return f"deleted {path}", None
    if kind == "rename" and isinstance(last, str):
        where = data.draw(st.integers(0, len(last)))
        letter = data.draw(st.sampled_from([*"abcdefghijklmnopqrstuvwxyz_-.", "", "É"]))
        new = data.draw(
            st.sampled_from(
                [last[:where] + letter + last[where:], last[:where] + letter + last[where + 1 :]]
            )
        )
        parent[new] = parent.pop(last)
        return f"renamed {path} to {new!r}", new
    if kind == "edit" and isinstance(parent[last], str):
        text = parent[last]
        where = data.draw(st.integers(0, len(text)))
        put = data.draw(st.sampled_from(INSERTED))
        parent[last] = data.draw(
            st.sampled_from([text[:where] + put + text[where:], text[:where], text.upper()])
        )
        return f"edited {path} to {parent[last]!r}", named
    if kind == "repeat" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))  # a host, a mount, a listen, a name
        return f"repeated {path}", named
    parent[last] = copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES)))
    return f"set {path} to {parent[last]!r}", named


def mutate_file(
    document: dict[str, Any], data: st.DataObject, workspace: Workspace
) -> tuple[str, str | None]:
    """Name a bad file where a file is expected (a listener's key and certificate too)."""
    hosts = document.get("host")
    hosts = [host for host in hosts if isinstance(host, dict)] if isinstance(hosts, list) else []
    mounts = [
        mount
        for host in hosts
        if isinstance(host.get("mount"), list)
        for mount in host["mount"]
        if isinstance(mount, dict)
    ]
    where = data.draw(st.sampled_from(["server", "listen", "host", "mount"]))
    server = document.setdefault("server", {})
    if not isinstance(server, dict):
        return "no [server] table", None
    # (A FIFO waits for a writer, for ever: its refusal has its own test, which
    # gives it one.)
    bad = data.draw(
        st.sampled_from([path for path in workspace.bad_files if path != workspace.fifo])
    )
    key: str
    if where == "listen":
        key = data.draw(
            st.sampled_from(["privateKey", "certKey", "extraCertChain", "dhParameters"])
        )
        files = {"privateKey": str(workspace.key), "certKey": str(workspace.certificate), key: bad}
        server["listen"] = [
            "tcp:0",
            "ssl:0:" + ":".join(f"{name}={escape(path)}" for name, path in files.items()),
        ]
        return f"listen {key}={bad!r}", "listen"
    if where == "server" or not (hosts and mounts):
        key = data.draw(st.sampled_from(_SERVER_FILES))
        table = server
    elif where == "host":
        key = data.draw(st.sampled_from(_HOST_FILES))
        table = data.draw(st.sampled_from(hosts))
    else:
        key = data.draw(st.sampled_from(_MOUNT_FILES))
        table = data.draw(st.sampled_from(mounts))
    table[key] = {"404": bad} if key == "error_pages" else bad
    # The keys it goes with, so that the file itself is what is checked.
    if key in ("tls_ca", "upstream_certificate", "upstream_key"):
        for kind in MOUNT_KINDS:
            table.pop(kind, None)
        table["proxy"] = "https://127.0.0.1:9443"
        table.setdefault("upstream_certificate", str(workspace.certificate))
        table.setdefault("upstream_key", str(workspace.key))
    elif key == "auth_basic_user_file":
        table["auth_basic"] = "staff"
    elif key == "tls_key":
        table["tls_certificate"] = str(workspace.certificate)
    if key in ("tls_certificate", "tls_key", "tls_client_certificate"):
        tls = f"ssl:0:privateKey={workspace.key}:certKey={workspace.certificate}"
        server["listen"] = ["tcp:0", tls]
        if key == "tls_client_certificate":
            table["tls_verify_client"] = "on"
    return f"{where} {key}={bad!r}", key


def one_line(message: str) -> bool:
    return "\n" not in message and "\r" not in message and bool(message.strip())


def printed_error(stderr: io.StringIO) -> bool:
    """Whether the process printed one ``twistwsgi: error:`` line and nothing else."""
    text = stderr.getvalue()
    return text.startswith("twistwsgi: error: ") and text.count("\n") == 1 and "\r" not in text


def start_up(config: ServerConfig) -> str:
    """Build what ``twistd wsgi`` builds for ``config``, on a memory reactor.

    The listeners (their TLS contexts and files included), the metrics listener,
    then the service: its applications imported, static directories, proxies, access
    logs and password files opened. A start-up error is the one line and exit
    status 2 (``SystemExit``) or a ``ConfigError`` (which ``makeService`` prints so);
    anything else escapes as the traceback it would be.

    Returns:
        What came of it: ``"built"`` or ``"refused when built"``.
    """
    # (check_config: a stale UNIX socket is not looked for, and no file is removed.)
    config = replace(config, check_config=True)
    with warnings.catch_warnings():
        # A refused build leaves what it opened (an access log) to the process's exit,
        # which closes it; here it is collected, without an unclosed file's warning.
        warnings.simplefilter("ignore", ResourceWarning)
        service = build_or_refuse(config)
        if service is None:
            gc.collect()
            return "refused when built"
    service.stopService()
    return "built"


def build_or_refuse(config: ServerConfig) -> ServerService | None:
    """The service built for ``config``, or None for a start-up error, checked."""
    stderr = io.StringIO()
    reactor = MemoryReactorClock()
    with mock.patch.object(sys, "__stderr__", stderr):
        try:
            endpoints = cli.build_endpoints(reactor, config)
            metrics = cli.build_metrics_endpoint(reactor, config)
            return make_service(
                config,
                reactor=reactor,
                endpoints=endpoints,
                metrics_endpoint=metrics[1] if metrics is not None else None,
            )
        except SystemExit as exit:
            assert exit.code == 2 and printed_error(stderr), stderr.getvalue()
        except ConfigError as error:
            assert one_line(str(error)), str(error)
    return None


def test_every_shipped_example_builds(
    examples: list[tuple[str, dict[str, Any]]], workspace: Workspace
) -> None:
    """What the fuzzing changes builds unchanged, as the start-up builds it."""
    path = workspace.root / "site.toml"
    refused = []
    for name, document in examples:
        path.write_text(toml_document(document))
        if start_up(cli.load_config({"config": str(path)})) != "built":
            refused.append(name)
    assert refused == []


#: The same examples on every run (derandomize, no example database), so a failure
#: is found again by the next run; it prints the mutations that made it.
FUZZ = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.data())
def test_a_mutated_example_loads_or_is_refused_in_one_line_naming_the_key(
    data: st.DataObject,
    examples: list[tuple[str, dict[str, Any]]],
    workspace: Workspace,
) -> None:
    """A shipped example changed once or twice (a key deleted, misspelt or added, a
    value of another type or range, a host, mount or listener repeated, a bad file)
    loads, or is refused with a ConfigError of one line naming the key it is about;
    what loads builds as at start-up, or is refused so.
    """
    name, example = data.draw(st.sampled_from(examples))
    document = copy.deepcopy(example)
    changes = [mutate(document, data, workspace) for _ in range(data.draw(st.integers(1, 2)))]
    note(f"{name}: {[change for change, _ in changes]}")
    path = workspace.root / "site.toml"
    path.write_text(toml_document(document))
    try:
        config = cli.load_config({"config": str(path)})
    except ConfigError as error:
        event("refused when loaded")
        message = str(error)
        assert one_line(message), message
        assert message.startswith(("site.toml", str(path), "configuration:")), message
        if len(changes) == 1 and changes[0][1] is not None:
            # (A key renamed into a misspelling is named as written; the others, or
            # an error at the key a changed one goes with, by their own names.)
            assert (
                changes[0][1] in message
                or message.startswith("configuration:")
                or (re.search(r"\.\w+: (needs|.* goes with|has no effect)", message))
            ), message
        return
    event(start_up(config))


#: Values for options, by what they take, and some that fit no option.
OPTION_VALUES = [
    *("", " ", "x", "0", "-1", "1", "99999999999999999999", "1.5", "nan", "on", "auto"),
    *("tcp:0", "tcp:99999", "tcp:0:backlog=x", "unix:/nonexistent/s.sock", "haproxy:tcp:0"),
    *("/=200 ok", "/x=./nowhere", "/api=http://127.0.0.1:9000", "/s=/tmp", "/=http://[::1"),
    *("a.example=static:/tmp", "a.example/x=return:200", "x:y(", "=", "/=", "~ (=200"),
    *("twistwsgi.demo.app:application", "tests.apps:missing", "10r/s", "1k", "a\nb", "é"),
    *("$uri", "= /x=200 ok", "^~ /x=200", "/=301", "/=444", "-", "off", "127.0.0.1"),
    *("tc\np:80", "ssl:0:privateKey=/k\x00.pem", "a\x00b", "/=http://h\x00:1"),
]


#: Values each option takes (besides its default), to be edited as a user mistypes.
OWN_VALUES = {
    "listen": ["tcp:8080", "ssl:0:privateKey=k.pem:certKey=c.pem", "unix:/tmp/tw.sock"],
    "metrics_listen": ["tcp:9090:interface=127.0.0.1", "haproxy:tcp:9090"],
    "config": ["site.toml"],
    "app": ["twistwsgi.demo.app:application", "twistwsgi.demo.app:application()"],
    "static": ["/static=/tmp"],
    "proxy": ["/api=http://127.0.0.1:9000/v1", "/=unix:/tmp/app.sock"],
    "return": ["/=200 ok", "/old=301 https://example.com$request_uri"],
    "vhost": ["a.example=static:/tmp", "a.example/api=proxy:http://127.0.0.1:9000"],
    "access_log": ["-", "off"],
    "trusted_proxies": ["10.0.0.0/8,127.0.0.1"],
}
CLI_SETTINGS = [setting for setting in SETTINGS if setting.cli]


def own_values(setting: Setting) -> list[str]:
    default = setting.default
    defaults = list(default) if isinstance(default, tuple) else [default]
    return OWN_VALUES.get(setting.name, []) + [
        str(value) for value in defaults if value not in (None, "") and not isinstance(value, bool)
    ]


@st.composite
def command_line_option(draw: st.DrawFn) -> tuple[Setting, str]:
    """An option and a value: its own or any, edited (a character put in) or not."""
    setting = draw(st.sampled_from(CLI_SETTINGS))
    own = own_values(setting)
    its_own: bool = draw(st.booleans())
    values = own if own and its_own else OPTION_VALUES
    value = draw(st.sampled_from(values))
    if draw(st.booleans()):
        where = draw(st.integers(0, len(value)))
        value = value[:where] + draw(st.sampled_from(INSERTED)) + value[where:]
    return setting, value


@FUZZ
@given(options=st.lists(command_line_option(), min_size=1, max_size=3), mount=st.booleans())
def test_a_random_command_line_parses_or_is_refused_in_one_line(
    options: list[tuple[Setting, str]], mount: bool, workspace: Workspace
) -> None:
    """Options with values from every kind (and flags given a value) parse, or are
    refused as twistd's parser runs them: one line, exit status 2; what parses
    builds as at start-up, or is refused so.
    """
    argv = ["--return", "/=200 ok"] if mount else []
    for setting, value in options:
        argv += [setting.flag] if setting.kind is BOOL else [setting.flag, value]
    event(parse_and_start(argv, workspace))


def parse_and_start(argv: list[str], workspace: Workspace) -> str:
    """Parse ``argv`` as ``twistd wsgi`` does and build what it gives (see start_up).

    From the workspace's own directory: a relative file it names (an access log
    called ``on``) is made there.

    Returns:
        What came of it: ``"refused when parsed"``, or what start_up says.
    """
    stderr = io.StringIO()
    parsed = cli.Options()
    with contextlib.chdir(workspace.cwd), mock.patch.object(sys, "__stderr__", stderr):
        try:
            parsed.parseOptions(argv)
        except SystemExit as exit:
            assert exit.code == 2 and printed_error(stderr), (argv, stderr.getvalue())
            return "refused when parsed"
        return start_up(parsed.config)


#: Characters no value should take through to a traceback or a second line.
CONTROLS = ["\x00", "\n", "\x1b"]


@pytest.mark.parametrize("control", CONTROLS)
def test_every_option_with_a_control_character_is_one_line_at_most(
    control: str, workspace: Workspace
) -> None:
    """Each option's own values with a control character put in the middle: what
    random drawing would rarely reach (one option, one character) is tried for each.
    """
    for setting in CLI_SETTINGS:
        for value in own_values(setting) or ["x"]:
            edited = value[: len(value) // 2] + control + value[len(value) // 2 :]
            parse_and_start(["--return", "/=200 ok", setting.flag, edited], workspace)


@pytest.mark.parametrize("control", CONTROLS)
def test_every_string_of_the_examples_with_a_control_character_is_refused_or_built(
    control: str, examples: list[tuple[str, dict[str, Any]]], workspace: Workspace
) -> None:
    """Each string key of the examples, once per key name and table, with a control
    character put in the middle, loads and builds or is refused in one line.
    """
    tried: set[tuple[str, str]] = set()
    path = workspace.root / "site.toml"
    for _, example in examples:
        for where in paths(example):
            value = at(example, where)
            named = [key for key in where if isinstance(key, str)]
            if not isinstance(value, str) or (named[0], named[-1]) in tried:
                continue
            tried.add((named[0], named[-1]))
            document = copy.deepcopy(example)
            at(document, where[:-1])[where[-1]] = (
                value[: len(value) // 2] + control + value[len(value) // 2 :]
            )
            path.write_text(toml_document(document))
            try:
                config = cli.load_config({"config": str(path)})
            except ConfigError as error:
                assert one_line(str(error)), str(error)
                continue
            start_up(config)
    assert len(tried) > 50
