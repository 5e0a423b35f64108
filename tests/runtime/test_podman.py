"""The docker driver against Podman's Docker-compatible API (`podman system service`),
end to end: one small app is started with `up -d --driver docker`, answers through the
edge, runs a command with `machine exec`, deploys new code, and `down` leaves none of its
containers in Podman.

Podman's socket is what `bash .ci/podman` starts (unix:///run/taxiway-podman.sock, or
TAXIWAY_PODMAN_SOCKET). DOCKER_HOST points at it for the taxiway subprocesses only: the
test process's own engine client (cached per process) stays on the default engine."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_taxiway

SOCKET = os.environ.get("TAXIWAY_PODMAN_SOCKET", "/run/taxiway-podman.sock")
PODMAN = {"DOCKER_HOST": f"unix://{SOCKET}"}
BASE_IMAGE = "python:3.12-slim"
HOW = "run `bash .ci/podman` (as root) to install Podman and start its service"

DOCKERFILE = """\
FROM python:3.12-slim
WORKDIR /app
COPY web.py .
CMD ["python3", "-u", "web.py"]
"""

WEB = """\
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"version {version}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
print("listening", flush=True)
Server(("::", 8080), H).serve_forever()
"""

FLY_TOML = """\
app = "{app}"
kill_timeout = 5

[http_service]
internal_port = 8080
auto_stop_machines = "off"
"""


def podman() -> Any:
    """A client of Podman's service, or a skip saying how to get one with the image."""
    if not os.path.exists(SOCKET):
        pytest.skip(f"no Podman service at {SOCKET}; {HOW}")
    try:
        import docker
    except ImportError:
        pytest.skip("the docker SDK is not installed (pip install 'docker>=7')")
    try:
        client = docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=30)
        client.ping()
    except Exception as exc:
        pytest.skip(f"the Podman service at {SOCKET} does not answer ({exc}); {HOW}")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"Podman has no {BASE_IMAGE}; {HOW} (it copies it from Docker's engine)")
    return client


@pytest.fixture
def engine() -> Iterator[Any]:
    client = podman()
    yield client
    client.close()


@pytest.fixture
def app(tmp_path: Path, engine: Any) -> Iterator[Path]:
    folder = tmp_path / "pod"
    folder.mkdir()
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "web.py").write_text(WEB.format(version="one"))
    (folder / "fly.toml").write_text(FLY_TOML.format(app=f"pm{uuid.uuid4().hex[:6]}"))
    yield folder
    run_taxiway(folder, "down", env=PODMAN, timeout=120)
    label = f"taxiway.scope={scope_of(folder)}"
    for container in engine.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for image in engine.images.list(filters={"label": label}):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


def scope_of(folder: Path) -> str:
    from taxiway.config.loader import load_config
    from taxiway.config.names import app_name_for
    from taxiway.runtime.scope import scope_for

    loaded = load_config(folder / "fly.toml")
    return scope_for(app_name_for(folder / "fly.toml", loaded.config.app), folder / ".taxiway")


def get(url: str, want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
            if want in body:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} answered {body!r}, not {want!r}")


def test_an_app_runs_on_podman_end_to_end(app: Path, engine: Any) -> None:
    up = run_taxiway(app, "up", "-d", "--driver", "docker", env=PODMAN, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(run_taxiway(app, "status", "--json", env=PODMAN).stdout)
    assert status["driver"] == "docker"
    edge = next(b for b in status["edge"] if b["port"] == 80)
    assert get(f"http://{edge['address']}/", "version one") == "version one"

    label = {"label": f"taxiway.scope={scope_of(app)}"}
    running = engine.containers.list(filters=label)
    assert len(running) == 1  # in Podman, not in Docker's engine

    machine = status["machines"][0]
    inside = run_taxiway(app, "machine", "exec", machine["id"], "hostname", env=PODMAN)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == machine["id"]

    (app / "web.py").write_text(WEB.format(version="two"))
    deployed = run_taxiway(app, "deploy", env=PODMAN, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert get(f"http://{edge['address']}/", "version two") == "version two"

    down = run_taxiway(app, "down", env=PODMAN, timeout=120)
    assert down.returncode == 0, down.stderr
    assert engine.containers.list(all=True, filters=label) == []
