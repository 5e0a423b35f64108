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
