"""HTTP/2 clients (ALPN h2 on a tls+http port) get the http handler's behaviour."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from edge_support import Backend, EdgeThread, SelfSigned, get, member, plan

from taxiway.edge.fleet import StaticFleet
from taxiway.plan.machine import Port

TOML = 'app = "demo"\n[http_service]\ninternal_port = 8080\n'


class AlpnSelfSigned(SelfSigned):
    def context_for(self, port: Port) -> ssl.SSLContext:
        ctx = super().context_for(port)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return ctx


Request = tuple[str, str, bytes | None]


def h2_exchange(
    port: int,
    tls: SelfSigned,
    requests: list[Request],
    trailers: dict[int, dict] | None = None,
) -> list[tuple[dict, bytes]]:
    """Send the requests as concurrent streams; the responses in the same order (and each
    one's trailers into ``trailers``, by request index)."""
    ctx = tls.client()
    ctx.set_alpn_protocols(["h2"])
    raw_sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw_sock, server_hostname="localhost") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        ids = []
        uploads: dict[int, bytes] = {}
        for method, path, body in requests:
            sid = conn.get_next_available_stream_id()
            headers = [
                (":method", method),
                (":path", path),
                (":authority", "localhost"),
                (":scheme", "https"),
            ]
            conn.send_headers(sid, headers, end_stream=body is None)
            if body is not None:
                uploads[sid] = body
            ids.append(sid)

        def send_uploads() -> None:
            for sid, rest in list(uploads.items()):
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                while rest and room > 0:
                    conn.send_data(sid, rest[:room])
                    rest = rest[room:]
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                uploads[sid] = rest
                if not rest:
                    conn.end_stream(sid)
                    del uploads[sid]

        send_uploads()
        sock.sendall(conn.data_to_send())
        got: dict[int, list] = {sid: [{}, b""] for sid in ids}
        done: set[int] = set()
        while len(done) < len(ids):
            data = sock.recv(65536)
            assert data, "connection closed"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    got[ev.stream_id][0] = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    got[ev.stream_id][1] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived) and trailers is not None:
                    trailers[ids.index(ev.stream_id)] = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    done.add(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    pytest.fail(f"stream {ev.stream_id} reset")
            send_uploads()
            sock.sendall(conn.data_to_send())
        return [(got[sid][0], got[sid][1]) for sid in ids]


def test_h2_clients(tmp_path: Path) -> None:
    backend = Backend("m1")
    tls = AlpnSelfSigned(tmp_path)
    et = EdgeThread(
        StaticFleet("demo", [member("m1", backend.port)]), plan(tmp_path, TOML), tls=tls
    )
    try:
        big = b"q" * 200_000
        answers = h2_exchange(
            et.port(443),
            tls,
            [
                ("GET", "/echo?a=1", None),
                ("POST", "/echo", b"posted"),
                ("HEAD", "/x", None),
                ("GET", "/big?n=300000", None),
                ("PUT", "/echo", big),
            ],
        )
        (h1, b1), (_, b2), (h3, b3), (h4, b4), (_, b5) = answers
        assert h1[":status"] == "200" and h1["via"] == "2 fly.io"
        assert h1["server"].startswith("Fly/") and h1["fly-request-id"]
        seen = dict(json.loads(b1)["headers"])
        assert seen["Via"] == "2 fly.io"
        assert seen["X-Forwarded-Proto"] == "https" and seen["Host"] == "localhost"
        assert json.loads(b2)["body"] == "posted"
        assert h3[":status"] == "200" and b3 == b""
        assert b4 == b"x" * 300_000
        assert json.loads(b5)["body"].encode() == big
        assert "connection" not in h1 and "transfer-encoding" not in h4
        assert et.settle()["load"] == {}
    finally:
        et.close()
        backend.close()


class H2cMachine:
    """An h2c (prior knowledge) server: answers every stream with what it received."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        self.streams = 0
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _H2cServer(self), "127.0.0.1", 0)
            )
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _H2cServer(asyncio.Protocol):
    def __init__(self, machine: H2cMachine) -> None:
        self.machine = machine
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.requests: dict[int, tuple[dict, bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.machine.connections += 1
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.machine.streams += 1
                self.requests[ev.stream_id] = (dict(ev.headers), b"")
            elif isinstance(ev, h2.events.DataReceived):
                headers, body = self.requests[ev.stream_id]
                self.requests[ev.stream_id] = (headers, body + ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                headers, body = self.requests.pop(ev.stream_id)
                answer = json.dumps({"headers": headers, "body": body.decode()}).encode()
                self.conn.send_headers(ev.stream_id, [(":status", "200"), ("x-machine", "h2c")])
                if headers[":path"].startswith("/grpc."):  # status in trailers, as gRPC does
                    self.conn.send_data(ev.stream_id, answer)
                    trailers = [("grpc-status", "0"), ("grpc-message", "ok " + body.decode())]
                    self.conn.send_headers(ev.stream_id, trailers, end_stream=True)
                else:
                    self.conn.send_data(ev.stream_id, answer, end_stream=True)
        self.transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]


def test_h2_backend_speaks_h2c_to_the_machine(tmp_path: Path) -> None:
    machine = H2cMachine()
    toml = TOML + "[http_service.http_options]\nh2_backend = true\n"
    et = EdgeThread(StaticFleet("demo", [member("m1", machine.port)]), plan(tmp_path, toml))
    try:
        for i in range(3):
            resp = get(
                et.port(80),
                f"/grpc/{i}",
                method="POST",
                body=b"ping %d" % i,
                headers={"Host": "api.local"},
            )
            assert resp.status == 200 and resp.getheader("X-Machine") == "h2c"
            seen = json.loads(resp.data)
            assert seen["body"] == f"ping {i}"
            assert seen["headers"][":path"] == f"/grpc/{i}"
            assert seen["headers"][":authority"] == "api.local"
            assert seen["headers"]["via"] == "1.1 fly.io"
            assert "connection" not in seen["headers"]
            assert resp.getheader("Transfer-Encoding") == "chunked"  # the stream's end ends it
        assert machine.connections == 1 and machine.streams == 3  # one connection, 3 streams
        assert et.settle()["load"] == {}
    finally:
        et.close()
        machine.close()


def test_grpc_status_trailers_reach_an_h2_client_through_h2_backend(tmp_path: Path) -> None:
    """gRPC's shape: an h2 client (ALPN h2 over the edge's TLS), h2c to the machine, and
    the call's status in trailers after the response body, on every stream."""
    machine = H2cMachine()
    tls = AlpnSelfSigned(tmp_path)
    toml = TOML + "[http_service.http_options]\nh2_backend = true\n"
    et = EdgeThread(
        StaticFleet("demo", [member("m1", machine.port)]), plan(tmp_path, toml), tls=tls
    )
    try:
        trailers: dict[int, dict] = {}
        calls = [("POST", f"/grpc.Echo/Say{i}", b"call %d" % i) for i in range(3)]
        answers = h2_exchange(et.port(443), tls, [*calls, ("GET", "/plain", None)], trailers)
        for i, (headers, body) in enumerate(answers[:3]):
            assert headers[":status"] == "200" and headers["x-machine"] == "h2c"
            assert json.loads(body)["body"] == f"call {i}"
            assert trailers[i] == {"grpc-status": "0", "grpc-message": f"ok call {i}"}
        assert 3 not in trailers  # a response without trailers ends without them
        assert "grpc-status" not in answers[3][0]
        assert et.settle()["load"] == {}
    finally:
        et.close()
        machine.close()
