"""The `taxiway` command: argument parsing and dispatch.

argparse (stdlib) instead of click/typer keeps start-up cheap: `taxiway config
validate` must answer well under 0.2 s, and click alone costs ~40 ms to import.
Each command's module is imported only when that command runs.

Exit codes: 0 ok, 1 a user error (bad config, missing file), 2 a usage error.
Anything else is a bug, reported as one, never as a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from taxiway import __version__
from taxiway.daemon_options import DRIVER_NAMES

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_BUG = 70


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="the app's config file, or a folder holding it (default: ./fly.toml)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or, given ``command``, the top level with only that
    command's sub-tree: every sub-parser costs argparse a round of gettext file lookups
    (~0.4 ms each, 15 ms in all), and `taxiway up -d` is timed against honcho."""
    parser = argparse.ArgumentParser(
        prog="taxiway",
        description=(
            "Run a Fly.io app from its fly.toml on your own machine, with the platform's semantics."
        ),
    )
    parser.add_argument("--version", action="version", version=f"taxiway {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add in _COMMANDS.items():
        if name == command or (command is None and name not in _HIDDEN):
            add(commands)
    return parser


def _describe(text: str) -> str:
    """A sub-command's description from its one-line help: what ``COMMAND --help`` says."""
    return text[0].upper() + text[1:] + "."


def _command(
    commands: Commands, name: str, text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A (sub-)command with its one-line help, and a description for its own --help."""
    return commands.add_parser(name, help=text, description=description or _describe(text))


Commands = argparse._SubParsersAction


def _add_config(commands: Commands) -> None:
    """`config validate|show|save|schema|machines`: the offline config tooling."""
    config = commands.add_parser(
        "config",
        help="validate, show, convert and plan fly.toml (works offline)",
        description="Validate, show, convert and plan a fly.toml, offline.",
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="COMMAND")

    validate = config_commands.add_parser(
        "validate",
        help="check fly.toml against every rule of the reference",
        description=(
            "Check fly.toml against every rule of the reference. Exit 0 when there is no "
            "error, 1 when there is one."
        ),
    )
    _add_config_option(validate)
    validate.add_argument("--json", action="store_true", help="print the result as JSON")
    validate.add_argument("--strict", action="store_true", help="warnings fail too")
    validate.add_argument(
        "--strategy",
        choices=("rolling", "immediate", "canary", "bluegreen"),
        help="check as a deploy with this strategy would (overrides [deploy] strategy)",
    )
    validate.set_defaults(handler="taxiway.cli.config_cmd:validate")

    show = config_commands.add_parser(
        "show",
        help="print the normalised config",
        description="Print the normalised config: legacy forms rewritten to today's.",
    )
    _add_config_option(show)
    show.add_argument("--format", choices=("toml", "json", "yaml"), default="toml")
    show.set_defaults(handler="taxiway.cli.config_cmd:show")

    save = config_commands.add_parser(
        "save",
        help="write the normalised config to a file (toml, json or yaml)",
        description=(
            "Write the normalised config to a file. The format follows --format, else the "
            "output file's extension. A TOML written from a TOML keeps its comments."
        ),
    )
    _add_config_option(save)
    save.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    save.add_argument("--format", choices=("toml", "json", "yaml"))
    save.set_defaults(handler="taxiway.cli.config_cmd:save")

    schema = config_commands.add_parser(
        "schema",
        help="print a JSON Schema of fly.toml for editors",
        description="Print a JSON Schema of fly.toml (for taplo / Even Better TOML).",
    )
    schema.set_defaults(handler="taxiway.cli.config_cmd:schema")

    machines = config_commands.add_parser(
        "machines",
        help="print what each process group's machines will get",
        description=(
            "Print the machine config each process group gets, in the shape of the "
            "platform's machine config."
        ),
    )
    _add_config_option(machines)
    machines.add_argument("--group", metavar="G", help="only this process group")
    machines.add_argument("--json", action="store_true", help="print JSON")
    machines.set_defaults(handler="taxiway.cli.config_cmd:machines")

    config.set_defaults(usage_of=config)


def _add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """The edge's flags, shared by `up` and the daemon it starts."""
    parser.add_argument(
        "--edge-host",
        metavar="ADDR",
        default="127.0.0.1",
        help="address the edge's listeners bind (default 127.0.0.1; 0.0.0.0 for every one)",
    )
    parser.add_argument(
        "--autostop-after",
        metavar="DURATION",
        help="idle period before autostop stops or suspends a machine (default: the "
        "platform's schedule); e.g. 3s for tests",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="N",
        type=int,
        help="also serve Prometheus metrics at http://127.0.0.1:N/metrics (no auth, "
        "loopback only; the API socket always serves /metrics)",
    )


_APP = "taxiway.cli.app_cmd:"


def _add_up(commands: Commands) -> None:
    up = commands.add_parser(
        "up",
        help="start the app: every process group on its own machines",
        description=(
            "Start the app's daemon and its machines. In the foreground it prints every "
            "machine's output; Ctrl-C stops the app gracefully."
        ),
    )
    _add_config_option(up)
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument(
        "--driver",
        choices=DRIVER_NAMES,
        default=None,
        help=(
            "how machines run (docker: containers of the app's image, as on the platform; "
            "process: plain process trees; namespace: Linux as root, each machine with its "
            "own network, mounts and cgroup; auto: docker for an app with a Dockerfile or "
            "[build] image where an engine answers, else namespace where the host also "
            "forwards and has iptables, else process); default: $TAXIWAY_DRIVER, else auto"
        ),
    )
    up.add_argument(
        "--no-wait",
        action="store_true",
        help="with -d: return once the machines started, without waiting for their checks",
    )
    up.add_argument(
        "--wait-timeout",
        metavar="DURATION",
        help="with -d: how long to wait for the machines' checks to pass, like 30s or 5m "
        "(default: [deploy] wait_timeout, else 5m)",
    )
    _add_json_result(up, "with -d: ")
    _add_daemon_options(up)
    up.set_defaults(handler=_APP + "up")


def _add_down(commands: Commands) -> None:
    down = commands.add_parser(
        "down",
        help="stop every machine and the daemon (volumes, secrets, logs stay)",
        description="Stop every machine gracefully, then the daemon.",
    )
    _add_config_option(down)
    _add_json_result(down)
    down.set_defaults(handler=_APP + "down")


def _add_status(commands: Commands) -> None:
    status = _command(
        commands,
        "status",
        "the app's machines and their state",
        "Show the app's release and every machine: state, restarts, checks, address, ports, "
        "and where the edge listens. Needs the daemon (`taxiway up`).",
    )
    _add_config_option(status)
    status.add_argument(
        "--json",
        action="store_true",
        help="print JSON (a stable shape); with --watch, one compact object per line",
    )
    status.add_argument(
        "-w", "--watch", action="store_true", help="refresh in place until Ctrl-C (`taxiway top`)"
    )
    _add_interval(status)
    status.set_defaults(handler=_APP + "status")


def _add_interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--interval",
        metavar="SECONDS",
        default="1",
        help="with --watch: seconds between refreshes, like 2 or 500ms (default 1)",
    )


def _add_top(commands: Commands) -> None:
    top = _command(
        commands,
        "top",
        "status, refreshed in place until Ctrl-C (status --watch)",
        "Show `taxiway status` refreshed in place every --interval until Ctrl-C; when "
        "the daemon goes away it says so and waits for it to come back.",
    )
    _add_config_option(top)
    _add_interval(top)
    top.set_defaults(handler=_APP + "status", watch=True, json=False)


def _add_json_result(parser: argparse.ArgumentParser, when: str = "") -> None:
    """``--json`` on a command that changes state: one object on stdout, the lines for
    people on stderr (`taxiway.cli.json_result`)."""
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"{when}print the result as one JSON object (progress goes to stderr)",
    )


def _add_scale(commands: Commands) -> None:
    scale = _command(
        commands,
        "scale",
        "machines per process group",
        "Show or set how many machines each process group runs (kept across `up`s).",
    )
    scale_commands = scale.add_subparsers(dest="scale_command", metavar="COMMAND")
    count = _command(scale_commands, "count", "set machine counts: web=3 worker=1")
    count.add_argument("counts", nargs="+", metavar="GROUP=COUNT")
    show = _command(scale_commands, "show", "counts and guest sizes")
    for sub in (count, show):
        _add_config_option(sub)
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=_APP + "scale")
    scale.set_defaults(usage_of=scale)


def _add_machine(commands: Commands) -> None:
    machine = _command(
        commands,
        "machine",
        "list and act on single machines",
        "List the app's machines, or show, start, stop, restart, suspend, destroy one, or "
        "run a command in it. A machine is named by its id or a unique start of it.",
    )
    machine_commands = machine.add_subparsers(dest="machine_command", metavar="COMMAND")
    listing = _command(machine_commands, "list", "every machine of the app")
    _add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_APP + "machine")
    for action, text in (
        ("status", "one machine in detail"),
        ("start", "start a stopped machine"),
        ("stop", "stop a machine gracefully (kill_signal, then kill_timeout)"),
        ("restart", "stop, then start"),
        ("suspend", "freeze a machine's processes"),
        ("destroy", "stop and remove a machine"),
        ("exec", "run a command in a machine's environment"),
    ):
        sub = _command(machine_commands, action, text)
        _add_config_option(sub)
        sub.add_argument("id", metavar="ID", help="machine id (or a unique prefix)")
        if action == "exec":
            sub.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
            sub.add_argument(  # before ID: whatever follows ID is the command's
                "--json",
                action="store_true",
                help="print the exit code and output as one JSON object (put it before ID)",
            )
        else:
            sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=_APP + "machine")
    machine.set_defaults(usage_of=machine)


def _add_logs(commands: Commands) -> None:
    logs = _command(
        commands,
        "logs",
        "machines' output, with timestamps",
        "Print the machines' output (one-off machines' too, such as the release command's), "
        "oldest first. Works without a daemon; -f follows new lines while it runs.",
    )
    _add_config_option(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--machine", metavar="ID", help="only this machine")
    logs.add_argument("--group", metavar="G", help="only this process group")
    logs.add_argument("--json", action="store_true", help="one JSON object per line")
    logs.add_argument(
        "--since",
        metavar="WHEN",
        help="only lines from then on: a duration back, like 10m or 1h30m, or a moment, like "
        "2026-12-03T12:00:00Z (UTC unless it says otherwise)",
    )
    logs.set_defaults(handler=_APP + "logs")


def _add_dashboard(commands: Commands) -> None:
    dashboard = _command(
        commands,
        "dashboard",
        "open the running app's live web dashboard",
        "Print the address of the app's web dashboard (served by the daemon on 127.0.0.1, "
        "with a token only this state folder's owner can read) and open it in a browser: "
        "machines, edge listeners, releases, deploys, logs and charts, live. Needs the "
        "daemon (`taxiway up`).",
    )
    _add_config_option(dashboard)
    dashboard.add_argument(
        "--no-open", action="store_true", help="only print the address, open no browser"
    )
    dashboard.add_argument(
        "--json", action="store_true", help='print {"app", "url", "port"} as one JSON object'
    )
    dashboard.set_defaults(handler="taxiway.cli.dashboard_cmd:dashboard")


def _add_secrets(commands: Commands) -> None:
    secrets = _command(
        commands,
        "secrets",
        "the app's secrets (values are never shown)",
        "Set, unset, list or import the app's secrets. Every machine gets them as "
        "environment variables; a change restarts the running machines and makes a release.",
    )
    secret_commands = secrets.add_subparsers(dest="secrets_command", metavar="COMMAND")
    set_ = _command(secret_commands, "set", "set NAME=VALUE ... (restarts machines)")
    set_.add_argument("assignments", nargs="+", metavar="NAME=VALUE")
    unset = _command(secret_commands, "unset", "remove secrets by name")
    unset.add_argument("names", nargs="+", metavar="NAME")
    listing = _command(secret_commands, "list", "names and digests")
    listing.add_argument("--json", action="store_true", help="print JSON")
    imported = _command(secret_commands, "import", "read NAME=VALUE lines from stdin")
    for sub in (set_, unset, imported):
        _add_json_result(sub)
    for sub in (set_, unset, listing, imported):
        _add_config_option(sub)
        sub.set_defaults(handler="taxiway.cli.secrets_cmd:secrets")
    secrets.set_defaults(usage_of=secrets)


def _add_console(commands: Commands) -> None:
    console = _command(
        commands,
        "console",
        "run console_command in a throwaway machine, interactively",
        "Run console_command (or --command) in a throwaway machine with the app's "
        "environment and secrets, attached to this terminal; it is removed afterwards.",
    )
    _add_config_option(console)
    console.add_argument("--command", metavar="CMD", help="run this instead of console_command")
    console.set_defaults(handler="taxiway.cli.secrets_cmd:console")


def _add_volumes(commands: Commands) -> None:
    volumes = _command(
        commands,
        "volumes",
        "the app's volumes (data outlives machines)",
        "List, create, update, extend or destroy the app's volumes: folders under "
        ".taxiway/volumes that machines mount and that outlive them; take, list and restore "
        "their snapshots.",
    )
    volume_commands = volumes.add_subparsers(dest="volumes_command", metavar="COMMAND")
    vlist = _command(volume_commands, "list", "every volume of the app")
    vlist.add_argument("--json", action="store_true", help="print JSON")
    vcreate = _command(volume_commands, "create", "create an unattached volume")
    vcreate.add_argument("name")
    vcreate.add_argument(
        "--size",
        type=float,
        default=None,
        help="size in GB (default 1, or the snapshot's volume size with --snapshot-id)",
    )
    vcreate.add_argument(
        "--snapshot-id", metavar="ID", help="restore the snapshot ID's data into the new volume"
    )
    vupdate = _command(volume_commands, "update", "change how a volume is snapshotted")
    vupdate.add_argument("id", help="volume id or name")
    for sub in (vcreate, vupdate):
        sub.add_argument(
            "--snapshot-retention",
            type=int,
            metavar="DAYS",
            help="days each new snapshot is kept, 1-60 (default 5)",
        )
        sub.add_argument(
            "--scheduled-snapshots",
            type=_on_off,
            metavar="on|off",
            help="whether the daemon takes a daily snapshot (default on)",
        )
    vextend = _command(volume_commands, "extend", "grow a volume")
    vextend.add_argument("id")
    vextend.add_argument("--size", type=float, required=True, help="new size in GB")
    vdestroy = _command(volume_commands, "destroy", "delete a volume and its data")
    vdestroy.add_argument("id")
    vsnapshots = _command(
        volume_commands,
        "snapshots",
        "a volume's snapshots (daily, and on demand)",
        "List or take snapshots of a volume: archives under .taxiway/snapshots, kept for the "
        "volume's snapshot retention. A started machine using the volume is paused for the "
        "copy. `volumes create NAME --snapshot-id ID` restores one.",
    )
    snapshot_commands = vsnapshots.add_subparsers(dest="snapshots_command", metavar="COMMAND")
    slist = _command(snapshot_commands, "list", "the volume's snapshots, newest first")
    slist.add_argument("--json", action="store_true", help="print JSON")
    screate = _command(snapshot_commands, "create", "snapshot the volume now")
    _add_json_result(screate)
    for sub in (slist, screate):
        sub.add_argument("volume", help="volume id or name")
        _add_config_option(sub)
        sub.set_defaults(handler="taxiway.cli.volumes_cmd:volumes", volumes_command="snapshots")
    vsnapshots.set_defaults(usage_of=vsnapshots)
    for sub in (vcreate, vupdate, vextend, vdestroy):
        _add_json_result(sub)
    for sub in (vlist, vcreate, vupdate, vextend, vdestroy):
        _add_config_option(sub)
        sub.set_defaults(handler="taxiway.cli.volumes_cmd:volumes")
    volumes.set_defaults(usage_of=volumes)


def _on_off(value: str) -> bool:
    """``on``/``off`` (or true/false, yes/no) as a flag's value."""
    lowered = value.lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")


def _add_state(commands: Commands) -> None:
    state = commands.add_parser("state", help="the app's state folder (.taxiway)")
    state_commands = state.add_subparsers(dest="state_command", metavar="COMMAND")
    recover = state_commands.add_parser(
        "recover",
        help="start again from a lost or damaged taxiway.db, keeping the volume folders "
        "as unattached volumes",
    )
    _add_config_option(recover)
    recover.set_defaults(handler="taxiway.cli.state_cmd:state")
    state.set_defaults(usage_of=state)


def _add_checks(commands: Commands) -> None:
    checks = _command(
        commands,
        "checks",
        "the machines' health checks and their status",
        "List the health checks of every machine: service checks (they gate routing) and "
        "top-level checks, with their status and last output.",
    )
    check_commands = checks.add_subparsers(dest="checks_command", metavar="COMMAND")
    clist = _command(check_commands, "list", "every check of every machine: status and last output")
    _add_config_option(clist)
    clist.add_argument("--json", action="store_true", help="print JSON")
    clist.set_defaults(handler="taxiway.cli.checks_cmd:checks")
    checks.set_defaults(usage_of=checks)


def _add_certs(commands: Commands) -> None:
    certs = commands.add_parser(
        "certs",
        help="the local CA behind the edge's https, and how to trust it",
        description=(
            "Print the local certificate authority the edge issues its TLS certificates "
            "from, and how to trust it. Creates it when needed; no daemon required."
        ),
    )
    _add_config_option(certs)
    certs.add_argument("--json", action="store_true", help="print JSON")
    certs.add_argument(
        "--add",
        nargs="+",
        metavar="HOSTNAME",
        help="also issue certificates for these names (remembered)",
    )
    certs.set_defaults(handler="taxiway.cli.certs_cmd:certs")


def _add_api(commands: Commands) -> None:
    """`api token`: what a Machines API client needs."""
    api = _command(
        commands,
        "api",
        "the Machines API the daemon serves (its token)",
        "The daemon serves the platform's Machines REST API on 127.0.0.1 (its address is "
        "`status --json`'s api.url); every request needs `Authorization: Bearer <token>`.",
    )
    api_commands = api.add_subparsers(dest="api_command", metavar="COMMAND")
    token = _command(api_commands, "token", "print the API token (made on first use)")
    _add_config_option(token)
    token.add_argument("--json", action="store_true", help='print {"token": …}')
    token.set_defaults(handler="taxiway.cli.api_cmd:api")
    api.set_defaults(usage_of=api)


def _add_daemon(commands: Commands) -> None:
    daemon = commands.add_parser("daemon")  # started by `up -d`; not for people
    daemon.add_argument("-c", "--config", required=True)
    daemon.add_argument("--driver", default="auto")
    _add_daemon_options(daemon)
    daemon.set_defaults(handler=_APP + "daemon")


_DEPLOY = "taxiway.cli.deploy_cmd:"


def _add_deploy(commands: Commands) -> None:
    """`deploy`: roll out a new release."""
    deploy = commands.add_parser(
        "deploy",
        help="roll out the config file as a new release, with the deploy strategy",
        description=(
            "Roll out fly.toml as a new release on the running app: release_command, "
            "machine_checks, then the strategy. A failed deploy puts the previous release "
            "back (--no-rollback keeps the platform's behaviour). With no daemon running, "
            "it starts the app like `up -d`."
        ),
    )
    _add_config_option(deploy)
    deploy.add_argument(
        "--strategy",
        choices=("rolling", "immediate", "canary", "bluegreen"),
        help="overrides [deploy] strategy (default rolling)",
    )
    deploy.add_argument(
        "--wait-timeout",
        metavar="DURATION",
        help="how long each wait for a machine may take, like 30s or 5m (default 5m)",
    )
    deploy.add_argument(
        "--max-unavailable",
        type=float,
        metavar="N",
        help="rolling: machines down at once, a count >= 1 or a fraction (default 0.33)",
    )
    deploy.add_argument(
        "--detach", action="store_true", help="return at once; the deploy goes on in the daemon"
    )
    deploy.add_argument(
        "--no-rollback",
        action="store_true",
        help="on failure, leave updated machines on the new release (the platform's way)",
    )
    deploy.add_argument(
        "--no-smoke-checks",
        action="store_true",
        help="don't watch each new machine 10s for a crash (still waits for its checks)",
    )
    deploy.add_argument(
        "--under-load",
        type=float,
        metavar="RATE",
        help="send RATE requests/s through the edge while deploying; fails if any fails",
    )
    _add_json_result(deploy)
    deploy.set_defaults(handler=_DEPLOY + "deploy")


def _add_releases(commands: Commands) -> None:
    """`releases [rollback]`: look back, and go back."""
    releases = _command(
        commands,
        "releases",
        "the app's releases, newest first",
        "List the app's releases, newest first: status, strategy, config digest, the "
        "one-off machine that ran the release command and its exit code. `releases "
        "rollback` deploys an earlier one again.",
    )
    _add_config_option(releases)
    releases.add_argument("--json", action="store_true", help="print JSON")
    releases.set_defaults(handler=_DEPLOY + "releases", releases_command=None)
    release_commands = releases.add_subparsers(dest="releases_command", metavar="COMMAND")
    rollback = _command(
        release_commands,
        "rollback",
        "deploy an earlier release's config again (default: the previous complete one)",
    )
    rollback.add_argument(  # SUPPRESS: `releases -c F rollback` keeps the parent's -c
        "-c", "--config", metavar="PATH", default=argparse.SUPPRESS, help="as for releases"
    )
    rollback.add_argument("version", nargs="?", metavar="VERSION", help="e.g. 3 or v3")
    rollback.add_argument("--detach", action="store_true", help="return at once")
    rollback.add_argument("--no-smoke-checks", action="store_true", help="as for deploy")
    rollback.add_argument(  # SUPPRESS: `releases --json rollback` keeps the parent's --json
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the result as one JSON object (progress goes to stderr)",
    )
    rollback.set_defaults(handler=_DEPLOY + "releases")


#: Every command, in the order `taxiway --help` lists them.
_COMMANDS: dict[str, Callable[[Commands], None]] = {
    "config": _add_config,
    "up": _add_up,
    "down": _add_down,
    "status": _add_status,
    "top": _add_top,
    "scale": _add_scale,
    "machine": _add_machine,
    "logs": _add_logs,
    "dashboard": _add_dashboard,
    "secrets": _add_secrets,
    "console": _add_console,
    "volumes": _add_volumes,
    "state": _add_state,
    "checks": _add_checks,
    "certs": _add_certs,
    "api": _add_api,
    "deploy": _add_deploy,
    "releases": _add_releases,
    "daemon": _add_daemon,
}
#: Commands that are not for people (`up -d` starts the daemon): only parsed when used,
#: so no usage message or --help lists them.
_HIDDEN = frozenset({"daemon"})


def main(
    argv: Sequence[str] | None = None, *, on_imported: Callable[[], None] | None = None
) -> int:
    """Run the command in ``argv`` (default: the process's); ``on_imported`` is called once
    the command's module is imported, before it runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in _COMMANDS else None)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "usage_of", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    module_name, func_name = handler.split(":")
    from taxiway.errors import TaxiwayError

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        if on_imported is not None:
            on_imported()
        return int(func(args) or EXIT_OK)
    except TaxiwayError as exc:
        print(f"taxiway: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RecursionError:
        print("taxiway: error: the config is nested too deeply to read", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # the environment: a full disk, a name too long, …
        from taxiway.errors import os_error_sentence

        print(f"taxiway: error: {os_error_sentence(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug: say so plainly, with where to look
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"taxiway: internal error (a bug, please report it): {type(exc).__name__}: {exc} "
            f"at {where.filename}:{where.lineno}",
            file=sys.stderr,
        )
        return EXIT_BUG


def run() -> NoReturn:
    """The `taxiway` executable (and `python -m taxiway`): `main`, then leave without
    Python's interpreter teardown.

    Tearing down the ~250 modules a command has imported costs 30-50 ms on a small VM,
    often more than the command itself, and frees nothing the kernel won't: whatever a
    command writes is closed by then (files in `with` blocks, logs and the state store
    on raw descriptors and committed as they go). `main` stays a plain function, for
    tests and for callers that embed it.
    """
    # No cyclic garbage collection while the command's modules import (the collector
    # would run dozens of times over import-time objects that are all kept); the command
    # itself runs with it, as it may run for hours (`up`, `logs -f`).
    gc.disable()
    code = main(on_imported=gc.enable)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: nothing left to say
        pass
    os._exit(code)
