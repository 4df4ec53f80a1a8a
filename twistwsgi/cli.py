"""The ``twistd wsgi`` / ``twist wsgi`` command: options and ``makeService``.

The options are generated from :data:`twistwsgi.config.SETTINGS`. Every start-up
problem (a bad value, an application that does not import, an endpoint string that
does not parse, a port that cannot be bound) is printed as one line on stderr and the
process exits with status 2; nothing starts half-configured.

This is the only module that touches the global reactor.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from twistwsgi.config import (
    BOOL,
    SETTINGS,
    ConfigError,
    ServerConfig,
    Setting,
    build_config,
    read_config_file,
)
from twistwsgi.dispatch import read_inline, skip_log_context
from twistwsgi.service import ServerService, make_service
from twistwsgi.site import describe_routing

__all__ = ["Options", "exit_with_error", "makeService"]

EXIT_CONFIG_ERROR = 2

_log = Logger(namespace="twistwsgi.cli")


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
    more_than_zero = " More than 0." if setting.positive else ""
    return f"{setting.help}{more_than_zero}{shown}"


def _repeatable_option(name: str) -> Any:
    def collect(self: Options, value: str) -> None:
        self.given.setdefault(name, []).append(value)

    collect.__doc__ = _help(next(s for s in SETTINGS if s.name == name))
    return collect


class Options(usage.Options):
    """Command-line options of ``twistd wsgi``, generated from the settings schema."""

    synopsis = (
        "(--app MODULE:NAME | --static PREFIX=DIR | --proxy PREFIX=URL"
        " | --vhost NAMES[/PREFIX]=KIND:TARGET | --config FILE) [options]"
    )
    longdesc = (
        "Serve WSGI applications, static files and proxied upstreams over HTTP/1.1 on"
        " any Twisted endpoint. Every option is described in docs/cli.md, the"
        " configuration file in docs/configuration.md."
    )
    optParameters: list[list[Any]] = [  # noqa: RUF012 - read by Twisted as a class attribute
        [setting.flag[2:], None, None, _help(setting)]
        for setting in SETTINGS
        if not setting.repeatable and setting.kind is not BOOL
    ]
    optFlags: list[list[Any]] = [  # noqa: RUF012 - read by Twisted as a class attribute
        [setting.flag[2:], None, setting.help] for setting in SETTINGS if setting.kind is BOOL
    ]

    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, Any] = {}
        self.config = ServerConfig()

    def postOptions(self) -> None:
        """Validate every given option (and the config file) into a ServerConfig.

        Exits with status 2 and one line on stderr when something is wrong.
        """
        for setting in SETTINGS:
            if setting.repeatable:
                continue
            value = self[setting.flag[2:]]
            if setting.kind is BOOL:
                if value:
                    self.given[setting.name] = True
            elif value is not None:
                self.given[setting.name] = value
        try:
            self.config = load_config(self.given)
        except ConfigError as error:
            exit_with_error(str(error))


for _setting in SETTINGS:
    if _setting.repeatable:
        setattr(Options, "opt_" + _setting.name, _repeatable_option(_setting.name))


def load_config(given: dict[str, Any]) -> ServerConfig:
    """Build the configuration from command-line values and the --config file.

    The file's ``[server]`` values come first; every option given on the command
    line overrides its counterpart. The hosts of ``--vhost`` are added to the file's
    ``[[host]]`` tables (a name in both is an error). Called again on SIGHUP to reload.

    Raises:
        ConfigError: naming the flag, or the file and key path, that is wrong.
    """
    flags = {setting.name: setting.flag for setting in SETTINGS}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    hosts: list[Any] = []
    path = given.get("config")
    if path is not None:
        server, hosts = read_config_file(path)
        name = os.path.basename(path)
        for key, value in server.items():
            values[key] = value
            sources[key] = f"{name}: server.{key}"
    for key, value in given.items():
        values[key] = value
        sources[key] = flags.get(key, key)
    return build_config(values, source=lambda key: sources.get(key, key), hosts=hosts, file=path)


def build_endpoints(reactor: Any, config: ServerConfig) -> list[tuple[str, IStreamServerEndpoint]]:
    """Turn the endpoint strings into endpoints; exit 2 naming a bad one."""
    endpoints = []
    for description in config.listen:
        try:
            endpoints.append((description, serverFromString(reactor, description)))
        except Exception as error:
            exit_with_error(
                f"{config.source('listen')} {description!r}: {type(error).__name__}: {error}"
            )
    return endpoints


def makeService(options: Options) -> ServerService:
    """Build the server ``twistd``/``twist`` runs (called after option parsing)."""
    from twisted.internet import reactor  # noqa: PLC0415 - installed by twistd first

    config = options.config
    endpoints = build_endpoints(reactor, config)
    try:
        service = make_service(
            config, reactor=reactor, endpoints=endpoints, on_listen_error=exit_with_error
        )
    except ConfigError as error:
        exit_with_error(str(error))
    if config.check_config:
        # The service never started: stopping it only lets go of what building it
        # opened (the access log file, the proxies' pools), synchronously.
        service.stopService()
        sys.stdout.write(describe_routing(config))
        sys.stdout.write("configuration OK\n")
        sys.stdout.flush()
        raise SystemExit(0)
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_signal, reactor)
    reactor.callWhenRunning(_reload_on_sighup, reactor, service, dict(options.given))
    # The process is ours: dispatch socket events without Twisted's per-event log
    # context, which nothing of ours reads (see twistwsgi.dispatch for the gain).
    skip_log_context()
    read_inline(reactor)
    return service


def _reload_on_sighup(reactor: Any, service: ServerService, given: dict[str, Any]) -> None:
    """Install the SIGHUP handler: re-read the configuration and swap it in.

    The handler only schedules the work; the reload runs in the reactor loop.
    """

    def reload() -> None:
        try:
            config = load_config(given)
        except ConfigError as error:
            _log.error(
                "Reload refused, the old configuration keeps serving: {error}", error=str(error)
            )
            # logrotate's SIGHUP still means "reopen the log", whatever the file says.
            service.reopen_access_log()
            return
        service.reload(config)

    def on_signal(number: int, frame: object) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, on_signal)


def _exit_zero_after_signal(reactor: Any) -> None:
    """Make a graceful stop on SIGTERM/SIGINT end with exit status 0.

    ``twistd`` and ``twist`` re-raise the signal that stopped the reactor once it
    has stopped (the ``_exitSignal`` attribute they read), so the process would
    report "killed by SIGTERM". For this server SIGTERM is the normal way to end
    after in-flight requests are drained, and supervisors expect 0 for that.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None
