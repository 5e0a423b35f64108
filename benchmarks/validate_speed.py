"""How long `taxiway config validate -c FILE` takes from the shell, next to named peers.

Every command is started as a fresh process, the way a user, an editor hook or CI starts it,
and timed from spawn to exit. Peers, measured in the same run and interleaved with taxiway:

- `python -c pass` with this interpreter: the floor any Python CLI pays before doing work;
- `taplo check --schema <taxiway's JSON Schema>`: the TOML validator editors use
  (installed on demand with npm into benchmarks/.cache);
- `check-jsonschema --schemafile <taxiway's JSON Schema>`: a generic JSON Schema validator
  (installed on demand from PyPI into benchmarks/.cache/venv).

Files: examples/hello/fly.toml and the largest real config of the corpus
(<repo>/../shared/corpus/real/). Run it with `make bench`; `--help` lists the knobs.
Standard library only. Exit code 0 unless taxiway itself fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
SCHEMA = CACHE / "fly-schema.json"
HELLO = ROOT / "examples" / "hello" / "fly.toml"
CORPUS = ROOT.parent / "shared" / "corpus" / "real"

#: Measured commands run as on a user's machine: Python writes and reuses bytecode. (CI and some
#: sandboxes set PYTHONDONTWRITEBYTECODE, which makes every start recompile every module.)
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

#: Limit for one run of a measured command; a peer that hangs is dropped, not waited on.
RUN_TIMEOUT = 60
#: Limit for an on-demand install (npm, pip).
INSTALL_TIMEOUT = 600


@dataclass
class Tool:
    """One command to time on one file."""

    name: str
    argv: list[str]
    is_taxiway: bool = False
    reads_file: bool = True  # False for the `python -c pass` floor
    times_ms: list[float] = field(default_factory=list)
    exit_codes: set[int] = field(default_factory=set)
    first_output: str = ""
    dropped: str = ""  # why it was dropped part-way, if it was


@dataclass
class Group:
    """taxiway and its peers on one file."""

    label: str
    path: Path | None
    tools: list[Tool]


def say(msg: str = "") -> None:
    print(msg, flush=True)


def rel(path: Path) -> str:
    """A path as the user reads it: relative to the repository when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else str(absolute)


def tail(text: str, lines: int = 3) -> str:
    """The last few non-empty lines of some output, on one line."""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def crashed(output: str) -> bool:
    """A Python traceback: a bug, whatever the exit code (taxiway never shows users one)."""
    return "Traceback (most recent call last):" in output


def run_quiet(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a setup command (install, schema), capturing its output; never raises for exit codes."""
    return subprocess.run(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- the tools


def find_taxiway(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    # The console script of the environment this interpreter belongs to (.venv/bin/taxiway).
    beside = Path(sys.executable).parent / "taxiway"
    if beside.exists():
        return beside
    found = shutil.which("taxiway")
    return Path(found) if found else None


def make_schema(taxiway: Path) -> tuple[Path | None, str]:
    """`taxiway config schema > benchmarks/.cache/fly-schema.json`; (path, "") or (None, why)."""
    argv = [str(taxiway), "config", "schema"]
    try:
        proc = run_quiet(argv, RUN_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`taxiway config schema` could not run: {exc}"
    if proc.returncode != 0:
        return None, (
            f"`taxiway config schema` failed (exit {proc.returncode}): "
            f"{tail(proc.stderr or proc.stdout)}"
        )
    try:
        json.loads(proc.stdout)
    except ValueError as exc:
        return None, f"`taxiway config schema` did not print JSON ({exc})"
    CACHE.mkdir(parents=True, exist_ok=True)
    SCHEMA.write_text(proc.stdout, encoding="utf-8")
    return SCHEMA, ""


def ensure_taplo(install: bool) -> tuple[Path | None, str]:
    """taplo from `npm install --prefix benchmarks/.cache @taplo/cli`; (path, "") or (None, why)."""
    taplo = CACHE / "node_modules" / ".bin" / "taplo"
    if taplo.exists():
        return taplo, ""
    if not install:
        return None, "taplo is not installed in benchmarks/.cache and --no-install was given"
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm is not on PATH (taplo is installed with `npm install @taplo/cli`)"
    CACHE.mkdir(parents=True, exist_ok=True)
    argv = [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "@taplo/cli"]
    say(f"installing taplo: {shlex.join(argv)}")
    try:
        proc = run_quiet(argv, INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`npm install @taplo/cli` did not finish: {exc}"
    if proc.returncode != 0:
        return (
            None,
            f"`npm install @taplo/cli` failed (exit {proc.returncode}): {tail(proc.stderr)}",
        )
    if not taplo.exists():
        return None, f"`npm install @taplo/cli` succeeded but {rel(taplo)} is missing"
    return taplo, ""


def ensure_check_jsonschema(install: bool) -> tuple[Path | None, str]:
    """check-jsonschema in benchmarks/.cache/venv, made with this interpreter if missing."""
    venv = CACHE / "venv"
    exe = venv / "bin" / "check-jsonschema"
    if exe.exists():
        return exe, ""
    if not install:
        return (
            None,
            "check-jsonschema is not installed in benchmarks/.cache and --no-install was given",
        )
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            say(f"creating {rel(venv)} with {sys.executable}")
            proc = run_quiet([sys.executable, "-m", "venv", str(venv)], INSTALL_TIMEOUT)
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                return (
                    None,
                    f"`python -m venv` failed (exit {proc.returncode}): {tail(proc.stderr)}",
                )
        argv = [str(python), "-m", "pip", "install", "-q", "check-jsonschema"]
        say(f"installing check-jsonschema: {shlex.join(argv)}")
        proc = run_quiet(argv, INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"installing check-jsonschema did not finish: {exc}"
    if proc.returncode != 0:
        return (
            None,
            f"`pip install check-jsonschema` failed (exit {proc.returncode}): {tail(proc.stderr)}",
        )
    if not exe.exists():
        return None, f"`pip install check-jsonschema` succeeded but {rel(exe)} is missing"
    return exe, ""


def version_of(argv: list[str]) -> str:
    try:
        proc = run_quiet(argv, RUN_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    # Not the exit code: `taplo --version` prints its version and exits 1.
    out = proc.stdout.strip().splitlines()
    return out[0].strip() if out else "?"


def largest_corpus_file(corpus: Path) -> Path | None:
    files = [p for p in corpus.glob("*.toml") if p.is_file()] if corpus.is_dir() else []
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_size, p.name))


# --------------------------------------------------------------------------- measuring


def run_once(tool: Tool, *, capture: bool) -> None:
    """Start the command, wait for it, record wall time (ms) and exit code."""
    start = time.perf_counter_ns()
    proc = subprocess.run(
        tool.argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
        timeout=RUN_TIMEOUT,
        check=False,
        env=CHILD_ENV,
    )
    elapsed_ms = (time.perf_counter_ns() - start) / 1e6
    if capture:
        if not tool.first_output:
            tool.first_output = proc.stdout.decode(errors="replace")
        return  # warm-up: output kept for diagnostics, time not
    tool.times_ms.append(elapsed_ms)
    tool.exit_codes.add(proc.returncode)


def measure(group: Group, runs: int, warmup: int) -> None:
    """Warm every tool up, then time them round-robin so drift hits all of them alike."""
    live = list(group.tools)
    for tool in live:
        try:
            for _ in range(warmup):
                run_once(tool, capture=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tool.dropped = f"could not run: {exc}"
    live = [t for t in live if not t.dropped]
    for _ in range(runs):
        for tool in live:
            if tool.dropped:
                continue
            try:
                run_once(tool, capture=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                tool.dropped = f"dropped after {len(tool.times_ms)} runs: {exc}"


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


# --------------------------------------------------------------------------- reporting


def print_table(groups: list[Group]) -> None:
    header = ["tool", "file", "min ms", "median ms", "p90 ms", "taxiway/peer"]
    rows: list[list[str]] = []
    marks: list[str] = []
    for group in groups:
        taxiway = next((t for t in group.tools if t.is_taxiway and t.times_ms), None)
        taxiway_median = statistics.median(taxiway.times_ms) if taxiway else None
        for tool in group.tools:
            file_col = group.label if tool.reads_file else "(none)"
            if not tool.times_ms:
                rows.append([tool.name, file_col, "-", "-", "-", "-"])
                marks.append(tool.dropped or "no runs")
                continue
            median = statistics.median(tool.times_ms)
            if tool.is_taxiway:
                ratio = "-"
            elif taxiway_median is None:
                ratio = "n/a"
            else:
                ratio = f"{taxiway_median / median:.2f}x"
            rows.append(
                [
                    tool.name,
                    file_col,
                    f"{min(tool.times_ms):.1f}",
                    f"{median:.1f}",
                    f"{p90(tool.times_ms):.1f}",
                    ratio,
                ]
            )
            notes = []
            if tool.exit_codes != {0}:
                notes.append("exit " + ",".join(str(c) for c in sorted(tool.exit_codes)))
            if tool.dropped:
                notes.append(tool.dropped)
            marks.append("; ".join(notes))
        rows.append([])
        marks.append("")
    while rows and not rows[-1]:
        rows.pop()
        marks.pop()

    widths = [max(len(r[i]) for r in [header, *rows] if r) for i in range(len(header))]
    numeric = {2, 3, 4, 5}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    say(fmt(header))
    say(fmt(["-" * w for w in widths]))
    for cells, mark in zip(rows, marks, strict=True):
        if not cells:
            say()
            continue
        line = fmt(cells)
        say(f"{line}   ({mark})" if mark else line)
    say()
    say("taxiway/peer = taxiway's median / the peer's median on the same file: below 1.00x means")
    say("taxiway is faster. p90 is nearest-rank. Times are wall clock from spawn to exit.")


def verdicts(groups: list[Group]) -> tuple[list[str], list[str]]:
    """(taxiway failures, notes on peers and on corpus files taxiway rejected).

    taxiway failing is the one thing that makes this script fail. The bundled example must
    validate (exit 0). A corpus file may really hold errors (exit 1 = user error, and still a
    full validation, so its time counts); any other exit is a crash or a usage error.
    """
    failures: list[str] = []
    notes: list[str] = []
    for i, group in enumerate(groups):
        for tool in group.tools:
            allowed = {0, 1} if (tool.is_taxiway and i > 0) else {0}
            codes = ",".join(str(c) for c in sorted(tool.exit_codes)) or "none"
            where = f"{tool.name} on {group.label}: exit {codes}"
            if tool.dropped:
                where += f" ({tool.dropped})"
            output = tail(tool.first_output)
            broken = tool.dropped or not tool.times_ms or crashed(tool.first_output)
            if broken or not tool.exit_codes <= allowed:
                (failures if tool.is_taxiway else notes).append(f"{where}: {output}")
            elif tool.exit_codes != {0}:
                notes.append(f"{where}, the file has errors: {output}")
    return failures, notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `taxiway config validate` from the shell against named peers.",
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command (30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (3)")
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS, help=f"folder of real configs ({rel(CORPUS)})"
    )
    parser.add_argument("--taxiway", help="taxiway executable (default: next to this python)")
    parser.add_argument(
        "--no-install", action="store_true", help="don't install missing peers (npm, pip)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw_args = sys.argv[1:] if argv is None else argv

    taxiway = find_taxiway(args.taxiway)
    if taxiway is None or not taxiway.exists():
        say(
            "taxiway is not installed next to this interpreter "
            f"({Path(sys.executable).parent}); run `make bench`, which installs it into .venv."
        )
        return 1

    files: list[tuple[str, Path]] = [(rel(HELLO), HELLO)]
    big = largest_corpus_file(args.corpus)
    if big is None:
        say(f"skipped the large real config: no *.toml corpus at {args.corpus}")
    else:
        label = f"{args.corpus.name}/{big.name} ({big.stat().st_size:,} B)"
        files.append((label, big))

    skipped: list[str] = []
    schema, why = make_schema(taxiway)
    taplo = cjs = None
    if schema is None:
        skipped.append(f"taplo and check-jsonschema skipped: {why}")
    else:
        taplo, why = ensure_taplo(not args.no_install)
        if taplo is None:
            skipped.append(f"taplo skipped: {why}")
        cjs, why = ensure_check_jsonschema(not args.no_install)
        if cjs is None:
            skipped.append(f"check-jsonschema skipped: {why}")

    try:
        taxiway_version = metadata.version("taxiway")
    except metadata.PackageNotFoundError:
        taxiway_version = "?"
    say()
    say(f"taxiway {taxiway_version} ({rel(taxiway)})")
    say(f"python {platform.python_version()} ({sys.executable})")
    if taplo is not None:
        say(f"taplo: {version_of([str(taplo), '--version'])}")
    if cjs is not None:
        say(f"check-jsonschema: {version_of([str(cjs), '--version'])}")
    say(f"{platform.platform()}, {os.cpu_count()} CPUs")
    say(f"{args.runs} timed runs per command after {args.warmup} warm-ups")
    say()

    groups: list[Group] = []
    for label, path in files:
        tools = [
            Tool(
                "taxiway validate",
                [str(taxiway), "config", "validate", "-c", str(path)],
                is_taxiway=True,
            ),
            Tool("python -c pass", [sys.executable, "-c", "pass"], reads_file=False),
        ]
        if taplo is not None and schema is not None:
            tools.append(
                Tool("taplo check", [str(taplo), "check", "--schema", schema.as_uri(), str(path)])
            )
        if cjs is not None and schema is not None:
            tools.append(
                Tool("check-jsonschema", [str(cjs), "--schemafile", str(schema), str(path)])
            )
        group = Group(label, path, tools)
        say(f"measuring {label}: " + ", ".join(t.name for t in tools))
        measure(group, args.runs, args.warmup)
        groups.append(group)
    say()

    print_table(groups)

    failures, notes = verdicts(groups)
    notes = skipped + notes

    if notes:
        say()
        say("notes:")
        for note in notes:
            say(f"  - {note}")

    say()
    say("reproduce:")
    script = shlex.join([rel(Path(sys.executable)), rel(Path(__file__)), *raw_args])
    say(f"  make bench    (or: cd {shlex.quote(str(ROOT))} && {script})")
    say("commands timed:")
    seen: set[str] = set()
    for group in groups:
        for tool in group.tools:
            line = shlex.join(tool.argv)
            if line not in seen:
                seen.add(line)
                say(f"  {line}")

    if failures:
        say()
        say("FAILED: taxiway itself failed:")
        for failure in failures:
            say(f"  - {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
