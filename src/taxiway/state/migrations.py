"""The store's schema, as forward-only migrations numbered by ``PRAGMA user_version``.

Migration *n* (1-based) takes a database from ``user_version = n - 1`` to *n*; each
runs in its own transaction together with the version bump, so a failure leaves the
file exactly as it was. Rules for adding one (append, never edit a shipped one —
users' files were made by it):

- add tables, indexes and columns (``ALTER TABLE … ADD COLUMN`` with a default);
- to reshape a table, create the new one and copy the rows over; never ``DROP`` a
  table or column that holds data a user stored;
- a step is one SQL statement, or a function of the connection for data changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from taxiway.state.records import StateError

Step = str | Callable[[sqlite3.Connection], None]
Migration = tuple[Step, ...]

MIGRATIONS: tuple[Migration, ...] = (
    # 1: apps, machines, scale counts, secrets, releases, events (taxiway 0.1's first schema).
    (
        """CREATE TABLE apps (
            name TEXT PRIMARY KEY,
            config_path TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE machines (
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
        )""",
        'CREATE INDEX machines_app ON machines(app, "group")',
        """CREATE TABLE scale (
            app TEXT NOT NULL REFERENCES apps(name),
            "group" TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (app, "group")
        )""",
        """CREATE TABLE secrets (
            app TEXT NOT NULL REFERENCES apps(name),
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (app, name)
        )""",
        """CREATE TABLE releases (
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
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            app TEXT NOT NULL,
            machine_id TEXT,
            type TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX events_machine ON events(app, machine_id)",
    ),
    # 2: volumes; an index for an app's newest events.
    (
        """CREATE TABLE volumes (
            id TEXT PRIMARY KEY,
            app TEXT NOT NULL REFERENCES apps(name),
            name TEXT NOT NULL,
            size_gb REAL NOT NULL,
            region TEXT NOT NULL,
            path TEXT NOT NULL,
            attached_machine_id TEXT REFERENCES machines(id),
            snapshot_retention INTEGER NOT NULL DEFAULT 5,
            created_at TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'created'
        )""",
        "CREATE INDEX volumes_app ON volumes(app, name, region)",
        # The platform's rule: a machine mounts at most one volume.
        """CREATE UNIQUE INDEX volumes_attached ON volumes(attached_machine_id)
            WHERE attached_machine_id IS NOT NULL""",
        "CREATE INDEX events_app ON events(app, id)",
    ),
    # 3: which one-off machine ran a release's release command, and its exit code.
    (
        "ALTER TABLE releases ADD COLUMN release_command_machine TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE releases ADD COLUMN release_command_exit INTEGER",
    ),
    # 4: machines made through the Machines API: their name, and what the API asked for
    # (the config as JSON, null for a machine taxiway made from fly.toml).
    (
        "ALTER TABLE machines ADD COLUMN name TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE machines ADD COLUMN api TEXT NOT NULL DEFAULT 'null'",
    ),
    # 5: volume snapshots, and whether a volume gets daily ones.
    (
        "ALTER TABLE volumes ADD COLUMN auto_backup_enabled INTEGER NOT NULL DEFAULT 1",
        """CREATE TABLE volume_snapshots (
            id TEXT PRIMARY KEY,
            volume_id TEXT NOT NULL,
            app TEXT NOT NULL REFERENCES apps(name),
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            size INTEGER NOT NULL,
            digest TEXT NOT NULL,
            retention_days INTEGER NOT NULL,
            volume_size_gb REAL NOT NULL,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX volume_snapshots_volume ON volume_snapshots(volume_id, created_at)",
    ),
)

#: The schema version this taxiway writes.
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the database up to date; returns its schema version.

    `conn` must be in autocommit mode (``isolation_level=None``). Safe against another
    process migrating at the same moment: each step re-reads the version under the
    write lock. A file from a newer taxiway is refused rather than written to, since
    this one doesn't know what the newer columns mean.
    """
    target = len(migrations)
    version = user_version(conn)
    while True:
        if version > target:
            raise StateError(
                f"{where} was written by a newer taxiway (schema {version}, this one knows "
                f"up to {target}); upgrade taxiway to use it"
            )
        if version == target:
            return version
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(conn)
            if version < target:
                for step in migrations[version]:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"could not upgrade {where} to schema {version + 1} ({exc}); "
                "the file was left unchanged"
            ) from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
