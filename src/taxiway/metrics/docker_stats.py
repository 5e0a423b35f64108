"""The docker driver's machine resources, from the engine's stats API.

The container's processes may live in a pid namespace this host's ``/proc`` doesn't
show (a remote or rootless engine), so the engine is asked instead. It takes about a
second to answer, so the stats are refreshed in the background (with the custom-metrics
scrapes, `taxiway.metrics.scraper`) and ``/metrics`` reads the last answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taxiway.metrics.instance import Usage
    from taxiway.runtime.app import AppRuntime


class DockerStats:
    """The last stats the engine gave for each machine's main container."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}

    async def refresh(self, runtime: AppRuntime) -> None:
        from taxiway.runtime.drivers.engine_scope import container_name

        started = {
            m.id: container_name(runtime.scope, m.id)
            for m in runtime.machines.values()
            if m.state.value == "started"
        }
        found = await asyncio.gather(
            *(asyncio.to_thread(_stats, name) for name in started.values())
        )
        self.last = {mid: s for mid, s in zip(started, found, strict=True) if s is not None}

    def fill(self, machine_id: str, usage: Usage) -> None:
        stats = self.last.get(machine_id)
        if stats is None:
            return
        memory = stats.get("memory_stats") or {}
        if "usage" in memory:
            detail = memory.get("stats") or {}
            cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
            usage.mem_usage = float(memory["usage"])
            usage.mem_used = float(max(memory["usage"] - cache, 0))
            if memory.get("limit") and memory["limit"] < 1 << 62:
                usage.mem_total = float(memory["limit"])
        cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
        if "usage_in_usermode" in cpu:  # nanoseconds
            usage.cpu_user = cpu["usage_in_usermode"] / 1e7
            usage.cpu_system = cpu.get("usage_in_kernelmode", 0) / 1e7
        networks = stats.get("networks")
        if networks:
            usage.net = {
                device: {
                    "recv_bytes": float(n.get("rx_bytes", 0)),
                    "recv_packets": float(n.get("rx_packets", 0)),
                    "recv_errs": float(n.get("rx_errors", 0)),
                    "recv_drop": float(n.get("rx_dropped", 0)),
                    "sent_bytes": float(n.get("tx_bytes", 0)),
                    "sent_packets": float(n.get("tx_packets", 0)),
                    "sent_errs": float(n.get("tx_errors", 0)),
                    "sent_drop": float(n.get("tx_dropped", 0)),
                }
                for device, n in networks.items()
            }


def _stats(name: str) -> dict[str, Any] | None:
    from taxiway.image.engine import client

    with contextlib.suppress(Exception):  # the engine or the container went away
        return client().api.stats(name, stream=False)
    return None
