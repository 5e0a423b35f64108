"""Waiting for a machine to reach a state, woken by the runtime's change callbacks (which
also let a destroyed machine's lease go).

The wait route (``GET …/wait``) must not poll: each machine change (`AppRuntime.on_change`)
wakes every waiter once, and each checks its own condition again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from taxiway.machines_api.leases import LEASES
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.lifecycle import State


class MachineChanges:
    """Wakes waiters on every change the runtime reports."""

    def __init__(self, runtime: AppRuntime) -> None:
        self._runtime = runtime
        self._changed = asyncio.Event()
        runtime.on_change.append(self._wake)

    def _wake(self) -> None:
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()
        if LEASES.held:  # a destroyed machine's lease goes with it
            LEASES.keep_only(
                {m.id for m in self._runtime.machines.values() if m.state is not State.DESTROYED}
            )

    async def until(self, reached: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until ``reached()``; returns whether it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not reached():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return reached()
        return True

    def close(self) -> None:
        if self._wake in self._runtime.on_change:
            self._runtime.on_change.remove(self._wake)
