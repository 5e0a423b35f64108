"""Time from `taxiway up -d` to every machine started, and the daemon's memory, against honcho.

For N = 1, 10, 50 machines of a trivial app (a Python process that sleeps), in the
same run, alternating taxiway and honcho so that a busy neighbour slows both alike:

- taxiway: `taxiway up -d` prints its status table once every machine is `started`;
  timed until it has printed every machine started (the command exits a millisecond or
  two later: shown too), and the daemon's RSS is read from /proc once its API has
  answered a `taxiway status` (it may report before it has loaded all it serves with).
- honcho (a Procfile runner from PyPI, installed on demand into benchmarks/.cache/venv):
  `honcho start` with N Procfile entries; timed until it has printed "started with
  pid" for all N, then stopped. Its own RSS is read the same way.

Each runs from its own virtualenv through its console script, as users install them
(`pipx install`): taxiway is installed from this checkout with its runtime
dependencies only into benchmarks/.cache/taxiway-venv (reinstalled every run). The
development .venv also holds the test tools, and one of them (typing_extensions,
which msgspec imports when present) alone adds ~10 ms to every start.

Both start the same N processes from the same interpreter, so the difference is the
supervisor's own cost. Run: `make bench` (every benchmark), or
`.venv/bin/python benchmarks/startup.py [--sizes 1,10,50] [--runs 9]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
SLEEPER = "import time\nwhile True:\n    time.sleep(3600)\n"
#: Both write each line as they print it (PYTHONUNBUFFERED), so neither is timed late.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
    "NO_COLOR": "1",
    "PYTHONUNBUFFERED": "1",
}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def taxiway_bin() -> list[str]:
    """The `taxiway` script of benchmarks/.cache/taxiway-venv, installed from this checkout
    (the current interpreter's `-m taxiway` when that venv can't be made)."""
    venv = CACHE / "taxiway-venv"
    exe = venv / "bin" / "taxiway"
    try:
        if not (venv / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--force-reinstall", str(ROOT)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"taxiway could not be installed into {venv} ({exc}); timing {sys.executable}")
        return [sys.executable, "-m", "taxiway"]
    return [str(exe)]


def app_dir(n: int, base: Path) -> Path:
    folder = base / f"app{n}"
    folder.mkdir()
    (folder / "sleeper.py").write_text(SLEEPER)
    (folder / "fly.toml").write_text(
        f'app = "bench{n}"\nkill_timeout = 2\n[processes]\nworker = "{sys.executable} sleeper.py"\n'
    )
    (folder / "Procfile").write_text(
        "".join(f"w{i}: {sys.executable} sleeper.py\n" for i in range(n))
    )
    return folder


def count_started(proc: subprocess.Popen[str], n: int, started: Callable[[str], bool]) -> int:
    """Read ``proc``'s output until ``n`` lines said a process started (or it ended); how
    many did."""
    assert proc.stdout is not None
    count = 0
    while count < n and (line := proc.stdout.readline()):
        count += started(line)
    return count


def _taxiway_started(line: str) -> bool:
    """A row of `up -d`'s status table (ID GROUP STATE ...) for a started machine."""
    fields = line.split()
    return len(fields) > 2 and len(fields[0]) == 14 and fields[2] == "started"


def _honcho_started(line: str) -> bool:
    return "started (pid=" in line or "started with pid" in line


def run_taxiway(tw: list[str], folder: Path, n: int) -> tuple[float, float, float]:
    """Seconds until `up -d` has printed every machine `started` (as honcho is timed until
    it printed every process started), seconds until the command exited, daemon RSS."""
    subprocess.run([*tw, "down"], cwd=folder, capture_output=True, env=ENV, check=False)
    if n != 1:
        # counts are kept by the state store: set them once (this starts a daemon), then stop
        subprocess.run([*tw, "up", "-d"], cwd=folder, capture_output=True, env=ENV, check=True)
        subprocess.run(
            [*tw, "scale", "count", f"worker={n}"],
            cwd=folder,
            capture_output=True,
            env=ENV,
            check=True,
        )
        subprocess.run([*tw, "down"], cwd=folder, capture_output=True, env=ENV, check=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*tw, "up", "-d"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    started = count_started(proc, n, _taxiway_started)
    reported = time.perf_counter() - start
    _, err = proc.communicate()
    exited = time.perf_counter() - start
    if proc.returncode != 0 or started < n:
        raise SystemExit(f"taxiway up -d failed in {folder}: {err.strip()}")
    pid = int((folder / ".taxiway" / "daemon.lock").read_text())
    # The daemon can report its machines started before it has imported its machinery
    # (taxiway.runtime.early): its memory is read once its API has answered.
    subprocess.run([*tw, "status"], cwd=folder, capture_output=True, env=ENV, check=True)
    memory = rss_mb(pid)
    subprocess.run([*tw, "down"], cwd=folder, capture_output=True, env=ENV, check=True)
    return reported, exited, memory


def honcho_bin() -> Path | None:
    exe = CACHE / "venv" / "bin" / "honcho"
    if exe.exists():
        return exe
    try:
        if not (CACHE / "venv").exists():
            subprocess.run([sys.executable, "-m", "venv", str(CACHE / "venv")], check=True)
        subprocess.run(
            [str(CACHE / "venv" / "bin" / "pip"), "install", "-q", "honcho"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"honcho could not be installed ({exc}); its column is skipped")
        return None
    return exe if exe.exists() else None


def run_honcho(exe: Path, folder: Path, n: int) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "start"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    count_started(proc, n, _honcho_started)
    elapsed = time.perf_counter() - start
    memory = rss_mb(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    return elapsed, memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument(
        "--runs", type=int, default=9, help="runs of each, alternating (the median is shown)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    honcho = honcho_bin()
    tw = taxiway_bin()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each "
        "(median shown)\n"
    )
    header = (
        f"{'machines':>8}  {'taxiway s':>9}  {'exited s':>8}  {'honcho s':>8}  "
        f"{'ratio':>6}  {'taxiway RSS MB':>14}  {'honcho RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="taxiway-bench-") as tmp:
        for n in sizes:
            folder = app_dir(n, Path(tmp))
            taxiway_runs, hc = [], []
            for _ in range(args.runs):
                taxiway_runs.append(run_taxiway(tw, folder, n))
                if honcho:
                    hc.append(run_honcho(honcho, folder, n))
            tw_s = statistics.median(r[0] for r in taxiway_runs)
            tw_exit = statistics.median(r[1] for r in taxiway_runs)
            tw_mb = statistics.median(r[2] for r in taxiway_runs)
            if hc:
                hc_s = statistics.median(t for t, _ in hc)
                hc_mb = statistics.median(m for _, m in hc)
                print(
                    f"{n:>8}  {tw_s:>9.3f}  {tw_exit:>8.3f}  {hc_s:>8.3f}  "
                    f"{tw_s / hc_s:>5.2f}x  {tw_mb:>14.1f}  {hc_mb:>13.1f}"
                )
            else:
                print(
                    f"{n:>8}  {tw_s:>9.3f}  {tw_exit:>8.3f}  {'-':>8}  {'-':>6}  "
                    f"{tw_mb:>14.1f}  {'-':>13}"
                )
            shutil.rmtree(folder, ignore_errors=True)
    print(
        "\ntaxiway s: `taxiway up -d` until it printed every machine started (includes "
        "starting the daemon);\nexited s: until the command exited; honcho s: `honcho "
        "start` until it printed every process started. ratio: taxiway s / honcho s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
