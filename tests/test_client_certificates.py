"""Client certificates on TLS listeners: tls_verify_client and tls_client_certificate.

Certificates are made here with ``cryptography``; the verdicts are checked with
handshakes in memory (pyOpenSSL as the client) against listener contexts as the
command line builds them, through the protocol and the routing table with the
handshaken connection under a ``StringTransport``, and over real sockets with
Python's ``ssl`` client and curl.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import alsoProvides

from tests import apps
from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.client_certificates import (
    NO_CERTIFICATE,
    NOT_ASKED,
    ClientCertificate,
    describe,
    from_connection,
    refusal,
)
from twistwsgi.config import ConfigError, ServerConfig
from twistwsgi.http.request import RequestHead
from twistwsgi.http.settings import HttpSettings
from twistwsgi.log_format import LogFormat
from twistwsgi.routing import Router
from twistwsgi.service import make_service
from twistwsgi.site import SiteBuilder, describe_routing
from twistwsgi.testing import ParsedResponse, connect, parse_responses
from twistwsgi.upstream import load_client_identity

reactor: Any = global_reactor

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


# -- certificates -------------------------------------------------------------------------


@dataclass(eq=False)
class Issued:
    """A certificate and its key, and the files they were written to."""

    certificate: x509.Certificate
    key: Any
    certificate_file: Path
    key_file: Path

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def issue(
    directory: Path,
    stem: str,
    subject: x509.Name,
    *,
    by: Issued | None = None,
    serial: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    authority: bool | None = None,
) -> Issued:
    """A CA certificate (``by`` None: self-signed) or a client certificate ``by`` a CA
    (``authority``: an intermediate CA ``by`` one).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    is_authority = by is None if authority is None else authority
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if by is None else by.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_authority, path_length=None), critical=True)
    )
    certificate = builder.sign(key if by is None else by.key, hashes.SHA256())
    certificate_file = directory / f"{stem}.pem"
    key_file = directory / f"{stem}-key.pem"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(certificate, key, certificate_file, key_file)


@dataclass
class Material:
    """A CA, a client it issued, one another CA issued, one expired, the server's files."""

    ca: Issued
    other_ca: Issued
    alice: Issued
    mallory: Issued
    expired: Issued
    server_key: Path
    server_certificate: Path
    directory: Path

    def listen(self, port: int = 0) -> str:
        return (
            f"ssl:{port}:interface=127.0.0.1:privateKey={self.server_key}"
            f":certKey={self.server_certificate}"
        )


def make_material(directory: Path) -> Material:
    ca = issue(directory, "ca", _name("Test CA", "Example"))
    other = issue(directory, "other-ca", _name("Other CA"))
    server_key, server_certificate = write_self_signed_certificate(directory)
    return Material(
        ca=ca,
        other_ca=other,
        alice=issue(directory, "alice", _name("alice", "Example"), by=ca, serial=0x1A2B),
        mallory=issue(directory, "mallory", _name("mallory"), by=other),
        expired=issue(
            directory,
            "expired",
            _name("old"),
            by=ca,
            not_before=NOW - datetime.timedelta(days=10),
            not_after=NOW - datetime.timedelta(days=2),
        ),
        server_key=server_key,
        server_certificate=server_certificate,
        directory=directory,
    )


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("mtls"))


def load(material: Material, mode: str, **more: Any) -> ServerConfig:
    given: dict[str, Any] = {
        "app": "tests.apps:environ",
        "listen": [material.listen()],
        "threads": "0",
        "access_log": "off",
        "tls_verify_client": mode,
    }
    if mode != "off":
        given["tls_client_certificate"] = str(material.ca.certificate_file)
    given.update(more)
    return cli.load_config({key: value for key, value in given.items() if value is not None})


def listener_context(config: ServerConfig) -> SSL.Context:
    endpoint = cli._endpoint_for(reactor, config.listen[0], config)
    context: SSL.Context = cli._tls_options(endpoint).getContext()
    return context


def client_context(client: Issued | None) -> SSL.Context:
    """A TLS client's context presenting ``client``'s certificate (or none)."""
    context = SSL.Context(SSL.TLS_METHOD)
    if client is not None:
        context.use_certificate_file(str(client.certificate_file))
        context.use_privatekey_file(str(client.key_file))
    return context


def handshake(
    context: SSL.Context,
    client: Issued | SSL.Context | None,
    session: Any = None,
    server_name: bytes | None = None,
) -> tuple[SSL.Connection, SSL.Connection]:
    """Shake hands in memory with a server on ``context``, presenting ``client``'s
    certificate (or none; or with a client context, to resume a session it made);
    the (server, client) connections.
    """
    server = SSL.Connection(context)
    server.set_accept_state()
    on = client if isinstance(client, SSL.Context) else client_context(client)
    tls = SSL.Connection(on)
    tls.set_connect_state()
    if session is not None:
        tls.set_session(session)
    if server_name is not None:
        tls.set_tlsext_host_name(server_name)
    done = {"client": False, "server": False}
    for _ in range(30):
        for name, side, other in (("client", tls, server), ("server", server, tls)):
            try:
                side.do_handshake()
                done[name] = True
            except SSL.WantReadError:
                pass
            with contextlib.suppress(SSL.WantReadError):
                other.bio_write(side.bio_read(65536))
        if all(done.values()):
            break
    assert all(done.values()), "the handshake did not end"
    # TLS 1.3 sends its tickets after the handshake: let the client take them.
    with contextlib.suppress(SSL.WantReadError):
        server.send(b"x")
        tls.bio_write(server.bio_read(65536))
        tls.recv(1)
    return server, tls


def session_reused(connection: SSL.Connection) -> bool:
    """Whether ``connection`` resumed a session (pyOpenSSL has no method for it)."""
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(connection._ssl))


# -- what a certificate says (pure) -------------------------------------------------------


def test_a_certificate_is_described_as_nginx_and_mod_ssl_write_it(tmp_path: Path) -> None:
    ca = issue(tmp_path, "ca", _name("Test CA", "Example"))
    client = issue(
        tmp_path,
        "client",
        _name("alice", "Example"),
        by=ca,
        serial=0x1A2B3C,
        not_before=datetime.datetime(2026, 3, 5, 7, 8, 9, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2027, 11, 25, 17, 0, 0, tzinfo=datetime.UTC),
    )
    described = describe(client.der, None)
    assert described.verify == "SUCCESS"
    # RFC 4514 writes the last RDN first, as nginx's $ssl_client_s_dn (1.11.6+).
    assert described.subject == "O=Example,CN=alice"
    assert described.issuer == "O=Example,CN=Test CA"
    assert described.serial == "1A2B3C"
    assert described.not_before == "Mar  5 07:08:09 2026 GMT"
    assert described.not_after == "Nov 25 17:00:00 2027 GMT"
    assert described.fingerprint == client.certificate.fingerprint(hashes.SHA1()).hex()
    assert x509.load_pem_x509_certificate(described.pem.encode()) == client.certificate
    assert described.environ() == {
        "SSL_CLIENT_VERIFY": "SUCCESS",
        "SSL_CLIENT_S_DN": "O=Example,CN=alice",
        "SSL_CLIENT_I_DN": "O=Example,CN=Test CA",
        "SSL_CLIENT_M_SERIAL": "1A2B3C",
        "SSL_CLIENT_V_START": "Mar  5 07:08:09 2026 GMT",
        "SSL_CLIENT_V_END": "Nov 25 17:00:00 2027 GMT",
        "SSL_CLIENT_CERT": described.pem,
    }


def test_serials_have_an_even_number_of_digits_and_email_its_openssl_name(
    tmp_path: Path,
) -> None:
    """As nginx and mod_ssl write them (OpenSSL's printers): 0ABC, emailAddress=."""
    ca = issue(tmp_path, "ca", _name("CA"))
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "alice@example.com"),
        ]
    )
    described = describe(issue(tmp_path, "c", name, by=ca, serial=0xABC).der, None)
    assert described.serial == "0ABC"
    assert described.subject == "emailAddress=alice@example.com,CN=alice"


def test_names_use_openssls_short_names_as_nginx_shows_them(tmp_path: Path) -> None:
    """What ``openssl x509 -nameopt RFC2253`` (nginx's and mod_ssl's printer) writes."""
    attributes = [
        (NameOID.SERIAL_NUMBER, "12345"),
        (NameOID.TITLE, "Eng"),
        (NameOID.SURNAME, "Smith"),
        (NameOID.GIVEN_NAME, "Alice"),
        (NameOID.POSTAL_CODE, "123"),
        (NameOID.JURISDICTION_COUNTRY_NAME, "US"),
        (NameOID.ORGANIZATION_IDENTIFIER, "oi"),
        (NameOID.STREET_ADDRESS, "st"),
        (NameOID.USER_ID, "uid"),
        (NameOID.DOMAIN_COMPONENT, "dc"),
        (NameOID.COMMON_NAME, "alice"),
    ]
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    ca = issue(tmp_path, "ca", _name("CA"))
    described = describe(issue(tmp_path, "c", name, by=ca).der, None)
    assert described.subject == (
        "CN=alice,DC=dc,UID=uid,street=st,organizationIdentifier=oi,jurisdictionC=US,"
        "postalCode=123,GN=Alice,SN=Smith,title=Eng,serialNumber=12345"
    )


def test_a_certificate_cryptography_will_not_read_keeps_its_verdict(tmp_path: Path) -> None:
    """OpenSSL takes names cryptography refuses (a PrintableString with "_", from old
    CAs): the request is not a 500; the verdict, fingerprint and PEM are told.
    """
    ca = issue(tmp_path, "ca", _name("CA"))
    printable = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "mallory", _ASN1Type.PrintableString)]
    )
    der = issue(tmp_path, "c", printable, by=ca).der.replace(b"\x13\x07mallory", b"\x13\x07mal_ory")
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der).subject.rfc4514_string()
    described = describe(der, "certificate signature failure", 7)
    assert described.verify == "FAILED:certificate signature failure"
    assert described.subject == "" and described.fingerprint
    assert ssl.PEM_cert_to_DER_cert(described.pem) == der


def test_no_certificate_and_a_failed_one(tmp_path: Path) -> None:
    assert describe(None, None) == NO_CERTIFICATE
    assert NO_CERTIFICATE.environ() == {"SSL_CLIENT_VERIFY": "NONE"}
    ca = issue(tmp_path, "ca", _name("CA"))
    failed = describe(issue(tmp_path, "c", _name("c"), by=ca).der, "certificate has expired")
    assert failed.verify == "FAILED:certificate has expired"
    assert failed.subject == "CN=c"


SUCCESS = ClientCertificate("SUCCESS", subject="CN=a")
FAILED = ClientCertificate("FAILED:certificate has expired", subject="CN=a", error=10)
UNTRUSTED = ClientCertificate(
    "FAILED:unable to get local issuer certificate", subject="CN=a", error=20
)
# nginx's optional_no_ca takes a CA not trusted for the purpose (27), not a
# certificate whose issuer's own certificate is missing from the file (2).
NOT_TRUSTED = ClientCertificate("FAILED:certificate not trusted", subject="CN=a", error=27)
NO_ISSUER = ClientCertificate("FAILED:unable to get issuer certificate", subject="CN=a", error=2)


@pytest.mark.parametrize(
    ("mode", "certificate", "refused"),
    [
        ("on", SUCCESS, False),
        ("on", NO_CERTIFICATE, True),
        ("on", FAILED, True),
        ("optional", SUCCESS, False),
        ("optional", NO_CERTIFICATE, False),
        ("optional", FAILED, True),
        # nginx's optional_no_ca lets through only an issuer it does not know.
        ("optional_no_ca", UNTRUSTED, False),
        ("optional_no_ca", NOT_TRUSTED, False),
        ("optional_no_ca", NO_ISSUER, True),
        ("optional_no_ca", FAILED, True),
        ("optional_no_ca", NO_CERTIFICATE, False),
        ("optional", UNTRUSTED, True),
        # A TLS connection opened before verification was turned on (a reload).
        ("on", NOT_ASKED, True),
        ("optional", NOT_ASKED, False),
        # Not over this server's TLS: the setting is about its TLS listeners.
        ("on", None, False),
        ("off", FAILED, False),
    ],
)
def test_who_is_refused(mode: str, certificate: ClientCertificate | None, refused: bool) -> None:
    assert (refusal(mode, certificate) is not None) is refused


def test_a_refusal_says_why() -> None:
    assert refusal("on", NO_CERTIFICATE) == (
        b"Bad Request: this site needs a client certificate (TLS)\n"
    )
    assert refusal("optional", FAILED) == (
        b"Bad Request: the client certificate did not verify (certificate has expired)\n"
    )


def test_the_access_log_variables() -> None:
    template = LogFormat(
        "$ssl_client_verify|$ssl_client_s_dn|$ssl_client_i_dn|$ssl_client_serial"
        "|$ssl_client_fingerprint"
    )

    @dataclass
    class Logged:
        request: Any
        status: int = 200
        body_sent: int = 0
        started: float = 0.0
        client_closed: bool = False

    certificate = ClientCertificate(
        "SUCCESS", subject='CN=a "b"', issuer="CN=CA", serial="1F", fingerprint="ab12"
    )
    assert (
        template.format(Logged(head(certificate)), 0.0) == "SUCCESS|CN=a \\x22b\\x22|CN=CA|1F|ab12"
    )
    assert template.format(Logged(head(NO_CERTIFICATE)), 0.0) == "NONE|-|-|-|-"
    assert template.format(Logged(head(None)), 0.0) == "-|-|-|-|-"


def head(certificate: ClientCertificate | None, **changes: Any) -> RequestHead:
    """A GET / for a.test over TLS from 127.0.0.1, with ``changes`` to its fields."""
    fields: dict[str, Any] = {
        "method": b"GET",
        "target": b"/",
        "path": b"/",
        "decoded_path": b"/",
        "query": b"",
        "version": b"1.1",
        "headers": [(b"Host", b"a.test")],
        "authority": b"a.test",
        "content_length": None,
        "chunked": False,
        "scheme": "https",
        "peer": ("127.0.0.1", 5000),
        "local": ("127.0.0.1", 443),
        "client_certificate": certificate,
    }
    return RequestHead(**{**fields, **changes})


# -- handshakes in memory ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_the_verdict_of_each_client(material: Material, mode: str) -> None:
    context = listener_context(load(material, mode))
    verdicts = {
        name: from_connection(handshake(context, client)[0])
        for name, client in (
            ("alice", material.alice),
            ("mallory", material.mallory),
            ("expired", material.expired),
            ("none", None),
        )
    }
    alice = verdicts["alice"]
    assert alice is not None and alice.verify == "SUCCESS"
    assert alice.subject == "O=Example,CN=alice" and alice.serial == "1A2B"
    mallory = verdicts["mallory"]
    assert mallory is not None and mallory.verify.startswith("FAILED:")
    assert mallory.subject == "CN=mallory"  # told, though not believed
    # Each tagged with what it was asked under, for the host guards to compare.
    profile = f"{mode}:{material.ca.certificate_file}"
    assert {verdict.profile for verdict in verdicts.values()} == {profile}
    expired = describe(material.expired.der, "certificate has expired", 10)
    assert verdicts["expired"] == dataclasses.replace(expired, profile=profile)
    assert verdicts["none"] == dataclasses.replace(NO_CERTIFICATE, profile=profile)


def test_off_asks_for_nothing(material: Material) -> None:
    server, _ = handshake(listener_context(load(material, "off")), material.alice)
    assert server.get_peer_certificate() is None
    assert from_connection(server) == NOT_ASKED
    assert NOT_ASKED.environ() == {}


def test_the_client_is_told_which_issuers_are_accepted(material: Material) -> None:
    _, client = handshake(listener_context(load(material, "on")), None)
    names = [name.der() for name in client.get_client_ca_list()]
    assert names == [material.ca.certificate.subject.public_bytes()]


@pytest.mark.parametrize(("client_name", "verdict"), [("alice", "SUCCESS"), ("mallory", "FAILED")])
def test_a_resumed_session_keeps_its_verdict_and_certificate(
    material: Material, client_name: str, verdict: str
) -> None:
    """A returning client resumes with a ticket (no verification runs then): what it
    gets is the verdict of its first handshake, with the certificate it showed.
    """
    context = listener_context(load(material, "optional_no_ca"))
    client = getattr(material, client_name)
    on = client_context(client)
    first_server, first_client = handshake(context, on)
    first = from_connection(first_server)
    session = first_client.get_session()
    assert session is not None
    server, _ = handshake(context, on, session=session)
    assert session_reused(server), "the session was not resumed"
    resumed = from_connection(server)
    assert resumed == first
    assert resumed is not None and resumed.verify.startswith(verdict)
    assert resumed.subject == client.certificate.subject.rfc4514_string()


def test_a_host_with_its_own_certificate_verifies_and_resumes_alike(
    material: Material, tmp_path: Path
) -> None:
    """The context of a host's certificate (SNI) asks as the listener's does, and a
    session made there is resumed there with its verdict.
    """
    key, certificate = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\n'
        'threads = 0\naccess_log = "off"\ntls_verify_client = "optional"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n'
        f'[[host]]\nnames = ["a.test"]\ntls_certificate = "{certificate}"\n'
        f'tls_key = "{key}"\nmount = [{{path = "/", app = "tests.apps:hello"}}]\n'
    )
    context = listener_context(cli.load_config({"config": str(site)}))
    for client, verdict in ((material.alice, "SUCCESS"), (material.mallory, "FAILED:")):
        on = client_context(client)
        server, tls = handshake(context, on, server_name=b"a.test")
        served = tls.get_peer_certificate(as_cryptography=True)
        assert served is not None
        assert served.public_bytes(serialization.Encoding.PEM) == certificate.read_bytes()
        first = from_connection(server)
        assert first is not None and first.verify.startswith(verdict)
        server, _ = handshake(context, on, session=tls.get_session(), server_name=b"a.test")
        assert session_reused(server)
        assert from_connection(server) == first


# -- the protocol and the routing table --------------------------------------------------


class TLSStringTransport(StringTransport):
    """A StringTransport that is a TLS connection with a handshaken OpenSSL one."""

    def __init__(self, connection: SSL.Connection) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 54321),
        )
        self.connection = connection
        alsoProvides(self, ISSLTransport)

    def getHandle(self) -> SSL.Connection:
        return self.connection


def ask_through_site(
    config: ServerConfig,
    client: Issued | None,
    request: bytes,
    method: bytes = b"GET",
    *,
    listener: ServerConfig | None = None,
    server_name: bytes | None = None,
) -> tuple[ParsedResponse, bool]:
    """The answer to ``request`` over a connection whose client showed ``client`` (to
    a listener built with ``listener``'s settings, by default ``config``'s), and
    whether the server closed the connection after it.
    """
    memory = MemoryReactorClock()
    router = Router(SiteBuilder(reactor=memory, threadpool=None).build(config))
    server, _ = handshake(listener_context(listener or config), client, server_name=server_name)
    transport = TLSStringTransport(server)
    connection = connect(router, settings=HttpSettings(max_body=1000), transport=transport)
    connection.factory.body_limit = router.body_limit  # (as the service does)
    connection.send(request)
    [response] = parse_responses(transport.value(), [method])
    return response, connection.is_closed()


GET = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"


def test_a_verified_client_reaches_the_application_with_its_certificate(
    material: Material,
) -> None:
    response, closed = ask_through_site(load(material, "on"), material.alice, GET)
    assert response.status == 200 and not closed
    seen = json.loads(response.body)
    assert seen["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert seen["SSL_CLIENT_S_DN"] == "O=Example,CN=alice"
    assert seen["SSL_CLIENT_I_DN"] == "O=Example,CN=Test CA"
    assert seen["SSL_CLIENT_M_SERIAL"] == "1A2B"
    assert x509.load_pem_x509_certificate(seen["SSL_CLIENT_CERT"].encode()) == (
        material.alice.certificate
    )


@pytest.mark.parametrize(
    ("mode", "client_name", "expected"),
    [
        ("on", None, b"needs a client certificate"),
        ("on", "mallory", b"did not verify"),
        ("on", "expired", b"did not verify (certificate has expired)"),
        ("optional", "mallory", b"did not verify"),
    ],
)
def test_a_refused_client_gets_400_and_the_connection_closes(
    material: Material, mode: str, client_name: str | None, expected: bytes
) -> None:
    client = None if client_name is None else getattr(material, client_name)
    response, closed = ask_through_site(load(material, mode), client, GET)
    assert response.status == 400
    assert expected in response.body
    assert response.header(b"connection") == b"close"
    assert closed


@pytest.mark.parametrize(
    ("mode", "client_name", "verify"),
    [("optional", None, "NONE"), ("optional_no_ca", "mallory", "FAILED:")],
)
def test_optional_modes_let_the_application_decide(
    material: Material, mode: str, client_name: str | None, verify: str
) -> None:
    client = None if client_name is None else getattr(material, client_name)
    response, _ = ask_through_site(load(material, mode), client, GET)
    assert response.status == 200
    assert json.loads(response.body)["SSL_CLIENT_VERIFY"].startswith(verify)


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_a_connection_asked_otherwise_is_sent_to_a_new_one(material: Material, mode: str) -> None:
    """One opened before a reload turned verification on (or changed it), never
    asked as the host asks now, gets 421: the client sends the request again on a
    new connection (browsers do by themselves), where it is asked.
    """
    for listener in (
        load(material, "off"),
        load(material, mode, tls_client_certificate=str(material.other_ca.certificate_file)),
    ):
        response, closed = ask_through_site(
            load(material, mode), material.alice, GET, listener=listener
        )
        assert response.status == 421
        assert b"send the request on a new connection" in response.body
        assert closed


def test_a_host_that_redirects_plain_http_still_checks_tls_clients(
    material: Material, tmp_path: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen(8443)}", "tcp:0"]\n'
        'threads = 0\naccess_log = "off"\ntls_verify_client = "on"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n'
        'https_redirect = "on"\n'
        '[[host]]\nnames = ["a.test"]\nmount = [{path = "/", app = "tests.apps:hello"}]\n'
    )
    config = cli.load_config({"config": str(site)})
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    plain = connect(router)
    plain.send(GET)
    [response] = parse_responses(plain.transport.value())
    assert response.status == 301
    response, _ = ask_through_site(config, None, GET)
    assert response.status == 400
    response, _ = ask_through_site(config, material.alice, GET)
    assert response.status == 200


def test_the_refusal_comes_before_the_body_limit(material: Material) -> None:
    """As nginx checks the certificate as it takes the request head: an upload from a
    refused client is not read, whatever its size.
    """
    upload = b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    response, _ = ask_through_site(load(material, "on"), None, upload, b"POST")
    assert response.status == 400
    response, _ = ask_through_site(load(material, "on"), material.alice, upload, b"POST")
    assert response.status == 413


def test_the_hosts_error_page_is_sent(material: Material, tmp_path: Path) -> None:
    (tmp_path / "400.html").write_text("<h1>Show your badge</h1>")
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\n'
        'threads = 0\naccess_log = "off"\ntls_verify_client = "on"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n'
        '[[host]]\nnames = ["a.test"]\nerror_pages = { 400 = "400.html" }\n'
        'mount = [{path = "/", app = "tests.apps:hello"}]\n'
    )
    config = cli.load_config({"config": str(site)})
    response, _ = ask_through_site(config, None, GET)
    assert response.status == 400
    assert response.body == b"<h1>Show your badge</h1>"


def test_plain_http_and_tls_without_verification_carry_no_certificate(
    material: Material,
) -> None:
    config = load(material, "on", listen=[material.listen(), "tcp:0"])
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    connection = connect(router)
    connection.send(GET)
    [response] = parse_responses(connection.transport.value())
    assert response.status == 200
    assert "SSL_CLIENT_VERIFY" not in json.loads(response.body)
    response, _ = ask_through_site(load(material, "off"), material.alice, GET)
    assert "SSL_CLIENT_VERIFY" not in json.loads(response.body)


# -- per host ------------------------------------------------------------------------------


def per_host_site(material: Material, directory: Path, server: str = "") -> ServerConfig:
    """admin.test asks for certificates (verified against the CA), www.test does not;
    shop.test has its own server certificate and asks as optional.
    """
    key, certificate = write_self_signed_certificate(directory, names=("shop.test",), prefix="s-")
    hello = 'mount = [{path = "/", app = "tests.apps:environ"}]'
    site = directory / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\nthreads = 0\naccess_log = "off"\n{server}\n'
        f'[[host]]\nnames = ["www.test"]\ndefault = true\n{hello}\n'
        '[[host]]\nnames = ["admin.test"]\ntls_verify_client = "on"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n{hello}\n'
        '[[host]]\nnames = ["shop.test"]\ntls_verify_client = "optional"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n'
        f'tls_certificate = "{certificate}"\ntls_key = "{key}"\n{hello}\n'
    )
    return cli.load_config({"config": str(site)})


@pytest.mark.parametrize(
    "case",
    [
        # Asked where the server name selects a host that asks, not elsewhere.
        (b"admin.test", "alice", b"admin.test", 200, "SUCCESS"),
        (b"admin.test", None, b"admin.test", 400, None),
        (b"admin.test", "mallory", b"admin.test", 400, None),
        (b"www.test", "alice", b"www.test", 200, None),
        (None, "alice", b"www.test", 200, None),
        (b"shop.test", None, b"shop.test", 200, "NONE"),
        (b"shop.test", "mallory", b"shop.test", 400, None),
        # A Host that selects a host asking otherwise than the handshake's: 421.
        (b"www.test", "alice", b"admin.test", 421, None),
        (None, None, b"admin.test", 421, None),
        (b"shop.test", "alice", b"admin.test", 421, None),
        # A host that does not ask takes a connection asked for another's.
        (b"admin.test", "alice", b"www.test", 200, "SUCCESS"),
    ],
)
def test_each_host_asks_as_it_is_configured(
    material: Material, tmp_path: Path, case: tuple[Any, ...]
) -> None:
    """(server name, client, Host, status, SSL_CLIENT_VERIFY seen) for each case."""
    server_name, client_name, host, status, verify = case
    config = per_host_site(material, tmp_path)
    client = None if client_name is None else getattr(material, client_name)
    request = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    response, _ = ask_through_site(config, client, request, server_name=server_name)
    assert response.status == status, response.body
    if status == 200:
        assert json.loads(response.body).get("SSL_CLIENT_VERIFY") == verify


def test_a_host_with_its_own_certificate_and_verification(
    material: Material, tmp_path: Path
) -> None:
    context = listener_context(per_host_site(material, tmp_path))
    _, client = handshake(context, None, server_name=b"shop.test")
    served = client.get_peer_certificate(as_cryptography=True)
    assert served is not None
    assert served.subject.rfc4514_string() == "CN=localhost"  # (write_self_signed's name)
    assert served.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["shop.test"]
    assert [name.der() for name in client.get_client_ca_list()] == [
        material.ca.certificate.subject.public_bytes()
    ]
    _, client = handshake(context, None, server_name=b"www.test")
    assert client.get_client_ca_list() == []


def test_a_host_may_turn_the_servers_verification_off(material: Material, tmp_path: Path) -> None:
    ca = material.ca.certificate_file
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\nthreads = 0\naccess_log = "off"\n'
        f'tls_verify_client = "on"\ntls_client_certificate = "{ca}"\n'
        '[[host]]\nnames = ["public.test"]\ntls_verify_client = "off"\n'
        'mount = [{path = "/", app = "tests.apps:environ"}]\n'
        '[[host]]\nnames = ["admin.test"]\ndefault = true\n'
        'mount = [{path = "/", app = "tests.apps:environ"}]\n'
    )
    config = cli.load_config({"config": str(site)})
    public = b"GET / HTTP/1.1\r\nHost: public.test\r\n\r\n"
    admin = b"GET / HTTP/1.1\r\nHost: admin.test\r\n\r\n"
    response, _ = ask_through_site(config, None, public, server_name=b"public.test")
    assert response.status == 200
    assert "SSL_CLIENT_VERIFY" not in json.loads(response.body)
    response, _ = ask_through_site(config, None, admin, server_name=b"admin.test")
    assert response.status == 400
    response, _ = ask_through_site(config, material.alice, admin, server_name=b"admin.test")
    assert response.status == 200


def two_cas_site(material: Material, directory: Path, server: str = "") -> ServerConfig:
    """one.test verifies against the CA, two.test against the other CA."""
    hello = 'mount = [{path = "/", app = "tests.apps:environ"}]'
    site = directory / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\nthreads = 0\naccess_log = "off"\n{server}\n'
        f'[[host]]\nnames = ["www.test"]\ndefault = true\n{hello}\n'
        '[[host]]\nnames = ["one.test"]\ntls_verify_client = "on"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n{hello}\n'
        '[[host]]\nnames = ["two.test"]\ntls_verify_client = "on"\n'
        f'tls_client_certificate = "{material.other_ca.certificate_file}"\n{hello}\n'
    )
    return cli.load_config({"config": str(site)})


def server_asks_with(ca: Issued) -> str:
    return f'tls_verify_client = "on"\ntls_client_certificate = "{ca.certificate_file}"'


def request_for(host: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"


@pytest.mark.parametrize("server_asks", [False, True])
def test_each_host_verifies_against_its_own_cas(
    material: Material, tmp_path: Path, server_asks: bool
) -> None:
    server = server_asks_with(material.other_ca) if server_asks else ""
    config = two_cas_site(material, tmp_path, server)
    for name, trusted, other in (
        (b"one.test", material.alice, material.mallory),
        (b"two.test", material.mallory, material.alice),
    ):
        response, _ = ask_through_site(config, trusted, request_for(name), server_name=name)
        assert response.status == 200
        response, _ = ask_through_site(config, other, request_for(name), server_name=name)
        assert response.status == 400
    upload = b"POST / HTTP/1.1\r\nHost: one.test\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    response, _ = ask_through_site(config, None, upload, b"POST", server_name=b"one.test")
    assert response.status == 400  # before the body limit (413)


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
@pytest.mark.parametrize("first_name", [b"two.test", None])
def test_a_session_verified_for_one_host_is_not_resumed_for_another(
    material: Material, tmp_path: Path, version: int, first_name: bytes | None
) -> None:
    """OpenSSL finds a TLS 1.3 ticket before the server name switches the connection
    to its host's context: a session verified against another host's CAs would pass
    (nginx's CVE-2025-23419). A listener whose hosts trust different CAs resumes none.
    """
    config = two_cas_site(material, tmp_path, server_asks_with(material.other_ca))
    context = listener_context(config)
    on = client_context(material.mallory)  # the other CA's: two.test and the server's
    on.set_max_proto_version(version)
    first, client = handshake(context, on, server_name=first_name)
    assert from_connection(first).verify == "SUCCESS"
    server, _ = handshake(context, on, session=client.get_session(), server_name=b"one.test")
    assert not session_reused(server)
    assert from_connection(server).verify.startswith("FAILED:")


def test_one_set_of_cas_keeps_resumption(material: Material, tmp_path: Path) -> None:
    context = listener_context(per_host_site(material, tmp_path))
    on = client_context(material.alice)
    _, client = handshake(context, on, server_name=b"admin.test")
    server, _ = handshake(context, on, session=client.get_session(), server_name=b"admin.test")
    assert session_reused(server)


def test_a_host_with_its_own_verification_is_not_served_over_plain_http(
    material: Material, tmp_path: Path
) -> None:
    """The listeners are every host's: a plain one would serve it unchecked (nginx's
    server block would simply not listen there).
    """
    config = per_host_site(material, tmp_path)
    config = dataclasses.replace(config, listen=(*config.listen, "tcp:0"))
    router = Router(SiteBuilder(reactor=MemoryReactorClock(), threadpool=None).build(config))
    for host, status in ((b"admin.test", 403), (b"shop.test", 403), (b"www.test", 200)):
        connection = connect(router)
        connection.send(request_for(host))
        [response] = parse_responses(connection.transport.value())
        assert response.status == status


def test_the_servers_ca_file_serves_a_host_that_asks(material: Material, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\nthreads = 0\naccess_log = "off"\n'
        f'tls_client_certificate = "{material.ca.certificate_file}"\n'
        '[[host]]\nnames = ["admin.test"]\ntls_verify_client = "on"\n'
        'mount = [{path = "/", app = "tests.apps:environ"}]\n'
    )
    config = cli.load_config({"config": str(site)})
    request = request_for(b"admin.test")
    for client, status in ((material.alice, 200), (material.mallory, 400)):
        response, _ = ask_through_site(config, client, request, server_name=b"admin.test")
        assert response.status == status


def test_upstream_certificate_mistakes_are_named(material: Material, tmp_path: Path) -> None:
    def error(keys: str) -> str:
        site = tmp_path / "site.toml"
        site.write_text(
            '[server]\nlisten = ["tcp:0"]\n[[host]]\nnames = ["a.test"]\n[[host.mount]]\n'
            f'path = "/"\nproxy = "https://localhost:9443"\n{keys}\n'
        )
        config = cli.load_config({"config": str(site)})
        with pytest.raises(ConfigError) as raised:
            make_service(config, reactor=MemoryReactorClock(), endpoints=[])
        return str(raised.value)

    alice = material.alice
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        alice.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert error(
        f'upstream_certificate = "{alice.certificate_file}"\nupstream_key = "{encrypted}"'
    ).endswith(
        f"mount[0].upstream_key: '{encrypted}': the key is encrypted; give a key without a"
        " passphrase"
    )
    assert error(f'upstream_certificate = "{alice.certificate_file}"').endswith(
        f"mount[0].upstream_certificate: '{alice.certificate_file}': no private key: give its"
        " file as upstream_key"
    )
    assert error(
        f'upstream_certificate = "{alice.certificate_file}"\n'
        f'upstream_key = "{material.mallory.key_file}"'
    ).endswith(
        f"mount[0].upstream_key: '{material.mallory.key_file}': this key is not the certificate's"
    )
    # The certificate's file holding a key too: upstream_key, when given, is the key.
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(alice.certificate_file.read_bytes() + alice.key_file.read_bytes())
    assert "this key is not the certificate's" in error(
        f'upstream_certificate = "{bundle}"\nupstream_key = "{material.mallory.key_file}"'
    )
    encrypted_bundle = tmp_path / "encrypted-bundle.pem"
    encrypted_bundle.write_bytes(alice.certificate_file.read_bytes() + encrypted.read_bytes())
    # (Never OpenSSL's passphrase prompt: the encrypted key there is not read.)
    identity = load_client_identity(str(encrypted_bundle), str(alice.key_file))
    assert identity.certificate.original.to_cryptography() == alice.certificate
    assert load_client_identity(str(bundle), None).certificate.original.to_cryptography() == (
        alice.certificate
    )
    assert error(f'upstream_key = "{alice.key_file}"').endswith(
        "upstream_key: needs upstream_certificate, the certificate it signs"
    )
    site = tmp_path / "site.toml"
    site.write_text(
        '[server]\nlisten = ["tcp:0"]\n[[host]]\nnames = ["a.test"]\n[[host.mount]]\n'
        'path = "/"\nproxy = "http://127.0.0.1:9000"\n'
        f'upstream_certificate = "{alice.certificate_file}"\n'
        f'upstream_key = "{alice.key_file}"\n'
    )
    with pytest.raises(ConfigError, match="no upstream of this mount is https://"):
        make_service(
            cli.load_config({"config": str(site)}), reactor=MemoryReactorClock(), endpoints=[]
        )
    # Relative paths are read from the configuration file's directory.
    shutil.copy(bundle, tmp_path / "client.pem")
    site.write_text(
        '[server]\nlisten = ["tcp:0"]\n[[host]]\nnames = ["a.test"]\n[[host.mount]]\n'
        'path = "/"\nproxy = "https://127.0.0.1:9000"\n'
        'upstream_certificate = "client.pem"\nupstream_key = "client.pem"\n'
    )
    [mount] = cli.load_config({"config": str(site)}).hosts[0].mounts
    assert mount.options["upstream_certificate"] == str(tmp_path / "client.pem")
    assert mount.options["upstream_key"] == str(tmp_path / "client.pem")


def test_host_settings_mistakes_are_named(material: Material, tmp_path: Path) -> None:
    ca = material.ca.certificate_file

    def error(server: str, host: str, listen: str | None = None) -> str:
        site = tmp_path / "site.toml"
        site.write_text(
            "[server]\n"
            f'listen = ["{listen or material.listen()}"]\n{server}\n'
            f'[[host]]\nnames = ["a.test"]\n{host}\n'
            'mount = [{path = "/", app = "tests.apps:hello"}]\n'
        )
        with pytest.raises(ConfigError) as raised:
            cli.load_config({"config": str(site)})
        return str(raised.value)

    assert error("", 'tls_verify_client = "on"') == (
        "site.toml: host[0].tls_verify_client: needs tls_client_certificate (here or in"
        " [server]), the CA certificates client certificates are verified against"
    )
    assert error("", f'tls_client_certificate = "{ca}"') == (
        "site.toml: host[0].tls_client_certificate: clients of this host are not asked"
        " for certificates: set tls_verify_client (here or in [server])"
    )
    assert error(
        "", f'tls_verify_client = "on"\ntls_client_certificate = "{ca}"', listen="tcp:0"
    ) == (
        "site.toml: host[0].tls_verify_client: no listener is ssl:, so no client would"
        " be asked for a certificate"
    )
    (tmp_path / "bad.pem").write_text("nope\n")
    assert "cannot load the CA certificates" in error(
        "", 'tls_verify_client = "on"\ntls_client_certificate = "bad.pem"'
    )


# -- configuration -----------------------------------------------------------------------


def config_error(given: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"app": "tests.apps:hello", **given})
    return str(raised.value)


def test_configuration_mistakes_are_named(material: Material) -> None:
    ssl_listen = [material.listen()]
    ca = str(material.ca.certificate_file)
    assert config_error({"listen": ssl_listen, "tls_verify_client": "on"}) == (
        "--tls-verify-client: needs tls_client_certificate, the CA certificates client"
        " certificates are verified against"
    )
    assert "needs tls_client_certificate" in config_error(
        {"listen": ssl_listen, "tls_verify_client": "optional"}
    )
    assert config_error({"listen": ssl_listen, "tls_client_certificate": ca}) == (
        "--tls-client-certificate: clients are not asked for certificates: set"
        " tls_verify_client (on, optional or optional_no_ca), in [server] or in a [[host]]"
    )
    assert config_error(
        {"listen": ["tcp:0"], "tls_verify_client": "on", "tls_client_certificate": ca}
    ) == ("--tls-verify-client: no listener is ssl:, so no client would be asked for a certificate")
    assert "expected one of off, on, optional, optional_no_ca" in config_error(
        {"listen": ssl_listen, "tls_verify_client": "required"}
    )
    assert "does not exist" in config_error(
        {
            "listen": ssl_listen,
            "tls_verify_client": "on",
            "tls_client_certificate": str(material.directory / "missing.pem"),
        }
    )
    # optional_no_ca verifies against nothing if need be.
    assert load(material, "optional_no_ca", tls_client_certificate=None).tls_verify_client == (
        "optional_no_ca"
    )


def test_a_ca_file_that_does_not_load_is_a_configuration_error(material: Material) -> None:
    """Read with the configuration (not only with the listeners), so a reload with
    such a file is refused whole, before its routing table serves.
    """
    not_pem = material.directory / "not-pem.txt"
    not_pem.write_text("hello\n")
    assert config_error(
        {
            "listen": [material.listen()],
            "tls_verify_client": "on",
            "tls_client_certificate": str(not_pem),
        }
    ) == (
        f"--tls-client-certificate: {str(not_pem)!r}: cannot load the CA certificates:"
        " expected a PEM file of them"
    )


def test_a_ca_file_gone_bad_before_the_listeners_are_built_stops_the_start(
    material: Material, capfd: pytest.CaptureFixture[str]
) -> None:
    ca = material.directory / "changing-ca.pem"
    shutil.copy(material.ca.certificate_file, ca)
    config = load(material, "on", tls_client_certificate=str(ca))
    ca.write_text("hello\n")
    with pytest.raises(SystemExit) as raised:
        cli.build_endpoints(reactor, config)
    assert raised.value.code == 2
    [line] = capfd.readouterr().err.strip().splitlines()
    assert line == (
        f"twistwsgi: error: --tls-client-certificate {str(ca)!r}: cannot load the CA"
        " certificates: expected a PEM file of them"
    )


def test_a_relative_file_is_read_from_the_configuration_files_directory(
    material: Material, tmp_path: Path
) -> None:
    shutil.copy(material.ca.certificate_file, tmp_path / "clients-ca.pem")
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\napp = "tests.apps:hello"\n'
        'tls_verify_client = "optional"\ntls_client_certificate = "clients-ca.pem"\n'
    )
    config = cli.load_config({"config": str(site)})
    assert config.tls_client_certificate == str(tmp_path / "clients-ca.pem")
    assert (
        f"client certificates: optional, verified with {tmp_path / 'clients-ca.pem'}"
        in describe_routing(config)
    )


# -- revocation (tls_crl) -----------------------------------------------------------------


def revocation_list(directory: Path, stem: str, issuer: Issued, *revoked: Issued) -> Path:
    """A PEM file with ``issuer``'s CRL revoking ``revoked``, current for a day."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(NOW - datetime.timedelta(hours=1))
        .next_update(NOW + datetime.timedelta(days=1))
    )
    for certificate in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(certificate.certificate.serial_number)
            .revocation_date(NOW - datetime.timedelta(minutes=30))
            .build()
        )
    path = directory / f"{stem}.pem"
    path.write_bytes(
        builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    return path


@pytest.fixture(scope="module")
def revoked(material: Material) -> tuple[Issued, Path]:
    """A client of the CA whose certificate its CRL revokes, and that CRL's file."""
    carol = issue(material.directory, "carol", _name("carol", "Example"), by=material.ca)
    return carol, revocation_list(material.directory, "ca-crl", material.ca, carol)


@pytest.mark.parametrize("mode", ["on", "optional", "optional_no_ca"])
def test_a_revoked_certificate_does_not_verify_in_any_mode(
    material: Material, revoked: tuple[Issued, Path], mode: str
) -> None:
    """As with nginx's ssl_crl, "certificate revoked" is OpenSSL's verdict, refused
    as an expired certificate is (optional_no_ca takes only unknown issuers); the
    CA's other clients verify as before.
    """
    carol, crl = revoked
    context = listener_context(load(material, mode, tls_crl=str(crl)))
    verdict = from_connection(handshake(context, carol)[0])
    assert verdict.verify == "FAILED:certificate revoked"
    assert refusal(mode, verdict) == (
        b"Bad Request: the client certificate did not verify (certificate revoked)\n"
    )
    assert from_connection(handshake(context, material.alice)[0]).verify == "SUCCESS"
    # Without the list, nothing is known of the revocation.
    unchecked = listener_context(load(material, mode))
    assert from_connection(handshake(unchecked, carol)[0]).verify == "SUCCESS"


def test_a_revoked_client_gets_400_through_the_site(
    material: Material, revoked: tuple[Issued, Path]
) -> None:
    carol, crl = revoked
    response, closed = ask_through_site(load(material, "on", tls_crl=str(crl)), carol, GET)
    assert response.status == 400 and closed
    assert b"did not verify (certificate revoked)" in response.body


def test_a_host_that_asks_checks_the_servers_revocation_list(
    material: Material, revoked: tuple[Issued, Path], tmp_path: Path
) -> None:
    """A host's context (chosen by SNI) has the server's CRLs too."""
    carol, crl = revoked
    config = per_host_site(material, tmp_path, server=f'tls_crl = "{crl}"')
    context = listener_context(config)
    for name in (b"admin.test", b"shop.test"):  # the listener's certificate, and its own
        server, _ = handshake(context, carol, server_name=name)
        assert from_connection(server).verify == "FAILED:certificate revoked", name


def test_every_ca_of_the_chain_is_checked(
    material: Material, revoked: tuple[Issued, Path], tmp_path: Path
) -> None:
    """As nginx (CRL_CHECK_ALL): a client whose issuer has no CRL in the file is
    refused rather than passed unchecked, and one whose intermediate CA is revoked
    is refused; the trusted CA itself needs no CRL.
    """
    _, crl = revoked
    middle = issue(tmp_path, "middle", _name("Middle CA"), by=material.ca, authority=True)
    dave = issue(tmp_path, "dave", _name("dave"), by=middle)
    middle_crl = revocation_list(tmp_path, "middle-crl", middle).read_bytes()

    def verdict(*lists: bytes) -> str:
        path = tmp_path / "crls.pem"
        path.write_bytes(b"".join(lists))
        context = listener_context(load(material, "on", tls_crl=str(path)))
        chain = client_context(dave)
        chain.add_extra_chain_cert(crypto.X509.from_cryptography(middle.certificate))
        return from_connection(handshake(context, chain)[0]).verify

    assert verdict(crl.read_bytes()) == "FAILED:unable to get certificate CRL"
    assert verdict(crl.read_bytes(), middle_crl) == "SUCCESS"
    middle_revoked = revocation_list(tmp_path, "ca-crl-2", material.ca, middle).read_bytes()
    assert verdict(middle_revoked, middle_crl) == "FAILED:certificate revoked"


def test_revocation_list_mistakes_are_named(
    material: Material, revoked: tuple[Issued, Path]
) -> None:
    _, crl = revoked
    ssl_listen = [material.listen()]
    ca = str(material.ca.certificate_file)
    asking = {"listen": ssl_listen, "tls_verify_client": "on", "tls_client_certificate": ca}
    assert config_error({**asking, "tls_crl": ca}) == (
        f"--tls-crl: {ca!r}: no certificate revocation list: expected a PEM file of them"
    )
    broken = material.directory / "broken-crl.pem"
    text = crl.read_text()
    broken.write_text(text + text.replace("\n", "\nAAAA", 2))
    assert config_error({**asking, "tls_crl": str(broken)}) == (
        f"--tls-crl: {str(broken)!r}: revocation list 2 of the file does not load"
    )
    assert config_error({"listen": ssl_listen, "tls_crl": str(crl)}) == (
        "--tls-crl: clients are not asked for certificates: set tls_verify_client"
        " (on, optional or optional_no_ca), in [server] or in a [[host]]"
    )


def test_a_revocation_list_gone_bad_before_the_listeners_are_built_stops_the_start(
    material: Material, revoked: tuple[Issued, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    _, crl = revoked
    changing = material.directory / "changing-crl.pem"
    shutil.copy(crl, changing)
    config = load(material, "on", tls_crl=str(changing))
    changing.write_text("hello\n")
    with pytest.raises(SystemExit) as raised:
        cli.build_endpoints(reactor, config)
    assert raised.value.code == 2
    [line] = capfd.readouterr().err.strip().splitlines()
    assert line == (
        f"twistwsgi: error: --tls-crl {str(changing)!r}: no certificate revocation list:"
        " expected a PEM file of them"
    )


def test_a_relative_revocation_list_is_read_from_the_configuration_files_directory(
    material: Material, revoked: tuple[Issued, Path], tmp_path: Path
) -> None:
    _, crl = revoked
    shutil.copy(material.ca.certificate_file, tmp_path / "clients-ca.pem")
    shutil.copy(crl, tmp_path / "clients.crl")
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["{material.listen()}"]\napp = "tests.apps:hello"\n'
        'tls_verify_client = "on"\ntls_client_certificate = "clients-ca.pem"\n'
        'tls_crl = "clients.crl"\n'
    )
    config = cli.load_config({"config": str(site)})
    assert config.tls_crl == str(tmp_path / "clients.crl")
    assert f"client certificate revocation lists: {tmp_path / 'clients.crl'}" in describe_routing(
        config
    )


# -- real sockets -------------------------------------------------------------------------


class RealClientTests(TestCase):
    """Python's ssl client and curl against a served listener."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.material = make_material(self.directory)
        # One per client: a session resumes only in the context that made it.
        self.contexts: dict[Issued | None, ssl.SSLContext] = {}

    def serve(self, config: ServerConfig) -> tuple[Any, int]:
        endpoints = cli.build_endpoints(reactor, config)
        service = make_service(config, reactor=reactor, endpoints=endpoints)
        service.startService()
        self.addCleanup(service.stopService)
        self.service = service
        port = service.ports[0].getHost().port  # type: ignore[attr-defined]
        return endpoints, port

    def fetch(
        self, port: int, client: Issued | None, session: Any = None
    ) -> tuple[bytes, Any, bool | None]:
        """GET / with ``client``'s certificate (or none): the bytes received, the
        session and whether it was resumed.
        """
        context = self.contexts.get(client)
        if context is None:
            context = ssl.create_default_context(cafile=str(self.material.server_certificate))
            if client is not None:
                context.load_cert_chain(str(client.certificate_file), str(client.key_file))
            self.contexts[client] = context
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
            return received, tls.session, tls.session_reused

    async def test_python_clients_with_and_without_certificates(self) -> None:
        _, port = self.serve(load(self.material, "on"))
        received, session, _ = await deferToThread(self.fetch, port, self.material.alice)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert b'"SSL_CLIENT_S_DN": "O=Example,CN=alice"' in received
        # Resumed (no verification runs): the same certificate, still verified.
        received, _, reused = await deferToThread(self.fetch, port, self.material.alice, session)
        assert reused and received.startswith(b"HTTP/1.1 200 ")
        assert b'"SSL_CLIENT_VERIFY": "SUCCESS"' in received
        received, _, _ = await deferToThread(self.fetch, port, None)
        assert received.startswith(b"HTTP/1.1 400 ")
        assert b"needs a client certificate" in received
        received, _, _ = await deferToThread(self.fetch, port, self.material.mallory)
        assert received.startswith(b"HTTP/1.1 400 ")

    async def test_curl_with_a_certificate(self) -> None:
        if shutil.which("curl") is None:
            self.skipTest("curl is not installed (make test installs it)")
        _, port = self.serve(load(self.material, "on", app="tests.apps:hello"))
        result = await deferToThread(
            subprocess.run,
            [
                "curl",
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                str(self.material.server_certificate),
                "--cert",
                str(self.material.alice.certificate_file),
                "--key",
                str(self.material.alice.key_file),
                "-w",
                "\n%{http_code}",
                f"https://localhost:{port}/",
            ],
            capture_output=True,
        )
        assert result.stdout == b"Hello, World!\n200", result.stderr

    async def test_a_reload_reads_the_ca_file_again(self) -> None:
        """After the CA file changes (and SIGHUP), clients of the new CA pass and
        those of the old one are refused; connections that resume an old session
        get a full handshake.
        """
        material = self.material
        config = load(material, "on")
        endpoints, port = self.serve(config)
        received, session, _ = await deferToThread(self.fetch, port, material.alice)
        assert received.startswith(b"HTTP/1.1 200 ")
        shutil.copy(material.other_ca.certificate_file, material.ca.certificate_file)
        assert self.service.reload(config)
        cli.reload_certificates(reactor, endpoints, config)
        received, _, reused = await deferToThread(self.fetch, port, material.alice, session)
        assert not reused
        assert received.startswith(b"HTTP/1.1 400 ")
        received, _, _ = await deferToThread(self.fetch, port, material.mallory)
        assert received.startswith(b"HTTP/1.1 200 ")

    async def test_a_proxy_mount_passes_the_certificate_on(self) -> None:
        """proxy_set_header gives the upstream what the certificate says, as nginx's
        proxy_set_header X-SSL-Client-DN $ssl_client_s_dn does.
        """
        upstream_config = cli.load_config(
            {
                "app": "tests.apps:environ",
                "listen": ["tcp:0:interface=127.0.0.1"],
                "threads": "0",
                "access_log": "off",
            }
        )
        _, upstream_port = self.serve(upstream_config)
        site = self.directory / "site.toml"
        site.write_text(
            "[server]\n"
            f'listen = ["{self.material.listen()}"]\n'
            'threads = 0\naccess_log = "off"\ntls_verify_client = "on"\n'
            f'tls_client_certificate = "{self.material.ca.certificate_file}"\n'
            '[[host]]\nnames = ["localhost"]\n[[host.mount]]\npath = "/"\n'
            f'proxy = "http://127.0.0.1:{upstream_port}"\n'
            'proxy_set_header = { X-Client-Verify = "$ssl_client_verify",'
            ' X-Client-DN = "$ssl_client_s_dn", X-Client-Cert = "$ssl_client_escaped_cert" }\n'
        )
        _, port = self.serve(cli.load_config({"config": str(site)}))
        received, _, _ = await deferToThread(self.fetch, port, self.material.alice)
        assert received.startswith(b"HTTP/1.1 200 ")
        seen = json.loads(received.partition(b"\r\n\r\n")[2])
        assert seen["HTTP_X_CLIENT_VERIFY"] == "SUCCESS"
        assert seen["HTTP_X_CLIENT_DN"] == "O=Example,CN=alice"
        pem = urllib.parse.unquote(seen["HTTP_X_CLIENT_CERT"])
        assert x509.load_pem_x509_certificate(pem.encode()) == self.material.alice.certificate

    async def test_a_library_server_of_one_application_checks_too(self) -> None:
        config = replace(load(self.material, "on"), hosts=())
        endpoints = cli.build_endpoints(reactor, config)
        service = make_service(config, apps.environ, reactor=reactor, endpoints=endpoints)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.ports[0].getHost().port  # type: ignore[attr-defined]
        received, _, _ = await deferToThread(self.fetch, port, None)
        assert received.startswith(b"HTTP/1.1 400 ")
        received, _, _ = await deferToThread(self.fetch, port, self.material.alice)
        assert received.startswith(b"HTTP/1.1 200 ")
        with pytest.raises(ConfigError, match="needs the listeners twistwsgi builds"):
            make_service(config, apps.environ, reactor=reactor)
        # A host's own setting too.
        per_host = per_host_site(self.material, self.directory)
        with pytest.raises(ConfigError, match="needs the listeners twistwsgi builds"):
            make_service(per_host, reactor=reactor)

    async def test_verification_turned_on_by_a_reload_whose_key_is_unreadable(self) -> None:
        """The listener keeps its certificate (the key is root's after --uid) and
        takes the new settings: it asks from then on. A connection opened before is
        refused rather than let through.
        """
        material = self.material
        site = self.directory / "site.toml"

        def write(verification: str) -> None:
            site.write_text(
                "[server]\n"
                f'listen = ["{material.listen()}"]\n'
                'threads = 0\naccess_log = "off"\napp = "tests.apps:environ"\n' + verification
            )

        write("")
        given = {"config": str(site)}
        endpoints, port = self.serve(cli.load_config(given))
        service = self.service
        old = await deferToThread(self.open_connection, port)
        self.addCleanup(old.close)
        assert (await deferToThread(self.ask_on, old)).startswith(b"HTTP/1.1 200 ")
        write(
            f'tls_verify_client = "on"\ntls_client_certificate = "{material.ca.certificate_file}"\n'
        )
        material.server_key.chmod(0)
        material.server_key.write_text("")  # (unreadable for root too)
        # (What SIGHUP does: reload_server, without its garbage-collection timer.)
        config = cli.load_config(given)
        assert service.reload(config)
        cli.reload_certificates(reactor, endpoints, config)
        received, _, _ = await deferToThread(self.fetch, port, None)
        assert received.startswith(b"HTTP/1.1 400 ")
        received, _, _ = await deferToThread(self.fetch, port, material.alice)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert (await deferToThread(self.ask_on, old)).startswith(b"HTTP/1.1 421 ")

    def open_connection(self, port: int) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=str(self.material.server_certificate))
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        return context.wrap_socket(raw, server_hostname="localhost")

    def ask_on(self, tls: ssl.SSLSocket) -> bytes:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return tls.recv(65536)

    async def test_a_proxy_mount_shows_its_certificate_to_an_upstream_that_asks(
        self,
    ) -> None:
        """upstream_certificate (nginx's proxy_ssl_certificate): the upstream, a
        twistwsgi behind tls_verify_client on, sees the mount's certificate.
        """
        material = self.material
        _, upstream_port = self.serve(load(material, "on"))

        def front(extra: str) -> int:
            site = self.directory / "front.toml"
            site.write_text(
                '[server]\nlisten = ["tcp:0:interface=127.0.0.1"]\nthreads = 0\n'
                'access_log = "off"\n[[host]]\nnames = ["localhost"]\n'
                f'[[host.mount]]\npath = "/"\nproxy = "https://localhost:{upstream_port}"\n'
                f'tls_ca = "{material.server_certificate}"\n{extra}'
            )
            return self.serve(cli.load_config({"config": str(site)}))[1]

        def get(port: int) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("GET", "/", headers={"Host": "localhost"})
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        shown = front(
            f'upstream_certificate = "{material.alice.certificate_file}"\n'
            f'upstream_key = "{material.alice.key_file}"\n'
        )
        status, body = await deferToThread(get, shown)
        assert status == 200
        assert json.loads(body)["SSL_CLIENT_S_DN"] == "O=Example,CN=alice"
        status, body = await deferToThread(get, front(""))
        assert status == 400
        assert b"needs a client certificate" in body
        # With its chain: a certificate from an intermediate CA the upstream does not
        # have verifies only with the intermediate sent after it.
        intermediate = issue(
            self.directory, "intermediate", _name("Intermediate CA"), by=material.ca, authority=True
        )
        carol = issue(self.directory, "carol", _name("carol"), by=intermediate)
        chained = self.directory / "carol-chain.pem"
        chained.write_bytes(
            carol.certificate_file.read_bytes() + intermediate.certificate_file.read_bytes()
        )
        status, body = await deferToThread(
            get,
            front(f'upstream_certificate = "{chained}"\nupstream_key = "{carol.key_file}"\n'),
        )
        assert status == 200
        assert json.loads(body)["SSL_CLIENT_S_DN"] == "CN=carol"
        # Shown too when the upstream's own certificate is not verified.
        unverified = front(
            f'tls_verify = false\nupstream_certificate = "{material.alice.certificate_file}"\n'
            f'upstream_key = "{material.alice.key_file}"\n'
        )
        status, body = await deferToThread(get, unverified)
        assert status == 200

    async def test_the_metrics_listener_asks_for_no_certificate(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            metrics_port = probe.getsockname()[1]
        config = load(self.material, "on")
        config = replace(config, metrics_listen=self.material.listen(metrics_port))
        built = cli.build_metrics_endpoint(reactor, config)
        assert built is not None
        options = cli._tls_options(built[1])
        assert options.getContext().get_verify_mode() == SSL.VERIFY_NONE
        listener = listener_context(config)
        assert listener.get_verify_mode() & SSL.VERIFY_PEER
        # Nor for a host that asks.
        config = per_host_site(self.material, self.directory)
        config = replace(config, metrics_listen=self.material.listen(metrics_port))
        built = cli.build_metrics_endpoint(reactor, config)
        assert built is not None
        metrics = cli._tls_options(built[1]).getContext()
        server, _ = handshake(metrics, None, server_name=b"admin.test")
        assert from_connection(server) == NOT_ASKED
