"""Where machines listen, end to end: a fixed-port app under the process driver, the hint
when a machine listens where the edge doesn't connect (`up`, `scale`, `status`), ports
made afresh at every start, and `up -d` waiting for the machines' checks."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from cli_runner import start_taxiway
from machine_apps import ECHO_ID_APP
from process_watch import wait_for
from taxiway.runtime.drivers import unusable_reason
from taxiway.state.store import Store

#: Listens on $PORT after a delay (seconds, argv[1]); /healthz answers HEALTH (a status).
ON_PORT = """
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(os.environ.get("HEALTH", "200")) if self.path == "/healthz" else 200
        body = os.environ["FLY_MACHINE_ID"].encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

time.sleep(float(sys.argv[1]))
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fixed_port(port: int) -> str:
    """A command binding ``port`` whatever taxiway's PORT says, as `gunicorn --bind :8080`
    does: the echo app, with PORT set by `env`."""
    return f"env PORT={port} {sys.executable} echo.py"


def fly_toml(
    app: str, command: str, internal: int, *, checks: bool, env: str = "", edge: int = 0
) -> str:
    """A web group with one service (edge port ``edge``, else a free one)."""
    check = (
        '[[services.http_checks]]\npath = "/healthz"\ninterval = "10s"\ntimeout = "2s"\n'
        if checks
        else ""
    )
    return (
        f'app = "{app}"\nkill_timeout = 2\n[env]\n{env}\n[processes]\nweb = "{command}"\n'
        f'[[services]]\ninternal_port = {internal}\nprotocol = "tcp"\nprocesses = ["web"]\n'
        f'[[services.ports]]\nport = {edge or free_port()}\nhandlers = ["http"]\n{check}'
    )


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "echo.py").write_text(ECHO_ID_APP)
    (tmp_path / "on_port.py").write_text(ON_PORT)
    try:
        yield tmp_path
    finally:
        taxiway(tmp_path, "down")


def status(folder: Path) -> dict:
    result = taxiway(folder, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def get(folder: Path, path: str = "/") -> int:
    """The status of a GET through the edge's listener."""
    address = status(folder)["edge"][0]["address"]
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def on_port_app(
    folder: Path,
    app: str,
    *,
    delay: float = 0,
    unhealthy: bool = False,
    internal: int = 0,
    edge: int = 0,
) -> int:
    """Write the fly.toml of an app on $PORT with a service check; its internal_port."""
    internal = internal or free_port()
    command = f"{sys.executable} on_port.py {delay}"
    env = 'HEALTH = "500"' if unhealthy else ""
    (folder / "fly.toml").write_text(
        fly_toml(app, command, internal, checks=True, env=env, edge=edge)
    )
    return internal


def two_machines_then_down(folder: Path) -> None:
    """Leave the app with two stopped web machines (`scale count` is kept)."""
    for args in (("up", "-d", "--driver", "process"), ("scale", "count", "web=2"), ("down",)):
        result = taxiway(folder, *args)
        assert result.returncode == 0, result.stderr


def two_fixed_port_machines(folder: Path, app: str, *, checks: bool) -> int:
    """A fixed-port app left with two stopped web machines; its internal_port."""
    internal = free_port()
    (folder / "fly.toml").write_text(fly_toml(app, fixed_port(internal), internal, checks=checks))
    two_machines_then_down(folder)
    return internal


def test_a_fixed_port_app_serves_alone_and_a_second_machine_gets_a_hint(folder: Path) -> None:
    internal = free_port()
    command = fixed_port(internal)
    (folder / "fly.toml").write_text(fly_toml("fixedport", command, internal, checks=True))
    up = taxiway(folder, "up", "-d", "--driver", "process")
    assert up.returncode == 0, up.stderr
    assert get(folder) == 200  # the first machine got internal_port itself
    [first] = status(folder)["machines"]
    assert first["ports"] == {str(internal): internal} and first["hints"] == []

    scaled = taxiway(folder, "scale", "count", "web=2")
    assert scaled.returncode == 0, scaled.stderr
    [second] = [m for m in status(folder)["machines"] if m["id"] != first["id"]]
    port = second["ports"][str(internal)]
    assert port != internal
    sentence = (
        f"machine {second['id']} (web) does not listen on $PORT ({port}), where the edge "
        f"sends its traffic, and internal_port {internal} is held by machine {first['id']}"
    )
    assert f"hint: {sentence}" in scaled.stdout
    assert "`taxiway scale count web=1`" in scaled.stdout and "namespace driver" in scaled.stdout
    assert f"hint: {sentence}" in taxiway(folder, "status").stdout
    hints = {m["id"]: m["hints"] for m in status(folder)["machines"]}
    assert hints[first["id"]] == [] and sentence in hints[second["id"]][0]
    assert get(folder) == 200  # the first machine still serves


def test_the_first_machine_leaves_internal_port_to_the_edge_listening_there(
    folder: Path,
) -> None:
    internal = free_port()
    on_port_app(folder, "edgeport", internal=internal, edge=internal)
    assert taxiway(folder, "up", "-d", "--driver", "process").returncode == 0
    data = status(folder)
    assert data["edge"][0]["address"] == f"127.0.0.1:{internal}"
    assert data["machines"][0]["ports"][str(internal)] != internal
    assert get(folder) == 200


def test_up_prints_the_hint_in_the_foreground_and_detached(folder: Path) -> None:
    internal = two_fixed_port_machines(folder, "fixedhint", checks=False)

    detached = taxiway(folder, "up", "-d", "--driver", "process")
    # which of the two binds internal_port first is a race; the other gets the hint, and
    # when it crashed for it (it binds the port itself), `up -d` fails naming it
    if detached.returncode == 1:
        error = detached.stderr.strip()
        assert "crashed (exit code 1) right after it started" in error, error
        assert f"binds {internal} cannot run here" in error, error
    else:
        assert _hint_about(detached.stdout, internal), detached.stdout
    assert taxiway(folder, "down").returncode == 0

    foreground = start_taxiway(folder, "up", "--driver", "process")
    try:
        assert foreground.stdout is not None
        for line in foreground.stdout:
            if _hint_about(line, internal):
                break
        else:
            pytest.fail("the foreground `up` printed no hint")
    finally:
        foreground.send_signal(signal.SIGINT)
        foreground.wait(timeout=30)


def test_up_detached_fails_naming_the_crashing_machine_and_its_hint(folder: Path) -> None:
    internal = two_fixed_port_machines(folder, "fixedfails", checks=True)
    up = taxiway(folder, "up", "-d", "--driver", "process")
    assert up.returncode == 1
    error = up.stderr.strip().removeprefix("taxiway: error: ")
    assert re.match(r"machine \w+ \(web\) crashed \(exit code 1\)", error), error
    assert f"so an app that binds {internal} cannot run here" in error
    assert error.endswith("the app keeps running; see `taxiway checks list`")
    assert taxiway(folder, "status").returncode == 0


def _hint_about(output: str, internal: int) -> bool:
    """Whether ``output`` has a hint line about a machine that can't have ``internal``."""
    return any(
        line.startswith("hint: machine")
        and (f"binds {internal} cannot run here" in line or f"{internal} was taken" in line)
        for line in output.splitlines()
    )


def test_ports_are_made_afresh_when_the_stored_one_is_taken(folder: Path) -> None:
    internal = on_port_app(folder, "freshports")
    assert taxiway(folder, "up", "-d", "--driver", "process").returncode == 0
    [machine] = status(folder)["machines"]
    stored = machine["ports"][str(internal)]
    assert taxiway(folder, "down").returncode == 0
    with socket.socket() as holder:  # something else took the machine's port meanwhile
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", stored))
        holder.listen()
        up = taxiway(folder, "up", "-d", "--driver", "process")
        assert up.returncode == 0, up.stdout + up.stderr
        [again] = status(folder)["machines"]
        assert again["id"] == machine["id"]
        assert again["ports"][str(internal)] != stored
        assert get(folder) == 200


def test_ports_a_namespace_run_left_are_made_afresh_for_the_process_driver(
    folder: Path,
) -> None:
    internal = on_port_app(folder, "nsthenproc")
    two_machines_then_down(folder)
    # what the namespace driver leaves: every machine on internal_port itself
    with Store.open(folder / ".taxiway") as store:
        for record in store.list_machines("nsthenproc"):
            store.update_machine(record.id, ports={str(internal): internal})
    up = taxiway(folder, "up", "-d", "--driver", "process")
    assert up.returncode == 0, up.stdout + up.stderr
    machines = status(folder)["machines"]
    ports = sorted(m["ports"][str(internal)] for m in machines)
    assert len(machines) == 2 and len(set(ports)) == 2 and internal in ports
    assert all(m["state"] == "started" and m["restarts"] == 0 for m in machines)
    assert all(m["checks"]["passing"] == 1 for m in machines)


def test_a_machine_whose_internal_port_another_program_took_gets_a_port_of_its_own(
    folder: Path,
) -> None:
    internal = on_port_app(folder, "movesoff")
    assert taxiway(folder, "up", "-d", "--driver", "process").returncode == 0
    [machine] = status(folder)["machines"]
    assert machine["ports"] == {str(internal): internal}
    assert taxiway(folder, "machine", "stop", machine["id"]).returncode == 0
    with socket.socket() as holder:  # another program takes the port meanwhile
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", internal))
        holder.listen()
        assert taxiway(folder, "machine", "start", machine["id"]).returncode == 0

        def serves_elsewhere() -> bool:
            [now] = status(folder)["machines"]
            return now["ports"] != {str(internal): internal} and now["checks"]["passing"] == 1

        wait_for(serves_elsewhere, "the machine to serve on a port of its own")
        assert get(folder) == 200


def test_up_detached_waits_until_the_checks_pass(folder: Path) -> None:
    on_port_app(folder, "waitsforchecks", delay=1.5)
    up = taxiway(folder, "up", "-d", "--driver", "process")
    assert up.returncode == 0, up.stderr
    assert get(folder) == 200
    lines = up.stdout.splitlines()
    assert "waiting for 1 machine to pass its checks (timeout 5m)..." in lines
    [machine] = status(folder)["machines"]
    assert f"machine {machine['id']} (web) passes its checks" in lines


@pytest.mark.parametrize("timeout_from", ["flag", "config"])
def test_up_detached_fails_with_a_sentence_when_a_check_never_passes(
    folder: Path, timeout_from: str
) -> None:
    internal = on_port_app(folder, "neverhealthy", unhealthy=True)
    flags = ["--wait-timeout", "2s"]
    if timeout_from == "config":
        config = folder / "fly.toml"
        config.write_text(config.read_text() + '[deploy]\nwait_timeout = "2s"\n')
        flags = []
    up = taxiway(folder, "up", "-d", "--driver", "process", *flags)
    assert up.returncode == 1
    assert "Traceback" not in up.stderr
    [machine] = status(folder)["machines"]  # the app keeps running
    assert machine["state"] == "started"
    error = up.stderr.strip().removeprefix("taxiway: error: ")
    assert error.startswith(
        f"machine {machine['id']} (web) did not pass its checks within the wait timeout (2s)"
    )
    assert f"servicecheck-00-http-{internal} is critical" in error
    assert f"the last output of check servicecheck-00-http-{internal}: HTTP GET" in error
    assert "500" in error
    assert error.endswith("the app keeps running; see `taxiway checks list`")


def test_up_detached_no_wait_returns_without_waiting(folder: Path) -> None:
    on_port_app(folder, "nowait", unhealthy=True)
    up = taxiway(folder, "up", "-d", "--driver", "process", "--no-wait")
    assert up.returncode == 0, up.stderr
    assert "waiting for" not in up.stdout
    assert status(folder)["machines"][0]["state"] == "started"


@pytest.mark.skipif(unusable_reason() is not None, reason="the namespace driver can't run here")
def test_a_wrong_internal_port_under_the_namespace_driver_gets_a_hint(folder: Path) -> None:
    internal, listens = free_port(), free_port()
    command = fixed_port(listens)
    (folder / "fly.toml").write_text(fly_toml("h2pnswrongport", command, internal, checks=False))
    up = taxiway(folder, "up", "-d", "--driver", "namespace")
    assert up.returncode == 0, up.stderr
    [machine] = status(folder)["machines"]
    sentence = (
        f"machine {machine['id']} (web) listens on {listens}, but the edge sends its "
        f"traffic to internal_port {internal}"
    )
    wait_for(lambda: sentence in taxiway(folder, "status").stdout, "the hint in status")
    assert f"internal_port = {listens}" in status(folder)["machines"][0]["hints"][0]
