r"""Captures of a regular-expression mount in its settings: ``$1``, ``${1}``, ``$name``.

nginx users write a location's captures into its directives::

    location ~ ^/users/(\d+)/avatar$        { alias /srv/avatars/$1.png; }
    location ~ ^/api/v(\d+)/(.*)$           { proxy_pass http://backend/v$1/$2$is_args$args; }
    location ~ ^/old/(.*)$                  { return 301 https://example.com/new/$1; }

A ``~`` or ``~*`` mount takes them in its ``static`` directory, in the path and query
of its ``proxy`` URLs, and in its ``return`` URL or text. This module owns reading
such a setting (:func:`compile_template`, which a host's ``rewrite`` lines read
their replacement with too; :class:`CaptureTemplate`, :class:`FileTemplate`) and
expanding it with the match that chose the mount, which is pure logic (no reactor, no clock), and
the handler that hands that match to the mount's own (:class:`CapturingHandler`).
The references are read by :mod:`twistwsgi.templates`, as every setting's are
(nginx's syntax, `Regular expression captures <https://nginx.org/en/docs/regex_captures.html>`_):

- ``$1`` to ``$9`` (one digit: ``$12`` is ``$1`` and a ``2``), ``${1}``, and a named
  group's name (``(?<user>...)`` or ``(?P<user>...)``, written ``$user`` or
  ``${user}``). A group that did not take part in the match is empty.
- A number the pattern has no group for is refused when the configuration is loaded;
  so is any capture in a prefix or exact mount (it has no pattern), and ``$0`` or
  ``${10}`` (no group has such a number).
- A ``$name`` that is no group of the pattern is a request variable where the
  setting takes variables (``$host``, ``$args``: those of ``proxy_set_header``),
  and refused where it does not (a static directory): never left as it is written.
  A group's name wins over a variable of the same name.

What a capture holds is bytes of the path the mount was matched in: percent-decoded,
dot-segments removed, runs of slashes made one. Where it goes decides what is done
with it:

- **A directory** (:class:`FileTemplate`): as nginx's ``alias`` in a regular-expression
  location, the expanded value names the file itself, the path is not added to it.
  Everything before the first capture, cut at its last ``/``, is the fixed
  directory; the expanded rest is looked up below it by the static mount's own rules
  (no ``.`` or ``..`` segment, no hidden name, no link out, no encoded slash or
  backslash in the request), so no capture can name a file outside it.
- **A URL** (:class:`CaptureTemplate` with ``url=True``): percent-encoded for where
  it lands (RFC 3986 3.3, 3.4): in the path what a segment may not hold (``?``,
  ``#``, ``%``, a space, controls, non-ASCII), in the query that and ``&``, ``+``,
  ``;``, so a capture cannot end the path, start or add an argument, or split a
  header field (a decoded ``%0d%0a`` goes out as ``%0D%0A``); after a variable in
  the path (which may bring the ``?``: ``$is_args``, ``$request_uri``) as in the
  query. The text around it is the configuration's, sent as written. A capture
  must come after the scheme and host: it may not choose the site a redirect sends
  to, nor the upstream.
- **A body text**: as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes

from twisted.logger import Logger

from twistwsgi.forwarding import PATH_SAFE_DECODED, QUERY_SAFE_DECODED, TrustedProxies
from twistwsgi.http.request import CapturedRoute, RequestHead
from twistwsgi.log_format import RequestTemplate
from twistwsgi.routing import answer_error
from twistwsgi.templates import (
    Groups,
    Piece,
    Reference,
    cut_at,
    is_name,
    references,
    split_captures,
    starts_with_scheme,
)

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange, Handler

_log = Logger(namespace="twistwsgi.routing")

__all__ = [
    "CaptureTemplate",
    "CapturingHandler",
    "FileTemplate",
    "FixedCaptures",
    "Groups",
    "capture_numbers",
    "compile_template",
    "first_reference",
    "fixed_directory",
    "has_captures",
    "is_name",
    "may_start_query",
    "render_pieces",
    "request_variable",
    "split_captures",
    "split_upstream_url",
    "variable_text",
]

# A URL's beginning up to the "/" that starts its path: a scheme and an authority,
# whatever variables the authority holds (a leading $scheme is read as a scheme).
_ORIGIN_THEN_PATH = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*/")
# A URL's beginning that has not reached its path: a scheme and an authority so far.
_AUTHORITY_SO_FAR = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*")


# $uri, the decoded path, is split out of an upstream target.
_DECODED_URI = RequestTemplate("$uri", escape="none")


def _split_uri(text: str) -> list[str | None]:
    """``text`` cut at its ``$uri`` references, each a ``None`` between the parts."""
    parts: list[str | None] = []
    for part in cut_at(text, "uri"):
        parts += [None, part] if parts else [part]
    return parts


def capture_numbers(text: str) -> list[int]:
    """The numbered captures ``text`` refers to (``$1``, ``${2}``), in order."""
    return [found.key for found in references(text) if isinstance(found.key, int)]


def first_reference(text: str) -> int | None:
    """Where the first ``$`` reference of ``text`` (a capture or a variable) starts."""
    found = references(text)
    return found[0].start if found else None


def request_variable(text: str) -> str | None:
    """The first request variable ``text`` refers to (``$uri``, ``${host}``), if any.

    A ``$`` reference that names none (``$metadata``) is not one.
    """
    for found in references(text):
        try:
            RequestTemplate(found.spelled)
        except ValueError:
            continue
        return found.spelled
    return None


def has_captures(text: str, groups: Groups | None) -> bool:
    """Whether ``text`` refers to a capture: a number, or one of ``groups``' names."""
    names = groups.names if groups is not None else frozenset()
    return any(isinstance(found.key, int) or found.key in names for found in references(text))


def _group(match: Any, key: Piece) -> bytes:
    """A group's bytes in ``match``; empty when it took no part (nginx's)."""
    if match is None:
        return b""
    value: bytes | None = match.group(key)
    return value or b""


#: A piece of a template ready to render: text with variables, or what gives bytes
#: (a group's number or name, or a variable's template) and how they are encoded.
RenderPiece = RequestTemplate | tuple[Piece | RequestTemplate, str | None]


def render_pieces(
    pieces: Sequence[RenderPiece],
    match: Any,
    request: RequestHead,
    user: str | None,
    *,
    proxies: TrustedProxies | None,
) -> bytes:
    """The bytes of ``pieces`` for ``request``, whose path ``match`` matched.

    A text piece renders its variables; a ``(key, safe)`` piece takes a group of
    ``match`` (empty when it took no part) or a variable's value, percent-encoded
    but for the characters in ``safe`` (as it is for ``None``). For a mount's
    captures and a host's rewrite lines alike.
    """
    parts = []
    for piece in pieces:
        if isinstance(piece, tuple):
            key, safe = piece
            if isinstance(key, RequestTemplate):
                value = key.render(request, user, proxies=proxies)
            else:
                value = _group(match, key)
            parts.append(value if safe is None else quote_from_bytes(value, safe).encode())
        else:
            parts.append(piece.render(request, user, proxies=proxies))
    return b"".join(parts)


def variable_text(text: str, *, escape: str, whole: str) -> RequestTemplate:
    """``text``, a piece of a setting between its captures: its own text and variables.

    Args:
        text: the piece, as :func:`~twistwsgi.templates.split_captures` left it.
        escape: how its variables are encoded (see
            :class:`~twistwsgi.log_format.RequestTemplate`).
        whole: the setting, named in a message as the capture messages name it.

    Raises:
        ValueError: an unknown variable, saying which, after ``whole``.
    """
    try:
        return RequestTemplate(text, escape=escape)
    except ValueError as error:
        raise ValueError(f"{whole!r}: {error}") from None


def compile_template(
    text: str,
    groups: Groups | None,
    *,
    url: bool,
    target: bool = False,
    in_query: bool = False,
    refuse_before_path: bool = False,
    whole: str | None = None,
) -> list[RenderPiece]:
    """``text`` in pieces ready to render: text with variables, and captures.

    The one reading of a template with captures, for a mount's settings
    (:class:`CaptureTemplate`) and a host's rewrite lines alike, so that a capture
    is encoded the same way wherever it stands.

    Args:
        text: the template, or the part of one to read here.
        groups: the pattern's groups (``None``: none may be used).
        url: whether ``text`` is (part of) a URL: each capture is percent-encoded for
            its place, variables as in a ``Location``; else all go in as they are.
        target: whether ``text`` is a request-target sent upstream: its path starts
            at once, and ``$uri`` (decoded, as a capture is) is encoded as a capture.
        in_query: whether ``text`` starts in the URL's query (else a ``?`` in it,
            or a variable that may bring one, starts it).
        refuse_before_path: whether a capture before the URL's path (in its scheme
            or host) is refused.
        whole: the setting ``text`` is a part of, named in messages (else ``text``).

    Raises:
        ValueError: for a capture the pattern has not, an unknown variable, or a
            capture before the path (``refuse_before_path``).
    """
    shown = text if whole is None else whole
    escape = "url" if url else "none"
    pieces: list[RenderPiece] = []
    written = ""  # (the URL so far, each capture a NUL: see may_start_query)
    for piece in split_captures(text, groups, whole=whole):
        if isinstance(piece, str) and not is_name(piece):
            # In a target $uri, the decoded path, is encoded as a capture is: its
            # "?" and "%" stay the path's (nginx sends it decoded).
            for part in _split_uri(piece) if target else [piece]:
                if part is None:
                    pieces.append(
                        (_DECODED_URI, QUERY_SAFE_DECODED if in_query else PATH_SAFE_DECODED)
                    )
                    written += "\0"
                elif part:
                    pieces.append(variable_text(part, escape=escape, whole=shown))
                    in_query = in_query or may_start_query(written, part, target=target)
                    written += part
            continue
        if refuse_before_path and not _in_path(written):
            spelled = f"${piece}" if isinstance(piece, int) else f"${{{piece}}}"
            raise ValueError(
                f"{shown!r}: {spelled} comes before the URL's path; a capture goes in the"
                " path or query, after the host and a / (e.g."
                " 'https://example.com/new/$1'), so no request can choose the site"
                " it is sent to"
            )
        # A group's bytes in a URL are percent-encoded for where they stand.
        safe = None if not url else QUERY_SAFE_DECODED if in_query else PATH_SAFE_DECODED
        pieces.append((piece, safe))
        written += "\0"  # (a capture: something, neither "/" nor "?")
    return pieces


class CaptureTemplate:
    """A return mount's URL or text, or a proxy mount's path and query, with captures.

    Args:
        text: the setting as written: a ``Location`` URL, a body text, or the part
            of an upstream URL from its path on (``/v$1/$2$is_args$args``).
        groups: the mount pattern's groups (``None``: none may be used).
        url: whether ``text`` is a URL (each capture encoded for its place), else a
            body text (captures as they are).
        target: whether ``text`` is a request-target sent upstream: it starts with
            its path, ``#`` goes out as ``%23`` (a target has no fragment), and
            ``$uri`` (decoded, as a capture is) is encoded as a capture is.

    Raises:
        ValueError: for a capture the pattern has not, an unknown variable, or a
            capture before a URL's path (in its scheme or host).
    """

    __slots__ = ("_pieces", "_target", "_url", "text")

    def __init__(
        self, text: str, groups: Groups | None, *, url: bool, target: bool = False
    ) -> None:
        self.text = text
        self._url = url
        self._target = target
        self._pieces = compile_template(
            text, groups, url=url, target=target, refuse_before_path=url and not target
        )

    def render(
        self,
        match: Any,
        request: RequestHead,
        user: str | None = None,
        *,
        proxies: TrustedProxies | None = None,
    ) -> bytes:
        """The value for ``request``, whose path ``match`` (the mount's) matched."""
        value = render_pieces(self._pieces, match, request, user, proxies=proxies)
        if not self._url:
            return value
        if self._target:
            # An origin-form target (RFC 9112 3.2.1): one leading "/" (a "//" is
            # read as an authority by some servers), never a fragment.
            if not value.startswith(b"/") or value.startswith(b"//"):
                value = b"/" + value.lstrip(b"/")
            return value.replace(b"#", b"%23")
        if value.startswith(b"//"):
            # A browser reads //name as another site's address (RFC 3986 4.2).
            value = b"/%2F" + value[2:]
        return value


def may_start_query(written: str, text: str, *, target: bool = False) -> bool:
    """Whether ``text``, after ``written`` in a URL, may start the URL's query.

    It does with a ``?`` of its own, and may with a variable that may stand in the
    URL's path or query (one not surely in its scheme or host): its value may bring
    the ``?`` (``$is_args``, ``$request_uri``, a header's). A capture after it is
    then encoded as in a query, where an ``&`` it holds cannot add an argument (in a
    path that encoding means the same bytes). A mount's captures and a host's
    rewrite redirects both follow this rule.

    Args:
        written: the URL's text before ``text``, each capture in it a NUL character.
        text: literal text with variables.
        target: whether the URL is a request-target (its path starts at once).
    """
    if "?" in text:
        return True
    return any(
        target or not _before_path(written + text[: found.start], found)
        for found in references(text)
    )


def _before_path(written: str, reference: Reference) -> bool:
    """Whether ``reference``, after ``written``, surely stands before the URL's path.

    That is in its scheme (a leading ``$scheme``) or its authority (``https://$host``).
    Elsewhere it may be in the path: a URL that starts with a capture or a variable
    (``$1/x``, ``$request_uri``) starts with its path, as nginx reads a replacement
    that does not start with a scheme (a local URI).
    """
    if not written:
        return reference.key == "scheme"
    if starts_with_scheme(written):
        written = "scheme" + written[references(written)[0].end :]
    return _AUTHORITY_SO_FAR.fullmatch(written) is not None


def _in_path(written: str) -> bool:
    """Whether a URL written so far (``written``) has reached its path or query.

    A relative URL's path starts at once (``/new/``); an absolute one's after its
    scheme and host (``https://$host/``), variables in them or not.
    """
    if written.startswith("/") and not written.startswith("//"):
        return True
    if starts_with_scheme(written):
        # $scheme or ${scheme}, as the one reader spells it: a scheme's place.
        written = "scheme" + written[references(written)[0].end :]
    return _ORIGIN_THEN_PATH.match(written) is not None


def fixed_directory(before: str, directory: str) -> str:
    """The fixed part of a static directory with captures, the one it serves.

    That is ``before`` (the text in front of the first capture of ``directory``)
    cut at its last ``/``.

    Raises:
        ValueError: it is the file system's root, or there is none: a request
            could then name any file.
    """
    cut = before.rfind("/")
    fixed = before[:cut] if cut > 0 else ""
    if not fixed.strip("/"):
        raise ValueError(
            f"{directory!r}: the directory before the first capture is the file system's"
            " root (or none), so a request could name any file; start it with a fixed"
            " directory (e.g. '/srv/avatars/$1.png')"
        )
    return fixed


class FileTemplate:
    """A static mount's directory with captures: the file a request is answered with.

    As nginx's ``alias`` in a regular-expression location, the expanded text names
    the file (or directory) itself. Everything before the first capture, cut at
    its last ``/``, is :attr:`root`, the directory the static mount serves; the
    rest is expanded into a path below it, which the mount looks up under its own
    rules (see the module docstring).

    Args:
        directory: the directory as written (absolute, with captures).
        groups: the mount pattern's groups.

    Raises:
        ValueError: for a capture the pattern has not, a ``$name`` that is no group
            (a directory takes no variables), a fixed part that is the file
            system's root, a ``.`` or ``..`` segment after it.
    """

    __slots__ = ("_pieces", "root", "text")

    def __init__(self, directory: str, groups: Groups) -> None:
        pieces = split_captures(directory, groups)
        self.text = directory
        first = next((index for index, piece in enumerate(pieces) if _is_capture(piece)), -1)
        if first < 0:
            found = references(directory)
            shown = found[0].spelled if found else "it"
            raise ValueError(
                f"{directory!r}: {shown} is no group of the mount's pattern (a directory"
                " takes the pattern's captures, no variables)"
            )
        before = "".join(str(piece) for piece in pieces[:first])
        root = fixed_directory(before, directory)
        rest: list[Piece] = [before[len(root) :], *pieces[first:]]
        for piece in pieces:
            if _is_capture(piece) or "$" not in str(piece):
                continue
            # A variable, or a lone "$": never kept as written.
            variable = references(str(piece))
            shown = variable[0].spelled if variable else "$"
            raise ValueError(
                f"{directory!r}: {shown} is no group of the mount's pattern"
                " (a directory takes the pattern's captures $1 to $9 and named groups, no"
                " variables)"
            )
        written = "".join("x" if _is_capture(piece) else str(piece) for piece in rest)
        if any(segment in (".", "..") for segment in written.split("/")):
            raise ValueError(f"{directory!r}: a . or .. segment names no file to serve")
        self.root = root
        self._pieces = [
            piece if _is_capture(piece) else os.fsencode(str(piece)) for piece in rest if piece
        ]

    def expand(self, match: Any) -> bytes | None:
        """The path below :attr:`root` for the mount's ``match``, ``/`` first.

        ``None`` when it could name no file: a NUL byte (which no file-system path
        holds) in a capture.
        """
        parts = [
            piece if isinstance(piece, bytes) else _group(match, piece) for piece in self._pieces
        ]
        path = b"".join(parts)
        if b"\0" in path:
            return None
        return path


def _is_capture(piece: Piece) -> bool:
    return isinstance(piece, int) or is_name(piece)


def split_upstream_url(url: str) -> tuple[str, str]:
    """An upstream URL cut into where it connects and what it asks for there.

    ``http://backend:8080/v$1/$2?x=$3`` is ``("http://backend:8080", "/v$1/$2?x=$3")``;
    ``unix:/run/api.sock:/v$1`` is ``("unix:/run/api.sock", "/v$1")``. The second
    part is empty when the URL has no path or query.
    """
    if url.startswith("unix:"):
        socket, colon, uri = url[len("unix:") :].partition(":")
        return "unix:" + socket, uri if colon else ""
    scheme, sep, rest = url.partition("://")
    cut = min((index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=-1)
    if cut < 0:
        return url, ""
    return scheme + sep + rest[:cut], rest[cut:]


class CapturingHandler:
    """The handler of a mount whose settings use its captures, in front of its own.

    Puts the match that chose the mount in the request's route
    (:class:`~twistwsgi.http.request.CapturedRoute`), where the static, proxy and
    return handlers find it, then hands the exchange on: through the mount's access
    rules and limits too, which may answer later (a delayed rate, an
    ``auth_request``), when the host's table has searched other paths since.

    Args:
        inner: what answers the mount's requests.

    Attributes:
        table: the host's :class:`~twistwsgi.routing.MountTable`, set once it is built.
    """

    def __init__(self, inner: Handler) -> None:
        self.inner = inner
        self.table: Any = None

    def handle(self, exchange: Exchange) -> None:
        """Hand ``exchange`` on with the captures of the match that routed it here."""
        table = self.table
        route = exchange.route
        match = None if table is None or route is None else table.last_match(self)
        if match is None or route is None:
            # Reached other than through the host's router (a program's own use):
            # there are no captures to answer with.
            _log.error(
                "A mount using its pattern's captures was given a request its host's"
                " router did not route ({path!r:.80}): answered 500",
                path=exchange.request.path,
            )
            answer_error(exchange, 500, b"Internal Server Error\n")
            return
        exchange.route = CapturedRoute(route, match)
        self.inner.handle(exchange)


class FixedCaptures:
    """The handler of a pattern mount reached with a match known in advance.

    An exact mount's fallthrough passes its misses to the mount its path reaches
    without it, which may be a regular-expression mount using its captures: the
    path is the exact mount's own, so the match is found once, when the site is
    built, and put in the route as :class:`CapturingHandler` does for a request
    routed there.

    Args:
        inner: what answers the mount's requests.
        match: its pattern's match in the exact path.
    """

    def __init__(self, inner: Handler, match: Any) -> None:
        self.inner = inner
        self.match = match

    def handle(self, exchange: Exchange) -> None:
        """Hand ``exchange`` on with the captures of the exact path."""
        route = exchange.route
        if route is not None:
            exchange.route = CapturedRoute(route, self.match)
        self.inner.handle(exchange)
