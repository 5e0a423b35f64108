"""Small CLI fixes (issue 13, items 13-15), each through the real `taxiway` command."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from process_watch import alive, wait_for

SLEEPER = "import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(0.2)\n"


def write_app(path: Path, extra: str = "", processes: str = "") -> Path:
    (path / "sleeper.py").write_text(SLEEPER)
    groups = processes or (
        f'web = "{sys.executable} sleeper.py web"\nworker = "{sys.executable} sleeper.py worker"\n'
    )
    (path / "fly.toml").write_text(
        f'app = "small"\nkill_signal = "SIGTERM"\nkill_timeout = 5\n{extra}\n[processes]\n{groups}'
    )
    return path


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    taxiway(tmp_path, "down")


def up(app: Path) -> None:
    result = taxiway(app, "up", "-d", "--driver", "process")
    assert result.returncode == 0, result.stderr


def status(app: Path) -> dict:
    result = taxiway(app, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- item 13: logs -------------------------------------------------------------------------


def test_logs_after_down_keep_each_lines_group(app: Path) -> None:
    write_app(app)
    up(app)
    wait_for(lambda: len(taxiway(app, "logs").stdout.splitlines()) >= 2, "both machines' output")
    assert taxiway(app, "down").returncode == 0
    lines = [
        json.loads(x) for x in taxiway(app, "logs", "--json", "--group", "web").stdout.splitlines()
    ]
    assert lines, "no line of group web after down"
    assert {line["group"] for line in lines} == {"web"}
    text = taxiway(app, "logs").stdout
    assert " web " in text and " worker " in text  # the plain lines show their group too


def test_logs_of_an_unknown_machine_is_an_error(app: Path) -> None:
    write_app(app)
    up(app)
    for _ in ("running", "after down"):
        result = taxiway(app, "logs", "--machine", "nosuch")
        assert result.returncode == 1, result
        assert "has no machine nosuch" in result.stderr
        assert result.stdout == ""
        taxiway(app, "down")


# -- item 14: status after a kill -9 of the daemon -------------------------------------------


def test_status_after_the_daemon_was_killed_says_what_it_left(app: Path) -> None:
    write_app(app, processes=f'web = "{sys.executable} sleeper.py"\n')
    up(app)
    machine = status(app)["machines"][0]
    daemon = int((app / ".taxiway" / "daemon.lock").read_text())
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not alive(daemon), "the daemon to die")

    result = taxiway(app, "status")
    assert result.returncode == 1
    assert "left" not in result.stdout
    assert f"1 machine(s), which still run ({machine['id']})" in result.stderr
    assert "`taxiway up` or `taxiway down` will clean them up" in result.stderr

    assert alive(machine["pid"])
    assert "cleaned up 1 machine(s)" in taxiway(app, "down").stdout
    assert not alive(machine["pid"])
    after = taxiway(app, "status")
    assert after.returncode == 1
    assert "still run" not in after.stderr and "not running" in after.stderr


# -- item 15: the small ones ------------------------------------------------------------------


def test_machine_status_shows_no_python_none(app: Path) -> None:
    write_app(app, processes=f'web = "{sys.executable} sleeper.py"\n')
    up(app)
    machine = status(app)["machines"][0]["id"]
    shown = taxiway(app, "machine", "status", machine)
    assert shown.returncode == 0, shown.stderr
    assert "None" not in shown.stdout
    assert any(line.split() == ["exit_code", "-"] for line in shown.stdout.splitlines())


def test_a_deploy_ends_with_one_complete_line(app: Path) -> None:
    write_app(app, processes=f'web = "{sys.executable} sleeper.py"\n')
    up(app)
    write_app(app, extra='[env]\nV = "2"\n', processes=f'web = "{sys.executable} sleeper.py"\n')
    result = taxiway(app, "deploy", "--no-smoke-checks")
    assert result.returncode == 0, result.stderr
    assert sum("complete" in line for line in result.stdout.splitlines()) == 1, result.stdout


def test_secrets_set_names_the_bad_argument_and_the_form(tmp_path: Path) -> None:
    write_app(tmp_path)
    result = taxiway(tmp_path, "secrets", "set", "GOOD=1", "BAD")
    assert result.returncode == 1
    assert "argument 2 ('BAD') has no '='" in result.stderr
    assert "NAME=VALUE" in result.stderr
    assert "item" not in result.stderr


def test_one_process_group_is_singular(tmp_path: Path) -> None:
    write_app(tmp_path, processes='web = "x"\n', extra="[[services]]\ninternal_port = 8080\n")
    result = taxiway(tmp_path, "config", "validate")
    assert "the app has 1 process group defined" in result.stdout + result.stderr


def test_validate_lists_diagnostics_in_line_order(tmp_path: Path) -> None:
    # typecheck, rules and normalisation find these in another order than the file has
    (tmp_path / "fly.toml").write_text(
        'app = "order"\n'
        'kill_timeout = "soon"\n'  # 2
        "[http_service]\n"
        "internal_port = 99999\n"  # 4
        "[[vm]]\n"
        'memory = "lots"\n'  # 6
        "[deploy]\n"
        'strategy = "sideways"\n'  # 8
    )
    result = taxiway(tmp_path, "config", "validate", "--json")
    lines = [d["line"] for d in json.loads(result.stdout)["diagnostics"]]
    numbered = [n for n in lines if n is not None]
    assert len(numbered) >= 3
    assert numbered == sorted(numbered)
    assert lines[: len(numbered)] == numbered  # those without a line come last
    text = taxiway(tmp_path, "config", "validate").stderr.splitlines()
    shown = [int(line.split(":")[1]) for line in text if line.startswith("fly.toml:")]
    assert shown == sorted(shown) and len(shown) >= 3


def test_a_mount_source_the_platform_would_not_name_is_a_warning_not_a_stop(
    tmp_path: Path,
) -> None:
    """fly.toml may name a volume `my-data`: validate warns at its line, `up` still runs
    (the volume is made as written); only `volumes create` refuses such a name."""
    (tmp_path / "fly.toml").write_text(
        'app = "volname"\n[processes]\nw = "sleep 30"\n'
        '[[mounts]]\nsource = "my-data"\ndestination = "/data"\n'
    )
    try:
        validate = taxiway(tmp_path, "config", "validate")
        assert validate.returncode == 0
        assert "fly.toml:5: warning: mount 'my-data': source 'my-data' is not a volume name" in (
            validate.stderr
        )
        up = taxiway(tmp_path, "up", "-d", "--driver", "process")
        assert up.returncode == 0, up.stderr
        names = [
            v["name"] for v in json.loads(taxiway(tmp_path, "volumes", "list", "--json").stdout)
        ]
        assert names == ["my-data"]
    finally:
        taxiway(tmp_path, "down")


def test_volume_names_follow_the_platform(tmp_path: Path) -> None:
    """Sizes: `test_commands.test_volume_sizes_stop_at_the_platforms_500_gb`."""
    write_app(tmp_path)
    for name in ("bad name!", "Data", "a" * 31):
        bad = taxiway(tmp_path, "volumes", "create", name)
        assert bad.returncode == 1, bad
        assert "is not a volume name: use lowercase letters, digits and underscores" in bad.stderr
    assert not list((tmp_path / ".taxiway").glob("volumes/vol_*"))  # nothing left behind
    ok = taxiway(tmp_path, "volumes", "create", "a" * 30)
    assert ok.returncode == 0, ok.stderr


def test_certs_prints_the_real_https_port(app: Path) -> None:
    port = free_port()
    write_app(
        app,
        processes=f'web = "{sys.executable} sleeper.py"\n',
        extra=(
            f'[[services]]\ninternal_port = {free_port()}\nprotocol = "tcp"\n'
            'processes = ["web"]\n'
            f'[[services.ports]]\nport = {port}\nhandlers = ["tls", "http"]\n'
        ),
    )
    offline = taxiway(app, "certs")
    assert f"https://localhost:{port}/" in offline.stdout
    assert "<port>" not in offline.stdout
    up(app)
    edge = status(app)["edge"]
    real = next(b["address"] for b in edge if b["port"] == port).rsplit(":", 1)[1]
    online = taxiway(app, "certs")
    assert f"https://localhost:{real}/" in online.stdout
    assert "<port>" not in online.stdout


def test_usage_hides_the_daemon_command(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "nosuch")
    assert result.returncode == 2
    assert "'releases'" in result.stderr and "daemon" not in result.stderr
    listed = taxiway(tmp_path, "--help").stdout.splitlines()
    assert not [line for line in listed if line.split()[:1] == ["daemon"]]


@pytest.mark.parametrize(
    "command",
    ["status", "logs", "console", "scale", "machine", "secrets", "volumes", "checks", "releases"],
)
def test_each_command_has_a_description(tmp_path: Path, command: str) -> None:
    shown = taxiway(tmp_path, command, "--help").stdout
    between = shown.split("\n\n")[1]  # usage, then the description, then the options
    assert not between.startswith(("options:", "positional arguments:")), shown
    assert len(between.split()) >= 5


def test_config_machines_puts_statics_only_on_the_http_groups(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        extra=(
            '[http_service]\ninternal_port = 8080\nprocesses = ["web"]\n'
            '[[statics]]\nguest_path = "/app/public"\nurl_prefix = "/public"\n'
        ),
    )
    shown = taxiway(tmp_path, "config", "machines").stdout
    web, worker = shown.split("[worker]")
    assert "/public -> /app/public" in web
    assert "static" not in worker
    # the machine config keeps flyctl's shape: every group's carries the statics
    planned = json.loads(taxiway(tmp_path, "config", "machines", "--json").stdout)
    assert planned["worker"]["statics"] == planned["web"]["statics"] != []


CRASH_ONCE = """
import pathlib, sys, time
marker = pathlib.Path("crashed-once")
if not marker.exists():
    marker.write_text("1")
    sys.exit(1)
while True:
    time.sleep(0.2)
"""


def test_restarts_start_again_after_down_and_up(app: Path) -> None:
    (app / "crash_once.py").write_text(CRASH_ONCE)
    write_app(app, processes=f'web = "{sys.executable} crash_once.py"\n')
    up(app)

    def restarted_and_started() -> bool:
        machine = status(app)["machines"][0]
        return machine["restarts"] == 1 and machine["state"] == "started"

    wait_for(restarted_and_started, "the machine to restart once")
    assert taxiway(app, "down").returncode == 0
    up(app)
    machine = status(app)["machines"][0]
    assert machine["restarts"] == 0
    assert "RESTARTS" in taxiway(app, "status").stdout
