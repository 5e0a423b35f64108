"""``GET …/machines/{id}/ps``: the machine's processes as the platform's ``ProcessStat``
objects, read from ``/proc``: the machine's main process and everything below it (and,
with the process driver, everything in its process group: a daemon that double-forked
is still the machine's).

CPU times are milliseconds (``cpu``: user + system, ``stime``: system), ``rtime`` how long
the process has run in milliseconds, ``rss`` bytes. A driver whose processes this host
can't see (a remote engine) lists none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from taxiway.machines_api.bodies import bad_request

SORT_KEYS = ("pid", "cpu", "rss", "rtime", "stime", "command")


def machine_processes(
    pid: int | None, pgid: int | None, *, sort_by: str = "", order: str = ""
) -> list[dict[str, Any]]:
    key = sort_by or "pid"
    if key not in SORT_KEYS:
        raise bad_request(f"ps sorts by one of {', '.join(SORT_KEYS)}, not {sort_by!r}")
    if order not in ("", "asc", "desc"):
        raise bad_request(f"ps orders asc or desc, not {order!r}")
    if pid is None:
        return []
    stats = _all_stats()
    wanted = {pid} | {p for p, (_, group, _, _, _) in stats.items() if pgid and group == pgid}
    children: dict[int, list[int]] = {}
    for p, (parent, *_rest) in stats.items():
        children.setdefault(parent, []).append(p)
    todo = list(wanted)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in wanted:
                wanted.add(child)
                todo.append(child)
    shown = [_process(p, stats[p]) for p in wanted if p in stats]
    shown = [p for p in shown if p is not None]
    shown.sort(key=lambda p: p[key], reverse=order == "desc")
    return shown


#: pid → (parent pid, process group, user ticks, system ticks, start ticks after boot)
Stat = tuple[int, int, int, int, int]


def _all_stats() -> dict[int, Stat]:
    stats: dict[int, Stat] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 19:
            stats[int(entry.name)] = (
                int(fields[1]),
                int(fields[2]),
                int(fields[11]),
                int(fields[12]),
                int(fields[19]),
            )
    return stats


def _process(pid: int, stat: Stat) -> dict[str, Any] | None:
    _, _, user, system, started = stat
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # ended while being read
    try:
        directory = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        directory = ""
    return {
        "pid": pid,
        "command": command.decode(errors="replace"),
        "directory": directory,
        "cpu": (user + system) * 1000 // tick,
        "stime": system * 1000 // tick,
        "rtime": max(int((uptime_s - started / tick) * 1000), 0),
        "rss": rss_pages * page,
        "listen_sockets": [],
    }
