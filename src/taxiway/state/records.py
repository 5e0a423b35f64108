"""The typed rows of the state store, and the errors it raises.

Records are frozen `msgspec.Struct`s so the daemon can hand them to the API and the
CLI (``msgspec.json.encode``) without a mapping layer. Constructing one does not
validate it; the store validates every record it writes (`validate`), so a bad id
or an unknown state is caught before it reaches the file rather than after.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec

from taxiway.errors import TaxiwayError

# -- errors ----------------------------------------------------------------------------------


class StateError(TaxiwayError):
    """Something asked of the store that the stored state doesn't allow (one sentence)."""


class NotFoundError(StateError, KeyError):
    """A machine, volume or release the store doesn't hold.

    A `KeyError` too, so code that looks a record up can catch the usual exception,
    while the CLI still prints its sentence (a plain KeyError would print it quoted).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# -- value types -----------------------------------------------------------------------------

MachineState = Literal[
    "created",
    "starting",
    "started",
    "stopping",
    "stopped",
    "suspending",
    "suspended",
    "destroying",
    "destroyed",
    "failed",
    "replacing",
]
MACHINE_STATES: tuple[str, ...] = get_args(MachineState)

ReleaseStatus = Literal["running", "complete", "failed", "rolled_back", "interrupted"]
RELEASE_STATUSES: tuple[str, ...] = get_args(ReleaseStatus)

VolumeState = Literal["created", "destroyed"]
#: A scheduled (daily) snapshot or one a user asked for.
SnapshotKind = Literal["scheduled", "manual"]

#: 14 lowercase hex characters, like the platform's machine ids.
MachineId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{14}$")]
#: A ULID in Crockford base32 (``FLY_MACHINE_VERSION``); decoders accept either case.
InstanceId = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")]
#: ``vol_`` and 16 lowercase letters or digits, like the platform's volume ids.
VolumeId = Annotated[str, msgspec.Meta(pattern=r"^vol_[0-9a-z]{16}$")]
#: ``vs_`` and 16 letters or digits, like the platform's volume snapshot ids.
SnapshotId = Annotated[str, msgspec.Meta(pattern=r"^vs_[0-9A-Za-z]{16}$")]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]

_VOLUME_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def now() -> str:
    """The current time as the store writes it: ISO-8601 UTC with milliseconds and ``Z``.

    One fixed width, so timestamps sort as text in SQL.
    """
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_volume_id() -> str:
    """A fresh volume id (``vol_`` + 16 random lowercase alphanumerics).

    Public so a caller that names the data directory after the volume can make the
    id first and pass it to `Store.create_volume`.
    """
    import secrets  # here: most daemons never make a volume, and it costs their start-up

    return "vol_" + "".join(secrets.choice(_VOLUME_ID_ALPHABET) for _ in range(16))


def new_snapshot_id() -> str:
    """A fresh volume snapshot id (``vs_`` + 16 random letters or digits)."""
    import secrets
    import string

    alphabet = string.digits + string.ascii_letters
    return "vs_" + "".join(secrets.choice(alphabet) for _ in range(16))


# -- records ---------------------------------------------------------------------------------


class AppRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An app this state folder has run, and the config file it was run from."""

    name: str
    config_path: str
    created_at: str


class MachineRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One machine as the daemon last knew it; enough to re-adopt or reap it after a crash."""

    id: MachineId
    app: str
    group: str
    state: MachineState
    region: str
    #: The machine's version, a ULID (``FLY_MACHINE_VERSION``); changes on every update.
    instance_id: InstanceId
    private_ip: str
    release_version: NonNegative = 0
    restarts: NonNegative = 0
    exit_code: int | None = None
    pid: int | None = None
    pgid: int | None = None
    #: When the process started (seconds since the epoch), so a restarted daemon can tell
    #: its machine from an unrelated process that got the same pid.
    pid_start_time: float | None = None
    #: internal port (as text: JSON object keys) → host port.
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    #: The machine's name (the Machines API's ``name``; "" for one made from fly.toml).
    name: str = ""
    #: For a machine made through the Machines API: ``config`` (the API config as it was
    #: accepted), ``skip_service_registration``, and ``resume`` (it ran when the daemon
    #: stopped: the next `up` starts it again). None for a machine made from fly.toml.
    api: dict[str, Any] | None = None
    #: Filled in by `Store.add_machine` when empty.
    created_at: str = ""
    #: Set by the store on every write.
    updated_at: str = ""


class VolumeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A volume: a host directory that outlives the machines it is attached to."""

    id: VolumeId
    name: str
    app: str
    size_gb: float
    region: str
    #: The host directory holding the volume's data.
    path: str
    attached_machine_id: str | None = None
    snapshot_retention: int = 5
    created_at: str = ""
    state: VolumeState = "created"
    #: Whether the daemon takes a daily snapshot (the platform's ``auto_backup_enabled``,
    #: fly.toml's ``scheduled_snapshots``).
    auto_backup_enabled: bool = True


class SnapshotRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A volume snapshot: an archive of the volume's data under ``.taxiway/snapshots``.

    It outlives its volume (a destroyed volume can be restored from one) until its own
    `retention_days` have passed: the retention the volume had when it was taken, as
    the platform keeps it per snapshot (https://fly.io/docs/volumes/snapshots/)."""

    id: SnapshotId
    volume_id: VolumeId
    app: str
    kind: SnapshotKind
    #: Always ``created``: a snapshot is recorded only once its archive is complete.
    status: str = "created"
    #: The archive's size in bytes.
    size: NonNegative = 0
    #: sha256 hex of the archive.
    digest: str = ""
    retention_days: Annotated[int, msgspec.Meta(ge=1)] = 5
    #: The volume's size when it was taken: the smallest a volume restored from it may be.
    volume_size_gb: float = 1.0
    created_at: str = ""


class SecretRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A secret as it may be shown: its name and a digest, never its value."""

    name: str
    #: The first 16 hex characters of the value's sha256.
    digest: str
    updated_at: str


class ReleaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One release: the config (and image) a deploy rolled out, and how it went."""

    version: int
    app: str
    status: ReleaseStatus
    strategy: str
    config_json: str
    #: sha256 hex of `config_json`, to tell whether two releases carry the same config.
    config_digest: str
    image_ref: str = ""
    created_at: str = ""
    description: str = ""
    #: The one-off machine that ran the release command ("" when it had none) and its
    #: exit code (-N: stopped by signal N; None: it never ran to an exit).
    release_command_machine: str = ""
    release_command_exit: int | None = None


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Something that happened to an app or one of its machines (start, exit, restart, …)."""

    id: int
    app: str
    machine_id: str | None
    type: str
    status: str
    data: dict[str, Any]
    created_at: str


R = TypeVar("R", bound=msgspec.Struct)


def validate(record: R) -> R:
    """The record checked against its declared types (ids, states, numbers).

    Raises `ValueError` (a `msgspec.ValidationError`) naming the field: a record that
    fails is a bug in the caller, not something a user typed.
    """
    return msgspec.convert(msgspec.structs.asdict(record), type(record))
