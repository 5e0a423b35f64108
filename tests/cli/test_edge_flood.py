"""A flood of idle connections against a daemon with few descriptors: the edge sheds what
is beyond its cap, and the API and the health checks go on working."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli_runner import run_taxiway as taxiway
from machine_apps import ECHO_ID_APP
from process_watch import wait_for

NOFILE = 400
FLOOD = 450  # more than the daemon's every descriptor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_output(app: Path) -> tuple[str, str]:
    rows = json.loads(taxiway(app, "checks", "list", "--json").stdout)
    assert len(rows) == 1, rows
    return rows[0]["status"], rows[0]["output"]


def test_a_connection_flood_is_shed_and_the_daemon_keeps_working(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "web.py").write_text(ECHO_ID_APP)
    (tmp_path / "fly.toml").write_text(
        f'app = "flood"\n[processes]\nweb = "{sys.executable} web.py"\n'
        '[[services]]\ninternal_port = 8080\nprocesses = ["web"]\n'
        f'[[services.ports]]\nport = {port}\nhandlers = ["http"]\n'
        '[[services.http_checks]]\ninterval = "1s"\ntimeout = "1s"\ngrace_period = "1s"\n'
        'path = "/hits"\n'
    )

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

    flood: list[socket.socket] = []
    try:
        up = subprocess.run(
            [sys.executable, "-m", "taxiway", "up", "-d", "--driver", "process"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=few_descriptors,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
        assert up.returncode == 0, up.stderr
        wait_for(lambda: check_output(tmp_path)[0] == "passing", "the health check to pass")

        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        # The API answers, and the health check keeps running (its output changes).
        status = taxiway(tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["machines"][0]["state"] == "started"
        first = check_output(tmp_path)
        wait_for(lambda: check_output(tmp_path) != first, "a health check during the flood")
        assert check_output(tmp_path)[0] == "passing"
        # The shed connections are answered (503) and closed at once; the others idle.
        shed = 0
        pending = list(flood)
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(pending, [], [], 0.5)
            if not ready:
                break
            for sock in ready:
                pending.remove(sock)
                data = sock.recv(4096)
                if data.startswith(b"HTTP/1.1 503"):
                    shed += 1
        assert shed >= FLOOD - NOFILE // 2, f"only {shed} of {FLOOD} connections were shed"

        restart = taxiway(
            tmp_path, "machine", "restart", json.loads(status.stdout)["machines"][0]["id"]
        )
        assert restart.returncode == 0, restart.stderr
    finally:
        for sock in flood:
            sock.close()
        taxiway(tmp_path, "down")
