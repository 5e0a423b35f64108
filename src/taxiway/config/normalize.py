"""Rewrite every spelling flyctl accepts into today's form, and say what changed.

flyctl applies a list of "patches" to the raw map before decoding it (flyctl
`internal/appconfig/patches.go`, `serde.go`). taxiway accepts the same inputs so real
configs load, and reports each rewrite: legacy *spellings* that mean the same thing are
``info``; keys that are dropped or read differently from flyctl are ``warning``s that
say what happens to them; values that cannot be read at all are ``error``s and are
removed so the rest of the file can still be checked.

Durations end up as Go-style strings and sizes as strings with units, so the
normalised config reads back the same in TOML, JSON or YAML, and in flyctl.
"""

from __future__ import annotations

import copy
import datetime
import math
import shlex
from typing import Any

import msgspec

from taxiway.config.diagnostics import Diagnostics, KeyPath, describe_value, format_path
from taxiway.config.units import (
    UnitError,
    format_duration_ns,
    format_size_gb,
    format_size_mb,
    parse_duration_ns,
    parse_size_gb,
    parse_size_mb,
)
from taxiway.config.written_floats import restore_written

MS = 1_000_000
SECOND = 1_000_000_000


class Normalized(msgspec.Struct):
    """The normalised raw config and how its paths map back to the file."""

    data: dict[str, Any]
    #: Path prefixes in ``data`` that were written elsewhere in the file.
    aliases: dict[KeyPath, KeyPath] = msgspec.field(default_factory=dict)

    def source_path(self, path: KeyPath) -> KeyPath:
        """Where ``path`` (in the normalised data) was written in the file."""
        return _source_path(self.aliases, path)


def _source_path(aliases: dict[KeyPath, KeyPath], path: KeyPath) -> KeyPath:
    for n in range(len(path), 0, -1):
        original = aliases.get(path[:n])
        if original is not None:
            return original + path[n:]
    return path


class _Reporter:
    """Reports with the place in the file known at that moment: normalised paths are mapped
    through the aliases recorded so far (``as_written`` paths are already file paths)."""

    def __init__(self, diags: Diagnostics, aliases: dict[KeyPath, KeyPath]) -> None:
        self._diags = diags
        self._aliases = aliases

    def _where(self, path: KeyPath, as_written: bool) -> KeyPath:
        return path if as_written else _source_path(self._aliases, path)

    def error(self, message: str, path: KeyPath, *, as_written: bool = False) -> None:
        self._diags.error(message, path, file_path=self._where(path, as_written))

    def warning(self, message: str, path: KeyPath, *, as_written: bool = False) -> None:
        self._diags.warning(message, path, file_path=self._where(path, as_written))

    def info(self, message: str, path: KeyPath, *, as_written: bool = False) -> None:
        self._diags.info(message, path, file_path=self._where(path, as_written))


def normalize(
    data: dict[str, Any], diags: Diagnostics, *, float_texts: dict[float, str] | None = None
) -> Normalized:
    """Return a normalised deep copy of ``data``; problems go to ``diags``.

    ``float_texts`` (how the file spelled its floats) makes messages quote those floats
    as written; the copy holds `WrittenFloat` values until the type check.
    """
    cfg = copy.deepcopy(data)
    restore_written(cfg, float_texts or {})
    return _Normalizer(diags).run(cfg)


class _Normalizer:
    def __init__(self, diags: Diagnostics) -> None:
        self.aliases: dict[KeyPath, KeyPath] = {}
        self.d = _Reporter(diags, self.aliases)

    # -- entry point ---------------------------------------------------------------

    def run(self, cfg: dict[str, Any]) -> Normalized:
        self._top(cfg)
        self._env(cfg)
        self._processes(cfg)
        self._build(cfg)
        self._experimental(cfg)
        self._deploy(cfg)
        self._vm(cfg)
        self._mounts(cfg)
        self._metrics(cfg)
        self._checks(cfg)
        self._services(cfg)
        self._http_service(cfg)
        for key in ("files", "statics", "restart", "machine_checks"):
            items = self._as_list(cfg, key, (key,))
            if key == "machine_checks":
                for i, check in enumerate(items or ()):
                    self._machine_check(check, (key, i))
        return Normalized(cfg, self.aliases)

    # -- top level -------------------------------------------------------------------

    def _top(self, cfg: dict[str, Any]) -> None:
        self._duration(cfg, "kill_timeout", ("kill_timeout",), bare=SECOND, truncate=True)
        if "org" in cfg:
            self.d.warning(
                "org is an Apps v1 key that flyctl no longer reads (the org comes from the app); "
                "taxiway ignores it",
                ("org",),
            )
            del cfg["org"]

    def _env(self, cfg: dict[str, Any]) -> None:
        env = cfg.get("env")
        if isinstance(env, list):
            merged: dict[str, Any] = {}
            for i, item in enumerate(env):
                if isinstance(item, dict):
                    for k in item:
                        self.aliases[("env", k)] = ("env", i, k)
                    merged.update(item)
                else:
                    self.d.error(f"env[{i}] must be a table of NAME = value pairs", ("env", i))
            self.d.info("[[env]] as a list of tables is merged into one [env] table", ("env",))
            cfg["env"] = env = merged
        if not isinstance(env, dict):
            return
        for name, value in list(env.items()):
            if isinstance(value, str):
                continue
            text = _scalar_text(value)
            if text is None:
                self.d.error(
                    f"env.{name} must be a string, not {describe_value(value)}", ("env", name)
                )
                del env[name]
                continue
            self.d.warning(
                f"env.{name} is {describe_value(value)}; environment values are strings, "
                f'so it is read as "{text}" (quote it to say so)',
                ("env", name),
            )
            env[name] = text

    def _processes(self, cfg: dict[str, Any]) -> None:
        procs = cfg.get("processes")
        if not isinstance(procs, list):
            return
        named = [p for p in procs if isinstance(p, dict) and p]
        if not named:
            self.d.warning(
                "processes is an empty list (the shape an old API returned); it is ignored, "
                "so the app has one process group, app",
                ("processes",),
            )
            del cfg["processes"]
            return
        result: dict[str, Any] = {}
        for i, item in enumerate(procs):
            if not isinstance(item, dict) or not item:
                continue
            if "name" not in item:
                self.d.error(f"processes[{i}] has no name", ("processes", i))
                continue
            name = str(item["name"])
            result[name] = item.get("command", "")
            self.aliases[("processes", name)] = ("processes", i)
        self.d.info(
            "[[processes]] with name/command tables is the old form of [processes] name = command",
            ("processes",),
        )
        cfg["processes"] = result

    def _build(self, cfg: dict[str, Any]) -> None:
        build = cfg.get("build")
        if isinstance(build, dict) and "build_target" in build:
            if "build-target" not in build:
                build["build-target"] = build["build_target"]
                self.aliases[("build", "build-target")] = ("build", "build_target")
            del build["build_target"]
            self.d.info("build_target is spelled build-target today", ("build", "build_target"))

    def _experimental(self, cfg: dict[str, Any]) -> None:
        exp = cfg.get("experimental")
        if not isinstance(exp, dict):
            return
        path = ("experimental",)
        for key in ("cmd", "entrypoint", "exec"):
            value = exp.get(key)
            if isinstance(value, str):
                exp[key] = [value]
                if " " in value.strip():
                    self.d.warning(
                        f"experimental.{key} is one string, so it runs as a single program named "
                        f'"{value}" (flyctl does not split it); write a list to pass arguments',
                        (*path, key),
                    )
        if "kill_timeout" in exp:
            value = exp.pop("kill_timeout")
            if "kill_timeout" not in cfg:
                cfg["kill_timeout"] = value
                self.aliases[("kill_timeout",)] = (*path, "kill_timeout")
                self._duration(cfg, "kill_timeout", ("kill_timeout",), bare=SECOND, truncate=True)
            self.d.info(
                "experimental.kill_timeout is the old place of the top-level kill_timeout",
                (*path, "kill_timeout"),
            )
        legacy_metrics = {k: exp.pop(k) for k in ("metrics_port", "metrics_path") if k in exp}
        if legacy_metrics:
            if "metrics" not in cfg and "metric" not in cfg:
                cfg["metrics"] = {k.removeprefix("metrics_"): v for k, v in legacy_metrics.items()}
                for k in legacy_metrics:
                    self.aliases[("metrics", 0, k.removeprefix("metrics_"))] = (*path, k)
            self.d.info(
                "experimental.metrics_port/metrics_path are the old form of [metrics] port/path",
                (*path, next(iter(legacy_metrics))),
            )
        for key, why in _DROPPED_EXPERIMENTAL.items():
            if key in exp:
                del exp[key]
                self.d.warning(f"experimental.{key} {why}", (*path, key))
        for key, why in _IGNORED_EXPERIMENTAL.items():
            if exp.get(key):
                self.d.warning(f"experimental.{key} {why}", (*path, key))

    def _deploy(self, cfg: dict[str, Any]) -> None:
        deploy = cfg.get("deploy")
        if not isinstance(deploy, dict):
            return
        for key in ("wait_timeout", "release_command_timeout"):
            self._duration(
                deploy,
                key,
                ("deploy", key),
                bare=SECOND,
                flyctl_reads="nanoseconds",
            )
        vm = deploy.get("release_command_vm")
        if isinstance(vm, dict):
            self._compute(vm, ("deploy", "release_command_vm"))

    # -- machines -------------------------------------------------------------------

    def _vm(self, cfg: dict[str, Any]) -> None:
        items: list[Any] = []
        for key in ("vm", "compute", "computes"):
            if key not in cfg:
                continue
            got = self._as_list(cfg, key, (key,), rename_to="vm", offset=len(items))
            if key != "vm":
                self.d.info(f"[{key}] is an old name of [[vm]]", (key,))
            items.extend(got or [])
            cfg.pop(key, None)
        if items:
            cfg["vm"] = items
        for i, vm in enumerate(items):
            self._compute(vm, ("vm", i))

    def _compute(self, vm: dict[str, Any], path: KeyPath) -> None:
        if "memory" in vm:
            value = vm["memory"]
            try:
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise UnitError(f"{describe_value(value)} is not a size")
                mb = parse_size_mb(value)
            except UnitError as exc:
                self.d.error(f"{format_path((*path, 'memory'))}: {exc}", (*path, "memory"))
                del vm["memory"]
            else:
                if mb <= 0:
                    self.d.error(
                        f"{format_path((*path, 'memory'))} must be more than 0", (*path, "memory")
                    )
                    del vm["memory"]
                else:
                    vm["memory"] = format_size_mb(mb)
        if isinstance(vm.get("kernel_args"), str):
            vm["kernel_args"] = shlex.split(vm["kernel_args"])

    def _mounts(self, cfg: dict[str, Any]) -> None:
        items: list[Any] = []
        for key in ("mounts", "mount"):
            if key not in cfg:
                continue
            got = self._as_list(cfg, key, (key,), rename_to="mounts", offset=len(items))
            if key == "mount":
                self.d.info("[mount] is an old name of [[mounts]]", (key,))
            items.extend(got or [])
            cfg.pop(key, None)
        if items:
            cfg["mounts"] = items
        for i, mount in enumerate(items):
            path = ("mounts", i)
            self._volume_size(mount, "initial_size", path)
            for key in ("auto_extend_size_increment", "auto_extend_size_limit"):
                if isinstance(mount.get(key), int | float) and not isinstance(mount[key], bool):
                    self.d.warning(
                        f"{format_path((*path, key))} is a bare number; taxiway reads it as "
                        f'gigabytes, but flyctl rejects numbers here: write "{mount[key]}gb"',
                        (*path, key),
                    )
                self._volume_size(mount, key, path)
            if "encrypted" in mount:
                del mount["encrypted"]
                self.d.warning(
                    "mounts.encrypted is not a fly.toml key: volumes are encrypted by default "
                    "(use `fly volumes create --no-encryption` to opt out); taxiway ignores it",
                    (*path, "encrypted"),
                )

    def _volume_size(self, mount: dict[str, Any], key: str, path: KeyPath) -> None:
        if key not in mount:
            return
        value = mount[key]
        where = format_path((*path, key))
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise UnitError(f"{describe_value(value)} is not a size")
            gb = parse_size_gb(value)
        except UnitError as exc:
            source = mount.get("source", "?")
            self.d.error(f"mount '{source}' has an unreadable {key}: {exc}", (*path, key))
            del mount[key]
            return
        if gb < 0:
            self.d.error(f"{where} must not be negative", (*path, key))
            del mount[key]
            return
        mount[key] = format_size_gb(gb)

    def _metrics(self, cfg: dict[str, Any]) -> None:
        items: list[Any] = []
        for key in ("metrics", "metric"):
            if key not in cfg:
                continue
            got = self._as_list(cfg, key, (key,), rename_to="metrics", offset=len(items))
            if key == "metric":
                self.d.info("[metric] is an old name of [[metrics]]", (key,))
            items.extend(got or [])
            cfg.pop(key, None)
        if items:
            cfg["metrics"] = items

    # -- checks ------------------------------------------------------------------------

    def _checks(self, cfg: dict[str, Any]) -> None:
        checks = cfg.get("checks")
        if isinstance(checks, list):
            if not checks:
                del cfg["checks"]
                return
            as_map: dict[str, Any] = {}
            for i, item in enumerate(checks):
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or not name:
                    self.d.error(
                        f"checks[{i}] needs a name: top-level checks are [checks.NAME] tables",
                        ("checks", i),
                    )
                    continue
                if name in as_map:
                    self.d.error(f"two top-level checks are named '{name}'", ("checks", i))
                    continue
                item = dict(item)
                del item["name"]
                as_map[name] = item
                self.aliases[("checks", name)] = ("checks", i)
            self.d.info("[[checks]] with a name key is the list form of [checks.NAME]", ("checks",))
            cfg["checks"] = checks = as_map
        if isinstance(checks, dict):
            for name, check in checks.items():
                if isinstance(check, dict):
                    self._check(check, ("checks", name), bare=MS)

    def _check(
        self,
        check: dict[str, Any],
        path: KeyPath,
        *,
        bare: int,
        flyctl_reads: str | None = None,
    ) -> None:
        for key in ("interval", "timeout", "grace_period"):
            self._duration(check, key, (*path, key), bare=bare, flyctl_reads=flyctl_reads)
        if "headers" in check:
            self._headers(check, path)

    def _headers(self, check: dict[str, Any], path: KeyPath) -> None:
        raw = check["headers"]
        hpath = (*path, "headers")
        headers: dict[str, str] = {}
        if isinstance(raw, list):
            for i, item in enumerate(raw):
                if isinstance(item, dict) and "name" in item:
                    value = item.get("value", "")
                    headers[str(item["name"])] = (
                        value if isinstance(value, str) else _scalar_text(value) or ""
                    )
                    self.aliases[(*hpath, str(item["name"]))] = (*hpath, i)
                else:
                    self.d.error(
                        f"{format_path((*hpath, i))} must be a table with name and value",
                        (*hpath, i),
                    )
        elif isinstance(raw, dict):
            for name, value in raw.items():
                if isinstance(value, list):  # several values: flyctl sends one; keep the first
                    self.d.warning(
                        f"{format_path((*hpath, name))} has several values; only the first is sent",
                        (*hpath, name),
                    )
                    value = value[0] if value else ""
                text = value if isinstance(value, str) else _scalar_text(value)
                if text is None:
                    self.d.error(
                        f"{format_path((*hpath, name))} must be a string, "
                        f"not {describe_value(value)}",
                        (*hpath, name),
                    )
                    continue
                headers[name] = text
        else:
            self.d.error(
                f"{format_path(hpath)} must be a table of header = value, "
                f"not {describe_value(raw)}",
                hpath,
            )
            del check["headers"]
            return
        check["headers"] = headers

    def _machine_check(self, check: Any, path: KeyPath) -> None:
        if not isinstance(check, dict):
            return
        self._duration(
            check, "kill_timeout", (*path, "kill_timeout"), bare=SECOND, flyctl_reads="nanoseconds"
        )
        for key in ("command", "entrypoint"):
            if isinstance(check.get(key), str):
                check[key] = [check[key]]

    # -- services ----------------------------------------------------------------------

    def _services(self, cfg: dict[str, Any]) -> None:
        if "services" not in cfg:
            return
        services = self._as_list(cfg, "services", ("services",))
        if services is None:
            return
        kept = []
        for i, service in enumerate(services):
            if not service:
                self.d.info(
                    "an empty [[services]] table is ignored", ("services", i), as_written=True
                )
                continue
            new_index = len(kept)
            if new_index != i:
                self.aliases[("services", new_index)] = ("services", i)
            kept.append(service)
            self._service(service, ("services", new_index))
        if kept:
            cfg["services"] = kept
        else:
            del cfg["services"]

    def _service(self, service: dict[str, Any], path: KeyPath) -> None:
        self._int_from_string(service, "internal_port", path)
        self._autostop(service, path)
        conc = service.get("concurrency")
        if isinstance(conc, str):
            soft, sep, hard = conc.partition(",")
            try:
                if not sep:
                    raise ValueError
                service["concurrency"] = {
                    "type": "requests",
                    "soft_limit": int(soft),
                    "hard_limit": int(hard),
                }
            except ValueError:
                self.d.error(
                    f'{format_path((*path, "concurrency"))} = "{conc}" is not a table nor the old '
                    '"soft,hard" form',
                    (*path, "concurrency"),
                )
                del service["concurrency"]
            else:
                self.d.info(
                    f'concurrency = "{conc}" is the old form of [services.concurrency] '
                    f'type = "requests", soft_limit = {int(soft)}, hard_limit = {int(hard)}',
                    (*path, "concurrency"),
                )
        ports = self._as_list(service, "ports", (*path, "ports"))
        if ports == []:  # no ports, as when the key is left out
            del service["ports"]
        for j, port in enumerate(ports or ()):
            for key in ("port", "start_port", "end_port"):
                self._int_from_string(port, key, (*path, "ports", j))
        for kind in ("tcp_checks", "http_checks"):
            checks = self._as_list(service, kind, (*path, kind))
            if checks == []:
                del service[kind]
            for j, check in enumerate(checks or ()):
                self._check(check, (*path, kind, j), bare=MS)
        machine_checks = self._as_list(service, "machine_checks", (*path, "machine_checks"))
        for j, check in enumerate(machine_checks or ()):
            self._machine_check(check, (*path, "machine_checks", j))
        if "script_checks" in service:
            del service["script_checks"]
            self.d.warning(
                "script_checks are Nomad-era (Apps v1) checks that the Machines platform ignores; "
                "taxiway ignores them too (use [[services.http_checks]] or [checks])",
                (*path, "script_checks"),
            )

    def _http_service(self, cfg: dict[str, Any]) -> None:
        svc = cfg.get("http_service")
        if not isinstance(svc, dict):
            return
        path = ("http_service",)
        self._int_from_string(svc, "internal_port", path)
        self._autostop(svc, path)
        checks = self._as_list(svc, "checks", (*path, "checks"))
        for j, check in enumerate(checks or ()):
            self._check(check, (*path, "checks", j), bare=MS, flyctl_reads="nanoseconds")
        machine_checks = self._as_list(svc, "machine_checks", (*path, "machine_checks"))
        for j, check in enumerate(machine_checks or ()):
            self._machine_check(check, (*path, "machine_checks", j))

    def _autostop(self, service: dict[str, Any], path: KeyPath) -> None:
        value = service.get("auto_stop_machines")
        if isinstance(value, bool):
            service["auto_stop_machines"] = "stop" if value else "off"
            self.d.info(
                f"auto_stop_machines = {str(value).lower()} is the legacy spelling of "
                f'"{service["auto_stop_machines"]}"',
                (*path, "auto_stop_machines"),
            )

    # -- shared helpers -----------------------------------------------------------------

    def _as_list(
        self,
        obj: dict[str, Any],
        key: str,
        path: KeyPath,
        *,
        rename_to: str | None = None,
        offset: int = 0,
    ) -> list[Any] | None:
        """Make ``obj[key]`` a list of tables (a single table becomes one element).

        Elements that are not tables are reported and dropped. ``rename_to``/``offset``
        record aliases when several legacy keys merge into one list.
        """
        if key not in obj:
            return None
        value = obj[key]
        target = (*path[:-1], rename_to or key)
        if isinstance(value, dict):
            value = [value] if value else []
            self.aliases[(*target, offset)] = path
        elif isinstance(value, list):
            kept = []
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    if offset + len(kept) != i or target != path:
                        self.aliases[(*target, offset + len(kept))] = (*path, i)
                    kept.append(item)
                else:
                    where = (*_source_path(self.aliases, path), i)
                    self.d.error(
                        f"{format_path(where)} must be a table, not {describe_value(item)}",
                        where,
                        as_written=True,
                    )
            value = kept
        else:
            self.d.error(
                f"{format_path(path)} must be a table or a list of tables, "
                f"not {describe_value(value)}",
                path,
            )
            del obj[key]
            return None
        obj[key] = value
        return value

    def _duration(
        self,
        obj: dict[str, Any],
        key: str,
        path: KeyPath,
        *,
        bare: int,
        truncate: bool = False,
        flyctl_reads: str | None = None,
    ) -> None:
        if key not in obj:
            return
        value = obj[key]
        where = format_path(path)
        if value == "":
            del obj[key]
            return
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise UnitError(f'a duration like "10s" is expected, not {describe_value(value)}')
            if (isinstance(value, float) and not math.isfinite(value)) or (
                isinstance(value, int | float) and abs(value) > 1e12
            ):
                raise UnitError(f"{value} is not a usable duration")
            if isinstance(value, str):
                ns = parse_duration_ns(value)
            else:
                ns = int(value) * bare if truncate else round(value * bare)
                if flyctl_reads and value:
                    unit = "seconds" if bare == SECOND else "milliseconds"
                    self.d.warning(
                        f"{where} = {value} is a bare number: taxiway reads it as {unit} as the "
                        f"reference does, but flyctl reads it as {flyctl_reads}; "
                        f'write "{format_duration_ns(ns)}" to be read the same everywhere',
                        path,
                    )
        except UnitError as exc:
            self.d.error(f"{where}: {exc}", path)
            del obj[key]
            return
        if ns < 0:
            self.d.error(f"{where} must not be negative", path)
            del obj[key]
            return
        obj[key] = format_duration_ns(ns)

    def _int_from_string(self, obj: dict[str, Any], key: str, path: KeyPath) -> None:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = int(value.strip())
            except ValueError:
                return  # left for the type check to report
            self.d.info(
                f'{format_path((*path, key))} = "{value}" is a number written as a string',
                (*path, key),
            )


_DROPPED_EXPERIMENTAL = {
    "allowed_public_ports": (
        "is an Apps v1 setting the Machines platform ignores; public ports come from "
        "[[services.ports]], and taxiway ignores it too"
    ),
    "private_network": (
        "is an Apps v1 setting: every app is on its private network now; taxiway ignores it"
    ),
}
_IGNORED_EXPERIMENTAL = {
    "enable_consul": "is read but has no effect on the Machines platform, nor in taxiway",
    "enable_etcd": "is read but has no effect on the Machines platform, nor in taxiway",
    "lazy_load_images": "is no longer supported by the platform (removed in 2025); it is ignored",
}


def _scalar_text(value: Any) -> str | None:
    """How flyctl stringifies a non-string scalar; None for tables and lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return None
