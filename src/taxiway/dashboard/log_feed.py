"""Machine output for the dashboard's log tails: hooked once per machine, sent in batches.

Each live machine's `MachineLog` gets one listener (not one per tab). Lines wait in one
bounded buffer and go out once per log tick, as one event per distinct selection (all
machines, a group, a machine), the same bytes to every tab showing that selection. While
no tab is open, a line costs its listener one check.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taxiway.dashboard.http import event_chunk
from taxiway.dashboard.hub import StreamHub

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime
    from taxiway.runtime.logs import MachineLog

#: Lines held between two log ticks; more are counted and said to be skipped.
BUFFER_LINES = 2000
#: Lines of history a log tail starts with.
TAIL_LINES = 200


def selection(machine: str | None, group: str | None) -> Callable[[dict[str, Any]], bool]:
    """Which lines a tail shows: a machine's (by id prefix), a group's, or all."""
    machine, group = machine or None, group or None

    def wanted(record: dict[str, Any]) -> bool:
        if machine is not None and not record["machine"].startswith(machine):
            return False
        return group is None or record["group"] == group

    wanted.key = (machine, group)  # type: ignore[attr-defined]
    return wanted


class LogFeed:
    def __init__(self, runtime: AppRuntime, hub: StreamHub) -> None:
        self.runtime = runtime
        self.hub = hub
        self._hooked: dict[str, tuple[MachineLog, Callable[[dict[str, Any]], None]]] = {}
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=BUFFER_LINES)
        self._skipped = 0

    def hook(self) -> None:
        """Listen to every live machine's log (new machines, after a deploy or a scale),
        and let go of destroyed ones'."""
        live = self.runtime.machines
        for machine_id in [i for i in self._hooked if i not in live]:
            log, listener = self._hooked.pop(machine_id)
            if listener in log.listeners:
                log.listeners.remove(listener)
        for machine_id, machine in list(live.items()):
            hooked = self._hooked.get(machine_id)
            if hooked is not None and hooked[0] is machine.log:
                continue
            if hooked is not None and hooked[1] in hooked[0].listeners:
                hooked[0].listeners.remove(hooked[1])
            machine.log.listeners.append(self._line)
            self._hooked[machine_id] = (machine.log, self._line)

    def unhook(self) -> None:
        for log, listener in self._hooked.values():
            if listener in log.listeners:
                log.listeners.remove(listener)
        self._hooked.clear()

    def _line(self, record: dict[str, Any]) -> None:
        if not self.hub.streams:
            return
        if len(self._pending) == BUFFER_LINES:
            self._skipped += 1
        self._pending.append(record)

    def flush(self) -> None:
        """Send the lines since the last flush to every log tail, one encoding per
        selection."""
        if not self._pending:
            return
        lines, skipped = list(self._pending), self._skipped
        self._pending.clear()
        self._skipped = 0
        encoded: dict[Any, bytes | None] = {}
        for stream in self.hub.of_kind("state"):
            wanted = stream.selection
            assert wanted is not None
            key = getattr(wanted, "key", id(wanted))
            if key not in encoded:
                chosen = [line for line in lines if wanted(line)]
                encoded[key] = (
                    event_chunk("lines", json.dumps({"lines": chosen, "skipped": skipped}))
                    if chosen or skipped
                    else None
                )
            chunk = encoded[key]
            if chunk is not None:
                self.hub.send(stream, chunk)

    def tail(self, wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The last `TAIL_LINES` lines the selection's machines wrote (runs in a thread:
        it reads their log files)."""
        from taxiway.runtime.logs import past_lines

        runtime = self.runtime
        logs_dir = runtime.state_dir / "logs"
        machine, group = getattr(wanted, "key", (None, None))
        ids = [
            i
            for i in list(runtime.machines)
            if machine is None or i.startswith(machine)
        ]
        groups = {m.id: m.info.group for m in list(runtime.machines.values())}
        lines = past_lines(logs_dir, ids, groups, group)
        return lines[-TAIL_LINES:]
