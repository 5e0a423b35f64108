"""Machine logs: JSON lines with timestamps, private files, rotation, live subscribers."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from taxiway.runtime.logs import MachineLog, read_log


def test_lines_are_kept_with_stream_and_time(tmp_path: Path) -> None:
    log = MachineLog(tmp_path / "logs" / "m.log")
    log.write("stdout", b"hello\n")
    log.write("stderr", b"\xff broken utf-8")
    log.system("exited with code 1")
    log.close()
    raw = [json.loads(line) for line in (tmp_path / "logs" / "m.log").read_text().splitlines()]
    assert [(r["stream"], r["line"]) for r in raw] == [
        ("stdout", "hello"),
        ("stderr", "\ufffd broken utf-8"),
        ("system", "exited with code 1"),
    ]
    assert stat.S_IMODE((tmp_path / "logs" / "m.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700


def test_rotation_keeps_one_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    log = MachineLog(path, max_bytes=2000)
    for n in range(100):
        log.write("stdout", f"line {n}".encode())
    log.close()
    assert path.with_name("m.log.1").exists()
    assert sum(1 for p in tmp_path.iterdir()) == 2
    lines = [e.line for e in read_log(path)]
    assert lines[-1] == "line 99"
    assert lines == sorted(lines, key=lambda s: int(s.split()[1]))


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    log = MachineLog(path)
    log.write("stdout", b"ok")
    log.close()
    with path.open("a") as f:
        f.write('{"ts": "2026')
    assert [e.line for e in read_log(path)] == ["ok"]


def test_subscribers_get_new_entries(tmp_path: Path) -> None:
    async def main() -> list[str]:
        log = MachineLog(tmp_path / "m.log")
        queue = log.subscribe()
        log.write("stdout", b"one")
        log.write("stdout", b"two")
        log.unsubscribe(queue)
        log.write("stdout", b"three")
        return [queue.get_nowait().line for _ in range(queue.qsize())]

    assert asyncio.run(main()) == ["one", "two"]
