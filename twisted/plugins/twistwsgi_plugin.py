"""The ``wsgi`` command for ``twistd`` and ``twist``.

Kept to one line of work: ``twistd`` and ``twist`` import every plugin module to list
their commands, so the server itself is imported only when ``wsgi`` is chosen.
"""

from twisted.application.service import ServiceMaker

twistwsgi = ServiceMaker(
    "twistwsgi",
    "twistwsgi.cli",
    "Serve WSGI applications over HTTP/1.1 (static files, virtual hosts, proxying).",
    "wsgi",
)
