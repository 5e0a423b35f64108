"""The Machines API's HTTP server: TCP, token-checked, bounded.

HTTP/1.1 with h11 through the same connection loop as taxiway's own API
(`taxiway.api.http11.serve_connection`), with an authorization hook, an idle timeout,
and bugs answered as ``{"error": "internal error"}`` (the traceback goes to the daemon's
log). The host-facing address must be a loopback one: the API drives the app's
machines, and the token is only as private as the network it travels on. More
addresses (the private network's, for machines) are the daemon's to add.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence

from taxiway.api.routing import HTTPError, Request, Router
from taxiway.errors import TaxiwayError
from taxiway.machines_api.token import token_matches

#: Connections served at once; more are answered 503 and closed.
MAX_CONNECTIONS = 128
#: A connection that sends nothing for this long is closed.
IDLE_TIMEOUT_S = 60.0
#: The schemes a token comes with: flyctl sends its macaroon tokens as ``FlyV1 …``.
AUTH_SCHEMES = ("bearer", "flyv1")


class MachinesApiServer:
    def __init__(
        self,
        router: Router | Callable[[], Router],
        token: str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        #: The routes, or what makes them on the first connection (the daemon starts the
        #: server before its machines, and building the routes then would delay them).
        self.router: Router | None = router if isinstance(router, Router) else None
        self._make_router = router if not isinstance(router, Router) else None
        self.token = token
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        #: ``http://127.0.0.1:PORT``: where the host reaches the API, once started.
        self.url: str | None = None

    async def start(self, listen: Sequence[tuple[str, int]]) -> None:
        """Listen on each (address, port); the first is the host's and must be loopback
        (port 0: a free one)."""
        if not listen:
            raise TaxiwayError("the Machines API needs an address to listen on")
        host, _ = listen[0]
        if not _is_loopback(host):
            raise TaxiwayError(
                f"the Machines API listens for the host on loopback only, not {host}: "
                "its token would cross the network"
            )
        for address, port in listen:
            if _is_unspecified(address):
                raise TaxiwayError(
                    f"the Machines API won't listen on every address ({address}); "
                    "name one (127.0.0.1, or the private network's)"
                )
            try:
                server = await asyncio.start_server(self._serve, host=address, port=port)
            except OSError as exc:
                await self.close()
                raise TaxiwayError(
                    f"the Machines API can't listen on {address} port {port}: {exc.strerror}"
                ) from None
            self._servers.append(server)
        bound = self._servers[0].sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.sockets[0].getsockname()[:2] for s in self._servers]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    def authorize(self, request: Request) -> None:
        """401 unless ``Authorization`` carries the token (``Bearer`` or ``FlyV1``)."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.strip().partition(" ")
        if not header:
            raise HTTPError(
                401, "the Machines API needs `Authorization: Bearer <token>` (`taxiway api token`)"
            )
        if scheme.lower() not in AUTH_SCHEMES or not token_matches(given.strip(), self.token):
            raise HTTPError(401, "the token is not this app's (see `taxiway api token`)")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from taxiway.api.http11 import serve_connection

        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._connections) >= self.max_connections:
                writer.write(_busy_answer())
                await writer.drain()
                # take in what the client sent: closing on unread data would reset the
                # connection, and the client would lose the answer
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(reader.read(65536), 1.0)
                return
            self._connections.add(task)
            if self.router is None:
                assert self._make_router is not None
                self.router = self._make_router()
            await serve_connection(
                self.router,
                reader,
                writer,
                authorize=self.authorize,
                idle_timeout_s=self.idle_timeout_s,
                on_bug=_log_bug,
            )
        except (asyncio.CancelledError, ConnectionError):
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _busy_answer() -> bytes:
    body = json.dumps({"error": "too many connections to the Machines API; try again"}).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _log_bug(exc: BaseException, request: Request) -> None:
    """A route's bug: its traceback goes to the daemon's log; the client only learns
    that it was an internal error."""
    import traceback

    with contextlib.suppress(OSError, ValueError):
        print(
            f"machines api | internal error on {request.method} {request.path}:",
            file=sys.stderr,
            flush=True,
        )
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""
