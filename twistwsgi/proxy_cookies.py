r"""The rewriting of an upstream's cookies (nginx's proxy_cookie_path, _domain and _flags).

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
  whole and without case (RFC 6265 5.1.3), a leading ``.`` set aside (the
  upstream's kept on the result, which browsers ignore since RFC 6265 4.1.2.3; the
  replacement's dropped, as nginx drops it).
  ``{ "internal.example" = "$host" }`` gives the cookie the name the client used.
- ``proxy_cookie_flags``: cookie names (``*`` for every cookie not named) and the
  flags to set on them, as nginx's: ``secure``, ``httponly``,
  ``samesite=strict|lax|none`` add the attribute (a SameSite already there takes
  the new value), ``nosecure``, ``nohttponly``, ``nosamesite`` remove it. Names are
  matched without case, as nginx matches them; the entry naming the cookie applies
  in place of ``*``'s, wherever each is listed (nginx takes the first directive that
  matches, its ``~`` standing for every cookie). ``{ "*" = "secure httponly
  samesite=lax" }`` hardens an application that sets its session cookie without
  them.

Replacements take the request variables of ``proxy_set_header``. One that comes out
empty, with nothing of the value left after it, removes the attribute: a ``Domain``
removed makes the cookie the host's only, a ``Path`` removed makes it the request
path's directory's (RFC 6265 5.3). A replacement cannot end the attribute: a ``;``
in a variable's value is percent-encoded (RFC 6265 4.1.1: an attribute value holds
no ``;``), a control character becomes ``\xHH``.

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

__all__ = ["FLAGS", "CookieRewrite", "parse_flags"]

#: The words of proxy_cookie_flags (samesite= with strict, lax or none).
FLAGS = ("secure", "httponly", "samesite", "nosecure", "nohttponly", "nosamesite")

#: The attributes the flags name, as written when added.
_SPELLING = {b"secure": b"Secure", b"httponly": b"HttpOnly", b"samesite": b"SameSite"}

#: What SameSite may be set to (RFC 6265bis 4.1.2.7).
_SAME_SITE = ("strict", "lax", "none")

#: An attribute this rewrites, from the ``;`` before it to the end of its value.
#: The cookie's own name=value comes before the first ``;`` and holds none (RFC
#: 6265 4.1.1), so a cookie named ``path`` is never read as the attribute.
_ATTRIBUTE = re.compile(rb";[ \t]*(path|domain)[ \t]*=([^;]*)", re.IGNORECASE)

#: The spaces around an attribute value, which are not part of it (RFC 6265 5.2).
_SPACES = b" \t"


def parse_flags(text: str) -> list[tuple[bytes, bytes | None]]:
    """``proxy_cookie_flags``'s words as (attribute, value or ``None`` to remove it).

    Raises:
        ValueError: naming a word that is not a flag, one given twice, or none.
    """
    flags: list[tuple[bytes, bytes | None]] = []
    seen: set[bytes] = set()
    for word in text.lower().split():
        name, equals, value = word.partition("=")
        if name == "samesite" and value in _SAME_SITE:
            flag: tuple[bytes, bytes | None] = (b"samesite", value.capitalize().encode())
        elif not equals and name in FLAGS and name != "samesite":
            attribute = name.removeprefix("no").encode()
            flag = (attribute, None) if name.startswith("no") else (attribute, b"")
        else:
            raise ValueError(
                f"{word!r} is not a cookie flag (secure, httponly, samesite=strict|lax|none,"
                " nosecure, nohttponly, nosamesite)"
            )
        if flag[0] in seen:
            raise ValueError(f"{text!r} sets {flag[0].decode()} twice")
        seen.add(flag[0])
        flags.append(flag)
    if not flags:
        raise ValueError("no flags given (secure, httponly, samesite=..., or their no- forms)")
    return flags


class CookieRewrite:
    """A proxy mount's rewriting of ``Set-Cookie`` (see the module docstring).

    Args:
        paths: ``proxy_cookie_path``'s prefixes and replacements, in order.
        domains: ``proxy_cookie_domain``'s domains and replacements, in order.
        flags: ``proxy_cookie_flags``'s cookie names (``*``: any) and flags.
    """

    def __init__(
        self,
        paths: Sequence[tuple[str, str]] = (),
        domains: Sequence[tuple[str, str]] = (),
        flags: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._flags = {name.lower().encode("utf-8"): parse_flags(words) for name, words in flags}
        self._any_flags = self._flags.pop(b"*", None)
        self._paths = [
            (source.encode("utf-8"), RequestTemplate(replacement)) for source, replacement in paths
        ]
        # A replacement's leading "." is dropped, as nginx drops it: the upstream's
        # own dot is kept, and "..shop.example" would be refused (RFC 6265 5.2.3).
        self._domains = [
            (
                source.lstrip(".").lower().encode("utf-8"),
                RequestTemplate(replacement[1:] if replacement.startswith(".") else replacement),
            )
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
        """One ``Set-Cookie`` value with its ``Path``, ``Domain`` and flags rewritten."""
        if self._flags or self._any_flags:
            # The name: before the "=" of the first pair (a pair without one is all
            # value, RFC 6265 5.2, and has an empty name); matched without case, as
            # nginx matches it.
            pair = value.partition(b";")[0]
            name = pair.partition(b"=")[0].strip().lower() if b"=" in pair else b""
            flags = self._flags.get(name, self._any_flags)
            if flags:
                value = _with_flags(value, flags)
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
            rendered = template.render(request, remote_user, proxies=trusted_proxies)
            replaced = rendered.replace(b";", b"%3B") + rest
            if not rendered and not rest:
                return b""  # an empty replacement: the attribute goes
            # The spaces the upstream wrote around the value stay as they were.
            before = raw[: len(raw) - len(raw.lstrip(_SPACES))]
            after = raw[len(raw.rstrip(_SPACES)) :]
            head = match.group(0)[: match.start(2) - match.start(0)]
            return head + before + start + replaced + after

        return _ATTRIBUTE.sub(rewrite, value)


def _with_flags(value: bytes, flags: list[tuple[bytes, bytes | None]]) -> bytes:
    """``value`` with each flag's attribute added, set or removed, the rest as it was."""
    cookie, *attributes = value.split(b";")
    for attribute, setting in flags:
        present = [
            index
            for index, text in enumerate(attributes)
            if text.partition(b"=")[0].strip(_SPACES).lower() == attribute
        ]
        if setting is None:
            attributes = [text for index, text in enumerate(attributes) if index not in present]
            continue
        written = b" " + _SPELLING[attribute] + (b"=" + setting if setting else b"")
        if not present:
            if attributes and not attributes[-1].strip(_SPACES):
                attributes[-1] = written  # in place of the nothing after a last ";"
            else:
                attributes.append(written)
        elif setting:
            for index in present:  # SameSite: the value asked for
                attributes[index] = written
    return b";".join([cookie, *attributes])


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
