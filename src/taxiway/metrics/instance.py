"""``fly_instance_*``: each machine's state and resources, measured where the driver lets
us measure honestly.

- process driver: the machine's process group, read from ``/proc`` (RSS and CPU time of
  each process). It shares the host's network, so it has no ``fly_instance_net_*``.
  Processes that live and die between two scrapes are not seen, and RSS counts shared
  pages once per process.
- namespace driver: the machine's cgroup (memory usage less inactive file cache, as
  ``docker stats`` counts it; CPU from ``cpuacct``/``cpu.stat`` when the host has it,
  else its processes' times from ``/proc``), and its own network namespace's
  ``/proc/<pid>/net/dev``.
- docker driver: the engine's stats (`taxiway.metrics.docker_stats`, refreshed in the
  background: the engine takes a second to answer).

``fly_instance_memory_mem_total`` is the machine's memory (its cgroup's limit, else
[[vm]] memory), so ``mem_total - mem_available`` is what it uses, as on the platform.
The load average has no per-machine measure anywhere (a process tree or a cgroup has
none): ``fly_instance_load_average`` is the host's, and its HELP says so; likewise the
filesystem series describe the host filesystem holding the machine's root. CPU time
comes without a per-CPU split: ``cpu_id`` is ``"all"``, and only the ``user`` and
``system`` modes exist (a process tree has no idle time).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxiway.metrics import labels as std
from taxiway.metrics.families import family, sample

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime
    from taxiway.runtime.machine import SupervisedMachine

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


class Usage:
    """One machine's resources at one moment (None: not measured for its driver)."""

    def __init__(self) -> None:
        self.mem_total: float | None = None
        self.mem_used: float | None = None  # without reclaimable cache
        self.mem_usage: float | None = None  # with it
        self.cpu_user: float | None = None  # centiseconds
        self.cpu_system: float | None = None
        #: device -> {"recv_bytes": …, "sent_bytes": …, …}
        self.net: dict[str, dict[str, float]] | None = None
        self.root: str | None = None


class CpuLedger:
    """A monotonic CPU time for a set of processes that changes: the times of processes
    seen before and gone are kept, so the counter never goes back."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[float, float]] = {}
        self.gone_user = 0.0
        self.gone_system = 0.0

    def update(self, now: dict[int, tuple[float, float]]) -> tuple[float, float]:
        for pid, (user, system) in self.last.items():
            if pid not in now:
                self.gone_user += user
                self.gone_system += system
        self.last = now
        return (
            self.gone_user + sum(u for u, _ in now.values()),
            self.gone_system + sum(s for _, s in now.values()),
        )


class InstanceProbe:
    """Measures the machines of one runtime; keeps what must persist between scrapes."""

    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime
        self.ledgers: dict[str, CpuLedger] = {}
        #: The docker driver's stats, refreshed in the background (None: other drivers).
        self.docker: Any = None

    def families(self) -> Iterator[Any]:
        runtime = self.runtime
        app, region = runtime.app, runtime.region
        up = family("fly_instance_up", "1 while the machine runs", "gauge")
        exit_code = family(
            "fly_instance_exit_code", "The exit code of the machine's last run", "gauge"
        )
        oom = family(
            "fly_instance_exit_oom", "1 when the OOM killer ended the machine's last run", "gauge"
        )
        memory = {
            key: family(f"fly_instance_memory_{key}", doc, "gauge")
            for key, doc in (
                ("mem_total", "The machine's memory (its limit, else [[vm]] memory), bytes"),
                ("mem_free", "Memory not used by the machine, cache counted as used, bytes"),
                ("mem_available", "Memory the machine could still use, bytes"),
            )
        }
        cpu = family(
            "fly_instance_cpu",
            "CPU time of the machine's processes, centiseconds (cpu_id: no per-CPU split)",
            "counter",
        )
        load = family(
            "fly_instance_load_average",
            "The HOST's load average (a process tree or cgroup has none of its own)",
            "gauge",
        )
        net = {
            key: family(f"fly_instance_net_{key}", f"Network {key.replace('_', ' ')}", "counter")
            for key in _NET_KEYS
        }
        fs = {
            key: family(
                f"fly_instance_filesystem_{key}",
                f"{key.replace('_', ' ')} of the HOST filesystem holding the machine's root",
                "gauge",
            )
            for key in ("blocks", "block_size", "blocks_free", "blocks_avail")
        }
        loadavg = _loadavg()
        live = set()
        for machine in list(runtime.machines.values()):
            info = machine.info
            if info.state.value == "destroyed":
                continue
            live.add(machine.id)
            labels = std.machine(app, region, machine.id, info.group)
            if info.exit_code is not None:
                sample(exit_code, labels, info.exit_code)
                sample(oom, labels, 1 if info.oom_killed else 0)
            if info.state.value != "started":
                continue
            sample(up, labels, 1)
            usage = self.measure(machine)
            if usage.mem_total is not None:
                sample(memory["mem_total"], labels, usage.mem_total)
                if usage.mem_used is not None:
                    available = max(usage.mem_total - usage.mem_used, 0)
                    free = max(usage.mem_total - (usage.mem_usage or usage.mem_used), 0)
                    sample(memory["mem_available"], labels, available)
                    sample(memory["mem_free"], labels, free)
            if usage.cpu_user is not None:
                sample(cpu, {**labels, "cpu_id": "all", "mode": "user"}, usage.cpu_user)
                sample(cpu, {**labels, "cpu_id": "all", "mode": "system"}, usage.cpu_system or 0)
            for minutes, value in loadavg.items():
                sample(load, {**labels, "minutes": minutes}, value)
            for device, values in (usage.net or {}).items():
                for key, value in values.items():
                    sample(net[key], {**labels, "device": device}, value)
            if usage.root is not None:
                with contextlib.suppress(OSError):
                    st = os.statvfs(usage.root)
                    mount = {**labels, "mount": "/"}
                    sample(fs["blocks"], mount, st.f_blocks)
                    sample(fs["block_size"], mount, st.f_frsize)
                    sample(fs["blocks_free"], mount, st.f_bfree)
                    sample(fs["blocks_avail"], mount, st.f_bavail)
        for gone in set(self.ledgers) - live:
            del self.ledgers[gone]
        yield from (up, exit_code, oom, *memory.values(), cpu, load, *net.values(), *fs.values())

    def measure(self, machine: SupervisedMachine) -> Usage:
        """What the machine's driver lets us read of it now."""
        usage = Usage()
        process = machine.process
        spec_memory = machine.spec.guest.memory_mb * MIB if machine.spec.guest.memory_mb else None
        usage.mem_total = spec_memory
        usage.root = str(machine.launch_spec.cwd)
        driver = machine.driver.name
        if driver == "docker":
            usage.root = None  # the container's files live with the engine
            if self.docker is not None:
                self.docker.fill(machine.id, usage)
            return usage
        if process is None:
            return usage
        cgroup = getattr(process, "cgroup", None)
        if cgroup is not None:
            _from_cgroup(cgroup.dirs, usage)
            pids = cgroup.procs()
            usage.net = _net_dev(process.pid)
        else:
            pids = _group_members(process.pgid)
        if usage.mem_used is None:
            usage.mem_used = float(sum(_rss(pid) for pid in pids))
        if usage.cpu_user is None:
            ledger = self.ledgers.setdefault(machine.id, CpuLedger())
            user, system = ledger.update({pid: _cpu(pid) for pid in pids})
            usage.cpu_user, usage.cpu_system = user, system
        return usage


_NET_KEYS = (
    "recv_bytes",
    "recv_packets",
    "recv_errs",
    "recv_drop",
    "sent_bytes",
    "sent_packets",
    "sent_errs",
    "sent_drop",
)


def _loadavg() -> dict[str, float]:
    try:
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, ValueError):
        return {}
    return {"1": float(one), "5": float(five), "15": float(fifteen)}


def _group_members(pgid: int) -> set[int]:
    """The processes of a process group (the process driver's machine)."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # pgrp, after state and ppid
            found.add(int(entry.name))
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _cpu(pid: int) -> tuple[float, float]:
    """utime and stime of a process, in centiseconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    return int(fields[11]) * 100 / _TICK, int(fields[12]) * 100 / _TICK


def _net_dev(pid: int) -> dict[str, dict[str, float]] | None:
    """The counters of the network namespace ``pid`` is in (loopback left out)."""
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return None
    devices: dict[str, dict[str, float]] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        values = rest.split()
        if name == "lo" or len(values) < 12:
            continue
        recv, sent = values[:4], values[8:12]
        devices[name] = {key: float(v) for key, v in zip(_NET_KEYS, (*recv, *sent), strict=True)}
    return devices


def _from_cgroup(dirs: dict[str, Path], usage: Usage) -> None:
    """Memory and CPU from a machine's cgroup directories (v2's ``unified``, or v1's
    per-controller ones); what isn't there stays None."""
    unified = dirs.get("unified")
    if unified is not None:
        stat = _keyed(unified / "memory.stat")
        current = _number(unified / "memory.current")
        if current is not None:
            usage.mem_usage = current
            usage.mem_used = max(current - stat.get("inactive_file", 0), 0)
        limit = _number(unified / "memory.max")
        if limit is not None:
            usage.mem_total = limit
        cpu = _keyed(unified / "cpu.stat")
        if "user_usec" in cpu:
            usage.cpu_user = cpu["user_usec"] / 10_000
            usage.cpu_system = cpu.get("system_usec", 0) / 10_000
        return
    memory = dirs.get("memory")
    if memory is not None:
        current = _number(memory / "memory.usage_in_bytes")
        stat = _keyed(memory / "memory.stat")
        if current is not None:
            usage.mem_usage = current
            usage.mem_used = max(current - stat.get("total_inactive_file", 0), 0)
        limit = _number(memory / "memory.limit_in_bytes")
        if limit is not None and limit < 1 << 62:
            usage.mem_total = limit
    # cpuacct where the host mounts it with cpu ("cpu,cpuacct"), or on its own
    for cpuacct in (dirs.get("cpuacct"), dirs.get("cpu")):
        if cpuacct is None:
            continue
        ticks = _keyed(cpuacct / "cpuacct.stat")  # USER_HZ ticks
        if "user" in ticks:
            usage.cpu_user = ticks["user"] * 100 / _TICK
            usage.cpu_system = ticks.get("system", 0) * 100 / _TICK
            return


def _number(path: Path) -> float | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return float(text)
    except ValueError:
        return None  # "max"


def _keyed(path: Path) -> dict[str, float]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out
