"""A deploy from start to end: release → release_command → machine checks → strategy →
release status, in flyctl's order (`internal/command/deploy/machines_deploymachinesapp.go`;
https://fly.io/docs/launch/deploy/).

The order is the platform's: the release command runs before any machine is touched;
then (canary) a canary per group; machines for groups new in the config are created;
existing machines are updated with the strategy; counts set with `scale count` are kept.
Two choices differ, both so that a failed deploy can leave the app as it was: machines of
groups the config no longer has are destroyed only once the update succeeded (the
platform destroys them first), and a failed rolling, canary or immediate deploy puts
the previous release back on the machines it updated (the platform never rolls back;
``--no-rollback`` or ``[experimental] auto_rollback = false`` keep its behaviour).

One deploy runs at a time per app; a second is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from taxiway.config.diagnostics import Severity
from taxiway.config.loader import LoadedConfig
from taxiway.config.units import UnitError, duration_seconds
from taxiway.deploy import strategies
from taxiway.deploy.health import SMOKE_WINDOW_S, DeployFailed, label, wait_healthy
from taxiway.deploy.machine_checks import test_group
from taxiway.deploy.releases import (
    code_of,
    differences,
    loaded_from_release,
    new_release,
    runs_image,
    take_snapshot,
)
from taxiway.errors import TaxiwayError
from taxiway.plan.dockerfile import ImageConfig
from taxiway.plan.machine import MachineSpec, plan_machines
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.machine import SupervisedMachine
from taxiway.runtime.oneoff import ReleaseCommandInterrupted
from taxiway.state.records import ReleaseRecord

DEFAULT_WAIT_TIMEOUT = "5m"

Progress = Callable[[str], None]


class DeployOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What one deploy was asked for; None takes the config's value, then the default."""

    strategy: str | None = None
    wait_timeout_s: float | None = None
    rollback: bool | None = None
    smoke_checks: bool = True
    max_unavailable: float | None = None
    description: str = ""


class Deployment:
    """A deploy that was accepted (its release exists) and can be run once."""

    def __init__(
        self,
        deployer: Deployer,
        loaded: LoadedConfig,
        release: ReleaseRecord,
        *,
        wait_timeout_s: float,
        rollback: bool,
        smoke_s: float,
        max_unavailable: float,
        image_of: int | None = None,
    ) -> None:
        self.deployer = deployer
        self.loaded = loaded
        self.release = release
        self.wait_timeout_s = wait_timeout_s
        self.rollback = rollback
        self.smoke_s = smoke_s
        self.max_unavailable = max_unavailable
        #: Set (by `Deployer.interrupt`: a Ctrl-C of `taxiway deploy`), it stops the
        #: release command, and with it the deploy, before any machine is touched.
        self.interrupt = asyncio.Event()
        #: True while the release command runs.
        self.in_release_command = False
        #: With a driver that runs images: the earlier release whose image this one runs
        #: again (a rollback), else None: the image is built.
        self.image_of = image_of
        #: The image the machines ran before (restored when the deploy is undone).
        self._previous_image: ImageConfig | None = None

    @property
    def strategy(self) -> str:
        return self.release.strategy

    async def run(self, progress: Progress) -> ReleaseRecord:
        """Deploy; returns the release marked complete, or raises after marking it failed
        or rolled_back."""
        try:
            return await self._run(progress)
        finally:
            self.deployer.current = None

    async def _run(self, progress: Progress) -> ReleaseRecord:
        runtime = self.deployer.runtime
        store, app, version = runtime.store, runtime.app, self.release.version
        began = time.monotonic()
        progress(f"release v{version} ({self.strategy}): {self.release.description}")
        previous_loaded, previous_specs = runtime.loaded, dict(runtime.specs)
        previous_version = runtime.release
        self._previous_image = runtime.image
        r = strategies.Rollout(
            runtime=runtime,
            version=version,
            wait_timeout_s=self.wait_timeout_s,
            smoke_s=self.smoke_s,
            max_unavailable=self.max_unavailable,
            progress=progress,
        )
        created: list[SupervisedMachine] = []
        applied = False
        async with runtime.lock:
            try:
                image = await self._image(progress)
                await self._release_command(progress, image)
                runtime.apply_config(self.loaded, image)
                applied = True
                groups, removed, added = self._diff()
                await self._machine_checks(r, groups, progress)
                for group, count in added.items():
                    created += await self._create_group(r, group, count)
                await strategies.RUN[self.strategy](r, groups)
                for group, machines in removed.items():
                    progress(
                        f"group {group} is no longer in the config: destroying its "
                        f"{len(machines)} machine(s)"
                    )
                    await asyncio.gather(*(runtime.remove_machine(m) for m in machines))
            except asyncio.CancelledError:
                store.set_release_status(app, version, "interrupted")  # the daemon stops
                raise
            except BaseException as exc:
                status, outcome = await self._fail(
                    r, created, applied, previous_loaded, previous_specs, previous_version, progress
                )
                if isinstance(exc, ReleaseCommandInterrupted):
                    status = "interrupted"
                store.set_release_status(app, version, status)
                first = r.failure if isinstance(r.failure, TaxiwayError) else exc
                if isinstance(first, TaxiwayError):
                    reason = str(first).rstrip(".")
                    raise DeployFailed(
                        f"release v{version} failed: {reason}" + (f"; {outcome}" if outcome else "")
                    ) from None
                raise
        runtime.release = version
        release = store.set_release_status(app, version, "complete")
        progress(f"release v{version} is complete ({time.monotonic() - began:.1f}s)")
        if runtime.driver.runs_image:
            from taxiway.image.for_release import prune

            versions = [r.version for r in store.list_releases(app)]
            await asyncio.to_thread(prune, runtime.scope, version, versions)
        return release

    async def _image(self, progress: Progress) -> ImageConfig | None:
        """With a driver that runs images: the release's image, built from the app's
        folder (its output streamed) or, for a rollback, the earlier release's; tagged
        with this release and recorded on it. None for a host driver."""
        runtime = self.deployer.runtime
        if not runtime.driver.runs_image:
            return None
        from taxiway.image import for_release

        loop = asyncio.get_running_loop()
        version = self.release.version

        def make() -> tuple[str, ImageConfig]:
            if self.image_of is not None:
                built, _ = for_release.stored(
                    scope=runtime.scope,
                    version=self.image_of,
                    loaded=self.loaded,
                    state_dir=runtime.state_dir,
                )
                progress_soon(f"running v{self.image_of}'s image again")
            else:
                built = for_release.build_release(
                    self.loaded, scope=runtime.scope, app=runtime.app, progress=progress_soon
                )
            return built.id, for_release.adopt(
                built,
                scope=runtime.scope,
                version=version,
                loaded=self.loaded,
                state_dir=runtime.state_dir,
            )

        def progress_soon(line: str) -> None:
            loop.call_soon_threadsafe(progress, line)

        image_id, image = await asyncio.to_thread(make)
        snapshot = take_snapshot(self.loaded, runtime.store, runtime.app, image_id=image_id)
        self.release = runtime.store.set_release_image(runtime.app, version, snapshot.image_ref)
        return image

    async def _release_command(self, progress: Progress, image: ImageConfig | None) -> None:
        deploy = self.loaded.config.deploy
        if deploy is None or not deploy.release_command:
            return
        runtime = self.deployer.runtime
        progress(f"running the release command: {deploy.release_command}")
        self.in_release_command = True
        try:
            machine_id = await runtime.release_command(
                self.loaded,
                self.release.version,
                on_output=lambda entry: progress(f"  release_command | {entry['line']}"),
                interrupt=self.interrupt,
                image=image,
            )
        finally:
            self.in_release_command = False
        progress(f"release command finished (machine {machine_id})")

    def _diff(
        self,
    ) -> tuple[
        dict[str, list[SupervisedMachine]], dict[str, list[SupervisedMachine]], dict[str, int]
    ]:
        """Existing groups' machines (to update), removed groups' machines (to destroy) and
        new groups' machine counts (to create: a stored `scale count`, else 1)."""
        runtime = self.deployer.runtime
        groups: dict[str, list[SupervisedMachine]] = {}
        removed: dict[str, list[SupervisedMachine]] = {}
        for machine in sorted(runtime.machines.values(), key=lambda m: m.id):
            if runtime.unmanaged(machine):
                continue  # the Machines API's own: a deploy leaves it alone, as on the platform
            target = groups if machine.info.group in runtime.specs else removed
            target.setdefault(machine.info.group, []).append(machine)
        counts = runtime.desired_counts()
        added = {g: counts[g] for g in runtime.specs if g not in groups and counts[g] > 0}
        return groups, removed, added

    async def _machine_checks(
        self, r: strategies.Rollout, groups: dict[str, list[SupervisedMachine]], progress: Progress
    ) -> None:
        """Rolling deploys test a fresh machine per group first; canary deploys test each
        canary (in the strategy), and groups without machines like rolling does. The
        platform runs machine checks for these two strategies only."""
        runtime = self.deployer.runtime
        with_checks = [spec for spec in runtime.specs.values() if spec.machine_checks]
        if not with_checks:
            return
        if self.strategy in ("immediate", "bluegreen"):
            progress(
                f"machine checks are not run by {self.strategy} deploys (as on the platform; "
                "rolling and canary run them)"
            )
            return
        for spec in with_checks:
            if self.strategy == "canary" and spec.group in groups:
                continue
            await test_group(
                runtime,
                spec,
                release_version=r.version,
                timeout_s=self.wait_timeout_s,
                smoke_s=self.smoke_s,
                progress=progress,
            )

    async def _create_group(
        self, r: strategies.Rollout, group: str, count: int
    ) -> list[SupervisedMachine]:
        runtime = self.deployer.runtime
        r.progress(f"group {group} is new: creating {count} machine(s)")
        machines = [
            runtime.create_machine(runtime.specs[group], release_version=r.version)
            for _ in range(count)
        ]
        await asyncio.gather(*(m.start() for m in machines))
        if self.strategy != "immediate":
            for machine in machines:
                await wait_healthy(
                    runtime,
                    machine,
                    timeout_s=r.wait_timeout_s,
                    smoke_s=r.smoke_s,
                    progress=r.progress,
                )
                r.progress(f"{label(machine)} is healthy on v{r.version}")
        return machines

    async def _fail(
        self,
        r: strategies.Rollout,
        created: list[SupervisedMachine],
        applied: bool,
        previous_loaded: LoadedConfig,
        previous_specs: dict[str, MachineSpec],
        previous_version: int,
        progress: Progress,
    ) -> tuple[str, str]:
        """Leave the app as the deploy's options say; returns the release's status and
        what was done about the machines (a clause of the failure sentence, or "")."""
        runtime = self.deployer.runtime
        touched = [*r.updated, *created]
        if touched and not self.rollback:
            runtime.release = r.version  # the runtime carries this release's config now
            progress(
                f"{len(touched)} machine(s) keep v{r.version} (--no-rollback or "
                "[experimental] auto_rollback = false)"
            )
            return "failed", ""
        if applied:
            runtime.apply_config(previous_loaded, self._previous_image)
        if not touched:
            return "failed", ""
        progress(f"putting v{previous_version} back on {len(r.updated)} machine(s)")
        done = await strategies.restore(r, previous_specs, previous_version)
        for machine in created:
            progress(f"destroying {label(machine)}: its group is not in v{previous_version}")
            await runtime.remove_machine(machine)
        for problem in done.problems:
            progress(f"  could not restore: {problem}")
        for machine in done.unhealthy:
            progress(
                f"  {label(machine)} is back on v{previous_version} but not healthy; it "
                "was not healthy before this deploy either"
            )
        return self._rollback_outcome(done, len(r.updated), previous_version)

    def _rollback_outcome(
        self, done: strategies.Restored, updated: int, previous_version: int
    ) -> tuple[str, str]:
        """The release's status and the sentence's clause after a rollback, saying only
        what happened: how many machines are back, and whether the code is (a host
        driver runs the app's folder as it is now, so old code files can't come back)."""
        if not updated:
            return "rolled_back", "the machines it created were destroyed; no other was touched"
        back = len(done.restored)
        if not back:
            return (
                "failed",
                f"v{previous_version} could not be put back on any of the {updated} machine(s) "
                "it updated",
            )
        count = f"{back} machine(s)" if back == updated else f"{back} of {updated} machine(s)"
        runtime = self.deployer.runtime
        previous = runtime.store.get_release(runtime.app, previous_version)
        previous_code = code_of(previous) if previous is not None else None
        if (
            not runtime.driver.runs_image
            and previous_code is not None
            and previous_code != code_of(self.release)
        ):
            return "rolled_back", (
                f"v{previous_version}'s config, env and command were put back on {count}, "
                f"but not its code: the app's folder changed since v{previous_version} and "
                f"the {runtime.driver.name} driver runs it as it is"
            )
        return "rolled_back", f"the previous release was put back on {count}"


class Deployer:
    """Deploys for one app's runtime, one at a time."""

    def __init__(
        self, runtime: AppRuntime, watchers: list[Callable[[int, str], None]] | None = None
    ) -> None:
        self.runtime = runtime
        #: The release being deployed, if any.
        self.current: ReleaseRecord | None = None
        #: Called with (release version, line) for every progress line of every deploy,
        #: besides the deploy's own ``progress`` (the dashboard shows the steps).
        self.watchers = watchers if watchers is not None else []
        #: The deploys running, by their task.
        self._running: dict[asyncio.Task[ReleaseRecord], Deployment] = {}

    def start(self, deployment: Deployment, progress: Progress) -> asyncio.Task[ReleaseRecord]:
        """Run the deployment in a task of its own (kept until it ends; its error is in the
        release's status and in what `Deployment.run` raised to whoever awaits the task)."""
        version = deployment.release.version

        def watched(line: str) -> None:
            progress(line)
            for watch in self.watchers:
                watch(version, line)

        task = asyncio.get_running_loop().create_task(deployment.run(watched))
        self._running[task] = deployment
        task.add_done_callback(self._settled)
        return task

    async def interrupt(self) -> str | None:
        """Stop the release command of the deploy that runs it (a Ctrl-C of `taxiway
        deploy` while it ran), and wait for that deploy to end; how it ended, in one
        sentence, or None when no release command runs (a deploy past it goes on)."""
        for task, deployment in list(self._running.items()):
            if deployment.in_release_command:
                deployment.interrupt.set()
                await asyncio.gather(asyncio.shield(task), return_exceptions=True)
                error = task.exception() if not task.cancelled() else None
                return str(error) if error else f"release v{deployment.release.version} ended"
        return None

    def _settled(self, task: asyncio.Task[ReleaseRecord]) -> None:
        self._running.pop(task, None)
        if not task.cancelled():
            task.exception()  # taken: the release status says how it went

    async def cancel(self) -> None:
        """Stop running deploys (the daemon is stopping); their releases end
        ``interrupted`` and the machines are left for the daemon to stop."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def refuse_while_running(self, what: str) -> None:
        """Raise the one sentence that says a deploy runs (``what``: the refused action),
        rather than let it wait for the runtime's lock the deploy holds throughout."""
        if self.current is not None:
            raise TaxiwayError(
                f"a deploy of release v{self.current.version} is running; {what} once it "
                "has finished (`taxiway releases` shows how it went)"
            )

    def prepare(self, loaded: LoadedConfig, options: DeployOptions) -> Deployment:
        """Check the deploy can run, then create its release (``running``). Refuses a
        second deploy while one runs, and what the strategy cannot deploy."""
        runtime = self.runtime
        self.refuse_while_running("deploy")
        if not runtime.ready:
            raise TaxiwayError("the app is still starting; deploy once `taxiway up` is done")
        errors = [d for d in loaded.diagnostics if d.severity is Severity.ERROR]
        if errors:
            raise TaxiwayError(
                f"{loaded.source.display_name} is not valid: {errors[0].message} "
                "(`taxiway config validate` lists every error)"
            )
        config = loaded.config
        deploy = config.deploy
        strategy = options.strategy or (deploy.strategy if deploy else None) or "rolling"
        strategies.refuse(strategy, plan_machines(config, base_dir=loaded.base_dir))
        wait_timeout_s = options.wait_timeout_s
        if wait_timeout_s is None:
            wait_timeout_s = _seconds(
                (deploy.wait_timeout if deploy else None) or DEFAULT_WAIT_TIMEOUT
            )
        rollback = options.rollback
        if rollback is None:
            exp = config.experimental
            rollback = exp.auto_rollback if exp and exp.auto_rollback is not None else True
        max_unavailable = options.max_unavailable
        if max_unavailable is None:
            max_unavailable = (deploy.max_unavailable if deploy else None) or (
                strategies.DEFAULT_MAX_UNAVAILABLE
            )
        if max_unavailable <= 0:
            raise TaxiwayError(f"max_unavailable is {max_unavailable:g}; it must be more than 0")
        snapshot = take_snapshot(loaded, runtime.store, runtime.app)
        latest = runtime.store.latest_release(runtime.app)
        changed = differences(snapshot, latest) if latest is not None else []
        if runtime.driver.runs_image:
            # the code is the image, not built yet: the build says "image unchanged"
            changed = [part for part in changed if part != "code"]
        description = options.description or (
            f"deploy ({' and '.join(changed)} changed)" if changed else "deploy (no changes)"
        )
        release = new_release(runtime.store, runtime.app, snapshot, strategy, description)
        self.current = release
        return Deployment(
            self,
            loaded,
            release,
            wait_timeout_s=wait_timeout_s,
            rollback=rollback,
            smoke_s=SMOKE_WINDOW_S if options.smoke_checks else 0.0,
            max_unavailable=max_unavailable,
        )

    def prepare_rollback(self, version: int | None, options: DeployOptions) -> Deployment:
        """A deploy of an earlier release's config as a new release (the platform's
        "rollback" is a deploy of the older image): ``version``, else the newest complete
        release before the current one. Code and secrets are not rolled back (taxiway runs
        the folder as it is; the platform keeps secrets too)."""
        store, app = self.runtime.store, self.runtime.app
        if version is not None:
            target = store.get_release(app, version)
            if target is None:
                raise TaxiwayError(f"{app} has no release v{version} (see `taxiway releases`)")
        else:
            earlier = [
                r
                for r in store.list_releases(app)
                if r.status == "complete" and r.version < self.runtime.release
            ]
            if not earlier:
                raise TaxiwayError(
                    f"{app} has no complete release before v{self.runtime.release} to roll "
                    "back to (see `taxiway releases`)"
                )
            target = earlier[0]
        loaded = loaded_from_release(target, self.runtime.loaded.source.path)
        description = f"rollback to v{target.version}"
        deployment = self.prepare(loaded, msgspec.structs.replace(options, description=description))
        if self.runtime.driver.runs_image and runs_image(target):
            deployment.image_of = target.version  # its image, not a build of the folder
        return deployment

    async def deploy(
        self,
        loaded: LoadedConfig,
        strategy: str | None,
        wait_timeout_s: float | None,
        rollback: bool | None,
        progress: Progress,
        *,
        smoke_checks: bool = True,
        max_unavailable: float | None = None,
    ) -> ReleaseRecord:
        """`prepare` then `Deployment.run`, for callers that need no release number first."""
        options = DeployOptions(
            strategy=strategy,
            wait_timeout_s=wait_timeout_s,
            rollback=rollback,
            smoke_checks=smoke_checks,
            max_unavailable=max_unavailable,
        )
        return await self.prepare(loaded, options).run(progress)


def _seconds(text: str) -> float:
    try:
        return duration_seconds(text)
    except UnitError as exc:
        raise TaxiwayError(f"[deploy] wait_timeout: {exc}") from None
