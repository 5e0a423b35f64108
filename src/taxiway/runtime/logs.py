"""Machine output, kept per machine as JSON lines with timestamps, and streamed live.

Every line a machine prints (and every note the runtime makes about it, stream
``system``) is appended to ``.taxiway/logs/<machine id>.log`` and handed to live
subscribers (`up`'s foreground output, `logs -f`). Files are private (0600) and
rotate at 10 MB, keeping one previous file, so a chatty app can't fill the disk. Each
line carries its machine's process group, so the files alone answer `logs --group`
once no daemon runs, one-off machines (the release command) included.

A line that can't be written (a full disk) is still handed to the live subscribers and
never stops the machine or its output pump; once writing works again, the log says how
many lines it could not keep.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    import asyncio

MAX_BYTES = 10 * 1024 * 1024


class LogEntry(msgspec.Struct, frozen=True):
    ts: str
    stream: str
    line: str
    #: The machine's process group ("" in lines written before taxiway recorded it).
    group: str = ""


def log_record(machine_id: str, group: str, entry: LogEntry) -> dict[str, Any]:
    """One line as `taxiway logs --json` shows it (and as `up` and `deploy` print it)."""
    return {
        "ts": entry.ts,
        "machine": machine_id,
        "group": group,
        "stream": entry.stream,
        "line": entry.line,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MachineLog:
    def __init__(self, path: Path, *, group: str = "", max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.group = group
        self.max_bytes = max_bytes
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd: int | None = None
        self._subscribers: set[asyncio.Queue[LogEntry]] = set()
        #: Called with every line as it is written (`log_record`'s shape): a one-off's
        #: output shown while it runs, where no event loop task reads a queue.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
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
        entry = LogEntry(_now(), stream, text, self.group)
        if self._lost:
            note = (
                f"[taxiway] {self._lost} line(s) of output could not be written to "
                f"{self.path} ({self._lost_reason}) and are missing here"
            )
            if self._append(LogEntry(entry.ts, "system", note, self.group)):
                self._lost = 0
        if not self._append(entry):
            self._lost += 1
        for queue in self._subscribers:
            queue.put_nowait(entry)
        for listener in self.listeners:
            listener(log_record(self.path.stem, self.group, entry))

    def _append(self, entry: LogEntry) -> bool:
        """Append one record to the file; False when it can't be (kept for live readers)."""
        fields = {"ts": entry.ts, "stream": entry.stream, "line": entry.line}
        if entry.group:
            fields["group"] = entry.group
        record = json.dumps(fields) + "\n"
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
                entries.append(
                    LogEntry(data["ts"], data["stream"], data["line"], data.get("group") or "")
                )
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: skip it, keep the rest
    return entries


def logged_machines(
    logs_dir: Path, app: str, prefix: str | None = None, live: Iterable[str] = ()
) -> list[str]:
    """The ids of every machine, one-offs included, with a log in ``logs_dir`` (those
    starting with ``prefix``, when given: then one must, or one of the ``live`` ids,
    else `TaxiwayError` says there is no such machine)."""
    found = sorted(path.stem for path in logs_dir.glob("*.log"))
    if not prefix:
        return found
    found = [i for i in found if i.startswith(prefix)]
    if not found and not any(i.startswith(prefix) for i in live):
        raise TaxiwayError(
            f"app {app} has no machine {prefix}: no machine id (one-off machines' included) "
            "starts with it"
        )
    return found


def past_lines(
    logs_dir: Path,
    machine_ids: list[str],
    groups: dict[str, str],
    group: str | None = None,
    *,
    since: str | None = None,
) -> list[dict[str, Any]]:
    """What these machines' logs hold, oldest first, as `log_record`s (only ``group``'s
    lines, when given, and only those stamped at or after ``since``, a timestamp written
    as lines are); a line written before lines carried their group takes it from
    ``groups`` (machine id → group)."""
    lines = []
    for machine_id in machine_ids:
        for entry in read_log(logs_dir / f"{machine_id}.log"):
            if since is not None and entry.ts < since:
                continue
            line_group = entry.group or groups.get(machine_id, "")
            if not group or line_group == group:
                lines.append(log_record(machine_id, line_group, entry))
    return sorted(lines, key=lambda line: line["ts"])
