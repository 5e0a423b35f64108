"""The metrics as JSON data, for the dashboard: per service, the counts a request rate,
error rate and latency quantiles come from; per machine, memory and CPU.

Counters are totals since the daemon started, with the time they were read (``at``):
a rate is the difference of two snapshots over their time apart. The latency buckets
are given too, so quantiles over a window come from two snapshots' difference
(`quantile`); ``p50_s``/``p99_s`` are over the daemon's whole life.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taxiway.metrics.edge_counts import TIME_BOUNDS, Buckets

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram with `TIME_BOUNDS` buckets (not
    cumulative, +Inf last), interpolated within its bucket as Prometheus's
    ``histogram_quantile`` does; None without observations."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    running = 0
    lower = 0.0
    for i, n in enumerate(counts):
        upper = TIME_BOUNDS[i] if i < len(TIME_BOUNDS) else TIME_BOUNDS[-1]
        if running + n >= rank and n:
            if i == len(TIME_BOUNDS):
                return TIME_BOUNDS[-1]  # beyond the last bound: its bound, as Prometheus
            return lower + (upper - lower) * (rank - running) / n
        running += n
        lower = upper
    return TIME_BOUNDS[-1]


def snapshot(runtime: AppRuntime) -> dict[str, Any]:
    """``{"at", "bounds", "services": [...], "machines": [...]}``; see the module."""
    hub = runtime.metrics
    edge = hub.edge() if hub is not None else None
    services = []
    load: dict[str, int] = {}
    if edge is not None:
        load = edge.stats()["load"]
        edge.counts.settle()
        for site in edge.counts.sites.values():
            by_status: dict[int, int] = {}
            latency = Buckets()
            for m in site.machines.values():
                for status, t in m.statuses.items():
                    by_status[status] = by_status.get(status, 0) + sum(t.edge)
                    for i, n in enumerate(t.edge):
                        latency.counts[i] += n
                    latency.total += t.edge_sum
            for status, local in site.local.items():
                by_status[status] = by_status.get(status, 0) + local.count()
                latency.add(local)
            services.append(
                {
                    "service": site.service,
                    "requests": sum(by_status.values()),
                    "errors": sum(n for s, n in by_status.items() if s >= 500),
                    "responses": {str(s): n for s, n in sorted(by_status.items())},
                    "latency_buckets": list(latency.counts),
                    "p50_s": quantile(latency.counts, 0.5),
                    "p99_s": quantile(latency.counts, 0.99),
                    "connections": site.tcp_connects - site.tcp_disconnects,
                    "bytes_in": site.data_in,
                    "bytes_out": site.data_out,
                }
            )
    machines = []
    for machine in list(runtime.machines.values()):
        info = machine.info
        if info.state.value == "destroyed":
            continue
        entry: dict[str, Any] = {
            "id": machine.id,
            "group": info.group,
            "state": info.state.value,
            "concurrency": load.get(machine.id, 0),
            "memory_bytes": None,
            "memory_total_bytes": None,
            "cpu_seconds": None,
        }
        if hub is not None and info.state.value == "started":
            usage = hub.instances.measure(machine)
            entry["memory_bytes"] = usage.mem_used
            entry["memory_total_bytes"] = usage.mem_total
            if usage.cpu_user is not None:
                entry["cpu_seconds"] = (usage.cpu_user + (usage.cpu_system or 0)) / 100
        machines.append(entry)
    return {
        "at": time.time(),
        "bounds": list(TIME_BOUNDS),
        "services": services,
        "machines": machines,
    }
