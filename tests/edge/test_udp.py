"""UDP services: datagrams relayed to real echo machines, replies back to their client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge_support import plan

from taxiway.edge.balancer import Balancer
from taxiway.edge.fleet import Member, StaticFleet
from taxiway.edge.limits import Limits
from taxiway.edge.server import Edge
from taxiway.edge.udp import UdpForwarder
from taxiway.plan.machine import Concurrency, Port, ServiceSpec

INTERNAL = 5353


class Echo(asyncio.DatagramProtocol):
    """A machine: answers ``<name>:<datagram>``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.transport.sendto(self.name.encode() + b":" + data, addr)  # type: ignore[attr-defined]


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.replies.put_nowait(data)

    async def ask(self, data: bytes) -> bytes:
        self.transport.sendto(data)
        return await asyncio.wait_for(self.replies.get(), 10)


async def echo_machines(names: list[str]) -> tuple[list[Member], list[asyncio.BaseTransport]]:
    loop = asyncio.get_running_loop()
    members, transports = [], []
    for name in names:
        transport, _ = await loop.create_datagram_endpoint(
            lambda name=name: Echo(name), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        members.append(Member(name, "app", "started", "127.0.0.1", {INTERNAL: port}))
        transports.append(transport)
    return members, transports


async def client_of(port: int) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    return client


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def balancer_over(fleet: StaticFleet) -> Balancer:
    service = ServiceSpec(
        protocol="udp",
        internal_port=INTERNAL,
        ports=[Port(port=INTERNAL)],
        concurrency=Concurrency(),
        source="services[0]",
    )
    balancer = Balancer(fleet, ["app"], service, draining=set(), limits=Limits())
    fleet.subscribe(balancer.changed)  # as `Edge` does
    return balancer


def test_two_clients_get_their_own_replies() -> None:
    async def main() -> None:
        members, machines = await echo_machines(["m1", "m2"])
        fleet = StaticFleet("udpapp", members)
        balancer = balancer_over(fleet)
        forwarder = UdpForwarder()
        close, port = await forwarder.bind("127.0.0.1", 0, balancer, exact=False)
        try:
            one, two = await client_of(port), await client_of(port)
            first = await one.ask(b"from-one")
            second = await two.ask(b"from-two")
            assert first.endswith(b":from-one") and second.endswith(b":from-two")
            # least-loaded: each client got a machine of its own, and keeps it
            assert {first.split(b":")[0], second.split(b":")[0]} == {b"m1", b"m2"}
            for i in range(5):
                assert await one.ask(b"%d" % i) == first.split(b":")[0] + b":%d" % i
            assert one.replies.empty() and two.replies.empty()
            assert balancer.load == {"m1": 1, "m2": 1}
            for c in (one, two):
                c.transport.close()
        finally:
            close()
            for t in machines:
                t.close()
        assert balancer.load == {}

    run(main)


def test_idle_mappings_expire_and_stopped_machines_are_left() -> None:
    async def main() -> None:
        members, machines = await echo_machines(["m1", "m2"])
        fleet = StaticFleet("udpapp", members)
        balancer = balancer_over(fleet)
        forwarder = UdpForwarder(idle_s=60)
        close, port = await forwarder.bind("127.0.0.1", 0, balancer, exact=False)
        site = forwarder.ports[0]
        try:
            client = await client_of(port)
            machine = (await client.ask(b"hi")).split(b":")[0].decode()
            loop = asyncio.get_running_loop()
            site.sweep(loop.time() + 30)
            assert len(site.clients) == 1
            site.sweep(loop.time() + 61)  # a minute without a datagram
            assert site.clients == {} and balancer.load == {}

            assert (await client.ask(b"again")).endswith(b":again")
            (mapped,) = site.clients.values()
            machine = mapped.machine
            other = "m2" if machine == "m1" else "m1"
            fleet.set_state(machine, "stopped")
            assert await client.ask(b"moved") == other.encode() + b":moved"
            assert balancer.load == {other: 1}
            client.transport.close()
        finally:
            close()
            for t in machines:
                t.close()

    run(main)


def test_the_edge_serves_udp_services_from_fly_toml(tmp_path: Path) -> None:
    specs = plan(
        tmp_path,
        f"""
app = "udpapp"
[processes]
app = "sleep 1"
[[services]]
protocol = "udp"
internal_port = {INTERNAL}
processes = ["app"]
  [[services.ports]]
  port = {INTERNAL}
""",
    )

    async def main() -> None:
        members, machines = await echo_machines(["m1"])
        edge = Edge(StaticFleet("udpapp", members), specs, udp=UdpForwarder(), exact_ports=False)
        await edge.start()
        try:
            (binding,) = edge.bindings()
            assert binding["protocol"] == "udp" and binding["port"] == INTERNAL
            client = await client_of(int(binding["address"].rsplit(":", 1)[1]))
            assert await client.ask(b"ping") == b"m1:ping"
            assert edge.load("m1") == 1
            client.transport.close()
        finally:
            await edge.close()
            for t in machines:
                t.close()

    run(main)
