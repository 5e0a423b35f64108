"""Where the dashboard's charts come from: one small interface, two sources.

`chart_source` picks one; swapping sources is that one function. Each source's `sample`
runs once per metrics tick, for all clients together (in a worker thread when the source
says ``in_thread``: reading /proc takes milliseconds the edge shouldn't wait), and
returns one point::

    {"t": unix seconds,
     "services": {"<service>": {"rps": float, "errors_per_s": float,
                                "p50_ms": float | None, "p99_ms": float | None}} | None,
     "services_unavailable": "why" | None,
     "machines": {"<machine id>": {"memory_mb": float, "cpu_pct": float}}}

- `RegistrySource`: `taxiway.metrics.snapshot(runtime)`, when that module is present
  (the daemon's Prometheus metrics). Counters there are cumulative, as in Prometheus;
  rates are the difference between two samples.
- `ProcSource`: what taxiway can measure without it: each machine's memory (resident set)
  and CPU, summed over its process tree from /proc. No request figures: the charts say
  "metrics unavailable" for services.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ChartSource(Protocol):
    #: Whether `sample` may run in a worker thread (else on the event loop).
    in_thread: bool

    def sample(self) -> dict[str, Any]: ...


def chart_source(runtime: AppRuntime) -> ChartSource:
    """The daemon's metrics registry when this build has one, else /proc."""
    try:
        from taxiway.metrics import snapshot  # type: ignore[attr-defined]
    except ImportError:
        return ProcSource(runtime)
    return RegistrySource(runtime, snapshot)


# -- /proc ---------------------------------------------------------------------------------


class ProcStat:
    """One process as /proc/<pid>/stat tells it."""

    __slots__ = ("cpu_s", "pid", "ppid", "rss_bytes")

    def __init__(self, pid: int, ppid: int, cpu_s: float, rss_bytes: int) -> None:
        self.pid = pid
        self.ppid = ppid
        self.cpu_s = cpu_s
        self.rss_bytes = rss_bytes


def read_processes(proc: str = "/proc") -> dict[int, ProcStat]:
    """Every process on the host: one pass over /proc (a few ms for hundreds)."""
    found = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as file:
                raw = file.read()
        except OSError:
            continue  # gone meanwhile
        # the command name (field 2) may hold spaces and parentheses: split after it
        fields = raw[raw.rfind(b")") + 2 :].split()
        try:
            ppid = int(fields[1])
            cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS
            rss = int(fields[21]) * _PAGE
        except (IndexError, ValueError):
            continue
        found[int(name)] = ProcStat(int(name), ppid, cpu_s, rss)
    return found


def tree_totals(root: int, processes: dict[int, ProcStat]) -> tuple[float, int]:
    """CPU seconds and resident bytes of ``root`` and everything it started."""
    children: dict[int, list[int]] = {}
    for stat in processes.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    cpu, rss, todo, seen = 0.0, 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in processes:
            continue
        seen.add(pid)
        cpu += processes[pid].cpu_s
        rss += processes[pid].rss_bytes
        todo.extend(children.get(pid, ()))
    return cpu, rss


class ProcSource:
    """Machines' memory and CPU from their process trees; no service figures."""

    #: It only reads /proc and copies the machines' pids (a list() of a dict, atomic
    #: under the GIL): safe beside the loop.
    in_thread = True

    def __init__(
        self, runtime: AppRuntime, read: Callable[[], dict[int, ProcStat]] = read_processes
    ) -> None:
        self.runtime = runtime
        self.read = read
        self._last: dict[str, tuple[float, float]] = {}  # machine → (wall, cpu seconds)

    def sample(self) -> dict[str, Any]:
        now = time.time()
        pids = [(m.id, m.info.pid) for m in list(self.runtime.machines.values())]
        processes = self.read() if any(pid for _, pid in pids) else {}
        machines: dict[str, dict[str, float]] = {}
        last, self._last = self._last, {}
        for machine_id, pid in pids:
            if not pid or pid not in processes:
                machines[machine_id] = {"memory_mb": 0.0, "cpu_pct": 0.0}
                continue
            cpu_s, rss = tree_totals(pid, processes)
            self._last[machine_id] = (now, cpu_s)
            previous = last.get(machine_id)
            pct = 0.0
            if previous is not None and now > previous[0] and cpu_s >= previous[1]:
                pct = 100.0 * (cpu_s - previous[1]) / (now - previous[0])
            machines[machine_id] = {"memory_mb": round(rss / 2**20, 1), "cpu_pct": round(pct, 1)}
        return {
            "t": now,
            "services": None,
            "services_unavailable": "metrics unavailable: this build has no taxiway.metrics",
            "machines": machines,
        }


# -- taxiway.metrics -----------------------------------------------------------------------


class RegistrySource:
    """Rates from `taxiway.metrics.snapshot(runtime)`, which answers::

        {"services": {"<service>": {"requests": cumulative count,
                                    "errors": cumulative count (5xx),
                                    "p50_s": seconds | None, "p99_s": seconds | None}},
         "machines": {"<machine id>": {"memory_bytes": int, "cpu_seconds": cumulative}}}

    A snapshot of another shape, or one that fails, leaves the service charts "metrics
    unavailable" with the reason and falls back to /proc for the machines.

    Called on the event loop: the registry follows the runtime, which belongs to the loop.
    """

    in_thread = False

    def __init__(self, runtime: AppRuntime, snapshot: Callable[[Any], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.runtime = runtime
        self.fallback = ProcSource(runtime)
        self._last: tuple[float, dict[str, Any]] | None = None

    def sample(self) -> dict[str, Any]:
        now = time.time()
        try:
            data = self.snapshot(self.runtime)
            services = _service_rates(data.get("services") or {}, now, self._last)
            machines = _machine_figures(data.get("machines") or {}, now, self._last)
        except Exception as exc:  # another helper's module: never let it stop the charts
            point = self.fallback.sample()
            point["services_unavailable"] = f"metrics unavailable: {type(exc).__name__}: {exc}"
            return point
        self._last = (now, data)
        return {"t": now, "services": services, "services_unavailable": None, "machines": machines}


def _rate(now: float, last: tuple[float, dict] | None, path: Iterable[str], value: float) -> float:
    if last is None or now <= last[0]:
        return 0.0
    previous: Any = last[1]
    for key in path:
        previous = previous.get(key) if isinstance(previous, dict) else None
    if not isinstance(previous, int | float) or value < previous:
        return 0.0  # first sight, or a counter reset (a new daemon)
    return (value - previous) / (now - last[0])


def _ms(seconds: Any) -> float | None:
    return round(float(seconds) * 1000, 2) if isinstance(seconds, int | float) else None


def _service_rates(
    services: dict[str, Any], now: float, last: tuple[float, dict] | None
) -> dict[str, dict[str, float | None]]:
    out = {}
    for name, figures in services.items():
        requests = float(figures.get("requests") or 0)
        errors = float(figures.get("errors") or 0)
        out[str(name)] = {
            "rps": round(_rate(now, last, ("services", name, "requests"), requests), 2),
            "errors_per_s": round(_rate(now, last, ("services", name, "errors"), errors), 2),
            "p50_ms": _ms(figures.get("p50_s")),
            "p99_ms": _ms(figures.get("p99_s")),
        }
    return out


def _machine_figures(
    machines: dict[str, Any], now: float, last: tuple[float, dict] | None
) -> dict[str, dict[str, float]]:
    out = {}
    for machine_id, figures in machines.items():
        cpu = float(figures.get("cpu_seconds") or 0)
        pct = 100.0 * _rate(now, last, ("machines", machine_id, "cpu_seconds"), cpu)
        out[str(machine_id)] = {
            "memory_mb": round(float(figures.get("memory_bytes") or 0) / 2**20, 1),
            "cpu_pct": round(pct, 1),
        }
    return out
