"""Secrets, the release command and the console, through the real CLI and daemon."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway

SHOW_ENV = "import os, json, time; print(json.dumps(dict(os.environ)), flush=True); time.sleep(60)"


def write_app(path: Path, extra: str = "") -> Path:
    (path / "show_env.py").write_text(SHOW_ENV)
    (path / "fly.toml").write_text(
        'app = "sec"\n'
        'kill_signal = "SIGTERM"\n'
        f"{extra}\n"
        '[env]\nTOKEN = "from-env"\nPLAIN = "plain"\n'
        f'[processes]\nweb = "{sys.executable} show_env.py"\n'
    )
    return path


def machine_env(app: Path) -> dict[str, str]:
    logs = taxiway(app, "logs", "--json").stdout.splitlines()
    dumps = [
        json.loads(json.loads(line)["line"])
        for line in logs
        if json.loads(line)["line"].startswith("{")
    ]
    return dumps[-1]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    yield write_app(tmp_path)
    taxiway(tmp_path, "down")


def test_secrets_win_over_env_and_changes_restart_machines(app: Path) -> None:
    staged = taxiway(app, "secrets", "set", "TOKEN=s3cret-one")
    assert staged.returncode == 0, staged.stderr
    assert "staged for the next `taxiway up`" in staged.stdout
    assert taxiway(app, "up", "-d").returncode == 0
    assert machine_env(app)["TOKEN"] == "s3cret-one"
    assert machine_env(app)["PLAIN"] == "plain"

    changed = taxiway(app, "secrets", "set", "TOKEN=s3cret-two", "OTHER=x=y")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "set TOKEN, OTHER; restarted 1 machine(s); release v2"
    releases = json.loads(taxiway(app, "releases", "--json").stdout)
    assert [(r["version"], r["status"], r["current"]) for r in releases] == [
        (2, "complete", True),
        (1, "complete", False),
    ]
    assert releases[0]["description"] == "secrets changed: TOKEN, OTHER"
    assert releases[0]["config_digest"] == releases[1]["config_digest"]
    assert releases[0]["code_digest"] == releases[1]["code_digest"]
    assert releases[0]["secrets_digest"] != releases[1]["secrets_digest"]
    assert json.loads(taxiway(app, "status", "--json").stdout)["release"] == 2
    deadline = time.monotonic() + 10
    while machine_env(app)["TOKEN"] != "s3cret-two" and time.monotonic() < deadline:
        time.sleep(0.1)
    env = machine_env(app)
    assert env["TOKEN"] == "s3cret-two"
    assert env["OTHER"] == "x=y"
    again = taxiway(app, "secrets", "set", "TOKEN=s3cret-two")
    assert again.stdout.strip() == "no secret changed"
    assert len(json.loads(taxiway(app, "releases", "--json").stdout)) == 2
    assert taxiway(app, "down").returncode == 0
    assert taxiway(app, "up", "-d").returncode == 0  # nothing changed since v2
    assert len(json.loads(taxiway(app, "releases", "--json").stdout)) == 2


def test_secrets_are_never_printed_and_stored_privately(app: Path) -> None:
    assert (
        taxiway(
            app, "secrets", "import", stdin="# comment\nA=alpha-value\n\nB=beta-value\n"
        ).returncode
        == 0
    )
    listed = taxiway(app, "secrets", "list")
    assert "alpha-value" not in listed.stdout and "beta-value" not in listed.stdout
    assert "A" in listed.stdout and "DIGEST" in listed.stdout
    as_json = json.loads(taxiway(app, "secrets", "list", "--json").stdout)
    assert [s["name"] for s in as_json] == ["A", "B"]
    assert stat.S_IMODE((app / ".taxiway" / "taxiway.db").stat().st_mode) == 0o600
    gone = taxiway(app, "secrets", "unset", "A", "NOPE")
    assert gone.stdout.startswith("unset A;")
    assert taxiway(app, "secrets", "set", "novalue").returncode == 1


def test_fly_names_in_env_and_secrets_warn_and_the_platform_wins(tmp_path: Path) -> None:
    """The reference forbids FLY_ names, the platform accepts them: `up` runs, with a
    warning, and the values the platform sets itself win over the user's."""
    (tmp_path / "show_env.py").write_text(SHOW_ENV)
    (tmp_path / "fly.toml").write_text(
        'app = "flyenv"\n'
        'kill_signal = "SIGTERM"\n'
        '[env]\nFLY_API_HOSTNAME = "https://api.example"\nFLY_REGION = "mine"\n'
        f'[processes]\nweb = "{sys.executable} show_env.py"\n'
    )
    try:
        staged = taxiway(tmp_path, "secrets", "set", "FLY_MACHINE_ID=bogus", "FLY_TOKEN=t")
        assert staged.returncode == 0, staged.stderr
        assert (
            "warning: secret FLY_MACHINE_ID: the reference says env variable names cannot "
            "begin with FLY_"
        ) in staged.stderr
        assert "secret FLY_TOKEN" in staged.stderr
        validated = taxiway(tmp_path, "config", "validate")
        assert validated.returncode == 0, validated.stdout
        assert "env.FLY_API_HOSTNAME" in validated.stdout + validated.stderr
        started = taxiway(tmp_path, "up", "-d")
        assert started.returncode == 0, started.stderr
        env = machine_env(tmp_path)
        machine = json.loads(taxiway(tmp_path, "status", "--json").stdout)["machines"][0]
        assert env["FLY_API_HOSTNAME"] == "https://api.example"
        assert env["FLY_TOKEN"] == "t"
        assert env["FLY_REGION"] == "local"
        assert env["FLY_MACHINE_ID"] == machine["id"]
        assert taxiway(tmp_path, "secrets", "unset", "FLY_TOKEN").returncode == 0
    finally:
        taxiway(tmp_path, "down")


def test_release_command_runs_first_with_its_own_environment(tmp_path: Path) -> None:
    marker = tmp_path / "released.json"
    script = tmp_path / "release.py"
    script.write_text(
        "import json, os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text(json.dumps(dict(os.environ)))\n"
        "print('migrated')\n"
    )
    write_app(tmp_path, f'[deploy]\nrelease_command = "{sys.executable} release.py"\n')
    try:
        result = taxiway(tmp_path, "up", "-d")
        assert result.returncode == 0, result.stderr
        env = json.loads(marker.read_text())
        assert env["RELEASE_COMMAND"] == "1"
        assert env["FLY_PROCESS_GROUP"] == "fly_app_release_command"
        assert env["TOKEN"] == "from-env"
        assert "PORT" not in env
    finally:
        taxiway(tmp_path, "down")


def test_a_failing_release_command_stops_up_and_shows_its_output(tmp_path: Path) -> None:
    (tmp_path / "release.py").write_text("print('migration 42 broke'); raise SystemExit(3)\n")
    write_app(tmp_path, f'[deploy]\nrelease_command = "{sys.executable} release.py"\n')
    for args in (("up",), ("up", "-d")):
        result = taxiway(tmp_path, *args)
        assert result.returncode == 1, result
        assert "release command failed with exit code 3" in result.stderr
        assert "Traceback" not in result.stderr
        assert "fly_app_release_command" in result.stdout  # streamed as it ran
        assert "migration 42 broke" in result.stdout
    assert not (tmp_path / ".taxiway" / "taxiway.sock").exists()
    logs = taxiway(tmp_path, "logs")
    assert "migration 42 broke" in logs.stdout


def test_a_hanging_release_command_is_killed_at_its_timeout(tmp_path: Path) -> None:
    (tmp_path / "release.py").write_text(
        "import os, pathlib, time\n"
        "pathlib.Path('pid').write_text(str(os.getpid()))\n"
        "print('migrating...', flush=True)\n"
        "time.sleep(600)\n"
    )
    write_app(
        tmp_path,
        f'[deploy]\nrelease_command = "{sys.executable} release.py"\n'
        'release_command_timeout = "1s"\n',
    )
    result = taxiway(tmp_path, "up", "-d")
    assert result.returncode == 1, result
    assert "release command timed out after 1s (release_command_timeout)" in result.stderr
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "migrating..." in taxiway(tmp_path, "logs").stdout


def test_console_runs_interactively_with_the_apps_environment(tmp_path: Path) -> None:
    write_app(tmp_path, 'console_command = "/bin/sh"')
    taxiway(tmp_path, "secrets", "set", "TOKEN=console-secret")
    result = taxiway(tmp_path, "console", stdin='echo "$FLY_PROCESS_GROUP $TOKEN $PLAIN"; exit 7\n')
    assert result.returncode == 7
    assert result.stdout.strip() == "fly_app_console console-secret plain"
    other = taxiway(tmp_path, "console", "--command", f"{sys.executable} -c 'print(42)'")
    assert other.stdout.strip() == "42"


def test_console_without_a_command_says_what_to_add(tmp_path: Path) -> None:
    write_app(tmp_path)
    result = taxiway(tmp_path, "console")
    assert result.returncode == 1
    assert "has no console_command; add one" in result.stderr


def test_the_images_env_is_below_env_secrets_and_the_platforms(tmp_path: Path) -> None:
    """The Dockerfile's ENV (of the stage built) reaches the machines as the platform's
    image would give it, under [env], secrets and the platform's variables."""
    (tmp_path / "show_env.py").write_text(SHOW_ENV)
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.12 AS base\n"
        "ENV PYTHONUNBUFFERED=1 \\\n    TOKEN=from-image\n"
        "FROM base\n"
        'ENV NODE_ENV production\nENV PATH="/app/.venv/bin:$PATH" PLAIN=from-image\n'
        "ENV FLY_REGION=image\n"
    )
    write_app(tmp_path)
    try:
        assert taxiway(tmp_path, "secrets", "set", "TOKEN=from-secret").returncode == 0
        shown = json.loads(taxiway(tmp_path, "config", "machines", "--json").stdout)
        assert shown["web"]["image_env"]["PATH"] == "/app/.venv/bin:${PATH}"
        assert "NODE_ENV=production" in taxiway(tmp_path, "config", "machines").stdout
        assert taxiway(tmp_path, "up", "-d", "--driver", "process").returncode == 0
        env = machine_env(tmp_path)
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["NODE_ENV"] == "production"
        assert env["PLAIN"] == "plain"  # [env] wins over the image
        assert env["TOKEN"] == "from-secret"  # and secrets over both
        assert env["PATH"] == "/app/.venv/bin:" + os.environ["PATH"]
        assert env["FLY_REGION"] == "local"
    finally:
        taxiway(tmp_path, "down")
