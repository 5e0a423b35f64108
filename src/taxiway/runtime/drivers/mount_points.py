"""Mount points made on the host for machines' volumes and [[files]], and removed again.

A bind mount needs an existing mount point. A machine's mount namespace is private but
the file system under it is the host's, so a missing ``/etc/app.conf`` made for a
machine would stay in the host's ``/etc`` after the machine stopped. taxiway makes the
missing mount points itself just before a machine starts, remembers which ones it made,
and removes them (when still empty) once no machine of this daemon mounts anything there.
Paths that existed before are never touched.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

#: Each mount point this daemon made, and the machines that mount something on or under it.
_holders: dict[Path, set[str]] = {}
_lock = threading.Lock()


def claim(machine_id: str, mounts: Iterable[tuple[Path, str]]) -> None:
    """Make the missing mount points of ``mounts`` (a directory for a directory source,
    else an empty file, and the folders above it) for ``machine_id``. OSError when one
    can't be made."""
    with _lock:
        for source, destination in mounts:
            target = Path(destination)
            missing = []
            path = target
            while not os.path.lexists(path) and path != path.parent:
                missing.append(path)
                path = path.parent
            for path in reversed(missing):
                if path == target and not source.is_dir():
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                else:
                    path.mkdir(mode=0o755)
                _holders[path] = set()
            for path in (target, *target.parents):
                if path in _holders:
                    _holders[path].add(machine_id)


def release(machine_id: str) -> None:
    """The machine no longer runs: remove the mount points only it still used, deepest
    first, when they are still empty (something put there meanwhile is kept)."""
    with _lock:
        held = [path for path, machines in _holders.items() if machine_id in machines]
        for path in sorted(held, key=lambda p: len(p.parts), reverse=True):
            machines = _holders[path]
            machines.discard(machine_id)
            if machines:
                continue
            del _holders[path]
            _remove_if_empty(path)


def _remove_if_empty(path: Path) -> None:
    try:
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            path.rmdir()
        elif stat.S_ISREG(info.st_mode) and info.st_size == 0:
            path.unlink()
    except OSError:
        pass  # not empty, or gone already: leave it
