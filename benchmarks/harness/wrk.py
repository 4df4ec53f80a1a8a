"""Running wrk and reading its report.

wrk runs with one thread (``-t1``: the machine has two cores and the server needs the other one),
``--latency`` for the percentile distribution and a 10 s ``--timeout`` so that slow servers show
as slow rather than as errors. The text report is parsed into a `WrkResult`; the raw text is kept
for report.json.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import procs

TIMEOUT = "10s"
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(
    r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGT]?B) read", re.MULTILINE
)
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)
# Printed by our Lua scripts that check each answer (wrk/upload.lua).
_WRONG = re.compile(r"^Wrong upload answers: (\d+)", re.MULTILINE)


@dataclass
class WrkResult:
    """The numbers of one wrk run."""

    requests_per_s: float
    requests: int
    duration_s: float
    percentiles_ms: dict[str, float]
    bytes_read: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def error_total(self) -> int:
        """Socket errors, non-2xx/3xx responses and answers our Lua script found wrong."""
        return sum(self.errors.values())

    def percentile(self, name: str) -> float | None:
        """Latency at a percentile such as ``"50"`` or ``"99"``, in milliseconds."""
        return self.percentiles_ms.get(name)

    def to_json(self) -> dict[str, Any]:
        """Everything, including the raw text, for report.json."""
        data = asdict(self)
        data["error_total"] = self.error_total
        return data


def parse(text: str) -> WrkResult:
    """Parse wrk's text report (with ``--latency``); raise ValueError if it has no rate."""
    rps = _RPS.search(text)
    if rps is None:
        raise ValueError("no Requests/sec line in wrk output")
    percentiles = {
        match.group(1).removesuffix(".000").removesuffix(".00"): float(match.group(2))
        * _UNIT_MS[match.group(3)]
        for match in _PERCENTILE.finditer(text)
    }
    total = _TOTAL.search(text)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx_3xx": 0}
    wrong = _WRONG.search(text)
    if wrong is not None:
        errors["wrong_answer"] = int(wrong.group(1))
    socket_errors = _SOCKET.search(text)
    if socket_errors is not None:
        for key, value in zip(
            ("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True
        ):
            errors[key] = int(value)
    non_2xx = _NON_2XX.search(text)
    if non_2xx is not None:
        errors["non_2xx_3xx"] = int(non_2xx.group(1))
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        requests=int(total.group(1)) if total else 0,
        duration_s=float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000.0 if total else 0.0,
        percentiles_ms=percentiles,
        bytes_read=round(float(total.group(4)) * _BYTES[total.group(5)]) if total else 0,
        errors=errors,
        raw=text,
    )


def command(url: str, connections: int, duration_s: int, script: Path | None = None) -> list[str]:
    """The wrk command line for one measurement."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        TIMEOUT,
    ]
    if script is not None:
        argv += ["-s", str(script)]
    return [*argv, url]


def display(argv: list[str], root: Path) -> str:
    """A wrk command line for the report, with the suite's own paths made relative."""
    return shlex.join(argv).replace(f"{root}/", "")


def run(argv: list[str], peak: procs.PeakRss | None = None) -> WrkResult:
    """Run wrk to completion (sampling ``peak`` if given) and parse its report.

    Raises:
        RuntimeError: wrk overran its duration by far, failed, or printed no rate.
    """
    duration_s = _duration_of(argv)
    proc = procs.spawn(argv, capture_stdout=True, merge_stderr=True)
    try:
        finished = procs.wait_sampling(proc, peak, timeout=duration_s + 30.0)
        if not finished:
            raise RuntimeError("wrk did not finish 30 s after its duration")
        assert proc.stdout is not None
        text = proc.stdout.read().decode("utf-8", errors="replace")
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with status {proc.returncode}: {text.strip()[-500:]}")
    try:
        return parse(text)
    except ValueError as exc:
        raise RuntimeError(f"{exc}: {text.strip()[-500:]}") from exc


def _duration_of(argv: list[str]) -> float:
    for arg in argv:
        if arg.startswith("-d") and arg.endswith("s"):
            return float(arg[2:-1])
    return 10.0
