"""A small WSGI application that shows what the server hands an application.

``make run`` serves it on http://127.0.0.1:8080. Pages:

* ``/`` — a greeting and links;
* ``/environ`` — the PEP 3333 environ of the request, as text;
* ``/echo`` — POST a body and get it back (reads ``wsgi.input`` in pieces);
* ``/stream`` — a response streamed in ten chunks, without a Content-Length;
* ``/error`` — an application exception (the server answers 500 and logs it).

The page's stylesheet and logo come from the static mount at ``/static``, and it links
to the second virtual host (``docs.localhost``), whose ``/app`` mount proxies back to
this application; see ``site.toml`` beside this file.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import Any

StartResponse = Callable[..., Callable[[bytes], object]]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>twistwsgi demo</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body>
<h1><img src="/static/logo.svg" alt="" width="48" height="48"> Hello from twistwsgi</h1>
<p>This page comes from a WSGI application running on a twistwsgi worker thread; its
stylesheet and logo are static files the same server sends with sendfile.</p>
<ul>
<li><a href="/environ">/environ</a>: what the application sees</li>
<li><a href="/stream">/stream</a>: a streamed response</li>
<li><a href="/error">/error</a>: an application error (500, traceback in the log)</li>
<li><code>curl -d hello {host}/echo</code>: the request body, echoed</li>
<li><a href="/static/style.css">/static/style.css</a>: a static file (try it with
<code>curl -I</code> to see its ETag)</li>
<li><a href="http://docs.localhost:8080/">docs.localhost:8080</a>: a second virtual
host, static files with a directory listing</li>
<li><a href="http://docs.localhost:8080/app/environ">docs.localhost:8080/app/environ</a>:
this application again, through the second host's reverse proxy (see the
<code>HTTP_X_FORWARDED_*</code> keys)</li>
<li><a href="/healthz">/healthz</a> and
<a href="http://www.docs.localhost:8080/index.html">www.docs.localhost:8080</a>: fixed
answers (nginx's <code>return</code>), a health check and a name moved with a 301</li>
</ul>
</body></html>
"""


def _environ_text(environ: dict[str, Any]) -> bytes:
    lines = [f"{key} = {environ[key]!r}" for key in sorted(environ)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _stream() -> Iterator[bytes]:
    for number in range(10):
        yield f"chunk {number}\n".encode("ascii")


def application(environ: dict[str, Any], start_response: StartResponse) -> Any:
    """Route the demo's few pages."""
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        host = html.escape(environ.get("HTTP_HOST", "127.0.0.1:8080"))
        body = _PAGE.format(host=host).encode("utf-8")
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]
    if path == "/environ":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [_environ_text(environ)]
    if path == "/echo" and environ["REQUEST_METHOD"] == "POST":
        stream = environ["wsgi.input"]
        pieces = []
        while True:
            piece = stream.read(65536)
            if not piece:
                break
            pieces.append(piece)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return pieces
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return _stream()
    if path == "/error":
        raise RuntimeError("This is what an application error looks like")
    body = b"Not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [body]
