"""`taxiway status --watch` / `taxiway top`: refreshed on a pseudo-terminal and into a
pipe, following the daemon away and back, and ending cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from taxiway.cli.status_watch import HIDE_CURSOR, REDRAW, SHOW_CURSOR, interval_seconds
from taxiway.errors import TaxiwayError

WORKER = "import time\nwhile True:\n    time.sleep(0.2)\n"
HEADER = "taxiway status watched, every 0.2s (Ctrl-C quits)"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "fly.toml").write_text(
        f'app = "watched"\n[processes]\nworker = "{sys.executable} -u worker.py"\n'
    )
    yield tmp_path
    taxiway(tmp_path, "down")


def start(app: Path, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "taxiway", *args],
        cwd=app,
        env={**os.environ, "NO_COLOR": "1"},
        **popen,  # type: ignore[arg-type]
    )


def read_until(fd: int, wanted: str, count: int, seen: str = "", timeout: float = 30) -> str:
    """What ``fd`` gave until ``wanted`` appeared ``count`` times in all (or the timeout)."""
    deadline = time.monotonic() + timeout
    while seen.count(wanted) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other end closed
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    return seen


def test_interval_takes_seconds_or_a_duration() -> None:
    assert interval_seconds("2") == 2
    assert interval_seconds("0.5") == 0.5
    assert interval_seconds("500ms") == 0.5
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(TaxiwayError, match=r"^--interval "):
            interval_seconds(bad)


def test_on_a_terminal_it_redraws_in_place_and_ctrl_c_restores_the_cursor(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    main, sub = pty.openpty()
    watcher = start(app, "top", "--interval", "0.2", stdout=sub, stderr=sub, stdin=sub)
    os.close(sub)
    try:
        seen = read_until(main, REDRAW, 2)
        assert seen.count(REDRAW) >= 2, seen
        assert seen.startswith(HIDE_CURSOR)
        frame = seen.split(REDRAW)[1]
        assert HEADER in frame and "worker" in frame and "started" in frame
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=20) == 0
        seen = read_until(main, SHOW_CURSOR, 1, seen)
        assert seen.rstrip().endswith(SHOW_CURSOR)
        assert "Traceback" not in seen
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        os.close(main)


def test_into_a_pipe_it_prints_blocks_and_follows_the_daemon_away_and_back(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    watcher = start(
        app,
        "status",
        "--watch",
        "-n",
        "200ms",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert watcher.stdout is not None and watcher.stderr is not None
    out = watcher.stdout.fileno()
    try:
        seen = read_until(out, HEADER, 2)
        assert "\033[" not in seen  # no terminal codes in a log
        blocks = re.split(r"\n\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  taxiway status)", seen)
        assert len(blocks) >= 2 and "worker" in blocks[0] and "started" in blocks[0]
        assert taxiway(app, "down").returncode == 0
        seen = read_until(out, "taxiway is not running watched; waiting for it", 1, seen)
        assert "waiting for it" in seen
        assert watcher.poll() is None  # it keeps asking
        assert taxiway(app, "up", "-d").returncode == 0
        after = seen.rindex("waiting for it")
        seen = read_until(out, "started", seen.count("started") + 1, seen)
        assert "started" in seen[after:]
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=20) == 0
        assert watcher.stderr.read() == b""
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        watcher.stdout.close()
        watcher.stderr.close()


def test_watch_json_is_one_status_object_a_line(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    watcher = start(
        app, "status", "--watch", "--json", "-n", "0.2", stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None
    try:
        first, second = watcher.stdout.readline(), watcher.stdout.readline()
        for line in (first, second):
            status = json.loads(line)
            assert status["app"] == "watched" and status["machines"][0]["state"] == "started"
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=20) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        watcher.stdout.close()


def test_a_bad_interval_is_one_sentence(app: Path) -> None:
    result = taxiway(app, "top", "--interval", "soon")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        "taxiway: error: --interval soon is not a positive number of seconds; write it like "
        "2, 0.5 or 500ms"
    )
