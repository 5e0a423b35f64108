"""Raw TCP pass-through, PROXY protocol and TLS termination, against real TCP servers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import Backend, EchoTcp, EdgeThread, SelfSigned, free_port, get, member, plan

from taxiway.edge.fleet import StaticFleet

TCP = """
app = "demo"
[[services]]
  internal_port = 9000
  protocol = "tcp"
  {extra}
  [[services.ports]]
    port = 5000
  [[services.ports]]
    port = 5001
    handlers = ["proxy_proto"]
    proxy_proto_options = {{ version = "v2" }}
  [[services.ports]]
    start_port = 6000
    end_port = 6002
  [[services.ports]]
    port = 6443
    handlers = ["tls"]
"""


def encode(version: str, client: tuple, server: tuple) -> bytes:
    """A stand-in for edge/proxy_protocol.py: a v1-style line naming the version asked."""
    return f"PROXY {version} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


@pytest.fixture
def echo() -> Iterator[EchoTcp]:
    server = EchoTcp("m1")
    yield server
    server.close()


@pytest.fixture
def tls(tmp_path: Path) -> SelfSigned:
    return SelfSigned(tmp_path)


@pytest.fixture
def edge(tmp_path: Path, echo: EchoTcp, tls: SelfSigned) -> Iterator[EdgeThread]:
    fleet = StaticFleet("demo", [member("m1", echo.port, internal=9000)])
    et = EdgeThread(fleet, plan(tmp_path, TCP.format(extra="")), proxy_proto=encode, tls=tls)
    yield et
    et.close()


def talk(sock: socket.socket, data: bytes, expect: int) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < expect:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_bytes_are_relayed_both_ways(edge: EdgeThread, echo: EchoTcp) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(5000)), timeout=5) as sock:
        assert talk(sock, b"hello", 8) == b"m1:HELLO"
        assert edge.stats()["load"] == {"m1": 1}
        big = b"z" * 3_000_000
        sock.sendall(big)
        got = b""
        while got.count(b"Z") < len(big):
            got += sock.recv(1 << 20)
        # half-close: the machine sees our EOF, answers it with its own
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    assert edge.settle()["load"] == {}


def test_every_port_of_a_range_listens(edge: EdgeThread) -> None:
    ports = {b["port"] for b in edge.edge.bindings()}
    assert {6000, 6001, 6002} <= ports
    for port in (6000, 6001, 6002):
        with socket.create_connection(("127.0.0.1", edge.port(port)), timeout=5) as sock:
            assert talk(sock, b"r", 4) == b"m1:R"


def test_proxy_proto_header_goes_first(edge: EdgeThread, echo: EchoTcp) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(5001)), timeout=5) as sock:
        local = sock.getsockname()
        expected = f"PROXY v2 127.0.0.1 127.0.0.1 {local[1]} {edge.port(5001)}\r\n".encode()
        sock.sendall(b"data")
        deadline = time.monotonic() + 5
        while len(echo.received) < len(expected) + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert echo.received == expected + b"data"


def test_tls_is_terminated_at_the_edge(edge: EdgeThread, echo: EchoTcp, tls: SelfSigned) -> None:
    raw_sock = socket.create_connection(("127.0.0.1", edge.port(6443)), timeout=5)
    with tls.client().wrap_socket(raw_sock, server_hostname="localhost") as sock:
        assert talk(sock, b"secret", 9) == b"m1:SECRET"
    assert echo.received.endswith(b"secret")  # plaintext at the machine
    assert [p.port for p in tls.asked] == [6443]
    assert next(b for b in edge.edge.bindings() if b["port"] == 6443)["handlers"] == ["tls"]


def test_a_refused_machine_is_replaced_and_none_closes(tmp_path: Path, echo: EchoTcp) -> None:
    fleet = StaticFleet(
        "demo", [member("dead", free_port(), internal=9000), member("m1", echo.port, internal=9000)]
    )
    toml = TCP.format(extra="auto_start_machines = false")
    et = EdgeThread(fleet, plan(tmp_path, toml), proxy_proto=encode)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", et.port(5000)), timeout=5) as sock:
                assert talk(sock, b"x", 4) == b"m1:X"
        et.set_state("m1", "stopped")
        et.set_state("dead", "stopped")
        with socket.create_connection(("127.0.0.1", et.port(5000)), timeout=5) as sock:
            assert sock.recv(10) == b""  # nothing to route to: raw TCP can only hang up
        assert et.settle()["load"] == {}
    finally:
        et.close()


def test_hard_limit_holds_connections_until_a_slot_frees(tmp_path: Path, echo: EchoTcp) -> None:
    toml = TCP.format(extra="[services.concurrency]\n    hard_limit = 1")
    et = EdgeThread(
        StaticFleet("demo", [member("m1", echo.port, internal=9000)]),
        plan(tmp_path, toml),
        proxy_proto=encode,
    )
    try:
        first = socket.create_connection(("127.0.0.1", et.port(5000)), timeout=5)
        assert talk(first, b"a", 4) == b"m1:A"
        second = socket.create_connection(("127.0.0.1", et.port(5000)), timeout=5)
        second.sendall(b"b")  # kept until the machine has room
        time.sleep(0.1)
        assert echo.received == b"a"
        first.close()
        assert talk(second, b"", 4) == b"m1:B"
        second.close()
        assert et.settle()["load"] == {}
    finally:
        et.close()


def test_multi_group_service_balances_over_both_groups(tmp_path: Path) -> None:
    toml = """
app = "demo"
[processes]
web = "web"
api = "api"
[http_service]
  internal_port = 8080
  processes = ["web", "api"]
"""
    web, api = Backend("web1"), Backend("api1")
    fleet = StaticFleet(
        "demo", [member("web1", web.port, group="web"), member("api1", api.port, group="api")]
    )
    et = EdgeThread(fleet, plan(tmp_path, toml))
    try:
        assert [b["port"] for b in et.edge.bindings()] == [80, 443]  # one listener each
        hits = {get(et.port(80), "/").getheader("X-Machine") for _ in range(30)}
        assert hits == {"web1", "api1"}
    finally:
        et.close()
        web.close()
        api.close()


def test_https_requests_say_so(tmp_path: Path, tls: SelfSigned) -> None:
    backend = Backend("m1")
    toml = 'app = "demo"\n[http_service]\ninternal_port = 8080\nforce_https = true\n'
    et = EdgeThread(
        StaticFleet("demo", [member("m1", backend.port)]), plan(tmp_path, toml), tls=tls
    )
    try:
        raw_sock = socket.create_connection(("127.0.0.1", et.port(443)), timeout=5)
        with tls.client().wrap_socket(raw_sock, server_hostname="localhost") as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        headers = dict(json.loads(out.split(b"\r\n\r\n", 1)[1])["headers"])
        assert headers["X-Forwarded-Proto"] == "https"  # no redirect over TLS
        assert headers["X-Forwarded-SSL"] == "on"
    finally:
        et.close()
        backend.close()
