"""The load generator against real local servers: what it counts as sent, failed, non-2xx."""

from __future__ import annotations

import asyncio
import socket

from taxiway.deploy.load import LoadGenerator, LoadResult, LoadThread


async def _serve(answer: bytes, *, close_after: bool) -> tuple[asyncio.Server, int]:
    """A server answering every request with ``answer``; ``close_after`` closes the
    connection after each answer without saying so (a keep-alive connection gone stale)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _run(answer: bytes, *, close_after: bool = False, seconds: float = 0.5) -> LoadResult:
    server, port = await _serve(answer, close_after=close_after)
    async with server:
        generator = LoadGenerator("127.0.0.1", port, 100)
        task = asyncio.create_task(generator.run())
        await asyncio.sleep(seconds)
        generator.stop()
        return await task


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_healthy_server_loses_nothing() -> None:
    result = asyncio.run(_run(OK))
    assert result.sent >= 10
    assert (result.failed, result.non_2xx) == (0, 0)
    assert result.ok


def test_answers_other_than_2xx_are_counted() -> None:
    result = asyncio.run(_run(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"))
    assert result.non_2xx == result.sent > 0
    assert result.failed == 0
    assert "HTTP 503" in result.errors
    assert not result.ok


def test_a_stale_keep_alive_connection_is_retried_on_a_new_one() -> None:
    result = asyncio.run(_run(OK, close_after=True))
    assert result.sent > 0
    assert result.failed == 0, result.errors


def test_a_closed_port_counts_as_failed_and_the_thread_reports_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        load = LoadThread("127.0.0.1", port, 100)
        load.start()
        asyncio.run(asyncio.sleep(0.3))
        result = load.finish()
    assert result.failed == result.sent > 0
    assert "ConnectionRefusedError" in result.errors[0]
    assert "failed" in result.summary()
