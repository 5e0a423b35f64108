"""The DNS server as the daemon runs it: a child process on real sockets (127.0.0.1, port
0), asked over UDP and TCP, forwarding to a fake resolver on 127.0.0.1, and left standing
by garbage, floods and greedy TCP clients."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dnslib import AAAA, EDNS0, QTYPE, RCODE, RR, A, DNSRecord

from taxiway.errors import TaxiwayError
from taxiway.private_net.dns_server import (
    host_resolvers,
    nameservers,
    parse_address,
    start_dns,
)
from taxiway.private_net.registry import AppEntry, MachineEntry, publish

WEB = MachineEntry("aaa111", "web", "local", "fdaa:0:1:a7b:0:1:0:2", "started")
ANSWER_FROM_UPSTREAM = "192.0.2.1"


def shop(*machines: MachineEntry) -> AppEntry:
    return AppEntry("shop", "/srv/shop/.taxiway", os.getpid(), "local", list(machines))


class FakeResolver(threading.Thread):
    """A resolver on 127.0.0.1 that answers every A query with 192.0.2.1 over UDP, and
    with 40 addresses (more than UDP's 512 bytes hold) over TCP on the same port (or,
    ``silent``, never answers), noting what it was asked."""

    def __init__(self, silent: bool = False):
        super().__init__(daemon=True)
        self.silent = silent
        while True:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(self.sock.getsockname())
                break
            except OSError:
                self.sock.close()
                self.tcp.close()
        self.tcp.listen(16)
        self.tcp.settimeout(0.1)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.asked: list[tuple[int, str]] = []
        self.asked_tcp: list[tuple[int, str]] = []
        self.stopping = False
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _serve_tcp(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                request = DNSRecord.parse(read_message(conn))
                self.asked_tcp.append((request.header.id, str(request.q.qname)))
                if self.silent:
                    continue
                reply = request.reply()
                for i in range(40):
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(f"192.0.2.{i}")))
                packed = reply.pack()
                conn.sendall(struct.pack("!H", len(packed)) + packed)

    def run(self) -> None:
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            request = DNSRecord.parse(data)
            self.asked.append((request.header.id, str(request.q.qname)))
            if self.silent:
                continue
            reply = request.reply()
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ANSWER_FROM_UPSTREAM), ttl=60))
            self.sock.sendto(reply.pack(), peer)

    def stop(self) -> None:
        self.stopping = True
        self.join(2)
        self.sock.close()
        self.tcp.close()


@pytest.fixture
def resolver():
    fake = FakeResolver()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def server(tmp_path, resolver):
    publish(shop(WEB), tmp_path)
    process = start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[resolver.address])
    yield process
    process.stop()


def ask_udp(
    port: int,
    name: str,
    qtype: str = "AAAA",
    *,
    source: str = "127.0.0.1",
    timeout: float = 2.0,
    edns: int | None = None,
    host: str = "127.0.0.1",
):
    query = DNSRecord.question(name, qtype)
    if edns is not None:
        query.add_ar(EDNS0(udp_len=edns))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(query.pack(), (host, port))
        reply = DNSRecord.parse(sock.recv(65535))
    assert reply.header.id == query.header.id
    return reply


def ask_tcp(port: int, name: str, qtype: str = "AAAA", timeout: float = 2.0):
    query = DNSRecord.question(name, qtype)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        packed = query.pack()
        sock.sendall(struct.pack("!H", len(packed)) + packed)
        reply = DNSRecord.parse(read_message(sock))
    assert reply.header.id == query.header.id
    return reply


def read_message(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionError("closed before a whole reply")
        data += chunk
    return data[2 : 2 + struct.unpack("!H", data[:2])[0]]


def eventually(ask, seconds: float = 10.0):
    """``ask()``'s result once it doesn't time out (a rate-limited source gets tokens
    back within a second)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except (TimeoutError, ConnectionError):
            if time.monotonic() > deadline:
                raise


def addresses(reply) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.AAAA]


def test_answers_over_udp_and_tcp_on_the_same_port(server):
    assert server.running()
    [(host, port)] = server.addresses
    assert host == "127.0.0.1" and port > 0
    assert server.tcp_addresses == [(host, port)]
    assert addresses(ask_udp(port, "shop.internal")) == [WEB.private_ip]
    assert addresses(ask_tcp(port, "shop.internal")) == [WEB.private_ip]
    txt = ask_tcp(port, "vms.shop.internal", "TXT")
    assert b"".join(txt.rr[0].rdata.data) == b"aaa111 local"


def test_a_state_change_in_the_registry_shows_within_the_ttl(server, tmp_path):
    port = server.addresses[0][1]
    assert addresses(ask_udp(port, "shop.internal")) == [WEB.private_ip]
    stopped = MachineEntry("aaa111", "web", "local", WEB.private_ip, "stopped")
    other = MachineEntry("bbb222", "web", "local", "fdaa:0:1:a7b:0:2:0:2", "started")
    publish(shop(stopped, other), tmp_path)
    deadline = time.monotonic() + 5  # the answers' TTL
    while time.monotonic() < deadline:
        if addresses(ask_udp(port, "shop.internal")) == [other.private_ip]:
            break
        time.sleep(0.05)
    assert addresses(ask_udp(port, "shop.internal")) == [other.private_ip]


def test_other_names_are_forwarded_keeping_the_clients_id(server, resolver):
    port = server.addresses[0][1]
    reply = ask_udp(port, "example.com", "A")  # ask_* check the id came back
    assert [str(rr.rdata) for rr in reply.rr] == [ANSWER_FROM_UPSTREAM]
    assert reply.header.rcode == RCODE.NOERROR
    assert [name for _, name in resolver.asked] == ["example.com."]


def test_a_tcp_clients_question_is_forwarded_over_tcp(server, resolver):
    reply = ask_tcp(server.addresses[0][1], "big.example.com", "A")
    assert len(reply.rr) == 40  # more than a UDP reply holds
    assert [name for _, name in resolver.asked_tcp] == ["big.example.com."]
    assert resolver.asked == []


def test_own_names_are_never_forwarded_and_nxdomain_comes_at_once(server, resolver):
    port = server.addresses[0][1]
    for name in ("nothing.internal", "zzz.vm.shop.internal", "nothing.flycast"):
        reply = ask_udp(port, name, "AAAA")
        assert reply.header.rcode == RCODE.NXDOMAIN and reply.rr == []
    assert ask_udp(port, "shop.internal", "A").header.rcode == RCODE.NOERROR  # NODATA
    assert resolver.asked == []


def test_a_silent_resolver_gives_servfail(tmp_path):
    silent = FakeResolver(silent=True)
    silent.start()
    try:
        with start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[silent.address]) as dns:
            reply = ask_udp(dns.addresses[0][1], "example.com", "A", timeout=10)
            assert reply.header.rcode == RCODE.SERVFAIL
            assert len(silent.asked) == 1
            reply = ask_tcp(dns.addresses[0][1], "example.com", "A", timeout=10)
            assert reply.header.rcode == RCODE.SERVFAIL
            assert len(silent.asked_tcp) == 1
    finally:
        silent.stop()


def test_a_resolver_that_refuses_gives_servfail(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()  # free once closed: nothing listens there
    with start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[nobody]) as dns:
        assert ask_tcp(dns.addresses[0][1], "example.com", "A").header.rcode == RCODE.SERVFAIL
        reply = ask_udp(dns.addresses[0][1], "example.com", "A", timeout=10)
        assert reply.header.rcode == RCODE.SERVFAIL


def test_a_large_answer_is_truncated_over_udp_and_whole_over_tcp(tmp_path, resolver):
    many = [
        MachineEntry(f"m{i:03d}", "web", "local", f"fdaa:0:1:a7b:0:{i + 1:x}:0:2", "started")
        for i in range(60)
    ]
    publish(shop(*many), tmp_path)
    with start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[resolver.address]) as dns:
        port = dns.addresses[0][1]
        plain = ask_udp(port, "shop.internal")
        assert plain.header.tc == 1 and plain.rr == []
        assert [str(q.qname) for q in plain.questions] == ["shop.internal."]  # glibc needs it
        edns = ask_udp(port, "shop.internal", edns=4096)  # 60 × 40 bytes > 1232
        assert edns.header.tc == 1
        assert len(addresses(ask_udp(port, "top20.nearest.of.shop.internal", edns=1232))) == 20
        assert len(addresses(ask_tcp(port, "shop.internal"))) == 60


GARBAGE = [
    b"",
    b"\x00",
    b"\x12\x34" * 5,
    b"\xff" * 12,  # a header claiming 65535 questions, and nothing after
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f" + b"a" * 10,  # a cut label
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a loop
    os.urandom(512),
    os.urandom(4000),
]


def test_malformed_packets_are_ignored(server):
    port = server.addresses[0][1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in GARBAGE * 5:
            sock.sendto(packet, ("127.0.0.1", port))
        reply = DNSRecord.question("shop.internal", "AAAA").reply()  # a reply, not a query
        sock.sendto(reply.pack(), ("127.0.0.1", port))
    for packet in GARBAGE:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack("!H", len(packet)) + packet)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"\x40\x00half a message")  # and hang up in the middle
    assert server.running()
    assert addresses(ask_udp(port, "shop.internal")) == [WEB.private_ip]
    assert addresses(ask_tcp(port, "shop.internal")) == [WEB.private_ip]


def test_a_flood_from_one_socket_leaves_it_answering(server, resolver):
    port = server.addresses[0][1]
    queries = [DNSRecord.question(f"q{i}.shop.internal", "AAAA").pack() for i in range(200)]
    queries += [DNSRecord.question(f"f{i}.example.com", "A").pack() for i in range(50)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for i in range(20_000):
            with contextlib.suppress(BlockingIOError):
                sock.sendto(queries[i % len(queries)], ("127.0.0.1", port))
    assert server.running()
    # Another source address has its own budget; the flooder's comes back in a second.
    other = eventually(lambda: ask_udp(port, "shop.internal", source="127.0.0.2"))
    assert addresses(other) == [WEB.private_ip]
    assert addresses(eventually(lambda: ask_udp(port, "shop.internal"))) == [WEB.private_ip]
    assert addresses(eventually(lambda: ask_tcp(port, "shop.internal"))) == [WEB.private_ip]
    # The forwards the flood asked for were capped (the rate limit let some through).
    assert len(resolver.asked) < 2500


def test_a_pipelined_tcp_flood_is_answered_in_part_and_the_server_stands(server):
    port = server.addresses[0][1]
    query = DNSRecord.question("shop.internal", "AAAA").pack()
    framed = struct.pack("!H", len(query)) + query
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(framed * 5000)
        first = DNSRecord.parse(read_message(sock))
        assert addresses(first) == [WEB.private_ip]
    assert server.running()
    assert addresses(eventually(lambda: ask_tcp(port, "shop.internal"))) == [WEB.private_ip]


def test_tcp_connections_are_capped_and_the_server_recovers(server):
    port = server.addresses[0][1]
    held = []
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        # Past the cap, connections are cut at once: some of ours read end of file.
        time.sleep(0.5)
        cut = 0
        for sock in held:
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    cut += 1
            except BlockingIOError:
                pass
            except OSError:
                cut += 1
        assert cut > 0
        assert addresses(ask_udp(port, "shop.internal")) == [WEB.private_ip]
    finally:
        for sock in held:
            sock.close()
    assert addresses(eventually(lambda: ask_tcp(port, "shop.internal"))) == [WEB.private_ip]


def test_an_idle_tcp_connection_is_closed(tmp_path):
    command = [
        sys.executable, "-m", "taxiway.private_net.dns_server", "--listen", "127.0.0.1:0",
        "--upstream", "127.0.0.1:9", "--registry-dir", str(tmp_path), "--tcp-idle", "0.3",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[3])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(1) == b""  # closed by the server, not by our timeout
    finally:
        server.terminate()
        assert server.wait(10) == 0


def test_several_servers_share_one_port(tmp_path, resolver):
    with start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[resolver.address]) as first:
        port = first.addresses[0][1]
        with start_dns([("127.0.0.1", port)], tmp_path, upstreams=[resolver.address]) as second:
            assert second.addresses == [("127.0.0.1", port)]
            publish(shop(WEB), tmp_path)
            for _ in range(10):
                assert addresses(ask_udp(port, "shop.internal")) == [WEB.private_ip]


def test_ipv6_loopback(tmp_path, resolver):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    publish(shop(WEB), tmp_path)
    with start_dns([("::1", 0), ("127.0.0.1", 0)], tmp_path, upstreams=[resolver.address]) as dns:
        assert [host for host, _ in dns.addresses] == ["::1", "127.0.0.1"]
        reply = ask_udp(dns.addresses[0][1], "shop.internal", source="::1", host="::1")
        assert addresses(reply) == [WEB.private_ip]


def test_an_address_in_use_is_one_sentence(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may share it
        port = taken.getsockname()[1]
        with pytest.raises(TaxiwayError) as caught:
            start_dns([("127.0.0.1", port)], tmp_path, upstreams=[("127.0.0.1", 9)])
    assert str(caught.value) == (
        f"cannot listen for DNS on 127.0.0.1:{port}: address already in use"
    )


def test_an_address_the_host_lacks_is_one_sentence(tmp_path):
    with pytest.raises(TaxiwayError) as caught:
        start_dns([("192.0.2.77", 5353)], tmp_path, upstreams=[("127.0.0.1", 9)])
    assert str(caught.value) == (
        "cannot listen for DNS on 192.0.2.77:5353: cannot assign requested address"
    )


def test_stop_ends_it_and_is_idempotent(tmp_path):
    dns = start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[("127.0.0.1", 9)])
    dns.stop()
    assert not dns.running() and dns.process.returncode == 0
    dns.stop()


def process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (a container's init may not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to see the child go")
def test_the_server_ends_when_its_parent_dies(tmp_path):
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from taxiway.private_net.dns_server import start_dns\n"
        "dns = start_dns([('127.0.0.1', 0)], Path(sys.argv[1]), upstreams=[('127.0.0.1', 9)])\n"
        "print(dns.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        assert not process_gone(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while not process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(child)


def test_the_command_line_refuses_a_bad_address():
    done = subprocess.run(
        [sys.executable, "-m", "taxiway.private_net.dns_server", "--listen", "localhost:53"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "does not start with an IP address" in done.stderr
    assert "Traceback" not in done.stderr


def test_parse_address():
    assert parse_address("[fdaa::3]:53") == ("fdaa::3", 53)
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad in ("fdaa::3", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", "host:53"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_host_resolvers_look_behind_systemd_resolveds_stub(tmp_path):
    stub = tmp_path / "resolv.conf"
    stub.write_text("# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
    assert host_resolvers(stub, upstream) == [("192.0.2.53", 53), ("2001:db8::53", 53)]
    assert host_resolvers(stub, tmp_path / "missing") == [("127.0.0.53", 53)]
    plain = tmp_path / "plain.conf"
    plain.write_text("nameserver 10.0.0.1\nnameserver not-an-address\nnameserver\n")
    assert host_resolvers(plain, upstream) == [("10.0.0.1", 53)]
    assert nameservers(tmp_path / "missing") == []


def test_the_package_imports_without_dnslib_for_the_parent():
    code = (
        "import sys; import taxiway.private_net.dns_server, taxiway.private_net.registry; "
        "print('dnslib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_aaaa_record_type_is_what_clients_get():
    # Sanity of the helper this module relies on: dnslib's AAAA renders compressed text.
    assert str(AAAA("fdaa:0:1:a7b:0:1:0:2")) == "fdaa:0:1:a7b:0:1:0:2"


def test_api_internal_depends_on_the_asker_even_for_repeated_questions(tmp_path, resolver):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    host_side = MachineEntry("aa0001", "app", "local", "fdaa:0:9:a7b:0:1:0:2", "started")
    on_loopback = MachineEntry("zz0001", "app", "local", "::1", "started")
    publish(AppEntry("aa", "aa", os.getpid(), "local", [host_side], api="fdaa:0:9::3"), tmp_path)
    publish(AppEntry("zz", "zz", os.getpid(), "local", [on_loopback], api="fdaa:0:7::3"), tmp_path)
    listen = [("::1", 0), ("127.0.0.1", 0)]
    with start_dns(listen, tmp_path, upstreams=[resolver.address]) as dns:
        v6, v4 = (port for _, port in dns.addresses)
        for _ in range(3):
            # ::1 is a machine of zz: zz's API; the host (127.0.0.1): the first app's.
            assert addresses(ask_udp(v6, "_api.internal", source="::1", host="::1")) == [
                "fdaa:0:7::3"
            ]
            assert addresses(ask_udp(v4, "_api.internal")) == ["fdaa:0:9::3"]


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (Debian's dnsutils) is not installed")
def test_dig_gets_every_address_falling_back_to_tcp_on_truncation(tmp_path, resolver):
    many = [
        MachineEntry(f"m{i:03d}", "web", "local", f"fdaa:0:1:a7b:0:{i + 1:x}:0:2", "started")
        for i in range(60)
    ]
    publish(shop(*many), tmp_path)
    with start_dns([("127.0.0.1", 0)], tmp_path, upstreams=[resolver.address]) as dns:
        port = str(dns.addresses[0][1])

        def dig(*args: str) -> str:
            command = ["dig", "-p", port, "@127.0.0.1", "+tries=1", "+time=5", *args]
            return subprocess.run(command, capture_output=True, text=True, check=True).stdout

        for edns in ("+edns", "+noedns"):
            assert dig("shop.internal", "AAAA", "+short", edns).split() == [
                m.private_ip for m in many
            ]
        assert "status: NXDOMAIN" in dig("nothing.internal", "AAAA")
        assert "status: NOERROR" in dig("shop.internal", "A")
        assert dig("example.com", "A", "+short").split() == [ANSWER_FROM_UPSTREAM]


def test_the_udp_read_budget_pauses_readers_until_the_next_window():
    from taxiway.private_net.dns_server import UDP_READ_WINDOW, UdpReadBudget

    class Clock:
        def __init__(self):
            self.now = 100.0
            self.timers = []

        def time(self):
            return self.now

        def call_at(self, when, callback):
            self.timers.append((when, callback))

    class Reader:
        resumed = 0

        def resume(self):
            self.resumed += 1

    clock = Clock()
    budget = UdpReadBudget(clock, per_second=100 / UDP_READ_WINDOW)  # 100 a window
    assert budget.take(60)
    assert not budget.take(60)  # spent: the caller stops reading
    first, second = Reader(), Reader()
    budget.pause(first)
    budget.pause(second)
    [(when, resume)] = clock.timers  # one timer for every paused reader
    assert when == 100.0 + UDP_READ_WINDOW
    clock.now = when
    resume()
    assert (first.resumed, second.resumed) == (1, 1)
    assert budget.take(60)  # a new window, a new budget
