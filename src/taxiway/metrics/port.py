"""``taxiway up --metrics-port N``: ``/metrics`` in plain HTTP on 127.0.0.1:N, for a
Prometheus to scrape. No auth, so loopback only: any other address is refused."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable

from taxiway.errors import TaxiwayError

#: A scrape's request head is small; anything larger is not one.
MAX_HEAD = 8192


def check_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise TaxiwayError(
            f"--metrics-port serves without authentication, so only on loopback; "
            f"{host} is not a loopback address (use 127.0.0.1)"
        )


async def serve_metrics(
    port: int, render: Callable[[], bytes], host: str = "127.0.0.1"
) -> asyncio.base_events.Server:
    """Listen on ``host:port`` and answer ``GET /metrics`` with ``render()``; raises
    TaxiwayError naming the port when it can't be bound."""
    from taxiway.metrics.exposition import CONTENT_TYPE

    check_loopback(host)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > MAX_HEAD:
                return
            method, target, *_ = head.split(b"\r\n", 1)[0].split(b" ")
            if method not in (b"GET", b"HEAD") or target.split(b"?")[0] != b"/metrics":
                status, body, kind = b"404 Not Found", b"see /metrics\n", "text/plain"
            else:
                status, body, kind = b"200 OK", render(), CONTENT_TYPE
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + kind.encode()
                + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                + (body if method != b"HEAD" else b"")
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        return await asyncio.start_server(answer, host, port, limit=MAX_HEAD)
    except OSError as exc:
        raise TaxiwayError(
            f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
            "pick another port"
        ) from None
