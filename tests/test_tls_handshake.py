"""What an ``ssl:`` listener negotiates in its handshake, as the command line builds it.

Handshakes run in memory (pyOpenSSL on both ends) against the listener's context, so
they need no socket and no reactor.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet import reactor as global_reactor
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from tests.test_sockets import write_self_signed_certificate
from twistwsgi import cli
from twistwsgi.config import ServerConfig
from twistwsgi.http.protocol import HTTPFactory
from twistwsgi.testing import capture_log_events

reactor: Any = global_reactor


def listener_description(directory: Path) -> str:
    """An ``ssl:`` endpoint string with a new certificate in ``directory``."""
    key, cert = write_self_signed_certificate(directory)
    return f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"


def listener_context(directory: Path, config: ServerConfig | None = None) -> SSL.Context:
    """The context of an ``ssl:`` listener with a new certificate, as ``--listen`` makes it."""
    endpoint = cli._endpoint_for(reactor, listener_description(directory), config)
    context: SSL.Context = cli._tls_options(endpoint).getContext()
    return context


@implementer(IProtocolNegotiationFactory)
class _Negotiating:
    """What a TLS connection's factory offers over ALPN: the HTTP factory's list."""

    acceptableProtocols = HTTPFactory.acceptableProtocols


def handshake(context: SSL.Context, client: SSL.Connection) -> SSL.Connection:
    """Shake hands in memory between ``client`` and a server on ``context``.

    Returns the server's connection. Raises the ``SSL.Error`` the client ended the
    handshake with: when the server refuses, the alert it sent, as the client reads it.
    """
    server = SSL.Connection(context)
    server.set_accept_state()
    # Twisted's TLS layer is a connection's application data: its ALPN callback
    # reads the protocols offered from the layer's factory.
    server.set_app_data(SimpleNamespace(factory=SimpleNamespace(wrappedFactory=_Negotiating())))
    client.set_connect_state()
    ended: dict[str, SSL.Error | None] = {}
    for _ in range(20):
        for name, side, other in (("client", client, server), ("server", server, client)):
            if name not in ended:
                try:
                    side.do_handshake()
                    ended[name] = None
                except SSL.WantReadError:
                    pass
                except SSL.Error as error:
                    ended[name] = error
            with contextlib.suppress(SSL.WantReadError):  # nothing to send yet
                other.bio_write(side.bio_read(65536))
        refused = ended.get("client")
        if refused is not None:
            raise refused
        if len(ended) == 2:
            return server
    raise AssertionError(f"the handshake did not end: {ended}")


def alpn_client(*offered: bytes, max_version: int | None = None) -> SSL.Connection:
    """A TLS client offering ``offered`` over ALPN (RFC 7301), up to ``max_version``."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_alpn_protos(list(offered))
    if max_version is not None:
        context.set_max_proto_version(max_version)
    return SSL.Connection(context)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ((b"h2", b"http/1.1"), b"http/1.1"),  # curl and browsers: never h2
        ((b"http/1.1",), b"http/1.1"),
        ((b"http/1.0",), b"http/1.0"),  # curl --http1.0
        ((b"h2", b"http/1.0", b"http/1.1"), b"http/1.1"),  # the server's preference
    ],
)
def test_alpn_chooses_http1(tmp_path: Path, offered: tuple[bytes, ...], chosen: bytes) -> None:
    client = alpn_client(*offered)
    handshake(listener_context(tmp_path), client)
    assert client.get_alpn_proto_negotiated() == chosen


def test_no_alpn_offered_connects_without_a_protocol(tmp_path: Path) -> None:
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
    handshake(listener_context(tmp_path), client)
    assert client.get_alpn_proto_negotiated() == b""


@pytest.mark.parametrize("offered", [(b"h2",), (b"spdy/3", b"h2")])
@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_a_client_offering_no_http1_gets_the_no_application_protocol_alert(
    tmp_path: Path, offered: tuple[bytes, ...], version: int
) -> None:
    """RFC 7301 §3.2: no protocol in common is the fatal no_application_protocol
    alert (120), as nginx answers an h2-only client; not internal_error (80), which
    reads as a fault of the server's.
    """
    client = alpn_client(*offered, max_version=version)
    with pytest.raises(SSL.Error) as refused:
        handshake(listener_context(tmp_path), client)
    assert "no application protocol" in str(refused.value), refused.value


def test_a_host_certificate_keeps_the_alpn_choice(tmp_path: Path) -> None:
    """After the server name moves a connection to a host's context (SNI), ALPN is
    chosen by that context: it must refuse h2 alone the same way.
    """
    write_self_signed_certificate(tmp_path, names=("a.test",), prefix="a-")
    key, cert = write_self_signed_certificate(tmp_path, prefix="own-")
    site = tmp_path / "site.toml"
    site.write_text(
        "[server]\n"
        f'listen = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
        'threads = 0\naccess_log = "off"\n'
        '[[host]]\nnames = ["a.test"]\n'
        'tls_certificate = "a-cert.pem"\ntls_key = "a-key.pem"\n'
        'mount = [{path = "/", app = "tests.apps:hello"}]\n'
    )
    config = cli.load_config({"config": str(site)})
    endpoint = cli._endpoint_for(reactor, config.listen[0], config)
    context: SSL.Context = cli._tls_options(endpoint).getContext()
    client = alpn_client(b"h2")
    client.set_tlsext_host_name(b"a.test")
    with pytest.raises(SSL.Error) as refused:
        handshake(context, client)
    assert "no application protocol" in str(refused.value), refused.value
    served = alpn_client(b"h2", b"http/1.1")
    served.set_tlsext_host_name(b"a.test")
    handshake(context, served)
    assert served.get_alpn_proto_negotiated() == b"http/1.1"


def test_twisteds_tls_layer_ends_the_refused_connection_without_an_error(
    tmp_path: Path,
) -> None:
    """The refusal goes through Twisted's TLS layer as any failed handshake: the
    alert is sent, the connection closed, and nothing is logged (Twisted reads the
    error as OpenSSL's, a list of reasons).
    """
    endpoint = cli._endpoint_for(reactor, listener_description(tmp_path))
    tls_factory = TLSMemoryBIOFactory(
        cli._tls_options(endpoint), False, Factory.forProtocol(Protocol)
    )
    tls = tls_factory.buildProtocol(None)
    assert tls is not None
    transport = StringTransport()
    client = alpn_client(b"h2")
    client.set_connect_state()
    with contextlib.suppress(SSL.WantReadError):
        client.do_handshake()
    with capture_log_events() as events:
        tls.makeConnection(transport)
        tls.dataReceived(client.bio_read(65536))
    assert [e for e in events if e.get("log_failure") or e.get("isError")] == []
    assert transport.disconnecting
    client.bio_write(transport.value())
    with pytest.raises(SSL.Error) as refused:
        client.do_handshake()
    assert "no application protocol" in str(refused.value), refused.value
