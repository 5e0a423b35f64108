"""`Edge`: taxiway's Fly Proxy for one app — every service port's listener, wired up.

From the plan (`MachineSpec` per group) the edge makes one `Balancer` per service — a
``[[services]]`` entry or ``[http_service]``, over every group that lists it — and one
listener per external port (ranges included): the ``http`` handler, or raw TCP for a port
without it; ``tls`` wraps either in the `TlsProvider`'s context, ``proxy_proto`` puts the
encoder's header in front of the relayed bytes, UDP goes to the `UdpBinder`.

The daemon makes one `Edge` over the runtime's fleet, calls `start`, prints `bindings`,
hands `drain` to the runtime's before-stop hook and `load` to autostop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from taxiway.edge import heap
from taxiway.edge.admission import Admission, TlsAcceptor, connection_cap, gate
from taxiway.edge.balancer import Balancer
from taxiway.edge.errors_page import error_response
from taxiway.edge.fleet import Fleet
from taxiway.edge.http_proxy import HttpClientConnection, HttpSite, StaticsLike
from taxiway.edge.limits import Limits
from taxiway.edge.listeners import (
    Binding,
    Listener,
    exact_socket,
    listening_socket,
    serve_socket,
)
from taxiway.edge.tcp_proxy import ProxyProtoEncoder, TcpClientConnection, TcpSite
from taxiway.edge.upstream import Pools
from taxiway.metrics.edge_counts import EdgeCounts
from taxiway.plan.machine import MachineSpec, Port, ServiceSpec

if TYPE_CHECKING:
    from taxiway.edge.h2_upstream import H2Upstreams

log = logging.getLogger("taxiway.edge")
#: After this many client connections ended, the sweep hands freed memory back (`heap`):
#: at most one ``malloc_trim`` a second, only after bursts.
TRIM_AFTER = 256


class TlsProvider(Protocol):
    """Where the ``tls`` handler gets its server context (edge/tls.py: the local CA)."""

    def context_for(self, port: Port) -> ssl.SSLContext: ...


class UdpBinder(Protocol):
    """Forwards a UDP port to the machines (edge/udp.py); returns (closer, real port)."""

    async def bind(
        self, host: str, port: int, balancer: Balancer, *, exact: bool
    ) -> tuple[Callable[[], None], int]: ...


def port_numbers(port: Port) -> list[int]:
    """The external ports of one ``[[services.ports]]`` entry (a range is inclusive)."""
    if port.port is not None:
        return [port.port]
    if port.start_port is not None:
        end = port.end_port if port.end_port is not None else port.start_port
        return list(range(port.start_port, end + 1))
    return []


def services_of(specs: Mapping[str, MachineSpec]) -> list[tuple[ServiceSpec, list[str]]]:
    """Each fly.toml service once, with every group it was planned for."""
    merged: dict[tuple, tuple[ServiceSpec, list[str]]] = {}
    for group, spec in specs.items():
        for i, svc in enumerate(spec.services):
            key = (svc.source or f"{group}#{i}", svc.internal_port, svc.protocol)
            if key in merged:
                merged[key][1].append(group)
            else:
                merged[key] = (svc, [group])
    return list(merged.values())


class Edge:
    """The listeners, handlers and balancers of one app."""

    def __init__(
        self,
        fleet: Fleet,
        specs: Mapping[str, MachineSpec],
        *,
        host: str = "127.0.0.1",
        tls: TlsProvider | None = None,
        statics: StaticsLike | None = None,
        proxy_proto: ProxyProtoEncoder | None = None,
        udp: UdpBinder | None = None,
        limits: Limits | None = None,
        exact_ports: bool = True,
        admission: Admission | None = None,
        counts: EdgeCounts | None = None,
        private_hosts: Sequence[str] = (),
    ) -> None:
        """``exact_ports=False`` binds every listener on a free port (tests, benchmarks,
        two apps side by side); `bindings` tells where. ``counts``: where the traffic is
        counted (the caller keeps it across rebuilds of the edge). ``private_hosts``: the
        app's flycast addresses, where every TCP port is served as well, on its own number
        (the address is the app's alone) and with the same handlers: the platform's
        flycast goes through its proxy like public traffic
        (https://fly.io/docs/networking/flycast/)."""
        self.fleet = fleet
        self.specs = specs
        self.host = host
        self.tls = tls
        self.statics = statics
        self.proxy_proto = proxy_proto
        self.udp = udp
        self.limits = limits or Limits()
        self.exact_ports = exact_ports
        self.private_hosts = tuple(private_hosts)
        self.pools = Pools(self.limits)
        self.counts = counts if counts is not None else EdgeCounts()
        #: Client connections held, capped below the descriptor limit.
        self.admission = admission or Admission(self.limits.max_connections or connection_cap())
        self._trimmed_at = 0
        self.balancers: list[Balancer] = []
        self.draining: set[str] = set()
        self._on_route: Callable[[str], None] | None = None
        self._bindings: list[Binding] = []
        #: The flycast listeners: not in `bindings` (status shows the public ones).
        self._private: list[Listener] = []
        self._sites: list[HttpSite | TcpSite] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._https_port: dict[str, int | None] = {}
        self._started = False
        self._h2: H2Upstreams | None = None

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener (a port this host won't give is mapped; see `bindings`)."""
        try:
            for service, groups in services_of(self.specs):
                balancer = Balancer(
                    self.fleet, groups, service, draining=self.draining, limits=self.limits
                )
                balancer.on_take = self._on_route
                self.balancers.append(balancer)
                for port in service.ports:
                    for number in port_numbers(port):
                        await self._listen(service, port, number, balancer)
        except BaseException:
            await self.close()
            raise
        self.fleet.subscribe(self._changed)
        self._started = True
        loop = asyncio.get_running_loop()
        self.pools.now = loop.time()
        self._sweeper = loop.call_later(1.0, self._sweep)

    async def close(self) -> None:
        """Stop listening, end every connection, close pooled ones."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for binding in self._bindings:
            if binding.server is not None:
                binding.server.close()
            if binding.closer is not None:
                binding.closer()
        for listener in self._private:
            listener.close()
        for site in self._sites:
            for conn in list(site.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        self.pools.close()
        if self._h2 is not None:
            self._h2.close()
        servers = [b.server for b in self._bindings if b.server is not None] + self._private
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await asyncio.sleep(0)

    def use_statics(self, statics: StaticsLike | None) -> None:
        """Serve ``statics`` from now on (a deploy of another image): every http site
        takes it at its next request; listeners and open connections stay as they are."""
        self.statics = statics
        for site in self._sites:
            if isinstance(site, HttpSite):
                site.statics = statics

    def bindings(self) -> list[dict]:
        """[{"port", "address", "protocol", "handlers", "service", "mapped"}, ...]"""
        return [b.as_dict() for b in self._bindings]

    # -- machines ----------------------------------------------------------------------------

    def load(self, machine_id: str) -> int:
        """Connections (raw TCP) and requests (http) in flight to the machine."""
        return sum(b.load.get(machine_id, 0) for b in self.balancers)

    async def drain(self, machine_id: str, timeout_s: float) -> None:
        """No new traffic to the machine from now; returns when its in-flight requests and
        connections are done, or after ``timeout_s``.

        The machine takes traffic again once the fleet reports it stopped (or gone) and
        started again, or after `undrain`.
        """
        self.draining.add(machine_id)
        for b in self.balancers:
            b.changed()
        self._close_idle_to(machine_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.load(machine_id) > 0 and loop.time() < deadline:
            await asyncio.sleep(min(0.02, max(0.0, deadline - loop.time())))

    @property
    def on_route(self) -> Callable[[str], None] | None:
        """Called with a machine id whenever a connection or request is routed to it
        (autostop's `touch`)."""
        return self._on_route

    @on_route.setter
    def on_route(self, hook: Callable[[str], None] | None) -> None:
        self._on_route = hook
        for b in self.balancers:
            b.on_take = hook

    def undrain(self, machine_id: str) -> None:
        self.draining.discard(machine_id)
        self._changed()

    def stats(self) -> dict:
        """Counters for tests and ``status``: load per machine, open client connections,
        idle pooled connections to machines."""
        load: dict[str, int] = {}
        for b in self.balancers:
            for mid, n in b.load.items():
                load[mid] = load.get(mid, 0) + n
        return {
            "load": load,
            "connections": sum(len(s.connections) for s in self._sites),
            "pooled": self.pools.idle_count(),
        }

    # -- internals ---------------------------------------------------------------------------

    async def _listen(self, service: ServiceSpec, port: Port, number: int, bal: Balancer) -> None:
        handlers = list(port.handlers)
        if service.protocol == "udp":
            await self._listen_udp(service, port, number, bal)
            return
        ssl_context = None
        if "tls" in handlers:
            if self.tls is None:
                log.warning("edge: no TLS provider; port %s serves plain TCP", number)
            else:
                ssl_context = self.tls.context_for(port)
        app = self.fleet.app
        site: HttpSite | TcpSite
        if "http" in handlers:
            source = service.source
            h2 = None
            if (port.http_options or {}).get("h2_backend"):
                from taxiway.edge.h2_upstream import H2Upstreams

                if self._h2 is None:
                    self._h2 = H2Upstreams(self.limits)
                h2 = self._h2
            site = HttpSite(
                app=app,
                region=self.fleet.region,
                port=port,
                balancer=bal,
                pools=self.pools,
                limits=self.limits,
                statics=self.statics,
                https_port=lambda: self._https_port_for(source),
                h2=h2,
                counts=self.counts.site(service.source),
            )
            http_site = site

            def factory() -> asyncio.Protocol:
                return HttpClientConnection(http_site)

            shed_reply = _overloaded(app)
        else:
            if "pg_tls" in handlers:
                log.info(
                    "edge: port %s (pg_tls) is relayed as raw TCP: Postgres negotiates TLS "
                    "with the machine itself",
                    number,
                )
            proxy = None
            if "proxy_proto" in handlers:
                encode = self.proxy_proto or _default_proxy_proto()
                version = (port.proxy_proto_options or {}).get("version") or "v1"
                if encode is None:
                    log.warning("edge: no PROXY protocol encoder; port %s relays without", number)
                else:
                    proxy = (encode, version)
            site = TcpSite(
                app=app,
                balancer=bal,
                limits=self.limits,
                proxy_proto=proxy,
                counts=self.counts.site(service.source),
            )
            tcp_site = site

            def factory() -> asyncio.Protocol:
                return TcpClientConnection(tcp_site)

            shed_reply = b""
        server, real = await self._serve_on(
            self.host, number, factory, shed_reply, ssl_context, exact=self.exact_ports
        )
        for private in self.private_hosts:
            try:
                flycast, _ = await self._serve_on(
                    private, number, factory, shed_reply, ssl_context, exact=False, port=number
                )
            except OSError as exc:
                log.warning("edge: flycast [%s]:%s is not served: %s", private, number, exc)
                continue
            self._private.append(flycast)
        self._sites.append(site)
        self._bindings.append(
            Binding(
                port=number,
                host=self.host,
                real_port=real,
                protocol="tcp",
                handlers=handlers,
                service=service.source,
                tls=ssl_context is not None,
                server=server,
            )
        )

    async def _serve_on(
        self,
        host: str,
        number: int,
        factory: Callable[[], asyncio.Protocol],
        shed_reply: bytes,
        ssl_context: ssl.SSLContext | None,
        *,
        exact: bool,
        port: int | None = None,
    ) -> tuple[Listener, int]:
        """A listener for a port's connections on ``host``: the port (or its mapped
        one), or exactly ``port`` when given."""
        if port is not None:
            sock = exact_socket(host, port)
        else:
            sock = listening_socket(host, number, exact=exact)
        real = sock.getsockname()[1]
        if ssl_context is not None:
            acceptor = TlsAcceptor(
                sock,
                factory,
                ssl_context,
                self.admission,
                self.limits.tls_handshake_timeout_s,
                counts=self.counts,
            )
            return acceptor, real
        return await serve_socket(gate(factory, self.admission, shed_reply), sock), real

    async def _listen_udp(
        self, service: ServiceSpec, port: Port, number: int, bal: Balancer
    ) -> None:
        udp = self.udp
        if udp is None:
            log.warning("edge: no UDP forwarder; udp port %s is not served", number)
            return
        closer, real = await udp.bind(self.host, number, bal, exact=self.exact_ports)
        self._bindings.append(
            Binding(
                port=number,
                host=self.host,
                real_port=real,
                protocol="udp",
                handlers=list(port.handlers),
                service=service.source,
                closer=closer,
            )
        )

    def _https_port_for(self, source: str) -> int | None:
        """The real port of the service's tls+http listener (else any listener for 443)."""
        if source in self._https_port:
            return self._https_port[source]
        found = None
        for b in self._bindings:
            if b.service == source and "tls" in b.handlers and "http" in b.handlers:
                found = b.real_port
                break
        if found is None:
            for b in self._bindings:
                if b.port == 443 and b.protocol == "tcp":
                    found = b.real_port
                    break
        if self._started:
            self._https_port[source] = found
        return found

    def _changed(self) -> None:
        for b in self.balancers:
            b.changed()
        if self.draining:
            started = {m.id for b in self.balancers for m in b.members() if m.state == "started"}
            self.draining &= started

    def _close_idle_to(self, machine_id: str) -> None:
        for b in self.balancers:
            m = b.find(machine_id)
            if m is not None:
                self.pools.close_address(m.address(b.internal_port))

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self.pools.sweep(loop.time())
        self.counts.settle()  # the responses counted since the last sweep, sorted in
        ended = self.admission.ended
        if ended - self._trimmed_at >= TRIM_AFTER:
            self._trimmed_at = ended
            heap.release_free_memory()
        self._sweeper = loop.call_later(1.0, self._sweep)


def _overloaded(app: str) -> bytes:
    """The answer of a plain http listener to a connection beyond the edge's cap."""
    return error_response(
        app, 503, "the edge is at its connection limit; try again shortly", close=True
    )


def _default_proxy_proto() -> ProxyProtoEncoder | None:
    try:
        from taxiway.edge import proxy_protocol  # imported only when a port asks for it
    except ImportError:
        return None
    return proxy_protocol.encode  # type: ignore[attr-defined]
