"""Where an app's runtime state lives: ``.taxiway/`` beside its fly.toml.

Shared by the daemon and every client command, so both find the same socket.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

STATE_DIR_NAME = ".taxiway"
#: sun_path holds 108 bytes; longer socket paths go to a short runtime directory.
_MAX_SOCKET_PATH = 100
#: Written into the state folder: git ignores everything in it, this file included.
GITIGNORE = "# written by taxiway: this folder holds secrets, volumes and logs\n*\n"


class AppPaths(msgspec.Struct, frozen=True):
    state_dir: Path
    socket: Path
    lock: Path
    daemon_log: Path
    logs: Path

    @classmethod
    def for_config(cls, config_path: Path) -> AppPaths:
        state_dir = config_path.resolve().parent / STATE_DIR_NAME
        socket = state_dir / "taxiway.sock"
        if len(str(socket).encode()) > _MAX_SOCKET_PATH:
            import hashlib
            import tempfile

            digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
            runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
            socket = Path(runtime_dir) / f"taxiway-{digest}.sock"
        return cls(
            state_dir=state_dir,
            socket=socket,
            lock=state_dir / "daemon.lock",
            daemon_log=state_dir / "daemon.log",
            logs=state_dir / "logs",
        )

    @property
    def certs(self) -> Path:
        """The edge's local certificate authority and the certificates it issued."""
        return self.state_dir / "certs"

    def ensure(self) -> None:
        """Create the state folder, private to its owner (it holds secrets), and keep it
        out of git: it holds the store with secret values, volumes and logs, and a
        `git add .` beside fly.toml must not commit them."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        self.logs.mkdir(mode=0o700, exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            try:
                ignore.write_text(GITIGNORE)
            except OSError:  # e.g. a full disk: not worth failing the command for
                ignore.unlink(missing_ok=True)
