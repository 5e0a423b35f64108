"""`taxiway up` end to end: a real daemon, real machines (process trees), real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from cli_runner import start_taxiway

WEB = """
import os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def bye(signum, frame):
    with open(os.environ["MARKER_DIR"] + "/" + os.environ["FLY_MACHINE_ID"], "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(0)

signal.signal(signal.SIGTERM, bye)
signal.signal(signal.SIGINT, bye)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["FLY_MACHINE_ID"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

print("web listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

WORKER = """
import os, time
print("worker", os.environ["FLY_MACHINE_ID"], "up", flush=True)
while True:
    time.sleep(0.2)
"""

CRASHER = """
import sys
print("crashing", flush=True)
sys.exit(3)
"""

FLY_TOML = """
app = "uptest"
primary_region = "ams"
kill_signal = "SIGTERM"
kill_timeout = 5

[env]
MARKER_DIR = "{markers}"
GREETING = "hi"

[processes]
web = "{python} web.py"
worker = "{python} worker.py"
crasher = "{python} crasher.py"

[http_service]
internal_port = 8080
processes = ["web"]

[[restart]]
policy = "on-failure"
retries = 2
processes = ["crasher"]
"""


def status(app: Path) -> dict:
    result = taxiway(app, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "web.py").write_text(textwrap.dedent(WEB))
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "crasher.py").write_text(textwrap.dedent(CRASHER))
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(markers=markers, python=sys.executable))
    yield tmp_path
    taxiway(tmp_path, "down")


def test_up_detached_runs_every_group_on_its_own_machines(app: Path) -> None:
    result = taxiway(app, "up", "-d")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "taxiway down" in result.stdout
    data = status(app)
    assert set(data) >= {"app", "release", "machines"}
    assert data["app"] == "uptest"
    groups = sorted(m["group"] for m in data["machines"])
    assert groups == ["crasher", "web", "worker"]
    for m in data["machines"]:
        assert set(m) >= {"id", "group", "state", "region", "restarts", "private_ip", "checks"}
        assert len(m["id"]) == 14
        assert m["region"] == "ams"
    web = next(m for m in data["machines"] if m["group"] == "web")
    assert web["state"] == "started"
    port = web["ports"]["8080"]
    wait_for(lambda: _get(port) == web["id"], what="the web machine to answer on its PORT")


def _get(port: int) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return r.read().decode()
    except OSError:
        return None


def test_a_second_up_says_one_is_running(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    again = taxiway(app, "up", "-d")
    assert again.returncode == 1
    assert "already running" in again.stderr
    assert "Traceback" not in again.stderr


def _processes_in(folder: Path) -> list[int]:
    """Pids of the processes whose working directory is ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_second_up_leaves_the_running_daemon_alone(tmp_path: Path) -> None:
    """`up -d` forks its daemon before it checks; the fork that finds the app running
    leaves without writing anything or touching the running one."""
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(
        f'app = "twice"\n[processes]\nworker = "{sys.executable} worker.py"\n'
    )
    try:
        assert taxiway(tmp_path, "up", "-d").returncode == 0
        before = status(tmp_path)
        pids = sorted(_processes_in(tmp_path))
        log = (tmp_path / ".taxiway" / "daemon.log").read_text()
        assert taxiway(tmp_path, "up", "-d").returncode == 1
        assert status(tmp_path)["machines"] == before["machines"]
        assert sorted(_processes_in(tmp_path)) == pids
        assert (tmp_path / ".taxiway" / "daemon.log").read_text() == log
    finally:
        taxiway(tmp_path, "down")


def test_two_ups_at_once_name_the_daemon_that_won(tmp_path: Path) -> None:
    """The losing `up -d` names the winner's daemon, not the command that forked it (an
    app with a release command settles its start-up in the command) nor a daemon that
    ran before."""
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(
        'app = "race"\n[deploy]\nrelease_command = "true"\n'
        f'[processes]\nworker = "{sys.executable} worker.py"\n'
    )
    command = [sys.executable, "-m", "taxiway", "up", "-d"]
    try:
        for _ in range(4):
            ups = [
                subprocess.Popen(
                    command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                for _ in range(2)
            ]
            outputs = [up.communicate(timeout=60)[0].decode() for up in ups]
            won = [re.search(r"^daemon pid (\d+);", out, re.M) for out in outputs]
            winners = [m.group(1) for m in won if m]
            assert len(winners) == 1, outputs
            daemon = json.loads(taxiway(tmp_path, "status", "--json").stdout)
            assert daemon["machines"], outputs
            for out in outputs:
                named = re.search(r"already running this app \(daemon pid (\S+)\)", out)
                if named:
                    assert named.group(1) == winners[0], outputs
            assert taxiway(tmp_path, "down").returncode == 0
    finally:
        taxiway(tmp_path, "down")


def test_the_state_folder_keeps_itself_out_of_git(tmp_path: Path) -> None:
    """.taxiway holds the secrets' store, volumes and logs: git must not offer to commit
    it, whether taxiway made the folder or finds one made before it wrote .gitignore."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(
        f'app = "gitapp"\n[processes]\nworker = "{sys.executable} worker.py"\n'
    )

    def untracked() -> list[str]:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sorted(line[3:] for line in out.splitlines())

    assert taxiway(tmp_path, "secrets", "set", "TOKEN=x").returncode == 0
    assert untracked() == ["fly.toml", "worker.py"]
    (tmp_path / ".taxiway" / ".gitignore").unlink()  # a folder from before taxiway wrote it
    assert ".taxiway/taxiway.db" in untracked()
    try:
        assert taxiway(tmp_path, "up", "-d").returncode == 0
        assert untracked() == ["fly.toml", "worker.py"]
    finally:
        taxiway(tmp_path, "down")


def test_up_detached_with_config_errors_leaves_no_trace(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "bad"\n[processes]\nweb = 3\n')
    result = taxiway(tmp_path, "up", "-d")
    assert result.returncode == 1
    assert "processes.web" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".taxiway").exists()
    assert _processes_in(tmp_path) == []


def test_environment_has_the_platforms_variables(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    web = next(m for m in status(app)["machines"] if m["group"] == "web")
    result = taxiway(
        app,
        "machine",
        "exec",
        web["id"],
        sys.executable,
        "-c",
        "import os, json; print(json.dumps(dict(os.environ)))",
    )
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)
    assert env["FLY_APP_NAME"] == "uptest"
    assert env["FLY_MACHINE_ID"] == env["FLY_ALLOC_ID"] == web["id"]
    assert env["FLY_REGION"] == "ams"
    assert env["FLY_PROCESS_GROUP"] == "web"
    assert env["PRIMARY_REGION"] == "ams"
    assert env["FLY_PRIVATE_IP"] == web["private_ip"]
    assert len(env["FLY_MACHINE_VERSION"]) == 26
    assert env["FLY_IMAGE_REF"].startswith("registry.fly.io/uptest:deployment-")
    assert env["FLY_VM_MEMORY_MB"] == "256"
    assert env["GREETING"] == "hi"
    assert env["PORT"] == str(web["ports"]["8080"])


def test_restart_policy_retries_exactly_then_stops(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0

    def crasher() -> dict:
        return next(m for m in status(app)["machines"] if m["group"] == "crasher")

    def gave_up() -> bool:
        m = crasher()
        return m["state"] == "stopped" and m["backoff_s"] == 0

    wait_for(gave_up, timeout=20, what="the crasher to give up")
    assert crasher()["restarts"] == 2
    assert crasher()["exit_code"] == 3
    logs = taxiway(app, "logs", "--group", "crasher")
    assert logs.stdout.count("crashing") == 3
    assert "gave up after 2 restarts" in logs.stdout


def test_down_stops_gracefully_with_the_kill_signal(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    machines = status(app)["machines"]
    web = next(m for m in machines if m["group"] == "web")
    pids = [m["pid"] for m in machines if m["pid"]]
    result = taxiway(app, "down")
    assert result.returncode == 0, result.stderr
    assert "is down" in result.stdout
    assert (app / "markers" / web["id"]).read_text() == "SIGTERM"
    assert not any(alive(pid) for pid in pids)
    assert taxiway(app, "status").returncode == 1


def test_scale_is_live_and_kept_for_the_next_up(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    result = taxiway(app, "scale", "count", "web=3", "worker=0")
    assert result.returncode == 0, result.stderr
    data = status(app)
    assert sum(m["group"] == "web" for m in data["machines"]) == 3
    assert not any(m["group"] == "worker" for m in data["machines"])
    ports = {m["ports"]["8080"] for m in data["machines"] if m["group"] == "web"}
    assert len(ports) == 3  # side by side: each machine its own PORT
    assert taxiway(app, "down").returncode == 0
    assert taxiway(app, "up", "-d").returncode == 0
    data = status(app)
    assert sum(m["group"] == "web" for m in data["machines"]) == 3
    show = taxiway(app, "scale", "show", "--json")
    assert json.loads(show.stdout)["web"]["count"] == 3


def test_machine_stop_start_destroy(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    worker = next(m for m in status(app)["machines"] if m["group"] == "worker")
    stopped = taxiway(app, "machine", "stop", worker["id"][:6])
    assert stopped.returncode == 0, stopped.stderr
    assert f"machine {worker['id']} is stopped" in stopped.stdout
    assert not alive(worker["pid"])
    started = taxiway(app, "machine", "start", worker["id"])
    assert "is started" in started.stdout
    gone = taxiway(app, "machine", "destroy", worker["id"])
    assert gone.returncode == 0
    assert worker["id"] not in {m["id"] for m in status(app)["machines"]}
    missing = taxiway(app, "machine", "stop", "ffffffffffffff")
    assert missing.returncode == 1
    assert "no machine ffffffffffffff" in missing.stderr


def test_no_app_process_survives_a_killed_daemon(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    data = status(app)
    pids = [m["pid"] for m in data["machines"] if m["pid"]]
    daemon_pid = int((app / ".taxiway" / "daemon.lock").read_text())
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon_pid), what="the daemon to die")
    result = taxiway(app, "down")
    assert result.returncode == 0, result.stderr
    assert "cleaned up" in result.stdout
    wait_for(lambda: not any(alive(p) for p in pids), what="orphans to be reaped")


def test_state_and_socket_are_private(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    state = app / ".taxiway"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "taxiway.sock").stat().st_mode & 0o777) == "0o600"
    assert oct((state / "taxiway.db").stat().st_mode & 0o777) == "0o600"


def test_machines_hold_nothing_of_the_daemons(app: Path) -> None:
    """A machine holding the daemon's lock (or its store) would outlive a killed daemon
    with it, and keep the next `up` out."""
    assert taxiway(app, "up", "-d").returncode == 0
    state = (app / ".taxiway").resolve()
    daemon = int((state / "daemon.lock").read_text())
    assert str(state / "daemon.lock") in _open_files(daemon, state)  # what is looked for
    pids = [m["pid"] for m in status(app)["machines"] if m["group"] != "crasher"]
    assert len(pids) == 2 and all(pids)
    for pid in pids:
        assert _open_files(pid, state) == [], f"machine process {pid} holds the daemon's files"


def _open_files(pid: int, folder: Path) -> list[str]:
    """The files under ``folder`` that process ``pid`` has open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{folder}/"):
            found.append(target)
    return found


def test_up_in_the_foreground_prints_output_and_stops_on_ctrl_c(app: Path) -> None:
    proc = start_taxiway(app, "up")
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "machines started" in line:
                break
        wait_for(lambda: status(app)["machines"][0]["state"] != "starting", what="machines")
        web = next(m for m in status(app)["machines"] if m["group"] == "web")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    # the crasher may already have exited by the time the banner counts
    assert re.search(r"uptest: [23] of 3 machines started", text), text
    assert any(line.split(" | ")[-1].startswith("worker ") for line in text.splitlines())
    assert any(f"web {web['id']} | web listening on" in line for line in text.splitlines())
    assert (app / "markers" / web["id"]).read_text() == "SIGTERM"


def test_a_machine_whose_command_is_missing_fails_up_with_a_sentence(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(
        'app = "broken"\n[processes]\nweb = "no-such-program-xyz --serve"\n'
    )
    try:
        result = taxiway(tmp_path, "up", "-d")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "(web): command not found: no-such-program-xyz" in result.stderr
        assert "failed" in result.stdout
    finally:
        taxiway(tmp_path, "down")


@pytest.mark.parametrize(
    "service",
    ["", '[http_service]\ninternal_port = 8080\nprocesses = ["worker"]\n'],
    ids=["launched-before-the-loop", "launched-by-the-loop"],
)
def test_a_volume_that_cannot_be_created_fails_up_with_a_sentence(
    tmp_path: Path, service: str
) -> None:
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(
        # `other` comes first: it must not be launched before worker's volume fails
        'app = "novol"\n[processes]\nother = "sleep 60"\n'
        f'worker = "{sys.executable} worker.py"\n'
        '[[mounts]]\nsource = "data"\ndestination = "/data"\nprocesses = ["worker"]\n' + service
    )
    (tmp_path / ".taxiway").mkdir(mode=0o700)
    (tmp_path / ".taxiway" / "volumes").write_text("in the way")
    try:
        result = taxiway(tmp_path, "up", "-d")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert re.search(
            r"\(worker\): volume data \(vol_\w+\) cannot be created at ", result.stderr
        )
        assert "Not a directory" in result.stderr
        # No machine was launched: the failed daemon leaves in a moment, a machine
        # (`sleep 60`) would stay.
        wait_for(lambda: _processes_in(tmp_path) == [], what="no process left in the folder")
    finally:
        taxiway(tmp_path, "down")


def test_a_group_with_nothing_to_run_says_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "empty"\n[processes]\nworker = ""\n')
    for args in (("up", "-d"), ("up",)):
        result = taxiway(tmp_path, *args)
        assert result.returncode == 1, result
        assert "process group 'worker' has no command: add one under [processes]" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / ".taxiway" / "taxiway.sock").exists()


def test_the_next_up_cleans_up_after_a_killed_daemon_and_keeps_the_machines(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    before = status(app)["machines"]
    old_pids = [m["pid"] for m in before if m["pid"]]
    os.kill(int((app / ".taxiway" / "daemon.lock").read_text()), signal.SIGKILL)
    wait_for(lambda: taxiway(app, "status").returncode == 1, what="the daemon to be gone")
    result = taxiway(app, "up", "-d")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not any(alive(p) for p in old_pids), what="the old processes to be reaped")
    after = status(app)["machines"]
    assert {m["id"] for m in after} == {m["id"] for m in before}  # same machines, re-adopted
    web = next(m for m in after if m["group"] == "web")
    assert web["state"] == "started" and web["pid"] not in old_pids


def test_suspend_freezes_a_machine_and_start_resumes_it(app: Path) -> None:
    assert taxiway(app, "up", "-d").returncode == 0
    web = next(m for m in status(app)["machines"] if m["group"] == "web")
    port = web["ports"]["8080"]
    wait_for(lambda: _get(port) == web["id"], what="web to answer")
    result = taxiway(app, "machine", "suspend", web["id"])
    assert result.returncode == 0, result.stderr
    assert "is suspended" in result.stdout
    with open(f"/proc/{web['pid']}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "T"  # stopped by SIGSTOP
    assert _get(port) is None  # frozen: no answer
    resumed = taxiway(app, "machine", "start", web["id"])
    assert "is started" in resumed.stdout
    wait_for(lambda: _get(port) == web["id"], what="web to answer again")
    assert next(m for m in status(app)["machines"] if m["id"] == web["id"])["pid"] == web["pid"]


def test_a_daemon_without_services_watches_its_machines_without_threads(
    tmp_path: Path,
) -> None:
    """The daemon learns of its machines' exits through pidfds, not one waiting thread
    per machine; the exits still count (restart policy, exit codes)."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("this platform has no pidfds")
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "crasher.py").write_text(textwrap.dedent(CRASHER))
    (tmp_path / "fly.toml").write_text(
        f'app = "quiet"\n[processes]\nworker = "{sys.executable} worker.py"\n'
        f'crasher = "{sys.executable} crasher.py"\n'
        '[[restart]]\npolicy = "on-failure"\nretries = 1\nprocesses = ["crasher"]\n'
    )
    try:
        assert taxiway(tmp_path, "up", "-d").returncode == 0
        assert taxiway(tmp_path, "scale", "count", "worker=4").returncode == 0
        daemon = int((tmp_path / ".taxiway" / "daemon.lock").read_text())

        def crasher() -> dict:
            return next(m for m in status(tmp_path)["machines"] if m["group"] == "crasher")

        wait_for(
            lambda: crasher()["state"] == "stopped" and crasher()["backoff_s"] == 0,
            timeout=20,
            what="the crasher to give up",
        )
        assert crasher()["restarts"] == 1
        assert crasher()["exit_code"] == 3
        workers = [m for m in status(tmp_path)["machines"] if m["group"] == "worker"]
        assert [m["state"] for m in workers] == ["started"] * 4
        assert len(os.listdir(f"/proc/{daemon}/task")) == 1
    finally:
        taxiway(tmp_path, "down")


def test_a_daemon_that_fails_while_starting_never_returns_into_the_caller(
    tmp_path: Path,
) -> None:
    """The forked daemon leaves with os._exit whatever happens: an embedding caller of
    `main` (here a script) gets one return, the command's, with a sentence."""
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    (tmp_path / "fly.toml").write_text(
        f'app = "embedded"\n[processes]\nworker = "{sys.executable} worker.py"\n'
    )
    script = textwrap.dedent(
        """
        import taxiway.daemon_fork
        from taxiway.cli.main import main

        def broken(*args):
            raise RuntimeError("a bug while the daemon starts")

        taxiway.daemon_fork.run_forked = broken
        print("returned", main(["up", "-d"]), flush=True)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.stdout.splitlines() == ["returned 1"]
        assert "the daemon exited while starting, before it had a log" in done.stderr
        assert "a bug while the daemon starts" in done.stderr  # the child's trace, for a bug
        assert _processes_in(tmp_path) == []
    finally:
        taxiway(tmp_path, "down")
