r"""Return mounts: a fixed answer for every request under a path (nginx's ``return``).

What nginx users write as ``return 301 https://example.com$request_uri`` (a name
moved), ``return 410`` (a path gone), ``return 200 "ok"`` (a load balancer's health
check) or ``return 444`` (a default host that drops requests for names it does not
serve) is a mount here::

    [[host.mount]]
    path = "/"
    return = "301 https://example.com$request_uri"

The value is nginx's ``return`` arguments in one string, read as nginx reads them
(`ngx_http_rewrite_module <https://nginx.org/en/docs/http/ngx_http_rewrite_module.html#return>`_):

- ``301``, ``302``, ``303``, ``307`` or ``308`` and a URL: a redirect, the URL (with
  variables) in ``Location``. A URL alone (starting with ``http://``, ``https://`` or
  ``$scheme``, also spelled ``${scheme}``) is a ``302``.
- Any other status (200-599) and an optional text: the text (with variables) is the
  body, ``text/plain; charset=utf-8`` unless the mount's ``headers`` give a
  ``Content-Type``. A 4xx or 5xx without text is the server's own error answer (the
  host's error page included); another status without text has an empty body.
- ``444``: the connection is closed without a response, as nginx does (the access
  log writes 444).

Variables are those of ``proxy_set_header`` (known before a response): ``$scheme``,
``$host``, ``$request_uri``, ``$uri``, ``$args``, ``$http_NAME`` and the rest. In a
``Location`` a control character a variable brings (a decoded ``%0d%0a`` in
``$uri``) is percent-encoded (``%0D%0A``): it cannot end the field.

A regular-expression mount's value may also use the pattern's captures (``301
https://example.com/new/$1``), read and encoded by :mod:`twistwsgi.captures`: in a
``Location`` a capture is percent-encoded for its place and may not come before the
URL's path, so no request chooses the site it is sent to; in a body it goes as it is.

:func:`parse_return` is pure logic (the configuration's check); :class:`FixedResponse`
answers exchanges.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twistwsgi.captures import CaptureTemplate, Groups, has_captures
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.log_format import RequestTemplate
from twistwsgi.routing import answer_error, error_body
from twistwsgi.templates import starts_with_scheme

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = [
    "CLOSE_WITHOUT_RESPONSE",
    "NGINX_ESCAPES",
    "REDIRECT_STATUSES",
    "FixedResponse",
    "ReturnSpec",
    "check_captures",
    "parse_return",
]

#: The statuses whose argument is the URL sent in ``Location`` (nginx's list).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Nginx's code for closing the connection without sending anything.
CLOSE_WITHOUT_RESPONSE = 444

_UPGRADE_REQUIRED = 426

#: Statuses whose response has no content (RFC 9110 15.3.5, 15.3.6, 15.4.5).
_NO_CONTENT = frozenset({204, 205, 304})

_SYNTAX = (
    "expected CODE [TEXT], CODE URL for 301, 302, 303, 307 and 308, or a URL (a 302),"
    " e.g. '301 https://example.com$request_uri' or '200 ok'"
)
#: Statuses sent without Content-Length (RFC 9110 8.6): no 200 stands behind them.
_NO_LENGTH = frozenset({204, 304})
_PLAIN_TEXT = b"text/plain; charset=utf-8"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ReturnSpec:
    """A return mount's answer, checked.

    Attributes:
        status: the status code, or 444 to close without a response.
        text: the URL of a redirect, or the body of another status (with
            ``$variables``); ``None`` when none was given.
    """

    status: int
    text: str | None = None

    @property
    def redirects(self) -> bool:
        """Whether the answer is a redirect (its text is the ``Location``)."""
        return self.status in REDIRECT_STATUSES

    def __str__(self) -> str:
        if self.text is None:
            return str(self.status)
        return f"{self.status} {_quoted(self.text)}"


def parse_return(text: str, *, check_variables: bool = True) -> ReturnSpec:
    """Read a return mount's value as nginx reads ``return``'s arguments.

    Args:
        text: the value.
        check_variables: check its ``$`` references as a mount without a pattern's
            (request variables only); off, they are left to
            :func:`check_captures`, which knows the mount's pattern.

    Raises:
        ValueError: saying what is wrong (an unknown variable included).
    """
    # The status, then one run of whitespace, then the rest as written: a body's
    # text keeps its own spaces and last newline ("200 ok\n").
    match = re.fullmatch(r"\s*(\S+)(?:\s+(.*))?", text, re.DOTALL)
    if match is None:
        raise ValueError(f"is empty: {_SYNTAX}")
    first, rest = match.group(1), match.group(2) or None
    if not first.isdigit():
        # nginx: "return URL" when the URL starts with one of these; a 302.
        alone = _unquoted(first)
        if not alone.startswith(("http://", "https://")) and not starts_with_scheme(alone):
            raise ValueError(f"{text!r} is not a status code or a URL: {_SYNTAX}")
        if rest is not None:
            raise ValueError(f"{text!r}: a URL holds no spaces (encode one as %20)")
        return ReturnSpec(302, _checked(alone, url=True, check=check_variables))
    status = int(first) if first.isascii() and len(first) == 3 else 0
    if status == CLOSE_WITHOUT_RESPONSE:
        if rest is not None:
            raise ValueError("444 closes the connection without a response: it takes no text")
        return ReturnSpec(status)
    if not 200 <= status <= 599:
        raise ValueError(
            f"{first!r} is not a status to return: 200-599, or 444 to close the"
            " connection without a response"
        )
    if status == _UPGRADE_REQUIRED:
        # RFC 9110 15.5.22: a 426 must name the protocols in Upgrade, a field the
        # server keeps to itself.
        raise ValueError("426 must be sent with Upgrade, which a return mount cannot send")
    if status in REDIRECT_STATUSES:
        url = None if rest is None else rest.rstrip()
        if url is not None and re.search(r"\s", url):
            raise ValueError(f"{url!r}: a URL holds no spaces (encode one as %20)")
        url = None if url is None else _unquoted(url)
        if not url:
            # ('301 ""' too: an empty Location sends the client nowhere.)
            raise ValueError(
                f"{status} needs the URL to redirect to, e.g."
                f" '{status} https://example.com$request_uri'"
            )
        return ReturnSpec(status, _checked(url, url=True, check=check_variables))
    if rest is not None and status in _NO_CONTENT:
        raise ValueError(f"a {status} response has no content: it takes no text")
    return ReturnSpec(
        status,
        None if rest is None else _checked(_unquoted(rest), url=False, check=check_variables),
    )


#: nginx's escapes in a word of its configuration (ngx_conf_read_token), by the
#: character after the backslash.
NGINX_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _unquoted(text: str) -> str:
    r"""``text`` without the quotes nginx's configuration puts around an argument.

    ``'301 "https://example.com$request_uri"'`` and ``'200 "ok\n"'`` copied from an
    nginx file read as nginx reads them: one pair of matching quotes taken off, and
    inside them its escapes (``\"``, ``\'``, ``\\``, ``\n``, ``\r``, ``\t``).
    """
    stripped = text.rstrip()
    if len(stripped) < 2 or stripped[0] not in "\"'" or stripped[-1] != stripped[0]:
        return text
    quote = stripped[0]
    if re.fullmatch(rf"{quote}(?:[^{quote}\\]|\\.)*{quote}", stripped, re.DOTALL) is None:
        raise ValueError(
            f"{text!r}: one quoted text only (nginx's return takes one argument after its status)"
        )
    return re.sub(r"\\([\"'\\nrt])", lambda match: NGINX_ESCAPES[match.group(1)], stripped[1:-1])


def _quoted(text: str) -> str:
    """``text`` as it reads back: quoted nginx's way when it must be (else as it is).

    A text with a line break, spaces at an end, or quotes around it is shown quoted,
    on one line (``--check-config``); other controls, which nginx cannot escape,
    as JSON does.
    """
    if text and text.strip() == text and not _CONTROL.search(text) and _unquoted(text) == text:
        return text
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text):
        return json.dumps(text, ensure_ascii=False)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _checked(template: str, *, url: bool, check: bool = True) -> str:
    """``template`` once its variables are known to be request variables (``check``)."""
    if check:
        CaptureTemplate(template, None, url=url)
    if _CONTROL.search(template if url else template.translate(_LINE_BREAKS)):
        # (A text keeps its tabs and line breaks; nginx cannot write other controls.)
        raise ValueError(f"{template!r} holds a control character")
    return template


_LINE_BREAKS = str.maketrans("", "", "\t\n\r")


class FixedResponse:
    """Answers every exchange with a return mount's answer.

    The request is answered from its head, its body not read: no body limit
    refuses it first (see :func:`twistwsgi.site._body_limit`), and an answer sent
    before the body came in whole closes the connection (the protocol's rule for
    :data:`~twistwsgi.http.request.UNREAD_BODY`); one whose body had come in with
    its head keeps it.
    """

    def __init__(
        self,
        spec: ReturnSpec,
        trusted_proxies: TrustedProxies | None = None,
        *,
        captured: CaptureTemplate | None = None,
    ) -> None:
        self.spec = spec
        # The text with the captures of a regular-expression mount, if it uses them
        # (check_captures): the route then holds the match (CapturedRoute).
        self._captured = captured
        self._status = spec.status
        self._template = (
            None
            if spec.text is None or captured is not None
            else RequestTemplate(spec.text, escape="url" if spec.redirects else "none")
        )
        self._trusted = trusted_proxies or TrustedProxies(())
        self._reason_body = error_body(spec.status)

    def handle(self, exchange: Exchange) -> None:
        """Answer ``exchange``."""
        status = self._status
        if status == CLOSE_WITHOUT_RESPONSE:
            exchange.abort()
            return
        template = self._template
        captured = self._captured
        request = exchange.request
        if template is None and captured is None:
            if status >= 400:
                answer_error(exchange, status, self._reason_body)
            else:
                # Said for HEAD as for GET; never for 204 and 304 (RFC 9110 8.6).
                empty = [] if status in _NO_LENGTH else [(b"Content-Length", b"0")]
                exchange.start_response(status, empty)
                exchange.finish()
            return
        if captured is not None:
            route = exchange.route
            value = captured.render(
                None if route is None else route.captures,
                request,
                exchange.remote_user,
                proxies=self._trusted,
            )
        else:
            assert template is not None
            value = template.render(request, exchange.remote_user, proxies=self._trusted)
        if self.spec.redirects:
            fields = [(b"Location", value), (b"Content-Type", _PLAIN_TEXT)]
            body = self._reason_body
        else:
            fields = [] if _sets_content_type(exchange) else [(b"Content-Type", _PLAIN_TEXT)]
            body = value
        fields.append((b"Content-Length", b"%d" % len(body)))
        exchange.start_response(status, fields)
        # (The exchange sends no body to HEAD, RFC 9110 9.3.2; the fields stay.)
        exchange.finish(body)


def check_captures(spec: ReturnSpec, groups: Groups | None) -> CaptureTemplate | None:
    """Check a return mount's text against its pattern's groups (``None``: no pattern).

    Returns the text as a :class:`~twistwsgi.captures.CaptureTemplate` when it uses
    captures, else ``None`` (its variables checked).

    Raises:
        ValueError: for a capture the mount has not, an unknown variable, a capture
            before a redirect URL's path.
    """
    if spec.text is None:
        return None
    template = CaptureTemplate(spec.text, groups, url=spec.redirects)
    return template if has_captures(spec.text, groups) else None


def _sets_content_type(exchange: Exchange) -> bool:
    """Whether the mount's ``headers`` give the answer its ``Content-Type``."""
    route = exchange.route
    return route is not None and any(name.lower() == b"content-type" for name, _ in route.headers)
