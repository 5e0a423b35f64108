"""The edge against nginx and HAProxy: requests per second and latency through each proxy.

In one run, each for the same duration and connection count (wrk, default 5 s, 50
connections, one wrk thread), against the same backend (nginx serving a small file with
one worker), in rounds (default 3) that take every part in turn, so a busy moment of the
machine hits them all alike; the median of the rounds is shown:

  a. the backend directly (the ceiling);
  b. taxiway's edge, ``http`` handler (``concurrency.type = "requests"``: pooled
     keep-alive connections to the machine), in its own process on uvloop;
  c. nginx as a keep-alive reverse proxy with one worker (the peer for b);
  d. taxiway's edge, raw TCP (a port with no handlers), same process as b;
  e. HAProxy in TCP mode with one thread (the peer for d);
  f. the floor of b's stack (`edge_floor.py`): the least an HTTP/1.1 proxy on uvloop +
     httptools does per request (parse, four headers, a pooled connection, nothing else).
     How close b is to f is what the edge's own code costs; how far f is from c is what
     Python, uvloop and httptools cost before the edge does anything.

The edge runs over a `StaticFleet` with one member: the nginx backend. nginx, wrk and
HAProxy are installed with apt-get when missing (as root); a part whose tool is missing
is skipped with the reason. Prints req/s, p50 and p99 (wrk --latency) and the ratios
taxiway/nginx and taxiway/haproxy. Run: ``.venv/bin/python benchmarks/edge.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"nginx": "nginx-light", "wrk": "wrk", "haproxy": "haproxy"}
BODY = b"hello from the backend\n" * 4  # 92 bytes: a small file


def ensure_tools() -> dict[str, str | None]:
    """Paths of nginx, wrk and haproxy, installing the missing ones when we can."""
    missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = [PACKAGES[t] for t in missing]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        done = subprocess.run(cmd, capture_output=True, env=env, check=False)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(cmd, capture_output=True, env=env, check=False)
    found = {tool: shutil.which(tool) for tool in PACKAGES}
    for tool, path in found.items():
        if path is None:
            print(f"{tool} is missing and could not be installed; its parts are skipped")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, start_new_session=True, **kw)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


NGINX_COMMON = """
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/tmp-{name};
  proxy_temp_path {dir}/tmp-{name};
  fastcgi_temp_path {dir}/tmp-{name};
  uwsgi_temp_path {dir}/tmp-{name};
  scgi_temp_path {dir}/tmp-{name};
  keepalive_requests 1000000;
  {body}
}}
"""

BACKEND = """
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir}/www;
    location / {{ }}
  }}
"""

REVERSE_PROXY = """
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""

HAPROXY = """
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server s1 127.0.0.1:{backend}
"""

FLY_TOML = """
app = "bench"
[[services]]
  internal_port = 8080
  protocol = "tcp"
  [services.concurrency]
    type = "requests"
    soft_limit = 100000
  [[services.ports]]
    port = 8000
    handlers = ["http"]
[[services]]
  internal_port = 8080
  protocol = "tcp"
  [services.concurrency]
    type = "connections"
    soft_limit = 100000
  [[services.ports]]
    port = 8001
"""


def nginx(binary: str, folder: Path, name: str, body: str) -> subprocess.Popen:
    (folder / f"tmp-{name}").mkdir(exist_ok=True)
    conf = folder / f"{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=folder, name=name, body=body))
    return start([binary, "-c", str(conf), "-p", str(folder)], stderr=subprocess.DEVNULL)


def serve_edge(backend_port: int, folder: str) -> None:
    """The child process of parts b and d: an Edge on uvloop over one static member."""
    import asyncio

    import uvloop

    from taxiway.config.loader import load_config
    from taxiway.edge.fleet import Member, StaticFleet
    from taxiway.edge.server import Edge
    from taxiway.plan.machine import plan_machines

    path = Path(folder) / "fly.toml"
    path.write_text(FLY_TOML)
    specs = plan_machines(load_config(path).config, base_dir=Path(folder))
    member = Member(
        id="backend", group="app", state="started", host="127.0.0.1", ports={8080: backend_port}
    )

    async def main() -> None:
        edge = Edge(StaticFleet("bench", [member]), specs, exact_ports=False)
        await edge.start()
        print(json.dumps({b["port"]: int(b["address"].rsplit(":", 1)[1]) for b in edge.bindings()}))
        sys.stdout.flush()
        await asyncio.Event().wait()

    uvloop.install()
    asyncio.run(main())


def versions(tools: dict[str, str | None]) -> str:
    out = []
    for tool, flag in (("nginx", "-v"), ("haproxy", "-v"), ("wrk", "-v")):
        path = tools.get(tool)
        if path is None:
            continue
        done = subprocess.run([path, flag], capture_output=True, text=True, check=False)
        text = (done.stdout + done.stderr).strip().splitlines()
        out.append(text[0] if text else tool)
    return "; ".join(out)


def wrk(binary: str, port: int, seconds: float, connections: int, threads: int) -> dict:
    cmd = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        f"http://127.0.0.1:{port}/index.html",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "requests": int(count.group(1)) if count else 0,
        "p50": _latency(out, "50%"),
        "p99": _latency(out, "99%"),
        "errors": errors.group(0) if errors else "",
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def workers(proc: subprocess.Popen) -> list[int]:
    """nginx's worker processes (the master only waits), or the process itself."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:  # ppid
                children.append(int(entry.name))
    return children or [proc.pid]


def median_run(runs: list[dict]) -> dict:
    """The median of each figure over the rounds; errors of any round are kept."""
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50": statistics.median(r["p50"] for r in runs),
        "p99": statistics.median(r["p99"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "errors": "; ".join(r["errors"] for r in runs if r["errors"]),
        "all": [round(r["rps"]) for r in runs],
    }


def _latency(out: str, pct: str) -> float:
    """Milliseconds at a percentile of wrk's latency distribution."""
    m = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every part (median)")
    parser.add_argument(
        "--serve-edge", nargs=2, metavar=("BACKEND_PORT", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_edge:
        serve_edge(int(args.serve_edge[0]), args.serve_edge[1])
        return 0

    tools = ensure_tools()
    if tools["wrk"] is None or tools["nginx"] is None:
        print("wrk and nginx are needed for every part; nothing to measure")
        return 0
    procs: list[subprocess.Popen] = []
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="taxiway-bench-edge-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx's workers run as nobody when started as root
        (folder / "www").mkdir()
        (folder / "www" / "index.html").write_bytes(BODY)
        try:
            backend = free_port()
            procs.append(
                nginx(tools["nginx"], folder, "backend", BACKEND.format(port=backend, dir=folder))
            )
            wait_port(backend)

            edge = start(
                [sys.executable, __file__, "--serve-edge", str(backend), tmp],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            procs.append(edge)
            assert edge.stdout is not None
            edge_ports = {int(k): v for k, v in json.loads(edge.stdout.readline()).items()}

            proxy = free_port()
            procs.append(
                nginx(
                    tools["nginx"],
                    folder,
                    "proxy",
                    REVERSE_PROXY.format(port=proxy, backend=backend),
                )
            )
            wait_port(proxy)

            haproxy = None
            if tools["haproxy"] is not None:
                haproxy = free_port()
                cfg = folder / "haproxy.cfg"
                cfg.write_text(HAPROXY.format(port=haproxy, backend=backend))
                haproxy_proc = start(
                    [tools["haproxy"], "-f", str(cfg)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                procs.append(haproxy_proc)
                wait_port(haproxy)

            floor = start(
                [sys.executable, str(ROOT / "benchmarks" / "edge_floor.py"), str(backend)],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(floor)
            assert floor.stdout is not None
            floor_port = int(floor.stdout.readline())

            # (name, port, the processes whose CPU time serves that part)
            parts = [
                ("a. backend direct (nginx)", backend, workers(procs[0])),
                ("b. taxiway edge, http", edge_ports[8000], [edge.pid]),
                ("c. nginx reverse proxy, 1 worker", proxy, workers(procs[2])),
                ("d. taxiway edge, raw TCP", edge_ports[8001], [edge.pid]),
            ]
            if haproxy is not None:
                parts.append(("e. haproxy tcp, 1 thread", haproxy, [haproxy_proc.pid]))
            parts.append(("f. floor: bare httptools proxy", floor_port, [floor.pid]))
            print(
                f"python {sys.version.split()[0]} + uvloop, {os.cpu_count()} CPUs; "
                f"{versions(tools)}\nwrk -t{args.threads} -c{args.connections} "
                f"-d{args.seconds:g}s x {args.rounds} rounds, GET of a {len(BODY)}-byte file\n"
            )
            runs: dict[str, list[dict]] = {name: [] for name, _, _ in parts}
            for _, port, _ in parts:
                wrk(tools["wrk"], port, 1.0, args.connections, args.threads)  # warm-up
            for _ in range(args.rounds):
                for name, port, pids in parts:
                    before = cpu_seconds(pids)
                    run = wrk(tools["wrk"], port, args.seconds, args.connections, args.threads)
                    # The proxy's own CPU per request: a figure the load of a shared machine
                    # disturbs far less than req/s.
                    used = cpu_seconds(pids) - before
                    run["cpu"] = used * 1e6 / run["requests"] if run["requests"] else float("nan")
                    runs[name].append(run)
            results = {name: median_run(r) for name, r in runs.items()}
        finally:
            for proc in reversed(procs):
                stop(proc)

    header = (
        f"{'':34}  {'req/s':>9}  {'p50 ms':>7}  {'p99 ms':>7}  {'CPU us/req':>10}  rounds (req/s)"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        note = f"  ({r['errors']})" if r["errors"] else ""
        rounds = " ".join(str(x) for x in r["all"])
        print(
            f"{name:34}  {r['rps']:>9.0f}  {r['p50']:>7.2f}  {r['p99']:>7.2f}  "
            f"{r['cpu']:>10.1f}  {rounds}{note}"
        )
    print()
    b = results.get("b. taxiway edge, http")
    c = results.get("c. nginx reverse proxy, 1 worker")
    d = results.get("d. taxiway edge, raw TCP")
    e = results.get("e. haproxy tcp, 1 thread")
    if b and c:
        print(
            f"taxiway http / nginx proxy:  {b['rps'] / c['rps']:.2f}x req/s, "
            f"{b['p99'] / c['p99']:.2f}x p99, {b['cpu'] / c['cpu']:.2f}x CPU per request"
        )
    f = results.get("f. floor: bare httptools proxy")
    if b and c and f:
        print(
            f"floor / nginx proxy:         {f['rps'] / c['rps']:.2f}x req/s "
            f"(taxiway http / floor: {b['rps'] / f['rps']:.2f}x)"
        )
    if d and e:
        print(
            f"taxiway tcp / haproxy tcp:   {d['rps'] / e['rps']:.2f}x req/s, "
            f"{d['p99'] / e['p99']:.2f}x p99, {d['cpu'] / e['cpu']:.2f}x CPU per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
