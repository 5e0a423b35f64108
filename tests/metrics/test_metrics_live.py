"""`/metrics` of a running app (`taxiway up -d`, process driver): the platform's series
move with real requests through the edge, the app's own [metrics] endpoint is scraped
and relabelled, and bad endpoints are counted without slowing the API."""

from __future__ import annotations

import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics_support import parsed, samples, scrape_socket, value, wait_for

from cli_runner import run_taxiway as taxiway
from taxiway.errors import TaxiwayError

APP = r"""
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
import os, threading

MODE, METRICS_PORT = sys.argv[1], int(sys.argv[2])


class App(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path == "/fail" else 200
        body = b"ok\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Metrics(App):
    def do_GET(self):
        if MODE == "hang":
            time.sleep(3600)
        if MODE == "huge":
            body = b"# TYPE big gauge\n" + b"big 1\n" * 3_000_000
        elif MODE == "garbage":
            body = b"<html>this is not the text format</html>\n"
        else:
            body = (
                b"# HELP myapp_jobs_total Jobs done\n# TYPE myapp_jobs_total counter\n"
                b'myapp_jobs_total{instance="mine",app="other",queue="a"} 7\n'
            )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


metrics = ThreadingHTTPServer(("0.0.0.0", METRICS_PORT), Metrics)
threading.Thread(target=metrics.serve_forever, daemon=True).start()
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), App).serve_forever()
"""

FLY_TOML = """
app = "metricslive"

[processes]
web = "{python} app.py {mode} {metrics_port}"
once = "{python} -c 'import sys; sys.exit(3)'"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "off"

[[restart]]
policy = "never"
processes = ["once"]

[metrics]
port = {metrics_port}
path = "/metrics"
processes = ["web"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app(folder: Path, mode: str) -> Path:
    (folder / "app.py").write_text(APP)
    (folder / "fly.toml").write_text(
        FLY_TOML.format(python=sys.executable, mode=mode, metrics_port=free_port())
    )
    return folder


def up(folder: Path, *args: str, interval: str = "0.3") -> None:
    done = taxiway(folder, "up", "-d", *args, env={"TAXIWAY_METRICS_INTERVAL_S": interval})
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    taxiway(tmp_path, "down")


def edge_url(folder: Path) -> str:
    import json

    status = json.loads(taxiway(folder, "status", "--json").stdout)
    plain = next(b for b in status["edge"] if b["port"] == 80)
    return f"http://{plain['address']}"


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()  # the whole response: it is counted once it ended
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def machine_ids(folder: Path, group: str) -> list[str]:
    import json

    status = json.loads(taxiway(folder, "status", "--json").stdout)
    return [m["id"] for m in status["machines"] if m["group"] == group]


def test_series_move_with_requests_and_the_apps_own_metrics_are_relabelled(folder: Path) -> None:
    make_app(folder, "good")
    port = free_port()
    up(folder, "--metrics-port", str(port))
    url = edge_url(folder)
    (web,) = machine_ids(folder, "web")
    (once,) = machine_ids(folder, "once")
    before = scrape_socket(folder)
    base_200 = value(before, "fly_edge_http_responses_count", status="200")
    for _ in range(5):
        assert get(url + "/") == 200
    for _ in range(2):
        assert get(url + "/fail") == 500
    after = scrape_socket(folder)
    families = parsed(after)

    # the edge: responses by status, a histogram, connections, bytes
    edge_lines = [line for line in after.splitlines() if "fly_edge_http_responses" in line]
    assert value(after, "fly_edge_http_responses_count", status="200") == base_200 + 5, edge_lines
    assert value(after, "fly_edge_http_responses_count", status="500") == 2
    assert families["fly_edge_http_responses_count"].type == "counter"
    assert families["fly_edge_http_response_time_seconds"].type == "histogram"
    assert value(after, "fly_edge_http_response_time_seconds_count", status="500") == 2
    assert value(after, "fly_edge_http_response_time_seconds_bucket", status="500", le="+Inf") == 2
    assert value(after, "fly_edge_tcp_connects_count") >= 7
    assert value(after, "fly_edge_data_out") > value(before, "fly_edge_data_out")
    (edge_sample,) = samples(after, "fly_edge_data_in")
    assert set(edge_sample.labels) == {"app", "region", "host"}
    assert edge_sample.labels["app"] == "metricslive"
    assert len(edge_sample.labels["host"]) == 4

    # the app: per machine, with instance and process_group
    assert value(after, "fly_app_http_responses_count", instance=web, status="500") == 2
    assert value(after, "fly_app_http_responses_count", instance=web, process_group="web") >= 7
    assert value(after, "fly_app_concurrency", instance=web) == 0
    assert value(after, "fly_app_tcp_connects_count", instance=web) >= 1
    assert value(after, "fly_app_connect_time_seconds_count", instance=web) >= 1

    # the machines
    assert value(after, "fly_instance_up", instance=web) == 1
    assert value(after, "fly_instance_memory_mem_total", instance=web) == 256 * 1024 * 1024
    used = value(after, "fly_instance_memory_mem_total", instance=web) - value(
        after, "fly_instance_memory_mem_available", instance=web
    )
    assert used > 1024 * 1024  # a Python process's RSS
    assert families["fly_instance_cpu"].type == "counter"
    assert value(after, "fly_instance_cpu", instance=web, mode="user") >= 0
    assert samples(after, "fly_instance_load_average")

    # a machine that exited with 3 and is not restarted
    def exited() -> str | None:
        text = scrape_socket(folder)
        return text if value(text, "fly_instance_exit_code", instance=once) == 3 else None

    text = wait_for(exited)
    assert text, "fly_instance_exit_code never showed 3"
    assert value(text, "fly_instance_exit_oom", instance=once) == 0
    assert not samples(text, "fly_instance_up") or all(
        s.labels["instance"] != once for s in samples(text, "fly_instance_up")
    )

    # the app's own metrics, scraped and relabelled: the platform's labels win
    def scraped() -> list:
        return samples(scrape_socket(folder), "myapp_jobs_total")

    found = wait_for(scraped)
    assert found, "the [metrics] endpoint was never re-exported"
    (jobs,) = found
    assert jobs.value == 7
    assert jobs.labels["instance"] == web
    assert jobs.labels["app"] == "metricslive"
    assert jobs.labels["queue"] == "a"
    assert jobs.labels["process_group"] == "web"

    # --metrics-port: the same text over plain HTTP on loopback
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        over_port = response.read().decode()
    assert value(over_port, "fly_edge_http_responses_count", status="500") == 2
    assert value(over_port, "myapp_jobs_total", instance=web) == 7


@pytest.mark.parametrize(
    ("mode", "reason"), [("hang", "timeout"), ("huge", "too_large"), ("garbage", "parse")]
)
def test_a_bad_endpoint_is_counted_and_never_slows_the_api(
    folder: Path, mode: str, reason: str
) -> None:
    make_app(folder, mode)
    up(folder, interval="3")  # scrapes time out after 3 s
    (web,) = machine_ids(folder, "web")

    def failed() -> float:
        return value(
            scrape_socket(folder),
            "taxiway_metrics_scrape_failures_count",
            instance=web,
            reason=reason,
        )

    assert wait_for(failed, 30) >= 1
    # The next scrape is under way (a hanging endpoint holds it for its whole timeout):
    # /metrics answers meanwhile, without waiting for it.
    started = time.monotonic()
    text = scrape_socket(folder)
    took = time.monotonic() - started
    print(f"/metrics took {took * 1000:.1f} ms while the {mode} endpoint was scraped")
    assert took < 3.0
    assert not samples(text, "big") and not samples(text, "myapp_jobs_total")


def test_the_metrics_port_is_loopback_only() -> None:
    from taxiway.metrics.port import check_loopback

    check_loopback("127.0.0.1")
    check_loopback("::1")
    with pytest.raises(TaxiwayError, match="loopback"):
        check_loopback("0.0.0.0")


WRITER = """
import os, sys, time
with open(os.path.join(sys.argv[1], "blob"), "wb") as f:
    f.write(os.urandom(4 * 1024 * 1024))
    f.flush()
    os.fsync(f.fileno())
time.sleep(3600)
"""


def test_volume_series_describe_the_volume_folder(folder: Path) -> None:
    import json
    import uuid

    destination = Path(f"/tmp/taxiway-metrics-volume-{uuid.uuid4().hex[:8]}")
    (folder / "writer.py").write_text(WRITER)
    (folder / "fly.toml").write_text(
        'app = "metricsvol"\n'
        f'[processes]\ndb = "{sys.executable} writer.py {destination}"\n'
        f'[[mounts]]\nsource = "data"\ndestination = "{destination}"\ninitial_size = "1gb"\n'
    )
    try:
        up(folder)
        volumes = json.loads(taxiway(folder, "volumes", "list", "--json").stdout)
        (volume,) = volumes
        volume_id = volume["id"]

        def filled() -> str | None:
            text = scrape_socket(folder)
            return text if value(text, "fly_volume_used_pct", id=volume_id) > 0.3 else None

        text = wait_for(filled)
        assert text, "fly_volume_used_pct never showed the 4 MB written"
        assert value(text, "fly_volume_size_bytes", id=volume_id) == 1024**3
        # 4 MiB of 1 GiB is 0.39 %
        assert value(text, "fly_volume_used_pct", id=volume_id) < 1
        (size,) = samples(text, "fly_volume_size_bytes")
        assert "instance" not in size.labels and size.labels["app"] == "metricsvol"
    finally:
        taxiway(folder, "down")
        if destination.is_dir():
            destination.rmdir()


def _namespace_missing() -> str | None:
    from taxiway.runtime.drivers import unusable_reason

    return unusable_reason()


@pytest.mark.skipif(
    _namespace_missing() is not None,
    reason=f"the namespace driver needs {_namespace_missing()}",
)
def test_namespace_machines_are_measured_from_their_cgroup_and_network(folder: Path) -> None:
    make_app(folder, "good")
    done = taxiway(
        folder,
        "up",
        "-d",
        "--driver",
        "namespace",
        env={"TAXIWAY_METRICS_INTERVAL_S": "0.3"},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (web,) = machine_ids(folder, "web")
    url = edge_url(folder)
    for _ in range(3):
        assert get(url + "/") == 200
    text = scrape_socket(folder)
    total = value(text, "fly_instance_memory_mem_total", instance=web)
    assert total == 256 * 1024 * 1024  # the cgroup's limit: [[vm]] memory
    assert 0 < total - value(text, "fly_instance_memory_mem_available", instance=web) < total
    assert value(text, "fly_instance_net_recv_bytes", instance=web) > 0  # its own netns
    assert value(text, "fly_app_http_responses_count", instance=web, status="200") == 3
