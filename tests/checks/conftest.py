"""Fixtures for check tests: real HTTP backends (stopped after each test) and a self-signed
certificate for https checks."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from check_backends import Backend

from self_signed import self_signed_cert


@pytest.fixture
def backend() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(**kwargs: object) -> Backend:
        b = Backend(**kwargs)  # type: ignore[arg-type]
        started.append(b)
        return b

    yield make
    for b in started:
        b.close()


@pytest.fixture
def tls_server_context(tmp_path: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for localhost/127.0.0.1."""
    cert_path, key_path = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
