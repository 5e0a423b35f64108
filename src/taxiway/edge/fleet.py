"""What the edge sees of the app's machines, and what it may ask of them.

The edge never spawns processes (that is the runtime's job): it reads `Member`s from a
`Fleet` and asks the fleet to start, resume, stop or suspend a machine. The daemon wires
the runtime in as the fleet; tests and benchmarks can use `StaticFleet` over real
backend servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Member:
    """One machine as a routing target."""

    id: str
    group: str
    #: The machine's lifecycle state (`taxiway.runtime.lifecycle.State` values).
    state: str
    #: Where the machine's ports are reached: 127.0.0.1 with the process driver, the
    #: machine's own address with the namespace driver.
    host: str
    #: internal_port -> the port to connect to on ``host``.
    ports: dict[int, int] = field(default_factory=dict)
    #: internal_port -> False while a service check on that port is failing.
    passing: dict[int, bool] = field(default_factory=dict)
    #: Seconds the edge gives in-flight requests when the machine is stopped (kill_timeout).
    kill_timeout_s: float = 5.0
    #: When (time.monotonic) a deploy's update started the machine again, 0.0 if never:
    #: for `Limits.start_timeout_s` after that it is booting, like a machine autostart
    #: started (requests wait for it; a refused connection is tried again).
    replaced_at: float = 0.0

    def address(self, internal_port: int) -> tuple[str, int]:
        return self.host, self.ports.get(internal_port, internal_port)

    def routable(self, internal_port: int) -> bool:
        """Started, and no check of this service is failing."""
        return self.state == "started" and self.passing.get(internal_port, True)


class Fleet(Protocol):
    app: str
    #: FLY_REGION of the machines (primary_region or "local"), for Fly-Region & co.
    region: str

    def members(self, group: str) -> Sequence[Member]:
        """The group's machines as they are now (not destroyed ones)."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after any machine changes state, address or check status."""
        ...

    async def start(self, machine_id: str) -> None:
        """Start (or resume) the machine; returns once its process runs."""
        ...

    async def stop(self, machine_id: str, *, suspend: bool = False) -> None:
        """Stop (or suspend) the machine, as autostop does."""
        ...


class StaticFleet:
    """A fleet of fixed members (backends the caller runs itself).

    `start`/`stop` only flip the member's state, so the edge's routing, autostart and
    autostop can be exercised against real servers without a runtime.
    """

    def __init__(self, app: str, members: Sequence[Member], region: str = "local") -> None:
        self.app = app
        self.region = region
        self._members = list(members)
        self._callbacks: list[Callable[[], None]] = []

    def members(self, group: str) -> Sequence[Member]:
        return [m for m in self._members if m.group == group]

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def changed(self) -> None:
        for callback in self._callbacks:
            callback()

    def set_state(self, machine_id: str, state: str) -> None:
        for member in self._members:
            if member.id == machine_id:
                member.state = state
        self.changed()

    async def start(self, machine_id: str) -> None:
        await asyncio.sleep(0)
        self.set_state(machine_id, "started")

    async def stop(self, machine_id: str, *, suspend: bool = False) -> None:
        await asyncio.sleep(0)
        self.set_state(machine_id, "suspended" if suspend else "stopped")
