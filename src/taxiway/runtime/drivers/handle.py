"""A running machine's process under supervision: its exit, its output, its signals.

The process itself is started without an event loop (`taxiway.runtime.drivers.base.
start_process`), possibly before the daemon imported asyncio; `ProcessHandle` takes it
over once the loop runs. Nothing here relies on asyncio's child watcher: the exit is
seen through a pidfd (Linux 5.3+; a thread waits where there is none) and the output
through the loop's readers, so a process launched early is supervised like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import IO

from taxiway.runtime.drivers import mount_points
from taxiway.runtime.leftovers import process_start_time
from taxiway.runtime.logs import MachineLog

#: Output lines longer than this are split, so one endless line can't exhaust memory.
MAX_LINE = 64 * 1024


class ProcessHandle:
    """A machine's main process and its process group (the process driver's machine)."""

    #: A process group's end doesn't say whether the OOM killer caused it.
    oom_killed = False

    def __init__(
        self, popen: subprocess.Popen[bytes], log: MachineLog, machine_id: str | None = None
    ) -> None:
        self._popen = popen
        #: Whose mount points (`mount_points`) go when the machine ends.
        self._machine_id = machine_id
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the leader's pid is the group's id
        self.start_time = process_start_time(popen.pid)
        self._pumps = [
            OutputPump(pipe, log, name)
            for pipe, name in ((popen.stdout, "stdout"), (popen.stderr, "stderr"))
            if pipe is not None
        ]

    def poll(self) -> int | None:
        """Reap the main process if it has exited: its exit code, else None."""
        return self._popen.poll()

    async def wait(self) -> int:
        """Until the leader exits: its exit code, or -N when signal N killed it. Doesn't
        wait for the output pipes to close (a background child may keep them open)."""
        code = self._popen.returncode
        if code is None:
            code = await _reaped(self._popen)
        # Give the pipes a moment to drain the last lines; stragglers may hold them open.
        await asyncio.wait([pump.done for pump in self._pumps], timeout=0.5)
        return code

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def kill_tree(self) -> None:
        self.send_signal(signal.SIGKILL)
        for pump in self._pumps:
            pump.close()
        if self._machine_id is not None:
            mount_points.release(self._machine_id)

    def alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def freeze(self) -> None:
        self.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send_signal(signal.SIGCONT)


async def _reaped(popen: subprocess.Popen[bytes]) -> int:
    """Wait for ``popen`` to exit without blocking the loop, and reap it: a pidfd becomes
    readable when the process exits; without pidfds a thread waits."""
    try:
        fd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(popen.wait)
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return popen.wait()  # it has exited: this only reaps it


class LineBuffer:
    """Cuts a stream of output into log lines: at newlines, and every `MAX_LINE` bytes,
    so one endless line can't exhaust memory."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The whole lines ``chunk`` completes (what follows the last newline waits)."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        out = [
            line[start : start + MAX_LINE]
            for line in lines
            for start in range(0, max(len(line), 1), MAX_LINE)
        ]
        while len(self._pending) >= MAX_LINE:
            out.append(self._pending[:MAX_LINE])
            self._pending = self._pending[MAX_LINE:]
        return out

    def flush(self) -> list[bytes]:
        """What came without a final newline, as a line of its own."""
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


class OutputPump:
    """Copies one of a machine's pipes into its log line by line, as the loop sees output
    arrive, so the process never blocks on a full pipe. ``done`` resolves at end of file
    or `close`."""

    def __init__(self, pipe: IO[bytes], log: MachineLog, stream: str) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._log = log
        self._stream = stream
        self._lines = LineBuffer()
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        for line in self._lines.feed(chunk):
            self._log.write(self._stream, line)

    def close(self) -> None:
        """Stop reading (what arrived without a newline is logged as a line)."""
        if self.done.done():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.remove_reader(self._fd)
        for line in self._lines.flush():
            self._log.write(self._stream, line)
        self._pipe.close()
        self.done.set_result(None)
