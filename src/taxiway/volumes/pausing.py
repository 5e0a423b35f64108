"""Holding a started machine still while its volume is copied, so the snapshot is one
moment of its data (as if the power went off then) rather than files copied at
different moments while the app kept writing.

The machine is frozen the way `suspend` freezes it (the docker driver pauses the
container, the namespace driver freezes its cgroup, the process driver SIGSTOPs its
process group) but its state stays ``started``: the edge keeps routing to it and
requests wait the few moments the copy takes, instead of an autostart resuming it
half-way. Its log says when it was paused and resumed, and the store records a
``volume_snapshot`` event for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from taxiway.runtime.app import AppRuntime
from taxiway.runtime.drivers.base import MachineProcess
from taxiway.runtime.lifecycle import State
from taxiway.state.records import VolumeRecord

#: How long to wait for every process of a SIGSTOPped machine to be stopped.
_SETTLE_S = 2.0


@contextlib.asynccontextmanager
async def machine_paused(runtime: AppRuntime, volume: VolumeRecord) -> AsyncIterator[str | None]:
    """Freeze the started machine the volume is attached to for the body; yields its id
    (None when no machine of this daemon runs with it: the copy is then of a volume
    nobody writes to, or, for a machine that is starting, crash-consistent)."""
    machine = runtime.machines.get(volume.attached_machine_id or "")
    process = machine.process if machine is not None else None
    if machine is None or process is None or machine.state is not State.STARTED:
        yield None
        return
    machine.log.system(f"paused for a snapshot of volume {volume.id} ({volume.name})")
    process.freeze()
    try:
        await _settled(process)
        yield machine.id
    finally:
        process.thaw()
        machine.log.system(f"resumed after the snapshot of volume {volume.id}")


async def _settled(process: MachineProcess) -> None:
    """Until the machine is really still: a SIGSTOP is delivered asynchronously (a
    process in the middle of a write finishes it first), and a cgroup v2 freeze is done
    when its ``cgroup.events`` says so. (The engine's pause returns once it is done.)"""
    from taxiway.runtime.drivers.handle import ProcessHandle

    if not isinstance(process, ProcessHandle):
        return
    cgroup = getattr(process, "cgroup", None)  # the namespace driver's
    unified = cgroup.dirs.get("unified") if cgroup is not None else None

    def still() -> bool:
        frozen = unified is not None and _frozen(unified / "cgroup.events")
        return frozen or not _running_in_group(process.pgid)

    deadline = time.monotonic() + _SETTLE_S
    while not still() and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


def _frozen(events: Path) -> bool:
    """Whether a cgroup v2 freeze is complete (False when there is no such file)."""
    try:
        return "frozen 1" in events.read_text()
    except OSError:
        return False


def _running_in_group(pgid: int) -> bool:
    """Whether a process of the group is not (yet) stopped."""
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("T", "t", "Z", "X"):
            return True
    return False
