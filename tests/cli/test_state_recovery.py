"""A lost or damaged state database: refused with a sentence, recovered without losing a
volume (`taxiway state recover`), through the real CLI and daemon."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway

SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
SLEEPER += "time.sleep(600)\n"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "fly.toml").write_text(
        'app = "lost"\nkill_signal = "SIGTERM"\n'
        f'[processes]\ndb = "{sys.executable} sleeper.py"\n'
        f'[[mounts]]\nsource = "pgdata"\ndestination = "{tmp_path / "mnt"}"\n'
        'initial_size = "3gb"\n'
    )
    yield tmp_path
    taxiway(tmp_path, "down")


def volumes(app: Path) -> list[dict]:
    listed = taxiway(app, "volumes", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def run_once_with_data(app: Path) -> dict:
    """`up`, write into the machine's volume, `down`: the volume as it was listed."""
    assert taxiway(app, "secrets", "set", "TOKEN=x").returncode == 0
    started = taxiway(app, "up", "-d")
    assert started.returncode == 0, started.stderr
    [volume] = volumes(app)
    (Path(volume["path"]) / "table.dat").write_text("rows")
    assert taxiway(app, "down").returncode == 0
    return volume


def refused(result, *phrases: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_an_emptied_database_is_refused_and_recover_keeps_every_volume(app: Path) -> None:
    volume = run_once_with_data(app)
    state = app / ".taxiway"
    (state / "taxiway.db").write_bytes(b"")
    for extra in ("taxiway.db-wal", "taxiway.db-shm"):
        (state / extra).unlink(missing_ok=True)

    for args in (("up", "-d"), ("secrets", "list"), ("volumes", "list"), ("releases",)):
        refused(
            taxiway(app, *args),
            "taxiway.db is empty",
            f"1 volume folder ({volume['id']})",
            "taxiway state recover",
        )
    assert (state / "taxiway.db").read_bytes() == b""  # nothing started afresh

    recovered = taxiway(app, "state", "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert f"adopted volume {volume['id']} (pgdata, 3GB)" in recovered.stdout
    [adopted] = volumes(app)
    assert (adopted["id"], adopted["name"], adopted["size_gb"]) == (volume["id"], "pgdata", 3.0)
    assert adopted["attached_machine_id"] is None

    assert taxiway(app, "up", "-d").returncode == 0
    [attached] = volumes(app)  # the old volume, with its data: no new empty one
    assert attached["id"] == volume["id"] and attached["attached_machine_id"]
    assert (Path(attached["path"]) / "table.dat").read_text() == "rows"


def test_a_damaged_database_is_one_sentence_and_recover_moves_it_aside(app: Path) -> None:
    volume = run_once_with_data(app)
    db = app / ".taxiway" / "taxiway.db"
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page after the first is garbage
    db.write_bytes(bytes(data))

    refused(taxiway(app, "secrets", "list"), "taxiway.db is damaged", "taxiway state recover")
    refused(taxiway(app, "up", "-d"), "taxiway.db is damaged")

    recovered = taxiway(app, "state", "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "moved the damaged taxiway.db aside to" in recovered.stdout
    assert [p.name for p in db.parent.glob("taxiway.db.damaged-*")]
    assert f"adopted volume {volume['id']} (pgdata, 3GB)" in recovered.stdout
    assert taxiway(app, "up", "-d").returncode == 0
    assert [v["id"] for v in volumes(app)] == [volume["id"]]


def test_volume_folders_the_store_does_not_list_are_shown(app: Path) -> None:
    run_once_with_data(app)
    stray = app / ".taxiway" / "volumes" / "vol_0123456789abcdef"
    stray.mkdir()
    listed = taxiway(app, "volumes", "list")
    assert listed.returncode == 0
    assert "vol_0123456789abcdef" in listed.stderr and "taxiway state recover" in listed.stderr
    recovered = taxiway(app, "state", "recover")
    assert "adopted volume vol_0123456789abcdef (pgdata, 3GB)" in recovered.stdout
    assert "no label" in recovered.stdout
    assert len(volumes(app)) == 2
    assert taxiway(app, "volumes", "list").stderr == ""
    again = taxiway(app, "state", "recover")
    assert "nothing to recover" in again.stdout
