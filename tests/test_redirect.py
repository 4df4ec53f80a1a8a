"""https_redirect: requests not over TLS are sent to the same URL on https.

In memory through the routing table the configuration builds (raw request bytes,
h11 reading the answers), the configuration's checks, and once with curl following
the redirect from a plain port to a TLS one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import alsoProvides

from tests.live import port_of, serve_live
from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.http.request import UNREAD_BODY, RequestHead
from twistwsgi.http.settings import HttpSettings
from twistwsgi.routing import Router
from twistwsgi.service import make_service, standard_builders
from twistwsgi.site import SiteBuilder, describe_routing
from twistwsgi.testing import ParsedResponse, connect, parse_responses, request_head

TLS_LISTENER = "ssl:8443:privateKey=key.pem:certKey=cert.pem"


def write_site(directory: Path, server: str, hosts: str) -> Path:
    site = directory / "site.toml"
    site.write_text(f"[server]\n{server}\n{hosts}")
    return site


def host(names: str, extra: str = "") -> str:
    """A [[host]] table serving tests.apps:hello at /, with ``extra`` keys."""
    mount = 'mount = [{path = "/", app = "tests.apps:hello"}]'
    return f"[[host]]\nnames = [{names}]\n{extra}\n{mount}\n"


def load(directory: Path, server: str, hosts: str, **given: Any) -> ServerConfig:
    return cli.load_config({"config": str(write_site(directory, server, hosts)), **given})


def config_error(directory: Path, server: str, hosts: str, **given: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        load(directory, server, hosts, **given)
    return str(raised.value)


def ask(
    config: ServerConfig,
    request: bytes,
    *,
    tls: bool = False,
    peer: Any = None,
    local: Any = None,
    method: bytes = b"GET",
) -> ParsedResponse:
    """Send one raw request through the routing table ``config`` builds; its answer.

    Upstreams of proxy mounts are never reached: their connections stay pending.
    """
    memory = MemoryReactorClock()
    builders = standard_builders(memory)
    table = SiteBuilder(reactor=memory, threadpool=None, builders=builders).build(config)
    transport = StringTransport(
        hostAddress=local or IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 54321),
    )
    if tls:
        alsoProvides(transport, ISSLTransport)
    connection = connect(Router(table), transport=transport)
    connection.protocol.dataReceived(request)
    [response] = parse_responses(transport.value(), [method])
    return response


def get(path: bytes = b"/", host_field: bytes = b"a.test", *more: bytes) -> bytes:
    fields = b"".join(field + b"\r\n" for field in more)
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host_field + b"\r\n" + fields + b"\r\n"


@pytest.fixture
def redirecting(tmp_path: Path) -> ServerConfig:
    """a.test redirected (the server's choice, to the TLS listener's 8443)."""
    return load(
        tmp_path,
        f'listen = ["tcp:8080", "{TLS_LISTENER}"]\nhttps_redirect = "on"',
        host('"a.test"'),
    )


# -- the answer ---------------------------------------------------------------------------


def test_a_get_not_over_tls_is_moved_to_https_with_path_and_query(
    redirecting: ServerConfig,
) -> None:
    """As nginx's return 301 https://$host$request_uri, on the TLS listener's port; the
    host name is the request's, without its port and in lower case.
    """
    response = ask(redirecting, get(b"/a/b%20c?x=1&y", b"A.Test:8080"))
    assert response.status == 301
    assert response.header(b"location") == b"https://a.test:8443/a/b%20c?x=1&y"
    assert response.body == b"Moved Permanently\n"


def test_head_is_moved_without_a_body(redirecting: ServerConfig) -> None:
    request = b"HEAD /x HTTP/1.1\r\nHost: a.test\r\n\r\n"
    response = ask(redirecting, request, method=b"HEAD")
    assert (response.status, response.body) == (301, b"")
    assert response.header(b"location") == b"https://a.test:8443/x"


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
def test_other_methods_get_308_which_keeps_the_method_and_body(
    redirecting: ServerConfig, method: bytes
) -> None:
    """After a 301, browsers send a POST again as a GET without its body (RFC 9110
    §15.4.2); 308 is followed with the same method and body (§15.4.9).
    """
    request = method + b" /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc"
    response = ask(redirecting, request)
    assert response.status == 308
    assert response.header(b"location") == b"https://a.test:8443/form"


def test_over_tls_the_request_is_served(redirecting: ServerConfig) -> None:
    assert ask(redirecting, get(), tls=True).status == 200


def test_options_asterisk_is_not_redirected(redirecting: ServerConfig) -> None:
    """OPTIONS * asks about the server, not a resource: no URL to redirect to."""
    response = ask(redirecting, b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert response.status != 301 and response.header(b"location") is None


def test_the_absolute_form_keeps_its_path_and_query(redirecting: ServerConfig) -> None:
    request = b"GET http://a.test:8080/p?q=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n"
    assert ask(redirecting, request).header(b"location") == b"https://a.test:8443/p?q=1"


def test_port_443_is_left_out_of_the_url(tmp_path: Path) -> None:
    config = load(tmp_path, 'listen = ["tcp:80"]\nhttps_redirect = 443', host('"a.test"'))
    assert ask(config, get(b"/x")).header(b"location") == b"https://a.test/x"


def test_an_ipv6_literal_host_stays_in_brackets(tmp_path: Path) -> None:
    config = load(
        tmp_path, 'listen = ["tcp:80"]\nhttps_redirect = 443', host('"a.test"', "default = true")
    )
    response = ask(config, get(b"/", b"[0:0::1]:8080"))
    assert response.header(b"location") == b"https://[::1]/"


# -- mounts left out ------------------------------------------------------------------------


def exempting(directory: Path) -> ServerConfig:
    mounts = (
        "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
        "[[host.mount]]\npath = '/healthz'\nreturn = '200 ok'\nhttps_redirect = false\n"
        "[[host.mount]]\npath = '/healthz/deep'\nreturn = '200 deep'\n"
    )
    return load(
        directory,
        'listen = ["tcp:80"]\nhttps_redirect = 443',
        "[[host]]\nnames = ['a.test']\n" + mounts,
    )


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"/healthz", 200),
        (b"/healthz/x?y", 200),
        (b"//healthz", 200),  # (a run of slashes counts as one, as routing reads it)
        (b"/x/../healthz", 200),
        (b"/healthz/deep", 301),  # another mount, redirected
        (b"/healthzz", 301),
        (b"/", 301),
    ],
)
def test_a_mount_may_answer_plain_http_where_its_host_redirects(
    tmp_path: Path, target: bytes, status: int
) -> None:
    """As an nginx port-80 server keeps location /healthz beside its return 301."""
    assert ask(exempting(tmp_path), get(target)).status == status


def test_a_mount_left_out_takes_its_body_limit_again(tmp_path: Path) -> None:
    """Answered by its mount, not by the redirect: the server's body limit applies."""
    mounts = (
        "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
        "[[host.mount]]\npath = '/hook'\napp = 'tests.apps:hello'\nhttps_redirect = false\n"
    )
    config = load(
        tmp_path,
        'listen = ["tcp:80"]\nhttps_redirect = 443',
        "[[host]]\nnames = ['a.test']\n" + mounts,
    )
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    assert router.body_limit(head_for(b"/hook/x")) is None
    assert router.body_limit(head_for(b"/other")) == UNREAD_BODY


def head_for(target: bytes) -> RequestHead:
    return request_head(target, method=b"POST", content_length=10)


def test_static_files_and_their_partner_are_one_place(tmp_path: Path) -> None:
    """Left out on either, the pair at one path answers plain HTTP."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "token").write_text("acme")
    mounts = (
        f"[[host.mount]]\npath = '/.well-known'\nstatic = '{tmp_path / 'www'}'\n"
        "fallthrough = true\ndotfiles = true\nhttps_redirect = false\n"
        "[[host.mount]]\npath = '/.well-known'\napp = 'tests.apps:hello'\n"
        "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
    )
    config = load(
        tmp_path,
        'listen = ["tcp:80"]\nhttps_redirect = 443',
        "[[host]]\nnames = ['a.test']\n" + mounts,
    )
    assert ask(config, get(b"/.well-known/token")).body == b"acme"
    assert ask(config, get(b"/.well-known/hello")).status == 200
    assert ask(config, get(b"/hello")).status == 301


def test_true_is_refused_on_a_mount(tmp_path: Path) -> None:
    mounts = "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\nhttps_redirect = true\n"
    message = config_error(tmp_path, "", "[[host]]\nnames = ['a.test']\n" + mounts)
    assert message.startswith("site.toml: host[0].mount[0].https_redirect: only false"), message


# -- a request without a host name (HTTP/1.0) -------------------------------------------


def test_without_host_the_hosts_first_plain_name_stands_in(tmp_path: Path) -> None:
    """As nginx's $host falls back to the server_name: wildcards and regular
    expressions are no names.
    """
    config = load(
        tmp_path,
        'listen = ["tcp:80"]\nhttps_redirect = 443',
        host(r"""'*.a.test', 'mail.*', '~^w\d$', 'www.a.test'""", "default = true"),
    )
    response = ask(config, b"GET /p HTTP/1.0\r\n\r\n")
    assert response.header(b"location") == b"https://www.a.test/p"


def test_without_host_a_short_form_names_its_domain(tmp_path: Path) -> None:
    """Nginx's .example.org is example.org in its $server_name."""
    config = load(
        tmp_path,
        'listen = ["tcp:80"]\nhttps_redirect = 443',
        host(r"""'~^w\d$', '.B.test', 'www.a.test'""", "default = true"),
    )
    response = ask(config, b"GET /p HTTP/1.0\r\n\r\n")
    assert response.header(b"location") == b"https://b.test/p"


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (IPv4Address("TCP", "192.0.2.7", 80), b"https://192.0.2.7/p"),
        (IPv6Address("TCP", "2001:db8::7", 80), b"https://[2001:db8::7]/p"),
    ],
)
def test_without_host_or_names_the_address_it_came_to_stands_in(
    tmp_path: Path, local: Any, expected: bytes
) -> None:
    config = load(tmp_path, "", "", app="tests.apps:hello", listen="tcp:80", https_redirect="443")
    assert ask(config, b"GET /p HTTP/1.0\r\n\r\n", local=local).header(b"location") == expected


def test_without_any_name_on_a_unix_socket_the_request_is_refused(tmp_path: Path) -> None:
    """No URL can be made: a 400 saying so, rather than serving it over plain HTTP."""
    config = load(tmp_path, "", "", app="tests.apps:hello", listen="tcp:80", https_redirect="443")
    unix = UNIXAddress(None)
    response = ask(config, b"GET /p HTTP/1.0\r\n\r\n", local=unix, peer=unix)
    assert response.status == 400
    assert b"no host name to redirect" in response.body


# -- behind a proxy that ends TLS -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ((b"X-Forwarded-Proto: https",), 200),
        ((b"X-Forwarded-Proto: http",), 301),
        ((b"Forwarded: for=192.0.2.1;proto=https",), 200),
        ((b"X-Forwarded-Proto: http", b"X-Forwarded-Proto: https"), 200),  # the last
        ((b"X-Forwarded-Proto: https, http",), 301),
        ((), 301),
    ],
)
def test_a_trusted_proxy_saying_https_is_served(
    tmp_path: Path, fields: tuple[bytes, ...], status: int
) -> None:
    """TLS ended at a load balancer in trusted_proxies, which forwards both schemes
    here: what it says the client used decides, as for wsgi.url_scheme.
    """
    config = load(
        tmp_path,
        'listen = ["tcp:8080"]\nhttps_redirect = 443\ntrusted_proxies = ["10.0.0.0/8"]',
        host('"a.test"'),
    )
    proxy = IPv4Address("TCP", "10.1.2.3", 40000)
    assert ask(config, get(b"/", b"a.test", *fields), peer=proxy).status == status


def test_an_untrusted_client_saying_https_is_redirected(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'listen = ["tcp:8080"]\nhttps_redirect = 443\ntrusted_proxies = ["10.0.0.0/8"]',
        host('"a.test"'),
    )
    stranger = IPv4Address("TCP", "192.0.2.9", 40000)
    response = ask(config, get(b"/", b"a.test", b"X-Forwarded-Proto: https"), peer=stranger)
    assert response.status == 301


# -- the configuration -----------------------------------------------------------------------


def test_each_host_may_choose_its_own(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f'listen = ["tcp:8080", "{TLS_LISTENER}"]\nhttps_redirect = "on"',
        host('"a.test"')
        + host('"b.test"', 'https_redirect = "off"')
        + host('"c.test"', "https_redirect = 443"),
    )
    assert [h.https_redirect for h in config.hosts] == [8443, None, 443]
    assert ask(config, get(b"/", b"b.test")).status == 200
    assert ask(config, get(b"/", b"c.test")).header(b"location") == b"https://c.test/"
    assert "requests not over TLS: redirected to https://HOST:8443/..." in describe_routing(config)


@pytest.mark.parametrize(
    ("listen", "port"),
    [
        ("ssl:443:privateKey=k.pem", 443),
        ("ssl:port=9443:privateKey=k.pem", 9443),
        ("ssl:interface=127.0.0.1:7443:privateKey=k.pem", 7443),
    ],
)
def test_on_is_the_port_of_the_first_tls_listener(tmp_path: Path, listen: str, port: int) -> None:
    config = load(
        tmp_path,
        f'listen = ["tcp:80", "{listen}", "ssl:1443:privateKey=k.pem"]',
        host('"a.test"', "https_redirect = true"),
    )
    assert config.hosts[0].https_redirect == port


def test_the_command_line_turns_it_on_for_its_hosts(tmp_path: Path) -> None:
    config = cli.load_config(
        {
            "app": "tests.apps:hello",
            "listen": ["tcp:80", TLS_LISTENER],
            "https_redirect": "on",
            "vhost": ["b.test=app:tests.apps:hello"],
        }
    )
    assert [h.https_redirect for h in config.hosts] == [8443, 8443]


def test_on_without_a_tls_listener_is_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'listen = ["tcp:80"]\nhttps_redirect = "on"', host('"a.test"'))
    assert message == (
        "site.toml: server.https_redirect: on needs an ssl: listener; without one, give"
        " the port clients reach TLS on"
    )


def test_on_for_a_host_names_the_hosts_key(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, 'listen = ["tcp:80"]', host('"a.test"', 'https_redirect = "on"')
    )
    assert message.startswith("site.toml: host[0].https_redirect: on needs an ssl: listener")


def test_a_server_choice_every_host_overrides_is_no_error(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'listen = ["tcp:80"]\nhttps_redirect = "on"',
        host('"a.test"', "https_redirect = 443"),
    )
    assert config.hosts[0].https_redirect == 443


def test_a_tls_listener_on_a_port_chosen_by_the_system_needs_the_port(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, 'listen = ["ssl:0:privateKey=k.pem"]\nhttps_redirect = "on"', host('"a.test"')
    )
    assert "is not known before it listens: give the port clients reach TLS on" in message


@pytest.mark.parametrize("value", ['"sometimes"', "0", "70000", '"-1"', '"²"', '"٤٤٣"'])
def test_a_value_that_is_not_on_off_or_a_port_is_an_error(tmp_path: Path, value: str) -> None:
    message = config_error(
        tmp_path, f'listen = ["tcp:80"]\nhttps_redirect = {value}', host('"a.test"')
    )
    assert message.startswith("site.toml: server.https_redirect: ")
    assert "on, off or a port number" in message or "a port is 1 to 65535" in message


def test_sighup_applies_a_new_choice(tmp_path: Path) -> None:
    """The routing table is rebuilt on reload, the redirect with it."""
    site = write_site(tmp_path, 'listen = ["tcp:80"]', host('"a.test"'))
    config = cli.load_config({"config": str(site)})
    service = make_service(config, reactor=Clock(), endpoints=[])
    assert ask(config, get()).status == 200
    write_site(tmp_path, 'listen = ["tcp:80"]\nhttps_redirect = 443', host('"a.test"'))
    assert service.reload(cli.load_config({"config": str(site)}))
    transport = StringTransport()
    protocol = service.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    protocol.makeConnection(transport)
    protocol.dataReceived(get())
    [response] = parse_responses(transport.value())
    assert response.status == 301


def test_a_reload_that_changes_listen_keeps_the_port_in_use(tmp_path: Path) -> None:
    """A changed listen waits for a restart; "on" must keep sending clients where TLS is
    served now, not to the port the file names for later.
    """
    from twisted.internet.testing import MemoryReactorClock

    from twistwsgi.testing import capture_log_events

    server = 'listen = ["tcp:8080", "ssl:8443:privateKey=k.pem"]\nhttps_redirect = "on"'
    site = write_site(tmp_path, server, host('"a.test"'))
    given = {"config": str(site)}
    service = make_service(cli.load_config(given), reactor=MemoryReactorClock(), endpoints=[])
    write_site(tmp_path, server.replace("8443", "9443"), host('"a.test"'))
    with capture_log_events() as events:
        cli.reload_server(MemoryReactorClock(), service, given, [])
    assert any("listen changed" in event["log_format"] for event in events)
    assert service.config is not None
    assert service.config.hosts[0].https_redirect == 8443


# -- a real client ------------------------------------------------------------------------------


class CurlTests(TestCase):
    """curl follows the redirect from a plain port to a TLS one, the name verified."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def test_curl_follows_to_https(self) -> None:
        if shutil.which("curl") is None:
            self.skipTest("curl is not installed (make test installs it)")
        key, cert = write_self_signed_certificate(self.directory, names=("a.test",))
        tls_port = await self.free_port()
        service = serve_live(
            self,
            {
                "app": "tests.apps:hello",
                "listen": [
                    "tcp:0:interface=127.0.0.1",
                    f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
                ],
                "https_redirect": "on",
                "threads": "0",
                "access_log": "off",
            },
        )
        plain = port_of(service)
        result = await deferToThread(
            subprocess.run,
            [
                "curl",
                "-sS",
                "-L",
                "--max-time",
                "20",
                "--resolve",
                f"a.test:{plain}:127.0.0.1",
                "--resolve",
                f"a.test:{tls_port}:127.0.0.1",
                "--cacert",
                str(cert),
                "-w",
                "\n%{http_code} %{num_redirects} %{url_effective}",
                f"http://a.test:{plain}/hello?x=1",
            ],
            capture_output=True,
        )
        body, _, summary = result.stdout.decode().rpartition("\n")
        assert body == "Hello, World!", result.stderr
        assert summary == f"200 1 https://a.test:{tls_port}/hello?x=1"

    async def free_port(self) -> int:
        """A port free now on 127.0.0.1 (the TLS listener's must be known beforehand)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


# -- before the body limit -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "status"),
    [(False, 308), (True, 413)],
)
def test_an_upload_too_large_over_plain_http_is_redirected_not_refused(
    redirecting: ServerConfig, tls: bool, status: int
) -> None:
    """As nginx's return 301 (server rewrite phase) comes before its
    client_max_body_size check: the client is sent to https, where the limit applies.
    """
    memory = MemoryReactorClock()
    router = Router(SiteBuilder(reactor=memory, threadpool=None).build(redirecting))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 54321),
    )
    if tls:
        alsoProvides(transport, ISSLTransport)
    connection = connect(router, settings=HttpSettings(max_body=1000), transport=transport)
    connection.factory.body_limit = router.body_limit  # (as the service does)
    connection.protocol.dataReceived(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    )
    [response] = parse_responses(transport.value(), [b"POST"])
    assert response.status == status
    if status == 308:
        assert response.header(b"location") == b"https://a.test:8443/upload"


def test_a_redirected_upload_closes_the_connection_and_reads_no_more_of_it(
    redirecting: ServerConfig,
) -> None:
    """Unlimited there, its body is not read on (nginx reads it to discard it for
    lingering_time at most): the connection closes after the redirect.
    """
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(redirecting))
    connection = connect(router, settings=HttpSettings(max_body=1000))
    connection.factory.body_limit = router.body_limit  # (as the service does)
    connection.protocol.dataReceived(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 99999999999\r\n\r\n"
        + b"x" * 100_000  # (past what is received before a request is handed on)
    )
    [response] = parse_responses(connection.transport.value(), [b"POST"], complete=False)
    assert response.status == 308
    assert response.header(b"connection") == b"close"
    assert connection.transport.disconnecting or connection.protocol._read.name == "STOPPED"


def test_an_upload_is_redirected_from_its_head(redirecting: ServerConfig) -> None:
    """The answer does not wait for the body (nor for its first 64 KiB): a client
    sending a large upload slowly learns at once where to send it.
    """
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(redirecting))
    connection = connect(router, settings=HttpSettings(max_body=1000))
    connection.factory.body_limit = router.body_limit  # (as the service does)
    connection.protocol.dataReceived(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 10
    )
    [response] = parse_responses(connection.transport.value(), [b"POST"], complete=False)
    assert response.status == 308


def test_behind_a_proxy_that_says_https_the_body_limit_applies(tmp_path: Path) -> None:
    """Not redirected, so not let past the limit either."""
    config = load(
        tmp_path,
        'listen = ["tcp:8080", "ssl:8443:privateKey=k.pem"]\nhttps_redirect = "on"\n'
        'trusted_proxies = ["10.0.0.0/8"]',
        host('"a.test"'),
    )
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "10.0.0.5", 40000),
    )
    connection = connect(router, settings=HttpSettings(max_body=1000), transport=transport)
    connection.factory.body_limit = router.body_limit
    connection.protocol.dataReceived(
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    [response] = parse_responses(transport.value(), [b"POST"])
    assert response.status == 413
