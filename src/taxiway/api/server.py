"""The daemon's HTTP API, shaped like the Machines API (``/v1/apps/{app}/machines/…``).

HTTP/1.1 over the unix socket with h11 (sans-IO, imports in milliseconds; a web
framework would cost the daemon ~150 ms of start-up for a handful of local routes).
Routes translate requests into `AppRuntime` calls and errors into one-sentence JSON
answers (``{"error": "…"}``); no business rule lives here. The HTTP conversation
itself is `taxiway.api.http11`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from taxiway.api.routing import HTTPError, Request, Result, Router, Text
from taxiway.errors import TaxiwayError, os_error_sentence
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.machine import SupervisedMachine


class ApiServer:
    """Serves a `Router` on a unix socket."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, path: Path, listening: socket.socket | None = None) -> None:
        """Serve at ``path``; ``listening``: its socket, when it was bound before the loop
        ran (`taxiway.api.listener`)."""
        from taxiway.api.listener import listen_unix

        sock = listening if listening is not None else listen_unix(path)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def close(self) -> None:
        if self.router.dashboard is not None:
            with contextlib.suppress(Exception):  # it failed to start: nothing to close
                await (await self.router.dashboard).close()
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # imported on the first connection: start-up doesn't wait for h11
        from taxiway.api.http11 import serve_connection

        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await serve_connection(self.router, reader, writer)
        except asyncio.CancelledError:
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def machine_json(m: SupervisedMachine) -> dict[str, object]:
    info = m.info
    return {
        "id": m.id,
        "group": info.group,
        "state": info.state.value,
        "region": info.region,
        "private_ip": info.private_ip,
        "instance_id": info.version,
        "restarts": info.restarts,
        "backoff_s": round(info.backoff_s, 2),
        "exit_code": info.exit_code,
        "pid": info.pid,
        "ports": {str(k): v for k, v in info.ports.items()},
        "config": {
            "guest": {"cpus": m.spec.guest.cpus, "memory_mb": m.spec.guest.memory_mb},
            "metadata": {"fly_process_group": info.group, "fly_platform_version": "v2"},
        },
    }


#: What `machine_action` (the API's and the dashboard's machine buttons) may do.
MACHINE_ACTIONS = ("start", "stop", "restart", "suspend", "destroy")


async def machine_action(runtime: AppRuntime, machine_id: str, action: str) -> dict[str, object]:
    """Start, stop, restart, suspend or destroy one machine (by id or unique prefix)."""
    if action not in MACHINE_ACTIONS:
        raise TaxiwayError(f"a machine can't {action}: one of {', '.join(MACHINE_ACTIONS)}")
    machine = runtime.find(machine_id)
    if action == "destroy":
        await runtime.destroy(machine)
        return {"id": machine.id, "state": "destroyed"}
    await getattr(machine, action)()
    return machine_json(machine)


def build_router(runtime: AppRuntime, shutdown: asyncio.Event) -> Router:
    router = Router()
    base = "/v1/apps/{app}"

    def check_app(params: dict[str, str]) -> None:
        if params["app"] != runtime.app:
            raise HTTPError(404, f"this daemon runs {runtime.app}, not {params['app']}")

    def no_deploy_running(what: str) -> None:
        if router.deployer is not None:  # none before the first deploy
            router.deployer.refuse_while_running(what)

    async def ping(request: Request, params: dict[str, str]) -> Result:
        return {"app": runtime.app, "pid": os.getpid(), "ready": runtime.ready}

    async def status(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        return runtime.status()

    async def list_machines(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        return [machine_json(m) for m in runtime.machines.values()]

    async def get_machine(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        return machine_json(runtime.find(params["id"]))

    async def act(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        return await machine_action(runtime, params["id"], params["action"])

    async def exec_(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        machine = runtime.find(params["id"])
        body = request.json()
        cmd = body.get("cmd") if isinstance(body, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise TaxiwayError('exec needs {"cmd": ["program", "arg", ...]}')
        return await runtime.exec(machine, cmd, timeout_s=float(body.get("timeout", 60)))

    async def secrets(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        body = request.json()
        values = body.get("set") or {} if isinstance(body, dict) else None
        unset = body.get("unset") or [] if isinstance(body, dict) else None
        if not isinstance(values, dict) or not isinstance(unset, list):
            raise TaxiwayError('secrets needs {"set": {"NAME": "value"}} or {"unset": ["NAME"]}')
        no_deploy_running("change secrets")
        changed, restarted = await runtime.change_secrets(values, unset)
        if not changed:
            return {"changed": [], "restarted": 0}
        from taxiway.deploy.releases import release_for_secrets

        release = release_for_secrets(
            runtime.store, runtime.app, runtime.loaded, runtime.release, changed
        )
        if runtime.driver.runs_image:
            from taxiway.image.for_release import carry_over

            await asyncio.to_thread(
                carry_over, runtime.image, scope=runtime.scope, version=release.version
            )
        runtime.stamp_release(release.version)
        return {"changed": changed, "restarted": restarted, "release": release.version}

    async def get_scale(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        return _scale(runtime)

    async def set_scale(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        body = request.json()
        counts = body.get("counts") if isinstance(body, dict) else None
        if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in counts.items()
        ):
            raise TaxiwayError('scale needs {"counts": {"group": number, ...}}')
        no_deploy_running("change the scale")
        await runtime.scale(counts)
        await runtime.port_verdicts(list(runtime.machines.values()))  # `scale` prints hints
        return _scale(runtime)

    async def down(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        shutdown.set()
        return {"stopping": len(runtime.machines)}

    async def logs(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        return _logs(runtime, request.query)

    async def wait(request: Request, params: dict[str, str]) -> Result:
        """`up -d`'s wait for the machines to pass their checks (`wait_serving`): progress
        lines, then ``{"status": …}`` or ``{"error": …}``."""
        check_app(params)
        body = request.json() or {}
        timeout_s = body.get("timeout_s") if isinstance(body, dict) else None
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool):
            raise TaxiwayError('wait needs {"timeout_s": seconds}')
        from taxiway.deploy.health import wait_serving

        lines: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.ensure_future(
            wait_serving(runtime, timeout_s=float(timeout_s), progress=lines.put_nowait)
        )
        return _progress_stream(task, lines, lambda _: {"status": runtime.status()})

    async def dashboard(request: Request, params: dict[str, str]) -> Result:
        """The web dashboard's URL (with its token); its server starts on the first ask."""
        check_app(params)
        if router.dashboard is None:
            router.dashboard = asyncio.ensure_future(_start_dashboard(runtime, router))
        try:
            server = await asyncio.shield(router.dashboard)
        except Exception:
            router.dashboard = None  # e.g. no port free: the next ask tries again
            raise
        return {"url": server.url, "port": server.port}

    async def metrics(request: Request, params: dict[str, str]) -> Result:
        """Prometheus text format: the platform's series and the app's own."""
        from taxiway.metrics.exposition import CONTENT_TYPE

        hub = runtime.metrics
        if hub is None:
            raise HTTPError(503, "metrics are not ready yet; the app is starting")
        return Text(hub.render(), CONTENT_TYPE)

    async def snapshot_volume(request: Request, params: dict[str, str]) -> Result:
        """`taxiway volumes snapshots create` while the app runs: the daemon owns the
        machine to pause for the copy (`taxiway.volumes.running`)."""
        check_app(params)
        from taxiway.volumes.lookup import find_volume
        from taxiway.volumes.running import snapshot_running

        volume = find_volume(runtime.store, runtime.app, params["id"])
        return msgspec.to_builtins(await snapshot_running(runtime, volume))

    router.add("GET", "/metrics", metrics)
    router.add("GET", "/v1/ping", ping)
    router.add("GET", base + "/status", status)
    router.add("GET", base + "/machines", list_machines)
    router.add("GET", base + "/machines/{id}", get_machine)
    router.add("POST", base + "/machines/{id}/{action:start|stop|restart|suspend|destroy}", act)
    router.add("POST", base + "/machines/{id}/exec", exec_)
    router.add("POST", base + "/secrets", secrets)
    router.add("GET", base + "/scale", get_scale)
    router.add("POST", base + "/scale", set_scale)
    router.add("POST", base + "/down", down)
    router.add("GET", base + "/logs", logs)
    router.add("POST", base + "/wait", wait)
    router.add("GET", base + "/dashboard", dashboard)
    router.add("POST", base + "/volumes/{id}/snapshots", snapshot_volume)
    _add_deploy_routes(router, runtime, check_app)
    return router


async def _start_dashboard(runtime: AppRuntime, router: Router) -> Any:
    from taxiway.dashboard.server import DashboardServer

    server = DashboardServer(runtime, deployer=lambda: router.deployer)
    await server.start()
    router.deploy_watchers.append(server.state.deploy.line)
    return server


# -- deploys and releases (taxiway.deploy) ------------------------------------------------------


def _add_deploy_routes(
    router: Router, runtime: AppRuntime, check_app: Callable[[dict[str, str]], None]
) -> None:
    """``POST …/deploy`` and ``POST …/releases/rollback`` stream NDJSON progress lines
    (``{"progress": "…"}``), then ``{"release": {…}}`` or ``{"error": "…"}``; with
    ``"detach": true`` they answer at once and the deploy goes on in the daemon."""

    def deployer() -> Any:
        """The app's deployer, made on the first deploy (its modules are not imported
        while `up` starts the app)."""
        if router.deployer is None:
            from taxiway.deploy.deployer import Deployer

            router.deployer = Deployer(runtime, router.deploy_watchers)
        return router.deployer

    def options(body: Any) -> Any:
        from taxiway.deploy.deployer import DeployOptions

        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise TaxiwayError("a deploy takes a JSON object")
        try:
            return msgspec.convert(
                {k: v for k, v in body.items() if k in DeployOptions.__struct_fields__},
                DeployOptions,
            )
        except msgspec.ValidationError as exc:
            raise TaxiwayError(f"bad deploy request: {exc}") from None

    def start(deployment: Any, body: dict[str, Any]) -> Result:
        from taxiway.deploy.releases import release_json

        if body.get("detach"):
            deployer().start(deployment, _echo)
            return {"release": release_json(deployment.release, runtime.release), "detach": True}
        lines: asyncio.Queue[str] = asyncio.Queue()

        def progress(line: str) -> None:
            _echo(line)
            lines.put_nowait(line)

        return _progress_stream(
            deployer().start(deployment, progress),
            lines,
            lambda release: {"release": release_json(release, runtime.release)},
        )

    async def deploy(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        from taxiway.config.loader import load_config

        body = request.json() or {}
        opts = options(body)
        loaded = load_config(runtime.loaded.source.path, strategy=opts.strategy)
        return start(deployer().prepare(loaded, opts), body)

    async def rollback(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        body = request.json() or {}
        version = body.get("version") if isinstance(body, dict) else None
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise TaxiwayError("a rollback takes a release version number")
        return start(deployer().prepare_rollback(version, options(body)), body)

    async def interrupt(request: Request, params: dict[str, str]) -> Result:
        """A Ctrl-C of `taxiway deploy`: stop the release command if one runs."""
        check_app(params)
        ended = await router.deployer.interrupt() if router.deployer is not None else None
        return {"interrupted": ended is not None, "error": ended}

    async def releases(request: Request, params: dict[str, str]) -> Result:
        check_app(params)
        from taxiway.deploy.releases import release_json

        return [release_json(r, runtime.release) for r in runtime.store.list_releases(runtime.app)]

    base = "/v1/apps/{app}"
    router.add("POST", base + "/deploy", deploy)
    router.add("POST", base + "/deploy/interrupt", interrupt)
    router.add("GET", base + "/releases", releases)
    router.add("POST", base + "/releases/rollback", rollback)


async def _progress_stream(
    task: asyncio.Future[Any], lines: asyncio.Queue[str], result: Callable[[Any], object]
) -> AsyncIterator[bytes]:
    """Progress lines while the task (a deploy, `up -d`'s wait) works, then ``result`` of
    its value. The task runs on its own: a client that goes away does not stop it
    half-way."""
    while True:
        getter = asyncio.ensure_future(lines.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            break
        yield _ndjson({"progress": getter.result()})
    while not lines.empty():
        yield _ndjson({"progress": lines.get_nowait()})
    exc = task.exception()
    if exc is None:
        yield _ndjson(result(task.result()))
    elif isinstance(exc, TaxiwayError):
        yield _ndjson({"error": str(exc)})
    elif isinstance(exc, OSError):  # the host's doing (a full disk), not a bug
        yield _ndjson({"error": os_error_sentence(exc)})
    else:
        yield _ndjson({"error": f"internal error (a bug, please report it): {exc!r}"})


def _echo(line: str) -> None:
    """A deploy's progress in the daemon's own output too (the terminal of `up`, or
    daemon.log), so a detached deploy leaves a trace."""
    with contextlib.suppress(OSError, ValueError):
        print(f"[deploy] {line}", flush=True)


def _ndjson(data: object) -> bytes:
    return (json.dumps(data) + "\n").encode()


def _scale(runtime: AppRuntime) -> dict[str, object]:
    counts = runtime.desired_counts()
    return {
        group: {
            "count": counts[group],
            "running": sum(
                1
                for m in runtime.machines.values()
                if m.info.group == group and m.state.value == "started"
            ),
            "cpu_kind": spec.guest.cpu_kind,
            "cpus": spec.guest.cpus,
            "memory_mb": spec.guest.memory_mb,
            "size": spec.guest.size,
        }
        for group, spec in runtime.specs.items()
    }


def _logs(runtime: AppRuntime, query: dict[str, str]) -> AsyncIterator[bytes]:
    """Past lines of the selected machines (one-offs' and destroyed machines' included;
    with ``since``, a log timestamp, those from then on), then (with follow=1) the live
    machines' new ones as they come. An unknown ``machine`` is an error before anything
    streams."""
    from taxiway.runtime.logs import logged_machines, past_lines

    logs_dir = runtime.state_dir / "logs"
    machine, group = query.get("machine"), query.get("group")
    ids = logged_machines(logs_dir, runtime.app, machine, live=runtime.machines)
    groups = {
        r.id: r.group for r in runtime.store.list_machines(runtime.app, include_destroyed=True)
    }
    history = past_lines(logs_dir, ids, groups, group, since=query.get("since"))
    selected = [
        m
        for m in runtime.machines.values()
        if (not machine or m.id.startswith(machine)) and (not group or m.info.group == group)
    ]
    return _log_stream(history, selected if query.get("follow") == "1" else [])


async def _log_stream(
    history: list[dict[str, Any]], following: list[SupervisedMachine]
) -> AsyncIterator[bytes]:
    for line in history:
        yield (json.dumps(line) + "\n").encode()
    if not following:
        return
    queues = [(m, m.log.subscribe()) for m in following]
    try:
        while True:
            getters = {asyncio.ensure_future(q.get()): m for m, q in queues}
            done, pending = await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                yield _log_line(getters[task], task.result())
    finally:
        for m, q in queues:
            m.log.unsubscribe(q)


def _log_line(m: SupervisedMachine, entry: Any) -> bytes:
    from taxiway.runtime.logs import log_record

    return (json.dumps(log_record(m.id, m.info.group, entry)) + "\n").encode()
