"""Machine output, kept per machine as JSON lines with timestamps, and streamed live.

Every line a machine prints (and every note the runtime makes about it, stream
``system``) is appended to ``.taxiway/logs/<machine id>.log`` and handed to live
subscribers (`up`'s foreground output, `logs -f`). Files are private (0600) and
rotate at 10 MB, keeping one previous file, so a chatty app can't fill the disk.

A line that can't be written (a full disk) is still handed to the live subscribers and
never stops the machine or its output pump; once writing works again, the log says how
many lines it could not keep.
"""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import asyncio

MAX_BYTES = 10 * 1024 * 1024


class LogEntry(msgspec.Struct, frozen=True):
    ts: str
    stream: str
    line: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MachineLog:
    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd: int | None = None
        self._subscribers: set[asyncio.Queue[LogEntry]] = set()
        #: Lines not written since the last one that was, and why (a full disk).
        self._lost = 0
        self._lost_reason = ""
        #: A write stopped mid-line: the next record starts on a line of its own.
        self._torn = False

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def write(self, stream: str, data: bytes) -> None:
        """Record one line of output (without its newline)."""
        text = data.decode("utf-8", errors="replace").rstrip("\r\n")
        entry = LogEntry(_now(), stream, text)
        if self._lost:
            note = (
                f"[taxiway] {self._lost} line(s) of output could not be written to "
                f"{self.path} ({self._lost_reason}) and are missing here"
            )
            if self._append(LogEntry(entry.ts, "system", note)):
                self._lost = 0
        if not self._append(entry):
            self._lost += 1
        for queue in self._subscribers:
            queue.put_nowait(entry)

    def _append(self, entry: LogEntry) -> bool:
        """Append one record to the file; False when it can't be (kept for live readers)."""
        record = json.dumps({"ts": entry.ts, "stream": entry.stream, "line": entry.line}) + "\n"
        data = ("\n" + record if self._torn else record).encode()
        try:
            fd = self._file()
            written = os.write(fd, data)
            if written < len(data):
                self._torn = True
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._torn = False
            if os.fstat(fd).st_size > self.max_bytes:
                self._rotate()
        except OSError as exc:
            self._lost_reason = (exc.strerror or str(exc)).lower()
            return False
        return True

    def system(self, message: str) -> None:
        """A note from the runtime about this machine (exits, restarts, stops)."""
        self.write("system", message.encode())

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def subscribe(self) -> asyncio.Queue[LogEntry]:
        import asyncio  # only a daemon serving followers needs it: see taxiway.runtime.early

        queue: asyncio.Queue[LogEntry] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[LogEntry]) -> None:
        self._subscribers.discard(queue)

    def read_entries(self) -> list[LogEntry]:
        return read_log(self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_log(path: Path) -> list[LogEntry]:
    """Everything a machine's log holds, oldest first (the rotated file, then the current)."""
    entries = []
    for candidate in (path.with_name(path.name + ".1"), path):
        try:
            lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for raw in lines:
            try:
                data = json.loads(raw)
                entries.append(LogEntry(data["ts"], data["stream"], data["line"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: skip it, keep the rest
    return entries
