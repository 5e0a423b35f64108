"""HTTPS through the edge of a running app: the 443 listener verifies with the local CA
from `taxiway certs`, and ``force_https`` redirects the plain port to it."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway
from machine_apps import ECHO_ID_APP as WEB

FLY_TOML = """
app = "tlslive"
kill_timeout = 5

[processes]
web = "{python} web.py"

[http_service]
internal_port = 8080
processes = ["web"]
force_https = true
auto_stop_machines = "off"
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "web.py").write_text(WEB)
    (tmp_path / "fly.toml").write_text(FLY_TOML.format(python=sys.executable))
    yield tmp_path
    taxiway(tmp_path, "down")


def listener(edge: list[dict], port: int) -> tuple[str, int]:
    address = next(b["address"] for b in edge if b["port"] == port)
    host, real = address.rsplit(":", 1)
    return host, int(real)


def https_get(ctx: ssl.SSLContext, host: str, port: int, name: str) -> tuple[int, str]:
    """GET / over TLS to host:port, verifying the certificate for ``name`` (SNI too)."""
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read().decode()


def test_https_verifies_with_the_local_ca_and_http_redirects(app: Path) -> None:
    started = taxiway(app, "up", "-d")
    assert started.returncode == 0, started.stderr
    status = json.loads(taxiway(app, "status", "--json").stdout)
    machine = status["machines"][0]["id"]
    ca_cert = json.loads(taxiway(app, "certs", "--json").stdout)["ca_cert"]
    host, https_port = listener(status["edge"], 443)

    ctx = ssl.create_default_context(cafile=ca_cert)  # trusts nothing but the local CA
    for name in ("localhost", "tlslive.localhost"):
        assert https_get(ctx, host, https_port, name) == (200, machine)

    host, http_port = listener(status["edge"], 80)
    conn = http.client.HTTPConnection(host, http_port, timeout=30)
    conn.request("GET", "/path?q=1", headers={"Host": "localhost"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 301
    authority = "localhost" if https_port == 443 else f"localhost:{https_port}"
    assert response.getheader("Location") == f"https://{authority}/path?q=1"
