"""The app's machines as records: what each machine gets when it is created or taken
back (id, address, ports, volumes, files, environment), kept in the state store.

None of it needs an event loop, and this module imports no asyncio: `up -d`'s daemon
creates and launches its machines with it before it has imported asyncio
(`taxiway.runtime.early`), and `taxiway.runtime.app.AppRuntime` builds supervision on it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import msgspec

from taxiway.config.loader import LoadedConfig
from taxiway.errors import TaxiwayError
from taxiway.plan.command import no_command
from taxiway.plan.containers import ContainerFile, ContainerPlan, start_order
from taxiway.plan.dockerfile import ImageConfig
from taxiway.plan.machine import FileSpec, MachineSpec, plan_machines
from taxiway.runtime import ids
from taxiway.runtime.drivers.base import ContainerLaunch, Driver, LaunchSpec
from taxiway.runtime.environment import RuntimeVars, machine_env, private_ip, region_for
from taxiway.runtime.lifecycle import State
from taxiway.runtime.logs import MachineLog
from taxiway.runtime.ports import allocate
from taxiway.runtime.scope import scope_for, seed
from taxiway.state import new_volume_id
from taxiway.state.records import MachineRecord, StateError
from taxiway.state.store import Store


class MachineInfo(msgspec.Struct, kw_only=True):
    """What `status` shows about a machine, and what the store keeps."""

    id: str
    group: str
    state: State
    region: str
    private_ip: str
    version: str
    #: Where the machine's ports are reached from the host (the edge, checks): 127.0.0.1
    #: with the process driver, the machine's own address with the namespace driver.
    host: str = "127.0.0.1"
    restarts: int = 0
    backoff_s: float = 0.0
    exit_code: int | None = None
    #: Whether the kernel's OOM killer ended the machine's last run (the platform's
    #: ``fly_instance_exit_oom``), where the driver can tell (docker).
    oom_killed: bool = False
    pid: int | None = None
    pgid: int | None = None
    pid_start_time: float | None = None
    ports: dict[int, int] = msgspec.field(default_factory=dict)
    #: What the user should know about the machine, one sentence each (e.g. it listens on
    #: another port than the one the edge uses: `taxiway.runtime.portcheck`).
    hints: list[str] = msgspec.field(default_factory=list)


class MachineRoster:
    """One app's config, its plan, and its machines' records on this host."""

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
        self.app = app
        self.state_dir = state_dir
        self.store = store
        self.driver = driver
        #: The machines another driver runs (a Machines API machine of another image runs
        #: on the docker driver while the app's run on `driver`): machine id → driver.
        self.machine_drivers: dict[str, Driver] = {}
        #: FLY_IMAGE_REF of the machines the Machines API made: the image their config names.
        self.image_refs: dict[str, str] = {}
        #: Why this driver runs the app (`taxiway.runtime.drivers.DriverChoice`).
        self.driver_reason = driver_reason
        #: The release the machines run (`stamp_release` once `up` started them all).
        self.release = 0
        #: What names this state folder's machines on the host (`taxiway.runtime.scope`).
        self.scope = scope_for(app, state_dir)
        self._seed = seed(self.scope)
        #: Machines whose latest state the store could not take (see `record_change`).
        self._unrecorded: set[str] = set()
        #: Machines told their other containers need the docker driver.
        self._told_containers: set[str] = set()
        #: Where the edge listens (`--edge-host`): a machine's port must be free there too.
        self.edge_host = "127.0.0.1"
        #: The ports the edge's listeners hold once it runs (the daemon sets this).
        self.edge_ports: Callable[[], Iterable[int]] = tuple
        #: The built image's settings the machines run (a driver that runs images), else
        #: None: the plan reads the Dockerfile.
        self.image: ImageConfig | None = None
        self.use_config(loaded)

    def use_config(self, loaded: LoadedConfig, image: ImageConfig | None = None) -> None:
        """The config (and its plan) that new and updated machines get; ``image``: the
        image they run, when it changes too (a deploy with the docker driver)."""
        self.loaded = loaded
        self.base_dir = loaded.base_dir
        if image is not None:
            self.image = image
        self.specs: dict[str, MachineSpec] = plan_machines(
            loaded.config, base_dir=self.base_dir, image=self.image
        )
        self.region = region_for(loaded.config.primary_region)

    def load_image(self) -> None:
        """With a driver that runs images: the latest release's image (which `up` built
        and tagged, `taxiway.daemon_startup.prepare`) becomes the machines'."""
        release = self.store.latest_release(self.app)
        if not self.driver.runs_image or release is None:
            return
        from taxiway.image.for_release import stored

        _, image = stored(
            scope=self.scope, version=release.version, loaded=self.loaded, state_dir=self.state_dir
        )
        self.use_config(self.loaded, image)

    def load_release(self) -> None:
        """Take the app's latest release as the one its machines run."""
        release = self.store.latest_release(self.app)
        self.release = release.version if release else 0

    def kept_machines(self) -> list[MachineRecord]:
        """The machines the app had before this daemon whose group the config still has,
        and those made through the Machines API (they live until the API destroys them, as
        on the platform), oldest first; the others are recorded destroyed (their group was
        removed)."""
        kept = []
        for record in self.store.list_machines(self.app):
            if record.group in self.specs or record.api is not None:
                kept.append(record)
                continue
            self.store.update_machine(record.id, state=State.DESTROYED.value)
            self.store.add_event(
                self.app, "destroy", machine_id=record.id, status="group removed from config"
            )
        return kept

    def desired_counts(self) -> dict[str, int]:
        """Machines per group: what `scale count` stored, else one per group."""
        stored = self.store.counts(self.app)
        return {group: stored.get(group, 1) for group in self.specs}

    # -- machines ---------------------------------------------------------------------------

    def driver_of(self, machine_id: str) -> Driver:
        """The driver that runs the machine (the app's, unless `machine_drivers` says)."""
        return self.machine_drivers.get(machine_id, self.driver)

    def new_machine(
        self,
        spec: MachineSpec,
        live: Iterable[MachineInfo],
        *,
        driver: Driver | None = None,
        name: str = "",
        api: dict[str, object] | None = None,
    ) -> MachineInfo:
        """A new machine of ``spec``, recorded (state created); ``live``: the machines the
        app has now, whose addresses and ports it must not take. ``driver``: another
        driver than the app's; ``name`` and ``api``: what the Machines API made it with."""
        live = list(live)
        driver = driver or self.driver
        records = self.store.list_machines(self.app, include_destroyed=True)
        index = len(records) + 1
        address = private_ip(self._seed, index)
        if driver.own_network:
            # Machine IPv4s wrap around the app's /24: skip one a live machine has.
            taken = {r.private_ip for r in records}
            hosts = {info.host for info in live}
            for _ in range(253):
                if address not in taken and self.host_for(address, driver) not in hosts:
                    break
                index += 1
                address = private_ip(self._seed, index)
        info = MachineInfo(
            id=ids.machine_id(),
            group=spec.group,
            state=State.CREATED,
            region=self.region,
            private_ip=address,
            host=self.host_for(address, driver),
            version=ids.ulid(),
            ports=self.ports_for(spec, live, driver),
        )
        if driver is not self.driver:
            self.machine_drivers[info.id] = driver
        record = self._record(info)
        if api is not None:
            record = msgspec.structs.replace(
                record, name=name, api=api, metadata=dict(spec.metadata)
            )
        self.store.add_machine(record)
        self.store.add_event(self.app, "create", machine_id=info.id)
        return info

    def taken_back(
        self,
        record: MachineRecord,
        live: Iterable[MachineInfo],
        spec: MachineSpec | None = None,
        driver: Driver | None = None,
    ) -> MachineInfo:
        """A machine the app had before this daemon (stopped: its processes were reaped).
        Its address and ports are made afresh for this start's driver, clear of ``live``
        machines' ports: the stored ones may belong to another driver (a namespace run
        gives every machine ``internal_port``) or be held by something else by now. Its
        restart count starts again at 0: a new run of the app is a fresh start of its
        machines, as a platform machine's count covers one start, not its whole life.
        ``spec`` and ``driver``: a Machines API machine's own (default: its group's, and
        the app's driver)."""
        return MachineInfo(
            id=record.id,
            group=record.group,
            state=State.STOPPED if record.state != State.CREATED.value else State.CREATED,
            region=record.region,
            private_ip=record.private_ip,
            host=self.host_for(record.private_ip, driver),
            version=record.instance_id,
            exit_code=record.exit_code,
            ports=self.ports_for(spec or self.specs[record.group], live, driver),
        )

    def host_for(self, address: str, driver: Driver | None = None) -> str:
        """Where the edge and checks reach a machine: its own address when the driver
        (the app's by default) gives it a network (namespace), else 127.0.0.1."""
        return (driver or self.driver).machine_host(self.scope, address)

    def ports_for(
        self, spec: MachineSpec, live: Iterable[MachineInfo], driver: Driver | None = None
    ) -> dict[int, int]:
        """Host ports for the machine's internal ports: ``internal_port`` itself when no
        ``live`` machine holds it, the edge doesn't listen there and the host would let
        an app bind it (on every address and on the edge's); else a port of its own."""
        if (driver or self.driver).own_network:  # every machine binds internal_port
            return {port: port for port in internal_ports(spec)}
        taken = {p for info in live for p in info.ports.values()}
        taken |= self._edge_listener_ports()
        return allocate(internal_ports(spec), taken, hosts=("0.0.0.0", self.edge_host))

    def _edge_listener_ports(self) -> set[int]:
        """The ports the edge listens on, or will once it starts (the config's)."""
        ports = set(self.edge_ports())
        for spec in self.specs.values():
            for service in spec.services:
                for port in service.ports:
                    if port.port is not None:
                        ports.add(port.port)
                    elif port.start_port is not None and port.end_port is not None:
                        ports.update(range(port.start_port, port.end_port + 1))
        return ports

    def image_ref_of(self, info: MachineInfo) -> str:
        """The machine's ``FLY_IMAGE_REF``: the image the Machines API made it with, else
        the platform's form of a deployment's (a machine of the app's image)."""
        return self.image_refs.get(info.id, f"registry.fly.io/{self.app}:deployment-{info.version}")

    def launch_spec(self, info: MachineInfo, spec: MachineSpec, log: MachineLog) -> LaunchSpec:
        """Everything the driver needs to start the machine; writes its [[files]] and
        attaches (or creates) its volumes."""
        runtime = RuntimeVars(
            app=self.app,
            machine_id=info.id,
            group=spec.group,
            region=info.region,
            private_ip=info.private_ip,
            image_ref=self.image_ref_of(info),
            version=info.version,
            memory_mb=spec.guest.memory_mb,
            primary_region=self.loaded.config.primary_region,
        )
        if not spec.runs.argv:
            raise no_command(spec.group)
        driver = self.driver_of(info.id)
        extra = {}
        internal = internal_ports(spec)
        if internal and not driver.runs_image:
            # taxiway's own variable for the host drivers (the process driver may remap
            # the port); the platform sets no PORT (https://fly.io/docs/machines/
            # runtime-environment/), so a container, as on the platform, gets none unless
            # [env] sets it: an app that relies on it fails here as it would there.
            extra["PORT"] = str(info.ports.get(internal[0], internal[0]))
        secrets = self.store.secret_values(self.app)
        built = next((c for c in spec.containers if c.built), None)
        env = machine_env(
            {**spec.env, **(built.env if built else {})},
            {**secrets, **(_named_secrets(built, secrets) if built else {})},
            runtime,
            image=spec.image_env,
            extra=extra,
            host={} if driver.runs_image else None,
        )
        containers = []
        if spec.containers:
            containers = self._containers(info, spec, log, runtime, secrets, extra)
        return LaunchSpec(
            machine_id=info.id,
            group=spec.group,
            argv=spec.runs.argv,
            env=env,
            cwd=self.base_dir,
            log=log,
            memory_mb=spec.guest.memory_mb,
            mounts=self._volume_mounts(info, spec) + self._file_mounts(info, spec, log),
            scope=self.scope,
            private_ip=info.private_ip,
            cpus=spec.guest.cpus,
            image=spec.runs.image,
            workdir=spec.runs.workdir,
            app=self.app,
            containers=containers,
        )

    def _containers(
        self,
        info: MachineInfo,
        spec: MachineSpec,
        log: MachineLog,
        runtime: RuntimeVars,
        secrets: dict[str, str],
        extra: dict[str, str],
    ) -> list[ContainerLaunch]:
        """A multi-container machine's containers, in start order, each with the machine's
        environment ([env] below its own env, the app's secrets and FLY_* above it) and
        its files. A driver that runs no images runs the built container alone: the log
        says so once."""
        driver = self.driver_of(info.id)
        if not driver.runs_image:
            others = [c.name for c in spec.containers if not c.built]
            if others and info.id not in self._told_containers:
                self._told_containers.add(info.id)
                log.system(
                    f"the containers {', '.join(others)} of this machine run only with the "
                    f"docker driver (--driver docker); the {driver.name} driver runs "
                    "the app's own command alone"
                )
            return []
        out = []
        for c in start_order(spec.containers):
            launch = ContainerLaunch(
                name=c.name,
                built=c.built,
                user=c.user,
                depends_on=[(d.name, d.condition) for d in c.depends_on],
                health=next((h.exec for h in c.healthchecks if h.exec), None),
                health_timeout_s=float(
                    next((h.timeout for h in c.healthchecks if h.exec and h.timeout), 5)
                ),
                restart=c.restart.policy if c.restart else None,
                max_retries=c.restart.max_retries if c.restart else None,
                stop_signal=c.stop_signal if not c.built else None,
            )
            if not c.built:
                launch.image = c.image
                launch.argv, launch.entrypoint, launch.cmd = c.argv, c.entrypoint, c.cmd
                launch.env = machine_env(
                    {**spec.env, **c.env},
                    {**secrets, **_named_secrets(c, secrets)},
                    runtime,
                    extra=extra,
                    host={},  # the container's image, not the host, gives PATH and the rest
                )
                launch.mounts = self._write_files(
                    info, c.files, self.state_dir / "files" / info.id / c.name, log
                )
            out.append(launch)
        return out

    def log_for(self, info: MachineInfo) -> MachineLog:
        return MachineLog(self.state_dir / "logs" / f"{info.id}.log", group=info.group)

    def _file_mounts(
        self, info: MachineInfo, spec: MachineSpec, log: MachineLog
    ) -> list[tuple[Path, str]]:
        """Write the machine's [[files]] (the plan's content, or a secret's base64-decoded
        value, as the platform delivers them) and show each at its guest_path."""
        return self._write_files(info, spec.files, self.state_dir / "files" / info.id, log)

    def _write_files(
        self, info: MachineInfo, files: Sequence[FileSpec | ContainerFile], folder: Path,
        log: MachineLog,
    ) -> list[tuple[Path, str]]:
        """Write ``files`` to ``folder``: what to bind where in the machine."""
        mounts = []
        secrets = self.store.secret_values(self.app)
        for n, file in enumerate(files):
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
            path = folder / str(n)
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content)
            except OSError as exc:
                raise TaxiwayError(
                    f"machine {info.id} ({info.group}): [[files]] {file.guest_path} cannot be "
                    f"written to {path}: {exc.strerror or exc}"
                ) from None
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
                    auto_backup_enabled=mount.scheduled_snapshots,
                )
                self.store.add_event(
                    self.app, "volume_create", machine_id=info.id, status=volume.id
                )
            volume = self.store.attach_volume(volume.id, info.id)
            try:
                Path(volume.path).mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise TaxiwayError(
                    f"machine {info.id} ({info.group}): volume {volume.name} ({volume.id}) "
                    f"cannot be created at {volume.path}: {exc.strerror or exc}"
                ) from None
            mounts.append((Path(volume.path), mount.path))
        return mounts

    # -- records ----------------------------------------------------------------------------

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
            **live_fields(info),
        )

    def record_change(self, info: MachineInfo, event: str) -> None:
        """Keep a machine's new state (and the event that changed it) in the store.

        A store that can't be written (a full disk) doesn't stop supervision: the
        machine runs on, the daemon's log says so once, and the next change that can be
        written stores the machine's whole current state again."""
        try:
            self.store.update_machine(info.id, **live_fields(info))
            self.store.add_event(
                self.app,
                event,
                machine_id=info.id,
                status=info.state.value,
                data=_event_data(info, event),
            )
        except StateError as exc:
            if not self._unrecorded:
                _say(f"machine states are not being saved: {exc}")
            self._unrecorded.add(info.id)
            return
        if info.id in self._unrecorded:
            self._unrecorded.discard(info.id)
            if not self._unrecorded:
                _say("machine states are saved again")

    def status_document(
        self, machines: Iterable[tuple[MachineInfo, dict]], edge: list[dict]
    ) -> dict[str, object]:
        """The documented, stable `status --json` shape, from each machine's info and
        check summary, and where the edge listens."""
        return {
            "app": self.app,
            "release": self.release,
            "driver": self.driver.name,
            "driver_reason": self.driver_reason,
            "edge": edge,
            "machines": [
                {
                    "id": info.id,
                    "group": info.group,
                    "state": info.state.value,
                    "region": info.region,
                    "restarts": info.restarts,
                    "private_ip": info.private_ip,
                    "checks": checks,
                    "exit_code": info.exit_code,
                    "oom_killed": info.oom_killed,
                    "backoff_s": round(info.backoff_s, 2),
                    "pid": info.pid,
                    "ports": {str(k): v for k, v in info.ports.items()},
                    "hints": list(info.hints),
                }
                for info, checks in sorted(machines, key=lambda pair: (pair[0].group, pair[0].id))
            ],
        }


def internal_ports(spec: MachineSpec) -> list[int]:
    """The TCP ports the machine's services listen on, each once, in config order."""
    ports = [s.internal_port for s in spec.services if s.protocol == "tcp"]
    return list(dict.fromkeys(ports))


def live_fields(info: MachineInfo) -> dict[str, object]:
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


def _say(line: str) -> None:
    """A line in the daemon's own output (its terminal, or daemon.log), if it can be written."""
    with contextlib.suppress(OSError, ValueError):
        print(f"taxiway: {line}", file=sys.stderr, flush=True)


def _event_data(info: MachineInfo, event: str) -> dict[str, object] | None:
    """What an event records beyond the state: how the machine's last run ended, and
    for an exit, whether the restart policy starts it again (the Machines API's exit
    events say so: `taxiway.machines_api.shapes`)."""
    if info.exit_code is None:
        return None
    data: dict[str, object] = {"exit_code": info.exit_code}
    if info.oom_killed:
        data["oom_killed"] = True
    if event == "exit" and info.backoff_s > 0:
        data["restarting"] = True
    return data


def _named_secrets(container: ContainerPlan, secrets: dict[str, str]) -> dict[str, str]:
    """A container's ``secrets``: app secret ``name`` (else ``env_var``) as ``env_var``."""
    return {
        s.env_var: secrets[s.name or s.env_var]
        for s in container.secrets
        if (s.name or s.env_var) in secrets
    }
