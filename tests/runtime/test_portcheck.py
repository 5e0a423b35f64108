"""The advice for apps that ignore PORT, against real listening sockets."""

from __future__ import annotations

import asyncio
import socket

from taxiway.runtime.portcheck import listening, port_advice


def listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def free() -> int:
    sock, port = listener()
    sock.close()
    return port


def test_no_advice_when_the_app_listens_on_port() -> None:
    sock, port = listener()
    with sock:
        assert asyncio.run(port_advice(8080, port, grace_s=0)) is None
        assert asyncio.run(listening(port))


def test_an_app_on_its_fixed_internal_port_is_told_to_read_port() -> None:
    sock, internal = listener()
    with sock:
        advice = asyncio.run(port_advice(internal, free(), grace_s=0))
    assert advice is not None
    assert f"something does on {internal}" in advice
    assert "read PORT from the environment" in advice


def test_an_app_listening_nowhere_gets_a_plain_note() -> None:
    advice = asyncio.run(port_advice(free(), free(), grace_s=0))
    assert advice is not None and "nothing listens on PORT=" in advice
