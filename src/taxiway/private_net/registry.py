"""The host-wide directory where each daemon says which machines its app has, for DNS.

On the platform every app of an organisation finds the others by name
(https://fly.io/docs/networking/private-networking/). Here each app has its own daemon,
so each one publishes a small JSON file per app (scope) into one directory every daemon
on the host agrees on, and every DNS server reads all of them. Nothing in it is secret:
names, regions, states and private addresses.

The directory is ``/run/taxiway/6pn`` when this user may write there (root: one network
for the whole host), else ``$XDG_RUNTIME_DIR/taxiway/6pn``, else
``/tmp/taxiway-<uid>/6pn``; ``TAXIWAY_6PN_DIR`` overrides it. A file whose daemon is gone
(its ``pid`` no longer runs) is ignored, so a daemon killed with SIGKILL leaves no ghost
names behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path

import msgspec

from taxiway.errors import TaxiwayError

DIR_ENV = "TAXIWAY_6PN_DIR"
SYSTEM_DIR = Path("/run/taxiway/6pn")
#: How often `RegistryView` looks at the directory again, at most (seconds). DNS answers
#: live 5 s, so a change shows within a fraction of a TTL.
REFRESH_INTERVAL = 0.2


class MachineEntry(msgspec.Struct, frozen=True):
    """What DNS needs of one machine. ``registered`` False: a machine DNS never names
    (release command, console, machine check), as flyctl's ``dns.skip_registration``."""

    id: str
    group: str
    region: str
    private_ip: str
    state: str
    registered: bool = True
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class AppEntry(msgspec.Struct, frozen=True):
    """One app (one daemon's scope) as published. ``flycast``: the app's flycast IPv6
    address; ``api``: the IPv6 address its machines reach the Machines API at."""

    app: str
    scope: str
    pid: int
    region: str
    machines: list[MachineEntry]
    flycast: str | None = None
    api: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AppEntry)


def registry_dir() -> Path:
    """The directory every daemon of this user (all of them, for root) publishes to,
    created when missing."""
    override = os.environ.get(DIR_ENV)
    if override:
        return _made(Path(override), 0o755)
    with contextlib.suppress(OSError):
        SYSTEM_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        if os.access(SYSTEM_DIR, os.W_OK | os.X_OK):
            return SYSTEM_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir() and os.access(runtime, os.W_OK | os.X_OK):
        return _made(Path(runtime) / "taxiway" / "6pn", 0o700)
    own = Path(tempfile.gettempdir()) / f"taxiway-{os.getuid()}"
    _made(own, 0o700)
    try:
        info = own.lstat()
    except OSError as exc:
        raise TaxiwayError(f"cannot use {own} for the private network's names: {exc}") from exc
    # Anyone may create /tmp/taxiway-<uid> first; never publish into someone else's folder.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TaxiwayError(
            f"{own} belongs to another user: remove it, or set {DIR_ENV} to a folder of yours"
        )
    return _made(own / "6pn", 0o700)


def _made(folder: Path, mode: int) -> Path:
    try:
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise TaxiwayError(
            f"cannot create {folder} for the private network's names: {exc.strerror or exc}"
        ) from exc
    return folder


def entry_path(scope: str, directory: Path | None = None) -> Path:
    """Where ``scope``'s entry lives: a digest, since a scope may hold any character."""
    name = hashlib.sha1(scope.encode(), usedforsecurity=False).hexdigest()[:16]
    return (directory or registry_dir()) / f"{name}.json"


def publish(entry: AppEntry, directory: Path | None = None) -> Path:
    """Write ``entry`` in place of its scope's previous one, atomically: a reader sees the
    old file or the new one, never half of one."""
    path = entry_path(entry.scope, directory)
    fd, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(_encoder.encode(entry))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def withdraw(scope: str, directory: Path | None = None) -> None:
    """Remove ``scope``'s entry (the app stopped): its names go with it."""
    with contextlib.suppress(FileNotFoundError):
        entry_path(scope, directory).unlink()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts: EPERM)."""
    if pid <= 0:
        return False  # 0 and negatives name process groups, never one daemon
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _read_file(path: Path | str) -> AppEntry | None:
    try:
        with open(path, "rb") as handle:
            return _decoder.decode(handle.read())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def read_entries(directory: Path | None = None) -> list[AppEntry]:
    """Every live app's entry, sorted by app then scope; unreadable or corrupt files and
    entries of dead daemons are left out without a word."""
    folder = directory or registry_dir()
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return []
    found = [_read_file(folder / name) for name in names]
    return _live_sorted([entry for entry in found if entry is not None])


def _live_sorted(entries: list[AppEntry]) -> list[AppEntry]:
    return sorted(
        (entry for entry in entries if pid_alive(entry.pid)),
        key=lambda entry: (entry.app, entry.scope),
    )


class RegistryView:
    """`read_entries` for a hot path: re-reads only the files whose inode, size or mtime changed
    (and looks at most every `REFRESH_INTERVAL`), and returns the very same list object
    while nothing changed, so a caller may cache what it derives from it by identity."""

    def __init__(self, directory: Path | None = None, interval: float = REFRESH_INTERVAL):
        self.directory = directory or registry_dir()
        self.interval = interval
        self._checked = -float("inf")
        self._files: dict[str, tuple[tuple[int, int, int], AppEntry | None]] = {}
        self._entries: list[AppEntry] = []

    def entries(self) -> list[AppEntry]:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            self._refresh()
        return self._entries

    def _refresh(self) -> None:
        files: dict[str, tuple[tuple[int, int, int], AppEntry | None]] = {}
        try:
            with os.scandir(self.directory) as listing:
                for item in listing:
                    if not item.name.endswith(".json") or item.name.startswith("."):
                        continue
                    try:
                        info = item.stat()
                    except OSError:
                        continue
                    # publish() renames a new file in: a new inode even within one mtime tick.
                    signature = (info.st_ino, info.st_mtime_ns, info.st_size)
                    known = self._files.get(item.name)
                    if known is not None and known[0] == signature:
                        files[item.name] = known
                    else:
                        files[item.name] = (signature, _read_file(item.path))
        except OSError:
            files = {}
        live = _live_sorted([entry for _, entry in files.values() if entry is not None])
        if files.keys() != self._files.keys() or live != self._entries:
            self._entries = live
        self._files = files
