"""The PEP 3333 environ for one request, built from its :class:`RequestHead` (no Twisted).

PEP 3333 ("Unicode Issues") says every environ string is a native ``str`` holding the
request's bytes decoded as ISO-8859-1, so any byte survives the round trip
(``value.encode("latin-1")``). ``PATH_INFO`` and ``SCRIPT_NAME`` are percent-decoded
("URL Reconstruction"); ``QUERY_STRING`` is not. Header fields become ``HTTP_*`` keys
as in CGI (RFC 3875 4.1.18); fields whose names contain ``_`` are dropped, because
``X-Real-IP`` and ``X_Real_IP`` would otherwise land on the same key and let a client
forge a header a front proxy set (nginx ``underscores_in_headers off`` and gunicorn's
``header_map`` behave the same way).

Forwarding fields (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``) reach the
application only from a trusted proxy, and then ``X-Forwarded-Proto`` (or
``Forwarded``'s ``proto``) sets ``wsgi.url_scheme``, as gunicorn's
``forwarded_allow_ips`` does. From any other client they are dropped: the
application (or a ``ProxyFix`` in it, written for the proxy that used to stand in
front) would otherwise take a client's claim for the proxy's word.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twistwsgi.http.request import RequestHead
from twistwsgi.http.rules import FORWARDING_FIELDS, forwarded_proto

__all__ = [
    "SERVER_SOFTWARE",
    "build_environ",
    "environ_key",
    "forwarded_scheme",
    "split_authority",
]

SERVER_SOFTWARE = "twistwsgi"

# Field name (as received) -> environ key, or None for a name that is dropped. Field
# names repeat across requests, so the conversion is done once per distinct name.
_KEY_CACHE: dict[bytes, str | None] = {}
_UNTRUSTED_CACHE: dict[bytes, str | None] = {}
_KEY_CACHE_LIMIT = 4096


def _untrusted_key(name: bytes) -> str | None:
    """:func:`environ_key` for a client that is not a trusted proxy (cached like it).

    Forwarding fields are dropped too.
    """
    key = _UNTRUSTED_CACHE.get(name)
    if key is not None or name in _UNTRUSTED_CACHE:
        return key
    key = environ_key(name)
    if key in _FORWARDING_KEYS:
        key = None
    if len(_UNTRUSTED_CACHE) < _KEY_CACHE_LIMIT:
        _UNTRUSTED_CACHE[name] = key
    return key


def environ_key(name: bytes) -> str | None:
    """Return the environ key for field ``name``, or ``None`` if it is not passed on."""
    key = _KEY_CACHE.get(name)
    if key is not None or name in _KEY_CACHE:
        return key
    text = name.decode("latin-1")
    if "_" in text:
        key = None
    else:
        upper = text.upper().replace("-", "_")
        key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
    if len(_KEY_CACHE) < _KEY_CACHE_LIMIT:
        _KEY_CACHE[name] = key
    return key


# The environ keys of the forwarding fields (none holds a "_", so none is dropped).
_FORWARDING_KEYS = frozenset(
    f"HTTP_{name.decode().upper().replace('-', '_')}" for name in FORWARDING_FIELDS
)


def forwarded_scheme(environ: Mapping[str, Any]) -> str | None:
    """The scheme a trusted proxy says the client used, from the environ's fields.

    See :func:`~twistwsgi.http.rules.forwarded_proto`.
    """
    return forwarded_proto(environ.get("HTTP_X_FORWARDED_PROTO"), environ.get("HTTP_FORWARDED"))


_SERVER_CACHE: dict[tuple[bytes, str], tuple[str, str]] = {}
_METHODS = {
    method.encode("ascii"): method
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
}


def split_authority(authority: bytes, scheme: str) -> tuple[str, str] | None:
    """Split ``host[:port]`` (IPv6 literals in brackets) into ``(name, port)`` strings.

    The port defaults to the scheme's (80 or 443). Returns ``None`` for an empty
    authority.
    """
    if not authority:
        return None
    cached = _SERVER_CACHE.get((authority, scheme))
    if cached is not None:
        return cached
    text = authority.decode("latin-1")
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    server = (host.lower(), port or ("443" if scheme == "https" else "80"))
    if len(_SERVER_CACHE) < _KEY_CACHE_LIMIT:
        _SERVER_CACHE[(authority, scheme)] = server
    return server


def _local_server(request: RequestHead, scheme: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from the listening socket (no Host given).

    PEP 3333 says neither may be empty; an IPv6 address is bracketed as it would be
    in a Host field (RFC 3875 4.1.14), so URL reconstruction gives a valid URL.
    """
    local = request.local
    if local is None:  # a UNIX socket
        return "localhost", "443" if scheme == "https" else "80"
    host, port = local
    return (f"[{host}]" if ":" in host else host), str(port)


def build_environ(
    request: RequestHead,
    *,
    script_name: bytes,
    path_info: bytes,
    base: Mapping[str, Any],
    trusted: bool = False,
) -> dict[str, Any]:
    """Build the environ for ``request`` (without ``wsgi.input``, set by the caller).

    Args:
        request: the request facts.
        script_name: the decoded mount prefix the application sits under (``b""`` at
            the root); no trailing ``/``.
        path_info: the decoded rest of the path below ``script_name``.
        base: keys that are the same for every request of this application
            (``wsgi.version``, ``wsgi.errors``, ...); copied first.
        trusted: whether the client is a trusted proxy, whose forwarding fields are
            passed on and whose ``X-Forwarded-Proto`` sets ``wsgi.url_scheme``.

    Returns:
        A new environ dict.
    """
    environ = dict(base)
    scheme = request.scheme
    method = request.method
    environ["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("latin-1")
    environ["SCRIPT_NAME"] = script_name.decode("latin-1")
    environ["PATH_INFO"] = path_info.decode("latin-1")
    environ["QUERY_STRING"] = request.query.decode("latin-1")
    environ["REQUEST_URI"] = environ["RAW_URI"] = request.target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.version == b"1.1" else "HTTP/1.0"
    key_of = environ_key if trusted else _untrusted_key
    # (The key function's cache, asked here first: a name seen before, the usual
    # case, costs no call. "" is no key, so it stands for a name not seen yet.)
    known_keys = _KEY_CACHE if trusted else _UNTRUSTED_CACHE
    for name, value in request.headers:
        key = known_keys.get(name, "")
        if key == "":
            key = key_of(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        previous = environ.get(key)
        # RFC 9110 5.3: repeated field lines combine into one comma-separated value.
        environ[key] = text if previous is None else previous + "," + text
    if trusted:
        scheme = forwarded_scheme(environ) or scheme
    environ["wsgi.url_scheme"] = scheme
    if request.authority:
        # For an absolute-form target this is its authority, which RFC 9112 3.2.2
        # says replaces the Host field.
        environ["HTTP_HOST"] = request.authority.decode("latin-1")
    # (split_authority's cache, inline: an authority seen before.)
    server = _SERVER_CACHE.get((request.authority, scheme)) or split_authority(
        request.authority, scheme
    )
    if server is None:
        server = _local_server(request, scheme)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = server
    peer = request.peer
    if peer is not None:
        environ["REMOTE_ADDR"] = peer[0]
        environ["REMOTE_PORT"] = str(peer[1])
    else:
        environ["REMOTE_ADDR"] = ""
    certificate = request.client_certificate
    if certificate is not None:
        # mod_ssl's names (SSL_CLIENT_VERIFY, SSL_CLIENT_S_DN, ...), set by this
        # server's TLS alone: never taken from a client's fields.
        environ.update(certificate.environ())
    return environ
