"""Where a response waits while its client reads slower than the application writes.

With response buffering (``--response-buffering``, on by default) a worker thread
that streams a response faster than the client takes it does not wait for the
client: the bytes the connection cannot take yet go into a :class:`ResponseSpool`,
and the reactor sends them from there as the client reads. The thread is free as
soon as the application has produced its whole answer, which is why nginx buffers
upstream responses in front of gunicorn (``proxy_buffering on``, with
``proxy_max_temp_file_size`` 1 GiB by default; gunicorn's documentation asks for such
a buffering proxy in front of its sync workers).

A spool keeps up to :data:`MEMORY_SIZE` bytes in memory and the rest in an
unlinked temporary file (``tempfile.TemporaryFile``: ``TMPDIR``, gone with the
process whatever happens), never more than its ``limit`` at once. Bytes come out in
the order they went in. Once everything written has been taken, the file is written
again from its start, so it never grows past the limit however long the response.

Not thread-safe: the owner calls every method under its own lock (the file is only
touched under that lock too, so closing it can never race a read or a write).
Pure logic: no Twisted.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable
from typing import IO

__all__ = ["MAX_RESPONSE_BUFFER", "MEMORY_SIZE", "PIECE_SIZE", "ResponseSpool"]

#: The most bytes one response holds by default (nginx's proxy_max_temp_file_size).
MAX_RESPONSE_BUFFER = 1024 * 1024 * 1024
#: Bytes a spool keeps in memory before it opens its temporary file (nginx keeps
#: 8 buffers of one page each, proxy_buffers; many slow clients may hold this each).
MEMORY_SIZE = 64 * 1024
#: The most bytes :meth:`ResponseSpool.take` returns at once (one transport write).
PIECE_SIZE = 64 * 1024


def _temporary_file() -> IO[bytes]:
    """An unlinked temporary file in ``TMPDIR`` (looked up at each call)."""
    return tempfile.TemporaryFile()


class ResponseSpool:
    """Response bytes held for a slow client, first in, first out.

    Args:
        limit: the most bytes held at once (memory and file together).
        memory_size: bytes held in memory before the file is used.
        open_file: makes the temporary file (called at most once, when first
            needed); ``tempfile.TemporaryFile`` by default.

    Raises:
        ValueError: a limit below 1 or a negative memory size.
    """

    def __init__(
        self,
        limit: int,
        *,
        memory_size: int = MEMORY_SIZE,
        open_file: Callable[[], IO[bytes]] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if memory_size < 0:
            raise ValueError(f"memory_size must not be negative, got {memory_size!r}")
        self.limit = limit
        self._memory_size = memory_size
        self._open_file = open_file or _temporary_file
        self._memory: deque[bytes] = deque()
        self._in_memory = 0
        self._file: IO[bytes] | None = None
        # Bytes of the file written and taken: what waits there is between the two.
        self._file_end = 0
        self._file_taken = 0
        self.closed = False
        #: Bytes that went through the file since it was opened (for the log and tests).
        self.through_file = 0

    @property
    def held(self) -> int:
        """Bytes waiting to be taken."""
        return self._in_memory + self._file_end - self._file_taken

    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit under the limit now."""
        return self.held + size <= self.limit

    def append(self, data: bytes) -> None:
        """Hold ``data`` after what is held already.

        Raises:
            OSError: the temporary file could not be made or written (disk full...);
                nothing of ``data`` is then held.
            ValueError: the spool is closed, or ``data`` does not fit (see
                :meth:`room_for`).
        """
        if self.closed:
            raise ValueError("the spool is closed")
        size = len(data)
        if not self.room_for(size):
            raise ValueError(f"{size} bytes do not fit: {self.held} of {self.limit} held")
        waiting_in_file = self._file_end > self._file_taken
        if not waiting_in_file and self._in_memory + size <= self._memory_size:
            self._memory.append(data)
            self._in_memory += size
            return
        # Into the file, after whatever waits there (everything in memory is older
        # than anything in the file, so taking memory first keeps the order).
        if self._file is None:
            self._file = self._open_file()
        descriptor = self._file.fileno()
        view = memoryview(data)
        offset = self._file_end
        while view:
            written = os.pwrite(descriptor, view, offset)
            view = view[written:]
            offset += written
        self._file_end = offset
        self.through_file += size

    def take(self, most: int = PIECE_SIZE) -> bytes:
        """Remove and return the oldest bytes held, at most ``most`` of them.

        Returns ``b""`` when nothing is held.

        Raises:
            OSError: the temporary file could not be read.
            ValueError: the spool is closed.
        """
        if self.closed:
            raise ValueError("the spool is closed")
        memory = self._memory
        if memory:
            piece = memory[0]
            if len(piece) <= most:
                memory.popleft()
            else:
                memory[0] = piece[most:]
                piece = piece[:most]
            self._in_memory -= len(piece)
            return piece
        waiting = self._file_end - self._file_taken
        if not waiting or self._file is None:
            return b""
        piece = os.pread(self._file.fileno(), min(most, waiting), self._file_taken)
        if not piece:
            raise OSError(f"the response's temporary file ended {waiting} bytes early")
        self._file_taken += len(piece)
        if self._file_taken == self._file_end:
            # All taken: write from the start again, so the file stays under the
            # limit however long the response is.
            self._file_taken = self._file_end = 0
        return piece

    def close(self) -> None:
        """Drop what is held and close the file (closing twice is harmless)."""
        self.closed = True
        self._memory.clear()
        self._in_memory = 0
        self._file_taken = self._file_end = 0
        if self._file is not None:
            self._file.close()
            self._file = None
