"""The release command's output and end: streamed by `up`, `up -d` and `deploy`, kept in
`logs`, recorded on the release; a Ctrl-C stops it and leaves no process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from process_watch import alive, wait_for

WORKER = "import time\nprint('worker up', flush=True)\nwhile True:\n    time.sleep(0.2)\n"

#: Starts a child (same process group), notes both pids, then waits to be stopped; on
#: the app's kill_signal (SIGUSR1 here: not the default, so the config's is the one sent)
#: it notes that and exits.
HANGING = """
import os, pathlib, signal, subprocess, sys, time
def stopped(*_):
    pathlib.Path("got-kill-signal").write_text("1")
    os._exit(143)
signal.signal(signal.SIGUSR1, stopped)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("migrating table 1 of 9", flush=True)
pathlib.Path("pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


def write_app(path: Path, release: str | None = None) -> None:
    (path / "worker.py").write_text(WORKER)
    deploy = f'[deploy]\nrelease_command = "{sys.executable} {release}"\n' if release else ""
    (path / "fly.toml").write_text(
        'app = "relout"\nkill_signal = "SIGUSR1"\nkill_timeout = 5\n'
        f"{deploy}"
        f'[processes]\nweb = "{sys.executable} worker.py"\n'
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    taxiway(tmp_path, "down")


def releases(app: Path) -> list[dict]:
    return json.loads(taxiway(app, "releases", "--json").stdout)


def logs(app: Path, *args: str) -> list[dict]:
    result = taxiway(app, "logs", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_up_d_streams_the_release_command_and_keeps_it(app: Path) -> None:
    (app / "release.py").write_text("print('migrated 7 tables', flush=True)\n")
    write_app(app, "release.py")
    result = taxiway(app, "up", "-d", "--driver", "process")
    assert result.returncode == 0, result.stderr
    streamed = [line for line in result.stdout.splitlines() if "migrated 7 tables" in line]
    assert streamed and "fly_app_release_command" in streamed[0]
    assert result.stdout.index("migrated 7 tables") < result.stdout.index("app relout")

    # kept in `logs` while the daemon runs (after success), under its own group
    lines = logs(app, "--group", "fly_app_release_command")
    assert "migrated 7 tables" in [e["line"] for e in lines]
    assert {e["group"] for e in lines} == {"fly_app_release_command"}
    release_machine = lines[0]["machine"]

    # the release says which one-off machine ran it, and its exit code
    assert releases(app)[0]["release_command"] == {"machine": release_machine, "exit_code": 0}
    table = taxiway(app, "releases").stdout
    assert "RELEASE COMMAND" in table and f"{release_machine} exit 0" in table

    assert taxiway(app, "down").returncode == 0
    after = logs(app, "--group", "fly_app_release_command")
    assert [e["line"] for e in after if e["stream"] != "system"] == ["migrated 7 tables"]


def _ctrl_c_during_the_release_command(app: Path, *args: str, streamed: str) -> tuple[int, str]:
    """Run `taxiway ARGS`, press Ctrl-C once the release command runs and ``streamed`` was
    printed; its exit code and stderr, after checking the release command got the app's
    kill_signal and left no process."""
    out, err = app / "cmd.out", app / "cmd.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "taxiway", *args],
        cwd=app,
        stdout=out.open("w"),
        stderr=err.open("w"),
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        note = app / "pids"
        wait_for(lambda: note.exists() and note.read_text(), "the release command")
        pids = [int(p) for p in note.read_text().split()]
        wait_for(lambda: streamed in out.read_text(), "the streamed output")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (app / "got-kill-signal").exists(), "the release command did not get kill_signal"
    assert not any(alive(pid) for pid in pids), "a release command process still runs"
    assert "the release command was interrupted" in err.read_text()
    assert "Traceback" not in err.read_text()
    return code, err.read_text()


def test_ctrl_c_of_up_stops_the_release_command_and_leaves_no_process(app: Path) -> None:
    (app / "release.py").write_text(HANGING)
    write_app(app, "release.py")
    code, _ = _ctrl_c_during_the_release_command(
        app, "up", "--driver", "process", streamed="migrating table 1 of 9"
    )
    assert code == 1
    latest = releases(app)[0]
    assert latest["status"] == "interrupted"
    assert latest["release_command"]["exit_code"] == 143
    assert not (app / ".taxiway" / "taxiway.sock").exists()


def test_deploy_streams_the_release_command_and_ctrl_c_stops_it(app: Path) -> None:
    write_app(app)
    assert taxiway(app, "up", "-d", "--driver", "process").returncode == 0
    (app / "release.py").write_text(HANGING)
    write_app(app, "release.py")
    code, _ = _ctrl_c_during_the_release_command(
        app, "deploy", streamed="release_command | migrating table 1 of 9"
    )
    assert code == 130
    latest = releases(app)[0]
    assert (latest["version"], latest["status"]) == (2, "interrupted")
    assert latest["release_command"]["exit_code"] == 143
    status = json.loads(taxiway(app, "status", "--json").stdout)
    assert [m["state"] for m in status["machines"]] == ["started"]  # untouched, still v1
