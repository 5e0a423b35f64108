"""The ``tls`` handler's contexts: real handshakes against a client trusting only the CA."""

from __future__ import annotations

import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_support import RawMachine

from taxiway.edge.certs import LocalCA
from taxiway.edge.tls import TlsContexts
from taxiway.plan.machine import Port


class TlsServer(RawMachine):
    """Accepts TLS connections with a server context; answers with the negotiated ALPN."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall((tls.selected_alpn_protocol() or "-").encode())
            except (ssl.SSLError, OSError):
                pass


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "certs")


def serve(contexts: TlsContexts, **tls_options: object) -> Iterator[TlsServer]:
    port = Port(port=443, handlers=["tls", "http"], tls_options=tls_options or None)
    server = TlsServer(contexts.context_for(port))
    try:
        yield server
    finally:
        server.close()


def client(ca: LocalCA, **kwargs: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca_cert_path))
    for name, value in kwargs.items():
        setattr(ctx, name, value)
    return ctx


def handshake(
    server: TlsServer, ctx: ssl.SSLContext, name: str, alpn: list[str] | None = None
) -> tuple[str, dict]:
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        return tls.recv(100).decode(), tls.getpeercert()


def test_localhost_and_app_localhost_verify(ca: LocalCA) -> None:
    for server in serve(TlsContexts(ca, "shop")):
        answer, cert = handshake(server, client(ca), "localhost", ["h2", "http/1.1"])
        assert answer == "h2"
        assert ("DNS", "localhost") in cert["subjectAltName"]
        _, cert = handshake(server, client(ca), "shop.localhost")
        assert cert["subjectAltName"] == (("DNS", "shop.localhost"),)
        _, cert = handshake(server, client(ca), "127.0.0.1")  # no SNI: the default cert
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]


def test_an_unknown_name_gets_the_default_and_fails_verification(ca: LocalCA) -> None:
    for server in serve(TlsContexts(ca, "shop")):
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server, client(ca), "elsewhere.test")


def test_names_added_later_get_their_certificate(ca: LocalCA) -> None:
    contexts = TlsContexts(ca, "shop", hostnames=["given.test"])
    for server in serve(contexts):
        assert handshake(server, client(ca), "given.test")[1]["subjectAltName"] == (
            ("DNS", "given.test"),
        )
        ca.add_hostnames(["shop.test", "*.dev.test"])  # `taxiway certs --add`, daemon running
        _, cert = handshake(server, client(ca), "shop.test")
        assert cert["subjectAltName"] == (("DNS", "shop.test"),)
        _, cert = handshake(server, client(ca), "api.dev.test")
        assert cert["subjectAltName"] == (("DNS", "*.dev.test"),)


def test_alpn_follows_the_client_and_the_options(ca: LocalCA) -> None:
    contexts = TlsContexts(ca, "shop")
    for server in serve(contexts):
        assert handshake(server, client(ca), "localhost", ["http/1.1"])[0] == "http/1.1"
        assert handshake(server, client(ca), "localhost", ["h2", "http/1.1"])[0] == "h2"
    for server in serve(contexts, alpn=["http/1.1"]):
        assert handshake(server, client(ca), "localhost", ["h2", "http/1.1"])[0] == "http/1.1"
    for server in serve(contexts, alpn=["mqtt"]):
        assert handshake(server, client(ca), "shop.localhost", ["mqtt"])[0] == "mqtt"


def test_versions_limit_the_handshake(ca: LocalCA) -> None:
    contexts = TlsContexts(ca, "shop")
    for server in serve(contexts, versions=["TLSv1.3"]):
        old = client(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError):
            handshake(server, old, "localhost")
        assert handshake(server, client(ca), "shop.localhost", ["h2"])[0] == "h2"
    for server in serve(contexts, versions=["TLSv1.2"]):
        ctx = client(ca)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() == "TLSv1.2"


def test_contexts_are_shared_per_options(ca: LocalCA) -> None:
    contexts = TlsContexts(ca, "shop")
    a = contexts.context_for(Port(port=443, handlers=["tls"]))
    b = contexts.context_for(Port(port=8443, handlers=["tls"], tls_options={"alpn": None}))
    c = contexts.context_for(Port(port=9443, handlers=["tls"], tls_options={"alpn": ["h2"]}))
    assert a is b and a is not c


def test_the_ca_is_reused_across_instances_and_keys_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    first = LocalCA(folder)
    contexts = TlsContexts(first, "shop")
    contexts.context_for(Port(port=443, handlers=["tls"]))
    again = LocalCA(folder)
    for server in serve(TlsContexts(again, "shop")):
        assert handshake(server, client(first), "shop.localhost", ["h2"])[0] == "h2"
    keys = [first.ca_key_path, *first.leaves_dir.glob("*.key")]
    assert len(keys) == 3
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
