"""Malformed, oversized, smuggling and abandoned requests over raw sockets: the edge answers
as documented in `taxiway.edge.limits`, never crashes, and never leaks a slot."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import Backend, EdgeThread, get, member, plan, raw

from taxiway.edge.fleet import StaticFleet
from taxiway.edge.limits import Limits

TOML = """
app = "demo"
[http_service]
  internal_port = 8080
  [http_service.concurrency]
    type = "requests"
    soft_limit = 5
    hard_limit = 50
"""


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend("m1")
    yield b
    b.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def edge(request: pytest.FixtureRequest, tmp_path: Path, backend: Backend) -> Iterator[EdgeThread]:
    limits = Limits(headers_timeout_s=0.5, idle_timeout_s=2.0)
    et = EdgeThread(
        StaticFleet("demo", [member("m1", backend.port)]),
        plan(tmp_path, TOML),
        limits=limits,
        uvloop=request.param == "uvloop",
    )
    yield et
    et.close()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),  # TLS to plain
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
            + b"\r\n",
            431,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417),
    ],
)
def test_bad_requests_get_a_status_and_a_closed_connection(
    edge: EdgeThread, backend: Backend, request_bytes: bytes, status: int
) -> None:
    out = raw(edge.port(80), request_bytes)
    assert status_of(out) == status
    assert b"Connection: close" in out
    assert backend.seen == []
    assert edge.settle()["load"] == {}


def test_a_huge_request_line_without_end_is_cut_at_the_limit(edge: EdgeThread) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"GET /")
        out = b""
        try:
            for _ in range(100):
                sock.sendall(b"a" * 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    assert status_of(out) == 414


def test_slow_headers_get_408(edge: EdgeThread) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        out = b""
        while chunk := sock.recv(4096):  # the edge closes after 0.5 s without the blank line
            out += chunk
    assert status_of(out) == 408


def test_an_abandoned_body_frees_its_slot(edge: EdgeThread, backend: Backend) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
        deadline = time.monotonic() + 5
        while edge.stats()["load"] != {"m1": 1} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert edge.stats()["load"] == {"m1": 1}
    assert edge.settle()["load"] == {}


def test_a_client_gone_while_the_machine_works_frees_its_slot(
    edge: EdgeThread, backend: Backend
) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        backend.wait_held()
        assert edge.stats()["load"] == {"m1": 1}
    assert edge.settle() == {"load": {}, "connections": 0, "pooled": edge.stats()["pooled"]}
    backend.release()


def test_a_client_that_stops_sending_is_gone(edge: EdgeThread, backend: Backend) -> None:
    # As with nginx: an EOF from the client abandons its request (and frees the slot).
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        backend.wait_held()
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""
    assert edge.settle()["load"] == {}
    backend.release()


GOOD = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
BAD = [
    b"\x00\x01\x02\xff" * 50,
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\npartial",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"GET /" + b"x" * 20000,
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 40000,
    b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /sleep?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nhi",
    b"GET /big?n=2000000 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /sse?n=50 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\n",
    b"GET /ok HTTP/1.0\r\n\r\n",
]


def _hammer(port: int, seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    for _ in range(rounds):
        payload = rng.choice([*BAD, GOOD])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
                cut = rng.randrange(1, len(payload) + 1)
                sock.sendall(payload[:cut])
                if rng.random() < 0.5:
                    sock.sendall(payload[cut:])
                if rng.random() < 0.3:
                    sock.recv(rng.choice([1, 100, 65536]))  # then hang up mid-response
                elif rng.random() < 0.3:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        except OSError:
            pass


def test_hammering_leaves_no_slot_and_no_connection_behind(
    edge: EdgeThread, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = edge.port(80)
    threads = [threading.Thread(target=_hammer, args=(port, seed, 30)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    backend.release()  # anything parked in /hold may finish
    stats = edge.settle(timeout=10)
    assert stats["load"] == {}
    assert stats["connections"] == 0
    assert get(port, "/still-fine").data == b"m1 GET /still-fine\n"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()
