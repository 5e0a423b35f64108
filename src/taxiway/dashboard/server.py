"""The dashboard's web server: 127.0.0.1 only, a port of its own, a token for everything.

Started by the daemon on the first `taxiway dashboard` (`GET …/dashboard` on the API
socket), not with the daemon: an app nobody looks at keeps no TCP port open and imports
none of this, and `up -d` stays as quick as it is. Once started it serves until the
daemon stops.

Who may ask: every request needs the state folder's token (`taxiway.dashboard.token`),
in the URL once (``/?token=…``, answered with a cookie and a redirect that takes it out
of the address bar) or in that cookie (HttpOnly, SameSite=Strict). Without it: 401 and
a page that names no machine. The ``Host`` must be the loopback address the server
listens on (a DNS-rebinding page can't use a name of its own), and a button's POST must
come from the page itself (a custom header a cross-site form can't send, and a matching
``Origin``).

Live updates: one event stream per tab (`taxiway.dashboard.hub`), carrying the state,
the chart points and the log tail the tab selected (``/events?machine=…&group=…``; a new
selection is a new stream). One stream, not one per kind: browsers open at most six
HTTP/1.1 connections per host, and a tab should take one. The tick builds the shared
state once when something changed and sends the same bytes to every tab; chart points
are sampled once per metrics tick for all tabs; log lines go out in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import h11

from taxiway.dashboard import http
from taxiway.dashboard.hub import WRITE_BUFFER_BYTES, Stream, StreamHub
from taxiway.dashboard.log_feed import LogFeed, selection
from taxiway.dashboard.page import UNAUTHORIZED_PAGE, render_page
from taxiway.dashboard.samples import ChartSource, chart_source
from taxiway.dashboard.state import SharedState
from taxiway.dashboard.token import dashboard_token, token_matches
from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime

#: How often the shared state is looked at (sent only when it changed).
STATE_TICK_S = 0.5
#: Without a change, the state is rebuilt this often anyway (releases a CLI deploy
#: finished, check outputs) and a keep-alive goes to idle streams.
STATE_REFRESH_S = 3.0
#: How often log lines go out.
LOG_TICK_S = 0.25
#: How often the charts get a point, and how many points they keep (5 minutes).
METRICS_TICK_S = 2.0
HISTORY_POINTS = 150
#: Connections open at once (event streams included), and how long one may take to send
#: a request (or sit idle between two): a client that connects and says nothing is
#: closed, and a flood of them can't pile up tasks in the daemon.
MAX_CONNECTIONS = 256
REQUEST_TIMEOUT_S = 30.0
#: The header the page's buttons send: a cross-site form or image can't set it.
ACTION_HEADER = "x-taxiway-dashboard"

_STATIC = {
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_ACTION_PATH = re.compile(r"^/machines/([A-Za-z0-9_-]{1,64})/(start|stop|restart|destroy)$")


class DashboardServer:
    def __init__(
        self,
        runtime: AppRuntime,
        *,
        deployer: Callable[[], Any] = lambda: None,
        source: ChartSource | None = None,
        max_streams: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.token = dashboard_token(runtime.state_dir)
        #: Cookies are per host, not per port: one name per state folder keeps two
        #: apps' dashboards on 127.0.0.1 from overwriting each other's.
        self.cookie_name = "taxiway_" + re.sub(r"[^A-Za-z0-9]", "_", runtime.scope)
        self.hub = StreamHub(max_streams) if max_streams else StreamHub()
        self.state = SharedState(runtime, deployer)
        self.logs = LogFeed(runtime, self.hub)
        self.source = source if source is not None else chart_source(runtime)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._state_chunk = b""
        self._history: list[dict[str, Any]] = []
        self._static: dict[str, bytes] = {}
        self.on_change = self._machines_changed

    @property
    def url(self) -> str:
        """The address to open, with the state folder's token as the file holds it now: a
        deleted token file makes a new token here, and the old one's cookies stop working."""
        self.token = dashboard_token(self.runtime.state_dir)
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, host="127.0.0.1", port=0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.runtime.on_change.append(self.on_change)
        self.logs.hook()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._state_ticks()),
            loop.create_task(self._log_ticks()),
            loop.create_task(self._metrics_ticks()),
        ]

    async def close(self) -> None:
        if self.on_change in self.runtime.on_change:
            self.runtime.on_change.remove(self.on_change)
        self.logs.unhook()
        for task in self._tasks:
            task.cancel()
        self.hub.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _machines_changed(self) -> None:
        self.state.mark_changed()
        self.logs.hook()  # a new machine's first lines reach the tails too

    # -- ticks: one piece of work for every tab ---------------------------------------------

    async def _state_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        last_build = 0.0
        while True:
            await asyncio.sleep(STATE_TICK_S)
            if not self.hub.streams:
                continue
            now = loop.time()
            if not self.state.changed and now - last_build < STATE_REFRESH_S:
                continue
            last_build = now
            self.logs.hook()
            chunk = self._build_state()
            if chunk != self._state_chunk:
                self._state_chunk = chunk
                self.hub.broadcast("state", chunk)
            else:
                self.hub.broadcast("state", http.KEEPALIVE_CHUNK)

    def _build_state(self) -> bytes:
        return http.event_chunk("state", json.dumps(self.state.document()))

    async def _log_ticks(self) -> None:
        while True:
            await asyncio.sleep(LOG_TICK_S)
            self.logs.flush()

    async def _metrics_ticks(self) -> None:
        while True:
            if self.hub.of_kind("state"):
                try:
                    if self.source.in_thread:
                        point = await asyncio.to_thread(self.source.sample)
                    else:
                        point = self.source.sample()
                except Exception as exc:  # a sampling bug must not end the charts for good
                    point = {"t": 0, "services": None, "machines": {},
                             "services_unavailable": f"metrics unavailable: {exc}"}
                self._history.append(point)
                del self._history[:-HISTORY_POINTS]
                self.hub.broadcast("state", http.event_chunk("metrics", json.dumps(point)))
            await asyncio.sleep(METRICS_TICK_S)

    # -- connections ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections.add(task)
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(
                        http.read_request(conn, reader), REQUEST_TIMEOUT_S
                    )
                except (http.RequestTooLarge, TimeoutError):
                    return
                if request is None:
                    return
                if await self._answer(conn, reader, writer, request):
                    return  # an event stream ended: the connection ends with it
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (asyncio.CancelledError, h11.ProtocolError, ConnectionError):
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _host_ok(self, request: http.WebRequest) -> bool:
        return request.headers.get("host") in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    async def _answer(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: http.WebRequest,
    ) -> bool:
        """Answer one request; True when it was an event stream (now ended)."""
        if not self._host_ok(request):
            await http.answer(conn, writer, 403, b"wrong Host\n", "text/plain; charset=utf-8")
            return False
        if request.method == "GET" and request.path == "/" and "token" in request.query:
            if not token_matches(request.query["token"], self.token):
                await self._unauthorized(conn, writer)
                return False
            cookie = (
                f"{self.cookie_name}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            )
            await http.answer(
                conn, writer, 303, b"", "text/plain",
                [("Location", "/"), ("Set-Cookie", cookie)],
            )
            return False
        if not token_matches(request.cookie(self.cookie_name), self.token):
            await self._unauthorized(conn, writer)
            return False
        if request.method == "GET":
            if request.path == "/":
                page = render_page(self.state.document()).encode()
                await http.answer(conn, writer, 200, page, "text/html; charset=utf-8")
                return False
            if request.path == "/favicon.ico":  # none: say so without a 404 in the console
                await http.answer(conn, writer, 204, b"", "image/x-icon")
                return False
            if request.path in _STATIC:
                name, kind = _STATIC[request.path]
                await http.answer(conn, writer, 200, self._static_file(name), kind)
                return False
            if request.path == "/events":
                wanted = selection(request.query.get("machine"), request.query.get("group"))
                await self._stream(conn, writer, Stream("state", wanted))
                return True
        if request.method == "POST":
            match = _ACTION_PATH.match(request.path)
            if match is not None:
                status, result = await self._act(request, match[1], match[2])
                body = json.dumps(result).encode()
                await http.answer(conn, writer, status, body, "application/json")
                return False
        await http.answer(conn, writer, 404, b"not found\n", "text/plain; charset=utf-8")
        return False

    async def _unauthorized(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        await http.answer(
            conn, writer, 401, UNAUTHORIZED_PAGE.encode(), "text/html; charset=utf-8"
        )

    def _static_file(self, name: str) -> bytes:
        if name not in self._static:
            package = resources.files("taxiway.dashboard") / "static" / name
            self._static[name] = package.read_bytes()
        return self._static[name]

    async def _act(
        self, request: http.WebRequest, machine_id: str, action: str
    ) -> tuple[int, dict[str, Any]]:
        """A machine button: the API's own action (`taxiway.api.server.machine_action`)."""
        origin = request.headers.get("origin")
        if request.headers.get(ACTION_HEADER) != "1" or (
            origin is not None and origin != f"http://{request.headers.get('host')}"
        ):
            return 403, {"error": "actions must come from the dashboard page"}
        from taxiway.api.server import machine_action
        from taxiway.runtime.lifecycle import TransitionError

        try:
            result = await machine_action(self.runtime, machine_id, action)
        except (TaxiwayError, TransitionError) as exc:
            return 409, {"error": str(exc)}
        self.state.mark_changed()
        return 200, result

    async def _stream(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, stream: Stream
    ) -> None:
        """Serve one event stream until the client goes or is dropped for being slow."""
        if not self.hub.join(stream):
            body = b"too many open dashboards\n"
            await http.answer(conn, writer, 503, body, "text/plain; charset=utf-8",
                              [("Retry-After", "10")])
            return
        try:
            http.start_event_stream(conn, writer)
            if not self._state_chunk or self.state.changed:
                self._state_chunk = self._build_state()
            writer.write(self._state_chunk)
            writer.write(http.event_chunk("history", json.dumps(self._history)))
            await writer.drain()
            assert stream.selection is not None
            lines = await asyncio.to_thread(self.logs.tail, stream.selection)
            writer.write(http.event_chunk("tail", json.dumps({"lines": lines})))
            await writer.drain()
            while True:
                writer.write(await stream.queue.get())
                await writer.drain()
        finally:
            self.hub.leave(stream)
