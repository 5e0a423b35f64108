"""Host ports for machines run by the process driver.

Without network namespaces every machine shares the host's ports, so two machines
of one group can't both listen on ``internal_port``. Each machine gets its own host
port per service ``internal_port``; ``PORT`` tells the app which one to listen on.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def allocate(internal_ports: list[int], taken: set[int]) -> dict[int, int]:
    """A distinct free host port for each internal port, avoiding ``taken``."""
    mapping: dict[int, int] = {}
    for internal in internal_ports:
        port = free_port()
        while port in taken or port in mapping.values():
            port = free_port()
        mapping[internal] = port
    return mapping
