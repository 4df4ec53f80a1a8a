"""Turning a :class:`~twistwsgi.config.ServerConfig` into the routing table that serves it.

This is the one place where configuration becomes handlers: each application is
imported (once, however often it is mounted) and wrapped in a
:class:`~twistwsgi.wsgi.WSGIHandler` whose ``SCRIPT_NAME`` is its mount path, each
static mount becomes a file handler, each proxy mount an upstream client and each
return mount its fixed answer. Any problem is a
:class:`~twistwsgi.config.ConfigError` naming the mount's key path, so a start-up and
a reload report it the same way.

Reload builds a complete new table before anything is swapped: a configuration that
fails leaves the old one serving.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from twistwsgi.access import (
    AccessRules,
    ConnectionLimit,
    GuardedHandler,
    RateLimit,
    SharedConnectionLimit,
    SharedRateLimit,
)
from twistwsgi.access_log import AccessLogFiles
from twistwsgi.appload import AppLoadError, load_app
from twistwsgi.basic_auth import BasicAuth, CheckRunner, UserFile, UserFileError
from twistwsgi.captures import (
    CapturingHandler,
    FileTemplate,
    FixedCaptures,
    Groups,
    has_captures,
    split_upstream_url,
)
from twistwsgi.client_certificates import verification_profile
from twistwsgi.config import (
    ConfigError,
    HostConfig,
    MountConfig,
    ServerConfig,
    Upstream,
    default_options,
    host_verification,
    mount_or_server,
)
from twistwsgi.fixed_response import FixedResponse, check_captures
from twistwsgi.forward_auth import ForwardAuth, auth_base_url
from twistwsgi.forwarding import TrustedProxies
from twistwsgi.http.compression import GzipSettings
from twistwsgi.http.exchange import Handler
from twistwsgi.http.request import UNREAD_BODY, ErrorPages, RequestHead
from twistwsgi.http.rules import (
    RequestError,
    compile_host_pattern,
    compile_location_pattern,
    unquote_path,
)
from twistwsgi.log_format import LogFormat
from twistwsgi.redirect import HttpsRedirect
from twistwsgi.rewrite import Rewrites
from twistwsgi.routing import (
    HOST_PATTERN_TIME_LIMIT,
    LOCATION_PATTERN_TIME_LIMIT,
    ClientCertificateCheck,
    HostGuard,
    HostGuards,
    HostTable,
    LocationTimeoutError,
    Mount,
    MountTable,
    RoutingTable,
    match_prefix,
    path_below,
    remove_dot_segments,
)
from twistwsgi.shared_limits import SharedLimits
from twistwsgi.static import CapturedStaticHandler, StaticHandler, StaticOptions
from twistwsgi.threads import ThreadPoolLike
from twistwsgi.wsgi import AccelResolver, WSGIApplication, WSGIHandler

__all__ = [
    "MountBuilder",
    "SiteBuilder",
    "certificate_check",
    "close_handlers",
    "describe_routing",
]

_log = Logger(namespace="twistwsgi.auth")
_limits_log = Logger(namespace="twistwsgi.limits")
_routing_log = Logger(namespace="twistwsgi.routing")


def _host_pattern_timed_out(pattern: str, name: str) -> None:
    _routing_log.error(
        "Host name {pattern} took over {limit:g}s on the name {name:.80} ({size} bytes):"
        " no regular-expression host name matches it",
        pattern=pattern,
        limit=HOST_PATTERN_TIME_LIMIT,
        name=name,
        size=len(name),
    )


def _location_pattern_timed_out(pattern: str, path: bytes) -> None:
    _log_location_timeout(pattern, path, "the request is answered 500 Internal Server Error")


def _exemption_timed_out(pattern: str, path: bytes) -> None:
    _log_location_timeout(pattern, path, "the request is not exempt from the https redirect")


def _accel_timed_out(pattern: str, path: bytes) -> None:
    _log_location_timeout(pattern, path, "the X-Accel-Redirect is refused")


def _log_location_timeout(pattern: str, path: bytes, outcome: str) -> None:
    _routing_log.error(
        "Mount path {pattern} took over {limit:g}s on the path {path!r:.80} ({size} bytes):"
        " {outcome}",
        pattern=pattern,
        limit=LOCATION_PATTERN_TIME_LIMIT,
        path=path,
        size=len(path),
        outcome=outcome,
    )


def _placements(mounts: Sequence[MountConfig]) -> list[dict[str, Any]]:
    """How the router matches each mount: ``Mount``'s ``match``, ``pattern``, ``label``.

    ``^~`` belongs to a place: a static mount with fallthrough and its partner at
    ``/x`` are ``^~`` together if either is written so.

    Raises:
        ConfigError: a pattern that does not compile (a configuration a program
            made, not checked as the file's are).
    """
    stopping = {mount.place for mount in mounts if mount.match == "^~"}
    placements: list[dict[str, Any]] = []
    for mount in mounts:
        label = mount.location.encode("utf-8")
        if mount.is_pattern:
            try:
                pattern = compile_location_pattern(mount.path, caseless=mount.match == "~*")
            except ValueError as error:
                raise ConfigError(f"{mount.where}.path", str(error)) from None
            placements.append({"match": "~", "pattern": pattern, "label": label})
        elif mount.match == "=":
            placements.append({"match": "=", "pattern": mount.path.encode("utf-8"), "label": label})
        else:
            placements.append({"match": "^~" if mount.place in stopping else ""})
    return placements


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
        shared_limits: under ``--workers``, the tables of ``rate_limit`` and
            ``conn_limit`` counts all workers share; ``None``: counted in this
            process.
        note_upstreams: have proxy mounts note the upstreams each request tried
            for the metrics (see :mod:`twistwsgi.metrics`), whatever the access
            logs write.

    Attributes:
        access_logs: the access logs hosts and mounts name, kept from build to
            build; whoever serves the tables reopens, formats, settles and closes
            them.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        threadpool: ThreadPoolLike | None,
        load: Callable[[str], WSGIApplication] = load_app,
        builders: dict[str, MountBuilder] | None = None,
        shared_limits: SharedLimits | None = None,
        note_upstreams: bool = False,
    ) -> None:
        self._reactor = reactor
        self._shared_limits = shared_limits
        self._note_upstreams = note_upstreams
        self.access_logs = AccessLogFiles(clock=reactor)
        # The rate and connection limits of the last build, and of the one under
        # way, by kind and mount (see _rate_limit).
        self._limits: dict[tuple[str, str], object] = {}
        self._building_limits: dict[tuple[str, str], object] = {}
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
        self._building_limits = {}
        self.access_logs.begin()
        entries: list[tuple[tuple[str, ...], MountTable[Handler]]] = []
        default: MountTable[Handler] | None = None
        built: list[Handler] = []
        proxied: list[tuple[str | None, bytes, Handler]] = []
        try:
            for host in config.hosts:
                host_log = self._access_log(
                    host.access_log, f"{host.where}.access_log", host.access_log_format, config
                )
                # (Each pattern compiled once, for the mounts and the guard's table.)
                placements = _placements(host.mounts)
                mounts = self._host(host, config, built, host_log, proxied, placements=placements)
                guard, rewrite = _host_guard(host, config, placements)
                table = MountTable(
                    mounts,
                    guard,
                    dict(host.error_pages),
                    host_log,
                    host.names[0] if host.names else None,
                    timed_out=_location_pattern_timed_out,
                    rewrite=rewrite,
                )
                for mount in mounts:
                    if isinstance(mount.target, CapturingHandler):
                        mount.target.table = table  # (its match is the table's last)
                if host.names:
                    entries.append((host.names, table))
                if host.default:
                    default = table
            try:
                hosts = HostTable(
                    entries,
                    default,
                    compile_pattern=compile_host_pattern,
                    timed_out=_host_pattern_timed_out,
                )
            except ValueError as error:
                raise ConfigError("hosts", str(error)) from None
        except ConfigError:
            close_handlers(built)  # a half-built table must not leave timers behind
            self.access_logs.abandon()  # nor files
            raise
        limited = any(
            _body_limit(mount) is not None for host in config.hosts for mount in host.mounts
        )
        self._limits = self._building_limits
        guarded = any(
            host.https_redirect is not None
            or host_verification(host, config)[0] != "off"
            or host.rewrites
            for host in config.hosts
        )
        logged = any(
            host.access_log is not None
            or any(mount.options.get("access_log") is not None for mount in host.mounts)
            for host in config.hosts
        )
        paced = any(
            mount.options.get("limit_rate") or mount.options.get("limit_rate_after")
            for host in config.hosts
            for mount in host.mounts
        )
        return RoutingTable(
            hosts,
            tuple(built),
            limited,
            guarded,
            logged,
            tuple(proxied),
            paced,
        )

    def _access_log(
        self,
        destination: str | None,
        where: str,
        template: str | None,
        config: ServerConfig,
    ) -> Callable[[Any], None] | None:
        """The access log writing to ``destination``, if one is given.

        Args:
            destination: a path, ``-`` or ``off``, or ``None`` for the server's log.
            where: the key, for errors.
            template: the log's own line format, if not the server's.
            config: the server's (its escape and trusted proxies, for ``template``).

        Raises:
            ConfigError: naming ``where`` when the file cannot be opened, or is
                written with another format elsewhere.
        """
        if destination is None:
            return None
        own = None
        if template is not None:
            own = LogFormat(
                template, config.access_log_escape, TrustedProxies(config.trusted_proxies)
            )
        try:
            return self.access_logs.get(destination, own)
        except OSError as error:
            raise ConfigError(
                where, f"cannot open {destination!r}: {error.strerror or error}"
            ) from None
        except ValueError as error:
            raise ConfigError(where, str(error)) from None

    def _rate_limit(
        self, scope: str, rate: float, mount: MountConfig, trusted: TrustedProxies
    ) -> RateLimit | SharedRateLimit:
        """The rate limit of the mount called ``scope``: its counts kept from the last build.

        A reload keeps counting where the mount's last configuration left off, as
        nginx keeps a zone's counts across reloads: a client cannot get a fresh
        burst by a SIGHUP. Under ``--workers`` the counts are the server's, in the
        tables every worker shares, under the same name in each.
        """
        burst = mount.options.get("rate_burst", 0)
        delay = mount.options.get("rate_delay")
        limit: RateLimit | SharedRateLimit
        if self._shared_limits is not None:
            limit = SharedRateLimit(
                rate,
                burst,
                trusted,
                self._reactor.seconds,
                tables=self._shared_limits,
                scope=scope,
                delay=delay,
            )
        else:
            kept = self._limits.get(("rate", scope))
            if isinstance(kept, RateLimit):
                # (A new object: a build that fails leaves the old table as it was.)
                limit = kept.carried_over(rate, burst, trusted, delay)
            else:
                limit = RateLimit(rate, burst, trusted, self._reactor.seconds, delay)
        self._building_limits["rate", scope] = limit
        return limit

    def _conn_limit(
        self, scope: str, most: int, trusted: TrustedProxies
    ) -> ConnectionLimit | SharedConnectionLimit:
        """The limit of requests in progress of the mount called ``scope`` (see _rate_limit).

        Kept across a reload, requests still in progress under the old
        configuration count against the new one.
        """
        shared = self._shared_limits
        connections: ConnectionLimit | SharedConnectionLimit
        if shared is not None:
            connections = SharedConnectionLimit(
                most, trusted, shared, scope, on_full=_conn_table_full
            )
        else:
            kept = self._limits.get(("conn", scope))
            if isinstance(kept, ConnectionLimit):
                connections = kept.carried_over(most, trusted)
            else:
                connections = ConnectionLimit(most, trusted)
        self._building_limits["conn", scope] = connections
        return connections

    def _host(
        self,
        host: HostConfig,
        config: ServerConfig,
        built: list[Handler],
        host_log: Callable[[Any], None] | None,
        proxied: list[tuple[str | None, bytes, Handler]],
        *,
        placements: list[dict[str, Any]],
    ) -> list[Mount[Handler]]:
        """The mounts of one host, with static fall-through and X-Accel wiring.

        Its proxy mounts are added to ``proxied`` (see ``RoutingTable.proxied``);
        ``placements`` is :func:`_placements` of its mounts.
        """
        logs = [
            self._access_log(
                mount.options.get("access_log"),
                f"{mount.where}.access_log",
                mount.options.get("access_log_format"),
                config,
            )
            or host_log
            for mount in host.mounts
        ]
        statics: list[tuple[MountConfig, StaticHandler]] = []
        static_placements: list[dict[str, Any]] = []
        handlers: dict[int, Handler] = {}
        groups = [
            Groups.of(placement["pattern"]) if placement.get("match") == "~" else None
            for placement in placements
        ]
        for index, mount in enumerate(host.mounts):
            if mount.kind == "static":
                template = _file_template(mount, groups[index])
                options = StaticOptions.from_mount(
                    mount.target if template is None else template.root,
                    dict(mount.options),
                    _gzip_settings(mount, config),
                )
                static = (
                    StaticHandler(options, now=self._reactor.seconds)
                    if template is None
                    else CapturedStaticHandler(options, template, now=self._reactor.seconds)
                )
                static.access_log = logs[index]
                statics.append((mount, static))
                static_placements.append(placements[index])
                handlers[index] = static
        accel = _accel_resolver(statics, static_placements)
        trusted = TrustedProxies(config.trusted_proxies)
        for index, mount in enumerate(host.mounts):
            if mount.kind == "app":
                handlers[index] = WSGIHandler(
                    self._app(mount),
                    reactor=self._reactor,
                    threadpool=self._threadpool,
                    script_name=mount.prefix,
                    accel=accel if mount.options.get("x_accel_redirect") else None,
                    trusted_proxies=trusted,
                    request_buffering=config.request_buffering,
                    response_buffering=mount_or_server(mount, config, "response_buffering"),
                    max_response_buffer=mount_or_server(mount, config, "max_response_buffer"),
                    queue_timeout=config.thread_queue_timeout,
                    app_timeout=mount_or_server(mount, config, "app_timeout"),
                    clock=self._reactor,
                )
            elif mount.kind == "return":
                try:
                    captured = check_captures(mount.target, groups[index])
                except ValueError as error:  # (a configuration a program made)
                    raise ConfigError(mount.target_source, str(error)) from None
                handlers[index] = FixedResponse(mount.target, trusted, captured=captured)
            elif mount.kind != "static":
                builder = self._builders.get(mount.kind)
                if builder is None:
                    raise ConfigError(mount.where, f"{mount.kind} mounts are not available")
                handler = handlers[index] = builder(mount, config)
                from twistwsgi.proxy import ProxyHandler  # noqa: PLC0415

                if isinstance(handler, ProxyHandler):  # (not a builder of a program's)
                    if mount.options.get("x_accel_redirect"):
                        handler.accel = accel
                    if self._note_upstreams:
                        handler.log_upstreams = True
                    proxied.append(
                        (
                            host.names[0] if host.names else None,
                            placements[index].get("label", mount.prefix),
                            handler,
                        )
                    )
            built.append(handlers[index])
        # What answers a mount's requests: its handler, behind its access rules and
        # limits if it has any (so a static mount passing a miss on goes through them
        # too). A reload keeps the counts of a mount it builds again (see _limits).
        guarded: dict[int, Handler] = {}
        auths: dict[int, BasicAuth] = {}
        gates: dict[int, ForwardAuth] = {}
        for index, mount in enumerate(host.mounts):
            allow, deny = mount.options.get("allow", ()), mount.options.get("deny", ())
            rate = mount.options.get("rate_limit")
            most = mount.options.get("conn_limit")
            auth = self._basic_auth(mount)
            gate = self._gate(mount, config, built)
            guarded[index] = handlers[index]
            if allow or deny or rate or most or auth or gate:
                rules = AccessRules(allow, deny, trusted) if allow or deny else None
                scope = f"{list(host.names)!r} {host.default} {index} {mount.prefix!r}"
                if mount.match:
                    scope += f" {mount.location}"
                limit = self._rate_limit(scope, rate, mount, trusted) if rate else None
                connections = self._conn_limit(scope, most, trusted) if most else None
                guarded[index] = GuardedHandler(
                    handlers[index],
                    rules,
                    limit,
                    connections,
                    auth,
                    either=mount.options.get("satisfy") == "any",
                    gate=gate,
                    clock=self._reactor,
                )
                if auth is not None:
                    auths[index] = auth
                if gate is not None:
                    gates[index] = gate
        # A static mount with fallthrough hands misses to its partner at the same
        # path, which is then reached only through it, or to the mount below it;
        # a body sent there is for that mount, under its limit.
        partners: dict[int, int] = {}
        for index, mount in enumerate(host.mounts):
            if isinstance(handlers[index], StaticHandler) and mount.options.get("fallthrough"):
                for other_index, other in enumerate(host.mounts):
                    if other_index != index and other.place == mount.place:
                        partners[index] = other_index
                        # (Before any fallback below is wired to this mount's guard.)
                        self._share_password(index, other_index, handlers, guarded, auths)
                        _share_gate(index, other_index, handlers, guarded, gates)

        def needs_match(index: int) -> bool:
            """Whether a mount's settings (or its fallthrough partner's) use its captures."""
            partner = partners.get(index)
            return _uses_captures(host.mounts[index], groups[index]) or (
                partner is not None and _uses_captures(host.mounts[partner], groups[partner])
            )

        passes_to: dict[int, int] = {}
        for index, mount in enumerate(host.mounts):
            handler = handlers[index]
            if not (isinstance(handler, StaticHandler) and mount.options.get("fallthrough")):
                continue
            passed = _passes_to(index, host.mounts, handlers, partners, placements)
            if passed is not None:
                other_index, other = passed[0], host.mounts[passed[0]]
                fallback = guarded[other_index]
                if passed[1] is not None and needs_match(other_index):
                    # An exact path's miss passed to a pattern mount: its captures are
                    # those of the pattern in that path, as a request routed there had.
                    fallback = FixedCaptures(fallback, passed[1])
                handler.fallback = Mount(
                    other.prefix,
                    fallback,
                    headers=_added_fields(other),
                    gzip=_route_gzip(other, config),
                    access_log=logs[other_index],
                    label=placements[other_index].get("label"),
                    **_pacing(other),
                )
                passes_to[index] = other_index
        limits: list[int | None] = []
        refusal_logs = []
        for start in range(len(host.mounts)):
            # Along the chain of static mounts passing misses on, to where it ends
            # (each passes to a shorter prefix, or to its partner at the same one).
            end, seen = start, {start}
            while end in passes_to and passes_to[end] not in seen:
                end = passes_to[end]
                seen.add(end)
            limits.append(_body_limit(host.mounts[end]))
            refusal_logs.append(logs[end])  # (a refusal is of the limit's mount)
        # A mount whose settings (or its fallthrough partner's) use its captures
        # gets the match that chose it, in front of its guards (see _captured).
        targets = dict(guarded)
        for index in range(len(host.mounts)):
            if needs_match(index):
                targets[index] = CapturingHandler(guarded[index])
        return [
            Mount(
                mount.prefix,
                targets[index],
                limits[index],
                _added_fields(mount),
                _route_gzip(mount, config),
                logs[index],
                refusal_logs[index],
                **_pacing(mount),
                **placements[index],
            )
            for index, mount in enumerate(host.mounts)
            if index not in partners.values()
        ]

    @staticmethod
    def _share_password(
        static: int,
        partner: int,
        handlers: dict[int, Handler],
        guarded: dict[int, Handler],
        auths: dict[int, BasicAuth],
    ) -> None:
        """The password of a path held by a static mount and its partner, for both.

        The pair is one place (nginx's ``location`` with ``try_files $uri @app``):
        ``auth_basic`` set on the partner alone would leave the static files public,
        a protected application's exports included. The static mount takes the
        partner's when it has none (the partner checks again on a miss: the
        credentials are remembered by then), and with it the partner's ``satisfy =
        "any"``: a client its rules let in needs no password for the files either.
        ``allow``, ``deny`` and the limits otherwise stay each mount's own: public
        files in front of an application for the office only is a use of its own.
        """
        auth = auths.get(partner)
        if auth is None or static in auths:
            return
        current = guarded[static]
        if not isinstance(current, GuardedHandler):
            current = guarded[static] = GuardedHandler(handlers[static], None)
        current.auth = auth
        owner = guarded[partner]
        if isinstance(owner, GuardedHandler):
            # With the password goes what waives it (satisfy any): the office let in
            # by the partner's rules needs none for the files either.
            current.password_waived_by = owner.password_waived_by
        auths[static] = auth

    def _basic_auth(self, mount: MountConfig) -> BasicAuth | None:
        """A mount's Basic authentication, its user file read now (``None``: none).

        Slow password checks go to a thread of their own (see
        :func:`_thread_check_runner`): not the applications' threads, which a
        client guessing passwords would then hold.

        Raises:
            ConfigError: the user file cannot be used (naming its line).
        """
        realm = mount.options.get("auth_basic")
        if realm is None:
            return None
        try:
            users = UserFile(mount.options["auth_basic_user_file"])
        except (UserFileError, OSError) as error:
            raise ConfigError(f"{mount.where}.auth_basic_user_file", str(error)) from None
        return BasicAuth(realm, users, _thread_check_runner(self._reactor))

    def _gate(
        self, mount: MountConfig, config: ServerConfig, built: list[Handler]
    ) -> ForwardAuth | None:
        """A mount's authentication service (``auth_request``), or ``None``.

        Asked through a proxy handler of its own (pooled connections, timeouts, TLS
        verified against the system's CAs), which a reload closes with the rest.
        """
        url = mount.options.get("auth_request")
        if url is None:
            return None
        # Imported here: the proxy pulls in the upstream client, needed only when used.
        from twistwsgi.proxy import build_proxy  # noqa: PLC0415

        base, target = auth_base_url(url)
        options = {
            **default_options("proxy"),
            "connect_timeout": 10.0,
            "response_timeout": 10.0,
            "idle_timeout": 10.0,  # (between pieces of the answer's body too)
            # The service's Location goes to the client as it is (a sign-in page),
            # and its answer is held in memory, never spooled.
            "proxy_redirect": "off",
            "response_buffering": False,
        }
        where = f"{mount.where}.auth_request"
        service = MountConfig("/", "proxy", (Upstream(base),), options, where)
        # Its forwarding fields are the gate's to write (ForwardAuth._question): the
        # question comes as from an untrusted client, the client as resolved.
        untrusting = dataclasses.replace(config, trusted_proxies=())
        proxy = build_proxy(service, untrusting, reactor=self._reactor)
        gate = ForwardAuth(
            proxy,
            target,
            [name.encode("ascii") for name in mount.options.get("auth_response_headers", ())],
            where,
            TrustedProxies(config.trusted_proxies),
            cookies=bool(mount.options.get("auth_response_cookies")),
        )
        built.append(gate)  # type: ignore[arg-type]
        return gate

    def _app(self, mount: MountConfig) -> WSGIApplication:
        app = self._apps.get(mount.target)
        if app is None:
            try:
                app = self._load(mount.target)
            except AppLoadError as error:
                raise ConfigError(mount.target_source, str(error)) from None
            self._apps[mount.target] = app
        return app


def _share_gate(
    static: int,
    partner: int,
    handlers: dict[int, Handler],
    guarded: dict[int, Handler],
    gates: dict[int, ForwardAuth],
) -> None:
    """The authentication service of a path held by a static mount and its partner.

    As the password (see :meth:`SiteBuilder._share_password`): ``auth_request`` on
    the partner alone would leave the static files public. The static mount asks
    the partner's service when it has none (a miss passed on is asked about again).
    """
    gate = gates.get(partner)
    if gate is None or static in gates:
        return
    current = guarded[static]
    if not isinstance(current, GuardedHandler):
        current = guarded[static] = GuardedHandler(handlers[static], None)
    current.gate = gate
    gates[static] = gate


def _thread_check_runner(reactor: Any) -> CheckRunner | None:
    """Runs password checks on the process's password thread (``None``: no threads).

    One thread, of its own: MD5-crypt and SHA-crypt are Python loops that hold the
    GIL, so a thread per check would take the reactor's time as well (a flood of
    guesses slowed every other request by tens of milliseconds); and Twisted's own
    pool would queue name lookups behind them. With one thread the reactor gets the
    GIL back at each switch interval. Checks still queued when the server stops are
    dropped, not run.
    """
    if not (hasattr(reactor, "addSystemEventTrigger") and hasattr(reactor, "callFromThread")):
        return None  # (a test's reactor: checks run at once)

    def run(check: Callable[[], bool], done: Callable[[bool], None]) -> None:
        def in_thread() -> None:
            if _password_thread.stopping:
                return  # the server stops: nobody waits for this answer
            try:
                right = check()
            except Exception:
                _log.failure("A password check failed")
                right = False
            reactor.callFromThread(done, right)

        _password_thread.pool(reactor).callInThread(in_thread)

    return run


class _PasswordThread:
    """The one thread password checks run on, started when first needed."""

    def __init__(self) -> None:
        self._pool: ThreadPool | None = None
        self.stopping = False

    def pool(self, reactor: Any) -> ThreadPool:
        if self._pool is None:
            self.stopping = False
            self._pool = ThreadPool(minthreads=0, maxthreads=1, name="twistwsgi-passwords")
            self._pool.start()
            # As Twisted stops its own pool: during shutdown, after the listeners.
            reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return self._pool

    def stop(self) -> None:
        self.stopping = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()


#: Process-wide, as the reactor and its own thread pool are.
_password_thread = _PasswordThread()


def certificate_check(
    verification: tuple[str, str | None],
    pages: ErrorPages | None = None,
    *,
    tls_only: bool = False,
) -> ClientCertificateCheck | None:
    """The guard of a host with ``verification`` (tls_verify_client's mode and CA file).

    ``tls_only``: refuse requests not over this server's TLS (see the guard).
    """
    mode, path = verification
    if mode == "off":
        return None
    return ClientCertificateCheck(
        mode,
        pages,
        verification_profile(mode, path),
        tls_only=tls_only and mode != "optional_no_ca",
    )


def _host_guard(
    host: HostConfig, config: ServerConfig, placements: list[dict[str, Any]]
) -> tuple[HostGuard | None, Callable[[RequestHead], RequestHead] | None]:
    """What answers some of ``host``'s requests before its mounts, if anything.

    The https redirect of a request not over TLS; the 400 of one over TLS whose client
    certificate ``tls_verify_client`` refuses. A request is one or the other. Then
    its ``rewrite`` lines' redirects. With it, what rewrites a request the guard let
    through inside the server (``None``: no line does). ``placements`` is
    :func:`_placements` of its mounts.
    """
    guards: list[HostGuard] = []
    if host.https_redirect is not None:
        exempt = None
        if any(mount.options.get("https_redirect") is False for mount in host.mounts):
            # Which mount a path goes to, and whether it is left out of the redirect
            # (a static mount and the partner it falls through to are one place).
            left_out: dict[tuple[str, str], Mount[bool]] = {}
            for mount, placement in zip(host.mounts, placements, strict=True):
                kept = left_out.get(mount.place)
                flag = mount.options.get("https_redirect") is False
                left_out[mount.place] = Mount(
                    mount.prefix, flag or (kept is not None and kept.target), **placement
                )
            exempt = MountTable(left_out.values(), timed_out=_exemption_timed_out)
        guards.append(
            HttpsRedirect(
                host.https_redirect, TrustedProxies(config.trusted_proxies), host.names, exempt
            )
        )
    checking = certificate_check(
        host_verification(host, config),
        dict(host.error_pages),
        tls_only=host.tls_verify_client is not None,
    )
    if checking is not None:
        guards.append(checking)
    rewrite = None
    if host.rewrites:
        # After the two above: a redirect goes to a client that may have the URL,
        # and a request is rewritten only once they let it through.
        rewrites = Rewrites(host.rewrites, TrustedProxies(config.trusted_proxies))
        guards.append(rewrites)
        if rewrites.internal:
            rewrite = rewrites.rewritten
    if len(guards) > 1:
        return HostGuards(guards), rewrite
    return (guards[0] if guards else None), rewrite


def _file_template(mount: MountConfig, groups: Groups | None) -> FileTemplate | None:
    """A regular-expression static mount's directory, when it uses the captures.

    Raises:
        ConfigError: for captures the pattern has not (a configuration a program
            made; the file's is checked when it is loaded).
    """
    if groups is None or not has_captures(mount.target, groups):
        return None
    try:
        return FileTemplate(mount.target, groups)
    except ValueError as error:
        raise ConfigError(mount.target_source, str(error)) from None


def _uses_captures(mount: MountConfig, groups: Groups | None) -> bool:
    """Whether a mount's static, proxy or return setting uses its pattern's captures."""
    if groups is None:
        return False
    if mount.kind == "static":
        return has_captures(mount.target, groups)
    if mount.kind == "return":
        text = mount.target.text
        return text is not None and has_captures(text, groups)
    if mount.kind == "proxy":
        return any(
            has_captures(split_upstream_url(upstream.url)[1], groups) for upstream in mount.target
        )
    return False


def _body_limit(mount: MountConfig) -> int | None:
    """The request-body limit of a mount, or ``None`` for the server's.

    A return mount has none (:data:`~twistwsgi.http.request.UNREAD_BODY`): it
    answers from the head without reading the body, as nginx's return in a server
    block answers before client_max_body_size is looked at, so a 444 stays silent
    and a 308 for an upload is not a 413.
    """
    if mount.kind == "return":
        return UNREAD_BODY
    limit: int | None = mount.options.get("max_body")
    return limit


def _added_fields(mount: MountConfig) -> tuple[tuple[bytes, bytes], ...]:
    """The fields a mount's ``headers`` add to responses that do not set them.

    A static mount sends its own with each file (part of the head it keeps ready).
    """
    if mount.kind == "static":
        return ()
    return tuple(
        (name.encode("ascii"), value.encode("latin-1"))
        for name, value in mount.options.get("headers", ())
    )


def _gzip_settings(mount: MountConfig, config: ServerConfig) -> GzipSettings | None:
    """How a mount compresses (``None``: it does not)."""
    if not mount_or_server(mount, config, "gzip"):
        return None
    return GzipSettings(frozenset(config.gzip_types), config.gzip_min_length, config.gzip_level)


def _pacing(mount: MountConfig) -> dict[str, Any]:
    """The mount's ``Mount.limit_rate`` (with its limit_rate_after) and ``limit_rate_after``."""
    rate = mount.options.get("limit_rate")
    after = mount.options.get("limit_rate_after") or 0
    return {"limit_rate": (rate, after) if rate else None, "limit_rate_after": after}


def _route_gzip(mount: MountConfig, config: ServerConfig) -> GzipSettings | None:
    """How the exchange compresses a mount's responses as they are sent.

    Not a static mount's: it compresses its files itself, once (see
    :mod:`twistwsgi.static`), and its other answers are too short to be worth it.
    """
    return None if mount.kind == "static" else _gzip_settings(mount, config)


def _padded(text: str, width: int) -> str:
    """``text`` padded to ``width`` columns on a terminal.

    A wide character (CJK) takes two columns, a combining mark (the accent of a
    decomposed é) none.
    """
    columns = sum(_columns(char) for char in text)
    return text + " " * max(width - columns, 0)


def _columns(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def _passes_to(
    index: int,
    mounts: Sequence[MountConfig],
    handlers: dict[int, Handler],
    partners: dict[int, int],
    placements: list[dict[str, Any]],
) -> tuple[int, Any] | None:
    """The mount a static mount with fallthrough passes its misses to, if any.

    Its partner at the same path; else, for a prefix, the mount below it (the
    longest prefix, plain or ``^~``, that contains it); for an exact path, the
    mount that path reaches without it (the order of :class:`MountTable`, the
    regular expressions included). A regular expression has only its partner.

    Returns:
        The mount's index, and the match of its pattern in the exact path when the
        mount is a regular-expression one reached from an exact path (its
        captures), else ``None``.
    """
    if index in partners:
        return partners[index], None
    mount = mounts[index]
    if mount.is_pattern:
        return None
    reached_only_through = set(partners.values())
    if mount.match == "=":
        others = MountTable(
            (
                Mount(other.prefix, other_index, **placements[other_index])
                for other_index, other in enumerate(mounts)
                if other_index != index and other_index not in reached_only_through
            ),
            timed_out=_location_pattern_timed_out,
        )
        try:
            found = others.lookup(mount.path.encode("utf-8"))
        except LocationTimeoutError:
            return None  # (logged; the configuration's own path, at build time)
        return None if found is None else (found.target, others.last_match(found.target))
    below = [
        (other_index, other)
        for other_index, other in enumerate(mounts)
        if other_index != index
        and other.match in ("", "^~")
        and match_prefix(mount.prefix, other.prefix)
    ]
    if not below:
        return None
    # The longest prefix; at the same one, the static mount that passes on to its
    # partner there (the partner is reached only through it), whatever order the
    # file lists them in.
    other_index, _other = max(
        below,
        key=lambda item: (
            len(item[1].prefix),
            isinstance(handlers[item[0]], StaticHandler)
            and bool(item[1].options.get("fallthrough")),
        ),
    )
    return other_index, None


def _accel_resolver(
    statics: list[tuple[MountConfig, StaticHandler]],
    placements: list[dict[str, Any]] | None = None,
) -> AccelResolver:
    """How an application's X-Accel-Redirect or X-Sendfile finds its file.

    ``X-Accel-Redirect`` holds a URL path: it is decoded, its dot-segments removed,
    and served by the static mount of the host that a request for that path would
    reach if the host had no other kind of mount (``internal`` mounts included):
    nginx's order (:class:`~twistwsgi.routing.MountTable`), an exact path, the
    longest prefix if ``^~``, the first regular expression, else the longest
    prefix. ``X-Sendfile`` holds a file-system path: it is
    served by the static mount whose directory holds it most closely (a mount of a
    subdirectory, with its own rate or fields, before the mount of the whole tree);
    of two mounts of one directory, an ``internal`` one (made for handed-over files),
    then the longer prefix, whatever their order in the file. Anything else is
    refused.

    ``placements``: how each mount is matched (see :func:`_placements`), by default
    as the static mounts alone say.
    """
    if placements is None:
        placements = _placements([mount for mount, _handler in statics])
    by_path = MountTable(
        (
            Mount(mount.prefix, handler, **placement)
            for (mount, handler), placement in zip(statics, placements, strict=True)
        ),
        timed_out=_accel_timed_out,
    )
    by_root = sorted(
        statics,
        key=lambda item: (
            len(item[1].options.root),
            item[1].options.internal,
            len(item[0].prefix),
        ),
        reverse=True,
    )

    def resolve(field: bytes, value: bytes) -> tuple[StaticHandler, bytes] | None:
        if field == b"x-accel-redirect":
            path, _, _query = value.partition(b"?")
            try:
                decoded = unquote_path(path)
            except RequestError:
                return None
            normal = remove_dot_segments(decoded) if decoded.startswith(b"/") else None
            if normal is None:
                return None
            try:
                found = by_path.lookup(normal)
            except LocationTimeoutError:
                by_path.forget()
                return None
            if found is None:
                return None
            handler = found.target
            if isinstance(handler, CapturedStaticHandler):
                # The file its captures name, as for a request routed there.
                expanded = handler.file_path(by_path.last_match(handler), normal)
                return None if expanded is None else (handler, expanded)
            return handler, path_below(normal, found.prefix)
        real = os.path.realpath(os.fsdecode(value))
        for _mount, handler in by_root:
            root = handler.options.root.rstrip("/") + "/"
            if real.startswith(root):
                return handler, os.fsencode(real[len(root) - 1 :])
        return None

    return resolve


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
    if config.workers:
        lines.append(f"workers: {config.workers} processes")
    if config.tls_verify_client != "off":
        lines.append(
            f"client certificates: {config.tls_verify_client}"
            + (
                f", verified with {config.tls_client_certificate}"
                if config.tls_client_certificate
                else ""
            )
        )
    if config.tls_crl is not None:
        lines.append(f"client certificate revocation lists: {config.tls_crl}")
    if config.gzip:
        lines.append(
            "gzip: applications, proxied upstreams, static files and return mounts,"
            f" level {config.gzip_level}"
        )
    for host in config.hosts:
        lines.append(f"host {_host_title(host)}")
        if host.tls_certificate:
            lines.append(f"  certificate: {host.tls_certificate}")
        if host.tls_verify_client is not None or host.tls_client_certificate is not None:
            mode, path = host_verification(host, config)
            lines.append(
                f"  client certificates: {mode}" + (f", verified with {path}" if path else "")
            )
        if host.https_redirect is not None:
            port = "" if host.https_redirect == 443 else f":{host.https_redirect}"
            lines.append(f"  requests not over TLS: redirected to https://HOST{port}/...")
        lines.extend(f"  rewrite {rule}" for rule in host.rewrites)
        if host.access_log is not None:
            own = host.access_log_format
            lines.append(f"  access log: {host.access_log}" + (f", format {own!r}" if own else ""))
        lines.extend(_error_page_lines(host))
        for mount in sorted(host.mounts, key=_search_order):
            target = mount.target
            if isinstance(target, tuple):
                target = ", ".join(str(item) for item in target)
            lines.append(f"  {_padded(mount.location, 24)} {mount.kind:<6} {target}")
            changed = _changed_options(mount)
            if changed:
                lines.append(f"  {'':<24} {'':<6} {changed}")
    return "\n".join(lines) + "\n"


def _search_order(mount: MountConfig) -> tuple[int, int]:
    """Where a mount is shown: exact paths, prefixes longest first, then patterns.

    (The order the router looks at them in; patterns keep the file's, as sorting
    is stable.)
    """
    if mount.match == "=":
        return 0, 0
    if mount.is_pattern:
        return 2, 0
    return 1, -len(mount.prefix)


def _error_page_lines(host: HostConfig) -> list[str]:
    """One line per page file of ``host``, with the statuses it is sent for."""
    statuses: dict[str, list[int]] = {}
    for status, page in sorted(host.error_pages):
        statuses.setdefault(page.path, []).append(status)
    return [
        f"  error page {', '.join(str(status) for status in codes)}: {path}"
        for path, codes in statuses.items()
    ]


def _changed_options(mount: MountConfig) -> str:
    """The mount's options that differ from their defaults, as ``key=value`` words."""
    defaults = default_options(mount.kind)
    return " ".join(
        f"{name}={_value_text(name, value)}"
        for name, value in mount.options.items()
        if name in defaults and value != defaults[name]
    )


#: Options held as (name, value) pairs that a file writes as a table.
_TABLE_OPTIONS = frozenset(
    {
        "headers",
        "proxy_set_header",
        "proxy_redirect",
        "proxy_cookie_path",
        "proxy_cookie_domain",
        "proxy_cookie_flags",
    }
)


def _value_text(name: str, value: object) -> str:
    if name == "rate_limit":
        return _rate_text(value)  # type: ignore[arg-type]
    if name in _TABLE_OPTIONS and isinstance(value, tuple):
        # TOML's inline table: { X-Real-IP = "$remote_addr" }
        return (
            "{" + ", ".join(f"{_toml_key(key)} = {_option_text(text)}" for key, text in value) + "}"
        )
    return _option_text(value)


def _toml_key(key: str) -> str:
    """A table key as TOML writes it: bare when it can be, else quoted (a URL)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    r"""``text`` as a TOML basic string: JSON's escapes, characters as they are.

    (Not JSON's ``\uD83D\uDE00`` pairs for characters beyond the BMP, which TOML
    refuses; DEL escaped, as TOML wants every control character.)
    """
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _rate_text(per_second: float) -> str:
    """A rate as nginx writes it (``10r/s``, ``30r/m``)."""
    if per_second >= 1:
        return f"{per_second:g}r/s"
    return f"{round(per_second * 60, 3):g}r/m"


def _option_text(value: object) -> str:
    """An option's value as the configuration file writes it (TOML's spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_option_text(item) for item in value) + "]"
    return str(value)


def _conn_table_full() -> None:
    _limits_log.warn(
        "The shared conn_limit table is full where a client's count belongs: its"
        " request went on uncounted (this is said once per worker)"
    )
