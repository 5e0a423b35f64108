"""Autostop: the excess-capacity rule by table, and rounds over a `StaticFleet` on a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from taxiway.config.loader import load_config
from taxiway.edge.autostop import (
    DEFAULT_INTERVAL_S,
    Autostop,
    AutostopService,
    excess_machines,
    services_from_specs,
)
from taxiway.edge.fleet import Member, StaticFleet
from taxiway.plan.machine import plan_machines

PERIOD = 60.0
T = TypeVar("T")


def machine(machine_id: str, group: str = "app", state: str = "started", **kw: Any) -> Member:
    return Member(id=machine_id, group=group, state=state, host="127.0.0.1", **kw)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- the rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loads", "soft_limit", "min_running", "protected", "expected"),
    [
        ({}, 20, 0, (), []),
        # a single machine stops only without any load
        ({"a": 0}, 20, 0, (), ["a"]),
        ({"a": 1}, 20, 0, (), []),
        ({"a": 0}, 20, 1, (), []),
        # several: excess = running - (over soft_limit + 1)
        ({"a": 0, "b": 0}, 20, 0, (), ["a"]),
        ({"a": 5, "b": 0}, 20, 0, (), ["b"]),
        ({"a": 20, "b": 0}, 20, 0, (), []),
        ({"a": 0, "b": 0, "c": 0}, 20, 0, (), ["a", "b"]),
        ({"a": 25, "b": 3, "c": 0}, 20, 0, (), ["c"]),
        ({"a": 25, "b": 25, "c": 0}, 20, 0, (), []),
        ({"a": 19, "b": 19, "c": 19, "d": 19}, 20, 0, (), ["a", "b", "c"]),
        ({"a": 1, "b": 0}, 1, 0, (), []),
        # min_machines_running is a floor
        ({"a": 0, "b": 0, "c": 0}, 20, 2, (), ["a"]),
        ({"a": 0, "b": 0, "c": 0}, 20, 3, (), []),
        ({"a": 0, "b": 0}, 20, 5, (), []),
        # protected machines count but are never picked
        ({"a": 0, "b": 0, "c": 0}, 20, 0, ("a",), ["b", "c"]),
        ({"a": 0, "b": 0}, 20, 0, ("a", "b"), []),
        ({"a": 0}, 20, 0, ("a",), []),
        ({"a": 0, "b": 9}, 20, 0, ("a",), ["b"]),
    ],
)
def test_excess_machines(
    loads: dict[str, int],
    soft_limit: int,
    min_running: int,
    protected: tuple[str, ...],
    expected: list[str],
) -> None:
    members = [machine(i) for i in loads]
    chosen = excess_machines(members, loads, soft_limit, min_running, protected=protected)
    assert [m.id for m in chosen] == expected


# --- rounds ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = PERIOD) -> None:
        self.now += seconds


class Setup:
    """A fleet, its loads, a clock and an `Autostop` over them."""

    def __init__(self, members: list[Member], *services: AutostopService) -> None:
        self.fleet = StaticFleet("app", members)
        self.loads: dict[str, int] = {}
        self.clock = Clock()
        self.notes: list[str] = []
        services = services or (AutostopService(groups=("app",), internal_port=8080, mode="stop"),)
        self.autostop = Autostop(
            self.fleet,
            list(services),
            load=lambda i: self.loads.get(i, 0),
            interval_s=PERIOD,
            clock=self.clock,
            log=self.notes.append,
        )

    def tick(self) -> list[str]:
        return run(self.autostop.tick())

    def states(self) -> dict[str, str]:
        return {m.id: m.state for g in ("app", "web", "api") for m in self.fleet.members(g)}


def test_idle_machines_stop_one_per_round_down_to_zero() -> None:
    s = Setup([machine("a"), machine("b"), machine("c")])
    assert s.tick() == []  # watched since now: not idle for a whole period yet
    s.clock.advance()
    assert s.tick() == ["a"]
    assert s.tick() == ["b"]
    assert s.tick() == ["c"]  # the last one: no load
    assert s.tick() == []
    assert s.states() == {"a": "stopped", "b": "stopped", "c": "stopped"}


def test_the_default_period_is_a_few_minutes() -> None:
    assert 60 <= DEFAULT_INTERVAL_S <= 600


def test_a_busy_single_machine_keeps_running() -> None:
    s = Setup([machine("a")])
    s.loads["a"] = 1
    s.clock.advance()
    assert s.tick() == []
    s.loads["a"] = 0  # the connection closes just after the round
    s.clock.advance()
    assert s.tick() == []  # it was still open when this period began
    s.clock.advance()
    assert s.tick() == ["a"]


def test_load_seen_during_the_period_counts_not_just_at_the_round() -> None:
    s = Setup([machine("a")])
    s.clock.advance(PERIOD / 2)
    s.loads["a"] = 3
    s.autostop.sample()
    s.loads["a"] = 0
    s.clock.advance(PERIOD / 2)
    assert s.tick() == []  # busy during this period
    s.clock.advance()
    assert s.tick() == ["a"]  # idle for the whole next one


def test_a_request_too_short_to_sample_counts() -> None:
    s = Setup([machine("a")])
    s.clock.advance()
    s.autostop.touch("a")
    assert s.tick() == []
    s.clock.advance()
    assert s.tick() == ["a"]


def test_load_over_soft_limit_keeps_capacity() -> None:
    service = AutostopService(groups=("app",), internal_port=8080, mode="stop", soft_limit=10)
    s = Setup([machine("a"), machine("b"), machine("c")], service)
    s.loads.update(a=12, b=4, c=0)
    s.clock.advance()
    assert s.tick() == ["c"]  # excess = 3 - (1 + 1) = 1, the least loaded goes
    assert s.tick() == []  # excess = 2 - (1 + 1) = 0
    assert s.states()["b"] == "started"


def test_suspend_suspends() -> None:
    service = AutostopService(groups=("app",), internal_port=8080, mode="suspend")
    s = Setup([machine("a")], service)
    s.clock.advance()
    assert s.tick() == ["a"]
    assert s.states() == {"a": "suspended"}


def test_off_never_stops() -> None:
    service = AutostopService(groups=("app",), internal_port=8080, mode="off")
    s = Setup([machine("a"), machine("b")], service)
    for _ in range(3):
        s.clock.advance()
        assert s.tick() == []
    run(asyncio.wait_for(s.autostop.run(), 1))  # nothing to do: returns at once


def test_min_machines_running_counts_every_group_of_the_service() -> None:
    service = AutostopService(
        groups=("web", "api"), internal_port=8080, mode="stop", min_machines_running=2
    )
    s = Setup([machine("w1", "web"), machine("a1", "api"), machine("a2", "api")], service)
    s.clock.advance()
    assert s.tick() == ["a1"]
    assert s.tick() == []
    assert s.states() == {"w1": "started", "a1": "stopped", "a2": "started"}


def test_machines_not_started_or_failing_checks_are_left_alone() -> None:
    members = [
        machine("a"),
        machine("b", passing={8080: False}),
        machine("c", state="stopped"),
        machine("d", state="suspended"),
        machine("e", state="starting"),
    ]
    service = AutostopService(
        groups=("app",), internal_port=8080, mode="stop", min_machines_running=1
    )
    s = Setup(members, service)
    s.clock.advance()
    assert s.tick() == []  # only "a" is routable, and one must keep running
    s2 = Setup([machine("a"), machine("b", passing={8080: False})])
    s2.clock.advance()
    assert s2.tick() == ["a"]
    assert s2.tick() == []
    assert s2.states()["b"] == "started"


def test_a_restarted_machine_gets_a_whole_period_again() -> None:
    s = Setup([machine("a")])
    s.clock.advance()
    assert s.tick() == ["a"]
    s.clock.advance(5)
    run(s.fleet.start("a"))  # autostart: a request arrived
    s.clock.advance(PERIOD - 10)
    assert s.tick() == []
    s.clock.advance(10)
    assert s.tick() == ["a"]


def test_the_most_restrictive_mode_wins_and_every_minimum_holds() -> None:
    http = AutostopService(groups=("app",), internal_port=8080, mode="stop")
    admin = AutostopService(groups=("app",), internal_port=9000, mode="suspend")
    s = Setup([machine("a"), machine("b")], http, admin)
    s.clock.advance()
    assert s.tick() == ["a"]
    assert s.states()["a"] == "suspended"

    keep = AutostopService(groups=("app",), internal_port=9000, mode="stop", min_machines_running=1)
    s = Setup([machine("a")], http, keep)
    s.clock.advance()
    assert s.tick() == []


def test_a_failed_stop_is_logged_and_the_loop_goes_on() -> None:
    s = Setup([machine("a")])

    async def broken(machine_id: str, *, suspend: bool = False) -> None:
        raise RuntimeError("driver gone")

    s.fleet.stop = broken  # type: ignore[method-assign]
    s.clock.advance()
    assert s.tick() == []
    assert s.notes == ["autostop: could not stop machine a: driver gone"]


def test_destroyed_machines_are_forgotten() -> None:
    s = Setup([machine("a"), machine("b")])
    s.autostop.sample()
    s.fleet._members = [m for m in s.fleet._members if m.id != "b"]
    s.fleet.changed()
    s.autostop.sample()
    assert set(s.autostop._since) == {"a"}


def test_run_stops_an_idle_machine() -> None:
    fleet = StaticFleet("app", [machine("a")])
    service = AutostopService(groups=("app",), internal_port=8080, mode="stop")
    autostop = Autostop(fleet, [service], load=lambda _: 0, interval_s=0.02)

    async def main() -> None:
        stopped = asyncio.Event()
        fleet.subscribe(lambda: stopped.set() if fleet.members("app")[0].state != "started" else 0)
        task = asyncio.create_task(autostop.run())
        await asyncio.wait_for(stopped.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert fleet.members("app")[0].state == "stopped"


# --- from fly.toml --------------------------------------------------------------------


def test_services_from_the_plan(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(
        'app = "a"\n'
        '[processes]\nweb = "run web"\napi = "run api"\nworker = "run worker"\n'
        "[http_service]\ninternal_port = 8080\nprocesses = ['web', 'api']\n"
        'auto_stop_machines = "suspend"\nmin_machines_running = 1\n'
        "[http_service.concurrency]\nsoft_limit = 5\n"
        "[[services]]\ninternal_port = 9000\nprotocol = 'tcp'\nprocesses = ['api']\n"
        "[[services.ports]]\nport = 9000\n"
    )
    loaded = load_config(tmp_path / "fly.toml")
    specs = plan_machines(loaded.config, base_dir=tmp_path).values()
    services = services_from_specs(specs)
    assert {g for s in services for g in s.groups} == {"web", "api"}  # not worker
    assert sorted(services[0].groups) == ["api", "web"]
    assert [dataclasses.replace(services[0], groups=("web", "api")), services[1]] == [
        AutostopService(
            groups=("web", "api"),
            internal_port=8080,
            mode="suspend",
            min_machines_running=1,
            soft_limit=5,
        ),
        AutostopService(groups=("api",), internal_port=9000, mode="off"),
    ]
