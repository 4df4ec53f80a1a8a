"""Which source files changed since the last look: the polling behind ``--reload``.

``--reload`` (for development) replaces the worker processes whenever a Python file
under the directory the server was started in, or the configuration file, changes,
as gunicorn's ``--reload`` and uvicorn's do. This module only tells what changed: it
walks the tree and compares each file's modification time and size with the last
look (polling: no dependency on inotify, and the same on every system, as gunicorn's
default reloader and uvicorn's StatReload do).

Directories that hold no project source are not walked: hidden ones (``.git``,
``.venv``...), ``__pycache__``, ``node_modules``, and any virtual environment (a
directory with a ``pyvenv.cfg``).

Pure logic on the file system: no Twisted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

__all__ = ["SKIPPED_DIRECTORIES", "WATCHED_LIMIT", "SourceWatcher"]

#: Directory names never walked (besides hidden ones and virtual environments).
SKIPPED_DIRECTORIES = frozenset({"__pycache__", "node_modules", "site-packages"})
#: Directory entries looked at in one look (Python files or not) before the watcher
#: says the tree is too large to poll cheaply (20,000 cost about 50 ms a second).
WATCHED_LIMIT = 20_000

_Facts = tuple[int, int]


class SourceWatcher:
    """The Python files under ``roots``, and ``files``, as they were at the last look.

    Args:
        roots: directories walked for ``*.py`` files.
        files: more files watched whatever their name (the configuration file); one
            that does not exist is watched for its appearance.
    """

    def __init__(self, roots: Sequence[str], files: Sequence[str] = ()) -> None:
        self.roots = tuple(os.path.abspath(root) for root in roots)
        self.files = tuple(os.path.abspath(path) for path in files)
        #: Directory entries the last look went through (what a look costs).
        self.scanned = 0
        self._last = self._look()

    @property
    def watched(self) -> int:
        """How many files the last look found."""
        return len(self._last)

    def changed(self) -> list[str]:
        """The files added, removed or modified since the last look (sorted)."""
        now = self._look()
        last, self._last = self._last, now
        if now == last:
            return []
        return sorted(path for path in now.keys() | last.keys() if now.get(path) != last.get(path))

    def _look(self) -> dict[str, _Facts]:
        found: dict[str, _Facts] = {}
        self.scanned = 0
        sources = [path for root in self.roots for path in self._python_files(root)]
        for path in (*sources, *self.files):
            facts = _facts(path)
            if facts is not None:
                found[path] = facts
        return found

    def _python_files(self, root: str) -> Iterator[str]:
        """The ``*.py`` files under ``root``, outside the directories never walked.

        Counts the directory entries it looks at in :attr:`scanned`.
        """
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue  # removed meanwhile, or not readable
            self.scanned += len(entries)
            if directory != root and any(entry.name == "pyvenv.cfg" for entry in entries):
                continue  # a virtual environment: installed code, not the project's
            for entry in entries:
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not name.startswith(".") and name not in SKIPPED_DIRECTORIES:
                            pending.append(entry.path)
                    elif name.endswith(".py") and entry.is_file():
                        yield entry.path
                except OSError:
                    continue


def _facts(path: str) -> _Facts | None:
    try:
        info = os.stat(path)
    except OSError:
        return None  # gone since it was listed (an editor's save), or never there
    return (info.st_mtime_ns, info.st_size)
