"""The edge inside a running app: listeners in `status`, balancing over machines,
draining before a stop, autostop and autostart — all through `taxiway up -d`."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from machine_apps import ECHO_ID_APP as WEB

FLY_TOML = """
app = "edgelive"
kill_timeout = 5

[processes]
web = "{python} web.py"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "{autostop}"
auto_start_machines = true
min_machines_running = 0
"""


def make_app(folder: Path, autostop: str = "off") -> Path:
    (folder / "web.py").write_text(WEB)
    (folder / "fly.toml").write_text(FLY_TOML.format(python=sys.executable, autostop=autostop))
    return folder


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    yield make_app(tmp_path)
    taxiway(tmp_path, "down")


def status(app: Path) -> dict:
    return json.loads(taxiway(app, "status", "--json").stdout)


def http_url(app: Path) -> str:
    edge = status(app)["edge"]
    plain = next(b for b in edge if b["port"] == 80)
    return f"http://{plain['address']}"


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_status_lists_the_listeners(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    edge = status(app)["edge"]
    assert {(b["port"], b["protocol"], tuple(sorted(b["handlers"]))) for b in edge} == {
        (80, "tcp", ("http",)),
        (443, "tcp", ("http", "tls")),
    }
    for binding in edge:
        host, port = binding["address"].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
    text = taxiway(app, "status").stdout
    assert "http://" + next(b["address"] for b in edge if b["port"] == 80) in text


def test_requests_are_balanced_over_the_groups_machines(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    assert taxiway(app, "scale", "count", "web=2").returncode == 0
    ids = {m["id"] for m in status(app)["machines"]}
    url = http_url(app)
    seen = {get(url)[1] for _ in range(20)}
    assert seen == ids


def test_a_stopping_machine_finishes_its_in_flight_request(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    machine = status(app)["machines"][0]["id"]
    url = http_url(app)
    answers: list[tuple[int, str]] = []
    slow = threading.Thread(target=lambda: answers.append(get(url + "/slow")))
    slow.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the request reached the machine
        logs = taxiway(app, "machine", "status", machine, "--json").stdout
        if json.loads(logs)["state"] == "started":
            break
    time.sleep(0.3)
    assert taxiway(app, "machine", "stop", machine).returncode == 0
    slow.join(30)
    assert answers == [(200, machine)]


def test_autostop_then_autostart(tmp_path: Path) -> None:
    app = make_app(tmp_path, autostop="stop")
    try:
        assert taxiway(app, "up", "-d", "--autostop-after", "1s").returncode == 0
        machine = status(app)["machines"][0]["id"]
        url = http_url(app)
        deadline = time.monotonic() + 30
        while status(app)["machines"][0]["state"] != "stopped":
            assert time.monotonic() < deadline, "the idle machine was not stopped"
            time.sleep(0.2)
        assert get(url) == (200, machine)  # held while the machine starts, then served
        assert status(app)["machines"][0]["state"] == "started"
    finally:
        taxiway(app, "down")


CHECKED = """
[[http_service.checks]]
grace_period = "{grace}"
interval = "1s"
timeout = "1s"
path = "{path}"
"""


@pytest.mark.parametrize(
    ("grace", "path", "expected"),
    [
        ("60s", "/", 200),  # not checked yet, and no machine proven: it takes the request
        ("0s", "/missing", 503),  # its check fails: never routed
    ],
)
def test_routing_follows_the_service_checks(
    app: Path, grace: str, path: str, expected: int
) -> None:
    config = app / "fly.toml"
    config.write_text(config.read_text() + CHECKED.format(grace=grace, path=path))
    # --no-wait: the machine is not checked yet (grace), or never passes
    assert taxiway(app, "up", "-d", "--no-wait").returncode == 0
    if expected == 503:
        deadline = time.monotonic() + 20
        while status(app)["machines"][0]["checks"]["critical"] != 1:
            assert time.monotonic() < deadline, "the check did not fail"
            time.sleep(0.1)
    code, body = get_any(http_url(app))
    assert code == expected
    if expected == 503:
        assert "edgelive" in body


def test_a_deploy_that_adds_a_port_gets_a_listener(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    config = app / "fly.toml"
    config.write_text(
        config.read_text()
        + '\n[[services]]\ninternal_port = 8080\nprotocol = "tcp"\nprocesses = ["web"]\n'
        + "[[services.ports]]\nport = 9999\n"
    )
    result = taxiway(app, "deploy", "--strategy", "immediate", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 10
    while not any(b["port"] == 9999 for b in status(app)["edge"]):
        assert time.monotonic() < deadline, "no listener for the new port"
        time.sleep(0.1)
    raw = next(b for b in status(app)["edge"] if b["port"] == 9999)
    assert raw["handlers"] == []
    machine = status(app)["machines"][0]["id"]
    assert get(f"http://{raw['address']}/") == (200, machine)  # raw TCP passthrough


def test_statics_are_served_by_the_edge(app: Path) -> None:
    public = app / "public"
    public.mkdir()
    (public / "app.css").write_text("body { color: teal }\n")
    (app / "secret.txt").write_text("not for you")
    config = app / "fly.toml"
    config.write_text(
        config.read_text() + '\n[[statics]]\nguest_path = "/app/public"\nurl_prefix = "/static"\n'
    )
    assert taxiway(app, "up", "-d").returncode == 0
    url = http_url(app)
    with urllib.request.urlopen(url + "/static/app.css", timeout=10) as response:
        assert response.read() == b"body { color: teal }\n"
        assert response.headers["Content-Type"].startswith("text/css")
        assert response.headers["ETag"]
    for attempt in ("/static/../secret.txt", "/static/%2e%2e/secret.txt"):
        _, body = get_any(url + attempt)
        assert "not for you" not in body, attempt
    machine = status(app)["machines"][0]["id"]
    assert get(url + "/other") == (200, machine)  # not a static path: the app answers


def get_any(url: str) -> tuple[int, str]:
    try:
        return get(url)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_statics_never_serve_the_state_folder_or_host_files(tmp_path: Path) -> None:
    """guest_path = "/app" must not hand out .taxiway (the CA key, the secrets, the logs);
    guest_path = "/etc" must not hand out the host's files: validate warns with the key's
    line, `up` says it in one sentence, and those requests go to the app."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "web.py").write_text(WEB)
    config = tmp_path / "fly.toml"
    config.write_text(
        f'app = "staticsafe"\n[processes]\nweb = "{sys.executable} web.py"\n'
        f'[[services]]\ninternal_port = 8080\nprocesses = ["web"]\n'
        f'[[services.ports]]\nport = {port}\nhandlers = ["http"]\n'
        '[[statics]]\nguest_path = "/app"\nurl_prefix = "/app"\n'
        '[[statics]]\nguest_path = "/etc"\nurl_prefix = "/etc"\n'
    )
    (tmp_path / "page.txt").write_text("public page")
    try:
        validate = taxiway(tmp_path, "config", "validate")
        said = validate.stdout + validate.stderr
        assert validate.returncode == 0, said
        etc_line = config.read_text().splitlines().index('guest_path = "/etc"') + 1
        assert f"fly.toml:{etc_line}" in said and "statics[1].guest_path" in said, said

        up = taxiway(tmp_path, "up", "-d", "--driver", "process")
        assert up.returncode == 0, up.stderr
        assert "statics[1] (/etc → /etc) is not served" in up.stdout, up.stdout
        assert (tmp_path / ".taxiway" / "daemon.log").read_text()  # there to be stolen
        machine = status(tmp_path)["machines"][0]["id"]
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/app/page.txt") == (200, "public page")
        for path in (
            "/app/.taxiway/daemon.log",
            "/app/.taxiway/certs/ca.key",
            "/app/.taxiway/taxiway.db",
            "/app/%2Etaxiway/daemon.log",
            "/etc/passwd",
            "/etc/shadow",
        ):
            assert get_any(base + path) == (200, machine), path  # the app answered
    finally:
        taxiway(tmp_path, "down")
