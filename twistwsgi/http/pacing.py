"""How fast one response may go out: nginx's ``limit_rate`` and ``limit_rate_after``.

A mount with ``limit_rate`` sends each response at that many bytes a second at most,
as nginx does for a location: a download or a video does not take a client's whole
share of the server's bandwidth, and a long one is spread over its time.
``limit_rate_after`` bytes go first at full speed (the start of a video plays at
once). As nginx reckons it (``ngx_http_write_filter_module``), a response that has
been going for ``t`` seconds may have sent ``limit_rate_after + limit_rate * (t +
1)`` bytes: a second's worth at once, then the rate. Unlike nginx, ``t`` counts from
the response's first byte, not from the request's arrival, so an application slow
to answer does not earn a burst.

The sender asks :meth:`ResponsePace.wait` before each step; more than it may send
waits for the time the rate needs. Steps are a tenth of a second's worth (at most
64 KiB, at least a byte), so a slow rate is not sent a few bytes at a time.

An application or upstream may set the rate of one response with an
``X-Accel-Limit-Rate`` field, as nginx reads it from an upstream (nginx's XSendfile
page: a download service slows its free users' files and not its paying ones'):
:func:`asked_limit` gives the limit that response goes out at.

Pure logic: the caller passes the time and the bytes sent, and arms the timers.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_STEP", "ResponsePace", "asked_limit", "step_for"]

#: The most bytes one step sends (a file sender's read, at most).
MAX_STEP = 64 * 1024


#: The largest X-Accel-Limit-Rate read: nginx reads it with ngx_atoi, which refuses
#: a number past its (64-bit) integer type.
_MAX_RATE = 2**63 - 1


def asked_limit(
    fields: Iterable[tuple[bytes, bytes]], limit: tuple[int, int] | None, after: int
) -> tuple[int, int] | None:
    """The limit of a response with ``fields``, whose mount's is ``limit``.

    Its ``X-Accel-Limit-Rate`` (bytes a second, digits only: nginx's reading, so
    no ``k`` or ``m``) replaces the mount's rate, with the mount's
    ``limit_rate_after`` (``after``, which a mount may give without a rate);
    ``0`` lifts the limit. A value that is not such a number is ignored, as nginx
    ignores it; of several fields the first counts, whatever it holds (nginx keeps
    the first and drops the others as duplicates). ``limit`` and the result are
    ``(rate, after)``, or ``None``: no limit.
    """
    for name, value in fields:
        if len(name) == 18 and name.lower() == b"x-accel-limit-rate":
            number = value.strip(b" \t")
            # (The length bound only spares int() a huge string; leading zeros count.)
            if number.isdigit() and len(number) <= 64 and int(number) <= _MAX_RATE:
                rate = int(number)
                return (rate, after) if rate else None
            return limit
    return limit


def step_for(rate: int) -> int:
    """The bytes one step sends at ``rate``: a tenth of a second's worth, within bounds."""
    return max(1, min(rate // 10, MAX_STEP))


class ResponsePace:
    """The pace of one response (see the module docstring).

    Args:
        rate: bytes a second (at least 1).
        after: bytes sent first at full speed.
        start: when the response's first byte went out (clock seconds).
    """

    __slots__ = ("after", "rate", "start", "step")

    def __init__(self, rate: int, after: int, start: float) -> None:
        if rate < 1:
            raise ValueError("a rate is at least 1 byte a second")
        self.rate = rate
        self.after = after
        self.start = start
        self.step = step_for(rate)

    def allowance(self, sent: int, now: float) -> float:
        """Bytes that may go out now after ``sent`` (negative: ahead of the rate)."""
        return self.after + self.rate * (max(0.0, now - self.start) + 1.0) - sent

    def wait(self, sent: int, now: float, wanted: int | None = None) -> float:
        """Seconds before ``wanted`` more bytes may go (default: one step); 0: now."""
        want = self.step if wanted is None else min(wanted, self.step)
        short = want - self.allowance(sent, now)
        return short / self.rate if short > 0 else 0.0
