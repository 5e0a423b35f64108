"""Each strategy's order of operations, read from the machines' events in the store."""

from __future__ import annotations

import itertools
from pathlib import Path

from deploy_app import (
    deploy,
    events,
    get,
    index,
    last_event_id,
    machines,
    ok,
    releases,
    up,
    write_app,
)

from cli_runner import run_taxiway as taxiway

FAST = "--no-smoke-checks"


def test_rolling_updates_in_place_one_at_a_time(app: Path) -> None:
    write_app(app)
    up(app, web=3)
    before = [m.id for m in machines(app)]
    mark = last_event_id(app)
    write_app(app, v="2")
    result = ok(deploy(app, FAST))
    assert "release v2 (rolling)" in result.stdout
    after = machines(app)
    assert [m.id for m in after] == before  # same ids: updated in place
    assert {m.release_version for m in after} == {2}
    log = events(app, mark)
    assert not [e for e in log if e.type == "create"]
    # max_unavailable 0.33 of 3 → 1: each machine is started again before the next stops
    for current, following in itertools.pairwise(before):
        assert index(log, current, "started") < index(log, following, "stop")
    for machine_id in before:
        stop = index(log, machine_id, "stop", "stopping")
        assert stop < index(log, machine_id, "update", "replacing")
        assert index(log, machine_id, "update") < index(log, machine_id, "started")
    assert get(after[0].ports["8080"]) == "2"
    assert releases(app)[0]["status"] == "complete"


def test_max_unavailable_batches_after_a_first_machine_alone(app: Path) -> None:
    write_app(app)
    up(app, web=4)
    ids = [m.id for m in machines(app)]
    mark = last_event_id(app)
    write_app(app, v="2")
    ok(deploy(app, FAST, "--max-unavailable", "2"))
    log = events(app, mark)
    down: set[str] = set()
    most = 0
    for e in log:
        if e.type == "stop" and e.status == "stopping":
            down.add(e.machine_id or "")
        elif e.type == "started":
            down.discard(e.machine_id or "")
        most = max(most, len(down))
    assert most == 2
    first_back = index(log, ids[0], "started")
    assert all(index(log, m, "stop") > first_back for m in ids[1:])  # the spearhead
    # the second and third go down together, before either is back
    assert index(log, ids[2], "stop") < index(log, ids[1], "started")


def test_a_stopped_machine_is_updated_and_stays_stopped(app: Path) -> None:
    write_app(app)
    up(app, web=2)
    stopped, running = machines(app)
    ok(taxiway(app, "machine", "stop", stopped.id))
    mark = last_event_id(app)
    write_app(app, v="2")
    ok(deploy(app, FAST))
    after = {m.id: m for m in machines(app)}
    assert after[stopped.id].state == "stopped"
    assert after[stopped.id].release_version == 2
    assert after[running.id].state == "started"
    log = events(app, mark)
    assert [e.type for e in log if e.machine_id == stopped.id] == ["update", "update"]


def test_immediate_stops_every_machine_before_any_is_back(app: Path) -> None:
    write_app(app)
    up(app, web=3)
    ids = [m.id for m in machines(app)]
    mark = last_event_id(app)
    write_app(app, v="2")
    result = ok(deploy(app, "--strategy", "immediate"))
    assert "is healthy" not in result.stdout  # immediate waits for nothing
    log = events(app, mark)
    last_stop = max(index(log, m, "stop", "stopping") for m in ids)
    first_start = min(index(log, m, "started") for m in ids)
    assert last_stop < first_start
    assert [m.id for m in machines(app)] == ids
    assert {m.release_version for m in machines(app)} == {2}


def test_canary_boots_and_destroys_one_machine_per_group_then_rolls(app: Path) -> None:
    write_app(app, worker=True)
    up(app, web=2, worker=1)
    ids = [m.id for m in machines(app)]
    mark = last_event_id(app)
    write_app(app, v="2", worker=True)
    result = ok(deploy(app, FAST, "--strategy", "canary"))
    assert result.stdout.count("canary") >= 2
    log = events(app, mark)
    canaries = [e.machine_id for e in log if e.type == "create"]
    assert len(canaries) == 2  # one per group
    first_update = min(index(log, m, "update") for m in ids)
    for canary in canaries:
        assert canary is not None
        assert index(log, canary, "started") < index(log, canary, "destroy")
        assert index(log, canary, "destroy", "destroyed") < first_update
    assert [m.id for m in machines(app)] == ids  # the canaries are gone, the rest rolled
    assert {m.release_version for m in machines(app)} == {2}


def test_bluegreen_starts_greens_beside_blues_then_destroys_the_blues(app: Path) -> None:
    write_app(app)
    up(app, web=2)
    blues = [m.id for m in machines(app)]
    mark = last_event_id(app)
    write_app(app, v="2")
    ok(deploy(app, FAST, "--strategy", "bluegreen"))
    log = events(app, mark)
    greens = [e.machine_id or "" for e in log if e.type == "create"]
    assert len(greens) == 2
    assert sorted(m.id for m in machines(app)) == sorted(greens)
    assert {m.release_version for m in machines(app)} == {2}
    switched = min(index(log, g, "uncordon") for g in greens)
    for green in greens:
        assert index(log, green, "cordon") < index(log, green, "started") < switched
    for blue in blues:
        assert switched < index(log, blue, "stop", "stopping")
        assert index(log, blue, "stop", "stopping") < index(log, blue, "destroy", "destroyed")
    assert get(machines(app)[0].ports["8080"]) == "2"


def test_canary_and_bluegreen_are_refused_with_volumes(app: Path) -> None:
    write_app(app, extra='[mounts]\nsource = "data"\ndestination = "/data"\n')
    for strategy in ("canary", "bluegreen"):
        result = deploy(app, "--strategy", strategy)
        assert result.returncode == 1
        assert f"the {strategy} strategy cannot be used" in result.stderr
        assert "volumes" in result.stderr
        assert "Traceback" not in result.stderr


def test_bluegreen_is_refused_without_checks(app: Path) -> None:
    write_app(app, checks=False)
    result = deploy(app, "--strategy", "bluegreen")
    assert result.returncode == 1
    assert "needs at least one health check" in result.stderr
