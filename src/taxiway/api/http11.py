"""One API connection spoken in HTTP/1.1 with h11: read requests, route them, answer.

Kept apart from `taxiway.api.server` so the daemon imports h11 on the first API
connection rather than at start-up (`taxiway up -d` reports ready before anyone asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from urllib.parse import parse_qsl

import h11

from taxiway.api.routing import Answer, HTTPError, Request, Router, Text
from taxiway.errors import TaxiwayError, os_error_sentence
from taxiway.runtime.lifecycle import TransitionError

MAX_BODY = 1024 * 1024


class BodyTooLarge(Exception):
    """A request body over `MAX_BODY`: answered with 413, then the connection closes."""


#: Checks a request before it is routed; raises `HTTPError` (401) to refuse it.
Authorize = Callable[[Request], None]
#: Told about an exception a route raised that is a bug; the answer then is only
#: ``{"error": "internal error"}`` (the Machines API), instead of naming the exception.
OnBug = Callable[[BaseException, Request], None]


async def serve_connection(
    router: Router,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    authorize: Authorize | None = None,
    idle_timeout_s: float | None = None,
    on_bug: OnBug | None = None,
) -> None:
    """Answer requests on one connection until the client closes it or asks to.

    ``authorize``: checks each request before it is routed (the Machines API's token);
    ``idle_timeout_s``: how long a connection may send nothing before it is closed
    (a connection cap is only worth something with it); ``on_bug``: see `OnBug`."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                request = await _read_request(conn, reader, idle_timeout_s)
            except BodyTooLarge:
                body = {"error": f"the request body is over the {MAX_BODY // 1024} KiB limit"}
                await _send_json(conn, writer, 413, body)
                await _discard_rest(reader)
                return
            if request is None:
                return
            await _answer(router, conn, writer, request, authorize, on_bug)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:  # not HTTP/1.1: answered if still possible
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.ProtocolError, ConnectionError):
                body = {"error": f"the request is not valid HTTP/1.1: {exc}"}
                await _send_json(conn, writer, exc.error_status_hint, body)
        return
    except (h11.ProtocolError, ConnectionError, TimeoutError):
        return


async def _discard_rest(reader: asyncio.StreamReader) -> None:
    """Take in (a bounded part of) what the client still sends after a 413: closing on
    unread data resets the connection, and the client would lose the answer."""
    loop = asyncio.get_running_loop()
    deadline, taken = loop.time() + 2.0, 0
    with contextlib.suppress(TimeoutError, OSError):
        while taken < 16 * MAX_BODY:
            data = await asyncio.wait_for(reader.read(65536), max(deadline - loop.time(), 0))
            if not data:
                return
            taken += len(data)


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, idle_timeout_s: float | None
) -> Request | None:
    head: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if idle_timeout_s is None:
                data = await reader.read(65536)
            else:
                data = await asyncio.wait_for(reader.read(65536), idle_timeout_s)
            conn.receive_data(data)
            if not data and head is None:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
            for name, value in head.headers:
                if name == b"content-length" and int(value) > MAX_BODY:
                    raise BodyTooLarge
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise BodyTooLarge
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = head.target.decode("utf-8", "replace")
            path, _, query = target.partition("?")
            params = dict(parse_qsl(query, keep_blank_values=True))
            headers = {
                name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers
            }
            return Request(head.method.decode(), path, params, body, headers)
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _answer(
    router: Router,
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    request: Request,
    authorize: Authorize | None,
    on_bug: OnBug | None,
) -> None:
    status = 200
    try:
        if authorize is not None:
            authorize(request)
        handler, params = router.match(request.method, request.path)
        result = await handler(request, params)
        if isinstance(result, Answer):
            status, result = result.status, result.body
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
        if on_bug is not None:
            on_bug(exc, request)
            result = {"error": "internal error"}
        else:
            result = {
                "error": f"internal error (a bug, please report it): {type(exc).__name__}: {exc}"
            }
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
    if result is None and status in (201, 202, 204):
        empty = [] if status == 204 else [("Content-Length", "0")]
        writer.write(conn.send(h11.Response(status_code=status, headers=empty)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return
    if isinstance(result, Text):
        await _send(conn, writer, status, result.body, result.content_type)
    else:
        await _send_json(conn, writer, status, result)


async def _send_json(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, result: object
) -> None:
    await _send(conn, writer, status, json.dumps(result).encode(), "application/json")


async def _send(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    content_type: str,
) -> None:
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
