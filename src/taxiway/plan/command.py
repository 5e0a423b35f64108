"""What a machine runs, resolved as the platform starts it.

The platform starts the image's ENTRYPOINT with its CMD, where fly.toml may override
either: a `[processes]` command or `[experimental] cmd` replaces CMD, `entrypoint`
replaces ENTRYPOINT, `exec` replaces both (flyctl's `internal/appconfig/machines.go`
puts them in the machine config's `init`; https://fly.io/docs/reference/configuration/).
Throwaway machines (release command, console, machine checks) run their command after
the ENTRYPOINT, which always runs. The image is the Dockerfile's built stage, read
without building it (`taxiway.plan.dockerfile`), so the plan can say what every
driver will run and `taxiway config machines` can print it.
"""

from __future__ import annotations

import shlex

from taxiway.errors import TaxiwayError
from taxiway.plan.dockerfile import ImageConfig


class CommandError(TaxiwayError):
    """A group with nothing to run, or a one-off command that can't be split."""


def machine_argv(
    cmd: list[str] | None,
    entrypoint: list[str] | None,
    exec_argv: list[str] | None,
    image: ImageConfig,
) -> list[str]:
    """The argv a machine runs (empty when neither fly.toml nor the image gives one)."""
    if exec_argv:
        return list(exec_argv)
    return [*effective_entrypoint(entrypoint, image), *(cmd or image.cmd or [])]


def effective_entrypoint(entrypoint: list[str] | None, image: ImageConfig) -> list[str]:
    """fly.toml's entrypoint where it sets one (even an empty one), else the image's."""
    return list(entrypoint) if entrypoint is not None else list(image.entrypoint or [])


def no_command(group: str) -> CommandError:
    """What to add when process group ``group`` has nothing to run."""
    return CommandError(
        f"process group '{group}' has no command: add one under [processes] "
        f'(e.g. {group} = "python app.py"), or [experimental] cmd, or a Dockerfile '
        "with CMD or ENTRYPOINT"
    )


def oneoff_argv(command: str, entrypoint: list[str], what: str) -> list[str]:
    """A throwaway machine's ``command`` shell-split, after the ``entrypoint``, as flyctl
    runs a release command or a console; ``what`` names the command in the error."""
    try:
        cmd = shlex.split(command)
    except ValueError as exc:
        raise CommandError(f"can't shell split the {what} '{command}': {exc}") from None
    return [*entrypoint, *cmd]
