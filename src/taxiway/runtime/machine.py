"""One supervised machine: launch, watch, restart by policy, stop gracefully.

This is what the platform's agent does around a machine's main process. The
machine counts as exited when its main process exits (then whatever it left
behind is killed); a stop sends ``kill_signal`` to the whole process tree, waits
up to ``kill_timeout``, then SIGKILLs every process of the machine.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from taxiway.config.units import duration_seconds
from taxiway.plan.machine import MachineSpec
from taxiway.runtime.drivers.base import Driver, DriverError, LaunchSpec, MachineProcess
from taxiway.runtime.lifecycle import State, check_transition
from taxiway.runtime.logs import MachineLog
from taxiway.runtime.restart import RestartState, decide
from taxiway.runtime.roster import MachineInfo

if TYPE_CHECKING:
    from taxiway.checks.monitor import MachineChecks


class SupervisedMachine:
    """A machine and the task that keeps it running according to its restart policy."""

    def __init__(
        self,
        info: MachineInfo,
        spec: MachineSpec,
        launch: LaunchSpec,
        driver: Driver,
        log: MachineLog,
        on_change: Callable[[SupervisedMachine, str], None],
    ) -> None:
        self.info = info
        self.spec = spec
        self.launch_spec = launch
        self.driver = driver
        self.log = log
        self._on_change = on_change
        self.process: MachineProcess | None = None
        self.restart_state = RestartState(total_restarts=info.restarts)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._launched = asyncio.Event()
        self._started_at = 0.0
        #: The machine's health checks (`taxiway.checks.monitor.MachineChecks`), if any.
        self.checks: MachineChecks | None = None
        #: Awaited with (machine id, kill_timeout) before the stop signal: the edge drains it.
        self.before_stop: Callable[[str, float], Awaitable[None]] | None = None
        #: Called when the machine's main process exited and its restart policy doesn't
        #: start it again (the runtime destroys an ``auto_destroy`` machine then).
        self.on_ended: Callable[[SupervisedMachine], None] | None = None

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def state(self) -> State:
        return self.info.state

    # -- state --------------------------------------------------------------------------

    def _set(self, state: State, event: str, **fields: object) -> None:
        if state != self.info.state:
            check_transition(self.id, self.info.state, state)
        self.info = msgspec.structs.replace(self.info, state=state, **fields)
        self._on_change(self, event)

    # -- actions ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the machine and return once its process runs (or it failed to launch)."""
        if self._task is not None and not self._task.done():
            if self.state is State.SUSPENDED:
                await self.resume()
            return
        await self._run(None)

    async def adopt(self, process: MachineProcess) -> None:
        """Supervise a process launched before the loop ran (`taxiway.runtime.early`):
        the machine is started already, as its info says."""
        await self._run(process)

    async def _run(self, process: MachineProcess | None) -> None:
        self._stop.clear()
        self._launched.clear()
        self._task = asyncio.create_task(self._supervise(process), name=f"machine-{self.id}")
        waiter = asyncio.ensure_future(self._launched.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    async def stop(self, *, sig: int | None = None, timeout_s: float | None = None) -> None:
        """Graceful stop: kill_signal to the whole tree, then SIGKILL after kill_timeout."""
        self._stop.set()
        task, process = self._task, self.process
        if task is None or task.done():
            if self.state not in (State.STOPPED, State.CREATED, State.FAILED, State.DESTROYED):
                self._set(State.STOPPED, "stop")
            return
        if process is None or self.state not in (State.STARTED, State.SUSPENDED):
            task.cancel()  # in back-off or still launching: nothing runs yet
            await asyncio.gather(task, return_exceptions=True)
            if process is not None:
                process.kill_tree()
            if self.state not in (State.STOPPED, State.FAILED):
                self._set(State.STOPPED, "stop")
            return
        if self.state is State.SUSPENDED:
            process.thaw()
        self._set(State.STOPPING, "stop")
        stop_sig = sig if sig is not None else signal_number(self.spec.stop_config.signal)
        timeout = (
            timeout_s if timeout_s is not None else duration_seconds(self.spec.stop_config.timeout)
        )
        if self.before_stop is not None:
            await self.before_stop(self.id, timeout)
        self.log.system(f"stopping: sending {signal.Signals(stop_sig).name}")
        process.send_signal(stop_sig)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            self.log.system(f"still running after {timeout:g}s; sending SIGKILL")
        process.kill_tree()
        await asyncio.gather(task, return_exceptions=True)
        self._set(State.STOPPED, "stop")

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def suspend(self) -> None:
        """Freeze the machine's processes; resuming costs milliseconds."""
        if self.process is None or self.state is not State.STARTED:
            check_transition(self.id, self.state, State.SUSPENDING)
            return
        self._set(State.SUSPENDING, "suspend")
        self.process.freeze()
        self._set(State.SUSPENDED, "suspend")

    async def resume(self) -> None:
        if self.process is not None and self.state is State.SUSPENDED:
            self.process.thaw()
            self._set(State.STARTED, "resume")

    async def destroy(self) -> None:
        await self.stop()
        self._set(State.DESTROYING, "destroy")
        self._set(State.DESTROYED, "destroy")

    # -- deploys (used by taxiway.deploy through AppRuntime) --------------------------------

    #: A cordoned machine runs but the edge sends it no new requests: a bluegreen green
    #: before the switch, a machine-check test machine.
    cordoned: bool = False
    #: An update is stopping the machine to start it again with a new spec.
    replacing: bool = False
    #: When (time.monotonic) an update last started the machine again; 0.0 if never.
    replaced_at: float = 0.0

    def set_cordoned(self, cordoned: bool) -> None:
        if cordoned != self.cordoned:
            self.cordoned = cordoned
            self._on_change(self, "cordon" if cordoned else "uncordon")

    def runs_after_update(self) -> bool:
        """Whether an update starts the machine again: the platform restarts machines that
        were started, starting or failed (here also one in restart back-off); stopped,
        suspended and created ones are updated and stay stopped (flyctl
        `internal/command/deploy/machines_launchinput.go`)."""
        if self.state in (State.STARTED, State.STARTING, State.FAILED):
            return True
        return self.state is State.STOPPED and self._task is not None and not self._task.done()

    async def update(
        self,
        spec: MachineSpec,
        make_launch: Callable[[], LaunchSpec],
        *,
        version: str,
        ports: dict[int, int],
        start: bool,
        on_swap: Callable[[], None] | None = None,
    ) -> None:
        """The platform's in-place update: same id, a new version. A running machine is
        stopped (drained, kill_signal, kill_timeout), gets the new spec, and is started
        when ``start``. ``make_launch`` runs once the old process is gone (volumes and
        files are handed over then); ``on_swap`` once the new spec is in place.

        While the old process stops the machine is `replacing` (the edge holds requests
        for it rather than answer that nothing runs), and once started again it is
        `replaced_at` (the edge treats it as booting, as one autostart started)."""
        self.replacing = True
        try:
            await self.stop()
        finally:
            self.replacing = False  # the state change just below tells the edge
        self.spec = spec
        self.launch_spec = make_launch()
        self.restart_state = RestartState(total_restarts=self.info.restarts)
        if self.state is State.CREATED:
            self.info = msgspec.structs.replace(self.info, version=version, ports=ports)
            self._on_change(self, "update")
        else:
            self._set(State.REPLACING, "update", version=version, ports=ports, exit_code=None)
        if on_swap is not None:
            on_swap()
        if start:
            self.replaced_at = time.monotonic()
            await self.start()
        elif self.state is State.REPLACING:
            self._set(State.STOPPED, "update")

    # -- supervision ----------------------------------------------------------------------

    async def _supervise(self, adopted: MachineProcess | None) -> None:
        while not self._stop.is_set():
            if adopted is not None:
                self.process, adopted = adopted, None
            else:
                self._set(State.STARTING, "start", exit_code=None, backoff_s=0.0)
                try:
                    self.process = await self.driver.launch(self.launch_spec)
                except DriverError as exc:
                    self.log.system(str(exc))
                    self._set(State.FAILED, "launch_failed")
                    return
            self._started_at = time.monotonic()
            self._set(
                State.STARTED,
                "started",
                pid=self.process.pid,
                pgid=self.process.pgid,
                pid_start_time=self.process.start_time,
            )
            self._launched.set()
            code = await self.process.wait()
            if self._stop.is_set():
                self.info = msgspec.structs.replace(
                    self.info, exit_code=code, oom_killed=self.process.oom_killed
                )
                return  # stop() finishes the job
            self.process.kill_tree()  # the machine ends with its main process
            uptime = time.monotonic() - self._started_at
            restart = self.spec.restart
            decision = decide(restart.policy, restart.max_retries, code, uptime, self.restart_state)
            oom = self.process.oom_killed
            ended = "was killed for running out of memory (OOM)" if oom else "exited"
            self.log.system(f"{ended} with code {code}; {decision.reason}")
            self._set(
                State.STOPPED,
                "exit",
                exit_code=code,
                oom_killed=oom,
                pid=None,
                pgid=None,
                restarts=self.restart_state.total_restarts,
                backoff_s=decision.delay_s if decision.restart else 0.0,
            )
            if not decision.restart:
                if self.on_ended is not None:
                    self.on_ended(self)
                return
            try:
                await asyncio.wait_for(self._stop.wait(), decision.delay_s)
                return
            except TimeoutError:
                pass


def signal_number(name: str) -> int:
    try:
        return int(signal.Signals[name])
    except KeyError:
        return int(signal.SIGINT)
