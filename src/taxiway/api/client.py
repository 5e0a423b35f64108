"""Talking to the daemon over its unix socket with the standard library.

Client commands stay quick to start: no HTTP library is imported, just
`http.client` with a socket connected to ``.taxiway/taxiway.sock`` — and only when a
request is made (`alive` needs no HTTP, and `taxiway up` saves ~30 ms of imports).
Even `socket` waits until it is needed: `up -d` forks its daemon before it asks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    import http.client


class DaemonNotRunning(TaxiwayError):
    """No daemon answers for this app."""


@cache
def _unix_connection_class() -> type[http.client.HTTPConnection]:
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: Path, timeout: float) -> None:
            super().__init__("taxiway", timeout=timeout)
            self._path = path

        def connect(self) -> None:
            import socket

            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(str(self._path))
            self.sock = sock

    return UnixConnection


class Client:
    def __init__(self, socket_path: Path, *, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
        conn = _unix_connection_class()(self.socket_path, self.timeout)
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

    def stream(
        self, path: str, *, method: str = "GET", body: Any = None
    ) -> Iterator[dict[str, Any]]:
        """NDJSON lines from a streaming endpoint (``logs -f``, ``deploy``), until the
        daemon closes it."""
        response = self._open(method, path, body)
        if response.status >= 400:
            raise TaxiwayError(json.loads(response.read()).get("error", "request failed"))
        while line := response.readline():
            if line.strip():
                yield json.loads(line)

    def alive(self) -> bool:
        """Whether a daemon listens on the socket (a dead one's socket file refuses)."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True
