"""A real app runtime with the Machines API (its whole route table, its server, its
token check) on a free loopback port, without a daemon: tests that need to reach into the
runtime (its drivers, its store) while a client drives the API."""

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

from taxiway.config.loader import load_config
from taxiway.machines_api.changes import MachineChanges
from taxiway.machines_api.routes import build_router
from taxiway.machines_api.server import MachinesApiServer
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
    """The served API: ``url`` and ``token`` for a client; `call` asks it."""

    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime
        self.token = secrets.token_hex(8)
        self.url = ""

    @contextlib.asynccontextmanager
    async def served(self) -> AsyncIterator[Api]:
        changes = MachineChanges(self.runtime)
        server = MachinesApiServer(build_router(self.runtime, changes), self.token)
        await server.start([("127.0.0.1", 0)])
        assert server.url is not None
        self.url = server.url
        try:
            yield self
        finally:
            await server.close()
            changes.close()

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
