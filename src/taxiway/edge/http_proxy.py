"""The ``http`` handler: HTTP/1.1 from clients, on asyncio Protocols with httptools.

`HttpClientConnection` parses a client connection's requests, enforces the limits of
`Limits` (414, 431, 400, 408, idle keep-alive), rewrites each request's headers as the
platform does (`headers`), and hands it to an `Exchange`. Requests on one connection are
answered in order: a pipelined request waits (and the connection stops reading) until the
one before it is answered. After a ``101 Switching Protocols`` the connection relays raw
bytes (WebSocket).

No asyncio streams and no per-request task in the common path: the parser's callbacks
build the upstream request head in one pass over the headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import httptools

from taxiway.edge.balancer import Balancer
from taxiway.edge.errors_page import error_response, status_line
from taxiway.edge.exchange import PAUSE_PIPELINE, Exchange
from taxiway.edge.headers import (
    ACCEPT,
    CONNECTION,
    CONTENT_LENGTH,
    DROP,
    EXPECT,
    FORCE_INSTANCE,
    FORCE_REGION,
    HOST,
    PREFER_INSTANCE,
    REQUEST_ACTIONS,
    TRANSFER_ENCODING,
    UPGRADE,
    VIA,
    XFF,
    XFPORT,
    ResponseRewrite,
    connection_headers,
    request_id,
)
from taxiway.edge.limits import Limits
from taxiway.edge.upstream import Pools
from taxiway.metrics.edge_counts import SiteCounts
from taxiway.plan.machine import Port

if TYPE_CHECKING:
    from taxiway.edge.admission import Admission
    from taxiway.edge.h2_upstream import H2Upstreams
    from taxiway.edge.statics import FileBody, StaticResponse

log = logging.getLogger("taxiway.edge")

VIA_11 = b"1.1 fly.io"


class StaticsLike(Protocol):
    """`taxiway.edge.statics.Statics` as the http handler uses it."""

    def match(
        self, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]]
    ) -> StaticResponse | None: ...


class HttpSite:
    """One http listener's settings and the edge's parts it uses, shared by its connections."""

    def __init__(
        self,
        *,
        app: str,
        region: str,
        port: Port,
        balancer: Balancer,
        pools: Pools,
        limits: Limits,
        statics: StaticsLike | None = None,
        https_port: Callable[[], int | None] = lambda: None,
        h2: H2Upstreams | None = None,
        counts: SiteCounts | None = None,
    ) -> None:
        http_options = port.http_options or {}
        self.app = app
        self.region = region
        self.region_suffix = b"-" + region.encode()
        self.balancer = balancer
        self.pools = pools
        self.limits = limits
        self.statics = statics
        self.https_port = https_port
        self.force_https = port.force_https
        self.rewrite = ResponseRewrite(http_options)
        self.idle_timeout = float(http_options.get("idle_timeout") or limits.idle_timeout_s)
        self.headers_timeout = float(
            http_options.get("headers_read_timeout") or limits.headers_timeout_s
        )
        #: h2c to the machines (``h2_backend``): one connection per machine, a stream per
        #: request.
        self.h2 = h2 if http_options.get("h2_backend") else None
        #: ``requests`` concurrency pools connections to machines; ``connections`` opens
        #: one per request, as the platform does.
        self.pooled = balancer.service.concurrency.type == "requests" and self.h2 is None
        self.connections: set[HttpClientConnection] = set()
        #: What the service's traffic did (`taxiway.metrics.edge_counts`): plain numbers.
        self.counts = counts if counts is not None else SiteCounts(balancer.service.source)


class _Reject(Exception):
    """A request the edge refuses before it is whole (status in ``args[0]``)."""


class HttpClientConnection(asyncio.Protocol):
    """One client connection on an http listener."""

    def __init__(self, site: HttpSite, via: bytes = VIA_11) -> None:
        self.site = site
        self.counts = site.counts
        self.limits = site.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        #: The edge's connection slot this client connection holds (None for an h2 stream).
        self.admission: Admission | None = None
        self.tls = False
        self.closed = False
        #: ``1.1 fly.io``, or ``2 fly.io`` for a stream of an h2 connection.
        self.via = via
        #: What ends every proxied response head before the request id (None: pristine).
        self.head_end = None if site.rewrite.pristine else site.rewrite.head_end(via)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.stalled = 0
        self.in_head = False
        self.head_started = 0.0
        self.last_activity = 0.0
        #: The request being answered, the one whose body is being read, and those after.
        self.active: Exchange | None = None
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] | None = None
        self.relay: Exchange | None = None
        self.upgrading: Exchange | None = None
        self.paused = 0
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        #: Set once the connection will take no more requests; written after the active
        #: exchange, then the connection closes.
        self.final: bytes | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.fixed = b""
        self.xff_tail = b""
        self.xfport = b""
        self.added = b""
        self.client_ip = ""
        self.local_ip = ""
        self.local_port = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        site = self.site
        if self.via is VIA_11:  # an h2 stream is no connection of its own
            self.counts.tcp_connects += 1
        self.tls = transport.get_extra_info("sslcontext") is not None
        if self.tls and self.via is VIA_11:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                from taxiway.edge.h2_frontend import H2ClientConnection

                h2_conn = H2ClientConnection(site)
                h2_conn.admission, self.admission = self.admission, None
                transport.set_protocol(h2_conn)
                h2_conn.connection_made(transport)
                return
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        sock = transport.get_extra_info("sockname") or ("127.0.0.1", 0)
        self.client_ip, self.local_ip, self.local_port = peer[0], sock[0], sock[1]
        self.fixed = connection_headers(self.client_ip, self.local_port, site.region, self.tls)
        self.xff_tail = f"{self.client_ip}, {self.local_ip}\r\n".encode()
        self.xfport = f"X-Forwarded-Port: {self.local_port}\r\n".encode()
        self.added = (
            b"X-Forwarded-For: "
            + self.xff_tail
            + b"Via: "
            + self.via
            + b"\r\n"
            + self.xfport
            + self.fixed
        )
        site.connections.add(self)
        self.last_activity = self.loop.time()
        self.timer = self.loop.call_later(min(site.idle_timeout, site.headers_timeout), self._tick)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.counts.data_in += len(data)
        relay = self.relay
        if relay is not None:
            relay.client_data(data)
            return
        if self.final is not None:
            return
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            ex, self.upgrading = self.upgrading, None
            self.parsing = None
            if ex is None or not ex.upgrade:
                self._refuse(400, "an upgrade request needs an Upgrade header")
                return
            self.relay = ex
            rest = data[exc.args[0] :]
            if rest:
                ex.client_data(rest)
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._refuse(cause.args[0], cause.args[1])
            else:
                log.error("edge: error handling a request", exc_info=cause or exc)
                self._refuse(500, "the edge failed to handle this request")
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request ({exc})")
            return
        if was_in_head and self.in_head:
            self.stalled += len(data)
            limits = self.limits
            if self.stalled > limits.max_request_line + limits.max_headers_size:
                if not self.headers and len(self.url) > limits.max_request_line // 2:
                    self._refuse(414, "the request line is too long")
                else:
                    self._refuse(431, "the request headers are too large")

    def eof_received(self) -> bool | None:
        # The client is gone, as nginx reads it: what it asked for is abandoned and its slot
        # freed at once (a half-closing HTTP client is rare; a vanished one is not).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.via is VIA_11:  # an h2 connection's end: `H2ClientConnection` counts it
            self.counts.tcp_disconnects += 1
        self.site.connections.discard(self)
        admission = self.admission
        if admission is not None:
            self.admission = None
            admission.give_back()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        active, self.active = self.active, None
        if active is not None:
            active.abort()
        parsing, self.parsing = self.parsing, None
        if parsing is not None and parsing is not active:
            parsing.abort()
        if self.queue:
            for ex in self.queue:
                ex.abort()
            self.queue.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.up is not None:
            ex.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.up is not None:
            ex.up.resume_reading()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- flow control ----------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait until the client has taken what was written (for streaming static files)."""
        if self.write_paused and not self.closed:
            self.drained = self.loop.create_future()
            await self.drained

    # -- httptools callbacks ---------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        # The first callback of a request (on_message_begin would cost a call more).
        if not self.in_head:
            self.in_head = True
            self.head_started = self.last_activity
            self.url = url
        else:
            self.url += url
        if len(self.url) > self.limits.max_request_line:
            raise _Reject(414, "the request line is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self.head_size += size
        limits = self.limits
        if (
            size > limits.max_header_line
            or self.head_size > limits.max_headers_size
            or len(self.headers) >= limits.max_headers_count
        ):
            raise _Reject(431, "the request headers are too large")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        ex = self._exchange()
        if self.headers:
            self.headers = []
        self.head_size = 0
        self.stalled = 0
        self.parsing = ex
        if self.active is None:
            self.active = ex
            ex.start()
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(ex)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.feed_body(body)

    def on_message_complete(self) -> None:
        ex, self.parsing = self.parsing, None
        if ex is not None:
            ex.body_complete()

    # -- requests ----------------------------------------------------------------------------

    def _exchange(self) -> Exchange:
        """The upstream request head for the request just parsed, as an `Exchange`."""
        parser = self.parser
        site = self.site
        method = parser.get_method()
        url = self.url
        out = [method, b" ", url, b" HTTP/1.1\r\n"]
        append = out.append
        actions = REQUEST_ACTIONS
        host = xff = via = force = prefer = length = te = upgrade = None
        xfport = html = expect = connection = False
        for name, value in self.headers:
            action = actions.get(name.lower())
            if action is None:
                out += (name, b": ", value, b"\r\n")
            elif action == DROP:
                continue
            elif action == HOST:
                if host is not None:
                    raise _Reject(400, "the request has two Host headers")
                host = value
                out += (name, b": ", value, b"\r\n")
            elif action == XFF:
                xff = value if xff is None else xff + b", " + value
            elif action == VIA:
                via = value if via is None else via + b", " + value
            elif action == XFPORT:
                xfport = True
                out += (name, b": ", value, b"\r\n")
            elif action == ACCEPT:
                html = html or b"text/html" in value
                out += (name, b": ", value, b"\r\n")
            elif action == CONTENT_LENGTH:
                if length is not None and length != value:
                    raise _Reject(400, "the request has conflicting Content-Length headers")
                length = value
            elif action == TRANSFER_ENCODING:
                te = value if te is None else te + b", " + value
            elif action == CONNECTION:
                connection = True
            elif action == UPGRADE:
                upgrade = value
            elif action == EXPECT:
                expect = value.lower() == b"100-continue"
                if not expect:
                    raise _Reject(417, "only Expect: 100-continue is understood")
            elif action == FORCE_INSTANCE:
                force = value.decode("latin-1").strip()
                out += (name, b": ", value, b"\r\n")
            elif action == PREFER_INSTANCE:
                prefer = value.decode("latin-1").strip()
                out += (name, b": ", value, b"\r\n")
            elif action == FORCE_REGION:
                regions = [r.strip() for r in value.decode("latin-1").split(",")]
                if site.region not in regions and "any" not in regions:
                    raise _Reject(
                        503,
                        f"fly-force-region asked for {', '.join(regions)}; every machine "
                        f'here runs in "{site.region}"',
                    )
                out += (name, b": ", value, b"\r\n")
        keep_alive = parser.should_keep_alive()
        # The parser takes HTTP/0.9, 1.0, 1.1 and 2.0; without a Connection header only 1.1
        # is kept alive, which spares formatting the version (get_http_version) each time.
        http10 = (connection or not keep_alive) and parser.get_http_version() != "1.1"
        if length is not None and te is not None:
            raise _Reject(400, "the request has both Content-Length and Transfer-Encoding")
        if host is None and not http10:
            raise _Reject(400, "an HTTP/1.1 request needs a Host header")
        if method == b"CONNECT":
            raise _Reject(405, "CONNECT is not supported")
        is_upgrade = parser.should_upgrade()
        if xff is None and via is None and not xfport:
            append(self.added)  # the usual request: everything precomputed
        else:
            append(b"X-Forwarded-For: " + (xff + b", " if xff else b"") + self.xff_tail)
            append(b"Via: " + (via + b", " if via else b"") + self.via + b"\r\n")
            if not xfport:
                append(self.xfport)
            append(self.fixed)
        rid = request_id(site.region_suffix)
        out += (b"Fly-Request-Id: ", rid, b"\r\n")
        if te is not None:
            append(b"Transfer-Encoding: " + te + b"\r\n")
        elif length is not None:
            append(b"Content-Length: " + length + b"\r\n")
        if is_upgrade and upgrade is not None:
            append(b"Connection: Upgrade\r\nUpgrade: " + upgrade + b"\r\n")
        elif not site.pooled:
            append(b"Connection: close\r\n")
        append(b"\r\n")
        ex = Exchange(self, method, b"".join(out), rid, keep_alive, http10, url, host)
        # Only what differs from a plain request is set after.
        if te is not None:
            ex.chunked = True
            if expect:
                ex.expect = True
        elif expect and length is not None and length != b"0":
            ex.expect = True
        if html:
            ex.html = True
        if force is not None:
            ex.force = force
        if prefer is not None:
            ex.prefer = prefer
        if site.statics is not None:
            ex.req_headers = self.headers
        if is_upgrade:
            if upgrade is not None:
                ex.upgrade = True
            self.upgrading = ex
        return ex

    def exchange_done(self, ex: Exchange) -> None:
        """``ex`` is answered (and its body read): go on with the next request, or close."""
        if ex is not self.active:
            return
        self.active = None
        if self.closed:
            return
        if not ex.keep_alive or ex.close_after:
            self.final = b""
        queue = self.queue
        if queue and self.final is None:
            nxt = queue.popleft()
            if not queue:
                self.resume(PAUSE_PIPELINE)
            self.active = nxt
            nxt.start()
            return
        if self.final is not None:
            if self.final:
                self.counts.data_out += len(self.final)
                self.transport.write(self.final)
            self.transport.close()

    def start_relay(self, ex: Exchange) -> None:
        """The machine switched protocols: raw bytes both ways until either side closes."""
        self.relay = ex
        self.resume(PAUSE_PIPELINE)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request the edge won't take, after any in flight, then close."""
        parsing = self.parsing
        if parsing is not None and parsing is not self.active:
            parsing.abort()
        self.parsing = None
        self.in_head = False
        page = error_response(
            self.site.app, status, reason, close=True, tail=self._tail() if status >= 500 else b""
        )
        counts = self.counts
        began = self.head_started or self.last_activity
        if parsing is not None and parsing is self.active:
            # Broken in the middle of a body: nothing more can be said on this connection.
            if not parsing.head_written:
                parsing.abort()
                self.active = None
                counts.local_response(status, began, self.loop.time())
                counts.data_out += len(page)
                self.transport.write(page)
            self.transport.close()
            return
        counts.local_response(status, began, self.loop.time())
        self.final = page
        if self.queue:
            self.queue = deque(e for e in self.queue if e.body_done)
        if self.active is None:
            counts.data_out += len(page)
            self.transport.write(page)
            self.transport.close()

    def _tail(self) -> bytes:
        return self.site.rewrite.tail(request_id(self.site.region_suffix), self.via)

    # -- local answers -----------------------------------------------------------------------

    def https_location(self, host: bytes | None, raw_path: bytes) -> bytes:
        """Where ``force_https`` sends a request: the https listener's real port."""
        hostname = (host or b"").decode("latin-1").strip()
        if not hostname:
            hostname = f"[{self.local_ip}]" if ":" in self.local_ip else self.local_ip
        if hostname.startswith("["):
            hostname = hostname.split("]", 1)[0] + "]"
        else:
            hostname = hostname.rsplit(":", 1)[0] if hostname.count(":") == 1 else hostname
        port = self.site.https_port() or 443
        authority = hostname if port == 443 else f"{hostname}:{port}"
        path = raw_path if raw_path.startswith(b"/") else b"/"
        return b"https://" + authority.encode("latin-1") + path

    def try_statics(self, ex: Exchange) -> bool:
        """Answer from ``[[statics]]`` when a file matches; False to proxy the request."""
        statics = self.site.statics
        assert statics is not None
        method = ex.method.decode("latin-1")
        found = statics.match(method, ex.raw_path, ex.req_headers or [])
        if found is None:
            return False
        head = [status_line(found.status)]
        head += [b"%s: %s\r\n" % (n, v) for n, v in found.headers]
        if not ex.keep_alive:
            head.append(b"Connection: close\r\n")
        head += [ex.tail(), b"\r\n"]
        body = found.body
        if isinstance(body, bytes):
            ex.answer(b"".join(head) + body, found.status)
            return True
        ex.local = True
        ex.status = found.status
        data = b"".join(head)
        self.counts.data_out += len(data)
        self.transport.write(data)
        ex.head_written = True
        ex.task = self.loop.create_task(self._send_file(ex, body))
        return True

    async def _send_file(self, ex: Exchange, body: FileBody) -> None:
        try:
            f = body.open()
        except OSError:
            self.transport.close()
            return
        with f:
            left = body.length
            while left > 0 and not self.closed:
                chunk = f.read(min(left, 256 * 1024))
                if not chunk:
                    self.transport.close()  # the file shrank: the client sees it short
                    return
                left -= len(chunk)
                self.counts.data_out += len(chunk)
                self.transport.write(chunk)
                await self.drain()
        self.counts.local_response(ex.status, ex.began, self.loop.time())
        ex.response_complete = True
        if ex.body_done:
            self.exchange_done(ex)

    # -- timeouts ----------------------------------------------------------------------------

    def _tick(self) -> None:
        """Idle keep-alive connections, slow request heads and stalled bodies end here.

        One timer per connection, re-armed from the times data last came (not once per
        request): it looks again at least every ``headers_timeout``.
        """
        self.timer = None
        if self.closed or self.relay is not None:
            return
        now = self.loop.time()
        site = self.site
        ex = self.active
        if self.in_head and now >= self.head_started + site.headers_timeout:
            self._refuse(408, "the request headers did not arrive in time")
            return
        if ex is not None and ex.body_done and self.parsing is None:
            if ex.up is not None and not ex.head_written and ex.sent_at:
                # Waiting for the machine's response head: bounded by the idle timeout of
                # the connection to the machine. Once the head came, a slow body, SSE or
                # a WebSocket is never cut here.
                deadline = ex.sent_at + site.idle_timeout
                if now >= deadline:
                    ex.response_timed_out(site.idle_timeout)
                    if not self.closed:  # a pipelined request may go on
                        self.timer = self.loop.call_later(site.idle_timeout, self._tick)
                    return
            else:
                deadline = now + site.idle_timeout  # routing (bounded on its own) or streaming
        else:
            deadline = self.last_activity + site.idle_timeout
        if now >= deadline:
            self.transport.close()
            return
        if self.in_head:
            deadline = min(deadline, self.head_started + site.headers_timeout)
        delay = min(deadline - now, site.headers_timeout)
        self.timer = self.loop.call_later(delay, self._tick)
