"""Client certificates on TLS listeners (mutual TLS): what one says, and who may pass.

nginx's ``ssl_verify_client`` with ``ssl_client_certificate``: a listener asks each
client for a certificate and verifies it against a file of CA certificates. As with
nginx, the handshake completes whatever the client sent; the verdict is given in
HTTP, where it can be read: a request on a connection whose certificate failed, or
that sent none where one is required, is answered ``400`` before any mount sees it
(before its body is read); with ``tls_crl`` (nginx's ``ssl_crl``) a revoked
certificate does not verify. The modes are nginx's:

- ``on``: a certificate that verifies is required.
- ``optional``: a client may send none; one it sends must verify.
- ``optional_no_ca``: a client may send any certificate, verified or not; the
  application decides from ``SSL_CLIENT_VERIFY`` (a certificate pinned by its
  fingerprint, say).

What a certificate says reaches applications under mod_ssl's environ names
(``SSL_CLIENT_VERIFY``, ``SSL_CLIENT_S_DN``, ...; the names Apache's mod_wsgi passes
and Django packages read) and the access log under nginx's variable names
(``$ssl_client_verify``, ``$ssl_client_s_dn``, ...).

The verdict is OpenSSL's, read from the connection after the handshake
(``SSL_get_verify_result``) rather than gathered in a verify callback: a session
resumed from a ticket runs no callback, and OpenSSL keeps the verdict of the full
handshake in the session with the certificate.

Pure logic on DER bytes and OpenSSL's verdict, except :func:`from_connection`, which
reads them from a pyOpenSSL connection. No Twisted.
"""

from __future__ import annotations

import base64
import hashlib
import re
import weakref
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

try:  # pyOpenSSL's own binding of OpenSSL, for SSL_get_verify_result (see above)
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover - a pyOpenSSL without it
    _ffi = _lib = None

__all__ = [
    "NOT_ASKED",
    "NO_CERTIFICATE",
    "ClientCertificate",
    "adopt_verification",
    "ask_for_certificates",
    "binding_available",
    "describe",
    "from_connection",
    "load_client_cas",
    "load_revocation_lists",
    "mark_profile",
    "refusal",
    "verification_profile",
]

#: OpenSSL's X509_V_OK.
_VERIFIED = 0

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """What a TLS client's certificate says, and whether it verified.

    Attributes:
        verify: ``SUCCESS``, ``NONE`` (no certificate sent) or ``FAILED:`` and
            OpenSSL's reason (``FAILED:certificate has expired``), as nginx's
            ``$ssl_client_verify``.
        subject: the subject's distinguished name (RFC 4514, as nginx's
            ``$ssl_client_s_dn``: ``CN=alice,O=Example``); ``""`` without one.
        issuer: the issuer's, the same way.
        serial: the serial number in upper-case hexadecimal, an even number of
            digits (as nginx and mod_ssl write it: ``0ABC``).
        not_before: the start of its validity, as OpenSSL prints it
            (``Dec  6 08:00:00 2026 GMT``: nginx's ``$ssl_client_v_start``).
        not_after: the end of its validity, the same way.
        fingerprint: the SHA-1 of its DER form in hexadecimal, as nginx's
            ``$ssl_client_fingerprint`` (to pin one certificate).
        pem: the certificate in PEM.
        error: OpenSSL's X509_V_ERR code when it did not verify, else 0.
        asked: whether the connection asked for a certificate at all (one that
            did not was opened before a reload turned tls_verify_client on).
        profile: the verification it was asked under (:func:`verification_profile`:
            the mode and CAs of the host its server name selected), to be that of
            the host its requests are for.
    """

    verify: str
    subject: str = ""
    issuer: str = ""
    serial: str = ""
    not_before: str = ""
    not_after: str = ""
    fingerprint: str = ""
    pem: str = ""
    error: int = 0
    asked: bool = True
    profile: str = ""

    @property
    def sent(self) -> bool:
        """Whether the client sent a certificate."""
        return self.verify != "NONE"

    def environ(self) -> dict[str, str]:
        """Its mod_ssl environ keys (only ``SSL_CLIENT_VERIFY`` when none was sent)."""
        if not self.asked:
            return {}
        if not self.sent:
            return {"SSL_CLIENT_VERIFY": self.verify}
        return {
            "SSL_CLIENT_VERIFY": self.verify,
            "SSL_CLIENT_S_DN": self.subject,
            "SSL_CLIENT_I_DN": self.issuer,
            "SSL_CLIENT_M_SERIAL": self.serial,
            "SSL_CLIENT_V_START": self.not_before,
            "SSL_CLIENT_V_END": self.not_after,
            "SSL_CLIENT_CERT": self.pem,
        }


#: A connection whose client sent no certificate.
NO_CERTIFICATE = ClientCertificate("NONE")
#: A TLS connection that did not ask its client for one (verification was off).
NOT_ASKED = ClientCertificate("NONE", asked=False)

#: Attributes RFC 4514 has no keyword for (and street, which OpenSSL writes in lower
#: case), written by OpenSSL's short names as nginx and mod_ssl show them
#: (X509_NAME_print_ex with XN_FLAG_RFC2253); others stay dotted numbers there too.
_NAME_KEYWORDS = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.TITLE: "title",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.POSTAL_ADDRESS: "postalAddress",
    NameOID.STREET_ADDRESS: "street",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.UNSTRUCTURED_NAME: "unstructuredName",
}

#: The failures optional_no_ca lets through, nginx's (ngx_ssl_verify_error_optional):
#: a self-signed certificate or chain (18, 19), no local issuer (20), a leaf whose
#: signature cannot be checked (21), a CA not trusted for the purpose (27). An
#: expired certificate, or one whose signature does not match, is refused in that
#: mode too. (X509_V_ERR_* codes.)
_UNTRUSTED_ISSUER = frozenset({18, 19, 20, 21, 27})


def describe(der: bytes | None, error: str | None, code: int = 0) -> ClientCertificate:
    """What the certificate ``der`` says, with OpenSSL's verdict on it.

    Args:
        der: the client's certificate (DER), or ``None`` if it sent none.
        error: OpenSSL's reason it did not verify, or ``None`` if it did.
        code: OpenSSL's code for that reason.
    """
    if der is None:
        return NO_CERTIFICATE
    verify = "SUCCESS" if error is None else f"FAILED:{error}"
    fingerprint = hashlib.sha1(der, usedforsecurity=False).hexdigest()
    pem = _pem(der)
    try:
        certificate = x509.load_der_x509_certificate(der)
        subject = certificate.subject.rfc4514_string(_NAME_KEYWORDS)
        issuer = certificate.issuer.rfc4514_string(_NAME_KEYWORDS)
        not_before = _openssl_time(certificate.not_valid_before_utc)
        not_after = _openssl_time(certificate.not_valid_after_utc)
        serial = f"{certificate.serial_number:X}"
    except ValueError:
        # OpenSSL took it, cryptography's stricter reader does not (a PrintableString
        # with "_" in an old CA's names, say): the verdict stands, the facts are
        # not told.
        return ClientCertificate(verify, fingerprint=fingerprint, pem=pem, error=code)
    return ClientCertificate(
        verify=verify,
        subject=subject,
        issuer=issuer,
        serial=serial.rjust(len(serial) + len(serial) % 2, "0"),
        not_before=not_before,
        not_after=not_after,
        fingerprint=fingerprint,
        pem=pem,
        error=code,
    )


def _pem(der: bytes) -> str:
    """``der`` as a PEM certificate (RFC 7468: base64 in lines of 64)."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[start : start + 64] for start in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _openssl_time(moment: datetime) -> str:
    """A time as OpenSSL's ASN1_TIME_print writes it (what nginx and mod_ssl show)."""
    return (
        f"{_MONTHS[moment.month - 1]} {moment.day:2d} {moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d} {moment.year} GMT"
    )


_NEEDED = b"Bad Request: this site needs a client certificate (TLS)\n"


def refusal(mode: str, certificate: ClientCertificate | None) -> bytes | None:
    """Why a request is refused under ``mode`` (the 400's body), or ``None`` to let it in.

    ``certificate`` is ``None`` for a request that did not come over a TLS listener
    of this server (plain HTTP, or TLS ended by a proxy in front): ``tls_verify_client``
    is about this server's TLS, as nginx's ``ssl_verify_client`` checks only SSL
    connections. A TLS connection that was not asked for a certificate counts as
    one whose client sent none (the host guard sends it to a new connection first,
    see :class:`~twistwsgi.routing.ClientCertificateCheck`).
    """
    if certificate is None or mode == "off":
        return None
    verify = certificate.verify
    if verify == "SUCCESS":
        return None
    if verify == "NONE":
        if mode != "on":
            return None
        return _NEEDED
    if mode == "optional_no_ca" and certificate.error in _UNTRUSTED_ISSUER:
        return None
    reason = verify.removeprefix("FAILED:")
    return b"Bad Request: the client certificate did not verify (%s)\n" % reason.encode(
        "ascii", "replace"
    )


def load_client_cas(path: str) -> list[x509.Certificate]:
    """The CA certificates in the PEM file ``path`` (tls_client_certificate).

    Raises:
        ValueError: the file holds no PEM certificate (or one that does not load).
        OSError: the file cannot be read.
    """
    with open(path, "rb") as file:
        text = file.read()
    try:
        certificates = x509.load_pem_x509_certificates(text)
    except ValueError:
        # (cryptography's message is a paragraph, with a link.)
        raise ValueError("cannot load the CA certificates: expected a PEM file of them") from None
    return certificates


#: One CRL of a PEM file (RFC 7468 5.3's label), its armour included.
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def load_revocation_lists(path: str) -> list[x509.CertificateRevocationList]:
    """The certificate revocation lists in the PEM file ``path`` (tls_crl).

    Each must load: OpenSSL would take the ones before a bad one and drop the rest,
    and a certificate they revoke would then pass.

    Raises:
        ValueError: the file holds no PEM CRL, or one that does not load.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as file:
        text = file.read()
    blocks = _CRL_BLOCK.findall(text)
    if not blocks:
        raise ValueError("no certificate revocation list: expected a PEM file of them")
    lists = []
    for number, block in enumerate(blocks, 1):
        try:
            lists.append(x509.load_pem_x509_crl(block))
        except ValueError:
            raise ValueError(f"revocation list {number} of the file does not load") from None
    return lists


def binding_available() -> bool:
    """Whether this pyOpenSSL's binding has what asking for certificates needs here."""
    return _ACCEPT is not None and all(
        hasattr(_lib, name)
        for name in (
            "SSL_CTX_set_verify",
            "SSL_set_verify",
            "SSL_get_verify_result",
            "X509_verify_cert_error_string",
        )
    )


def _accept_for_now(ok: int, store: object) -> int:
    """OpenSSL's verify callback: let the handshake go on whatever the client sent.

    Through the binding rather than pyOpenSSL's ``set_verify``: a Python callback
    there that lets a certificate through makes pyOpenSSL clear OpenSSL's error,
    which is the verdict this module reads (and the one a resumed session keeps).
    """
    return 1


_ACCEPT = None if _ffi is None else _ffi.callback("int (*)(int, X509_STORE_CTX *)", _accept_for_now)


def ask_for_certificates(context: SSL.Context) -> None:
    """Make ``context``'s handshakes ask the client for a certificate (see the module).

    Verified against the context's verify locations; the handshake completes either
    way, with OpenSSL's verdict kept for :func:`from_connection`. Once per
    connection (``VERIFY_CLIENT_ONCE``): renegotiation does not ask again.
    """
    _lib.SSL_CTX_set_verify(
        context._context,  # (pyOpenSSL's handle of the SSL_CTX)
        SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE,
        _ACCEPT,
    )


def from_connection(connection: SSL.Connection) -> ClientCertificate:
    """What the client of ``connection`` sent, once its handshake is done.

    :data:`NOT_ASKED` when the connection did not ask for a certificate.
    """
    if connection.get_verify_mode() == SSL.VERIFY_NONE:
        return NOT_ASKED
    profile = _PROFILES.get(connection.get_context(), "?")
    peer = connection.get_peer_certificate()
    if peer is None:
        return replace(NO_CERTIFICATE, profile=profile)
    # DER as OpenSSL holds it: cryptography may refuse to read what OpenSSL took.
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, peer)
    # pyOpenSSL has no public reader of the verdict: its binding is used.
    code = _lib.SSL_get_verify_result(connection._ssl)
    if code == _VERIFIED:
        described = describe(der, None)
    else:
        reason = _ffi.string(_lib.X509_verify_cert_error_string(code))
        described = describe(der, reason.decode("ascii", "replace"), code)
    return replace(described, profile=profile)


#: The verification profile of each context that asks for certificates.
_PROFILES: weakref.WeakKeyDictionary[SSL.Context, str] = weakref.WeakKeyDictionary()


def verification_profile(mode: str, path: str | None) -> str:
    """A name for asking in ``mode`` against the CA file ``path`` (``""``: not asking).

    The same for every context and host guard built from the same settings, and
    made from the settings alone (not the file's bytes): a guard and the contexts
    of one reload cannot disagree, even when one of them was built again without
    the other (a refused reload still reads renewed certificates).
    """
    if mode == "off":
        return ""
    return f"{mode}:{path or ''}"


def mark_profile(context: SSL.Context, profile: str) -> None:
    """Record that ``context`` asks under ``profile`` (see :func:`from_connection`)."""
    _PROFILES[context] = profile


def adopt_verification(connection: SSL.Connection, context: SSL.Context) -> None:
    """Ask (or not) as ``context`` does, on a connection just switched to it (SNI).

    OpenSSL takes the certificate, CAs and CA names of the new context, but keeps the
    verify mode of the one the connection was made with.
    """
    mode = context.get_verify_mode()
    if mode == SSL.VERIFY_NONE:
        _lib.SSL_set_verify(connection._ssl, SSL.VERIFY_NONE, _ffi.NULL)
    else:
        _lib.SSL_set_verify(connection._ssl, mode, _ACCEPT)
