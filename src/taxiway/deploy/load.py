"""A built-in load generator: does a deploy drop requests? (`taxiway deploy --under-load`)

Open loop at a fixed rate, so a slow or stuck moment shows as latency and failures
instead of silently sending less. Requests alternate between keep-alive connections
(reused from a small pool, as browsers and API clients do) and new connections (a
fresh TCP handshake each, as with many short-lived clients). A request that fails on a
reused connection before any byte of the answer came is sent again once on a new one,
as HTTP clients do for idempotent requests when a server closed an idle connection.

Counted: requests sent, failed (no answer: refused, reset, timed out), answered with a
status other than 2xx, and the worst latency seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import h11
import msgspec

#: A request that takes longer than this counts as failed.
REQUEST_TIMEOUT_S = 10.0
#: Keep-alive connections kept open at most.
POOL_SIZE = 16


class LoadResult(msgspec.Struct, kw_only=True):
    target: str
    rate: float
    sent: int = 0
    failed: int = 0
    non_2xx: int = 0
    worst_latency_s: float = 0.0
    #: A few example failures, to say what went wrong.
    errors: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.non_2xx == 0

    def summary(self) -> str:
        return (
            f"load on {self.target}: {self.sent} requests at {self.rate:g}/s, "
            f"{self.failed} failed, {self.non_2xx} non-2xx, "
            f"worst latency {self.worst_latency_s * 1000:.0f} ms"
        )


class _Answered(Exception):
    """The server began answering, so the request must not be sent again."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()

    async def request(self, host: str, path: str, *, keep_alive: bool) -> int:
        headers = [("Host", host), ("User-Agent", "taxiway-load")]
        if not keep_alive:
            headers.append(("Connection", "close"))
        self.writer.write(self.h11.send(h11.Request(method="GET", target=path, headers=headers)))
        self.writer.write(self.h11.send(h11.EndOfMessage()))
        await self.writer.drain()
        answered = False
        status = 0
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await self.reader.read(65536)
                    if not data and not answered:
                        raise ConnectionResetError("the connection closed before an answer")
                    answered = True
                    self.h11.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    return status
                elif isinstance(event, h11.ConnectionClosed):
                    raise _Answered("the connection closed during the answer")
        except h11.ProtocolError as exc:
            if answered:
                raise _Answered(str(exc)) from None
            raise

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


class LoadGenerator:
    """Sends GET requests at ``rate`` per second until `stop`."""

    def __init__(self, host: str, port: int, rate: float, path: str = "/") -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.host, self.port, self.path = host, port, path
        self.result = LoadResult(target=f"http://{host}:{port}{path}", rate=rate)
        self._pool: list[_Connection] = []
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.result.rate
        began = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        while not self._stopped.is_set():
            task = loop.create_task(self._one(keep_alive=n % 2 == 0))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopped.wait(), max(0.0, began + n * interval - loop.time())
                )
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self._pool:
            conn.close()
        return self.result

    async def _one(self, *, keep_alive: bool) -> None:
        result = self.result
        result.sent += 1
        began = time.monotonic()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status = await self._send(keep_alive)
        except (OSError, TimeoutError, h11.ProtocolError, _Answered) as exc:
            result.failed += 1
            if len(result.errors) < 5:
                result.errors.append(f"{type(exc).__name__}: {exc}")
            status = None
        result.worst_latency_s = max(result.worst_latency_s, time.monotonic() - began)
        if status is not None and not 200 <= status < 300:
            result.non_2xx += 1
            if len(result.errors) < 5:
                result.errors.append(f"HTTP {status}")

    async def _send(self, keep_alive: bool) -> int:
        if keep_alive and self._pool:
            conn = self._pool.pop()
            try:
                return await self._finish(conn, keep_alive)
            except (OSError, h11.ProtocolError):
                pass  # a stale keep-alive connection: once more on a new one
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._finish(_Connection(reader, writer), keep_alive)

    async def _finish(self, conn: _Connection, keep_alive: bool) -> int:
        try:
            status = await conn.request(
                f"{self.host}:{self.port}", self.path, keep_alive=keep_alive
            )
        except BaseException:
            conn.close()
            raise
        if keep_alive and conn.reusable() and len(self._pool) < POOL_SIZE:
            self._pool.append(conn)
        else:
            conn.close()
        return status


class LoadThread:
    """A `LoadGenerator` on its own event loop in a thread, for the (synchronous) CLI."""

    def __init__(self, host: str, port: int, rate: float, path: str = "/") -> None:
        self._args = (host, port, rate, path)
        self._loop = asyncio.new_event_loop()
        self._generator: LoadGenerator | None = None
        self._result: LoadResult | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="taxiway-load", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> LoadResult:
            self._generator = LoadGenerator(*self._args)
            self._ready.set()
            return await self._generator.run()

        try:
            self._result = self._loop.run_until_complete(main())
        finally:
            self._ready.set()
            self._loop.close()

    def finish(self) -> LoadResult:
        generator = self._generator
        if generator is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(generator.stop)
        self._thread.join()
        assert self._result is not None
        return self._result
