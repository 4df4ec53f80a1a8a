"""Set-up shared by the whole test session.

The real-socket tests run on the global reactor the way ``twistd wsgi`` runs it, with
TCP connections read inline (:func:`twistwsgi.dispatch.read_inline`), so they cover
that path too. (It only applies to an epoll reactor, Twisted's default on Linux.)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import reactor

from twistwsgi.dispatch import read_inline

read_inline(reactor)


@pytest.fixture
def short_directory() -> Iterator[Path]:
    """A directory short enough for AF_UNIX paths (about 100 bytes at most), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="tw-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
