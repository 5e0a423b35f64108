"""One API connection spoken in HTTP/1.1 with h11: read requests, route them, answer.

Kept apart from `taxiway.api.server` so the daemon imports h11 on the first API
connection rather than at start-up (`taxiway up -d` reports ready before anyone asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import h11

from taxiway.api.routing import HTTPError, Request, Router, Text
from taxiway.errors import TaxiwayError, os_error_sentence
from taxiway.runtime.lifecycle import TransitionError

MAX_BODY = 1024 * 1024


async def serve_connection(
    router: Router, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer requests on one connection until the client closes it or asks to."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request = await _read_request(conn, reader)
            if request is None:
                return
            await _answer(router, conn, writer, request)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        return


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    head: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and head is None:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.ProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = head.target.decode()
            path, _, query = target.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            return Request(head.method.decode(), path, params, body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _answer(
    router: Router, conn: h11.Connection, writer: asyncio.StreamWriter, request: Request
) -> None:
    try:
        handler, params = router.match(request.method, request.path)
        result = await handler(request, params)
        status = 200
    except HTTPError as exc:
        status, result = exc.status, {"error": str(exc)}
    except TransitionError as exc:
        status, result = 409, {"error": str(exc)}
    except TaxiwayError as exc:
        status, result = 400, {"error": str(exc)}
    except OSError as exc:  # the host's doing (a full disk), not a bug
        status, result = 500, {"error": os_error_sentence(exc)}
    except Exception as exc:  # a bug: answer with a sentence, keep the daemon up
        status = 500
        result = {"error": f"internal error (a bug, please report it): {type(exc).__name__}: {exc}"}
    if hasattr(result, "__aiter__"):
        writer.write(
            conn.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        ("Content-Type", "application/x-ndjson"),
                        ("Transfer-Encoding", "chunked"),
                    ],
                )
            )
        )
        try:
            async for line in result:
                writer.write(conn.send(h11.Data(data=line)))
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                await result.aclose()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return
    content_type = "application/json"
    if isinstance(result, Text):
        payload, content_type = result.body, result.content_type
    else:
        payload = json.dumps(result).encode()
    writer.write(
        conn.send(
            h11.Response(
                status_code=status,
                headers=[
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(payload))),
                ],
            )
        )
    )
    writer.write(conn.send(h11.Data(data=payload)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
