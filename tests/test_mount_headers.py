"""A mount's ``headers`` on the responses of applications (and proxies, end to end in
``test_site_end_to_end``): nginx's ``add_header ... always``, the handler's own fields
kept.

In memory through the routing table a configuration file builds; h11 reads the
answers. The applications are wrapped in ``wsgiref.validate.validator``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from twisted.internet.testing import MemoryReactorClock

from twistwsgi import cli
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder
from twistwsgi.testing import ParsedResponse, capture_log_events, connect, parse_responses


def _plain(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Frame-Options", "SAMEORIGIN")])
    return [b"plain"]


def _broken(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    raise RuntimeError("broken for the test")


APPS = {"plain": validator(_plain), "broken": validator(_broken)}

HEADERS = 'headers = { Strict-Transport-Security = "max-age=63072000", x-frame-options = "DENY" }'


def load(directory: Path, mounts: str) -> ServerConfig:
    site = directory / "site.toml"
    site.write_text(f'[server]\nlisten = ["tcp:80"]\n[[host]]\nnames = ["a.test"]\n{mounts}')
    return cli.load_config({"config": str(site)})


def ask(config: ServerConfig, path: bytes, method: bytes = b"GET") -> ParsedResponse:
    table = SiteBuilder(reactor=MemoryReactorClock(), threadpool=None, load=APPS.__getitem__).build(
        config
    )
    connection = connect(Router(table))
    connection.protocol.dataReceived(method + b" " + path + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    [response] = parse_responses(connection.transport.value(), [method])
    return response


def mount(path: str, kind: str, target: str, extra: str = "") -> str:
    return f'[[host.mount]]\npath = "{path}"\n{kind} = "{target}"\n{extra}\n'


def test_an_application_gets_the_fields_it_does_not_set(tmp_path: Path) -> None:
    """HSTS is added; the application's own X-Frame-Options is kept, not doubled."""
    config = load(tmp_path, mount("/", "app", "plain", HEADERS))
    response = ask(config, b"/")
    assert response.status == 200
    assert response.header_values(b"strict-transport-security") == [b"max-age=63072000"]
    assert response.header_values(b"x-frame-options") == [b"SAMEORIGIN"]


def test_a_server_error_gets_them_too(tmp_path: Path) -> None:
    """As nginx's add_header with always: an HSTS policy holds on an error page."""
    config = load(tmp_path, mount("/", "app", "broken", HEADERS))
    with capture_log_events():
        response = ask(config, b"/")
    assert response.status == 500
    assert response.header_values(b"strict-transport-security") == [b"max-age=63072000"]
    assert response.header_values(b"x-frame-options") == [b"DENY"]


def test_head_gets_them(tmp_path: Path) -> None:
    config = load(tmp_path, mount("/", "app", "plain", HEADERS))
    response = ask(config, b"/", b"HEAD")
    assert response.header_values(b"strict-transport-security") == [b"max-age=63072000"]


def test_each_mount_adds_its_own(tmp_path: Path) -> None:
    """A mount without headers adds none; a static fall-through to an application
    gives the application's response the application mount's fields, and files the
    static mount's.
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.txt").write_text("file\n")
    config = load(
        tmp_path,
        mount("/", "static", "files", 'fallthrough = true\nheaders = { X-Static = "yes" }')
        + mount("/", "app", "plain", HEADERS)
        + mount("/bare", "app", "plain"),
    )
    from_app = ask(config, b"/missing")
    assert from_app.body == b"plain"
    assert from_app.header_values(b"strict-transport-security") == [b"max-age=63072000"]
    assert from_app.header_values(b"x-static") == []
    from_file = ask(config, b"/f.txt")
    assert from_file.body == b"file\n"
    assert from_file.header_values(b"x-static") == [b"yes"]
    assert from_file.header_values(b"strict-transport-security") == []
    assert ask(config, b"/bare").header_values(b"strict-transport-security") == []


@pytest.mark.parametrize(
    "name", ["Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Date"]
)
def test_fields_that_frame_the_response_are_refused(tmp_path: Path, name: str) -> None:
    """The server sets them from what it sends: a configured one would contradict it."""
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, mount("/", "app", "plain", f'headers = {{ {name} = "1" }}'))
    assert str(raised.value) == (
        f"site.toml: host[0].mount[0].headers: {name!r} is the server's to set"
        " (it frames the response)"
    )


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            '{ X-Frame-Options = "DENY", x-frame-options = "SAMEORIGIN" }',
            "'x-frame-options' is given twice (as 'X-Frame-Options')",
        ),
        ('{ X-Note = "café ☕" }', "the value of 'X-Note' is not Latin-1 text: 'café ☕'"),
    ],
)
def test_headers_that_could_not_be_sent_as_meant_are_refused(
    tmp_path: Path, table: str, problem: str
) -> None:
    """Two values for one field (names have no case) would cancel each other out in
    a browser; a value outside Latin-1 cannot be sent (RFC 9110 5.5) and failed at
    start-up with a traceback.
    """
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, mount("/", "app", "plain", f"headers = {table}"))
    assert str(raised.value) == f"site.toml: host[0].mount[0].headers: {problem}"


def test_a_static_mount_sends_them_with_files_304s_and_redirects(tmp_path: Path) -> None:
    """As nginx's add_header (without always): 200, 206, 301 and 304, not errors."""
    (tmp_path / "files" / "dir").mkdir(parents=True)
    (tmp_path / "files" / "f.txt").write_text("file\n")
    (tmp_path / "files" / "dir" / "index.html").write_text("<p>index</p>\n")
    config = load(tmp_path, mount("/", "static", "files", HEADERS))
    table = SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config)

    def get(path: bytes, *fields: bytes) -> ParsedResponse:
        connection = connect(Router(table))
        more = b"".join(field + b"\r\n" for field in fields)
        connection.protocol.dataReceived(
            b"GET " + path + b" HTTP/1.1\r\nHost: a.test\r\n" + more + b"\r\n"
        )
        [response] = parse_responses(connection.transport.value())
        return response

    hsts = b"strict-transport-security"
    file = get(b"/f.txt")
    etag = file.header(b"etag")
    assert etag is not None and file.header_values(hsts) == [b"max-age=63072000"]
    not_modified = get(b"/f.txt", b"If-None-Match: " + etag)
    assert not_modified.status == 304
    assert not_modified.header_values(hsts) == [b"max-age=63072000"]
    assert not_modified.header_values(b"x-frame-options") == [b"DENY"]
    redirect = get(b"/dir")
    assert redirect.status == 301 and redirect.header_values(hsts) == [b"max-age=63072000"]
    missing = get(b"/missing.txt")
    assert missing.status == 404 and missing.header_values(hsts) == []
