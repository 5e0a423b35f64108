"""Open dashboards against the edge: requests per second through a running daemon's edge
with no dashboard open, and with N tabs (default 50) following it.

The dashboard runs on the daemon's event loop, beside the edge, so every tab's updates
compete with the edge's requests. This runs a real app (`taxiway up -d`, process driver):
one machine serving a small file with nginx (one worker) behind an ``http`` service, and
a chatty worker machine printing 50 lines a second, so the tabs get state, chart points
and log lines. Each tab is what a browser tab holds: one event stream (``/events``), read
as fast as it comes. wrk (one thread, 50 connections, default 5 s) measures the edge,
in rounds (default 3) that alternate without and with the tabs; medians are shown.

Run: ``.venv/bin/python benchmarks/dashboard_tabs.py [--tabs 50] [--seconds 5]``. Needs
nginx and wrk (installed with apt-get when missing, as root).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NGINX_LAUNCHER = """
import os, sys
port = os.environ["PORT"]
here = os.getcwd()
os.makedirs(here + "/nginx-tmp", exist_ok=True)
with open(here + "/nginx.conf", "w") as conf:
    conf.write(f'''
worker_processes 1;
pid {here}/nginx-tmp/nginx.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {here}/nginx-tmp;
    proxy_temp_path {here}/nginx-tmp;
    fastcgi_temp_path {here}/nginx-tmp;
    uwsgi_temp_path {here}/nginx-tmp;
    scgi_temp_path {here}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {here}/www; }}
    }}
}}
''')
os.execvp("nginx", ["nginx", "-c", here + "/nginx.conf", "-g", "daemon off;"])
"""

CHATTY = """
import time
n = 0
while True:
    n += 1
    print("chatty line", n, flush=True)
    time.sleep(0.02)
"""

FLY_TOML = """
app = "dashbench"
primary_region = "ams"

[processes]
web = "{python} nginx_launcher.py"
chatty = "{python} chatty.py"

[[services]]
internal_port = 8080
protocol = "tcp"
processes = ["web"]

  [services.concurrency]
  type = "requests"
  soft_limit = 1000
  hard_limit = 2000

  [[services.ports]]
  port = {edge_port}
  handlers = ["http"]
"""


def taxiway(app: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taxiway", *args],
        cwd=app,
        capture_output=True,
        text=True,
        env={**os.environ, "TAXIWAY_DRIVER": "process"},
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"taxiway {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_tools() -> None:
    missing = [t for t in ("nginx", "wrk") if shutil.which(t) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = ["nginx-light" if t == "nginx" else t for t in missing]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        if subprocess.run(cmd, capture_output=True, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(cmd, capture_output=True, env=env, check=False)
    still = [t for t in ("nginx", "wrk") if shutil.which(t) is None]
    if still:
        raise SystemExit(f"{', '.join(still)} missing and could not be installed")


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c50", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match is None or errors is not None:
        raise SystemExit(f"wrk did not measure cleanly:\n{out}")
    return float(match[1])


class Tabs:
    """N event streams held open and read as fast as they come, in one thread."""

    def __init__(self, port: int, cookie: str, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.bytes_read = 0
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n"
                .encode()
            )
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.2):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit("the daemon closed a tab's stream")
                self.bytes_read += len(data)

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        for sock in self.socks:
            sock.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_cpu_share(pid: int, seconds: float) -> float:
    """The daemon's CPU use over ``seconds``, as a share of one core."""
    before, began = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tabs", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_tools()
    app = Path(tempfile.mkdtemp(prefix="taxiway-dashbench-"))
    app.chmod(0o755)  # nginx's worker (nobody, when started as root) reads www/
    (app / "www").mkdir()
    (app / "www" / "index.html").write_bytes(b"hello from the backend\n" * 4)
    (app / "nginx_launcher.py").write_text(NGINX_LAUNCHER)
    (app / "chatty.py").write_text(CHATTY)
    edge_port = free_port()
    (app / "fly.toml").write_text(FLY_TOML.format(python=sys.executable, edge_port=edge_port))
    started = taxiway(app, "up", "-d")
    daemon_pid = int(re.search(r"daemon pid (\d+)", started)[1])  # type: ignore[index]
    try:
        status = json.loads(taxiway(app, "status", "--json"))
        edge = next(b["address"] for b in status["edge"])
        url = taxiway(app, "dashboard", "--no-open").strip().splitlines()[-1]
        parts = urllib.parse.urlsplit(url)
        with socket.create_connection(("127.0.0.1", parts.port)) as sock:
            sock.sendall(f"GET /?{parts.query} HTTP/1.1\r\nHost: 127.0.0.1:{parts.port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            head = sock.recv(65536).decode()
        cookie = re.search(r"Set-Cookie: ([^;]+)", head)[1]  # type: ignore[index]
        target = f"http://{edge}/index.html"
        wrk(target, 1)  # warm the edge's pool and the backend
        without, with_tabs, streamed = [], [], 0
        for _ in range(args.rounds):
            without.append(wrk(target, args.seconds))
            tabs = Tabs(parts.port, cookie, args.tabs)
            time.sleep(1.0)  # every tab has its first state, history and tail
            try:
                with_tabs.append(wrk(target, args.seconds))
            finally:
                streamed += tabs.bytes_read
                tabs.close()
        # what the tabs cost the daemon itself, the edge idle: steadier than req/s on a
        # small host, where wrk, nginx and the edge share the cores
        idle = daemon_cpu_share(daemon_pid, 10)
        tabs = Tabs(parts.port, cookie, args.tabs)
        time.sleep(1.0)
        try:
            following = daemon_cpu_share(daemon_pid, 10)
        finally:
            tabs.close()
        a, b = statistics.median(without), statistics.median(with_tabs)
        print(f"edge http, wrk -t1 -c50 -d{args.seconds}s, {args.rounds} rounds (median)")
        print(f"  no dashboard open      {a:10.0f} req/s   rounds {[round(x) for x in without]}")
        print(f"  {args.tabs:3d} tabs following    {b:10.0f} req/s   rounds "
              f"{[round(x) for x in with_tabs]}")
        print(f"  with/without           {b / a:10.3f}   ({streamed / 1024:.0f} KiB streamed "
              "to the tabs)")
        print("daemon CPU, edge idle (the chatty machine's 50 lines/s still flowing), 10 s each")
        print(f"  no dashboard open      {100 * idle:9.1f} % of a core")
        print(f"  {args.tabs:3d} tabs following    {100 * following:9.1f} % of a core")
    finally:
        taxiway(app, "down")
        shutil.rmtree(app, ignore_errors=True)


if __name__ == "__main__":
    main()
