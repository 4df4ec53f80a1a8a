"""Per-host TLS certificates, chosen by the server name a client sends (SNI).

A ``[[host]]`` with ``tls_certificate`` gets an OpenSSL context of its own. Every
``ssl:`` listener switches a connection to it when the ClientHello's ``server_name``
extension (RFC 6066 §3) selects that host, matched as the ``Host`` header is, as
nginx picks the ``ssl_certificate`` of the ``server`` block the name selects:

- a name one of the host's names matches (exact, or the longest wildcard);
- a name no host lists, or no name at all (a URL with an IP address: RFC 6066 allows
  only DNS names), selects the ``default = true`` host, as nginx's default server.

A name that selects a host without a certificate of its own, or nothing, keeps the
listener's certificate (``certKey=``).

A host's context is made from the listener's own settings (a twin of its Twisted
``CertificateOptions``, with ``tls_min_version`` and ``tls_ciphers`` applied), with
the host's certificate, chain and key in place of the listener's: after the switch
OpenSSL takes the cipher list and DH parameters from the new context.

Certificates are loaded at start-up, where any problem stops the start. On a reload
(SIGHUP), a file that no longer loads (half-written by a renewal, or readable only
by root after ``--uid``) leaves that host with the certificate last read from the
same paths, and a log line says why; only a host with nothing read before is an
error then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.logger import Logger

from twistwsgi.client_certificates import adopt_verification
from twistwsgi.config import ConfigError, HostConfig, ServerConfig, host_verification
from twistwsgi.http.rules import compile_host_pattern
from twistwsgi.routing import HostTable, normalize_host

__all__ = [
    "PEM_READ_LIMIT",
    "HostCertificates",
    "host_certificates",
    "is_encrypted_pem",
    "serve_host_certificates",
]

_log = Logger()

#: Larger than any PEM key or chain file; what is read to look for encryption.
PEM_READ_LIMIT = 1 << 20

# PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") or a legacy PEM encryption header, not the
# word anywhere (a comment saying "not ENCRYPTED").
_ENCRYPTED_PEM = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: *4, *ENCRYPTED", re.M
)
_PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")

#: What a host without a certificate of its own maps to: the listener's stays.
_LISTENER_CERTIFICATE = object()


def is_encrypted_pem(content: bytes) -> bool:
    """Whether PEM text holds a key protected by a passphrase."""
    return _ENCRYPTED_PEM.search(content) is not None


@dataclass(frozen=True)
class _Material:
    """What a host's files held: its certificate, the chain after it, the key."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: object


#: The material last loaded from each (certificate, key) pair of paths: what a host
#: keeps serving when a reload finds its files broken.
_LAST_LOADED: dict[tuple[str, str], _Material] = {}


#: A host's client-certificate verification: tls_verify_client's mode and CA file.
Verification = tuple[str, "str | None"]


@dataclass(frozen=True)
class _HostTLS:
    """What a host's connections are served with: a certificate and a verification.

    ``material`` ``None``: the listener's certificate (a host with only a
    verification of its own).
    """

    material: _Material | None
    verification: Verification

    @property
    def key(self) -> tuple[int, Verification]:
        return (0 if self.material is None else id(self.material), self.verification)


@dataclass(frozen=True)
class HostCertificates:
    """The hosts' certificates by host name, ready to be served by listeners.

    Attributes:
        table: host name to what the host's connections are served with, or to a
            marker for a host that keeps the listener's context.
        materials: every host's material, once.
        served: every distinct certificate and verification, once.
    """

    table: HostTable[object]
    materials: tuple[_Material, ...]
    served: tuple[_HostTLS, ...] = ()


def host_certificates(
    hosts: Sequence[HostConfig],
    *,
    reloading: bool = False,
    quiet: bool = False,
    config: ServerConfig | None = None,
) -> HostCertificates | None:
    """Load the hosts' certificates (``None`` when every host keeps the listener's).

    A host without a certificate maps to a marker, so that its exact name is not
    served the certificate of a wildcard host that also matches it. A host whose
    client verification (``tls_verify_client``) is not the server's gets a context
    of its own too, with the listener's certificate when it has none.

    Args:
        hosts: the configured hosts.
        reloading: whether this is a reload, where a host whose files no longer load
            keeps what was last loaded from the same paths (logged).
        quiet: do not log that, and forget nothing loaded before (a check of a
            file before the reload that will).
        config: the server's settings, for the hosts' verification (``None``: no
            verification anywhere).

    Raises:
        ConfigError: naming the host's key and what is wrong with its file (an
            encrypted key, a file that is not PEM, a key that is not the
            certificate's), at start-up, or on a reload for a host with nothing
            loaded before from its paths.
    """
    settings = config or ServerConfig()
    listener: Verification = (settings.tls_verify_client, settings.tls_client_certificate)
    verifications = {id(host): host_verification(host, settings) for host in hosts}
    if not any(host.tls_certificate or verifications[id(host)] != listener for host in hosts):
        return None
    entries: list[tuple[Sequence[str], object]] = []
    materials: list[_Material] = []
    served: dict[tuple[int, Verification], _HostTLS] = {}
    default: object = None
    for host in hosts:
        chosen: object = _LISTENER_CERTIFICATE
        material = None
        if host.tls_certificate:
            material = _host_material(host, reloading, quiet)
            materials.append(material)
        verification = verifications[id(host)]
        if material is not None or verification != listener:
            tls = _HostTLS(material, verification)
            chosen = served.setdefault(tls.key, tls)
        if host.names:
            entries.append((host.names, chosen))
        if host.default:
            default = chosen
    if not quiet:
        # Only the paths in use are kept for the next reload (a check of a file that
        # may yet be refused keeps those of the configuration serving).
        used = {_paths(host) for host in hosts if host.tls_certificate}
        for paths in set(_LAST_LOADED) - used:
            del _LAST_LOADED[paths]
    table = HostTable(entries, default, compile_pattern=compile_host_pattern)
    return HostCertificates(table, tuple(materials), tuple(served.values()))


def serve_host_certificates(
    context: SSL.Context,
    certificates: HostCertificates,
    listener_twin: Callable[[Verification, bool], SSL.Context],
) -> None:
    """Make a listener's ``context`` switch to what its client's name selects.

    Args:
        context: the listener's context.
        certificates: the hosts' certificates and verifications.
        listener_twin: makes a context with the listener's settings, the given
            verification, and the listener's certificate if asked (``True``) or none
            (one per distinct host setting, made here).
    """
    contexts: dict[tuple[int, Verification], SSL.Context] = {}
    table = certificates.table
    for tls in certificates.served:
        material = tls.material
        host_context = listener_twin(tls.verification, material is None)
        if material is not None:
            host_context.use_certificate(material.certificate)
            for intermediate in material.chain:
                host_context.add_extra_chain_cert(intermediate)
            host_context.use_privatekey(material.key)  # type: ignore[arg-type]
        contexts[tls.key] = host_context

    def choose(connection: SSL.Connection) -> None:
        name = connection.get_servername()
        chosen = table.lookup(normalize_host(name) if name else None)
        if isinstance(chosen, _HostTLS):
            switched = contexts[chosen.key]
            connection.set_context(switched)
            adopt_verification(connection, switched)

    context.set_tlsext_servername_callback(choose)


def _paths(host: HostConfig) -> tuple[str, str]:
    """The files a host's certificate and key are read from (the key's may be the same)."""
    assert host.tls_certificate is not None
    return host.tls_certificate, host.tls_key or host.tls_certificate


def _host_material(host: HostConfig, reloading: bool, quiet: bool) -> _Material:
    assert host.tls_certificate is not None
    paths = _paths(host)
    try:
        material = _load(host.tls_certificate, host.tls_key, host.where)
    except ConfigError as error:
        kept = _LAST_LOADED.get(paths)
        if not reloading or kept is None:
            raise
        if not quiet:
            _log.error(
                "Reload: the TLS files of {host} were not read again, the ones read"
                " before keep serving: {problem}",
                host=host.where,
                problem=str(error),
            )
        return kept
    _LAST_LOADED[paths] = material
    return material


def _load(certificate: str, key: str | None, where: str) -> _Material:
    """Read and check a host's certificate, its chain and its key."""
    certificate_where = f"{where}.tls_certificate"
    key_file = key or certificate
    key_where = f"{where}.tls_key" if key else certificate_where
    certificate_text = _read(certificate, certificate_where)
    key_text = certificate_text if key_file == certificate else _read(key_file, key_where)
    if is_encrypted_pem(key_text):
        # OpenSSL would ask for the passphrase on the terminal.
        raise ConfigError(
            key_where, f"{key_file!r}: the key is encrypted; give a key without a passphrase"
        )
    try:
        certificates = x509.load_pem_x509_certificates(certificate_text)
    except ValueError as error:
        raise ConfigError(
            certificate_where,
            f"{certificate!r}: cannot load the certificate (a PEM file, the certificate"
            f" first, then its chain): {error}",
        ) from None
    if not _PRIVATE_KEY_PEM.search(key_text):
        problem = "holds no private key" + ("" if key else "; give its file as tls_key")
        raise ConfigError(key_where, f"{key_file!r}: {problem}")
    try:
        private_key = serialization.load_pem_private_key(key_text, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            key_where, f"{key_file!r}: cannot load the private key (PEM): {error}"
        ) from None
    material = _Material(certificates[0], tuple(certificates[1:]), private_key)
    check = SSL.Context(SSL.TLS_METHOD)
    check.use_certificate(material.certificate)
    try:
        check.use_privatekey(private_key)  # type: ignore[arg-type]
    except SSL.Error:
        # OpenSSL checks the key against the certificate loaded above.
        raise ConfigError(
            key_where, f"{key_file!r}: this key is not the key of {certificate!r}"
        ) from None
    return material


def _read(path: str, where: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(PEM_READ_LIMIT)
    except OSError as error:
        raise ConfigError(where, f"{path!r}: {error.strerror or error}") from None
