"""AppConfig → MachineSpec: what each process group's machines get.

The shape follows the platform's machine config (what flyctl sends to the Machines API
for each group; flyctl `internal/appconfig/machines.go`), with the platform's defaults
filled in so the user sees the values their machines will actually run with: a service
without ``[concurrency]`` shows ``soft_limit = 20``, a group without ``[[restart]]``
shows ``on-failure`` with 10 retries, and so on.

The runtime, the edge, the checks and the deployer all start from these specs.
"""

import base64
import shlex
from pathlib import Path
from typing import Literal

import msgspec

from taxiway.config import groups as g
from taxiway.config import model
from taxiway.config.model import (
    AppConfig,
    Compute,
    HTTPCheck,
    HTTPService,
    MachineCheck,
    Service,
    ServicePort,
    TCPCheck,
    TopLevelCheck,
)
from taxiway.config.names import volume_name_for
from taxiway.config.presets import DEFAULT_GPU_PRESET, DEFAULT_PRESET, PRESETS
from taxiway.config.units import duration_seconds, format_duration_ns, parse_size_gb, parse_size_mb
from taxiway.plan.command import effective_entrypoint, machine_argv
from taxiway.plan.containers import ComposeFileMissing, ContainerPlan, read_containers
from taxiway.plan.dockerfile import ImageConfig, image_config

# Platform defaults (https://fly.io/docs/reference/configuration/).
DEFAULT_INTERNAL_PORT = 8080
DEFAULT_SOFT_LIMIT = 20
DEFAULT_KILL_SIGNAL = "SIGINT"
DEFAULT_KILL_TIMEOUT = "5s"
DEFAULT_RESTART_RETRIES = 10
DEFAULT_CHECK_INTERVAL = "15s"
DEFAULT_CHECK_TIMEOUT = "2s"
DEFAULT_CHECK_GRACE = "0s"
DEFAULT_VOLUME_GB = 1
DEFAULT_GPU_VOLUME_GB = 100
DEFAULT_SNAPSHOT_RETENTION = 5


class Spec(msgspec.Struct, kw_only=True):
    """Base of the plan's plain data objects; every value is shown, defaults included."""


class Init(Spec):
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exec: list[str] | None = None
    swap_size_mb: int | None = None


class Concurrency(Spec):
    type: Literal["connections", "requests"] = "connections"
    soft_limit: int = DEFAULT_SOFT_LIMIT
    hard_limit: int | None = None


class Check(Spec):
    """A health check with the platform's defaults filled in."""

    name: str
    type: Literal["tcp", "http"]
    port: int | None
    interval: str = DEFAULT_CHECK_INTERVAL
    timeout: str = DEFAULT_CHECK_TIMEOUT
    grace_period: str = DEFAULT_CHECK_GRACE
    method: str | None = None
    path: str | None = None
    protocol: str | None = None
    tls_skip_verify: bool | None = None
    tls_server_name: str | None = None
    headers: dict[str, str] | None = None
    restart_limit: int | None = None


class MachineCheckSpec(Spec):
    command: list[str]
    image: str | None = None
    entrypoint: list[str] | None = None
    kill_signal: str | None = None
    kill_timeout: str | None = None


class Port(Spec):
    port: int | None = None
    start_port: int | None = None
    end_port: int | None = None
    handlers: list[str] = msgspec.field(default_factory=list)
    force_https: bool = False
    tls_options: dict | None = None
    http_options: dict | None = None
    proxy_proto_options: dict | None = None


class ServiceSpec(Spec):
    protocol: Literal["tcp", "udp"]
    internal_port: int
    ports: list[Port]
    concurrency: Concurrency
    autostop: Literal["off", "stop", "suspend"] = "off"
    autostart: bool = True
    min_machines_running: int = 0
    checks: list[Check] = msgspec.field(default_factory=list)
    #: Where this came from in fly.toml, e.g. ``http_service`` or ``services[1]``.
    source: str = ""


class MountSpec(Spec):
    name: str
    path: str
    size_gb: float
    snapshot_retention: int = DEFAULT_SNAPSHOT_RETENTION
    scheduled_snapshots: bool = True
    extend_threshold_percent: int | None = None
    add_size_gb: float | None = None
    size_gb_limit: float | None = None


class FileSpec(Spec):
    guest_path: str
    #: base64 of the content, as the Machines API takes it.
    raw_value: str | None = None
    secret_name: str | None = None


class StaticSpec(Spec):
    guest_path: str
    url_prefix: str
    tigris_bucket: str | None = None
    index_document: str | None = None


class MetricsSpec(Spec):
    port: int
    path: str
    https: bool = False


class RestartSpec(Spec):
    policy: Literal["no", "always", "on-failure"] = "on-failure"
    max_retries: int | None = DEFAULT_RESTART_RETRIES


class StopConfig(Spec):
    signal: str = DEFAULT_KILL_SIGNAL
    timeout: str = DEFAULT_KILL_TIMEOUT


class Guest(Spec):
    cpu_kind: str
    cpus: int
    memory_mb: int
    gpu_kind: str | None = None
    gpus: int | None = None
    kernel_args: list[str] | None = None
    host_dedication_id: str | None = None
    persist_rootfs: str | None = None
    #: The preset the size started from (``shared-cpu-1x`` when nothing is said).
    size: str = DEFAULT_PRESET


class Runs(Spec):
    """What the group's machines run, resolved from ``init`` and the image
    (`taxiway.plan.command`): drivers start ``argv`` as it is."""

    #: ENTRYPOINT + CMD, or ``exec``; empty when nothing gives a command.
    argv: list[str]
    #: The ENTRYPOINT a throwaway machine (release command, console, check) runs first.
    entrypoint: list[str]
    #: The image's WORKDIR (None: the Dockerfile sets none, or there is no Dockerfile).
    workdir: str | None
    #: The image the machines run: the release's build (docker driver), else `[build]
    #: image`, the prebuilt image the platform would run (None: no image to name).
    image: str | None
    #: Where the image's files are on this host, copied out for [[statics]] (None: the
    #: app's folder stands in for the image).
    rootfs: str | None = None


class MachineSpec(Spec):
    """Everything one process group's machines get."""

    group: str
    init: Init
    runs: Runs
    env: dict[str, str]
    #: The image's ENV (the Dockerfile's built stage): machines get it below ``env``;
    #: ``${VAR}`` where the base image would supply VAR (`taxiway.plan.dockerfile`).
    image_env: dict[str, str]
    services: list[ServiceSpec]
    checks: list[Check]
    machine_checks: list[MachineCheckSpec]
    mounts: list[MountSpec]
    files: list[FileSpec]
    statics: list[StaticSpec]
    metrics: MetricsSpec | None
    restart: RestartSpec
    stop_config: StopConfig
    guest: Guest
    metadata: dict[str, str]
    #: A multi-container machine's containers ([build.compose] or machine_config,
    #: `taxiway.plan.containers`); empty for a machine that runs one image. The one
    #: with ``built`` runs ``runs.argv`` in ``runs.image``.
    containers: list[ContainerPlan] = msgspec.field(default_factory=list)


def plan_machines(
    config: AppConfig, *, base_dir: Path | None = None, image: ImageConfig | None = None
) -> dict[str, MachineSpec]:
    """One `MachineSpec` per process group, in group order; ``image``: the built image's
    settings (docker driver), else the Dockerfile is read."""
    if image is None:
        image = image_config(config, base_dir or Path.cwd())  # read once for every group
    return {
        name: plan_group(config, name, base_dir=base_dir, image=image)
        for name in g.group_names(config)
    }


def plan_group(
    config: AppConfig,
    group: str,
    *,
    base_dir: Path | None = None,
    image: ImageConfig | None = None,
) -> MachineSpec:
    """``group``'s `MachineSpec`; ``image``: the Dockerfile's built stage, when the caller
    read it already."""
    if image is None:
        image = image_config(config, base_dir or Path.cwd())
    default = g.default_group(config)
    init = _init(config, group)
    guest = _guest(config, group)
    services = _services(config, group, default)
    mounts = [_mount(m, gpu=bool(guest.gpus)) for _, m in g.matching(config.mounts, group, default)]
    metrics = g.matching(config.metrics, group, default)
    restarts = g.matching(config.restart, group, default)
    runs = Runs(
        argv=machine_argv(init.cmd, init.entrypoint, init.exec, image),
        entrypoint=effective_entrypoint(init.entrypoint, image),
        workdir=image.workdir,
        image=image.ref or (config.build.image if config.build is not None else None),
        rootfs=image.rootfs,
    )
    containers = _containers(config, base_dir or Path.cwd(), init, image, runs)
    return MachineSpec(
        group=group,
        init=init,
        runs=runs,
        containers=containers,
        env=_env(config, group),
        image_env=image.env,
        services=services,
        checks=_top_level_checks(config, group, default),
        machine_checks=_machine_checks(config, group, default),
        mounts=mounts,
        files=_files(config, group, base_dir or Path.cwd()),
        statics=[
            StaticSpec(
                guest_path=s.guest_path or "",
                url_prefix=s.url_prefix or "",
                tigris_bucket=s.tigris_bucket,
                index_document=s.index_document,
            )
            for s in config.statics or ()
        ],
        metrics=(
            MetricsSpec(
                port=metrics[0][1].port or 0,
                path=metrics[0][1].path or "/metrics",
                https=bool(metrics[0][1].https),
            )
            if metrics
            else None
        ),
        restart=_restart(restarts[-1][1]) if restarts else RestartSpec(),
        stop_config=StopConfig(
            signal=config.kill_signal or DEFAULT_KILL_SIGNAL,
            timeout=config.kill_timeout or DEFAULT_KILL_TIMEOUT,
        ),
        guest=guest,
        metadata={"fly_platform_version": "v2", "fly_process_group": group},
    )


def _containers(
    config: AppConfig, base_dir: Path, init: Init, image: ImageConfig, runs: Runs
) -> list[ContainerPlan]:
    """The machine's containers, the one with the app's image running what a machine of
    the group would (its own exec/entrypoint/cmd over fly.toml's, over the image's);
    ``runs.argv`` becomes that. ContainerConfigError (a TaxiwayError) when fly.toml's
    compose file or machine_config can't be read; none when the compose file isn't there
    (the plan stays total: validation warns, the docker driver refuses to build)."""
    try:
        layout = read_containers(config, base_dir)
    except ComposeFileMissing:
        return []
    if layout is None:
        return []
    for container in layout.containers:
        if container.built:
            container.image = runs.image
            container.argv = machine_argv(
                container.cmd or init.cmd,
                container.entrypoint if container.entrypoint is not None else init.entrypoint,
                container.argv or init.exec,
                image,
            )
            runs.argv = container.argv
            if container.entrypoint is not None:
                runs.entrypoint = list(container.entrypoint)
    return layout.containers


def process_command(config: AppConfig, group: str) -> list[str] | None:
    """The group's command, shell-split like flyctl; None when the image's CMD is used."""
    command = (config.processes or {}).get(group)
    if command:
        try:
            return shlex.split(command)
        except ValueError:
            return [command]  # reported by validation; keep the plan total
    return None


def _init(config: AppConfig, group: str) -> Init:
    exp = config.experimental
    return Init(
        cmd=process_command(config, group) or (exp.cmd if exp else None),
        entrypoint=exp.entrypoint if exp else None,
        exec=exp.exec if exp else None,
        swap_size_mb=config.swap_size_mb,
    )


def _env(config: AppConfig, group: str) -> dict[str, str]:
    env = dict(config.env or {})
    env["FLY_PROCESS_GROUP"] = group
    if config.primary_region:
        env["PRIMARY_REGION"] = config.primary_region
    return env


# -- services and checks -------------------------------------------------------------------


def _services(config: AppConfig, group: str, default: str) -> list[ServiceSpec]:
    out = []
    hs = config.http_service
    if hs is not None and g.applies_to(hs, group, default):
        out.append(_http_service(hs))
    for i, svc in g.matching(config.services, group, default):
        out.append(_service(svc, i))
    return out


def _http_service(hs: HTTPService) -> ServiceSpec:
    internal = hs.internal_port or DEFAULT_INTERNAL_PORT
    http_options = _dump(hs.http_options)
    ports = [
        Port(
            port=80, handlers=["http"], force_https=bool(hs.force_https), http_options=http_options
        ),
        Port(
            port=443,
            handlers=["http", "tls"],
            http_options=http_options,
            tls_options=_dump(hs.tls_options),
        ),
    ]
    checks = [_service_check(c, "http", internal, n) for n, c in enumerate(hs.checks or ())]
    return ServiceSpec(
        protocol="tcp",
        internal_port=internal,
        ports=ports,
        concurrency=_concurrency(hs.concurrency),
        autostop=hs.auto_stop_machines or "off",
        autostart=hs.auto_start_machines if hs.auto_start_machines is not None else True,
        min_machines_running=hs.min_machines_running or 0,
        checks=checks,
        source="http_service",
    )


def _service(svc: Service, index: int) -> ServiceSpec:
    internal = svc.internal_port or DEFAULT_INTERNAL_PORT
    checks = [_service_check(c, "tcp", internal, n) for n, c in enumerate(svc.tcp_checks or ())]
    checks += [
        _service_check(c, "http", internal, len(checks) + n)
        for n, c in enumerate(svc.http_checks or ())
    ]
    return ServiceSpec(
        protocol=svc.protocol or "tcp",
        internal_port=internal,
        ports=[_port(p) for p in svc.ports or ()],
        concurrency=_concurrency(svc.concurrency),
        autostop=svc.auto_stop_machines or "off",
        autostart=svc.auto_start_machines if svc.auto_start_machines is not None else True,
        min_machines_running=svc.min_machines_running or 0,
        checks=checks,
        source=f"services[{index}]",
    )


def _port(p: ServicePort) -> Port:
    return Port(
        port=p.port if p.start_port is None else None,
        start_port=p.start_port,
        end_port=p.end_port,
        handlers=list(p.handlers or ()),
        force_https=bool(p.force_https),
        tls_options=_dump(p.tls_options),
        http_options=_dump(p.http_options),
        proxy_proto_options=_dump(p.proxy_proto_options),
    )


def _concurrency(c: model.Concurrency | None) -> Concurrency:
    if c is None:
        return Concurrency()
    return Concurrency(
        type=c.type or "connections",
        soft_limit=c.soft_limit if c.soft_limit is not None else DEFAULT_SOFT_LIMIT,
        hard_limit=c.hard_limit,
    )


def _clamp(value: str | None, default: str, *, zero_ok: bool = False) -> str:
    """Service check times are kept within 1 s – 1 min, as the platform does."""
    if value is None:
        return default
    secs = duration_seconds(value)
    if zero_ok and secs == 0:
        return value
    secs = min(max(secs, 1.0), 60.0)
    return format_duration_ns(round(secs * 1_000_000_000))


def _service_check(c: TCPCheck | HTTPCheck, kind: str, port: int, n: int) -> Check:
    check = Check(
        name=f"servicecheck-{n:02d}-{kind}-{port}",
        type="http" if kind == "http" else "tcp",
        port=port,
        interval=_clamp(c.interval, DEFAULT_CHECK_INTERVAL),
        timeout=_clamp(c.timeout, DEFAULT_CHECK_TIMEOUT),
        grace_period=_clamp(c.grace_period, DEFAULT_CHECK_GRACE, zero_ok=True),
        restart_limit=c.restart_limit or None,
    )
    if isinstance(c, HTTPCheck):
        _http_fields(check, c, upper=False)
    return check


def _http_fields(check: Check, c: HTTPCheck | TopLevelCheck, *, upper: bool) -> None:
    method = c.method or "GET"
    check.method = method.upper() if upper else method
    check.path = c.path or "/"
    check.protocol = c.protocol or "http"
    check.tls_skip_verify = c.tls_skip_verify
    check.tls_server_name = c.tls_server_name
    check.headers = c.headers


def _top_level_checks(config: AppConfig, group: str, default: str) -> list[Check]:
    hs = config.http_service
    fallback = None
    if hs is not None and g.applies_to(hs, group, default):
        fallback = hs.internal_port or DEFAULT_INTERNAL_PORT
    out = []
    for name, c in (config.checks or {}).items():
        if not g.applies_to(c, group, default):
            continue
        check = Check(
            name=name,
            type=c.type or "tcp",
            port=c.port if c.port is not None else fallback,
            interval=c.interval or DEFAULT_CHECK_INTERVAL,
            timeout=c.timeout or DEFAULT_CHECK_TIMEOUT,
            grace_period=c.grace_period or DEFAULT_CHECK_GRACE,
        )
        if c.type == "http":
            _http_fields(check, c, upper=True)
        out.append(check)
    return out


def _machine_checks(config: AppConfig, group: str, default: str) -> list[MachineCheckSpec]:
    found: list[MachineCheck] = []
    hs = config.http_service
    if hs is not None and g.applies_to(hs, group, default):
        found += hs.machine_checks or []
    for _, svc in g.matching(config.services, group, default):
        found += svc.machine_checks or []
    found += config.machine_checks or []
    return [
        MachineCheckSpec(
            command=list(c.command or ()),
            image=c.image,
            entrypoint=c.entrypoint,
            kill_signal=c.kill_signal,
            kill_timeout=c.kill_timeout,
        )
        for c in found
    ]


# -- storage and files ---------------------------------------------------------------------


def _mount(m: model.Mount, *, gpu: bool) -> MountSpec:
    default_size = DEFAULT_GPU_VOLUME_GB if gpu else DEFAULT_VOLUME_GB
    return MountSpec(
        name=m.source or volume_name_for(m.destination or "/data"),
        path=m.destination or "/data",
        size_gb=parse_size_gb(m.initial_size) if m.initial_size else default_size,
        snapshot_retention=m.snapshot_retention or DEFAULT_SNAPSHOT_RETENTION,
        scheduled_snapshots=m.scheduled_snapshots if m.scheduled_snapshots is not None else True,
        extend_threshold_percent=m.auto_extend_size_threshold,
        add_size_gb=(
            parse_size_gb(m.auto_extend_size_increment) if m.auto_extend_size_increment else None
        ),
        size_gb_limit=parse_size_gb(m.auto_extend_size_limit) if m.auto_extend_size_limit else None,
    )


def _files(config: AppConfig, group: str, base_dir: Path) -> list[FileSpec]:
    """Files with ``processes`` go to those groups; files without go to every group.

    That is what a real deploy does (flyctl merges files before splitting the config by
    group), and what the reference describes, so no warning is needed for files.
    """
    out = []
    for f in config.files or ():
        if (f.processes and group not in f.processes) or not f.guest_path:
            continue
        if f.raw_value:
            # flyctl writes raw_value as is (it base64-encodes it for the API).
            out.append(FileSpec(guest_path=f.guest_path, raw_value=_b64(f.raw_value.encode())))
        elif f.local_path:
            content = _read_local(base_dir, f.local_path)
            if content is not None:
                out.append(FileSpec(guest_path=f.guest_path, raw_value=content))
        elif f.secret_name:
            out.append(FileSpec(guest_path=f.guest_path, secret_name=f.secret_name))
    return out


def _read_local(base_dir: Path, local_path: str) -> str | None:
    try:
        return _b64((base_dir / local_path).read_bytes())
    except OSError:
        return None  # reported by validation


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- sizes, restart ------------------------------------------------------------------------


def _guest(config: AppConfig, group: str) -> Guest:
    """The preset (``size``, else shared-cpu-1x, or performance-8x for a GPU) with the
    entry's explicit keys on top; ``memory_mb`` wins over ``memory``, as in flyctl."""
    found = g.vm_for(config.vm, group)
    vm = found[1] if found else Compute()
    size = vm.size or (DEFAULT_GPU_PRESET if vm.gpu_kind else DEFAULT_PRESET)
    preset = PRESETS.get(size, PRESETS[DEFAULT_PRESET])
    guest = Guest(
        cpu_kind=vm.cpu_kind or preset.cpu_kind,
        cpus=vm.cpus or preset.cpus,
        memory_mb=vm.memory_mb or (parse_size_mb(vm.memory) if vm.memory else preset.memory_mb),
        gpu_kind=vm.gpu_kind or preset.gpu_kind,
        gpus=vm.gpus or (1 if vm.gpu_kind else preset.gpus or None),
        kernel_args=vm.kernel_args,
        host_dedication_id=vm.host_dedication_id or config.host_dedication_id,
        persist_rootfs=vm.persist_rootfs,
        size=size,
    )
    return guest


def _restart(r: model.Restart) -> RestartSpec:
    policy = {"never": "no", "always": "always"}.get(r.policy or "", "on-failure")
    retries = r.retries or DEFAULT_RESTART_RETRIES
    return RestartSpec(policy=policy, max_retries=retries if policy == "on-failure" else None)


def _dump(section: msgspec.Struct | None) -> dict | None:
    return msgspec.to_builtins(section) if section is not None else None
