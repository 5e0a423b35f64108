"""A tiny app to deploy in tests, and ways to look at what a deploy did.

The app is a Python HTTP server answering ``GET /`` with its ``V`` (the release's
marker) and ``STATUS`` (200 unless set), or crashing at once when ``CRASH`` is set.
What happened is read the way a user could: machine events and records from the
store (a second reader beside the daemon), releases and status from the CLI.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cli_runner import run_taxiway as taxiway
from taxiway.state.records import EventRecord, MachineRecord
from taxiway.state.store import Store

WEB = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("CRASH"):
    print("crashing on purpose", flush=True)
    sys.exit(3)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get("V", "").encode()
        self.send_response(int(os.environ.get("STATUS", "200")))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

print("serving v" + os.environ.get("V", ""), flush=True)
# a listen backlog like real servers' (http.server's is 5): requests the edge held while
# the machine was replaced reach it together once it serves
ThreadingHTTPServer.request_queue_size = 128
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

WORKER = """
import time
while True:
    time.sleep(0.2)
"""

CHECKS = """
  [[http_service.checks]]
    interval = "1s"
    timeout = "1s"
    path = "/"
"""


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` whole in one step (a rename), as a deploy tool does: a running
    machine's interpreter opening its program mid-rewrite would otherwise find it
    empty, run nothing and exit 0. The same text again leaves the file alone (a new
    mtime would be a code change to the release)."""
    if path.exists() and path.read_text() == text:
        return
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    staged.replace(path)


def write_programs(folder: Path) -> None:
    """The web and worker programs, in place for any fly.toml that runs them."""
    replace_file(folder / "web.py", textwrap.dedent(WEB))
    replace_file(folder / "worker.py", textwrap.dedent(WORKER))


def write_app(
    folder: Path,
    *,
    v: str = "1",
    env: str = "",
    checks: bool = True,
    worker: bool | str = False,
    extra: str = "",
) -> None:
    """fly.toml (and the programs) for an app with a web group (``http_service``, with a
    1 s HTTP check unless ``checks`` is off) and, with ``worker``, a worker group (running
    ``worker`` when it is a command)."""
    write_programs(folder)
    python = sys.executable
    processes = f'web = "{python} web.py"\n'
    if worker:
        command = worker if isinstance(worker, str) else f"{python} worker.py"
        processes += f'worker = "{command}"\n'
    replace_file(
        folder / "fly.toml",
        f"""
app = "deploytest"
kill_signal = "SIGTERM"
kill_timeout = 2

[env]
V = "{v}"
{env}

[processes]
{processes}

[http_service]
internal_port = 8080
processes = ["web"]
{CHECKS if checks else ""}
{extra}
""",
    )


def ok(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def up(app: Path, **counts: int) -> None:
    ok(taxiway(app, "up", "-d"))
    if counts:
        ok(taxiway(app, "scale", "count", *(f"{g}={n}" for g, n in counts.items())))


def deploy(app: Path, *args: str) -> Any:
    return taxiway(app, "deploy", *args, timeout=120)


def status(app: Path) -> dict[str, Any]:
    return json.loads(ok(taxiway(app, "status", "--json")).stdout)


def releases(app: Path) -> list[dict[str, Any]]:
    return json.loads(ok(taxiway(app, "releases", "--json")).stdout)


def machines(app: Path, group: str | None = None) -> list[MachineRecord]:
    """The app's machines as stored (not destroyed ones), by id."""
    with Store.open(app / ".taxiway") as store:
        found = store.list_machines("deploytest")
    return sorted((m for m in found if group in (None, m.group)), key=lambda m: m.id)


def events(app: Path, since: int = 0) -> list[EventRecord]:
    """The app's events after event id ``since``, oldest first."""
    with Store.open(app / ".taxiway") as store:
        found = store.events("deploytest", limit=None)
    return [e for e in reversed(found) if e.id > since]


def last_event_id(app: Path) -> int:
    found = events(app)
    return found[-1].id if found else 0


def index(log: list[EventRecord], machine_id: str, type_: str, status: str | None = None) -> int:
    """Position of the machine's first event of that type (and status) in ``log``."""
    for n, e in enumerate(log):
        if e.machine_id == machine_id and e.type == type_ and status in (None, e.status):
            return n
    raise AssertionError(f"no {type_} {status or ''} event for {machine_id}")


def get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.read().decode()
    except (OSError, urllib.error.URLError):
        return None


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def all_passing(app: Path) -> bool:
    """Every started machine with checks passes them all (what traffic waits for)."""
    for m in status(app)["machines"]:
        checks = m.get("checks") or {}
        if checks.get("total") and checks.get("passing") != checks.get("total"):
            return False
    return True
