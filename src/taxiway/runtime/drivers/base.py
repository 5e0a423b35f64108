"""What every driver offers the runtime: launch a machine, signal its tree, clean up.

asyncio is imported only where a process is supervised: picking a driver, cleaning up
after a dead daemon (`taxiway.runtime.drivers`, `taxiway.runtime.leftovers`) and
launching a machine's process (`start_process`) need no event loop, so `up -d`'s daemon
does them before it imports asyncio.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    import asyncio

    from taxiway.runtime.logs import MachineLog


class DriverError(TaxiwayError):
    """A machine that could not be started; the message names it and the command."""


#: How a machine's process (or a command run in it) starts: no stdin, its output piped
#: (to the machine's log, or back to the caller), in a session of its own so that a
#: signal to the group reaches everything it starts.
_MACHINE_PROCESS = {
    "stdin": subprocess.DEVNULL,
    "stdout": subprocess.PIPE,
    "stderr": subprocess.PIPE,
    "start_new_session": True,
}


def start_process(argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A machine's main process, started without an event loop, so `up -d`'s daemon can
    launch its machines before it has imported asyncio and supervise them once it has
    (`taxiway.runtime.drivers.handle.ProcessHandle`). OSError as `subprocess.Popen`."""
    return subprocess.Popen(argv, cwd=cwd, env=env, **_MACHINE_PROCESS)


async def spawn(argv: list[str], *, cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """A command run in a machine (`exec`), its output read back by the caller.
    OSError as `create_subprocess_exec`."""
    import asyncio

    return await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, **_MACHINE_PROCESS)


class LaunchSpec(msgspec.Struct, kw_only=True):
    """Everything a driver needs to start one machine."""

    machine_id: str
    group: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: MachineLog
    memory_mb: int | None = None
    #: Volumes and [[files]] to show in the machine: (host directory or file, path in it).
    mounts: list[tuple[Path, str]] = msgspec.field(default_factory=list)
    #: For drivers that give a machine its own network and limits (namespace): the scope
    #: every host-wide name comes from (`taxiway.runtime.scope`: the app's state folder),
    #: the machine's 6PN address (empty for a one-off: the driver gives it one), and its
    #: cpus from [[vm]].
    scope: str = ""
    private_ip: str = ""
    cpus: int | None = None


class MachineProcess(Protocol):
    pid: int
    pgid: int
    start_time: float | None

    async def wait(self) -> int:
        """Until the main process exits: its exit code, or -N when signal N killed it."""
        ...

    def send_signal(self, sig: int) -> None:
        """To every process of the machine."""
        ...

    def kill_tree(self) -> None:
        """SIGKILL to every process of the machine, even after its main process exited."""
        ...

    def alive(self) -> bool: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...


class Driver(Protocol):
    """Optional extras (namespace driver), looked up with getattr by the runtime:
    ``own_network`` (no port remapping), ``machine_host(scope, private_ip)``,
    ``release_machine(scope, machine_id)`` (a destroyed machine, an ended one-off),
    ``release_app(scope)``. What a dead
    daemon's machines left running is every driver's concern at once: see
    `taxiway.runtime.leftovers`."""

    name: str

    async def launch(self, spec: LaunchSpec) -> MachineProcess: ...
