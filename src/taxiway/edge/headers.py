"""The headers the platform's proxy adds, removes and rewrites
(https://fly.io/docs/networking/request-headers/).

Everything that doesn't change per request is computed once: per listener (the response
headers of ``http_options.response``, ``Server``/``Via``) and per client connection
(``Fly-Client-IP`` & co.), so a request costs one dict lookup per header it carries.
"""

from __future__ import annotations

import os
import time

from taxiway import __version__

#: ``Server`` on responses; the platform's is ``Fly/<build> (<date>)``.
SERVER = f"Fly/taxiway-{__version__} (local)".encode()

# What the proxy does with each request header a client sends (by lowercase name).
DROP = 0  # hop-by-hop, framing the edge redoes, or a platform header a client can't set
HOST = 1
XFF = 2  # X-Forwarded-For: kept and appended to
VIA = 3  # kept and appended to
XFPORT = 4  # X-Forwarded-Port: the client's value is kept
FORCE_INSTANCE = 5
PREFER_INSTANCE = 6
CONNECTION = 7
EXPECT = 8
ACCEPT = 9
CONTENT_LENGTH = 10
TRANSFER_ENCODING = 11
UPGRADE = 12
FORCE_REGION = 13

REQUEST_ACTIONS: dict[bytes, int] = {
    b"keep-alive": DROP,
    b"proxy-connection": CONNECTION,  # dropped too; the parser reads both alike
    b"te": DROP,
    b"trailer": DROP,
    b"fly-client-ip": DROP,
    b"fly-forwarded-port": DROP,
    b"fly-region": DROP,
    b"x-forwarded-proto": DROP,
    b"x-forwarded-ssl": DROP,
    b"fly-request-id": DROP,
    b"fly-replay-src": DROP,
    b"fly-replay-failed": DROP,
    b"fly-preferred-instance-unavailable": DROP,
    b"host": HOST,
    b"x-forwarded-for": XFF,
    b"via": VIA,
    b"x-forwarded-port": XFPORT,
    b"fly-force-instance-id": FORCE_INSTANCE,
    b"fly-prefer-instance-id": PREFER_INSTANCE,
    b"fly-force-region": FORCE_REGION,
    b"connection": CONNECTION,
    b"expect": EXPECT,
    b"accept": ACCEPT,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"upgrade": UPGRADE,
}

#: Response headers never passed on as they came (the edge frames the body itself).
RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"content-length",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
#: Response headers the exchange reads (a subset of what it drops, but Content-Type).
RESPONSE_READ = frozenset(
    {b"content-length", b"transfer-encoding", b"content-type", b"fly-replay", b"upgrade"}
)
#: Rewritten by the proxy unless ``http_options.response.pristine``.
PLATFORM_RESPONSE = frozenset({b"server", b"fly-request-id", b"fly-cache-status"})


def connection_headers(client_ip: str, port: int, region: str, tls: bool) -> bytes:
    """The request headers that are the same for every request of one client connection."""
    return (
        f"Fly-Client-IP: {client_ip}\r\n"
        f"Fly-Forwarded-Port: {port}\r\n"
        f"Fly-Region: {region}\r\n"
        f"X-Forwarded-Proto: {'https' if tls else 'http'}\r\n"
        f"X-Forwarded-SSL: {'on' if tls else 'off'}\r\n"
    ).encode()


class ResponseRewrite:
    """``http_options.response`` of one listener, compiled.

    ``drop`` are the lowercase names removed from the app's response; `tail` the bytes
    appended to every response head.
    """

    __slots__ = ("_ends", "drop", "extra", "pristine", "watch")

    def __init__(self, http_options: dict | None) -> None:
        response = (http_options or {}).get("response") or {}
        self.pristine = bool(response.get("pristine"))
        drop = set(RESPONSE_HOP_BY_HOP)
        extra: list[bytes] = []
        if not self.pristine:
            drop |= PLATFORM_RESPONSE
            extra.append(b"Server: " + SERVER + b"\r\n")
        for name, value in (response.get("headers") or {}).items():
            key = name.encode("latin-1")
            drop.add(key.lower())
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v is False or v is None or v == "":
                    continue
                text = "true" if v is True else str(v)
                extra.append(key + b": " + text.encode("latin-1") + b"\r\n")
        self.drop = frozenset(drop)
        #: What the upstream connection sets aside for the exchange, by lowercase name:
        #: True for the headers the exchange reads (framing, fly-replay), False for those
        #: only dropped.
        self.watch: dict[bytes, bool] = dict.fromkeys(self.drop, False)
        self.watch.update(dict.fromkeys(RESPONSE_READ, True))
        self.extra = b"".join(extra)
        self._ends: dict[bytes, bytes] = {}

    def head_end(self, via: bytes) -> bytes:
        """`tail` up to the request id's value (the hot path appends id and CRLFs)."""
        end = self._ends.get(via)
        if end is None:
            end = self._ends[via] = self.extra + b"Via: " + via + b"\r\nFly-Request-Id: "
        return end

    def tail(self, request_id: bytes, via: bytes) -> bytes:
        """What ends every response head: the configured headers, ``Via`` (``1.1 fly.io``
        or ``2 fly.io``, after the client's protocol) and ``Fly-Request-Id``."""
        if self.pristine:
            return self.extra
        return self.extra + b"Via: " + via + b"\r\nFly-Request-Id: " + request_id + b"\r\n"


# --- Fly-Request-Id: a ULID and the region -------------------------------------------------

_CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every 10-bit value as two Crockford characters.
_PAIRS = [bytes((_CROCKFORD[i >> 5], _CROCKFORD[i & 31])) for i in range(1024)]
_time_ns = time.time_ns
_last_ms = -1
_base = b""
_counter = 0


def _encode(value: int, chars: int) -> bytes:
    out = bytearray(chars)
    for i in range(chars - 1, -1, -1):
        out[i] = _CROCKFORD[value & 31]
        value >>= 5
    return bytes(out)


def ulid() -> bytes:
    """A 26-character ULID: 48-bit milliseconds and 80 random bits, Crockford base32.

    Monotonic within a millisecond, as the ULID spec allows: the last 10 bits count up
    from a random start, so one random draw serves many requests.
    """
    return request_id(b"")


def request_id(region_suffix: bytes) -> bytes:
    """``<ULID>-<region>``, e.g. ``01H83Q667E80KH9P0C4Q9CB6EC-fra``; suffix is ``b"-fra"``."""
    global _counter
    ms = _time_ns() // 1_000_000
    if ms == _last_ms:
        counter = _counter + 1
        if counter < 1024:
            _counter = counter
            return _base + _PAIRS[counter] + region_suffix
    return _draw(ms) + region_suffix


def _draw(ms: int) -> bytes:
    """A new millisecond (or the counter ran out): new random bits, the counter restarts."""
    global _last_ms, _base, _counter
    draw = int.from_bytes(os.urandom(10), "big")
    _last_ms = ms
    _base = _encode(ms, 10) + _encode(draw >> 10, 14)
    _counter = draw & 511
    return _base + _PAIRS[_counter]
