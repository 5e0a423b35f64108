"""`taxiway up --driver namespace` end to end: two machines of a group both bind port
8080 in their own network namespaces, the edge reaches both, `down` leaves nothing, and
neither does a daemon killed with -9 (each machine also starts a ``setsid`` escapee)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from process_watch import alive
from taxiway.runtime import cgroups, netns
from taxiway.runtime.drivers import unusable_reason
from taxiway.runtime.scope import scope_for

_missing = unusable_reason()
needs_namespaces = pytest.mark.skipif(
    _missing is not None, reason=f"the namespace driver needs {_missing}"
)

WEB = """
import os, pathlib, subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

escapee = subprocess.Popen(["sleep", "300"], start_new_session=True)
pathlib.Path("escapees", os.environ["FLY_MACHINE_ID"]).write_text(str(escapee.pid))

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["FLY_MACHINE_ID"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

FLY_TOML = """
app = "{app}"
kill_timeout = 5

[processes]
web = "{python} web.py"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "off"
"""


def status(app: Path) -> dict:
    result = taxiway(app, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    name = f"nsup{os.getpid()}"
    (tmp_path / "web.py").write_text(WEB)
    (tmp_path / "escapees").mkdir()
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(app=name, python=sys.executable))
    yield tmp_path, name
    taxiway(tmp_path, "down")


@needs_namespaces
def test_two_machines_on_one_port_behind_the_edge(app: tuple[Path, str]) -> None:
    folder, name = app
    up = taxiway(folder, "up", "-d", "--driver", "namespace")
    assert up.returncode == 0, up.stderr + up.stdout
    scaled = taxiway(folder, "scale", "count", "web=2")
    assert scaled.returncode == 0, scaled.stderr
    machines = status(folder)["machines"]
    assert len(machines) == 2
    assert all(m["ports"] == {"8080": 8080} for m in machines)  # no remapping
    ids = {m["id"] for m in machines}

    edge = next(b for b in status(folder)["edge"] if b["port"] == 80)
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while seen != ids and time.monotonic() < deadline:
        body = get(f"http://{edge['address']}/")
        if body in ids:
            seen.add(body)
        else:
            time.sleep(0.1)
    assert seen == ids, "the edge reaches both machines on their port 8080"
    assert len(netns.leftovers(scope_of(folder, name))[0]) == 2

    # `machine exec` runs inside the machine: its private address is local there.
    first = machines[0]
    probe = (
        "import socket; s = socket.socket(socket.AF_INET6); "
        f"s.bind(('{first['private_ip']}', 0)); print('inside')"
    )
    result = taxiway(folder, "machine", "exec", first["id"], sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "inside"

    processes = app_processes(folder, status(folder))
    down = taxiway(folder, "down")
    assert down.returncode == 0, down.stderr
    assert_nothing_left(scope_of(folder, name), processes)

    # A daemon killed with -9: the next one cleans up and re-adopts the machines ...
    assert taxiway(folder, "up", "-d", "--driver", "namespace").returncode == 0
    before = status(folder)["machines"]
    processes = app_processes(folder, status(folder))
    kill_daemon(folder)
    again = taxiway(folder, "up", "-d", "--driver", "namespace")
    assert again.returncode == 0, again.stderr
    wait_until(lambda: not any(alive(pid) for pid in processes), "the old processes to die")
    after = status(folder)["machines"]
    assert {m["id"] for m in after} == {m["id"] for m in before}
    assert all(m["state"] == "started" for m in after)

    # ... and `down` with no daemon left cleans up everything too.
    processes = app_processes(folder, status(folder))
    kill_daemon(folder)
    cleaned = taxiway(folder, "down")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "cleaned up 2 machine(s)" in cleaned.stdout
    assert_nothing_left(scope_of(folder, name), processes)


def app_processes(folder: Path, state: dict) -> list[int]:
    """Every machine's main process and its escapee."""
    escapees = [int(p.read_text()) for p in (folder / "escapees").iterdir()]
    return [m["pid"] for m in state["machines"] if m["pid"]] + escapees


def kill_daemon(folder: Path) -> None:
    daemon = int((folder / ".taxiway" / "daemon.lock").read_text())
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not alive(daemon), "the daemon to die")
    for escapee in (folder / "escapees").iterdir():
        escapee.unlink()


def scope_of(folder: Path, name: str) -> str:
    return scope_for(name, folder / ".taxiway")


def assert_nothing_left(scope: str, processes: list[int]) -> None:
    wait_until(lambda: not any(alive(pid) for pid in processes), "the app's processes to die")
    assert netns.leftovers(scope) == ([], [])
    assert cgroups.scope_cgroups(scope) == []


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_an_unusable_namespace_driver_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taxiway.runtime.drivers import select_driver
    from taxiway.runtime.drivers.base import DriverError

    monkeypatch.setattr(netns, "usable", lambda: "root")
    with pytest.raises(DriverError) as caught:
        select_driver("namespace")
    assert str(caught.value) == (
        "the namespace driver needs root, which this host lacks; use --driver process"
    )
