"""The web app: answers on APP_ADDRESS (localhost), behind the nginx container."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port = os.environ.get("APP_ADDRESS", "127.0.0.1:8000").rsplit(":", 1)
machine = os.environ.get("FLY_MACHINE_ID", "?")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        via = self.headers.get("X-Served-Via", "nothing")
        body = f"hello from the app on machine {machine}, via {via}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"app: {self.command} {self.path}", flush=True)


print(f"app listening on {host}:{port}", flush=True)
ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
