"""The app's machines: created per process group, started, scaled, stopped, remembered.

`AppRuntime` turns the plan (one `MachineSpec` per group) into supervised machines,
keeps every change in the state store, and on start-up cleans up what a daemon that
died (``kill -9``) left running.
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from taxiway.config.loader import LoadedConfig
from taxiway.errors import TaxiwayError
from taxiway.plan.machine import Check, MachineSpec, plan_machines
from taxiway.runtime import ids
from taxiway.runtime.command import image_config, resolve_argv
from taxiway.runtime.drivers.base import Driver, LaunchSpec, spawn
from taxiway.runtime.environment import RuntimeVars, machine_env, private_ip, region_for
from taxiway.runtime.lifecycle import State
from taxiway.runtime.logs import MachineLog
from taxiway.runtime.machine import MachineInfo, SupervisedMachine
from taxiway.runtime.oneoff import run_release_command
from taxiway.runtime.portcheck import port_advice
from taxiway.runtime.ports import allocate
from taxiway.state import new_volume_id
from taxiway.state.records import MachineRecord
from taxiway.state.store import Store


class AppRuntime:
    """Every machine of one app, on one host."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        app: str,
        state_dir: Path,
        store: Store,
        driver: Driver,
    ) -> None:
        self.loaded = loaded
        self.app = app
        self.state_dir = state_dir
        self.store = store
        self.driver = driver
        self.base_dir = loaded.base_dir
        self.specs: dict[str, MachineSpec] = plan_machines(loaded.config, base_dir=self.base_dir)
        self.image = image_config(loaded.config, self.base_dir)
        self.region = region_for(loaded.config.primary_region)
        self.machines: dict[str, SupervisedMachine] = {}
        self.release = 0
        #: True once `up` has started every machine (what `up -d` waits for).
        self.ready = False
        self._background: set[asyncio.Task[None]] = set()
        self._seed = zlib.crc32(app.encode())
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
        #: Where the edge listens (`status` reports it); set by the daemon.
        self.edge_bindings: Callable[[], list[dict]] | None = None

    # -- start-up (after `taxiway.runtime.leftovers.reap`) -----------------------------------

    def desired_counts(self) -> dict[str, int]:
        """Machines per group: what `scale count` stored, else one per group."""
        stored = self.store.counts(self.app)
        return {group: stored.get(group, 1) for group in self.specs}

    async def up(self) -> None:
        """Run the release command, then create the machines each group needs and start them."""
        release = self.store.latest_release(self.app)
        self.release = release.version if release else 0
        await run_release_command(
            self.loaded,
            app=self.app,
            secrets=self.store.secret_values(self.app),
            driver=self.driver,
            logs_dir=self.state_dir / "logs",
        )
        existing = self.store.list_machines(self.app)
        for record in existing:
            if record.group not in self.specs:
                self.store.update_machine(record.id, state=State.DESTROYED.value)
                self.store.add_event(
                    self.app, "destroy", machine_id=record.id, status="group removed from config"
                )
                continue
            self._adopt(record)
        await self._reconcile()
        self.ready = True

    async def _reconcile(self) -> None:
        counts = self.desired_counts()
        starts = []
        for group, spec in self.specs.items():
            mine = sorted(
                (m for m in self.machines.values() if m.info.group == group),
                key=lambda m: m.id,
            )
            for machine in mine[counts[group] :]:
                await self._destroy(machine)
            for _ in range(counts[group] - len(mine)):
                self._create(spec)
        for machine in self.machines.values():
            if machine.state in (State.CREATED, State.STOPPED, State.FAILED):
                starts.append(machine)
        await asyncio.gather(*(m.start() for m in starts))
        for machine in starts:
            if machine.state is State.STARTED:
                self._watch_port(machine)

    def _watch_port(self, machine: SupervisedMachine) -> None:
        """Log advice when the machine doesn't listen on its PORT (see `portcheck`)."""
        internal = self._internal_ports(machine.spec)
        if not internal:
            return
        host_port = machine.info.ports.get(internal[0], internal[0])

        async def check() -> None:
            advice = await port_advice(internal[0], host_port)
            if advice and machine.state is State.STARTED:
                machine.log.system(advice)

        task = asyncio.get_running_loop().create_task(check())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- machines ---------------------------------------------------------------------------

    def _create(self, spec: MachineSpec) -> SupervisedMachine:
        records = self.store.list_machines(self.app, include_destroyed=True)
        index = len(records) + 1
        address = private_ip(self._seed, index)
        if getattr(self.driver, "own_network", False):
            # Machine IPv4s wrap around the app's /24: skip one a live machine has.
            taken = {r.private_ip for r in records}
            hosts = {m.info.host for m in self.machines.values()}
            for _ in range(253):
                if address not in taken and self._host_for(address) not in hosts:
                    break
                index += 1
                address = private_ip(self._seed, index)
        info = MachineInfo(
            id=ids.machine_id(),
            group=spec.group,
            state=State.CREATED,
            region=self.region,
            private_ip=address,
            host=self._host_for(address),
            version=ids.ulid(),
            ports=self._ports_for(spec),
        )
        self.store.add_machine(self._record(info))
        self.store.add_event(self.app, "create", machine_id=info.id)
        return self._supervised(info, spec)

    def _adopt(self, record: MachineRecord) -> SupervisedMachine:
        info = MachineInfo(
            id=record.id,
            group=record.group,
            state=State.STOPPED if record.state != State.CREATED.value else State.CREATED,
            region=record.region,
            private_ip=record.private_ip,
            host=self._host_for(record.private_ip),
            version=record.instance_id,
            restarts=record.restarts,
            exit_code=record.exit_code,
            ports={int(k): v for k, v in record.ports.items()},
        )
        spec = self.specs[record.group]
        if set(info.ports) != set(self._internal_ports(spec)):
            info = msgspec.structs.replace(info, ports=self._ports_for(spec))
        return self._supervised(info, spec)

    def _supervised(self, info: MachineInfo, spec: MachineSpec) -> SupervisedMachine:
        log = MachineLog(self.state_dir / "logs" / f"{info.id}.log")
        machine = SupervisedMachine(
            info, spec, self._launch_spec(info, spec, log), self.driver, log, self._changed
        )
        machine.before_stop = self._before_stop
        self.attach_checks(machine)
        self.machines[info.id] = machine
        if self.on_machine is not None:
            self.on_machine(machine)
        return machine

    def _internal_ports(self, spec: MachineSpec) -> list[int]:
        ports = [s.internal_port for s in spec.services if s.protocol == "tcp"]
        return list(dict.fromkeys(ports))

    def _host_for(self, address: str) -> str:
        """Where the edge and checks reach a machine: its own address when the driver
        gives it a network (namespace), else 127.0.0.1."""
        machine_host = getattr(self.driver, "machine_host", None)
        return machine_host(self.app, address) if machine_host is not None else "127.0.0.1"

    def _ports_for(self, spec: MachineSpec) -> dict[int, int]:
        if getattr(self.driver, "own_network", False):  # every machine binds internal_port
            return {port: port for port in self._internal_ports(spec)}
        taken = {p for m in self.machines.values() for p in m.info.ports.values()}
        return allocate(self._internal_ports(spec), taken)

    def _launch_spec(self, info: MachineInfo, spec: MachineSpec, log: MachineLog) -> LaunchSpec:
        runtime = RuntimeVars(
            app=self.app,
            machine_id=info.id,
            group=spec.group,
            region=info.region,
            private_ip=info.private_ip,
            image_ref=f"registry.fly.io/{self.app}:deployment-{info.version}",
            version=info.version,
            memory_mb=spec.guest.memory_mb,
            primary_region=self.loaded.config.primary_region,
        )
        extra = {}
        internal = self._internal_ports(spec)
        if internal:
            extra["PORT"] = str(info.ports.get(internal[0], internal[0]))
        env = machine_env(spec.env, self.store.secret_values(self.app), runtime, extra=extra)
        return LaunchSpec(
            machine_id=info.id,
            group=spec.group,
            argv=resolve_argv(spec, self.image),
            env=env,
            cwd=self.base_dir,
            log=log,
            memory_mb=spec.guest.memory_mb,
            mounts=self._volume_mounts(info, spec) + self._file_mounts(info, spec, log),
            app=self.app,
            private_ip=info.private_ip,
            cpus=spec.guest.cpus,
        )

    def _file_mounts(
        self, info: MachineInfo, spec: MachineSpec, log: MachineLog
    ) -> list[tuple[Path, str]]:
        """Write the machine's [[files]] (the plan's content, or a secret's base64-decoded
        value, as the platform delivers them) and show each at its guest_path."""
        folder = self.state_dir / "files" / info.id
        mounts = []
        secrets = self.store.secret_values(self.app)
        for n, file in enumerate(spec.files):
            if file.raw_value is not None:
                content = base64.b64decode(file.raw_value)
            elif file.secret_name in secrets:
                try:
                    content = base64.b64decode(secrets[file.secret_name], validate=True)
                except ValueError:
                    log.system(
                        f"[[files]] {file.guest_path}: secret {file.secret_name} is not base64 "
                        "(the platform decodes it), so the file is not written"
                    )
                    continue
            else:
                log.system(f"[[files]] {file.guest_path}: no secret named {file.secret_name}")
                continue
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = folder / str(n)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            mounts.append((path, file.guest_path))
        return mounts

    def _volume_mounts(self, info: MachineInfo, spec: MachineSpec) -> list[tuple[Path, str]]:
        """The machine's volume, as on the platform: the one it had, else an unattached one
        of that name, else a new one (``initial_size`` recorded). Data outlives machines."""
        mounts = []
        for mount in spec.mounts:
            volume = self.store.volume_for_machine(info.id)
            if volume is not None and volume.name != mount.name:
                self.store.detach_volume(volume.id)  # the config now mounts another volume
                volume = None
            if volume is None:
                volume = self.store.find_unattached_volume(self.app, mount.name, info.region)
            if volume is None:
                volume_id = new_volume_id()
                path = self.state_dir / "volumes" / volume_id
                volume = self.store.create_volume(
                    self.app,
                    mount.name,
                    mount.size_gb,
                    info.region,
                    path,
                    mount.snapshot_retention,
                    volume_id=volume_id,
                )
                self.store.add_event(
                    self.app, "volume_create", machine_id=info.id, status=volume.id
                )
            volume = self.store.attach_volume(volume.id, info.id)
            Path(volume.path).mkdir(mode=0o700, parents=True, exist_ok=True)
            mounts.append((Path(volume.path), mount.path))
        return mounts

    def _record(self, info: MachineInfo) -> MachineRecord:
        now = _now()
        return MachineRecord(
            id=info.id,
            app=self.app,
            group=info.group,
            region=info.region,
            instance_id=info.version,
            private_ip=info.private_ip,
            release_version=self.release,
            created_at=now,
            updated_at=now,
            metadata={"fly_platform_version": "v2", "fly_process_group": info.group},
            **_live_fields(info),
        )

    def _changed(self, machine: SupervisedMachine, event: str) -> None:
        info = machine.info
        self._sync_checks(machine)
        self._notify()
        self.store.update_machine(info.id, **_live_fields(info))
        self.store.add_event(
            self.app,
            event,
            machine_id=info.id,
            status=info.state.value,
            data={"exit_code": info.exit_code} if info.exit_code is not None else None,
        )

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
        release_machine = getattr(self.driver, "release_machine", None)
        if release_machine is not None:  # namespace driver: its cgroup and namespace
            await asyncio.to_thread(release_machine, self.app, machine.id, machine.info.private_ip)

    async def exec(
        self, machine: SupervisedMachine, cmd: list[str], *, timeout_s: float = 60.0
    ) -> dict[str, object]:
        """Run a command with a machine's environment and folder (the API's exec)."""
        spec = machine.launch_spec
        argv = cmd
        exec_prefix = getattr(self.driver, "exec_prefix", None)
        if exec_prefix is not None and machine.process is not None and machine.info.pid:
            argv = [*exec_prefix(machine.process, spec), *cmd]  # inside the machine
        try:
            proc = await spawn(argv, cwd=spec.cwd, env=spec.env)
        except OSError as exc:
            raise TaxiwayError(
                f"machine {machine.id}: cannot run {cmd[0]}: {exc.strerror}"
            ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return {"stdout": out.decode(errors="replace"), "stderr": "timed out", "exit_code": 124}
        return {
            "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace"),
            "exit_code": proc.returncode,
        }

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
                machine.launch_spec = self._launch_spec(machine.info, machine.spec, machine.log)
                if machine.state in (State.STARTED, State.SUSPENDED):
                    machine.log.system("secrets changed: restarting")
                    await machine.restart()
                    restarted += 1
            return changed, restarted

    async def down(self) -> None:
        """Stop every machine gracefully (in parallel, each with its kill_signal/timeout)."""
        await asyncio.gather(*(m.stop() for m in self.machines.values()))
        release_app = getattr(self.driver, "release_app", None)
        if release_app is not None:  # namespace driver: leave no namespace or cgroup
            await asyncio.to_thread(release_app, self.app)

    # -- deploys (used by taxiway.deploy) ---------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        """Held while machines are added, removed or updated (scale, secrets, deploys)."""
        return self._lock

    def apply_config(self, loaded: LoadedConfig) -> None:
        """Make ``loaded`` the config that new and updated machines get: a deploy's first
        step, and its last when it puts the previous release back."""
        self.loaded = loaded
        self.base_dir = loaded.base_dir
        self.specs = plan_machines(loaded.config, base_dir=self.base_dir)
        self.image = image_config(loaded.config, self.base_dir)
        self.region = region_for(loaded.config.primary_region)
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
        if set(ports) != set(self._internal_ports(spec)):
            ports = self._ports_for(spec)
        run = machine.runs_after_update() if start is None else start

        def make_launch() -> LaunchSpec:
            info = msgspec.structs.replace(machine.info, version=version, ports=ports)
            return self._launch_spec(info, spec, machine.log)

        def swapped() -> None:
            self.store.update_machine(
                machine.id, instance_id=version, release_version=release_version
            )
            self.attach_checks(machine)

        await machine.update(
            spec, make_launch, version=version, ports=ports, start=run, on_swap=swapped
        )
        if machine.state is State.STARTED:
            self._watch_port(machine)

    async def remove_machine(self, machine: SupervisedMachine) -> None:
        """Destroy a machine while the caller holds `lock` (a deploy does)."""
        await self._destroy(machine)

    def stamp_release(self, version: int) -> None:
        """Every machine now runs release ``version`` (after `up` started them all)."""
        self.release = version
        for machine in self.machines.values():
            self.store.update_machine(machine.id, release_version=version)

    def status(self) -> dict[str, object]:
        """The documented, stable `status --json` shape."""
        return {
            "app": self.app,
            "release": self.release,
            "edge": self.edge_bindings() if self.edge_bindings is not None else [],
            "machines": [
                {
                    "id": m.id,
                    "group": m.info.group,
                    "state": m.state.value,
                    "region": m.info.region,
                    "restarts": m.info.restarts,
                    "private_ip": m.info.private_ip,
                    "checks": m.checks.summary() if m.checks is not None else {},
                    "exit_code": m.info.exit_code,
                    "backoff_s": round(m.info.backoff_s, 2),
                    "pid": m.info.pid,
                    "ports": {str(k): v for k, v in m.info.ports.items()},
                }
                for m in sorted(self.machines.values(), key=lambda m: (m.info.group, m.id))
            ],
        }


def _live_fields(info: MachineInfo) -> dict[str, object]:
    """The machine fields that change while it runs, as the store keeps them."""
    return {
        "state": info.state.value,
        "restarts": info.restarts,
        "exit_code": info.exit_code,
        "pid": info.pid,
        "pgid": info.pgid,
        "pid_start_time": info.pid_start_time,
        "ports": {str(k): v for k, v in info.ports.items()},
    }


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
