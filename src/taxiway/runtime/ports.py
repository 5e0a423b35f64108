"""Host ports for machines run by the process driver.

Without network namespaces every machine shares the host's ports, so two machines
of one group can't both listen on ``internal_port``. The first machine that finds
``internal_port`` free gets it (an app that binds its fixed port, as most real apps
do, then works alone); every other machine gets a port of its own, and ``PORT`` tells
the app which one to listen on.

That port is chosen below the kernel's ephemeral range (where the kernel also takes the
local ports of outgoing connections): between being chosen and the app binding it, a
port the kernel picked could be handed to any connection the host opens, and the app
would fail with "address in use".
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Where machine ports are chosen: from here up to the kernel's ephemeral range.
LOWEST_PORT = 20000


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def machine_port(hosts: Iterable[str], avoid: set[int]) -> int:
    """A port for a machine that is bindable on ``hosts`` now and not in ``avoid``: a
    random one below the ephemeral range, else (a host whose range starts too low, or
    nothing free after 64 tries) the kernel's pick."""
    hosts = list(hosts)
    top = _ephemeral_start()
    if top - LOWEST_PORT >= 1000:
        for _ in range(64):
            port = random.randrange(LOWEST_PORT, top)
            if port not in avoid and bindable(port, hosts):
                return port
    port = free_port()
    while port in avoid:
        port = free_port()
    return port


def bindable(port: int, hosts: Iterable[str]) -> bool:
    """Whether an app could bind ``port`` on each of ``hosts`` right now. SO_REUSEADDR,
    as servers set it: a connection of the past (TIME_WAIT) does not hold a port, a
    listener does."""
    for host in dict.fromkeys(hosts):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate(
    internal_ports: list[int],
    taken: set[int],
    *,
    hosts: Iterable[str] = ("0.0.0.0",),
) -> dict[int, int]:
    """A distinct host port for each internal port: the internal port itself when it is
    not ``taken`` (by another machine, by the edge) and bindable on every one of
    ``hosts``; else a free one (`machine_port`), avoiding ``taken``."""
    hosts = list(hosts)
    mapping: dict[int, int] = {}
    for internal in internal_ports:
        if internal not in taken and internal not in mapping.values() and bindable(internal, hosts):
            mapping[internal] = internal
            continue
        mapping[internal] = machine_port(hosts, taken | set(mapping.values()))
    return mapping
