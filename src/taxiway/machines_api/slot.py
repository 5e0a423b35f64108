"""The daemon's slot for the Machines API (`taxiway.daemon.serve` starts and closes it).

It serves the API on 127.0.0.1 (a free port, or ``port``) plus any ``listen`` addresses
the daemon adds (the private network's, for machines: ``_api.internal:4280``), makes the
state folder's token on first need, and tells the runtime its URL (`status --json`'s
``api.url``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from taxiway.api.routing import Router
from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime

if TYPE_CHECKING:
    from taxiway.machines_api.changes import MachineChanges
    from taxiway.machines_api.server import MachinesApiServer


class MachinesApiSlot:
    def __init__(
        self,
        runtime: AppRuntime,
        state_dir: Path,
        *,
        port: int = 0,
        listen: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self.port = port
        self.listen = list(listen)
        self._server: MachinesApiServer | None = None
        self._changes: MachineChanges | None = None

    async def start(self) -> None:
        from taxiway.machines_api.changes import MachineChanges
        from taxiway.machines_api.server import MachinesApiServer
        from taxiway.machines_api.token import api_token

        changes = self._changes = MachineChanges(self.runtime)
        runtime = self.runtime

        def routes() -> Router:
            from taxiway.machines_api.routes import build_router

            return build_router(runtime, changes)

        server = MachinesApiServer(routes, api_token(self.state_dir))
        try:
            await server.start([("127.0.0.1", self.port), *self.listen])
        except TaxiwayError as exc:  # the app runs on without its API; the log says why
            print(f"machines api | {exc}", flush=True)
            return
        self._server = server
        url = server.url
        self.runtime.status_extras["api"] = lambda: {"url": url}

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._changes is not None:
            self._changes.close()
        self.runtime.status_extras.pop("api", None)
