"""One run of a tcp or http check against a machine, as the platform's checker does it.

- tcp: passing once a connection is accepted within the timeout.
- http: one request; passing on a **2xx** answer within the timeout. Redirects are not
  followed and fail (https://fly.io/docs/reference/health-checks/), which the output
  says, since it is the common trap with ``force_https``.

Outputs read like the platform's (Consul's): ``HTTP GET http://…/healthz: 200 OK Output:
ok``, ``TCP connect 10.0.0.2:8080: Success``, or the connection error. A run never
raises: every failure is a `CheckResult` with status critical.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping, Sequence
from functools import cache

import h11

from taxiway.checks.state import CheckResult, CheckStatus, trim
from taxiway.plan.machine import Check

#: Bytes of the response body read for the output; the rest is not waited for.
BODY_EXCERPT = 1024
USER_AGENT = "taxiway-health-check"


async def run_tcp(host: str, port: int, timeout_s: float) -> CheckResult:
    """Connect, then hang up: the platform's tcp check."""
    label = f"TCP connect {_hostport(host, port)}"
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return _critical(f"{label}: timed out after {_seconds(timeout_s)}")
    except OSError as exc:
        return _critical(f"{label}: {_os_error(exc, 'connect')}")
    writer.close()
    return CheckResult(CheckStatus.PASSING, f"{label}: Success")


async def run_http(host: str, port: int, check: Check, timeout_s: float) -> CheckResult:
    """One request with the check's method, path, protocol, TLS options and headers."""
    https = (check.protocol or "http").lower() == "https"
    # Methods are case-sensitive on the wire, but the reference's own example says
    # method = "get"; the platform's checker sends it as GET.
    method = (check.method or "GET").upper()
    path = check.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    url = f"{'https' if https else 'http'}://{_hostport(host, port)}{path}"
    label = f"HTTP {method} {url}"
    headers = _request_headers(host, port, https, check.headers or {})
    response: h11.Response | None = None
    body = bytearray()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=_tls_context(bool(check.tls_skip_verify)) if https else None,
                server_hostname=(check.tls_server_name or host) if https else None,
            )
            conn = h11.Connection(h11.CLIENT)
            writer.write(conn.send(h11.Request(method=method, target=path, headers=headers)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) >= BODY_EXCERPT:
                        break
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    except TimeoutError:
        if response is None:
            return _critical(f"{label}: timed out after {_seconds(timeout_s)}")
        # The status came in time; only the body dragged on. Judge by the status.
    except h11.LocalProtocolError as exc:
        return _critical(f"{label}: the check's request is not valid HTTP: {exc}")
    except h11.RemoteProtocolError as exc:
        if response is None:
            return _critical(f"{label}: the answer is not valid HTTP: {exc}")
    except ssl.SSLCertVerificationError as exc:
        return _critical(f"{label}: TLS: certificate verify failed: {exc.verify_message}")
    except ssl.SSLError as exc:
        return _critical(f"{label}: TLS: {exc.reason or exc}")
    except OSError as exc:
        return _critical(f"{label}: {_os_error(exc, 'connect' if writer is None else 'read')}")
    except ValueError as exc:  # a header value that is not ASCII, a bad tls_server_name, …
        return _critical(f"{label}: the check's request can't be sent: {exc}")
    finally:
        if writer is not None:
            writer.close()
    if response is None:
        return _critical(f"{label}: the connection closed before an answer")
    return _judge(label, response, bytes(body[:BODY_EXCERPT]))


def _judge(label: str, response: h11.Response, body: bytes) -> CheckResult:
    reason = response.reason.decode("latin-1") if response.reason else ""
    text = f"{label}: {response.status_code} {reason}".rstrip()
    excerpt = body.decode("utf-8", errors="replace").strip()
    if 200 <= response.status_code < 300:
        return CheckResult(CheckStatus.PASSING, trim(f"{text} Output: {excerpt}"))
    if 300 <= response.status_code < 400:
        location = _header(response, b"location")
        where = f" to {location}" if location else ""
        text += f" (redirect{where} not followed: a check needs a 2xx answer)"
    return _critical(trim(f"{text} Output: {excerpt}"))


def _request_headers(
    host: str, port: int, https: bool, extra: Mapping[str, str | Sequence[str]]
) -> list[tuple[str, str]]:
    """Host (the address checked, unless the check sets its own), then the check's headers.

    The plan gives one value per header (as flyctl sends them); a list sends each value.
    """
    default_port = 443 if https else 80
    out: list[tuple[str, str]] = []
    names = {name.lower() for name in extra}
    if "host" not in names:
        out.append(("Host", _hostport(host, port) if port != default_port else _bracket(host)))
    if "user-agent" not in names:
        out.append(("User-Agent", USER_AGENT))
    out.append(("Connection", "close"))
    for name, value in extra.items():
        values = [value] if isinstance(value, str) else list(value)
        out.extend((name, str(v)) for v in values)
    return out


@cache
def _tls_context(skip_verify: bool) -> ssl.SSLContext:
    """The system's trust store (loaded once), or no verification with tls_skip_verify."""
    context = ssl.create_default_context()
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _header(response: h11.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def _critical(output: str) -> CheckResult:
    return CheckResult(CheckStatus.CRITICAL, output)


def _os_error(exc: OSError, step: str) -> str:
    """``connect: connection refused`` rather than asyncio's "Connect call failed (…)"."""
    if exc.errno:
        return f"{step}: {os.strerror(exc.errno).lower()}"
    return f"{step}: {exc or type(exc).__name__}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _hostport(host: str, port: int) -> str:
    return f"{_bracket(host)}:{port}"


def _seconds(value: float) -> str:
    return f"{value:g}s"
