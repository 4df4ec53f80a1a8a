"""Set-up shared by the whole test session.

The real-socket tests run on the global reactor the way ``twistd wsgi`` runs it, with
TCP connections read inline (:func:`twistwsgi.dispatch.read_inline`), so they cover
that path too. (It only applies to an epoll reactor, Twisted's default on Linux.)
"""

from __future__ import annotations

from twisted.internet import reactor

from twistwsgi.dispatch import read_inline

read_inline(reactor)
