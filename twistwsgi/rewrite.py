r"""Redirects by regular expression: nginx's ``rewrite REGEX REPLACEMENT permanent``.

Moving a site's URLs (``/blog/2019/my-post`` to ``/articles/my-post``) is what nginx
users write as ``rewrite`` lines in a ``server`` block. A host's ``rewrite`` list
holds them here, in nginx's words, one string per line::

    rewrite = [
        '^/blog/\d+/(.+)$ /articles/$1 permanent',
        '^/shop(/.*)?$ https://shop.example.com$1 redirect',
    ]

Read as nginx reads them (`ngx_http_rewrite_module
<https://nginx.org/en/docs/http/ngx_http_rewrite_module.html#rewrite>`_):

- The regular expression (Python's ``re``, which reads nginx's PCRE patterns as
  written, ``(?i)`` for case-insensitive included) is searched in the request's
  path, percent-decoded and with its dot-segments removed (nginx's ``$uri``). The
  lines are tried in order; the first that matches answers.
- ``permanent`` is a ``301``, ``redirect`` a ``302``; a replacement that starts with
  ``http://``, ``https://`` or ``$scheme`` may leave the flag out (a ``302``).
  nginx's other forms rewrite the request inside the server (``last``, ``break``, or
  no flag before a path): they are refused when the configuration is loaded, as a
  mount (or the application) is where a path is served here.
- The replacement takes ``$1`` to ``$9`` (the groups; one that did not match is
  empty) and the request variables of ``proxy_set_header`` (``$host``, ``$scheme``,
  ``$args``...). A group is percent-encoded where a path may not hold its bytes
  (``?``, ``#``, a space, non-ASCII), as it came decoded; a variable is encoded as a
  ``return`` mount's ``Location`` encodes it.
- The query of the request is appended (``?args``, or ``&args`` when the replacement
  has a ``?`` of its own), unless the replacement ends with ``?``, as nginx's.

The redirect is the host's guard (:class:`~twistwsgi.routing.HostGuard`), asked
after its https redirect and client-certificate check and before its mounts, as
nginx's ``rewrite`` in a ``server`` block runs before the ``location`` is chosen;
it answers from the request's head, its body unread.

:func:`parse_rewrite` is pure (the configuration's check), and so is
:meth:`RewriteRedirects.target`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes

from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.request import RequestHead
from twistwsgi.log_format import RequestTemplate
from twistwsgi.routing import error_body, remove_dot_segments

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = ["RewriteRedirects", "RewriteRule", "parse_rewrite"]

_FLAGS = {"permanent": 301, "redirect": 302}
_NAMES = {status: flag for flag, status in _FLAGS.items()}
_INTERNAL = ("last", "break")
_ABSOLUTE = ("http://", "https://", "$scheme")
_SYNTAX = (
    "expected 'REGEX REPLACEMENT permanent' or 'REGEX REPLACEMENT redirect'"
    " (a replacement starting with http://, https:// or $scheme may leave the flag"
    " out), e.g. '^/old/(.*)$ /new/$1 permanent'"
)
# A group's bytes in a URL: what a path may hold stays, the rest is percent-encoded
# (RFC 3986 3.3; "?" and "#" would end the path).
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_GROUP = re.compile(r"\$([1-9])")
_PLAIN_TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True)
class RewriteRule:
    """One ``rewrite`` line, checked.

    Attributes:
        pattern: the regular expression, as written.
        replacement: the URL the redirect sends to, with ``$1``... and variables.
        status: ``301`` (permanent) or ``302`` (redirect).
    """

    pattern: str
    replacement: str
    status: int

    def __str__(self) -> str:
        return f"{self.pattern} {self.replacement} {_NAMES[self.status]}"


def parse_rewrite(text: str) -> RewriteRule:
    """Read one ``rewrite`` line (see the module docstring).

    Raises:
        ValueError: naming what is wrong: the syntax, an internal rewrite, a pattern
            that does not compile, a group the pattern does not have, an unknown
            variable.
    """
    words = text.split()
    if len(words) == 2 and words[1].startswith(_ABSOLUTE):
        words.append("redirect")  # nginx's: a URL alone redirects (302)
    if (len(words) == 3 and words[2] in _INTERNAL) or len(words) == 2:
        raise ValueError(
            f"{text!r} rewrites the request inside the server (nginx's last, break, or no"
            " flag before a path), which twistwsgi does not do: redirect the client"
            " (permanent or redirect), or serve the path from a mount"
        )
    if len(words) != 3 or words[2] not in _FLAGS:
        raise ValueError(f"{_SYNTAX}, got {text!r}")
    pattern, replacement, flag = words
    rule = RewriteRule(pattern, replacement, _FLAGS[flag])
    _Compiled(rule)  # (its checks)
    return rule


class _Compiled:
    """A rule ready to answer: the compiled pattern, the replacement in pieces."""

    __slots__ = ("_pieces", "appends_with", "keeps_query", "regex", "status")

    def __init__(self, rule: RewriteRule) -> None:
        try:
            self.regex = re.compile(rule.pattern.encode("utf-8"))
        except re.error as error:
            raise ValueError(f"{rule.pattern!r} is not a regular expression: {error}") from None
        self.status = rule.status
        replacement = rule.replacement
        # nginx: a replacement ending in "?" drops the request's query; one with a
        # "?" of its own gets it after an "&".
        self.keeps_query = not replacement.endswith("?")
        if not self.keeps_query:
            replacement = replacement[:-1]
        self.appends_with = b"&" if "?" in replacement else b"?"
        # Literal text (with variables) and group numbers, alternating.
        self._pieces: list[RequestTemplate | int] = []
        for index, piece in enumerate(_GROUP.split(replacement)):
            if index % 2:
                group = int(piece)
                if group > self.regex.groups:
                    raise ValueError(
                        f"{rule.replacement!r} uses ${group}, but {rule.pattern!r} has"
                        f" {self.regex.groups} group(s)"
                    )
                self._pieces.append(group)
            elif piece:
                try:
                    self._pieces.append(RequestTemplate(piece, escape="url"))
                except ValueError as error:
                    raise ValueError(f"{rule.replacement!r}: {error}") from None

    def location(
        self,
        match: re.Match[bytes],
        request: RequestHead,
        user: str | None,
        proxies: TrustedProxies,
    ) -> bytes:
        """The ``Location`` for ``request``, whose path ``match`` matched."""
        parts = []
        for piece in self._pieces:
            if isinstance(piece, int):
                parts.append(quote_from_bytes(match.group(piece) or b"", _PATH_SAFE).encode())
            else:
                parts.append(piece.render(request, user, proxies=proxies))
        url = b"".join(parts)
        if self.keeps_query and request.query:
            url += self.appends_with + request.query
        return url


class RewriteRedirects:
    """A host's ``rewrite`` lines, as its guard: redirects the requests they match.

    Args:
        rules: the lines, in order.
        trusted_proxies: whose forwarding fields the variables believe (``$scheme``,
            ``$client_addr``).
    """

    def __init__(self, rules: Sequence[RewriteRule], trusted_proxies: TrustedProxies) -> None:
        self.rules = tuple(rules)
        self._compiled = [_Compiled(rule) for rule in rules]
        self._trusted = trusted_proxies

    def target(self, request: RequestHead, user: str | None = None) -> tuple[int, bytes] | None:
        """The status and ``Location`` of the first line matching ``request``, if any."""
        path = remove_dot_segments(request.decoded_path)
        if path is None:
            return None  # above the root: the router's 404
        for rule in self._compiled:
            match = rule.regex.search(path)
            if match is not None:
                return rule.status, rule.location(match, request, user, self._trusted)
        return None

    def answers(self, request: RequestHead, /) -> bool:
        """Whether a line matches ``request`` (asked before its body is read)."""
        path = remove_dot_segments(request.decoded_path)
        return path is not None and any(rule.regex.search(path) for rule in self._compiled)

    def __call__(self, exchange: Exchange, name: str | None, /) -> bool:
        """Redirect ``exchange`` if a line matches it; whether one did."""
        found = self.target(exchange.request, exchange.remote_user)
        if found is None:
            return False
        status, location = found
        body = error_body(status)
        exchange.start_response(
            status,
            [
                (b"Location", location),
                (b"Content-Type", _PLAIN_TEXT),
                (b"Content-Length", b"%d" % len(body)),
            ],
        )
        exchange.finish(body)  # (no body to HEAD, RFC 9110 9.3.2)
        return True
