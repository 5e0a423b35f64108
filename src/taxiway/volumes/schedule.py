"""The daemon's daily snapshots (the platform takes one of every volume a day:
https://fly.io/docs/volumes/snapshots/) and the pruning of expired ones.

Every `check period` the daemon looks at each of the app's volumes: one whose newest
scheduled snapshot is a day old (or that has none) gets a new one, unless daily
snapshots are off for it (the volume's ``auto_backup_enabled``, or fly.toml's
``scheduled_snapshots = false`` on a mount of that name). Going by the newest snapshot
rather than a timer keeps it to one a day however often the daemon restarts. Then
every snapshot past its retention is deleted. ``TAXIWAY_SNAPSHOT_INTERVAL_S`` sets
another interval than a day (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta

from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime
from taxiway.state.records import VolumeRecord

DAY_S = 86_400.0
#: The longest wait between two looks, so a daily snapshot is at most this late.
MAX_CHECK_S = 600.0


def snapshot_interval() -> float:
    """A day, or ``TAXIWAY_SNAPSHOT_INTERVAL_S`` (tests)."""
    try:
        value = float(os.environ.get("TAXIWAY_SNAPSHOT_INTERVAL_S") or DAY_S)
    except ValueError:
        return DAY_S
    return value if value > 0 else DAY_S


def scheduled(runtime: AppRuntime, volume: VolumeRecord) -> bool:
    """Whether the volume gets daily snapshots."""
    if not volume.auto_backup_enabled:
        return False
    return not any(
        mount.name == volume.name and not mount.scheduled_snapshots
        for spec in runtime.specs.values()
        for mount in spec.mounts
    )


async def snapshot_round(runtime: AppRuntime, interval_s: float) -> None:
    """One look: the snapshots that are due, then the pruning."""
    from taxiway.volumes.running import snapshot_running  # tarfile & co: not at start-up
    from taxiway.volumes.snapshots import newest_scheduled, prune_expired

    due_before = datetime.now(UTC) - timedelta(seconds=interval_s)
    for volume in runtime.store.list_volumes(runtime.app):
        if not scheduled(runtime, volume):
            continue
        newest = newest_scheduled(runtime.store, runtime.app, volume.id)
        if newest is not None and _parse(newest.created_at) > due_before:
            continue
        try:
            await snapshot_running(runtime, volume, kind="scheduled")
        except TaxiwayError as exc:  # e.g. a full disk: the next round tries again
            _log(f"the daily snapshot of volume {volume.id} failed: {exc}")
    await asyncio.to_thread(prune_expired, runtime.store, runtime.state_dir, runtime.app)


class SnapshotSlot:
    """The daemon's snapshot round, every `MAX_CHECK_S` (or the interval, if shorter),
    the first one a check period after start-up so `up` isn't slowed."""

    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime
        self.interval_s = snapshot_interval()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="snapshots")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        period = min(self.interval_s, MAX_CHECK_S)
        while True:
            await asyncio.sleep(period)
            try:
                await snapshot_round(self.runtime, self.interval_s)
            except TaxiwayError as exc:  # the store is busy or its disk full: next time
                _log(str(exc))
            except Exception as exc:  # a bug: say so, and keep the schedule going
                _log(f"internal error (a bug, please report it): {exc!r}")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"snapshots | {message}", flush=True)
