"""Volume snapshots end to end: a machine writing into its volume is paused for the copy
(the snapshot holds one moment of its data), the snapshot restores into a new volume,
the daemon takes daily snapshots (a short interval here) and prunes expired ones, and
without a daemon the CLI snapshots the folder itself."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from engine_support import requires_image
from small_disk import small_tmpfs
from taxiway.runtime.drivers.process import mounts_supported

#: Writes its counter to ``a`` then ``c``, each atomically, as fast as it can; between
#: them sits ``b-filler``, big enough that a copy made while it runs reads ``c`` long
#: after ``a``. In any one moment, a == c or a == c + 1.
WRITER = """
import os, pathlib, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
folder = pathlib.Path(sys.argv[1])
(folder / "b-filler").write_bytes(os.urandom(8_000_000))
def put(name, value):
    (folder / (name + ".tmp")).write_text(value)
    os.replace(folder / (name + ".tmp"), folder / name)
n = 0
while True:
    n += 1
    put("a", str(n))
    put("c", str(n))
"""

needs_mounts = pytest.mark.skipif(
    not mounts_supported(),
    reason="showing a volume at its destination needs root, unshare and mount",
)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def counter(folder: Path) -> int | None:
    try:
        return int((folder / "a").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    destination = Path(f"/tmp/taxiway-snapshot-test-{uuid.uuid4().hex[:8]}")
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "fly.toml").write_text(
        'app = "snaps"\nkill_signal = "SIGTERM"\n'
        f'[processes]\ndb = "{sys.executable} writer.py {destination}"\n'
        f'cache = "{sys.executable} -c \\"import time; time.sleep(600)\\""\n'
        f'[[mounts]]\nsource = "data"\ndestination = "{destination}"\nprocesses = ["db"]\n'
        "snapshot_retention = 3\n"
        f'[[mounts]]\nsource = "scratch"\ndestination = "{destination}-scratch"\n'
        'processes = ["cache"]\nscheduled_snapshots = false\n'
    )
    yield tmp_path, destination
    taxiway(tmp_path, "down")
    for folder in (destination, Path(f"{destination}-scratch")):
        if folder.is_dir():
            folder.rmdir()


def volume_named(folder: Path, name: str) -> dict:
    listed = json.loads(taxiway(folder, "volumes", "list", "--json").stdout)
    return next(v for v in listed if v["name"] == name)


def _namespace_problem() -> str | None:
    from taxiway.runtime.drivers import unusable_reason

    missing = unusable_reason()
    return None if missing is None else f"the namespace driver needs {missing}"


@needs_mounts
@pytest.mark.parametrize("driver", ["process", "namespace"])
def test_a_snapshot_of_a_running_machines_volume_is_one_moment_and_restores(
    app: tuple[Path, Path], driver: str
) -> None:
    if driver == "namespace" and (problem := _namespace_problem()):
        pytest.skip(problem)
    folder, _ = app
    started = taxiway(folder, "up", "-d", env={"TAXIWAY_DRIVER": driver})
    assert started.returncode == 0, started.stderr
    volume = volume_named(folder, "data")
    data = Path(volume["path"])
    wait_for(lambda: counter(data), "the writer's first count")

    made = taxiway(folder, "volumes", "snapshots", "create", "data", "--json")
    assert made.returncode == 0, made.stderr
    snapshot = json.loads(made.stdout)
    assert snapshot["id"].startswith("vs_") and snapshot["kind"] == "manual"
    assert (snapshot["volume_id"], snapshot["retention_days"]) == (volume["id"], 3)

    logs = taxiway(folder, "logs", "--group", "db").stdout
    assert f"paused for a snapshot of volume {volume['id']}" in logs
    assert f"resumed after the snapshot of volume {volume['id']}" in logs
    with sqlite3.connect(folder / ".taxiway" / "taxiway.db") as db:
        event = db.execute(
            "SELECT machine_id, status, data FROM events WHERE type = 'volume_snapshot'"
        ).fetchone()
    assert event[0] == volume["attached_machine_id"] and event[1] == snapshot["id"]
    assert json.loads(event[2])["paused"] is True

    listed = json.loads(taxiway(folder, "volumes", "snapshots", "list", "data", "--json").stdout)
    assert [s["id"] for s in listed] == [snapshot["id"]]
    table = taxiway(folder, "volumes", "snapshots", "list", volume["id"]).stdout
    assert snapshot["id"] in table and "RETENTION DAYS" in table

    restored = taxiway(
        folder, "volumes", "create", "copy", "--snapshot-id", snapshot["id"], "--json"
    )
    assert restored.returncode == 0, restored.stderr
    copy = Path(json.loads(restored.stdout)["path"])
    a, c = int((copy / "a").read_text()), int((copy / "c").read_text())
    assert a - c in (0, 1), (a, c)  # one moment: the copy did not see the writer move on
    assert (copy / "b-filler").stat().st_size == 8_000_000
    assert json.loads(restored.stdout)["size_gb"] == volume["size_gb"]

    # the machine runs on after the copy
    wait_for(lambda: (counter(data) or 0) > a, "the writer to go on counting")
    machine = json.loads(taxiway(folder, "status", "--json").stdout)["machines"]
    assert {m["group"]: m["state"] for m in machine} == {"db": "started", "cache": "started"}


def test_bad_snapshot_ids_and_volumes_are_one_sentence(app: tuple[Path, Path]) -> None:
    folder, _ = app
    assert taxiway(folder, "volumes", "create", "data").returncode == 0
    before = taxiway(folder, "volumes", "list", "--json").stdout
    bad = taxiway(folder, "volumes", "create", "copy", "--snapshot-id", "vs_nothing")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "taxiway: error: app snaps has no volume snapshot vs_nothing; "
        "`taxiway volumes snapshots list VOLUME` shows them"
    ]
    assert taxiway(folder, "volumes", "list", "--json").stdout == before
    missing = taxiway(folder, "volumes", "snapshots", "create", "ghost")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "taxiway: error: app snaps has no volume ghost; `taxiway volumes list` shows them"
    )


def test_without_a_daemon_the_cli_snapshots_the_folder(app: tuple[Path, Path]) -> None:
    folder, _ = app
    assert taxiway(folder, "volumes", "create", "data").returncode == 0
    data = Path(volume_named(folder, "data")["path"])
    (data / "note.txt").write_text("offline\n")
    made = taxiway(folder, "volumes", "snapshots", "create", "data")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created snapshot vs_")
    snapshot_id = made.stdout.split()[2]
    restored = taxiway(folder, "volumes", "create", "again", "--snapshot-id", snapshot_id)
    assert restored.returncode == 0, restored.stderr
    again = Path(volume_named(folder, "again")["path"])
    assert (again / "note.txt").read_text() == "offline\n"

    # a lost database: the snapshot is not orphaned silently, and recover lists it again
    for extra in ("", "-wal", "-shm"):
        (folder / ".taxiway" / f"taxiway.db{extra}").unlink(missing_ok=True)
    refused = taxiway(folder, "volumes", "list")
    assert refused.returncode == 1 and "1 volume snapshot" in refused.stderr
    recovered = taxiway(folder, "state", "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert f"adopted snapshot {snapshot_id}" in recovered.stdout
    listed = taxiway(folder, "volumes", "snapshots", "list", "data", "--json").stdout
    assert [s["id"] for s in json.loads(listed)] == [snapshot_id]


def _fake_old_snapshot(folder: Path, volume_id: str, days: float) -> Path:
    """A snapshot record (and archive) that looks ``days`` old: no waiting for days."""
    stamp = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
    snapshot_id = "vs_" + uuid.uuid4().hex[:16]
    archive = folder / ".taxiway" / "snapshots" / volume_id / f"{snapshot_id}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"old")
    with sqlite3.connect(folder / ".taxiway" / "taxiway.db") as db:
        db.execute(
            "INSERT INTO volume_snapshots VALUES (?, ?, 'snaps', 'scheduled', 'created', 3, "
            "'', 3, 1.0, ?)",
            (snapshot_id, volume_id, stamp.replace("+00:00", "Z")),
        )
    return archive


@needs_mounts
def test_the_daemon_takes_daily_snapshots_and_prunes_expired_ones(
    app: tuple[Path, Path],
) -> None:
    folder, _ = app
    started = taxiway(folder, "up", "-d", env={"TAXIWAY_SNAPSHOT_INTERVAL_S": "1"})
    assert started.returncode == 0, started.stderr
    data, scratch = volume_named(folder, "data"), volume_named(folder, "scratch")
    assert scratch["auto_backup_enabled"] is False  # fly.toml's scheduled_snapshots = false
    old = _fake_old_snapshot(folder, data["id"], days=4)  # past data's 3 days
    kept = _fake_old_snapshot(folder, data["id"], days=2)

    def listed(volume: str) -> list[dict]:
        out = taxiway(folder, "volumes", "snapshots", "list", volume, "--json").stdout
        return json.loads(out)

    wait_for(
        lambda: [s for s in listed("data") if s["kind"] == "scheduled" and s["size"] > 3],
        "a scheduled snapshot",
    )
    wait_for(lambda: not old.exists(), "the expired snapshot's archive to go")
    ids = {s["id"] for s in listed("data")}
    assert old.stem.split(".")[0] not in ids
    assert kept.exists() and kept.name.split(".")[0] in ids
    assert listed("scratch") == []
    logs = taxiway(folder, "logs", "--group", "db").stdout
    assert "paused for a snapshot" in logs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """The app's folder (and its .taxiway) on a 2 MB tmpfs."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        (disk / "fly.toml").write_text('app = "snaps"\n')
        yield disk


def test_a_full_disk_is_one_sentence_and_leaves_no_snapshot_or_volume(small_disk: Path) -> None:
    import os

    assert taxiway(small_disk, "volumes", "create", "data").returncode == 0
    data = Path(volume_named(small_disk, "data")["path"])
    (data / "random.bin").write_bytes(os.urandom(1_200_000))  # no room for its copy
    full = taxiway(small_disk, "volumes", "snapshots", "create", "data")
    assert full.returncode == 1 and "Traceback" not in full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith("taxiway: error: the disk holding ") and "is full" in line
    assert (
        json.loads(taxiway(small_disk, "volumes", "snapshots", "list", "data", "--json").stdout)
        == []
    )
    assert list((small_disk / ".taxiway" / "snapshots").rglob("*.*")) == []

    (data / "random.bin").write_bytes(os.urandom(700_000))
    made = taxiway(small_disk, "volumes", "snapshots", "create", "data", "--json")
    assert made.returncode == 0, made.stderr
    before = taxiway(small_disk, "volumes", "list", "--json").stdout
    restore = taxiway(
        small_disk, "volumes", "create", "copy", "--snapshot-id", json.loads(made.stdout)["id"]
    )
    assert restore.returncode == 1 and "Traceback" not in restore.stderr
    (line,) = restore.stderr.strip().splitlines()
    assert "is full, so no volume was restored" in line
    assert taxiway(small_disk, "volumes", "list", "--json").stdout == before
    assert sorted(
        p.name for p in (small_disk / ".taxiway" / "volumes").iterdir() if p.is_dir()
    ) == [data.name]


@requires_image("python:3.12-slim")
def test_the_docker_driver_pauses_the_container_for_the_copy(tmp_path: Path) -> None:
    from docker_apps import DOCKER, remove_images

    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "writer.py").write_text(WRITER)
    (folder / "fly.toml").write_text(
        f'app = "sd{uuid.uuid4().hex[:6]}"\nkill_signal = "SIGTERM"\n'
        '[build]\nimage = "python:3.12-slim"\n'
        '[processes]\ndb = "python3 /app/writer.py /data"\n'
        '[[files]]\nguest_path = "/app/writer.py"\nlocal_path = "writer.py"\n'
        '[[mounts]]\nsource = "data"\ndestination = "/data"\n'
    )
    try:
        started = taxiway(folder, "up", "-d", env=DOCKER, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        data = Path(volume_named(folder, "data")["path"])
        wait_for(lambda: counter(data), "the writer's first count")
        made = taxiway(folder, "volumes", "snapshots", "create", "data", "--json")
        assert made.returncode == 0, made.stderr
        restored = taxiway(
            folder, "volumes", "create", "copy", "--snapshot-id", json.loads(made.stdout)["id"]
        )
        assert restored.returncode == 0, restored.stderr
        copy = Path(volume_named(folder, "copy")["path"])
        a, c = int((copy / "a").read_text()), int((copy / "c").read_text())
        assert a - c in (0, 1), (a, c)
        assert "paused for a snapshot" in taxiway(folder, "logs").stdout
        wait_for(lambda: (counter(data) or 0) > a, "the writer to go on counting")
    finally:
        taxiway(folder, "down", timeout=120)
        remove_images(folder)
        _untag_release_images(folder)


def _untag_release_images(folder: Path) -> None:
    """A prebuilt image's release tags (``taxiway/<scope>:vN``) carry no scope label (the
    image is python:3.12-slim's): remove the tags, never the image."""
    import docker

    from docker_apps import scope_of

    client = docker.from_env()
    for image in client.images.list(name=f"taxiway/{scope_of(folder)}"):
        for tag in image.tags:
            if tag.startswith(f"taxiway/{scope_of(folder)}:"):
                client.images.remove(tag)
