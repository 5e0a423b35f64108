"""Releases: made by `up` and `deploy`, listed, rolled back to."""

from __future__ import annotations

import json
from pathlib import Path

from deploy_app import deploy, get, machines, ok, releases, status, up, write_app

from cli_runner import run_taxiway as taxiway

FAST = "--no-smoke-checks"


def test_up_makes_a_release_only_when_something_changed(app: Path) -> None:
    write_app(app)
    up(app)
    assert [(r["version"], r["status"]) for r in releases(app)] == [(1, "complete")]
    assert status(app)["release"] == 1
    ok(taxiway(app, "down"))
    up(app)  # nothing changed
    assert len(releases(app)) == 1
    ok(taxiway(app, "down"))
    ok(taxiway(app, "secrets", "set", "TOKEN=abc"))
    up(app)
    latest = releases(app)[0]
    assert (latest["version"], latest["description"]) == (2, "taxiway up (secrets changed)")
    ok(taxiway(app, "down"))
    write_app(app, v="2")
    up(app)
    assert releases(app)[0]["description"] == "taxiway up (config changed)"
    assert status(app)["release"] == 3
    assert {m.release_version for m in machines(app)} == {3}


def test_releases_lists_newest_first_and_works_without_a_daemon(app: Path) -> None:
    write_app(app)
    up(app)
    write_app(app, v="2")
    ok(deploy(app, FAST, "--strategy", "immediate"))
    data = releases(app)
    assert [r["version"] for r in data] == [2, 1]
    assert set(data[0]) >= {"version", "status", "strategy", "created_at", "config_digest"}
    assert data[0]["strategy"] == "immediate" and data[0]["current"]
    assert data[0]["config_digest"] != data[1]["config_digest"]
    table = ok(taxiway(app, "releases")).stdout
    assert table.splitlines()[0].split()[:3] == ["VERSION", "STATUS", "STRATEGY"]
    assert "v2 (current)" in table
    ok(taxiway(app, "down"))
    offline = json.loads(ok(taxiway(app, "releases", "--json")).stdout)
    assert [r["version"] for r in offline] == [2, 1]


def test_rollback_deploys_the_previous_complete_release_again(app: Path) -> None:
    write_app(app)
    up(app, web=2)
    write_app(app, v="2")
    ok(deploy(app, FAST))
    result = ok(taxiway(app, "releases", "rollback", FAST, timeout=120))
    assert "rollback to v1" in result.stdout
    latest = releases(app)[0]
    assert (latest["version"], latest["status"]) == (3, "complete")
    assert latest["config_digest"] == releases(app)[2]["config_digest"]
    assert {m.release_version for m in machines(app)} == {3}
    assert get(machines(app)[0].ports["8080"]) == "1"
    again = ok(taxiway(app, "releases", "rollback", "v2", FAST, timeout=120))
    assert "rollback to v2" in again.stdout
    assert get(machines(app)[0].ports["8080"]) == "2"


def test_rollback_says_when_there_is_nothing_to_roll_back_to(app: Path) -> None:
    write_app(app)
    up(app)
    result = taxiway(app, "releases", "rollback")
    assert result.returncode == 1
    assert "no complete release before v1" in result.stderr
    missing = taxiway(app, "releases", "rollback", "9")
    assert missing.returncode == 1
    assert "has no release v9" in missing.stderr


def test_deploy_without_a_daemon_starts_the_app(app: Path) -> None:
    write_app(app)
    result = ok(deploy(app))
    assert "starting it" in result.stdout
    assert status(app)["release"] == 1


def test_new_groups_get_machines_and_removed_groups_lose_theirs(app: Path) -> None:
    write_app(app, worker=True)
    up(app)
    worker = machines(app, "worker")
    assert len(worker) == 1
    write_app(app, v="2")  # no worker group any more
    result = ok(deploy(app, FAST))
    assert "group worker is no longer in the config" in result.stdout
    assert not machines(app, "worker")
    write_app(app, v="3", worker=True)
    result = ok(deploy(app, FAST))
    assert "group worker is new" in result.stdout
    assert [m.release_version for m in machines(app, "worker")] == [3]


def test_a_bad_wait_timeout_is_one_sentence(app: Path) -> None:
    write_app(app)
    up(app)
    result = deploy(app, "--wait-timeout", "5")
    assert result.returncode == 1
    assert "--wait-timeout 5 is not a duration" in result.stderr


def test_up_detached_sees_a_code_only_change(app: Path) -> None:
    """`up -d` takes the code digest in the CLI while its daemon starts, and hands it over."""
    write_app(app)
    up(app)
    ok(taxiway(app, "down"))
    (app / "notes.txt").write_text("a new file in the app's folder\n")
    up(app)
    latest = releases(app)[0]
    assert (latest["version"], latest["description"]) == (2, "taxiway up (code changed)")
    ok(taxiway(app, "down"))
    up(app)  # the same folder again
    assert len(releases(app)) == 2


def test_up_makes_one_release_however_the_config_file_is_named(app: Path) -> None:
    """fly.toml is config, never code, whether named ``fly.toml``, ``./fly.toml``, by
    its folder or by an absolute path: alternating them makes no new release."""
    write_app(app)
    for config in ((), ("-c", "."), ("-c", "fly.toml"), ("-c", "./fly.toml"), ()):
        ok(taxiway(app, "up", "-d", "--driver", "process", *config))
        ok(taxiway(app, "down"))
    ok(taxiway(app, "up", "-d", "--driver", "process", "-c", str(app / "fly.toml")))
    ok(taxiway(app, "down"))
    ok(taxiway(app.parent, "up", "-d", "--driver", "process", "-c", "app"))
    ok(taxiway(app, "down"))
    assert [(r["version"], r["description"]) for r in releases(app)] == [
        (1, "taxiway up (first release)")
    ]
