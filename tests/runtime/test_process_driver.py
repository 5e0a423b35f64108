"""The process driver with real processes and real signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from process_watch import alive
from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.drivers.process import ProcessDriver
from taxiway.runtime.leftovers import kill_group, process_start_time
from taxiway.runtime.logs import MachineLog, read_log


def spec(tmp_path: Path, argv: list[str]) -> LaunchSpec:
    return LaunchSpec(
        machine_id="d8d4017a0d1438",
        group="web",
        argv=argv,
        env={"PATH": os.environ["PATH"]},
        cwd=tmp_path,
        log=MachineLog(tmp_path / "logs" / "m.log"),
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_exit_code_and_output_with_streams(tmp_path: Path) -> None:
    async def main() -> int:
        handle = await ProcessDriver().launch(
            spec(
                tmp_path,
                py(
                    "import sys; print('out'); print('err', file=sys.stderr); "
                    "sys.stdout.write('partial'); sys.exit(4)"
                ),
            )
        )
        assert handle.pgid == handle.pid
        return await asyncio.wait_for(handle.wait(), 10)

    assert asyncio.run(main()) == 4
    entries = read_log(tmp_path / "logs" / "m.log")
    assert [(e.stream, e.line) for e in entries if e.stream == "stderr"] == [("stderr", "err")]
    assert [e.line for e in entries if e.stream == "stdout"] == ["out", "partial"]
    assert all(e.ts.endswith("Z") and "T" in e.ts for e in entries)


def test_a_signal_death_is_a_negative_status(tmp_path: Path) -> None:
    async def main() -> int:
        handle = await ProcessDriver().launch(spec(tmp_path, py("import time; time.sleep(30)")))
        handle.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(handle.wait(), 10)

    assert asyncio.run(main()) == -signal.SIGTERM


def test_kill_tree_reaches_what_the_leader_left_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"

    async def main() -> int:
        handle = await ProcessDriver().launch(
            spec(tmp_path, ["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; exit 0"])
        )
        assert await asyncio.wait_for(handle.wait(), 10) == 0
        child = int(pidfile.read_text())
        assert alive(child) and handle.alive()
        handle.kill_tree()
        # Waited for inside the loop: the child holds the machine's output pipes until it
        # dies, and a loop closed before it sees them end leaves their transports open.
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        return child

    assert not alive(asyncio.run(main()))


def test_a_missing_command_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(DriverError) as info:
        asyncio.run(ProcessDriver().launch(spec(tmp_path, ["no-such-program-xyz"])))
    assert str(info.value) == "machine d8d4017a0d1438 (web): command not found: no-such-program-xyz"


def test_long_lines_are_split(tmp_path: Path) -> None:
    async def main() -> None:
        handle = await ProcessDriver().launch(
            spec(tmp_path, py("import sys; sys.stdout.write('x' * 200000 + '\\nend\\n')"))
        )
        await asyncio.wait_for(handle.wait(), 10)

    asyncio.run(main())
    lines = [e.line for e in read_log(tmp_path / "logs" / "m.log")]
    assert "".join(lines[:-1]) == "x" * 200000
    assert max(len(line) for line in lines) <= 64 * 1024
    assert lines[-1] == "end"


def test_freeze_stops_progress_and_thaw_resumes(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    code = (
        f"import time, pathlib\np = pathlib.Path({str(counter)!r})\ni = 0\n"
        "t = p.with_suffix('.tmp')\nwhile True:\n    i += 1\n"
        "    t.write_text(str(i))\n    t.replace(p)\n    time.sleep(0.01)\n"
    )

    async def main() -> None:
        handle = await ProcessDriver().launch(spec(tmp_path, py(code)))
        try:
            await asyncio.sleep(0.3)
            handle.freeze()
            await asyncio.sleep(0.1)
            frozen = counter.read_text()
            await asyncio.sleep(0.3)
            assert counter.read_text() == frozen
            handle.thaw()
            await asyncio.sleep(0.3)
            assert int(counter.read_text()) > int(frozen)
        finally:
            handle.kill_tree()
            await handle.wait()

    asyncio.run(main())


DEAD_DAEMON = """
import asyncio, json, os, sys
from pathlib import Path
from taxiway.runtime.drivers.base import LaunchSpec
from taxiway.runtime.drivers.process import ProcessDriver
from taxiway.runtime.logs import MachineLog

async def main():
    spec = LaunchSpec(machine_id="d8d4017a0d1438", group="web", env=dict(os.environ),
                      argv=[sys.executable, "-c", "import time; time.sleep(30)"],
                      cwd=Path.cwd(), log=MachineLog(Path("m.log")))
    handle = await ProcessDriver().launch(spec)
    print(json.dumps([handle.pid, handle.start_time]), flush=True)
    os._exit(0)  # the daemon dies without stopping its machine

asyncio.run(main())
"""


def test_kill_group_kills_a_dead_daemons_tree_but_not_a_stranger(tmp_path: Path) -> None:
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", DEAD_DAEMON],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    pid, start = json.loads(out)
    try:
        assert alive(pid)
        assert not kill_group(pid, pid, start + 100)  # "another process with that pid"
        assert alive(pid)
        assert kill_group(pid, pid, start)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    assert process_start_time(os.getpid()) is not None
