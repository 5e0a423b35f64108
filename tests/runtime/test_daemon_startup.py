"""Settling a daemon's start-up (`taxiway.daemon_startup.prepare`), as `up -d`'s command
does it in its own process while the daemon it forked imports its machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SETTLE = """
import json, sys
from taxiway.api.paths import AppPaths
from taxiway.config.loader import load_config
from taxiway.daemon_startup import AlreadyRunning, prepare

loaded = load_config("fly.toml")
paths = AppPaths.for_config(loaded.source.path)
startup = prepare(loaded, paths, "auto")
try:
    prepare(loaded, paths, "auto")
    second = "started twice"
except AlreadyRunning as exc:
    second = str(exc)
print(json.dumps({
    "asyncio": "asyncio" in sys.modules,
    "app": startup.app,
    "driver": startup.driver,
    "release": startup.release.version,
    "second": second,
}))
"""


def test_settling_takes_the_lock_and_makes_the_release_without_asyncio(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "settle"\n[processes]\nweb = "sleep 60"\n')
    out = subprocess.run(
        [sys.executable, "-c", SETTLE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = json.loads(out)
    # The command must not import asyncio: the daemon imports it at the same time, and
    # here it would only add ~20 ms to `up -d`.
    assert found["asyncio"] is False
    assert found["app"] == "settle"
    assert found["driver"] in ("process", "namespace")
    assert found["release"] == 1
    assert found["second"].startswith("taxiway is already running this app (daemon pid ")
