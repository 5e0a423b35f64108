"""The typed model of fly.toml: every section and key of the reference.

The model holds the *normalised* form of a config (what ``taxiway config show``
prints): legacy spellings have been rewritten by `taxiway.config.normalize`,
durations are Go-style strings (``"10s"``), sizes are strings with units
(``"512mb"``), and sections that may be written as a table or an array are lists.
Every field is optional here; which keys are required, and every other rule of
the reference, lives in `taxiway.config.rules` so it can be reported with the
reference's wording instead of a type error.

Descriptions become the JSON Schema's hints in editors (``taxiway config schema``).
"""

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

# --- value types ---------------------------------------------------------------

Duration = Annotated[
    str,
    Meta(
        description=(
            'A duration: a string with units ("10s", "500ms", "1m30s") or a bare number '
            "(milliseconds in check fields, seconds in kill_timeout)."
        ),
        extra_json_schema={"x-input": {"type": ["string", "integer", "number"]}},
    ),
]
MemorySize = Annotated[
    str,
    Meta(
        description='Memory: a string with units ("512mb", "2gb") or a bare number of megabytes.',
        extra_json_schema={"x-input": {"type": ["string", "integer"]}},
    ),
]
VolumeSize = Annotated[
    str,
    Meta(
        description='A volume size: a string with units ("20gb") or a bare number of gigabytes.',
        extra_json_schema={"x-input": {"type": ["string", "integer"]}},
    ),
]
Port = Annotated[
    int,
    Meta(
        description="A port number, 1-65535.",
        extra_json_schema={"x-input": {"type": ["integer", "string"]}},
    ),
]
ProcessList = Annotated[
    list[str],
    Meta(description="Process groups this applies to; without it, only the default group."),
]
AutoStop = Annotated[
    Literal["off", "stop", "suspend"],
    Meta(
        description=(
            'What the proxy does with idle machines: "off" (never stop), "stop", or "suspend". '
            "Legacy booleans: true means stop, false means off."
        ),
        extra_json_schema={"x-input": {"enum": ["off", "stop", "suspend", True, False]}},
    ),
]


class Section(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every table: keyword-only, and unset keys are left out when dumped."""


# --- checks ------------------------------------------------------------------------


class TCPCheck(Section):
    """A service TCP check: the machine passes when ``internal_port`` accepts a connection."""

    grace_period: Annotated[Duration | None, Meta(description="Wait this long after start.")] = None
    interval: Annotated[Duration | None, Meta(description="Time between checks.")] = None
    timeout: Annotated[Duration | None, Meta(description="How long one check may take.")] = None
    restart_limit: Annotated[
        int | None,
        Meta(description="Restart the machine after this many consecutive failures (legacy)."),
    ] = None


class HTTPCheck(Section):
    """A service HTTP check: the machine passes on a 2xx answer; redirects are not followed."""

    grace_period: Annotated[Duration | None, Meta(description="Wait this long after start.")] = None
    interval: Annotated[Duration | None, Meta(description="Time between checks.")] = None
    timeout: Annotated[Duration | None, Meta(description="How long one check may take.")] = None
    method: Annotated[str | None, Meta(description="HTTP method, GET by default.")] = None
    path: Annotated[str | None, Meta(description="The path requested.")] = None
    protocol: Annotated[
        Literal["http", "https"] | None, Meta(description="http (default) or https.")
    ] = None
    tls_skip_verify: Annotated[
        bool | None, Meta(description="With https, do not verify the certificate.")
    ] = None
    tls_server_name: Annotated[
        str | None, Meta(description="With https, the server name to verify.")
    ] = None
    headers: Annotated[
        dict[str, str] | None, Meta(description="Headers sent with every check request.")
    ] = None
    restart_limit: Annotated[
        int | None,
        Meta(description="Restart the machine after this many consecutive failures (legacy)."),
    ] = None


class MachineCheck(Section):
    """A command run once per deploy in a throwaway machine, with FLY_TEST_MACHINE_IP set."""

    command: Annotated[list[str] | None, Meta(description="The command to run (required).")] = None
    image: Annotated[str | None, Meta(description="Image for the test machine.")] = None
    entrypoint: Annotated[list[str] | None, Meta(description="Entrypoint for the test.")] = None
    kill_signal: Annotated[str | None, Meta(description="Signal sent when it runs too long.")] = (
        None
    )
    kill_timeout: Annotated[Duration | None, Meta(description="Wait before the kill signal.")] = (
        None
    )


class TopLevelCheck(Section):
    """A named ``[checks.NAME]`` check: gates deploys, never routing."""

    type: Annotated[Literal["tcp", "http"] | None, Meta(description="tcp or http (required).")] = (
        None
    )
    port: Annotated[
        Port | None,
        Meta(description="Port to check; defaults to http_service.internal_port."),
    ] = None
    grace_period: Annotated[Duration | None, Meta(description="Wait this long after start.")] = None
    interval: Annotated[Duration | None, Meta(description="Time between checks (>= 2s).")] = None
    timeout: Annotated[
        Duration | None, Meta(description="How long one check may take (<= 60s).")
    ] = None
    method: Annotated[str | None, Meta(description="HTTP method, GET by default.")] = None
    path: Annotated[str | None, Meta(description="The path requested.")] = None
    protocol: Annotated[
        Literal["http", "https"] | None, Meta(description="http (default) or https.")
    ] = None
    tls_skip_verify: Annotated[
        bool | None, Meta(description="With https, do not verify the certificate.")
    ] = None
    tls_server_name: Annotated[
        str | None, Meta(description="With https, the server name to verify.")
    ] = None
    headers: Annotated[
        dict[str, str] | None, Meta(description="Headers sent with every check request.")
    ] = None
    processes: ProcessList | None = None


# --- services ------------------------------------------------------------------------


class Concurrency(Section):
    """How load is counted for balancing and autostop."""

    type: Annotated[
        Literal["connections", "requests"] | None,
        Meta(description="connections (default) or requests."),
    ] = None
    soft_limit: Annotated[
        int | None, Meta(description="At or above this, prefer other machines (default 20).")
    ] = None
    hard_limit: Annotated[
        int | None, Meta(description="At or above this, send no new traffic (default none).")
    ] = None


class TLSOptions(Section):
    alpn: Annotated[
        list[str] | None, Meta(description='ALPN protocols, e.g. ["h2", "http/1.1"].')
    ] = None
    versions: Annotated[
        list[str] | None, Meta(description='Allowed TLS versions, e.g. ["TLSv1.2", "TLSv1.3"].')
    ] = None
    default_self_signed: Annotated[
        bool | None, Meta(description="Serve a self-signed certificate when none exists.")
    ] = None


class HTTPResponseOptions(Section):
    headers: Annotated[
        dict[str, str | bool | list[str]] | None,
        Meta(description="Response headers to add (string or list) or remove (false)."),
    ] = None
    pristine: Annotated[
        bool | None,
        Meta(description="Add no Server, Via, Fly-Request-Id or Fly-Cache-Status headers."),
    ] = None


class ReplayCache(Section):
    path_prefix: str | None = None
    ttl_seconds: int | None = None
    type: Literal["cookie", "header"] | None = None
    name: str | None = None
    allow_bypass: bool | None = None


class HTTPOptions(Section):
    compress: Annotated[bool | None, Meta(description="Compress responses at the edge.")] = None
    response: HTTPResponseOptions | None = None
    h2_backend: Annotated[
        bool | None, Meta(description="Speak HTTP/2 cleartext (h2c) to the app.")
    ] = None
    idle_timeout: Annotated[
        int | None, Meta(description="Idle timeout of connections, in seconds.")
    ] = None
    headers_read_timeout: Annotated[
        int | None, Meta(description="Time allowed to read request headers, in seconds.")
    ] = None
    replay_cache: list[ReplayCache] | None = None


class ProxyProtoOptions(Section):
    version: Annotated[
        Literal["v1", "v2"] | None, Meta(description="PROXY protocol version, v1 by default.")
    ] = None


class ServicePort(Section):
    """One external port (or range) of a service and how the edge handles it."""

    port: Annotated[Port | None, Meta(description="External port, 1-65535.")] = None
    start_port: Annotated[Port | None, Meta(description="First port of a range.")] = None
    end_port: Annotated[Port | None, Meta(description="Last port of a range.")] = None
    handlers: Annotated[
        list[str] | None,
        Meta(description="Edge handlers: http, tls, proxy_proto, pg_tls; none for raw TCP/UDP."),
    ] = None
    force_https: Annotated[
        bool | None, Meta(description="Redirect plain HTTP requests to HTTPS.")
    ] = None
    tls_options: TLSOptions | None = None
    http_options: HTTPOptions | None = None
    proxy_proto_options: ProxyProtoOptions | None = None


class Service(Section):
    """A ``[[services]]`` entry: external ports routed to ``internal_port`` on machines."""

    protocol: Annotated[Literal["tcp", "udp"] | None, Meta(description="tcp or udp.")] = None
    internal_port: Annotated[
        Port | None, Meta(description="Port the app listens on inside the machine (default 8080).")
    ] = None
    auto_stop_machines: AutoStop | None = None
    auto_start_machines: Annotated[
        bool | None, Meta(description="Start machines when requests arrive (default true).")
    ] = None
    min_machines_running: Annotated[
        int | None, Meta(description="Machines kept running in the primary region (default 0).")
    ] = None
    ports: list[ServicePort] | None = None
    concurrency: Concurrency | None = None
    tcp_checks: list[TCPCheck] | None = None
    http_checks: list[HTTPCheck] | None = None
    machine_checks: list[MachineCheck] | None = None
    processes: ProcessList | None = None


class HTTPService(Section):
    """``[http_service]``: a service on 80 (http) and 443 (tls + http)."""

    internal_port: Annotated[
        Port | None, Meta(description="Port the app listens on inside the machine (default 8080).")
    ] = None
    force_https: Annotated[
        bool | None, Meta(description="Redirect plain HTTP requests to HTTPS.")
    ] = None
    auto_stop_machines: AutoStop | None = None
    auto_start_machines: Annotated[
        bool | None, Meta(description="Start machines when requests arrive (default true).")
    ] = None
    min_machines_running: Annotated[
        int | None, Meta(description="Machines kept running in the primary region (default 0).")
    ] = None
    processes: ProcessList | None = None
    concurrency: Concurrency | None = None
    tls_options: TLSOptions | None = None
    http_options: HTTPOptions | None = None
    checks: list[HTTPCheck] | None = None
    machine_checks: list[MachineCheck] | None = None


# --- machines ------------------------------------------------------------------------


class Compute(Section):
    """A ``[[vm]]`` entry: the guest size of a group's machines."""

    size: Annotated[
        str | None, Meta(description='A preset such as "shared-cpu-1x" or "performance-2x".')
    ] = None
    memory: MemorySize | None = None
    memory_mb: Annotated[int | None, Meta(description="Memory in megabytes.")] = None
    cpus: Annotated[
        int | None,
        Meta(
            description="vCPUs: 1, 2, 4, 8 or 16.",
            extra_json_schema={"x-input": {"enum": [1, 2, 4, 8, 16]}},
        ),
    ] = None
    cpu_kind: Annotated[
        Literal["shared", "performance"] | None, Meta(description="shared or performance.")
    ] = None
    gpus: Annotated[int | None, Meta(description="GPUs: 1, 2, 4 or 8; needs gpu_kind.")] = None
    gpu_kind: Annotated[
        str | None, Meta(description="a10, l40s, a100-pcie-40gb or a100-sxm4-80gb.")
    ] = None
    kernel_args: Annotated[
        list[str] | None,
        Meta(
            description="Extra kernel parameters.",
            extra_json_schema={"x-input": {"type": ["array", "string"]}},
        ),
    ] = None
    host_dedication_id: str | None = None
    persist_rootfs: Annotated[
        Literal["never", "always", "restart"] | None,
        Meta(description="Keep the root filesystem across restarts."),
    ] = None
    max_memory_mb: int | None = None
    processes: ProcessList | None = None


class Mount(Section):
    """A volume mounted into a group's machines."""

    source: Annotated[str | None, Meta(description="Volume name (required).")] = None
    destination: Annotated[
        str | None, Meta(description="Mount path in the machine (required; not /).")
    ] = None
    initial_size: VolumeSize | None = None
    snapshot_retention: Annotated[
        int | None, Meta(description="Days snapshots are kept, 1-60 (default 5).")
    ] = None
    scheduled_snapshots: Annotated[
        bool | None, Meta(description="Daily snapshots (default true).")
    ] = None
    auto_extend_size_threshold: Annotated[
        int | None, Meta(description="Percent used that grows the volume, 50-99.")
    ] = None
    auto_extend_size_increment: VolumeSize | None = None
    auto_extend_size_limit: VolumeSize | None = None
    processes: ProcessList | None = None


class Restart(Section):
    policy: Annotated[
        Literal["always", "never", "on-failure"] | None,
        Meta(description="always, never or on-failure (default on-failure)."),
    ] = None
    retries: Annotated[int | None, Meta(description="Restarts before giving up (default 10).")] = (
        None
    )
    processes: ProcessList | None = None


class Metrics(Section):
    port: Annotated[Port | None, Meta(description="Port of the Prometheus endpoint.")] = None
    path: Annotated[str | None, Meta(description='Path of the endpoint, e.g. "/metrics".')] = None
    https: bool | None = None
    processes: ProcessList | None = None


class Static(Section):
    guest_path: Annotated[
        str | None, Meta(description="Directory inside the machine (required).")
    ] = None
    url_prefix: Annotated[str | None, Meta(description="URL prefix served from it (required).")] = (
        None
    )
    tigris_bucket: str | None = None
    index_document: str | None = None


class File(Section):
    guest_path: Annotated[str | None, Meta(description="Absolute path in the machine.")] = None
    local_path: Annotated[
        str | None, Meta(description="File beside fly.toml whose content is written.")
    ] = None
    secret_name: Annotated[
        str | None, Meta(description="Secret whose base64 value is decoded and written.")
    ] = None
    raw_value: Annotated[
        str | None, Meta(description="Content written to the file (flyctl writes it as is).")
    ] = None
    processes: ProcessList | None = None


# --- build, deploy, experimental ----------------------------------------------------------


class BuildCompose(Section):
    file: Annotated[
        str | None,
        Meta(
            description="Compose file whose services become the machine's containers "
            "(default: compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml)."
        ),
    ] = None


class Build(Section):
    builder: str | None = None
    buildpacks: list[str] | None = None
    args: Annotated[
        dict[str, str] | None, Meta(description="Build arguments (not available at runtime).")
    ] = None
    settings: dict[str, Any] | None = None
    image: Annotated[str | None, Meta(description="A prebuilt image to run.")] = None
    builtin: str | None = None
    dockerfile: Annotated[str | None, Meta(description="Path or URL of the Dockerfile.")] = None
    ignorefile: str | None = None
    build_target: Annotated[str | None, Meta(description="Multi-stage build target.")] = field(
        default=None, name="build-target"
    )
    compose: BuildCompose | None = None
    compression: Literal["gzip", "zstd"] | None = None
    compression_level: int | None = None


class Deploy(Section):
    strategy: Annotated[
        Literal["rolling", "immediate", "canary", "bluegreen"] | None,
        Meta(description="rolling (default), immediate, canary or bluegreen."),
    ] = None
    max_unavailable: Annotated[
        float | None,
        Meta(description="Machines down at once in a rolling deploy: a count >= 1 or a fraction."),
    ] = None
    wait_timeout: Annotated[
        Duration | None, Meta(description="How long to wait for each machine (default 5m).")
    ] = None
    release_command: Annotated[
        str | None, Meta(description="Run before a release is deployed, in a temporary machine.")
    ] = None
    release_command_timeout: Annotated[
        Duration | None, Meta(description="Time allowed to the release command (default 5m).")
    ] = None
    release_command_vm: Compute | None = None
    seed_command: str | None = None


class AttachedSecrets(Section):
    export: dict[str, str] | None = None


class Attached(Section):
    secrets: AttachedSecrets | None = None


class Experimental(Section):
    cmd: Annotated[
        list[str] | None,
        Meta(
            description="Overrides the image CMD.",
            extra_json_schema={"x-input": {"type": ["array", "string"]}},
        ),
    ] = None
    entrypoint: Annotated[
        list[str] | None,
        Meta(
            description="Overrides the image ENTRYPOINT.",
            extra_json_schema={"x-input": {"type": ["array", "string"]}},
        ),
    ] = None
    exec: Annotated[
        list[str] | None,
        Meta(
            description="Overrides both ENTRYPOINT and CMD.",
            extra_json_schema={"x-input": {"type": ["array", "string"]}},
        ),
    ] = None
    auto_rollback: Annotated[
        bool | None,
        Meta(
            description="taxiway: put the previous release back when a deploy fails (default true)."
        ),
    ] = None
    enable_consul: bool | None = None
    enable_etcd: bool | None = None
    lazy_load_images: bool | None = None
    attached: Attached | None = None
    machine_config: str | None = None


# --- the whole file ------------------------------------------------------------------


class AppConfig(Section):
    """A whole fly.toml, normalised."""

    app: Annotated[str | None, Meta(description="The app's name.")] = None
    primary_region: Annotated[
        str | None, Meta(description="Region of new machines; sets PRIMARY_REGION.")
    ] = None
    kill_signal: Annotated[
        str | None,
        Meta(
            description="Signal sent to stop a machine (default SIGINT).",
            extra_json_schema={
                "x-input": {
                    "enum": [
                        "SIGINT",
                        "SIGTERM",
                        "SIGQUIT",
                        "SIGUSR1",
                        "SIGUSR2",
                        "SIGKILL",
                        "SIGSTOP",
                        "SIGHUP",
                    ]
                },
            },
        ),
    ] = None
    kill_timeout: Annotated[
        Duration | None,
        Meta(
            description="Time allowed after kill_signal before a hard stop (default 5s, max 300s)."
        ),
    ] = None
    swap_size_mb: Annotated[int | None, Meta(description="Swap space in megabytes.")] = None
    console_command: Annotated[
        str | None, Meta(description="What `taxiway console` runs in a fresh machine.")
    ] = None
    host_dedication_id: str | None = None
    machine_config: Annotated[
        str | None,
        Meta(
            description="A machine config with containers: inline JSON or a .json file "
            "(runs with the docker driver)."
        ),
    ] = None
    container: Annotated[
        str | None,
        Meta(description="The machine_config container that runs the built image (default app)."),
    ] = None
    experimental: Experimental | None = None
    build: Build | None = None
    deploy: Deploy | None = None
    env: Annotated[
        dict[str, str] | None,
        Meta(
            description="Environment variables of every machine; FLY_ names get a warning.",
            extra_json_schema={
                "x-input": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number", "boolean"]},
                }
            },
        ),
    ] = None
    processes: Annotated[
        dict[str, str] | None,
        Meta(description="Process groups: name = command. Each group runs on its own machines."),
    ] = None
    mounts: list[Mount] | None = None
    http_service: HTTPService | None = None
    services: list[Service] | None = None
    checks: dict[str, TopLevelCheck] | None = None
    files: list[File] | None = None
    machine_checks: list[MachineCheck] | None = None
    restart: list[Restart] | None = None
    vm: list[Compute] | None = None
    statics: list[Static] | None = None
    metrics: list[Metrics] | None = None
