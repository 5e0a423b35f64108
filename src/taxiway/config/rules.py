"""Every rule the fly.toml reference states, and flyctl's own local checks.

Each rule reads the typed `AppConfig` and reports to `Diagnostics` with the key
path it concerns. Messages follow the reference's wording of the reason, so a user
who looks the key up finds the same words. Rules that concern one process group
(flyctl validates each group's flattened config) name the group.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from collections import defaultdict
from pathlib import Path

from taxiway.config import groups as g
from taxiway.config import static_paths
from taxiway.config.diagnostics import Diagnostics, KeyPath, format_path
from taxiway.config.model import (
    AppConfig,
    Compute,
    Concurrency,
    HTTPCheck,
    HTTPService,
    MachineCheck,
    Mount,
    Service,
    ServicePort,
    TCPCheck,
    TLSOptions,
    TopLevelCheck,
)
from taxiway.config.names import (
    PLATFORM_ENV_PREFIX,
    platform_prefix_warning,
    volume_name_for,
    volume_name_problem,
)
from taxiway.config.presets import CPU_COUNTS, GPU_COUNTS, GPU_KINDS, PRESETS
from taxiway.config.units import (
    KNOWN_SIGNALS,
    MAX_VOLUME_GB,
    duration_seconds,
    normalize_signal,
    parse_size_gb,
    parse_size_mb,
)

HANDLERS = ("http", "tls", "proxy_proto", "pg_tls")
MAX_KILL_TIMEOUT_S = 300
MAX_STATICS = 10
_REGION = re.compile(r"^[a-z]{3}$")


def validate(config: AppConfig, diags: Diagnostics, *, base_dir: Path | None = None) -> None:
    """Run every rule; findings go to ``diags``."""
    _Rules(config, diags, base_dir or Path.cwd()).run()


class _Rules:
    def __init__(self, config: AppConfig, diags: Diagnostics, base_dir: Path) -> None:
        self.c = config
        self.d = diags
        self.base_dir = base_dir
        self.groups = g.group_names(config)
        self.default = g.default_group(config)
        self.multi_group = len(self.groups) > 1

    def run(self) -> None:
        self.top_level()
        self.env()
        self.processes()
        self.build()
        self.deploy()
        self.services()
        self.top_level_checks()
        self.machine_checks(self.c.machine_checks, ("machine_checks",))
        self.mounts()
        self.vms()
        self.restarts()
        self.metrics()
        self.statics()
        self.files()
        self.containers()
        self.unscoped_items()

    # -- top level -----------------------------------------------------------------

    def top_level(self) -> None:
        c = self.c
        if not c.app:
            self.d.info(
                "no app name: taxiway names the app after the folder fly.toml is in", ("app",)
            )
        if c.primary_region is not None and not _REGION.match(c.primary_region):
            self.d.warning(
                f'primary_region "{c.primary_region}" is not a three-letter region code like "ams"',
                ("primary_region",),
            )
        if c.kill_signal is not None:
            self._signal(c.kill_signal, ("kill_signal",))
        if c.kill_timeout is not None and duration_seconds(c.kill_timeout) > MAX_KILL_TIMEOUT_S:
            self.d.error(
                f"kill_timeout is {c.kill_timeout}, but the maximum kill_timeout is 300 seconds "
                "(five minutes)",
                ("kill_timeout",),
            )
        if c.swap_size_mb is not None and c.swap_size_mb < 0:
            self.d.error("swap_size_mb must not be negative", ("swap_size_mb",))
        if c.console_command is not None:
            self._shell_split(c.console_command, ("console_command",), "console command")

    def _rejected(self, path: KeyPath) -> bool:
        """Whether the key at ``path`` is in the file but was refused (a type error): such a
        key is not "left out", so what its absence means must not be said."""
        return any(d.path == path for d in self.d.errors())

    def _signal(self, signal: str, path: KeyPath) -> None:
        if signal in KNOWN_SIGNALS:
            return
        fixed = normalize_signal(signal)
        if fixed in KNOWN_SIGNALS:
            self.d.warning(f'{format_path(path)} is written "{fixed}" by the platform', path)
            return
        self.d.error(
            f'{format_path(path)} "{signal}" is not a signal the platform sends; options are '
            + ", ".join(KNOWN_SIGNALS),
            path,
        )

    def _shell_split(self, command: str, path: KeyPath, what: str) -> list[str] | None:
        try:
            return shlex.split(command)
        except ValueError as exc:
            self.d.error(f"can't shell split the {what} '{command}': {str(exc).lower()}", path)
            return None

    def env(self) -> None:
        for name in self.c.env or {}:
            if name.startswith(PLATFORM_ENV_PREFIX):
                self.d.warning(platform_prefix_warning(f"env.{name}"), ("env", name))
            if name == "PRIMARY_REGION" and self.c.primary_region:
                self.d.info(
                    "env.PRIMARY_REGION is overridden by primary_region, which sets it in every "
                    "machine",
                    ("env", name),
                )

    def processes(self) -> None:
        for name, command in (self.c.processes or {}).items():
            path = ("processes", name)
            if not name:
                self.d.error("a process group needs a name", path)
            elif not re.match(r"^[a-zA-Z0-9_-]+$", name):
                self.d.error(
                    f"process group name '{name}' may only use letters, digits, - and _", path
                )
            if command:
                self._shell_split(command, path, f"command of the '{name}' process group")

    def build(self) -> None:
        b = self.c.build
        if b is None:
            return
        ways = [
            name
            for name, value in (
                ("image", b.image),
                ("dockerfile", b.dockerfile),
                ("builder", b.builder or b.buildpacks),
                ("builtin", b.builtin),
            )
            if value
        ]
        if len(ways) > 1:
            self.d.warning(
                f"[build] names more than one way to build ({', '.join(ways)}); {ways[0]} is used",
                ("build",),
            )
        if (
            b.dockerfile
            and "://" not in b.dockerfile
            and not (self.base_dir / b.dockerfile).is_file()
        ):
            self.d.warning(
                f'build.dockerfile names "{b.dockerfile}", which does not exist (paths are '
                "read from the folder fly.toml is in); the docker driver can't build the app",
                ("build", "dockerfile"),
            )
        if b.compression_level is not None and not 0 <= b.compression_level <= 9:
            self.d.error(
                "build.compression_level must be between 0 and 9", ("build", "compression_level")
            )

    # -- deploy --------------------------------------------------------------------------

    def deploy(self) -> None:
        d = self.c.deploy
        if d is None:
            return
        if d.release_command is not None:
            self._shell_split(d.release_command, ("deploy", "release_command"), "release command")
        if d.max_unavailable is not None:
            mu = d.max_unavailable
            if mu <= 0:
                self.d.error(
                    f"deploy.max_unavailable is {mu:g}, but it must be more than 0: a whole number "
                    "of machines (1 or more) or a fraction between 0 and 1",
                    ("deploy", "max_unavailable"),
                )
            elif mu > 1 and not float(mu).is_integer():
                self.d.error(
                    f"deploy.max_unavailable is {mu:g}: whole number values, greater than or equal "
                    "to one, give a count of machines, and values between zero and one a fraction",
                    ("deploy", "max_unavailable"),
                )
        if d.strategy == "bluegreen" and not self._has_health_checks():
            self.d.error(
                "the bluegreen strategy needs at least one health check: add "
                "[[http_service.checks]], [[services.tcp_checks]], [[services.http_checks]] or "
                "[checks]",
                ("deploy", "strategy"),
            )
        if d.strategy in ("canary", "bluegreen") and self.c.mounts:
            with_volumes = [
                grp for grp in self.groups if g.matching(self.c.mounts, grp, self.default)
            ]
            self.d.error(
                f"the {d.strategy} strategy cannot be used for Machines with attached volumes "
                f"(group {', '.join(with_volumes)} mounts one); use rolling or immediate",
                ("deploy", "strategy"),
            )
        if d.release_command_vm is not None:
            self.compute(d.release_command_vm, ("deploy", "release_command_vm"))
        for key in ("wait_timeout", "release_command_timeout"):
            value = getattr(d, key)
            if value is not None and duration_seconds(value) == 0:
                self.d.warning(f"deploy.{key} is 0, so nothing is waited for", ("deploy", key))

    def _has_health_checks(self) -> bool:
        hs = self.c.http_service
        if hs and hs.checks:
            return True
        if any(s.tcp_checks or s.http_checks for s in self.c.services or ()):
            return True
        return bool(self.c.checks)

    # -- services -------------------------------------------------------------------------

    def services(self) -> None:
        hs = self.c.http_service
        if hs is not None:
            self.service_common(hs, ("http_service",), "[http_service]")
            if hs.internal_port is None and not self._rejected(("http_service", "internal_port")):
                self.d.info(
                    "http_service.internal_port is not set; it defaults to 8080",
                    ("http_service",),
                )
            for j, check in enumerate(hs.checks or ()):
                self.service_check(check, ("http_service", "checks", j), "HTTP")
            self.machine_checks(hs.machine_checks, ("http_service", "machine_checks"))
            if hs.tls_options is not None:
                self.tls_options(hs.tls_options, ("http_service", "tls_options"))
        for i, svc in enumerate(self.c.services or ()):
            path: KeyPath = ("services", i)
            self.service_common(svc, path, f"services[{i}]")
            self.service(svc, path)

    def service_common(self, svc: Service | HTTPService, path: KeyPath, label: str) -> None:
        if svc.internal_port is not None:
            self._port(svc.internal_port, (*path, "internal_port"))
        if self.c.processes and not svc.processes:
            n = len(self.c.processes)
            self.d.error(
                f"{label} has no processes set but the app has {n} process "
                f"group{'s' if n != 1 else ''} defined; set processes for each service",
                path,
            )
        self._groups_exist(svc.processes, path, "service")
        if svc.concurrency is not None:
            self.concurrency(svc.concurrency, (*path, "concurrency"))
        if svc.min_machines_running is not None and svc.min_machines_running < 0:
            self.d.error(
                f"{format_path((*path, 'min_machines_running'))} must not be negative",
                (*path, "min_machines_running"),
            )
        stop, start = svc.auto_stop_machines, svc.auto_start_machines
        if stop in ("stop", "suspend") and start is False:
            self.d.warning(
                f'{label} stops idle machines (auto_stop_machines = "{stop}") but never starts '
                "them (auto_start_machines = false); set both so they are both enabled or both "
                "disabled",
                (*path, "auto_start_machines"),
            )
        elif stop == "off" and start is True:
            # Machines that never stop are what "off" asks for: worth knowing, not a problem.
            self.d.info(
                f"{label} starts machines on demand but never stops them (auto_stop_machines = "
                '"off"); set both so they are both enabled or both disabled',
                (*path, "auto_stop_machines"),
            )
        if svc.min_machines_running and (stop or "off") == "off":
            self.d.info(
                f"{format_path((*path, 'min_machines_running'))} only has an effect when "
                'auto_stop_machines is "stop" or "suspend"',
                (*path, "min_machines_running"),
            )
        if stop == "suspend" and self.c.swap_size_mb:
            self.d.warning(
                f"{label} suspends idle machines, but machines with swap (swap_size_mb) cannot be "
                "suspended, so they are stopped instead",
                (*path, "auto_stop_machines"),
            )
        self.sidecar_assumption(svc, path, label)

    def service(self, svc: Service, path: KeyPath) -> None:
        if not svc.ports:
            self.d.warning(
                f"services[{path[1]}] must expose at least one port: add a [[services.ports]] "
                "section",
                path,
            )
        udp = svc.protocol == "udp"
        for j, port in enumerate(svc.ports or ()):
            self.port(port, (*path, "ports", j), udp=udp)
        for j, check in enumerate(svc.tcp_checks or ()):
            self.service_check(check, (*path, "tcp_checks", j), "TCP")
        for j, check in enumerate(svc.http_checks or ()):
            self.service_check(check, (*path, "http_checks", j), "HTTP")
        self.machine_checks(svc.machine_checks, (*path, "machine_checks"))
        if udp and (svc.tcp_checks or svc.http_checks):
            self.d.warning(
                f"services[{path[1]}] is a UDP service; TCP and HTTP checks against it cannot pass",
                path,
            )

    def port(self, port: ServicePort, path: KeyPath, *, udp: bool) -> None:
        has_range = port.start_port is not None or port.end_port is not None
        if port.port is None and not has_range:
            self.d.error(
                f"{format_path(path)} needs a port (or start_port and end_port for a range)", path
            )
        for key in ("port", "start_port", "end_port"):
            value = getattr(port, key)
            if value is not None:
                self._port(value, (*path, key))
        if has_range:
            if port.start_port is None or port.end_port is None:
                self.d.error(
                    f"{format_path(path)}: a port range needs both start_port and end_port", path
                )
            elif port.start_port > port.end_port:
                self.d.error(
                    f"{format_path(path)}: start_port {port.start_port} is after end_port "
                    f"{port.end_port}",
                    (*path, "start_port"),
                )
            if port.port is not None:
                self.d.warning(
                    f"{format_path(path)} has both port and a start_port/end_port range; "
                    "the range is used",
                    (*path, "port"),
                )
        handlers = port.handlers or []
        for k, handler in enumerate(handlers):
            if handler not in HANDLERS:
                self.d.error(
                    f'{format_path((*path, "handlers", k))}: "{handler}" is not a handler; '
                    f"the handlers are {', '.join(HANDLERS)}",
                    (*path, "handlers", k),
                )
        if len(set(handlers)) != len(handlers):
            self.d.warning(
                f"{format_path((*path, 'handlers'))} lists a handler twice", (*path, "handlers")
            )
        if udp and handlers:
            self.d.error(
                f"{format_path((*path, 'handlers'))}: leave handlers unset for UDP services",
                (*path, "handlers"),
            )
        if port.force_https and "http" not in handlers:
            self.d.error(
                f"{format_path((*path, 'force_https'))} needs the http handler on this port",
                (*path, "force_https"),
            )
        if port.http_options is not None and "http" not in handlers:
            self.d.warning(
                f"{format_path((*path, 'http_options'))} has no effect without the http handler",
                (*path, "http_options"),
            )
        if port.tls_options is not None:
            if "tls" not in handlers:
                self.d.warning(
                    f"{format_path((*path, 'tls_options'))} has no effect without the tls handler",
                    (*path, "tls_options"),
                )
            self.tls_options(port.tls_options, (*path, "tls_options"))
        if port.proxy_proto_options is not None and "proxy_proto" not in handlers:
            self.d.warning(
                f"{format_path((*path, 'proxy_proto_options'))} has no effect without the "
                "proxy_proto handler",
                (*path, "proxy_proto_options"),
            )
        if port.port == 443 and handlers == ["http"]:
            self.d.warning(
                f"{format_path(path)} serves port 443 with the http handler only, so HTTPS "
                'clients cannot connect; use handlers = ["tls", "http"]',
                (*path, "handlers"),
            )

    def tls_options(self, tls: TLSOptions, path: KeyPath) -> None:
        for k, version in enumerate(tls.versions or ()):
            if version not in ("TLSv1.2", "TLSv1.3"):
                self.d.warning(
                    f'{format_path((*path, "versions", k))}: "{version}" is not a TLS version the '
                    'edge offers ("TLSv1.2" or "TLSv1.3")',
                    (*path, "versions", k),
                )

    def _port(self, value: int, path: KeyPath) -> None:
        if not 1 <= value <= 65535:
            self.d.error(f"{format_path(path)} is {value}, but ports are 1-65535", path)

    def concurrency(self, conc: Concurrency, path: KeyPath) -> None:
        for key in ("soft_limit", "hard_limit"):
            value = getattr(conc, key)
            if value is not None and value < 1:
                self.d.error(f"{format_path((*path, key))} must be 1 or more", (*path, key))
        if (
            conc.soft_limit is not None
            and conc.hard_limit is not None
            and conc.soft_limit > conc.hard_limit
        ):
            self.d.error(
                f"{format_path(path)}: soft_limit {conc.soft_limit} is above hard_limit "
                f"{conc.hard_limit}",
                (*path, "soft_limit"),
            )

    def service_check(self, check: TCPCheck | HTTPCheck, path: KeyPath, kind: str) -> None:
        for key, zero_ok, label in (
            ("interval", False, "an interval"),
            ("timeout", False, "a timeout"),
            ("grace_period", True, "a grace period"),
        ):
            value = getattr(check, key)
            if value is None:
                continue
            secs = duration_seconds(value)
            if (zero_ok and 0 < secs < 1) or (not zero_ok and secs < 1):
                qualifier = "non-zero and " if zero_ok else ""
                self.d.warning(
                    f"service {kind} check has {label} that is {qualifier}less than 1 second "
                    f"({value}); the platform raises it to 1 second",
                    (*path, key),
                )
            elif secs > 60:
                self.d.warning(
                    f"service {kind} check has {label} greater than 1 minute ({value}); "
                    "the platform lowers it to 1 minute",
                    (*path, key),
                )
        if isinstance(check, HTTPCheck):
            self._http_check_fields(check, path)
        if check.restart_limit:
            self.d.info(
                f"{format_path((*path, 'restart_limit'))}: the platform no longer restarts "
                "machines on failing checks; taxiway does, after this many failures in a row",
                (*path, "restart_limit"),
            )

    def _http_check_fields(self, check: HTTPCheck | TopLevelCheck, path: KeyPath) -> None:
        if check.path is not None and not check.path.startswith("/"):
            self.d.warning(
                f'{format_path((*path, "path"))} "{check.path}" should start with /',
                (*path, "path"),
            )
        if check.method is not None and not re.match(r"^[A-Za-z]+$", check.method):
            self.d.error(
                f'{format_path((*path, "method"))} "{check.method}" is not an HTTP method',
                (*path, "method"),
            )

    def machine_checks(self, checks: list[MachineCheck] | None, path: KeyPath) -> None:
        for j, check in enumerate(checks or ()):
            if not check.command:
                self.d.error(f"{format_path((*path, j))} needs a command to run", (*path, j))
            if check.kill_signal is not None:
                self._signal(check.kill_signal, (*path, j, "kill_signal"))

    def sidecar_assumption(self, svc: Service | HTTPService, path: KeyPath, label: str) -> None:
        """The seeds' sidecar article assumes groups listed on one service share a machine."""
        listed = [p for p in svc.processes or () if p in (self.c.processes or {})]
        commands = {self.c.processes[p] for p in listed} if self.c.processes else set()
        if len(listed) < 2 or len(commands) < 2:
            return
        port = svc.internal_port if svc.internal_port is not None else 8080
        self.d.warning(
            f"{label} sends traffic for internal_port {port} to the process groups "
            f"{_and(listed)}, but each process group runs on its own machines, not side "
            f"by side in one: every one of them must listen on {port} itself, and they cannot "
            "reach each other on localhost (for sidecars in one machine, use [build.compose] or "
            "machine_config)",
            (*path, "processes"),
        )

    # -- top-level checks -------------------------------------------------------------------

    def top_level_checks(self) -> None:
        for name, check in (self.c.checks or {}).items():
            self.top_level_check(name, check, ("checks", name))

    def top_level_check(self, name: str, check: TopLevelCheck, path: KeyPath) -> None:
        if check.type is None:
            self.d.error(f"check '{name}' needs a type: tcp or http", path)
        if check.port is None:
            hs = self.c.http_service
            portless = [
                grp
                for grp in self.groups
                if g.applies_to(check, grp, self.default)
                and (hs is None or not g.applies_to(hs, grp, self.default))
            ]
            if portless:
                self.d.error(
                    f"check '{name}' needs a port: top-level checks require a port number, and "
                    f"process group {_and(portless)} has no [http_service] to take it from",
                    path,
                )
        else:
            self._port(check.port, (*path, "port"))
        if check.interval is not None and duration_seconds(check.interval) < 2:
            self.d.error(
                f"check '{name}' interval is too short: {check.interval}, minimum is 2 seconds",
                (*path, "interval"),
            )
        if check.timeout is not None and duration_seconds(check.timeout) > 60:
            self.d.error(
                f"check '{name}' timeout is too long: {check.timeout}, maximum is 60 seconds",
                (*path, "timeout"),
            )
        if check.type == "tcp":
            extra = [
                k
                for k in (
                    "method",
                    "path",
                    "protocol",
                    "tls_skip_verify",
                    "tls_server_name",
                    "headers",
                )
                if getattr(check, k) is not None
            ]
            if extra:
                self.d.warning(
                    f"check '{name}' is a tcp check; {', '.join(extra)} only apply to http checks",
                    (*path, extra[0]),
                )
        else:
            self._http_check_fields(check, path)
        self._groups_exist(check.processes, path, "check")

    # -- machines -----------------------------------------------------------------------

    def mounts(self) -> None:
        per_group: dict[str, list[int]] = defaultdict(list)
        for i, m in enumerate(self.c.mounts or ()):
            path: KeyPath = ("mounts", i)
            label = f"mount '{m.source}'" if m.source else f"mounts[{i}]"
            if not m.source:
                self.d.warning(
                    f"mounts[{i}] has no source (the volume's name); flyctl would send an empty "
                    f"name, taxiway names the volume '{volume_name_for(m.destination or '/data')}'",
                    path,
                )
            elif (problem := volume_name_problem(m.source)) is not None:
                self.d.warning(
                    f"{label}: source {problem}; the platform may refuse to create it "
                    "(taxiway creates it as written)",
                    (*path, "source"),
                )
            if not m.destination:
                self.d.error(f"{label} needs a destination: where the volume is mounted", path)
            elif m.destination == "/":
                self.d.error(
                    f"{label}: destination cannot be / since that's where the root file system is "
                    "mounted",
                    (*path, "destination"),
                )
            elif not m.destination.startswith("/"):
                self.d.warning(
                    f'{label}: destination "{m.destination}" is not an absolute path',
                    (*path, "destination"),
                )
            if m.initial_size is not None and parse_size_gb(m.initial_size) < 1:
                self.d.error(
                    f"{label} has an initial_size '{m.initial_size}' value which is smaller "
                    "than 1GB",
                    (*path, "initial_size"),
                )
            elif m.initial_size is not None and parse_size_gb(m.initial_size) > MAX_VOLUME_GB:
                self.d.error(
                    f"{label} has an initial_size '{m.initial_size}' value which is larger "
                    f"than {MAX_VOLUME_GB}GB, the platform's largest volume",
                    (*path, "initial_size"),
                )
            if m.snapshot_retention is not None and not 1 <= m.snapshot_retention <= 60:
                self.d.error(
                    f"{label} has a snapshot_retention value which is not between 1 and 60 days "
                    "inclusive",
                    (*path, "snapshot_retention"),
                )
            self._auto_extend(m, path, label)
            self._groups_exist(m.processes, path, "mount")
            for group in self.groups:
                if g.applies_to(m, group, self.default):
                    per_group[group].append(i)
        for group, indexes in per_group.items():
            if len(indexes) > 1:
                where = ", ".join(f"mounts[{i}]" for i in indexes)
                self.d.error(
                    f"group '{group}' has more than one [[mounts]] section defined ({where}); a "
                    "machine mounts at most one volume",
                    ("mounts", indexes[1]),
                )

    def _auto_extend(self, m: Mount, path: KeyPath, label: str) -> None:
        threshold = m.auto_extend_size_threshold
        increment = (
            parse_size_gb(m.auto_extend_size_increment) if m.auto_extend_size_increment else 0
        )
        limit = parse_size_gb(m.auto_extend_size_limit) if m.auto_extend_size_limit else 0
        if not (threshold or increment or limit):
            return
        if threshold and not increment:
            self.d.error(
                f"{label}: auto_extend_size_increment is required with auto_extend_size_threshold",
                (*path, "auto_extend_size_threshold"),
            )
        if not threshold:
            self.d.error(
                f"{label}: auto_extend_size_increment and _limit need auto_extend_size_threshold",
                path,
            )
        elif not 50 <= threshold <= 99:
            self.d.error(
                f"{label}: auto_extend_size_threshold must be between 50 and 99",
                (*path, "auto_extend_size_threshold"),
            )
        if increment and not 1 <= increment <= 100:
            self.d.error(
                f"{label}: auto_extend_size_increment must be between 1GB and 100GB",
                (*path, "auto_extend_size_increment"),
            )
        if limit and not 1 <= limit <= MAX_VOLUME_GB:
            self.d.error(
                f"{label}: auto_extend_size_limit must be between 1GB and {MAX_VOLUME_GB}GB",
                (*path, "auto_extend_size_limit"),
            )

    def vms(self) -> None:
        for i, vm in enumerate(self.c.vm or ()):
            self.compute(vm, ("vm", i))
            self._groups_exist(vm.processes, ("vm", i), "[[vm]] section")
        specific: dict[str, int] = {}
        for i, vm in enumerate(self.c.vm or ()):
            for group in vm.processes or ():
                if group in specific:
                    self.d.warning(
                        f"group '{group}' is named by vm[{specific[group]}] and vm[{i}]; the "
                        "later one wins",
                        ("vm", i, "processes"),
                    )
                specific[group] = i

    def compute(self, vm: Compute, path: KeyPath) -> None:
        if vm.size is not None and vm.size not in PRESETS:
            self.d.error(
                f'{format_path((*path, "size"))} "{vm.size}" is not a machine size; sizes are '
                + ", ".join(PRESETS),
                (*path, "size"),
            )
        if vm.cpus is not None and vm.cpus not in CPU_COUNTS:
            self.d.error(
                f"{format_path((*path, 'cpus'))} is {vm.cpus}; valid values are 1, 2, 4, 8, or 16",
                (*path, "cpus"),
            )
        if vm.gpus is not None:
            if vm.gpus not in GPU_COUNTS:
                self.d.error(
                    f"{format_path((*path, 'gpus'))} is {vm.gpus}; valid values are 1, 2, 4, 8",
                    (*path, "gpus"),
                )
            if not vm.gpu_kind:
                self.d.error(
                    f"{format_path((*path, 'gpus'))}: setting gpus requires also setting gpu_kind",
                    (*path, "gpus"),
                )
        if vm.gpu_kind is not None and vm.gpu_kind not in GPU_KINDS:
            self.d.error(
                f'{format_path((*path, "gpu_kind"))} "{vm.gpu_kind}" is not a GPU kind; valid '
                "values are " + ", ".join(GPU_KINDS),
                (*path, "gpu_kind"),
            )
        if vm.memory is not None:
            mb = parse_size_mb(vm.memory)
            if mb % 256:
                self.d.warning(
                    f"{format_path((*path, 'memory'))} is {mb} MB; the platform sizes memory in "
                    "steps of 256 MB",
                    (*path, "memory"),
                )
        if vm.memory_mb is not None and vm.memory_mb <= 0:
            self.d.error(
                f"{format_path((*path, 'memory_mb'))} must be more than 0", (*path, "memory_mb")
            )

    def restarts(self) -> None:
        for i, r in enumerate(self.c.restart or ()):
            path: KeyPath = ("restart", i)
            self._groups_exist(r.processes, path, "restart policy")
            if r.retries is not None and r.retries < 0:
                self.d.error(f"restart[{i}].retries must not be negative", (*path, "retries"))
            if r.retries and r.policy in ("always", "never"):
                self.d.info(
                    f"restart[{i}].retries only counts with the on-failure policy",
                    (*path, "retries"),
                )

    def metrics(self) -> None:
        for i, m in enumerate(self.c.metrics or ()):
            path: KeyPath = ("metrics", i)
            if m.port is None:
                self.d.error(f"metrics[{i}] needs a port", path)
            else:
                self._port(m.port, (*path, "port"))
            if not m.path:
                self.d.error(f'metrics[{i}] needs a path, such as "/metrics"', path)
            self._groups_exist(m.processes, path, "metrics section")
        for group in self.groups:
            hits = g.matching(self.c.metrics, group, self.default)
            if len(hits) > 1:
                self.d.warning(
                    f"group '{group}' matches {len(hits)} [[metrics]] sections; only the first "
                    f"(metrics[{hits[0][0]}]) is scraped",
                    ("metrics", hits[1][0]),
                )

    def statics(self) -> None:
        statics = self.c.statics or []
        if len(statics) > MAX_STATICS:
            self.d.error(
                f"there are {len(statics)} [[statics]] sections; you can have up to 10 mappings "
                "in an application",
                ("statics", MAX_STATICS),
            )
        seen: dict[str, int] = {}
        workdir = self._workdir() if statics else None
        for i, s in enumerate(statics):
            path: KeyPath = ("statics", i)
            if not s.guest_path:
                self.d.error(f"statics[{i}] needs a guest_path", path)
            else:
                refused = static_paths.refusal(s.guest_path, workdir)
                if (
                    refused is not None
                    and static_paths.refusal(s.guest_path, workdir, in_image=True) is None
                    and self._has_image()
                ):
                    self.d.warning(
                        f'statics[{i}].guest_path "{s.guest_path}" is a folder of the image: '
                        "the docker driver serves it from there; the process and namespace "
                        "drivers send requests under it to the app",
                        (*path, "guest_path"),
                    )
                elif refused is not None:
                    # Valid on the platform (a folder of the image), so a warning; the edge
                    # sends these requests to the app.
                    self.d.warning(
                        f'statics[{i}].guest_path "{s.guest_path}" is not served by taxiway: '
                        f"{refused}; requests under it go to the app",
                        (*path, "guest_path"),
                    )
            if not s.url_prefix:
                self.d.error(f"statics[{i}] needs a url_prefix", path)
                continue
            if not s.url_prefix.startswith("/"):
                self.d.warning(
                    f'statics[{i}].url_prefix "{s.url_prefix}" should start with /',
                    (*path, "url_prefix"),
                )
            key = s.url_prefix.rstrip("/") or "/"
            if key in seen:
                self.d.error(
                    f'statics[{i}] and statics[{seen[key]}] both use url_prefix "{s.url_prefix}"; '
                    "the URL prefix should not overlap",
                    (*path, "url_prefix"),
                )
            seen.setdefault(key, i)
            if s.index_document and not s.tigris_bucket:
                self.d.warning(
                    f"statics[{i}].index_document only works for statics served from a "
                    "tigris_bucket",
                    (*path, "index_document"),
                )

    def _has_image(self) -> bool:
        """Whether the app has an image to run (the docker driver can serve its folders)."""
        from taxiway.plan.dockerfile import has_image

        return has_image(self.c, self.base_dir)

    def _workdir(self) -> str | None:
        """The image's WORKDIR (from the Dockerfile), which statics map to the app folder."""
        from taxiway.plan.dockerfile import image_config  # reads the Dockerfile, if any

        try:
            return image_config(self.c, self.base_dir).workdir
        except Exception:  # an unreadable Dockerfile is reported by the build rules
            return None

    def files(self) -> None:
        for i, f in enumerate(self.c.files or ()):
            path: KeyPath = ("files", i)
            if not f.guest_path:
                self.d.error(f"files[{i}] needs a guest_path", path)
            elif not f.guest_path.startswith("/"):
                self.d.error(
                    f'files[{i}].guest_path "{f.guest_path}" must be an absolute path',
                    (*path, "guest_path"),
                )
            sources = [
                k for k in ("raw_value", "local_path", "secret_name") if getattr(f, k) is not None
            ]
            if len(sources) != 1:
                self.d.error(
                    f"files[{i}] needs exactly one of raw_value, local_path or secret_name"
                    + (f" (it has {' and '.join(sources)})" if sources else ""),
                    path,
                )
            if f.local_path:
                local = self.base_dir / f.local_path
                if not local.is_file():
                    self.d.error(
                        f'files[{i}].local_path "{f.local_path}" does not exist (paths are read '
                        "from the folder fly.toml is in)",
                        (*path, "local_path"),
                    )
            if f.raw_value and _looks_base64(f.raw_value):
                self.d.warning(
                    f"files[{i}].raw_value looks base64-encoded; the reference says to encode it, "
                    "but flyctl (and so the platform) writes raw_value as it is, so the machine "
                    "gets the encoded text",
                    (*path, "raw_value"),
                )
            if len(sources) == 1 and getattr(f, sources[0]) == "":
                self.d.info(
                    f"files[{i}] has an empty {sources[0]}: the file is removed on the next deploy",
                    path,
                )
            self._groups_exist(f.processes, path, "file")

    # -- process groups -------------------------------------------------------------------

    def _groups_exist(self, processes: list[str] | None, path: KeyPath, what: str) -> None:
        for k, name in enumerate(processes or ()):
            if name not in self.groups:
                defined = (
                    "the app defines " + ", ".join(self.groups)
                    if self.c.processes
                    else "without [processes] the only group is app"
                )
                self.d.error(
                    f"{format_path(path)}: {what} names the process group '{name}', but no "
                    f"process group has that name ({defined})",
                    (*path, "processes", k),
                )

    def containers(self) -> None:
        """[build.compose] / machine_config: what `taxiway.plan.containers` can't read is
        an error, what it leaves out a warning. ([build.compose] is no way to build: the
        image is still built as [build] says, so it is not among `build`'s ways.)"""
        from taxiway.plan.containers import (
            ComposeFileMissing,
            ContainerConfigError,
            read_containers,
        )

        try:
            layout = read_containers(self.c, self.base_dir)
        except ComposeFileMissing as exc:
            self.d.warning(f"{exc}; the docker driver needs it to run the machine", exc.path)
            return
        except ContainerConfigError as exc:
            self.d.error(str(exc), exc.path)
            return
        for message, path in layout.notes if layout is not None else ():
            self.d.warning(message, path)

    def unscoped_items(self) -> None:
        """In a multi-group app, an item without ``processes`` serves only the default group."""
        if not self.multi_group:
            return
        for key in ("mounts", "metrics", "restart"):
            for i, item in enumerate(getattr(self.c, key) or ()):
                if not item.processes:
                    self.d.warning(
                        f"{key}[{i}] has no processes, so it applies only to the default group "
                        f"'{self.default}', not to every group",
                        (key, i),
                    )
        for name, check in (self.c.checks or {}).items():
            if not check.processes:
                self.d.warning(
                    f"check '{name}' has no processes, so it applies only to the default group "
                    f"'{self.default}', not to every group",
                    ("checks", name),
                )


def _and(names: list[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _looks_base64(text: str) -> bool:
    stripped = text.strip()
    if len(stripped) < 8 or len(stripped) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]+=*", stripped):
        return False
    try:
        base64.b64decode(stripped, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return True


__all__ = ["HANDLERS", "validate"]
