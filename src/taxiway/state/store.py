"""The daemon's state in SQLite: apps, machines, scale counts, secrets, releases, events.

One file, ``.taxiway/taxiway.db`` (0600: it holds secrets), in WAL mode so client
commands can read while the daemon writes. The schema moves forward by numbered
migrations (``PRAGMA user_version``) that only ever add, so nothing a user stored
is lost by an upgrade; every write runs in a transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from taxiway.errors import TaxiwayError

DB_NAME = "taxiway.db"

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        config_path TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL REFERENCES apps(name),
        "group" TEXT NOT NULL,
        state TEXT NOT NULL,
        region TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        private_ip TEXT NOT NULL,
        release_version INTEGER NOT NULL DEFAULT 0,
        restarts INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        pid INTEGER,
        pgid INTEGER,
        pid_start_time REAL,
        ports TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX machines_app ON machines(app, "group");
    CREATE TABLE scale (
        app TEXT NOT NULL REFERENCES apps(name),
        "group" TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (app, "group")
    );
    CREATE TABLE secrets (
        app TEXT NOT NULL REFERENCES apps(name),
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE releases (
        app TEXT NOT NULL REFERENCES apps(name),
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        strategy TEXT NOT NULL,
        config_json TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        image_ref TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (app, version)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        machine_id TEXT,
        type TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE INDEX events_machine ON events(app, machine_id);
    """,
)


class StateError(TaxiwayError):
    """Something asked of the store that the stored state doesn't allow."""


class MachineRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    app: str
    group: str
    state: str
    region: str
    instance_id: str
    private_ip: str
    release_version: int = 0
    restarts: int = 0
    exit_code: int | None = None
    pid: int | None = None
    pgid: int | None = None
    pid_start_time: float | None = None
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


class SecretRecord(msgspec.Struct, frozen=True):
    name: str
    digest: str
    updated_at: str


class ReleaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    version: int
    status: str
    strategy: str
    config_json: str
    config_digest: str
    image_ref: str
    description: str
    created_at: str


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    app: str
    machine_id: str | None
    type: str
    status: str
    data: dict[str, Any]
    created_at: str


_MACHINE_COLUMNS = tuple(MachineRecord.__struct_fields__)
_JSON_COLUMNS = {"ports", "metadata"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._db = conn
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / DB_NAME
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        path.chmod(0o600)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        store = cls(conn, path)
        store._migrate()
        for suffix in ("-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                extra.chmod(0o600)
        return store

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._db:
            return self._db.execute(sql, params)

    def close(self) -> None:
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

    # -- apps -----------------------------------------------------------------------------

    def ensure_app(self, name: str, config_path: str) -> None:
        self._write(
            "INSERT INTO apps(name, config_path, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET config_path = excluded.config_path",
            (name, config_path, now()),
        )

    # -- machines ---------------------------------------------------------------------------

    def add_machine(self, record: MachineRecord) -> None:
        values = {col: self._encode(col, getattr(record, col)) for col in _MACHINE_COLUMNS}
        columns = ", ".join(f'"{c}"' for c in values)
        self._write(
            f"INSERT INTO machines({columns}) VALUES ({', '.join('?' for _ in values)})",
            tuple(values.values()),
        )

    def update_machine(self, machine_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(_MACHINE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown machine fields: {sorted(unknown)}")
        fields["updated_at"] = now()
        assignments = ", ".join(f'"{c}" = ?' for c in fields)
        params = tuple(self._encode(c, v) for c, v in fields.items())
        cursor = self._write(
            f"UPDATE machines SET {assignments} WHERE id = ?", (*params, machine_id)
        )
        if cursor.rowcount == 0:
            raise KeyError(machine_id)

    def get_machine(self, machine_id: str) -> MachineRecord | None:
        row = self._db.execute("SELECT * FROM machines WHERE id = ?", (machine_id,)).fetchone()
        return self._machine(row) if row else None

    def list_machines(
        self, app: str, *, group: str | None = None, include_destroyed: bool = False
    ) -> list[MachineRecord]:
        sql = "SELECT * FROM machines WHERE app = ?"
        params: list[Any] = [app]
        if group is not None:
            sql += ' AND "group" = ?'
            params.append(group)
        if not include_destroyed:
            sql += " AND state != 'destroyed'"
        rows = self._db.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [self._machine(row) for row in rows]

    @staticmethod
    def _encode(column: str, value: Any) -> Any:
        return json.dumps(value) if column in _JSON_COLUMNS else value

    @staticmethod
    def _machine(row: sqlite3.Row) -> MachineRecord:
        data = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a mapping
        for column in _JSON_COLUMNS:
            data[column] = json.loads(data[column])
        return msgspec.convert(data, MachineRecord)

    # -- scale ----------------------------------------------------------------------------

    def set_count(self, app: str, group: str, count: int) -> None:
        self._write(
            'INSERT INTO scale(app, "group", count) VALUES (?, ?, ?) '
            'ON CONFLICT(app, "group") DO UPDATE SET count = excluded.count',
            (app, group, count),
        )

    def counts(self, app: str) -> dict[str, int]:
        rows = self._db.execute('SELECT "group", count FROM scale WHERE app = ?', (app,))
        return {row[0]: row[1] for row in rows}

    # -- secrets -----------------------------------------------------------------------------

    def set_secrets(self, app: str, values: dict[str, str]) -> list[str]:
        """Store secrets; returns the names whose value changed."""
        current = self.secret_values(app)
        changed = [name for name, value in values.items() if current.get(name) != value]
        with self._db:
            for name in changed:
                self._db.execute(
                    "INSERT INTO secrets(app, name, value, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(app, name) DO UPDATE SET value = excluded.value, "
                    "updated_at = excluded.updated_at",
                    (app, name, values[name], now()),
                )
        return changed

    def unset_secrets(self, app: str, names: list[str]) -> list[str]:
        existing = set(self.secret_values(app))
        gone = [name for name in names if name in existing]
        with self._db:
            for name in gone:
                self._db.execute("DELETE FROM secrets WHERE app = ? AND name = ?", (app, name))
        return gone

    def list_secrets(self, app: str) -> list[SecretRecord]:
        rows = self._db.execute(
            "SELECT name, value, updated_at FROM secrets WHERE app = ? ORDER BY name", (app,)
        )
        return [SecretRecord(r[0], _digest(r[1])[:16], r[2]) for r in rows]

    def secret_values(self, app: str) -> dict[str, str]:
        rows = self._db.execute("SELECT name, value FROM secrets WHERE app = ?", (app,))
        return {r[0]: r[1] for r in rows}

    # -- releases -----------------------------------------------------------------------------

    def create_release(
        self,
        app: str,
        *,
        config_json: str,
        strategy: str,
        image_ref: str = "",
        description: str = "",
    ) -> ReleaseRecord:
        with self._db:
            version = self._db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app = ?", (app,)
            ).fetchone()[0]
            self._db.execute(
                "INSERT INTO releases VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (
                    app,
                    version,
                    strategy,
                    config_json,
                    _digest(config_json),
                    image_ref,
                    description,
                    now(),
                ),
            )
        release = self.latest_release(app)
        assert release is not None
        return release

    def set_release_status(self, app: str, version: int, status: str) -> None:
        self._write(
            "UPDATE releases SET status = ? WHERE app = ? AND version = ?", (status, app, version)
        )

    def latest_release(self, app: str, status: str | None = None) -> ReleaseRecord | None:
        sql = "SELECT * FROM releases WHERE app = ?"
        params: list[Any] = [app]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        row = self._db.execute(sql + " ORDER BY version DESC LIMIT 1", params).fetchone()
        return ReleaseRecord(**{k: row[k] for k in row.keys()}) if row else None  # noqa: SIM118

    # -- events --------------------------------------------------------------------------------

    def add_event(
        self,
        app: str,
        type: str,
        *,
        machine_id: str | None = None,
        status: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        self._write(
            "INSERT INTO events(app, machine_id, type, status, data, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (app, machine_id, type, status, json.dumps(data or {}), now()),
        )

    def events(
        self, app: str, *, machine_id: str | None = None, limit: int = 100
    ) -> list[EventRecord]:
        sql = "SELECT * FROM events WHERE app = ?"
        params: list[Any] = [app]
        if machine_id is not None:
            sql += " AND machine_id = ?"
            params.append(machine_id)
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [
            EventRecord(
                id=r["id"],
                app=r["app"],
                machine_id=r["machine_id"],
                type=r["type"],
                status=r["status"],
                data=json.loads(r["data"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]
