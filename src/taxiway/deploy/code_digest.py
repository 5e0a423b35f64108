"""The code half of a release's identity: a digest of the app's folder.

Its own module, free of the store and the config, because `taxiway up -d` takes it in
the command while the daemon starts (`taxiway.cli.app_cmd._up_detached`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Folders a code digest skips: hidden ones (.git, .taxiway, .venv) and these.
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__"})
#: A code digest looks at no more files than this, so it stays cheap on a huge folder.
MAX_FILES = 50_000


def code_digest(folder: Path, *, config_file: Path | None = None) -> str:
    """A cheap digest of the app's folder: every file's path, size and mtime, except the
    config file's (the config has a digest of its own).

    Content is not read (a large folder would cost seconds); an edit changes the mtime.
    The folder and the config file are compared as resolved paths: ``fly.toml``,
    ``./fly.toml``, ``-c .`` and an absolute path name the same file, and the same folder
    gives the same digest whichever way `up` was pointed at it.
    """
    folder = Path(os.path.realpath(folder))
    skipped = _resolved_file(config_file) if config_file is not None else None
    digest = hashlib.sha256()
    seen = 0
    stack = [folder]
    while stack and seen < MAX_FILES:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in SKIPPED_DIRS:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.path == skipped:
                continue
            rel = os.path.relpath(entry.path, folder)
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            seen += 1
    return digest.hexdigest()[:16]


def _resolved_file(path: Path) -> str:
    """``path`` with its folder resolved (symlinks, ``.``, relative to the working
    directory) but not its last part: how the walk from a resolved folder spells it."""
    return os.path.join(os.path.realpath(os.path.dirname(path) or "."), os.path.basename(path))
