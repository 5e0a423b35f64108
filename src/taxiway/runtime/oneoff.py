"""Throwaway machines: the release command and the console.

On the platform both run in a temporary machine built from the app's config, with the
app's env and secrets, its own ``FLY_PROCESS_GROUP`` (``fly_app_release_command``,
``fly_app_console``), no services and no volumes, and are destroyed afterwards
(https://fly.io/docs/reference/configuration/#the-deploy-section; flyctl
`internal/command/deploy/machines_releasecommand.go`). The release command runs on the
machines' network: with the namespace driver, in a namespace of its own on the app's
bridge, which goes when it ends (`run_oneoff`).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from taxiway.config.groups import default_group
from taxiway.config.loader import LoadedConfig
from taxiway.config.units import duration_seconds
from taxiway.errors import TaxiwayError
from taxiway.plan.command import oneoff_argv
from taxiway.plan.dockerfile import ImageConfig
from taxiway.plan.machine import MachineSpec, StopConfig, plan_group
from taxiway.runtime import ids
from taxiway.runtime.drivers.base import Driver, DriverError, LaunchSpec
from taxiway.runtime.environment import RuntimeVars, machine_env, private_ip, region_for
from taxiway.runtime.leftovers import ONEOFF_NOTES
from taxiway.runtime.logs import MachineLog, read_log
from taxiway.runtime.machine import signal_number

RELEASE_GROUP = "fly_app_release_command"
CONSOLE_GROUP = "fly_app_console"
DEFAULT_RELEASE_TIMEOUT = "5m"


class ReleaseCommandFailed(TaxiwayError):
    """The release command exited non-zero or ran out of time; the deploy stops."""

    def __init__(self, message: str, machine_id: str | None = None) -> None:
        super().__init__(message)
        self.machine_id = machine_id


def default_plan(loaded: LoadedConfig, image: ImageConfig | None = None) -> MachineSpec:
    """The default group's plan: a throwaway machine is made from it (its env, the
    entrypoint its command runs after, how it stops, the image it runs); ``image``: the
    built image (docker driver), else the Dockerfile is read."""
    return plan_group(
        loaded.config, default_group(loaded.config), base_dir=loaded.base_dir, image=image
    )


def oneoff_env(
    loaded: LoadedConfig,
    spec: MachineSpec,
    *,
    app: str,
    group: str,
    machine_id: str,
    secrets: dict[str, str],
    extra: dict[str, str] | None = None,
    in_image: bool = False,
) -> dict[str, str]:
    """The env of a throwaway machine: the default group's env (``spec``, its plan),
    secrets, runtime variables; ``in_image``: it runs in the image (docker driver), so
    no host variable reaches it (`taxiway.runtime.environment.machine_env`)."""
    config = loaded.config
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
    return machine_env(
        plan_env, secrets, runtime, image=spec.image_env, extra=extra, host={} if in_image else None
    )


class ReleaseCommandInterrupted(ReleaseCommandFailed):
    """The release command was stopped (Ctrl-C of `up` or `deploy`): the release ends
    ``interrupted``."""


class OneoffExit(msgspec.Struct, kw_only=True):
    """How a throwaway machine ended, filled in by `run_oneoff` (also when it is
    interrupted, so the caller can record the exit code of what was stopped)."""

    code: int | None = None
    timed_out: bool = False


async def run_release_command(
    loaded: LoadedConfig,
    *,
    app: str,
    scope: str,
    secrets: dict[str, str],
    driver: Driver,
    logs_dir: Path,
    on_output: Callable[[dict[str, Any]], None] | None = None,
    on_exit: Callable[[str, int | None], None] | None = None,
    interrupt: asyncio.Event | None = None,
    image: ImageConfig | None = None,
) -> str | None:
    """Run ``[deploy] release_command`` to completion (in ``image``, the release's built
    image, with the docker driver); returns its machine id, or None.

    ``on_output`` gets each line of its output as it comes (`taxiway.runtime.logs.
    log_record`), ``on_exit`` its machine id and exit code once it ended, however it
    did. When ``interrupt`` is set, the command gets the app's kill_signal, then SIGKILL
    after its kill_timeout, and `ReleaseCommandInterrupted` is raised. A non-zero exit
    or a timeout raises `ReleaseCommandFailed`; the output stays in the machine's log
    (`taxiway logs --group fly_app_release_command`).
    """
    deploy = loaded.config.deploy
    if deploy is None or not deploy.release_command:
        return None
    machine_id = ids.machine_id()
    log = MachineLog(logs_dir / f"{machine_id}.log", group=RELEASE_GROUP)
    if on_output is not None:
        log.listeners.append(on_output)
    plan = default_plan(loaded, image)
    spec = LaunchSpec(
        machine_id=machine_id,
        group=RELEASE_GROUP,
        argv=oneoff_argv(deploy.release_command, plan.runs.entrypoint, "release command"),
        env=oneoff_env(
            loaded,
            plan,
            app=app,
            group=RELEASE_GROUP,
            machine_id=machine_id,
            secrets=secrets,
            extra={"RELEASE_COMMAND": "1"},
            in_image=driver.runs_image,
        ),
        cwd=loaded.base_dir,
        log=log,
        scope=scope,
        image=plan.runs.image,
        workdir=plan.runs.workdir,
        app=app,
    )
    timeout = duration_seconds(deploy.release_command_timeout or DEFAULT_RELEASE_TIMEOUT)
    stop = plan.stop_config
    log.system(f"release command: {shlex.join(spec.argv)}")
    try:
        return await _release_command_ran(
            driver, spec, timeout, logs_dir.parent, stop, interrupt, on_exit
        )
    finally:
        log.close()


async def _release_command_ran(
    driver: Driver,
    spec: LaunchSpec,
    timeout: float,
    state_dir: Path,
    stop: StopConfig,
    interrupt: asyncio.Event | None,
    on_exit: Callable[[str, int | None], None] | None,
) -> str:
    """`run_release_command` once its machine is set up: run it, record how it ended,
    and raise if that was not a zero exit."""
    machine_id, ended = spec.machine_id, OneoffExit()
    try:
        interrupted = await _interruptible(
            run_oneoff(driver, spec, timeout, state_dir, stop=stop, ended=ended), interrupt
        )
    except DriverError as exc:
        raise ReleaseCommandFailed(f"release command could not start: {exc}") from None
    finally:
        if on_exit is not None and ended.code is not None:
            on_exit(machine_id, ended.code)
    if interrupted:
        raise ReleaseCommandInterrupted(
            f"the release command was interrupted: its machine {machine_id} was stopped "
            f"({stop.signal}, then SIGKILL after {stop.timeout}) and no machine was started "
            "or replaced",
            machine_id,
        )
    if ended.timed_out:
        spec.log.system(f"timed out after {timeout:g}s")
        raise ReleaseCommandFailed(
            f"release command timed out after {timeout:g}s (release_command_timeout); "
            f"its output: `taxiway logs --machine {machine_id}`",
            machine_id,
        )
    if ended.code != 0:
        raise ReleaseCommandFailed(
            f"release command failed with exit code {ended.code}, so no machine was started "
            f"or replaced; its output: `taxiway logs --machine {machine_id}`",
            machine_id,
        )
    return machine_id


async def _interruptible(run: Coroutine[Any, Any, Any], interrupt: asyncio.Event | None) -> bool:
    """Run ``run`` to its end, or until ``interrupt`` is set (then cancel it and wait for
    it to clean up); True when it was interrupted. Cancelling the caller cancels it too."""
    task = asyncio.ensure_future(run)
    if interrupt is None:
        await task
        return False
    waiter = asyncio.ensure_future(interrupt.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return True
    task.result()
    return False


async def run_oneoff(
    driver: Driver,
    spec: LaunchSpec,
    timeout_s: float,
    state_dir: Path,
    *,
    stop: StopConfig | None = None,
    ended: OneoffExit | None = None,
) -> int | None:
    """Run a throwaway machine to its end: its exit code, or None when it ran out of time
    (then its whole tree is killed). While it runs, its process is noted under
    ``state_dir/oneoffs``, so a daemon killed meanwhile leaves nothing behind: the next
    one kills what the note names (`taxiway.runtime.leftovers.reap_oneoffs`). What the
    driver made for it (namespace driver: cgroup, namespace) goes when it ends.
    Cancelled, it stops the machine as ``stop`` says (kill_signal, then SIGKILL after
    kill_timeout; at once without it). ``ended``: filled in with how it ended."""
    ended = ended if ended is not None else OneoffExit()
    process = await driver.launch(spec)
    note = state_dir / ONEOFF_NOTES / f"{spec.machine_id}.json"
    note.parent.mkdir(mode=0o700, exist_ok=True)
    note.write_text(
        json.dumps({"pid": process.pid, "pgid": process.pgid, "start": process.start_time})
    )
    try:
        ended.code = await asyncio.wait_for(process.wait(), timeout_s)
        return ended.code
    except TimeoutError:
        process.kill_tree()
        ended.code, ended.timed_out = await process.wait(), True
        return None
    except asyncio.CancelledError:
        if stop is not None:
            sig = signal_number(stop.signal)
            spec.log.system(f"stopping: sending {signal.Signals(sig).name}")
            process.send_signal(sig)
            try:
                ended.code = await asyncio.wait_for(process.wait(), duration_seconds(stop.timeout))
            except TimeoutError:
                spec.log.system(f"still running after {stop.timeout}; sending SIGKILL")
        process.kill_tree()
        ended.code = await process.wait()
        raise
    finally:
        process.kill_tree()
        await asyncio.to_thread(driver.release_machine, spec.scope, spec.machine_id)
        note.unlink(missing_ok=True)


def last_lines(logs_dir: Path, machine_id: str, n: int = 20) -> list[str]:
    """The end of a one-off machine's output, to show next to its failure."""
    entries = read_log(logs_dir / f"{machine_id}.log")
    return [e.line for e in entries if e.stream != "system"][-n:]
