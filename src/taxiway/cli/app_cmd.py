"""`taxiway up|down|status|scale|machine|logs`: running the app and asking its daemon."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from taxiway.api.client import Client, DaemonNotRunning
from taxiway.api.paths import AppPaths
from taxiway.cli.config_cmd import load_valid
from taxiway.cli.json_result import people_to_stderr, print_json
from taxiway.config.loader import LoadedConfig
from taxiway.config.names import app_name_for

#: The drivers `--driver` and `TAXIWAY_DRIVER` may name.
from taxiway.daemon_options import DRIVER_NAMES as DRIVERS
from taxiway.daemon_options import DaemonOptions
from taxiway.errors import TaxiwayError

#: Sets the driver when `--driver` isn't given: a CI job or a test suite can pin it
#: once instead of depending on what `auto` finds on the host.
DRIVER_VARIABLE = "TAXIWAY_DRIVER"

#: How long `up -d` waits for the daemon to report every machine started.
DETACH_WAIT_S = 120.0


def client_for(config: str | None) -> tuple[Client, str, AppPaths]:
    """The daemon client, app name and state paths for the config at ``config``."""
    from taxiway.config.loader import load_config

    loaded = load_config(config)
    paths = AppPaths.for_config(loaded.source.path)
    return Client(paths.socket), app_name_for(loaded.source.path, loaded.config.app), paths


# -- up / down -------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    options = daemon_options(args)
    as_json = getattr(args, "json", False)
    if as_json and not args.detach:
        raise TaxiwayError(
            "up --json needs -d: in the foreground `up` prints the machines' output until "
            "Ctrl-C and has no result to print; use `taxiway up -d --json`"
        )
    if args.detach:
        wait_timeout = getattr(args, "wait_timeout", None)
        if wait_timeout is not None:
            from taxiway.cli.deploy_cmd import duration_flag

            duration_flag(wait_timeout, "--wait-timeout")  # a bad flag fails before anything runs
        with people_to_stderr(as_json) as stdout:
            return _up_detached(
                args.config,
                options,
                wait=not getattr(args, "no_wait", False),
                timeout=wait_timeout,
                json_out=stdout if as_json else None,
            )
    loaded, paths = _checked_for_up(args.config)
    from taxiway.cli.output import LogPrinter
    from taxiway.daemon import run_loop, serve

    printer = LogPrinter(sys.stdout)

    def ready(runtime: Any) -> None:
        started = sum(1 for m in runtime.machines.values() if m.state.value == "started")
        printer.banner(
            f"{runtime.app}: {started} of {len(runtime.machines)} machines started "
            f"(state in {paths.state_dir}; Ctrl-C stops the app)"
        )
        printer.banner(driver_line(runtime.driver.name, runtime.driver_reason))
        for line in edge_lines(runtime.status()["edge"]):
            printer.banner(line)

    def hint(machine: Any, text: str) -> None:
        printer.banner(f"hint: {text}")

    return run_loop(
        serve(
            loaded,
            options=options,
            on_ready=ready,
            on_machine=printer.follow,
            on_release_output=printer.print_line,
            on_hint=hint,
        ),
        loaded,
    )


def daemon_options(args: argparse.Namespace) -> DaemonOptions:
    """The daemon's options from `up`'s flags (commands that start a daemon for you pass
    fewer flags: the rest keep their defaults)."""
    from taxiway.config.units import UnitError, duration_seconds

    autostop = getattr(args, "autostop_after", None)
    autostop_s = None
    if autostop is not None:
        try:
            autostop_s = duration_seconds(autostop)
        except UnitError:
            autostop_s = -1.0
        if not autostop_s > 0:
            raise TaxiwayError(
                f"--autostop-after {autostop}: give a positive duration such as 3s or 5m"
            )
    driver, asked_by = getattr(args, "driver", None), "--driver"
    if driver is None:
        driver, asked_by = os.environ.get(DRIVER_VARIABLE) or "auto", DRIVER_VARIABLE
        if driver not in DRIVERS:
            raise TaxiwayError(
                f"{DRIVER_VARIABLE}={driver} names no driver; use {', '.join(DRIVERS)}"
            )
    metrics_port = getattr(args, "metrics_port", None)
    if metrics_port is not None and not 0 < metrics_port < 65536:
        raise TaxiwayError(f"--metrics-port {metrics_port}: give a port between 1 and 65535")
    return DaemonOptions(
        driver=driver,
        driver_asked_by=asked_by,
        edge_host=getattr(args, "edge_host", None) or "127.0.0.1",
        autostop_after_s=autostop_s,
        metrics_port=metrics_port,
    )


def _checked_for_up(config: str | None) -> tuple[LoadedConfig, AppPaths]:
    """The valid config to run and its state paths, unless a daemon already runs it."""
    loaded = load_valid(config)
    paths = AppPaths.for_config(loaded.source.path)
    if Client(paths.socket).alive():
        raise TaxiwayError(
            "taxiway is already running this app; see `taxiway status`, or stop it with "
            "`taxiway down`"
        )
    return loaded, paths


def _up_detached(
    config: str | None,
    options: DaemonOptions,
    *,
    wait: bool = True,
    timeout: str | None = None,
    json_out: Any = None,
) -> int:
    """Fork the daemon, send it the checked config (and, unless it launches first, the
    settled start-up), and return once it reports every machine started, or its error;
    then, unless ``wait`` is off, once every machine with service checks has passed them
    (`_wait_serving`; ``timeout``: the --wait-timeout flag). With ``json_out`` (`up -d
    --json`), the app's status, the daemon's pid and the notices go there as one object
    once everything went well.

    The fork comes first: the daemon imports what needs no event loop while this
    process checks the config, and what comes next is the daemon's protocol
    (`taxiway.daemon_fork`). Until the config is sent the daemon has written nothing, so
    a config with errors (or an app that already runs) just closes the channel and the
    daemon leaves without a trace.
    """
    import pickle
    import socket

    channel_fd, daemon_channel = (end.detach() for end in socket.socketpair())
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon: whatever happens, it never returns into this stack
        _daemon_child(daemon_channel, channel_fd, ready_read, ready_write, options)
    os.close(daemon_channel)
    os.close(ready_write)
    channel = socket.socket(fileno=channel_fd)
    handed_over = False
    try:
        loaded, paths = _checked_for_up(config)
        paths.ensure()
        from taxiway.daemon_channel import hand_over, may_launch_first, send_config
        from taxiway.plan.dockerfile import has_image

        launch_first = may_launch_first(
            loaded.config, options.driver, has_image(loaded.config, loaded.base_dir)
        )
        send_config(channel, pickle.dumps((loaded, paths, launch_first)))
        if not launch_first:
            from taxiway.daemon_startup import prepare
            from taxiway.deploy.code_digest import code_digest

            # the release's code digest walks the app's folder (tens of ms for thousands
            # of files): taken here, it costs nothing, the daemon is still importing
            code = code_digest(loaded.base_dir, config_file=loaded.source.path)
            startup = prepare(
                loaded,
                paths,
                options.driver,
                code,
                holder=pid,
                asked_by=options.driver_asked_by,
                progress=_say,
            )
            try:
                hand_over(channel, pickle.dumps(startup), startup.lock_fd)
            finally:
                os.close(startup.lock_fd)  # the daemon holds the lock now (or nobody does)
        handed_over = True
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon died while starting: its log or the ready pipe says why
    finally:
        channel.close()
        if not handed_over:
            os.waitpid(pid, 0)
    if not handed_over:
        os.close(ready_read)
        raise TaxiwayError(_daemon_failure(paths))
    text = _daemon_report(ready_read)
    if text is not None and text.startswith("error "):
        raise TaxiwayError(text.removeprefix("error "))
    if text is None or not text.startswith("ready "):
        raise TaxiwayError(
            f"the daemon did not come up in {DETACH_WAIT_S:g}s; see {paths.daemon_log}"
            if text is None
            else _daemon_failure(paths)
        )
    status = json.loads(text.removeprefix("ready "))
    notices = status.pop("notices", [])
    for notice in notices:
        print(notice)
    unhealthy = None
    if wait and _has_services(status):
        status, unhealthy = _wait_serving(loaded, paths, status, timeout)
    print_status(status)
    print(f"\ndaemon pid {pid}; logs: `taxiway logs -f`; stop: `taxiway down`")
    if unhealthy is not None:
        raise TaxiwayError(unhealthy)
    failed = [m for m in status["machines"] if m["state"] == "failed"]
    if failed:
        from taxiway.runtime.logs import read_log

        reasons = []
        for m in failed:
            notes = [
                e.line for e in read_log(paths.logs / f"{m['id']}.log") if e.stream == "system"
            ]
            reasons.append(notes[-1] if notes else f"machine {m['id']} ({m['group']}) failed")
        raise TaxiwayError("; ".join(reasons))
    if json_out is not None:
        print_json({**status, "daemon_pid": pid, "notices": notices}, json_out)
    return 0


def _daemon_report(ready_read: int) -> str | None:
    """The daemon's last line on the ready pipe (``ready …`` or ``error …``; None when
    none came in time); the release command's output lines, which come before it,
    are printed as they arrive (`taxiway.daemon_fork.ReadyPipe.output`)."""
    import select

    from taxiway.cli.output import LogPrinter

    printer = LogPrinter(sys.stdout)
    pending = b""
    deadline = time.monotonic() + DETACH_WAIT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([ready_read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(ready_read, 65536) if ready else b""
            if not chunk:
                return pending.decode(errors="replace").strip()
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if not text.startswith("output "):
                    return text.strip()
                printer.print_line(json.loads(text.removeprefix("output ")))
        return None
    finally:
        os.close(ready_read)


def _has_services(status: dict[str, Any]) -> bool:
    """Whether a machine has a service (ports) or checks: what `up -d` waits for."""
    return any(m.get("ports") or (m.get("checks") or {}).get("total") for m in status["machines"])


def _wait_serving(
    loaded: LoadedConfig, paths: AppPaths, status: dict[str, Any], flag: str | None
) -> tuple[dict[str, Any], str | None]:
    """Wait in the daemon until the machines pass their service checks once, printing its
    progress; the app's status then, and the sentence saying why the wait failed (None
    when it didn't)."""
    from taxiway.cli.deploy_cmd import duration_flag
    from taxiway.config.units import UnitError, duration_seconds

    deploy = loaded.config.deploy
    if flag is not None:
        timeout_s = duration_flag(flag, "--wait-timeout")
    else:
        try:
            timeout_s = duration_seconds((deploy.wait_timeout if deploy else None) or "5m")
        except UnitError as exc:
            raise TaxiwayError(f"[deploy] wait_timeout: {exc}") from None
    client = Client(paths.socket, timeout=None)  # type: ignore[arg-type]
    try:
        for entry in client.stream(
            f"/v1/apps/{status['app']}/wait", method="POST", body={"timeout_s": timeout_s}
        ):
            if "progress" in entry:
                print(entry["progress"], flush=True)
            elif "error" in entry:
                return client_status(client, status["app"]), entry["error"]
            elif "status" in entry:
                return entry["status"], None
    except KeyboardInterrupt:
        print("\nstopped waiting; the app keeps running (`taxiway status` shows it)")
        raise SystemExit(130) from None
    raise TaxiwayError(f"the daemon ended the wait without a result; see {paths.daemon_log}")


def client_status(client: Client, app: str) -> dict[str, Any]:
    """The app's `status --json` document."""
    return client.request("GET", f"/v1/apps/{app}/status")


def _daemon_child(
    channel: int, command_channel: int, ready_read: int, ready_write: int, options: DaemonOptions
) -> NoReturn:
    """The forked daemon's first steps; it leaves with os._exit, never through the
    caller's frames (Ctrl-C while it imports included: the parent reports that)."""
    code = 70
    try:
        os.close(command_channel)
        os.close(ready_read)
        import gc

        gc.disable()  # during the daemon's imports; `run_forked` turns it on again
        from taxiway.daemon_fork import run_forked

        code = run_forked(channel, ready_write, options)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # a bug before the daemon had a log: say it where we still can
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _daemon_failure(paths: AppPaths) -> str:
    """Why the daemon stopped before reporting: the last line of its log, or, when it died
    before it had one, a pointer to what it printed here."""
    try:
        lines = paths.daemon_log.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "the daemon exited while starting, before it had a log (what it printed is above)"
    except OSError:
        lines = []
    last = next((line for line in reversed(lines) if line.strip()), "")
    return last.removeprefix("taxiway: error: ") or f"the daemon exited; see {paths.daemon_log}"


def down(args: argparse.Namespace) -> int:
    client, app, paths = client_for(args.config)
    as_json = getattr(args, "json", False)
    with people_to_stderr(as_json) as stdout:
        try:
            answer = client.request("POST", f"/v1/apps/{app}/down")
        except DaemonNotRunning:
            reaped = _reap_without_daemon(paths, app)
            left = f"cleaned up {reaped} machine(s) a dead daemon left"
            print(
                f"taxiway was not running {app}; {left}"
                if reaped
                else f"taxiway is not running {app}"
            )
            result = {"app": app, "was_running": False, "machines": 0, "leftovers_stopped": reaped}
        else:
            while client.alive():
                time.sleep(0.05)
            print(f"{app} is down (volumes, secrets, logs and releases are kept)")
            machines = answer.get("stopping", 0) if isinstance(answer, dict) else 0
            result = {"app": app, "was_running": True, "machines": machines, "leftovers_stopped": 0}
    if as_json:
        print_json(result, stdout)
    return 0


def _say(line: str) -> None:
    """A line of progress (an image build's) as it comes."""
    print(line, flush=True)


def _say_what_was_left(paths: AppPaths, app: str) -> None:
    """No daemon answers: if a dead one (``kill -9``, a crash) left machines running,
    raise the sentence that says so and how to clean them up."""
    if not (paths.state_dir / "taxiway.db").exists():
        return
    from taxiway.runtime.leftovers import left_running
    from taxiway.state.store import Store

    with Store.open(paths.state_dir) as store:
        left = left_running(store, app, paths.state_dir)
    if left:
        raise TaxiwayError(
            f"taxiway is not running {app}, but its daemon stopped without stopping "
            f"{len(left)} machine(s), which still run ({', '.join(left)}); `taxiway up` "
            "or `taxiway down` will clean them up"
        )


def _reap_without_daemon(paths: AppPaths, app: str) -> int:
    """`down` after a `kill -9`: stop what the dead daemon's machines left running."""
    if not (paths.state_dir / "taxiway.db").exists():
        return 0
    from taxiway.runtime.leftovers import reap
    from taxiway.state.store import Store

    with Store.open(paths.state_dir) as store:
        return reap(store, app, paths.state_dir)


def daemon(args: argparse.Namespace) -> int:
    from taxiway.daemon import daemon_main

    return daemon_main(Path(args.config), daemon_options(args))


# -- status / machines / scale ------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    if getattr(args, "watch", False):
        from taxiway.cli.status_watch import watch

        return watch(args)
    client, app, paths = client_for(args.config)
    try:
        data = client.request("GET", f"/v1/apps/{app}/status")
    except DaemonNotRunning:
        _say_what_was_left(paths, app)
        raise
    if args.json:
        _print_json(data)
    else:
        print_status(data)
    return 0


def driver_line(name: str, reason: str) -> str:
    """``driver process (auto: the namespace driver needs …)``: which driver runs the
    machines, and why."""
    return f"driver {name} ({reason})" if reason else f"driver {name}"


def print_status(data: dict[str, Any]) -> None:
    from taxiway.checks.state import summary_text  # dataclasses: only when printing

    print(f"app {data['app']}  release v{data['release']}")
    if data.get("driver"):
        print(driver_line(data["driver"], data.get("driver_reason", "")))
    if data.get("api"):
        print(f"machines api {data['api']['url']} (token: `taxiway api token`)")
    network = data.get("private_network") or {}
    if network.get("dns"):
        print(f"private network dns {network['dns']}  flycast {network['flycast']}")
    rows = [("ID", "GROUP", "STATE", "REGION", "RESTARTS", "CHECKS", "PRIVATE IP", "PORTS")]
    for m in data["machines"]:
        state = m["state"]
        if m.get("oom_killed") and state in ("stopped", "failed", "starting"):
            state += " (out of memory)"
        if m.get("backoff_s"):
            state += f" (restart in {m['backoff_s']:g}s)"
        ports = ", ".join(f"{k}->{v}" for k, v in (m.get("ports") or {}).items())
        rows.append(
            (
                m["id"],
                m["group"],
                state,
                m["region"],
                str(m["restarts"]),
                summary_text(m.get("checks") or {}),
                m["private_ip"],
                ports,
            )
        )
    print_table(rows)
    for line in edge_lines(data.get("edge") or []):
        print(line)
    print_hints(data)


def print_hints(data: dict[str, Any]) -> None:
    """Every machine's hints (`status --json`'s ``hints``), one line each."""
    for m in data["machines"]:
        for hint in m.get("hints") or ():
            print(f"hint: {hint}")


def edge_lines(bindings: list[dict[str, Any]]) -> list[str]:
    """One line per edge listener: the URL to use, and the fly.toml port it stands for."""
    lines = []
    for b in bindings:
        handlers = set(b["handlers"])
        scheme = b["protocol"]
        if "http" in handlers:
            scheme = "https" if "tls" in handlers else "http"
        elif "tls" in handlers:
            scheme = "tls"
        note = f"port {b['port']}"
        if b.get("mapped"):
            note += " (mapped: that port could not be bound)"
        lines.append(f"edge  {scheme}://{b['address']}  {note}")
    return lines


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def machine(args: argparse.Namespace) -> int:
    client, app, _ = client_for(args.config)
    if args.machine_command == "list":
        machines = client.request("GET", f"/v1/apps/{app}/machines")
        if args.json:
            _print_json(machines)
            return 0
        rows = [("ID", "GROUP", "STATE", "RESTARTS", "PID", "INSTANCE")]
        for m in sorted(machines, key=lambda m: (m["group"], m["id"])):
            rows.append(
                (
                    m["id"],
                    m["group"],
                    m["state"],
                    str(m["restarts"]),
                    str(m["pid"] or "-"),
                    m["instance_id"],
                )
            )
        print_table(rows)
        return 0
    if args.machine_command == "status":
        data = client.request("GET", f"/v1/apps/{app}/machines/{args.id}")
        _print_json(data) if args.json else _print_machine(data)
        return 0
    if args.machine_command == "exec":
        if not args.cmd:
            raise TaxiwayError("machine exec needs a command to run, e.g. `machine exec ID env`")
        result = client.request(
            "POST", f"/v1/apps/{app}/machines/{args.id}/exec", {"cmd": args.cmd}
        )
        if args.json:  # the command's own exit code stays the exit status, as without --json
            found = client.request("GET", f"/v1/apps/{app}/machines/{args.id}")
            print_json(
                {
                    "machine": found["id"],
                    "cmd": args.cmd,
                    "exit_code": result["exit_code"],
                    "stdout": result["stdout"],
                    "stderr": result["stderr"],
                }
            )
            return int(result["exit_code"])
        sys.stdout.write(result["stdout"])
        sys.stderr.write(result["stderr"])
        return int(result["exit_code"])
    data = client.request("POST", f"/v1/apps/{app}/machines/{args.id}/{args.machine_command}")
    if getattr(args, "json", False):
        _print_json(data)
    else:
        print(f"machine {data['id']} is {data['state']}")
    return 0


def _print_machine(m: dict[str, Any]) -> None:
    for key in (
        "id",
        "group",
        "state",
        "region",
        "private_ip",
        "instance_id",
        "restarts",
        "exit_code",
        "pid",
    ):
        value = m.get(key)
        print(f"{key:12} {'-' if value is None else value}")
    ports = ", ".join(f"{k}->{v}" for k, v in (m.get("ports") or {}).items())
    print(f"{'ports':12} {ports or '-'}")


def scale(args: argparse.Namespace) -> int:
    client, app, _ = client_for(args.config)
    if args.scale_command == "count":
        counts: dict[str, int] = {}
        for item in args.counts:
            group, sep, number = item.partition("=")
            if not sep or not number.strip().isdigit():
                raise TaxiwayError(f"'{item}' is not GROUP=COUNT (e.g. web=3)")
            counts[group.strip()] = int(number)
        data = client.request("POST", f"/v1/apps/{app}/scale", {"counts": counts})
        if not getattr(args, "json", False):
            _print_scale(data)
            print_hints(client_status(client, app))
            return 0
    else:
        data = client.request("GET", f"/v1/apps/{app}/scale")
    if getattr(args, "json", False):
        _print_json(data)
        return 0
    _print_scale(data)
    return 0


def _print_scale(data: dict[str, Any]) -> None:
    rows = [("GROUP", "COUNT", "RUNNING", "SIZE", "CPUS", "MEMORY")]
    for group, g in data.items():
        rows.append(
            (
                group,
                str(g["count"]),
                str(g["running"]),
                g["size"],
                f"{g['cpus']} {g['cpu_kind']}",
                f"{g['memory_mb']} MB",
            )
        )
    print_table(rows)


def logs(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    since = None
    if getattr(args, "since", None) is not None:
        from taxiway.cli.log_since import since_cutoff

        since = since_cutoff(args.since)  # a bad value fails before anything is read
    client, app, paths = client_for(args.config)
    query = {k: v for k, v in (("machine", args.machine), ("group", args.group)) if v}
    if args.follow:
        query["follow"] = "1"
    if since is not None:
        query["since"] = since
    from taxiway.cli.output import format_log_line

    try:
        for entry in client.stream(f"/v1/apps/{app}/logs?{urlencode(query)}"):
            if since is not None and str(entry.get("ts", "")) < since:
                continue  # a daemon from before --since sends every line
            if args.json:
                print(json.dumps(entry), flush=True)
            else:
                print(format_log_line(entry), flush=True)
    except DaemonNotRunning:
        if args.follow:
            raise
        _print_logs_from_files(paths, app, args, since)
    except KeyboardInterrupt:
        return 0
    return 0


def _print_logs_from_files(
    paths: AppPaths, app: str, args: argparse.Namespace, since: str | None
) -> None:
    """Past machines' logs when no daemon runs: read the files directly (the store says
    the group of a line written before lines carried it); ``since``: `since_cutoff`."""
    from taxiway.cli.output import format_log_line
    from taxiway.runtime.logs import logged_machines, past_lines

    ids = logged_machines(paths.logs, app, args.machine)
    groups: dict[str, str] = {}
    if (paths.state_dir / "taxiway.db").exists():
        from taxiway.state.store import Store

        with Store.open(paths.state_dir) as store:
            known = store.list_machines(app, include_destroyed=True)
            groups = {record.id: record.group for record in known}
    for entry in past_lines(paths.logs, ids, groups, args.group, since=since):
        print(json.dumps(entry) if args.json else format_log_line(entry))


def _print_json(data: Any) -> None:
    print_json(data)
