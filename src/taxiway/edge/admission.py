"""How many client connections the edge holds, and what happens to the ones beyond.

The daemon's file descriptors are shared by the edge's client connections, their
connections to the machines, pooled idle ones, and everything that must keep working when
the edge is flooded: the API socket (`status`, `machine restart`), health checks, the
machines' pipes and log files, SQLite. Left to itself the edge accepts until the process
runs out of descriptors and all of those fail. So:

- at start the daemon raises its soft ``RLIMIT_NOFILE`` to the hard limit (where allowed);
- the edge holds at most `connection_cap` client connections: half of what is left once a
  reserve (a quarter of the limit, at most 1024) is set aside, since each client connection
  may hold a connection to a machine too. The platform's proxy has a per-app connection cap
  of its own (2048 was mentioned when idle TCP timeouts were removed:
  https://community.fly.io/t/tcp-idle-timeouts-restrictions-have-been-removed/15160); a
  local edge is bounded by this host instead;
- a connection beyond the cap is accepted and closed at once, never left in the listen
  backlog holding the kernel's queue: a plain http listener first answers **503** (as the
  platform answers sustained overload, https://fly.io/docs/apps/concurrency/), raw TCP gets
  closed, and a ``tls`` listener closes it before the handshake, which would cost the CPU
  and the descriptor being protected.

TLS listeners accept connections themselves (`TlsAcceptor`), so a connection counts from
the moment it is accepted, a stalled handshake is dropped after
`Limits.tls_handshake_timeout_s`, and a handshake that fails gives its slot back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taxiway.metrics.edge_counts import EdgeCounts

#: The reserve is a quarter of the descriptor limit, at most this many.
MAX_RESERVE = 1024
#: Never fewer client connections than this, however low the limit.
MIN_CAP = 16


def raise_file_limit() -> int:
    """Raise the soft descriptor limit to the hard one, where allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connection_cap(nofile: int | None = None) -> int:
    """Client connections the edge may hold with ``nofile`` descriptors (the current soft
    limit when None)."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile == resource.RLIM_INFINITY or nofile <= 0:
        nofile = 1 << 20
    reserve = min(nofile // 4, MAX_RESERVE)
    return max(MIN_CAP, (nofile - reserve) // 2)


class Admission:
    """The edge's client connections: a slot each, taken when accepted, given back once
    when the connection is gone."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        #: Connections turned away because every slot was taken.
        self.shed = 0
        #: Connections that ended, ever (the edge gives freed memory back after many).
        self.ended = 0

    def take(self) -> bool:
        if self.open >= self.cap:
            self.shed += 1
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1
        self.ended += 1


class Shed(asyncio.Protocol):
    """A connection beyond the cap: answered with ``reply`` (may be empty) and closed."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.reply:
            transport.write(self.reply)  # type: ignore[attr-defined]
            transport.close()
        else:
            transport.abort()  # type: ignore[attr-defined]


def gate(
    factory: Callable[[], asyncio.Protocol], admission: Admission, shed_reply: bytes = b""
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory that admits a connection into a slot, or sheds it."""

    def admit() -> asyncio.Protocol:
        if not admission.take():
            return Shed(shed_reply)
        proto = factory()
        proto.admission = admission  # type: ignore[attr-defined]
        return proto

    return admit


class TlsAcceptor:
    """A ``tls`` listener that accepts in Python: each connection takes a slot (or is
    closed at once) *before* its handshake, and a handshake that fails, stalls past
    ``timeout_s`` or loses its client gives the slot back at once. The loop then runs TLS
    as `create_server(ssl=...)` would (`connect_accepted_socket`).

    Quacks like the `asyncio.Server` a `Binding` holds (``sockets``, ``close``,
    ``wait_closed``).
    """

    #: Connections accepted per wake-up before other work gets a turn.
    BATCH = 64

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        admission: Admission,
        timeout_s: float,
        *,
        counts: EdgeCounts | None = None,
    ) -> None:
        self.sockets = [sock]
        #: Where handshakes are counted (`taxiway.metrics.edge_counts`).
        self.counts = counts
        self.factory = factory
        self.context = context
        self.admission = admission
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        #: Handshakes in progress (cancelled when the listener closes).
        self.handshakes: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)
        self.closed = False

    def _accept(self) -> None:
        sock = self.sockets[0]
        admission = self.admission
        for _ in range(self.BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors after all: look again in a moment
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(0.1, self._resume)
                return
            if not admission.take():
                conn.close()  # shed before the handshake
                continue
            task = self.loop.create_task(self._handshake(conn))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sockets[0].fileno(), self._accept)

    async def _handshake(self, conn: socket.socket) -> None:
        admission = self.admission
        factory = self.factory
        made: list[asyncio.Protocol] = []

        def admitted() -> asyncio.Protocol:
            proto = factory()
            proto.admission = admission  # type: ignore[attr-defined]
            made.append(proto)
            return proto

        began = self.loop.time()
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport, _ = await self.loop.connect_accepted_socket(
                admitted, conn, ssl=self.context, ssl_handshake_timeout=self.timeout_s
            )
            if self.counts is not None:
                tls = transport.get_extra_info("ssl_object")
                version = tls.version() if tls is not None else None
                self.counts.tls_handshake(version, self.loop.time() - began)
        except (Exception, asyncio.CancelledError) as exc:
            if self.counts is not None and not isinstance(exc, asyncio.CancelledError):
                self.counts.tls_failure(None)
            # Failed, timed out, cancelled, or the client left. A protocol that was never
            # connected won't give its slot back itself: it is given back here.
            if not made or getattr(made[0], "transport", None) is None:
                admission.give_back()
            conn.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        sock = self.sockets[0]
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(sock.fileno())
        sock.close()
        for task in list(self.handshakes):
            task.cancel()

    async def wait_closed(self) -> None:
        if self.handshakes:
            await asyncio.gather(*self.handshakes, return_exceptions=True)
