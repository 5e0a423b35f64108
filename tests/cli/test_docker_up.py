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
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from docker_apps import DOCKER, containers, edge_url, get, remove_images, scope_of, status
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
    remove_images(folder)


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
    env = taxiway(app, "machine", "exec", machine["id"], "env").stdout.splitlines()
    assert f"FLY_MACHINE_ID={machine['id']}" in env
    assert not [line for line in env if line.startswith("PORT=")]  # the platform sets none

    first = json.loads(taxiway(app, "releases", "--json").stdout)[0]
    assert first["image_id"]

    # A client connected to the edge before the deploy keeps its connection: the new
    # image's statics don't make the edge rebind its listeners.
    import http.client

    kept = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    kept.request("GET", "/static/hello.txt")
    assert kept.getresponse().read() == b"made in the image\n"

    (app / "web.py").write_text(WEB.format(version="two"))
    deployed = taxiway(app, "deploy", timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert edge_url(app) == base
    kept.request("GET", "/")
    assert kept.getresponse().read() == b"hi two hit 2"  # a new image, the same volume
    kept.close()
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

    pid = int((app / ".taxiway" / "daemon.lock").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)  # and `down` with no daemon cleans up as well
    time.sleep(0.5)
    down = taxiway(app, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert containers(app) == []
    import docker

    assert docker.from_env().networks.list(names=[f"taxiway-{scope_of(app)}"]) == []


def test_the_console_runs_in_the_image(app: Path) -> None:
    up = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    probe = "python3 -c 'import os; print(os.getcwd(), os.environ[\"GREETING\"])'"
    ran = taxiway(app, "console", "--command", probe, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # the entrypoint ran first, in the image's WORKDIR, with the image's ENV
    assert ran.stdout.splitlines()[-2:] == ["entrypoint ran", "/app hi"]


def test_a_prebuilt_image_runs_and_a_missing_one_is_one_sentence(tmp_path: Path) -> None:
    import docker

    client = docker.from_env()
    tag = f"taxiway-test/prebuilt:{uuid.uuid4().hex[:8]}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.12-slim\nRUN echo prebuilt > /index.html\n"
        'CMD ["python3", "-m", "http.server", "8080", "--directory", "/"]\n'
    )
    client.images.build(path=str(context), tag=tag, labels={"taxiway.test": "prebuilt"})
    folder = tmp_path / "app"
    folder.mkdir()
    toml = f'app = "pb{uuid.uuid4().hex[:6]}"\n[build]\nimage = "{tag}"\n[http_service]\n'
    toml += 'internal_port = 8080\nauto_stop_machines = "off"\n'
    (folder / "fly.toml").write_text(toml)
    try:
        up = taxiway(folder, "up", "-d", env={"TAXIWAY_DRIVER": "auto"}, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert status(folder)["driver"] == "docker"
        assert get(edge_url(folder) + "/index.html") == "prebuilt\n"
        assert taxiway(folder, "down", timeout=120).returncode == 0

        (folder / "fly.toml").write_text(toml.replace(tag, "taxiway-test/nowhere:1"))
        missing = taxiway(folder, "up", "-d", env=DOCKER, timeout=300)
        assert missing.returncode == 1
        assert "taxiway-test/nowhere:1" in missing.stderr
        assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    finally:
        taxiway(folder, "down", timeout=120)
        client.images.remove(tag, force=True)


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


CHECKED_TOML = """\
app = "{app}"

[[files]]
guest_path = "/etc/app/motd"
raw_value = "hello from [[files]]"

[http_service]
internal_port = 8080
auto_stop_machines = "off"

[[http_service.machine_checks]]
command = ["python3", "-c", "{probe}"]
"""

#: A machine check's command: reach the machine under test at FLY_TEST_MACHINE_IP.
PROBE = (
    "import os, urllib.request; address = os.environ['FLY_TEST_MACHINE_IP']; "
    "print('tested', urllib.request.urlopen(f'http://[{address}]:8080/').read().decode())"
)


def test_files_and_machine_checks_in_the_image(app: Path) -> None:
    """[[files]] appear at guest_path in the container; a deploy's machine check runs in
    the release's image (its entrypoint first) and reaches the machine it tests."""
    (app / "fly.toml").write_text(CHECKED_TOML.format(app=f"dk{uuid.uuid4().hex[:6]}", probe=PROBE))
    (app / "Dockerfile").write_text(DOCKERFILE.replace("RUN mkdir", "RUN mkdir -p /data && mkdir"))
    up = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    machine = status(app)["machines"][0]
    motd = taxiway(app, "machine", "exec", machine["id"], "cat", "/etc/app/motd")
    assert motd.stdout == "hello from [[files]]"

    (app / "web.py").write_text(WEB.format(version="two"))
    deployed = taxiway(app, "deploy", timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "machine check 1 (python3 -c" in deployed.stdout
    assert "passed" in deployed.stdout
    oneoff = deployed.stdout.split("in one-off machine ")[1].split()[0]
    ran = taxiway(app, "logs", "--machine", oneoff)
    assert "tested hello two" in ran.stdout  # from inside the image, against the new machine


def test_a_base_image_that_cannot_be_pulled_is_one_sentence(app: Path) -> None:
    (app / "Dockerfile").write_text("FROM registry.invalid/nothing:1\nCMD [\"true\"]\n")
    up = taxiway(app, "up", "-d", env=DOCKER, timeout=300)
    assert up.returncode == 1
    error = up.stderr.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in up.stderr, up.stderr
    assert "building Dockerfile failed at step 1/" in error[0]
    assert "its base image registry.invalid/nothing:1 is not in the engine" in error[0]
    assert containers(app) == []


def test_a_container_that_exits_at_once_is_said_plainly(app: Path) -> None:
    crash = "import sys\nprint('no database configured', flush=True)\nsys.exit(3)\n"
    (app / "web.py").write_text(crash)
    up = taxiway(app, "up", "-d", "--wait-timeout", "20s", env=DOCKER, timeout=300)
    assert up.returncode == 1
    error = up.stderr.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in up.stderr, up.stderr
    machine = status(app)["machines"][0]
    assert machine["id"] in error[0] and "exit" in error[0], error[0]
    assert "no database configured" in taxiway(app, "logs").stdout


def test_a_console_before_any_release_says_to_start_the_app(app: Path) -> None:
    result = taxiway(app, "console", "--command", "sh", env=DOCKER)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "has no release image to run the console in" in result.stderr
