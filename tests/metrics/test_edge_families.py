"""The edge's counts through real sockets (an `Edge` over real backends), turned into the
platform's families and read back with prometheus_client's parser."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "edge"))

from edge_support import Backend, EdgeThread, get, member, plan
from prometheus_client.parser import text_string_to_metric_families

from taxiway.edge.fleet import StaticFleet
from taxiway.metrics.edge_families import edge_families
from taxiway.metrics.exposition import render
from taxiway.metrics.snapshot_view import quantile

TOML = """
app = "fam"
[[services]]
  internal_port = 8080
  protocol = "tcp"
  [[services.ports]]
    port = 80
    handlers = ["http"]
[[services]]
  internal_port = 9090
  protocol = "tcp"
  [[services.ports]]
    port = 9000
"""


def samples(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (name, name + "_total") and all(
                s.labels.get(k) == v for k, v in labels.items()
            ):
                total += s.value
    return total


@pytest.fixture
def backend():
    b = Backend("m1")
    yield b
    b.close()


def test_responses_connections_and_bytes_are_counted(tmp_path: Path, backend: Backend) -> None:
    echo = socket.create_server(("127.0.0.1", 0))
    echo_port = echo.getsockname()[1]
    m1 = member("m1", backend.port)
    m1.ports[9090] = echo_port
    fleet = StaticFleet("fam", [m1])
    et = EdgeThread(fleet, plan(tmp_path, TOML))
    try:
        for _ in range(3):
            assert get(et.port(80), "/").status == 200
        with socket.create_connection(("127.0.0.1", et.port(9000)), timeout=5) as c:
            conn, _ = echo.accept()
            c.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.sendall(b"pong!")
            assert c.recv(5) == b"pong!"
            conn.close()
        et.settle()
        text = et.call(
            lambda: render(
                edge_families(
                    et.edge.counts, app="fam", region="local", groups={"m1": "app"}, load={}
                )
            ).decode()
        )
    finally:
        et.close()
        echo.close()
    assert samples(text, "fly_edge_http_responses_count", status="200") == 3
    assert samples(text, "fly_edge_http_response_time_seconds_count", status="200") == 3
    assert samples(text, "fly_app_http_responses_count", instance="m1", status="200") == 3
    assert samples(text, "fly_app_http_response_time_seconds_bucket", le="+Inf") == 3
    assert samples(text, "fly_edge_tcp_connects_count") == 4  # three http, one raw tcp
    assert samples(text, "fly_edge_data_in") >= 4
    assert samples(text, "fly_edge_data_out") >= 5
    assert samples(text, "fly_app_tcp_connects_count", instance="m1", process_group="app") == 4
    assert samples(text, "fly_app_connect_time_seconds_count", instance="m1") == 4
    # the text format keeps the platform's names (no _total added in TYPE lines)
    assert "# TYPE fly_edge_http_responses_count counter" in text
    assert "# TYPE fly_edge_data_out counter" in text


def test_an_edge_error_is_an_edge_response_without_a_machine(tmp_path: Path) -> None:
    fleet = StaticFleet("fam", [member("m1", 1, state="stopped")])
    et = EdgeThread(
        fleet,
        plan(
            tmp_path,
            TOML.replace(
                '"tcp"\n  [[services.ports]]\n    port = 80',
                '"tcp"\n  auto_start_machines = false\n  [[services.ports]]\n    port = 80',
            ),
        ),
    )
    try:
        status = get(et.port(80), "/").status
        text = et.call(
            lambda: render(
                edge_families(
                    et.edge.counts, app="fam", region="local", groups={"m1": "app"}, load={}
                )
            ).decode()
        )
    finally:
        et.close()
    assert status >= 500
    assert samples(text, "fly_edge_http_responses_count", status=str(status)) == 1
    assert samples(text, "fly_app_http_responses_count") == 0


def test_quantiles_interpolate_within_a_bucket() -> None:
    counts = [0] * 14
    counts[4] = 10  # ten answers between 0.05 s and 0.1 s
    assert quantile(counts, 0.5) == pytest.approx(0.075)
    assert quantile([0] * 14, 0.5) is None


def test_the_dashboards_snapshot_counts_per_service(tmp_path: Path, backend: Backend) -> None:
    import json
    from types import SimpleNamespace

    from taxiway.metrics.snapshot_view import snapshot

    fleet = StaticFleet("fam", [member("m1", backend.port)])
    et = EdgeThread(fleet, plan(tmp_path, TOML))
    try:
        for _ in range(4):
            assert get(et.port(80), "/").status == 200
        et.settle()
        runtime = SimpleNamespace(
            metrics=SimpleNamespace(edge=lambda: et.edge, instances=None), machines={}
        )
        data = et.call(lambda: snapshot(runtime))  # type: ignore[arg-type]
    finally:
        et.close()
    json.dumps(data)  # JSON-able as it is
    (http,) = [s for s in data["services"] if s["requests"]]
    assert http["responses"] == {"200": 4}
    assert http["errors"] == 0
    assert sum(http["latency_buckets"]) == 4
    assert 0 < http["p50_s"] <= http["p99_s"]
    assert http["bytes_out"] > 0
    assert data["bounds"][-1] == 60.0
