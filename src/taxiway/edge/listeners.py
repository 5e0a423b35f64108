"""Binding the services' external ports, mapping the ones this host won't give us.

A port below 1024 needs root (or CAP_NET_BIND_SERVICE), and any port may be taken by
something else. The platform's port is then served on port + 10000 when that is free
(80 → 10080, 443 → 10443: stable across runs, easy to recognise), else on any free port;
`Binding.address` always says where it really is, and `status` prints the real URLs.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: Errors that mean "not this port", as opposed to "not this host".
_TRY_ANOTHER = frozenset({errno.EACCES, errno.EPERM, errno.EADDRINUSE})
MAPPED_OFFSET = 10000


class Listener(Protocol):
    """An `asyncio.Server`, or the edge's own `TlsAcceptor` for ``tls`` ports."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass(slots=True)
class Binding:
    """One listener: the fly.toml port and where it really listens."""

    port: int
    host: str
    real_port: int
    protocol: str
    handlers: list[str]
    #: The service it belongs to (``ServiceSpec.source``).
    service: str
    tls: bool = False
    server: Listener | None = field(default=None, repr=False)
    #: For UDP and anything else that isn't an asyncio server: how to stop it.
    closer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.real_port}"

    def as_dict(self) -> dict:
        return {
            "port": self.port,
            "address": self.address,
            "protocol": self.protocol,
            "handlers": list(self.handlers),
            "service": self.service,
            "mapped": self.port != self.real_port,
        }


def candidates(port: int, *, exact: bool) -> list[int]:
    """Ports to try for ``port``, in order (0 = any free port)."""
    if not exact:
        return [0]
    out = [port]
    if port + MAPPED_OFFSET <= 65535:
        out.append(port + MAPPED_OFFSET)
    out.append(0)
    return out


def listening_socket(
    host: str, port: int, *, exact: bool = True, backlog: int = 1024
) -> socket.socket:
    """A listening TCP socket for ``port`` (or its mapped port)."""
    last: OSError | None = None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in candidates(port, exact=exact):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            if exc.errno not in _TRY_ANOTHER:
                raise
            last = exc
            continue
        sock.setblocking(False)
        return sock
    raise last or OSError(f"could not bind {host}:{port}")


async def bind_tcp(
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    exact: bool = True,
    backlog: int = 1024,
) -> tuple[asyncio.AbstractServer, int]:
    """A listening server for ``port`` (or its mapped port) and the port it got."""
    sock = listening_socket(host, port, exact=exact, backlog=backlog)
    return await serve_socket(factory, sock, backlog=backlog), sock.getsockname()[1]


async def serve_socket(
    factory: Callable[[], asyncio.Protocol], sock: socket.socket, *, backlog: int = 1024
) -> asyncio.AbstractServer:
    """A server on a listening socket (closed when the server can't start)."""
    try:
        return await asyncio.get_running_loop().create_server(factory, sock=sock, backlog=backlog)
    except BaseException:
        sock.close()
        raise


def exact_socket(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on exactly ``port`` (OSError when it can't be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
