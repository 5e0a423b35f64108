"""A real app's use of the Machines API, end to end: a job runner running in one of the
app's machines (of a daemon started by `taxiway up -d`) makes a machine per job with the
app's own image, waits for it to stop, reads its exit code from its events and destroys
it. With the namespace driver it finds the API as a platform machine does, at
``http://_api.internal:4280`` through the private network's DNS, with the token the app
keeps as a secret (FLY_API_TOKEN); with the process driver, at the host's API URL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from taxiway.private_net import host
from taxiway.runtime.drivers import unusable_reason

JOBAPP = Path(__file__).parent / "jobapp"


def _skip_reason(driver: str) -> str | None:
    if driver != "namespace":
        return None
    missing = unusable_reason() or host.unavailable_reason()
    return None if missing is None else f"_api.internal needs the namespace driver and {missing}"


@pytest.fixture(params=["process", "namespace"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    driver = request.param
    reason = _skip_reason(driver)
    if reason is not None:
        pytest.skip(reason)
    folder = tmp_path / "jobapp"
    shutil.copytree(JOBAPP, folder)
    env = {"TAXIWAY_DRIVER": driver}
    up = taxiway(folder, "up", "-d", env=env, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield folder, env
    finally:
        taxiway(folder, "down", env=env, timeout=60)


def test_a_job_runner_in_a_machine_drives_machines_through_the_api(
    app: tuple[Path, dict[str, str]],
) -> None:
    folder, env = app
    token = taxiway(folder, "api", "token").stdout.strip()
    status = json.loads(taxiway(folder, "status", "--json").stdout)
    secrets = [f"FLY_API_TOKEN={token}"]
    if status["driver"] == "process":  # the host's network: the host's address of the API
        secrets.append(f"MACHINES_API_URL={status['api']['url']}")
    assert taxiway(folder, "secrets", "set", *secrets, env=env).returncode == 0
    idle = json.loads(taxiway(folder, "status", "--json").stdout)["machines"][0]["id"]

    ran = taxiway(folder, "machine", "exec", idle, "--", "python3", "runner.py", timeout=120)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    done = json.loads((folder / "results.json").read_text())
    assert [(r["job"], r.get("exit_code"), r.get("destroyed")) for r in done] == [
        (1, 3, 200),
        (2, 6, 200),
        (3, 9, 200),
    ], done
    machines = json.loads(taxiway(folder, "status", "--json").stdout)["machines"]
    assert [m["id"] for m in machines] == [idle]  # every job machine destroyed
