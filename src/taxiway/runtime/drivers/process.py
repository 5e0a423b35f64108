"""The `process` driver: a machine is a process tree in its own session and process group.

Portable and needs no privileges. Signals go to the whole process group, and the
group outlives its leader, so a stop's SIGKILL still reaches what the main process
left behind. Its limits, which the namespace driver lifts: a process that calls
``setsid`` itself leaves the group; machines share the host's network (hence
``PORT``) and filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal

from taxiway.runtime.drivers.base import DriverError, LaunchSpec, spawn
from taxiway.runtime.leftovers import process_start_time
from taxiway.runtime.logs import MachineLog

#: Output lines longer than this are split, so one endless line can't exhaust memory.
MAX_LINE = 64 * 1024


class ProcessHandle:
    """A running machine started by the process driver."""

    def __init__(self, proc: asyncio.subprocess.Process, log: MachineLog) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the leader's pid is the group's id
        self.start_time = process_start_time(proc.pid)
        self._readers = [
            asyncio.create_task(_pump(proc.stdout, log, "stdout")),
            asyncio.create_task(_pump(proc.stderr, log, "stderr")),
        ]

    async def wait(self) -> int:
        """Until the leader exits. Not `Process.wait()`: on Python 3.11 that also waits for
        the output pipes to close, which a background child keeps open indefinitely."""
        if self._proc.returncode is None:
            await _exited(self.pid)
            while self._proc.returncode is None:  # the event loop's child watcher reaps it
                await asyncio.sleep(0.002)
        # Give the pipes a moment to drain the last lines; stragglers may hold them open.
        await asyncio.wait(self._readers, timeout=0.5)
        return self._proc.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def kill_tree(self) -> None:
        self.send_signal(signal.SIGKILL)
        for reader in self._readers:
            if not reader.done():
                reader.cancel()

    def alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def freeze(self) -> None:
        self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send_signal(signal.SIGCONT)


async def _exited(pid: int) -> None:
    """Wake up when ``pid`` exits: a pidfd becomes readable then (Linux 5.3+)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return  # already gone, or no pidfd: the caller polls the return code
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _pump(stream: asyncio.StreamReader | None, log: MachineLog, name: str) -> None:
    """Copy a pipe into the log line by line, without ever blocking the process."""
    if stream is None:
        return
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):
                log.write(name, line[start : start + MAX_LINE])
        while len(pending) >= MAX_LINE:
            log.write(name, pending[:MAX_LINE])
            pending = pending[MAX_LINE:]
    if pending:
        log.write(name, pending)


#: Bind-mounts each (source, destination) pair given as arguments, then runs the command.
#: A directory source gets a directory mount point, a file source a file one.
_MOUNT_PRELUDE = (
    'while [ "$1" != "--" ]; do '
    'if [ -d "$1" ]; then mkdir -p "$2"; '
    'else mkdir -p "$(dirname "$2")" && { [ -e "$2" ] || : > "$2"; }; fi; '
    'mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
)


def mounts_supported() -> bool:
    """Volumes at their destination need a private mount namespace: root, unshare, mount."""
    return os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("mount"))


def with_mounts(spec: LaunchSpec) -> list[str]:
    """The machine's argv, run in its own mount namespace where each volume is bind-mounted
    at its destination. Only that namespace sees the mounts; on the host a missing
    destination is created as an empty directory (as a container runtime creates mount
    points). Without root the volume stays at its host path and the log says so."""
    if not mounts_supported():
        for source, destination in spec.mounts:
            spec.log.system(
                f"{destination} is kept at {source}; showing it at {destination} needs a "
                "private mount namespace (run taxiway as root), so the app doesn't see it there"
            )
        return spec.argv
    pairs = [str(part) for source, destination in spec.mounts for part in (source, destination)]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        _MOUNT_PRELUDE,
        "taxiway-mounts",
        *pairs,
        "--",
        *spec.argv,
    ]


class ProcessDriver:
    name = "process"

    async def launch(self, spec: LaunchSpec) -> ProcessHandle:
        who = f"machine {spec.machine_id} ({spec.group})"
        argv = with_mounts(spec) if spec.mounts else spec.argv
        try:
            proc = await spawn(argv, cwd=spec.cwd, env=spec.env)
        except FileNotFoundError:
            if not spec.cwd.is_dir():
                raise DriverError(f"{who}: folder {spec.cwd} does not exist") from None
            raise DriverError(f"{who}: command not found: {spec.argv[0]}") from None
        except PermissionError:
            raise DriverError(f"{who}: {spec.argv[0]} is not executable") from None
        except OSError as exc:
            raise DriverError(f"{who}: cannot start {spec.argv[0]}: {exc.strerror}") from None
        return ProcessHandle(proc, spec.log)
