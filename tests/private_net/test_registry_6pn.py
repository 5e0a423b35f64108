"""The host-wide registry of apps: publish, withdraw, dead daemons and corrupt files left
out, the directory chosen, and `RegistryView`'s cache."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from taxiway.errors import TaxiwayError
from taxiway.private_net import registry
from taxiway.private_net.registry import (
    AppEntry,
    MachineEntry,
    RegistryView,
    entry_path,
    pid_alive,
    publish,
    read_entries,
    registry_dir,
    withdraw,
)

MACHINE = MachineEntry("abc123", "app", "local", "fdaa:0:1:a7b:0:1:0:2", "started")


def entry(app: str = "shop", scope: str | None = None, pid: int | None = None, **kw):
    return AppEntry(
        app, scope or f"/srv/{app}/.taxiway", pid or os.getpid(), "local", [MACHINE], **kw
    )


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_publish_then_read_round_trips(tmp_path):
    published = entry(flycast="fdaa:0:1::7", api="fdaa:0:1::3")
    path = publish(published, tmp_path)
    assert path == entry_path(published.scope, tmp_path)
    assert path.name.endswith(".json") and len(path.stem) == 16
    assert read_entries(tmp_path) == [published]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_publishing_again_replaces_and_leaves_no_temporary_file(tmp_path):
    publish(entry(), tmp_path)
    stopped = MachineEntry("abc123", "app", "local", "fdaa:0:1:a7b:0:1:0:2", "stopped")
    publish(AppEntry("shop", "/srv/shop/.taxiway", os.getpid(), "local", [stopped]), tmp_path)
    assert [e.machines[0].state for e in read_entries(tmp_path)] == ["stopped"]
    assert len(os.listdir(tmp_path)) == 1


def test_withdraw_removes_and_tolerates_a_missing_entry(tmp_path):
    publish(entry(), tmp_path)
    withdraw("/srv/shop/.taxiway", tmp_path)
    assert read_entries(tmp_path) == []
    withdraw("/srv/shop/.taxiway", tmp_path)


def test_entries_are_sorted_by_app_then_scope(tmp_path):
    for app, scope in [("zeta", "b"), ("alpha", "z"), ("zeta", "a")]:
        publish(entry(app, scope), tmp_path)
    assert [(e.app, e.scope) for e in read_entries(tmp_path)] == [
        ("alpha", "z"),
        ("zeta", "a"),
        ("zeta", "b"),
    ]


def test_a_dead_daemons_entry_is_left_out(tmp_path):
    publish(entry("gone", pid=dead_pid()), tmp_path)
    publish(entry("here"), tmp_path)
    assert [e.app for e in read_entries(tmp_path)] == ["here"]


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # another user's process (EPERM when not root) is alive too
    assert not pid_alive(dead_pid())
    assert not pid_alive(0) and not pid_alive(-1)


def test_corrupt_unreadable_and_foreign_files_are_ignored(tmp_path):
    publish(entry(), tmp_path)
    (tmp_path / "0000000000000000.json").write_text("{not json")
    (tmp_path / "1111111111111111.json").write_text('{"app": 3}')
    (tmp_path / "2222222222222222.json").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".abc.tmp").write_text("half")
    assert [e.app for e in read_entries(tmp_path)] == ["shop"]
    view = RegistryView(tmp_path)
    assert [e.app for e in view.entries()] == ["shop"]


def test_a_missing_directory_reads_as_empty(tmp_path):
    assert read_entries(tmp_path / "nowhere") == []
    assert RegistryView(tmp_path / "nowhere").entries() == []


def test_the_environment_variable_names_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.DIR_ENV, str(tmp_path / "6pn"))
    assert registry_dir() == tmp_path / "6pn"
    assert (tmp_path / "6pn").is_dir()
    publish(entry())
    assert [e.app for e in read_entries()] == ["shop"]


def test_without_the_system_directory_the_runtime_directory_serves(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.DIR_ENV, raising=False)
    monkeypatch.setattr(registry, "SYSTEM_DIR", tmp_path / "readonly" / "6pn")
    (tmp_path / "readonly").mkdir(mode=0o500)
    if os.access(tmp_path / "readonly", os.W_OK):
        pytest.skip("root may write anywhere: the fallback can't be seen")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    assert registry_dir() == tmp_path / "run" / "taxiway" / "6pn"


def test_the_system_directory_when_writable(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.DIR_ENV, raising=False)
    monkeypatch.setattr(registry, "SYSTEM_DIR", tmp_path / "run" / "taxiway" / "6pn")
    assert registry_dir() == tmp_path / "run" / "taxiway" / "6pn"


def test_the_temporary_fallback_refuses_another_users_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(registry, "SYSTEM_DIR", tmp_path / "file" / "6pn")
    (tmp_path / "file").write_text("not a folder: the system directory can't be made")
    monkeypatch.setattr(registry.tempfile, "gettempdir", lambda: str(tmp_path))
    assert registry_dir() == tmp_path / f"taxiway-{os.getuid()}" / "6pn"
    assert stat.S_IMODE((tmp_path / f"taxiway-{os.getuid()}").stat().st_mode) == 0o700
    # Someone else made /tmp/taxiway-<uid> first (pretend: we are another uid).
    monkeypatch.setattr(registry.os, "getuid", lambda: os.geteuid() + 4242)
    (tmp_path / f"taxiway-{os.geteuid() + 4242}").mkdir()
    with pytest.raises(TaxiwayError, match="belongs to another user"):
        registry_dir()


def test_view_returns_the_same_list_until_something_changes(tmp_path):
    view = RegistryView(tmp_path, interval=0.0)
    publish(entry("one"), tmp_path)
    first = view.entries()
    assert [e.app for e in first] == ["one"]
    assert view.entries() is first  # nothing changed: the very same object
    publish(entry("two"), tmp_path)
    second = view.entries()
    assert [e.app for e in second] == ["one", "two"]
    withdraw(entry("one").scope, tmp_path)
    assert [e.app for e in view.entries()] == ["two"]


def test_view_sees_a_republished_entry_even_within_one_mtime_tick(tmp_path):
    view = RegistryView(tmp_path, interval=0.0)
    started = entry()
    stopped = AppEntry(
        "shop",
        started.scope,
        os.getpid(),
        "local",
        [MachineEntry("abc123", "app", "local", "fdaa:0:1:a7b:0:1:0:2", "stoppd")],
    )  # same size as "started": only the inode tells them apart within a tick
    for _ in range(20):
        publish(started, tmp_path)
        assert view.entries()[0].machines[0].state == "started"
        publish(stopped, tmp_path)
        assert view.entries()[0].machines[0].state == "stoppd"


def test_view_rereads_only_changed_files(tmp_path, monkeypatch):
    publish(entry("one"), tmp_path)
    publish(entry("two"), tmp_path)
    view = RegistryView(tmp_path, interval=0.0)
    view.entries()
    reads: list[str] = []
    original = registry._read_file
    monkeypatch.setattr(registry, "_read_file", lambda path: reads.append(path) or original(path))
    view.entries()
    assert reads == []
    publish(entry("two", flycast="fdaa::7"), tmp_path)
    view.entries()
    assert len(reads) == 1 and str(reads[0]).endswith(entry_path(entry("two").scope, tmp_path).name)


def test_view_looks_again_only_after_its_interval(tmp_path):
    view = RegistryView(tmp_path, interval=3600.0)
    assert view.entries() == []
    publish(entry(), tmp_path)
    assert view.entries() == []  # within the interval: the cached answer


def test_view_drops_an_entry_whose_daemon_died_without_a_file_change(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        publish(entry("mortal", pid=child.pid), tmp_path)
        view = RegistryView(tmp_path, interval=0.0)
        assert [e.app for e in view.entries()] == ["mortal"]
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while view.entries() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert view.entries() == []
