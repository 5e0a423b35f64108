"""Ports the host won't give are mapped, and `bindings` tells where everything listens."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from edge_support import plan

from taxiway.edge.fleet import StaticFleet
from taxiway.edge.listeners import MAPPED_OFFSET, bind_tcp, candidates
from taxiway.edge.server import Edge, port_numbers
from taxiway.plan.machine import Port


def test_candidates() -> None:
    assert candidates(80, exact=True) == [80, 80 + MAPPED_OFFSET, 0]
    assert candidates(60000, exact=True) == [60000, 0]
    assert candidates(80, exact=False) == [0]


def test_port_numbers_of_ranges() -> None:
    assert port_numbers(Port(port=80)) == [80]
    assert port_numbers(Port(start_port=8080, end_port=8082)) == [8080, 8081, 8082]


def test_a_taken_port_is_mapped() -> None:
    async def main() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            server, real = await bind_tcp(asyncio.Protocol, "127.0.0.1", port)
            assert real != port
            assert real in (port + MAPPED_OFFSET, server.sockets[0].getsockname()[1])
            server.close()
        finally:
            taken.close()

    asyncio.run(main())


def test_bindings_report_the_real_addresses(tmp_path: Path) -> None:
    toml = """
app = "demo"
[[services]]
  internal_port = 8080
  [[services.ports]]
    port = {port}
    handlers = ["http"]
"""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def main() -> list[dict]:
        edge = Edge(StaticFleet("demo", []), plan(tmp_path, toml.format(port=port)))
        await edge.start()
        try:
            return edge.bindings()
        finally:
            await edge.close()

    try:
        (binding,) = asyncio.run(main())
    finally:
        taken.close()
    assert binding["port"] == port
    assert binding["mapped"] is True
    assert binding["address"] != f"127.0.0.1:{port}"
    assert binding["address"].startswith("127.0.0.1:")
    assert binding["protocol"] == "tcp" and binding["handlers"] == ["http"]
    assert binding["service"] == "services[0]"
