"""No request is lost while a deploy replaces machines: 200 requests/s through the edge
(`taxiway deploy --under-load 200`) with two machines per group and passing checks."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from deploy_app import (
    all_passing,
    deploy,
    machines,
    ok,
    releases,
    status,
    up,
    wait_for,
    write_app,
)

from cli_runner import run_taxiway as taxiway

RATE = "200"
SUMMARY = re.compile(r"load on \S+: (\d+) requests at [\d.]+/s, (\d+) failed, (\d+) non-2xx")


def _load(output: str) -> tuple[int, int, int]:
    m = SUMMARY.search(output)
    assert m, output
    sent, failed, non_2xx = (int(g) for g in m.groups())
    return sent, failed, non_2xx


def _up_with_edge(app: Path) -> None:
    write_app(app, worker=True)
    up(app, web=2, worker=2)
    if not status(app).get("edge"):
        pytest.skip("the edge is not wired into the daemon (status shows no edge)")
    wait_for(lambda: all_passing(app), what="every machine to pass its checks")


@pytest.mark.parametrize("strategy", ["rolling", "canary", "bluegreen"])
def test_a_deploy_loses_no_request(app: Path, strategy: str) -> None:
    _up_with_edge(app)
    write_app(app, v="2", worker=True)
    result = deploy(app, "--no-smoke-checks", "--strategy", strategy, "--under-load", RATE)
    assert result.returncode == 0, result.stdout + result.stderr
    sent, failed, non_2xx = _load(result.stdout)
    assert sent > 0
    assert (failed, non_2xx) == (0, 0), result.stdout
    assert {m.release_version for m in machines(app)} == {2}


def test_a_failing_release_rolls_back_without_losing_a_request(app: Path) -> None:
    _up_with_edge(app)
    write_app(app, v="2", env='CRASH = "1"', worker=True)
    result = deploy(app, "--under-load", RATE)
    assert result.returncode == 1
    assert "release v2 failed" in result.stderr
    sent, failed, non_2xx = _load(result.stdout)
    assert sent > 0
    assert (failed, non_2xx) == (0, 0), result.stdout
    assert releases(app)[0]["status"] == "rolled_back"
    assert {m.release_version for m in machines(app)} == {1}


def _edge_port(app: Path) -> int:
    return int(next(b for b in status(app)["edge"] if b["port"] == 80)["address"].rsplit(":", 1)[1])


def _requests_while(port: int, stop: threading.Event) -> list[str]:
    """GET / every 20 ms on new connections until ``stop``; each answer's body, or what
    went wrong."""
    answers: list[str] = []
    threads = []

    def one() -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=40) as r:
                answers.append(r.read().decode())
        except urllib.error.HTTPError as exc:
            answers.append(f"HTTP {exc.code}")
        except OSError as exc:
            answers.append(f"failed: {exc}")

    while not stop.is_set():
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    return answers


def test_an_immediate_deploy_holds_requests_until_the_new_release_serves(app: Path) -> None:
    """Every machine is replaced at once: the edge holds requests while none is back
    (as the platform's proxy keeps looking for a machine) instead of answering 502/503."""
    write_app(app)
    ok(taxiway(app, "up", "-d", "--driver", "process"))  # one machine: nothing else serves
    wait_for(lambda: all_passing(app), what="the machine to pass its checks")
    port = _edge_port(app)
    write_app(app, v="2")
    stop = threading.Event()
    answers: list[str] = []
    load = threading.Thread(target=lambda: answers.extend(_requests_while(port, stop)))
    load.start()
    try:
        result = deploy(app, "--no-smoke-checks", "--strategy", "immediate", "--under-load", "50")
        wait_for(lambda: all_passing(app), what="the new machines to pass their checks")
    finally:
        stop.set()
        load.join()
    assert result.returncode == 0, result.stdout + result.stderr
    _, failed, non_2xx = _load(result.stdout)
    assert (failed, non_2xx) == (0, 0), result.stdout
    assert "2" in answers and set(answers) <= {"1", "2"}, sorted(set(answers))
