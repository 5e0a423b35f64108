"""Snapshots of a volume while the daemon runs the app: the machine using it paused
(`taxiway.volumes.pausing`), the copy in a thread so the daemon keeps serving, the
record and an event once the archive is complete. One snapshot at a time per app: two
at once would thaw a machine while the other still copies."""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from taxiway.runtime.app import AppRuntime
from taxiway.state.records import SnapshotRecord, VolumeRecord
from taxiway.volumes.pausing import machine_paused
from taxiway.volumes.snapshots import copy_volume, record_snapshot

_turns: weakref.WeakKeyDictionary[AppRuntime, asyncio.Lock] = weakref.WeakKeyDictionary()


async def snapshot_running(
    runtime: AppRuntime, volume: VolumeRecord, *, kind: str = "manual"
) -> SnapshotRecord:
    """Take a consistent snapshot of one of the app's volumes."""
    turn = _turns.setdefault(runtime, asyncio.Lock())
    async with turn:
        volume = runtime.store.get_volume(volume.id) or volume  # attached since?
        async with machine_paused(runtime, volume) as paused:
            copying = asyncio.ensure_future(
                asyncio.to_thread(copy_volume, runtime.state_dir, volume)
            )
            try:
                copied = await asyncio.shield(copying)
            except asyncio.CancelledError:  # the daemon stops: let the thread finish, keep
                with contextlib.suppress(Exception):  # nothing of it, then resume
                    (await copying).path.unlink(missing_ok=True)
                raise
        snapshot = record_snapshot(runtime.store, volume, copied, kind=kind)
        runtime.store.add_event(
            runtime.app,
            "volume_snapshot",
            machine_id=paused,
            status=snapshot.id,
            data={"volume_id": volume.id, "kind": kind, "paused": paused is not None},
        )
        return snapshot
