"""Virtual hosts and path mounts: which handler answers a request.

Two steps, both pure and both here:

1. **Host.** The request's authority is normalised (:func:`normalize_host`: lower case,
   port and a trailing dot removed, IPv6 literals kept in brackets) and looked up in a
   :class:`HostTable`: exact names first, then the longest matching wildcard suffix
   (``*.example.org`` matches ``a.example.org`` and ``b.a.example.org``, as nginx's
   ``server_name`` does), then the default host. No match and no default is a 404, or
   421 (Misdirected Request, RFC 9110 15.5.20) on a TLS connection, since the client
   sent that name to a server that does not serve it.
2. **Path.** The decoded path has its dot-segments removed (RFC 3986 5.2.4); a path
   that climbs above the root is a 404 (it names nothing). The longest mount prefix wins, on segment
   boundaries: ``/static`` matches ``/static`` and ``/static/app.css``, never
   ``/staticfoo``; a run of slashes counts as one (``//static/x`` is under ``/static``).
   The prefix becomes ``SCRIPT_NAME`` and the rest ``PATH_INFO``. Exact mounts
   (``= /p``), ``^~`` prefixes and regular-expression mounts (``~``, ``~*``) take
   part in nginx's ``location`` order (see :class:`MountTable`); below a regular
   expression the whole path is the rest.

A host may answer some requests before any mount does (its ``guard``, such as the
redirect of plain HTTP to https in :mod:`twistwsgi.redirect`).

**The server's own errors** (no mount, a static mount's misses, the guards' refusals,
an application that crashed or timed out, an upstream that failed) all go out through
:func:`answer_error`: a short plain-text body, or the page the host configured for
that status (nginx's ``error_page``), with the status kept. The router puts the host's
pages in the :class:`Route` it gives the handler, so the handler and everything behind
it find them there; a request with no host (no match, no default) has none. Responses
an application or an upstream makes itself are not replaced, as nginx passes them
through unless ``proxy_intercept_errors`` or ``uwsgi_intercept_errors`` is on (a
proxy mount may turn the first on).

A mount may carry its own request-body limit; :meth:`Router.body_limit` makes the
same two steps for the protocol, which decides a 413 from the head, before the
request is routed.

A host or mount may have its own access log (nginx's ``access_log`` in a
``server`` or ``location``): the router sets ``Exchange.access_log`` to it, for the
guards' and the mounts' answers alike, and :meth:`Router.access_log_for` finds it for
a request the protocol refused after reading its host.

:class:`Router` is the handler that applies both and hands the exchange on; it
holds an immutable :class:`RoutingTable`, swapped whole on reload, so a request in
flight keeps the table it started with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from twistwsgi.client_certificates import refusal
from twistwsgi.http.compression import GzipSettings
from twistwsgi.http.request import UNREAD_BODY, ErrorPages, PartialRequest, RequestHead, Route
from twistwsgi.http.rules import (
    absolute_authority,
    claimed_names,
    ipv6_literal,
    normalize_name,
)

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange, Handler

__all__ = [
    "LOCATION_PATTERN_TIME_LIMIT",
    "ClientCertificateCheck",
    "HostGuard",
    "HostGuards",
    "HostTable",
    "LocationTimeoutError",
    "Mount",
    "MountTable",
    "PatternTimeoutError",
    "Route",
    "Router",
    "RoutingTable",
    "answer_error",
    "answer_plain",
    "match_prefix",
    "merge_slashes",
    "normalize_host",
    "normalize_name",
    "path_below",
    "refuse_path_above_root",
    "remove_dot_segments",
    "search_twice",
]

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


_HOST_CACHE: dict[bytes, str | None] = {}
_HOST_CACHE_LIMIT = 1024


def normalize_host(authority: bytes) -> str | None:
    """Normalise a request's authority to the name a host table is keyed by.

    ``Example.COM:8080`` and ``example.com.`` become ``example.com``;
    ``[0:0::1]:8443`` becomes ``[::1]``. Returns ``None`` for an empty or malformed
    authority, an IPv6 literal that is not an address or has a zone identifier
    (which then only the default host answers). Results are cached: a
    server sees the same few authorities over and over.
    """
    try:
        return _HOST_CACHE[authority]
    except KeyError:
        pass
    name = _normalize_host(authority)
    if len(_HOST_CACHE) < _HOST_CACHE_LIMIT:
        _HOST_CACHE[authority] = name
    return name


def _normalize_host(authority: bytes) -> str | None:
    if not authority:
        return None
    try:
        text = authority.decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest not in ("", ":") and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return ipv6_literal(text[: end + 1])
    host, sep, port = text.partition(":")
    # An empty port is no port (RFC 3986 3.2.3, 6.2.3): "example.com:" is example.com.
    if sep and port and not port.isdigit():
        return None
    if host.endswith("."):
        host = host[:-1]
    return host or None


#: The time the regular-expression host names of one table may take on a name,
#: in all: a sane pattern takes microseconds on a host name; one that backtracks
#: (``~^(a|aa)+$``) on a name a client made up would hold the server for minutes.
HOST_PATTERN_TIME_LIMIT = 0.01


class PatternTimeoutError(Exception):
    """A search of regular expressions (host names, locations, rewrite lines) ran out of time.

    Such a search is made once more, from the first pattern, with a fresh budget,
    before the request is refused for it. The limits are counted on the wall clock,
    the only clock the ``regex`` package stops on, so they also count what has
    nothing to do with the patterns: the reactor thread waiting for the GIL behind
    busy application threads (up to ``sys.getswitchinterval()``, 5 ms, for each
    thread ahead of it), a garbage collection, the machine running another process.
    A pattern that truly backtracks runs out again; such a pause rarely strikes the
    same request twice. What a bad pattern can be made to cost per request doubles.

    Attributes:
        culprit: the pattern the time ran out in, as written.
    """

    def __init__(self, culprit: str) -> None:
        super().__init__(culprit)
        self.culprit = culprit


def search_twice(search: Callable[[S], R], subject: S, /) -> R:
    """``search(subject)``, made once more if it runs out of time (:class:`PatternTimeoutError`).

    Raises:
        PatternTimeoutError: the second search ran out of time too.
    """
    try:
        return search(subject)
    except PatternTimeoutError:
        return search(subject)


#: The longest name a regular expression is tried on: no DNS name is longer
#: (RFC 1035 2.3.4, 255 octets with its length bytes); a longer one matches none.
LONGEST_HOST_NAME = 253

#: Names looked up through the regular expressions, remembered (the router asks a
#: table more than once per request); forgotten all at once past this many.
_PATTERN_MEMORY = 1024


class HostTable(Generic[T]):
    r"""Maps host names to values in nginx's ``server_name`` order, then a default.

    1. An exact name.
    2. The longest wildcard in front: ``*.example.org`` for any name ending in
       ``.example.org`` (``a.example.org``, ``b.a.example.org``).
    3. The longest wildcard at the end: ``mail.*`` for any name starting with
       ``mail.``.
    4. The first regular expression, in the order given, that the name matches: a
       name starting with ``~`` (``~^www\d*\.example\.org$``), searched in the
       normalised name (lower case, no port, no trailing dot).
    5. The default.

    ``.example.org`` is ``example.org`` and ``*.example.org`` together, as in nginx.

    Args:
        entries: ``(names, value)`` pairs; names are normalised here.
        default: the value for names nothing else matches, if any.
        compile_pattern: compiles a regular expression name (without its ``~``) to
            an object whose ``search(name, timeout=seconds)`` raises
            ``TimeoutError`` past the time (the ``regex`` package's ``compile``);
            needed only when a name is one.
        timed_out: called with the pattern and the name when the patterns took more
            than :data:`HOST_PATTERN_TIME_LIMIT` on a name twice in a row (see
            :class:`PatternTimeoutError`), which then matches none of them.
        clock: seconds, for that time limit.

    Raises:
        ValueError: when a name appears twice, or a pattern is given without
            ``compile_pattern``.
    """

    def __init__(
        self,
        entries: Iterable[tuple[Sequence[str], T]],
        default: T | None,
        *,
        compile_pattern: Callable[[str], Any] | None = None,
        timed_out: Callable[[str, str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exact: dict[str, T] = {}
        wildcards: list[tuple[str, T]] = []
        head_wildcards: list[tuple[str, T]] = []
        self._patterns: list[tuple[str, Any, T]] = []
        self._timed_out = timed_out
        self._clock = clock
        self._found: dict[str, T | None] = {}
        seen: set[str] = set()
        for names, value in entries:
            for raw in names:
                for name in claimed_names(raw):
                    if name in seen:
                        raise ValueError(f"host name {raw!r} is listed twice")
                    seen.add(name)
                    if name.startswith("~"):
                        if compile_pattern is None:
                            raise ValueError(f"host name {raw!r}: no regular expressions here")
                        self._patterns.append((name, compile_pattern(name[1:]), value))
                    elif name.startswith("*."):
                        wildcards.append((name[1:], value))  # ".example.org"
                    elif name.endswith(".*"):
                        head_wildcards.append((name[:-1], value))  # "mail."
                    else:
                        self._exact[name] = value
        # Longest first: the most specific wildcard wins.
        wildcards.sort(key=lambda item: len(item[0]), reverse=True)
        head_wildcards.sort(key=lambda item: len(item[0]), reverse=True)
        self._wildcards = wildcards
        self._head_wildcards = head_wildcards
        self.default = default
        if not (wildcards or head_wildcards or self._patterns):
            # Bound to the instance (as MountTable binds its search): a table of
            # exact names alone, the usual one, pays one dict look-up per request
            # rather than the walk of its empty wildcard lists.
            self.lookup = self._lookup_exact  # type: ignore[method-assign]

    def _lookup_exact(self, name: str | None) -> T | None:
        """:meth:`lookup` in a table without wildcards or patterns."""
        value = self._exact.get(name)  # type: ignore[arg-type]  # (None: no name, not found)
        return self.default if value is None else value

    def lookup(self, name: str | None) -> T | None:
        """Return the value for a normalised name (see :func:`normalize_host`)."""
        if name is not None:
            value = self._exact.get(name)
            if value is not None:
                return value
            for suffix, candidate in self._wildcards:
                if name.endswith(suffix) and len(name) > len(suffix):
                    return candidate
            for prefix, candidate in self._head_wildcards:
                # (A normalised name has no trailing dot: "mail." is never one.)
                if name.startswith(prefix):
                    return candidate
            if self._patterns:
                value = self._match(name)
                if value is not None:
                    return value
        return self.default

    def _match(self, name: str) -> T | None:
        """The value of the first regular expression ``name`` matches, if any.

        A name whose search ran out of time is not remembered: a pause of the
        process (a collection, a busy machine) must not leave a name on the default
        host until the memory is cleared.
        """
        if len(name) > LONGEST_HOST_NAME:
            return None
        found = self._found
        if name in found:
            return found[name]
        try:
            value = search_twice(self._first_match, name)
        except PatternTimeoutError as out:
            if self._timed_out is not None:
                self._timed_out(out.culprit, name)
            return None
        if len(found) >= _PATTERN_MEMORY:
            found.clear()
        found[name] = value
        return value

    def _first_match(self, name: str) -> T | None:
        """One search of the patterns in order, within :data:`HOST_PATTERN_TIME_LIMIT`.

        Raises:
            PatternTimeoutError: naming the pattern the time ran out in.
        """
        clock = self._clock
        deadline = clock() + HOST_PATTERN_TIME_LIMIT
        for pattern, compiled, candidate in self._patterns:
            remaining = deadline - clock()
            try:
                if remaining <= 0:
                    raise TimeoutError(pattern)
                match = compiled.search(name, timeout=remaining)
            except TimeoutError:
                raise PatternTimeoutError(pattern) from None
            if match is not None:
                return candidate
        return None


def remove_dot_segments(path: bytes) -> bytes | None:
    """Remove ``.`` and ``..`` segments from an absolute path (RFC 3986 5.2.4).

    Returns ``None`` when the path climbs above the root (``/../etc``), which a
    server should refuse rather than silently clamp. Empty segments (``//``) are
    kept: they can be meaningful to an application.
    """
    if not path.partition(b"/.")[1]:  # (cheaper than "in" or find: see protocol)
        return path  # no segment starts with a dot (most paths; "app.css" is fine)
    segments = path.split(b"/")
    output: list[bytes] = []
    for segment in segments[1:]:
        if segment == b".":
            continue
        if segment == b"..":
            if not output:
                return None
            output.pop()
            continue
        output.append(segment)
    # A trailing "." or ".." leaves a directory: keep its trailing slash.
    if segments[-1] in (b".", b".."):
        output.append(b"")
    return b"/" + b"/".join(output)


def merge_slashes(path: bytes) -> bytes:
    """``path`` with every run of slashes made one (``//a///b`` is ``/a/b``)."""
    while b"//" in path:
        path = path.replace(b"//", b"/")
    return path


def path_below(path: bytes, prefix: bytes) -> bytes:
    """What follows ``prefix`` in ``path`` when a run of slashes counts as one.

    ``prefix`` (no empty segments, ``b""`` for the root) must match
    ``merge_slashes(path)``. ``path_below(b"//api//x", b"/api")`` is ``b"//x"``: the
    slashes below the prefix are the application's to read.
    """
    if not path.partition(b"//")[1]:  # (cheaper than "in" or find: see protocol)
        return path[len(prefix) :]
    position = 0
    for segment in prefix.split(b"/")[1:]:
        while path[position : position + 1] == b"/":
            position += 1
        position += len(segment)
    return path[position:]


def match_prefix(path: bytes, prefix: bytes) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it, on a segment boundary.

    The root prefix ``/`` is stored as ``b""`` and matches everything.
    """
    if not prefix:
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == 0x2F)


@dataclass(frozen=True)
class Mount(Generic[T]):
    """A path prefix and what answers under it.

    Attributes:
        prefix: the decoded prefix without a trailing slash (``b""`` for ``/``).
        target: the handler (or any value) for requests under the prefix.
        max_body: the largest request body accepted under the prefix (0: no limit;
            :data:`~twistwsgi.http.request.UNREAD_BODY`: none, and the request is
            answered from its head), or ``None`` for the server's.
        headers: fields added to each response under the prefix that does not set
            them (see :class:`~twistwsgi.http.request.Route`).
        gzip: how responses under the prefix are compressed, if they are.
        access_log: the access log of requests under the prefix, if not the server's
            (the mount's own, or its host's).
        refusal_log: the access log of the requests the protocol refuses under the
            prefix (a body over the limit), if not the server's: ``access_log``, but
            for a static mount passing its misses on, the log of the mount they go
            to, whose body limit applies.
        limit_rate: the rate and the bytes first at full speed of each response
            under the prefix (``Exchange.limit_rate``), or ``None``.
        limit_rate_after: the bytes first at full speed, whether or not there is a
            rate (``Exchange.limit_rate_after``).
        match: how the mount is matched, as nginx's ``location`` modifier: ``""``
            (the longest prefix), ``"^~"`` (a prefix that, when longest, stops the
            regular expressions), ``"="`` (one path) or ``"~"`` (a regular
            expression; ``~*`` is one compiled without case).
        pattern: for ``"="``, the path (merged slashes, its trailing slash kept);
            for ``"~"``, the compiled expression (``search(path, timeout=seconds)``
            raising ``TimeoutError``, as the ``regex`` package's).
        label: the mount's path as written, where ``prefix`` does not name it (an
            exact or regular-expression mount): for the logs and metrics.
    """

    prefix: bytes
    target: T
    max_body: int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    gzip: GzipSettings | None = None
    access_log: Callable[[Any], None] | None = None
    refusal_log: Callable[[Any], None] | None = None
    limit_rate: tuple[int, int] | None = None
    limit_rate_after: int = 0
    match: str = ""
    pattern: Any = None
    label: bytes | None = None


#: Answers a request for its host before the mounts are looked at, and says whether
#: it did; given the exchange and the normalised host name (``None`` if none).
class HostGuard(Protocol):
    """What answers some of a host's requests before any mount.

    The https redirect, the refusal of a client whose TLS certificate did not
    verify.
    """

    def __call__(self, exchange: Exchange, name: str | None, /) -> bool:
        """Answer ``exchange`` if it is one of those; whether it was answered."""

    def answers(self, request: RequestHead, /) -> bool:
        """Whether ``request`` would be answered (asked before its body is read)."""


class HostGuards:
    """Several guards of one host, asked in order: the first that answers does."""

    def __init__(self, guards: Sequence[HostGuard]) -> None:
        self.guards = tuple(guards)

    def __call__(self, exchange: Exchange, name: str | None, /) -> bool:
        """Answer ``exchange`` by the first guard that takes it; whether one did."""
        return any(guard(exchange, name) for guard in self.guards)

    def answers(self, request: RequestHead, /) -> bool:
        """Whether one of the guards would answer ``request``."""
        return any(guard.answers(request) for guard in self.guards)


class ClientCertificateCheck:
    """A host's guard: 400 for a client ``tls_verify_client`` refuses (see :func:`refusal`).

    And 421 for a request on a connection that was asked for a certificate under
    other settings than the host's (its server name selected another host, or it
    was opened before a reload changed them), as nginx answers a Host that selects
    a server with ``ssl_verify_client`` other than the one the handshake named: the
    client may send it again on a new connection (RFC 9110 15.5.20), where it is
    asked as the host asks. The connection closes after either, as nginx's does:
    every request on it would be answered the same way, and a body behind the head
    is not read.

    Args:
        mode: ``on``, ``optional`` or ``optional_no_ca``.
        pages: the host's error pages (its pages for 400 and 421 are sent).
        profile: the host's verification profile
            (:func:`~twistwsgi.client_certificates.verification_profile`).
        tls_only: answer 403 to requests not over this server's TLS (a host that
            set its own verification: the listeners are every host's, and a plain
            one would serve it unchecked). Without, they pass, as nginx serves a
            plain listen of a server block with ssl_verify_client.
    """

    def __init__(
        self,
        mode: str,
        pages: ErrorPages | None = None,
        profile: str = "",
        *,
        tls_only: bool = False,
    ) -> None:
        self.mode = mode
        self.pages = pages or None
        self.profile = profile
        self.tls_only = tls_only

    def _answer(self, request: RequestHead) -> tuple[int, bytes] | None:
        certificate = request.client_certificate
        if certificate is None:
            # Not over this server's TLS: no certificate could be asked for.
            return (403, _TLS_ONLY) if self.tls_only else None
        if certificate.profile != self.profile:
            return 421, _OTHER_VERIFICATION
        body = refusal(self.mode, certificate)
        return None if body is None else (400, body)

    def answers(self, request: RequestHead) -> bool:
        """Whether ``request`` is refused (asked before its body is read)."""
        return self._answer(request) is not None

    def __call__(self, exchange: Exchange, name: str | None) -> bool:
        """Answer ``exchange`` with 400 or 421 if its client is refused; whether it was."""
        answer = self._answer(exchange.request)
        if answer is None:
            return False
        status, body = answer
        answer_error(exchange, status, body, _CLOSE, pages=self.pages)
        return True


_TLS_ONLY = b"Forbidden: this site is served over https, to clients with a certificate\n"
_OTHER_VERIFICATION = (
    b"Misdirected Request: this connection's client certificate was asked for another"
    b" site's settings; send the request on a new connection\n"
)
_CLOSE = ((b"Connection", b"close"),)


class MountTable(Generic[T]):
    """The mounts of one host, in the order of nginx's ``location`` search.

    1. An exact mount (``= /p``) whose path is the request's wins at once.
    2. The mount with the longest prefix that contains the path is remembered; if
       it is a ``^~`` one, it wins.
    3. The regular-expression mounts are tried in the order given; the first whose
       pattern is found in the path wins.
    4. Else the remembered prefix mount, if any.

    When the regular expressions run out of time (:data:`LOCATION_PATTERN_TIME_LIMIT`)
    twice in a row (see :class:`PatternTimeoutError`) the lookup raises
    :class:`LocationTimeoutError` rather than fall back to a prefix.

    A table without exact or regular-expression mounts only does the longest
    prefix, at the same cost as before they existed.

    Args:
        mounts: the mounts, in the order the configuration gives them (that of
            the regular expressions counts).
        guard: what answers some requests for the host first, if anything.
        error_pages: the host's pages for the server's own errors, by status.
        access_log: the host's access log, if not the server's (for what its guard
            and the missing mounts answer).
        name: the host's first configured name (``Route.host``), if it has names.
        timed_out: called with the label of the pattern and the path when the
            regular expressions took more than :data:`LOCATION_PATTERN_TIME_LIMIT`
            on one lookup, which then raises :class:`LocationTimeoutError` (no mount is
            chosen: the router answers 500).
        clock: seconds, for that time limit.
        rewrite: the request the mounts see in place of one the guard let through
            (the host's ``rewrite`` lines inside the server,
            :meth:`~twistwsgi.rewrite.Rewrites.rewritten`), if the host has such
            lines; asked only when there is a guard, which such a host has.

    Raises:
        ValueError: when two mounts have the same prefix, exact path or pattern.
    """

    def __init__(
        self,
        mounts: Iterable[Mount[T]],
        guard: HostGuard | None = None,
        error_pages: ErrorPages | None = None,
        access_log: Callable[[Any], None] | None = None,
        name: str | None = None,
        *,
        timed_out: Callable[[str, bytes], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rewrite: Callable[[RequestHead], RequestHead] | None = None,
    ) -> None:
        self.guard = guard
        self.rewrite = rewrite
        self.name = name
        self.access_log = access_log
        # None rather than empty: the routes of a host without pages carry None.
        self.error_pages = error_pages or None
        self._timed_out = timed_out
        self._clock = clock
        given = list(mounts)
        ordered = sorted(
            (mount for mount in given if mount.match in ("", "^~")),
            key=lambda mount: len(mount.prefix),
            reverse=True,
        )
        seen: set[bytes] = set()
        for mount in ordered:
            if mount.prefix in seen:
                shown = mount.prefix.decode("utf-8", "replace") or "/"
                raise ValueError(f"two mounts at {shown!r}")
            seen.add(mount.prefix)
        self.mounts: tuple[Mount[T], ...] = tuple(ordered)
        self._exact: dict[bytes, Mount[T]] = {}
        self._patterns: list[Mount[T]] = []
        # The last path the patterns were searched in, and what they found: the
        # protocol (the body limit) and the router ask about one request in turn,
        # and a search that can be stopped costs microseconds per pattern.
        # A search that ran out of time is kept as _TIMED_OUT with the pattern's
        # label, for the router's lookup after the body limit's (see _search). The
        # match is kept for the mount's captures (see last_match).
        self._searched: tuple[bytes, Mount[T] | None, str, Any] | None = None
        written: set[tuple[str, object]] = set()
        for mount in given:
            if mount.match == "=":
                if mount.pattern in self._exact:
                    raise ValueError(f"two mounts at {_shown(mount)!r}")
                self._exact[mount.pattern] = mount
            elif mount.match == "~":
                key = (mount.pattern.pattern, mount.pattern.flags)
                if key in written:
                    raise ValueError(f"two mounts at {_shown(mount)!r}")
                written.add(key)
                self._patterns.append(mount)
        if self._exact or self._patterns:
            # Bound to the instance, so a table of prefixes alone pays nothing per
            # request for the search it does not need.
            self.lookup = self._search  # type: ignore[method-assign]

    def lookup(self, path: bytes) -> Mount[T] | None:
        """Return the mount with the longest prefix that contains ``path``.

        A run of slashes counts as one (``//static/x`` is under ``/static``), as with
        nginx's ``merge_slashes``: otherwise an extra slash would step around a mount
        (a refusing mount in front of a proxied ``/``). :func:`path_below` gives the
        rest of the path with its slashes as sent.
        """
        if path.partition(b"//")[1]:  # (cheaper than "in" or find: see protocol)
            path = merge_slashes(path)
        for mount in self.mounts:
            # (match_prefix, inline: once per mount tried, on every request.)
            prefix = mount.prefix
            if not prefix or (
                path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == 0x2F)
            ):
                return mount
        return None

    def _search(self, path: bytes) -> Mount[T] | None:
        """:meth:`lookup` in a table with exact or regular-expression mounts.

        Both see the path as the prefixes do, its runs of slashes merged (nginx
        matches the normalised URI); a regular-expression mount's rest is then the
        whole path as sent.

        Raises:
            LocationTimeoutError: the regular expressions ran out of time on the path.
        """
        if path.partition(b"//")[1]:  # (cheaper than "in" or find: see protocol)
            path = merge_slashes(path)
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        longest = None
        for mount in self.mounts:
            if match_prefix(path, mount.prefix):
                longest = mount
                break
        if longest is not None and longest.match == "^~":
            return longest
        if self._patterns and path:  # (OPTIONS * names no path: only the root mount)
            searched = self._searched
            if searched is not None and searched[0] == path:
                found = searched[1]
                if found is _TIMED_OUT:
                    # Told once, to the lookup after the one that timed out (the
                    # router's, after the body limit's): a later request for the path
                    # is searched again, as a pause of the process may have caused it.
                    self._searched = None
                    raise LocationTimeoutError(searched[2])
            else:
                found = self._first_pattern(path)
            if found is not None:
                return found
        return longest

    def forget(self) -> None:
        """Drop what the last search found (after the last lookup of a request)."""
        self._searched = None

    def last_match(self, target: T) -> Any:
        """The match by which the last lookup chose the pattern mount of ``target``.

        For the captures of a regular-expression mount (:mod:`twistwsgi.captures`),
        asked by its handler right after the router's lookup chose it: the pattern
        is not searched again, and its time limit was kept by that search. ``None``
        when the last search chose no mount of ``target``.
        """
        searched = self._searched
        if searched is None:
            return None
        mount = searched[1]
        if mount is None or mount is _TIMED_OUT or mount.target is not target:
            return None
        return searched[3]

    def _first_pattern(self, path: bytes) -> Mount[T] | None:
        r"""The first regular-expression mount found in ``path``, within the time limit.

        Past the limit no mount is chosen: the lookup fails, as nginx answers 500
        when PCRE fails with an error other than no match. Falling back to the
        prefix would let a client step around a mount meant to refuse paths (``~
        /\.git`` with ``return = "403"``) by making its pattern slow. The log says
        which pattern it was: one that backtracks (``(a|aa)+$``) on a path the
        client made up would otherwise hold the server.

        Raises:
            LocationTimeoutError: the time ran out.
        """
        try:
            found, match = search_twice(self._pattern_search, path)
        except PatternTimeoutError as out:
            if self._timed_out is not None:
                self._timed_out(out.culprit, path)
            self._searched = (path, _TIMED_OUT, out.culprit, None)
            raise LocationTimeoutError(out.culprit) from None
        self._searched = (path, found, "", match)
        return found

    def _pattern_search(self, path: bytes) -> tuple[Mount[T] | None, Any]:
        """One search of the patterns in order, within :data:`LOCATION_PATTERN_TIME_LIMIT`.

        Returns the first mount whose pattern is found in ``path`` and its match
        (for the mount's captures), or ``(None, None)``.

        Raises:
            PatternTimeoutError: naming the mount the time ran out in.
        """
        clock = self._clock
        deadline = clock() + LOCATION_PATTERN_TIME_LIMIT
        previous = None
        for mount in self._patterns:
            remaining = deadline - clock()
            try:
                if remaining <= 0:
                    # The one before took the time (and found nothing): named.
                    raise TimeoutError
                match = mount.pattern.search(path, timeout=remaining)
                if match is not None:
                    return mount, match
            except TimeoutError:
                culprit = previous if remaining <= 0 and previous is not None else mount
                raise PatternTimeoutError(_shown(culprit)) from None
            previous = mount
        return None, None


class LocationTimeoutError(Exception):
    """The regular-expression mounts of a host ran out of time on a request's path.

    No mount is chosen for it: the router answers 500 (see :class:`MountTable`).

    Attributes:
        pattern: the mount path as written whose pattern took the time.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self.pattern = pattern


#: What the last search of a table found when it ran out of time.
_TIMED_OUT: Any = object()


#: The time the regular-expression mounts of one host may take on a path, in all,
#: per lookup: a sane pattern takes microseconds on a path; one that backtracks
#: would hold the server for as long as the client's path makes it.
LOCATION_PATTERN_TIME_LIMIT = 0.01


def _shown(mount: Mount[Any]) -> str:
    """A mount's path as written, for messages."""
    if mount.label is not None:
        return mount.label.decode("utf-8", "replace")
    if mount.match == "=":
        written: bytes = mount.pattern
        return "= " + written.decode("utf-8", "replace")
    if mount.match == "~":
        source: bytes = mount.pattern.pattern
        return "~ " + source.decode("utf-8", "replace")
    return mount.prefix.decode("utf-8", "replace") or "/"


@dataclass(frozen=True)
class RoutingTable:
    """Hosts and their mounts: the whole routing decision, immutable.

    Attributes:
        hosts: host name to the mounts of that host.
        handlers: every handler of the table (closed when it is replaced).
        body_limits: whether any mount has its own body limit (else the protocol
            need not route a request early to find it).
        guarded: whether any host has a guard (which may answer before a body
            limit would refuse).
        access_logs: whether any host or mount has its own access log (else the
            router need not say where each line goes).
        proxied: the proxy mounts' handlers, each with its host's first name
            (``None``: none) and its prefix (an exact or regular-expression mount:
            its path as written, ``Mount.label``), for the metrics of their upstreams.
        paced: whether any mount has a limit_rate (else the router need not set
            one on each exchange).
    """

    hosts: HostTable[MountTable[Handler]]
    handlers: tuple[Handler, ...] = ()
    body_limits: bool = False
    guarded: bool = False
    access_logs: bool = False
    proxied: tuple[tuple[str | None, bytes, Handler], ...] = ()
    paced: bool = False


_NOT_FOUND = b"Not Found\n"
_INTERNAL_ERROR = b"Internal Server Error\n"
_MISDIRECTED = b"Misdirected Request: this server does not serve that host name\n"
_PLAIN_TEXT = b"text/plain; charset=utf-8"


def answer_plain(
    exchange: Exchange, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a short plain-text body that no error page replaces (redirects)."""
    _answer(exchange, status, _PLAIN_TEXT, body, extra)


def answer_error(
    exchange: Exchange,
    status: int,
    body: bytes,
    extra: Sequence[tuple[bytes, bytes]] = (),
    pages: ErrorPages | None = None,
) -> None:
    """Answer with an error the server itself decided on (4xx, 5xx), not yet started.

    ``body`` is the short plain-text explanation; when the host has a page for
    ``status`` (nginx's ``error_page``), the page and its ``Content-Type`` are sent
    instead. The status stays the error's, as with nginx's ``error_page 404
    /404.html`` (no ``=code``): a client, a crawler and a monitor still see what
    happened. The ``extra`` fields (``WWW-Authenticate``, ``Retry-After``, ``Allow``,
    ``Content-Range``) go out either way: they belong to the status (RFC 9110 11.6.1,
    10.2.3, 10.2.1, 14.4), not to the body.

    Args:
        exchange: the request to answer.
        status: the status code.
        body: the plain-text body.
        extra: more header fields (never ``Content-Type`` or ``Content-Length``).
        pages: the host's pages, for an answer made before the route is set (the
            router's own); by default the route's.
    """
    if pages is None:
        route = exchange.route
        if route is not None:
            pages = route.error_pages
    page = None if pages is None else pages.get(status)
    if page is None:
        _answer(exchange, status, _PLAIN_TEXT, body, extra)
    else:
        _answer(exchange, status, page.content_type, page.body, extra)


def _answer(
    exchange: Exchange,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: Sequence[tuple[bytes, bytes]],
) -> None:
    exchange.start_response(
        status,
        [(b"Content-Type", content_type), (b"Content-Length", b"%d" % len(body)), *extra],
    )
    # RFC 9110 9.3.2: the answer to HEAD has the fields of the GET's, no body.
    exchange.finish(b"" if exchange.request.method == b"HEAD" else body)


def error_body(status: int) -> bytes:
    """The short plain-text body of a status the server answers itself.

    Its reason phrase (RFC 9110 15), or its code for a status without one.
    """
    try:
        return HTTPStatus(status).phrase.encode("ascii") + b"\n"
    except ValueError:
        return b"%d\n" % status


def refuse_path_above_root(exchange: Exchange, pages: ErrorPages | None = None) -> None:
    """Answer a request whose path climbs above the root (``/../x``): 404.

    There is no such resource, and a traversal attempt learns nothing from the
    answer: it is the same 404 as for a name that does not exist (nginx answers
    400 here; the static-files requirement is a plain 404 for every escape), the
    host's page included. ``pages``: as for :func:`answer_error`.
    """
    answer_error(exchange, 404, _NOT_FOUND, pages=pages)


class Router:
    """The handler that picks the host, then the mount, and hands the exchange on.

    Reactor thread only. :meth:`replace` swaps the table (on reload); exchanges
    already routed keep their handlers.
    """

    def __init__(self, table: RoutingTable) -> None:
        self.table = table

    def replace(self, table: RoutingTable) -> None:
        """Route new requests with ``table``."""
        self.table = table

    def body_limit(self, request: RequestHead) -> int | None:
        """The body limit of the mount ``request`` will be routed to.

        ``None`` when that mount has none of its own (or there is no such mount):
        the server's applies. :data:`~twistwsgi.http.request.UNREAD_BODY` when the
        request is answered without its body (a host guard's answer, a return
        mount, the 500 of a lookup whose regular expressions ran out of time): the
        protocol hands it over from its head.
        """
        table = self.table
        if not (table.body_limits or table.guarded):
            return None
        mounts = table.hosts.lookup(normalize_host(request.authority))
        if mounts is None:
            return None
        guard = mounts.guard
        if guard is not None:
            if guard.answers(request):
                # Answered before any mount, its body unread: no limit refuses it first.
                return UNREAD_BODY
            rewrite = mounts.rewrite
            if rewrite is not None:
                # The mount of the rewritten path is the one whose limit applies, as
                # nginx's server rewrites run before the location (and its
                # client_max_body_size) is chosen.
                request = rewrite(request)
        path = remove_dot_segments(request.decoded_path)
        if not table.body_limits or path is None:
            return None
        try:
            mount = mounts.lookup(path)
        except LocationTimeoutError:
            # No mount's limit: the router answers 500 from the head, as nginx
            # does before client_max_body_size when its location search fails.
            return UNREAD_BODY
        return None if mount is None else mount.max_body

    def error_pages_for(self, request: RequestHead | PartialRequest) -> ErrorPages | None:
        """The error pages of the host ``request`` is for (the protocol's refusals).

        A head that could not be read whole (400, 414, 431, 501, 505) is for the
        host its ``Host`` field names if that was read, else for the default host,
        as nginx answers such a request with the error_page of the server it had
        found so far (the listener's default one before its Host).
        """
        mounts = self._host_of(request)
        return None if mounts is None else mounts.error_pages

    def _host_of(self, request: RequestHead | PartialRequest) -> MountTable[Handler] | None:
        """The host of a request the protocol refused (see :meth:`error_pages_for`)."""
        if isinstance(request, RequestHead):
            authority = request.authority
        else:
            # The absolute form names the host, as it would over the Host field.
            authority = absolute_authority(request.target) or next(
                (value for name, value in request.headers if name.lower() == b"host"), b""
            )
        return self.table.hosts.lookup(normalize_host(authority.strip()))

    def access_log_for(self, request: RequestHead | PartialRequest) -> Callable[[Any], None] | None:
        """The access log of a request the protocol refused, if not the server's.

        That of the mount a whole head is for, else of the host it names, found as
        :meth:`error_pages_for` finds the host (nginx logs a refusal in the
        ``server`` block that answered it).
        """
        if isinstance(request, PartialRequest) and not (
            absolute_authority(request.target)
            or any(name.lower() == b"host" for name, _ in request.headers)
        ):
            return None  # refused before it named a host: no host's log is its
        mounts = self._host_of(request)
        if mounts is None:
            return None
        if isinstance(request, RequestHead):
            if mounts.rewrite is not None:
                request = mounts.rewrite(request)  # (its mount decided the refusal)
            path = remove_dot_segments(request.decoded_path)
            try:
                mount = mounts.lookup(path) if path is not None else None
            except LocationTimeoutError:
                mount = None
                mounts.forget()
            if mount is not None:
                return mount.refusal_log
        return mounts.access_log

    def handle(self, exchange: Exchange) -> None:
        """Route ``exchange`` to the handler of its host and path."""
        table = self.table
        request = exchange.request
        authority = request.authority
        try:
            name = _HOST_CACHE[authority]  # (normalize_host's cache, inline)
        except KeyError:
            name = normalize_host(authority)
        mounts = table.hosts.lookup(name)
        if mounts is None:
            # No host, so no host's pages: always the plain answer.
            if request.scheme == "https":
                answer_error(exchange, 421, _MISDIRECTED)
            else:
                answer_error(exchange, 404, _NOT_FOUND)
            return
        logs = table.access_logs
        if logs:
            exchange.access_log = mounts.access_log
        guard = mounts.guard
        if guard is not None:
            if guard(exchange, name):
                return
            rewrite = mounts.rewrite
            if rewrite is not None:
                # After the https redirect, the certificate check and the lines'
                # redirects (the guard): what the mount and everything after it
                # read is the rewritten request (nginx's $uri, $args).
                request = exchange.request = rewrite(request)
        path = request.decoded_path
        # (remove_dot_segments's first test, inline: most paths have no dot segment.)
        if path.partition(b"/.")[1]:
            without_dots = remove_dot_segments(path)
            if without_dots is None:
                refuse_path_above_root(exchange, mounts.error_pages)
                return
            path = without_dots
        try:
            mount = mounts.lookup(path)
        except LocationTimeoutError:
            # Fail closed (the table logged which pattern): routing on to a prefix
            # would step around a pattern mount that refuses the path.
            mounts.forget()
            answer_error(exchange, 500, _INTERNAL_ERROR, pages=mounts.error_pages)
            return
        if mount is None:
            answer_error(exchange, 404, _NOT_FOUND, pages=mounts.error_pages)
            return
        prefix = mount.prefix
        # (path_below's usual case, inline: no run of slashes in the path.)
        rest = path_below(path, prefix) if path.partition(b"//")[1] else path[len(prefix) :]
        if logs:
            exchange.access_log = mount.access_log
        if table.paced:
            exchange.limit_rate = mount.limit_rate
            exchange.limit_rate_after = mount.limit_rate_after
        exchange.route = Route(
            prefix,
            rest,
            mounts.name,
            mount.headers,
            mount.gzip,
            mounts.error_pages,
            mount.label,
        )
        mount.target.handle(exchange)
