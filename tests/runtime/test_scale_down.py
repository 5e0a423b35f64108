"""`scale count` down: which machines go. Real daemon, real processes."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from process_watch import wait_for

#: Runs until a file named ``crash-<its machine id>`` appears, then exits 1 at once on
#: every start: a crash loop chosen by the test after the machine started.
WORKER = """
import os, sys, time
marker = "crash-" + os.environ["FLY_MACHINE_ID"]
while not os.path.exists(marker):
    time.sleep(0.1)
print("crash marker found", flush=True)
sys.exit(1)
"""

FLY_TOML = """
app = "scaledown"

[processes]
worker = "{python} worker.py"
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(python=sys.executable))
    try:
        yield tmp_path
    finally:
        taxiway(tmp_path, "down")


def machines(app: Path) -> list[dict]:
    result = taxiway(app, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["machines"]


def test_scale_down_destroys_the_crash_looping_machine_not_the_healthy_one(app: Path) -> None:
    up = taxiway(app, "up", "-d", "--driver", "process")
    assert up.returncode == 0, up.stderr
    scaled = taxiway(app, "scale", "count", "worker=2")
    assert scaled.returncode == 0, scaled.stderr
    ids = sorted(m["id"] for m in machines(app))
    assert len(ids) == 2
    # the machine listed first crashes: keeping machines in id order would keep it
    failing, healthy = ids
    (app / f"crash-{failing}").write_text("")
    wait_for(
        lambda: any(m["id"] == failing and m["restarts"] >= 1 for m in machines(app)),
        f"machine {failing} to crash-loop",
    )

    down = taxiway(app, "scale", "count", "worker=1")
    assert down.returncode == 0, down.stderr
    left = machines(app)
    assert [m["id"] for m in left] == [healthy]
    assert left[0]["state"] == "started"


def test_scale_down_among_healthy_machines_destroys_the_newest(app: Path) -> None:
    up = taxiway(app, "up", "-d", "--driver", "process")
    assert up.returncode == 0, up.stderr
    (first,) = (m["id"] for m in machines(app))
    for count in ("worker=2", "worker=3"):
        assert taxiway(app, "scale", "count", count).returncode == 0
    assert len(machines(app)) == 3

    assert taxiway(app, "scale", "count", "worker=1").returncode == 0
    assert [m["id"] for m in machines(app)] == [first]
