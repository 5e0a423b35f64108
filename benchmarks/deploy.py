"""Deploying 10 machines: wall time per strategy, and requests lost while it runs.

An app with one web group of 10 machines (a small threaded Python HTTP server each,
an HTTP check every second) is deployed with each strategy, each deploy changing
``[env]``. While it runs, `taxiway.deploy.load` sends 200 requests/s through the
edge's HTTP listener (half on keep-alive connections, half on new ones) and counts
the requests that got no 2xx answer.

The peer, measured in the same run on the same app, is what one does without a deploy
command: `taxiway down` then `taxiway up -d` (stop everything, start everything with
the new config). Its wall time is short; its lost requests are the point.

Smoke checks are off by default (``--no-smoke-checks``: the platform watches every new
machine for 10 s, which would dominate every figure); ``--smoke`` turns them on. Without
an edge in `taxiway status` (not wired yet), requests are not sent and the column reads
"-". Run: ``.venv/bin/python benchmarks/deploy.py [--machines 10] [--rate 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from taxiway.deploy.load import LoadResult, LoadThread  # noqa: E402

ENV = {**os.environ, "NO_COLOR": "1"}
WEB = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = os.environ.get("V", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
FLY_TOML = """
app = "benchdeploy"
kill_signal = "SIGTERM"
kill_timeout = 5

[env]
V = "{v}"

[processes]
web = "{python} web.py"

[http_service]
internal_port = 8080
processes = ["web"]
  [[http_service.checks]]
    interval = "1s"
    timeout = "1s"
    path = "/"
"""


def taxiway(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "taxiway", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"taxiway {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def edge_address(folder: Path) -> tuple[str, int] | None:
    from taxiway.cli.deploy_cmd import _http_listener
    from taxiway.errors import TaxiwayError

    status = json.loads(taxiway(folder, "status", "--json").stdout)
    try:
        return _http_listener(status)
    except TaxiwayError:
        return None


def wait_passing(folder: Path, timeout_s: float = 60.0) -> None:
    """Until every machine passes its checks: the load starts on a healthy app."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        machines = json.loads(taxiway(folder, "status", "--json").stdout)["machines"]
        if all(
            (m.get("checks") or {}).get("passing") == (m.get("checks") or {}).get("total")
            for m in machines
        ):
            return
        time.sleep(0.2)
    raise SystemExit("the machines did not pass their checks within a minute")


def measure(
    folder: Path, address: tuple[str, int] | None, rate: float, action: list[list[str]]
) -> tuple[float, LoadResult | None, bool]:
    wait_passing(folder)
    load = LoadThread(*address, rate) if address else None
    if load:
        load.start()
        time.sleep(0.5)  # the load is flowing before anything changes
    began = time.perf_counter()
    ok = all(taxiway(folder, *args, check=False).returncode == 0 for args in action)
    elapsed = time.perf_counter() - began
    if load:
        time.sleep(0.5)
    return elapsed, load.finish() if load else None, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--smoke", action="store_true", help="keep the 10 s smoke checks")
    args = parser.parse_args()
    flags = [] if args.smoke else ["--no-smoke-checks"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="taxiway-bench-deploy-") as tmp:
        folder = Path(tmp)
        (folder / "web.py").write_text(WEB)
        version = 1

        def write() -> None:
            (folder / "fly.toml").write_text(FLY_TOML.format(v=version, python=sys.executable))

        write()
        taxiway(folder, "up", "-d")
        try:
            taxiway(folder, "scale", "count", f"web={args.machines}")
            address = edge_address(folder)
            for strategy in ("rolling", "immediate", "canary", "bluegreen"):
                version += 1
                write()
                deploy = ["deploy", "--strategy", strategy, *flags]
                rows.append((strategy, *measure(folder, address, args.rate, [deploy])))
            version += 1
            write()
            rows.append(
                ("down + up -d", *measure(folder, address, args.rate, [["down"], ["up", "-d"]]))
            )
        finally:
            taxiway(folder, "down", check=False)
    print(
        f"{args.machines} machines, {args.rate:g} requests/s"
        + ("" if args.smoke else ", smoke checks off")
    )
    print(f"{'strategy':<14} {'wall s':>7} {'requests':>9} {'lost':>6} {'worst ms':>9}  result")
    for name, elapsed, load, ok in rows:
        sent = str(load.sent) if load else "-"
        lost = str(load.failed + load.non_2xx) if load else "-"
        worst = f"{load.worst_latency_s * 1000:.0f}" if load else "-"
        verdict = "ok" if ok else "FAILED"
        print(f"{name:<14} {elapsed:>7.2f} {sent:>9} {lost:>6} {worst:>9}  {verdict}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
