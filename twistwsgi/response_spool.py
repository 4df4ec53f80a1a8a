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
the order they went in. The file is a ring of ``limit`` bytes, so it never grows
past the limit however long the response.

Not thread-safe: the owner calls every method under its own lock, except the file
write of a reserved append (:meth:`ResponseSpool.write_reserved`), which a worker
thread makes unlocked so a slow disk does not hold the reactor. Pure logic: no
Twisted.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO

__all__ = [
    "MAX_RESPONSE_BUFFER",
    "MEMORY_SIZE",
    "PIECE_SIZE",
    "SPOOL_GRACE",
    "ResponseSpool",
    "accel_buffering",
    "settle_temporary_directory",
]

#: The most bytes one response holds by default (nginx's proxy_max_temp_file_size).
MAX_RESPONSE_BUFFER = 1024 * 1024 * 1024
#: Seconds a client that stopped reading is waited for before what follows is
#: spooled: a fast client's connection pauses for a moment again and again (its
#: 64 KiB write buffer fills faster than the kernel drains it), and its response
#: should not go through the disk for that.
SPOOL_GRACE = 0.05
#: Bytes a spool keeps in memory before it opens its temporary file (nginx keeps
#: 8 buffers of one page each, proxy_buffers; many slow clients may hold this each).
MEMORY_SIZE = 64 * 1024
#: The most bytes :meth:`ResponseSpool.take` returns at once (one transport write).
PIECE_SIZE = 64 * 1024
#: A piece held in memory shorter than this takes the next one into it.
_JOIN_BELOW = 4096


def accel_buffering(fields: Sequence[tuple[bytes, bytes]]) -> bool | None:
    """What a response's ``X-Accel-Buffering`` field asks, as nginx reads it.

    ``yes`` is True, ``no`` False (case and surrounding spaces aside); no such
    field, or another value, is None: the server's or mount's choice stands.
    """
    for name, value in fields:
        if len(name) == 17 and name.lower() == b"x-accel-buffering":
            answer = value.strip().lower()
            if answer in (b"yes", b"no"):
                return answer == b"yes"
    return None


def _temporary_file() -> IO[bytes]:
    """An unlinked temporary file in ``TMPDIR`` (the directory :mod:`tempfile` chose)."""
    return tempfile.TemporaryFile()


def settle_temporary_directory() -> OSError | None:
    """Have :mod:`tempfile` choose its directory now, as the server starts.

    It chooses once, at its first use, by creating a test file in each candidate
    (``TMPDIR``, then ``/tmp``...) and taking the first that works. Left to the first
    spool, that choice would be made when files may not be opened or written (EMFILE
    or ENOSPC, see open(2), write(2)): every candidate fails and the error is "No
    usable temporary directory found", which hides the cause and sends the operator
    to the directory's permissions. Chosen here, a later failure says its own errno.
    Returns the error if no directory is usable now (the first spool tries again).
    """
    try:
        tempfile.gettempdir()
    except OSError as error:
        return error
    return None


class ResponseSpool:
    """Response bytes held for a slow client, first in, first out.

    The file is a ring of ``limit`` bytes: written and read at positions that wrap
    around, it never grows past the limit however long the response.

    A write to the file can be made outside the owner's lock, so a slow disk does
    not hold whoever else takes that lock: :meth:`reserve` (locked) says whether
    the bytes went to memory or a file write is due, :meth:`write_reserved`
    (unlocked) writes them, :meth:`commit` (locked) makes them readable. Closing
    the spool meanwhile leaves the file to :meth:`commit` to close, so its
    descriptor is never closed under a write. :meth:`append` does all three.

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
        # Bytes written to and taken from the file since it was opened: what waits
        # there is between the two; each is at (count % limit) in the ring.
        self._file_end = 0
        self._file_taken = 0
        # A file write reserved and not committed yet: its size (0: none).
        self._reserved = 0
        self.closed = False
        #: Bytes that went through the file since it was opened (for the log and tests).
        self.through_file = 0

    @property
    def held(self) -> int:
        """Bytes waiting to be taken (a reserved write among them)."""
        return self._in_memory + self._file_end + self._reserved - self._file_taken

    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit under the limit now."""
        return self.held + size <= self.limit

    def append(self, data: bytes) -> None:
        """Hold ``data`` after what is held already (reserve, write and commit).

        Raises:
            OSError: the temporary file could not be made or written (disk full...);
                nothing of ``data`` is then held.
            ValueError: see :meth:`reserve`.
        """
        if self.reserve(data):
            try:
                self.write_reserved(data)
            except OSError:
                self.commit(written=False)
                raise
            self.commit()

    def reserve(self, data: bytes) -> bool:
        """Hold ``data`` in memory, or reserve its place in the file.

        Returns:
            Whether a file write is due: then :meth:`write_reserved` and
            :meth:`commit` must follow, before anything else is reserved.

        Raises:
            ValueError: the spool is closed, a write is already reserved, or
                ``data`` does not fit (see :meth:`room_for`).
        """
        if self.closed:
            raise ValueError("the spool is closed")
        if self._reserved:
            raise ValueError("a file write is already reserved")
        size = len(data)
        if not self.room_for(size):
            raise ValueError(f"{size} bytes do not fit: {self.held} of {self.limit} held")
        if not size:
            return False
        waiting_in_file = self._file_end > self._file_taken
        if not waiting_in_file and self._in_memory + size <= self._memory_size:
            # Everything in memory is older than anything in the file, so taking
            # memory first keeps the order. Small pieces are joined (an SSE event,
            # a CSV row): each costs far more than its bytes, and a write each.
            memory = self._memory
            if memory and len(memory[-1]) < _JOIN_BELOW:
                memory[-1] += data
            else:
                memory.append(data)
            self._in_memory += size
            return False
        self._reserved = size
        return True

    def write_reserved(self, data: bytes) -> None:
        """Write the reserved bytes to the file (the owner's lock need not be held).

        Raises:
            OSError: the file could not be made or written.
        """
        if self._file is None:
            self._file = self._open_file()
        descriptor = self._file.fileno()
        view = memoryview(data)
        position = self._file_end % self.limit
        while view:
            piece = view[: self.limit - position]
            written = os.pwrite(descriptor, piece, position)
            view = view[written:]
            position = (position + written) % self.limit

    def commit(self, *, written: bool = True) -> None:
        """Make the reserved bytes readable, or drop the reservation (``written`` false)."""
        if written and not self.closed:
            self._file_end += self._reserved
            self.through_file += self._reserved
        self._reserved = 0
        if self.closed:
            self._close_file()

    def take(self, most: int = PIECE_SIZE) -> bytes:
        """Remove and return the oldest bytes held, at most ``most`` of them.

        Returns ``b""`` when nothing is held (a reserved write is not readable yet).

        Raises:
            OSError: the temporary file could not be read.
            ValueError: the spool is closed.
        """
        if self.closed:
            raise ValueError("the spool is closed")
        memory = self._memory
        if memory:
            piece = memory.popleft()
            while memory and len(piece) + len(memory[0]) <= most:
                piece += memory.popleft()
            if len(piece) > most:
                memory.appendleft(piece[most:])
                piece = piece[:most]
            self._in_memory -= len(piece)
            return piece
        waiting = self._file_end - self._file_taken
        if not waiting or self._file is None:
            return b""
        position = self._file_taken % self.limit
        count = min(most, waiting, self.limit - position)
        piece = os.pread(self._file.fileno(), count, position)
        if len(piece) != count:
            raise OSError(f"the response's temporary file ended {waiting} bytes early")
        self._file_taken += count
        return piece

    def close(self) -> None:
        """Drop what is held and close the file (closing twice is harmless).

        With a write reserved, the file is closed by :meth:`commit`.
        """
        self.closed = True
        self._memory.clear()
        self._in_memory = 0
        self._file_taken = self._file_end = 0
        if not self._reserved:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
