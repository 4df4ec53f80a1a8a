"""The ``twistd wsgi`` / ``twist wsgi`` command: options and ``makeService``.

The options are generated from :data:`twistwsgi.config.SETTINGS`. Every start-up
problem (a bad value, an application that does not import, an endpoint string that
does not parse, a port that cannot be bound) is printed as one line on stderr and the
process exits with status 2; nothing starts half-configured.

This is the only module that touches the global reactor.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python import usage

from twistwsgi.appload import AppLoadError, load_app
from twistwsgi.config import SETTINGS, ConfigError, ServerConfig, Setting, build_config
from twistwsgi.service import ServerService, make_service

__all__ = ["Options", "exit_with_error", "makeService"]

EXIT_CONFIG_ERROR = 2


def exit_with_error(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 2.

    The process's own stderr is used: once ``twistd`` has started logging,
    ``sys.stderr`` feeds its log rather than the terminal.
    """
    stream = sys.__stderr__ or sys.stderr
    stream.write(f"twistwsgi: error: {message}\n")
    stream.flush()
    raise SystemExit(EXIT_CONFIG_ERROR)


def _help(setting: Setting) -> str:
    default = setting.default
    if setting.repeatable and isinstance(default, tuple):
        default = ", ".join(default)
    shown = f" [default: {default}]" if default not in (None, "") else ""
    return f"{setting.help}{shown}"


def _repeatable_option(name: str) -> Any:
    def collect(self: Options, value: str) -> None:
        self.given.setdefault(name, []).append(value)

    collect.__doc__ = _help(next(s for s in SETTINGS if s.name == name))
    return collect


class Options(usage.Options):
    """Command-line options of ``twistd wsgi``, generated from the settings schema."""

    synopsis = "--app MODULE:NAME [options]"
    longdesc = (
        "Serve a WSGI application over HTTP/1.1 on any Twisted endpoint. Every option"
        " is described in docs/cli.md."
    )
    optParameters: list[list[Any]] = [  # noqa: RUF012 - read by Twisted as a class attribute
        [setting.flag[2:], None, None, _help(setting)]
        for setting in SETTINGS
        if not setting.repeatable
    ]

    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, Any] = {}
        self.config = ServerConfig()

    def postOptions(self) -> None:
        """Validate every given option into a :class:`ServerConfig` (exit 2 if bad)."""
        for setting in SETTINGS:
            if not setting.repeatable and self[setting.flag[2:]] is not None:
                self.given[setting.name] = self[setting.flag[2:]]
        flags = {setting.name: setting.flag for setting in SETTINGS}
        try:
            self.config = build_config(self.given, source=lambda name: flags.get(name, name))
        except ConfigError as error:
            exit_with_error(str(error))
        if self.config.app is None:
            exit_with_error("--app is required (e.g. --app myproject.wsgi:application)")


for _setting in SETTINGS:
    if _setting.repeatable:
        setattr(Options, "opt_" + _setting.name, _repeatable_option(_setting.name))


def build_endpoints(
    reactor: Any, descriptions: tuple[str, ...]
) -> list[tuple[str, IStreamServerEndpoint]]:
    """Turn endpoint strings into endpoints; exit 2 naming a bad one."""
    endpoints = []
    for description in descriptions:
        try:
            endpoints.append((description, serverFromString(reactor, description)))
        except Exception as error:
            exit_with_error(f"--listen {description!r}: {type(error).__name__}: {error}")
    return endpoints


def makeService(options: Options) -> ServerService:
    """Build the server ``twistd``/``twist`` runs (called after option parsing)."""
    from twisted.internet import reactor  # noqa: PLC0415 - installed by twistd first

    config = options.config
    assert config.app is not None
    try:
        app = load_app(config.app)
    except AppLoadError as error:
        exit_with_error(str(error))
    endpoints = build_endpoints(reactor, config.listen)
    service = make_service(
        config, app, reactor=reactor, endpoints=endpoints, on_listen_error=exit_with_error
    )
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_signal, reactor)
    return service


def _exit_zero_after_signal(reactor: Any) -> None:
    """Make a graceful stop on SIGTERM/SIGINT end with exit status 0.

    ``twistd`` and ``twist`` re-raise the signal that stopped the reactor once it
    has stopped (the ``_exitSignal`` attribute they read), so the process would
    report "killed by SIGTERM". For this server SIGTERM is the normal way to end
    after in-flight requests are drained, and supervisors expect 0 for that.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None
