"""`taxiway up --driver docker` end to end, as a user runs an app that deploys to Fly.io:
the Dockerfile is built (its ARGs from [build.args], a build step that makes the
statics, an ENTRYPOINT at a path only the image has), machines run the image with a
volume, the release command runs in the image, the edge serves the image's statics,
deploys build a new image and a rollback brings the old code back, a failed build
leaves the running release alone, and nothing is left in the engine after `down` or
after the daemon was killed. Skips where no engine answers or the base image is absent
(`bash .ci/engine` makes both; CI runs it)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from engine_support import skip_without_image


@pytest.fixture(autouse=True)
def _needs_the_python_image() -> None:
    skip_without_image("python:3.12-slim")

DOCKERFILE = """\
FROM python:3.12-slim
ARG GREETING=hello
ENV GREETING=$GREETING PYTHONUNBUFFERED=1
WORKDIR /app
COPY . .
RUN mkdir -p /app/static && echo "made in the image" > /app/static/hello.txt
COPY entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["python3", "web.py"]
"""

ENTRYPOINT = """\
#!/bin/sh
echo "entrypoint ran"
exec "$@"
"""

WEB = """\
import os, pathlib, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = "{version}"
print("web", VERSION, "on", os.environ["FLY_PRIVATE_IP"], flush=True)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        hits = pathlib.Path("/data/hits")  # on the volume: it outlives every image
        count = int(hits.read_text()) + 1 if hits.exists() else 1
        hits.write_text(str(count))
        body = f"{{os.environ['GREETING']}} {{VERSION}} hit {{count}}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
Server(("::", 8080), H).serve_forever()
"""

MIGRATE = """\
import os, pathlib
# the release command runs in the image, without the app's volumes (as on the platform)
print("migrated", os.environ["GREETING"], pathlib.Path("/data").exists(), flush=True)
"""

FLY_TOML = """\
app = "{app}"
kill_timeout = 5

[build.args]
GREETING = "hi"

[deploy]
release_command = "python3 migrate.py"

[mounts]
source = "data"
destination = "/data"

[http_service]
internal_port = 8080
auto_stop_machines = "off"

[[statics]]
guest_path = "/app/static"
url_prefix = "/static/"
"""

DOCKER = {"TAXIWAY_DRIVER": "docker"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "entrypoint.sh").write_text(ENTRYPOINT)
    (folder / "entrypoint.sh").chmod(0o755)
    (folder / "web.py").write_text(WEB.format(version="one"))
    (folder / "migrate.py").write_text(MIGRATE)
    (folder / "fly.toml").write_text(FLY_TOML.format(app=f"dk{uuid.uuid4().hex[:6]}"))
    yield folder
    taxiway(folder, "down", timeout=120)
    _remove_images(folder)


def _remove_images(folder: Path) -> None:
    import docker

    client = docker.from_env()
    for image in client.images.list(filters={"label": f"taxiway.scope={_scope_of(folder)}"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)


def _scope_of(folder: Path) -> str:
    from taxiway.config.loader import load_config
    from taxiway.config.names import app_name_for
    from taxiway.runtime.scope import scope_for

    loaded = load_config(folder / "fly.toml")
    return scope_for(app_name_for(folder / "fly.toml", loaded.config.app), folder / ".taxiway")


def status(folder: Path) -> dict:
    result = taxiway(folder, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def edge_url(folder: Path) -> str:
    edge = next(b for b in status(folder)["edge"] if b["port"] == 80)
    return f"http://{edge['address']}"


def get(url: str, want: str | None = None, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
            if want is None or want in body:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} answered {body!r}, not {want!r}")


def containers(folder: Path) -> list:
    import docker

    client = docker.from_env()
    return client.containers.list(all=True, filters={"label": f"taxiway.scope={_scope_of(folder)}"})


def test_an_app_runs_from_its_image_deploys_and_rolls_back(app: Path) -> None:
    up = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "STEP" in up.stdout.upper()  # the build streamed as it ran (Docker: Step, Podman: STEP)

    st = status(app)
    assert st["driver"] == "docker"
    base = edge_url(app)
    assert get(base + "/") == "hi one hit 1"  # [build.args] reached the build
    ran = taxiway(app, "logs", "--group", "fly_app_release_command")
    assert "migrated hi False" in ran.stdout  # in the image, without the volume
    # the statics are the image's (a build step made them; the folder has none)
    assert get(base + "/static/hello.txt") == "made in the image\n"
    assert not (app / "static").exists()

    machine = st["machines"][0]
    assert machine["private_ip"].startswith("fdaa:")
    logs = taxiway(app, "logs")
    assert "entrypoint ran" in logs.stdout and f"on {machine['private_ip']}" in logs.stdout
    inside = taxiway(app, "machine", "exec", machine["id"], "hostname")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == machine["id"]

    first = json.loads(taxiway(app, "releases", "--json").stdout)[0]
    assert first["image_id"]

    (app / "web.py").write_text(WEB.format(version="two"))
    deployed = taxiway(app, "deploy", timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert get(base + "/", "two") == "hi two hit 2"  # a new image, the same volume
    second = json.loads(taxiway(app, "releases", "--json").stdout)[0]
    assert second["image_id"] and second["image_id"] != first["image_id"]

    back = taxiway(app, "releases", "rollback", timeout=300)
    assert back.returncode == 0, back.stdout + back.stderr
    assert get(base + "/", "one") == "hi one hit 3"  # the old code is back

    down = taxiway(app, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert containers(app) == []
    assert (app / ".taxiway" / "volumes").is_dir()  # the volume stays


def test_a_failed_build_leaves_the_running_release_alone(app: Path) -> None:
    up = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    base = edge_url(app)
    assert get(base + "/") == "hi one hit 1"

    (app / "Dockerfile").write_text(DOCKERFILE.replace("CMD", "RUN exit 3\nCMD"))
    (app / "web.py").write_text(WEB.format(version="two"))
    deployed = taxiway(app, "deploy", timeout=300)
    assert deployed.returncode == 1
    error = deployed.stderr.strip().splitlines()[-1]
    # Docker: "… returned a non-zero code: 3"; Podman: "… while running runtime: exit status 3".
    assert "failed" in error and ("non-zero code: 3" in error or "exit status 3" in error), error
    assert get(base + "/") == "hi one hit 2"
    releases = json.loads(taxiway(app, "releases", "--json").stdout)
    assert releases[0]["status"] == "failed" and releases[1]["current"]


def test_nothing_is_left_after_the_daemon_was_killed(app: Path) -> None:
    up = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    pid = int((app / ".taxiway" / "daemon.lock").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert len(containers(app)) == 1  # its machine runs on without it

    again = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "image unchanged" in again.stdout
    running = [c for c in containers(app) if c.status == "running"]
    assert len(running) == 1 and len(containers(app)) == 1
    assert get(edge_url(app) + "/") == "hi one hit 1"

    down = taxiway(app, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert containers(app) == []


def test_docker_without_an_engine_is_one_sentence(app: Path) -> None:
    result = taxiway(
        app, "up", "-d", env={**DOCKER, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no Docker engine answers at unix:///nonexistent/docker.sock" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_picks_docker_for_an_app_with_a_dockerfile(app: Path) -> None:
    up = taxiway(app, "up", "-d", env={"TAXIWAY_DRIVER": "auto"}, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    st = status(app)
    assert st["driver"] == "docker"
    assert st["driver_reason"] == "auto: the app has an image and an engine answers"
