"""`taxiway up --driver namespace` end to end: two machines of a group both bind port
8080 in their own network namespaces, the edge reaches both, `down` leaves nothing, and
neither does a daemon killed with -9 (each machine also starts a ``setsid`` escapee);
two checkouts of one app run side by side; machines and the release command reach the
host as ``host.taxiway.internal``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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


def web_app(body: str, prelude: str = "") -> str:
    """A machine's HTTP server on port 8080 (every address: the edge comes over the
    bridge) answering every GET with ``body``, a Python expression; ``prelude`` runs first."""
    return f"""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
{prelude}
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {body}
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


WEB = web_app(
    'os.environ["FLY_MACHINE_ID"].encode()',
    prelude=(
        "import pathlib, subprocess\n"
        'escapee = subprocess.Popen(["sleep", "300"], start_new_session=True)\n'
        'pathlib.Path("escapees", os.environ["FLY_MACHINE_ID"]).write_text(str(escapee.pid))\n'
    ),
)

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


#: Answers with the name of the folder it runs in (each checkout says which it is).
FOLDER_WEB = web_app("os.path.basename(os.getcwd()).encode()")


def edge_url(folder: Path) -> str:
    edge = next(b for b in status(folder)["edge"] if "http" in b["handlers"])
    return f"http://{edge['address']}/"


def answer_becomes(url: str, expected: str) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if get(url) == expected:
            return True
        time.sleep(0.1)
    return False


def daemon_pid(folder: Path) -> int:
    return int((folder / ".taxiway" / "daemon.lock").read_text())


@pytest.fixture
def checkouts(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """Two folders holding the same app (as two git worktrees of it would)."""
    name = f"nstwin{os.getpid()}"
    folders = (tmp_path / "one", tmp_path / "two")
    for folder in folders:
        folder.mkdir()
        (folder / "web.py").write_text(FOLDER_WEB)
        (folder / "fly.toml").write_text(FLY_TOML.format(app=name, python=sys.executable))
    yield *folders, name
    for folder in folders:
        taxiway(folder, "down")


@needs_namespaces
def test_two_checkouts_of_one_app_run_side_by_side(checkouts: tuple[Path, Path, str]) -> None:
    one, two, name = checkouts
    for folder in (one, two):
        up = taxiway(folder, "up", "-d", "--driver", "namespace")
        assert up.returncode == 0, up.stderr + up.stdout
    machines = {folder: status(folder)["machines"] for folder in (one, two)}
    for folder, listed in machines.items():
        assert [m["state"] for m in listed] == ["started"], folder
        assert alive(listed[0]["pid"]), folder
        assert answer_becomes(edge_url(folder), folder.name), f"{folder.name}'s edge"
    assert machines[one][0]["private_ip"] != machines[two][0]["private_ip"]
    assert scope_of(one, name) != scope_of(two, name)
    assert netns.leftovers(scope_of(one, name))[0] != netns.leftovers(scope_of(two, name))[0]

    # `down` in one leaves the other running and serving.
    down = taxiway(one, "down")
    assert down.returncode == 0, down.stderr
    assert_nothing_left(scope_of(one, name), [machines[one][0]["pid"]])
    assert alive(machines[two][0]["pid"])
    assert [m["state"] for m in status(two)["machines"]] == ["started"]
    assert answer_becomes(edge_url(two), "two")

    # One's daemon killed with -9: its next `up` reaps its own machine, not two's.
    assert taxiway(one, "up", "-d", "--driver", "namespace").returncode == 0
    old = status(one)["machines"][0]["pid"]
    daemon = daemon_pid(one)
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not alive(daemon), "one's daemon to die")
    again = taxiway(one, "up", "-d", "--driver", "namespace")
    assert again.returncode == 0, again.stderr
    wait_until(lambda: not alive(old), "one's old machine to be reaped")
    assert alive(machines[two][0]["pid"])
    assert answer_becomes(edge_url(one), "one")
    assert answer_becomes(edge_url(two), "two")


#: Asks the host's service at host.taxiway.internal:HOST_PORT for its answer.
ASK_HOST = """
import os, socket

def ask_host():
    address = ("host.taxiway.internal", int(os.environ["HOST_PORT"]))
    try:
        with socket.create_connection(address, timeout=5) as conn:
            return conn.recv(100)
    except OSError as exc:
        return repr(exc).encode()
"""

HOST_WEB = web_app("ask_host()", prelude=ASK_HOST)

RELEASE = (
    ASK_HOST
    + """
open("released.txt", "wb").write(ask_host())
"""
)

HOST_FLY_TOML = (
    FLY_TOML
    + """
[env]
HOST_PORT = "{port}"

[deploy]
release_command = "{python} release.py"
"""
)


@pytest.fixture
def host_service(request: pytest.FixtureRequest) -> Iterator[int]:
    """A TCP service on the host (``request.param``: the address it binds), answering
    every connection with the same line; its port."""
    server = socket.create_server((request.param, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello from the host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def host_app(tmp_path: Path, port: int) -> tuple[Path, str]:
    name = f"nshost{os.getpid()}"
    (tmp_path / "web.py").write_text(HOST_WEB)
    (tmp_path / "release.py").write_text(RELEASE)
    (tmp_path / "fly.toml").write_text(
        HOST_FLY_TOML.format(app=name, port=port, python=sys.executable)
    )
    return tmp_path, name


@needs_namespaces
@pytest.mark.skipif(
    shutil.which("iptables") is None,
    reason="reaching the host's 127.0.0.1 from a namespace machine needs iptables",
)
@pytest.mark.parametrize("host_service", ["127.0.0.1"], indirect=True)
def test_machines_and_the_release_command_reach_the_hosts_loopback(
    tmp_path: Path, host_service: int
) -> None:
    folder, name = host_app(tmp_path, host_service)
    scope = scope_of(folder, name)
    try:
        up_and_ask_the_host(folder)
        assert len(netns.leftovers(scope)[0]) == 1  # the release command's is gone
        assert netns.bridge_name(scope) in iptables_rules()
    finally:
        down = taxiway(folder, "down")
    assert down.returncode == 0, down.stderr
    assert netns.bridge_name(scope) not in iptables_rules()


def up_and_ask_the_host(folder: Path) -> None:
    """`up` a `host_app`: its release command and its machine (asked through the edge)
    both got the host service's answer."""
    up = taxiway(folder, "up", "-d", "--driver", "namespace")
    assert up.returncode == 0, up.stderr + up.stdout
    assert (folder / "released.txt").read_bytes() == b"hello from the host"
    assert answer_becomes(edge_url(folder), "hello from the host")


def iptables_rules() -> str:
    return subprocess.run(
        ["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=False
    ).stdout


@needs_namespaces
@pytest.mark.parametrize("host_service", ["0.0.0.0"], indirect=True)
def test_a_machines_etc_hosts_names_the_host_and_itself(tmp_path: Path, host_service: int) -> None:
    folder, _ = host_app(tmp_path, host_service)
    try:
        up_and_ask_the_host(folder)  # on all the host's addresses: with or without iptables
        machine = status(folder)["machines"][0]
        hosts = taxiway(folder, "machine", "exec", machine["id"], "cat", "/etc/hosts")
        assert hosts.returncode == 0, hosts.stderr
        names = {}
        for line in hosts.stdout.splitlines():
            fields = line.split("#")[0].split()
            for alias in fields[1:]:
                names.setdefault(alias, fields[0])
        assert names["localhost"] == "127.0.0.1"
        assert names["fly-local-6pn"] == machine["private_ip"]
        route = taxiway(folder, "machine", "exec", machine["id"], "ip", "-4", "route")
        gateway = next(
            line.split()[2] for line in route.stdout.splitlines() if line.startswith("default")
        )
        assert names["host.taxiway.internal"] == gateway
    finally:
        taxiway(folder, "down")
