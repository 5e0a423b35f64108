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
  (the daemon's Prometheus metrics, counted by the edge). Counters there are totals, as
  in Prometheus; rates and the latency quantiles come from the difference between two
  snapshots.
- `ProcSource`: what taxiway can measure without it: each machine's memory (resident set)
  and CPU, summed over its process tree from /proc. No request figures: the charts say
  "metrics unavailable" for services.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
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
    """Rates from `taxiway.metrics.snapshot(runtime)`, which answers (counters are totals
    since the daemon started, read at ``at``)::

        {"at": unix seconds, "bounds": [latency bucket upper bounds, seconds],
         "services": [{"service": name, "requests": total, "errors": total (5xx),
                       "latency_buckets": [count per bucket, +Inf last],
                       "p50_s": seconds | None, "p99_s": seconds | None}, ...],
         "machines": [{"id": machine id, "memory_bytes": int | None,
                       "cpu_seconds": total | None}, ...]}

    Rates are the difference of two snapshots over their time apart; p50/p99 come from
    the difference of the latency buckets (the last tick's requests), else the snapshot's
    own figures. A snapshot that fails, or of another shape, leaves the service charts
    "metrics unavailable" with the reason, and the machines' from /proc.

    Called on the event loop: the edge's counters and the runtime belong to it.
    """

    in_thread = False

    def __init__(self, runtime: AppRuntime, snapshot: Callable[[Any], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.runtime = runtime
        self.fallback = ProcSource(runtime)
        self._last: tuple[float, dict[str, Any]] | None = None

    def sample(self) -> dict[str, Any]:
        try:
            data = self.snapshot(self.runtime)
            now = float(data.get("at") or time.time())
            bounds = [float(b) for b in data.get("bounds") or ()]
            services = _by_key(data.get("services"), "service")
            machines = _by_key(data.get("machines"), "id")
            last = self._last
            point = {
                "t": now,
                "services": _service_rates(services, bounds, now, last),
                "services_unavailable": None,
                "machines": _machine_figures(machines, now, last),
            }
        except Exception as exc:  # another module's answer: never let it stop the charts
            point = self.fallback.sample()
            point["services_unavailable"] = f"metrics unavailable: {type(exc).__name__}: {exc}"
            return point
        self._last = (now, {"services": services, "machines": machines})
        return point


def _by_key(items: Any, key: str) -> dict[str, dict[str, Any]]:
    """A list of records (or a mapping already) as a mapping by ``key``."""
    if isinstance(items, dict):
        return {str(k): v for k, v in items.items()}
    return {str(item[key]): item for item in items or ()}


def _previous(last: tuple[float, dict] | None, *path: str) -> Any:
    value: Any = last[1] if last is not None else None
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _rate(now: float, last: tuple[float, dict] | None, path: tuple[str, ...], value: Any) -> float:
    previous = _previous(last, *path)
    if (
        last is None
        or now <= last[0]
        or not isinstance(value, int | float)
        or not isinstance(previous, int | float)
        or value < previous  # a counter reset (a new daemon)
    ):
        return 0.0
    return (value - previous) / (now - last[0])


def _window_quantile(counts: list[int], bounds: list[float], q: float) -> float | None:
    """The ``q`` quantile of one window's bucket counts, interpolated within its bucket
    (as Prometheus's histogram_quantile); None without requests."""
    total = sum(counts)
    if not total or not bounds:
        return None
    rank, running, lower = q * total, 0, 0.0
    for i, n in enumerate(counts):
        if i >= len(bounds):
            return bounds[-1]
        if n and running + n >= rank:
            return lower + (bounds[i] - lower) * (rank - running) / n
        running += n
        lower = bounds[i]
    return bounds[-1]


def _ms(seconds: Any) -> float | None:
    return round(float(seconds) * 1000, 2) if isinstance(seconds, int | float) else None


def _service_rates(
    services: dict[str, dict[str, Any]],
    bounds: list[float],
    now: float,
    last: tuple[float, dict] | None,
) -> dict[str, dict[str, float | None]]:
    out = {}
    for name, figures in services.items():
        p50, p99 = figures.get("p50_s"), figures.get("p99_s")  # over the daemon's life
        buckets = figures.get("latency_buckets")
        if isinstance(buckets, list) and bounds:  # over the last tick: what a chart shows
            before = _previous(last, "services", name, "latency_buckets")
            p50 = p99 = None  # no requests since the last tick: no latency to draw
            if isinstance(before, list) and len(before) == len(buckets):
                window = [max(0, int(a) - int(b)) for a, b in zip(buckets, before, strict=True)]
                p50, p99 = (_window_quantile(window, bounds, q) for q in (0.5, 0.99))
        out[name] = {
            "rps": round(_rate(now, last, ("services", name, "requests"),
                               figures.get("requests")), 2),
            "errors_per_s": round(_rate(now, last, ("services", name, "errors"),
                                        figures.get("errors")), 2),
            "p50_ms": _ms(p50),
            "p99_ms": _ms(p99),
        }
    return out


def _machine_figures(
    machines: dict[str, dict[str, Any]], now: float, last: tuple[float, dict] | None
) -> dict[str, dict[str, float | None]]:
    out = {}
    for machine_id, figures in machines.items():
        memory = figures.get("memory_bytes")
        cpu = figures.get("cpu_seconds")
        out[machine_id] = {
            "memory_mb": round(memory / 2**20, 1) if isinstance(memory, int | float) else None,
            "cpu_pct": round(100.0 * _rate(now, last, ("machines", machine_id, "cpu_seconds"),
                                           cpu), 1) if cpu is not None else None,
        }
    return out
