"""Snapshots on the store and on disk: taken, listed, kept for the retention their volume
had, pruned when older, restored into new volumes; a bad id or a full disk changes
nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from small_disk import small_tmpfs
from taxiway.errors import TaxiwayError
from taxiway.state.records import StateError, VolumeRecord
from taxiway.state.store import DB_NAME, Store
from taxiway.volumes.lifecycle import create_volume, destroy_volume
from taxiway.volumes.lookup import find_volume
from taxiway.volumes.snapshots import (
    find_snapshot,
    prune_expired,
    restore_volume,
    snapshot_file,
    take_snapshot,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / ".taxiway") as opened:
        opened.ensure_app("hello", tmp_path / "fly.toml")
        yield opened


def _volume(store: Store, name: str = "data", **kwargs: object) -> VolumeRecord:
    volume = create_volume(
        store, store.path.parent, "hello", name, size_gb=2, region="ams", **kwargs
    )
    (Path(volume.path) / "greeting").write_text(f"hello from {name}\n")
    return volume


def _age(store: Store, snapshot_id: str, days: float) -> None:
    """Make a snapshot look ``days`` old (no waiting for days)."""
    stamp = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
    with sqlite3.connect(store.path) as db:
        db.execute(
            "UPDATE volume_snapshots SET created_at = ? WHERE id = ?",
            (stamp.replace("+00:00", "Z"), snapshot_id),
        )


def test_a_snapshot_is_an_archive_and_a_record(store: Store) -> None:
    state_dir = store.path.parent
    volume = _volume(store, snapshot_retention=14)
    snapshot = take_snapshot(store, state_dir, volume)
    assert snapshot.id.startswith("vs_") and len(snapshot.id) == 19
    assert (snapshot.kind, snapshot.status, snapshot.retention_days) == ("manual", "created", 14)
    assert snapshot.volume_size_gb == 2
    archive = snapshot_file(state_dir, snapshot)
    assert archive.stat().st_size == snapshot.size
    assert archive == state_dir / "snapshots" / volume.id / f"{snapshot.id}.tar.gz"
    assert store.list_snapshots("hello", volume.id) == [snapshot]


def test_retention_is_the_volumes_when_taken_and_expired_ones_go(store: Store) -> None:
    state_dir = store.path.parent
    volume = _volume(store)
    kept_five = take_snapshot(store, state_dir, volume, kind="scheduled")
    volume = store.update_volume(volume.id, snapshot_retention=30)
    kept_thirty = take_snapshot(store, state_dir, volume)
    fresh = take_snapshot(store, state_dir, volume, kind="scheduled")
    _age(store, kept_five.id, 6)
    _age(store, kept_thirty.id, 6)

    gone = prune_expired(store, state_dir, "hello")
    assert [s.id for s in gone] == [kept_five.id]
    assert not snapshot_file(state_dir, kept_five).exists()
    assert [s.id for s in store.list_snapshots("hello")] == [kept_thirty.id, fresh.id]
    _age(store, kept_thirty.id, 31)  # on-demand snapshots expire alike
    assert [s.id for s in prune_expired(store, state_dir, "hello")] == [kept_thirty.id]


def test_restore_makes_a_new_volume_with_the_data(store: Store) -> None:
    state_dir = store.path.parent
    volume = _volume(store)
    snapshot = take_snapshot(store, state_dir, volume)
    (Path(volume.path) / "greeting").write_text("changed since\n")

    restored = restore_volume(store, state_dir, snapshot, name="copy", region="ams")
    assert (
        restored.id != volume.id and restored.size_gb == 2 and restored.attached_machine_id is None
    )
    assert (Path(restored.path) / "greeting").read_text() == "hello from data\n"
    assert restored.path == str(state_dir / "volumes" / restored.id)
    bigger = restore_volume(store, state_dir, snapshot, name="big", region="ams", size_gb=5)
    assert bigger.size_gb == 5
    with pytest.raises(TaxiwayError, match="can't be smaller"):
        restore_volume(store, state_dir, snapshot, name="small", region="ams", size_gb=1)
    assert {v.name for v in store.list_volumes("hello")} == {"data", "copy", "big"}


def test_a_destroyed_volumes_snapshots_stay_restorable(store: Store) -> None:
    state_dir = store.path.parent
    volume = _volume(store)
    snapshot = take_snapshot(store, state_dir, volume)
    destroy_volume(store, volume)
    assert not Path(volume.path).exists()
    assert find_volume(store, "hello", volume.id, destroyed_ok=True).state == "destroyed"
    with pytest.raises(TaxiwayError, match="has no volume"):
        find_volume(store, "hello", volume.id)
    again = restore_volume(store, state_dir, snapshot, name="data", region="ams")
    assert (Path(again.path) / "greeting").read_text() == "hello from data\n"


def test_bad_ids_and_names_are_one_sentence_and_change_nothing(store: Store) -> None:
    state_dir = store.path.parent
    _volume(store)
    _volume(store)  # a second "data"
    with pytest.raises(TaxiwayError, match=r"^app hello has no volume snapshot vs_nope; "):
        find_snapshot(store, "hello", "vs_nope")
    with pytest.raises(TaxiwayError, match="2 volumes of hello are called data"):
        find_volume(store, "hello", "data")
    with pytest.raises(TaxiwayError, match="no volume ghost"):
        find_volume(store, "hello", "ghost")
    with pytest.raises(StateError, match="from 1 to 60"):
        _volume(store, "other", snapshot_retention=61)
    names = sorted(p.name for p in (state_dir / "volumes").iterdir())
    assert len([n for n in names if not n.endswith(".json")]) == 2  # no folder for "other"


def test_a_missing_or_damaged_archive_restores_nothing(store: Store) -> None:
    state_dir = store.path.parent
    snapshot = take_snapshot(store, state_dir, _volume(store))
    archive = snapshot_file(state_dir, snapshot)
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(TaxiwayError, match="is damaged"):
        restore_volume(store, state_dir, snapshot, name="copy", region="ams")
    archive.unlink()
    with pytest.raises(TaxiwayError, match="is missing"):
        restore_volume(store, state_dir, snapshot, name="copy", region="ams")
    assert [v.name for v in store.list_volumes("hello")] == ["data"]
    assert len(list((state_dir / "volumes").glob("*/"))) == 1


def test_the_schema_upgrade_keeps_volumes_and_turns_daily_snapshots_on(tmp_path: Path) -> None:
    from taxiway.state.migrations import MIGRATIONS, migrate

    path = tmp_path / DB_NAME
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, "old", MIGRATIONS[:3])
    db.execute("INSERT INTO apps VALUES ('hello', '/x', '2026-01-01T00:00:00.000Z')")
    db.execute(
        "INSERT INTO volumes(id, app, name, size_gb, region, path, created_at) VALUES "
        "('vol_0123456789abcdef', 'hello', 'data', 1, 'ams', '/v', '2026-01-01T00:00:00.000Z')"
    )
    db.close()
    with Store.open(tmp_path) as store:
        (volume,) = store.list_volumes("hello")
        assert volume.auto_backup_enabled is True and volume.snapshot_retention == 5


@pytest.fixture
def full_state(tmp_path: Path) -> Iterator[Store]:
    """A store whose folder is a 1 MB tmpfs, nearly full."""
    with small_tmpfs(tmp_path / "disk", "1m") as disk, Store.open(disk / ".taxiway") as store:
        store.ensure_app("hello", tmp_path / "fly.toml")
        yield store


def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_made(full_state: Store) -> None:
    import os

    store = full_state
    state_dir = store.path.parent
    volume = create_volume(store, state_dir, "hello", "data", size_gb=1, region="ams")
    (Path(volume.path) / "random.bin").write_bytes(os.urandom(600_000))  # most of the disk
    with pytest.raises(TaxiwayError) as raised:
        take_snapshot(store, state_dir, volume)
    assert str(raised.value).startswith("the disk holding ")
    assert "is full, so no snapshot of volume" in str(raised.value)
    assert store.list_snapshots("hello") == []
    assert list((state_dir / "snapshots" / volume.id).iterdir()) == []

    (Path(volume.path) / "random.bin").write_bytes(os.urandom(300_000))
    snapshot = take_snapshot(store, state_dir, volume)  # fits now: about 300 kB
    with pytest.raises(TaxiwayError, match="is full, so no volume was restored"):
        restore_volume(store, state_dir, snapshot, name="copy", region="ams")
    assert [v.name for v in store.list_volumes("hello")] == ["data"]
    assert sorted(p.name for p in (state_dir / "volumes").iterdir()) == [
        volume.id,
        f"{volume.id}.json",
    ]
