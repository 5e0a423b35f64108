"""Raw TCP pass-through (a port with no handlers, or only ``tls``/``proxy_proto``).

Protocol to protocol: each side's ``data_received`` writes to the other side's transport,
and a side whose write buffer fills up pauses reading on the other (asyncio's
``pause_writing``/``resume_writing`` at the transport's high-water mark). Half-closes are
passed on. Bytes from the client that arrive before the machine is connected are kept
(the client is paused past `PENDING_HIGH`), so protocols where the client speaks first
work. With ``proxy_proto`` the PROXY protocol header goes to the machine first.

A connection holds one slot of the service's concurrency from connect to close; a machine
that refuses the connection is replaced by another before the client notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from taxiway.edge.balancer import Balancer, NoMachine
from taxiway.edge.fleet import Member
from taxiway.edge.limits import Limits
from taxiway.metrics.edge_counts import MachineCounts, SiteCounts

if TYPE_CHECKING:
    from taxiway.edge.admission import Admission

log = logging.getLogger("taxiway.edge")

PENDING_HIGH = 256 * 1024

#: ``encode(version, client_addr, server_addr) -> bytes`` (edge/proxy_protocol.py).
ProxyProtoEncoder = Callable[[str, tuple, tuple], bytes]


class TcpSite:
    """One raw TCP listener's settings, shared by its connections."""

    def __init__(
        self,
        *,
        app: str,
        balancer: Balancer,
        limits: Limits,
        proxy_proto: tuple[ProxyProtoEncoder, str] | None = None,
        counts: SiteCounts | None = None,
    ) -> None:
        self.app = app
        self.balancer = balancer
        self.limits = limits
        self.proxy_proto = proxy_proto
        self.connections: set[TcpClientConnection] = set()
        #: What the service's traffic did (`taxiway.metrics.edge_counts`): plain numbers.
        self.counts = counts if counts is not None else SiteCounts(balancer.service.source)


class _Upstream(asyncio.Protocol):
    """The machine's side of a relayed connection."""

    def __init__(self, client: TcpClientConnection) -> None:
        self.client = client
        self.counts = client.site.counts
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        #: The machine's counts, once connected (its close is counted there).
        self.machine: MachineCounts | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.counts.data_out += len(data)
        self.client.transport.write(data)

    def eof_received(self) -> bool | None:
        return self.client.peer_eof(from_client=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.machine is not None:
            self.machine.disconnects += 1
        self.client.upstream_closed()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.client.closed:
            self.client.transport.resume_reading()


class TcpClientConnection(asyncio.Protocol):
    """A client connection relayed to one machine."""

    def __init__(self, site: TcpSite) -> None:
        self.site = site
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] | None = []
        self.pending_size = 0
        self.member_id: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.client_eof = False
        self.upstream_eof = False
        self.tls = False
        #: The edge's connection slot (`taxiway.edge.admission`).
        self.admission: Admission | None = None

    # -- the client's side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.tls = transport.get_extra_info("sslcontext") is not None
        self.site.counts.tcp_connects += 1
        self.site.connections.add(self)
        balancer = self.site.balancer
        member = balancer.try_take()
        if member is not None:
            self.member_id = member.id
        self.task = asyncio.get_running_loop().create_task(self._connect(member))

    def data_received(self, data: bytes) -> None:
        self.site.counts.data_in += len(data)
        up = self.upstream
        if up is not None:
            up.transport.write(data)
            return
        if self.pending is not None:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_HIGH:
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return self.peer_eof(from_client=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.site.counts.tcp_disconnects += 1
        self.site.connections.discard(self)
        admission, self.admission = self.admission, None
        if admission is not None:
            admission.give_back()
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        up, self.upstream = self.upstream, None
        if up is not None:
            up.transport.close()
        self._release()

    def pause_writing(self) -> None:
        up = self.upstream
        if up is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None:
            up.transport.resume_reading()

    # -- relaying ----------------------------------------------------------------------------

    def peer_eof(self, *, from_client: bool) -> bool | None:
        """One side has finished sending: tell the other, keep the rest flowing."""
        if from_client:
            self.client_eof = True
            other = self.upstream.transport if self.upstream is not None else None
        else:
            self.upstream_eof = True
            other = self.transport
        if self.client_eof and self.upstream_eof:
            self.close()
            return None
        if other is not None and other.can_write_eof() and not self.tls:
            other.write_eof()
            return True
        if from_client and self.upstream is None and not self.tls:
            return True  # connecting still: the EOF is passed on once connected
        self.close()
        return None

    def upstream_closed(self) -> None:
        self.upstream = None
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.transport.close()
        up, self.upstream = self.upstream, None
        if up is not None:
            up.transport.close()
        self._release()

    def _release(self) -> None:
        mid = self.member_id
        if mid is not None:
            self.member_id = None
            self.site.balancer.release(mid)

    async def _connect(self, member: Member | None) -> None:
        site = self.site
        balancer: Balancer = site.balancer
        limits = site.limits
        loop = asyncio.get_running_loop()
        exclude: set[str] = set()
        try:
            for _ in range(limits.connect_attempts):
                if member is None:
                    member = await balancer.acquire(exclude=exclude)
                    self.member_id = member.id
                host, port = member.address(balancer.internal_port)
                try:
                    up = await _open(loop, self, host, port, member, balancer, limits)
                except OSError:
                    self._release()
                    exclude.add(member.id)
                    member = None
                    continue
                self._attach(up)
                return
        except NoMachine:
            pass
        except Exception:  # a bug must cost one connection, never a slot or the edge
            log.exception("edge: relaying a connection failed")
        self.close()  # raw TCP has no way to say why: the connection just ends

    def _attach(self, up: _Upstream) -> None:
        if self.closed:
            up.transport.close()
            self._release()
            return
        self.upstream = up
        parts: list[bytes] = []
        if self.site.proxy_proto is not None:
            encode, version = self.site.proxy_proto
            client = self.transport.get_extra_info("peername")
            server = self.transport.get_extra_info("sockname")
            parts.append(encode(version, client, server))
        pending, self.pending = self.pending or [], None
        parts += pending
        if parts:
            up.transport.writelines(parts)
        if self.pending_size > PENDING_HIGH:
            self.transport.resume_reading()
        if self.client_eof and up.transport.can_write_eof():
            up.transport.write_eof()


async def _open(
    loop: asyncio.AbstractEventLoop,
    client: TcpClientConnection,
    host: str,
    port: int,
    member: Member,
    balancer: Balancer,
    limits: Limits,
) -> _Upstream:
    delay = 0.02
    while True:
        try:
            began = loop.time()
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(client), host, port),
                limits.connect_timeout_s,
            )
            counts = client.site.counts.machine(member.id)
            counts.connects += 1
            counts.connect_times.observe(loop.time() - began)
            up.machine = counts  # type: ignore[attr-defined]
            return up  # type: ignore[return-value]
        except ConnectionRefusedError:
            if not balancer.is_booting(member.id):
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
