"""What every driver offers the runtime: launch a machine, signal its tree, clean up.

asyncio is imported only where a process is supervised: picking a driver, cleaning up
after a dead daemon (`taxiway.runtime.drivers`, `taxiway.runtime.leftovers`) and
launching a machine's process (`start_process`) need no event loop, so `up -d`'s daemon
does them before it imports asyncio.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

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


class ContainerLaunch(msgspec.Struct, kw_only=True):
    """One container of a multi-container machine (`taxiway.plan.containers`), as a
    driver that runs images starts it. The one with ``built`` runs the LaunchSpec's own
    image, argv, environment and mounts; every other one runs what it says here."""

    name: str
    built: bool = False
    image: str | None = None
    #: Exactly what it runs; else ``entrypoint``/``cmd`` override the image's (None: the
    #: image's own).
    argv: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    #: Its complete environment (the image's ENV comes from the engine, below it).
    env: dict[str, str] = msgspec.field(default_factory=dict)
    user: str | None = None
    mounts: list[tuple[Path, str]] = msgspec.field(default_factory=list)
    #: (container, condition): started, healthy or exited_successfully.
    depends_on: list[tuple[str, str]] = msgspec.field(default_factory=list)
    #: An exec health check (None: none), and the seconds one run of it may take.
    health: list[str] | None = None
    health_timeout_s: float = 5.0
    #: The platform's restart policy for it: no, always or on-failure (None: it ends
    #: with the machine and stays down until the machine restarts).
    restart: str | None = None
    max_retries: int | None = None
    #: The signal that stops it (None: the machine's kill_signal).
    stop_signal: str | None = None


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
    #: For a driver that runs images (docker): the image the machine runs, the folder
    #: in it the command starts in (None: the image's WORKDIR), and the app's name.
    image: str | None = None
    workdir: str | None = None
    app: str = ""
    #: A multi-container machine's containers, in the order they start (empty: the
    #: machine is one container). Only a driver that runs images starts more than one.
    containers: list[ContainerLaunch] = msgspec.field(default_factory=list)


class MachineProcess(Protocol):
    pid: int
    pgid: int
    start_time: float | None
    #: Whether the kernel's OOM killer ended it (known once `wait` returned).
    oom_killed: bool

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


class Driver(ABC):
    """How machines run on this host. A driver must launch a machine; the rest has
    defaults for a driver whose machines share the host's network and leave nothing on
    the host to remove (the process driver), which a driver that gives machines more of
    their own (the namespace driver) overrides. What a dead daemon's machines left
    running is every driver's concern at once: see `taxiway.runtime.leftovers`."""

    #: What `--driver`, `status` and `status --json` call it.
    name: ClassVar[str]
    #: Whether every machine has a network of its own, and so binds ``internal_port``
    #: itself (no host port per machine, ``PORT`` is ``internal_port``).
    own_network: ClassVar[bool] = False
    #: Whether machines run the release's image (docker) rather than the app's folder on
    #: the host: a release is then its image, and a rollback brings the old code back.
    runs_image: ClassVar[bool] = False
    #: What a machine with its own filesystem sees as /etc/resolv.conf: the private
    #: network's DNS server's, once the daemon serves it (`taxiway.private_net.slot`);
    #: None: the driver's own choice (the host's resolvers).
    machine_resolv_conf: Path | None = None

    @abstractmethod
    async def launch(self, spec: LaunchSpec) -> MachineProcess:
        """Start the machine's main process, or raise `DriverError` saying why not."""

    def machine_host(self, scope: str, private_ip: str) -> str:
        """Where the host (the edge, checks) reaches the machine's ports."""
        return "127.0.0.1"

    def exec_prefix(self, process: MachineProcess, spec: LaunchSpec) -> list[str]:
        """The argv that runs a command inside the running machine (`machine exec`),
        placed before the command; empty: the command runs as the machine was started."""
        return []

    async def exec(
        self, process: MachineProcess | None, spec: LaunchSpec, cmd: list[str], timeout_s: float
    ) -> dict[str, object]:
        """`machine exec`: run ``cmd`` in the machine (``process``, None when it doesn't
        run) with its environment; its output and exit code (124 when it ran out of
        time). By default on the host, after `exec_prefix` while the machine runs."""
        import asyncio

        argv = [*self.exec_prefix(process, spec), *cmd] if process is not None else cmd
        try:
            proc = await spawn(argv, cwd=spec.cwd, env=spec.env)
        except OSError as exc:
            raise DriverError(
                f"machine {spec.machine_id}: cannot run {cmd[0]}: {exc.strerror}"
            ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return {"stdout": out.decode(errors="replace"), "stderr": "timed out", "exit_code": 124}
        return {
            "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace"),
            "exit_code": proc.returncode,
        }

    def release_machine(self, scope: str, machine_id: str) -> None:  # noqa: B027
        """A destroyed machine, or an ended one-off: remove what the driver made for it
        on the host. Nothing by default."""

    def release_app(self, scope: str) -> list[str]:
        """`down`: remove everything the driver made on the host for the state folder
        ``scope``; the machines that still ran."""
        return []
