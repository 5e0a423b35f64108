"""What a machine runs: its argv, from the plan, or from the Dockerfile.

The platform starts the image's ENTRYPOINT with the CMD, where fly.toml may
override either (`[processes]`/`[experimental] cmd` replace CMD, `entrypoint`
replaces ENTRYPOINT, `exec` replaces both). Without an image, taxiway reads the
Dockerfile (`[build] dockerfile`, else ./Dockerfile) for the ENTRYPOINT, CMD and
WORKDIR of the stage that would be built.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec

from taxiway.config.model import AppConfig
from taxiway.errors import TaxiwayError
from taxiway.plan.machine import MachineSpec


class CommandError(TaxiwayError):
    """A group with nothing to run."""


class ImageConfig(msgspec.Struct, frozen=True):
    """The parts of a Dockerfile's final stage that decide how a machine starts."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None


_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)\s+(.*)$")


def read_dockerfile(path: Path, target: str | None = None) -> ImageConfig:
    """ENTRYPOINT, CMD and WORKDIR of the last stage (or of ``target``), as docker reads them."""
    stages: list[tuple[str | None, dict[str, object]]] = []
    for instruction, args in _instructions(path.read_text(encoding="utf-8", errors="replace")):
        if instruction == "FROM":
            parts = args.split()
            name = parts[2].lower() if len(parts) >= 3 and parts[1].lower() == "as" else None
            base = next((s for n, s in stages if n and n == parts[0].lower()), None)
            stages.append((name, dict(base) if base else {}))
        elif stages and instruction in ("ENTRYPOINT", "CMD"):
            stage = stages[-1][1]
            stage[instruction.lower()] = _exec_form(args)
            if instruction == "ENTRYPOINT":
                stage.pop("cmd", None)  # docker resets an inherited CMD with a new ENTRYPOINT
        elif stages and instruction == "WORKDIR":
            stage = stages[-1][1]
            previous = str(stage.get("workdir") or "/")
            stage["workdir"] = str(Path(previous) / args.strip().strip('"'))
    if not stages:
        return ImageConfig()
    chosen = stages[-1][1]
    if target:
        chosen = next((s for n, s in stages if n == target.lower()), chosen)
    return ImageConfig(
        entrypoint=chosen.get("entrypoint"),  # type: ignore[arg-type]
        cmd=chosen.get("cmd"),  # type: ignore[arg-type]
        workdir=chosen.get("workdir"),  # type: ignore[arg-type]
    )


def _instructions(text: str) -> list[tuple[str, str]]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        m = _INSTRUCTION.match(pending)
        if m:
            out.append((m.group(1).upper(), m.group(2).strip()))
        pending = ""
    return out


def _exec_form(args: str) -> list[str]:
    """``["a", "b"]`` as is; the shell form becomes ``/bin/sh -c "…"`` like docker's."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", args]


def dockerfile_path(config: AppConfig, base_dir: Path) -> Path | None:
    name = config.build.dockerfile if config.build and config.build.dockerfile else "Dockerfile"
    if "://" in name:
        return None
    path = base_dir / name
    return path if path.is_file() else None


def image_config(config: AppConfig, base_dir: Path) -> ImageConfig:
    """The image's start settings, from the Dockerfile if there is one."""
    path = dockerfile_path(config, base_dir)
    if path is None:
        return ImageConfig()
    target = config.build.build_target if config.build else None
    return read_dockerfile(path, target)


def resolve_argv(spec: MachineSpec, image: ImageConfig) -> list[str]:
    """The argv a machine of ``spec.group`` runs, or a `CommandError` that says what to add."""
    init = spec.init
    if init.exec:
        return list(init.exec)
    entrypoint = init.entrypoint if init.entrypoint is not None else image.entrypoint or []
    cmd = init.cmd if init.cmd else image.cmd or []
    argv = [*entrypoint, *cmd]
    if not argv:
        raise CommandError(
            f"process group '{spec.group}' has no command: add one under [processes] "
            f'(e.g. {spec.group} = "python app.py"), or [experimental] cmd, or a Dockerfile '
            "with CMD or ENTRYPOINT"
        )
    return argv
