"""The per-app daemon: one asyncio process wiring the store, the runtime and the API.

It holds an exclusive lock on ``.taxiway/daemon.lock`` for its whole life, so a
second `taxiway up` for the same app can tell one is running instead of starting
twice; a socket file left by a dead daemon is recognised (nobody holds the lock)
and replaced. The lock is taken with the rest of the start-up's settling
(`taxiway.daemon_startup`), by `up -d`'s command process when it forked the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from taxiway.api.paths import AppPaths
from taxiway.config.loader import LoadedConfig
from taxiway.daemon_options import DaemonOptions
from taxiway.daemon_startup import StartUp, prepare, take_over, write_lock_holder
from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.drivers import make_driver
from taxiway.runtime.machine import SupervisedMachine
from taxiway.runtime.oneoff import ReleaseCommandFailed, last_lines
from taxiway.state.store import Store

if TYPE_CHECKING:
    from taxiway.edge.app import AppEdge


async def serve(
    loaded: LoadedConfig,
    *,
    options: DaemonOptions | None = None,
    startup: StartUp | None = None,
    on_ready: Callable[[AppRuntime], None] | None = None,
    on_machine: Callable[[SupervisedMachine], None] | None = None,
) -> int:
    """Run the app until SIGINT/SIGTERM or `taxiway down`; returns an exit code.
    ``startup``: what `up -d`'s command settled for this daemon (its lock included);
    without it the daemon settles it here (`taxiway.daemon_startup.prepare`)."""
    from taxiway.api.server import ApiServer, build_router

    options = options or DaemonOptions()
    paths = AppPaths.for_config(loaded.source.path)
    if startup is None:
        startup = prepare(loaded, paths, options.driver)
    else:
        write_lock_holder(startup.lock_fd)
    app_name, release = startup.app, startup.release
    try:
        store = Store.open(paths.state_dir)
    except BaseException:
        os.close(startup.lock_fd)
        raise
    runtime = AppRuntime(
        loaded,
        app=app_name,
        state_dir=paths.state_dir,
        store=store,
        driver=make_driver(startup.driver),
    )
    runtime.on_machine = on_machine
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.set)
    server = ApiServer(build_router(runtime, shutdown))
    edge = EdgeSlot(runtime, paths, options)
    try:
        await server.start(paths.socket)
        for notice in startup.notices:
            runtime.notices.append(notice)
            print(notice, flush=True)
        try:
            await runtime.up()
        except ReleaseCommandFailed as exc:
            if release is not None:
                store.set_release_status(app_name, release.version, "failed")
            for line in last_lines(paths.logs, exc.machine_id) if exc.machine_id else ():
                print(f"release_command | {line}", file=sys.stderr)
            raise
        if release is not None:
            store.set_release_status(app_name, release.version, "complete")
        runtime.stamp_release(runtime.release)
        await edge.start()
        if on_ready is not None:
            on_ready(runtime)
        await shutdown.wait()
        if server.router.deployer is not None:
            await server.router.deployer.cancel()  # a deploy must not start machines now
        await runtime.down()
        return 0
    finally:
        await edge.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close()
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        store.close()
        os.close(startup.lock_fd)


class EdgeSlot:
    """The app's edge, once the app has something for it to serve (a service or a
    static): made at start-up, or by the first deploy that adds one; from then on it
    follows every config a deploy applies. An app without either never imports the
    edge's modules."""

    def __init__(self, runtime: AppRuntime, paths: AppPaths, options: DaemonOptions) -> None:
        self.runtime = runtime
        self.paths = paths
        self.options = options
        self.edge: AppEdge | None = None
        self._order = asyncio.Lock()  # two deploys' configs apply in the order they came
        self._pending: set[asyncio.Task[None]] = set()
        runtime.on_config.append(self._config_applied)

    async def start(self) -> None:
        """Start the edge if the app's current config has something for it."""
        async with self._order:
            await self._start()

    async def _start(self) -> None:
        if self.edge is not None or not any(
            spec.services or spec.statics for spec in self.runtime.specs.values()
        ):
            return
        from taxiway.edge.app import AppEdge
        from taxiway.runtime.fleet import RuntimeFleet

        runtime = self.runtime
        edge = AppEdge(
            RuntimeFleet(runtime),
            runtime.specs,
            runtime.loaded.config,
            base_dir=runtime.loaded.base_dir,
            certs_dir=self.paths.certs,
            host=self.options.edge_host,
            autostop_after_s=self.options.autostop_after_s,
            log=_edge_log,
        )
        await edge.start()
        self.edge = edge
        runtime.before_stop = edge.drain
        runtime.edge_bindings = edge.bindings

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self.edge is not None:
            await self.edge.close()

    def _config_applied(self) -> None:
        task = asyncio.get_running_loop().create_task(self._follow())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _follow(self) -> None:
        async with self._order:
            try:
                if self.edge is None:
                    await self._start()
                else:
                    await self.edge.reconfigure(self.runtime.specs, self.runtime.loaded.config)
            except TaxiwayError as exc:  # e.g. no port left to bind: the machines run on
                _edge_log(f"the new config's listeners could not start: {exc}")


def _edge_log(message: str) -> None:
    print(f"edge | {message}", flush=True)


def run_loop(main: Coroutine[Any, Any, int], loaded: LoadedConfig) -> int:
    """Run the daemon's event loop: uvloop when the app has services (the edge's speed
    depends on it), plain asyncio otherwise (uvloop's import would only slow start-up)."""
    config = loaded.config
    if config.services or config.http_service is not None:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    with asyncio.Runner() as runner:
        _watch_children_with_pidfds(runner.get_loop())
        return runner.run(main)


def _watch_children_with_pidfds(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11's default child watcher starts a thread for every child process (at
    50 machines, 50 threads, each a millisecond or two to start before the machine
    counts as started); a pidfd costs one file descriptor and no thread. 3.12 picks
    pidfds by itself; kernels before 5.3 have none and keep the default."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    asyncio.set_child_watcher(watcher)


#: What serving an app imports beyond this module; the namespace driver's module too
#: unless `--driver process` rules it out.
_SERVING_MODULES = (
    "taxiway.api.server",
    "taxiway.runtime.drivers.process",
    "taxiway.runtime.drivers.handle",
)
_NAMESPACE_DRIVER = "taxiway.runtime.drivers.namespace"


def run_forked(channel_fd: int, ready_fd: int, options: DaemonOptions) -> int:
    """The daemon `taxiway up -d` forks (`taxiway.cli.app_cmd._up_detached`): import what
    serving needs while the command checks the config and settles the start-up
    (`taxiway.daemon_startup.prepare`), then run the ``(LoadedConfig, AppPaths, StartUp)``
    it hands over on ``channel_fd`` with the app's lock; leave without a trace when it
    hands over nothing (the config had errors, or the app already runs).

    The caller turned the cyclic collector off before importing this module; it comes
    back on here, once the modules are in (frozen: they live as long as the daemon)."""
    import gc
    import importlib
    import pickle

    modules = (
        _SERVING_MODULES if options.driver == "process" else (*_SERVING_MODULES, _NAMESPACE_DRIVER)
    )
    for name in modules:  # serve() would import them later, one after the other
        importlib.import_module(name)
    gc.freeze()
    gc.enable()
    received = take_over(channel_fd)
    if received is None:
        os.close(ready_fd)
        return 0
    payload, lock_fd = received
    loaded, paths, startup = pickle.loads(payload)
    startup = msgspec.structs.replace(startup, lock_fd=lock_fd)
    return run_detached(loaded, paths, options, ready_fd, startup)


def run_detached(
    loaded: LoadedConfig,
    paths: AppPaths,
    options: DaemonOptions,
    ready_fd: int,
    startup: StartUp,
) -> int:
    """The body of a forked daemon (`up -d`): detach, log to daemon.log, report on ``ready_fd``.

    Writes ``ready <status JSON>`` once every machine has started, or ``error
    <sentence>``; the parent prints that and exits, the daemon runs on.
    """
    import traceback

    os.setsid()
    log_fd = os.open(paths.daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)

    def report(text: str) -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(ready_fd, (text + "\n").encode())
                os.close(ready_fd)
            ready_fd = -1

    try:
        return run_loop(
            serve(
                loaded,
                options=options,
                startup=startup,
                on_ready=lambda runtime: report(
                    "ready " + json.dumps(runtime.status() | {"notices": runtime.notices})
                ),
            ),
            loaded,
        )
    except TaxiwayError as exc:
        print(f"taxiway: error: {exc}", file=sys.stderr)
        report(f"error {exc}")
        return 1
    except BaseException as exc:  # a bug: keep the trace in daemon.log, tell the parent
        traceback.print_exc()
        report(f"error internal error (a bug, please report it): {type(exc).__name__}: {exc}")
        return 70
    finally:
        report("error the daemon stopped before every machine started")
        sys.stdout.flush()
        sys.stderr.flush()


def daemon_main(config: Path, options: DaemonOptions) -> int:
    """Entry of the detached daemon (`taxiway up -d` starts it)."""
    from taxiway.config.loader import load_config

    loaded = load_config(config)
    return run_loop(serve(loaded, options=options), loaded)
