"""The edge's connection cap and its TLS listeners under connections that never make a
request: shed beyond the cap, stalled handshakes dropped, nothing kept afterwards."""

from __future__ import annotations

import gc
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import Backend, EdgeThread, SelfSigned, get, member, plan, read_response

from process_watch import wait_for
from taxiway.edge.admission import connection_cap
from taxiway.edge.fleet import StaticFleet
from taxiway.edge.limits import Limits

TOML = """
app = "demo"
[[services]]
  internal_port = 8080
  [[services.ports]]
    port = 80
    handlers = ["http"]
  [[services.ports]]
    port = 443
    handlers = ["tls", "http"]
  [[services.ports]]
    port = 5000
"""


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend("m1")
    yield b
    b.close()


def start(tmp_path: Path, backend: Backend, *, uvloop: bool = True, **limits: object) -> EdgeThread:
    return EdgeThread(
        StaticFleet("demo", [member("m1", backend.port)]),
        plan(tmp_path, TOML),
        limits=Limits(**limits),  # type: ignore[arg-type]
        uvloop=uvloop,
        tls=SelfSigned(tmp_path),
    )


def admitted(et: EdgeThread) -> int:
    return et.call(lambda: et.edge.admission.open)


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def closed_by_edge(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_the_cap_is_a_share_of_the_descriptor_limit() -> None:
    assert connection_cap(20000) == (20000 - 1024) // 2  # the audit's host
    assert connection_cap(400) == (400 - 100) // 2
    assert connection_cap(40) == 16  # never fewer
    assert connection_cap() > 0


def test_connections_beyond_the_cap_are_shed_at_once(tmp_path: Path, backend: Backend) -> None:
    """Plain http: a 503 page and close; raw TCP and TLS: closed before anything else.
    Once a held connection ends, its slot serves the next client."""
    et = start(tmp_path, backend, max_connections=3)
    held: list[socket.socket] = []
    try:
        held = [socket.create_connection(("127.0.0.1", et.port(80)), timeout=10) for _ in range(3)]
        wait_for(lambda: admitted(et) == 3, "three connections admitted")
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=10) as extra:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(extra)
            assert status == 503 and b"connection limit" in body
            assert headers["connection"] == "close"
        with socket.create_connection(("127.0.0.1", et.port(5000)), timeout=10) as extra:
            assert closed_by_edge(extra)
        with (
            socket.create_connection(("127.0.0.1", et.port(443)), timeout=10) as extra,
            pytest.raises((ssl.SSLError, OSError)),
        ):
            client_tls().wrap_socket(extra, server_hostname="localhost")
        assert et.call(lambda: et.edge.admission.shed) == 3
        held.pop().close()
        wait_for(lambda: admitted(et) == 2, "a slot given back")
        assert get(et.port(80), "/").status == 200
    finally:
        for s in held:
            s.close()
        et.close()


def test_a_stalled_tls_handshake_is_dropped_and_its_slot_freed(
    tmp_path: Path, backend: Backend
) -> None:
    et = start(tmp_path, backend, tls_handshake_timeout_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", et.port(443)), timeout=10) as silent:
            wait_for(lambda: admitted(et) == 1, "the handshake admitted")
            assert closed_by_edge(silent)  # after the handshake timeout, not never
        wait_for(lambda: admitted(et) == 0, "its slot given back")
        with (
            socket.create_connection(("127.0.0.1", et.port(443)), timeout=10) as raw,
            client_tls().wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(tls)[0] == 200  # type: ignore[arg-type]
    finally:
        et.close()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def live(*names: str) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ in names)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_connections_that_never_make_a_request_leave_nothing_behind(
    tmp_path: Path, backend: Backend, loop: str
) -> None:
    """Browser preconnects and port scanners: rounds of TLS connections closed before,
    during and right after the handshake. After each round every slot is free, no
    connection object is alive, and the process's memory is back near where it was."""
    et = start(tmp_path, backend, uvloop=loop == "uvloop", tls_handshake_timeout_s=5.0)
    port = et.port(443)
    ctx = client_tls()
    kinds = ("HttpClientConnection", "H2ClientConnection", "SSLProtocol", "_SSLProtocolTransport")

    def one_round(n: int) -> None:
        held = []
        for i in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 4 == 3:
                ctx.wrap_socket(sock, server_hostname="localhost").close()
                continue
            if i % 4 == 1:
                sock.sendall(b"\x16\x03\x01\x00\xff\x01")  # half a ClientHello
            held.append(sock)  # a stalled handshake, until the client gives up below
        for sock in held:
            sock.close()
        wait_for(lambda: admitted(et) == 0, "every slot given back")

    try:
        one_round(500)
        time.sleep(1.5)  # the sweep hands freed memory back after a burst
        baseline = rss_kib()
        for _ in range(6):
            one_round(500)
            assert live(*kinds) == 0
        time.sleep(1.5)
        grown = rss_kib() - baseline
        assert grown < 40 * 1024, f"{grown} KiB more after 3,000 connections"
        assert get(et.port(80), "/").status == 200
    finally:
        et.close()
