"""The `process` driver: a machine is a process tree in its own session and process group.

Portable and needs no privileges. Signals go to the whole process group, and the
group outlives its leader, so a stop's SIGKILL still reaches what the main process
left behind. Its limits, which the namespace driver lifts: a process that calls
``setsid`` itself leaves the group; machines share the host's network (hence
``PORT``) and filesystem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from taxiway.runtime.drivers import mount_points
from taxiway.runtime.drivers.base import Driver, DriverError, LaunchSpec, start_process

if TYPE_CHECKING:
    from taxiway.runtime.drivers.handle import ProcessHandle


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
    destination is made empty (as a container runtime makes mount points) and removed
    again when the machine stops (`mount_points`). Without root the volume stays at its
    host path and the log says so."""
    if not mounts_supported():
        for source, destination in spec.mounts:
            spec.log.system(
                f"{destination} is kept at {source}; showing it at {destination} needs a "
                "private mount namespace (run taxiway as root), so the app doesn't see it there"
            )
        return spec.argv
    try:
        mount_points.claim(spec.machine_id, spec.mounts)
    except OSError as exc:
        raise DriverError(
            f"machine {spec.machine_id} ({spec.group}): cannot make the mount point "
            f"{exc.filename}: {exc.strerror}"
        ) from None
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


class ProcessDriver(Driver):
    """Launches a machine as a process group. `start` needs no event loop: `up -d`'s
    daemon can launch machines before it imports asyncio (`taxiway.runtime.early`)."""

    name = "process"

    def start(self, spec: LaunchSpec) -> subprocess.Popen[bytes]:
        """Start the machine's process, or raise `DriverError` saying why it can't."""
        argv = with_mounts(spec) if spec.mounts else spec.argv
        try:
            return start_process(argv, cwd=spec.cwd, env=spec.env)
        except OSError as exc:
            mount_points.release(spec.machine_id)  # it never ran: nothing is mounted there
            raise _start_error(spec, exc) from None

    async def launch(self, spec: LaunchSpec) -> ProcessHandle:
        from taxiway.runtime.drivers.handle import ProcessHandle

        return ProcessHandle(self.start(spec), spec.log, spec.machine_id)


def _start_error(spec: LaunchSpec, exc: OSError) -> DriverError:
    """Why the machine's process could not start, in one sentence."""
    who = f"machine {spec.machine_id} ({spec.group})"
    if isinstance(exc, FileNotFoundError):
        if not spec.cwd.is_dir():
            return DriverError(f"{who}: folder {spec.cwd} does not exist")
        return DriverError(f"{who}: command not found: {spec.argv[0]}")
    if isinstance(exc, PermissionError):
        return DriverError(f"{who}: {spec.argv[0]} is not executable")
    return DriverError(f"{who}: cannot start {spec.argv[0]}: {exc.strerror}")
