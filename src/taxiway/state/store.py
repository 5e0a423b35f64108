"""The daemon's state in SQLite: apps, machines, scale counts, volumes, secrets, releases,
events.

One file, ``.taxiway/taxiway.db`` (0600, in a 0700 folder: it holds secrets), in WAL
mode so client commands can read while the daemon writes. The schema moves forward by
numbered migrations (`taxiway.state.migrations`) that only ever add, so nothing a user
stored is lost by an upgrade, and every write runs in one ``BEGIN IMMEDIATE``
transaction, so nothing is lost — or half-written — by a failure.

The store holds no business rules beyond the platform's invariants about the data
itself (a volume attaches to one machine, never shrinks, …): which machine to start or
which release to roll back to is decided by the runtime and the deployer.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from taxiway.config.units import MAX_VOLUME_GB
from taxiway.state.migrations import migrate, user_version
from taxiway.state.records import (
    RELEASE_STATUSES,
    AppRecord,
    EventRecord,
    MachineRecord,
    NotFoundError,
    ReleaseRecord,
    SecretRecord,
    SnapshotRecord,
    StateError,
    VolumeRecord,
    new_volume_id,
    now,
    sha256_hex,
    validate,
)
from taxiway.state.volume_folders import earlier_state, write_label

__all__ = ["DB_NAME", "RECOVER_COMMAND", "DamagedStoreError", "Store"]

DB_NAME = "taxiway.db"
#: What a user runs when the database is lost or damaged (`taxiway.cli.state_cmd`).
RECOVER_COMMAND = "taxiway state recover"
#: Events kept per app (older ones are pruned).
MAX_EVENTS = 10_000

_MACHINE_FIELDS: tuple[str, ...] = MachineRecord.__struct_fields__
#: What `update_machine` may change: not the identity, and timestamps are the store's.
_MACHINE_UPDATABLE = frozenset(_MACHINE_FIELDS) - {"id", "app", "created_at", "updated_at"}
_MACHINE_JSON = frozenset({"ports", "metadata", "api"})
_VOLUME_FIELDS: tuple[str, ...] = VolumeRecord.__struct_fields__
_SNAPSHOT_FIELDS: tuple[str, ...] = SnapshotRecord.__struct_fields__
#: The platform's bounds for a volume's snapshot retention, in days
#: (https://fly.io/docs/volumes/snapshots/).
SNAPSHOT_RETENTION_DAYS = range(1, 61)

R = TypeVar("R", bound=msgspec.Struct)


def _quote(column: str) -> str:
    return f'"{column}"'  # `group` is an SQL keyword


def _dump(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is no mapping


def _chmod(path: Path, mode: int) -> None:
    """Set `mode` unless it is already set (chmod on a file we can read but don't own
    would fail for nothing)."""
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _failure(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """The sentence for what the user's machine did to the store (a busy lock, a full
    disk, a damaged file) as a `StateError`; anything else (a bug) as it is."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
        return StateError(
            f"the state store {path} is busy: another process has held its write lock too "
            "long; try again"
        )
    if code == sqlite3.SQLITE_FULL:
        return StateError(
            f"the disk holding {path} is full, so nothing was changed; free some space and "
            "try again"
        )
    if code == sqlite3.SQLITE_IOERR:
        return StateError(
            f"the state store {path} could not be read or written ({exc}), so nothing was "
            "changed; check the disk it is on and try again"
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return DamagedStoreError(_damaged(path, exc))
    return exc


class DamagedStoreError(StateError):
    """The database file is not SQLite, or SQLite found it corrupt."""


def _damaged(path: Path, exc: Exception) -> str:
    return (
        f"{path} is damaged ({exc}); restore it from a backup, or run `{RECOVER_COMMAND}` to "
        "move it aside and start from an empty state that keeps the volume folders as "
        "unattached volumes"
    )


def _is_empty(path: Path) -> bool:
    """A database that holds nothing yet: missing, or empty with no write-ahead log (a
    new file in WAL mode stays empty until its first checkpoint, its data in ``-wal``)."""
    try:
        if path.stat().st_size > 0:
            return False
    except FileNotFoundError:
        return True
    except OSError:
        return False  # opening it says why
    wal = path.with_name(path.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def _refuse_if_orphaning(state_dir: Path, what: str) -> None:
    """Refuse a database that holds nothing (``what`` it is) while the folder holds what
    an earlier state knew about: starting afresh would orphan it silently."""
    found = earlier_state(state_dir)
    if found:
        raise StateError(
            f"{state_dir / DB_NAME} {what}, but {state_dir} holds {_and(found)} from an "
            "earlier state; the app's secrets, releases and volumes would be lost: restore "
            f"{DB_NAME} from a backup, or run `{RECOVER_COMMAND}` to start from an empty "
            "state that keeps the volume folders as unattached volumes"
        )


def _and(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _use_wal(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    """Switch the file to WAL mode (a no-op once it is).

    Retried by hand: when several processes open a new file at once, the switch can
    fail with "database is locked" at once, without SQLite's busy handler waiting.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
    if str(mode).lower() != "wal":
        raise StateError(
            f"the state store {path} cannot use write-ahead logging (journal mode stays "
            f"{mode}); put .taxiway on a local file system"
        )


def _size(value: float, label: str) -> float:
    """A volume size in GB, within what the platform makes; ``label``: "volume NAME"."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StateError(f"{label}: the size must be a number of GB, not {value!r}")
    if value <= 0:
        raise StateError(f"{label} needs a size above 0 GB, not {value:g} GB")
    if value > MAX_VOLUME_GB:
        raise StateError(
            f"{label} can't be {value:g} GB: the platform's largest volume is {MAX_VOLUME_GB} GB"
        )
    return float(value)


def _retention(value: int, label: str) -> int:
    """A snapshot retention in days, within the platform's 1-60."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or value not in SNAPSHOT_RETENTION_DAYS:
        raise StateError(
            f"{label}: snapshot retention must be a whole number of days from 1 to 60, "
            f"not {value!r}"
        )
    return value


class Store:
    """The state of every app run from one ``.taxiway/`` folder.

    The daemon keeps one open for its lifetime and uses it from its event-loop thread;
    CLI commands open their own (WAL lets them read while the daemon writes). Calls
    are serialised by a lock, so a stray call from another thread is safe, just not
    parallel.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._db = conn
        self._lock = threading.RLock()
        #: The database file.
        self.path = path

    # -- opening and closing ----------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, *, busy_timeout: float = 5.0, fresh_ok: bool = False) -> Store:
        """Open (creating it if needed) the store in `state_dir` and bring its schema
        up to date.

        `busy_timeout` is how long a write waits for another process's write to finish
        before giving up with a `StateError`. A missing or empty database in a folder
        that holds volumes or logs from an earlier state is refused (they would be
        orphaned silently), unless `fresh_ok` (`taxiway state recover`).
        """
        state_dir = Path(state_dir)
        path = state_dir / DB_NAME
        if not fresh_ok and _is_empty(path):
            _refuse_if_orphaning(state_dir, "is empty" if path.exists() else "is missing")
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _chmod(state_dir, 0o700)
            # Create the file private before SQLite does (it would use the umask).
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            _chmod(path, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the state store {path}: {exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state store {path}: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            _use_wal(conn, path, busy_timeout)
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, f"the state store {path}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            failure = _failure(exc, path)
            if failure is not exc:
                raise failure from None
            if isinstance(exc, sqlite3.OperationalError):
                raise StateError(f"cannot open the state store {path}: {exc}") from None
            raise DamagedStoreError(_damaged(path, exc)) from None
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            with suppress(FileNotFoundError):
                _chmod(extra, 0o600)
        store = cls(conn, path)
        if not fresh_ok and not store._rows("SELECT 1 FROM apps LIMIT 1"):
            try:  # a store emptied of its rows: as lost as an empty file
                _refuse_if_orphaning(state_dir, "holds no app")
            except StateError:
                store.close()
                raise
        return store

    def damage(self) -> str | None:
        """What SQLite's quick check finds wrong with the file (None: nothing)."""
        try:
            rows = self._rows("PRAGMA quick_check")
        except StateError as exc:
            return str(exc)
        found = [str(row[0]) for row in rows]
        return None if found == ["ok"] else "; ".join(found[:3])

    @property
    def schema_version(self) -> int:
        """The file's ``PRAGMA user_version`` (`SCHEMA_VERSION` once opened)."""
        with self._lock:
            return user_version(self._db)

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is stored, or none of it.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a read-then-write (next
        release number, changed secrets) can't interleave with another process's.
        ``durable=False`` skips the fsync at commit (WAL with synchronous=NORMAL): still
        atomic and never corrupt, but a power cut may lose the newest such commits. Only
        for what the daemon rewrites constantly (machine states, events), never for what a
        user stored.
        """
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.DatabaseError as exc:
                    raise _failure(exc, self.path) from None
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.DatabaseError):
                        raise _failure(exc, self.path) from None
                    raise
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _failure(exc, self.path) from None

    def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    @staticmethod
    def _require_app(db: sqlite3.Connection, app: str) -> None:
        if db.execute("SELECT 1 FROM apps WHERE name = ?", (app,)).fetchone() is None:
            raise NotFoundError(f"app {app} is not in the state store; it has never been run here")

    # -- apps -----------------------------------------------------------------------------------

    def ensure_app(self, name: str, config_path: str | os.PathLike[str]) -> AppRecord:
        """Record the app (once) and the config file it is now run from."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO apps(name, config_path, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET config_path = excluded.config_path",
                (name, os.fspath(config_path), now()),
            )
            row = db.execute("SELECT * FROM apps WHERE name = ?", (name,)).fetchone()
        return msgspec.convert(_row_dict(row), AppRecord)

    def get_app(self, name: str) -> AppRecord | None:
        """The app, or None when it has never been run from this folder."""
        row = self._one("SELECT * FROM apps WHERE name = ?", (name,))
        return msgspec.convert(_row_dict(row), AppRecord) if row else None

    # -- machines -------------------------------------------------------------------------------

    @staticmethod
    def _machine(row: sqlite3.Row) -> MachineRecord:
        data = _row_dict(row)
        for column in _MACHINE_JSON:
            data[column] = msgspec.json.decode(data[column])
        return msgspec.convert(data, MachineRecord)

    @staticmethod
    def _machine_value(column: str, value: Any) -> Any:
        return _dump(value) if column in _MACHINE_JSON else value

    def add_machine(self, record: MachineRecord) -> MachineRecord:
        """Store a new machine; returns it as stored (timestamps filled in).

        Raises `ValueError` for a malformed record (a caller's bug) and `StateError`
        when the id is taken or the app unknown.
        """
        stamp = now()
        record = msgspec.structs.replace(
            record, created_at=record.created_at or stamp, updated_at=record.updated_at or stamp
        )
        try:
            record = validate(record)
        except msgspec.ValidationError as exc:
            raise ValueError(f"machine {record.id}: {exc}") from None
        columns = ", ".join(_quote(c) for c in _MACHINE_FIELDS)
        marks = ", ".join("?" for _ in _MACHINE_FIELDS)
        values = [self._machine_value(c, getattr(record, c)) for c in _MACHINE_FIELDS]
        with self._tx() as db:
            self._require_app(db, record.app)
            if db.execute("SELECT 1 FROM machines WHERE id = ?", (record.id,)).fetchone():
                raise StateError(f"machine {record.id} already exists")
            db.execute(f"INSERT INTO machines({columns}) VALUES ({marks})", values)
        return record

    def update_machine(self, machine_id: str, **fields: Any) -> MachineRecord:
        """Change some of a machine's fields; returns the machine as now stored.

        Raises `TypeError` for a field a machine doesn't have (or can't change: id,
        app, timestamps), `ValueError` for a value of the wrong kind, and `KeyError`
        (a `NotFoundError`) for an unknown machine. A machine that becomes
        ``destroyed`` lets go of its volume, as on the platform, so the volume can be
        attached again.
        """
        unknown = sorted(set(fields) - _MACHINE_UPDATABLE)
        if unknown:
            raise TypeError(
                f"update_machine() cannot set {', '.join(unknown)}; "
                f"it sets {', '.join(sorted(_MACHINE_UPDATABLE))}"
            )
        with self._tx(durable=False) as db:
            row = db.execute("SELECT * FROM machines WHERE id = ?", (machine_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"there is no machine {machine_id}")
            try:
                record = validate(
                    msgspec.structs.replace(self._machine(row), **fields, updated_at=now())
                )
            except msgspec.ValidationError as exc:
                raise ValueError(f"machine {machine_id}: {exc}") from None
            changed = [*fields, "updated_at"]
            db.execute(
                f"UPDATE machines SET {', '.join(f'{_quote(c)} = ?' for c in changed)} "
                "WHERE id = ?",
                [*(self._machine_value(c, getattr(record, c)) for c in changed), machine_id],
            )
            if record.state == "destroyed":
                db.execute(
                    "UPDATE volumes SET attached_machine_id = NULL WHERE attached_machine_id = ?",
                    (machine_id,),
                )
        return record

    def get_machine(self, machine_id: str) -> MachineRecord | None:
        """The machine with exactly this id, destroyed or not."""
        row = self._one("SELECT * FROM machines WHERE id = ?", (machine_id,))
        return self._machine(row) if row else None

    def find_machine(
        self, prefix: str, *, app: str | None = None, include_destroyed: bool = False
    ) -> MachineRecord:
        """The one machine whose id starts with `prefix` (as ``docker`` finds containers).

        Raises `StateError` (`NotFoundError` for no match) with a sentence a user can act
        on when nothing or more than one machine matches.
        """
        wanted = prefix.strip().lower()
        if not wanted:
            raise StateError("give a machine id, or enough of its start to pick one machine")
        sql = "SELECT * FROM machines WHERE substr(id, 1, ?) = ?"
        params: list[Any] = [len(wanted), wanted]
        if app is not None:
            sql += " AND app = ?"
            params.append(app)
        found = [self._machine(row) for row in self._rows(sql + " ORDER BY id", params)]
        live = [m for m in found if include_destroyed or m.state != "destroyed"]
        if len(live) == 1:
            return live[0]
        where = f" in app {app}" if app is not None else ""
        if not live:
            if len(found) == 1:
                raise NotFoundError(f"machine {found[0].id} was destroyed")
            raise NotFoundError(f"no machine{where} has an id starting with {prefix.strip()!r}")
        shown = ", ".join(m.id for m in live[:5]) + (", …" if len(live) > 5 else "")
        raise StateError(
            f"{len(live)} machines{where} have ids starting with {prefix.strip()!r} "
            f"({shown}); give more of the id"
        )

    def list_machines(
        self, app: str, *, group: str | None = None, include_destroyed: bool = False
    ) -> list[MachineRecord]:
        """The app's machines, oldest first (optionally one process group's)."""
        sql = "SELECT * FROM machines WHERE app = ?"
        params: list[Any] = [app]
        if group is not None:
            sql += ' AND "group" = ?'
            params.append(group)
        if not include_destroyed:
            sql += " AND state != 'destroyed'"
        return [
            self._machine(row) for row in self._rows(sql + " ORDER BY created_at, rowid", params)
        ]

    # -- scale counts -----------------------------------------------------------------------

    def set_count(self, app: str, group: str, n: int) -> None:
        """Remember how many machines `group` should run (``scale count``), for later ``up``s."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"a machine count is an int, not {n!r}")
        if n < 0:
            raise StateError(f"process group {group} can't have a negative machine count ({n})")
        with self._tx() as db:
            self._require_app(db, app)
            db.execute(
                'INSERT INTO scale(app, "group", count) VALUES (?, ?, ?) '
                'ON CONFLICT(app, "group") DO UPDATE SET count = excluded.count',
                (app, group, n),
            )

    def counts(self, app: str) -> dict[str, int]:
        """The stored count per group; groups never scaled are absent (the caller's default)."""
        rows = self._rows('SELECT "group", count FROM scale WHERE app = ? ORDER BY "group"', [app])
        return {row[0]: row[1] for row in rows}

    # -- volumes --------------------------------------------------------------------------------

    @staticmethod
    def _volume(row: sqlite3.Row) -> VolumeRecord:
        data = _row_dict(row)
        data["auto_backup_enabled"] = bool(data.get("auto_backup_enabled", 1))
        return msgspec.convert(data, VolumeRecord)

    def _volume_for_update(self, db: sqlite3.Connection, volume_id: str) -> VolumeRecord:
        row = db.execute("SELECT * FROM volumes WHERE id = ?", (volume_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"there is no volume {volume_id}")
        return self._volume(row)

    @staticmethod
    def _set_volume(db: sqlite3.Connection, volume: VolumeRecord, **fields: Any) -> VolumeRecord:
        updated = msgspec.structs.replace(volume, **fields)
        db.execute(
            f"UPDATE volumes SET {', '.join(f'{c} = ?' for c in fields)} WHERE id = ?",
            [*fields.values(), volume.id],
        )
        return updated

    def create_volume(
        self,
        app: str,
        name: str,
        size_gb: float,
        region: str,
        path: str | os.PathLike[str],
        snapshot_retention: int = 5,
        *,
        volume_id: str | None = None,
        auto_backup_enabled: bool = True,
    ) -> VolumeRecord:
        """Record a new, unattached volume whose data lives in the directory `path`.

        Pass `volume_id` (from `new_volume_id`) when `path` is named after the id;
        otherwise one is made here.
        """
        record = VolumeRecord(
            id=volume_id or new_volume_id(),
            name=name,
            app=app,
            size_gb=_size(size_gb, f"volume {name}"),
            region=region,
            path=os.fspath(path),
            snapshot_retention=_retention(snapshot_retention, f"volume {name}"),
            created_at=now(),
            auto_backup_enabled=auto_backup_enabled,
        )
        try:
            record = validate(record)
        except msgspec.ValidationError as exc:
            raise ValueError(f"volume {record.id}: {exc}") from None
        columns = ", ".join(_VOLUME_FIELDS)
        marks = ", ".join("?" for _ in _VOLUME_FIELDS)
        with self._tx() as db:
            self._require_app(db, app)
            if db.execute("SELECT 1 FROM volumes WHERE id = ?", (record.id,)).fetchone():
                raise StateError(f"volume {record.id} already exists")
            db.execute(
                f"INSERT INTO volumes({columns}) VALUES ({marks})",
                [getattr(record, c) for c in _VOLUME_FIELDS],
            )
        write_label(record)
        return record

    def get_volume(self, volume_id: str) -> VolumeRecord | None:
        """The volume with exactly this id, destroyed or not."""
        row = self._one("SELECT * FROM volumes WHERE id = ?", (volume_id,))
        return self._volume(row) if row else None

    def list_volumes(self, app: str, include_destroyed: bool = False) -> list[VolumeRecord]:
        """The app's volumes, oldest first."""
        sql = "SELECT * FROM volumes WHERE app = ?"
        if not include_destroyed:
            sql += " AND state != 'destroyed'"
        return [self._volume(row) for row in self._rows(sql + " ORDER BY created_at, rowid", [app])]

    def attach_volume(self, volume_id: str, machine_id: str) -> VolumeRecord:
        """Attach the volume to the machine (again, after a restart: a no-op).

        Keeps the platform's rules: one machine per volume, one volume per machine, same
        app and region, neither destroyed.
        """
        with self._tx() as db:
            volume = self._volume_for_update(db, volume_id)
            label = f"volume {volume.id} ({volume.name})"
            if volume.state == "destroyed":
                raise StateError(f"{label} is destroyed and can't be attached")
            row = db.execute("SELECT * FROM machines WHERE id = ?", (machine_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"there is no machine {machine_id} to attach {label} to")
            machine = self._machine(row)
            if machine.state == "destroyed":
                raise StateError(f"machine {machine_id} is destroyed; {label} can't be attached")
            if machine.app != volume.app:
                raise StateError(
                    f"{label} belongs to app {volume.app}, machine {machine_id} to {machine.app}"
                )
            if machine.region != volume.region:
                raise StateError(
                    f"{label} is in region {volume.region} and machine {machine_id} in "
                    f"{machine.region}; a machine can only attach a volume in its own region"
                )
            if volume.attached_machine_id == machine_id:
                return volume
            if volume.attached_machine_id is not None:
                raise StateError(
                    f"{label} is attached to machine {volume.attached_machine_id}; detach it first"
                )
            other = db.execute(
                "SELECT id FROM volumes WHERE attached_machine_id = ?", (machine_id,)
            ).fetchone()
            if other is not None:
                raise StateError(
                    f"machine {machine_id} already has volume {other[0]} attached; "
                    "a machine mounts at most one volume"
                )
            return self._set_volume(db, volume, attached_machine_id=machine_id)

    def detach_volume(self, volume_id: str) -> VolumeRecord:
        """Detach the volume from its machine (a no-op when it is not attached)."""
        with self._tx() as db:
            volume = self._volume_for_update(db, volume_id)
            if volume.attached_machine_id is None:
                return volume
            return self._set_volume(db, volume, attached_machine_id=None)

    def extend_volume(self, volume_id: str, size_gb: float) -> VolumeRecord:
        """Grow the volume to `size_gb`; volumes are never shrunk (data would not fit)."""
        with self._tx() as db:
            volume = self._volume_for_update(db, volume_id)
            label = f"volume {volume.id} ({volume.name})"
            size = _size(size_gb, label)
            if volume.state == "destroyed":
                raise StateError(f"{label} is destroyed and can't be extended")
            if size < volume.size_gb:
                raise StateError(
                    f"{label} is {volume.size_gb:g} GB and can't shrink to {size:g} GB; "
                    "volumes can only be extended"
                )
            if size == volume.size_gb:
                return volume
            volume = self._set_volume(db, volume, size_gb=size)
        write_label(volume)
        return volume

    def update_volume(
        self,
        volume_id: str,
        *,
        snapshot_retention: int | None = None,
        auto_backup_enabled: bool | None = None,
    ) -> VolumeRecord:
        """Change how the volume is snapshotted (None: leave as it is). A new retention
        applies to snapshots taken from now on; older ones keep theirs."""
        with self._tx() as db:
            volume = self._volume_for_update(db, volume_id)
            label = f"volume {volume.id} ({volume.name})"
            if volume.state == "destroyed":
                raise StateError(f"{label} is destroyed and can't be updated")
            fields: dict[str, Any] = {}
            if snapshot_retention is not None:
                fields["snapshot_retention"] = _retention(snapshot_retention, label)
            if auto_backup_enabled is not None:
                fields["auto_backup_enabled"] = bool(auto_backup_enabled)
            if not fields:
                return volume
            return self._set_volume(db, volume, **fields)

    def destroy_volume(self, volume_id: str) -> VolumeRecord:
        """Mark the volume destroyed (the caller deletes its directory); refused while a
        machine has it attached, so no running machine loses its data underneath it."""
        with self._tx() as db:
            volume = self._volume_for_update(db, volume_id)
            label = f"volume {volume.id} ({volume.name})"
            if volume.state == "destroyed":
                raise StateError(f"{label} is already destroyed")
            if volume.attached_machine_id is not None:
                raise StateError(
                    f"{label} is attached to machine {volume.attached_machine_id}; "
                    "destroy that machine or detach the volume first"
                )
            return self._set_volume(db, volume, state="destroyed")

    def find_unattached_volume(self, app: str, name: str, region: str) -> VolumeRecord | None:
        """The oldest live, unattached volume called `name` in `region`: what a new machine
        of a group that mounts `name` gets before a volume is created for it."""
        row = self._one(
            "SELECT * FROM volumes WHERE app = ? AND name = ? AND region = ? "
            "AND state = 'created' AND attached_machine_id IS NULL "
            "ORDER BY created_at, rowid LIMIT 1",
            (app, name, region),
        )
        return self._volume(row) if row else None

    def volume_for_machine(self, machine_id: str) -> VolumeRecord | None:
        """The volume attached to the machine, if any."""
        row = self._one("SELECT * FROM volumes WHERE attached_machine_id = ?", (machine_id,))
        return self._volume(row) if row else None

    # -- volume snapshots ---------------------------------------------------------------------

    @staticmethod
    def _snapshot(row: sqlite3.Row) -> SnapshotRecord:
        return msgspec.convert(_row_dict(row), SnapshotRecord)

    def add_snapshot(self, record: SnapshotRecord) -> SnapshotRecord:
        """Record a snapshot whose archive is complete (``created_at`` filled in when
        empty)."""
        if not record.created_at:
            record = msgspec.structs.replace(record, created_at=now())
        try:
            record = validate(record)
        except msgspec.ValidationError as exc:
            raise ValueError(f"snapshot {record.id}: {exc}") from None
        with self._tx() as db:
            self._require_app(db, record.app)
            self._volume_for_update(db, record.volume_id)
            db.execute(
                f"INSERT INTO volume_snapshots({', '.join(_SNAPSHOT_FIELDS)}) "
                f"VALUES ({', '.join('?' for _ in _SNAPSHOT_FIELDS)})",
                [getattr(record, f) for f in _SNAPSHOT_FIELDS],
            )
        return record

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        row = self._one("SELECT * FROM volume_snapshots WHERE id = ?", (snapshot_id,))
        return self._snapshot(row) if row else None

    def list_snapshots(
        self, app: str, volume_id: str | None = None, *, kind: str | None = None
    ) -> list[SnapshotRecord]:
        """The app's (or one volume's) snapshots, oldest first."""
        sql, params = "SELECT * FROM volume_snapshots WHERE app = ?", [app]
        if volume_id is not None:
            sql += " AND volume_id = ?"
            params.append(volume_id)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._rows(sql + " ORDER BY created_at, rowid", params)
        return [self._snapshot(row) for row in rows]

    def remove_snapshots(self, snapshot_ids: Iterable[str]) -> None:
        """Forget these snapshots (the caller deletes their archives)."""
        with self._tx() as db:
            db.executemany(
                "DELETE FROM volume_snapshots WHERE id = ?", [(i,) for i in snapshot_ids]
            )

    # -- secrets --------------------------------------------------------------------------------

    def set_secrets(self, app: str, values: Mapping[str, str]) -> list[str]:
        """Store secrets; returns the names whose value changed (new ones included), in
        the order given. Unchanged ones keep their `updated_at`, so nothing restarts."""
        for name, value in values.items():
            if not isinstance(value, str):
                raise TypeError(f"secret {name}: a value is a str, not {type(value).__name__}")
        with self._tx() as db:
            self._require_app(db, app)
            current = {
                row[0]: row[1]
                for row in db.execute("SELECT name, value FROM secrets WHERE app = ?", (app,))
            }
            changed = [name for name, value in values.items() if current.get(name) != value]
            stamp = now()
            db.executemany(
                "INSERT INTO secrets(app, name, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(app, name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                [(app, name, values[name], stamp) for name in changed],
            )
        return changed

    def unset_secrets(self, app: str, names: Iterable[str]) -> list[str]:
        """Remove secrets; returns the names that existed (in the order given)."""
        wanted = list(dict.fromkeys(names))
        with self._tx() as db:
            existing = {
                row[0] for row in db.execute("SELECT name FROM secrets WHERE app = ?", (app,))
            }
            gone = [name for name in wanted if name in existing]
            db.executemany(
                "DELETE FROM secrets WHERE app = ? AND name = ?", [(app, name) for name in gone]
            )
        return gone

    def list_secrets(self, app: str) -> list[SecretRecord]:
        """Names, digests and dates, sorted by name: what may be printed."""
        rows = self._rows(
            "SELECT name, value, updated_at FROM secrets WHERE app = ? ORDER BY name", [app]
        )
        return [
            SecretRecord(name=r[0], digest=sha256_hex(r[1])[:16], updated_at=r[2]) for r in rows
        ]

    def secret_values(self, app: str) -> dict[str, str]:
        """Every secret's value, by name: for machine environments only, never for output."""
        rows = self._rows("SELECT name, value FROM secrets WHERE app = ? ORDER BY name", [app])
        return {r[0]: r[1] for r in rows}

    def secrets_digest(self, app: str) -> str:
        """A sha256 hex over every name and value: machines started under another digest
        run with stale secrets. Stable across calls, orders and reopenings."""
        pairs = sorted(self.secret_values(app).items())
        return sha256_hex(json.dumps(pairs, ensure_ascii=False, separators=(",", ":")))

    # -- releases -------------------------------------------------------------------------------

    @staticmethod
    def _release(row: sqlite3.Row) -> ReleaseRecord:
        return msgspec.convert(_row_dict(row), ReleaseRecord)

    def create_release(
        self,
        app: str,
        *,
        config_json: str,
        strategy: str,
        image_ref: str = "",
        description: str = "",
    ) -> ReleaseRecord:
        """Start a release: the app's next version (1, 2, …), status ``running``."""
        with self._tx() as db:
            self._require_app(db, app)
            (version,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app = ?", (app,)
            ).fetchone()
            record = ReleaseRecord(
                version=version,
                app=app,
                status="running",
                strategy=strategy,
                config_json=config_json,
                config_digest=sha256_hex(config_json),
                image_ref=image_ref,
                created_at=now(),
                description=description,
            )
            fields = ReleaseRecord.__struct_fields__
            db.execute(
                f"INSERT INTO releases({', '.join(fields)}) "
                f"VALUES ({', '.join('?' for _ in fields)})",
                [getattr(record, f) for f in fields],
            )
        return record

    def set_release_status(self, app: str, version: int, status: str) -> ReleaseRecord:
        """Record how a release went (running → complete, failed, rolled_back, interrupted)."""
        if status not in RELEASE_STATUSES:
            raise ValueError(
                f"release status {status!r} is not one of {', '.join(RELEASE_STATUSES)}"
            )
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM releases WHERE app = ? AND version = ?", (app, version)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"app {app} has no release v{version}")
            db.execute(
                "UPDATE releases SET status = ? WHERE app = ? AND version = ?",
                (status, app, version),
            )
        return msgspec.structs.replace(self._release(row), status=status)  # type: ignore[arg-type]

    def set_release_command(
        self, app: str, version: int, machine_id: str, exit_code: int | None
    ) -> None:
        """Record which one-off machine ran release ``version``'s release command, and
        how it exited."""
        with self._tx() as db:
            db.execute(
                "UPDATE releases SET release_command_machine = ?, release_command_exit = ? "
                "WHERE app = ? AND version = ?",
                (machine_id, exit_code, app, version),
            )

    def set_release_image(self, app: str, version: int, image_ref: str) -> ReleaseRecord:
        """Record the image a deploy built for release ``version`` (the docker driver
        builds once the release exists, so that a failed build is a failed release)."""
        with self._tx() as db:
            db.execute(
                "UPDATE releases SET image_ref = ? WHERE app = ? AND version = ?",
                (image_ref, app, version),
            )
        release = self.get_release(app, version)
        if release is None:
            raise NotFoundError(f"app {app} has no release v{version}")
        return release

    def get_release(self, app: str, version: int) -> ReleaseRecord | None:
        """One release by its version number."""
        row = self._one("SELECT * FROM releases WHERE app = ? AND version = ?", (app, version))
        return self._release(row) if row else None

    def list_releases(self, app: str) -> list[ReleaseRecord]:
        """The app's releases, newest first (as ``fly releases`` lists them)."""
        rows = self._rows("SELECT * FROM releases WHERE app = ? ORDER BY version DESC", [app])
        return [self._release(row) for row in rows]

    def latest_release(self, app: str, status: str | None = None) -> ReleaseRecord | None:
        """The newest release (with that status, when given), or None."""
        sql = "SELECT * FROM releases WHERE app = ?"
        params: list[Any] = [app]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        row = self._one(sql + " ORDER BY version DESC LIMIT 1", params)
        return self._release(row) if row else None

    # -- events ---------------------------------------------------------------------------------

    def add_event(
        self,
        app: str,
        type: str,
        *,
        machine_id: str | None = None,
        status: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> EventRecord:
        """Append an event (start, exit, restart, stop, launch_failed, update, …).

        Only the newest `MAX_EVENTS` per app are kept, so a crash-looping machine can't
        grow the store without bound.
        """
        payload = dict(data or {})
        encoded = _dump(payload)
        stamp = now()
        with self._tx(durable=False) as db:
            cursor = db.execute(
                "INSERT INTO events(app, machine_id, type, status, data, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (app, machine_id, type, status, encoded, stamp),
            )
            event_id = cursor.lastrowid
            assert event_id is not None
            if event_id % 100 == 0:  # prune now and then, not on every write
                db.execute(
                    "DELETE FROM events WHERE app = ? AND id <= ?", (app, event_id - MAX_EVENTS)
                )
        return EventRecord(
            id=event_id,
            app=app,
            machine_id=machine_id,
            type=type,
            status=status,
            data=msgspec.json.decode(encoded),
            created_at=stamp,
        )

    def events(
        self, app: str, *, machine_id: str | None = None, limit: int | None = 100
    ) -> list[EventRecord]:
        """The app's (or one machine's) events, newest first; `limit=None` for all."""
        sql = "SELECT * FROM events WHERE app = ?"
        params: list[Any] = [app]
        if machine_id is not None:
            sql += " AND machine_id = ?"
            params.append(machine_id)
        params.append(-1 if limit is None else max(limit, 0))
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", params)
        events = []
        for row in rows:
            data = _row_dict(row)
            data["data"] = msgspec.json.decode(data["data"])
            events.append(msgspec.convert(data, EventRecord))
        return events
