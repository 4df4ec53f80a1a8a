"""twistwsgi: a production web server for Python built on Twisted.

One process serves WSGI applications on a threadpool over HTTP/1.1 on any Twisted
endpoint. The library API lives in its modules (``twistwsgi.service``,
``twistwsgi.config``, ``twistwsgi.threads``, ``twistwsgi.testing``); see
``docs/library.md``. Nothing is re-exported here: ``twistwsgi.config`` and the
other pure modules must stay importable without Twisted.
"""

from __future__ import annotations

__version__ = "0.1.0"
