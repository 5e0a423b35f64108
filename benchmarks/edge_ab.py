"""Two (or more) source trees' edges side by side: which one's http path costs more.

`edge.py` runs one tree's edge, and on a shared box its req/s moves by half between runs.
Here each tree's edge (`edge.py --serve-edge` with ``PYTHONPATH`` at the tree's ``src``)
runs at once against one nginx backend, and wrk runs take them in turn, many short
rounds, each round starting with the next tree: a busy moment of the box hits every tree
alike. Prints each tree's median req/s and CPU time per request (the edge process's, from
/proc), and their ratios to the first tree. Run two copies of the same tree first to see
the noise (an A/A run here gave 0.95x req/s and 1.005x CPU):

    git archive HEAD~3 src | tar -x -C /tmp/before
    .venv/bin/python benchmarks/edge_ab.py before=/tmp/before/src after=src --rounds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge as bench  # the sibling script: its backend, wrk and /proc helpers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=SRC", help="a name and a src folder")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.trees]
    tools = bench.ensure_tools()
    if tools["wrk"] is None or tools["nginx"] is None:
        print("wrk and nginx are needed; nothing to measure")
        return 0
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="taxiway-bench-ab-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        (folder / "www").mkdir()
        (folder / "www" / "index.html").write_bytes(bench.BODY)
        try:
            backend = bench.free_port()
            body = bench.BACKEND.format(port=backend, dir=folder)
            procs.append(bench.nginx(tools["nginx"], folder, "backend", body))
            bench.wait_port(backend)
            edges: dict[str, tuple[int, int]] = {}
            for name, src in trees:
                (folder / name).mkdir()
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        bench.__file__,
                        "--serve-edge",
                        str(backend),
                        str(folder / name),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(Path(src).resolve())},
                    start_new_session=True,
                )
                procs.append(proc)
                assert proc.stdout is not None
                edges[name] = (int(json.loads(proc.stdout.readline())["8000"]), proc.pid)
            for port, _ in edges.values():
                bench.wrk(tools["wrk"], port, 1.0, args.connections, 1)  # warm-up
            runs: dict[str, list[dict]] = {name: [] for name in edges}
            names = list(edges)
            for i in range(args.rounds):
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    port, pid = edges[name]
                    before = bench.cpu_seconds([pid])
                    run = bench.wrk(tools["wrk"], port, args.seconds, args.connections, 1)
                    used = bench.cpu_seconds([pid]) - before
                    run["cpu"] = used * 1e6 / run["requests"] if run["requests"] else float("nan")
                    runs[name].append(run)
        finally:
            for proc in reversed(procs):
                bench.stop(proc)
    medians = {
        name: (statistics.median(r["rps"] for r in rs), statistics.median(r["cpu"] for r in rs))
        for name, rs in runs.items()
    }
    print(f"wrk -t1 -c{args.connections} -d{args.seconds:g}s x {args.rounds} rounds per tree")
    for name, (rps, cpu) in medians.items():
        print(f"{name:10} req/s {rps:8.0f}   CPU us/req {cpu:6.1f}")
    first = names[0]
    for name in names[1:]:
        print(
            f"{name}/{first}: {medians[name][0] / medians[first][0]:.3f}x req/s, "
            f"{medians[name][1] / medians[first][1]:.3f}x CPU per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
