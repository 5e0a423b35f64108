"""Machine checks: a deploy's integration tests against a machine of the new release.

``[[services.machine_checks]]``, ``[[http_service.machine_checks]]`` and top-level
``[[machine_checks]]`` (the plan's `MachineSpec.machine_checks`) each run their
``command`` in a throwaway one-off machine, as the release command does
(`taxiway.runtime.oneoff`), with the platform's test-machine environment (flyctl
`internal/command/deploy/machinebasedtest.go`): the app's env and the tested machine's
env, then ``FLY_TEST_MACHINE_IP`` (the tested machine's address), ``FLY_TEST_COMMAND=1``
and ``FLY_PROCESS_GROUP=fly_app_test_machine_command``. The platform sets no port
variable; the tested machine's env comes along, so its ``PORT`` is there (with the
process driver, the host port its ``internal_port`` is mapped to). A non-zero exit stops
the deploy.

Rolling deploys test a fresh machine of the new release per group before any machine is
replaced (`test_group`); canary deploys test the canary. The command runs after the
check's ``entrypoint`` (else the tested machine's), in the release's image with the
docker driver (or in the check's ``image``, which must be in the engine already: no
registry is pulled from), on this host with the others.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from taxiway.config.groups import default_group
from taxiway.deploy.health import DeployFailed, label, wait_healthy
from taxiway.plan.machine import MachineCheckSpec, MachineSpec
from taxiway.runtime import ids
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.drivers.base import DriverError, LaunchSpec
from taxiway.runtime.logs import MachineLog
from taxiway.runtime.machine import SupervisedMachine
from taxiway.runtime.oneoff import last_lines, oneoff_env, run_oneoff

TEST_GROUP = "fly_app_test_machine_command"


async def test_group(
    runtime: AppRuntime,
    spec: MachineSpec,
    *,
    release_version: int,
    timeout_s: float,
    smoke_s: float,
    progress: Callable[[str], None],
) -> None:
    """Start a fresh machine of ``spec`` (cordoned: the edge sends it nothing), wait until
    it is healthy, run the group's machine checks against it, destroy it."""
    if not spec.machine_checks:
        return
    machine = runtime.create_machine(
        spec, release_version=release_version, cordoned=True, metadata={"fly_test_subject": "true"}
    )
    progress(f"group {spec.group}: machine checks against a new test machine {machine.id}")
    try:
        await machine.start()
        await wait_healthy(runtime, machine, timeout_s=timeout_s, smoke_s=0.0, progress=progress)
        await run_machine_checks(runtime, machine, timeout_s=timeout_s, progress=progress)
    finally:
        await runtime.remove_machine(machine)


async def run_machine_checks(
    runtime: AppRuntime,
    target: SupervisedMachine,
    *,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Run each of the target's machine checks, one after the other; the first failing
    one raises `DeployFailed` after its output was shown."""
    for n, check in enumerate(target.spec.machine_checks, 1):
        await _run_one(runtime, target, check, n, timeout_s=timeout_s, progress=progress)


async def _run_one(
    runtime: AppRuntime,
    target: SupervisedMachine,
    check: MachineCheckSpec,
    n: int,
    *,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    machine_id = ids.machine_id()
    logs_dir = runtime.state_dir / "logs"
    log = MachineLog(logs_dir / f"{machine_id}.log", group=TEST_GROUP)
    spec = target.spec
    entrypoint = check.entrypoint if check.entrypoint is not None else spec.runs.entrypoint
    argv = [*entrypoint, *check.command]
    what = f"machine check {n} ({shlex.join(check.command)})"
    if not argv:
        raise DeployFailed(f"{what} has no command to run; add `command` to it")
    env = {
        **target.launch_spec.env,
        **oneoff_env(
            runtime.loaded,
            runtime.specs[default_group(runtime.loaded.config)],
            app=runtime.app,
            group=TEST_GROUP,
            machine_id=machine_id,
            secrets=runtime.store.secret_values(runtime.app),
            extra={"FLY_TEST_COMMAND": "1", "FLY_TEST_MACHINE_IP": _test_address(runtime, target)},
            in_image=runtime.driver.runs_image,
        ),
    }
    image = spec.runs.image
    if check.image and runtime.driver.runs_image:
        image = check.image  # it must be in the engine already: nothing is pulled here
    elif check.image:
        log.system(
            f"image {check.image} runs with the docker driver; the {runtime.driver.name} "
            "driver runs the command on this host"
        )
    log.system(f"{what} against {label(target)}: {shlex.join(argv)}")
    progress(f"{what}: testing {label(target)} in one-off machine {machine_id}")
    launch = LaunchSpec(
        machine_id=machine_id,
        group=TEST_GROUP,
        argv=argv,
        env=env,
        cwd=runtime.base_dir,
        log=log,
        scope=runtime.scope,
        image=image,
        workdir=spec.runs.workdir,
        app=runtime.app,
    )
    try:
        code = await run_oneoff(runtime.driver, launch, timeout_s, runtime.state_dir)
    except DriverError as exc:
        raise DeployFailed(f"{what} could not start: {exc}") from None
    finally:
        log.close()
    if code == 0:
        progress(f"{what} passed")
        return
    for line in last_lines(logs_dir, machine_id):
        progress(f"  {machine_id} | {line}")
    outcome = f"ran out of time ({timeout_s:g}s)" if code is None else f"failed (exit code {code})"
    raise DeployFailed(
        f"{what} {outcome} against {label(target)}; its output: "
        f"`taxiway logs --machine {machine_id}`"
    )


def _test_address(runtime: AppRuntime, target: SupervisedMachine) -> str:
    """The tested machine's address, as the platform gives it: its private (6PN) IPv6
    where machines have a network of their own; with the process driver, 127.0.0.1
    (its port is then its ``PORT``)."""
    return target.info.private_ip if runtime.driver.own_network else target.info.host
