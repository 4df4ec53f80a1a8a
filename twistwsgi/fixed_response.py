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
  ``$scheme``) is a ``302``.
- Any other status (200-599) and an optional text: the text (with variables) is the
  body, ``text/plain; charset=utf-8`` unless the mount's ``headers`` give a
  ``Content-Type``. A 4xx or 5xx without text is the server's own error answer (the
  host's error page included); another status without text has an empty body.
- ``444``: the connection is closed without a response, as nginx does (the access
  log writes 444).

Variables are those of ``proxy_set_header`` (known before a response): ``$scheme``,
``$host``, ``$request_uri``, ``$uri``, ``$args``, ``$http_NAME`` and the rest. In a
``Location`` a control character a variable brings (a decoded ``%0d%0a`` in
``$uri``) is written ``\xHH``: it cannot end the field.

:func:`parse_return` is pure logic (the configuration's check); :class:`FixedResponse`
answers exchanges.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from twistwsgi.forwarding import TrustedProxies
from twistwsgi.log_format import RequestTemplate
from twistwsgi.routing import answer_error

if TYPE_CHECKING:
    from twistwsgi.http.exchange import Exchange

__all__ = ["CLOSE_WITHOUT_RESPONSE", "REDIRECT_STATUSES", "FixedResponse", "ReturnSpec"]

#: The statuses whose argument is the URL sent in ``Location`` (nginx's list).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

#: Nginx's code for closing the connection without sending anything.
CLOSE_WITHOUT_RESPONSE = 444

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
        # A text with a newline or the like is shown as a quoted string, on one line.
        shown = json.dumps(self.text) if _CONTROL.search(self.text) else self.text
        return f"{self.status} {shown}"


def parse_return(text: str) -> ReturnSpec:
    """Read a return mount's value as nginx reads ``return``'s arguments.

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
        if not first.startswith(("http://", "https://", "$scheme")):
            raise ValueError(f"{text!r} is not a status code or a URL: {_SYNTAX}")
        if rest is not None:
            raise ValueError(f"{text!r}: a URL holds no spaces (encode one as %20)")
        return ReturnSpec(302, _checked(first, field=True))
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
    if status in REDIRECT_STATUSES:
        if rest is None:
            raise ValueError(
                f"{status} needs the URL to redirect to, e.g."
                f" '{status} https://example.com$request_uri'"
            )
        rest = rest.rstrip()
        if re.search(r"\s", rest):
            raise ValueError(f"{rest!r}: a URL holds no spaces (encode one as %20)")
        return ReturnSpec(status, _checked(rest, field=True))
    if rest is not None and status in _NO_CONTENT:
        raise ValueError(f"a {status} response has no content: it takes no text")
    return ReturnSpec(status, None if rest is None else _checked(rest, field=False))


def _checked(template: str, *, field: bool) -> str:
    """``template`` once its variables are known to be request variables."""
    RequestTemplate(template, field=field)
    if field and _CONTROL.search(template):
        raise ValueError(f"{template!r} holds a control character")
    return template


class FixedResponse:
    """Answers every exchange with a return mount's answer.

    The request body is not read: the exchange drops it after the answer (or the
    connection closes), as nginx discards it.
    """

    def __init__(self, spec: ReturnSpec, trusted_proxies: TrustedProxies | None = None) -> None:
        self.spec = spec
        self._status = spec.status
        self._template = (
            None if spec.text is None else RequestTemplate(spec.text, field=spec.redirects)
        )
        self._trusted = trusted_proxies or TrustedProxies(())
        self._reason_body = _reason(spec.status).encode("ascii") + b"\n"

    def handle(self, exchange: Exchange) -> None:
        """Answer ``exchange``."""
        status = self._status
        if status == CLOSE_WITHOUT_RESPONSE:
            exchange.abort()
            return
        template = self._template
        request = exchange.request
        if template is None:
            if status >= 400:
                answer_error(exchange, status, self._reason_body)
            else:
                # Said for HEAD as for GET; never for 204 and 304 (RFC 9110 8.6).
                empty = [] if status in _NO_LENGTH else [(b"Content-Length", b"0")]
                exchange.start_response(status, empty)
                exchange.finish()
            return
        value = template.render(
            request, exchange.remote_user, trusted=self._trusted.trusts_peer(request.peer)
        )
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


def _reason(status: int) -> str:
    """The reason phrase of ``status`` (RFC 9110 15), or the code for one without."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return str(status)


def _sets_content_type(exchange: Exchange) -> bool:
    """Whether the mount's ``headers`` give the answer its ``Content-Type``."""
    route = exchange.route
    return route is not None and any(name.lower() == b"content-type" for name, _ in route.headers)
