"""HTTP/2 from clients (TLS with ALPN ``h2``), translated to the HTTP/1.1 path.

Each h2 stream becomes one HTTP/1.1 request on its own `HttpClientConnection`, whose
transport is the stream (`_StreamTransport`): the request is re-written as HTTP/1.1 bytes
and fed to it, and the HTTP/1.1 response it writes back is parsed into HEADERS and DATA
frames. So an h2 client gets every behaviour of the http handler — headers (``Via: 2
fly.io``), balancing, limits, replay, statics — from the one implementation, and the
HTTP/1.1 hot path pays nothing for h2. The cost is a second parse per request, which
only h2 clients pay.

Flow control: response DATA waits for the client's window (the machine is paused while
it waits); request DATA is acknowledged as it is handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httptools

if TYPE_CHECKING:
    from taxiway.edge.admission import Admission
    from taxiway.edge.http_proxy import HttpClientConnection, HttpSite

VIA_2 = b"2 fly.io"
#: Response headers HTTP/2 forbids (RFC 9113 §8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
MAX_STREAMS = 100


class H2ClientConnection(asyncio.Protocol):
    """One client connection that negotiated h2."""

    def __init__(self, site: HttpSite) -> None:
        self.site = site
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.write_paused = False
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.admission: Admission | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.site.connections.add(self)  # type: ignore[arg-type]
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS})
        self.flush()
        self._arm()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.transport.close()
            return
        for event in events:
            self._event(event)
        self.flush()

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            stream = _Stream(self, event.stream_id)
            self.streams[event.stream_id] = stream
            stream.start(event.headers, ended=event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None:
                stream.body(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.end_body()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.gone()
        elif isinstance(event, h2.events.WindowUpdated):
            for stream in list(self.streams.values()):
                stream.send_pending()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.transport.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def finished(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.site.counts.tcp_disconnects += 1  # its connect was counted before the switch
        self.site.connections.discard(self)  # type: ignore[arg-type]
        admission, self.admission = self.admission, None
        if admission is not None:
            admission.give_back()
        if self.timer is not None:
            self.timer.cancel()
        for stream in list(self.streams.values()):
            stream.gone()
        self.streams.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in self.streams.values():
            stream.inner.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.inner.resume_writing()

    def _arm(self) -> None:
        self.timer = self.loop.call_later(self.site.idle_timeout, self._tick)

    def _tick(self) -> None:
        """No stream for a whole idle period: say goodbye."""
        self.timer = None
        if self.closed:
            return
        if self.streams:
            self._arm()
            return
        self.h2.close_connection()
        self.flush()
        self.transport.close()


class _Stream:
    """One h2 stream, as an HTTP/1.1 request on its own connection object."""

    def __init__(self, outer: H2ClientConnection, stream_id: int) -> None:
        from taxiway.edge.http_proxy import HttpClientConnection

        self.outer = outer
        self.id = stream_id
        self.chunked = False
        self.head_request = False
        self.ended = False  # END_STREAM sent
        self.pending = b""
        self.end_pending = False
        self.headers: list[tuple[bytes, bytes]] = []
        #: The response head went out: header fields from now on are trailers.
        self.head_sent = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpResponseParser(self)
        self.transport = _StreamTransport(self)
        self.inner: HttpClientConnection = HttpClientConnection(outer.site, via=VIA_2)
        self.inner.connection_made(self.transport)

    # -- the request -------------------------------------------------------------------------

    def start(self, headers: list[tuple[bytes, bytes]], *, ended: bool) -> None:
        pseudo: dict[bytes, bytes] = {}
        regular: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        for name, value in headers:
            if name.startswith(b":"):
                pseudo[name] = value
            elif name == b"cookie":
                cookies.append(value)  # h2 may split cookies; HTTP/1.1 wants one header
            else:
                regular.append((name, value))
        if cookies:
            regular.append((b"cookie", b"; ".join(cookies)))
        method = pseudo.get(b":method", b"GET")
        self.head_request = method == b"HEAD"
        out = [method, b" ", pseudo.get(b":path", b"/"), b" HTTP/1.1\r\n"]
        if not any(n == b"host" for n, _ in regular) and b":authority" in pseudo:
            out += (b"Host: ", pseudo[b":authority"], b"\r\n")
        for name, value in regular:
            out += (name, b": ", value, b"\r\n")
        if not ended and not any(n == b"content-length" for n, _ in regular):
            self.chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"connection: close\r\n\r\n")  # one request per stream
        self.inner.data_received(b"".join(out))

    def body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.inner.data_received(data)

    def end_body(self) -> None:
        if self.chunked:
            self.inner.data_received(b"0\r\n\r\n")

    def gone(self) -> None:
        """The client reset the stream, or the connection went away."""
        self.ended = True
        self.transport.closing = True
        if not self.inner.closed:
            self.inner.connection_lost(None)

    # -- the response (HTTP/1.1 bytes from the inner connection) ----------------------------

    def response_bytes(self, data: bytes) -> None:
        if self.ended:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_sent:  # after a chunked body: a trailer field (gRPC's grpc-status)
            self.trailers.append((name.lower(), value))
        else:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, self.headers = self.headers, []
        if status < 200:
            return  # 100 Continue and other interim answers stay on this side
        self.head_sent = True
        h2_headers = [(b":status", b"%d" % status)]
        h2_headers += [(n, v) for n, v in headers if n not in _CONNECTION_SPECIFIC]
        conn = self.outer.h2
        no_body = self.head_request or status in (204, 304)
        try:
            conn.send_headers(self.id, h2_headers, end_stream=no_body)
        except h2.exceptions.H2Error:
            self.reset()
            return
        if no_body:
            self.ended = True
            self.parser = httptools.HttpResponseParser(self)
        self.outer.flush()

    def on_body(self, body: bytes) -> None:
        self.pending += body
        self.send_pending()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200 or self.ended:
            return
        self.end_pending = True
        self.send_pending()

    def send_pending(self) -> None:
        """Send what the client's flow-control window allows; the machine waits for more."""
        if self.ended:
            return
        conn = self.outer.h2
        try:
            while self.pending:
                window = min(conn.local_flow_control_window(self.id), conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk, self.pending = self.pending[:window], self.pending[window:]
                conn.send_data(self.id, chunk)
            if self.pending:
                self.inner.pause_writing()
            else:
                if not self.outer.write_paused:
                    self.inner.resume_writing()
                if self.end_pending:
                    if self.trailers:
                        conn.send_headers(self.id, self.trailers, end_stream=True)
                    else:
                        conn.end_stream(self.id)
                    self.ended = True
                    if self.transport.closing:
                        self.outer.finished(self.id)
        except h2.exceptions.H2Error:
            self.reset()
            return
        self.outer.flush()

    def reset(self) -> None:
        if not self.ended:
            self.ended = True
            with contextlib.suppress(h2.exceptions.H2Error):
                self.outer.h2.reset_stream(self.id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self.outer.flush()

    def closed_by_inner(self) -> None:
        """The HTTP/1.1 side is done (its response ended, or it gave up)."""
        if not self.ended and not (self.end_pending and self.pending):
            self.reset()
        if not self.pending:
            self.outer.finished(self.id)
        self.outer.loop.call_soon(self._lost)

    def _lost(self) -> None:
        if not self.inner.closed:
            self.inner.connection_lost(None)


class _StreamTransport(asyncio.Transport):
    """The transport an inner `HttpClientConnection` writes its HTTP/1.1 response to."""

    def __init__(self, stream: _Stream) -> None:
        super().__init__()
        self.stream = stream
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.stream.response_bytes(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.stream.closed_by_inner()

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            self.stream.reset()
            self.stream.closed_by_inner()

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.stream.outer.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        pass  # the client's stream window is the brake (data is acknowledged as handed on)

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return len(self.stream.pending)
