"""The Machines API's parts in-process, over real sockets: where it may listen, what a
bug answers, the connection cap and idle timeout, the token file, leases, body checks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from taxiway.api.routing import HTTPError, Request, Router
from taxiway.errors import TaxiwayError
from taxiway.machines_api.bodies import duration_s, signal_from
from taxiway.machines_api.leases import Leases
from taxiway.machines_api.server import MachinesApiServer
from taxiway.machines_api.token import TOKEN_FILE, api_token

TOKEN = "test-token"


def router_with_a_bug() -> Router:
    router = Router()

    async def ok(request: Request, params: dict[str, str]) -> object:
        return {"ok": True}

    async def broken(request: Request, params: dict[str, str]) -> object:
        raise ZeroDivisionError("secret detail")

    router.add("GET", "/v1/ok", ok)
    router.add("GET", "/v1/broken", broken)
    return router


async def exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return data


def get(path: str, token: str = TOKEN) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def body_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    "listen",
    [[("0.0.0.0", 0)], [("192.0.2.1", 0)], [("::", 0)], [("127.0.0.1", 0), ("0.0.0.0", 0)]],
)
def test_it_listens_for_the_host_on_loopback_only(listen: list[tuple[str, int]]) -> None:
    async def main() -> None:
        server = MachinesApiServer(Router(), TOKEN)
        with pytest.raises(TaxiwayError, match=r"loopback|every address"):
            await server.start(listen)
        await server.close()

    asyncio.run(main())


def test_a_bug_answers_internal_error_and_logs_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> tuple[bytes, bytes, bytes]:
        server = MachinesApiServer(router_with_a_bug(), TOKEN)
        await server.start([("127.0.0.1", 0)])
        port = server.addresses[0][1]
        try:
            broken = await exchange(port, get("/v1/broken"))
            unauthorized = await exchange(port, get("/v1/broken", "wrong"))
            ok = await exchange(port, get("/v1/ok"))
        finally:
            await server.close()
        return broken, unauthorized, ok

    broken, unauthorized, ok = asyncio.run(main())
    assert broken.startswith(b"HTTP/1.1 500")
    assert body_of(broken) == {"error": "internal error"}
    assert unauthorized.startswith(b"HTTP/1.1 401")
    assert body_of(ok) == {"ok": True}
    logged = capsys.readouterr().err
    assert "ZeroDivisionError: secret detail" in logged and "GET /v1/broken" in logged


def test_ipv6_loopback_works_and_names_its_url() -> None:
    if not socket.has_ipv6:
        pytest.skip("this host has no IPv6")

    async def main() -> tuple[str | None, bytes]:
        server = MachinesApiServer(router_with_a_bug(), TOKEN)
        try:
            await server.start([("::1", 0)])
        except TaxiwayError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        try:
            return server.url, await exchange(server.addresses[0][1], get("/v1/ok"), "::1")
        finally:
            await server.close()

    url, answer = asyncio.run(main())
    assert url is not None and url.startswith("http://[::1]:")
    assert body_of(answer) == {"ok": True}


def test_connections_over_the_cap_get_503_and_idle_ones_are_closed() -> None:
    async def main() -> tuple[bytes, bytes]:
        server = MachinesApiServer(
            router_with_a_bug(), TOKEN, max_connections=1, idle_timeout_s=0.5
        )
        await server.start([("127.0.0.1", 0)])
        port = server.addresses[0][1]
        try:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.1)  # the server has taken the first connection
            refused = await exchange(port, get("/v1/ok"))
            closed = await asyncio.wait_for(idle_reader.read(), 30)  # the idle timeout
            idle_writer.close()
        finally:
            await server.close()
        return refused, closed

    refused, closed = asyncio.run(main())
    assert refused.startswith(b"HTTP/1.1 503")
    assert "too many connections" in body_of(refused)["error"]
    assert closed == b""


def test_the_token_file_is_made_once_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / ".taxiway"
    token = api_token(state)
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(state / TOKEN_FILE).st_mode) == 0o600
    assert api_token(state) == token
    (state / TOKEN_FILE).write_text("")  # emptied (a full disk once): a new one is made
    again = api_token(state)
    assert again and again != token and api_token(state) == again


def test_leases_expire_refresh_and_refuse_others() -> None:
    now = [1000.0]
    leases = Leases(clock=lambda: now[0])
    lease, new = leases.acquire("m1", ttl_s=10, description="deploy", version="v1")
    assert new and lease.expires_at == 1010
    with pytest.raises(HTTPError) as refused:
        leases.acquire("m1", ttl_s=10, description="", version="v1")
    assert refused.value.status == 409
    refreshed, new = leases.acquire("m1", ttl_s=20, description="", version="v1", nonce=lease.nonce)
    assert not new and refreshed.expires_at == 1020 and refreshed.description == "deploy"
    blocked = Request("POST", "/", {}, b"")
    with pytest.raises(HTTPError):
        leases.require("m1", blocked)
    leases.require("m1", Request("POST", "/", {}, b"", {"fly-machine-lease-nonce": lease.nonce}))
    now[0] = 1020.0
    assert leases.current("m1") is None
    leases.require("m1", blocked)  # expired: anyone may act again


def test_durations_and_signals_read_as_the_platform_writes_them() -> None:
    assert duration_s("1m30s", "timeout") == 90
    assert duration_s("500ms", "timeout") == 0.5
    assert duration_s(7, "timeout") == 7 and duration_s("7", "timeout") == 7
    for bad in ("soon", -1, True, "-5s"):
        with pytest.raises(HTTPError):
            duration_s(bad, "timeout")
    assert signal_from("SIGTERM") == 15 and signal_from("term") == 15
    assert signal_from(9) == 9 and signal_from("9") == 9
    for bad in ("SIGNOPE", 0, 999, 1.5, None):
        with pytest.raises(HTTPError):
            signal_from(bad)


def test_leases_of_machines_that_are_gone_are_dropped() -> None:
    leases = Leases()
    leases.acquire("kept", ttl_s=60, description="", version="v1")
    leases.acquire("gone", ttl_s=60, description="", version="v1")
    leases.keep_only({"kept"})
    assert leases.current("kept") is not None and leases.current("gone") is None


def test_malformed_http_and_deep_json_get_400s() -> None:
    async def main() -> tuple[bytes, bytes]:
        router = Router()

        async def echo(request: Request, params: dict[str, str]) -> object:
            from taxiway.machines_api.bodies import OBJECT, json_body

            return json_body(request, {"a": OBJECT}, what="an echo")

        router.add("POST", "/v1/echo", echo)
        server = MachinesApiServer(router, TOKEN)
        await server.start([("127.0.0.1", 0)])
        port = server.addresses[0][1]
        deep = b"[" * 100_000 + b"]" * 100_000
        try:
            garbage = await exchange(port, b"NOT HTTP AT ALL\x00\r\n\r\n")
            nested = await exchange(
                port,
                b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nConnection: close\r\nContent-Length: "
                + str(len(deep)).encode()
                + b"\r\n\r\n"
                + deep,
            )
        finally:
            await server.close()
        return garbage, nested

    garbage, nested = asyncio.run(main())
    assert garbage.startswith(b"HTTP/1.1 400") and "not valid HTTP" in body_of(garbage)["error"]
    assert nested.startswith(b"HTTP/1.1 400") and "nests" in body_of(nested)["error"]
