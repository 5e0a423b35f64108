"""What a daemon that died (``kill -9``, a crash, a reboot) left behind, and its clean-up:
by the next daemon before it starts machines, or by `down` when no daemon runs.

A dead daemon's machines may still run: the process driver's as process groups (the
store has their pids), the namespace driver's also in cgroups and network namespaces,
the docker driver's as containers in the engine (found by their state folder's label),
and a one-off (release command, machine check) as a note under the state folder. All
of it goes, whichever driver the next daemon uses.

No asyncio here: `up -d`'s command process does this while the daemon it forked is still
importing (`taxiway.daemon_startup`), and `down` does it in a plain process.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

from taxiway.private_net.host import release_scope
from taxiway.runtime import cgroups, hostaccess, netns, outbound
from taxiway.runtime.drivers import unusable_reason
from taxiway.runtime.drivers.engine_scope import reap_engine
from taxiway.runtime.lifecycle import RUNNING, State
from taxiway.runtime.scope import scope_for
from taxiway.state.store import Store

#: Where running one-offs are noted (under the state folder): the pid, group and start
#: time of each, written by `taxiway.runtime.oneoff.run_oneoff` while it runs.
ONEOFF_NOTES = "oneoffs"

#: States only a live daemon keeps a machine in: running ones, and one mid-update.
_LIVE_DAEMON_STATES = RUNNING | {State.REPLACING}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since boot), to tell it from a later process with its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def kill_group(pid: int, pgid: int, start_time: float | None) -> bool:
    """SIGKILL a group a dead daemon left, never an unrelated process that reused the pid;
    True if there was one.

    The leader is recognised by its start time. When the leader is gone, a live group
    with that id can only be the leader's stragglers: Linux never hands out a pid that
    is still in use as a process group id.
    """
    return _signal_left_group(pid, pgid, start_time, signal.SIGKILL)


def _signal_left_group(pid: int, pgid: int, start_time: float | None, sig: int) -> bool:
    """Send ``sig`` (0: only look) to a dead daemon's machine group, recognised as in
    `kill_group`; True if it still ran."""
    current = process_start_time(pid)
    if current is not None and (start_time is None or abs(current - start_time) > 0.05):
        return False  # the pid now belongs to someone else
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def left_running(store: Store, app: str, state_dir: Path) -> list[str]:
    """What a dead daemon left running, without touching it (`taxiway status` after a
    ``kill -9``): the ids of its machines whose processes still run, and of its one-offs.
    Empty while a daemon holds the app's lock (one starting has no socket yet)."""
    try:
        lock = os.open(state_dir / "daemon.lock", os.O_RDONLY)
    except OSError:
        lock = -1
    if lock >= 0:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # a daemon runs the app
        finally:
            os.close(lock)
    found = [
        record.id
        for record in store.list_machines(app)
        if record.pid
        and record.pgid
        and _signal_left_group(record.pid, record.pgid, record.pid_start_time, 0)
    ]
    for note in sorted((state_dir / ONEOFF_NOTES).glob("*.json")):
        try:
            noted = json.loads(note.read_text())
            if _signal_left_group(noted["pid"], noted["pgid"], noted.get("start"), 0):
                found.append(note.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def release_namespaces(scope: str, *, way_out: bool = False) -> list[str]:
    """The namespace driver's part of ``scope`` (one state folder): every process in its
    cgroups (``setsid`` escapees too), the cgroups, namespaces, veths, hosts files, the
    bridge and, when there was a bridge (or ``way_out`` says rules were made), its
    iptables rules; the machines that still ran."""
    running = cgroups.cleanup_scope(scope)
    bridge = netns.bridge_name(scope)
    had_bridge = netns.link_exists(bridge)  # the rules go with it: no iptables call else
    netns.cleanup_leftovers(scope)
    hostaccess.remove_hosts(scope)
    if had_bridge or way_out:
        outbound.remove(bridge)
    return running


def reap_oneoffs(state_dir: Path) -> int:
    """Kill the throwaway machines a dead daemon left running; how many were found."""
    reaped = 0
    for note in sorted((state_dir / ONEOFF_NOTES).glob("*.json")):
        try:
            found = json.loads(note.read_text())
            reaped += kill_group(found["pid"], found["pgid"], found.get("start"))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a note cut short by the crash: nothing to go on
        note.unlink(missing_ok=True)
    return reaped


def reap(store: Store, app: str, state_dir: Path) -> int:
    """Kill everything of ``app`` a dead daemon left running and mark its machines
    stopped; how many machines and one-offs were still running. Only where no daemon
    runs the app: a starting one holding its lock, or `down` that found none. Only this
    state folder's: the store's pids, its one-off notes, its scope's namespaces."""
    # The last daemon's driver may not be this one's: where namespaces can be made,
    # its cgroups, namespaces, veths and bridge go whatever this daemon will use.
    scope = scope_for(app, state_dir)
    cleaned = set(release_namespaces(scope)) if unusable_reason() is None else set()
    cleaned |= set(reap_engine(scope, state_dir))  # the docker driver's containers
    release_scope(scope)  # its entry in the private network, its addresses on the host
    count = len(cleaned)
    for record in store.list_machines(app):
        if record.pid and record.pgid:
            found = kill_group(record.pid, record.pgid, record.pid_start_time)
            if found and record.id not in cleaned:
                count += 1
            store.update_machine(record.id, pid=None, pgid=None, pid_start_time=None)
        if record.state in _LIVE_DAEMON_STATES:
            if record.api is not None:  # it ran: the next `up` starts it again
                store.update_machine(record.id, api={**record.api, "resume": True})
            store.update_machine(record.id, state=State.STOPPED.value)
    return count + reap_oneoffs(state_dir)
