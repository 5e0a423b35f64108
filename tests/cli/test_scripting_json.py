"""`--json` on the commands that change state, through the real CLI and daemon: one object
on stdout with stable keys, people's lines on stderr, errors one sentence, secrets' values
nowhere."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway

WORKER = "import time\nprint('worker up', flush=True)\nwhile True:\n    time.sleep(0.2)\n"
SECRET = "s3cret-value-never-shown"
RELEASE_KEYS = {
    "version",
    "status",
    "strategy",
    "created_at",
    "description",
    "config_digest",
    "code_digest",
    "image_id",
    "secrets_digest",
    "current",
    "release_command",
}


def only_json(result) -> dict:
    """The one JSON object on stdout of a command that succeeded."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_release(app: Path, version: int) -> None:
    """Until a detached deploy's release has ended (the machines are the daemon's again)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = json.loads(taxiway(app, "releases", "--json").stdout)
        if any(r["version"] == version and r["status"] != "running" for r in listed):
            return
        time.sleep(0.2)
    raise AssertionError(f"release v{version} did not end in 60 s")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "fly.toml").write_text(
        f'app = "scripted"\n[processes]\nworker = "{sys.executable} -u worker.py"\n'
    )
    yield tmp_path
    taxiway(tmp_path, "down")


def test_up_deploy_rollback_down_print_one_object_each(app: Path) -> None:
    up = taxiway(app, "up", "-d", "--json")
    started = only_json(up)
    assert {"app", "release", "driver", "machines", "edge", "daemon_pid", "notices"} <= set(started)
    assert started["app"] == "scripted" and started["release"] == 1
    assert [m["state"] for m in started["machines"]] == ["started"]
    assert "daemon pid" in up.stderr  # the lines for people went to stderr

    deployed = only_json(taxiway(app, "deploy", "--json"))
    assert set(deployed) == {"app", "release", "detached", "started_app"}
    assert set(deployed["release"]) == RELEASE_KEYS
    assert deployed["release"]["version"] == 2
    assert deployed["release"]["status"] == "complete"
    assert (deployed["detached"], deployed["started_app"]) == (False, False)

    rolled = only_json(taxiway(app, "releases", "rollback", "1", "--json"))
    assert rolled["release"]["version"] == 3 and rolled["release"]["current"] is True
    detached = only_json(taxiway(app, "releases", "--json", "rollback", "--detach"))
    assert detached["detached"] is True and set(detached["release"]) == RELEASE_KEYS
    wait_for_release(app, detached["release"]["version"])

    machine = started["machines"][0]["id"]
    done = taxiway(app, "machine", "exec", "--json", machine[:6], "sh", "-c", "echo out; exit 3")
    assert done.returncode == 3, done.stderr  # the command's exit code, as without --json
    assert json.loads(done.stdout) == {
        "machine": machine,
        "cmd": ["sh", "-c", "echo out; exit 3"],
        "exit_code": 3,
        "stdout": "out\n",
        "stderr": "",
    }

    stopped = only_json(taxiway(app, "machine", "stop", machine, "--json"))
    assert stopped["id"] == machine and stopped["state"] == "stopped"

    down = only_json(taxiway(app, "down", "--json"))
    assert down == {"app": "scripted", "was_running": True, "machines": 1, "leftovers_stopped": 0}
    again = only_json(taxiway(app, "down", "--json"))
    assert again["was_running"] is False


def test_deploy_json_starts_the_app_when_no_daemon_runs(app: Path) -> None:
    result = taxiway(app, "deploy", "--json")
    deployed = only_json(result)
    assert deployed["started_app"] is True
    assert deployed["release"]["version"] == 1 and deployed["release"]["current"] is True
    assert "starting it" in result.stderr


def test_secrets_json_names_only(app: Path) -> None:
    staged = taxiway(app, "secrets", "set", "--json", f"TOKEN={SECRET}")
    assert only_json(staged) == {
        "app": "scripted",
        "changed": ["TOKEN"],
        "staged": True,
        "restarted": 0,
        "release": None,
    }
    assert taxiway(app, "up", "-d").returncode == 0
    imported = taxiway(app, "secrets", "import", "--json", stdin=f"OTHER={SECRET}2\n")
    live = only_json(imported)
    assert live["changed"] == ["OTHER"] and live["restarted"] == 1
    assert live["release"] == 2 and live["staged"] is False
    unset = only_json(taxiway(app, "secrets", "unset", "--json", "OTHER"))
    assert unset["changed"] == ["OTHER"] and unset["release"] == 3
    same = only_json(taxiway(app, "secrets", "set", "--json", f"TOKEN={SECRET}"))
    assert same["changed"] == [] and same["release"] is None
    for result in (staged, imported):
        assert SECRET not in result.stdout + result.stderr


def test_volumes_json_is_the_volume_as_list_shows_it(app: Path) -> None:
    created = only_json(taxiway(app, "volumes", "create", "data", "--size", "2", "--json"))
    assert json.loads(taxiway(app, "volumes", "list", "--json").stdout) == [created]
    assert created["name"] == "data" and created["size_gb"] == 2 and created["state"] == "created"
    grown = only_json(taxiway(app, "volumes", "extend", created["id"], "--size", "5", "--json"))
    assert grown["id"] == created["id"] and grown["size_gb"] == 5
    gone = only_json(taxiway(app, "volumes", "destroy", created["id"], "--json"))
    assert gone["id"] == created["id"] and gone["state"] == "destroyed"


def test_errors_stay_one_sentence_on_stderr(app: Path) -> None:
    foreground = taxiway(app, "up", "--json")
    assert foreground.returncode == 1 and foreground.stdout == ""
    assert foreground.stderr.strip().splitlines() == [
        "taxiway: error: up --json needs -d: in the foreground `up` prints the machines' output "
        "until Ctrl-C and has no result to print; use `taxiway up -d --json`"
    ]
    missing = taxiway(app, "volumes", "destroy", "vol_nothing", "--json")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == "taxiway: error: no volume vol_nothing"
    rollback = taxiway(app, "releases", "rollback", "--json")
    assert rollback.returncode == 1 and rollback.stdout == ""
    assert len(rollback.stderr.strip().splitlines()) == 1
    bad = taxiway(app, "secrets", "set", "--json", "NO_EQUALS")
    assert bad.returncode == 1 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1
