"""twistwsgi: a production web server for Python built on Twisted.

One process serves WSGI applications on a threadpool over HTTP/1.1 on any Twisted
endpoint. The public library API is re-exported here; see ``docs/library.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"
