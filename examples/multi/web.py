"""Web group: lists the jobs the worker did. Listens on $PORT (taxiway gives each machine one)."""

import json
import os
import signal
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok"
        else:
            db = sqlite3.connect(os.environ["DATABASE"])
            rows = db.execute("SELECT id, done_by, at FROM jobs ORDER BY id DESC LIMIT 10")
            body = json.dumps(
                {"machine": os.environ["FLY_MACHINE_ID"], "jobs": rows.fetchall()}
            ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
port = int(os.environ.get("PORT", "8080"))
print(f"web {os.environ['FLY_MACHINE_ID']} on :{port}", flush=True)
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
