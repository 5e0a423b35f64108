"""`taxiway checks list`.

Help, the no-daemon error, and the rows built from a real `MachineChecks.summary()`;
checks in a running app are covered in test_checks_live.py.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from cli_runner import run_taxiway as taxiway
from taxiway.checks.monitor import MachineChecks
from taxiway.checks.state import CheckStatus
from taxiway.cli.checks_cmd import check_rows
from taxiway.plan.machine import Check, Concurrency, ServiceSpec


def test_help(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "checks", "list", "--help")
    assert result.returncode == 0
    assert "--json" in result.stdout
    assert "checks" in taxiway(tmp_path, "--help").stdout


def test_checks_alone_prints_its_usage(tmp_path: Path) -> None:
    result = taxiway(tmp_path, "checks")
    assert result.returncode == 2
    assert "list" in result.stderr


def test_no_daemon_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "quiet"\n')
    for args in (("checks", "list"), ("checks", "list", "--json")):
        result = taxiway(tmp_path, *args)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            "taxiway: error: taxiway is not running this app; start it with `taxiway up`\n"
        )


def test_rows_from_a_machine_summary() -> None:
    async def summary() -> dict[str, object]:
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            check = Check(name="servicecheck-00-tcp-8080", type="tcp", port=8080, interval="20ms")
            svc = ServiceSpec(
                protocol="tcp", internal_port=8080, ports=[], concurrency=Concurrency()
            )
            svc.checks = [check]
            checks = MachineChecks("m1", [svc], [], lambda _: ("127.0.0.1", port), lambda: None)
            checks.start()
            while checks.service_status(8080) is not CheckStatus.PASSING:
                await asyncio.sleep(0.01)
            data = checks.summary()
            await checks.stop()
            return data

    data = asyncio.run(summary())
    status = {"machines": [{"id": "m1", "group": "web", "checks": data}, {"id": "m2"}]}
    (row,) = check_rows(status)
    assert row["machine"] == "m1"
    assert row["group"] == "web"
    assert row["name"] == "servicecheck-00-tcp-8080"
    assert row["kind"] == "service"
    assert row["status"] == "passing"
    assert row["output"].endswith(": Success")
    assert row["updated_at"].endswith("Z")
