"""UDP services (``protocol = "udp"``): datagrams relayed to a machine and back.

UDP has no connections, so the edge keeps one mapping per client address: the first
datagram picks a machine from the service's `Balancer` (taking a slot, so autostop sees
the machine busy and autostart can start one) and opens an upstream socket connected to
it; the machine's replies on that socket go back to that client only. A mapping idle for
`IDLE_S` is dropped, as is one whose machine stops taking traffic (stopped, draining,
failing its checks, or refusing datagrams): the client's next datagram picks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from taxiway.edge.balancer import Balancer, NoMachine
from taxiway.edge.listeners import _TRY_ANOTHER, candidates

log = logging.getLogger("taxiway.edge")

#: A client's mapping is dropped after this long without a datagram either way.
IDLE_S = 60.0
#: Clients mapped at once per port; datagrams from more are dropped.
MAX_CLIENTS = 4096
#: Datagrams kept per client while its machine is chosen (or started).
PENDING_MAX = 64
#: How often mappings are checked for idleness and for their machine.
SWEEP_S = 1.0

Addr = tuple


class UdpForwarder:
    """The edge's `UdpBinder` (edge/server.py)."""

    def __init__(self, *, idle_s: float = IDLE_S, max_clients: int = MAX_CLIENTS) -> None:
        self.idle_s = idle_s
        self.max_clients = max_clients
        self.ports: list[UdpPort] = []

    async def bind(
        self, host: str, port: int, balancer: Balancer, *, exact: bool
    ) -> tuple[Callable[[], None], int]:
        """Listen on ``port`` (or its mapped port, as TCP listeners do); returns
        (closer, the port it got)."""
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for candidate in candidates(port, exact=exact):
            site = UdpPort(balancer, idle_s=self.idle_s, max_clients=self.max_clients)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda site=site: site, local_addr=(host, candidate)
                )
            except OSError as exc:
                if exc.errno not in _TRY_ANOTHER:
                    raise
                last = exc
                continue
            self.ports.append(site)
            return site.close, transport.get_extra_info("sockname")[1]
        raise last or OSError(f"could not bind udp {host}:{port}")


class _Client:
    """One client address's mapping to a machine."""

    __slots__ = ("addr", "closed", "last", "machine", "pending", "task", "upstream")

    def __init__(self, addr: Addr, now: float) -> None:
        self.addr = addr
        self.machine: str | None = None
        self.upstream: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] | None = []
        self.last = now
        self.task: asyncio.Task[None] | None = None
        self.closed = False


class _Upstream(asyncio.DatagramProtocol):
    """The socket to the machine for one client: replies go back to that client."""

    def __init__(self, port: UdpPort, client: _Client) -> None:
        self.port = port
        self.client = client

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        client = self.client
        if client.closed or self.port.transport is None:
            return
        client.last = self.port.now()
        self.port.transport.sendto(data, client.addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: nothing listens on the machine; pick again next time.
        self.port.drop(self.client)

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.drop(self.client)


class UdpPort(asyncio.DatagramProtocol):
    """One UDP listener of the edge and its client mappings."""

    def __init__(self, balancer: Balancer, *, idle_s: float, max_clients: int) -> None:
        self.balancer = balancer
        self.idle_s = idle_s
        self.max_clients = max_clients
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: dict[Addr, _Client] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # -- the edge socket ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        client = self.clients.get(addr)
        if client is not None and client.machine is not None and not self._usable(client):
            self.drop(client)
            client = None
        if client is None:
            if len(self.clients) >= self.max_clients:
                return
            client = _Client(addr, self.now())
            self.clients[addr] = client
            client.task = self._start_task(client)
        client.last = self.now()
        if client.upstream is not None:
            client.upstream.sendto(data)
        elif client.pending is not None and len(client.pending) < PENDING_MAX:
            client.pending.append(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("edge: udp: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    # -- mappings ----------------------------------------------------------------------------

    def _start_task(self, client: _Client) -> asyncio.Task[None]:
        assert self._loop is not None
        return self._loop.create_task(self._connect(client))

    async def _connect(self, client: _Client) -> None:
        balancer = self.balancer
        try:
            member = balancer.try_take() or await balancer.acquire()
        except NoMachine as exc:
            log.info("edge: udp datagrams from %s dropped: %s", client.addr, exc.reason)
            self.drop(client)
            return
        client.machine = member.id
        if client.closed:  # dropped while we waited: give the slot back
            self._release(client)
            return
        assert self._loop is not None
        try:
            upstream, _ = await self._loop.create_datagram_endpoint(
                lambda: _Upstream(self, client),
                remote_addr=member.address(balancer.internal_port),
            )
        except OSError as exc:
            log.info("edge: udp to machine %s failed: %s", member.id, exc)
            self.drop(client)
            return
        if client.closed:
            upstream.close()
            return
        client.upstream = upstream
        pending, client.pending = client.pending or [], None
        for data in pending:
            upstream.sendto(data)

    def _usable(self, client: _Client) -> bool:
        balancer = self.balancer
        mid = client.machine
        if mid is None:
            return True  # still choosing
        if mid in balancer.draining:
            return False
        member = balancer.find(mid)
        return member is not None and member.routable(balancer.internal_port)

    def drop(self, client: _Client) -> None:
        """End a mapping (once): its socket closes, its slot is given back."""
        if client.closed:
            return
        client.closed = True
        if self.clients.get(client.addr) is client:
            del self.clients[client.addr]
        if client.task is not None and not client.task.done() and client.machine is None:
            client.task.cancel()
        if client.upstream is not None:
            client.upstream.close()
        self._release(client)

    def _release(self, client: _Client) -> None:
        mid, client.machine = client.machine, None
        if mid is not None:
            with contextlib.suppress(KeyError):
                self.balancer.release(mid)

    def sweep(self, now: float) -> None:
        """Drop mappings idle since before ``now - idle_s`` or whose machine went away."""
        horizon = now - self.idle_s
        for client in list(self.clients.values()):
            if client.last < horizon or not self._usable(client):
                self.drop(client)

    def _sweep(self) -> None:
        self.sweep(self.now())
        assert self._loop is not None
        self._sweeper = self._loop.call_later(SWEEP_S, self._sweep)

    def close(self) -> None:
        """Stop listening and drop every mapping."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for client in list(self.clients.values()):
            self.drop(client)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.close()
