"""A full disk under the app's folder and its state: a user condition, not a bug.

The app's folder (fly.toml, the app, ``.taxiway/``) lives on a 2 MB tmpfs that the test
fills: commands that must write say so in one sentence, the daemon keeps supervising
(no traceback, the log pump survives), and once space returns the crashed machine
restarts by itself and its log resumes, saying how many lines it could not keep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from small_disk import small_tmpfs

#: Writes a fresh 4 KB file per tick; on a full disk it says so, at length, and crashes.
APP = """
import itertools, os, sys, time
for n in itertools.count():
    try:
        with open(f"beat-{n}.tmp", "wb") as f:
            f.write(b"x" * 4096)
        if n:
            os.unlink(f"beat-{n - 1}.tmp")
    except OSError as exc:
        for _ in range(200):  # more than the log file's last page holds
            print("cannot write:", exc.strerror, flush=True)
        sys.exit(1)
    print("tick", n, flush=True)
    time.sleep(0.05)
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        try:
            yield disk
        finally:
            taxiway(disk, "down")
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write until the disk is full; the filler file frees it again."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def machine(disk: Path) -> dict:
    result = taxiway(disk, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["machines"][0]


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def one_sentence(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert "full" in result.stderr, result.stderr


def test_a_full_disk_is_a_sentence_and_the_app_recovers_by_itself(small_disk: Path) -> None:
    (small_disk / "app.py").write_text(APP)
    (small_disk / "fly.toml").write_text(
        f'app = "fulldisk"\nkill_signal = "SIGTERM"\n[processes]\nweb = "{sys.executable} app.py"\n'
    )
    started = taxiway(small_disk, "up", "-d", "--driver", "process")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: "tick 3" in taxiway(small_disk, "logs").stdout, "the first ticks")

    filler = fill(small_disk)
    wait_for(lambda: machine(small_disk)["restarts"] >= 1, "the app to crash on the full disk")
    for args in (
        ("secrets", "set", "TOKEN=abc"),
        ("scale", "count", "web=2"),
        ("volumes", "create", "data"),
    ):
        one_sentence(taxiway(small_disk, *args))
    assert machine(small_disk)["state"] != "failed"

    filler.unlink()  # space returns
    seen = taxiway(small_disk, "logs").stdout.count("tick")

    def ticking_again() -> bool:
        return (
            machine(small_disk)["state"] == "started"
            and taxiway(small_disk, "logs").stdout.count("tick") > seen + 3
        )

    wait_for(ticking_again, "the machine to restart by itself and log again")
    logs = taxiway(small_disk, "logs").stdout
    assert "could not be written" in logs and "are missing here" in logs
    assert taxiway(small_disk, "secrets", "set", "TOKEN=abc").returncode == 0
    assert [
        s["name"] for s in json.loads(taxiway(small_disk, "secrets", "list", "--json").stdout)
    ] == ["TOKEN"]
    daemon_log = (small_disk / ".taxiway" / "daemon.log").read_text()
    assert "Traceback" not in daemon_log, daemon_log
