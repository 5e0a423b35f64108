"""The runtime as the edge sees it: an `edge.fleet.Fleet` over the app's machines.

The edge reads routing targets from here and asks for machines to be started or
stopped (autostart/autostop); it never touches drivers. Members are rebuilt only when
a machine changes, so the edge's hot path reads a cached list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taxiway.checks.state import CheckStatus
from taxiway.config.units import duration_seconds
from taxiway.edge.fleet import Member
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.lifecycle import State
from taxiway.runtime.machine import SupervisedMachine


class RuntimeFleet:
    """`Fleet` over an `AppRuntime`."""

    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime
        self.app = runtime.app
        self.region = runtime.region
        self._callbacks: list[Callable[[], None]] = []
        self._by_group: dict[str, list[Member]] | None = None
        runtime.on_change.append(self._changed)

    def members(self, group: str) -> Sequence[Member]:
        if self._by_group is None:
            self._by_group = self._build()
        return self._by_group.get(group, ())

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    async def start(self, machine_id: str) -> None:
        machine = self.runtime.machines.get(machine_id)
        if machine is None:
            return
        if machine.state is State.SUSPENDED:
            await machine.resume()
        elif machine.state in (State.STOPPED, State.CREATED, State.FAILED):
            machine.log.system("autostart: a request arrived for a stopped machine")
            await machine.start()

    async def stop(self, machine_id: str, *, suspend: bool = False) -> None:
        machine = self.runtime.machines.get(machine_id)
        if machine is None or machine.state is not State.STARTED:
            return
        if suspend:
            machine.log.system("autostop: idle beyond min_machines_running; suspending")
            await machine.suspend()
        else:
            machine.log.system("autostop: idle beyond min_machines_running; stopping")
            await machine.stop()

    def _changed(self) -> None:
        self._by_group = None
        for callback in self._callbacks:
            callback()

    def _build(self) -> dict[str, list[Member]]:
        machines: dict[str, list[SupervisedMachine]] = {}
        for machine in sorted(self.runtime.machines.values(), key=lambda m: m.id):
            if machine.cordoned:
                continue  # a deploy keeps it out of routing (bluegreen green, test machine)
            if machine.id in self.runtime.api_machines and not machine.spec.services:
                continue  # the Machines API made it without services: nothing to route to it
            if machine.state is not State.DESTROYED:
                machines.setdefault(machine.info.group, []).append(machine)
        return {group: _members(found) for group, found in machines.items()}


def _members(machines: list[SupervisedMachine]) -> list[Member]:
    """Members of one group. A service port routes to machines whose checks pass; while
    none of the group's started machines has passed yet (just started, or scaled up, and
    not checked), those not yet checked take traffic rather than every client getting an
    error. A machine whose check failed (critical) never does."""
    statuses = [_port_statuses(m) for m in machines]
    ports = {port for found in statuses for port in found}
    proven = {
        port
        for m, found in zip(machines, statuses, strict=True)
        for port in ports
        if m.state is State.STARTED and found.get(port) is CheckStatus.PASSING
    }
    members = []
    for machine, found in zip(machines, statuses, strict=True):
        passing = {
            port: status is CheckStatus.PASSING
            or (status is CheckStatus.WARNING and port not in proven)
            for port, status in found.items()
        }
        members.append(member_of(machine, passing))
    return members


def _port_statuses(machine: SupervisedMachine) -> dict[int, CheckStatus]:
    checks = machine.checks
    if checks is None:
        return {}
    return {s.internal_port: checks.service_status(s.internal_port) for s in machine.spec.services}


def member_of(machine: SupervisedMachine, passing: dict[int, bool]) -> Member:
    info = machine.info
    state = info.state
    if machine.replacing and state in (State.STOPPING, State.STOPPED):
        state = State.REPLACING  # it comes back: the edge waits for it, never autostarts it
    return Member(
        id=info.id,
        group=info.group,
        state=state.value,
        host=info.host,
        ports=dict(info.ports),
        passing=passing,
        kill_timeout_s=duration_seconds(machine.spec.stop_config.timeout),
        replaced_at=machine.replaced_at,
    )
