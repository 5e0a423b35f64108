"""Health checks in a running app: `status` and `checks list` show them, restart_limit acts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway

#: Answers /health with 200 while the file ``healthy`` exists, 500 otherwise.
WEB = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists("healthy")
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"no")
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

FLY_TOML = """
app = "checkslive"
kill_timeout = 2

[processes]
web = "{python} web.py"

[http_service]
internal_port = 8080
processes = ["web"]

[[http_service.checks]]
grace_period = "0s"
interval = "100ms"
timeout = "1s"
path = "/health"

[checks.alive]
type = "tcp"
port = 8080
grace_period = "0s"
interval = "2s"
timeout = "1s"
processes = ["web"]
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "web.py").write_text(WEB)
    (tmp_path / "healthy").write_text("")
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(python=sys.executable))
    yield tmp_path
    taxiway(tmp_path, "down")


def wait_for(predicate, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(app: Path) -> dict[str, str]:
    rows = json.loads(taxiway(app, "checks", "list", "--json").stdout)
    return {row["name"]: row["status"] for row in rows}


def http_name(app: Path) -> str:
    rows = json.loads(taxiway(app, "checks", "list", "--json").stdout)
    return next(row["name"] for row in rows if row["type"] == "http")


def test_status_and_checks_list_show_every_check(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    wait_for(lambda: set(statuses(app).values()) == {"passing"}, "both checks passing")
    status = json.loads(taxiway(app, "status", "--json").stdout)
    summary = status["machines"][0]["checks"]
    assert summary["total"] == 2 and summary["passing"] == 2
    kinds = {c["kind"] for c in summary["checks"]}
    assert kinds == {"service", "machine"}
    table = taxiway(app, "checks", "list").stdout
    assert "alive" in table and "passing" in table
    assert "2/2 passing" in taxiway(app, "status").stdout

    (app / "healthy").unlink()
    wait_for(
        lambda: statuses(app) == {"alive": "passing", http_name(app): "critical"},
        "the http check critical while the tcp check passes",
    )
    rows = json.loads(taxiway(app, "checks", "list", "--json").stdout)
    http = next(r for r in rows if r["type"] == "http")
    assert "500" in http["output"]


def test_checks_of_a_stopped_machine_are_not_passing(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    wait_for(lambda: set(statuses(app).values()) == {"passing"}, "checks passing")
    machine = json.loads(taxiway(app, "status", "--json").stdout)["machines"][0]["id"]
    assert taxiway(app, "machine", "stop", machine).returncode == 0
    assert set(statuses(app).values()) == {"warning"}


def test_restart_limit_restarts_the_machine(app: Path) -> None:
    config = app / "fly.toml"
    config.write_text(config.read_text().replace('/health"', '/health"\nrestart_limit = 3'))
    (app / "healthy").unlink()
    assert taxiway(app, "up", "-d", "--no-wait").returncode == 0  # it never gets healthy

    def restarted() -> bool:
        logs = taxiway(app, "logs").stdout
        return "restart_limit" in logs

    wait_for(restarted, "a restart for restart_limit")
