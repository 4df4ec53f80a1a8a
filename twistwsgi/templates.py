r"""The one reader of nginx-style templates: ``$1``, ``${1}``, ``$name``, ``${name}`` (pure).

Every setting that takes ``$`` references is read here, so one spelling means one
thing everywhere: a log format, a ``proxy_set_header`` value, a ``return`` URL or
text, a regular-expression mount's ``static`` directory and ``proxy`` URL, and a
host's ``rewrite`` replacement. The syntax is nginx's
(``ngx_http_script_compile``; `Regular expression captures
<https://nginx.org/en/docs/regex_captures.html>`_):

- ``$1`` to ``$9`` are captures, one digit each: ``$12`` is ``$1`` then a ``2``.
- ``$name`` is a name made of ASCII letters, digits and ``_``; it ends at the first other
  character, so ``$uri.html`` is ``$uri`` then ``.html``.
- Braces set a reference apart from the text after it: ``${1}0`` is ``$1`` then a
  ``0``, ``${uri}x`` is ``$uri`` then an ``x``. ``${1}`` is ``$1``, ``${host}`` is
  ``$host``.
- A ``$`` followed by neither a name nor a ``{`` is itself (``/a$``, ``$-``).

Two spellings go past nginx's, which refuses them, so no file written for nginx
holds them: ``${1}`` (nginx: an unknown variable ``1``) and a lone ``$`` (nginx:
"invalid variable name"). :func:`starts_with_scheme` takes ``${scheme}`` too, where
nginx compares the literal ``$scheme``.

What a reference may name is the setting's own rule, not the reader's: captures
(:class:`Groups`: which numbers and names a pattern has) where a pattern chose the
request, and which request variables (:mod:`twistwsgi.log_format`) where variables
are taken. So are how a value is encoded where it lands and the refusals that go with
a place: a number the pattern lacks, a capture where no pattern is.
:func:`split_captures` gives a setting its captures and leaves the rest (text and
variables) to the variable reader. ``$0`` and ``${10}`` name no capture (nginx reads
one digit); they are refused wherever they stand, with the same words.

Reading is done once, when the configuration is loaded: what renders a request
holds the pieces, never the text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Groups",
    "Piece",
    "Reference",
    "cut_at",
    "is_name",
    "read_template",
    "references",
    "split_captures",
    "starts_with_scheme",
]

# $1 to $9 (one digit); ${...}, its closing brace optional so that a brace left open
# is found and said; $name (letters, digits, _).
_REFERENCE = re.compile(r"\$(?:([1-9])|\{([A-Za-z0-9_]*)(\}?)|([A-Za-z0-9_]+))")


@dataclass(frozen=True, slots=True)
class Reference:
    """A ``$`` reference in a template.

    Attributes:
        key: a capture's number (1 to 9), or the name written (a group's or a
            variable's; digits alone, as ``$0`` or ``${10}``, name neither).
        spelled: as written (``$1``, ``${host}``), for messages.
        start: where it starts in the template.
        end: where it ends in the template.
    """

    key: int | str
    spelled: str
    start: int
    end: int


@functools.lru_cache(maxsize=1024)
def read_template(text: str, *, strict: bool = True) -> tuple[str | Reference, ...]:
    """``text`` cut into its own text (``str``) and its references, in order.

    Args:
        text: the template as written.
        strict: refuse a ``${`` that is not closed; else (for text that may be a
            plain name, as a prefix mount's directory) it stays text.

    Raises:
        ValueError: a ``${`` not closed by a name and ``}`` (``strict``).
    """
    tokens: list[str | Reference] = []
    start = 0
    for found in _REFERENCE.finditer(text):
        digit, braced, closed, word = found.groups()
        if braced is not None and (not closed or not braced):
            if strict:
                # nginx: "invalid variable name", "the closing bracket ... is missing".
                raise ValueError(
                    f"a variable opened with ${{ is not closed: {text!r} (a name of ASCII"
                    " letters, digits and _, then })"
                )
            continue
        name = digit or braced or word
        key: int | str = int(name) if len(name) == 1 and name in "123456789" else name
        if found.start() > start:
            tokens.append(text[start : found.start()])
        tokens.append(Reference(key, found.group(0), found.start(), found.end()))
        start = found.end()
    if start < len(text):
        tokens.append(text[start:])
    return tuple(tokens)


def references(text: str) -> list[Reference]:
    """The references of ``text``, in order (a ``${`` left open is text here)."""
    return [token for token in read_template(text, strict=False) if isinstance(token, Reference)]


def cut_at(text: str, variable: str) -> list[str]:
    """``text`` cut where it refers to ``variable``: the parts around its references.

    A variable's name is read without case, as nginx reads it: ``$uri``, ``${uri}``
    and ``$URI`` are one variable. ``$uri_x`` is another.
    """
    parts = []
    start = 0
    for found in references(text):
        if str(found.key).lower() == variable:
            parts.append(text[start : found.start])
            start = found.end
    parts.append(text[start:])
    return parts


def starts_with_scheme(text: str) -> bool:
    """Whether ``text`` starts with ``$scheme`` or ``${scheme}``, as an absolute URL may.

    nginx's ``rewrite`` and ``return`` take a replacement that starts so for a URL
    to redirect to, as one that starts with ``http://`` or ``https://``.
    """
    if not text.startswith("$"):
        return False
    tokens = read_template(text, strict=False)
    first = tokens[0] if tokens else None
    return isinstance(first, Reference) and first.key == "scheme"


@dataclass(frozen=True)
class Groups:
    """The groups of a pattern: how many, the names of the named ones, how it is said.

    Attributes:
        count: the number of groups (``$1`` to ``$count`` exist).
        names: the names of the named groups.
        shown: the pattern in messages (a mount's, or a rewrite line's as written).
    """

    count: int
    names: frozenset[str]
    shown: str = "the mount's pattern"

    @classmethod
    def of(cls, compiled: Any, *, shown: str = "the mount's pattern") -> Groups:
        """The groups of a compiled pattern (``regex`` or ``re``)."""
        return cls(compiled.groups, frozenset(compiled.groupindex), shown)


class _Name(str):
    """A named group's name among the pieces (a plain ``str`` is text)."""

    __slots__ = ()


#: A piece of a template cut at its captures: text (with variables), a group's number,
#: or a named group's name (a ``str`` too, told apart by :func:`is_name`).
Piece = str | int


def is_name(piece: Piece) -> bool:
    """Whether a piece of :func:`split_captures` is a named group's name."""
    return isinstance(piece, _Name)


def split_captures(text: str, groups: Groups | None, *, whole: str | None = None) -> list[Piece]:
    """``text`` in pieces: its own text (``str``, variables left in it) and captures.

    A capture is a group's number (``int``) or a named group's name (``str`` too,
    told apart by :func:`is_name`); a name no group has is a variable, left in the
    text for the variable reader. The text pieces are cut at references, so reading
    one again gives the same references.

    Args:
        text: the setting as written.
        groups: the pattern's groups, or ``None`` for a setting without a pattern
            (a prefix or exact mount).
        whole: the setting ``text`` is a part of, named in messages (else ``text``).

    Raises:
        ValueError: for a capture the setting has not (any, without a pattern; a
            number past the pattern's groups), a number that is no capture (``$0``,
            ``${10}``), a ``${`` not closed.
    """
    names = groups.names if groups is not None else frozenset()
    shown = text if whole is None else whole
    pieces: list[Any] = []
    run = ""
    for token in read_template(text):
        if isinstance(token, str):
            run += token
            continue
        key = token.key
        if isinstance(key, str) and key.isdigit():
            raise ValueError(
                f"{shown!r}: {token.spelled} is no group: nginx numbers captures $1 to $9,"
                " one digit each ($10 is $1 then a 0); name a later group to use it"
                " ((?<name>...), then $name)"
            )
        if isinstance(key, int):
            if groups is None:
                raise ValueError(
                    f"{shown!r} uses ${key}: captures are for regular-expression mounts"
                    " (path = '~ REGEX' or '~* REGEX')"
                )
            if key > groups.count:
                raise ValueError(
                    f"{shown!r} uses ${key}, but {groups.shown} has {groups.count} group(s)"
                )
            piece: Any = key
        elif key in names:
            piece = _Name(key)
        else:
            run += token.spelled  # a variable: the variable reader's
            continue
        if run:
            pieces.append(run)
            run = ""
        pieces.append(piece)
    if run:
        pieces.append(run)
    return pieces
