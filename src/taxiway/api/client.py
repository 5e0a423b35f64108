"""Talking to the daemon over its unix socket with the standard library.

Client commands stay quick to start: no HTTP library is imported, just
`http.client` with a socket connected to ``.taxiway/taxiway.sock``.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taxiway.errors import TaxiwayError


class DaemonNotRunning(TaxiwayError):
    """No daemon answers for this app."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("taxiway", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class Client:
    def __init__(self, socket_path: Path, *, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
        conn = _UnixConnection(self.socket_path, self.timeout)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                "taxiway is not running this app; start it with `taxiway up`"
            ) from None
        except TimeoutError:
            raise TaxiwayError(f"the daemon did not answer {method} {path} in time") from None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        response = self._open(method, path, body)
        payload = response.read()
        data = json.loads(payload) if payload else None
        if response.status >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            raise TaxiwayError(message or f"the daemon answered {response.status}")
        return data

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """NDJSON lines from a streaming endpoint (``logs -f``), until the daemon closes it."""
        response = self._open("GET", path)
        if response.status >= 400:
            raise TaxiwayError(json.loads(response.read()).get("error", "request failed"))
        while line := response.readline():
            if line.strip():
                yield json.loads(line)

    def alive(self) -> bool:
        try:
            self.request("GET", "/v1/ping")
        except TaxiwayError:
            return False
        return True
