"""`taxiway checks list`: every machine's health checks, as the running daemon sees them.

Reads the daemon's status, whose machines carry ``checks`` in the shape of
`taxiway.checks.monitor.MachineChecks.summary`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taxiway.cli.app_cmd import client_for, print_table

#: Characters of a check's last output shown in the table (``--json`` has all of it).
OUTPUT_WIDTH = 60


def checks(args: argparse.Namespace) -> int:
    client, app, _ = client_for(args.config)
    status = client.request("GET", f"/v1/apps/{app}/status")
    rows = check_rows(status)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"{app} has no health checks")
        return 0
    table = [("MACHINE", "GROUP", "CHECK", "KIND", "STATUS", "LAST UPDATED", "OUTPUT")]
    for row in rows:
        table.append(
            (
                row["machine"],
                row["group"],
                row["name"],
                row["kind"],
                row["status"],
                row["updated_at"] or "-",
                _short(row["output"]),
            )
        )
    print_table(table)
    return 0


def check_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per machine and check: the `checks list --json` shape."""
    rows = []
    for machine in status.get("machines") or ():
        for check in (machine.get("checks") or {}).get("checks") or ():
            rows.append(
                {
                    "machine": machine["id"],
                    "group": machine["group"],
                    "name": check.get("name", ""),
                    "kind": check.get("kind", ""),
                    "type": check.get("type", ""),
                    "port": check.get("port"),
                    "status": check.get("status", ""),
                    "output": check.get("output", ""),
                    "updated_at": check.get("updated_at", ""),
                }
            )
    return rows


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= OUTPUT_WIDTH else line[: OUTPUT_WIDTH - 1] + "…"
