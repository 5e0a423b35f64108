"""Machine output for people: one line per log line, prefixed and coloured per group."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

from taxiway.cli.render import use_color

#: Colours cycled through process groups, like `docker compose up`.
_PALETTE = ("36", "33", "32", "35", "34", "31")


def format_log_line(entry: dict[str, Any], *, color: str | None = None) -> str:
    ts = str(entry.get("ts", ""))[11:23]
    who = f"{entry.get('group') or '-'} {str(entry.get('machine', ''))[:14]}"
    if color:
        who = f"\033[{color}m{who}\033[0m"
    line = str(entry.get("line", ""))
    if entry.get("stream") == "system":
        line = f"[taxiway] {line}"
    return f"{ts} {who} | {line}"


class LogPrinter:
    """Follows machines' logs and prints them multiplexed as they arrive."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = use_color(self.stream)
        self._groups: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _color_for(self, group: str) -> str | None:
        if not self.color:
            return None
        if group not in self._groups:
            self._groups[group] = _PALETTE[len(self._groups) % len(_PALETTE)]
        return self._groups[group]

    def banner(self, text: str) -> None:
        print(f"\033[1m{text}\033[0m" if self.color else text, file=self.stream, flush=True)

    def print_line(self, entry: dict[str, Any]) -> None:
        """Print one log line (`taxiway.runtime.logs.log_record`) as it comes: a one-off
        machine's, such as the release command's."""
        color = self._color_for(str(entry.get("group", "")))
        print(format_log_line(entry, color=color), file=self.stream, flush=True)

    def follow(self, machine: Any) -> None:
        """Print this machine's output from now on (called as each machine is set up)."""
        queue = machine.log.subscribe()
        color = self._color_for(machine.info.group)

        async def pump() -> None:
            while True:
                entry = await queue.get()
                data = {
                    "ts": entry.ts,
                    "group": machine.info.group,
                    "machine": machine.id,
                    "stream": entry.stream,
                    "line": entry.line,
                }
                print(format_log_line(data, color=color), file=self.stream, flush=True)

        task = asyncio.get_running_loop().create_task(pump())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
