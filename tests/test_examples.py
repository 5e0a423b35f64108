"""The bundled examples are valid and run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taxiway.config.diagnostics import Severity
from taxiway.config.loader import load_config

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*/fly.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_examples_are_valid_without_warnings(path: Path) -> None:
    loaded = load_config(path)
    assert [d for d in loaded.diagnostics if d.severity is not Severity.INFO] == []


def test_the_multi_group_example_runs_its_release_command_then_its_groups(tmp_path: Path) -> None:
    app = tmp_path / "multi"
    shutil.copytree(EXAMPLES_DIR / "multi", app)

    def taxiway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taxiway", *args],
            cwd=app,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )

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
