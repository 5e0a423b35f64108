"""The daemon's HTTP API, shaped like the Machines API (``/v1/apps/{app}/machines/…``).

Routes translate requests into `AppRuntime` calls and errors into one-sentence JSON
answers (``{"error": "…"}``); no business rule lives here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.lifecycle import TransitionError
from taxiway.runtime.machine import SupervisedMachine

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TransitionError as exc:
        return _error(409, str(exc))
    except TaxiwayError as exc:
        return _error(400, str(exc))
    except web.HTTPException:
        raise
    except Exception as exc:  # a bug: answer with a sentence, keep the daemon up
        return _error(500, f"internal error (a bug, please report it): {type(exc).__name__}: {exc}")


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


def build_app(runtime: AppRuntime, shutdown: asyncio.Event) -> web.Application:
    app = web.Application(middlewares=[_errors])
    routes = web.RouteTableDef()
    base = "/v1/apps/{app}"

    def check_app(request: web.Request) -> None:
        if request.match_info["app"] != runtime.app:
            raise TaxiwayError(f"this daemon runs {runtime.app}, not {request.match_info['app']}")

    @routes.get("/v1/ping")
    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"app": runtime.app, "pid": _pid(), "ready": runtime.ready})

    @routes.get(base + "/status")
    async def status(request: web.Request) -> web.Response:
        check_app(request)
        return web.json_response(runtime.status())

    @routes.get(base + "/machines")
    async def list_machines(request: web.Request) -> web.Response:
        check_app(request)
        return web.json_response([machine_json(m) for m in runtime.machines.values()])

    @routes.get(base + "/machines/{id}")
    async def get_machine(request: web.Request) -> web.Response:
        check_app(request)
        return web.json_response(machine_json(runtime.find(request.match_info["id"])))

    @routes.post(base + "/machines/{id}/{action:start|stop|restart|suspend|destroy}")
    async def act(request: web.Request) -> web.Response:
        check_app(request)
        machine = runtime.find(request.match_info["id"])
        action = request.match_info["action"]
        if action == "destroy":
            await runtime.destroy(machine)
            return web.json_response({"id": machine.id, "state": "destroyed"})
        await getattr(machine, action)()
        return web.json_response(machine_json(machine))

    @routes.post(base + "/machines/{id}/exec")
    async def exec_(request: web.Request) -> web.Response:
        check_app(request)
        machine = runtime.find(request.match_info["id"])
        body = await request.json()
        cmd = body.get("cmd") if isinstance(body, dict) else None
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise TaxiwayError('exec needs {"cmd": ["program", "arg", ...]}')
        timeout = float(body.get("timeout", 60))
        return web.json_response(await runtime.exec(machine, cmd, timeout_s=timeout))

    @routes.post(base + "/secrets")
    async def secrets(request: web.Request) -> web.Response:
        check_app(request)
        body = await request.json()
        values = body.get("set") or {}
        unset = body.get("unset") or []
        if not isinstance(values, dict) or not isinstance(unset, list):
            raise TaxiwayError('secrets needs {"set": {"NAME": "value"}} or {"unset": ["NAME"]}')
        changed, restarted = await runtime.change_secrets(values, unset)
        return web.json_response({"changed": changed, "restarted": restarted})

    @routes.get(base + "/scale")
    async def get_scale(request: web.Request) -> web.Response:
        check_app(request)
        return web.json_response(_scale(runtime))

    @routes.post(base + "/scale")
    async def set_scale(request: web.Request) -> web.Response:
        check_app(request)
        body = await request.json()
        counts = body.get("counts") if isinstance(body, dict) else None
        if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in counts.items()
        ):
            raise TaxiwayError('scale needs {"counts": {"group": number, ...}}')
        await runtime.scale(counts)
        return web.json_response(_scale(runtime))

    @routes.post(base + "/down")
    async def down(request: web.Request) -> web.Response:
        check_app(request)
        shutdown.set()
        return web.json_response({"stopping": len(runtime.machines)})

    @routes.get(base + "/logs")
    async def logs(request: web.Request) -> web.StreamResponse:
        check_app(request)
        return await _logs(runtime, request)

    app.add_routes(routes)
    return app


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


async def _logs(runtime: AppRuntime, request: web.Request) -> web.StreamResponse:
    """Past lines of the selected machines, then (with follow=1) new ones as they come."""
    machine_filter = request.query.get("machine")
    group_filter = request.query.get("group")
    follow = request.query.get("follow") == "1"
    selected = [
        m
        for m in runtime.machines.values()
        if (not machine_filter or m.id.startswith(machine_filter))
        and (not group_filter or m.info.group == group_filter)
    ]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    history = []
    for m in selected:
        for entry in m.log.read_entries():
            history.append((entry.ts, m, entry))
    for _, m, entry in sorted(history, key=lambda item: item[0]):
        await response.write(_log_line(m, entry))
    if follow:
        queues = [(m, m.log.subscribe()) for m in selected]
        try:
            while True:
                getters = {asyncio.ensure_future(q.get()): m for m, q in queues}
                done, pending = await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                for task in done:
                    await response.write(_log_line(getters[task], task.result()))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            for m, q in queues:
                m.log.unsubscribe(q)
    return response


def _log_line(m: SupervisedMachine, entry: object) -> bytes:
    data = {
        "ts": entry.ts,  # type: ignore[attr-defined]
        "machine": m.id,
        "group": m.info.group,
        "stream": entry.stream,  # type: ignore[attr-defined]
        "line": entry.line,  # type: ignore[attr-defined]
    }
    return (json.dumps(data) + "\n").encode()


def _pid() -> int:
    import os

    return os.getpid()
