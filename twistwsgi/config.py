"""Every setting of the server, declared once, and the validated :class:`ServerConfig`.

Each :class:`Setting` declares a name, a kind (which parses command-line text and
checks config-file values), a default and the help text. The command line
(``twistd wsgi --threads 16``) is generated from these declarations, and the
reference documentation is too, so the three cannot drift apart. Validation errors
are :class:`ConfigError` values that name where the bad value came from and what is
wrong with it, in one line; the CLI prints that line and exits with status 2.

Pure logic: no Twisted import. Endpoint strings are only checked for shape here; the
CLI layer builds them with Twisted and reports a failure through the same error.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from twistwsgi.http.settings import HttpSettings

__all__ = [
    "SETTINGS",
    "AppSpec",
    "ConfigError",
    "ServerConfig",
    "Setting",
    "build_config",
    "parse_app_spec",
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
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite duration >= 0, got {value!r}")
    return seconds


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _endpoint(value: Any) -> str:
    text = _text(value).strip()
    if not text or ":" not in text:
        raise ValueError(
            f"expected a Twisted endpoint string such as tcp:8080 or unix:/run/app.sock,"
            f" got {value!r}"
        )
    return text


def _endpoints(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"expected one endpoint string or a list of them, got {value!r}")
    return tuple(_endpoint(item) for item in items)


def _access_log(value: Any) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("expected a path, '-' for stdout, or 'off'")
    return text


def _app(value: Any) -> str:
    text = _text(value).strip()
    parse_app_spec(text)
    return text


INT = Kind("INT", _whole_number, "a whole number")
SIZE = Kind("SIZE", _size, "bytes, with an optional k, m or g suffix (powers of 1024)")
DURATION = Kind(
    "SECONDS", _duration, "seconds, or a number with ms, s, m or h (e.g. 500ms, 30s, 5m)"
)
TEXT = Kind("TEXT", _text, "a string")
ENDPOINT = Kind("ENDPOINT", _endpoints, "a Twisted server endpoint string")
ACCESS_LOG = Kind("PATH", _access_log, "a file path, - for stdout, or off")
APP = Kind("MODULE:NAME", _app, "module:name, or module:factory(args) to call a factory")


@dataclass(frozen=True)
class Setting:
    """One setting: its name, kind, default and help.

    Attributes:
        name: the key in ``[server]`` and, with ``-`` for ``_``, the ``--flag``.
        kind: how values are parsed and checked.
        default: the value when none is given.
        help: one or two sentences for ``--help`` and the reference.
        repeatable: whether the flag may be given several times (a list).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    repeatable: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")


_DEFAULT_HTTP = HttpSettings()

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "app",
        APP,
        None,
        "The WSGI application to serve: module:name, or module:factory() to call a"
        " factory (literal arguments allowed, e.g. module:create_app('prod')).",
    ),
    Setting(
        "listen",
        ENDPOINT,
        ("tcp:8080",),
        "Where to listen, as a Twisted endpoint string (tcp:8080,"
        " ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/app.sock,"
        " systemd:domain=INET:index=0). Repeat for several.",
        repeatable=True,
    ),
    Setting(
        "threads",
        INT,
        10,
        "Threads that run the application. 0 runs it in the reactor thread, for"
        " applications that never block.",
    ),
    Setting(
        "access_log",
        ACCESS_LOG,
        None,
        "Where the access log (combined format) goes: a file path, - for stdout, or"
        " off. By default it goes to the server log.",
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
        "How long an idle persistent connection stays open.",
    ),
    Setting(
        "header_timeout",
        DURATION,
        _DEFAULT_HTTP.header_timeout,
        "How long a client has to send a whole request head (408 after; slowloris defence).",
    ),
    Setting(
        "body_timeout",
        DURATION,
        _DEFAULT_HTTP.body_timeout,
        "How long the server waits between two reads of a request body (408 after).",
    ),
    Setting(
        "send_timeout",
        DURATION,
        _DEFAULT_HTTP.send_timeout,
        "How long a client may leave a response unread before the connection is dropped.",
    ),
    Setting(
        "max_request_line",
        SIZE,
        _DEFAULT_HTTP.max_request_line,
        "Longest request-target accepted (414 above).",
    ),
    Setting(
        "max_header_field",
        SIZE,
        _DEFAULT_HTTP.max_header_field,
        "Longest single header field line accepted (431 above).",
    ),
    Setting(
        "max_header_count",
        INT,
        _DEFAULT_HTTP.max_header_count,
        "Most header fields accepted in a request (431 above).",
    ),
    Setting(
        "max_header_total",
        SIZE,
        _DEFAULT_HTTP.max_header_total,
        "Largest header section accepted, in bytes (431 above).",
    ),
    Setting(
        "max_body",
        SIZE,
        _DEFAULT_HTTP.max_body,
        "Largest request body accepted (413 above, decided from Content-Length before"
        " the body is read). 0 means no limit.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


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

    Factory arguments must be Python literals; nothing in the string is executed.

    Raises:
        ValueError: for anything else, with a message saying what was expected.
    """
    module, sep, rest = text.partition(":")
    if not sep or not _DOTTED.fullmatch(module) or not rest:
        raise ValueError(f"expected module:name or module:factory(), got {text!r}")
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
class ServerConfig:
    """The validated configuration the server is built from.

    Attributes:
        app: the application reference (``module:name``), or ``None``.
        listen: endpoint strings to listen on.
        threads: worker threads; 0 runs the application in the reactor thread.
        access_log: a path, ``-`` (stdout), ``off``, or ``None`` (the server log).
        graceful_timeout: seconds in-flight requests get on shutdown.
        http: limits and timeouts of the HTTP protocol.
    """

    app: str | None = None
    listen: tuple[str, ...] = ("tcp:8080",)
    threads: int = 10
    access_log: str | None = None
    graceful_timeout: float = 30.0
    http: HttpSettings = field(default_factory=HttpSettings)


_HTTP_FIELDS = {f.name for f in fields(HttpSettings)}


def build_config(values: Mapping[str, Any], *, source: Callable[[str], str]) -> ServerConfig:
    """Check ``values`` against :data:`SETTINGS` and build a :class:`ServerConfig`.

    Args:
        values: setting name to raw value (command-line text or config-file value);
            missing names take their defaults.
        source: maps a setting name to how the user wrote it (``--threads``, or
            ``site.toml: server.threads``), for error messages.

    Raises:
        ConfigError: for an unknown name or a value that does not parse.
    """
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        setting = _BY_NAME.get(name)
        if setting is None:
            raise ConfigError(source(name), "unknown setting")
        try:
            parsed[name] = setting.kind.parse(raw)
        except ValueError as error:
            raise ConfigError(source(name), str(error)) from None
    resolved = {setting.name: parsed.get(setting.name, setting.default) for setting in SETTINGS}
    http = HttpSettings(**{k: v for k, v in resolved.items() if k in _HTTP_FIELDS})
    return ServerConfig(
        app=resolved["app"],
        listen=tuple(resolved["listen"]),
        threads=resolved["threads"],
        access_log=resolved["access_log"],
        graceful_timeout=resolved["graceful_timeout"],
        http=http,
    )
