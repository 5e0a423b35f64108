"""Snapshots of a volume while the daemon runs the app: the machine using it paused
(`taxiway.volumes.pausing`), the copy in a thread so the daemon keeps serving, the
record and an event once the archive is complete. One snapshot at a time per app: two
at once would thaw a machine while the other still copies."""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime
from taxiway.state.records import SnapshotRecord, VolumeRecord
from taxiway.volumes.pausing import machine_paused
from taxiway.volumes.snapshots import Copied, copy_volume, record_snapshot, restore_volume

_turns: weakref.WeakKeyDictionary[AppRuntime, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _copy_paused(runtime: AppRuntime, volume: VolumeRecord) -> tuple[Copied, str | None]:
    """The volume's archive, made with its machine paused; and that machine's id."""
    async with machine_paused(runtime, volume) as paused:
        copying = asyncio.ensure_future(asyncio.to_thread(copy_volume, runtime.state_dir, volume))
        try:
            return await asyncio.shield(copying), paused
        except asyncio.CancelledError:  # the daemon stops: let the thread finish, keep
            with contextlib.suppress(Exception):  # nothing of it, then resume
                (await copying).path.unlink(missing_ok=True)
            raise


async def fork_running(
    runtime: AppRuntime,
    source: VolumeRecord,
    *,
    name: str,
    region: str,
    size_gb: float | None = None,
    snapshot_retention: int | None = None,
    auto_backup_enabled: bool = True,
) -> VolumeRecord:
    """A new volume holding a copy of ``source`` as it is now (the platform's fork,
    ``source_volume_id``): a snapshot that is restored at once and never recorded."""
    if size_gb is not None and size_gb < source.size_gb:
        raise TaxiwayError(
            f"volume {source.id} is {source.size_gb:g} GB; a fork of it can't be smaller "
            f"({size_gb:g} GB asked)"
        )
    turn = _turns.setdefault(runtime, asyncio.Lock())
    async with turn:
        source = runtime.store.get_volume(source.id) or source
        copied, _ = await _copy_paused(runtime, source)
    try:
        passing = SnapshotRecord(
            id=copied.snapshot_id,
            volume_id=source.id,
            app=source.app,
            kind="manual",
            retention_days=source.snapshot_retention,
            volume_size_gb=source.size_gb,
        )
        return await asyncio.to_thread(
            restore_volume,
            runtime.store,
            runtime.state_dir,
            passing,
            name=name,
            region=region,
            size_gb=size_gb,
            snapshot_retention=snapshot_retention,
            auto_backup_enabled=auto_backup_enabled,
        )
    finally:
        copied.path.unlink(missing_ok=True)


async def snapshot_running(
    runtime: AppRuntime, volume: VolumeRecord, *, kind: str = "manual"
) -> SnapshotRecord:
    """Take a consistent snapshot of one of the app's volumes."""
    turn = _turns.setdefault(runtime, asyncio.Lock())
    async with turn:
        volume = runtime.store.get_volume(volume.id) or volume  # attached since?
        copied, paused = await _copy_paused(runtime, volume)
        snapshot = record_snapshot(runtime.store, volume, copied, kind=kind)
        runtime.store.add_event(
            runtime.app,
            "volume_snapshot",
            machine_id=paused,
            status=snapshot.id,
            data={"volume_id": volume.id, "kind": kind, "paused": paused is not None},
        )
        return snapshot
