"""Choosing a machine for a connection or request, as the platform's proxy does (§3.1–3.3).

One `Balancer` per service (a ``[[services]]`` entry or ``[http_service]``), over the
machines of every group the service is for. It counts the load of each machine — open
connections, or in-flight requests for the http handler — and picks:

- the least-loaded routable machine (started, its service checks passing, not draining),
  ties broken at random; machines under ``soft_limit`` are therefore always preferred;
- never one at ``hard_limit``: the request waits for a slot (or a machine) up to
  ``Limits.queue_timeout_s``, then gets a 503, the platform's answer to sustained
  overload;
- with ``auto_start_machines``, when no machine runs or every running one is at or over
  ``soft_limit``, a stopped or suspended machine is started (one at a time: concurrent
  requests share the start) and the request goes to it.

`try_take` is the synchronous fast path (no task, no await) for the common case; `acquire`
is the whole algorithm. Every slot taken is given back with `release` exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable

from taxiway.edge.fleet import Fleet, Member
from taxiway.edge.limits import Limits
from taxiway.plan.machine import ServiceSpec

#: States a machine can be started (or resumed) from by a request.
STARTABLE = frozenset({"stopped", "suspended", "created"})
#: States after which a machine may soon take traffic: worth waiting for.
COMING = frozenset({"starting", "replacing"})


class NoMachine(Exception):
    """No machine can take this request; ``status`` and ``reason`` go to the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Balancer:
    """One service's machines (over all the groups it is for) and their load."""

    def __init__(
        self,
        fleet: Fleet,
        groups: Iterable[str],
        service: ServiceSpec,
        *,
        draining: set[str],
        limits: Limits,
    ) -> None:
        self.fleet = fleet
        self.groups = tuple(groups)
        self.service = service
        self.internal_port = service.internal_port
        self.soft_limit = service.concurrency.soft_limit
        self.hard_limit = service.concurrency.hard_limit or 0
        self.autostart = service.autostart
        self.limits = limits
        self.draining = draining
        #: machine id -> connections or requests in flight.
        self.load: dict[str, int] = {}
        self._members: list[Member] | None = None
        #: Routable, not draining members, and whether any could be started: `try_take`'s
        #: view, rebuilt after a change.
        self._candidates: tuple[list[Member], bool] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._starting: dict[str, asyncio.Task[None]] = {}
        #: machine id -> loop time until which a refused connection means "still booting".
        self.booting: dict[str, float] = {}
        #: Called with the machine id of every slot taken (autostop's "not idle").
        self.on_take: Callable[[str], None] | None = None

    # -- the machines ------------------------------------------------------------------------

    def members(self) -> list[Member]:
        members = self._members
        if members is None:
            members = [m for g in self.groups for m in self.fleet.members(g)]
            self._members = members
        return members

    def find(self, machine_id: str) -> Member | None:
        for m in self.members():
            if m.id == machine_id:
                return m
        return None

    def changed(self) -> None:
        """The fleet (or the draining set) changed: forget the cached members, let waiting
        requests look again."""
        self._members = None
        self._candidates = None
        self._wake(all_=True)

    def _refresh(self) -> tuple[list[Member], bool]:
        port = self.internal_port
        routable: list[Member] = []
        startable = False
        for m in self.members():
            if m.id in self.draining:
                continue
            if m.routable(port):
                routable.append(m)
            elif m.state in STARTABLE:
                startable = True
        self._candidates = (routable, startable and self.autostart)
        return self._candidates

    def describe(self) -> str:
        return " and ".join(f'"{g}"' for g in self.groups) or "no"

    # -- slots -------------------------------------------------------------------------------

    def take(self, machine_id: str) -> None:
        self.load[machine_id] = self.load.get(machine_id, 0) + 1
        if self.on_take is not None:
            self.on_take(machine_id)

    def release(self, machine_id: str) -> None:
        left = self.load[machine_id] - 1
        if left:
            self.load[machine_id] = left
        else:
            del self.load[machine_id]
        if self._waiters:
            self._wake()

    def _wake(self, *, all_: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_:
                    return

    # -- choosing ----------------------------------------------------------------------------

    def pick(self, exclude: Collection[str] = ()) -> tuple[Member | None, bool]:
        """(least-loaded routable machine under hard_limit or None, whether one could be
        started)."""
        port = self.internal_port
        hard = self.hard_limit
        load = self.load
        draining = self.draining
        best: Member | None = None
        best_load = 1 << 62
        ties = 0
        startable = False
        for m in self.members():
            mid = m.id
            if mid in draining or mid in exclude:
                continue
            if not m.routable(port):
                if m.state in STARTABLE:
                    startable = True
                continue
            n = load.get(mid, 0)
            if hard and n >= hard:
                continue
            if n < best_load:
                best, best_load, ties = m, n, 1
            elif n == best_load:
                ties += 1
                if random.random() * ties < 1.0:
                    best = m
        return best, startable

    def try_take(self) -> Member | None:
        """The fast path: a machine with its slot taken, or None when `acquire` must decide
        (nothing routable, or autostart is due)."""
        candidates, startable = self._candidates or self._refresh()
        load = self.load
        hard = self.hard_limit
        if len(candidates) == 1:  # one machine: no choosing, no ties
            only = candidates[0]
            n = load.get(only.id, 0)
            if (hard and n >= hard) or (startable and n >= self.soft_limit):
                return None
            load[only.id] = n + 1
            if self.on_take is not None:
                self.on_take(only.id)
            return only
        best: Member | None = None
        best_load = 1 << 62
        ties = 0
        for m in candidates:
            n = load.get(m.id, 0)
            if n < best_load:
                if hard and n >= hard:
                    continue
                best, best_load, ties = m, n, 1
            elif n == best_load:
                ties += 1
                if random.random() * ties < 1.0:
                    best = m
        if best is None or (startable and best_load >= self.soft_limit):
            return None
        mid = best.id
        load[mid] = best_load + 1
        if self.on_take is not None:
            self.on_take(mid)
        return best

    async def acquire(
        self,
        *,
        force: str | None = None,
        prefer: str | None = None,
        exclude: Collection[str] = (),
        timeout_s: float | None = None,
    ) -> Member:
        """A machine with a slot taken for the caller, or `NoMachine`.

        ``force`` is a machine id with no fallback (``fly-force-instance-id``, replays to an
        instance); ``prefer`` is tried first, then any machine.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.limits.queue_timeout_s if timeout_s is None else timeout_s)
        while True:
            if force is not None:
                member = await self._forced(force, deadline)
                if member is not None:
                    return member
            else:
                if prefer is not None and prefer not in exclude:
                    m = self.find(prefer)
                    if m is not None and self._available(m):
                        self.take(m.id)
                        return m
                best, startable = self.pick(exclude)
                if best is not None and not (
                    startable and self.autostart and self.load.get(best.id, 0) >= self.soft_limit
                ):
                    self.take(best.id)
                    return best
                if startable and self.autostart:
                    target = self._startable(exclude)
                    if target is not None:
                        try:
                            await self._start(target.id, deadline)
                        except NoMachine:
                            if best is None:
                                raise
                        best, _ = self.pick(exclude)
                        started = self.find(target.id)
                        if started is not None and self._available(started):
                            best = started
                        if best is not None:
                            self.take(best.id)
                            return best
                        continue
                if best is None and not self._worth_waiting(exclude):
                    raise NoMachine(503, self._why_none(exclude))
            if not await self._wait(deadline):
                raise NoMachine(503, self._why_waited())

    # -- helpers of acquire ------------------------------------------------------------------

    def _available(self, m: Member) -> bool:
        return (
            m.routable(self.internal_port)
            and m.id not in self.draining
            and not (self.hard_limit and self.load.get(m.id, 0) >= self.hard_limit)
        )

    async def _forced(self, machine_id: str, deadline: float) -> Member | None:
        m = self.find(machine_id)
        if m is None:
            raise NoMachine(503, f"machine {machine_id} does not exist or does not serve this port")
        if self._available(m):
            self.take(m.id)
            return m
        if m.state in STARTABLE and m.id not in self.draining:
            if not self.autostart:
                raise NoMachine(
                    503, f"machine {machine_id} is {m.state} and auto_start_machines is false"
                )
            await self._start(m.id, deadline)
            return None
        if m.state in COMING or m.state == "started":
            if not await self._wait(deadline):
                raise NoMachine(503, f"machine {machine_id} did not become available in time")
            return None
        raise NoMachine(503, f"machine {machine_id} is {m.state}")

    def _startable(self, exclude: Collection[str]) -> Member | None:
        """A machine to start; suspended ones first (resuming costs milliseconds)."""
        found = [
            m
            for m in self.members()
            if m.state in STARTABLE and m.id not in exclude and m.id not in self.draining
        ]
        found.sort(key=lambda m: (m.state != "suspended", m.id in self._starting))
        return found[0] if found else None

    async def _start(self, machine_id: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        task = self._starting.get(machine_id)
        if task is None:
            task = loop.create_task(self.fleet.start(machine_id))
            self._starting[machine_id] = task
            task.add_done_callback(lambda _t: self._starting.pop(machine_id, None))
            self.booting[machine_id] = loop.time() + self.limits.start_timeout_s
        remaining = max(0.0, min(deadline, self.booting[machine_id]) - loop.time())
        try:
            await asyncio.wait_for(asyncio.shield(task), remaining)
        except TimeoutError:
            raise NoMachine(
                503, f"machine {machine_id} did not start in time (autostart)"
            ) from None
        except Exception as exc:
            raise NoMachine(503, f"machine {machine_id} could not be started: {exc}") from exc
        self.changed()

    def is_booting(self, machine_id: str) -> bool:
        """Whether the machine was just started (by autostart, or again by a deploy's
        update) and may not listen yet: a refused connection is tried again."""
        now = asyncio.get_running_loop().time()
        until = self.booting.get(machine_id)
        if until is not None:
            if now < until:
                return True
            del self.booting[machine_id]
        m = self.find(machine_id)
        return (
            m is not None
            and m.replaced_at > 0.0
            and time.monotonic() < m.replaced_at + self.limits.start_timeout_s
        )

    def _worth_waiting(self, exclude: Collection[str]) -> bool:
        """Whether a machine may soon take traffic: at hard_limit, or booting (a deploy
        replacing it included). A started machine whose checks fail is not waited for
        (the client gets its 503 at once; the fleet already lets machines that were never
        checked take traffic), unless a deploy just started it: the platform's proxy, too,
        keeps retrying to find a machine before it gives up with PR03/PR04
        (https://fly.io/docs/reference/error-codes/)."""
        port = self.internal_port
        for m in self.members():
            if m.id in exclude:
                continue
            if m.state in COMING or m.id in self._starting:
                return True  # draining included: a deploy drains a machine it replaces
            if m.id in self.draining:
                continue
            if m.routable(port) or (m.state == "started" and self.is_booting(m.id)):
                return True
        return False

    def _why_none(self, exclude: Collection[str]) -> str:
        members = self.members()
        if not members:
            return f"no machines in process group {self.describe()} serve this port (PR01)"
        if all(m.id in exclude for m in members):
            return "every machine refused the connection (PC07)"
        if all(m.id in self.draining for m in members):
            return "every machine is stopping (PR01)"
        stopped = [m for m in members if m.state in STARTABLE]
        if stopped and not self.autostart:
            return "every machine is stopped and auto_start_machines is false (PR01)"
        port = self.internal_port
        if any(m.state == "started" and not m.routable(port) for m in members):
            return "no healthy machines: the service's health checks are failing (PR01)"
        states = ", ".join(sorted({m.state for m in members}))
        return f"no machine can take the request (machines are {states}) (PR01)"

    def _why_waited(self) -> str:
        waited = f"{self.limits.queue_timeout_s:g}s"
        port = self.internal_port
        members = self.members()
        if self.hard_limit and any(
            m.routable(port) and self.load.get(m.id, 0) >= self.hard_limit for m in members
        ):
            return (
                f"every machine is at its hard_limit ({self.hard_limit}) and none freed up "
                f"in {waited}"
            )
        if any(m.state == "started" and not m.routable(port) for m in members):
            return f"no machine passed its service checks within {waited} (PR01)"
        return f"no machine became ready within {waited} (PR01)"

    async def _wait(self, deadline: float) -> bool:
        """Wait for a slot or a change (at most a second: checks and states can change
        without a notification); False once the deadline has passed."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, min(remaining, 1.0))
        return True
