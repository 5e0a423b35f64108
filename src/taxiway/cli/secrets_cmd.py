"""`taxiway secrets set|unset|list|import` and `taxiway console`.

Secret values go in and never come back out: `list` shows names and a digest.
With the daemon running, a change restarts the machines (they read secrets at
start, as on the platform); without it, the change is staged for the next `up`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING

from taxiway.api.client import DaemonNotRunning
from taxiway.cli.app_cmd import client_for, print_table
from taxiway.cli.json_result import print_json
from taxiway.config.names import PLATFORM_ENV_PREFIX, platform_prefix_warning
from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    from taxiway.api.paths import AppPaths
    from taxiway.config.loader import LoadedConfig

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_assignments(items: list[str], where: str) -> dict[str, str]:
    """NAME=VALUE items; ``where``: how to name item n in an error ("argument", "line")."""
    values: dict[str, str] = {}
    for n, item in enumerate(items, start=1):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise TaxiwayError(
                f"{where} {n} ({item!r}) has no '=': write each secret as NAME=VALUE, "
                "e.g. DATABASE_URL=postgres://db/app"
            )
        _check_name(name)
        if name.startswith(PLATFORM_ENV_PREFIX):
            print(f"warning: {platform_prefix_warning(f'secret {name}')}", file=sys.stderr)
        values[name] = value
    return values


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise TaxiwayError(f"'{name}' is not a valid secret name (letters, digits and _)")


def secrets(args: argparse.Namespace) -> int:
    command = args.secrets_command
    if command == "list":
        return _list(args)
    if command == "import":
        lines = [
            line.strip()
            for line in sys.stdin.read().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        values, unset = parse_assignments(lines, "stdin's non-comment line"), []
    elif command == "set":
        values, unset = parse_assignments(args.assignments, "argument"), []
    else:
        for name in args.names:
            _check_name(name)
        values, unset = {}, list(args.names)
    client, app, paths = client_for(args.config)
    # names only, here and in every output: a value never leaves the store
    outcome: dict[str, object] = {"app": app, "changed": [], "staged": False, "restarted": 0}
    try:
        result = client.request("POST", f"/v1/apps/{app}/secrets", {"set": values, "unset": unset})
        changed, note = result["changed"], f"restarted {result['restarted']} machine(s)"
        outcome["restarted"] = result["restarted"]
        if "release" in result:
            note += f"; release v{result['release']}"
    except DaemonNotRunning:
        from taxiway.state.store import Store

        paths.ensure()
        with Store.open(paths.state_dir) as store:
            store.ensure_app(app, str(paths.state_dir.parent / "fly.toml"))
            changed = store.set_secrets(app, values) + store.unset_secrets(app, unset)
        note = "staged for the next `taxiway up`"
        outcome["staged"] = bool(changed)
        result = {}
    if getattr(args, "json", False):
        print_json({**outcome, "changed": list(changed), "release": result.get("release")})
    elif not changed:
        print("no secret changed")
    else:
        verb = "unset" if command == "unset" else "set"
        print(f"{verb} {', '.join(changed)}; {note}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from taxiway.state.store import Store

    _, app, paths = client_for(args.config)
    if not (paths.state_dir / "taxiway.db").exists():
        records = []
    else:
        with Store.open(paths.state_dir) as store:
            records = store.list_secrets(app)
    if args.json:
        json.dump(
            [{"name": r.name, "digest": r.digest, "updated_at": r.updated_at} for r in records],
            sys.stdout,
            indent=2,
        )
        print()
    elif not records:
        print(f"{app} has no secrets")
    else:
        print_table(
            [("NAME", "DIGEST", "UPDATED")] + [(r.name, r.digest, r.updated_at) for r in records]
        )
    return 0


def console(args: argparse.Namespace) -> int:
    """Run console_command interactively in a throwaway machine with the app's env and secrets."""
    import subprocess

    from taxiway.api.paths import AppPaths
    from taxiway.cli.config_cmd import load_valid
    from taxiway.config.names import app_name_for
    from taxiway.plan.command import oneoff_argv
    from taxiway.runtime import ids
    from taxiway.runtime.oneoff import CONSOLE_GROUP, default_plan, oneoff_env
    from taxiway.state.store import Store

    loaded = load_valid(args.config)
    command = args.command or loaded.config.console_command
    if not command:
        raise TaxiwayError(
            f"{loaded.source.display_name} has no console_command; add one (e.g. "
            'console_command = "python manage.py shell") or pass --command'
        )
    app = app_name_for(loaded.source.path, loaded.config.app)
    paths = AppPaths.for_config(loaded.source.path)
    secrets: dict[str, str] = {}
    if (paths.state_dir / "taxiway.db").exists():
        with Store.open(paths.state_dir) as store:
            secrets = store.secret_values(app)
    if _console_driver(loaded, paths, app) == "docker":
        return _console_in_image(loaded, paths, app, command, secrets)
    plan = default_plan(loaded)
    argv = oneoff_argv(command, plan.runs.entrypoint, "console_command")
    env = oneoff_env(
        loaded, plan, app=app, group=CONSOLE_GROUP, machine_id=ids.machine_id(), secrets=secrets
    )
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    try:
        return subprocess.run(argv, cwd=loaded.base_dir, env=env, check=False).returncode
    except FileNotFoundError:
        raise TaxiwayError(f"console: command not found: {argv[0]}") from None
    except PermissionError:
        raise TaxiwayError(f"console: {argv[0]} is not executable") from None


def _console_driver(loaded: LoadedConfig, paths: AppPaths, app: str) -> str:
    """The driver the app's machines run on: the running daemon's, else the one `up`
    would pick now (``TAXIWAY_DRIVER``, else auto)."""
    from taxiway.api.client import Client
    from taxiway.cli.app_cmd import DRIVER_VARIABLE
    from taxiway.plan.dockerfile import has_image
    from taxiway.runtime.drivers import choose_driver

    try:
        status = Client(paths.socket).request("GET", f"/v1/apps/{app}/status")
        return str(status.get("driver") or "process")
    except DaemonNotRunning:
        pass
    name = os.environ.get(DRIVER_VARIABLE) or "auto"
    image = has_image(loaded.config, loaded.base_dir)
    return choose_driver(name, DRIVER_VARIABLE, has_image=image).name


def _console_in_image(
    loaded: LoadedConfig, paths: AppPaths, app: str, command: str, secrets: dict[str, str]
) -> int:
    """The console with the docker driver: in a throwaway container of the newest
    complete release's image, as the platform runs it in the app's current image."""
    import msgspec

    from taxiway.image.build import release_image
    from taxiway.image.labels import labels
    from taxiway.plan.command import oneoff_argv
    from taxiway.runtime import ids
    from taxiway.runtime.drivers.docker_console import run_attached
    from taxiway.runtime.drivers.engine_scope import container_name
    from taxiway.runtime.oneoff import CONSOLE_GROUP, default_plan, oneoff_env
    from taxiway.runtime.scope import scope_for
    from taxiway.state.store import Store

    scope = scope_for(app, paths.state_dir)
    release = None
    if (paths.state_dir / "taxiway.db").exists():
        with Store.open(paths.state_dir) as store:
            release = store.latest_release(app, "complete")
    built = release_image(scope, release.version) if release is not None else None
    if built is None:
        raise TaxiwayError(
            f"console: {app} has no release image to run the console in; start the app "
            "with `taxiway up` (docker driver) first"
        )
    plan = default_plan(loaded, msgspec.structs.replace(built.config, ref=built.ref))
    machine_id = ids.machine_id()
    env = oneoff_env(
        loaded,
        plan,
        app=app,
        group=CONSOLE_GROUP,
        machine_id=machine_id,
        secrets=secrets,
        in_image=True,
    )
    if sys.stdin.isatty() and "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    return run_attached(
        image=built.ref,
        argv=oneoff_argv(command, plan.runs.entrypoint, "console_command"),
        env=env,
        workdir=plan.runs.workdir,
        name=container_name(scope, machine_id),
        hostname=machine_id,
        labels=labels(scope, app, machine=machine_id, group=CONSOLE_GROUP),
        memory_mb=plan.guest.memory_mb,
    )
