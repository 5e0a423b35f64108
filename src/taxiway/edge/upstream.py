"""HTTP/1.1 connections from the edge to machines, and the pool that keeps them alive.

An `UpstreamConnection` carries one exchange at a time (no pipelining to machines): it
parses the machine's response with httptools and hands status, headers, body pieces and
the end to its `Exchange` (the `UpstreamUser` protocol), which decides what the client
gets. After a ``101 Switching Protocols`` it stops parsing and relays raw bytes.

`Pools` keeps idle keep-alive connections per machine address, last-in first-out (the
warmest first), and closes those idle for longer than `Limits.pool_idle_s`, as the
platform reuses connections for about 4 s in ``requests`` mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

import httptools

from taxiway.edge.limits import Limits
from taxiway.metrics.edge_counts import MachineCounts

log = logging.getLogger("taxiway.edge")

Address = tuple[str, int]


class UpstreamUser(Protocol):
    """What an upstream connection reports to the exchange it carries."""

    #: Response bytes produced by the current read, written by `flush`.
    out: list[bytes] | None

    def response_head(
        self, status: int, lines: list[bytes], special: list[tuple[bytes, bytes, bytes]]
    ) -> None:
        """``lines``: header lines passed on as they are (``lines[0]`` left for the status
        line); ``special``: (lowercase name, name, value) of the watched headers."""

    def response_body(self, data: bytes) -> None: ...

    def response_trailers(self, lines: list[bytes]) -> None:
        """Trailer fields after a chunked body (gRPC's status), as flat header lines."""

    def flush(self) -> None: ...

    def response_done(self, keep_alive: bool) -> None: ...

    def response_upgraded(self, rest: bytes) -> None: ...

    def relay_to_client(self, data: bytes) -> None: ...

    def upstream_lost(self, reason: str) -> None: ...

    def upstream_paused(self, paused: bool) -> None: ...


#: Fields a trailer section must not carry (framing, routing, hop-by-hop: RFC 9110 §6.5.1).
NOT_TRAILERS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"trailer",
        b"te",
        b"host",
        b"keep-alive",
        b"upgrade",
    }
)


class _Unexpected(Exception):
    """The machine sent a response nobody asked for."""


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a machine, speaking HTTP/1.1."""

    def __init__(self, pools: Pools, address: Address) -> None:
        self.pools = pools
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: UpstreamUser | None = None
        #: Response header lines passed on as they are, flat: name, b": ", value, b"\r\n", …
        self.lines: list[bytes] = [b""]
        #: (lowercase name, name, value) of the headers the exchange looks at.
        self.special: list[tuple[bytes, bytes, bytes]] = []
        #: The head has been parsed: header fields from now on are trailers.
        self.in_body = False
        self.trailers: list[bytes] = []
        #: Lowercase names not passed on as they are (set by the exchange: its site's
        #: `ResponseRewrite.watch`); those mapped to True go to ``special``.
        self.watch: Mapping[bytes, bool] = {}
        self.relay = False
        self.closed = False
        self.reading_paused = False
        #: Bytes arrived for the current exchange (a reused connection that closes before
        #: answering was stale, and the request may be sent again on a fresh one).
        self.received = False
        self.reused = False
        self.idle_since = 0.0
        #: The machine's counts (`taxiway.metrics.edge_counts.MachineCounts`), set by the
        #: exchange that opened the connection: its close is counted there.
        self.counts: MachineCounts | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.relay:
            ex = self.exchange
            if ex is not None:
                ex.relay_to_client(data)
            return
        try:
            self.parser.feed_data(data)
            ex = self.exchange
            if ex is not None and ex.out:
                ex.flush()
        except httptools.HttpParserUpgrade as exc:
            ex = self.exchange
            if ex is not None:
                self.relay = True
                ex.response_upgraded(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if cause is not None and not isinstance(cause, _Unexpected):
                log.error("edge: error handling a response", exc_info=cause)
            self.close()
            ex, self.exchange = self.exchange, None
            if ex is not None:
                ex.upstream_lost("the machine sent an invalid HTTP response")

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.counts is not None:
            self.counts.disconnects += 1
        ex, self.exchange = self.exchange, None
        if ex is None:
            self.pools.discard(self)
        else:
            # The exchange tells "the end of a response framed by the connection's end"
            # from "the machine went away".
            ex.upstream_lost("the machine closed the connection before the response ended")

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_paused(True)

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_paused(False)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:  # a trailer field: never one of the next response's headers
            if name.lower() not in NOT_TRAILERS:
                self.trailers += (name, b": ", value, b"\r\n")
            return
        lname = name.lower()
        watch = self.watch
        if lname not in watch:
            self.lines += (name, b": ", value, b"\r\n")
        elif watch[lname]:
            self.special.append((lname, name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            raise _Unexpected
        lines, special = self.lines, self.special
        self.lines, self.special = [b""], []
        self.in_body = True
        ex.response_head(self.parser.get_status_code(), lines, special)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.response_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        ex = self.exchange
        if self.trailers:
            trailers, self.trailers = self.trailers, []
            if ex is not None:
                ex.response_trailers(trailers)
        if ex is not None:
            ex.response_done(self.parser.should_keep_alive())

    # -- used by the exchange --------------------------------------------------------------

    def attach(self, exchange: UpstreamUser, watch: Mapping[bytes, bool]) -> None:
        self.exchange = exchange
        self.watch = watch
        self.received = False

    def keep_alive_after_head(self, framed: bool) -> bool:
        """A HEAD request's response ended with its head, which the parser can't know: start
        a fresh parser; reusable if the response said how long a body would have been."""
        keep = framed and self.parser.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self)
        self.in_body = False
        return keep

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
        self.closed = True


class Pools:
    """Idle keep-alive connections to machines, per machine address."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._idle: dict[Address, list[UpstreamConnection]] = {}
        self._count = 0
        #: A clock the sweeper advances (a second's precision is plenty for a 4 s window,
        #: and saves reading the time at every request).
        self.now = 0.0

    def get(self, address: Address) -> UpstreamConnection | None:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            self._count -= 1
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def put(self, conn: UpstreamConnection) -> None:
        conn.exchange = None
        if conn.reading_paused:
            conn.resume_reading()
        if conn.closed or self._count >= self.limits.pool_max_idle:
            conn.close()
            return
        conn.idle_since = self.now
        idle = self._idle.get(conn.address)
        if idle is None:
            self._idle[conn.address] = [conn]
        else:
            idle.append(conn)
        self._count += 1

    def discard(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)
            self._count -= 1

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the pooling window."""
        self.now = now
        cutoff = now - self.limits.pool_idle_s
        for address, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.idle_since < cutoff or conn.closed:
                    conn.close()
                    self._count -= 1
                else:
                    keep.append(conn)
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]

    def close_address(self, address: Address) -> None:
        """Close the idle connections to one machine (it is being drained)."""
        for conn in self._idle.pop(address, ()):
            conn.close()
            self._count -= 1

    def idle_count(self) -> int:
        return self._count

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._count = 0
