"""The app's machines: created per process group, started, scaled, stopped, remembered.

`AppRuntime` turns the plan (one `MachineSpec` per group) into supervised machines,
keeps every change in the state store, and on start-up cleans up what a daemon that
died (``kill -9``) left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from taxiway.config.loader import LoadedConfig
from taxiway.errors import TaxiwayError
from taxiway.plan.dockerfile import ImageConfig
from taxiway.plan.machine import Check, MachineSpec
from taxiway.runtime import ids
from taxiway.runtime.drivers.base import Driver, LaunchSpec
from taxiway.runtime.early import EarlyMachine
from taxiway.runtime.lifecycle import RUNNING, State
from taxiway.runtime.machine import SupervisedMachine
from taxiway.runtime.oneoff import run_release_command
from taxiway.runtime.portcheck import (
    ANOTHER_PROGRAM,
    GRACE_S,
    PortFacts,
    host_listening_ports,
    listening_ports,
    machine_hint,
    process_groups,
)
from taxiway.runtime.roster import MachineInfo, MachineRoster, internal_ports
from taxiway.state.records import MachineRecord
from taxiway.state.store import Store


class AppRuntime(MachineRoster):
    """Every machine of one app, on one host, supervised."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        app: str,
        state_dir: Path,
        store: Store,
        driver: Driver,
        driver_reason: str = "",
    ) -> None:
        super().__init__(
            loaded,
            app=app,
            state_dir=state_dir,
            store=store,
            driver=driver,
            driver_reason=driver_reason,
        )
        self.machines: dict[str, SupervisedMachine] = {}
        #: True once `up` has started every machine (what `up -d` waits for).
        self.ready = False
        self._background: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        #: Called with every machine as it is set up (`up` prints their output from the start).
        self.on_machine: Callable[[SupervisedMachine], None] | None = None
        #: Called after any machine changes (state, address, checks): the edge's routing.
        self.on_change: list[Callable[[], None]] = []
        #: Awaited before a machine gets its stop signal, with the machine and its
        #: kill_timeout: the edge stops routing to it and lets in-flight requests finish.
        self.before_stop: Callable[[str, float], Awaitable[None]] | None = None
        #: Things `up` should tell the user (e.g. a deploy the last daemon left unfinished).
        self.notices: list[str] = []
        #: Called after `apply_config` (a deploy): the edge follows the new services.
        self.on_config: list[Callable[[], None]] = []
        #: Called with each line of `up`'s release command as it comes (`taxiway.runtime.
        #: logs.log_record`): `up` prints it, `up -d` sends it to its command.
        self.on_release_output: Callable[[dict[str, Any]], None] | None = None
        #: Where the edge listens (`status` reports it); set by the daemon.
        self.edge_bindings: Callable[[], list[dict]] | None = None
        self.edge_ports = self._bound_edge_ports
        #: Called with a machine and a new hint about it (`up` prints it).
        self.on_hint: Callable[[SupervisedMachine, str], None] | None = None
        #: Per machine: the task watching where it listens (`_watch_port`), and whether it
        #: has been seen listening where the edge connects since its ports were set.
        self._port_watches: dict[str, asyncio.Task[None]] = {}
        self._port_verdicts: dict[str, asyncio.Event] = {}
        self._port_ok: set[str] = set()
        #: The app's metrics (`taxiway.metrics.registry.MetricsHub`), set by the daemon.
        self.metrics: Any = None
        #: Where the host reaches the Machines API (``http://127.0.0.1:PORT``), once the
        #: daemon serves it (`taxiway.machines_api.slot`).
        self.api_url: str | None = None

    # -- start-up (after `taxiway.runtime.leftovers.reap`) -----------------------------------

    async def up(
        self, early: Sequence[EarlyMachine] = (), *, interrupt: asyncio.Event | None = None
    ) -> None:
        """Run the release command, then create the machines each group needs and start
        them. ``early``: the machines `taxiway.runtime.early` launched before the loop
        ran (instead of all that): supervise them. ``interrupt``: set, it stops the
        release command (`run_release_command`)."""
        if early:
            await self._supervise_early(early)
            return
        self.load_release()
        await self.release_command(self.loaded, self.release, interrupt=interrupt)
        for record in self.kept_machines():
            self._adopt(record)
        await self._reconcile()
        self.ready = True

    async def release_command(
        self,
        loaded: LoadedConfig,
        version: int,
        *,
        on_output: Callable[[dict[str, Any]], None] | None = None,
        interrupt: asyncio.Event | None = None,
        image: ImageConfig | None = None,
    ) -> str | None:
        """Run ``loaded``'s release command for release ``version`` (`up`'s or a
        deploy's) in ``image`` (a deploy's new image; default: the machines'), its output
        to ``on_output`` (default `on_release_output`), and record on the release which
        one-off machine ran it and its exit code."""

        def record(machine_id: str, code: int | None) -> None:
            if version:
                self.store.set_release_command(self.app, version, machine_id, code)

        return await run_release_command(
            loaded,
            app=self.app,
            scope=self.scope,
            secrets=self.store.secret_values(self.app),
            driver=self.driver,
            logs_dir=self.state_dir / "logs",
            on_output=on_output or self.on_release_output,
            on_exit=record,
            interrupt=interrupt,
            image=image or self.image,
        )

    async def _supervise_early(self, early: Sequence[EarlyMachine]) -> None:
        self.load_release()
        adopted = []
        for machine in early:
            supervised = self._supervised(
                machine.info, self.specs[machine.info.group], launch=machine.launch
            )
            process = machine.supervised()
            if process is not None:
                adopted.append(supervised.adopt(process))
        await asyncio.gather(*adopted)
        self.ready = True

    async def _reconcile(self) -> None:
        counts = self.desired_counts()
        starts = []
        for group, spec in self.specs.items():
            mine = [m for m in self.machines.values() if m.info.group == group]
            surplus = len(mine) - counts[group]
            for machine in scale_down_order(mine, self._created_at)[: max(surplus, 0)]:
                await self._destroy(machine)
            for _ in range(counts[group] - len(mine)):
                self._create(spec)
        for machine in self.machines.values():
            if machine.state in (State.CREATED, State.STOPPED, State.FAILED):
                starts.append(machine)
        await asyncio.gather(*(m.start() for m in starts))

    def _created_at(self, machine: SupervisedMachine) -> str:
        record = self.store.get_machine(machine.id)
        return record.created_at if record is not None else ""

    # -- where machines listen (`taxiway.runtime.portcheck`) --------------------------------

    def _watch_port(self, machine: SupervisedMachine, event: str) -> None:
        """Find out whether a machine that just started (or exited) listens where the
        edge connects, and keep the hint (`MachineInfo.hints`) up to date."""
        if event == "update":
            self._port_ok.discard(machine.id)  # new ports, maybe a new app
            return
        if event not in ("started", "exit") or not internal_ports(machine.spec):
            return
        previous = self._port_watches.pop(machine.id, None)
        if previous is not None:
            previous.cancel()
        verdict = self._port_verdicts.setdefault(machine.id, asyncio.Event())
        verdict.clear()
        task = asyncio.get_running_loop().create_task(
            self._port_watch(machine, exited=event == "exit", verdict=verdict)
        )
        self._port_watches[machine.id] = task
        task.add_done_callback(
            lambda t: (
                self._port_watches.pop(machine.id, None)
                if self._port_watches.get(machine.id) is t
                else None
            )
        )

    async def _port_watch(
        self, machine: SupervisedMachine, *, exited: bool, verdict: asyncio.Event
    ) -> None:
        """Look often at first, then every few seconds while the machine runs and doesn't
        listen where the edge connects; ``verdict`` is set once there is an answer (it
        listens there, it has a hint, or `GRACE_S` passed)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            settled = exited or loop.time() - began >= GRACE_S
            facts = await asyncio.to_thread(self._port_facts, machine, settled)
            ok = facts.listening is not None and facts.edge_port in facts.listening
            if (
                exited
                and facts.edge_port == facts.internal == machine.info.ports.get(facts.internal)
                and facts.internal_holder == ANOTHER_PROGRAM
            ):
                self._move_off_internal_port(machine, facts.internal)
                verdict.set()
                return
            # a machine that served before says nothing about its port by crashing
            hint = None if exited and machine.id in self._port_ok else machine_hint(facts)
            if ok:
                self._port_ok.add(machine.id)
            if ok or hint is not None or (not exited and settled):
                self._set_hint(machine, hint, keep=not ok and hint is None)
                verdict.set()
            if ok or exited or machine.state is not State.STARTED:
                verdict.set()
                return
            # until it is settled a look costs one read of the host's listeners
            await asyncio.sleep(5.0 if settled else 0.1)

    def seen_serving(self, machine: SupervisedMachine) -> bool:
        """Whether the machine was seen listening where the edge connects (since it was
        last moved to other ports)."""
        return machine.id in self._port_ok

    def _port_facts(self, machine: SupervisedMachine, settled: bool) -> PortFacts:
        """What the host sees of the machine's first service port (runs in a thread)."""
        info = machine.info
        internal = internal_ports(machine.spec)[0]
        edge_port = info.ports.get(internal, internal)
        own_network = self.driver.own_network
        host = frozenset() if own_network else host_listening_ports()
        listening = None
        if info.state is State.STARTED and info.pid is not None:
            if own_network or edge_port in host or settled:
                listening = listening_ports(info.pid, info.pgid, own_network=own_network)
            else:  # not serving, and too early to say more: spare the scan of /proc
                listening = frozenset()
        holder = None
        serving = listening is not None and edge_port in listening
        if settled and not own_network and not serving and internal in host:
            holder = ANOTHER_PROGRAM
            groups = process_groups()
            for other in list(self.machines.values()):
                pid, pgid = other.info.pid, other.info.pgid
                if other.id == machine.id or pid is None:
                    continue
                found = listening_ports(pid, pgid, own_network=False, groups=groups)
                if internal in (found or ()):
                    holder = f"machine {other.id}"
                    break
        return PortFacts(
            machine=info.id,
            group=info.group,
            internal=internal,
            edge_port=edge_port,
            own_network=own_network,
            listening=listening,
            internal_holder=holder,
            settled=settled,
        )

    def _move_off_internal_port(self, machine: SupervisedMachine, internal: int) -> None:
        """The machine had ``internal_port`` and exited, and another program listens there
        now: its next start (the restart policy's, or a `machine start`) gets ports of its
        own, made as for a new start."""
        others = [m.info for m in self.machines.values() if m is not machine]
        ports = self.ports_for(machine.spec, others)
        if ports == machine.info.ports:
            return
        machine.info = msgspec.structs.replace(machine.info, ports=ports)
        machine.launch_spec = self.launch_spec(machine.info, machine.spec, machine.log)
        machine.log.system(
            f"port {internal} (internal_port) is held by another program now: the machine "
            f"gets PORT={ports[internal]} from its next start"
        )
        self.record_change(machine.info, "ports")
        self._notify()

    def _set_hint(self, machine: SupervisedMachine, hint: str | None, *, keep: bool) -> None:
        """Make ``hint`` the machine's port hint (None clears it unless ``keep``); a new
        one goes to the machine's log and to `on_hint`."""
        hints = [hint] if hint is not None else (machine.info.hints if keep else [])
        if hints == machine.info.hints:
            return
        machine.info = msgspec.structs.replace(machine.info, hints=hints)
        if hint is not None:
            machine.log.system(hint)
            if self.on_hint is not None:
                self.on_hint(machine, hint)

    def _forget_port_watch(self, machine_id: str) -> None:
        task = self._port_watches.pop(machine_id, None)
        if task is not None:
            task.cancel()
        self._port_verdicts.pop(machine_id, None)
        self._port_ok.discard(machine_id)

    async def port_verdicts(
        self, machines: Sequence[SupervisedMachine], timeout_s: float = GRACE_S + 1
    ) -> None:
        """Wait (at most ``timeout_s``) until each of ``machines`` that has a service was
        found listening where the edge connects, or got a hint, or stopped: what `scale`
        and `up -d` wait for before they print the machines' hints."""
        waits = [self._port_verdicts[m.id].wait() for m in machines if m.id in self._port_verdicts]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=timeout_s)

    def _bound_edge_ports(self) -> list[int]:
        """The ports the edge's listeners hold (none before it starts)."""
        bindings = self.edge_bindings() if self.edge_bindings is not None else []
        return [int(b["address"].rpartition(":")[2]) for b in bindings]

    # -- machines ---------------------------------------------------------------------------

    def _live(self) -> Iterator[MachineInfo]:
        return (m.info for m in self.machines.values())

    def _create(self, spec: MachineSpec) -> SupervisedMachine:
        return self._supervised(self.new_machine(spec, self._live()), spec)

    def _adopt(self, record: MachineRecord) -> SupervisedMachine:
        return self._supervised(self.taken_back(record, self._live()), self.specs[record.group])

    def _supervised(
        self, info: MachineInfo, spec: MachineSpec, launch: LaunchSpec | None = None
    ) -> SupervisedMachine:
        """Supervise a machine; ``launch``: its launch spec when it was launched already."""
        if launch is None:
            launch = self.launch_spec(info, spec, self.log_for(info))
        machine = SupervisedMachine(info, spec, launch, self.driver, launch.log, self._changed)
        machine.before_stop = self._before_stop
        self.attach_checks(machine)
        self.machines[info.id] = machine
        if self.on_machine is not None:
            self.on_machine(machine)
        return machine

    def _changed(self, machine: SupervisedMachine, event: str) -> None:
        self._sync_checks(machine)
        self._watch_port(machine, event)
        self._notify()
        self.record_change(machine.info, event)

    def attach_checks(self, machine: SupervisedMachine) -> None:
        """Give the machine a monitor for its spec's service and top-level checks (none
        when it has no checks: it then counts as healthy once started)."""
        spec = machine.spec
        if not spec.checks and not any(s.checks for s in spec.services):
            machine.checks = None
            return

        def address(port: int) -> tuple[str, int]:
            return machine.info.host, machine.info.ports.get(port, port)

        async def restart(check: Check) -> None:
            if machine.state is State.STARTED:
                machine.log.system(
                    f"check {check.name} failed {check.restart_limit} times in a row "
                    "(restart_limit): restarting"
                )
                await machine.restart()

        # imported here: an app without checks never pays for the check runners (h11)
        from taxiway.checks.monitor import MachineChecks

        machine.checks = MachineChecks(
            machine.id, spec.services, spec.checks, address, self._notify, restart
        )

    def _sync_checks(self, machine: SupervisedMachine) -> None:
        """Checks run while the machine is started, and stop with it."""
        checks = machine.checks
        if checks is None:
            return
        if machine.state is State.STARTED:
            checks.start()
        elif machine.state is not State.STARTING:
            task = asyncio.get_running_loop().create_task(checks.stop())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _before_stop(self, machine_id: str, timeout_s: float) -> None:
        if self.before_stop is not None:
            await self.before_stop(machine_id, timeout_s)

    def _notify(self) -> None:
        for callback in self.on_change:
            callback()

    # -- actions ----------------------------------------------------------------------------

    def find(self, prefix: str) -> SupervisedMachine:
        """A machine by id or unique id prefix."""
        hits = [m for m in self.machines.values() if m.id.startswith(prefix)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise TaxiwayError(f"no machine {prefix} in app {self.app}")
        raise TaxiwayError(f"{prefix} matches {len(hits)} machines; give more of the id")

    async def scale(self, counts: dict[str, int]) -> None:
        unknown = [g for g in counts if g not in self.specs]
        if unknown:
            raise TaxiwayError(
                f"no process group {', '.join(unknown)} in {self.app} "
                f"(groups: {', '.join(self.specs)})"
            )
        async with self._lock:
            for group, n in counts.items():
                if n < 0:
                    raise TaxiwayError(f"{group}={n}: a count can't be negative")
                self.store.set_count(self.app, group, n)
            await self._reconcile()

    async def destroy(self, machine: SupervisedMachine) -> None:
        async with self._lock:
            await self._destroy(machine)

    async def _destroy(self, machine: SupervisedMachine) -> None:
        await machine.destroy()
        self.machines.pop(machine.id, None)
        self._forget_port_watch(machine.id)
        # what the driver made for it on the host (namespace driver: cgroup, namespace)
        await asyncio.to_thread(self.driver.release_machine, self.scope, machine.id)

    async def exec(
        self, machine: SupervisedMachine, cmd: list[str], *, timeout_s: float = 60.0
    ) -> dict[str, object]:
        """Run a command in a machine (the API's exec): inside it while it runs, else
        with its environment and folder."""
        running = machine.process if machine.info.pid else None
        return await self.driver.exec(running, machine.launch_spec, cmd, timeout_s)

    async def change_secrets(
        self, values: dict[str, str] | None = None, unset: list[str] | None = None
    ) -> tuple[list[str], int]:
        """Store secret changes, then restart, one at a time, the running machines (every
        machine gets every secret). Returns the changed names and how many restarted."""
        async with self._lock:
            changed = self.store.set_secrets(self.app, values or {})
            changed += self.store.unset_secrets(self.app, unset or [])
            if not changed:
                return [], 0
            restarted = 0
            for machine in list(self.machines.values()):
                machine.launch_spec = self.launch_spec(machine.info, machine.spec, machine.log)
                if machine.state in (State.STARTED, State.SUSPENDED):
                    machine.log.system("secrets changed: restarting")
                    await machine.restart()
                    restarted += 1
            return changed, restarted

    async def down(self) -> None:
        """Stop every machine gracefully (in parallel, each with its kill_signal/timeout)."""
        await asyncio.gather(*(m.stop() for m in self.machines.values()))
        for machine_id in list(self._port_watches):
            self._forget_port_watch(machine_id)
        # leave nothing the driver made on the host (namespace driver: namespaces, cgroups)
        await asyncio.to_thread(self.driver.release_app, self.scope)

    # -- deploys (used by taxiway.deploy) ---------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        """Held while machines are added, removed or updated (scale, secrets, deploys)."""
        return self._lock

    def apply_config(self, loaded: LoadedConfig, image: ImageConfig | None = None) -> None:
        """Make ``loaded`` (and ``image``, when it changes too) the config that new and
        updated machines get: a deploy's first step, and its last when it puts the
        previous release back."""
        self.use_config(loaded, image)
        for callback in self.on_config:
            callback()

    def create_machine(
        self,
        spec: MachineSpec,
        *,
        release_version: int,
        cordoned: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> SupervisedMachine:
        """A new machine of ``spec``, not started yet: a new group's, a canary, a
        bluegreen green, a machine-check test machine."""
        machine = self._create(spec)
        record = self.store.update_machine(machine.id, release_version=release_version)
        if metadata:
            self.store.update_machine(machine.id, metadata={**record.metadata, **metadata})
        if cordoned:
            machine.set_cordoned(True)
        return machine

    async def update_machine(
        self,
        machine: SupervisedMachine,
        spec: MachineSpec,
        *,
        release_version: int,
        start: bool | None = None,
    ) -> None:
        """Put ``spec`` on the machine in place (same id, a new version), as the
        platform's update does; ``start`` defaults to the platform's rule
        (`SupervisedMachine.runs_after_update`)."""
        version = ids.ulid()
        ports = machine.info.ports
        if set(ports) != set(internal_ports(spec)):
            ports = self.ports_for(spec, self._live())
        run = machine.runs_after_update() if start is None else start

        def make_launch() -> LaunchSpec:
            info = msgspec.structs.replace(machine.info, version=version, ports=ports)
            return self.launch_spec(info, spec, machine.log)

        def swapped() -> None:
            self.store.update_machine(
                machine.id, instance_id=version, release_version=release_version
            )
            self.attach_checks(machine)

        await machine.update(
            spec, make_launch, version=version, ports=ports, start=run, on_swap=swapped
        )

    async def remove_machine(self, machine: SupervisedMachine) -> None:
        """Destroy a machine while the caller holds `lock` (a deploy does)."""
        await self._destroy(machine)

    def stamp_release(self, version: int) -> None:
        """Every machine now runs release ``version`` (after `up` started them all)."""
        self.release = version
        for machine in self.machines.values():
            self.store.update_machine(machine.id, release_version=version)

    def status(self) -> dict[str, object]:
        """The documented, stable `status --json` shape (with ``api.url`` once the
        Machines API serves)."""
        document = self.status_document(
            (
                (m.info, m.checks.summary() if m.checks is not None else {})
                for m in self.machines.values()
            ),
            self.edge_bindings() if self.edge_bindings is not None else [],
        )
        if self.api_url is not None:
            document["api"] = {"url": self.api_url}
        return document


def scale_down_order(
    machines: Sequence[SupervisedMachine], created_at: Callable[[SupervisedMachine], str]
) -> list[SupervisedMachine]:
    """One group's machines in the order scaling down destroys them: those that don't
    run (stopped, failed, created), then those that run but fail (a check critical, or
    restarted after a crash since they last stayed up), then the healthy ones; newest
    first within each.

    Scaling down should never cost the machine that serves. flyctl's `fly scale count`
    (internal/command/scale/count_machines.go in superfly/flyctl) destroys a region's
    machines in the order the Machines API lists them, and https://fly.io/docs/apps/scale-count/
    only speaks of "internal rules"; taxiway makes the choice explicit instead.
    """
    by_age = sorted(machines, key=lambda m: (created_at(m), m.id), reverse=True)
    return sorted(by_age, key=_health_rank)


def _health_rank(machine: SupervisedMachine) -> int:
    """0: not running; 1: running but failing; 2: healthy (what scale-down keeps)."""
    if machine.state not in RUNNING:
        return 0
    checks = machine.checks
    failing_check = False
    if checks is not None:
        from taxiway.checks.state import CheckStatus  # with the checks, not at start-up

        failing_check = any(state.status is CheckStatus.CRITICAL for state in checks.states())
    if failing_check or machine.restart_state.restarts > 0:
        return 1
    return 2
