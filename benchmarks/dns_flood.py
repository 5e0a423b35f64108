"""The edge's req/s while the private network's DNS server is flooded.

The DNS server runs as a child process of the daemon so that a machine flooding
``fdaa::3`` costs the edge (which lives in the daemon's event loop) nothing but CPU the
kernel shares out. This measures what is left, in one run, in rounds (default 3) that take
every part in turn; the median of the rounds is shown:

  a. the edge alone (``http`` handler, `benchmarks/edge.py`'s set-up: nginx serving a
     small file behind taxiway's edge on uvloop, driven by wrk);
  b. the edge while a flooder sends UDP queries as fast as it can to a sink (a socket
     nobody reads): what the flooder's own CPU costs the edge, the control for c/d;
  c. the edge while the same flooder floods the DNS server started at the daemon's
     priority (``nice=0``);
  d. as c, with the DNS server at `start_dns`'s default priority (``nice 10``).

The flood sends from ``--sources`` loopback addresses (127.0.0.2, ...), so the per-source
rate limit lets most of it in (the worst case: many machines at once; a single source
gets 2000 queries/s through), and mixes the shapes a hostile machine would send: a
repeated question (served from the reply cache), a different ``.internal`` name each time
(parsed, NXDOMAIN), and TXT ``_instances.internal``. It prints req/s, p99, the DNS
server's CPU seconds during the part, and the ratios c/b, d/b and c/a.
Run: ``.venv/bin/python benchmarks/dns_flood.py``.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import edge as edge_bench  # noqa: E402  (benchmarks/edge.py: its nginx, wrk and edge set-up)


def flood(port: int, sources: int) -> None:
    """The flooder's process: UDP queries to 127.0.0.1:``port`` until killed."""
    from dnslib import DNSRecord

    packets = [DNSRecord.question("shop.internal", "AAAA").pack()] * 10_000
    packets += [DNSRecord.question(f"x{i}.vm.shop.internal", "AAAA").pack() for i in range(5_000)]
    packets += [DNSRecord.question("_instances.internal", "TXT").pack()] * 5_000
    packets = [packets[(i * 7919) % len(packets)] for i in range(len(packets))]  # mixed
    socks = []
    for i in range(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"127.0.0.{2 + i}", 0))
        sock.setblocking(False)
        socks.append(sock)
    target = ("127.0.0.1", port)
    print("flooding", flush=True)
    while True:
        for n, packet in enumerate(packets):
            try:  # noqa: SIM105  (a context manager per packet would slow the flood)
                socks[n % sources].sendto(packet, target)
            except (BlockingIOError, ConnectionRefusedError):
                pass


def start_flood(port: int, sources: int) -> subprocess.Popen:
    proc = edge_bench.start(
        [sys.executable, __file__, "--flood", str(port), str(sources)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def publish_apps(folder: Path) -> None:
    from taxiway.private_net.registry import AppEntry, MachineEntry, publish

    machines = [
        MachineEntry(f"{i:014x}", "app", "local", f"fdaa:0:1:a7b:0:{i + 1:x}:0:2", "started")
        for i in range(8)
    ]
    publish(AppEntry("shop", "bench", os.getpid(), "local", machines), folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every part (median)")
    parser.add_argument("--sources", type=int, default=16, help="flooding source addresses")
    parser.add_argument("--flood", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood(*args.flood)
        return 0

    from taxiway.private_net.dns_server import start_dns

    tools = edge_bench.ensure_tools()
    if tools["wrk"] is None or tools["nginx"] is None:
        print("wrk and nginx are needed; nothing to measure")
        return 0
    procs: list[subprocess.Popen] = []
    servers = []
    with tempfile.TemporaryDirectory(prefix="taxiway-bench-dns-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx's workers run as nobody when started as root
        (folder / "www").mkdir()
        (folder / "www" / "index.html").write_bytes(edge_bench.BODY)
        (folder / "6pn").mkdir()
        publish_apps(folder / "6pn")
        try:
            backend = edge_bench.free_port()
            procs.append(
                edge_bench.nginx(
                    tools["nginx"],
                    folder,
                    "backend",
                    edge_bench.BACKEND.format(port=backend, dir=folder),
                )
            )
            edge_bench.wait_port(backend)
            edge = edge_bench.start(
                [sys.executable, str(HERE / "edge.py"), "--serve-edge", str(backend), tmp],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            procs.append(edge)
            assert edge.stdout is not None
            edge_port = {int(k): v for k, v in json.loads(edge.stdout.readline()).items()}[8000]

            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sink.bind(("127.0.0.1", 0))  # never read: the kernel drops what overflows
            no_resolver = [("127.0.0.1", 9)]
            dns = start_dns([("127.0.0.1", 0)], folder / "6pn", upstreams=no_resolver, nice=0)
            niced = start_dns([("127.0.0.1", 0)], folder / "6pn", upstreams=no_resolver)
            servers += [dns, niced]

            parts: list[tuple[str, int | None, list[int]]] = [
                ("a. edge alone", None, []),
                ("b. flood to a sink (control)", sink.getsockname()[1], []),
                ("c. flood to the DNS server, nice 0", dns.addresses[0][1], [dns.pid]),
                ("d. same, nice 10 (the default)", niced.addresses[0][1], [niced.pid]),
            ]
            print(
                f"python {sys.version.split()[0]} + uvloop, {os.cpu_count()} CPUs; "
                f"wrk -t1 -c{args.connections} -d{args.seconds:g}s x {args.rounds} rounds "
                f"through taxiway's edge (http handler); flood from {args.sources} sources\n"
            )
            edge_bench.wrk(tools["wrk"], edge_port, 1.0, args.connections, 1)  # warm-up
            runs: dict[str, list[dict]] = {name: [] for name, _, _ in parts}
            for _ in range(args.rounds):
                for name, target, pids in parts:
                    flooder = start_flood(target, args.sources) if target else None
                    try:
                        time.sleep(0.3)
                        before = edge_bench.cpu_seconds(pids)
                        run = edge_bench.wrk(
                            tools["wrk"], edge_port, args.seconds, args.connections, 1
                        )
                        run["dns_cpu"] = edge_bench.cpu_seconds(pids) - before
                    finally:
                        edge_bench.stop(flooder)
                    runs[name].append(run)
            sink.close()
        finally:
            for server in servers:
                server.stop()
            for proc in reversed(procs):
                edge_bench.stop(proc)

    results = {
        name: {
            "rps": statistics.median(r["rps"] for r in rs),
            "p99": statistics.median(r["p99"] for r in rs),
            "dns_cpu": statistics.median(r["dns_cpu"] for r in rs),
            "all": [round(r["rps"]) for r in rs],
        }
        for name, rs in runs.items()
    }
    header = f"{'':34}  {'req/s':>9}  {'p99 ms':>7}  {'DNS CPU s':>9}  rounds (req/s)"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        rounds = " ".join(str(x) for x in r["all"])
        print(f"{name:34}  {r['rps']:>9.0f}  {r['p99']:>7.2f}  {r['dns_cpu']:>9.2f}  {rounds}")
    a, b, c, d = (results[name]["rps"] for name, _, _ in parts)
    print()
    print(f"flooded DNS / control:          {c / b:.2f}x req/s (nice 10: {d / b:.2f}x)")
    print(f"flooded DNS / edge alone:       {c / a:.2f}x req/s (nice 10: {d / a:.2f}x)")
    print(f"flooder alone / edge alone:     {b / a:.2f}x req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
