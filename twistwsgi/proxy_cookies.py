r"""The rewriting of an upstream's cookies (nginx's proxy_cookie_path and proxy_cookie_domain).

An application behind a proxy mount sets its cookies for the paths and the domain
it believes it serves. Mounted at ``/app`` from ``http://127.0.0.1:9000/`` (the
prefix replaced), it sends ``Set-Cookie: sid=1; Path=/`` for every path of its own,
which the browser then sends to every other application of the host too (and two
applications' ``sid`` overwrite each other); one set up for ``internal.example``
sends ``Domain=internal.example``, which a browser on ``www.example.com`` refuses.
A proxy mount rewrites those attributes as nginx does:

- ``proxy_cookie_path``: a table of path prefixes and their replacements, tried in
  order, the first that starts the ``Path`` attribute wins (compared with case: a
  path has case, RFC 3986 6.2.2.1). ``{ "/" = "/app/" }`` makes ``Path=/`` into
  ``Path=/app/`` and ``Path=/account`` into ``Path=/app/account``.
- ``proxy_cookie_domain``: a table of domains and their replacements, compared
  whole and without case (RFC 6265 5.1.3), a leading ``.`` set aside (kept on the
  result, which browsers ignore since RFC 6265 4.1.2.3).
  ``{ "internal.example" = "$host" }`` gives the cookie the name the client used.

Replacements take the request variables of ``proxy_set_header``. One that comes
out empty removes the attribute: a ``Domain`` removed makes the cookie the host's
only, a ``Path`` removed makes it the request path's directory's (RFC 6265 5.3).
A replacement cannot end the attribute: a ``;`` in a variable's value is
percent-encoded (RFC 6265 4.1.1: an attribute value holds no ``;``), a control
character becomes ``\xHH``.

Pure logic: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twistwsgi.forwarding import TrustedProxies
from twistwsgi.log_format import RequestTemplate

if TYPE_CHECKING:
    from twistwsgi.http.request import RequestHead

__all__ = ["CookieRewrite"]

#: An attribute this rewrites, from the ``;`` before it to the end of its value.
#: The cookie's own name=value comes before the first ``;`` and holds none (RFC
#: 6265 4.1.1), so a cookie named ``path`` is never read as the attribute.
_ATTRIBUTE = re.compile(rb";[ \t]*(path|domain)[ \t]*=([^;]*)", re.IGNORECASE)

#: The spaces around an attribute value, which are not part of it (RFC 6265 5.2).
_SPACES = b" \t"


class CookieRewrite:
    """A proxy mount's rewriting of ``Set-Cookie`` (see the module docstring).

    Args:
        paths: ``proxy_cookie_path``'s prefixes and replacements, in order.
        domains: ``proxy_cookie_domain``'s domains and replacements, in order.
    """

    def __init__(
        self, paths: Sequence[tuple[str, str]] = (), domains: Sequence[tuple[str, str]] = ()
    ) -> None:
        self._paths = [
            (source.encode("utf-8"), RequestTemplate(replacement)) for source, replacement in paths
        ]
        self._domains = [
            (source.lstrip(".").lower().encode("utf-8"), RequestTemplate(replacement))
            for source, replacement in domains
        ]

    def fields(
        self,
        fields: list[tuple[bytes, bytes]],
        request: RequestHead,
        remote_user: str | None,
        trusted_proxies: TrustedProxies,
    ) -> None:
        """Rewrite the attributes of every ``Set-Cookie`` of ``fields``, in place."""
        for index, (name, value) in enumerate(fields):
            if len(name) == 10 and name.lower() == b"set-cookie":
                fields[index] = (
                    name,
                    self.cookie(value, request, remote_user, trusted_proxies),
                )

    def cookie(
        self,
        value: bytes,
        request: RequestHead,
        remote_user: str | None,
        trusted_proxies: TrustedProxies,
    ) -> bytes:
        """One ``Set-Cookie`` value with its ``Path`` and ``Domain`` rewritten."""
        if b";" not in value:
            return value

        def rewrite(match: re.Match[bytes]) -> bytes:
            attribute = match.group(1).lower()
            raw = match.group(2)
            current = raw.strip(_SPACES)
            if attribute == b"path":
                found = _path_rule(self._paths, current)
            else:
                found = _domain_rule(self._domains, current)
            if found is None:
                return match.group(0)
            start, template, rest = found
            trusted = trusted_proxies.trusts_peer(request.peer)
            rendered = template.render(request, remote_user, trusted=trusted)
            replaced = rendered.replace(b";", b"%3B") + rest
            if not rendered and not rest:
                return b""  # an empty replacement: the attribute goes
            # The spaces the upstream wrote around the value stay as they were.
            before = raw[: len(raw) - len(raw.lstrip(_SPACES))]
            after = raw[len(raw.rstrip(_SPACES)) :]
            head = match.group(0)[: match.start(2) - match.start(0)]
            return head + before + start + replaced + after

        return _ATTRIBUTE.sub(rewrite, value)


def _path_rule(
    rules: list[tuple[bytes, RequestTemplate]], path: bytes
) -> tuple[bytes, RequestTemplate, bytes] | None:
    """The first rule whose prefix starts ``path``: (kept, replacement, the rest)."""
    for source, template in rules:
        if path.startswith(source):
            return b"", template, path[len(source) :]
    return None


def _domain_rule(
    rules: list[tuple[bytes, RequestTemplate]], domain: bytes
) -> tuple[bytes, RequestTemplate, bytes] | None:
    """The first rule naming ``domain``: (its leading dot, replacement, nothing)."""
    bare = domain.lstrip(b".")
    dot = domain[: len(domain) - len(bare)]
    lower = bare.lower()
    for source, template in rules:
        if lower == source:
            return dot, template, b""
    return None
