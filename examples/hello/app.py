"""taxiway's example web process: a tiny stdlib HTTP server, as the `web` group runs it.

Listens on 0.0.0.0:$PORT (default 8080, the fly.toml `internal_port`). `/` says which app,
machine, region and process group answered; `/healthz` is what the `[[http_service.checks]]`
check polls. SIGTERM (the fly.toml `kill_signal`) and SIGINT stop it cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_PORT = 8080


def _env(name: str) -> str:
    return os.environ.get(name) or "(not set)"


class Handler(BaseHTTPRequestHandler):
    server_version = "taxiway-hello/1"

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            status, body = HTTPStatus.OK, self._hello()
        elif path == "/healthz":
            status, body = HTTPStatus.OK, "ok\n"
        else:
            status, body = HTTPStatus.NOT_FOUND, f"not found: {path}\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _hello(self) -> str:
        greeting = os.environ.get("GREETING") or "Hello"
        return (
            f"{greeting} from {_env('FLY_APP_NAME')}!\n"
            f"machine: {_env('FLY_MACHINE_ID')}\n"
            f"region:  {_env('FLY_REGION')}\n"
            f"process: {_env('FLY_PROCESS_GROUP')}\n"
        )

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"web: {self.address_string()} {format % args}\n")


def main() -> int:
    raw_port = os.environ.get("PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        print(f"web: PORT must be a number, not {raw_port!r}", file=sys.stderr)
        return 2

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"web: got {signal.Signals(signum).name}, shutting down", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # serve_forever runs in a thread so the main thread is free to react to signals;
    # shutdown() waits for the loop to finish, which it can't do from inside the loop.
    loop = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    loop.start()
    print(f"web: listening on 0.0.0.0:{port}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    print("web: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
