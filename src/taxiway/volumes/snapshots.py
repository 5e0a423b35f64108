"""What a volume snapshot is, on the store and on disk: take, list, prune, restore.

A snapshot is an archive at ``.taxiway/snapshots/<volume id>/<snapshot id>.tar.gz``
(`taxiway.volumes.archive`) and a record in the store, written only once the archive
is complete: a failure (a full disk) leaves neither. Whether the copy is consistent is
the caller's part (`taxiway.volumes.pausing`): these functions only copy.

Retention, as the platform keeps it (https://fly.io/docs/volumes/snapshots/): each
snapshot is kept for the ``snapshot_retention`` days its volume had when it was taken
(1-60, default 5); a later change of the volume's retention applies to new snapshots
only. Scheduled and on-demand snapshots expire alike, and a snapshot outlives its
volume, so a destroyed volume can be restored while its snapshots last.
"""

from __future__ import annotations

import errno
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from taxiway.errors import TaxiwayError, os_error_sentence
from taxiway.state.records import SnapshotRecord, VolumeRecord, new_snapshot_id, new_volume_id
from taxiway.state.store import Store
from taxiway.state.volume_folders import SNAPSHOTS_DIR
from taxiway.volumes.archive import SUFFIX, VolumeChanged, extract_archive, write_archive

_FULL = (errno.ENOSPC, errno.EDQUOT)


def snapshot_file(state_dir: Path, snapshot: SnapshotRecord) -> Path:
    """Where the snapshot's archive lives."""
    return state_dir / SNAPSHOTS_DIR / snapshot.volume_id / f"{snapshot.id}{SUFFIX}"


@dataclass(frozen=True)
class Copied:
    """An archive written for a snapshot not yet recorded (`record_snapshot`)."""

    snapshot_id: str
    path: Path
    size: int
    digest: str


def copy_volume(state_dir: Path, volume: VolumeRecord) -> Copied:
    """Archive the volume's folder as it is now (blocking: the daemon runs it in a
    thread). Raises a one-sentence `TaxiwayError`, leaving no archive, on failure."""
    snapshot_id = new_snapshot_id()
    target = state_dir / SNAPSHOTS_DIR / volume.id / f"{snapshot_id}{SUFFIX}"
    label = f"volume {volume.id} ({volume.name})"
    if not Path(volume.path).is_dir():
        raise TaxiwayError(f"{label} has no data folder at {volume.path}; nothing to snapshot")
    try:
        (state_dir / SNAPSHOTS_DIR).mkdir(mode=0o700, exist_ok=True)  # the data is private
        size, digest = write_archive(Path(volume.path), target)
    except VolumeChanged as exc:
        raise TaxiwayError(
            f"{exc.args[0]} changed while {label} was copied, so no snapshot was made; "
            "try again (a started machine is paused for the copy)"
        ) from None
    except OSError as exc:
        if exc.errno in _FULL:
            raise TaxiwayError(
                f"the disk holding {target.parent} is full, so no snapshot of {label} was "
                "made; free some space and try again"
            ) from None
        raise TaxiwayError(f"no snapshot of {label} was made: {os_error_sentence(exc)}") from None
    return Copied(snapshot_id, target, size, digest)


def record_snapshot(
    store: Store, volume: VolumeRecord, copied: Copied, *, kind: str
) -> SnapshotRecord:
    """Record a copied archive as a snapshot (removing the archive if that fails)."""
    record = SnapshotRecord(
        id=copied.snapshot_id,
        volume_id=volume.id,
        app=volume.app,
        kind=kind,  # type: ignore[arg-type]
        size=copied.size,
        digest=copied.digest,
        retention_days=volume.snapshot_retention,
        volume_size_gb=volume.size_gb,
    )
    try:
        return store.add_snapshot(record)
    except BaseException:
        copied.path.unlink(missing_ok=True)
        raise


def take_snapshot(
    store: Store, state_dir: Path, volume: VolumeRecord, *, kind: str = "manual"
) -> SnapshotRecord:
    """Copy and record in one go: for a volume no running machine writes to (no daemon
    runs the app)."""
    return record_snapshot(store, volume, copy_volume(state_dir, volume), kind=kind)


def expires_at(snapshot: SnapshotRecord) -> datetime:
    return _parse(snapshot.created_at) + timedelta(days=snapshot.retention_days)


def prune_expired(
    store: Store, state_dir: Path, app: str, *, now: Callable[[], datetime] | None = None
) -> list[SnapshotRecord]:
    """Delete the app's snapshots past their retention (destroyed volumes' included);
    returns them. Records go first: an archive without a record is never listed."""
    moment = (now or _utcnow)()
    expired = [s for s in store.list_snapshots(app) if expires_at(s) <= moment]
    if expired:
        store.remove_snapshots(s.id for s in expired)
        for snapshot in expired:
            snapshot_file(state_dir, snapshot).unlink(missing_ok=True)
    return expired


def newest_scheduled(store: Store, app: str, volume_id: str) -> SnapshotRecord | None:
    taken = store.list_snapshots(app, volume_id, kind="scheduled")
    return taken[-1] if taken else None


def find_snapshot(store: Store, app: str, snapshot_id: str) -> SnapshotRecord:
    """The app's snapshot with this id, or a sentence saying there is none."""
    snapshot = store.get_snapshot(snapshot_id)
    if snapshot is None or snapshot.app != app:
        raise TaxiwayError(
            f"app {app} has no volume snapshot {snapshot_id}; "
            "`taxiway volumes snapshots list VOLUME` shows them"
        )
    return snapshot


def restore_volume(
    store: Store,
    state_dir: Path,
    snapshot: SnapshotRecord,
    *,
    name: str,
    region: str,
    size_gb: float | None = None,
    snapshot_retention: int | None = None,
    auto_backup_enabled: bool = True,
) -> VolumeRecord:
    """A new, unattached volume holding the snapshot's data. As on the platform it is at
    least as large as the volume the snapshot was taken from. Nothing is left behind
    (folder or record) when it fails."""
    size = snapshot.volume_size_gb if size_gb is None else size_gb
    if size < snapshot.volume_size_gb:
        raise TaxiwayError(
            f"snapshot {snapshot.id} was taken of a {snapshot.volume_size_gb:g} GB volume; "
            f"a volume restored from it can't be smaller ({size:g} GB asked)"
        )
    archive = snapshot_file(state_dir, snapshot)
    if not archive.is_file():
        raise TaxiwayError(
            f"snapshot {snapshot.id}'s archive {archive} is missing, so nothing was created"
        )
    volume_id = new_volume_id()
    folder = state_dir / "volumes" / volume_id
    try:
        extract_archive(archive, folder)
    except OSError as exc:
        if exc.errno in _FULL:
            raise TaxiwayError(
                f"the disk holding {folder.parent} is full, so no volume was restored from "
                f"snapshot {snapshot.id}; free some space and try again"
            ) from None
        raise TaxiwayError(
            f"no volume was restored from snapshot {snapshot.id}: {os_error_sentence(exc)}"
        ) from None
    except (tarfile.TarError, EOFError) as exc:
        raise TaxiwayError(
            f"snapshot {snapshot.id}'s archive {archive} is damaged ({exc}), so nothing was created"
        ) from None
    try:
        return store.create_volume(
            snapshot.app,
            name,
            size,
            region,
            folder,
            snapshot.retention_days if snapshot_retention is None else snapshot_retention,
            volume_id=volume_id,
            auto_backup_enabled=auto_backup_enabled,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def adopt_archives(store: Store, state_dir: Path, app: str) -> list[SnapshotRecord]:
    """Record the snapshot archives the store doesn't list (`taxiway state recover`,
    after a lost database), for volumes it lists: on-demand snapshots dated by their
    file, kept for their volume's retention from then."""
    import hashlib
    import os

    known = {s.id for s in store.list_snapshots(app)}
    adopted = []
    for volume in store.list_volumes(app, include_destroyed=True):
        folder = state_dir / SNAPSHOTS_DIR / volume.id
        for archive in sorted(folder.glob(f"vs_*{SUFFIX}")):
            snapshot_id = archive.name.removesuffix(SUFFIX)
            if snapshot_id in known:
                continue
            try:
                with open(archive, "rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                info = os.stat(archive)
                taken = datetime.fromtimestamp(info.st_mtime, UTC)
                record = SnapshotRecord(
                    id=snapshot_id,
                    volume_id=volume.id,
                    app=app,
                    kind="manual",
                    size=info.st_size,
                    digest=digest,
                    retention_days=volume.snapshot_retention,
                    volume_size_gb=volume.size_gb,
                    created_at=taken.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                )
                adopted.append(store.add_snapshot(record))
            except (OSError, ValueError):  # unreadable, or not named like a snapshot
                continue
    return adopted


def snapshot_json(snapshot: SnapshotRecord) -> dict[str, object]:
    """The platform's VolumeSnapshot shape (the platform's OpenAPI document,
    superfly/fly-openapi-sdk, go/api/openapi.yaml; ``retention_days`` as fly-go's
    `volume_types.go` reads it)."""
    return {
        "id": snapshot.id,
        "size": snapshot.size,
        "digest": snapshot.digest,
        "created_at": snapshot.created_at,
        "status": snapshot.status,
        "retention_days": snapshot.retention_days,
    }


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _utcnow() -> datetime:
    return datetime.now(UTC)
