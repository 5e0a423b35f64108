"""The daemon's state: SQLite under `.taxiway/`, with forward-only migrations.

`Store` is the only way in; the records it returns are frozen `msgspec.Struct`s.
"""

from taxiway.state.migrations import MIGRATIONS, SCHEMA_VERSION
from taxiway.state.records import (
    MACHINE_STATES,
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
    new_snapshot_id,
    new_volume_id,
)
from taxiway.state.store import DB_NAME, Store

__all__ = [
    "DB_NAME",
    "MACHINE_STATES",
    "MIGRATIONS",
    "RELEASE_STATUSES",
    "SCHEMA_VERSION",
    "AppRecord",
    "EventRecord",
    "MachineRecord",
    "NotFoundError",
    "ReleaseRecord",
    "SecretRecord",
    "SnapshotRecord",
    "StateError",
    "Store",
    "VolumeRecord",
    "new_snapshot_id",
    "new_volume_id",
]
