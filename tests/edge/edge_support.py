"""Real parts for the edge's tests: backend HTTP servers, an `Edge` on its own loop thread,
and raw-socket clients.

The backends are threaded `http.server`s (one per "machine"); each response says which
machine answered (``X-Machine``). The edge runs in a background thread with its own event
loop, so tests talk to it with plain blocking sockets, as any client would.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import socket
import socketserver
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from self_signed import self_signed_cert
from taxiway.config.loader import load_config
from taxiway.edge.fleet import Member, StaticFleet
from taxiway.edge.limits import Limits
from taxiway.edge.server import Edge
from taxiway.plan.machine import MachineSpec, Port, plan_machines

T = TypeVar("T")


def plan(tmp_path: Path, toml: str) -> dict[str, MachineSpec]:
    (tmp_path / "fly.toml").write_text(toml)
    return plan_machines(load_config(tmp_path / "fly.toml").config, base_dir=tmp_path)


# --- backends -----------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def version_string(self) -> str:
        return "backend/1.0"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Machine", self.server.name)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        self.do_GET()

    def do_PUT(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        srv = self.server
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body()
        with srv.lock:
            srv.seen.append(
                (self.command, self.path, dict(self.headers.items()), self.client_address)
            )
        path = url.path
        if path == "/echo" or path.startswith("/echo/"):
            payload = {
                "method": self.command,
                "path": self.path,
                "headers": self.headers.items(),
                "body": body.decode("latin-1"),
                "machine": srv.name,
            }
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        elif path == "/status":
            self._send(int(query["code"]), b"status\n")
        elif path == "/headers":
            self._send(200, b"ok\n", {k: v for k, v in query.items()})
        elif path == "/sleep":
            time.sleep(float(query.get("s", "0.2")))
            self._send(200, b"slept\n")
        elif path == "/hold":
            srv.held.release()
            srv.gate.wait(10)
            self._send(200, b"released\n")
        elif path == "/replay":
            if (
                "fly-replay-src" in self.headers
                or "fly-replay-failed" in self.headers
                or srv.name == query.get("serve_on")
            ):
                self._send(200, json.dumps({"machine": srv.name, "body": body.decode()}).encode())
            else:
                self._send(409, b"replay me\n", {"fly-replay": query["to"]})
        elif path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(query.get("n", "3"))):
                data = f"data: {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                srv.gate.wait(float(query.get("wait", "0")))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/trailers":
            # A chunked body, then trailer fields (one that a trailer section must not carry).
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Trailer")
            self.end_headers()
            value = query.get("v", "1").encode()
            trailers = b"X-Trailer: %s\r\nHost: elsewhere\r\n" % value
            self.wfile.write(b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n")
        elif path == "/close":
            # No Content-Length, no chunking: the body ends with the connection.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until close\n" * int(query.get("n", "1")))
            self.close_connection = True
        elif path == "/big":
            n = int(query.get("n", "1000000"))
            self._send(200, b"x" * n)
        elif path == "/ws":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data.upper())
            self.close_connection = True
        else:
            self._send(200, f"{srv.name} {self.command} {self.path}\n".encode())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients the edge hung up on (tests do that on purpose)

    name: str
    seen: list
    lock: threading.Lock
    gate: threading.Event
    held: threading.Semaphore


class Backend:
    """A machine's HTTP server on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.name = name
        self.server.seen = []
        self.server.lock = threading.Lock()
        self.server.gate = threading.Event()
        self.server.held = threading.Semaphore(0)
        self.name = name
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def seen(self) -> list:
        return self.server.seen

    def is_held(self, timeout: float = 0.0) -> bool:
        """Whether a request arrived in ``/hold`` (taking note of it)."""
        return self.server.held.acquire(timeout=timeout)

    def wait_held(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``n`` requests are parked in ``/hold``."""
        for _ in range(n):
            assert self.server.held.acquire(timeout=timeout), "request did not arrive"

    def release(self) -> None:
        self.server.gate.set()

    def close(self) -> None:
        self.server.gate.set()
        self.server.shutdown()
        self.server.server_close()


class RawMachine:
    """A server speaking raw bytes: each connection it accepts goes to `handle` (on its
    own thread); this one keeps every connection open and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.accepted.append(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class EchoTcp:
    """A raw TCP machine: upper-cases what it gets; ``PING`` first line gets a banner."""

    def __init__(self, name: str) -> None:
        outer = self

        class H(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                sock = self.request
                while True:
                    data = sock.recv(65536)
                    if not data:
                        sock.shutdown(socket.SHUT_WR)
                        return
                    outer.received += data
                    sock.sendall(name.encode() + b":" + data.upper())

        class S(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.connections = 0
        self.received = b""
        self.server = S(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def member(
    machine_id: str, port: int, *, internal: int = 8080, group: str = "app", state: str = "started"
) -> Member:
    return Member(id=machine_id, group=group, state=state, host="127.0.0.1", ports={internal: port})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SelfSigned:
    """A `TlsProvider` with one self-signed certificate for localhost."""

    def __init__(self, folder: Path) -> None:
        self.cert, self.key = self_signed_cert(folder)
        self.asked: list[Port] = []

    def context_for(self, port: Port) -> ssl.SSLContext:
        self.asked.append(port)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return ctx


# --- the edge on a loop thread ------------------------------------------------------------


class EdgeThread:
    """An `Edge` running on an event loop in a background thread."""

    def __init__(
        self,
        fleet: StaticFleet,
        specs: dict[str, MachineSpec],
        *,
        limits: Limits | None = None,
        uvloop: bool = False,
        **kw: Any,
    ) -> None:
        self.fleet = fleet
        if uvloop:
            import uvloop as _uvloop

            self.loop = _uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.edge: Edge = self.call(
            lambda: Edge(fleet, specs, exact_ports=False, limits=limits or Limits(), **kw)
        )
        self.run(self.edge.start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def port(self, fly_port: int) -> int:
        for b in self.edge.bindings():
            if b["port"] == fly_port:
                return int(b["address"].rsplit(":", 1)[1])
        raise KeyError(fly_port)

    def set_state(self, machine_id: str, state: str) -> None:
        self.call(lambda: self.fleet.set_state(machine_id, state))

    def stats(self) -> dict:
        return self.call(self.edge.stats)

    def settle(self, timeout: float = 5.0) -> dict:
        """Wait until no request or connection is in flight; the final counters."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if (not stats["load"] and not stats["connections"]) or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)

    def close(self) -> None:
        self.run(self.edge.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


# --- clients ------------------------------------------------------------------------------


def get(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> http.client.HTTPResponse:
    """One request on a fresh connection; the response is read whole."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.data = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


def raw(port: int, data: bytes, *, timeout: float = 5.0, shut: bool = False) -> bytes:
    """Send bytes, read until the edge closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


_leftover: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response off a keep-alive socket (Content-Length or chunked); bytes of the
    next response stay for the next call."""
    buf = _leftover.pop(sock, b"")

    def more() -> bytes:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        return chunk

    while b"\r\n\r\n" not in buf:
        buf += more()
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        key = k.strip().lower()
        headers[key] = headers[key] + ", " + v.strip() if key in headers else v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            rest += more()
        _leftover[sock] = rest[n:]
        return status, headers, rest[:n]
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += more()
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += more()
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                _leftover[sock] = rest
                return status, headers, body
    return status, headers, rest
