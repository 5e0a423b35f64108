"""Throwaway machines: the release command and the console.

On the platform both run in a temporary machine built from the app's config, with
the app's env and secrets, its own ``FLY_PROCESS_GROUP`` (``fly_app_release_command``,
``fly_app_console``), no services and no volumes, and are destroyed afterwards
(FLY-SEMANTICS.md §6.5, Appendix A).
"""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path

from taxiway.config.loader import LoadedConfig
from taxiway.config.units import duration_seconds
from taxiway.errors import TaxiwayError
from taxiway.plan.machine import plan_group
from taxiway.runtime import ids
from taxiway.runtime.command import ImageConfig, image_config
from taxiway.runtime.drivers.base import Driver, DriverError, LaunchSpec
from taxiway.runtime.environment import RuntimeVars, machine_env, private_ip, region_for
from taxiway.runtime.leftovers import ONEOFF_NOTES
from taxiway.runtime.logs import MachineLog, read_log

RELEASE_GROUP = "fly_app_release_command"
CONSOLE_GROUP = "fly_app_console"
DEFAULT_RELEASE_TIMEOUT = "5m"


class ReleaseCommandFailed(TaxiwayError):
    """The release command exited non-zero or ran out of time; the deploy stops."""

    def __init__(self, message: str, machine_id: str | None = None) -> None:
        super().__init__(message)
        self.machine_id = machine_id


def oneoff_env(
    loaded: LoadedConfig,
    *,
    app: str,
    group: str,
    machine_id: str,
    secrets: dict[str, str],
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The env of a throwaway machine: the default group's env, secrets, runtime variables."""
    config = loaded.config
    from taxiway.config.groups import default_group

    spec = plan_group(config, default_group(config), base_dir=loaded.base_dir)
    plan_env = {**spec.env, "FLY_PROCESS_GROUP": group}
    version = ids.ulid()
    runtime = RuntimeVars(
        app=app,
        machine_id=machine_id,
        group=group,
        region=region_for(config.primary_region),
        private_ip=private_ip(0, 0),
        image_ref=f"registry.fly.io/{app}:deployment-{version}",
        version=version,
        memory_mb=spec.guest.memory_mb,
        primary_region=config.primary_region,
    )
    return machine_env(plan_env, secrets, runtime, image=spec.image_env, extra=extra)


def oneoff_argv(command: str, loaded: LoadedConfig, image: ImageConfig, what: str) -> list[str]:
    """The command shell-split, after the ENTRYPOINT (which always runs), as flyctl does."""
    try:
        cmd = shlex.split(command)
    except ValueError as exc:
        raise TaxiwayError(f"can't shell split the {what} '{command}': {exc}") from None
    exp = loaded.config.experimental
    entrypoint = exp.entrypoint if exp and exp.entrypoint else image.entrypoint or []
    return [*entrypoint, *cmd]


async def run_release_command(
    loaded: LoadedConfig,
    *,
    app: str,
    secrets: dict[str, str],
    driver: Driver,
    logs_dir: Path,
) -> str | None:
    """Run ``[deploy] release_command`` to completion; returns its machine id, or None.

    A non-zero exit or a timeout raises `ReleaseCommandFailed`, after the output was
    logged (`taxiway logs --machine ID` shows it) and echoed by the caller.
    """
    deploy = loaded.config.deploy
    if deploy is None or not deploy.release_command:
        return None
    machine_id = ids.machine_id()
    log = MachineLog(logs_dir / f"{machine_id}.log")
    image = image_config(loaded.config, loaded.base_dir)
    spec = LaunchSpec(
        machine_id=machine_id,
        group=RELEASE_GROUP,
        argv=oneoff_argv(deploy.release_command, loaded, image, "release command"),
        env=oneoff_env(
            loaded,
            app=app,
            group=RELEASE_GROUP,
            machine_id=machine_id,
            secrets=secrets,
            extra={"RELEASE_COMMAND": "1"},
        ),
        cwd=loaded.base_dir,
        log=log,
    )
    timeout = duration_seconds(deploy.release_command_timeout or DEFAULT_RELEASE_TIMEOUT)
    log.system(f"release command: {shlex.join(spec.argv)}")
    try:
        code = await run_oneoff(driver, spec, timeout, logs_dir.parent)
    except DriverError as exc:
        raise ReleaseCommandFailed(f"release command could not start: {exc}") from None
    finally:
        log.close()
    if code is None:
        log.system(f"timed out after {deploy.release_command_timeout or DEFAULT_RELEASE_TIMEOUT}")
        raise ReleaseCommandFailed(
            f"release command timed out after {timeout:g}s (release_command_timeout); "
            f"its output: `taxiway logs --machine {machine_id}`",
            machine_id,
        )
    if code != 0:
        raise ReleaseCommandFailed(
            f"release command failed with exit code {code}, so no machine was started or "
            f"replaced; its output: `taxiway logs --machine {machine_id}`",
            machine_id,
        )
    return machine_id


async def run_oneoff(
    driver: Driver, spec: LaunchSpec, timeout_s: float, state_dir: Path
) -> int | None:
    """Run a throwaway machine to its end: its exit code, or None when it ran out of time
    (then its whole tree is killed). While it runs, its process is noted under
    ``state_dir/oneoffs``, so a daemon killed meanwhile leaves nothing behind: the next
    one kills what the note names (`taxiway.runtime.leftovers.reap_oneoffs`)."""
    process = await driver.launch(spec)
    note = state_dir / ONEOFF_NOTES / f"{spec.machine_id}.json"
    note.parent.mkdir(mode=0o700, exist_ok=True)
    note.write_text(
        json.dumps({"pid": process.pid, "pgid": process.pgid, "start": process.start_time})
    )
    try:
        return await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill_tree()
        await process.wait()
        return None
    finally:
        process.kill_tree()
        note.unlink(missing_ok=True)


def last_lines(logs_dir: Path, machine_id: str, n: int = 20) -> list[str]:
    """The end of a one-off machine's output, to show next to its failure."""
    entries = read_log(logs_dir / f"{machine_id}.log")
    return [e.line for e in entries if e.stream != "system"][-n:]
