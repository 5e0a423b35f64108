"""The per-app daemon: one asyncio process wiring the store, the runtime and the API.

It holds an exclusive lock on ``.taxiway/daemon.lock`` for its whole life, so a
second `taxiway up` for the same app can tell one is running instead of starting
twice; a socket file left by a dead daemon is recognised (nobody holds the lock)
and replaced. The lock is taken with the rest of the start-up's settling
(`taxiway.daemon_startup`): by `up -d`'s command or the daemon it forked, before the
loop runs (`taxiway.daemon_fork`), else here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxiway.api.paths import AppPaths
from taxiway.config.loader import LoadedConfig
from taxiway.daemon_options import DaemonOptions
from taxiway.daemon_startup import StartUp, prepare, write_lock_holder
from taxiway.errors import TaxiwayError
from taxiway.machines_api.slot import MachinesApiSlot
from taxiway.private_net.slot import PrivateNetSlot
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.drivers import make_driver
from taxiway.runtime.early import EarlyMachine
from taxiway.runtime.machine import SupervisedMachine
from taxiway.runtime.oneoff import ReleaseCommandFailed, ReleaseCommandInterrupted, last_lines
from taxiway.state.store import Store
from taxiway.volumes.schedule import SnapshotSlot

if TYPE_CHECKING:
    from taxiway.edge.app import AppEdge


async def serve(
    loaded: LoadedConfig,
    *,
    options: DaemonOptions | None = None,
    startup: StartUp | None = None,
    on_ready: Callable[[AppRuntime], None] | None = None,
    on_machine: Callable[[SupervisedMachine], None] | None = None,
    on_release_output: Callable[[dict[str, Any]], None] | None = None,
    on_hint: Callable[[SupervisedMachine, str], None] | None = None,
    early: Sequence[EarlyMachine] = (),
    api_socket: socket.socket | None = None,
    store: Store | None = None,
) -> int:
    """Run the app until SIGINT/SIGTERM or `taxiway down`; returns an exit code.
    ``startup``: what was settled for this daemon (its lock included) before it had a
    loop; without it the daemon settles it here (`taxiway.daemon_startup.prepare`).
    ``on_hint``: called with each new hint about a machine (`up` prints it);
    ``early``: the machines it launched before (`taxiway.runtime.early`), to supervise;
    ``api_socket``, ``store``: the API's socket and the state store, when they were
    opened before (the daemon closes them). ``on_release_output``: each line of the
    release command's output as it comes (else it is echoed if the command fails); a
    stop while it runs (Ctrl-C, SIGTERM, `down`) stops it and fails `up`."""
    from taxiway.api.server import ApiServer, build_router

    options = options or DaemonOptions()
    paths = AppPaths.for_config(loaded.source.path)
    if startup is None:
        startup = prepare(
            loaded,
            paths,
            options.driver,
            asked_by=options.driver_asked_by,
            progress=lambda line: print(line, flush=True),
        )
    else:
        write_lock_holder(startup.lock_fd)
    app_name, release = startup.app, startup.release
    if store is None:
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
        driver_reason=startup.driver_reason,
    )
    try:
        runtime.load_image()
    except BaseException:
        os.close(startup.lock_fd)
        raise
    runtime.on_machine = on_machine
    runtime.on_release_output = on_release_output
    runtime.on_hint = on_hint
    runtime.edge_host = options.edge_host
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.set)
    server = ApiServer(build_router(runtime, shutdown))
    edge = EdgeSlot(runtime, paths, options)
    metrics = MetricsSlot(runtime, edge, options)
    snapshots = SnapshotSlot(runtime)
    private_net = PrivateNetSlot(runtime, say=lambda line: _notice(runtime, line))
    runtime.status_extras["private_network"] = private_net.network_facts
    machines_api = MachinesApiSlot(runtime, paths.state_dir)
    try:
        for notice in startup.notices:
            _notice(runtime, notice)
        await private_net.start()  # before machines start: their resolver must answer
        machines_api.listen.extend(private_net.api_listeners())
        await machines_api.start()  # before the socket serves: `status` names its URL
        await server.start(paths.socket, api_socket)
        try:
            await runtime.up(early, interrupt=shutdown)
        except ReleaseCommandFailed as exc:
            status = "interrupted" if isinstance(exc, ReleaseCommandInterrupted) else "failed"
            if release is not None:
                store.set_release_status(app_name, release.version, status)
            if on_release_output is None and status == "failed" and exc.machine_id:
                for line in last_lines(paths.logs, exc.machine_id):
                    print(f"release_command | {line}", file=sys.stderr)
            raise
        if release is not None:
            store.set_release_status(app_name, release.version, "complete")
        runtime.stamp_release(runtime.release)
        await edge.start()
        if on_ready is not None:
            on_ready(runtime)
        await metrics.start()
        snapshots.start()
        await shutdown.wait()
        await snapshots.close()  # before the machines stop: none is left paused
        if server.router.deployer is not None:
            await server.router.deployer.cancel()  # a deploy must not start machines now
        await runtime.down()
        return 0
    finally:
        await snapshots.close()
        await machines_api.close()
        await metrics.close()
        await edge.close()
        await private_net.close()
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
        from taxiway.edge.admission import raise_file_limit
        from taxiway.edge.app import AppEdge
        from taxiway.runtime.fleet import RuntimeFleet

        raise_file_limit()  # the edge's connection cap is a share of it

        runtime = self.runtime
        edge = AppEdge(
            RuntimeFleet(runtime),
            runtime.specs,
            base_dir=runtime.loaded.base_dir,
            certs_dir=self.paths.certs,
            host=self.options.edge_host,
            private_hosts=[runtime.flycast_address] if runtime.flycast_address else [],
            autostop_after_s=self.options.autostop_after_s,
            log=_edge_log,
        )
        await edge.start()
        self.edge = edge
        if edge.statics is not None:  # e.g. a guest_path it won't serve: `up` says so
            runtime.notices.extend(f"statics: {m}" for m in edge.statics.diagnostics)
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
                    await self.edge.reconfigure(self.runtime.specs)
            except TaxiwayError as exc:  # e.g. no port left to bind: the machines run on
                _edge_log(f"the new config's listeners could not start: {exc}")


class MetricsSlot:
    """The app's metrics (`taxiway.metrics`): made once the machines run (prometheus_client
    is not imported before `up` reports ready), served on the API socket's ``/metrics``
    and, with ``--metrics-port``, on 127.0.0.1."""

    def __init__(self, runtime: AppRuntime, edge: EdgeSlot, options: DaemonOptions) -> None:
        self.runtime = runtime
        self.edge = edge
        self.options = options
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        from taxiway.metrics.registry import MetricsHub

        hub = MetricsHub(
            self.runtime,
            lambda: self.edge.edge.edge if self.edge.edge is not None else None,
            interval_s=_metrics_interval(),
        )
        self.runtime.metrics = hub
        hub.start()
        if self.options.metrics_port is not None:
            from taxiway.metrics.port import serve_metrics

            try:
                self._server = await serve_metrics(self.options.metrics_port, hub.render)
            except TaxiwayError as exc:  # the app runs on; the API socket still serves it
                print(f"metrics | {exc}", flush=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.runtime.metrics is not None:
            await self.runtime.metrics.close()


def _metrics_interval() -> float:
    """The scrape interval: the platform's 15 s; ``TAXIWAY_METRICS_INTERVAL_S`` sets
    another (tests)."""
    from taxiway.metrics.scraper import INTERVAL_S

    try:
        value = float(os.environ.get("TAXIWAY_METRICS_INTERVAL_S") or INTERVAL_S)
    except ValueError:
        return INTERVAL_S
    return value if value > 0 else INTERVAL_S


def _notice(runtime: AppRuntime, line: str) -> None:
    """Something `up` tells the user (and `up -d` relays)."""
    runtime.notices.append(line)
    print(line, flush=True)


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
    # Machines need no child watcher: their processes are reaped through pidfds
    # (`taxiway.runtime.drivers.handle`); only `machine exec` uses asyncio's.
    with asyncio.Runner() as runner:
        return runner.run(main)


def daemon_main(config: Path, options: DaemonOptions) -> int:
    """Entry of the detached daemon (`taxiway up -d` starts it)."""
    from taxiway.config.loader import load_config

    loaded = load_config(config)
    return run_loop(serve(loaded, options=options), loaded)
