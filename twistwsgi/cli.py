"""The ``twistd wsgi`` / ``twist wsgi`` command: options and ``makeService``.

The options are generated from :data:`twistwsgi.config.SETTINGS`. Every start-up
problem (a bad value, an application that does not import, an endpoint string that
does not parse, a port that cannot be bound) is printed as one line on stderr and the
process exits with status 2; nothing starts half-configured.

This is the only module that touches the global reactor.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet import endpoints as twisted_endpoints
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

from twistwsgi import response_spool
from twistwsgi.client_certificates import (
    ask_for_certificates,
    binding_available,
    load_client_cas,
    load_revocation_lists,
    mark_profile,
    verification_profile,
)
from twistwsgi.config import (
    BOOL,
    SETTINGS,
    ConfigError,
    ServerConfig,
    Setting,
    build_config,
    endpoint_parameters,
    endpoint_parts,
    escape,
    host_verification,
    proxy_protocol_inner,
    read_config_file,
)
from twistwsgi.dispatch import read_inline, skip_log_context
from twistwsgi.host_certificates import (
    PEM_READ_LIMIT,
    host_certificates,
    is_encrypted_pem,
    serve_host_certificates,
)
from twistwsgi.http.protocol import ALPN_PROTOCOLS
from twistwsgi.proxy_protocol import ProxyProtocolEndpoint
from twistwsgi.service import ServerService, StartError, make_service
from twistwsgi.site import describe_routing
from twistwsgi.source_watch import WATCHED_LIMIT, SourceWatcher

if TYPE_CHECKING:
    from twistwsgi.supervisor import Supervisor

__all__ = ["Options", "exit_with_error", "makeService"]

EXIT_CONFIG_ERROR = 2

_log = Logger(namespace="twistwsgi.cli")


def exit_with_error(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 2.

    The process's own stderr is used: once ``twistd`` has started logging,
    ``sys.stderr`` feeds its log rather than the terminal.
    """
    print_error(message)
    raise SystemExit(EXIT_CONFIG_ERROR)


def print_error(message: str) -> None:
    """Write ``message`` as the one ``twistwsgi: error:`` line on the process's stderr."""
    stream = sys.__stderr__ or sys.stderr  # (sys.stderr may feed twistd's log)
    # A message may quote what it did not escape (an exception's own text, a path):
    # it stays one line, which a supervisor reads as the cause (last_error_line).
    one_line = _CONTROL_CHARACTERS.sub(lambda match: repr(match[0])[1:-1], message)
    stream.write(f"twistwsgi: error: {one_line}\n")
    stream.flush()


_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


def _help(setting: Setting) -> str:
    default = setting.default
    if setting.repeatable and isinstance(default, tuple):
        default = ", ".join(default)
    elif isinstance(default, float) and default.is_integer():
        default = int(default)  # 30, as the documentation writes it, not 30.0
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

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse the arguments, exiting 2 with one line on a usage error.

        An unknown flag, a missing value or an extra argument is a start-up error
        like any other.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            exit_with_error(f"{error} (see --help)")

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


def load_config(given: dict[str, Any], content: bytes | None = None) -> ServerConfig:
    """Build the configuration from command-line values and the --config file.

    The file's ``[server]`` values come first; every option given on the command
    line overrides its counterpart. The hosts of ``--vhost`` are added to the file's
    ``[[host]]`` tables (a name in both is an error). Called again on SIGHUP to reload.
    ``content`` is the file's text when it was read before (see
    :func:`~twistwsgi.config.read_config_file`).

    Raises:
        ConfigError: naming the flag, or the file and key path, that is wrong.
    """
    flags = {setting.name: setting.flag for setting in SETTINGS}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    hosts: list[Any] = []
    path = given.get("config")
    if path is not None:
        server, hosts = read_config_file(path, content)
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
        if not config.check_config:  # a check changes nothing on disk
            _clear_stale_unix_socket(description)
        try:
            endpoints.append((description, _endpoint_for(reactor, description, config)))
        except _TLSSettingError as error:
            exit_with_error(f"{config.source(error.setting)} {error.value!r}: {error}")
        except _EndpointError as error:
            exit_with_error(f"{config.source('listen')} {description!r}: {error}")
        except ConfigError as error:  # a host's certificate
            exit_with_error(str(error))
    return endpoints


def build_metrics_endpoint(
    reactor: Any, config: ServerConfig
) -> tuple[str, IStreamServerEndpoint] | None:
    """The ``metrics_listen`` endpoint, if there is one; exit 2 naming a bad one."""
    description = config.metrics_listen
    if description is None:
        return None
    if not config.check_config:
        _clear_stale_unix_socket(description)
    # Not the site's: its requests are not routed, so none would be checked.
    config = replace(
        config,
        tls_verify_client="off",
        tls_client_certificate=None,
        hosts=tuple(
            replace(host, tls_verify_client=None, tls_client_certificate=None)
            for host in config.hosts
        ),
    )
    try:
        return description, _endpoint_for(reactor, description, config)
    except _TLSSettingError as error:
        exit_with_error(f"{config.source(error.setting)} {error.value!r}: {error}")
    except _EndpointError as error:
        exit_with_error(f"{config.source('metrics_listen')} {description!r}: {error}")
    except ConfigError as error:
        exit_with_error(str(error))


class _EndpointError(Exception):
    """What is wrong with an endpoint string, in one line."""


class _TLSSettingError(Exception):
    """A TLS setting OpenSSL refuses (it names the setting, not the endpoint)."""

    def __init__(self, setting: str, value: str, problem: str) -> None:
        super().__init__(problem)
        self.setting = setting
        self.value = value


_TLS_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


def _endpoint_for(
    reactor: Any, description: str, config: ServerConfig | None = None, *, reloading: bool = False
) -> IStreamServerEndpoint:
    """Build one endpoint, its TLS context included (with ``config``'s TLS settings).

    ``reloading``: a host certificate that no longer loads keeps the one read before
    (see :func:`~twistwsgi.host_certificates.host_certificates`).

    Raises:
        _EndpointError: saying what is wrong with the string or its files.
        _TLSSettingError: when OpenSSL refuses ``tls_ciphers``.
        ConfigError: when a host's ``tls_certificate`` or ``tls_key`` does not load.
    """
    inner = proxy_protocol_inner(description)
    if inner is not None:
        # (Not Twisted's haproxy: endpoint, which reads the header inside TLS.)
        return ProxyProtocolEndpoint(
            _endpoint_for(reactor, inner, config, reloading=reloading), reactor
        )
    repeated = _repeated_parameter(description)
    if repeated is not None:
        # Twisted keeps the last silently: a second certificate (nginx's RSA plus
        # ECDSA pair) would be dropped without a word.
        raise _EndpointError(
            f"{repeated}= is given more than once; an endpoint takes one of each"
            " (one certificate per listener)"
        )
    irregular = _irregular_file(description)
    if irregular is not None:
        # A FIFO would hold the start-up, without a word, until something wrote to it.
        raise _EndpointError(irregular)
    encrypted = _encrypted_key(description)
    if encrypted is not None:
        # OpenSSL would ask for the passphrase on the terminal (or fail without one).
        raise _EndpointError(
            f"the private key {encrypted} is encrypted; give a key without a passphrase"
        )
    settings = config or ServerConfig()
    try:
        with _chain_from_certificate_file(_with_backlog(description)) as parsed:
            endpoint: IStreamServerEndpoint = serverFromString(reactor, parsed)
        context = _build_tls_context(endpoint, settings.tls_session_tickets)
    except Exception as error:
        raise _EndpointError(_endpoint_problem(description, error)) from error
    if context is not None:
        _apply_tls_settings(context, settings)
        certificates = host_certificates(settings.hosts, reloading=reloading, config=settings)
        if certificates is not None:
            options = _tls_options(endpoint)
            serve_host_certificates(context, certificates, _twins_of(options, settings))
        _keep_sessions_to_one_verification(context, settings)
        _TLS_SETTINGS_IN_USE[_tls_options(endpoint)] = settings
    return endpoint


#: The configuration each TLS listener's settings came from, by its context factory:
#: a reload given no configuration applies the same ones again.
_TLS_SETTINGS_IN_USE: weakref.WeakKeyDictionary[Any, ServerConfig] = weakref.WeakKeyDictionary()


class _NoApplicationProtocol(SSL.Error):
    """A TLS client offered over ALPN none of the protocols this server speaks."""


def _choose_application_protocol(connection: SSL.Connection, offered: list[bytes]) -> bytes:
    """The ALPN protocol of a TLS connection: the first of ours the client offered.

    Raises:
        _NoApplicationProtocol: none in common (a client offering ``h2`` alone).
            OpenSSL then ends the handshake with the fatal ``no_application_protocol``
            alert, as RFC 7301 3.2 requires and nginx sends; Twisted's own callback
            answers an empty name instead, which OpenSSL turns into an
            ``internal_error`` alert, read by the client as a fault of the server's.
    """
    for protocol in ALPN_PROTOCOLS:
        if protocol in offered:
            return protocol
    # (In the shape of OpenSSL's error queue, which Twisted's TLS layer reads.)
    raise _NoApplicationProtocol([("SSL routines", "", "no application protocol")])


def _apply_tls_settings(context: SSL.Context, config: ServerConfig) -> None:
    """Set a listener's oldest TLS version, TLS 1.2 ciphers and ALPN, before it is used.

    They are nginx's ``ssl_protocols`` and ``ssl_ciphers``. A host's context (SNI)
    gets them too: OpenSSL chooses the ALPN protocol with the context the server
    name switched to.
    """
    context.set_min_proto_version(_TLS_VERSIONS[config.tls_min_version])
    # (In place of the callback Twisted installed; pyOpenSSL's wrapper turns the
    # exception into SSL_TLSEXT_ERR_ALERT_FATAL and raises it from the handshake,
    # which Twisted's TLS layer ends as any failed handshake, the alert flushed.)
    context.set_alpn_select_callback(_choose_application_protocol)
    ciphers = config.tls_ciphers
    if ciphers:
        try:
            context.set_cipher_list(ciphers.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError) as error:
            raise _TLSSettingError(
                "tls_ciphers", ciphers, "OpenSSL knows no cipher in this list"
            ) from error
    if config.tls_verify_client != "off":
        _ask_for_client_certificates(context, config)


def _ask_for_client_certificates(context: SSL.Context, config: ServerConfig) -> None:
    """Make a listener ask TLS clients for a certificate (``tls_verify_client``).

    Raises:
        _TLSSettingError: the CA file does not load, or this pyOpenSSL cannot tell
            the server OpenSSL's verdict.
    """
    mode = config.tls_verify_client
    if not binding_available():
        raise _TLSSettingError(
            "tls_verify_client",
            mode,
            "this pyOpenSSL lacks the OpenSSL functions client verification needs here",
        )
    ask_for_certificates(context)
    mark_profile(context, verification_profile(mode, config.tls_client_certificate))
    # (Twisted gives every context the session ID context OpenSSL needs to resume
    # sessions where certificates are asked for: random, so a session is resumed only
    # in the context that verified it.)
    path = config.tls_client_certificate
    if path is not None:
        try:
            load_client_cas(path)  # (a file OpenSSL would take in part, or not at all)
            context.load_verify_locations(path)
            # The issuers a client is told are accepted (RFC 8446 4.2.4, 4.3.2).
            context.load_client_ca(os.fsencode(path))
        except (OSError, ValueError, SSL.Error) as error:
            raise _TLSSettingError("tls_client_certificate", path, str(error)) from error
    if config.tls_crl is not None:
        _check_revocation(context, config.tls_crl)


def _check_revocation(context: SSL.Context, path: str) -> None:
    """Make ``context`` refuse client certificates the CRLs in ``path`` revoke.

    As nginx's ``ssl_crl``: every certificate of the client's chain is checked
    (OpenSSL's CRL_CHECK_ALL), so each CA below the trusted ones needs its CRL in
    the file (RFC 5280 6.3). A revoked certificate then gets OpenSSL's verdict
    "certificate revoked" (X509_V_ERR_CERT_REVOKED), refused in every mode.

    Raises:
        _TLSSettingError: the file does not load.
    """
    try:
        revocation_lists = load_revocation_lists(path)
    except (OSError, ValueError) as error:
        raise _TLSSettingError("tls_crl", path, str(error)) from error
    store = context.get_cert_store()
    assert store is not None  # (a server context always has one)
    for revocation_list in revocation_lists:
        store.add_crl(revocation_list)
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)


def _keep_sessions_to_one_verification(context: SSL.Context, config: ServerConfig) -> None:
    """Resume no session on a listener whose hosts verify clients against other CAs.

    OpenSSL finds a session (a TLS 1.3 ticket) in the listener's context before the
    server name switches the connection to a host's: a session whose certificate
    verified against one host's CAs would be resumed, verdict and all, for a host
    that trusts other CAs (nginx's CVE-2025-23419). nginx checks the name in a
    ClientHello callback, which pyOpenSSL does not offer; here such a listener makes
    full handshakes. One set of CAs (or none) for the whole listener keeps them.
    """
    asking = {host_verification(host, config) for host in config.hosts}
    asking.add((config.tls_verify_client, config.tls_client_certificate))
    if len({path for mode, path in asking if mode != "off"}) > 1:
        # No tickets; TLS 1.3's would then be stateful, kept in the session cache,
        # which Twisted leaves off (CertificateOptions' enableSessions).
        context.set_options(SSL.OP_NO_TICKET)


def _listener_twin(
    options: Any, config: ServerConfig, *, keep_certificate: bool = False
) -> SSL.Context:
    """A new context with a listener's TLS settings and none of its certificates.

    A host's certificate goes in it (SNI): after the switch, OpenSSL takes the cipher
    list, DH parameters and ALPN callback from this context, so they must be the
    listener's. Twisted's options make it as they made the listener's.
    ``keep_certificate``: with the listener's own certificate (a host with only a
    client verification of its own).
    """
    # A shallow copy by hand: copy.copy goes through Twisted's deprecated __getstate__.
    twin = object.__new__(type(options))
    twin.__dict__.update(vars(options))
    if not keep_certificate:
        twin.certificate = twin.privateKey = None
        twin.extraCertChain = []
    context: SSL.Context = twin._makeContext()
    _apply_tls_settings(context, config)
    return context


def _twins_of(
    options: Any, config: ServerConfig
) -> Callable[[tuple[str, str | None], bool], SSL.Context]:
    """:func:`serve_host_certificates`'s maker of host contexts for a listener."""

    def twin(verification: tuple[str, str | None], keep_certificate: bool) -> SSL.Context:
        mode, path = verification
        settings = replace(config, tls_verify_client=mode, tls_client_certificate=path)
        return _listener_twin(options, settings, keep_certificate=keep_certificate)

    return twin


def reload_certificates(
    reactor: Any,
    endpoints: list[tuple[str, IStreamServerEndpoint]],
    config: ServerConfig | None = None,
) -> None:
    """Read the certificates and keys of the TLS listeners again (on SIGHUP).

    ``config`` gives the TLS settings to apply (``tls_min_version``, ``tls_ciphers``,
    ``tls_session_tickets``); without it, each listener keeps the settings it was
    built (or last reloaded) with.

    A listener keeps its socket; connections accepted from now on get a context
    built from the files as they are now, those open keep theirs. A renewed
    certificate (certbot's deploy hook: ``systemctl reload``) is then served without
    a restart, as nginx does on reload. Files that do not load leave the listener
    with its old context, and one line says why.
    """
    for description, endpoint in endpoints:
        serving = _tls_options(endpoint)
        if serving is None or not hasattr(serving, "_context"):
            continue
        settings = config if config is not None else _TLS_SETTINGS_IN_USE.get(serving)
        try:
            fresh = _tls_options(_endpoint_for(reactor, description, settings, reloading=True))
            assert fresh is not None
            context = fresh.getContext()
        except (_EndpointError, _TLSSettingError, ConfigError) as error:
            _log.error(
                "Reload: the TLS files of {listen!r} were not read again, the ones read"
                " before keep serving: {problem}",
                listen=description,
                problem=str(error),
            )
            if isinstance(error, _EndpointError) and settings is not None:
                _serve_hosts_of(serving, settings)
            continue
        # CertificateOptions hands its one cached context to every new connection.
        serving._context = context
        # And keeps what it was made from: a later context made from these options
        # (see _serve_hosts_of) starts from the files read now, not those of the start.
        for loaded in ("certificate", "privateKey", "extraCertChain", "dhParameters"):
            if hasattr(fresh, loaded):
                setattr(serving, loaded, getattr(fresh, loaded))
        _TLS_SETTINGS_IN_USE[serving] = _TLS_SETTINGS_IN_USE[fresh]
        _log.info("Reload: read the TLS files of {listen!r} again", listen=description)


def _serve_hosts_of(options: Any, config: ServerConfig) -> None:
    """Serve ``config``'s host certificates and TLS settings with a listener's old files.

    For a listener whose own files could not be read again (a key only root reads,
    after ``--uid``): a host the reload added, or renewed, still gets its
    certificate, and the listener the reloaded TLS settings (a tls_verify_client
    turned on asks from now on). A context that served connections cannot be
    changed (pyOpenSSL), so a new one is made from what the listener read before,
    held in its options.
    """
    try:
        certificates = host_certificates(config.hosts, reloading=True, config=config)
        # Made again even when no host has a certificate: the TLS settings may have
        # changed (tls_verify_client turned on must not wait for a readable key).
        context: SSL.Context = options._makeContext()
        _apply_tls_settings(context, config)
        if certificates is not None:
            serve_host_certificates(context, certificates, _twins_of(options, config))
        _keep_sessions_to_one_verification(context, config)
    except Exception as error:  # a host's file, the DH parameters, a cipher list
        _log.error(
            "Reload: the host certificates were not read again either: {problem}",
            problem=str(error) if isinstance(error, ConfigError) else repr(error),
        )
        return
    options._context = context
    _TLS_SETTINGS_IN_USE[options] = config


#: The listen backlog when an endpoint string sets none: nginx's on Linux. Twisted's 50
#: overflows under a burst of new connections (clients then wait for SYN
#: retransmissions, a second or more each); the kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 511


def _with_backlog(description: str) -> str:
    """``description`` with ``backlog=511`` when it is a kind that takes one and has none."""
    kind, _, named = endpoint_parts(description)
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog" not in named:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit.

    Every connection holds a descriptor; the soft limit (often 1024, systemd's default)
    would end accepting long before memory does, as Go's runtime also decides at start.
    Returns the ``(soft, hard)`` limits in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container may refuse; the soft limit stays and is reported
    return soft, hard


def settle_temporary_directory() -> None:
    """Choose the directory of the spools' temporary files now (see response_spool).

    A directory that is not usable at the start is said in one line: bodies and
    responses past their memory part would fail with 500s, or wait for their clients.
    """
    problem = response_spool.settle_temporary_directory()
    if problem is not None:
        _log.warn(
            "No usable directory for temporary files (TMPDIR): {problem}",
            problem=str(problem),
        )


def _unix_path(description: str) -> str | None:
    """The socket path of a ``unix:`` endpoint string, or None for another kind."""
    kind, positional, named = endpoint_parts(description)
    if kind != "unix":
        return None
    return named.get("address") or (positional[0] if positional else None) or None


def _clear_stale_unix_socket(description: str) -> None:
    """Remove what a server that crashed left at a ``unix:`` endpoint's path.

    A socket file nobody listens on makes the bind fail ("address already in use"),
    and Twisted's lock beside it (``PATH.lock``, holding the owner's process id) is
    taken for a live owner when the id is alive again: that of an unrelated process,
    or this one's in a container restarted as process 1. Both are removed only when
    connecting to the socket is refused: a server still listening there keeps its
    path, and starting beside it fails as it should. gunicorn removes a socket file
    it finds without asking; this asks first.
    """
    path = _unix_path(description)
    if path is None:
        return
    try:
        is_socket = stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        is_socket = False
    lock = path + ".lock"
    if is_socket:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Never blocking: a server that listens but does not accept (its backlog
        # full, paused at max_connections, or hung) would hold a blocking connect.
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # nobody listens: stale
        except OSError:
            return  # in use but not accepting now (EAGAIN), or cannot tell: leave it
        else:
            return  # in use
        finally:
            probe.close()
        _log.info("Removing the stale socket {path} (nothing listens on it)", path=path)
        _remove_quietly(path)
        _remove_quietly(lock)
        return
    try:
        owner = os.readlink(lock)
    except OSError:
        return
    if owner == str(os.getpid()):
        _remove_quietly(lock)  # ours cannot be held yet: we have not listened


def _remove_quietly(path: str) -> None:
    # Gone already, or not ours to remove: listening will say what is wrong.
    with contextlib.suppress(OSError):
        os.remove(path)


def _repeated_parameter(description: str) -> str | None:
    """The first ``name=`` parameter an endpoint string gives twice, else None."""
    seen: set[str] = set()
    for name, _ in endpoint_parameters(description)[1]:
        if name is not None:
            if name in seen:
                return name
            seen.add(name)
    return None


def _irregular_file(description: str) -> str | None:
    """What is wrong with a file an ``ssl:`` endpoint names that is not a regular file.

    ``None`` when each is one, or is missing (``serverFromString`` reports that).
    """
    kind, _, named = endpoint_parts(description)
    if kind != "ssl":
        return None
    files = {"privateKey": named.get("privateKey") or "server.pem"}  # (Twisted's default)
    for name in ("certKey", "extraCertChain", "dhParameters"):
        if named.get(name):
            files[name] = named[name]
    for name, path in files.items():
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            return f"{name}= {path!r} is not a regular file"
    return None


def _encrypted_key(description: str) -> str | None:
    """The file of an ``ssl:`` endpoint holding an encrypted key, else None.

    The key is read from ``privateKey=`` (Twisted's default ``server.pem``), which
    may also hold the certificate, in any order: the whole file is searched. So is
    ``certKey=``: Twisted reads it for the certificate and its chain, and OpenSSL
    asks for the passphrase of a key it meets there too.
    """
    kind, _, named = endpoint_parts(description)
    if kind != "ssl":
        return None
    key = named.get("privateKey") or "server.pem"
    for path in dict.fromkeys((key, named.get("certKey") or key)):
        try:
            with open(path, "rb") as stream:
                content = stream.read(PEM_READ_LIMIT)
        except OSError:
            continue  # serverFromString reports the file itself
        if is_encrypted_pem(content):
            return repr(path)
    return None


def _build_tls_context(
    endpoint: IStreamServerEndpoint, session_tickets: bool = True
) -> SSL.Context | None:
    """Build a TLS endpoint's OpenSSL context now, so what it loads is checked at start.

    Twisted builds it at the first connection: a ``dhParameters=`` file that is
    missing or not DH parameters then failed every handshake, after a start that
    said it was ready (``nginx -t`` refuses it). The context is kept and reused
    (returned; ``None`` for an endpoint without TLS).
    """
    options = _tls_options(endpoint)
    if options is None:
        return None
    # Stateless session tickets (RFC 5077, RFC 8446 4.6.1), on by default in nginx:
    # a returning client resumes for a fraction of a full handshake's CPU.
    # Twisted turns them off (its TLS 1.3 tickets could then never be used) with a
    # flag its constructor folds into the context options; the key is OpenSSL's,
    # random per process and per reload.
    if session_tickets and isinstance(getattr(options, "_options", None), int):
        options._options &= ~SSL.OP_NO_TICKET
        options.enableSessionTickets = True
    try:
        context: SSL.Context = options.getContext()
    except Exception as error:
        raise _TLSContextError(error) from error
    return context


def _tls_options(endpoint: IStreamServerEndpoint) -> Any:
    """The OpenSSL context factory of an ``ssl:`` endpoint, else None.

    That of an SSL4ServerEndpoint, or of a worker's inherited TLS listener.
    """
    options = getattr(endpoint, "tls_options", None) or getattr(
        endpoint, "_sslContextFactory", None
    )
    return options if callable(getattr(options, "getContext", None)) else None


def endpoint_tls_options(reactor: Any, description: str, config: ServerConfig) -> Any:
    """The TLS context factory an ``ssl:`` listener serves with (``None`` for others).

    Built as the listener of ``description`` would be, with ``config``'s TLS
    settings; for a worker, whose socket was bound by its master (the other kinds are
    not parsed again: a ``systemd:`` string names descriptors only the master had).

    Raises:
        ConfigError: naming the listener (or the TLS setting) and what is wrong.
    """
    if endpoint_parts(description)[0] != "ssl":
        return None
    try:
        return _tls_options(_endpoint_for(reactor, description, config))
    except _TLSSettingError as error:
        raise ConfigError(config.source(error.setting), f"{error.value!r}: {error}") from None
    except _EndpointError as error:
        raise ConfigError(config.source("listen"), f"{description!r}: {error}") from None


class _TLSContextError(Exception):
    """The OpenSSL context of a TLS endpoint could not be built."""


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


@contextlib.contextmanager
def _chain_from_certificate_file(description: str) -> Iterator[str]:
    """Give an ``ssl:`` endpoint the chain that follows the certificate in ``certKey``.

    Twisted's ``ssl:`` endpoint takes only the first certificate of ``certKey`` and
    the intermediates from ``extraCertChain``; nginx's ``ssl_certificate`` and
    gunicorn's ``--certfile`` take a full-chain file (certbot's ``fullchain.pem``),
    and a server that silently leaves the intermediates out fails verification at
    the clients. When ``certKey`` holds more than one certificate and no
    ``extraCertChain`` is given, the others are handed over as the chain (through a
    temporary file, which the endpoint reads as it is parsed).
    """
    kind, _, named = endpoint_parts(description)
    if kind != "ssl" or "extraCertChain" in named:
        yield description
        return
    certificate_file = named.get("certKey") or named.get("privateKey")
    try:
        with open(certificate_file or "", "rb") as stream:
            certificates = _PEM_CERTIFICATE.findall(stream.read())
    except OSError:
        certificates = []  # serverFromString reports the file
    if len(certificates) < 2:
        yield description
        return
    with tempfile.NamedTemporaryFile(prefix="twistwsgi-chain-", suffix=".pem") as chain:
        # Twisted's reader of the chain file expects LF line ends.
        chain.write(b"\n".join(certificates[1:]).replace(b"\r\n", b"\n") + b"\n")
        chain.flush()
        yield f"{description}:extraCertChain={escape(chain.name)}"


def _systemd_sockets() -> str:
    """The sockets systemd passed, as Twisted read them.

    Twisted reads LISTEN_FDS and LISTEN_FDNAMES when its endpoints module is imported
    and then removes them from the environment (sd_listen_fds(3) asks that of a
    server), so they are reported from what it kept.
    """
    listen_fds: Any = getattr(getattr(twisted_endpoints, "_SystemdParser", None), "_sddaemon", None)
    if listen_fds is None:
        return "start the server from a .socket unit"
    descriptors = listen_fds.inheritedDescriptors()
    if not descriptors:
        # Twisted ignores descriptors passed without LISTEN_FDNAMES (systemd 227+
        # always names them; systemd-socket-activate only with --fdname).
        return (
            "it passed none: start the server from a .socket unit; sockets passed"
            " without names (systemd-socket-activate without --fdname) are not seen"
        )
    names = {fd: name for name, fd in listen_fds.inheritedNamedDescriptors().items()}
    passed = ", ".join(
        f"index={index}" + (f" name={names[fd]}" if fd in names else "")
        for index, fd in enumerate(descriptors)
    )
    return f"it passed {len(descriptors)}: {passed}"


def _endpoint_problem(description: str, error: Exception) -> str:
    """What is wrong with an endpoint string, in the user's terms where it is known.

    ``serverFromString`` reports problems with the exceptions of the code that
    parses each field (``int()``, a keyword call, an OpenSSL decoder); the common
    ones are said here in the terms of the string.
    """
    kind, positional, _ = endpoint_parts(description)
    if isinstance(error, TypeError) and "unexpected keyword argument" in str(error):
        name = str(error).rsplit("argument", 1)[-1].strip(" '\"")
        return f"unknown parameter {name!r} for a {kind}: endpoint"
    if kind in ("tcp", "ssl") and isinstance(error, ValueError) and "int()" in str(error):
        port = positional[0] if positional else ""
        return f"the port must be a number, got {port!r}"
    if kind == "systemd" and isinstance(error, (IndexError, KeyError)):
        return f"no such socket passed by systemd ({_systemd_sockets()})"
    if isinstance(error, _TLSContextError):
        detail = _openssl_reasons(error.__cause__)
        if "dhParameters" in endpoint_parts(description)[2]:
            return f"cannot set up TLS (is dhParameters= a PEM file of DH parameters?): {detail}"
        return f"cannot set up TLS: {detail}"
    if kind == "ssl" and type(error).__name__ == "Error":  # OpenSSL.SSL.Error / crypto.Error
        return (
            "cannot load the private key or certificate (privateKey= and certKey= must"
            f" name PEM files, the key without a passphrase): {error}"
        )
    return f"{type(error).__name__}: {error}"


def _openssl_reasons(error: BaseException | None) -> str:
    """An OpenSSL error's reasons ("no such file"), not its list of tuples."""
    details = error.args[0] if error is not None and error.args else None
    if isinstance(details, list) and all(isinstance(d, tuple) and d for d in details):
        reasons = [str(detail[-1]) for detail in details if detail[-1]]
        if reasons:
            return "; ".join(reasons)
    return str(error) or type(error).__name__


def _access_log_problem(path: str | None) -> str | None:
    """Why the access log file could not be opened for appending, without creating it.

    --check-config leaves the disk as it found it, so it cannot try the open a start
    makes; it asks the file system what that open would need (nginx's -t opens its
    logs, and a start that fails where the check passed is what it is for).
    """
    if path is None or path in ("", "-", "off"):
        return None
    # Where the open lands: through symbolic links, a dangling one included.
    target = os.path.realpath(path)
    if os.path.isdir(target) or path.endswith(os.sep):
        return f"cannot open {path!r}: it is a directory"
    if os.path.exists(target):
        writable = os.access(target, os.W_OK)
    else:
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            return f"cannot open {path!r}: no directory {directory!r}"
        writable = os.access(directory, os.W_OK | os.X_OK)
    return None if writable else f"cannot open {path!r}: permission denied"


def makeService(options: Options) -> Service:
    """Build the server ``twistd``/``twist`` runs (called after option parsing).

    With ``--workers`` 1 or more that is a :class:`~twistwsgi.supervisor.Supervisor`
    of worker processes; otherwise this process serves.
    """
    from twisted.internet import reactor  # noqa: PLC0415 - installed by twistd first

    config = options.config
    if not config.check_config:
        hold_hangups_until_running()
        ignore_worker_count_signals_while_starting()
        raise_open_files_limit()
        settle_temporary_directory()
    endpoints = build_endpoints(reactor, config)
    metrics = build_metrics_endpoint(reactor, config)
    if config.check_config:
        check_mounts(reactor, config, endpoints)
        # Mount paths may be any text; a terminal that cannot show it gets escapes.
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
        try:
            sys.stdout.write(describe_routing(config))
            sys.stdout.write("configuration OK\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # Read by `head` or `grep -q`, which stopped reading: not an error. What
            # is still buffered for the closed pipe is dropped (Python would report
            # it again at exit).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)
    if config.workers or config.reload:
        return _supervisor(reactor, options, endpoints, metrics)
    try:
        service = make_service(
            config,
            reactor=reactor,
            endpoints=endpoints,
            on_start_error=_start_error_handler(options),
            metrics_endpoint=metrics[1] if metrics is not None else None,
        )
    except ConfigError as error:
        exit_with_error(str(error))
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_signal, reactor)
    serve_in_this_process(reactor, service, options.given, endpoints)
    # (Not in a worker: it ignores them, and the master acts on them.)
    reactor.callWhenRunning(
        _on_worker_count_signals,
        reactor,
        partial(_no_workers_to_count, "SIGTTIN"),
        partial(_no_workers_to_count, "SIGTTOU"),
    )
    return service


def check_mounts(
    reactor: Any, config: ServerConfig, endpoints: list[tuple[str, IStreamServerEndpoint]]
) -> None:
    """Build the mounts of ``config`` (importing its applications) and let them go.

    What ``--check-config`` checks besides the endpoints; nothing is written (the
    access log files, the server's and the hosts' and mounts', are only checked to
    be writable). Exits with status 2 and one
    line naming the problem.
    """
    problem = _access_log_problem(config.access_log)
    if problem:
        exit_with_error(f"{config.source('access_log')}: {problem}")
    hosts = []
    for host in config.hosts:
        # The hosts' and mounts' own logs, checked alike and then left unopened.
        problem = _access_log_problem(host.access_log)
        if problem:
            exit_with_error(f"{host.where}.access_log: {problem}")
        mounts = []
        for mount in host.mounts:
            problem = _access_log_problem(mount.options.get("access_log"))
            if problem:
                exit_with_error(f"{mount.where}.access_log: {problem}")
            own_log = mount.options.get("access_log") is not None
            options = {**mount.options, "access_log": "off"} if own_log else mount.options
            mounts.append(replace(mount, options=options))
        hosts.append(replace(host, access_log=None, mounts=tuple(mounts)))
    try:
        service = make_service(
            replace(config, access_log="off", hosts=tuple(hosts)),
            reactor=reactor,
            endpoints=endpoints,
        )
    except ConfigError as error:
        exit_with_error(str(error))
    # The service never started: stopping it only lets go of what building it
    # opened (the proxies' pools), synchronously.
    service.stopService()


def serve_in_this_process(
    reactor: Any,
    service: ServerService,
    given: dict[str, Any],
    endpoints: list[tuple[str, IStreamServerEndpoint]],
) -> None:
    """Set up what a server process needs around ``service`` once the reactor runs.

    The signals (a second SIGTERM or SIGINT stops at once, SIGHUP reloads from
    ``given``, SIGUSR1 reopens the access log), the faster event dispatch, and the
    garbage-collection tuning. For ``twistd``'s process and for each worker.
    """
    reactor.addSystemEventTrigger("before", "shutdown", _second_signal_stops_now, reactor, service)
    reactor.callWhenRunning(_one_graceful_stop, reactor, service)
    reactor.callWhenRunning(_handle_reload_signals, reactor, service, dict(given), endpoints)
    # The process is ours: dispatch socket events without Twisted's per-event log
    # context, which nothing of ours reads (see twistwsgi.dispatch for the gain).
    skip_log_context()
    read_inline(reactor)
    reactor.callWhenRunning(tune_garbage_collection)


def _supervisor(
    reactor: Any,
    options: Options,
    endpoints: list[tuple[str, IStreamServerEndpoint]],
    metrics: tuple[str, IStreamServerEndpoint] | None = None,
) -> Supervisor:
    """The master of ``--workers``: checks the mounts in a child, then supervises.

    The applications are imported by a short-lived child process first (as
    ``--check-config`` would), so one that does not import is the usual one-line
    error and exit status 2 before any worker starts, and this process never holds
    the applications itself. The workers build the configuration from the options
    and the configuration file's text read here (and replaced by each reload that
    builds), from the directory the server was started in.
    """
    from twistwsgi.supervisor import (  # noqa: PLC0415
        PAYLOAD_VARIABLE,
        Supervisor,
        last_error_line,
        pinned_directories,
    )

    given = dict(options.given)
    # A relative --config stays relative: the workers read it from the directory they
    # build in, the master from the start directory (see Supervisor.reload).
    start_directory = logical_working_directory()
    try:
        config, content = _read_config(given)
    except OSError as error:
        exit_with_error(f"{given['config']}: cannot read the configuration file: {error}")
    except ConfigError as error:
        exit_with_error(str(error))
    configuration = {
        "options": given,
        "config_content": content.decode("utf-8") if content is not None else None,
        "start_directory": start_directory,
        "run_directory": _run_directory(options, start_directory),
        # Started with SIGINT ignored (a shell's background job): so are the
        # workers, which would otherwise stop on a Ctrl-C meant for the shell.
        "ignore_interrupts": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
    }
    configuration.update(pinned_directories(configuration))
    payload = {
        **configuration,
        "number": 0,
        "listen": [],
        "sys_path": sys.path,
        # (It has nothing to finish: a master gone, it ends at once.)
        "master_pid": os.getpid(),
        "orphan_allowance": 0.0,
    }
    # Its stderr goes to a file, not a pipe: a process the application starts at
    # import would inherit a pipe, and the start would wait for that process too.
    with tempfile.TemporaryFile() as errors:
        try:
            checked = subprocess.run(  # noqa: PLW1510 - the status is looked at
                [sys.executable, "-m", "twistwsgi.worker", "--check"],
                env={**os.environ, PAYLOAD_VARIABLE: "1"},
                input=json.dumps(payload).encode("utf-8"),
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        except OSError as error:
            exit_with_error(f"cannot start a worker process: {error}")
        errors.seek(0)
        problem = last_error_line(errors.read())
    if checked.returncode != 0:
        exit_with_error(problem or f"exit status {checked.returncode}")
    failed: list[str] = []

    def on_failed_start(message: str) -> None:
        failed.append(message)
        _log.error("Stopping: {message}", message=message)
        if reactor.running and not reactor._stopped:
            reactor.stop()

    supervisor = Supervisor(
        endpoints,
        workers=config.workers or 1,  # (--reload alone: one worker)
        reactor=reactor,
        configuration=configuration,
        graceful_timeout=config.graceful_timeout,
        worker_timeout=config.worker_timeout,
        on_start_error=_start_error_handler(options),
        on_failed_start=on_failed_start,
        metrics=metrics,
    )
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_signal, reactor)
    reactor.addSystemEventTrigger("after", "shutdown", _exit_2_after_failed_start, options, failed)
    reactor.addSystemEventTrigger(
        "before", "shutdown", _second_signal_stops_now, reactor, supervisor
    )
    reactor.callWhenRunning(_one_graceful_stop, reactor, supervisor)

    def reload() -> None:
        try:
            # (relative paths as the workers will build them, see twistwsgi.worker)
            with working_directory(start_directory):
                accepted, text = _read_config(given)
        except Exception as error:
            problem = str(error) if isinstance(error, (ConfigError, OSError)) else repr(error)
            _log.error("Reload refused, the old workers keep serving: {error}", error=problem)
            supervisor.keep_configuration()
            return
        if accepted.listen != config.listen:
            _log.warn(_LISTEN_WAITS)
        if accepted.metrics_listen != config.metrics_listen:
            _log.warn(_METRICS_LISTEN_WAITS)
        if not accepted.workers and not config.reload:
            _log.warn(
                "Reload: serving without worker processes (workers = 0) takes effect at"
                " the next restart"
            )
        supervisor.reload(
            accepted.graceful_timeout,
            text.decode("utf-8") if text is not None else None,
            accepted.workers or (1 if config.reload else None),
            accepted.worker_timeout,
        )

    reactor.callWhenRunning(_on_reload_signals, reactor, reload, supervisor.reopen_access_log)
    reactor.callWhenRunning(
        _on_worker_count_signals, reactor, supervisor.add_worker, supervisor.remove_worker
    )
    if config.reload:
        watched = [os.path.join(start_directory, given["config"])] if given.get("config") else []
        # The hosts' error pages too: they are read when the configuration is built.
        watched += [page.path for host in config.hosts for _, page in host.error_pages]
        reactor.callWhenRunning(
            watch_sources, reactor, SourceWatcher([start_directory], watched), reload
        )
    return supervisor


def _forget_bytecode(path: str) -> None:
    """Remove the cached bytecode of a changed source file (``--reload``).

    Python takes a ``.pyc`` as current when the source's whole-second modification
    time and size match it: a save of the same size within the second the last
    worker imported the file would be served as the old code.
    """
    if not path.endswith(".py"):
        return
    with contextlib.suppress(OSError, ValueError, NotImplementedError):
        os.remove(importlib.util.cache_from_source(path))


#: Seconds between two looks at the sources with ``--reload``.
RELOAD_POLL_INTERVAL = 1.0


def watch_sources(clock: Any, watcher: SourceWatcher, reload: Callable[[], object]) -> Any:
    """Look for changed sources every second; ``reload`` when there are (``--reload``).

    Returns:
        The looping call (stopped with the reactor).
    """
    if watcher.scanned > WATCHED_LIMIT:
        _log.warn(
            "--reload looks through {count} files under {roots} every second, which"
            " costs: start the server in the project's own directory",
            count=watcher.scanned,
            roots=", ".join(watcher.roots),
        )
    else:
        _log.info(
            "--reload: watching {count} Python files under {roots}",
            count=watcher.watched,
            roots=", ".join(watcher.roots),
        )

    def look() -> None:
        changed = watcher.changed()
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            _log.info("{path}{more} changed: reloading", path=changed[0], more=more)
            for path in changed:
                _forget_bytecode(path)
            reload()

    looping = LoopingCall(look)
    looping.clock = clock
    looping.start(RELOAD_POLL_INTERVAL, now=False)
    return looping


#: CPython's own collection thresholds, as they were before any application loaded.
_INTERPRETER_GC_THRESHOLDS = gc.get_threshold()
#: Container objects allocated (net of those freed) before a young collection, while
#: serving. CPython's 700 is less than one batch of 50 requests makes before its
#: worker threads free them: a collection per batch, which also moved those objects
#: of requests in flight on to the old generations and so made full collections
#: frequent.
YOUNG_GC_THRESHOLD = 10_000


def tune_garbage_collection() -> None:
    """Make garbage-collection pauses fewer and shorter while serving.

    Every request in flight waits for a collection.

    * ``gc.freeze`` (Python 3.7+) leaves the objects made while starting (the
      application, its framework, Twisted, the routing table), which live as long as
      the process, out of later collections: with the threadpool a full collection
      took 16-25 ms walking them again.
    * The young generation is collected every :data:`YOUNG_GC_THRESHOLD` allocations
      instead of 700, unless the thresholds differ from those the interpreter had
      when this module was imported (the application set its own). Cyclic garbage
      then waits longer for its collection.

    Measured with the benchmark suite's idle scenario (hello world with the
    threadpool, 50 busy connections beside 5,000 idle ones): p99 latency 32 ms
    before, 17.7 ms with the freeze alone, 3.7 ms with both; requests/s +12%.
    Called once the reactor runs (start-up is over). Safe to call again: it first
    unfreezes, so what has become garbage since the last call is collected and only
    what is still alive is frozen again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    if thresholds == _INTERPRETER_GC_THRESHOLDS:
        gc.set_threshold(YOUNG_GC_THRESHOLD, *thresholds[1:])


def _after_reload(reactor: Any, graceful_timeout: float) -> None:
    """Let the collector have what a reload replaced, then freeze again later.

    Requests in flight keep the replaced handlers until they end: frozen now, those
    would stay frozen once released. They are unfrozen at once (ordinary full
    collections see them again) and frozen anew after the graceful timeout, by
    which requests have usually ended.
    """
    gc.unfreeze()
    reactor.callLater(max(graceful_timeout, 1.0), tune_garbage_collection)


def _start_error_handler(options: Options) -> Callable[[str], None]:
    """Report a start-up failure after option parsing: one line, exit 2, no pidfile.

    Those failures are an endpoint that cannot listen, or worker threads that
    cannot start.

    ``twistd`` runs the service's start inside its own error handling, which only
    knows ``Exception``. A daemonised ``twistd`` (no ``-n``) has a parent process
    waiting for a status on a pipe that only that handling writes: there the error
    is raised for it, and ``twistd`` removes the pidfile, reports the message and
    exits with status 1.
    """
    runner: Any = getattr(options, "parent", None)
    runner_settings = runner if isinstance(runner, dict) else {}

    def on_start_error(message: str) -> None:
        if runner_settings.get("statusPipe") is not None:
            # twistd passes the first 100 bytes of this to its parent: the cause first.
            where, separator, cause = message.partition("': ")
            raise StartError(f"{cause} ({where}')" if separator else message)
        pidfile = runner_settings.get("pidfile")
        if pidfile:
            _remove_own_pidfile(pidfile)
        exit_with_error(message)

    return on_start_error


def _read_config(given: dict[str, Any]) -> tuple[ServerConfig, bytes | None]:
    """Read the configuration file of ``given`` (if any) once; its configuration and text.

    Raises:
        OSError: the file cannot be read.
        ConfigError: see :func:`load_config`.
    """
    content = None
    if given.get("config"):
        with open(given["config"], "rb") as stream:
            content = stream.read()
    return load_config(given, content), content


def _run_directory(options: Options, start_directory: str) -> str | None:
    """Where ``twistd --rundir`` moves the process once it is built, if anywhere.

    Named from ``start_directory`` (unresolved) when relative, so that a worker
    started after a deployment moved a link follows it there too.
    """
    runner: Any = getattr(options, "parent", None)
    rundir = runner.get("rundir") if isinstance(runner, dict) else None
    if not rundir or rundir == ".":
        return None
    return os.path.join(start_directory, rundir)


def logical_working_directory() -> str:
    """The current directory as the shell named it: ``$PWD`` when that leads here.

    :func:`os.getcwd` resolves symbolic links. A server started in
    ``/srv/app/current``, a link a deployment moves to each new release before a
    SIGHUP, must start its new workers in the release the link leads to then, not
    in the one it led to at the start (gunicorn reads ``$PWD`` the same way).
    """
    here = os.getcwd()
    named = os.environ.get("PWD")
    if named and os.path.isabs(named):
        with contextlib.suppress(OSError):
            if os.path.samefile(named, here):
                return named
    return here


@contextlib.contextmanager
def working_directory(path: str) -> Iterator[None]:
    """Run the block in directory ``path``, then go back (no change when already there).

    The directory is the whole process's: a worker's application threads see it too,
    so it is changed only when it has to be. A directory removed since (an old
    release a deployment cleaned up, where the master started) is not gone back to:
    the process stays in ``path``.
    """
    try:
        here: str | None = os.getcwd()
    except FileNotFoundError:
        here = None
    if here == path:
        yield
        return
    os.chdir(path)
    try:
        yield
    finally:
        if here is not None:
            os.chdir(here)


def _exit_2_after_failed_start(options: Options, failed: list[str]) -> None:
    """End the master with status 2 once a worker of the first start failed.

    The line goes to stderr (and was logged); the pidfile ``twistd`` wrote is
    removed, as for any start-up error.
    """
    if not failed:
        return
    runner: Any = getattr(options, "parent", None)
    pidfile = runner.get("pidfile") if isinstance(runner, dict) else None
    if pidfile:
        _remove_own_pidfile(pidfile)
    print_error(failed[0])
    # twistd would go on to exit 0 (or re-raise the signal it stopped for).
    os._exit(EXIT_CONFIG_ERROR)


def _remove_own_pidfile(path: str) -> None:
    """Remove ``twistd``'s pidfile if it names this process (it wrote it at start)."""
    try:
        with open(path) as stream:
            written = stream.read().strip()
        if written == str(os.getpid()):
            os.remove(path)
    except (OSError, ValueError):
        pass  # not there, or not ours: nothing to clean up


def _handle_reload_signals(
    reactor: Any,
    service: ServerService,
    given: dict[str, Any],
    endpoints: list[tuple[str, IStreamServerEndpoint]] = [],  # noqa: B006 - never changed
) -> None:
    """Install the handlers of SIGHUP (reload) and SIGUSR1 (reopen the access log).

    SIGHUP re-reads the configuration and swaps it in, and reads the TLS
    listeners' certificates and keys again (:func:`reload_certificates`); SIGUSR1
    only reopens the access log, as nginx does on USR1 (the signal logrotate
    recipes send).

    The handlers only schedule the work; it runs in the reactor loop.
    """

    def reload() -> None:
        reload_server(reactor, service, given, endpoints)

    _on_reload_signals(reactor, reload, service.reopen_access_log)


def _no_workers_to_count(signal_name: str) -> None:
    _log.warn(
        "{signal} ignored: this server serves without worker processes (workers = 0)",
        signal=signal_name,
    )


def _on_worker_count_signals(
    reactor: Any, add: Callable[[], None], remove: Callable[[], None]
) -> None:
    """Run ``add`` on SIGTTIN and ``remove`` on SIGTTOU in the reactor loop (gunicorn's).

    Installed with or without workers: their default action stops the process (job
    control), so a script written for gunicorn would freeze a server it sent one to.

    The kernel sends them too, to a process of a terminal's background job that
    reads from it, or writes to it under ``stty tostop``; it then restarts the read
    or write once the handler returns, which sends the signal again, for ever (a
    master spinning at full CPU, removing workers, deaf to SIGTERM). Such a signal
    is the kernel's, not a request: it is ignored until the reactor runs next, so
    the pending read or write goes through (without a handler the process would
    stop until brought to the foreground).
    """
    actions: dict[int, Callable[[], None]] = {signal.SIGTTIN: add, signal.SIGTTOU: remove}

    def on_signal(number: int, frame: object) -> None:
        if _in_background_of_a_terminal():
            signal.signal(number, signal.SIG_IGN)
            reactor.callFromThread(signal.signal, number, on_signal)
            return
        reactor.callFromThread(actions[number])

    for number in actions:
        signal.signal(number, on_signal)


def ignore_worker_count_signals_while_starting() -> None:
    """Ignore SIGTTIN and SIGTTOU until :func:`_on_worker_count_signals` handles them.

    Their default action stops the process (job control): one sent while the server
    starts (``systemctl kill -s SIGTTIN`` just after a restart, while the
    applications import) would leave it frozen, its port bound and never served.
    A worker count asked for then is not acted on; once the reactor runs, each is.
    """
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)


def _in_background_of_a_terminal() -> bool:
    """Whether this process is in a background job of the terminal it uses."""
    for descriptor in (0, 1, 2):
        try:
            if os.isatty(descriptor) and os.tcgetpgrp(descriptor) != os.getpgrp():
                return True
        except OSError:
            continue
    return False


#: SIGHUPs and SIGUSR1s received before the reactor ran, to be acted on once it runs.
_early_hangups: list[int] = []


def _hold_signal(number: int, frame: object) -> None:
    _early_hangups.append(number)


def hold_hangups_until_running() -> None:
    """Keep a SIGHUP or SIGUSR1 that arrives while the server starts for when it runs.

    Their default action ends the process: a ``systemctl reload`` just after a
    (re)start, or logrotate's ``kill -USR1`` (an nginx recipe), while the
    applications import, would kill the server (and leave a master's checking
    process behind). :func:`_on_reload_signals` then reloads, or reopens the access
    log. One that was ignored (``nohup``) stays ignored until then.
    """
    for number in (signal.SIGHUP, signal.SIGUSR1):
        if signal.getsignal(number) == signal.SIG_DFL:
            signal.signal(number, _hold_signal)


def _on_reload_signals(
    reactor: Any, reload: Callable[[], None], reopen: Callable[[], None]
) -> None:
    """Run ``reload`` on SIGHUP and ``reopen`` on SIGUSR1, in the reactor loop.

    Called once the reactor runs: a daemonising twistd has installed its own
    SIGUSR1 handler (it rotates twistd.log) by then, and that goes on too. A
    SIGHUP received while the server started is acted on now, once (a reload
    reopens the access log too); else a SIGUSR1 then reopens it now, once.
    """
    previous_user1 = signal.getsignal(signal.SIGUSR1)
    if previous_user1 is _hold_signal:  # (ours, while the server started)
        previous_user1 = signal.SIG_DFL

    def on_hangup(number: int, frame: object) -> None:
        reactor.callFromThread(reload)

    def on_user1(number: int, frame: object) -> None:
        reactor.callFromThread(reopen)
        if callable(previous_user1):
            previous_user1(number, frame)  # type: ignore[arg-type]

    signal.signal(signal.SIGHUP, on_hangup)
    signal.signal(signal.SIGUSR1, on_user1)
    # (Checked once the handlers are in place: none is missed.)
    early, _early_hangups[:] = set(_early_hangups), []
    if signal.SIGHUP in early:
        reactor.callFromThread(reload)
    elif signal.SIGUSR1 in early:
        reactor.callFromThread(reopen)


#: What a reload says of a changed listen (the listeners are bound once, at start),
#: in the words ServerService.reload uses for the others that wait.
_LISTEN_WAITS = "Reload: listen changed; it takes effect at the next restart"
_METRICS_LISTEN_WAITS = "Reload: metrics_listen changed; it takes effect at the next restart"


def reload_server(
    reactor: Any,
    service: ServerService,
    given: dict[str, Any],
    endpoints: list[tuple[str, IStreamServerEndpoint]],
) -> None:
    """Read the configuration again from ``given`` and swap it in (SIGHUP's work).

    Also reopens the access log and reads the TLS listeners' certificates again,
    whether or not the new configuration builds.
    """
    try:
        config = load_config(given)
        serving = service.config
        if serving is not None and config.listen != serving.listen:
            _log.warn(_LISTEN_WAITS)
            # What follows from the listeners (https_redirect = "on": the TLS port)
            # is worked out from those in use, not from the ones that are not yet.
            config = load_config({**given, "listen": list(serving.listen)})
        if serving is not None and config.metrics_listen != serving.metrics_listen:
            _log.warn(_METRICS_LISTEN_WAITS)
            config = replace(config, metrics_listen=serving.metrics_listen)
        # A new host's certificate that does not load refuses the file as any other
        # mistake in it does; a host's that loaded before keeps that one (logged by
        # each listener's reload below).
        host_certificates(config.hosts, reloading=True, quiet=True, config=config)
    except Exception as error:
        # A ConfigError names the setting; anything else (a bug, or a file that
        # vanished mid-read) must not end the server or skip the log reopening.
        problem = str(error) if isinstance(error, (ConfigError, OSError)) else repr(error)
        _log.error("Reload refused, the old configuration keeps serving: {error}", error=problem)
        # logrotate's SIGHUP still means "reopen the log", whatever the file says.
        service.reopen_access_log()
        # And a renewed certificate (certbot) is read, with the settings in force.
        reload_certificates(reactor, endpoints, service.config)
        return
    # The file is taken whole or not at all: its TLS settings apply only once
    # its routing table has been built; a renewed certificate is read either way.
    if service.reload(config):
        reload_certificates(reactor, endpoints, config)
        _after_reload(reactor, config.graceful_timeout)
    else:
        reload_certificates(reactor, endpoints, service.config)


def _one_graceful_stop(reactor: Any, service: ServerService | Supervisor) -> None:
    """Let the first SIGTERM or SIGINT stop gracefully, and any later one at once.

    Twisted's handlers (installed as the reactor starts) each ask the reactor to
    stop; a second signal before the stop has begun (``kill`` twice, a supervisor
    and a ``timeout`` both sending one) asked again, and the stopped reactor logged
    a critical ReactorNotRunning traceback. Wrapped here, the first signal goes to
    Twisted's handler and every later one to ``service.stop_now``, which, asked
    before the drain has begun (the stop still queued), is remembered for it.
    """
    numbers = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, Any] = {number: signal.getsignal(number) for number in numbers}
    later = _stop_now_on_signal(reactor, service)
    signalled: list[int] = []

    def first(number: int, frame: Any) -> None:
        # Python runs a signal handler between two bytecodes of whatever runs, this
        # handler included: a second signal can enter it again before it is
        # swapped out. The list append is one step; whoever did not come first
        # asks for the immediate stop.
        signalled.append(number)
        if len(signalled) > 1:
            later(number, frame)
            return
        for each in numbers:
            if signal.getsignal(each) is first:
                signal.signal(each, later)
        handler = previous[number]
        if _is_reactors_own(handler, reactor):
            _stop_as_twisted_does(reactor, number)
        elif callable(handler):
            handler(number, frame)

    for number in numbers:
        if callable(previous[number]):  # (not a background job's ignored SIGINT)
            signal.signal(number, first)


def _is_reactors_own(handler: object, reactor: Any) -> bool:
    """Whether ``handler`` is the reactor's own SIGTERM or SIGINT handler."""
    return getattr(handler, "__self__", None) is reactor and getattr(handler, "__name__", "") in (
        "sigTerm",
        "sigInt",
    )


def _stop_as_twisted_does(reactor: Any, number: int) -> None:
    """What Twisted's handler does, but a stop that finds the reactor stopping is none.

    A worker's reactor may have been stopped by its master's "stop" command in the
    meantime (systemd's default KillMode sends SIGTERM to every process of the
    service at once): Twisted's queued ``reactor.stop`` then logged a critical
    ReactorNotRunning traceback at the end of a clean stop.
    """
    _log.info("Received {name}, shutting down.", name=signal.Signals(number).name)

    def stop() -> None:
        if not reactor._stopped:
            reactor.stop()

    reactor.callFromThread(stop)
    # Read by twistd to re-raise the signal (see _exit_zero_after_signal).
    reactor._exitSignal = number


def _stop_now_on_signal(
    reactor: Any, service: ServerService | Supervisor
) -> Callable[[int, Any], None]:
    """A signal handler that asks ``service`` to stop at once, in the reactor loop."""

    def on_signal(number: int, frame: Any) -> None:
        reactor.callFromThread(service.stop_now)

    return on_signal


def _second_signal_stops_now(reactor: Any, service: ServerService | Supervisor) -> None:
    """Once a graceful stop has begun, SIGTERM or SIGINT again drops what is left.

    Twisted's own handlers would ask the stopping reactor to stop again, which only
    logs an error; an operator pressing Ctrl-C twice wants the process gone. (A stop
    begun by a signal has swapped them already, see :func:`_one_graceful_stop`; not
    one begun otherwise: a worker told to stop by its master, a failed start.)
    """
    on_signal = _stop_now_on_signal(reactor, service)
    for number in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(number) != signal.SIG_IGN:  # (a background job's SIGINT)
            signal.signal(number, on_signal)


def _exit_zero_after_signal(reactor: Any) -> None:
    """Make a graceful stop on SIGTERM/SIGINT end with exit status 0.

    ``twistd`` and ``twist`` re-raise the signal that stopped the reactor once it
    has stopped (the ``_exitSignal`` attribute they read), so the process would
    report "killed by SIGTERM". For this server SIGTERM is the normal way to end
    after in-flight requests are drained, and supervisors expect 0 for that.

    From here on the process only exits: a SIGTERM or SIGINT arriving now (a second
    one sent a moment after the first) is ignored. Python puts the default action
    back for signals it handles as the interpreter finalizes, and such a signal
    then ended the process as killed (-15) after a clean stop; an ignored signal
    stays ignored.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)
