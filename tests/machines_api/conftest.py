"""A live daemon for the Machines API tests: `taxiway up -d` on a small process-driver app
whose worker exits with code 3 when asked to stop and leaves a file per SIGUSR1."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from api_client import ApiClient

from cli_runner import run_taxiway as taxiway

WORKER = """\
import signal, sys, time
from pathlib import Path

def stop(signum, frame):
    print("worker stopping", flush=True)
    sys.exit(3)

def usr1(signum, frame):
    Path("usr1-received").write_text("yes")

signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGUSR1, usr1)
print("worker up", flush=True)
while True:
    time.sleep(0.2)
"""


@dataclass
class LiveApp:
    folder: Path
    name: str
    url: str
    token: str
    api: ApiClient

    def machine_ids(self) -> list[str]:
        return [m["id"] for m in self.status()["machines"]]

    def status(self) -> dict:
        result = taxiway(self.folder, "status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def start_app(folder: Path, name: str, worker: str = WORKER) -> LiveApp:
    (folder / "worker.py").write_text(worker)
    (folder / "fly.toml").write_text(
        f'app = "{name}"\nkill_timeout = "5s"\n'
        f'[processes]\nworker = "{sys.executable} -u worker.py"\n'
    )
    up = taxiway(folder, "up", "-d")
    assert up.returncode == 0, up.stderr
    status = json.loads(taxiway(folder, "status", "--json").stdout)
    token = taxiway(folder, "api", "token").stdout.strip()
    url = status["api"]["url"]
    return LiveApp(folder, name, url, token, ApiClient(url, token))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    folder = tmp_path_factory.mktemp("machines-api")
    app = start_app(folder, "apitest")
    try:
        yield app
    finally:
        taxiway(folder, "down")
        log = folder / ".taxiway" / "daemon.log"
        if log.exists():
            text = log.read_text()
            assert "machines api | internal error" not in text, text  # a 500 is a bug
