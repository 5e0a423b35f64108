"""A real app runtime with the Machines API's lifecycle routes on a real socket, for tests.

TEST ONLY, until the Machines API server (`taxiway.machines_api.server`) is merged: it
mounts `add_lifecycle_routes` and three read routes (get, wait, events) on a `Router`,
served with `taxiway.api.http11` on a free loopback port, with a bearer token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from taxiway.api.http11 import serve_connection
from taxiway.api.routing import HTTPError, Request, Router
from taxiway.config.loader import load_config
from taxiway.machines_api.lifecycle import add_lifecycle_routes, machine_events, machine_json
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.drivers.process import ProcessDriver
from taxiway.state.store import Store

JOBAPP = Path(__file__).parent / "jobapp"


def copy_jobapp(into: Path) -> Path:
    folder = into / "jobapp"
    shutil.copytree(JOBAPP, folder)
    return folder


def make_runtime(folder: Path, state: Path) -> AppRuntime:
    loaded = load_config(folder / "fly.toml")
    store = Store.open(state)
    app = loaded.config.app or "app"
    store.ensure_app(app, folder / "fly.toml")
    return AppRuntime(loaded, app=app, state_dir=state, store=store, driver=ProcessDriver())


class Api:
    """The served routes: ``url`` and ``token`` for a client; `call` asks them."""

    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime
        self.token = secrets.token_hex(8)
        self.router = Router()
        add_lifecycle_routes(self.router, runtime)
        base = "/v1/apps/{app}/machines/{id}"
        self.router.add("GET", base, self._get)
        self.router.add("GET", base + "/wait", self._wait)
        self.router.add("GET", base + "/events", self._events)
        self.url = ""

    async def _get(self, request: Request, params: dict[str, str]) -> Any:
        machine = self.runtime.machines.get(params["id"])
        if machine is None:
            raise HTTPError(404, "no such machine")
        return machine_json(self.runtime, machine)

    async def _wait(self, request: Request, params: dict[str, str]) -> Any:
        wanted = request.query.get("state", "started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(request.query.get("timeout", "60"))
        while loop.time() < deadline:
            machine = self.runtime.machines.get(params["id"])
            record = self.runtime.store.get_machine(params["id"])
            state = machine.state.value if machine is not None else (record and record.state)
            if state == wanted:
                return {"ok": True, "state": state}
            await asyncio.sleep(0.05)
        raise HTTPError(408, "timed out")

    async def _events(self, request: Request, params: dict[str, str]) -> Any:
        return machine_events(self.runtime, params["id"])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            await serve_connection(self.router, reader, writer)
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def served(self) -> AsyncIterator[Api]:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``path`` under ``/v1/apps/<app>/machines``; (status, decoded JSON)."""
        url = f"{self.url}/v1/apps/{self.runtime.app}/machines{path}"

        def ask() -> tuple[int, Any]:
            request = urllib.request.Request(
                url,
                method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {self.token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    return answer.status, json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read() or b"null")

        return await asyncio.to_thread(ask)
