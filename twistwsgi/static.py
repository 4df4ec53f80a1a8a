"""Static files, served from the reactor at nginx grade.

:class:`StaticHandler` answers GET and HEAD for the files under one directory:

- **Paths.** The router has already removed dot-segments. Here, any request whose raw
  path holds an encoded slash or backslash (``%2f``, ``%5c``) or a backslash is a miss,
  so is any name starting with a dot (unless ``dotfiles``; ``/.well-known/`` is always
  served), anything that is not a regular file or directory, and anything a symbolic
  link takes outside the directory (or any link at all, with ``symlinks = "never"``):
  checked on the path, and again on the file (or directory) once open, where the
  kernel says it is, so a link changed in between cannot lead out. Misses are 404,
  or go to the mount below with ``fallthrough``.
- **Validators and conditions** (RFC 9110 8.8, 13): a strong ``ETag`` from the inode,
  size and change time, ``Last-Modified``; 304 and 412 by the precedence of
  13.2.2 (:mod:`twistwsgi.files`).
- **Ranges** (RFC 9110 14): single ranges as 206 with ``Content-Range``, several as
  ``multipart/byteranges``, ``If-Range``, 416 with ``Content-Range: bytes */N``.
- **Precompressed siblings**: ``file.br`` or ``file.gz`` when the client accepts it,
  with ``Content-Encoding`` and ``Vary: Accept-Encoding``.
- **gzip on the fly** (the mount's or the server's ``gzip``): a file of a compressed
  type with no ``.gz`` sibling is compressed once, when a client accepting gzip first
  asks for it, and the result kept in memory with the small files; it is a
  representation of its own, with its length, a strong ``ETag`` and ranges, unlike
  nginx's gzip filter, which compresses every response again and drops both.
- **Directories**: a missing trailing slash is a 301 redirect; index files; an HTML
  listing only when enabled, otherwise 403.
- **Other names** (``try_files``): the names tried in order for a request, with
  ``$uri`` the path below the mount (a single-page application's ``/index.html``
  for every route, ``$uri.html`` for clean URLs), looked up under the same rules.
- **Sending**: files up to ``memory_cache`` bytes are kept in memory and go out with
  the head in one write (checked against the file system by a ``stat`` on every
  request, so a changed file is never served stale); larger ones go out with
  ``os.sendfile`` on TCP and UNIX sockets, in pieces on TLS, without a thread and
  without reading them into memory.

Its errors (404, 403, 405, ...) go out through
:func:`~twistwsgi.routing.answer_error`: a host's error page replaces their short
plain-text bodies.

The same machinery serves ``X-Accel-Redirect``/``X-Sendfile`` answers of an application
(:meth:`StaticHandler.serve`), with the application's own headers kept except those
that describe the file.

Everything here runs in the reactor thread; its disk access (``stat``, ``open``)
blocks the reactor briefly, as it does in nginx without ``aio``.
"""

from __future__ import annotations

import errno
import functools
import html
import os
import re
import stat
import time
import urllib.parse
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistwsgi import files
from twistwsgi.fixed_response import CLOSE_WITHOUT_RESPONSE
from twistwsgi.http.compression import GzipSettings, accepts_gzip
from twistwsgi.http.exchange import Exchange, Handler
from twistwsgi.http.request import CapturedRoute, PreparedHeaders, RequestHead, Route
from twistwsgi.http.sendfile import CLIENT_GONE, FileTruncatedError, finish_paced
from twistwsgi.http.wire import http_date
from twistwsgi.routing import Mount, answer_error, answer_plain, error_body
from twistwsgi.templates import cut_at

if TYPE_CHECKING:
    from twistwsgi.captures import FileTemplate

__all__ = ["CapturedStaticHandler", "StaticHandler", "StaticOptions"]

_log = Logger(namespace="twistwsgi.static")

#: Most bytes one mount keeps in memory for its cached small files.
CACHE_BUDGET = 32 * 1024 * 1024
#: Most request paths whose file-system path one mount remembers.
PATH_CACHE_SIZE = 8192
#: Most files too large for memory whose checked facts (head, symlink policy) one
#: mount remembers; like nginx's open_file_cache, minus the open descriptor.
KNOWN_FILES_SIZE = 4096
#: Seconds a file found without a ``.br`` or ``.gz`` sibling is believed to have
#: none (while the file itself is unchanged): a sibling added later is served
#: within this time. (nginx's gzip_static asks the disk each time unless its
#: open_file_cache is on, whose open_file_cache_valid is 60 s.)
SIBLING_RECHECK = 1.0
#: The largest file compressed on the fly, by gzip level: it is read whole and
#: compressed in the reactor thread, which holds every other client meanwhile
#: (measured: about 11 ms a MiB of source text at level 1, 35 at 6, 120 at 9), so
#: the stall stays under about 50 ms. Larger ones are sent as they are: precompress
#: them.
GZIP_FILE_LIMITS = {
    **dict.fromkeys((1, 2, 3), 4 * 1024 * 1024),
    **dict.fromkeys((4, 5, 6), 1024 * 1024),
    **dict.fromkeys((7, 8, 9), 512 * 1024),
}
#: What tells the gzip forms of different zlib builds apart in their ETag: zlib-ng
#: (Fedora, RHEL 10) compresses to other bytes than zlib at the same level, and one
#: strong tag may not stand for two byte sequences (RFC 9110 8.8.3).
_ZLIB_TAG = re.sub(r"[^0-9A-Za-z.]", ".", zlib.ZLIB_RUNTIME_VERSION)
# The memory cache's key of a file's gzip form: NUL ends no file-system path.
_GZIP_KEY = b"\0gzip"
_Value = TypeVar("_Value")
# Linux names the file behind each descriptor here (what the link policy checks once
# a file is open).
_PROC_FDS = os.path.isdir("/proc/self/fd")
# Opening a path with O_PATH (Linux) reads nothing, waits for nothing (a FIFO) and
# needs no read permission: a stat of the descriptor and its /proc name are then
# one look at one file, where a stat and a check of the path are two.
_O_PATH: int = getattr(os, "O_PATH", 0)
_LOOK_BY_DESCRIPTOR = _PROC_FDS and _O_PATH != 0
# The failures of following a path that a look-up has just followed, when a link on
# it was swapped since: they tell of where it leads now, not of the file looked up.
_LED_ELSEWHERE = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENAMETOOLONG}
)

_WANTED = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
        b"accept-encoding",
    }
)
_ENCODINGS = (("br", b".br"), ("gzip", b".gz"))
# What a 304 repeats of the 200 it stands for (RFC 9110 15.4.5; Date is the server's).
_KEPT_ON_304 = frozenset(
    {b"etag", b"last-modified", b"cache-control", b"vary", b"expires", b"content-location"}
)
_WELL_KNOWN = b".well-known"
# Headers of an application's X-Accel-Redirect answer that describe its own (empty)
# body rather than the file, and the redirect headers themselves.
_REPLACED_BY_FILE = frozenset(
    {
        b"content-length",
        b"content-range",
        b"content-encoding",
        b"transfer-encoding",
        b"etag",
        b"last-modified",
        b"accept-ranges",
        b"x-accel-redirect",
        b"x-sendfile",
    }
)


@dataclass(frozen=True)
class StaticOptions:
    """How one static mount serves its directory (see ``docs/static.md``).

    Attributes:
        root: the directory, as an absolute real path.
        cache_control: the ``Cache-Control`` value, if any.
        headers: more header fields for every file.
        index: file names served for a directory.
        listing: whether a directory without an index is listed.
        precompressed: whether ``.br``/``.gz`` siblings are negotiated.
        dotfiles: whether names starting with a dot are served.
        symlinks: ``"inside"`` or ``"never"``.
        internal: whether only ``X-Accel-Redirect`` reaches these files.
        try_files: the names tried for a request (nginx's ``try_files``): paths
            with ``$uri``, and an optional last ``=CODE``; empty: the path itself.
        max_ranges: most ranges served in one response.
        memory_cache: files up to this size are kept in memory (0: none).
        gzip: how files are compressed on the fly, if they are.
        limit_rate: the mount's rate (0: none), and limit_rate_after its bytes at
            full speed: for the files an application's or upstream's X-Accel-Redirect
            names here (a request routed here gets them from its Mount).
    """

    root: str
    cache_control: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    index: tuple[str, ...] = ("index.html",)
    listing: bool = False
    precompressed: bool = True
    dotfiles: bool = False
    symlinks: str = "inside"
    internal: bool = False
    try_files: tuple[str, ...] = ()
    max_ranges: int = 16
    memory_cache: int = 64 * 1024
    gzip: GzipSettings | None = None
    limit_rate: int = 0
    limit_rate_after: int = 0

    @functools.cached_property
    def header_fields(self) -> tuple[tuple[bytes, bytes], ...]:
        """``headers`` as the fields sent (Latin-1, RFC 9110 5.5)."""
        return tuple(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers
        )

    @classmethod
    def from_mount(
        cls, root: str, options: dict[str, Any], gzip: GzipSettings | None = None
    ) -> StaticOptions:
        """Build the options of a static mount from its configuration.

        ``gzip`` is the mount's compression, resolved with the server's settings.
        """
        return cls(
            root=os.path.realpath(root),
            gzip=gzip,
            **{key: value for key, value in options.items() if key in _OPTION_NAMES},
        )

    def varies(self, content_type: str, size: int) -> bool:
        """Whether a file's answer depends on ``Accept-Encoding`` (RFC 9110 12.5.5)."""
        return self.precompressed or self.gzips(content_type, size)

    def gzips(self, content_type: str, size: int) -> bool:
        """Whether a file of this type and size is compressed on the fly.

        Not with ``memory_cache = 0``: the compressed forms are kept in that memory.
        """
        gzip = self.gzip
        return (
            gzip is not None
            and self.memory_cache > 0
            and gzip.min_length <= size <= GZIP_FILE_LIMITS[gzip.level]
            and gzip.compresses(content_type.split(";", 1)[0].strip().lower())
        )


_OPTION_NAMES = frozenset(StaticOptions.__dataclass_fields__) - {"root", "gzip"}


class _File:
    """What is known about one file (or precompressed sibling) of the directory.

    Attributes:
        path: where it is (the sibling's own path for a precompressed sibling).
        signature: device, inode, size, modification and change times; a different value
            means a different file.
        size: its length.
        etag: its strong entity tag.
        last_modified: its modification time in whole seconds (or the time the entry
            was made, if that is earlier).
        content_type: its media type (of the original file for a sibling).
        encoding: ``"br"``/``"gzip"`` for a precompressed sibling or the gzip form
            made on the fly, else ``None``.
        headers: the header fields every answer with this file carries.
        full_headers: those and the length: the whole head of a plain 200.
        not_modified: those a 304 repeats (RFC 9110 15.4.5): the whole head of a 304
            to a request without an application's fields.
        data: its content, when it is kept in memory (the compressed bytes of a
            gzip form made on the fly, which is never anywhere else).
        checked: whether the file was found inside the rules once it was open (see
            :meth:`StaticHandler._opened_allowed`): only then does its signature
            stand for its link check.
    """

    __slots__ = (
        "checked",
        "content_type",
        "data",
        "encoding",
        "etag",
        "full_headers",
        "headers",
        "last_modified",
        "not_modified",
        "path",
        "signature",
        "size",
    )

    def __init__(
        self,
        path: bytes,
        info: os.stat_result,
        content_type: str,
        encoding: str | None,
        options: StaticOptions,
        *,
        now: float,
        gzipped: bytes | None = None,
    ) -> None:
        self.path = path
        self.signature = files.signature(info)
        self.size = info.st_size if gzipped is None else len(gzipped)
        # RFC 9110 8.8.2.1: never later than the response's Date. A file dated in the
        # future (a clock skew, an archive) is said to be modified now; the entry
        # (and its strong ETag) change with the file, not with the clock.
        self.last_modified = min(int(info.st_mtime), int(now))
        if gzipped is not None:
            # Made here, the same bytes for the same file, level and zlib (no time in
            # the gzip header): a strong tag of its own (RFC 9110 8.8.3).
            suffix = f"z{options.gzip.level if options.gzip else 0}-{_ZLIB_TAG}"
        else:
            suffix = "br" if encoding == "br" else "gz" if encoding == "gzip" else ""
        self.etag = files.etag_for(
            info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, suffix
        )
        self.content_type = content_type
        self.encoding = encoding
        self.data: bytes | None = gzipped
        self.checked = False
        headers = [
            (b"Content-Type", content_type.encode("latin-1")),
            (b"Last-Modified", http_date(self.last_modified)),
            (b"ETag", self.etag.encode("latin-1")),
            (b"Accept-Ranges", b"bytes"),
            (b"X-Content-Type-Options", b"nosniff"),
        ]
        if encoding is not None:
            headers.append((b"Content-Encoding", encoding.encode("ascii")))
        if options.varies(content_type, info.st_size):
            headers.append((b"Vary", b"Accept-Encoding"))
        if options.cache_control:
            headers.append((b"Cache-Control", options.cache_control.encode("latin-1")))
        headers.extend(options.header_fields)
        self.headers = headers
        # The heads of a plain 200 and of a 304, serialised once by the protocol.
        self.full_headers = PreparedHeaders([*headers, (b"Content-Length", b"%d" % self.size)])
        self.not_modified = PreparedHeaders(_not_modified_fields(headers, options))


class _Miss(Exception):  # noqa: N818 - control flow, not an error
    """The request names no file this mount serves (404, or the fallback)."""


class _Forbidden(Exception):  # noqa: N818 - control flow, not an error
    """The file exists but may not be served (403)."""


class _Redirect(Exception):  # noqa: N818 - control flow, not an error
    """A directory was asked for without its trailing slash (301)."""


class _Changed(Exception):  # noqa: N818 - control flow, not an error
    """The file was replaced or removed after it was looked at: look again."""


class StaticHandler:
    """Serves the files of one directory (reactor thread).

    Args:
        options: how the directory is served.
        fallback: with ``fallthrough``, the mount misses go to (its prefix and
            handler, and what it does to responses: see :class:`Route`).
        now: the reactor's clock, in seconds since the epoch (``Last-Modified`` is
            never later than it; obsolete dates in preconditions are read by it).

    Attributes:
        access_log: the mount's access log, if not the server's: an exchange an
            application or upstream hands to this mount (X-Accel-Redirect) is
            logged there, as nginx logs in the location of an internal redirect.
    """

    def __init__(
        self,
        options: StaticOptions,
        *,
        fallback: Mount[Handler] | None = None,
        now: Callable[[], float],
    ) -> None:
        self.options = options
        self.fallback = fallback
        self.access_log: Callable[[Any], None] | None = None
        self._now = now
        self._root = os.fsencode(options.root)
        self._root_prefix = self._root.rstrip(b"/") + b"/"
        self._cache: OrderedDict[bytes, _File] = OrderedDict()
        self._cached_bytes = 0
        # Files sent from disk: their facts without their bytes.
        self._known: dict[bytes, _File] = {}
        # Precompressed siblings that could not be read, with the signature they had.
        self._unreadable: dict[bytes, tuple[int, int, int, int, int]] = {}
        # Whether a file is compressed on the fly, with the signature it had.
        self._gzippable_files: dict[bytes, tuple[tuple[int, int, int, int, int], bool]] = {}
        # The files whose gzip form was made, with the signature they had then.
        self._made: dict[bytes, tuple[int, int, int, int, int]] = {}
        # Files found without a precompressed sibling: with their signature then,
        # and until when that is believed (see SIBLING_RECHECK).
        self._no_siblings: dict[bytes, tuple[tuple[int, int, int, int, int], float]] = {}
        # path_info -> file-system path, or None for a name that is never served
        # (a dotfile): the mapping is a pure function of the path and the options.
        self._paths: dict[bytes, bytes | None] = {}
        # The mount's headers: with its files, their 304s and its redirects, as
        # nginx's add_header (without always) goes with 200, 206, 301 and 304.
        self._configured = options.header_fields
        self._candidates, self._tried_status = _try_files(options.try_files)

    # -- entry points ---------------------------------------------------------------

    def handle(self, exchange: Exchange, path_info: bytes | None = None) -> None:
        """Answer a request routed to this mount (``path_info``: the route's, else)."""
        request = exchange.request
        if path_info is None:
            route = exchange.route
            path_info = route.path_info if route is not None else request.decoded_path
        method = request.method
        if self.options.internal:
            answer_error(exchange, 404, b"Not Found\n")
            return
        if method not in (b"GET", b"HEAD"):
            if self._fall_through(exchange):
                return
            answer_error(exchange, 405, b"Method Not Allowed\n", [(b"Allow", b"GET, HEAD")])
            return
        raw = request.path
        # (find, not "in", on each request: see protocol.on_headers_complete)
        if raw.find(b"\\") >= 0 or (
            raw.find(b"%") >= 0 and (b"%2f" in raw.lower() or b"%5c" in raw.lower())
        ):
            self._missed(exchange)  # an encoded separator cannot name a file
            return
        if self._candidates:
            self._try(exchange, path_info)
            return
        if method == b"GET" and self._send_remembered(exchange, request, path_info):
            return
        self.serve(exchange, path_info)

    def _send_remembered(self, exchange: Exchange, request: RequestHead, path_info: bytes) -> bool:
        """Answer a GET from memory when :meth:`serve` would, without its steps.

        A file kept in memory, asked for without a Range, is answered here without
        serve's calls (_resolve, _stat, _request_fields, _file, _entry, _send,
        finish_paced, _send_conditionally, two files.signature). callgrind, the
        10 KB file of benchmarks/inmemory.py static, instructions a request: wrk's
        request 117,200 -> 107,000; a browser's (a dozen fields, Accept-Encoding
        among them) 207,100 -> 185,600; its revalidation (If-None-Match, 304)
        226,100 -> 195,200.

        An entry kept in memory is a regular file whose bytes were read through a
        descriptor that passed the link policy (``checked``); an unchanged signature
        says it is that file still, as :meth:`_stat` trusts it. With
        Accept-Encoding, the file itself is what _file would choose only while it
        is known to have no other form. Anything else (a changed or missing file, a
        sibling's entry, ``a.txt/``, a form to choose, a Range) is left to serve:
        ``False``. (``test_the_short_way_answers_as_serve_does`` compares
        the two.)
        """
        path = self._paths.get(path_info)
        if path is None or path_info.endswith(b"/"):
            return False
        entry = self._cache.get(path)
        if entry is None or entry.encoding is not None or entry.data is None:
            return False
        # The fields the file rules read, as _request_fields gathers them, in place
        # (a call, and a second look at a browser's dozen fields, cost more), and
        # Accept-Encoding apart: most requests have it alone, and no dictionary.
        accept_encoding = None
        fields: dict[bytes, bytes] | None = None
        for name, value in request.headers:
            lower = name.lower()
            if lower in _WANTED:
                if lower == b"accept-encoding":
                    accept_encoding = (
                        value if accept_encoding is None else accept_encoding + b", " + value
                    )
                elif fields is None:
                    fields = {lower: value}
                else:
                    previous = fields.get(lower)
                    fields[lower] = value if previous is None else previous + b", " + value
        if fields is not None and b"range" in fields:
            return False  # (a part of the file to send, perhaps)
        try:
            info = os.stat(path)
        except OSError:
            return False  # (serve looks again, and says why)
        # (files.signature, in place)
        signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if entry.signature != signature:
            return False
        if accept_encoding:
            # (A browser's.) _file sends the file itself when it finds no other
            # form: no sibling (believed absent still, see SIBLING_RECHECK) and no
            # gzip form (known not to be made). Else _file looks, and chooses.
            options = self.options
            if options.precompressed and not self._siblings_absent(path, signature, self._now()):
                return False
            if options.gzip is not None and self._gzippable_files.get(path) != (signature, False):
                return False
        self._cache.move_to_end(path)  # (as _entry: least recently used first out)
        if fields:
            # Preconditions (a browser's revalidation): _send_conditionally's answer
            # to a request without a Range or an application's fields (an If-Range
            # without a Range changes nothing).
            outcome = _preconditions(entry, fields, b"GET", self._now())
            if outcome is files.NOT_MODIFIED:
                exchange.start_response(304, entry.not_modified)
                exchange.finish()
                return True
            if outcome is files.FAILED:
                answer_error(exchange, 412, b"Precondition Failed\n")
                return True
        exchange.start_response(200, entry.full_headers)
        if exchange.limit_rate is None:  # (finish_paced's own test, in place)
            exchange.finish(entry.data)
        else:
            finish_paced(exchange, entry.data)
        return True

    def serve_internal(
        self,
        exchange: Exchange,
        path_info: bytes,
        app_headers: Sequence[tuple[bytes, bytes]],
        *,
        try_files: bool,
    ) -> None:
        """Serve an application's ``X-Accel-Redirect`` (``try_files``) or ``X-Sendfile``.

        An ``X-Accel-Redirect`` names a URI, which nginx routes again, so this
        mount's ``try_files`` applies to it (a placeholder for a missing file); an
        ``X-Sendfile`` names the file itself.
        """
        if try_files and self._candidates:
            self._try(exchange, path_info, app_headers, internal=True)
        else:
            self.serve(exchange, path_info, app_headers, internal=True)

    def _try(
        self,
        exchange: Exchange,
        path_info: bytes,
        app_headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        internal: bool = False,
    ) -> None:
        """Serve the first of ``try_files`` that exists (nginx's ``try_files``).

        A name configured without a trailing slash is a regular file; one with it a
        directory that has an index file or a listing (nginx takes any directory and
        then answers 403 for one without). Hidden names (dotfiles), ``.`` and ``..``
        segments and links the policy refuses do not exist here. The one found is
        served; the mount's own directory asked for without its slash, and
        ``$uri/`` for a path without it, are redirected to the slash first. None
        found: the ``=CODE`` (``=444``: the connection closed), else a miss (404, or
        fallthrough). ``internal``: an application's ``X-Accel-Redirect`` (no
        redirect, no fallthrough).
        """
        if not internal and not path_info:
            # "/static" for the mount's directory: to "/static/", as without
            # try_files, so the relative links of what is served there resolve.
            self._redirect(exchange)
            return
        for parts, wants_directory in self._candidates:
            candidate = path_info.join(parts)
            mapped = self._map(candidate)
            if mapped is None:
                continue
            try:
                info = self._stat(mapped)
            except (_Miss, _Forbidden):
                continue
            if wants_directory:
                found = stat.S_ISDIR(info.st_mode) and (
                    self.options.listing or self._has_index(mapped)
                )
            else:
                found = stat.S_ISREG(info.st_mode)
            if not found:
                continue
            if not internal and parts == (b"", b"/") and not path_info.endswith(b"/"):
                # "$uri/" for /docs: to /docs/ first, as without try_files, so the
                # relative links of its index or listing resolve (nginx serves it at
                # /docs, where they do not).
                self._redirect(exchange)
                return
            self.serve(exchange, candidate, app_headers, internal=internal)
            return
        status = self._tried_status
        if status == CLOSE_WITHOUT_RESPONSE:
            exchange.abort()
        elif status is not None:
            answer_error(exchange, status, error_body(status))
        elif internal:
            answer_error(exchange, 404, b"Not Found\n")
        else:
            self._missed(exchange)

    def serve(
        self,
        exchange: Exchange,
        path_info: bytes,
        app_headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        internal: bool = False,
    ) -> None:
        """Send the file at ``path_info`` (below the directory) as the response.

        Args:
            exchange: the request to answer.
            path_info: the decoded path below the mount, e.g. ``b"/css/app.css"``.
            app_headers: an application's header fields to keep (X-Accel-Redirect).
            internal: whether this is an application's redirect (no fallthrough, no
                directory redirect).
        """
        # A file replaced (or removed) between its stat and its opening is looked up
        # again once: nothing has been sent, so the answer can still describe it.
        changed = False
        while True:
            try:
                path, info = self._resolve(path_info, redirect=not internal)
                if stat.S_ISDIR(info.st_mode):
                    self._list(exchange, path, info, path_info)
                    return
                fields = _request_fields(exchange)
                accept_encoding = fields.pop(b"accept-encoding", None)
                while True:
                    entry = self._file(
                        path,
                        info,
                        accept_encoding,
                        app_headers=app_headers,
                        fields=fields,
                        method=exchange.request.method,
                    )
                    try:
                        self._send(exchange, entry, fields, app_headers)
                        return
                    except _Forbidden:
                        if entry.encoding is None:
                            raise
                        # A sibling that cannot be read (a umask on the build output):
                        # the next choice, down to the file itself, as nginx does,
                        # rather than a 403 for every browser. Said once, and not
                        # tried again while it is unchanged.
                        self._unreadable_sibling(entry)
            except _Miss:
                if internal:
                    answer_error(exchange, 404, b"Not Found\n")
                else:
                    self._missed(exchange)
                return
            except _Forbidden:
                answer_error(exchange, 403, b"Forbidden\n")
                return
            except _Redirect:
                self._redirect(exchange)
                return
            except _Changed:
                if changed:
                    break
                changed = True
            except OSError as error:  # from opening the file: EMFILE, EIO...
                _log.error("Cannot open {path}: {error}", path=os.fsdecode(path), error=error)
                answer_error(exchange, 500, b"Internal Server Error\n")
                return
        _log.warn("{path} changed twice while it was being served", path=os.fsdecode(path))
        answer_error(exchange, 503, b"Service Unavailable\n", [(b"Retry-After", b"1")])

    def close(self) -> None:
        """Forget the cached files (the mount is being replaced)."""
        self._cache.clear()
        self._cached_bytes = 0
        self._known.clear()
        self._gzippable_files.clear()
        self._made.clear()

    # -- resolving a path -------------------------------------------------------------

    def _resolve(self, path_info: bytes, *, redirect: bool) -> tuple[bytes, os.stat_result]:
        """Map ``path_info`` to a file (or, for a listing, a directory) and its stat."""
        path = self._paths.get(path_info, b"")
        if path == b"":
            path = self._map(path_info)
            if len(self._paths) < PATH_CACHE_SIZE:
                self._paths[path_info] = path
        if path is None:
            raise _Miss
        info = self._stat(path)
        if stat.S_ISREG(info.st_mode):
            if path_info.endswith(b"/"):
                raise _Miss  # "a.txt/" names a directory that does not exist
            return path, info
        if not stat.S_ISDIR(info.st_mode):
            raise _Miss  # never a device, FIFO or socket
        # The mount's own directory too ("/static" → "/static/"): relative links in
        # its index or listing resolve against the slash. A directory with neither is
        # redirected too, as nginx does, and then refused (403) with its slash; under
        # a fall-through mount the application gets it, with or without the slash.
        if redirect and not path_info.endswith(b"/"):
            if self._has_index(path) or self.options.listing or self.fallback is None:
                raise _Redirect
            raise _Miss
        for index in self.options.index:
            candidate = path.rstrip(b"/") + b"/" + os.fsencode(index)
            try:
                index_info = self._stat(candidate)
            except _Miss:
                continue
            if stat.S_ISREG(index_info.st_mode):
                return candidate, index_info
        if self.options.listing:
            return path, info
        if self.fallback is not None:
            raise _Miss
        raise _Forbidden

    def _map(self, path_info: bytes) -> bytes | None:
        """The file-system path for ``path_info``, or ``None`` if it is hidden.

        A ``.`` or ``..`` segment names nothing: the router resolves them in request
        paths, so only a ``try_files`` name with ``$uri`` could bring one
        (``$uri..`` for ``/``), and it must not climb out of the directory.
        """
        names = [name for name in path_info.split(b"/") if name]
        if b".." in names or b"." in names:
            return None
        if not self.options.dotfiles:
            for position, name in enumerate(names):
                if name.startswith(b".") and not (position == 0 and name == _WELL_KNOWN):
                    return None
        return self._root_prefix + b"/".join(names) if names else self._root

    def _stat(self, path: bytes) -> os.stat_result:
        """``stat`` a path, enforcing the symbolic-link policy.

        What is answered from the stat alone (a directory's redirect or 403, the
        name ``try_files`` picks, a sibling's existence) must describe a file that
        passes the policy: a stat of the path and a check of the path are two looks,
        and a link swapped between them would tell whether something outside
        exists. On Linux the path is opened (``O_PATH``) and the descriptor both
        stat-ed and checked; elsewhere the path is resolved after its stat.
        """
        cached = self._cache.get(path) or self._known.get(path)
        if cached is not None and cached.checked:
            try:
                info = os.stat(path)
            except OSError as error:
                raise self._looked_up(error, path) from None
            if cached.signature == files.signature(info):
                # Found inside the rules once it was open, and the same file since (a
                # new name for it, a hard link, moves its ctime): nothing to check
                # again, and one stat is all the hot path costs.
                return info
        if not _LOOK_BY_DESCRIPTOR:
            info = self._stat_path(path)
            if not self._links_allowed(path):
                raise _Miss
            return info
        try:
            return self._stat_at(None, path, path)
        except OSError as error:
            raise self._looked_up(error, path) from None

    def _stat_path(self, path: bytes) -> os.stat_result:
        """``os.stat(path)``, its failures as :meth:`_looked_up` says."""
        try:
            return os.stat(path)
        except OSError as error:
            raise self._looked_up(error, path) from None

    def _looked_up(self, error: OSError, path: bytes) -> _Miss | _Forbidden:
        """What a failure to look ``path`` up means for the request: 404, or 403.

        A 403 only for a path the link policy allows: a directory the server may not
        search is found while the path is resolved, and a link to a path through one
        outside would otherwise tell (403 against 404) that it exists there.
        """
        if isinstance(error, PermissionError) and self._links_allowed(path):
            return _Forbidden()
        return _Miss()  # gone, not a directory, ELOOP, ENAMETOOLONG, out of bounds

    def _links_allowed(self, path: bytes) -> bool:
        """Whether ``path`` passes the symbolic-link policy.

        It does when it involves no link, or (``symlinks = "inside"``) when its links
        lead somewhere inside the directory.
        """
        real = os.path.realpath(path)
        if real == path:
            return True
        if self.options.symlinks == "never":
            return False
        return real == self._root or real.startswith(self._root_prefix)

    def _opened_allowed(self, descriptor: int, path: bytes) -> bool:
        """Whether the file open at ``descriptor`` (by ``path``) passes the link policy.

        :meth:`_links_allowed` resolves the path before it is opened, so a link
        pointed elsewhere in between (by whoever may write inside the directory)
        would lead the opening anywhere. Where the open file is, by the kernel's
        account, settles it: inside the directory (``"inside"``), or at the very
        path asked for, with no link on the way (``"never"``). Without Linux's
        ``/proc`` the path's own check stands.
        """
        where = _opened_path(descriptor)
        if where is None:
            return True
        if self.options.symlinks == "never":
            return where == os.path.normpath(path)
        return where == self._root or where.startswith(self._root_prefix)

    def _has_index(self, directory: bytes) -> bool:
        for index in self.options.index:
            try:
                info = self._stat(directory + b"/" + os.fsencode(index))
            except (_Miss, _Forbidden):
                continue
            if stat.S_ISREG(info.st_mode):
                return True
        return False

    def _file(
        self,
        path: bytes,
        info: os.stat_result,
        accept_encoding: bytes | None,
        *,
        app_headers: Sequence[tuple[bytes, bytes]] = (),
        fields: dict[bytes, bytes] | None = None,
        method: bytes = b"GET",
    ) -> _File:
        """The file to send: a sibling or the gzip form if one suits, else ``path``.

        A sibling on disk comes before the form made here, as nginx's gzip_static
        comes before its gzip filter; the client's q-values choose among them.
        ``fields`` and ``method`` are the request's (conditional requests).
        """
        options = self.options
        if not accept_encoding or not (options.precompressed or options.gzip):
            return self._entry(path, info, path, None)
        available: list[str] = []
        siblings: dict[str, tuple[bytes, os.stat_result]] = {}
        signature = files.signature(info)
        if options.precompressed:
            # A browser asks with Accept-Encoding every time, and most files have no
            # sibling: that is remembered for a second (a stat of each possible
            # sibling, a raised FileNotFoundError each, cost about a fifth of the
            # request), and at once forgotten when the file itself changes.
            now = self._now()
            if not self._siblings_absent(path, signature, now):
                for coding, suffix in _ENCODINGS:
                    try:
                        sibling_info = self._stat(path + suffix)
                    except (_Miss, _Forbidden):
                        continue
                    if stat.S_ISREG(sibling_info.st_mode) and (
                        self._unreadable.get(path + suffix) != files.signature(sibling_info)
                    ):
                        available.append(coding)
                        siblings[coding] = (path + suffix, sibling_info)
                if siblings:
                    self._no_siblings.pop(path, None)
                else:
                    _remember_bounded(self._no_siblings, path, (signature, now + SIBLING_RECHECK))
        if "gzip" not in siblings and self._gzippable(path, info, signature, app_headers):
            available.append("gzip")
        if available:
            chosen = _preferred_encoding(accept_encoding, tuple(available))
            if chosen in siblings:
                sibling_path, sibling_info = siblings[chosen]
                return self._entry(sibling_path, sibling_info, path, chosen)
            if chosen == "gzip":
                gzipped = self._gzipped(path, info, fields or {}, method)
                if gzipped is not None:
                    return gzipped
        return self._entry(path, info, path, None)

    def _siblings_absent(
        self, path: bytes, signature: tuple[int, int, int, int, int], now: float
    ) -> bool:
        """Whether ``path`` was found without precompressed siblings, as it is now.

        Remembered for SIBLING_RECHECK seconds after the look (see :meth:`_file`),
        and only for the file with ``signature``: a changed file is looked at again.
        """
        absent = self._no_siblings.get(path)
        return absent is not None and absent[0] == signature and now < absent[1]

    def _gzippable(
        self,
        path: bytes,
        info: os.stat_result,
        signature: tuple[int, int, int, int, int],
        app_headers: Sequence[tuple[bytes, bytes]],
    ) -> bool:
        """Whether the file at ``path`` has a gzip form made on the fly.

        Not for a file that did not get smaller when it was compressed, nor one an
        application sends with ``Cache-Control: no-transform`` (RFC 9111 5.2.2.6).
        The answer for a file is remembered until it changes: a browser asks with
        ``Accept-Encoding`` every time.
        """
        if self.options.gzip is None:
            return False
        known = self._gzippable_files.get(path)
        if known is not None and known[0] == signature:
            gzippable = known[1]
        else:
            gzippable = self.options.gzips(files.content_type(os.fsdecode(path)), info.st_size)
            self._note_gzippable(path, signature, gzippable)
        return gzippable and not any(
            name.lower() == b"cache-control" and b"no-transform" in value.lower()
            for name, value in app_headers
        )

    def _note_gzippable(
        self, path: bytes, signature: tuple[int, int, int, int, int], gzippable: bool
    ) -> None:
        _remember_bounded(self._gzippable_files, path, (signature, gzippable))

    def _gzipped(
        self, path: bytes, info: os.stat_result, fields: dict[bytes, bytes], method: bytes
    ) -> _File | None:
        """The gzip form of the file at ``path``, made now if it is not in memory.

        ``None`` when the file cannot be read as it was stat-ed (the file itself is
        then sent, or its change found), or does not get smaller; and for a file
        above ``memory_cache`` whose form was made since it changed and has left the
        memory cache: made again for every request, a set of large files larger
        than the cache would hold the reactor for each.
        """
        key = path + _GZIP_KEY
        signature = files.signature(info)
        cached = self._cache.get(key)
        if cached is not None and cached.signature == signature:
            self._cache.move_to_end(key)
            return cached
        if info.st_size > self.options.memory_cache and self._made.get(path) == signature:
            return None
        identity = self._entry(path, info, path, None)
        now = self._now()
        if fields:
            # The form's validators come from the file, not from its bytes: a 304
            # (or 412) is answered without compressing anything; not without opening
            # the file once, though, as its link check is made on the open file.
            if identity.data is None and not identity.checked:
                _open_entry(identity, self._opened_allowed).close()
            validators = _File(
                path, info, identity.content_type, "gzip", self.options, now=now, gzipped=b""
            )
            if _preconditions(validators, fields, method, now) is not files.PROCEED:
                return validators
        data = (
            identity.data
            if identity.data is not None
            else _read_small(path, signature, self._opened_allowed)
        )
        if data is None:
            return None
        gzip = self.options.gzip
        assert gzip is not None
        # No file name or time in the gzip header (zlib writes neither): the same
        # file gives the same bytes, as a strong ETag requires.
        compressor = zlib.compressobj(gzip.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        compressed = compressor.compress(data) + compressor.flush()
        if len(compressed) >= len(data):
            self._note_gzippable(path, signature, False)
            return None
        _remember_bounded(self._made, path, signature)
        entry = _File(
            path, info, identity.content_type, "gzip", self.options, now=now, gzipped=compressed
        )
        entry.checked = True
        self._remember(key, entry)
        return entry

    def _unreadable_sibling(self, entry: _File) -> None:
        """Remember (and say) that a precompressed sibling cannot be read."""
        _remember_bounded(self._unreadable, entry.path, entry.signature)
        _log.warn(
            "Cannot read {path} (permission denied): sending another form of the file"
            " it stands for",
            path=os.fsdecode(entry.path),
        )

    def _entry(
        self, path: bytes, info: os.stat_result, original: bytes, encoding: str | None
    ) -> _File:
        """The cached facts of ``path``, refreshed if the file changed.

        ``original`` is the file a precompressed sibling stands for: the media type
        is that of the original. A sibling asked for by its own name
        (``page.html.gz``) is another representation of the same bytes, with no
        Content-Encoding and a media type of its own: an entry only stands for the
        one it was made as.
        """
        cached = self._cache.get(path)
        signature = files.signature(info)
        if cached is not None and cached.signature == signature and cached.encoding == encoding:
            self._cache.move_to_end(path)  # least recently used first out (_remember)
            return cached
        known = self._known.get(path)
        if known is not None and known.signature == signature and known.encoding == encoding:
            return known
        entry = _File(
            path,
            info,
            files.content_type(os.fsdecode(original)),
            encoding,
            self.options,
            now=self._now(),
        )
        if info.st_size <= self.options.memory_cache:
            data = _read_small(path, signature, self._opened_allowed)
            if data is not None:
                entry.data = data
                entry.checked = True
                self._known.pop(path, None)
                self._remember(path, entry)
        else:
            if self._cache.get(path) is not None:
                # It outgrew the memory cache.
                self._forget(path)
            _remember_bounded(self._known, path, entry)
        return entry

    def _remember(self, key: bytes, entry: _File) -> None:
        """Keep ``entry`` (with its bytes) in memory under ``key``, within the budget.

        Whatever ``key`` held is let go of here, as it is replaced: the count of bytes
        is of what the cache holds, whatever was evicted since it was looked at.
        """
        assert entry.data is not None
        self._forget(key)
        self._cache[key] = entry
        self._cached_bytes += len(entry.data)
        while self._cached_bytes > CACHE_BUDGET and self._cache:
            _, evicted = self._cache.popitem(last=False)
            assert evicted.data is not None
            self._cached_bytes -= len(evicted.data)

    def _forget(self, key: bytes) -> None:
        replaced = self._cache.pop(key, None)
        if replaced is not None:
            assert replaced.data is not None
            self._cached_bytes -= len(replaced.data)

    # -- answering ----------------------------------------------------------------------

    def _missed(self, exchange: Exchange) -> None:
        if not self._fall_through(exchange):
            answer_error(exchange, 404, b"Not Found\n")

    def _fall_through(self, exchange: Exchange) -> bool:
        """Hand the exchange to the fallback mount, if there is one."""
        if self.fallback is None:
            return False
        mount = self.fallback
        prefix = mount.prefix
        route = exchange.route
        if route is not None:
            full = route.script_name + route.path_info
            passed = Route(
                prefix,
                full[len(prefix) :],
                route.host,
                mount.headers,
                mount.gzip,
                route.error_pages,
                mount.label,
            )
            # A partner at the same pattern gets the same captures (its URL may use them).
            captures = route.captures
            exchange.route = passed if captures is None else CapturedRoute(passed, captures)
        # The mount that answers logs it, as nginx's access_log of the location
        # try_files passes a request to.
        exchange.access_log = mount.access_log
        exchange.limit_rate = mount.limit_rate  # (and at its pace)
        exchange.limit_rate_after = mount.limit_rate_after
        mount.target.handle(exchange)
        return True

    def _redirect(self, exchange: Exchange) -> None:
        request = exchange.request
        # One leading slash: "//evil.example/" would be a protocol-relative URL.
        location = b"/" + request.path.lstrip(b"/") + b"/"
        if request.query:
            location += b"?" + request.query
        answer_plain(
            exchange, 301, b"Moved Permanently\n", [(b"Location", location), *self._configured]
        )

    def _send(
        self,
        exchange: Exchange,
        entry: _File,
        fields: dict[bytes, bytes],
        app_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        request = exchange.request
        if not fields and not app_headers and entry.data is not None and request.method == b"GET":
            # The common case: no preconditions, no Range, the bytes in memory.
            exchange.start_response(200, entry.full_headers)
            finish_paced(exchange, entry.data)
            return
        # Opened before anything is answered: the head describes the file sent, and
        # HEAD or a conditional request gets what GET would (a 403 included).
        handle = _open(exchange, entry, self._opened_allowed)
        if not fields and not app_headers:
            exchange.start_response(200, entry.full_headers)
            self._body(exchange, entry, handle, [(b"", 0, entry.size)], b"")
            return
        self._send_conditionally(exchange, entry, fields, app_headers, handle)

    def _send_conditionally(
        self,
        exchange: Exchange,
        entry: _File,
        fields: dict[bytes, bytes],
        app_headers: Sequence[tuple[bytes, bytes]],
        handle: IO[bytes] | None,
    ) -> None:
        """Answer a request with preconditions, a Range or an application's fields."""
        request = exchange.request
        method = request.method.decode("latin-1")
        headers = list(entry.headers)
        if app_headers:
            headers = _merge(headers, app_headers)
        outcome = _preconditions(entry, fields, request.method, self._now())
        if outcome is not files.PROCEED and handle is not None:
            handle.close()
        if outcome is files.NOT_MODIFIED:
            # RFC 9110 15.4.5: the validators and caching fields, no body.
            if app_headers:
                exchange.start_response(304, _not_modified_fields(headers, self.options))
            else:
                exchange.start_response(304, entry.not_modified)
            exchange.finish()
            return
        if outcome is files.FAILED:
            answer_error(exchange, 412, b"Precondition Failed\n")
            return
        size = entry.size
        range_field = fields.get(b"range")
        ranges: list[files.ByteRange] | None = None
        if (
            range_field is not None
            and method == "GET"
            and files.if_range_allows(
                _text(fields.get(b"if-range")), entry.etag, entry.last_modified, self._now()
            )
        ):
            parsed = files.parse_range(range_field.decode("latin-1"), size, self.options.max_ranges)
            if parsed is files.UNSATISFIABLE_RANGE:
                if handle is not None:
                    handle.close()
                answer_error(
                    exchange,
                    416,
                    b"Range Not Satisfiable\n",
                    [(b"Content-Range", b"bytes */%d" % size)],
                )
                return
            if isinstance(parsed, list):
                ranges = parsed
        if ranges is None:
            headers.append((b"Content-Length", b"%d" % size))
            exchange.start_response(200, headers)
            self._body(exchange, entry, handle, [(b"", 0, size)], b"")
        elif len(ranges) == 1:
            [byte_range] = ranges
            headers.append((b"Content-Range", byte_range.content_range(size).encode("ascii")))
            headers.append((b"Content-Length", b"%d" % byte_range.length))
            exchange.start_response(206, headers)
            self._body(exchange, entry, handle, [(b"", byte_range.first, byte_range.length)], b"")
        else:
            boundary = os.urandom(12).hex()
            # Each part has the type the whole file would have had (RFC 9110 14.6):
            # the application's, after an X-Accel-Redirect that set one.
            content_type = entry.content_type
            for name, value in headers:
                if name.lower() == b"content-type":
                    content_type = value.decode("latin-1")
            parts, closing, length = files.multipart_parts(ranges, size, content_type, boundary)
            headers = [
                (name, value)
                for name, value in headers
                if name.lower() not in (b"content-type", b"content-encoding")
            ]
            headers.append(
                (b"Content-Type", b"multipart/byteranges; boundary=" + boundary.encode("ascii"))
            )
            if entry.encoding is not None:
                headers.append((b"Content-Encoding", entry.encoding.encode("ascii")))
            headers.append((b"Content-Length", b"%d" % length))
            exchange.start_response(206, headers)
            pieces = [(head, byte_range.first, byte_range.length) for head, byte_range in parts]
            self._body(exchange, entry, handle, pieces, closing)

    def _body(
        self,
        exchange: Exchange,
        entry: _File,
        handle: IO[bytes] | None,
        pieces: list[tuple[bytes, int, int]],
        closing: bytes,
    ) -> None:
        """Send ``(prefix, offset, count)`` pieces of the file, then ``closing``.

        ``handle`` is the open file (see :func:`_open`); ``None`` when nothing is read
        from disk (HEAD, or the bytes are in memory).
        """
        if exchange.request.method == b"HEAD":
            exchange.finish()
            return
        data = entry.data
        if data is not None:
            finish_paced(
                exchange,
                b"".join(prefix + data[offset : offset + count] for prefix, offset, count in pieces)
                + closing,
            )
            return
        assert handle is not None
        _send_pieces(exchange, handle, iter(pieces), closing, entry)

    def _read_directory(
        self, path: bytes, info: os.stat_result
    ) -> list[tuple[bytes, os.stat_result, bool]]:
        """The entries of the directory at ``path`` (``info``) to list, directories first.

        Each with its stat, and whether it is (or leads to) a directory. The directory
        is read through the descriptor that was checked against the link policy, not
        by its path again: a link changed since the path's check would lead elsewhere.
        An entry that cannot be looked at (gone since it was read, a link loop, a
        target the server may not read) is left out.

        Raises:
            _Changed: it is not the directory looked up.
            FileNotFoundError: it leads out of bounds (or is gone).
            OSError: it cannot be read.
        """

        def vet(descriptor: int) -> None:
            # The directory looked up, else _Changed whatever it is (as for a file,
            # but by device and inode: its times move with every name added).
            now = os.fstat(descriptor)
            if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                raise _Changed
            if not self._opened_allowed(descriptor, path):
                raise FileNotFoundError(path)  # out of bounds: not found (404)

        descriptor = _open_vetted(path, os.O_RDONLY | os.O_DIRECTORY, vet)
        try:
            with os.scandir(descriptor) as entries:
                shown = (
                    entry
                    for entry in entries
                    if self.options.dotfiles or not entry.name.startswith(".")
                )
                listed = list(self._entry_facts(shown, descriptor, path))
        finally:
            os.close(descriptor)
        return sorted(listed, key=lambda facts: (not facts[2], facts[0]))

    def _entry_facts(
        self, entries: Iterable[os.DirEntry[str]], directory: int, path: bytes
    ) -> Iterator[tuple[bytes, os.stat_result, bool]]:
        """Each entry to list: its name, stat, and whether it is (or leads to) a directory.

        An entry is looked at without following it first, so a name read as a file and
        made a link since is seen as the link it is. A link is listed only when the
        policy lets it be served, and with the facts of what it leads to; on Linux
        it is opened (``O_PATH``, in the directory ``directory``) and that one file
        both stat-ed and checked, as :meth:`_stat` does. One that vanished, or whose
        link cannot be followed, is left out. (A directory read by its descriptor
        names its entries in ``str``: the name's bytes are given back.)
        """
        for entry in entries:
            name = os.fsencode(entry.name)
            try:
                own = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISLNK(own.st_mode):
                yield name, own, stat.S_ISDIR(own.st_mode)
                continue
            if self.options.symlinks == "never":
                continue  # it answers 404: neither its name nor its facts show
            full = path.rstrip(b"/") + b"/" + name
            try:
                if _LOOK_BY_DESCRIPTOR:
                    info = self._stat_at(directory, entry.name, full)
                else:
                    info = os.stat(full)
                    if not self._links_allowed(full):
                        continue
            except (OSError, _Miss):
                continue
            yield name, info, stat.S_ISDIR(info.st_mode)

    def _stat_at(self, directory: int | None, name: str | bytes, path: bytes) -> os.stat_result:
        """The stat of what ``name`` in ``directory`` leads to, if the policy allows it.

        The name is opened (``O_PATH``) and that one file both checked and stat-ed;
        ``directory`` ``None`` takes ``name`` as a path (``path`` itself).

        Raises:
            _Miss: it leads out of bounds.
            OSError: it cannot be looked at.
        """
        descriptor = os.open(name, _O_PATH | os.O_CLOEXEC, dir_fd=directory)
        try:
            if not self._opened_allowed(descriptor, path):
                raise _Miss
            return os.fstat(descriptor)
        finally:
            os.close(descriptor)

    def _list(
        self, exchange: Exchange, path: bytes, info: os.stat_result, path_info: bytes
    ) -> None:
        """An HTML page listing the directory (names escaped)."""
        shown = exchange.request.path.decode("latin-1")
        rows = []
        try:
            for name, facts, is_dir in self._read_directory(path, info):
                href = urllib.parse.quote(name) + ("/" if is_dir else "")
                # A name need not be UTF-8 (the page is): show what can be shown.
                shown_name = name.decode("utf-8", "replace")
                label = html.escape(shown_name + ("/" if is_dir else ""))
                size = "-" if is_dir else f"{facts.st_size:,}"
                modified = time.strftime("%Y-%m-%d %H:%M", time.gmtime(facts.st_mtime))
                rows.append(
                    f'<tr><td><a href="{href}">{label}</a></td>'
                    f"<td>{size}</td><td>{modified}</td></tr>"
                )
        except (FileNotFoundError, NotADirectoryError):
            answer_error(exchange, 404, b"Not Found\n")  # gone since it was looked at
            return
        except PermissionError:
            answer_error(exchange, 403, b"Forbidden\n")
            return
        except OSError as error:
            # EIO, EMFILE...: the server's trouble, not the client's (nginx: 500 and
            # an "opendir() failed" line).
            _log.error("Listing {path!r} failed: {error}", path=os.fsdecode(path), error=error)
            answer_error(exchange, 500, b"Internal Server Error\n")
            return
        title = html.escape(f"Index of {shown}")
        parent = (
            '<tr><td><a href="../">../</a></td><td></td><td></td></tr>'
            if path_info.strip(b"/")
            else ""
        )
        page = (
            f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body><h1>{title}</h1>\n<table>\n<tr><th>Name</th><th>Size</th>"
            f"<th>Modified (UTC)</th></tr>\n{parent}{''.join(rows)}\n</table></body></html>\n"
        ).encode()
        headers = [
            (b"Content-Type", b"text/html; charset=utf-8"),
            (b"X-Content-Type-Options", b"nosniff"),
            (b"Cache-Control", b"no-cache"),
        ]
        gzip = self.options.gzip
        if gzip is not None and gzip.compresses("text/html"):
            # The page differs by Accept-Encoding whenever it may be compressed.
            headers.append((b"Vary", b"Accept-Encoding"))
            if len(page) >= gzip.min_length and accepts_gzip(exchange.request):
                # A large directory's page is mostly markup: it shrinks tenfold.
                compressor = zlib.compressobj(gzip.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                page = compressor.compress(page) + compressor.flush()
                headers.append((b"Content-Encoding", b"gzip"))
        headers.append((b"Content-Length", b"%d" % len(page)))
        exchange.start_response(200, headers)
        exchange.finish(page if exchange.request.method != b"HEAD" else b"")


class CapturedStaticHandler(StaticHandler):
    """A regular-expression static mount whose directory uses the pattern's captures.

    As nginx's ``alias`` in a regular-expression location: the directory expanded
    with the captures of the match that chose the mount (the route's, see
    :class:`~twistwsgi.captures.CapturingHandler`) names the file itself, and it
    is looked up below the fixed directory (``options.root``, the part before the
    first capture) by every rule of :class:`StaticHandler`: dot segments, hidden
    names, links out, encoded slashes and backslashes in the request. A request
    path ending in ``/`` asks for a directory: the expanded path gets the slash too,
    so its index is served (``~ ^/docs/$`` with ``/srv/docs``); a directory asked
    for without it is redirected to the request's path and a slash, as nginx does.

    Args:
        options: how the fixed directory is served.
        template: the directory as written, with its captures.
        fallback: as :class:`StaticHandler`'s (the partner at the same pattern).
        now: as :class:`StaticHandler`'s.
    """

    def __init__(
        self,
        options: StaticOptions,
        template: FileTemplate,
        *,
        fallback: Mount[Handler] | None = None,
        now: Callable[[], float],
    ) -> None:
        super().__init__(options, fallback=fallback, now=now)
        self.template = template

    def file_path(self, match: Any, request_path: bytes) -> bytes | None:
        """The path below the fixed directory that the captures of ``match`` name.

        With the slash of a ``request_path`` that ends in one (a directory is
        asked for). ``None`` when they name no file: no match, a NUL in a capture.
        """
        expanded = None if match is None else self.template.expand(match)
        if expanded is not None and request_path.endswith(b"/") and not expanded.endswith(b"/"):
            expanded += b"/"
        return expanded

    def handle(self, exchange: Exchange, path_info: bytes | None = None) -> None:
        """Answer with the file the captures name (``path_info``: already expanded)."""
        if path_info is None:
            route = exchange.route
            path_info = None if route is None else self.file_path(route.captures, route.path_info)
            if path_info is None:
                self._missed(exchange)
                return
        super().handle(exchange, path_info)


def _try_files(
    names: Sequence[str],
) -> tuple[tuple[tuple[tuple[bytes, ...], bool], ...], int | None]:
    """``try_files`` read: each name's parts, and the status of a last ``=CODE``.

    A name is its text split where ``$uri`` stands (joined with the path at each
    request), and whether it names a directory (it ends with ``/`` as configured,
    as nginx tells them apart); the status is ``None`` without a ``=CODE``.
    """
    status = None
    candidates = []
    for name in names:
        if name.startswith("="):
            status = int(name[1:])
            continue
        parts = tuple(part.encode("utf-8") for part in cut_at(name, "uri"))
        candidates.append((parts, name.endswith("/")))
    return tuple(candidates), status


def _open_file(path: bytes, vet: Callable[[int], None] | None = None) -> IO[bytes]:
    """Open ``path`` for reading without ever waiting in the reactor thread.

    ``O_NONBLOCK``: a FIFO renamed over the file since its stat would otherwise hold
    ``open`` (and every other request) until something writes to it; with the flag
    the open returns, and the ``fstat`` that follows finds another file. On a regular
    file the flag changes nothing (nginx opens files the same way).

    ``vet`` is given a descriptor of the file to refuse it (see
    :func:`_open_vetted`).
    """
    descriptor = _open_vetted(path, os.O_RDONLY | os.O_NONBLOCK, vet)
    return os.fdopen(descriptor, "rb", buffering=0)


def _open_vetted(path: bytes, flags: int, vet: Callable[[int], None] | None) -> int:
    """Open ``path`` with ``flags``, once ``vet`` (if any) has let its descriptor by.

    ``vet`` raises to refuse the file (another file than the one looked up, one out
    of bounds). An opening by path that fails right after a look-up that found the
    path may have followed a link swapped since, and its failure (missing, not a
    directory, not allowed) would tell of what that leads to. So on Linux the path
    is then opened without reading it (``O_PATH``), that file vetted, and opened for
    reading through ``/proc/self/fd``: a failure there is the file's own (a ``403``
    for one the server may not read); a success, or no file, means the path led
    elsewhere: :class:`_Changed`. Elsewhere the failure is raised as it is.

    Raises:
        _Changed: the path no longer leads where it did (Linux).
        OSError: it cannot be opened (``PermissionError``: it may not be read).
    """
    flags |= os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if not _LOOK_BY_DESCRIPTOR or error.errno not in _LED_ELSEWHERE:
            raise
        _open_located(path, flags, vet)
        raise _Changed from None
    try:
        if vet is not None:
            vet(descriptor)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _open_located(path: bytes, flags: int, vet: Callable[[int], None] | None) -> None:
    """Open (and close) the file at ``path`` through a descriptor of it (Linux).

    See :func:`_open_vetted`: what this raises is the file's own failure.

    Raises:
        _Changed: ``path`` leads nowhere now.
        OSError: the file cannot be opened with ``flags``.
    """
    try:
        located = os.open(path, _O_PATH | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in _LED_ELSEWHERE:
            raise _Changed from None
        raise
    try:
        if vet is not None:
            vet(located)
        os.close(os.open(b"/proc/self/fd/%d" % located, flags))
    finally:
        os.close(located)


def _opened_path(descriptor: int) -> bytes | None:
    """Where the file open at ``descriptor`` is, as the kernel knows it.

    ``None`` where that cannot be asked (no ``/proc``: not Linux); ``b""`` when it
    cannot be told for this descriptor (a path longer than a page), which no rule
    allows.
    """
    if not _PROC_FDS:
        return None
    try:
        return os.readlink(b"/proc/self/fd/%d" % descriptor)
    except OSError:
        return b""


def _open(
    exchange: Exchange, entry: _File, allowed: Callable[[int, bytes], bool]
) -> IO[bytes] | None:
    """Open the file whose body is about to be sent, if it is read from disk.

    A HEAD request opens it too, and closes it at once: its answer is the one GET
    would get (RFC 9110 9.3.2), a 403 for a file that cannot be read included. See
    :func:`_open_entry` for what it raises.
    """
    if entry.data is not None:
        return None
    handle = _open_entry(entry, allowed)
    if exchange.request.method == b"HEAD":
        handle.close()
        return None
    return handle


def _open_entry(entry: _File, allowed: Callable[[int, bytes], bool]) -> IO[bytes]:
    """Open the file ``entry`` describes, if it still is that file.

    The first time, the open file is checked against the link policy
    (``allowed``, see :meth:`StaticHandler._opened_allowed`); later, the same
    signature says it is the same file.

    Raises:
        _Changed: it is no longer the file ``entry`` describes (replaced or removed
            since its stat), so the head built from ``entry`` would be wrong.
        _Miss: a link changed since the check led the opening out of bounds.
        _Forbidden: it may not be read.
        OSError: any other failure to open it.
    """

    def vet(descriptor: int) -> None:
        # The signature first: a file that is not the one looked up is _Changed
        # whatever it is, so the answer never tells what a swapped link leads to.
        if files.signature(os.fstat(descriptor)) != entry.signature:
            raise _Changed
        if not entry.checked and not allowed(descriptor, entry.path):
            raise _Miss

    try:
        handle = _open_file(entry.path, vet)
    except FileNotFoundError:
        raise _Changed from None
    except PermissionError:
        raise _Forbidden from None
    entry.checked = True
    return handle


def _send_pieces(
    exchange: Exchange,
    handle: IO[bytes],
    pieces: Iterator[tuple[bytes, int, int]],
    closing: bytes,
    entry: _File | None = None,
) -> None:
    """Send the file pieces one after the other, then finish and close the file.

    ``entry`` is the file's (named in the line logged when it is cut short).
    """

    def next_piece(_: object = None) -> Deferred[None] | None:
        for prefix, offset, count in pieces:
            if prefix:
                exchange.write(prefix)
            sending = exchange.send_file(handle, offset, count)
            sending.addCallbacks(next_piece, failed)
            return sending
        handle.close()
        exchange.finish(closing)
        return None

    def failed(failure: Failure) -> None:
        handle.close()
        truncated = failure.check(FileTruncatedError)
        if exchange.finished or failure.check(*CLIENT_GONE):
            pass  # the client left: ordinary (the access log has its bytes)
        elif truncated and entry is not None:
            # Written to since its head went out (a log rotated, a copy in place):
            # the Content-Length cannot be kept, the client must see the cut (RFC
            # 9112 6.3). Said as nginx's "was truncated" alert, without a traceback.
            error = failure.value
            assert isinstance(error, FileTruncatedError)
            _log.error(
                "{path} was truncated at {offset} bytes while it was sent ({size}"
                " announced); closing the connection",
                path=os.fsdecode(entry.path),
                offset=error.offset,
                size=entry.size,
            )
        else:
            # A failure on this side (the disk) is worth a traceback.
            _log.failure("Sending a file failed", failure=failure)
        exchange.abort()

    next_piece()


def _remember_bounded(table: dict[bytes, _Value], path: bytes, value: _Value) -> None:
    """Remember ``value`` for ``path`` in one of a mount's tables of file facts.

    A full table starts afresh (at :data:`KNOWN_FILES_SIZE` entries): simpler than
    an LRU for facts that are cheap to find again, and bounded all the same.
    """
    if len(table) >= KNOWN_FILES_SIZE:
        table.clear()
    table[path] = value


def _read_small(
    path: bytes,
    signature: tuple[int, int, int, int, int],
    allowed: Callable[[int, bytes], bool],
) -> bytes | None:
    """Read a small file whole, if it is still the file that was stat-ed.

    ``None`` when it is not, before or after the read: bytes written meanwhile
    (appended, cut off, rewritten in place) would not be those its head describes,
    and the caller looks at the file again. The size read is the signature's: a file
    growing meanwhile does not make the body longer than its Content-Length.

    Raises:
        _Miss: the open file fails the link policy (``allowed``, see
            :meth:`StaticHandler._opened_allowed`).
    """
    size = signature[2]  # (device, inode, size, mtime, ctime)

    def vet(descriptor: int) -> None:
        if files.signature(os.fstat(descriptor)) != signature:
            raise _Changed
        if not allowed(descriptor, path):
            raise _Miss

    try:
        with _open_file(path, vet) as handle:
            descriptor = handle.fileno()
            pieces = []
            left = size
            while left > 0:
                piece = handle.read(left)
                if not piece:
                    return None  # cut off since its fstat
                pieces.append(piece)
                left -= len(piece)
            # Any write meanwhile moved the change time (Linux 6.13 on makes it
            # distinct from the one read above, as the fstat asked for it).
            if files.signature(os.fstat(descriptor)) != signature:
                return None
            return b"".join(pieces)
    except (OSError, _Changed):
        return None


def _preconditions(
    entry: _File, fields: dict[bytes, bytes], method: bytes, now: float
) -> files.Precondition:
    """What the request's preconditions make of ``entry`` (RFC 9110 13.2.2)."""
    return files.evaluate_preconditions(
        method=method.decode("latin-1"),
        etag=entry.etag,
        last_modified=entry.last_modified,
        if_match=_text(fields.get(b"if-match")),
        if_none_match=_text(fields.get(b"if-none-match")),
        if_modified_since=_text(fields.get(b"if-modified-since")),
        if_unmodified_since=_text(fields.get(b"if-unmodified-since")),
        now=now,
    )


@functools.lru_cache(maxsize=512)
def _preferred_encoding(accept_encoding: bytes, available: tuple[str, ...]) -> str | None:
    """:func:`files.preferred_encoding`, remembered: browsers send few distinct values."""
    return files.preferred_encoding(accept_encoding.decode("latin-1"), available)


def _request_fields(exchange: Exchange) -> dict[bytes, bytes]:
    """The request fields the file rules read, by lower-case name.

    List fields sent on several lines are joined with commas (RFC 9110 5.3).
    :meth:`StaticHandler._send_remembered` gathers them in place (measured: a call
    less on every request for a remembered file): a change here is made there too.
    """
    found: dict[bytes, bytes] = {}
    for name, value in exchange.request.headers:
        lower = name.lower()
        if lower in _WANTED:
            previous = found.get(lower)
            found[lower] = value if previous is None else previous + b", " + value
    return found


def _not_modified_fields(
    headers: Iterable[tuple[bytes, bytes]], options: StaticOptions
) -> list[tuple[bytes, bytes]]:
    """Those of a 200's ``headers`` its 304 repeats (RFC 9110 15.4.5).

    The validators and caching fields, and the mount's own (nginx's add_header goes
    with 304 too).
    """
    configured = {name.lower() for name, _ in options.header_fields}
    return [
        (name, value)
        for name, value in headers
        if name.lower() in _KEPT_ON_304 or name.lower() in configured
    ]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _merge(
    file_headers: list[tuple[bytes, bytes]], app_headers: Sequence[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The application's headers (but those the file replaces) over the file's.

    ``Vary`` is the exception: both lists count (RFC 9110 12.5.5), so a response
    negotiated to a precompressed sibling keeps ``Accept-Encoding`` beside what the
    application's answer varies on.
    """
    kept = [(name, value) for name, value in app_headers if name.lower() not in _REPLACED_BY_FILE]
    app_names = {name.lower() for name, _ in kept}
    merged = kept + [(name, value) for name, value in file_headers if name.lower() not in app_names]
    file_vary = [value for name, value in file_headers if name.lower() == b"vary"]
    if not file_vary or b"vary" not in app_names:
        return merged
    app_vary = [value for name, value in kept if name.lower() == b"vary"]
    listed: dict[bytes, bytes] = {}  # by lower-case token, first spelling kept
    for value in app_vary + file_vary:
        for token in value.split(b","):
            listed.setdefault(token.strip().lower(), token.strip())
    # "*" already says it varies on everything (RFC 9110 12.5.5).
    vary = b"*" if b"*" in listed else b", ".join(token for token in listed.values() if token)
    others = [(name, value) for name, value in merged if name.lower() != b"vary"]
    return [*others, (b"Vary", vary)]
