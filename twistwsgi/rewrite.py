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

- The regular expression is read by the ``regex`` package (the optional extra
  ``twistwsgi[rewrite]``), which takes PCRE's syntax where Python's ``re`` does not
  (``(?<name>...)``, ``[[:digit:]]``, possessive quantifiers) and, unlike ``re``,
  can be stopped: a line's backtracking on a long path a client made up would
  otherwise hold the reactor for minutes. Each request gets :data:`TIME_LIMIT` for
  all the host's lines; past it, it is answered 500 and the line is logged, as
  nginx answers when PCRE's match limit is hit. It is searched in the request's
  path, percent-decoded, dot-segments removed and runs of slashes made one (nginx's
  ``$uri``). The lines are tried in order; the first that matches answers.
- ``permanent`` is a ``301``, ``redirect`` a ``302``; a replacement that starts with
  ``http://``, ``https://`` or ``$scheme`` is a ``302`` with no flag, ``last`` or
  ``break`` too (as nginx). nginx's other forms rewrite the request inside the server
  (``last``, ``break``, or no flag before a path): they are refused when the
  configuration is loaded, as a mount (or the application) is where a path is served
  here. Words may be quoted as in nginx's files (``"^/a\d{2}$"``).
- The replacement takes ``$1`` to ``$9`` and the names of named groups (``$slug``;
  a group that did not match is empty), and the request variables of
  ``proxy_set_header`` (``$host``, ``$scheme``, ``$args``...). A group is
  percent-encoded where its place may not hold its bytes, as it came decoded: in the
  path ``?``, ``#``, a space, non-ASCII; after the replacement's ``?`` these and
  ``&``, ``+`` and ``;`` (nginx's escaping of arguments), so a path cannot add
  arguments. A
  variable is encoded as a ``return`` mount's ``Location`` encodes it. A ``Location``
  that would start with ``//`` (another site, to a browser) starts ``/%2F``.
- The query of the request is appended (``?args``, or ``&args`` when the replacement
  has a ``?`` of its own), unless the replacement ends with ``?``, as nginx's.
- ``OPTIONS *`` names no path: no line applies to it.

The redirect is the host's guard (:class:`~twistwsgi.routing.HostGuard`), asked
after its https redirect and client-certificate check and before its mounts, as
nginx's ``rewrite`` in a ``server`` block runs before the ``location`` is chosen;
it answers from the request's head, its body unread.

:func:`parse_rewrite` is pure (the configuration's check), and so is
:meth:`RewriteRedirects.target`.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes

from twisted.logger import Logger

from twistwsgi.fixed_response import NGINX_ESCAPES
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.request import RequestHead
from twistwsgi.log_format import RequestTemplate
from twistwsgi.routing import answer_error, error_body, merge_slashes, remove_dot_segments

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = ["TIME_LIMIT", "RewriteRedirects", "RewriteRule", "parse_rewrite"]

_log = Logger(namespace="twistwsgi.rewrite")

#: Seconds of matching one request may cost, all the host's lines together. A path
#: is at most a request line long (8 KiB by default); lines that need longer
#: backtrack on it, which a client can make them do on purpose.
TIME_LIMIT = 0.05

_MISSING = (
    "rewrite lines need the regex package (pip install 'twistwsgi[rewrite]'): Python's"
    " re cannot stop a match, and a client's path could make one run for minutes"
)
_TIMED_OUT = "timed out"
_FAILED = b"Internal Server Error: the address could not be rewritten\n"


def _regex_module() -> ModuleType:
    """The ``regex`` package (an optional extra), or a ``ValueError`` saying to get it."""
    try:
        return importlib.import_module("regex")
    except ImportError:
        raise ValueError(_MISSING) from None


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
# (RFC 3986 3.3; "?" and "#" would end the path). In the query "?" stays encoded,
# and "&", "+" and ";" are too, which would start or change an argument (nginx's
# NGX_ESCAPE_ARGS).
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
_QUERY_SAFE = "/!$'()*,=:@-._~"
# A $ reference: ${name}, $1 to $9, or $name (a group's name, else a variable).
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([1-9])|([A-Za-z_]\w*))")
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
        return f"{_word(self.pattern)} {_word(self.replacement)} {_NAMES[self.status]}"


def _word(text: str) -> str:
    """``text`` as an nginx word: quoted when it must be."""
    if text and not any(char.isspace() or char in "\"';{}" for char in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _words(text: str) -> list[str]:
    r"""``text`` cut into words as nginx's configuration reader does.

    Words are separated by whitespace; one in ``"`` or ``'`` quotes may hold spaces,
    ``{}`` and ``;``. In every word ``\"``, ``\'``, ``\\``, ``\n``, ``\r`` and
    ``\t`` are escapes; any other backslash stays (``\d``).

    Raises:
        ValueError: for a quote left open, or text right after a closing quote.
    """
    words = []
    index, end = 0, len(text)
    while index < end:
        if text[index].isspace():
            index += 1
            continue
        quote = text[index] if text[index] in "\"'" else None
        index += quote is not None
        chars = []
        while index < end and (text[index] != quote if quote else not text[index].isspace()):
            char = text[index]
            if char == "\\" and index + 1 < end and text[index + 1] in NGINX_ESCAPES:
                chars.append(NGINX_ESCAPES[text[index + 1]])
                index += 2
                continue
            chars.append(char)
            index += 1
        if quote:
            if index >= end:
                raise ValueError(f"{text!r}: a quote is not closed")
            index += 1
            if index < end and not text[index].isspace():
                raise ValueError(f"{text!r}: a space must follow a closing quote")
        words.append("".join(chars))
    return words


def parse_rewrite(text: str) -> RewriteRule:
    """Read one ``rewrite`` line (see the module docstring).

    Raises:
        ValueError: naming what is wrong: the syntax, an internal rewrite, a pattern
            that does not compile, a group the pattern does not have, an unknown
            variable, the regex package missing.
    """
    words = _words(text)
    absolute = len(words) >= 2 and words[1].startswith(_ABSOLUTE)
    if absolute and (len(words) == 2 or words[2] in _INTERNAL):
        # nginx's: a URL redirects (302), whatever last or break say.
        words[2:] = ["redirect"]
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

    __slots__ = ("_pieces", "appends_with", "keeps_query", "pattern", "regex", "status")

    def __init__(self, rule: RewriteRule) -> None:
        regex = _regex_module()
        self.pattern = rule.pattern
        try:
            self.regex: Any = regex.compile(rule.pattern.encode("utf-8"))
        except regex.error as error:
            raise ValueError(f"{rule.pattern!r} is not a regular expression: {error}") from None
        self.status = rule.status
        replacement = rule.replacement
        # nginx: a replacement ending in "?" drops the request's query; one with a
        # "?" of its own gets it after an "&".
        self.keeps_query = not replacement.endswith("?")
        if not self.keeps_query:
            replacement = replacement[:-1]
        self.appends_with = b"&" if "?" in replacement else b"?"
        # Literal text (with variables), and groups with what stays unencoded in them.
        self._pieces: list[RequestTemplate | tuple[int | str, str]] = []
        names = self.regex.groupindex
        literal = ""
        in_query = False
        start = 0
        for found in _REFERENCE.finditer(replacement):
            braced, number, word = found.groups()
            name = braced or word
            if number is None and name not in names:
                continue  # a variable: part of the literal text
            literal += replacement[start : found.start()]
            start = found.end()
            in_query = self._add_literal(literal, rule) or in_query
            literal = ""
            group: int | str = int(number) if number is not None else name
            if isinstance(group, int) and group > self.regex.groups:
                raise ValueError(
                    f"{rule.replacement!r} uses ${group}, but {rule.pattern!r} has"
                    f" {self.regex.groups} group(s)"
                )
            self._pieces.append((group, _QUERY_SAFE if in_query else _PATH_SAFE))
        self._add_literal(literal + replacement[start:], rule)

    def _add_literal(self, text: str, rule: RewriteRule) -> bool:
        """Add literal text (with variables); whether it starts the query."""
        if not text:
            return False
        try:
            self._pieces.append(RequestTemplate(text, escape="url"))
        except ValueError as error:
            raise ValueError(f"{rule.replacement!r}: {error}") from None
        return "?" in text

    def location(
        self,
        match: Any,
        request: RequestHead,
        user: str | None,
        proxies: TrustedProxies,
    ) -> bytes:
        """The ``Location`` for ``request``, whose path ``match`` matched."""
        parts = []
        for piece in self._pieces:
            if isinstance(piece, tuple):
                group, safe = piece
                parts.append(quote_from_bytes(match.group(group) or b"", safe).encode())
            else:
                parts.append(piece.render(request, user, proxies=proxies))
        url = b"".join(parts)
        if url.startswith(b"//"):
            # A browser reads //name as another site's address (RFC 3986 4.2).
            url = b"/%2F" + url[2:]
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

    def __init__(
        self,
        rules: Sequence[RewriteRule],
        trusted_proxies: TrustedProxies,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = tuple(rules)
        self._compiled = [_Compiled(rule) for rule in rules]
        self._trusted = trusted_proxies
        self._clock = clock
        # The last request looked at and what its lines said: the protocol asks
        # (answers, for the body limit) before the router does (__call__).
        self._last: tuple[RequestHead, tuple[int, bytes] | str | None] | None = None

    def target(
        self, request: RequestHead, user: str | None = None
    ) -> tuple[int, bytes] | str | None:
        """The status and ``Location`` of the first line matching ``request``.

        ``None`` when no line matches; ``"timed out"`` when the lines took longer
        than :data:`TIME_LIMIT` (logged, naming the line).
        """
        last = self._last
        if last is not None and last[0] is request:
            return last[1]
        outcome = self._target(request, user)
        self._last = (request, outcome)
        return outcome

    def _target(self, request: RequestHead, user: str | None) -> tuple[int, bytes] | str | None:
        if request.target == b"*":
            return None  # OPTIONS *: about the server, no path
        path = remove_dot_segments(request.decoded_path)
        if path is None:
            return None  # above the root: the router's 404
        path = merge_slashes(path)
        clock = self._clock
        deadline = clock() + TIME_LIMIT
        for rule in self._compiled:
            try:
                match = rule.regex.search(path, timeout=max(deadline - clock(), 0.001))
            except TimeoutError:
                _log.error(
                    "Rewrite line {pattern} took over {limit:g}s on a path of {size}"
                    " bytes ({method} {target:.80}...): answered 500",
                    pattern=rule.pattern,
                    limit=TIME_LIMIT,
                    size=len(path),
                    method=request.method.decode("latin-1"),
                    target=request.target.decode("latin-1"),
                )
                return _TIMED_OUT
            if match is not None:
                return rule.status, rule.location(match, request, user, self._trusted)
        return None

    def answers(self, request: RequestHead, /) -> bool:
        """Whether a line matches ``request`` (asked before its body is read)."""
        return self.target(request) is not None

    def __call__(self, exchange: Exchange, name: str | None, /) -> bool:
        """Redirect ``exchange`` if a line matches it; whether one did."""
        found = self.target(exchange.request, exchange.remote_user)
        if found is None:
            return False
        if isinstance(found, str):
            answer_error(exchange, 500, _FAILED)
            return True
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
