"""The rewriting of an upstream's ``Location`` and ``Refresh`` (nginx's proxy_redirect).

An upstream that builds an absolute URL from its own address (``Location:
http://127.0.0.1:9000/login``, from its settings, or from the ``Host`` it was sent
with ``preserve_host = false``) or from the path it was given (mounted at ``/app``
with ``http://127.0.0.1:9000/``, it sends ``http://127.0.0.1:9000/login`` for
``/app/login``) would send the client where it cannot go. A proxy mount rewrites
such a URL in ``Location`` and ``Refresh`` as nginx's ``proxy_redirect`` does:

- ``default`` (nginx's default too): for each upstream of the mount, a URL that
  starts with the upstream's URL becomes a path below the mount. With an upstream
  URL that has a path (``http://u:9000/v2``: the mount's prefix is replaced by
  ``/v2``), ``http://u:9000/v2/login`` becomes ``/app/login``; with one that has
  none (the request's path passed unchanged), ``http://u:9000/app/login`` becomes
  ``/app/login``. As the path mapping, on segment boundaries (``http://u:9000/v2x``
  is left alone); the scheme and host are compared without case (RFC 3986 6.2.2.1).
  A URL that names another host (the client's, with ``preserve_host``) or a
  relative one (``/login``) is left as it is, as nginx leaves it.
- ``off``: the fields pass unchanged.
- A table of prefixes and replacements (nginx's ``proxy_redirect FROM TO``, in
  order, the first that matches wins; the default is then not applied): a value
  that starts with FROM has it replaced by TO, which may hold the request variables
  of ``proxy_set_header`` (``$scheme://$host/app/``). ``{ "/" = "/app/" }`` puts a
  stripped prefix back on the relative URLs of an upstream mounted below ``/app``.

In ``Refresh`` (``5; url=http://...``), the URL after ``url=`` is the one rewritten.

Pure logic: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from twistwsgi.forwarding import TrustedProxies, UpstreamAddress
from twistwsgi.log_format import RequestTemplate

if TYPE_CHECKING:
    from twistwsgi.http.request import RequestHead

__all__ = ["DEFAULT", "OFF", "RedirectRewrite", "redirect_rewrite"]

#: The two words ``proxy_redirect`` takes besides a table.
DEFAULT = "default"
OFF = "off"

#: Where a ``Refresh`` value's URL starts: after ``url=`` (any case, spaces allowed)
#: and the quote it may open.
_REFRESH_URL = re.compile(rb"url\s*=\s*(['\"]?)", re.IGNORECASE)

#: The lengths of "Location" and "Refresh".
_NAME_LENGTHS = frozenset({7, 8})

#: What may follow the end of a matched prefix: the end of a path segment.
_SEGMENT_ENDS = (b"/", b"?", b"#")


class _UpstreamRule:
    """The default rule for one upstream: its URL becomes the mount's path."""

    __slots__ = ("authorities", "mount_path", "passes_path", "path")

    def __init__(self, address: UpstreamAddress, mount_path: bytes) -> None:
        scheme = b"http" if address.scheme == "unix" else address.scheme.encode("ascii")
        # (The host is lower case already: urlsplit's hostname.) With and without
        # the scheme's default port, which names the same server (RFC 3986 6.2.3).
        authority = scheme + b"://" + address.host_field
        default_port = b":443" if scheme == b"https" else b":80"
        if address.host_field.endswith(b"]") or b":" not in address.host_field:
            self.authorities: tuple[bytes, ...] = (authority, authority + default_port)
        else:
            self.authorities = (authority,)
        # The upstream URL's path without its last "/" (b"" for "/"), or None when
        # the request's path is passed unchanged.
        self.passes_path = address.prefix is None
        self.path = b"" if address.prefix is None else address.prefix.rstrip(b"/")
        self.mount_path = mount_path

    def apply(self, url: bytes) -> bytes | None:
        for authority in self.authorities:
            if url[: len(authority)].lower() == authority:
                rest = url[len(authority) :]
                if not rest.startswith(b":"):  # (http://u, not http://u:8080)
                    return self._below(rest)
        return None

    def _below(self, rest: bytes) -> bytes | None:
        """The mount's URL for ``rest``, what follows the upstream's authority."""
        path = self.path
        if path:
            if not rest.startswith(path):
                return None
            rest = rest[len(path) :]
        if rest and not rest.startswith(_SEGMENT_ENDS):
            return None  # another name (http://u:90001, http://u:9000/v2x)
        if self.passes_path:
            return rest if rest.startswith(b"/") else b"/" + rest
        if not rest.startswith(b"/") and not path:
            # The upstream's root ("http://u:9000", "http://u:9000?x") is the mount's.
            rest = b"/" + rest
        rewritten = self.mount_path + rest
        return rewritten if rewritten.startswith(b"/") else b"/" + rewritten


class RedirectRewrite:
    """A proxy mount's rewriting of ``Location`` and ``Refresh`` (see the module).

    Args:
        upstreams: the default rule's upstreams (empty with a table).
        mount_path: the mount's path as a URL writes it (percent-encoded), ``b""``
            for the root.
        pairs: a table's prefixes and replacements, in order.
    """

    def __init__(
        self,
        upstreams: Sequence[UpstreamAddress] = (),
        mount_path: bytes = b"",
        pairs: Sequence[tuple[str, str]] = (),
    ) -> None:
        rules = [_UpstreamRule(address, mount_path) for address in upstreams]
        # Two upstreams on one server: the one with the longer path first, so
        # http://u/v2/x is not read as http://u/ + v2/x (no path at all: last).
        rules.sort(key=lambda rule: (rule.passes_path, -len(rule.path)))
        self._rules = rules
        self._pairs = [
            (source.encode("utf-8"), RequestTemplate(replacement, escape="url"))
            for source, replacement in pairs
        ]

    def location(
        self,
        url: bytes,
        request: RequestHead,
        remote_user: str | None,
        trusted_proxies: TrustedProxies,
    ) -> bytes:
        """``url`` (a ``Location`` value) rewritten, or as it was when no rule matches."""
        for rule in self._rules:
            rewritten = rule.apply(url)
            if rewritten is not None:
                return _not_another_host(rewritten)
        for source, replacement in self._pairs:
            if url.startswith(source):
                start = replacement.render(request, remote_user, proxies=trusted_proxies)
                return _not_another_host(start + url[len(source) :])
        return url

    def refresh(
        self,
        value: bytes,
        request: RequestHead,
        remote_user: str | None,
        trusted_proxies: TrustedProxies,
    ) -> bytes:
        """A ``Refresh`` value with its URL rewritten as :meth:`location` does."""
        found = _REFRESH_URL.search(value)
        if found is None:
            return value
        start = found.end()
        url, end = value[start:], b""
        quote = found.group(1)
        if quote and url.endswith(quote):
            url, end = url[:-1], quote  # ('http://u:9000': the closing quote kept apart)
        return value[:start] + self.location(url, request, remote_user, trusted_proxies) + end

    def fields(
        self,
        fields: list[tuple[bytes, bytes]],
        request: RequestHead,
        remote_user: str | None,
        trusted_proxies: TrustedProxies,
    ) -> None:
        """Rewrite every ``Location`` and ``Refresh`` of ``fields``, in place."""
        for index, (name, value) in enumerate(fields):
            # Only names of those lengths are lower-cased and compared.
            if len(name) in _NAME_LENGTHS:
                lower = name.lower()
                if lower == b"location":
                    fields[index] = (
                        name,
                        self.location(value, request, remote_user, trusted_proxies),
                    )
                elif lower == b"refresh":
                    fields[index] = (
                        name,
                        self.refresh(value, request, remote_user, trusted_proxies),
                    )


def _not_another_host(url: bytes) -> bytes:
    r"""``url``, kept from being read as another host's (scheme-relative) URL.

    An upstream's ``http://u:9000//evil.example/x`` named the upstream; rewritten to a
    path on a mount at ``/`` it would be ``//evil.example/x``, another host for the
    client. Browsers also read ``/\`` as ``//`` and skip tabs and line breaks. Such a
    path gets ``/.`` in front: the same path on this host (RFC 3986 5.2.4).
    """
    if url[:1] == b"/":
        bare = url.translate(None, b"\t\r\n")
        if bare[1:2] in (b"/", b"\\"):
            return b"/." + url
    return url


def redirect_rewrite(
    setting: str | Sequence[tuple[str, str]], mount_path: str, upstreams: Sequence[UpstreamAddress]
) -> RedirectRewrite | None:
    """The rewriting a mount's ``proxy_redirect`` asks for, or ``None`` for ``off``.

    Args:
        setting: ``"default"``, ``"off"``, or the table's (prefix, replacement) pairs.
        mount_path: the mount's path as configured (``/app``, ``/``).
        upstreams: the mount's upstreams.
    """
    if setting == OFF:
        return None
    if setting == DEFAULT:
        encoded = quote(mount_path.rstrip("/"), safe="/!$&'()*+,;=:@-._~").encode("ascii")
        return RedirectRewrite(upstreams, encoded)
    assert not isinstance(setting, str)
    return RedirectRewrite(pairs=setting)
