"""The polling behind --reload: which files changed since the last look, and the
looping call that reloads on a change (driven by a Clock). Modification times are
set with os.utime, so no test waits for the file system's clock to move.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from twistwsgi.cli import RELOAD_POLL_INTERVAL, watch_sources
from twistwsgi.source_watch import SourceWatcher
from twistwsgi.testing import capture_log_events


def touch(path: Path, content: str | None = None, *, step: int = 1) -> None:
    """Write ``content`` (if given) and move the modification time ``step`` s on."""
    if content is not None:
        path.write_text(content)
    info = path.stat()
    later = info.st_mtime_ns + step * 1_000_000_000
    os.utime(path, ns=(later, later))


def project(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "views.py").write_text("A = 1\n")
    (tmp_path / "manage.py").write_text("")
    (tmp_path / "README.md").write_text("docs")
    return tmp_path


def test_a_modified_added_or_removed_python_file_is_a_change(tmp_path: Path) -> None:
    root = project(tmp_path)
    watcher = SourceWatcher([str(root)])
    assert watcher.watched == 2 and watcher.changed() == []
    touch(root / "app" / "views.py")
    assert watcher.changed() == [str(root / "app" / "views.py")]
    assert watcher.changed() == []  # (seen once)
    (root / "app" / "models.py").write_text("")
    (root / "manage.py").unlink()
    assert watcher.changed() == [str(root / "app" / "models.py"), str(root / "manage.py")]


def test_the_same_time_but_another_size_is_a_change(tmp_path: Path) -> None:
    """A save within the file system's time granularity still differs in size."""
    root = project(tmp_path)
    watcher = SourceWatcher([str(root)])
    views = root / "app" / "views.py"
    before = views.stat().st_mtime_ns
    views.write_text("A = 22\n")
    os.utime(views, ns=(before, before))
    assert watcher.changed() == [str(views)]


def test_other_files_and_directories_without_project_source_are_not_watched(
    tmp_path: Path,
) -> None:
    root = project(tmp_path)
    for directory in (".git", "__pycache__", "node_modules", ".venv", "env"):
        (root / directory).mkdir()
        (root / directory / "x.py").write_text("")
    (root / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a venv by another name
    watcher = SourceWatcher([str(root)])
    assert watcher.watched == 2
    for directory in (".git", "__pycache__", "node_modules", ".venv", "env"):
        touch(root / directory / "x.py")
    touch(root / "README.md", "changed docs")
    assert watcher.changed() == []


def test_a_named_file_is_watched_even_before_it_exists(tmp_path: Path) -> None:
    """The configuration file, whatever its name; created after the start too."""
    root = project(tmp_path)
    config = root / "site.toml"
    watcher = SourceWatcher([str(root)], [str(config)])
    config.write_text("[server]\n")
    assert watcher.changed() == [str(config)]
    touch(config)
    assert watcher.changed() == [str(config)]


def test_the_looping_call_reloads_once_per_change_and_says_which_file(tmp_path: Path) -> None:
    root = project(tmp_path)
    clock = Clock()
    reloads: list[int] = []
    with capture_log_events() as events:
        looping = watch_sources(clock, SourceWatcher([str(root)]), lambda: reloads.append(1))
        clock.advance(RELOAD_POLL_INTERVAL)
        assert reloads == []
        touch(root / "app" / "views.py")
        touch(root / "manage.py")
        clock.advance(RELOAD_POLL_INTERVAL)
        assert reloads == [1]
        clock.advance(RELOAD_POLL_INTERVAL * 5)
        assert reloads == [1]
        looping.stop()
    lines = [formatEvent(event) for event in events]
    assert any("watching 2 Python files under" in line for line in lines)
    [changed] = [line for line in lines if "changed: reloading" in line]
    assert changed.endswith("app/views.py and 1 more changed: reloading")


def test_a_changed_files_bytecode_is_removed_before_the_reload(tmp_path: Path) -> None:
    """Python takes a .pyc as current when whole-second mtime and size match: a save
    of the same size within that second would be imported as the old code.
    """
    import importlib.util

    root = project(tmp_path)
    views = root / "app" / "views.py"
    cached = Path(importlib.util.cache_from_source(str(views)))
    cached.parent.mkdir()
    cached.write_bytes(b"stale bytecode")
    clock = Clock()
    with capture_log_events():
        looping = watch_sources(clock, SourceWatcher([str(root)]), lambda: None)
        touch(views)
        clock.advance(RELOAD_POLL_INTERVAL)
        looping.stop()
    assert not cached.exists()


def test_a_large_tree_is_said_to_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry of every directory walked is looked at, Python or not (a media
    folder of 100,000 files beside one module cost 64 ms a look): counted and said.
    """
    import twistwsgi.cli

    root = project(tmp_path)
    (root / "media").mkdir()
    for number in range(30):
        (root / "media" / f"{number}.jpg").write_bytes(b"")
    monkeypatch.setattr(twistwsgi.cli, "WATCHED_LIMIT", 20)
    watcher = SourceWatcher([str(root)])
    assert watcher.watched == 2 and watcher.scanned > 30
    with capture_log_events() as events:
        watch_sources(Clock(), watcher, lambda: None).stop()
    assert any("every second, which costs" in formatEvent(event) for event in events)
