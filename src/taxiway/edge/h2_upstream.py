"""``http_options.h2_backend``: HTTP/2 cleartext with prior knowledge to the machine.

One h2c connection per machine address carries every request to it, one stream each
(`H2Upstreams`). An `H2Stream` stands in for an `UpstreamConnection` towards the
`Exchange`: the exchange writes the request as HTTP/1.1 bytes to ``stream.transport``, as
it would to a socket, and the stream parses them into HEADERS and DATA frames; the
machine's response frames go back to the exchange as status, header lines and body. Only
sites with ``h2_backend`` pay for the translation.

Response trailers (gRPC's ``grpc-status``) end the exchange's chunked response, from
where an h2 client gets them as a trailing HEADERS frame. Not passed on: server push.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httptools

from taxiway.edge.limits import Limits
from taxiway.edge.upstream import NOT_TRAILERS, Address, UpstreamUser

#: Request headers HTTP/2 forbids (RFC 9113 §8.2.2); Host becomes :authority.
_DROP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"}
)


class H2Upstreams:
    """The h2c connections to machines, one per address."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._conns: dict[Address, H2UpstreamConnection] = {}
        self._connecting: dict[Address, asyncio.Future[H2UpstreamConnection]] = {}

    async def stream(self, address: Address) -> H2Stream:
        """A new stream to ``address`` (connecting first if needed; OSError if refused)."""
        conn = self._conns.get(address)
        if conn is None or not conn.usable():
            pending = self._connecting.get(address)
            if pending is None:
                loop = asyncio.get_running_loop()
                pending = loop.create_future()
                self._connecting[address] = pending
                try:
                    _, conn = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: H2UpstreamConnection(self, address), *address
                        ),
                        self.limits.connect_timeout_s,
                    )
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # retrieved: waiters see it, nobody else must
                    raise
                finally:
                    self._connecting.pop(address, None)
                self._conns[address] = conn  # type: ignore[assignment]
                pending.set_result(conn)  # type: ignore[arg-type]
            else:
                conn = await asyncio.shield(pending)
        return conn.open_stream()  # type: ignore[union-attr]

    def forget(self, conn: H2UpstreamConnection) -> None:
        if self._conns.get(conn.address) is conn:
            del self._conns[conn.address]

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.transport.close()
        self._conns.clear()


class H2UpstreamConnection(asyncio.Protocol):
    """One h2c connection to a machine."""

    def __init__(self, owner: H2Upstreams, address: Address) -> None:
        self.owner = owner
        self.address = address
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        self.goaway = False

    def usable(self) -> bool:
        limit = self.h2.remote_settings.max_concurrent_streams
        return not self.closed and not self.goaway and len(self.streams) < limit

    def open_stream(self) -> H2Stream:
        stream = H2Stream(self, self.h2.get_next_available_stream_id())
        self.streams[stream.id] = stream
        return stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            return
        touched: list[H2Stream] = []
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                stream.on_response(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                if stream is not None:
                    stream.on_data(event.data, event.flow_controlled_length)
                elif event.flow_controlled_length:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
                stream.on_trailers(event.headers)
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream.on_end()
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                stream.on_reset("the machine reset the stream")
            elif isinstance(event, h2.events.WindowUpdated):
                for s in list(self.streams.values()):
                    s.send_pending()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
                self.owner.forget(self)
            if stream is not None:
                touched.append(stream)
        self.flush()
        for stream in touched:
            ex = stream.exchange
            if ex is not None and ex.out:
                ex.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.forget(self)
        for stream in list(self.streams.values()):
            stream.on_reset("the machine closed the h2 connection")
        self.streams.clear()

    def pause_writing(self) -> None:
        for stream in self.streams.values():
            if stream.exchange is not None:
                stream.exchange.upstream_paused(True)

    def resume_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                stream.exchange.upstream_paused(False)


class H2Stream:
    """One request to the machine; what the exchange holds as its upstream."""

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.exchange: UpstreamUser | None = None
        self.watch: Collection[bytes] = frozenset()
        self.received = False
        self.reused = False
        self.closed = False
        self.reading_paused = False
        self.unacked = 0
        self.ended_out = False  # our END_STREAM sent
        self.pending = b""
        self.end_pending = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpRequestParser(self)
        self.transport = _RequestTransport(self)

    # -- what the exchange calls -------------------------------------------------------------

    def attach(self, exchange: UpstreamUser, watch: Collection[bytes]) -> None:
        self.exchange = exchange
        self.watch = watch

    def keep_alive_after_head(self, framed: bool) -> bool:
        return False  # a stream is never reused

    def pause_reading(self) -> None:
        self.reading_paused = True  # no WINDOW_UPDATE: the machine's window closes

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.unacked and not self.closed:
            self._ack(self.unacked)
            self.unacked = 0
            self.conn.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.exchange = None
            self.conn.streams.pop(self.id, None)
            try:
                if not (self.ended_out and self.received):
                    self.conn.h2.reset_stream(self.id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.H2Error:
                pass
            self.conn.flush()

    abort = close

    # -- the request: HTTP/1.1 bytes from the exchange, parsed into frames -------------------

    def request_bytes(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.on_reset("the request could not be sent over h2")

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        authority = b""
        headers = []
        for name, value in self.headers:
            if name == b"host":
                authority = value
            elif name == b"te":
                if value.lower() == b"trailers":
                    headers.append((name, value))
            elif name not in _DROP:
                headers.append((name, value))
        method = self.parser.get_method()
        pseudo = [(b":method", method), (b":scheme", b"http"), (b":authority", authority)]
        if method != b"CONNECT":
            pseudo.append((b":path", self.url or b"/"))
        try:
            self.conn.h2.send_headers(self.id, pseudo + headers)
        except h2.exceptions.H2Error:
            self.on_reset("the machine's h2 connection refused the request")
        self.conn.flush()

    def on_body(self, body: bytes) -> None:
        self.pending += body
        self.send_pending()

    def on_message_complete(self) -> None:
        self.end_pending = True
        self.send_pending()

    def send_pending(self) -> None:
        if self.closed or self.ended_out:
            return
        h2c = self.conn.h2
        try:
            while self.pending:
                room = min(h2c.local_flow_control_window(self.id), h2c.max_outbound_frame_size)
                if room <= 0:
                    break
                chunk, self.pending = self.pending[:room], self.pending[room:]
                h2c.send_data(self.id, chunk)
            if not self.pending and self.end_pending:
                h2c.end_stream(self.id)
                self.ended_out = True
        except h2.exceptions.H2Error:
            self.on_reset("the machine's h2 connection refused the request body")
            return
        self.conn.flush()

    # -- the response: frames from the machine ----------------------------------------------

    def on_response(self, headers: list[tuple[bytes, bytes]]) -> None:
        ex = self.exchange
        if ex is None:
            return
        self.received = True
        status = 502
        lines = [b""]
        special: list[tuple[bytes, bytes, bytes]] = []
        watch = self.watch
        framed = False
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name.startswith(b":"):
                continue
            elif name in watch:
                special.append((name, name, value))
                framed = framed or name == b"content-length"
            else:
                lines += (name, b": ", value, b"\r\n")
        if not framed:
            # The end of the stream ends the body: the client gets it chunked.
            special.append((b"transfer-encoding", b"transfer-encoding", b"chunked"))
        ex.response_head(status, lines, special)

    def on_data(self, data: bytes, flow: int) -> None:
        ex = self.exchange
        if ex is not None:
            ex.response_body(data)
        if flow:
            if self.reading_paused and ex is not None:
                self.unacked += flow
            else:
                self._ack(flow)

    def _ack(self, n: int) -> None:
        with contextlib.suppress(h2.exceptions.H2Error):
            self.conn.h2.acknowledge_received_data(n, self.id)

    def on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        ex = self.exchange
        if ex is None:
            return
        lines: list[bytes] = []
        for name, value in headers:
            if not name.startswith(b":") and name not in NOT_TRAILERS:
                lines += (name, b": ", value, b"\r\n")
        if lines:
            ex.response_trailers(lines)

    def on_end(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.response_done(False)

    def on_reset(self, reason: str) -> None:
        ex, self.exchange = self.exchange, None
        self.closed = True
        self.conn.streams.pop(self.id, None)
        if ex is not None:
            ex.upstream_lost(reason)


class _RequestTransport:
    """Where the exchange writes the request (and body) as HTTP/1.1 bytes."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.request_bytes(data)

    def writelines(self, parts: Any) -> None:
        self.stream.request_bytes(b"".join(parts))

    def close(self) -> None:
        self.stream.close()

    def abort(self) -> None:
        self.stream.close()

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()
