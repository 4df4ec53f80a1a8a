"""Importing the WSGI application named by an ``--app`` reference.

The reference is parsed by :func:`twistwsgi.config.parse_app_spec`; this module imports
the module, follows the attribute path and calls a factory when asked. Every way this
can fail (missing module, an exception while importing, a missing attribute, a result
that is not callable) becomes one :class:`AppLoadError` line naming the reference and
the cause, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from twistwsgi.config import parse_app_spec

__all__ = ["AppLoadError", "load_app"]


class AppLoadError(Exception):
    """The application could not be loaded; the message is one line."""


def _one_line(error: BaseException) -> str:
    """An exception's text on one line (validation errors often span several)."""
    return " / ".join(line.strip() for line in str(error).splitlines() if line.strip())


def load_app(reference: str) -> Any:
    """Import and return the WSGI callable ``reference`` names.

    The current directory is put on ``sys.path`` first (as gunicorn and
    ``python -m`` do), so ``--app myproject.wsgi`` (its ``application``) works from a
    project checkout.

    Raises:
        AppLoadError: naming ``reference`` and what went wrong.
    """
    try:
        spec = parse_app_spec(reference)
    except ValueError as error:
        raise AppLoadError(f"cannot load app {reference!r}: {error}") from None
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(spec.module)
    except (Exception, SystemExit) as error:
        # SystemExit too: a module that calls sys.exit() while imported (a settings
        # check, say) must not end the server with its own status and no message.
        raise AppLoadError(
            f"cannot import module {spec.module!r} for app {reference!r}: "
            f"{type(error).__name__}: {_one_line(error)}"
        ) from None
    for part in spec.attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            hint = "" if ":" in reference else "; name another one as module:name"
            raise AppLoadError(
                f"module {spec.module!r} has no attribute {spec.attribute!r}"
                f" (app {reference!r}{hint})"
            ) from None
    if spec.call is not None:
        args, kwargs = spec.call
        try:
            target = target(*args, **kwargs)
        except (Exception, SystemExit) as error:
            raise AppLoadError(
                f"factory {spec.attribute!r} for app {reference!r} raised "
                f"{type(error).__name__}: {_one_line(error)}"
            ) from None
    if not callable(target):
        raise AppLoadError(f"app {reference!r} is a {type(target).__name__}, not a WSGI callable")
    return target
