"""The state store on real SQLite files: permissions, migrations, every method, concurrency."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from taxiway.errors import TaxiwayError
from taxiway.state import (
    MIGRATIONS,
    SCHEMA_VERSION,
    MachineRecord,
    NotFoundError,
    StateError,
    Store,
    VolumeRecord,
    new_volume_id,
)
from taxiway.state.migrations import migrate

MID = "d8d4017a0d1438"
OTHER = "0000000000000a"
ULID = "01K0C2RJDPYWESCYT00YJXZM9A"


def machine(machine_id: str = MID, **fields: object) -> MachineRecord:
    values: dict = {
        "id": machine_id,
        "app": "hello",
        "group": "web",
        "state": "created",
        "region": "ams",
        "instance_id": ULID,
        "private_ip": "fdaa:0:1:a7b:0:1:0:2",
        "ports": {"8080": 40001},
        "metadata": {"fly_process_group": "web"},
        "created_at": "2026-11-22T00:00:00.000Z",
        "updated_at": "2026-11-22T00:00:00.000Z",
    }
    values.update(fields)
    return MachineRecord(**values)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".taxiway"


@pytest.fixture
def store(tmp_path: Path, state_dir: Path) -> Iterator[Store]:
    with Store.open(state_dir) as s:
        s.ensure_app("hello", str(tmp_path / "fly.toml"))
        yield s


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- opening, permissions, pragmas ------------------------------------------------------------


def test_open_makes_a_private_folder_and_file_in_wal_mode(state_dir: Path) -> None:
    old = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        store = Store.open(state_dir)
    finally:
        os.umask(old)
    with store:
        store.ensure_app("hello", "fly.toml")
        assert store.path == state_dir / "taxiway.db"
        assert mode(state_dir) == 0o700
        assert mode(store.path) == 0o600
        for suffix in ("-wal", "-shm"):
            extra = state_dir / f"taxiway.db{suffix}"
            assert mode(extra) == 0o600
        pragma = {
            name: store._db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "busy_timeout", "foreign_keys")
        }
        assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}
    # WAL is a property of the file: a plain connection sees it too.
    other = sqlite3.connect(state_dir / "taxiway.db")
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_open_tightens_an_existing_folder_and_file(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    (state_dir / "taxiway.db").touch()
    (state_dir / "taxiway.db").chmod(0o644)
    with Store.open(state_dir) as store:
        assert mode(state_dir) == 0o700
        assert mode(store.path) == 0o600
        assert store.schema_version == SCHEMA_VERSION


def test_open_refuses_a_file_that_is_not_a_database_and_leaves_it(state_dir: Path) -> None:
    state_dir.mkdir()
    junk = b"this is not SQLite, but someone's notes" * 100
    (state_dir / "taxiway.db").write_bytes(junk)
    with pytest.raises(StateError, match=r"taxiway\.db is damaged .*taxiway state recover"):
        Store.open(state_dir)
    assert (state_dir / "taxiway.db").read_bytes() == junk


def test_open_says_why_it_cannot_create_the_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match=r"cannot open the state store .*file/taxiway.db"):
        Store.open(tmp_path / "file")


def test_processes_opening_a_new_store_at_once_all_succeed(state_dir: Path) -> None:
    """`up` and a CLI command may both create the file and run the migrations."""
    opened: list[int] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            with Store.open(state_dir) as s:
                opened.append(s.schema_version)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert opened == [SCHEMA_VERSION] * 6


def test_close_twice_and_the_context_manager(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        store.ensure_app("hello", "fly.toml")
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.get_app("hello")


def test_errors_are_taxiway_errors() -> None:
    assert issubclass(StateError, TaxiwayError)
    assert issubclass(NotFoundError, StateError) and issubclass(NotFoundError, KeyError)
    assert str(NotFoundError("there is no machine x")) == "there is no machine x"


# -- migrations -------------------------------------------------------------------------------


def test_reopening_is_idempotent_and_keeps_data(state_dir: Path, store: Store) -> None:
    store.add_machine(machine())
    store.set_secrets("hello", {"TOKEN": "s3cret"})
    store.close()
    for _ in range(2):
        with Store.open(state_dir) as again:
            assert again.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
            assert again.get_machine(MID) == machine()
            assert again.secret_values("hello") == {"TOKEN": "s3cret"}


def _old_file(state_dir: Path, version: int) -> sqlite3.Connection:
    """A store file as taxiway at schema ``version`` made it, holding app hello."""
    state_dir.mkdir(mode=0o700)
    conn = sqlite3.connect(state_dir / "taxiway.db", isolation_level=None)
    assert migrate(conn, "test db", MIGRATIONS[:version]) == version
    conn.execute("INSERT INTO apps VALUES ('hello', '/x/fly.toml', '2026-01-01T00:00:00.000Z')")
    return conn


def test_a_schema_1_file_is_upgraded_without_losing_data(state_dir: Path) -> None:
    conn = _old_file(state_dir, 1)
    conn.execute(
        'INSERT INTO machines(id, app, "group", state, region, instance_id, private_ip, '
        "ports, created_at, updated_at) VALUES (?, 'hello', 'web', 'stopped', 'ams', ?, '::1', "
        "'{\"8080\": 40000}', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
        (MID, ULID),
    )
    conn.execute("INSERT INTO secrets VALUES ('hello', 'A', 'alpha', '2026-01-01T00:00:00.000Z')")
    conn.close()

    with Store.open(state_dir) as store:
        assert store.schema_version == SCHEMA_VERSION
        kept = store.get_machine(MID)
        assert kept is not None and (kept.state, kept.ports) == ("stopped", {"8080": 40000})
        assert store.secret_values("hello") == {"A": "alpha"}
        volume = store.create_volume("hello", "data", 1, "ams", "/x/vol")
        assert store.attach_volume(volume.id, MID).attached_machine_id == MID


def test_a_schema_2_file_gets_the_release_command_columns(state_dir: Path) -> None:
    conn = _old_file(state_dir, 2)
    conn.execute(
        "INSERT INTO releases(app, version, status, strategy, config_json, config_digest, "
        "created_at) VALUES ('hello', 1, 'complete', 'rolling', '{}', 'd', "
        "'2026-01-01T00:00:00.000Z')"
    )
    conn.close()

    with Store.open(state_dir) as store:
        kept = store.get_release("hello", 1)
        assert kept is not None and kept.status == "complete"
        assert (kept.release_command_machine, kept.release_command_exit) == ("", None)
        store.set_release_command("hello", 1, MID, 3)
        ran = store.get_release("hello", 1)
        assert ran is not None
        assert (ran.release_command_machine, ran.release_command_exit) == (MID, 3)


def test_a_failing_migration_leaves_the_file_unchanged(store: Store) -> None:
    store.set_count("hello", "web", 3)
    broken = (
        *MIGRATIONS,
        ("CREATE TABLE extra (a TEXT)", "INSERT INTO no_such_table VALUES (1)"),
    )
    failing = SCHEMA_VERSION + 1
    with pytest.raises(StateError, match=rf"could not upgrade db to schema {failing} .*unchanged"):
        migrate(store._db, "db", broken)
    assert store.schema_version == SCHEMA_VERSION
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master")}
    assert "extra" not in tables
    assert store.counts("hello") == {"web": 3}


def test_a_migration_step_may_be_a_function(store: Store) -> None:
    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes VALUES ('kept')")

    more = (*MIGRATIONS, ("CREATE TABLE notes (text TEXT)", fill))
    assert migrate(store._db, "db", more) == SCHEMA_VERSION + 1
    assert migrate(store._db, "db", more) == SCHEMA_VERSION + 1  # idempotent
    assert [tuple(r) for r in store._db.execute("SELECT text FROM notes")] == [("kept",)]


def test_a_file_from_a_newer_taxiway_is_refused(state_dir: Path, store: Store) -> None:
    store.set_count("hello", "web", 2)
    store._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StateError, match=r"written by a newer taxiway .*upgrade taxiway"):
        Store.open(state_dir)
    conn = sqlite3.connect(state_dir / "taxiway.db")
    assert conn.execute("SELECT count FROM scale").fetchall() == [(2,)]
    conn.close()


# -- apps -------------------------------------------------------------------------------------


def test_apps(store: Store, tmp_path: Path) -> None:
    first = store.get_app("hello")
    assert first is not None and first.config_path == str(tmp_path / "fly.toml")
    moved = store.ensure_app("hello", tmp_path / "sub" / "fly.toml")
    assert moved.config_path == str(tmp_path / "sub" / "fly.toml")
    assert moved.created_at == first.created_at
    assert store.get_app("nope") is None


# -- machines ---------------------------------------------------------------------------------


def test_add_machine_fills_timestamps_and_refuses_duplicates(store: Store) -> None:
    added = store.add_machine(machine(created_at="", updated_at=""))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", added.created_at)
    assert added.updated_at == added.created_at
    assert store.get_machine(MID) == added
    with pytest.raises(StateError, match=f"^machine {MID} already exists$"):
        store.add_machine(machine())
    with pytest.raises(NotFoundError, match=r"app ghost is not in the state store"):
        store.add_machine(machine(OTHER, app="ghost"))


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"id": "D8D4017A0D1438"}, r"\$\.id"),
        ({"id": "d8d4017a0d14"}, r"\$\.id"),
        ({"state": "running"}, r"\$\.state"),
        ({"instance_id": "not-a-ulid"}, r"\$\.instance_id"),
        ({"restarts": -1}, r"\$\.restarts"),
        ({"ports": {"8080": "40001"}}, r"\$\.ports"),
    ],
)
def test_add_machine_refuses_malformed_records(
    store: Store, fields: dict[str, object], where: str
) -> None:
    with pytest.raises(ValueError, match=where):
        store.add_machine(machine(**fields))
    assert store.list_machines("hello", include_destroyed=True) == []


def test_update_machine(store: Store) -> None:
    store.add_machine(machine())
    updated = store.update_machine(
        MID, state="started", pid=42, pgid=42, pid_start_time=1763769600.25, ports={"8080": 40002}
    )
    assert store.get_machine(MID) == updated
    assert (updated.state, updated.pid, updated.pid_start_time) == ("started", 42, 1763769600.25)
    assert updated.ports == {"8080": 40002}
    assert updated.created_at == "2026-11-22T00:00:00.000Z"
    assert updated.updated_at > updated.created_at
    cleared = store.update_machine(MID, pid=None, pgid=None, pid_start_time=None, exit_code=0)
    assert (cleared.pid, cleared.pgid, cleared.pid_start_time, cleared.exit_code) == (
        None,
        None,
        None,
        0,
    )


def test_update_machine_refuses_unknown_fields_machines_and_values(store: Store) -> None:
    store.add_machine(machine())
    with pytest.raises(TypeError, match=r"cannot set colour"):
        store.update_machine(MID, colour="blue")
    with pytest.raises(TypeError, match=r"cannot set id"):
        store.update_machine(MID, id=OTHER)
    with pytest.raises(KeyError) as missing:
        store.update_machine("ffffffffffffff", state="stopped")
    assert str(missing.value) == "there is no machine ffffffffffffff"
    with pytest.raises(ValueError, match=rf"machine {MID}: .*\$\.state"):
        store.update_machine(MID, state="exploded", pid=7)
    assert store.get_machine(MID) == machine()  # nothing of the bad update was stored


def test_list_machines(store: Store) -> None:
    store.add_machine(machine(OTHER, group="worker", created_at="2026-11-22T00:00:01.000Z"))
    store.add_machine(machine())
    store.ensure_app("other", "fly.toml")
    store.add_machine(machine("bbbbbbbbbbbbbb", app="other"))
    assert [m.id for m in store.list_machines("hello")] == [MID, OTHER]  # oldest first
    assert [m.id for m in store.list_machines("hello", group="worker")] == [OTHER]
    store.update_machine(OTHER, state="destroyed")
    assert [m.id for m in store.list_machines("hello")] == [MID]
    assert len(store.list_machines("hello", include_destroyed=True)) == 2
    assert store.list_machines("nope") == []


def test_machine_json_fields_round_trip(state_dir: Path, store: Store) -> None:
    ports = {"8080": 40001, "9091": 40002}
    metadata = {"fly_process_group": "web", "note": "naïve — ünïcode ✓", "quote": '"x"'}
    store.add_machine(machine(ports=ports, metadata=metadata))
    store.close()
    with Store.open(state_dir) as again:
        got = again.get_machine(MID)
        assert got is not None and (got.ports, got.metadata) == (ports, metadata)
        raw = again._db.execute("SELECT ports FROM machines").fetchone()[0]
        assert msgspec.json.decode(raw) == ports  # readable JSON in the file


def test_find_machine_by_unique_prefix(store: Store) -> None:
    store.add_machine(machine("d8d4017a0d1438"))
    store.add_machine(machine("d8aaaaaaaaaaaa"))
    store.add_machine(machine("e1111111111111"))
    assert store.find_machine("d8d4017a0d1438").id == "d8d4017a0d1438"
    assert store.find_machine("d8d").id == "d8d4017a0d1438"
    assert store.find_machine(" D8D ").id == "d8d4017a0d1438"
    assert store.find_machine("e", app="hello").id == "e1111111111111"
    with pytest.raises(StateError) as ambiguous:
        store.find_machine("d8")
    assert str(ambiguous.value) == (
        "2 machines have ids starting with 'd8' (d8aaaaaaaaaaaa, d8d4017a0d1438); "
        "give more of the id"
    )
    with pytest.raises(NotFoundError, match=r"^no machine has an id starting with 'f0'$"):
        store.find_machine("f0")
    with pytest.raises(NotFoundError, match=r"^no machine in app other has an id starting"):
        store.find_machine("e", app="other")
    with pytest.raises(StateError, match=r"give a machine id"):
        store.find_machine("  ")
    with pytest.raises(NotFoundError, match=r"no machine has an id starting with '%'"):
        store.find_machine("%")  # no LIKE wildcard slips through


def test_find_machine_and_destroyed_machines(store: Store) -> None:
    store.add_machine(machine("d8d4017a0d1438"))
    store.add_machine(machine("d8aaaaaaaaaaaa"))
    store.update_machine("d8aaaaaaaaaaaa", state="destroyed")
    assert store.find_machine("d8").id == "d8d4017a0d1438"  # the destroyed one doesn't count
    with pytest.raises(NotFoundError, match=r"^machine d8aaaaaaaaaaaa was destroyed$"):
        store.find_machine("d8a")
    assert store.find_machine("d8a", include_destroyed=True).state == "destroyed"
    with pytest.raises(StateError, match=r"^2 machines"):
        store.find_machine("d8", include_destroyed=True)


# -- scale counts -----------------------------------------------------------------------------


def test_scale_counts(store: Store) -> None:
    assert store.counts("hello") == {}
    store.set_count("hello", "web", 3)
    store.set_count("hello", "web", 2)
    store.set_count("hello", "worker", 0)
    assert store.counts("hello") == {"web": 2, "worker": 0}
    with pytest.raises(StateError, match=r"^process group web can't have a negative"):
        store.set_count("hello", "web", -1)
    with pytest.raises(TypeError):
        store.set_count("hello", "web", 1.5)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match=r"app ghost"):
        store.set_count("ghost", "web", 1)
    assert store.counts("hello") == {"web": 2, "worker": 0}


# -- volumes ----------------------------------------------------------------------------------


def test_create_and_list_volumes(store: Store, tmp_path: Path) -> None:
    volume = store.create_volume("hello", "data", 1, "ams", tmp_path / "v1")
    assert re.fullmatch(r"vol_[0-9a-z]{16}", volume.id)
    assert (volume.name, volume.app, volume.size_gb, volume.region) == ("data", "hello", 1.0, "ams")
    assert (volume.path, volume.snapshot_retention, volume.state) == (
        str(tmp_path / "v1"),
        5,
        "created",
    )
    assert volume.attached_machine_id is None
    assert store.get_volume(volume.id) == volume
    chosen = new_volume_id()
    second = store.create_volume(
        "hello", "data", 2.5, "ams", f"/v/{chosen}", snapshot_retention=10, volume_id=chosen
    )
    assert (second.id, second.path, second.snapshot_retention) == (chosen, f"/v/{chosen}", 10)
    assert store.list_volumes("hello") == [volume, second]
    with pytest.raises(StateError, match=f"^volume {chosen} already exists$"):
        store.create_volume("hello", "data", 1, "ams", "/v/x", volume_id=chosen)
    with pytest.raises(StateError, match=r"^volume data needs a size above 0 GB, not 0 GB$"):
        store.create_volume("hello", "data", 0, "ams", "/v/x")
    with pytest.raises(StateError, match=r"the size must be a number of GB"):
        store.create_volume("hello", "data", float("nan"), "ams", "/v/x")
    with pytest.raises(ValueError, match=r"\$\.id"):
        store.create_volume("hello", "data", 1, "ams", "/v/x", volume_id="vol_UPPER")
    with pytest.raises(NotFoundError, match=r"app ghost"):
        store.create_volume("ghost", "data", 1, "ams", "/v/x")
    assert len(store.list_volumes("hello")) == 2


def test_attach_and_detach(store: Store) -> None:
    store.add_machine(machine())
    store.add_machine(machine(OTHER))
    volume = store.create_volume("hello", "data", 1, "ams", "/v/1")
    spare = store.create_volume("hello", "data", 1, "ams", "/v/2")
    attached = store.attach_volume(volume.id, MID)
    assert attached.attached_machine_id == MID
    assert store.attach_volume(volume.id, MID) == attached  # again after a restart: no-op
    assert store.volume_for_machine(MID) == attached
    assert store.volume_for_machine(OTHER) is None
    with pytest.raises(StateError) as taken:
        store.attach_volume(volume.id, OTHER)
    assert str(taken.value) == (
        f"volume {volume.id} (data) is attached to machine {MID}; detach it first"
    )
    with pytest.raises(StateError, match=f"^machine {MID} already has volume {volume.id}"):
        store.attach_volume(spare.id, MID)
    with pytest.raises(NotFoundError, match=r"^there is no machine ffffffffffffff to attach"):
        store.attach_volume(spare.id, "ffffffffffffff")
    with pytest.raises(NotFoundError, match=r"^there is no volume vol_0000000000000000$"):
        store.attach_volume("vol_0000000000000000", MID)
    detached = store.detach_volume(volume.id)
    assert detached.attached_machine_id is None
    assert store.detach_volume(volume.id) == detached
    assert store.attach_volume(volume.id, OTHER).attached_machine_id == OTHER


def test_attach_keeps_app_and_region(store: Store) -> None:
    store.ensure_app("other", "fly.toml")
    store.add_machine(machine())
    store.add_machine(machine(OTHER, app="other"))
    store.add_machine(machine("cccccccccccccc", region="ord"))
    volume = store.create_volume("hello", "data", 1, "ams", "/v/1")
    with pytest.raises(StateError, match=f"belongs to app hello, machine {OTHER} to other$"):
        store.attach_volume(volume.id, OTHER)
    with pytest.raises(StateError, match=r"is in region ams and machine cccccccccccccc in ord"):
        store.attach_volume(volume.id, "cccccccccccccc")
    store.update_machine("cccccccccccccc", state="destroyed")
    with pytest.raises(StateError, match=r"^machine cccccccccccccc is destroyed"):
        store.attach_volume(volume.id, "cccccccccccccc")


def test_a_destroyed_machine_lets_go_of_its_volume(store: Store) -> None:
    store.add_machine(machine())
    volume = store.create_volume("hello", "data", 1, "ams", "/v/1")
    store.attach_volume(volume.id, MID)
    assert store.find_unattached_volume("hello", "data", "ams") is None
    store.update_machine(MID, state="stopped")
    assert store.volume_for_machine(MID) is not None  # stopping keeps it
    store.update_machine(MID, state="destroyed")
    assert store.volume_for_machine(MID) is None
    assert store.find_unattached_volume("hello", "data", "ams") == store.get_volume(volume.id)


def test_extend_never_shrinks(store: Store) -> None:
    volume = store.create_volume("hello", "data", 3, "ams", "/v/1")
    assert store.extend_volume(volume.id, 10).size_gb == 10.0
    assert store.extend_volume(volume.id, 10).size_gb == 10.0
    with pytest.raises(StateError) as shrink:
        store.extend_volume(volume.id, 5)
    assert str(shrink.value) == (
        f"volume {volume.id} (data) is 10 GB and can't shrink to 5 GB; volumes can only be extended"
    )
    assert store.get_volume(volume.id).size_gb == 10.0  # type: ignore[union-attr]
    store.destroy_volume(volume.id)
    with pytest.raises(StateError, match=r"is destroyed and can't be extended"):
        store.extend_volume(volume.id, 20)


@pytest.mark.parametrize("size", [501, 1e30])
def test_a_volume_is_at_most_500_gb(store: Store, size: float) -> None:
    volume = store.create_volume("hello", "data", 500, "ams", "/v/1")
    with pytest.raises(StateError) as too_big:
        store.extend_volume(volume.id, size)
    assert str(too_big.value) == (
        f"volume {volume.id} (data) can't be {size:g} GB: the platform's largest volume is 500 GB"
    )
    with pytest.raises(StateError, match="the platform's largest volume is 500 GB"):
        store.create_volume("hello", "big", size, "ams", "/v/2")
    assert store.get_volume(volume.id).size_gb == 500.0  # type: ignore[union-attr]


def test_destroy_refuses_while_attached(store: Store) -> None:
    store.add_machine(machine())
    volume = store.create_volume("hello", "data", 1, "ams", "/v/1")
    store.attach_volume(volume.id, MID)
    with pytest.raises(StateError) as attached:
        store.destroy_volume(volume.id)
    assert str(attached.value) == (
        f"volume {volume.id} (data) is attached to machine {MID}; "
        "destroy that machine or detach the volume first"
    )
    assert store.get_volume(volume.id).state == "created"  # type: ignore[union-attr]
    store.detach_volume(volume.id)
    destroyed = store.destroy_volume(volume.id)
    assert destroyed.state == "destroyed"
    assert store.list_volumes("hello") == []
    assert store.list_volumes("hello", include_destroyed=True) == [destroyed]
    with pytest.raises(StateError, match=r"is already destroyed$"):
        store.destroy_volume(volume.id)
    with pytest.raises(StateError, match=r"is destroyed and can't be attached$"):
        store.attach_volume(volume.id, MID)


def test_find_unattached_volume(store: Store) -> None:
    store.add_machine(machine())
    assert store.find_unattached_volume("hello", "data", "ams") is None
    taken = store.create_volume("hello", "data", 1, "ams", "/v/1")
    store.attach_volume(taken.id, MID)
    gone = store.create_volume("hello", "data", 1, "ams", "/v/2")
    store.destroy_volume(gone.id)
    store.create_volume("hello", "data", 1, "ord", "/v/3")
    store.create_volume("hello", "logs", 1, "ams", "/v/4")
    assert store.find_unattached_volume("hello", "data", "ams") is None
    free = store.create_volume("hello", "data", 1, "ams", "/v/5")
    store.create_volume("hello", "data", 1, "ams", "/v/6")
    assert store.find_unattached_volume("hello", "data", "ams") == free  # the oldest


def test_volume_records_round_trip_as_json(store: Store) -> None:
    volume = store.create_volume("hello", "data", 1.5, "ams", "/v/1")
    assert msgspec.json.decode(msgspec.json.encode(volume), type=VolumeRecord) == volume


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_set_and_unset_report_what_changed(store: Store) -> None:
    assert store.set_secrets("hello", {"B": "two", "A": "hunter2-alpha"}) == ["B", "A"]
    before = {s.name: s for s in store.list_secrets("hello")}
    assert store.set_secrets("hello", {"A": "hunter2-alpha", "B": "hunter2-beta"}) == ["B"]
    after = {s.name: s for s in store.list_secrets("hello")}
    assert after["A"] == before["A"]  # unchanged value: same digest, same date
    assert after["B"].digest != before["B"].digest
    assert store.set_secrets("hello", {}) == []
    assert store.secret_values("hello") == {"A": "hunter2-alpha", "B": "hunter2-beta"}
    assert store.unset_secrets("hello", ["A", "C", "A"]) == ["A"]
    assert store.unset_secrets("hello", ["A"]) == []
    assert store.secret_values("hello") == {"B": "hunter2-beta"}
    with pytest.raises(NotFoundError, match=r"app ghost"):
        store.set_secrets("ghost", {"A": "1"})
    with pytest.raises(TypeError, match=r"secret A: a value is a str"):
        store.set_secrets("hello", {"A": b"bytes"})  # type: ignore[dict-item]
    assert store.secret_values("hello") == {"B": "hunter2-beta"}


def test_secrets_are_listed_by_digest_never_by_value(store: Store) -> None:
    store.set_secrets("hello", {"DB_PASSWORD": "hunter2", "API_KEY": "hunter2-too"})
    listed = store.list_secrets("hello")
    assert [s.name for s in listed] == ["API_KEY", "DB_PASSWORD"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", s.digest) for s in listed)
    assert listed[1].digest == "f52fbd32b2b3b86f"  # sha256("hunter2")[:16]
    shown = repr(listed) + msgspec.json.encode(listed).decode()
    assert "hunter2" not in shown
    assert set(msgspec.structs.asdict(listed[0])) == {"name", "digest", "updated_at"}


def test_secrets_digest_changes_only_with_names_or_values(state_dir: Path, store: Store) -> None:
    empty = store.secrets_digest("hello")
    assert re.fullmatch(r"[0-9a-f]{64}", empty)
    store.set_secrets("hello", {"A": "1", "B": "2"})
    first = store.secrets_digest("hello")
    assert first != empty
    store.set_secrets("hello", {"B": "2", "A": "1"})
    assert store.secrets_digest("hello") == first
    store.set_secrets("hello", {"A": "changed"})
    assert store.secrets_digest("hello") != first
    store.set_secrets("hello", {"A": "1"})
    assert store.secrets_digest("hello") == first  # same values, same digest
    store.close()
    with Store.open(state_dir) as again:
        assert again.secrets_digest("hello") == first
        # Names and values can't be shuffled into the same digest.
        again.unset_secrets("hello", ["A", "B"])
        again.set_secrets("hello", {"A": "1B", "": "2"})
        assert again.secrets_digest("hello") != first
        again.unset_secrets("hello", ["A", ""])
        assert again.secrets_digest("hello") == empty


# -- releases ---------------------------------------------------------------------------------


def test_release_numbers_grow_by_one_per_app(state_dir: Path, store: Store) -> None:
    store.ensure_app("other", "fly.toml")
    first = store.create_release("hello", config_json="{}", strategy="rolling")
    assert (first.version, first.status, first.app) == (1, "running", "hello")
    assert first.config_digest == (
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # sha256("{}")
    )
    assert store.create_release("other", config_json="{}", strategy="immediate").version == 1
    second = store.create_release(
        "hello",
        config_json='{"a": 1}',
        strategy="canary",
        image_ref="registry.fly.io/hello:deployment-1",
        description="scale web",
    )
    assert (second.version, second.image_ref, second.description) == (
        2,
        "registry.fly.io/hello:deployment-1",
        "scale web",
    )
    store.close()
    with Store.open(state_dir) as again:
        assert again.create_release("hello", config_json="{}", strategy="rolling").version == 3
        assert [r.version for r in again.list_releases("hello")] == [3, 2, 1]
        assert again.get_release("hello", 2) == second
        assert again.get_release("hello", 9) is None
        with pytest.raises(NotFoundError, match=r"app ghost"):
            again.create_release("ghost", config_json="{}", strategy="rolling")


def test_release_status(store: Store) -> None:
    assert store.latest_release("hello") is None
    store.create_release("hello", config_json="{}", strategy="rolling")
    store.create_release("hello", config_json="{}", strategy="rolling")
    done = store.set_release_status("hello", 1, "complete")
    assert done.status == "complete" and store.get_release("hello", 1) == done
    store.set_release_status("hello", 2, "failed")
    assert store.latest_release("hello").version == 2  # type: ignore[union-attr]
    assert store.latest_release("hello", status="complete").version == 1  # type: ignore[union-attr]
    assert store.latest_release("hello", status="interrupted") is None
    with pytest.raises(NotFoundError, match=r"^app hello has no release v7$"):
        store.set_release_status("hello", 7, "complete")
    with pytest.raises(ValueError, match=r"release status 'done' is not one of"):
        store.set_release_status("hello", 1, "done")
    for status in ("running", "complete", "failed", "rolled_back", "interrupted"):
        assert store.set_release_status("hello", 1, status).status == status


# -- events -----------------------------------------------------------------------------------


def test_events_newest_first(store: Store) -> None:
    start = store.add_event("hello", "start", machine_id=MID, status="started")
    assert (start.type, start.status, start.data, start.machine_id) == ("start", "started", {}, MID)
    store.add_event("hello", "exit", machine_id=MID, data={"exit_code": 1, "signal": None})
    store.add_event("hello", "update", data={"nested": {"list": [1, "two"]}})
    store.add_event("other", "start")
    events = store.events("hello", machine_id=MID)
    assert [e.type for e in events] == ["exit", "start"]
    assert events[0].data == {"exit_code": 1, "signal": None}
    assert events[1] == start
    assert [e.type for e in store.events("hello")] == ["update", "exit", "start"]
    assert store.events("hello")[0].data == {"nested": {"list": [1, "two"]}}
    assert [e.type for e in store.events("hello", limit=1)] == ["update"]
    assert store.events("hello", limit=0) == []
    assert len(store.events("hello", limit=None)) == 3


# -- transactions and concurrency -------------------------------------------------------------


def test_a_failure_inside_a_write_stores_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store._tx() as db:
        db.execute("INSERT INTO scale VALUES ('hello', 'web', 9)")
        raise RuntimeError("crash half-way")
    assert store.counts("hello") == {}
    store.set_count("hello", "web", 1)  # the store is still usable
    assert store.counts("hello") == {"web": 1}


def test_a_reader_is_not_blocked_by_an_open_write(state_dir: Path, store: Store) -> None:
    store.add_machine(machine())
    writer = sqlite3.connect(state_dir / "taxiway.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE machines SET state = 'started'")
    with Store.open(state_dir) as reader:
        began = time.monotonic()
        assert reader.get_machine(MID).state == "created"  # type: ignore[union-attr]
        assert time.monotonic() - began < 1  # read the last commit, didn't wait
        writer.execute("COMMIT")
        assert reader.get_machine(MID).state == "started"  # type: ignore[union-attr]
    writer.close()


def test_a_reader_process_reads_while_the_daemon_writes(state_dir: Path, store: Store) -> None:
    store.add_machine(machine())
    errors: list[BaseException] = []

    def daemon() -> None:
        try:
            with Store.open(state_dir) as writer:
                for n in range(1, 201):
                    writer.update_machine(MID, restarts=n)
                    writer.add_event("hello", "restart", machine_id=MID, data={"n": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=daemon)
    with Store.open(state_dir) as reader:
        thread.start()
        seen = [0]
        while thread.is_alive():
            got = reader.get_machine(MID)
            assert got is not None and got.restarts >= seen[-1]  # never goes back
            seen.append(got.restarts)
            reader.events("hello", limit=5)
        thread.join()
        assert not errors
        assert reader.get_machine(MID).restarts == 200  # type: ignore[union-attr]
        assert len(reader.events("hello", limit=None)) == 200


def test_a_write_waits_for_the_lock_then_gives_up_with_a_sentence(state_dir: Path) -> None:
    with Store.open(state_dir) as first:
        first.ensure_app("hello", "fly.toml")
    holder = sqlite3.connect(
        state_dir / "taxiway.db", isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN IMMEDIATE")
    with Store.open(state_dir, busy_timeout=0.2) as impatient:
        with pytest.raises(StateError, match=r"taxiway\.db is busy: another process"):
            impatient.set_count("hello", "web", 2)
        assert impatient.counts("hello") == {}  # reads still work
    with Store.open(state_dir, busy_timeout=10) as patient:
        threading.Timer(0.2, holder.execute, ("COMMIT",)).start()
        began = time.monotonic()
        patient.set_count("hello", "web", 2)  # waits for the lock instead of failing
        assert time.monotonic() - began >= 0.1
        assert patient.counts("hello") == {"web": 2}
    holder.close()


def test_old_events_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import taxiway.state.store as store_module

    monkeypatch.setattr(store_module, "MAX_EVENTS", 150)
    with Store.open(tmp_path / ".taxiway") as s:
        s.ensure_app("hello", str(tmp_path / "fly.toml"))
        for n in range(400):
            s.add_event("hello", "tick", data={"n": n})
        events = s.events("hello", limit=None)
        assert len(events) <= 250
        assert events[0].data == {"n": 399}


def test_only_machine_states_and_events_skip_the_commit_fsync(tmp_path: Path) -> None:
    with Store.open(tmp_path / ".taxiway") as s:
        s.ensure_app("hello", str(tmp_path / "fly.toml"))

        def synchronous() -> int:
            return s._db.execute("PRAGMA synchronous").fetchone()[0]

        assert synchronous() == 2  # FULL: what a user stores is fsynced
        s.add_event("hello", "tick")
        assert synchronous() == 2  # restored after a non-durable write
        s.set_secrets("hello", {"A": "x"})
        assert synchronous() == 2


def test_an_empty_database_beside_an_earlier_states_files_is_refused(state_dir: Path) -> None:
    (state_dir / "volumes" / "vol_0123456789abcdef").mkdir(parents=True)
    (state_dir / "logs").mkdir()
    (state_dir / "logs" / "d8d4017a0d1438.log").write_text("")
    with pytest.raises(StateError) as missing:
        Store.open(state_dir)
    assert str(missing.value) == (
        f"{state_dir / 'taxiway.db'} is missing, but {state_dir} holds 1 volume folder "
        "(vol_0123456789abcdef) and 1 machine log from an earlier state; the app's secrets, "
        "releases and volumes would be lost: restore taxiway.db from a backup, or run "
        "`taxiway state recover` to start from an empty state that keeps the volume folders "
        "as unattached volumes"
    )
    assert not (state_dir / "taxiway.db").exists()
    with Store.open(state_dir, fresh_ok=True) as first:
        first.ensure_app("hello", "/app/fly.toml")
        # A new file in WAL mode may stay empty while its data is in -wal: not refused.
        with Store.open(state_dir) as second:
            assert second.get_app("hello") is not None


def test_a_database_emptied_of_its_rows_is_refused_too(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        store.ensure_app("hello", "/app/fly.toml")
        store.create_volume("hello", "data", 1, "ams", state_dir / "volumes" / "v")
    (state_dir / "volumes" / "vol_0123456789abcdef").mkdir(parents=True)
    with Store.open(state_dir) as store:
        store._db.execute("DELETE FROM volumes")
        store._db.execute("DELETE FROM apps")
    with pytest.raises(StateError, match=r"taxiway\.db holds no app, but .* 1 volume folder"):
        Store.open(state_dir)
    with Store.open(state_dir, fresh_ok=True) as store:
        assert store.get_app("hello") is None
