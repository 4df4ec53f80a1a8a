"""Basic authentication of a mount (auth_basic, auth_basic_user_file) through the router
and the protocol: the challenge, the user file read again when it changes, slow
hashes checked off the reactor, REMOTE_USER and $remote_user. Responses are parsed by
h11; the hashes come from ``openssl passwd`` (an independent implementation).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent

from tests.test_access import head as request_head
from twistwsgi.access import GuardedHandler
from twistwsgi.access_log import format_combined
from twistwsgi.basic_auth import MAX_PENDING, BasicAuth, UserFile, UserFileError, credentials
from twistwsgi.cli import load_config
from twistwsgi.config import ConfigError
from twistwsgi.http.request import RequestHead
from twistwsgi.log_format import LogFormat
from twistwsgi.routing import Router
from twistwsgi.site import SiteBuilder
from twistwsgi.testing import (
    Connection,
    ParsedResponse,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    capture_log_events,
    connect,
    parse_responses,
)

# openssl passwd -apr1 -salt saltsalt 'open sesame'
APR1 = "$apr1$saltsalt$HIDXe7D36X22w1CH4M1cQ."
# openssl passwd -6 -salt saltsalt 'open sesame'
SHA512 = (
    "$6$saltsalt$e/5XKibXPLqVcfjpD.ouauaJrAOL5V0uo80Lt7n7EbRdRiCx3HbQ90yjOHr.G0T."
    "mx79PEMRy8nmtr0qSYhQp1"
)
# "{SHA}" + base64(sha1(b"hunter2"))
SHA1 = "{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0="
# "{SHA}" + base64(sha1(b"pa:ss")): a password may hold a colon (not a {PLAIN} one,
# whose second colon starts the comment field, as in nginx)
SHA1_COLON = "{SHA}XyRLaTIb/WCdo8CuWc58gPVHl68="
# Openwall's crypt_blowfish test vector for "U*U" (as $2y$, htpasswd -B's prefix)
BCRYPT = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
USERS = (
    f"# staff\nalice:{APR1}\nbob:{SHA1}:Bob Builder\n\ncarol:{SHA512}\n"
    f"zoë:{SHA1_COLON}\nerin:{BCRYPT}\n"
)


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    token = base64.b64encode(f"{user}:{password}".encode())
    return (b"authorization", b"Basic " + token)


def built(tmp_path: Path, text: str, users: str = USERS) -> Router:
    """The router of a site.toml ``text`` beside an htpasswd file of ``users``."""
    (tmp_path / "htpasswd").write_text(users, encoding="utf-8")
    (tmp_path / "site.toml").write_text(text)
    config = load_config({"config": str(tmp_path / "site.toml")})
    reactor = SynchronousReactorThreads()
    reactor.advance(time.time())
    return Router(SiteBuilder(reactor=reactor, threadpool=SynchronousThreadPool()).build(config))


def site(tmp_path: Path, mount_options: str = "", users: str = USERS) -> Router:
    return built(
        tmp_path,
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/private"\napp = "tests.apps:whoami"\n'
        'auth_basic = "Staff only"\nauth_basic_user_file = "htpasswd"\n'
        f"{mount_options}"
        '[[host.mount]]\npath = "/"\napp = "tests.apps:whoami"\n',
        users,
    )


def get(
    router: Router, target: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> ParsedResponse:
    connection = connect(router)
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    connection.send(b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\n" + fields + b"\r\n")
    [response] = parse_responses(connection.take())
    return response


@pytest.fixture
def router(tmp_path: Path) -> Router:
    return site(tmp_path)


def test_a_request_without_credentials_is_challenged(router: Router) -> None:
    """RFC 7617 2: 401 with a Basic challenge naming the realm and UTF-8."""
    response = get(router, b"/private/report")
    assert response.status == 401
    assert response.header(b"www-authenticate") == b'Basic realm="Staff only", charset="UTF-8"'
    assert get(router, b"/public").status == 200  # other mounts are not guarded


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("alice", "open sesame", b"alice Basic"),  # $apr1$ (htpasswd -m)
        ("bob", "hunter2", b"bob Basic"),  # {SHA}
        ("carol", "open sesame", b"carol Basic"),  # $6$ (openssl passwd -6)
        ("erin", "U*U", b"erin Basic"),  # bcrypt (htpasswd -B)
        ("zoë", "pa:ss", "zoë Basic".encode().decode("latin-1").encode("latin-1")),
    ],
)
def test_users_of_the_file_get_through_as_remote_user(
    router: Router, user: str, password: str, expected: bytes
) -> None:
    """Each hash scheme lets its user in; the application sees REMOTE_USER and
    AUTH_TYPE (CGI), the user's UTF-8 name as PEP 3333 strings carry bytes; a
    password may hold a colon (only the user-id cannot).
    """
    response = get(router, b"/private/x", [basic(user, password)])
    assert (response.status, response.body) == (200, expected)


@pytest.mark.parametrize(
    "authorization",
    [
        basic("alice", "open sesam")[1],
        basic("alice", "open sesame ")[1],
        basic("mallory", "open sesame")[1],
        basic("ALICE", "open sesame")[1],
        b"Bearer abc",
        b"Basic",
        b"Basic !!!!",
        b"Basic " + base64.b64encode(b"no colon here"),
        b"Basic " + base64.b64encode(b"\xff\xfe:open sesame"),
        b"Digest username=alice",
    ],
)
def test_anything_else_is_challenged(router: Router, authorization: bytes) -> None:
    response = get(router, b"/private/x", [(b"authorization", authorization)])
    assert response.status == 401
    assert response.header(b"www-authenticate") is not None


def test_the_scheme_name_is_case_insensitive_and_two_fields_are_refused(router: Router) -> None:
    _, value = basic("bob", "hunter2")
    assert get(router, b"/private/x", [(b"authorization", b"bAsIc" + value[5:])]).status == 200
    twice = [basic("bob", "hunter2"), basic("bob", "hunter2")]
    assert get(router, b"/private/x", twice).status == 401


def test_the_rate_limit_comes_before_the_password(tmp_path: Path) -> None:
    """As nginx's limit_req (preaccess) before auth_basic (access): a client guessing
    passwords is slowed down, its guesses never checked past the rate.
    """
    router = site(tmp_path, 'rate_limit = "1r/m"\n')
    assert get(router, b"/private/x", [basic("alice", "guess1")]).status == 401
    assert get(router, b"/private/x", [basic("alice", "guess2")]).status == 429
    assert get(router, b"/private/x", [basic("alice", "open sesame")]).status == 429


def test_the_file_is_read_again_when_it_changes(tmp_path: Path, router: Router) -> None:
    """A change by htpasswd takes effect at once, as nginx reads the file for each request: a
    user added gets in, one removed is out, remembered credentials included.
    """
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 200
    (tmp_path / "htpasswd").write_text(f"alice:{APR1}\ndave:{{PLAIN}}x\n")
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 401
    assert get(router, b"/private/x", [basic("dave", "x")]).status == 200


def test_a_file_that_breaks_fails_closed_with_one_error(tmp_path: Path, router: Router) -> None:
    """A bad line written, or the file gone: 500 (as nginx when it cannot read it),
    never an open door, and one error in the log until it changes again.
    """
    with capture_log_events() as events:
        (tmp_path / "htpasswd").write_text("alice:$y$j9T$bad\n")
        for _ in range(3):
            assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 500
        os.remove(tmp_path / "htpasswd")
        assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 500
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "twistwsgi.auth"]
    assert len(lines) == 2
    assert "htpasswd:1" in lines[0] and "answered 500" in lines[0]
    assert "htpasswd" in lines[1]
    (tmp_path / "htpasswd").write_text(USERS)
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 200


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("alice\n", "htpasswd:1: expected name:hash"),
        (f"alice:{APR1}\nalice:{SHA1}\n", "htpasswd:2: 'alice' is given twice"),
        ("# nobody\n", "htpasswd: no users"),
        ("alice:\n", "htpasswd:1: 'alice' has no password hash"),
        ("alice:abcdefghijklm\n", "htpasswd:1: 'alice': "),  # DES crypt
    ],
)
def test_a_user_file_it_cannot_use_is_a_start_up_error(
    tmp_path: Path, content: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        site(tmp_path, users=content)
    message = str(raised.value)
    assert "host[0].mount[0].auth_basic_user_file" in message
    assert problem in message


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ('auth_basic = "x"\n', "auth_basic_user_file is missing"),
        ('auth_basic_user_file = "htpasswd"\n', "auth_basic is missing"),
        ('auth_basic = ""\nauth_basic_user_file = "htpasswd"\n', "the realm is empty"),
        ('auth_basic = "x"\nauth_basic_user_file = "nowhere"\n', "does not exist"),
    ],
)
def test_configuration_errors(tmp_path: Path, options: str, problem: str) -> None:
    (tmp_path / "htpasswd").write_text(USERS)
    (tmp_path / "site.toml").write_text(
        f'[[host]]\nnames = ["a"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n{options}'
    )
    with pytest.raises(ConfigError) as raised:
        load_config({"config": str(tmp_path / "site.toml")})
    assert problem in str(raised.value)


def test_a_realm_with_quotes_is_escaped(tmp_path: Path) -> None:
    router = built(
        tmp_path,
        '[[host]]\nnames = ["a"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:whoami"\n'
        'auth_basic = \'say "hi" \\ bye\'\nauth_basic_user_file = "htpasswd"\n',
    )
    connection = connect(router)
    connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    [response] = parse_responses(connection.take())
    assert response.header(b"www-authenticate") == (
        b'Basic realm="say \\"hi\\" \\\\ bye", charset="UTF-8"'
    )


# -- slow hashes, off the reactor thread ---------------------------------------------


class HeldChecks:
    """A check runner that keeps each check until the test runs it (a busy pool)."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[[], bool], Callable[[bool], None]]] = []

    def __call__(self, check: Callable[[], bool], done: Callable[[bool], None]) -> None:
        self.held.append((check, done))

    def run_all(self) -> None:
        held, self.held = self.held, []
        for check, done in held:
            done(check())


def guarded(tmp_path: Path, runner: HeldChecks) -> tuple[GuardedHandler, list[str]]:
    (tmp_path / "htpasswd").write_text(USERS)
    seen: list[str] = []

    class Recorder:
        def handle(self, exchange: Any) -> None:
            seen.append(exchange.remote_user)
            exchange.start_response(200, [(b"Content-Length", b"2")])
            exchange.finish(b"ok")

    auth = BasicAuth("r", UserFile(str(tmp_path / "htpasswd")), runner)
    return GuardedHandler(Recorder(), None, auth=auth), seen


def send(handler: GuardedHandler, *headers: tuple[bytes, bytes]) -> Connection:
    connection = connect(handler)
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
    return connection


def test_a_slow_hash_is_checked_off_the_reactor_then_remembered(tmp_path: Path) -> None:
    """MD5-crypt and SHA-crypt are checked by the runner (a thread), the request
    answered when the check comes back; right credentials are then remembered, so
    a browser sending them with every request costs one check. A fast hash is
    checked at once.
    """
    runner = HeldChecks()
    handler, seen = guarded(tmp_path, runner)
    first = send(handler, basic("carol", "open sesame"))
    assert first.take() == b"" and len(runner.held) == 1
    runner.run_all()
    assert parse_responses(first.take())[0].status == 200
    again = send(handler, basic("carol", "open sesame"))
    assert parse_responses(again.take())[0].status == 200 and runner.held == []
    wrong = send(handler, basic("alice", "guess"))
    runner.run_all()
    assert parse_responses(wrong.take())[0].status == 401
    fast = send(handler, basic("bob", "hunter2"))
    assert parse_responses(fast.take())[0].status == 200 and runner.held == []
    assert seen == ["carol", "carol", "bob"]


def test_a_client_gone_during_the_check_is_not_handed_on(tmp_path: Path) -> None:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    runner = HeldChecks()
    handler, seen = guarded(tmp_path, runner)
    connection = send(handler, basic("alice", "open sesame"))
    connection.protocol.connectionLost(Failure(ConnectionDone()))
    runner.run_all()
    assert seen == []


def test_too_many_checks_waiting_are_answered_503(tmp_path: Path) -> None:
    """A flood of guesses does not queue without bound: past MAX_PENDING waiting
    checks, 503 with Retry-After, and the count comes down as checks return.
    """
    runner = HeldChecks()
    handler, _ = guarded(tmp_path, runner)
    waiting = [send(handler, basic("alice", f"guess{n}")) for n in range(MAX_PENDING)]
    refused = send(handler, basic("alice", "one more"))
    [response] = parse_responses(refused.take())
    assert (response.status, response.header(b"retry-after")) == (503, b"1")
    runner.run_all()
    assert all(parse_responses(c.take())[0].status == 401 for c in waiting)
    later = send(handler, basic("alice", "open sesame"))
    runner.run_all()
    assert parse_responses(later.take())[0].status == 200


# -- the access log --------------------------------------------------------------------


def test_the_access_log_names_the_user(tmp_path: Path) -> None:
    """$remote_user, in the combined format and in a template, as nginx logs it."""
    lines: list[str] = []
    templated: list[str] = []
    template = LogFormat("$remote_user|$status")
    router = site(tmp_path)

    def log(exchange: Any) -> None:
        lines.append(format_combined(exchange, "T"))
        templated.append(template.format(exchange, 0.0))

    for headers in ([basic("bob", "hunter2")], [basic("zoë", "pa:ss")], []):
        connection = connect(router, response_log=log)
        fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        connection.send(b"GET /private/x HTTP/1.1\r\nHost: a.example\r\n" + fields + b"\r\n")
    assert [line.split(" [")[0] for line in lines] == [
        "127.0.0.1 - bob",
        "127.0.0.1 - zo\\xC3\\xAB",
        "127.0.0.1 - -",
    ]
    assert templated == ["bob|200", "zo\\xC3\\xAB|200", "-|401"]


def test_credentials_parse() -> None:
    def head(*values: bytes) -> RequestHead:
        return request_head(("127.0.0.1", 1), *[(b"Authorization", value) for value in values])

    given = credentials(head(b"Basic " + base64.b64encode(b"a:b:c")))
    assert given is not None and (given.user, given.password) == ("a", b"b:c")
    assert credentials(head()) is None
    with pytest.raises(UserFileError):
        UserFile(str(Path("/nonexistent/htpasswd")))


# -- what the review of the first cut found ------------------------------------------


def test_the_static_files_of_a_protected_application_are_protected(tmp_path: Path) -> None:
    """A static mount with fallthrough and the application at the same path are one
    place: the password set on the application covers the files.
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "export.csv").write_text("secret,data\n")
    router = built(
        tmp_path,
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/admin"\nstatic = "files"\nfallthrough = true\n'
        '[[host.mount]]\npath = "/admin"\napp = "tests.apps:whoami"\n'
        'auth_basic = "Staff"\nauth_basic_user_file = "htpasswd"\n',
    )
    assert get(router, b"/admin/export.csv").status == 401
    assert get(router, b"/admin/dashboard").status == 401
    allowed = get(router, b"/admin/export.csv", [basic("bob", "hunter2")])
    assert (allowed.status, allowed.body) == (200, b"secret,data\n")
    assert get(router, b"/admin/dashboard", [basic("bob", "hunter2")]).body == b"bob Basic"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("bob:{PLAIN}\n", "'bob' has an empty password"),
        # U+2028 is no line end here: one user, whose password holds it.
        ("bob:{PLAIN}a\u2028mallory:{PLAIN}b\n", None),
    ],
)
def test_user_file_lines(tmp_path: Path, content: str, problem: str | None) -> None:
    if problem is not None:
        with pytest.raises(ConfigError, match=problem):
            site(tmp_path, users=content)
        return
    router = site(tmp_path, users=content)
    assert get(router, b"/private/x", [basic("mallory", "b")]).status == 401
    # (its second colon starts the comment field)
    assert get(router, b"/private/x", [basic("bob", "a\u2028mallory")]).status == 200


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_bytes(b"\xef\xbb\xbfbob:" + SHA1.encode() + b"\r\n")
    router = site(tmp_path, users=(tmp_path / "htpasswd").read_text(encoding="utf-8"))
    (tmp_path / "htpasswd").write_bytes(b"\xef\xbb\xbfbob:" + SHA1.encode() + b"\r\n")
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 200


def test_a_token_without_its_padding_is_taken(router: Router) -> None:
    _, value = basic("bob", "hunter2")
    assert value.endswith(b"=")
    assert get(router, b"/private/x", [(b"authorization", value.rstrip(b"="))]).status == 200


def test_a_very_long_password_is_refused_unchecked(tmp_path: Path) -> None:
    """SHA-crypt's cost grows with the password's length: past 512 bytes, no check."""
    runner = HeldChecks()
    handler, _ = guarded(tmp_path, runner)
    refused = send(handler, basic("carol", "x" * 513))
    assert parse_responses(refused.take())[0].status == 401 and runner.held == []
    send(handler, basic("carol", "x" * 512))
    assert len(runner.held) == 1


def test_a_rewrite_keeping_every_stat_field_is_seen_while_recent(
    tmp_path: Path, router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On coarse timestamps a same-size rewrite within one tick keeps the stat: a
    file changed in the last seconds is read again at each request.
    """
    import twistwsgi.basic_auth

    monkeypatch.setattr(twistwsgi.basic_auth, "signature", lambda info: (1, 2, 3, 4, 5))
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 200
    (tmp_path / "htpasswd").write_text(USERS.replace("bob:", "rob:"))
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 401
    old = time.time() - 60
    os.utime(tmp_path / "htpasswd", (old, old))
    (tmp_path / "htpasswd").write_text(USERS)
    os.utime(tmp_path / "htpasswd", (old, old))
    # Settled (and, here, the same stat): not read again.
    assert get(router, b"/private/x", [basic("bob", "hunter2")]).status == 401


def test_checks_queued_when_the_server_stops_are_dropped() -> None:
    """The password thread runs what it was given, but not what waits once the
    server stops: nobody waits for those answers, and the stop would wait for them.
    """
    import threading

    from twistwsgi.site import _password_thread, _thread_check_runner

    class Reactor:
        def __init__(self) -> None:
            self.triggers: list[Callable[[], None]] = []
            self.answers: list[bool] = []

        def addSystemEventTrigger(self, phase: str, event: str, func: Any) -> None:
            self.triggers.append(func)

        def callFromThread(self, func: Any, *args: Any) -> None:
            func(*args)

    reactor = Reactor()
    runner = _thread_check_runner(reactor)
    assert runner is not None
    running, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow() -> bool:
        running.set()
        release.wait(10)
        ran.append("slow")
        return True

    def queued() -> bool:
        ran.append("queued")
        return True

    runner(slow, reactor.answers.append)
    runner(queued, reactor.answers.append)
    assert running.wait(10)
    _password_thread.stopping = True  # (what the shutdown trigger sets first)
    release.set()
    [stop] = reactor.triggers
    stop()
    assert ran == ["slow"]


# -- satisfy any -------------------------------------------------------------------------


def get_from(
    router: Router,
    address: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    path: bytes = b"/private/report",
) -> ParsedResponse:
    """GET ``path`` from a client at ``address``."""
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", address, 40000),
    )
    connection = connect(router, transport=transport)
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    connection.send(b"GET " + path + b" HTTP/1.1\r\nHost: a.example\r\n" + fields + b"\r\n")
    [response] = parse_responses(connection.take())
    return response


@pytest.mark.parametrize(
    ("satisfy", "address", "headers", "expected"),
    [
        # all (the default): the office, with a password.
        ("all", "10.1.2.3", [], 401),
        ("all", "10.1.2.3", [basic("alice", "open sesame")], 200),
        ("all", "203.0.113.9", [basic("alice", "open sesame")], 403),
        # any: the office without a password, the world with one.
        ("any", "10.1.2.3", [], 200),
        ("any", "203.0.113.9", [], 401),
        ("any", "203.0.113.9", [basic("alice", "wrong")], 401),
        ("any", "203.0.113.9", [basic("alice", "open sesame")], 200),
        ("any", "10.9.9.9", [], 401),  # denied: a password still lets in
        ("any", "10.9.9.9", [basic("alice", "open sesame")], 200),
    ],
)
def test_satisfy_any_lets_in_by_address_or_by_password(
    tmp_path: Path, satisfy: str, address: str, headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    """Nginx's satisfy any: passing allow/deny or auth_basic is enough."""
    router = site(
        tmp_path, f'allow = ["10.0.0.0/8"]\ndeny = ["10.9.0.0/16"]\nsatisfy = "{satisfy}"\n'
    )
    response = get_from(router, address, headers)
    assert response.status == expected
    if expected == 200:
        user = b"alice" if headers else b"-"
        assert response.body.split()[0] == user


def test_satisfy_any_still_counts_the_rate_first(tmp_path: Path) -> None:
    router = site(tmp_path, 'allow = ["10.0.0.0/8"]\nsatisfy = "any"\nrate_limit = "1r/m"\n')
    assert get_from(router, "10.1.2.3").status == 200
    assert get_from(router, "10.1.2.3").status == 429


@pytest.mark.parametrize(
    "options",
    ['satisfy = "any"\n', 'allow = ["10.0.0.0/8"]\nsatisfy = "any"\n'],
)
def test_satisfy_any_needs_address_rules_and_a_password(tmp_path: Path, options: str) -> None:
    (tmp_path / "htpasswd").write_text(USERS)
    (tmp_path / "site.toml").write_text(
        '[[host]]\nnames = ["a"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n' + options
    )
    with pytest.raises(ConfigError, match="satisfy: any needs allow or deny and auth_basic"):
        load_config({"config": str(tmp_path / "site.toml")})


def test_satisfy_any_goes_with_the_password_a_static_partner_shares(tmp_path: Path) -> None:
    """The try_files pair (static files, then the application at the same path):
    the office needs no password for either, the world needs one for both.
    """
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "style.css").write_text("body {}\n")
    router = built(
        tmp_path,
        '[[host]]\nnames = ["a.example"]\ndefault = true\n'
        '[[host.mount]]\npath = "/private"\nstatic = "files"\nfallthrough = true\n'
        '[[host.mount]]\npath = "/private"\napp = "tests.apps:whoami"\n'
        'auth_basic = "Staff only"\nauth_basic_user_file = "htpasswd"\n'
        'allow = ["10.0.0.0/8"]\nsatisfy = "any"\n',
    )

    def status(address: str, path: bytes, *headers: tuple[bytes, bytes]) -> int:
        return get_from(router, address, headers, path).status

    assert status("10.1.2.3", b"/private/style.css") == 200
    assert status("10.1.2.3", b"/private/report") == 200
    assert status("203.0.113.9", b"/private/style.css") == 401
    assert status("203.0.113.9", b"/private/report") == 401
    password = basic("alice", "open sesame")
    assert status("203.0.113.9", b"/private/style.css", password) == 200


def test_satisfy_any_with_an_empty_deny_is_refused(tmp_path: Path) -> None:
    """An empty deny is no rule: satisfy any would ask every client for a password."""
    (tmp_path / "htpasswd").write_text(USERS)
    (tmp_path / "site.toml").write_text(
        '[[host]]\nnames = ["a"]\n[[host.mount]]\npath = "/"\napp = "tests.apps:hello"\n'
        'deny = []\nauth_basic = "x"\nauth_basic_user_file = "htpasswd"\nsatisfy = "any"\n'
    )
    with pytest.raises(ConfigError, match="satisfy: any needs allow or deny and auth_basic"):
        load_config({"config": str(tmp_path / "site.toml")})
