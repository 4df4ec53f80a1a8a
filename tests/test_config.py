"""The settings schema in ``twistwsgi.config``: each kind's parser, the SETTINGS
declarations themselves, ``build_config`` and its one-line errors, and the
``--app`` reference parser (which must never execute anything).
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twistwsgi.config import (
    ACCESS_LOG,
    APP,
    DURATION,
    ENDPOINT,
    HOST_KEYS,
    INT,
    MOUNT_KEYS,
    SETTINGS,
    SIZE,
    TEXT,
    THREADS,
    VHOST_SPEC,
    WORKERS,
    AppSpec,
    ConfigError,
    Kind,
    ServerConfig,
    Upstream,
    build_config,
    parse_app_spec,
)
from twistwsgi.http.settings import HttpSettings


def flag_source(name: str) -> str:
    """How the command line names a setting in errors."""
    return "--" + name.replace("_", "-")


# -- kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [("0", 0), ("10", 10), (" 7 ", 7), ("007", 7), (0, 0), (16, 16), (10**12, 10**12)],
)
def test_int_accepts_whole_numbers(raw: object, value: int) -> None:
    """INT takes decimal text (surrounding space allowed) or an int from TOML."""
    assert INT.parse(raw) == value


@pytest.mark.parametrize(
    "raw", ["", "-1", "+1", "1.5", "10k", "0x10", "ten", "1 0", -1, 1.0, 2.5, True, False, None]
)
def test_int_refuses_other_values(raw: object) -> None:
    """Signs, fractions, suffixes, floats and booleans are not whole numbers."""
    with pytest.raises(ValueError, match="whole number"):
        INT.parse(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("8192", 8192),
        ("0", 0),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("64kb", 64 * 1024),
        ("64KB", 64 * 1024),
        ("10m", 10 * 1024**2),
        ("10M", 10 * 1024**2),
        ("10mb", 10 * 1024**2),
        ("1g", 1024**3),
        ("2GB", 2 * 1024**3),
        ("512b", 512),
        ("512B", 512),
        (" 10 m ", 10 * 1024**2),
        (4096, 4096),
        (0, 0),
    ],
)
def test_size_accepts_suffixes(raw: object, value: int) -> None:
    """SIZE takes bytes with an optional k/m/g (powers of 1024) and an optional b,
    in either case, or an int from TOML.
    """
    assert SIZE.parse(raw) == value


@pytest.mark.parametrize(
    "raw", ["", "k", "1.5m", "-1", "10t", "10 kk", "10bk", "1e3", "ten", -1, 1.5, True, None]
)
def test_size_refuses_other_values(raw: object) -> None:
    """Fractions, negative sizes, unknown units, floats and booleans are refused."""
    with pytest.raises(ValueError, match="size"):
        SIZE.parse(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("0.5", 0.5),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("2.5m", 150.0),
        ("1h", 3600.0),
        (" 10 s ", 10.0),
        ("0", 0.0),
        (10, 10.0),
        (0.25, 0.25),
    ],
)
def test_duration_accepts_units(raw: object, seconds: float) -> None:
    """DURATION takes seconds, or a number with ms, s, m or h, or a TOML number;
    the result is always a float of seconds.
    """
    value = DURATION.parse(raw)
    assert isinstance(value, float)
    assert value == pytest.approx(seconds)


@pytest.mark.parametrize(
    "raw", ["", "s", "-1", "-1s", "1d", "1.s", ".5", "5 sec", "1e3", -1, -0.5, True, None]
)
def test_duration_refuses_other_values(raw: object) -> None:
    """Negative durations, unknown units, malformed numbers and booleans are refused."""
    with pytest.raises(ValueError, match="duration"):
        DURATION.parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(math.nan, id="float-nan"),
        pytest.param("nan", id="text-nan"),
        pytest.param(10**400, id="huge-int"),
    ],
)
def test_duration_refuses_nan_and_overflow(raw: object) -> None:
    """A TOML ``nan`` (a float nan makes every ``callLater`` fail its ``delay >= 0``
    assertion) and an integer too large for a float (OverflowError) are refused
    with a ValueError, so build_config can report them in one line.
    """
    with pytest.raises(ValueError, match="duration"):
        DURATION.parse(raw)


@given(st.one_of(st.floats(), st.integers(), st.text(max_size=12)))
def test_duration_returns_a_usable_number_or_value_error(raw: object) -> None:
    """For any number or text, DURATION either raises ValueError or returns a float
    that is >= 0 and not NaN.
    """
    try:
        value = DURATION.parse(raw)
    except ValueError:
        return
    assert isinstance(value, float)
    assert value >= 0


#: The settings where 0 has no useful meaning, so it is refused.
POSITIVE = {setting.name: setting for setting in (*SETTINGS, *MOUNT_KEYS) if setting.positive}


def test_which_settings_must_be_more_than_zero() -> None:
    """Limits that would refuse every request (conn_limit among them), timeouts that
    would fire at once and the health-check interval must be more than 0; timeouts
    where docs/proxy.md gives 0 a meaning, and max_body (0: no limit), may be 0.
    """
    assert set(POSITIVE) == {
        "header_timeout",
        "body_timeout",
        "send_timeout",
        "max_request_line",
        "max_header_field",
        "max_header_count",
        "max_header_total",
        "health_interval",
        "conn_limit",
        "max_response_buffer",
    }


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("health_interval", "250ms", 0.25),
        ("health_interval", 0.001, 0.001),
        ("header_timeout", "1s", 1.0),
        ("max_request_line", "1", 1),
        ("max_header_count", 1, 1),
        ("conn_limit", 1, 1),
    ],
)
def test_positive_settings_accept_values_above_zero(name: str, raw: object, value: object) -> None:
    """Any value of the kind above 0 is accepted, however small."""
    assert POSITIVE[name].parse(raw) == value


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("health_interval", 0),
        ("health_interval", 0.0),
        ("health_interval", "0"),
        ("health_interval", "0ms"),
        ("health_interval", -1),
        ("health_interval", -0.5),
        ("header_timeout", "0s"),
        ("send_timeout", 0),
        ("max_request_line", "0k"),
        ("max_header_count", 0),
        ("max_header_total", -1),
    ],
)
def test_positive_settings_refuse_zero_and_negative_numbers(name: str, raw: object) -> None:
    """0 (in any spelling) and negative numbers say what is expected."""
    with pytest.raises(ValueError, match=r"expected more than 0, got "):
        POSITIVE[name].parse(raw)


@pytest.mark.parametrize("raw", ["-1s", "5 sec", math.nan, True, None])
def test_positive_settings_keep_the_kinds_own_errors(raw: object) -> None:
    """A value that is not a duration at all is refused by the kind, as before."""
    with pytest.raises(ValueError, match="duration"):
        POSITIVE["health_interval"].parse(raw)


@given(st.one_of(st.floats(), st.integers(), st.text(max_size=12)))
def test_positive_settings_return_more_than_zero_or_value_error(raw: object) -> None:
    """For any number or text, a positive setting raises ValueError or returns > 0."""
    for setting in POSITIVE.values():
        try:
            value = setting.parse(raw)
        except ValueError:
            continue
        assert value > 0


@given(st.one_of(st.integers(), st.text(max_size=12), st.floats()))
def test_int_and_size_return_non_negative_ints_or_value_error(raw: object) -> None:
    """For any number or text, INT and SIZE raise ValueError or return an int >= 0."""
    for kind in (INT, SIZE):
        try:
            value = kind.parse(raw)
        except ValueError:
            continue
        assert type(value) is int
        assert value >= 0


def test_text_kind() -> None:
    """TEXT returns strings unchanged and refuses anything else."""
    assert TEXT.parse(" a b ") == " a b "
    for raw in (1, None, b"x", ["x"]):
        with pytest.raises(ValueError, match="string"):
            TEXT.parse(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("tcp:8080", ("tcp:8080",)),
        (" tcp:8080 ", ("tcp:8080",)),
        ("unix:/run/app.sock", ("unix:/run/app.sock",)),
        (["tcp:80", "ssl:443:privateKey=k.pem"], ("tcp:80", "ssl:443:privateKey=k.pem")),
        (("tcp:80",), ("tcp:80",)),
        ("systemd:domain=INET:index=0", ("systemd:domain=INET:index=0",)),
    ],
)
def test_endpoint_accepts_strings_and_lists(raw: object, value: tuple[str, ...]) -> None:
    """ENDPOINT takes one endpoint string or a list of them, giving a tuple."""
    assert ENDPOINT.parse(raw) == value


@pytest.mark.parametrize("raw", ["", "   ", "8080", [], (), ["tcp:80", ""], [8080], 8080, None])
def test_endpoint_refuses_other_values(raw: object) -> None:
    """Empty strings, strings without a colon, empty lists and non-strings are not
    endpoint strings.
    """
    with pytest.raises(ValueError, match=r"endpoint|string"):
        ENDPOINT.parse(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("-", "-"), ("off", "off"), ("/var/log/access.log", "/var/log/access.log"), (" x ", "x")],
)
def test_access_log_values(raw: str, value: str) -> None:
    """ACCESS_LOG takes a path, "-" or "off", stripped."""
    assert ACCESS_LOG.parse(raw) == value


@pytest.mark.parametrize("raw", ["", "  ", 1, None])
def test_access_log_refuses_empty_and_non_strings(raw: object) -> None:
    """An empty access-log value or a non-string is refused."""
    with pytest.raises(ValueError, match=r"path|string"):
        ACCESS_LOG.parse(raw)


def test_app_kind_checks_the_reference() -> None:
    """APP returns the stripped reference and refuses what parse_app_spec refuses."""
    assert APP.parse(" pkg.mod:app ") == "pkg.mod:app"
    with pytest.raises(ValueError):
        APP.parse("pkg-mod")
    with pytest.raises(ValueError):
        APP.parse(3)


# -- the declarations -----------------------------------------------------------------

#: What each kind's parser returns.
PARSED_TYPE: dict[str, type] = {
    INT.name: int,
    THREADS.name: int,
    WORKERS.name: int,
    SIZE.name: int,
    DURATION.name: float,
    TEXT.name: str,
    ENDPOINT.name: tuple,
    ACCESS_LOG.name: str,
    APP.name: str,
    "BOOL": bool,
    "VERSION": str,
    "TEMPLATE": str,
    "ESCAPE": str,
    "SWITCH": bool,
    "PREFIX=DIR": tuple,
    "PREFIX=URL": tuple,
    "PREFIX=ANSWER": tuple,
    "CIDRS": tuple,
    "NAMES[/PREFIX]=KIND:TARGET": tuple,
    "FIELD": bytes,
    "REDIRECT": str,  # "on" or "off" (or a port number, an int)
    "TYPES": tuple,
    "LEVEL": int,
    "MODE": str,
}


#: Defaults that are sentinels a user cannot type: access_log "" means "the server
#: log", the behaviour when the flag is not given.
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_every_setting_is_declared_completely(setting: Any) -> None:
    """Each setting has help text and a default of its kind's parsed type that its
    own kind accepts unchanged (None meaning "not set").
    """
    assert setting.help.strip()
    assert setting.name.isidentifier()
    assert setting.flag == "--" + setting.name.replace("_", "-")
    if setting.default is None:
        return
    assert isinstance(setting.default, PARSED_TYPE[setting.kind.name])
    assert setting.parse(setting.default) == setting.default


@pytest.mark.parametrize(
    "key", (*HOST_KEYS, *MOUNT_KEYS), ids=lambda key: f"{key.name}-{len(key.applies_to)}"
)
def test_every_host_and_mount_key_is_declared_completely(key: Any) -> None:
    """Each [[host]] and [[host.mount]] key has help text and a kind that describes
    its values, and a default its own kind accepts unchanged (None: not set).
    """
    assert key.help.strip()
    assert key.name.isidentifier()
    assert key.kind.name and key.kind.description.strip()
    if key.default is not None:
        assert key.parse(key.default) == key.default


def test_each_kind_of_value_has_one_description() -> None:
    """The reference lists each kind of value once: two kinds of one name with other
    meanings would be listed twice under that name.
    """
    described: dict[str, set[str]] = {}
    for key in (*SETTINGS, *HOST_KEYS, *MOUNT_KEYS):
        described.setdefault(key.kind.name, set()).add(key.kind.description)
    assert {name: texts for name, texts in described.items() if len(texts) > 1} == {}


def test_setting_names_are_unique_and_all_used() -> None:
    """Names are unique, and each one is a field of ServerConfig or HttpSettings, so
    no setting is parsed and then silently dropped.
    """
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    # The mount settings become hosts (and the redirect each host's), --config
    # becomes config_file.
    field_of = {
        "https_redirect": "hosts",
        "app": "hosts",
        "static": "hosts",
        "proxy": "hosts",
        "return": "hosts",
        "vhost": "hosts",
        "config": "config_file",
    }
    config_fields = {f.name for f in fields(ServerConfig)} - {"http", "sources"}
    http_fields = {f.name for f in fields(HttpSettings)}
    for name in names:
        assert field_of.get(name, name) in config_fields | http_fields, name
    assert config_fields <= {field_of.get(name, name) for name in names}


def test_every_kind_has_a_name_and_description() -> None:
    """Every kind used by a setting has a name and a description for the docs."""
    kinds: set[Kind] = {setting.kind for setting in SETTINGS}
    for kind in kinds:
        assert kind.name
        assert kind.description.strip()


# -- build_config ---------------------------------------------------------------------


def test_build_config_defaults() -> None:
    """With nothing given, the config equals ServerConfig's own defaults (so the
    declarations and the dataclass agree).
    """
    config = build_config({"app": "a:b"}, source=flag_source)
    defaults = ServerConfig()
    for name in ("listen", "threads", "access_log", "graceful_timeout", "http"):
        assert getattr(config, name) == getattr(defaults, name), name
    assert config.http == HttpSettings()
    assert config.listen == ("tcp:8080",)
    assert config.app == "a:b"


def test_nothing_to_serve_is_an_error() -> None:
    """Without an application, files, an upstream or hosts there is nothing to serve."""
    with pytest.raises(ConfigError, match="nothing to serve"):
        build_config({}, source=flag_source)


def test_build_config_parses_values() -> None:
    """Given values are parsed by their kinds; the rest keep their defaults."""
    config = build_config(
        {
            "app": "pkg.mod:create_app('prod')",
            "listen": ["tcp:80", "unix:/run/a.sock"],
            "threads": "4",
            "access_log": "off",
            "graceful_timeout": "2m",
        },
        source=flag_source,
    )
    assert config.app == "pkg.mod:create_app('prod')"
    assert config.listen == ("tcp:80", "unix:/run/a.sock")
    assert config.threads == 4
    assert config.access_log == "off"
    assert config.graceful_timeout == 120.0
    assert config.http == HttpSettings()


def test_http_settings_land_in_config_http() -> None:
    """Limits and timeouts go into config.http as HttpSettings fields."""
    config = build_config(
        {
            "app": "a:b",
            "max_body": "10m",
            "max_header_count": "50",
            "max_request_line": "4k",
            "max_header_field": 1000,
            "max_header_total": "64k",
            "keepalive_timeout": "750ms",
            "header_timeout": "10s",
            "body_timeout": 20,
            "send_timeout": "1m",
        },
        source=flag_source,
    )
    assert config.http == HttpSettings(
        max_body=10 * 1024**2,
        max_header_count=50,
        max_request_line=4096,
        max_header_field=1000,
        max_header_total=65536,
        keepalive_timeout=0.75,
        header_timeout=10.0,
        body_timeout=20.0,
        send_timeout=60.0,
    )
    assert config.threads == ServerConfig().threads


def test_unknown_setting_names_its_source() -> None:
    """An unknown name is a ConfigError whose message starts with where it was
    written, as the ``source`` callable spells it.
    """

    def toml_source(name: str) -> str:
        return f"site.toml: server.{name}"

    with pytest.raises(ConfigError) as excinfo:
        build_config({"thread": 4}, source=toml_source)
    error = excinfo.value
    assert error.where == "site.toml: server.thread"
    assert str(error).startswith("site.toml: server.thread: ")
    assert "unknown" in error.problem


@pytest.mark.parametrize(
    ("name", "raw", "flag"),
    [
        ("threads", "many", "--threads"),
        ("max_body", "1.5m", "--max-body"),
        ("keepalive_timeout", "5 days", "--keepalive-timeout"),
        ("listen", "8080", "--listen"),
        ("app", "no-module", "--app"),
        ("access_log", 5, "--access-log"),
    ],
)
def test_bad_value_names_the_flag(name: str, raw: object, flag: str) -> None:
    """A value that does not parse is a one-line ConfigError naming the flag and
    quoting the value.
    """
    with pytest.raises(ConfigError) as excinfo:
        build_config({name: raw}, source=flag_source)
    message = str(excinfo.value)
    assert excinfo.value.where == flag
    assert message.startswith(flag + ": ")
    assert repr(raw) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        pytest.param("graceful_timeout", math.nan, id="nan-duration"),
        pytest.param("keepalive_timeout", 10**400, id="huge-int-duration"),
        pytest.param("app", "mod:create_app({[1]: 2})", id="list-as-dict-key"),
        pytest.param("app", "mod:create_app({[]})", id="list-in-set"),
    ],
)
def test_odd_values_are_config_errors(name: str, raw: object) -> None:
    """Values a TOML file can hold (nan, integers beyond float range) and app
    references with unhashable literals are ConfigErrors, never another exception
    (design: "never a traceback").
    """
    with pytest.raises(ConfigError) as excinfo:
        build_config({name: raw}, source=flag_source)
    assert excinfo.value.where == flag_source(name)


# -- parse_app_spec -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("mod:app", AppSpec("mod", "app")),
        ("pkg.sub.mod:application", AppSpec("pkg.sub.mod", "application")),
        ("mod:holder.inner.app", AppSpec("mod", "holder.inner.app")),
        ("_private:_app2", AppSpec("_private", "_app2")),
        ("mod:create_app()", AppSpec("mod", "create_app", ((), {}))),
        ("mod:factories.make()", AppSpec("mod", "factories.make", ((), {}))),
        ("mod:create_app('prod')", AppSpec("mod", "create_app", (("prod",), {}))),
        (
            "mod:create_app('prod', 2, debug=True, opts={'a': [1, 2]})",
            AppSpec("mod", "create_app", (("prod", 2), {"debug": True, "opts": {"a": [1, 2]}})),
        ),
        (
            "mod:f(b'x', None, -1.5, (1, 'two'), {3})",
            AppSpec("mod", "f", ((b"x", None, -1.5, (1, "two"), {3}), {})),
        ),
        ("mod:f( 1 , key = 'v' )", AppSpec("mod", "f", ((1,), {"key": "v"}))),
        ("myproject.wsgi", AppSpec("myproject.wsgi", "application")),
        ("mod", AppSpec("mod", "application")),
    ],
)
def test_parse_app_spec(text: str, spec: AppSpec) -> None:
    """Gunicorn's syntax: module:name with dotted module and attribute paths, or a
    factory call whose positional and keyword arguments are Python literals; a
    module alone names its ``application`` (gunicorn myproject.wsgi, as Django's
    deployment guide writes it).
    """
    assert parse_app_spec(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":app",
        "mod:",
        "mod.:app",
        ".mod:app",
        "1mod:app",
        "mod:1app",
        "mod:app-x",
        "mod:app:x",
        "mod:app.",
        "mod:app()x",
        "mod:app(",
        "mod:app)",
        "mod:(1)",
        "mod:(app)",
        "mod:f()()",
        "mod:f(1)(2)",
        "mod:a[0]()",
        "mod:f(1,,2)",
        "mod:lambda: 0",
        "m-od:app",
        "mod:app ",
        "mod :app",
    ],
)
def test_malformed_references_are_value_errors(text: str) -> None:
    """Anything that is not module:name or module:dotted.factory(literals) is a
    ValueError.
    """
    with pytest.raises(ValueError):
        parse_app_spec(text)


@pytest.mark.parametrize(
    "text",
    [
        "mod:f(x)",
        "mod:f(os.environ)",
        "mod:f(key=value)",
        "mod:f(*args)",
        "mod:f(*[1, 2])",
        "mod:f(**{'a': 1})",
        "mod:f(1, **kwargs)",
        "mod:f(g())",
        "mod:f([i for i in range(3)])",
        "mod:f(1 if True else 2)",
        "mod:f('a' + 'b')",
        "mod:f(f'{1}')",
        "mod:f(lambda: 1)",
        "mod:f(__import__('os').system('x'))",
    ],
)
def test_non_literal_arguments_are_refused(text: str) -> None:
    """Factory arguments must be literals (``ast.literal_eval``); names, calls,
    unpacking, comprehensions and expressions are refused with a ValueError.
    """
    with pytest.raises(ValueError, match="literal"):
        parse_app_spec(text)


def test_nothing_in_the_reference_is_executed(tmp_path: Path) -> None:
    """Parsing executes nothing: an argument that would create a file leaves no
    file behind, in the positional or the keyword position.
    """
    marker = tmp_path / "executed"
    for text in (
        f"mod:f(open({str(marker)!r}, 'w'))",
        f"mod:f(x=open({str(marker)!r}, 'w'))",
        f"mod:f(__import__('pathlib').Path({str(marker)!r}).touch())",
    ):
        with pytest.raises(ValueError):
            parse_app_spec(text)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["mod:f({[1]: 2})", "mod:f({[]})", "mod:f(x={(1, [2])})"])
def test_unhashable_literals_are_value_errors(text: str) -> None:
    """Literals ``ast.literal_eval`` cannot build (a list as a dict key or in a set)
    are refused with a ValueError, the one error parse_app_spec documents.
    """
    with pytest.raises(ValueError):
        parse_app_spec(text)


def test_repeated_keyword_argument_is_refused() -> None:
    """``f(x=1, x=2)`` is not a valid Python call (the compiler refuses a repeated
    keyword), so it is a malformed reference rather than a silent ``x=2``.
    """
    with pytest.raises(SyntaxError):
        compile("f(x=1, x=2)", "<app>", "eval")
    with pytest.raises(ValueError):
        parse_app_spec("mod:f(x=1, x=2)")


@given(st.text(max_size=40))
def test_parse_app_spec_raises_only_value_error(text: str) -> None:
    """For any text, parse_app_spec returns an AppSpec or raises ValueError."""
    try:
        spec = parse_app_spec(text)
    except ValueError:
        return
    assert spec.module
    assert spec.attribute


# -- --vhost NAMES[/PREFIX]=KIND:TARGET ------------------------------------------------


def test_vhost_values_parse_into_names_path_kind_and_target(tmp_path: Path) -> None:
    """Each --vhost is host names, an optional mount path (/ by default), and a kind
    whose target is parsed as --app, --static or --proxy parse theirs.
    """
    specs = VHOST_SPEC.parse(
        [
            "api.example.com=proxy:http://127.0.0.1:9000",
            "docs.example.com/search=app:search:app",
            f"a.example,*.b.example/files/=STATIC:{tmp_path}",
            "[::1]=app:mod:create(env='x=y')",
        ]
    )
    assert [(spec.names, spec.path, spec.kind, spec.target) for spec in specs] == [
        (("api.example.com",), "/", "proxy", (Upstream("http://127.0.0.1:9000"),)),
        (("docs.example.com",), "/search", "app", "search:app"),
        (("a.example", "*.b.example"), "/files", "static", str(tmp_path)),
        (("[::1]",), "/", "app", "mod:create(env='x=y')"),
    ]
    assert specs[1].text == "docs.example.com/search=app:search:app"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("api.example.com", "expected NAMES[/PREFIX]=KIND:TARGET"),
        ("api.example.com=", "expected NAMES[/PREFIX]=KIND:TARGET"),
        ("=app:m:a", "expected NAMES[/PREFIX]=KIND:TARGET"),
        ("/api=app:m:a", "no host name before the path"),
        (
            "a.example=ftp:x",
            "unknown kind 'ftp': expected app:MODULE:NAME, static:DIR, proxy:URL or return:ANSWER",
        ),
        ("a.example=app", "nothing after app:"),
        ("a.example=static: ", "nothing after static:"),
        ("a b=app:m:a", "'a b' is not a host name"),
        ("a.example,,b.example=app:m:a", "'' is not a host name"),
        ("[fe80::1%eth0]=app:m:a", "an IPv6 zone identifier cannot be part of a host name"),
        ("[::g]=app:m:a", "'[::g]' is not a host name"),
        ("[1:2]=app:m:a", "'[1:2]' is not an IPv6 address in brackets"),
        ("a.example/x/../y=app:m:a", "a mount path has no empty, . or .. segments"),
        ("a.example/x?y=app:m:a", "a mount path is a plain path"),
        ("a.example=app:no-module", "expected module, module:name or module:factory()"),
        ("a.example=static:/no/such/dir", "directory '/no/such/dir' does not exist"),
        ("a.example=proxy:ftp://x", "expected an upstream URL"),
    ],
)
def test_bad_vhost_values_name_the_value_as_typed(text: str, problem: str) -> None:
    """A --vhost that does not parse is one line naming the flag and the value as it
    was typed (one among several), then the problem.
    """
    with pytest.raises(ConfigError) as excinfo:
        build_config({"vhost": ["ok.example=app:m:a", text]}, source=flag_source)
    message = str(excinfo.value)
    assert excinfo.value.where == f"--vhost {text.strip()!r}"
    assert problem in excinfo.value.problem
    assert "\n" not in message


def test_vhosts_with_the_same_names_are_one_host(tmp_path: Path) -> None:
    """Several --vhost with the same names (any order, case or trailing dot) are the
    mounts of one host, named by the first; other names make other hosts. None of
    them is the default host.
    """
    config = build_config(
        {
            "vhost": [
                "b.example,A.example=app:m:a",
                f"c.example=static:{tmp_path}",
                "a.example,B.EXAMPLE./api=proxy:http://127.0.0.1:9000",
            ]
        },
        source=flag_source,
    )
    first, second = config.hosts
    assert first.names == ("b.example", "A.example") and not first.default
    assert [(m.path, m.kind, m.where) for m in first.mounts] == [
        ("/", "app", "--vhost 'b.example,A.example=app:m:a'"),
        ("/api", "proxy", "--vhost 'a.example,B.EXAMPLE./api=proxy:http://127.0.0.1:9000'"),
    ]
    assert first.where == "--vhost 'b.example,A.example=app:m:a'"
    assert second.names == ("c.example",) and not second.default
    # Mounts of --vhost take the defaults of their kind, as --static and --proxy do.
    assert second.mounts[0].options["index"] == ("index.html",)


def test_the_single_site_stays_the_default_host_beside_vhosts(tmp_path: Path) -> None:
    """--app, --static and --proxy make the default host, which answers every name
    no --vhost lists; the --vhost hosts come after it.
    """
    config = build_config(
        {
            "app": "shop.wsgi:app",
            "static": [f"/static={tmp_path}"],
            "vhost": ["api.example.com=proxy:http://127.0.0.1:9000"],
        },
        source=flag_source,
    )
    default, api = config.hosts
    assert default.default and default.names == ()
    assert [m.path for m in default.mounts] == ["/", "/static"]
    assert api.names == ("api.example.com",) and not api.default
    assert config.app == "shop.wsgi:app"


@pytest.mark.parametrize(
    ("vhosts", "where", "problem"),
    [
        (
            ["a.example=app:m:a", "a.example=app:m:b"],
            "--vhost 'a.example=app:m:b'",
            "path '/' is already mounted by --vhost 'a.example=app:m:a'",
        ),
        (
            ["a.example/x=app:m:a", "A.Example./x/=proxy:http://127.0.0.1:1"],
            "--vhost 'A.Example./x/=proxy:http://127.0.0.1:1'",
            "path '/x' is already mounted by --vhost 'a.example/x=app:m:a'",
        ),
        (
            ["a.example=app:m:a", "b.example,a.example=app:m:b"],
            "--vhost 'b.example,a.example=app:m:b'",
            "'a.example' is already a name of --vhost 'a.example=app:m:a'; to add a mount"
            " to that host, give all its names: a.example",
        ),
        (
            ["a.example,*.a.example=app:m:a", "a.example/search=app:m:b"],
            "--vhost 'a.example/search=app:m:b'",
            "'a.example' is already a name of --vhost 'a.example,*.a.example=app:m:a'; to add"
            " a mount to that host, give all its names: a.example,*.a.example",
        ),
        (
            # One address, two spellings: the same host, so the same path twice.
            ["[::1]=app:m:a", "[0:0::1]=app:m:b"],
            "--vhost '[0:0::1]=app:m:b'",
            "path '/' is already mounted by --vhost '[::1]=app:m:a'",
        ),
        (
            ["[::1]=app:m:a", "b.example,[0:0::1]=app:m:b"],
            "--vhost 'b.example,[0:0::1]=app:m:b'",
            "'[0:0::1]' is already a name of --vhost '[::1]=app:m:a'; to add a mount to"
            " that host, give all its names: [::1]",
        ),
        (
            ["a.example,a.example=app:m:a"],
            "--vhost 'a.example,a.example=app:m:a'",
            "'a.example' is already a name of --vhost 'a.example,a.example=app:m:a'",
        ),
    ],
)
def test_conflicting_vhosts_are_refused(vhosts: list[str], where: str, problem: str) -> None:
    """Two mounts at one path of a host, or a name given to two hosts, are errors
    naming both values as typed (as for the configuration file).
    """
    with pytest.raises(ConfigError) as excinfo:
        build_config({"vhost": vhosts}, source=flag_source)
    assert (excinfo.value.where, excinfo.value.problem) == (where, problem)


@given(st.text(max_size=40))
def test_vhost_parsing_raises_only_value_error(text: str) -> None:
    """Whatever is typed, parsing a --vhost returns specs or raises ValueError."""
    try:
        specs = VHOST_SPEC.parse(text)
    except ValueError:
        return
    assert all(spec.kind in ("app", "static", "proxy") for spec in specs)


# -- values an audit found accepted or crashing -------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("1024", 1024), (16, 16)])
def test_threads_accept_up_to_the_maximum(raw: object, value: int) -> None:
    """THREADS is a whole number up to MAX_THREADS."""
    assert THREADS.parse(raw) == value


@pytest.mark.parametrize(
    ("raw", "value"), [("0", 0), (0, 0), ("1", 1), ("256", 256), (4, 4), (" 2 ", 2)]
)
def test_workers_are_a_whole_number_from_0_to_the_maximum(raw: object, value: int) -> None:
    assert WORKERS.parse(raw) == value
    config = build_config({"workers": raw, "app": "tests.apps:hello"}, source=flag_source)
    assert config.workers == value


@pytest.mark.parametrize("raw", ["auto", "AUTO", " auto"])
def test_auto_workers_are_one_per_cpu_this_process_may_use(raw: str) -> None:
    """Nginx's worker_processes auto, counting the CPUs of the affinity mask (a
    container's cpuset), not those of the machine.
    """
    assert WORKERS.parse(raw) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("raw", ["257", "-1", "2.5", "many", True, ""])
def test_workers_out_of_range_are_refused_naming_the_setting(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"^--workers: expected "):
        build_config({"workers": raw, "app": "tests.apps:hello"}, source=flag_source)


def test_max_requests_are_counted_per_worker_and_need_workers() -> None:
    config = build_config(
        {"workers": "2", "max_requests": "1000", "max_requests_jitter": "50", "app": "x:y"},
        source=flag_source,
    )
    assert (config.max_requests, config.max_requests_jitter) == (1000, 50)
    assert build_config({"app": "x:y"}, source=flag_source).max_requests == 0
    with pytest.raises(
        ConfigError, match=r"^--max-requests: needs workers \(1 or more\): a worker process"
    ):
        build_config({"max_requests": "1000", "app": "x:y"}, source=flag_source)


def test_memory_and_lifetime_limits_of_workers_are_sizes_and_durations_and_need_workers() -> None:
    config = build_config(
        {"workers": "2", "max_worker_memory": "512m", "max_worker_lifetime": "6h", "app": "x:y"},
        source=flag_source,
    )
    assert (config.max_worker_memory, config.max_worker_lifetime) == (512 * 2**20, 21600.0)
    unset = build_config({"app": "x:y"}, source=flag_source)
    assert (unset.max_worker_memory, unset.max_worker_lifetime) == (0, 0.0)
    for name, flag, raw in [
        ("max_worker_memory", "--max-worker-memory", "1g"),
        ("max_worker_lifetime", "--max-worker-lifetime", "1h"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{flag}: needs workers \(1 or more\)"):
            build_config({name: raw, "app": "x:y"}, source=flag_source)
    with pytest.raises(ConfigError, match=r"^--max-worker-memory: expected a size such as"):
        build_config(
            {"workers": "2", "max_worker_memory": "lots", "app": "x:y"}, source=flag_source
        )


def test_worker_timeout_is_a_duration_30s_by_default_and_harmless_without_workers() -> None:
    """The default is gunicorn's --timeout; 0 turns it off. A process serving alone
    has nothing watching it, and the default must not refuse it.
    """
    assert build_config({"app": "x:y"}, source=flag_source).worker_timeout == 30.0
    config = build_config(
        {"workers": "2", "worker_timeout": "1m", "app": "x:y"}, source=flag_source
    )
    assert config.worker_timeout == 60.0
    assert (
        build_config({"worker_timeout": "0", "app": "x:y"}, source=flag_source).worker_timeout == 0
    )
    for raw in ["-5", "soon", float("nan")]:
        with pytest.raises(ConfigError, match=r"^--worker-timeout: expected a"):
            build_config({"workers": "2", "worker_timeout": raw, "app": "x:y"}, source=flag_source)


@pytest.mark.parametrize("raw", ["1025", "99999999999999999999", 10**6])
def test_threads_refuse_more_than_the_maximum(raw: object) -> None:
    """A few zeros too many is refused here, not by a failed thread start (exit 1)."""
    with pytest.raises(ConfigError, match=r"--threads: expected at most 1024 threads"):
        build_config({"threads": raw}, source=flag_source)


@pytest.mark.parametrize(
    ("raw", "networks"),
    [
        ("10.0.0.0/8,192.168.0.0/16", ("10.0.0.0/8", "192.168.0.0/16")),
        ("10.0.0.0/8, 192.168.0.0/16", ("10.0.0.0/8", "192.168.0.0/16")),
        ("10.0.0.0/8 unix:", ("10.0.0.0/8", "unix:")),
        (
            ["10.0.0.1", "192.168.0.0/16,172.16.0.0/12"],
            ("10.0.0.1/32", "192.168.0.0/16", "172.16.0.0/12"),
        ),
    ],
)
def test_trusted_proxies_take_a_list_in_one_argument(
    raw: object, networks: tuple[str, ...]
) -> None:
    """On the command line the list is one argument (or the flag is repeated)."""
    config = build_config({"app": "a:b", "trusted_proxies": raw}, source=flag_source)
    assert config.trusted_proxies == networks


@pytest.mark.parametrize("raw", [",", " "])
def test_trusted_proxies_refuse_an_empty_list_in_text(raw: str) -> None:
    """Separators alone name no proxy: a mistake, not "trust nobody"."""
    with pytest.raises(ConfigError, match="--trusted-proxies: expected addresses"):
        build_config({"trusted_proxies": raw}, source=flag_source)


def test_the_same_endpoint_twice_is_refused() -> None:
    """Listening twice on one endpoint would fail as "address already in use",
    which reads like another process holding the port.
    """
    with pytest.raises(ConfigError, match="--listen: 'tcp:8080' is given twice"):
        build_config({"listen": ["tcp:8080", "tcp:8081", "tcp:8080"]}, source=flag_source)


@pytest.mark.parametrize(("given", "parsed"), [("1.3", "1.3"), (1.3, "1.3"), ("1.2", "1.2")])
def test_tls_min_version_takes_a_string_or_a_toml_number(given: object, parsed: str) -> None:
    """`tls_min_version = 1.3` in TOML is a float; it means the same as "1.3"."""
    config = build_config({"app": "a:b", "tls_min_version": given}, source=flag_source)
    assert config.tls_min_version == parsed


@pytest.mark.parametrize("given", ["1.1", "1.0", 1.1, "TLSv1.3", True])
def test_tls_min_version_refuses_what_is_not_offered(given: object) -> None:
    with pytest.raises(ConfigError, match=r"--tls-min-version: expected (1\.2 or 1\.3|a string)"):
        build_config({"app": "a:b", "tls_min_version": given}, source=flag_source)


@pytest.mark.parametrize("given", ["", "ECDHE;rm -rf", 5])
def test_tls_ciphers_must_look_like_a_cipher_list(given: object) -> None:
    with pytest.raises(ConfigError, match="--tls-ciphers"):
        build_config({"app": "a:b", "tls_ciphers": given}, source=flag_source)


@pytest.mark.parametrize(
    ("value", "sent"),
    [("acme", b"acme"), ("", b""), (" caf\u00e9 ", b"caf\xe9"), ("twistwsgi", b"twistwsgi")],
)
def test_server_header_sets_or_removes_the_server_field(value: str, sent: bytes) -> None:
    """The Server field can be set, or left out with an empty value (nginx users
    hide the server's name with server_tokens).
    """
    config = build_config({"app": "a:b", "server_header": value}, source=flag_source)
    assert config.http.server_header == sent


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: x=1", "\x01", "\u65e5\u672c"])
def test_server_header_refuses_what_a_field_cannot_carry(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_config({"app": "a:b", "server_header": value}, source=flag_source)
    assert "--server-header" in str(raised.value)
