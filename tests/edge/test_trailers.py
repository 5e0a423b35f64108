"""Trailer fields after a chunked body (gRPC's grpc-status) reach the client, and never
become headers of the next response on a pooled connection to the machine."""

from __future__ import annotations

import socket
from pathlib import Path

from edge_support import Backend, EdgeThread, member, plan

from taxiway.edge.fleet import StaticFleet

TOML = (
    'app = "demo"\n[http_service]\ninternal_port = 8080\n'
    '[http_service.concurrency]\ntype = "requests"\n'  # pooled connections to machines
)


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response: its head, and its body as sent (chunks and trailers included)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before the head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")), None)
    while (len(body) < length) if length is not None else not body.endswith(b"\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, "closed before the body's end"
        body += chunk
    return head, body


def test_trailers_pass_and_stay_out_of_the_next_response(tmp_path: Path) -> None:
    backend = Backend("m1")
    et = EdgeThread(StaticFleet("demo", [member("m1", backend.port)]), plan(tmp_path, TOML))
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=5) as sock:
            sock.sendall(b"GET /trailers?v=one HTTP/1.1\r\nHost: demo\r\nTE: trailers\r\n\r\n")
            head, body = _read_response(sock)
            assert b"transfer-encoding: chunked" in head.lower()
            # Host is no trailer field: dropped
            assert body == b"5\r\nhello\r\n0\r\nX-Trailer: one\r\n\r\n"
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: demo\r\n\r\n")
            head, _ = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"x-trailer" not in head.lower()
        (_, _, _, first), (_, _, _, second) = backend.seen
        assert first == second  # the same pooled connection to the machine carried both
        assert et.settle()["load"] == {}
    finally:
        et.close()
        backend.close()
