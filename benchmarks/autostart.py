"""What a request pays when the edge has to wake its machine: suspended, or stopped.

A one-machine app (a stdlib HTTP server) runs under `taxiway up -d --autostop-after 1s`
with ``auto_stop_machines = "suspend"`` and then ``"stop"``. For each mode the script
waits until autostop has put the machine to sleep, times one request through the edge
(the edge resumes or starts the machine and holds the request until it is served), and
compares it with the same request to the machine while it runs. Added latency = wake
request - warm request.

The peer for the stopped case is the app itself: the time from spawning the same server
process until it answers its first request, measured in the same run. Targets (issue 4):
a suspended machine adds <= 10 ms; a stopped one <= the app's own start + 50 ms.

Run: `python benchmarks/autostart.py [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"NO_COLOR": "1"}
SERVER = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
FLY_TOML = """
app = "autostart-bench"
kill_timeout = 2
[processes]
web = "{python} server.py"
[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "{mode}"
auto_start_machines = true
min_machines_running = 0
"""


def taxiway(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taxiway", *args], cwd=folder, env=ENV, capture_output=True,
        text=True, check=True, timeout=120,
    )
    return done.stdout


def timed_get(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - began


def wait_state(folder: Path, state: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        machines = json.loads(taxiway(folder, "status", "--json"))["machines"]
        if machines and machines[0]["state"] == state:
            return
        time.sleep(0.1)
    raise SystemExit(f"the machine did not become {state} in {timeout:g}s")


def app_start_time(folder: Path) -> float:
    """Spawn the server directly; seconds until it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "server.py"], cwd=folder, env=ENV | {"PORT": str(port)},
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    r.read()
                return time.perf_counter() - began
            except OSError:
                time.sleep(0.001)
    finally:
        proc.terminate()
        proc.wait()


def measure(folder: Path, mode: str, rounds: int) -> tuple[list[float], list[float]]:
    (folder / "fly.toml").write_text(FLY_TOML.format(python=sys.executable, mode=mode))
    taxiway(folder, "up", "-d", "--autostop-after", "1s")
    try:
        edge = json.loads(taxiway(folder, "status", "--json"))["edge"]
        url = "http://" + next(b["address"] for b in edge if b["port"] == 80) + "/"
        sleeping = "suspended" if mode == "suspend" else "stopped"
        warm, wake = [], []
        for _ in range(rounds):
            wait_state(folder, sleeping)
            wake.append(timed_get(url))
            warm.append(min(timed_get(url) for _ in range(5)))
        return warm, wake
    finally:
        taxiway(folder, "down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds "
          "(median shown, ms)\n")
    with tempfile.TemporaryDirectory(prefix="taxiway-autostart-") as tmp:
        folder = Path(tmp)
        (folder / "server.py").write_text(SERVER)
        own = statistics.median(app_start_time(folder) for _ in range(args.rounds)) * 1000
        print(f"{'case':<34} {'warm':>7} {'wake':>8} {'added':>8}  target")
        cases = (("suspend", "suspended", "<= 10 ms"), ("stop", "stopped", f"<= {own + 50:.0f} ms"))
        for mode, state, target in cases:
            warm, wake = measure(folder, mode, args.rounds)
            w, k = statistics.median(warm) * 1000, statistics.median(wake) * 1000
            print(f"{'request to a ' + state + ' machine':<34} {w:7.1f} {k:8.1f} "
                  f"{k - w:8.1f}  {target}")
        print(f"\nthe app's own start (spawn -> first answer), the peer: {own:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
