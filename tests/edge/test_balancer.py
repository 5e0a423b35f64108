"""Choosing machines: least-loaded, soft and hard limits, autostart, checks, drain, force."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from taxiway.edge.balancer import Balancer, NoMachine
from taxiway.edge.fleet import Member, StaticFleet
from taxiway.edge.limits import Limits
from taxiway.plan.machine import Concurrency, ServiceSpec

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def machine(machine_id: str, state: str = "started", **kw: Any) -> Member:
    return Member(id=machine_id, group="app", state=state, host="127.0.0.1", **kw)


def service(soft: int = 20, hard: int | None = None, autostart: bool = True) -> ServiceSpec:
    return ServiceSpec(
        protocol="tcp",
        internal_port=8080,
        ports=[],
        concurrency=Concurrency(type="requests", soft_limit=soft, hard_limit=hard),
        autostart=autostart,
    )


class CountingFleet(StaticFleet):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.starts: list[str] = []

    async def start(self, machine_id: str) -> None:
        self.starts.append(machine_id)
        await asyncio.sleep(0.01)
        await super().start(machine_id)


def balancer(members: list[Member], *, limits: Limits | None = None, **kw: Any) -> Balancer:
    fleet = CountingFleet("demo", members)
    b = Balancer(fleet, ["app"], service(**kw), draining=set(), limits=limits or Limits())
    fleet.subscribe(b.changed)
    return b


def test_least_loaded_first_and_ties_spread() -> None:
    b = balancer([machine("a"), machine("b"), machine("c")])
    b.take("a")
    b.take("a")
    b.take("b")
    assert b.try_take().id == "c"  # type: ignore[union-attr]
    assert b.load == {"a": 2, "b": 1, "c": 1}
    picked = set()
    for _ in range(60):
        m = b.try_take()
        assert m is not None
        picked.add(m.id)
        b.release(m.id)
    assert picked == {"b", "c"}  # a tie between the two least loaded, broken at random


def test_hard_limit_is_never_exceeded_and_a_freed_slot_is_handed_on() -> None:
    async def main() -> None:
        b = balancer([machine("a")], hard=2)
        assert b.try_take() is not None and b.try_take() is not None
        assert b.try_take() is None
        waiter = asyncio.ensure_future(b.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        b.release("a")
        assert (await waiter).id == "a"
        assert b.load == {"a": 2}

    run(main())


def test_waiting_at_the_hard_limit_ends_in_a_503() -> None:
    async def main() -> None:
        b = balancer([machine("a")], hard=1, limits=Limits(queue_timeout_s=0.05))
        b.take("a")
        with pytest.raises(NoMachine) as err:
            await b.acquire()
        assert err.value.status == 503 and "hard_limit (1)" in err.value.reason

    run(main())


def test_autostart_when_every_running_machine_is_over_soft_limit() -> None:
    async def main() -> None:
        b = balancer([machine("a"), machine("b", state="stopped")], soft=1)
        fleet: CountingFleet = b.fleet  # type: ignore[assignment]
        first = b.try_take()
        assert first is not None and first.id == "a"
        assert b.try_take() is None  # a is at soft_limit and b can start: the slow path
        got = await asyncio.gather(b.acquire(), b.acquire())
        assert {m.id for m in got} <= {"a", "b"} and "b" in {m.id for m in got}
        assert fleet.starts == ["b"]  # one start, shared

    run(main())


def test_suspended_machines_are_woken_first() -> None:
    async def main() -> None:
        b = balancer([machine("a", state="stopped"), machine("b", state="suspended")])
        assert (await b.acquire()).id == "b"

    run(main())


def test_without_autostart_stopped_machines_are_an_error() -> None:
    async def main() -> None:
        b = balancer([machine("a", state="stopped")], autostart=False)
        with pytest.raises(NoMachine) as err:
            await b.acquire()
        assert "auto_start_machines is false" in err.value.reason
        b2 = balancer([])
        with pytest.raises(NoMachine) as err:
            await b2.acquire()
        assert "no machines" in err.value.reason

    run(main())


def test_failing_checks_keep_a_machine_out_until_they_pass() -> None:
    """As the platform's PR01: with no healthy machine the client is answered at once
    rather than held; once the check passes the machine takes traffic again."""

    async def main() -> None:
        a = machine("a", passing={8080: False})
        b = balancer([a], limits=Limits(queue_timeout_s=5))
        assert b.try_take() is None
        with pytest.raises(NoMachine) as err:
            await asyncio.wait_for(b.acquire(), 10.0)  # at once, not after the 5 s queue
        assert "health checks are failing" in err.value.reason
        a.passing[8080] = True
        b.fleet.changed()  # type: ignore[attr-defined]
        assert (await b.acquire()).id == "a"

    run(main())


def test_a_machine_a_deploy_replaces_holds_requests_until_it_serves() -> None:
    """Draining, stopped and started again by a deploy (its first check not passed yet):
    the request waits rather than get a 503, and the machine is never autostarted."""

    async def main() -> None:
        a = machine("a", state="replacing")
        b = balancer([a], limits=Limits(queue_timeout_s=10))
        b.draining.add("a")
        b.changed()
        held = asyncio.ensure_future(b.acquire())
        await asyncio.sleep(0.05)
        assert not held.done()
        b.draining.discard("a")
        a.state, a.passing, a.replaced_at = "started", {8080: False}, time.monotonic()
        b.fleet.changed()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert not held.done()  # booting after the update: its check fails at first
        a.passing[8080] = True
        b.fleet.changed()  # type: ignore[attr-defined]
        assert (await asyncio.wait_for(held, 5.0)).id == "a"
        assert b.fleet.starts == []  # type: ignore[attr-defined]

    run(main())


def test_draining_machines_get_nothing_new() -> None:
    b = balancer([machine("a"), machine("b")])
    b.draining.add("a")
    b.changed()
    assert {b.try_take().id for _ in range(10)} == {"b"}  # type: ignore[union-attr]


def test_force_and_prefer() -> None:
    async def main() -> None:
        b = balancer([machine("a"), machine("b", state="stopped")])
        assert (await b.acquire(force="b")).id == "b"  # started for it
        with pytest.raises(NoMachine) as err:
            await b.acquire(force="zz")
        assert "zz does not exist" in err.value.reason
        b.draining.add("a")
        b.changed()
        assert (await b.acquire(prefer="a")).id == "b"  # falls back

    run(main())


def test_on_take_sees_every_routed_machine() -> None:
    b = balancer([machine("a")])
    seen: list[str] = []
    b.on_take = seen.append
    b.try_take()
    run(b.acquire())
    assert seen == ["a", "a"]
