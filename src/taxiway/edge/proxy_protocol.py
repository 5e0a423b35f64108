"""HAProxy's PROXY protocol (v1 text, v2 binary): the ``proxy_proto`` handler's header.

The platform's proxy puts it in front of the relayed bytes so the app learns the client's
address (v1 by default, ``proxy_proto_options.version = "v2"`` for binary). `encode`
makes the header from the socket addresses asyncio reports; `parse` reads one back, for
tests and for test servers standing in for apps.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: A v1 header is at most 107 bytes, CRLF included.
V1_MAX = 107
_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20
_FAMILY = {"TCP4": 0x11, "TCP6": 0x21, "UDP4": 0x12, "UDP6": 0x22}
_FAMILY_NAME = {v: k for k, v in _FAMILY.items()}


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """One parsed header. ``family`` is TCP4/TCP6/UDP4/UDP6, or UNKNOWN (addresses None)."""

    version: int
    family: str
    source: tuple[str, int] | None
    dest: tuple[str, int] | None


def encode(version: str, client: tuple | None, server: tuple | None, *, udp: bool = False) -> bytes:
    """The header for a connection from ``client`` to ``server`` (asyncio's peername and
    sockname). ``version`` is "v1" or "v2"; UNKNOWN when a side has no IP address or the
    two differ in family (an IPv4-mapped IPv6 address counts as IPv4)."""
    src = _ip(client)
    dst = _ip(server)
    known = src is not None and dst is not None and src[0].version == dst[0].version
    if version == "v2":
        return _encode_v2(src, dst, udp=udp) if known else _v2(0x00, b"")
    if version != "v1":
        raise ValueError(f"unknown PROXY protocol version {version!r}")
    if not known or udp:
        return b"PROXY UNKNOWN\r\n"
    assert src is not None and dst is not None
    proto = "TCP4" if src[0].version == 4 else "TCP6"
    return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode("ascii")


def _ip(addr: tuple | None) -> tuple[IPv4Address | IPv6Address, int] | None:
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    try:
        ip = ip_address(addr[0].split("%", 1)[0])  # drop an IPv6 zone
    except (ValueError, AttributeError):
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(addr[1])


def _encode_v2(
    src: tuple[IPv4Address | IPv6Address, int],
    dst: tuple[IPv4Address | IPv6Address, int],
    *,
    udp: bool,
) -> bytes:
    v4 = src[0].version == 4
    family = _FAMILY[("UDP" if udp else "TCP") + ("4" if v4 else "6")]
    body = src[0].packed + dst[0].packed + struct.pack("!HH", src[1], dst[1])
    return _v2(family, body)


def _v2(family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body


def parse(data: bytes) -> tuple[ProxyInfo | None, bytes]:
    """(header, the bytes after it), or (None, data) when more bytes are needed.

    Raises ValueError when ``data`` does not start with a valid header.
    """
    if data[: len(V2_SIGNATURE)] == V2_SIGNATURE[: len(data)] and len(data) < 16:
        return None, data
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if b"PROXY "[: len(data)] != data[:6]:
        raise ValueError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ValueError("PROXY v1 header longer than 107 bytes")
        return None, data
    return _parse_v1(data[:end].decode("ascii", "replace")), data[end + 2 :]


def _parse_v1(line: str) -> ProxyInfo:
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyInfo(1, "UNKNOWN", None, None)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ValueError(f"malformed PROXY v1 header: {line!r}")
    _, family, src, dst, sport, dport = parts
    want = 4 if family == "TCP4" else 6
    try:
        ips = (ip_address(src), ip_address(dst))
        ports = (int(sport), int(dport))
    except ValueError:
        raise ValueError(f"malformed PROXY v1 header: {line!r}") from None
    if any(ip.version != want for ip in ips) or not all(0 <= p <= 65535 for p in ports):
        raise ValueError(f"malformed PROXY v1 header: {line!r}")
    return ProxyInfo(1, family, (str(ips[0]), ports[0]), (str(ips[1]), ports[1]))


def _parse_v2(data: bytes) -> tuple[ProxyInfo | None, bytes]:
    command, family, length = struct.unpack_from("!BBH", data, 12)
    if len(data) < 16 + length:
        return None, data
    if command >> 4 != 2 or command & 0x0F not in (0x0, 0x1):
        raise ValueError("unsupported PROXY v2 version or command")
    body, rest = data[16 : 16 + length], data[16 + length :]
    name = _FAMILY_NAME.get(family)
    if command == _V2_LOCAL or name is None:
        return ProxyInfo(2, "UNKNOWN", None, None), rest
    size = 4 if name.endswith("4") else 16
    if length < 2 * size + 4:
        raise ValueError("PROXY v2 address block too short")
    af = socket.AF_INET if size == 4 else socket.AF_INET6
    src = socket.inet_ntop(af, body[:size])
    dst = socket.inet_ntop(af, body[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return ProxyInfo(2, name, (src, sport), (dst, dport)), rest  # TLVs after it are skipped
