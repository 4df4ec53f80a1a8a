"""The counts of ``rate_limit`` and ``conn_limit`` shared by worker processes.

Under ``--workers`` every worker process serves connections of its own, and a
client's connections land on whichever worker the kernel picks. Counted in each
process, a client could make ``rate_limit`` requests a second to each worker and
have ``conn_limit`` requests in progress in each. nginx keeps these counts in a
shared memory zone (``limit_req_zone``, ``limit_conn_zone``) that all its workers
use; :class:`SharedLimits` is that zone here: one mapping of a memory file that the
supervisor creates and every worker maps, so the limits hold for the server as a
whole. It outlives the workers, so a reload (SIGHUP), which starts a new set of
workers, keeps the counts, as nginx keeps a zone across reloads.

The mapping holds two tables of fixed size, each made of groups of
:data:`WAYS` entries; a key (a mount and a client, see :func:`limit_key`) is looked
for in one group only (a set-associative cache, as a CPU's):

* the rate table: per key, the bucket of :func:`leak` (its level and when it was
  counted) and when it will be empty again. A new key takes an entry that is
  empty (its bucket would let any request through, as an unknown client's would),
  else the one least recently let through: under a flood of addresses the
  oldest are forgotten, as nginx's zone forgets them.
* the connection table: per key, the requests in progress, one count per
  *seat*. A seat is a worker process's column, which the supervisor gives it and
  clears (:meth:`SharedLimits.clear_seat`) once the process has ended, so a worker
  that dies with requests in progress leaves no place taken (nginx's counts in a
  crashed worker stay taken). A process started while every seat is held (more
  than :data:`SEATS` processes alive at once) is given the next seat that frees
  (:meth:`SharedLimits.take_seat`). An entry whose counts are all zero is free. A
  group whose entries are all in use admits the request uncounted
  (:data:`UNCOUNTED`): thousands of clients with requests in progress at once
  would be needed, and refusing them all would be worse.

Keys are hashed with a random salt the supervisor writes into the file, so that a
client cannot choose addresses that fall into one group (to push others out, or to
fill its own group and go uncounted).

Each group is guarded by a POSIX record lock (``fcntl``) on its first byte: the
kernel releases the locks of a process that dies, where a lock kept in the memory
itself would stay held by a dead worker. Record locks belong to a process, not a
thread, so only one thread of a process may use a :class:`SharedLimits` (the
reactor's); they are taken on a descriptor of its own, never inherited by the
programs an application starts. A worker's reactor may wait on a lock another
worker holds while that one's reactor waits for its own GIL: the requests of one
client on one mount, in different workers, can then be held up for as long as a
busy application thread keeps a GIL (milliseconds). The supervisor never takes a
lock (see :meth:`SharedLimits.clear_seat`), so a worker stopped while holding one
(a debugger) cannot stop it.

Pure logic: no Twisted.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import tempfile
from typing import IO

__all__ = [
    "ENTERED",
    "REFUSED",
    "SEATS",
    "UNCOUNTED",
    "LayoutError",
    "SharedLimits",
    "leak",
]

#: Entries per group.
WAYS = 8
#: Groups of the rate table: 65,536 clients remembered per server, as the
#: in-process count remembers per mount.
RATE_GROUPS = 8192
#: Groups of the connection table: 65,536 clients with requests in progress.
CONN_GROUPS = 8192
#: Worker processes that may count connections at once: twice the workers during
#: a reload, and the old ones still finishing their requests.
SEATS = 64

#: What :meth:`SharedLimits.enter` answers.
ENTERED, REFUSED, UNCOUNTED = "entered", "refused", "uncounted"

_MAGIC = b"twlimit2"
_HEADER = struct.Struct("<8sIIII")
# The hash salt, after the header.
_SALT = struct.Struct("<16s")
# Rate entry: key, level, when counted, when empty again.
_RATE_ENTRY = struct.Struct("<Qddd")
_RATE_GROUP = struct.Struct("<" + "Qddd" * WAYS)
_RATE_FIELDS = 4
# Connection entry: key, then a count per seat.
_CONN_KEY = struct.Struct("<Q")
_COUNT = struct.Struct("<H")
_COUNTS = struct.Struct(f"<{SEATS}H")
_CONN_ENTRY_SIZE = _CONN_KEY.size + _COUNTS.size
_NO_COUNTS = bytes(_COUNTS.size)
#: A count cannot go past this (a seat's count is one unsigned 16-bit number).
MAX_COUNT = 65535

_PAGE = 4096
_RATE_BASE = _PAGE
_RATE_GROUP_SIZE = WAYS * _RATE_ENTRY.size
_CONN_BASE = _RATE_BASE + RATE_GROUPS * _RATE_GROUP_SIZE
_CONN_GROUP_SIZE = WAYS * _CONN_ENTRY_SIZE
_SIZE = _CONN_BASE + CONN_GROUPS * _CONN_GROUP_SIZE


class LayoutError(ValueError):
    """The shared file was laid out by another version of this module."""


def leak(
    level: float, then: float, now: float, rate: float, burst: int
) -> tuple[float, float, int | None]:
    """Count one request in a leaky bucket (nginx's ``limit_req``, in requests).

    The bucket held ``level`` at ``then`` and drains at ``rate`` a second; a
    request adds one. Returns the bucket's new level and time, and ``None`` if the
    request may go on, else the seconds to wait (1 or more; the bucket is then
    unchanged: a refused request is not counted).
    """
    # A clock stepped back: drain from now on, locking nobody out until then.
    then = min(then, now)
    # What is left after draining since, plus this request (nginx's excess,
    # floored at 0 once the request is added).
    drained = max(level - rate * (now - then) + 1.0, 0.0)
    # (A thousandth of a request of slack, as nginx counts in milli-requests: a
    # client keeping exactly to the rate is not refused for a rounding.)
    if drained > burst + 0.001:
        return level, then, max(math.ceil((drained - burst) / rate), 1)
    return drained, now, None


class SharedLimits:
    """The shared tables, mapped from the memory file ``fd`` (see the module's text).

    Args:
        fd: the memory file, laid out by :meth:`create`.
        seat: this process's column of connection counts; ``None``: this process
            counts no connections here (the supervisor, or a worker that got no
            seat).

    Raises:
        LayoutError: ``fd`` was laid out by another version of this module (a
            reload into new code): its tables cannot be read.
        OSError: the file cannot be mapped.
    """

    def __init__(self, fd: int, seat: int | None = None) -> None:
        if seat is not None and not 0 <= seat < SEATS:
            raise ValueError(f"seat {seat} is not one of the {SEATS}")
        if os.fstat(fd).st_size != _SIZE:
            raise LayoutError("the shared limits file has another size")
        table = mmap.mmap(fd, _SIZE)
        if _HEADER.unpack_from(table, 0) != (_MAGIC, WAYS, RATE_GROUPS, CONN_GROUPS, SEATS):
            table.close()
            raise LayoutError("the shared limits file has another layout")
        self._map = table
        (self._salt,) = _SALT.unpack_from(table, _HEADER.size)
        # The locks' own descriptor (not inheritable, as os.dup makes it): one a
        # library closed, or the number reused by another file, would take the
        # locks with it without a word.
        self.fd = os.dup(fd)
        self.seat: int | None = None
        self._seat_offset = 0
        if seat is not None:
            self.take_seat(seat)
        self._keep: IO[bytes] | None = None

    def take_seat(self, seat: int) -> None:
        """Count this process's connections in ``seat`` from now on (it had none)."""
        if not 0 <= seat < SEATS:
            raise ValueError(f"seat {seat} is not one of the {SEATS}")
        self.seat = seat
        self._seat_offset = _CONN_KEY.size + _COUNT.size * seat

    def key(self, scope: str, client: str | None) -> int:
        """The 64-bit key of ``client`` on the mount named ``scope`` (never 0: 0 is empty).

        The same in every process that maps these tables (Python's ``hash`` of a
        string is not), salted with the tables' own salt.
        """
        text = f"{scope}\x00{client if client is not None else ''}\x00{client is None}"
        digest = hashlib.blake2b(text.encode(), digest_size=8, key=self._salt).digest()
        return int.from_bytes(digest, "little") or 1

    @classmethod
    def create(cls) -> SharedLimits:
        """Make a new memory file with empty tables, and map it (seat ``None``).

        The file exists in memory only (``memfd_create`` where the system has it,
        else an unlinked temporary file) and its pages are allocated as they are
        first written. Its descriptor is closed on exec: it reaches a worker only
        as a descriptor given to it by number.
        """
        keep: IO[bytes] | None = None
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("twistwsgi-limits", os.MFD_CLOEXEC)
        else:  # pragma: no cover - systems without memfd_create (macOS)
            keep = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the tables
            fd = keep.fileno()
        os.ftruncate(fd, _SIZE)
        with mmap.mmap(fd, _PAGE) as header:
            _HEADER.pack_into(header, 0, _MAGIC, WAYS, RATE_GROUPS, CONN_GROUPS, SEATS)
            _SALT.pack_into(header, _HEADER.size, os.urandom(_SALT.size))
        limits = cls(fd)
        if keep is not None:
            keep.close()
        else:
            os.close(fd)  # (the tables keep a descriptor of their own)
        return limits

    def close(self) -> None:
        """Unmap the tables and close their descriptor."""
        self._map.close()
        os.close(self.fd)

    # The rate table.

    def rate(self, key: int, now: float, rate: float, burst: int) -> int | None:
        """Count a request of ``key`` at ``now``: ``None`` if it may go on, else seconds to wait."""
        return self.counted(key, now, rate, burst)[0]

    def counted(self, key: int, now: float, rate: float, burst: int) -> tuple[int | None, float]:
        """Count a request of ``key`` at ``now``, as :meth:`rate`; with the bucket's level.

        As :func:`leak` with the bucket kept for ``key``; an unknown key's first
        request goes on (and starts its bucket, empty). The level is the requests
        the client is ahead of the rate once this one is counted (nginx's excess).
        """
        base = _RATE_BASE + (key % RATE_GROUPS) * _RATE_GROUP_SIZE
        fd = self.fd
        table = self._map
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, base)
        try:
            fields = _RATE_GROUP.unpack_from(table, base)
            unused = emptied = -1
            least_recent = -1
            least_recent_then = float("inf")
            for way in range(WAYS):
                index = way * _RATE_FIELDS
                known = fields[index]
                if known == key:
                    level, then, retry = leak(
                        fields[index + 1], fields[index + 2], now, rate, burst
                    )
                    # Written refused or not: when the bucket empties depends on
                    # the rate now in force (a reload may have lowered it).
                    _RATE_ENTRY.pack_into(
                        table,
                        base + way * _RATE_ENTRY.size,
                        key,
                        level,
                        then,
                        _empty_at(level, then, rate),
                    )
                    return retry, level
                if known == 0:
                    if unused < 0:
                        unused = way
                elif fields[index + 3] <= now:
                    if emptied < 0:
                        emptied = way
                elif fields[index + 2] < least_recent_then:
                    least_recent, least_recent_then = way, fields[index + 2]
            # Never used first, then one whose bucket is empty (as an unknown
            # client's), else the one let through least recently.
            way = unused if unused >= 0 else emptied if emptied >= 0 else least_recent
            _RATE_ENTRY.pack_into(
                table, base + way * _RATE_ENTRY.size, key, 0.0, now, _empty_at(0.0, now, rate)
            )
            return None, 0.0
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, base)

    # The connection table.

    def enter(self, key: int, limit: int) -> str:
        """Count a request of ``key`` in, unless ``limit`` of its requests are in progress.

        Returns :data:`ENTERED` (counted in this process's seat: give it back with
        :meth:`leave`), :data:`REFUSED`, or :data:`UNCOUNTED` (the key's group is
        full: let through, and nothing to give back).
        """
        if self.seat is None:
            raise ValueError("this process has no seat to count connections in")
        limit = min(limit, MAX_COUNT)
        base = _CONN_BASE + (key % CONN_GROUPS) * _CONN_GROUP_SIZE
        fd = self.fd
        table = self._map
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, base)
        try:
            free = -1
            for way in range(WAYS):
                entry = base + way * _CONN_ENTRY_SIZE
                (known,) = _CONN_KEY.unpack_from(table, entry)
                if known == key:
                    counts = _COUNTS.unpack_from(table, entry + _CONN_KEY.size)
                    if sum(counts) >= limit:
                        return REFUSED
                    mine = entry + self._seat_offset
                    _COUNT.pack_into(table, mine, _COUNT.unpack_from(table, mine)[0] + 1)
                    return ENTERED
                if free < 0 and (
                    known == 0
                    or table[entry + _CONN_KEY.size : entry + _CONN_ENTRY_SIZE] == _NO_COUNTS
                ):
                    free = way
            if free < 0:
                return UNCOUNTED
            entry = base + free * _CONN_ENTRY_SIZE
            _CONN_KEY.pack_into(table, entry, key)
            table[entry + _CONN_KEY.size : entry + _CONN_ENTRY_SIZE] = _NO_COUNTS
            _COUNT.pack_into(table, entry + self._seat_offset, 1)
            return ENTERED
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, base)

    def leave(self, key: int) -> None:
        """Give back one place :meth:`enter` counted for ``key`` in this process's seat."""
        if self.seat is None:
            raise ValueError("this process has no seat to count connections in")
        base = _CONN_BASE + (key % CONN_GROUPS) * _CONN_GROUP_SIZE
        fd = self.fd
        table = self._map
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, base)
        try:
            entry = _conn_entry(table, base, key)
            if entry >= 0:
                mine = entry + self._seat_offset
                (count,) = _COUNT.unpack_from(table, mine)
                if count > 0:
                    _COUNT.pack_into(table, mine, count - 1)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, base)

    def in_progress(self, key: int) -> int:
        """How many requests of ``key`` are counted in progress, over all seats."""
        base = _CONN_BASE + (key % CONN_GROUPS) * _CONN_GROUP_SIZE
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, base)
        try:
            entry = _conn_entry(self._map, base, key)
            return sum(_COUNTS.unpack_from(self._map, entry + _CONN_KEY.size)) if entry >= 0 else 0
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, base)

    def clear_seat(self, seat: int) -> None:
        """Forget every place counted in ``seat``: its process has ended.

        Without a lock, so that a worker holding one (stopped in a debugger, or
        waiting for its GIL) cannot hold up the supervisor: only the seat's own
        process writes a nonzero count there, and it has ended; another process
        writes that column only to zero it (taking a free entry), and a reader
        summing the counts meanwhile sees a place that is being given back anyway.
        Each count is one aligned 16-bit store.
        """
        if not 0 <= seat < SEATS:
            raise ValueError(f"seat {seat} is not one of the {SEATS}")
        size = CONN_GROUPS * _CONN_GROUP_SIZE
        per_entry = _CONN_ENTRY_SIZE // _COUNT.size
        first = (_CONN_KEY.size + seat * _COUNT.size) // _COUNT.size
        entries = CONN_GROUPS * WAYS
        with (
            memoryview(self._map) as whole,
            whole[_CONN_BASE : _CONN_BASE + size].cast("H") as counts,
            memoryview(bytes(entries * _COUNT.size)).cast("H") as zeros,
        ):
            counts[first::per_entry] = zeros


def _conn_entry(table: mmap.mmap, base: int, key: int) -> int:
    """The offset of ``key``'s entry in the connection group at ``base``, else -1."""
    for way in range(WAYS):
        entry = base + way * _CONN_ENTRY_SIZE
        if _CONN_KEY.unpack_from(table, entry)[0] == key:
            return entry
    return -1


def _empty_at(level: float, then: float, rate: float) -> float:
    """When a bucket at ``level`` at ``then`` lets any request through as an empty one does.

    From then on, :func:`leak` gives level 0 whatever the burst: the state is the
    same as an unknown client's, so the entry may be taken by another key.
    """
    return then + (level + 1.0) / rate
