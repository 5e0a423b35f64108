"""How a new release replaces the running one
(https://fly.io/docs/reference/configuration/#the-deploy-section).

- rolling (default): machines keep their ids and are updated in place (stop, new spec,
  start). Per group, started machines go first-one-alone, then at most
  ``max_unavailable`` at a time, each healthy before its slot is reused; stopped ones
  are updated alongside (30 at a time) and stay stopped.
- immediate: every machine at once (8 at a time), nothing waited for.
- canary: per group, a throwaway machine of the new release is started, verified
  (healthy, machine checks) and destroyed; then rolling. Refused with volumes.
- bluegreen: a green machine of the new release beside every blue one, not routable;
  once all greens are healthy they get traffic and the blues are drained, stopped and
  destroyed. Needs checks, refused with volumes; a failure destroys the greens.

`restore` is taxiway's rollback (on by default, ``--no-rollback`` or ``[experimental]
auto_rollback = false`` turn it off): the previous release goes back on the machines a
failed rolling, canary or immediate deploy updated, the broken ones first.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from taxiway.deploy.health import DeployFailed, label, wait_healthy
from taxiway.deploy.machine_checks import run_machine_checks
from taxiway.errors import TaxiwayError
from taxiway.plan.machine import MachineSpec
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.lifecycle import State
from taxiway.runtime.machine import SupervisedMachine
from taxiway.state.records import now

STRATEGIES = ("rolling", "immediate", "canary", "bluegreen")
DEFAULT_MAX_UNAVAILABLE = 0.33
#: Stopped machines updated at once in a rolling deploy (they serve nothing).
COLD_POOL = 30
#: Machines updated at once by immediate deploys and bluegreen launches (--max-concurrent).
MAX_CONCURRENT = 8
#: Process groups rolled at the same time.
MAX_GROUPS = 16


@dataclass
class Rollout:
    """One deploy's machines and what happened to them, for the strategy and a rollback."""

    runtime: AppRuntime
    version: int
    wait_timeout_s: float
    smoke_s: float
    max_unavailable: float
    progress: Callable[[str], None]
    #: Machines updated in place, in the order their updates began.
    updated: list[SupervisedMachine] = field(default_factory=list)
    #: Machines that passed their health wait on the new release.
    healthy: set[str] = field(default_factory=set)
    #: Whether each updated machine ran before its update (a rollback restores that).
    was_running: dict[str, bool] = field(default_factory=dict)
    #: Updated machines that were started and passing every check before their update:
    #: a rollback waits the full wait timeout for these only.
    healthy_before: set[str] = field(default_factory=set)
    #: The first failure: no new update starts after it.
    failure: BaseException | None = None
    #: Set with the first failure: waits in progress stop (the platform cancels them too).
    aborted: asyncio.Event = field(default_factory=asyncio.Event)

    def spec(self, group: str) -> MachineSpec:
        return self.runtime.specs[group]


def pool_size(max_unavailable: float, machines: int) -> int:
    """Machines down at once: a count when >= 1 (2.5 → 2), else a fraction of the group,
    rounded up (0.33 of 3 → 1, of 4 → 2), as flyctl computes it."""
    if max_unavailable >= 1:
        return int(max_unavailable)
    return max(1, math.ceil(machines * max_unavailable))


def refuse(strategy: str, specs: dict[str, MachineSpec]) -> None:
    """The platform's rules on what a strategy can deploy, checked before anything runs."""
    if strategy not in STRATEGIES:
        raise TaxiwayError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy in ("canary", "bluegreen"):
        with_volumes = [g for g, s in specs.items() if s.mounts]
        if with_volumes:
            raise TaxiwayError(
                f"the {strategy} strategy cannot be used for machines with volumes (group "
                f"{', '.join(with_volumes)} mounts one); use rolling or immediate"
            )
    if strategy == "bluegreen" and not any(
        s.checks or any(svc.checks for svc in s.services) for s in specs.values()
    ):
        raise TaxiwayError(
            "the bluegreen strategy needs at least one health check: add "
            "[[http_service.checks]], [[services.tcp_checks]], [[services.http_checks]] or [checks]"
        )


# -- updating one machine ------------------------------------------------------------------


async def update_one(r: Rollout, machine: SupervisedMachine, *, wait: bool = True) -> None:
    """Put the new release on one machine and (unless ``wait`` is off) wait until it is
    healthy. Skipped once another update failed; a failure is recorded and raised."""
    if r.failure is not None:
        return
    run = machine.runs_after_update()
    r.was_running[machine.id] = run
    if machine.state is State.STARTED and (machine.checks is None or machine.checks.all_passing()):
        r.healthy_before.add(machine.id)
    r.updated.append(machine)
    r.progress(f"updating {label(machine)}" + ("" if run else " (stays stopped)"))
    since = now()
    try:
        await r.runtime.update_machine(
            machine, r.spec(machine.info.group), release_version=r.version
        )
        if run and wait:
            await wait_healthy(
                r.runtime,
                machine,
                timeout_s=r.wait_timeout_s,
                smoke_s=r.smoke_s,
                progress=r.progress,
                since=since,
                abort=r.aborted,
            )
            r.progress(f"{label(machine)} is healthy on v{r.version}")
        if run and not wait and machine.state is State.FAILED:
            raise DeployFailed(f"{label(machine)} could not start")
    except BaseException as exc:
        if r.failure is None:
            r.failure = exc
            r.aborted.set()
        raise
    r.healthy.add(machine.id)


async def _lane(
    machines: list[SupervisedMachine],
    size: int,
    one: Callable[[SupervisedMachine], Awaitable[None]],
) -> None:
    """The first machine alone ("spearhead"), then the rest ``size`` at a time, a slot
    freed only when its machine is done (healthy)."""
    if not machines:
        return
    await one(machines[0])
    slots = asyncio.Semaphore(size)

    async def bounded(machine: SupervisedMachine) -> None:
        async with slots:
            await one(machine)

    await _all(bounded(m) for m in machines[1:])


async def _all(coros: object) -> None:
    """Run every coroutine to its end, then raise the first error (none is left running
    half-way, so a rollback finds every machine settled)."""
    results = await asyncio.gather(*coros, return_exceptions=True)  # type: ignore[misc]
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _bounded_all(coros: list[Awaitable[None]], size: int) -> None:
    slots = asyncio.Semaphore(size)

    async def bounded(coro: Awaitable[None]) -> None:
        async with slots:
            await coro

    await _all(bounded(c) for c in coros)


# -- strategies -----------------------------------------------------------------------------


async def rolling(r: Rollout, groups: dict[str, list[SupervisedMachine]]) -> None:
    async def group(machines: list[SupervisedMachine]) -> None:
        warm = [m for m in machines if m.state is State.STARTED]
        cold = [m for m in machines if m.state is not State.STARTED]
        size = pool_size(r.max_unavailable, len(warm))
        await _all(
            [
                _lane(cold, min(len(cold), COLD_POOL) or 1, lambda m: update_one(r, m)),
                _lane(warm, size, lambda m: update_one(r, m)),
            ]
        )

    await _bounded_all([group(machines) for machines in groups.values()], MAX_GROUPS)


async def immediate(r: Rollout, groups: dict[str, list[SupervisedMachine]]) -> None:
    machines = [m for ms in groups.values() for m in ms]
    await _bounded_all([update_one(r, m, wait=False) for m in machines], MAX_CONCURRENT)


async def canary(r: Rollout, groups: dict[str, list[SupervisedMachine]]) -> None:
    """One canary per group that has machines (a first deploy has none to compare), then
    rolling."""
    for group in groups:
        await canary_check(r, r.spec(group))
    await rolling(r, groups)


async def canary_check(r: Rollout, spec: MachineSpec) -> None:
    runtime = r.runtime
    machine = runtime.create_machine(
        spec, release_version=r.version, metadata={"fly_canary": "true"}
    )
    r.progress(f"group {spec.group}: canary {machine.id} of v{r.version}")
    since = now()
    try:
        await machine.start()
        await wait_healthy(
            runtime,
            machine,
            timeout_s=r.wait_timeout_s,
            smoke_s=r.smoke_s,
            progress=r.progress,
            since=since,
        )
        await run_machine_checks(runtime, machine, timeout_s=r.wait_timeout_s, progress=r.progress)
        r.progress(f"canary {machine.id} is healthy; destroying it")
    finally:
        await runtime.remove_machine(machine)


async def bluegreen(r: Rollout, groups: dict[str, list[SupervisedMachine]]) -> None:
    runtime = r.runtime
    pairs: list[tuple[SupervisedMachine, SupervisedMachine]] = []
    tag = f"v{r.version}"
    for group, blues in groups.items():
        for blue in blues:
            green = runtime.create_machine(
                r.spec(group),
                release_version=r.version,
                cordoned=True,
                metadata={"fly_bluegreen_deployment_tag": tag},
            )
            pairs.append((blue, green))
    r.progress(f"created {len(pairs)} green machine(s) of v{r.version} beside the blue ones")
    try:
        starting = _greens_to_start(pairs)
        size = min(max(1, math.ceil(len(starting) / 3)), MAX_CONCURRENT)
        await _bounded_all([green.start() for green in starting], size)
        await _all(
            wait_healthy(
                runtime, green, timeout_s=r.wait_timeout_s, smoke_s=r.smoke_s, progress=r.progress
            )
            for green in starting
        )
    except BaseException:
        r.progress(f"destroying the {len(pairs)} green machine(s); the blue ones keep serving")
        await _all(runtime.remove_machine(green) for _, green in pairs)
        raise
    r.progress("every green machine is healthy: switching traffic to them")
    for _, green in pairs:
        green.set_cordoned(False)
    for blue, _ in pairs:
        blue.set_cordoned(True)
    r.progress(f"draining, stopping and destroying {len(pairs)} blue machine(s)")
    await _bounded_all([runtime.remove_machine(blue) for blue, _ in pairs], MAX_CONCURRENT)


def _greens_to_start(
    pairs: list[tuple[SupervisedMachine, SupervisedMachine]],
) -> list[SupervisedMachine]:
    """Greens take their blue's started/stopped state, but in a group with checks at
    least one green starts, so the new release is proven healthy."""
    starting = [green for blue, green in pairs if blue.runs_after_update()]
    groups_started = {g.info.group for g in starting}
    for _, green in pairs:
        spec = green.spec
        has_checks = spec.checks or any(s.checks for s in spec.services)
        if has_checks and green.info.group not in groups_started:
            starting.append(green)
            groups_started.add(green.info.group)
    return starting


RUN: dict[str, Callable[[Rollout, dict[str, list[SupervisedMachine]]], Awaitable[None]]] = {
    "rolling": rolling,
    "immediate": immediate,
    "canary": canary,
    "bluegreen": bluegreen,
}


# -- rollback -------------------------------------------------------------------------------


@dataclass
class Restored:
    """What a rollback (`restore`) did."""

    #: Machines that run the previous release again.
    restored: list[SupervisedMachine] = field(default_factory=list)
    #: Of those, the ones back but not healthy: they were not healthy before the deploy
    #: either (failing, or not checked yet), and did not pass within two check runs.
    unhealthy: list[SupervisedMachine] = field(default_factory=list)
    #: Sentences of the restores that failed.
    problems: list[str] = field(default_factory=list)


async def restore(
    r: Rollout, previous_specs: dict[str, MachineSpec], previous_version: int
) -> Restored:
    """Put the previous release back on every machine the deploy updated, as a rolling
    update: first the ones not serving (crashed, unhealthy, stopped) all at once, then the
    healthy ones ``max_unavailable`` at a time, so capacity dips no more than the deploy
    allowed. The runtime must already carry the previous config (`apply_config`).

    A machine healthy before the deploy is waited for up to the wait timeout, and counts
    as not restored if it doesn't get healthy. One that wasn't (failing its checks, or
    not checked yet) gets until its checks ran twice: one that was going to pass does,
    one that was failing before is back as it was, without the wait timeout spent on it."""
    done = Restored()

    async def back(machine: SupervisedMachine) -> None:
        run = r.was_running.get(machine.id, False)
        proven = machine.id in r.healthy_before
        try:
            await r.runtime.update_machine(
                machine,
                previous_specs[machine.info.group],
                release_version=previous_version,
                start=run,
            )
            if run:
                timeout_s = r.wait_timeout_s
                if not proven and machine.checks is not None:
                    timeout_s = min(timeout_s, machine.checks.second_run_within_s())
                await wait_healthy(
                    r.runtime, machine, timeout_s=timeout_s, smoke_s=0.0, progress=None
                )
        except DeployFailed as exc:
            if proven or machine.state is State.FAILED:
                done.problems.append(str(exc))
                return
            done.unhealthy.append(machine)
        except TaxiwayError as exc:
            done.problems.append(str(exc))
            return
        done.restored.append(machine)

    broken = [m for m in r.updated if m.id not in r.healthy and m.state is not State.DESTROYED]
    working = [m for m in r.updated if m.id in r.healthy and m.state is not State.DESTROYED]
    await _all(back(m) for m in broken)
    by_group: dict[str, list[SupervisedMachine]] = {}
    for machine in working:
        by_group.setdefault(machine.info.group, []).append(machine)
    await _all(_lane(ms, pool_size(r.max_unavailable, len(ms)), back) for ms in by_group.values())
    return done
