"""One HTTP request's way through the edge: to a machine and back, or answered locally.

An `Exchange` is created by the client connection (`http_proxy.HttpClientConnection`)
once a request's headers are read. It takes a slot on a machine (`Balancer`), gets a
pooled or new `UpstreamConnection`, streams the request body to it as it arrives and the
response back as it arrives (re-chunking when the client gets chunked encoding), and gives
the slot back exactly once, whatever happens: the response ends, the machine goes away,
the client goes away, or no machine can be had (an error page).

The common path — a machine under its limits, an idle pooled connection — runs without a
task or an await; anything else (connecting, waiting for a slot, autostart, retrying
another machine, ``fly-replay``) runs in one task per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from taxiway.edge.balancer import NoMachine
from taxiway.edge.errors_page import (
    CONTINUE,
    STATUS_LINES,
    error_response,
    redirect_response,
    status_line,
)
from taxiway.edge.fleet import Member
from taxiway.edge.replay import (
    REPLAY_JSON,
    Replay,
    failed_header,
    parse_header,
    parse_json,
    region_here,
    source_header,
)
from taxiway.edge.upstream import Address, UpstreamConnection

if TYPE_CHECKING:
    from taxiway.edge.http_proxy import HttpClientConnection

log = logging.getLogger("taxiway.edge")

# Why the client connection stopped reading (bits; it reads again when none is left).
PAUSE_PIPELINE = 1  # a pipelined request waits for the one before it
PAUSE_PENDING = 2  # request body piling up before a machine is connected
PAUSE_UPSTREAM = 4  # the machine isn't reading the body as fast as the client sends it

#: Request body buffered before a machine is connected; beyond it the client is paused.
PENDING_HIGH = 256 * 1024
#: A ``application/vnd.fly.replay+json`` body larger than this is not a replay request.
REPLAY_JSON_MAX = 64 * 1024
TERMINAL_CHUNK = b"0\r\n\r\n"


class Exchange:
    """One request and its response."""

    __slots__ = (
        "began",
        "body_done",
        "chunked",
        "close_after",
        "conn",
        "discard",
        "exclude",
        "expect",
        "extra",
        "fallback_delivery",
        "force",
        "head",
        "head_written",
        "host",
        "html",
        "http10",
        "informational",
        "is_head",
        "issuer",
        "keep_alive",
        "kept",
        "kept_size",
        "local",
        "member_id",
        "method",
        "out",
        "pending",
        "pending_size",
        "prefer",
        "raw_path",
        "rechunk",
        "relaying",
        "replay_body",
        "replay_header",
        "replay_spec",
        "replays",
        "req_headers",
        "request_id",
        "response_complete",
        "sent_at",
        "site",
        "started",
        "status",
        "task",
        "until_close",
        "up",
        "upgrade",
    )

    def __init__(
        self,
        conn: HttpClientConnection,
        method: bytes,
        head: bytes,
        request_id: bytes,
        keep_alive: bool,
        http10: bool,
        raw_path: bytes,
        host: bytes | None,
    ) -> None:
        self.conn = conn
        self.site = conn.site
        #: When the request's head began to arrive (loop time), and the status it was
        #: answered with: what `taxiway.metrics.edge_counts` records at its end.
        self.began = conn.head_started
        self.status = 0
        self.method = method
        self.head = head
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.http10 = http10
        self.is_head = method == b"HEAD"
        self.raw_path = raw_path
        self.host = host
        self.chunked = False
        self.upgrade = False
        self.html = False
        self.expect = False
        self.force: str | None = None
        self.prefer: str | None = None
        self.req_headers: list[tuple[bytes, bytes]] | None = None
        self.body_done = False
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        #: The body so far, for replays and retries; None once beyond the replay limit.
        self.kept: list[bytes] | tuple[()] | None = ()
        self.kept_size = 0
        self.member_id: str | None = None
        #: Response bytes not written yet: what one read from the machine produced goes
        #: to the client in one write (one syscall for head and body).
        self.out: list[bytes] | None = None
        self.issuer: str | None = None
        self.up: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.head_written = False
        self.response_complete = False
        self.close_after = False
        self.rechunk = False
        self.until_close = False
        self.informational = False
        self.relaying = False
        self.local = False
        self.discard = False
        self.replay_header: bytes | None = None
        self.replay_body: list[bytes] | None = None
        self.replay_spec: Replay | None = None
        self.replays = 0
        self.fallback_delivery = False
        #: Machines not to try again (a set once routing needs one).
        self.exclude: set[str] | None = None
        self.extra = b""
        self.started = 0.0
        #: When the request went to the machine (loop time); the wait for its response
        #: head is bounded from here (`HttpClientConnection._tick`).
        self.sent_at = 0.0

    # -- starting ----------------------------------------------------------------------------

    def start(self) -> None:
        """Called when this request is the connection's current one."""
        site = self.site
        if self.expect:
            self.conn.transport.write(CONTINUE)
        if site.force_https and not self.conn.tls:
            location = self.conn.https_location(self.host, self.raw_path)
            self.answer(redirect_response(location, head=self.is_head, tail=self.tail()), 301)
            return
        if site.statics is not None and self.conn.try_statics(self):
            return
        if self.force is None and self.prefer is None:
            balancer = site.balancer
            member = balancer.try_take()
            if member is not None:
                self.member_id = member.id
                if site.pooled:
                    up = site.pools.get(member.address(balancer.internal_port))
                    if up is not None:
                        self.attach(up)
                        return
                self.task = self.conn.loop.create_task(self.route(member))
                return
        self.task = self.conn.loop.create_task(self.route(None))

    async def route(self, member: Member | None) -> None:
        """Find a machine (waiting, autostarting, retrying others) and connect to it."""
        site = self.site
        balancer = site.balancer
        limits = site.limits
        port = balancer.internal_port
        last: OSError | None = None
        timeout = self.replay_spec.timeout_s if self.replay_spec is not None else None
        if self.exclude is None:
            self.exclude = set()
        try:
            for _ in range(limits.connect_attempts):
                if member is None:
                    member = await balancer.acquire(
                        force=self.force,
                        prefer=self.prefer,
                        exclude=self.exclude,
                        timeout_s=timeout,
                    )
                    self.member_id = member.id
                    if self.prefer is not None and member.id != self.prefer:
                        self.extra += b"fly-preferred-instance-unavailable: %s\r\n" % (
                            self.prefer.encode()
                        )
                        self.prefer = None
                address = member.address(port)
                up = site.pools.get(address) if site.pooled else None
                if up is None:
                    try:
                        up = await self.connect(member, address)
                    except OSError as exc:
                        last = exc
                        self.release()
                        if self.force is None:
                            self.exclude.add(member.id)
                        member = None
                        continue
                    if self.conn.closed:
                        up.close()
                        self.release()
                        return
                self.attach(up)
                return
        except NoMachine as exc:
            if self.replay_spec is not None and self._fall_back("no_candidate"):
                return
            if last is None:
                self.fail(exc.status, exc.reason)
                return
        except Exception:  # a bug must cost one request, never a slot or the edge
            log.exception("edge: routing a request failed")
            self.fail(502, "the edge failed to route this request")
            return
        target = f"machine {self.force}" if self.force is not None else "a machine"
        self.fail(502, f"could not connect to {target}: {last} (PC07)")

    async def connect(self, member: Member, address: Address) -> UpstreamConnection:
        """A new connection (or h2 stream); a machine autostart just started is given time
        to listen."""
        loop = self.conn.loop
        site = self.site
        delay = 0.02
        while True:
            try:
                if site.h2 is not None:
                    return await site.h2.stream(address)  # type: ignore[return-value]
                began = loop.time()
                _, up = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: UpstreamConnection(site.pools, address), *address
                    ),
                    site.limits.connect_timeout_s,
                )
                counts = site.counts.machine(member.id)
                counts.connects += 1
                counts.connect_times.observe(loop.time() - began)
                up.counts = counts
                return up  # type: ignore[return-value]
            except ConnectionRefusedError:
                if not site.balancer.is_booting(member.id):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)

    def attach(self, up: UpstreamConnection) -> None:
        """Send the request (and the body read so far) on ``up``."""
        self.up = up
        self.issuer = self.member_id
        self.sent_at = self.conn.loop.time()
        up.attach(self, self.site.rewrite.watch)
        if self.conn.write_paused:
            up.pause_reading()
        head = self.head
        if self.extra:
            head = head[:-2] + self.extra + b"\r\n"
        pending = self.pending
        transport = up.transport
        if pending:
            self.pending = None
            parts = [head]
            if self.chunked:
                for chunk in pending:
                    parts += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                parts += pending
            if self.body_done and self.chunked:
                parts.append(TERMINAL_CHUNK)
            transport.writelines(parts)  # type: ignore[union-attr]
            if self.pending_size > PENDING_HIGH:
                self.conn.resume(PAUSE_PENDING)
            self.pending_size = 0
        elif self.body_done and self.chunked:
            transport.write(head + TERMINAL_CHUNK)  # type: ignore[union-attr]
        else:
            transport.write(head)  # type: ignore[union-attr]

    # -- the request body (from the client connection) -------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self.local:
            return
        kept = self.kept
        if kept is not None:
            self.kept_size += len(data)
            if self.kept_size > self.site.limits.replay_body_limit:
                self.kept = None
            elif kept:
                kept.append(data)  # type: ignore[union-attr]
            else:
                self.kept = [data]
        up = self.up
        if up is not None:
            if self.chunked:
                up.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))  # type: ignore
            else:
                up.transport.write(data)  # type: ignore[union-attr]
            return
        if self.pending is None:
            self.pending = []
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_HIGH:
            self.conn.pause(PAUSE_PENDING)

    def body_complete(self) -> None:
        self.body_done = True
        if not self.local:
            up = self.up
            if up is not None and self.chunked and not self.discard:
                up.transport.write(TERMINAL_CHUNK)  # type: ignore[union-attr]
        if self.response_complete:
            self.conn.exchange_done(self)

    def client_data(self, data: bytes) -> None:
        """Bytes after an upgrade request's head: relayed raw."""
        up = self.up
        if up is not None:
            up.transport.write(data)  # type: ignore[union-attr]
        else:
            if self.pending is None:
                self.pending = []
            self.pending.append(data)

    # -- the response (from the upstream connection) ---------------------------------------

    def response_head(
        self, status: int, lines: list[bytes], special: list[tuple[bytes, bytes, bytes]]
    ) -> None:
        """The machine's response head: ``lines`` pass as they are (``lines[0]`` is left for
        the status line), ``special`` are the headers the edge reframes, drops or reads."""
        if status < 200 and status != 101:
            self.informational = True  # 100 Continue, 103 Early Hints: not passed on
            return
        self.status = status
        out = lines
        out[0] = STATUS_LINES.get(status) or status_line(status)
        length: bytes | None = None
        chunked = False
        upgrade: bytes | None = None
        replay: bytes | None = None
        replay_json = False
        for lname, name, value in special:
            if lname == b"content-length":
                length = value
            elif lname == b"content-type":
                replay_json = value.startswith(REPLAY_JSON)
                if lname not in self.site.rewrite.drop:
                    out += (name, b": ", value, b"\r\n")
            elif lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lname == b"fly-replay":
                replay = value
            elif lname == b"upgrade":
                upgrade = value
        if (replay is not None or replay_json) and not self.fallback_delivery:
            self.discard = True
            self.replay_header = replay
            self.replay_body = [] if replay is None else None
            if replay is None and length is None and not chunked:
                self.until_close = True
            return
        if status == 101:
            self.relaying = True  # the parser reports the upgrade (and a "complete") next
            out.append(b"Connection: Upgrade\r\n")
            if upgrade is not None:
                out += (b"Upgrade: ", upgrade, b"\r\n")
        else:
            if self.is_head or status == 204 or status == 304:  # no body
                if length is not None:
                    out += (b"Content-Length: ", length, b"\r\n")
                elif chunked and not self.http10:
                    out.append(b"Transfer-Encoding: chunked\r\n")
            elif length is not None:
                out += (b"Content-Length: ", length, b"\r\n")
            else:
                if not self.http10:
                    out.append(b"Transfer-Encoding: chunked\r\n")
                    self.rechunk = True
                else:
                    self.close_after = True
                if not chunked:
                    self.until_close = True
            if self.upgrade:
                self.close_after = True  # the client's parser is past an upgrade request
            if self.close_after or not self.keep_alive:
                out.append(b"Connection: close\r\n")
            elif self.http10:
                out.append(b"Connection: keep-alive\r\n")
        head_end = self.conn.head_end
        if head_end is None:  # pristine
            out += (self.site.rewrite.extra, b"\r\n")
        else:
            out += (head_end, self.request_id, b"\r\n\r\n")
        self.out = out
        self.head_written = True
        if self.is_head and status != 204 and status != 304 and not _zero(length):
            # A HEAD response has no body, which the response parser can't know.
            up = self.up
            keep = up is not None and up.keep_alive_after_head(length is not None or chunked)
            self.response_done(keep)

    def response_body(self, data: bytes) -> None:
        if self.discard:
            body = self.replay_body
            if body is not None:
                body.append(data)
                if sum(map(len, body)) > REPLAY_JSON_MAX:
                    self.replay_body = None
            return
        out = self.out
        if out is None:
            out = self.out = []
        if self.rechunk:
            out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            out.append(data)

    def response_trailers(self, lines: list[bytes]) -> None:
        """Trailer fields (gRPC's grpc-status): they end a chunked response to the client;
        one framed by Content-Length (or to an HTTP/1.0 client) has nowhere for them."""
        if not self.rechunk or self.discard:
            return
        self.rechunk = False  # the last chunk goes out here, with the fields after it
        out = self.out
        if out is None:
            out = self.out = []
        out += (b"0\r\n", *lines, b"\r\n")

    def flush(self) -> None:
        """Write what the last read from the machine produced."""
        out = self.out
        if out:
            self.out = None
            data = b"".join(out)
            self.conn.counts.data_out += len(data)
            self.conn.transport.write(data)

    def response_done(self, keep_alive: bool) -> None:
        if self.informational or self.relaying:
            self.informational = False
            return
        up, self.up = self.up, None
        conn = self.conn
        if conn.paused & PAUSE_UPSTREAM:
            conn.resume(PAUSE_UPSTREAM)
        site = self.site
        if up is not None:
            if keep_alive and site.pooled and self.body_done and not self.upgrade:
                site.pools.put(up)
            else:
                up.exchange = None
                up.close()
        mid = self.member_id
        if mid is not None:
            self.member_id = None
            site.balancer.release(mid)
        if self.discard:
            self.replay()
            return
        self._finish()

    def _finish(self) -> None:
        out = self.out
        conn = self.conn
        counts = conn.counts
        if self.rechunk:
            if out is None:
                out = []
            out.append(TERMINAL_CHUNK)
        if out:
            self.out = None
            data = b"".join(out)
            counts.data_out += len(data)
            conn.transport.write(data)
        counts.done.append((self.issuer, self.status, self.began, self.sent_at, conn.loop.time()))
        self.response_complete = True
        if not self.body_done:
            self.close_after = True  # the machine answered before the body was all sent
        self.conn.exchange_done(self)

    def response_upgraded(self, rest: bytes) -> None:
        """101 Switching Protocols: from now on bytes go both ways untouched."""
        self.flush()
        conn = self.conn
        conn.counts.response(self.issuer, 101, self.began, self.sent_at, conn.loop.time())
        conn.start_relay(self)
        if rest:
            conn.counts.data_out += len(rest)
            conn.transport.write(rest)

    def relay_to_client(self, data: bytes) -> None:
        self.conn.counts.data_out += len(data)
        self.conn.transport.write(data)

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.conn.pause(PAUSE_UPSTREAM)
        else:
            self.conn.resume(PAUSE_UPSTREAM)

    def upstream_lost(self, reason: str) -> None:
        up, self.up = self.up, None
        if up is None:
            return
        self.conn.resume(PAUSE_UPSTREAM)
        self.flush()
        if self.relaying:
            self.release()
            self.conn.transport.close()
            return
        if self.until_close and (self.head_written or self.discard):
            self.release()  # the response was framed by the connection's end
            if self.discard:
                self.replay()
            else:
                self._finish()
            return
        if not up.received and up.reused and self.kept is not None and not self.head_written:
            # A pooled connection the machine had closed meanwhile: send it again.
            self.release()
            self.pending = list(self.kept)
            self.pending_size = 0
            self.task = asyncio.get_running_loop().create_task(self.route(None))
            return
        self.release()
        if self.head_written:
            self.conn.transport.close()  # the client sees a truncated response
        else:
            self.fail(502, reason + " (PR02)")

    # -- endings -----------------------------------------------------------------------------

    def release(self) -> None:
        """Give the machine slot back (idempotent)."""
        mid = self.member_id
        if mid is not None:
            self.member_id = None
            self.site.balancer.release(mid)

    def tail(self) -> bytes:
        return self.site.rewrite.tail(self.request_id, self.conn.via)

    def answer(self, response: bytes, status: int) -> None:
        """Write a whole response the edge made itself (``status``: its status code)."""
        self.local = True
        self.status = status
        conn = self.conn
        conn.counts.local_response(status, self.began, conn.loop.time())
        conn.counts.data_out += len(response)
        conn.transport.write(response)
        self.head_written = True
        self.response_complete = True
        if self.body_done:
            self.conn.exchange_done(self)

    def fail(self, status: int, reason: str) -> None:
        self.release()
        if self.head_written:
            self.flush()
            self.conn.transport.close()
            return
        if not self.body_done:
            self.close_after = True  # don't read a whole upload for an error page
        close = self.close_after or not self.keep_alive
        self.local = True
        self.status = status
        page = error_response(
            self.site.app,
            status,
            reason,
            html=self.html,
            head=self.is_head,
            close=close,
            tail=self.tail(),
        )
        conn = self.conn
        conn.counts.local_response(status, self.began, conn.loop.time())
        conn.counts.data_out += len(page)
        conn.transport.write(page)
        self.head_written = True
        self.response_complete = True
        if self.body_done or self.close_after:
            self.conn.exchange_done(self)

    def response_timed_out(self, after_s: float) -> None:
        """The machine took the request but sent no response head within ``after_s``: its
        connection is dropped and the client gets the platform's timeout error."""
        up, self.up = self.up, None
        if up is not None:
            up.abort()
        machine = self.issuer or "the machine"
        self.fail(504, f"machine {machine} sent no response within {after_s:g} s (PC05)")

    def abort(self) -> None:
        """The client went away: stop everything, free the slot."""
        self.local = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        up, self.up = self.up, None
        if up is not None:
            up.abort()
        self.release()

    # -- fly-replay --------------------------------------------------------------------------

    def replay(self) -> None:
        """The machine answered with fly-replay: deliver the request as it asks."""
        site = self.site
        self.discard = False
        self.until_close = False
        self.rechunk = False
        self.replays += 1
        self.started = self.started or time.monotonic()
        issuer = self.issuer or "?"
        if self.replay_header is not None:
            spec = parse_header(self.replay_header)
        else:
            spec = parse_json(b"".join(self.replay_body or ()))
        self.replay_spec = spec
        if self.replays > site.limits.max_replays:
            self.fail(
                502, f"the request was replayed more than {site.limits.max_replays} times (PA02)"
            )
            return
        if self.kept is None:
            self.fail(502, "fly-replay: request bodies over 1 MB can't be replayed (PA01)")
            return
        if spec.app is not None and spec.app != site.app:
            if not self._fall_back("no_candidate"):
                self.fail(
                    502,
                    f'fly-replay asked for the app "{spec.app}", which taxiway '
                    f'doesn\'t run here (only "{site.app}") (PA04)',
                )
            return
        if not region_here(spec, site.region):
            if not self._fall_back("no_candidate"):
                self.fail(
                    502,
                    f"fly-replay asked for region {','.join(spec.regions)}; every "
                    f'machine here runs in "{site.region}" (PA03)',
                )
            return
        self.force = spec.instance
        self.prefer = spec.prefer_instance
        self.exclude = {issuer} if spec.elsewhere and spec.instance is None else set()
        self.extra = source_header(issuer, site.region, spec.state)
        self._again()

    def _fall_back(self, reason: str) -> bool:
        """Deliver to the issuing machine when the replay asked for a fallback."""
        spec = self.replay_spec
        if spec is None or self.fallback_delivery:
            return False
        if spec.fallback not in ("force_self", "prefer_self"):
            return False
        issuer = self.issuer or "?"
        elapsed = int((time.monotonic() - self.started) * 1000) if self.started else 0
        self.fallback_delivery = True
        self.exclude = set()
        if spec.fallback == "force_self":
            self.force, self.prefer = issuer, None
        else:
            self.force, self.prefer = None, issuer
        self.extra = failed_header(spec, issuer, self.site.app, reason, elapsed)
        self._again()
        return True

    def _again(self) -> None:
        self.pending = list(self.kept or ())
        self.pending_size = 0
        self.task = asyncio.get_running_loop().create_task(self.route(None))


def _zero(length: bytes | None) -> bool:
    return length is not None and length.strip() == b"0"
