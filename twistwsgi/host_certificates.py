"""Per-host TLS certificates, chosen by the server name a client sends (SNI).

A ``[[host]]`` with ``tls_certificate`` gets an OpenSSL context of its own. Every
``ssl:`` listener switches a connection to it when the ClientHello's ``server_name``
extension (RFC 6066 §3) names one of the host's names, exact or wildcard, matched
as the ``Host`` header is: nginx picks the ``ssl_certificate`` of the ``server``
block whose ``server_name`` matches the same way. A client naming a host without a
certificate, naming nothing known, or sending no server name at all (an IP address
in the URL: RFC 6066 allows only DNS names there) keeps the listener's own
certificate (``certKey=``).

Only the certificate, its chain and its key come from the host's context: OpenSSL
keeps the protocol versions, ciphers, options and session-ticket key the connection
was created with (``SSL_set_SSL_CTX``), so ``tls_min_version``, ``tls_ciphers`` and
``tls_session_tickets`` hold for every host.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions

from twistwsgi.config import ConfigError, HostConfig
from twistwsgi.routing import HostTable, normalize_host

__all__ = [
    "PEM_READ_LIMIT",
    "host_certificates",
    "is_encrypted_pem",
    "openssl_reasons",
    "serve_host_certificates",
]

#: Larger than any PEM key or chain file; what is read to look for encryption.
PEM_READ_LIMIT = 1 << 20

# PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") or a legacy PEM encryption header, not the
# word anywhere (a comment saying "not ENCRYPTED").
_ENCRYPTED_PEM = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: *4, *ENCRYPTED", re.M
)

#: What a host without a certificate of its own maps to: the listener's stays.
_LISTENER_CERTIFICATE = object()


def is_encrypted_pem(content: bytes) -> bool:
    """Whether PEM text holds a key protected by a passphrase."""
    return _ENCRYPTED_PEM.search(content) is not None


def host_certificates(hosts: Sequence[HostConfig]) -> HostTable[object] | None:
    """Load the hosts' certificates into a table by host name (``None`` if none has one).

    A host without a certificate maps to a marker, so that its exact name is not
    served the certificate of a wildcard host that also matches it.

    Raises:
        ConfigError: naming the host's key and what is wrong with its file (an
            encrypted key, a file that is not PEM, a key that is not the
            certificate's).
    """
    if not any(host.tls_certificate for host in hosts):
        return None
    entries: list[tuple[Sequence[str], object]] = []
    for host in hosts:
        if host.tls_certificate:
            context = _host_context(host.tls_certificate, host.tls_key, host.where)
            entries.append((host.names, context))
        elif host.names:
            entries.append((host.names, _LISTENER_CERTIFICATE))
    return HostTable(entries, None)


def serve_host_certificates(context: SSL.Context, table: HostTable[object]) -> None:
    """Make a listener's ``context`` switch to the certificate its client names."""

    def choose(connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if name:
            chosen = table.lookup(normalize_host(name))
            if isinstance(chosen, SSL.Context):
                connection.set_context(chosen)

    context.set_tlsext_servername_callback(choose)


def _host_context(certificate: str, key: str | None, where: str) -> SSL.Context:
    key_file = key or certificate
    key_where = f"{where}.tls_key" if key else f"{where}.tls_certificate"
    for path, path_where in dict.fromkeys(
        ((key_file, key_where), (certificate, f"{where}.tls_certificate"))
    ):
        try:
            with open(path, "rb") as stream:
                content = stream.read(PEM_READ_LIMIT)
        except OSError as error:
            raise ConfigError(path_where, f"{path!r}: {error.strerror}") from None
        if is_encrypted_pem(content):
            # OpenSSL would ask for the passphrase on the terminal.
            raise ConfigError(
                path_where, f"{path!r}: the key is encrypted; give a key without a passphrase"
            )
    # Twisted's options give the context the ALPN callback a listener's has (the
    # protocols offered are read from the connection's factory).
    context = CertificateOptions().getContext()
    try:
        context.use_certificate_chain_file(certificate)
    except SSL.Error as error:
        raise ConfigError(
            f"{where}.tls_certificate",
            f"{certificate!r}: cannot load the certificate (a PEM file, the certificate"
            f" first, then its chain): {openssl_reasons(error)}",
        ) from None
    try:
        # OpenSSL checks the key against the certificate loaded above.
        context.use_privatekey_file(key_file)
    except SSL.Error as error:
        reasons = openssl_reasons(error)
        if "key values mismatch" in reasons:
            problem = f"this key is not the key of {certificate!r}"
        else:
            problem = f"cannot load the private key (PEM): {reasons}"
        raise ConfigError(key_where, f"{key_file!r}: {problem}") from None
    return context


def openssl_reasons(error: BaseException | None) -> str:
    """An OpenSSL error's reasons ("no such file"), not its list of tuples."""
    details = error.args[0] if error is not None and error.args else None
    if isinstance(details, list) and all(isinstance(d, tuple) and d for d in details):
        reasons = [str(detail[-1]) for detail in details if detail[-1]]
        if reasons:
            return "; ".join(reasons)
    return str(error) or type(error).__name__
