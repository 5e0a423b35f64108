"""Which driver runs an app, and why: `up`, `status` and `status --json` say it, and
`TAXIWAY_DRIVER` pins it where `--driver` isn't given (the suite pins the process driver
in conftest.py, so it passes the same on any host)."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from cli_runner import start_taxiway
from taxiway.runtime.drivers import choose_driver

WORKER = "import time\nprint('worker up', flush=True)\nwhile True:\n    time.sleep(0.2)\n"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    """A one-group app with no services (so `up -d` launches it before its loop runs)."""
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "fly.toml").write_text(
        textwrap.dedent(
            f"""
            app = "driverchoice"
            [processes]
            worker = "{sys.executable} worker.py"
            """
        )
    )
    yield tmp_path
    taxiway(tmp_path, "down")


def status(folder: Path) -> dict:
    result = taxiway(folder, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_variable_pins_the_driver_and_status_says_so(app: Path) -> None:
    up = taxiway(app, "up", "-d")
    assert up.returncode == 0, up.stderr
    assert "driver process (TAXIWAY_DRIVER process)" in up.stdout
    found = status(app)
    assert (found["driver"], found["driver_reason"]) == ("process", "TAXIWAY_DRIVER process")
    assert "driver process (TAXIWAY_DRIVER process)" in taxiway(app, "status").stdout


def test_the_flag_wins_over_the_variable(app: Path) -> None:
    up = taxiway(app, "up", "-d", "--driver", "process", env={"TAXIWAY_DRIVER": "namespace"})
    assert up.returncode == 0, up.stderr
    assert status(app)["driver_reason"] == "--driver process"


def test_auto_says_what_it_found_on_this_host(app: Path) -> None:
    up = taxiway(app, "up", "-d", "--driver", "auto")
    assert up.returncode == 0, up.stderr
    found = status(app)
    expected = choose_driver("auto")
    assert (found["driver"], found["driver_reason"]) == expected
    assert found["driver_reason"].startswith("auto: ")


def test_a_variable_naming_no_driver_is_one_sentence(app: Path) -> None:
    up = taxiway(app, "up", "-d", env={"TAXIWAY_DRIVER": "docker-ish"})
    assert up.returncode == 1
    assert up.stderr.strip().splitlines() == [
        "taxiway: error: TAXIWAY_DRIVER=docker-ish names no driver; "
        "use auto, process, namespace, docker"
    ]
    assert not (app / ".taxiway" / "taxiway.sock").exists()


def test_the_foreground_banner_names_the_driver(app: Path) -> None:
    """A service makes the daemon take the usual path (not the early launch)."""
    (app / "fly.toml").write_text(
        (app / "fly.toml").read_text() + "[[services]]\ninternal_port = 9\nprocesses = ['worker']\n"
    )
    process = start_taxiway(app, "up", "--driver", "process")
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("driver "):
                break
        assert lines[-1].strip() == "driver process (--driver process)", lines
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        process.stdout.close()
