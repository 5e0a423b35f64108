"""Machine ports for the process driver: the internal port when it is free, else one
below the kernel's ephemeral range, which outgoing connections can't take between the
choice and the app's bind."""

from __future__ import annotations

import socket

from taxiway.runtime.ports import LOWEST_PORT, _ephemeral_start, allocate, bindable


def test_a_free_internal_port_is_kept() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert allocate([port], set(), hosts=["127.0.0.1"]) == {port: port}


def test_a_taken_internal_port_gets_one_below_the_ephemeral_range() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        taken = {busy + 1}
        mapping = allocate([busy, 9], taken, hosts=["0.0.0.0"])
    ports = list(mapping.values())
    assert len(set(ports)) == 2 and not set(ports) & taken
    top = _ephemeral_start()
    for port in ports:
        assert port == 9 or LOWEST_PORT <= port < top
        assert port == 9 or bindable(port, ["0.0.0.0"])
