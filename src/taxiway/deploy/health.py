"""What a deploy waits for after it starts a machine (https://fly.io/docs/reference/health-checks/;
flyctl `internal/machine/leasable_machine.go`).

The platform waits for ``started``, then smoke checks (the machine must not crash for
10 s), then every configured check (service and top-level) ``passing``, each bounded by
``wait_timeout``. taxiway knows about an exit the moment it happens, so it watches for a
crash during the whole wait, and ``smoke_s`` is only the least time a machine is watched
(0 with ``--no-smoke-checks``). A machine without checks counts as healthy once started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.lifecycle import State
from taxiway.runtime.machine import SupervisedMachine
from taxiway.state.records import now as wall_clock

#: The platform's smoke-check window: a new machine must not crash for this long.
SMOKE_WINDOW_S = 10.0


class DeployFailed(TaxiwayError):
    """A deploy step failed; the message says which machine and why."""


def label(machine: SupervisedMachine) -> str:
    return f"machine {machine.id} ({machine.info.group})"


def crash_reason(machine: SupervisedMachine) -> str | None:
    """Why the machine counts as crashed (an exit with a non-zero code, a failed launch),
    or None. A clean exit (code 0) is not a crash, as on the platform: a machine without
    checks that exits 0 (a one-shot worker) lets the deploy go on."""
    info = machine.info
    if info.state is State.FAILED:
        return "could not start"
    if info.state in (State.STOPPED, State.STARTING) and info.exit_code not in (None, 0):
        return f"crashed (exit code {info.exit_code})"
    return None


def last_output(machine: SupervisedMachine, since: str, n: int = 10) -> list[str]:
    """The machine's last lines since ``since`` (its output and the runtime's notes)."""
    return [entry.line for entry in machine.log.read_entries() if entry.ts >= since][-n:]


async def wait_healthy(
    runtime: AppRuntime,
    machine: SupervisedMachine,
    *,
    timeout_s: float,
    smoke_s: float,
    progress: Callable[[str], None] | None = None,
    since: str | None = None,
    abort: asyncio.Event | None = None,
) -> None:
    """Return once the machine is started, has not crashed for ``smoke_s`` and passes
    every check; raise `DeployFailed` on a crash, when ``timeout_s`` runs out or once
    ``abort`` is set (another machine failed). A failure shows the machine's output since
    ``since`` (its update began; default: now)."""
    since = since or wall_clock()
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    runtime.on_change.append(changed.set)
    began = loop.time()
    try:
        while True:
            if abort is not None and abort.is_set():
                raise DeployFailed(f"{label(machine)}: the wait was cut short by a failure")
            checks = machine.checks
            reason = crash_reason(machine)
            if reason is None and machine.state is State.STOPPED:
                if checks is None:
                    return  # a clean exit (code 0): the platform's deploy moves on too
                reason = "stopped (exit code 0) before its checks passed"
            elif reason is None and machine.state not in (State.STARTED, State.STARTING):
                reason = f"is {machine.state.value}"
            if reason is not None:
                _show_output(machine, progress, since)
                raise DeployFailed(f"{label(machine)} {reason}")
            passing = machine.state is State.STARTED and (checks is None or checks.all_passing())
            now = loop.time()
            if passing and now >= began + smoke_s:
                return
            if not passing and now >= began + timeout_s:
                _show_output(machine, progress, since)
                raise DeployFailed(f"{label(machine)} {_not_healthy(machine, timeout_s)}")
            wake = began + (smoke_s if passing else timeout_s)
            changed.clear()
            await _either(changed, abort, max(0.0, wake - now))
    finally:
        runtime.on_change.remove(changed.set)


async def _either(changed: asyncio.Event, abort: asyncio.Event | None, timeout_s: float) -> None:
    """Until a machine changed, ``abort`` is set or ``timeout_s`` passed."""
    waiters = {asyncio.ensure_future(changed.wait())}
    if abort is not None:
        waiters.add(asyncio.ensure_future(abort.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _not_healthy(machine: SupervisedMachine, timeout_s: float) -> str:
    if machine.state is not State.STARTED:
        return f"did not start within the wait timeout ({timeout_s:g}s)"
    failing = []
    if machine.checks is not None:
        failing = [
            f"{s.name} is {s.status.value}"
            for s in machine.checks.states()
            if s.status.value != "passing"
        ]
    return (
        f"did not pass its checks within the wait timeout ({timeout_s:g}s): "
        f"{', '.join(failing) or 'no result yet'}; raise it with --wait-timeout or "
        "[deploy] wait_timeout"
    )


def _show_output(
    machine: SupervisedMachine, progress: Callable[[str], None] | None, since: str
) -> None:
    if progress is None:
        return
    for line in last_output(machine, since):
        progress(f"  {machine.id} | {line}")


async def wait_serving(
    runtime: AppRuntime, *, timeout_s: float, progress: Callable[[str], None]
) -> None:
    """What `up -d` waits for before it returns: every started machine with service
    checks has passed its checks once (`wait_healthy`, without the smoke window), and
    every machine with a service has been looked at for where it listens (its hint).
    Raises `TaxiwayError` with one sentence for the first machine that crashes or does
    not pass within ``timeout_s``; the app keeps running either way."""
    from taxiway.config.units import format_duration_ns

    machines = [
        m
        for m in runtime.machines.values()
        if m.state in (State.STARTED, State.STARTING, State.STOPPED)
        and m.checks is not None
        and any(s.checks for s in m.spec.services)
    ]
    abort = asyncio.Event()
    failed: list[tuple[SupervisedMachine, DeployFailed]] = []

    async def one(machine: SupervisedMachine) -> None:
        try:
            await wait_healthy(runtime, machine, timeout_s=timeout_s, smoke_s=0.0, abort=abort)
        except DeployFailed as exc:
            if not abort.is_set():
                abort.set()
                failed.append((machine, exc))
            return
        progress(f"{label(machine)} passes its checks")

    if machines:
        count = (
            "1 machine to pass its"
            if len(machines) == 1
            else f"{len(machines)} machines to pass their"
        )
        progress(
            f"waiting for {count} checks (timeout {format_duration_ns(round(timeout_s * 1e9))})..."
        )
        await asyncio.gather(*(one(m) for m in machines))
    await runtime.port_verdicts(list(runtime.machines.values()))
    if failed:
        machine, exc = failed[0]
        raise TaxiwayError(_unhealthy_sentence(machine, exc))
    unchecked = [m for m in runtime.machines.values() if m.spec.services and m not in machines]
    await _settle_crashes(runtime, unchecked, timeout_s)


async def _settle_crashes(
    runtime: AppRuntime, machines: list[SupervisedMachine], timeout_s: float
) -> None:
    """Machines with a service (and no checks) that crashed since `up` and were never
    seen serving: wait while their restart policy restarts them, until each serves, or
    raise the one sentence for the first that keeps crashing (it won't be restarted, or
    it crashed a second time). One crash the policy recovers from (a port taken for a
    moment) doesn't fail `up -d`; a healthy app returns at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        troubled = [
            m
            for m in machines
            if not runtime.seen_serving(m) and (crash_reason(m) or m.info.restarts > 0)
        ]
        for machine in troubled:
            info, reason = machine.info, crash_reason(machine)
            if info.state is State.FAILED or (reason and not info.backoff_s) or info.restarts >= 2:
                raise TaxiwayError(_crashed_sentence(machine, reason or "keeps crashing"))
        if not troubled or loop.time() > deadline:
            return
        await asyncio.sleep(0.2)


def _crashed_sentence(machine: SupervisedMachine, reason: str) -> str:
    """A machine with a service (and no checks to wait for) that crashed while `up -d`
    looked at it: which, how, its last line, and where the rest is."""
    output = [
        entry.line for entry in machine.log.read_entries() if entry.stream != "system"
    ]
    said = f"; its last output: {output[-1]}" if output else ""
    hints = "".join(f"; {hint}" for hint in machine.info.hints)
    return (
        f"{label(machine)} {reason} right after it started{said}{hints}; the app keeps "
        f"running and restarts it by its restart policy; see `taxiway logs --machine "
        f"{machine.id}`"
    )


def _unhealthy_sentence(machine: SupervisedMachine, exc: DeployFailed) -> str:
    """Why `up -d`'s wait failed: the machine and what happened, its first check not
    passing and that check's last output, the machine's port hint, what to do next."""
    text = str(exc)
    states = machine.checks.states() if machine.checks is not None else []
    failing = [s for s in states if s.status.value != "passing"]
    if failing:
        check = failing[0]
        text += f"; the last output of check {check.name}: {check.output or '(none)'}"
    for hint in machine.info.hints:
        text += f"; {hint}"
    return f"{text}; the app keeps running; see `taxiway checks list`"
