"""Launching an app's machines before the daemon has an event loop.

`up -d` returns once every machine has started. Most of a daemon's start-up is
importing asyncio and what runs on it (~30 ms), and a machine needs none of that to
start: a process is forked the same way with or without a loop. So when nothing has
to be up before the machines, `up -d`'s daemon creates and launches them first
(`launch_early`), reports them started, and only then imports its machinery; the
runtime then takes each process over (`taxiway.runtime.app.AppRuntime.up`) as if it
had launched it. The processes, their records and their logs are the same either way.

"Nothing has to be up first" (`taxiway.daemon_startup.may_launch_first`) means: no
``release_command`` (it must succeed before any machine starts), nothing for the edge
(services, statics: their listeners must accept connections once `up -d` returns), no
top-level checks (their state is part of the report), and the process driver (the
namespace driver sets up networks and cgroups with the loop's help). Other apps start
as before.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import msgspec

from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.drivers.process import ProcessDriver
from taxiway.runtime.leftovers import process_start_time
from taxiway.runtime.lifecycle import State
from taxiway.runtime.roster import MachineInfo, MachineRoster, live_fields

if TYPE_CHECKING:
    from taxiway.runtime.drivers.handle import ProcessHandle


class EarlyMachine(msgspec.Struct, kw_only=True):
    """A machine `launch_early` created or took back, and launched."""

    info: MachineInfo
    launch: LaunchSpec
    #: Its main process; None when it could not be launched (``info.state`` is failed).
    process: subprocess.Popen[bytes] | None

    def supervised(self) -> ProcessHandle | None:
        """The process as the process driver's `launch` returns it, for the runtime to
        supervise (the loop must run by now)."""
        from taxiway.runtime.drivers.handle import ProcessHandle

        if self.process is None:
            return None
        return ProcessHandle(self.process, self.launch.log, self.launch.machine_id)


def launch_early(roster: MachineRoster, driver: ProcessDriver) -> list[EarlyMachine] | None:
    """Create the machines each group needs (taking back the ones the app had), and launch
    them. None, having done nothing, when some must be destroyed first (more than the
    stored count): that takes the runtime's stops and events, so the loop does it; the
    same when the app has machines the Machines API made (their spec is the API's).

    Every machine's launch spec (its volumes, its files) is made before the first one is
    launched, as the runtime does: one that can't be made (`TaxiwayError`) fails the
    start with nothing running."""
    roster.load_release()
    counts = roster.desired_counts()
    kept = roster.kept_machines()
    if any(sum(r.group == group for r in kept) > count for group, count in counts.items()):
        return None
    if any(r.api is not None for r in kept):  # Machines API machines: the runtime's to take
        return None
    infos: list[MachineInfo] = []
    for record in kept:
        infos.append(roster.taken_back(record, infos))
    for group, spec in roster.specs.items():
        for _ in range(counts[group] - sum(r.group == group for r in kept)):
            infos.append(roster.new_machine(spec, infos))
    launches = [
        roster.launch_spec(info, roster.specs[info.group], roster.log_for(info)) for info in infos
    ]
    return [
        _launch(roster, driver, info, launch) for info, launch in zip(infos, launches, strict=True)
    ]


def _launch(
    roster: MachineRoster, driver: ProcessDriver, info: MachineInfo, launch: LaunchSpec
) -> EarlyMachine:
    """What the runtime's supervision does for a start, up to the launch: the same states,
    events and log notes (`taxiway.runtime.machine.SupervisedMachine`)."""
    info = msgspec.structs.replace(info, state=State.STARTING, exit_code=None, backoff_s=0.0)
    roster.record_change(info, "start")
    try:
        process = driver.start(launch)
    except DriverError as exc:
        launch.log.system(str(exc))
        info = msgspec.structs.replace(info, state=State.FAILED)
        roster.record_change(info, "launch_failed")
        return EarlyMachine(info=info, launch=launch, process=None)
    info = msgspec.structs.replace(
        info,
        state=State.STARTED,
        pid=process.pid,
        pgid=process.pid,
        pid_start_time=process_start_time(process.pid),
    )
    # The row (pid and all) now, so a daemon killed before it supervises the process
    # leaves it for the next one to reap; the "started" event comes with supervision.
    roster.store.update_machine(info.id, **live_fields(info))
    return EarlyMachine(info=info, launch=launch, process=process)
