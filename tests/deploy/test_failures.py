"""Deploys that fail: what stops them, what is put back, what the user is told."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from deploy_app import (
    deploy,
    events,
    get,
    last_event_id,
    machines,
    ok,
    releases,
    status,
    up,
    wait_for,
    write_app,
)

from cli_runner import run_taxiway as taxiway

FAST = "--no-smoke-checks"


def _failed(result: object, *words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, stderr


def test_a_crashing_release_is_rolled_back(app: Path) -> None:
    write_app(app)
    up(app, web=2)
    ids = [m.id for m in machines(app)]
    write_app(app, v="2", env='CRASH = "1"')
    result = deploy(app)  # smoke checks on: a crash fails at once
    _failed(result, "release v2 failed", "crashed (exit code 3)", "put back on 1 machine")
    assert "crashing on purpose" in result.stdout  # the machine's output is shown
    after = machines(app)
    assert [m.id for m in after] == ids
    assert {m.release_version for m in after} == {1}
    assert {m.state for m in after} == {"started"}
    assert get(after[0].ports["8080"]) == "1"
    assert [r["status"] for r in releases(app)] == ["rolled_back", "complete"]
    assert status(app)["release"] == 1
    # only the spearhead was touched: the other machine never stopped
    assert not [e for e in events(app) if e.machine_id == ids[1] and e.type == "update"]


def test_a_failing_check_fails_the_deploy_within_the_wait_timeout(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    write_app(app, v="2", env='STATUS = "500"')
    result = deploy(app, FAST, "--wait-timeout", "3s")
    _failed(result, "did not pass its checks within the wait timeout (3s)", "--wait-timeout")
    assert releases(app)[0]["status"] == "rolled_back"
    assert machines(app)[0].release_version == 1
    assert get(machines(app)[0].ports["8080"]) == "1"


def test_no_rollback_leaves_the_new_release_where_it_got(app: Path) -> None:
    write_app(app)
    up(app, web=2)
    first, second = machines(app)
    write_app(app, v="2", env='CRASH = "1"')
    result = deploy(app, "--no-rollback")
    _failed(result, "release v2 failed")
    assert "keep v2" in result.stdout
    after = {m.id: m for m in machines(app)}
    assert after[first.id].release_version == 2
    assert after[second.id].release_version == 1  # the failure stopped the rollout
    assert releases(app)[0]["status"] == "failed"


def test_auto_rollback_false_in_the_config_is_no_rollback(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    write_app(app, v="2", env='CRASH = "1"', extra="[experimental]\nauto_rollback = false\n")
    _failed(deploy(app), "release v2 failed")
    assert machines(app)[0].release_version == 2
    assert releases(app)[0]["status"] == "failed"


def test_a_failing_release_command_stops_the_deploy_before_any_machine(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    mark = last_event_id(app)
    command = f"{sys.executable} -c 'print(\\\"migration broke\\\"); raise SystemExit(2)'"
    write_app(app, v="2", extra=f'[deploy]\nrelease_command = "{command}"\n')
    result = deploy(app, FAST)
    _failed(result, "release command failed with exit code 2")
    assert "migration broke" in result.stdout
    assert not [e for e in events(app, mark) if e.type in ("update", "stop")]
    assert releases(app)[0]["status"] == "failed"
    assert machines(app)[0].release_version == 1


MACHINE_CHECK = """
[[http_service.machine_checks]]
  command = ["{python}", "-c", "import os, urllib.request; \
e = os.environ; \
r = urllib.request.urlopen('http://' + e['FLY_TEST_MACHINE_IP'] + ':' + e['PORT']); \
body = r.read().decode(); print('got', body); \
assert os.environ['FLY_TEST_COMMAND'] == '1'; \
assert os.environ['FLY_PROCESS_GROUP'] == 'fly_app_test_machine_command'; \
raise SystemExit(0 if body == '{want}' else 1)"]
"""


def test_machine_checks_test_a_new_machine_before_any_update(app: Path) -> None:
    write_app(app)
    up(app, web=2)
    ids = [m.id for m in machines(app)]
    mark = last_event_id(app)
    write_app(app, v="2", extra=MACHINE_CHECK.format(python=sys.executable, want="2"))
    result = ok(deploy(app, FAST))
    assert "machine check 1" in result.stdout and "passed" in result.stdout
    log = events(app, mark)
    created = [e.machine_id for e in log if e.type == "create"]
    assert len(created) == 1  # the test machine, gone before the first update
    destroyed = max(n for n, e in enumerate(log) if e.machine_id == created[0])
    first_update = min(n for n, e in enumerate(log) if e.type == "update")
    assert destroyed < first_update
    assert [m.id for m in machines(app)] == ids


def test_a_failing_machine_check_stops_the_deploy_and_shows_its_output(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    mark = last_event_id(app)
    write_app(app, v="2", extra=MACHINE_CHECK.format(python=sys.executable, want="nope"))
    result = deploy(app, FAST)
    _failed(result, "machine check 1", "failed (exit code 1)")
    assert "got 2" in result.stdout
    assert not [e for e in events(app, mark) if e.type == "update"]
    assert releases(app)[0]["status"] == "failed"
    assert len(machines(app)) == 1  # the test machine is gone


def test_a_second_deploy_is_refused_while_one_runs(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    slow = f"{sys.executable} -c 'import time; time.sleep(3)'"
    write_app(app, v="2", extra=f'[deploy]\nrelease_command = "{slow}"\n')
    ok(deploy(app, FAST, "--detach"))
    second = deploy(app, FAST)
    _failed(second, "a deploy of release v2 is running")
    wait_for(lambda: releases(app)[0]["status"] == "complete", what="the first deploy")
    assert [r["version"] for r in releases(app)] == [2, 1]


def test_scale_and_secrets_are_refused_at_once_while_a_deploy_runs(app: Path) -> None:
    """They would wait for the runtime, which the deploy holds: a sentence, not a hang."""
    write_app(app)
    up(app, web=1)
    slow = f"{sys.executable} -c 'import time; time.sleep(4)'"
    write_app(app, v="2", extra=f'[deploy]\nrelease_command = "{slow}"\n')
    ok(deploy(app, FAST, "--detach"))
    for args in (("scale", "count", "web=2"), ("secrets", "set", "TOKEN=x")):
        refused = taxiway(app, *args)  # without the refusal: queued, then done
        assert refused.returncode == 1
        assert "a deploy of release v2 is running" in refused.stderr
        assert "Traceback" not in refused.stderr
    wait_for(lambda: releases(app)[0]["status"] == "complete", what="the deploy")
    ok(taxiway(app, "scale", "count", "web=2"))
    assert len(machines(app, "web")) == 2


def test_down_during_a_deploy_interrupts_it_and_leaves_nothing_running(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    marker = app / "release-command-ran"
    slow = f'{sys.executable} -c \'import time; open(\\"{marker}\\", \\"w\\"); time.sleep(60)\''
    write_app(app, v="2", extra=f'[deploy]\nrelease_command = "{slow}"\n')
    ok(deploy(app, FAST, "--detach"))
    wait_for(marker.exists, what="the release command to start")
    ok(taxiway(app, "down"))
    assert releases(app)[0]["status"] == "interrupted"
    assert {m.state for m in machines(app)} == {"stopped"}
    assert machines(app)[0].release_version == 1


RELEASE = """
import os, pathlib, time
marker = pathlib.Path("release-command-ran")
if not marker.exists():
    marker.write_text(str(os.getpid()))
    time.sleep(60)
"""


def test_a_daemon_killed_mid_deploy_is_finished_by_the_next_up(app: Path) -> None:
    write_app(app)
    up(app, web=1)
    (app / "release.py").write_text(RELEASE)
    write_app(app, v="2", extra=f'[deploy]\nrelease_command = "{sys.executable} release.py"\n')
    ok(deploy(app, FAST, "--detach"))
    marker = app / "release-command-ran"
    wait_for(lambda: marker.exists() and marker.read_text(), what="the release command")
    daemon = int((app / ".taxiway" / "daemon.lock").read_text())
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not _alive(daemon), what="the daemon to die")

    result = ok(taxiway(app, "up", "-d"))
    assert "interrupted" in result.stdout + result.stderr
    assert not _alive(int(marker.read_text())), "the old release command still runs"
    assert [r["status"] for r in releases(app)] == ["complete", "interrupted", "complete"]
    assert {m.release_version for m in machines(app)} == {3}
    wait_for(lambda: get_v(app) == "2", what="the app to answer on the new release")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def get_v(app: Path) -> str | None:
    port = next(b for b in status(app)["edge"] if b["port"] == 80)["address"].rsplit(":", 1)[1]
    return get(int(port))


def _web_checks_failing(app: Path) -> bool:
    web = [m for m in status(app)["machines"] if m["group"] == "web"]
    return bool(web) and all((m["checks"] or {}).get("critical") for m in web)


def test_rollback_does_not_wait_for_machines_unhealthy_before_the_deploy(app: Path) -> None:
    """web fails its check before and after; the deploy fails on worker. The rollback
    puts web back without waiting for a check that never passed, and says what it did."""
    write_app(app, env='STATUS = "500"', worker=True)
    ok(taxiway(app, "up", "-d", "--driver", "process", "--no-wait"))
    ok(taxiway(app, "scale", "count", "web=2"))
    wait_for(lambda: _web_checks_failing(app), what="web's check to fail")
    write_app(app, v="2", env='STATUS = "500"', worker=str(app / "no-such-program"))

    result = deploy(app, FAST, "--wait-timeout", "10s")
    _failed(result, "release v2 failed", "(worker) could not start")
    assert "could not restore" not in result.stdout, result.stdout
    assert "not healthy; it was not healthy before this deploy either" in result.stdout
    assert "the previous release was put back on 2 machine(s)" in result.stderr
    assert {m.release_version for m in machines(app)} == {1}
    assert releases(app)[0]["status"] == "rolled_back"


def test_a_rollback_says_when_it_could_not_put_the_old_code_back(app: Path) -> None:
    write_app(app)
    ok(taxiway(app, "up", "-d", "--driver", "process"))
    (app / "notes.txt").write_text("a file the previous release did not have\n")
    write_app(app, v="2", env='CRASH = "1"')
    result = deploy(app, FAST)
    _failed(result, "release v2 failed", "but not its code", "the process driver runs it")
    assert "the previous release was put back" not in result.stderr
    assert machines(app)[0].release_version == 1
