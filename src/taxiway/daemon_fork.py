"""The daemon `taxiway up -d` forks (`taxiway.cli.app_cmd._up_detached`): its first
steps, before it imports asyncio.

The command checks the config while the daemon imports what needs no event loop, then
sends it the config (`taxiway.daemon_startup.send_config`). From there, one of two ways:

- Launch first (`taxiway.daemon_startup.may_launch_first`): the daemon settles its
  start-up itself (the lock, a dead daemon's leftovers, the release), launches the
  machines (`taxiway.runtime.early`), binds the API's socket, reports every machine
  started, and only then imports asyncio and the rest; the runtime takes the running
  processes over.
- Otherwise the daemon imports its machinery (asyncio, the runtime, the API; ~30 ms) on
  one core while the command, on the other, settles the start-up
  (`taxiway.daemon_startup.prepare`) and hands it over with the lock.

Either way the daemon reports one line on the ready pipe, ``ready <status JSON>`` or
``error <sentence>``, after the release command's output (``output <log line JSON>``);
`up -d` prints it and exits, the daemon runs on. Until the config
arrives the daemon has written nothing, so a config with errors just closes the channel
and the daemon leaves without a trace.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from taxiway.api.paths import AppPaths
from taxiway.config.loader import LoadedConfig
from taxiway.daemon_channel import receive_config, take_over
from taxiway.daemon_options import DaemonOptions
from taxiway.daemon_startup import StartUp, prepare
from taxiway.errors import TaxiwayError
from taxiway.runtime.early import EarlyMachine

if TYPE_CHECKING:
    from taxiway.state.store import Store

#: What serving an app imports beyond `taxiway.daemon`; the namespace driver's module
#: too unless `--driver process` rules it out.
_SERVING_MODULES = (
    "taxiway.daemon",
    "taxiway.api.server",
    "taxiway.runtime.drivers.handle",
)
_NAMESPACE_DRIVER = "taxiway.runtime.drivers.namespace"


class ReadyPipe:
    """The daemon's one report to `up -d`: sent once, whatever comes after."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def ready(self, status: dict[str, object]) -> None:
        self._send("ready " + json.dumps(status))

    def error(self, sentence: str) -> None:
        self._send("error " + sentence)

    def output(self, entry: dict[str, object]) -> None:
        """A line of the release command's output, for `up -d` to print before the
        report (the pipe stays open)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._fd, ("output " + json.dumps(entry) + "\n").encode())

    def close(self) -> None:
        """Close without a word (the command sent nothing: it knows why)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _send(self, text: str) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._fd, (text + "\n").encode())
            self.close()


def run_forked(channel_fd: int, ready_fd: int, options: DaemonOptions) -> int:
    """The forked daemon, from the config's arrival to its exit code.

    The caller turned the cyclic collector off before importing this module; it comes
    back on once the daemon's modules are in (frozen: they live as long as it does)."""
    report = ReadyPipe(ready_fd)
    with socket.socket(fileno=channel_fd) as channel:
        received = receive_config(channel)
        if received is None:
            report.close()
            return 0
        loaded, paths, launch_first = pickle.loads(received)
        if launch_first:
            channel.close()  # the command waits for the report alone
            return _launch_first(loaded, paths, options, report)
        _import_serving(options.driver)
        took = take_over(channel)
    if took is None:
        report.close()
        return 0
    payload, lock_fd = took
    startup = msgspec.structs.replace(pickle.loads(payload), lock_fd=lock_fd)
    os.setsid()
    _log_to(paths)
    return _reporting(report, lambda: _serve(loaded, options, startup, report))


def _launch_first(
    loaded: LoadedConfig, paths: AppPaths, options: DaemonOptions, report: ReadyPipe
) -> int:
    """Settle the start-up, launch the machines and report them, then import the rest."""
    from taxiway.state.store import Store

    os.setsid()  # from here on, a Ctrl-C of `up -d` doesn't stop the daemon half-way
    try:
        store = Store.open(paths.state_dir)  # one connection from here to the end
        try:
            startup = prepare(
                loaded, paths, options.driver, store=store, asked_by=options.driver_asked_by
            )
        except BaseException:
            store.close()
            raise
    except TaxiwayError as exc:  # e.g. the app already runs: its daemon's log isn't ours
        report.error(str(exc))
        return 1
    except BaseException as exc:  # a bug: its trace goes to the terminal, still ours
        report.error(_bug(exc))
        raise
    _log_to(paths)

    def launch_and_serve() -> int:
        early, api_socket = _launch(loaded, paths, startup, store, report)
        try:
            _import_serving(startup.driver)
            return _serve(
                loaded, options, startup, report, early=early, api_socket=api_socket, store=store
            )
        except BaseException:  # the daemon ends: its machines must not outlive it
            from taxiway.runtime.leftovers import kill_group

            for machine in early:
                info = machine.info
                if info.pid is not None and info.pgid is not None:
                    kill_group(info.pid, info.pgid, info.pid_start_time)
            raise

    return _reporting(report, launch_and_serve)


def _launch(
    loaded: LoadedConfig, paths: AppPaths, startup: StartUp, store: Store, report: ReadyPipe
) -> tuple[list[EarlyMachine], socket.socket | None]:
    """Launch the machines and report them, when the host's driver is the process
    driver and no machine has to be destroyed first (`taxiway.runtime.early`); else
    nothing (the runtime starts them once the loop runs)."""
    if startup.driver != "process":
        return [], None
    from taxiway.api.listener import listen_unix
    from taxiway.runtime.drivers.process import ProcessDriver
    from taxiway.runtime.early import launch_early
    from taxiway.runtime.roster import MachineRoster

    driver = ProcessDriver()
    roster = MachineRoster(
        loaded,
        app=startup.app,
        state_dir=paths.state_dir,
        store=store,
        driver=driver,
        driver_reason=startup.driver_reason,
    )
    early = launch_early(roster, driver)
    if early is None:
        return [], None
    api_socket = listen_unix(paths.socket)
    status = roster.status_document(((m.info, {}) for m in early), edge=[])
    report.ready(status | {"notices": startup.notices})
    return early, api_socket


def _import_serving(driver: str) -> None:
    """Import what serving the app needs, then turn the cyclic collector back on."""
    import importlib

    modules = _SERVING_MODULES if driver == "process" else (*_SERVING_MODULES, _NAMESPACE_DRIVER)
    for name in modules:
        importlib.import_module(name)
    gc.freeze()
    gc.enable()


def _serve(
    loaded: LoadedConfig,
    options: DaemonOptions,
    startup: StartUp,
    report: ReadyPipe,
    *,
    early: Sequence[EarlyMachine] = (),
    api_socket: socket.socket | None = None,
    store: Store | None = None,
) -> int:
    from taxiway.daemon import run_loop, serve

    return run_loop(
        serve(
            loaded,
            options=options,
            startup=startup,
            early=early,
            api_socket=api_socket,
            store=store,
            on_ready=lambda runtime: report.ready(runtime.status() | {"notices": runtime.notices}),
            on_release_output=report.output,
        ),
        loaded,
    )


def _log_to(paths: AppPaths) -> None:
    """Leave the terminal: no stdin, stdout and stderr to daemon.log."""
    log_fd = os.open(paths.daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


def _reporting(report: ReadyPipe, body: Callable[[], int]) -> int:
    """Run the detached daemon's ``body``, telling `up -d` how it ended if it ends
    before reporting (errors to daemon.log too; a bug's trace stays there)."""
    import traceback

    try:
        return body()
    except TaxiwayError as exc:
        print(f"taxiway: error: {exc}", file=sys.stderr)
        report.error(str(exc))
        return 1
    except BaseException as exc:
        traceback.print_exc()
        report.error(_bug(exc))
        return 70
    finally:
        report.error("the daemon stopped before every machine started")
        sys.stdout.flush()
        sys.stderr.flush()


def _bug(exc: BaseException) -> str:
    return f"internal error (a bug, please report it): {type(exc).__name__}: {exc}"
