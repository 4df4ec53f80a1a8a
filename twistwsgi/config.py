"""Every setting of the server, declared once, and the validated :class:`ServerConfig`.

Each :class:`Setting` declares a name, a kind (which parses command-line text and
checks config-file values), a default and the help text. Three tables of them exist:
:data:`SETTINGS` (the command line and the ``[server]`` table of a config file, where
the command-line-only ``config``, ``check_config`` and ``vhost`` are unknown keys),
:data:`HOST_KEYS` (``[[host]]``) and :data:`MOUNT_KEYS` (``[[host.mount]]``). The
command line (``twistd wsgi --threads 16``) and the reference documentation are
generated from these declarations, so the three cannot drift apart.

Validation errors are :class:`ConfigError` values naming where the bad value came
from (``--threads``, ``site.toml: host[1].mount[0].static``) and what is wrong with
it, in one line; the CLI prints that line and exits with status 2.

Pure logic: no Twisted import. Endpoint strings are only checked for shape here, and
applications are not imported; the layer that builds the server does both and reports
a failure through the same error, with the key path kept in :attr:`MountConfig.where`.
"""

from __future__ import annotations

import ast
import ipaddress
import math
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from twistwsgi.balancing import NO_BACKUP_POLICIES, parse_balance
from twistwsgi.captures import (
    CaptureTemplate,
    FileTemplate,
    Groups,
    capture_numbers,
    first_reference,
    fixed_directory,
    has_captures,
    request_variable,
    split_captures,
    split_upstream_url,
)
from twistwsgi.client_certificates import load_client_cas, load_revocation_lists
from twistwsgi.files import content_type
from twistwsgi.fixed_response import ReturnSpec, check_captures, parse_return
from twistwsgi.forwarding import DEFAULT_HIDDEN, parse_upstream
from twistwsgi.http.compression import DEFAULT_TYPES as DEFAULT_GZIP_TYPES
from twistwsgi.http.request import ErrorPage
from twistwsgi.http.rules import (
    HOP_BY_HOP,
    TOKEN,
    claimed_names,
    compile_host_pattern,
    compile_location_pattern,
    ipv6_literal,
    normalize_name,
)
from twistwsgi.http.settings import HttpSettings
from twistwsgi.log_format import ESCAPES, LogFormat, RequestTemplate
from twistwsgi.proxy_cookies import parse_flags
from twistwsgi.response_spool import MAX_RESPONSE_BUFFER
from twistwsgi.rewrite import RewriteRule, parse_rewrite
from twistwsgi.templates import cut_at

__all__ = [
    "HOST_KEYS",
    "MOUNT_KEYS",
    "SETTINGS",
    "AppSpec",
    "ConfigError",
    "HostConfig",
    "MountConfig",
    "ServerConfig",
    "Setting",
    "Upstream",
    "VhostSpec",
    "build_config",
    "check_proxy_options",
    "default_options",
    "host_verification",
    "mount_or_server",
    "parse_app_spec",
    "read_config_file",
]


class ConfigError(Exception):
    """A setting that cannot be used, with where it came from.

    Attributes:
        where: the flag or key path, e.g. ``--threads`` or ``site.toml: server.threads``.
        problem: what is wrong, as a short sentence fragment.
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class Kind:
    """How one type of setting is parsed from text and checked as a value.

    Attributes:
        name: shown in help and docs (``INT``, ``SIZE``, ...).
        parse: turns command-line text (or a config-file value) into the value;
            raises ``ValueError`` with a readable message.
        description: one line for the reference documentation.
    """

    name: str
    parse: Callable[[Any], Any]
    description: str


def _whole_number(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not re.fullmatch(r"[0-9]+", text):
            raise ValueError(f"expected a whole number, got {value!r}")
        number = int(text)
    if number < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return number


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected a size >= 0, got {value!r}")
        return value
    match = re.fullmatch(r"\s*([0-9]+)\s*([kKmMgG]?)[bB]?\s*", str(value))
    if match is None:
        raise ValueError(f"expected a size such as 8192, 64k, 10m or 1g, got {value!r}")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def _duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"expected a duration, got a number too large: {value!r}") from None
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*", str(value))
        if match is None:
            raise ValueError(f"expected a duration such as 30, 30s, 500ms or 5m, got {value!r}")
        seconds = float(match[1]) * _DURATION_UNITS[match[2] or ""]
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {value!r}")
    if seconds < 0:
        raise ValueError(f"expected a duration >= 0, got {value!r}")
    return seconds


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _one_or_list(value: Any, expected: str, *, required: bool = False) -> Sequence[Any]:
    """One string, or a list of values (a TOML array or a flag given several times).

    Args:
        value: as given.
        expected: what the setting takes, for the error (``"a list of file names"``).
        required: an empty list is refused too.

    Raises:
        ValueError: ``expected ..., got ...``.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or (required and not items):
        raise ValueError(f"expected {expected}, got {value!r}")
    return items


def _endpoint(value: Any) -> str:
    text = _text(value).strip()
    if not text or ":" not in text:
        raise ValueError(
            f"expected a Twisted endpoint string such as tcp:8080 or unix:/run/app.sock,"
            f" got {value!r}"
        )
    try:
        _check_listener(text)
    except ValueError as error:
        raise _ItemError(text, str(error)) from None
    return text


#: The longest path a UNIX socket is bound at: Linux's sun_path holds 108 bytes, the
#: last of them the NUL that ends the path.
MAX_UNIX_PATH = 107

#: The endpoint kinds that listen on a TCP port (Twisted's names).
_PORT_KINDS = ("tcp", "tcp6", "ssl")

#: Where the positional interface parameter comes, by kind (Twisted's parsers).
_INTERFACE_POSITION = {"tcp": 1, "ssl": 4}


def _check_listener(text: str) -> None:
    r"""Refuse an endpoint string that could not listen, for a reason known now.

    It would otherwise fail only when the server listens, which --check-config never
    does, and in Twisted's terms: a backlog that is not a number said as the port's
    fault, an IPv6 interface's unescaped colons as a keyword given twice.

    Raises:
        ValueError: saying what is wrong.
    """
    if _has_control(text):
        # (A NUL in a file name fails in open(); Twisted quotes a newline unescaped.)
        raise ValueError("holds a control character")
    inner = proxy_protocol_inner(text)
    if inner is not None and proxy_protocol_inner(inner) is not None:
        raise ValueError(
            "haproxy: wraps an endpoint of another kind (a connection opens with one PROXY header)"
        )
    kind, positional, named = endpoint_parts(text)
    if kind in _PORT_KINDS:
        interface = named.get("interface")
        if (
            interface is not None
            and len(positional) > 1
            and re.fullmatch("[0-9a-fA-F]{0,4}", interface)
        ):
            # (tcp:8080:interface=::1 is split at each colon.)
            raise ValueError(
                r"the colons of an IPv6 interface= are escaped with \ (interface=\:\:1)"
            )
        port = _first_parameter(positional, named, "port")
        number = _integer(port)
        if number is not None and not 0 <= number <= 65535:
            raise ValueError(f"a port is 0 to 65535, got {port!r}")
        backlog = named.get(
            "backlog", positional[2] if kind == "tcp" and len(positional) > 2 else None
        )
        count = 0 if backlog is None else _integer(backlog)
        if count is None or count < 0:
            raise ValueError(f"backlog= is a whole number, got {backlog!r}")
    elif kind == "unix":
        path = _first_parameter(positional, named, "address")
        size = len(os.fsencode(path))
        if size > MAX_UNIX_PATH:
            raise ValueError(f"a UNIX socket path is at most {MAX_UNIX_PATH} bytes, got {size}")
        directory = os.path.dirname(path)
        if os.path.isabs(path) and not os.path.isdir(directory):
            raise ValueError(f"no directory {directory!r} to put the socket in")


def _integer(text: str | None) -> int | None:
    """``text`` read as Twisted reads a number parameter (``int()``), else None."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _listener_address(description: str) -> tuple[str, ...] | None:
    """Where an endpoint string listens, alike for two spellings of one address.

    ``tcp:8080``, ``tcp:port=8080`` and ``ssl:8080:interface=0.0.0.0:...`` give one;
    ``unix:/run/app.sock`` and ``haproxy:unix:/run//app.sock`` another. ``None`` where
    the string does not tell (``systemd:``, port 0, a port that is not a number).
    """
    kind, positional, named = endpoint_parts(description)
    if kind == "unix":
        path = _first_parameter(positional, named, "address")
        return ("unix", os.path.normpath(path)) if path else None
    if kind not in _PORT_KINDS:
        return None
    port = _integer(_first_parameter(positional, named, "port"))
    if not port:
        return None
    position = _INTERFACE_POSITION.get(kind)
    interface = named.get("interface")
    if interface is None and position is not None and len(positional) > position:
        interface = positional[position]
    interface = (interface or "").strip() or ("::" if kind == "tcp6" else "0.0.0.0")
    try:
        interface = str(ipaddress.ip_address(interface))
    except ValueError:
        interface = interface.lower()
    return ("inet", interface, str(port))


def _endpoints(value: Any) -> tuple[str, ...]:
    items = _one_or_list(value, "one endpoint string or a list of them", required=True)
    endpoints = tuple(_endpoint(item) for item in items)
    for index, endpoint in enumerate(endpoints):
        # The second listen would fail as "address already in use", which reads like
        # another process holding the port.
        if endpoint in endpoints[:index]:
            raise ValueError(f"{endpoint!r} is given twice")
        address = _listener_address(endpoint)
        for earlier in endpoints[:index]:
            if address is not None and _listener_address(earlier) == address:
                raise _ItemError(endpoint, f"listens where {earlier!r} does: give the address once")
    return endpoints


def _access_log(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("expected a path, '-' for stdout, or 'off'")
    if "\x00" in text:
        # (The open at start-up would raise ValueError, as no file can be named so.)
        raise ValueError(f"{text!r}: a path holds no NUL")
    return text


def _app(value: Any) -> str:
    text = _text(value).strip()
    parse_app_spec(text)
    return text


INT = Kind("INT", _whole_number, "a whole number, 0 or more")

#: Most worker threads: far past any useful size, and below what a process can start
#: (each thread reserves a stack; a typo of a few zeros must not reach thread start-up).
MAX_THREADS = 1024


def _thread_count(value: Any) -> int:
    number = _whole_number(value)
    if number > MAX_THREADS:
        raise ValueError(f"expected at most {MAX_THREADS} threads, got {value!r}")
    return number


THREADS = Kind("THREADS", _thread_count, f"a whole number from 0 to {MAX_THREADS}")

#: Most worker processes: each holds a copy of the application, so far more than a
#: machine's cores only costs memory; a typo of a few zeros must not fork thousands.
MAX_WORKERS = 256


def _worker_count(value: Any) -> int:
    """A number of worker processes (0: none), or ``auto``: one per CPU this process may use.

    ``auto`` is nginx's ``worker_processes auto``; the CPUs counted are those of the
    process's affinity mask (a container's cpuset), not of the whole machine.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    number = _whole_number(value)
    if not 0 <= number <= MAX_WORKERS:
        raise ValueError(f"expected auto or a whole number from 0 to {MAX_WORKERS}, got {value!r}")
    return number


WORKERS = Kind("WORKERS", _worker_count, f"auto, or a whole number from 0 to {MAX_WORKERS}")
SIZE = Kind("SIZE", _size, "bytes, 0 or more, with an optional k, m or g suffix (powers of 1024)")
DURATION = Kind(
    "SECONDS",
    _duration,
    "seconds, 0 or more, or a number with ms, s, m or h (e.g. 500ms, 30s, 5m)",
)
TEXT = Kind("TEXT", _text, "a string")
ENDPOINT = Kind("ENDPOINT", _endpoints, "a Twisted server endpoint string")
ONE_ENDPOINT = Kind("ENDPOINT", _endpoint, "a Twisted server endpoint string")
ACCESS_LOG = Kind("LOG", _access_log, "a file path, - for stdout, or off")
APP = Kind(
    "MODULE:NAME",
    _app,
    "module:name, or module:factory(args) to call a factory; module alone is module:application",
)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _https_redirect(value: Any) -> str | int:
    """``"on"``, ``"off"``, or the port clients reach TLS on."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if isinstance(value, int) or re.fullmatch("[0-9]+", text):
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError(f"a port is 1 to 65535, got {value!r}")
        return port
    try:
        return "on" if _boolean(text) else "off"
    except ValueError:
        raise ValueError(f"expected on, off or a port number, got {value!r}") from None


_HOST_LABELS = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
# A name, *.name or .name (nginx's short form of name and *.name), name.* (nginx's
# wildcard at the end), or an IPv6 literal; an asterisk only on a dot border, and
# not at both ends (nginx refuses *.example.* too).
_HOST_NAME = re.compile(rf"(?:\*\.|\.)?{_HOST_LABELS}\.?|{_HOST_LABELS}\.\*|\[[0-9a-f:.]+\]")


def _host_names(value: Any) -> tuple[str, ...]:
    items = _one_or_list(value, "a list of host names", required=True)
    names = []
    for item in items:
        text = item.strip().lower() if isinstance(item, str) else ""
        if text.startswith("~"):
            compile_host_pattern(item.strip()[1:])  # (a ValueError saying why)
            names.append(item.strip())
            continue
        if text.startswith("[") and "%" in text:
            raise ValueError(f"{item!r}: an IPv6 zone identifier cannot be part of a host name")
        if not _HOST_NAME.fullmatch(text):
            raise ValueError(
                f"{item!r} is not a host name (example.com, *.example.org, .example.org,"
                " mail.*, ~REGEX or [::1])"
            )
        if text.startswith("[") and ipv6_literal(text) is None:
            raise ValueError(f"{item!r} is not an IPv6 address in brackets (such as [::1])")
        names.append(item.strip())
    return tuple(names)


def _mount_path(value: Any) -> str:
    text = _text(value).strip()
    if text.startswith(LOCATION_MODIFIERS):
        raise ValueError(f"{text!r}: {_NOT_A_PLAIN_PREFIX}")
    if not text.startswith("/"):
        raise ValueError(f"a mount path starts with /, got {value!r}")
    segments = text.split("/")[1:]
    if "." in segments or ".." in segments or "" in segments[:-1]:
        raise ValueError(f"a mount path has no empty, . or .. segments, got {value!r}")
    if any(char in "?#%\\" or _invisible(char) for char in text):
        raise ValueError(
            f"a mount path is a plain path (no spaces, control characters, ?, #, % or \\),"
            f" got {value!r}"
        )
    return text.rstrip("/") or "/"


#: What may begin a mount path in the configuration file, as nginx's ``location``.
LOCATION_MODIFIERS = ("=", "^~", "~")
_MODIFIERS = frozenset(("=", "^~", "~", "~*"))

_NOT_A_PLAIN_PREFIX = (
    "exact (=), ^~ and regular-expression (~, ~*) mount paths are for the configuration"
    " file's [[host.mount]] path; here a path is a plain prefix"
)


def _location(value: Any) -> tuple[str, str]:
    r"""A mount path as nginx's ``location`` writes it: ``(modifier, path or pattern)``.

    ``/p`` (a prefix), ``^~ /p`` (a prefix that, when it is the longest, stops the
    regular expressions from being tried), ``= /p`` (that path alone), ``~ REGEX``
    and ``~* REGEX`` (without case). As nginx, the space is optional after ``=``,
    ``~`` and ``~*`` (``~*\.png$``), and needed after ``^~`` (nginx reads ``^~/p``
    as a prefix of that name, which no request path starts with).
    """
    text = _text(value).strip()
    words = text.split(None, 1)
    if len(words) == 2 and text.startswith(LOCATION_MODIFIERS) and words[0] not in _MODIFIERS:
        # As nginx reads "location ~~ x": of two words, the first is the modifier.
        raise ValueError(f"{text!r}: {words[0]!r} is not a modifier (=, ^~, ~ or ~*)")
    if text.startswith("^~"):
        rest = text[2:]
        if not rest[:1].isspace():
            raise ValueError(f"{text!r}: ^~ is followed by a space, then the prefix (^~ /media)")
        if rest.strip().startswith(LOCATION_MODIFIERS):
            # (Else _mount_path would say the forms are for the file: this is the file.)
            raise ValueError(f"{text!r}: ^~ is followed by a plain prefix, not another modifier")
        return "^~", _mount_path(rest)
    if text.startswith("="):
        return "=", _exact_path(text[1:])
    if text.startswith("~"):
        modifier = "~*" if text.startswith("~*") else "~"
        pattern = text[len(modifier) :].strip()
        if not pattern:
            raise ValueError(f"{text!r}: a regular expression follows {modifier}")
        compile_location_pattern(pattern, caseless=modifier == "~*")  # (a ValueError: why)
        return modifier, pattern
    return "", _mount_path(text)


def _exact_path(value: str) -> str:
    """The path of an exact mount (``= /p``): as a prefix's, its trailing slash kept.

    ``= /docs/`` takes ``/docs/`` and not ``/docs``, as nginx compares the whole URI.
    """
    text = value.strip()
    if not text.startswith("/"):
        raise ValueError(f"an exact mount path (= /path) starts with /, got {value.strip()!r}")
    plain = _mount_path(text)
    return plain + "/" if text.endswith("/") and plain != "/" else plain


def _invisible(char: str) -> bool:
    """A space, a control or format character: nothing a URL shows as typed.

    Characters this Python's Unicode tables do not know yet (a newer emoji) pass.
    """
    return char <= " " or unicodedata.category(char) in _INVISIBLE_CATEGORIES


_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def _directory(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("expected a directory")
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        _refuse_captures(text)
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise ValueError(f"directory {text!r} {what}")
    return path


def _refuse_captures(text: str) -> None:
    """Say that ``text`` uses a capture where there is none (a plain prefix's setting).

    Raises:
        ValueError: naming the capture, when ``text`` uses one.
    """
    split_captures(text, None)


def _refuse_variables(url: str) -> None:
    """Say that a plain prefix's upstream URL has a request variable in its path.

    nginx expands it (``proxy_pass`` with variables); a prefix's upstream path is a
    prefix, sent as written: it would go out as ``$uri``. A ``$`` that names no
    variable (OData's ``$metadata``) is a name and stays.

    Raises:
        ValueError: naming the variable.
    """
    variable = request_variable(split_upstream_url(url)[1])
    if variable is not None:
        raise ValueError(
            f"{url!r}: {variable} would be sent as written: variables go in a"
            " regular-expression mount's upstream path, which is then the whole target"
            " (path = '~ ^/p/')"
        )


def _mount_directory(value: Any) -> str:
    """A mount's ``static``: an existing directory, or one with captures (``/srv/$1``).

    With a ``$`` reference and no directory of that name, the part before the first
    one, cut at its last ``/``, must be an existing directory; the rest is kept as
    written (its captures are checked against the mount's pattern by ``_mount``).
    """
    text = _text(value).strip()
    start = first_reference(text)
    if start is None or os.path.isdir(os.path.expanduser(text)):
        return _directory(value)
    head = fixed_directory(text[:start], text)
    fixed = os.path.abspath(os.path.expanduser(head))
    if not os.path.isdir(fixed):
        what = "is not a directory" if os.path.exists(fixed) else "does not exist"
        raise ValueError(f"directory {head!r} (before the first capture) {what}")
    return fixed + text[len(head) :]


@dataclass(frozen=True)
class Upstream:
    """One upstream server of a proxy mount.

    Attributes:
        url: ``http://host:port[/prefix]``, ``https://...`` or ``unix:/path[:/prefix]``.
        weight: its share of the requests relative to the others (default 1).
        backup: sent requests only when no other upstream can take them (nginx's
            ``server ... backup``).
        down: sent no request at all, nor health checks, until a reload brings it
            back (nginx's ``server ... down``).
    """

    url: str
    weight: int = 1
    backup: bool = False
    down: bool = False

    def __str__(self) -> str:
        text = self.url if self.weight == 1 else f"{self.url} weight={self.weight}"
        text = f"{text} backup" if self.backup else text
        return f"{text} down" if self.down else text


def _nginx_unix_spelling(text: str, value: Any) -> None:
    """Refuse nginx's ``http://unix:/path:/uri``, which reads as a host named unix."""
    lower = text.lower()
    if lower.startswith("https://unix:/"):
        raise ValueError(
            f"no TLS over a UNIX socket: write unix:/path/to.sock:/uri (plain HTTP), got {value!r}"
        )
    if lower.startswith("http://unix:/"):
        raise ValueError(
            f"write a UNIX socket as unix:/path/to.sock:/uri (nginx's http://unix:/...),"
            f" got {value!r}"
        )


def _upstream_url(text: str, value: Any, *, templates: bool = False) -> str:
    """An upstream URL, checked.

    ``templates``: a query with ``$`` may follow (a mount table's, whose captures and
    variables ``_mount`` checks); else no capture may be used (a plain prefix's).
    """
    if not templates:
        _refuse_captures(split_upstream_url(text)[1])
    if text.startswith("unix:"):
        parse_upstream(text)  # (its ValueError names what is expected)
        if not templates:
            _refuse_variables(text)
        return text
    _nginx_unix_spelling(text, value)
    if _has_control(text):
        raise ValueError(f"{value!r} holds a control character")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"expected an upstream URL such as http://127.0.0.1:9000 or "
            f"unix:/run/app.sock, got {value!r}"
        )
    if "$" in parts.netloc:
        # Pools, health checks and balancing are per upstream: where a request goes
        # may not depend on it. (Before the port, which a "$" would make "bad".)
        idiom = (
            "; for nginx's http://b$request_uri write http://b: a regular-expression"
            " mount forwards the path and query as sent"
            if parts.netloc.endswith("$request_uri")
            else ""
        )
        raise ValueError(
            f"{value!r}: the scheme, host and port of an upstream are fixed (a capture"
            f" or variable may go in its path, in a regular-expression mount{idiom})"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in upstream URL {value!r}") from None
    if port == 0:
        raise ValueError(f"{value!r}: port 0 cannot be connected to")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{value!r}: no user or password in an upstream URL (they would not be sent;"
            " proxy_set_header Authorization sends credentials)"
        )
    if not _is_host(parts.hostname):
        # (It would fail every request at connect time, as a name no resolver has.)
        raise ValueError(f"{parts.hostname!r} is not a host name, in {value!r}")
    if parts.fragment or (parts.query and not (templates and "$" in parts.path + parts.query)):
        # (A query with captures or variables is a regular-expression mount's: _mount.)
        raise ValueError(f"an upstream URL has no query or fragment, got {value!r}")
    if not templates:
        _refuse_variables(text)
    return text


def _is_host(name: str) -> bool:
    """Whether ``name`` is an IP address or a name of dot-separated labels.

    Labels of letters, digits, ``-`` and ``_`` (a container's service name), of 1 to
    63 characters as DNS has them; one dot at the end at most.
    """
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return re.fullmatch(r"[\w-]{1,63}(?:\.[\w-]{1,63})*\.?", name) is not None
    return True


def _upstream(value: Any, *, templates: bool = False) -> tuple[Upstream, ...]:
    items = _one_or_list(value, "an upstream URL or a list of them", required=True)
    upstreams = []
    for item in items:
        if isinstance(item, Upstream):
            upstreams.append(item)
            continue
        text = _text(item).strip()
        url, _, extra = re.sub(r"\s", " ", text).partition(" ")
        weight = None
        backup = down = False
        # nginx's server parameters: weight=N, backup and down, in any order, once each.
        for word in re.sub(r"\s*=\s*", "=", extra.strip()).split():
            match = re.fullmatch(r"weight=([0-9]+)", word)
            if match is not None and weight is None and int(match[1]) >= 1:
                weight = int(match[1])
            elif word == "backup" and not backup:
                backup = True
            elif word == "down" and not down:
                down = True
            else:
                raise ValueError(
                    f"expected 'URL', then weight=N (N >= 1), backup or down, each once,"
                    f" got {item!r}"
                )
        upstreams.append(
            Upstream(_upstream_url(url, item, templates=templates), weight or 1, backup, down)
        )
    if all(upstream.backup for upstream in upstreams):
        raise ValueError("every upstream is a backup: a backup serves when the others cannot")
    return tuple(upstreams)


def _mount_upstream(value: Any) -> tuple[Upstream, ...]:
    return _upstream(value, templates=True)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower().replace("-", "_")
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


#: The trusted_proxies entry for "every client on a UNIX socket".
UNIX_SOCKETS = "unix:"


def _networks(value: Any) -> tuple[str, ...]:
    items = _one_or_list(value, "a list of addresses or networks")
    # On the command line a list is one argument: "10.0.0.0/8,192.168.0.0/16".
    texts = [part for item in items for part in re.split(r"[,\s]+", _text(item)) if part]
    if items and not texts:
        raise ValueError(f"expected addresses or networks, got {value!r}")
    networks = []
    for text in texts:
        if text.lower() in ("unix", "unix:"):
            # Every connection over a UNIX socket (nginx's set_real_ip_from unix:):
            # such a client has no address to match (design: peer is None).
            networks.append(UNIX_SOCKETS)
            continue
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network (CIDR)") from None
        networks.append(str(network))
    return tuple(networks)


def _url_path(value: Any) -> str:
    text = _text(value).strip()
    if not text.startswith("/") or any(ord(char) < 0x21 for char in text):
        raise ValueError(f"expected a URL path starting with /, got {value!r}")
    return text


def _optional_file(value: Any) -> str:
    text = _text(value).strip()
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.isdir(path):
        raise ValueError(f"{text!r} is a directory, not a file")
    if not os.path.isfile(path):
        # (A FIFO would hold the start-up until something writes to it.)
        what = "is not a regular file" if os.path.exists(path) else "does not exist"
        raise ValueError(f"file {text!r} {what}")
    return path


def _realm(value: Any) -> str:
    text = _header_value(value)
    if not text:
        raise ValueError("the realm is empty (nginx's auth_basic off is leaving it out)")
    try:
        text.encode("latin-1")  # the challenge is a header field (RFC 9110 5.5)
    except UnicodeEncodeError:
        raise ValueError(f"a realm is Latin-1 text: {value!r}") from None
    return text


def _header_value(value: Any) -> str:
    text = _text(value)
    if any((ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F for char in text):
        raise ValueError(f"a header value cannot contain control characters: {value!r}")
    return text.strip()


def _server_header(value: Any) -> bytes:
    text = _header_value(value.decode("latin-1") if isinstance(value, bytes) else value)
    try:
        return text.encode("latin-1")  # RFC 9110 5.5: field values are octets
    except UnicodeEncodeError:
        raise ValueError(f"expected Latin-1 text, got {value!r}") from None


def _return(value: Any, *, captures: bool = False) -> ReturnSpec:
    if isinstance(value, ReturnSpec):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # return = 410
    # In a mount table the variables are checked by _mount, which knows whether
    # the path is a pattern and which groups it has.
    return parse_return(_text(value), check_variables=not captures)


def _mount_return(value: Any) -> ReturnSpec:
    return _return(value, captures=True)


def _mount_spec(
    parse_target: Callable[[Any], Any], example: str
) -> Callable[[Any], tuple[tuple[str, Any], ...]]:
    """A parser for repeatable ``PREFIX=TARGET`` values (``--static``, ``--proxy``).

    ``example`` is a value as written, said when one has no ``=``.
    """

    def parse(value: Any) -> tuple[tuple[str, Any], ...]:
        items = _one_or_list(value, "PREFIX=TARGET")
        specs = []
        for item in items:
            if isinstance(item, str) and item.lstrip().startswith(LOCATION_MODIFIERS):
                # (Checked before the "=" is looked for: "= /x=DIR" would be read as
                # an empty prefix.)
                raise _ItemError(item, _NOT_A_PLAIN_PREFIX)
            if isinstance(item, (list, tuple)) and len(item) == 2:
                prefix, target = item
            elif isinstance(item, str) and "=" in item:
                prefix, _, target = item.partition("=")
            else:
                raise ValueError(f"expected PREFIX=TARGET (e.g. {example}), got {item!r}")
            try:
                specs.append((_mount_path(prefix), parse_target(target)))
            except ValueError as error:
                # Named as written, so the one wrong among several is found.
                written = item if isinstance(item, str) else f"{prefix}={target}"
                raise _ItemError(written, str(error)) from None
        return tuple(specs)

    return parse


BOOL = Kind("BOOL", _boolean, "true or false")


def _table_items(value: Any, expected: str) -> list[tuple[Any, Any]]:
    """A TOML table's (name, value) pairs; pairs as a program may give them pass too."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (tuple, list)) and all(
        isinstance(item, (tuple, list)) and len(item) == 2 for item in value
    ):
        return [tuple(item) for item in value]
    raise ValueError(f"{expected}, got {value!r}")


def _header_table(value: Any) -> tuple[tuple[str, str], ...]:
    items = _table_items(value, "expected a table of header names and values")
    headers = []
    seen: dict[str, str] = {}
    for name, text in items:
        if not isinstance(name, str) or not re.fullmatch(TOKEN, name):
            raise ValueError(f"{name!r} is not a header name")
        if name.lower().encode("ascii") in _SERVER_FIELDS:
            raise ValueError(f"{name!r} is the server's to set (it frames the response)")
        if name.lower() in seen:
            # Field names have no case (RFC 9110 5.1): TOML keys do, and two values
            # (X-Frame-Options DENY and SAMEORIGIN) would cancel each other out.
            raise ValueError(f"{name!r} is given twice (as {seen[name.lower()]!r})")
        seen[name.lower()] = name
        if not isinstance(text, str):
            raise ValueError(f"the value of {name!r} is not text: {text!r}")
        value = _header_value(text)
        try:
            value.encode("latin-1")  # RFC 9110 5.5: field values are octets
        except UnicodeEncodeError:
            raise ValueError(f"the value of {name!r} is not Latin-1 text: {text!r}") from None
        headers.append((name, value))
    return tuple(headers)


#: Fields that frame a response or manage its connection (RFC 9112 6, 9.6; RFC 9110
#: 7.6.1): a configured value would contradict what the server sends.
_SERVER_FIELDS = HOP_BY_HOP | {b"content-length", b"date"}


def _file_names(value: Any) -> tuple[str, ...]:
    items = _one_or_list(value, "a list of file names")
    names = []
    for item in items:
        text = _text(item).strip()
        if not text or "/" in text or "\\" in text or text in (".", ".."):
            raise ValueError(f"{item!r} is not a file name")
        names.append(text)
    return tuple(names)


HEADER_TABLE = Kind("TABLE", _header_table, "a table of header names and values")


#: Request fields proxy_set_header may not set: they frame the request or belong to
#: the connection to the upstream, which the proxy writes itself.
_PROXY_OWN_FIELDS = HOP_BY_HOP | {b"content-length", b"expect"}


def _proxy_header_table(value: Any) -> tuple[tuple[str, str], ...]:
    items = _table_items(value, "expected a table of header names and values ($variables allowed)")
    fields = []
    seen: dict[str, str] = {}
    for name, text in items:
        if not isinstance(name, str) or not re.fullmatch(TOKEN, name):
            raise ValueError(f"{name!r} is not a header name")
        # "_" read as "-", as CGI-style gateways upstream read it.
        dashed = name.lower().replace("_", "-")
        if dashed.encode("ascii") in _PROXY_OWN_FIELDS:
            raise ValueError(
                f"{name!r} is the proxy's to set (framing and hop-by-hop fields, and"
                " Expect; a protocol upgrade such as WebSocket is passed on by itself)"
            )
        if dashed in seen:
            raise ValueError(f"{name!r} is given twice (as {seen[dashed]!r})")
        seen[dashed] = name
        if not isinstance(text, str):
            raise ValueError(f"the value of {name!r} is not text: {text!r}")
        template = text.strip()
        try:
            _header_value(template) if template else None
            RequestTemplate(template)
        except ValueError as error:
            raise ValueError(f"{name!r}: {error}") from None
        fields.append((name, template))
    return tuple(fields)


def _proxy_redirect(value: Any) -> str | tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("default", "off"):
            return word
        raise ValueError(
            f"expected default, off or a table of URL prefixes and replacements, got {value!r}"
        )
    items = _table_items(value, "expected default, off or a table of URL prefixes and replacements")
    if not items:
        raise ValueError("is an empty table: write off to rewrite nothing")
    pairs = []
    for source, replacement in items:
        if not isinstance(source, str) or not source or any(map(_invisible, source)):
            raise ValueError(f"{source!r} is not the start of a URL (no spaces or controls)")
        if not source.startswith("/") and "://" not in source:
            raise ValueError(
                f"{source!r} is not the start of a URL or a path (nginx's default is"
                " written out here as the upstream's own URL and the mount's path)"
            )
        if source.startswith("~") or "$" in source:
            # nginx's regular expressions (~, ~*) and variables in the prefix: taken
            # literally here, they would never match.
            raise ValueError(
                f"{source!r}: prefixes are plain text here (no ~ regular expressions or"
                " $variables, which only replacements may use)"
            )
        pairs.append((source, _replacement(source, replacement)))
    return tuple(pairs)


def _replacement(
    source: str,
    replacement: Any,
    forbidden: str = r"[\x00-\x1f\x7f]",
    holds: str = "a control character",
) -> str:
    """A rewrite's replacement, checked: text, none of ``forbidden``, known variables."""
    if not isinstance(replacement, str):
        raise ValueError(f"the replacement of {source!r} is not text: {replacement!r}")
    if re.search(forbidden, replacement):
        raise ValueError(f"the replacement of {source!r} holds {holds}")
    try:
        RequestTemplate(replacement)
    except ValueError as error:
        raise ValueError(f"the replacement of {source!r}: {error}") from None
    return replacement


def _off_or_table(value: Any, expected: str, empty: str) -> list[tuple[Any, Any]]:
    """The pairs of a setting that is ``off`` (no pairs) or a TOML table.

    Args:
        value: as written (or the default ``()``, as a program gives it: off).
        expected: "expected off or a table of ...", for a value of another kind.
        empty: what an empty table is told to write instead.
    """
    if isinstance(value, str):
        if value.strip().lower() == "off":
            return []
        raise ValueError(f"{expected}, got {value!r}")
    if value == ():
        return []
    items = _table_items(value, expected)
    if not items:
        raise ValueError(f"is an empty table: write off {empty}")
    return items


def _cookie_rewrites(attribute: str) -> Callable[[Any], tuple[tuple[str, str], ...]]:
    """The parser of proxy_cookie_path (``attribute`` "path") or proxy_cookie_domain."""
    expected = f"expected off or a table of cookie {attribute}s and their replacements"

    def parse(value: Any) -> tuple[tuple[str, str], ...]:
        items = _off_or_table(value, expected, "to rewrite nothing")
        pairs = []
        for source, replacement in items:
            if (
                not isinstance(source, str)
                or not source
                or any(map(_invisible, source))
                or ";" in source
            ):
                raise ValueError(
                    f"{source!r} is not a cookie {attribute} (no spaces, controls or ;)"
                )
            if attribute == "path" and not source.startswith("/"):
                raise ValueError(f"{source!r} is not the start of a path (it starts with /)")
            if source.startswith("~") or "$" in source:
                raise ValueError(
                    f"{source!r}: the {attribute}s matched are plain text here (no ~ regular"
                    " expressions or $variables, which only replacements may use)"
                )
            holds = "a control character or a ; (which would end the attribute)"
            pairs.append((source, _replacement(source, replacement, r"[\x00-\x1f\x7f;]", holds)))
        return tuple(pairs)

    return parse


def _cookie_flags(value: Any) -> tuple[tuple[str, str], ...]:
    expected = "expected off or a table of cookie names (or *) and their flags"
    items = _off_or_table(value, expected, "to set no flags")
    pairs = []
    seen: set[str] = set()
    for name, flags in items:
        if isinstance(name, str) and name.startswith("~"):
            # nginx's regular expressions: taken as a name, it would match no cookie
            # and leave every one without the flags asked for.
            raise ValueError(
                f"{name!r}: cookie names are plain here (no ~ regular expressions);"
                " * stands for every cookie not named"
            )
        if not isinstance(name, str) or not (name == "*" or re.fullmatch(TOKEN, name)):
            raise ValueError(f"{name!r} is not a cookie name (or * for every cookie)")
        if name.lower() in seen:
            raise ValueError(f"{name!r} is given twice (names are matched without case)")
        seen.add(name.lower())
        if not isinstance(flags, str):
            raise ValueError(f"the flags of {name!r} are not text: {flags!r}")
        try:
            parse_flags(flags)
        except ValueError as error:
            raise ValueError(f"the flags of {name!r}: {error}") from None
        pairs.append((name, " ".join(flags.lower().split())))
    return tuple(pairs)


def _auth_url(value: Any) -> str:
    text = _text(value).strip()
    if text.startswith("unix:"):
        return _auth_unix_url(text, value)
    _nginx_unix_spelling(text, value)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"expected the http or https URL of the authentication service, such as"
            f" http://127.0.0.1:4180/oauth2/auth, got {value!r}"
        )
    if port == 0 or parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{text!r}: no port 0, and no user or password in the URL (they would not"
            " be sent, and would be shown in logs)"
        )
    if parts.fragment or any(map(_invisible, text)):
        raise ValueError(f"{text!r} holds a fragment, a space or a control character")
    if not _is_host(parts.hostname):
        raise ValueError(f"{parts.hostname!r} is not a host name, in {text!r}")
    # A path as a request line writes it: what a URL may not hold, percent-encoded.
    return urlunsplit(
        parts._replace(
            path=quote(parts.path, safe="/!$&'()*+,;=:@-._~%"),
            query=quote(parts.query, safe="/?!$&'()*+,;=:@-._~%"),
        )
    )


def _auth_unix_url(text: str, value: Any) -> str:
    """An ``auth_request`` service on a UNIX socket: ``unix:/path/to.sock[:/uri]``.

    nginx's ``http://unix:/path/to.sock:/uri``; the URI is encoded as a request line
    writes it.
    """
    socket_path, colon, uri = text[len("unix:") :].partition(":")
    if not socket_path.startswith("/") or (colon and not uri.startswith("/")):
        raise ValueError(
            "expected the service's socket and path, such as"
            f" unix:/run/oauth2-proxy.sock:/oauth2/auth, got {value!r}"
        )
    if "#" in text or any(map(_invisible, text)):
        raise ValueError(f"{text!r} holds a fragment, a space or a control character")
    path, question, query = (uri or "/").partition("?")
    path = quote(path, safe="/!$&'()*+,;=:@-._~%")
    query = quote(query, safe="/?!$&'()*+,;=:@-._~%")
    return f"unix:{socket_path}:{path}{question}{query}"


def _header_names(value: Any) -> list[str]:
    """A header name, or a list of them, each checked to be one (RFC 9110 5.1)."""
    items = _one_or_list(value, "a list of header names")
    for item in items:
        if not isinstance(item, str) or not re.fullmatch(TOKEN, item):
            raise ValueError(f"{item!r} is not a header name")
    return list(items)


def _auth_fields(value: Any) -> tuple[str, ...]:
    names = []
    for item in _header_names(value):
        lower = item.lower().replace("_", "-").encode("ascii")
        if lower in _PROXY_OWN_FIELDS or lower == b"host":
            raise ValueError(f"{item!r} frames or routes the request: it cannot be copied")
        if lower == b"set-cookie":
            raise ValueError(
                f"{item!r} is for the client, not the request: auth_response_cookies ="
                " true sends a 2xx answer's cookies to the client"
            )
        names.append(item)
    return tuple(names)


def _response_field_names(passing: bool) -> Callable[[Any], tuple[str, ...]]:
    """The parser of proxy_pass_header (``passing``) or proxy_hide_header."""

    def parse(value: Any) -> tuple[str, ...]:
        names = []
        for item in _header_names(value):
            lower = item.lower().encode("ascii")
            if lower in _PROXY_OWN_FIELDS or lower == b"content-type":
                raise ValueError(
                    f"{item!r} frames or describes the response: it is always"
                    + (" the proxy's to decide" if passing else " passed (hop-by-hop ones never)")
                )
            if passing and lower not in DEFAULT_HIDDEN:
                raise ValueError(
                    f"{item!r} is not hidden by default: only "
                    + ", ".join(name.decode().title() for name in DEFAULT_HIDDEN)
                    + " are (a field in proxy_hide_header is passed by leaving it out)"
                )
            names.append(item)
        return tuple(names)

    return parse


#: The fields of an upstream's answer that change what the proxy does, and that
#: proxy_ignore_headers may tell it not to read (nginx's list holds more: those of
#: its cache, and X-Accel-Redirect, which a mount here reads only when asked).
IGNORABLE_FIELDS = ("X-Accel-Buffering", "X-Accel-Limit-Rate")


def _ignored_fields(value: Any) -> tuple[str, ...]:
    names = []
    for item in _header_names(value):
        known = [name for name in IGNORABLE_FIELDS if name.lower() == item.lower()]
        if item.lower() == "x-accel-redirect":
            raise ValueError(
                "X-Accel-Redirect is read only with x_accel_redirect = true: leave that"
                " off (its default) instead"
            )
        if not known:
            raise ValueError(
                f"{item!r} is not acted on from an upstream's answer: only"
                f" {' and '.join(IGNORABLE_FIELDS)} are"
            )
        names.append(known[0])
    return tuple(names)


HIDDEN_FIELDS = Kind("FIELDS", _response_field_names(False), "a list of header field names")
IGNORED_FIELDS = Kind("FIELDS", _ignored_fields, "a list of header field names")
PASSED_FIELDS = Kind("FIELDS", _response_field_names(True), "a list of header field names")
AUTH_URL = Kind("URL", _auth_url, "an http or https URL, or unix:/path/to.sock:/uri")
AUTH_FIELDS = Kind("FIELDS", _auth_fields, "a list of header field names")
COOKIE_FLAGS = Kind(
    "FLAGS", _cookie_flags, "off, or a table of cookie names (or *) and their flags"
)
COOKIE_PATHS = Kind(
    "PATH_TABLE",
    _cookie_rewrites("path"),
    "off, or a table of path prefixes and their replacements",
)
COOKIE_DOMAINS = Kind(
    "DOMAIN_TABLE", _cookie_rewrites("domain"), "off, or a table of domains and their replacements"
)
PROXY_REDIRECT = Kind(
    "REWRITE",
    _proxy_redirect,
    "default, off, or a table of URL prefixes and their replacements",
)
PROXY_HEADER_TABLE = Kind(
    "TEMPLATES", _proxy_header_table, "a table of header names and values with $variables"
)
FILE_NAMES = Kind("FILES", _file_names, "a list of file names")


def _try_files(value: Any) -> tuple[str, ...]:
    # nginx's form too: one string of names separated by spaces.
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: list the names to try, or leave try_files out")
    items = value.split() if isinstance(value, str) else value
    if isinstance(items, (list, tuple)) and not items:
        return ()  # the default: the request's path alone
    if not isinstance(items, (list, tuple)):
        raise ValueError(f'expected a list of names such as ["$uri", "/index.html"], got {value!r}')
    names: list[str] = []
    for position, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{item!r} is not a name to try")
        name = item.strip()
        if name.endswith(";"):
            raise ValueError(f"{name!r} ends with nginx's ; (leave it out here)")
        if name.startswith("="):
            if position != len(items) - 1:
                raise ValueError(f"{name!r}: a status (=CODE) can only come last")
            if not re.fullmatch(r"=[45][0-9][0-9]", name) or name == "=499":
                raise ValueError(
                    f"{name!r}: expected =CODE with a status from 400 to 599 (=444 closes"
                    " the connection)"
                )
            if not names:
                raise ValueError(f"needs a name to try before {name}")
            names.append(name)
            continue
        if "\\" in name or any(map(_invisible, name)):
            raise ValueError(f"{name!r} holds a space, a control character or a backslash")
        if "?" in name or "#" in name:
            raise ValueError(f"{name!r}: a name is a file's path, without a query or fragment")
        # $uri (${uri}, $URI: the one reader's spellings) is the only variable.
        parts = cut_at(name, "uri")
        if "$" in "".join(parts):
            raise ValueError(f"{name!r}: the only variable here is $uri")
        if not name.startswith("/") and parts[0]:
            raise ValueError(f"{name!r} is not a path: start it with / or $uri")
        # Whatever the path ("" for the mount's own directory, "/", "/x/"), the
        # name must not make a . or .. segment: "$uri.." is ".." for "".
        for path in ("", "/", "/x", "/x/"):
            example = path.join(parts)
            if any(segment in (".", "..") for segment in example.split("/")):
                raise ValueError(f"{name!r} can make a . or .. segment")
        names.append(name)
    return tuple(names)


TRY_FILES = Kind(
    "NAMES",
    _try_files,
    "a list of paths with $uri (the request's path below the mount), and an optional last =CODE",
)
SYMLINKS = Kind("SYMLINKS", _choice("inside", "never"), "inside or never")
HOST_NAMES = Kind(
    "HOSTS",
    _host_names,
    "a list of host names; *.example.org matches any name ending in .example.org,"
    " mail.* any starting with mail., .example.org both example.org and its"
    " subdomains, and ~REGEX the names it matches",
)
LOCATION = Kind(
    "PATH",
    _location,
    "a URL path prefix starting with /, or nginx's location forms: = /exact, ^~ /prefix,"
    " ~ REGEX, ~* REGEX",
)
DIRECTORY = Kind("DIR", _directory, "an existing directory")
MOUNT_DIRECTORY = Kind(
    "DIR",
    _mount_directory,
    "an existing directory; in a regular-expression mount, a path with its captures"
    " ($1, $name) after a fixed directory",
)
MOUNT_RETURN = Kind(
    "ANSWER",
    _mount_return,
    "a status and a URL or text, as nginx's return: '301 https://example.com$request_uri',"
    " '200 ok', '410', '444'; in a regular-expression mount, with its captures ($1, $name)",
)
RETURN = Kind(
    "ANSWER",
    _return,
    "a status and a URL or text, as nginx's return: '301 https://example.com$request_uri',"
    " '200 ok', '410', '444'",
)


def _retry_statuses(value: Any) -> tuple[int, ...]:
    """Status codes an upstream's answer is retried on: a list of 4xx and 5xx codes.

    Other codes are refused: a 2xx or 3xx is an answer, and a 1xx is not a final one.
    """
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected a list of status codes (e.g. [502, 503, 504]), got {value!r}")
    for item in items:
        # (True and False are ints, 1 and 0: out of range too.)
        if not isinstance(item, int) or not 400 <= item <= 599:
            raise ValueError(
                f"expected status codes from 400 to 599 (e.g. [502, 503, 504]), got {item!r}"
            )
    return tuple(sorted(set(items)))


RETRY_STATUSES = Kind(
    "STATUSES", _retry_statuses, "a list of 4xx and 5xx status codes, e.g. [502, 503, 504]"
)
MOUNT_UPSTREAM = Kind(
    "UPSTREAMS",
    _mount_upstream,
    "an upstream URL (http://host:port[/prefix], https://..., unix:/path[:/prefix]), or a list of"
    " them; append weight=N (1 or more, 1 by default) to give one a larger share, backup"
    " for one that serves only when the others cannot, down for one taken out (until a"
    " reload); in a regular-expression mount the path and query may use its captures",
)
UPSTREAM = Kind(
    "UPSTREAMS",
    _upstream,
    "an upstream URL (http://host:port[/prefix], https://..., unix:/path[:/prefix]), or a list of"
    " them; append weight=N (1 or more, 1 by default) to give one a larger share, backup"
    " for one that serves only when the others cannot, down for one taken out (until a"
    " reload)",
)


def _balance(value: Any) -> str:
    policy, key = parse_balance(_text(value))
    if policy == "random_two":
        return "random two"
    if key is None:
        return policy
    try:
        template = RequestTemplate(key, escape="none")
    except ValueError as error:
        raise ValueError(f"the hash key {key!r}: {error}") from None
    if template.constant:
        # Every request would go to the same upstream: a typo, surely.
        raise ValueError(
            f"the hash key {key!r} has no $variable, so every request would go to one upstream"
        )
    return f"hash {key} consistent" if policy == "consistent_hash" else f"hash {key}"


BALANCE = Kind(
    "BALANCE",
    _balance,
    "round_robin, least_conn, random, random two, ip_hash, or hash KEY [consistent]",
)
SATISFY = Kind("SATISFY", _choice("all", "any"), "all or any")


def _tls_ciphers(value: Any) -> str:
    # An OpenSSL cipher list: checked against OpenSSL when the listeners are built.
    text = _text(value).strip()
    if not text or not all(c.isalnum() or c in "+-!:@=_., " for c in text):
        raise ValueError(f"expected an OpenSSL cipher list such as ECDHE+AESGCM, got {value!r}")
    return text


def _tls_version(value: Any) -> str:
    # A TOML file may say 1.3 as a number; only those two are versions we take.
    text = str(value) if isinstance(value, float) else _text(value).strip()
    if text not in ("1.2", "1.3"):
        raise ValueError(f"expected 1.2 or 1.3, got {value!r}")
    return text


TLS_VERSION = Kind("VERSION", _tls_version, "1.2 or 1.3")
#: tls_verify_client's modes, nginx's ssl_verify_client's (see client_certificates).
VERIFY_CLIENT = Kind(
    "MODE",
    _choice("off", "on", "optional", "optional_no_ca"),
    "off, on, optional or optional_no_ca",
)


def _log_template(value: Any) -> str:
    text = _text(value)
    if not text.strip():
        raise ValueError("expected a template, e.g. '$remote_addr \"$request\" $status'")
    LogFormat(text)  # raises ValueError naming an unknown variable
    return text


def _log_escape(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in ESCAPES:
        raise ValueError(f"expected {', '.join(ESCAPES[:-1])} or {ESCAPES[-1]}, got {value!r}")
    return text


LOG_FORMAT = Kind("TEMPLATE", _log_template, "an nginx log_format template with $variables")
LOG_ESCAPE = Kind("ESCAPE", _log_escape, "default, json or none")
TLS_CIPHERS = Kind("CIPHERS", _tls_ciphers, "an OpenSSL cipher list")
# A yes/no setting that is on by default: on the command line it takes a value
# (--tls-session-tickets off), where a BOOL flag can only turn something on.
SWITCH = Kind("SWITCH", _boolean, "on or off (also true or false, yes or no)")


def _media_types(value: Any) -> tuple[str, ...]:
    items = _one_or_list(value, "a list of media types")
    texts = [part for item in items for part in re.split(r"[,\s]+", _text(item)) if part]
    types = []
    for text in texts:
        lower = text.lower()
        if not re.fullmatch(f"{TOKEN}/(?:{TOKEN})", lower) or lower.startswith("*"):
            raise ValueError(f"{text!r} is not a media type (such as text/html or text/*)")
        types.append(lower)
    return tuple(types)


def _compression_level(value: Any) -> int:
    level = _whole_number(value)
    if not 1 <= level <= 9:
        raise ValueError(f"a gzip level is 1 (fastest) to 9 (smallest), got {value!r}")
    return level


def _rate(value: Any) -> float:
    text = _text(value).strip().lower()
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*r/([sm])", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"expected requests per second or minute, as 10r/s or 30r/m, got {value!r}"
        )
    number = float(match.group(1))
    per_second = number if match.group(2) == "s" else number / 60
    if per_second < 1 / 60:
        raise ValueError(f"the smallest rate is 1r/m, got {value!r}")
    return per_second


RATE = Kind("RATE", _rate, "requests per second or minute, as 10r/s or 30r/m")
MEDIA_TYPES = Kind("TYPES", _media_types, "a list of media types (text/html, text/*)")
GZIP_LEVEL = Kind("LEVEL", _compression_level, "1 (fastest) to 9 (smallest)")
HTTPS_REDIRECT = Kind(
    "REDIRECT",
    _https_redirect,
    "on, off, or the port number clients reach TLS on (on: the first ssl: listener's)",
)
NETWORKS = Kind(
    "CIDRS",
    _networks,
    "a list of IP addresses or networks (CIDR), and unix: for every UNIX-socket client",
)
URL_PATH = Kind("URL-PATH", _url_path, "a URL path starting with /")
REALM = Kind("REALM", _realm, "a realm name (Latin-1 text)")
FILE = Kind("FILE", _optional_file, "an existing file")
HEADER_VALUE = Kind("VALUE", _header_value, "a header field value")
SERVER_VALUE = Kind("FIELD", _server_header, "a header field value, empty for none")
STATIC_SPEC = Kind(
    "PREFIX=DIR",
    _mount_spec(_directory, "/static=./static"),
    "a URL prefix and a directory, e.g. /static=./static",
)
RETURN_SPEC = Kind(
    "PREFIX=ANSWER",
    _mount_spec(_return, "'/healthz=200 ok'"),
    "a URL prefix and what to answer there, e.g. '/old=301 https://example.com/new'",
)
PROXY_SPEC = Kind(
    "PREFIX=URL",
    _mount_spec(_upstream, "/api=http://127.0.0.1:9000"),
    "a URL prefix and an upstream, e.g. /api=http://127.0.0.1:9000",
)


#: The largest error page: every one is held in memory by every worker process, and
#: sent whole with each error it answers.
MAX_ERROR_PAGE = 1024 * 1024

_STATUS_KEY = re.compile("[45][0-9][0-9]")


class _EntryError(ValueError):
    """A bad entry of a table-valued key, with its key: errors name ``key.entry``.

    Or of a list-valued key, with its index in brackets: errors name ``key[2]``.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def _error_pages(value: Any) -> tuple[tuple[int, ErrorPage], ...]:
    """Status codes (400-599) and page files, each file read now (nginx's error_page)."""
    if not isinstance(value, dict):
        raise ValueError(
            "expected a table of status codes and files,"
            f' e.g. {{ 404 = "404.html" }}, got {value!r}'
        )
    pages: dict[int, ErrorPage] = {}
    read: dict[str, ErrorPage] = {}  # one copy of a file given for several statuses
    for key, path in value.items():
        # TOML keys are strings ("404"); a configuration built in Python may use ints.
        text = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
        if not isinstance(text, str) or not _STATUS_KEY.fullmatch(text):
            raise _EntryError(str(key), "expected an error status code, 400 to 599")
        if not isinstance(path, str) or not path.strip():
            raise _EntryError(text, f"expected the path of a file, got {path!r}")
        page = read.get(path)
        if page is None:
            try:
                page = read[path] = _error_page(path)
            except ValueError as error:
                raise _EntryError(text, str(error)) from None
        pages[int(text)] = page
    return tuple(sorted(pages.items()))


def _error_page(path: str) -> ErrorPage:
    """Read one page file whole (start-up and reload: a file that does not read fails)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"file {path!r} does not exist") from None
    except OSError as error:
        raise ValueError(f"cannot read {path!r}: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{path!r} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO would hold the start-up until something writes to it.
        raise ValueError(f"{path!r} is not a regular file")
    try:
        with open(path, "rb") as file:
            body = file.read(MAX_ERROR_PAGE + 1)
    except OSError as error:
        raise ValueError(f"cannot read {path!r}: {error.strerror}") from None
    if len(body) > MAX_ERROR_PAGE:
        raise ValueError(f"{path!r} is larger than {MAX_ERROR_PAGE // 1024} KiB")
    return ErrorPage(path, content_type(path).encode("latin-1"), body)


def _rewrites(value: Any) -> tuple[RewriteRule, ...]:
    """The lines, each checked; a bad one is named by its index (``rewrite[2]``)."""
    if isinstance(value, str):
        return (parse_rewrite(value),)
    items = _one_or_list(value, "a list of rewrite lines")
    rules = []
    for index, item in enumerate(items):
        try:
            rules.append(parse_rewrite(_text(item)))
        except ValueError as error:
            raise _EntryError(f"[{index}]", str(error)) from None
    return tuple(rules)


REWRITES = Kind(
    "REWRITES",
    _rewrites,
    "a list of nginx rewrite lines, each 'REGEX REPLACEMENT [FLAG]', FLAG last, break,"
    " redirect, permanent or none (a replacement that is a URL, http://, https:// or"
    " $scheme, redirects whatever the flag)",
)
ERROR_PAGES = Kind(
    "PAGES",
    _error_pages,
    'a table of error status codes (400-599) and files, e.g. { 404 = "errors/404.html" }',
)


class _ItemError(ValueError):
    """A bad item of a repeatable setting, with the item as it was written.

    Errors then name the one ``--vhost`` that is wrong among several, as mounts are
    named (``--vhost 'a.example=static:./nope'``), not just the flag.
    """

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(problem)
        self.item = item


@dataclass(frozen=True)
class VhostSpec:
    """One ``--vhost NAMES[/PREFIX]=KIND:TARGET``, parsed.

    Attributes:
        names: the host names, as written.
        path: the mount path (``/`` when none was given).
        kind: ``"app"``, ``"static"``, ``"proxy"`` or ``"return"``.
        target: parsed as the matching flag parses it: the application reference,
            the absolute directory, a tuple of :class:`Upstream`, or the
            :class:`~twistwsgi.fixed_response.ReturnSpec`.
        text: the whole value as written, which names the mount in errors.
    """

    names: tuple[str, ...]
    path: str
    kind: str
    target: Any
    text: str


_VHOST_SYNTAX = (
    "expected NAMES[/PREFIX]=KIND:TARGET (e.g. api.example.com=proxy:http://127.0.0.1:9000)"
)

#: How each kind of ``--vhost`` parses its target: as ``--app``, ``--static``,
#: ``--proxy`` and ``--return`` parse theirs.
_VHOST_TARGETS: dict[str, Callable[[Any], Any]] = {
    "app": _app,
    "static": _directory,
    "proxy": _upstream,
    "return": _return,
}


def _vhost(item: Any) -> VhostSpec:
    if isinstance(item, VhostSpec):
        return item
    text = _text(item).strip()
    # Host names and the mount path hold no "=", so the first one ends them; the
    # target may hold more (a factory's keyword arguments, an upstream's path).
    where, equals, what = text.partition("=")
    if not equals or not where.strip() or not what.strip():
        raise _ItemError(text, _VHOST_SYNTAX)
    names_text, slash, prefix = where.partition("/")
    if not names_text.strip():
        raise _ItemError(text, f"no host name before the path; {_VHOST_SYNTAX}")
    kind, colon, target = what.partition(":")
    kind = kind.strip().lower()
    if kind not in _VHOST_TARGETS:
        raise _ItemError(
            text,
            f"unknown kind {kind!r}: expected app:MODULE:NAME, static:DIR, proxy:URL"
            " or return:ANSWER",
        )
    if not colon or not target.strip():
        raise _ItemError(text, f"nothing after {kind}: ({_VHOST_SYNTAX})")
    try:
        names = _host_names(names_text.split(","))
        path = _mount_path("/" + prefix) if slash else "/"
        parsed = _VHOST_TARGETS[kind](target.strip())
    except ValueError as error:
        raise _ItemError(text, str(error)) from None
    return VhostSpec(names, path, kind, parsed, text)


def _vhosts(value: Any) -> tuple[VhostSpec, ...]:
    items = [value] if isinstance(value, (str, VhostSpec)) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{_VHOST_SYNTAX}, got {value!r}")
    return tuple(_vhost(item) for item in items)


VHOST_SPEC = Kind(
    "NAMES[/PREFIX]=KIND:TARGET",
    _vhosts,
    "host names separated by commas (*.example.org, .example.org, mail.* and ~REGEX"
    " without , / or = allowed), an optional mount path"
    " (/ by default), then app:MODULE:NAME, static:DIR, proxy:URL or return:ANSWER",
)


@dataclass(frozen=True)
class Setting:
    """One setting: its name, kind, default and help.

    Attributes:
        name: the key in ``[server]`` and, with ``-`` for ``_``, the ``--flag``.
        kind: how values are parsed and checked.
        default: the value when none is given.
        help: one or two sentences for ``--help`` and the reference.
        repeatable: whether the flag may be given several times (a list).
        cli: whether it is a command-line flag.
        file: whether it is a key of its config-file table.
        required: whether the table must have it.
        applies_to: for mount keys, the kinds of mount it is for (empty: all).
        positive: whether the value must be more than 0, for numbers where 0 has no
            useful meaning (a limit that refuses every request, a timeout that fires
            at once, an interval that repeats without pause).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    repeatable: bool = False
    cli: bool = True
    file: bool = True
    required: bool = False
    applies_to: frozenset[str] = frozenset()
    positive: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: Any) -> Any:
        """Parse command-line text or a config-file value with the kind, in range.

        Raises:
            ValueError: with a message saying what was expected.
        """
        if self.positive and _is_number(raw) and raw <= 0:
            # Said before the kind's own ">= 0", which would mislead for these.
            raise ValueError(f"expected more than 0, got {raw!r}")
        value = self.kind.parse(raw)
        if self.positive and value <= 0:
            raise ValueError(f"expected more than 0, got {raw!r}")
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_DEFAULT_HTTP = HttpSettings()

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "config",
        TEXT,
        None,
        "A TOML configuration file: a [server] table with any of these settings, and"
        " [[host]] tables for virtual hosts and their mounts. Options given on the"
        " command line override the file's [server] values.",
        file=False,
    ),
    Setting(
        "reload",
        BOOL,
        False,
        "For development: replace the worker processes (one, unless --workers says"
        " more) whenever a Python file under the directory the server was started in,"
        " or the configuration file, changes, as gunicorn's and uvicorn's --reload do;"
        " new code that does not import leaves the old workers serving. Not for"
        " production: every save starts new processes.",
        file=False,
    ),
    Setting(
        "check_config",
        BOOL,
        False,
        "Check the configuration (import the applications, parse the endpoints, check"
        " that the access log file could be opened), print the routing table (each"
        " mount with the options it sets), and exit: 0"
        " if it is valid, 2 if not. Nothing is written and no port is bound, so an address"
        " another process holds is found only at the start.",
        file=False,
    ),
    Setting(
        "app",
        APP,
        None,
        "The WSGI application to serve at /: module:name, or module:factory() to call"
        " a factory (literal arguments allowed, e.g. module:create_app('prod')); a"
        " module alone names its application, as in gunicorn.",
    ),
    Setting(
        "static",
        STATIC_SPEC,
        (),
        "Serve the files of a directory under a URL prefix: --static /static=./static."
        " Repeat for several.",
        repeatable=True,
    ),
    Setting(
        "proxy",
        PROXY_SPEC,
        (),
        "Forward requests under a URL prefix to an upstream server:"
        " --proxy /api=http://127.0.0.1:9000. Repeat for several. The upstream's host"
        " is an IP address or a name of letters, digits, - and _ between dots, its"
        " port not 0, and the URL holds no user or password.",
        repeatable=True,
    ),
    Setting(
        "return",
        RETURN_SPEC,
        (),
        "Answer every request under a URL prefix with a fixed response, as nginx's"
        " return: a status and a URL to redirect to (301, 302, 303, 307, 308), a"
        " status and a text for the body, or 444 to close the connection without one;"
        " $variables allowed: --return '/old=301 https://example.com$request_uri',"
        " --return '/healthz=200 ok'. Repeat for several.",
        repeatable=True,
    ),
    Setting(
        "vhost",
        VHOST_SPEC,
        (),
        "Serve a virtual host: NAMES[/PREFIX]=KIND:TARGET, e.g. --vhost"
        " api.example.com=proxy:http://127.0.0.1:9000 or --vhost"
        " 'docs.example.com/search=app:search:app'. Repeat with the same NAMES for"
        " more mounts of that host. The host --app, --static, --proxy and --return make still"
        " answers every other name. In the configuration file, write [[host]] tables.",
        repeatable=True,
        file=False,
    ),
    Setting(
        "listen",
        ENDPOINT,
        ("tcp:8080",),
        "Where to listen, as a Twisted endpoint string (tcp:8080,"
        " ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/app.sock,"
        " systemd:domain=INET:index=0; haproxy: in front of one reads the PROXY"
        " protocol header of a load balancer). Repeat for several. What could not"
        " listen is refused with the configuration, --check-config included: a port"
        " outside 0-65535, a backlog= that is not a whole number, a UNIX socket path"
        f" longer than {MAX_UNIX_PATH} bytes or in a directory that does not exist, an"
        " address given twice however it is spelt (tcp:8080 and tcp:port=8080), and"
        " control characters.",
        repeatable=True,
    ),
    Setting(
        "threads",
        THREADS,
        10,
        "Threads that run the application. 0 runs it in the reactor thread, for"
        " applications that never block.",
    ),
    Setting(
        "workers",
        WORKERS,
        0,
        "Worker processes, each a whole server with its own threads, sharing the"
        " listening sockets (gunicorn's --workers, nginx's worker_processes); auto"
        " starts one per CPU. The process started supervises them: it starts another"
        " when one dies, replaces them all on SIGHUP (new code as well as a new"
        " configuration, without refusing a connection) and stops them gracefully."
        " 0 serves from the process started alone.",
    ),
    Setting(
        "max_requests",
        INT,
        0,
        "Requests a worker process answers before the master replaces it (gunicorn's"
        " --max-requests), which bounds what an application that leaks memory can"
        " take: a new worker starts, and once it serves the old one stops accepting"
        " and finishes its requests in progress. Counted about once a second. 0:"
        " never. Needs workers.",
    ),
    Setting(
        "max_requests_jitter",
        INT,
        0,
        "A random number of requests from 0 up to this is added to max_requests for"
        " each worker (gunicorn's --max-requests-jitter), so that the workers started"
        " together are not all replaced together.",
    ),
    Setting(
        "max_worker_memory",
        SIZE,
        0,
        "The resident memory (ps's RSS) a worker process may use before the master"
        " replaces it (uWSGI's reload-on-rss, granian's --workers-max-rss), e.g. 512m:"
        " bounds an application that leaks memory, whatever its requests. Looked at"
        " once a second; a new worker starts, and once it serves the old one stops"
        " accepting and finishes its requests in progress. Such replacements go one at"
        " a time: none while another worker's replacement starts or a replaced worker"
        " finishes its requests (killed graceful_timeout + 5 s after it was told to"
        " stop, at the latest). Without /proc (not Linux), the largest resident size"
        " the worker has had stands in. 0: no limit. Needs workers.",
    ),
    Setting(
        "max_worker_lifetime",
        DURATION,
        0.0,
        "How long a worker process serves before the master replaces it (uWSGI's"
        " max-worker-lifetime, granian's --workers-lifetime), e.g. 6h, as for"
        " max_requests; workers that reach it together are replaced one at a time, as"
        " for max_worker_memory. 0: for ever. Needs workers.",
    ),
    Setting(
        "worker_timeout",
        DURATION,
        30.0,
        "How long a worker process may go without a heartbeat before the master kills"
        " and replaces it (gunicorn's --timeout). A worker's event loop sends one every"
        " second (a third of this if shorter), so this catches a loop that is blocked:"
        " an application call that never returns under threads = 0, a C extension"
        " holding the GIL, a deadlock. The master first sends it SIGUSR2, which writes"
        " the stacks of all its threads to the master's log, and kills it 1 s later;"
        " its clients lose their connections. Threads stuck in the application are"
        " app_timeout's. SIGUSR2 is taken for that dump in the workers (an"
        " application's own handler is replaced). 0: never. Applied to the workers a"
        " SIGHUP starts. No effect without workers (nothing watches a process serving"
        " alone).",
    ),
    Setting(
        "thread_queue_timeout",
        DURATION,
        60.0,
        "How long a request may wait for a free worker thread: one that waited longer"
        " is answered 503 (with Retry-After) and never reaches the application, and a"
        " warning says so at most every 10 s (nginx in front of gunicorn answers 504"
        " after its 60 s proxy_read_timeout). 0: no limit. Applied again on SIGHUP.",
    ),
    Setting(
        "app_timeout",
        DURATION,
        60.0,
        "How long an application may take to start its response, from the moment a"
        " worker thread takes its request (less the time it waits for the client's"
        " body): past it the client gets 504 and the log shows where the thread is"
        " stuck, as nginx in front of gunicorn answers 504 after its 60 s"
        " proxy_read_timeout. The wait for a thread is thread_queue_timeout's. The thread cannot be"
        " stopped: it runs on and what it sends is dropped; under --workers a worker"
        " with half its threads so held is replaced. Not with threads = 0."
        " A mount's app_timeout replaces it there. 0: no limit. Applied again on SIGHUP.",
    ),
    Setting(
        "metrics_listen",
        ONE_ENDPOINT,
        None,
        "Where to serve the server's metrics at /metrics in Prometheus's text format"
        " (connections, responses by status, request durations, threads, each proxy upstream), e.g."
        " tcp:9090:interface=127.0.0.1; under --workers the master serves the sum of"
        " its workers'. Off by default.",
    ),
    Setting(
        "access_log",
        ACCESS_LOG,
        None,
        "Where the access log (combined format) goes: a file path, - for stdout, or"
        " off. By default it goes to the server log.",
    ),
    Setting(
        "access_log_format",
        LOG_FORMAT,
        None,
        "The access-log line as an nginx log_format template, e.g. '$remote_addr"
        ' "$request" $status $body_bytes_sent $request_time\'. Variables: $remote_addr,'
        " $client_addr (the client trusted_proxies resolves), $remote_port, $remote_user,"
        " $time_local, $time_iso8601, $msec, $request, $request_method, $request_uri,"
        " $server_protocol, $scheme, $host, $status, $body_bytes_sent,"
        " $request_time, $request_id, $upstream_addr, $upstream_status,"
        " $upstream_response_time (proxy mounts), $ssl_client_verify and the other"
        " $ssl_client_ variables (client certificates), $http_NAME for any request"
        " header field, $cookie_NAME for a cookie and $arg_NAME for a query argument."
        " Default: the combined format. Applied again on SIGHUP.",
    ),
    Setting(
        "access_log_escape",
        LOG_ESCAPE,
        "default",
        "How values in access-log lines are escaped: default (quotes, backslashes and"
        " bytes outside printable ASCII as \\xHH, as nginx does), json (JSON string"
        " contents, for a template that writes a JSON object per line: nginx's"
        " escape=json) or none. Applied again on SIGHUP.",
    ),
    Setting(
        "trusted_proxies",
        NETWORKS,
        (),
        "Addresses of proxies in front of this server (CIDR networks, and unix: for"
        " a proxy that connects over a UNIX socket), separated by commas; the flag may"
        " also be repeated. Forwarding headers (Forwarded, X-Forwarded-*, X-Real-IP) are"
        " believed only from these: applications see them, with wsgi.url_scheme taken"
        " from X-Forwarded-Proto, and proxy mounts extend them. From any other client"
        " they are dropped before an application sees them, and replaced on the way to"
        " an upstream.",
        repeatable=True,
    ),
    Setting(
        "tls_min_version",
        TLS_VERSION,
        "1.2",
        "Oldest TLS version the ssl: listeners accept (nginx's ssl_protocols): 1.2, or"
        " 1.3 for TLS 1.3 only. Applied again on SIGHUP.",
    ),
    Setting(
        "tls_ciphers",
        TLS_CIPHERS,
        None,
        "The cipher suites the ssl: listeners offer for TLS 1.2, as an OpenSSL cipher"
        " list (nginx's ssl_ciphers), e.g. ECDHE+AESGCM:ECDHE+CHACHA20 to leave out"
        " static RSA and CBC (RFC 9325 4.1). TLS 1.3's suites are OpenSSL's. Default:"
        " Twisted's list. Applied again on SIGHUP.",
    ),
    Setting(
        "tls_session_tickets",
        SWITCH,
        True,
        "Let TLS clients resume sessions with stateless tickets (nginx's"
        " ssl_session_tickets). The ticket key lives until the next SIGHUP or restart:"
        " turn them off for strict forward secrecy of TLS 1.2 sessions.",
    ),
    Setting(
        "tls_verify_client",
        VERIFY_CLIENT,
        "off",
        "Ask TLS clients for a certificate and verify it against"
        " tls_client_certificate (mutual TLS; nginx's ssl_verify_client): on, a"
        " certificate that verifies is required; optional, one that is sent must"
        " verify; optional_no_ca, one from an unknown or untrusted issuer is taken"
        " too and the application decides from SSL_CLIENT_VERIFY (an expired one, or"
        " a bad signature, is refused). A refused request gets 400 (the handshake itself"
        " completes, as with nginx). Applications see the certificate as mod_ssl's"
        " SSL_CLIENT_* environ keys. Only requests over the ssl: listeners are"
        " checked. Applied again on SIGHUP.",
    ),
    Setting(
        "tls_client_certificate",
        FILE,
        None,
        "The CA certificates (PEM) client certificates are verified against, also"
        " sent to clients as the issuers accepted (nginx's ssl_client_certificate)."
        " Read again on SIGHUP.",
    ),
    Setting(
        "tls_crl",
        FILE,
        None,
        "Certificate revocation lists (PEM) client certificates are checked against"
        " (nginx's ssl_crl): a revoked certificate is refused as one that does not"
        " verify, in every mode. The file needs a current CRL from each CA that issues"
        " client certificates or intermediates, else their clients are refused (unable"
        " to get certificate CRL). Applies to every host that asks. Read again on"
        " SIGHUP (a new CRL takes effect then).",
    ),
    Setting(
        "https_redirect",
        HTTPS_REDIRECT,
        "off",
        "Answer each request that did not come over TLS with a redirect to the same URL"
        " on https, as nginx's 'return 301 https://$host$request_uri': 301 for GET and"
        " HEAD, 308 (the method and body kept) for other methods. on: to the port of"
        " the first ssl: listener; a number: to that port, for TLS published on another"
        " port (a container's) or ended in front (from trusted_proxies,"
        " X-Forwarded-Proto: https counts as TLS). A [[host]] may set its own. Applied"
        " again on SIGHUP.",
    ),
    Setting(
        "graceful_timeout",
        DURATION,
        30.0,
        "On SIGTERM or SIGINT, how long in-flight requests may take to finish before"
        " their connections are dropped.",
    ),
    Setting(
        "keepalive_timeout",
        DURATION,
        _DEFAULT_HTTP.keepalive_timeout,
        "How long an idle persistent connection stays open (0: no keep-alive, every"
        " response says Connection: close). A request already received as it ends is"
        " answered; the close is sent at once, so a client that sends later sees it"
        " first.",
    ),
    Setting(
        "keepalive_requests",
        INT,
        _DEFAULT_HTTP.keepalive_requests,
        "Requests one connection serves before it is closed (nginx's"
        " keepalive_requests, whose default this is; 0: no limit): the last gets"
        " Connection: close. Bounds what one connection holds for ever, and lets the"
        " clients behind a load balancer spread again over its servers.",
    ),
    Setting(
        "keepalive_time",
        DURATION,
        _DEFAULT_HTTP.keepalive_time,
        "How long one connection is reused for (nginx's keepalive_time, whose default"
        " this is; 0: no limit): the first request that begins later gets"
        " Connection: close.",
    ),
    Setting(
        "header_timeout",
        DURATION,
        _DEFAULT_HTTP.header_timeout,
        "How long a client has to send a whole request head (408 after; slowloris defence).",
        positive=True,
    ),
    Setting(
        "body_timeout",
        DURATION,
        _DEFAULT_HTTP.body_timeout,
        "How long the server waits between two reads of a request body (408 after).",
        positive=True,
    ),
    Setting(
        "server_header",
        SERVER_VALUE,
        _DEFAULT_HTTP.server_header,
        "The Server field sent with every response the application does not give one"
        " (RFC 9110 10.2.4); empty to send none (nginx's server_tokens hides only the"
        " version).",
    ),
    Setting(
        "send_timeout",
        DURATION,
        _DEFAULT_HTTP.send_timeout,
        "How long a client may leave a response unread before the connection is dropped.",
        positive=True,
    ),
    Setting(
        "max_request_line",
        SIZE,
        _DEFAULT_HTTP.max_request_line,
        "Longest request-target, or unknown method token, accepted (414 above).",
        positive=True,
    ),
    Setting(
        "max_header_field",
        SIZE,
        _DEFAULT_HTTP.max_header_field,
        "Longest single header field line accepted (431 above), counted as its name and"
        " value plus 2 bytes.",
        positive=True,
    ),
    Setting(
        "max_connections",
        INT,
        _DEFAULT_HTTP.max_connections,
        "Most client connections open at once; at the limit the server stops accepting,"
        " new connections wait in the listen backlog until one closes, and while one"
        " waits responses say Connection: close and idle connections are closed to"
        " make room (nginx's worker_connections). 0: (the open-files limit - 128) / 3, as"
        " each connection may hold two more descriptors (a file it is sent or its"
        " upstream connection, and a spooled request body or a response waiting in a"
        " temporary file for a slow client).",
    ),
    Setting(
        "max_header_count",
        INT,
        _DEFAULT_HTTP.max_header_count,
        "Most header fields accepted in a request (431 above).",
        positive=True,
    ),
    Setting(
        "max_header_total",
        SIZE,
        _DEFAULT_HTTP.max_header_total,
        "Largest header section accepted (431 above), counted as the sum of its field"
        " lines as --max-header-field counts them.",
        positive=True,
    ),
    Setting(
        "max_body",
        SIZE,
        _DEFAULT_HTTP.max_body,
        "Largest request body accepted (413 above, decided from Content-Length before"
        " the body is read). 0 means no limit.",
    ),
    Setting(
        "request_buffering",
        SWITCH,
        False,
        "Receive each request body whole before an application gets a thread (nginx's"
        " proxy_request_buffering), so a slow upload holds none: bodies over 64 KiB wait"
        " in an unlinked temporary file in TMPDIR, 100 Continue is sent at once, and a"
        " chunked body reaches the application with a CONTENT_LENGTH. Off: a body over"
        " 64 KiB is streamed to the application as it arrives. (With --threads 0 bodies"
        " are always received whole.) Applied again on SIGHUP.",
    ),
    Setting(
        "response_buffering",
        SWITCH,
        True,
        "Take a streamed response from a worker thread or an upstream faster than its"
        " client reads it (nginx's proxy_buffering): once the client has not read for"
        " 50 ms, what the connection cannot take yet waits in memory (64 KiB) and then"
        " in an unlinked temporary file in TMPDIR, sent as the client reads, so a slow"
        " client holds no thread and no upstream connection. Off: the thread, or the"
        " upstream's connection, waits for the client. An X-Accel-Buffering: yes|no"
        " response field decides for its response, a mount's response_buffering for"
        " the mount. (With threads = 0 an application's result is pulled as the"
        " client reads.) Applied again on SIGHUP.",
    ),
    Setting(
        "max_response_buffer",
        SIZE,
        MAX_RESPONSE_BUFFER,
        "The most bytes of one response held for its client by response buffering"
        " (nginx's proxy_max_temp_file_size), in memory and a temporary file that never"
        " grows past it: at the limit the thread, or the upstream's connection, waits"
        " until the client has read enough to make room. Applied again on SIGHUP.",
        positive=True,
    ),
    Setting(
        "gzip",
        BOOL,
        False,
        "Compress responses with gzip when the client accepts it (nginx's gzip on):"
        " those of applications and proxied upstreams over HTTP/1.1 with a Content-Type"
        " in gzip_types, no Content-Encoding of their own and at least gzip_min_length"
        " long; and static files of those types with no .gz sibling (up to 4 MiB at"
        " levels 1-3, less above),"
        " compressed once and kept in memory. A mount's gzip turns it on or off there.",
    ),
    Setting(
        "gzip_types",
        MEDIA_TYPES,
        DEFAULT_GZIP_TYPES,
        "The media types gzip compresses (nginx's gzip_types); text/* for a whole type.",
    ),
    Setting(
        "gzip_min_length",
        SIZE,
        256,
        "Responses whose Content-Length is below this are sent as they are.",
    ),
    Setting(
        "gzip_level",
        GZIP_LEVEL,
        1,
        "The gzip compression level (nginx's gzip_comp_level): 1 is the fastest, 9"
        " the smallest; the levels above 5 cost much CPU for little.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}

#: The kinds of mount, by the key that names what it serves.
MOUNT_KINDS = ("app", "static", "proxy", "return")

HOST_KEYS: tuple[Setting, ...] = (
    Setting(
        "names",
        HOST_NAMES,
        None,
        "The host names this host answers to, matched case-insensitively without the"
        " port, in nginx's server_name order: exact names first, then the longest"
        " matching wildcard in front (*.example.org), then the longest at the end"
        " (mail.*), then the first regular expression that matches (~^www\\d*\\."
        "example\\.org$, with the regex package), then the default host."
        " .example.org is example.org and *.example.org.",
        cli=False,
        required=True,
    ),
    Setting(
        "default",
        BOOL,
        False,
        "Whether requests for a host name no [[host]] lists land here. At most one"
        " host is the default; without one, unknown names get 404 (421 over TLS).",
        cli=False,
    ),
    Setting(
        "tls_certificate",
        FILE,
        None,
        "This host's certificate (PEM, followed by its chain: certbot's"
        " fullchain.pem), as nginx's ssl_certificate in a server block. Every ssl:"
        " listener sends it to clients whose server name (SNI) selects the host, as"
        " the Host header would (the default host: names no host lists, and no"
        " name); other clients get the listener's certKey=. Read again on SIGHUP.",
        cli=False,
    ),
    Setting(
        "tls_verify_client",
        VERIFY_CLIENT,
        None,
        "This host's tls_verify_client, in place of the [server] one (nginx's"
        " ssl_verify_client in a server block): the TLS listeners ask clients whose"
        " server name (SNI) selects the host, and its requests are checked. A request"
        " for a host whose setting is not that of the host the connection's server name"
        " selected gets 421, as with nginx. With on or optional here, the host is served"
        " over TLS only: on a plain-HTTP listener, its https_redirect or 403.",
        cli=False,
    ),
    Setting(
        "tls_client_certificate",
        FILE,
        None,
        "This host's CA certificates for client certificates, in place of the"
        " [server] one. Read again on SIGHUP.",
        cli=False,
    ),
    Setting(
        "https_redirect",
        HTTPS_REDIRECT,
        None,
        "This host's https_redirect, in place of the [server] one (on, off or a port).",
        cli=False,
    ),
    Setting(
        "tls_key",
        FILE,
        None,
        "The private key of tls_certificate (PEM, without a passphrase); when left"
        " out, the key is read from the certificate's file.",
        cli=False,
    ),
    Setting(
        "rewrite",
        REWRITES,
        (),
        "Redirects and rewrites by regular expression, as nginx's rewrite lines in a"
        " server block (without their semicolons), tried in order before the mounts:"
        " ['^/blog/\\d+/(.+)$ /articles/$1 permanent', '^/old/(.*)$ /new/$1 last']. The"
        " expression is searched in the decoded path; the replacement takes $1 to $9"
        " and the request variables; the query is appended unless the replacement ends"
        " with ?. permanent is a 301, redirect a 302; last and break change the path and"
        " query the mounts see and stop the lines, no flag changes them and goes on"
        " to the next line.",
        cli=False,
    ),
    Setting(
        "access_log",
        ACCESS_LOG,
        None,
        "Where this host's access log goes, in place of the server's (nginx's"
        " access_log in a server block): a file path, - for stdout, or off. In the"
        " server's line format (or access_log_format); a request the server refuses"
        " before it has parsed a Host field (a malformed request line, say) goes to"
        " the server's.",
        cli=False,
    ),
    Setting(
        "access_log_format",
        LOG_FORMAT,
        None,
        "The line format of this host's own access_log, in place of the server's"
        " access_log_format (nginx's access_log PATH FORMAT); needs access_log.",
        cli=False,
    ),
    Setting(
        "error_pages",
        ERROR_PAGES,
        None,
        "Pages sent in place of the server's own short error bodies, by status, as"
        ' nginx\'s error_page: { 404 = "errors/404.html", 502 = "errors/50x.html" }.'
        " The status stays the error's; the Content-Type comes from the file's"
        " extension. Only the answers this server makes for the host get them (no"
        " mount, a static mount's 403/404/405, the mounts' 401/403/429, an"
        " application's crash 500, thread queue 503 and app_timeout 504, a proxy"
        " mount's 502/503/504); an application's or upstream's own responses pass"
        " through unchanged, unless a proxy mount has proxy_intercept_errors. Each"
        " file (at most 1 MiB) is read at start and on SIGHUP.",
        cli=False,
    ),
)

MOUNT_KEYS: tuple[Setting, ...] = (
    Setting(
        "path",
        LOCATION,
        None,
        "The URL path prefix. The longest prefix that matches wins, on segment"
        " boundaries: /static matches /static/app.css, never /staticfoo. Written"
        " unencoded (/café, not /caf%C3%A9): it matches the percent-encoded UTF-8 a"
        " browser sends. Or one of nginx's location forms: '= /favicon.ico' (that"
        " path alone, before everything), '^~ /media' (a prefix that, when it is the"
        " longest, is taken without trying the regular expressions), '~ REGEX' and"
        " '~* REGEX' (without case): the first, in the order written, found in the"
        " path wins over the longest prefix. Patterns need the regex package; see"
        " How requests are routed.",
        cli=False,
        required=True,
    ),
    Setting(
        "app",
        APP,
        None,
        "Serve a WSGI application here; SCRIPT_NAME is the mount path.",
        cli=False,
    ),
    Setting(
        "static",
        MOUNT_DIRECTORY,
        None,
        "Serve the files of this directory here. In a regular-expression mount it may"
        " use the pattern's captures, as nginx's alias there: static ="
        " '/srv/avatars/$1.png' for path = '~ ^/users/(\\d+)/avatar$'; the expanded"
        " path is then the file itself, looked up below the directory before the first"
        " capture; see Captures of regular-expression mounts.",
        cli=False,
    ),
    Setting(
        "proxy",
        MOUNT_UPSTREAM,
        None,
        "Forward requests under this path to an upstream HTTP server. In a"
        " regular-expression mount the URL's path and query may use the pattern's"
        " captures and request variables, and are then the whole request-target sent:"
        " 'http://backend/v$1/$2$is_args$args'; see Captures of regular-expression"
        " mounts. The upstream's host is an IP address or a name of letters, digits,"
        " - and _ between dots, its port not 0, and the URL holds no user or password.",
        cli=False,
    ),
    Setting(
        "return",
        MOUNT_RETURN,
        None,
        "Answer every request under this path with a fixed response (nginx's return):"
        " '301 https://example.com$request_uri' (301, 302, 303, 307 or 308 and a URL,"
        " sent in Location), '200 ok' (another status and the body's text, text/plain"
        " unless headers give a Content-Type; a 4xx or 5xx without text is the server's"
        " error answer and the host's error page), '444' (close the connection"
        " without a response). Variables as in proxy_set_header; in a regular-expression"
        " mount also its captures ($1, $name): '301 https://example.com/new/$1'.",
        cli=False,
    ),
    Setting(
        "cache_control",
        HEADER_VALUE,
        None,
        "The Cache-Control header sent with every file, e.g. 'public, max-age=31536000,"
        " immutable' for hashed asset names.",
        cli=False,
        applies_to=frozenset({"static"}),
    ),
    Setting(
        "headers",
        HEADER_TABLE,
        (),
        "More header fields for every response of the mount, as a table: headers ="
        " { Strict-Transport-Security = 'max-age=63072000', X-Frame-Options = 'DENY' }"
        " (nginx's add_header ... always). A field the application or upstream sets"
        " itself is left as it set it. A static mount sends them with its files, their"
        " 304s and its redirects (nginx's add_header without always), not its errors.",
        cli=False,
    ),
    *(
        Setting(name, kind, default, help_text, cli=False, applies_to=frozenset({"static"}))
        for name, kind, default, help_text in (
            (
                "index",
                FILE_NAMES,
                ("index.html",),
                "The files served for a directory (its URL ends in /), tried in order.",
            ),
            (
                "listing",
                BOOL,
                False,
                "List a directory that has no index file (an HTML page); without it,"
                " such a directory is 403.",
            ),
            (
                "precompressed",
                BOOL,
                True,
                "Send file.br or file.gz instead of file when it exists and the client"
                " accepts that encoding (with Content-Encoding and Vary:"
                " Accept-Encoding).",
            ),
            (
                "dotfiles",
                BOOL,
                False,
                "Serve files and directories whose name starts with a dot (.env, .git);"
                " hidden (404) by default. /.well-known/ is always served.",
            ),
            (
                "symlinks",
                SYMLINKS,
                "inside",
                "Follow symbolic links that stay inside the directory (inside, the"
                " default; links leading out are 404), or refuse every link (never).",
            ),
            (
                "fallthrough",
                BOOL,
                False,
                "Pass requests for missing files (and any method other than GET and HEAD)"
                " on to the mount below: the one at the same path, or the longest shorter"
                " prefix (there, a static mount before the application it passes on to)."
                " This is how / can be both an application and a directory.",
            ),
            (
                "try_files",
                TRY_FILES,
                (),
                "The names tried for a request, in order (nginx's try_files), $uri being"
                ' the path below the mount: ["$uri", "$uri/", "/index.html"] serves'
                " a single-page application's index for every path that is no file,"
                ' ["$uri", "$uri.html", "$uri/"] a site exported with clean URLs. A'
                " name ending in / is a directory with an index file (or listing). The"
                " first that exists is served; none: a miss (404, or the mount below"
                " with fallthrough), or the status of a last =CODE (=404).",
            ),
            (
                "internal",
                BOOL,
                False,
                "Serve these files only through an application's or upstream's X-Accel-Redirect;"
                " direct requests get 404 (nginx's internal).",
            ),
            (
                "max_ranges",
                INT,
                16,
                "Most byte ranges served in one response; a request asking for more gets"
                " the whole file.",
            ),
            (
                "memory_cache",
                SIZE,
                64 * 1024,
                "Files up to this size are kept in memory (checked against the file"
                " system on every request); 0 turns the cache off.",
            ),
        )
    ),
    Setting(
        "https_redirect",
        BOOL,
        None,
        "false: this mount answers requests over plain HTTP too, where its host"
        " redirects them to https (https_redirect), as an nginx port-80 server keeps a"
        " location /healthz beside its return 301: a load balancer's health check,"
        " ACME's /.well-known/acme-challenge. Only false: a mount cannot redirect on"
        " its own.",
        cli=False,
    ),
    Setting(
        "x_accel_redirect",
        BOOL,
        False,
        "Let the application or upstream hand a download to a static mount of the same"
        " host: a response with X-Accel-Redirect: /uri (a path under a static mount)"
        " or, from an application, X-Sendfile: /file/path (inside a static mount's"
        " directory) is replaced by that file, served by the reactor with ranges and"
        " conditional requests.",
        cli=False,
        applies_to=frozenset({"app", "proxy"}),
    ),
    Setting(
        "app_timeout",
        DURATION,
        None,
        "How long this application may take to start its response, in place of the"
        " server's app_timeout (nginx's proxy_read_timeout in a location): longer for"
        " a slow report, shorter elsewhere; 0 means no limit.",
        cli=False,
        applies_to=frozenset({"app"}),
    ),
    Setting(
        "response_buffering",
        BOOL,
        None,
        "Whether this application's or upstream's streamed responses are buffered for"
        " slow clients, in place of the server's response_buffering (nginx's"
        " proxy_buffering in a location): false for a mount of Server-Sent Events or"
        " other long streams.",
        cli=False,
        applies_to=frozenset({"app", "proxy"}),
    ),
    Setting(
        "max_response_buffer",
        SIZE,
        None,
        "The most bytes of one response of this application or upstream held for its"
        " client, in place of the server's max_response_buffer (nginx's"
        " proxy_max_temp_file_size in a location): 64k keeps them in memory (no"
        " temporary file), where slow clients should not fill the disk; a piece an"
        " application yields larger than the limit then waits for its client, as"
        " without buffering.",
        cli=False,
        applies_to=frozenset({"app", "proxy"}),
        positive=True,
    ),
    Setting(
        "access_log",
        ACCESS_LOG,
        None,
        "Where the access log of requests under this path goes, in place of the"
        " host's or server's (nginx's access_log in a location): a file path, - for"
        " stdout, or off (health checks polled every second, assets).",
        cli=False,
    ),
    Setting(
        "access_log_format",
        LOG_FORMAT,
        None,
        "The line format of this mount's own access_log, in place of the host's or"
        " server's (nginx's access_log PATH FORMAT); needs access_log.",
        cli=False,
    ),
    Setting(
        "max_body",
        SIZE,
        None,
        "Largest request body accepted under this path, instead of the server's"
        " max_body (nginx's client_max_body_size in a location): larger for an upload"
        " endpoint, smaller elsewhere; 0 means no limit. A static mount that passes"
        " misses on (fallthrough) takes the limit of the mount it passes them to.",
        cli=False,
        applies_to=frozenset({"app", "proxy"}),
    ),
    Setting(
        "gzip",
        BOOL,
        None,
        "Compress this mount's responses with gzip (true) or not (false), in place of"
        " the [server] gzip.",
        cli=False,
    ),
    Setting(
        "limit_rate",
        SIZE,
        0,
        "The most bytes a second each response under this path is sent at (nginx's"
        " limit_rate), e.g. 500k: downloads and videos that do not take a client's"
        " whole share of the bandwidth; 0 means no limit. An application's or"
        " upstream's X-Accel-Limit-Rate response field sets its response's.",
        cli=False,
    ),
    Setting(
        "limit_rate_after",
        SIZE,
        0,
        "Bytes of each response sent at full speed before limit_rate applies (nginx's"
        " limit_rate_after), e.g. 1m: the start of a video plays at once; alone, for"
        " the rate an X-Accel-Limit-Rate asks.",
        cli=False,
    ),
    Setting(
        "allow",
        NETWORKS,
        (),
        "Only clients in these networks may use the mount (nginx's allow ...; deny"
        " all); the others get 403. Behind a proxy in trusted_proxies, the client is"
        " the address it reports in X-Forwarded-For.",
        cli=False,
    ),
    Setting(
        "rate_limit",
        RATE,
        None,
        "Requests each client may make here (nginx's limit_req, nodelay unless"
        " rate_delay): a client going faster gets 429 with Retry-After. Clients are"
        " told apart as allow and deny tell them.",
        cli=False,
    ),
    Setting(
        "rate_burst",
        INT,
        0,
        "Requests a client may make at once beyond rate_limit (nginx's burst), as a"
        " page and its assets do; 0: one at a time, 1 / rate seconds apart.",
        cli=False,
    ),
    Setting(
        "rate_delay",
        INT,
        None,
        "Requests of a burst answered at once; those past them are held back until the"
        " rate allows them, rather than answered at once (nginx's limit_req delay=N;"
        " 0 holds every one, as nginx's limit_req without nodelay). Unset: none is"
        " held (nginx's nodelay). Less than rate_burst.",
        cli=False,
    ),
    Setting(
        "conn_limit",
        INT,
        None,
        "Requests each client may have in progress here at once (nginx's limit_conn):"
        " one more gets 429 at once and is not handed on. A WebSocket counts until it"
        " closes. Clients are told apart as allow and deny tell them.",
        cli=False,
        positive=True,
    ),
    Setting(
        "auth_basic",
        REALM,
        None,
        "Ask for a user and password (HTTP Basic authentication, nginx's auth_basic):"
        " the realm browsers show. Requests without a user and password of"
        " auth_basic_user_file get 401.",
        cli=False,
    ),
    Setting(
        "auth_basic_user_file",
        FILE,
        None,
        "The htpasswd file of auth_basic (nginx's auth_basic_user_file): name:hash"
        " lines, made with htpasswd -B (bcrypt) or -m, or openssl passwd -6; read"
        " again when it changes.",
        cli=False,
    ),
    Setting(
        "auth_request",
        AUTH_URL,
        None,
        "Ask an authentication service about each request first (nginx's auth_request,"
        " Traefik's and Caddy's forward auth: oauth2-proxy, Authelia, Authentik): a GET"
        " of this URL with the client's fields (cookies, Authorization) and"
        " X-Original-URI, X-Original-Method, X-Forwarded-Uri, -Method, -For, -Proto,"
        " -Host. A 2xx lets the request through; a 401, 403 or redirect (301, 302,"
        " 303, 307, 308: to sign in) is the client's answer as the service sent it;"
        " anything else is 500.",
        cli=False,
    ),
    Setting(
        "auth_response_headers",
        AUTH_FIELDS,
        (),
        "Fields copied from the authentication service's 2xx answer into the request"
        " the mount answers (X-Auth-Request-User, Remote-User...), in place of any the"
        " client sent under those names: Traefik's authResponseHeaders, nginx's"
        " auth_request_set with proxy_set_header.",
        cli=False,
    ),
    Setting(
        "auth_response_cookies",
        BOOL,
        False,
        "Send the Set-Cookie fields of the authentication service's 2xx answer to the"
        " client with the response, whatever answers it: a session the service renews"
        " on the way (oauth2-proxy's --cookie-refresh; nginx's auth_request_set with"
        " add_header Set-Cookie, Traefik's addAuthCookiesToResponse), every line of it.",
        cli=False,
    ),
    Setting(
        "deny",
        NETWORKS,
        (),
        "Clients in these networks get 403 here (nginx's deny), even when allow lists"
        " them (with satisfy = any, 401: they may come in with a password).",
        cli=False,
    ),
    Setting(
        "satisfy",
        SATISFY,
        "all",
        "With allow or deny and auth_basic (nginx's satisfy): all, a client must pass"
        " both; any, a client the address rules let in needs no password, and any other"
        " may still come in with one (an office without, the rest of the world with).",
        cli=False,
    ),
    *(
        Setting(
            name,
            kind,
            default,
            help_text,
            cli=False,
            applies_to=frozenset({"proxy"}),
            # Every other proxy number has a meaning for 0 (see docs/proxy.md).
            positive=name == "health_interval",
        )
        for name, kind, default, help_text in (
            (
                "balance",
                BALANCE,
                "round_robin",
                "How requests are spread over several upstreams: round_robin (by weight),"
                " least_conn (the one with the fewest requests in progress), random (by"
                " weight), 'random two' (the less busy of two drawn at random: for"
                " --workers, whose processes do not see each other's counts), or one"
                " upstream per client or key, as nginx's: ip_hash (the client's network),"
                " 'hash KEY' or 'hash KEY consistent', the key made with $variables"
                " ('hash $cookie_sessionid consistent', 'hash $client_addr consistent',"
                " 'hash $request_uri').",
            ),
            (
                "preserve_host",
                BOOL,
                True,
                "Pass the client's Host header on (true), or send the upstream's own"
                " host and port (false).",
            ),
            (
                "proxy_set_header",
                PROXY_HEADER_TABLE,
                (),
                "Header fields to send the upstream in place of the client's of the same"
                " name (nginx's proxy_set_header), as a table whose values may use"
                " $variables: { X-Real-IP = '$remote_addr', X-Client-DN ="
                " '$ssl_client_s_dn', Authorization = '' }, each replacing the client's"
                " lines of that name (X_Name spellings too). A value that comes out"
                " empty sends no such field. Host and the"
                " X-Forwarded-* and Forwarded fields may be set too (in place of the"
                " proxy's own). Variables: $remote_addr, $client_addr, $remote_port, $remote_user,"
                " $request_method, $request_uri, $uri, $args, $is_args,"
                " $server_protocol, $scheme, $host, $ssl_client_verify,"
                " $ssl_client_s_dn, $ssl_client_i_dn,"
                " $ssl_client_serial, $ssl_client_fingerprint, $ssl_client_escaped_cert,"
                " $request_id, $proxy_add_x_forwarded_for (the proxy's own"
                " X-Forwarded-For), $http_NAME, $cookie_NAME and $arg_NAME.",
            ),
            (
                "proxy_redirect",
                PROXY_REDIRECT,
                "default",
                "How an upstream's Location and Refresh URLs are rewritten (nginx's"
                " proxy_redirect): default, a URL starting with an upstream's own URL"
                " becomes the path a client asks for it by"
                " (http://127.0.0.1:9000/login, mounted at /app from"
                " http://127.0.0.1:9000/, goes out as /app/login); off, none; or a"
                " table of prefixes and their replacements, tried in order, in place of"
                " the default: { 'http://backend.internal/' = '/app/', '/' = '/app/' }"
                " (replacements may use proxy_set_header's $variables).",
            ),
            (
                "proxy_hide_header",
                HIDDEN_FIELDS,
                (),
                "Upstream response fields not passed to the client (nginx's"
                " proxy_hide_header): ['X-Powered-By', 'X-AspNet-Version']. Besides"
                " the hop-by-hop fields, the upstream's Date, Server and X-Pad are not"
                " passed unless proxy_pass_header names them (the server sends its own"
                " Date and Server), as nginx does.",
            ),
            (
                "proxy_ignore_headers",
                IGNORED_FIELDS,
                (),
                "Fields of the upstream's answer not acted on (nginx's"
                " proxy_ignore_headers), for an upstream that should not decide them:"
                " X-Accel-Buffering (the mount's response_buffering stands),"
                " X-Accel-Limit-Rate (the mount's limit_rate stands). They are still"
                " passed to the client unless proxy_hide_header names them.",
            ),
            (
                "proxy_pass_header",
                PASSED_FIELDS,
                (),
                "Of the fields hidden by default, those passed all the same (nginx's"
                " proxy_pass_header): ['Server'] shows the upstream's own Server, in"
                " place of this server's.",
            ),
            (
                "proxy_cookie_path",
                COOKIE_PATHS,
                (),
                "How the Path of an upstream's Set-Cookie is rewritten (nginx's"
                " proxy_cookie_path): a table of path prefixes and their replacements,"
                " tried in order, { '/' = '/app/' } for an application mounted at /app"
                " that sets its cookies for /; a replacement may use proxy_set_header's"
                " $variables, and one that comes out empty removes the attribute when"
                " nothing of the path is left after the prefix ({ '/' = '' } removes"
                " Path=/ and makes Path=/foo into Path=foo). Default: off.",
            ),
            (
                "proxy_cookie_domain",
                COOKIE_DOMAINS,
                (),
                "How the Domain of an upstream's Set-Cookie is rewritten (nginx's"
                " proxy_cookie_domain): a table of domains, matched whole and without"
                " case, and their replacements, { 'internal.example' = '$host' }; one"
                " that comes out empty removes the attribute (the cookie is then the"
                " host's only). Default: off.",
            ),
            (
                "proxy_intercept_errors",
                BOOL,
                False,
                "Send the host's error page (error_pages) in place of an upstream's 4xx"
                " or 5xx answer for whose status it has one (nginx's"
                " proxy_intercept_errors): the status stays, the upstream's body is"
                " dropped, and of its fields those of the status are kept"
                " (WWW-Authenticate, Proxy-Authenticate, Allow, Retry-After,"
                " Content-Range, a 426's Upgrade). A maintenance page while the"
                " application answers 503, say.",
            ),
            (
                "proxy_cookie_flags",
                COOKIE_FLAGS,
                (),
                "Flags set on an upstream's cookies (nginx's proxy_cookie_flags): a table"
                " of cookie names (without case), or * for every other cookie, and their"
                " flags,"
                " { '*' = 'secure httponly samesite=lax' }: secure, httponly and"
                " samesite=strict|lax|none add the attribute (or set SameSite's value),"
                " nosecure, nohttponly and nosamesite remove it. Default: off.",
            ),
            (
                "connect_timeout",
                DURATION,
                10.0,
                "How long connecting to an upstream may take, TLS handshake included (then"
                " the next upstream, or 502). 0: no limit of its own, the attempt still"
                " gives up after 30 s.",
            ),
            (
                "response_timeout",
                DURATION,
                60.0,
                "How long an upstream may take to send its response head (504 after; 0: no limit).",
            ),
            (
                "idle_timeout",
                DURATION,
                60.0,
                "How long a response or request body may stall between two pieces (0: no limit).",
            ),
            (
                "keepalive",
                INT,
                32,
                "Idle connections kept open per upstream for reuse (0: close each one).",
            ),
            (
                "keepalive_timeout",
                DURATION,
                4.0,
                "How long an idle upstream connection is kept (0: closed at once); keep it"
                " below the upstream's own idle timeout (gunicorn's is 2 s).",
            ),
            (
                "max_conns",
                INT,
                0,
                "Most requests in progress to one upstream at once (0: no limit), as"
                " nginx's max_conns: set it to the upstream's worker count (gunicorn sync"
                " --workers) so it is never sent more than it can take. Tunnels count"
                " while open; health checks do not.",
            ),
            (
                "queue",
                INT,
                100,
                "Requests of the mount that may wait for a free upstream when every one"
                " is at max_conns (0: none, 503 at once); a request finding the queue"
                " full gets 503. 100 absorbs a burst many times a worker count while"
                " bounding the client connections held waiting.",
            ),
            (
                "queue_timeout",
                DURATION,
                30.0,
                "How long a request may wait in the queue before it gets 503 (0: no"
                " limit). 30 s outlasts a burst, and stays under the 60 s idle timeout of"
                " common load balancers in front, whose own 504 would otherwise come first.",
            ),
            (
                "max_fails",
                INT,
                1,
                "Failed attempts after which an upstream is left out for fail_timeout"
                " (0: never left out).",
            ),
            (
                "fail_timeout",
                DURATION,
                10.0,
                "How long an upstream that failed max_fails times is left out.",
            ),
            (
                "health_check",
                URL_PATH,
                None,
                "A path polled on every upstream (GET, 2xx or 3xx is healthy); an"
                " upstream that fails it gets no requests until it passes again.",
            ),
            (
                "health_interval",
                DURATION,
                5.0,
                "How often health_check is polled.",
            ),
            (
                "retry",
                BOOL,
                True,
                "Send a request to another upstream when connecting fails (any method:"
                " nothing was sent), or, for an idempotent one (GET, HEAD, OPTIONS, PUT,"
                " DELETE, TRACE), when the connection breaks before any byte of the"
                " response, or its status is in retry_statuses; never after another byte.",
            ),
            (
                "retry_statuses",
                RETRY_STATUSES,
                (),
                "Statuses an upstream's answer to an idempotent request is not passed on"
                " for, the request going to another upstream instead (nginx's"
                " proxy_next_upstream http_503 ...), e.g. [502, 503, 504] while instances"
                " restart one by one; with no other upstream to try, the answer is"
                " passed on. A 5xx or 429 so retried counts as a failure for max_fails.",
            ),
            (
                "retry_on_timeout",
                BOOL,
                False,
                "Also send an idempotent request to another upstream (not left out after"
                " failures) when its upstream gave no response head within"
                " response_timeout (nginx's proxy_next_upstream timeout, on in nginx by"
                " default): off, as the upstream may still be working on it, and a"
                " client could wait response_timeout once per upstream (bound it with"
                " retry_timeout).",
            ),
            (
                "retry_non_idempotent",
                BOOL,
                False,
                "Send a request that is not idempotent (POST, PATCH, ...) again where an"
                " idempotent one would be (a broken connection before any response byte,"
                " retry_statuses, retry_on_timeout): nginx's proxy_next_upstream"
                " non_idempotent, for upstreams that make a repeated request harmless"
                " (an idempotency key); off, such a request gets the error.",
            ),
            (
                "retry_tries",
                INT,
                0,
                "Most upstreams one request is sent to, the first included (nginx's"
                " proxy_next_upstream_tries; 0: each upstream once at most).",
            ),
            (
                "retry_timeout",
                DURATION,
                0.0,
                "How long after a request arrives it may still go to another upstream"
                " (nginx's proxy_next_upstream_timeout; 0: no limit).",
            ),
            (
                "tls_verify",
                BOOL,
                True,
                "Verify https upstreams' certificates (against the system's CAs, or tls_ca).",
            ),
            (
                "tls_ca",
                FILE,
                None,
                "A PEM file of CA certificates to verify https upstreams with.",
            ),
            (
                "upstream_certificate",
                FILE,
                None,
                "The client certificate (PEM, followed by its chain) shown to https"
                " upstreams that ask for one (nginx's proxy_ssl_certificate), for"
                " upstreams behind mutual TLS.",
            ),
            (
                "upstream_key",
                FILE,
                None,
                "The private key of upstream_certificate (PEM, without a passphrase;"
                " nginx's proxy_ssl_certificate_key); when left out, it is read from the"
                " certificate's file.",
            ),
        )
    ),
)


@dataclass(frozen=True)
class AppSpec:
    """A parsed ``module:name`` or ``module:factory(args)`` application reference.

    Attributes:
        module: the dotted module path.
        attribute: the (possibly dotted) attribute path inside the module.
        call: ``None`` for a plain reference, else the positional and keyword
            arguments to call the factory with.
    """

    module: str
    attribute: str
    call: tuple[tuple[Any, ...], dict[str, Any]] | None = None


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_app_spec(text: str) -> AppSpec:
    """Parse ``module:name`` or ``module:factory(args)`` (gunicorn's syntax).

    A module alone names its ``application``, as in gunicorn (``myproject.wsgi``,
    which Django's deployment guide uses). Factory arguments must be Python
    literals; nothing in the string is executed.

    Raises:
        ValueError: for anything else, with a message saying what was expected.
    """
    module, sep, rest = text.partition(":")
    if not sep and _DOTTED.fullmatch(module):
        return AppSpec(module, "application")
    if not sep or not _DOTTED.fullmatch(module) or not rest:
        raise ValueError(f"expected module, module:name or module:factory(), got {text!r}")
    if not rest.endswith(")"):
        if not _DOTTED.fullmatch(rest):
            raise ValueError(f"{rest!r} is not a Python name")
        return AppSpec(module, rest)
    try:
        node = ast.parse(rest, mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"cannot parse the factory call {rest!r}: {error.msg}") from None
    if not isinstance(node, ast.Call):
        raise ValueError(f"{rest!r} is not a factory call")
    name = ast.unparse(node.func)
    if not _DOTTED.fullmatch(name):
        raise ValueError(f"{name!r} is not a Python name")
    if any(kw.arg is None for kw in node.keywords):
        raise ValueError(f"factory arguments in {rest!r} must be literals")
    names = [kw.arg for kw in node.keywords]
    if len(set(names)) != len(names):
        raise ValueError(f"a keyword argument is repeated in {rest!r}")
    try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # TypeError: a literal that cannot be built, such as {[1]: 2}.
        raise ValueError(f"factory arguments in {rest!r} must be literals") from None
    return AppSpec(module, name, (args, kwargs))


@dataclass(frozen=True)
class MountConfig:
    """One mount of a host: a path prefix (or nginx's other location forms) and what serves it.

    Attributes:
        path: the prefix, ``/`` or without a trailing slash (``/static``); for an
            exact mount its path, a trailing slash kept (``/docs/``); for a
            regular-expression mount its pattern.
        kind: ``"app"``, ``"static"``, ``"proxy"`` or ``"return"``.
        target: the application reference (str), the directory (str), the
            upstreams (a tuple of :class:`Upstream`), or the answer
            (:class:`~twistwsgi.fixed_response.ReturnSpec`).
        options: the mount's other keys (defaults filled in), by name.
        where: where it was configured, for error messages
            (``site.toml: host[0].mount[1]`` or ``--static '/s=./s'``).
        target_where: where the target itself was configured, when that is more
            precise than ``where`` (``site.toml: host[0].mount[1].app``); see
            :attr:`target_source`.
        match: how the path is matched, as nginx's ``location`` modifier: ``""`` (the
            longest prefix), ``"^~"`` (a prefix that, when longest, stops the regular
            expressions), ``"="`` (the path alone), ``"~"`` or ``"~*"`` (a regular
            expression, with case or without).
    """

    path: str
    kind: str
    target: Any
    options: Mapping[str, Any]
    where: str
    target_where: str | None = None
    match: str = ""

    @property
    def target_source(self) -> str:
        """Where the target was configured: the file's key path, or the flag as typed.

        Errors about the target (an application that does not import) name this.
        """
        return self.target_where or self.where

    @property
    def prefix(self) -> bytes:
        """The prefix as the router compares it (``b""`` for ``/``)."""
        # A browser sends a path's non-ASCII characters as percent-encoded UTF-8
        # (RFC 3986 2.5, WHATWG URL), which the router compares after decoding.
        if self.is_pattern or (self.match == "=" and self.kind == "static"):
            # The whole path is below a pattern (SCRIPT_NAME ""). A static mount at
            # one path serves that path under its directory, as nginx's root: below
            # its own path it would have only the directory, and redirect to "/p/".
            return b""
        path = self.path.rstrip("/") if self.match == "=" else self.path
        return b"" if path in ("/", "") else path.encode("utf-8")

    @property
    def is_pattern(self) -> bool:
        """Whether the path is a regular expression (``~``, ``~*``)."""
        return self.match in ("~", "~*")

    @property
    def location(self) -> str:
        r"""The path as the file writes it (``/static``, ``= /favicon.ico``, ``~* \.png$``)."""
        return f"{self.match} {self.path}" if self.match else self.path

    @property
    def place(self) -> tuple[str, str]:
        """What two mounts share when they are at one place (``^~ /x`` is at ``/x``)."""
        return ("" if self.match == "^~" else self.match), self.path


@dataclass(frozen=True)
class HostConfig:
    """A virtual host: its names and mounts.

    Attributes:
        names: host names as configured (empty for the catch-all host the command
            line makes).
        default: whether unknown host names land here.
        mounts: the mounts, in configuration order.
        where: where it was configured.
        tls_certificate: the certificate file (and chain) sent to clients naming
            this host, if any.
        tls_key: the key of ``tls_certificate`` (its own file when ``None``).
        https_redirect: the port requests not over TLS are redirected to on https,
            or ``None`` for no redirect.
        error_pages: ``(status, page)`` pairs, by status: what the server's own
            error answers for the host send instead of their plain-text bodies.
        tls_verify_client: the host's own tls_verify_client, or ``None`` for the
            server's (see :func:`host_verification`).
        tls_client_certificate: the host's own CA file, or ``None`` for the server's.
        access_log: the host's own access log destination (a path, ``-`` or
            ``off``), or ``None`` for the server's.
        access_log_format: the line format of that log, or ``None`` for the server's.
        rewrites: the host's redirects by regular expression, in order.
    """

    names: tuple[str, ...]
    default: bool
    mounts: tuple[MountConfig, ...]
    where: str
    tls_certificate: str | None = None
    tls_key: str | None = None
    https_redirect: int | None = None
    error_pages: tuple[tuple[int, ErrorPage], ...] = ()
    tls_verify_client: str | None = None
    tls_client_certificate: str | None = None
    access_log: str | None = None
    rewrites: tuple[RewriteRule, ...] = ()
    access_log_format: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """The validated configuration the server is built from.

    Attributes:
        hosts: the virtual hosts; the command line's --app/--static/--proxy make one
            catch-all host, and each set of names given to --vhost one more.
        listen: endpoint strings to listen on.
        threads: worker threads; 0 runs the application in the reactor thread.
        workers: worker processes under a supervisor (0: this process serves alone).
        max_requests: requests a worker answers before it is replaced (0: never).
        max_requests_jitter: the most added at random to ``max_requests``, per worker.
        max_worker_memory: the resident bytes a worker may use before it is
            replaced (0: no limit).
        max_worker_lifetime: seconds a worker serves before it is replaced (0: for
            ever).
        worker_timeout: seconds a worker may go without a heartbeat before the
            master kills it (0: never).
        thread_queue_timeout: seconds a request may wait for a worker thread (0: no
            limit).
        app_timeout: seconds an application may take to start its response (0: no
            limit).
        metrics_listen: the endpoint string the metrics are served on, or ``None``.
        access_log: a path, ``-`` (stdout), ``off``, or ``None`` (the server log).
        access_log_format: an nginx ``log_format`` template, or ``None`` for the
            combined format.
        access_log_escape: how the template's values are escaped.
        trusted_proxies: networks whose forwarding headers are believed.
        request_buffering: whether request bodies are received whole before an
            application gets a thread.
        response_buffering: whether streamed responses wait in a spool for slow
            clients instead of holding their threads.
        max_response_buffer: the most bytes one response holds so.
        graceful_timeout: seconds in-flight requests get on shutdown.
        tls_min_version: the oldest TLS version ssl: listeners accept ("1.2", "1.3").
        tls_ciphers: an OpenSSL cipher list for TLS 1.2, or None for Twisted's.
        tls_session_tickets: whether TLS sessions resume with tickets.
        tls_verify_client: whether and how TLS clients' certificates are asked
            for and checked (off, on, optional, optional_no_ca).
        tls_client_certificate: the CA certificates they are verified against.
        tls_crl: the revocation lists they are checked against, if any.
        gzip: whether mounts compress responses by default.
        gzip_types: the media types compressed.
        gzip_min_length: the shortest Content-Length compressed.
        gzip_level: the zlib compression level.
        http: limits and timeouts of the HTTP protocol.
        config_file: the configuration file it was read from, if any (for reload).
        check_config: whether to check and exit instead of serving.
        reload: whether worker processes are replaced when the source changes.
        sources: where each server setting given came from (``--listen`` or
            ``site.toml: server.listen``), for errors found after validation.
    """

    hosts: tuple[HostConfig, ...] = ()
    listen: tuple[str, ...] = ("tcp:8080",)
    threads: int = 10
    workers: int = 0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_worker_memory: int = 0
    max_worker_lifetime: float = 0.0
    worker_timeout: float = 30.0
    thread_queue_timeout: float = 60.0
    app_timeout: float = 60.0
    metrics_listen: str | None = None
    access_log: str | None = None
    access_log_format: str | None = None
    access_log_escape: str = "default"
    trusted_proxies: tuple[str, ...] = ()
    request_buffering: bool = False
    response_buffering: bool = True
    max_response_buffer: int = MAX_RESPONSE_BUFFER
    graceful_timeout: float = 30.0
    tls_min_version: str = "1.2"
    tls_ciphers: str | None = None
    tls_session_tickets: bool = True
    tls_verify_client: str = "off"
    tls_client_certificate: str | None = None
    tls_crl: str | None = None
    gzip: bool = False
    gzip_types: tuple[str, ...] = DEFAULT_GZIP_TYPES
    gzip_min_length: int = 256
    gzip_level: int = 1
    http: HttpSettings = field(default_factory=HttpSettings)
    config_file: str | None = None
    check_config: bool = False
    reload: bool = False
    sources: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> str:
        """Where setting ``name`` came from (its flag when it took the default)."""
        return self.sources.get(name) or "--" + name.replace("_", "-")

    @property
    def app(self) -> str | None:
        """The application at ``/`` of the first host, if there is one (a shortcut)."""
        for host in self.hosts[:1]:
            for mount in host.mounts:
                if mount.kind == "app" and mount.path == "/" and not mount.match:
                    return str(mount.target)
        return None


_HTTP_FIELDS = {f.name for f in fields(HttpSettings)}


def read_config_file(path: str, content: bytes | None = None) -> tuple[dict[str, Any], list[Any]]:
    """Read a TOML configuration file into its ``[server]`` table and ``[[host]]`` list.

    ``content``, when given, is the file's text as read before (a worker process
    builds the configuration its master accepted, whatever the file says now).

    Raises:
        ConfigError: naming the file, when it cannot be read, is not valid TOML, or
            has a top-level key other than ``server`` and ``host``.
    """
    if not path:
        raise ConfigError("--config", "expected the path of a TOML file, got nothing")
    name = os.path.basename(path) or path
    try:
        if content is None:
            with open(path, "rb") as stream:
                content = stream.read()
        document = tomllib.loads(content.decode("utf-8"))
    except OSError as error:
        raise ConfigError(path, f"cannot read the configuration file: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, f"not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        # TOML is UTF-8 (toml.io, "Spec"); tomllib lets the decoding error through.
        raise ConfigError(
            path,
            f"not valid TOML: not UTF-8 (byte {error.object[error.start]:#04x}"
            f" at offset {error.start})",
        ) from None
    except ValueError:
        # open()'s "embedded null byte" (caught after TOML's errors, ValueErrors too).
        if "\x00" not in path:
            raise
        raise ConfigError(path, "cannot read the configuration file: a path holds no NUL") from None
    for key in document:
        if key not in ("server", "host"):
            raise ConfigError(f"{name}: {key}", "unknown key (expected [server] or [[host]])")
    server = document.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"{name}: server", "expected a table: [server]")
    for key in server:
        setting = _BY_NAME.get(key)
        if setting is None or not setting.file:
            # check_config = true here would make every start check and exit.
            problem = "unknown key"
            if setting is not None:
                problem += f" ({setting.flag} is a command-line option only)"
            raise ConfigError(f"{name}: server.{key}", problem)
    hosts = document.get("host", [])
    if not isinstance(hosts, list):
        raise ConfigError(f"{name}: host", "expected an array of tables: [[host]]")
    return _server_paths_from(server, os.path.dirname(os.path.abspath(path))), hosts


def _server_paths_from(server: dict[str, Any], base: str) -> dict[str, Any]:
    """Read the ``[server]`` table's relative paths from the file's directory.

    As mounts' paths are: a file means the same wherever the server starts. Values of
    the wrong type are left alone for the parser to refuse.
    """

    def joined(path: str) -> str:
        return os.path.join(base, os.path.expanduser(path))

    resolved = dict(server)
    listen = resolved.get("listen")
    if isinstance(listen, str):
        resolved["listen"] = _endpoint_paths_from(listen, base)
    elif isinstance(listen, list):
        resolved["listen"] = [
            _endpoint_paths_from(entry, base) if isinstance(entry, str) else entry
            for entry in listen
        ]
    metrics_listen = resolved.get("metrics_listen")
    if isinstance(metrics_listen, str):
        resolved["metrics_listen"] = _endpoint_paths_from(metrics_listen, base)
    access_log = resolved.get("access_log")
    if isinstance(access_log, str) and access_log.strip() not in ("-", "off", ""):
        resolved["access_log"] = joined(access_log.strip())
    for name in ("tls_client_certificate", "tls_crl"):
        client_file = resolved.get(name)
        if isinstance(client_file, str) and client_file.strip():
            resolved[name] = joined(client_file.strip())
    static = resolved.get("static")
    if isinstance(static, str):
        static = [static]
    if isinstance(static, list):
        entries: list[Any] = []
        for entry in static:
            if isinstance(entry, str) and "=" in entry:
                prefix, _, directory = entry.partition("=")
                entries.append(f"{prefix}={joined(directory.strip())}")
            elif isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str):
                entries.append([entry[0], joined(entry[1])])
            else:
                entries.append(entry)
        resolved["static"] = entries
    return resolved


#: Endpoint parameters that name files, by endpoint kind: Twisted's ssl: (the key,
#: the certificate, the chain, Diffie-Hellman parameters) and unix: (the socket).
_ENDPOINT_FILE_PARAMETERS = {
    "ssl": ("privateKey", "certKey", "extraCertChain", "dhParameters"),
    "unix": ("address",),
}


def _endpoint_paths_from(description: str, base: str) -> str:
    r"""``description`` with the relative files it names read from ``base``.

    A ``haproxy:`` listener's are those of the endpoint it wraps.

    nginx reads a relative ``ssl_certificate`` from its configuration directory; a
    file's ``listen = "ssl:443:privateKey=key.pem"`` does the same here, as its
    other paths do (``~`` is expanded as theirs is). The string is split as Twisted
    splits it: parameters at each ``:``, a name at the first ``=`` of a parameter,
    and ``\`` escaping the character after it; the joined path is escaped the same
    way. The first positional parameter of ``unix:`` is its address.
    """
    inner = proxy_protocol_inner(description)
    if inner is not None:
        return f"{description.partition(':')[0]}:{_endpoint_paths_from(inner, base)}"
    parameters = split_escaped(description, ":")
    kind = parameters[0].strip().lower()
    names = _ENDPOINT_FILE_PARAMETERS.get(kind)
    if names is None:
        return description
    positional = 0
    for index in range(1, len(parameters)):
        named = split_escaped(parameters[index], "=", limit=1)
        if len(named) == 2:
            name, value = named
        elif kind == "unix" and positional == 0:
            positional += 1
            name, value = "address", named[0]
        else:
            positional += 1
            continue
        written = unescape(value)
        path = os.path.expanduser(written)
        if name not in names or not path or (path == written and os.path.isabs(path)):
            continue  # not a file, or absolute as written: left as it is
        if not os.path.isabs(path):
            path = os.path.join(base, path)
        parameters[index] = _rebuilt(named, escape(path))
    return ":".join(parameters)


def proxy_protocol_inner(description: str) -> str | None:
    """The endpoint a ``haproxy:`` listener wraps, or ``None`` for any other listener.

    Its connections open with the PROXY protocol header (HAProxy's, v1 or v2) that
    a load balancer sends, naming the client it accepted (nginx's ``listen ...
    proxy_protocol``).
    """
    kind, _, rest = description.partition(":")
    return rest if kind.strip().lower() == PROXY_PROTOCOL_KIND else None


#: The kind of a listener that reads the PROXY protocol (Twisted's name for it).
PROXY_PROTOCOL_KIND = "haproxy"


def _first_parameter(positional: list[str], named: dict[str, str], name: str) -> str:
    """A parameter Twisted takes as the first positional one or as ``name=``.

    A port, a socket's address; from :func:`endpoint_parts`. Empty when neither is given.
    """
    return named.get(name, positional[0] if positional else "")


def _has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (Unicode category Cc: NUL, LF, ESC...)."""
    return any(unicodedata.category(char) == "Cc" for char in text)


def endpoint_parts(description: str) -> tuple[str, list[str], dict[str, str]]:
    r"""Split an endpoint string into its kind, positional and ``name=value`` parameters.

    Those of the endpoint a ``haproxy:`` listener wraps (see
    :func:`proxy_protocol_inner`): what is asked of them (a port, TLS files, a
    socket path) is asked of that endpoint.

    As Twisted splits it: at ``:`` and ``=`` no backslash escapes, escapes then
    undone (a config file in a directory named ``site=prod`` gives ``site\=prod``).
    """
    kind, parameters = endpoint_parameters(description)
    positional = [value for name, value in parameters if name is None]
    named = {name: value for name, value in parameters if name is not None}
    return kind, positional, named


def endpoint_parameters(description: str) -> tuple[str, list[tuple[str | None, str]]]:
    """An endpoint string's kind and its parameters in order, as Twisted splits them.

    Escapes are undone; a positional parameter comes as ``(None, value)``. Those of
    the endpoint a ``haproxy:`` listener wraps.
    """
    inner = proxy_protocol_inner(description)
    if inner is not None:
        return endpoint_parameters(inner)
    kind, _, rest = description.partition(":")
    parameters: list[tuple[str | None, str]] = []
    for parameter in split_escaped(rest, ":") if rest else ():
        parts = split_escaped(parameter, "=", limit=1)
        if len(parts) == 2:
            parameters.append((unescape(parts[0]), unescape(parts[1])))
        else:
            parameters.append((None, unescape(parameter)))
    return kind.strip().lower(), parameters


def split_escaped(text: str, separator: str, limit: int = -1) -> list[str]:
    """``text`` split at each ``separator`` no backslash escapes, escapes kept."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator and (limit < 0 or len(parts) < limit):
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """An endpoint string field with its backslash escapes undone (as Twisted does)."""
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def escape(text: str) -> str:
    """``text`` escaped for an endpoint string field (colon, equals sign, backslash)."""
    return re.sub(r"([\\:=])", r"\\\1", text)


def _rebuilt(named: list[str], value: str) -> str:
    return f"{named[0]}={value}" if len(named) == 2 else value


def _parse_table(table: Any, keys: Sequence[Setting], where: str) -> dict[str, Any]:
    """Parse one config-file table against ``keys`` (unknown keys refused)."""
    if not isinstance(table, dict):
        raise ConfigError(where, "expected a table")
    by_name = {key.name: key for key in keys if key.file}
    parsed: dict[str, Any] = {}
    for name, raw in table.items():
        key = by_name.get(name)
        if key is None:
            raise ConfigError(f"{where}.{name}", "unknown key")
        try:
            parsed[name] = key.parse(raw)
        except _EntryError as error:
            dot = "" if error.key.startswith("[") else "."
            raise ConfigError(f"{where}.{name}{dot}{error.key}", str(error)) from None
        except ValueError as error:
            raise ConfigError(f"{where}.{name}", str(error)) from None
    for key in keys:
        if key.required and key.name not in parsed:
            raise ConfigError(f"{where}.{key.name}", "missing (required)")
    return parsed


#: Mount keys holding a file-system path; relative ones are read from the
#: configuration file's directory.
_PATH_KEYS = (
    "static",
    "tls_ca",
    "upstream_certificate",
    "upstream_key",
    "auth_basic_user_file",
)
#: The same for host keys (a table's values, for error_pages).
_HOST_PATH_KEYS = ("tls_certificate", "tls_key", "tls_client_certificate", "error_pages")


def _paths_from(table: Any, keys: Sequence[str], base: str | None) -> Any:
    """A file's table with the relative paths of ``keys`` read from ``base``.

    A key whose value is a table has the paths of its values read so.
    """
    if not isinstance(table, dict) or base is None:
        return table

    def resolved(value: Any) -> Any:
        if isinstance(value, str):
            return os.path.join(base, os.path.expanduser(value))
        if isinstance(value, dict):
            return {
                name: resolved(item) if isinstance(item, str) else item
                for name, item in value.items()
            }
        return value

    return {key: resolved(value) if key in keys else value for key, value in table.items()}


def _mount(table: Any, where: str, base: str | None) -> MountConfig:
    parsed = _parse_table(_paths_from(table, _PATH_KEYS, base), MOUNT_KEYS, where)
    _check_log_format(parsed, where)
    if "access_log" in parsed:
        parsed["access_log"] = _log_destination(parsed["access_log"], base)
    kinds = [kind for kind in MOUNT_KINDS if kind in parsed]
    if len(kinds) != 1:
        raise ConfigError(where, "a mount needs exactly one of app, static, proxy or return")
    kind = kinds[0]
    if "rate_burst" in parsed and "rate_limit" not in parsed:
        raise ConfigError(f"{where}.rate_burst", "needs rate_limit, the rate it is a burst of")
    if "rate_delay" in parsed and "rate_limit" not in parsed:
        raise ConfigError(f"{where}.rate_delay", "needs rate_limit, the rate it holds requests to")
    if "rate_delay" in parsed:
        delay, burst = parsed["rate_delay"], parsed.get("rate_burst", 0)
        if delay >= burst:
            # (No request gets further ahead of the rate than the burst: none would
            # ever wait; nginx takes a delay past the burst as nodelay.)
            raise ConfigError(
                f"{where}.rate_delay",
                f"has no effect unless less than rate_burst ({burst}): no request of a"
                " burst would be held",
            )
    if ("auth_basic" in parsed) != ("auth_basic_user_file" in parsed):
        missing = "auth_basic_user_file" if "auth_basic" in parsed else "auth_basic"
        raise ConfigError(
            where, f"auth_basic and auth_basic_user_file go together: {missing} is missing"
        )
    if parsed.get("satisfy") == "any" and not (
        (parsed.get("allow") or parsed.get("deny")) and "auth_basic" in parsed
    ):
        raise ConfigError(
            f"{where}.satisfy",
            "any needs allow or deny and auth_basic: the two it lets a client choose between",
        )
    if parsed.get("https_redirect") is True:
        raise ConfigError(
            f"{where}.https_redirect",
            "only false is meaningful here (the mount answers plain HTTP too); the"
            " redirect itself is the host's https_redirect",
        )
    both = {name.lower() for name in parsed.get("proxy_hide_header", ())} & {
        name.lower() for name in parsed.get("proxy_pass_header", ())
    }
    if both:
        raise ConfigError(
            f"{where}.proxy_pass_header",
            f"{', '.join(sorted(both))} is also in proxy_hide_header: hide it or pass it",
        )
    for name in ("auth_response_headers", "auth_response_cookies"):
        # (auth_response_cookies = false asks for nothing: no service needed.)
        if parsed.get(name) and "auth_request" not in parsed:
            raise ConfigError(f"{where}.{name}", "needs auth_request, the service they come from")
    if parsed.get("allow") == ():
        # Meant as nginx's "deny all" or as "no rule"? Read as the latter, it would
        # open the mount to everyone: neither is guessed.
        raise ConfigError(
            f"{where}.allow",
            "is empty: list the networks that may use the mount, or leave it out",
        )
    options: dict[str, Any] = {}
    for key in MOUNT_KEYS:
        if key.name in ("path", *MOUNT_KINDS):
            continue
        if key.name in parsed and key.applies_to and kind not in key.applies_to:
            allowed = " or ".join(sorted(key.applies_to))
            raise ConfigError(f"{where}.{key.name}", f"only applies to {allowed} mounts")
        if not key.applies_to or kind in key.applies_to:
            options[key.name] = parsed.get(key.name, key.default)
    if kind == "proxy":
        check_proxy_options(options, parsed[kind], where)
    match, path = parsed["path"]
    groups = None
    if match in ("~", "~*"):
        groups = Groups.of(compile_location_pattern(path, caseless=match == "~*"))
    _check_captures(kind, parsed[kind], groups, f"{where}.{kind}")
    return MountConfig(path, kind, parsed[kind], options, where, f"{where}.{kind}", match)


def _check_captures(kind: str, target: Any, groups: Groups | None, where: str) -> None:
    """Refuse a mount's captures it has not, and ``$`` text that would stay literal.

    ``groups``: those of the mount's pattern, ``None`` for a prefix or exact mount
    (which has no captures to give).

    Raises:
        ConfigError: naming ``where``, the mount's static, proxy or return key.
    """
    try:
        if kind == "static":
            if groups is not None and has_captures(target, groups):
                FileTemplate(target, groups)
            elif not os.path.isdir(target):
                # (_mount_directory let a $ through for a pattern's groups.)
                numbers = capture_numbers(target)
                if numbers and groups is None:
                    raise ValueError(
                        f"{target!r} uses ${numbers[0]}: captures are for regular-expression"
                        " mounts (path = '~ REGEX' or '~* REGEX')"
                    )
                if groups is not None:
                    FileTemplate(target, groups)  # (says which number or name is none)
                raise ValueError(f"directory {target!r} does not exist")
        elif kind == "return":
            check_captures(target, groups)
        elif kind == "proxy":
            _check_upstream_captures(target, groups)
    except ValueError as error:
        raise ConfigError(where, str(error)) from None


def _check_upstream_captures(upstreams: Sequence[Upstream], groups: Groups | None) -> None:
    """A proxy mount's upstream paths: captures only in a pattern's, one for all.

    nginx refuses a path in ``proxy_pass`` inside a regular-expression location
    ("proxy_pass cannot have URI part"), nothing being matched to replace, unless it
    has variables: then it is the whole URI sent. Here too, and as nginx's single
    ``proxy_pass`` names one URI for its upstream group, the upstreams of such a
    mount give the same path and query.

    Raises:
        ValueError: saying what is wrong.
    """
    rests = {split_upstream_url(upstream.url)[1] for upstream in upstreams}
    for upstream in upstreams:
        rest = split_upstream_url(upstream.url)[1]
        if groups is None:
            if capture_numbers(rest):
                CaptureTemplate(rest, None, url=True, target=True)  # (its message)
            if "?" in rest:
                raise ValueError(f"an upstream URL has no query or fragment, got {upstream.url!r}")
            _refuse_variables(upstream.url)
            continue
        if rest and first_reference(rest) is None:
            # nginx refuses it too ("proxy_pass cannot have URI part in location
            # given by regular expression"): nothing is matched to replace.
            raise ValueError(
                f"{upstream.url!r}: a regular-expression mount forwards the whole path,"
                " so its upstream URLs have no path, unless it uses the pattern's"
                " captures or variables (http://backend/v$1/$2$is_args$args)"
            )
        if rest:
            CaptureTemplate(rest, groups, url=True, target=True)
    if groups is not None and len(rests) > 1 and any(rests):
        raise ValueError(
            "the upstreams of a mount whose URL uses captures or variables give the same"
            f" path and query (as nginx's one proxy_pass), got {sorted(rests)!r}"
        )


def check_proxy_options(
    options: Mapping[str, Any], upstreams: Sequence[Upstream], where: str
) -> None:
    """Refuse a proxy mount's settings that contradict each other or could never act.

    Raises:
        ConfigError: naming the setting.
    """
    policy = parse_balance(options["balance"])[0]
    if policy in NO_BACKUP_POLICIES and any(upstream.backup for upstream in upstreams):
        # (nginx refuses them too: a key is to reach the same upstream every time,
        # and random draws from every upstream alike.)
        random = policy.startswith("random")
        why = "random draws from all alike" if random else "the others take their keys"
        named = options["balance"].split()[0]  # (as written: hash for consistent_hash)
        raise ConfigError(f"{where}.balance", f"{named} takes no backup upstreams: {why}")
    if options["retry_non_idempotent"] and not options["retry"]:
        raise ConfigError(f"{where}.retry_non_idempotent", "has no effect with retry = false")
    for name in ("retry_statuses", "retry_on_timeout", "retry_tries", "retry_timeout"):
        if options[name] and not options["retry"]:
            raise ConfigError(f"{where}.{name}", "has no effect with retry = false")
        if options[name] and len(upstreams) < 2:
            # They are about sending a request to another upstream (the second try of
            # the keep-alive race, on the same one, is not bounded by them).
            raise ConfigError(
                f"{where}.{name}", "needs more than one upstream: it is about trying another"
            )
    for name in ("retry_statuses", "retry_on_timeout"):
        if options[name] and options["retry_tries"] == 1:
            raise ConfigError(
                f"{where}.{name}", "has no effect with retry_tries = 1 (no other upstream)"
            )
    if options["retry_on_timeout"] and not options["response_timeout"]:
        raise ConfigError(
            f"{where}.retry_on_timeout", "has no effect with response_timeout = 0 (no timeout)"
        )


def default_options(kind: str) -> dict[str, Any]:
    """The options a mount of ``kind`` gets when it sets none (the schema's defaults)."""
    return {
        key.name: key.default
        for key in MOUNT_KEYS
        if key.name not in ("path", *MOUNT_KINDS) and (not key.applies_to or kind in key.applies_to)
    }


def mount_or_server(mount: MountConfig, config: ServerConfig, name: str) -> Any:
    """A setting of the mount's own where it gives one, else the server's.

    For ``gzip``, ``app_timeout``, ``response_buffering`` and ``max_response_buffer``,
    which a mount may give in place of the server's of the same name (nginx's
    directive in a location).
    """
    chosen = mount.options.get(name)
    return getattr(config, name) if chosen is None else chosen


def _check_mounts(mounts: Sequence[MountConfig], where: str) -> None:
    """Two mounts may share a path only when one is a static mount with fallthrough.

    A path is a place: ``/x`` and ``^~ /x`` are one (nginx refuses the two as a
    duplicate location), ``= /x`` another, each pattern with its modifier another.
    A regular-expression static mount with fallthrough needs that partner: no
    other mount lies below a pattern for its misses to go to.
    """
    by_place: dict[tuple[str, str], list[MountConfig]] = {}
    for mount in mounts:
        by_place.setdefault(mount.place, []).append(mount)
    for group in by_place.values():
        falls = [m for m in group if m.kind == "static" and m.options.get("fallthrough")]
        if len(group) > 2 or (len(group) == 2 and len(falls) != 1):
            raise ConfigError(
                group[-1].where,
                f"path {group[-1].location!r} is already mounted by {group[0].where}",
            )
        if falls and falls[0].is_pattern and len(group) == 1:
            raise ConfigError(
                f"{falls[0].where}.fallthrough",
                f"a {falls[0].match} mount passes its misses only to a mount at the same"
                f" path ({falls[0].location!r}, as nginx's try_files $uri @app): none is"
                " below a regular expression",
            )
    if not mounts:
        raise ConfigError(where, "a host needs at least one [[host.mount]]")


def _claim_names(names: Sequence[str], owner: str, where: str, names_seen: dict[str, str]) -> None:
    """Record that ``owner`` answers to ``names``; a name already taken is an error."""
    for name in names:
        for key in claimed_names(name):
            if key in names_seen:
                raise ConfigError(where, f"{name!r} is already a name of {names_seen[key]}")
            names_seen[key] = owner


def _hosts(
    raw_hosts: Sequence[Any],
    file: str,
    base: str | None,
    names_seen: dict[str, str],
    *,
    https_port: Callable[[str | int, str], int | None],
    server_https_port: Callable[[], int | None],
) -> tuple[HostConfig, ...]:
    hosts = []
    default_where = None
    for index, table in enumerate(raw_hosts):
        where = f"{file}: host[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(where, "expected a table: [[host]]")
        mounts_raw = table.get("mount", [])
        keys = _paths_from({k: v for k, v in table.items() if k != "mount"}, _HOST_PATH_KEYS, base)
        parsed = _parse_table(keys, HOST_KEYS, where)
        _check_log_format(parsed, where)
        if "tls_key" in parsed and "tls_certificate" not in parsed:
            raise ConfigError(f"{where}.tls_key", "needs tls_certificate, the certificate it signs")
        if not isinstance(mounts_raw, list):
            raise ConfigError(f"{where}.mount", "expected an array of tables: [[host.mount]]")
        mounts = tuple(
            _mount(mount, f"{where}.mount[{number}]", base)
            for number, mount in enumerate(mounts_raw)
        )
        _check_mounts(mounts, where)
        for mount in mounts:
            if mount.options.get("proxy_intercept_errors") and not parsed.get("error_pages"):
                raise ConfigError(
                    f"{mount.where}.proxy_intercept_errors",
                    "the host has no error_pages to send in place of the upstream's answers",
                )
        _claim_names(parsed["names"], where, f"{where}.names", names_seen)
        default = parsed.get("default", False)
        if default:
            if default_where is not None:
                raise ConfigError(
                    f"{where}.default", f"{default_where} is already the default host"
                )
            default_where = where
        if "https_redirect" in parsed:
            redirect = https_port(parsed["https_redirect"], f"{where}.https_redirect")
        else:
            redirect = server_https_port()
        hosts.append(
            HostConfig(
                parsed["names"],
                default,
                mounts,
                where,
                parsed.get("tls_certificate"),
                parsed.get("tls_key"),
                redirect,
                parsed.get("error_pages", ()),
                parsed.get("tls_verify_client"),
                parsed.get("tls_client_certificate"),
                _log_destination(parsed.get("access_log"), base),
                parsed.get("rewrite", ()),
                parsed.get("access_log_format"),
            )
        )
    return tuple(hosts)


def _check_log_format(parsed: Mapping[str, Any], where: str) -> None:
    """A host's or mount's access_log_format formats its own access_log: refuse it alone.

    Raises:
        ConfigError: naming the key.
    """
    if "access_log_format" in parsed and parsed.get("access_log") in (None, "off"):
        raise ConfigError(
            f"{where}.access_log_format", "needs access_log here, the file whose lines it formats"
        )


def _log_destination(value: str | None, base: str | None) -> str | None:
    """An access log destination of the file, its relative path read from ``base``."""
    if value is None or value in ("-", "off"):
        return value
    # Normalised, so two spellings of one file are one log.
    return os.path.normpath(os.path.join(base or "", os.path.expanduser(value)))


def _https_port(choice: str | int, where: str, listen: Sequence[str]) -> int | None:
    """The port an ``https_redirect`` choice sends clients to (``None``: no redirect).

    Raises:
        ConfigError: for ``on`` without an ``ssl:`` listener whose port is known.
    """
    if choice == "off":
        return None
    if isinstance(choice, int):
        return choice
    for description in listen:
        kind, positional, named = endpoint_parts(description)
        if kind != "ssl":
            continue
        # The port is the first positional parameter, or port= (as Twisted reads it).
        port = _first_parameter(positional, named, "port").strip()
        if re.fullmatch("[0-9]+", port) and int(port) > 0:
            return int(port)
        raise ConfigError(
            where,
            f"the port of {description!r} is not known before it listens: give the port"
            " clients reach TLS on (https_redirect = 443)",
        )
    raise ConfigError(
        where, "on needs an ssl: listener; without one, give the port clients reach TLS on"
    )


def _vhost_hosts(
    specs: Sequence[VhostSpec],
    flag: str,
    names_seen: dict[str, str],
    server_https_port: Callable[[], int | None],
) -> tuple[HostConfig, ...]:
    """The hosts of the ``--vhost`` values: one per set of names, in order.

    Values with the same names (in any order or case) are mounts of one host; a
    name shared by two different sets, or with a ``[[host]]``, is an error.
    """
    groups: dict[frozenset[str], list[VhostSpec]] = {}
    for spec in specs:
        groups.setdefault(frozenset(normalize_name(name) for name in spec.names), []).append(spec)
    hosts = []
    names_of: dict[str, tuple[str, ...]] = {}
    for group in groups.values():
        mounts = tuple(
            MountConfig(
                spec.path,
                spec.kind,
                spec.target,
                default_options(spec.kind),
                f"{flag} {spec.text!r}",
            )
            for spec in group
        )
        where = mounts[0].where
        _check_mounts(mounts, where)
        for name in group[0].names:
            owners = [names_seen.get(key, "") for key in claimed_names(name)]
            owner = next((owner for owner in owners if owner in names_of), "")
            if owner:
                # Most likely a mount meant for that host, with only some of its names.
                raise ConfigError(
                    where,
                    f"{name!r} is already a name of {owner}; to add a mount to that host,"
                    f" give all its names: {','.join(names_of[owner])}",
                )
        _claim_names(group[0].names, where, where, names_seen)
        names_of[where] = group[0].names
        hosts.append(
            HostConfig(group[0].names, False, mounts, where, https_redirect=server_https_port())
        )
    return tuple(hosts)


def _written_specs(raw: Any) -> list[str]:
    """The ``PREFIX=TARGET`` values of a ``--static``/``--proxy`` as they were written.

    ``raw`` already parsed (see :func:`_mount_spec`): one string, or a list of
    strings and ``(prefix, target)`` pairs.
    """
    items = [raw] if isinstance(raw, str) else list(raw)
    written = []
    for item in items:
        if isinstance(item, str):
            written.append(item)
            continue
        prefix, target = item
        if isinstance(target, (list, tuple)):
            target = ", ".join(str(part) for part in target)
        written.append(f"{prefix}={target}")
    return written


def host_verification(host: HostConfig, config: ServerConfig) -> tuple[str, str | None]:
    """The tls_verify_client mode and CA file that hold for ``host``.

    Its own where it gives them, else the server's: a host that sets only the mode
    verifies against the server's CA file; one that turns verification off has none.
    """
    mode = host.tls_verify_client or config.tls_verify_client
    if mode == "off":
        return mode, None
    return mode, host.tls_client_certificate or config.tls_client_certificate


def _check_verification(
    mode: str,
    path: str | None,
    listen: Sequence[str],
    *,
    own_path: str | None,
    mode_where: str,
    path_where: str,
    elsewhere: str = "",
) -> None:
    """Refuse a client verification that could not do what it says.

    A CA file that does not load (read here, not only when the listeners are
    built: a reload with one is then refused whole, before its routing table
    replaces the one serving); on or optional without a CA file, with nothing to
    verify against (nginx refuses them so too); any mode without an ssl: listener,
    where no client is ever asked and every request would pass unchecked.

    Args:
        mode: the mode in force.
        path: the CA file in force.
        listen: the listeners.
        own_path: the CA file this setting gives itself (checked here), if any.
        mode_where: where the mode is given, for errors.
        path_where: where ``own_path`` is given.
        elsewhere: where else a CA file may be given, said in the error.
    """
    if own_path is not None:
        try:
            load_client_cas(own_path)
        except (OSError, ValueError) as error:
            raise ConfigError(path_where, f"{own_path!r}: {error}") from None
    if mode in ("on", "optional") and path is None:
        raise ConfigError(
            mode_where,
            f"needs tls_client_certificate{elsewhere}, the CA certificates client"
            " certificates are verified against",
        )
    if mode != "off" and not any(endpoint_parts(text)[0] == "ssl" for text in listen):
        raise ConfigError(
            mode_where, "no listener is ssl:, so no client would be asked for a certificate"
        )


def _check_host_verification(hosts: Sequence[HostConfig], config: ServerConfig) -> None:
    """Each host's client verification can be done (as the server's is checked).

    The server's CA file without the server's mode is taken when a host asks (it is
    then that host's CA file): nginx's ssl_client_certificate in http {} beside
    ssl_verify_client in one server {}.
    """
    if (
        config.tls_verify_client == "off"
        and config.tls_client_certificate is not None
        and all(host_verification(host, config)[0] == "off" for host in hosts)
    ):
        raise ConfigError(
            config.source("tls_client_certificate"),
            "clients are not asked for certificates: set tls_verify_client"
            " (on, optional or optional_no_ca), in [server] or in a [[host]]",
        )
    if config.tls_crl is not None:
        _check_revocation_lists(hosts, config)
    for host in hosts:
        mode, path = host_verification(host, config)
        if host.tls_client_certificate is not None and mode == "off":
            raise ConfigError(
                f"{host.where}.tls_client_certificate",
                "clients of this host are not asked for certificates: set"
                " tls_verify_client (here or in [server])",
            )
        _check_verification(
            mode,
            path,
            config.listen,
            own_path=host.tls_client_certificate,
            mode_where=f"{host.where}.tls_verify_client",
            path_where=f"{host.where}.tls_client_certificate",
            elsewhere=" (here or in [server])",
        )


def _check_revocation_lists(hosts: Sequence[HostConfig], config: ServerConfig) -> None:
    """tls_crl loads, and some client is asked for a certificate it could revoke.

    Read here as the CA file is, so that a reload with a file that does not load is
    refused whole.
    """
    assert config.tls_crl is not None
    where = config.source("tls_crl")
    try:
        load_revocation_lists(config.tls_crl)
    except (OSError, ValueError) as error:
        raise ConfigError(where, f"{config.tls_crl!r}: {error}") from None
    if config.tls_verify_client == "off" and all(
        host_verification(host, config)[0] == "off" for host in hosts
    ):
        raise ConfigError(
            where,
            "clients are not asked for certificates: set tls_verify_client"
            " (on, optional or optional_no_ca), in [server] or in a [[host]]",
        )


def build_config(
    values: Mapping[str, Any],
    *,
    source: Callable[[str], str],
    hosts: Sequence[Any] = (),
    file: str | None = None,
) -> ServerConfig:
    """Check settings and hosts and build a :class:`ServerConfig`.

    Args:
        values: setting name to raw value (command-line text or ``[server]`` value);
            missing names take their defaults. The caller merges the command line
            over the file.
        source: maps a setting name to how the user wrote it (``--threads``, or
            ``site.toml: server.threads``), for error messages.
        hosts: the raw ``[[host]]`` tables of the configuration file.
        file: the configuration file's path, if any.

    Raises:
        ConfigError: for an unknown name, a value that does not parse, or a
            configuration that contradicts itself.
    """
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        setting = _BY_NAME.get(name)
        if setting is None:
            raise ConfigError(source(name), "unknown setting")
        try:
            parsed[name] = setting.parse(raw)
        except _ItemError as error:
            raise ConfigError(f"{source(name)} {error.item!r}", str(error)) from None
        except ValueError as error:
            raise ConfigError(source(name), str(error)) from None
    resolved = {setting.name: parsed.get(setting.name, setting.default) for setting in SETTINGS}
    http = HttpSettings(**{k: v for k, v in resolved.items() if k in _HTTP_FIELDS})
    file_name = os.path.basename(file) if file else "config"
    base = os.path.dirname(os.path.abspath(file)) if file else None
    names_seen: dict[str, str] = {}
    listen = resolved["listen"]

    def https_port(choice: str | int, where: str) -> int | None:
        return _https_port(choice, where, listen)

    def server_https_port() -> int | None:
        # Resolved for the hosts that take it: a choice every host overrides is no
        # error, even where it could not be followed.
        return https_port(resolved["https_redirect"], source("https_redirect"))

    host_configs = _hosts(
        hosts,
        file_name,
        base,
        names_seen,
        https_port=https_port,
        server_https_port=server_https_port,
    )
    single_site: list[MountConfig] = []
    if resolved["app"] is not None:
        single_site.append(
            MountConfig("/", "app", resolved["app"], default_options("app"), source("app"))
        )
    for kind in ("static", "proxy", "return"):
        # Errors name a mount by what the user wrote (--static '/s=./s'), not by the
        # parsed value (an absolute directory, a tuple of Upstream).
        written = _written_specs(values.get(kind, ()))
        for (prefix, target), text in zip(resolved[kind], written, strict=True):
            where = f"{source(kind)} {text!r}"
            if (
                kind == "proxy"
                and source(kind).startswith("--")
                and any(upstream.down for upstream in target)
            ):
                raise ConfigError(
                    where,
                    "down is for an upstream in a configuration file, where a reload can"
                    " bring it back; on the command line it would never serve",
                )
            single_site.append(MountConfig(prefix, kind, target, default_options(kind), where))
    if single_site:
        if host_configs:
            raise ConfigError(
                single_site[0].where,
                "the configuration file has [[host]] tables: put this mount in one of them",
            )
        _check_mounts(single_site, "command line")
        host_configs = (
            HostConfig(
                (), True, tuple(single_site), "command line", https_redirect=server_https_port()
            ),
        )
    # Added to the file's hosts: a name in both is the duplicate-name error.
    host_configs += _vhost_hosts(resolved["vhost"], source("vhost"), names_seen, server_https_port)
    if not host_configs:
        raise ConfigError(
            "configuration",
            "nothing to serve: give --app, --static, --proxy, --return or --vhost,"
            " or [[host]] tables in --config",
        )
    certified = [host for host in host_configs if host.tls_certificate]
    if certified and not any(endpoint_parts(text)[0] == "ssl" for text in resolved["listen"]):
        raise ConfigError(
            f"{certified[0].where}.tls_certificate",
            "no listener serves it: add an ssl: endpoint to listen (its certKey= is"
            " what clients naming no such host get)",
        )
    # (The file without a mode is refused once the hosts are known, unless one of
    # them asks: see _check_host_verification.)
    _check_verification(
        resolved["tls_verify_client"],
        resolved["tls_client_certificate"],
        resolved["listen"],
        own_path=resolved["tls_client_certificate"],
        mode_where=source("tls_verify_client"),
        path_where=source("tls_client_certificate"),
    )
    metrics = resolved["metrics_listen"]
    address = None if metrics is None else _listener_address(metrics)
    for description in listen if metrics is not None else ():
        # (It would fail as "address already in use", as a listen given twice.)
        if description == metrics or (
            address is not None and _listener_address(description) == address
        ):
            spelt = "" if description == metrics else f" ({description!r})"
            raise ConfigError(
                source("metrics_listen"),
                f"{metrics!r} is a listen too{spelt}: give the metrics their own",
            )
    for name in ("max_requests", "max_worker_memory", "max_worker_lifetime"):
        if resolved[name] and not resolved["workers"]:
            raise ConfigError(
                source(name),
                "needs workers (1 or more): a worker process is replaced, the process"
                " started is not",
            )
    config = ServerConfig(
        hosts=host_configs,
        listen=tuple(resolved["listen"]),
        threads=resolved["threads"],
        workers=resolved["workers"],
        max_requests=resolved["max_requests"],
        max_requests_jitter=resolved["max_requests_jitter"],
        max_worker_memory=resolved["max_worker_memory"],
        max_worker_lifetime=resolved["max_worker_lifetime"],
        worker_timeout=resolved["worker_timeout"],
        thread_queue_timeout=resolved["thread_queue_timeout"],
        app_timeout=resolved["app_timeout"],
        metrics_listen=resolved["metrics_listen"],
        access_log=resolved["access_log"],
        access_log_format=resolved["access_log_format"],
        access_log_escape=resolved["access_log_escape"],
        trusted_proxies=resolved["trusted_proxies"],
        request_buffering=resolved["request_buffering"],
        response_buffering=resolved["response_buffering"],
        max_response_buffer=resolved["max_response_buffer"],
        graceful_timeout=resolved["graceful_timeout"],
        tls_min_version=resolved["tls_min_version"],
        tls_ciphers=resolved["tls_ciphers"],
        tls_session_tickets=resolved["tls_session_tickets"],
        tls_verify_client=resolved["tls_verify_client"],
        tls_client_certificate=resolved["tls_client_certificate"],
        tls_crl=resolved["tls_crl"],
        gzip=resolved["gzip"],
        gzip_types=resolved["gzip_types"],
        gzip_min_length=resolved["gzip_min_length"],
        gzip_level=resolved["gzip_level"],
        http=http,
        config_file=resolved["config"] or file,
        check_config=resolved["check_config"],
        reload=resolved["reload"],
        sources={name: source(name) for name in values},
    )
    _check_host_verification(host_configs, config)
    return config
