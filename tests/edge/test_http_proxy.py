"""The http handler against real machines (threaded HTTP servers) over real sockets."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import Backend, EdgeThread, RawMachine, get, member, plan, raw, read_response

from taxiway.edge.fleet import StaticFleet
from taxiway.edge.limits import Limits

HTTP_SERVICE = """
app = "demo"
[http_service]
  internal_port = 8080
  force_https = {force}
  {extra}
  [http_service.concurrency]
    type = "{ctype}"
    soft_limit = 20
"""

IDLE_1S = HTTP_SERVICE.format(
    force="false", ctype="requests", extra="http_options = { idle_timeout = 1 }"
)
REQUEST_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}-local$")


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    made = [Backend("m1"), Backend("m2")]
    yield made
    for b in made:
        b.close()


def start(tmp_path: Path, backends: list[Backend], toml: str | None = None, **kw) -> EdgeThread:
    toml = toml or HTTP_SERVICE.format(force="false", ctype="requests", extra="")
    fleet = StaticFleet("demo", [member(b.name, b.port) for b in backends])
    return EdgeThread(fleet, plan(tmp_path, toml), **kw)


@pytest.fixture
def edge(tmp_path: Path, backends: list[Backend]) -> Iterator[EdgeThread]:
    et = start(tmp_path, backends[:1])
    yield et
    et.close()


def echo(resp) -> dict:
    return json.loads(resp.data)


# --- headers ------------------------------------------------------------------------------


def test_a_request_reaches_the_machine_with_the_platform_headers(edge: EdgeThread) -> None:
    port = edge.port(80)
    resp = get(
        port,
        "/echo?x=1",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "Fly-Client-IP": "6.6.6.6",
            "Via": "1.0 cdn",
        },
    )
    assert resp.status == 200
    seen = dict(echo(resp)["headers"])
    assert seen["Fly-Client-IP"] == "127.0.0.1"  # the client's own value is replaced
    assert seen["Fly-Forwarded-Port"] == str(port)
    assert seen["Fly-Region"] == "local"
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-SSL"] == "off"
    assert seen["X-Forwarded-Port"] == str(port)
    assert seen["Via"] == "1.0 cdn, 1.1 fly.io"
    assert REQUEST_ID.match(seen["Fly-Request-Id"])
    assert seen["Host"] == f"127.0.0.1:{port}"
    # the response: the platform's Server, Via and the same request id
    assert resp.getheader("Server").startswith("Fly/")
    assert resp.getheader("Via") == "1.1 fly.io"
    assert resp.getheader("Fly-Request-Id") == seen["Fly-Request-Id"]
    assert resp.getheader("X-Machine") == "m1"


def test_response_header_options_and_pristine(tmp_path: Path, backends: list[Backend]) -> None:
    toml = """
app = "demo"
[http_service]
  internal_port = 8080
  [http_service.http_options.response.headers]
    X-Machine = false
    X-Added = "yes"
    X-Multi = ["a", "b"]
"""
    et = start(tmp_path, backends[:1], toml)
    try:
        resp = get(et.port(80), "/headers?X-Kept=1")
        assert resp.getheader("X-Machine") is None
        assert resp.getheader("X-Added") == "yes"
        assert resp.msg.get_all("X-Multi") == ["a", "b"]
        assert resp.getheader("X-Kept") == "1"
        assert resp.getheader("Fly-Request-Id")
    finally:
        et.close()
    toml = (
        'app = "demo"\n[http_service]\ninternal_port = 8080\n'
        "[http_service.http_options.response]\npristine = true\n"
    )
    et = start(tmp_path, backends[:1], toml)
    try:
        resp = get(et.port(80), "/")
        assert resp.getheader("Server") == "backend/1.0"
        assert resp.getheader("Via") is None
        assert resp.getheader("Fly-Request-Id") is None
    finally:
        et.close()


def test_force_https_redirects_to_the_real_https_port(
    tmp_path: Path, backends: list[Backend]
) -> None:
    et = start(
        tmp_path, backends[:1], HTTP_SERVICE.format(force="true", ctype="requests", extra="")
    )
    try:
        resp = get(et.port(80), "/a/b?c=d", headers={"Host": "localhost:1234"})
        assert resp.status == 301
        assert resp.getheader("Location") == f"https://localhost:{et.port(443)}/a/b?c=d"
        assert backends[0].seen == []
    finally:
        et.close()


# --- keep-alive and pooling ---------------------------------------------------------------


def test_keep_alive_to_the_client_and_pooled_connections_to_the_machine(
    edge: EdgeThread, backends: list[Backend]
) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        for i in range(5):
            sock.sendall(f"GET /n{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _headers, body = read_response(sock)
            assert status == 200
            assert body == f"m1 GET /n{i}\n".encode()
    peers = {client for _, _, _, client in backends[0].seen}
    assert len(peers) == 1  # one upstream connection, reused (concurrency type "requests")


def test_connections_concurrency_opens_a_connection_per_request(
    tmp_path: Path, backends: list[Backend]
) -> None:
    et = start(
        tmp_path, backends[:1], HTTP_SERVICE.format(force="false", ctype="connections", extra="")
    )
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=5) as sock:
            for _ in range(3):
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                _status, _, body = read_response(sock)
                assert json.loads(body)["headers"].count(["Connection", "close"]) == 1
        assert len({client for *_, client in backends[0].seen}) == 3
    finally:
        et.close()


def test_pipelined_requests_are_answered_in_order(edge: EdgeThread) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(4)))
        for i in range(4):
            assert read_response(sock)[2] == f"m1 GET /p{i}\n".encode()


def test_head_has_no_body_and_the_connection_goes_on(edge: EdgeThread) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        assert buf.startswith(b"HTTP/1.1 200 OK\r\n")
        assert buf.endswith(b"\r\n\r\n")
        assert b"content-length: 11" in buf.lower()
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[2] == b"m1 GET /after\n"


# --- bodies -------------------------------------------------------------------------------


def test_request_bodies_content_length_and_chunked(edge: EdgeThread) -> None:
    port = edge.port(80)
    big = b"0123456789" * 300_000  # 3 MB: beyond the replay buffer, still streamed
    resp = get(port, "/echo", method="POST", body=big)
    assert echo(resp)["body"].encode() == big
    chunks = iter([b"hello ", b"chunked ", b"world"])
    resp = get(port, "/echo", method="POST", body=chunks)  # http.client sends it chunked
    data = echo(resp)
    assert data["body"] == "hello chunked world"
    assert ["Transfer-Encoding", "chunked"] in data["headers"]


def test_expect_100_continue(edge: EdgeThread) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body)["body"] == "hello"


def test_large_responses_and_responses_ended_by_close(edge: EdgeThread) -> None:
    port = edge.port(80)
    assert len(get(port, "/big?n=5000000").data) == 5_000_000
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /close?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        _status, headers, body = read_response(sock)
        assert headers["transfer-encoding"] == "chunked"  # re-framed for an HTTP/1.1 client
        assert body == b"until close\n" * 3
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[2] == b"m1 GET /again\n"
    out = raw(port, b"GET /close HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\nuntil close\n")


def test_server_sent_events_are_forwarded_as_they_come(
    edge: EdgeThread, backends: list[Backend]
) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=10) as sock:
        sock.sendall(b"GET /sse?n=2&wait=10 HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"data: 0" not in buf:  # arrives while the machine still holds the stream
            buf += sock.recv(4096)
        assert b"data: 1" not in buf
        backends[0].release()
        while not buf.endswith(b"0\r\n\r\n"):
            buf += sock.recv(4096)
        assert b"data: 1" in buf


def test_websocket_upgrade_relays_raw_bytes(edge: EdgeThread) -> None:
    with socket.create_connection(("127.0.0.1", edge.port(80)), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        head = buf.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 101")
        assert b"upgrade: websocket" in head
        sock.sendall(b"frames go both ways")
        got = b""
        while len(got) < len(b"FRAMES GO BOTH WAYS"):
            got += sock.recv(4096)
        assert got == b"FRAMES GO BOTH WAYS"
        assert edge.stats()["load"] == {"m1": 1}  # the socket holds its slot
    assert edge.settle()["load"] == {}


# --- machines going wrong -----------------------------------------------------------------


def test_a_refused_connection_is_retried_on_another_machine(
    tmp_path: Path, backends: list[Backend]
) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there
    fleet = StaticFleet("demo", [member("dead", dead_port), member("m1", backends[0].port)])
    toml = HTTP_SERVICE.format(force="false", ctype="connections", extra="")
    et = EdgeThread(fleet, plan(tmp_path, toml))
    try:
        for _ in range(6):
            resp = get(et.port(80), "/")
            assert resp.status == 200 and resp.getheader("X-Machine") == "m1"
        assert et.settle()["load"] == {}
    finally:
        et.close()


def test_no_machine_gets_a_page_naming_the_app_and_the_reason(
    tmp_path: Path, backends: list[Backend]
) -> None:
    toml = HTTP_SERVICE.format(force="false", ctype="requests", extra="auto_start_machines = false")
    fleet = StaticFleet("demo", [member("m1", backends[0].port, state="stopped")])
    et = EdgeThread(fleet, plan(tmp_path, toml))
    try:
        resp = get(et.port(80), "/")
        assert resp.status == 503
        assert b"demo" in resp.data and b"auto_start_machines is false" in resp.data
        assert resp.getheader("Content-Type").startswith("text/plain")
        resp = get(et.port(80), "/", headers={"Accept": "text/html"})
        assert resp.getheader("Content-Type").startswith("text/html")
        assert b"<h1>503 Service Unavailable</h1>" in resp.data
    finally:
        et.close()


def test_every_machine_refusing_is_a_502(tmp_path: Path) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    fleet = StaticFleet("demo", [member("dead", port)])
    et = EdgeThread(
        fleet, plan(tmp_path, HTTP_SERVICE.format(force="false", ctype="requests", extra=""))
    )
    try:
        resp = get(et.port(80), "/")
        assert resp.status == 502
        assert b"PC07" in resp.data
        assert et.settle()["load"] == {}
    finally:
        et.close()


class BootingFleet(StaticFleet):
    """`start` launches the machine's server a moment later, as a booting app would."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.started: list[Backend] = []

    async def start(self, machine_id: str) -> None:
        await super().start(machine_id)
        port = next(m for m in self._members if m.id == machine_id).ports[8080]
        threading.Timer(0.3, lambda: self.started.append(Backend(machine_id, port))).start()


def test_autostart_starts_a_stopped_machine_and_holds_the_request(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    fleet = BootingFleet("demo", [member("m1", port, state="stopped")])
    et = EdgeThread(
        fleet, plan(tmp_path, HTTP_SERVICE.format(force="false", ctype="requests", extra=""))
    )
    try:
        resp = get(et.port(80), "/woken")
        assert resp.status == 200 and resp.data == b"m1 GET /woken\n"
        assert fleet.members("app")[0].state == "started"
    finally:
        et.close()
        for b in fleet.started:
            b.close()


# --- routing ------------------------------------------------------------------------------


def test_force_instance_routes_to_that_machine(tmp_path: Path, backends: list[Backend]) -> None:
    et = start(tmp_path, backends)
    try:
        for _ in range(4):
            resp = get(et.port(80), "/", headers={"fly-force-instance-id": "m2"})
            assert resp.getheader("X-Machine") == "m2"
        resp = get(et.port(80), "/", headers={"fly-force-instance-id": "nope"})
        assert resp.status == 503 and b"machine nope does not exist" in resp.data
    finally:
        et.close()


def test_fly_replay_to_an_instance_carries_the_body(
    tmp_path: Path, backends: list[Backend]
) -> None:
    et = start(tmp_path, backends)
    try:
        for issuer, target in (("m1", "m2"), ("m2", "m1")):
            resp = get(
                et.port(80),
                f"/replay?to=instance={target}&serve_on={target}",
                method="POST",
                body=b"payload",
                headers={"fly-force-instance-id": issuer},
            )
            assert resp.status == 200
            assert json.loads(resp.data) == {"machine": target, "body": "payload"}
        src = [h for m, p, h, _ in backends[1].seen if "fly-replay-src" in h]
        assert src and src[0]["fly-replay-src"].startswith("instance=m1;region=local;t=")
    finally:
        et.close()


def test_fly_replay_elsewhere_fails_plainly_or_falls_back(
    tmp_path: Path, backends: list[Backend]
) -> None:
    et = start(tmp_path, backends[:1])
    try:
        resp = get(et.port(80), "/replay?to=region=syd")
        assert resp.status == 502 and b"region syd" in resp.data
        resp = get(et.port(80), "/replay?to=app=other")
        assert resp.status == 502 and b'"other"' in resp.data
        resp = get(et.port(80), "/replay?to=region=syd;fallback=prefer_self")
        assert resp.status == 200
        failed = [h for _, _, h, _ in backends[0].seen if "fly-replay-failed" in h]
        assert "reason=no_candidate" in failed[0]["fly-replay-failed"]
        assert "replay_source=m1" in failed[0]["fly-replay-failed"]
        assert et.settle()["load"] == {}
    finally:
        et.close()


def test_least_loaded_machine_gets_the_next_request(
    tmp_path: Path, backends: list[Backend]
) -> None:
    et = start(tmp_path, backends)
    try:
        holder = threading.Thread(
            target=get, args=(et.port(80), "/hold"), kwargs={"headers": {}}, daemon=True
        )
        holder.start()
        busy = None
        while busy is None:
            busy = next((b for b in backends if b.is_held(0.01)), None)
        idle = next(b for b in backends if b is not busy)
        for _ in range(4):
            assert get(et.port(80), "/").getheader("X-Machine") == idle.name
        busy.release()
        holder.join(5)
        assert et.settle()["load"] == {}
    finally:
        et.close()


def test_hard_limit_queues_then_answers_503(tmp_path: Path, backends: list[Backend]) -> None:
    toml = HTTP_SERVICE.format(force="false", ctype="requests", extra="") + "    hard_limit = 1\n"
    et = start(tmp_path, backends[:1], toml, limits=Limits(queue_timeout_s=0.3))
    try:
        results: list[int] = []
        holder = threading.Thread(
            target=lambda: results.append(get(et.port(80), "/hold").status), daemon=True
        )
        holder.start()
        backends[0].wait_held()
        resp = get(et.port(80), "/")
        assert resp.status == 503 and b"hard_limit (1)" in resp.data
        waiter = threading.Thread(
            target=lambda: results.append(get(et.port(80), "/queued").status), daemon=True
        )
        et.edge.limits.queue_timeout_s = 10.0
        waiter.start()
        backends[0].release()
        holder.join(5)
        waiter.join(5)
        assert results == [200, 200]
        assert et.settle()["load"] == {}
    finally:
        et.close()


def test_drain_stops_new_requests_and_waits_for_in_flight(
    tmp_path: Path, backends: list[Backend]
) -> None:
    et = start(tmp_path, backends)
    try:
        statuses: list[int] = []
        holder = threading.Thread(
            target=lambda: statuses.append(
                get(et.port(80), "/hold", headers={"fly-force-instance-id": "m1"}).status
            ),
            daemon=True,
        )
        holder.start()
        backends[0].wait_held()
        assert et.call(lambda: et.edge.load("m1")) == 1
        import asyncio

        drained = asyncio.run_coroutine_threadsafe(et.edge.drain("m1", 10.0), et.loop)
        for _ in range(4):
            assert get(et.port(80), "/").getheader("X-Machine") == "m2"
        assert not drained.done()
        backends[0].release()
        drained.result(10)
        holder.join(5)
        assert statuses == [200]
        assert et.call(lambda: et.edge.load("m1")) == 0
        et.set_state("m1", "stopped")  # the runtime stops it: the drain mark goes
        et.set_state("m1", "started")
        assert "m1" in {get(et.port(80), "/").getheader("X-Machine") for _ in range(20)}
    finally:
        et.close()


def test_idle_keep_alive_connections_are_closed(tmp_path: Path, backends: list[Backend]) -> None:
    toml = IDLE_1S
    et = start(tmp_path, backends[:1], toml)
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
            assert sock.recv(100) == b""  # closed by the edge once idle
        assert et.settle()["connections"] == 0
    finally:
        et.close()


def test_a_machine_that_never_answers_gets_the_timeout_error(tmp_path: Path) -> None:
    """The wait for a response head is bounded by http_options.idle_timeout (1 s here):
    the client gets a 504 naming the machine, and the connection goes on."""
    machine = RawMachine()
    toml = IDLE_1S
    et = EdgeThread(StaticFleet("demo", [member("m1", machine.port)]), plan(tmp_path, toml))
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=30) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(sock)
            assert status == 504
            assert b"machine m1 sent no response within 1 s (PC05)" in body
        assert et.settle()["load"] == {}
    finally:
        et.close()
        machine.close()


def test_a_stream_is_not_cut_by_the_response_timeout(
    tmp_path: Path, backends: list[Backend]
) -> None:
    """Once the head came, a quiet stream outlives idle_timeout (the SSE waits 2.5 s)."""
    toml = IDLE_1S
    et = start(tmp_path, backends[:1], toml)
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=30) as sock:
            sock.sendall(b"GET /sse?n=2&wait=2.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while not buf.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(4096)
                assert chunk, f"the edge cut the stream after {buf!r}"
                buf += chunk
            assert b"data: 1" in buf
    finally:
        et.close()


class FakeStatics:
    """The statics hook: answers /static/hello.txt, passes everything else on."""

    def match(self, method: str, raw_path: bytes, headers: list) -> object | None:
        from taxiway.edge.statics import StaticResponse

        if raw_path != b"/static/hello.txt":
            return None
        return StaticResponse(
            200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"6")], b"hello\n"
        )


def test_statics_answer_before_the_machine(tmp_path: Path, backends: list[Backend]) -> None:
    et = start(tmp_path, backends[:1], statics=FakeStatics())
    try:
        resp = get(et.port(80), "/static/hello.txt")
        assert resp.data == b"hello\n" and resp.getheader("Fly-Request-Id")
        assert get(et.port(80), "/static/other").data == b"m1 GET /static/other\n"
        assert [p for _, p, _, _ in backends[0].seen] == ["/static/other"]
    finally:
        et.close()


class OneShotServer(RawMachine):
    """Answers the first request of each connection, then hangs up on the next one without
    a word: a keep-alive timeout on the machine's side, at the worst moment."""

    def handle(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            conn.recv(4096)  # the next request: dropped


def test_a_pooled_connection_the_machine_closed_is_retried(tmp_path: Path) -> None:
    server = OneShotServer()
    et = EdgeThread(
        StaticFleet("demo", [member("m1", server.port)]),
        plan(tmp_path, HTTP_SERVICE.format(force="false", ctype="requests", extra="")),
    )
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=5) as sock:
            for i in range(4):
                sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
                assert read_response(sock)[:3:2] == (200, b"ok\n"), i
        assert server.connections >= 4
        assert et.settle()["load"] == {}
    finally:
        et.close()
        server.close()


def test_real_statics_stream_large_files(tmp_path: Path, backends: list[Backend]) -> None:
    from taxiway.edge.statics import Statics
    from taxiway.plan.machine import StaticSpec

    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "big.bin").write_bytes(bytes(range(256)) * 1000)  # streamed
    statics = Statics(
        [StaticSpec(guest_path="/app/public", url_prefix="/files")],
        app_dir=tmp_path,
        workdir="/app",
    )
    et = start(tmp_path, backends[:1], statics=statics)
    try:
        with socket.create_connection(("127.0.0.1", et.port(80)), timeout=5) as sock:
            for _ in range(2):
                sock.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = read_response(sock)
                assert status == 200 and body == bytes(range(256)) * 1000
                assert headers["fly-request-id"]
            sock.sendall(b"GET /files/missing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[2] == b"m1 GET /files/missing\n"
    finally:
        et.close()
