"""The edge's limits and timeouts, in one place so they can be documented and tuned.

Where the platform states a number (https://fly.io/docs/reference/fly-proxy/,
https://fly.io/docs/reference/configuration/) it is used; where it doesn't,
the value follows nginx's defaults, since apps behind Fly usually were written against
them and nginx is the peer the edge is measured against:

- request line longer than 8 KiB → **414** (nginx: ``large_client_header_buffers 4 8k``);
- one header line over 8 KiB, more than 32 KiB of headers in all, or more than 100
  header lines → **431** (nginx answers 400 "Request Header Or Cookie Too Large"; 431 is
  the status RFC 6585 made for it);
- 60 s to send a request's headers (nginx ``client_header_timeout``) → **408**;
- 60 s idle keep-alive client connections (``http_options.idle_timeout`` overrides it;
  the platform's default is unconfirmed, nginx's is 75 s, the platform's old TCP one 60 s);
- the same idle timeout bounds the wait for a machine's response head once the request
  was sent (the platform's reference calls ``idle_timeout`` the timeout "for connections
  to your app": https://fly.io/docs/reference/configuration/#http_service-http_options):
  then **504** with PC05 ("connection timed out",
  https://fly.io/docs/monitoring/error-codes/); a response whose head came (SSE, a slow
  download, a WebSocket) is never cut by it;
- a client's TLS handshake must finish within 10 s (asyncio's default is 60 s; a stalled
  one holds a descriptor and ~300 KiB until then); the client connections held at once
  are capped by `taxiway.edge.admission`;
- request bodies up to **1 MB** are kept for ``fly-replay``; upstream keep-alive
  connections are reused for about **4 s** (the platform's pooling window).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Limits:
    max_request_line: int = 8 * 1024
    max_header_line: int = 8 * 1024
    max_headers_size: int = 32 * 1024
    max_headers_count: int = 100
    headers_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    #: Waiting for a slot when every machine is at its hard_limit; then 503.
    queue_timeout_s: float = 30.0
    #: Autostart: from asking the fleet to start a machine until it accepts connections.
    start_timeout_s: float = 30.0
    #: A client's TLS handshake; a stalled one is dropped after this (the platform has a
    #: "TLS handshake timed out" error, PT08, without a documented value).
    tls_handshake_timeout_s: float = 10.0
    #: Client connections the edge holds at once; None: from the descriptor limit
    #: (`taxiway.edge.admission.connection_cap`).
    max_connections: int | None = None
    #: One TCP connect to a machine.
    connect_timeout_s: float = 5.0
    #: Machines tried for one request before the client gets a 502 (platform: up to 90).
    connect_attempts: int = 10
    #: Request bodies up to this size can be replayed (fly-replay) or retried.
    replay_body_limit: int = 1024 * 1024
    max_replays: int = 10
    #: Idle upstream keep-alive connections are closed after this.
    pool_idle_s: float = 4.0
    pool_max_idle: int = 256
    #: Client write buffer high-water mark before reading from the machine pauses.
    high_water: int = 256 * 1024
