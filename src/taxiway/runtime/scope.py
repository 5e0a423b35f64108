"""The host-wide name of one app's state folder, so checkouts of one app never meet.

Two folders may hold the same ``app`` (a git worktree, a copy): what either makes on the
host (bridges, network namespaces, cgroups, iptables rules, the machines' private
addresses) is named after its state folder, not the app, so both run side by side and
each cleans up only its own. The name keeps the app readable (``<app>-<hash>``) for
whoever lists ``/sys/fs/cgroup/taxiway``.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path


def scope_for(app: str, state_dir: Path) -> str:
    """``<app>-<8 hex digits of the resolved state folder>``: the same for every daemon,
    `down` and reap of one folder, different for another folder of the same app."""
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", app)[:40] or "_"
    return f"{readable}-{digest}"


def seed(scope: str) -> int:
    """What `taxiway.runtime.environment.private_ip` derives the scope's 6PN prefix from."""
    return zlib.crc32(scope.encode())
