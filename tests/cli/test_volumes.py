"""Volumes: one per machine, data kept across restarts and down/up, visible at destination."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from taxiway.runtime.drivers.process import mounts_supported

COUNTER = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
path = pathlib.Path(sys.argv[1]) / "count"
count = int(path.read_text()) + 1 if path.exists() else 1
path.write_text(str(count))
print("count", count, flush=True)
time.sleep(60)
"""

pytestmark = pytest.mark.skipif(
    not mounts_supported(),
    reason="showing a volume at its destination needs root, unshare and mount",
)


def counts(app: Path) -> list[int]:
    lines = taxiway(app, "logs", "--group", "db").stdout.splitlines()
    return [int(line.rsplit(" ", 1)[1]) for line in lines if "| count " in line]


def wait_count(app: Path, n: int) -> None:
    deadline = time.monotonic() + 10
    while n not in counts(app):
        assert time.monotonic() < deadline, counts(app)
        time.sleep(0.1)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    destination = Path(f"/tmp/taxiway-volume-test-{uuid.uuid4().hex[:8]}")
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "fly.toml").write_text(
        'app = "vols"\nkill_signal = "SIGTERM"\n'
        f'[processes]\ndb = "{sys.executable} counter.py {destination}"\n'
        f'[[mounts]]\nsource = "data"\ndestination = "{destination}"\ninitial_size = "3gb"\n'
        'processes = ["db"]\n'
    )
    yield tmp_path, destination
    taxiway(tmp_path, "down")
    if destination.is_dir():
        destination.rmdir()


def test_data_survives_restarts_and_down_up(app: tuple[Path, Path]) -> None:
    folder, destination = app
    assert taxiway(folder, "up", "-d").returncode == 0
    wait_count(folder, 1)
    machine = json.loads(taxiway(folder, "status", "--json").stdout)["machines"][0]
    assert taxiway(folder, "machine", "restart", machine["id"]).returncode == 0
    wait_count(folder, 2)
    assert taxiway(folder, "down").returncode == 0
    assert taxiway(folder, "up", "-d").returncode == 0
    wait_count(folder, 3)

    volumes = json.loads(taxiway(folder, "volumes", "list", "--json").stdout)
    assert len(volumes) == 1
    volume = volumes[0]
    assert (volume["name"], volume["size_gb"], volume["attached_machine_id"]) == (
        "data",
        3.0,
        machine["id"],
    )
    assert volume["id"].startswith("vol_")
    assert (Path(volume["path"]) / "count").read_text() == "3"
    assert list(destination.iterdir()) == []  # the mount is the machine's own, not the host's


def test_destroy_refuses_an_attached_volume_and_keeps_data_until_asked(
    app: tuple[Path, Path],
) -> None:
    folder, _ = app
    assert taxiway(folder, "up", "-d").returncode == 0
    wait_count(folder, 1)
    volume = json.loads(taxiway(folder, "volumes", "list", "--json").stdout)[0]
    refused = taxiway(folder, "volumes", "destroy", volume["id"])
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert (Path(volume["path"]) / "count").exists()
    machine = json.loads(taxiway(folder, "status", "--json").stdout)["machines"][0]
    assert taxiway(folder, "machine", "destroy", machine["id"]).returncode == 0
    after = json.loads(taxiway(folder, "volumes", "list", "--json").stdout)[0]
    assert after["attached_machine_id"] is None
    assert (Path(volume["path"]) / "count").exists()  # a destroyed machine leaves its volume
    gone = taxiway(folder, "volumes", "destroy", volume["id"])
    assert gone.returncode == 0, gone.stderr
    assert not Path(volume["path"]).exists()
    assert taxiway(folder, "volumes", "list", "--json").stdout.strip() == "[]"


def test_files_appear_at_their_guest_path_with_the_platforms_content(tmp_path: Path) -> None:
    import base64

    where = Path(f"/tmp/taxiway-files-test-{uuid.uuid4().hex[:8]}")
    (tmp_path / "local.conf").write_text("from a local file\n")
    (tmp_path / "show.py").write_text(
        "import sys, time\n"
        "for p in sys.argv[1:]:\n"
        "    print(p, repr(open(p).read()), flush=True)\n"
        "time.sleep(60)\n"
    )
    guests = [where / "raw.txt", where / "local.conf", where / "sub" / "secret.txt"]
    (tmp_path / "fly.toml").write_text(
        f'app = "files"\n[processes]\napp = "{sys.executable} show.py '
        + " ".join(str(g) for g in guests)
        + '"\n'
        f'[[files]]\nguest_path = "{guests[0]}"\nraw_value = "literal text"\n'
        f'[[files]]\nguest_path = "{guests[1]}"\nlocal_path = "local.conf"\n'
        f'[[files]]\nguest_path = "{guests[2]}"\nsecret_name = "CERT"\n'
    )
    secret = base64.b64encode(b"decoded secret").decode()
    try:
        assert taxiway(tmp_path, "secrets", "set", f"CERT={secret}").returncode == 0
        assert taxiway(tmp_path, "up", "-d").returncode == 0
        deadline = time.monotonic() + 10
        while "secret.txt" not in (out := taxiway(tmp_path, "logs").stdout):
            assert time.monotonic() < deadline, out
            time.sleep(0.1)
        assert f"{guests[0]} 'literal text'" in out  # raw_value as written (flyctl's reading)
        assert f"{guests[1]} 'from a local file\\n'" in out
        assert f"{guests[2]} 'decoded secret'" in out  # a secret's value is base64-decoded
    finally:
        taxiway(tmp_path, "down")
        for guest in guests:
            if guest.exists():
                guest.unlink()
        for folder in (where / "sub", where):
            if folder.exists():
                folder.rmdir()


def test_mount_points_taxiway_made_on_the_host_go_when_the_machines_stop(
    tmp_path: Path,
) -> None:
    """A [[files]] guest_path or a volume destination that didn't exist is made on the
    host as a mount point; once no machine mounts anything there it is removed, while
    what existed before stays."""
    host = Path(f"/tmp/taxiway-mount-points-{uuid.uuid4().hex[:8]}")  # stands for /etc
    host.mkdir()
    (host / "kept.conf").write_text("the host's own\n")
    guest_file, guest_dir = host / "app.conf", host / "new" / "data"
    (tmp_path / "show.py").write_text(
        "import sys, time\n"
        f"print('conf', repr(open({str(guest_file)!r}).read()), flush=True)\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "fly.toml").write_text(
        'app = "mountpoints"\nkill_signal = "SIGTERM"\n'
        f'[processes]\napp = "{sys.executable} show.py"\n'
        f'[[files]]\nguest_path = "{guest_file}"\nraw_value = "made for the machine"\n'
        f'[[files]]\nguest_path = "{host / "kept.conf"}"\nraw_value = "shown over the host\'s"\n'
        f'[[mounts]]\nsource = "data"\ndestination = "{guest_dir}"\n'
    )
    try:
        assert taxiway(tmp_path, "up", "-d").returncode == 0
        assert taxiway(tmp_path, "scale", "count", "app=2").returncode == 0
        deadline = time.monotonic() + 10
        while (out := taxiway(tmp_path, "logs").stdout).count("made for the machine") < 2:
            assert time.monotonic() < deadline, out
            time.sleep(0.1)
        assert guest_file.exists() and guest_dir.is_dir()
        first = json.loads(taxiway(tmp_path, "status", "--json").stdout)["machines"][0]
        assert taxiway(tmp_path, "machine", "stop", first["id"]).returncode == 0
        assert guest_file.exists() and guest_dir.is_dir()  # the other machine mounts them
        assert taxiway(tmp_path, "down").returncode == 0
        assert sorted(p.name for p in host.iterdir()) == ["kept.conf"]
        assert (host / "kept.conf").read_text() == "the host's own\n"
    finally:
        taxiway(tmp_path, "down")
        for path in (guest_file, host / "kept.conf"):
            path.unlink(missing_ok=True)
        for folder in (guest_dir, guest_dir.parent, host):
            if folder.is_dir():
                folder.rmdir()
