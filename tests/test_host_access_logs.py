"""Access logs of hosts and mounts (nginx's access_log in server and location blocks).

Each test builds the service from a configuration file, sends requests through its
factory (StringTransport, no sockets) and reads the files the lines went to.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure

from twistwsgi import cli
from twistwsgi.config import ConfigError
from twistwsgi.service import ServerService, make_service
from twistwsgi.testing import capture_log_events, parse_responses

SITE = """
[server]
access_log = "server.log"

[[host]]
names = ["a.example"]
access_log = "a.log"
[[host.mount]]
path = "/"
app = "tests.apps:hello"
[[host.mount]]
path = "/healthz"
return = "200 ok"
access_log = "off"
[[host.mount]]
path = "/static"
static = "static"
access_log = "logs/static.log"

[[host]]
names = ["b.example"]
default = true
[[host.mount]]
path = "/"
app = "tests.apps:hello"
"""


def site(tmp_path: Path, text: str = SITE) -> dict[str, Any]:
    """The command-line values of a server reading ``text`` as its site.toml."""
    (tmp_path / "static").mkdir(exist_ok=True)
    (tmp_path / "static" / "app.css").write_text("body {}\n")
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "site.toml").write_text(text)
    return {"config": str(tmp_path / "site.toml"), "threads": "0"}


def serve(given: dict[str, Any], **options: Any) -> ServerService:
    service = make_service(
        cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[], **options
    )
    service.startService()
    return service


def send(service: ServerService, data: bytes) -> bytes:
    """Send ``data`` on a new connection through the service's factory; the replies."""
    protocol: Any = service.factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    protocol.connectionLost(Failure(ConnectionDone()))
    written: bytes = transport.value()
    return written


def get(service: ServerService, host: bytes, target: bytes) -> int:
    data = send(service, b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    (response,) = parse_responses(data)
    status: int = response.status
    return status


def open_paths() -> set[str]:
    """The files this process has open (Linux's /proc)."""
    fds = "/proc/self/fd"
    paths = set()
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):  # (the listing's own descriptor, closed since)
            paths.add(os.readlink(os.path.join(fds, fd)))
    return paths


def requests(path: Path) -> list[str]:
    """The request lines logged in ``path``, with their statuses."""
    if not path.exists():
        return []
    logged = []
    for line in path.read_text().splitlines():
        _, request, rest = line.split('"', 2)
        logged.append(f"{request} {rest.split()[0]}")
    return logged


def test_each_host_and_mount_logs_where_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host's own file for its requests (its 404s too), a mount's own file or off in
    place of the host's, and the server's for a host that names none.
    """
    monkeypatch.chdir(tmp_path)  # (where a log named "off" would be made)
    service = serve(site(tmp_path), count_metrics=True)
    assert get(service, b"a.example", b"/") == 200
    assert get(service, b"A.Example:8080", b"/static/app.css") == 200
    assert get(service, b"a.example", b"/healthz") == 200
    assert get(service, b"b.example", b"/b") == 200
    assert get(service, b"unknown.example", b"/u") == 200  # (the default host: b)
    service.stopService()
    assert requests(tmp_path / "a.log") == ["GET / HTTP/1.1 200"]
    assert requests(tmp_path / "logs" / "static.log") == ["GET /static/app.css HTTP/1.1 200"]
    assert requests(tmp_path / "server.log") == ["GET /b HTTP/1.1 200", "GET /u HTTP/1.1 200"]
    assert not (tmp_path / "off").exists()
    # Off writes no line, but the request is still counted.
    metrics = service.factory.metrics
    assert metrics is not None and metrics.snapshot(0, {})["responses"] == {"200": 5}


def test_the_hosts_own_answers_go_to_its_log(tmp_path: Path) -> None:
    """What the host answers before any mount (a path under no mount, its https
    redirect) is in its log, as nginx logs them in the server block.
    """
    text = SITE.replace('access_log = "a.log"', 'access_log = "a.log"\nhttps_redirect = 443')
    text = text.replace('path = "/"\napp', 'path = "/app"\napp', 1)
    service = serve(site(tmp_path, text))
    assert get(service, b"a.example", b"/x") == 301  # the redirect to https
    service.stopService()
    assert requests(tmp_path / "a.log") == ["GET /x HTTP/1.1 301"]

    service = serve(site(tmp_path, SITE.replace('path = "/"\napp', 'path = "/app"\napp', 1)))
    assert get(service, b"a.example", b"/nothing-here") == 404
    service.stopService()
    assert requests(tmp_path / "a.log")[-1] == "GET /nothing-here HTTP/1.1 404"


def test_a_refused_request_goes_to_the_log_of_the_host_it_names(tmp_path: Path) -> None:
    """A head refused once its Host was read goes to that host's (or mount's) log; one
    refused before any host is known, to the server's.
    """
    text = SITE.replace("[server]\n", '[server]\nmax_body = "10"\n')
    service = serve(site(tmp_path, text))
    # Refused from its complete head: too large a body for the mount (the host's log).
    send(service, b"POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: 99\r\n\r\n")
    # Refused while its head was read, after the Host field: a control character.
    send(service, b"GET /bad HTTP/1.1\r\nHost: a.example\r\nX-Bad: a\x01b\r\n\r\n")
    # Under a mount with its own log.
    send(service, b"POST /static/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 99\r\n\r\n")
    # No host read: the server's.
    send(service, b"GET /\x00 HTTP/1.1\r\n\r\n")
    service.stopService()
    assert requests(tmp_path / "a.log") == ["POST /up HTTP/1.1 413", "GET /bad HTTP/1.1 400"]
    assert requests(tmp_path / "logs" / "static.log") == ["POST /static/x HTTP/1.1 413"]
    assert [line.split()[-1] for line in requests(tmp_path / "server.log")] == ["400"]


def test_a_miss_passed_on_logs_where_the_mount_taking_it_says(tmp_path: Path) -> None:
    """A static mount passing its misses to the application at the same path: a file
    is logged by the static mount's log, a miss by the application's (off here), as
    nginx logs in the location try_files passes the request to.
    """
    text = """
[server]
access_log = "server.log"
[[host]]
names = ["a.example"]
access_log = "a.log"
[[host.mount]]
path = "/"
static = "static"
fallthrough = true
[[host.mount]]
path = "/"
app = "tests.apps:hello"
access_log = "off"
"""
    service = serve(site(tmp_path, text))
    assert get(service, b"a.example", b"/app.css") == 200
    assert get(service, b"a.example", b"/from-the-app") == 200
    service.stopService()
    assert requests(tmp_path / "a.log") == ["GET /app.css HTTP/1.1 200"]
    assert requests(tmp_path / "server.log") == []


def test_reload_moves_a_hosts_log_and_reopens_the_others(tmp_path: Path) -> None:
    """A reload naming another file for a host: later lines go there, the old file
    is closed; a file rotated away is reopened (SIGHUP and SIGUSR1 alike).
    """
    given = site(tmp_path)
    service = serve(given)
    get(service, b"a.example", b"/1")
    assert str(tmp_path / "a.log") in open_paths()
    (tmp_path / "site.toml").write_text(SITE.replace('"a.log"', '"a2.log"'))
    assert service.reload(cli.load_config(given))
    get(service, b"a.example", b"/2")
    get(service, b"a.example", b"/static/app.css")
    (tmp_path / "logs" / "static.log").rename(tmp_path / "logs" / "static.log.1")
    service.reopen_access_log()
    get(service, b"a.example", b"/static/app.css?again")
    service.stopService()
    assert requests(tmp_path / "a.log") == ["GET /1 HTTP/1.1 200"]
    assert requests(tmp_path / "a2.log") == ["GET /2 HTTP/1.1 200"]
    assert str(tmp_path / "a.log") not in open_paths()
    assert requests(tmp_path / "logs" / "static.log.1") == ["GET /static/app.css HTTP/1.1 200"]
    assert requests(tmp_path / "logs" / "static.log") == ["GET /static/app.css?again HTTP/1.1 200"]


def test_a_log_that_cannot_be_reopened_is_named_and_the_server_goes_on(tmp_path: Path) -> None:
    """Its directory removed: a reopen (SIGUSR1, SIGHUP) says, for each file, which
    cannot be reopened and why, and the server answers as before.
    """
    given = site(tmp_path, SITE.replace('"server.log"', '"logs/server.log"'))
    service = serve(given)
    for path in (tmp_path / "logs").iterdir():
        path.unlink()
    (tmp_path / "logs").rmdir()
    with capture_log_events() as events:
        service.reopen_access_log()
    errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 2
    assert any(str(tmp_path / "logs" / "server.log") in error for error in errors)
    assert any(str(tmp_path / "logs" / "static.log") in error for error in errors)
    assert all("No such file or directory" in error for error in errors)
    assert get(service, b"b.example", b"/still") == 200
    service.stopService()


def test_a_reload_whose_host_log_cannot_open_is_refused(tmp_path: Path) -> None:
    given = site(tmp_path)
    service = serve(given)
    (tmp_path / "site.toml").write_text(SITE.replace('"a.log"', '"missing/a.log"'))
    with capture_log_events() as events:
        assert not service.reload(cli.load_config(given))
    errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 1 and "host[0].access_log: cannot open" in errors[0]
    get(service, b"a.example", b"/still")
    service.stopService()
    assert requests(tmp_path / "a.log") == ["GET /still HTTP/1.1 200"]


def test_a_host_log_that_cannot_open_is_a_start_up_error(tmp_path: Path) -> None:
    given = site(tmp_path, SITE.replace('"logs/static.log"', '"missing/static.log"'))
    with pytest.raises(ConfigError) as caught:
        make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    message = str(caught.value)
    assert message.startswith("site.toml: host[0].mount[2].access_log: cannot open")
    assert "missing/static.log" in message and "No such file or directory" in message


def test_relative_paths_are_read_from_the_configuration_file(tmp_path: Path) -> None:
    config = cli.load_config(site(tmp_path))
    host = config.hosts[0]
    assert host.access_log == str(tmp_path / "a.log")
    assert [mount.options["access_log"] for mount in host.mounts] == [
        None,
        "off",
        str(tmp_path / "logs" / "static.log"),
    ]


def test_a_reload_that_gives_hosts_logs_routes_lines_from_then_on(tmp_path: Path) -> None:
    """A server started without any host log routes lines once a reload names one,
    in the reloaded line format, and back to the server's when the reload drops it.
    """
    plain = SITE.replace('access_log = "a.log"\n', "").replace(
        'access_log = "logs/static.log"\n', ""
    )
    plain = plain.replace('access_log = "off"\n', "")
    given = site(tmp_path, plain)
    service = serve(given)
    get(service, b"a.example", b"/1")
    (tmp_path / "site.toml").write_text(
        SITE.replace("[server]\n", '[server]\naccess_log_format = "$host $request_uri"\n')
    )
    assert service.reload(cli.load_config(given))
    get(service, b"a.example", b"/2")
    get(service, b"a.example", b"/healthz")
    # The same file, another format: the open log writes it from the next line.
    (tmp_path / "site.toml").write_text(
        SITE.replace("[server]\n", '[server]\naccess_log_format = "$status $uri"\n')
    )
    assert service.reload(cli.load_config(given))
    get(service, b"a.example", b"/2b")
    (tmp_path / "site.toml").write_text(plain)
    assert service.reload(cli.load_config(given))
    get(service, b"a.example", b"/3")
    service.stopService()
    assert (tmp_path / "a.log").read_text() == "a.example /2\n200 /2b\n"
    assert requests(tmp_path / "server.log") == ["GET /1 HTTP/1.1 200", "GET /3 HTTP/1.1 200"]


def test_a_restarted_service_opens_its_host_logs_again(tmp_path: Path) -> None:
    service = serve(site(tmp_path))
    get(service, b"a.example", b"/1")
    service.stopService()
    service.startService()
    get(service, b"a.example", b"/2")
    service.stopService()
    assert requests(tmp_path / "a.log") == ["GET /1 HTTP/1.1 200", "GET /2 HTTP/1.1 200"]


@pytest.mark.parametrize("level", ["host", "mount"])
def test_a_log_of_one_host_or_one_mount_alone_is_used(tmp_path: Path, level: str) -> None:
    """The router says where lines go as soon as any host, or any mount, has a log."""
    where = '[[host.mount]]\npath = "/"\n' if level == "mount" else 'names = ["a.example"]\n'
    text = (
        '[server]\naccess_log_format = "$uri"\n'
        '[[host]]\nnames = ["a.example"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
    ).replace(where, f'{where}access_log = "own.log"\n')
    service = serve(site(tmp_path, text))
    get(service, b"a.example", b"/x")
    service.stopService()
    assert (tmp_path / "own.log").read_text() == "/x\n"


def test_a_request_in_flight_across_a_reload_logs_where_it_was_routed(tmp_path: Path) -> None:
    """A request waiting on its upstream when a reload names another file (or off)
    for its host is logged in the file it was routed to, kept open until the next
    reload closes it.
    """
    text = SITE.replace(
        'path = "/"\napp = "tests.apps:hello"', 'path = "/"\nproxy = "http://u:9"', 1
    )
    given = site(tmp_path, text)
    service = serve(given)
    protocol: Any = service.factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"GET /slow HTTP/1.1\r\nHost: a.example\r\n\r\n")
    (tmp_path / "site.toml").write_text(text.replace('"a.log"', '"off"'))
    assert service.reload(cli.load_config(given))
    assert str(tmp_path / "a.log") in open_paths()
    protocol.connectionLost(Failure(ConnectionDone()))  # the client gives up: 499
    assert requests(tmp_path / "a.log") == ["GET /slow HTTP/1.1 499"]
    assert service.reload(cli.load_config(given))
    assert str(tmp_path / "a.log") not in open_paths()
    service.stopService()


def test_a_refusal_naming_no_host_goes_to_the_servers_log_not_the_defaults(
    tmp_path: Path,
) -> None:
    text = SITE.replace('names = ["a.example"]', 'names = ["a.example"]\ndefault = true')
    text = text.replace("default = true\n[[host.mount]]", "[[host.mount]]", 1)  # (b's)
    service = serve(site(tmp_path, text))
    send(service, b"GET /\x00 HTTP/1.1\r\n\r\n")
    service.stopService()
    assert requests(tmp_path / "a.log") == []
    assert [line.split()[-1] for line in requests(tmp_path / "server.log")] == ["400"]


def test_a_refusal_under_a_static_mount_passing_misses_on_logs_as_its_limit_says(
    tmp_path: Path,
) -> None:
    """The body limit of a static mount's misses is the mount they go to: so is the
    log of the 413 it decides.
    """
    text = """
[[host]]
names = ["a.example"]
access_log = "site.log"
[[host.mount]]
path = "/"
static = "static"
fallthrough = true
[[host.mount]]
path = "/"
app = "tests.apps:hello"
access_log = "app.log"
max_body = "10"
"""
    service = serve(site(tmp_path, text))
    send(service, b"POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: 99\r\n\r\n")
    service.stopService()
    assert requests(tmp_path / "app.log") == ["POST /up HTTP/1.1 413"]
    assert requests(tmp_path / "site.log") == []


def test_a_reload_changing_the_servers_log_reopens_the_hosts_too(tmp_path: Path) -> None:
    given = site(tmp_path)
    service = serve(given)
    get(service, b"a.example", b"/1")
    (tmp_path / "a.log").rename(tmp_path / "a.log.1")
    (tmp_path / "site.toml").write_text(SITE.replace('"server.log"', '"server2.log"'))
    assert service.reload(cli.load_config(given))
    get(service, b"a.example", b"/2")
    service.stopService()
    assert requests(tmp_path / "a.log.1") == ["GET /1 HTTP/1.1 200"]
    assert requests(tmp_path / "a.log") == ["GET /2 HTTP/1.1 200"]


def test_two_spellings_of_one_file_are_one_log(tmp_path: Path) -> None:
    config = cli.load_config(site(tmp_path, SITE.replace('"a.log"', '"./logs/../a.log"')))
    assert config.hosts[0].access_log == str(tmp_path / "a.log")


def test_check_config_names_each_hosts_log(tmp_path: Path) -> None:
    from twistwsgi.site import describe_routing

    described = describe_routing(cli.load_config(site(tmp_path)))
    assert f"  access log: {tmp_path / 'a.log'}" in described


def test_a_download_handed_to_a_static_mount_logs_where_that_mount_does(
    tmp_path: Path,
) -> None:
    """X-Accel-Redirect is nginx's internal redirect: the line goes to the log of the
    location it leads to.
    """
    text = """
[[host]]
names = ["a.example"]
access_log = "a.log"
[[host.mount]]
path = "/download"
app = "tests.apps:accel"
x_accel_redirect = true
[[host.mount]]
path = "/private"
static = "static"
internal = true
access_log = "files.log"
"""
    service = serve(site(tmp_path, text))
    assert get(service, b"a.example", b"/download/app.css") == 200
    service.stopService()
    assert requests(tmp_path / "files.log") == ["GET /download/app.css HTTP/1.1 200"]
    assert requests(tmp_path / "a.log") == []


FORMATS = """
[server]
access_log = "server.log"
access_log_format = "server $uri"
[[host]]
names = ["a.example"]
access_log = "a.log"
access_log_format = "host $host $uri $status"
[[host.mount]]
path = "/"
app = "tests.apps:hello"
[[host.mount]]
path = "/api"
proxy = "http://u:9"
access_log = "api.log"
access_log_format = "api $uri $upstream_status"
[[host]]
names = ["b.example"]
[[host.mount]]
path = "/"
app = "tests.apps:hello"
"""


def test_a_hosts_or_mounts_log_has_its_own_line_format(tmp_path: Path) -> None:
    """As nginx's access_log PATH FORMAT: each log its format, the server's elsewhere;
    a proxy mount notes its upstreams when any format asks for them.
    """
    given = site(tmp_path, FORMATS)
    service = serve(given)
    get(service, b"a.example", b"/x")
    get(service, b"b.example", b"/y")
    proxies = [h for h in service._router.table.handlers if hasattr(h, "log_upstreams")]  # type: ignore[union-attr]
    assert [proxy.log_upstreams for proxy in proxies] == [True]
    # A reload that changes only a format: the same open file writes the new one.
    (tmp_path / "site.toml").write_text(FORMATS.replace("host $host", "again $host"))
    assert service.reload(cli.load_config(given))
    get(service, b"a.example", b"/z")
    service.stopService()
    assert (tmp_path / "a.log").read_text() == "host a.example /x 200\nagain a.example /z 200\n"
    assert (tmp_path / "server.log").read_text() == "server /y\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('access_log = "api.log"', 'access_log = "a.log"'),
            "host[0].mount[1].access_log: '{tmp}/a.log' is written with another line format",
        ),
        (
            ('access_log = "a.log"\n', ""),
            "host[0].access_log_format: needs access_log here, the file whose lines it formats",
        ),
        (
            ('access_log = "api.log"', 'access_log = "off"'),
            "host[0].mount[1].access_log_format: needs access_log here",
        ),
    ],
)
def test_a_format_without_its_own_file_or_against_anothers_is_refused(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    given = site(tmp_path, FORMATS.replace(*change))
    with pytest.raises(ConfigError) as caught:
        make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    assert message.format(tmp=tmp_path) in str(caught.value)


def test_a_hosts_format_asking_for_upstreams_has_its_proxies_note_them(tmp_path: Path) -> None:
    text = FORMATS.replace("host $host $uri $status", "$upstream_addr").replace(
        'access_log_format = "api $uri $upstream_status"\n', ""
    )
    service = serve(site(tmp_path, text))
    proxies = [h for h in service._router.table.handlers if hasattr(h, "log_upstreams")]  # type: ignore[union-attr]
    assert [proxy.log_upstreams for proxy in proxies] == [True]
    service.stopService()


def test_check_config_names_a_hosts_log_format(tmp_path: Path) -> None:
    from twistwsgi.site import describe_routing

    described = describe_routing(cli.load_config(site(tmp_path, FORMATS)))
    assert f"  access log: {tmp_path / 'a.log'}, format 'host $host $uri $status'" in described


def test_a_restarted_service_writes_each_log_in_its_format(tmp_path: Path) -> None:
    service = serve(site(tmp_path, FORMATS))
    service.stopService()
    service.startService()
    get(service, b"a.example", b"/r")
    service.stopService()
    assert (tmp_path / "a.log").read_text() == "host a.example /r 200\n"
