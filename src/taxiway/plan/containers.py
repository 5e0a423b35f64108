"""Multi-container machines: the containers one machine runs, from fly.toml's
``[build.compose]`` or ``machine_config``.

On the platform a machine can run several containers side by side
(https://fly.io/docs/machines/guides-examples/multi-container-machines/). They share
one network namespace, so they reach each other on localhost and only one of them
should listen on a service's ``internal_port``; each keeps its own filesystem and
processes. The machine's environment (fly.toml ``[env]``, the app's secrets and the
``FLY_*`` runtime variables) reaches every container, secrets and ``FLY_*`` above a
container's own ``env``.

fly.toml describes them in one of two ways (flyctl ``internal/containerconfig/parse.go``):

* ``[build.compose]``: a Compose file (``file``, else the first of compose.yaml,
  compose.yml, docker-compose.yaml, docker-compose.yml next to fly.toml) where every
  service becomes a container (``internal/containerconfig/compose.go``). The one service
  with ``build`` gets the app's freshly built image (built as ``[build]`` says: the
  service's build context is not read); every other service names its ``image``.
  Mapped: ``environment`` (a map only), ``entrypoint``, ``command`` (a string is one
  argv element, not shell-split), ``user``, ``healthcheck.test`` (an exec check, a
  leading CMD/CMD-SHELL left out) and ``retries``, ``depends_on`` (a list means
  "started"; the long form's service_started, service_healthy,
  service_completed_successfully), and ``volumes`` that bind a host file (its content
  becomes a file in the container). Ignored: ports, restart, networks, secrets,
  configs, deploy, working_dir, and named volumes (a machine's disk is ephemeral; data
  that must last goes on a fly.toml ``[mounts]`` volume).
* ``machine_config`` (top level or under ``[experimental]``): a machine config as JSON,
  inline (starting with ``{``) or a file ending in ``.json`` (read from fly.toml's
  folder here), whose ``containers`` list is fly-go's ContainerConfig. ``container``
  names the one that gets the built image: by default the one named ``app``, else the
  first; every other one names its ``image``.

Every problem is a `ContainerConfigError`: one sentence naming the file and the key,
and the fly.toml key path it concerns, so `taxiway.config.rules` reports it as a
diagnostic and the plan raises it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal

import msgspec

from taxiway.config.diagnostics import KeyPath
from taxiway.config.model import AppConfig
from taxiway.errors import TaxiwayError

#: Where flyctl looks for a Compose file next to fly.toml, in this order
#: (``internal/appconfig/config.go``).
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
#: The container that gets the built image when ``container`` names none.
DEFAULT_CONTAINER = "app"
#: Compose keys with no counterpart in a machine's containers.
IGNORED_COMPOSE_KEYS = (
    "ports",
    "restart",
    "networks",
    "secrets",
    "configs",
    "deploy",
    "working_dir",
)
_CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
    "service_completed_successfully": "exited_successfully",
}

Condition = Literal["started", "healthy", "exited_successfully"]


class ContainerConfigError(TaxiwayError):
    """A compose file or machine_config that can't give a machine its containers."""

    def __init__(self, message: str, path: KeyPath) -> None:
        super().__init__(message)
        #: The fly.toml key it concerns (``build.compose``, ``machine_config``, ...).
        self.path = path


class Dependency(msgspec.Struct, kw_only=True):
    """Start this container once container ``name`` is in ``condition``."""

    name: str
    condition: Condition = "started"


class Healthcheck(msgspec.Struct, kw_only=True):
    """A container's health check; taxiway runs the exec kind (what Compose gives)."""

    name: str = ""
    #: The command run in the container: healthy when it exits 0.
    exec: list[str] | None = None
    tcp_port: int | None = None
    #: Seconds, as the Machines API takes them (None: not said).
    interval: int | None = None
    timeout: int | None = None
    grace_period: int | None = None
    failure_threshold: int | None = None


class ContainerFile(msgspec.Struct, kw_only=True):
    guest_path: str
    #: base64 of the content, as the Machines API takes it.
    raw_value: str | None = None
    secret_name: str | None = None


class ContainerRestart(msgspec.Struct, kw_only=True):
    policy: Literal["no", "always", "on-failure"] = "on-failure"
    max_retries: int | None = None


class ContainerSecret(msgspec.Struct, kw_only=True):
    """App secret ``name`` as the variable ``env_var`` (fly-go's MachineSecret)."""

    env_var: str
    name: str | None = None


class ContainerPlan(msgspec.Struct, kw_only=True):
    """One container of a machine, as it will run."""

    name: str
    #: The image it runs: the release's build for the one with ``built``, (None until
    #: an image is built: the Dockerfile is only read), else the image it names.
    image: str | None
    #: Whether it gets the app's built image: its exit ends the machine, and it owns the
    #: machine's network (the others join it).
    built: bool = False
    #: Exactly what it runs. The built container's argv is resolved like a machine's
    #: (its own overrides, else fly.toml's, over the image's ENTRYPOINT/CMD); for
    #: another image only ``exec`` gives one, else ``entrypoint``/``cmd`` override the
    #: image's own (None: the image's, which only the engine knows).
    argv: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    #: Its own variables, below the machine's secrets and FLY_* variables.
    env: dict[str, str] = msgspec.field(default_factory=dict)
    secrets: list[ContainerSecret] = msgspec.field(default_factory=list)
    user: str | None = None
    #: None: the machine's [[restart]] (it ends with the machine).
    restart: ContainerRestart | None = None
    stop_signal: str | None = None
    stop_timeout: str | None = None
    depends_on: list[Dependency] = msgspec.field(default_factory=list)
    healthchecks: list[Healthcheck] = msgspec.field(default_factory=list)
    files: list[ContainerFile] = msgspec.field(default_factory=list)


class ContainerLayout(msgspec.Struct):
    """What fly.toml's container settings say: the containers (the built one's image
    and argv still to fill in) and what the user should know, as (message, key path)."""

    containers: list[ContainerPlan]
    notes: list[tuple[str, KeyPath]] = msgspec.field(default_factory=list)


# -- which source ----------------------------------------------------------------------


class ComposeFileMissing(ContainerConfigError):
    """``[build.compose]`` names or finds no file. fly.toml itself is fine (flyctl reads
    the file only when it deploys): `config validate` warns, the plan has no containers,
    and the docker driver refuses to build (`taxiway.image.for_release`)."""


def machine_config_of(config: AppConfig) -> str | None:
    """``[experimental] machine_config`` wins over the top-level one, as in flyctl's
    ``internal/appconfig/machines.go``."""
    exp = config.experimental
    if exp is not None and exp.machine_config:
        return exp.machine_config
    return config.machine_config or None


def compose_path(config: AppConfig, base_dir: Path) -> Path | None:
    """The Compose file ``[build.compose]`` uses, or None without ``[build.compose]``;
    ContainerConfigError when it names or finds none."""
    build = config.build
    if build is None or build.compose is None:
        return None
    if build.compose.file:
        path = base_dir / build.compose.file
        if not path.is_file():
            raise ComposeFileMissing(
                f"build.compose.file names {build.compose.file}, which does not exist next "
                "to fly.toml",
                ("build", "compose", "file"),
            )
        return path
    for name in COMPOSE_FILES:
        if (base_dir / name).is_file():
            return base_dir / name
    raise ComposeFileMissing(
        f"[build.compose] finds no compose file next to fly.toml (looked for "
        f"{', '.join(COMPOSE_FILES)}); add one or set build.compose.file",
        ("build", "compose"),
    )


def read_containers(config: AppConfig, base_dir: Path) -> ContainerLayout | None:
    """The machine's containers as fly.toml describes them (None: an ordinary machine
    running one image); ContainerConfigError saying what is wrong."""
    path = compose_path(config, base_dir)
    source = machine_config_of(config)
    if path is not None:
        layout = _from_compose(path)
        if source:
            layout.notes.append(
                ("[build.compose] is used, so machine_config is not", ("build", "compose"))
            )
    elif source:
        layout = _from_machine_config(config, source, base_dir)
    else:
        return None
    for c in layout.containers:
        if c.built and c.depends_on:
            layout.notes.append(
                (
                    f"container {c.name!r} gets the app's image, so it starts first (the "
                    "others join its network) and doesn't wait for its depends_on",
                    ("build", "compose") if path is not None else ("machine_config",),
                )
            )
    return layout


# -- compose ---------------------------------------------------------------------------


def _from_compose(path: Path) -> ContainerLayout:
    import yaml

    where: KeyPath = ("build", "compose")
    name = path.name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ContainerConfigError(f"cannot read {name}: {exc}", where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ContainerConfigError(f"{name} is not valid YAML{at}", where) from None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise ContainerConfigError(f"{name} defines no services", where)
    built = [s for s, body in services.items() if isinstance(body, dict) and "build" in body]
    if len(built) > 1:
        raise ContainerConfigError(
            f"{name}: only one service may have build (it gets the app's image), but "
            f"{_and(built)} do",
            where,
        )
    layout = ContainerLayout([])
    for service, body in services.items():
        layout.containers.append(_service(name, str(service), body, path.parent, layout.notes))
    _check_dependencies(layout.containers, name, "services", where)
    return layout


def _service(
    file: str, service: str, body: Any, folder: Path, notes: list[tuple[str, KeyPath]]
) -> ContainerPlan:
    where: KeyPath = ("build", "compose")
    key = f"services.{service}"
    if not isinstance(body, dict):
        raise ContainerConfigError(f"{file}: {key} is not a mapping", where)
    built = "build" in body
    image = body.get("image")
    if not built and not (isinstance(image, str) and image):
        raise ContainerConfigError(
            f"{file}: {key} needs an image (only the service with build gets the app's image)",
            where,
        )
    env = body.get("environment")
    if isinstance(env, list):
        raise ContainerConfigError(
            f"{file}: {key}.environment is a list; write it as a map (NAME: value), the only "
            "form the platform reads",
            where,
        )
    if env is not None and not isinstance(env, dict):
        raise ContainerConfigError(f"{file}: {key}.environment must be a map", where)
    plan = ContainerPlan(
        name=service,
        image=None if built else image,
        built=built,
        entrypoint=_argv_of(body.get("entrypoint"), file, f"{key}.entrypoint", notes),
        cmd=_argv_of(body.get("command"), file, f"{key}.command", notes),
        env={str(k): _env_value(v) for k, v in (env or {}).items()},
        user=str(body["user"]) if body.get("user") not in (None, "") else None,
        depends_on=_depends_on(body.get("depends_on"), file, key),
        healthchecks=_healthcheck(body.get("healthcheck"), file, key, notes),
        files=_volume_files(body.get("volumes"), file, key, folder, notes),
    )
    ignored = [k for k in IGNORED_COMPOSE_KEYS if k in body]
    if ignored:
        notes.append(
            (f"{file}: {key} sets {_and(ignored)}, which a machine's containers don't use", where)
        )
    return plan


def _argv_of(
    value: Any, file: str, key: str, notes: list[tuple[str, KeyPath]]
) -> list[str] | None:
    """A compose command or entrypoint: a list as it is; a string as one element, as
    the platform takes it (a warning when that string has spaces: it names no program)."""
    if value is None:
        return None
    if isinstance(value, str):
        if " " in value.strip():
            notes.append(
                (
                    f"{file}: {key} is the string {value!r}, which the platform runs as one "
                    "program name, not split by a shell; write it as a list",
                    ("build", "compose"),
                )
            )
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise ContainerConfigError(f"{file}: {key} must be a string or a list", ("build", "compose"))


def _env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _depends_on(value: Any, file: str, key: str) -> list[Dependency]:
    if value is None:
        return []
    if isinstance(value, list):
        return [Dependency(name=str(name)) for name in value]
    if isinstance(value, dict):
        out = []
        for name, spec in value.items():
            condition = spec.get("condition") if isinstance(spec, dict) else None
            out.append(
                Dependency(name=str(name), condition=_CONDITIONS.get(condition, "started"))  # type: ignore[arg-type]
            )
        return out
    raise ContainerConfigError(
        f"{file}: {key}.depends_on must be a list or a map of services", ("build", "compose")
    )


def _healthcheck(
    value: Any, file: str, key: str, notes: list[tuple[str, KeyPath]]
) -> list[Healthcheck]:
    if not isinstance(value, dict) or value.get("disable"):
        return []
    test = value.get("test")
    if isinstance(test, str):
        argv = [test]
    elif isinstance(test, list):
        argv = [str(t) for t in test]
        if argv and argv[0] in ("CMD", "CMD-SHELL"):
            argv = argv[1:]
        elif argv and argv[0] == "NONE":
            return []
    else:
        return []
    if not argv:
        return []
    if len(argv) == 1 and " " in argv[0].strip():
        notes.append(
            (
                f"{file}: {key}.healthcheck.test runs {argv[0]!r} as one program name (the "
                "platform runs no shell for it); write it as a list, e.g. [CMD, curl, -f, url]",
                ("build", "compose"),
            )
        )
    retries = value.get("retries")
    return [
        Healthcheck(
            name=f"{key.split('.', 1)[1]}-health",
            exec=argv,
            failure_threshold=retries if isinstance(retries, int) and retries > 0 else None,
        )
    ]


def _volume_files(
    value: Any, file: str, key: str, folder: Path, notes: list[tuple[str, KeyPath]]
) -> list[ContainerFile]:
    """A volume binding a host file becomes that file in the container (its content, as
    it is now); a named or anonymous volume is left out, and the note says where data
    that must last goes."""
    out = []
    for entry in value or ():
        if not isinstance(entry, str):  # the long form: only its bind of a file counts
            if isinstance(entry, dict) and entry.get("type") == "bind":
                entry = f"{entry.get('source', '')}:{entry.get('target', '')}"
            else:
                notes.append((_named_volume_note(file, key, str(entry)), ("build", "compose")))
                continue
        parts = entry.split(":")
        source, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", parts[0])
        if target in ("ro", "rw"):
            source, target = "", source
        if not source or not source.startswith((".", "/", "~")):
            notes.append((_named_volume_note(file, key, entry), ("build", "compose")))
            continue
        host = (folder / source).expanduser()
        try:
            content = host.read_bytes()
        except OSError:
            notes.append(
                (
                    f"{file}: {key}.volumes binds {source}, which is not a readable file; "
                    "only files are copied into the container",
                    ("build", "compose"),
                )
            )
            continue
        out.append(ContainerFile(guest_path=target, raw_value=_b64(content)))
    return out


def _named_volume_note(file: str, key: str, entry: str) -> str:
    return (
        f"{file}: {key}.volumes has {entry}, which is ignored: a machine's disk is "
        "ephemeral, so data that must last goes on a volume under fly.toml [mounts]"
    )


# -- machine_config --------------------------------------------------------------------


class _ExecCheck(msgspec.Struct):
    command: list[str] = msgspec.field(default_factory=list)


class _TCPCheck(msgspec.Struct):
    port: int = 0


class _Check(msgspec.Struct, kw_only=True):
    name: str = ""
    exec: _ExecCheck | None = None
    tcp: _TCPCheck | None = None
    http: dict[str, Any] | None = None
    interval: int | None = None
    timeout: int | None = None
    grace_period: int | None = None
    failure_threshold: int | None = None


class _File(msgspec.Struct, kw_only=True):
    guest_path: str
    raw_value: str | None = None
    secret_name: str | None = None
    local_path: str | None = None


class _Stop(msgspec.Struct, kw_only=True):
    signal: str | None = None
    timeout: str | int | None = None


class _Container(msgspec.Struct, kw_only=True):
    """fly-go's ContainerConfig, the keys taxiway reads."""

    name: str = ""
    image: str = ""
    exec: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    env: dict[str, str] | None = None
    secrets: list[ContainerSecret] | None = None
    files: list[_File] | None = None
    restart: ContainerRestart | None = None
    stop: _Stop | None = None
    depends_on: list[Dependency] | None = None
    healthchecks: list[_Check] | None = None


class _MachineConfig(msgspec.Struct):
    containers: list[_Container] | None = None


def _from_machine_config(config: AppConfig, source: str, base_dir: Path) -> ContainerLayout:
    exp = config.experimental
    where: KeyPath = (
        ("experimental", "machine_config")
        if exp is not None and exp.machine_config
        else ("machine_config",)
    )
    text, shown = _machine_config_text(source, base_dir, where)
    try:
        parsed = msgspec.json.decode(text, type=_MachineConfig)
    except msgspec.DecodeError as exc:
        raise ContainerConfigError(
            f"{shown} is not a machine config: {_json_problem(exc)}", where
        ) from None
    raw = parsed.containers or []
    if not raw:
        return ContainerLayout([])
    for n, c in enumerate(raw):
        if not c.name:
            raise ContainerConfigError(f"{shown}: containers[{n}] needs a name", where)
    names = [c.name for c in raw]
    wanted = config.container or DEFAULT_CONTAINER
    if config.container and wanted not in names:
        raise ContainerConfigError(
            f"fly.toml container = {wanted!r}, but {shown} has no container by that name "
            f"(it has {_and(names)})",
            ("container",),
        )
    chosen = wanted if wanted in names else names[0]
    layout = ContainerLayout([])
    for c in raw:
        built = c.name == chosen
        if not built and not c.image:
            raise ContainerConfigError(
                f"{shown}: container {c.name!r} needs an image (only {chosen!r} gets the "
                "app's image)",
                where,
            )
        layout.containers.append(
            ContainerPlan(
                name=c.name,
                image=None if built else c.image,
                built=built,
                argv=list(c.exec) if c.exec else None,
                entrypoint=c.entrypoint,
                cmd=c.cmd,
                env=dict(c.env or {}),
                secrets=list(c.secrets or ()),
                user=c.user or None,
                restart=c.restart,
                stop_signal=c.stop.signal if c.stop else None,
                stop_timeout=str(c.stop.timeout) if c.stop and c.stop.timeout else None,
                depends_on=list(c.depends_on or ()),
                healthchecks=[
                    Healthcheck(
                        name=h.name,
                        exec=list(h.exec.command) if h.exec else None,
                        tcp_port=h.tcp.port if h.tcp else None,
                        interval=h.interval,
                        timeout=h.timeout,
                        grace_period=h.grace_period,
                        failure_threshold=h.failure_threshold,
                    )
                    for h in c.healthchecks or ()
                ],
                files=[_file(f, shown, c.name, base_dir, where) for f in c.files or ()],
            )
        )
    _check_dependencies(layout.containers, shown, "containers", where)
    return layout


def _machine_config_text(source: str, base_dir: Path, where: KeyPath) -> tuple[bytes, str]:
    """The JSON and how messages name it (the file, or ``machine_config``)."""
    if source.lstrip().startswith("{"):
        return source.encode(), "machine_config"
    if source.endswith(".json"):
        path = base_dir / source
        try:
            return path.read_bytes(), source
        except OSError:
            raise ContainerConfigError(
                f"machine_config names {source}, which can't be read next to fly.toml", where
            ) from None
    raise ContainerConfigError(
        f"machine_config must be inline JSON (starting with {{) or a file ending in .json, "
        f"not {source!r}",
        where,
    )


def _file(f: _File, shown: str, container: str, base_dir: Path, where: KeyPath) -> ContainerFile:
    if f.raw_value is None and f.secret_name is None and f.local_path:
        try:
            content = (base_dir / f.local_path).read_bytes()
        except OSError:
            raise ContainerConfigError(
                f"{shown}: container {container!r} file {f.guest_path} reads {f.local_path}, "
                "which can't be read next to fly.toml",
                where,
            ) from None
        return ContainerFile(guest_path=f.guest_path, raw_value=_b64(content))
    return ContainerFile(guest_path=f.guest_path, raw_value=f.raw_value, secret_name=f.secret_name)


def _json_problem(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    return text[:1].lower() + text[1:]


# -- both ------------------------------------------------------------------------------


def _check_dependencies(
    containers: list[ContainerPlan], shown: str, what: str, where: KeyPath
) -> None:
    """Every dependency names a container of the machine, and they can all start."""
    names = {c.name for c in containers}
    for c in containers:
        for dep in c.depends_on:
            if dep.name not in names:
                raise ContainerConfigError(
                    f"{shown}: {what} {c.name!r} depends on {dep.name!r}, which is not one of "
                    f"its {what}",
                    where,
                )
    try:
        start_order(containers)
    except ValueError:
        raise ContainerConfigError(
            f"{shown}: the depends_on of the {what} make a cycle, so none of them can start "
            "first",
            where,
        ) from None


def start_order(containers: list[ContainerPlan]) -> list[ContainerPlan]:
    """The order the containers start in: the built one first (it owns the machine's
    network, which the others join, so it can't wait for them), then each of the others
    after what it depends on, else as written; ValueError on a cycle."""
    by_name = {c.name: c for c in containers}
    done: list[ContainerPlan] = []
    seen: set[str] = set()
    visiting: set[str] = set()

    def visit(c: ContainerPlan) -> None:
        if c.name in seen:
            return
        if c.name in visiting:
            raise ValueError(c.name)
        visiting.add(c.name)
        for dep in c.depends_on if not c.built else ():
            if dep.name in by_name:
                visit(by_name[dep.name])
        visiting.discard(c.name)
        seen.add(c.name)
        done.append(c)

    for c in sorted(containers, key=lambda c: not c.built):
        visit(c)
    return done


def _and(names: list[str]) -> str:
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
