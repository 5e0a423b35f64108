"""A cgroup per machine: its memory and cpu limits, and a list of all of its processes.

The cgroup is what lets a stop reach every process of a machine, including one that
left its process group with ``setsid`` and ones alive after the main process exited,
and what freezes a machine atomically. Made under the root of each hierarchy, as
``taxiway/<scope>/<machine>`` (the scope names the app's state folder,
`taxiway.runtime.scope`), so a restarted daemon finds a dead one's (`cleanup_scope`) and
another checkout of the app never touches them.
cgroup v2 (one unified tree) when ``/sys/fs/cgroup/cgroup.controllers`` exists, else v1
(memory, freezer, cpu, pids hierarchies).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
TOP = "taxiway"
V1_CONTROLLERS = ("memory", "freezer", "cpu", "pids")
#: The cpu quota's period (µs), as the kernel's default.
CPU_PERIOD = 100_000


def is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def usable() -> str | None:
    """None when per-machine cgroups can be made here, else what is missing (a phrase)."""
    if is_v2():
        if not os.access(ROOT, os.W_OK):
            return "a writable cgroup v2 tree"
        try:
            controllers = (ROOT / "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
        return None if "memory" in controllers else "the cgroup v2 memory controller"
    for controller in ("memory", "freezer"):
        if not os.access(ROOT / controller, os.W_OK):
            return f"the cgroup v1 {controller} controller"
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
    except OSError:
        return False
    return True


class Cgroup:
    """One machine's cgroup (a directory per v1 hierarchy, or one v2 directory)."""

    def __init__(self, scope: str, machine_id: str) -> None:
        self.scope = scope
        self.machine_id = machine_id
        rel = Path(TOP, _safe(scope), _safe(machine_id))
        if is_v2():
            self.dirs = {"unified": ROOT / rel}
        else:
            self.dirs = {c: ROOT / c / rel for c in V1_CONTROLLERS if (ROOT / c).is_dir()}

    # -- setup ----------------------------------------------------------------------------

    def create(self, *, memory_mb: int | None = None, cpus: int | None = None) -> None:
        """Make the directories and set the limits (idempotent)."""
        if "unified" in self.dirs:
            self._enable_v2_controllers()
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        memory = str(memory_mb * 1024 * 1024) if memory_mb else None
        if "unified" in self.dirs:
            d = self.dirs["unified"]
            _write(d / "memory.max", memory or "max")
            _write(d / "cpu.max", f"{cpus * CPU_PERIOD} {CPU_PERIOD}" if cpus else "max")
            return
        if "memory" in self.dirs:
            _write(self.dirs["memory"] / "memory.limit_in_bytes", memory or "-1")
        if "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD))
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(cpus * CPU_PERIOD) if cpus else "-1")

    def _enable_v2_controllers(self) -> None:
        """Delegate memory and cpu down to the machine's directory."""
        path = ROOT
        for part in self.dirs["unified"].relative_to(ROOT).parts:
            _write(path / "cgroup.subtree_control", "+memory +cpu +pids")
            path = path / part
            path.mkdir(exist_ok=True)

    def procs_files(self) -> list[Path]:
        """What a new process writes its pid into to join (every hierarchy's)."""
        return [d / "cgroup.procs" for d in self.dirs.values()]

    # -- reading --------------------------------------------------------------------------

    def memory_limit(self) -> int | None:
        """The memory limit in bytes, read back from the kernel (None: unlimited/unknown)."""
        if "unified" in self.dirs:
            path = self.dirs["unified"] / "memory.max"
        elif "memory" in self.dirs:
            path = self.dirs["memory"] / "memory.limit_in_bytes"
        else:
            return None
        try:
            value = path.read_text().strip()
        except OSError:
            return None
        return None if value == "max" or int(value) >= 1 << 62 else int(value)

    def procs(self) -> set[int]:
        """Every process in the machine's cgroup (any hierarchy's list; they agree)."""
        pids: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in (d / "cgroup.procs").read_text().split())
            if pids:
                break
        return pids

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs.values())

    # -- acting ---------------------------------------------------------------------------

    def signal(self, sig: int) -> bool:
        """``sig`` to every process; False when there was none."""
        pids = self.procs()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return bool(pids)

    def freeze(self) -> bool:
        """Freeze every process at once; False when no freezer is there (use SIGSTOP)."""
        if "unified" in self.dirs:
            return _write(self.dirs["unified"] / "cgroup.freeze", "1")
        if "freezer" in self.dirs:
            return _write(self.dirs["freezer"] / "freezer.state", "FROZEN")
        return False

    def thaw(self) -> bool:
        if "unified" in self.dirs:
            return _write(self.dirs["unified"] / "cgroup.freeze", "0")
        if "freezer" in self.dirs:
            return _write(self.dirs["freezer"] / "freezer.state", "THAWED")
        return False

    def kill_all(self, timeout_s: float = 2.0) -> None:
        """SIGKILL every process, including ones forked meanwhile: v2's cgroup.kill, else
        freeze (nothing can fork), kill, thaw (so the kill is delivered), until empty."""
        unified = self.dirs.get("unified")
        if unified is not None and _write(unified / "cgroup.kill", "1"):
            self._wait_empty(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while self.procs() and time.monotonic() < deadline:
            frozen = self.freeze()
            self.signal(signal.SIGKILL)
            if frozen:
                self.thaw()
            self._wait_empty(0.05)

    def _wait_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.procs():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def remove(self) -> None:
        """Kill what is left and delete the directories (and the scope's, once empty)."""
        if not self.exists():
            return
        self.kill_all()
        for d in self.dirs.values():
            for _ in range(50):  # a killed process leaves its cgroup as it exits
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
            with contextlib.suppress(OSError):
                d.parent.rmdir()  # the scope's directory, when this was its last machine


def cgroup_of(pid: int) -> tuple[str, str] | None:
    """(scope, machine) when ``pid`` is in a taxiway machine's cgroup."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[-3] == TOP:
            return parts[-2], parts[-1]
    return None


def scope_cgroups(scope: str) -> list[Cgroup]:
    """The machine cgroups that exist for ``scope``."""
    if is_v2():
        base = ROOT / TOP / _safe(scope)
    else:
        base = ROOT / "memory" / TOP / _safe(scope)
        if not base.is_dir():
            base = ROOT / "freezer" / TOP / _safe(scope)
    if not base.is_dir():
        return []
    return [Cgroup(scope, d.name) for d in sorted(base.iterdir()) if d.is_dir()]


def cleanup_scope(scope: str) -> list[str]:
    """Kill and remove every machine cgroup of ``scope``; the machines that still ran."""
    running = []
    for group in scope_cgroups(scope):
        if group.procs():
            running.append(group.machine_id)
        group.remove()
    return running
