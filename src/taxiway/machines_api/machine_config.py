"""A Machines API machine config ↔ the plan's `MachineSpec`.

The API takes the platform's machine config (``api.MachineConfig`` in the platform's
OpenAPI document, superfly/fly-openapi-sdk, go/api/openapi.yaml); taxiway runs
`MachineSpec`s, so a machine made through the API is described by the plan like any
other. Requests are checked key by key before anything is made, and a wrong one is
answered with one sentence naming the key path (``config.guest.memory_mb must be an
integer``).

What is taken: ``image``, ``init`` (exec, entrypoint, cmd), ``env``, ``guest`` (and
``size``), ``restart``, ``stop_config``, ``metadata``, ``services``, ``files``,
``auto_destroy``. Accepted and not acted on (said in the module, not per request):
``checks``, ``processes``, ``dns``, ``metrics``, ``statics``, ``standbys``,
``schedule``, ``disable_machine_autostart``. Refused: ``mounts`` and ``containers``
(a volume or a second container for an API machine is not supported yet).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from taxiway.config.presets import DEFAULT_PRESET, PRESETS
from taxiway.config.units import duration_seconds, format_duration_ns
from taxiway.errors import TaxiwayError
from taxiway.plan.command import effective_entrypoint, machine_argv
from taxiway.plan.dockerfile import ImageConfig, image_config
from taxiway.plan.machine import (
    DEFAULT_KILL_SIGNAL,
    DEFAULT_KILL_TIMEOUT,
    DEFAULT_RESTART_RETRIES,
    Concurrency,
    FileSpec,
    Guest,
    Init,
    MachineSpec,
    Port,
    RestartSpec,
    Runs,
    ServiceSpec,
    StopConfig,
)

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime
    from taxiway.runtime.drivers.base import Driver


class ConfigError(TaxiwayError):
    """A request the API refuses: ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- checking a request, key by key ----------------------------------------------------------

Check = Callable[[Any, str], Any]


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path} must be a string")
    return value


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path} must be an integer")
    return value


def _non_negative(value: Any, path: str) -> int:
    if _integer(value, path) < 0:
        raise ConfigError(f"{path} must not be negative")
    return value


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path} must be true or false")
    return value


def _anything(value: Any, path: str) -> Any:
    return value


def _list_of(item: Check) -> Check:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list")
        return [item(v, f"{path}[{n}]") for n, v in enumerate(value)]

    return check


def _map_of(item: Check) -> Check:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be an object")
        return {k: item(v, f"{path}.{k}") for k, v in value.items()}

    return check


def _one_of(*choices: str) -> Check:
    def check(value: Any, path: str) -> str:
        if value not in choices:
            raise ConfigError(f"{path} must be one of {', '.join(map(repr, choices))}")
        return value

    return check


def _duration(value: Any, path: str) -> str:
    """A duration as the platform's Go client sends one: "10s" (or nanoseconds)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return format_duration_ns(value)
    if isinstance(value, str):
        try:
            duration_seconds(value)
        except (ValueError, TaxiwayError):
            pass
        else:
            return value
    raise ConfigError(f'{path} must be a duration such as "10s"')


def _preset(value: Any, path: str) -> str:
    if not value:  # an empty field a client sends (``{}``, ``""``): the default size
        return ""
    if not isinstance(value, str) or value not in PRESETS:
        raise ConfigError(f"{path} must be a machine size such as shared-cpu-1x, not {value!r}")
    return value


def _autostop(value: Any, path: str) -> str:
    """``autostop``: a boolean in the OpenAPI document, "off"/"stop"/"suspend" in fly-go."""
    if isinstance(value, bool):
        return "stop" if value else "off"
    return _one_of("off", "stop", "suspend")(value, path)


def _struct(fields: dict[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object with these keys; an unknown key is refused (a typo must not be ignored)
    unless its value is empty (clients send empty fields this version doesn't know)."""

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be an object")
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key not in fields:
                if item in (None, "", [], {}, False, 0):
                    continue
                raise ConfigError(f"{where} is not a key the Machines API knows")
            if item is None:
                continue
            out[key] = fields[key](item, where)
        for key in required:
            if key not in out:
                raise ConfigError(f"{path}.{key} is required" if path else f"{key} is required")
        return out

    return check


_STRINGS = _list_of(_string)

_PORT = _struct(
    {
        "port": _integer,
        "start_port": _integer,
        "end_port": _integer,
        "handlers": _STRINGS,
        "force_https": _boolean,
        "tls_options": _map_of(_anything),
        "http_options": _map_of(_anything),
        "proxy_proto_options": _map_of(_anything),
    }
)

_SERVICE = _struct(
    {
        "protocol": _one_of("tcp", "udp"),
        "internal_port": _integer,
        "ports": _list_of(_PORT),
        "concurrency": _struct(
            {
                "type": _one_of("connections", "requests"),
                "soft_limit": _non_negative,
                "hard_limit": _non_negative,
            }
        ),
        "autostop": _autostop,
        "autostart": _boolean,
        "min_machines_running": _non_negative,
        "checks": _list_of(_map_of(_anything)),
        "force_instance_key": _string,
        "force_instance_description": _string,
    },
    required=("internal_port",),
)

_CONFIG = _struct(
    {
        "image": _string,
        "env": _map_of(_string),
        "init": _struct(
            {
                "exec": _STRINGS,
                "entrypoint": _STRINGS,
                "cmd": _STRINGS,
                "tty": _boolean,
                "swap_size_mb": _non_negative,
                "kernel_args": _STRINGS,
            }
        ),
        "guest": _struct(
            {
                "cpu_kind": _string,
                "cpus": _non_negative,
                "memory_mb": _non_negative,
                "gpu_kind": _string,
                "gpus": _non_negative,
                "host_dedication_id": _string,
                "kernel_args": _STRINGS,
                "persist_rootfs": _string,
            }
        ),
        "size": _preset,
        "restart": _struct(
            {
                "policy": _one_of("no", "always", "on-failure"),
                "max_retries": _non_negative,
                "gpu_bid_price": _anything,
            }
        ),
        "stop_config": _struct({"signal": _string, "timeout": _duration}),
        "metadata": _map_of(_string),
        "services": _list_of(_SERVICE),
        "files": _list_of(
            _struct(
                {
                    "guest_path": _string,
                    "raw_value": _string,
                    "secret_name": _string,
                    "mode": _non_negative,
                },
                required=("guest_path",),
            )
        ),
        "auto_destroy": _boolean,
        # accepted, not acted on (see the module's docstring)
        "checks": _map_of(_map_of(_anything)),
        "processes": _list_of(_map_of(_anything)),
        "dns": _map_of(_anything),
        "metrics": _map_of(_anything),
        "statics": _list_of(_map_of(_anything)),
        "standbys": _STRINGS,
        "schedule": _string,
        "disable_machine_autostart": _boolean,
        # refused below when not empty
        "mounts": _list_of(_anything),
        "containers": _list_of(_anything),
    },
    required=("image",),
)


class MachineRequest(msgspec.Struct, kw_only=True):
    """A create or update request, checked (``config`` as it will be stored)."""

    config: dict[str, Any]
    name: str = ""
    region: str = ""
    skip_launch: bool = False
    skip_service_registration: bool = False
    lease_ttl: int | None = None
    #: Update only: the machine version the caller last saw.
    current_version: str = ""


_REQUEST = {
    "config": _CONFIG,
    "name": _string,
    "region": _string,
    "skip_launch": _boolean,
    "skip_service_registration": _boolean,
    "lease_ttl": _non_negative,
    "lsvd": _boolean,
}


def parse_request(body: Any, *, update: bool = False) -> MachineRequest:
    """The create (or update) request ``body`` checked; ConfigError (400) names the
    first key that is wrong."""
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    fields = dict(_REQUEST)
    if update:
        fields["current_version"] = _string
    checked = _struct(fields, required=("config",))(body, "")
    for key in ("mounts", "containers"):
        if checked["config"].get(key):
            raise ConfigError(
                f"config.{key} is not supported for machines made through the Machines API "
                "yet; leave it out"
            )
    for n, file in enumerate(checked["config"].get("files", ())):
        if ("raw_value" in file) == ("secret_name" in file):
            raise ConfigError(f"config.files[{n}] needs one of raw_value or secret_name")
    for n, service in enumerate(checked["config"].get("services", ())):
        if not 0 < service["internal_port"] < 65536:
            raise ConfigError(f"config.services[{n}].internal_port must be a port (1-65535)")
    checked.pop("lsvd", None)
    return msgspec.convert(checked, MachineRequest)


# -- which image, run by which driver ---------------------------------------------------------


def is_app_image(ref: str, app: str, own_refs: set[str]) -> bool:
    """Whether ``ref`` names the app's own image: what its machines are told they run
    (FLY_IMAGE_REF, ``registry.fly.io/<app>:deployment-<version>``), any tag of
    ``registry.fly.io/<app>``, or the image taxiway built for it (``own_refs``)."""
    repository = f"registry.fly.io/{app}"
    return ref in own_refs or ref == repository or ref.startswith(f"{repository}:")


def engine_image(ref: str) -> ImageConfig:
    """``ref``'s settings from the Docker engine (pulled when the engine lacks it);
    ConfigError (422) in one sentence when there is no engine or no such image."""
    from taxiway.image.engine import EngineError, client, engine_problem

    problem = engine_problem()
    if problem is not None:
        raise ConfigError(f"no Docker engine to run image {ref}: {problem}", 422)
    import docker.errors

    from taxiway.image.build import BuildError, _pull, image_config_of

    try:
        engine = client()
        try:
            attrs = engine.api.inspect_image(ref)
        except docker.errors.NotFound:
            _pull(engine, ref, lambda line: None)
            attrs = engine.api.inspect_image(ref)
    except (BuildError, EngineError, docker.errors.DockerException) as exc:
        said = str(exc).replace("[build] image", "image")
        if not said.startswith(f"image {ref}"):
            said = f"image {ref} cannot be run: {said}"
        raise ConfigError(said, 422) from None
    found = image_config_of(attrs)
    return msgspec.structs.replace(found, ref=ref)


def resolve(runtime: AppRuntime, config: dict[str, Any]) -> tuple[MachineSpec, Driver, str]:
    """What a machine of ``config`` runs, the driver that runs it and its FLY_IMAGE_REF.

    The app's own image (`is_app_image`) runs on the app's driver, as its machines do
    (with the process driver, in the app's folder); any other image runs in a container
    of the Docker engine (`AppRuntime.image_driver`), which must have or pull it."""
    ref = config["image"]
    group = group_of(config)
    own = {spec.runs.image for spec in runtime.specs.values() if spec.runs.image}
    if is_app_image(ref, runtime.app, own):
        base = runtime.specs.get(group) or next(iter(runtime.specs.values()))
        image = runtime.image or image_config(runtime.loaded.config, runtime.base_dir)
        return machine_spec(config, image=image, base=base), runtime.driver, ref
    image = engine_image(ref)
    return machine_spec(config, image=image), runtime.image_driver(), ref


# -- config → MachineSpec ---------------------------------------------------------------------


def group_of(config: dict[str, Any]) -> str:
    """The process group the config names in its metadata ("" when none)."""
    return str((config.get("metadata") or {}).get("fly_process_group", ""))


def machine_spec(
    config: dict[str, Any], *, image: ImageConfig, base: MachineSpec | None = None
) -> MachineSpec:
    """What a machine of this API config runs. ``image``: the image's settings (its
    ENTRYPOINT, CMD, WORKDIR, ENV; ``ref`` the image a container is made from);
    ``base``: a spec of the app's own image when the config runs it (the runs' rootfs
    and image come from there)."""
    init_config = config.get("init", {})
    init = Init(
        cmd=init_config.get("cmd"),
        entrypoint=init_config.get("entrypoint"),
        exec=init_config.get("exec"),
        swap_size_mb=init_config.get("swap_size_mb"),
    )
    argv = machine_argv(init.cmd, init.entrypoint, init.exec, image)
    if not argv:
        raise ConfigError(
            f"image {config['image']} has no CMD or ENTRYPOINT: give config.init.cmd "
            "(or config.init.exec)"
        )
    runs = Runs(
        argv=argv,
        entrypoint=effective_entrypoint(init.entrypoint, image),
        workdir=image.workdir,
        image=base.runs.image if base is not None else image.ref,
        rootfs=base.runs.rootfs if base is not None else None,
    )
    stop = config.get("stop_config", {})
    metadata = dict(config.get("metadata", {}))
    group = group_of(config)
    env = dict(config.get("env", {}))
    return MachineSpec(
        group=group,
        init=init,
        runs=runs,
        env=env,
        image_env=dict(image.env),
        services=[_service(s, n) for n, s in enumerate(config.get("services", ()))],
        checks=[],
        machine_checks=[],
        mounts=[],
        files=[
            FileSpec(
                guest_path=f["guest_path"],
                raw_value=f.get("raw_value"),
                secret_name=f.get("secret_name"),
            )
            for f in config.get("files", ())
        ],
        statics=[],
        metrics=None,
        restart=_restart(config.get("restart", {})),
        stop_config=StopConfig(
            signal=stop.get("signal") or DEFAULT_KILL_SIGNAL,
            timeout=stop.get("timeout") or DEFAULT_KILL_TIMEOUT,
        ),
        guest=_guest(config),
        metadata=metadata,
    )


def _restart(restart: dict[str, Any]) -> RestartSpec:
    """A config without a restart policy gets ``on-failure`` with 10 retries, as on the
    platform (https://fly.io/docs/machines/guides-examples/machine-restart-policy/)."""
    policy = restart.get("policy", "on-failure")
    retries = None
    if policy == "on-failure":
        retries = restart.get("max_retries") or DEFAULT_RESTART_RETRIES
    return RestartSpec(policy=policy, max_retries=retries)


def _guest(config: dict[str, Any]) -> Guest:
    guest = config.get("guest", {})
    size = config.get("size") or DEFAULT_PRESET
    preset = PRESETS[size]
    return Guest(
        cpu_kind=guest.get("cpu_kind") or preset.cpu_kind,
        cpus=guest.get("cpus") or preset.cpus,
        memory_mb=guest.get("memory_mb") or preset.memory_mb,
        gpu_kind=guest.get("gpu_kind") or preset.gpu_kind,
        gpus=guest.get("gpus") or preset.gpus or None,
        kernel_args=guest.get("kernel_args"),
        host_dedication_id=guest.get("host_dedication_id"),
        persist_rootfs=guest.get("persist_rootfs"),
        size=size,
    )


def _service(service: dict[str, Any], index: int) -> ServiceSpec:
    concurrency = service.get("concurrency", {})
    return ServiceSpec(
        protocol=service.get("protocol", "tcp"),
        internal_port=service["internal_port"],
        ports=[
            Port(
                port=p.get("port"),
                start_port=p.get("start_port"),
                end_port=p.get("end_port"),
                handlers=list(p.get("handlers", ())),
                force_https=p.get("force_https", False),
                tls_options=p.get("tls_options"),
                http_options=p.get("http_options"),
                proxy_proto_options=p.get("proxy_proto_options"),
            )
            for p in service.get("ports", ())
        ],
        concurrency=Concurrency(**concurrency) if concurrency else Concurrency(),
        autostop=service.get("autostop", "off"),
        autostart=service.get("autostart", True),
        min_machines_running=service.get("min_machines_running", 0),
        source=f"config.services[{index}]",
    )


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the machine keeps it and the API shows it back."""
    return copy.deepcopy(config)
