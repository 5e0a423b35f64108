"""PROXY protocol headers: v1 text and v2 binary, encoded and parsed back."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from edge_support import plan

from taxiway.edge.fleet import Member, StaticFleet
from taxiway.edge.proxy_protocol import V2_SIGNATURE, ProxyInfo, encode, parse
from taxiway.edge.server import Edge

V4 = (("203.0.113.7", 51234), ("127.0.0.1", 443))
V6 = (("2001:db8::1", 40000, 0, 0), ("::1", 8443, 0, 0))


def test_v1_ipv4_round_trip() -> None:
    header = encode("v1", *V4)
    assert header == b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\n"
    info, rest = parse(header + b"GET / HTTP/1.1\r\n")
    assert info == ProxyInfo(1, "TCP4", ("203.0.113.7", 51234), ("127.0.0.1", 443))
    assert rest == b"GET / HTTP/1.1\r\n"


def test_v1_ipv6_round_trip() -> None:
    header = encode("v1", *V6)
    assert header == b"PROXY TCP6 2001:db8::1 ::1 40000 8443\r\n"
    info, rest = parse(header)
    assert info == ProxyInfo(1, "TCP6", ("2001:db8::1", 40000), ("::1", 8443))
    assert rest == b""


def test_v1_unknown_when_families_differ() -> None:
    assert encode("v1", V4[0], V6[1]) == b"PROXY UNKNOWN\r\n"
    assert encode("v1", None, V4[1]) == b"PROXY UNKNOWN\r\n"
    assert parse(b"PROXY UNKNOWN\r\nx") == (ProxyInfo(1, "UNKNOWN", None, None), b"x")
    # an IPv4-mapped IPv6 peer (dual-stack listener) is IPv4
    mapped = encode("v1", ("::ffff:10.0.0.1", 5000, 0, 0), ("127.0.0.1", 80))
    assert mapped == b"PROXY TCP4 10.0.0.1 127.0.0.1 5000 80\r\n"


def test_v2_ipv4_bytes_and_round_trip() -> None:
    header = encode("v2", *V4)
    assert header[:12] == b"\r\n\r\n\x00\r\nQUIT\n" == V2_SIGNATURE
    assert header[12] == 0x21  # version 2, PROXY
    assert header[13] == 0x11  # AF_INET, STREAM
    assert struct.unpack("!H", header[14:16])[0] == 12 == len(header) - 16
    assert header[16:20] == bytes([203, 0, 113, 7])
    info, rest = parse(header + b"hello")
    assert info == ProxyInfo(2, "TCP4", ("203.0.113.7", 51234), ("127.0.0.1", 443))
    assert rest == b"hello"


def test_v2_ipv6_round_trip() -> None:
    header = encode("v2", *V6)
    assert header[13] == 0x21  # AF_INET6, STREAM
    assert struct.unpack("!H", header[14:16])[0] == 36 == len(header) - 16
    info, rest = parse(header)
    assert info == ProxyInfo(2, "TCP6", ("2001:db8::1", 40000), ("::1", 8443))
    assert rest == b""


def test_v2_unspec_and_tlvs() -> None:
    header = encode("v2", V4[0], V6[1])
    assert header == V2_SIGNATURE + b"\x21\x00\x00\x00"
    assert parse(header) == (ProxyInfo(2, "UNKNOWN", None, None), b"")
    with_tlv = bytearray(encode("v2", *V4))
    with_tlv[14:16] = struct.pack("!H", 12 + 4)
    info, rest = parse(bytes(with_tlv) + b"\x04\x00\x01Zdata")  # a NOOP TLV, then data
    assert info is not None and info.source == ("203.0.113.7", 51234)
    assert rest == b"data"


def test_partial_and_bad_headers() -> None:
    full = encode("v2", *V6)
    for cut in (0, 5, 15, 30):
        assert parse(full[:cut]) == (None, full[:cut])
    assert parse(b"PROXY TCP4 1.2.3.4")[0] is None
    for bad in (b"GET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4 nope 1 2\r\n", b"PROXY " + b"x" * 120):
        with pytest.raises(ValueError):
            parse(bad)
    with pytest.raises(ValueError):
        encode("v3", *V4)


TOML = """
app = "pp"
[processes]
app = "sleep 1"
[[services]]
protocol = "tcp"
internal_port = 7000
processes = ["app"]
  [[services.ports]]
  port = 7001
  handlers = ["proxy_proto"]
  [[services.ports]]
  port = 7002
  handlers = ["proxy_proto"]
  proxy_proto_options = { version = "v2" }
"""


def test_the_edge_sends_the_header_before_the_clients_bytes(tmp_path: Path) -> None:
    """No encoder given: the edge uses this module's, v1 or v2 as the port asks."""
    specs = plan(tmp_path, TOML)

    async def main() -> None:
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def machine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = b""
            while not data.endswith(b"hello"):
                chunk = await reader.read(4096)
                if not chunk:
                    break
                data += chunk
            received.put_nowait(data)
            writer.close()

        backend = await asyncio.start_server(machine, "127.0.0.1", 0)
        port = backend.sockets[0].getsockname()[1]
        fleet = StaticFleet("pp", [Member("m1", "app", "started", "127.0.0.1", {7000: port})])
        edge = Edge(fleet, specs, exact_ports=False)
        await edge.start()
        try:
            for binding in edge.bindings():
                version = {7001: 1, 7002: 2}[binding["port"]]
                real = int(binding["address"].rsplit(":", 1)[1])
                _, writer = await asyncio.open_connection("127.0.0.1", real)
                writer.write(b"hello")
                await writer.drain()
                info, rest = parse(await asyncio.wait_for(received.get(), 10))
                assert rest == b"hello"
                assert info == ProxyInfo(
                    version,
                    "TCP4",
                    writer.get_extra_info("sockname")[:2],
                    ("127.0.0.1", real),
                )
                writer.close()
        finally:
            await edge.close()
            backend.close()

    asyncio.run(asyncio.wait_for(main(), 30))
