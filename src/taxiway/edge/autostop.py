"""Autostop: the platform's stop loop, run by the edge
(https://fly.io/docs/reference/fly-proxy-autostop-autostart/).

Every few minutes the proxy looks at a service's running machines and, if the app has
excess capacity, stops (or suspends) **one** of them per region per pass:

- more than one running: ``excess = running − (over_soft_limit + 1)``; one is stopped
  when ``excess ≥ 1``;
- exactly one running: it is stopped only when its load is 0;
- never below ``min_machines_running`` (the primary region's count; every local machine
  is in the primary region), which only matters when ``auto_stop_machines`` is on.

The period is unconfirmed ("every few minutes"); taxiway uses 5 minutes, and
``taxiway up --autostop-after`` shortens it. One region here, so one machine per round
for the whole app.

What "idle" means here: the platform looks at load at the moment of the pass. taxiway
asks for a whole idle period instead, so a machine isn't stopped a moment after a burst,
or right after autostart woke it:

- a machine's load for a round is the **peak** over the period, from the previous round
  on (the load is sampled between rounds, and `touch` counts a request too short to be
  sampled), so a connection still open at the previous round keeps it for one more;
- a machine that has not been running for a whole period yet counts toward capacity but
  is not stopped this round.

Only machines that are started and pass the service's checks count; a failing machine
is left to its checks and restart policy. With several services on a group the most
restrictive setting wins (off < stop < suspend), and a stop must keep every service that
covers the machine at its ``min_machines_running``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from taxiway.edge.fleet import Fleet, Member
from taxiway.plan.machine import DEFAULT_SOFT_LIMIT, MachineSpec

#: The platform's "every few minutes" (exact period unconfirmed).
DEFAULT_INTERVAL_S = 300.0
#: How often the load is sampled between rounds (or a third of a shorter period).
SAMPLE_S = 1.0

Mode = Literal["off", "stop", "suspend"]
_RANK: dict[str, int] = {"off": 0, "stop": 1, "suspend": 2}


@dataclass(frozen=True, slots=True)
class AutostopService:
    """One service's autostop settings, over every group it is on."""

    groups: tuple[str, ...]
    internal_port: int
    mode: Mode = "off"
    min_machines_running: int = 0
    soft_limit: int = DEFAULT_SOFT_LIMIT


def services_from_specs(specs: Iterable[MachineSpec]) -> list[AutostopService]:
    """One `AutostopService` per fly.toml service, however many groups it is planned for."""
    merged: dict[tuple[str, int], AutostopService] = {}
    for spec in specs:
        for svc in spec.services:
            key = (svc.source, svc.internal_port)
            known = merged.get(key)
            if known is None:
                merged[key] = AutostopService(
                    groups=(spec.group,),
                    internal_port=svc.internal_port,
                    mode=svc.autostop,
                    min_machines_running=svc.min_machines_running,
                    soft_limit=svc.concurrency.soft_limit,
                )
            elif spec.group not in known.groups:
                merged[key] = AutostopService(
                    groups=(*known.groups, spec.group),
                    internal_port=known.internal_port,
                    mode=known.mode,
                    min_machines_running=known.min_machines_running,
                    soft_limit=known.soft_limit,
                )
    return list(merged.values())


def excess_machines(
    members: Sequence[Member],
    loads: Mapping[str, int],
    soft_limit: int,
    min_running: int,
    *,
    protected: Collection[str] = (),
) -> list[Member]:
    """The running ``members`` the service can do without, the one to stop first first.

    ``protected`` machines count toward capacity but are never picked. Only machines
    below ``soft_limit`` are picked, the least loaded first (then by id, to be
    predictable).
    """
    running = len(members)
    room = running - max(min_running, 0)
    if running == 0 or room <= 0:
        return []
    if running == 1:
        excess = 1 if loads.get(members[0].id, 0) == 0 else 0
    else:
        over = sum(1 for m in members if loads.get(m.id, 0) >= soft_limit)
        excess = running - (over + 1)
    excess = min(excess, room)
    if excess <= 0:
        return []
    spare = [m for m in members if m.id not in protected and loads.get(m.id, 0) < soft_limit]
    spare.sort(key=lambda m: (loads.get(m.id, 0), m.id))
    return spare[:excess]


class Autostop:
    """Stops or suspends idle machines of the services with ``auto_stop_machines`` on."""

    def __init__(
        self,
        fleet: Fleet,
        services: list[AutostopService],
        *,
        load: Callable[[str], int],
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.fleet = fleet
        self.services = [s for s in services if _RANK.get(s.mode, 0) > 0]
        self.interval_s = interval_s
        self._load = load
        self._clock = clock
        self._log = log or (lambda _message: None)
        self._groups = sorted({g for s in self.services for g in s.groups})
        #: machine id -> when it was first seen started (since it last started).
        self._since: dict[str, float] = {}
        #: machine id -> the highest load seen since the last round.
        self._peak: dict[str, int] = {}
        if self.services:
            fleet.subscribe(self._changed)
            self.sample()  # the first period starts now

    async def run(self) -> None:
        """Sample load and run a round every ``interval_s``, until cancelled."""
        if not self.services:
            return
        step = min(SAMPLE_S, self.interval_s / 3)
        due = self._clock() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, min(step, due - self._clock())))
            if self._clock() >= due:
                await self.tick()
                due = self._clock() + self.interval_s
            else:
                self.sample()

    def sample(self) -> None:
        """Note which machines run and their load now (peaks are kept until the round)."""
        now = self._clock()
        running = {m.id for m in self._members() if m.state == "started"}
        for gone in (self._since.keys() | self._peak.keys()) - running:
            self._forget(gone)
        for machine_id in running:
            self._since.setdefault(machine_id, now)
            self._peak[machine_id] = max(self._peak.get(machine_id, 0), self._load(machine_id))

    def touch(self, machine_id: str) -> None:
        """A request or connection went to the machine: it was not idle this period."""
        if self._peak.get(machine_id, 0) < 1:
            self._peak[machine_id] = 1

    async def tick(self) -> list[str]:
        """One round: stop or suspend at most one machine; returns the ids stopped."""
        if not self.services:
            return []
        self.sample()
        try:
            victim = self._choose()
            if victim is None:
                return []
            member, mode = victim
            try:
                await self.fleet.stop(member.id, suspend=mode == "suspend")
            except Exception as e:  # a machine the runtime can't stop must not end the loop
                self._log(f"autostop: could not {mode} machine {member.id}: {e}")
                return []
            return [member.id]
        finally:
            self._peak.clear()
            self.sample()

    def _choose(self) -> tuple[Member, Mode] | None:
        now = self._clock()
        for service in self.services:
            members = self._routable(service)
            protected = {
                m.id for m in members if now - self._since.get(m.id, now) < self.interval_s
            }
            loads = {m.id: self._peak.get(m.id, 0) for m in members}
            for candidate in excess_machines(
                members,
                loads,
                service.soft_limit,
                service.min_machines_running,
                protected=protected,
            ):
                if self._keeps_minimums(candidate):
                    return candidate, self._mode(candidate)
        return None

    def _routable(self, service: AutostopService) -> list[Member]:
        seen: dict[str, Member] = {}
        for group in dict.fromkeys(service.groups):
            for member in self.fleet.members(group):
                if member.routable(service.internal_port):
                    seen.setdefault(member.id, member)
        return list(seen.values())

    def _keeps_minimums(self, member: Member) -> bool:
        """Whether every service covering ``member`` keeps its minimum without it."""
        for service in self.services:
            if member.group not in service.groups or not member.routable(service.internal_port):
                continue
            if len(self._routable(service)) - 1 < service.min_machines_running:
                return False
        return True

    def _mode(self, member: Member) -> Mode:
        modes = [s.mode for s in self.services if member.group in s.groups]
        return max(modes, key=_RANK.__getitem__)

    def _members(self) -> list[Member]:
        return [m for group in self._groups for m in self.fleet.members(group)]

    def _changed(self) -> None:
        """A machine that stopped starts a new period when it runs again."""
        for member in self._members():
            if member.state != "started":
                self._forget(member.id)
            else:
                self._since.setdefault(member.id, self._clock())

    def _forget(self, machine_id: str) -> None:
        self._since.pop(machine_id, None)
        self._peak.pop(machine_id, None)
