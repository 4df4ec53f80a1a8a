"""A host's error pages (nginx's error_page): which answers get them and which do not.

Every site here is built from a configuration file, as the server builds it, and
driven through the real protocol in memory; responses are parsed with h11.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.test_proxy import FakeEndpoint
from tests.test_wsgi import one_worker
from twistwsgi import cli
from twistwsgi.config import MAX_ERROR_PAGE, ConfigError, MountConfig, ServerConfig
from twistwsgi.forwarding import UpstreamAddress
from twistwsgi.http.exchange import Handler
from twistwsgi.http.request import RequestHead
from twistwsgi.proxy import build_proxy
from twistwsgi.routing import HostTable, Mount, MountTable, Router, RoutingTable
from twistwsgi.service import make_service
from twistwsgi.site import SiteBuilder, describe_routing
from twistwsgi.testing import (
    Connection,
    ParsedResponse,
    QueueingPool,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    connect,
    parse_responses,
)
from twistwsgi.threads import ThreadPoolLike
from twistwsgi.wsgi import WSGIHandler

NOT_FOUND_PAGE = b"<!doctype html><title>Not here</title><h1>Nothing at this address</h1>\n"
CLIENT_PAGE = b"<!doctype html><title>Refused</title><h1>You may not</h1>\n"
SERVER_PAGE = b"<!doctype html><title>Down</title><h1>Back in a moment</h1>\n"
HTML = b"text/html; charset=utf-8"
PLAIN = b"text/plain; charset=utf-8"
# "alice:secret" in {PLAIN} form (htpasswd's scheme that needs no hashing here).
USERS = "alice:{PLAIN}secret\n"


TEXT = [("Content-Type", "text/plain")]


def own(status: str, body: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))], body


#: What the application answers itself, by PATH_INFO: never replaced by a page.
OWN = {
    "/own404": own("404 Not Found", b"the application's own 404\n"),
    "/own500": own("500 Internal Server Error", b"the application's own 500\n"),
    "/own503": own("503 Service Unavailable", b"the application's own 503\n"),
}


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.endswith("/crash"):
        raise RuntimeError("the application failed")
    if path == "/accel":
        start_response("200 OK", [*TEXT, ("X-Accel-Redirect", "/internal/missing.txt")])
        return [b""]
    if path == "/accel-nowhere":
        start_response("200 OK", [*TEXT, ("X-Accel-Redirect", "/nowhere/file.txt")])
        return [b""]
    status, headers, body = OWN.get(path, own("200 OK", b"ok\n"))
    start_response(status, headers)
    return [body]


APPS = {"errors:app": validator(application)}

PAGES = (
    'error_pages = { 401 = "pages/4xx.html", 403 = "pages/4xx.html", 404 = "pages/404.html",'
    ' 400 = "pages/4xx.html", 413 = "pages/4xx.html",'
    ' 405 = "pages/4xx.html", 429 = "pages/4xx.html", 500 = "pages/50x.html",'
    ' 502 = "pages/50x.html", 503 = "pages/50x.html", 504 = "pages/50x.html" }\n'
)

MOUNTS = """\
[[host.mount]]
path = "/static"
static = "www"
[[host.mount]]
path = "/internal"
static = "www"
internal = true
[[host.mount]]
path = "/files"
static = "www"
fallthrough = true
[[host.mount]]
path = "/files"
app = "errors:app"
[[host.mount]]
path = "/app"
app = "errors:app"
x_accel_redirect = true
[[host.mount]]
path = "/zipped"
app = "errors:app"
x_accel_redirect = true
gzip = true
[[host.mount]]
path = "/admin"
app = "errors:app"
deny = ["127.0.0.0/8"]
[[host.mount]]
path = "/login"
app = "errors:app"
rate_limit = "1r/m"
[[host.mount]]
path = "/private"
app = "errors:app"
auth_basic = "Staff only"
auth_basic_user_file = "htpasswd"
[[host.mount]]
path = "/api"
proxy = "http://10.0.0.1:9000"
retry = false
"""


def write_site(directory: Path, pages: str = PAGES) -> Path:
    """A configuration with a branded host and a plain one with the same mounts."""
    (directory / "pages").mkdir(exist_ok=True)
    (directory / "pages" / "404.html").write_bytes(NOT_FOUND_PAGE)
    (directory / "pages" / "4xx.html").write_bytes(CLIENT_PAGE)
    (directory / "pages" / "50x.html").write_bytes(SERVER_PAGE)
    (directory / "www" / "empty").mkdir(parents=True, exist_ok=True)
    (directory / "www" / "a.txt").write_bytes(b"a file\n")
    (directory / "htpasswd").write_text(USERS)
    path = directory / "site.toml"
    path.write_text(
        "[server]\nthread_queue_timeout = 5\n"
        f'[[host]]\nnames = ["branded.example"]\n{pages}{MOUNTS}'
        f'[[host]]\nnames = ["plain.example"]\n{MOUNTS}'
    )
    return path


class Site:
    """A routing table built from the file, its clock and its fake upstreams."""

    def __init__(self, directory: Path, pool: ThreadPoolLike | None = None) -> None:
        self.reactor = SynchronousReactorThreads()
        self.endpoints: list[FakeEndpoint] = []
        config = cli.load_config({"config": str(write_site(directory))})
        builder = SiteBuilder(
            reactor=self.reactor,
            threadpool=pool or SynchronousThreadPool(),
            load=APPS.__getitem__,
            builders={"proxy": self._proxy},
        )
        self.router = Router(builder.build(config))

    def _proxy(self, mount: MountConfig, config: ServerConfig) -> Handler:
        def endpoint_factory(address: UpstreamAddress) -> FakeEndpoint:
            endpoint = FakeEndpoint(address)
            self.endpoints.append(endpoint)
            return endpoint

        return build_proxy(mount, config, reactor=self.reactor, endpoint_factory=endpoint_factory)

    def connect(self) -> Connection:
        return connect(self.router, clock=self.reactor)

    def send(
        self, host: bytes, target: bytes, *fields: bytes, method: bytes = b"GET"
    ) -> Connection:
        connection = self.connect()
        more = b"".join(field + b"\r\n" for field in fields)
        connection.send(method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + more)
        connection.send(b"\r\n")
        return connection

    def get(
        self, host: bytes, target: bytes, *fields: bytes, method: bytes = b"GET"
    ) -> ParsedResponse:
        connection = self.send(host, target, *fields, method=method)
        [response] = parse_responses(connection.take(), [method])
        return response

    def upstream_for(self, host: bytes) -> FakeEndpoint:
        """The fake upstream of ``host``'s proxy mount (built in the file's order)."""
        return self.endpoints[0 if host == b"branded.example" else 1]


BRANDED, OTHER = b"branded.example", b"plain.example"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def assert_page(response: ParsedResponse, status: int, page: bytes, method: bytes = b"GET") -> None:
    """``response`` is ``status`` with ``page`` as HTML (its fields only, for HEAD)."""
    assert response.status == status
    assert response.header(b"content-type") == HTML
    assert response.header(b"content-length") == b"%d" % len(page)
    assert response.body == (b"" if method == b"HEAD" else page)


def assert_plain(response: ParsedResponse, status: int, body: bytes) -> None:
    assert (response.status, response.header(b"content-type"), response.body) == (
        status,
        PLAIN,
        body,
    )


# -- the answers that get the page, and the fields they keep -------------------------------


#: The page each status gets on the branded host.
PAGE_FOR = {401: CLIENT_PAGE, 403: CLIENT_PAGE, 404: NOT_FOUND_PAGE, 500: SERVER_PAGE}


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize(
    ("target", "fields", "status"),
    [
        # The router: no mount, and a path above the root.
        (b"/nothing/here", (), 404),
        (b"/../etc/passwd", (), 404),
        # A static mount: a miss, a directory without listing, a file only
        # X-Accel-Redirect may serve.
        (b"/static/missing.txt", (), 404),
        (b"/static/empty/", (), 403),
        (b"/internal/a.txt", (), 404),
        # The guards: allow/deny, auth_basic.
        (b"/admin/", (), 403),
        (b"/private/", (), 401),
        # The WSGI bridge: an application that raised, directly and behind a
        # static mount's fall-through.
        (b"/app/crash", (), 500),
        (b"/files/crash", (), 500),
        # An X-Accel-Redirect naming a file that is not there, or no static mount;
        # on a gzip mount, the file goes out through a route of its own.
        (b"/app/accel", (), 404),
        (b"/app/accel-nowhere", (), 404),
        (b"/zipped/accel", (b"Accept-Encoding: gzip",), 404),
    ],
)
def test_the_servers_own_errors_get_the_hosts_page(
    site: Site, method: bytes, target: bytes, fields: tuple[bytes, ...], status: int
) -> None:
    """The page replaces the plain body and its Content-Type, the status stays the
    error's, HEAD gets no body; the other host, without pages, gets the plain answer.
    """
    assert_page(site.get(BRANDED, target, *fields, method=method), status, PAGE_FOR[status], method)
    plain = site.get(OTHER, target, *fields, method=method)
    assert (plain.status, plain.header(b"content-type")) == (status, PLAIN)
    if method == b"HEAD":
        assert plain.body == b""
    else:
        assert plain.body.endswith(b"\n") and b"<" not in plain.body


def test_a_static_mount_keeps_allow_on_its_405(site: Site) -> None:
    response = site.get(BRANDED, b"/static/a.txt", method=b"DELETE")
    assert_page(response, 405, CLIENT_PAGE)
    assert response.header(b"allow") == b"GET, HEAD"
    assert_plain(site.get(OTHER, b"/static/a.txt", method=b"DELETE"), 405, b"Method Not Allowed\n")


def test_the_rate_limit_keeps_retry_after_on_its_429(site: Site) -> None:
    connection = site.connect()
    for _ in range(2):
        connection.send(b"GET /login/ HTTP/1.1\r\nHost: branded.example\r\n\r\n")
    first, second = parse_responses(connection.take())
    assert first.status == 200
    assert_page(second, 429, CLIENT_PAGE)
    assert second.header(b"retry-after") == b"60"


def test_basic_auth_keeps_its_challenge_and_lets_the_right_user_through(site: Site) -> None:
    response = site.get(BRANDED, b"/private/")
    assert_page(response, 401, CLIENT_PAGE)
    assert response.header(b"www-authenticate") == b'Basic realm="Staff only", charset="UTF-8"'
    token = base64.b64encode(b"alice:secret")
    assert site.get(BRANDED, b"/private/", b"Authorization: Basic " + token).body == b"ok\n"


def test_a_proxy_mount_that_reaches_no_upstream_sends_the_page(site: Site) -> None:
    site.upstream_for(BRANDED).refuse = True
    assert_page(site.get(BRANDED, b"/api/x"), 502, SERVER_PAGE)
    assert_page(site.get(BRANDED, b"/api/x", method=b"HEAD"), 502, SERVER_PAGE, b"HEAD")
    site.upstream_for(OTHER).refuse = True
    response = site.get(OTHER, b"/api/x")
    assert (response.status, response.header(b"content-type")) == (502, PLAIN)
    assert response.body == b"Bad Gateway: the upstream server could not be reached\n"


def test_a_proxy_mount_whose_upstream_is_silent_sends_the_page_with_its_504(site: Site) -> None:
    connection = site.send(BRANDED, b"/api/slow")
    site.reactor.advance(61)  # response_timeout: 60 s
    [response] = parse_responses(connection.take())
    assert_page(response, 504, SERVER_PAGE)


def test_a_proxy_mount_that_runs_out_of_descriptors_keeps_retry_after_on_its_503(
    site: Site,
) -> None:
    site.upstream_for(BRANDED).error = OSError(24, "Too many open files")
    response = site.get(BRANDED, b"/api/x")
    assert_page(response, 503, SERVER_PAGE)
    assert response.header(b"retry-after") == b"1"


def test_the_upstreams_own_errors_pass_through_unchanged(site: Site) -> None:
    """As nginx without proxy_intercept_errors: a 502 or 404 the upstream sends is
    the upstream's answer, body and Content-Type as it made them.
    """
    for status, reason in ((502, b"Bad Gateway"), (404, b"Not Found")):
        connection = site.send(BRANDED, b"/api/x")
        body = b"upstream's own %d" % status
        site.upstream_for(BRANDED).last.respond(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        [response] = parse_responses(connection.take())
        assert (response.status, response.header(b"content-type"), response.body) == (
            status,
            b"text/plain",
            body,
        )


@pytest.mark.parametrize("path", sorted(OWN))
def test_the_applications_own_errors_pass_through_unchanged(site: Site, path: str) -> None:
    """As nginx without uwsgi_intercept_errors: the application's answer is its own."""
    status, _headers, body = OWN[path]
    response = site.get(BRANDED, b"/app" + path.encode())
    assert (response.status, response.header(b"content-type"), response.body) == (
        int(status[:3]),
        b"text/plain",
        body,
    )


def test_requests_for_no_host_get_the_plain_answer(tmp_path: Path) -> None:
    """Without a default host, a name no host lists has no host's pages."""
    site = Site(tmp_path)
    assert_plain(site.get(b"unknown.example", b"/"), 404, b"Not Found\n")


def test_a_refusal_after_the_head_gets_the_hosts_page(site: Site, tmp_path: Path) -> None:
    """The protocol's refusals once a head is accepted (here a body over max_body,
    decided from its Content-Length before it is routed) get the host's page, as
    nginx's error_page 413.
    """
    connection = site.connect()
    connection.factory.error_pages = site.router.error_pages_for  # (as the service does)
    connection.send(
        b"POST /app/x HTTP/1.1\r\nHost: branded.example\r\nContent-Length: 99999999999\r\n\r\n"
    )
    [response] = parse_responses(connection.take())
    assert (response.status, response.header(b"content-type"), response.body) == (
        413,
        HTML,
        CLIENT_PAGE,
    )
    assert response.header(b"connection") == b"close"
    other = site.connect()
    other.factory.error_pages = site.router.error_pages_for
    other.send(
        b"POST /app/x HTTP/1.1\r\nHost: plain.example\r\nContent-Length: 99999999999\r\n\r\n"
    )
    [plain] = parse_responses(other.take())
    assert (plain.status, plain.header(b"content-type")) == (413, PLAIN)


def test_a_chunked_body_growing_over_the_limit_gets_the_page(site: Site) -> None:
    """The 413 decided as the body arrives, once the request was routed (here to
    a proxy mount, whose upstream has not answered yet).
    """
    connection = site.connect()
    connection.factory.error_pages = site.router.error_pages_for  # (as the service does)
    chunk = b"x" * 65536
    connection.send(
        b"POST /api/x HTTP/1.1\r\nHost: branded.example\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"10000\r\n" + chunk + b"\r\n") * 17
    )
    [response] = parse_responses(connection.take())
    assert (response.status, response.body) == (413, CLIENT_PAGE)


def test_the_service_hands_the_pages_to_the_protocol(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "4xx.html").write_bytes(CLIENT_PAGE)
    (tmp_path / "site.toml").write_text(
        '[[host]]\nnames = ["branded.example"]\nerror_pages = { 413 = "4xx.html" }\n'
        '[[host.mount]]\npath = "/"\nstatic = "www"\n'
    )
    config = cli.load_config({"config": str(tmp_path / "site.toml"), "access_log": "off"})
    service = make_service(config, reactor=MemoryReactorClock(), endpoints=[])
    assert service.factory.error_pages is not None
    request = RequestHead(
        method=b"POST",
        target=b"/",
        path=b"/",
        decoded_path=b"/",
        query=b"",
        version=b"1.1",
        headers=[],
        authority=BRANDED,
        content_length=None,
        chunked=False,
        scheme="http",
        peer=None,
        local=None,
    )
    pages = service.factory.error_pages(request)
    assert pages is not None and pages[413].body == CLIENT_PAGE
    service.stopService()


def test_a_request_that_waited_too_long_for_a_thread_gets_the_page(tmp_path: Path) -> None:
    """thread_queue_timeout's 503 keeps its Retry-After."""
    pool = QueueingPool()
    site = Site(tmp_path, pool)
    branded = site.send(BRANDED, b"/app/x")
    other = site.send(OTHER, b"/app/x")
    site.reactor.advance(6)
    [response] = parse_responses(branded.take())
    assert_page(response, 503, SERVER_PAGE)
    assert response.header(b"retry-after") == b"1"
    [response] = parse_responses(other.take())
    assert_plain(response, 503, b"Service Unavailable: the server is busy, try again later\n")
    assert response.header(b"retry-after") == b"1"


def test_an_application_past_app_timeout_gets_the_page(tmp_path: Path) -> None:
    """The 504 the server sends for an application still silent after app_timeout."""
    write_site(tmp_path)
    config = cli.load_config({"config": str(tmp_path / "site.toml")})
    pages = dict(config.hosts[0].error_pages)
    release, started = threading.Event(), threading.Event()

    def stuck(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started.set()
        release.wait(10)  # set by the test long before
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    clock = MemoryReactorClock()
    with one_worker() as (calls, pool):
        handler = WSGIHandler(
            validator(stuck), reactor=calls, threadpool=pool, app_timeout=5.0, clock=clock
        )
        mounts: MountTable[Handler] = MountTable([Mount(b"", handler)], error_pages=pages)
        router = Router(RoutingTable(HostTable([], mounts)))
        connection = connect(router, clock=clock)
        connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        calls.run_until(started.is_set)
        clock.advance(6)
        release.set()
        calls.run_until(lambda: pool.idle)
    [response] = parse_responses(connection.take())
    assert_page(response, 504, SERVER_PAGE)
    handler.close()


# -- configuration -----------------------------------------------------------------------


def test_pages_are_read_from_the_files_directory_with_their_content_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths are the configuration file's; one file given for several
    statuses is read once; the type comes from the extension.
    """
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "gone.txt").write_bytes(b"gone")
    write_site(tmp_path, 'error_pages = { 404 = "pages/404.html", 410 = "pages/gone.txt" }\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = cli.load_config({"config": str(tmp_path / "site.toml")})
    pages = dict(config.hosts[0].error_pages)
    assert sorted(pages) == [404, 410]
    assert pages[404].path == str(tmp_path / "pages" / "404.html")
    assert (pages[404].content_type, pages[404].body) == (HTML, NOT_FOUND_PAGE)
    assert (pages[410].content_type, pages[410].body) == (PLAIN, b"gone")
    shared = write_site(
        tmp_path, 'error_pages = { 502 = "pages/50x.html", 504 = "pages/50x.html" }\n'
    )
    pages = dict(cli.load_config({"config": str(shared)}).hosts[0].error_pages)
    assert pages[502] is pages[504]
    assert config.hosts[1].error_pages == ()


@pytest.mark.parametrize(
    ("table", "where", "problem"),
    [
        ('{ 200 = "pages/404.html" }', "error_pages.200", "expected an error status code, 400"),
        ('{ 600 = "pages/404.html" }', "error_pages.600", "expected an error status code, 400"),
        ('{ 399 = "pages/404.html" }', "error_pages.399", "expected an error status code, 400"),
        ('{ "40x" = "pages/404.html" }', "error_pages.40x", "expected an error status code"),
        ('{ "0404" = "pages/404.html" }', "error_pages.0404", "expected an error status code"),
        ('{ " 404" = "pages/404.html" }', "error_pages. 404", "expected an error status code"),
        ("{ 404 = 3 }", "error_pages.404", "expected the path of a file, got 3"),
        # (A relative path is the configuration file's directory's: "" names it.)
        ('{ 404 = "" }', "error_pages.404", "' is a directory, not a file"),
        ('{ 404 = "pages/none.html" }', "error_pages.404", "none.html' does not exist"),
        ('{ 502 = "pages" }', "error_pages.502", "pages' is a directory, not a file"),
        ('{ 502 = "pages/fifo" }', "error_pages.502", "fifo' is not a regular file"),
        ('{ 502 = "pages/huge.html" }', "error_pages.502", "huge.html' is larger than 1024 KiB"),
        ('"pages/404.html"', "error_pages", "expected a table of status codes and files"),
    ],
)
def test_a_bad_error_page_is_one_line_naming_the_status(
    tmp_path: Path, table: str, where: str, problem: str
) -> None:
    (tmp_path / "pages").mkdir()
    os.mkfifo(tmp_path / "pages" / "fifo")
    (tmp_path / "pages" / "huge.html").write_bytes(b"x" * (MAX_ERROR_PAGE + 1))
    path = write_site(tmp_path, f"error_pages = {table}\n")
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(path)})
    assert raised.value.where == f"site.toml: host[0].{where}"
    assert problem in raised.value.problem
    assert "\n" not in str(raised.value)


def test_check_config_lists_a_hosts_error_pages(tmp_path: Path) -> None:
    config = cli.load_config({"config": str(write_site(tmp_path))})
    text = describe_routing(config)
    pages = tmp_path / "pages"
    assert f"  error page 400, 401, 403, 405, 413, 429: {pages / '4xx.html'}\n" in text
    assert f"  error page 404: {pages / '404.html'}\n" in text
    assert f"  error page 500, 502, 503, 504: {pages / '50x.html'}\n" in text
    assert text.count("error page") == 3  # the plain host has none


# -- reload -------------------------------------------------------------------------------


def test_sighup_reads_the_pages_again_and_refuses_one_that_no_longer_reads(
    tmp_path: Path,
) -> None:
    """A changed page applies to the next request; one removed refuses the reload
    as any other mistake in the file does, and the pages read before keep serving.
    """
    (tmp_path / "www").mkdir()
    (tmp_path / "404.html").write_bytes(b"<p>first</p>")
    path = tmp_path / "site.toml"
    path.write_text(
        '[[host]]\nnames = ["a"]\nerror_pages = { 404 = "404.html" }\n'
        '[[host.mount]]\npath = "/static"\nstatic = "www"\n'
    )
    given: dict[str, Any] = {"config": str(path), "threads": "0", "access_log": "off"}
    reactor = MemoryReactorClock()
    service = make_service(cli.load_config(given), reactor=reactor, endpoints=[])
    service.startService()

    def missing() -> bytes:
        connection = connect(service.factory.handler)
        connection.send(b"GET /static/missing HTTP/1.1\r\nHost: a\r\n\r\n")
        [response] = parse_responses(connection.take())
        assert (response.status, response.header(b"content-type")) == (404, HTML)
        return response.body

    assert missing() == b"<p>first</p>"
    (tmp_path / "404.html").write_bytes(b"<p>second</p>")
    assert missing() == b"<p>first</p>"  # read once, at start
    cli.reload_server(reactor, service, given, [])
    assert missing() == b"<p>second</p>"
    (tmp_path / "404.html").unlink()
    cli.reload_server(reactor, service, given, [])
    assert missing() == b"<p>second</p>"
    with pytest.raises(ConfigError, match=r"host\[0\]\.error_pages\.404: file .* does not exist"):
        cli.load_config(given)
    service.stopService()


def paged_connection(tmp_path: Path, site: str) -> Connection:
    """A connection to the site ``site`` describes, with pages default.html and other.html."""
    for name in ("default", "other"):
        (tmp_path / f"{name}.html").write_bytes(b"<p>%s</p>\n" % name.encode())
    (tmp_path / "site.toml").write_text(site)
    config = cli.load_config({"config": str(tmp_path / "site.toml")})
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    connection = connect(router)
    connection.factory.error_pages = router.error_pages_for  # (as the service does)
    return connection


@pytest.mark.parametrize(
    ("request_bytes", "status", "page"),
    [
        # A target too long, a version not spoken: no Host read, the default host's.
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: other.example\r\n\r\n", 414, b"default"),
        (b"GET / HTTP/7.1\r\nHost: other.example\r\n\r\n", 505, b"default"),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, b"default"),
        # A malformed field after the Host field: the host it named.
        (
            b"GET / HTTP/1.1\r\nHost: other.example\r\nX-A: 1\r\nBad Header: x\r\n\r\n",
            400,
            b"other",
        ),
        (b"GET / HTTP/1.1\r\nhost: OTHER.example:80\r\nX-A: 1\r\n fold\r\n\r\n", 400, b"other"),
        # The absolute form names the host, as the Host field would.
        (b"GET http://other.example/ HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, b"other"),
        # Two Host fields: the first one's host.
        (
            b"GET / HTTP/1.1\r\nHost: other.example\r\nHost: a.example\r\nX: 1\r\n\r\n",
            400,
            b"other",
        ),
        # Refusals whose own words say what to do get no page.
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, None),
        # That host has no page for it: the plain answer (not the default's page).
        (
            b"GET / HTTP/1.1\r\nHost: other.example\r\n"
            + b"".join(b"X-%d: 1\r\n" % n for n in range(200))
            + b"\r\n",
            431,
            None,
        ),
    ],
)
def test_a_head_that_could_not_be_read_gets_the_page_of_the_host_found_so_far(
    tmp_path: Path, request_bytes: bytes, status: int, page: bytes | None
) -> None:
    """As nginx: the error_page of the server found so far, the listener's default
    one before the Host field.
    """
    connection = paged_connection(
        tmp_path,
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        'error_pages = { 400 = "default.html", 414 = "default.html", 505 = "default.html",'
        ' 431 = "default.html" }\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
        '[[host]]\nnames = ["other.example"]\nerror_pages = { 400 = "other.html" }\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n',
    )
    connection.send(request_bytes)
    [response] = parse_responses(connection.take())
    assert response.status == status
    if page is None:
        assert response.header(b"content-type") == PLAIN
    else:
        assert (response.header(b"content-type"), response.body) == (HTML, b"<p>%s</p>\n" % page)
    assert response.header(b"connection") == b"close"


def test_a_head_cut_off_by_the_header_timeout_gets_no_page(tmp_path: Path) -> None:
    """Nginx sends nothing there; the plain 408 is the least a client is sent."""
    connection = paged_connection(
        tmp_path,
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        'error_pages = { 408 = "default.html", 400 = "default.html" }\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n',
    )
    connection.send(b"G")
    connection.clock.advance(3600)
    [response] = parse_responses(connection.take())
    assert (response.status, response.header(b"content-type")) == (408, PLAIN)


def test_plain_http_on_a_tls_port_keeps_its_explanation(tmp_path: Path) -> None:
    connection = paged_connection(
        tmp_path,
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        'error_pages = { 400 = "default.html" }\n'
        '[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n',
    )
    [response] = parse_responses(
        connection.protocol._plain_http_refused(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    )
    assert (response.status, response.header(b"content-type")) == (400, PLAIN)
    assert b"plain HTTP" in response.body
