"""Costs of the request path that a Python profiler cannot see, found with gdb.

Some of CPython's slow paths happen inside one C call, so cProfile and the in-memory meter
(:mod:`benchmarks.inmemory`) charge them to an innocent line:

* an exception raised and caught in C: ``b"x" in some_bytes`` first tries the needle as an
  integer and formats a TypeError it throws away (about twice the cost of ``.find()``);
  ``threading.Condition(threading.Lock())`` raises three AttributeErrors looking for
  methods only an RLock has; ``getattr(obj, name, default)`` on a miss;
* a class attribute looked up through a metaclass ``__getattr__``: on Python 3.11 every
  ``SomeEnum.MEMBER`` goes through ``EnumType.__getattr__``'s hook (about 77 ns, against
  9 ns for a module constant).

This script runs each case of the in-memory meter under gdb, with each of its request
shapes (:data:`SHAPES`: wrk's bare request, a browser's dozen fields, and for the static
file a browser's revalidation and a range), in steady state (after a warm-up, between two
marker system calls), with breakpoints on CPython's ``_PyErr_SetObject`` (every exception set) and
``slot_tp_getattr_hook`` (every attribute looked up on an object whose type defines
``__getattr__``), and prints where each hit came from (the innermost Python frame, through
CPython's ``python3.11-gdb.py``), per request.
A clean request path prints nothing under its case. Exit status 1 if anything was found.

Usage::

    PYTHONPATH=$PWD .venv/bin/python benchmarks/hidden_costs.py            # hello, static, proxy
    PYTHONPATH=$PWD .venv/bin/python benchmarks/hidden_costs.py proxy --requests 5

It needs gdb (Debian's ``gdb``) and CPython's gdb extension beside the interpreter
(``python3.11-gdb.py``, as a pyenv or source build installs it; Debian's Python has it in
``python3.11-dbg``); without the extension, hits are counted but not placed. Only the
in-memory cases run here; the threadpool path and the reactor's own code can be checked the
same way by attaching gdb (``gdb -p PID``) to a server under load with the same
breakpoints.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# (Run as a script, the project root is not on the path: the driver needs it.)
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import inmemory  # noqa: E402 - after the path above
from twistwsgi.testing import parse_responses  # noqa: E402

#: The two CPython functions watched, and the word a hit prints for each.
WATCHED = (("_PyErr_SetObject", "EXCEPTION"), ("slot_tp_getattr_hook", "GETATTR-HOOK"))

WARM_UP_REQUESTS = 50

#: The request shapes of each case: name -> (the fields a request adds after Host, the
#: status its response must have). ``{etag}`` stands for the file's current entity tag.
SHAPES: dict[str, dict[str, tuple[bytes, int]]] = {
    case: {"wrk": (b"", 200), "browser": (inmemory.BROWSER_FIELDS, 200)} for case in inmemory.CASES
}
SHAPES["static"]["revalidation"] = (
    inmemory.BROWSER_FIELDS + b"If-None-Match: {etag}\r\n",
    304,
)
SHAPES["static"]["range"] = (inmemory.BROWSER_FIELDS + b"Range: bytes=0-99\r\n", 206)

_HIT = re.compile(r"^HIT (\S+)$")
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+|\?), in (?P<function>\S+)')


class GdbUnavailableError(RuntimeError):
    """gdb is missing, or may not trace a process on this machine."""


@dataclass(frozen=True)
class Finding:
    """Hits of one kind at one place, per request."""

    kind: str
    where: str
    per_request: float


def gdb_script(*, placed: bool) -> str:
    """The gdb commands: watch between the two markers, print each hit (and its frame)."""
    lines = ["set pagination off", "set breakpoint pending on", "break getppid"]
    for symbol, _ in WATCHED:
        lines.append(f"break {symbol}")
    lines += [
        "disable 2 3",
        "break getsid",
        "commands 1",
        "silent",
        "enable 2 3",
        "continue",
        "end",
    ]
    for number, (_, word) in enumerate(WATCHED, start=2):
        lines += [f"commands {number}", "silent", f'printf "HIT {word}\\n"']
        if placed:
            lines.append("py-bt")
        lines += ["continue", "end"]
    lines += ["commands 4", "silent", "kill", "quit", "end", "run"]
    return "\n".join(lines) + "\n"


def parse_hits(output: str, requests: int) -> list[Finding]:
    """The hits gdb printed, grouped by kind and innermost frame, per request.

    Each hit is a ``HIT KIND`` line, followed (when CPython's gdb extension is loaded)
    by ``py-bt``'s traceback, innermost frame first.
    """
    counts: Counter[tuple[str, str]] = Counter()
    kind: str | None = None
    for line in output.splitlines():
        hit = _HIT.match(line)
        if hit:
            if kind is not None:
                counts[(kind, "(no Python frame)")] += 1
            kind = hit.group(1)
            continue
        frame = _FRAME.match(line)
        if frame and kind is not None:
            where = f"{_short(frame['file'])}:{frame['line']} in {frame['function']}"
            counts[(kind, where)] += 1
            kind = None
    if kind is not None:
        counts[(kind, "(no Python frame)")] += 1
    return [
        Finding(kind, where, count / requests)
        for (kind, where), count in sorted(counts.items(), key=lambda item: -item[1])
    ]


def _short(filename: str) -> str:
    try:
        return str(Path(filename).relative_to(ROOT))
    except ValueError:
        return filename


def gdb_extension() -> Path | None:
    """CPython's gdb extension beside the interpreter, if it is there."""
    real = Path(os.path.realpath(sys.executable))
    candidate = real.with_name(real.name + "-gdb.py")
    return candidate if candidate.is_file() else None


def find_hidden_costs(case: str, *, requests: int, shape: str = "wrk") -> list[Finding]:
    """Run ``case``'s requests of ``shape`` under gdb; return what the steady state hit.

    Raises:
        GdbUnavailableError: gdb is missing or may not trace.
        RuntimeError: the run did not reach its end marker.
    """
    gdb = shutil.which("gdb")
    if gdb is None:
        raise GdbUnavailableError("gdb is not installed (Debian: apt-get install gdb)")
    extension = gdb_extension()
    with tempfile.TemporaryDirectory(prefix="twistwsgi-hidden-") as directory:
        script = Path(directory) / "commands.gdb"
        script.write_text(gdb_script(placed=extension is not None))
        command = [gdb, "-q", "-batch", "-nx"]
        if extension is not None:
            command += ["-iex", f"add-auto-load-safe-path {extension}"]
        command += ["-x", str(script), "--args", sys.executable, __file__]
        command += ["--drive", case, "--requests", str(requests)]
        command += ["--shape", shape]
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        ran = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=environment, check=False
        )
    output = ran.stdout + ran.stderr
    if "ptrace" in output and "not permitted" in output:
        raise GdbUnavailableError("gdb may not trace processes here (ptrace not permitted)")
    if "getsid" not in output:
        tail = "\n".join(output.splitlines()[-15:])
        raise RuntimeError(f"{case}: the run under gdb did not reach its end:\n{tail}")
    return parse_hits(output, requests)


def _etag(case: str, docroot: Path) -> bytes:
    built = inmemory.build(case, docroot)
    try:
        response = built.run(1, None)
    finally:
        built.close()
    etag = parse_responses(response)[0].header(b"etag")
    if etag is None:
        raise AssertionError(f"{case}: no ETag in {response[:300]!r}")
    return etag


def drive(case: str, requests: int, *, shape: str) -> None:
    """Run ``case``'s requests of ``shape`` between the two markers gdb watches for."""
    fields, status = SHAPES[case][shape]
    with inmemory.docroot_with_file() as docroot:
        if b"{etag}" in fields:
            fields = fields.replace(b"{etag}", _etag(case, docroot))
        built = inmemory.build(case, docroot, fields=fields)
        try:
            first = built.run(1, None)
            if status == 200:
                inmemory.check_first(case, first, built.body)
            elif parse_responses(first)[0].status != status:
                raise AssertionError(f"{case}, {shape}: expected {status}, got {first[:300]!r}")
            built.run(WARM_UP_REQUESTS, first)
            os.getppid()  # marker: watch from here
            built.run(requests, first)
            os.getsid(0)  # marker: stop
        finally:
            built.close()


def main(argv: list[str] | None = None) -> int:
    """Report the hidden costs of the cases named on the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("cases", nargs="*", metavar="CASE", help="hello, static, proxy (all)")
    parser.add_argument("--requests", type=int, default=3, help="requests watched per case")
    parser.add_argument("--drive", choices=inmemory.CASES, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="wrk", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive, args.requests, shape=args.shape)
        return 0
    cases = inmemory.chosen_cases(parser, args.cases)
    if gdb_extension() is None:
        print("(CPython's gdb extension is missing: hits are counted, not placed)")
    found = False
    for case in cases:
        for shape in SHAPES[case]:
            findings = find_hidden_costs(case, requests=args.requests, shape=shape)
            name = f"{case}, {shape}"
            print(f"{name}: {'clean' if not findings else 'hidden costs per request:'}", flush=True)
            for finding in findings:
                found = True
                print(f"  {finding.per_request:5.2f} {finding.kind:13} {finding.where}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
