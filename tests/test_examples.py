"""The bundled examples are valid and run."""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

import pytest

from cli_runner import run_taxiway
from taxiway.config.diagnostics import Severity
from taxiway.config.loader import load_config

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*/fly.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_examples_are_valid_and_only_the_sidecar_one_warns(path: Path) -> None:
    loaded = load_config(path)
    found = [d for d in loaded.diagnostics if d.severity is not Severity.INFO]
    if path.parent.name == "sidecar":  # kept as the article wrote it, to show the warning
        assert [d.path_str for d in found] == ["services[0].processes"]
        assert "each process group runs on its own machines" in found[0].message
    else:
        assert found == []


def test_the_multi_group_example_runs_its_release_command_then_its_groups(tmp_path: Path) -> None:
    app = tmp_path / "multi"
    shutil.copytree(EXAMPLES_DIR / "multi", app)

    taxiway = functools.partial(run_taxiway, app)

    try:
        assert taxiway("up", "-d").returncode == 0
        assert (app / "app.db").exists()  # created by the release command
        assert taxiway("scale", "count", "web=2").returncode == 0
        machines = json.loads(taxiway("status", "--json").stdout)["machines"]
        assert sorted(m["group"] for m in machines) == ["web", "web", "worker"]
        deadline = time.monotonic() + 10
        while "job done by" not in taxiway("logs", "--group", "worker").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        taxiway("down")


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)"
)
def test_the_sidecar_example_runs_web_and_nginx_on_separate_machines(tmp_path: Path) -> None:
    import urllib.request

    app = tmp_path / "sidecar"
    shutil.copytree(EXAMPLES_DIR / "sidecar", app)

    taxiway = functools.partial(run_taxiway, app)

    def get(port: int, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                return r.read().decode()
        except OSError:
            return None

    try:
        assert taxiway("up", "-d").returncode == 0
        machines = json.loads(taxiway("status", "--json").stdout)["machines"]
        by_group = {m["group"]: m for m in machines}
        assert sorted(by_group) == ["nginx", "web"]  # two machines, not one VM with two processes
        nginx_port = by_group["nginx"]["ports"]["8080"]
        web_port = by_group["web"]["ports"]["8080"]
        assert nginx_port != web_port
        deadline = time.monotonic() + 10
        while get(nginx_port, "/hello.txt") is None or get(web_port, "/") is None:
            assert time.monotonic() < deadline, taxiway("logs").stdout
            time.sleep(0.1)
        assert get(nginx_port, "/hello.txt") == "served by the nginx machine\n"
        assert get(web_port, "/") == f"web machine {by_group['web']['id']}\n"
    finally:
        taxiway("down")


def test_the_sidecar_compose_example_runs_nginx_and_the_app_in_one_machine(
    tmp_path: Path,
) -> None:
    """The example's two compose services are two containers of one machine: the edge
    reaches nginx, which reaches the app over the machine's localhost (the app listens
    on 127.0.0.1 only); `down` leaves nothing in the engine."""
    import urllib.request
    import uuid

    from engine_support import ensure_stand_in_nginx, skip_without_image

    skip_without_image("python:3.12-slim")
    ensure_stand_in_nginx()
    import docker

    app = tmp_path / "sidecar-compose"
    shutil.copytree(EXAMPLES_DIR / "sidecar-compose", app)
    toml = app / "fly.toml"
    name = f"sc{uuid.uuid4().hex[:6]}"  # its own scope, so the engine's objects are its own
    toml.write_text(toml.read_text().replace('app = "web-with-nginx-sidecar"', f'app = "{name}"'))
    taxiway = functools.partial(run_taxiway, app)
    engine = docker.from_env()

    def ours() -> list:
        return engine.containers.list(all=True, filters={"label": f"taxiway.app={name}"})

    try:
        up = taxiway("up", "-d", "--driver", "docker", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(taxiway("status", "--json").stdout)
        (machine,) = status["machines"]  # one machine, two containers
        by_name = {c.labels.get("taxiway.container"): c for c in ours()}
        assert sorted(by_name) == ["app", "nginx"]
        assert {c.labels["taxiway.machine"] for c in by_name.values()} == {machine["id"]}
        edge = next(b for b in status["edge"] if b["port"] == 80)
        body = ""
        deadline = time.monotonic() + 60
        while "via nginx-sidecar" not in body:
            assert time.monotonic() < deadline, taxiway("logs").stdout
            try:
                with urllib.request.urlopen(f"http://{edge['address']}/", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.3)
        assert body == f"hello from the app on machine {machine['id']}, via nginx-sidecar\n"
        logs = taxiway("logs").stdout
        assert "app listening on 127.0.0.1:8000" in logs
        assert "[nginx] " in logs  # the sidecar's output, tagged with its name
        # Only the machine's owner of the network has an address; the app's port on it
        # answers nobody outside the machine: only nginx, over localhost, reaches it.
        networks = by_name["app"].attrs["NetworkSettings"]["Networks"]
        (address,) = [n["IPAddress"] for n in networks.values()]
        assert by_name["nginx"].attrs["HostConfig"]["NetworkMode"].startswith("container:")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{address}:8000/", timeout=2)
        with urllib.request.urlopen(f"http://{address}:8080/", timeout=5) as r:
            assert r.read().decode().endswith("via nginx-sidecar\n")
    finally:
        down = taxiway("down", timeout=120)
        leftovers = ours()
        for image in engine.images.list(filters={"label": f"taxiway.app={name}"}):
            for tag in image.tags:
                engine.images.remove(tag, force=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers == []
