"""What a deploy waits for after it starts a machine (FLY-SEMANTICS.md §4.3, §6.2).

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
