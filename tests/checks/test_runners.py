"""One run of a tcp or http check against real servers (plain and TLS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from check_backends import Backend, closed_port

from taxiway.checks.runners import run_http, run_tcp
from taxiway.checks.state import CheckStatus
from taxiway.plan.machine import Check

HOST = "127.0.0.1"


def http_check(**fields: object) -> Check:
    values: dict[str, object] = {"method": "GET", "path": "/", "protocol": "http"}
    values.update(fields)
    return Check(name="servicecheck-00-http-8080", type="http", port=8080, **values)  # type: ignore[arg-type]


def http(port: int, check: Check, timeout_s: float = 5.0):
    return asyncio.run(run_http(HOST, port, check, timeout_s))


# -- tcp ------------------------------------------------------------------------------------


def test_tcp_passes_when_a_connection_is_accepted() -> None:
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        result = asyncio.run(run_tcp(HOST, port, 2.0))
    assert result.status is CheckStatus.PASSING
    assert result.output == f"TCP connect {HOST}:{port}: Success"


def test_tcp_fails_on_a_closed_port() -> None:
    port = closed_port()
    result = asyncio.run(run_tcp(HOST, port, 2.0))
    assert result.status is CheckStatus.CRITICAL
    assert result.output == f"TCP connect {HOST}:{port}: connect: connection refused"


# -- http -----------------------------------------------------------------------------------


def test_http_200_passes_with_status_and_body_in_the_output(
    backend: Callable[..., Backend],
) -> None:
    b = backend(body=b"all good\n")
    result = http(b.port, http_check(path="/healthz"))
    assert result.status is CheckStatus.PASSING
    assert result.output == f"HTTP GET http://{HOST}:{b.port}/healthz: 200 OK Output: all good"


def test_any_2xx_passes(backend: Callable[..., Backend]) -> None:
    b = backend(status=204, body=b"")
    assert http(b.port, http_check()).status is CheckStatus.PASSING


def test_http_500_fails(backend: Callable[..., Backend]) -> None:
    b = backend(status=500, body=b"database down")
    result = http(b.port, http_check())
    assert result.status is CheckStatus.CRITICAL
    assert "500 Internal Server Error" in result.output
    assert result.output.endswith("Output: database down")


def test_a_redirect_is_not_followed_and_fails(backend: Callable[..., Backend]) -> None:
    b = backend(status=301, body=b"", extra_headers={"Location": "https://example.com/"})
    result = http(b.port, http_check())
    assert result.status is CheckStatus.CRITICAL
    assert "301 Moved Permanently" in result.output
    assert "redirect to https://example.com/ not followed" in result.output
    assert len(b.requests) == 1


def test_no_answer_within_the_timeout_fails() -> None:
    # A listening socket that never answers: the connection is made, the request hangs.
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        result = http(port, http_check(), timeout_s=0.2)
    assert result.status is CheckStatus.CRITICAL
    assert result.output == f"HTTP GET http://{HOST}:{port}/: timed out after 0.2s"


def test_connection_refused_fails() -> None:
    port = closed_port()
    result = http(port, http_check())
    assert result.status is CheckStatus.CRITICAL
    assert result.output.endswith("connect: connection refused")


def test_garbage_answer_fails() -> None:
    async def main() -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH\r\n")
            writer.close()

        server = await asyncio.start_server(answer, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await run_http(HOST, port, http_check(), 2.0)
        assert result.status is CheckStatus.CRITICAL
        return result.output

    assert "not valid HTTP" in asyncio.run(main())


def test_method_path_headers_and_host_reach_the_server(backend: Callable[..., Backend]) -> None:
    b = backend()
    check = http_check(method="post", path="/status?full=1", headers={"X-Forwarded-Proto": "https"})
    assert http(b.port, check).status is CheckStatus.PASSING
    (seen,) = b.requests
    assert seen.method == "POST"  # the reference's own example writes method = "get"
    assert seen.path == "/status?full=1"
    assert seen.headers["x-forwarded-proto"] == "https"
    assert seen.headers["host"] == f"{HOST}:{b.port}"


def test_a_host_header_in_the_check_replaces_the_default(backend: Callable[..., Backend]) -> None:
    b = backend()
    http(b.port, http_check(headers={"Host": "myapp.fly.dev"}))
    (seen,) = b.requests
    assert seen.headers["host"] == "myapp.fly.dev"


def test_head_check_passes(backend: Callable[..., Backend]) -> None:
    b = backend(body=b"ignored")
    assert http(b.port, http_check(method="HEAD")).status is CheckStatus.PASSING
    assert b.requests[0].method == "HEAD"


# -- https ----------------------------------------------------------------------------------


def test_https_with_a_self_signed_certificate_needs_tls_skip_verify(
    backend: Callable[..., Backend], tls_server_context: ssl.SSLContext
) -> None:
    b = backend(tls=tls_server_context)
    refused = http(b.port, http_check(protocol="https"))
    assert refused.status is CheckStatus.CRITICAL
    assert "certificate verify failed" in refused.output
    assert b.requests == []

    result = http(b.port, http_check(protocol="https", tls_skip_verify=True))
    assert result.status is CheckStatus.PASSING
    assert result.output.startswith(f"HTTP GET https://{HOST}:{b.port}/: 200 OK")


def test_tls_server_name_is_sent_as_sni(
    backend: Callable[..., Backend], tls_server_context: ssl.SSLContext
) -> None:
    b = backend(tls=tls_server_context)
    check = http_check(protocol="https", tls_skip_verify=True, tls_server_name="api.internal")
    assert http(b.port, check).status is CheckStatus.PASSING
    assert b.server_names == ["api.internal"]
    # The Host header still names the address checked, as without tls_server_name.
    assert b.requests[0].headers["host"] == f"{HOST}:{b.port}"


def test_a_long_body_is_not_waited_for() -> None:
    async def main() -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 4096)
            await reader.read()  # the rest never comes; the check hangs up

        server = await asyncio.start_server(answer, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            result = await run_http(HOST, port, http_check(), 5.0)
        assert result.status is CheckStatus.PASSING
        return result.output

    output = asyncio.run(main())
    assert len(output) <= 512
    assert "200 OK Output: xxx" in output


def test_a_header_that_cannot_be_sent_fails_the_check(backend: Callable[..., Backend]) -> None:
    b = backend()
    result = http(b.port, http_check(headers={"X-Name": "café ☕"}))
    assert result.status is CheckStatus.CRITICAL
    assert "can't be sent" in result.output or "not valid HTTP" in result.output
    assert b.requests == []
