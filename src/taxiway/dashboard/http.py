"""The dashboard's HTTP/1.1 on a TCP socket, spoken with h11 (already the API's parser).

A web browser is the client here, unlike the API's: requests carry headers and cookies
that matter (``Host``, ``Cookie``, ``Origin``), answers are HTML, files and
server-sent event streams. Routing and the rules about who may ask live in
`taxiway.dashboard.server`; this module only reads requests and writes answers.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from urllib.parse import parse_qsl

import h11

#: Requests are small: a dashboard never uploads anything.
MAX_REQUEST_BYTES = 64 * 1024


class WebRequest:
    def __init__(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        #: Header names in lower case; a repeated header keeps its last value.
        self.headers = headers
        self.body = body

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


class RequestTooLarge(Exception):
    """A request over `MAX_REQUEST_BYTES`: answered 413 and the connection closed."""


async def read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> WebRequest | None:
    """The next request on the connection, or None once the client closed it."""
    head: h11.Request | None = None
    body = b""
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(16384)
            received += len(data)
            if received > MAX_REQUEST_BYTES:
                raise RequestTooLarge
            conn.receive_data(data)
            if not data and head is None:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = head.target.decode("latin-1")
            path, _, query = target.partition("?")
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
            return WebRequest(
                head.method.decode(), path, dict(parse_qsl(query)), headers, body
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None


#: Sent with every answer: the page is the daemon's own, never framed, never cached, and
#: loads nothing from anywhere else (nothing from the internet, no inline script).
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


async def answer(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        *SECURITY_HEADERS,
        *extra_headers,
    ]
    reason = HTTPStatus(status).phrase.encode()
    writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=reason)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def start_event_stream(conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
    """The head of a server-sent event stream (chunked, until the server ends it)."""
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Transfer-Encoding", "chunked"),
        *SECURITY_HEADERS,
    ]
    writer.write(conn.send(h11.Response(status_code=200, headers=headers, reason=b"OK")))


#: An event-stream comment, framed as a chunk: keeps idle connections (and proxies) open.
KEEPALIVE_CHUNK = b"e\r\n: keep-alive\n\n\r\n"


def event_chunk(name: str, data: str) -> bytes:
    """One server-sent event framed as one chunk of the (chunked) stream, ready to write:
    framed once and the same bytes written to every client, so a broadcast costs no
    per-client encoding. ``data`` is JSON (no newlines): one ``data:`` line holds it."""
    payload = f"event: {name}\ndata: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(payload), payload)
