"""Flycast: the edge serves the app's ports on its private (flycast) address too, on the
same numbers and through the same balancing and handlers, and a number it can't have
there leaves the public listener serving."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import Backend, EdgeThread, free_port, member, plan

from taxiway.edge.fleet import StaticFleet

#: ::1 stands in for the app's flycast address (which only a host carrying the private
#: network has); what matters is a second address on the port's own number.
PRIVATE = "::1"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind((PRIVATE, 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _ipv6_loopback(), reason="the host has no IPv6 loopback")

HTTP = """
app = "demo"
[[services]]
  internal_port = 8080
  protocol = "tcp"
  [[services.ports]]
    port = {port}
    handlers = ["http"]
"""


def _get(host: str, port: int) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/", headers={"Host": "demo.flycast"})
    resp = conn.getresponse()
    resp.data = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend("m1")
    yield server
    server.close()


def test_the_flycast_address_serves_the_port_on_its_own_number(
    tmp_path: Path, backend: Backend
) -> None:
    port = free_port()
    fleet = StaticFleet("demo", [member("m1", backend.port)])
    edge = EdgeThread(fleet, plan(tmp_path, HTTP.format(port=port)), private_hosts=[PRIVATE])
    try:
        private = _get(PRIVATE, port)
        public = _get("127.0.0.1", edge.port(port))
        assert private.status == public.status == 200
        assert private.headers["fly-request-id"]  # through the edge's http handler
        assert [b["port"] for b in edge.edge.bindings()] == [port]  # status shows the public
    finally:
        edge.close()
    with pytest.raises(OSError):
        _get(PRIVATE, port)  # closed with the edge


def test_a_taken_number_on_the_flycast_address_leaves_the_public_port_serving(
    tmp_path: Path, backend: Backend
) -> None:
    port = free_port()
    squatter = socket.socket(socket.AF_INET6)
    squatter.bind((PRIVATE, port))
    squatter.listen()
    fleet = StaticFleet("demo", [member("m1", backend.port)])
    try:
        edge = EdgeThread(fleet, plan(tmp_path, HTTP.format(port=port)), private_hosts=[PRIVATE])
        try:
            assert _get("127.0.0.1", edge.port(port)).status == 200
        finally:
            edge.close()
    finally:
        squatter.close()
