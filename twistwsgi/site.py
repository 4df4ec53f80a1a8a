"""Turning a :class:`~twistwsgi.config.ServerConfig` into the routing table that serves it.

This is the one place where configuration becomes handlers: each application is
imported (once, however often it is mounted) and wrapped in a
:class:`~twistwsgi.wsgi.WSGIHandler` whose ``SCRIPT_NAME`` is its mount path, each
static mount becomes a file handler and each proxy mount an upstream client. Any
problem is a :class:`~twistwsgi.config.ConfigError` naming the mount's key path, so a
start-up and a reload report it the same way.

Reload builds a complete new table before anything is swapped: a configuration that
fails leaves the old one serving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twistwsgi.appload import AppLoadError, load_app
from twistwsgi.config import ConfigError, HostConfig, MountConfig, ServerConfig
from twistwsgi.http.exchange import Handler
from twistwsgi.routing import HostTable, Mount, MountTable, RoutingTable
from twistwsgi.threads import ThreadPoolLike
from twistwsgi.wsgi import WSGIApplication, WSGIHandler

__all__ = ["MountBuilder", "SiteBuilder", "close_handlers", "describe_routing"]

#: Builds the handler of a static or proxy mount from the mount and the whole
#: configuration (registered by those modules).
MountBuilder = Callable[[MountConfig, ServerConfig], Handler]


class SiteBuilder:
    """Builds routing tables from configurations, sharing what can be shared.

    Args:
        reactor: the reactor handlers run on.
        threadpool: the pool applications run on (``None``: the reactor thread).
        load: how an application reference is imported (for tests).
        builders: how static and proxy mounts become handlers, by mount kind.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        threadpool: ThreadPoolLike | None,
        load: Callable[[str], WSGIApplication] = load_app,
        builders: dict[str, MountBuilder] | None = None,
    ) -> None:
        self._reactor = reactor
        self._threadpool = threadpool
        self._load = load
        self._builders = builders or {}
        # Applications already imported: a reload keeps using the same objects
        # (Python caches modules; code changes need a restart).
        self._apps: dict[str, WSGIApplication] = {}

    def build(self, config: ServerConfig) -> RoutingTable:
        """Build the routing table for ``config``.

        Raises:
            ConfigError: naming the mount whose application does not import or whose
                handler cannot be built.
        """
        entries: list[tuple[tuple[str, ...], MountTable[Handler]]] = []
        names: list[tuple[tuple[str, ...], str]] = []
        default: MountTable[Handler] | None = None
        default_name: str | None = None
        built: list[Handler] = []
        try:
            for host in config.hosts:
                mounts = [self._mount(mount, config) for mount in host.mounts]
                built.extend(mount.target for mount in mounts)
                table = MountTable(mounts)
                if host.names:
                    entries.append((host.names, table))
                    names.append((host.names, host.names[0]))
                if host.default:
                    default = table
                    default_name = host.names[0] if host.names else None
            try:
                hosts = HostTable(entries, default)
            except ValueError as error:
                raise ConfigError("hosts", str(error)) from None
        except ConfigError:
            close_handlers(built)  # a half-built table must not leave timers behind
            raise
        return RoutingTable(hosts, HostTable(names, default_name), tuple(built))

    def _mount(self, mount: MountConfig, config: ServerConfig) -> Mount[Handler]:
        if mount.kind == "app":
            app = self._app(mount)
            handler: Handler = WSGIHandler(
                app,
                reactor=self._reactor,
                threadpool=self._threadpool,
                script_name=mount.prefix,
            )
        else:
            builder = self._builders.get(mount.kind)
            if builder is None:
                raise ConfigError(mount.where, f"{mount.kind} mounts are not available")
            handler = builder(mount, config)
        return Mount(mount.prefix, handler)

    def _app(self, mount: MountConfig) -> WSGIApplication:
        app = self._apps.get(mount.target)
        if app is None:
            try:
                app = self._load(mount.target)
            except AppLoadError as error:
                raise ConfigError(f"{mount.where}", str(error)) from None
            self._apps[mount.target] = app
        return app


def close_handlers(handlers: Iterable[Handler]) -> None:
    """Call ``close()`` on the handlers that have one (proxies: pools and timers).

    Exchanges in flight keep working; only what the handler keeps for future
    requests is let go.
    """
    for handler in handlers:
        close = getattr(handler, "close", None)
        if close is not None:
            close()


def _host_title(host: HostConfig) -> str:
    names = ", ".join(host.names) if host.names else "(any host name)"
    return f"{names}{'  [default]' if host.default and host.names else ''}"


def describe_routing(config: ServerConfig) -> str:
    """The routing table of ``config`` as text (for ``--check-config``)."""
    lines = [f"listen: {', '.join(config.listen)}", f"threads: {config.threads}"]
    for host in config.hosts:
        lines.append(f"host {_host_title(host)}")
        for mount in sorted(host.mounts, key=lambda m: len(m.prefix), reverse=True):
            target = mount.target
            if isinstance(target, tuple):
                target = ", ".join(str(item) for item in target)
            lines.append(f"  {mount.path:<24} {mount.kind:<6} {target}")
    return "\n".join(lines) + "\n"
