"""The private network's DNS server: `.internal` and `.flycast` from the registry, every
other name forwarded to the host's resolvers, over UDP and TCP.

On the platform a machine's resolver is ``fdaa::3``
(https://fly.io/docs/networking/private-networking/). Here each daemon runs one of these
servers as a child process, so a query flood costs the daemon's event loop (the edge's)
nothing; every server binds its addresses with SO_REUSEPORT, so the daemons of a host
share ``[fdaa::3]:53``, and each reads the same registry, so whichever the kernel picks
answers alike.

Run as ``python -m taxiway.private_net.dns_server --listen HOST:PORT ...`` (IPv6 hosts in
brackets); it prints ``listening <udp|tcp> <host> <port>`` per bound socket, then serves
until SIGTERM, or until its parent is gone when started by `start_dns` (it watches the
pipe on its stdin, whose other end only the parent holds, and its parent pid:
PR_SET_PDEATHSIG would fire when the *thread* that started it ends, which is too early
for a daemon that starts it from a worker thread).

Bounded under hostile clients: a token bucket per source address (queries beyond it are
dropped), a budget of UDP datagrams read per second (past it the kernel drops them, so a
flood costs this process a bounded share of a CPU), a cap on forwards in flight (beyond
it: SERVFAIL), a cap on TCP connections with an idle timeout, malformed packets dropped.
Replies to repeated questions come from a cache; forwards and NXDOMAIN are decided
without a full parse. This module imports no DNS library at import time: the parent
only needs `start_dns`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    import asyncio

    from dnslib import DNSRecord

    from taxiway.private_net.dns_answers import Zone
    from taxiway.private_net.registry import RegistryView

RESOLV_CONF = Path("/etc/resolv.conf")
#: systemd-resolved's list of the real upstream servers, behind its 127.0.0.53 stub.
UPSTREAM_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
RESOLVED_STUB = "127.0.0.53"

FORWARD_TIMEOUT = 2.0
MAX_PENDING_FORWARDS = 256
#: Per source address: a sustained rate and a burst, in queries.
RATE_PER_SOURCE = 2000.0
BURST_PER_SOURCE = 2000.0
#: Source addresses tracked at once (spoofed floods can't grow the table past this).
MAX_SOURCES = 4096
MAX_TCP_CONNECTIONS = 128
TCP_IDLE_SECONDS = 10.0
#: A TCP client that doesn't read its replies is cut off past this many unsent bytes.
TCP_WRITE_LIMIT = 256 * 1024
#: A UDP reply without EDNS fits 512 bytes (RFC 1035); with EDNS, what the client offers
#: up to this (the DNS flag day 2020 size, safe from fragmentation).
UDP_PLAIN_LIMIT = 512
UDP_EDNS_LIMIT = 1232
MAX_CACHED_REPLIES = 4096
#: Datagrams read per second over all UDP sockets, at most (see `UdpReadBudget`): far
#: above what a host's machines ask, far below what a flood sends.
UDP_READ_BUDGET = 20_000
UDP_READ_WINDOW = 0.1
UDP_BATCH = 64
#: The server's CPU priority below the daemon's: a flood of queries must not take the
#: CPU the edge needs (`benchmarks/dns_flood.py` measures it).
DEFAULT_NICE = 10
START_TIMEOUT = 10.0
#: How long a bind waits for an address still being set up (IPv6 duplicate address
#: detection keeps a new address "tentative" for about a second).
BIND_RETRY_SECONDS = 3.0

Address = tuple[str, int]


# -- addresses ----------------------------------------------------------------------------


def format_address(host: str, port: int) -> str:
    """``host:port``, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (``[IPv6]:PORT``) as (host, port); ValueError names the problem."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        raise ValueError(f"{text!r} does not start with an IP address") from None
    return host, int(port)


def _normal(host: str) -> str:
    try:
        return ipaddress.ip_address(host.split("%")[0]).compressed
    except ValueError:
        return host


def nameservers(path: Path) -> list[str]:
    """The ``nameserver`` addresses a resolv.conf lists (none when it can't be read)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 1 and fields[0] == "nameserver":
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(fields[1].split("%")[0])
                found.append(fields[1])
    return found


def host_resolvers(
    resolv_conf: Path = RESOLV_CONF, upstream_conf: Path = UPSTREAM_RESOLV_CONF
) -> list[Address]:
    """The host's resolvers; systemd-resolved's upstream servers when the host's file
    names only its stub."""
    servers = nameservers(resolv_conf)
    if servers and all(server == RESOLVED_STUB for server in servers):
        servers = nameservers(upstream_conf) or servers
    return [(server, 53) for server in servers]


# -- the server (child process) -----------------------------------------------------------


class SourceRateLimit:
    """A token bucket per source address: a flood from one address is dropped without
    starving anyone else. The table is bounded: past `max_sources`, idle buckets go."""

    def __init__(
        self,
        rate: float = RATE_PER_SOURCE,
        burst: float = BURST_PER_SOURCE,
        max_sources: int = MAX_SOURCES,
    ):
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: dict[str, list[float]] = {}

    def allow(self, source: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._prune(now)
            self._buckets[source] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate
        for source in [s for s, (_, last) in self._buckets.items() if now - last >= full]:
            del self._buckets[source]
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()  # a spoofed flood: forget everyone rather than grow


class _Pending:
    __slots__ = ("client_id", "failure", "send", "timer", "upstream")

    def __init__(
        self,
        client_id: int,
        failure: bytes,
        send: Callable[[bytes], None],
        upstream: Address,
        timer: asyncio.TimerHandle,
    ):
        self.client_id = client_id
        self.failure = failure
        self.send = send
        self.upstream = upstream
        self.timer = timer


class Forwarder:
    """Relays queries for other names to the host's resolvers: a UDP client's over UDP,
    each under a fresh random id (the client's is put back on the reply); a TCP client's
    over TCP (it came by TCP for an answer UDP can't carry). SERVFAIL after `timeout`.
    When the preferred resolver times out, the next one becomes preferred."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstreams: list[Address],
        timeout: float = FORWARD_TIMEOUT,
        max_pending: int = MAX_PENDING_FORWARDS,
    ):
        self.loop = loop
        self.upstreams = [(_normal(host), port) for host, port in upstreams]
        self.timeout = timeout
        self.max_pending = max_pending
        self.pending: dict[int, _Pending] = {}
        self.streams = 0  # TCP forwards in flight
        self._preferred = 0
        self._transports: dict[int, Any] = {}
        self._tasks: set[Any] = set()
        import secrets  # here: the daemon, which imports this module, never forwards

        self._random_id = secrets.randbelow

    async def start(self) -> None:
        import asyncio

        forwarder = self

        class Upstream(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                forwarder.received(data, addr)

            def error_received(self, exc: Exception) -> None:
                pass  # an ICMP error from a resolver: its queries time out as SERVFAIL

        for family in {_family(host) for host, _ in self.upstreams}:
            bind = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
            try:
                transport, _ = await self.loop.create_datagram_endpoint(
                    Upstream, local_addr=bind, family=family
                )
            except OSError:
                continue  # no IPv6 (or IPv4) here: those resolvers' names get SERVFAIL
            self._transports[family] = transport

    def forward(
        self, data: bytes, failure: bytes, send: Callable[[bytes], None], udp: bool = True
    ) -> bool:
        """Send ``data`` on; False when it can't be (no resolver, too many in flight).
        ``failure``: the SERVFAIL to send the client if the resolver doesn't answer."""
        if not self.upstreams or len(self.pending) + self.streams >= self.max_pending:
            return False
        upstream = self.upstreams[self._preferred % len(self.upstreams)]
        if not udp:
            self.streams += 1
            task = self.loop.create_task(self._over_tcp(data, failure, send, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        transport = self._transports.get(_family(upstream[0]))
        if transport is None:
            return False
        query_id = self._random_id(65536)
        while query_id in self.pending:
            query_id = self._random_id(65536)
        timer = self.loop.call_later(self.timeout, self._expire, query_id)
        self.pending[query_id] = _Pending(
            int.from_bytes(data[:2], "big"), failure, send, upstream, timer
        )
        transport.sendto(query_id.to_bytes(2, "big") + data[2:], upstream)
        return True

    async def _over_tcp(
        self, data: bytes, failure: bytes, send: Callable[[bytes], None], upstream: Address
    ) -> None:
        import asyncio

        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(*upstream)
                writer.write(len(data).to_bytes(2, "big") + data)
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = await reader.readexactly(size)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            reply = failure
        finally:
            self.streams -= 1
            if writer is not None:
                writer.close()
        send(reply)  # sent verbatim: it carries the client's own id

    def received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        query_id = int.from_bytes(data[:2], "big")
        pending = self.pending.get(query_id)
        # Only the resolver asked may answer: anyone else's packet with a guessed id is
        # dropped.
        if pending is None or (_normal(addr[0]), addr[1]) != pending.upstream:
            return
        del self.pending[query_id]
        pending.timer.cancel()
        pending.send(pending.client_id.to_bytes(2, "big") + data[2:])

    def _expire(self, query_id: int) -> None:
        pending = self.pending.pop(query_id, None)
        if pending is None:
            return
        if pending.upstream == self.upstreams[self._preferred % len(self.upstreams)]:
            self._preferred += 1
        pending.send(pending.failure)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pending in self.pending.values():
            pending.timer.cancel()
        self.pending.clear()
        for transport in self._transports.values():
            transport.close()


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _failure(request: DNSRecord) -> bytes:
    from dnslib import RCODE

    reply = request.reply(ra=1, aa=0)
    reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


class DnsService:
    """One query in, at most one reply out, whatever the transport: the rate limit, the
    parse, our answer or a forward."""

    def __init__(
        self, registry: RegistryView, forwarder: Forwarder, limit: SourceRateLimit | None = None
    ):
        from dnslib import DNSRecord

        from taxiway.private_net import dns_answers

        self._parse = DNSRecord.parse
        self._answers = dns_answers
        self.registry = registry
        self.forwarder = forwarder
        self.limit = limit or SourceRateLimit()
        self._zone_entries: object = None
        self._zone: Zone | None = None
        # Packed replies by query (less its id) and transport, valid for one zone: a
        # repeated question, the shape of a flood, costs a dict lookup instead of a parse.
        self._replies: dict[tuple[bytes, bool], bytes] = {}
        self._replies_zone: Zone | None = None
        self.dropped = 0

    def zone(self) -> Zone:
        """The registry's apps, indexed again only when `RegistryView` saw a change."""
        entries = self.registry.entries()
        if entries is not self._zone_entries or self._zone is None:
            self._zone = self._answers.Zone(entries)
            self._zone_entries = entries
        return self._zone

    def handle(self, data: bytes, source: str, send: Callable[[bytes], None], udp: bool) -> None:
        if not self.limit.allow(source) or len(data) < 12:
            self.dropped += 1
            return
        zone = self.zone()
        if zone is not self._replies_zone:
            self._replies.clear()
            self._replies_zone = zone
        key = (bytes(data[2:]), udp)
        known = self._replies.get(key)
        if known is not None:
            send(data[:2] + known)
            return
        question = read_question(data)
        if question is not None and self._routed(data, question, zone, source, send, udp):
            return
        try:
            request = self._parse(data)
        except Exception:
            self.dropped += 1  # malformed: nothing sensible to say, and no traceback
            return
        if request.header.qr:
            self.dropped += 1  # a reply sent to us: answering it could start a loop
            return
        try:
            reply = self._answers.respond(request, zone, source)
        except Exception:
            send(_failure(request))
            return
        if reply is None:
            failure = _failure(request)
            if not self.forwarder.forward(data, failure, send, udp):
                send(failure)
            return
        packed = self._packed(request, reply, udp)
        if _same_for_everyone(request):
            if len(self._replies) >= MAX_CACHED_REPLIES:
                self._replies.clear()
            self._replies[key] = packed[2:]
        send(packed)

    def _routed(
        self,
        data: bytes,
        question: Question,
        zone: Zone,
        source: str,
        send: Callable[[bytes], None],
        udp: bool,
    ) -> bool:
        """The two answers that need no records, without dnslib: a name that isn't ours
        is forwarded, one of ours that names nothing is NXDOMAIN (a flood of made-up
        names is this path). False: the full path decides."""
        labels, end, edns = question
        try:
            name = b".".join(labels).decode("ascii")
        except UnicodeDecodeError:
            return False
        found = zone.lookup(name, source)
        if found is None:
            failure = bare_reply(data, end, RCODE_SERVFAIL, authoritative=False, edns=False)
            if not self.forwarder.forward(data, failure, send, udp):
                send(failure)
            return True
        if not found.exists:
            send(bare_reply(data, end, RCODE_NXDOMAIN, authoritative=True, edns=edns))
            return True
        return False

    def _packed(self, request: DNSRecord, reply: DNSRecord, udp: bool) -> bytes:
        from dnslib import EDNS0, QTYPE

        offered = next((rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        if offered is not None:
            reply.add_ar(EDNS0(udp_len=UDP_EDNS_LIMIT))
        packed = reply.pack()
        if udp:
            room = (
                UDP_PLAIN_LIMIT
                if offered is None
                else max(UDP_PLAIN_LIMIT, min(int(offered), UDP_EDNS_LIMIT))
            )
            if len(packed) > room:
                return _truncated(request, reply)
        return packed


#: (the question's labels, the offset just past the question, whether an EDNS OPT follows)
Question = tuple[list[bytes], int, bool]
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
_QR, _AA, _RA, _OPCODE = 0x8000, 0x0400, 0x0080, 0x7800
_OPT = 41


def read_question(data: bytes) -> Question | None:
    """The question of a plain query (one question, nothing else but an EDNS OPT), read
    without dnslib; None for anything else (dnslib parses that: compressed names,
    answers in a query, other opcodes, replies, junk)."""
    size = len(data)
    if size < 17:
        return None
    flags, questions, answers, authority, additional = struct.unpack_from("!HHHHH", data, 2)
    if flags & (_QR | _OPCODE) or questions != 1 or answers or authority or additional > 1:
        return None
    labels = []
    offset = 12
    while True:
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length >= size:
            return None  # a compression pointer (or junk): dnslib's to read
        labels.append(data[offset : offset + length])
        offset += length
    end = offset + 4
    if end > size:
        return None
    if not additional:
        return (labels, end, False) if end == size else None
    # The OPT record: the root name, type 41, then class, TTL, and data of its length.
    if end + 11 > size or data[end] != 0 or struct.unpack_from("!H", data, end + 1)[0] != _OPT:
        return None
    return labels, end, True


def bare_reply(data: bytes, end: int, rcode: int, authoritative: bool, edns: bool) -> bytes:
    """A reply to the query ``data`` (question ending at ``end``) with no records: its id,
    its flags with QR and RA (and AA) set, ``rcode``, its question, and (``edns``) an OPT
    offering `UDP_EDNS_LIMIT` bytes, as `dns_answers.respond` and `_packed` would say."""
    flags = (int.from_bytes(data[2:4], "big") | _QR | _RA) & ~0x000F | rcode
    if authoritative:
        flags |= _AA
    else:
        flags &= ~_AA
    header = data[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 1 if edns else 0)
    opt = b"\x00" + struct.pack("!HHIH", _OPT, UDP_EDNS_LIMIT, 0, 0) if edns else b""
    return header + data[12:end] + opt


def _truncated(request: DNSRecord, reply: DNSRecord) -> bytes:
    """TC set, no records: the client asks again over TCP. The question stays (dnslib's
    own truncate() drops it): glibc's resolver ignores a reply whose question count
    differs from its query's."""
    from dnslib import DNSHeader, DNSRecord

    header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1)
    return DNSRecord(header, q=request.q).pack()


def _same_for_everyone(request: DNSRecord) -> bool:
    """Whether the reply depends on the query alone: ``_api.internal``'s depends on who
    asks."""
    labels = request.q.qname.label
    return not (labels and labels[0].lower() == b"_api")


class UdpReadBudget:
    """How many datagrams all UDP sockets may take in per second. Past it the server
    stops reading until the next tenth of a second, and the kernel drops what arrives
    meanwhile at no cost to anyone: however hard it is flooded, the server's CPU stays
    bounded (each datagram read costs a little, even one the rate limit then drops)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_second: float = UDP_READ_BUDGET):
        self.loop = loop
        self.per_window = max(1, int(per_second * UDP_READ_WINDOW))
        self.window_end = 0.0
        self.used = 0
        self.paused: list[UdpReader] = []

    def take(self, count: int) -> bool:
        """Count ``count`` datagrams read; False when the window's budget is spent."""
        now = self.loop.time()
        if now >= self.window_end:
            self.window_end = now + UDP_READ_WINDOW
            self.used = 0
        self.used += count
        return self.used < self.per_window

    def pause(self, reader: UdpReader) -> None:
        if not self.paused:
            self.loop.call_at(self.window_end, self._resume)
        self.paused.append(reader)

    def _resume(self) -> None:
        paused, self.paused = self.paused, []
        for reader in paused:
            reader.resume()


class UdpReader:
    """One UDP socket, read by hand (asyncio's datagram transports can't pause): up to
    `UDP_BATCH` datagrams a wake-up, under the shared `UdpReadBudget`."""

    def __init__(
        self,
        sock: socket.socket,
        service: DnsService,
        budget: UdpReadBudget,
        loop: asyncio.AbstractEventLoop,
    ):
        self.sock = sock
        self.service = service
        self.budget = budget
        self.loop = loop
        self.closed = False
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        receive = self.sock.recvfrom
        handle = self.service.handle
        read = 0
        while read < UDP_BATCH:
            try:
                data, addr = receive(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                read += 1  # an ICMP error queued on the socket: a client gone
                continue
            read += 1
            handle(data, addr[0], self._sender(addr), True)
        if not self.budget.take(read) and not self.closed:
            self.loop.remove_reader(self.sock.fileno())
            self.budget.pause(self)

    def _sender(self, addr: Any) -> Callable[[bytes], None]:
        def send(reply: bytes) -> None:
            if self.closed:
                return
            # Full send buffer: the reply is lost, as UDP may lose it anyway.
            with contextlib.suppress(OSError):
                self.sock.sendto(reply, addr)

        return send

    def resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def _tcp_protocol(
    service: DnsService, loop: asyncio.AbstractEventLoop, idle_seconds: float = TCP_IDLE_SECONDS
) -> Any:
    import asyncio

    state = {"open": 0}

    class TcpConnection(asyncio.Protocol):
        """Length-prefixed messages (RFC 7766), pipelined; closed when idle."""

        transport: Any = None
        counted = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            if state["open"] >= MAX_TCP_CONNECTIONS:
                transport.abort()
                return
            state["open"] += 1
            self.counted = True
            peer = transport.get_extra_info("peername")
            self.source = peer[0] if peer else "?"
            self.buffer = bytearray()
            self.last_active = loop.time()
            self.timer = loop.call_later(idle_seconds, self._check_idle)

        def _check_idle(self) -> None:
            idle_for = loop.time() - self.last_active
            if idle_for >= idle_seconds:
                self.transport.close()
            else:
                self.timer = loop.call_later(idle_seconds - idle_for, self._check_idle)

        def data_received(self, data: bytes) -> None:
            self.last_active = loop.time()
            self.buffer += data
            while len(self.buffer) >= 2:
                size = int.from_bytes(self.buffer[:2], "big")
                if len(self.buffer) < 2 + size:
                    break
                message = bytes(self.buffer[2 : 2 + size])
                del self.buffer[: 2 + size]
                service.handle(message, self.source, self._send, False)
                if self.transport.is_closing():
                    return

        def _send(self, reply: bytes) -> None:
            transport = self.transport
            if transport.is_closing():
                return
            if transport.get_write_buffer_size() > TCP_WRITE_LIMIT:
                transport.abort()  # it asks and never reads
                return
            transport.write(len(reply).to_bytes(2, "big") + reply)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.counted:
                state["open"] -= 1
                self.counted = False
                self.timer.cancel()

    return TcpConnection


class BindError(Exception):
    """An address that can't be listened on; the message is the user's sentence."""


def bind_sockets(listen: list[Address]) -> list[tuple[str, socket.socket]]:
    """("udp"|"tcp", socket) for each address: UDP and TCP on the same port (a port 0
    picks one free for both). SO_REUSEPORT on each, so other daemons' servers can bind
    the same address."""
    bound: list[tuple[str, socket.socket]] = []
    try:
        for host, port in listen:
            bound.extend(_bind_pair(host, port))
    except BaseException:
        for _, sock in bound:
            sock.close()
        raise
    return bound


def _bind_pair(host: str, port: int) -> list[tuple[str, socket.socket]]:
    attempts = 20 if port == 0 else 1
    for attempt in range(attempts):
        udp = _bound(host, port, socket.SOCK_DGRAM)
        try:
            tcp = _bound(host, udp.getsockname()[1], socket.SOCK_STREAM)
        except BindError:
            udp.close()
            if attempt + 1 < attempts:
                continue
            raise
        tcp.listen(128)
        return [("udp", udp), ("tcp", tcp)]
    raise AssertionError("unreachable")


def _bound(host: str, port: int, kind: int) -> socket.socket:
    family = _family(host)
    deadline = time.monotonic() + BIND_RETRY_SECONDS
    while True:
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno == _EADDRNOTAVAIL and time.monotonic() < deadline:
                time.sleep(0.1)  # a new IPv6 address is tentative for a moment
                continue
            reason = (exc.strerror or str(exc)).lower()
            raise BindError(
                f"cannot listen for DNS on {format_address(host, port)}: {reason}"
            ) from None


_EADDRNOTAVAIL = 99 if sys.platform.startswith("linux") else -1


async def _serve(
    listen: list[Address],
    registry_dir: Path,
    upstreams: list[Address],
    watch_stdin: bool,
    parent: int | None,
    tcp_idle: float = TCP_IDLE_SECONDS,
) -> int:
    import asyncio

    from taxiway.private_net.registry import RegistryView

    loop = asyncio.get_running_loop()
    try:
        sockets = bind_sockets(listen)
    except BindError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    own = {(_normal(sock.getsockname()[0]), sock.getsockname()[1]) for _, sock in sockets}
    # Never forward to ourselves (the host's resolv.conf may name this very server).
    upstreams = [u for u in upstreams if (_normal(u[0]), u[1]) not in own]
    forwarder = Forwarder(loop, upstreams)
    await forwarder.start()
    service = DnsService(RegistryView(registry_dir), forwarder)
    budget = UdpReadBudget(loop)
    tcp_factory = _tcp_protocol(service, loop, tcp_idle)
    closers: list[Any] = []
    for kind, sock in sockets:
        if kind == "udp":
            closers.append(UdpReader(sock, service, budget, loop))
        else:
            closers.append(await loop.create_server(tcp_factory, sock=sock))
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    if watch_stdin:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (Ctrl-C hits it)
        loop.add_reader(0, _on_stdin, stopped)
    else:
        loop.add_signal_handler(signal.SIGINT, stopped.set)
    # Only now: a parent that stops us as soon as we are ready must find SIGTERM handled.
    for kind, sock in sockets:
        host, port = sock.getsockname()[:2]
        print(f"listening {kind} {host} {port}", flush=True)
    _quiet_output()
    watcher = asyncio.ensure_future(_watch_parent(parent, stopped)) if parent else None
    await stopped.wait()
    if watcher is not None:
        watcher.cancel()
    for closer in closers:
        closer.close()
    forwarder.close()
    return 0


def _on_stdin(stopped: asyncio.Event) -> None:
    try:
        data = os.read(0, 4096)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        stopped.set()  # EOF: the parent closed its end or is gone


async def _watch_parent(parent: int, stopped: asyncio.Event) -> None:
    import asyncio

    while not stopped.is_set():
        if os.getppid() != parent:
            stopped.set()
            return
        await asyncio.sleep(1.0)


def _quiet_output() -> None:
    """Nothing is written after the ``listening`` lines: the parent stops reading, and a
    write to a closed pipe must not end the server."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m taxiway.private_net.dns_server",
        description="The private network's DNS server (.internal, .flycast, forwarding).",
    )
    parser.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="an address to serve on, UDP and TCP ([IPv6]:PORT); repeatable",
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a resolver for other names (default: the host's resolv.conf)",
    )
    parser.add_argument("--registry-dir", type=Path, help="the registry of apps to answer from")
    parser.add_argument("--parent", type=int, help="exit when this process is no longer the parent")
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit at end of file on stdin (the parent's pipe)",
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="lower this process's priority by this much"
    )
    parser.add_argument(
        "--tcp-idle",
        type=float,
        default=TCP_IDLE_SECONDS,
        help="close a TCP connection idle this long (seconds)",
    )
    args = parser.parse_args(argv)
    try:
        listen = [parse_address(text) for text in args.listen]
        upstreams = [parse_address(text) for text in args.upstream] or host_resolvers()
    except ValueError as exc:
        print(f"dns_server: {exc}", file=sys.stderr)
        return 2
    if args.parent and os.getppid() != args.parent:
        return 0  # the parent died before we got here
    if args.nice:
        with contextlib.suppress(OSError):
            os.nice(args.nice)
    if args.registry_dir is not None:
        registry_dir = args.registry_dir
    else:
        from taxiway.private_net.registry import registry_dir as default_dir

        try:
            registry_dir = default_dir()
        except TaxiwayError as exc:
            print(exc, file=sys.stderr)
            return 2
    coroutine = _serve(
        listen, registry_dir, upstreams, args.watch_stdin, args.parent, args.tcp_idle
    )
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- the daemon's side --------------------------------------------------------------------


class DnsProcess:
    """A running DNS server child. ``addresses``: its bound UDP (host, port) in the order
    asked; ``tcp_addresses`` likewise."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        addresses: list[Address],
        tcp_addresses: list[Address],
    ):
        self.process = process
        self.addresses = addresses
        self.tcp_addresses = tcp_addresses

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        """End the server (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        process = self.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> DnsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_dns(
    listen: list[Address],
    registry_dir: Path | None = None,
    *,
    upstreams: list[Address] | None = None,
    nice: int = DEFAULT_NICE,
    timeout: float = START_TIMEOUT,
) -> DnsProcess:
    """Start the DNS server as a child process and wait until it listens on every address
    of ``listen`` (port 0: a free one, see `DnsProcess.addresses`). ``upstreams``: the
    resolvers for other names (default: the host's); ``nice``: how much lower than the
    daemon's its CPU priority is (under a flood, the kernel serves the edge first).
    Blocks (~0.1-0.2 s: a Python start-up); TaxiwayError with one sentence when it can't
    listen. The server ends with `DnsProcess.stop` or when this process ends, however."""
    from taxiway.private_net.registry import registry_dir as default_dir

    if not listen:
        raise ValueError("start_dns needs at least one address to listen on")
    folder = registry_dir or default_dir()
    argv = [
        sys.executable,
        "-m",
        "taxiway.private_net.dns_server",
        "--watch-stdin",
        "--parent",
        str(os.getpid()),
        "--registry-dir",
        str(folder),
    ]
    for host, port in listen:
        argv += ["--listen", format_address(host, port)]
    for host, port in upstreams or ():
        argv += ["--upstream", format_address(host, port)]
    if nice:
        argv += ["--nice", str(nice)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        lines = _ready_lines(process, 2 * len(listen), timeout)
    except BaseException:
        DnsProcess(process, [], []).stop()
        raise
    finally:
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    bound: dict[str, list[Address]] = {"udp": [], "tcp": []}
    for line in lines:
        _, kind, host, port = line.split()
        bound[kind].append((host, int(port)))
    return DnsProcess(process, bound["udp"], bound["tcp"])


def _ready_lines(process: subprocess.Popen[bytes], count: int, timeout: float) -> list[str]:
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(lines) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TaxiwayError(f"the DNS server did not start within {timeout:g} s")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                process.wait()
                said = process.stderr.read().decode(errors="replace").strip().splitlines()
                raise TaxiwayError(
                    said[-1]
                    if said
                    else f"the DNS server exited with status {process.returncode} before listening"
                )
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines += [c.decode() for c in complete if c.startswith(b"listening ")]
    return lines


if __name__ == "__main__":
    sys.exit(main())
