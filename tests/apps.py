"""Small WSGI applications the socket and end-to-end tests serve.

Importable as ``tests.apps:<name>`` from the repository root, so ``twistd wsgi`` can
load them in a subprocess. Each is wrapped in ``wsgiref.validate.validator``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any
from wsgiref.validate import validator

StartResponse = Any


def _hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


def _environ(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answers with the string values of the environ, and the body length, as JSON."""
    stream = environ["wsgi.input"]
    size = 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        size += len(piece)
    seen = {key: value for key, value in environ.items() if isinstance(value, str)}
    seen["body_length"] = str(size)
    payload = json.dumps(seen).encode("ascii")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def _file(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serves the file named by the query string through wsgi.file_wrapper."""
    path = environ["QUERY_STRING"]
    size = os.path.getsize(path)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    wrapper: Callable[[IO[bytes]], Iterable[bytes]] = environ["wsgi.file_wrapper"]
    return wrapper(open(path, "rb"))  # the server closes the wrapper, and so the file


def _echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Streams the request body back as it is read."""
    stream = environ["wsgi.input"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def body() -> Iterable[bytes]:
        while True:
            piece = stream.read(65536)
            if not piece:
                return
            yield piece

    return body()


hello = validator(_hello)
environ = validator(_environ)
echo = validator(_echo)
# Not validated: the validator wraps the result, which hides the file wrapper.
file = _file


def _version(name: bytes) -> Any:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        while stream.read(65536):
            pass
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(name)))]
        )
        return [name]

    return validator(app)


# Two applications a reload switches between.
version_a = _version(b"A")
version_b = _version(b"B")


def _process(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Reads the body, then answers with the id of the process that serves it (for
    --workers), and the URL scheme.
    """
    while environ["wsgi.input"].read(65536):
        pass
    payload = f"{os.getpid()} {environ['wsgi.url_scheme']}".encode("ascii")
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


process = validator(_process)


def _blocking(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Never returns (with --threads 0, its worker's event loop is blocked for good)."""
    environ["wsgi.errors"].write("blocking the event loop\n")
    environ["wsgi.errors"].flush()
    threading.Event().wait()
    raise AssertionError("unreachable")


blocking = _blocking


def _stuck_in_the_application() -> None:
    """Never returns; the name a stack dump of its thread shows."""
    threading.Event().wait()


def _blocks_on_path(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """On /block never returns (blocking the event loop under --threads 0); elsewhere
    answers with the id of the process that serves it.
    """
    if environ["PATH_INFO"] == "/block":
        environ["wsgi.errors"].write("blocking the event loop\n")
        environ["wsgi.errors"].flush()
        _stuck_in_the_application()
    return _process(environ, start_response)


blocks_on_path = _blocks_on_path


def _whoami(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``REMOTE_USER`` and ``AUTH_TYPE``, as a mount's Basic authentication sets them."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    user = environ.get("REMOTE_USER", "-")
    return [f"{user} {environ.get('AUTH_TYPE', '-')}".encode("latin-1")]


whoami = validator(_whoami)


def _accel(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Hands the download of /private/<the path below the mount> to a static mount."""
    target = "/private" + environ["PATH_INFO"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Redirect", target)])
    return [b""]


accel = validator(_accel)
