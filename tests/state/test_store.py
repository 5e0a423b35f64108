"""The state store on real SQLite files."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from taxiway.state.store import MIGRATIONS, MachineRecord, Store


def machine(machine_id: str = "d8d4017a0d1438", **fields: object) -> MachineRecord:
    values: dict = {
        "id": machine_id,
        "app": "hello",
        "group": "web",
        "state": "created",
        "region": "ams",
        "instance_id": "01K0C2RJDPYWESCYT00YJXZM9A",
        "private_ip": "fdaa:0:1:a7b:0:1:0:2",
        "ports": {"8080": 40001},
        "metadata": {"fly_process_group": "web"},
        "created_at": "2026-11-22T00:00:00.000Z",
        "updated_at": "2026-11-22T00:00:00.000Z",
    }
    values.update(fields)
    return MachineRecord(**values)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / ".taxiway")
    s.ensure_app("hello", str(tmp_path / "fly.toml"))
    return s


def test_files_are_private_and_in_wal_mode(tmp_path: Path, store: Store) -> None:
    assert stat.S_IMODE((tmp_path / ".taxiway").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_reopening_keeps_data_and_the_schema_version(tmp_path: Path, store: Store) -> None:
    store.add_machine(machine())
    store.close()
    again = Store.open(tmp_path / ".taxiway")
    assert again.get_machine("d8d4017a0d1438") == machine()
    version = again._db.execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)


def test_machines_update_and_list(store: Store) -> None:
    store.add_machine(machine())
    store.add_machine(machine("0000000000000a", group="worker"))
    store.update_machine("d8d4017a0d1438", state="started", pid=42, ports={"8080": 40002})
    m = store.get_machine("d8d4017a0d1438")
    assert m is not None and (m.state, m.pid, m.ports) == ("started", 42, {"8080": 40002})
    assert m.updated_at != "2026-11-22T00:00:00.000Z"
    assert [x.id for x in store.list_machines("hello", group="worker")] == ["0000000000000a"]
    store.update_machine("0000000000000a", state="destroyed")
    assert len(store.list_machines("hello")) == 1
    assert len(store.list_machines("hello", include_destroyed=True)) == 2
    with pytest.raises(KeyError):
        store.update_machine("ffffffffffffff", state="stopped")
    with pytest.raises(TypeError, match="cannot set colour"):
        store.update_machine("d8d4017a0d1438", colour="blue")


def test_scale_counts(store: Store) -> None:
    assert store.counts("hello") == {}
    store.set_count("hello", "web", 3)
    store.set_count("hello", "web", 2)
    store.set_count("hello", "worker", 0)
    assert store.counts("hello") == {"web": 2, "worker": 0}


def test_secrets_are_listed_by_digest_never_by_value(store: Store) -> None:
    assert store.set_secrets("hello", {"A": "hunter2-alpha", "B": "two"}) == ["A", "B"]
    assert store.set_secrets("hello", {"A": "hunter2-alpha", "B": "hunter2-beta"}) == ["B"]
    listed = store.list_secrets("hello")
    assert [s.name for s in listed] == ["A", "B"]
    assert all(len(s.digest) == 16 for s in listed)
    assert "hunter2" not in repr(listed)
    assert store.secret_values("hello") == {"A": "hunter2-alpha", "B": "hunter2-beta"}
    assert store.unset_secrets("hello", ["A", "C"]) == ["A"]
    assert store.secret_values("hello") == {"B": "hunter2-beta"}


def test_releases_grow_by_one(store: Store) -> None:
    first = store.create_release("hello", config_json="{}", strategy="rolling")
    second = store.create_release("hello", config_json='{"a": 1}', strategy="canary")
    assert (first.version, second.version) == (1, 2)
    store.set_release_status("hello", 2, "complete")
    assert store.latest_release("hello", status="complete").version == 2  # type: ignore[union-attr]
    assert store.latest_release("hello", status="failed") is None


def test_events_newest_first(store: Store) -> None:
    store.add_event("hello", "start", machine_id="d8d4017a0d1438", status="started")
    store.add_event("hello", "exit", machine_id="d8d4017a0d1438", data={"exit_code": 1})
    events = store.events("hello", machine_id="d8d4017a0d1438")
    assert [e.type for e in events] == ["exit", "start"]
    assert events[0].data == {"exit_code": 1}


def test_a_reader_sees_committed_writes_while_the_daemon_writes(
    tmp_path: Path, store: Store
) -> None:
    store.add_machine(machine())
    reader = Store.open(tmp_path / ".taxiway")
    store.update_machine("d8d4017a0d1438", state="started")
    assert reader.get_machine("d8d4017a0d1438").state == "started"  # type: ignore[union-attr]
