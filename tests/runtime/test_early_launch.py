"""Machines launched before the daemon has an event loop (`taxiway.runtime.early`):
`up -d`'s daemon launches an app without services first, reports, and supervises the
running processes once asyncio is in. Real daemons, real processes, real SQLite."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_runner import run_taxiway as taxiway
from process_watch import alive, wait_for
from taxiway.state.store import Store

WORKER = """
import os, signal, sys, time
def bye(signum, frame):
    with open(os.environ["FLY_MACHINE_ID"] + ".stopped", "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("worker", os.environ["FLY_MACHINE_ID"], "up", flush=True)
while True:
    time.sleep(0.2)
"""

FLY_TOML = """
app = "early"
kill_signal = "SIGTERM"
kill_timeout = 5

[processes]
worker = "{python} worker.py"
crasher = "{python} -c 'import sys; print(\\"crashing\\", flush=True); sys.exit(3)'"

[[restart]]
policy = "on-failure"
retries = 2
processes = ["crasher"]

[[files]]
guest_path = "/etc/early.conf"
raw_value = "hello"
"""


def make_app(folder: Path) -> Path:
    (folder / "worker.py").write_text(textwrap.dedent(WORKER))
    (folder / "fly.toml").write_text(FLY_TOML.format(python=sys.executable))
    return folder


def status(app: Path) -> dict:
    result = taxiway(app, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def machine(app: Path, group: str) -> dict:
    return next(m for m in status(app)["machines"] if m["group"] == group)


LAUNCH = """
import json, sys
from taxiway.api.paths import AppPaths
from taxiway.config.loader import load_config
from taxiway.daemon_startup import prepare
from taxiway.runtime.drivers.process import ProcessDriver
from taxiway.runtime.early import launch_early
from taxiway.runtime.roster import MachineRoster
from taxiway.state.store import Store

loaded = load_config("fly.toml")
paths = AppPaths.for_config(loaded.source.path)
store = Store.open(paths.state_dir)
startup = prepare(loaded, paths, "process", store=store)
driver = ProcessDriver()
roster = MachineRoster(
    loaded, app=startup.app, state_dir=paths.state_dir, store=store, driver=driver
)
early = launch_early(roster, driver)
print(json.dumps({
    "asyncio": "asyncio" in sys.modules,
    "machines": [
        {"id": m.info.id, "group": m.info.group, "state": m.info.state.value,
         "pid": m.info.pid, "running": m.process.poll() is None,
         "mounts": [[str(s), d] for s, d in m.launch.mounts]}
        for m in early
    ],
}))
"""


def test_launching_early_needs_no_event_loop_and_records_each_machine(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", LAUNCH],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = json.loads(out)
    pids = [m["pid"] for m in found["machines"]]
    try:
        assert found["asyncio"] is False
        assert sorted(m["group"] for m in found["machines"]) == ["crasher", "worker"]
        assert {m["state"] for m in found["machines"]} == {"started"}
        worker = next(m for m in found["machines"] if m["group"] == "worker")
        assert worker["running"]  # (once the script is gone, the pipe breaks: it may die)
        [(source, guest)] = worker["mounts"]
        assert guest == "/etc/early.conf"
        assert Path(source).read_bytes() == b"hello"
        with Store.open(app / ".taxiway") as store:
            record = store.get_machine(worker["id"])
            events = [e.type for e in reversed(store.events("early", machine_id=worker["id"]))]
        # the row has the pid (a killed daemon's successor reaps it); "started" comes
        # with supervision
        assert (record.state, record.pid, record.pgid) == ("started", worker["pid"], worker["pid"])
        assert events == ["create", "start"]
    finally:
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):  # it may have died already
                    os.killpg(pid, signal.SIGKILL)


def test_machines_launched_early_are_supervised_like_any_other(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    try:
        up = taxiway(app, "up", "-d")
        assert up.returncode == 0, up.stderr
        # the API answers at once: its socket listened before the report
        worker = machine(app, "worker")
        assert worker["state"] == "started"
        # output printed before supervision began is in the log
        wait_for(lambda: f"worker {worker['id']} up" in taxiway(app, "logs").stdout, "output")
        # the crasher's exits go through its restart policy: exactly 2 retries
        wait_for(
            lambda: (
                machine(app, "crasher")["restarts"] == 2
                and machine(app, "crasher")["state"] == "stopped"
                and machine(app, "crasher")["backoff_s"] == 0
            ),
            "the crasher to give up",
        )
        with Store.open(app / ".taxiway") as store:
            events = [e.type for e in reversed(store.events("early", machine_id=worker["id"]))]
        assert events == ["create", "start", "started"]
        down = taxiway(app, "down")
        assert down.returncode == 0, down.stderr
        assert (app / f"{worker['id']}.stopped").read_text() == "SIGTERM"
        assert not alive(worker["pid"])
    finally:
        taxiway(app, "down")


def test_a_daemon_killed_right_after_launching_leaves_nothing_running(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    try:
        assert taxiway(app, "up", "-d").returncode == 0
        daemon = int((app / ".taxiway" / "daemon.lock").read_text())
        os.kill(daemon, signal.SIGKILL)  # most likely before it supervises anything
        with Store.open(app / ".taxiway") as store:
            pids = [m.pid for m in store.list_machines("early") if m.pid]
        assert pids
        wait_for(lambda: not alive(daemon), "the daemon to die")
        down = taxiway(app, "down")
        assert down.returncode == 0, down.stderr
        wait_for(lambda: not any(alive(pid) for pid in pids), "the machines to be reaped")
    finally:
        taxiway(app, "down")


def test_two_ups_at_once_start_one_daemon(tmp_path: Path) -> None:
    """Both commands find no daemon and send their config; the daemons race for the lock
    and the loser reports it without touching the winner's machines or log."""
    app = make_app(tmp_path)
    command = [sys.executable, "-m", "taxiway", "up", "-d"]
    try:
        both = [
            subprocess.Popen(
                command, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        results = sorted((p.wait(timeout=60), p.stderr.read()) for p in both)
        for p in both:
            p.stdout.close()
            p.stderr.close()
        assert results[0][0] == 0, results
        assert results[1][0] == 1, results
        assert "already running" in results[1][1]
        assert "Traceback" not in results[1][1]
        assert [m["group"] for m in status(app)["machines"]] == ["crasher", "worker"]
        assert "Traceback" not in (app / ".taxiway" / "daemon.log").read_text()
    finally:
        taxiway(app, "down")


def test_more_machines_than_the_count_are_destroyed_by_the_loop(tmp_path: Path) -> None:
    """A stored count below the machines the app has: the early launch leaves it to the
    runtime, which destroys the extra machine and starts the rest."""
    app = make_app(tmp_path)
    try:
        assert taxiway(app, "up", "-d").returncode == 0
        assert taxiway(app, "scale", "count", "worker=2").returncode == 0
        assert taxiway(app, "down").returncode == 0
        with Store.open(app / ".taxiway") as store:
            store.set_count("early", "worker", 1)  # as a crash mid-scale would leave it
        up = taxiway(app, "up", "-d")
        assert up.returncode == 0, up.stderr
        workers = [m for m in status(app)["machines"] if m["group"] == "worker"]
        assert [m["state"] for m in workers] == ["started"]
    finally:
        taxiway(app, "down")
