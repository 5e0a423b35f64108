"""Running the real `taxiway` command in a subprocess, as a user would, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_taxiway(
    cwd: Path,
    *args: str,
    stdin: str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`taxiway ARGS` in ``cwd``, output captured, colours off, never waiting forever;
    ``env``: variables to set on top of the test's own."""
    return subprocess.run(
        [sys.executable, "-m", "taxiway", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        check=False,
    )


def start_taxiway(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`taxiway ARGS` in ``cwd`` left running (a foreground `up`), its output and errors
    on one text pipe, colours off; the caller stops it and closes the pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "taxiway", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
