"""A small app for the dashboard's end-to-end tests: a web machine behind the edge and a
worker that prints whatever the test writes into a file (so a test knows which line to
look for in the log tail)."""

from __future__ import annotations

import json
import re
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway

WEB = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from " + os.environ["FLY_MACHINE_ID"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

print("web listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

# Prints each new line written to $SAY_FILE, once.
WORKER = """
import os, time
path, said = os.environ["SAY_FILE"], 0
print("worker up", flush=True)
while True:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines[said:]:
        print(line, flush=True)
    said = max(said, len(lines))
    time.sleep(0.1)
"""

FLY_TOML = """
app = "dashtest"
primary_region = "ams"
kill_timeout = 5

[env]
SAY_FILE = "{say}"

[processes]
web = "{python} web.py"
worker = "{python} worker.py"

[[services]]
internal_port = 8080
protocol = "tcp"
processes = ["web"]

  [[services.ports]]
  port = {edge_port}
  handlers = ["http"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(app: Path) -> dict:
    result = taxiway(app, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def machine_ids(app: Path) -> dict[str, str]:
    """group → machine id (one machine per group)."""
    return {m["group"]: m["id"] for m in status(app)["machines"]}


def say(app: Path, line: str) -> None:
    with open(app / "say.txt", "a") as file:
        file.write(line + "\n")


def dashboard_url(app: Path) -> str:
    result = taxiway(app, "dashboard", "--no-open")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{32,}", url), url
    return url


@pytest.fixture
def running_app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "web.py").write_text(textwrap.dedent(WEB))
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(
        FLY_TOML.format(python=sys.executable, say=tmp_path / "say.txt", edge_port=free_port())
    )
    result = taxiway(tmp_path, "up", "-d", timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    try:
        yield tmp_path
    finally:
        taxiway(tmp_path, "down")
