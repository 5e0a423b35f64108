"""The floor of the edge's stack: the least an HTTP/1.1 proxy on uvloop + httptools can do.

Part f of `edge.py`. It parses each request with httptools, adds two headers, sends it
over a pooled keep-alive connection to the backend, parses the response, adds two
headers and writes it back (its status line with a fixed reason phrase); nothing else.
No balancing, no concurrency limits, no platform headers beyond those four, no error
handling, no streaming rules, no timeouts, and a backend that closes a pooled
connection breaks it: it is not a proxy anyone should run, only the measure of what
Python, uvloop and httptools cost per request before any of the edge's own work. If
this relay can't match nginx on a machine, the edge can't either, whatever its code does.

Run by `edge.py` as ``python benchmarks/edge_floor.py BACKEND_PORT``; prints the port it
listens on, then serves until killed.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import httptools
import uvloop


class _Parsed(asyncio.Protocol):
    """A connection whose bytes go to an httptools parser calling back into it."""

    def __init__(self, parser: httptools.HttpRequestParser | httptools.HttpResponseParser) -> None:
        self.parser = parser
        self.transport: asyncio.Transport | None = None
        self.head: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.append(name + b": " + value)


class Backend(_Parsed):
    """One pooled connection to the backend, lent to one client request at a time."""

    def __init__(self, pool: list[Backend]) -> None:
        super().__init__(httptools.HttpResponseParser(self))
        self.pool = pool
        self.client: Client | None = None

    def on_message_begin(self) -> None:
        self.head = [b""]  # the status line, once the parser has it

    def on_headers_complete(self) -> None:
        self.head[0] = b"HTTP/1.1 %d OK" % self.parser.get_status_code()
        self.head.append(b"via: 1.1 fly.io\r\nfly-request-id: 01JDFLOOR0000000000000000\r\n\r\n")
        assert self.client is not None and self.client.transport is not None
        self.client.transport.write(b"\r\n".join(self.head))

    def on_body(self, body: bytes) -> None:
        assert self.client is not None and self.client.transport is not None
        self.client.transport.write(body)

    def on_message_complete(self) -> None:
        self.client = None
        self.pool.append(self)


class Client(_Parsed):
    """One client connection: each request goes to a pooled backend connection."""

    def __init__(self, backend_port: int, pool: list[Backend]) -> None:
        super().__init__(httptools.HttpRequestParser(self))
        self.backend_port = backend_port
        self.pool = pool

    def on_message_begin(self) -> None:
        self.head = []

    def on_url(self, url: bytes) -> None:
        self.head.append(self.parser.get_method() + b" " + url + b" HTTP/1.1")  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.head.append(b"x-forwarded-for: 127.0.0.1\r\nfly-client-ip: 127.0.0.1\r\n\r\n")
        request = b"\r\n".join(self.head)
        if self.pool:
            backend = self.pool.pop()
            backend.client = self
            assert backend.transport is not None
            backend.transport.write(request)
        else:
            asyncio.get_running_loop().create_task(self._connect(request))

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, backend = await loop.create_connection(
            lambda: Backend(self.pool), "127.0.0.1", self.backend_port
        )
        backend.client = self
        assert backend.transport is not None
        backend.transport.write(request)


async def serve(backend_port: int) -> None:
    pool: list[Backend] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Client(backend_port, pool), sock=listener, backlog=4096)
    print(listener.getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
