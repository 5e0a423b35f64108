"""What a machine runs: its argv, from the plan, or from the Dockerfile.

The platform starts the image's ENTRYPOINT with the CMD, where fly.toml may
override either (`[processes]`/`[experimental] cmd` replace CMD, `entrypoint`
replaces ENTRYPOINT, `exec` replaces both). Without an image, taxiway reads the
Dockerfile for the ENTRYPOINT, CMD and WORKDIR of the stage that would be built
(`taxiway.plan.dockerfile`).
"""

from __future__ import annotations

from taxiway.errors import TaxiwayError
from taxiway.plan.dockerfile import ImageConfig, image_config
from taxiway.plan.machine import MachineSpec

#: ``ImageConfig`` and ``image_config`` are read here too (one-off machines do).
__all__ = ["CommandError", "ImageConfig", "image_config", "resolve_argv"]


class CommandError(TaxiwayError):
    """A group with nothing to run."""


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
