"""taxiway's docker driver against docker compose, on the same two-service app, same run.

The app: a web server on python:3.12-slim answering HTTP with its code's version, and a
worker printing a line a second; one Dockerfile. taxiway runs it from a fly.toml with
[processes] web/worker and an [http_service] for web; compose from the equivalent
compose.yaml, web publishing its port on 127.0.0.1. Both run the app under an init
(taxiway's docker driver always does; compose with `init: true`), so a stop's SIGTERM
reaches Python rather than being ignored by PID 1, and both stop with a 5 s grace
(kill_timeout / stop_grace_period); worker shares web's image (`depends_on` so compose
builds it first). Both drive the same Docker engine
(DOCKER_HOST, else the default socket), and each run measures, taxiway then compose:

- up: `taxiway up -d --driver docker` / `docker-compose up -d`, the image already built
  (a warm-up run builds it first), until web answers through the front door: taxiway's
  edge (its address is what `up -d` prints) / compose's published port;
- change: web.py gets a new version, then `taxiway deploy` / `docker-compose up -d
  --build`, until the new version answers there (the command's own exit is shown too);
- down: `taxiway down` / `docker-compose down`, until the command exits.

The peer is Debian's `docker-compose` (v1, Python, the same builder API taxiway uses): it
is installed with apt-get when missing and we are root; otherwise its rows are skipped
with the reason. taxiway's deploy is the default one (rolling, smoke checks on: it exits
only after watching the new machines), so its "exit" column is longer than the time
until the new code answers; compose has no such watch. Medians of --runs (default 5).
Run: `.venv/bin/python benchmarks/compose.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("TAXIWAY_DRIVER", None)
BASE_IMAGE = "python:3.12-slim"
#: How long one step may take before the run is abandoned.
STEP_TIMEOUT_S = 180.0

DOCKERFILE = """\
FROM python:3.12-slim
WORKDIR /app
COPY . .
CMD ["python3", "-u", "web.py"]
"""

WEB = """\
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = "{version}"
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6  # taxiway's edge reaches a machine on its private
                                      # address; "::" takes IPv4 too
Server(("::", 8080), H).serve_forever()
"""

WORKER = """\
import itertools, time
for n in itertools.count():
    print("worker line", n, flush=True)
    time.sleep(1)
"""

FLY_TOML = """\
app = "{app}"
kill_timeout = 5

[processes]
web = "python3 -u web.py"
worker = "python3 -u worker.py"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "off"
"""

COMPOSE_YAML = """\
services:
  web:
    build: .
    image: {image}
    command: ["python3", "-u", "web.py"]
    ports:
      - "127.0.0.1:{port}:8080"
    init: true
    stop_grace_period: 5s
  worker:
    image: {image}
    command: ["python3", "-u", "worker.py"]
    depends_on: [web]
    init: true
    stop_grace_period: 5s
"""


def say(text: str) -> None:
    print(f"== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )


def answer(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def _failed(step: Step) -> SystemExit:
    result = step.result
    said = f"{result.stdout}{result.stderr}" if result else ""
    return SystemExit(f"{' '.join(step.cmd)} failed:\n{said}")


class Step:
    """One timed command: until it exits, and (``want``) until web answers ``want`` at
    the url ``url()`` gives (None while it isn't known), polled from the command's start."""

    def __init__(
        self,
        cmd: list[str],
        cwd: Path,
        url: Callable[[], str | None] = lambda: None,
        want: str | None = None,
    ) -> None:
        self.cmd, self.cwd, self.url, self.want = cmd, cwd, url, want
        self.answered_s: float | None = None
        self.exited_s = 0.0
        self.result: subprocess.CompletedProcess[str] | None = None

    def measure(self) -> Step:
        self.began = time.perf_counter()
        exited = threading.Event()
        poller = threading.Thread(target=self._poll, args=(exited,), daemon=True)
        if self.want is not None:
            poller.start()
        self.result = run(self.cmd, self.cwd)
        self.exited_s = time.perf_counter() - self.began
        exited.set()
        if self.result.returncode != 0:
            raise _failed(self)
        if self.want is not None:
            poller.join(STEP_TIMEOUT_S)
            if self.answered_s is None:
                raise SystemExit(f"{' '.join(self.cmd)}: web never answered {self.want!r}")
        return self

    def _poll(self, exited: threading.Event) -> None:
        deadline = self.began + STEP_TIMEOUT_S
        while time.perf_counter() < deadline:
            url = self.url()
            if url and answer(url) == self.want:
                self.answered_s = time.perf_counter() - self.began
                return
            if url is None and exited.is_set() and self.result is not None:
                url = self.url()
                if url is None:
                    return  # the command ended and never said where to ask
            time.sleep(0.02)


class App:
    """The app's folder: fly.toml and compose.yaml side by side over the same code."""

    def __init__(self, folder: Path, compose_port: int) -> None:
        self.folder = folder
        self.name = f"benchcompose{uuid.uuid4().hex[:6]}"
        self.image = f"{self.name}:latest"
        self.compose_port = compose_port
        self.version = 0
        folder.mkdir()
        (folder / "Dockerfile").write_text(DOCKERFILE)
        (folder / "worker.py").write_text(WORKER)
        # Neither config file is part of the image: editing one rebuilds nothing.
        (folder / ".dockerignore").write_text("fly.toml\ncompose.yaml\n")
        (folder / "fly.toml").write_text(FLY_TOML.format(app=self.name))
        (folder / "compose.yaml").write_text(
            COMPOSE_YAML.format(image=self.image, port=compose_port)
        )
        self.write(1)

    def write(self, version: int) -> str:
        """web.py at ``version``; what web answers with it."""
        self.version = version
        (self.folder / "web.py").write_text(WEB.format(version=f"v{version}"))
        return f"v{version}"


class Taxiway:
    name = "taxiway"

    def __init__(self, app: App) -> None:
        self.app = app
        self.edge: str | None = None
        self._up: Step | None = None

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "taxiway", *args]

    def _edge(self) -> str | None:
        """The edge's address, from what `up -d` printed once it returned."""
        if self.edge is None and self._up is not None and self._up.result is not None:
            found = re.search(r"^edge\s+(http://\S+)\s+port 80\b", self._up.result.stdout, re.M)
            self.edge = found.group(1) + "/" if found else None
        return self.edge

    def up(self, want: str) -> Step:
        self.edge = None
        self._up = Step(
            self.cmd("up", "-d", "--driver", "docker"), self.app.folder, self._edge, want
        )
        return self._up.measure()

    def change(self, want: str) -> Step:
        return Step(self.cmd("deploy"), self.app.folder, self._edge, want).measure()

    def down(self) -> Step:
        return Step(self.cmd("down"), self.app.folder).measure()


class Compose:
    name = "docker-compose"

    def __init__(self, app: App, exe: str) -> None:
        self.app = app
        self.exe = exe
        self.url = f"http://127.0.0.1:{app.compose_port}/"

    def cmd(self, *args: str) -> list[str]:
        return [self.exe, "-p", self.app.name, "-f", "compose.yaml", *args]

    def up(self, want: str) -> Step:
        return Step(self.cmd("up", "-d"), self.app.folder, lambda: self.url, want).measure()

    def change(self, want: str) -> Step:
        return Step(
            self.cmd("up", "-d", "--build"), self.app.folder, lambda: self.url, want
        ).measure()

    def down(self) -> Step:
        return Step(self.cmd("down"), self.app.folder).measure()


def compose_exe() -> tuple[str | None, str]:
    """Debian's docker-compose, installed when missing and we may; else why not."""
    found = shutil.which("docker-compose")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "docker-compose is missing (install it: apt-get install docker-compose)"
    say("installing docker-compose (Debian's, v1) with apt-get")
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-compose"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(apt, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(apt, env=env, capture_output=True, text=True)
    found = shutil.which("docker-compose")
    if not found:
        return None, f"docker-compose could not be installed ({done.stderr.strip()[-200:]})"
    return found, ""


def engine_ready() -> str | None:
    """Why the engine or the base image is missing, or None."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker CLI is missing"
    if subprocess.run([docker, "image", "inspect", BASE_IMAGE], capture_output=True).returncode:
        return f"no {BASE_IMAGE} on the engine (bash .ci/engine makes it)"
    return None


def remove_images(app: App) -> None:
    """The images both made: taxiway's release tags (by its label), compose's tag."""
    docker = shutil.which("docker") or "docker"
    listed = subprocess.run(
        [
            docker,
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"label=taxiway.app={app.name}",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    for tag in [*listed, app.image]:
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True)


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=30)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    args = parser.parse_args()
    problem = engine_ready()
    if problem:
        print(f"compose benchmark skipped: {problem}")
        return 0
    exe, why_not = compose_exe()
    if why_not:
        say(f"{why_not}; its rows are skipped")
    docker = shutil.which("docker") or "docker"
    say(version_of([sys.executable, "-m", "taxiway", "--version"]) + " (taxiway)")
    say(version_of([docker, "version", "--format", "engine {{.Server.Version}}"]))
    if exe:
        say(version_of([exe, "version", "--short"]) + " (docker-compose)")
    say(f"engine at {os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'}")

    names = ["up", "change", "change exit", "down"]
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="taxiway-bench-compose-") as tmp:
        app = App(Path(tmp) / "app", free_port())
        peers: list[Taxiway | Compose] = [Taxiway(app)] + ([Compose(app, exe)] if exe else [])
        try:
            # Each run starts from code both have built (run 0 builds it: not counted);
            # each peer changes it, then the folder goes back for the next peer.
            for run_number in range(args.runs + 1):
                current = app.version
                for peer in peers:
                    up = peer.up(app.write(current))
                    changed = peer.change(app.write(current + 1))
                    down = peer.down()
                    app.write(current)
                    if run_number == 0:
                        continue
                    rows = figures.setdefault(peer.name, {n: [] for n in names})
                    rows["up"].append(up.answered_s or 0.0)
                    rows["change"].append(changed.answered_s or 0.0)
                    rows["change exit"].append(changed.exited_s)
                    rows["down"].append(down.exited_s)
                    print(
                        f"run {run_number} {peer.name:<15} up {up.answered_s:6.2f} s   change "
                        f"{changed.answered_s:6.2f} s (exits at {changed.exited_s:5.2f})   "
                        f"down {down.exited_s:5.2f} s",
                        flush=True,
                    )
                app.write(current + 1)
        finally:
            for peer in peers:
                with_peer = peer.cmd("down")
                subprocess.run(with_peer, cwd=app.folder, env=ENV, capture_output=True)
            remove_images(app)

    print()
    print(
        f"medians of {args.runs} runs, seconds (image cache warm; web answers through "
        "taxiway's edge / compose's published port)"
    )
    header = f"{'':<34}" + "".join(f"{p:>26}" for p in figures) + f"{'taxiway/compose':>17}"
    print(header)
    labels = {
        "up": "a. up -d until web answers",
        "change": "b. code change until new answers",
        "change exit": "   (the command's exit)",
        "down": "c. down",
    }
    for key in names:
        medians = [statistics.median(rows[key]) for rows in figures.values()]
        ratio = f"{medians[0] / medians[1]:.2f}x" if len(medians) == 2 and medians[1] else "-"
        print(f"{labels[key]:<34}" + "".join(f"{m:>26.2f}" for m in medians) + f"{ratio:>17}")
    if not exe:
        print(f"(docker-compose skipped: {why_not})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
