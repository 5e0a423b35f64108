"""`/metrics` with the docker driver: a machine's memory, CPU and network come from the
engine's stats, and its [metrics] endpoint is scraped at the container's address. Skips
where no engine answers or the base image is absent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from metrics_support import samples, scrape_socket, value, wait_for

from cli_runner import run_taxiway as taxiway
from engine_support import skip_without_image

DOCKERFILE = """\
FROM python:3.12-slim
WORKDIR /app
COPY app.py .
CMD ["python3", "-u", "app.py"]
"""

APP = """\
import socket, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class App(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\\n"
        if self.server.server_address[1] == 9091:
            body = b'# TYPE myapp_up gauge\\nmyapp_up{instance="x"} 1\\n'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6

threading.Thread(target=Server(("::", 9091), App).serve_forever, daemon=True).start()
Server(("::", 8080), App).serve_forever()
"""

FLY_TOML = """\
app = "{app}"

[http_service]
internal_port = 8080
auto_stop_machines = "off"

[metrics]
port = 9091
path = "/metrics"
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    skip_without_image("python:3.12-slim")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(app=f"metricsdock{uuid.uuid4().hex[:6]}"))
    yield tmp_path
    taxiway(tmp_path, "down", timeout=120)


def test_docker_machines_are_measured_through_the_engine(app: Path) -> None:
    done = taxiway(
        app,
        "up",
        "-d",
        "--driver",
        "docker",
        timeout=600,
        env={"TAXIWAY_METRICS_INTERVAL_S": "1"},
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (machine,) = json.loads(taxiway(app, "status", "--json").stdout)["machines"]
    web = machine["id"]

    def measured() -> str | None:
        text = scrape_socket(app)
        ready = samples(text, "fly_instance_memory_mem_available") and samples(text, "myapp_up")
        return text if ready else None

    text = wait_for(measured, 60)
    assert text, "the engine's stats or the app's metrics never arrived"
    total = value(text, "fly_instance_memory_mem_total", instance=web)
    available = value(text, "fly_instance_memory_mem_available", instance=web)
    assert 0 < total - available < total  # a Python process uses some of it
    assert value(text, "fly_instance_cpu", instance=web, mode="user") > 0
    assert value(text, "fly_instance_net_recv_bytes", instance=web) > 0
    assert value(text, "myapp_up", instance=web, process_group="app") == 1
    assert value(text, "fly_instance_up", instance=web) == 1
