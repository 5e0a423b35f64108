"""Addresses for one-offs (release command, machine checks) in the machines' network.

A driver whose machines have a network of their own (namespace, docker) gives a
one-off an address of its own there, as the platform gives its temporary machines one:
from a few slots above the machines' addresses, so a one-off never takes a machine's.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from taxiway.runtime import netns
from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.environment import private_ip
from taxiway.runtime.scope import seed

T = TypeVar("T")


class OneoffSlots:
    """The one-offs running now, per scope, and the slot each holds."""

    def __init__(self) -> None:
        self._slots_lock = threading.Lock()
        #: (scope, machine id) -> its slot.
        self._oneoffs: dict[tuple[str, str], int] = {}

    def oneoff_address(self, spec: LaunchSpec, scope: str) -> LaunchSpec:
        """``spec`` with a free slot's address as its private IP and FLY_PRIVATE_IP."""
        with self._slots_lock:
            used = {slot for (s, _), slot in self._oneoffs.items() if s == scope}
            free = [slot for slot in range(netns.ONEOFF_SLOTS) if slot not in used]
            if not free:
                raise DriverError(
                    f"machine {spec.machine_id} ({spec.group}): {netns.ONEOFF_SLOTS} one-off "
                    "machines already run; wait for one to end"
                )
            self._oneoffs[(scope, spec.machine_id)] = free[0]
        address = private_ip(seed(scope), netns.ONEOFF_BASE + free[0])
        env = {**spec.env, "FLY_PRIVATE_IP": address}
        return msgspec.structs.replace(spec, private_ip=address, env=env)

    async def in_slot(
        self, spec: LaunchSpec, scope: str, launch: Callable[[LaunchSpec], Awaitable[T]]
    ) -> T:
        """``launch(spec)``, a one-off (no private IP yet) first given a slot's address,
        which is freed again when the launch fails."""
        if not spec.private_ip:
            spec = self.oneoff_address(spec, scope)
        try:
            return await launch(spec)
        except BaseException:
            self.free_oneoff(scope, spec.machine_id)
            raise

    def free_oneoff(self, scope: str, machine_id: str) -> None:
        """The one-off ended (or never started): its slot is free again."""
        with self._slots_lock:
            self._oneoffs.pop((scope, machine_id), None)

    def forget_oneoffs(self, scope: str) -> None:
        with self._slots_lock:
            for key in [key for key in self._oneoffs if key[0] == scope]:
                del self._oneoffs[key]
