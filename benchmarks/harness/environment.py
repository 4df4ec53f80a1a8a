"""What the suite needs on the machine, and what the report says about the machine.

`ensure_tools` installs wrk and nginx from Debian's packages when they are missing (root only),
`ensure_peers_venv` builds ``benchmarks/.venv-peers`` with the peers from
``requirements-peers.txt`` plus uWSGI (compiled; pyuwsgi if that fails). `machine_facts` and
`versions` fill the report's header.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

DEBIAN_PACKAGES = {"wrk": "wrk", "nginx": "nginx-light"}
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_PEER_DISTRIBUTIONS = ("twisted", "gunicorn", "waitress", "granian", "matplotlib")


def which(tool: str) -> str | None:
    """Find a tool on PATH or in the sbin directories (nginx lives in /usr/sbin)."""
    found = shutil.which(tool)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_tools() -> dict[str, str]:
    """Return the paths of wrk and nginx, installing the missing ones with apt-get if root.

    Raises:
        SystemExit: wrk is missing and cannot be installed (nginx alone missing is reported
            by the scenarios that need it).
    """
    missing = [tool for tool in DEBIAN_PACKAGES if which(tool) is None]
    if missing and os.geteuid() == 0:
        packages = [DEBIAN_PACKAGES[tool] for tool in missing]
        print(f"installing {' '.join(packages)} from Debian's packages", flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=False)
    paths = {tool: which(tool) for tool in DEBIAN_PACKAGES}
    if paths["wrk"] is None:
        raise SystemExit("wrk is missing: apt-get install wrk (as root), then run again")
    return {tool: path for tool, path in paths.items() if path is not None}


def _stamp_text(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    return f"{digest} python {platform.python_version()}\n"


def ensure_peers_venv(venv: Path, requirements: Path) -> list[str]:
    """Create or update the peers' virtual environment; return problems worth reporting."""
    stamp = venv / ".installed"
    notes = venv / ".install-notes"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == _stamp_text(requirements):
        return notes.read_text().splitlines() if notes.exists() else []
    print(f"installing the peers into {venv} (once)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    problems = _install_uwsgi(pip)
    notes.write_text("".join(f"{problem}\n" for problem in problems))
    stamp.write_text(_stamp_text(requirements))
    return problems


def _install_uwsgi(pip: list[str]) -> list[str]:
    if subprocess.run([*pip, "uwsgi"], check=False).returncode == 0:
        return []
    print("uwsgi did not build; trying pyuwsgi", flush=True)
    if subprocess.run([*pip, "pyuwsgi"], check=False).returncode == 0:
        return ["uwsgi failed to build from source; pyuwsgi (binary wheel) is used instead"]
    return ["neither uwsgi nor pyuwsgi could be installed: uWSGI is left out"]


def machine_facts() -> dict[str, str]:
    """nproc, CPU model, kernel, memory and Python, for the report's header."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except (OSError, ValueError):
        pass
    return {
        "nproc": str(os.cpu_count() or 0),
        "cpu_model": cpu_model,
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": memory,
        "harness_python": platform.python_version(),
    }


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def _distribution_versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json, platform, sys\n"
        "out = {'python': platform.python_version()}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    text = _output([str(python), "-c", script, *names])
    try:
        versions: dict[str, str] = json.loads(text.splitlines()[-1]) if text else {}
    except (json.JSONDecodeError, IndexError):
        return {}
    return versions


def versions(project_venv: Path, peers_venv: Path, tools: dict[str, str]) -> dict[str, str]:
    """The version of every program the run used, keyed by a readable name."""
    found: dict[str, str] = {}
    own = _distribution_versions(
        project_venv / "bin" / "python", ("twistwsgi", "twisted", "httptools")
    )
    for key, label in (
        ("twistwsgi", "twistwsgi"),
        ("twisted", "Twisted (twistwsgi's venv)"),
        ("httptools", "httptools"),
        ("python", "Python (twistwsgi's venv)"),
    ):
        if key in own:
            found[label] = own[key]
    peers = _distribution_versions(
        peers_venv / "bin" / "python", (*_PEER_DISTRIBUTIONS, "uWSGI", "pyuwsgi")
    )
    for key, label in (
        ("twisted", "Twisted (twistd web, peers' venv)"),
        ("gunicorn", "gunicorn"),
        ("waitress", "waitress"),
        ("uWSGI", "uWSGI"),
        ("pyuwsgi", "uWSGI (pyuwsgi)"),
        ("granian", "granian"),
        ("matplotlib", "matplotlib"),
        ("python", "Python (peers' venv)"),
    ):
        if key in peers:
            found[label] = peers[key]
    if "nginx" in tools:
        match = re.search(r"nginx/(\S+)", _output([tools["nginx"], "-v"]))
        if match:
            found["nginx"] = match.group(1)
    match = re.search(r"wrk (\S+)", _output([tools["wrk"], "-v"]))
    if match:
        found["wrk"] = match.group(1)
    return found


def twistwsgi_help(twistd: Path, cwd: Path) -> str | None:
    """``twistd wsgi --help`` from the project's venv, or None when that command fails."""
    if not twistd.exists():
        return None
    try:
        done = subprocess.run(
            [str(twistd), "wsgi", "--help"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
