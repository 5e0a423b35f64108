"""Telling a user when their machine listens where the edge doesn't connect.

The edge sends a service's traffic to one port of the machine: with the process driver
the machine's ``PORT`` (``internal_port`` itself for the first machine that finds it
free, another port for the others), with the namespace driver ``internal_port`` at the
machine's own address. An app that listens elsewhere (a fixed port while ``PORT`` says
another, a port that isn't ``internal_port``) gets no traffic, and the user only sees
502s. `machine_hint` turns what the host can see into one sentence naming the machine,
the port it listens on, the port the edge uses and the fix; the runtime keeps it in the
machine's status (`status`, `scale`, `up` print it) and its log.

What a machine listens on is read from ``/proc`` (the machine's processes' sockets in
its network namespace), so taxiway never connects to the app to find out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: How long a machine that keeps running may listen nowhere before a port taken by
#: someone else counts against it (an app may take a while to open its port).
GRACE_S = 3.0

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp

#: `PortFacts.internal_holder` when no machine of the app holds the port.
ANOTHER_PROGRAM = "another program on this host"


@dataclass(frozen=True, slots=True)
class PortFacts:
    """What the host sees of one machine's service port."""

    machine: str
    group: str
    internal: int
    #: Where the edge connects (the host port with the process driver).
    edge_port: int
    #: Whether each machine has its own network (namespace driver).
    own_network: bool
    #: The TCP ports the machine's processes listen on (None: unknown, e.g. not running).
    listening: frozenset[int] | None
    #: Who else holds ``internal`` on the host: "machine <id>", `ANOTHER_PROGRAM`, or None
    #: when nothing listens there (process driver only).
    internal_holder: str | None = None
    #: Whether the machine exited or ran long enough that listening nowhere is telling.
    settled: bool = False


def machine_hint(facts: PortFacts) -> str | None:
    """The sentence for a machine that doesn't listen where the edge connects, else None
    (it does, or it's too early to say)."""
    f = facts
    who = f"machine {f.machine} ({f.group})"
    if f.listening is not None and f.edge_port in f.listening:
        return None
    elsewhere = sorted(f.listening or ())
    if elsewhere:
        ports = " and ".join(str(p) for p in elsewhere[:3])
        if f.own_network or f.edge_port == f.internal:
            return (
                f"{who} listens on {ports}, but the edge sends its traffic to internal_port "
                f"{f.internal}: make the app listen on {f.internal} ($PORT), or set "
                f"internal_port = {elsewhere[0]} in fly.toml"
            )
        return (
            f"{who} listens on {ports}, but the edge sends its traffic to its $PORT, "
            f"{f.edge_port} (internal_port {f.internal} was taken when it started): make the "
            f"app listen on $PORT, or run one machine per group (`taxiway scale count "
            f"{f.group}=1`), or use the namespace driver (`taxiway up --driver namespace`)"
        )
    if f.own_network or f.internal_holder is None or not f.settled:
        return None
    holder = f.internal_holder
    if f.edge_port == f.internal:
        what = (
            f"internal_port {f.internal}, where the edge sends its traffic, while {holder} holds it"
        )
    else:
        what = (
            f"$PORT ({f.edge_port}), where the edge sends its traffic, and internal_port "
            f"{f.internal} is held by {holder}"
        )
    return (
        f"{who} does not listen on {what}, so an app that binds {f.internal} cannot run "
        f"here: make the app listen on $PORT, or run one machine per group (`taxiway scale "
        f"count {f.group}=1`), or use the namespace driver (`taxiway up --driver namespace`)"
    )


def listening_ports(
    pid: int,
    pgid: int | None,
    *,
    own_network: bool,
    groups: Mapping[int, list[int]] | None = None,
) -> frozenset[int] | None:
    """The TCP ports a machine listens on: every listener of its network namespace (its
    own network), else the listeners whose sockets its process group holds (``groups``:
    `process_groups`, when the caller asks about several machines). None when ``/proc``
    won't say (the machine is gone)."""
    if own_network and _same_netns(pid):
        return None  # still on its way into its namespace (the launch's exec chain)
    rows = _listeners(pid)
    if rows is None:
        return None
    if own_network:
        return frozenset(rows.values())
    if pgid is None:
        return None
    members = (groups if groups is not None else process_groups()).get(pgid, [])
    inodes = _socket_inodes(members)
    return frozenset(port for inode, port in rows.items() if inode in inodes)


def host_listening_ports() -> frozenset[int]:
    """The TCP ports something listens on in this process's (the host's) network."""
    return frozenset((_listeners(os.getpid()) or {}).values())


#: 127.0.0.11 as /proc/net/tcp writes it: Docker's embedded DNS server listens there, on
#: a random port, in every container of a user-defined network; it isn't the app's.
_ENGINE_DNS = "0B00007F"


def _listeners(pid: int) -> dict[str, int] | None:
    """Listening sockets in ``pid``'s network namespace: inode → port."""
    found: dict[str, int] = {}
    read_any = False
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN:
                address, port = fields[1].rsplit(":", 1)
                if address == _ENGINE_DNS:
                    continue
                found[fields[9]] = int(port, 16)
    return found if read_any else None


def _same_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return True


def process_groups() -> dict[int, list[int]]:
    """Every process of the host by process group: pgid → pids."""
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2:
            groups.setdefault(int(fields[2]), []).append(int(entry.name))
    return groups


def _socket_inodes(pids: Iterable[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes
