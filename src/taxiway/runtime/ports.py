"""Host ports for machines run by the process driver.

Without network namespaces every machine shares the host's ports, so two machines
of one group can't both listen on ``internal_port``. The first machine that finds
``internal_port`` free gets it (an app that binds its fixed port, as most real apps
do, then works alone); every other machine gets a port of its own, and ``PORT`` tells
the app which one to listen on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
    ``hosts``; else a free port the kernel picks, avoiding ``taken``."""
    hosts = list(hosts)
    mapping: dict[int, int] = {}
    for internal in internal_ports:
        if internal not in taken and internal not in mapping.values() and bindable(internal, hosts):
            mapping[internal] = internal
            continue
        port = free_port()
        while port in taken or port in mapping.values():
            port = free_port()
        mapping[internal] = port
    return mapping
