"""Loading the application named by ``--app`` (``twistwsgi.appload``), with throwaway
modules written to a temporary directory. Every failure must be one AppLoadError
line naming the reference, never a traceback.
"""

from __future__ import annotations

import itertools
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from twistwsgi.appload import AppLoadError, load_app

_numbers = itertools.count()

#: Writes ``source`` as a new, uniquely named module; returns the module's name.
WriteModule = Callable[[str], str]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Put ``tmp_path`` on sys.path and write modules there; unload them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"twistwsgi_appload_probe_{os.getpid()}_{next(_numbers)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def load_error(reference: str) -> str:
    """Return the message of the AppLoadError that loading ``reference`` raises."""
    with pytest.raises(AppLoadError) as excinfo:
        load_app(reference)
    return str(excinfo.value)


APP_SOURCE = """
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"plain"]
"""


def call(app: Any) -> list[bytes]:
    """Call a loaded WSGI app with a dummy start_response; return its body."""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses.append(status)

    body: list[bytes] = list(app({}, start_response))
    assert statuses == ["200 OK"]
    return body


def test_plain_app_loads(write_module: WriteModule) -> None:
    """``module:name`` returns the module's callable itself."""
    name = write_module(APP_SOURCE)
    app = load_app(f"{name}:app")
    assert app is sys.modules[name].app
    assert call(app) == [b"plain"]


def test_a_module_alone_names_its_application(write_module: WriteModule) -> None:
    """``--app myproject.wsgi`` (gunicorn's form in Django's deployment guide) serves
    the module's ``application``; without one, the error says how to name another.
    """
    name = write_module(APP_SOURCE.replace("def app(", "def application("))
    assert call(load_app(name)) == [b"plain"]
    other = write_module(APP_SOURCE)
    message = load_error(other)
    assert "has no attribute 'application'" in message
    assert "module:name" in message


def test_dotted_attribute_loads(write_module: WriteModule) -> None:
    """``module:holder.app`` follows the attribute path."""
    name = write_module(
        """
        class Holder:
            @staticmethod
            def app(environ, start_response):
                start_response("200 OK", [])
                return [b"nested"]

        holder = Holder()
        """
    )
    assert call(load_app(f"{name}:holder.app")) == [b"nested"]


def test_package_module_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dotted module path inside a package is imported."""
    package = f"twistwsgi_appload_package_{os.getpid()}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / package / "wsgi.py").write_text(textwrap.dedent(APP_SOURCE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert call(load_app(f"{package}.wsgi:app")) == [b"plain"]
    finally:
        sys.modules.pop(f"{package}.wsgi", None)
        sys.modules.pop(package, None)


def test_factory_with_arguments_loads(write_module: WriteModule) -> None:
    """``module:factory(args, key=value)`` calls the factory with those literals and
    returns what it returns.
    """
    name = write_module(
        """
        def create_app(label, count, *, upper=False):
            text = (label * count).upper() if upper else label * count

            def app(environ, start_response):
                start_response("200 OK", [])
                return [text.encode()]

            return app
        """
    )
    assert call(load_app(f"{name}:create_app('ab', 2, upper=True)")) == [b"ABAB"]
    assert call(load_app(f"{name}:create_app('x', 3)")) == [b"xxx"]


def test_missing_module(write_module: WriteModule) -> None:
    """A module that does not exist: the message names the reference and the module."""
    reference = "twistwsgi_no_such_module_anywhere:app"
    message = load_error(reference)
    assert repr(reference) in message
    assert "twistwsgi_no_such_module_anywhere" in message
    assert "ModuleNotFoundError" in message
    assert "\n" not in message


def test_missing_dependency_is_reported_as_such(write_module: WriteModule) -> None:
    """When the module exists but one of its imports does not, the message names the
    missing dependency, not only the app module.
    """
    name = write_module("import twistwsgi_missing_dependency_xyz\napp = None\n")
    message = load_error(f"{name}:app")
    assert "twistwsgi_missing_dependency_xyz" in message
    assert repr(f"{name}:app") in message
    assert "\n" not in message


def test_module_raising_at_import(write_module: WriteModule) -> None:
    """An exception while importing gives its type and text in one line."""
    name = write_module('raise RuntimeError("database URL is not set")\n')
    message = load_error(f"{name}:app")
    assert repr(f"{name}:app") in message
    assert "RuntimeError: database URL is not set" in message
    assert "\n" not in message


@pytest.mark.parametrize("code", ["0", "'settings missing'", "3"])
def test_module_calling_sys_exit_at_import(write_module: WriteModule, code: str) -> None:
    """sys.exit() while importing (or in a factory) is a load error like any other:
    one line, and the CLI's exit status 2, not the module's own status.
    """
    name = write_module(f"import sys\nsys.exit({code})\n")
    message = load_error(f"{name}:app")
    assert "SystemExit" in message and repr(f"{name}:app") in message
    factory = write_module(f"import sys\ndef make():\n    sys.exit({code})\n")
    assert "SystemExit" in load_error(f"{factory}:make()")


def test_module_with_syntax_error(write_module: WriteModule) -> None:
    """A syntax error in the module is reported as SyntaxError, in one line."""
    name = write_module("def app(:\n    pass\n")
    message = load_error(f"{name}:app")
    assert repr(f"{name}:app") in message
    assert "SyntaxError" in message
    assert "\n" not in message


def test_multiline_exception_text_is_kept_on_one_line(write_module: WriteModule) -> None:
    """An import-time exception whose text spans lines (pydantic and Django
    configuration errors do) still gives a one-line message, as AppLoadError
    promises ("the message is one line").
    """
    name = write_module('raise ValueError("2 validation errors\\nDATABASE_URL\\n  missing")\n')
    message = load_error(f"{name}:app")
    assert repr(f"{name}:app") in message
    assert "ValueError" in message
    assert "DATABASE_URL" in message
    assert "\n" not in message


def test_multiline_factory_error_is_kept_on_one_line(write_module: WriteModule) -> None:
    """A factory raising an exception with a multi-line text also gives one line."""
    name = write_module(
        """
        def create_app():
            raise RuntimeError("first line\\nsecond line")
        """
    )
    message = load_error(f"{name}:create_app()")
    assert "RuntimeError" in message
    assert "second line" in message
    assert "\n" not in message


def test_missing_attribute(write_module: WriteModule) -> None:
    """A missing attribute (also deep in a dotted path) names the attribute path
    and the reference.
    """
    name = write_module("class Holder:\n    pass\n")
    for attribute in ("application", "Holder.app"):
        reference = f"{name}:{attribute}"
        message = load_error(reference)
        assert repr(attribute) in message
        assert repr(reference) in message
        assert "\n" not in message


def test_factory_raising(write_module: WriteModule) -> None:
    """A factory that raises gives the factory, the reference, the exception type and
    its text.
    """
    name = write_module(
        """
        def create_app(mode):
            raise LookupError(f"no settings for {mode}")
        """
    )
    reference = f"{name}:create_app('prod')"
    message = load_error(reference)
    assert repr(reference) in message
    assert "create_app" in message
    assert "LookupError: no settings for prod" in message
    assert "\n" not in message


def test_factory_called_with_wrong_arguments(write_module: WriteModule) -> None:
    """Calling a factory with arguments it does not take is a load error too."""
    name = write_module("def create_app():\n    return create_app\n")
    message = load_error(f"{name}:create_app(1, 2)")
    assert "TypeError" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("source", "reference", "type_name"),
    [
        ("app = 42\n", "app", "int"),
        ("app = None\n", "app", "NoneType"),
        ("app = 'module:app'\n", "app", "str"),
        ("def create_app():\n    return [1]\n", "create_app()", "list"),
    ],
)
def test_non_callable_result(
    write_module: WriteModule, source: str, reference: str, type_name: str
) -> None:
    """PEP 3333: the application object must be callable; anything else (directly or
    from a factory) is refused, naming the reference and what it was.
    """
    name = write_module(source)
    message = load_error(f"{name}:{reference}")
    assert repr(f"{name}:{reference}") in message
    assert type_name in message
    assert "\n" not in message


@pytest.mark.parametrize("reference", ["no-colon", "mod:", "mod:f(x)", ":app"])
def test_malformed_reference(reference: str) -> None:
    """A reference parse_app_spec refuses is an AppLoadError naming it."""
    message = load_error(reference)
    assert repr(reference) in message
    assert "\n" not in message


def test_current_directory_is_put_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current directory goes on sys.path first (as gunicorn does), so a module
    in it loads without any other sys.path change.
    """
    name = f"twistwsgi_appload_cwd_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_SOURCE), encoding="utf-8")
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", ".")])
    monkeypatch.chdir(tmp_path)
    try:
        app = load_app(f"{name}:app")
    finally:
        sys.modules.pop(name, None)
    assert call(app) == [b"plain"]
    assert sys.path[0] == os.getcwd()
