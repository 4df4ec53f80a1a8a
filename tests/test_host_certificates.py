"""Per-host TLS certificates chosen by the client's server name (SNI).

The choice is checked with handshakes in memory (pyOpenSSL on both ends, the client
sending the name or none) against the listener's context as the command line builds
it, and once over a real socket with Python's ``ssl`` client verifying the name.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import apps
from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.config import ConfigError, HostConfig, MountConfig, ServerConfig, default_options
from twistwsgi.host_certificates import host_certificates
from twistwsgi.service import make_factory

reactor: Any = global_reactor


def served_names(
    context: SSL.Context,
    server_name: bytes | None,
    max_version: int | None = None,
    ciphers: bytes | None = None,
) -> tuple[str, ...]:
    """Shake hands in memory with a server on ``context``; the DNS names it served.

    The client may be held to TLS versions up to ``max_version`` and (TLS 1.2) to
    ``ciphers``, an OpenSSL cipher list.
    """
    server = SSL.Connection(context)
    server.set_accept_state()
    client_context = SSL.Context(SSL.TLS_METHOD)
    if max_version is not None:
        client_context.set_max_proto_version(max_version)
    if ciphers is not None:
        client_context.set_cipher_list(ciphers)
    client = SSL.Connection(client_context)
    client.set_connect_state()
    if server_name is not None:
        client.set_tlsext_host_name(server_name)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, other in (("client", client, server), ("server", server, client)):
            try:
                side.do_handshake()
                done[name] = True
            except SSL.WantReadError:
                pass
            with contextlib.suppress(SSL.WantReadError):  # nothing to send yet
                other.bio_write(side.bio_read(65536))
        if all(done.values()):
            break
    assert all(done.values()), "the handshake did not end"
    certificate = client.get_peer_certificate(as_cryptography=True)
    assert certificate is not None
    alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return tuple(alternative.value.get_values_for_type(x509.DNSName))


def write_site(directory: Path, hosts: str, server: str = "") -> Path:
    """A configuration file listening on ssl: with the listener's own certificate
    (for localhost), and ``hosts`` (certificate paths relative to the file).
    """
    key, cert = write_self_signed_certificate(directory, names=("listener.test",), prefix="own-")
    site = directory / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
        f'threads = 0\naccess_log = "off"\n{server}\n{hosts}'
    )
    return site


def listener_context(config: ServerConfig) -> SSL.Context:
    """The context of the first listener of ``config``, as the command line builds it."""
    endpoint = cli._endpoint_for(reactor, config.listen[0], config)
    context: SSL.Context = cli._tls_options(endpoint).getContext()
    return context


def host(names: str, extra: str = "") -> str:
    """A [[host]] table serving tests.apps:hello, with ``extra`` keys."""
    mount = 'mount = [{path = "/", app = "tests.apps:hello"}]'
    return f"[[host]]\nnames = [{names}]\n{extra}\n{mount}\n"


@pytest.fixture
def three_hosts(tmp_path: Path) -> tuple[ServerConfig, Any]:
    """a.test with its own certificate, *.b.test with another, c.b.test with none;
    the configuration and the listener's context built from it.
    """
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    write_self_signed_certificate(tmp_path, names=("*.b.test",), prefix="b-")
    site = write_site(
        tmp_path,
        host('"a.test"', 'tls_certificate = "a-cert.pem"\ntls_key = "a-key.pem"')
        + host('"*.b.test"', 'tls_certificate = "b-cert.pem"\ntls_key = "b-key.pem"')
        + host('"c.b.test"'),
    )
    config = cli.load_config({"config": str(site)})
    return config, listener_context(config)


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        (b"a.test", ("a.test",)),
        (b"A.Test", ("a.test",)),  # names are matched without case (RFC 6066 §3)
        (b"x.b.test", ("*.b.test",)),
        (b"deep.x.b.test", ("*.b.test",)),  # as the Host header's wildcard matching
        (b"c.b.test", ("listener.test",)),  # an exact host without a certificate
        (b"b.test", ("listener.test",)),
        (b"unknown.test", ("listener.test",)),
        (None, ("listener.test",)),  # no server name: an IP address in the URL
    ],
)
def test_the_certificate_is_the_named_hosts_else_the_listeners(
    three_hosts: tuple[ServerConfig, Any], server_name: bytes | None, expected: tuple[str, ...]
) -> None:
    """Before, a listener had one certificate for every host: two sites with a
    certificate each (certbot's usual) needed two ports or one certificate naming
    both. nginx picks the ssl_certificate of the server block the name matches.
    """
    _, context = three_hosts
    assert served_names(context, server_name) == expected


def test_the_default_hosts_certificate_goes_to_names_no_host_lists(tmp_path: Path) -> None:
    """As nginx sends the default server's certificate: to unknown names and to
    clients that send none, which the default host answers. A name of a host without
    a certificate of its own still gets the listener's.
    """
    write_self_signed_certificate(tmp_path, names=("*.example.org",), prefix="org-")
    site = write_site(
        tmp_path,
        host(
            '"*.example.org"',
            'default = true\ntls_certificate = "org-cert.pem"\ntls_key = "org-key.pem"',
        )
        + host('"plain.test"'),
    )
    config = cli.load_config({"config": str(site)})
    context = listener_context(config)
    assert served_names(context, b"www.example.org") == ("*.example.org",)
    assert served_names(context, b"example.org") == ("*.example.org",)
    assert served_names(context, b"unknown.test") == ("*.example.org",)
    assert served_names(context, None) == ("*.example.org",)
    assert served_names(context, b"plain.test") == ("listener.test",)


def test_a_host_named_by_a_regular_expression_or_short_form_gets_its_certificate(
    tmp_path: Path,
) -> None:
    """As nginx picks the server block for the ClientHello's name in server_name's
    order, regular expressions and .example.org included, and sends its certificate.
    """
    write_self_signed_certificate(tmp_path, names=("*.example.org",), prefix="org-")
    write_self_signed_certificate(tmp_path, names=("www1.example.net",), prefix="net-")
    site = write_site(
        tmp_path,
        host('".example.org"', 'tls_certificate = "org-cert.pem"\ntls_key = "org-key.pem"')
        + host(
            r"'~^www\d+\.example\.net$'",
            'tls_certificate = "net-cert.pem"\ntls_key = "net-key.pem"',
        ),
    )
    context = listener_context(cli.load_config({"config": str(site)}))
    assert served_names(context, b"example.org") == ("*.example.org",)
    assert served_names(context, b"a.example.org") == ("*.example.org",)
    assert served_names(context, b"www12.example.net") == ("www1.example.net",)
    assert served_names(context, b"www.example.net") == ("listener.test",)


def test_a_host_certificate_keeps_the_listeners_ciphers(tmp_path: Path) -> None:
    """After the switch OpenSSL takes the cipher list from the host's context: it
    must be the listener's tls_ciphers, not Twisted's default list (which still has
    static RSA and CBC).
    """
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = write_site(
        tmp_path,
        host('"a.test"', 'tls_certificate = "a-cert.pem"\ntls_key = "a-key.pem"'),
        server='tls_ciphers = "ECDHE+AESGCM"',
    )
    config = cli.load_config({"config": str(site)})
    context = listener_context(config)
    tls12 = SSL.TLS1_2_VERSION
    for name in (b"a.test", None):
        assert served_names(context, name, tls12, b"ECDHE-RSA-AES128-GCM-SHA256")
        for refused in (b"AES128-SHA", b"ECDHE-RSA-AES128-SHA"):
            with pytest.raises(SSL.Error):
                served_names(context, name, tls12, refused)


def test_a_host_certificate_keeps_the_listeners_oldest_tls_version(
    tmp_path: Path,
) -> None:
    """Switching to a host's context keeps what the connection was made with:
    tls_min_version 1.3 still refuses a TLS 1.2 client naming that host.
    """
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = write_site(
        tmp_path,
        host('"a.test"', 'tls_certificate = "a-cert.pem"\ntls_key = "a-key.pem"'),
        server='tls_min_version = "1.3"',
    )
    config = cli.load_config({"config": str(site)})
    context = listener_context(config)
    assert served_names(context, b"a.test") == ("a.test",)
    with pytest.raises(SSL.Error):
        served_names(context, b"a.test", max_version=SSL.TLS1_2_VERSION)


def test_the_key_may_be_in_the_certificate_file(tmp_path: Path) -> None:
    """tls_key left out: the key is read from tls_certificate's file (one PEM with
    both, as Twisted's ssl: endpoint reads privateKey= alone).
    """
    key, cert = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    (tmp_path / "both.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    site = write_site(tmp_path, host('"a.test"', 'tls_certificate = "both.pem"'))
    config = cli.load_config({"config": str(site)})
    context = listener_context(config)
    assert served_names(context, b"a.test") == ("a.test",)


def certified_host(certificate: Path, key: Path | None = None) -> HostConfig:
    mount = MountConfig("/", "app", "tests.apps:hello", default_options("app"), "m")
    return HostConfig(
        ("a.test",),
        False,
        (mount,),
        "site.toml: host[0]",
        str(certificate),
        None if key is None else str(key),
    )


def load_error(certificate: Path, key: Path | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        host_certificates([certified_host(certificate, key)])
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    _, cert = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    other, _ = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="other-")
    message = load_error(cert, other)
    assert message.startswith("site.toml: host[0].tls_key: ")
    assert f"{str(other)!r}: this key is not the key of {str(cert)!r}" in message


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    """OpenSSL would ask for the passphrase on the terminal (a service has none)."""
    key, cert = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    message = load_error(cert, key)
    assert message.startswith("site.toml: host[0].tls_key: ")
    assert "the key is encrypted; give a key without a passphrase" in message


def test_a_certificate_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    key, _ = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    broken = tmp_path / "broken.pem"
    broken.write_text("half-written\n")
    message = load_error(broken, key)
    assert message.startswith("site.toml: host[0].tls_certificate: ")
    assert "cannot load the certificate" in message


def test_a_certificate_file_without_its_key_names_the_certificate(tmp_path: Path) -> None:
    """tls_key left out, and the certificate's file holds no key: the error names
    tls_certificate, the key the user wrote.
    """
    _, cert = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    message = load_error(cert)
    assert message == (
        f"site.toml: host[0].tls_certificate: {str(cert)!r}: holds no private key;"
        " give its file as tls_key"
    )


def test_a_directory_given_as_the_certificate_is_named_so(tmp_path: Path) -> None:
    site = write_site(tmp_path, host('"a.test"', f'tls_certificate = "{tmp_path}"'))
    assert config_error(site) == (
        f"site.toml: host[0].tls_certificate: {str(tmp_path)!r} is a directory, not a file"
    )


def test_without_host_certificates_there_is_nothing_to_serve() -> None:
    """No host with tls_certificate: no table (the listener's context gets no callback)."""
    assert host_certificates(ServerConfig().hosts) is None


# -- the configuration file ---------------------------------------------------------------


def config_error(site: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        cli.load_config({"config": str(site)})
    return str(raised.value)


def test_a_key_without_a_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    key, _ = write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = write_site(tmp_path, host('"a.test"', f'tls_key = "{key}"'))
    assert config_error(site) == (
        "site.toml: host[0].tls_key: needs tls_certificate, the certificate it signs"
    )


def test_a_missing_certificate_file_is_a_configuration_error(tmp_path: Path) -> None:
    site = write_site(tmp_path, host('"a.test"', 'tls_certificate = "no-such.pem"'))
    assert config_error(site) == (
        f"site.toml: host[0].tls_certificate: file {str(tmp_path / 'no-such.pem')!r} does not exist"
    )


def test_a_host_certificate_without_a_tls_listener_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    """Nothing would ever send it: most likely the ssl: listener was forgotten."""
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    site = tmp_path / "site.toml"
    site.write_text(
        '[server]\nlisten = ["tcp:0"]\n'
        + host('"a.test"', 'tls_certificate = "a-cert.pem"\ntls_key = "a-key.pem"')
    )
    message = config_error(site)
    assert message.startswith("site.toml: host[0].tls_certificate: no listener serves it")


# -- a real listener -----------------------------------------------------------------------


class RealClientTests(TestCase):
    """Python's ssl client, verifying the certificate against the name it asked for."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistwsgi-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    async def test_each_name_verifies_with_its_hosts_certificate_and_resumes(self) -> None:
        """A client verifying a.test connects (ALPN http/1.1) and gets the
        application's answer; one verifying listener.test does too, on the same port.
        A second connection to a.test resumes its session with a ticket.
        """
        _, a_cert = write_self_signed_certificate(self.directory, names=("a.test",), prefix="a-")
        site = write_site(
            self.directory,
            host('"a.test"', 'tls_certificate = "a-cert.pem"\ntls_key = "a-key.pem"'),
        )
        config = cli.load_config({"config": str(site)})
        [(_, endpoint)] = cli.build_endpoints(reactor, config)
        factory = make_factory(apps.hello, reactor=reactor, threadpool=None)
        port: IListeningPort = await endpoint.listen(factory)

        async def stop() -> None:
            await maybeDeferred(port.stopListening)
            await factory.shut_down()

        self.addCleanup(stop)
        address = ("127.0.0.1", port.getHost().port)  # type: ignore[attr-defined]

        contexts: dict[Path, ssl.SSLContext] = {}

        def fetch(name: str, cafile: Path, session: Any = None) -> tuple[bytes, str | None, Any]:
            context = contexts.get(cafile)
            if context is None:
                context = contexts[cafile] = ssl.create_default_context(cafile=str(cafile))
                context.set_alpn_protocols(["http/1.1"])
            raw = socket.create_connection(address, timeout=30)
            with context.wrap_socket(raw, server_hostname=name, session=session) as tls:
                head = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
                tls.sendall(head.encode())
                received = b""
                while chunk := tls.recv(65536):
                    received += chunk
                return received, tls.selected_alpn_protocol(), (tls.session, tls.session_reused)

        received, protocol, (session, _) = await deferToThread(fetch, "a.test", a_cert)
        assert received.startswith(b"HTTP/1.1 200 ") and protocol == "http/1.1"
        received, _, (_, reused) = await deferToThread(fetch, "a.test", a_cert, session)
        assert received.startswith(b"HTTP/1.1 200 ") and reused
        own = self.directory / "own-cert.pem"
        received, _, _ = await deferToThread(fetch, "listener.test", own)
        assert received.startswith(b"HTTP/1.1 200 ")
