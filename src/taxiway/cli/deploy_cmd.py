"""`taxiway deploy` and `taxiway releases [rollback]`: asking the daemon to roll out a release.

The deploy itself runs in the daemon (`taxiway.deploy`); this prints its progress lines
as they come (plain lines, the same on a terminal as in a pipe or CI log). When no daemon
runs the app, `deploy` starts one as `up -d` does: with every machine stopped there is
nothing to roll, and `up` makes the config the app's new release.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from taxiway.api.client import Client, DaemonNotRunning
from taxiway.api.paths import AppPaths
from taxiway.cli.json_result import people_to_stderr, print_json
from taxiway.config.names import app_name_for
from taxiway.errors import TaxiwayError

#: How long `--under-load` goes on after a deploy for machines that still boot (the
#: edge holds a request about as long, `taxiway.edge.limits.Limits.start_timeout_s`).
SETTLE_S = 30.0


def deploy(args: argparse.Namespace) -> int:
    as_json = getattr(args, "json", False)
    with people_to_stderr(as_json) as stdout:
        return _deploy(args, stdout if as_json else None)


def _deploy(args: argparse.Namespace, json_out: Any) -> int:
    from taxiway.cli.app_cmd import up
    from taxiway.config.loader import load_config

    loaded = load_config(args.config, strategy=args.strategy)
    _require_valid(loaded)
    paths = AppPaths.for_config(loaded.source.path)
    app = app_name_for(loaded.source.path, loaded.config.app)
    client = Client(paths.socket, timeout=None)  # type: ignore[arg-type]
    if not client.alive():
        print(f"taxiway is not running {app}: starting it (`up -d` deploys the config file)")
        from taxiway.cli.main import build_parser

        config = ["-c", args.config] if args.config else []
        code = up(build_parser("up").parse_args(["up", "-d", *config]))
        if json_out is not None and code == 0:
            current = [r for r in client.request("GET", f"/v1/apps/{app}/releases") if r["current"]]
            _print_result(json_out, app, current[0] if current else None, started_app=True)
        return code
    body: dict[str, Any] = {"rollback": False} if args.no_rollback else {}
    if args.strategy:
        body["strategy"] = args.strategy
    if args.wait_timeout:
        body["wait_timeout_s"] = duration_flag(args.wait_timeout, "--wait-timeout")
    if args.max_unavailable is not None:
        body["max_unavailable"] = args.max_unavailable
    if args.no_smoke_checks:
        body["smoke_checks"] = False
    path = f"/v1/apps/{app}/deploy"
    rate = getattr(args, "under_load", None)
    if rate is None:
        return _run(client, path, body, detach=args.detach, json_out=json_out)
    if args.detach:
        raise TaxiwayError("--under-load watches the deploy to its end; leave out --detach")
    if rate <= 0:
        raise TaxiwayError(f"--under-load {rate:g}: the rate must be more than 0 requests/s")
    return _run_under_load(client, app, path, body, rate, json_out)


def _print_result(
    json_out: Any,
    app: str,
    release: dict[str, Any] | None,
    *,
    detached: bool = False,
    started_app: bool = False,
) -> None:
    """`deploy --json` and `releases rollback --json`: the release (as `releases --json`
    shows it), whether the command returned before it finished, and whether it had to
    start the app (`up -d`) because no daemon ran it."""
    print_json(
        {"app": app, "release": release, "detached": detached, "started_app": started_app},
        json_out,
    )


def _run_under_load(
    client: Client, app: str, path: str, body: dict[str, Any], rate: float, json_out: Any = None
) -> int:
    """Deploy while `taxiway.deploy.load` sends ``rate`` requests/s through the edge's
    first HTTP listener; the deploy's outcome first, then the load's."""
    from taxiway.deploy.load import LoadThread

    host, port = _http_listener(client.request("GET", f"/v1/apps/{app}/status"))
    load = LoadThread(host, port, rate)
    load.start()
    result: list[dict[str, Any]] = []
    try:
        code = _run(client, path, body, detach=False, into=result)
        if code == 0 and _wait_settled(client, app):
            print("(the load went on until every started machine passed its checks)")
    finally:
        load_result = load.finish()
        print(load_result.summary(), flush=True)
        for error in load_result.errors:
            print(f"  e.g. {error}", flush=True)
    if not load_result.ok:
        raise TaxiwayError(
            f"{load_result.failed + load_result.non_2xx} of {load_result.sent} requests failed "
            "during the deploy"
        )
    if json_out is not None and result:
        _print_result(json_out, app, result[0])
    return code


def _wait_settled(client: Client, app: str) -> bool:
    """Wait until every started machine passes its checks, at most `SETTLE_S`: an
    immediate deploy ends while its machines still boot, and the load must cover that
    too. Returns whether there was anything to wait for."""
    import time

    deadline = time.monotonic() + SETTLE_S
    waited = False
    while time.monotonic() < deadline:
        machines = client.request("GET", f"/v1/apps/{app}/status").get("machines") or []
        if all(_settled(m) for m in machines):
            return waited
        waited = True
        time.sleep(0.1)
    return waited


def _settled(machine: dict[str, Any]) -> bool:
    """Started and passing every check, or not meant to run (stopped, suspended)."""
    state = machine.get("state")
    if state in ("starting", "replacing"):
        return False
    checks = machine.get("checks") or {}
    return state != "started" or checks.get("passing", 0) == checks.get("total", 0)


def _http_listener(status: dict[str, Any]) -> tuple[str, int]:
    """The edge's first plain-HTTP listener, from `status --json`'s ``edge``."""
    edge = status.get("edge")
    for listener in _listeners(edge):
        handlers = listener.get("handlers") or []
        if "http" in handlers and "tls" not in handlers:
            host, _, port = str(listener["address"]).rpartition(":")
            host = host.strip("[]")
            return ("127.0.0.1" if host in ("", "0.0.0.0") else host), int(port)
    raise TaxiwayError(
        "--under-load needs an HTTP service on the edge ([http_service], or [[services]] with "
        "an http handler), and `taxiway status` shows none"
    )


def _listeners(value: Any) -> list[dict[str, Any]]:
    """Every listener (a dict with an address and handlers) in the edge's status."""
    if isinstance(value, dict):
        if "address" in value and "handlers" in value:
            return [value]
        return [found for item in value.values() for found in _listeners(item)]
    if isinstance(value, list):
        return [found for item in value for found in _listeners(item)]
    return []


def releases(args: argparse.Namespace) -> int:
    if args.releases_command == "rollback":
        as_json = getattr(args, "json", False)
        with people_to_stderr(as_json) as stdout:
            return _rollback(args, stdout if as_json else None)
    return _list_releases(args)


def _rollback(args: argparse.Namespace, json_out: Any) -> int:
    from taxiway.config.loader import load_config

    loaded = load_config(args.config)
    paths = AppPaths.for_config(loaded.source.path)
    app = app_name_for(loaded.source.path, loaded.config.app)
    client = Client(paths.socket, timeout=None)  # type: ignore[arg-type]
    body: dict[str, Any] = {}
    if args.version is not None:
        body["version"] = _version(args.version)
    if args.no_smoke_checks:
        body["smoke_checks"] = False
    if not client.alive():
        raise DaemonNotRunning(
            f"taxiway is not running {app}; a rollback updates running machines, so "
            "start it with `taxiway up -d` first"
        )
    return _run(
        client, f"/v1/apps/{app}/releases/rollback", body, detach=args.detach, json_out=json_out
    )


def _list_releases(args: argparse.Namespace) -> int:
    from taxiway.config.loader import load_config

    loaded = load_config(args.config)
    paths = AppPaths.for_config(loaded.source.path)
    app = app_name_for(loaded.source.path, loaded.config.app)
    client = Client(paths.socket, timeout=None)  # type: ignore[arg-type]
    try:
        data = client.request("GET", f"/v1/apps/{app}/releases")
    except DaemonNotRunning:
        data = _releases_from_store(paths, app)
    if args.json:
        print_json(data)
        return 0
    if not data:
        print(f"{app} has no releases yet; `taxiway up` or `taxiway deploy` makes the first")
        return 0
    rows = [
        ("VERSION", "STATUS", "STRATEGY", "CREATED", "CONFIG", "RELEASE COMMAND", "DESCRIPTION")
    ]
    for r in data:
        version = f"v{r['version']}" + (" (current)" if r["current"] else "")
        rows.append(
            (
                version,
                r["status"],
                r["strategy"],
                r["created_at"],
                r["config_digest"][:12],
                _release_command_cell(r.get("release_command")),
                r["description"],
            )
        )
    from taxiway.cli.app_cmd import print_table

    print_table(rows)
    return 0


# -- helpers --------------------------------------------------------------------------------


def _release_command_cell(run: dict[str, Any] | None) -> str:
    """``<machine> exit <code>`` for the one-off machine that ran the release command."""
    if not run:
        return "-"
    code = run.get("exit_code")
    return f"{run['machine']} exit {'-' if code is None else code}"


def _run(
    client: Client,
    path: str,
    body: dict[str, Any],
    *,
    detach: bool,
    json_out: Any = None,
    into: list[dict[str, Any]] | None = None,
) -> int:
    """Send a deploy (or rollback); print its progress, then how it ended: with
    ``json_out``, the release there (`_print_result`); ``into`` gets the release too."""
    app = path.split("/")[3]  # /v1/apps/{app}/…
    if detach:
        data = client.request("POST", path, {**body, "detach": True})
        version = data["release"]["version"]
        print(f"release v{version} is deploying in the daemon; `taxiway releases` shows how")
        if json_out is not None:
            _print_result(json_out, app, data["release"], detached=True)
        return 0
    try:
        for entry in client.stream(path, method="POST", body=body):
            if "progress" in entry:
                print(entry["progress"], flush=True)
            elif "error" in entry:
                raise TaxiwayError(entry["error"])
            elif "release" in entry:  # its progress lines said how it ended
                if into is not None:
                    into.append(entry["release"])
                if json_out is not None:
                    _print_result(json_out, app, entry["release"])
                return 0
    except KeyboardInterrupt:
        return _interrupted(client, path)
    raise TaxiwayError("the daemon ended the deploy stream without a result; see daemon.log")


def _interrupted(client: Client, path: str) -> int:
    """Ctrl-C: a release command that runs is stopped, and the deploy with it; past
    that point the deploy goes on in the daemon (it is updating machines)."""
    app_path = "/".join(path.split("/")[:4])  # /v1/apps/{app}
    answer = client.request("POST", app_path + "/deploy/interrupt")
    if answer.get("interrupted"):
        print(f"\ntaxiway: error: {answer.get('error')}", file=sys.stderr)
    else:
        print(
            "\nstopped watching; the deploy goes on in the daemon (`taxiway releases` shows "
            "how it went)",
            file=sys.stderr,
        )
    return 130


def _require_valid(loaded: Any) -> None:
    from taxiway.cli.render import print_diagnostics
    from taxiway.config.diagnostics import Severity

    errors = [d for d in loaded.diagnostics if d.severity is Severity.ERROR]
    if errors:
        name = loaded.source.display_name
        print_diagnostics(errors, name)
        raise TaxiwayError(
            f"{name} is not valid; fix the errors above (`taxiway config validate` lists all)"
        )


def duration_flag(text: str, flag: str) -> float:
    from taxiway.config.units import UnitError, duration_seconds

    try:
        seconds = duration_seconds(text)
    except UnitError:
        raise TaxiwayError(
            f'{flag} {text} is not a duration; write it with a unit, like "30s" or "5m"'
        ) from None
    if seconds < 0:
        raise TaxiwayError(f"{flag} {text} is negative")
    return seconds


def _version(text: str) -> int:
    digits = text.removeprefix("v")
    if not digits.isdigit():
        raise TaxiwayError(f"{text} is not a release version (like 3 or v3)")
    return int(digits)


def _releases_from_store(paths: AppPaths, app: str) -> list[dict[str, Any]]:
    """Releases when no daemon runs: they are in the store."""
    if not (paths.state_dir / "taxiway.db").exists():
        return []
    from taxiway.deploy.releases import release_json
    from taxiway.state.store import Store

    with Store.open(paths.state_dir) as store:
        found = store.list_releases(app)
        current = store.latest_release(app, status="complete")
        return [release_json(r, current.version if current else 0) for r in found]
