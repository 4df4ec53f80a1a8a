r"""A host's ``rewrite`` lines: nginx's ``rewrite`` in a ``server`` block.

Moving a site's URLs (``/blog/2019/my-post`` to ``/articles/my-post``) or serving
old addresses from new places is what nginx users write as ``rewrite`` lines in a
``server`` block. A host's ``rewrite`` list holds them here, in nginx's words, one
string per line::

    rewrite = [
        '^/blog/\d+/(.+)$ /articles/$1 permanent',
        '^/shop(/.*)?$ https://shop.example.com$1 redirect',
        '^/old/(.*)$ /new/$1 last',
    ]

Read as nginx reads them (`ngx_http_rewrite_module
<https://nginx.org/en/docs/http/ngx_http_rewrite_module.html#rewrite>`_):

- The regular expression is read by the ``regex`` package (the optional extra
  ``twistwsgi[rewrite]``), which takes PCRE's syntax where Python's ``re`` does not
  (``(?<name>...)``, ``[[:digit:]]``, possessive quantifiers) and, unlike ``re``,
  can be stopped: a line's backtracking on a long path a client made up would
  otherwise hold the reactor for minutes. Each request gets :data:`TIME_LIMIT` for
  all the host's lines, and the lines are run once more when they run out of it
  (see :class:`~twistwsgi.routing.PatternTimeoutError`); past it again, it is
  answered 500 and the line is logged, as
  nginx answers when PCRE's match limit is hit. It is searched in the request's
  ``$uri``: its path percent-decoded, dot-segments removed and runs of slashes
  made one. The lines are tried in order, each once.
- The flag says what a matching line does. ``permanent`` answers a ``301``,
  ``redirect`` a ``302``, and so does a replacement that starts with ``http://``,
  ``https://`` or ``$scheme`` whatever its flag (as nginx), or ``${scheme}`` (which
  nginx would take for a path).
  Otherwise the request is rewritten inside the server: its ``$uri`` becomes the
  replacement and its ``$args`` those the replacement gives. With no flag the next
  lines go on with the new URI; ``last`` and ``break`` stop the lines (in a
  ``server`` block both go on to the ``location`` search, here the host's mounts,
  with the new URI). A redirect after a rewrite starts from the rewritten URI. Words
  may be quoted as in nginx's files (``"^/a\d{2}$"``).
- The replacement takes ``$1`` to ``$9`` and the names of named groups (``$slug``;
  a group that did not match is empty), and the request variables of
  ``proxy_set_header`` (``$host``, ``$scheme``, ``$args``, ``$arg_page``...). Each
  may be written in braces, as everywhere (:mod:`twistwsgi.templates` reads every
  setting's ``$`` references): ``${1}0`` is the first group then a ``0``,
  ``${slug}x`` the group ``slug`` then an ``x``, ``${host}`` is ``$host``; ``$0`` and
  ``${10}`` name no group, refused as in a mount's captures.
  A group holds bytes of the decoded ``$uri``. In a redirect's ``Location`` it is
  percent-encoded where its place may not hold its bytes: in the path ``?``,
  ``#``, a space, non-ASCII; after the replacement's ``?``, or a variable in the
  path that may bring one (``$is_args``, ``$request_uri``: the rule of a mount's
  captures, :func:`~twistwsgi.captures.may_start_query`), these and ``&``, ``+``
  and ``;`` (nginx's escaping of arguments), so a path cannot add arguments; a
  variable is encoded as a ``return`` mount's ``Location`` encodes it, and a
  ``Location`` that would start with ``//`` (another site, to a browser) starts
  ``/%2F``. Inside the server the path part *is* the new ``$uri``, decoded, and
  nothing decodes it again: groups and variables go in as they are (a ``?`` or a
  ``%`` in a group stays that byte of the path, and cannot start arguments), as
  nginx copies captures unescaped outside the arguments; the part after the
  replacement's ``?`` is the new ``$args``, encoded as a redirect's arguments are,
  and a ``#`` a variable brings there as ``%23`` (nginx copies it as it is, which
  would end the arguments in the request line sent upstream).
- The query of the request is appended (``?args``, or ``&args`` when the
  replacement has a ``?`` of its own), unless the replacement ends with ``?``, as
  nginx's.
- A rewrite inside needs a path: a replacement that starts with neither ``/`` nor
  a ``$`` is refused when the configuration is loaded; one that makes an empty
  URI, or one without its leading ``/``, at run time is answered 500 and logged
  (nginx: "the rewritten URI has a zero length").
- ``OPTIONS *`` names no path: no line applies to it.

The lines are the host's guard (:class:`~twistwsgi.routing.HostGuard`), asked
after its https redirect and client-certificate check and before its mounts, as
nginx's ``rewrite`` in a ``server`` block runs before the ``location`` is chosen.
A redirect (or the 500) is answered from the request's head, its body unread. A
rewrite inside makes a :class:`~twistwsgi.http.request.RewrittenRequest`, which
the router hands to the mounts in place of the client's (:meth:`Rewrites.rewritten`)
and the protocol's body limit reads too, so the limit that applies is the one of
the mount the new path goes to. What each part sees then is nginx's: the mounts,
``$uri``, ``$args``, ``PATH_INFO``, ``SCRIPT_NAME`` and ``QUERY_STRING`` the new
path and query, a static mount the file of the new path, a proxy mount the new
path (encoded again) and query, mapped as any other; ``$request_uri``, the access
log's ``$request`` and WSGI's ``REQUEST_URI`` and ``RAW_URI`` the request as the
client sent it (uWSGI's ``REQUEST_URI`` is nginx's ``$request_uri``).

Where this departs from nginx, on the safe side: the router resolves the
dot-segments of the new URI before it searches the mounts (nginx searches its
locations with ``/a/../b`` as made and leaves the ``..`` to the file system); an
``internal`` static mount stays for ``X-Accel-Redirect`` alone (nginx counts a
rewritten request as internal); and an ``auth_request`` gate is asked about the
new path and query, what is served (nginx's configurations usually pass it
``$request_uri``).

nginx repeats its internal redirects at most 10 times; the lines of a host run
once per request, and nothing here sends a rewritten request back to them, so
there is no cycle to count.

:func:`parse_rewrite` is pure (the configuration's check), and so is
:meth:`Rewrites.target`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twistwsgi.captures import RenderPiece, compile_template, render_pieces
from twistwsgi.fixed_response import NGINX_ESCAPES
from twistwsgi.forwarding import TrustedProxies, encode_path
from twistwsgi.http.request import RequestHead, RewrittenRequest
from twistwsgi.routing import (
    PatternTimeoutError,
    answer_error,
    error_body,
    merge_slashes,
    remove_dot_segments,
    search_twice,
)
from twistwsgi.templates import Groups, starts_with_scheme

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = ["TIME_LIMIT", "Outcome", "RewriteRule", "Rewrites", "parse_rewrite"]

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
_NOT_A_PATH = "not a path"
_FAILED = b"Internal Server Error: the address could not be rewritten\n"


class _LineTimeoutError(PatternTimeoutError):
    """A rewrite line ran out of time on ``path`` (the ``$uri`` it was searched in)."""

    def __init__(self, culprit: str, path: bytes) -> None:
        super().__init__(culprit)
        self.path = path


def _regex_module() -> ModuleType:
    """The ``regex`` package (an optional extra), or a ``ValueError`` saying to get it."""
    try:
        return importlib.import_module("regex")
    except ImportError:
        raise ValueError(_MISSING) from None


_FLAGS = {"permanent": 301, "redirect": 302}
#: nginx's flags that change the request inside the server ("" is no flag at all).
_INTERNAL = ("last", "break", "")
_ABSOLUTE = ("http://", "https://")
_SYNTAX = (
    "expected 'REGEX REPLACEMENT [FLAG]', FLAG one of last, break, redirect or"
    " permanent (or none), e.g. '^/old/(.*)$ /new/$1 last'"
)
_PLAIN_TEXT = b"text/plain; charset=utf-8"


@dataclass(frozen=True)
class RewriteRule:
    """One ``rewrite`` line, checked.

    Attributes:
        pattern: the regular expression, as written.
        replacement: the new URI (a path inside the server) or the URL the redirect
            sends to, with ``$1``... and variables.
        flag: ``"permanent"`` or ``"redirect"`` (the client is redirected), ``"last"``
            or ``"break"`` (the request's URI changes and the lines stop), or ``""``
            (the URI changes and the next lines go on with it).
    """

    pattern: str
    replacement: str
    flag: str

    @property
    def status(self) -> int | None:
        """The status of the redirect (301, 302), or ``None`` for a rewrite inside."""
        return _FLAGS.get(self.flag)

    def __str__(self) -> str:
        words = [_word(self.pattern), _word(self.replacement)]
        return " ".join([*words, self.flag] if self.flag else words)


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


def _is_absolute(replacement: str) -> bool:
    """Whether ``replacement`` is a URL: ``http://``, ``https://``, ``$scheme`` first."""
    return replacement.startswith(_ABSOLUTE) or starts_with_scheme(replacement)


def parse_rewrite(text: str) -> RewriteRule:
    """Read one ``rewrite`` line (see the module docstring).

    Raises:
        ValueError: naming what is wrong: the syntax, a pattern that does not
            compile, a group the pattern does not have, an unknown variable, a
            replacement inside the server that is not a path, the regex package
            missing.
    """
    words = _words(text)
    if len(words) == 2:
        words.append("")
    if len(words) != 3 or words[2] not in (*_FLAGS, *_INTERNAL):
        raise ValueError(f"{_SYNTAX}, got {text!r}")
    pattern, replacement, flag = words
    if _is_absolute(replacement) and flag in _INTERNAL:
        # nginx's: a URL redirects (302), whatever last or break say.
        flag = "redirect"
    if flag in _INTERNAL and not replacement.startswith(("/", "$")):
        # nginx would take "new/x" as a URI no location starts (a path starts with
        # "/", RFC 9112 3.2.1); "$1" may well hold the leading slash.
        raise ValueError(
            f"{text!r}: a rewrite inside the server needs a replacement that is a"
            " path (starting with / or a $group), or a URL (http://, https://, $scheme)"
        )
    rule = RewriteRule(pattern, replacement, flag)
    _Compiled(rule)  # (its checks)
    return rule


class _Compiled:
    """A rule ready to answer: the compiled pattern, the replacement in pieces."""

    __slots__ = (
        "_pieces",
        "_query_pieces",
        "appends_with",
        "groups",
        "has_args",
        "keeps_query",
        "pattern",
        "regex",
        "status",
        "stops",
    )

    def __init__(self, rule: RewriteRule) -> None:
        regex = _regex_module()
        self.pattern = rule.pattern
        try:
            self.regex: Any = regex.compile(rule.pattern.encode("utf-8"))
        except regex.error as error:
            raise ValueError(f"{rule.pattern!r} is not a regular expression: {error}") from None
        self.groups = Groups.of(self.regex, shown=repr(rule.pattern))
        self.status = rule.status
        # Only no flag at all goes on to the next line (nginx's rewrite without one).
        self.stops = bool(rule.flag)
        replacement = rule.replacement
        # nginx: a replacement ending in "?" drops the request's query; one with a
        # "?" of its own gets it after an "&".
        self.keeps_query = not replacement.endswith("?")
        if not self.keeps_query:
            replacement = replacement[:-1]
        self.appends_with = b"&" if "?" in replacement else b"?"
        # Read as a mount's captures are (compile_template): after a "?", or a
        # variable that may bring one ($is_args, $request_uri), a group is encoded
        # as in a query. Unlike a return mount's URL, a group may stand before the
        # path: nginx's own example puts one right after the host
        # ("^/shop(/.*)?$ https://shop.example.com$1").
        whole = rule.replacement
        self._query_pieces: list[RenderPiece] = []
        if self.status is not None:
            # A URL for a Location field: every piece encoded for where it lands.
            self._pieces = compile_template(replacement, self.groups, url=True, whole=whole)
            self.has_args = False
            return
        # Inside the server the path part is the new $uri, decoded as the router
        # reads it: groups (decoded bytes of $uri) and variables go in as they are,
        # and nothing decodes it again, so a "%" or "?" in them stays that byte of
        # the path (nginx's ngx_http_script_copy_capture_code copies them unescaped
        # outside the arguments). The part after the replacement's "?" is the new
        # $args, a query as sent: encoded as a redirect's is.
        path, mark, query = replacement.partition("?")
        self.has_args = bool(mark)
        self._pieces = compile_template(path, self.groups, url=False, whole=whole)
        self._query_pieces = compile_template(
            query, self.groups, url=True, in_query=True, whole=whole
        )

    def location(
        self,
        match: Any,
        request: RequestHead,
        user: str | None,
        proxies: TrustedProxies,
    ) -> bytes:
        """The ``Location`` for ``request``, whose path ``match`` matched."""
        url = render_pieces(self._pieces, match, request, user, proxies=proxies)
        if url.startswith(b"//"):
            # A browser reads //name as another site's address (RFC 3986 4.2).
            url = b"/%2F" + url[2:]
        if self.keeps_query and request.query:
            url += self.appends_with + request.query
        return url

    def rewrite(
        self,
        match: Any,
        request: RequestHead,
        user: str | None,
        proxies: TrustedProxies,
    ) -> tuple[bytes, bytes]:
        """The new ``$uri`` (decoded) and ``$args`` of ``request``, whose path ``match`` matched.

        nginx's: the replacement's own arguments, then ``&`` and the request's; or
        the request's alone; none when the replacement ended with ``?``.
        """
        path = render_pieces(self._pieces, match, request, user, proxies=proxies)
        if self.has_args:
            args = render_pieces(self._query_pieces, match, request, user, proxies=proxies)
            if b"#" in args:
                # A variable ($uri, a header) encoded for a Location keeps "#", a
                # fragment there; in a query sent upstream (or QUERY_STRING) it
                # would cut the arguments short (RFC 3986 3.4, RFC 9112 3.2).
                args = args.replace(b"#", b"%23")
            if self.keeps_query and request.query:
                args += b"&" + request.query
        else:
            args = request.query if self.keeps_query else b""
        return path, args


#: What the lines made of a request: nothing (``None``), a redirect (status and
#: ``Location``), the request rewritten inside the server, or why it is answered 500.
Outcome = tuple[int, bytes] | RequestHead | str | None


class Rewrites:
    """A host's ``rewrite`` lines, as its guard: redirects, or rewrites inside the server.

    The router asks it twice per request, as it asks every guard: :meth:`__call__`
    (redirects, and the 500 of lines that failed) and then :meth:`rewritten` (the
    request the mounts see); the protocol asks :meth:`answers` and
    :meth:`rewritten` first, for the body limit. One request's lines run once: the
    outcome is kept for the next question about the same request.

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
        self._last: tuple[RequestHead, Outcome] | None = None

    @property
    def internal(self) -> bool:
        """Whether any line rewrites inside the server (else :meth:`rewritten` is idle)."""
        return any(rule.status is None for rule in self.rules)

    def target(self, request: RequestHead, user: str | None = None) -> Outcome:
        """What the lines make of ``request`` (see the module docstring).

        ``None`` when no line matches; the status and ``Location`` of a redirect;
        the request rewritten inside the server (a
        :class:`~twistwsgi.http.request.RewrittenRequest`); ``"timed out"`` when the
        lines took longer than :data:`TIME_LIMIT`, ``"not a path"`` when a rewrite
        made a URI that does not start with ``/`` (both logged, naming the line).
        """
        last = self._last
        if last is not None and last[0] is request:
            return last[1]
        try:
            outcome = search_twice(lambda head: self._target(head, user), request)
        except _LineTimeoutError as out:
            _log.error(
                "Rewrite line {pattern} took over {limit:g}s on a path of {size}"
                " bytes ({method} {target:.80}...): answered 500",
                pattern=out.culprit,
                limit=TIME_LIMIT,
                size=len(out.path),
                method=request.method.decode("latin-1"),
                target=request.target.decode("latin-1"),
            )
            outcome = _TIMED_OUT
        self._last = (request, outcome)
        return outcome

    def _target(self, request: RequestHead, user: str | None) -> Outcome:
        if request.target == b"*":
            return None  # OPTIONS *: about the server, no path
        path = remove_dot_segments(request.decoded_path)
        if path is None:
            return None  # above the root: the router's 404
        path = merge_slashes(path)
        current = request
        clock = self._clock
        deadline = clock() + TIME_LIMIT
        for rule in self._compiled:
            try:
                match = rule.regex.search(path, timeout=max(deadline - clock(), 0.001))
            except TimeoutError:
                raise _LineTimeoutError(rule.pattern, path) from None
            if match is None:
                continue
            if rule.status is not None:
                # From the URI as the lines before left it, as nginx's.
                return rule.status, rule.location(match, current, user, self._trusted)
            uri, args = rule.rewrite(match, current, user, self._trusted)
            if not uri.startswith(b"/"):
                # nginx answers 500 to an empty one ("the rewritten URI has a zero
                # length"); one without its slash would match no mount either.
                _log.error(
                    "Rewrite line {pattern} made {uri!r} of {target:.80}, not a path: answered 500",
                    pattern=rule.pattern,
                    uri=uri,
                    target=request.target.decode("latin-1"),
                )
                return _NOT_A_PATH
            current = RewrittenRequest.of(
                current, path=encode_path(uri), decoded_path=uri, query=args
            )
            if rule.stops:
                break  # last, break: the location search, with the new URI
            normal = remove_dot_segments(uri)
            if normal is None:
                break  # above the root: the router's 404
            path = merge_slashes(normal)
        return None if current is request else current

    def answers(self, request: RequestHead, /) -> bool:
        """Whether the lines answer ``request`` themselves (asked before its body is read).

        A redirect, or the 500 of lines that failed; not a rewrite inside.
        """
        outcome = self.target(request)
        return outcome is not None and not isinstance(outcome, RequestHead)

    def rewritten(self, request: RequestHead, /) -> RequestHead:
        """``request`` as the lines left it for the mounts (itself when none changed it)."""
        outcome = self.target(request)
        return outcome if isinstance(outcome, RequestHead) else request

    def __call__(self, exchange: Exchange, name: str | None, /) -> bool:
        """Redirect ``exchange`` (or answer 500) if the lines say so; whether they did."""
        found = self.target(exchange.request, exchange.remote_user)
        if found is None or isinstance(found, RequestHead):
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
