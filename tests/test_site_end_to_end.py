"""A whole site over real sockets: two virtual hosts and all three kinds of mount.

Issue 4 asks for one test of the configuration file as a user writes it, loaded by
the code the command line runs (:class:`twistwsgi.cli.Options`, then
:func:`~twistwsgi.cli.build_endpoints` and :func:`~twistwsgi.service.make_service`)
and served on the real reactor at ``127.0.0.1:0``:

* ``shop.test`` and ``www.shop.test`` (exact names): a WSGI application at ``/`` and a
  static directory at ``/static`` with ``cache_control``;
* ``*.example.org``, the default host: a WSGI application at ``/app`` and a proxy
  mount at ``/api`` to an in-process upstream (a second twistwsgi server running a
  validator-wrapped application that echoes its environ), one at ``/gone`` to a port
  nothing listens on, and no ``/`` mount.

Clients (``http.client`` and ``httpx``) run in threads, so the reactor keeps serving
meanwhile. Each test stops the server (which drains its connections and closes the
proxy's upstream pool), then the upstream, whose shutdown fires only once every
connection to it has closed. Nothing sleeps and nothing is timed.

A last test runs the exact example of issue 4 through ``--check-config``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import apps
from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.proxy import ProxyHandler
from twistwsgi.routing import Router
from twistwsgi.service import ServerService, make_factory, make_service
from twistwsgi.testing import capture_log_events
from twistwsgi.threads import WorkerPool

reactor: Any = global_reactor

#: The site under test; UPSTREAM is replaced by the upstream's port. ``static`` is
#: relative: it is read from the configuration file's directory.
SITE = """\
[server]
listen = ["tcp:0:interface=127.0.0.1"]
threads = 2
access_log = "off"

[[host]]
names = ["shop.test", "www.shop.test"]
[[host.mount]]
path = "/"
app = "tests.apps:environ"
[[host.mount]]
path = "/static"
static = "files"
cache_control = "public, max-age=600"

[[host]]
names = ["*.example.org"]
default = true
[[host.mount]]
path = "/app"
app = "tests.apps:environ"
[[host.mount]]
path = "/api"
proxy = "http://127.0.0.1:UPSTREAM/v1"
headers = { Strict-Transport-Security = "max-age=600", content-type = "text/html" }
gzip = true
[[host.mount]]
path = "/gone"
proxy = "http://127.0.0.1:1"
retry = false
headers = { Strict-Transport-Security = "max-age=600" }
"""

STYLE = b"body { color: #333; }\n"

#: One answer: status, header fields (names lower-cased, last value wins), body.
Answer = tuple[int, dict[str, str], bytes]


def fetch(port: int, requests: list[tuple[str, str, dict[str, str]]]) -> list[Answer]:
    """Send ``(path, host, headers)`` requests over one connection (in a thread).

    ``Host`` is set explicitly, so http.client does not make up its own.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = []
    try:
        for path, host, headers in requests:
            connection.request("GET", path, headers={"Host": host, **headers})
            response = connection.getresponse()
            body = response.read()
            fields = {name.lower(): value for name, value in response.getheaders()}
            answers.append((response.status, fields, body))
    finally:
        connection.close()
    return answers


class SiteEndToEndTests(TestCase):
    """The site of :data:`SITE` on the real reactor, clients in threads."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-site-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        (self.directory / "files").mkdir()
        (self.directory / "files" / "style.css").write_bytes(STYLE)

    async def start_upstream(self) -> int:
        """Serve ``tests.apps.environ`` as the proxy's upstream; return its port."""
        pool = WorkerPool(2, name="twistwsgi-upstream-test")
        pool.start()
        self.addCleanup(pool.stop)
        # The site's proxy mount stands in front: the application sees its fields.
        factory = make_factory(
            apps.environ, reactor=reactor, threadpool=pool, trusted_proxies=("127.0.0.1",)
        )
        port: IListeningPort = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            factory
        )

        async def stop() -> None:
            await maybeDeferred(port.stopListening)
            # Fires once every connection to the upstream has closed: after the
            # site's shutdown closed its pool, that is all of them.
            await factory.shut_down()

        self.addCleanup(stop)
        return int(getattr(port.getHost(), "port", 0))

    async def start_site(self) -> tuple[ServerService, int]:
        """Write the configuration, load it as ``twistd wsgi --config`` does, serve it."""
        upstream_port = await self.start_upstream()
        path = self.directory / "site.toml"
        path.write_text(SITE.replace("UPSTREAM", str(upstream_port)))
        options = cli.Options()
        options.parseOptions(["--config", str(path)])
        config = options.config
        service = make_service(
            config, reactor=reactor, endpoints=cli.build_endpoints(reactor, config)
        )
        service.startService()
        # Registered after the upstream's cleanup, so it runs first: the server
        # drains, then closes the proxy's pool, before the upstream shuts down.
        self.addCleanup(service.stopService)
        self.assertEqual(len(service.ports), 1)
        return service, int(getattr(service.ports[0].getHost(), "port", 0))

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await deferToThread(func, *args)

    async def test_host_routing(self) -> None:
        """Exact names win; the port and letter case of Host do not matter; a name
        no host lists lands on the default host.

        The two hosts are told apart by where ``/app/x`` goes: the shop's root
        application sees ``SCRIPT_NAME ""``, the default host's ``/app`` mount
        ``SCRIPT_NAME "/app"``.
        """
        _, port = await self.start_site()
        hosts = [
            "shop.test",
            "www.shop.test",
            "WWW.Shop.TEST",  # host names compare without case (RFC 9110 4.2.3)
            "shop.test:8080",  # and without the port (RFC 9110 7.2)
            "a.example.org",  # the wildcard
            "b.a.example.org",  # a wildcard covers deeper names too
            "unknown.test",  # no host lists it: the default host
            "shop.test.evil",  # not an exact match of shop.test
        ]
        answers = await self.in_thread(fetch, port, [("/app/x", host, {}) for host in hosts])
        seen = [json.loads(body) for _, _, body in answers]
        self.assertEqual([status for status, _, _ in answers], [200] * len(hosts))
        self.assertEqual(
            [(item["SCRIPT_NAME"], item["PATH_INFO"]) for item in seen],
            [("", "/app/x")] * 4 + [("/app", "/x")] * 4,
        )
        # The application still sees the Host the client sent.
        self.assertEqual([item["HTTP_HOST"] for item in seen], hosts)

    async def test_application_mounts_split_script_name_and_path_info(self) -> None:
        """PEP 3333: SCRIPT_NAME is the mount path, PATH_INFO the rest (decoded)."""
        _, port = await self.start_site()
        answers = await self.in_thread(
            fetch,
            port,
            [
                ("/", "shop.test", {}),
                ("/a/b%20c?q=1", "shop.test", {}),
                ("/app", "x.example.org", {}),
                ("/app/", "x.example.org", {}),
                ("/app/deep/er?page=2", "x.example.org", {}),
            ],
        )
        seen = [json.loads(body) for _, _, body in answers]
        self.assertEqual(
            [(item["SCRIPT_NAME"], item["PATH_INFO"], item["QUERY_STRING"]) for item in seen],
            [
                ("", "/", ""),
                ("", "/a/b c", "q=1"),
                ("/app", "", ""),
                ("/app", "/", ""),
                ("/app", "/deep/er", "page=2"),
            ],
        )

    async def test_static_mount_serves_and_revalidates(self) -> None:
        """A file comes with a strong ETag and the configured Cache-Control; sending
        the ETag back gets 304 with no body and the same validators (RFC 9110
        13.1.2, 15.4.5).
        """
        _, port = await self.start_site()
        [first] = await self.in_thread(fetch, port, [("/static/style.css", "shop.test", {})])
        status, fields, body = first
        self.assertEqual((status, body), (200, STYLE))
        self.assertEqual(fields["cache-control"], "public, max-age=600")
        self.assertEqual(fields["content-length"], str(len(STYLE)))
        self.assertTrue(fields["content-type"].startswith("text/css"))
        etag = fields["etag"]
        self.assertTrue(etag.startswith('"') and etag.endswith('"'), etag)  # strong
        [again] = await self.in_thread(
            fetch, port, [("/static/style.css", "shop.test", {"If-None-Match": etag})]
        )
        status, fields, body = again
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(fields["etag"], etag)
        self.assertEqual(fields["cache-control"], "public, max-age=600")

    async def test_static_prefix_matches_on_segment_boundaries(self) -> None:
        """``/staticfoo`` is not under ``/static``: the root application answers it.
        A missing file under the static mount is 404 from the static mount.
        """
        _, port = await self.start_site()
        answers = await self.in_thread(
            fetch,
            port,
            [
                ("/staticfoo", "shop.test", {}),
                ("/staticfoo/style.css", "shop.test", {}),
                ("/static/missing.css", "shop.test", {}),
            ],
        )
        foo, foo_file, missing = answers
        self.assertEqual(foo[0], 200)
        self.assertEqual(json.loads(foo[2])["PATH_INFO"], "/staticfoo")
        self.assertEqual(foo_file[0], 200)
        self.assertEqual(json.loads(foo_file[2])["PATH_INFO"], "/staticfoo/style.css")
        self.assertEqual(missing[0], 404)
        self.assertNotIn("application/json", missing[1].get("content-type", ""))

    async def test_proxy_mount_forwards_with_forwarding_fields(self) -> None:
        """The proxy mount replaces ``/api`` with the upstream URL's ``/v1``, keeps the
        query, passes Host on, and sets X-Forwarded-For/-Proto/-Host and Forwarded
        (RFC 7239); a forwarding field from an untrusted client is replaced.
        """
        _, port = await self.start_site()

        def client() -> list[httpx.Response]:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as session:
                return [
                    session.get(
                        "/api/users?page=2",
                        headers={"Host": "shop.example.org", "X-Forwarded-For": "203.0.113.9"},
                    ),
                    session.get("/api", headers={"Host": "unknown.test"}),
                ]

        users, root = await self.in_thread(client)
        self.assertEqual(users.status_code, 200)
        # The mount's headers are added; the upstream's own Content-Type is kept.
        self.assertEqual(users.headers.get_list("strict-transport-security"), ["max-age=600"])
        self.assertEqual(users.headers.get_list("content-type"), ["application/json"])
        # gzip = true: the upstream's JSON is compressed on the way (httpx decodes it).
        self.assertEqual(users.headers.get("content-encoding"), "gzip")
        seen = users.json()
        self.assertEqual(
            (seen["SCRIPT_NAME"], seen["PATH_INFO"], seen["QUERY_STRING"]),
            ("", "/v1/users", "page=2"),
        )
        self.assertEqual(seen["HTTP_HOST"], "shop.example.org")
        self.assertEqual(seen["HTTP_X_FORWARDED_FOR"], "127.0.0.1")
        self.assertEqual(seen["HTTP_X_FORWARDED_PROTO"], "http")
        self.assertEqual(seen["HTTP_X_FORWARDED_HOST"], "shop.example.org")
        self.assertEqual(seen["HTTP_FORWARDED"], "for=127.0.0.1;host=shop.example.org;proto=http")
        # The upstream is a different server: its own port, not the site's.
        self.assertNotEqual(seen["SERVER_PORT"], str(port))
        self.assertEqual(root.status_code, 200)
        self.assertEqual(root.json()["PATH_INFO"], "/v1")
        self.assertEqual(root.json()["HTTP_X_FORWARDED_HOST"], "unknown.test")

    async def test_a_proxy_error_carries_the_mount_headers(self) -> None:
        """The proxy's own 502 gets the mount's headers, as nginx's add_header with
        always: an HSTS policy holds on the error page too.
        """
        _, port = await self.start_site()
        with capture_log_events():
            [(status, fields, _)] = await self.in_thread(
                fetch, port, [("/gone", "a.example.org", {})]
            )
        self.assertEqual(status, 502)
        self.assertEqual(fields["strict-transport-security"], "max-age=600")

    async def test_paths_no_mount_covers_are_404(self) -> None:
        """The default host has no ``/`` mount: ``/``, ``/static/...`` (another host's
        mount) and ``/apiary`` (not on a segment boundary of ``/api``) are 404.
        """
        service, port = await self.start_site()
        answers = await self.in_thread(
            fetch,
            port,
            [
                ("/", "a.example.org", {}),
                ("/static/style.css", "a.example.org", {}),
                ("/apiary", "a.example.org", {}),
                ("/application", "a.example.org", {}),
            ],
        )
        self.assertEqual([status for status, _, _ in answers], [404] * 4)
        # None of them reached the upstream's pool.
        router = service.factory.handler
        assert isinstance(router, Router)
        proxies = [h for h in router.table.handlers if isinstance(h, ProxyHandler)]
        self.assertEqual(len(proxies), 2)  # /api and /gone
        for proxy in proxies:
            self.assertEqual([len(peer.target.connections) for peer in proxy.group.peers], [0])


#: The example configuration of issue 4, exactly as written there.
ISSUE_4_EXAMPLE = """\
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
static = "/srv/shop/static"
cache_control = "public, max-age=31536000, immutable"

[[host]]
names = ["*.example.org"]          # wildcard
default = true                      # unknown Host headers land here
[[host.mount]]
path = "/api"
proxy = "http://127.0.0.1:9000"
"""


def test_issue_4_example_passes_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config site.toml --check-config`` on the issue's example (its files moved
    to a temporary directory, its application replaced by an importable one) parses
    both endpoints (the TLS key and certificate are loaded), imports the application,
    prints the routing table naming every host and mount, and exits 0.

    tests/test_config_file.py already checks that the example *loads*; this runs the
    whole check the command line makes.
    """
    key, certificate = write_self_signed_certificate(tmp_path)
    (tmp_path / "static").mkdir()
    access_log = tmp_path / "access.log"
    text = (
        ISSUE_4_EXAMPLE.replace("/etc/tls/key.pem", str(key))
        .replace("/etc/tls/cert.pem", str(certificate))
        .replace("/var/log/twistwsgi/access.log", str(access_log))
        .replace("/srv/shop/static", str(tmp_path / "static"))
        .replace("shop.wsgi:application", "tests.apps:hello")
    )
    path = tmp_path / "site.toml"
    path.write_text(text)
    options = cli.Options()
    options.parseOptions(["--config", str(path), "--check-config"])
    with pytest.raises(SystemExit) as raised:
        cli.makeService(options)
    assert raised.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"listen: tcp:80, ssl:443:privateKey={key}:certKey={certificate}"
    assert lines[1] == "threads: 16"
    shop = lines.index("host example.com, www.example.com")
    org = lines.index("host *.example.org  [default]")
    assert [line.split() for line in lines[shop + 1 : org]] == [
        ["/static", "static", str(tmp_path / "static")],
        ['cache_control="public,', "max-age=31536000,", 'immutable"'],
        ["/", "app", "tests.apps:hello"],
    ]
    assert [line.split() for line in lines[org + 1 : -1]] == [
        ["/api", "proxy", "http://127.0.0.1:9000"],
    ]
    assert lines[-1] == "configuration OK"
