"""`taxiway logs --since`: from a duration ago or a moment on, with the daemon and after
`down` (the files), with the other flags."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from taxiway.cli.log_since import since_cutoff
from taxiway.errors import TaxiwayError

TICKER = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)\n"


def test_a_duration_counts_back_from_now_and_a_moment_is_utc_unless_it_says() -> None:
    now = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)
    assert since_cutoff("10m", now) == "2026-12-03T12:20:00.000Z"
    assert since_cutoff("1h30m", now) == "2026-12-03T11:00:00.000Z"
    assert since_cutoff("2026-12-03T12:00:00Z") == "2026-12-03T12:00:00.000Z"
    assert since_cutoff("2026-12-03T12:00:00") == "2026-12-03T12:00:00.000Z"
    assert since_cutoff("2026-12-03T13:00:00+01:00") == "2026-12-03T12:00:00.000Z"
    for bad in ("yesterday", "10", "-5m", ""):
        with pytest.raises(TaxiwayError, match=r"^--since "):
            since_cutoff(bad, now)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "ticker.py").write_text(TICKER)
    (tmp_path / "fly.toml").write_text(
        'app = "since"\n'
        "[processes]\n"
        f'web = "{sys.executable} -u ticker.py"\n'
        f'other = "{sys.executable} -u ticker.py"\n'
    )
    yield tmp_path
    taxiway(tmp_path, "down")


def lines(app: Path, *flags: str) -> list[dict]:
    result = taxiway(app, "logs", "--json", *flags)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_since_with_the_daemon_and_after_down(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    deadline = time.monotonic() + 20
    while len(lines(app, "--group", "web")) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    every = lines(app)
    cutoff = every[len(every) // 2]["ts"]
    later = lines(app, "--since", cutoff)
    assert later and all(line["ts"] >= cutoff for line in later)
    assert later == [line for line in lines(app) if line["ts"] >= cutoff][: len(later)]
    web = lines(app, "--since", cutoff, "--group", "web")
    assert web and {line["group"] for line in web} == {"web"}
    machine = web[0]["machine"]
    one = lines(app, "--since", cutoff, "--machine", machine[:5])
    assert one and {line["machine"] for line in one} == {machine}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert lines(app, "--since", future) == []

    assert taxiway(app, "down").returncode == 0
    kept = lines(app)
    assert lines(app, "--since", cutoff) == [line for line in kept if line["ts"] >= cutoff]
    assert lines(app, "--since", cutoff, "--group", "other") == [
        line for line in kept if line["ts"] >= cutoff and line["group"] == "other"
    ]
    assert lines(app, "--since", "1h") == kept
    assert lines(app, "--since", future) == []
    text = taxiway(app, "logs", "--since", cutoff)
    assert text.returncode == 0 and "tick" in text.stdout


def test_follow_since_prints_the_recent_past_then_new_lines(app: Path) -> None:
    import subprocess

    assert taxiway(app, "up", "-d").returncode == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "taxiway", "logs", "-f", "--json", "--since", "2s"],
        cwd=app,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["line"] == "tick"
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        follower.stdout.close()


def test_a_bad_since_is_one_sentence_naming_the_flag(app: Path) -> None:
    result = taxiway(app, "logs", "--since", "last tuesday")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        "taxiway: error: --since last tuesday is neither a duration nor a timestamp; write how "
        "long back, like 10m or 1h30m, or a moment, like 2026-12-03T12:00:00Z"
    )
