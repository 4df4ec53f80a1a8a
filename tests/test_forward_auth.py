"""auth_request: each request asked of an authentication service first.

In memory: the service is tests.test_proxy's fake upstream (its questions read by
h11), in front of an application that shows what it was given; the configuration's
checks; once for real, with a Twisted authentication service and curl.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from tests.live import port_of, serve_live
from tests.test_proxy import Setup, UpstreamConnection, make_proxy, one_response
from twistwsgi import cli
from twistwsgi.access import GuardedHandler
from twistwsgi.config import ConfigError
from twistwsgi.forward_auth import MAX_ANSWER, ForwardAuth, auth_base_url
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.exchange import Exchange
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder
from twistwsgi.testing import (
    Connection,
    SynchronousThreadPool,
    capture_log_events,
    connect,
    parse_responses,
    request_head,
)


class Shows:
    """The protected handler: answers with the fields it was given, and the body."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    def handle(self, exchange: Exchange) -> None:
        self.seen.append(exchange)
        request = exchange.request
        lines = b"".join(name + b": " + value + b"\n" for name, value in request.headers)
        if not request.has_body:
            self._answer(exchange, lines)
            return
        pieces: list[bytes] = []
        shows = self

        class Receiver:
            def body_received(self, data: bytes) -> None:
                pieces.append(data)

            def body_finished(self) -> None:
                shows._answer(exchange, lines + b"body: " + b"".join(pieces) + b"\n")

            def body_failed(self, reason: Exception) -> None:
                pass

        exchange.receive_body(Receiver())
        exchange.continue_body()

    @staticmethod
    def _answer(exchange: Exchange, body: bytes) -> None:
        exchange.start_response(200, [(b"Content-Length", b"%d" % len(body))])
        exchange.finish(body)


def gated(
    copied: tuple[bytes, ...] = (b"x-auth-request-user",),
    *,
    cookies: bool = False,
    protected: Any = None,
) -> tuple[Setup, Shows, Connection]:
    """A client of a handler behind an authentication service (the fake upstream)."""
    setup = make_proxy(("http://10.0.0.9:4180",), proxy_redirect="off")
    gate = ForwardAuth(
        setup.handler, b"/oauth2/auth?check=1", copied, "test mount", cookies=cookies
    )
    shows = Shows()
    client = connect(GuardedHandler(protected or shows, None, gate=gate), clock=setup.clock)
    return setup, shows, client


def service(setup: Setup) -> UpstreamConnection:
    return setup.endpoint().last


ASK = (
    b"GET /app/page?x=1 HTTP/1.1\r\nHost: shop.example\r\nCookie: session=abc\r\n"
    b"X-Original-URI: /forged\r\nX_Forwarded_Uri: /forged\r\n"
    b"X-Original-URL: https://public.example/\r\nX-Original-Anything: forged\r\n"
    # A client's Connection naming the gate's fields, and the copied one.
    b"Connection: X-Original-URI, X-Forwarded-Uri, X-Original-Method, X-Auth-Request-User\r\n"
    b"X-Auth-Request-User: mallory\r\nX_Auth_Request_User: mallory\r\n\r\n"
)


def test_the_question_carries_the_clients_credentials_and_what_it_asked() -> None:
    setup, _, client = gated()
    client.send(ASK)
    question, body = service(setup).request()
    assert (question.method, question.target) == (b"GET", b"/oauth2/auth?check=1")
    assert body == b""
    fields = {name: value for name, value in question.headers}
    assert fields[b"cookie"] == b"session=abc"
    assert fields[b"host"] == b"shop.example"
    assert fields[b"x-forwarded-for"] == b"127.0.0.1"
    assert fields[b"x-forwarded-host"] == b"shop.example"
    assert fields[b"x-forwarded-proto"] == b"http"
    # What the client asked, written by the gate alone (the client's own dropped).
    for name in (b"x-original-uri", b"x-forwarded-uri"):
        assert [v for n, v in question.headers if n == name] == [b"/app/page?x=1"]
    for name in (b"x-original-method", b"x-forwarded-method"):
        assert [v for n, v in question.headers if n == name] == [b"GET"]
    assert [v for n, v in question.headers if n == b"x-original-url"] == [
        b"http://shop.example/app/page?x=1"
    ]
    assert b"x_forwarded_uri" not in fields
    assert b"x-original-anything" not in fields
    assert b"connection" not in fields or b"original" not in fields[b"connection"].lower()


@pytest.mark.parametrize(
    "target",
    [b"/public/%2e%2e/admin", b"/public/../admin", b"/public/.%2E/admin", b"/public/..%2Fadmin"],
)
def test_the_service_is_asked_about_the_path_that_is_served(target: bytes) -> None:
    """Not the raw one: a rule letting /public/ through must not let /admin through
    by way of /public/%2e%2e/admin, which the router serves as /admin.
    """
    setup, _, client = gated()
    client.send(b"GET " + target + b"?q=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    question, _ = service(setup).request()
    asked = dict(question.headers)
    assert asked[b"x-original-uri"] == b"/admin?q=1"
    assert asked[b"x-forwarded-uri"] == b"/admin?q=1"
    assert asked[b"x-original-url"] == b"http://shop.example/admin?q=1"


def trusting_gate() -> tuple[Setup, Connection]:
    setup = make_proxy(("http://10.0.0.9:4180",), proxy_redirect="off")
    gate = ForwardAuth(setup.handler, b"/auth", (), "test mount", TrustedProxies(("127.0.0.1",)))
    client = connect(GuardedHandler(Shows(), None, gate=gate), clock=setup.clock)
    return setup, client


def test_from_a_trusted_proxy_the_service_gets_the_client_as_resolved() -> None:
    """One address, as the rules resolve it (not a chain whose first entry the client
    wrote), the host routed on, and the scheme the application is told.
    """
    setup, client = trusting_gate()
    client.send(
        b"GET /x HTTP/1.1\r\nHost: app.example\r\n"
        b"X-Forwarded-For: 10.1.2.3, 203.0.113.9\r\nX-Real-IP: 10.0.0.1\r\n"
        b"X-Forwarded-Host: public.example\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    question, _ = service(setup).request()
    asked = dict(question.headers)
    assert [v for n, v in question.headers if n == b"x-forwarded-for"] == [b"203.0.113.9"]
    assert asked[b"x-forwarded-host"] == b"app.example"
    assert asked[b"x-forwarded-proto"] == b"https"
    assert asked[b"x-original-url"] == b"https://app.example/x"
    assert b"x-real-ip" not in asked
    assert asked[b"forwarded"].count(b"for=") == 1


def test_from_an_untrusted_client_its_forwarding_fields_are_not_believed() -> None:
    setup, _, client = gated()
    client.send(
        b"GET /x HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.1.2.3\r\n"
        b"X-Forwarded-Host: public.example\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    asked = dict(service(setup).request()[0].headers)
    assert asked[b"x-forwarded-for"] == b"127.0.0.1"
    assert asked[b"x-forwarded-host"] == b"app.example"
    assert asked[b"x-original-url"] == b"http://app.example/x"


def test_a_2xx_lets_the_request_through_with_the_services_fields() -> None:
    setup, shows, client = gated()
    client.send(ASK)
    service(setup).respond(
        b"HTTP/1.1 202 Accepted\r\nX-Auth-Request-User: alice\r\nX-Other: no\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    response = one_response(client)
    assert response.status == 200
    assert b"X-Auth-Request-User: alice\n" in response.body
    assert b"mallory" not in response.body  # the client's, in both spellings, gone
    assert b"X-Other" not in response.body  # not a field asked for
    assert b"Cookie: session=abc\n" in response.body
    assert len(shows.seen) == 1


RENEWED = (
    b"HTTP/1.1 202 Accepted\r\nSet-Cookie: _oauth2_proxy_0=new0; Path=/; HttpOnly\r\n"
    b"X-Auth-Request-User: alice\r\nSet-Cookie: _oauth2_proxy_1=new1; Path=/\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def set_cookies(response: Any) -> list[bytes]:
    return [value for name, value in response.headers if name == b"set-cookie"]


class SetsCookie:
    """A protected handler that sets a cookie of its own, with the given status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status

    def handle(self, exchange: Exchange) -> None:
        exchange.start_response(
            self.status, [(b"Set-Cookie", b"theme=dark"), (b"Content-Length", b"2")]
        )
        exchange.finish(b"ok")


@pytest.mark.parametrize("status", [200, 404, 500])
def test_auth_response_cookies_go_to_the_client_with_any_answer(status: int) -> None:
    """With auth_response_cookies, every Set-Cookie line of the 2xx (a session split
    over two cookies) follows the handler's own, whatever its status; without it,
    none does.
    """
    for cookies, expected in (
        (
            True,
            [
                b"theme=dark",
                b"_oauth2_proxy_0=new0; Path=/; HttpOnly",
                b"_oauth2_proxy_1=new1; Path=/",
            ],
        ),
        (False, [b"theme=dark"]),
    ):
        setup, _, client = gated(cookies=cookies, protected=SetsCookie(status))
        client.send(ASK)
        service(setup).respond(RENEWED)
        response = one_response(client)
        assert response.status == status
        assert set_cookies(response) == expected


def test_auth_response_cookies_reach_every_kind_of_answer() -> None:
    """The server's own answers under the gate (an error page, a HEAD) carry them
    too, and a 2xx without Set-Cookie adds nothing.
    """
    setup, _, client = gated(cookies=True)
    client.send(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
    service(setup).respond(RENEWED)
    (response,) = parse_responses(client.take(), [b"HEAD"])
    assert len(set_cookies(response)) == 2
    client.send(b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
    service(setup).respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert set_cookies(one_response(client)) == []


class _CallingReactor(MemoryReactorClock):
    """A memory reactor that runs what a worker thread hands it at once."""

    def callFromThread(self, callable: Any, *args: Any, **kwargs: Any) -> None:
        callable(*args, **kwargs)


def test_a_service_asked_twice_about_a_request_sends_its_cookies_once(tmp_path: Path) -> None:
    """A file not found by a static mount that shares its partner's gate is asked
    about again when passed on: the cookies of the later answer go, once.
    """
    (tmp_path / "files").mkdir()
    site = tmp_path / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n"
        f"[[host.mount]]\npath = '/'\nstatic = '{tmp_path / 'files'}'\nfallthrough = true\n"
        "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
        "auth_request = 'http://10.0.0.9:4180/auth'\nauth_response_cookies = true\n"
    )
    table = SiteBuilder(reactor=_CallingReactor(), threadpool=SynchronousThreadPool()).build(
        cli.load_config({"config": str(site)})
    )
    static = table.hosts.lookup("a.test").lookup(b"/missing").target  # type: ignore[union-attr]
    assert isinstance(static, GuardedHandler) and isinstance(static.gate, ForwardAuth)
    setup = make_proxy(("http://10.0.0.9:4180",), proxy_redirect="off")
    static.gate.proxy = setup.handler  # the fake service, for the one gate both share
    client = connect(Router(table), clock=setup.clock)
    client.send(b"GET /missing HTTP/1.1\r\nHost: a.test\r\n\r\n")
    service(setup).respond(RENEWED)
    service(setup).respond(RENEWED.replace(b"new", b"newer"))  # asked again
    response = one_response(client)
    assert response.status == 200
    assert set_cookies(response) == [
        b"_oauth2_proxy_0=newer0; Path=/; HttpOnly",
        b"_oauth2_proxy_1=newer1; Path=/",
    ]


def test_auth_response_cookies_on_a_switch_of_protocols() -> None:
    """A WebSocket behind the gate: the 101 carries the renewed session too."""

    class Ignores:
        def data_received(self, data: bytes) -> None:
            pass

        def connection_lost(self, reason: Failure) -> None:
            pass

    class Upgrades:
        def handle(self, exchange: Exchange) -> None:
            exchange.upgrade([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")], Ignores())

    setup, _, client = gated(cookies=True, protected=Upgrades())
    client.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    service(setup).respond(RENEWED)
    head = client.take().split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 101 ")
    assert head.count(b"\r\nSet-Cookie: _oauth2_proxy_") == 2


def test_a_connection_field_cannot_take_the_copied_fields_away() -> None:
    """A proxy mount drops the fields a request's Connection names: the client's
    options naming a copied field are taken off, the others kept.
    """
    setup, _, client = gated()
    client.send(ASK)
    service(setup).respond(
        b"HTTP/1.1 200 OK\r\nX-Auth-Request-User: alice\r\nContent-Length: 0\r\n\r\n"
    )
    body = one_response(client).body
    assert b"X-Auth-Request-User: alice\n" in body
    assert b"Connection: X-Original-URI, X-Forwarded-Uri, X-Original-Method\n" in body


def test_a_name_configured_with_underscores_guards_both_spellings(tmp_path: Path) -> None:
    config = load(tmp_path, "auth_request = 'http://a/'\nauth_response_headers = ['X_Remote_User']")
    assert config.hosts[0].mounts[0].options["auth_response_headers"] == ("X_Remote_User",)
    setup = make_proxy(("http://10.0.0.9:4180",), proxy_redirect="off")
    gate = ForwardAuth(setup.handler, b"/", [b"x-remote-user"], "test mount")
    shows = Shows()
    client = connect(GuardedHandler(shows, None, gate=gate), clock=setup.clock)
    client.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Remote-User: mallory\r\nX_Remote_User: eve\r\n\r\n"
    )
    service(setup).respond(b"HTTP/1.1 200 OK\r\nX_Remote_User: alice\r\nContent-Length: 0\r\n\r\n")
    body = one_response(client).body
    assert b"alice" in body and b"mallory" not in body and b"eve" not in body


def test_a_body_waits_for_the_answer_and_reaches_the_application() -> None:
    setup, shows, client = gated()
    client.send(
        b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
        b"\r\nhello"
    )
    question, _ = service(setup).request()
    assert question.method == b"GET"
    assert not any(name == b"content-length" for name, _ in question.headers)
    assert shows.seen == []
    service(setup).respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    response = one_response(client, b"POST")
    assert response.body.endswith(b"body: hello\n")


@pytest.mark.parametrize(
    ("answer", "status", "field", "value"),
    [
        (
            b"HTTP/1.1 302 Found\r\nLocation: https://auth.example/sign_in?rd=/app\r\n"
            b"Set-Cookie: csrf=1\r\nContent-Length: 7\r\n\r\nsign in",
            302,
            b"location",
            b"https://auth.example/sign_in?rd=/app",
        ),
        (
            b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="x"\r\n'
            b"Content-Length: 7\r\n\r\nsign in",
            401,
            b"www-authenticate",
            b'Bearer realm="x"',
        ),
        (
            b"HTTP/1.1 403 Forbidden\r\nX-Reason: group\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"7\r\nsign in\r\n0\r\n\r\n",
            403,
            b"x-reason",
            b"group",
        ),
    ],
)
def test_a_refusal_or_a_redirect_is_the_clients_answer(
    answer: bytes, status: int, field: bytes, value: bytes
) -> None:
    setup, shows, client = gated()
    client.send(ASK)
    service(setup).respond(answer)
    raw = client.take()
    assert raw.lower().count(b"\r\ncontent-length:") == 1
    [response] = parse_responses(raw)
    assert (response.status, response.body) == (status, b"sign in")
    assert response.header(field) == value
    assert response.header(b"transfer-encoding") is None
    assert shows.seen == []


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_any_other_answer_is_a_500_and_logged(answer: bytes) -> None:
    setup, shows, client = gated()
    client.send(ASK)
    with capture_log_events() as events:
        service(setup).respond(answer)
    response = one_response(client)
    assert response.status == 500
    assert shows.seen == []
    assert any(
        "no usable answer from the authentication" in str(e.get("log_format")) for e in events
    )


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 300 Multiple Choices\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_only_refusals_and_redirects_are_relayed(answer: bytes) -> None:
    setup, _, client = gated()
    client.send(ASK)
    with capture_log_events():
        service(setup).respond(answer)
    assert one_response(client).status == 500


def test_a_2xx_cut_short_keeps_the_gate_closed() -> None:
    setup, shows, client = gated()
    client.send(ASK)
    with capture_log_events():
        service(setup).respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        service(setup).close()
    assert one_response(client).status == 500
    assert shows.seen == []


def test_the_services_redirect_is_not_rewritten() -> None:
    """Its sign-in page's Location is the client's to follow, as the service wrote it."""
    setup, _, client = gated()
    client.send(ASK)
    service(setup).respond(
        b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.9:4180/sign_in\r\nContent-Length: 0\r\n\r\n"
    )
    assert one_response(client).header(b"location") == b"http://10.0.0.9:4180/sign_in"


def test_a_silent_or_stalling_service_is_a_500_after_its_timeouts(tmp_path: Path) -> None:
    """The service's proxy waits 10 seconds for the head, then 10 between pieces of
    its body (the configuration's), after which the gate stays closed.
    """
    config = load(tmp_path, "auth_request = 'http://10.0.0.9:4180/auth'")
    memory = MemoryReactorClock()
    table = SiteBuilder(reactor=memory, threadpool=SynchronousThreadPool()).build(config)
    guarded = table.hosts.lookup("a.test").lookup(b"/").target  # type: ignore[union-attr]
    assert isinstance(guarded, GuardedHandler)
    gate: Any = guarded.gate
    settings = gate.proxy.group.peers[0].target.settings
    assert (settings.response_timeout, settings.idle_timeout) == (10.0, 10.0)
    assert gate.proxy.redirects is None and gate.proxy.buffering is False
    for stalls_in_body in (False, True):
        setup = make_proxy(
            ("http://10.0.0.9:4180",),
            proxy_redirect="off",
            response_timeout=settings.response_timeout,
            idle_timeout=settings.idle_timeout,
        )
        shows = Shows()
        client = connect(
            GuardedHandler(shows, None, gate=ForwardAuth(setup.handler, b"/", (), "m")),
            clock=setup.clock,
        )
        client.send(ASK)
        with capture_log_events():
            if stalls_in_body:
                service(setup).respond(
                    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 10\r\n\r\nab"
                )
            setup.clock.advance(9.9)
            assert client.take() == b""
            setup.clock.advance(0.2)
        assert one_response(client).status == 500
        assert shows.seen == []


def test_a_handler_that_raises_is_a_500_not_a_hang() -> None:
    class Raises:
        def handle(self, exchange: Exchange) -> None:
            raise RuntimeError("boom")

    setup = make_proxy(("http://10.0.0.9:4180",), proxy_redirect="off")
    gate = ForwardAuth(setup.handler, b"/", (), "test mount")
    client = connect(GuardedHandler(Raises(), None, gate=gate), clock=setup.clock)
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with capture_log_events():
        service(setup).respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert one_response(client).status == 500


def test_an_unreachable_service_keeps_the_gate_closed() -> None:
    setup, shows, client = gated()
    setup.endpoint().refuse = True
    with capture_log_events():
        client.send(ASK)
    assert one_response(client).status == 500
    assert shows.seen == []


def test_an_answer_too_large_is_a_500() -> None:
    setup, shows, client = gated()
    client.send(ASK)
    size = MAX_ANSWER + 1
    with capture_log_events():
        service(setup).respond(
            b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
        )
    assert one_response(client).status == 500
    assert shows.seen == []


def test_a_client_gone_drops_its_question() -> None:
    setup, shows, client = gated()
    client.send(ASK)
    connection = service(setup)
    from twisted.internet.error import ConnectionDone

    client.protocol.connectionLost(Failure(ConnectionDone()))
    setup.clock.advance(0)
    assert connection.closed()
    assert shows.seen == []


def test_the_question_reuses_the_services_connection() -> None:
    setup, _, client = gated()
    for _ in range(3):
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        service(setup).respond(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert one_response(client).status == 200
    assert len(setup.endpoint().connections) == 1


# -- configuration ----------------------------------------------------------------------


def load(directory: Path, extra: str) -> Any:
    site = directory / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n[[host.mount]]\npath = '/'\n"
        f"app = 'tests.apps:hello'\n{extra}\n"
    )
    return cli.load_config({"config": str(site)})


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("auth_request = 'ftp://a/'", "auth_request: expected the http or https URL"),
        ("auth_request = '/oauth2/auth'", "auth_request: expected the http or https URL"),
        ("auth_request = 'http://a:99999/'", "auth_request: expected the http or https URL"),
        ("auth_request = 'http://a/x#y'", "holds a fragment, a space or a control character"),
        ("auth_request = 'http://u:pw@a/x'", "no user or password in the URL"),
        ("auth_request = 'http://a:0/x'", "no port 0"),
        ("auth_request = 'unix:run/a.sock:/auth'", "such as unix:/run/oauth2-proxy.sock:/"),
        ("auth_request = 'HTTP://unix:/run/a.sock:/auth'", "write a UNIX socket as unix:/path"),
        ("auth_request = 'unix:/run/a.sock:auth'", "such as unix:/run/oauth2-proxy.sock:/"),
        ("auth_request = 'unix:/run/a.sock:/x#y'", "holds a fragment, a space or a control"),
        ("auth_request = 'unix:/run/a b.sock:/x'", "holds a fragment, a space or a control"),
        (
            "auth_request = 'http://a/'\nauth_response_headers = ['Transfer_Encoding']",
            "it cannot be copied",
        ),
        (
            "auth_response_headers = ['X-User']",
            "auth_response_headers: needs auth_request, the service they come from",
        ),
        (
            "auth_request = 'http://a/'\nauth_response_headers = ['Host']",
            "'Host' frames or routes the request: it cannot be copied",
        ),
        (
            "auth_request = 'http://a/'\nauth_response_headers = ['Content-Length']",
            "it cannot be copied",
        ),
        ("auth_request = 'http://a/'\nauth_response_headers = ['X User']", "is not a header name"),
        (
            "auth_request = 'http://a/'\nauth_response_headers = ['Set-Cookie']",
            "is for the client, not the request: auth_response_cookies = true",
        ),
        (
            "auth_response_cookies = true",
            "auth_response_cookies: needs auth_request, the service they come from",
        ),
        ("auth_request = 'http://a/'\nauth_response_cookies = 'maybe'", "expected true or false"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, extra)
    message = str(raised.value)
    assert message.startswith("site.toml: host[0].mount[0]."), message
    assert problem in message


@pytest.mark.parametrize(
    ("url", "written", "asked"),
    [
        ("unix:/run/o.sock:/oauth2/auth", "unix:/run/o.sock:/oauth2/auth", b"/oauth2/auth"),
        ("unix:/run/o.sock", "unix:/run/o.sock:/", b"/"),
        ("unix:/run/o.sock:/é?rd=/ü", "unix:/run/o.sock:/%C3%A9?rd=/%C3%BC", b"/%C3%A9?rd=/%C3%BC"),
    ],
)
def test_a_service_on_a_unix_socket(tmp_path: Path, url: str, written: str, asked: bytes) -> None:
    """As nginx's http://unix:/path:/uri: the socket, then the path asked, encoded as
    a request line writes it.
    """
    config = load(tmp_path, f"auth_request = '{url}'")
    assert config.hosts[0].mounts[0].options["auth_request"] == written
    assert auth_base_url(written) == ("unix:/run/o.sock", asked)


def test_the_static_files_of_a_protected_application_are_protected(tmp_path: Path) -> None:
    """A static mount and the application it falls through to are one place: the
    application's auth_request guards the files too, as its auth_basic would.
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "secret.txt").write_text("export")
    site = tmp_path / "site.toml"
    site.write_text(
        "[[host]]\nnames = ['a.test']\n"
        f"[[host.mount]]\npath = '/'\nstatic = '{tmp_path / 'files'}'\nfallthrough = true\n"
        "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
        "auth_request = 'http://10.0.0.9:4180/auth'\n"
    )
    table = SiteBuilder(reactor=MemoryReactorClock(), threadpool=SynchronousThreadPool()).build(
        cli.load_config({"config": str(site)})
    )
    static = table.hosts.lookup("a.test").lookup(b"/secret.txt").target  # type: ignore[union-attr]
    assert isinstance(static, GuardedHandler) and static.gate is not None


def test_auth_response_cookies_off_needs_no_service(tmp_path: Path) -> None:
    config = load(tmp_path, "auth_response_cookies = false")
    assert config.hosts[0].mounts[0].options["auth_response_cookies"] is False


def test_the_url_is_sent_as_a_request_line_writes_it(tmp_path: Path) -> None:
    config = load(tmp_path, "auth_request = 'http://a/\u00e4uth?x=<y>'")
    url = config.hosts[0].mounts[0].options["auth_request"]
    assert url == "http://a/%C3%A4uth?x=%3Cy%3E"


# -- a real service -----------------------------------------------------------------------


class _Auth(resource.Resource):
    """A session service: 200 with the user for the cookie "session=ok", else a
    redirect to sign in, as oauth2-proxy and Authelia answer.
    """

    isLeaf = True  # noqa: N815 - Twisted reads this name

    def render_GET(self, request: Any) -> bytes:
        if request.getCookie(b"session") == b"ok":
            request.setHeader(b"X-Auth-Request-User", b"alice")
            request.addCookie(b"session", b"ok", path=b"/")  # renewed, as a refresh does
            return b""
        asked = request.getHeader(b"x-original-uri") or b"?"
        request.setResponseCode(302)
        request.setHeader(b"Location", b"https://auth.example/sign_in?rd=" + asked)
        return b"sign in"


class RealServiceTests(TestCase):
    """curl through a real server to a real (Twisted) authentication service."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def test_signed_in_passes_the_others_are_sent_to_sign_in(self) -> None:
        port = await TCP4ServerEndpoint(global_reactor, 0, interface="127.0.0.1").listen(
            server.Site(_Auth())
        )
        self.addCleanup(port.stopListening)
        await self.signed_in_passes(f"http://127.0.0.1:{port.getHost().port}/auth")

    async def test_a_service_on_a_unix_socket(self) -> None:
        socket_path = self.directory / "auth.sock"
        port = await UNIXServerEndpoint(global_reactor, str(socket_path)).listen(
            server.Site(_Auth())
        )
        self.addCleanup(port.stopListening)
        await self.signed_in_passes(f"unix:{socket_path}:/auth")

    async def signed_in_passes(self, auth_request: str) -> None:
        if shutil.which("curl") is None:
            self.skipTest("curl is not installed (make test installs it)")
        site = self.directory / "site.toml"
        site.write_text(
            "[[host]]\nnames = ['a.test']\n[[host.mount]]\npath = '/'\n"
            "app = 'tests.apps:environ'\n"
            f"auth_request = '{auth_request}'\n"
            "auth_response_headers = ['X-Auth-Request-User']\n"
            "auth_response_cookies = true\n"
        )
        running = serve_live(
            self,
            {
                "config": str(site),
                "listen": ["tcp:0:interface=127.0.0.1"],
                "threads": "0",
                "access_log": "off",
            },
        )
        address = f"http://127.0.0.1:{port_of(running)}/page?x=1"

        def curl(*more: str) -> str:
            result = subprocess.run(
                ["curl", "-sS", "--max-time", "20", "-H", "Host: a.test", *more, address],
                capture_output=True,
                check=False,
            )
            return result.stdout.decode()

        signed_in = await deferToThread(curl, "-b", "session=ok", "-D", "-")
        assert '"HTTP_X_AUTH_REQUEST_USER": "alice"' in signed_in, signed_in
        assert "\nSet-Cookie: session=ok; Path=/\r\n" in signed_in, signed_in
        stranger = await deferToThread(
            curl, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"
        )
        assert stranger == "302 https://auth.example/sign_in?rd=/page?x=1", stranger


def test_the_request_with_the_services_fields_keeps_its_request_id() -> None:
    """One request in the access log and upstream: the same $request_id."""
    original = request_head(b"/x")
    named = original.request_id
    copied = original.with_headers([(b"Host", b"a.test"), (b"X-Auth-Request-User", b"alice")])
    assert copied.request_id == named
    assert copied.header(b"x-auth-request-user") == b"alice"
    assert (copied.target, copied.peer) == (original.target, original.peer)


def test_the_services_proxy_trusts_nobody_the_gate_resolves_the_client(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\ntrusted_proxies = ['127.0.0.1']\n[[host]]\nnames = ['a.test']\n"
        "[[host.mount]]\npath = '/'\napp = 'tests.apps:hello'\n"
        "auth_request = 'http://10.0.0.9:4180/auth'\n"
    )
    table = SiteBuilder(reactor=MemoryReactorClock(), threadpool=SynchronousThreadPool()).build(
        cli.load_config({"config": str(site)})
    )
    guarded = table.hosts.lookup("a.test").lookup(b"/").target  # type: ignore[union-attr]
    assert isinstance(guarded, GuardedHandler)
    gate: Any = guarded.gate
    assert not gate.proxy.trusted
    assert gate.trusted.trusts_peer(("127.0.0.1", 1))
